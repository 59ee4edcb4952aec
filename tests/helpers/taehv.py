"""The tiny video autoencoders' (TAEHV) reference for the tests: the author's state-dict keys and shapes
written out from taehv.py's ``TAEHV.__init__`` and its forward pass re-stated frame by frame (see
tests/test_taehv.py's docstring), and the writer of the author's file layout."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# (patch, latent channels, encoder time strides, decoder time strides, decoder variant) of the published files
PUBLISHED = {
    "taew2_1": (1, 16, (2, 2, 1), (1, 2, 2), "base"),
    "taehv": (1, 16, (2, 2, 1), (1, 2, 2), "base"),
    "taew2_2": (2, 48, (2, 2, 1), (1, 2, 2), "base"),
    "taew2_2_super": (2, 48, (2, 2, 1), (1, 2, 2), "super"),
    "taeltx_2": (4, 128, (2, 2, 2), (2, 2, 2), "base"),
    "taeltx2_3": (4, 128, (2, 2, 2), (2, 2, 2), "base"),
}
REAL_WIDTHS = {"base": (64, (256, 128, 64, 64)), "super": (64, (512, 256, 128, 64))}
TINY_WIDTHS = {"base": (8, (16, 8, 8, 8)), "super": (8, (16, 8, 8, 8))}


# -- the reference: keys and shapes as taehv.py's TAEHV.__init__ makes them ------------------------------

def reference_shapes(name: str, widths: dict = TINY_WIDTHS, encoder: bool = True) -> dict[str, tuple]:
    p, c, enc_s, dec_s, variant = PUBLISHED[name]
    w, n = widths[variant]
    shapes: dict[str, tuple] = {}

    def conv(key, o, i, k=3, bias=True):
        shapes[f"{key}.weight"] = (o, i, k, k)
        if bias:
            shapes[f"{key}.bias"] = (o,)

    def memblock(key, f):  # conv(2f, f), ReLU, conv(f, f), ReLU, conv(f, f); the skip is Identity
        conv(f"{key}.conv.0", f, 2 * f)
        conv(f"{key}.conv.2", f, f)
        conv(f"{key}.conv.4", f, f)

    if encoder:
        conv("encoder.0", w, 3 * p * p)  # 1 is a ReLU
        for pool, s in zip((2, 7, 12), enc_s, strict=True):
            conv(f"encoder.{pool}.conv", w, w * s, 1, bias=False)
            conv(f"encoder.{pool + 1}", w, w, bias=False)  # stride 2
            for j in (2, 3, 4):
                memblock(f"encoder.{pool + j}", w)
        conv("encoder.17", c, w)
    if variant == "base":  # 0 is the Clamp, 2 a ReLU; per stage 3 MemBlocks, Upsample, TGrow, conv
        conv("decoder.1", n[0], c)
        for i, first in enumerate((3, 9, 15)):
            for j in range(3):
                memblock(f"decoder.{first + j}", n[i])
            conv(f"decoder.{first + 4}.conv", n[i] * dec_s[i], n[i], 1, bias=False)
            conv(f"decoder.{first + 5}", n[i + 1], n[i], bias=False)
    else:  # the super decoder: 1x1 in, per stage 3 SuperMemBlocks, conv, ReLU, PixelShuffle, TGrow
        conv("decoder.0", n[0], c, 1, bias=False)
        for i, first in enumerate((1, 8, 15)):
            for j in range(3):
                key = f"decoder.{first + j}"
                conv(f"{key}.conv.0", 2 * n[i], 1, 7, bias=False)  # depthwise
                conv(f"{key}.conv.1", 4 * n[i], 2 * n[i], 1)
                conv(f"{key}.conv.3", n[i], 4 * n[i], 1, bias=False)
            conv(f"decoder.{first + 3}", 4 * n[i + 1], n[i])
            conv(f"decoder.{first + 6}.conv", n[i + 1] * dec_s[i], n[i + 1], 1, bias=False)
    conv("decoder.22", 3 * p * p, n[3])  # 21 is a ReLU in the base decoder
    return shapes


def reference_state(name: str, seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    """Random weights, scaled so that activations stay near 1 and most decoded values are not clamped."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in reference_shapes(name, **kw).items():
        fan_in = max(1, int(np.prod(shape[1:])))
        gain = 1.0 if PUBLISHED[name][4] == "super" and k.startswith("decoder.") else 1.2  # no Clamp there
        out[k] = (torch.randn(shape, generator=gen) * (gain / fan_in ** 0.5 if len(shape) > 1 else 0.1)).contiguous()
    return out


def _conv(sd, key, x, stride=1, groups=1):
    w = sd[f"{key}.weight"]
    return F.conv2d(x, w, sd.get(f"{key}.bias"), stride=stride, padding=w.shape[-1] // 2, groups=groups)


def _memblocks(sd, keys, frames, super_=False):
    for key in keys:
        out, past = [], torch.zeros_like(frames[0])
        for x in frames:
            h = torch.cat([x, past], 1)
            if super_:
                h = _conv(sd, f"{key}.conv.0", h, groups=h.shape[1])
                out.append(_conv(sd, f"{key}.conv.3", F.relu(_conv(sd, f"{key}.conv.1", h))) + x)
            else:
                h = _conv(sd, f"{key}.conv.4", F.relu(_conv(sd, f"{key}.conv.2", F.relu(_conv(sd, f"{key}.conv.0", h)))))
                out.append(F.relu(h + x))
            past = x
        frames = out
    return frames


def _grow(sd, key, frames):
    out = []
    for x in frames:
        y = _conv(sd, key, x)
        out += list(y.chunk(y.shape[1] // x.shape[1], dim=1))
    return out


def reference_encode(sd, name, clip: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> (T', C, h, w)."""
    p, _, enc_s, _, _ = PUBLISHED[name]
    t = int(np.prod(enc_s))
    frames = list(clip[:, None]) + [clip[-1:]] * ((-len(clip)) % t)
    frames = [F.relu(_conv(sd, "encoder.0", F.pixel_unshuffle(x, p))) for x in frames]
    for pool, s in zip((2, 7, 12), enc_s, strict=True):
        frames = [_conv(sd, f"encoder.{pool}.conv", torch.cat(frames[i:i + s], 1)) for i in range(0, len(frames), s)]
        frames = [_conv(sd, f"encoder.{pool + 1}", x, stride=2) for x in frames]
        frames = _memblocks(sd, [f"encoder.{pool + j}" for j in (2, 3, 4)], frames)
    return torch.cat([_conv(sd, "encoder.17", x) for x in frames])


def reference_decode(sd, name, latent: torch.Tensor) -> torch.Tensor:
    """(T', C, h, w) -> (1 + (T' - 1) t, 3, H, W) in [0, 1]."""
    p, _, _, dec_s, variant = PUBLISHED[name]
    frames = list(latent[:, None])
    if variant == "base":
        frames = [F.relu(_conv(sd, "decoder.1", torch.tanh(z / 3) * 3)) for z in frames]
        for first in (3, 9, 15):
            frames = _memblocks(sd, [f"decoder.{first + j}" for j in range(3)], frames)
            frames = _grow(sd, f"decoder.{first + 4}.conv", [F.interpolate(x, scale_factor=2.0) for x in frames])
            frames = [_conv(sd, f"decoder.{first + 5}", x) for x in frames]
        frames = [F.relu(x) for x in frames]
    else:
        frames = [_conv(sd, "decoder.0", z) for z in frames]
        for first in (1, 8, 15):
            frames = _memblocks(sd, [f"decoder.{first + j}" for j in range(3)], frames, super_=True)
            frames = [F.pixel_shuffle(F.relu(_conv(sd, f"decoder.{first + 3}", x)), 2) for x in frames]
            frames = _grow(sd, f"decoder.{first + 6}.conv", frames)
    out = torch.cat([F.pixel_shuffle(_conv(sd, "decoder.22", x), p).clamp(0, 1) for x in frames])
    return out[int(np.prod(dec_s)) - 1:]


def clip(frames: int = 9, size: int = 32, seed: int = 0) -> np.ndarray:
    """A moving gradient with grain: (T, H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = [np.stack([(xx + 0.1 * t) % 1, yy, 0.5 + 0.15 * rng.standard_normal((size, size))], axis=2)
           for t in range(frames)]
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def close(a, b, tol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=tol, atol=tol)


def write(tmp_path, name: str, sd: dict, suffix: str = ".safetensors"):
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


# -- the tests -------------------------------------------------------------------------------------------
