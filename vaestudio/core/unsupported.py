"""What a weight file that vaestudio does not read is, told by its keys: ONE table of marker keys.

Consulted when no architecture claims a file (``not_a_vae_reason``), and when the architecture that
claimed it refuses it (``other_vae``: only the rows of VAEs, so a broken VAE inside a full checkpoint
is never called its text encoder). ComfyUI's own marker keys (comfy/sd.py, comfy/model_detection.py)
where it has them, and diffusers' key names (built from its classes) where they differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Marker:
    what: str  # "a HunyuanVideo video VAE": the file "is" this
    pattern: str  # a regex searched in every key
    test: Callable[[torch.Tensor], bool] | None = None  # on a tensor whose key matches
    vae: bool = True  # a VAE of an architecture not read yet (else: not a VAE at all)


def _key(*names: str) -> str:
    """Keys that are one of ``names`` under any prefix."""
    return r"(?:^|\.)(?:" + "|".join(re.escape(n) for n in names) + r")$"


_UNREAD = ", which vaestudio does not read yet"

MARKERS: tuple[Marker, ...] = (
    # video VAEs (before the video issues)
    Marker("a MiniMax-H3 video VAE" + _UNREAD, _key("decoder.register_tokens")),
    Marker("one half of a Mochi VAE in genmo's original keys, without encoder./decoder. prefixes; vaestudio reads "
           "genmo's keys with both halves in one file (encoder.layers.*, decoder.blocks.*)",
           r"^(?:blocks\.2\.blocks\.3\.stack\.5\.weight|layers\.4\.layers\.1\.attn_block\.attn\.qkv\.weight)$"),
    Marker("a HunyuanImage 2.1 refiner VAE (3D)" + _UNREAD, _key("decoder.conv_in.weight"),
           lambda t: t.ndim == 5 and t.shape[1] == 32),
    Marker("an EasyAnimate (Magvit) video VAE" + _UNREAD, _key("encoder.down_blocks.0.convs.0.norm1.weight")),
    Marker("an Allegro video VAE" + _UNREAD, _key("encoder.temp_conv_in.weight")),
    # audio VAEs
    Marker("a Stable Audio (Oobleck) audio VAE" + _UNREAD, _key("decoder.layers.1.layers.0.beta",
                                                                  "decoder.snake1.alpha", "encoder.snake1.alpha")),
    Marker("an ACE-Step music DCAE (audio)" + _UNREAD, _key("vocoder.backbone.channel_layers.0.0.bias")),
    Marker("an MMAudio audio VAE" + _UNREAD, _key("vocoder.activation_post.downsample.lowpass.filter")),
    Marker("an LTX-2 audio VAE" + _UNREAD, _key("vocoder.resblocks.0.convs1.0.weight")),
    # Stable Cascade
    Marker("a Stable Cascade stage A (VQGAN)" + _UNREAD, _key("vquantizer.codebook.weight")),
    Marker("a Stable Cascade stage C encoder (EfficientNet)" + _UNREAD,
           _key("backbone.1.0.block.0.1.num_batches_tracked")),
    Marker("a Stable Cascade previewer" + _UNREAD, r"^blocks\.11\.num_batches_tracked$"),
    Marker("a Stable Cascade stage C diffusion model, not a VAE", _key("clip_txt_mapper.weight"), vae=False),
    Marker("a Stable Cascade stage B diffusion model, not a VAE", _key("clip_mapper.weight"), vae=False),
    # other autoencoders
    Marker("an RAE (representation autoencoder)" + _UNREAD, _key("decoder.decoder_embed.weight", "encoder_mean")),
    # not VAEs
    Marker("a LoRA ({n} tensors), not a VAE", r"(?i:lora)|\.alpha$|lokr_w1$|hada_w1_a$", vae=False),
    Marker("a T5 text encoder, not a VAE", r"(?:^|\.)encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight$", vae=False),
    Marker("a language-model text encoder (Qwen / Llama / Gemma style), not a VAE",
           r"(?:^|\.)layers\.0\.self_attn\.q_proj\.weight$", vae=False),
    Marker("a FLUX transformer (a diffusion model without a VAE)", r"(?:^|\.)double_blocks\.0\.img_attn\.", vae=False),
    Marker("an SD3 MMDiT transformer (a diffusion model without a VAE)", r"(?:^|\.)joint_blocks\.0\.", vae=False),
    Marker("a UNet / diffusion model without a VAE",
           r"model\.diffusion_model\.|input_blocks\.|time_embedding\.|time_embed\.|down_blocks\.0\.attentions", vae=False),
    Marker("a diffusion transformer without a VAE", r"(?:^|\.)transformer_blocks\.0\.attn\.to_q\.weight$", vae=False),
    Marker("a text encoder, not a VAE",
           r"text_model\.|cond_stage_model\.|conditioner\.|transformer\.resblocks|text_projection", vae=False),
)


def what_it_is(sd: dict[str, torch.Tensor], *, vaes_only: bool = False) -> str | None:
    """The first row of ``MARKERS`` these keys match, as "is ..." text without "is"; None if none does."""
    for row in MARKERS:
        if vaes_only and not row.vae:
            continue
        rx = re.compile(row.pattern)
        for k, v in sd.items():
            if rx.search(k) and (row.test is None or row.test(v)):
                return row.what.format(n=len(sd))
    return None


def other_vae(sd: dict[str, torch.Tensor]) -> str | None:
    """"is a <VAE vaestudio does not read>" for a file an architecture claimed but refused; else None."""
    what = what_it_is(sd, vaes_only=True)
    return None if what is None else f"is {what}"


def not_a_vae_reason(sd: dict[str, torch.Tensor]) -> str:
    """One sentence on what a state dict that no architecture claims holds instead."""
    what = what_it_is(sd)
    if what is not None:
        return f"is {what}"
    keys = list(sd)
    if any(k.startswith("decoder.") for k in keys) and not any(k.startswith("encoder.") for k in keys):
        conv_in = sd.get("decoder.conv_in.weight")
        latent = int(conv_in.shape[1]) if conv_in is not None and conv_in.ndim == 4 else 0
        what = {32: "a FLUX.2 VAE decoder (such as FLUX.2's small decoder)", 16: "a 16-channel (SD3/FLUX.1) VAE decoder",
                4: "an SD VAE decoder"}.get(latent, "a decoder")
        return f"holds only {what} and no encoder; it decodes beside a full VAE of the same latent (as its decoder)"
    return f"no VAE weights found ({len(keys)} tensors, e.g. '{keys[0] if keys else 'none'}')"
