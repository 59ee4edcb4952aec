"""Helpers for driving the real window in tests."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox


def answer_next_dialog(button: str, delay_ms: int = 50, tries: int = 100) -> list[str]:
    """Press ``button`` ("Save", "Discard", "Cancel", "Ok") in the next modal message box that opens.

    Returns a list that receives the box's text once answered (so a test can assert what was asked).
    """
    asked: list[str] = []

    def poll(left: int) -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            asked.append(box.text())
            box.button(getattr(QMessageBox.StandardButton, button)).click()
        elif left > 0:
            QTimer.singleShot(delay_ms, lambda: poll(left - 1))

    QTimer.singleShot(delay_ms, lambda: poll(tries))
    return asked


def make_window(tmp_path):
    """The real main window with its settings in a temporary ini file."""
    from PySide6.QtCore import QSettings

    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import Store

    return MainWindow(store=Store(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)))


def drop(win, paths):
    """A real drop: drag-enter then drop events delivered to the window through the event system."""
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(50, 50)
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, md, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, enter)
    assert enter.isAccepted()
    ev = QDropEvent(pos, Qt.DropAction.CopyAction, md, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, ev)
    assert ev.isAccepted()
