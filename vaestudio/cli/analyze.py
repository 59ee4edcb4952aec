"""``vaestudio analyze {drift,seams,spectrum,noise,scale}``: the five analyses, as PNG plots, CSV and JSON.

For each image the plot of all VAEs is ``<image>_<analysis>.png`` and the numbers ``<image>_<analysis>.csv``
(one block of rows per VAE), rewritten as each VAE finishes; pictures an analysis writes beside them
(drift's picture after the last round, ``<image>_<vae>_drift_last.png``; seams' difference maps,
``<image>_<vae>_seams_maps.png``) come from its description. ``--json`` prints one object per image and
VAE: ``image``, ``vae``, ``analysis``, the analysis's numbers (see ``vaestudio.core.analyses``) and
``outputs``. Exit codes as for ``reconstruct``. Everything about an analysis (its arguments, columns,
summary line, figure) is read from its description (``vaestudio.core.analyses.describe``).
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
    add_decoder_option,
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


def _argument(p: argparse.ArgumentParser, o) -> None:
    """One option of a description as a command-line argument."""
    kw: dict = {"default": o.default, "help": o.help, "dest": o.name}
    if o.kind == "choice":
        kw["choices"] = list(o.choices)
    else:
        if o.metavar:
            kw["metavar"] = o.metavar
        if o.kind == "sizes":
            def parse(text: str, o=o) -> list[int]:
                try:
                    return o.parse(text)
                except ValueError as exc:
                    raise argparse.ArgumentTypeError(str(exc)) from None

            kw["type"] = parse
        else:
            kw["type"] = int if o.kind == "int" else float
    p.add_argument(o.flag, **kw)


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
        for o in kind.options:
            _argument(p, o)
        add_vae_options(p)
        add_decoder_option(p)
        p.set_defaults(handler=run)


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)  # null: an empty field
    write_atomic(path, buf.getvalue())


def run(args) -> int:
    from vaestudio.core.analyses import ANALYSES
    from vaestudio.core.analyses.common import drive
    from vaestudio.core.analyses.plotting import draw
    from vaestudio.core.evaluate.data import short_names
    from vaestudio.core.images import list_images, load_image, save_png

    if args.size != 0 and args.size < 8:
        return usage("--size must be at least 8 (or 0 to keep the image's size)")
    name = args.analysis
    kind = ANALYSES[name]
    try:
        opts = kind.validate({o.name: getattr(args, o.name) for o in kind.options}, lambda o: o.flag)
    except ValueError as exc:
        return usage(str(exc))
    runner = kind.function()
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
                    numbers = [(lab, r.to_dict()) for lab, r in done[stem]]
                    outputs = {"plot": str(save_png(draw(kind, numbers, kind.pictures(done[stem], image.name)),
                                                    out_dir / f"{stem}_{name}.png"))}
                    csv_path = out_dir / f"{stem}_{name}.csv"
                    _write_csv(csv_path, kind.fields, kind.table(numbers))
                    outputs["csv"] = str(csv_path)
                    for pic in kind.pictures([(label, result)], image.name):
                        if pic.file:
                            outputs[pic.key] = str(save_png(pic.rgb, out_dir / f"{stem}_{label}_{pic.file}.png"))
                except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the batch
                    if tty:
                        print(file=sys.stderr)
                    code = max(code, report(exc, args.debug, path))
                    continue
                for note in result.notes:
                    print(f"note: {path}: {note}", file=sys.stderr)
                warning = kind.warning(d)
                if warning:
                    print(f"warning: {path}: {source}: {warning}", file=sys.stderr, flush=True)
                if args.json:
                    print(json.dumps({"image": str(path), "vae": source, "analysis": name, **d, "outputs": outputs}),
                          flush=True)
                else:
                    print(f"{path} [{label}] {name}: {kind.summary(d)} -> {outputs['plot']}", flush=True)
        finally:
            vae.close()
    return code
