"""``vaestudio evaluate``: VAEs on a whole dataset: rows.csv, summary.json, report.html.

Runs as one process, or one per device under ``torchrun --nproc_per_node=N -m vaestudio evaluate ...``.
Exit codes: 0 the run completed (skipped images included), 2 usage, 4 a VAE could not be loaded (the
others were still evaluated), 1 anything else.
"""

from __future__ import annotations

import json
import sys
import time

from vaestudio.cli.common import EXIT_OK, EXIT_OTHER, EXIT_VAE, add_vae_options, err, report

ORDER = 35
#: How to fix an unusable output folder, in command-line terms (the window says it in its own).
STATE_HINTS = {
    "exists": "; add --resume to continue it, or choose another --out",
    "no-state": "; use another --out",
    "columns": "; use another --out",
    "protocol": " (use the same options, or another --out)",
    "processes": "; or use another --out",
}


def add_parser(sub) -> None:
    from vaestudio.core.evaluate.types import DEFAULT_FRAMES, DEFAULT_METRICS, KNOWN_METRICS, default_workers

    e = sub.add_parser(
        "evaluate", help="evaluate VAEs on a dataset (rows.csv, summary.json, report.html; torchrun for many GPUs)",
        description="Evaluate VAEs on a whole dataset. Under torchrun, one process per device.")
    e.add_argument("data", nargs="+", metavar="DATA",
                   help="image and clip files, folders (recursive) or .txt lists of paths")
    e.add_argument("--vae", action="append", required=True, metavar="SOURCE", help="repeat for each VAE")
    e.add_argument("--out", required=True, metavar="DIR", help="output folder")
    e.add_argument("--size", type=int, default=256, metavar="N",
                   help="shorter side to N (bicubic, antialiased), centre crop NxN; 0 keeps each image's size "
                        "(default 256)")
    e.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                   help=f"clips: their first N frames (each VAE takes the most it can: 1 + 4k for Wan; default "
                        f"{DEFAULT_FRAMES})")
    e.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted by path)")
    e.add_argument("--batch-size", type=int, default=8, metavar="B", help="same-size images per batch (default 8)")
    e.add_argument("--workers", type=int, default=default_workers(), metavar="W",
                   help=f"image-reading worker processes (default {default_workers()}; 0 reads in the main process)")
    add_vae_options(e)
    e.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                   help=f"comma-separated, from {','.join(KNOWN_METRICS)} (default: all)")
    e.add_argument("--save-recons", action="store_true", help="write reconstructions under DIR/recons/<vae>/")
    e.add_argument("--resume", action="store_true", help="continue an interrupted run in DIR (same protocol)")
    e.add_argument("--sample", action="store_true", help="decode seeded samples of the latent instead of its mean")
    e.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    e.add_argument("--no-report", action="store_true", help="skip report.html")
    e.add_argument("--json", action="store_true", help="print one JSON object per VAE (its summary) at the end")
    e.set_defaults(handler=run)


class Bar:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.tty = sys.stderr.isatty()
        self.enabled = enabled
        self.last_line = 0.0
        self.last_done = -1
        self.drawn = False

    def show(self, p) -> None:
        if not self.enabled:
            return
        eta = "--" if p.eta_s is None else _clock(p.eta_s)
        who = f" (rank {p.rank} of {p.world_size})" if p.world_size > 1 else ""
        text = f"{p.done}/{p.total} images{who}  {p.images_per_s:.2f} img/s  ETA {eta}"
        if self.tty:
            width = 28
            fill = int(width * p.fraction)
            print(f"\r[{'#' * fill}{'.' * (width - fill)}] {100 * p.fraction:5.1f}%  {text}\033[K", end="",
                  file=sys.stderr, flush=True)
            self.drawn = True
        elif p.done != self.last_done and (time.monotonic() - self.last_line >= 10 or p.done == p.total):
            self.last_line = time.monotonic()
            self.last_done = p.done
            print(f"progress: {text}", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.drawn:
            print(file=sys.stderr, flush=True)
            self.drawn = False


def _clock(s: float) -> str:
    s = int(s + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _num(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def run(args) -> int:
    from pathlib import Path

    from vaestudio.core.evaluate import (
        EvaluationRequest,
        Finished,
        Progress,
        Started,
        VaeLoadFailed,
        evaluate,
    )
    from vaestudio.core.evaluate.accumulators import default_accumulators
    from vaestudio.core.evaluate.dist import env_rank
    from vaestudio.core.evaluate.store import StateError

    request = EvaluationRequest(
        data=args.data, vaes=args.vae, out=Path(args.out), size=args.size, frames=args.frames, limit=args.limit,
        batch_size=args.batch_size, workers=args.workers, device=args.device, dtype=args.dtype, family=args.family,
        tile=args.tile, metrics=args.metrics, save_recons=args.save_recons, resume=args.resume, sample=args.sample,
        seed=args.seed, report=not args.no_report, accumulators=default_accumulators())
    bar = Bar()
    finished = None
    load_failed = False
    rank = env_rank()  # load failures come before Started: rank 0 alone reports them
    try:
        for event in evaluate(request):
            if isinstance(event, Progress):
                bar.show(event)
            elif isinstance(event, Started):
                rank = event.rank
                bar.enabled = rank == 0
                if rank == 0:
                    extra = f", {event.resumed_rows} rows already done" if event.resumed_rows else ""
                    procs = f" on {event.world_size} processes" if event.world_size > 1 else ""
                    print(f"evaluating {len(event.vaes)} VAE(s) on {event.images} images{procs}{extra}",
                          file=sys.stderr, flush=True)
            elif isinstance(event, VaeLoadFailed):
                load_failed = True
                bar.end()
                if rank == 0:
                    err(event.source, event.reason)
            elif isinstance(event, Finished):
                finished = event
    except KeyboardInterrupt:
        bar.end()
        err(None, "interrupted; what was done is kept: run the same command with --resume to continue")
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, the right exit code
        bar.end()
        hint = STATE_HINTS.get(getattr(exc, "kind", None)) if isinstance(exc, StateError) else None
        if hint:
            exc.reason += hint
        return report(exc, args.debug, None)
    bar.end()
    if finished is None:
        return EXIT_OTHER
    if finished.rank == 0 and finished.summary is not None:
        if args.json:
            for s in finished.summaries:
                print(json.dumps(s.to_dict(), allow_nan=False), flush=True)
        else:
            _print_table(finished)
    return EXIT_VAE if load_failed else EXIT_OK


def _print_table(finished) -> None:
    rows = finished.summaries
    w = max([4] + [len(s.vae) for s in rows])
    print(f"{'vae':<{w}}  {'images':>6} {'failed':>6} {'PSNR':>7} {'PSNRds':>7} {'SSIM':>7} {'MAE':>7} "
          f"{'LPIPS':>7} {'rFID':>8}")
    for s in rows:
        st = s.stats
        print(f"{s.vae:<{w}}  {s.images:>6} {s.failed:>6} {_num(st.get('psnr_mean'), 2):>7} "
              f"{_num(st.get('psnr_dataset'), 2):>7} {_num(st.get('ssim_mean'), 4):>7} {_num(st.get('mae_mean'), 4):>7} "
              f"{_num(st.get('lpips_mean'), 4):>7} {_num(s.rfid, 3):>8}")
    for s in rows:
        if s.clips:
            print(f"{s.vae}: {s.clips} of the {s.images} are clips, flicker {_num(s.stats.get('flicker_mean'), 5)}")
    if finished.unreadable:
        print(f"{len(finished.unreadable)} unreadable image(s) skipped (listed in summary.json)")
    _print_missing_metric_reasons(finished.summary["vaes"])
    for name, path in finished.outputs.items():
        print(f"{name}: {path}")


def _print_missing_metric_reasons(vaes: list[dict]) -> None:
    """Why a column shows "-", once, on stderr (the report's notes say the same)."""
    from vaestudio.core.evaluate.summary import metric_notes

    column = {"rFID": "rfid", "LPIPS": "lpips_mean"}
    for what, vae, text in metric_notes(vaes):
        if any(v.get(column[what]) is None for v in vaes if vae in (None, v["vae"])):
            print(f"note: {what}{f' ({vae})' if vae else ''}: {text}", file=sys.stderr)
