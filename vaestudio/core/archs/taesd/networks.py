"""The tiny autoencoders' networks, module for module as in madebyollin's ``taesd.py`` (so the original
files load as they are): the 8x encoder/decoder, FLUX.2's with a GroupNorm "pool" branch, SANA's 32x.

The activation and the upsampling mode are ReLU and nearest in every published file; an
``AutoencoderTiny`` config.json may say otherwise (``act_fn``, ``upsample_fn``), and its word is kept.
"""

from __future__ import annotations

import torch
from torch import nn

#: diffusers' activations by their config names (diffusers.models.activations.get_activation).
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU}
UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, pool: bool = False, act: str = "relu") -> None:
        super().__init__()
        a = ACTIVATIONS[act]
        self.conv = nn.Sequential(_conv(n_in, n_out), a(), _conv(n_out, n_out), a(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if pool:  # FLUX.2: a global GroupNorm branch
            n_gn = n_in * 4
            self.pool = nn.Sequential(nn.Conv2d(n_in, n_gn, 1, bias=False), nn.GroupNorm(4, n_gn), nn.ReLU(inplace=True),
                                      nn.Conv2d(n_gn, n_in, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def make_encoder(channels: int, variant: str, act: str = "relu") -> nn.Sequential:
    """The encoder of a variant ("sd", "flux2", "f32") making ``channels`` latent channels."""
    def down3() -> list[nn.Module]:
        return [_conv(64, 64, stride=2, bias=False), Block(64, 64, act=act), Block(64, 64, act=act),
                Block(64, 64, act=act)]

    if variant == "f32":
        return nn.Sequential(
            _conv(3, 32, stride=2), ACTIVATIONS[act](), _conv(32, 64, stride=2), ACTIVATIONS[act](),
            Block(64, 64, act=act), *down3(), *down3(), *down3(), _conv(64, channels),
        )
    pool = variant == "flux2"
    return nn.Sequential(
        _conv(3, 64), Block(64, 64, act=act), *down3(), *down3(), _conv(64, 64, stride=2, bias=False),
        Block(64, 64, pool, act), Block(64, 64, pool, act), Block(64, 64, pool, act), _conv(64, channels),
    )


def make_decoder(channels: int, variant: str, act: str = "relu", upsample: str = "nearest") -> nn.Sequential:
    """The decoder of a variant taking ``channels`` latent channels."""
    def up3(n_in: int, n_out: int, pool: bool = False) -> list[nn.Module]:
        return [Block(n_in, n_in, pool, act), Block(n_in, n_in, pool, act), Block(n_in, n_in, pool, act),
                nn.Upsample(scale_factor=2, mode=upsample), _conv(n_in, n_out, bias=False)]

    if variant == "f32":
        return nn.Sequential(
            Clamp(), _conv(channels, 256), ACTIVATIONS[act](),
            *up3(256, 128), *up3(128, 64), *up3(64, 64), *up3(64, 64), *up3(64, 64), Block(64, 64, act=act),
            _conv(64, 3),
        )
    return nn.Sequential(
        Clamp(), _conv(channels, 64), ACTIVATIONS[act](),
        *up3(64, 64, variant == "flux2"), *up3(64, 64), *up3(64, 64), Block(64, 64, act=act), _conv(64, 3),
    )


class TinyModel(nn.Module):
    def __init__(self, encoder: nn.Module | None, decoder: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
