"""The images and clips of an evaluation: listing DATA, the protocol's resize, and the DataLoader dataset.

Images are read (``vaestudio.core.images.load_image``: faithful float RGB, bombs refused) and
resized in DataLoader worker processes, so the main process only runs the VAEs. Clips (a video
suffix, or an animated GIF/WebP/PNG: ``filetypes.is_clip``) are read there too, their first
``frames`` frames streamed (``video.iter_frames``) and each resized as an image is. An image or clip
that cannot be read comes back as a ``FailedImage`` with its one-line reason, never as an exception.

Folders are searched for images and clips alike (``vaestudio reconstruct DIR`` lists images only:
that listing, ``images.list_images``, is left as it is).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from vaestudio.core.errors import VaeStudioError, one_line
from vaestudio.core.filetypes import CLIP_SUFFIXES, IMAGE_SUFFIXES

#: what a DATA folder is searched for
DATA_SUFFIXES = IMAGE_SUFFIXES | CLIP_SUFFIXES
#: the most float32 frame bytes one clip may hold once resized (as the window's clip reading)
MAX_CLIP_BYTES = 1 << 30


class DataListError(VaeStudioError):
    """DATA names nothing usable (a usage error: exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class ImageItem:
    index: int  # position in the sorted list (rank = index % world size)
    path: str  # as listed: the rows' ``image`` column and the resume key
    rel: str  # relative path (posix) mirrored under recons/<vae>/


@dataclass
class PreparedImage:
    item: ImageItem
    pixels: torch.Tensor  # (3, H, W) float32 in [0, 1], after the protocol's resize
    notes: list[str] = field(default_factory=list)


@dataclass
class PreparedClip:
    item: ImageItem
    frames: torch.Tensor  # (T, 3, H, W) float32 in [0, 1], each frame after the protocol's resize
    fps: float
    notes: list[str] = field(default_factory=list)


@dataclass
class FailedImage:
    item: ImageItem
    reason: str


def list_data(data: Sequence[str], limit: int | None = None) -> list[ImageItem]:
    """Image and clip files, folders (recursively) and .txt lists (one path per line, relative to the list's
    folder), sorted by path. Entries of a list that do not exist are kept: they are reported as
    unreadable, like any image that cannot be read."""
    found: dict[str, str] = {}
    several = len(data) > 1
    for arg in data:
        p = Path(arg).expanduser()
        if p.is_dir():
            prefix = (p.resolve().name or "data") + "/" if several else ""
            for root, dirs, files in os.walk(p, followlinks=False):
                dirs.sort()
                for f in files:
                    if Path(f).suffix.lower() in DATA_SUFFIXES:
                        q = Path(root) / f
                        found.setdefault(os.path.normpath(str(q)), prefix + q.relative_to(p).as_posix())
        elif p.is_file() and p.suffix.lower() == ".txt":
            try:
                lines = p.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DataListError(f"cannot read the list ({getattr(exc, 'strerror', None) or one_line(exc)})", arg) from None
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line).expanduser()
                if not q.is_absolute():
                    q = p.parent / q
                try:
                    rel = q.relative_to(p.parent).as_posix()
                except ValueError:
                    rel = PurePosixPath(*q.parts[1:]).as_posix()
                found.setdefault(os.path.normpath(str(q)), rel)
        elif p.is_file():
            found.setdefault(os.path.normpath(str(p)), p.name)
        elif p.exists():
            raise DataListError("is neither a file nor a folder", arg)
        else:
            raise DataListError("no such file or folder", arg)
    paths = sorted(found)
    if limit is not None:
        paths = paths[: max(0, limit)]
    seen: dict[str, int] = {}
    items = []
    for i, path in enumerate(paths):
        rel = _safe_rel(found[path])
        n = seen.get(rel, 0)
        seen[rel] = n + 1
        if n:
            stem, dot, ext = rel.rpartition(".")
            rel = f"{stem}-{n}.{ext}" if dot else f"{rel}-{n}"
        items.append(ImageItem(i, path, rel))
    return items


def _safe_rel(rel: str) -> str:
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".", "..", "/")]
    return "/".join(parts) or "image"


def resize_shorter_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W): shorter side to ``size`` (bicubic, antialiased), then the centre ``size`` x ``size``."""
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        if (nh, nw) != (h, w):
            x = F.interpolate(x[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
            x = x.clamp_(0.0, 1.0)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, top : top + size, left : left + size]
    return x.contiguous()


def apply_protocol(pixels: np.ndarray, size: int, resize: str) -> torch.Tensor:
    """An (H, W, 3) float image to the (3, H', W') tensor the protocol evaluates."""
    if size and resize == "longer":
        from vaestudio.core.images import resize_longer_side

        pixels = resize_longer_side(pixels, size)
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    if size and resize == "shorter-crop":
        x = resize_shorter_crop(x, size)
    return x.contiguous()


def read_clip_item(item: ImageItem, size: int, resize: str, frames: int) -> PreparedClip:
    """A clip's first ``frames`` frames, streamed and resized one by one as the protocol resizes images
    (only the resized frames are kept); ``VideoError`` when it cannot be read."""
    from vaestudio.core.video import VideoError, iter_frames

    kept: list[torch.Tensor] = []
    total = 0
    with iter_frames(item.path, frames=frames) as stream:
        for f in stream:
            x = apply_protocol(f, size, resize)
            if kept and x.shape != kept[0].shape:
                raise VideoError("the frame size changes within the clip", item.path)
            total += x.numel() * 4
            if total > MAX_CLIP_BYTES:
                raise VideoError(f"{len(kept)} frames already fill {MAX_CLIP_BYTES >> 30} GiB; choose fewer --frames "
                                 "or a smaller --size", item.path)
            kept.append(x)
        notes = list(stream.notes)
    if not kept:
        raise VideoError("the clip has no frames", item.path)
    return PreparedClip(item, torch.stack(kept), float(stream.fps), notes)


class ImageDataset(torch.utils.data.Dataset):
    """Reads and resizes one image or clip per item; failures come back as ``FailedImage``."""

    def __init__(self, items: Sequence[ImageItem], size: int, resize: str, frames: int) -> None:
        self.items = list(items)
        self.size = size
        self.resize = resize
        self.frames = frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> PreparedImage | PreparedClip | FailedImage:
        from vaestudio.core.filetypes import is_clip
        from vaestudio.core.images import load_image

        item = self.items[i]
        try:
            if is_clip(item.path):
                return read_clip_item(item, self.size, self.resize, self.frames)
            img = load_image(item.path)
            return PreparedImage(item, apply_protocol(img.pixels, self.size, self.resize), list(img.notes))
        except VaeStudioError as exc:
            return FailedImage(item, exc.reason)
        except Exception as exc:  # noqa: BLE001 - any image problem is that image's row, never the run's end
            return FailedImage(item, one_line(exc, with_type=True))


def as_list(batch: list) -> list:
    """DataLoader collate: keep the items (images of different sizes are grouped by the caller)."""
    return batch


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: ImageDataset, batch_size: int, workers: int, mp_context: str | None):
    kw = {}
    if workers > 0:
        kw = {"num_workers": workers, "worker_init_fn": worker_init, "prefetch_factor": 2,
              "multiprocessing_context": mp_context}
    return torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False, collate_fn=as_list, **kw)


# -- names ----------------------------------------------------------------------------------------

_GENERIC = {"vae", "diffusion_pytorch_model", "model", "weights", "checkpoint", "ae", "pytorch_model"}


def unique_tails(split: Sequence[Sequence[str]], joiner: str, depth: list[int] | None = None) -> list[str]:
    """The last ``depth`` parts of each path, joined, with more parent parts wherever two would clash."""
    depth = list(depth) if depth is not None else [1] * len(split)
    while True:
        names = [joiner.join(p[-d:]) for p, d in zip(split, depth, strict=True)]
        clash = {n for n in names if names.count(n) > 1}
        grow = [i for i, n in enumerate(names) if n in clash and depth[i] < len(split[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def short_names(sources: Sequence[str]) -> list[str]:
    """Short unique names for VAE sources: the file or folder name (without the weight suffix), with
    the parent folders it takes to tell them apart; never a path cut at the left end."""

    def parts(src: str) -> list[str]:
        s = src.rstrip("/\\")
        if s.startswith("hf://"):
            s = s[5:]
        ps = [p for p in re.split(r"[/\\]+", s) if p not in ("", ".", "..", "~")]
        if ps:
            stem = ps[-1]
            for suf in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
                if stem.lower().endswith(suf):
                    stem = stem[: -len(suf)]
                    break
            ps[-1] = stem
        return ps or ["vae"]

    split = [parts(s) for s in sources]
    names = unique_tails(split, "-", [1 if (len(p) == 1 or p[-1].lower() not in _GENERIC) else 2 for p in split])
    out: list[str] = []
    for n in names:
        name = re.sub(r"[^\w.+-]+", "_", n).strip("._") or "vae"
        k, base = 2, name
        while name in out:
            name = f"{base}-{k}"
            k += 1
        out.append(name)
    return out
