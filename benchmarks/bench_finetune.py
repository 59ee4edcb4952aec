"""Fine-tuning the real taef2 decoder on a domain it did not see: `vaestudio finetune` against a plain PyTorch loop.

The domain: MNIST digits (../shared/data/mnist, the first --images of the test set) enlarged to 256x256 with
bicubic resampling and written as RGB PNGs: grey strokes on flat black, which the FLUX.2 tiny autoencoder
reconstructs well but not perfectly. The held-out images are chosen by the CLI's own rule (`--val 0.1`: a
fixed hash of each path, `finetune.data.split_data`).

In one run, each in its own process (so each peak RSS is its own):
  - vaestudio: the core generator `finetune.run.finetune` (what `vaestudio finetune DATA --vae
    taef2_encoder.pth --part decoder --lr LR --val 0.1 --every E` runs), stopped at the first validation
    whose held-out PSNR is --target dB above the base's, or before the --minutes budget would be passed;
  - plain: the same decoder and frozen encoder (taesd.py's modules, loaded from the same .pth files), the same
    images, crops and flips in the same order (the order and crop functions are vaestudio's, so both see the
    same pixels), the same batch, Adam at the same learning rate, the L1 loss, `loss.backward()`,
    `opt.step()`: no validation, no checkpoints, no EMA; for the steps the vaestudio run took.
The training losses of the two are compared step by step (the check that they did the same work).

Throughput is training steps per second: vaestudio's counts only its steps (the time between events, not
its validations and checkpoints, which are reported on their own); the whole run's wall time is what the
--minutes budget holds.

    python benchmarks/bench_finetune.py                     # the issue's run: up to 10 minutes
    python benchmarks/bench_finetune.py --minutes 2 --images 80 --every 5   # a quick look
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = SHARED / "weights" / "taef2_encoder.pth"
MNIST = SHARED / "mnist" / "t10k-images-idx3-ubyte.gz"
VAL = "0.1"


def prepare(folder: Path, n: int) -> list[str]:
    """The first ``n`` MNIST test digits, enlarged to 256x256 (bicubic) as RGB PNGs."""
    from PIL import Image

    from vaestudio.core.mnist.data import read_idx

    digits = read_idx(MNIST)[:n]
    folder.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(digits):
        Image.fromarray(d).resize((256, 256), Image.BICUBIC).convert("RGB").save(folder / f"{i:05d}.png")
    return sorted(str(p) for p in folder.glob("*.png"))


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM: ru_maxrss carries the parent's peak over fork + exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the two children --------------------------------------------------------------------------------

def child_vaestudio(a: dict) -> dict:
    from vaestudio.core.finetune.options import (
        Checkpointed,
        FinetuneOptions,
        Started,
        StepDone,
        Stopped,
        Validated,
    )
    from vaestudio.core.finetune.run import finetune

    opts = FinetuneOptions([a["data"]], str(WEIGHTS), a["out"], steps=a["steps"], batch=a["batch"], size=a["size"],
                           lr=a["lr"], val=VAL, every=a["every"], seed=0, precision=a["precision"])
    budget = a["minutes"] * 60
    stop = {"now": False}
    t_start = time.perf_counter()
    last = t_start
    step_s, losses, vals, val_s = [], [], [], []
    setup_s, base, reached, last_interval = None, None, None, 0.0
    interval_start = t_start
    for ev in finetune(opts, should_stop=lambda: stop["now"]):
        now = time.perf_counter()
        if isinstance(ev, Started):
            setup_s = now - t_start
            interval_start = now
        elif isinstance(ev, StepDone):
            step_s.append(now - last)
            losses.append(ev.loss)
        elif isinstance(ev, Validated):
            base = ev.base["psnr"]
            vals.append({"step": ev.step, "psnr": ev.current["psnr"], "at_s": round(now - t_start, 1)})
        elif isinstance(ev, Checkpointed):
            val_s.append(now - t_start - sum(step_s) - setup_s - sum(val_s))
            last_interval, interval_start = now - interval_start, now
            gain = vals[-1]["psnr"] - base if vals else 0.0
            if gain >= a["target"] and reached is None:
                reached = vals[-1]
                stop["now"] = not a["full"]
            if now - t_start + last_interval > budget:
                stop["now"] = True
        elif isinstance(ev, Stopped) and ev.reason != "stopped":
            raise SystemExit(ev.message)
        last = now
    return {"steps": len(step_s), "step_s": step_s, "losses": losses, "vals": vals, "base_psnr": base,
            "reached": reached, "setup_s": setup_s, "val_s": val_s, "wall_s": time.perf_counter() - t_start,
            "rss": peak_rss_mib()}


def child_plain(a: dict) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    # the same modules as madebyollin's taesd.py; the order/crop functions give both loops the same pixels
    from vaestudio.core.archs.taesd.networks import make_decoder, make_encoder
    from vaestudio.core.finetune.data import random_crop, sample_item

    t_start = time.perf_counter()
    enc, dec = make_encoder(32, "flux2"), make_decoder(32, "flux2")
    enc.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    dec.load_state_dict(torch.load(str(WEIGHTS).replace("_encoder", "_decoder"), map_location="cpu", weights_only=True))
    enc.requires_grad_(False)
    images = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
              for p in a["train"]]
    opt = torch.optim.Adam(dec.parameters(), lr=a["lr"])
    amp = a["precision"] == "bf16"
    setup_s = time.perf_counter() - t_start
    step_s, losses = [], []
    for step in range(a["steps"]):
        t0 = time.perf_counter()
        first = step * a["batch"]
        x = torch.stack([random_crop(images[sample_item(0, first + j, len(images))], a["size"], 0, first + j)
                         for j in range(a["batch"])])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            with torch.no_grad():
                z = enc(x)
            loss = (dec(z).float() - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step_s.append(time.perf_counter() - t0)
    return {"steps": len(step_s), "step_s": step_s, "losses": losses, "setup_s": setup_s,
            "wall_s": time.perf_counter() - t_start, "rss": peak_rss_mib()}


def run_child(kind: str, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(args)], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} run failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load"] = (load, os.getloadavg()[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="wall budget of the vaestudio run (default 10)")
    ap.add_argument("--steps", type=int, default=100000, help="at most this many steps (default: the budget decides)")
    ap.add_argument("--images", type=int, default=400, help="MNIST digits to use (default 400; 10%% held out)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--every", type=int, default=10, help="validate every N steps (default 10)")
    ap.add_argument("--target", type=float, default=1.0, help="held-out PSNR gain to reach, dB (default 1)")
    ap.add_argument("--full", action="store_true", help="keep training after the target, to the budget or --steps")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="vaestudio's --precision; the plain loop uses bf16 autocast only for bf16")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = child_vaestudio if args.child[0] == "vaestudio" else child_plain
        print(json.dumps(fn(json.loads(args.child[1]))))
        return
    if not (WEIGHTS.is_file() and MNIST.is_file()):
        raise SystemExit(f"needs {WEIGHTS} and {MNIST}")

    from vaestudio.core.finetune.data import split_data

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        data = Path(tmp) / "mnist256"
        prepare(data, args.images)
        split = split_data([str(data)], VAL)
        common = {"batch": args.batch, "size": args.size, "lr": args.lr, "precision": args.precision}
        ours = run_child("vaestudio", {**common, "data": str(data), "out": str(Path(tmp) / "out"), "steps": args.steps,
                                       "every": args.every, "minutes": args.minutes, "target": args.target,
                                       "full": args.full})
        plain = run_child("plain", {**common, "train": split.train, "steps": ours["steps"]})
    n = ours["steps"]
    t_ours, t_plain = sum(ours["step_s"]), sum(plain["step_s"])
    diff = max(abs(a - b) for a, b in zip(ours["losses"], plain["losses"], strict=True))
    final = ours["vals"][-1]
    reached = ours["reached"]
    print(cpu_line())
    print(f"data: {args.images} MNIST digits enlarged to 256, {len(split.train)} training, {len(split.val)} held out "
          f"(--val {VAL}); batch {args.batch}, {args.size}x{args.size} crops, lr {args.lr}, L1, "
          f"precision {args.precision}, validation every {args.every} steps")
    print(f"load average: {ours['load'][0]:.2f} -> {ours['load'][1]:.2f} (vaestudio), "
          f"{plain['load'][0]:.2f} -> {plain['load'][1]:.2f} (plain)\n")
    print("| measure | plain PyTorch loop | vaestudio finetune | target |")
    print("|---|---:|---:|---:|")
    print(f"| held-out PSNR, base -> after {n} steps | - | {ours['base_psnr']:.2f} -> {final['psnr']:.2f} dB "
          f"(+{final['psnr'] - ours['base_psnr']:.2f}) | +{args.target:g} dB |")
    at = f"step {reached['step']}, {reached['at_s']:.0f} s" if reached else "not reached"
    print(f"| +{args.target:g} dB reached at (whole run's wall time) | - | {at} | <= {args.minutes:g} min |")
    print(f"| training steps/s ({n} steps) | {n / t_plain:.3f} | {n / t_ours:.3f} | ratio {t_plain / t_ours:.2f}x "
          f"(>= 0.9x) |")
    print(f"| median step | {sorted(plain['step_s'])[n // 2]:.2f} s | {sorted(ours['step_s'])[n // 2]:.2f} s | |")
    print(f"| setup (load, read data; vaestudio: + base validation) | {plain['setup_s']:.1f} s | {ours['setup_s']:.1f} s | |")
    print(f"| validations + checkpoints ({len(ours['val_s'])}) | - | {sum(ours['val_s']):.1f} s | |")
    print(f"| whole run wall | {plain['wall_s']:.1f} s | {ours['wall_s']:.1f} s | |")
    print(f"| peak RSS | {plain['rss']:.0f} MiB | {ours['rss']:.0f} MiB | |")
    print(f"\ntraining loss, largest difference between the two loops over the {n} steps: {diff:.2e}")
    print("held-out PSNR by step: " + ", ".join(f"{v['step']}: {v['psnr']:.2f}" for v in ours["vals"]))


if __name__ == "__main__":
    main()
