"""``vaestudio self-test``: check that this install (development or bundle) really works.

Offscreen, it opens the main window, builds a tiny VAE, writes it to a temporary file in the LDM
single-file layout and loads it back through the real file loader, reconstructs a bundled sample
photo through the window's own worker path, loads a tiny autoencoder pair written as .pth pickles
(the safe loader, no diffusers) and reconstructs with it, writes a tiny clip with PyAV, reads it back and
reconstructs it with that pair, runs a few training steps of the MNIST VAE
on generated digits, closes the window cleanly, and prints what it did with timings. Exit code 0 only if every
step passed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from vaestudio.core.errors import one_line


def samples_dir() -> Path:
    return Path(__file__).resolve().parent / "resources" / "samples"


def run_self_test(json_out: bool = False) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    steps: list[dict] = []
    state: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="vaestudio-selftest-"))

    def step(name: str, fn) -> bool:
        t0 = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none is fatal
            detail = one_line(exc, with_type=True)
            if os.environ.get("VAESTUDIO_DEBUG"):
                traceback.print_exc()
            ok = False
        rec = {"step": name, "ok": ok, "seconds": round(time.perf_counter() - t0, 3), "detail": detail or ""}
        steps.append(rec)
        if not json_out:
            print(f"[{'ok' if ok else 'FAIL'}] {name} ({rec['seconds']:.2f} s){': ' + str(detail) if detail else ''}",
                  flush=True)
        return ok

    def open_window():
        from PySide6.QtCore import QSettings

        from vaestudio.ui.app import make_app
        from vaestudio.ui.main_window import MainWindow
        from vaestudio.ui.settings import Store

        state["app"] = app = make_app()
        store = Store(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
        state["win"] = win = MainWindow(store=store)
        win.show()
        app.processEvents()
        return f"window '{win.windowTitle()}' shown ({app.platformName()})"

    def build_vae():
        import torch
        from diffusers import AutoencoderKL
        from safetensors.torch import save_file

        from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm

        torch.manual_seed(0)
        model = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                              up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=32)
        path = tmp / "tiny-vae.safetensors"
        save_file({"first_stage_model." + k: v.contiguous() for k, v in diffusers_to_ldm(model.state_dict()).items()},
                  str(path))
        state["vae_file"] = path
        return f"{sum(p.numel() for p in model.parameters()):,} parameters written to {path.name}"

    def load_vae():
        win, app = state["win"], state["app"]
        win.session.load_vae(str(state["vae_file"]))
        _wait(app, lambda: win.session.vae is not None or win.last_error, 60)
        if win.session.vae is None:
            raise RuntimeError(win.last_error)
        info = win.session.vae.info
        return f"{info.format}, {info.key_layout} keys, family {info.family}, {info.latent_channels} channels"

    def reconstruct():
        win, app = state["win"], state["app"]
        sample = samples_dir() / "chelsea.png"
        win.open_images([str(sample)])
        _wait(app, lambda: win.session.result is not None or win.last_error, 120)
        if win.session.result is None:
            raise RuntimeError(win.last_error)
        r = win.session.result
        return f"{sample.name} {r.decoded.shape[1]}x{r.decoded.shape[0]}, PSNR {r.metrics.psnr:.2f} dB"

    def tiny_autoencoder():
        import torch

        from vaestudio.core.archs.taesd import make_decoder, make_encoder
        from vaestudio.core.images import load_image
        from vaestudio.core.pipeline import reconstruct
        from vaestudio.core.sources import load_vae

        torch.manual_seed(0)
        torch.save(make_encoder(4, "sd").state_dict(), tmp / "taesd_encoder.pth")
        torch.save(make_decoder(4, "sd").state_dict(), tmp / "taesd_decoder.pth")
        vae = load_vae(tmp / "taesd_decoder.pth")  # the pair is found from either file
        rec = reconstruct(vae, load_image(samples_dir() / "coffee.png", size=128))
        return (f"{vae.info.architecture} pair, family {vae.info.family}, latent {tuple(rec.encoded.raw.shape)}, "
                f"decoded {rec.decoded.shape[1]}x{rec.decoded.shape[0]}")

    def clip():
        import numpy as np

        from vaestudio.core.clip_pipeline import reconstruct_clip
        from vaestudio.core.sources import load_vae
        from vaestudio.core.video import read_clip, write_video

        ramp = np.linspace(0.1, 0.9, 5, dtype=np.float32)[:, None, None, None]
        frames = np.broadcast_to(ramp, (5, 32, 48, 3)).copy()
        frames[:, 8:16, 8:24, 0] = 1.0
        codec = write_video(tmp / "clip.mp4", frames, 8)
        got = read_clip(tmp / "clip.mp4")
        if got.frames.shape != frames.shape or abs(got.fps - 8) > 1e-6:
            raise RuntimeError(f"wrote {frames.shape} at 8 fps, read {got.frames.shape} at {got.fps} fps")
        rec = reconstruct_clip(load_vae(tmp / "taesd_decoder.pth"), got)
        return (f"{codec} wrote and PyAV read back 5 frames 48x32 at 8 fps; reconstructed, PSNR "
                f"{rec.metrics.psnr_mean:.2f} dB, flicker {rec.metrics.flicker:.4f}")

    def train():
        import numpy as np

        from vaestudio.core.mnist.train import EpochRecord, StepRecord, TrainConfig, Trainer

        rng = np.random.default_rng(0)
        x = np.zeros((256, 28, 28), np.float32)
        for i in range(len(x)):
            r, c = rng.integers(6, 22, size=2)
            x[i, r - 5 : r + 5, c - 1 : c + 2] = 1.0
        tr = Trainer(TrainConfig(epochs=2, batch_size=64), x[:192].reshape(-1, 784), x[192:].reshape(-1, 784))
        recs = list(tr.run())
        steps_done = sum(isinstance(r, StepRecord) for r in recs)
        last = [r for r in recs if isinstance(r, EpochRecord)][-1]
        if not np.isfinite(last.train_loss):
            raise RuntimeError("non-finite loss")
        tr.save(tmp / "mnist.safetensors")
        return f"{steps_done} steps, held-out loss {last.heldout_loss:.1f} nats, checkpoint written"

    def close():
        win = state["win"]
        win.close()
        state["app"].processEvents()
        if win.runner.busy():
            raise RuntimeError("a worker thread is still running after close")
        return "closed, no worker threads left"

    ok = step("open the main window", open_window)
    ok = step("build a tiny VAE and write it as a .safetensors file", build_vae) and ok
    if ok:
        ok = step("load it through the file loader", load_vae) and ok
        ok = step("reconstruct a sample image", reconstruct) and ok
    ok = step("load a tiny autoencoder pair (.pth, read safely) and reconstruct", tiny_autoencoder) and ok
    ok = step("write, read (PyAV) and reconstruct a tiny clip", clip) and ok
    ok = step("train the MNIST VAE for a few steps", train) and ok
    if "win" in state:
        ok = step("close the window", close) and ok
    total = round(sum(s["seconds"] for s in steps), 3)
    if json_out:
        print(json.dumps({"ok": ok, "seconds": total, "frozen": bool(getattr(sys, "frozen", False)),
                          "steps": steps}))
    else:
        print(f"self-test {'passed' if ok else 'FAILED'} in {total:.2f} s"
              f"{' (bundle)' if getattr(sys, 'frozen', False) else ''}")
    return 0 if ok else 1


def _wait(app, cond, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not cond():
        app.processEvents()
        time.sleep(0.005)
        if time.monotonic() > end:
            raise TimeoutError(f"no result within {timeout:.0f} s")
