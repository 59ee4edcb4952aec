"""Today's large VAEs: vaestudio against the plain diffusers class, encode + decode at 512x512 on this CPU.

For each architecture a model of the real size and shape (random weights: no pretrained weights are
reachable here) is saved as a diffusers folder; vaestudio loads it through its registry (the code path
real files take) and the plain diffusers class is the same model object. The two are timed on the same
image, alternating, with one small warm-up each; the best of ``--repeats`` is reported.

  - ours:  ``vae.encode(pixels)`` (padding, precision policy, model space) + ``vae.decode(latent)``
  - plain: ``model.encode(x)`` (mean) + ``model.decode(z)`` under ``torch.inference_mode`` (Wan: as a
           video of one frame, as the image pipelines call it)

    python benchmarks/bench_archs.py [--size 512] [--repeats 2] [--archs flux2,wan2.1,...] [--small]

``--small`` uses the tiny test configs (a smoke run in seconds). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DC_TYPES = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3


def configs(small: bool) -> dict[str, tuple[str, dict]]:
    """name -> (diffusers class, config): the published configs, or tiny ones with ``small``."""
    if small:
        return {
            "flux2": ("AutoencoderKLFlux2", dict(block_out_channels=(32,) * 4, layers_per_block=1)),
            "wan2.1": ("AutoencoderKLWan", dict(base_dim=8, z_dim=16)),
            "qwen-image": ("AutoencoderKLQwenImage", dict(base_dim=8, z_dim=16)),
            "wan2.2": ("AutoencoderKLWan", dict(base_dim=8, decoder_base_dim=12, z_dim=48, is_residual=True,
                                                in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                                                latents_mean=[0.0] * 48, latents_std=[1.0] * 48)),
            "dc-ae": ("AutoencoderDC", dict(latent_channels=32, attention_head_dim=8, encoder_block_types=DC_TYPES,
                                            decoder_block_types=DC_TYPES, encoder_block_out_channels=(8, 16, 16, 32, 32, 32),
                                            decoder_block_out_channels=(8, 16, 16, 32, 32, 32),
                                            encoder_layers_per_block=(1,) * 6, decoder_layers_per_block=(1,) * 6,
                                            upsample_block_type="interpolate", downsample_block_type="Conv",
                                            scaling_factor=0.41407)),
            "hunyuan-image": ("AutoencoderKLHunyuanImage", dict(
                in_channels=3, out_channels=3, latent_channels=64, block_out_channels=(32, 32, 32, 64, 64, 128),
                layers_per_block=1, spatial_compression_ratio=32, sample_size=256, scaling_factor=0.75289)),
            "qwen-image-2.1": ("AutoencoderKLQwenImage21", dict(base_dim=8, decoder_base_dim=12, num_res_blocks=1)),
            "asymmetric": ("AsymmetricAutoencoderKL", dict(
                down_block_types=("DownEncoderBlock2D",) * 4, down_block_out_channels=(32,) * 4, layers_per_down_block=1,
                up_block_types=("UpDecoderBlock2D",) * 4, up_block_out_channels=(32, 32, 64, 64), layers_per_up_block=2,
                norm_num_groups=8)),
            "consistency-decoder": ("ConsistencyDecoderVAE", dict(
                encoder_block_out_channels=(32,) * 4, encoder_layers_per_block=1, encoder_norm_num_groups=8,
                decoder_block_out_channels=(32, 32, 64, 64), decoder_layers_per_block=1, decoder_norm_num_groups=8)),
            "cogvideox": ("AutoencoderKLCogVideoX", dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1)),
            "ltx-video": ("AutoencoderKLLTXVideo", dict(block_out_channels=(8, 8, 16, 16), decoder_block_out_channels=(8, 8, 16, 16),
                                                        layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5)),
            "ltx2-video": ("AutoencoderKLLTX2Video", dict(block_out_channels=(8, 16, 16, 32), decoder_block_out_channels=(8, 16, 32),
                                                          layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 4,
                                                          decoder_causal=False, spatial_compression_ratio=32,
                                                          temporal_compression_ratio=8)),
            "mochi": ("AutoencoderKLMochi", dict(encoder_block_out_channels=(32, 32, 32, 64),
                                                 decoder_block_out_channels=(32, 32, 32, 64), layers_per_block=(1,) * 5)),
            "cosmos": ("AutoencoderKLCosmos", dict(encoder_block_out_channels=(16, 32, 32, 32),
                                                   decode_block_out_channels=(32,) * 4, num_layers=1)),
            "hunyuan-video": ("AutoencoderKLHunyuanVideo", dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1)),
            "hunyuan-video-15": ("AutoencoderKLHunyuanVideo15", dict(block_out_channels=(8, 16, 16, 32, 64),
                                                                     layers_per_block=1)),
        }
    from vaestudio.core.archs._common import shipped_config

    return {
        "flux2": ("AutoencoderKLFlux2", shipped_config("flux2")),
        "wan2.1": ("AutoencoderKLWan", shipped_config("wan2.1")),
        "qwen-image": ("AutoencoderKLQwenImage", shipped_config("qwen-image")),
        "wan2.2": ("AutoencoderKLWan", shipped_config("wan2.2")),
        "dc-ae": ("AutoencoderDC", shipped_config("dc-ae-f32c32-sana")),
        "hunyuan-image": ("AutoencoderKLHunyuanImage", shipped_config("hunyuan-image-2.1")),
        "qwen-image-2.1": ("AutoencoderKLQwenImage21", shipped_config("qwen-image-2.1")),
        "asymmetric": ("AsymmetricAutoencoderKL", shipped_config("asymmetric-kl-x-1-5")),
        "consistency-decoder": ("ConsistencyDecoderVAE", shipped_config("consistency-decoder")),  # 2 UNet steps
        "cogvideox": ("AutoencoderKLCogVideoX", shipped_config("cogvideox")),
        "ltx-video": ("AutoencoderKLLTXVideo", shipped_config("ltx-video-0.9.5")),
        "ltx2-video": ("AutoencoderKLLTX2Video", shipped_config("ltx2-2.0")),
        "mochi": ("AutoencoderKLMochi", shipped_config("mochi")),
        "cosmos": ("AutoencoderKLCosmos", shipped_config("cosmos-1.0")),
        "hunyuan-video": ("AutoencoderKLHunyuanVideo", shipped_config("hunyuan-video")),
        "hunyuan-video-15": ("AutoencoderKLHunyuanVideo15", shipped_config("hunyuan-video-1.5")),
    }


def build(cls_name: str, cfg: dict):
    import diffusers

    torch.manual_seed(0)
    model = getattr(diffusers, cls_name).from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def plain(model, x: torch.Tensor):
    video = type(model).__name__ in ("AutoencoderKLWan", "AutoencoderKLQwenImage", "AutoencoderKLQwenImage21",
                                     "AutoencoderKLCogVideoX", "AutoencoderKLHunyuanVideo",
                                     "AutoencoderKLHunyuanVideo15", "AutoencoderKLLTXVideo", "AutoencoderKLLTX2Video",
                                     "AutoencoderKLMochi", "AutoencoderKLCosmos")
    with torch.inference_mode():
        t0 = time.perf_counter()
        if model.config.get("in_channels") == 4:  # Qwen-Image 2.1: RGBA, opaque (as its pipeline feeds RGB)
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        inp = x[:, :, None] if video else x
        out = model.encode(inp)
        z = out.latent if hasattr(out, "latent") else out.latent_dist.mode()  # the mean (Cosmos: the latent)
        t1 = time.perf_counter()
        if model.config.get("timestep_conditioning"):  # LTX: the pipelines' default decode_timestep 0
            model.decode(z, torch.zeros(1))
        else:
            model.decode(z)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def ours(vae, pixels: np.ndarray):
    t0 = time.perf_counter()
    enc = vae.encode(pixels, tile="off")
    t1 = time.perf_counter()
    vae.decode(enc.latent, pixels.shape[0], pixels.shape[1], tile="off")
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--archs", default="flux2,wan2.1,qwen-image,wan2.2,dc-ae,hunyuan-image,qwen-image-2.1,asymmetric,consistency-decoder,cogvideox,hunyuan-video,hunyuan-video-15,ltx-video,ltx2-video,mochi,cosmos")
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    from diffusers.utils import logging as dlog

    from vaestudio.core.sources import load_vae

    dlog.set_verbosity_error()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:args.size, 0:args.size] / args.size
    pixels = np.clip(np.stack([xx, yy, 0.5 + 0.1 * rng.standard_normal(xx.shape)], 2), 0, 1).astype(np.float32)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1
    warm = pixels[:64, :64]
    rows = []
    cfgs = configs(args.small)
    for name in args.archs.split(","):
        cls_name, cfg = cfgs[name]
        model = build(cls_name, cfg)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(Path(tmp) / "vae")
            vae = load_vae(Path(tmp) / "vae")
        ours(vae, warm)
        plain(model, torch.from_numpy(warm).permute(2, 0, 1)[None] * 2 - 1)
        best_o, best_p = [float("inf")] * 2, [float("inf")] * 2
        for _ in range(args.repeats):
            o, p = ours(vae, pixels), plain(model, x)
            best_o = [min(a, b) for a, b in zip(best_o, o, strict=True)]
            best_p = [min(a, b) for a, b in zip(best_p, p, strict=True)]
        rows.append((name, cls_name, params, *best_p, *best_o))
        print(f"{name}: plain {best_p[0]:.2f}+{best_p[1]:.2f}s ours {best_o[0]:.2f}+{best_o[1]:.2f}s", file=sys.stderr)
        del vae, model
    print(f"| VAE ({args.size}x{args.size}, CPU, {torch.get_num_threads()} threads) | diffusers class | params | "
          "plain encode | plain decode | ours encode | ours decode | ours / plain (enc+dec) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, cls_name, params, pe, pd, oe, od in rows:
        print(f"| {name} | `{cls_name}` | {params:.1f}M | {pe:.2f} s | {pd:.2f} s | {oe:.2f} s | {od:.2f} s | "
              f"{(oe + od) / (pe + pd):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
