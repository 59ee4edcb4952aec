"""Pictures of an MNIST VAE: digit grids, reconstructions, prior samples, a PCA of the latents,
interpolations and traversals. Qt-free; the studio shows them and the tests check them.

Each function works on a model (or a CPU snapshot of its weights) and uses random generators of
its own, so drawing pictures never changes a training run's random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaestudio.core.mnist.model import VAE, make_model


def grid(images: np.ndarray, cols: int) -> np.ndarray:
    """(n, 784) or (n, 28, 28) digits as one (rows*28, cols*28) picture."""
    n = len(images)
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * 28, cols * 28), np.float32)
    for i, im in enumerate(np.asarray(images).reshape(n, 28, 28)):
        r, c = divmod(i, cols)
        out[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] = im
    return out


@dataclass
class EpochPictures:
    recon_grid: np.ndarray  # (2*28, n*28): held-out digits above their reconstructions
    recon_labels: list[int]  # the digit class of each column (-1 when unknown)
    samples: np.ndarray  # (rows*28, cols*28): decoded draws from the prior
    pca: np.ndarray  # (N, 2) held-out latent means projected on their first two components
    labels: np.ndarray


def pick_one_per_class(labels: np.ndarray, n: int = 10) -> list[int]:
    """Indices of the first held-out example of each digit class (in class order), else the first n."""
    picked = [int(np.flatnonzero(labels == k)[0]) for k in range(10) if (labels == k).any()]
    return picked[:n] if len(picked) >= min(n, 10) else list(range(min(n, len(labels))))


@torch.inference_mode()
def epoch_pictures(model: VAE, heldout_x: torch.Tensor, heldout_y: np.ndarray, seed: int) -> EpochPictures:
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    idx = pick_one_per_class(heldout_y) if len(heldout_y) else list(range(min(10, len(heldout_x))))
    x = heldout_x[idx]
    mu, _ = model.encode(x)
    recon = model.decode(mu).cpu().numpy()
    samples = model.decode(torch.randn(32, model.latent_dim, generator=gen).to(x.device)).cpu().numpy()
    n = min(2000, len(heldout_x))
    mus = model.encode(heldout_x[:n])[0].cpu().double()
    # PCA from the small D x D covariance in torch: a numpy SVD here wakes OpenBLAS threads
    # that then compete with training for the cores (measured: -20% throughput)
    centred = mus - mus.mean(dim=0)
    _, vecs = torch.linalg.eigh(centred.T @ centred)
    top = vecs[:, [-1, -2]] if vecs.shape[1] >= 2 else torch.cat([vecs, torch.zeros_like(vecs)], dim=1)
    pca = (centred @ top).float().numpy()
    if was_training:
        model.train()
    pair = np.concatenate([x.cpu().numpy(), recon])
    labels = [int(heldout_y[i]) if len(heldout_y) else -1 for i in idx]
    return EpochPictures(grid(pair, len(idx)), labels, grid(samples, 8), pca, heldout_y[:n])


def model_from_snapshot(arch: str, hidden_dim: int, latent_dim: int, weights: dict[str, torch.Tensor]) -> VAE:
    model = make_model(arch, hidden_dim, latent_dim)
    model.load_state_dict(weights)
    return model.eval()


@torch.inference_mode()
def interpolation(model: VAE, a: torch.Tensor, b: torch.Tensor, steps: int = 10) -> np.ndarray:
    """Decoded points on the line between the latent means of digits a and b (784 values each)."""
    mu = model.encode(torch.stack([a, b]).float())[0]
    t = torch.linspace(0, 1, steps)[:, None]
    return grid(model.decode(mu[0] * (1 - t) + mu[1] * t).numpy(), steps)


@torch.inference_mode()
def traversal(model: VAE, dim: int, steps: int = 11, span: float = 3.0) -> np.ndarray:
    """One latent dimension from -span to +span with the others at 0, decoded."""
    z = torch.zeros(steps, model.latent_dim)
    z[:, dim] = torch.linspace(-span, span, steps)
    return grid(model.decode(z).numpy(), steps)
