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

from vaestudio.core.archs import _kl_layout as kl
from vaestudio.core.archs._diffusers import DiffusersArchitecture, Found, Layout
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.registry import find_prefix
from vaestudio.core.tensors import patchify, unpatchify
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile

_MARKS = ("bn.running_mean", "bn.running_var", "encoder.quant_conv.weight", "decoder.post_quant_conv.weight")


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
    out = kl.ldm_to_diffusers(ldm)
    out.update(bn)
    return out


def diffusers_to_bfl(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``bfl_to_diffusers`` (for export and tests)."""
    rest = {k: v for k, v in tensors.items() if not k.startswith("bn.")}
    out: dict[str, torch.Tensor] = {}
    for k, v in kl.diffusers_to_ldm(rest).items():
        if k.startswith("quant_conv."):
            k = "encoder." + k
        elif k.startswith("post_quant_conv."):
            k = "decoder." + k
        out[k] = v
    out.update({k: v for k, v in tensors.items() if k.startswith("bn.")})
    return out


class Flux2Vae(TorchAutoencoder):
    """FLUX.2's VAE; the model space is patchified 2x2 and BatchNorm-normalised."""

    architecture = "flux2"
    cancel_blocks = ("ResnetBlock2D", "Attention")
    # benchmarks/bench_dtype.py, tests/test_dtype.py: the only half below the 40 dB guard
    cpu_fp32 = {"encode": "bf16 encode measured 38.4 dB PSNR against fp32 on the test model (below the 40 dB guard)"}

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


def _tracked(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' BatchNorm counts its batches; some files leave the counter out."""
    return {"bn.num_batches_tracked": torch.tensor(0, dtype=torch.long), **tensors}


class Flux2Architecture(DiffusersArchitecture):
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
    diffusers_class = "AutoencoderKLFlux2"
    vae_class = Flux2Vae
    layouts = (Layout("diffusers", kl.ANCHOR, kl.DIFFUSERS_BLOCKS, _tracked),
               Layout("bfl", kl.ANCHOR, kl.LDM_BLOCKS, lambda t: _tracked(bfl_to_diffusers(t)), diffusers_to_bfl))
    parts = ("encoder", "decoder", "quant_conv", "post_quant_conv", "bn")
    decoder_parts = ("decoder", "post_quant_conv")  # the small decoder's file: BFL's keys, or diffusers'
    short = "FLUX.2 VAE"
    shipped = "flux2"
    guessed = kl.GUESSED
    space_notes = ("model space: the latent patchified 2x2 and normalised by the VAE's BatchNorm running mean/var, "
                   "as Flux2Pipeline does",)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        # FLUX.2's own keys: the BatchNorm, and (BFL layout) the quant convs inside the halves; SD/FLUX.1
        # files have neither, so even an incomplete FLUX.2 file is read (and refused) as one
        for mark in _MARKS:
            prefix = find_prefix(wf.tensors, mark)
            if prefix is not None and any(k.startswith(prefix + "encoder.") for k in wf.tensors):
                return True
        return False

    def check(self, tensors: dict[str, torch.Tensor], layout: Layout, label: str) -> None:
        if "bn.running_mean" not in tensors or "bn.running_var" not in tensors:
            raise VaeLoadError("a FLUX.2 VAE needs its BatchNorm statistics (bn.running_mean and bn.running_var)",
                               label)

    def infer_config(self, tensors: dict[str, torch.Tensor], label: str) -> dict:
        inferred = kl.infer_config({k: v for k, v in tensors.items() if not k.startswith("bn.")}, label)
        n = len(inferred["block_out_channels"])
        dec_out = [int(tensors[f"decoder.up_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in reversed(range(n))]
        inferred["decoder_block_out_channels"] = None if dec_out == inferred["block_out_channels"] else dec_out
        groups = inferred["norm_num_groups"]  # a guess that must divide the small decoder's widths too
        while groups > 1 and any(c % groups for c in dec_out):
            groups //= 2
        inferred["norm_num_groups"] = groups
        return inferred

    downscale_of = staticmethod(kl.downscale_of)

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        latent, (py, px) = int(cfg["latent_channels"]), list(cfg.get("patch_size") or [2, 2])
        bn = tensors["bn.running_mean"].numel()
        if bn != latent * py * px or tensors["bn.running_var"].numel() != bn:
            raise VaeLoadError(f"the BatchNorm has {bn} channels but a {latent}-channel latent patchified "
                               f"{py}x{px} has {latent * py * px}", label)

    def describe(self, info: VaeInfo, found: Found) -> None:
        patch = list(found.merged.get("patch_size") or [2, 2])
        info.model_latent_channels = info.latent_channels * patch[0] * patch[1]
        info.model_downscale = info.downscale * patch[0]


ARCHITECTURE = Flux2Architecture()
