"""The training tab: the MNIST studio, or a fine-tune of the inspector's VAE (``finetune_tab``), by a choice.

The MNIST studio trains the classic VAE live, shows its latent space and sends it to the inspector.
The run is one generator job (``core.mnist.session.training_session``) in the shared worker layer;
its state is an explicit ``RunState``. The UI thread never touches the model while it trains:
snapshots and checkpoints are taken by the worker between batches (``Worker.call_soon``), and
interpolation and traversal run in a job of their own on a snapshot of the weights.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from vaestudio.core.errors import one_line
from vaestudio.ui.session import Session, wire
from vaestudio.ui.training import jobs
from vaestudio.ui.training.controls import RunState, TrainingControls
from vaestudio.ui.training.finetune_tab import FinetuneTab
from vaestudio.ui.training.modes import add_modes, side_by_side
from vaestudio.ui.training.plots import TrainingPlots

MODES = ("MNIST VAE", "Fine-tune the inspector's VAE A")


class TrainingTab(QWidget):
    open_in_inspector = Signal()  # the trained VAE (or the fine-tune) is in the session now: show the inspector

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.runner = session.runner
        self.controls = TrainingControls()
        self.controls.setFixedWidth(400)
        self.plots = TrainingPlots()
        self.finetune = FinetuneTab(session)
        self.finetune.open_in_inspector.connect(self.open_in_inspector)
        self.mode = add_modes(self, [(MODES[0], side_by_side(self.controls, self.plots)), (MODES[1], self.finetune)])
        self.state = RunState.IDLE
        self.trainer = None  # held only while no session runs; the session returns it when it ends
        self.spec: tuple[str, int, int] | None = None  # (arch, hidden, latent) of the model
        self.weights: dict | None = None  # the latest CPU snapshot of the weights
        self.class_digits: dict = {}
        self.resume_path: str | None = None
        self._live = None  # the trainer of the running session (for worker-thread requests only)
        self._stop_reason = "stopped"
        self._step_of_save = 0
        self.saved_step = 0  # the step of the last checkpoint written or loaded
        self.step = 0
        self.total_steps = 0
        self.start_step = 0
        self.t_start = 0.0
        self.last_dir = ""
        c = self.controls
        c.start_btn.clicked.connect(self.start)
        c.pause_btn.clicked.connect(self.toggle_pause)
        c.stop_btn.clicked.connect(self.stop)
        c.new_btn.clicked.connect(self.new_run)
        c.save_btn.clicked.connect(self.pick_save)
        c.load_btn.clicked.connect(self.pick_load)
        c.inspect_btn.clicked.connect(self.send_to_inspector)
        c.interp_btn.clicked.connect(self.interpolate)
        c.trav_btn.clicked.connect(self.traverse)
        c.browse_data.connect(lambda: c.pick_data_folder(c.data_dir.text() or self.last_dir))
        c.epochs.valueChanged.connect(lambda _v: self._set_state(self.state))
        self._session_connected = False
        self._connect_session(True)
        self._devices_changed()

    def _connect_session(self, connect: bool) -> None:
        if connect == self._session_connected:  # closing twice lets go once
            return
        self._session_connected = connect
        wire([(self.session.devices_changed, self._devices_changed)], connect)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._connect_session(False)
        self.finetune.close()  # it lets go of the session too
        super().closeEvent(event)

    def _devices_changed(self) -> None:
        self.controls.set_devices(self.session.devices)

    # -- state ------------------------------------------------------------------------------------
    def _epochs_done(self) -> int:
        return self.plots.history[-1].epoch if self.plots.history else 0

    def _set_state(self, state: RunState) -> None:
        self.state = state
        can_continue = state == RunState.STOPPED or (
            state == RunState.FINISHED and self.controls.epochs.value() > self._epochs_done())
        self.controls.set_state(state, can_continue=can_continue)
        if state not in (RunState.RUNNING, RunState.PAUSED, RunState.LOADING):
            self.controls.eta.setText("")

    def is_running(self) -> bool:
        return self.runner.is_running("train")

    def has_model(self) -> bool:
        return self.state not in (RunState.IDLE, RunState.LOADING)

    def unsaved(self) -> bool:
        """Trained steps that no checkpoint holds."""
        return self.has_model() and self.step > self.saved_step

    # -- training ---------------------------------------------------------------------------------
    def current_config(self):
        from vaestudio.core.mnist.train import TrainConfig

        c = self.controls
        return TrainConfig(epochs=c.epochs.value(), batch_size=c.batch.value(), lr=c.lr.value(),
                           latent_dim=c.latent.value(), hidden_dim=c.hidden.value(), beta=c.beta.value(),
                           seed=c.seed.value(), arch=c.arch.currentText(), dataset=c.dataset.currentText())

    def start(self) -> None:
        """Start a new run, or continue the stopped (or loaded) one."""
        if self.state in (RunState.LOADING, RunState.RUNNING, RunState.PAUSED):
            return
        c = self.controls
        config = self.current_config()
        trainer, resume = (self.trainer, self.resume_path) if self.state != RunState.IDLE else (None, None)
        if self.state == RunState.IDLE:
            self.plots.reset()
            self.step = self.saved_step = 0
        self.trainer = None
        self.resume_path = None
        self._set_state(RunState.LOADING)
        self.session.message.emit("Loading data ...")
        self.runner.start("train", jobs.session_job, config=config, dataset=c.dataset.currentText(),
                          data_dir=c.data_dir.text().strip() or None, download=c.download.currentIndex() == 1,
                          device=c.device.currentText(), trainer=trainer if resume is None else None,
                          resume_path=resume, graceful=True,
                          on_yield=self._on_record, on_result=self._on_ended, on_error=self._on_failed,
                          on_cancel=self._on_ended, on_progress=self._on_download)

    def toggle_pause(self) -> None:
        w = self.runner.running.get("train")
        if w is None:
            return
        paused = self.state != RunState.PAUSED
        w.set_paused(paused)
        self._set_state(RunState.PAUSED if paused else RunState.RUNNING)
        self.session.message.emit("Paused" if paused else "Resumed")

    def stop(self) -> None:
        """Ask the run to stop at the next batch; never blocks the window."""
        if self.runner.is_running("train"):
            self.runner.stop("train")
            self.session.message.emit("Stopping ...")

    def new_run(self) -> None:
        if self.unsaved() and QMessageBox.question(
                self, "New run", "Discard the current run? It has not been saved.",
                QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel) != QMessageBox.StandardButton.Discard:
            return
        self.trainer = self.weights = self.spec = self.resume_path = None
        self.step = self.saved_step = 0
        self.plots.reset()
        self._set_state(RunState.IDLE)

    def _on_download(self, done: int, total: int, _what: str) -> None:
        if total:
            self.controls.progress.setRange(0, total)
            self.controls.progress.setValue(done)
            self.controls.eta.setText(f"downloading: {100 * done // total}%")

    def _on_record(self, rec) -> None:
        from vaestudio.core.mnist.session import Epoch, Loaded, Steps
        from vaestudio.core.mnist.train import StopRecord

        if isinstance(rec, Loaded):
            self._live = rec.trainer  # touched only by requests that run in the worker thread
            cfg = rec.config
            self.spec = (cfg.arch, cfg.hidden_dim, cfg.latent_dim)
            self.class_digits = rec.class_digits or self.class_digits
            self.total_steps, self.start_step = rec.total_steps, rec.start_step
            self.step = rec.start_step
            self.controls.progress.setRange(0, self.total_steps)
            self.controls.progress.setValue(self.step)
            self.controls.trav_dim.setMaximum(cfg.latent_dim - 1)
            if not self.plots.history and rec.history:
                self.plots.set_history(rec.history)
            self.t_start = time.monotonic()
            if rec.description:
                self.session.message.emit(rec.description)
            self._set_state(RunState.RUNNING)
        elif isinstance(rec, Steps):
            self.plots.add_steps(rec.records)
            last = rec.records[-1]
            self.step = last.step
            self.controls.progress.setValue(self.step)
            done = self.step - self.start_step
            if done > 0 and self.total_steps and self.state == RunState.RUNNING:
                rate = done / max(time.monotonic() - self.t_start, 1e-6)
                left = (self.total_steps - self.step) / rate
                self.controls.eta.setText(f"epoch {last.epoch}, step {self.step}/{self.total_steps}, "
                                          f"{last.samples_per_s:,.0f} img/s, about {math.ceil(left)} s left")
        elif isinstance(rec, Epoch):
            self.plots.add_epoch(rec.record, rec.pictures)
            self.weights = rec.weights
            r = rec.record
            self.session.message.emit(f"epoch {r.epoch}: train {r.train_loss:.2f}, held-out {r.heldout_loss:.2f} nats "
                              f"(reconstruction {r.recon:.2f}, KL {r.kl:.2f}) in {r.seconds:.2f} s")
        elif isinstance(rec, StopRecord):
            if rec.reason == "diverged":
                self.session.error.emit(rec.message)
            else:
                self.session.message.emit(rec.message)
            self._stop_reason = rec.reason

    def _on_ended(self, trainer=None) -> None:
        self.trainer = trainer
        reason, self._stop_reason = self._stop_reason, "stopped"
        self._live = None
        if trainer is None:  # failed or cancelled before the model existed
            self._set_state(RunState.IDLE if self.spec is None else RunState.STOPPED)
            return
        self._set_state(RunState.FINISHED if reason == "finished" else RunState.STOPPED)

    def _on_failed(self, msg: str) -> None:
        self.session.error.emit(msg)
        self._on_ended(None)

    # -- checkpoints and the inspector --------------------------------------------------------------
    def save_checkpoint(self, path: str, on_saved=None) -> None:
        """Write a checkpoint; while training runs, the worker writes it between two batches."""
        if not self.has_model():
            self.session.error.emit("nothing to save: train or load a model first")
            return

        def saved(result) -> None:
            if isinstance(result, Exception):
                self.session.error.emit(one_line(result))
                return
            self.saved_step = max(self.saved_step, self._step_of_save)
            self.session.message.emit(f"Checkpoint saved to {path}")
            if on_saved is not None:
                on_saved()

        w = self.runner.running.get("train")
        if w is not None:
            self._step_of_save = self.step
            live = self._live
            w.call_soon(lambda: jobs.as_value(lambda: live.save(path)), saved)
            return
        if self.trainer is None:
            self.session.error.emit("nothing to save yet")
            return
        self._step_of_save = self.step
        self.runner.start("save", jobs.save_job, self.trainer, path, on_result=saved, on_error=self.session.error.emit)

    def load_checkpoint(self, path: str) -> None:
        """Load a checkpoint: Start continues training it; Open in inspector uses it."""
        if self.state in (RunState.LOADING, RunState.RUNNING, RunState.PAUSED):
            self.session.error.emit("stop training before loading a checkpoint")
            return

        def loaded(result) -> None:
            config, history, weights, step = result
            c = self.controls
            for box, v in ((c.epochs, config.epochs), (c.batch, config.batch_size), (c.latent, config.latent_dim),
                           (c.hidden, config.hidden_dim), (c.seed, config.seed)):
                box.setValue(v)
            c.lr.setValue(config.lr)
            c.beta.setValue(config.beta)
            c.arch.setCurrentText(config.arch)
            self.trainer = None
            self.resume_path = path
            self.spec = (config.arch, config.hidden_dim, config.latent_dim)
            self.weights = weights
            self.step = self.saved_step = step
            self.plots.reset()
            self.plots.set_history(history)
            self.controls.trav_dim.setMaximum(config.latent_dim - 1)
            self._set_state(RunState.STOPPED)
            self.session.message.emit(f"Loaded {path} ({len(history)} epochs trained); Continue trains it further")

        self.runner.start("load", jobs.read_checkpoint_job, path, on_result=loaded, on_error=self.session.error.emit)

    def pick_save(self) -> None:
        start = str(Path(self.last_dir or ".") / "mnist-vae.safetensors")
        path, _ = QFileDialog.getSaveFileName(self, "Save checkpoint", start, "Checkpoints (*.safetensors)")
        if path:
            self.last_dir = str(Path(path).parent)
            self.save_checkpoint(path)

    def pick_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint", self.last_dir, "Checkpoints (*.safetensors)")
        if path:
            self.last_dir = str(Path(path).parent)
            self.load_checkpoint(path)

    def send_to_inspector(self) -> None:
        """The trained model becomes the session's VAE A (a copy; training may go on)."""
        def ready(vae) -> None:
            if vae is None:
                self.session.error.emit("train a model for an epoch first (or load a checkpoint in the MNIST studio)")
                return
            self.session.set_vae(vae)
            self.open_in_inspector.emit()

        self.request_inspector_vae(ready)

    def request_inspector_vae(self, on_ready) -> None:
        """The trained weights as an inspector VAE (a copy, taken by the worker if training runs)."""
        if self.spec is None:
            on_ready(None)
            return
        spec = self.spec

        def build(weights) -> None:
            from vaestudio.core.mnist.session import studio_vae

            if isinstance(weights, Exception) or weights is None:
                on_ready(None)
                return
            self.weights = weights
            on_ready(studio_vae(spec, weights))

        w = self.runner.running.get("train")
        if w is not None and self.state != RunState.LOADING:
            from vaestudio.core.mnist.session import snapshot

            live = self._live
            w.call_soon(lambda: jobs.as_value(lambda: snapshot(live)), build)
        else:
            build(self.weights)

    # -- latent exploration ---------------------------------------------------------------------------
    def _explore(self, what: str, arg, caption: str) -> None:
        if self.weights is None or self.spec is None:
            self.session.error.emit("train a model for an epoch first (or load a checkpoint)")
            return
        self.runner.start("explore", jobs.explore_job, what, self.spec, self.weights, arg,
                          on_result=lambda strip: self.plots.show_strip(strip, caption), on_error=self.session.error.emit)

    def interpolate(self) -> None:
        a, b = self.controls.interp_a.value(), self.controls.interp_b.value()
        missing = [d for d in (a, b) if d not in self.class_digits]
        if missing:
            self.session.error.emit(f"no held-out example of digit {missing[0]} (train or continue a run first)")
            return
        self._explore("interpolate", (self.class_digits[a], self.class_digits[b]),
                      f"interpolation from a held-out {a} to a held-out {b}")

    def traverse(self) -> None:
        if self.spec is None:
            self.session.error.emit("train a model first")
            return
        dim = self.controls.trav_dim.value() % self.spec[2]
        self._explore("traverse", dim, f"latent dimension {dim} from -3 to +3 (the others 0)")
