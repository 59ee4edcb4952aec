"""The window's session model and each tab as a view of it, built from a bare Session (no Inspector)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.data import photo
from PySide6.QtCore import SIGNAL, Qt

from vaestudio.ui.session import ENCODE_CACHE_SIZE, Session

#: Every session signal a view may subscribe to, as Qt names them (for counting receivers).
SIGNALS = ("images_changed()", "image_changed()", "vae_changed(QString)", "vae_loading(QString,int,int)",
           "encoding_changed()", "result_changed(QString)", "preview_decoder_changed()", "prefs_changed()",
           "recent_vaes_changed()", "devices_changed()")


def receivers(session: Session) -> dict[str, int]:
    return {name: session.receivers(SIGNAL(name)) for name in SIGNALS}


@pytest.fixture
def session(qtbot):
    s = Session()
    yield s
    s.runner.wait_all(5000)


@pytest.fixture(scope="module")
def loaded_vae(vae_dir):
    from vaestudio.core.sources import load_vae

    return load_vae(str(vae_dir), device="cpu")


def record(signal) -> list:
    got: list = []
    signal.connect(lambda *a: got.append(a))
    return got


# -- the model alone --------------------------------------------------------------------------------

def test_setting_a_vae_clears_what_the_old_one_made_and_says_so_once(session, loaded_vae):
    changed, b_changed = record(session.vae_changed), []
    session.encoded, session.result = object(), object()  # stand-ins for an old VAE's encoding and result
    session.set_vae(loaded_vae)
    assert changed == [("a",)]
    assert session.vae is loaded_vae and session.encoded is None and session.result is None
    assert session.lent_vaes() == {loaded_vae.info.source: loaded_vae}
    session.result_b = object()
    session.vae_changed.connect(lambda slot: b_changed.append((slot, session.result_b)))
    session.set_vae(loaded_vae, "b")
    assert b_changed == [("b", None)] and session.vae_b is loaded_vae and session.vae is loaded_vae
    session.set_vae(None, "b")
    assert session.vae_b is None and list(session.lent_vaes()) == [loaded_vae.info.source]


def test_a_refused_family_change_says_why_and_changes_nothing(session, loaded_vae):
    session.set_vae(loaded_vae)
    errors, changed = record(session.error), record(session.vae_changed)
    assert session.set_family("flux") is False  # 16 latent channels; this VAE has 4
    assert errors and "16 latent channels" in errors[0][0] and changed == []
    assert session.vae.family.name == "sd1"
    assert session.set_family("sdxl") is True
    assert changed == [("a",)] and session.vae.family.name == "sdxl"
    session.set_family("sd1")


def test_opening_and_stepping_images(qtbot, session, tmp_path):
    a, b = photo(tmp_path, "a.png"), photo(tmp_path, "b.png", (33, 47), 1)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    errors = record(session.error)
    with qtbot.waitSignals([session.images_changed, session.image_changed], order="strict", timeout=10000):
        session.open_images([str(a), str(b)])
    assert session.image.name == "a" and session.source() == str(a)
    with qtbot.waitSignal(session.image_changed, timeout=10000):
        session.step(1)
    assert session.index == 1 and session.image.pixels.shape == (33, 47, 3)
    session.open_images([str(bad)])  # the first of a new list cannot be read: the previous list stays
    qtbot.waitUntil(lambda: bool(errors), timeout=10000)
    assert session.images == [str(a), str(b)] and session.image.name == "b"
    session.open_images([str(a), str(bad)])
    qtbot.waitUntil(lambda: session.image is not None and session.image.name == "a", timeout=10000)
    with qtbot.waitSignal(session.image_changed, timeout=10000):
        session.step(1)  # stepping onto a broken file: nothing stale stays
    assert session.index == 1 and session.image is None and "bad.png" in errors[-1][0]


def test_the_encode_cache_keeps_the_most_recently_used(session, loaded_vae, tmp_path):
    session.set_vae(loaded_vae)
    keys = []
    for i in range(ENCODE_CACHE_SIZE + 2):
        session.images, session.index = [str(tmp_path / f"{i}.png")], 0
        keys.append(session.encode_key("a"))
        session.cache_put(keys[-1], i)
        if i == 0:
            first = keys[0]
        else:
            assert session.cached(first) == 0  # used again: it stays
    assert len(set(keys)) == len(keys)
    assert session.cached(keys[1]) is None  # the least recently used went
    assert session.cached(keys[-1]) == ENCODE_CACHE_SIZE + 1
    session.set_vae(loaded_vae)  # the same VAE set again is another key: nothing stale is reused
    assert session.encode_key("a") != keys[-1]


def test_preferences_change_in_place(session):
    from vaestudio.ui.settings import Preferences

    prefs = session.prefs
    changed = record(session.prefs_changed)
    session.set_prefs(Preferences(device="cpu", tile="on"))
    assert session.prefs is prefs and prefs.device == "cpu" and prefs.tile == "on" and changed == [()]


# -- each tab from a bare session ---------------------------------------------------------------------

def test_the_inspector_shows_what_the_session_holds(qtbot, session, vae_dir, tmp_path):
    from vaestudio.ui.inspector import InspectorTab
    from vaestudio.ui.metrics_panel import psnr_text

    tab = InspectorTab(session)
    qtbot.addWidget(tab)
    session.set_recent_vaes([str(vae_dir), "/elsewhere/other.safetensors"])
    assert tab.vae_panel.recent.count() == 2 and tab.vae_panel.recent.itemData(0) == str(vae_dir)
    session.vae_loading.emit("Downloading", 30, 120)
    assert not tab.vae_panel.progress.isHidden() and tab.vae_panel.progress.value() == 30
    session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: session.vae is not None, timeout=30000)
    assert tab.vae_panel.progress.isHidden()  # the load ended: the panel is at rest
    assert "family: sd1" in tab.vae_panel.info.text()
    session.open_images([str(photo(tmp_path, "p.png"))])
    qtbot.waitUntil(lambda: session.result is not None, timeout=30000)
    assert tab.nav_label.text() == "1 / 1: p.png"
    assert tab.compare.reconstruction.data.shape == (40, 56, 3)
    assert tab.metrics.psnr.text() == psnr_text(session.result.metrics.psnr)
    assert tab.metrics.latent_shape.text() == "4 x 5 x 7"
    session.set_result(None)  # the views follow the session, whoever changed it
    assert tab.compare.reconstruction.data is None and tab.metrics.psnr.text() == "-"
    assert tab.metrics.latent_shape.text() == "4 x 5 x 7"  # the encoding is still there


def test_the_evaluate_tab_offers_the_session_vaes_and_image_folder(qtbot, session, loaded_vae, tmp_path):
    from vaestudio.ui.evaluate_tab import EvaluateTab

    tab = EvaluateTab(session)
    qtbot.addWidget(tab)
    assert tab.vae_list.count() == 0 and tab.data_paths() == []
    session.set_vae(loaded_vae)
    item = tab.vae_list.item(0)
    a = f"A: {Path(loaded_vae.info.source).name}"
    assert item.text() == a and item.checkState() == Qt.CheckState.Checked
    session.set_recent_vaes(["/models/recent.safetensors"])
    assert [tab.vae_list.item(i).text() for i in range(tab.vae_list.count())] == [a, "recent.safetensors"]
    tab.vae_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    session.set_family("sdxl")  # still VAE A: ticked or not as the user left it
    assert tab.vae_list.item(0).checkState() == Qt.CheckState.Unchecked
    session.set_family("sd1")
    session.set_vae(None)
    session.set_recent_vaes([loaded_vae.info.source])  # on offer as a recent VAE: not ticked
    assert tab.vae_list.item(0).checkState() == Qt.CheckState.Unchecked
    session.set_vae(loaded_vae)  # becomes A: ticked, as the A and B always start
    assert tab.vae_list.item(0).text() == a and tab.vae_list.item(0).checkState() == Qt.CheckState.Checked
    first = tmp_path / "first"
    first.mkdir()
    session.open_images([str(photo(first, "a.png"))])
    qtbot.waitUntil(lambda: session.image is not None, timeout=10000)
    assert tab.data_paths() == [str(first)]  # the inspected image's folder is a first guess
    second = tmp_path / "second"
    second.mkdir()
    session.open_images([str(photo(second, "b.png"))])
    qtbot.waitUntil(lambda: tab.data_paths() == [str(second)], timeout=10000)  # still a guess: it follows
    tab.add_data(str(tmp_path))  # the user chose: guesses stop
    session.open_images([str(photo(first, "c.png"))])
    qtbot.waitUntil(lambda: session.image.name == "c", timeout=10000)
    assert tab.data_paths() == [str(second), str(tmp_path)]


def test_the_evaluate_tab_knows_whose_output_folder_it_is(qtbot, session, tmp_path):
    from vaestudio.ui.evaluate_tab import EvaluateTab

    tab = EvaluateTab(session)
    qtbot.addWidget(tab)
    assert tab.out_proposed and "evaluations" in tab.out.text()
    tab.out.setText(str(tmp_path / "mine"))
    assert not tab.out_proposed
    tab._propose_out()
    assert tab.out_proposed and tab.out.text() != str(tmp_path / "mine")


def test_the_mnist_studio_follows_the_session(qtbot, session):
    from vaestudio.ui.training import TrainingTab

    tab = TrainingTab(session)
    qtbot.addWidget(tab)
    session.set_devices(["auto", "cpu", "cuda:0", "cuda:1"])
    devices = tab.controls.device
    assert [devices.itemText(i) for i in range(devices.count())] == ["cpu", "cuda:0", "cuda:1"]
    errors, changed = record(session.error), record(session.vae_changed)
    tab.send_to_inspector()  # nothing trained yet: said, and the session's VAE stays
    assert errors and "train a model" in errors[0][0] and changed == [] and session.vae is None


# -- views let go -----------------------------------------------------------------------------------

def test_a_closed_view_lets_go_of_the_session(qtbot, session, loaded_vae):
    from vaestudio.ui.analysis_tab import AnalysisTab
    from vaestudio.ui.evaluate_tab import EvaluateTab
    from vaestudio.ui.inspector import InspectorTab
    from vaestudio.ui.training import TrainingTab

    before = receivers(session)
    tabs = [InspectorTab(session), EvaluateTab(session), TrainingTab(session), AnalysisTab(session)]
    for tab in tabs:
        qtbot.addWidget(tab)
    during = receivers(session)
    assert during["vae_changed(QString)"] > before["vae_changed(QString)"]
    for tab in tabs:
        tab.close()
    assert receivers(session) == before  # every connection made was undone
    evaluate = tabs[1]
    session.set_vae(loaded_vae)
    session.set_devices(["auto", "cpu", "cuda:3"])
    assert evaluate.vae_list.count() == 0  # a closed view no longer follows
    assert tabs[2].controls.device.findText("cuda:3") == -1


def test_closing_the_window_disconnects_every_view(qtbot, tmp_path):
    from helpers.gui import make_window

    w = make_window(tmp_path)
    w.show()
    assert receivers(w.session)["image_changed()"] > 0
    w.close()
    assert receivers(w.session) == dict.fromkeys(SIGNALS, 0)
