"""The Analysis tab as a view of a bare Session (no Inspector, no main window): each analysis runs on
the session's image for the chosen VAEs, and the table, plots and option pages come from the
analysis's description."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from helpers.data import photo

from vaestudio.core.analyses import ANALYSES

SIZE = 64
OPTIONS = {("drift", "rounds"): 2, ("noise", "steps"): 3, ("seams", "tiles"): "32", ("seams", "overlaps"): "0, 16"}


def set_option(tab, key: str, name: str, value) -> None:
    w = tab.pages[key].fields[name]
    w.setText(value) if isinstance(value, str) else w.setValue(value)


@pytest.fixture
def session(qtbot):
    from vaestudio.ui.session import Session

    s = Session()
    s.errors = []
    s.error.connect(s.errors.append)
    yield s
    s.runner.cancel_all()
    qtbot.waitUntil(lambda: not s.runner.busy(), timeout=10000)


@pytest.fixture
def tab(qtbot, session):
    from vaestudio.ui.analysis_tab import AnalysisTab

    t = AnalysisTab(session)
    qtbot.addWidget(t)
    return t


@pytest.fixture
def ready(qtbot, session, tab, tmp_path, vae_dir, ldm_file):
    session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: session.vae is not None, timeout=30000)
    session.open_images([str(photo(tmp_path, size=(48, 64)))])
    qtbot.waitUntil(lambda: session.image is not None, timeout=30000)
    tab.add_source(str(ldm_file))  # a second VAE from a file
    tab.size.setValue(SIZE)
    for (key, name), value in OPTIONS.items():
        set_option(tab, key, name, value)
    return tab


#: Per analysis: (row, column header, the core result's value that cell shows) for VAE A.
CELLS = {
    "drift": (1, "PSNR (dB)", lambda r: r.rounds[1].psnr),
    "seams": (1, "seam score", lambda r: r.settings[1].seam_score),
    "spectrum": (3, "power ratio", lambda r: r.ratio[3]),
    "noise": (2, "SSIM", lambda r: r.points[2].ssim),
    "scale": (0, "std", lambda r: r.std),
}


@pytest.mark.parametrize("key", list(ANALYSES))
def test_each_analysis_runs_for_two_vaes(qtbot, session, ready, key):
    from vaestudio.core.analyses.common import drive
    from vaestudio.core.images import resize_longer_side

    tab = ready
    tab.kind.setCurrentIndex(list(ANALYSES).index(key))
    assert [tab.vae_list.item(i).text() for i in range(tab.vae_list.count())] == \
        [f"A: {session.vae.info.source.split('/')[-1]}", "community_vae.safetensors"]
    tab.run_btn.click()
    assert not tab.run_btn.isEnabled() and tab.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: tab.run_btn.isEnabled(), timeout=120000)
    assert len(tab.results) == 2, session.errors
    assert tab.table.rowCount() >= 2
    assert isinstance(tab.plots.ci.getItem(1, 0), pg.PlotItem)  # a plot is drawn under the legend
    assert len(tab.legend.items) == 2  # one entry per VAE
    assert tab.status.text().startswith("Done: 2 VAEs")
    # the table shows the core's numbers: the same analysis run here on VAE A gives the cell's value
    kind = ANALYSES[key]
    options = kind.validate({**kind.defaults(), **{n: v for (k, n), v in OPTIONS.items() if k == key},
                             **({"tiles": [32], "overlaps": [0, 16]} if key == "seams" else {})}, str)
    pixels = resize_longer_side(session.image.pixels, SIZE)
    mine = drive(kind.function()(session.vae, pixels, tile=session.prefs.tile, **options))
    row, header, value = CELLS[key]
    headers = [tab.table.horizontalHeaderItem(c).text() for c in range(tab.table.columnCount())]
    assert tab.table.item(row, 0).text() == tab.results[0][0]
    assert float(tab.table.item(row, headers.index(header)).text()) == pytest.approx(value(mine), rel=2e-3)
    assert kind.summary(mine.to_dict()) in tab.verdict.text()  # the CLI's summary line, for VAE A


def test_an_analysis_can_be_cancelled(qtbot, ready):
    tab = ready
    tab.kind.setCurrentIndex(list(ANALYSES).index("drift"))
    set_option(tab, "drift", "rounds", 50)
    tab.run_btn.click()
    qtbot.waitUntil(lambda: tab.progress.value() > 0, timeout=60000)
    tab.cancel_btn.click()
    qtbot.waitUntil(lambda: tab.run_btn.isEnabled(), timeout=10000)
    assert tab.status.text().startswith("Cancelled")


def test_without_an_image_the_tab_says_what_to_do(qtbot, session, tab):
    assert "open an image" in tab.image_label.text()
    tab.run_btn.click()
    assert "open an image in the Inspector" in session.errors[-1]


def test_the_tab_follows_the_session_and_lets_go_when_closed(qtbot, session, tab, tmp_path, vae_dir):
    from vaestudio.core.sources import load_vae

    session.open_images([str(photo(tmp_path, name="first.png"))])
    qtbot.waitUntil(lambda: tab.image_label.text() == "first", timeout=30000)
    vae = load_vae(str(vae_dir))
    session.set_vae(vae)
    assert [tab.vae_list.item(i).text() for i in range(tab.vae_list.count())] == [f"A: {vae_dir.name}"]
    assert tab.chosen_vaes() == [(vae_dir.name, vae)]  # lent as it is, not a source to load again
    tab.close()
    session.set_vae(None)
    session.open_images([str(photo(tmp_path, name="second.png"))])
    qtbot.waitUntil(lambda: session.image is not None and session.image.name == "second", timeout=30000)
    assert tab.image_label.text() == "first" and tab.vae_list.count() == 1  # no longer listening


def test_option_pages_are_made_from_the_descriptions(qtbot, tab):
    for key, kind in ANALYSES.items():
        assert set(tab.pages[key].fields) == {o.name for o in kind.options}
        assert tab.pages[key].values() == kind.defaults()  # every field starts at the CLI's default
    set_option(tab, "noise", "max_strength", 2.5)
    tab.pages["noise"].fields["mode"].setCurrentText("strength")
    assert tab.pages["noise"].values()["max_strength"] == 2.5 and tab.pages["noise"].values()["mode"] == "strength"
    bins = tab.pages["spectrum"].fields["bins"]
    assert bins.text() == ANALYSES["spectrum"].options[0].auto  # None: chosen from the image
    bins.setValue(16)
    assert tab.pages["spectrum"].values() == {"bins": 16}


def test_a_vae_that_cannot_do_an_analysis_is_reported_and_the_others_go_on(qtbot, ready, tmp_path):
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
def test_seam_settings_are_checked_before_anything_runs(qtbot, session, ready, tiles, overlaps, said):
    tab = ready
    tab.kind.setCurrentIndex(list(ANALYSES).index("seams"))
    set_option(tab, "seams", "tiles", tiles)
    set_option(tab, "seams", "overlaps", overlaps)
    tab.run_btn.click()
    assert said in session.errors[-1]
    assert tab.run_btn.isEnabled() and not session.runner.is_running("analysis")
