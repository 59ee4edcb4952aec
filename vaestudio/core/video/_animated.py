"""Animated images (.gif, .webp, .png/.apng) through Pillow, frame by frame.

Pillow composes each frame as a browser shows it (GIF disposal, APNG blending, WebP canvases), which
FFmpeg's image decoders do not all do (its WebP decoder has no animation); so these formats are read
here and only here. The frame rate is 1000 / the mean frame duration (ms); frames are converted as
images are (``vaestudio.core.images``: alpha composited on white, any mode to RGB).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaestudio.core.errors import one_line
from vaestudio.core.images import _to_float_rgb
from vaestudio.core.video.clip import MAX_FRAME_PIXELS, FrameSource, VideoError

#: Browsers show GIF frames without a delay at about 10 fps.
_DEFAULT_FPS = 10.0
_ERRORS = (OSError, ValueError, EOFError, SyntaxError, MemoryError, UnidentifiedImageError)


def open_animation(path: Path, *, start: float, frames: int | None, timeout: float
                   ) -> tuple[FrameSource, Iterator[np.ndarray]]:
    """Open an animated image and return what it is and a generator of its frames."""
    label = str(path)
    try:
        im = Image.open(path)
    except _ERRORS as exc:
        raise VideoError(f"not an animated image Pillow can read ({one_line(exc).rstrip('.')})", label) from None
    try:
        n = int(getattr(im, "n_frames", 1))
        if n < 2:
            raise VideoError(f"a still {im.format or 'image'} image (one frame), not an animation: open it as "
                             "an image", label)
        w, h = im.size
        if w * h > MAX_FRAME_PIXELS:
            raise VideoError(f"the frames are {w}x{h}, more than the {MAX_FRAME_PIXELS / 1e6:.0f} MP limit", label)
        durations = []
        for i in range(n):  # seeking reads each frame's header only (WebP says durations once decoded)
            im.seek(i)
            if im.format == "WEBP":
                im.load()
            durations.append(float(im.info.get("duration") or 0))
        im.seek(0)
    except VideoError:
        im.close()
        raise
    except _ERRORS as exc:
        im.close()
        raise VideoError(f"the animation is broken or truncated ({one_line(exc).rstrip('.')})", label) from None
    notes = []
    mean = sum(durations) / n
    if mean > 0:
        fps = 1000.0 / mean
        if max(durations) - min(durations) > 1:
            notes.append(f"frame durations vary ({min(durations):g}-{max(durations):g} ms); shown at the mean rate")
    else:
        fps = _DEFAULT_FPS
        notes.append(f"the animation gives no frame durations; taken as {_DEFAULT_FPS:g} fps")
    durations = [d if d > 0 else 1000.0 / fps for d in durations]
    source = FrameSource(fps, (im.format or "image").lower(), notes)
    return source, _frames(im, durations, label, start, frames, time.monotonic() + timeout, timeout)


def _frames(im: Image.Image, durations: list[float], label: str, start: float, limit: int | None,
            deadline: float, timeout: float) -> Iterator[np.ndarray]:
    done = 0
    t = 0.0
    try:
        for i, ms in enumerate(durations):
            if time.monotonic() > deadline:
                raise VideoError(f"reading the animation took longer than {timeout:g} s; gave up", label)
            at, t = t, t + ms / 1000.0
            if at < start - 0.5 * ms / 1000.0 - 1e-9:  # the frame nearest ``start``, as for videos
                continue
            im.seek(i)
            yield _to_float_rgb(im.convert("RGBA"), (1.0, 1.0, 1.0))
            done += 1
            if limit is not None and done >= limit:
                return
    except VideoError:
        raise
    except _ERRORS as exc:
        raise VideoError(f"the animation is broken or truncated after frame {done} "
                         f"({one_line(exc).rstrip('.')})", label) from None
    finally:
        im.close()
    if done == 0:
        raise VideoError(f"the animation has no frames at or after {start:g} s", label)
