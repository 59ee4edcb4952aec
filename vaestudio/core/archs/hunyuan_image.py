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

import math
import re
from pathlib import Path

import torch

from vaestudio.core.archs import _common as common
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES
from vaestudio.core.registry import Architecture, PreparedVae, find_prefix
from vaestudio.core.weights import WeightFile

_ANCHOR = "decoder.conv_in.weight"
# diffusers' HunyuanImage keys: a flat list of down blocks whose resnets have GroupNorm norm1 (not
# Wan's RMS norm1.gamma, not SD's down_blocks.N.resnets.M) and attention with to_q as a 1x1 conv
_MARKS = ("encoder.down_blocks.0.norm1.weight", "encoder.mid_block.attentions.0.to_q.weight")


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLHunyuanImage config of diffusers-layout tensors."""
    try:
        return _infer(t)
    except (KeyError, IndexError, ValueError, ZeroDivisionError):
        raise VaeLoadError("the HunyuanImage VAE weights are incomplete (encoder or decoder blocks are missing)",
                           label) from None


def _infer(t: dict[str, torch.Tensor]) -> dict:
    n = 1 + max(int(m.group(1)) for k in t if (m := re.match(r"^encoder\.down_blocks\.(\d+)\.", k)))
    resnets, downs = [], []
    for i in range(n):
        if f"encoder.down_blocks.{i}.conv1.weight" in t:
            resnets.append(i)
        elif f"encoder.down_blocks.{i}.conv.weight" in t:
            downs.append(i)
        else:
            raise KeyError(i)
    levels = len(downs) + 1
    layers = len(resnets) // levels
    if layers * levels != len(resnets):
        raise ValueError("uneven blocks")
    block_out = [int(t[f"encoder.down_blocks.{resnets[lvl * layers]}.conv1.weight"].shape[0]) for lvl in range(levels)]
    latent = int(t["decoder.conv_in.weight"].shape[1])
    if int(t["encoder.conv_out.weight"].shape[0]) != 2 * latent:
        raise ValueError("not a KL autoencoder")
    return {
        "in_channels": int(t["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(t["decoder.conv_out.weight"].shape[0]),
        "latent_channels": latent,
        "block_out_channels": block_out,
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


class HunyuanImageArchitecture(Architecture):
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

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        prefix = find_prefix(wf.tensors, _ANCHOR)
        return prefix is not None and all(prefix + m in wf.tensors for m in _MARKS) and \
            wf.tensors[prefix + _MARKS[1]].ndim == 4

    def prepare_weights(self, wf: WeightFile, label: str, *, fmt: str, name: str, config: dict | None) -> PreparedVae:
        found = common.extract(wf, _ANCHOR, ("encoder", "decoder"))
        if found is None:
            raise VaeLoadError("no HunyuanImage VAE decoder found", label)
        tensors, ignored = found
        if not any(k.startswith("encoder.") for k in tensors):
            raise VaeLoadError("holds only a VAE decoder; the encoder is missing", label)
        common.checked(tensors, label)
        inferred = infer_config(tensors, label)
        if inferred["in_channels"] != 3 or inferred["out_channels"] != 3:
            raise VaeLoadError(f"an image VAE takes and gives 3 colour channels, this one takes "
                               f"{inferred['in_channels']} and gives {inferred['out_channels']}", label)
        merged = common.shipped_config("hunyuan-image-2.1")
        if config is not None:
            for key in ("latent_channels", "block_out_channels", "layers_per_block"):
                if key in config and config[key] != inferred[key]:
                    raise VaeLoadError(f"config.json says {key}={config[key]} but the weights have {inferred[key]}",
                                       label)
            merged.update({k: v for k, v in config.items() if not k.startswith("_")})
        merged.update(inferred)
        fam = FAMILIES["hunyuan-image"]
        channels = inferred["latent_channels"]
        if channels != fam.latent_channels:
            raise VaeLoadError(f"a HunyuanImage 2.1 VAE has {fam.latent_channels} latent channels but this one has "
                               f"{channels}", label)
        scaling = float((config or {}).get("scaling_factor") or fam.scaling_factor)
        if not math.isfinite(scaling) or scaling <= 0:
            raise VaeLoadError(f"config.json's scaling_factor {scaling} is not a positive number", label)
        reason = "config class AutoencoderKLHunyuanImage" if config is not None else \
            "the only family of this architecture with 64 latent channels"
        info = common.new_info(
            self.name, label, wf, tensors, fmt=fmt, layout="diffusers", family=fam, guessed=False, reason=reason,
            latent_channels=channels, downscale=inferred["spatial_compression_ratio"], ignored=ignored,
            scaling=scaling, notes=["model space: z * scaling_factor, as HunyuanImagePipeline does"],
        )
        return PreparedVae(self.name, tensors, merged, info, fam)

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> HunyuanImageVae:
        cfg = dict(prepared.config, scaling_factor=prepared.info.scaling_factor)
        model = common.build_model("AutoencoderKLHunyuanImage", cfg, prepared.tensors, prepared.info.source)
        return HunyuanImageVae(model, prepared.info, prepared.family, device=device, dtype=dtype)

    def family_choices(self, info):
        return [FAMILIES[n] for n in self.families
                if FAMILIES[n].latent_channels == info.latent_channels and FAMILIES[n].downscale == info.downscale]


ARCHITECTURE = HunyuanImageArchitecture()
