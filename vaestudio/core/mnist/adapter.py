"""An MNIST VAE checkpoint as an inspector VAE: images in, a latent vector out, digits back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES
from vaestudio.core.vae import EncodeResult, VaeInfo
from vaestudio.core.weights import WeightFile


def prepare_mnist_checkpoint(path: Path, wf: WeightFile, label: str):
    from vaestudio.core.mnist.train import TrainConfig
    from vaestudio.core.sources import PreparedVae

    try:
        config = TrainConfig(**json.loads(wf.metadata["config"]))
    except (KeyError, TypeError, ValueError):
        raise VaeLoadError("an MNIST checkpoint without a valid config record", label) from None
    weights = {k[6:]: v for k, v in wf.tensors.items() if k.startswith("model.")}
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise VaeLoadError(f"refused: {len(bad)} weight tensors contain NaN or Inf (e.g. {bad[0]})", label)
    fam = FAMILIES["mnist"]
    info = VaeInfo(source=label, format="mnist", key_layout="mnist", family="mnist", family_guessed=False,
                   family_reason="vaestudio MNIST checkpoint", latent_channels=config.latent_dim, scaling_factor=1.0,
                   shift_factor=0.0, parameters=sum(t.numel() for t in weights.values()), dtype="float32",
                   downscale=1, force_upcast=False,
                   notes=[f"{config.arch} {784}-{config.hidden_dim}-{config.latent_dim}, trained on {config.dataset}"])
    return PreparedVae(weights, {}, info, fam, mnist=(config, weights))


class MnistVae:
    """The inspector's view of an MNIST VAE: images become 28x28 grey digits, latents are vectors."""

    kind = "mnist"

    def __init__(self, model, info: VaeInfo, device: torch.device | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.info = info
        self.family = FAMILIES["mnist"]
        self.device = device or torch.device("cpu")
        self.model.to(self.device)
        self.dtype = torch.float32
        self.notices: list[str] = []

    @classmethod
    def from_checkpoint(cls, payload, info: VaeInfo, device: torch.device | None = None) -> MnistVae:
        from vaestudio.core.mnist.model import make_model

        config, weights = payload
        model = make_model(config.arch, config.hidden_dim, config.latent_dim)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise VaeLoadError(f"the checkpoint's weights do not fit its config ({str(exc).splitlines()[0]})",
                               info.source) from None
        return cls(model, info, device)

    @classmethod
    def from_model(cls, model, name: str = "MNIST VAE (training studio)") -> MnistVae:
        d = model.latent_dim
        info = VaeInfo(source=name, format="mnist", key_layout="mnist", family="mnist", family_guessed=False,
                       family_reason="trained in vaestudio", latent_channels=d, scaling_factor=1.0, shift_factor=0.0,
                       parameters=sum(p.numel() for p in model.parameters()), dtype="float32", downscale=1,
                       force_upcast=False)
        import copy

        return cls(copy.deepcopy(model).cpu(), info)

    def prepare_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Any RGB image to a 28x28 digit (grey, light on dark), shown as RGB."""
        notes = []
        grey = pixels.mean(axis=2)
        if grey.shape != (28, 28):
            grey = np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize((28, 28), Image.Resampling.BILINEAR))
            notes.append(f"resized from {pixels.shape[1]}x{pixels.shape[0]} to 28x28 for the MNIST VAE")
        if grey.mean() > 0.5:
            grey = 1.0 - grey
            notes.append("inverted: MNIST digits are light on a dark background")
        grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2), notes

    def encode(self, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
               progress=None, should_stop=None) -> EncodeResult:
        t0 = time.perf_counter()
        digit, notes = self.prepare_pixels(pixels)
        x = torch.from_numpy(digit[..., 0].reshape(1, 784)).to(self.device)
        with torch.inference_mode():
            mu, logvar = self.model.encode(x)
            z = mu
            if sample:
                eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
                z = mu + torch.exp(0.5 * logvar) * eps.to(self.device)
        if progress is not None:
            progress(1, 1)
        return EncodeResult(z[0].float().cpu(), 28, 28, time.perf_counter() - t0, False, notes)

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", progress=None, should_stop=None) -> np.ndarray:
        with torch.inference_mode():
            out = self.model.decode(latent.float().reshape(1, -1).to(self.device)).reshape(28, 28).cpu().numpy()
        if progress is not None:
            progress(1, 1)
        return np.repeat(out[..., None], 3, axis=2).astype(np.float32)

    def set_family(self, family) -> None:
        raise ValueError("an MNIST VAE has no Stable Diffusion family")

    def close(self) -> None:
        pass
