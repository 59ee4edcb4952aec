"""The MNIST studio's controls: hyper-parameters, data, run buttons, progress, latent exploration."""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


class RunState(Enum):
    IDLE = "idle"  # no model yet
    LOADING = "loading"  # reading the data, building the model
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # stopped by the user, or a checkpoint loaded: Continue goes on
    FINISHED = "finished"  # all epochs done


def _spin(lo: int, hi: int, val: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(val)
    return s


class TrainingControls(QWidget):
    browse_data = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.epochs = _spin(1, 1000, 10)
        self.batch = _spin(1, 4096, 128)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.latent = _spin(1, 256, 20)
        self.hidden = _spin(8, 4096, 400)
        self.beta = QDoubleSpinBox()
        self.beta.setRange(0, 100)
        self.beta.setValue(1.0)
        self.seed = _spin(0, 2**31 - 1, 1)
        self.dataset = QComboBox()
        self.dataset.addItems(["mnist", "fashion"])
        self.dataset.setEditable(True)
        self.dataset.setToolTip("mnist, fashion, or a folder of IDX files or images")
        self.data_dir = QLineEdit()
        self.data_dir.setPlaceholderText("default: the user cache folder")
        self.data_dir.setToolTip("The folder with the IDX files (train-images-idx3-ubyte.gz ...)")
        self.browse_btn = QPushButton("Browse...")
        self.download = QComboBox()
        self.download.addItems(["use local files", "download if missing"])
        self.arch = QComboBox()
        self.arch.addItems(["mlp", "conv"])
        self.device = QComboBox()
        self.device.addItems(["cpu"])
        self.device.setToolTip("The small MNIST VAE trains fastest on the CPU; a GPU helps the conv model")
        data_row = QHBoxLayout()
        data_row.setContentsMargins(0, 0, 0, 0)
        data_row.addWidget(self.data_dir, 1)
        data_row.addWidget(self.browse_btn)
        form = QFormLayout()
        for label, w in (("Epochs", self.epochs), ("Batch size", self.batch), ("Learning rate", self.lr),
                         ("Latent size", self.latent), ("Hidden size", self.hidden), ("Beta (KL weight)", self.beta),
                         ("Seed", self.seed), ("Dataset", self.dataset), ("Data folder", data_row),
                         ("Data", self.download), ("Model", self.arch), ("Device", self.device)):
            form.addRow(label, w)
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.stop_btn = QPushButton("Stop")
        self.new_btn = QPushButton("New run")
        self.new_btn.setToolTip("Start again from scratch with the settings above")
        self.save_btn = QPushButton("Save checkpoint...")
        self.load_btn = QPushButton("Load checkpoint...")
        self.inspect_btn = QPushButton("Open in inspector")
        self.inspect_btn.setToolTip("Use the trained VAE on your own digit images in the inspector")
        self.progress = QProgressBar()
        self.eta = QLabel("")
        buttons = QGridLayout()
        for i, b in enumerate((self.start_btn, self.pause_btn, self.stop_btn, self.new_btn, self.save_btn,
                               self.load_btn)):
            buttons.addWidget(b, i // 3, i % 3)
        buttons.addWidget(self.inspect_btn, 2, 0, 1, 3)
        box = QGroupBox("Training")
        cl = QVBoxLayout(box)
        cl.addLayout(form)
        cl.addLayout(buttons)
        cl.addWidget(self.progress)
        cl.addWidget(self.eta)
        # exploration: by digit class, not by sample index
        self.interp_a = _spin(0, 9, 0)
        self.interp_b = _spin(0, 9, 7)
        self.interp_btn = QPushButton("Interpolate")
        self.interp_btn.setToolTip("Decode points between the latents of a held-out example of each digit")
        self.trav_dim = _spin(0, 255, 0)
        self.trav_btn = QPushButton("Traverse")
        self.trav_btn.setToolTip("Decode one latent dimension from -3 to +3 with the others at 0")
        explore = QGroupBox("Explore the latent space")
        el = QFormLayout(explore)
        row = QHBoxLayout()
        row.addWidget(QLabel("from digit"))
        row.addWidget(self.interp_a)
        row.addWidget(QLabel("to"))
        row.addWidget(self.interp_b)
        row.addWidget(self.interp_btn)
        el.addRow(row)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("latent dimension"))
        row2.addWidget(self.trav_dim)
        row2.addWidget(self.trav_btn)
        el.addRow(row2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(box)
        lay.addWidget(explore)
        lay.addStretch(1)
        self.browse_btn.clicked.connect(self.browse_data)
        self.hyper = (self.epochs, self.batch, self.lr, self.latent, self.hidden, self.beta, self.seed, self.dataset,
                      self.data_dir, self.browse_btn, self.download, self.arch, self.device)
        self.set_state(RunState.IDLE, can_continue=False)

    def set_devices(self, devices: list[str]) -> None:
        current = self.device.currentText()
        self.device.clear()
        self.device.addItems([d for d in devices if d != "auto"])
        if current in devices:
            self.device.setCurrentText(current)

    def set_state(self, state: RunState, *, can_continue: bool) -> None:
        """Buttons and their texts follow the run state (never the other way round)."""
        active = state in (RunState.LOADING, RunState.RUNNING, RunState.PAUSED)
        have_model = state in (RunState.STOPPED, RunState.FINISHED) or active
        self.start_btn.setText("Continue" if can_continue and state != RunState.IDLE else "Start")
        self.start_btn.setEnabled(not active and (state == RunState.IDLE or can_continue))
        self.pause_btn.setText("Resume" if state == RunState.PAUSED else "Pause")
        self.pause_btn.setEnabled(state in (RunState.RUNNING, RunState.PAUSED))
        self.stop_btn.setEnabled(active)
        self.new_btn.setEnabled(not active and state != RunState.IDLE)
        self.save_btn.setEnabled(have_model and state != RunState.LOADING)
        self.load_btn.setEnabled(not active)
        self.inspect_btn.setEnabled(have_model and state != RunState.LOADING)
        self.interp_btn.setEnabled(have_model)
        self.trav_btn.setEnabled(have_model)
        # everything but the number of epochs is fixed once a model exists (New run frees it)
        for w in self.hyper:
            w.setEnabled(not active and (state == RunState.IDLE or w is self.epochs))

    def pick_data_folder(self, start: str) -> str | None:
        path = QFileDialog.getExistingDirectory(self, "Folder with the MNIST IDX files", start)
        if path:
            self.data_dir.setText(path)
        return path or None
