"""Reading and writing video clips.

A clip is read as RGB float32 frames in [0, 1], ``(T, H, W, 3)``, at its display orientation, with its
frame rate. One reader per kind of file: containers (.mp4 .webm .mov .mkv .avi, and whatever else
FFmpeg opens) through PyAV (``_av.py``); animated .gif / .webp / .png / .apng through Pillow
(``_animated.py``), which composes their frames as browsers do. ``iter_frames`` streams: frames are
decoded as they are asked for, so memory depends on what the caller keeps, not on the clip's length;
``read_clip`` collects a part (``start`` seconds, ``frames`` N). ``size`` resizes as images are
(``images.resize_longer_side``). ``write_video`` (``write.py``) writes H.264 where PyAV has it.

Every failure (missing, broken, truncated, 0 frames, unknown codec, a still image named .mp4, a read
past its deadline) is a ``VideoError``: one sentence, never a traceback, never a hang.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaestudio.core.filetypes import ANIMATED_SUFFIXES
from vaestudio.core.images import resize_longer_side
from vaestudio.core.video.clip import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    Clip,
    FrameSource,
    VideoError,
)
from vaestudio.core.video.write import write_video

__all__ = ["Clip", "FrameStream", "VideoError", "iter_frames", "read_clip", "write_video"]


class FrameStream:
    """The frames of a clip, decoded as they are iterated; ``fps``, ``codec`` and ``notes`` are known
    from the start (notes may grow while reading). Close it (or use ``with``) to stop early."""

    def __init__(self, name: str, source: FrameSource, frames: Iterator[np.ndarray]) -> None:
        self.name = name
        self.fps = source.fps
        self.codec = source.codec
        self.notes = source.notes
        self._frames = frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._frames

    def close(self) -> None:
        self._frames.close()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check(path: Path, start: float, frames: int | None, size: int | None) -> None:
    if not path.exists():
        raise VideoError("no such file", path)
    if path.is_dir():
        raise VideoError("is a folder, not a video file", path)
    if path.stat().st_size == 0:
        raise VideoError("the file is empty", path)
    if not start >= 0:
        raise ValueError("start must be a number of seconds >= 0")
    if frames is not None and frames < 1:
        raise ValueError("frames must be at least 1")
    if size is not None and size < 8:
        raise ValueError("size must be at least 8 pixels")


def iter_frames(path: str | os.PathLike, *, start: float = 0.0, frames: int | None = None,
                size: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> FrameStream:
    """Open a clip and stream its frames, ``(H, W, 3)`` float32 in [0, 1] each.

    Parameters
    ----------
    start
        Seconds into the clip of the first frame wanted.
    frames
        At most this many frames (all to the end when None).
    size
        Resize so that the longer side is ``size`` pixels.
    timeout
        Seconds the whole read may take; past it the next frame raises ``VideoError``.

    Raises
    ------
    VideoError
        On opening (what the file is) or while iterating (broken, truncated, no frames).
    """
    path = Path(path)
    _check(path, start, frames, size)
    if path.suffix.lower() in ANIMATED_SUFFIXES:
        from vaestudio.core.video._animated import open_animation as opener
    else:
        from vaestudio.core.video._av import open_container as opener
    source, raw = opener(path, start=start, frames=frames, timeout=timeout)
    if size is not None:
        raw = _resized(raw, size)
    return FrameStream(path.stem, source, raw)


def _resized(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    try:
        for f in frames:
            yield resize_longer_side(f, size)
    finally:
        frames.close()


def read_clip(path: str | os.PathLike, *, start: float = 0.0, frames: int | None = None,
              size: int | None = None, timeout: float = DEFAULT_TIMEOUT,
              max_bytes: int = DEFAULT_MAX_BYTES, keep_what_fits: bool = False) -> Clip:
    """Read a clip (or the part of it that ``start`` and ``frames`` choose) into memory.

    ``max_bytes`` bounds the float32 frames collected: a longer clip raises ``VideoError`` saying to
    choose a part or a smaller size (stream it with ``iter_frames`` instead), or, with ``keep_what_fits``,
    ends with the frames that fit and a note saying so (the window: a part can be chosen then).
    """
    kept: list[np.ndarray] = []
    notes: list[str] = []
    with iter_frames(path, start=start, frames=frames, size=size, timeout=timeout) as stream:
        total = 0
        for f in stream:
            if kept and f.shape != kept[0].shape:
                raise VideoError(f"the frame size changes within the clip ({kept[0].shape[1]}x{kept[0].shape[0]} "
                                 f"then {f.shape[1]}x{f.shape[0]})", path)
            total += f.nbytes
            if total > max_bytes and keep_what_fits and kept:
                notes.append(f"only {len(kept)} frames of {f.shape[1]}x{f.shape[0]} fit in "
                             f"{max_bytes / 2**30:g} GiB: choose a part (start, frames) for the others")
                break
            if total > max_bytes:
                raise VideoError(f"{len(kept)} frames of {f.shape[1]}x{f.shape[0]} already fill "
                                 f"{max_bytes / 2**30:.0f} GiB; choose fewer frames or a smaller size", path)
            kept.append(f)
    return Clip(np.stack(kept), stream.fps, stream.name, start, stream.codec, stream.notes + notes)
