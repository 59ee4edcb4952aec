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
        for label, text in texts.items():
            label.setText(text)
