"""A clip in the window: what its worker job yields, and the reconstruction so far as the session holds it.

``clip_job`` is a generator run by the worker layer: unless the session already holds the encoding it
round-trips the clip with ``vae.iter_round_trip_clip`` (a causal video VAE streams: each chunk is
decoded as soon as it is encoded, so the first frame shows after one chunk, not the whole encode; the
noise, when asked, is drawn for the whole latent and streams with it; others encode, then decode), else
it noises the held model-space latent (C, T', h, w) and decodes it with ``vae.iter_decode_clip``; either
way it yields each temporal chunk as it arrives with its difference heat maps and per-frame metrics
computed in the worker. ``ClipProgress`` collects the chunks on the UI
thread: a cancelled job keeps what was decoded. torch is imported inside the functions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: The most float32 frame bytes the window reads for one clip; the window keeps the original, the
#: reconstruction and the difference of every frame, three times this.
WINDOW_CLIP_BYTES = 1 << 30


@dataclass
class ClipEncoded:
    """A clip's encoding by VAE A and the latent-to-RGB picture of each latent frame."""

    encoding: object  # core.vae.ClipEncoding
    previews: list  # (h, w, 3) or None per latent frame
    snr_db: float | None = None  # the noise's, when the round trip that encoded it was noised
    latent: object = None  # the (possibly noised) latent being decoded, for a preview decoder


@dataclass
class ClipStart:
    """The decode begins: how many frames will come, and the SNR of the noise applied (None: clean)."""

    frames: int
    snr_db: float | None = None
    latent: object = None  # the (possibly noised) model-space latent being decoded, for a preview decoder


@dataclass
class ClipChunk:
    """One decoded temporal chunk: frames [start, start + len(frames))."""

    start: int
    frames: np.ndarray  # (t, H, W, 3) reconstruction in [0, 1]
    diffs: np.ndarray  # (t, H, W, 3) difference heat maps (as the image difference map)
    psnr: list[float]
    ssim: list[float]
    mae: list[float]
    flicker_sum: float  # the flicker terms of this chunk's frames (each frame against the previous)
    flicker_terms: int


@dataclass
class ClipProgress:
    """The reconstruction of the clip so far: frames arrive chunk by chunk; ``complete`` once all came."""

    total: int
    snr_db: float | None = None
    frames: list = field(default_factory=list)  # per frame: (H, W, 3) or None until decoded
    previews: list = field(default_factory=list)  # per frame: the preview decoder's picture, or None
    diffs: list = field(default_factory=list)
    psnr: list = field(default_factory=list)  # per frame, NaN until decoded
    ssim: list = field(default_factory=list)
    mae: list = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = False
    _flicker: list = field(default_factory=lambda: [0.0, 0])

    def __post_init__(self) -> None:
        n = self.total
        self.frames, self.diffs, self.previews = [None] * n, [None] * n, [None] * n
        self.psnr, self.ssim, self.mae = [math.nan] * n, [math.nan] * n, [math.nan] * n

    def add(self, chunk: ClipChunk) -> None:
        for i in range(len(chunk.frames)):
            t = chunk.start + i
            self.frames[t], self.diffs[t] = chunk.frames[i], chunk.diffs[i]
            self.psnr[t], self.ssim[t], self.mae[t] = chunk.psnr[i], chunk.ssim[i], chunk.mae[i]
        self._flicker[0] += chunk.flicker_sum
        self._flicker[1] += chunk.flicker_terms

    @property
    def decoded(self) -> int:
        """How many frames have been decoded (chunks come in order, from the first frame)."""
        return sum(f is not None for f in self.frames)

    def _done(self) -> list[int]:
        return [t for t, f in enumerate(self.frames) if f is not None]

    @property
    def psnr_mean(self) -> float | None:
        done = self._done()
        return float(np.mean([self.psnr[t] for t in done])) if done else None

    @property
    def worst_frame(self) -> int | None:
        done = self._done()
        return min(done, key=lambda t: self.psnr[t]) if done else None

    @property
    def flicker(self) -> float | None:
        """``metrics.flicker`` of the frames decoded so far (0 for one frame), None before any."""
        if not self._done():
            return None
        s, n = self._flicker
        return s / n if n else 0.0

    def mean(self, name: str) -> float | None:
        done = self._done()
        values = getattr(self, name)
        return float(np.mean([values[t] for t in done])) if done else None


def clip_job(vae, frames, encoding, noise, tile, *, progress, should_stop):
    """Round-trip ``frames`` (``vae.iter_round_trip_clip``: streamed for a causal video VAE, each chunk
    decoded as soon as it is encoded) or, when ``encoding`` is given, noise its latent and decode it.

    Yields a ``ClipStart`` and one ``ClipChunk`` per decoded chunk; when it encodes, the ``ClipEncoded``
    comes as soon as the whole clip is encoded: before the first chunk when encode-then-decode, after the
    last when streamed (none when cancelled before). Returns the seconds taken.
    """
    import time

    t0, prev = time.perf_counter(), None
    if encoding is None:
        rt = vae.iter_round_trip_clip(frames, noise=noise, tile=tile, progress=progress, should_stop=should_stop)
        yield ClipStart(rt.frames)
        sent = False
        for start, rec in rt:
            if rt.encoding is not None and not sent:
                sent = True
                yield encoded(vae, rt)
            yield measure_chunk(rt.original, start, rec, prev)
            prev = rec[-1]
        if rt.encoding is not None and not sent:
            yield encoded(vae, rt)
        return time.perf_counter() - t0
    latent, snr_db = encoding.latent, None
    if noise is not None:
        from vaestudio.core.noise import add_noise

        noised = add_noise(latent, vae.family, spec=noise)
        latent, snr_db = noised.latent, noised.snr_db
    yield ClipStart(encoding.frames, snr_db, latent)
    for start, rec in vae.iter_decode_clip(latent, encoding.height, encoding.width, tile=tile, progress=progress,
                                           should_stop=should_stop):
        yield measure_chunk(encoding.original, start, rec, prev)
        prev = rec[-1]
    return time.perf_counter() - t0


def encoded(vae, rt) -> ClipEncoded:
    """A round trip's encoding (``core.clip_stream.ClipRoundTrip``) with the latent-to-RGB picture of each
    latent frame."""
    from vaestudio.core.latents import latent_preview

    e = rt.encoding
    previews = [latent_preview(e.latent[:, i], vae.family.name) for i in range(e.latent.shape[1])]
    return ClipEncoded(e, previews, rt.snr_db, e.latent if rt.noised is None else rt.noised.latent)


def measure_chunk(original: np.ndarray, start: int, rec: np.ndarray, prev: np.ndarray | None) -> ClipChunk:
    """A decoded chunk with its difference maps and metrics (``metrics.clip_metrics``, the flicker terms
    counted with the previous chunk's last frame so that they add up to the clip's flicker)."""
    from vaestudio.core.metrics import clip_metrics, colorize, difference_map

    orig = original[start:start + len(rec)]
    if prev is not None and start > 0:
        m = clip_metrics(original[start - 1:start + len(rec)], np.concatenate([prev[None], rec]))
        psnr, ssim, mae, terms = m.psnr[1:], m.ssim[1:], m.mae[1:], len(rec)
    else:
        m = clip_metrics(orig, rec)
        psnr, ssim, mae, terms = m.psnr, m.ssim, m.mae, len(rec) - 1
    diffs = np.stack([colorize(difference_map(a, b)) for a, b in zip(orig, rec, strict=True)])
    return ClipChunk(start, rec, diffs, psnr, ssim, mae, m.flicker * terms, terms)


def preview_clip_job(tiny, latent, height: int, width: int, *, progress, should_stop):
    """The preview decoder's frames of the clip latent, chunk by chunk: ``(start, frames)``."""
    yield from tiny.iter_decode_clip(latent, height, width, should_stop=should_stop)


def save_clip_videos_job(folder, name: str, frames: list, diffs: list, fps: float, *, progress, should_stop) -> str:
    """Write ``<name>_recon.mp4`` and ``<name>_diff.mp4`` (the CLI's names) into ``folder``."""
    from pathlib import Path

    from vaestudio.core.video import write_video

    out = Path(folder)
    codec = write_video(out / f"{name}_recon.mp4", frames, fps)
    write_video(out / f"{name}_diff.mp4", diffs, fps)
    return f"Saved {name}_recon.mp4 and {name}_diff.mp4 ({codec}) in {out}"
