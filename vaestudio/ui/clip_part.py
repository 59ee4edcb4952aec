"""The part of a clip the window reads: start (seconds) and frames, as the CLI's ``--start`` and ``--frames``.

A view of ``Session.clip_part``: changing either box asks ``Session.choose_clip_part`` to read the clip
again (the same ``core.video.read_clip`` the CLI uses), and its reconstruction follows; the boxes emit
once editing settles, and the worker layer lets the latest request win. The label says what was read and
what the VAE takes of it (a causal video VAE trims to 1 + 4k frames for Wan), as the result says.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from vaestudio.ui.session import Session

#: How long the boxes wait after the last change before the clip is read again (ms).
SETTLE_MS = 350


class ClipPartBar(QWidget):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.start = QDoubleSpinBox()
        self.start.setRange(0.0, 24 * 3600.0)
        self.start.setDecimals(2)
        self.start.setSingleStep(0.5)
        self.start.setSuffix(" s")
        self.start.setToolTip("Seconds into the clip of the first frame read (the CLI's --start)")
        self.frames = QSpinBox()
        self.frames.setRange(0, 100_000)
        self.frames.setSpecialValueText("all")  # 0: every frame to the end (within the window's limit)
        self.frames.setToolTip("At most this many frames from the start (the CLI's --frames); 'all' reads to the "
                               "end. A causal video VAE takes 1 + 4k of them (Wan)")
        for box in (self.start, self.frames):
            box.setKeyboardTracking(False)  # typing emits once, on Enter or leaving the box
        self.read = QLabel("")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("Start"))
        lay.addWidget(self.start)
        lay.addWidget(QLabel("Frames"))
        lay.addWidget(self.frames)
        lay.addWidget(self.read, 1)
        self.settle = QTimer(self)
        self.settle.setSingleShot(True)
        self.settle.setInterval(SETTLE_MS)
        self.settle.timeout.connect(self.choose)
        self.start.valueChanged.connect(self.settle.start)
        self.frames.valueChanged.connect(self.settle.start)

    def part(self) -> tuple[float, int | None]:
        return float(self.start.value()), (int(self.frames.value()) or None)

    def choose(self) -> None:
        """Read the part the boxes say, unless it is the one shown."""
        self.settle.stop()
        if self.session.clip is not None and self.part() != self.session.clip_part:
            self.session.choose_clip_part(*self.part())

    def clip_changed(self) -> None:
        """A clip was read: the boxes show its part (a new file starts at 0 s, all frames)."""
        start, frames = self.session.clip_part
        for box, value in ((self.start, start), (self.frames, frames or 0)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.update_text()

    def update_text(self) -> None:
        """What was read, and what the VAE takes of it (the result's frame count)."""
        s = self.session
        clip = s.clip
        if clip is None:
            self.read.setText("")
            return
        text = f"read {clip.count} frames ({clip.count / clip.fps:.2f} s) from {clip.start:g} s" if clip.fps > 0 \
            else f"read {clip.count} frames"
        taken = s.clip_result.total if s.clip_result is not None else None
        if taken is None and s.clip_encoded is not None:
            taken = int(s.clip_encoded.encoding.frames)
        if taken is not None and taken != clip.count and s.vae is not None:
            text += f"; the VAE takes {taken} (1 + {s.vae.info.temporal_downscale}k)"
        self.read.setText(text)
