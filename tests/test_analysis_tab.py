"""The Analysis tab in the real window: each analysis runs on the inspector's image for the chosen VAEs."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from helpers.data import photo

from vaestudio.core.analyses import ANALYSES


@pytest.fixture
def ready(qtbot, win, tmp_path, vae_dir, ldm_file):
    ins = win.inspector
    ins.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: ins.vae is not None, timeout=30000)
    win.open_images([str(photo(tmp_path, size=(48, 64)))])
    qtbot.waitUntil(lambda: ins.result is not None, timeout=30000)
    win.tabs.setCurrentWidget(win.analysis)
    tab = win.analysis
    tab.add_source(str(ldm_file))  # a second VAE from a file
    tab.size.setValue(64)
    tab.rounds.setValue(2)
    tab.steps.setValue(3)
    tab.tiles.setText("32")
    tab.overlaps.setText("0, 16")
    return tab


@pytest.mark.parametrize("key", list(ANALYSES))
def test_each_analysis_runs_for_two_vaes(qtbot, win, ready, key):
    tab = ready
    tab.kind.setCurrentIndex(list(ANALYSES).index(key))
    assert [tab.vae_list.item(i).text() for i in range(tab.vae_list.count())] == \
        [f"A: {tab.inspector.vae.info.source.split('/')[-1]}", "community_vae.safetensors"]
    tab.run_btn.click()
    assert not tab.run_btn.isEnabled() and tab.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: tab.run_btn.isEnabled(), timeout=120000)
    assert len(tab.results) == 2, win.last_error
    assert tab.table.rowCount() >= 2
    assert isinstance(tab.plots.ci.getItem(1, 0), pg.PlotItem)  # a plot is drawn under the legend
    assert len(tab.legend.items) == 2  # one entry per VAE
    assert tab.status.text().startswith("Done: 2 VAEs")


def test_an_analysis_can_be_cancelled(qtbot, win, ready):
    tab = ready
    tab.kind.setCurrentIndex(list(ANALYSES).index("drift"))
    tab.rounds.setValue(50)
    tab.run_btn.click()
    qtbot.waitUntil(lambda: tab.progress.value() > 0, timeout=60000)
    tab.cancel_btn.click()
    qtbot.waitUntil(lambda: tab.run_btn.isEnabled(), timeout=10000)
    assert tab.status.text().startswith("Cancelled")


def test_without_an_image_the_tab_says_what_to_do(qtbot, win):
    win.tabs.setCurrentWidget(win.analysis)
    assert "open an image" in win.analysis.image_label.text()
    win.analysis.run_btn.click()
    assert "open an image in the Inspector" in win.last_error


def test_a_vae_that_cannot_do_an_analysis_is_reported_and_the_others_go_on(qtbot, win, ready, tmp_path):
    """The MNIST VAE has a vector latent: it cannot decode in tiles. The SD VAEs still get their seams."""

    from vaestudio.core.mnist.train import TrainConfig, Trainer

    tr = Trainer(TrainConfig(hidden_dim=16, latent_dim=2), np.zeros((4, 784), np.float32), np.zeros((2, 784), np.float32))
    tr.save(tmp_path / "mnist.safetensors")
    tab = ready
    tab.add_source(str(tmp_path / "mnist.safetensors"))
    tab.kind.setCurrentIndex(list(ANALYSES).index("seams"))
    tab.run_btn.click()
    qtbot.waitUntil(lambda: tab.run_btn.isEnabled(), timeout=120000)
    assert len(tab.results) == 2 and len(tab.failures) == 1
    assert "mnist" in tab.failures[0] and "tiles" in tab.failures[0]
    assert "1 failed" in tab.status.text()



def test_the_job_goes_on_past_any_error_and_closes_what_it_loaded(tmp_path, vae_dir, ldm_file, monkeypatch):
    """A lent VAE failing with a torch error (weights and inputs in different precisions: a real
    RuntimeError) is reported; the VAE loaded from a file still runs and is closed afterwards,
    the lent one is not."""
    import torch

    from vaestudio.core.autoencoder import TorchAutoencoder
    from vaestudio.core.sources import load_vae
    from vaestudio.ui.analysis_tab import AnalysisFailed, AnalysisResult, analysis_job
    from vaestudio.ui.settings import Preferences

    closed = []
    real_close = TorchAutoencoder.close
    monkeypatch.setattr(TorchAutoencoder, "close", lambda self: (closed.append(self), real_close(self))[1])
    lent = load_vae(str(vae_dir))
    lent.model.to(torch.bfloat16)  # its dtype still says fp32: the convolutions refuse the input
    pixels = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    items = list(analysis_job("spectrum", [("lent", lent), ("file", str(ldm_file))], pixels, {}, Preferences(),
                              progress=None, should_stop=lambda: False))
    failed = [i for i in items if isinstance(i, AnalysisFailed)]
    assert [f.label for f in failed] == ["lent"] and "RuntimeError" in failed[0].reason
    assert [i.label for i in items if isinstance(i, AnalysisResult)] == ["file"]
    assert len(closed) == 1 and closed[0] is not lent


@pytest.mark.parametrize(("tiles", "overlaps", "said"), [
    ("32, x", "0", "Tile sizes: expected whole numbers >= 0"),
    ("32", "-16", "Overlaps: expected whole numbers >= 0"),
    ("32", "32, 64", "an overlap must be smaller than the tile"),
])
def test_seam_settings_are_checked_before_anything_runs(qtbot, win, ready, tiles, overlaps, said):
    tab = ready
    tab.kind.setCurrentIndex(list(ANALYSES).index("seams"))
    tab.tiles.setText(tiles)
    tab.overlaps.setText(overlaps)
    tab.run_btn.click()
    assert said in win.last_error
    assert tab.run_btn.isEnabled() and not tab.runner.is_running("analysis")
