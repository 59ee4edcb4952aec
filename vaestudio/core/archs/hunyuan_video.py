"""HunyuanVideo's VAE: diffusers' ``AutoencoderKLHunyuanVideo`` (16 latent channels at 1/8, 4x in time).

A causal 3D KL autoencoder whose middle blocks attend causally over all frames, so a clip is not
split into causal chunks with a cache: diffusers encodes a clip of up to 16 frames whole and a longer
one in temporal tiles of 17 frames every 12 (each tile's first latent frame dropped after the first
tile, one latent frame blended into the next), and decodes tiles of 5 latent frames every 3 (4 frames
blended). vaestudio runs the same tiles one at a time with diffusers' own ``blend_t`` and hands out
each tile's part as soon as it is final (``_diffusers_video.TemporalTiles``, which LTX's VAEs share), so a clip equals diffusers' ``encode``/``decode`` with its
default frame-wise setting, memory stays bounded by the tile, and the window gets frames tile by tile.

The model space is what HunyuanVideoPipeline gives its transformer: ``z * scaling_factor`` (0.476986,
as ComfyUI's ``latent_formats.HunyuanVideo``). Sources: a diffusers folder (config
``AutoencoderKLHunyuanVideo``, or a pipeline folder with ``vae/``), a Hugging Face id
(``hunyuanvideo-community/HunyuanVideo``), and the single file: Tencent's original VAE and ComfyUI's
repackaged ``hunyuan_video_vae_bf16.safetensors`` hold diffusers' key names (diffusers' conversion
script renames nothing; ComfyUI converts such a file at load time), recognised by a 5-D
``decoder.conv_in.conv.weight`` with 16 latent channels and GroupNorm resnets. Large frames (or running
out of memory) tile each temporal tile spatially as images are tiled, blended linearly (diffusers' own
``tiled_encode`` blends differently).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.archs._diffusers_video import TemporalTiles
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import PreparedVae, find_prefix
from vaestudio.core.tiling import clip_tiled
from vaestudio.core.weights import WeightFile

_ANCHOR = "decoder.conv_in.conv.weight"
_MARKS = ("decoder.mid_block.resnets.0.norm1.weight", "encoder.down_blocks.0.resnets.0.conv1.conv.weight")
_PARTS = ("encoder", "decoder", "quant_conv", "post_quant_conv")
_LATENT = 16


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLHunyuanVideo config of diffusers-layout tensors (KeyError: blocks are missing). The
    temporal compression and the group norm size do not show in shapes: config.json or the shipped config."""
    levels = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    if levels == 0 or count_index(t, r"^decoder\.up_blocks\.(\d+)\.") != levels:
        raise KeyError("down_blocks/up_blocks")
    latent = int(t[_ANCHOR].shape[1])
    if int(t["encoder.conv_out.conv.weight"].shape[0]) != 2 * latent:
        raise ValueError("not a KL autoencoder")
    spatial = sum(f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.weight" in t for i in range(levels))
    return {
        "in_channels": int(t["encoder.conv_in.conv.weight"].shape[1]),
        "out_channels": int(t["decoder.conv_out.conv.weight"].shape[0]),
        "latent_channels": latent,
        "down_block_types": ["HunyuanVideoDownBlock3D"] * levels,
        "up_block_types": ["HunyuanVideoUpBlock3D"] * levels,
        "block_out_channels": [int(t[f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight"].shape[0])
                               for i in range(levels)],
        "layers_per_block": count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "spatial_compression_ratio": 2 ** spatial,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in t,
    }


class HunyuanVideoVae(TorchAutoencoder):
    """A HunyuanVideo VAE: clips whole or in diffusers' temporal tiles (kind video), images as one-frame clips."""

    architecture = "hunyuan-video"
    channels_last = False  # 5-D weights
    cancel_blocks = ("HunyuanVideoResnetBlockCausal3D",)

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.quant_conv(self.model.encoder(x.unsqueeze(2)))[:, :, 0]  # mean and log-variance

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(self.model.post_quant_conv(z.unsqueeze(2)))[:, :, 0]

    # -- clips --------------------------------------------------------------------------------
    clip_tiles = True  # each temporal tile tiled spatially, blended as image tiles are

    def _enc(self, x: torch.Tensor, tiles: dict | None) -> torch.Tensor:
        m = self.model
        return clip_tiled(lambda p: m.quant_conv(m.encoder(p)), x, tiles)

    def _dec(self, z: torch.Tensor, tiles: dict | None) -> torch.Tensor:
        m = self.model
        return clip_tiled(lambda p: m.decoder(m.post_quant_conv(p)), z, tiles)

    def _clip_chunks(self, frames: int, height: int, width: int) -> list[tuple[int, int]]:
        return TemporalTiles.of(self.model).chunks(frames)

    def _iter_encode_clip_tensor(self, x: torch.Tensor, tiles: dict | None = None):
        def mean(p: torch.Tensor) -> torch.Tensor:
            h = self._enc(p, tiles)
            return h[:, : h.shape[1] // 2]

        yield from TemporalTiles.of(self.model).iter_encode(mean, x, self.model.blend_t)

    def _iter_decode_clip_tensor(self, z: torch.Tensor, tiles: dict | None = None):
        yield from TemporalTiles.of(self.model).iter_decode(lambda p: self._dec(p, tiles), z, self.model.blend_t)


class HunyuanVideoArchitecture(DiffusersArchitecture):
    name = "hunyuan-video"
    label = "HunyuanVideo VAE (AutoencoderKLHunyuanVideo)"
    order = 47  # after CogVideoX and HunyuanVideo 1.5; before the LTX VAEs (49, 50), whose broad diffusers marker its keys share
    config_classes = ("AutoencoderKLHunyuanVideo",)
    families = ("hunyuan-video",)
    sources = (
        ("single file", "Tencent's HunyuanVideo VAE / ComfyUI's hunyuan_video_vae_bf16 (diffusers key names, 5-D "
                        "decoder.conv_in.conv with 16 latent channels), .safetensors or .pt"),
        ("diffusers folder", "config.json (AutoencoderKLHunyuanVideo) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. hunyuanvideo-community/HunyuanVideo, through the standard cache"),
    )
    diffusers_class = "AutoencoderKLHunyuanVideo"
    vae_class = HunyuanVideoVae
    layouts = (Layout("diffusers", _ANCHOR, ("encoder.down_blocks.",)),)
    parts = _PARTS
    short = "HunyuanVideo VAE"
    shipped = "hunyuan-video"
    model_scaling = ("scaling_factor",)
    space_notes = ("model space: z * scaling_factor, as HunyuanVideoPipeline does",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        prefix = find_prefix(wf.tensors, _ANCHOR)
        if prefix is None or not all(prefix + m in wf.tensors for m in _MARKS):
            return False
        conv_in = wf.tensors[prefix + _ANCHOR]
        return conv_in.ndim == 5 and conv_in.shape[1] == _LATENT

    def downscale_of(self, cfg: dict) -> int:
        return int(cfg["spatial_compression_ratio"])

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        td = int(prepared.config.get("temporal_compression_ratio", 4))
        prepared.info.kind, prepared.info.temporal_downscale = "video", td
        prepared.info.notes.append(f"clips: 1 + {td}k frames, whole up to 16 frames, longer ones in diffusers' temporal "
                                   "tiles (17 frames every 12, blended), as AutoencoderKLHunyuanVideo's frame-wise "
                                   "encode and decode")
        return prepared



ARCHITECTURE = HunyuanVideoArchitecture()
