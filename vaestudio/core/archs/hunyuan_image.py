"""HunyuanImage 2.1's VAE: diffusers' ``AutoencoderKLHunyuanImage`` (64 latent channels at 1/32).

A 2D KL autoencoder whose down/upsampling moves pixels into channels (with channel-averaging and
repeating shortcuts), so a 32x downscale keeps detail. The model space is what
``HunyuanImagePipeline`` gives its transformer: ``z * scaling_factor`` (0.75289), from the config.

Sources: a diffusers folder (config ``AutoencoderKLHunyuanImage``, or a pipeline folder with
``vae/``), a Hugging Face id (``hunyuanvideo-community/HunyuanImage-2.1-Diffusers``), a single file
with diffusers keys (its ``diffusion_pytorch_model.safetensors`` on its own), and the original /
ComfyUI single file (``hunyuan_image_2.1_vae_fp16.safetensors``: LDM-style names,
``encoder.down.N.block.M``, ``mid.attn_1.q``, ``downsample.conv``; ComfyUI recognises it by a 2D
``decoder.conv_in.weight`` with 64 input channels, as here). diffusers has no converter for that file,
so ``original_to_diffusers`` maps it (``diffusers_to_original`` is its inverse); the architecture is
read from shapes, the rest from the shipped config.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile

_ANCHOR = "decoder.conv_in.weight"
# diffusers' HunyuanImage keys: a flat list of down blocks whose resnets have GroupNorm norm1 (not
# Wan's RMS norm1.gamma, not SD's down_blocks.N.resnets.M) and attention with to_q as a 1x1 conv
_MARKS = ("encoder.down_blocks.0.norm1.weight", "encoder.mid_block.attentions.0.to_q.weight")
# the original layout (ComfyUI's file): LDM names; 64 latent channels tell it from an SD/FLUX VAE
_ORIGINAL = ("encoder.down.0.block.0.conv1.weight", "encoder.mid.attn_1.q.weight")
_LATENT = 64
_RES = {"nin_shortcut.": "conv_shortcut."}
_MID = {"block_1.": "resnets.0.", "block_2.": "resnets.1.", "attn_1.q.": "attentions.0.to_q.",
        "attn_1.k.": "attentions.0.to_k.", "attn_1.v.": "attentions.0.to_v.", "attn_1.proj_out.": "attentions.0.proj.",
        "attn_1.norm.": "attentions.0.norm."}


def _flat_index(t: dict[str, torch.Tensor], half: str) -> dict[tuple[int, str], int]:
    """The flat diffusers index of each (stage, 'block.M' / 'sample') of an original half: stage by stage,
    its resnets then its resampler, as diffusers' HunyuanImage encoder and decoder list them."""
    kind = "down" if half == "encoder" else "up"
    found: dict[int, set[str]] = {}
    for k in t:
        if m := re.match(rf"^{half}\.{kind}\.(\d+)\.(block\.\d+|{kind}sample)\.", k):
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    index, n = {}, 0
    for stage in sorted(found):
        blocks = sorted((b for b in found[stage] if b.startswith("block.")), key=lambda b: int(b.split(".")[1]))
        for part in blocks + [b for b in found[stage] if not b.startswith("block.")]:
            index[(stage, part)] = n
            n += 1
    return index


def _rename(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original (ComfyUI) HunyuanImage 2.1 VAE keys to diffusers' AutoencoderKLHunyuanImage keys."""
    flat = {half: _flat_index(t, half) for half in ("encoder", "decoder")}
    out: dict[str, torch.Tensor] = {}
    for k, v in t.items():
        new = k
        if m := re.match(r"^(encoder|decoder)\.(?:down|up)\.(\d+)\.(block\.\d+|downsample|upsample)\.(.*)$", k):
            half, stage, part, rest = m.groups()
            blocks = "down_blocks" if half == "encoder" else "up_blocks"
            new = f"{half}.{blocks}.{flat[half][(int(stage), part)]}.{_rename(rest, _RES)}"
        elif m := re.match(r"^(encoder|decoder)\.mid\.(.*)$", k):
            new = f"{m.group(1)}.mid_block.{_rename(_rename(m.group(2), _MID), _RES)}"
        out[new] = v
    return out


def diffusers_to_original(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``original_to_diffusers`` (for export and tests)."""
    out: dict[str, torch.Tensor] = {}
    for half, kind, blocks in (("encoder", "down", "down_blocks"), ("decoder", "up", "up_blocks")):
        n = count_index(t, rf"^{half}\.{blocks}\.(\d+)\.")
        stage, block = 0, 0
        for i in range(n):
            entry = f"{half}.{blocks}.{i}."
            if f"{entry}conv1.weight" in t:
                part, block = f"block.{block}", block + 1
            else:
                part = f"{kind}sample"
            for k, v in t.items():
                if k.startswith(entry):
                    out[f"{half}.{kind}.{stage}.{part}.{_rename(k[len(entry):], {'conv_shortcut.': 'nin_shortcut.'})}"] = v
            if part == f"{kind}sample":
                stage, block = stage + 1, 0
    back = {new: old for old, new in _MID.items()}
    for k, v in t.items():
        if m := re.match(r"^(encoder|decoder)\.mid_block\.(.*)$", k):
            out[f"{m.group(1)}.mid.{_rename(m.group(2), back)}"] = v
        elif not re.match(r"^(encoder|decoder)\.(down|up)_blocks\.", k):
            out[k] = v
    return out


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
        ("single file", "the original / ComfyUI hunyuan_image_2.1_vae_fp16.safetensors (encoder.down.N.block.M keys, "
                        "64-channel decoder.conv_in), or diffusers keys (the vae/ folder's weights on its own), "
                        ".safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLHunyuanImage) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. hunyuanvideo-community/HunyuanImage-2.1-Diffusers, through the standard cache"),
    )
    diffusers_class = "AutoencoderKLHunyuanImage"
    vae_class = HunyuanImageVae
    layouts = (Layout("diffusers", _ANCHOR, ("encoder.down_blocks.",)),
               Layout("original", _ANCHOR, ("encoder.down.",), original_to_diffusers))
    short = "HunyuanImage 2.1 VAE"
    shipped = "hunyuan-image-2.1"
    model_scaling = ("scaling_factor",)
    space_notes = ("model space: z * scaling_factor, as HunyuanImagePipeline does",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        prefix = find_prefix(wf.tensors, _ANCHOR)
        if prefix is None:
            return False
        if all(prefix + m in wf.tensors for m in _MARKS):
            return wf.tensors[prefix + _MARKS[1]].ndim == 4
        conv_in = wf.tensors[prefix + _ANCHOR]  # ComfyUI's test: a 2D decoder input with 64 latent channels
        return conv_in.ndim == 4 and conv_in.shape[1] == _LATENT and all(prefix + m in wf.tensors for m in _ORIGINAL)

    def downscale_of(self, cfg: dict) -> int:
        return int(cfg["spatial_compression_ratio"])


ARCHITECTURE = HunyuanImageArchitecture()
