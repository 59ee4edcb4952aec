"""Running core functions off the UI thread.

A ``Worker`` runs ``fn(*args, progress=..., should_stop=..., **kwargs)`` in a QThread and reports
back through queued signals; it never touches widgets. ``JobRunner`` keeps the running workers,
makes the latest request of a kind win (the previous one is cancelled, its late result dropped by a
generation counter), and cancels and joins everything on shutdown.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal

log = logging.getLogger("vaestudio")


class Worker(QThread):
    progressed = Signal(int, int, str)  # done, total, what
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, fn: Callable, *args, label: str = "", **kwargs) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs, self.label = fn, args, kwargs, label
        self.generation = 0
        self.kind = ""

    def _progress(self, done: int, total: int) -> None:
        self.progressed.emit(int(done), int(total or 0), self.label)

    def run(self) -> None:  # noqa: D102 - runs in the worker thread
        from vaestudio.core.errors import Cancelled, VaeStudioError

        try:
            result = self.fn(*self.args, progress=self._progress, should_stop=self.isInterruptionRequested,
                             **self.kwargs)
        except Cancelled:
            self.cancelled.emit()
        except VaeStudioError as exc:
            self.failed.emit(str(exc))
        except MemoryError:
            self.failed.emit("out of memory; try a smaller image or tiling")
        except Exception as exc:  # noqa: BLE001 - shown in the window, logged with its traceback
            log.error("worker %s failed:\n%s", self.label, traceback.format_exc())
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            if self.isInterruptionRequested():
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)


class JobRunner(QObject):
    """Starts workers by kind; a new job of a kind cancels the previous one."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.running: dict[str, Worker] = {}
        self.generations: dict[str, int] = {}
        self._all: set[Worker] = set()

    def start(self, kind: str, fn: Callable, *args, on_result: Callable | None = None,
              on_error: Callable[[str], None] | None = None, on_progress: Callable | None = None,
              on_cancel: Callable | None = None, label: str = "", **kwargs) -> Worker:
        self.cancel(kind)
        gen = self.generations.get(kind, 0) + 1
        self.generations[kind] = gen
        w = Worker(fn, *args, label=label or kind, **kwargs)
        w.kind, w.generation = kind, gen

        def current() -> bool:
            return self.generations.get(kind) == gen

        if on_result is not None:
            w.succeeded.connect(lambda r: current() and on_result(r))
        if on_error is not None:
            w.failed.connect(lambda m: current() and on_error(m))
        if on_progress is not None:
            w.progressed.connect(lambda d, t, s: current() and on_progress(d, t, s))
        if on_cancel is not None:
            w.cancelled.connect(lambda: current() and on_cancel())
        w.finished.connect(lambda: self._done(w))
        self.running[kind] = w
        self._all.add(w)
        w.start()
        self.busy_changed.emit(True)
        return w

    def _done(self, w: Worker) -> None:
        self._all.discard(w)
        if self.running.get(w.kind) is w:
            del self.running[w.kind]
        w.deleteLater()
        if not self._all:
            self.busy_changed.emit(False)

    def cancel(self, kind: str) -> None:
        w = self.running.pop(kind, None)
        if w is not None:
            self.generations[kind] = self.generations.get(kind, 0) + 1  # drop its late result
            w.requestInterruption()

    def cancel_all(self) -> None:
        for kind in list(self.running):
            self.cancel(kind)
        for w in list(self._all):
            w.requestInterruption()

    def busy(self) -> bool:
        """True while any worker thread is still running (finished ones may await cleanup)."""
        return any(w.isRunning() for w in self._all)

    def wait_all(self, msecs: int = 5000) -> bool:
        """Cancel everything and wait; True if every thread has stopped."""
        self.cancel_all()
        ok = True
        for w in list(self._all):
            ok = w.wait(msecs) and ok
        return ok
