"""The GPU paths, checked on a CUDA machine in one run (benchmarks/gpu_check.sh calls this).

Random-weight models built from diffusers' defaults (SD-sized AutoencoderKL) and vaestudio's shipped configs
(FLUX.2, Wan 2.1), saved as diffusers folders and loaded through vaestudio's registry. Prints one Markdown
table, a row per check: what was checked, the result (PASS/FAIL/n/a) and what was seen.

  1. auto dtype per VAE (fp16/bf16/fp32 and the reason)
  2. NaN -> fp32: an SDXL-shaped VAE with force_upcast off and weights scaled to overflow in fp16
  3. out of memory -> tiles: the memory fraction capped below an untiled 1024x1024 decode's peak
  4. `evaluate` under torchrun (NCCL, one process per GPU) equals one process
  5. encode+decode times at 512 and 1024: vaestudio against plain diffusers (channels-last, same dtype);
     torch.compile (plain diffusers) separately with GPU_CHECK_COMPILE=1

    python benchmarks/gpu_check.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vaestudio.core.errors import one_line  # noqa: E402

SD = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
          up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
ROWS: list[tuple[str, str, str]] = []


def row(check: str, result: str, seen: str) -> None:
    ROWS.append((check, result, seen))
    print(f"  {check}: {result} ({seen})", file=sys.stderr, flush=True)


def build(name: str, folder: Path, **over) -> Path:
    import diffusers

    from vaestudio.core.archs._common import shipped_config

    cls, cfg = {"sd": ("AutoencoderKL", dict(SD, force_upcast=False)),
                "sdxl": ("AutoencoderKL", dict(SD, scaling_factor=0.13025, force_upcast=True)),
                "flux2": ("AutoencoderKLFlux2", shipped_config("flux2")),
                "wan2.1": ("AutoencoderKLWan", shipped_config("wan2.1"))}[name]
    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**{**cfg, **over}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder / name)
    return folder / name


def image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.stack([xx, yy, 0.5 + 0.3 * np.sin(8 * xx * yy)], axis=2).astype(np.float32)


def auto_dtypes(sources: dict[str, Path]) -> None:
    from vaestudio.core.device import dtype_name
    from vaestudio.core.sources import load_vae

    for name, src in sources.items():
        vae = load_vae(src, device="cuda")
        row(f"auto dtype: {name}", "PASS", f"{dtype_name(vae.dtype)}: {vae.dtype_reason}")
        vae.close()


def nan_upcast(tmp: Path) -> None:
    from vaestudio.core.device import dtype_name
    from vaestudio.core.sources import load_vae

    src = build("sdxl", tmp / "overflow", force_upcast=False)
    vae = load_vae(src, device="cuda", dtype="fp16")
    with torch.no_grad():  # weights just under fp16's 65504: the first convolution's sums go past it
        w = vae.model.decoder.conv_in.weight
        w.mul_(6e4 / float(w.abs().max()))
    before = dtype_name(vae.dtype)
    enc = vae.encode(image(256))
    dec = vae.decode(enc.latent, 256, 256)
    ok = np.isfinite(dec.pixels).all() and vae.dtype == torch.float32 and any("retried in fp32" in n for n in dec.notes)
    row("NaN -> fp32 (SDXL-shaped, fp16 overflow)", "PASS" if ok else "FAIL",
        f"{before} -> {dtype_name(vae.dtype)}; notes: {'; '.join(dec.notes) or 'none'}")
    vae.close()


def oom_tiles(src: Path) -> None:
    from vaestudio.core.sources import load_vae

    vae = load_vae(src, device="cuda")
    enc = vae.encode(image(1024), tile="off")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    vae.decode(enc.latent, 1024, 1024, tile="off")
    peak = torch.cuda.max_memory_allocated() - base
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = (base + peak * 0.5) / total
    torch.cuda.set_per_process_memory_fraction(cap)
    try:
        dec = vae.decode(enc.latent, 1024, 1024)
        ok = dec.tiled and any("out of memory" in n for n in dec.notes) and np.isfinite(dec.pixels).all()
        row("out of memory -> tiles (memory fraction capped)", "PASS" if ok else "FAIL",
            f"untiled decode peak {peak / 2**30:.2f} GiB, cap {cap * total / 2**30:.2f} GiB; tiled={dec.tiled}; "
            f"notes: {'; '.join(dec.notes) or 'none'}")
    except Exception as exc:  # noqa: BLE001
        row("out of memory -> tiles (memory fraction capped)", "FAIL", one_line(exc, with_type=True))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        vae.close()


def psnr_column(path: Path) -> list[tuple[str, str, float]]:
    with open(path, newline="") as f:
        return sorted((r["vae"], r["image"], float(r["psnr"])) for r in csv.DictReader(f) if r["psnr"])


def torchrun_equals_one(src: Path, tmp: Path) -> None:
    from PIL import Image

    gpus = torch.cuda.device_count()
    if gpus < 2:
        row("evaluate under torchrun (NCCL) = one process", "n/a",
            "one GPU: NCCL needs a GPU per rank, so there is no second rank to compare")
        return
    data = tmp / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        px = np.clip(image(128) + 0.1 * rng.standard_normal((128, 128, 3)), 0, 1)
        Image.fromarray((px * 255).astype(np.uint8)).save(data / f"{i}.png")
    args = ["evaluate", str(data), "--vae", str(src), "--size", "128", "--batch-size", "1", "--workers", "0",
            "--metrics", "psnr,ssim", "--no-report", "--device", "cuda"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, "-m", "vaestudio", *args, "--out", str(tmp / "one")], env=env,
                         capture_output=True, text=True, timeout=240)
    many = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                           "-m", "vaestudio", *args, "--out", str(tmp / "many")], env=env, capture_output=True,
                          text=True, timeout=240)
    if one.returncode or many.returncode:
        row("evaluate under torchrun (NCCL) = one process", "FAIL",
            f"exit {one.returncode}/{many.returncode}: {(one.stderr or many.stderr).strip().splitlines()[-1:]}")
        return
    a, b = psnr_column(tmp / "one" / "rows.csv"), psnr_column(tmp / "many" / "rows.csv")
    same = [x[:2] for x in a] == [x[:2] for x in b]
    diff = max((abs(x[2] - y[2]) for x, y in zip(a, b, strict=True)), default=float("inf")) if same else float("inf")
    world = json.loads((tmp / "many" / "summary.json").read_text()).get("world_size")
    row(f"evaluate under torchrun (NCCL, {gpus} ranks) = one process", "PASS" if same and diff < 1e-3 else "FAIL",
        f"world_size {world}; {len(a)} rows; largest PSNR difference {diff:.2e} dB")


def best_of(fn, repeats: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def time_one(vae, name: str, size: int, compile_too: bool) -> None:
    """vaestudio's encode+decode against the plain diffusers model (same weights, dtype, channels-last)."""
    px = image(size)
    x = torch.from_numpy(px).permute(2, 0, 1)[None].cuda() * 2 - 1
    x = x.to(vae.dtype)[:, :, None] if name.startswith("wan") else x.to(vae.dtype).contiguous(
        memory_format=torch.channels_last)

    def ours():
        vae.decode(vae.encode(px, tile="off").latent, size, size, tile="off")

    def plain(m):
        with torch.inference_mode():
            return m.decode(m.encode(x).latent_dist.mean).sample

    try:
        t_ours, t_plain = best_of(ours), best_of(lambda: plain(vae.model))
        row(f"time {name} {size}²", "PASS", f"vaestudio {t_ours:.3f} s, plain diffusers {t_plain:.3f} s "
            f"({vae.dtype_reason})")
    except Exception as exc:  # noqa: BLE001
        row(f"time {name} {size}²", "FAIL", one_line(exc, with_type=True))
    if compile_too:
        try:
            compiled = torch.compile(vae.model)
            row(f"time {name} {size}², plain diffusers + torch.compile", "PASS",
                f"{best_of(lambda: plain(compiled)):.3f} s (after warm-up)")
        except Exception as exc:  # noqa: BLE001
            row(f"time {name} {size}², torch.compile", "FAIL", one_line(exc, with_type=True))


def timings(sources: dict[str, Path], sizes: list[int], compile_too: bool) -> None:
    from vaestudio.core.sources import load_vae

    for name, src in sources.items():
        vae = load_vae(src, device="cuda")
        for size in sizes:
            time_one(vae, name, size, compile_too)
        vae.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512 only")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing was checked", file=sys.stderr)
        return 3
    t0 = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sources = {n: build(n, tmp) for n in ("sd", "sdxl", "flux2", "wan2.1")}
        for check in (lambda: auto_dtypes(sources), lambda: nan_upcast(tmp), lambda: oom_tiles(sources["sd"]),
                      lambda: torchrun_equals_one(sources["sd"], tmp),
                      lambda: timings({k: sources[k] for k in ("sd", "flux2", "wan2.1")},
                                      [512] if args.quick else [512, 1024], os.environ.get("GPU_CHECK_COMPILE") == "1")):
            try:
                check()
            except Exception as exc:  # noqa: BLE001  one failed check must not hide the others
                row("(a check crashed)", "FAIL", one_line(exc, with_type=True))
    print(f"GPU: {torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB), "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; {time.perf_counter() - t0:.0f} s in all\n")
    print("| check | result | seen |\n|---|---|---|")
    for check, result, seen in ROWS:
        print(f"| {check} | {result} | {seen.replace('|', '/')} |")
    return 1 if any(r == "FAIL" for _, r, _ in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
