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

