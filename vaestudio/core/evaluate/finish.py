"""The end of an evaluation: sums and rows brought together from every rank, one ``VaeSummary`` per
VAE, summary.json and report.html written, the VAEs let go."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vaestudio.core.evaluate import fid as fidmod
from vaestudio.core.evaluate.data import PreparedClip
from vaestudio.core.evaluate.measure import hardware, versions
from vaestudio.core.evaluate.state import RunState, VaeState, reduce
from vaestudio.core.evaluate.store import iter_rows_file, merge_rank_rows
from vaestudio.core.evaluate.summary import Columns, collect, pick_clips, pick_examples, unreadable_images
from vaestudio.core.evaluate.types import Event, Finished, VaeSummary
from vaestudio.core.files import write_atomic


def finish(run: RunState) -> Iterator[Event]:
    """Yield one ``VaeSummary`` per VAE and ``Finished`` (on rank 0; the other ranks only hand their
    sums and rows over and yield an empty ``Finished``)."""
    dist = run.dist
    texts: list[str] | None = None
    if dist.active:
        reduce(run.vaes, run.sources, dist)
        if run.store is not None:
            texts = dist.gather(run.store.rows_text())
        else:
            parts = dist.gather(run.memory_rows)
            run.memory_rows = [r for part in (parts or []) for r in part]
    outputs: dict[str, Path] = {}
    if dist.rank != 0:
        run.close_vaes()
        yield Finished([], None, outputs, run.load_failures, [], dist.rank)
        return
    if run.out is not None:
        rows_path = run.out / "rows.csv"
        if dist.active:
            order = {it.path: it.index for it in run.items}
            vae_order = {s: i for i, s in enumerate(run.sources)}
            merge_rank_rows(run.out, texts or [], order, vae_order)
        outputs["rows"] = rows_path
        rows_iter = iter_rows_file(rows_path)
    else:
        rows_iter = iter(run.memory_rows)
    wanted = {v.ref.source for v in run.vaes}
    cols = collect(r for r in rows_iter if r.source in wanted)
    rfid = _Rfid(run.metric_status.get("fid", "not requested"), any(c.clips for c in cols.values()))
    partial = dist.active or bool(run.resumed)
    summaries = [v.summary(cols.get(v.ref.source), run.metric_status, *rfid(v), partial) for v in run.vaes]
    unreadable_list = unreadable_images(cols)
    summary = _summary_json(run, summaries, unreadable_list)
    if run.out is not None:
        outputs["summary"] = run.out / "summary.json"
        write_atomic(outputs["summary"], json.dumps(summary, indent=1, allow_nan=False) + "\n")
        if run.request.report:
            from vaestudio.core.evaluate.report import write_report

            examples = _examples(run, cols)
            fragments = {v.ref.name: v.html for v in run.vaes if v.html}
            outputs["report"] = write_report(run.out / "report.html", summary, cols, examples, fragments)
        if run.request.save_recons:
            outputs["recons"] = run.out / "recons"
    run.close_vaes()
    yield from summaries
    yield Finished(summaries, summary, outputs, run.load_failures, unreadable_list, 0)


def _summary_json(run: RunState, summaries: list[VaeSummary], unreadable: list[dict[str, str]]) -> dict[str, Any]:
    wall = time.perf_counter() - run.t_start
    return {
        "vaes": [s.to_dict() for s in summaries],
        "protocol": {**run.protocol.to_dict(), "fid_network": fidmod.describe_network()
                     if run.metric_status.get("fid") == "available" else None},
        "images": len(run.items),
        "unreadable": unreadable,
        "load_failures": [{"vae": f.name, "source": f.source, "reason": f.reason} for f in run.load_failures],
        "world_size": run.dist.world_size,
        "versions": versions(),
        "hardware": hardware(sorted({v.ref.device for v in run.vaes})),
        "run": {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_s": round(wall, 3),
                "resumed_rows": run.resumed},
    }


class _Rfid:
    """rFID and its status per VAE; the originals' covariance factor is reused across VAEs that saw
    the same images."""

    def __init__(self, status: str, clips: bool = False) -> None:
        self.status = status
        self.clips = clips
        self._root: tuple[fidmod.FeatureStats, torch.Tensor] | None = None

    def __call__(self, v: VaeState) -> tuple[float | None, str]:
        status = self.status
        if v.fid is None or status != "available":
            if status == "available":
                status = "unavailable: the processes of this run did not all load this VAE"
            return None, status
        n = v.fid[1].n
        if n < 2:
            return None, "unavailable: fewer than two images were evaluated"
        frames = " (each clip's frames counted as images)" if self.clips else ""
        status = f"computed on {n} images{frames} with the {fidmod.describe_network()}"
        if n < fidmod.FEATURE_DIM:
            status += (f"; with fewer than {fidmod.FEATURE_DIM} images the covariance is rank-deficient and "
                       "rFID is biased upward: compare only runs on the same images")
        return self._fid(*v.fid), status

    def _fid(self, a: fidmod.FeatureStats, b: fidmod.FeatureStats) -> float:
        cached = self._root
        if cached is not None and cached[0].n == a.n and torch.equal(cached[0].sum, a.sum) \
                and torch.equal(cached[0].outer, a.outer):
            root = cached[1]
        else:
            root = fidmod.cholesky_factor(a.mean_cov()[1])
            self._root = (a, root)
        return fidmod.fid_from_stats(a, b, factor_a=root)


def _examples(run: RunState, cols: dict[str, Columns]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The worst and best images per VAE with thumbnails, for the report, and the worst clips (each
    shown by its worst frame)."""
    from vaestudio.core.evaluate.clips import clip_roundtrip
    from vaestudio.core.evaluate.report import example_thumbnails

    out = {}
    for v in run.vaes:
        c = cols.get(v.ref.source)

        def roundtrip(x: torch.Tensor, paths: list[str], v: VaeState = v) -> tuple[torch.Tensor, torch.Tensor]:
            seen, _ = v.prepare(x)
            return seen, v.roundtrip(seen, paths, run.protocol, run.request.tile, run.should_stop)[1]

        def clip_trip(clip: PreparedClip, v: VaeState = v) -> tuple[torch.Tensor, torch.Tensor]:
            rt = clip_roundtrip(v.vae, clip, run.request.tile, run.should_stop)
            return rt.seen, rt.rec

        picks = pick_examples(c) if c is not None and c.images else {}
        if c is not None and c.clips:
            picks["clips"] = pick_clips(c)
        out[v.ref.name] = example_thumbnails(picks, run.items, run.protocol, run.request.batch_size, roundtrip,
                                             clip_trip)
    return out
