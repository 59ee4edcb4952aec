"""LTX-Video 0.9.x's VAE: diffusers' ``AutoencoderKLLTXVideo`` (128 latent channels at 1/32, 1/8 in time).

A causal 3D VAE (encoder causal, decoder not) with the frames patchified 4x4 first. 0.9.1 and later
decoders are timestep-conditioned (and 0.9.1's inject noise); they are decoded as ``LTXPipeline``
decodes with its defaults: ``decode_timestep`` 0 and no decode noise; 0.9.1's decoder also injects
noise from torch's global generator, seeded 0 for each decode here (diffusers' decode after
``torch.manual_seed(0)``), so a latent always decodes the same. The model space is
the pipeline's ``_normalize_latents``: per channel ``(z - latents_mean) * scaling_factor / latents_std``,
the statistics being the model's own buffers (``per_channel_statistics`` in the original file).

Sources: a diffusers folder (config ``AutoencoderKLLTXVideo``, or a pipeline folder with ``vae/``), a
Hugging Face id (``Lightricks/LTX-Video``, ``diffusers/LTX-Video-0.9.0``...), and the single file: the
original keys (``decoder.up_blocks.0.res_blocks.0.conv1.conv.weight``, ComfyUI's marker; ``vae.`` inside
a full LTX checkpoint, as ComfyUI's and diffusers' single-file loaders read it), converted with diffusers'
``convert_ltx_vae_checkpoint_to_diffusers``, or diffusers keys. The config is read from shapes
(``_ltx_layout``); what shapes cannot show comes from the shipped config of the version they point to
(0.9.0, 0.9.1, 0.9.5 = 0.9.7: diffusers' conversion script's configs). That converter tells 0.9.5 from
0.9.0 by the published encoder width (2048 output channels), so only published-size 0.9.5 files convert.
LTX-2's files have the same keys and shapes as 0.9.5's: ``_ltx_layout.is_ltx2`` (the name, else the
decoder's timestep conditioning) decides which of the two architectures claims a file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs._diffusers import DiffusersArchitecture, Layout
from vaestudio.core.archs._diffusers_video import make_video
from vaestudio.core.archs._ltx_layout import (
    DIFFUSERS_MARK,
    OLD_BLOCK,
    ORIGINAL_MARK,
    TILED,
    LtxClipVae,
    factors,
    infer_ltx,
    is_ltx2,
    looks_ltx,
)
from vaestudio.core.registry import PreparedVae
from vaestudio.core.weights import WeightFile

_ORIGINAL, _DIFFUSERS = ORIGINAL_MARK, DIFFUSERS_MARK
_PARTS = ("encoder", "decoder", "latents_mean", "latents_std", "per_channel_statistics")


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original LTX-Video VAE keys to diffusers' (diffusers' single-file converter, which reads them under ``vae.``)."""
    from diffusers.loaders.single_file_utils import convert_ltx_vae_checkpoint_to_diffusers

    return convert_ltx_vae_checkpoint_to_diffusers({f"vae.{k}": v for k, v in t.items()})


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    if "decoder.up_blocks.0.resnets.0.conv1.conv.weight" not in t or "latents_mean" not in t:
        raise KeyError("decoder.up_blocks / latents_mean")
    return infer_ltx(t, "LTXVideo095DownBlock3D")


class LtxVideoVae(LtxClipVae):
    architecture = "ltx-video"
    cancel_blocks = ("LTXVideoResnetBlock3d",)


class LtxVideoArchitecture(DiffusersArchitecture):
    name = "ltx-video"
    label = "LTX-Video 0.9.x VAE (AutoencoderKLLTXVideo)"
    order = 50
    config_classes = ("AutoencoderKLLTXVideo",)
    families = ("ltx-video",)
    sources = (
        ("single file", "the original LTX-Video VAE keys (decoder.up_blocks.0.res_blocks.0.conv1.conv.weight; vae.* inside "
                        "a full LTX-Video checkpoint), as ComfyUI loads them, or diffusers keys; .safetensors or .pth"),
        ("diffusers folder", "config.json (AutoencoderKLLTXVideo) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. Lightricks/LTX-Video (vae/), diffusers/LTX-Video-0.9.0, through the standard cache"),
    )
    diffusers_class = "AutoencoderKLLTXVideo"
    vae_class = LtxVideoVae
    layouts = (Layout("original", _ORIGINAL, (), original_to_diffusers), Layout("diffusers", _DIFFUSERS))
    parts = _PARTS
    short = "LTX-Video VAE"
    guessed = ("resnet_norm_eps", "encoder_causal", "decoder_causal", "upsample_residual", "patch_size_t")
    space_notes = ("model space: per channel (z - latents_mean) * scaling_factor / latents_std (the VAE's own "
                   "statistics), as LTXPipeline's _normalize_latents",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return looks_ltx(wf.tensors) and not is_ltx2(wf.tensors, path.name if path else "")[0]

    def shipped_for(self, inferred: dict) -> str:
        if inferred["down_block_types"][0] != OLD_BLOCK:
            return "ltx-video-0.9.5"
        return "ltx-video-0.9.1" if inferred["timestep_conditioning"] else "ltx-video-0.9.0"

    def downscale_of(self, cfg: dict) -> int:
        return factors(cfg)[0]

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        cfg = prepared.config
        if cfg.get("timestep_conditioning"):
            prepared.info.notes.append("timestep-conditioned decoder: decoded at decode_timestep 0 without decode noise "
                                       "(LTXPipeline's defaults)")
        if any(cfg.get("decoder_inject_noise") or ()):
            prepared.info.notes.append("the decoder injects noise (0.9.1): drawn from torch's generator seeded 0 per "
                                       "decode, so the same latent decodes the same each time")
        return make_video(prepared, factors(cfg)[1], "causal encoder, as AutoencoderKLLTXVideo", TILED)


ARCHITECTURE = LtxVideoArchitecture()
