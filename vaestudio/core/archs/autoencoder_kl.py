"""Stable Diffusion family VAEs: diffusers' ``AutoencoderKL`` (SD1.x/2.x, SDXL, SD3, FLUX.1).

Two key layouts exist in the wild: the original LDM one (``encoder.down.0.block.0...``, used by
community files such as "Color101 VAE" and full SD checkpoints) and diffusers'
(``encoder.down_blocks.0.resnets.0...``, old files with ``query``/``key``/``value`` attention names too);
both are handled in ``_kl_layout``, shared with FLUX.2. The architecture is read from tensor shapes, so
a single file loads with no network. Latents are ``(z - shift_factor) * scaling_factor`` in model
space, as diffusers pipelines do.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs import _kl_layout as kl
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.families import FAMILIES, Family
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile

diffusers_to_ldm = kl.diffusers_to_ldm  # the inverse of the LDM conversion, for export and tests


class SdVae(TorchAutoencoder):
    """A Stable Diffusion family AutoencoderKL ready to encode and decode images."""

    architecture = "autoencoder-kl"
    cancel_blocks = ("ResnetBlock2D", "Attention")

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.parameters

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample


class AutoencoderKLArchitecture(DiffusersArchitecture):
    name = "autoencoder-kl"
    label = "Stable Diffusion VAE (AutoencoderKL)"
    order = 90  # the broadest layout: tried last
    config_classes = ("AutoencoderKL",)
    families = ("sd1", "sdxl", "sd3", "flux")
    sources = (
        ("single file", ".safetensors/.ckpt/.pt/.bin with LDM keys (community VAEs, full SD checkpoints) or "
                        "diffusers keys"),
        ("diffusers folder", "config.json + diffusion_pytorch_model.safetensors, or a pipeline folder with vae/"),
        ("Hugging Face id", "org/name or org/name/vae, through the standard cache"),
    )
    diffusers_class = "AutoencoderKL"
    vae_class = SdVae
    layouts = (Layout("diffusers", kl.ANCHOR, kl.DIFFUSERS_BLOCKS, kl.modernize_attention_names),
               Layout("ldm", kl.ANCHOR, kl.LDM_BLOCKS, kl.ldm_to_diffusers))
    parts = ("encoder", "decoder", "quant_conv", "post_quant_conv")
    short = "Stable Diffusion VAE"
    guessed = kl.GUESSED
    match_downscale = False  # SD-style VAEs of any depth take these families' scaling
    model_scaling = ("scaling_factor", "shift_factor")
    upcast = True

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return find_prefix(wf.tensors, kl.ANCHOR) is not None

    infer_config = staticmethod(kl.infer_config)
    downscale_of = staticmethod(kl.downscale_of)

    def default_family(self, candidates: list[Family]) -> Family:
        return FAMILIES["sd1"] if candidates[0].latent_channels == 4 else FAMILIES["flux"]


ARCHITECTURE = AutoencoderKLArchitecture()
