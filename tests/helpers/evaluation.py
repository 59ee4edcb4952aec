"""What the evaluation tests share: real photo crops, reading rows and summaries, comparing JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_IMAGES
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "retina.jpg", "color.png", "rocket.jpg")
CROP = 256
TIMING = {"seconds", "encode_s", "decode_s"}


def photo_sources() -> list[Path]:
    import skimage

    bundled = Path(skimage.__file__).parent / "data"
    out = sorted(SHARED_IMAGES.glob("*")) if SHARED_IMAGES.is_dir() else []
    out += [bundled / n for n in SKIMAGE_PHOTOS if (bundled / n).is_file()]
    return out


def make_crops(root: Path, limit: int = 300, stride: int = 96) -> list[Path]:
    """Real photos cut into CROPxCROP crops, one folder per photo: a few hundred images."""
    cuts = []
    for src in photo_sources():
        a = np.asarray(Image.open(src).convert("RGB"))
        h, w = a.shape[:2]
        for y in range(0, h - CROP + 1, stride):
            for x in range(0, w - CROP + 1, stride):
                cuts.append((src, y, x))
    step = max(1, math.ceil(len(cuts) / limit))
    cuts = cuts[::step][:limit]
    out, cache = [], {}
    for src, y, x in cuts:
        if src not in cache:
            cache.clear()
            cache[src] = np.asarray(Image.open(src).convert("RGB"))
        d = root / f"{src.parent.name}-{src.stem}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"crop_{y:04d}_{x:04d}.png"
        Image.fromarray(cache[src][y : y + CROP, x : x + CROP]).save(p, compress_level=1)
        out.append(p)
    return out


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def comparable_rows(path: Path) -> dict[tuple[str, str], dict]:
    return {(r["image"], r["source"]): {k: v for k, v in r.items() if k not in TIMING} for r in read_rows(path)}


def comparable_summary(path: Path) -> dict:
    s = json.loads(path.read_text())
    s.pop("run")
    return s


def assert_close_json(a, b, rel=1e-9, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close_json(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_json(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=rel, abs=1e-12), path
    else:
        assert a == b, path
