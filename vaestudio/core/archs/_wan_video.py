"""The temporal path of diffusers' ``AutoencoderKLWan`` (Wan 2.1, Wan 2.2 TI2V-5B), chunk by chunk.

Diffusers' ``_encode`` runs the encoder on the first frame alone, then on chunks of 4 frames, carrying
each causal convolution's last frames from one chunk to the next in a feature cache (``_feat_map``,
reset by ``clear_cache``); ``_decode`` runs the decoder one latent frame at a time the same way (the
first with ``first_chunk=True``: Wan 2.2's repeating shortcut drops the frames a first chunk does not
have). Here the same calls are made with a cache of the caller's own, one chunk per step, so a clip is
encoded and decoded with memory bounded by the chunk (not the clip), the window gets frames as they are
decoded, and jobs sharing one model never share a cache. Spatial tiles (large frames, or on running
out of memory) each keep a stream and cache of their own and are blended per chunk as image tiles are
(``tiling.run_tiled``; diffusers' own ``tiled_encode`` blends differently). ``stepper`` gives one pass as
a function of the next chunk, so a round trip can run an encoder pass and a decoder pass side by side
(``core.clip_stream``: each chunk decoded as soon as it is encoded). Wan 2.2 patchifies the
frames 2x2 before its encoder and unpatchifies after its decoder, per chunk (or tile) here: a spatial
operation, so equal to diffusers' whole-clip one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from vaestudio.core.tiling import run_clip_tiled


def temporal_factor(cfg: dict) -> int:
    """Frames per latent frame after the first: 2 per temporal downsampling level (Wan: 4)."""
    return 2 ** sum(bool(t) for t in cfg.get("temperal_downsample") or ())


def causal_chunks(frames: int, factor: int) -> list[tuple[int, int]]:
    """The frame ranges a causal Wan VAE encodes together: the first frame alone, then ``factor`` at a time."""
    return [(0, min(1, frames))] + [(s, min(s + factor, frames)) for s in range(1, frames, factor)]


def _cache(module: torch.nn.Module) -> list:
    """An empty feature cache: one slot per causal convolution of ``module`` (as ``clear_cache``)."""
    return [None] * sum(type(m).__name__ == "WanCausalConv3d" for m in module.modules())


class Stream:
    """One causal pass over a clip, or over one spatial tile of it: the model with a feature cache of its own."""

    def __init__(self, model: torch.nn.Module, half: str, patch: int) -> None:
        self.model, self.patch = model, patch
        self.cache = _cache(getattr(model, half))
        self.steps = 0

    def encode(self, part: torch.Tensor) -> torch.Tensor:
        """The next frames (1, 3, t, H, W) in [-1, 1] -> the posterior's mean (1, C, t', h, w)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

        if self.patch > 1:
            part = patchify(part, patch_size=self.patch)
        h = self.model.quant_conv(self.model.encoder(part, feat_cache=self.cache, feat_idx=[0]))
        return h[:, : h.shape[1] // 2]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The next latent frame (1, C, 1, h, w) -> (1, 3, t, H, W) in [-1, 1] (1 frame first, then 4 each)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        out = self.model.decoder(self.model.post_quant_conv(z), feat_cache=self.cache, feat_idx=[0],
                                 first_chunk=self.steps == 0)
        self.steps += 1
        if self.patch > 1:
            out = unpatchify(out, patch_size=self.patch)
        return out.clamp(-1.0, 1.0)


def stepper(model: torch.nn.Module, half: str, patch: int, tiles: dict | None = None) -> Callable:
    """One causal pass of ``half`` ("encoder", "decoder") as a function of the next chunk (``Stream.encode``
    or ``Stream.decode``), spatially tiled when ``tiles`` gives ``run_tiled``'s tile, overlap, up and down."""
    def make() -> Stream:
        return Stream(model, half, patch)

    fn = Stream.encode if half == "encoder" else Stream.decode
    streams = [make()]

    def step(part: torch.Tensor) -> torch.Tensor:
        return fn(streams[0], part) if tiles is None else run_clip_tiled(streams, make, fn, part, tiles)

    return step


def iter_encode(model: torch.nn.Module, x: torch.Tensor, chunks: list[tuple[int, int]], patch: int,
                tiles: dict | None = None) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """(1, 3, T, H, W) in [-1, 1] -> ``((start, end), mean)`` per chunk, mean (1, C, t', h, w)."""
    step = stepper(model, "encoder", patch, tiles)
    for s, e in chunks:
        yield (s, e), step(x[:, :, s:e])


def iter_decode(model: torch.nn.Module, z: torch.Tensor, patch: int, tiles: dict | None = None) -> Iterator[torch.Tensor]:
    """Raw (1, C, T', h, w) -> (1, 3, t, H, W) in [-1, 1] per latent frame (1 frame, then 4 each)."""
    step = stepper(model, "decoder", patch, tiles)
    for i in range(z.shape[2]):
        yield step(z[:, :, i : i + 1])
