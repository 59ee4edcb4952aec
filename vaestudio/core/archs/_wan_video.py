"""The temporal path of diffusers' ``AutoencoderKLWan`` (Wan 2.1, Wan 2.2 TI2V-5B), chunk by chunk.

Diffusers' ``_encode`` runs the encoder on the first frame alone, then on chunks of 4 frames, carrying
each causal convolution's last frames from one chunk to the next in a feature cache (``_feat_map``,
reset by ``clear_cache``); ``_decode`` runs the decoder one latent frame at a time the same way (the
first with ``first_chunk=True``: Wan 2.2's repeating shortcut drops the frames a first chunk does not
have). Here the same calls are made with a cache of the caller's own, one chunk per step, so a clip is
encoded and decoded with memory bounded by the chunk (not the clip), the window gets frames as they are
decoded, and jobs sharing one model never share a cache. Wan 2.2 patchifies the frames 2x2 before its
encoder and unpatchifies after its decoder, per chunk here (a spatial operation, so equal to diffusers'
whole-clip one).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def temporal_factor(cfg: dict) -> int:
    """Frames per latent frame after the first: 2 per temporal downsampling level (Wan: 4)."""
    return 2 ** sum(bool(t) for t in cfg.get("temperal_downsample") or ())


def causal_chunks(frames: int, factor: int) -> list[tuple[int, int]]:
    """The frame ranges a causal Wan VAE encodes together: the first frame alone, then ``factor`` at a time."""
    return [(0, min(1, frames))] + [(s, min(s + factor, frames)) for s in range(1, frames, factor)]


def _cache(module: torch.nn.Module) -> list:
    """An empty feature cache: one slot per causal convolution of ``module`` (as ``clear_cache``)."""
    return [None] * sum(type(m).__name__ == "WanCausalConv3d" for m in module.modules())


def iter_encode(model: torch.nn.Module, x: torch.Tensor, chunks: list[tuple[int, int]],
                patch: int) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """(1, 3, T, H, W) in [-1, 1] -> ``((start, end), mean)`` per chunk, mean (1, C, t', h, w)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

    cache = _cache(model.encoder)
    for s, e in chunks:
        part = x[:, :, s:e]
        if patch > 1:
            part = patchify(part, patch_size=patch)
        h = model.quant_conv(model.encoder(part, feat_cache=cache, feat_idx=[0]))
        yield (s, e), h[:, : h.shape[1] // 2]  # the posterior's mean


def iter_decode(model: torch.nn.Module, z: torch.Tensor, patch: int) -> Iterator[torch.Tensor]:
    """Raw (1, C, T', h, w) -> (1, 3, t, H, W) in [-1, 1] per latent frame (1 frame, then 4 each)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    cache = _cache(model.decoder)
    for i in range(z.shape[2]):
        x = model.post_quant_conv(z[:, :, i : i + 1])
        out = model.decoder(x, feat_cache=cache, feat_idx=[0], first_chunk=i == 0)
        if patch > 1:
            out = unpatchify(out, patch_size=patch)
        yield out.clamp(-1.0, 1.0)
