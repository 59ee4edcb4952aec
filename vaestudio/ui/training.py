"""The MNIST studio: train the classic VAE live, look at its latent space, send it to the inspector.

Training runs in a QThread that iterates the core's ``Trainer.run()`` generator. Step records are
batched and sent at most twice a second, so plotting never slows training; each epoch the
worker also renders the pictures (reconstructions, prior samples, a PCA of held-out latents) with
a random generator of its own, leaving the training run's random numbers untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QThread, Signal
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

LABEL_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                 (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


@dataclass
class EpochPictures:
    recon_grid: np.ndarray  # (2*28, n*28): held-out digits above their reconstructions
    samples: np.ndarray  # (rows*28, cols*28): decoded draws from the prior
    pca: np.ndarray  # (N, 2) held-out latent means projected on their first two components
    labels: np.ndarray
    weights: dict  # a CPU snapshot of the model's weights


def grid(images: np.ndarray, cols: int) -> np.ndarray:
    n = len(images)
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * 28, cols * 28), np.float32)
    for i, im in enumerate(images.reshape(n, 28, 28)):
        r, c = divmod(i, cols)
        out[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] = im
    return out


def epoch_pictures(trainer, heldout_y: np.ndarray, seed: int) -> EpochPictures:
    import torch

    model = trainer.model.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        x = trainer.heldout_x[:10]
        mu, _ = model.encode(x)
        recon = model.decode(mu).cpu().numpy()
        samples = model.decode(torch.randn(32, model.latent_dim, generator=gen).to(x.device)).cpu().numpy()
        n = min(2000, len(trainer.heldout_x))
        mus = model.encode(trainer.heldout_x[:n])[0].cpu().double()
        # PCA from the small D x D covariance in torch: a numpy SVD here wakes OpenBLAS threads
        # that then compete with training for the cores (measured: -20% throughput)
        centred = mus - mus.mean(dim=0)
        _, vecs = torch.linalg.eigh(centred.T @ centred)
        top = vecs[:, [-1, -2]] if vecs.shape[1] >= 2 else torch.cat([vecs, torch.zeros_like(vecs)], dim=1)
        pca = (centred @ top).float().numpy()
    model.train()
    pair = np.concatenate([x.cpu().numpy(), recon])
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return EpochPictures(grid(pair, 10), grid(samples, 8), pca, heldout_y[:n], weights)


class TrainWorker(QThread):
    steps = Signal(object)  # list of StepRecord
    epoch = Signal(object, object)  # EpochRecord, EpochPictures
    stopped = Signal(object)  # StopRecord
    failed = Signal(str)
    loaded = Signal(object)  # the Trainer, once the data is loaded and it is built
    status = Signal(str)

    def __init__(self, make_trainer) -> None:
        super().__init__()
        self.make_trainer = make_trainer
        self.paused = False
        self.trainer = None
        self.heldout_y = np.zeros(0, np.int64)

    def run(self) -> None:
        from vaestudio.core.errors import VaeStudioError
        from vaestudio.core.mnist.train import EpochRecord, StepRecord, StopRecord

        try:
            self.trainer, self.heldout_y = self.make_trainer(self.status.emit, self.isInterruptionRequested)
            self.loaded.emit(self.trainer)
            pending, last = [], time.monotonic()
            for rec in self.trainer.run(should_pause=lambda: self.paused, should_stop=self.isInterruptionRequested):
                if isinstance(rec, StepRecord):
                    pending.append(rec)
                    if time.monotonic() - last > 0.5:  # 2 redraws a second: live, and cheap
                        self.steps.emit(pending)
                        pending, last = [], time.monotonic()
                elif isinstance(rec, EpochRecord):
                    if pending:
                        self.steps.emit(pending)
                        pending = []
                    self.epoch.emit(rec, epoch_pictures(self.trainer, self.heldout_y, rec.epoch))
                elif isinstance(rec, StopRecord):
                    if pending:
                        self.steps.emit(pending)
                    self.stopped.emit(rec)
        except VaeStudioError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported in the window
            self.failed.emit(f"{type(exc).__name__}: {exc}")


class TrainingTab(QWidget):
    message = Signal(str)
    error = Signal(str)
    open_in_inspector = Signal()

    def __init__(self, runner=None) -> None:
        super().__init__()
        self.runner = runner
        self.worker: TrainWorker | None = None
        self.trainer = None
        self.snapshot: dict | None = None
        self.config = None
        self.total_steps = 0
        self.t_start = 0.0
        # hyper-parameters
        self.epochs = self._spin(1, 1000, 10)
        self.batch = self._spin(1, 4096, 128)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.latent = self._spin(1, 256, 20)
        self.hidden = self._spin(8, 4096, 400)
        self.beta = QDoubleSpinBox()
        self.beta.setRange(0, 100)
        self.beta.setValue(1.0)
        self.seed = self._spin(0, 2**31 - 1, 1)
        self.dataset = QComboBox()
        self.dataset.addItems(["mnist", "fashion"])
        self.dataset.setEditable(True)
        self.dataset.setToolTip("mnist, fashion, or a folder of IDX files or images")
        self.data_dir = QLineEdit()
        self.data_dir.setPlaceholderText("data folder (default: the user cache folder)")
        self.download = QComboBox()
        self.download.addItems(["use local files", "download if missing"])
        self.arch = QComboBox()
        self.arch.addItems(["mlp", "conv"])
        self.device = QComboBox()
        self.device.addItems(["cpu", "cuda", "mps"])
        self.device.setToolTip("The small MNIST VAE trains fastest on the CPU; a GPU helps the conv model")
        form = QFormLayout()
        for label, w in (("Epochs", self.epochs), ("Batch size", self.batch), ("Learning rate", self.lr),
                         ("Latent size", self.latent), ("Hidden size", self.hidden), ("Beta (KL weight)", self.beta),
                         ("Seed", self.seed), ("Dataset", self.dataset), ("Data folder", self.data_dir),
                         ("Data", self.download), ("Model", self.arch), ("Device", self.device)):
            form.addRow(label, w)
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.stop_btn = QPushButton("Stop")
        self.save_btn = QPushButton("Save checkpoint...")
        self.load_btn = QPushButton("Load checkpoint...")
        self.inspect_btn = QPushButton("Open in inspector")
        self.pause_btn.setEnabled(False)
        self.stop_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.eta = QLabel("")
        buttons = QGridLayout()
        for i, b in enumerate((self.start_btn, self.pause_btn, self.stop_btn, self.save_btn, self.load_btn,
                               self.inspect_btn)):
            buttons.addWidget(b, i // 3, i % 3)
        controls = QGroupBox("Training")
        cl = QVBoxLayout(controls)
        cl.addLayout(form)
        cl.addLayout(buttons)
        cl.addWidget(self.progress)
        cl.addWidget(self.eta)
        # latent exploration
        self.interp_a = self._spin(0, 1999, 0)
        self.interp_b = self._spin(0, 1999, 1)
        self.interp_btn = QPushButton("Interpolate")
        self.trav_dim = self._spin(0, 255, 0)
        self.trav_btn = QPushButton("Traverse dimension")
        explore = QGroupBox("Explore the latent space")
        el = QFormLayout(explore)
        row = QHBoxLayout()
        row.addWidget(self.interp_a)
        row.addWidget(self.interp_b)
        row.addWidget(self.interp_btn)
        el.addRow("Held-out digits", row)
        row2 = QHBoxLayout()
        row2.addWidget(self.trav_dim)
        row2.addWidget(self.trav_btn)
        el.addRow("Dimension", row2)
        left = QVBoxLayout()
        left.addWidget(controls)
        left.addWidget(explore)
        left.addStretch(1)
        left_w = QWidget()
        left_w.setLayout(left)
        left_w.setMaximumWidth(380)
        # plots and pictures
        self.plots = pg.GraphicsLayoutWidget()
        self.step_plot = self.plots.addPlot(row=0, col=0, title="loss per step (nats/image, smoothed)")
        self.step_plot.setClipToView(True)
        self.step_plot.setDownsampling(auto=True, mode="peak")
        self.step_curve = self.step_plot.plot(pen=pg.mkPen((90, 140, 220), width=1.5))
        self.epoch_plot = self.plots.addPlot(row=0, col=1, title="per epoch: train vs held-out, recon and KL")
        self.epoch_plot.addLegend(offset=(-10, 10))
        self.curves = {k: self.epoch_plot.plot(pen=pg.mkPen(c, width=2), symbol="o", symbolSize=5, name=k)
                       for k, c in (("train", (90, 140, 220)), ("held-out", (230, 120, 40)),
                                    ("recon", (80, 180, 80)), ("KL", (200, 80, 160)))}
        self.plots.addLabel("held-out digits (top) and their reconstructions", row=1, col=0)
        self.plots.addLabel("samples from the prior N(0, I)", row=1, col=1)
        self.recon_vb = self.plots.addViewBox(row=2, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.recon_img = pg.ImageItem(axisOrder="row-major")
        self.recon_vb.addItem(self.recon_img)
        self.samples_vb = self.plots.addViewBox(row=2, col=1, lockAspect=True, invertY=True, enableMenu=False)
        self.samples_img = pg.ImageItem(axisOrder="row-major")
        self.samples_vb.addItem(self.samples_img)
        self.pca_plot = self.plots.addPlot(row=3, col=0, rowspan=2, title="held-out latents (PCA), coloured by label")
        # one scatter item per label, each with one brush: restyling 2000 points one by one held the
        # GIL for ~150 ms per epoch and slowed training by a fifth
        self.pca_scatters = []
        for k in range(11):
            colour = LABEL_COLOURS[k] if k < 10 else (150, 150, 150)
            item = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(*colour, 160))
            self.pca_plot.addItem(item)
            self.pca_scatters.append(item)
        self.explore_label = self.plots.addLabel("interpolation / traversal (use the buttons on the left)", row=3, col=1)
        self.explore_vb = self.plots.addViewBox(row=4, col=1, lockAspect=True, invertY=True, enableMenu=False)
        self.explore_img = pg.ImageItem(axisOrder="row-major")
        self.explore_vb.addItem(self.explore_img)
        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addWidget(self.plots, 1)
        self.step_x: list[float] = []
        self.step_y: list[float] = []
        self.ema: float | None = None
        self.history: list = []
        self.start_btn.clicked.connect(self.start)
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.stop_btn.clicked.connect(self.stop)
        self.save_btn.clicked.connect(self.pick_save)
        self.load_btn.clicked.connect(self.pick_load)
        self.inspect_btn.clicked.connect(self.open_in_inspector)
        self.interp_btn.clicked.connect(self.interpolate)
        self.trav_btn.clicked.connect(self.traverse)

    @staticmethod
    def _spin(lo: int, hi: int, val: int) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setValue(val)
        return s

    # -- training -----------------------------------------------------------------------------
    def current_config(self):
        from vaestudio.core.mnist.train import TrainConfig

        return TrainConfig(epochs=self.epochs.value(), batch_size=self.batch.value(), lr=self.lr.value(),
                           latent_dim=self.latent.value(), hidden_dim=self.hidden.value(), beta=self.beta.value(),
                           seed=self.seed.value(), arch=self.arch.currentText(), dataset=self.dataset.currentText())

    def start(self) -> None:
        """Start a new run; after Stop, continue the same run; after Load, continue the loaded one."""
        if self.worker is not None:
            return
        config = self.current_config()
        dataset, data_dir = self.dataset.currentText(), self.data_dir.text().strip() or None
        download = self.download.currentIndex() == 1
        device = self.device.currentText()
        resume_path = getattr(self, "_pending_resume", None)
        self._pending_resume = None
        existing = self.trainer if (self.trainer is not None and resume_path is None
                                    and self.trainer.progress.epoch <= config.epochs
                                    and self.start_btn.text() == "Continue") else None
        heldout_y = getattr(self, "_heldout_y", None)

        def make(status, should_stop):
            from vaestudio.core.mnist.data import load_dataset
            from vaestudio.core.mnist.train import Trainer

            if existing is not None:
                existing.config.epochs = max(existing.config.epochs, config.epochs)
                return existing, heldout_y

            def dl(name, done, total):
                status(f"downloading {name}: {done * 100 // max(total or 1, 1)}%")

            data = load_dataset(dataset, data_dir, download=download, progress=dl, should_stop=should_stop)
            status(f"{data.name}: {len(data.train_x)} training images, {len(data.heldout_x)} held out ({data.split})")
            if resume_path is not None:
                tr = Trainer.resume(resume_path, data.train_x, data.heldout_x, device=device)
                tr.config.epochs = max(tr.config.epochs, config.epochs)
                return tr, data.heldout_y
            return Trainer(config, data.train_x, data.heldout_x, device=device), data.heldout_y

        if existing is None:
            self._reset_plots()
        self.config = config
        self.worker = w = TrainWorker(make)
        w.steps.connect(self._on_steps)
        w.epoch.connect(self._on_epoch)
        w.stopped.connect(self._on_stopped)
        w.failed.connect(self._on_failed)
        w.loaded.connect(self._on_loaded)
        w.status.connect(self.message)
        w.finished.connect(self._on_finished)
        self.start_btn.setEnabled(False)
        self.pause_btn.setEnabled(True)
        self.stop_btn.setEnabled(True)
        self.t_start = time.monotonic()
        w.start()

    def _reset_plots(self) -> None:
        self.step_x, self.step_y, self.ema, self.history = [], [], None, []
        self.step_curve.setData([], [])
        for c in self.curves.values():
            c.setData([], [])

    def _on_loaded(self, trainer) -> None:
        import math

        self.trainer = trainer
        self._heldout_y = self.worker.heldout_y if self.worker is not None else None
        batches = math.ceil(len(trainer.train_x) / trainer.config.batch_size)
        self.total_steps = batches * trainer.config.epochs
        self.progress.setRange(0, self.total_steps)
        self.start_step = trainer.progress.step
        self.t_start = time.monotonic()

    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        self.worker.paused = not self.worker.paused
        self.pause_btn.setText("Resume" if self.worker.paused else "Pause")
        self.message.emit("Paused" if self.worker.paused else "Resumed")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.requestInterruption()
            self.worker.paused = False
            self.worker.wait(5000)

    def _on_steps(self, records) -> None:
        for r in records:
            self.ema = r.loss if self.ema is None else 0.95 * self.ema + 0.05 * r.loss
            self.step_x.append(r.step)
            self.step_y.append(self.ema)
        self.step_curve.setData(self.step_x, self.step_y)
        step = records[-1].step
        self.progress.setValue(step)
        done = step - getattr(self, "start_step", 0)
        if done > 0 and self.total_steps:
            rate = done / max(time.monotonic() - self.t_start, 1e-6)
            left = (self.total_steps - step) / rate
            self.eta.setText(f"epoch {records[-1].epoch}, step {step}/{self.total_steps}, "
                             f"{records[-1].samples_per_s:,.0f} img/s, about {left:.0f} s left")

    def _on_epoch(self, rec, pics: EpochPictures) -> None:
        self.history.append(rec)
        xs = [r.epoch for r in self.history]
        for key, attr in (("train", "train_loss"), ("held-out", "heldout_loss"), ("recon", "recon"), ("KL", "kl")):
            self.curves[key].setData(xs, [getattr(r, attr) for r in self.history])
        self.recon_img.setImage(pics.recon_grid, levels=(0, 1), autoLevels=False)
        self.samples_img.setImage(pics.samples, levels=(0, 1), autoLevels=False)
        labels = np.where(pics.labels >= 0, pics.labels % 10, 10)
        for k, item in enumerate(self.pca_scatters):
            item.setData(pos=pics.pca[labels == k])
        self.snapshot = pics.weights
        self.message.emit(f"epoch {rec.epoch}: train {rec.train_loss:.2f}, held-out {rec.heldout_loss:.2f} nats "
                          f"(recon {rec.recon:.2f}, KL {rec.kl:.2f}) in {rec.seconds:.2f} s")

    def _on_stopped(self, rec) -> None:
        if rec.reason == "diverged":
            self.error.emit(rec.message)
        else:
            self.message.emit(rec.message)

    def _on_failed(self, msg: str) -> None:
        self.error.emit(msg)

    def _on_finished(self) -> None:
        w = self.worker
        self.worker = None
        if w is not None:
            w.deleteLater()
        self.start_btn.setEnabled(True)
        self.start_btn.setText("Continue" if self.trainer and self.trainer.progress.epoch <= self.epochs.value()
                               else "Start")
        self.pause_btn.setEnabled(False)
        self.pause_btn.setText("Pause")
        self.stop_btn.setEnabled(False)

    def is_running(self) -> bool:
        return self.worker is not None and self.worker.isRunning()

    # -- checkpoints and the inspector ---------------------------------------------------------
    def has_model(self) -> bool:
        return self.trainer is not None

    def save_checkpoint(self, path: str) -> None:
        if self.trainer is None:
            self.error.emit("nothing to save: train or load a model first")
            return
        if self.is_running():
            self.error.emit("pause or stop training before saving (checkpoints are taken at batch boundaries)")
            return
        from vaestudio.core.errors import VaeStudioError

        try:
            self.trainer.save(path)
            self.message.emit(f"Checkpoint saved to {path}")
        except VaeStudioError as exc:
            self.error.emit(str(exc))

    def load_checkpoint(self, path: str) -> None:
        """Load a checkpoint to continue training it (Start continues) or use it in the inspector."""
        if self.is_running():
            self.error.emit("stop training before loading a checkpoint")
            return
        from vaestudio.core.errors import VaeStudioError
        from vaestudio.core.mnist.train import Trainer

        try:
            empty = np.zeros((1, 784), np.float32)
            tr = Trainer.resume(path, empty, empty)
        except VaeStudioError as exc:
            self.error.emit(str(exc))
            return
        c = tr.config
        for box, v in ((self.epochs, c.epochs), (self.batch, c.batch_size), (self.latent, c.latent_dim),
                       (self.hidden, c.hidden_dim), (self.seed, c.seed)):
            box.setValue(v)
        self.lr.setValue(c.lr)
        self.beta.setValue(c.beta)
        self.arch.setCurrentText(c.arch)
        self.trainer = tr
        self.snapshot = {k: v.clone() for k, v in tr.model.state_dict().items()}
        self._pending_resume = path
        self.message.emit(f"Loaded {path} (epoch {tr.progress.epoch - 1} done)")

    def pick_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save checkpoint", "mnist-vae.safetensors",
                                              "Checkpoints (*.safetensors)")
        if path:
            self.save_checkpoint(path)

    def pick_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.load_checkpoint(path)

    def inspector_vae(self):
        """The latest trained weights as an inspector VAE (a copy: training can go on)."""
        if self.trainer is None:
            return None
        from vaestudio.core.archs.mnist import MnistVae
        from vaestudio.core.mnist.model import make_model

        c = self.trainer.config
        model = make_model(c.arch, c.hidden_dim, c.latent_dim)
        model.load_state_dict(self.snapshot or self.trainer.model.state_dict())
        return MnistVae.from_trained(model, f"MNIST VAE (studio, {c.arch} {c.hidden_dim}-{c.latent_dim})")

    # -- latent exploration ---------------------------------------------------------------------
    def _decode_strip(self, z) -> None:
        import torch

        vae = self.inspector_vae()
        with torch.inference_mode():
            imgs = vae.model.decode(z).numpy()
        self.explore_img.setImage(grid(imgs, len(imgs)), levels=(0, 1), autoLevels=False)
        self.explore_vb.autoRange(padding=0)

    def interpolate(self) -> None:
        if self.trainer is None or not len(self.trainer.heldout_x):
            self.error.emit("train a model first")
            return
        import torch

        n = len(self.trainer.heldout_x)
        a, b = self.interp_a.value() % n, self.interp_b.value() % n
        vae = self.inspector_vae()
        with torch.inference_mode():
            mu = vae.model.encode(self.trainer.heldout_x[[a, b]].cpu())[0]
        t = torch.linspace(0, 1, 10)[:, None]
        self._decode_strip(mu[0] * (1 - t) + mu[1] * t)
        self.explore_label.setText(f"interpolation between held-out digits {a} and {b}")

    def traverse(self) -> None:
        if self.trainer is None:
            self.error.emit("train a model first")
            return
        import torch

        d = self.trainer.config.latent_dim
        dim = self.trav_dim.value() % d
        z = torch.zeros(11, d)
        z[:, dim] = torch.linspace(-3, 3, 11)
        self._decode_strip(z)
        self.explore_label.setText(f"latent dimension {dim} from -3 to +3 (others 0)")
