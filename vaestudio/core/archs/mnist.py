"""vaestudio's own MNIST VAE (trained in the studio or by ``train-mnist``) as an inspector VAE.

Any image becomes a 28x28 grey digit (light on dark, as MNIST digits are), its latent is a vector,
and the decoder draws a digit back. A checkpoint is recognised by its ``vaestudio: mnist-vae``
metadata.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaestudio.core.archs._common import misfit
from vaestudio.core.clips import ClipMixin
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, Family
from vaestudio.core.registry import Architecture, PreparedVae
from vaestudio.core.vae import Decoding, Encoding, VaeInfo
from vaestudio.core.weights import WeightFile, check_finite


def _info(source: str, fmt: str, reason: str, latent_dim: int, parameters: int, notes: list[str]) -> VaeInfo:
    return VaeInfo(source=source, format=fmt, key_layout="mnist", architecture="mnist", family="mnist",
                   family_guessed=False, family_reason=reason, latent_channels=latent_dim, downscale=1,
                   scaling_factor=1.0, shift_factor=0.0, parameters=parameters, dtype="float32", notes=notes,
                   force_upcast=False)


ALWAYS_FP32 = "fp32, as the MNIST model always runs (tiny: bf16 would gain nothing)"


class MnistVae(ClipMixin):
    """The inspector's view of an MNIST VAE: images become 28x28 grey digits, latents are vectors."""

    architecture = "mnist"

    def __init__(self, model: torch.nn.Module, info: VaeInfo, device: torch.device | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.info = info
        self.family = FAMILIES["mnist"]
        self.device = device or torch.device("cpu")
        self.model.to(self.device)
        self.dtype = torch.float32
        self.dtype_reason = ALWAYS_FP32

    @classmethod
    def from_trained(cls, model: torch.nn.Module, name: str = "MNIST VAE (training studio)") -> MnistVae:
        """A copy of a model being trained, so that training can go on."""
        params = sum(p.numel() for p in model.parameters())
        info = _info(name, "mnist", "trained in vaestudio", model.latent_dim, params, [])
        return cls(copy.deepcopy(model).cpu(), info)

    downscale = 1
    can_encode = True
    can_decode = True
    previews_itself = True

    def prepare_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Any RGB image to a 28x28 digit (grey, light on dark), shown as RGB."""
        from vaestudio.core.mnist.data import as_digit

        notes = []
        grey = pixels.mean(axis=2)
        if grey.shape != (28, 28):
            grey = np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize((28, 28), Image.Resampling.BILINEAR))
            notes.append(f"resized from {pixels.shape[1]}x{pixels.shape[0]} to 28x28 for the MNIST VAE")
        grey, inverted = as_digit(grey)
        if inverted:
            notes.append("inverted: MNIST digits are light on a dark background")
        grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2), notes

    def encode(self, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
               progress=None, should_stop=None) -> Encoding:
        t0 = time.perf_counter()
        digit, notes = self.prepare_pixels(pixels)
        z = self._encode(torch.from_numpy(digit[..., 0].reshape(1, 784)), sample, [seed])[0]
        if progress is not None:
            progress(1, 1)
        return Encoding(digit, z, z, 28, 28, time.perf_counter() - t0, False, notes)

    def _encode(self, digits: torch.Tensor, sample: bool, seeds) -> torch.Tensor:
        """(N, 784) grey digits to (N, D) latents: the means, or samples seeded per image."""
        with torch.inference_mode():
            mu, logvar = self.model.encode(digits.float().to(self.device))
            if sample:
                eps = torch.cat([torch.randn((1, mu.shape[1]), generator=torch.Generator().manual_seed(int(s)))
                                 for s in seeds])
                mu = mu + torch.exp(0.5 * logvar) * eps.to(self.device)
        return mu.float().cpu()

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", progress=None, should_stop=None) -> Decoding:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.decode(latent.float().reshape(1, -1).to(self.device)).reshape(28, 28).cpu().numpy()
        if progress is not None:
            progress(1, 1)
        return Decoding(np.repeat(out[..., None], 3, axis=2).astype(np.float32), time.perf_counter() - t0, False)

    def encode_batch(self, x: torch.Tensor, *, sample: bool = False, seeds=None, tile: str = "auto", progress=None,
                     should_stop=None, notes: list[str] | None = None) -> tuple[torch.Tensor, bool]:
        """(N, 3, 28, 28) digits as ``prepare_pixels`` makes them to (N, D) latent vectors (not prepared again)."""
        if tuple(x.shape[1:]) != (3, 28, 28):
            raise ValueError(f"the MNIST VAE encodes prepared 28x28 digits, not images of shape {tuple(x.shape[1:])}")
        seeds = list(seeds) if seeds is not None else [0] * len(x)
        return self._encode(x[:, 0].reshape(len(x), 784), sample, seeds), False

    def decode_batch(self, latent: torch.Tensor, *, tile: str = "auto", progress=None, should_stop=None,
                     notes: list[str] | None = None) -> torch.Tensor:
        """(N, D) latent vectors to (N, 3, 28, 28) digits."""
        with torch.inference_mode():
            out = self.model.decode(latent.float().to(self.device)).reshape(-1, 1, 28, 28).cpu()
        return out.expand(-1, 3, -1, -1).contiguous()

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def family_choices(self) -> list[Family]:
        return [FAMILIES["mnist"]]

    def set_family(self, family: Family) -> None:
        if family.name != "mnist":
            raise ValueError("an MNIST VAE has no Stable Diffusion family")

    def close(self) -> None:
        pass


class MnistArchitecture(Architecture):
    name = "mnist"
    label = "MNIST VAE (vaestudio)"
    order = 0
    families = ("mnist",)
    sources = (("vaestudio checkpoint", "a .safetensors file written by the MNIST studio or train-mnist"),)

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        from vaestudio.core.mnist.train import FORMAT_TAG

        return wf.metadata.get("vaestudio") == FORMAT_TAG

    def prepare_file(self, path: Path, wf: WeightFile, label: str) -> PreparedVae:
        from vaestudio.core.mnist.train import TrainConfig

        try:
            config = TrainConfig(**json.loads(wf.metadata["config"]))
        except (KeyError, TypeError, ValueError):
            raise VaeLoadError("an MNIST checkpoint without a valid config record", label) from None
        weights = {k[6:]: v for k, v in wf.tensors.items() if k.startswith("model.")}
        check_finite(weights, label)
        info = _info(label, "mnist", "vaestudio MNIST checkpoint", config.latent_dim,
                     sum(t.numel() for t in weights.values()),
                     [f"{config.arch} 784-{config.hidden_dim}-{config.latent_dim}, trained on {config.dataset}"])
        return PreparedVae(self.name, weights, {}, info, FAMILIES["mnist"], extra={"train_config": config})

    def auto_dtype(self, info, device):
        from vaestudio.core.device import HALVES, DtypeChoice

        return DtypeChoice(torch.float32, dict.fromkeys(HALVES, torch.float32), ALWAYS_FP32)

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> MnistVae:
        from vaestudio.core.mnist.model import make_model

        config = prepared.extra["train_config"]
        model = make_model(config.arch, config.hidden_dim, config.latent_dim)
        if (why := misfit(model, prepared.tensors)) is not None:
            raise VaeLoadError(f"the checkpoint's weights do not fit its config ({why})", prepared.info.source)
        model.load_state_dict(prepared.tensors)
        return MnistVae(model, prepared.info, device)

    def family_choices(self, info: VaeInfo) -> list[Family]:
        return [FAMILIES["mnist"]]


ARCHITECTURE = MnistArchitecture()
