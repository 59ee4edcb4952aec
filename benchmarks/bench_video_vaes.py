"""Issue 20's video VAEs on a clip: vaestudio's ``encode_clip`` + ``decode_clip`` against plain diffusers'
``encode`` (mean) + ``decode`` of the whole clip, each side in its own process (peak RSS is that process's).

A model of the published config (random weights: no pretrained weights are reachable here) is saved once as
a diffusers folder (the parent then spawns the two sides, so build its models small or it hogs memory); vaestudio loads it through its registry, diffusers with ``from_pretrained``. Both run
fp32 (``VAESTUDIO_CPU_BF16=0``) on the same clip, trimmed to the VAE's 1 + k x factor frames.

    python benchmarks/bench_video_vaes.py [--frames 17] [--size 256] [--archs ltx-video,ltx2-video,mochi,cosmos] [--small]
    python benchmarks/bench_video_vaes.py --interleave 2 ...   # both sides in one process, alternating (times only)

On a shared, loaded CPU one run per side in its own process is mostly noise; ``--interleave N`` alternates the
two sides N times on the same loaded models and prints each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {"ltx-video": ("AutoencoderKLLTXVideo", "ltx-video-0.9.5"), "ltx2-video": ("AutoencoderKLLTX2Video", "ltx2-2.0"),
           "mochi": ("AutoencoderKLMochi", "mochi"), "cosmos": ("AutoencoderKLCosmos", "cosmos-1.0")}
FACTOR = {"ltx-video": 8, "ltx2-video": 8, "mochi": 6, "cosmos": 8}


def clip(frames: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.stack([np.clip(np.stack([(xx + 0.05 * t) % 1, yy, 0.5 + 0.1 * rng.standard_normal(xx.shape)], 2), 0, 1)
                     for t in range(frames)]).astype(np.float32)


def child(side: str, folder: str, frames: int, size: int) -> None:
    import torch

    x = clip(frames, size)
    t0 = time.perf_counter()
    if side == "ours":
        from vaestudio.core.sources import load_vae

        vae = load_vae(Path(folder))
        t1 = time.perf_counter()
        enc = vae.encode_clip(x, tile="off")
        t2 = time.perf_counter()
        out = vae.decode_clip(enc.latent, size, size, tile="off").frames
    else:
        import diffusers

        cfg = json.loads((Path(folder) / "config.json").read_text())
        model = getattr(diffusers, cfg["_class_name"]).from_pretrained(folder).eval()
        t1 = time.perf_counter()
        video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
        with torch.inference_mode():
            z = model.encode(video).latent_dist.mode()
            t2 = time.perf_counter()
            temb = torch.zeros(1) if cfg.get("timestep_conditioning") else None
            dec = model.decode(z, temb).sample if "LTX" in cfg["_class_name"] else model.decode(z).sample
        out = (dec[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    t3 = time.perf_counter()
    np.save(Path(folder).parent / f"{side}.npy", out)
    # VmHWM: this process's own peak (ru_maxrss keeps the parent's from before exec on Linux)
    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
    rss = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load": t1 - t0, "encode": t2 - t1, "decode": t3 - t2, "peak_rss_mib": rss}))


def interleave(name: str, folder: Path, frames: int, size: int, n: int) -> None:
    import diffusers
    import torch

    from vaestudio.core.sources import load_vae

    os.environ["VAESTUDIO_CPU_BF16"] = "0"
    vae = load_vae(folder)
    cls = json.loads((folder / "config.json").read_text())["_class_name"]
    plain = getattr(diffusers, cls).from_pretrained(folder).eval()
    x = clip(frames, size)
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    for i in range(n):
        t0 = time.perf_counter()
        enc = vae.encode_clip(x, tile="off")
        vae.decode_clip(enc.latent, size, size, tile="off")
        t1 = time.perf_counter()
        with torch.inference_mode():
            z = plain.encode(video).latent_dist.mode()
            plain.decode(z, torch.zeros(1)) if plain.config.get("timestep_conditioning") else plain.decode(z)
        t2 = time.perf_counter()
        print(f"{name} run {i + 1}: ours {t1 - t0:.1f} s, plain {t2 - t1:.1f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--archs", default=",".join(CONFIGS))
    ap.add_argument("--small", action="store_true", help="the tiny configs of bench_archs (a smoke run)")
    ap.add_argument("--interleave", type=int, default=0, help="both sides in one process, alternating N times")
    ap.add_argument("--child", nargs=4, metavar=("SIDE", "FOLDER", "FRAMES", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return 0
    import diffusers
    import torch
    from bench_archs import build, configs

    from vaestudio.core.archs._common import shipped_config

    env = dict(os.environ, VAESTUDIO_CPU_BF16="0")
    small = configs(True)
    print(f"| VAE ({args.size}x{args.size}, CPU fp32, {torch.get_num_threads()} threads) | frames | params | plain enc+dec "
          "| ours enc+dec | ours / plain | plain peak RSS | ours peak RSS | max difference |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.archs.split(","):
        cls_name, shipped = CONFIGS[name]
        cfg = small[name][1] if args.small else shipped_config(shipped)
        model = build(cls_name, cfg)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        frames = 1 + (args.frames - 1) // FACTOR[name] * FACTOR[name]
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(Path(tmp) / "vae")
            del model
            if args.interleave:
                interleave(name, Path(tmp) / "vae", frames, args.size, args.interleave)
                continue
            res = {}
            for side in ("plain", "ours"):
                cmd = [sys.executable, __file__, "--child", side, str(Path(tmp) / "vae"), str(frames), str(args.size)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if done.returncode:
                    print(f"{name} {side} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    break
                res[side] = json.loads(done.stdout.strip().splitlines()[-1])
            if len(res) < 2:
                continue
            diff = float(np.abs(np.load(Path(tmp) / "plain.npy") - np.load(Path(tmp) / "ours.npy")).max())
        p, o = res["plain"], res["ours"]
        pt, ot = p["encode"] + p["decode"], o["encode"] + o["decode"]
        print(f"| {name} (`{cls_name}`) | {frames} | {params:.0f}M | {pt:.1f} s | {ot:.1f} s | {ot / pt:.2f} | "
              f"{p['peak_rss_mib']:.0f} MiB | {o['peak_rss_mib']:.0f} MiB | {diff:.1e} |", flush=True)
    del diffusers
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
