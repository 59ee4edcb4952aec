"""HunyuanImage 2.1's VAE: diffusers' ``AutoencoderKLHunyuanImage`` (64 latent channels at 1/32).

A 2D KL autoencoder whose down/upsampling moves pixels into channels (with channel-averaging and
repeating shortcuts), so a 32x downscale keeps detail. The model space is what
``HunyuanImagePipeline`` gives its transformer: ``z * scaling_factor`` (0.75289), from the config.

Sources: a diffusers folder (config ``AutoencoderKLHunyuanImage``, or a pipeline folder with
``vae/``), a Hugging Face id (``hunyuanvideo-community/HunyuanImage-2.1-Diffusers``), and a single
file with diffusers keys (its ``diffusion_pytorch_model.safetensors`` on its own); the architecture
is read from shapes, the rest from the shipped config. Tencent's original checkpoint layout is not
read (diffusers has no converter for it).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile

_ANCHOR = "decoder.conv_in.weight"
# diffusers' HunyuanImage keys: a flat list of down blocks whose resnets have GroupNorm norm1 (not
# Wan's RMS norm1.gamma, not SD's down_blocks.N.resnets.M) and attention with to_q as a 1x1 conv
_MARKS = ("encoder.down_blocks.0.norm1.weight", "encoder.mid_block.attentions.0.to_q.weight")


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLHunyuanImage config of diffusers-layout tensors (KeyError: blocks are missing)."""
    n = 1 + max(int(m.group(1)) for k in t if (m := re.match(r"^encoder\.down_blocks\.(\d+)\.", k)))
    resnets = [i for i in range(n) if f"encoder.down_blocks.{i}.conv1.weight" in t]
    downs = [i for i in range(n) if f"encoder.down_blocks.{i}.conv.weight" in t]
    if len(resnets) + len(downs) != n:
        raise KeyError("encoder.down_blocks")
    levels = len(downs) + 1
    layers = len(resnets) // levels
    if layers * levels != len(resnets):
        raise ValueError("uneven blocks")
    latent = int(t["decoder.conv_in.weight"].shape[1])
    if int(t["encoder.conv_out.weight"].shape[0]) != 2 * latent:
        raise ValueError("not a KL autoencoder")
    return {
        "in_channels": int(t["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(t["decoder.conv_out.weight"].shape[0]),
        "latent_channels": latent,
        "block_out_channels": [int(t[f"encoder.down_blocks.{resnets[lvl * layers]}.conv1.weight"].shape[0])
                               for lvl in range(levels)],
        "layers_per_block": layers,
        "spatial_compression_ratio": 2 ** len(downs),
    }


class HunyuanImageVae(TorchAutoencoder):
    architecture = "hunyuan-image"
    cancel_blocks = ("HunyuanImageResnetBlock", "HunyuanImageAttentionBlock")
    # its pixel-(un)shuffle reshapes copy channels-last tensors back: contiguous measured ~10% faster on CPU
    channels_last = False

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        self.tile_overlap = 128  # 4 latent pixels at 32x

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x)  # mean and log-variance, as AutoencoderKLHunyuanImage.encode's posterior

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(z)


class HunyuanImageArchitecture(DiffusersArchitecture):
    name = "hunyuan-image"
    label = "HunyuanImage 2.1 VAE (AutoencoderKLHunyuanImage)"
    order = 75
    config_classes = ("AutoencoderKLHunyuanImage",)
    families = ("hunyuan-image",)
    sources = (
        ("single file", "diffusers keys (the vae/ folder's diffusion_pytorch_model.safetensors on its own), "
                        ".safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLHunyuanImage) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. hunyuanvideo-community/HunyuanImage-2.1-Diffusers, through the standard cache"),
    )
    diffusers_class = "AutoencoderKLHunyuanImage"
    vae_class = HunyuanImageVae
    layouts = (Layout("diffusers", _ANCHOR),)
    short = "HunyuanImage 2.1 VAE"
    shipped = "hunyuan-image-2.1"
    model_scaling = ("scaling_factor",)
    space_notes = ("model space: z * scaling_factor, as HunyuanImagePipeline does",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        prefix = find_prefix(wf.tensors, _ANCHOR)
        return prefix is not None and all(prefix + m in wf.tensors for m in _MARKS) and \
            wf.tensors[prefix + _MARKS[1]].ndim == 4

    def downscale_of(self, cfg: dict) -> int:
        return int(cfg["spatial_compression_ratio"])


ARCHITECTURE = HunyuanImageArchitecture()
