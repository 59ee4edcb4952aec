"""Key layouts of Stable Diffusion VAE weights: find the VAE in a file, convert, infer the config.

Two layouts exist in the wild: the original LDM one (``encoder.down.0.block.0...``, used by
community files and full SD checkpoints) and diffusers' (``encoder.down_blocks.0.resnets.0...``).
LDM weights are converted with diffusers' own ``convert_ldm_vae_checkpoint`` so that the result is
exactly what ``AutoencoderKL.from_single_file`` gives. The architecture is read from tensor shapes,
so nothing is fetched from the hub.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from vaestudio.core.errors import VaeLoadError

KNOWN_PREFIXES = ("first_stage_model.", "vae.", "")
_ANCHOR = "encoder.conv_in.weight"


@dataclass
class ExtractedVae:
    """VAE tensors found in a state dict, stripped of their prefix."""

    tensors: dict[str, torch.Tensor]
    layout: str  # "ldm" or "diffusers"
    prefix: str
    ignored: list[str] = field(default_factory=list)

    def ignored_summary(self, limit: int = 6) -> list[str]:
        return summarize_keys(self.ignored, limit)


def summarize_keys(keys: list[str], limit: int = 6) -> list[str]:
    """Group keys by their first two dotted parts: ['loss.* (12 keys)', ...]."""
    groups = Counter(".".join(k.split(".")[:2]) if k.count(".") >= 2 else k.split(".")[0] for k in keys)
    out = [f"{g}.* ({n} key{'s' if n != 1 else ''})" for g, n in groups.most_common(limit)]
    if len(groups) > limit:
        out.append(f"... and {len(groups) - limit} more groups")
    return out


def extract_vae(sd: dict[str, torch.Tensor], label: str = "") -> ExtractedVae:
    """Find the VAE inside a state dict (bare, prefixed, or part of a full SD checkpoint).

    Raises
    ------
    VaeLoadError
        With a sentence that says what the file is instead (LoRA, UNet, text encoder...).
    """
    anchors = [k[: -len(_ANCHOR)] for k in sd if k.endswith(_ANCHOR)]
    if not anchors:
        raise VaeLoadError(_not_a_vae_reason(sd), label or None)
    prefix = next((p for p in KNOWN_PREFIXES if p in anchors), min(anchors, key=len))
    tensors = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    tensors = {k: v for k, v in tensors.items() if k.split(".")[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv")}
    ignored = sorted(k for k in sd if not (k.startswith(prefix) and k[len(prefix):] in tensors))
    keys = tensors.keys()
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        layout = "diffusers"
    elif any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
        layout = "ldm"
    else:
        raise VaeLoadError("has an encoder input layer but no recognisable VAE blocks", label or None)
    if not any(k.startswith("decoder.") for k in keys):
        raise VaeLoadError("holds only a VAE encoder; the decoder is missing", label or None)
    return ExtractedVae(tensors, layout, prefix, ignored)


def _not_a_vae_reason(sd: dict[str, torch.Tensor]) -> str:
    keys = list(sd)
    low = [k.lower() for k in keys]
    n = len(keys)
    if any("lora" in k for k in low) or any(k.endswith((".alpha", "lokr_w1", "hada_w1_a")) for k in low):
        return f"is a LoRA ({n} tensors), not a VAE"
    if any(k.startswith("decoder.") for k in keys) and not any(k.startswith("encoder.") for k in keys):
        return "holds only a decoder (e.g. a TAESD or decoder-only file); a full VAE needs the encoder too"
    if any(
        s in k
        for k in keys
        for s in ("model.diffusion_model.", "input_blocks.", "time_embedding.", "time_embed.", "down_blocks.0.attentions")
    ):
        return "is a UNet / diffusion model without a VAE"
    if any(s in k for k in keys for s in ("text_model.", "cond_stage_model.", "conditioner.", "transformer.resblocks", "text_projection")):
        return "is a text encoder, not a VAE"
    example = keys[0] if keys else "none"
    return f"no VAE weights found ({n} tensors, e.g. '{example}')"


def ldm_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert LDM-layout VAE tensors to diffusers layout with diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    n_blocks = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    config = {"down_block_types": ["DownEncoderBlock2D"] * n_blocks, "up_block_types": ["UpDecoderBlock2D"] * n_blocks}
    return convert_ldm_vae_checkpoint(dict(tensors), config)


_OLD_ATTENTION_NAMES = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}


def modernize_attention_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the attention weights of old diffusers VAEs (query/key/value/proj_attn)."""
    out = {}
    for k, v in tensors.items():
        if ".attentions." in k:
            for old, new in _OLD_ATTENTION_NAMES.items():
                k = k.replace(f".{old}", f".{new}")
        out[k] = v
    return out


def diffusers_to_ldm(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert diffusers-layout VAE tensors to the original LDM layout (for export and tests)."""
    n_up = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        k = key
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.block.{m.group(2)}.",
            k,
        )
        k = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.",
            k,
        )
        k = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if ".mid_block.attentions.0." in k:
            k = k.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for old, new in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
                k = k.replace(f".{old}", f".{new}")
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[k] = value
    return out


def infer_config(tensors: dict[str, torch.Tensor], label: str = "") -> dict:
    """Infer an AutoencoderKL config from diffusers-layout tensor shapes."""
    try:
        n_blocks = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k)))
        block_out = [int(tensors[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(n_blocks)]
        layers = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k)))
        in_channels = int(tensors["encoder.conv_in.weight"].shape[1])
        out_channels = int(tensors["decoder.conv_out.weight"].shape[0])
        latent = int(tensors["decoder.conv_in.weight"].shape[1])
        enc_out = int(tensors["encoder.conv_out.weight"].shape[0])
    except (KeyError, ValueError, IndexError):
        raise VaeLoadError("the VAE weights are incomplete (encoder or decoder layers are missing)", label or None) from None
    if enc_out != 2 * latent:
        raise VaeLoadError(
            f"the encoder outputs {enc_out} channels but the decoder takes {latent}; not a KL autoencoder", label or None
        )
    if in_channels != 3 or out_channels != 3:
        raise VaeLoadError(f"an image VAE needs 3 colour channels, this one has {in_channels} in and {out_channels} out", label or None)
    groups = 32
    while groups > 1 and any(c % groups for c in block_out):
        groups //= 2
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * n_blocks,
        "up_block_types": ["UpDecoderBlock2D"] * n_blocks,
        "block_out_channels": block_out,
        "layers_per_block": layers,
        "latent_channels": latent,
        "norm_num_groups": groups,
        "use_quant_conv": "quant_conv.weight" in tensors,
        "use_post_quant_conv": "post_quant_conv.weight" in tensors,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in tensors,
    }
