"""``vaestudio analyze {drift,seams,spectrum,noise,scale}``: the five analyses, as PNG plots, CSV and JSON.

For each image the plot of all VAEs is ``<image>_<analysis>.png`` and the numbers ``<image>_<analysis>.csv``
(one block of rows per VAE), rewritten as each VAE finishes; drift also writes the picture after the last
round (``<image>_<vae>_drift_last.png``) and seams the difference maps (``<image>_<vae>_seams_maps.png``).
``--json`` prints one object per image and VAE: ``image``, ``vae``, ``analysis``, the analysis's numbers
(see ``vaestudio.core.analyses``) and ``outputs``. Exit codes as for ``reconstruct``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from vaestudio.cli.common import (
    EXIT_IMAGE,
    EXIT_OK,
    EXIT_OTHER,
    add_vae_options,
    err,
    load,
    output_folder,
    report,
    unique_stem,
    usage,
)
from vaestudio.core.files import write_atomic

ORDER = 36
#: Images are resized so the longer side is this many pixels unless --size says otherwise: it keeps each
#: analysis under a minute with an SD-sized VAE on a 2-core CPU (docs/benchmarks.md).
DEFAULT_SIZE = 256



def _int_list(text: str) -> list[int]:
    from vaestudio.core.analyses import parse_sizes

    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> None:
    from vaestudio.core.analyses import ANALYSES

    a = sub.add_parser("analyze", help="drift, seams, spectrum, noise robustness, scaling factor",
                       description="Analyses of what a VAE does: "
                                   + "; ".join(f"{k}: {v.question}" for k, v in ANALYSES.items()))
    kinds = a.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    for name, kind in ANALYSES.items():
        p = kinds.add_parser(name, help=kind.question, description=kind.question)
        p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
        p.add_argument("--vae", action="append", required=True, metavar="SOURCE",
                       help="weight file, diffusers folder, or Hugging Face id; repeat to overlay VAEs")
        p.add_argument("--out", default=".", metavar="DIR", help="output folder (default: current folder)")
        p.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="N",
                       help=f"resize so the longer side is N pixels (default {DEFAULT_SIZE}; 0: keep the size)")
        p.add_argument("--json", action="store_true", help="one JSON object per image and VAE per line")
        if name == "drift":
            p.add_argument("--rounds", type=int, default=10, metavar="K", help="encode/decode rounds (default 10)")
        elif name == "seams":
            p.add_argument("--tiles", type=_int_list, default=[64, 128], metavar="T,T",
                           help="tile sizes in pixels (default 64,128)")
            p.add_argument("--overlaps", type=_int_list, default=[0, 16, 32], metavar="O,O",
                           help="tile overlaps in pixels (default 0,16,32)")
        elif name == "spectrum":
            p.add_argument("--bins", type=int, default=None, metavar="N",
                           help="frequency rings from 0 to 0.5 cycles/pixel (default: half the shorter side)")
        elif name == "noise":
            p.add_argument("--steps", type=int, default=10, metavar="N", help="noise amounts, from none (default 10)")
            p.add_argument("--mode", choices=["timestep", "strength"], default="timestep",
                           help="timesteps over the family's schedule (default), or strength z + s * eps")
            p.add_argument("--max-strength", type=float, default=1.0, metavar="S",
                           help="the largest strength with --mode strength (default 1)")
            p.add_argument("--seed", type=int, default=0)
        add_vae_options(p)
        p.set_defaults(handler=run)


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, buf.getvalue())


def _num(v):
    return "" if v is None else v


def _rows(analysis: str, label: str, d: dict) -> list[dict]:
    """CSV rows of one VAE's result (``d`` is ``result.to_dict()``)."""
    if analysis == "drift":
        return [{"vae": label, "round": r["round"], "psnr": _num(r["psnr"]), "ssim": _num(r["ssim"]),
                 "color_shift_r": r["color_shift"][0], "color_shift_g": r["color_shift"][1],
                 "color_shift_b": r["color_shift"][2]} for r in d["rounds"]]
    if analysis == "seams":
        return [{"vae": label, **{k: _num(v) for k, v in s.items()}, "band_width": d["band_width"]} for s in d["seams"]]
    if analysis == "spectrum":
        return [{"vae": label, "frequency": f, "original_power": _num(po), "reconstruction_power": _num(pr),
                 "ratio": _num(r)} for f, po, pr, r in zip(d["frequencies"], d["original_power"],
                                                           d["reconstruction_power"], d["ratio"], strict=True)]
    if analysis == "noise":
        return [{"vae": label, "mode": d["mode"], **{k: _num(v) for k, v in p.items()}} for p in d["points"]]
    summary = {k: _num(d[k]) for k in ("suggested_scaling_factor", "suggested_shift", "configured_scaling_factor",
                                       "configured_shift")}
    rows = [{"vae": label, "space": "raw", "channel": "all", "mean": _num(d["mean"]), "std": _num(d["std"]), **summary},
            {"vae": label, "space": "model", "channel": "all", "mean": _num(d["model_mean"]),
             "std": _num(d["model_std"]), **summary}]
    for space, mk, sk in (("raw", "channel_mean", "channel_std"), ("model", "model_channel_mean", "model_channel_std")):
        rows += [{"vae": label, "space": space, "channel": i, "mean": _num(m), "std": _num(s), **summary}
                 for i, (m, s) in enumerate(zip(d[mk], d[sk], strict=True))]
    return rows


def _f(v, spec: str = ".2f", none: str = "inf") -> str:
    """A number for the summary line; JSON's null stands for an infinite PSNR (identical pictures)."""
    return none if v is None else format(v, spec)


def _summary(analysis: str, d: dict) -> str:
    if analysis == "drift":
        r = d["rounds"][-1]
        cs = ", ".join(f"{v:+.4f}" for v in r["color_shift"])
        return f"after round {r['round']}: PSNR {_f(r['psnr'])} dB, SSIM {_f(r['ssim'], '.4f')}, colour shift ({cs})"
    if analysis == "seams":
        return "seam score " + ", ".join(f"tile {s['tile']}/overlap {s['overlap']}: "
                                         f"{'n/a' if s['seam_score'] is None else format(s['seam_score'], '.3f')}"
                                         for s in d["seams"])
    if analysis == "spectrum":
        fr, ra = d["frequencies"], d["ratio"]
        picks = []
        for target in (0.1, 0.25, 0.45):
            if fr:
                i = min(range(len(fr)), key=lambda k: abs(fr[k] - target))
                picks.append(f"{fr[i]:.2f}: {_f(ra[i], '.3f')}")
        return "power ratio at cycles/pixel " + ", ".join(picks)
    if analysis == "noise":
        pts = d["points"]
        return "PSNR vs clean " + ", ".join(f"{d['mode']} {p['t']:g}: {_f(p['psnr'], '.1f')} dB" for p in pts)
    def g(key: str, spec: str = ".4g") -> str:
        return _f(d[key], spec, none="n/a")

    return (f"raw latents mean {g('mean')} std {g('std')}; suggested scaling factor "
            f"{g('suggested_scaling_factor', '.5g')} shift {g('suggested_shift')}; configured "
            f"{g('configured_scaling_factor', '.5g')} shift {g('configured_shift')}")


def run(args) -> int:
    from vaestudio.core.analyses import ANALYSES, check_seam_settings, seams
    from vaestudio.core.analyses.common import drive
    from vaestudio.core.evaluate.data import short_names
    from vaestudio.core.images import list_images, load_image, save_png

    if args.size != 0 and args.size < 8:
        return usage("--size must be at least 8 (or 0 to keep the image's size)")
    name = args.analysis
    opts: dict = {}
    if name == "drift":
        if args.rounds < 1:
            return usage("--rounds must be at least 1")
        opts = {"rounds": args.rounds}
    elif name == "seams":
        try:
            check_seam_settings(args.tiles, args.overlaps)
        except ValueError as exc:
            return usage(str(exc))
        opts = {"tiles": args.tiles, "overlaps": args.overlaps}
    elif name == "spectrum":
        if args.bins is not None and args.bins < 2:
            return usage("--bins must be at least 2")
        opts = {"bins": args.bins}
    elif name == "noise":
        if args.steps < 2:
            return usage("--steps must be at least 2")
        if not (args.max_strength > 0 and args.max_strength < float("inf")):
            return usage("--max-strength must be a finite number > 0")
        opts = {"steps": args.steps, "mode": args.mode, "max_strength": args.max_strength, "seed": args.seed}
    runner, plot = ANALYSES[name].functions()
    out_dir = output_folder(args.out)
    if out_dir is None:
        return EXIT_OTHER
    code = EXIT_OK
    images = []  # (path, LoadedImage, stem for output names)
    stems: set[str] = set()
    for path in list_images(args.images):
        try:
            image = load_image(path, size=args.size or None)
        except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the batch
            code = max(code, report(exc, args.debug, path))
            continue
        images.append((path, image, unique_stem(image.name, stems)))
    if not images:
        err(None, "no readable images")
        return code or EXIT_IMAGE
    tty = sys.stderr.isatty()
    done: dict[str, list] = {stem: [] for _, _, stem in images}  # stem -> [(label, result)]
    rows: dict[str, list[dict]] = {stem: [] for _, _, stem in images}
    for source, label in zip(args.vae, short_names(args.vae), strict=True):
        try:
            vae = load(args, source)
        except Exception as exc:  # noqa: BLE001
            code = max(code, report(exc, args.debug, source))
            continue
        try:
            for path, image, stem in images:

                def show(step, path=path, label=label) -> None:
                    line = f"{name} {path} [{label}]: {step.what} ({step.done + 1}/{step.total})"
                    print(f"\r{line}\033[K" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

                try:
                    result = drive(runner(vae, image.pixels, tile=args.tile, **opts), on_step=show)
                    if tty:
                        print("\r\033[K", end="", file=sys.stderr, flush=True)
                    d = result.to_dict()
                    done[stem].append((label, result))
                    rows[stem] += _rows(name, label, d)
                    outputs = {"plot": str(save_png(plot(done[stem]), out_dir / f"{stem}_{name}.png"))}
                    csv_path = out_dir / f"{stem}_{name}.csv"
                    _write_csv(csv_path, rows[stem])
                    outputs["csv"] = str(csv_path)
                    if name == "drift":
                        outputs["last_round"] = str(save_png(result.last, out_dir / f"{stem}_{label}_drift_last.png"))
                    elif name == "seams":
                        maps = seams.seam_maps(result, f"{image.name}, {label}: tiled minus untiled decode")
                        outputs["maps"] = str(save_png(maps, out_dir / f"{stem}_{label}_seams_maps.png"))
                except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the batch
                    if tty:
                        print(file=sys.stderr)
                    code = max(code, report(exc, args.debug, path))
                    continue
                for note in result.notes:
                    print(f"note: {path}: {note}", file=sys.stderr)
                if name == "scale" and result.warning:
                    print(f"warning: {path}: {source}: {result.warning}", file=sys.stderr, flush=True)
                if args.json:
                    print(json.dumps({"image": str(path), "vae": source, "analysis": name, **d, "outputs": outputs}),
                          flush=True)
                else:
                    print(f"{path} [{label}] {name}: {_summary(name, d)} -> {outputs['plot']}", flush=True)
        finally:
            vae.close()
    return code
