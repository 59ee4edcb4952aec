"""Uncaught exceptions, in the UI thread or any other, are logged to a file and shown in a dialog."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path

log = logging.getLogger("vaestudio")


def log_path() -> Path:
    from platformdirs import user_log_dir

    return Path(user_log_dir("vaestudio", appauthor=False)) / "vaestudio.log"


def setup_logging() -> Path:
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:  # a read-only home must not stop the app
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return path


def install_handlers(show) -> None:
    """``show(text)`` is called on the UI thread with a one-line summary of the error."""
    from PySide6.QtCore import QObject, Signal

    class _Relay(QObject):
        crashed = Signal(str)

    relay = _Relay()
    relay.crashed.connect(show)
    install_handlers.relay = relay  # keep it alive

    def report(exc_type, exc, tb, where: str) -> None:
        from vaestudio.core.errors import one_line

        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("uncaught exception in %s:\n%s", where, text)
        relay.crashed.emit(f"Unexpected error in {where}: {one_line(exc, with_type=True)}\n"
                           f"The details are in {log_path()}")

    sys.excepthook = lambda t, e, tb: report(t, e, tb, "the window")
    threading.excepthook = lambda a: report(a.exc_type, a.exc_value, a.exc_traceback, f"thread {a.thread.name}")
