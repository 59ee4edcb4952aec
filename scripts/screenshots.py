"""Screenshots of the real window for the README (docs/img/*.png).

The pictures show a real VAE: the pretrained taef2 tiny autoencoder from ../shared/data/weights
(MIT licence; not shipped). A second VAE for the comparisons is trained here for a minute on crops
of the bundled sample photos (a small AutoencoderKL: real, if blurry), since no other pretrained
weights can be downloaded on the machine this runs on. The script drives the real main window:
opens the astronaut photo, adds latent noise, runs each analysis in the Analysis tab, an evaluation
in the Evaluate tab, trains the MNIST studio on ../shared/data/mnist, opens a clip (33 frames, a pan over the
photo, written here) and plays it, and grabs the window each time.

    QT_QPA_PLATFORM=offscreen python scripts/screenshots.py [--seconds 60] [--only clip]
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
SHARED = ROOT.parent / "shared" / "data"


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
    print(f"trained the comparison VAE for {step} steps, L1 {loss.item():.3f}")
    save_file({"first_stage_model." + k: v.contiguous() for k, v in diffusers_to_ldm(vae.state_dict()).items()},
              str(path), metadata={"modelspec.architecture": "stable-diffusion-v1/vae"})


def crops(folder: Path, n: int = 48) -> Path:
    """256x256 crops of the sample photos: a small dataset for the Evaluate tab."""
    import numpy as np

    from vaestudio.core.images import load_image, save_png

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(SAMPLES.glob("*.png")) + sorted((SHARED / "images").glob("*"))
    rng = np.random.default_rng(0)
    for i in range(n):
        img = load_image(sources[i % len(sources)]).pixels
        h, w = img.shape[:2]
        s = min(256, h, w)
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        save_png(img[y : y + s, x : x + s], folder / f"crop{i:03d}.png")
    return folder


def wait(app, cond, timeout=300):
    end = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() > end:
            raise TimeoutError


def grab(app, win, name: str) -> None:
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    win.grab().save(str(OUT / name))
    print("wrote", name)


def pan_clip(path: Path, frames: int = 33) -> Path:
    """A clip of the astronaut photo panned, 320x256 at 24 fps: a real video file, as users drop one."""
    import numpy as np

    from vaestudio.core.images import load_image
    from vaestudio.core.video import write_video

    photo = (load_image(SHARED / "images" / "astronaut.png").pixels * 255).round().astype(np.uint8)
    write_video(path, (photo[96:352, 4 * t:4 * t + 320] for t in range(frames)), 24)
    return path


def clip_shots(app, win, tmp: Path) -> None:
    """The clip decoding chunk by chunk, then complete and playing."""
    session, view = win.session, win.inspector.clip
    win.tabs.setCurrentWidget(win.inspector)
    win.open_images([str(pan_clip(tmp / "astronaut_pan.mp4"))])
    wait(app, lambda: session.clip_result is not None and session.clip_result.decoded >= 6)
    grab(app, win, "clip_decoding.png")
    wait(app, lambda: session.clip_result.complete, timeout=900)
    view.show_frame(0)
    view.set_playing(True)
    wait(app, lambda: view.slider.value() >= 20)
    grab(app, win, "clip_playing.png")
    view.set_playing(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--only", choices=["clip"], help="make only these screenshots")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    taef2 = SHARED / "weights" / "taef2_encoder.pth"
    if not taef2.exists():
        sys.exit(f"the real taef2 weights are needed for the screenshots: {taef2} not found")
    small = tmp / "small-vae.safetensors"
    if args.only is None:
        train_small_vae(args.seconds, small)

    from PySide6.QtCore import QSettings

    from vaestudio.ui.app import make_app
    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import Store

    app = make_app()
    win = MainWindow(store=Store(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)))
    win.resize(1500, 950)
    win.show()
    ins, session = win.inspector, win.session
    session.load_vae(str(taef2))
    wait(app, lambda: session.vae is not None)
    if args.only == "clip":
        clip_shots(app, win, tmp)
        win._close_approved = True
        win.close()
        sys.exit(0)
    image = SHARED / "images" / "astronaut.png"
    win.open_images([str(image)])
    wait(app, lambda: session.result is not None)
    ins.latents.select(5)
    grab(app, win, "inspector.png")
    ins.noise.timestep.setChecked(True)
    ins.noise.slider.setValue(350)
    wait(app, lambda: session.result is not None and session.result.label.startswith("Noised"))
    grab(app, win, "inspector-noise.png")
    ins.noise.off.setChecked(True)
    wait(app, lambda: session.result is not None and session.result.label == "Reconstruction")

    tab = win.analysis
    win.tabs.setCurrentWidget(tab)
    tab.add_source(str(small))
    for key in ("drift", "seams", "spectrum", "noise", "scale"):
        tab.kind.setCurrentIndex(tab.kind.findData(key))
        tab.run_btn.click()
        wait(app, lambda: tab.run_btn.isEnabled(), timeout=900)
        grab(app, win, f"analysis-{key}.png")

    ev = win.evaluate
    win.tabs.setCurrentWidget(ev)
    ev.data_list.clear()
    ev.add_data(str(crops(tmp / "photos-256")))
    ev.add_vae(str(small))
    ev.start_btn.click()
    wait(app, lambda: ev.start_btn.isEnabled(), timeout=1800)
    grab(app, win, "evaluate.png")

    mnist = SHARED / "mnist"
    if mnist.exists():
        from vaestudio.ui.training.controls import RunState

        t = win.training
        win.tabs.setCurrentWidget(t)
        t.controls.data_dir.setText(str(mnist))
        t.controls.epochs.setValue(5)
        t.controls.start_btn.click()
        wait(app, lambda: t.state == RunState.FINISHED)
        t.interpolate()
        wait(app, lambda: "held-out 0" in t.plots.explore_label.text)
        grab(app, win, "mnist-studio.png")
    clip_shots(app, win, tmp)
    win._close_approved = True
    win.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
