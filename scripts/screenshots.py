"""Screenshots of the real window for the README (docs/img/*.png).

No pretrained SD weights can be shipped or downloaded here, so the script first trains a small
AutoencoderKL for a minute on crops of the bundled sample photos (a real, if blurry, VAE), then
opens the real main window offscreen, loads that VAE as a single .safetensors file in LDM layout,
drops a photo on the window, adds latent noise, and grabs the window. It also trains the MNIST
studio for a few epochs on ../shared/data/mnist when present.

    QT_QPA_PLATFORM=offscreen python scripts/screenshots.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
SAMPLES = ROOT / "vaestudio" / "resources" / "samples"


def train_small_vae(seconds: float, path: Path) -> None:
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm
    from vaestudio.core.images import load_image

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1)
    photos = [torch.from_numpy(load_image(p).pixels).permute(2, 0, 1) * 2 - 1 for p in sorted(SAMPLES.glob("*.png"))]
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        batch = []
        for _ in range(8):
            img = photos[rng.integers(len(photos))]
            y, x = rng.integers(0, img.shape[1] - 64), rng.integers(0, img.shape[2] - 64)
            batch.append(img[:, y : y + 64, x : x + 64])
        x = torch.stack(batch)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (rec - x).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    print(f"trained the screenshot VAE for {step} steps, L1 {loss.item():.3f}")
    save_file({"first_stage_model." + k: v.contiguous() for k, v in diffusers_to_ldm(vae.state_dict()).items()},
              str(path), metadata={"modelspec.architecture": "stable-diffusion-v1/vae"})


def wait(app, cond, timeout=120):
    end = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() > end:
            raise TimeoutError


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    vae_file = tmp / "small-vae.safetensors"
    train_small_vae(args.seconds, vae_file)

    from PySide6.QtCore import QSettings

    from vaestudio.ui.app import make_app
    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import Store

    app = make_app()
    win = MainWindow(store=Store(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)))
    win.resize(1500, 950)
    win.show()
    ins = win.inspector
    ins.load_vae(str(vae_file))
    wait(app, lambda: ins.vae is not None)
    win.open_images([str(SAMPLES / "chelsea.png")])
    wait(app, lambda: ins.result is not None)
    app.processEvents()
    win.grab().save(str(OUT / "inspector.png"))
    ins.noise.timestep.setChecked(True)
    ins.noise.slider.setValue(350)
    wait(app, lambda: ins.result is not None and ins.result.label.startswith("Noised"))
    app.processEvents()
    win.grab().save(str(OUT / "inspector-noise.png"))
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if mnist.exists():
        tab = win.training
        win.tabs.setCurrentWidget(tab)
        tab.data_dir.setText(str(mnist))
        tab.epochs.setValue(5)
        tab.start_btn.click()
        wait(app, lambda: not tab.is_running() and len(tab.history) == 5, timeout=300)
        tab.interpolate()
        app.processEvents()
        win.grab().save(str(OUT / "mnist-studio.png"))
    win.close()
    print("wrote", ", ".join(p.name for p in OUT.glob("*.png")))
    sys.exit(0)


if __name__ == "__main__":
    main()
