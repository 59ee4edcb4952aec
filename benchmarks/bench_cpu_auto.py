"""``--dtype auto`` against ``--dtype fp32`` on this CPU, whole commands (issue 18).

Builds the SD-sized AutoencoderKL (84M parameters, random weights; the one bench_reconstruct.py uses) as a
single LDM-key file and times, alternating fp32 and auto so that neither gets a warmer machine:
  - reconstruct: the whole `vaestudio reconstruct` of the photo at --size (load, encode, decode, metrics, PNGs)
  - evaluate:    `vaestudio evaluate` of --images photos at --eval-size, images per second from its wall time
  - analyze:     `vaestudio analyze noise` of the photo at --eval-size (an analysis that encodes and decodes)
and, separately, one Adam step of the MNIST VAE in fp32 and under bf16 autocast (MNIST training stays fp32).
Prints a markdown table: median seconds, auto/fp32 (below 1: auto is faster), what auto chose and the CPU.

    python benchmarks/bench_cpu_auto.py [--repeats 3] [--size 512] [--eval-size 256] [--images 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dtype import SHARED  # noqa: E402
from bench_reconstruct import sd_vae  # noqa: E402
from machine import cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VAESTUDIO = [sys.executable, "-m", "vaestudio"]


def write_sd_file(path: Path) -> None:
    from safetensors.torch import save_file

    from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm

    model = sd_vae()
    save_file({k: v.contiguous() for k, v in diffusers_to_ldm(model.state_dict()).items()}, str(path))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, every thread: steadier than wall on a shared machine)
    and the standard output of one command."""
    t0, c0 = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return seconds, cpu, done.stdout


def mnist_step_ms(autocast: bool, steps: int = 30) -> float:
    from vaestudio.core.mnist.model import loss_terms, make_model

    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(128, 784)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            recon, mu, logvar = model(x)
            loss = loss_terms(recon.float(), x, mu.float(), logvar.float())[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[5:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=512, help="reconstruct's --size (default 512)")
    ap.add_argument("--eval-size", type=int, default=256, help="evaluate's and analyze's --size (default 256)")
    ap.add_argument("--images", type=int, default=8, help="photos in the evaluation (default 8)")
    args = ap.parse_args(argv)
    photo = SHARED / "images" / "astronaut.png"
    photos = sorted((SHARED / "images").glob("*.png")) + sorted((SHARED / "images").glob("*.jpg"))
    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vae = tmp / "sd_vae.safetensors"
        write_sd_file(vae)
        data = tmp / "data"
        data.mkdir()
        for i in range(args.images):
            src = photos[i % len(photos)]
            shutil.copy(src, data / f"{i:02d}{src.suffix}")

        def commands(dtype: str) -> dict[str, list[str]]:
            out = tmp / f"out_{dtype}"
            shutil.rmtree(out, ignore_errors=True)
            common = ["--vae", str(vae), "--dtype", dtype]
            return {
                "reconstruct": [*VAESTUDIO, "reconstruct", str(photo), *common, "--size", str(args.size),
                                "--out", str(out / "r"), "--json"],
                "evaluate": [*VAESTUDIO, "evaluate", str(data), *common, "--size", str(args.eval_size),
                             "--out", str(out / "e"), "--metrics", "psnr,ssim", "--no-report", "--json"],
                "analyze": [*VAESTUDIO, "analyze", "noise", str(photo), *common, "--size", str(args.eval_size),
                            "--out", str(out / "a"), "--steps", "4"],
            }

        times: dict[str, dict[str, list[float]]] = {}
        cpu: dict[str, dict[str, list[float]]] = {}
        reason = ""
        for _ in range(args.repeats):
            for dtype in ("fp32", "auto"):
                for name, cmd in commands(dtype).items():
                    seconds, used, stdout = timed(cmd)
                    times.setdefault(name, {}).setdefault(dtype, []).append(seconds)
                    cpu.setdefault(name, {}).setdefault(dtype, []).append(used)
                    if name == "reconstruct" and dtype == "auto":
                        reason = json.loads(stdout.strip().splitlines()[-1]).get("dtype_reason", "")
    print(f"SD-sized AutoencoderKL (84M parameters) single file; auto chose: {reason}")
    print(f"reconstruct at {args.size}², evaluate of {args.images} photos and analyze noise at {args.eval_size}²; "
          f"median of {args.repeats}, fp32 and auto alternating\n")
    print("| command | fp32 s | auto s | auto/fp32 | fp32 CPU s | auto CPU s | auto/fp32 (CPU) | fp32 images/s | auto images/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, by in times.items():
        f32, auto = statistics.median(by["fp32"]), statistics.median(by["auto"])
        c32, cauto = statistics.median(cpu[name]["fp32"]), statistics.median(cpu[name]["auto"])
        rate = (f"{args.images / f32:.2f} | {args.images / auto:.2f}" if name == "evaluate" else "| ")
        print(f"| {name} | {f32:.2f} | {auto:.2f} | {auto / f32:.2f} | {c32:.1f} | {cauto:.1f} | {cauto / c32:.2f} | {rate} |")
    f32, b16 = mnist_step_ms(False), mnist_step_ms(True)
    print(f"\nMNIST VAE, one Adam step at batch 128: fp32 {f32:.1f} ms, bf16 autocast {b16:.1f} ms "
          f"(bf16/fp32 {b16 / f32:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
