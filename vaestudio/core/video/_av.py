"""Video containers (.mp4 .webm .mov .mkv .avi ...) through PyAV, frame by frame.

Frames come as RGB at their display orientation: the display matrix (the side data FFmpeg attaches to
each frame from the container's ``rotate``/display matrix) is applied as FFmpeg's own player does, in
quarter turns and mirrors (all eight orientations; a matrix that is not one of them is left as stored,
with a note). ``start`` seeks to the key frame before
it and skips to the first frame at or after it. Every failure is a ``VideoError`` with one sentence.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaestudio.core.errors import one_line
from vaestudio.core.video.clip import MAX_FRAME_PIXELS, FrameSource, VideoError

#: FFmpeg demuxers that read one still image (a PNG or JPEG renamed .mp4 opens as one of these).
_STILL_FORMATS = ("image2", "_pipe")


def _ffmpeg_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, OSError, ValueError, EOFError, MemoryError, RuntimeError)


def _reason(exc: BaseException) -> str:
    text = one_line(exc)
    # PyAV's messages are "[Errno N] Invalid data found when processing input: '<path>'": keep the words
    if text.startswith("[Errno"):
        text = text.split("]", 1)[-1].strip()
    return text.split(": '", 1)[0].rstrip(".").strip() or type(exc).__name__


def _fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return None


def _declared_frames(container, stream, fps: float) -> int:
    """How many frames the file says it holds (0 when it does not say)."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base) * fps)
    if container.duration and len(container.streams) == 1:  # with audio the container may be longer
        return round(container.duration / 1_000_000 * fps)
    return 0


def _display(frame) -> tuple[tuple[int, int, int, int] | None, str]:
    """The frame's display matrix as its 2x2 part (a, b, c, d), each -1, 0 or 1 (None: show as stored),
    and what showing it does, in words ("" when nothing)."""
    import struct

    raw = next((bytes(memoryview(d)) for d in frame.side_data if str(d.type).endswith("DISPLAYMATRIX")), None)
    if raw is None or len(raw) != 36:
        return None, ""
    m = struct.unpack("<9i", raw)
    a, b, c, d = (m[0] / 65536, m[1] / 65536, m[3] / 65536, m[4] / 65536)
    unit = [round(v) for v in (a, b, c, d)]
    if any(abs(v - r) > 1e-3 for v, r in zip((a, b, c, d), unit, strict=True)) or sum(map(abs, unit)) != 2 \
            or (unit[0] != 0) == (unit[1] != 0):
        return None, "its display matrix is not a quarter turn or a mirror; shown as stored"
    if unit == [1, 0, 0, 1]:
        return None, ""
    mirrored = unit[0] * unit[3] - unit[1] * unit[2] < 0
    what = "mirrored" if mirrored else f"turned {frame.rotation:+d} degrees"
    return (unit[0], unit[1], unit[2], unit[3]), f"{what} to its display orientation (the video's display matrix)"


def _upright(rgb: np.ndarray, matrix: tuple[int, int, int, int] | None) -> np.ndarray:
    """The frame as displayed. FFmpeg's display matrix maps a stored pixel (column p, row q) to
    (a p + c q, b p + d q); with ``a == 0`` the axes swap."""
    if matrix is None:
        return rgb
    a, b, c, d = matrix
    if a == 0:
        out = rgb.transpose(1, 0, 2)  # out[p, q] = rgb[q, p]: the shown column is c q, the shown row b p
        col, row = c, b
    else:
        out, col, row = rgb, a, d
    if col < 0:
        out = out[:, ::-1]
    if row < 0:
        out = out[::-1]
    return np.ascontiguousarray(out)


def open_container(path: Path, *, start: float, frames: int | None, timeout: float
                   ) -> tuple[FrameSource, Iterator[np.ndarray]]:
    """Open ``path`` and return what it is and a generator of its frames ((H, W, 3) float32 in [0, 1])."""
    import av

    errors = _ffmpeg_errors()
    label = str(path)
    deadline = time.monotonic() + timeout
    try:
        # FFmpeg's own interrupt bounds the open (at least a second, so a tiny read budget still opens)
        container = av.open(str(path), timeout=max(timeout, 1.0))
    except av.error.ExitError:
        raise VideoError(f"opening the video took longer than {max(timeout, 1.0):g} s; gave up", label) from None
    except av.error.EOFError:
        raise VideoError("the video has no frames (the file ends before its first one: truncated or empty)",
                         label) from None
    except errors as exc:
        raise VideoError(f"not a video FFmpeg can read ({_reason(exc)})", label) from None
    try:
        fmt = container.format.name or ""
        if any(fmt.endswith(s) for s in _STILL_FORMATS):
            codec = container.streams.video[0].codec_context.name if container.streams.video else fmt
            raise VideoError(f"a still {codec.upper()} image, not a video: open it as an image", label)
        if not container.streams.video:
            raise VideoError("the file has no video stream (no frames to read)", label)
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError("the video's codec is not one this FFmpeg can decode", label)
        fps = _fps(stream)
        notes = []
        if fps is None:
            fps = 24.0
            notes.append("the video does not say its frame rate; taken as 24 fps")
        stream.thread_type = "AUTO"
        source = FrameSource(fps, stream.codec_context.name, notes)
        declared = _declared_frames(container, stream, fps)
    except VideoError:
        container.close()
        raise
    except errors as exc:
        container.close()
        raise VideoError(f"could not read the video ({_reason(exc)})", label) from None
    return source, _frames(container, stream, source, label, start, frames, deadline, timeout, declared)


def _decoded(container, stream, fps: float, count: list[int], deadline: float, timeout: float,
             label: str) -> Iterator[tuple[float, object]]:
    """(seconds, frame) as they are decoded; ``count[0]`` counts them."""
    for packet in container.demux(stream):
        if time.monotonic() > deadline:
            raise VideoError(f"reading the video took longer than {timeout:g} s; gave up", label)
        for frame in packet.decode():
            count[0] += 1
            yield (frame.time if frame.time is not None else (count[0] - 1) / fps), frame


def _from(container, stream, start: float, fps: float, count: list[int], deadline: float, timeout: float,
          label: str) -> tuple[float, Iterator[tuple[float, object]]]:
    """The time of the first frame (an MPEG-TS clip may begin at 1.4 s, H.264 in AVI one frame late),
    and the decoded frames from about ``start`` seconds after it: a seek to the key frame before, or,
    where the seek lands after it or on frames that do not decode (MPEG-TS seeks by bytes), all of them
    from the beginning."""
    frames = _decoded(container, stream, fps, count, deadline, timeout, label)
    first = next(frames, None)
    origin = first[0] if first is not None else 0.0
    if start <= 0 or first is None:
        return origin, (frames if first is None else itertools.chain([first], frames))
    with contextlib.suppress(*_ffmpeg_errors()):
        container.seek(int((origin + start) / stream.time_base), stream=stream, backward=True, any_frame=False)
        after = next(frames, None)
        if after is not None and after[0] - origin <= start + 0.5 / fps:
            return origin, itertools.chain([after], frames)
    container.seek(0, stream=stream)
    count[0] = 0
    return origin, _decoded(container, stream, fps, count, deadline, timeout, label)


def _frames(container, stream, source: FrameSource, label: str, start: float, limit: int | None, deadline: float,
            timeout: float, declared: int) -> Iterator[np.ndarray]:
    errors = _ffmpeg_errors()
    fps = source.fps
    done, count = 0, [0]
    try:
        origin, decoded = _from(container, stream, start, fps, count, deadline, timeout, label)
        for t, frame in decoded:
            if t - origin < start - 0.5 / fps:
                continue
            if frame.width * frame.height > MAX_FRAME_PIXELS:
                raise VideoError(f"the frames are {frame.width}x{frame.height}, more than the "
                                 f"{MAX_FRAME_PIXELS / 1e6:.0f} MP limit", label)
            rgb = frame.to_ndarray(format="rgb24")
            matrix, note = _display(frame)
            if note and not done:
                source.notes.append(note)
            out = _upright(rgb, matrix).astype(np.float32)
            out *= np.float32(1 / 255)
            yield out
            done += 1
            if limit is not None and done >= limit:
                return
            if time.monotonic() > deadline:
                raise VideoError(f"reading the video took longer than {timeout:g} s; gave up", label)
    except VideoError:
        raise
    except errors as exc:
        where = f"after frame {done}" if done else "at its first frame"
        raise VideoError(f"the video is broken or truncated {where} ({_reason(exc)})", label) from None
    finally:
        container.close()
    seen = count[0]
    if done == 0 and start > 0 and seen:
        raise VideoError(f"the video has no frames at or after {start:g} s", label)
    if start <= 0 and declared and seen < 0.9 * declared - 1:
        raise VideoError(f"the video is truncated: {seen} of the {declared} frames it declares could be "
                         "decoded", label)
    if done == 0:
        raise VideoError("the video has no frames", label)
