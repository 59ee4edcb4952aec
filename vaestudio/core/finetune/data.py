"""The images of a fine-tune: the held-out split, the data order, random crops with flips.

DATA is listed as ``evaluate`` lists it (``evaluate.data.list_data``: files, folders, .txt lists);
clips are left out. An image is held out when the fixed hash of its path (sha256, so the same in
every run and on every machine) falls below the ``--val`` fraction, or every image of a ``--val``
folder is. The order is a function of the global sample index alone (see the package docstring),
so a resumed run, and every rank of a torchrun, know which image and which crop come next without
any state but the step.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vaestudio.core.errors import DataError, VaeStudioError, one_line
from vaestudio.core.evaluate.data import list_data, resize_shorter_crop
from vaestudio.core.finetune.options import FinetuneError

#: decoded images kept in memory (bytes of float32 pixels), so small datasets are read once
CACHE_BYTES = 2 << 30


def held_out_hash(path: str) -> float:
    """A number in [0, 1) fixed by the path's text."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Split:
    train: list[str]
    val: list[str]


def split_data(data: list[str], val: str) -> Split:
    """The training and held-out image paths (sorted) for DATA and ``--val FRACTION|DIR``."""
    from vaestudio.core.filetypes import is_clip

    paths = [it.path for it in list_data(data) if not is_clip(it.path)]
    if Path(val).expanduser().is_dir():
        held = [it.path for it in list_data([val]) if not is_clip(it.path)]
        chosen = set(held)
        train = [p for p in paths if p not in chosen]
    else:
        try:
            fraction = float(val)
        except ValueError:
            raise FinetuneError(f"--val must be a fraction or a folder, and '{val}' is neither") from None
        if not 0.0 <= fraction < 1.0:
            raise FinetuneError("--val's fraction must be at least 0 and below 1")
        held = [p for p in paths if held_out_hash(p) < fraction]
        train = [p for p in paths if held_out_hash(p) >= fraction]
    if not train:
        raise FinetuneError("DATA holds no training images (after the held-out ones)")
    return Split(train, held)


def sample_item(seed: int, g: int, n: int) -> int:
    """The training item of global sample ``g``: its place in the permutation of its epoch."""
    epoch, pos = divmod(g, n)
    gen = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
    return int(torch.randperm(n, generator=gen)[pos])


def _mix(*parts: int) -> int:
    h = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") & ((1 << 63) - 1)


def random_crop(x: torch.Tensor, size: int, seed: int, g: int) -> torch.Tensor:
    """A ``size`` x ``size`` crop of a (3, H, W) image at a place, and with a flip, fixed by (seed, g);
    an image with a side below ``size`` is first enlarged so its shorter side is ``size``."""
    h, w = x.shape[-2:]
    if min(h, w) < size:
        s = size / min(h, w)
        x = F.interpolate(x[None], size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic",
                          antialias=True, align_corners=False)[0].clamp_(0.0, 1.0)
        h, w = x.shape[-2:]
    gen = torch.Generator().manual_seed(_mix(seed, g, 0xC209))
    top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    flip = bool(torch.rand((), generator=gen) < 0.5)
    crop = x[:, top : top + size, left : left + size]
    return (crop.flip(-1) if flip else crop).contiguous()


class ImageSource:
    """Reads images as (3, H, W) float tensors in [0, 1], keeping recent ones; a failure is remembered
    (the image is then skipped every time, which keeps the data order a function of the step)."""

    def __init__(self, cache_bytes: int = CACHE_BYTES) -> None:
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_bytes = cache_bytes
        self.held = 0
        self.failed: dict[str, str] = {}

    def read(self, path: str) -> torch.Tensor | None:
        if path in self.failed:
            return None
        if (x := self.cache.get(path)) is not None:
            self.cache.move_to_end(path)
            return x
        from vaestudio.core.images import load_image

        try:
            pixels = load_image(path).pixels
        except VaeStudioError as exc:
            self.failed[path] = exc.reason
            return None
        except Exception as exc:  # noqa: BLE001 - an unreadable image is skipped, never the run's end
            self.failed[path] = one_line(exc, with_type=True)
            return None
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1).contiguous()
        self.cache[path] = x
        self.held += x.numel() * 4
        while self.held > self.cache_bytes and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.held -= old.numel() * 4
        return x


def training_sample(src: ImageSource, train: list[str], seed: int, g: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """Global sample ``g``'s crop, and the images that failed on the way (an unreadable image is
    replaced by the next one of the same epoch's order: the same one in every run)."""
    n = len(train)
    failed = []
    for k in range(n):
        path = train[sample_item(seed, g + k, n) if k == 0 else (sample_item(seed, g, n) + k) % n]
        x = src.read(path)
        if x is not None:
            return random_crop(x, size, seed, g), failed
        failed.append(path)
    raise DataError("none of the training images can be read")


def validation_images(src: ImageSource, val: list[str], size: int) -> tuple[list[torch.Tensor], list[str]]:
    """The held-out images, each resized (shorter side to ``size``) and centre-cropped; the unreadable."""
    kept, failed = [], []
    for p in val:
        x = src.read(p)
        if x is None:
            failed.append(p)
        else:
            kept.append(resize_shorter_crop(x, size))
    return kept, failed
