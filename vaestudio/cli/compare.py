"""``vaestudio compare``: PSNR, SSIM and MAE per VAE and image, with the mean per VAE.

A thin view over ``vaestudio.core.evaluate.evaluate`` (the engine of ``vaestudio evaluate``): no
output folder, images read in this process, ``--size`` resizing the longer side as before.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vaestudio.cli.common import (
    EXIT_IMAGE,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_VAE,
    add_size_option,
    add_vae_options,
    check_size,
    err,
    report,
)
from vaestudio.core.files import write_atomic

ORDER = 30


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="compare VAEs on the same images")
    c.add_argument("images", nargs="+", metavar="IMAGES_OR_DIRS")
    c.add_argument("--vae", action="append", required=True, metavar="SOURCE", help="repeat for each VAE")
    c.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    add_size_option(c)
    c.add_argument("--json", action="store_true")
    add_vae_options(c)
    c.set_defaults(handler=run)


def run(args) -> int:
    from vaestudio.core.evaluate import EvaluationRequest, Finished, Row, Started, VaeLoadFailed, evaluate
    from vaestudio.core.metrics import json_float

    check_size(args)
    request = EvaluationRequest(
        data=args.images, vaes=args.vae, out=None, size=args.size or 0, resize="longer", batch_size=8, workers=0,
        device=args.device, dtype=args.dtype, family=args.family, tile=args.tile,
        metrics=("psnr", "ssim", "mae", "color"), report=False)
    code = EXIT_OK
    rows: list[Row] = []
    names: dict[str, str] = {}
    finished = None
    reported: set[str] = set()
    try:
        for event in evaluate(request):
            if isinstance(event, Started):
                names = {v.source: v.name for v in event.vaes}
            elif isinstance(event, VaeLoadFailed):
                err(event.source, event.reason)
                code = max(code, EXIT_VAE)
            elif isinstance(event, Row):
                if event.error:
                    if event.unreadable is not None:
                        if event.image not in reported:
                            reported.add(event.image)
                            err(event.image, event.unreadable)
                            code = max(code, EXIT_IMAGE)
                    else:
                        err(event.image, event.error)
                        code = max(code, EXIT_OTHER)
                    continue
                rows.append(event)
            elif isinstance(event, Finished):
                finished = event
    except Exception as exc:  # noqa: BLE001
        return report(exc, args.debug)
    if finished is None:
        return max(code, EXIT_OTHER)
    if not rows and not finished.load_failures and finished.unreadable:
        err(None, "no readable images")
        return code or EXIT_IMAGE
    image_names = dict(zip(sorted({r.image for r in rows}), short_image_names(sorted({r.image for r in rows})),
                           strict=True))
    table = [_row(r, image_names[r.image]) for r in sorted(rows, key=lambda r: (args.vae.index(r.source), r.image))]
    means = []
    for s in finished.summaries:
        mine = [r for r in table if r["vae"] == s.source]
        if mine:
            means.append({"vae": s.source, "image": "(mean)", **{
                k: json_float(sum(r[k] for r in mine if r[k] is not None) / max(1, sum(r[k] is not None for r in mine)))
                for k in ("psnr", "ssim", "mae", "encode_s", "decode_s")}})
    if args.json:
        for r in table + means:
            print(json.dumps(r))
    else:
        w = max([4] + [len(n) for n in names.values()])
        print(f"{'vae':<{w}} {'image':<24} {'PSNR':>8} {'SSIM':>8} {'MAE':>8}")
        for r in table + means:
            ps = "inf" if r["psnr"] is None else f"{r['psnr']:.2f}"
            ss, ma = (("-" if r[k] is None else f"{r[k]:.4f}") for k in ("ssim", "mae"))
            print(f"{names.get(r['vae'], r['vae']):<{w}} {r['image'][:24]:<24} {ps:>8} {ss:>8} {ma:>8}")
    if args.csv and table:
        buf = io.StringIO(newline="")
        wr = csv.DictWriter(buf, fieldnames=list(table[0].keys()), extrasaction="ignore")
        wr.writeheader()
        wr.writerows(table + means)
        try:
            write_atomic(args.csv, buf.getvalue())
        except OSError as exc:
            err(args.csv, f"cannot write the CSV file ({exc.strerror})")
            code = max(code, EXIT_OTHER)
    return code


def short_image_names(paths: list[str]) -> list[str]:
    """The file stem of each image, with as many parent folders as it takes to tell them apart."""
    from vaestudio.core.evaluate.data import unique_tails

    return unique_tails([Path(p).with_suffix("").parts for p in paths], "/")


def _row(r, image: str) -> dict:
    from vaestudio.core.metrics import json_float

    return {"vae": r.source, "image": image, "width": r.width, "height": r.height,
            "psnr": json_float(r.psnr), "ssim": json_float(r.ssim), "mae": json_float(r.mae),
            "color_shift_r": json_float(r.color_shift_r), "color_shift_g": json_float(r.color_shift_g),
            "color_shift_b": json_float(r.color_shift_b), "encode_s": round(r.encode_s or 0.0, 4),
            "decode_s": round(r.decode_s or 0.0, 4)}
