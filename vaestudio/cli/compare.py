"""``vaestudio compare``: PSNR, SSIM and MAE per VAE and image, with the mean per VAE."""

from __future__ import annotations

import csv
import json

from vaestudio.cli.common import (
    EXIT_IMAGE,
    EXIT_OK,
    EXIT_OTHER,
    add_size_option,
    add_vae_options,
    check_size,
    err,
    finite,
    load,
    report,
)

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
    from vaestudio.core.images import list_images, load_image
    from vaestudio.core.pipeline import reconstruct

    check_size(args)
    code = EXIT_OK
    images = []
    for path in list_images(args.images):
        try:
            images.append(load_image(path, size=args.size))
        except Exception as exc:  # noqa: BLE001
            code = max(code, report(exc, args.debug, path))
    if not images:
        err(None, "no readable images")
        return code or EXIT_IMAGE
    rows = []
    for source in args.vae:
        try:
            vae = load(args, source)
        except Exception as exc:  # noqa: BLE001
            code = max(code, report(exc, args.debug, source))
            continue
        for image in images:
            try:
                rec = reconstruct(vae, image, tile=args.tile)
            except Exception as exc:  # noqa: BLE001
                code = max(code, report(exc, args.debug, image.name))
                continue
            m = rec.metrics
            rows.append({"vae": source, "image": image.name, "width": image.width, "height": image.height,
                         "psnr": finite(m.psnr), "ssim": finite(m.ssim), "mae": finite(m.mae),
                         "color_shift_r": finite(m.color_shift[0]), "color_shift_g": finite(m.color_shift[1]),
                         "color_shift_b": finite(m.color_shift[2]), "encode_s": round(rec.encode_s, 4),
                         "decode_s": round(rec.decode_s, 4)})
        vae.close()
    means = []
    for source in args.vae:
        mine = [r for r in rows if r["vae"] == source]
        if mine:
            means.append({"vae": source, "image": "(mean)", **{
                k: finite(sum(r[k] for r in mine if r[k] is not None) / max(1, sum(r[k] is not None for r in mine)))
                for k in ("psnr", "ssim", "mae", "encode_s", "decode_s")}})
    if args.json:
        for r in rows + means:
            print(json.dumps(r))
    else:
        print(f"{'vae':<40} {'image':<24} {'PSNR':>8} {'SSIM':>8} {'MAE':>8}")
        for r in rows + means:
            ps = "inf" if r["psnr"] is None else f"{r['psnr']:.2f}"
            print(f"{r['vae'][-40:]:<40} {r['image'][:24]:<24} {ps:>8} {r['ssim']:>8.4f} {r['mae']:>8.4f}")
    if args.csv and rows:
        fields = list(rows[0].keys())
        try:
            with open(args.csv, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                for r in rows + means:
                    w.writerow(r)
        except OSError as exc:
            err(args.csv, f"cannot write the CSV file ({exc.strerror})")
            code = max(code, EXIT_OTHER)
    return code
