"""Stable Diffusion family VAEs: diffusers' ``AutoencoderKL`` (SD1.x/2.x, SDXL, SD3, FLUX.1).

Two key layouts exist in the wild: the original LDM one (``encoder.down.0.block.0...``, used by
community files such as "Color101 VAE" and full SD checkpoints) and diffusers'
(``encoder.down_blocks.0.resnets.0...``). LDM weights are converted with diffusers' own
``convert_ldm_vae_checkpoint`` so the result is exactly what ``AutoencoderKL.from_single_file``
gives. The architecture is read from tensor shapes, so a single file loads with no network.
Latents are ``(z - shift_factor) * scaling_factor`` in model space, as diffusers pipelines do.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vaestudio.core.autoencoder import TorchAutoencoder, VaeInfo
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, guess_family
from vaestudio.core.registry import Architecture, PreparedVae, find_prefix
from vaestudio.core.weights import WeightFile, check_finite

_ANCHOR = "encoder.conv_in.weight"
_PARTS = ("encoder", "decoder", "quant_conv", "post_quant_conv")


@dataclass
class ExtractedVae:
    """VAE tensors found in a state dict, stripped of their prefix."""

    tensors: dict[str, torch.Tensor]
    layout: str  # "ldm" or "diffusers"
    prefix: str
    ignored: list[str] = field(default_factory=list)


def summarize_keys(keys: list[str], limit: int = 6) -> list[str]:
    """Group keys by their first two dotted parts: ['loss.* (12 keys)', ...]."""
    groups = Counter(".".join(k.split(".")[:2]) if k.count(".") >= 2 else k.split(".")[0] for k in keys)
    out = [f"{g}.* ({n} key{'s' if n != 1 else ''})" for g, n in groups.most_common(limit)]
    if len(groups) > limit:
        out.append(f"... and {len(groups) - limit} more groups")
    return out


def extract_vae(sd: dict[str, torch.Tensor], label: str = "") -> ExtractedVae:
    """Find the VAE inside a state dict (bare, prefixed, or part of a full SD checkpoint)."""
    prefix = find_prefix(sd, _ANCHOR)
    if prefix is None:
        raise VaeLoadError("no VAE encoder found", label or None)
    tensors = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    tensors = {k: v for k, v in tensors.items() if k.split(".")[0] in _PARTS}
    ignored = sorted(k for k in sd if not (k.startswith(prefix) and k[len(prefix):] in tensors))
    keys = tensors.keys()
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        layout = "diffusers"
    elif any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
        layout = "ldm"
    else:
        raise VaeLoadError("has an encoder input layer but no recognisable VAE blocks", label or None)
    if not any(k.startswith("decoder.") for k in keys):
        raise VaeLoadError("holds only a VAE encoder; the decoder is missing", label or None)
    return ExtractedVae(tensors, layout, prefix, ignored)


def ldm_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert LDM-layout VAE tensors to diffusers layout with diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    n_blocks = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    config = {"down_block_types": ["DownEncoderBlock2D"] * n_blocks, "up_block_types": ["UpDecoderBlock2D"] * n_blocks}
    return convert_ldm_vae_checkpoint(dict(tensors), config)


_OLD_ATTENTION_NAMES = {"query.": "to_q.", "key.": "to_k.", "value.": "to_v.", "proj_attn.": "to_out.0."}


def modernize_attention_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the attention weights of old diffusers VAEs (query/key/value/proj_attn)."""
    out = {}
    for k, v in tensors.items():
        if ".attentions." in k:
            for old, new in _OLD_ATTENTION_NAMES.items():
                k = k.replace(f".{old}", f".{new}")
        out[k] = v
    return out


def diffusers_to_ldm(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert diffusers-layout VAE tensors to the original LDM layout (for export and tests)."""
    n_up = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        k = key
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.block.{m.group(2)}.",
            k,
        )
        k = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.",
            k,
        )
        k = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if ".mid_block.attentions.0." in k:
            k = k.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for old, new in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
                k = k.replace(f".{old}", f".{new}")
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[k] = value
    return out


def infer_config(tensors: dict[str, torch.Tensor], label: str = "") -> dict:
    """Infer an AutoencoderKL config from diffusers-layout tensor shapes."""
    try:
        n_blocks = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k)))
        block_out = [int(tensors[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(n_blocks)]
        layers = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k)))
        in_channels = int(tensors["encoder.conv_in.weight"].shape[1])
        out_channels = int(tensors["decoder.conv_out.weight"].shape[0])
        latent = int(tensors["decoder.conv_in.weight"].shape[1])
        enc_out = int(tensors["encoder.conv_out.weight"].shape[0])
    except (KeyError, ValueError, IndexError):
        raise VaeLoadError("the VAE weights are incomplete (encoder or decoder layers are missing)", label or None) from None
    if enc_out != 2 * latent:
        raise VaeLoadError(
            f"the encoder outputs {enc_out} channels but the decoder takes {latent}; not a KL autoencoder", label or None
        )
    if in_channels != 3 or out_channels != 3:
        raise VaeLoadError(f"an image VAE needs 3 colour channels, this one has {in_channels} in and {out_channels} out", label or None)
    groups = 32
    while groups > 1 and any(c % groups for c in block_out):
        groups //= 2
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * n_blocks,
        "up_block_types": ["UpDecoderBlock2D"] * n_blocks,
        "block_out_channels": block_out,
        "layers_per_block": layers,
        "latent_channels": latent,
        "norm_num_groups": groups,
        "use_quant_conv": "quant_conv.weight" in tensors,
        "use_post_quant_conv": "post_quant_conv.weight" in tensors,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in tensors,
    }


def _aslist(v):
    return v if isinstance(v, (list, tuple)) else [v]


class SdVae(TorchAutoencoder):
    """A Stable Diffusion family AutoencoderKL ready to encode and decode images."""

    architecture = "autoencoder-kl"
    cancel_blocks = ("ResnetBlock2D", "Attention")

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.parameters

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample


def load_state_into(cls_name: str, config: dict, tensors: dict[str, torch.Tensor], label: str) -> torch.nn.Module:
    """Build a diffusers model on the meta device and assign the weights to it (no random init).

    Raises VaeLoadError when the weights do not fit, with the first missing or unexpected key.
    """
    import diffusers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its dtype-cast advice does not apply to a plain VAE
    cls = getattr(diffusers, cls_name)
    try:
        with torch.device("meta"):
            model = cls.from_config(config)
        result = model.load_state_dict(tensors, strict=False, assign=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VaeLoadError(f"the weights do not fit a {cls_name} ({msg[:160]})", label) from None
    if result.missing_keys:
        raise VaeLoadError(
            f"the VAE is incomplete: {len(result.missing_keys)} weights are missing (e.g. {result.missing_keys[0]})", label)
    if result.unexpected_keys:
        raise VaeLoadError(
            f"the file has {len(result.unexpected_keys)} weights this VAE layout does not use "
            f"(e.g. {result.unexpected_keys[0]})", label)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # buffers not in the state dict (none for these models, but never run on meta tensors)
        raise VaeLoadError(f"the VAE is incomplete: {leftover[0]} has no value", label)
    return model.float()


class AutoencoderKLArchitecture(Architecture):
    name = "autoencoder-kl"
    label = "Stable Diffusion VAE (AutoencoderKL)"
    order = 90  # the broadest layout: tried last
    config_classes = ("AutoencoderKL",)
    families = ("sd1", "sdxl", "sd3", "flux")
    sources = (
        ("single file", ".safetensors/.ckpt/.pt/.bin with LDM keys (community VAEs, full SD checkpoints) or "
                        "diffusers keys"),
        ("diffusers folder", "config.json + diffusion_pytorch_model.safetensors, or a pipeline folder with vae/"),
        ("Hugging Face id", "org/name or org/name/vae, through the standard cache"),
    )

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return find_prefix(wf.tensors, _ANCHOR) is not None

    def prepare_weights(self, wf: WeightFile, label: str, *, fmt: str, name: str, config: dict | None) -> PreparedVae:
        extracted = extract_vae(wf.tensors, label)
        tensors = extracted.tensors
        try:
            tensors = ldm_to_diffusers(tensors) if extracted.layout == "ldm" else modernize_attention_names(tensors)
        except (KeyError, IndexError, ValueError) as exc:  # diffusers' converter on an incomplete file
            raise VaeLoadError(f"the VAE weights are incomplete ({type(exc).__name__}: {str(exc)[:80]})", label) from None
        check_finite(tensors, label)
        inferred = infer_config(tensors, label)
        if config is not None:
            for key in ("latent_channels", "block_out_channels", "layers_per_block"):
                if key in config and list(_aslist(config[key])) != list(_aslist(inferred[key])):
                    raise VaeLoadError(f"config.json says {key}={config[key]} but the weights have {inferred[key]}", label)
            merged = {k: v for k, v in config.items() if not k.startswith("_")}
            merged.update({k: inferred[k] for k in ("use_quant_conv", "use_post_quant_conv")})
        else:
            merged = inferred
        dtype_counts = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
        notes = list(wf.notes)
        if wf.dropped:
            notes.append(f"non-tensor entries ignored: {', '.join(wf.dropped[:6])}")
        cfg_scale = config.get("scaling_factor") if config else None
        channels = inferred["latent_channels"]
        candidates = [FAMILIES[n] for n in self.families if FAMILIES[n].latent_channels == channels]
        if not candidates:
            raise VaeLoadError(f"no known Stable Diffusion VAE family has {channels} latent channels", label)
        default = FAMILIES["sd1"] if channels == 4 else FAMILIES["flux"]
        guess = guess_family(candidates, config_scaling=cfg_scale, metadata=wf.metadata, name=name, default=default)
        info = VaeInfo(
            source=label, format=fmt, key_layout=extracted.layout, architecture=self.name,
            family=guess.family.name, family_guessed=guess.guessed, family_reason=guess.reason,
            latent_channels=channels, downscale=2 ** (len(inferred["block_out_channels"]) - 1),
            scaling_factor=guess.family.scaling_factor, shift_factor=guess.family.shift_factor,
            parameters=sum(t.numel() for t in tensors.values()), dtype=dtype_counts.most_common(1)[0][0],
            ignored_keys=summarize_keys(extracted.ignored), notes=notes,
            force_upcast=bool((config or {}).get("force_upcast", True)),
        )
        if config is not None and cfg_scale is not None:
            info.scaling_factor = float(cfg_scale)
            info.shift_factor = float(config.get("shift_factor") or 0.0)
        return PreparedVae(self.name, tensors, merged, info, guess.family)

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> SdVae:
        config = dict(prepared.config)
        info = prepared.info
        config.update(scaling_factor=info.scaling_factor, shift_factor=info.shift_factor or None)
        model = load_state_into("AutoencoderKL", config, prepared.tensors, info.source)
        return SdVae(model, info, prepared.family, device=device, dtype=dtype)


ARCHITECTURE = AutoencoderKLArchitecture()
