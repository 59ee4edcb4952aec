"""What the commands share: error lines and exit codes, VAE options, loading, result rows."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_IMAGE, EXIT_VAE = 0, 1, 2, 3, 4


def err(path: object, reason: object) -> None:
    print(f"error: {path}: {reason}" if path else f"error: {reason}", file=sys.stderr, flush=True)


def unique_stem(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... when an earlier image of this run had the same name (two
    folders' photo.jpg), so that no output overwrites another; the stem returned is added to ``taken``."""
    stem, k = name, 2
    while stem in taken:
        stem, k = f"{name}-{k}", k + 1
    taken.add(stem)
    return stem


def output_folder(out: str) -> Path | None:
    """The output folder, made if needed; None (after an error line) when it cannot be made."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err(folder, f"cannot create the output folder ({exc.strerror})")
        return None
    return folder


def reason(exc: BaseException) -> str:
    """What went wrong, in one line without the path: our own errors' sentence, others' first line
    after their type's name."""
    from vaestudio.core.errors import VaeStudioError, one_line

    return exc.reason if isinstance(exc, VaeStudioError) else one_line(exc, with_type=True)


def report(exc: BaseException, debug: bool, fallback_path: object = None) -> int:
    """Print one error line (a traceback too under --debug); return the exit code it stands for."""
    from vaestudio.core.errors import VaeStudioError

    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, VaeStudioError):
        err(exc.path or fallback_path, reason(exc))
        return exc.exit_code
    err(fallback_path, reason(exc))
    return EXIT_OTHER


def usage(msg: str) -> int:
    print(f"vaestudio: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def family_help() -> str:
    from vaestudio.core.families import FAMILIES

    return "override the detected family: " + ", ".join(n for n in FAMILIES if n != "mnist")


def add_vae_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--family", default=None, help=family_help())
    p.add_argument("--tile", default="auto", choices=["auto", "on", "off"], help="tiled encode/decode")


def add_decoder_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoder", default=None, metavar="FILE",
                   help="decode with this file's decoder instead of the VAE's own (a FLUX.2 small decoder, another "
                        "SD VAE's decoder): it must take the same latent")


def add_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=None, metavar="N", help="resize so the longer side is N pixels")


def check_size(args) -> None:
    if args.size is not None and args.size < 8:
        raise SystemExit(usage("--size must be at least 8"))


def load(args, source: str):
    """Load a VAE as the command's options say; download progress goes to stderr."""
    from vaestudio.core.sources import load_vae

    def show(p) -> None:  # never mixed into --json output on stdout
        if p.total and sys.stderr.isatty():
            print(f"\rdownloading {p.filename}: {100 * p.done // p.total}% of {p.total / 1e6:.0f} MB",
                  end="" if p.done < p.total else "\n", file=sys.stderr, flush=True)

    return load_vae(source, family=args.family, device=args.device, dtype=args.dtype, progress=show,
                    decoder=getattr(args, "decoder", None))


def metric_fields(m) -> dict:
    """A reconstruction's metrics as flat JSON/CSV fields."""
    from vaestudio.core.metrics import json_float

    return {"psnr": json_float(m.psnr), "ssim": json_float(m.ssim), "mae": json_float(m.mae),
            "color_shift": [json_float(v) for v in m.color_shift], "lpips": m.lpips, "lpips_status": m.lpips_status}
