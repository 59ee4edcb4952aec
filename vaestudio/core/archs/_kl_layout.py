"""The Stable Diffusion KL autoencoder's key layouts and config from shapes, shared by the modules whose
model is built on it (``autoencoder_kl``: AutoencoderKL; ``flux2``: AutoencoderKLFlux2).

Two key layouts exist in the wild: the original LDM one (``encoder.down.0.block.0...``) and diffusers'
(``encoder.down_blocks.0.resnets.0...``). LDM weights are converted with diffusers' own
``convert_ldm_vae_checkpoint``, so the result is exactly what ``from_single_file`` gives.
"""

from __future__ import annotations

import re

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.errors import VaeLoadError

ANCHOR = "encoder.conv_in.weight"
DIFFUSERS_BLOCKS = ("encoder.down_blocks.", "decoder.up_blocks.")
LDM_BLOCKS = ("encoder.down.", "decoder.up.")
_OLD_ATTENTION_NAMES = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}


def ldm_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert LDM-layout VAE tensors to diffusers layout with diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    n_blocks = count_index(tensors, r"encoder\.down\.(\d+)\.")
    if not n_blocks:
        raise KeyError("encoder.down.0")
    config = {"down_block_types": ["DownEncoderBlock2D"] * n_blocks, "up_block_types": ["UpDecoderBlock2D"] * n_blocks}
    return convert_ldm_vae_checkpoint(dict(tensors), config)


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
    n_up = count_index(tensors, r"decoder\.up_blocks\.(\d+)\.")
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


def infer_config(tensors: dict[str, torch.Tensor], label: str) -> dict:
    """The KL autoencoder config of diffusers-layout tensors; ``norm_num_groups`` is a guess (the largest
    power of two up to 32 that divides every width), the rest is read from shapes."""
    n_blocks = count_index(tensors, r"encoder\.down_blocks\.(\d+)\.")
    block_out = [int(tensors[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(n_blocks)]
    layers = count_index(tensors, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")
    in_channels = int(tensors["encoder.conv_in.weight"].shape[1])
    out_channels = int(tensors["decoder.conv_out.weight"].shape[0])
    latent = int(tensors["decoder.conv_in.weight"].shape[1])
    enc_out = int(tensors["encoder.conv_out.weight"].shape[0])
    if not n_blocks or not layers:
        raise KeyError("encoder.down_blocks.0.resnets.0")
    if enc_out != 2 * latent:
        raise VaeLoadError(f"the encoder outputs {enc_out} channels but the decoder takes {latent}; not a KL "
                           f"autoencoder", label)
    if in_channels != 3 or out_channels != 3:
        raise VaeLoadError(f"an image VAE needs 3 colour channels, this one has {in_channels} in and {out_channels} "
                           f"out", label)
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


#: What ``infer_config`` guesses rather than reads: a folder's config.json says it where it matters.
GUESSED = ("norm_num_groups",)


def downscale_of(config: dict) -> int:
    return 2 ** (len(config["block_out_channels"]) - 1)
