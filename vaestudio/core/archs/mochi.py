"""Mochi 1's VAE: diffusers' ``AutoencoderKLMochi`` (12 latent channels at 1/8, 1/6 in time).

A causal 3D VAE whose encoder takes the frames with Fourier features (15 channels) and has attention in
its down blocks; its decoder drops the first 5 of the frames it makes, so T' latent frames give
1 + 6 (T' - 1) frames. The model space is what ``MochiPipeline`` decodes from: per channel
``(z - latents_mean) * scaling_factor / latents_std``, the statistics from the config (the class
defaults are the published ones, as ComfyUI's ``latent_formats.Mochi``).

Sources: a diffusers folder (config ``AutoencoderKLMochi``, or a pipeline folder with ``vae/``), a
Hugging Face id (``genmo/mochi-1-preview``), and a single file with diffusers keys (the folder's weights
on their own). Genmo's original split encoder/decoder files (ComfyUI's ``mochi_vae``:
``blocks.2.blocks.3.stack.5.weight``) are not read yet: diffusers has no loader-side converter for them
(only scripts/convert_mochi_to_diffusers.py); core/unsupported.py names them in one sentence.
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
_BLOCKS = re.compile(r"(?:^|\.)(?:encoder|decoder)\.block_(?:in|out)\.resnets\.\d+\.")


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
        ("single file", "the vae/ folder's weights on their own (diffusers keys, encoder.block_in.resnets.0.norm1."
                        "norm_layer), .safetensors or .pth; not genmo's original split encoder/decoder files yet"),
        ("diffusers folder", "config.json (AutoencoderKLMochi) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. genmo/mochi-1-preview (vae/), through the standard cache"),
    )
    diffusers_class = "AutoencoderKLMochi"
    vae_class = MochiVae
    layouts = (Layout("diffusers", _ANCHOR),)
    short = "Mochi VAE"
    shipped = "mochi"
    guessed = ("act_fn",)
    space_notes = ("model space: per channel (z - latents_mean) * scaling_factor / latents_std from the config, as "
                   "MochiPipeline decodes",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        # any of either half's block_in / block_out resnets (only Mochi's diffusers keys have them): a broken file
        # is claimed too, and refused in one sentence as a Mochi VAE
        return any(_BLOCKS.search(k) for k in wf.tensors)

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
        return make_video(prepared, td, f"the decoder drops its first {td - 1} frames, as AutoencoderKLMochi")



ARCHITECTURE = MochiArchitecture()
