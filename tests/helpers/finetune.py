"""Shared by the fine-tuning tests (tests/test_finetune*.py): training images, a tiny SD file, the options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import ldm_state_dict, tiny_vae
from PIL import Image
from safetensors.torch import save_file

from vaestudio.core.finetune.options import FinetuneOptions
from vaestudio.core.finetune.run import finetune


def make_images(folder: Path, n: int = 4, h: int = 40, w: int = 48, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        base = np.stack([xx, yy, 0.5 + 0.4 * np.sin(6 * xx + i)], -1)
        a = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        p = folder / f"img{i}.png"
        Image.fromarray((a * 255).astype(np.uint8)).save(p)
        out.append(p)
    return out


def sd_file(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = tiny_vae()
    p = tmp_path / "sd1_vae.safetensors"
    save_file(ldm_state_dict(model), str(p))
    return p, model


def options(tmp_path, source, **kw) -> FinetuneOptions:
    data = kw.pop("data", None) or [str(tmp_path / "imgs")]
    base = dict(steps=4, batch=2, size=32, lr=1e-3, every=2, val=str(tmp_path / "val"))
    return FinetuneOptions(data, str(source), str(tmp_path / "out"), **{**base, **kw})


def run_all(opts, **kw) -> list:
    return list(finetune(opts, **kw))
