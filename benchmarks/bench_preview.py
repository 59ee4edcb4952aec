"""Time to the first full-size picture after an encode (or a noise change), three ways, in one run.

An SD-sized AutoencoderKL (SD1 config, random weights: speed does not depend on the values) has
encoded the 512x512 astronaut; then, from its latent:

- the full decoder (what the window shows in the end);
- a tiny decoder (TAESD architecture, 4 channels, as Preferences > Preview decoder would load);
- the latent-to-RGB approximation, enlarged to full size (what the window shows without one).

    python benchmarks/bench_preview.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    from bench_reconstruct import sd_vae

    from vaestudio.core.archs.taesd import make_decoder
    from vaestudio.core.images import load_image
    from vaestudio.core.latents import latent_preview
    from vaestudio.core.sources import load_vae
    from vaestudio.ui.jobs import upscale

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sd_vae().save_pretrained(tmp / "sd")
    torch.manual_seed(0)
    torch.save(make_decoder(4, "sd").state_dict(), tmp / "taesd_decoder.pth")
    image = ROOT.parent / "shared" / "data" / "images" / "astronaut.png"
    img = load_image(image) if image.exists() else None
    pixels = img.pixels if img is not None else np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
    vae = load_vae(tmp / "sd")
    tiny = load_vae(tmp / "taesd_decoder.pth", halves=("decoder",))
    enc = vae.encode(pixels)
    h, w = pixels.shape[:2]
    ways = {
        "full decoder (SD-sized, 84M parameters)": lambda: vae.decode(enc.latent, h, w),
        "tiny decoder (TAESD, 1.2M parameters)": lambda: tiny.decode(enc.latent, h, w),
        "latent-to-RGB, enlarged": lambda: upscale(latent_preview(enc.latent, "sd1"), h, w),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):  # interleaved, so neighbouring load hits every way alike
        for name, fn in ways.items():
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            assert out.shape == (h, w, 3)
    base = statistics.median(times[next(iter(ways))])
    print(f"{h}x{w} image, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats "
          "(median)\n")
    print("| first full-size picture from | seconds | vs full decode |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.3f} | {m / base:.3f} |")


if __name__ == "__main__":
    main()
