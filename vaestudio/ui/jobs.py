"""The functions the window runs in worker threads: one-line calls into the core.

Each takes ``progress`` and ``should_stop`` keywords (supplied by the worker) and returns plain data
for the UI thread to show. torch and diffusers are imported inside the functions, so the window
opens before they load, and a tiny autoencoder never imports diffusers at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Preview:
    """A quick picture of a (possibly noised) latent while the full decoder works."""

    image: np.ndarray | None  # (H, W, 3) at the image's size, or None when no preview is possible
    tiny: bool  # decoded by a tiny decoder (else the latent-to-RGB approximation)
    snr_db: float | None


def warm_up(*, progress, should_stop) -> list[str]:
    """Import torch and the loaders while the user looks at the window; return the devices there are."""
    from vaestudio.core import sources  # noqa: F401 - the import is the point
    from vaestudio.core.device import available_devices

    return available_devices()


def load_vae_job(source, family, prefs, halves=("encoder", "decoder"), *, progress, should_stop):
    from vaestudio.core.errors import DeviceUnavailable
    from vaestudio.core.sources import load_vae

    def download(p) -> None:
        progress(p.done, p.total or 0)

    try:
        return load_vae(source, family=family or None, device=prefs.device, dtype=prefs.dtype, halves=halves,
                        progress=download, should_stop=should_stop)
    except DeviceUnavailable as exc:
        exc.reason += " (choose another device in File > Preferences)"
        raise


def load_preview_decoder_job(location, family, *, progress, should_stop):
    """The preview decoder for ``family`` found at ``location`` (a file or a folder), or None."""
    from vaestudio.core.registry import find_preview_decoder
    from vaestudio.core.sources import load_vae

    path = find_preview_decoder(location, family)
    return None if path is None else load_vae(path, halves=("decoder",), device="cpu")


def load_media_job(source, start: float = 0.0, frames: int | None = None, *, progress, should_stop):
    """An image (``LoadedImage``) or, for a clip file, the clip (``core.video.Clip``): the part from ``start``
    seconds, at most ``frames`` frames (None: all), as the CLI's ``--start``/``--frames``, within the window's
    limit (``clip_jobs.WINDOW_CLIP_BYTES``: a longer clip keeps the frames that fit, and says so)."""
    if not isinstance(source, bytes):
        from vaestudio.core.filetypes import is_clip

        if is_clip(source):
            from vaestudio.core.video import read_clip
            from vaestudio.ui.clip_jobs import WINDOW_CLIP_BYTES

            return read_clip(source, start=start, frames=frames, max_bytes=WINDOW_CLIP_BYTES, keep_what_fits=True)
    from vaestudio.core.images import load_image

    return load_image(source)


def encode_job(vae, pixels, tile, *, progress, should_stop):
    """Encode; also the latent-to-RGB picture of the clean latent."""
    from vaestudio.core.latents import latent_preview

    encoded = vae.encode(pixels, tile=tile, progress=progress, should_stop=should_stop)
    return encoded, latent_preview(encoded.latent, vae.family.name)


def preview_job(vae, encoded, noise, tiny, *, progress, should_stop) -> Preview:
    """Noise the cached latent; decode it with the tiny decoder when there is one, else latent-to-RGB."""
    from vaestudio.core.latents import latent_preview
    from vaestudio.core.noise import add_noise

    latent, snr_db = encoded.latent, None
    if noise is not None:
        noised = add_noise(latent, vae.family, spec=noise)
        latent, snr_db = noised.latent, noised.snr_db
    h, w = encoded.original.shape[:2]
    if tiny is not None:
        return Preview(tiny.decode(latent, h, w, should_stop=should_stop).pixels, True, snr_db)
    rgb = latent_preview(latent, vae.family.name)
    return Preview(None if rgb is None else upscale(rgb, h, w), False, snr_db)


def upscale(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour enlargement of a small picture to cover (h, w)."""
    f = max(1, -(-h // rgb.shape[0]), -(-w // rgb.shape[1]))
    return np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)[:h, :w]


def decode_job(vae, encoded, noise, tile, ablation=None, *, progress, should_stop):
    from vaestudio.core.pipeline import decode_latent

    rec = decode_latent(vae, encoded, noise=noise, ablation=ablation, tile=tile, progress=progress,
                        should_stop=should_stop)
    rec.diff_rgb  # noqa: B018 - computed here, not on the UI thread
    return rec


def compare_job(vae, pixels, cached, noise, tile, *, progress, should_stop):
    """The B side of an A/B comparison: encode (unless cached), then decode with the same noise as A."""
    from vaestudio.core.pipeline import decode_latent

    encoded = cached or vae.encode(pixels, tile=tile, progress=progress, should_stop=should_stop)
    if noise is not None and noise.mode == "timestep" and noise.value > vae.family.max_timestep:
        from dataclasses import replace

        noise = replace(noise, value=float(vae.family.max_timestep))
    rec = decode_latent(vae, encoded, noise=noise, tile=tile, progress=progress, should_stop=should_stop)
    rec.diff_rgb  # noqa: B018
    return encoded, rec


def export_job(what: str, data: dict, path: str, *, progress, should_stop) -> str:
    """Compose an export picture (or the latents file) and write it atomically; a failed write
    (disk full, read-only folder) leaves any previous file as it was."""
    from vaestudio.core.errors import VaeStudioError

    try:
        return _export(what, data, path)
    except OSError as exc:
        raise VaeStudioError(f"could not save ({exc.strerror or exc})", path) from None


def _export(what: str, data: dict, path: str) -> str:
    from vaestudio.core.images import save_png

    if what == "latents":
        from safetensors.torch import save

        from vaestudio.core.files import write_atomic

        tensors = {"latent": data["latent"].contiguous()}
        if data.get("raw") is not None:
            tensors["raw"] = data["raw"].contiguous()
        blob = save(tensors, metadata={k: str(v) for k, v in data["metadata"].items()})
        write_atomic(path, blob)
        return str(path)
    if what == "strip":
        from vaestudio.core.pictures import comparison_strip

        img = comparison_strip(*data["images"])
    elif what == "heatmaps":
        from vaestudio.core.pictures import heatmap_sheet

        img = heatmap_sheet(data["latent"], shared=data["shared"], order=data.get("order"))
    else:
        img = data["image"]
    save_png(img, path)
    return str(path)
