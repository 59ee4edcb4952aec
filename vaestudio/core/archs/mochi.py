"""Mochi 1's VAE: diffusers' ``AutoencoderKLMochi`` (12 latent channels at 1/8, 1/6 in time).

A causal 3D VAE whose encoder takes the frames with Fourier features (15 channels) and has attention in
its down blocks; its decoder drops the first 5 of the frames it makes, so T' latent frames give
1 + 6 (T' - 1) frames. A clip runs whole (diffusers' encoder has no temporal tiles, its attention spanning
all frames; its opt-in frame-wise decoding, with other padding, is not used), so memory grows with the clip's
length; large frames tile spatially as images do (diffusers tiles Mochi spatially too). The model space is what ``MochiPipeline`` decodes from: per channel
``(z - latents_mean) * scaling_factor / latents_std``, the statistics from the config (the class
defaults are the published ones, as ComfyUI's ``latent_formats.Mochi``).

Sources: a diffusers folder (config ``AutoencoderKLMochi``, or a pipeline folder with ``vae/``), a
Hugging Face id (``genmo/mochi-1-preview``), a single file with diffusers keys (the folder's weights on
their own), and genmo's original keys with both halves in one file (``encoder.layers.N`` /
``decoder.blocks.N``; ComfyUI recognises Mochi by ``decoder.blocks.2.blocks.3.stack.5.weight``), mapped by
``original_to_diffusers`` as diffusers' scripts/convert_mochi_to_diffusers.py maps genmo's two files (the
loaders have no converter; the fused ``qkv`` split in three). That ComfyUI's ``mochi_vae`` file holds both
halves under these prefixes is ComfyUI's marker list, not checked against a file here; genmo's halves as
separate files without prefixes are named in one sentence (core/unsupported.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.archs._diffusers_video import ClipVae, make_video
from vaestudio.core.registry import PreparedVae
from vaestudio.core.weights import WeightFile

_ANCHOR = "encoder.block_in.resnets.0.norm1.norm_layer.weight"
_ORIGINAL = "decoder.output_proj.weight"  # genmo's layout, encoder and decoder in one file (encoder.layers.N)
_ORIGINAL_BLOCKS = re.compile(r"(?:^|\.)(?:decoder\.blocks\.\d+\.blocks\.\d+|encoder\.layers\.\d+\.layers\.\d+)\.")
_BLOCKS = re.compile(r"(?:^|\.)(?:encoder|decoder)\.block_(?:in|out)\.resnets\.\d+\.")


_STACK = {"0": "norm1.norm_layer", "2": "conv1.conv", "3": "norm2.norm_layer", "5": "conv2.conv"}


def _block(prefix: str, i: int, rest: str, v: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    """One original resnet (``stack.N``) or attention (``attn_block``) of a block, as diffusers' keys."""
    if m := re.match(r"^stack\.(\d)\.(.*)$", rest):
        out[f"{prefix}.resnets.{i}.{_STACK[m.group(1)]}.{m.group(2)}"] = v
    elif rest == "attn_block.attn.qkv.weight":  # one fused projection; diffusers has three
        for name, part in zip(("to_q", "to_k", "to_v"), v.chunk(3, dim=0), strict=True):
            out[f"{prefix}.attentions.{i}.{name}.weight"] = part.contiguous()
    elif rest.startswith("attn_block.attn.out."):
        out[f"{prefix}.attentions.{i}.to_out.0.{rest[len('attn_block.attn.out.'):]}"] = v
    elif rest.startswith("attn_block.norm."):
        out[f"{prefix}.norms.{i}.norm_layer.{rest[len('attn_block.norm.'):]}"] = v
    else:
        out[f"{prefix}.{i}.{rest}"] = v  # unknown: left for the strict load to name


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """genmo's original Mochi VAE keys (``encoder.layers.N`` / ``decoder.blocks.N``, in one file) to diffusers',
    as diffusers' scripts/convert_mochi_to_diffusers.py maps them (read from the file: any layer counts)."""
    enc = sorted({int(m.group(1)) for k in t if (m := re.match(r"^encoder\.layers\.(\d+)\.", k))})
    down = [i for i in enc if any(k.startswith(f"encoder.layers.{i}.layers.") for k in t)]
    dec = sorted({int(m.group(1)) for k in t if (m := re.match(r"^decoder\.blocks\.(\d+)\.", k))})
    ups = [b for b in dec if any(k.startswith(f"decoder.blocks.{b}.blocks.") for k in t)]
    if not down or not ups:
        raise KeyError("encoder.layers.N.layers / decoder.blocks.N.blocks")
    out: dict[str, torch.Tensor] = {}
    for k, v in t.items():
        if m := re.match(r"^encoder\.layers\.(\d+)\.(.*)$", k):
            i, rest = int(m.group(1)), m.group(2)
            if i == 0:
                out[f"encoder.proj_in.{rest}"] = v
            elif i in down:
                j, sub = re.match(r"^layers\.(\d+)\.(.*)$", rest).groups()
                block = f"encoder.down_blocks.{down.index(i)}"
                if j == "0":
                    out[f"{block}.conv_in.conv.{sub}"] = v
                else:
                    _block(block, int(j) - 1, sub, v, out)
            else:
                _block("encoder.block_in" if i < down[0] else "encoder.block_out", i - 1 if i < down[0] else i - down[-1] - 1,
                       rest, v, out)
        elif m := re.match(r"^decoder\.blocks\.(\d+)\.(.*)$", k):
            b, rest = int(m.group(1)), m.group(2)
            if b in ups:
                up = f"decoder.up_blocks.{ups.index(b)}"
                if rest.startswith("proj."):
                    out[f"{up}.{rest}"] = v
                else:
                    j, sub = re.match(r"^blocks\.(\d+)\.(.*)$", rest).groups()
                    _block(up, int(j), sub, v, out)
            else:
                j, sub = re.match(r"^(\d+)\.(.*)$", rest).groups()
                if b < ups[0] and j == "0":
                    out[f"decoder.conv_in.{sub}"] = v
                else:
                    _block("decoder.block_in" if b < ups[0] else "decoder.block_out", int(j) - 1 if b < ups[0] else int(j),
                           sub, v, out)
        else:
            for old, new in (("encoder.output_norm.", "encoder.norm_out.norm_layer."), ("encoder.output_proj.", "encoder.proj_out."),
                             ("decoder.output_proj.", "decoder.proj_out.")):
                if k.startswith(old):
                    k = new + k[len(old):]
            out[k] = v
    return out


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLMochi config of diffusers-layout tensors (KeyError: blocks are missing)."""
    n = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    kernels = [t[f"encoder.down_blocks.{i}.conv_in.conv.weight"].shape for i in range(n)]
    widths = [int(t["encoder.proj_in.weight"].shape[0])] + [int(k[0]) for k in kernels]
    parts = ["block_in"] + [f"down_blocks.{i}" for i in range(n)] + ["block_out"]
    n_up = count_index(t, r"^decoder\.up_blocks\.(\d+)\.")
    dec = [int(t[f"decoder.up_blocks.{i}.resnets.0.conv1.conv.weight"].shape[0]) for i in range(n_up)]
    out = t["decoder.proj_out.weight"]
    cfg = {
        "in_channels": int(t["encoder.proj_in.weight"].shape[1]),
        "out_channels": int(out.shape[0]),
        "encoder_block_out_channels": widths,
        "decoder_block_out_channels": [int(out.shape[1])] + dec[::-1],
        "latent_channels": int(t["decoder.conv_in.weight"].shape[1]),
        "layers_per_block": [count_index(t, rf"^encoder\.{p}\.resnets\.(\d+)\.") for p in parts],
        "temporal_expansions": [int(k[2]) for k in kernels],
        "spatial_expansions": [int(k[3]) for k in kernels],
        "add_attention_block": [f"encoder.{p}.attentions.0.to_q.weight" in t for p in parts],
    }
    if int(t["encoder.proj_out.weight"].shape[0]) != 2 * cfg["latent_channels"] or len(dec) != n:
        raise ValueError("the encoder and decoder do not fit together")
    return cfg


class MochiVae(ClipVae):
    architecture = "mochi"
    cancel_blocks = ("MochiResnetBlock3D",)
    clip_tiles = True  # diffusers tiles Mochi frames spatially (256 px every 192); here as images are

    def stats(self):
        c = self.model.config
        return torch.tensor(list(c.latents_mean)), torch.tensor(list(c.latents_std)), float(c.scaling_factor)


class MochiArchitecture(DiffusersArchitecture):
    name = "mochi"
    label = "Mochi 1 VAE (AutoencoderKLMochi)"
    order = 52
    config_classes = ("AutoencoderKLMochi",)
    families = ("mochi",)
    sources = (
        ("single file", "genmo's original keys, encoder.layers.* and decoder.blocks.* in one file (ComfyUI's marker "
                        "decoder.blocks.2.blocks.3.stack.5.weight), or the vae/ folder's weights on their own (diffusers "
                        "keys); .safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLMochi) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. genmo/mochi-1-preview (vae/), through the standard cache"),
    )
    diffusers_class = "AutoencoderKLMochi"
    vae_class = MochiVae
    layouts = (Layout("diffusers", _ANCHOR), Layout("original", _ORIGINAL, (), original_to_diffusers))
    short = "Mochi VAE"
    shipped = "mochi"
    guessed = ("act_fn",)
    space_notes = ("model space: per channel (z - latents_mean) * scaling_factor / latents_std from the config, as "
                   "MochiPipeline decodes",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        # any of either half's block_in / block_out resnets (only Mochi's diffusers keys have them): a broken file
        # is claimed too, and refused in one sentence as a Mochi VAE
        return any(_BLOCKS.search(k) or _ORIGINAL_BLOCKS.search(k) for k in wf.tensors)

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        super().check_config({"in_channels": 3, "out_channels": cfg["out_channels"]}, tensors, label)

    def downscale_of(self, cfg: dict) -> int:
        f = 1
        for s in cfg["spatial_expansions"]:
            f *= int(s)
        return f

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        td = 1
        for s in prepared.config["temporal_expansions"]:
            td *= int(s)
        return make_video(prepared, td, f"the decoder drops its first {td - 1} frames, as AutoencoderKLMochi",
                          "clips run whole, as one chunk (diffusers' Mochi encoder has no temporal tiles: its attention "
                          "spans all frames), so memory grows with the clip's length; large frames tile spatially")



ARCHITECTURE = MochiArchitecture()
