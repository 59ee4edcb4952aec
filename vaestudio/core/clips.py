"""Clips through a torch VAE: ``ClipMixin`` gives ``TorchAutoencoder`` the clip half of the interface
(``frames_valid``, ``encode_clip``, ``iter_decode_clip``, ``decode_clip``; see ``vaestudio.core.vae``).

An image VAE (``info.kind == "image"``) encodes and decodes a clip frame by frame, a few frames per
batch (each frame exactly as ``encode`` would alone), through ``encode_batch``/``decode_batch`` (so the
MNIST VAE, which is no ``TorchAutoencoder``, has clips too). A video VAE overrides the hooks:

- ``_encode_clip_tensor(x)``: (1, 3, T, H, W) in the model's input range -> raw (1, C, T', h, w);
  or, to report progress and take cancellation between causal chunks, ``_iter_encode_clip_tensor(x)``
  yielding ``((start, end), raw_chunk)`` per range of ``_clip_chunks``;
- ``_iter_decode_clip_tensor(z)``: raw (1, C, T', h, w) -> (1, 3, t, H, W) per temporal chunk;
- ``_clip_chunks(frames, h, w)`` (the frame ranges encoded or decoded together) and ``_clip_frames``
  (how many frames T' latent frames decode to) where the defaults (one chunk; 1 + (T'-1) * factor)
  do not fit.

Each chunk is computed under the VAE's precision policy with cancellation before every declared
block; a reduced precision that gives NaN/Inf switches the VAE to fp32 and the clip runs again (a
decode skips the frames it already gave). A cancelled ``iter_decode_clip`` simply stops.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from vaestudio.core.clip_stream import ClipRoundTrip
from vaestudio.core.device import is_oom, no_kernel
from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.tensors import pad_to_multiple
from vaestudio.core.vae import ClipDecoding, ClipEncoding

if TYPE_CHECKING:
    from vaestudio.core.noise import NoiseSpec
    from vaestudio.core.tiling import Progress, ShouldStop

#: an image VAE encodes a clip in batches of at most this many frames (fewer for large frames)
CLIP_BATCH = 4
_NO_TILES = "spatial tiling is not available for this VAE's clips yet: the frames were run whole"


def _oom() -> VaeStudioError:
    return VaeStudioError("ran out of memory on this clip; try a smaller --size or fewer --frames")


class ClipMixin:
    """The clip methods of ``TorchAutoencoder`` (see the module docstring)."""

    #: a video VAE whose clip hooks take ``tiles=`` (``tiling.run_tiled``'s tile, overlap, up, down)
    clip_tiles: ClassVar[bool] = False

    # -- what a video VAE provides ------------------------------------------------------------
    def _encode_clip_tensor(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _iter_encode_clip_tensor(self, x: torch.Tensor) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
        yield (0, x.shape[2]), self._encode_clip_tensor(x)

    def _iter_decode_clip_tensor(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    # -- what TorchAutoencoder has (these defaults serve a VAE outside it: the MNIST VAE) ---------
    def _need(self, half: str) -> None:
        if not (self.can_encode if half == "encoder" else self.can_decode):
            raise VaeStudioError(f"this VAE source has no {half}")

    def _decode_batch(self, latent, *, tile, tile_size, tile_overlap, progress, should_stop, notes):
        return self.decode_batch(latent, tile=tile, progress=progress, should_stop=should_stop, notes=notes), False

    @property
    def _is_video(self) -> bool:
        return self.info.kind == "video"

    def _clip_chunks(self, frames: int, height: int, width: int) -> list[tuple[int, int]]:
        """The frame ranges [start, end) computed together."""
        if self._is_video:
            return [(0, frames)]
        n = max(1, min(CLIP_BATCH, (512 * 512) // max(1, height * width)))
        return [(s, min(s + n, frames)) for s in range(0, frames, n)]

    def _clip_frames(self, latent_frames: int) -> int:
        """The number of frames ``latent_frames`` latent frames decode to."""
        td = self.info.temporal_downscale
        return 1 + (latent_frames - 1) * td if self._is_video and td > 1 else latent_frames

    # -- the interface ----------------------------------------------------------------------
    def clip_to_model(self, raw: torch.Tensor) -> torch.Tensor:
        """A raw clip latent (C, T', h, w) to model space: ``to_model`` of each latent frame (``to_model``
        reads a 4-D tensor as a batch of images, (N, C, h, w))."""
        return self.to_model(raw.movedim(0, 1)).movedim(0, 1)

    def clip_from_model(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse of ``clip_to_model``."""
        return self.from_model(latent.movedim(0, 1)).movedim(0, 1)

    def frames_valid(self, n: int) -> int:
        td = self.info.temporal_downscale
        if not self._is_video or td <= 1 or n < 1:
            return max(0, int(n))
        return 1 + (int(n) - 1) // td * td

    def encode_clip(self, frames: np.ndarray, *, tile: str = "auto", progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> ClipEncoding:
        """Encode (T, H, W, 3) float frames in [0, 1]; see ``Autoencoder.encode_clip``."""
        t0 = time.perf_counter()
        original, notes = self._prepare_clip(frames)
        return self._encode_prepared(original, notes, t0, tile, progress, should_stop)

    def iter_round_trip_clip(self, frames: np.ndarray, *, noise: NoiseSpec | None = None, tile: str = "auto",
                             progress: Progress | None = None, should_stop: ShouldStop | None = None) -> ClipRoundTrip:
        """Encode, noise and decode a clip, handing out the frames as they are decoded: chunk by chunk
        interleaved when the VAE streams (``_clip_streams``), else encode-then-decode; see ``clip_stream``."""
        return ClipRoundTrip(self, frames, noise, tile, progress, should_stop)

    def _clip_streams(self, tiles_encode: dict | None, tiles_decode: dict | None):
        """``(encode_step, decode_step)`` of one streamed round trip (each takes the next chunk, raw in and
        out, with a causal cache of its own), or None: this VAE's clips are encoded whole before decoding."""
        return None

    def _prepare_clip(self, frames: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The frames as the VAE sees them (trimmed to ``frames_valid``; an image VAE's prepared), float32."""
        self._need("encoder")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise VaeStudioError(f"a clip is (frames, height, width, 3) with at least one frame, not {frames.shape}")
        notes: list[str] = []
        n = self.frames_valid(len(frames))
        if n != len(frames):
            td = self.info.temporal_downscale
            notes.append(f"trimmed {len(frames)} frames to {n} (this VAE takes 1 + {td}k frames)")
            frames = frames[:n]
        if self._is_video:
            return np.ascontiguousarray(frames, dtype=np.float32), notes
        notes.append("an image VAE: the clip is encoded frame by frame")
        prepared = [self.prepare_pixels(f) for f in frames]
        for _, ns in prepared[:1]:
            notes.extend(ns)
        return np.ascontiguousarray(np.stack([p for p, _ in prepared]), dtype=np.float32), notes

    def _encode_prepared(self, original, notes, t0, tile, progress, should_stop) -> ClipEncoding:
        if self._is_video:
            raw, tiled, chunks = self._encode_video(original, tile, progress, should_stop, notes)
        else:
            raw, tiled, chunks = self._encode_frames(original, tile, progress, should_stop, notes)
        return self._clip_encoding(original, raw, t0, tiled, chunks, notes)

    def _clip_encoding(self, original, raw, t0, tiled, chunks, notes) -> ClipEncoding:
        latent = self.clip_to_model(raw)
        h, w = original.shape[1:3]
        return ClipEncoding(original, latent.contiguous(), raw.contiguous(), len(original), h, w,
                            time.perf_counter() - t0, tiled, chunks, list(dict.fromkeys(notes)))

    def iter_decode_clip(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
                         tile: str = "auto", progress: Progress | None = None,
                         should_stop: ShouldStop | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Decode a model-space clip latent (C, T', h, w) chunk by chunk; see ``Autoencoder.iter_decode_clip``."""
        yield from self._iter_decode(latent, height, width, tile, progress, should_stop, [], [])

    def decode_clip(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
                    tile: str = "auto", progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> ClipDecoding:
        """``iter_decode_clip`` collected into one ``ClipDecoding``."""
        t0 = time.perf_counter()
        notes: list[str] = []
        chunks: list[tuple[int, int]] = []
        tiled = [False]
        parts = list(self._iter_decode(latent, height, width, tile, progress, should_stop, notes, chunks, tiled))
        want = self._clip_frames(int(latent.shape[1]))
        if parts:
            frames = np.concatenate([p for _, p in parts])
        else:
            frames = np.zeros((0, height or 0, width or 0, 3), np.float32)
        complete = len(frames) == want
        if not complete:
            notes.append(f"cancelled: {len(frames)} of {want} frames decoded")
        return ClipDecoding(frames, time.perf_counter() - t0, tiled[0], chunks, list(dict.fromkeys(notes)), complete)

    # -- image VAEs: frame by frame -------------------------------------------------------------
    def _encode_frames(self, original, tile, progress, should_stop, notes):
        t, h, w = original.shape[:3]
        chunks = self._clip_chunks(t, h, w)
        raws, tiled = [], False
        for i, (s, e) in enumerate(chunks):
            if should_stop is not None and should_stop():
                raise Cancelled()
            x = torch.from_numpy(original[s:e]).permute(0, 3, 1, 2)
            x = pad_to_multiple(x, self.info.pad_multiple)
            z, tiled_now = self.encode_batch(x, tile=tile, should_stop=should_stop, notes=notes)
            raws.append(z)
            tiled = tiled or tiled_now
            if progress is not None:
                progress(i + 1, len(chunks))
        return torch.cat(raws).movedim(0, 1), tiled, chunks

    def _decode_frames(self, latent, height, width, tile, progress, should_stop, notes, chunks, tiled):
        per_frame = latent.movedim(1, 0)  # (T, C, h, w) model space
        f = self.info.pad_multiple if per_frame.ndim == 4 else 1
        sizes = (per_frame.shape[-2] * f, per_frame.shape[-1] * f) if per_frame.ndim == 4 else (28, 28)
        plan = self._clip_chunks(len(per_frame), *sizes)
        for i, (s, e) in enumerate(plan):
            if should_stop is not None and should_stop():
                return
            try:
                x, tiled_now = self._decode_batch(per_frame[s:e], tile=tile, tile_size=None, tile_overlap=None,
                                                  progress=None, should_stop=should_stop, notes=notes)
            except Cancelled:
                return
            tiled[0] = tiled[0] or tiled_now
            chunks.append((s, e))
            if progress is not None:
                progress(i + 1, len(plan))
            yield s, self._to_frames(x.unsqueeze(0).movedim(1, 2), height, width, unit=True)

    # -- video VAEs: causal chunks --------------------------------------------------------------
    def _video_input(self, original: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(original).permute(0, 3, 1, 2)
        x = pad_to_multiple(x, self.info.pad_multiple)
        lo, hi = self.input_range
        return (x * (hi - lo) + lo).permute(1, 0, 2, 3)[None]  # (1, 3, T, H, W)

    def _clip_tiles(self, tile: str, pixels: int, half: str, notes: list[str], oom: bool = False) -> dict | None:
        """``run_tiled``'s arguments when a video VAE's clip is tiled (``tile`` on, auto above
        ``auto_tile_pixels`` or after running out of memory), else None."""
        if not (tile == "on" or (tile == "auto" and (oom or pixels > self.auto_tile_pixels))):
            return None
        if not self.clip_tiles:
            notes.append(_NO_TILES)
            return None
        size, overlap = self._tiles(None, None)
        f = self.downscale
        if half == "encode":
            return {"tile": size, "overlap": overlap, "up": 1, "down": f}
        return {"tile": size // f, "overlap": overlap // f, "up": f, "down": 1}

    def _encode_video(self, original, tile, progress, should_stop, notes):
        t, h, w = original.shape[:3]
        x = self._video_input(original)
        total = len(self._clip_chunks(t, *x.shape[-2:]))
        chunks: list[tuple[int, int]] = []
        tiles = [self._clip_tiles(tile, h * w, "encode", notes)]

        def run(xx: torch.Tensor) -> torch.Tensor:
            chunks.clear()
            outs = []
            kw = {} if tiles[0] is None else {"tiles": tiles[0]}
            for rng, piece in self._iter_encode_clip_tensor(xx, **kw):
                outs.append(piece.float().cpu())
                chunks.append(rng)
                if progress is not None:
                    progress(len(chunks), max(total, len(chunks)))
                if should_stop is not None and should_stop() and len(chunks) < total:
                    raise Cancelled()
            return torch.cat(outs, dim=2)

        while True:
            try:
                with self._stoppable(should_stop), torch.inference_mode():
                    raw = self._guarded(run, x, notes, "encode")
                return raw[0], tiles[0] is not None, chunks
            except Cancelled:
                raise
            except Exception as exc:
                retry = self._clip_tiles(tile, h * w, "encode", [], oom=True) if tiles[0] is None else None
                if not is_oom(exc) or retry is None:
                    if is_oom(exc):
                        raise _oom() from None
                    raise
                notes.append("ran out of memory; retried with tiles")
                tiles[0] = retry
                self._free()

    def _iter_decode(self, latent, height, width, tile, progress, should_stop, notes, chunks, tiled=None):
        self._need("decoder")
        tiled = [False] if tiled is None else tiled
        if not self._is_video:
            yield from self._decode_frames(latent, height, width, tile, progress, should_stop, notes, chunks, tiled)
            return
        z = self.clip_from_model(latent.float())[None]  # (1, C, T', h, w) raw
        f = self.downscale
        pixels = z.shape[-2] * z.shape[-1] * f * f
        tiles = self._clip_tiles(tile, pixels, "decode", notes)
        total = len(self._clip_chunks(self._clip_frames(int(z.shape[2])), z.shape[-2] * f, z.shape[-1] * f))
        given = 0  # frames yielded so far (a run again in fp32 skips them)
        while True:
            dtype, computes = self.dtype, self._computes("decode")
            tiled[0] = tiles is not None
            gen = self._iter_decode_clip_tensor(z.to(self.device, dtype), **({} if tiles is None else {"tiles": tiles}))
            start, restart = 0, False
            while True:
                if should_stop is not None and should_stop():
                    return
                try:
                    out = self._step(gen, should_stop, computes, dtype)
                except Cancelled:
                    return
                except NotImplementedError as exc:  # no kernel for an operation in this precision here
                    if computes == torch.float32 or self.dtype != dtype:
                        raise
                    self._fall_back_to_fp32(computes, notes, no_kernel(exc, self.device))
                    restart = True
                    break
                except RuntimeError as exc:
                    if is_oom(exc):
                        retry = self._clip_tiles(tile, pixels, "decode", [], oom=True) if tiles is None else None
                        if retry is None:
                            raise _oom() from None
                        notes.append("ran out of memory; retried with tiles")
                        tiles = retry
                        self._free()
                    elif self.dtype == dtype:
                        raise
                    restart = True  # tiles now, or another job switched the weights to fp32 under this one
                    break
                if out is None:
                    return
                if computes != torch.float32 and not torch.isfinite(out).all():
                    self._fall_back_to_fp32(computes, notes, "produced NaN/Inf")
                    restart = True
                    break
                end = start + int(out.shape[2])
                if end > given:
                    chunks.append((start, end))
                    if progress is not None:
                        progress(len(chunks), max(total, len(chunks)))
                    frames = self._to_frames(out.float().cpu(), height, width)
                    yield max(start, given), frames[max(0, given - start):]
                    given = end
                start = end
            if not restart:
                return

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _step(self, gen, should_stop, computes, dtype):
        """The next chunk of ``gen``, computed in the VAE's precision with cancellation hooks set
        (and unset again before the chunk is handed out)."""
        autocast = (torch.autocast(self.device.type, torch.bfloat16) if computes != dtype
                    else contextlib.nullcontext())
        with self._stoppable(should_stop), torch.inference_mode(), autocast:
            return next(gen, None)

    def _to_frames(self, x: torch.Tensor, height: int | None, width: int | None, unit: bool = False) -> np.ndarray:
        """(1, 3, t, H, W) in the input range (in [0, 1] when ``unit``) -> (t, H, W, 3) float32 in [0, 1]."""
        if not unit:
            lo, hi = self.input_range
            x = (x - lo) / (hi - lo)
        x = x[0].clamp(0, 1).permute(1, 2, 3, 0)
        x = x[:, : height or x.shape[1], : width or x.shape[2]]
        return np.ascontiguousarray(x.numpy(), dtype=np.float32)
