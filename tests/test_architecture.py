"""Layering contracts: the core never imports Qt; importing vaestudio stays cheap."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import vaestudio.core


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_never_imports_qt():
    names = [m.name for m in pkgutil.walk_packages(vaestudio.core.__path__, "vaestudio.core.")]
    assert len(names) > 10
    loaded = _modules_after("\n".join(f"import {n}" for n in names))
    qt = {m for m in loaded if m.split(".")[0] in {"PySide6", "shiboken6", "pyqtgraph", "superqt", "PyQt5", "PyQt6"}}
    assert not qt, f"vaestudio.core pulled in Qt: {sorted(qt)[:5]}"


def test_importing_vaestudio_and_cli_imports_no_torch():
    loaded = _modules_after("import vaestudio, vaestudio.cli; vaestudio.cli.build_parser()")
    assert "torch" not in loaded and "diffusers" not in loaded


def test_the_window_is_built_without_torch():
    """torch and diffusers load in the first worker, after the window is on screen."""
    loaded = _modules_after(
        "import os; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from vaestudio.ui.app import make_app\nfrom vaestudio.ui.main_window import MainWindow\n"
        "app = make_app(); w = MainWindow(); w.show(); app.processEvents()"
    )
    assert "PySide6.QtWidgets" in loaded
    assert "torch" not in loaded and "diffusers" not in loaded


def test_qt_signals_keep_reference_counts():
    """PySide6 6.12.0 decrements True's refcount on every emit(); a long session then aborts."""
    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        plain = Signal()
        flag = Signal(bool)

    e = Emitter()
    e.plain.connect(lambda: None)
    e.flag.connect(lambda v: None)
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(500):
        e.plain.emit()
        e.flag.emit(False)
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert after[0] - before[0] >= -5 and after[1] - before[1] >= -5, (before, after)
