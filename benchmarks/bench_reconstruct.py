"""Plain diffusers (the seed's reference loop) against vaestudio on an SD-sized VAE.

Builds an SD1.x-shaped AutoencoderKL (84M parameters, random weights), saves it as a diffusers
folder, and times on the same 512x512 photo, alternating the two so that neither gets a warmer
machine:
  - load:      AutoencoderKL.from_pretrained           vs vaestudio.core.sources.load_vae
  - roundtrip: encode + decode with torch.no_grad()    vs SdVae.encode + SdVae.decode
  - cli:       the whole `vaestudio reconstruct` command (load, encode, decode, metrics, PNGs)
Prints a markdown table with the ratio (ours / plain; below 1 means we are faster).

    python benchmarks/bench_reconstruct.py [--repeats 3] [--image PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "images" / "astronaut.png"


def sd_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
    ).eval()


def plain_roundtrip(vae, pixels):
    """The seed's reference code, as diffusers documents it."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        image = vae.decode(latents / vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    args = ap.parse_args()
    from diffusers import AutoencoderKL

    from vaestudio.core.images import load_image
    from vaestudio.core.sources import load_vae

    pixels = load_image(args.image).pixels
    assert pixels.shape[:2] == (512, 512), "use a 512x512 image"
    tmp = Path(tempfile.mkdtemp())
    model = sd_vae()
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp / "vae")
    del model
    times = {k: ([], []) for k in ("load", "roundtrip", "cli")}
    for r in range(args.repeats):
        for ours_first in ((True, False) if r % 2 == 0 else (False, True)):
            if ours_first:
                t0 = time.perf_counter()
                vae = load_vae(tmp / "vae")
                times["load"][1].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                enc = vae.encode(pixels)
                vae.decode(enc.latent, enc.height, enc.width)
                times["roundtrip"][1].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "vaestudio", "reconstruct", args.image, "--vae",
                                str(tmp / "vae"), "--out", str(tmp / "out")], check=True, capture_output=True)
                times["cli"][1].append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                plain = AutoencoderKL.from_pretrained(tmp / "vae")
                times["load"][0].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                plain_roundtrip(plain, pixels)
                times["roundtrip"][0].append(time.perf_counter() - t0)
                code = (
                    "import sys, numpy as np, torch; from PIL import Image; from diffusers import AutoencoderKL\n"
                    f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from bench_reconstruct import plain_roundtrip\n"
                    f"vae = AutoencoderKL.from_pretrained({str(tmp / 'vae')!r})\n"
                    f"px = np.asarray(Image.open({args.image!r}).convert('RGB'), np.float32) / 255\n"
                    "out = plain_roundtrip(vae, px)[0].permute(1, 2, 0).numpy()\n"
                    f"Image.fromarray((out * 255 + 0.5).astype(np.uint8)).save({str(tmp / 'plain.png')!r})\n"
                )
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
                times["cli"][0].append(time.perf_counter() - t0)
    print(f"SD-sized VAE: {n_params / 1e6:.1f}M parameters, image {args.image} (512x512), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats (median)\n")
    print("| step | plain diffusers (s) | vaestudio (s) | ratio ours/plain |")
    print("|---|---:|---:|---:|")
    labels = {"load": "load the VAE", "roundtrip": "encode + decode", "cli": "whole process: load, run, write PNG"}
    for k, (plain_t, ours_t) in times.items():
        a, b = statistics.median(plain_t), statistics.median(ours_t)
        print(f"| {labels[k]} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    _ = np


if __name__ == "__main__":
    main()
