"""Stable Diffusion family VAEs: diffusers' ``AutoencoderKL`` (SD1.x/2.x, SDXL, Playground v2.5, the SD x4
upscaler, SD3, FLUX.1 and the models that share FLUX.1's VAE: Z-Image, Lumina 2, HiDream).

Two key layouts exist in the wild: the original LDM one (``encoder.down.0.block.0...``, used by
community files such as "Color101 VAE" and full SD checkpoints) and diffusers'
(``encoder.down_blocks.0.resnets.0...``, old files with ``query``/``key``/``value`` attention names too);
both are handled in ``_kl_layout``, shared with FLUX.2. The architecture is read from tensor shapes, so
a single file loads with no network. Latents are ``(z - shift_factor) * scaling_factor`` in model
space, as diffusers pipelines do; where the config (or the family: Playground v2.5) has per-channel
``latents_mean``/``latents_std``, ``(z - mean) * scaling_factor / std``, as StableDiffusionXLPipeline does.
The x4 upscaler's VAE has 3 down blocks (1/4 size); its family fits only that depth, the others any.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs import _kl_layout as kl
from vaestudio.core.archs._common import fitting_families, shipped_config
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.families import FAMILIES, Family
from vaestudio.core.registry import PreparedVae, find_prefix
from vaestudio.core.weights import WeightFile

diffusers_to_ldm = kl.diffusers_to_ldm  # the inverse of the LDM conversion, for export and tests
#: families whose published config is shipped (resources/configs/<name>.json): it completes a config
SHIPPED = ("playground-v2.5", "sd-x4-upscaler")


def _statistics(mean, std) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not mean or not std:
        return None
    return (torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1),
            torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))


class SdVae(TorchAutoencoder):
    """A Stable Diffusion family AutoencoderKL ready to encode and decode images."""

    architecture = "autoencoder-kl"
    cancel_blocks = ("ResnetBlock2D", "Attention")

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        cfg = self.model.config  # the config.json's statistics where it sets them, else the family's
        self._stats = _statistics(cfg.get("latents_mean"), cfg.get("latents_std"))

    def set_family(self, family: Family) -> None:
        super().set_family(family)  # the user's choice: its scaling and statistics apply
        self._stats = _statistics(family.latents_mean, family.latents_std)

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            return super().to_model(raw)
        mean, std = (t.to(raw) for t in self._stats)
        return (raw - mean) * self.info.scaling_factor / std

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            return super().from_model(latent)
        mean, std = (t.to(latent) for t in self._stats)
        return latent * std / self.info.scaling_factor + mean

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.parameters

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample


class AutoencoderKLArchitecture(DiffusersArchitecture):
    name = "autoencoder-kl"
    label = "Stable Diffusion VAE (AutoencoderKL)"
    order = 90  # the broadest layout: tried last
    config_classes = ("AutoencoderKL",)
    families = ("sd1", "sdxl", "playground-v2.5", "sd-x4-upscaler", "sd3", "flux", "z-image", "lumina2", "hidream")
    sources = (
        ("single file", ".safetensors/.ckpt/.pt/.bin with LDM keys (community VAEs, full SD checkpoints) or "
                        "diffusers keys"),
        ("diffusers folder", "config.json + diffusion_pytorch_model.safetensors, or a pipeline folder with vae/"),
        ("Hugging Face id", "org/name or org/name/vae, through the standard cache"),
    )
    diffusers_class = "AutoencoderKL"
    vae_class = SdVae
    layouts = (Layout("diffusers", kl.ANCHOR, kl.DIFFUSERS_BLOCKS, kl.modernize_attention_names),
               Layout("ldm", kl.ANCHOR, kl.LDM_BLOCKS, kl.ldm_to_diffusers, kl.diffusers_to_ldm))
    decoder_parts = ("decoder", "post_quant_conv")  # another SD VAE's decoder (e.g. a fine-tune's) can pair
    parts = ("encoder", "decoder", "quant_conv", "post_quant_conv")
    short = "Stable Diffusion VAE"
    guessed = kl.GUESSED
    match_downscale = False  # SD-style VAEs of any depth take the 1/8 families' scaling (see candidates)
    model_scaling = ("scaling_factor", "shift_factor")
    upcast = True
    space_notes = ("model space: (z - shift_factor) * scaling_factor, or per channel (z - latents_mean) * "
                   "scaling_factor / latents_std where the config or family has them, as the SD/SDXL pipelines do",)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return find_prefix(wf.tensors, kl.ANCHOR) is not None

    infer_config = staticmethod(kl.infer_config)
    downscale_of = staticmethod(kl.downscale_of)

    def candidates(self, channels: int, downscale: int) -> list[Family]:
        """The families with this many channels: a 1/8 family fits any depth, another (the x4 upscaler's 1/4)
        only its own."""
        return [f for f in fitting_families(self.families, channels) if f.downscale in (8, downscale)]

    def default_family(self, candidates: list[Family]) -> Family:
        own = [f for f in candidates if f.downscale != 8]  # a depth only one family has (3 blocks: x4 upscaler)
        if own:
            return own[0]
        return FAMILIES["sd1"] if candidates[0].latent_channels == 4 else FAMILIES["flux"]

    def model_config(self, prepared: PreparedVae) -> dict:
        """The merged config over the family's published one where shipped (its latent statistics...): what
        the config leaves unset (absent or null, as save_pretrained writes latents_mean) comes from it."""
        cfg = super().model_config(prepared)
        name = prepared.family.name
        if name not in SHIPPED:
            return cfg
        info = prepared.info
        if info.format in ("diffusers-folder", "hub") and info.family_reason != "chosen by the user":
            return cfg  # a folder's config.json is the truth, its null statistics too, unless --family says otherwise
        return {**shipped_config(name), **{k: v for k, v in cfg.items() if v is not None}}


ARCHITECTURE = AutoencoderKLArchitecture()
