"""The five analyses (issue 13) at the default size with an SD-sized VAE, against the bare model calls they need.

Builds an SD1-shaped AutoencoderKL (block_out_channels 128,256,512,512, layers_per_block 2, random weights),
saves it as a diffusers folder, loads it with ``load_vae`` and runs each analysis with its defaults on the
astronaut photo resized to the CLI's default ``--size`` (256). The baseline is what the analysis cannot avoid:
the same plain diffusers encode/decode calls, executed in the same process and alternated with the analysis
(so neither gets a quieter machine), e.g. drift = 10 x (encode + decode), noise = encode + 11 decodes, seams =
encode + decode + every tile decode. The ratio shows what the analysis adds (metrics, FFTs, blending). Then the
whole ``vaestudio analyze ...`` command (start, load, run, write PNG and CSV), in wall-clock time and as CPU time
divided by the threads: on a busy shared machine the latter estimates the wall time on an idle one. The target is
under a minute each.

    python benchmarks/bench_analyses.py [--repeats 1] [--image PATH] [--size N] [--no-cli]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "images" / "astronaut.png"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--no-cli", action="store_true", help="skip timing the whole command")
    ap.add_argument("--size", type=int, default=None, help="image size (default: the CLI's default)")
    args = ap.parse_args()
    from bench_reconstruct import sd_vae
    from diffusers import AutoencoderKL

    from vaestudio.cli.analyze import DEFAULT_SIZE
    from vaestudio.core.analyses import drift, robustness, scale, seams, spectrum
    from vaestudio.core.analyses.common import drive
    from vaestudio.core.images import load_image
    from vaestudio.core.sources import load_vae
    from vaestudio.core.tiling import tile_starts

    size = args.size or DEFAULT_SIZE
    image = load_image(args.image, size=size)
    px = image.pixels
    h, w = px.shape[:2]
    tmp = Path(tempfile.mkdtemp())
    model = sd_vae()
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp / "vae")
    del model

    # -- the baseline: the same model calls in plain diffusers, executed --------------------------------
    plain = AutoencoderKL.from_pretrained(tmp / "vae").eval()
    x = torch.from_numpy(px).permute(2, 0, 1)[None] * 2 - 1

    def enc():
        return plain.encode(x).latent_dist.mean

    def dec(z):
        return plain.decode(z).sample

    def plain_seams():
        z = enc()
        dec(z)
        hl, wl = z.shape[-2:]
        for t in seams.DEFAULT_TILES:
            for o in seams.DEFAULT_OVERLAPS:
                for y in tile_starts(hl, t // 8, o // 8):
                    for x0 in tile_starts(wl, t // 8, o // 8):
                        dec(z[..., y: y + t // 8, x0: x0 + t // 8])

    def plain_drift():
        for _ in range(drift.DEFAULT_ROUNDS):
            dec(enc())

    def plain_noise():
        z = enc()
        for _ in range(robustness.DEFAULT_STEPS + 1):
            dec(z)

    baseline = {
        "drift": (plain_drift, f"{drift.DEFAULT_ROUNDS} x (encode + decode)"),
        "seams": (plain_seams, f"encode + decode + the tile decodes (tiles {','.join(map(str, seams.DEFAULT_TILES))}, "
                               f"overlaps {','.join(map(str, seams.DEFAULT_OVERLAPS))})"),
        "spectrum": (lambda: dec(enc()), "encode + decode"),
        "noise": (plain_noise, f"encode + {robustness.DEFAULT_STEPS + 1} decodes"),
        "scale": (enc, "encode"),
    }
    vae = load_vae(tmp / "vae", device="cpu")
    runs = {"drift": lambda: drift.run_drift(vae, px), "seams": lambda: seams.run_seams(vae, px),
            "spectrum": lambda: spectrum.run_spectrum(vae, px), "noise": lambda: robustness.run_noise(vae, px),
            "scale": lambda: scale.run_scale(vae, px)}
    times: dict[str, dict[str, list[tuple[float, float]]]] = {k: {"plain": [], "ours": [], "cli": []} for k in runs}
    load0 = os.getloadavg()[0]

    def timed(fn) -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        return time.perf_counter() - t0, time.process_time() - c0

    def command(name: str) -> tuple[float, float]:
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, "-m", "vaestudio", "analyze", name, args.image, "--vae", str(tmp / "vae"),
                        "--out", str(tmp / "out"), "--device", "cpu", "--size", str(size)], check=True, capture_output=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter() - t0, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)

    for r in range(args.repeats):
        for name, make in runs.items():  # plain and ours alternate, so neither gets a quieter machine
            order = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
            for who in order:
                if who == "plain":
                    with torch.no_grad():
                        times[name]["plain"].append(timed(baseline[name][0]))
                else:
                    times[name]["ours"].append(timed(lambda make=make: drive(make())))
            if not args.no_cli:
                times[name]["cli"].append(command(name))
            print(f"{name}: done", file=sys.stderr, flush=True)
    threads = torch.get_num_threads()
    print(f"SD-sized VAE: {n_params / 1e6:.1f}M parameters, {Path(args.image).name} at --size {size} "
          f"({w}x{h}), torch {torch.__version__}, {threads} threads, {os.cpu_count()} cores, load average "
          f"{load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end, {args.repeats} repeat(s) (median)\n")
    print("| analysis (defaults) | bare model calls | plain diffusers calls (s) | vaestudio analysis (s) | ratio | "
          f"whole `vaestudio analyze` command (s) | whole command, CPU time / {threads} threads (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")

    def med(xs, i):
        return statistics.median(x[i] for x in xs) if xs else math.nan

    for name in runs:
        t = times[name]
        b, o = med(t["plain"], 0), med(t["ours"], 0)
        print(f"| {name} | {baseline[name][1]} | {b:.1f} | {o:.1f} | {o / b:.2f} | {med(t['cli'], 0):.1f} | "
              f"{med(t['cli'], 1) / threads:.1f} |")

if __name__ == "__main__":
    main()
