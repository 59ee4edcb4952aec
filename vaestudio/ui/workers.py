"""The one worker layer: core functions and generators run off the UI thread.

A ``Worker`` runs ``fn(*args, progress=..., should_stop=..., **kwargs)`` in a QThread. When ``fn``
returns a generator (training, the dataset evaluation, the analyses), the worker iterates it and
streams every yielded item back (``yielded``), pausing between items while paused, stopping when
cancelled, and running requests queued with ``call_soon`` (a model snapshot, say) between items, in
its own thread; the generator's return value is the result. Everything crosses threads through
queued signals; a worker never touches a widget.

``JobRunner`` keeps the running workers by kind: a new job of a kind cancels the previous one and
its late results are dropped by a generation counter (latest request wins); ``cancel`` is the user
cancelling, after which the job's ``on_cancel`` runs (so a busy panel always returns to rest);
``wait_all`` cancels and joins everything with a bounded wait for a clean shutdown.

In the spirit of superqt's ``GeneratorWorker``, on plain QThreads rather than a QThreadPool: with
the pool's default of one thread per core (two here), the slider's instant preview would queue
behind a running decode.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
import traceback
import weakref
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal

log = logging.getLogger("vaestudio")


class Worker(QThread):
    _live: weakref.WeakSet = weakref.WeakSet()  # every worker not yet garbage (tests check none outlives them)

    progressed = Signal(int, int, str)  # done, total, what
    yielded = Signal(object)  # a partial result of a generator
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, fn: Callable, *args, label: str = "", graceful: bool = False, **kwargs) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs, self.label = fn, args, kwargs, label
        # a graceful job ends itself when asked to stop (it sees should_stop) and still returns a result
        self.graceful = graceful
        self.kind = ""
        self.user_cancelled = False
        self.cancel_reported = False
        self._paused = threading.Event()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._relays: set[_Relay] = set()
        Worker._live.add(self)

    @classmethod
    def running_workers(cls) -> list[Worker]:
        out = []
        for w in list(cls._live):
            try:
                if w.isRunning():
                    out.append(w)
            except RuntimeError:  # its C++ side was deleted (deleteLater after finishing)
                pass
        return out

    # -- control, from the UI thread ----------------------------------------------------------
    def set_paused(self, paused: bool) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def call_soon(self, fn: Callable[[], object], on_done: Callable[[object], None]) -> None:
        """Run ``fn`` in the worker's thread between two yielded items (also while paused);
        ``on_done(result)`` is then called on the UI thread."""
        relay = _Relay()  # lives in the UI thread, so its signal is delivered there
        self._relays.add(relay)  # alive until delivered: a deleted receiver would drop the call

        def deliver(result: object) -> None:
            self._relays.discard(relay)
            on_done(result)

        relay.done.connect(deliver)
        self._requests.put((fn, relay))

    # -- in the worker thread --------------------------------------------------------------------
    def _progress(self, done: int, total: int) -> None:
        self.progressed.emit(int(done), int(total or 0), self.label)

    def _serve_requests(self, answer: BaseException | None = None) -> None:
        """Run the queued requests (or, with ``answer``, reply it to each: the job has ended)."""
        while True:
            try:
                fn, relay = self._requests.get_nowait()
            except queue.Empty:
                return
            if answer is not None:
                relay.done.emit(answer)
                continue
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - a failed request is reported, the job goes on
                log.error("request in worker %s failed:\n%s", self.label, traceback.format_exc())
                result = exc
            relay.done.emit(result)

    def _should_stop(self) -> bool:
        return self.isInterruptionRequested()

    def _should_pause(self) -> bool:
        """Given to jobs that pause themselves (training): queued requests are served meanwhile."""
        self._serve_requests()
        return self._paused.is_set() and not self.isInterruptionRequested()

    def run(self) -> None:  # noqa: D102 - runs in the worker thread
        from vaestudio.core.errors import Cancelled, VaeStudioError, one_line

        kwargs = dict(self.kwargs)
        if "should_pause" in inspect.signature(self.fn).parameters:
            kwargs["should_pause"] = self._should_pause
        try:
            result = self.fn(*self.args, progress=self._progress, should_stop=self._should_stop, **kwargs)
            if inspect.isgenerator(result):
                result = self._drive(result)
            self._serve_requests()
        except Cancelled:
            self.cancelled.emit()
        except VaeStudioError as exc:
            self.failed.emit(str(exc))
        except MemoryError:
            self.failed.emit("out of memory; try a smaller image or tiling")
        except Exception as exc:  # noqa: BLE001 - shown in the window, logged with its traceback
            log.error("worker %s failed:\n%s", self.label, traceback.format_exc())
            self.failed.emit(one_line(exc, with_type=True))
        else:
            if self.isInterruptionRequested() and not self.graceful:
                self.cancelled.emit()
            else:
                self.succeeded.emit(result)
        finally:
            # requests that came too late (or the job failed) are answered, never left waiting
            self._serve_requests(answer=Cancelled("the job had ended"))

    def _drive(self, gen):
        from vaestudio.core.errors import Cancelled

        try:
            while True:
                self._serve_requests()
                while self._paused.is_set() and not self.isInterruptionRequested():
                    self._serve_requests()
                    time.sleep(0.02)
                if self.isInterruptionRequested() and not self.graceful:
                    gen.close()
                    raise Cancelled()
                try:
                    item = next(gen)
                except StopIteration as stop:
                    return stop.value
                self.yielded.emit(item)
        finally:
            gen.close()


class _Relay(QObject):
    done = Signal(object)


class JobRunner(QObject):
    """Starts workers by kind; a new job of a kind cancels the previous one."""

    busy_changed = Signal(bool)
    jobs_changed = Signal()  # a job started or ended

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.running: dict[str, Worker] = {}
        self.generations: dict[str, int] = {}
        self._all: set[Worker] = set()

    def start(self, kind: str, fn: Callable, *args, on_result: Callable | None = None,
              on_error: Callable[[str], None] | None = None, on_progress: Callable | None = None,
              on_cancel: Callable | None = None, on_yield: Callable | None = None, label: str = "",
              graceful: bool = False, **kwargs) -> Worker:
        self._supersede(kind)
        gen = self.generations.get(kind, 0) + 1
        self.generations[kind] = gen
        w = Worker(fn, *args, label=label or kind, graceful=graceful, **kwargs)
        w.kind = kind

        def current() -> bool:
            return self.generations.get(kind) == gen

        if on_result is not None:
            w.succeeded.connect(lambda r: current() and on_result(r))
        if on_error is not None:
            w.failed.connect(lambda m: current() and on_error(m))
        if on_progress is not None:
            w.progressed.connect(lambda d, t, s: current() and on_progress(d, t, s))
        if on_yield is not None:
            w.yielded.connect(lambda item: current() and on_yield(item))
        if on_cancel is not None:
            # a job the user cancelled reports back exactly once, however it ended (it may have
            # finished or failed just before the cancel arrived); one replaced by a newer request does not
            def cancelled() -> None:
                if (current() or w.user_cancelled) and not w.cancel_reported:
                    w.cancel_reported = True
                    on_cancel()

            w.cancelled.connect(cancelled)
            w.finished.connect(lambda: w.user_cancelled and cancelled())
        w.finished.connect(lambda: self._done(w))
        self.running[kind] = w
        self._all.add(w)
        w.start()
        self.busy_changed.emit(True)
        self.jobs_changed.emit()
        return w

    def _done(self, w: Worker) -> None:
        self._all.discard(w)
        if self.running.get(w.kind) is w:
            del self.running[w.kind]
        w.deleteLater()
        self.jobs_changed.emit()
        if not self._all:
            self.busy_changed.emit(False)

    def _supersede(self, kind: str) -> None:
        w = self.running.pop(kind, None)
        if w is not None:
            self.generations[kind] = self.generations.get(kind, 0) + 1  # drop its late result
            w.requestInterruption()
            w.set_paused(False)

    def drop(self, kind: str) -> None:
        """Cancel a job silently: its results, errors and cancellation are never reported (a newer
        request makes it moot)."""
        self._supersede(kind)

    def stop(self, kind: str) -> None:
        """Ask a graceful job to end itself; its result still arrives."""
        w = self.running.get(kind)
        if w is not None:
            w.requestInterruption()
            w.set_paused(False)

    def cancel(self, kind: str) -> bool:
        """The user cancels the job of this kind; its ``on_cancel`` will run. True if one was running."""
        w = self.running.get(kind)
        if w is None:
            return False
        w.user_cancelled = True
        self._supersede(kind)
        return True

    def cancel_all(self) -> None:
        for kind in list(self.running):
            self.cancel(kind)
        for w in list(self._all):
            w.requestInterruption()
            w.set_paused(False)

    def is_running(self, kind: str) -> bool:
        w = self.running.get(kind)
        return w is not None and w.isRunning()

    def busy(self) -> bool:
        """True while any worker thread is still running (finished ones may await cleanup)."""
        return any(w.isRunning() for w in self._all)

    def idle(self) -> bool:
        """True once every job has ended and its end has been handled here (its results, errors and
        cancellation shown): ``busy()`` turns false first, since a thread's queued signals arrive after
        it has stopped."""
        return not self._all

    def wait_all(self, msecs: int = 5000) -> bool:
        """Cancel everything and wait; True if every thread has stopped."""
        self.cancel_all()
        deadline = time.monotonic() + msecs / 1000
        ok = True
        for w in list(self._all):
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = w.wait(left) and ok
        return ok
