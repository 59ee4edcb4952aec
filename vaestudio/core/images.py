"""Reading images faithfully into float RGB arrays, and writing results.

Every image becomes an ``(H, W, 3)`` float32 array in [0, 1]. Modes are converted without losing
range: 16-bit and float images are scaled, not clipped; alpha is composited on a background;
palette, grey, CMYK and other modes are converted to RGB. EXIF orientation is applied.
Decompression bombs are refused from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vaestudio.core.errors import ImageLoadError, VaeStudioError, one_line
from vaestudio.core.files import write_atomic
from vaestudio.core.filetypes import IMAGE_SUFFIXES

#: Formats we accept; anything else Pillow may know is refused with a clear message.
SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "TIFF", "GIF"}
#: Largest image we decode (pixels). 64 MP is a 8000x8000 photo; larger is almost surely a bomb.
DEFAULT_MAX_PIXELS = 64_000_000


@dataclass
class LoadedImage:
    """An image as float RGB in [0, 1] with what we learned while reading it."""

    pixels: np.ndarray  # (H, W, 3) float32
    name: str
    source_format: str
    source_mode: str
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def load_image(
    source: str | os.PathLike | bytes,
    *,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size: int | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Read an image file (or encoded bytes) into float RGB.

    Parameters
    ----------
    source
        A path, or the bytes of an encoded image (e.g. from the clipboard).
    background
        RGB in [0, 1] that transparent pixels are composited on.
    max_pixels
        Images with more pixels are refused before decoding (decompression bombs).
    size
        If given, resize so that the longer side is ``size`` pixels, keeping the aspect ratio.

    Raises
    ------
    ImageLoadError
        With a one-sentence reason: missing, empty, not an image, unsupported format, truncated,
        too large.
    """
    label = name or ("clipboard image" if isinstance(source, bytes) else str(source))
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError("the image data is empty", label)
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        if not stream.exists():
            raise ImageLoadError("no such file", label)
        if stream.is_dir():
            raise ImageLoadError("is a folder, not an image file", label)
        if stream.stat().st_size == 0:
            raise ImageLoadError("the file is empty", label)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow warns (and errors at 2x) above its own limit; ours is checked below.
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on odd TIFF tags and the like
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                fmt = (im.format or "").upper()
                if fmt not in SUPPORTED_FORMATS:
                    raise ImageLoadError(
                        f"{fmt or 'this'} images are not supported (use PNG, JPEG, WebP, BMP, TIFF or GIF)",
                        label,
                    )
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise ImageLoadError("the image has no pixels", label)
                if w * h > max_pixels:
                    raise ImageLoadError(
                        f"the image is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the "
                        f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)",
                        label,
                    )
                if getattr(im, "n_frames", 1) > 1:
                    notes.append(f"{fmt} has {im.n_frames} frames; using the first")
                    im.seek(0)
                mode = im.mode
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb = _to_float_rgb(im, background)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError("refused as a possible decompression bomb: it has more pixels than the image "
                             "reader allows", label) from None
    except UnidentifiedImageError:
        raise ImageLoadError("not an image file Pillow can identify (corrupt or wrong format)", label) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        reason = one_line(exc).rstrip(".")
        if "truncated" in reason.lower():
            reason = "the image file is truncated"
        raise ImageLoadError(f"could not decode the image ({reason})", label) from None
    if size is not None:
        rgb = resize_longer_side(rgb, size)
    return LoadedImage(rgb, name or _name_of(source), fmt, mode, notes)


def _name_of(source: object) -> str:
    return "clipboard" if isinstance(source, bytes) else Path(str(source)).stem


def _to_float_rgb(im: Image.Image, background: tuple[float, float, float]) -> np.ndarray:
    """Convert any Pillow mode to (H, W, 3) float32 in [0, 1] without clipping range."""
    mode = im.mode
    alpha: np.ndarray | None = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        elif mode == "I":
            # 16-bit PNGs arrive as "I" with values up to 65535; true 32-bit data is scaled by range.
            lo, hi = float(arr.min()), float(arr.max())
            if lo >= 0 and hi <= 65535:
                arr = arr / (255.0 if hi <= 255 else 65535.0)
            else:
                arr = (arr - lo) / max(hi - lo, 1e-12)
        else:  # float
            arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
            lo, hi = float(arr.min()), float(arr.max())
            if lo < 0.0 or hi > 1.0:
                arr = (arr - lo) / max(hi - lo, 1e-12)
        rgb = np.repeat(arr[..., None], 3, axis=2)
    else:
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            im = im.convert("RGB")
        elif mode in ("LA", "La", "PA", "RGBa"):
            im = im.convert("RGBA")
        elif mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in mode else "RGB")
        arr = np.asarray(im, dtype=np.float32) / 255.0
        if arr.shape[2] == 4:
            alpha = arr[..., 3:4]
        rgb = arr[..., :3]
    rgb = rgb.astype(np.float32, copy=False)
    if alpha is not None:
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        rgb = rgb * alpha + bg * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32)


def resize_longer_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the longer side is ``size`` pixels (aspect ratio kept, Lanczos)."""
    if size < 8:
        raise ValueError("--size must be at least 8 pixels")
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) == (w, h):
        return rgb
    channels = [
        np.asarray(Image.fromarray(rgb[..., c], mode="F").resize((nw, nh), Image.Resampling.LANCZOS))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float [0, 1] image to uint8 with rounding."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) float or uint8 image as PNG, atomically (no half-written file on error)."""
    path = Path(path)
    data = rgb if rgb.dtype == np.uint8 else to_uint8(rgb)
    buf = io.BytesIO()
    Image.fromarray(data).save(buf, format="PNG")
    return write_atomic(path, buf.getvalue())


class NoImageFiles(VaeStudioError):
    """The images and folders named hold no image file: a usage error (exit code 2), the same rule for
    every command that takes images (``reconstruct``, ``analyze``, ``compare``, ``evaluate``)."""

    exit_code = 2

    def __init__(self, named: Sequence[object]) -> None:
        super().__init__("no image files found", ", ".join(map(str, named)))


def list_images(paths: Sequence[str]) -> list[Path]:
    """Expand folders to the image files inside them (sorted); files are kept as given.

    Raises ``NoImageFiles`` when that leaves nothing (only folders without images were named)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()))
        else:
            out.append(p)
    if not out:
        raise NoImageFiles(paths)
    return out
