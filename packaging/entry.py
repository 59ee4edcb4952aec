"""Entry point of the PyInstaller bundle: the same CLI as the `vaestudio` command."""

import logging
import multiprocessing
import os
import sys

from vaestudio.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    code = main()
    # End without interpreter finalization: in the frozen app, garbage-collecting PySide6 objects at
    # shutdown aborts ("bool_dealloc"), turning a clean exit into exit code 134. Everything that
    # must reach the disk is written and flushed before this point (settings are synced on close).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0)
