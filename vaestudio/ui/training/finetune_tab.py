"""The training tab's fine-tune: a fine-tune of the inspector's VAE A on a folder of images, live.

The run is the core's generator (``core.finetune.run.finetune``) as one graceful job ("finetune") in
the shared worker layer: Pause holds it between two events, Stop asks it to stop after the current
step (it writes its checkpoint first), and Start on an output folder that holds a checkpoint
continues from it (the core's resume: the same data order, the steps may grow). Each validation
carries the held-out PSNR and a gallery of held-out images (before | after | original), computed in
the worker. *Open in inspector* makes the fine-tune VAE B, its base VAE A.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QWidget

from vaestudio.core.finetune.options import (
    CHECKPOINT,
    SUPPORTED,
    Checkpointed,
    FinetuneOptions,
    Finished,
    Skipped,
    Started,
    StepDone,
    Stopped,
    Validated,
)
from vaestudio.ui.session import Session, source_name, wire
from vaestudio.ui.training import finetune_jobs as jobs
from vaestudio.ui.training.controls import RunState
from vaestudio.ui.training.finetune_controls import FinetuneControls
from vaestudio.ui.training.finetune_plots import FinetunePlots
from vaestudio.ui.training.modes import side_by_side

KIND = "finetune"
GALLERY = 4  # held-out images in the gallery
ACTIVE = (RunState.LOADING, RunState.RUNNING, RunState.PAUSED)


class FinetuneTab(QWidget):
    open_in_inspector = Signal()  # the fine-tune is VAE B now: show the inspector

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.runner = session.runner
        self.controls = FinetuneControls()
        self.controls.setFixedWidth(400)
        self.plots = FinetunePlots()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(side_by_side(self.controls, self.plots))
        self.state = RunState.IDLE
        self.options: FinetuneOptions | None = None  # the last run's (Continue goes on with its VAE)
        self.step = self.total = self.start_step = 0
        self.checkpoint: str | None = None  # the run's, once written
        self.checkpoint_step = 0  # the step it holds
        self.exported: str | None = None  # the fine-tuned VAE file of the last finished run
        self.exported_step = 0
        self.t_start = 0.0
        self._stop_reason = ""
        c = self.controls
        c.start_btn.clicked.connect(self.start)
        c.pause_btn.clicked.connect(self.toggle_pause)
        c.stop_btn.clicked.connect(self.stop)
        c.inspect_btn.clicked.connect(self.send_to_inspector)
        c.export_btn.clicked.connect(self.export)
        for edit in (c.data_dir, c.out_dir):
            edit.textChanged.connect(lambda _t: self._refresh())
        c.steps.valueChanged.connect(lambda _v: self._refresh())
        self._session_connected = False
        self._connect_session(True)
        self._refresh()

    def _connect_session(self, connect: bool) -> None:
        if connect == self._session_connected:
            return
        self._session_connected = connect
        wire([(self.session.vae_changed, self._vae_changed)], connect)

    def _vae_changed(self, _slot: str) -> None:
        self._refresh()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._connect_session(False)
        super().closeEvent(event)

    # -- state ------------------------------------------------------------------------------------
    def _out(self) -> Path | None:
        text = self.controls.out_dir.text().strip()
        return Path(text).expanduser() if text else None

    def _own_run(self) -> bool:
        """The output folder is the last run's: Continue goes on with its VAE, whatever VAE A is now."""
        out = self._out()
        return self.options is not None and out is not None and out == Path(self.options.out).expanduser()

    def _resumes(self) -> bool:
        out = self._out()
        return out is not None and (out / CHECKPOINT).is_file()

    def _exportable(self) -> bool:
        """The last run stopped with trained steps in its checkpoint that no exported VAE holds."""
        return (self.state not in ACTIVE and self.checkpoint is not None and Path(self.checkpoint).is_file()
                and self.checkpoint_step > self.exported_step)

    def why_not(self) -> str:
        """Why Start is disabled, in one line ("" when it is not)."""
        c = self.controls
        if self.state in ACTIVE:
            return ""
        if not self._own_run():
            vae = self.session.vae
            if vae is None:
                return "Load a VAE in the inspector first: the fine-tune starts from VAE A."
            if vae.architecture not in SUPPORTED:
                return (f"VAE A is a {vae.architecture} VAE, which cannot be fine-tuned yet "
                        f"(only {', '.join(SUPPORTED)}).")
        if not c.data_dir.text().strip():
            return "Choose the data folder: the images to fine-tune on."
        if self._out() is None:
            return "Choose an output folder for the checkpoint and the fine-tuned VAE."
        if self._own_run() and self.state == RunState.FINISHED and c.steps.value() <= self.step:
            return f"The run finished at step {self.step}: raise Steps to continue it, or choose another output folder."
        return ""

    def _refresh(self) -> None:
        c = self.controls
        vae = self.session.vae
        if self._own_run() and self.options is not None:
            c.vae_label.setText(f"{source_name(self.options.source)} (this run's base)")
        elif vae is None:
            c.vae_label.setText("none: load one in the inspector (VAE A)")
        else:
            c.vae_label.setText(f"VAE A: {source_name(vae.info.source)} ({vae.architecture}, {vae.family.name})")
        why = self.why_not()
        c.reason.setText(why)
        c.reason.setVisible(bool(why))
        c.set_state(self.state, can_continue=self._resumes(), startable=not why,
                    has_weights=self.checkpoint is not None, exportable=self._exportable())
        if self.state not in ACTIVE:
            c.eta.setText("")

    def _set_state(self, state: RunState) -> None:
        self.state = state
        self._refresh()

    def is_running(self) -> bool:
        return self.runner.is_running(KIND)

    def unsaved(self) -> bool:
        """A run going, or trained steps no exported VAE holds."""
        return self.state in ACTIVE or (self.options is not None and self.step > self.exported_step)

    def unsaved_text(self) -> str:
        name = source_name(self.options.source) if self.options is not None else "the VAE"
        kept = f"Its checkpoint is kept in {self.options.out}: Start there continues it." if self.options else ""
        if self.state in ACTIVE:
            return (f"A fine-tune of {name} is running (step {self.step} of {self.total}) and has not been exported. "
                    f"Quit and stop it? {kept}")
        return (f"The fine-tune of {name} stopped at step {self.step} of {self.total} and has not been exported. "
                f"Quit anyway? (Export writes it.) {kept}")

    # -- the run ----------------------------------------------------------------------------------
    def current_options(self, resume: bool) -> FinetuneOptions:
        c = self.controls
        if self._own_run() and self.options is not None:
            source, family = self.options.source, self.options.family
        else:
            vae = self.session.vae
            source, family = str(vae.info.source), vae.family.name
        return FinetuneOptions([c.data_dir.text().strip()], source, str(self._out()), part=c.part.currentText(),
                               steps=c.steps.value(), batch=c.batch.value(), size=c.size.value(), lr=c.lr.value(),
                               val=c.val.text().strip() or "0.05", every=c.every.value(), resume=resume,
                               device=self.session.prefs.device, family=family, gallery=GALLERY)

    def start(self) -> None:
        """Start a fine-tune, or continue the one whose checkpoint the output folder holds."""
        if self.state in ACTIVE or self.why_not():
            return
        resume = self._resumes()
        if not (resume and self._own_run()):
            self.plots.reset()  # a new run, or another run's checkpoint (its curves are in its metrics.csv)
            self.exported, self.exported_step = None, 0
        opts = self.current_options(resume)
        self._run(opts, "Continuing the fine-tune from its checkpoint ..." if resume else
                  f"Loading {source_name(opts.source)} and the images ...")

    def export(self) -> None:
        """Export the stopped run: the core's resume of its checkpoint with no steps left to train, which
        writes the fine-tuned VAE as a finished run does."""
        if not self._exportable() or self.options is None:
            return
        self._run(dataclasses.replace(self.options, resume=True, steps=self.checkpoint_step),
                  f"Exporting the fine-tune at step {self.checkpoint_step} ...")

    def _run(self, options: FinetuneOptions, message: str) -> None:
        self.options = options
        self.checkpoint = str(Path(options.out) / CHECKPOINT) if options.resume else None
        if not options.resume:
            self.checkpoint_step = 0
        self._stop_reason = ""
        self._set_state(RunState.LOADING)
        self.session.message.emit(message)
        self.runner.start(KIND, jobs.finetune_job, self.options, graceful=True, on_yield=self._on_event,
                          on_result=lambda _r: self._on_ended(), on_error=self._on_failed,
                          on_cancel=self._on_ended)

    def toggle_pause(self) -> None:
        w = self.runner.running.get(KIND)
        if w is None or self.state not in (RunState.RUNNING, RunState.PAUSED):
            return
        paused = self.state != RunState.PAUSED
        w.set_paused(paused)
        self._set_state(RunState.PAUSED if paused else RunState.RUNNING)
        self.session.message.emit("Fine-tune paused" if paused else "Fine-tune resumed")

    def stop(self) -> None:
        """Ask the run to stop after its current step (it writes its checkpoint); never blocks."""
        if self.runner.is_running(KIND):
            self.runner.stop(KIND)
            self.session.message.emit("Stopping the fine-tune after this step ...")

    def _on_event(self, ev) -> None:
        if isinstance(ev, StepDone):
            self.step = ev.step
            self.plots.add_step(ev.step, ev.loss)
            c = self.controls
            c.progress.setValue(ev.step)
            done = ev.step - self.start_step
            if self.state == RunState.RUNNING and done > 0:
                left = (self.total - ev.step) * (time.monotonic() - self.t_start) / done
                c.eta.setText(f"step {ev.step}/{self.total}, loss {ev.loss:.4f}, {ev.samples_per_s:.2f} images/s, "
                              f"about {math.ceil(left)} s left")
        elif isinstance(ev, Started):
            self.step = self.start_step = ev.step
            if self.options.resume:
                self.checkpoint_step = ev.step
            self.total = ev.steps
            self.controls.progress.setRange(0, ev.steps)
            self.controls.progress.setValue(ev.step)
            self.t_start = time.monotonic()
            self.session.message.emit(
                f"Fine-tuning the {ev.part} of a {ev.architecture} VAE ({ev.family}) from step {ev.step}: "
                f"{ev.train_images} training and {ev.val_images} held-out images")
            for note in ev.notes:
                self.session.message.emit(note)
            if self.state == RunState.LOADING:
                self._set_state(RunState.RUNNING)
        elif isinstance(ev, Validated):
            self.plots.add_validation(ev)
            now, base = ev.current.get("psnr"), ev.base.get("psnr")
            if now is not None and base is not None:
                self.session.message.emit(f"step {ev.step}: held-out PSNR {now:.2f} dB (the base {base:.2f} dB)")
        elif isinstance(ev, Checkpointed):
            self.checkpoint, self.checkpoint_step = ev.path, ev.step
            self._refresh()
        elif isinstance(ev, Skipped):
            self.session.message.emit(f"{ev.path}: {ev.reason}; skipped")
        elif isinstance(ev, Finished):
            self.exported = next((p for p in ev.outputs if p.endswith(("vae.safetensors", "_decoder.pth"))), None)
            self.exported_step = ev.step
            self._stop_reason = "finished"
            done = "Exported the fine-tune" if ev.step == self.start_step else "Fine-tune finished"
            self.session.message.emit(f"{done} at step {ev.step}: the VAE is in {self.options.out}")
        elif isinstance(ev, Stopped):
            self._stop_reason = ev.reason
            if ev.reason == "stopped":  # the run wrote its checkpoint at this step before it stopped
                self.checkpoint, self.checkpoint_step = str(Path(self.options.out) / CHECKPOINT), ev.step
            (self.session.error if ev.reason == "diverged" else self.session.message).emit(ev.message)

    def _on_ended(self) -> None:
        if self._stop_reason == "finished":
            self._set_state(RunState.FINISHED)
        else:
            self._set_state(RunState.STOPPED if self.checkpoint is not None else RunState.IDLE)

    def _on_failed(self, msg: str) -> None:
        self.session.error.emit(msg)
        self._on_ended()

    # -- the inspector ------------------------------------------------------------------------------
    def send_to_inspector(self) -> None:
        """The fine-tune becomes VAE B (loaded in a worker), its base VAE A: A/B them on any image."""
        opts = self.options
        if opts is None or self.checkpoint is None:
            self.session.error.emit("fine-tune until the first checkpoint first")
            return
        vae = self.session.vae
        if vae is None or str(vae.info.source) != opts.source:
            self.session.load_vae(opts.source, opts.family or "", slot="a")
        exported = self.exported if self.step <= self.exported_step else None

        def ready(tuned) -> None:
            self.session.set_vae(tuned, slot="b")
            self.session.message.emit(f"VAE B is the fine-tune ({source_name(tuned.info.source)}), "
                                      f"VAE A its base ({source_name(opts.source)})")
            self.open_in_inspector.emit()

        self.session.message.emit("Loading the fine-tune as VAE B ...")
        self.runner.start("finetune_vae", jobs.tuned_vae_job, opts.source, opts.family, self.session.prefs,
                          opts.out, exported, on_result=ready, on_error=self.session.error.emit)
