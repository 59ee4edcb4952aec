"""Writing clips: H.264 where this PyAV has an encoder for it, else another codec the container takes.

The video is encoded in memory and written with ``files.write_atomic``: a failed or interrupted write
leaves the old file or none, never half a video. yuv420p needs even sides, so an odd-sized clip gets its
last row or column repeated (one pixel; players then show it as the source looks).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from vaestudio.core.errors import one_line
from vaestudio.core.files import write_atomic
from vaestudio.core.video.clip import VideoError

#: Container by suffix, and the encoders to try in order (the first PyAV has wins).
CONTAINERS = {
    ".mp4": ("mp4", ("libx264", "libopenh264", "h264", "mpeg4", "libvpx-vp9")),
    ".mov": ("mov", ("libx264", "libopenh264", "h264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "libopenh264", "h264", "libvpx-vp9", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1")),
    ".avi": ("avi", ("libx264", "libopenh264", "mpeg4")),
}
#: Encoder options for good quality (the metrics are computed on the frames, not on the file).
_OPTIONS = {"libx264": {"crf": "16", "preset": "fast"}, "libvpx-vp9": {"crf": "20", "b": "0"}}


def video_encoder(suffix: str = ".mp4") -> str:
    """The encoder ``write_video`` uses for this container suffix on this PyAV."""
    import av

    if suffix.lower() not in CONTAINERS:
        raise VideoError(f"cannot write {suffix or 'files without a suffix'} videos (use "
                         f"{', '.join(CONTAINERS)})")
    for name in CONTAINERS[suffix.lower()][1]:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - not in this build of FFmpeg
            continue
        return name
    raise VideoError(f"this PyAV has no encoder for {suffix} videos")


def _uint8(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    if f.dtype != np.uint8:
        f = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if f.ndim != 3 or f.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3), not {f.shape}")
    pad_h, pad_w = f.shape[0] % 2, f.shape[1] % 2
    if pad_h or pad_w:
        f = np.pad(f, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(f)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> str:
    """Write ``frames`` ((H, W, 3) float in [0, 1] or uint8, one at a time) as a video at ``fps``.

    Returns the encoder used ("libx264" where PyAV has it). Raises ``VideoError`` when nothing could
    be written (no frames, no encoder for the container, the encoder refused the frames).
    """
    import av

    path = Path(path)
    codec = video_encoder(path.suffix)
    if not fps > 0:
        raise VideoError(f"cannot write a video at {fps} fps", path)
    buf = io.BytesIO()
    count = 0
    try:
        with av.open(buf, "w", format=CONTAINERS[path.suffix.lower()][0]) as out:
            stream = None
            for frame in frames:
                rgb = _uint8(frame)
                if stream is None:
                    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001),
                                            options=_OPTIONS.get(codec, {}))
                    stream.height, stream.width = rgb.shape[:2]
                    stream.pix_fmt = "yuv420p"
                elif (stream.height, stream.width) != rgb.shape[:2]:
                    raise VideoError("all frames of a video must have one size", path)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
                count += 1
            if stream is None:
                raise VideoError("no frames to write", path)
            for packet in stream.encode():
                out.mux(packet)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"could not encode the video with {codec} ({one_line(exc)})", path) from None
    write_atomic(path, buf.getvalue())
    return codec
