"""Writing files so that a crash, a full disk or a kill leaves the old file or the new one, never half."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from vaestudio.core.errors import VaeStudioError

#: Seconds to wait before each retry of a rename that was refused (PermissionError): Windows refuses to
#: replace a file another program holds open (an image viewer, a spreadsheet with rows.csv); those
#: programs often let go within a moment. About 1.5 s in all, then FileInUseError.
RETRY_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)


class FileInUseError(VaeStudioError):
    """The target could not be replaced (another program holds it open, on Windows); the old file is kept."""


def temporary_name(path: Path) -> Path:
    """The hidden file next to ``path`` that a write goes to first (``.name.<pid>-<thread>.tmp``): two
    processes or two threads writing one path at once never share it."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def os_replace(src: Path, dst: Path) -> None:
    """``os.replace``: the one call that renames the temporary file over the target, a module attribute so
    that a test can make it refuse as Windows does when the target is open (Linux never refuses)."""
    os.replace(src, dst)


def replace(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file over ``path``, retried for a moment while the target is held open
    (Windows); ``FileInUseError`` after, the old file untouched."""
    for wait in (*RETRY_WAITS, None):
        try:
            os_replace(tmp, path)
            return
        except PermissionError:
            if wait is None:
                raise FileInUseError(f"cannot replace {path.name}: permission denied, another program may have "
                                     f"it open (the old file is kept; close it and try again)") from None
            time.sleep(wait)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write a whole file: temporary file in the same folder, fsync, then rename over ``path`` (retried
    for a moment while the target is held open; ``FileInUseError`` after, the old file untouched)."""
    path = Path(path)
    tmp = temporary_name(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
