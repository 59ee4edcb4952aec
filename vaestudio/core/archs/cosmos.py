"""Cosmos 1.0's video tokenizer (continuous, CV8x8x8): diffusers' ``AutoencoderKLCosmos`` (16 latent
channels at 1/8, 1/8 in time).

A causal 3D autoencoder behind a 3D Haar wavelet patcher (4x4x4), with factorised spatial/temporal
convolutions and attention; its posterior is the identity (the latent itself). A clip runs whole and untiled: diffusers' class tiles
neither in time nor in space (``enable_tiling`` is accepted and unused), so memory grows with the clip's
length and frame size (docs/benchmarks.md). The model space is what
``CosmosVideoToWorldPipeline`` gives its transformer: ``(z - latents_mean) * sigma_data / latents_std``
with statistics per channel *and latent frame* (``latents_mean`` holds 16 channels x 16 latent frames,
``view(C, -1)[:, :T']`` as the pipeline reads it), sigma_data 0.5 (EDMEulerScheduler's default; the
published scheduler config was not read here). A clip of more latent frames than the statistics cover
is refused in one sentence, as the pipeline cannot take it either; an image uses frame 0's statistics.

Sources: a diffusers folder (config ``AutoencoderKLCosmos``, or a pipeline folder with ``vae/``), a
Hugging Face id (``nvidia/Cosmos-1.0-Diffusion-7B-Text2World``'s ``vae/``), a diffusers-key single file,
and the original NVIDIA tokenizer keys (``decoder.unpatcher3d.wavelets``: ComfyUI's marker; the
``autoencoder.jit`` state dict's names), renamed with the table of diffusers'
scripts/convert_cosmos_to_diffusers.py (diffusers' loaders have no converter). That the ComfyUI file
uses these exact names is read from ComfyUI's marker and not verified against a file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.archs._diffusers_video import ClipVae, make_video
from vaestudio.core.errors import VaeStudioError
from vaestudio.core.registry import PreparedVae, find_prefix
from vaestudio.core.weights import WeightFile

_ORIGINAL = "decoder.unpatcher3d.wavelets"
_DIFFUSERS = "decoder.conv_in.conv_s.weight"
_SIGMA_DATA = 0.5  # EDMEulerScheduler's default sigma_data
_RESOLUTION = 1024  # the published config's; attention_resolutions are read against it
# diffusers' scripts/convert_cosmos_to_diffusers.py VAE_KEYS_RENAME_DICT, applied in order (chained str.replace)
RENAME = (
    ("down.0", "down_blocks.0"), ("down.1", "down_blocks.1"), ("down.2", "down_blocks.2"), ("up.0", "up_blocks.2"),
    ("up.1", "up_blocks.1"), ("up.2", "up_blocks.0"), (".block.", ".resnets."), ("downsample", "downsamplers.0"),
    ("upsample", "upsamplers.0"), ("mid.block_1", "mid_block.resnets.0"), ("mid.attn_1.0", "mid_block.attentions.0"),
    ("mid.attn_1.1", "mid_block.temp_attentions.0"), ("mid.block_2", "mid_block.resnets.1"), (".q.conv3d", ".to_q"),
    (".k.conv3d", ".to_k"), (".v.conv3d", ".to_v"), (".proj_out.conv3d", ".to_out.0"), (".0.conv3d", ".conv_s"),
    (".1.conv3d", ".conv_t"), ("conv1.conv3d", "conv1"), ("conv2.conv3d", "conv2"), ("conv3.conv3d", "conv3"),
    ("nin_shortcut.conv3d", "conv_shortcut"), ("quant_conv.conv3d", "quant_conv"),
    ("post_quant_conv.conv3d", "post_quant_conv"),
)
_DROPPED = ("wavelets", "_arange", "patch_size_buffer")  # constants the diffusers model makes itself


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in t.items():
        if any(d in k for d in _DROPPED):
            continue
        for old, new in RENAME:
            k = k.replace(old, new)
        out[k] = v
    return out


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLCosmos config of diffusers-layout tensors (KeyError: blocks are missing)."""
    inner = int(t["encoder.conv_in.conv_s.weight"].shape[1])
    patch = round((inner / 3) ** (1 / 3))
    if 3 * patch**3 != inner:
        raise ValueError("the encoder input is not a 3D wavelet patch of 3 channels")
    n = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    enc = [int(t["encoder.conv_in.conv_s.weight"].shape[0])]
    enc += [int(t[f"encoder.down_blocks.{i}.resnets.0.conv1.conv_s.weight"].shape[0]) for i in range(n)]
    dec = [int(t["decoder.conv_in.conv_s.weight"].shape[0])]
    dec += [int(t[f"decoder.up_blocks.{i}.resnets.0.conv1.conv_s.weight"].shape[0]) for i in range(n)]
    spatial = sum(f"encoder.down_blocks.{i}.downsamplers.0.conv1.weight" in t for i in range(n))
    temporal = sum(f"encoder.down_blocks.{i}.downsamplers.0.conv2.weight" in t for i in range(n))
    base = _RESOLUTION // patch
    attention = [base >> i for i in range(n) if f"encoder.down_blocks.{i}.attentions.0.to_q.weight" in t]
    return {
        "in_channels": 3, "out_channels": int(t["decoder.conv_out.conv_s.weight"].shape[0]) // patch**3,
        "latent_channels": int(t["decoder.conv_in.conv_s.weight"].shape[1]),
        "encoder_block_out_channels": enc, "decode_block_out_channels": dec[::-1],
        "num_layers": count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."), "patch_size": patch,
        "attention_resolutions": attention or [0], "resolution": _RESOLUTION,
        "spatial_compression_ratio": patch * 2**spatial, "temporal_compression_ratio": patch * 2**temporal,
    }


class CosmosVae(ClipVae):
    architecture = "cosmos"
    cancel_blocks = ("CosmosResnetBlock3d",)
    # torch's CPU avg_pool3d (its downsamplers' pooled shortcut) has no bf16 kernel: NotImplementedError
    cpu_fp32 = {"encode": "torch has no bf16 avg_pool3d on the CPU (the encoder's downsamplers use it)"}

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        c, cfg = int(info.latent_channels), model.config
        if cfg.latents_mean is None or cfg.latents_std is None:
            mean, std = torch.zeros(c, 1), torch.ones(c, 1)
        else:
            mean = torch.tensor(list(cfg.latents_mean), dtype=torch.float32).view(c, -1)
            std = torch.tensor(list(cfg.latents_std), dtype=torch.float32).view(c, -1)
        self._frame_mean, self._frame_factor = mean, _SIGMA_DATA / std  # (C, F): per channel and latent frame

    def stats(self):  # an image: frame 0's statistics (overridden per frame for clips below)
        c = int(self.info.latent_channels)
        cfg = self.model.config
        if cfg.latents_mean is None or cfg.latents_std is None:
            return torch.zeros(c), torch.ones(c), _SIGMA_DATA
        return (torch.tensor(list(cfg.latents_mean)).view(c, -1)[:, 0], torch.tensor(list(cfg.latents_std)).view(c, -1)[:, 0],
                _SIGMA_DATA)

    def _frames(self, t: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        have = self._frame_mean.shape[1]
        if have > 1 and t > have:
            raise VaeStudioError(f"Cosmos' latent statistics cover {have} latent frames, this clip has {t}; use "
                                 f"--frames {1 + (have - 1) * self.info.temporal_downscale} or fewer")
        idx = torch.arange(t) if have > 1 else torch.zeros(t, dtype=torch.long)
        return (self._frame_mean[:, idx, None, None].to(like.device, like.dtype),
                self._frame_factor[:, idx, None, None].to(like.device, like.dtype))

    def clip_to_model(self, raw: torch.Tensor) -> torch.Tensor:
        mean, factor = self._frames(int(raw.shape[1]), raw)
        return (raw - mean) * factor

    def clip_from_model(self, latent: torch.Tensor) -> torch.Tensor:
        mean, factor = self._frames(int(latent.shape[1]), latent)
        return latent / factor + mean


class CosmosArchitecture(DiffusersArchitecture):
    name = "cosmos"
    label = "Cosmos 1.0 video tokenizer CV8x8x8 (AutoencoderKLCosmos)"
    order = 54
    config_classes = ("AutoencoderKLCosmos",)
    families = ("cosmos",)
    sources = (
        ("single file", "the original Cosmos tokenizer keys (decoder.unpatcher3d.wavelets, as ComfyUI recognises them), "
                        "or diffusers keys (the vae/ folder's weights on their own); .safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLCosmos) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. nvidia/Cosmos-1.0-Diffusion-7B-Text2World (vae/), through the standard cache"),
    )
    diffusers_class = "AutoencoderKLCosmos"
    vae_class = CosmosVae
    layouts = (Layout("original", _ORIGINAL, (), original_to_diffusers), Layout("diffusers", _DIFFUSERS))
    parts = ("encoder", "decoder", "quant_conv", "post_quant_conv")
    short = "Cosmos VAE"
    shipped = "cosmos-1.0"
    guessed = ("resolution", "attention_resolutions")
    real_buffers = True  # the wavelet patcher's constant, non-persistent buffers
    space_notes = ("model space: (z - latents_mean) * sigma_data / latents_std per channel and latent frame, "
                   "sigma_data 0.5, as CosmosVideoToWorldPipeline",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return self.find_layout(wf.tensors) is not None and find_prefix(wf.tensors, "encoder.conv_in.conv_s.weight") is not None \
            or find_prefix(wf.tensors, _ORIGINAL) is not None

    def downscale_of(self, cfg: dict) -> int:
        return int(cfg["spatial_compression_ratio"])

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        cfg = prepared.config
        mean = cfg.get("latents_mean")
        if mean:
            frames = len(mean) // int(cfg["latent_channels"])
            prepared.info.notes.append(f"latent statistics for {frames} latent frames (clips of at most "
                                       f"{1 + (frames - 1) * int(cfg['temporal_compression_ratio'])} frames)")
        return make_video(prepared, int(cfg["temporal_compression_ratio"]), "causal, as AutoencoderKLCosmos",
                          "clips run whole, as one chunk and untiled (diffusers' AutoencoderKLCosmos has no temporal or "
                          "spatial tiles: enable_tiling is accepted and unused), so memory grows with the clip's length "
                          "and frame size")


ARCHITECTURE = CosmosArchitecture()
