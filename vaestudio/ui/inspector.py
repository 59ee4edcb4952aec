"""The inspector: an image beside its reconstruction, the latents, noise, metrics, A/B.

A view of the session (``ui.session``): the image, VAE A and B, the encoding and the results live
there, and this tab shows them as they change. It runs the inspector's own jobs (encode, decode,
previews, B): every request snapshots its inputs here on the UI thread and runs in a worker; results
come back through queued signals and the latest request of a kind wins. Encodings are cached in the
session per (image, VAE), so moving a slider never re-encodes.

What the views show is always one consistent state: the last complete reconstruction (its pane
title says what was decoded), its difference map and metrics. Previews (a tiny decoder's, or the
latent-to-RGB approximation) stand in the reconstruction pane only while a decode is under way, and
the last complete result comes back if that decode is cancelled.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget

from vaestudio.ui import jobs
from vaestudio.ui.clip_view import ClipView
from vaestudio.ui.latents import LatentPanel
from vaestudio.ui.metrics_panel import MetricsPanel, psnr_text
from vaestudio.ui.panels import NoisePanel, VaePanel, snr_text
from vaestudio.ui.session import Session, source_name, wire
from vaestudio.ui.views import ImageCompare

SIDE_WIDTH = 400
#: The inspector's own jobs, dropped when the image or VAE A changes.
OWN_KINDS = ("encode", "decode", "preview", "b")
#: What Esc and the Cancel button stop: the image being opened, and the inspector's jobs.
DECODE_KINDS = ("image", *OWN_KINDS, "clip", "clip_preview")


class InspectorTab(QWidget):
    reconstructed = Signal()  # a complete reconstruction is on screen

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.compare = ImageCompare()
        self.latents = LatentPanel()
        self.vae_panel = VaePanel()
        self.noise = NoisePanel()
        self.metrics = MetricsPanel()
        self.nav_label = QLabel("")
        self.prev_btn = QPushButton("< Previous")
        self.next_btn = QPushButton("Next >")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Cancel the running encode/decode (Esc)")
        self.cancel_btn.setEnabled(False)
        self.hint = QLabel("Drop images here, or File > Open (Ctrl+O). Paste with Ctrl+V.")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.nav_label, 1)
        nav.addWidget(self.cancel_btn)
        nav.addWidget(self.next_btn)
        self.lower = QTabWidget()
        self.lower.addTab(self.latents, "Latents")
        center = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.hint)
        tl.addWidget(self.compare, 1)
        self.clip = ClipView(session, self.compare, self.latents, self.metrics, self.noise)  # shown for a clip
        tl.addWidget(self.clip)
        tl.addLayout(nav)
        center.addWidget(top)
        center.addWidget(self.lower)
        center.setStretchFactor(0, 3)
        center.setStretchFactor(1, 2)
        side = QVBoxLayout()
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(self.vae_panel)
        side.addWidget(self.noise)
        side.addWidget(self.metrics)
        side.addStretch(1)
        side_w = QWidget()
        side_w.setLayout(side)
        side_w.setFixedWidth(SIDE_WIDTH)  # fixed: the image views never jump when a text changes
        lay = QHBoxLayout(self)
        lay.addWidget(center, 1)
        lay.addWidget(side_w)

        self._shown_noise = None  # the noise settings the reconstruction on screen was decoded with
        self.prev_btn.clicked.connect(lambda: self.session.step(-1))
        self.next_btn.clicked.connect(lambda: self.session.step(1))
        self.cancel_btn.clicked.connect(self.cancel)
        self.noise.changed.connect(self.request_preview)
        self.noise.settled.connect(self._noise_settled)
        self.latents.ablation_requested.connect(self._ablate)
        self.vae_panel.family_changed.connect(self.set_family)
        self.vae_panel.clear_b.connect(self.clear_b)
        self.compare.hovered.connect(self.session.message)
        self.latents.hovered.connect(self.session.message)
        self._session_connected = False
        self._connect_session(True)
        self._update_nav()
        self.vae_panel.set_recent(session.recent_vaes)

    def _connect_session(self, connect: bool) -> None:
        if connect == self._session_connected:  # closing twice lets go once
            return
        self._session_connected = connect
        s = self.session
        wire([(s.images_changed, self._update_nav), (s.image_changed, self._image_changed),
              (s.vae_changed, self._vae_changed), (s.vae_loading, self._vae_loading),
              (s.encoding_changed, self._show_encoding), (s.result_changed, self._result_changed),
              (s.recent_vaes_changed, self._recent_changed), (s.runner.jobs_changed, self._jobs_changed),
              (self.vae_panel.cancel, s.cancel_vae_load)], connect)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._connect_session(False)
        self.clip.close()
        super().closeEvent(event)

    def _jobs_changed(self) -> None:
        self.cancel_btn.setEnabled(any(k in self.session.runner.running for k in DECODE_KINDS))

    def _recent_changed(self) -> None:
        self.vae_panel.set_recent(self.session.recent_vaes)

    def _vae_loading(self, what: str, done: int, total: int) -> None:
        self.vae_panel.set_busy(what or None, done, total)

    # -- VAEs ---------------------------------------------------------------------------------
    def _vae_changed(self, slot: str) -> None:
        s = self.session
        if slot == "b":
            s.runner.drop("b")
            self.vae_panel.b_clear.setVisible(s.vae_b is not None)
            self._show_b()
            self.request_b()
            return
        for kind in ("encode", "decode", "preview"):
            s.runner.drop(kind)  # nothing of the old VAE's may arrive after this
        self._show_metrics()
        if s.vae is None:
            return
        self._show_vae_info()
        self.noise.set_max_timestep(s.vae.family.max_timestep)
        if s.image is not None:
            self._clear_views(s.image.pixels)  # until the encode says what this VAE sees
            self.request_encode()

    def _show_vae_info(self) -> None:
        from vaestudio.core.device import dtype_name

        v = self.session.vae
        families = [(f.name, f.label) for f in v.family_choices()]
        self.vae_panel.show_info(v.info.to_dict(), str(v.device), dtype_name(v.dtype), families, v.dtype_reason)

    def set_family(self, name: str) -> None:
        if not self.session.set_family(name):
            self._show_vae_info()  # refused: the panel shows the family in use again

    def clear_b(self) -> None:
        self.session.set_vae(None, "b")

    # -- images -------------------------------------------------------------------------------
    def _update_nav(self) -> None:
        s = self.session
        n = len(s.images)
        self.prev_btn.setEnabled(n > 1)
        self.next_btn.setEnabled(n > 1)
        note = "  (could not be read)" if n and s.image is None and s.clip is None else ""
        self.nav_label.setText(f"{s.index + 1} / {n}: {source_name(s.source())}{note}" if n else "")

    def _image_changed(self) -> None:
        s = self.session
        for kind in OWN_KINDS:
            s.runner.drop(kind)
        if s.image is not None or s.clip is not None:
            self.hint.hide()
        self._clear_views(s.image.pixels if s.image is not None else None)
        if s.image is not None and s.vae is not None:
            self.request_encode()
        if s.image is not None and s.vae_b is not None:
            self.request_b()

    def _clear_views(self, original) -> None:
        """Only ``original`` (or nothing) on screen: no reconstruction, difference or latents yet."""
        self.compare.set_original(original)
        self.compare.set_recon(None)
        self.compare.set_diff(None)
        self.compare.set_recon_b(None)
        self.latents.set_latents(None)
        self._show_metrics()

    def _show_metrics(self) -> None:
        s = self.session
        self.metrics.set_values(s.encoded, s.result, s.result_b)

    # -- encodes ------------------------------------------------------------------------------
    def request_encode(self) -> None:
        s = self.session
        if s.vae is None or s.image is None:
            return
        key = s.encode_key("a")
        cached = s.cached(key)
        if cached is not None:
            self._encoded(cached)
            return
        self.session.message.emit("Encoding ...")
        s.runner.start("encode", jobs.encode_job, s.vae, s.image.pixels, s.prefs.tile,
                       on_result=lambda r: self._encoded(r, key), on_error=self.session.error.emit,
                       on_progress=self._progress, on_cancel=self._cancelled)

    def _encoded(self, result, key=None) -> None:
        encoded, rgb_preview = result
        if key is not None:
            self.session.cache_put(key, result)
        self.session.set_encoded(encoded)
        self.latents.set_preview(rgb_preview)
        for note in encoded.notes:
            self.session.message.emit(note)
        self.request_decode()
        if self.session.preview_vae is not None or self.noise.params() is not None:
            self.request_preview()

    def _show_encoding(self) -> None:
        encoded = self.session.encoded
        if encoded is None:
            return
        self.compare.set_original(encoded.original)  # what this VAE sees (a 28x28 digit for MNIST)
        self._show_latents()
        self._show_metrics()

    def _show_latents(self) -> None:
        enc = self.session.encoded
        note = "noise is on: this is the clean latent; the noised one is decoded above" \
            if self.noise.params() is not None else ""
        self.latents.set_latents(enc.latent.numpy(), enc.raw.numpy(), note)

    # -- noise, previews, decodes ----------------------------------------------------------------
    def request_preview(self) -> None:
        """Instant: noise the cached latent and show a tiny decoder's picture (or latent-to-RGB)."""
        s = self.session
        if s.encoded is None or s.vae is None:
            return
        noise = self.noise.params()
        if noise is None and s.preview_vae is None:
            self.noise.snr.setText(snr_text(None))
            return
        what = self.noise.describe() if noise is not None else "clean"
        s.runner.start("preview", jobs.preview_job, s.vae, s.encoded, noise, s.preview_vae,
                       on_result=lambda p: self._previewed(p, what, noise), on_error=self.session.error.emit)

    def _previewed(self, p: jobs.Preview, what: str, noise) -> None:
        self.noise.snr.setText(snr_text(p.snr_db))
        if p.image is None or (self.session.result is not None and self._shown_noise == noise):
            return  # the full decode of these settings already arrived: never cover it with a preview
        kind = "tiny decoder" if p.tiny else "latent-to-RGB"
        self.compare.set_recon(p.image, f"Preview ({kind}, {what}); decoding ...")

    def _noise_settled(self) -> None:
        self.request_decode()
        self.request_b()

    def _ablate(self, channel: int, factor: float, space: str) -> None:
        from vaestudio.core.pipeline import Ablation

        self.request_decode(Ablation(channel, factor, space))

    def request_decode(self, ablation=None) -> None:
        s = self.session
        if s.encoded is None:
            return
        noise = self.noise.params()
        self._show_latents()
        self.session.message.emit("Decoding ...")
        s.runner.start("decode", jobs.decode_job, s.vae, s.encoded, noise, s.prefs.tile, ablation,
                       on_result=lambda r: self._decoded(r, noise), on_error=self._decode_failed,
                       on_progress=self._progress, on_cancel=self._cancelled)

    def _decoded(self, res, noise=None) -> None:
        self._shown_noise = noise
        self.session.set_result(res)
        self.reconstructed.emit()
        self.session.message.emit(f"PSNR {psnr_text(res.metrics.psnr)}, SSIM {res.metrics.ssim:.4f}")

    def _result_changed(self, slot: str) -> None:
        if slot == "b":
            self._show_b()
        else:
            self._show_result()

    def _show_result(self) -> None:
        """The last complete reconstruction, its difference and metrics: one consistent state."""
        res = self.session.result
        self._show_metrics()
        if res is None:
            self.compare.set_recon(None)
            self.compare.set_diff(None)
            return
        self.compare.set_recon(res.decoded, res.label)
        self.compare.set_diff(res.diff_rgb)
        self.noise.snr.setText(snr_text(res.noise.snr_db if res.noise is not None else None))

    def _decode_failed(self, msg: str) -> None:
        self.session.error.emit(msg)
        self._show_result()

    def request_b(self) -> None:
        s = self.session
        if s.vae_b is None or s.image is None:
            return
        key = s.encode_key("b")
        cached = s.cached(key)

        def done(result) -> None:
            encoded, rec = result
            s.cache_put(key, (encoded, None))
            s.set_result(rec, "b")

        s.runner.start("b", jobs.compare_job, s.vae_b, s.image.pixels, cached[0] if cached else None,
                       self.noise.params(), s.prefs.tile, on_result=done, on_error=self.session.error.emit)

    def _show_b(self) -> None:
        s = self.session
        rec = s.result_b
        self._show_metrics()
        if rec is None or s.vae_b is None:
            self.compare.set_recon_b(None)
            return
        label = f"B: {source_name(s.vae_b.info.source)}" + (f" ({rec.label})" if rec.noise is not None else "")
        self.compare.set_recon_b(rec.decoded, label)

    def _progress(self, done: int, total: int, what: str) -> None:
        if total > 1:
            self.session.message.emit(f"{what}: tile {done} of {total}")

    def _cancelled(self) -> None:
        self._show_result()
        res = self.session.result
        self.session.message.emit(f"Cancelled; showing the last complete result ({res.label})" if res is not None
                          else "Cancelled")

    def export_data(self, what: str) -> dict | None:
        """What File > Save writes for ``what`` (``jobs.export_job`` composes it), or None before a result."""
        s = self.session
        res = s.result
        if res is None:
            return None
        if what == "latents":
            enc = res.encoded
            return {"latent": enc.latent, "raw": enc.raw,
                    "metadata": {"source_image": s.image.name, "vae": s.vae.info.source,
                                 "architecture": s.vae.info.architecture, "family": s.vae.family.name,
                                 "latent": "model space", "raw": "encoder output"}}
        if what == "recon":
            return {"image": res.decoded}
        if what == "diff":
            return {"image": res.diff_rgb}
        if what == "strip":
            return {"images": [res.original, res.decoded, res.diff_rgb]}
        lat = self.latents  # the heat maps as shown: the same scale choice and channel order
        return {"latent": lat.arr, "shared": lat.shared.isChecked(),
                "order": None if lat.mosaic is None else lat.mosaic.order}

    def cancel(self) -> None:
        """Esc: stop what runs for the image; the views go back to the last complete result."""
        cancelled = [self.session.runner.cancel(kind) for kind in DECODE_KINDS]
        if not any(cancelled):
            self.session.message.emit("Nothing to cancel")
