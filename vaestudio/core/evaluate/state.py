"""What an evaluation holds while it runs: per VAE (its model, its rFID statistics, its accumulators)
and per process (``RunState``, shared by the loop in ``run`` and the end in ``finish``).

A ``VaeState`` does its own batch round trip, takes each batch into its statistics (``update``),
is rebuilt from committed sidecars on resume (``restore``), has its sums added across torchrun
ranks (``reduce``) and gives its ``VaeSummary`` at the end (``summary``).
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaestudio.core.errors import VaeStudioError
from vaestudio.core.evaluate import fid as fidmod
from vaestudio.core.evaluate.accumulators import Accumulator, add_states, sums
from vaestudio.core.evaluate.data import ImageItem
from vaestudio.core.evaluate.dist import Dist
from vaestudio.core.evaluate.store import BatchRecord, RunStore, tensor_state
from vaestudio.core.evaluate.summary import Columns, pick_examples, vae_stats
from vaestudio.core.evaluate.types import (
    AccumulatorFactory,
    EvaluationProtocol,
    EvaluationRequest,
    Row,
    VaeLoadFailed,
    VaeRef,
    VaeSummary,
)
from vaestudio.core.tensors import pad_to_multiple
from vaestudio.core.tiling import ShouldStop
from vaestudio.core.vae import Autoencoder


def sample_seed(seed: int, image: str) -> int:
    """Per-image sample seed: the same whatever the batching, the rank or the resume."""
    return (seed * 1_000_003 + zlib.crc32(image.encode("utf-8"))) & 0x7FFF_FFFF


@dataclass
class VaeState:
    """One VAE taking part in the run."""

    ref: VaeRef
    vae: Autoencoder
    owned: bool  # loaded by this run (closed at its end), not lent by the caller
    fid: tuple[fidmod.FeatureStats, fidmod.FeatureStats] | None = None  # originals, reconstructions
    summing: list[tuple[AccumulatorFactory, str]] = field(default_factory=list)  # (factory, name)
    persistent: list[Accumulator] = field(default_factory=list)
    acc_totals: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    html: dict[str, str] = field(default_factory=dict)  # report fragments of its analyses

    # -- accumulators -----------------------------------------------------------------------
    def make(self, factory: AccumulatorFactory) -> Accumulator:
        """An accumulator for this VAE: ``factory.for_vae(vae, ref)`` where the factory offers it (it then
        sees the loaded VAE, e.g. its own model space), else ``factory(ref)``."""
        for_vae = getattr(factory, "for_vae", None)
        return for_vae(self.vae, self.ref) if for_vae is not None else factory(self.ref)

    def add_accumulators(self, factories: Iterable[AccumulatorFactory]) -> None:
        for factory in factories:
            acc = self.make(factory)
            if sums(acc):
                self.summing.append((factory, acc.name))
            else:
                self.persistent.append(acc)

    # -- one batch --------------------------------------------------------------------------
    def prepare(self, sub: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """What the VAE sees (``prepare_pixels``), batched; ``identity`` when it is the image itself."""
        arrays = [s.permute(1, 2, 0).numpy() for s in sub]
        prepared = [self.vae.prepare_pixels(a)[0] for a in arrays]
        if all(p is a for p, a in zip(prepared, arrays, strict=True)):
            return sub, True
        seen = torch.stack([torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).permute(2, 0, 1)
                            for p in prepared])
        return seen.contiguous(), False

    def roundtrip(self, seen: torch.Tensor, images: list[str], protocol: EvaluationProtocol, tile: str,
                  should_stop: ShouldStop | None) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Encode and decode a batch the VAE has seen: (raw latent, reconstruction, encode s, decode s)."""
        vae = self.vae
        h, w = seen.shape[-2:]
        xp = pad_to_multiple(seen, vae.info.pad_multiple)
        seeds = [sample_seed(protocol.seed, p) for p in images] if protocol.sample else None
        t0 = time.perf_counter()
        raw, _tiled = vae.encode_batch(xp.contiguous(memory_format=torch.channels_last), sample=protocol.sample,
                                       seeds=seeds, tile=tile, should_stop=should_stop)
        t1 = time.perf_counter()
        rec = vae.decode_batch(vae.to_model(raw), tile=tile, should_stop=should_stop)
        if rec.ndim == 4:
            rec = rec[:, :, :h, :w]
        rec = rec.float().contiguous()
        t2 = time.perf_counter()
        if rec.shape != seen.shape:
            raise VaeStudioError(f"the VAE returned {tuple(rec.shape[1:])} for an input of {tuple(seen.shape[1:])}")
        return raw, rec, t1 - t0, t2 - t1

    def update(self, seen: torch.Tensor, rec: torch.Tensor, raw: torch.Tensor, record: BatchRecord,
               features: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Take a batch into the rFID statistics and the accumulators; what the summing accumulators
        got from it goes into the batch's ``record`` (so a resumed run can add it back)."""
        if features is not None and self.fid is not None:
            self.fid[0].update(features[0])
            self.fid[1].update(features[1])
        for factory, name in self.summing:
            fresh = self.make(factory)
            fresh.update(seen, rec, raw)
            delta = {k: torch.as_tensor(t).detach().cpu() for k, t in fresh.state().items()}
            record.acc.setdefault(self.ref.source, {})[name] = {k: t.numpy() for k, t in delta.items()}
            add_states(self.acc_totals.setdefault(name, {}), delta)
        for acc in self.persistent:
            acc.update(seen, rec, raw)

    # -- the end ----------------------------------------------------------------------------
    def summary(self, cols: Columns | None, metric_status: dict[str, str], rfid: float | None, rfid_status: str,
                partial: bool) -> VaeSummary:
        """This VAE's summary; the report fragments of its analyses are kept in ``html``."""
        cols = cols or Columns()
        analyses: dict[str, Any] = {}
        html: dict[str, str] = {}
        for factory, name in self.summing:
            acc = self.make(factory)
            if self.acc_totals.get(name):
                acc.load_state(self.acc_totals[name])
            analyses[name] = acc.result()
            frag = acc.html()
            if frag:
                html[name] = frag
        for acc in self.persistent:
            res = dict(acc.result())
            if partial:
                res["partial"] = True
            analyses[acc.name] = res
            frag = acc.html()
            if frag:
                html[acc.name] = frag
        self.html = html
        r = self.ref
        return VaeSummary(r.name, r.source, r.architecture, r.family, len(cols.images), len(cols.failures),
                          cols.failures, vae_stats(cols), rfid, rfid_status, dict(metric_status), analyses,
                          worst=pick_examples(cols).get("worst", []), dtype=r.dtype, dtype_reason=r.dtype_reason,
                          clips=cols.clips)

    def close(self) -> None:
        if self.owned:
            with contextlib.suppress(Exception):
                self.vae.close()


def restore(vaes: list[VaeState], records: Iterable[BatchRecord]) -> None:
    """Rebuild rFID statistics and accumulator totals from the committed sidecars."""
    by_source = {v.ref.source: v for v in vaes}
    for rec in records:
        if rec.feat_keys and rec.orig is not None and rec.recon is not None:
            sources = np.array([k.split("\x1f", 1)[1] for k in rec.feat_keys])
            for src in dict.fromkeys(sources.tolist()):
                v = by_source.get(src)
                if v is None or v.fid is None:
                    continue
                sel = sources == src
                v.fid[0].update(torch.from_numpy(rec.orig[sel]))
                v.fid[1].update(torch.from_numpy(rec.recon[sel]))
        for src, per in rec.acc.items():
            v = by_source.get(src)
            if v is None:
                continue
            for name, state in per.items():
                add_states(v.acc_totals.setdefault(name, {}), tensor_state(state))


def reduce(vaes: list[VaeState], sources: list[str], dist: Dist) -> None:
    """Add the rFID statistics over the ranks (every rank takes part, whatever it loaded: a VAE that
    some rank could not load gets no rFID) and the accumulator totals on rank 0."""
    by_source = {v.ref.source: v for v in vaes}
    loaded = torch.tensor([1 if (s in by_source and by_source[s].fid is not None) else 0 for s in sources],
                          dtype=torch.int64)
    everywhere = dist.all_reduce_(loaded.clone())
    for s, count in zip(sources, everywhere.tolist(), strict=True):
        v = by_source.get(s)
        if count != dist.world_size:
            if v is not None:
                v.fid = None
            continue
        assert v is not None and v.fid is not None
        for st in v.fid:
            dist.sum_feature_stats(st)
    gathered = dist.gather({v.ref.source: {k: {n: t.numpy() for n, t in d.items()} for k, d in v.acc_totals.items()}
                            for v in vaes})
    if dist.rank == 0 and gathered is not None:
        for v in vaes:
            v.acc_totals = {}
            for part in gathered:
                for name, state in (part or {}).get(v.ref.source, {}).items():
                    add_states(v.acc_totals.setdefault(name, {}), tensor_state(state))


@dataclass
class RunState:
    """What one process of an evaluation holds, from the start to the end of its run."""

    request: EvaluationRequest
    protocol: EvaluationProtocol
    items: list[ImageItem]
    dist: Dist
    should_stop: ShouldStop | None
    out: Path | None = None
    store: RunStore | None = None
    vaes: list[VaeState] = field(default_factory=list)
    load_failures: list[VaeLoadFailed] = field(default_factory=list)
    metric_status: dict[str, str] = field(default_factory=dict)
    memory_rows: list[Row] = field(default_factory=list)  # the rows, when nothing is written (``out`` None)
    resumed: int = 0  # rows of this run's VAEs done by an earlier run
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def sources(self) -> list[str]:
        """The VAE sources asked for, in order, without repeats (loaded or not)."""
        return list(dict.fromkeys(map(str, self.request.vaes)))

    def close_vaes(self) -> None:
        for v in self.vaes:
            v.close()
