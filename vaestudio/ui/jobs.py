"""The functions the inspector runs in worker threads: thin calls into the core.

Each takes ``progress`` and ``should_stop`` keywords (supplied by the Worker) and returns plain data
for the UI thread to show. torch and diffusers are imported here, inside the functions, so the
window opens before they load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DecodeResult:
    recon: np.ndarray
    diff_rgb: np.ndarray
    metrics: dict
    decode_s: float
    snr_db: float | None
    label: str


@dataclass
class PreviewResult:
    preview: np.ndarray | None
    snr_db: float | None
    latent: np.ndarray


def load_vae_job(source, family, prefs, *, progress, should_stop):
    from vaestudio.core.sources import load_vae

    def download(p) -> None:
        progress(p.done, p.total or 0)

    return load_vae(source, family=family or None, device=prefs.device, dtype=prefs.dtype, progress=download,
                    should_stop=should_stop)


def load_image_job(source, *, progress, should_stop):
    from vaestudio.core.images import load_image

    return load_image(source)


def encode_job(vae, image, tile, *, progress, should_stop):
    from vaestudio.core.pipeline import vae_input

    enc = vae.encode(image.pixels, tile=tile, progress=progress, should_stop=should_stop)
    return enc, vae_input(vae, image.pixels)


def _noised(vae, latent, noise: dict):
    from vaestudio.core.noise import add_noise

    if not noise:
        return latent, None
    kw = {k: v for k, v in noise.items() if k in ("strength", "timestep")}
    if "timestep" in kw:
        kw["timestep"] = min(kw["timestep"], vae.family.max_timestep)
    res = add_noise(latent, vae.family, seed=noise.get("seed", 0), **kw)
    return res.latent, res.snr_db


def preview_job(vae, latent, noise: dict, *, progress, should_stop) -> PreviewResult:
    from vaestudio.core.analysis import latent_preview

    z, snr = _noised(vae, latent, noise)
    return PreviewResult(latent_preview(z, vae.family.name), snr, z.numpy())


def decode_job(vae, enc, original: np.ndarray, noise: dict, tile, ablate: tuple[int, float] | None = None, *,
               progress, should_stop) -> DecodeResult:
    import time

    from vaestudio.core.metrics import colorize, compute_metrics, difference_map

    z, snr = _noised(vae, enc.latent, noise)
    label = "Reconstruction"
    if noise:
        label = "Noised: " + ", ".join(f"{k} {v:.3g}" for k, v in noise.items() if k != "seed")
    if ablate is not None:
        ch, factor = ablate
        z = z.clone()
        z[ch] *= factor
        label += f" (channel {ch} x {factor:g})"
    t0 = time.perf_counter()
    recon = vae.decode(z, enc.height, enc.width, tile=tile, progress=progress, should_stop=should_stop)
    dt = time.perf_counter() - t0
    m = compute_metrics(original, recon)
    return DecodeResult(recon, colorize(difference_map(original, recon)), m.to_dict(), dt, snr, label)


def reconstruct_job(vae, image, tile, *, progress, should_stop):
    """For the B side of an A/B comparison: the core's whole round trip."""
    from vaestudio.core.pipeline import reconstruct

    return reconstruct(vae, image, tile=tile, progress=progress, should_stop=should_stop)


def save_latents_job(latent, path, metadata: dict, *, progress, should_stop):
    from safetensors.torch import save_file

    save_file({"latent": latent.contiguous()}, str(path), metadata={k: str(v) for k, v in metadata.items()})
    return path
