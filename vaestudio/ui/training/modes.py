"""The training tab's choice of what it trains: a combo box above a stack of pages, one per mode."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QStackedWidget, QVBoxLayout, QWidget


def side_by_side(left: QWidget, right: QWidget) -> QWidget:
    """A page: controls on the left, plots on the right (taking the rest of the width)."""
    page = QWidget()
    lay = QHBoxLayout(page)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(left)
    lay.addWidget(right, 1)
    return page


def add_modes(owner: QWidget, pages: list[tuple[str, QWidget]]) -> QComboBox:
    """Lay ``owner`` out as "Train [mode]" above the pages; the combo box picks the page shown."""
    mode = QComboBox()
    stack = QStackedWidget()
    for name, page in pages:
        mode.addItem(name)
        stack.addWidget(page)
    mode.currentIndexChanged.connect(stack.setCurrentIndex)
    top = QHBoxLayout()
    top.addWidget(QLabel("Train"))
    top.addWidget(mode)
    top.addStretch(1)
    outer = QVBoxLayout(owner)
    outer.addLayout(top)
    outer.addWidget(stack, 1)
    return mode
