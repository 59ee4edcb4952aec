"""A checklist of VAEs for the Analysis and Evaluate tabs: the session's A and B, recent VAEs, files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QListWidget, QListWidgetItem

from vaestudio.core.filetypes import WEIGHT_FILTER
from vaestudio.ui.session import Session, wire


class VaeChecklist(QListWidget):
    """Each item holds a VAE source; the session's loaded A and B come first and start ticked.

    It follows the session (VAE A and B, the recent VAEs) by itself; the tab that holds it calls
    ``connect_session(False)`` from its own ``_connect_session(False)``.
    """

    def __init__(self, session: Session, tooltip: str) -> None:
        super().__init__()
        self.session = session
        self.setToolTip(tooltip)
        self.files: list[str] = []  # added here with add_file
        self._lent: set[str] = set()  # the sources of the session's A and B at the last refresh
        self._session_connected = False
        self.connect_session(True)
        self.refresh()

    def connect_session(self, connect: bool) -> None:
        if connect == self._session_connected:
            return
        self._session_connected = connect
        s = self.session
        wire([(s.vae_changed, self._vae_changed), (s.recent_vaes_changed, self.refresh)], connect)

    def _vae_changed(self, _slot: str) -> None:
        self.refresh()

    def loaded(self) -> dict[str, object]:
        """The session's loaded VAEs by source (they are lent, never reloaded)."""
        return self.session.lent_vaes()

    def refresh(self) -> None:
        states = {self.item(i).data(Qt.ItemDataRole.UserRole): self.item(i).checkState() for i in range(self.count())}
        self.clear()
        seen: set[str] = set()
        s = self.session
        lent_before, self._lent = self._lent, set(s.lent_vaes())
        for tag, vae in (("A", s.vae), ("B", s.vae_b)):
            source = vae.info.source if vae is not None else None
            if source is not None and source not in seen:
                seen.add(source)
                # newly lent (even if it was on offer as a recent VAE): ticked; still lent: as the user left it
                state = states.get(source, Qt.CheckState.Checked) if source in lent_before else Qt.CheckState.Checked
                self._add(f"{tag}: {Path(source).name or source}", source, state)
        for source in s.recent_vaes + self.files:
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
