"""The metrics panel: what the encoding and the reconstructions on screen measure, one typed row each."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel


def seconds_text(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def psnr_text(psnr: float) -> str:
    return "inf (identical)" if psnr == float("inf") else f"{psnr:.2f} dB"


class MetricsPanel(QGroupBox):
    """Shows one consistent state: ``set_values(encoded, result, result_b)``; a missing one reads "-"."""

    def __init__(self) -> None:
        super().__init__("Metrics")
        self.form = QFormLayout(self)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.psnr = self._row("PSNR")
        self.ssim = self._row("SSIM")
        self.mae = self._row("MAE")
        self.colour_shift = self._row("Colour shift")
        self.colour_shift.setToolTip("Mean of reconstruction minus original, for R, G and B")
        self.encode = self._row("Encode")
        self.decode = self._row("Decode")
        self.tiled = self._row("Tiled")
        self.latent_shape = self._row("Latent shape")
        self.compression = self._row("Compression")
        self.b = self._row("B: PSNR / SSIM")
        self.worst = self._row("Worst frame")
        self.flicker = self._row("Flicker")
        self.flicker.setToolTip("Mean over frames of |(r_t - r_t-1) - (x_t - x_t-1)|: how much the reconstruction's "
                                "change between frames differs from the original's (0: none)")
        self._clip_rows(False)

    def _row(self, name: str) -> QLabel:
        lab = QLabel("-")
        lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lab.setWordWrap(True)
        self.form.addRow(name, lab)
        return lab

    def set_values(self, encoded=None, result=None, result_b=None) -> None:
        """VAE A's encoding of the image, its last complete reconstruction and B's; each may be None."""
        e, r, b = encoded, result, result_b
        m = r.metrics if r is not None else None
        texts = {
            self.encode: seconds_text(e.seconds) if e is not None else "-",
            self.latent_shape: " x ".join(map(str, e.raw.shape)) if e is not None else "-",
            self.compression: f"{e.original.size / max(1, e.raw.numel()):.0f}x fewer values" if e is not None else "-",
            self.tiled: ("yes" if e.tiled else "no") if e is not None else "-",
            self.psnr: psnr_text(m.psnr) if m is not None else "-",
            self.ssim: f"{m.ssim:.4f}" if m is not None else "-",
            self.mae: f"{m.mae:.4f}" if m is not None else "-",
            self.colour_shift: "R {:+.4f}  G {:+.4f}  B {:+.4f}".format(*m.color_shift) if m is not None else "-",
            self.decode: seconds_text(r.decode_s) if r is not None else "-",
            self.b: f"{b.metrics.psnr:.2f} dB / {b.metrics.ssim:.4f}" if b is not None else "-",
        }
        self._clip_rows(False)
        for label, text in texts.items():
            label.setText(text)

    def _clip_rows(self, clip: bool) -> None:
        for row in (self.worst, self.flicker):
            self.form.setRowVisible(row, clip)
        self.form.setRowVisible(self.b, not clip)

    def set_clip_values(self, encoded=None, progress=None) -> None:
        """A clip's encoding (``ClipEncoding``) and its reconstruction so far (``ui.clip_jobs.ClipProgress``):
        means over the frames decoded, the worst frame and the flicker; each may be None."""
        e, r = encoded, progress
        psnr = r.psnr_mean if r is not None else None
        part = "" if r is None or r.complete else f" ({r.decoded} of {r.total} frames)"
        worst = r.worst_frame if r is not None else None

        def mean(name: str) -> str:
            v = r.mean(name) if r is not None else None
            return "-" if v is None else f"{v:.4f}"

        texts = {
            self.encode: seconds_text(e.seconds) if e is not None else "-",
            self.latent_shape: " x ".join(map(str, e.raw.shape)) if e is not None else "-",
            self.compression: f"{e.original.size / max(1, e.raw.numel()):.0f}x fewer values" if e is not None else "-",
            self.tiled: ("yes" if e.tiled else "no") if e is not None else "-",
            self.psnr: f"mean {psnr_text(psnr)}{part}" if psnr is not None else "-",
            self.ssim: mean("ssim"),
            self.mae: mean("mae"),
            self.colour_shift: "-",
            self.decode: seconds_text(r.seconds) if r is not None and r.complete else "-",
            self.worst: f"frame {worst}: {psnr_text(r.psnr[worst])}" if worst is not None else "-",
            self.flicker: f"{r.flicker:.4f}" if r is not None and r.flicker is not None else "-",
        }
        self._clip_rows(True)
        for label, text in texts.items():
            label.setText(text)
