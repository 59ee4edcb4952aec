"""CogVideoX's VAE: diffusers' ``AutoencoderKLCogVideoX`` (16 latent channels at 1/8, 4x in time).

A causal 3D KL autoencoder whose decoder normalises with the latent (SpatialNorm3D: ``norm_layer``,
``conv_y``, ``conv_b``). Diffusers encodes a clip in batches of 8 frames (the first batch takes the
odd frame too: 9, then 8 each) and decodes it in batches of 2 latent frames (the first takes 3),
carrying each causal convolution's last frames from batch to batch (``conv_cache``). vaestudio makes
the same calls batch by batch, with a cache of the call's own, so a clip is encoded and decoded with
memory bounded by the batch and the window gets frames as each batch is decoded.

Frames: diffusers' temporal up-sampling keeps the first frame apart only when a batch has an odd
number of latent frames, so only an odd count of latent frames decodes back to as many frames as were
encoded: clips take 1 + 8k frames (CogVideoX's 49 and CogVideoX 1.5's 81 are such counts).

The model space is what the CogVideoX pipelines give their transformer: ``z * scaling_factor``
(1.15258426 for CogVideoX-2b; 0.7 for CogVideoX-5b and 1.5, from their configs and ComfyUI's
``latent_formats.CogVideoX`` / ``CogVideoX1_5``). The pipelines' I2V image latents of CogVideoX 1.5
(``invert_scale_latents``) are divided instead; that conditioning path is not the model space.

Sources: a diffusers folder (config ``AutoencoderKLCogVideoX``, or a pipeline folder with ``vae/``), a
Hugging Face id (``THUDM/CogVideoX-2b``, ``THUDM/CogVideoX-5b``, ``THUDM/CogVideoX1.5-5B``), a single file
with diffusers keys (ComfyUI's own loader reads that layout: ``decoder.conv_in.conv.weight`` with
``decoder.mid_block.resnets.0.norm1.norm_layer.weight``), and the original SAT file (``3d-vae.pt``:
``encoder.down.N.block.M``, ``decoder.up.N`` numbered from the top), converted by the rules of diffusers'
``scripts/convert_cogvideox_to_diffusers.py``. Large frames (or running out of memory) tile a clip
spatially: each tile a causal stream with a cache of its own, blended per batch as image tiles are
(diffusers' own ``tiled_encode`` blends differently).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._common import count_index
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import PreparedVae, find_prefix
from vaestudio.core.tiling import run_clip_tiled
from vaestudio.core.vae import ClipEncoding
from vaestudio.core.weights import WeightFile

_ANCHOR = "decoder.conv_in.conv.weight"
_MARK = "decoder.mid_block.resnets.0.norm1.norm_layer.weight"  # ComfyUI's test for a CogVideoX VAE
_ORIGINAL_MARK = "decoder.mid.block_1.norm1.norm_layer.weight"
_PARTS = ("encoder", "decoder", "quant_conv", "post_quant_conv")
_RENAME = (("block.", "resnets."), ("downsample.", "downsamplers.0."), ("upsample.", "upsamplers.0."),
           ("nin_shortcut.", "conv_shortcut."))
_MID = (("mid.block_1.", "mid_block.resnets.0."), ("mid.block_2.", "mid_block.resnets.1."))
SAMPLE_BATCH, LATENT_BATCH = 8, 2  # diffusers' num_sample_frames_batch_size, num_latent_frames_batch_size


def _swap(text: str, table) -> str:
    for old, new in table:
        text = text.replace(old, new)
    return text


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original (SAT) CogVideoX VAE keys to diffusers' (the rules of convert_cogvideox_to_diffusers.py)."""
    levels = count_index(t, r"^decoder\.up\.(\d+)\.")
    out = {}
    for k, v in t.items():
        new = _swap(k, _MID)
        if m := re.match(r"^encoder\.down\.(\d+)\.(.*)$", new):
            new = f"encoder.down_blocks.{m.group(1)}.{_swap(m.group(2), _RENAME)}"
        elif m := re.match(r"^decoder\.up\.(\d+)\.(.*)$", new):
            new = f"decoder.up_blocks.{levels - 1 - int(m.group(1))}.{_swap(m.group(2), _RENAME)}"
        else:
            new = new.replace("nin_shortcut.", "conv_shortcut.")
        out[new] = v
    return out


def diffusers_to_original(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``original_to_diffusers`` (for tests)."""
    levels = count_index(t, r"^decoder\.up_blocks\.(\d+)\.")
    back = tuple((new, old) for old, new in _RENAME)
    out = {}
    for k, v in t.items():
        new = _swap(k, tuple((b, a) for a, b in _MID))
        if m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.*)$", new):
            new = f"encoder.down.{m.group(1)}.{_swap(m.group(2), back)}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.(.*)$", new):
            new = f"decoder.up.{levels - 1 - int(m.group(1))}.{_swap(m.group(2), back)}"
        else:
            new = new.replace("conv_shortcut.", "nin_shortcut.")
        out[new] = v
    return out


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    """The AutoencoderKLCogVideoX config of diffusers-layout tensors (KeyError: blocks are missing). The
    temporal compression, group norm size and epsilon do not show in shapes: config.json or the shipped config."""
    levels = count_index(t, r"^encoder\.down_blocks\.(\d+)\.")
    if levels == 0 or count_index(t, r"^decoder\.up_blocks\.(\d+)\.") != levels:
        raise KeyError("down_blocks/up_blocks")
    layers = count_index(t, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\.")
    latent = int(t[_ANCHOR].shape[1])
    if int(t["encoder.conv_out.conv.weight"].shape[0]) != 2 * latent:
        raise ValueError("not a KL autoencoder")
    return {
        "in_channels": int(t["encoder.conv_in.conv.weight"].shape[1]),
        "out_channels": int(t["decoder.conv_out.conv.weight"].shape[0]),
        "down_block_types": ["CogVideoXDownBlock3D"] * levels,
        "up_block_types": ["CogVideoXUpBlock3D"] * levels,
        "block_out_channels": [int(t[f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight"].shape[0])
                               for i in range(levels)],
        "latent_channels": latent,
        "layers_per_block": layers,
        "use_quant_conv": "quant_conv.weight" in t,
        "use_post_quant_conv": "post_quant_conv.weight" in t,
    }


def batches(n: int, size: int) -> list[tuple[int, int]]:
    """The ranges diffusers' ``_encode``/``_decode`` run together: ``size`` at a time, the first taking the rest."""
    rest = n % size
    return [(size * i + (0 if i == 0 else rest), min(n, size * (i + 1) + rest)) for i in range(max(n // size, 1))]


class CogVideoXVae(TorchAutoencoder):
    """A CogVideoX VAE: clips batch by batch with a causal cache (kind video), images as one-frame clips."""

    architecture = "cogvideox"
    channels_last = False  # 5-D weights
    cancel_blocks = ("CogVideoXResnetBlock3D",)

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.model.encoder(x.unsqueeze(2))
        if self.model.quant_conv is not None:
            h = self.model.quant_conv(h)
        return h[:, :, 0]  # mean and log-variance, as encode's posterior

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        z = z.unsqueeze(2)
        if self.model.post_quant_conv is not None:
            z = self.model.post_quant_conv(z)
        return self.model.decoder(z)[0][:, :, 0]

    # -- clips --------------------------------------------------------------------------------
    def frames_valid(self, n: int) -> int:
        step = 2 * self.info.temporal_downscale
        return max(0, int(n)) if n < 1 else 1 + (int(n) - 1) // step * step

    def encode_clip(self, frames, **kw) -> ClipEncoding:
        enc = super().encode_clip(frames, **kw)
        td = self.info.temporal_downscale
        enc.notes[:] = [n.replace(f"(this VAE takes 1 + {td}k frames)", f"(this VAE takes 1 + {2 * td}k frames: "
                                  "an odd number of latent frames decodes to as many frames)") for n in enc.notes]
        return enc

    def _clip_chunks(self, frames: int, height: int, width: int) -> list[tuple[int, int]]:
        return batches(frames, SAMPLE_BATCH)

    clip_tiles = True  # spatial tiles, each a causal stream with a conv_cache of its own, blended per batch

    def _encode_step(self, stream: dict, part: torch.Tensor) -> torch.Tensor:
        h, stream["cache"] = self.model.encoder(part, conv_cache=stream["cache"])
        if self.model.quant_conv is not None:
            h = self.model.quant_conv(h)
        return h[:, : h.shape[1] // 2]  # the posterior's mean

    def _decode_step(self, stream: dict, part: torch.Tensor) -> torch.Tensor:
        if self.model.post_quant_conv is not None:
            part = self.model.post_quant_conv(part)
        out, stream["cache"] = self.model.decoder(part, conv_cache=stream["cache"])
        return out

    def _iter_encode_clip_tensor(self, x: torch.Tensor, tiles: dict | None = None):
        streams = [_stream()]
        for s, e in batches(x.shape[2], SAMPLE_BATCH):
            part = x[:, :, s:e]
            yield (s, e), (self._encode_step(streams[0], part) if tiles is None
                           else run_clip_tiled(streams, _stream, self._encode_step, part, tiles))

    def _iter_decode_clip_tensor(self, z: torch.Tensor, tiles: dict | None = None):
        streams = [_stream()]
        for s, e in batches(z.shape[2], LATENT_BATCH):
            part = z[:, :, s:e]
            yield (self._decode_step(streams[0], part) if tiles is None
                   else run_clip_tiled(streams, _stream, self._decode_step, part, tiles))


def _stream() -> dict:
    """One causal pass (of the clip, or of one spatial tile): its conv_cache."""
    return {"cache": None}


class CogVideoXArchitecture(DiffusersArchitecture):
    name = "cogvideox"
    label = "CogVideoX VAE (AutoencoderKLCogVideoX)"
    order = 45  # specific markers: before the LTX VAEs (49, 50), whose broad diffusers marker its keys share
    config_classes = ("AutoencoderKLCogVideoX",)
    families = ("cogvideox", "cogvideox1.5")
    sources = (
        ("single file", "the vae/ folder's weights on their own (diffusers keys, as ComfyUI loads them: "
                        "decoder.mid_block.resnets.0.norm1.norm_layer), or the original SAT 3d-vae.pt "
                        "(encoder.down.N.block.M); .safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLCogVideoX) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. THUDM/CogVideoX-2b, THUDM/CogVideoX-5b, THUDM/CogVideoX1.5-5B"),
    )
    diffusers_class = "AutoencoderKLCogVideoX"
    vae_class = CogVideoXVae
    layouts = (Layout("diffusers", _ANCHOR, ("decoder.up_blocks.",)),
               Layout("original", _ANCHOR, ("decoder.up.",), original_to_diffusers))
    parts = _PARTS
    short = "CogVideoX VAE"
    shipped = "cogvideox"
    model_scaling = ("scaling_factor",)
    upcast = True  # the published configs say force_upcast
    space_notes = ("model space: z * scaling_factor, as the CogVideoX pipelines do",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        prefix = find_prefix(wf.tensors, _ANCHOR)
        return prefix is not None and (prefix + _MARK in wf.tensors or prefix + _ORIGINAL_MARK in wf.tensors)

    def downscale_of(self, cfg: dict) -> int:
        return 2 ** (len(cfg["block_out_channels"]) - 1)

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        td = int(prepared.config.get("temporal_compression_ratio", 4))
        prepared.info.kind, prepared.info.temporal_downscale = "video", td
        prepared.info.notes.append(f"clips: 1 + {2 * td}k frames, encoded {SAMPLE_BATCH} frames at a time (the first "
                                   f"batch 9) and decoded {LATENT_BATCH} latent frames at a time (the first 3) with "
                                   "the causal cache, as diffusers' AutoencoderKLCogVideoX")
        if prepared.config.get("invert_scale_latents"):
            prepared.info.notes.append("invert_scale_latents: the I2V pipeline divides its image latents by the "
                                       "scaling factor (the denoised latents are still z * scaling_factor)")
        return prepared


ARCHITECTURE = CogVideoXArchitecture()
