"""The project's own error types: each carries a one-sentence, user-facing reason."""

from __future__ import annotations


class VaeStudioError(Exception):
    """Base class for errors that the CLI and the GUI show to the user as one sentence.

    The sentence says what is wrong; how to fix it is for each front end to say in its own terms
    (a command-line flag, or a control in the window).
    """

    exit_code = 1

    def __init__(self, reason: str, path: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ImageLoadError(VaeStudioError):
    """An image could not be read (missing, corrupt, unsupported, too large)."""

    exit_code = 3


class VaeLoadError(VaeStudioError):
    """A VAE source could not be loaded (unsafe, corrupt, not a VAE, not cached offline)."""

    exit_code = 4


class UnsafeFileError(VaeLoadError):
    """A pickle that would need code execution (or non-tensor objects) to load."""


class DownloadError(VaeStudioError):
    """A download failed (offline, HTTP error, checksum mismatch)."""

    exit_code = 4


class DeviceUnavailable(VaeStudioError):
    """The device asked for is not on this machine (each front end says where to choose another)."""


class Cancelled(VaeStudioError):
    """The user cancelled a long job."""

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)


class DataError(VaeStudioError):
    """A dataset file could not be used (truncated, wrong magic, wrong shape)."""

    exit_code = 3


class DatasetMissing(DataError):
    """The dataset is not in the folder looked at (each front end says how to get it)."""


class CheckpointError(VaeStudioError):
    """A training checkpoint could not be written or read."""


def one_line(exc: BaseException, *, limit: int = 200, with_type: bool = False) -> str:
    """An exception as one line for a status bar, a table cell or ``error: <path>: <reason>``.

    The first non-empty line of its message, cut to ``limit`` characters; the type's name when the
    message is empty. ``with_type`` puts the type's name first (``ValueError: ...``) for errors that are
    not our own, whose message alone may not say what kind of failure it was. Our own errors
    (``VaeStudioError``) are already a sentence and never get the type's name.
    """
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    name = type(exc).__name__
    if not text:
        return name
    if with_type and not isinstance(exc, VaeStudioError):
        return f"{name}: {text}"
    return text
