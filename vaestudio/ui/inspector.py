"""The inspector: an image beside its reconstruction, the latents, noise, metrics, A/B.

This widget wires the panels to the jobs: every request snapshots its inputs here on the UI thread
and runs in a worker; results come back through queued signals and the latest request of a kind
wins. Encodings are cached per (image, VAE) with a fixed limit, so moving a slider never re-encodes.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget

from vaestudio.ui import jobs
from vaestudio.ui.latents import LatentPanel
from vaestudio.ui.panels import MetricsPanel, NoisePanel, VaePanel
from vaestudio.ui.settings import Preferences
from vaestudio.ui.views import ImageCompare
from vaestudio.ui.workers import JobRunner

ENCODE_CACHE_SIZE = 8
_TOKENS = itertools.count(1)


def _fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


class InspectorTab(QWidget):
    message = Signal(str)  # status bar text
    error = Signal(str)  # a non-blocking error message
    vae_loaded = Signal(str)  # the source, for the recent list

    def __init__(self, runner: JobRunner, prefs: Preferences) -> None:
        super().__init__()
        self.runner = runner
        self.prefs = prefs
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
        tl.addLayout(nav)
        center.addWidget(top)
        center.addWidget(self.lower)
        center.setStretchFactor(0, 3)
        center.setStretchFactor(1, 2)
        side = QVBoxLayout()
        side.addWidget(self.vae_panel)
        side.addWidget(self.noise)
        side.addWidget(self.metrics)
        side.addStretch(1)
        side_w = QWidget()
        side_w.setLayout(side)
        side_w.setMaximumWidth(380)
        lay = QHBoxLayout(self)
        lay.addWidget(center, 1)
        lay.addWidget(side_w)

        self.vae = None
        self.vae_b = None
        self.sources: list = []
        self.index = 0
        self.image = None
        self.enc = None
        self.original: np.ndarray | None = None
        self.result = None  # the last Reconstruction shown
        self.cache: OrderedDict = OrderedDict()

        self.prev_btn.clicked.connect(lambda: self.step(-1))
        self.next_btn.clicked.connect(lambda: self.step(1))
        self.cancel_btn.clicked.connect(self.cancel)
        self.noise.changed.connect(self.request_preview)
        self.noise.settled.connect(self.request_decode)
        self.latents.ablation_requested.connect(self._ablate)
        self.vae_panel.family_changed.connect(self.set_family)
        self.vae_panel.cancel.connect(lambda: self.runner.cancel("vae"))
        self.vae_panel.clear_b.connect(self.clear_b)
        self.compare.hovered.connect(self.message)
        self.latents.hovered.connect(self.message)
        self.runner.busy_changed.connect(self.cancel_btn.setEnabled)
        self._update_nav()

    # -- VAEs ---------------------------------------------------------------------------------
    def load_vae(self, source, family: str = "", *, slot: str = "a") -> None:
        label = str(source)
        self.message.emit(f"Loading VAE {label} ...")
        self.vae_panel.set_busy("Loading", 0, 0)

        def done(vae) -> None:
            self.vae_panel.set_busy(None)
            if slot == "b":
                self._set_vae_b(vae)
            else:
                self.set_vae(vae)
            self.vae_loaded.emit(label)

        def failed(msg: str) -> None:
            self.vae_panel.set_busy(None)
            self.error.emit(msg)

        def cancelled() -> None:
            self.vae_panel.set_busy(None)
            self.message.emit("Loading cancelled")

        self.runner.start("vae", jobs.load_vae_job, source, family, self.prefs, on_result=done, on_error=failed,
                          on_cancel=cancelled, on_progress=lambda d, t, _s: self.vae_panel.set_busy("Downloading", d, t))

    def set_vae(self, vae) -> None:
        """Make ``vae`` the current VAE and re-run the current image with it."""
        old = self.vae
        self.vae = vae
        self._vae_token = next(_TOKENS)  # cache key: id() of a freed VAE can be reused by the next one
        if old is not None and old is not vae and old is not self.vae_b:
            old.close()
        self._show_vae_info()
        self.noise.max_timestep = vae.family.max_timestep
        self.enc = None
        self.message.emit(f"VAE ready: {vae.info.source}")
        if self.image is not None:
            self.request_encode()

    def _show_vae_info(self) -> None:
        from vaestudio.core.autoencoder import dtype_name

        v = self.vae
        self.vae_panel.show_info(v.info.to_dict(), str(v.device), dtype_name(v.dtype))

    def set_family(self, name: str) -> None:
        if self.vae is None or not name:
            return
        from vaestudio.core.families import get_family

        fam = get_family(name)
        if fam not in self.vae.family_choices():
            self.error.emit(f"{fam.label} VAEs have {fam.latent_channels} latent channels; this one has "
                            f"{self.vae.info.latent_channels}")
            self._show_vae_info()
            return
        self.vae.set_family(fam)
        self.cache.clear()
        self.set_vae(self.vae)

    def _set_vae_b(self, vae) -> None:
        self.vae_b = vae
        self.vae_panel.b_clear.show()
        self.request_b()

    def clear_b(self) -> None:
        self.vae_b = None
        self.vae_panel.b_clear.hide()
        self.compare.set_recon_b(None)
        self.metrics.labels["B: PSNR / SSIM"].setText("-")

    # -- images -------------------------------------------------------------------------------
    def open_sources(self, sources: list) -> None:
        if not sources:
            return
        self.sources = list(sources)
        self.index = 0
        self.show_current()

    def step(self, delta: int) -> None:
        if self.sources:
            self.index = (self.index + delta) % len(self.sources)
            self.show_current()

    def _update_nav(self) -> None:
        n = len(self.sources)
        self.prev_btn.setEnabled(n > 1)
        self.next_btn.setEnabled(n > 1)
        if n:
            src = self.sources[self.index]
            name = "clipboard image" if isinstance(src, bytes) else Path(str(src)).name
            self.nav_label.setText(f"{self.index + 1} / {n}: {name}")
        else:
            self.nav_label.setText("")

    def show_current(self) -> None:
        self._update_nav()
        src = self.sources[self.index]
        self.runner.cancel("decode")
        self.runner.cancel("encode")

        def loaded(image) -> None:
            self.image = image
            self.hint.hide()
            self.enc = None
            self.result = None
            self.compare.set_original(image.pixels)
            self.compare.set_recon(None)
            self.compare.set_diff(None)
            self.compare.set_recon_b(None)
            self.latents.set_latent(None)
            for note in image.notes:
                self.message.emit(note)
            if self.vae is not None:
                self.request_encode()
            if self.vae_b is not None:
                self.request_b()

        self.runner.start("image", jobs.load_image_job, src, on_result=loaded, on_error=self.error.emit)

    def _key(self, vae) -> tuple:
        src = self.sources[self.index]
        return (self._vae_token, vae.info.family, src if isinstance(src, str) else hash(src))

    def request_encode(self) -> None:
        if self.vae is None or self.image is None:
            return
        key = self._key(self.vae)
        if key in self.cache:
            self.cache.move_to_end(key)
            self._encoded(self.cache[key])
            return
        self.message.emit("Encoding ...")
        self.runner.start("encode", jobs.encode_job, self.vae, self.image, self.prefs.tile,
                          on_result=lambda r: self._encoded(r, key), on_error=self.error.emit,
                          on_progress=self._progress, on_cancel=lambda: self.message.emit("Cancelled"))

    def _encoded(self, result, key=None) -> None:
        enc, original = result.result, result.original
        if key is not None:
            self.cache[key] = result
            while len(self.cache) > ENCODE_CACHE_SIZE:
                self.cache.popitem(last=False)
        self.encoded = result
        self.enc, self.original = enc, original
        if original.shape != self.image.pixels.shape:  # e.g. the 28x28 digit an MNIST VAE sees
            self.compare.set_original(original)
        from vaestudio.core.analysis import latent_preview

        lat = enc.latent.numpy()
        self.latents.set_latent(lat, latent_preview(enc.latent, self.vae.family.name))
        self._metrics_base = {
            "Encode": _fmt_s(enc.seconds),
            "Latent shape": " x ".join(map(str, lat.shape)),
            "Compression": f"{original.size / max(1, lat.size):.0f}x fewer values",
        }
        for note in result.notes:
            self.message.emit(note)
        self.request_decode()

    def request_preview(self) -> None:
        """Instant: noise the cached latent and show its latent-to-RGB approximation."""
        if self.enc is None:
            return
        noise = self.noise.params()
        if noise is None:
            self.noise.snr.setText("SNR: -")
            return
        self.runner.start("preview", jobs.preview_job, self.vae, self.enc.latent, noise,
                          on_result=self._previewed, on_error=self.error.emit)

    def _previewed(self, res: jobs.PreviewResult) -> None:
        self.noise.snr.setText(f"SNR: {res.snr_db:.1f} dB" if res.snr_db is not None else "SNR: -")
        if res.preview is not None:
            h, w = self.original.shape[:2]
            f = -(-h // res.preview.shape[0])
            up = np.kron(res.preview, np.ones((f, f, 1), np.float32))[:h, :w]
            if up.shape[:2] == (h, w):
                self.compare.set_recon(up, "Preview (latent-to-RGB, decoding ...)")

    def _ablate(self, channel: int, factor: float) -> None:
        from vaestudio.core.pipeline import Ablation

        self.request_decode(Ablation(channel, factor))

    def request_decode(self, ablation=None) -> None:
        if self.enc is None:
            return
        noise = self.noise.params()
        self.message.emit("Decoding ...")
        self.runner.start("decode", jobs.decode_job, self.vae, self.encoded, noise, self.prefs.tile,
                          ablation, on_result=self._decoded, on_error=self.error.emit, on_progress=self._progress,
                          on_cancel=lambda: self.message.emit("Cancelled"))

    def _decoded(self, res) -> None:
        self.result = res
        self.compare.set_recon(res.decoded, res.label)
        self.compare.set_diff(res.diff_rgb)
        m = res.metrics
        vals = dict(getattr(self, "_metrics_base", {}))
        psnr = m.psnr
        vals.update({
            "PSNR": "inf" if psnr == float("inf") else f"{psnr:.2f} dB",
            "SSIM": f"{m.ssim:.4f}",
            "MAE": f"{m.mae:.4f}",
            "Colour shift (R, G, B)": ", ".join(f"{v:+.4f}" for v in m.color_shift),
            "Decode": _fmt_s(res.decode_s),
            "B: PSNR / SSIM": self.metrics.text("B: PSNR / SSIM"),
        })
        self.metrics.set_values(vals)
        if res.noise is not None:
            self.noise.snr.setText(f"SNR: {res.noise.snr_db:.1f} dB")
        self.message.emit(f"PSNR {vals['PSNR']}, SSIM {vals['SSIM']}")

    def request_b(self) -> None:
        if self.vae_b is None or self.image is None:
            return

        def done(rec) -> None:
            self.compare.set_recon_b(rec.decoded, f"B: {Path(self.vae_b.info.source).name}")
            self.metrics.labels["B: PSNR / SSIM"].setText(f"{rec.metrics.psnr:.2f} dB / {rec.metrics.ssim:.4f}")

        self.runner.start("b", jobs.reconstruct_job, self.vae_b, self.image, self.prefs.tile, on_result=done,
                          on_error=self.error.emit)

    def _progress(self, done: int, total: int, what: str) -> None:
        if total > 1:
            self.message.emit(f"{what}: tile {done} of {total}")

    def cancel(self) -> None:
        for kind in ("image", "encode", "decode", "preview", "b"):
            self.runner.cancel(kind)
        self.message.emit("Cancelled")
