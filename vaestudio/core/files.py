"""Writing files so that a crash, a full disk or a kill leaves the old file or the new one, never half."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The hidden file next to ``path`` that a write goes to first (``.name.<pid>-<thread>.tmp``): two
    processes or two threads writing one path at once never share it."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write a whole file: temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
