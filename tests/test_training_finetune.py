"""The training tab's fine-tune: a tiny SD-shaped VAE fine-tuned in the real window (offscreen) on image
files the test writes: curves, PSNR, gallery, pause, stop and continue, the inspector's A/B, the quit
question; and the core's gallery (the pictures each validation carries) against the models themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers.finetune import make_images, options, run_all, sd_file
from helpers.gui import answer_next_dialog, make_window

from vaestudio.ui.training.controls import RunState


def _data(tmp_path: Path) -> Path:
    make_images(tmp_path / "imgs", n=4)
    make_images(tmp_path / "val", n=2, seed=1)
    src, _model = sd_file(tmp_path)
    return src


def _setup(qtbot, win, tmp_path, steps: int):
    src = _data(tmp_path)
    win.session.load_vae(str(src))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.training.mode.setCurrentIndex(1)
    tab = win.training.finetune
    c = tab.controls
    c.data_dir.setText(str(tmp_path / "imgs"))
    c.val.setText(str(tmp_path / "val"))
    c.out_dir.setText(str(tmp_path / "out"))
    c.steps.setValue(steps)
    c.every.setValue(2)
    c.batch.setValue(2)
    c.size.setValue(32)
    c.lr.setValue(1e-3)
    assert c.reason.text() == "" and c.start_btn.isEnabled() and c.start_btn.text() == "Start"
    return src, tab, c


def _checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k[6:]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}


def test_a_finetune_runs_pauses_stops_continues_and_opens_in_the_inspector(qtbot, win, tmp_path, rgb_image):
    src, tab, c = _setup(qtbot, win, tmp_path, steps=500)
    c.start_btn.click()
    assert "finetune" in win.runner.running  # the run is a worker job, not on the UI thread
    qtbot.waitUntil(lambda: tab.state == RunState.RUNNING and tab.step >= 1, timeout=30000)
    c.pause_btn.click()
    assert tab.state == RunState.PAUSED and c.pause_btn.text() == "Resume"
    qtbot.wait(300)  # what the worker sent before it paused arrives
    held = tab.step
    qtbot.wait(500)
    assert tab.step == held  # paused: no step
    c.pause_btn.click()
    qtbot.waitUntil(lambda: tab.step >= held + 3 and bool(tab.plots.psnr_x), timeout=30000)
    c.stop_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.STOPPED, timeout=30000)
    k = tab.step
    assert 3 <= k < 500
    ckpt = tmp_path / "out" / "checkpoint.safetensors"
    assert ckpt.is_file() and tab.unsaved()
    # the curves: one loss point per step, a PSNR point per validation with the base's beside it
    assert tab.plots.step_x == list(range(1, k + 1))
    assert tab.plots.psnr_x == list(range(2, k + 1, 2))
    assert all(np.isfinite(tab.plots.psnr_y)) and tab.plots.base_psnr is not None
    # the gallery: 2 held-out images, before | after | original, 32 pixels each with 4-pixel gaps
    assert tab.plots.gallery.shape == (2 * 32 + 4, 3 * 32 + 2 * 4, 3)
    assert tab.plots.gallery_label.text.startswith("held-out images: before")
    # stopped: Open in inspector makes the checkpoint's weights VAE B, the base stays A
    c.inspect_btn.click()
    qtbot.waitUntil(lambda: win.session.vae_b is not None, timeout=30000)
    assert win.tabs.currentWidget() is win.inspector
    b = win.session.vae_b
    assert b.info.source == str(ckpt) and win.session.vae.info.source == str(src)
    own = b.model.state_dict()
    stopped_weights = _checkpoint_weights(ckpt)
    assert stopped_weights and all(torch.equal(own[n], v) for n, v in stopped_weights.items())
    # Continue resumes from the checkpoint (the steps may grow or shrink) and finishes
    assert c.start_btn.text() == "Continue"
    c.steps.setValue(k + 3)
    c.start_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.FINISHED, timeout=30000)
    assert tab.start_step == k and tab.step == k + 3
    assert tab.plots.step_x == list(range(1, k + 4))  # the curve goes on where it stopped
    assert not tab.unsaved() and tab.exported.endswith("vae.safetensors") and Path(tab.exported).is_file()
    assert "raise Steps" in c.reason.text() and not c.start_btn.isEnabled()
    # finished: the exported file is VAE B, and it reconstructs an image beside its base
    c.inspect_btn.click()
    qtbot.waitUntil(lambda: win.session.vae_b is not b, timeout=30000)
    assert win.session.vae_b.info.source == tab.exported
    win.open_images([str(rgb_image)])
    qtbot.waitUntil(lambda: win.session.result is not None and win.session.result_b is not None, timeout=30000)
    before, after = win.session.result.decoded, win.session.result_b.decoded
    assert before.shape == after.shape and np.abs(before - after).max() > 1e-3  # the fine-tune is not the base


def test_the_tab_says_why_start_is_disabled(qtbot, win, tmp_path):
    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.model import make_model

    win.training.mode.setCurrentIndex(1)
    tab = win.training.finetune
    c = tab.controls
    assert "Load a VAE in the inspector" in c.reason.text() and not c.start_btn.isEnabled()
    win.session.set_vae(MnistVae.from_trained(make_model("mlp", 32, 20)))
    assert "cannot be fine-tuned yet" in c.reason.text() and "mnist" in c.reason.text()
    assert not c.start_btn.isEnabled() and "\n" not in c.reason.text()
    src = _data(tmp_path)
    win.session.load_vae(str(src))
    qtbot.waitUntil(lambda: "data folder" in c.reason.text(), timeout=30000)
    c.data_dir.setText(str(tmp_path / "imgs"))
    assert "output folder" in c.reason.text() and not c.start_btn.isEnabled()
    c.out_dir.setText(str(tmp_path / "out"))
    assert c.reason.text() == "" and c.start_btn.isEnabled()


def test_quitting_with_an_unsaved_finetune_asks_and_stops_it_cleanly(qtbot, tmp_path):
    w = make_window(tmp_path)
    qtbot.addWidget(w)
    w.show()
    _src, tab, c = _setup(qtbot, w, tmp_path, steps=100_000)
    c.start_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.RUNNING and tab.step >= 2, timeout=30000)
    asked = answer_next_dialog("Cancel")
    w.close()
    assert asked and "has not been exported" in asked[0]
    assert w.isVisible() and tab.is_running()  # Cancel: nothing happened
    asked = answer_next_dialog("Discard")
    w.close()
    assert asked and not w.isVisible()
    qtbot.waitUntil(lambda: not w.runner.busy(), timeout=10000)
    assert (tmp_path / "out" / "checkpoint.safetensors").is_file()  # stopped as Stop does: checkpoint written


def test_the_gallery_is_the_base_and_the_tuned_weights_on_the_held_out_images(tmp_path):
    from vaestudio.core.finetune.model import Trainable
    from vaestudio.core.finetune.options import Validated
    from vaestudio.core.finetune.validate import pictures
    from vaestudio.core.sources import load_vae

    src = _data(tmp_path)
    events = run_all(options(tmp_path, src, steps=3, every=3, gallery=1))
    val = [e for e in events if isinstance(e, Validated)]
    assert len(val) == 1 and "gallery" not in val[0].to_dict()  # the --json line carries no pictures
    g = val[0].gallery
    assert g.original.shape == g.base.shape == g.current.shape == (1, 32, 32, 3)
    base = pictures(Trainable(load_vae(src, dtype="fp32"), "decoder"), [torch.from_numpy(g.original[0]).permute(2, 0, 1)])
    tuned = load_vae(tmp_path / "out" / "vae.safetensors", dtype="fp32")
    after = pictures(Trainable(tuned, "decoder"), [torch.from_numpy(g.original[0]).permute(2, 0, 1)])
    assert np.abs(g.base - base).max() < 1e-5 and np.abs(g.current - after).max() < 1e-5
    assert np.abs(g.base - g.current).max() > 1e-3
    assert not [e for e in run_all(options(tmp_path / "b", src, steps=2, every=2, data=[str(tmp_path / "imgs")],
                                              val=str(tmp_path / "val")))
                if isinstance(e, Validated) and e.gallery is not None]  # none unless asked for


def test_a_stopped_finetune_is_exported_from_its_checkpoint_without_training_further(qtbot, win, tmp_path):
    from vaestudio.core.sources import load_vae

    _src, tab, c = _setup(qtbot, win, tmp_path, steps=500)
    assert not c.export_btn.isEnabled()  # nothing trained yet
    c.start_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.RUNNING and tab.step >= 3, timeout=30000)
    assert not c.export_btn.isEnabled()  # running: Stop first
    c.stop_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.STOPPED, timeout=30000)
    k = tab.step
    assert tab.unsaved() and c.export_btn.isEnabled() and "Export writes it" in tab.unsaved_text()
    trained = _checkpoint_weights(tmp_path / "out" / "checkpoint.safetensors")
    c.export_btn.click()
    qtbot.waitUntil(lambda: tab.state == RunState.FINISHED, timeout=30000)
    assert tab.step == k and tab.plots.step_x == list(range(1, k + 1))  # no step was trained
    assert not tab.unsaved() and not c.export_btn.isEnabled()
    assert Path(tab.exported) == tmp_path / "out" / "vae.safetensors"
    own = load_vae(tab.exported).model.state_dict()  # the single file, as ComfyUI and A1111 load it
    assert trained and all(torch.equal(own[n], v) for n, v in trained.items())
    assert c.start_btn.text() == "Continue" and c.start_btn.isEnabled()  # Steps (500) still go on from k
