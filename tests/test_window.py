"""The window's second pass: one test per bug a user hit, and the latent view at 128 channels.

Each test drives the real window (offscreen) the way a user would and checks what is on screen.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from helpers.data import mnist_folder, photo
from helpers.gui import answer_next_dialog
from PySide6.QtCore import Qt

from vaestudio.core.pipeline import Reconstruction


def wait_result(qtbot, win, timeout=30000):
    qtbot.waitUntil(lambda: win.session.result is not None, timeout=timeout)


def load(qtbot, win, source, slot="a"):
    before = win.session.vae if slot == "a" else win.session.vae_b
    win.session.load_vae(str(source), slot=slot)
    qtbot.waitUntil(lambda: (win.session.vae if slot == "a" else win.session.vae_b) not in (None, before), timeout=30000)


def test_cancelling_a_download_returns_the_vae_panel_to_rest(qtbot, win, tmp_path, vae_dir, monkeypatch):
    from helpers.servers import serve
    from helpers.servers import slow_hub as _slow_hub

    root = tmp_path / "hub"
    shutil.copytree(vae_dir, root / "org" / "slow" / "vae")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    panel = win.inspector.vae_panel
    with serve(_slow_hub(root)) as url:
        import vaestudio.core.sources as sources

        real = sources.download_from_hub
        monkeypatch.setattr(sources, "download_from_hub",
                            lambda *a, **k: real(*a, **dict(k, endpoint=url, cache_dir=tmp_path / "cache")))
        win.session.load_vae("org/slow/vae")
        qtbot.waitUntil(lambda: panel.progress.isVisible() and panel.progress.value() > 0, timeout=20000)
        panel.cancel_btn.click()
        qtbot.waitUntil(lambda: not panel.progress.isVisible(), timeout=10000)
    assert not panel.cancel_btn.isVisible()
    assert win.session.vae is None


def test_training_state_is_explicit_and_never_blocks(qtbot, win, tmp_path):
    from vaestudio.ui.training.controls import RunState

    data, _x = mnist_folder(tmp_path)
    tab = win.training
    c = tab.controls
    c.data_dir.setText(str(data))
    c.epochs.setValue(100)
    c.batch.setValue(32)
    c.hidden.setValue(32)
    c.latent.setValue(2)
    c.start_btn.setText("Continue")  # a label is not state: Start still starts a new run
    c.start_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.RUNNING and len(tab.plots.step_x) > 3, timeout=30000)
    assert tab.plots.step_x[0] == 1  # a new run starts at step 1
    c.pause_btn.click()
    assert tab.state == RunState.PAUSED and c.pause_btn.text() == "Resume"
    t0 = time.monotonic()
    tab.stop()
    assert time.monotonic() - t0 < 0.1  # the window never waits for the worker
    qtbot.waitUntil(lambda: tab.state == RunState.STOPPED, timeout=10000)
    assert c.start_btn.text() == "Continue" and c.eta.text() == ""
    steps = tab.step
    c.start_btn.click()  # continue the same run
    qtbot.waitUntil(lambda: tab.step > steps + 3, timeout=30000)
    # the inspector's copy of the model is taken by the worker between two batches
    got = []
    tab.request_inspector_vae(got.append)
    qtbot.waitUntil(lambda: bool(got), timeout=10000)
    assert got[0] is not None and got[0].info.architecture == "mnist"
    tab.stop()
    qtbot.waitUntil(lambda: tab.state == RunState.STOPPED, timeout=10000)


def test_exports_run_in_workers(qtbot, win, tmp_path, vae_dir):
    load(qtbot, win, vae_dir)
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    out = tmp_path / "strip.png"
    win.save_export("strip", str(out))
    assert any(k.startswith("export:") for k in win.runner.running)  # composed and written off the UI thread
    qtbot.waitUntil(out.is_file, timeout=10000)


def test_views_follow_the_vae_after_leaving_the_mnist_vae(qtbot, win, tmp_path, vae_dir):
    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.model import make_model

    torch.manual_seed(0)
    win.session.set_vae(MnistVae.from_trained(make_model("mlp", 32, 2)))
    win.open_images([str(photo(tmp_path, size=(60, 90)))])
    wait_result(qtbot, win)
    ins = win.inspector
    assert ins.compare.original.data.shape == (28, 28, 3)
    win.session.set_result(None)
    load(qtbot, win, vae_dir)
    wait_result(qtbot, win)
    assert ins.compare.original.data.shape == (60, 90, 3)  # the photo again, not the 28x28 digit
    assert ins.compare.difference.data.shape == (60, 90, 3)
    view = ins.compare.original.vb.viewRect()
    assert view.width() >= 85 or view.height() >= 55  # refitted to the whole photo


def test_esc_during_a_decode_shows_the_last_complete_result(qtbot, win, tmp_path, vae_dir):
    load(qtbot, win, vae_dir)
    ins = win.inspector
    win.session.prefs.tile = "on"
    win.session.vae.encode_tile, win.session.vae.tile_overlap = 32, 16  # a slow, tiled decode
    win.open_images([str(photo(tmp_path, size=(192, 192)))])
    wait_result(qtbot, win, 60000)
    done: Reconstruction = win.session.result
    ins.noise.timestep.setChecked(True)
    ins.noise.slider.setValue(600)
    ins.noise.settled.emit()  # what the slider does once it rests
    qtbot.waitUntil(lambda: win.runner.is_running("decode"), timeout=5000)
    ins.cancel()
    qtbot.waitUntil(lambda: not win.runner.is_running("decode"), timeout=10000)
    qtbot.wait(100)
    assert win.session.result is done
    assert ins.compare.reconstruction.title.text == done.label  # not "Preview ... decoding"
    assert np.array_equal(ins.compare.difference.data, done.diff_rgb)
    assert ins.metrics.psnr.text() == f"{done.metrics.psnr:.2f} dB"


def test_b_is_decoded_like_a_and_the_wipe_can_compare_them(qtbot, win, tmp_path, vae_dir, ldm_file):
    load(qtbot, win, vae_dir)
    ins = win.inspector
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    ins.noise.strength.setChecked(True)
    ins.noise.slider.setValue(500)
    ins.noise.settled.emit()
    qtbot.waitUntil(lambda: win.session.result.noise is not None, timeout=30000)
    load(qtbot, win, ldm_file, slot="b")
    qtbot.waitUntil(lambda: win.session.result_b is not None, timeout=30000)
    assert win.session.result_b.noise is not None and win.session.result_b.noise.value == win.session.result.noise.value
    assert "Noised" in ins.compare.reconstruction_b.title.text
    assert ins.compare.wipe_mode.isVisibleTo(win) and ins.compare.wipe_mode.count() == 2
    ins.compare.wipe_mode.setCurrentIndex(1)
    ins.compare.wipe.setValue(50)
    assert ins.compare.original.title.text.startswith("Wipe: B | A")
    ins.clear_b()
    assert not ins.compare.wipe_mode.isVisibleTo(win)


def test_a_failed_open_keeps_the_current_image(qtbot, win, tmp_path):
    good = photo(tmp_path, "good.png")
    win.open_images([str(good)])
    qtbot.waitUntil(lambda: win.session.image is not None, timeout=10000)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    win.open_images([str(bad)])
    qtbot.waitUntil(lambda: "broken.png" in win.last_error, timeout=10000)
    assert win.inspector.nav_label.text() == "1 / 1: good.png"
    assert win.session.image.name == "good"


def test_slider_label_and_decoded_step_agree_after_a_vae_swap(qtbot, win, tmp_path, vae_dir):
    from conftest import ldm_state_dict, tiny_vae
    from safetensors.torch import save_file

    load(qtbot, win, vae_dir)  # SD1: DDPM, t in 0..999
    ins = win.inspector
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    ins.noise.timestep.setChecked(True)
    ins.noise.slider.setValue(547)
    flux = tmp_path / "flux_vae.safetensors"  # FLUX.1: flow matching, t in 0..1000
    save_file(ldm_state_dict(tiny_vae(latent_channels=16, quant=False)), str(flux))
    load(qtbot, win, flux)
    qtbot.waitUntil(lambda: win.session.result is not None and win.session.result.noise is not None, timeout=30000)
    step = win.session.result.noise.value
    assert step == round(0.547 * 1000)
    assert ins.noise.value_label.text() == f"t = {step:.0f} of 1000"


def test_preferences_offer_only_devices_this_machine_has(qtbot, win):
    from vaestudio.core.device import available_devices
    from vaestudio.ui.settings import Preferences, PreferencesDialog

    devices = available_devices()
    dlg = PreferencesDialog(Preferences(), win, devices=devices)
    items = [dlg.device.itemText(i) for i in range(dlg.device.count())]
    assert items == devices
    if not torch.cuda.is_available():
        assert "cuda" not in items
        stale = PreferencesDialog(Preferences(device="cuda"), win, devices=devices)
        assert stale.device.currentText() == "cuda"
        assert stale.device.itemData(stale.device.currentIndex(), 3) == "not available on this machine"
        stale.close()
    dlg.close()


def test_device_errors_in_the_window_point_to_preferences(qtbot, win, vae_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    win.session.prefs.device = "cuda"
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: "CUDA" in win.last_error, timeout=20000)
    assert "File > Preferences" in win.last_error


def test_window_messages_say_how_to_fix_things_in_the_window(qtbot, win, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    tab = win.training
    tab.controls.data_dir.setText(str(empty))
    tab.controls.start_btn.click()
    qtbot.waitUntil(lambda: "no mnist data" in win.last_error, timeout=20000)
    assert "--download" not in win.last_error and "--data" not in win.last_error
    assert "download if missing" in win.last_error and "Browse" in win.last_error


def test_quitting_during_training_asks_first(qtbot, tmp_path):
    from helpers.gui import make_window

    from vaestudio.ui.training.controls import RunState

    w = make_window(tmp_path)
    qtbot.addWidget(w)
    w.show()
    data, _x = mnist_folder(tmp_path)
    c = w.training.controls
    c.data_dir.setText(str(data))
    c.epochs.setValue(100)
    c.start_btn.click()
    qtbot.waitUntil(lambda: w.training.state == RunState.RUNNING and w.training.step > 2, timeout=30000)
    asked = answer_next_dialog("Cancel")
    w.close()
    assert asked and "since it was last saved" in asked[0]
    assert w.isVisible() and w.training.is_running()  # Cancel: nothing happened
    asked = answer_next_dialog("Discard")
    w.close()
    assert asked and not w.isVisible()
    qtbot.waitUntil(lambda: not w.runner.busy(), timeout=10000)


def test_closing_during_an_encode_does_not_ask(qtbot, tmp_path, vae_dir):
    from helpers.gui import make_window

    w = make_window(tmp_path)
    w.show()
    w.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: w.session.vae is not None, timeout=20000)
    w.session.prefs.tile = "on"
    w.session.vae.encode_tile, w.session.vae.tile_overlap = 32, 16  # a long encode
    w.open_images([str(photo(tmp_path, size=(256, 256)))])
    qtbot.waitUntil(lambda: "encode" in w.runner.running, timeout=10000)
    t0 = time.monotonic()
    w.close()  # no question: nothing is lost
    assert not w.isVisible() and time.monotonic() - t0 < 5


def test_studio_pictures_are_labelled_and_legible(qtbot, win, tmp_path):
    from vaestudio.ui.training.controls import RunState
    from vaestudio.ui.training.plots import IntegerAxis

    data, _x = mnist_folder(tmp_path)
    tab = win.training
    c = tab.controls
    c.data_dir.setText(str(data))
    c.epochs.setValue(2)
    c.batch.setValue(64)
    c.hidden.setValue(32)
    c.latent.setValue(2)
    c.start_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.FINISHED, timeout=60000)
    assert c.eta.text() == ""  # no stale time-left text after the end
    assert "0 1 2 3 4 5 6 7 8 9" in tab.plots.recon_label.text  # digits by class, not sample indices
    assert len(tab.plots.pca_legend.items) == 10
    assert tab.plots.epoch_plot.getAxis("bottom").labelText == "epoch"
    axis = IntegerAxis("bottom")
    ticks = [v for _step, vals in axis.tickValues(0.6, 2.4, 400) for v in vals]
    assert ticks and all(float(v).is_integer() for v in ticks)
    c.interp_a.setValue(1)
    c.interp_b.setValue(7)
    tab.interpolate()
    assert "explore" in win.runner.running  # torch runs in a worker, not on the UI thread
    qtbot.waitUntil(lambda: "held-out 1 to a held-out 7" in tab.plots.explore_label.text, timeout=10000)
    # the exploration picture sits right under its caption: both in one layout cell
    assert tab.plots.explore_label.parentItem() is tab.plots.explore_vb.parentItem()


def test_vector_latent_statistics_say_something(qtbot, win, tmp_path):
    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.model import make_model

    win.session.set_vae(MnistVae.from_trained(make_model("mlp", 32, 20)))
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    stats = win.inspector.latents.stats
    assert stats.headers == ["dimension", "value"] and stats.rowCount() == 20


def test_layout_stays_put_and_controls_read_right(qtbot, win, tmp_path, vae_dir):
    ins = win.inspector
    side = ins.vae_panel.parentWidget()
    width = side.width()
    long_name = tmp_path / ("a-very-long-folder-name-that-goes-on-and-on-" * 3)
    shutil.copytree(vae_dir, long_name)
    load(qtbot, win, long_name)
    win.open_images([str(photo(tmp_path))])
    wait_result(qtbot, win)
    assert side.width() == width  # the image views do not jump
    assert ins.vae_panel.recent.isEnabled() and ins.vae_panel.recent.currentIndex() == 0
    assert ins.noise.value_label.text() == "off" and not ins.noise.slider.isEnabled()
    ins.noise.strength.setChecked(True)
    ins.noise.slider.setValue(0)
    ins.noise.settled.emit()
    qtbot.waitUntil(lambda: win.session.result.noise is not None, timeout=30000)
    assert ins.noise.snr.text() == "SNR: no noise"
    assert "clean latent" in ins.latents.caption.text()
    win._remember_dir("images", str(tmp_path / "x.png"))
    assert win._dir("images") == str(tmp_path)  # file dialogs open where the user was last


def test_clicking_a_heat_map_selects_its_channel(qtbot):
    from PySide6.QtCore import QPointF

    from vaestudio.ui.latents import LatentPanel

    panel = LatentPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 500)
    panel.show()
    z = np.random.default_rng(0).standard_normal((16, 8, 8)).astype(np.float32)
    panel.set_latents(z)
    x, y = panel.mosaic.cell_origin(5)
    scene_pos = panel.vb.mapViewToScene(QPointF(x + 4, y + 4))

    class Click:
        def scenePos(self):
            return scene_pos

    panel._clicked(Click())
    assert panel.selected == 5 and panel.ab_channel.value() == 5
    assert panel.hist.plotItem.titleLabel.text == "histogram of channel 5"


def test_latent_view_with_128_channels(qtbot):
    from vaestudio.ui.latents import LatentPanel

    panel = LatentPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 500)
    panel.show()
    rng = np.random.default_rng(1)
    z = rng.standard_normal((128, 32, 48)).astype(np.float32) * np.linspace(0.1, 3, 128)[:, None, None]
    t0 = time.perf_counter()
    panel.set_latents(z)
    qtbot.wait(10)
    assert panel.channel_count() == 128 and panel.stats.rowCount() == 128
    m = panel.mosaic
    assert m.cell_h == 32 and m.cell_w == 48  # each map at the latent's aspect ratio
    assert len(m.order) == 128
    panel.order.setCurrentIndex(1)  # by variance: the widest channel first
    assert panel.mosaic.order[0] == 127
    panel.select(100)
    assert panel.table.currentIndex().isValid()
    panel.table.sortByColumn(2, Qt.SortOrder.DescendingOrder)
    first = panel.proxy.index(0, 0).data()
    assert first == "127"  # sorted by std
    assert time.perf_counter() - t0 < 30  # generous: behaviour, not a benchmark


def test_flux2_latents_default_to_the_vae_channels(qtbot):
    from vaestudio.core.tensors import patchify
    from vaestudio.ui.latents import LatentPanel

    panel = LatentPanel()
    qtbot.addWidget(panel)
    raw = torch.randn(32, 16, 16)
    panel.set_latents(patchify(raw).numpy(), raw.numpy())
    assert panel.current_space() == "raw" and panel.channel_count() == 32
    panel.space.setCurrentIndex(0)
    assert panel.channel_count() == 128
