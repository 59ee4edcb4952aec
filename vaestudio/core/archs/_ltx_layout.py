"""What the LTX-Video and LTX-2 video VAEs (diffusers' ``AutoencoderKLLTXVideo`` / ``AutoencoderKLLTX2Video``)
share: the config read from diffusers-layout shapes, telling the two apart, and their decode (timestep
conditioning, noise injection). Not an architecture itself.

What shapes show: widths (``block_out_channels``, ``decoder_block_out_channels``), layer counts, which
blocks down/upsample and by how much (a 0.9.5-style downsampler's channel ratio is its stride's volume:
4 spatial, 2 temporal, 8 both), the upsamplers' ``upsample_factor``, noise injection, timestep
conditioning, the patch size and the latent channels. What they do not (epsilons, causality, the
upsamplers' residual, padding modes) comes from the shipped config of the version the shapes point to.
"""

from __future__ import annotations

import math
import re

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers_video import ClipVae, TemporalTiles

_STRIDE = {4: "spatial", 2: "temporal", 8: "spatiotemporal"}
#: 0.9.0-style blocks: a resnet ``conv_out`` and a plain strided ``downsamplers.0.conv``
OLD_BLOCK = "LTXVideoDownBlock3D"


def _width(t: dict[str, torch.Tensor], key: str, dim: int = 0) -> int:
    return int(t[key].shape[dim])


def infer_ltx(t: dict[str, torch.Tensor], new_block: str) -> dict:
    """The config keys shapes show (KeyError/ValueError: blocks are missing). ``new_block``: the
    down-block class of the 0.9.5 / LTX-2 kind (a downsampler module with its own causal conv)."""
    conv_in = t["encoder.conv_in.conv.weight"]
    patch = math.isqrt(int(conv_in.shape[1]) // 3)
    if 3 * patch * patch != int(conv_in.shape[1]):
        raise ValueError("the encoder input is not 3 x patch^2 channels")
    n_down = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    inputs = [_width(t, f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight", 1) for i in range(n_down)]
    inputs.append(_width(t, "encoder.mid_block.resnets.0.conv1.conv.weight", 1))
    old = any(f"encoder.down_blocks.{i}.downsamplers.0.conv.weight" in t or f"encoder.down_blocks.{i}.conv_out.conv1.conv.weight" in t
              for i in range(n_down))
    layers = [count_index(t, rf"^encoder\.down_blocks\.{i}\.resnets\.(\d+)\.") for i in range(n_down)]
    layers.append(count_index(t, r"^encoder\.mid_block\.resnets\.(\d+)\."))
    scaling = [f"encoder.down_blocks.{i}.downsamplers.0.conv.weight" in t
               or f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.weight" in t for i in range(n_down)]
    cfg: dict = {"in_channels": 3, "latent_channels": _width(t, "decoder.conv_in.conv.weight", 1), "patch_size": patch,
                 "layers_per_block": layers, "spatio_temporal_scaling": scaling}
    if old:
        cfg.update(block_out_channels=inputs[:-1], down_block_types=[OLD_BLOCK] * n_down, downsample_type=["conv"] * n_down)
    else:
        kinds = []
        for i in range(n_down):
            key = f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.weight"
            kinds.append(_STRIDE[inputs[i + 1] // _width(t, key)] if key in t else "spatiotemporal")
        # LTX-2's encoder input convolution gives the latent width; LTX-Video 0.9.5's the first block's
        widths = inputs[1:] if new_block.startswith("LTX2") else inputs
        cfg.update(block_out_channels=widths, down_block_types=[new_block] * n_down, downsample_type=kinds)
        spatial = sum(s and k != "temporal" for s, k in zip(scaling, kinds, strict=True))
        temporal = sum(s and k != "spatial" for s, k in zip(scaling, kinds, strict=True))
    if _width(t, "encoder.conv_out.conv.weight") not in (cfg["latent_channels"] + 1, 2 * cfg["latent_channels"]):
        raise ValueError("the encoder output does not fit the latent")
    cfg.update(_decoder(t))
    if new_block.startswith("LTX2"):  # its upsamplers say their stride: conv out = in * volume / factor
        ups = []
        for i in range(len(cfg["upsample_factor"])):
            key = f"decoder.up_blocks.{i}.upsamplers.0.conv.conv.weight"
            if key in t:
                w = t[key].shape
                ups.append(_STRIDE[int(w[0]) * cfg["upsample_factor"][::-1][i] // int(w[1])])
            else:
                ups.append("spatiotemporal")
        cfg["upsample_type"] = ups  # in the decoder's order (diffusers does not reverse this list)
    if not old:  # the 0.9.5 kind's config says them (the class's default formula counts every scaling block)
        cfg.update(spatial_compression_ratio=patch * 2 ** spatial, temporal_compression_ratio=2 ** temporal)
    return cfg


def factors(cfg: dict) -> tuple[int, int]:
    """(spatial, temporal) downscale, as the class computes them."""
    n = sum(bool(s) for s in cfg["spatio_temporal_scaling"])
    return (int(cfg.get("spatial_compression_ratio") or cfg.get("patch_size", 4) * 2 ** n),
            int(cfg.get("temporal_compression_ratio") or cfg.get("patch_size_t", 1) * 2 ** n))


def _decoder(t: dict[str, torch.Tensor]) -> dict:
    """The decoder's keys, in diffusers' config order (the decoder reverses its lists)."""
    n_up = count_index(t, r"^decoder\.up_blocks\.(\d+)\.")
    widths, factors, scaling, layers = [], [], [], [count_index(t, r"^decoder\.mid_block\.resnets\.(\d+)\.")]
    noise = ["decoder.mid_block.resnets.0.per_channel_scale1" in t]
    for i in range(n_up):
        w = _width(t, f"decoder.up_blocks.{i}.resnets.0.conv1.conv.weight")
        up = f"decoder.up_blocks.{i}.upsamplers.0.conv.conv.weight"
        f = _width(t, up, 1) // w if up in t else 1
        widths.append(w * f)
        factors.append(f)
        scaling.append(up in t)
        layers.append(count_index(t, rf"^decoder\.up_blocks\.{i}\.resnets\.(\d+)\."))
        noise.append(f"decoder.up_blocks.{i}.resnets.0.per_channel_scale1" in t)
    return {"out_channels": _width(t, "decoder.conv_out.conv.weight") // _patch_out(t),
            "decoder_block_out_channels": widths[::-1], "upsample_factor": factors[::-1],
            "decoder_spatio_temporal_scaling": scaling[::-1], "decoder_layers_per_block": layers[::-1],
            "decoder_inject_noise": noise[::-1], "timestep_conditioning": "decoder.time_embedder.linear_1.weight" in t
            or any(k.startswith("decoder.time_embedder.") for k in t)}


def _patch_out(t: dict[str, torch.Tensor]) -> int:
    return int(t["encoder.conv_in.conv.weight"].shape[1]) // 3


# -- LTX-Video 0.9.x or LTX-2 ------------------------------------------------------------------------

_NEW_KIND = re.compile(r"(?:^|\.)encoder\.down_blocks\.\d+\.(?:downsamplers\.0\.)?conv\.conv\.weight$")
_TIMESTEP = re.compile(r"(?:^|\.)decoder\.(?:last_)?(?:time_embedder|timestep_scale_multiplier)")
_NAME_LTX2 = re.compile(r"ltx[-_ .]?v?2")
_NAME_LTXV = re.compile(r"ltx[-_ .]?v(?:ideo)?|0\.9\.\d")


def is_ltx2(keys, name: str = "") -> tuple[bool, str]:
    """Whether LTX-layout weights (original or diffusers keys) are LTX-2's, and why. Their keys and shapes are
    those of LTX-Video 0.9.5 with the same widths; a name saying which decides, else: 0.9.0/0.9.1-style
    encoder blocks are LTX-Video's, and of the newer blocks a decoder without timestep conditioning is
    LTX-2's (every published 0.9.5/0.9.7 decoder has it, per diffusers' conversion configs)."""
    low = name.lower()
    if _NAME_LTX2.search(low):
        return True, "the name says LTX-2"
    if _NAME_LTXV.search(low):
        return False, "the name says LTX-Video"
    keys = list(keys)
    if not any(_NEW_KIND.search(k) for k in keys):
        return False, "0.9.0/0.9.1-style encoder blocks (LTX-Video)"
    if any(_TIMESTEP.search(k) for k in keys):
        return False, "a timestep-conditioned decoder with 0.9.5-style blocks (LTX-Video 0.9.5/0.9.7)"
    return True, "0.9.5-style blocks without timestep conditioning (LTX-2's layout; LTX-Video 0.9.5's has it)"


def looks_ltx(tensors: dict[str, torch.Tensor]) -> bool:
    """An LTX-Video / LTX-2 VAE, whole or broken: its per-channel statistics beside a causal 3D conv stem, or its
    decoder's first block (ComfyUI's marker, original keys; or diffusers')."""
    from vaestudio.core.registry import find_prefix

    if any(find_prefix(tensors, k) is not None for k in (ORIGINAL_MARK, DIFFUSERS_MARK)):
        return True
    stats = any(find_prefix(tensors, k) is not None for k in ("latents_mean", "per_channel_statistics.mean-of-means"))
    return stats and any(find_prefix(tensors, f"{h}.conv_in.conv.weight") is not None for h in ("encoder", "decoder"))


ORIGINAL_MARK = "decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"  # ComfyUI's marker (comfy/sd.py)
DIFFUSERS_MARK = "decoder.mid_block.resnets.0.conv1.conv.weight"


#: how an LTX VAE's clips run (the tiles are diffusers' defaults; the model's own tile_sample_* decide)
TILED = ("whole up to 17 frames or about 2 million frames x pixels (33 frames at 256x256), longer ones (or ones "
         "tiled spatially) in diffusers' temporal tiles (17 frames every 8, blended: the class's frame-wise encode "
         "and decode), so memory is bounded by one tile")


class LtxClipVae(ClipVae):
    """An LTX-Video / LTX-2 VAE: the VAE's own statistics; decoded as the pipelines decode with their defaults;
    a clip longer than one of diffusers' temporal tiles (17 frames every 8 by default) in those tiles, as the
    class's frame-wise encode and decode (``use_framewise_decoding``, which both read) make them; large frames
    tiled spatially."""

    clip_tiles = True  # diffusers tiles LTX frames spatially too (512 px every 448); here as images are
    whole_clip_voxels = 1 << 21  # 33 frames at 256x256 run whole (docs/benchmarks.md: tiles were 3x slower at 49)

    def stats(self):
        return self.model.latents_mean, self.model.latents_std, float(self.model.config.scaling_factor)

    def temporal(self) -> TemporalTiles:
        # a clip one tile holds runs whole (diffusers tiles it, computing the same frames again); a later
        # decoded tile drops its last frame, as _temporal_tiled_decode does
        return TemporalTiles.of(self.model, one_tile=True, drop_last=True)

    def _enc(self, x: torch.Tensor) -> torch.Tensor:
        h = self.model.encoder(x)
        return h[:, : h.shape[1] // 2]  # the posterior's mean

    def _decoder(self):
        m = self.model
        cuda = [] if self.device.type != "cuda" else [self.device]

        def dec(z: torch.Tensor) -> torch.Tensor:
            temb = None
            if m.config.timestep_conditioning:  # the pipelines' default decode_timestep, no decode noise
                temb = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
            return m.decoder(z, temb)

        if not any(m.config.decoder_inject_noise):
            return dec
        # a noise-injecting decoder (0.9.1) draws from torch's global generator: seeded 0 once per clip and carried
        # from tile to tile (as diffusers' decode after torch.manual_seed(0)), the caller's generator kept
        rng: list = []

        def noisy(z: torch.Tensor) -> torch.Tensor:
            with torch.random.fork_rng(devices=cuda):
                if rng:
                    torch.set_rng_state(rng[0])
                    if cuda:
                        torch.cuda.set_rng_state(rng[1], cuda[0])
                else:
                    torch.manual_seed(0)
                out = dec(z)
                rng[:] = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(cuda[0])] if cuda else [])
            return out

        return noisy
