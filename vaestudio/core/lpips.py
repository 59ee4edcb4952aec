"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
version 0.1 with the AlexNet backbone: the number VAE model cards report.

The network is the ``lpips`` package's (``lpips.LPIPS(net="alex")``), written here in plain torch so that it
needs neither torchvision (which does not import beside this project's torch build) nor a download of
torchvision's AlexNet: its weights ship with vaestudio (``resources/lpips/alex.safetensors``, 2.5M
parameters, in the ``lpips`` package's own state-dict keys; that package lists its five linear layers a
second time as ``lins.N``). ``scripts/lpips_weights.py`` makes that file and says where the tensors come from.

Inputs are (N, 3, H, W) in [-1, 1]; the distance is per image, 0 for identical images.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).resolve().parents[1] / "resources" / "lpips" / "alex.safetensors"
#: (in, out, kernel, stride, padding) of torchvision's AlexNet ``features`` convolutions, by their index there
CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
         10: (256, 256, 3, 1, 1)}
#: the ``features`` indices each of lpips' five slices holds; each slice ends after a ReLU
SLICES = ((0, 1), (2, 3, 4), (5, 6, 7), (8, 9), (10, 11))
CHANNELS = (64, 192, 384, 256, 256)
#: the smallest image side the network takes (after two 3x3 stride-2 poolings something is left)
MIN_SIDE = 31


def _layer(i: int) -> nn.Module:
    if i in CONVS:
        cin, cout, k, s, p = CONVS[i]
        return nn.Conv2d(cin, cout, k, s, p)
    return nn.MaxPool2d(3, 2) if i in (2, 5) else nn.ReLU()


class _Lin(nn.Module):
    """One learned 1x1 weighting of a layer's squared feature differences (lpips' ``NetLinLayer``; its
    dropout, index 0, does nothing in evaluation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _AlexNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for n, indices in enumerate(SLICES, start=1):
            s = nn.Sequential()
            for i in indices:
                s.add_module(str(i), _layer(i))
            self.add_module(f"slice{n}", s)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for n in range(1, len(SLICES) + 1):
            x = getattr(self, f"slice{n}")(x)
            out.append(x)
        return out


class _Scaling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class Lpips(nn.Module):
    """LPIPS v0.1 (AlexNet), as ``lpips.LPIPS(net="alex", version="0.1")`` computes it."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _AlexNet()
        for i, c in enumerate(CHANNELS):
            self.add_module(f"lin{i}", _Lin(c))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pairs in [-1, 1] -> (N, 1, 1, 1) distances."""
        fa, fb = self.net(self.scaling_layer(a)), self.net(self.scaling_layer(b))
        total = 0
        for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
            d = getattr(self, f"lin{i}")((_unit(x) - _unit(y)) ** 2)
            total = total + d.mean(dim=(2, 3), keepdim=True)
        return total


def weights_present() -> bool:
    return WEIGHTS.is_file()


@cache
def model() -> Lpips:
    """The LPIPS network with its shipped weights, loaded strictly (the file is validated safetensors)."""
    from safetensors.torch import load_file

    net = Lpips()
    net.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return net.eval().requires_grad_(False)
