"""HunyuanVideo 1.5's VAE: diffusers' ``AutoencoderKLHunyuanVideo15`` (32 latent channels at 1/16, 4x in time).

A causal 3D KL autoencoder whose down/upsampling moves pixels (and frames) into channels, with RMS
norms and a causal attention middle block. Diffusers encodes and decodes a clip whole (it has no
frame-wise path; only spatial tiles, off by default), so vaestudio runs a clip as one chunk through the
same encoder and decoder: equal to diffusers' ``encode``/``decode`` by construction, memory growing with
the clip's length (a note says so). The model space is what HunyuanVideo15Pipeline gives its
transformer: ``z * scaling_factor`` (1.03682, as ComfyUI's ``latent_formats.HunyuanVideo15``).

Sources: a diffusers folder (config ``AutoencoderKLHunyuanVideo15``, or a pipeline folder with ``vae/``),
a Hugging Face id (``hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v``), a single file with
diffusers keys, and the original / ComfyUI file (tencent/HunyuanVideo-1.5's vae, ComfyUI's
``hunyuanvideo15_vae``: LDM names ``encoder.down.N.block.M``, ``mid.attn_1.q``, ``downsample.conv.conv``;
ComfyUI recognises it by a 5-D ``decoder.conv_in.conv.weight`` with 32 latent channels, as here),
converted by the renames of diffusers' ``scripts/convert_hunyuan_video1_5_to_diffusers.py``. Large
frames (or running out of memory) tile a clip spatially as images are tiled (each tile the whole clip,
blended linearly; diffusers' own ``tiled_encode`` blends differently).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import PreparedVae, find_prefix
from vaestudio.core.tiling import clip_tiled
from vaestudio.core.weights import WeightFile

_ANCHOR = "decoder.conv_in.conv.weight"
_MARKS = ("decoder.mid_block.resnets.0.norm1.gamma", "decoder.mid.block_1.norm1.gamma")
_LATENT = 32
_ATTN = {"to_q": "q", "to_k": "k", "to_v": "v"}  # the original's attention names (norm and proj_out are the same)


def _to_original(k: str) -> str:
    if m := re.match(r"^(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(?:resnets\.(\d+)|(?:down|up)samplers\.0)\.(.*)$", k):
        half, kind, i, j, rest = m.groups()
        part = f"block.{j}" if j is not None else f"{kind}sample"
        return f"{half}.{kind}.{i}.{part}.{rest.replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.match(r"^(encoder|decoder)\.mid_block\.(?:resnets\.([01])|attentions\.0)\.(.*)$", k):
        half, j, rest = m.groups()
        if j is not None:
            return f"{half}.mid.block_{int(j) + 1}.{rest}"
        head, tail = rest.split(".", 1)
        return f"{half}.mid.attn_1.{_ATTN.get(head, head)}.{tail}"
    return k


def _to_diffusers(k: str) -> str:
    if m := re.match(r"^(encoder|decoder)\.(down|up)\.(\d+)\.(?:block\.(\d+)|(?:down|up)sample)\.(.*)$", k):
        half, kind, i, j, rest = m.groups()
        part = f"resnets.{j}" if j is not None else f"{kind}samplers.0"
        return f"{half}.{kind}_blocks.{i}.{part}.{rest.replace('nin_shortcut.', 'conv_shortcut.')}"
    if m := re.match(r"^(encoder|decoder)\.mid\.(?:block_([12])|attn_1)\.(.*)$", k):
        half, j, rest = m.groups()
        if j is not None:
            return f"{half}.mid_block.resnets.{int(j) - 1}.{rest}"
        head, tail = rest.split(".", 1)
        back = {v: k for k, v in _ATTN.items()}
        return f"{half}.mid_block.attentions.0.{back.get(head, head)}.{tail}"
    return k


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original (tencent/HunyuanVideo-1.5, ComfyUI) VAE keys to diffusers' AutoencoderKLHunyuanVideo15 keys."""
    return {_to_diffusers(k): v for k, v in t.items()}


def diffusers_to_original(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``original_to_diffusers`` (for tests)."""
    return {_to_original(k): v for k, v in t.items()}


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLHunyuanVideo15 config of diffusers-layout tensors (KeyError: blocks are missing). The
    temporal factor shows in the downsamplers (pixels and frames moved into channels) when the blocks match
    channels, as the published VAE does."""
    levels = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    if levels == 0 or count_index(t, r"^decoder\.up_blocks\.(\d+)\.") != levels:
        raise KeyError("down_blocks/up_blocks")
    latent = int(t[_ANCHOR].shape[1])
    if int(t["encoder.conv_out.conv.weight"].shape[0]) != 2 * latent:
        raise ValueError("not a KL autoencoder")
    widths = [int(t[f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight"].shape[0]) for i in range(levels)]
    downs = [i for i in range(levels) if f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.weight" in t]
    cfg = {
        "in_channels": int(t["encoder.conv_in.conv.weight"].shape[1]),
        "out_channels": int(t["decoder.conv_out.conv.weight"].shape[0]),
        "latent_channels": latent,
        "block_out_channels": widths,
        "layers_per_block": count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "spatial_compression_ratio": 2 ** len(downs),
    }
    ratios = [widths[i + 1] // int(t[f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.weight"].shape[0])
              for i in downs if i + 1 < levels]
    if ratios and set(ratios) <= {4, 8}:
        cfg["temporal_compression_ratio"] = 2 ** sum(r == 8 for r in ratios)
    return cfg


class HunyuanVideo15Vae(TorchAutoencoder):
    """A HunyuanVideo 1.5 VAE: a clip whole (kind video), an image as a one-frame clip."""

    architecture = "hunyuan-video-15"
    channels_last = False  # 5-D weights
    cancel_blocks = ("HunyuanVideo15ResnetBlock", "HunyuanVideo15AttnBlock")
    # measured with the published config on one 128x128 frame (CPU autocast, a shared 2-core machine at load ~10)
    cpu_fp32 = {"encode": "bf16 encode measured 2.8x slower than fp32 on the CPU (21.9 s against 8.0 s)",
                "decode": "bf16 decode measured 1.9x slower than fp32 on the CPU (33.9 s against 18.2 s)"}

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x.unsqueeze(2))[:, :, 0]  # mean and log-variance, as encode's posterior

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(z.unsqueeze(2))[:, :, 0]

    clip_tiles = True  # spatial tiles of the whole clip, blended as image tiles are (time folded into channels)

    def _iter_encode_clip_tensor(self, x: torch.Tensor, tiles: dict | None = None):
        h = clip_tiled(self.model.encoder, x, tiles)
        yield (0, x.shape[2]), h[:, : h.shape[1] // 2]  # the posterior's mean

    def _iter_decode_clip_tensor(self, z: torch.Tensor, tiles: dict | None = None):
        yield clip_tiled(self.model.decoder, z, tiles)



class HunyuanVideo15Architecture(DiffusersArchitecture):
    name = "hunyuan-video-15"
    label = "HunyuanVideo 1.5 VAE (AutoencoderKLHunyuanVideo15)"
    order = 46  # after CogVideoX, before the LTX VAEs (49, 50), whose broad diffusers marker its keys share
    config_classes = ("AutoencoderKLHunyuanVideo15",)
    families = ("hunyuan-video-15",)
    sources = (
        ("single file", "tencent/HunyuanVideo-1.5's VAE / ComfyUI's hunyuanvideo15 VAE (encoder.down.N.block.M keys, "
                        "5-D decoder.conv_in.conv with 32 latent channels), or diffusers keys, .safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLHunyuanVideo15) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v, through the standard cache"),
    )
    diffusers_class = "AutoencoderKLHunyuanVideo15"
    vae_class = HunyuanVideo15Vae
    layouts = (Layout("diffusers", _ANCHOR, ("encoder.down_blocks.",)),
               Layout("original", _ANCHOR, ("encoder.down.",), original_to_diffusers))
    short = "HunyuanVideo 1.5 VAE"
    guessed = ("temporal_compression_ratio",)  # read from the downsamplers assuming matched channels
    shipped = "hunyuan-video-1.5"
    model_scaling = ("scaling_factor",)
    space_notes = ("model space: z * scaling_factor, as HunyuanVideo15Pipeline does",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        prefix = find_prefix(wf.tensors, _ANCHOR)
        if prefix is None or not any(prefix + m in wf.tensors for m in _MARKS):
            return False
        conv_in = wf.tensors[prefix + _ANCHOR]  # ComfyUI's test: a 5-D decoder input with 32 latent channels
        return conv_in.ndim == 5 and conv_in.shape[1] == _LATENT

    def downscale_of(self, cfg: dict) -> int:
        return int(cfg["spatial_compression_ratio"])

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        td = int(prepared.config.get("temporal_compression_ratio", 4))
        prepared.info.kind, prepared.info.temporal_downscale = "video", td
        prepared.info.notes.append(f"clips: 1 + {td}k frames, run whole as diffusers' AutoencoderKLHunyuanVideo15 "
                                   "does (no frame-wise path): memory grows with the clip's length")
        return prepared


ARCHITECTURE = HunyuanVideo15Architecture()
