"""The functions the inspector runs in worker threads: thin calls into the core.

Each takes ``progress`` and ``should_stop`` keywords (supplied by the Worker) and returns plain data
for the UI thread to show. torch and diffusers are imported here, inside the functions, so the
window opens before they load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PreviewResult:
    preview: np.ndarray | None
    snr_db: float | None


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
    from vaestudio.core.pipeline import encode_image

    return encode_image(vae, image.pixels, tile=tile, progress=progress, should_stop=should_stop)


def preview_job(vae, latent, noise, *, progress, should_stop) -> PreviewResult:
    from vaestudio.core.analysis import latent_preview
    from vaestudio.core.noise import add_noise

    noised = add_noise(latent, vae.family, spec=noise)
    return PreviewResult(latent_preview(noised.latent, vae.family.name), noised.snr_db)


def decode_job(vae, encoded, noise, tile, ablation=None, *, progress, should_stop):
    from vaestudio.core.pipeline import decode_latent

    rec = decode_latent(vae, encoded, noise=noise, ablation=ablation, tile=tile, progress=progress,
                        should_stop=should_stop)
    rec.diff_rgb  # noqa: B018 - computed here, not on the UI thread
    return rec


def reconstruct_job(vae, image, tile, noise=None, *, progress, should_stop):
    """For the B side of an A/B comparison: the core's whole round trip."""
    from vaestudio.core.pipeline import reconstruct

    return reconstruct(vae, image, noise=noise, tile=tile, progress=progress, should_stop=should_stop)


def save_latents_job(latent, path, metadata: dict, *, progress, should_stop):
    from safetensors.torch import save_file

    save_file({"latent": latent.contiguous()}, str(path), metadata={k: str(v) for k, v in metadata.items()})
    return path
