"""LTX-2's video VAE: diffusers' ``AutoencoderKLLTX2Video`` (128 latent channels at 1/32, 1/8 in time;
LTX-2 and LTX-2.3, whose decoder has a fourth up block).

LTX-Video 0.9.5's block layout (the frames patchified 4x4, a causal encoder) with LTX-2's own blocks and
padding. The model space is ``LTX2Pipeline._normalize_latents``: per channel ``(z - latents_mean) *
scaling_factor / latents_std`` with the VAE's own statistics (``per_channel_statistics`` in the original
file). A timestep-conditioned decoder is decoded at the pipeline's default ``decode_timestep`` 0.

Sources: a diffusers folder (config ``AutoencoderKLLTX2Video``, or a pipeline folder with ``vae/``), a
Hugging Face id (``Lightricks/LTX-2``), and the single file: the original keys (ComfyUI's LTX marker
``decoder.up_blocks.0.res_blocks.0.conv1.conv.weight``; ``vae.`` inside a full LTX-2 checkpoint) through
diffusers' ``convert_ltx2_vae_to_diffusers`` (LTX-2.3's fourth up block, ``up_blocks.7``/``8``, renamed as
diffusers' conversion script does: the loader's table stops at LTX-2.0's), or diffusers keys. LTX-2 and
LTX-Video 0.9.5 files have the same keys and shapes: the name decides, else the decoder's timestep
conditioning (``_ltx_layout.is_ltx2``), and the result says how. The config is read from shapes; what they
cannot show comes from the shipped config (LTX-2.0 or 2.3 as the conversion script writes them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs._diffusers import DiffusersArchitecture, Found, Layout
from vaestudio.core.archs._diffusers_video import make_video
from vaestudio.core.archs._ltx_layout import (
    DIFFUSERS_MARK,
    ORIGINAL_MARK,
    TILED,
    LtxClipVae,
    factors,
    infer_ltx,
    is_ltx2,
    looks_ltx,
)
from vaestudio.core.families import FAMILIES, FamilyGuess
from vaestudio.core.registry import PreparedVae
from vaestudio.core.weights import WeightFile

_ORIGINAL, _DIFFUSERS = ORIGINAL_MARK, DIFFUSERS_MARK
_PARTS = ("encoder", "decoder", "latents_mean", "latents_std", "per_channel_statistics")
_FOURTH = (("decoder.up_blocks.7.", "decoder.up_blocks.3.upsamplers.0."), ("decoder.up_blocks.8.", "decoder.up_blocks.3."))


def original_to_diffusers(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original LTX-2 / LTX-2.3 VAE keys to diffusers' (diffusers' single-file converter, then LTX-2.3's extra block)."""
    from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers

    out = {}
    for k, v in convert_ltx2_vae_to_diffusers(dict(t)).items():
        for old, new in _FOURTH:
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def infer_config(t: dict[str, torch.Tensor], label: str) -> dict:
    if "latents_mean" not in t or not any(k.startswith("encoder.down_blocks.") for k in t):
        raise KeyError("latents_mean / encoder.down_blocks")
    return infer_ltx(t, "LTX2VideoDownBlock3D")


class Ltx2VideoVae(LtxClipVae):
    architecture = "ltx2-video"
    cancel_blocks = ("LTX2VideoResnetBlock3d",)


class Ltx2VideoArchitecture(DiffusersArchitecture):
    name = "ltx2-video"
    label = "LTX-2 video VAE (AutoencoderKLLTX2Video)"
    order = 49  # before LTX-Video (50), whose marker keys its original files share
    config_classes = ("AutoencoderKLLTX2Video",)
    families = ("ltx2", "ltx2.3")
    sources = (
        ("single file", "the original LTX-2 / LTX-2.3 VAE keys (decoder.up_blocks.0.res_blocks.0.conv1.conv.weight; vae.* "
                        "inside a full LTX-2 checkpoint), or diffusers keys; .safetensors or .pth. Told from LTX-Video "
                        "0.9.5 (the same keys) by the name, else by the decoder's timestep conditioning"),
        ("diffusers folder", "config.json (AutoencoderKLLTX2Video) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. Lightricks/LTX-2 (vae/), through the standard cache"),
    )
    diffusers_class = "AutoencoderKLLTX2Video"
    vae_class = Ltx2VideoVae
    layouts = (Layout("original", _ORIGINAL, (), original_to_diffusers), Layout("diffusers", _DIFFUSERS))
    parts = _PARTS
    short = "LTX-2 VAE"
    guessed = ("resnet_norm_eps", "encoder_causal", "decoder_causal", "upsample_residual", "patch_size_t",
               "encoder_spatial_padding_mode", "decoder_spatial_padding_mode")
    space_notes = ("model space: per channel (z - latents_mean) * scaling_factor / latents_std (the VAE's own "
                   "statistics), as LTX2Pipeline's _normalize_latents",)
    infer_config = staticmethod(infer_config)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return looks_ltx(wf.tensors) and is_ltx2(wf.tensors, path.name if path else "")[0]

    def shipped_for(self, inferred: dict) -> str:
        return "ltx2-2.3" if len(inferred["decoder_block_out_channels"]) == 4 else "ltx2-2.0"

    def downscale_of(self, cfg: dict) -> int:
        return factors(cfg)[0]

    def decide_family(self, found: Found) -> FamilyGuess:
        super().decide_family(found)  # refuses a latent no LTX-2 family has
        four = len(found.merged["decoder_block_out_channels"]) == 4
        name = found.name.lower()
        if "2.3" in name or "2_3" in name:
            return FamilyGuess(FAMILIES["ltx2.3"], False, "the name says LTX-2.3")
        return FamilyGuess(FAMILIES["ltx2.3" if four else "ltx2"], False,
                           f"a decoder of {4 if four else 3} up blocks (LTX-2.{3 if four else 0}'s, per diffusers' "
                           "conversion configs)")

    def prepare_weights(self, wf: WeightFile, label: str, **kw) -> PreparedVae:
        prepared = super().prepare_weights(wf, label, **kw)
        if prepared.extra.get("config_class") is None:
            prepared.info.notes.append(f"LTX-2, not LTX-Video 0.9.5: {is_ltx2(wf.tensors, kw.get('name', ''))[1]}")
        return make_video(prepared, factors(prepared.config)[1], "causal encoder, as AutoencoderKLLTX2Video", TILED)


ARCHITECTURE = Ltx2VideoArchitecture()
