"""The Evaluate tab in the real window: the same core as `vaestudio evaluate`, rows streaming in."""

from __future__ import annotations

import csv
import json

from helpers.data import photo
from PySide6.QtCore import Qt


def images(tmp_path, n=6):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        photo(folder, f"p{i}.png", size=(40 + 8 * i, 56), seed=i)
    return folder


def test_evaluate_streams_rows_summarises_and_opens_the_worst_in_the_inspector(qtbot, win, tmp_path, vae_dir,
                                                                               ldm_file):
    ins = win.inspector
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.tabs.setCurrentWidget(win.evaluate)
    tab = win.evaluate
    tab.add_data(str(images(tmp_path)))
    tab.add_vae(str(ldm_file))
    tab.size.setValue(32)
    tab.metric_boxes["fid"].setChecked(False)  # rFID is checked in the evaluate tests; keep this one quick
    tab.out.setText(str(tmp_path / "eval"))
    checked = [tab.vae_list.item(i).checkState() for i in range(tab.vae_list.count())]
    assert checked == [Qt.CheckState.Checked, Qt.CheckState.Checked]
    tab.start_btn.click()
    assert tab.cancel_btn.isEnabled() and not tab.start_btn.isEnabled()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=120000)
    assert tab.summary.rowCount() == 2, win.last_error
    assert sum(len(v) for v in tab.rows.values()) == 12
    assert tab.curves  # the live PSNR histogram
    assert tab.report_btn.isEnabled()
    assert tab.out.text() == str(tmp_path / "eval")  # a folder the user chose stays
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert [v["images"] for v in summary["vaes"]] == [6, 6]
    assert any("spectrum" in json.dumps(v.get("analyses", {})) for v in summary["vaes"])  # dataset analyses
    assert tab.worst.count() == 12
    item = tab.worst.item(0)
    image, source = item.data(Qt.ItemDataRole.UserRole)
    tab.worst.itemDoubleClicked.emit(item)
    qtbot.waitUntil(lambda: win.session.image is not None and win.session.image.name == image.split("/")[-1][:-4], timeout=20000)
    assert win.tabs.currentWidget() is ins


def test_evaluate_cancel_keeps_the_work_and_resume_finishes_it(qtbot, win, tmp_path, vae_dir):
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.tabs.setCurrentWidget(win.evaluate)
    tab = win.evaluate
    tab.add_data(str(images(tmp_path, 12)))
    tab.size.setValue(32)
    tab.batch.setValue(1)
    for m in ("fid", "ssim"):
        tab.metric_boxes[m].setChecked(False)
    tab.out.setText(str(tmp_path / "eval"))
    tab.start_btn.click()
    qtbot.waitUntil(lambda: sum(len(v) for v in tab.rows.values()) >= 2, timeout=60000)
    tab.cancel_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=20000)
    assert tab.status.text().startswith("Cancelled")
    tab.resume_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled() and tab.summary.rowCount() == 1, timeout=120000)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["vaes"][0]["images"] == 12
    # the worst images are picked from all 12 rows, those done before the cancel too
    with open(tmp_path / "eval" / "rows.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (float(r["psnr"]), r["image"]))
    shown = [tab.worst.item(i).data(Qt.ItemDataRole.UserRole)[0] for i in range(tab.worst.count())]
    assert shown == [r["image"] for r in rows[:8]]
    assert tab.status.text().endswith(f"Results in {tmp_path / 'eval'}")


def test_evaluate_says_what_is_missing(qtbot, win):
    win.tabs.setCurrentWidget(win.evaluate)
    win.evaluate.start_btn.click()
    assert "add a folder" in win.last_error


def test_a_second_start_gets_a_folder_of_its_own(qtbot, win, tmp_path, vae_dir):
    win.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    win.tabs.setCurrentWidget(win.evaluate)
    tab = win.evaluate
    tab.add_data(str(images(tmp_path, 2)))
    tab.size.setValue(32)
    for m in ("fid", "ssim"):
        tab.metric_boxes[m].setChecked(False)
    first = tab.out.text()  # the proposed default
    tab.start_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=60000)
    assert tab.out.text() != first  # a finished run: the next one is proposed a new folder
    tab.start_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled(), timeout=60000)
    assert tab.summary.rowCount() == 1, win.last_error
    tab.out.setText(first)  # that folder holds a run: the window says how to go on, in its own terms
    tab.start_btn.click()
    qtbot.waitUntil(lambda: tab.start_btn.isEnabled() and "already holds" in win.last_error, timeout=60000)
    assert "Resume" in win.last_error and "--" not in win.last_error


def test_every_kind_of_unusable_folder_has_a_hint_in_the_window_and_the_cli():
    from vaestudio.cli.evaluate import STATE_HINTS as CLI_HINTS
    from vaestudio.core.evaluate import StateError
    from vaestudio.ui.evaluate_job import STATE_HINTS as TAB_HINTS

    assert set(TAB_HINTS) == set(CLI_HINTS) == set(StateError.kinds)
    assert not any("--" in h for h in TAB_HINTS.values())  # the window speaks of its controls, not flags
