"""The asymmetric VAE for Stable Diffusion 1.x inpainting: diffusers' ``AsymmetricAutoencoderKL``.

"Designing a Better Asymmetric VQGAN for StableDiffusion" (Zhu et al., 2023): the SD1 encoder unchanged
(so its latents are SD1's: ``z * 0.18215`` in model space, as the SD pipelines do) and a heavier decoder
(``MaskConditionDecoder``) with a condition branch that takes the masked image and the mask in
``StableDiffusionInpaintPipeline``. Without a mask diffusers' ``decode(z)`` skips that branch, and so
does vaestudio's decode: a reconstruction is what the text-to-image and img2img pipelines get (a mask
of ones, everything to paint, gives the same numbers; a mask of zeros would copy the image through).

Sources: a diffusers folder (config ``AsymmetricAutoencoderKL``), a Hugging Face id
(``cross-attention/asymmetric-autoencoder-kl-x-1-5``, ``...-x-2``) and a single file with diffusers keys
(the folder's weights on its own), recognised by ``decoder.condition_encoder``. The original
Asymmetric_VQGAN checkpoint (``decoder.encoder`` names) is not read: diffusers converts it only with a
script outside its package. The shipped configs are the two published ones, as diffusers' conversion
script writes them (``scripts/convert_asymmetric_vqgan_to_diffusers.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs import _kl_layout as kl
from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile

_MARK = "decoder.condition_encoder.layers.0.weight"


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AsymmetricAutoencoderKL config of diffusers-layout tensors: the encoder as an SD VAE's, the
    decoder's own widths and depth; ``norm_num_groups`` is a guess that divides every width."""
    enc = kl.infer_config(t, label)
    n_up = count_index(t, r"^decoder\.up_blocks\.(\d+)\.")
    if not n_up:
        raise KeyError("decoder.up_blocks.0")
    up = [int(t[f"decoder.up_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in reversed(range(n_up))]
    groups = 32
    while groups > 1 and any(c % groups for c in enc["block_out_channels"] + up):
        groups //= 2
    return {
        "in_channels": enc["in_channels"], "out_channels": enc["out_channels"],
        "down_block_types": enc["down_block_types"], "down_block_out_channels": enc["block_out_channels"],
        "layers_per_down_block": enc["layers_per_block"], "up_block_types": ["UpDecoderBlock2D"] * n_up,
        "up_block_out_channels": up,
        "layers_per_up_block": count_index(t, r"^decoder\.up_blocks\.0\.resnets\.(\d+)\.") - 1,
        "latent_channels": enc["latent_channels"], "norm_num_groups": groups,
    }


class AsymmetricVae(TorchAutoencoder):
    """The asymmetric VAE on whole images: decoded without the masked-image condition."""

    architecture = "asymmetric-kl"
    cancel_blocks = ("ResnetBlock2D", "Attention")

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.parameters

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample  # image=None, mask=None: diffusers skips the condition branch


class AsymmetricArchitecture(DiffusersArchitecture):
    name = "asymmetric-kl"
    label = "asymmetric VAE for SD 1.x inpainting (AsymmetricAutoencoderKL)"
    order = 80  # before the SD layout (90), whose keys its encoder shares
    config_classes = ("AsymmetricAutoencoderKL",)
    families = ("sd1",)
    sources = (
        ("diffusers folder", "config.json (AsymmetricAutoencoderKL) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "cross-attention/asymmetric-autoencoder-kl-x-1-5 or -x-2, through the standard cache"),
        ("single file", "the folder's diffusion_pytorch_model.safetensors on its own (diffusers keys, "
                        "decoder.condition_encoder), .safetensors or .pth"),
    )
    diffusers_class = "AsymmetricAutoencoderKL"
    vae_class = AsymmetricVae
    layouts = (Layout("diffusers", kl.ANCHOR, ("decoder.condition_encoder.",), kl.modernize_attention_names),)
    parts = ("encoder", "decoder", "quant_conv", "post_quant_conv")
    short = "asymmetric VAE"
    guessed = ("norm_num_groups",)
    model_scaling = ("scaling_factor",)
    space_notes = ("model space: z * scaling_factor, as the SD 1.x pipelines do (the SD1 encoder's latents)",
                   "decoded without a mask: the decoder's masked-image branch (StableDiffusionInpaintPipeline's "
                   "image and mask) is not used, as diffusers' decode(z)")
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return find_prefix(wf.tensors, _MARK) is not None

    def shipped_for(self, inferred: dict) -> str:
        return "asymmetric-kl-x-2" if inferred.get("layers_per_up_block") == 5 else "asymmetric-kl-x-1-5"

    def downscale_of(self, cfg: dict) -> int:
        return 2 ** (len(cfg["down_block_out_channels"]) - 1)


ARCHITECTURE = AsymmetricArchitecture()
