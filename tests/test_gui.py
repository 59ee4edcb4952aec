"""The real window, offscreen, driven with pytest-qt: drops, VAEs, noise, A/B, cancel, close, errors."""

from __future__ import annotations

import pickle
import time

import numpy as np
from helpers.data import mnist_folder, photo
from helpers.gui import drop, make_window
from PIL import Image
from PySide6.QtCore import QThread


def wait_result(qtbot, win, timeout=30000):
    qtbot.waitUntil(lambda: win.session.result is not None, timeout=timeout)


def test_drop_vae_file_and_images(qtbot, win, tmp_path, ldm_file):
    a, b = photo(tmp_path, "a.png"), photo(tmp_path, "b.png", (33, 47), 1)
    assert win.windowTitle().startswith("vaestudio")
    drop(win, [ldm_file, a, b])
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    wait_result(qtbot, win)
    ins = win.inspector
    assert ins.compare.reconstruction.data.shape == (40, 56, 3)
    assert ins.compare.difference.data is not None
    assert ins.latents.channel_count() == 4
    assert ins.nav_label.text().startswith("1 / 2")
    assert ins.metrics.psnr.text().endswith("dB") and ins.metrics.latent_shape.text() == "4 x 5 x 7"
    assert "community_vae" in ins.vae_panel.info.text()
    win.session.set_result(None)
    win.session.step(1)
    wait_result(qtbot, win)
    assert ins.compare.reconstruction.data.shape == (33, 47, 3)


def test_noise_slider_updates_output_without_reencoding(qtbot, win, tmp_path, vae_dir):
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    ins = win.inspector
    clean = win.session.result.decoded.copy()
    enc = win.session.encoded
    ins.noise.strength.setChecked(True)
    ins.noise.slider.setValue(600)
    qtbot.waitUntil(lambda: ins.noise.snr.text() != "SNR: -", timeout=5000)  # the instant preview
    qtbot.waitUntil(lambda: win.session.result.label.startswith("Noised"), timeout=30000)
    assert not np.allclose(win.session.result.decoded, clean)
    assert win.session.encoded is enc  # the encode was cached, not repeated
    ins.noise.timestep.setChecked(True)
    qtbot.waitUntil(lambda: "timestep" in win.session.result.label, timeout=30000)
    ins.noise.off.setChecked(True)
    qtbot.waitUntil(lambda: win.session.result.label == "Reconstruction", timeout=30000)
    np.testing.assert_allclose(win.session.result.decoded, clean)


def test_swap_vae_and_ab_compare(qtbot, win, tmp_path, vae_dir, ldm_file):
    ins = win.inspector
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    first = win.session.vae
    win.session.set_result(None)
    ins.vae_panel.recent.setCurrentIndex(-1)
    win.session.load_vae(str(ldm_file))  # swapping re-runs the current image
    qtbot.waitUntil(lambda: win.session.vae is not first and win.session.result is not None, timeout=30000)
    assert "community_vae" in ins.vae_panel.info.text()
    assert ins.vae_panel.recent.count() == 2  # both remembered for one-click swapping
    win.session.load_vae(str(vae_dir), slot="b")
    qtbot.waitUntil(lambda: ins.compare.reconstruction_b.isVisible(), timeout=30000)
    assert ins.metrics.b.text().endswith(tuple("0123456789"))
    ins.clear_b()
    assert not ins.compare.reconstruction_b.isVisible()
    ins.vae_panel.family_changed.emit("sdxl")
    qtbot.waitUntil(lambda: "family: sdxl" in ins.vae_panel.info.text(), timeout=10000)
    ins.vae_panel.family_changed.emit("flux")  # 16 channels: refused, and the window stays usable
    qtbot.waitUntil(lambda: "16 latent channels" in win.last_error, timeout=5000)


def test_worker_cancel_and_latest_request_wins(qtbot, win):
    from vaestudio.core.errors import Cancelled

    runner = win.runner
    results = []

    def slow(tag, *, progress, should_stop):
        for _ in range(500):
            if should_stop():
                raise Cancelled()
            time.sleep(0.01)
        return tag

    runner.start("job", slow, "first", on_result=results.append)
    runner.start("job", slow, "second", on_result=results.append)  # cancels the first
    qtbot.waitUntil(runner.idle, timeout=15000)
    assert results == ["second"]
    cancelled = []
    runner.start("job", slow, "third", on_result=results.append, on_cancel=lambda: cancelled.append(1))
    runner.cancel("job")
    qtbot.waitUntil(runner.idle, timeout=5000)
    assert results == ["second"]
    assert cancelled == [1]  # a job the user cancelled reports back, so its panel can go back to rest


def test_cancel_button_stops_an_encode(qtbot, win, tmp_path, vae_dir):
    ins = win.inspector
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.session.prefs.tile = "on"
    win.session.vae.encode_tile, win.session.vae.tile_overlap = 32, 16  # many tiles: a long job
    win.open_images([str(photo(tmp_path, size=(256, 256)))])
    qtbot.waitUntil(lambda: "encode" in win.runner.running and ins.cancel_btn.isEnabled(), timeout=5000)
    ins.cancel_btn.click()
    qtbot.waitUntil(win.runner.idle, timeout=10000)
    assert win.session.result is None and not ins.cancel_btn.isEnabled()


def test_closing_mid_job_leaves_no_thread(qtbot, tmp_path):
    from vaestudio.core.errors import Cancelled

    w = make_window(tmp_path)
    w.show()
    started = []

    def forever(*, progress, should_stop):
        started.append(QThread.currentThread())
        while not should_stop():
            time.sleep(0.01)
        raise Cancelled()

    w.runner.start("long", forever)
    qtbot.waitUntil(lambda: bool(started), timeout=5000)
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 5
    assert not w.runner.busy()
    assert started[0].isFinished()


def test_corrupt_image_and_hostile_vae_show_errors_and_window_stays_usable(qtbot, win, tmp_path, vae_dir):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": Evil()}, fh, protocol=2)
    drop(win, [evil])
    qtbot.waitUntil(lambda: "refused" in win.last_error, timeout=10000)
    assert not (tmp_path / "PWNED").exists()
    assert win.session.vae is None
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    win.open_images([str(bad)])
    qtbot.waitUntil(lambda: "bad.png" in win.last_error, timeout=10000)
    # still usable: a real VAE and image work afterwards
    win.session.load_vae(str(vae_dir))
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)


def test_exports_and_failed_export(qtbot, win, tmp_path, vae_dir):
    win.session.load_vae(str(vae_dir))
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    for what in ("recon", "diff", "strip", "heatmaps"):
        win.save_export(what, str(tmp_path / f"{what}.png"))
    qtbot.waitUntil(win.runner.idle, timeout=10000)
    for what in ("recon", "diff", "strip", "heatmaps"):
        assert Image.open(tmp_path / f"{what}.png").size[0] > 0
    assert Image.open(tmp_path / "strip.png").size == (56 * 3, 40)
    win.save_export("latents", str(tmp_path / "lat.safetensors"))
    qtbot.waitUntil(lambda: (tmp_path / "lat.safetensors").exists() and not win.runner.busy(), timeout=10000)
    from safetensors.torch import load_file

    assert tuple(load_file(str(tmp_path / "lat.safetensors"))["latent"].shape) == (4, 5, 7)
    win.save_export("recon", str(tmp_path / "missing_dir" / "x.png"))
    qtbot.waitUntil(lambda: "could not save" in win.last_error, timeout=10000)


def test_mnist_studio_train_pause_stop_save_and_inspect(qtbot, win, tmp_path):
    data, x = mnist_folder(tmp_path)
    tab = win.training
    tab.controls.data_dir.setText(str(data))
    tab.controls.epochs.setValue(200)
    tab.controls.batch.setValue(32)
    tab.controls.hidden.setValue(32)
    tab.controls.latent.setValue(2)
    tab.controls.start_btn.click()
    qtbot.waitUntil(lambda: len(tab.plots.step_x) > 5, timeout=30000)  # the live curve gains points
    qtbot.waitUntil(lambda: len(tab.plots.history) >= 1, timeout=30000)
    tab.controls.pause_btn.click()
    assert tab.controls.pause_btn.text() == "Resume"
    time.sleep(0.3)
    qtbot.wait(200)
    n = len(tab.plots.step_x)
    qtbot.wait(400)
    assert len(tab.plots.step_x) == n  # paused: no new steps
    tab.controls.stop_btn.click()
    qtbot.waitUntil(lambda: tab.controls.start_btn.isEnabled(), timeout=10000)
    assert tab.controls.start_btn.text() == "Continue"
    ckpt = tmp_path / "studio.safetensors"
    tab.save_checkpoint(str(ckpt))
    qtbot.waitUntil(ckpt.is_file, timeout=10000)
    tab.controls.inspect_btn.click()
    ins = win.inspector
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=10000)
    assert win.session.vae is not None and win.session.vae.info.architecture == "mnist"
    Image.fromarray(255 - x[0]).save(tmp_path / "digit.png")
    win.open_images([str(tmp_path / "digit.png")])
    wait_result(qtbot, win)
    assert ins.latents.channel_count() == 1 and win.session.encoded.latent.shape == (2,)
    tab.interpolate()
    qtbot.waitUntil(lambda: tab.plots.explore_img.image is not None, timeout=10000)
    tab.traverse()
    qtbot.waitUntil(lambda: "dimension" in tab.plots.explore_label.text, timeout=10000)
