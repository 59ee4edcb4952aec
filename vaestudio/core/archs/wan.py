"""The Wan-layout VAEs: Wan 2.1 (also used by Wan 2.2 A14B), the Qwen-Image VAE and Wan 2.2's (TI2V-5B).

Video VAEs with causal 3D convolutions (diffusers' ``AutoencoderKLWan`` / ``AutoencoderKLQwenImage``).
An image is a video of one frame, as the image pipelines (QwenImagePipeline) feed it; Wan 2.1 and 2.2
(``kind`` video, ``temporal_downscale`` 4) also take clips of 1 + 4k frames through the full temporal
path (``_wan_video``: the first frame alone, then chunks of 4 with the causal feature cache, equal to
diffusers' ``encode``/``decode``). Qwen-Image's VAE is a one-frame-only family (its pipelines never
give it more), so it stays ``kind`` image and takes a clip frame by frame.

Wan 2.1 and Qwen-Image: 16 latent channels at 1/8; Wan 2.2: the image patchified 2x2 into
12 channels, residual down/up blocks, 48 latent channels at 1/16. The model space is what the
pipelines give their transformer: per channel ``(z - latents_mean) / latents_std`` from the config.

One frame makes every causal convolution see two zero frames before the image, so only the last
temporal tap of each 3x3x3 kernel contributes: ``_single_frame`` runs those layers as 2D
convolutions with that tap (a third of the work; the result equals diffusers' to float rounding).
Temporal up/downsampling convolutions never run on a first frame, in diffusers as here.

Sources: diffusers folders (``AutoencoderKLWan``, ``AutoencoderKLQwenImage``; pipeline folders with
``vae/``), Hugging Face ids, and the original files as ComfyUI ships them (``wan_2.1_vae``,
``qwen_image_vae``, ``wan2.2_vae``; .safetensors or .pth), recognised by
``decoder.middle.0.residual.0.gamma``. Wan 2.1-layout files are converted with diffusers'
``convert_wan_vae_to_diffusers``; Wan 2.2's nested layout (``decoder.upsamples.0.upsamples.0``) has no
converter in diffusers' loaders, so ``_wan_layout.original_to_diffusers`` maps it (shared with
Qwen-Image 2.1; ``diffusers_to_original`` is its inverse; tests run both ways). Qwen-Image's VAE is a fine-tuned Wan 2.1 VAE: same keys, shapes
and latent statistics, so a single file without a name or metadata hint is reported as a guess.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Found, Layout
from vaestudio.core.archs._wan_layout import check_statistics, original_to_diffusers
from vaestudio.core.archs._wan_video import causal_chunks, iter_decode, iter_encode, stepper, temporal_factor
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, FamilyGuess
from vaestudio.core.registry import PreparedVae, find_prefix
from vaestudio.core.weights import WeightFile

_ORIGINAL_MARK = "decoder.middle.0.residual.0.gamma"
_DIFFUSERS_MARK = "decoder.mid_block.resnets.0.norm1.gamma"
_PARTS = ("encoder", "decoder", "conv1", "conv2", "quant_conv", "post_quant_conv")
_CONFIG_CLASSES = ("AutoencoderKLWan", "AutoencoderKLQwenImage")
# -- config from shapes ----------------------------------------------------------------------------

def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLWan config of diffusers-layout tensors (what varies between Wan VAEs; KeyError...:
    blocks are missing)."""
    enc_in = t["encoder.conv_in.weight"].shape
    base, in_ch = int(enc_in[0]), int(enc_in[1])
    z_dim = int(t["decoder.conv_in.weight"].shape[1])
    out_ch = int(t["decoder.conv_out.weight"].shape[0])
    dec_base = int(t["decoder.conv_out.weight"].shape[1])
    residual = any(re.match(r"^encoder\.down_blocks\.\d+\.resnets\.", k) for k in t)
    if residual:
        levels = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
        n_res = count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.")
        mult = [int(t[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) // base for i in range(levels)]
        temporal = [f"encoder.down_blocks.{i}.downsampler.time_conv.weight" in t for i in range(levels - 1)]
    else:  # a flat list: num_res_blocks residual blocks per level, a resample between levels
        n = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
        mult, temporal, n_res, count = [], [], 0, 0
        for i in range(n):
            if f"encoder.down_blocks.{i}.resample.1.weight" in t:
                temporal.append(f"encoder.down_blocks.{i}.time_conv.weight" in t)
                n_res, count = count, 0
                continue
            if f"encoder.down_blocks.{i}.to_qkv.weight" in t:
                raise ValueError("attention in the down blocks")
            if count == 0:
                mult.append(int(t[f"encoder.down_blocks.{i}.conv1.weight"].shape[0]) // base)
            count += 1
        n_res = n_res or count
    patch = round((in_ch / 3) ** 0.5)
    cfg = {"base_dim": base, "z_dim": z_dim, "dim_mult": mult, "num_res_blocks": n_res, "attn_scales": [],
           "temperal_downsample": temporal, "dropout": 0.0}
    if residual or in_ch != 3 or dec_base != base or out_ch != 3:
        cfg.update(is_residual=residual, in_channels=in_ch, out_channels=out_ch, decoder_base_dim=dec_base,
                   patch_size=patch if patch > 1 else None,
                   scale_factor_spatial=2 ** len(temporal) * max(patch, 1))
    return cfg


def downscale_of(cfg: dict) -> int:
    return 2 ** len(cfg["temperal_downsample"]) * (cfg.get("patch_size") or 1)


# -- one frame, run as 2D --------------------------------------------------------------------------

def _frame_forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """A causal 3D convolution of one frame with no cache: only the last temporal tap sees the frame."""
    if cache_x is not None or x.shape[2] != 1:
        return type(self).forward(self, x, cache_x)
    pw, _, ph, _, _, _ = self._padding
    y = F.conv2d(x[:, :, 0], self.weight[:, :, -1], self.bias, self.stride[1:], (ph, pw))
    return y.unsqueeze(2)


def single_frame(model: torch.nn.Module) -> torch.nn.Module:
    """Make every causal 3D convolution of ``model`` run a single frame as a 2D convolution."""
    for m in model.modules():
        if type(m).__name__.endswith("CausalConv3d"):
            pt = m._padding[4]
            if m.kernel_size[0] - 1 == pt and m.stride[0] == 1:  # 'same' causal padding: the last tap only
                m.forward = types.MethodType(_frame_forward, m)
    return model


class WanVae(TorchAutoencoder):
    """A Wan-layout VAE: images as one frame (2D), clips chunk by chunk (kind video); the model space is
    per-channel normalised."""

    architecture = "wan"
    channels_last = False  # 5-D weights
    cancel_blocks = ("WanResidualBlock", "WanAttentionBlock", "QwenImageResidualBlock", "QwenImageAttentionBlock")
    clip_tiles = True  # (kind video: _wan_video tiles each chunk, one causal cache per tile)

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        cfg = model.config
        self._mean = torch.tensor(list(cfg.latents_mean), dtype=torch.float32).view(-1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(list(cfg.latents_std), dtype=torch.float32).view(-1, 1, 1)
        self._patch = getattr(cfg, "patch_size", None) or 1
        self._first_chunk = type(model).__name__ == "AutoencoderKLWan"

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(2)  # one frame
        if self._patch > 1:
            from diffusers.models.autoencoders.autoencoder_kl_wan import patchify as wan_patchify

            x = wan_patchify(x, patch_size=self._patch)
        h = self.model.quant_conv(self.model.encoder(x))
        return h[:, :, 0]

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        x = self.model.post_quant_conv(z.unsqueeze(2))
        out = self.model.decoder(x, first_chunk=True) if self._first_chunk else self.model.decoder(x)
        if self._patch > 1:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify as wan_unpatchify

            out = wan_unpatchify(out, patch_size=self._patch)
        return out[:, :, 0].clamp(-1.0, 1.0)

    # clips (kind video only: Qwen-Image's VAE takes a clip frame by frame, the ClipMixin default)
    def _clip_chunks(self, frames: int, height: int, width: int) -> list[tuple[int, int]]:
        if not self._is_video:
            return super()._clip_chunks(frames, height, width)
        return causal_chunks(frames, self.info.temporal_downscale)

    def _iter_encode_clip_tensor(self, x: torch.Tensor, tiles: dict | None = None):
        return iter_encode(self.model, x, self._clip_chunks(x.shape[2], *x.shape[-2:]), self._patch, tiles)

    def _iter_decode_clip_tensor(self, z: torch.Tensor, tiles: dict | None = None):
        return iter_decode(self.model, z, self._patch, tiles)

    def _clip_streams(self, tiles_encode: dict | None, tiles_decode: dict | None):
        if not self._is_video:
            return None
        return (stepper(self.model, "encoder", self._patch, tiles_encode),
                stepper(self.model, "decoder", self._patch, tiles_decode))

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self._mean.to(raw.device, raw.dtype)) * self._inv_std.to(raw.device, raw.dtype)

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self._inv_std.to(latent.device, latent.dtype) + self._mean.to(latent.device, latent.dtype)


# -- the architecture ------------------------------------------------------------------------------

_QWEN_KEYS = ("base_dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample", "dropout",
              "input_channels", "latents_mean", "latents_std")


class WanArchitecture(DiffusersArchitecture):
    name = "wan"
    label = "Wan / Qwen-Image VAE (AutoencoderKLWan)"
    order = 60
    config_classes = _CONFIG_CLASSES
    families = ("wan", "qwen-image", "wan22")
    sources = (
        ("single file", "ComfyUI's wan_2.1_vae / qwen_image_vae / wan2.2_vae (original Wan keys, "
                        "decoder.middle.0.residual.0.gamma), .safetensors or .pth; or diffusers keys"),
        ("diffusers folder", "config.json (AutoencoderKLWan or AutoencoderKLQwenImage) + weights, or a pipeline "
                             "folder with vae/"),
        ("Hugging Face id", "e.g. Qwen/Qwen-Image, Wan-AI/Wan2.1-T2V-1.3B-Diffusers, Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
    )
    vae_class = WanVae
    layouts = (Layout("comfyui", _ORIGINAL_MARK, (), original_to_diffusers), Layout("diffusers", _DIFFUSERS_MARK))
    parts = _PARTS
    short = "Wan VAE"
    guessed = ("dropout",)
    space_notes = ("model space: per channel (z - latents_mean) / latents_std from the config, as the Wan and "
                   "Qwen-Image pipelines do", "encoded and decoded as a video of one frame")
    infer_config = staticmethod(infer_config)

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        if self.model_class(prepared) == "AutoencoderKLWan":
            prepared.info.kind = "video"
            prepared.info.temporal_downscale = temporal_factor(prepared.config)
            td = prepared.info.temporal_downscale
            prepared.info.notes.append(f"clips: 1 + {td}k frames, the first encoded alone, then causal chunks of {td} "
                                       "(as diffusers' AutoencoderKLWan)")
        return prepared

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return find_prefix(wf.tensors, _ORIGINAL_MARK) is not None or find_prefix(wf.tensors, _DIFFUSERS_MARK) is not None

    def check(self, tensors: dict[str, torch.Tensor], layout: Layout, label: str) -> None:
        head = tensors.get("decoder.head.2.weight" if layout.name == "comfyui" else "decoder.conv_out.weight")
        if head is not None and head.ndim == 5 and head.shape[2] == 1:
            raise VaeLoadError("is a Qwen-Image 2.1 VAE (Wan 2.2 layout, 64 channels, 2D kernels), which vaestudio "
                               "does not support yet", label)

    def shipped_for(self, inferred: dict) -> str:
        return "wan2.2" if inferred.get("is_residual") else "wan2.1"

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        in_ch, out_ch = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
        if in_ch != out_ch or in_ch != 3 * (cfg.get("patch_size") or 1) ** 2:
            raise VaeLoadError(f"an RGB Wan VAE takes and gives 3 colour channels (12 patchified), this one takes "
                               f"{in_ch} and gives {out_ch}", label)
        check_statistics(cfg, label)

    def channels_of(self, cfg: dict) -> int:
        return int(cfg["z_dim"])

    downscale_of = staticmethod(downscale_of)

    def decide_family(self, found: Found) -> FamilyGuess:
        cls = found.config_class
        if cls == "AutoencoderKLQwenImage" and "is_residual" in found.merged:
            raise VaeLoadError("config.json says AutoencoderKLQwenImage but the weights are a Wan 2.2-style VAE",
                               found.label)
        guess = super().decide_family(found)  # refuses a latent no family has
        if cls == "AutoencoderKLQwenImage":
            return FamilyGuess(FAMILIES["qwen-image"], False, "config class AutoencoderKLQwenImage")
        if cls == "AutoencoderKLWan" and found.channels == 16:
            return FamilyGuess(FAMILIES["wan"], False, "config class AutoencoderKLWan with 16 latent channels")
        if guess.guessed and len(self.candidates(found.channels, found.downscale)) > 1:
            return FamilyGuess(guess.family, True, guess.reason + " (Qwen-Image's VAE is a fine-tuned Wan 2.1 VAE "
                                                                  "with the same keys and latent statistics)")
        return guess

    def model_class(self, prepared: PreparedVae) -> str:
        cls = prepared.extra.get("config_class")
        if cls in _CONFIG_CLASSES:
            return cls
        qwen = prepared.family.name == "qwen-image" and not prepared.config.get("is_residual")
        return "AutoencoderKLQwenImage" if qwen else "AutoencoderKLWan"

    def model_config(self, prepared: PreparedVae) -> dict:
        cfg = super().model_config(prepared)
        if self.model_class(prepared) == "AutoencoderKLQwenImage":
            return {k: v for k, v in cfg.items() if k in _QWEN_KEYS}
        return cfg

    wrap = staticmethod(single_frame)


ARCHITECTURE = WanArchitecture()
