"""Render the SVG application icon to the PNG sizes desktops use (run after editing the SVG), and make
the Windows and macOS icons from those PNGs.

    python packaging/make_icons.py                    # SVG -> vaestudio/resources/icons/vaestudio-N.png
    python packaging/make_icons.py --platform DIR     # PNGs -> DIR/vaestudio.ico and DIR/vaestudio.icns

``build.py`` runs the second form before PyInstaller (Pillow writes both formats on every platform;
the spec takes them from build/icons/).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ICONS = Path(__file__).resolve().parents[1] / "vaestudio" / "resources" / "icons"
SIZES = (16, 32, 48, 64, 128, 256, 512)
#: the images each platform's icon holds (Windows: 16-256 px; macOS: up to 512, larger ones upscaled by Finder)
ICO_SIZES = (16, 32, 48, 64, 128, 256)
ICNS_SIZES = (16, 32, 64, 128, 256, 512)


def platform_icons(out: Path) -> list[Path]:
    """Write ``out/vaestudio.ico`` and ``out/vaestudio.icns`` from the rendered PNGs, each size its own
    image (not one image scaled down)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, sizes in (("vaestudio.ico", ICO_SIZES), ("vaestudio.icns", ICNS_SIZES)):
        images = [Image.open(ICONS / f"vaestudio-{s}.png").convert("RGBA") for s in sizes]
        largest, rest = images[-1], images[:-1]
        kw = {"sizes": [(s, s) for s in sizes]} if name.endswith(".ico") else {}
        largest.save(out / name, append_images=rest, **kw)
        written.append(out / name)
    return written


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
    if len(sys.argv) == 3 and sys.argv[1] == "--platform":
        print("wrote", ", ".join(str(p) for p in platform_icons(Path(sys.argv[2]))))
    else:
        main()
