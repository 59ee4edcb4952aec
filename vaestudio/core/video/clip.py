"""What a clip is to everyone else: its frames, frame rate and notes, and the error a bad video gives."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vaestudio.core.errors import VaeStudioError

#: The longest a read may take (seconds) before it gives up: a deadline checked between packets and frames.
DEFAULT_TIMEOUT = 120.0
#: The most float32 frame bytes ``read_clip`` collects (8 GiB); a longer clip needs a part chosen
#: (``frames``/``start``) or a smaller ``size``. ``iter_frames`` streams and has no such limit.
DEFAULT_MAX_BYTES = 8 << 30
#: Largest frame we decode (pixels), as for images.
MAX_FRAME_PIXELS = 64_000_000


class VideoError(VaeStudioError):
    """A clip could not be read or written (missing, broken, truncated, no frames, unknown codec,
    a still image named like a video); exit code 3 as for a broken image."""

    exit_code = 3


@dataclass
class Clip:
    """Frames of a clip as RGB float32 in [0, 1] at their display orientation."""

    frames: np.ndarray  # (T, H, W, 3) float32
    fps: float
    name: str
    start: float = 0.0  # seconds of the first frame in the source
    codec: str = ""  # the decoder that read it ("h264", "vp9", "gif" ...)
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


@dataclass
class FrameSource:
    """What a reader learned about a clip before its first frame; ``notes`` grows while it reads."""

    fps: float
    codec: str
    notes: list[str] = field(default_factory=list)
