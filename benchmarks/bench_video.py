"""A clip through a Wan 2.1-sized VAE: vaestudio's chunked clip path against plain diffusers, same run.

A random-weight ``AutoencoderKLWan`` with the published Wan 2.1 config (base_dim 96, 16 latent channels,
~127 M parameters) is written once as a diffusers folder; each side then runs in a fresh process (so
peak RSS is its own): diffusers ``encode(clip).latent_dist.mean`` + ``decode(mean)`` of the whole clip,
vaestudio ``encode_clip`` + ``iter_decode_clip`` (chunked causal), and vaestudio streamed
(``iter_round_trip_clip``: each chunk decoded as soon as it is encoded, what the window runs); "first
frame" is the time from the start of the encode to the first reconstructed frame, what the window waits for. Both in fp32 unless ``--dtype`` says otherwise; the table also gives
the largest difference between the two reconstructions. With ``--repeats N`` the two sides run N times
alternately (diffusers first, then vaestudio first, ...) and each time is the best of its N (on a
shared machine other work slows whichever side it meets); the load average is printed with the table.
Prints a Markdown table and the CPU.

    python benchmarks/bench_video.py [--frames 33] [--size 256] [--dtype fp32] [--repeats 1]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("diffusers", "vaestudio", "vaestudio-streamed")


def rss_mib() -> float:
    """The resident set size now (Linux), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def clip(frames: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    out = [np.stack([(xx + 4 * t) % size / size, yy / size, 0.5 + 0.4 * np.sin((xx + yy + 3 * t) / 9)], axis=2)
           for t in range(frames)]
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def child(side: str, folder: Path, frames: int, size: int, dtype: str, out: Path) -> dict:
    import torch

    x = clip(frames, size)
    if side == "diffusers":
        from diffusers import AutoencoderKLWan

        model = AutoencoderKLWan.from_pretrained(folder).eval()
        loaded = rss_mib()
        video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
        with torch.no_grad():
            t0 = time.perf_counter()
            mean = model.encode(video).latent_dist.mean
            t1 = time.perf_counter()
            rec = model.decode(mean).sample
            t2 = time.perf_counter()
        frames_out = (rec[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
        first = None
    elif side == "vaestudio":
        from vaestudio.core.sources import load_vae

        vae = load_vae(folder, dtype=dtype)
        loaded = rss_mib()
        t0 = time.perf_counter()
        enc = vae.encode_clip(x)
        t1 = time.perf_counter()
        parts, first = [], None
        for _, part in vae.iter_decode_clip(enc.latent, size, size):
            if first is None:
                first = time.perf_counter() - t0
            parts.append(part)
        t2 = time.perf_counter()
        frames_out = np.concatenate(parts)
    else:  # streamed: each chunk decoded as soon as it is encoded
        from vaestudio.core.sources import load_vae

        vae = load_vae(folder, dtype=dtype)
        loaded = rss_mib()
        t0 = time.perf_counter()
        rt = vae.iter_round_trip_clip(x)
        parts, first = [], None
        for _, part in rt:
            if first is None:
                first = time.perf_counter() - t0
            parts.append(part)
        t2 = time.perf_counter()
        t1 = t0 + rt.encoding.seconds  # its encoder steps; the rest is the decoder's, between them
        frames_out = np.concatenate(parts)
    np.save(out, frames_out)
    return {"side": side, "encode_s": t1 - t0, "decode_s": t2 - t1, "first_frame_s": first,
            "loaded_mib": loaded, "peak_mib": peak_mib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dtype", default="fp32", help="vaestudio's --dtype (diffusers runs fp32)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per side, alternating; the best is shown")
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.folder, a.frames, a.size, a.dtype, a.out)))
        return

    import torch
    from diffusers import AutoencoderKLWan

    from vaestudio.core.archs._common import shipped_config

    cfg = {k: v for k, v in shipped_config("wan2.1").items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "wan21"
        torch.manual_seed(0)
        model = AutoencoderKLWan(**cfg)
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder)
        del model
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        load = [os.getloadavg()[0]]
        for r in range(max(1, a.repeats)):
            for side in SIDES[:: 1 if r % 2 == 0 else -1]:
                out = Path(tmp) / f"{side}.npy"
                cmd = [sys.executable, __file__, "--child", side, "--folder", str(folder), "--frames", str(a.frames),
                       "--size", str(a.size), "--dtype", a.dtype, "--out", str(out)]
                res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if res.returncode != 0:
                    sys.exit(f"{side} failed: {res.stderr.strip().splitlines()[-1:]}")
                runs[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
                load.append(os.getloadavg()[0])
        rows = [{k: min(r[k] for r in rs) if k != "side" and rs[0][k] is not None else rs[0][k] for k in rs[0]}
                for rs in runs.values()]
        totals = {side: [r["encode_s"] + r["decode_s"] for r in rs] for side, rs in runs.items()}
        ref = np.load(Path(tmp) / "diffusers.npy")
        diff = {side: float(np.abs(ref - np.load(Path(tmp) / f"{side}.npy")).max()) for side in SIDES[1:]}

    print(f"Wan 2.1-sized AutoencoderKLWan ({params / 1e6:.0f} M parameters, random weights), "
          f"{a.frames} frames {a.size}x{a.size}; vaestudio --dtype {a.dtype}, diffusers fp32")
    print(f"{cpu_line()}; "
          f"1-minute load average {min(load):.1f} to {max(load):.1f} during the runs; best of {max(1, a.repeats)}\n")
    print("| | encode s | decode s | total s | first frame s | RSS after load MiB | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        first = "-" if r["first_frame_s"] is None else f"{r['first_frame_s']:.1f}"
        print(f"| {r['side']} | {r['encode_s']:.1f} | {r['decode_s']:.1f} | {r['encode_s'] + r['decode_s']:.1f} "
              f"| {first} | {r['loaded_mib']:.0f} | {r['peak_mib']:.0f} |")
    for side, d in diff.items():
        print(f"\nlargest |{side} - diffusers| over the reconstructed frames: {d:.2e}")
    if a.repeats > 1:
        print("every run's encode + decode s: " + "; ".join(
            f"{side} {', '.join(f'{t:.1f}' for t in ts)}" for side, ts in totals.items()))


if __name__ == "__main__":
    main()
