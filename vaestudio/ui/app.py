"""Starting the GUI."""

from __future__ import annotations

import sys


def run_gui(images: list[str] | None = None, vae: str | None = None) -> int:
    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = QMainWindow()
    win.setWindowTitle("vaestudio")
    win.setCentralWidget(QLabel("vaestudio"))
    win.resize(900, 600)
    win.show()
    return app.exec()
