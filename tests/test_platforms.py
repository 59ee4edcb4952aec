"""What breaks on Windows and macOS, tested on Linux (issue 22): DataLoader workers started by ``spawn``
(the start method of both), file names with spaces, non-ASCII characters and long paths through
reconstruct, evaluate and finetune, an atomic write whose target another program holds open, settings
and log paths through platformdirs, MPS as a device (simulated). The bundle's build for each platform is
tested in test_packaging.py; what needs the other platforms themselves runs in .github/workflows/build.yml.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaestudio.cli import main
from vaestudio.core import files
from vaestudio.core.device import DTYPES, available_devices, pick_device, pick_dtype
from vaestudio.core.errors import DeviceUnavailable
from vaestudio.core.evaluate import EvaluationRequest, evaluate, list_data
from vaestudio.core.evaluate.data import ImageDataset, make_loader
from vaestudio.core.evaluate.types import MP_START_ENV, UsageError
from vaestudio.core.files import FileInUseError, write_atomic

#: a folder name Windows and macOS users have: spaces, accents, CJK
ODD = "données 空間 with spaces"


def _photo(path: Path, seed: int, size=(40, 48)) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, 0.5 + 0.4 * np.sin(xx / 4.0 + seed)], axis=2)
    arr = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((arr * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """Two photos and a short clip in a folder (and files) with spaces and non-ASCII characters."""
    from vaestudio.core.video import write_video

    root = tmp_path_factory.mktemp("odd") / ODD
    _photo(root / "photo été 1.png", 1)
    _photo(root / "写真 2.png", 2, size=(32, 40))
    frames = np.stack([np.asarray(Image.open(root / "photo été 1.png"), dtype=np.float32) / 255] * 5)
    write_video(root / "clip ü.mp4", frames, fps=8)
    return root


@pytest.fixture(scope="module")
def odd_vae(tmp_path_factory, tiny_model) -> Path:
    d = tmp_path_factory.mktemp("odd_vae") / "VAE folder ñ 模型"
    tiny_model.save_pretrained(d)
    return d


# -- spawn ----------------------------------------------------------------------------------------


def test_dataloader_workers_started_by_spawn_read_what_the_main_process_reads(odd_data, monkeypatch):
    """VAESTUDIO_MP_START=spawn: the evaluation's DataLoader really uses spawn (its context says so), and
    what the spawned worker reads (images and a clip, from odd file names) equals reading in this process."""
    monkeypatch.setenv(MP_START_ENV, "spawn")
    req = EvaluationRequest([str(odd_data)], ["unused"], None, size=32, workers=1)
    assert req.mp_context == "spawn"
    items = list_data([str(odd_data)])
    dataset = ImageDataset(items, 32, "shorter-crop", 5)
    loader = make_loader(dataset, 1, 1, req.mp_context)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    spawned = [x for batch in loader for x in batch]
    here = [dataset[i] for i in range(len(dataset))]
    assert len(spawned) == len(here) == 3
    for a, b in zip(spawned, here, strict=True):
        assert type(a) is type(b) and a.item.path == b.item.path
        assert not hasattr(a, "reason"), f"a worker failed: {a.reason}"
        field = "frames" if hasattr(a, "frames") else "pixels"
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)
    assert sum(hasattr(a, "frames") for a in spawned) == 1


def test_evaluate_with_spawned_workers_equals_reading_in_process(odd_data, odd_vae, tmp_path, monkeypatch):
    """The whole `vaestudio evaluate` with a spawned worker gives the same rows as --workers 0."""
    monkeypatch.setenv(MP_START_ENV, "spawn")
    outs = {}
    for workers in ("1", "0"):
        out = tmp_path / f"out {workers} é"
        assert main(["evaluate", str(odd_data), "--vae", str(odd_vae), "--out", str(out), "--size", "32",
                     "--workers", workers, "--metrics", "psnr,mae", "--frames", "5", "--no-report"]) == 0
        outs[workers] = {r["image"]: r for r in _rows(out / "rows.csv")}
    assert len(outs["1"]) == 3 and set(outs["1"]) == set(outs["0"])
    for name, row in outs["1"].items():
        assert not row["error"], row["error"]
        assert float(row["psnr"]) == pytest.approx(float(outs["0"][name]["psnr"]), abs=1e-6)


def test_an_unknown_start_method_is_one_usage_error(monkeypatch):
    monkeypatch.setenv(MP_START_ENV, "threads")
    with pytest.raises(UsageError, match="unknown start method 'threads'"):
        list(evaluate(EvaluationRequest(["x.png"], ["vae"], None)))


def _rows(path: Path) -> list[dict]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# -- odd and long paths ---------------------------------------------------------------------------


def _windows_long_paths() -> bool:
    """Windows opens paths over 260 characters only where the system allows it (LongPathsEnabled): no
    program can otherwise, so the long-path tests need it there."""
    if sys.platform != "win32":
        return True
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return winreg.QueryValueEx(key, "LongPathsEnabled")[0] == 1
    except OSError:
        return False


long_paths = pytest.mark.skipif(not _windows_long_paths(), reason="Windows without LongPathsEnabled")


def _long_dir(root: Path) -> Path:
    """A folder whose path is over 300 characters (Windows' old MAX_PATH is 260), each part under 255."""
    d = root
    while len(str(d)) < 300:
        d = d / ("long folder name ü " + "x" * 40)
    return d


@long_paths
def test_reconstruct_and_inspect_vae_with_odd_and_long_paths(odd_data, odd_vae, tmp_path, capsys):
    long = _long_dir(tmp_path)
    image = _photo(long / "ein Bild mit Umlauten äöü 画像.png", 3)
    vae = long / "vae copy é"
    shutil.copytree(odd_vae, vae)
    out = long / "out ö"
    assert len(str(out)) > 300
    for source in (odd_vae, vae):
        assert main(["inspect-vae", str(source), "--json"]) == 0
        info = json.loads(capsys.readouterr().out.strip())
        assert info["architecture"] == "autoencoder-kl"
    assert main(["reconstruct", str(image), str(odd_data / "写真 2.png"), "--vae", str(vae), "--out", str(out),
                 "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [Path(r["output"]).name for r in recs] == ["ein Bild mit Umlauten äöü 画像_recon.png", "写真 2_recon.png"]
    assert all(Path(r["output"]).is_file() for r in recs)
    assert Image.open(recs[0]["output"]).size == (48, 40)


@long_paths
def test_evaluate_into_a_long_output_path(odd_data, odd_vae, tmp_path):
    out = _long_dir(tmp_path) / "évaluation"
    assert main(["evaluate", str(odd_data / "photo été 1.png"), "--vae", str(odd_vae), "--out", str(out),
                 "--size", "32", "--workers", "0", "--metrics", "psnr"]) == 0
    rows = _rows(out / "rows.csv")
    assert [Path(r["image"]).name for r in rows] == ["photo été 1.png"] and not rows[0]["error"]
    assert (out / "summary.json").is_file() and (out / "report.html").is_file()


@long_paths
def test_finetune_from_odd_names_exports_into_a_long_path(tmp_path):
    """`vaestudio finetune`: images and the VAE file in folders with spaces and non-ASCII names, the export
    (LDM file, diffusers folder, finetune.json) into a folder whose path is over 300 characters; the
    exported file loads back."""
    from helpers.finetune import make_images, sd_file

    from vaestudio.core.sources import load_vae

    data = tmp_path / ODD
    make_images(data / "entraînement 训练")
    make_images(data / "validé 検証", n=2, seed=1)
    src, _ = sd_file(data)
    (src.parent / "mon VAE é.safetensors").write_bytes(src.read_bytes())
    out = _long_dir(tmp_path) / "fine-tuné 出力"
    assert main(["finetune", str(data / "entraînement 训练"), "--vae", str(src.parent / "mon VAE é.safetensors"),
                 "--out", str(out), "--val", str(data / "validé 検証"), "--size", "32", "--batch", "2",
                 "--steps", "2", "--every", "2", "--lr", "1e-3"]) == 0
    record = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
    assert "vae.safetensors" in record["outputs"]
    vae = load_vae(out / "vae.safetensors")
    assert (vae.info.architecture, vae.info.family) == ("autoencoder-kl", "sd1")
    assert load_vae(out / "diffusers").info.architecture == "autoencoder-kl"


# -- atomic writes over a file held open -----------------------------------------------------------


def _refuse(times: int):
    """os.replace as Windows behaves while another program has the target open: PermissionError."""
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) <= times:
            raise PermissionError(13, "The process cannot access the file because it is being used", str(dst))
        os.replace(src, dst)

    return replace, calls


def test_write_atomic_retries_while_the_target_is_held_open(tmp_path, monkeypatch):
    """Simulated, not real: Linux lets a rename replace an open file, so the refusal Windows gives is made
    by replacing ``files.os_replace`` (the one call write_atomic renames through) with one that raises
    PermissionError twice. The write then succeeds on the third try."""
    target = tmp_path / "rows.csv"
    target.write_text("old")
    replace, calls = _refuse(2)
    monkeypatch.setattr(files, "os_replace", replace)
    monkeypatch.setattr(files, "RETRY_WAITS", (0.001,) * 5)
    write_atomic(target, "new")
    assert target.read_text() == "new" and len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]


def test_write_atomic_gives_up_in_one_sentence_and_keeps_the_old_file(tmp_path, monkeypatch):
    """Simulated as above (a PermissionError on every try): after the retries, FileInUseError in one
    sentence, the old file untouched and no temporary file left."""
    target = tmp_path / "summary.json"
    target.write_text("old")
    replace, calls = _refuse(99)
    monkeypatch.setattr(files, "os_replace", replace)
    monkeypatch.setattr(files, "RETRY_WAITS", (0.001,) * 5)
    with pytest.raises(FileInUseError) as err:
        write_atomic(target, "new")
    assert len(calls) == 6 and "\n" not in str(err.value)
    assert "summary.json" in str(err.value) and "old file is kept" in str(err.value)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_write_atomic_over_a_target_really_held_open(tmp_path, monkeypatch):
    """Real, not simulated: another handle holds the target open. On Windows (the CI runner) the rename is
    refused while it is open (Python opens files without FILE_SHARE_DELETE): FileInUseError and the old
    file intact; closed during the retries, the write goes through. Elsewhere the rename succeeds and the
    open handle still reads the old file, whole."""
    import threading

    target = tmp_path / "rows.csv"
    target.write_bytes(b"old")
    monkeypatch.setattr(files, "RETRY_WAITS", (0.001,) * 2)
    with open(target, "rb") as held:
        if sys.platform == "win32":
            with pytest.raises(FileInUseError, match="rows.csv"):
                write_atomic(target, "new")
            assert target.read_bytes() == b"old"
        else:
            write_atomic(target, "new")
            assert held.read() == b"old" and target.read_bytes() == b"new"
    held = open(target, "rb")  # noqa: SIM115 - closed by the timer, while write_atomic retries
    monkeypatch.setattr(files, "RETRY_WAITS", (0.2, 0.4, 0.8, 1.6))
    threading.Timer(0.05, held.close).start()
    write_atomic(target, "newer")
    assert target.read_bytes() == b"newer" and [p.name for p in tmp_path.iterdir()] == ["rows.csv"]


def test_the_cli_reports_a_file_held_open_in_one_line(odd_data, odd_vae, tmp_path, monkeypatch, capsys):
    """Simulated as above: `evaluate` whose summary.json cannot be replaced exits 1 with one sentence."""
    replace, _ = _refuse(10**6)
    monkeypatch.setattr(files, "os_replace", replace)
    monkeypatch.setattr(files, "RETRY_WAITS", (0.001,) * 5)
    code = main(["evaluate", str(odd_data / "写真 2.png"), "--vae", str(odd_vae), "--out", str(tmp_path / "o"),
                 "--size", "32", "--workers", "0", "--metrics", "psnr", "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert [line for line in err if "another program may have it open" in line], err
    assert not any("Traceback" in line for line in err)


# -- settings, logs, devices ----------------------------------------------------------------------


def test_settings_and_log_files_are_where_platformdirs_says(tmp_path, monkeypatch):
    from platformdirs import user_config_dir, user_log_dir
    from PySide6.QtCore import QSettings

    from vaestudio.ui.crash import log_path
    from vaestudio.ui.settings import use_platform_settings_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # Linux: keeps the user's own folder out
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    before = Path(QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "o", "a").fileName()).parents[1]
    try:
        use_platform_settings_dir()
        fmt, scope = QSettings.Format.IniFormat, QSettings.Scope.UserScope
        name = QSettings(fmt, scope, "vaestudio", "vaestudio").fileName()
        assert Path(name) == Path(user_config_dir("vaestudio", appauthor=False)) / "vaestudio.ini"
    finally:
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(before))
    assert log_path() == Path(user_log_dir("vaestudio", appauthor=False)) / "vaestudio.log"
    if sys.platform.startswith("linux"):
        assert str(Path(name)).startswith(str(tmp_path / "config"))
        assert str(log_path()).startswith(str(tmp_path / "state"))


def test_mps_dtype_rules_from_the_device_name_alone():
    mps = torch.device("mps")  # a device name needs no Apple GPU
    auto = pick_dtype("auto", mps, force_upcast=False)
    assert auto.dtype == torch.float16 and set(auto.halves.values()) == {torch.float16}
    assert "mps" in auto.reason and "bf16" in auto.reason
    assert pick_dtype("auto", mps, force_upcast=True).dtype == torch.float32
    assert pick_dtype(None, mps, force_upcast=False).dtype == torch.float16
    for name in ("fp32", "fp16", "bf16"):  # asked for: what was asked, never an autocast mix
        choice = pick_dtype(name, mps, force_upcast=False)
        assert choice.dtype == DTYPES[name] and set(choice.halves.values()) == {DTYPES[name]}


def test_mps_is_listed_and_chosen_only_where_it_exists():
    has_mps = torch.backends.mps.is_available()
    assert ("mps" in available_devices()) == has_mps
    if has_mps:
        assert pick_device("mps").type == "mps"
    else:
        with pytest.raises(DeviceUnavailable, match="MPS is not available"):
            pick_device("mps")


def test_mps_is_in_the_device_list_and_picked_by_auto_where_torch_has_it(monkeypatch):
    """Simulated, not real (no Apple GPU here): torch made to report MPS available and CUDA not, as on a
    Mac. The window's device list (the warm-up job's answer) and the CLI's `--device auto` then have it."""
    from vaestudio.ui.jobs import warm_up

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices() == ["auto", "cpu", "mps"]
    assert warm_up(progress=None, should_stop=None) == ["auto", "cpu", "mps"]
    assert pick_device("auto") == pick_device(None) == pick_device("mps") == torch.device("mps")
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(DeviceUnavailable, match="CUDA is not available"):
        pick_device("cuda")
