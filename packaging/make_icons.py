"""Render the SVG application icon to the PNG sizes desktops use (run after editing the SVG)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ICONS = Path(__file__).resolve().parents[1] / "vaestudio" / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256, 512)


def main() -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication(sys.argv[:1])  # noqa: F841 - needed for painting
    svg = QSvgRenderer(str(ICONS / "vaestudio.svg"))
    for size in SIZES:
        img = QImage(size, size, QImage.Format.Format_ARGB32)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        svg.render(p)
        p.end()
        img.save(str(ICONS / f"vaestudio-{size}.png"))
    (ICONS / "vaestudio.png").write_bytes((ICONS / "vaestudio-256.png").read_bytes())
    print("wrote", ", ".join(f"{s}px" for s in SIZES))


if __name__ == "__main__":
    main()
