"""bf16 on the CPU: what each architecture loses per half, and fp32 against ``--dtype auto`` in time.

Each VAE is loaded twice through the registry, once in fp32 and once in bf16. The encoder's loss is
the fp32 decoding of the bf16 latent against the fp32 round trip; the decoder's is the bf16 decoding
of the fp32 latent against the same (PSNR, peak 1, higher is closer). The architectures are the
random-weight models of the tests (``--small``, the default) or of the published configs, plus the
real taef2 weights on a photo. Times are the best of ``--repeats`` encode+decode runs with
``--dtype fp32`` and ``--dtype auto``. Prints a Markdown table and the CPU it ran on.

    python benchmarks/bench_dtype.py [--size 64] [--repeats 2] [--full] [--archs sd,flux2,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archs import configs  # noqa: E402
from machine import cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SD_TINY = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
               up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1, norm_num_groups=32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def bf16_loss(source: Path, pixels: np.ndarray) -> dict[str, float]:
    """PSNR (dB) of each half run in bf16 against fp32, both measured on the decoded image."""
    from vaestudio.core.sources import load_vae

    f32, b16 = load_vae(source, dtype="fp32"), load_vae(source, dtype="bf16")
    h, w = pixels.shape[:2]
    z32, z16 = f32.encode(pixels).latent, b16.encode(pixels).latent
    ref = f32.decode(z32, h, w).pixels
    return {"encode": psnr(f32.decode(z16, h, w).pixels, ref), "decode": psnr(b16.decode(z32, h, w).pixels, ref)}


def round_trip_s(source: Path, pixels: np.ndarray, dtype: str, repeats: int) -> tuple[float, str]:
    from vaestudio.core.sources import load_vae

    vae = load_vae(source, dtype=dtype)
    h, w = pixels.shape[:2]
    vae.decode(vae.encode(pixels).latent, h, w)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        vae.decode(vae.encode(pixels).latent, h, w)
        best = min(best, time.perf_counter() - t0)
    return best, vae.dtype_reason


def models(names: list[str] | None, full: bool, tmp: Path) -> dict[str, Path]:
    """name -> a source vaestudio loads: diffusers folders of random-weight models, the real taef2."""
    import diffusers

    table = {"sd": ("AutoencoderKL", {} if full else SD_TINY), **configs(small=not full)}
    out = {}
    for name, (cls, cfg) in table.items():
        if names and name not in names:
            continue
        torch.manual_seed(0)
        model = getattr(diffusers, cls)(**cfg).eval()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # random init leaves outputs near zero; perturb as the tests do
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.03)
        model.save_pretrained(tmp / name)
        out[name] = tmp / name
    taef2 = SHARED / "weights" / "taef2_encoder.pth"
    if taef2.exists() and (not names or "taef2" in names):
        out["taef2 (real weights)"] = taef2
    return out


def photo(size: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(SHARED / "images" / "astronaut.png").convert("RGB").resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.float32) / 255.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="the published configs instead of the tiny test ones")
    ap.add_argument("--archs", default="", help="comma-separated subset (sd, flux2, wan2.1, ..., taef2)")
    args = ap.parse_args(argv)
    names = [n for n in args.archs.split(",") if n] or None
    pixels = photo(args.size)
    print(cpu_line())
    print(f"image: astronaut.png at {args.size}x{args.size}\n")
    print("| VAE | bf16 encode PSNR vs fp32 | bf16 decode PSNR vs fp32 | fp32 s | auto s | auto/fp32 | auto's reason |")
    print("|---|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in models(names, args.full, Path(tmp)).items():
            try:
                loss = bf16_loss(source, pixels)
            except (NotImplementedError, RuntimeError) as exc:  # an op torch has no bf16 CPU kernel for
                print(f"| {name} | bf16 fails: {str(exc).splitlines()[0][:80]} | | | | | |", flush=True)
                continue
            t32, _ = round_trip_s(source, pixels, "fp32", args.repeats)
            tauto, why = round_trip_s(source, pixels, "auto", args.repeats)
            print(f"| {name} | {loss['encode']:.1f} dB | {loss['decode']:.1f} dB | {t32:.3f} | {tauto:.3f} | "
                  f"{tauto / t32:.2f} | {why} |", flush=True)
    if os.environ.get("VAESTUDIO_CPU_BF16"):
        print(f"\n(VAESTUDIO_CPU_BF16={os.environ['VAESTUDIO_CPU_BF16']} overrode oneDNN's answer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
