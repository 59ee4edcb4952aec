"""The ``vaestudio`` command line. With no arguments it opens the window.

Exit codes: 0 success; 2 usage; 3 an image could not be read; 4 a VAE source could not be loaded;
1 anything else. Errors are one line on stderr (``error: <path>: <reason>``), with a traceback
only under ``--debug``.

torch and diffusers are imported inside the commands, so ``vaestudio`` opens its window fast.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_IMAGE, EXIT_VAE = 0, 1, 2, 3, 4


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _err(path: object, reason: object) -> None:
    print(f"error: {path}: {reason}" if path else f"error: {reason}", file=sys.stderr, flush=True)


def _report(exc: BaseException, debug: bool, fallback_path: object = None) -> int:
    from vaestudio.core.errors import VaeStudioError

    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, VaeStudioError):
        _err(exc.path or fallback_path, exc.reason)
        return exc.exit_code
    _err(fallback_path, f"{type(exc).__name__}: {exc}".strip())
    return EXIT_OTHER


def _add_vae_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--family", default=None, help="override the detected family: sd1, sdxl, sd3, flux")
    p.add_argument("--tile", default="auto", choices=["auto", "on", "off"], help="tiled encode/decode")


def build_parser() -> argparse.ArgumentParser:
    from vaestudio import __version__

    parser = argparse.ArgumentParser(prog="vaestudio", description="See what a VAE does to your images.")
    parser.add_argument("--version", action="version", version=f"vaestudio {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("gui", help="open the window (the default)")
    g.add_argument("images", nargs="*", help="images to open")
    g.add_argument("--vae", default=None, help="VAE source to load")

    r = sub.add_parser("reconstruct", help="encode and decode images, write reconstructions and difference maps")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--vae", required=True, metavar="SOURCE",
                   help="weight file, diffusers folder, or Hugging Face id (org/name[/subfolder])")
    r.add_argument("--out", default=".", metavar="DIR", help="output folder (default: current folder)")
    r.add_argument("--size", type=int, default=None, metavar="N", help="resize so the longer side is N pixels")
    grp = r.add_mutually_exclusive_group()
    grp.add_argument("--noise", type=float, default=None, metavar="S", help="add noise of strength S to the latent")
    grp.add_argument("--timestep", type=float, default=None, metavar="T", help="noise the latent to diffusion timestep T")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--sample", action="store_true", help="sample the latent instead of taking its mean")
    r.add_argument("--json", action="store_true", help="one JSON object per image per line")
    _add_vae_options(r)

    i = sub.add_parser("inspect-vae", help="report what a VAE source holds")
    i.add_argument("sources", nargs="+", metavar="SOURCE")
    i.add_argument("--family", default=None)
    i.add_argument("--json", action="store_true", help="one JSON object per source per line")

    c = sub.add_parser("compare", help="compare VAEs on the same images")
    c.add_argument("images", nargs="+", metavar="IMAGES_OR_DIRS")
    c.add_argument("--vae", action="append", required=True, metavar="SOURCE", help="repeat for each VAE")
    c.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    c.add_argument("--size", type=int, default=None, metavar="N")
    c.add_argument("--json", action="store_true")
    _add_vae_options(c)

    from vaestudio.core.mnist.cli import add_train_parser

    add_train_parser(sub)

    s = sub.add_parser("self-test", help="check that this install works (window, VAE, reconstruction, training)")
    s.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in (None, "gui"):
        from vaestudio.ui.app import run_gui

        return run_gui(getattr(args, "images", []), getattr(args, "vae", None))
    handlers = {
        "reconstruct": cmd_reconstruct,
        "inspect-vae": cmd_inspect,
        "compare": cmd_compare,
        "train-mnist": _train,
        "self-test": _self_test,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        _err(None, "interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, right exit code
        return _report(exc, args.debug)


def _train(args) -> int:
    from vaestudio.core.mnist.cli import cmd_train

    return cmd_train(args)


def _self_test(args) -> int:
    from vaestudio.selftest import run_self_test

    return run_self_test(json_out=args.json)


def _load(args, source: str):
    from vaestudio.core.sources import load_vae

    def show(p) -> None:  # download progress on stderr, never mixed into --json output
        if p.total and sys.stderr.isatty():
            print(f"\rdownloading {p.filename}: {100 * p.done // p.total}% of {p.total / 1e6:.0f} MB",
                  end="" if p.done < p.total else "\n", file=sys.stderr, flush=True)

    return load_vae(source, family=args.family, device=args.device, dtype=args.dtype, progress=show)


def _size_ok(args) -> None:
    if args.size is not None and args.size < 8:
        raise SystemExit(_usage("--size must be at least 8"))


def _usage(msg: str) -> int:
    print(f"vaestudio: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_reconstruct(args) -> int:
    from vaestudio.core.images import list_images, load_image, save_png
    from vaestudio.core.pipeline import reconstruct
    from vaestudio.core.vae import dtype_name

    _size_ok(args)
    try:
        vae = _load(args, args.vae)
    except Exception as exc:  # noqa: BLE001
        return _report(exc, args.debug, args.vae)
    if args.timestep is not None and not 0 <= args.timestep <= vae.family.max_timestep:
        return _usage(f"--timestep must be between 0 and {vae.family.max_timestep} for {vae.family.name}")
    if args.noise is not None and (args.noise < 0 or not math.isfinite(args.noise)):
        return _usage("--noise must be a finite number >= 0")
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _err(out_dir, f"cannot create the output folder ({exc.strerror})")
        return EXIT_OTHER
    code = EXIT_OK
    for path in list_images(args.images):
        try:
            image = load_image(path, size=args.size)
            rec = reconstruct(vae, image, noise=args.noise, timestep=args.timestep, seed=args.seed,
                              sample=args.sample, tile=args.tile)
            recon_path = save_png(rec.recon, out_dir / f"{image.name}_recon.png")
            diff_path = save_png(rec.diff_rgb(), out_dir / f"{image.name}_diff.png")
        except Exception as exc:  # noqa: BLE001 - report and go on with the rest of the batch
            code = max(code, _report(exc, args.debug, path))
            continue
        for note in rec.notices:
            print(f"note: {path}: {note}", file=sys.stderr)
        m = rec.metrics
        record = {
            "image": str(path),
            "width": image.width,
            "height": image.height,
            "latent_shape": list(rec.encoded.latent.shape),
            "psnr": _finite(m.psnr),
            "ssim": _finite(m.ssim),
            "mae": _finite(m.mae),
            "color_shift": [_finite(v) for v in m.color_shift],
            "encode_s": round(rec.encode_s, 4),
            "decode_s": round(rec.decode_s, 4),
            "device": str(vae.device),
            "dtype": dtype_name(vae.dtype),
            "family": vae.info.family,
            "family_guessed": vae.info.family_guessed,
            "tiled": rec.encoded.tiled,
            "output": str(recon_path),
            "diff": str(diff_path),
            "lpips": m.lpips,
            "lpips_status": m.lpips_status,
        }
        if rec.noise is not None:
            record.update(noise_mode=rec.noise.mode, noise_value=rec.noise.value, seed=args.seed,
                          snr=_finite(rec.noise.snr), snr_db=_finite(rec.noise.snr_db))
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            extra = f"  SNR {record['snr_db']} dB" if rec.noise is not None else ""
            print(f"{path}: {image.width}x{image.height} latent {tuple(record['latent_shape'])}  "
                  f"PSNR {m.psnr:.2f} dB  SSIM {m.ssim:.4f}  encode {rec.encode_s:.2f}s decode {rec.decode_s:.2f}s"
                  f"{extra}  -> {recon_path}", flush=True)
    return code


def cmd_inspect(args) -> int:
    from vaestudio.core.sources import prepare_source

    code = EXIT_OK
    for source in args.sources:
        try:
            info = prepare_source(source, family=args.family).info
        except Exception as exc:  # noqa: BLE001
            code = max(code, _report(exc, args.debug, source))
            if args.json:
                print(json.dumps({"source": source, "error": str(getattr(exc, "reason", exc))}), flush=True)
            continue
        d = info.to_dict()
        if args.json:
            print(json.dumps(d), flush=True)
            continue
        guessed = " (guessed: " + info.family_reason + ")" if info.family_guessed else f" ({info.family_reason})"
        print(f"{source}\n  format:          {info.format}\n  key layout:      {info.key_layout}\n"
              f"  family:          {info.family}{guessed}\n  latent_channels: {info.latent_channels}\n"
              f"  scaling_factor:  {info.scaling_factor}\n  shift_factor:    {info.shift_factor}\n"
              f"  parameters:      {info.parameters:,}\n  dtype:           {info.dtype}\n"
              f"  ignored keys:    {', '.join(info.ignored_keys) or 'none'}")
        for note in info.notes:
            print(f"  note:            {note}")
    return code


def cmd_compare(args) -> int:
    from vaestudio.core.images import list_images, load_image
    from vaestudio.core.pipeline import reconstruct

    _size_ok(args)
    code = EXIT_OK
    images = []
    for path in list_images(args.images):
        try:
            images.append(load_image(path, size=args.size))
        except Exception as exc:  # noqa: BLE001
            code = max(code, _report(exc, args.debug, path))
    if not images:
        _err(None, "no readable images")
        return code or EXIT_IMAGE
    rows = []
    for source in args.vae:
        try:
            vae = _load(args, source)
        except Exception as exc:  # noqa: BLE001
            code = max(code, _report(exc, args.debug, source))
            continue
        for image in images:
            try:
                rec = reconstruct(vae, image, tile=args.tile)
            except Exception as exc:  # noqa: BLE001
                code = max(code, _report(exc, args.debug, image.name))
                continue
            m = rec.metrics
            rows.append({"vae": source, "image": image.name, "width": image.width, "height": image.height,
                         "psnr": _finite(m.psnr), "ssim": _finite(m.ssim), "mae": _finite(m.mae),
                         "color_shift_r": _finite(m.color_shift[0]), "color_shift_g": _finite(m.color_shift[1]),
                         "color_shift_b": _finite(m.color_shift[2]), "encode_s": round(rec.encode_s, 4),
                         "decode_s": round(rec.decode_s, 4)})
        vae.close()
    means = []
    for source in args.vae:
        mine = [r for r in rows if r["vae"] == source]
        if mine:
            means.append({"vae": source, "image": "(mean)", **{
                k: _finite(sum(r[k] for r in mine if r[k] is not None) / max(1, sum(r[k] is not None for r in mine)))
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
            _err(args.csv, f"cannot write the CSV file ({exc.strerror})")
            code = max(code, EXIT_OTHER)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
