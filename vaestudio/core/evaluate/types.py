"""The evaluation's typed records: what it is asked to do, and what it yields while it runs."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaestudio.core.errors import VaeStudioError

if TYPE_CHECKING:
    from vaestudio.core.evaluate.accumulators import Accumulator
    from vaestudio.core.vae import Autoencoder

#: Metric names accepted by ``--metrics`` (``color`` is the mean shift per RGB channel).
KNOWN_METRICS = ("psnr", "ssim", "mae", "color", "lpips", "fid")
DEFAULT_METRICS = KNOWN_METRICS
#: Per-image values summarised per VAE (mean, std, median, p5, p95).
ROW_METRICS = ("psnr", "ssim", "mae", "color_shift_r", "color_shift_g", "color_shift_b", "lpips", "flicker")
UNREADABLE = "unreadable image: "  # prefix of Row.error when the image, not the VAE, failed
#: Columns of rows.csv, in order. Timing columns (seconds, encode_s, decode_s) vary from run to run. A clip's
#: row has ``frames`` (how many the VAE took), ``flicker`` and ``worst_frame`` (from 0); an image's leaves them empty.
ROW_FIELDS = ("image", "vae", "source", "width", "height", "frames", "psnr", "ssim", "mae", "mse", "color_shift_r",
              "color_shift_g", "color_shift_b", "lpips", "flicker", "worst_frame", "seconds", "encode_s", "decode_s",
              "error")
_INT_FIELDS = ("width", "height", "frames", "worst_frame")
#: Clips are read up to this many frames by default (``--frames``): 1 + 4k for Wan, 1 + 8k for LTX.
DEFAULT_FRAMES = 17
RESIZE_MODES = ("shorter-crop", "longer", "none")


#: The DataLoader workers' start method for a request that names none: ``spawn`` (the default on Windows
#: and macOS, so Linux can run what they run), ``fork`` or ``forkserver``; unset, torch's platform default.
MP_START_ENV = "VAESTUDIO_MP_START"
MP_START_METHODS = ("spawn", "fork", "forkserver")


def start_method_from_env() -> str | None:
    return os.environ.get(MP_START_ENV, "").strip() or None


def default_workers() -> int:
    """DataLoader worker processes: about half the cores, at least one, at most four."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class EvaluationError(Exception):
    """Raised by ``parse_metrics`` and friends before anything runs (mapped to usage errors)."""


class UsageError(VaeStudioError):
    """The request itself is wrong (exit code 2)."""

    exit_code = 2


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in KNOWN_METRICS]
    if unknown:
        raise EvaluationError(f"unknown metric '{unknown[0]}' (choose from {', '.join(KNOWN_METRICS)})")
    if not names:
        raise EvaluationError("--metrics names no metric")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class EvaluationProtocol:
    """What makes two evaluations comparable; written into summary.json and checked on --resume."""

    size: int  # 0: each image keeps its own size
    resize: str  # shorter-crop (evaluate), longer (compare's --size), none
    sample: bool
    seed: int
    metrics: tuple[str, ...]
    dtype: str
    frames: int = DEFAULT_FRAMES  # a clip's first N frames (each VAE takes the most it can of them)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "size": self.size,
            "resize": self.resize,
            "resize_description": self.describe_resize(),
            "latent": f"seeded sample (seed {self.seed})" if self.sample else "mean",
            "sample": self.sample,
            "seed": self.seed,
            "metrics": list(self.metrics),
            "dtype": self.dtype,
            "frames": self.frames,
            "clips_description": f"the first {self.frames} frames of each clip (each VAE takes the most of them it "
                                 "can: 1 + 4k for Wan), each frame resized as the images, the latent's mean decoded; "
                                 "a clip's row is the mean over its frames",
        }
        return d

    def describe_resize(self) -> str:
        if self.size == 0 or self.resize == "none":
            return "each image at its own size (padded to the VAE's factor, cropped back)"
        if self.resize == "longer":
            return f"longer side resized to {self.size} (Lanczos), aspect ratio kept"
        return f"shorter side resized to {self.size} (bicubic, antialiased), centre crop {self.size}x{self.size}"

    def comparable(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        return {"size": self.size, "resize": self.resize, "sample": self.sample,
                "seed": self.seed if self.sample else None, "metrics": sorted(self.metrics), "dtype": self.dtype,
                "frames": self.frames}


@dataclass
class EvaluationRequest:
    """Everything one evaluation needs; ``evaluate(request)`` runs it.

    ``out`` None runs without writing anything (``vaestudio compare``); otherwise rows.csv,
    summary.json, report.html and the resumable state go there.
    """

    data: Sequence[str]
    vaes: Sequence[str]
    out: Path | None = None
    size: int = 256
    resize: str = "shorter-crop"
    limit: int | None = None
    batch_size: int = 8
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    dtype: str = "auto"
    family: str | None = None
    tile: str = "auto"
    metrics: Sequence[str] = DEFAULT_METRICS
    frames: int = DEFAULT_FRAMES  # a clip's first N frames
    save_recons: bool = False
    resume: bool = False
    sample: bool = False
    seed: int = 0
    report: bool = True
    #: per-VAE accumulator factories (see vaestudio.core.evaluate.accumulators)
    accumulators: Sequence[AccumulatorFactory] = ()
    #: VAEs already loaded by the caller, by source string (the window's current VAE); not closed at the end
    preloaded: Mapping[str, Autoencoder] = field(default_factory=dict)
    #: multiprocessing start method for DataLoader workers (None: torch's default; "spawn" is safest
    #: from a process that runs Qt threads); by default the ``VAESTUDIO_MP_START`` environment variable
    mp_context: str | None = field(default_factory=start_method_from_env)
    #: report progress at most this often (seconds)
    progress_every: float = 0.5
    #: called with download progress while a VAE source is fetched from the hub
    download_progress: Callable[[Any], None] | None = None

    def protocol(self) -> EvaluationProtocol:
        """The protocol this request asks for; ``UsageError`` (one line, exit code 2) when it is wrong."""
        checks = ((self.size == 0 or self.size >= 8, "--size must be 0 (each image's own size) or at least 8"),
                  (self.resize in RESIZE_MODES, f"unknown resize mode '{self.resize}'"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.workers >= 0, "--workers must be 0 or more"),
                  (self.limit is None or self.limit >= 1, "--limit must be at least 1"),
                  (self.frames >= 1, "--frames must be at least 1"),
                  (bool(self.vaes), "give at least one --vae"),
                  (self.mp_context in (None, *MP_START_METHODS),
                   f"unknown start method '{self.mp_context}' ({MP_START_ENV}: spawn, fork or forkserver)"))
        try:
            metrics = tuple(parse_metrics(self.metrics))
        except EvaluationError as exc:
            raise UsageError(str(exc)) from None
        for ok, reason in checks:
            if not ok:
                raise UsageError(reason)
        resize = "none" if self.size == 0 else self.resize
        return EvaluationProtocol(self.size, resize, self.sample, self.seed, metrics, self.dtype, self.frames)


# -- what the generator yields ------------------------------------------------------------------

@dataclass(frozen=True)
class VaeRef:
    """A VAE taking part: its short unique name (tables, recons/<name>/) and where it came from."""

    name: str
    source: str
    architecture: str = ""
    family: str = ""
    device: str = ""
    dtype: str = ""
    dtype_reason: str = ""
    index: int = 0  # its place among the VAEs that loaded: its colour in the report, its figures included


#: Called once per VAE with its ``VaeRef`` (or, where the factory has ``for_vae``, that is called with
#: the loaded VAE); returns that VAE's ``Accumulator`` (see vaestudio.core.evaluate.accumulators).
AccumulatorFactory = Callable[[VaeRef], "Accumulator"]


@dataclass
class Started:
    """First event: what will be done."""

    images: int  # images listed (after --limit)
    pending_images: int  # images this process still has to read (resume skips the rest)
    resumed_rows: int  # rows already done by an earlier run (this process's share)
    vaes: list[VaeRef]
    protocol: EvaluationProtocol
    out: Path | None
    rank: int = 0
    world_size: int = 1


@dataclass
class VaeLoadFailed:
    """A VAE could not be loaded; nothing is evaluated for it, the others go on (exit code 4)."""

    source: str
    name: str
    reason: str


@dataclass
class Row:
    """One image through one VAE (a CSV row). ``error`` is set, and the metrics None, when it failed."""

    image: str
    vae: str
    source: str
    width: int | None = None
    height: int | None = None
    frames: int | None = None  # a clip's frames measured (None: an image)
    psnr: float | None = None
    ssim: float | None = None
    mae: float | None = None
    mse: float | None = None
    color_shift_r: float | None = None
    color_shift_g: float | None = None
    color_shift_b: float | None = None
    lpips: float | None = None
    flicker: float | None = None  # a clip's (metrics.flicker)
    worst_frame: int | None = None  # a clip's worst frame (lowest PSNR), from 0
    seconds: float | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.image, self.source

    @property
    def unreadable(self) -> str | None:
        """Why the image itself could not be read (the same for every VAE), or None."""
        if self.error and self.error.startswith(UNREADABLE):
            return self.error[len(UNREADABLE):]
        return None

    def to_csv(self) -> dict[str, str]:
        out = {}
        for k in ROW_FIELDS:
            v = getattr(self, k)
            if v is None:
                out[k] = ""
            elif isinstance(v, float):
                out[k] = "inf" if v == math.inf else repr(v)  # full precision: summaries re-read it exactly
            else:
                out[k] = str(v)
        return out

    @classmethod
    def from_csv(cls, d: Mapping[str, str]) -> Row:
        kw: dict[str, Any] = {}
        for k in ROW_FIELDS:
            v = d.get(k, "")
            if k in ("image", "vae", "source"):
                kw[k] = v
            elif k == "error":
                kw[k] = v or None
            elif k in _INT_FIELDS:
                kw[k] = int(v) if v else None
            else:
                kw[k] = float(v) if v else None
        return cls(**kw)


@dataclass
class Progress:
    """Images done by this process (all VAEs), out of its share; images/s over this run; ETA."""

    done: int
    total: int
    images_per_s: float
    eta_s: float | None
    elapsed_s: float
    rank: int = 0
    world_size: int = 1

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.done / self.total


@dataclass
class VaeSummary:
    """One VAE's summary (a summary.json ``vaes`` entry); ``to_dict`` gives the flat JSON object."""

    vae: str
    source: str
    architecture: str
    family: str
    images: int  # rows evaluated: images and clips
    failed: int
    failures: list[dict[str, str]]
    stats: dict[str, float | None]  # psnr_mean, psnr_std, ..., psnr_dataset
    rfid: float | None
    rfid_status: str
    metric_status: dict[str, str]
    analyses: dict[str, Any] = field(default_factory=dict)
    #: the lowest-scoring images over every row of the run, resumed ones included: (image, value, metric)
    worst: list[tuple[str, float, str]] = field(default_factory=list)
    dtype: str = ""
    dtype_reason: str = ""
    clips: int = 0  # how many of ``images`` are clips

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"vae": self.vae, "source": self.source, "architecture": self.architecture,
                             "family": self.family, "dtype": self.dtype, "dtype_reason": self.dtype_reason,
                             "images": self.images, "clips": self.clips, "failed": self.failed,
                             "failures": self.failures}
        d.update(self.stats)
        d["rfid"] = self.rfid
        d["rfid_status"] = self.rfid_status
        d["lpips_status"] = self.metric_status.get("lpips", "not requested")
        d["metric_status"] = self.metric_status
        if self.analyses:
            d["analyses"] = self.analyses
        return d


@dataclass
class Finished:
    """Last event. ``summary`` is summary.json's content (None on ranks other than 0)."""

    summaries: list[VaeSummary]
    summary: dict[str, Any] | None
    outputs: dict[str, Path]
    load_failures: list[VaeLoadFailed]
    unreadable: list[dict[str, str]]
    rank: int = 0


Event = Started | VaeLoadFailed | Row | Progress | VaeSummary | Finished
