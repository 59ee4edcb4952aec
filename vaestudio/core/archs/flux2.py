"""FLUX.2's VAE: diffusers' ``AutoencoderKLFlux2``.

An SD-style KL autoencoder with 32 latent channels at 1/8 size plus a BatchNorm layer whose running
statistics normalise the latent for the transformer. The model space is what ``Flux2Pipeline`` gives
its transformer: the latent patchified 2x2 (128 channels at 1/16, channels ordered (c, dy, dx)) and
normalised by the BatchNorm's running mean and variance, ``(p - mean) / sqrt(var + batch_norm_eps)``.

Sources: a diffusers folder (config ``AutoencoderKLFlux2``, or a pipeline folder with ``vae/``), a
Hugging Face id, and the single file Black Forest Labs publish (``ae.safetensors``, ComfyUI's
``flux2-vae.safetensors``): the original LDM key layout (``encoder.down.0.block.0...``) with the 1x1
quantisation convolutions inside the halves (``encoder.quant_conv``, ``decoder.post_quant_conv``) and
``bn.running_mean/var``. diffusers has no converter for that file, so ``bfl_to_diffusers`` moves
those keys and hands the rest to diffusers' own LDM converter; ``diffusers_to_bfl`` is its inverse
(tests run both ways). The BatchNorm marks the file as FLUX.2, so a FLUX.1 VAE (same LDM layout,
16 channels, no BatchNorm) is never taken for one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs import _common as common
from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm, infer_config, ldm_to_diffusers
from vaestudio.core.autoencoder import TorchAutoencoder, patchify, unpatchify
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES
from vaestudio.core.registry import Architecture, PreparedVae, find_prefix
from vaestudio.core.weights import WeightFile

_MARKS = ("bn.running_mean", "bn.running_var", "encoder.quant_conv.weight", "decoder.post_quant_conv.weight")
_PARTS = ("encoder", "decoder", "quant_conv", "post_quant_conv", "bn")


def bfl_to_diffusers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Black Forest Labs' FLUX.2 VAE keys (LDM layout, quant convs inside the halves) to diffusers'."""
    ldm: dict[str, torch.Tensor] = {}
    bn: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        if k.startswith("bn."):
            bn[k] = v
        elif k.startswith("encoder.quant_conv."):
            ldm["quant_conv." + k[len("encoder.quant_conv."):]] = v
        elif k.startswith("decoder.post_quant_conv."):
            ldm["post_quant_conv." + k[len("decoder.post_quant_conv."):]] = v
        else:
            ldm[k] = v
    out = ldm_to_diffusers(ldm)
    out.update(bn)
    return out


def diffusers_to_bfl(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``bfl_to_diffusers`` (for export and tests)."""
    rest = {k: v for k, v in tensors.items() if not k.startswith("bn.")}
    out: dict[str, torch.Tensor] = {}
    for k, v in diffusers_to_ldm(rest).items():
        if k.startswith("quant_conv."):
            k = "encoder." + k
        elif k.startswith("post_quant_conv."):
            k = "decoder." + k
        out[k] = v
    out.update({k: v for k, v in tensors.items() if k.startswith("bn.")})
    return out


def _layout(tensors) -> str | None:
    keys = list(tensors)
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        return "diffusers"
    if any(k.startswith(("encoder.down.", "decoder.up.")) for k in keys):
        return "bfl"
    return None


class Flux2Vae(TorchAutoencoder):
    """FLUX.2's VAE; the model space is patchified 2x2 and BatchNorm-normalised."""

    architecture = "flux2"
    cancel_blocks = ("ResnetBlock2D", "Attention")

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        eps = float(model.config.batch_norm_eps)
        self._mean = model.bn.running_mean.detach().float().cpu().clone()
        self._std = torch.sqrt(model.bn.running_var.detach().float().cpu() + eps)
        self._patch = int(model.config.patch_size[0])

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.parameters

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, 1, 1)
        return (self._mean.view(shape).to(like.device, like.dtype), self._std.view(shape).to(like.device, like.dtype))

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        p = patchify(raw, self._patch)
        mean, std = self._stats(p)
        return (p - mean) / std

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latent)
        return unpatchify(latent * std + mean, self._patch)


class Flux2Architecture(Architecture):
    name = "flux2"
    label = "FLUX.2 VAE (AutoencoderKLFlux2)"
    order = 80  # before the broad SD layout (90), which would otherwise claim its LDM keys
    config_classes = ("AutoencoderKLFlux2",)
    families = ("flux2",)
    sources = (
        ("single file", "Black Forest Labs' ae.safetensors / ComfyUI's flux2-vae.safetensors (LDM keys, "
                        "encoder.quant_conv, decoder.post_quant_conv, bn.running_mean/var), .safetensors or .ckpt/.pt; "
                        "or diffusers keys"),
        ("diffusers folder", "config.json (AutoencoderKLFlux2) + weights, or a pipeline folder with vae/"),
        ("Hugging Face id", "e.g. black-forest-labs/FLUX.2-dev (its vae/), through the standard cache"),
    )

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        # FLUX.2's own keys: the BatchNorm, and (BFL layout) the quant convs inside the halves; SD/FLUX.1
        # files have neither, so even an incomplete FLUX.2 file is read (and refused) as one
        for mark in _MARKS:
            prefix = find_prefix(wf.tensors, mark)
            if prefix is not None and any(k.startswith(prefix + "encoder.") for k in wf.tensors):
                return True
        return False

    def prepare_weights(self, wf: WeightFile, label: str, *, fmt: str, name: str, config: dict | None) -> PreparedVae:
        found = common.extract(wf, "encoder.conv_in.weight", _PARTS)
        if found is None:
            raise VaeLoadError("no FLUX.2 VAE encoder found (encoder.conv_in.weight is missing)", label)
        tensors, ignored = found
        layout = _layout(tensors)
        if layout is None:
            raise VaeLoadError("has an encoder input layer but no recognisable VAE blocks", label)
        if not any(k.startswith("decoder.") for k in tensors):
            raise VaeLoadError("holds only a VAE encoder; the decoder is missing", label)
        if "bn.running_mean" not in tensors or "bn.running_var" not in tensors:
            raise VaeLoadError("a FLUX.2 VAE needs its BatchNorm statistics (bn.running_mean and bn.running_var)",
                               label)
        try:
            tensors = bfl_to_diffusers(tensors) if layout == "bfl" else dict(tensors)
        except (KeyError, ValueError, IndexError):
            raise VaeLoadError("the FLUX.2 VAE weights are incomplete (encoder or decoder blocks are missing)",
                               label) from None
        tensors.setdefault("bn.num_batches_tracked", torch.tensor(0, dtype=torch.long))
        common.checked(tensors, label)
        merged = self._config(tensors, config, label)
        latent = int(merged["latent_channels"])
        bn = tensors["bn.running_mean"].numel()
        patch = list(merged.get("patch_size") or [2, 2])
        if bn != latent * patch[0] * patch[1] or tensors["bn.running_var"].numel() != bn:
            raise VaeLoadError(f"the BatchNorm has {bn} channels but a {latent}-channel latent patchified "
                               f"{patch[0]}x{patch[1]} has {latent * patch[0] * patch[1]}", label)
        fam = FAMILIES["flux2"]
        if latent != fam.latent_channels:
            raise VaeLoadError(f"a FLUX.2 VAE has {fam.latent_channels} latent channels but this one has {latent}",
                               label)
        reason = "config class AutoencoderKLFlux2" if config is not None else \
            "the BatchNorm latent statistics only FLUX.2's VAE has"
        f = 2 ** (len(merged["block_out_channels"]) - 1)
        info = common.new_info(
            self.name, label, wf, tensors, fmt=fmt, layout="diffusers" if layout == "diffusers" else "bfl",
            family=fam, guessed=False, reason=reason, latent_channels=latent, downscale=f, ignored=ignored,
            notes=["model space: the latent patchified 2x2 and normalised by the VAE's BatchNorm running "
                   "mean/var, as Flux2Pipeline does"],
        )
        info.model_latent_channels = latent * patch[0] * patch[1]
        info.model_downscale = f * patch[0]
        return PreparedVae(self.name, tensors, merged, info, fam)

    @staticmethod
    def _config(tensors: dict, config: dict | None, label: str) -> dict:
        inferred = infer_config({k: v for k, v in tensors.items() if not k.startswith("bn.")}, label)
        try:
            dec_out = [int(tensors[f"decoder.up_blocks.{i}.resnets.0.conv2.weight"].shape[0])
                       for i in reversed(range(len(inferred["block_out_channels"])))]
        except KeyError:
            raise VaeLoadError("the FLUX.2 VAE weights are incomplete (decoder blocks are missing)", label) from None
        base = common.shipped_config("flux2")
        if config is not None:
            for key in ("latent_channels", "block_out_channels", "layers_per_block"):
                if key in config and list(_aslist(config[key])) != list(_aslist(inferred[key])):
                    raise VaeLoadError(f"config.json says {key}={config[key]} but the weights have {inferred[key]}",
                                       label)
            base.update({k: v for k, v in config.items() if not k.startswith("_")})
        base.update({k: inferred[k] for k in ("in_channels", "out_channels", "down_block_types", "up_block_types",
                                              "block_out_channels", "layers_per_block", "latent_channels",
                                              "norm_num_groups", "use_quant_conv", "use_post_quant_conv",
                                              "mid_block_add_attention")})
        base["decoder_block_out_channels"] = None if dec_out == inferred["block_out_channels"] else dec_out
        return base

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> Flux2Vae:
        model = common.build_model("AutoencoderKLFlux2", prepared.config, prepared.tensors, prepared.info.source)
        return Flux2Vae(model, prepared.info, prepared.family, device=device, dtype=dtype)

    def use_family(self, info, family) -> None:
        super().use_family(info, family)
        info.scaling_factor, info.shift_factor = 1.0, 0.0  # the BatchNorm statistics normalise, not a scale


def _aslist(v):
    return v if isinstance(v, (list, tuple)) else [v]


ARCHITECTURE = Flux2Architecture()
