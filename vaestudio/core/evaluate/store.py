"""The run folder: rows, per-batch sidecars, the protocol, and resuming.

Layout of ``--out DIR``::

    rows.csv                  every (image, VAE) row; a single process appends to it directly
    summary.json, report.html written at the end by rank 0 (atomically)
    recons/<vae>/...          with --save-recons
    state/rank<R>/protocol.json     the protocol and world size this rank's rows were made with
    state/rank<R>/batch-<n>.npz     one per committed batch: its row keys, the Inception features
                                    of those rows, accumulator contributions
    state/rank<R>/rows.csv          under torchrun: this rank's rows (rank 0 merges them into rows.csv)

A batch is committed in two steps: its sidecar is written to a temporary file, synced and renamed
into place; then all its rows are appended to the rows file with a single ``write`` and synced. A
batch counts as done when every one of its keys is in the rows file. On ``--resume`` a torn last
line, rows whose batch is not complete, and sidecars whose rows never arrived are dropped (the rows
file is rewritten atomically only when something had to be dropped); everything else is kept, so a
run killed at any moment loses at most the batch in flight.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaestudio.core.errors import VaeStudioError
from vaestudio.core.evaluate.types import ROW_FIELDS, Row
from vaestudio.core.files import write_atomic

KEY_SEP = "\x1f"  # between image path and VAE source in sidecar keys
_BATCH_RE = re.compile(r"^batch-(\d+)\.npz$")


class StateError(VaeStudioError):
    """The output folder cannot be used as asked (holds a run, another protocol...): exit 2.

    ``kind`` says which, so that each front end can say how to fix it in its own terms:
    ``exists`` (a run is there and resuming was not asked), ``no-state``, ``columns``, ``protocol``,
    ``processes``.
    """

    exit_code = 2
    kinds = ("exists", "no-state", "columns", "protocol", "processes")

    def __init__(self, reason: str, path: object | None = None, kind: str = "") -> None:
        super().__init__(reason, path)
        assert not kind or kind in self.kinds, kind  # each front end has a hint for each kind
        self.kind = kind


def rows_to_text(rows: Iterable[Row], header: bool = False) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow(r.to_csv())
    return buf.getvalue()


def read_rows_text(text: str) -> tuple[list[Row], bool]:
    """Rows of a rows file's text; also whether its last line was torn (no newline at the end)."""
    torn = bool(text) and not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return [], torn
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != ROW_FIELDS:
        raise StateError("its rows.csv has other columns than this version of vaestudio writes", kind="columns")
    rows = []
    for d in reader:
        try:
            rows.append(Row.from_csv(d))
        except (TypeError, ValueError):
            torn = True  # a line damaged by a crash of the machine: redo it
    return rows, torn


def iter_rows_file(path: Path) -> Iterator[Row]:
    """Rows of a finished rows file, streamed."""
    with open(path, newline="", encoding="utf-8") as fh:
        for d in csv.DictReader(fh):
            yield Row.from_csv(d)


def key_text(image: str, source: str) -> str:
    return f"{image}{KEY_SEP}{source}"


@dataclass
class BatchRecord:
    """What a committed batch carries besides its rows."""

    keys: list[str]  # every row of the batch (image KEY_SEP source)
    feat_keys: list[str] = field(default_factory=list)  # rows with Inception features
    orig: np.ndarray | None = None  # (M, 2048) float32 features of what the VAE saw
    recon: np.ndarray | None = None  # (M, 2048) float32 features of the reconstruction
    acc: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)  # source -> name -> key -> sum

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"keys": np.array(self.keys, dtype=str)}
        if self.feat_keys:
            out["feat_keys"] = np.array(self.feat_keys, dtype=str)
            out["orig"] = np.asarray(self.orig, dtype=np.float32)
            out["recon"] = np.asarray(self.recon, dtype=np.float32)
        sources = sorted(self.acc)
        if sources:
            out["acc_sources"] = np.array(sources, dtype=str)
            for j, src in enumerate(sources):
                for name, state in self.acc[src].items():
                    for k, v in state.items():
                        out[f"acc{KEY_SEP}{j}{KEY_SEP}{name}{KEY_SEP}{k}"] = np.asarray(v)
        return out

    @classmethod
    def from_arrays(cls, z: Any) -> BatchRecord:
        rec = cls(keys=[str(k) for k in z["keys"]])
        if "feat_keys" in z:
            rec.feat_keys = [str(k) for k in z["feat_keys"]]
            rec.orig = np.asarray(z["orig"])
            rec.recon = np.asarray(z["recon"])
        if "acc_sources" in z:
            sources = [str(s) for s in z["acc_sources"]]
            for name in z.files:
                if name.startswith("acc" + KEY_SEP):
                    _, j, acc_name, k = name.split(KEY_SEP, 3)
                    rec.acc.setdefault(sources[int(j)], {}).setdefault(acc_name, {})[k] = np.asarray(z[name])
        return rec


@dataclass
class ResumeState:
    done: set[tuple[str, str]]  # (image, source) pairs already committed
    rows: int  # committed rows kept
    dropped: int  # rows or batches dropped as incomplete


class RunStore:
    """One rank's part of a run folder (see the module docstring)."""

    def __init__(self, out: Path, rank: int = 0, world_size: int = 1) -> None:
        self.out = Path(out)
        self.rank = rank
        self.world_size = world_size
        self.state_dir = self.out / "state" / f"rank{rank}"
        self.rows_path = self.out / "rows.csv" if world_size == 1 else self.state_dir / "rows.csv"
        self.protocol_path = self.state_dir / "protocol.json"
        self._fd: int | None = None
        self._seq = 0

    # -- opening ----------------------------------------------------------------------------
    def has_previous(self) -> bool:
        return (self.out / "rows.csv").exists() or (self.out / "state").exists()

    def check_can_start(self, resume: bool) -> None:
        if not resume and self.has_previous():
            raise StateError("already holds an evaluation", self.out, kind="exists")

    def open(self, protocol: dict[str, Any], resume: bool) -> ResumeState:
        """Create or reopen this rank's state. ``protocol`` is ``EvaluationProtocol.comparable()``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = ResumeState(set(), 0, 0)
        if resume and self.protocol_path.exists():
            before = json.loads(self.protocol_path.read_text(encoding="utf-8"))
            self._check_protocol(before, protocol)
            state = self._recover()
        elif resume and self.rows_path.exists():
            raise StateError("has rows but no state folder to resume from", self.out, kind="no-state")
        else:
            write_atomic(self.protocol_path, json.dumps({"protocol": protocol, "world_size": self.world_size},
                                                        indent=1))
        if not self.rows_path.exists():
            write_atomic(self.rows_path, rows_to_text([], header=True))
        self._fd = os.open(self.rows_path, os.O_WRONLY | os.O_APPEND)
        return state

    def _check_protocol(self, before: dict[str, Any], now: dict[str, Any]) -> None:
        if before.get("world_size", 1) != self.world_size:
            raise StateError(f"was evaluated by {before.get('world_size')} processes; resume it with the same number "
                             f"(this run has {self.world_size})", self.out, kind="processes")
        old = before.get("protocol", {})
        for k in sorted(set(old) | set(now)):
            if old.get(k) != now.get(k):
                raise StateError(f"cannot resume with a different protocol: {k} was {_show(old.get(k))}, now "
                                 f"{_show(now.get(k))}", self.out, kind="protocol")

    def _batches(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.state_dir.iterdir():
            m = _BATCH_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
            elif p.name.startswith(".") and ".tmp" in p.name:
                p.unlink(missing_ok=True)  # a sidecar that was being written when the run died
        return sorted(out)

    def _recover(self) -> ResumeState:
        text = self.rows_path.read_text(encoding="utf-8") if self.rows_path.exists() else ""
        rows, torn = read_rows_text(text)
        by_key: dict[tuple[str, str], Row] = {}
        for r in rows:
            by_key[r.key] = r
        committed: set[tuple[str, str]] = set()
        dropped = 0
        batches = self._batches()
        for seq, path in batches:
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys = [tuple(str(k).split(KEY_SEP, 1)) for k in z["keys"]]
            except Exception:  # noqa: BLE001 - unreadable sidecar: its batch is redone
                keys = None
            if keys is None or not keys or any(k not in by_key for k in keys):
                path.unlink(missing_ok=True)
                dropped += 1
                continue
            committed.update(keys)  # type: ignore[arg-type]
            self._seq = max(self._seq, seq + 1)
        keep = [r for r in rows if r.key in committed]
        unique: dict[tuple[str, str], Row] = {}
        for r in keep:
            unique.setdefault(r.key, r)
        if torn or len(unique) != len(rows):
            dropped += len(rows) - len(unique)
            write_atomic(self.rows_path, rows_to_text(unique.values(), header=True))
        return ResumeState(set(unique), len(unique), dropped)

    def committed_batches(self) -> Iterator[BatchRecord]:
        """The sidecars of committed batches (call after ``open``), one at a time."""
        for _seq, path in self._batches():
            with np.load(path, allow_pickle=False) as z:
                yield BatchRecord.from_arrays(z)

    # -- writing ----------------------------------------------------------------------------
    def commit(self, rows: list[Row], record: BatchRecord) -> None:
        """Sidecar first (atomic), then all rows in one write: the batch is done once its rows are in."""
        if not rows:
            return
        path = self.state_dir / f"batch-{self._seq:08d}.npz"
        self._seq += 1
        buf = io.BytesIO()
        np.savez(buf, **record.to_arrays())
        write_atomic(path, buf.getvalue())
        self._append(rows_to_text(rows).encode("utf-8"))

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def rows_text(self) -> str:
        """This rank's committed rows, without the header (for rank 0 to merge)."""
        text = self.rows_path.read_text(encoding="utf-8")
        return text.split("\n", 1)[1] if "\n" in text else ""


def _show(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v)) or "(none)"
    return "(none)" if v is None else str(v)


def merge_rank_rows(out: Path, texts: list[str], order: dict[str, int], vae_order: dict[str, int]) -> Path:
    """Rank 0: all ranks' rows into rows.csv, sorted by image then VAE, written atomically."""
    rows: list[Row] = []
    for t in texts:
        r, _ = read_rows_text(",".join(ROW_FIELDS) + "\n" + t)
        rows.extend(r)
    rows.sort(key=lambda r: (order.get(r.image, 1 << 60), r.image, vae_order.get(r.source, 1 << 30), r.source))
    path = Path(out) / "rows.csv"
    write_atomic(path, rows_to_text(rows, header=True))
    return path


def tensor_state(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
