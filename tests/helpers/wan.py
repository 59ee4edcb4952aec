"""Tiny Wan-family models for the tests (the real diffusers classes, perturbed weights) and their files in the
layouts users download."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from helpers.archs import perturbed, state
from vaestudio.core.archs._common import shipped_config
from vaestudio.core.archs._wan_layout import diffusers_to_original

# the block layout of the real VAEs (diffusers' converter assumes it), 8 channels wide
SMALL = dict(base_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
# a single file has no config: its latent statistics are the published ones (the shipped config)
WAN22 = shipped_config("wan2.2")
MODELS: dict[str, torch.nn.Module] = {}


def model_of(kind: str) -> torch.nn.Module:
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan

    if kind not in MODELS:
        torch.manual_seed(3)
        if kind == "wan2.1":
            MODELS[kind] = perturbed(AutoencoderKLWan(z_dim=16, **SMALL))
        elif kind == "qwen-image":
            MODELS[kind] = perturbed(AutoencoderKLQwenImage(z_dim=16, **SMALL))
        else:  # Wan 2.2 TI2V-5B: patchified 2x2, residual blocks, its own decoder width
            MODELS[kind] = perturbed(AutoencoderKLWan(
                z_dim=48, decoder_base_dim=12, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                scale_factor_spatial=16, latents_mean=WAN22["latents_mean"], latents_std=WAN22["latents_std"], **SMALL))
    return MODELS[kind]


def write(kind: str, layout: str, tmp_path):
    m = model_of(kind)
    if layout == "diffusers-folder":
        m.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    name = {"wan2.1": "wan_2.1_vae", "wan2.2": "wan2.2_vae", "qwen-image": "qwen_image_vae"}[kind]
    save_file(diffusers_to_original(state(m)), str(tmp_path / f"{name}.safetensors"))  # ComfyUI's original keys
    return tmp_path / f"{name}.safetensors"
