"""A checklist of VAEs for the Analysis and Evaluate tabs: the inspector's A and B, recent VAEs, files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QListWidget, QListWidgetItem

from vaestudio.core.filetypes import WEIGHT_FILTER


class VaeChecklist(QListWidget):
    """Each item holds a VAE source; the inspector's loaded A and B come first and start ticked."""

    def __init__(self, inspector, tooltip: str) -> None:
        super().__init__()
        self.inspector = inspector
        self.setToolTip(tooltip)
        self.recent: list[str] = []
        self.files: list[str] = []  # added here with add_file

    def loaded(self) -> dict[str, object]:
        """The inspector's loaded VAEs by source (they are lent, never reloaded)."""
        ins = self.inspector
        return {v.info.source: v for v in (ins.vae, ins.vae_b) if v is not None}

    def refresh(self, recent: list[str] | None = None) -> None:
        if recent is not None:
            self.recent = list(recent)
        states = {self.item(i).data(Qt.ItemDataRole.UserRole): self.item(i).checkState() for i in range(self.count())}
        self.clear()
        seen: set[str] = set()
        for tag, source in zip(("A", "B"), [v.info.source if v is not None else None
                                            for v in (self.inspector.vae, self.inspector.vae_b)], strict=True):
            if source is not None and source not in seen:
                seen.add(source)
                self._add(f"{tag}: {Path(source).name or source}", source, states.get(source, Qt.CheckState.Checked))
        for source in self.recent + self.files:
            if source not in seen:
                seen.add(source)
                default = Qt.CheckState.Checked if source in self.files else Qt.CheckState.Unchecked
                self._add(Path(source).name or source, source, states.get(source, default))

    def _add(self, text: str, source: str, state) -> None:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, source)
        item.setToolTip(source)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(state)
        self.addItem(item)

    def pick_file(self, title: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title, "", WEIGHT_FILTER)
        if path:
            self.add_file(path)

    def add_file(self, source: str) -> None:
        """Offer a VAE file, ticked."""
        if source not in self.files:
            self.files.append(source)
        self.refresh()
        for i in range(self.count()):
            if self.item(i).data(Qt.ItemDataRole.UserRole) == source:
                self.item(i).setCheckState(Qt.CheckState.Checked)

    def chosen(self) -> list[tuple[str, str]]:
        """(short unique name, source) of the ticked VAEs, in list order."""
        from vaestudio.core.evaluate.data import short_names

        sources = [self.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.count())
                   if self.item(i).checkState() == Qt.CheckState.Checked]
        return list(zip(short_names(sources), sources, strict=True))
