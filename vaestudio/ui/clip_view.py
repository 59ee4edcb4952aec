"""The inspector's clip view: a clip's original | reconstruction | difference in sync, frame by frame.

A view of the session's clip state (``Session.clip``, ``clip_encoded``, ``clip_result``): it shows the
current frame in the inspector's own image views (``ImageCompare``), with play/pause (a QTimer at the
clip's frame rate), a frame slider, step keys (``,`` and ``.``; ``K`` plays and pauses), and a per-frame
PSNR plot that marks the current frame and the chunk boundaries (``ClipEncoding.chunks``) and seeks
where it is clicked; above it the part of the clip read (``ClipPartBar``: start and frames). The latent panel follows with the latent frame of the current frame; the metrics
panel shows the clip's mean PSNR, worst frame and flicker. Frames appear as the "clip" job decodes
them; nothing here computes more than picking arrays to show.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QElapsedTimer, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from vaestudio.ui.clip_part import ClipPartBar
from vaestudio.ui.session import Session, wire

#: While playing, the latent mosaic, statistics and histogram are redrawn at most this often (ms): a
#: 32-channel mosaic per frame would halve the frame rate.
LATENT_EVERY_MS = 400


class ClipView(QWidget):
    frame_shown = Signal(int)  # the frame now on screen
    decoded_shown = Signal(int, int)  # a reconstructed frame is on screen: (frames decoded, of total)

    def __init__(self, session: Session, compare, latents, metrics, noise) -> None:
        super().__init__()
        self.session, self.compare, self.latents, self.metrics, self.noise = session, compare, latents, metrics, noise
        self.play_btn = QPushButton("Play")
        self.play_btn.setCheckable(True)
        self.play_btn.setToolTip("Play or pause the clip (K); step a frame with , and .")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("The frame shown in all three views (, and . step)")
        self.frame_label = QLabel("")
        self.status = QLabel("")
        self.run_btn = QPushButton("Reconstruct")
        self.run_btn.setToolTip("Encode (once) and decode the clip again, after a cancel")
        self.run_btn.hide()
        self.save_btn = QPushButton("Save videos...")
        self.save_btn.setToolTip("Write <name>_recon.mp4 and <name>_diff.mp4 into a folder")
        self.save_btn.setEnabled(False)
        self.plot = pg.PlotWidget()
        self.plot.setFixedHeight(120)
        self.plot.setLabel("bottom", "frame")
        self.plot.setLabel("left", "PSNR", units="dB")
        self.plot.showGrid(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.curve = self.plot.plot([], [], pen=pg.mkPen((90, 160, 240), width=2), symbol="o", symbolSize=5,
                                    symbolBrush=(90, 160, 240))
        self.marker = pg.InfiniteLine(0, angle=90, pen=pg.mkPen((255, 80, 80), width=2))
        self.plot.addItem(self.marker)
        self.boundaries: list[pg.InfiniteLine] = []
        self.part = ClipPartBar(session)
        row = QHBoxLayout()
        row.addWidget(self.play_btn)
        row.addWidget(self.slider, 1)
        row.addWidget(self.frame_label)
        row.addWidget(self.status)
        row.addWidget(self.run_btn)
        row.addWidget(self.save_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.part)
        lay.addWidget(self.plot)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        self.clock = QElapsedTimer()
        self._latent_clock = QElapsedTimer()
        self._latent_clock.start()
        self._play_from = 0
        self.play_btn.toggled.connect(self.set_playing)
        self.slider.valueChanged.connect(self.show_frame)
        self.save_btn.clicked.connect(self.pick_folder)
        self.run_btn.clicked.connect(lambda: self.session.reconstruct_clip(self.noise.params()))
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)
        self.shortcuts = []
        for key, slot in ((",", lambda: self.step(-1)), (".", lambda: self.step(1)),
                          ("K", lambda: self.play_btn.toggle())):
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            self.shortcuts.append(sc)
        self.frame = 0
        self.hide()
        self._session_connected = False
        self._connect_session(True)

    def _connect_session(self, connect: bool) -> None:
        if connect == self._session_connected:
            return
        self._session_connected = connect
        s = self.session
        wire([(s.clip_changed, self._clip_changed), (s.vae_changed, self._vae_changed),
              (s.clip_encoding_changed, self._encoding_changed), (s.clip_frames_changed, self._frames_changed),
              (self.noise.settled, self._noise_settled), (s.runner.jobs_changed, self._frames_changed)], connect)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.set_playing(False)
        self._connect_session(False)
        super().closeEvent(event)

    # -- the clip and its reconstruction --------------------------------------------------------
    def count(self) -> int:
        s = self.session
        if s.clip_encoded is not None:
            return int(s.clip_encoded.encoding.frames)
        if s.clip_result is not None:  # a streamed round trip: frames before the encoding
            return s.clip_result.total
        return s.clip.count if s.clip is not None else 0

    def original(self) -> np.ndarray | None:
        """The frames the VAE saw (trimmed), or the clip as read before it is encoded."""
        s = self.session
        if s.clip_encoded is not None:
            return s.clip_encoded.encoding.original
        return s.clip.frames[:self.count()] if s.clip is not None else None

    def _clip_changed(self) -> None:
        s = self.session
        self.set_playing(False)
        self.setVisible(s.clip is not None)
        self.latents.set_clip_latents(None)
        if s.clip is None:
            return
        self.part.clip_changed()
        self.timer.setInterval(max(10, round(1000 / s.clip.fps)) if s.clip.fps > 0 else 40)
        self._reset()
        self.session.reconstruct_clip(self.noise.params())

    def _vae_changed(self, slot: str) -> None:
        if slot == "a" and self.session.clip is not None:
            self.latents.set_clip_latents(None)
            self._reset()
            self.session.reconstruct_clip(self.noise.params())

    def _noise_settled(self) -> None:
        if self.session.clip is not None and self.session.clip_encoded is not None:
            self._show_latents()  # its note says whether noise is on
            self.session.reconstruct_clip(self.noise.params())

    def _reset(self) -> None:
        n = self.count()
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setValue(min(self.frame, max(0, n - 1)))
        self.slider.blockSignals(False)
        self._draw_chunks()
        self._frames_changed()

    def _encoding_changed(self) -> None:
        if self.session.clip_encoded is not None:
            self._show_latents()
            self._reset()

    def _show_latents(self) -> None:
        enc = self.session.clip_encoded
        note = "noise is on: this is the clean latent" if self.noise.params() is not None else ""
        self.latents.set_clip_latents(enc.encoding.latent.numpy(), enc.encoding.raw.numpy(), enc.previews, note)

    def _draw_chunks(self) -> None:
        for line in self.boundaries:
            self.plot.removeItem(line)
        self.boundaries = []
        enc = self.session.clip_encoded
        for start, _end in (enc.encoding.chunks if enc is not None else [])[1:]:
            line = pg.InfiniteLine(start - 0.5, angle=90, pen=pg.mkPen((200, 200, 200), width=1,
                                                                       style=Qt.PenStyle.DashLine))
            self.plot.addItem(line)
            self.boundaries.append(line)
        self.plot.setXRange(-0.5, max(0.5, self.count() - 0.5), padding=0.02)

    def _frames_changed(self) -> None:
        s = self.session
        if s.clip is None:  # jobs_changed comes for every job: an image's metrics are not the clip's
            return
        r = s.clip_result
        n = self.count()
        if self.slider.maximum() != max(0, n - 1):  # a streamed round trip's trimmed count comes before its encoding
            self.slider.blockSignals(True)
            self.slider.setRange(0, max(0, n - 1))
            self.slider.blockSignals(False)
            self._draw_chunks()
        running = "clip" in s.runner.running
        if r is None:
            self.curve.setData([], [])
            self.status.setText("load a VAE" if s.vae is None else "encoding ..." if running else "cancelled")
        else:
            done = [t for t in range(r.total) if r.frames[t] is not None]
            finite = [min(r.psnr[t], 99.0) for t in done]  # an exact frame (inf) sits at the top
            self.curve.setData(done, finite)
            what = "complete" if r.complete else f"decoded {r.decoded} of {r.total} frames"
            self.status.setText(what if running or r.complete else f"cancelled: {what}")
        self.run_btn.setVisible(s.vae is not None and s.clip is not None and not running
                                and (r is None or not r.complete))
        self.save_btn.setEnabled(r is not None and r.decoded > 0)
        self.part.update_text()
        self.metrics.set_clip_values(None if self.session.clip_encoded is None else self.session.clip_encoded.encoding, r)
        if r is not None and r.snr_db is not None:
            from vaestudio.ui.panels import snr_text

            self.noise.snr.setText(snr_text(r.snr_db))
        self.show_frame(min(self.slider.value(), max(0, n - 1)))

    # -- the current frame ----------------------------------------------------------------------
    def show_frame(self, t: int) -> None:
        """Frame ``t`` in all three views, the plot marker and the latent frame it belongs to."""
        s = self.session
        orig = self.original()
        if orig is None or not len(orig):
            return
        t = int(np.clip(t, 0, len(orig) - 1))
        self.frame = t
        if self.slider.value() != t:
            self.slider.blockSignals(True)
            self.slider.setValue(t)
            self.slider.blockSignals(False)
        self.frame_label.setText(f"frame {t} (0-{len(orig) - 1})")  # numbered as the CLI's frames.csv
        self.marker.setValue(t)
        self.compare.set_original(orig[t])
        r = s.clip_result
        rec = r.frames[t] if r is not None and t < r.total else None
        preview = r.previews[t] if r is not None and t < r.total else None
        if rec is None:
            running = "clip" in s.runner.running
            if preview is not None:
                self.compare.set_recon(preview, f"Preview (tiny decoder), frame {t}"
                                                f"{'; decoding ...' if running else ''}")
            else:
                self.compare.set_recon(None, "Reconstruction: decoding ..." if running else "Reconstruction: not decoded")
            self.compare.set_diff(None)
        else:
            psnr = r.psnr[t]
            self.compare.set_recon(rec, f"Reconstruction, frame {t}: "
                                        f"{'inf' if math.isinf(psnr) else f'{psnr:.2f}'} dB")
            self.compare.set_diff(r.diffs[t])
            self.decoded_shown.emit(r.decoded, r.total)
        enc = s.clip_encoded
        if enc is not None and self.latents.clip_latents is not None:
            td = max(1, int(s.vae.info.temporal_downscale)) if s.vae is not None and s.vae.info.kind == "video" else 1
            latent_frame = min(-(-t // td), enc.encoding.latent.shape[1] - 1)
            if self.timer.isActive() and self._latent_clock.elapsed() < LATENT_EVERY_MS:
                # playing: the latent-to-RGB preview plays; the mosaic and statistics follow a few times a second
                self.latents.set_preview(enc.previews[latent_frame], f"Latent-to-RGB preview of latent frame {latent_frame}")
            else:
                self._latent_clock.start()
                self.latents.frame.setValue(latent_frame)
        self.frame_shown.emit(t)

    def step(self, delta: int, wrap: bool = False) -> None:
        n = self.count()
        if not n or not self.isVisible():
            return
        t = self.frame + delta
        self.show_frame(t % n if wrap else t)

    def set_playing(self, on: bool) -> None:
        on = bool(on) and self.count() > 1
        if self.play_btn.isChecked() != on:
            self.play_btn.blockSignals(True)
            self.play_btn.setChecked(on)
            self.play_btn.blockSignals(False)
        self.play_btn.setText("Pause" if on else "Play")
        if on:
            self._play_from = self.frame
            self.clock.start()
            self.timer.start()
        elif self.timer.isActive():
            self.timer.stop()
            self.show_frame(self.frame)  # the latent panel catches up

    def _tick(self) -> None:
        """Playing: the frame due by the clock at the clip's rate (frames are skipped, never slowed down)."""
        n, fps = self.count(), self.session.clip.fps if self.session.clip is not None else 0
        if not n or fps <= 0:
            return
        due = (self._play_from + int(self.clock.elapsed() * fps / 1000)) % n
        if due != self.frame:
            self.show_frame(due)

    def _plot_clicked(self, event) -> None:
        vb = self.plot.getPlotItem().vb
        if vb.sceneBoundingRect().contains(event.scenePos()):
            self.show_frame(round(vb.mapSceneToView(event.scenePos()).x()))

    # -- export ---------------------------------------------------------------------------------
    def pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the reconstruction and difference videos into")
        if folder:
            self.save_videos(folder)

    def save_videos(self, folder) -> None:
        """Write the decoded frames' reconstruction and difference videos in a worker."""
        from vaestudio.ui import clip_jobs

        s = self.session
        r = s.clip_result
        if r is None or not r.decoded or s.clip is None:
            s.error.emit("nothing to save yet: open a clip and load a VAE")
            return
        frames = [f for f in r.frames if f is not None]
        diffs = [d for d in r.diffs if d is not None]
        s.runner.start(f"export:{Path(folder) / s.clip.name}", clip_jobs.save_clip_videos_job, folder, s.clip.name,
                       frames, diffs, s.clip.fps, on_result=s.message.emit, on_error=s.error.emit)
