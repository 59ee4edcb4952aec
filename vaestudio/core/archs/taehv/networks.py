"""The tiny video autoencoders' networks (madebyollin's TAEHV), with the author's module indices, so
the published ``encoder.N`` / ``decoder.N`` state dicts load as they are.

Every block works on single frames (``(N*T, C, H, W)``); time enters in three blocks only:

- ``MemBlock``: a residual block whose convolution also sees the block's input of the previous frame
  (zeros before the first frame);
- ``TPool``: ``s`` consecutive frames side by side on the channel axis, mixed by a 1x1 convolution into
  one frame (the encoder's temporal downscale);
- ``TGrow``: a 1x1 convolution to ``s`` times the channels, split into ``s`` consecutive frames (the
  decoder's temporal upscale).

``run_frames`` applies such a sequence to a chunk of frames and returns the state a next chunk needs
(each memory block's last input frame), so a clip processed chunk by chunk equals the whole clip.
The widths, the time strides, the pixel patch and the decoder variant ("base", or the "super" decoder
of taew2_2_super with ConvNeXt-style memory blocks) come from a ``Spec`` read off the weights' shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Spec:
    """What the shapes say about a TAEHV (either half may be absent: its fields are then None)."""

    latent_channels: int
    patch: int  # pixels are pixel-unshuffled by this before the encoder (taew2_2: 2, taeltx: 4)
    enc_width: int | None = None  # 64 in every published file
    enc_strides: tuple[int, ...] | None = None  # the three TPools' time strides (Wan: 2, 2, 1)
    dec_variant: str | None = None  # "base" | "super"
    dec_widths: tuple[int, ...] | None = None  # four widths (base: 256, 128, 64, 64)
    dec_strides: tuple[int, ...] | None = None  # the three TGrows' time strides (Wan: 1, 2, 2)

    @property
    def time_down(self) -> int:
        return _product(self.enc_strides)

    @property
    def time_up(self) -> int:
        return _product(self.dec_strides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Spec:
        tup = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**tup)


def _product(values: tuple[int, ...] | None) -> int:
    out = 1
    for v in values or ():
        out *= int(v)
    return out


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class SuperMemBlock(nn.Module):
    """The super decoder's memory block: 7x7 depthwise, then an inverted 1x1 bottleneck, plus the input."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(n * 2, n * 2, 7, padding=3, groups=n * 2, bias=False),
                                  nn.Conv2d(n * 2, n * 4, 1), nn.ReLU(), nn.Conv2d(n * 4, n, 1, bias=False))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, past], 1)) + x


class TPool(nn.Module):
    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n * stride, n, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        return self.conv(x.reshape(-1, self.stride * c, h, w))


class TGrow(nn.Module):
    def __init__(self, n: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


MEMORY_BLOCKS = (MemBlock, SuperMemBlock)


def make_encoder(spec: Spec) -> nn.Sequential:
    w, layers = spec.enc_width, [_conv(3 * spec.patch ** 2, spec.enc_width), nn.ReLU()]
    for stride in spec.enc_strides:
        layers += [TPool(w, stride), _conv(w, w, stride=2, bias=False), MemBlock(w, w), MemBlock(w, w), MemBlock(w, w)]
    return nn.Sequential(*layers, _conv(w, spec.latent_channels))


def make_decoder(spec: Spec) -> nn.Sequential:
    n, s, out = spec.dec_widths, spec.dec_strides, 3 * spec.patch ** 2
    if spec.dec_variant == "super":
        layers: list[nn.Module] = [nn.Conv2d(spec.latent_channels, n[0], 1, bias=False)]
        for i in range(3):
            layers += [SuperMemBlock(n[i]), SuperMemBlock(n[i]), SuperMemBlock(n[i]), _conv(n[i], n[i + 1] * 4),
                       nn.ReLU(), nn.PixelShuffle(2), TGrow(n[i + 1], s[i])]
        return nn.Sequential(*layers, _conv(n[3], out))
    layers = [Clamp(), _conv(spec.latent_channels, n[0]), nn.ReLU()]
    for i in range(3):
        layers += [MemBlock(n[i], n[i]), MemBlock(n[i], n[i]), MemBlock(n[i], n[i]), nn.Upsample(scale_factor=2),
                   TGrow(n[i], s[i]), _conv(n[i], n[i + 1], bias=False)]
    return nn.Sequential(*layers, nn.ReLU(), _conv(n[3], out))


def run_frames(blocks: nn.Sequential, x: torch.Tensor, memory: list | None = None) -> tuple[torch.Tensor, list]:
    """Apply ``blocks`` to frames ``x`` (N, T, C, H, W), all T at once; returns (N, T', C', H', W') and the
    memory for the next chunk of the same clip (None: this is the clip's first chunk).

    A chunk's frame count must be a multiple of the encoder's time factor (each TPool pools whole groups)."""
    n, t = x.shape[:2]
    h = x.reshape(n * t, *x.shape[2:])
    memory = [None] * len(blocks) if memory is None else memory
    new_memory: list = [None] * len(blocks)
    for i, block in enumerate(blocks):
        if isinstance(block, MEMORY_BLOCKS):
            cur = h.reshape(n, t, *h.shape[1:])
            prev = torch.zeros_like(cur[:, :1]) if memory[i] is None else memory[i].to(cur.dtype)
            past = torch.cat([prev, cur[:, :-1]], 1).reshape(h.shape)
            new_memory[i] = cur[:, -1:].clone()
            h = block(h, past)
        elif isinstance(block, TPool):
            if t % block.stride:
                raise ValueError(f"a chunk of {t} frames cannot be pooled by {block.stride}")
            t //= block.stride
            h = block(h)
        elif isinstance(block, TGrow):
            t *= block.stride
            h = block(h)
        else:
            h = block(h)
    return h.reshape(n, t, *h.shape[1:]), new_memory


def unshuffle(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, T, 3, H, W) pixels to (N, T, 3 p^2, H/p, W/p), as the encoder takes them."""
    if patch == 1:
        return x
    n, t = x.shape[:2]
    return F.pixel_unshuffle(x.flatten(0, 1), patch).unflatten(0, (n, t))


def shuffle(x: torch.Tensor, patch: int) -> torch.Tensor:
    if patch == 1:
        return x
    n, t = x.shape[:2]
    return F.pixel_shuffle(x.flatten(0, 1), patch).unflatten(0, (n, t))


class TinyVideoModel(nn.Module):
    def __init__(self, encoder: nn.Module | None, decoder: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
