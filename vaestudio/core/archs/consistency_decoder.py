"""OpenAI's consistency decoder for Stable Diffusion 1.x latents: diffusers' ``ConsistencyDecoderVAE``.

Another decoder for SD1 latents (the one DALL-E 3 uses), to set against the SD1 VAE's own: a UNet at
full resolution that turns noise into the image in a few consistency-model steps, conditioned on the
latent (scaled by 0.18215, normalised by its own per-channel statistics and upsampled to the image size).
``ConsistencyDecoderScheduler`` runs exactly ``STEPS`` = 2 steps (the only count diffusers supports); the
noise comes from a generator seeded ``SEED`` per image, so a latent decodes to the same image every time
and equals ``decode(z, generator=torch.Generator().manual_seed(0))``. Its encoder is the SD1 VAE's (with
the quant conv), so a reconstruction is SD1's encoder and this decoder; the latents are SD1's: ``z * 0.18215``
in model space, as the SD pipelines give their UNet (``StableDiffusionPipeline(vae=ConsistencyDecoderVAE)``).

Sources: a diffusers folder (config ``ConsistencyDecoderVAE``), the Hugging Face id
``openai/consistency-decoder`` and a single file with diffusers keys, recognised by ``decoder_unet``.
OpenAI's own release is a TorchScript file, which vaestudio does not run (it is code, not weights).
The shipped config is the class's defaults (the published config.json was not readable here).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Found, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.registry import find_prefix
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile

STEPS = 2  # ConsistencyDecoderScheduler.set_timesteps accepts no other count
SEED = 0
_MARK = "decoder_unet.conv_in.weight"


def _groups(widths: list[int]) -> int:
    """The largest power of two up to 32 that divides every width (a guess: config.json says it)."""
    groups = 32
    while groups > 1 and any(c % groups for c in widths):
        groups //= 2
    return groups


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The ConsistencyDecoderVAE config of diffusers-layout tensors (KeyError...: blocks are missing)."""
    n_enc = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    n_dec = count_index(t, r"^decoder_unet\.down_blocks\.(\d+)\.")
    if not n_enc or not n_dec:
        raise KeyError("encoder.down_blocks.0" if not n_enc else "decoder_unet.down_blocks.0")
    enc = [int(t[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(n_enc)]
    dec = [int(t[f"decoder_unet.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(n_dec)]
    latent = int(t["encoder.conv_out.weight"].shape[0]) // 2
    return {
        "latent_channels": latent, "encoder_out_channels": latent,
        "encoder_in_channels": int(t["encoder.conv_in.weight"].shape[1]), "encoder_block_out_channels": enc,
        "encoder_layers_per_block": count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "encoder_down_block_types": ["DownEncoderBlock2D"] * n_enc, "encoder_norm_num_groups": _groups(enc),
        "decoder_block_out_channels": dec,
        "decoder_layers_per_block": count_index(t, r"^decoder_unet\.down_blocks\.0\.resnets\.(\d+)\."),
        "decoder_down_block_types": ["ResnetDownsampleBlock2D"] * n_dec,
        "decoder_up_block_types": ["ResnetUpsampleBlock2D"] * n_dec,
        "decoder_in_channels": int(t["decoder_unet.conv_in.weight"].shape[1]),
        "decoder_out_channels": int(t["decoder_unet.conv_out.weight"].shape[0]),
        "decoder_num_train_timesteps": int(t["decoder_unet.time_proj.weight"].shape[0]),
        "decoder_add_attention": any(k.startswith("decoder_unet.mid_block.attentions.") for k in t),
        "decoder_norm_num_groups": _groups(dec),
    }


class ConsistencyDecoderVae(TorchAutoencoder):
    """SD1's encoder and the consistency decoder, in ``STEPS`` steps from noise seeded ``SEED`` per image."""

    architecture = "consistency-decoder"
    cancel_blocks = ("ResnetBlock2D", "Attention")

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.parameters

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        # one CPU generator per image: each image's noise is a single-image decode's on any device
        gens = [torch.Generator().manual_seed(SEED) for _ in range(z.shape[0])]
        return self.model.decode(z, generator=gens, num_inference_steps=STEPS).sample


class ConsistencyDecoderArchitecture(DiffusersArchitecture):
    name = "consistency-decoder"
    label = "OpenAI consistency decoder for SD 1.x latents (ConsistencyDecoderVAE)"
    order = 70
    config_classes = ("ConsistencyDecoderVAE",)
    families = ("sd1",)
    sources = (
        ("diffusers folder", "config.json (ConsistencyDecoderVAE) + weights"),
        ("Hugging Face id", "openai/consistency-decoder, through the standard cache"),
        ("single file", "the folder's diffusion_pytorch_model.safetensors on its own (diffusers keys, decoder_unet), "
                        ".safetensors or .pth; not OpenAI's TorchScript decoder.pt"),
    )
    diffusers_class = "ConsistencyDecoderVAE"
    vae_class = ConsistencyDecoderVae
    layouts = (Layout("diffusers", "encoder.conv_in.weight", ("decoder_unet.",)),)
    parts = ("encoder", "quant_conv", "decoder_unet")
    half_keys = {"encoder": "encoder", "decoder": "decoder_unet"}
    real_buffers = True  # its latent statistics are non-persistent buffers, and it holds its scheduler
    short = "consistency decoder VAE"
    shipped = "consistency-decoder"
    guessed = ("encoder_norm_num_groups", "decoder_norm_num_groups")
    space_notes = ("model space: z * scaling_factor, as the SD 1.x pipelines do (the SD1 encoder's latents)",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return find_prefix(wf.tensors, _MARK) is not None

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        take, latent = cfg.get("encoder_in_channels", 3), cfg["latent_channels"]
        if take != 3 or cfg.get("decoder_in_channels", 7) != 3 + latent or cfg.get("decoder_out_channels", 6) < 3:
            raise VaeLoadError(f"a consistency decoder VAE takes 3 colour channels and conditions its decoder on the "
                               f"noisy image and the {latent}-channel latent; this one's shapes do not fit that",
                               label)

    def describe(self, info: VaeInfo, found: Found) -> None:
        info.notes.append(f"decoder: a consistency model in {STEPS} steps (ConsistencyDecoderScheduler) from noise "
                          f"seeded {SEED} for each image, so a latent always decodes to the same image")

    def downscale_of(self, cfg: dict) -> int:
        return 2 ** (len(cfg["encoder_block_out_channels"]) - 1)


ARCHITECTURE = ConsistencyDecoderArchitecture()
