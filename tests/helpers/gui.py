"""Helpers for driving the real window in tests."""

from __future__ import annotations

from PySide6.QtCore import QTimer
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
