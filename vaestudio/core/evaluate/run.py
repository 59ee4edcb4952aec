"""The evaluation loop: ``evaluate(request)`` is a generator of events (see the package docstring)."""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaestudio.core.device import dtype_name
from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.evaluate import fid as fidmod
from vaestudio.core.evaluate.accumulators import Accumulator, add_states, sums
from vaestudio.core.evaluate.data import (
    DataListError,
    FailedImage,
    ImageDataset,
    ImageItem,
    PreparedImage,
    list_data,
    make_loader,
    short_names,
)
from vaestudio.core.evaluate.dist import Dist
from vaestudio.core.evaluate.measure import batch_metrics, hardware, versions
from vaestudio.core.evaluate.store import (
    BatchRecord,
    RunStore,
    StateError,
    iter_rows_file,
    key_text,
    merge_rank_rows,
    tensor_state,
)
from vaestudio.core.evaluate.summary import collect, pick_examples, unreadable_images, vae_stats
from vaestudio.core.evaluate.types import (
    UNREADABLE,
    EvaluationProtocol,
    EvaluationRequest,
    Event,
    Finished,
    Progress,
    Row,
    Started,
    VaeLoadFailed,
    VaeRef,
    VaeSummary,
)
from vaestudio.core.files import write_atomic
from vaestudio.core.tensors import pad_to_multiple
from vaestudio.core.tiling import ShouldStop
from vaestudio.core.vae import Autoencoder


@dataclass
class _Vae:
    ref: VaeRef
    vae: Autoencoder
    owned: bool
    fid: tuple[fidmod.FeatureStats, fidmod.FeatureStats] | None = None
    summing: list[tuple[Any, str]] = field(default_factory=list)  # (factory, name)
    persistent: list[Accumulator] = field(default_factory=list)
    acc_totals: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    html: dict[str, str] = field(default_factory=dict)  # report fragments of its analyses


def _make(factory: Any, v: _Vae) -> Accumulator:
    """An accumulator for one VAE: ``factory.for_vae(vae)`` where the factory offers it (it then sees
    the loaded VAE, e.g. its own model space), else ``factory(ref)``."""
    for_vae = getattr(factory, "for_vae", None)
    return for_vae(v.vae) if for_vae is not None else factory(v.ref)


def _seed(seed: int, image: str) -> int:
    """Per-image sample seed: the same whatever the batching, the rank or the resume."""
    return (seed * 1_000_003 + zlib.crc32(image.encode("utf-8"))) & 0x7FFF_FFFF


def evaluate(request: EvaluationRequest, *, should_stop: ShouldStop | None = None) -> Iterator[Event]:
    """Evaluate every VAE of ``request`` on its images; yields ``Started``, then ``VaeLoadFailed``,
    ``Row`` and ``Progress`` events as they happen, and at the end one ``VaeSummary`` per VAE and
    ``Finished``. Raises ``Cancelled`` when ``should_stop()`` turns true (everything committed so far
    stays on disk: run again with ``resume=True``), ``VaeStudioError`` subclasses with one-line
    reasons for unusable requests (exit code 2) and folders."""
    protocol = request.protocol()
    items = list_data(request.data, request.limit)
    if not items:
        raise DataListError("no image files found", ", ".join(map(str, request.data)))
    dist = Dist.from_env(request.device)
    try:
        yield from _Run(request, protocol, items, dist, should_stop).events()
    finally:
        dist.close()


class _Run:
    def __init__(self, request: EvaluationRequest, protocol: EvaluationProtocol, items: list[ImageItem], dist: Dist,
                 should_stop: ShouldStop | None) -> None:
        self.req = request
        self.protocol = protocol
        self.items = items
        self.dist = dist
        self.should_stop = should_stop
        self.out = Path(request.out) if request.out is not None else None
        self.store = RunStore(self.out, dist.rank, dist.world_size) if self.out is not None else None
        self.memory_rows: list[Row] = []
        self.vaes: list[_Vae] = []
        self.load_failures: list[VaeLoadFailed] = []
        self.metric_status: dict[str, str] = {}
        self.inception: fidmod.InceptionFeatures | None = None
        self.use_lpips = False
        self.t_start = time.perf_counter()
        self.resumed = 0
        self._root: tuple[fidmod.FeatureStats, torch.Tensor] | None = None

    # -- set-up -----------------------------------------------------------------------------
    def _collective(self, fn):
        err: BaseException | None = None
        result = None
        try:
            result = fn()
        except VaeStudioError as exc:
            err = exc
        if not self.dist.agree(err is None):
            raise err or StateError("another process of this run could not use the output folder", self.out)
        return result

    def _load_vaes(self) -> Iterator[Event]:
        sources = list(dict.fromkeys(map(str, self.req.vaes)))
        names = short_names(sources)
        device = self.dist.device or self.req.device
        for source, name in zip(sources, names, strict=True):
            if self.should_stop is not None and self.should_stop():
                raise Cancelled()
            pre = self.req.preloaded.get(source)
            try:
                if pre is not None:
                    vae, owned = pre, False
                else:
                    from vaestudio.core.sources import load_vae

                    vae = load_vae(source, family=self.req.family, device=device, dtype=self.req.dtype,
                                   progress=self.req.download_progress, should_stop=self.should_stop)
                    owned = True
                if not (vae.can_encode and vae.can_decode):
                    if owned:
                        vae.close()
                    raise VaeStudioError("needs both an encoder and a decoder to be evaluated", source)
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - one VAE failing never stops the others
                reason = exc.reason if isinstance(exc, VaeStudioError) else f"{type(exc).__name__}: {exc}"
                failure = VaeLoadFailed(source, name, str(reason).splitlines()[0] if str(reason) else "failed")
                self.load_failures.append(failure)
                yield failure
                continue
            ref = VaeRef(name, source, vae.info.architecture, vae.info.family, str(vae.device), dtype_name(vae.dtype))
            self.vaes.append(_Vae(ref, vae, owned))

    def _metrics_setup(self) -> None:
        from vaestudio.core.metrics import lpips_status

        m = self.protocol.metrics
        for name in ("psnr", "ssim", "mae", "color"):
            self.metric_status[name] = "available" if name in m else "not requested"
        if "lpips" in m:
            st = lpips_status()
            self.use_lpips = st == "available"
            self.metric_status["lpips"] = st
        else:
            self.metric_status["lpips"] = "not requested"
        if "fid" in m:
            info = fidmod.find_network()
            self.metric_status["fid"] = info.status
            if info.available and self.vaes:
                dev = self.vaes[0].vae.device
                self.inception = fidmod.InceptionFeatures(dev)
                for v in self.vaes:
                    v.fid = (fidmod.FeatureStats(), fidmod.FeatureStats())
        else:
            self.metric_status["fid"] = "not requested"

    def _accumulators_setup(self) -> None:
        for v in self.vaes:
            for factory in self.req.accumulators:
                acc = _make(factory, v)
                if sums(acc):
                    v.summing.append((factory, acc.name))
                else:
                    v.persistent.append(acc)

    # -- the run ----------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        if self.store is not None:
            self._collective(lambda: self.store.check_can_start(self.req.resume))
            self.dist.barrier()
        try:
            yield from self._load_vaes()
            self._metrics_setup()
            self._accumulators_setup()
            done: set[tuple[str, str]] = set()
            if self.store is not None:
                self.out.mkdir(parents=True, exist_ok=True)
                state = self._collective(lambda: self.store.open(self.protocol.comparable(), self.req.resume))
                done = state.done
                self._restore()
            mine = [it for it in self.items if it.index % self.dist.world_size == self.dist.rank]
            by_source = {v.ref.source: v for v in self.vaes}
            self.resumed = sum(1 for (img, src) in done if src in by_source)
            self.pending: dict[str, list[_Vae]] = {}
            for it in mine:
                todo = [v for v in self.vaes if (it.path, v.ref.source) not in done]
                if todo:
                    self.pending[it.path] = todo
            work = [it for it in mine if it.path in self.pending]
            yield Started(len(self.items), len(work), self.resumed, [v.ref for v in self.vaes], self.protocol, self.out,
                          self.dist.rank, self.dist.world_size)
            if self.vaes and work:
                yield from self._loop(work)
        except BaseException:
            self._close_vaes()  # cancelled, refused or failed: the VAEs this run loaded are let go at once
            raise
        finally:
            if self.store is not None:
                self.store.close()
        yield from self._finish()

    def _restore(self) -> None:
        """Rebuild FID statistics and accumulator totals from the committed sidecars."""
        assert self.store is not None
        by_source = {v.ref.source: v for v in self.vaes}
        for rec in self.store.committed_batches():
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

    def _loop(self, work: list[ImageItem]) -> Iterator[Event]:
        req = self.req
        loader = make_loader(ImageDataset(work, self.protocol.size, self.protocol.resize), req.batch_size,
                             req.workers, req.mp_context)
        total, done = len(work), 0
        t0 = time.perf_counter()
        last = 0.0
        buckets: dict[tuple[int, int], list[PreparedImage]] = {}
        B = req.batch_size

        def progress(force: bool = False) -> Iterator[Event]:
            nonlocal last
            now = time.perf_counter()
            if not force and now - last < req.progress_every and done < total:
                return
            last = now
            el = now - t0
            rate = done / el if el > 0 else 0.0
            eta = (total - done) / rate if rate > 0 else None
            yield Progress(done, total, rate, eta, el, self.dist.rank, self.dist.world_size)

        yield from progress(force=True)
        it = iter(loader)
        try:
            for chunk in it:
                for x in chunk:
                    if isinstance(x, FailedImage):
                        yield from self._commit_failed(x)
                        done += 1
                        continue
                    key = tuple(x.pixels.shape[-2:])
                    buckets.setdefault(key, []).append(x)  # type: ignore[arg-type]
                    if len(buckets[key]) >= B:  # type: ignore[index]
                        group = buckets.pop(key)  # type: ignore[arg-type]
                        yield from self._group(group)
                        done += len(group)
                        yield from progress()
                while sum(map(len, buckets.values())) > 2 * B:  # many sizes: do the fullest bucket
                    k = max(buckets, key=lambda s: len(buckets[s]))
                    group = buckets.pop(k)
                    yield from self._group(group)
                    done += len(group)
                    yield from progress()
            for k in list(buckets):
                group = buckets.pop(k)
                yield from self._group(group)
                done += len(group)
                yield from progress()
        finally:
            with contextlib.suppress(Exception):
                del it  # shuts the worker processes down
        yield from progress(force=True)

    def _stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled()

    def _commit(self, rows: list[Row], record: BatchRecord) -> Iterator[Event]:
        if self.store is not None:
            self.store.commit(rows, record)
        else:
            self.memory_rows.extend(rows)
        yield from rows

    def _commit_failed(self, f: FailedImage) -> Iterator[Event]:
        self._stop()
        rows = [Row(f.item.path, v.ref.name, v.ref.source, None, None, error=UNREADABLE + f.reason)
                for v in self.pending.get(f.item.path, [])]
        yield from self._commit(rows, BatchRecord(keys=[key_text(r.image, r.source) for r in rows]))

    def _group(self, group: list[PreparedImage]) -> Iterator[Event]:
        """Every pending VAE on a group of same-size images; one committed batch."""
        self._stop()
        x = torch.stack([g.pixels for g in group])
        rows: list[Row] = []
        record = BatchRecord(keys=[])
        feats_o: list[torch.Tensor] = []
        feats_r: list[torch.Tensor] = []
        orig_full: torch.Tensor | None = None
        for v in self.vaes:
            idx = [i for i, g in enumerate(group) if v in self.pending.get(g.item.path, ())]
            if not idx:
                continue
            sub = x if len(idx) == len(group) else x[idx]
            subgroup = [group[i] for i in idx]
            try:
                seen, identity = _prepare(v.vae, sub)
                raw, rec, enc_s, dec_s = self._roundtrip(v.vae, seen, [g.item.path for g in subgroup])
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - this batch fails for this VAE; the run goes on
                reason = exc.reason if isinstance(exc, VaeStudioError) else f"{type(exc).__name__}: {exc}"
                reason = str(reason).splitlines()[0] if str(reason) else type(exc).__name__
                rows += [Row(g.item.path, v.ref.name, v.ref.source, None, None, error=reason) for g in subgroup]
                continue
            n = len(subgroup)
            vals = batch_metrics(seen, rec, self.protocol.metrics, self.use_lpips)
            h, w = seen.shape[-2:]
            for j, g in enumerate(subgroup):
                rows.append(Row(g.item.path, v.ref.name, v.ref.source, int(w), int(h),
                                seconds=(enc_s + dec_s) / n, encode_s=enc_s / n, decode_s=dec_s / n,
                                **{k: vs[j] for k, vs in vals.items()}))
            if v.fid is not None and self.inception is not None:
                if identity:
                    if orig_full is None:
                        orig_full = self.inception(x)
                    fo = orig_full if len(idx) == len(group) else orig_full[idx]
                else:
                    fo = self.inception(seen)
                fr = self.inception(rec)
                v.fid[0].update(fo)
                v.fid[1].update(fr)
                feats_o.append(fo)
                feats_r.append(fr)
                record.feat_keys += [key_text(g.item.path, v.ref.source) for g in subgroup]
            for factory, name in v.summing:
                fresh = _make(factory, v)
                fresh.update(seen, rec, raw)
                delta = {k: torch.as_tensor(t).detach().cpu() for k, t in fresh.state().items()}
                record.acc.setdefault(v.ref.source, {})[name] = {k: t.numpy() for k, t in delta.items()}
                add_states(v.acc_totals.setdefault(name, {}), delta)
            for acc in v.persistent:
                acc.update(seen, rec, raw)
            if self.req.save_recons and self.out is not None:
                self._save_recons(v, subgroup, rec)
        record.keys = [key_text(r.image, r.source) for r in rows]
        if feats_o:
            record.orig = torch.cat(feats_o).numpy()
            record.recon = torch.cat(feats_r).numpy()
        yield from self._commit(rows, record)

    def _roundtrip(self, vae: Autoencoder, seen: torch.Tensor, images: list[str]):
        h, w = seen.shape[-2:]
        xp = pad_to_multiple(seen, vae.info.pad_multiple)
        seeds = [_seed(self.protocol.seed, p) for p in images] if self.protocol.sample else None
        t0 = time.perf_counter()
        raw, _tiled = vae.encode_batch(xp.contiguous(memory_format=torch.channels_last), sample=self.protocol.sample,
                                       seeds=seeds, tile=self.req.tile, should_stop=self.should_stop)
        t1 = time.perf_counter()
        rec = vae.decode_batch(vae.to_model(raw), tile=self.req.tile, should_stop=self.should_stop)
        if rec.ndim == 4:
            rec = rec[:, :, :h, :w]
        rec = rec.float().contiguous()
        t2 = time.perf_counter()
        if rec.shape != seen.shape:
            raise VaeStudioError(f"the VAE returned {tuple(rec.shape[1:])} for an input of {tuple(seen.shape[1:])}")
        return raw, rec, t1 - t0, t2 - t1

    def _save_recons(self, v: _Vae, subgroup: list[PreparedImage], rec: torch.Tensor) -> None:
        from vaestudio.core.images import save_png

        assert self.out is not None
        for j, g in enumerate(subgroup):
            path = self.out / "recons" / v.ref.name / Path(g.item.rel).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(rec[j].permute(1, 2, 0).numpy(), path)

    # -- the end ----------------------------------------------------------------------------
    def _finish(self) -> Iterator[Event]:
        dist = self.dist
        texts: list[str] | None = None
        # FID statistics: sum over ranks (every rank takes part, whatever it loaded)
        sources = list(dict.fromkeys(map(str, self.req.vaes)))
        by_source = {v.ref.source: v for v in self.vaes}
        if dist.active:
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
            gathered = dist.gather({v.ref.source: {k: {n: t.numpy() for n, t in d.items()}
                                                    for k, d in v.acc_totals.items()} for v in self.vaes})
            if dist.rank == 0 and gathered is not None:
                for v in self.vaes:
                    v.acc_totals = {}
                    for part in gathered:
                        for name, state in (part or {}).get(v.ref.source, {}).items():
                            add_states(v.acc_totals.setdefault(name, {}), tensor_state(state))
            if self.store is not None:
                texts = dist.gather(self.store.rows_text())
            else:
                parts = dist.gather(self.memory_rows)
                self.memory_rows = [r for part in (parts or []) for r in part]
        outputs: dict[str, Path] = {}
        if dist.rank != 0:
            self._close_vaes()
            yield Finished([], None, outputs, self.load_failures, [], dist.rank)
            return
        if self.out is not None:
            rows_path = self.out / "rows.csv"
            if dist.active:
                order = {it.path: it.index for it in self.items}
                vae_order = {s: i for i, s in enumerate(sources)}
                merge_rank_rows(self.out, texts or [], order, vae_order)
            outputs["rows"] = rows_path
            rows_iter = iter_rows_file(rows_path)
        else:
            rows_iter = iter(self.memory_rows)
        wanted = {v.ref.source for v in self.vaes}
        cols = collect(r for r in rows_iter if r.source in wanted)
        summaries = [self._summary(v, cols.get(v.ref.source)) for v in self.vaes]
        unreadable_list = unreadable_images(cols)
        wall = time.perf_counter() - self.t_start
        summary = {
            "vaes": [s.to_dict() for s in summaries],
            "protocol": {**self.protocol.to_dict(), "fid_network": fidmod.describe_network()
                         if self.metric_status.get("fid") == "available" else None},
            "images": len(self.items),
            "unreadable": unreadable_list,
            "load_failures": [{"vae": f.name, "source": f.source, "reason": f.reason} for f in self.load_failures],
            "world_size": dist.world_size,
            "versions": versions(),
            "hardware": hardware(sorted({v.ref.device for v in self.vaes})),
            "run": {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_s": round(wall, 3),
                    "resumed_rows": self.resumed},
        }
        if self.out is not None:
            outputs["summary"] = self.out / "summary.json"
            import json

            write_atomic(outputs["summary"], json.dumps(summary, indent=1, allow_nan=False) + "\n")
            if self.req.report:
                from vaestudio.core.evaluate.report import write_report

                examples = self._examples(cols)
                fragments = {v.ref.name: v.html for v in self.vaes if v.html}
                outputs["report"] = write_report(self.out / "report.html", summary, cols, examples, fragments)
            if self.req.save_recons:
                outputs["recons"] = self.out / "recons"
        self._close_vaes()
        yield from summaries
        yield Finished(summaries, summary, outputs, self.load_failures, unreadable_list, 0)

    def _fid(self, a: fidmod.FeatureStats, b: fidmod.FeatureStats) -> float:
        """rFID; the originals' covariance factor is reused across VAEs that saw the same images."""
        cached = self._root
        if cached is not None and cached[0].n == a.n and torch.equal(cached[0].sum, a.sum) \
                and torch.equal(cached[0].outer, a.outer):
            root = cached[1]
        else:
            root = fidmod.cholesky_factor(a.mean_cov()[1])
            self._root = (a, root)
        return fidmod.fid_from_stats(a, b, factor_a=root)

    def _summary(self, v: _Vae, cols) -> VaeSummary:
        from vaestudio.core.evaluate.summary import Columns

        cols = cols or Columns()
        stats = vae_stats(cols)
        rfid, status = None, self.metric_status.get("fid", "not requested")
        if v.fid is not None and status == "available":
            n = v.fid[1].n
            if n >= 2:
                rfid = self._fid(v.fid[0], v.fid[1])
                status = f"computed on {n} images with the {fidmod.describe_network()}"
                if n < fidmod.FEATURE_DIM:
                    status += (f"; with fewer than {fidmod.FEATURE_DIM} images the covariance is rank-deficient and "
                               "rFID is biased upward: compare only runs on the same images")
            else:
                status = "unavailable: fewer than two images were evaluated"
        elif status == "available":
            status = "unavailable: the processes of this run did not all load this VAE"
        analyses: dict[str, Any] = {}
        html: dict[str, str] = {}
        for factory, name in v.summing:
            acc = _make(factory, v)
            if v.acc_totals.get(name):
                acc.load_state(v.acc_totals[name])
            analyses[name] = acc.result()
            frag = acc.html()
            if frag:
                html[name] = frag
        for acc in v.persistent:
            res = dict(acc.result())
            if self.dist.active or self.resumed:
                res["partial"] = True
            analyses[acc.name] = res
            frag = acc.html()
            if frag:
                html[acc.name] = frag
        v.html = html
        return VaeSummary(v.ref.name, v.ref.source, v.ref.architecture, v.ref.family, len(cols.images),
                          len(cols.failures), cols.failures, stats, rfid, status, dict(self.metric_status), analyses,
                          worst=pick_examples(cols).get("worst", []))

    def _examples(self, cols) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The worst and best images per VAE with thumbnails, for the report."""
        from vaestudio.core.evaluate.report import example_thumbnails

        out = {}
        for v in self.vaes:
            c = cols.get(v.ref.source)

            def roundtrip(x: torch.Tensor, paths: list[str], vae=v.vae) -> tuple[torch.Tensor, torch.Tensor]:
                seen, _ = _prepare(vae, x)
                return seen, self._roundtrip(vae, seen, paths)[1]

            out[v.ref.name] = example_thumbnails(pick_examples(c) if c is not None and c.images else {}, self.items,
                                                 self.protocol, self.req.batch_size, roundtrip)
        return out

    def _close_vaes(self) -> None:
        for v in self.vaes:
            if v.owned:
                with contextlib.suppress(Exception):
                    v.vae.close()


def _prepare(vae: Autoencoder, sub: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """What the VAE sees (``prepare_pixels``), batched; ``identity`` when it is the image itself."""
    arrays = [s.permute(1, 2, 0).numpy() for s in sub]
    prepared = [vae.prepare_pixels(a)[0] for a in arrays]
    if all(p is a for p, a in zip(prepared, arrays, strict=True)):
        return sub, True
    seen = torch.stack([torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).permute(2, 0, 1) for p in prepared])
    return seen.contiguous(), False
