"""Entry point of the PyInstaller bundle: the same CLI as the `vaestudio` command."""

import logging
import multiprocessing
import os
import sys

from vaestudio.cli import main


def _safe_streams() -> None:
    """Windows' windowed executable has no console (sys.stdout is None), and a console or pipe there may
    not encode every file name: printing must never be what fails."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process
        elif hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    # before anything: a spawned worker process (DataLoader, start method spawn) is this executable started
    # again, and on Windows the windowed one's workers have no stdout either
    _safe_streams()
    multiprocessing.freeze_support()
    code = main()
    # End without interpreter finalization: in the frozen app, garbage-collecting PySide6 objects at
    # shutdown aborts ("bool_dealloc"), turning a clean exit into exit code 134. Everything that
    # must reach the disk is written and flushed before this point (settings are synced on close).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)
