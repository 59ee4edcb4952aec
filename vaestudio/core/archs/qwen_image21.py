"""Qwen-Image 2.1's VAE: diffusers' ``AutoencoderKLQwenImage21`` (64 latent channels at 1/16, RGBA).

Wan 2.2's residual block layout (residual down/up blocks with channel-averaging and repeating
shortcuts, RMS norms, one attention in the middle) with 2D kernels: each causal "3D" convolution is a
``Conv2d`` on a single frame, so an image is a video of one frame as ``QwenImage21Pipeline`` feeds it.
It reads and writes four channels, RGBA: the pipeline converts an RGB image to RGBA (alpha 255, +1 in
[-1, 1]) before encoding, as here, and vaestudio's RGB output drops the decoded alpha. The model space is
what the pipeline gives its transformer: per channel ``(z - latents_mean) / latents_std`` from the config.

Sources: a diffusers folder (config ``AutoencoderKLQwenImage21``, or a pipeline folder with ``vae/``), a
Hugging Face id (``Qwen/Qwen-Image-2.1``, the repository diffusers' single-file loader names), a single
file with diffusers keys, and the ComfyUI file (``qwen_image_2.1_vae_bf16.safetensors``, Comfy-Org's
repackaging): Wan 2.2's original nested keys (``decoder.upsamples.0.upsamples.0``, mapped by
``_wan_layout``) with each causal convolution stored as Wan's 5-D weight with one temporal tap, squeezed
to the 2D kernel here (stored 2D, it loads too). That file's layout is taken from third-party loaders
of it, not verified against ComfyUI's own code (its repository was too large to read here). Recognised, before the Wan architecture, by a Wan-layout
middle block whose first and last convolutions have 2D kernels (Wan's have three temporal taps).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.archs._wan_layout import check_statistics, original_to_diffusers
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile

_ORIGINAL_MARK = "decoder.middle.0.residual.0.gamma"
_DIFFUSERS_MARK = "decoder.mid_block.resnets.0.norm1.gamma"
_PARTS = ("encoder", "decoder", "conv1", "conv2", "quant_conv", "post_quant_conv")
# the first and the last convolution: 2D kernels here, three temporal taps in a Wan VAE
_KERNELS = {_ORIGINAL_MARK: ("encoder.conv1.weight", "decoder.head.2.weight"),
            _DIFFUSERS_MARK: ("encoder.conv_in.weight", "decoder.conv_out.weight")}


def _two_d(w: torch.Tensor) -> bool:
    return w.ndim == 4 or (w.ndim == 5 and w.shape[2] == 1)


def squeeze_time(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's 5-D convolution weights with one temporal tap as the 2D kernels diffusers' class holds."""
    return {k: v[:, :, 0] if v.ndim == 5 and v.shape[2] == 1 else v for k, v in tensors.items()}


def comfyui_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's Qwen-Image 2.1 VAE keys (Wan 2.2's nested layout, 5-D weights) to diffusers'."""
    return squeeze_time(original_to_diffusers(tensors))


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLQwenImage21 config of diffusers-layout tensors (KeyError...: blocks are missing)."""
    if not any(re.match(r"^encoder\.down_blocks\.\d+\.resnets\.", k) for k in t):
        raise ValueError("not Wan 2.2's residual block layout")
    base, in_ch = (int(n) for n in t["encoder.conv_in.weight"].shape[:2])
    z_dim = int(t["decoder.conv_in.weight"].shape[1])
    if int(t["encoder.conv_out.weight"].shape[0]) != 2 * z_dim:
        raise ValueError("not a KL autoencoder")
    out_ch, dec_base = (int(n) for n in t["decoder.conv_out.weight"].shape[:2])
    levels = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    mult = [int(t[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) // base for i in range(levels)]
    return {"base_dim": base, "decoder_base_dim": dec_base, "z_dim": z_dim, "dim_mult": mult,
            "num_res_blocks": count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."), "attn_scales": [],
            "temperal_downsample": [f"encoder.down_blocks.{i}.downsampler.time_conv.weight" in t
                                    for i in range(levels - 1)],
            "dropout": 0.0, "is_residual": True, "in_channels": in_ch, "out_channels": out_ch}


def _stats(values) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32).view(-1, 1, 1)


class QwenImage21Vae(TorchAutoencoder):
    """Qwen-Image 2.1's VAE on single RGB images (fed opaque RGBA); the model space is per-channel normalised."""

    architecture = "qwen-image-2.1"
    cancel_blocks = ("QwenImage21ResidualBlock", "QwenImage21AttentionBlock")

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        cfg = model.config
        self._mean, self._std = _stats(cfg.latents_mean), _stats(cfg.latents_std)
        self._alpha = cfg.in_channels // (cfg.patch_size or 1) ** 2 == 4

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if self._alpha:  # an opaque alpha channel, as QwenImage21Pipeline's RGB -> RGBA conversion gives
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return self.model._encode(x.unsqueeze(2))[:, :, 0]  # one frame: mean and log-variance

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model._decode(z.unsqueeze(2)).sample[:, :3, 0]  # clamped to [-1, 1] by diffusers; RGB

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self._mean.to(raw)) / self._std.to(raw)

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self._std.to(latent) + self._mean.to(latent)


class QwenImage21Architecture(DiffusersArchitecture):
    name = "qwen-image-2.1"
    label = "Qwen-Image 2.1 VAE (AutoencoderKLQwenImage21)"
    order = 55  # before the Wan architecture, whose marker keys these files share
    config_classes = ("AutoencoderKLQwenImage21",)
    families = ("qwen-image-2.1",)
    sources = (
        ("single file", "ComfyUI's qwen_image_2.1_vae_bf16 (Wan 2.2's original nested keys, 5-D weights with one "
                        "temporal tap), or diffusers keys, .safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLQwenImage21) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. Qwen/Qwen-Image-2.1, through the standard cache"),
    )
    diffusers_class = "AutoencoderKLQwenImage21"
    vae_class = QwenImage21Vae
    layouts = (Layout("comfyui", _ORIGINAL_MARK, ("decoder.upsamples.",), comfyui_to_diffusers),
               Layout("diffusers", _DIFFUSERS_MARK, ("decoder.up_blocks.",), squeeze_time))
    parts = _PARTS
    short = "Qwen-Image 2.1 VAE"
    shipped = "qwen-image-2.1"
    guessed = ("dropout",)
    space_notes = ("model space: per channel (z - latents_mean) / latents_std from the config, as "
                   "QwenImage21Pipeline does",
                   "encoded and decoded as a video of one frame in RGBA: the image gets an opaque alpha channel "
                   "and the decoded alpha is dropped")
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        for mark, kernels in _KERNELS.items():
            prefix = find_prefix(wf.tensors, mark)
            if prefix is not None:
                return all(prefix + k in wf.tensors and _two_d(wf.tensors[prefix + k]) for k in kernels)
        return False

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        in_ch, out_ch, patch = cfg.get("in_channels", 4), cfg.get("out_channels", 4), cfg.get("patch_size") or 1
        if in_ch != out_ch or in_ch not in (3 * patch ** 2, 4 * patch ** 2):
            raise VaeLoadError(f"a Qwen-Image 2.1 VAE takes and gives RGBA (or RGB) channels, this one takes {in_ch} "
                               f"and gives {out_ch}", label)
        check_statistics(cfg, label)

    def channels_of(self, cfg: dict) -> int:
        return int(cfg["z_dim"])

    def downscale_of(self, cfg: dict) -> int:
        return 2 ** len(cfg["temperal_downsample"]) * (cfg.get("patch_size") or 1)


ARCHITECTURE = QwenImage21Architecture()
