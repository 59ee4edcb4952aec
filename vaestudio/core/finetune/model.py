"""The trainable torch module of a loaded VAE, its frozen part and its losses.

A VAE loaded by vaestudio (``sources.build_vae``) holds its torch module as ``vae.model``: diffusers'
``AutoencoderKL`` / ``AutoencoderKLFlux2``, or the tiny autoencoder's ``TinyModel`` (``encoder``,
``decoder``). ``Trainable`` wraps it as one ``nn.Module`` whose ``forward`` is a training step's
computation, so DistributedDataParallel can wrap it. ``--part decoder`` trains the decoder (and
``post_quant_conv``) and runs the encoder without gradients on the latent mean: the latent space
stays the base's. ``--part all`` trains both halves on a sampled latent (noise fixed by the sample's
index) with the KL term where the VAE has a log-variance. FLUX.2's BatchNorm statistics (its model
space) are never trained.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vaestudio.core.finetune.options import FinetuneError

#: key starts of each architecture's decoder part
DECODER_PARTS = {"autoencoder-kl": ("decoder.", "post_quant_conv."), "flux2": ("decoder.", "post_quant_conv."),
                 "taesd": ("decoder.",)}
FROZEN_ALWAYS = ("bn.",)


class Trainable(nn.Module):
    """The VAE's module with its training step: ``forward(x, noise) -> (recon, kl)``, images in [0, 1]."""

    def __init__(self, vae, part: str) -> None:
        super().__init__()
        self.model = vae.model
        self.architecture = vae.architecture
        self.part = part
        self.lo, self.hi = (float(v) for v in vae.input_range)
        self.has_logvar = bool(vae.has_logvar)
        decoder = DECODER_PARTS[self.architecture]
        self.model.requires_grad_(False)
        for name, p in self.model.named_parameters():
            if name.startswith(FROZEN_ALWAYS):
                continue
            if part == "all" or name.startswith(decoder):
                p.requires_grad_(True)

    def trained(self) -> list[tuple[str, nn.Parameter]]:
        """The trained parameters, by their key in ``vae.model``'s state dict, in a fixed order."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.architecture == "taesd":
            return self.model.encoder(x), None
        dist = self.model.encode(x).latent_dist
        return dist.mean, dist.logvar

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.architecture == "taesd":
            return self.model.decoder(z)
        return self.model.decode(z).sample

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct ``x`` (N, 3, H, W in [0, 1]); the KL term per image, averaged (0 without one)."""
        inp = x * (self.hi - self.lo) + self.lo
        if self.part == "decoder":
            with torch.no_grad():
                z, _ = self._encode(inp)
            kl = x.new_zeros(())
        else:
            mean, logvar = self._encode(inp)
            if logvar is None:
                z, kl = mean, x.new_zeros(())
            else:
                logvar = logvar.clamp(-30.0, 20.0)
                var = logvar.exp()
                z = mean if noise is None else mean + var.sqrt() * noise.to(mean)
                kl = (0.5 * (mean.pow(2) + var - 1.0 - logvar).sum(dim=(1, 2, 3))).mean()
        out = self._decode(z)
        return (out - self.lo) / (self.hi - self.lo), kl

    @torch.no_grad()
    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        z, _ = self._encode(x[:1] * (self.hi - self.lo) + self.lo)
        return tuple(z.shape[1:])


def enable_checkpointing(model: nn.Module, mode: str, device: torch.device) -> str | None:
    """Gradient checkpointing where diffusers offers it (``on``, or ``auto`` on a GPU); a note on what was done."""
    wanted = mode == "on" or (mode == "auto" and device.type == "cuda")
    if not wanted:
        return None
    if getattr(model, "_supports_gradient_checkpointing", False) and hasattr(model, "enable_gradient_checkpointing"):
        model.enable_gradient_checkpointing()
        return "gradient checkpointing on"
    return "gradient checkpointing is not offered for this architecture; trained without it"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` (None: fp32). auto: bf16 on a GPU that computes it, else fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else None
    if precision == "fp16" and device.type != "cuda":
        raise FinetuneError("--precision fp16 needs a CUDA device (use bf16 or fp32)")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class Losses:
    """The weighted training loss from ``--loss`` (L1, LPIPS, KL), on images in [0, 1]."""

    def __init__(self, weights: dict[str, float], device: torch.device) -> None:
        self.weights = dict(weights)
        self.lpips = None
        if "lpips" in self.weights:
            from vaestudio.core.lpips import model, weights_present

            if not weights_present():
                raise FinetuneError("the LPIPS loss needs the LPIPS weights, which are missing from this install")
            self.lpips = copy.deepcopy(model()).to(device)  # the shared metric network stays where it is

    def __call__(self, recon: torch.Tensor, x: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        terms: dict[str, torch.Tensor] = {}
        if "l1" in self.weights:
            terms["l1"] = (recon.float() - x.float()).abs().mean()
        if self.lpips is not None:
            terms["lpips"] = self.lpips(recon.float() * 2 - 1, x.float() * 2 - 1).mean()
        if "kl" in self.weights:
            terms["kl"] = kl.float()
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}
