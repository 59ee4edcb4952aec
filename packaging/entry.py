"""Entry point of the PyInstaller bundle: the same CLI as the `vaestudio` command."""

import multiprocessing
import sys

from vaestudio.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
