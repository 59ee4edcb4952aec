"""A clip's round trip (encode, noise, decode) with the frames handed out as they are decoded.

``ClipMixin.iter_round_trip_clip`` returns a ``ClipRoundTrip``: iterating it yields ``(start_frame,
frames)`` as ``iter_decode_clip`` does. A video VAE whose ``_clip_streams`` gives an encode step and a
decode step (Wan: its two feature caches side by side) streams: chunk k is encoded, noised, decoded and
handed out before chunk k + 1 is encoded, so the first frame comes after one chunk of encode and decode
instead of after the whole encode. Every other VAE encodes the whole clip, then decodes it.

The noise streams too: it is ``noise.noise_like`` of the whole latent's shape (known from the frame
count once the first chunk gives the channels and size), each latent frame taking its slice, and
``noise.add_noise`` is elementwise, so the frames and the noised latent equal the unstreamed
``encode_clip`` -> ``add_noise`` -> ``iter_decode_clip`` (a test checks). Once all frames came,
``encoding`` holds the ``ClipEncoding`` (the clean latent) and ``noised`` the ``NoiseResult``; a
cancelled round trip stops (frames handed out so far are the caller's) and leaves ``encoding`` None.
A reduced precision giving NaN/Inf, running out of memory or a model error part-way ends the stream:
the round trip runs again encode-then-decode (which has the fp32 and tile fallbacks), skipping the
frames already handed out.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch

from vaestudio.core.errors import Cancelled
from vaestudio.core.noise import NoiseResult, NoiseSpec, add_noise, noise_like


class _Unstreamed(Exception):
    """The stream cannot go on: run the round trip encode-then-decode."""


class ClipRoundTrip:
    """One clip through one VAE and back; iterate for ``(start_frame, frames)`` (see the module docstring)."""

    def __init__(self, vae, frames: np.ndarray, noise: NoiseSpec | None, tile: str, progress, should_stop) -> None:
        self._t0 = time.perf_counter()
        self.vae, self.noise, self.tile = vae, noise, tile
        self.progress, self.should_stop = progress, should_stop
        self.original, self.notes = vae._prepare_clip(frames)
        self.frames = len(self.original)
        self.height, self.width = self.original.shape[1:3]
        self.encoding = None  # core.vae.ClipEncoding once the whole clip is encoded
        self.noised: NoiseResult | None = None
        self.streamed = False  # whether the frames came chunk by chunk as they were encoded

    @property
    def snr_db(self) -> float | None:
        return None if self.noised is None else self.noised.snr_db

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        vae, given = self.vae, 0
        streams = None
        if vae._is_video:
            x = vae._video_input(self.original)
            pixels = self.height * self.width
            tiles = (vae._clip_tiles(self.tile, pixels, "encode", self.notes),
                     vae._clip_tiles(self.tile, x.shape[-2] * x.shape[-1], "decode", []))
            streams = vae._clip_streams(*tiles)
        if streams is not None:
            self.streamed = True
            try:
                for start, part in self._stream(x, *streams, tiles[0] is not None):
                    yield start, part
                    given = start + len(part)
                return
            except _Unstreamed:
                self.streamed = False
                self.notes.append("the streamed round trip stopped part-way; ran again encode-then-decode")
        self.encoding = vae._encode_prepared(self.original, self.notes, self._t0, self.tile, self.progress,
                                             self.should_stop)
        latent = self.encoding.latent
        if self.noise is not None:
            self.noised = add_noise(latent, vae.family, spec=self.noise)
            latent = self.noised.latent
        for start, part in vae.iter_decode_clip(latent, self.height, self.width, tile=self.tile,
                                                progress=self.progress, should_stop=self.should_stop):
            if start + len(part) > given:
                yield max(start, given), part[max(0, given - start):]

    def _run(self, step, part: torch.Tensor, half: str) -> torch.Tensor | None:
        """One step in the VAE's precision for ``half``; None when cancelled."""
        vae = self.vae
        dtype, computes = vae.dtype, vae._computes(half)
        autocast = torch.autocast(vae.device.type, torch.bfloat16) if computes != dtype else contextlib.nullcontext()
        try:
            with vae._stoppable(self.should_stop), torch.inference_mode(), autocast:
                out = step(part.to(vae.device, dtype))
        except Cancelled:
            return None
        except RuntimeError as exc:
            raise _Unstreamed() from exc
        if vae.dtype != dtype or (computes != torch.float32 and not torch.isfinite(out).all()):
            raise _Unstreamed()
        return out.float().cpu()

    def _stream(self, x: torch.Tensor, encode_step, decode_step, tiled: bool) -> Iterator[tuple[int, np.ndarray]]:
        vae, stop = self.vae, self.should_stop
        chunks = vae._clip_chunks(self.frames, *x.shape[-2:])
        td = max(1, vae.info.temporal_downscale)
        raws, eps, k, encode_s = [], None, 0, 0.0
        for i, (s, e) in enumerate(chunks):
            if stop is not None and stop():
                return
            t0 = time.perf_counter()
            raw = self._run(encode_step, x[:, :, s:e], "encode")
            encode_s += time.perf_counter() - t0
            if raw is None:
                return
            raws.append(raw)
            latent = vae.clip_to_model(raw[0])
            if self.noise is not None:
                if eps is None:
                    c, _, h, w = latent.shape
                    eps = noise_like(torch.empty(c, (self.frames - 1) // td + 1, h, w), self.noise.seed)
                n = latent.shape[1]
                latent = add_noise(latent, vae.family, spec=self.noise, eps=eps[:, k:k + n]).latent
                k += n
            out = self._run(decode_step, vae.clip_from_model(latent.float())[None], "decode")
            if out is None:
                return
            if self.progress is not None:
                self.progress(i + 1, len(chunks))
            yield s, vae._to_frames(out, self.height, self.width)
        raw = torch.cat(raws, dim=2)[0]
        # the encoding's seconds are its encoder steps' (the decoder's ran between them)
        t0 = time.perf_counter() - encode_s
        self.encoding = vae._clip_encoding(self.original, raw, t0, tiled, chunks, self.notes)
        if self.noise is not None:
            self.noised = add_noise(self.encoding.latent, vae.family, spec=self.noise, eps=eps)
