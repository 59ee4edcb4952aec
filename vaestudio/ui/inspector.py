"""The inspector: an image beside its reconstruction, the latents, noise, metrics, A/B.

This widget wires the panels to the jobs: every request snapshots its inputs here on the UI thread
and runs in a worker; results come back through queued signals and the latest request of a kind
wins. Encodings are cached per (image, VAE) with a fixed limit, so moving a slider never re-encodes.

What the views show is always one consistent state: the last complete reconstruction (its pane
title says what was decoded), its difference map and metrics. Previews (a tiny decoder's, or the
latent-to-RGB approximation) stand in the reconstruction pane only while a decode is under way, and
the last complete result comes back if that decode is cancelled.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget

from vaestudio.ui import jobs
from vaestudio.ui.latents import LatentPanel
from vaestudio.ui.panels import MetricsPanel, NoisePanel, VaePanel, snr_text
from vaestudio.ui.settings import Preferences
from vaestudio.ui.views import ImageCompare
from vaestudio.ui.workers import JobRunner

ENCODE_CACHE_SIZE = 8
SIDE_WIDTH = 400
_TOKENS = itertools.count(1)
DECODE_KINDS = ("image", "encode", "decode", "preview", "b")


def _fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def source_name(src) -> str:
    return "clipboard image" if isinstance(src, bytes) else Path(str(src)).name


class InspectorTab(QWidget):
    message = Signal(str)  # status bar text
    error = Signal(str)  # a non-blocking error message
    vae_loaded = Signal(str)  # the source, for the recent list
    reconstructed = Signal()  # a complete reconstruction is on screen

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

        self.vae = None
        self.vae_b = None
        self.preview_vae = None  # a tiny decoder for the current VAE's family, if Preferences name one
        self._vae_token = 0
        self._vae_b_token = 0
        self.images: list = []  # the list of image files (or clipboard bytes) being stepped through
        self.index = 0
        self.image = None  # the LoadedImage shown
        self.encoded = None  # pipeline.Encoded of the image by the current VAE
        self.result = None  # the last complete Reconstruction shown (A)
        self.result_b = None
        self.cache: OrderedDict = OrderedDict()
        self._metrics_base: dict[str, str] = {}
        self._shown_noise = None

        self.prev_btn.clicked.connect(lambda: self.step(-1))
        self.next_btn.clicked.connect(lambda: self.step(1))
        self.cancel_btn.clicked.connect(self.cancel)
        self.noise.changed.connect(self.request_preview)
        self.noise.settled.connect(self._noise_settled)
        self.latents.ablation_requested.connect(self._ablate)
        self.vae_panel.family_changed.connect(self.set_family)
        self.vae_panel.cancel.connect(lambda: self.runner.cancel("vae"))
        self.vae_panel.clear_b.connect(self.clear_b)
        self.compare.hovered.connect(self.message)
        self.latents.hovered.connect(self.message)
        self.runner.jobs_changed.connect(self._jobs_changed)
        self._update_nav()

    def _jobs_changed(self) -> None:
        self.cancel_btn.setEnabled(any(k in self.runner.running for k in DECODE_KINDS))

    # -- VAEs ---------------------------------------------------------------------------------
    def load_vae(self, source, family: str = "", *, slot: str = "a") -> None:
        label = str(source)
        self.message.emit(f"Loading VAE {source_name(label)} ...")
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
        """Make ``vae`` the current VAE and re-run the current image with it.

        The previous VAE is not closed here: a job (a decode, an analysis, an evaluation) may still be
        using it; it is freed when the last reference goes.
        """
        for kind in ("encode", "decode", "preview", "preview_vae"):
            self.runner.drop(kind)  # nothing of the old VAE's may arrive after this
        self.vae = vae
        self._vae_token = next(_TOKENS)  # cache key: id() of a freed VAE can be reused by the next one
        self.encoded = None
        self.result = None
        self.preview_vae = None
        self._show_vae_info()
        self.noise.set_max_timestep(vae.family.max_timestep)
        self.message.emit(f"VAE ready: {source_name(vae.info.source)}")
        self.load_preview_decoder()
        if self.image is not None:
            self.compare.set_original(self.image.pixels)  # until the encode says what this VAE sees
            self.compare.set_recon(None)
            self.compare.set_diff(None)
            self.request_encode()

    def _show_vae_info(self) -> None:
        from vaestudio.core.autoencoder import dtype_name

        v = self.vae
        families = [(f.name, f.label) for f in v.family_choices()]
        self.vae_panel.show_info(v.info.to_dict(), str(v.device), dtype_name(v.dtype), families)

    def set_family(self, name: str) -> None:
        if self.vae is None or not name or name == self.vae.family.name:
            return
        busy = [k for k in ("analysis", "evaluate") if k in self.runner.running]
        if busy:  # they use this VAE: its scaling must not change under them
            self.error.emit(f"the {busy[0]} in progress uses this VAE: change its family when it has finished")
            self._show_vae_info()
            return
        choices = {f.name: f for f in self.vae.family_choices()}
        if name not in choices:
            from vaestudio.core.families import get_family

            fam = get_family(name)
            self.error.emit(f"{fam.label} VAEs have {fam.latent_channels} latent channels; this one has "
                            f"{self.vae.info.latent_channels}")
            self._show_vae_info()
            return
        self.vae.set_family(choices[name])
        self.cache.clear()
        self.set_vae(self.vae)

    def load_preview_decoder(self) -> None:
        """Find and load the tiny decoder for the current VAE's family (Preferences > Preview decoder)."""
        self.preview_vae = None
        location = self.prefs.preview_decoder
        if not location or self.vae is None or self.vae.previews_itself:
            return
        family = self.vae.family.name
        token = self._vae_token

        def done(tiny) -> None:
            if token == self._vae_token and tiny is not None:
                self.preview_vae = tiny
                self.message.emit(f"Previews by {source_name(tiny.info.source)}")

        self.runner.start("preview_vae", jobs.load_preview_decoder_job, location, family, on_result=done,
                          on_error=lambda m: self.message.emit(f"No preview decoder: {m}"))

    def _set_vae_b(self, vae) -> None:
        self.runner.drop("b")
        self.vae_b = vae
        self._vae_b_token = next(_TOKENS)
        self.vae_panel.b_clear.show()
        self.request_b()

    def clear_b(self) -> None:
        self.runner.drop("b")
        self.vae_b = None
        self.result_b = None
        self.vae_panel.b_clear.hide()
        self.compare.set_recon_b(None)
        self.metrics.labels["B: PSNR / SSIM"].setText("-")

    # -- images -------------------------------------------------------------------------------
    def show_images(self, images: list) -> None:
        """Open a new list of images; if the first cannot be read, the previous list stays."""
        if images:
            self._show(list(images), 0, restore=(self.images, self.index))

    def step(self, delta: int) -> None:
        if len(self.images) > 1:
            self._show(self.images, (self.index + delta) % len(self.images), restore=None)

    def _update_nav(self, note: str = "") -> None:
        n = len(self.images)
        self.prev_btn.setEnabled(n > 1)
        self.next_btn.setEnabled(n > 1)
        self.nav_label.setText(f"{self.index + 1} / {n}: {source_name(self.images[self.index])}{note}" if n else "")

    def _show(self, images: list, index: int, restore) -> None:
        for kind in DECODE_KINDS:
            self.runner.drop(kind)
        src = images[index]

        def loaded(image) -> None:
            self.images, self.index = images, index
            self._update_nav()
            self.image = image
            self.hint.hide()
            self.encoded = None
            self.result = self.result_b = None
            self.compare.set_original(image.pixels)
            self.compare.set_recon(None)
            self.compare.set_diff(None)
            self.compare.set_recon_b(None)
            self.latents.set_latents(None)
            self.metrics.set_values({})
            for note in image.notes:
                self.message.emit(note)
            if self.vae is not None:
                self.request_encode()
            if self.vae_b is not None:
                self.request_b()

        def failed(msg: str) -> None:
            self.error.emit(msg)
            if restore is None:  # stepping onto a broken file: say so, show nothing stale
                self.images, self.index = images, index
                self.image = self.encoded = self.result = self.result_b = None
                self.compare.set_original(None)
                self.compare.set_recon(None)
                self.compare.set_diff(None)
                self.compare.set_recon_b(None)
                self.latents.set_latents(None)
                self.metrics.set_values({})
                self._update_nav("  (could not be read)")

        self.runner.start("image", jobs.load_image_job, src, on_result=loaded, on_error=failed)

    def _key(self, token: int, vae) -> tuple:
        src = self.images[self.index]
        return (token, vae.info.family, src if isinstance(src, str) else hash(src))

    def request_encode(self) -> None:
        if self.vae is None or self.image is None:
            return
        key = self._key(self._vae_token, self.vae)
        if key in self.cache:
            self.cache.move_to_end(key)
            self._encoded(self.cache[key])
            return
        self.message.emit("Encoding ...")
        self.runner.start("encode", jobs.encode_job, self.vae, self.image.pixels, self.prefs.tile,
                          on_result=lambda r: self._encoded(r, key), on_error=self.error.emit,
                          on_progress=self._progress, on_cancel=self._cancelled)

    def _encoded(self, result, key=None) -> None:
        encoded, rgb_preview = result
        if key is not None:
            self._cache_put(key, result)
        self.encoded = encoded
        enc = encoded.result
        self.compare.set_original(encoded.original)  # what this VAE sees (a 28x28 digit for MNIST)
        self._show_latents()
        self.latents.set_preview(rgb_preview)
        raw = enc.raw
        self._metrics_base = {
            "Encode": _fmt_s(enc.seconds),
            "Latent shape": " x ".join(map(str, raw.shape)),
            "Compression": f"{encoded.original.size / max(1, raw.numel()):.0f}x fewer values",
            "Tiled": "yes" if enc.tiled else "no",
        }
        if self.result is None:
            self.metrics.set_values(self._metrics_base)
        for note in encoded.notes:
            self.message.emit(note)
        self.request_decode()
        if self.preview_vae is not None or self.noise.params() is not None:
            self.request_preview()

    def _cache_put(self, key, value) -> None:
        self.cache[key] = value
        self.cache.move_to_end(key)
        while len(self.cache) > ENCODE_CACHE_SIZE:
            self.cache.popitem(last=False)

    def _show_latents(self) -> None:
        enc = self.encoded.result
        note = "noise is on: this is the clean latent; the noised one is decoded above" \
            if self.noise.params() is not None else ""
        self.latents.set_latents(enc.latent.numpy(), enc.raw.numpy(), note)

    # -- noise, previews, decodes ----------------------------------------------------------------
    def request_preview(self) -> None:
        """Instant: noise the cached latent and show a tiny decoder's picture (or latent-to-RGB)."""
        if self.encoded is None or self.vae is None:
            return
        noise = self.noise.params()
        if noise is None and self.preview_vae is None:
            self.noise.snr.setText(snr_text(None))
            return
        what = self.noise.describe() if noise is not None else "clean"
        self.runner.start("preview", jobs.preview_job, self.vae, self.encoded, noise, self.preview_vae,
                          on_result=lambda p: self._previewed(p, what, noise), on_error=self.error.emit)

    def _previewed(self, p: jobs.Preview, what: str, noise) -> None:
        self.noise.snr.setText(snr_text(p.snr_db))
        if p.image is None or (self.result is not None and self._shown_noise == noise):
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
        if self.encoded is None:
            return
        noise = self.noise.params()
        self._show_latents()
        self.message.emit("Decoding ...")
        self.runner.start("decode", jobs.decode_job, self.vae, self.encoded, noise, self.prefs.tile,
                          ablation, on_result=lambda r: self._decoded(r, noise), on_error=self._decode_failed,
                          on_progress=self._progress, on_cancel=self._cancelled)

    def _decoded(self, res, noise=None) -> None:
        self.result = res
        self._shown_noise = noise  # the settings the reconstruction on screen was decoded with
        self._show_result()
        self.reconstructed.emit()
        self.message.emit(f"PSNR {self.metrics.text('PSNR')}, SSIM {self.metrics.text('SSIM')}")

    def _show_result(self) -> None:
        """The last complete reconstruction, its difference and metrics: one consistent state."""
        res = self.result
        if res is None:
            self.compare.set_recon(None)
            self.compare.set_diff(None)
            return
        self.compare.set_recon(res.decoded, res.label)
        self.compare.set_diff(res.diff_rgb)
        m = res.metrics
        vals = dict(self._metrics_base)
        vals.update({
            "PSNR": "inf (identical)" if m.psnr == float("inf") else f"{m.psnr:.2f} dB",
            "SSIM": f"{m.ssim:.4f}",
            "MAE": f"{m.mae:.4f}",
            "Colour shift": "R {:+.4f}  G {:+.4f}  B {:+.4f}".format(*m.color_shift),
            "Decode": _fmt_s(res.decode_s),
            "B: PSNR / SSIM": self.metrics.text("B: PSNR / SSIM"),
        })
        self.metrics.set_values(vals)
        self.noise.snr.setText(snr_text(res.noise.snr_db if res.noise is not None else None))

    def _decode_failed(self, msg: str) -> None:
        self.error.emit(msg)
        self._show_result()

    def request_b(self) -> None:
        if self.vae_b is None or self.image is None:
            return
        key = self._key(self._vae_b_token, self.vae_b)
        cached = self.cache.get(key)
        noise = self.noise.params()
        name = source_name(self.vae_b.info.source)

        def done(result) -> None:
            encoded, rec = result
            self._cache_put(key, (encoded, None))
            self.result_b = rec
            label = f"B: {name}" + (f" ({rec.label})" if rec.noise is not None else "")
            self.compare.set_recon_b(rec.decoded, label)
            self.metrics.labels["B: PSNR / SSIM"].setText(f"{rec.metrics.psnr:.2f} dB / {rec.metrics.ssim:.4f}")

        self.runner.start("b", jobs.compare_job, self.vae_b, self.image.pixels, cached[0] if cached else None,
                          noise, self.prefs.tile, on_result=done, on_error=self.error.emit)

    def _progress(self, done: int, total: int, what: str) -> None:
        if total > 1:
            self.message.emit(f"{what}: tile {done} of {total}")

    def _cancelled(self) -> None:
        self._show_result()
        if self.result is not None:
            self.message.emit(f"Cancelled; showing the last complete result ({self.result.label})")
        else:
            self.message.emit("Cancelled")

    def cancel(self) -> None:
        """Esc: stop what runs for the image; the views go back to the last complete result."""
        cancelled = [self.runner.cancel(kind) for kind in DECODE_KINDS]
        if not any(cancelled):
            self.message.emit("Nothing to cancel")
