"""The classic MNIST VAE (Kingma & Welling), as in pytorch/examples ``vae/main.py``.

Encoder 784 -> 400 -> (mu, logvar) of 20 dimensions; decoder 20 -> 400 -> 784 with a sigmoid.
Loss = binary cross-entropy (summed over pixels) + beta * KL(q(z|x) || N(0, I)), in nats per image.
Hidden and latent sizes are configurable, and a small convolutional variant is available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VAE(nn.Module):
    """784-400-20 fully connected VAE."""

    def __init__(self, hidden_dim: int = 400, latent_dim: int = 20) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)  # mean
        self.fc22 = nn.Linear(hidden_dim, latent_dim)  # log variance
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


class ConvVAE(VAE):
    """A small convolutional variant: 28x28 -> 14x14x32 -> 7x7x64 -> latent, and back."""

    def __init__(self, hidden_dim: int = 400, latent_dim: int = 20) -> None:
        nn.Module.__init__(self)
        self.latent_dim = latent_dim
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(64 * 7 * 7, hidden_dim), nn.ReLU(),
        )
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.dec = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 64 * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x.view(-1, 1, 28, 28))
        return self.fc21(h), self.fc22(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z)).view(-1, 784)


def loss_terms(recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction BCE, KL), each summed over the batch."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # KL(N(mu, sigma) || N(0, 1)) = -0.5 * sum(1 + log sigma^2 - mu^2 - sigma^2)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + beta * kld, bce, kld


def make_model(arch: str = "mlp", hidden_dim: int = 400, latent_dim: int = 20) -> VAE:
    if arch == "mlp":
        return VAE(hidden_dim, latent_dim)
    if arch == "conv":
        return ConvVAE(hidden_dim, latent_dim)
    raise ValueError(f"unknown architecture '{arch}' (mlp or conv)")
