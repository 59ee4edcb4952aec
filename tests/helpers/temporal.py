"""Shared by the tests of the video VAEs that run diffusers' temporal tiles (LTX-Video, LTX-2): diffusers' own
frame-wise path switched on for a reference, and the check that a clip comes out equal to it, tile by tile,
with no decoder call seeing more than one tile."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from helpers.archs import close


@contextlib.contextmanager
def framewise(*models, size: int | None = None, stride: int | None = None):
    """diffusers' temporal tiles on (``use_framewise_decoding``, which the LTX classes' encode reads too), and the
    tile sizes (frames) set on each model; all restored after."""
    keep = [(m, m.use_framewise_encoding, m.use_framewise_decoding, m.tile_sample_min_num_frames,
             m.tile_sample_stride_num_frames) for m in models]
    for m in models:
        m.use_framewise_encoding = m.use_framewise_decoding = True
        m.tile_sample_min_num_frames = size or m.tile_sample_min_num_frames
        m.tile_sample_stride_num_frames = stride or m.tile_sample_stride_num_frames
    try:
        yield
    finally:
        for m, enc, dec, s, st in keep:
            m.use_framewise_encoding, m.use_framewise_decoding = enc, dec
            m.tile_sample_min_num_frames, m.tile_sample_stride_num_frames = s, st


@contextlib.contextmanager
def frames_seen(module: torch.nn.Module):
    """The number of frames (dim 2) of every input ``module`` is called on."""
    seen: list[int] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[2])))
    try:
        yield seen
    finally:
        handle.remove()


def assert_clip_in_tiles(vae, x: np.ndarray, mean: torch.Tensor, ref: np.ndarray, chunks: list[tuple[int, int]]):
    """``encode_clip`` gives diffusers' latent ``mean`` (C, T', h, w) and ``decode_clip`` its frames ``ref``, within
    1e-5, both in ``chunks``; ``iter_decode_clip`` hands out the same chunks one by one. Returns the encoding."""
    h, w = x.shape[1:3]
    vae.whole_clip_voxels = 0  # tiny clips: in tiles whatever their size (the default runs them whole)
    enc = vae.encode_clip(x)
    assert enc.chunks == chunks, enc.chunks
    close(enc.raw, mean)
    dec = vae.decode_clip(enc.latent, h, w)
    assert dec.complete and dec.frames.shape == ref.shape and dec.chunks == chunks, dec.chunks
    close(dec.frames, ref)
    parts = list(vae.iter_decode_clip(enc.latent, h, w))
    assert [(s, s + len(p)) for s, p in parts] == chunks
    close(np.concatenate([p for _, p in parts]), ref)
    return enc
