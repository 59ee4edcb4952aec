"""The evaluation loop: ``evaluate(request)`` is a generator of events (see the package docstring).

The loop loads the VAEs, reads the images in DataLoader workers, groups them by size and puts each
group through every VAE that still has to see it (``state.VaeState``), committing one batch at a
time; a clip is one item, put through every VAE and committed on its own (``clips``); ``finish`` ends
the run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from vaestudio.core.device import dtype_name
from vaestudio.core.errors import Cancelled, VaeStudioError, one_line
from vaestudio.core.evaluate import fid as fidmod
from vaestudio.core.evaluate.clips import clip_roundtrip, clip_row, save_clip
from vaestudio.core.evaluate.data import (
    FailedImage,
    ImageDataset,
    ImageItem,
    PreparedClip,
    PreparedImage,
    list_data,
    make_loader,
    short_names,
)
from vaestudio.core.evaluate.dist import Dist
from vaestudio.core.evaluate.finish import finish
from vaestudio.core.evaluate.measure import batch_metrics
from vaestudio.core.evaluate.state import RunState, VaeState, restore
from vaestudio.core.evaluate.store import BatchRecord, RunStore, StateError, key_text
from vaestudio.core.evaluate.types import (
    UNREADABLE,
    EvaluationProtocol,
    EvaluationRequest,
    Event,
    Progress,
    Row,
    Started,
    VaeLoadFailed,
    VaeRef,
)
from vaestudio.core.images import NoImageFiles
from vaestudio.core.tiling import ShouldStop


def evaluate(request: EvaluationRequest, *, should_stop: ShouldStop | None = None) -> Iterator[Event]:
    """Evaluate every VAE of ``request`` on its images; yields ``Started``, then ``VaeLoadFailed``,
    ``Row`` and ``Progress`` events as they happen, and at the end one ``VaeSummary`` per VAE and
    ``Finished``. Raises ``Cancelled`` when ``should_stop()`` turns true (everything committed so far
    stays on disk: run again with ``resume=True``), ``VaeStudioError`` subclasses with one-line
    reasons for unusable requests (exit code 2) and folders."""
    protocol = request.protocol()
    items = list_data(request.data, request.limit)
    if not items:
        raise NoImageFiles(request.data)
    with Dist.from_env(request.device) as dist:
        yield from _Run(request, protocol, items, dist, should_stop).events()


class _Run:
    def __init__(self, request: EvaluationRequest, protocol: EvaluationProtocol, items: list[ImageItem], dist: Dist,
                 should_stop: ShouldStop | None) -> None:
        out = Path(request.out) if request.out is not None else None
        store = RunStore(out, dist.rank, dist.world_size) if out is not None else None
        self.state = RunState(request, protocol, items, dist, should_stop, out, store)
        self.req = request
        self.protocol = protocol
        self.items = items
        self.dist = dist
        self.should_stop = should_stop
        self.out = out
        self.store = store
        self.vaes = self.state.vaes
        self.metric_status = self.state.metric_status
        self.inception: fidmod.InceptionFeatures | None = None
        self.use_lpips = False
        self.pending: dict[str, list[VaeState]] = {}

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
        sources = self.state.sources
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
                failure = VaeLoadFailed(source, name, _reason(exc))
                self.state.load_failures.append(failure)
                yield failure
                continue
            ref = VaeRef(name, source, vae.info.architecture, vae.info.family, str(vae.device), dtype_name(vae.dtype),
                         vae.dtype_reason, index=len(self.vaes))
            self.vaes.append(VaeState(ref, vae, owned))

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
            v.add_accumulators(self.req.accumulators)

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
                restore(self.vaes, self.store.committed_batches())
            mine = [it for it in self.items if it.index % self.dist.world_size == self.dist.rank]
            by_source = {v.ref.source: v for v in self.vaes}
            self.state.resumed = sum(1 for (img, src) in done if src in by_source)
            for it in mine:
                todo = [v for v in self.vaes if (it.path, v.ref.source) not in done]
                if todo:
                    self.pending[it.path] = todo
            work = [it for it in mine if it.path in self.pending]
            yield Started(len(self.items), len(work), self.state.resumed, [v.ref for v in self.vaes], self.protocol, self.out,
                          self.dist.rank, self.dist.world_size)
            if self.vaes and work:
                yield from self._loop(work)
        except BaseException:
            self.state.close_vaes()  # cancelled, refused or failed: the VAEs this run loaded are let go at once
            raise
        finally:
            if self.store is not None:
                self.store.close()
        yield from finish(self.state)

    def _loop(self, work: list[ImageItem]) -> Iterator[Event]:
        req = self.req
        loader = make_loader(ImageDataset(work, self.protocol.size, self.protocol.resize, self.protocol.frames),
                             req.batch_size, req.workers, req.mp_context)
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
                    if isinstance(x, FailedImage | PreparedClip):
                        yield from self._commit_failed(x) if isinstance(x, FailedImage) else self._clip(x)
                        done += 1
                        yield from progress()
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
            self.state.memory_rows.extend(rows)
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
        feats: tuple[list, list] = ([], [])
        orig_full: torch.Tensor | None = None
        for v in self.vaes:
            idx = [i for i, g in enumerate(group) if v in self.pending.get(g.item.path, ())]
            if not idx:
                continue
            sub = x if len(idx) == len(group) else x[idx]
            subgroup = [group[i] for i in idx]
            try:
                seen, identity = v.prepare(sub)
                raw, rec, enc_s, dec_s = v.roundtrip(seen, [g.item.path for g in subgroup], self.protocol,
                                                     self.req.tile, self.should_stop)
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - this batch fails for this VAE; the run goes on
                reason = _reason(exc)
                rows += [Row(g.item.path, v.ref.name, v.ref.source, None, None, error=reason) for g in subgroup]
                continue
            n = len(subgroup)
            vals = batch_metrics(seen, rec, self.protocol.metrics, self.use_lpips)
            h, w = seen.shape[-2:]
            for j, g in enumerate(subgroup):
                rows.append(Row(g.item.path, v.ref.name, v.ref.source, int(w), int(h),
                                seconds=(enc_s + dec_s) / n, encode_s=enc_s / n, decode_s=dec_s / n,
                                **{k: vs[j] for k, vs in vals.items()}))
            fo = None
            if v.fid is not None and self.inception is not None and identity:
                if orig_full is None:
                    orig_full = self.inception(x)
                fo = orig_full if len(idx) == len(group) else orig_full[idx]
            self._update(v, seen, rec, raw, [g.item.path for g in subgroup], record, feats, fo)
            if self.req.save_recons and self.out is not None:
                self._save_recons(v, subgroup, rec)
        yield from self._commit_batch(rows, record, feats)

    def _update(self, v: VaeState, seen: torch.Tensor, rec: torch.Tensor, raw: torch.Tensor, keys: list[str],
                record: BatchRecord, feats: tuple[list, list], fo: torch.Tensor | None = None) -> None:
        """A VAE's batch into its rFID statistics (``keys``: the row's image per frame) and accumulators."""
        features = None
        if v.fid is not None and self.inception is not None:
            features = (self.inception(seen) if fo is None else fo, self.inception(rec))
            feats[0].append(features[0])
            feats[1].append(features[1])
            record.feat_keys += [key_text(k, v.ref.source) for k in keys]
        v.update(seen, rec, raw, record, features)

    def _commit_batch(self, rows: list[Row], record: BatchRecord, feats: tuple[list, list]) -> Iterator[Event]:
        record.keys = [key_text(r.image, r.source) for r in rows]
        if feats[0]:
            record.orig = torch.cat(feats[0]).numpy()
            record.recon = torch.cat(feats[1]).numpy()
        yield from self._commit(rows, record)

    def _clip(self, c: PreparedClip) -> Iterator[Event]:
        """Every pending VAE on one clip; one committed batch (its frames count as images for rFID)."""
        self._stop()
        rows: list[Row] = []
        record = BatchRecord(keys=[])
        feats: tuple[list, list] = ([], [])
        for v in self.pending.get(c.item.path, []):
            try:
                rt = clip_roundtrip(v.vae, c, self.req.tile, self.should_stop)
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - this clip fails for this VAE; the run goes on
                rows.append(Row(c.item.path, v.ref.name, v.ref.source, None, None, error=_reason(exc)))
                continue
            vals = batch_metrics(rt.seen, rt.rec, self.protocol.metrics, self.use_lpips)
            rows.append(clip_row(c.item.path, v.ref, rt, vals))
            self._update(v, rt.seen, rt.rec, rt.raw, [c.item.path] * len(rt.seen), record, feats)
            if self.req.save_recons and self.out is not None:
                path = self.out / "recons" / v.ref.name / Path(c.item.rel).with_suffix(".mp4")
                path.parent.mkdir(parents=True, exist_ok=True)
                save_clip(rt, path, c.fps)
        yield from self._commit_batch(rows, record, feats)

    def _save_recons(self, v: VaeState, subgroup: list[PreparedImage], rec: torch.Tensor) -> None:
        from vaestudio.core.images import save_png

        assert self.out is not None
        for j, g in enumerate(subgroup):
            path = self.out / "recons" / v.ref.name / Path(g.item.rel).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(rec[j].permute(1, 2, 0).numpy(), path)


def _reason(exc: BaseException) -> str:
    """Why a VAE could not be loaded or could not do a batch, in one line: our own errors by their
    reason alone (the row or the failure names the VAE beside it), others with their type's name."""
    if isinstance(exc, VaeStudioError):
        exc = VaeStudioError(exc.reason)
    return one_line(exc, with_type=True)
