"""Clips in an evaluation: each clip through each VAE's clip path, scored as one row.

A clip (``data.PreparedClip``: its first ``--frames`` frames, each resized as the images are) goes
through ``vae.encode_clip`` and ``vae.decode_clip`` (a video VAE's causal chunks, an image VAE frame by
frame: the path of ``vaestudio reconstruct CLIP``), so each VAE takes the most frames it can (1 + 4k
for Wan). Every frame is measured as an image of a batch is (``measure.batch_metrics``); the clip's row
holds the mean over its frames of PSNR, SSIM, MAE, the colour shift and LPIPS, its ``flicker``
(``metrics.flicker``), ``frames`` and ``worst_frame`` (the lowest PSNR; the picture the report shows).
rFID and the accumulators take the frames as images (the raw latent as (T', C, h, w) latent frames).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.evaluate.data import PreparedClip
from vaestudio.core.evaluate.types import Row, VaeRef
from vaestudio.core.tiling import ShouldStop
from vaestudio.core.vae import Autoencoder

#: which per-frame value picks the worst frame, in order of preference, and whether higher is better
_WORST_BY = (("psnr", True), ("ssim", True), ("mae", False), ("lpips", False))


@dataclass
class ClipRoundTrip:
    """One clip through one VAE, as (T, 3, H, W) batches of frames."""

    seen: torch.Tensor  # the frames the VAE took (after trimming and its own preparation)
    rec: torch.Tensor  # their reconstruction
    raw: torch.Tensor  # the raw latent as latent frames (T', C, h, w) (or (T, D) for vector latents)
    encode_s: float
    decode_s: float


def clip_roundtrip(vae: Autoencoder, clip: PreparedClip, tile: str, should_stop: ShouldStop | None) -> ClipRoundTrip:
    """Encode and decode a clip (the latent's mean: ``--sample`` is for images)."""
    frames = clip.frames.permute(0, 2, 3, 1).numpy()
    t0 = time.perf_counter()
    enc = vae.encode_clip(frames, tile=tile, should_stop=should_stop)
    t1 = time.perf_counter()
    dec = vae.decode_clip(enc.latent, enc.height, enc.width, tile=tile, should_stop=should_stop)
    t2 = time.perf_counter()
    if not dec.complete:
        raise Cancelled()
    seen = torch.from_numpy(np.ascontiguousarray(enc.original, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    rec = torch.from_numpy(np.ascontiguousarray(dec.frames, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    if rec.shape != seen.shape:
        raise VaeStudioError(f"the VAE returned {tuple(rec.shape)} frames for {tuple(seen.shape)}")
    return ClipRoundTrip(seen, rec, enc.raw.movedim(0, 1).float().cpu().contiguous(), t1 - t0, t2 - t1)


def worst_frame(vals: dict[str, list[float | None]]) -> int | None:
    """The frame with the lowest PSNR (else SSIM, highest MAE or LPIPS), the first of equals."""
    for metric, higher in _WORST_BY:
        v = np.array([math.nan if x is None else x for x in vals.get(metric, [])], dtype=np.float64)
        if v.size and not np.isnan(v).all():
            v = np.where(np.isnan(v), np.inf if higher else -np.inf, v)
            return int(np.argmin(v) if higher else np.argmax(v))
    return None


def _mean(values: list[float | None] | None) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def clip_row(path: str, ref: VaeRef, rt: ClipRoundTrip, vals: dict[str, list[float | None]]) -> Row:
    """A clip's row: the mean over its frames of each per-frame value (``vals``, from ``batch_metrics``),
    its flicker, frame count and worst frame."""
    from vaestudio.core.metrics import flicker

    t, _, h, w = rt.seen.shape
    seconds = rt.encode_s + rt.decode_s
    fl = flicker(rt.seen.permute(0, 2, 3, 1).numpy(), rt.rec.permute(0, 2, 3, 1).numpy())
    return Row(path, ref.name, ref.source, int(w), int(h), frames=int(t), flicker=fl, worst_frame=worst_frame(vals),
               seconds=seconds, encode_s=rt.encode_s, decode_s=rt.decode_s,
               **{k: _mean(v) for k, v in vals.items()})


def save_clip(rt: ClipRoundTrip, path, fps: float) -> None:
    """The reconstruction as a video (``--save-recons``)."""
    from vaestudio.core.video import write_video

    write_video(path, (f.permute(1, 2, 0).numpy() for f in rt.rec), fps)
