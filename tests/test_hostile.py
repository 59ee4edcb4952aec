"""Hostile input and faults: a generated corpus, property-based fuzzing, injected failures.

Only the project's own error types may come out of a loader; nothing may run code from a file; a
failed write never costs the previous file. The run prints its figures at the end (conftest).
``--fuzz-long`` (or VAESTUDIO_FUZZ_EXAMPLES) raises the fuzzing budget for a longer run.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import threading

import numpy as np
import pytest
from helpers.corpus import build_corpus, hostile_weight_files, image_bytes, tiny_vae_files
from helpers.gui import make_window
from helpers.tally import count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaestudio.core.errors import ImageLoadError, VaeLoadError
from vaestudio.core.images import load_image
from vaestudio.core.sources import load_vae, prepare_source
from vaestudio.core.weights import read_weight_file

EXAMPLES = int(os.environ.get("VAESTUDIO_FUZZ_EXAMPLES", "0")) or (2000 if "--fuzz-long" in sys.argv else 120)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    marker = root / "CODE_RAN"
    files = build_corpus(root / "files", marker)
    count("corpus", len(files))
    return files, marker


def test_corpus_only_gives_clear_errors(corpus):
    files, marker = corpus
    outcomes = {"ok": 0, "refused": 0}
    for path, kind, note in files:
        count("inputs")
        try:
            if kind == "image":
                load_image(path)
            else:
                load_vae(path)
            outcomes["ok"] += 1
        except (ImageLoadError, VaeLoadError) as exc:
            msg = str(exc)
            assert msg and "\n" not in msg and "Traceback" not in msg, (note, msg)
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - this is what the test exists to catch
            count("crashes")
            raise AssertionError(f"{path.name} ({note}) raised {type(exc).__name__}: {exc}") from exc
    if marker.exists():
        count("code_executions")
    assert not marker.exists(), "a file ran code while being loaded"
    assert outcomes["ok"] >= 10 and outcomes["refused"] >= 30, outcomes


def test_corpus_expected_verdicts(corpus):
    files, _ = corpus
    by_name = {p.name: p for p, _, _ in files}
    for name in ("ok.png", "ok.jpg", "ok.webp", "ok.bmp", "ok.tiff", "ok.gif", "mode_I_16.tiff", "orientation_6.jpg",
                 "mislabelled.jpg"):
        assert load_image(by_name[name]).pixels.shape[2] == 3, name
    for name, expect in (("bomb.png", "decompression bomb"), ("empty.png", "empty"),
                         ("truncated.png", "truncated|decode"), ("text.png", "not an image")):
        with pytest.raises(ImageLoadError, match=expect):
            load_image(by_name[name])
    for name, expect in (("hostile_system_zip.ckpt", "refused"), ("hostile_exec_plain.bin", "refused"),
                         ("lora.safetensors", "LoRA"), ("non_finite.safetensors", "NaN or Inf"),
                         ("half_the_keys.safetensors", "incomplete|missing|decoder"),
                         ("trailing_junk.safetensors", "unexpected data"), ("overlap.safetensors", "overlap")):
        with pytest.raises(VaeLoadError, match=expect):
            load_vae(by_name[name])


# -- property-based fuzzing --------------------------------------------------------------------

def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    if cut is not None and b:
        b = b[: cut % len(b)]
    return bytes(b)


MUTATIONS = st.tuples(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), max_size=12),
                      st.one_of(st.none(), st.integers(0, 10**7)))
VALID_IMAGES = [image_bytes(f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_image_loader_random_bytes(data):
    count("inputs")
    try:
        load_image(data)
    except ImageLoadError:
        pass


@FUZZ
@given(st.sampled_from(range(len(VALID_IMAGES))), MUTATIONS)
def test_fuzz_image_loader_mutated_files(which, mutation):
    count("inputs")
    try:
        img = load_image(_mutate(VALID_IMAGES[which], *mutation))
        assert img.pixels.dtype == np.float32 and np.isfinite(img.pixels).all()
    except ImageLoadError:
        pass


def unpickle_checkpoint(data: bytes) -> None:
    """Unpickle a torch zip checkpoint's data.pkl as an unsafe loader would (storages left out): the proof that a
    hostile file's payload really runs, without ever asking torch.load for an unsafe load."""
    import pickle
    import zipfile

    class Unsafe(pickle.Unpickler):
        def find_class(self, module, name):  # any global is resolved; torch's tensor rebuilds skipped
            return (lambda *a, **k: None) if module.startswith("torch") else super().find_class(module, name)

        def persistent_load(self, pid):
            return None

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        Unsafe(io.BytesIO(z.read(name))).load()


@pytest.fixture(scope="module")
def weights_to_mutate(tmp_path_factory):
    """Valid files and hostile ones that really try to create ``marker`` (checked here: unpickled
    unsafely, they do), so the fuzzing below fails if a mutated file ever runs code."""
    import pickle


    folder = tmp_path_factory.mktemp("valid")
    marker = folder / "CODE_RAN"
    files = tiny_vae_files(folder)
    data = {k: files[k].read_bytes() for k in ("safetensors", "ckpt")}
    data.update(hostile_weight_files(files, marker))
    unpickle_checkpoint(data["hostile_zip"])
    assert marker.exists(), "the hostile checkpoint does not run its payload"
    marker.unlink()
    pickle.loads(data["hostile_plain"])
    assert marker.exists(), "the hostile pickle does not run its payload"
    marker.unlink()
    return data, marker


def test_fuzz_weight_loader_mutated_files(weights_to_mutate, tmp_path_factory):
    data, marker = weights_to_mutate
    folder = tmp_path_factory.mktemp("fuzzw")

    @FUZZ
    @given(st.sampled_from(sorted(data)), MUTATIONS, st.sampled_from([".safetensors", ".ckpt", ".bin"]))
    def run(kind, mutation, suffix):
        count("inputs")
        marker.unlink(missing_ok=True)  # each example is judged alone (hypothesis replays the failing one)
        p = folder / f"fuzz{suffix}"
        p.write_bytes(_mutate(data[kind], *mutation))
        try:
            prepare_source(p)
        except VaeLoadError:
            pass
        if marker.exists():
            count("code_executions")
        assert not marker.exists(), f"a mutated {kind} file ran code"

    run()


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([".safetensors", ".ckpt", ".pt"]))
def test_fuzz_weight_loader_random_bytes(tmp_path_factory, data, suffix):
    count("inputs")
    p = tmp_path_factory.getbasetemp() / f"random{suffix}"
    p.write_bytes(data)
    try:
        read_weight_file(p)
    except VaeLoadError:
        pass


# -- injected faults ----------------------------------------------------------------------------

def test_disk_full_during_png_export_keeps_previous_file(tmp_path, monkeypatch):
    from PIL import Image

    from vaestudio.core.images import save_png

    target = tmp_path / "recon.png"
    save_png(np.zeros((4, 4, 3), np.float32), target)
    before = target.read_bytes()

    def full(self, fp, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    count("faults")
    with pytest.raises(OSError, match="No space"):
        save_png(np.ones((4, 4, 3), np.float32), target)
    monkeypatch.undo()
    if target.read_bytes() != before:
        count("files_lost")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["recon.png"]  # no temporary left behind


def test_gui_export_to_unwritable_place_reports_and_keeps_file(qtbot, tmp_path, vae_dir, monkeypatch):
    from PIL import Image


    win = make_window(tmp_path)
    qtbot.addWidget(win)
    win.session.load_vae(str(vae_dir))
    img = tmp_path / "a.png"
    Image.fromarray((np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)).save(img)
    win.open_images([str(img)])
    qtbot.waitUntil(lambda: win.session.result is not None, timeout=30000)
    out = tmp_path / "out.png"
    win.save_export("recon", str(out))
    qtbot.waitUntil(lambda: out.is_file() and not win.runner.busy(), timeout=10000)
    before = out.read_bytes()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    count("faults")
    win.save_export("recon", str(out))
    qtbot.waitUntil(lambda: "Read-only file system" in win.last_error, timeout=10000)
    monkeypatch.undo()
    assert "Read-only file system" in win.last_error
    assert out.read_bytes() == before
    win.close()


def test_exceptions_in_workers_reach_the_window(qtbot, tmp_path):


    win = make_window(tmp_path)
    qtbot.addWidget(win)

    def broken(*, progress, should_stop):
        raise KeyError("something inside the worker")

    count("faults")
    win.runner.start("x", broken, on_error=win.show_error)
    qtbot.waitUntil(lambda: "KeyError" in win.last_error, timeout=5000)
    win.close()


def test_uncaught_exceptions_are_logged_and_shown(qtbot, tmp_path, monkeypatch):
    from vaestudio.ui import crash

    monkeypatch.setattr(crash, "log_path", lambda: tmp_path / "logs" / "vaestudio.log")
    crash.setup_logging()
    shown = []
    old_hook, old_thread_hook = sys.excepthook, threading.excepthook
    try:
        crash.install_handlers(shown.append)
        count("faults", 2)
        try:
            raise ValueError("boom in a slot")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        t = threading.Thread(target=lambda: 1 / 0, name="worker-x")
        t.start()
        t.join()
        qtbot.waitUntil(lambda: len(shown) == 2, timeout=5000)
    finally:
        sys.excepthook, threading.excepthook = old_hook, old_thread_hook
        for h in list(crash.log.handlers):
            h.flush()
            crash.log.removeHandler(h)
    assert "ValueError: boom in a slot" in shown[0] and "ZeroDivisionError" in shown[1]
    text = (tmp_path / "logs" / "vaestudio.log").read_text()
    assert "boom in a slot" in text and "Traceback" in text and "worker-x" in text


@pytest.mark.parametrize("job", ["download", "encode", "training"])
def test_closing_the_window_during_each_kind_of_job(qtbot, tmp_path, vae_dir, job, monkeypatch):
    import gzip
    import shutil
    import time

    from helpers.servers import serve, slow_hub
    from PIL import Image


    win = make_window(tmp_path)
    win.show()
    count("faults")
    if job == "download":
        root = tmp_path / "hub"
        shutil.copytree(vae_dir, root / "org" / "slow" / "vae")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        with serve(slow_hub(root)) as url:
            import vaestudio.core.sources as sources

            real = sources.download_from_hub
            monkeypatch.setattr(sources, "download_from_hub",
                                lambda *a, **k: real(*a, **dict(k, endpoint=url, cache_dir=tmp_path / "cache")))
            win.session.load_vae("org/slow/vae")
            qtbot.waitUntil(lambda: win.inspector.vae_panel.progress.value() > 0, timeout=20000)
            t0 = time.monotonic()
            win.close()
    elif job == "encode":
        win.session.load_vae(str(vae_dir))
        qtbot.waitUntil(lambda: win.session.vae is not None, timeout=20000)
        win.session.prefs.tile = "on"
        win.session.vae.encode_tile, win.session.vae.tile_overlap = 32, 16
        p = tmp_path / "big.png"
        Image.fromarray((np.random.default_rng(0).random((384, 384, 3)) * 255).astype(np.uint8)).save(p)
        win.open_images([str(p)])
        qtbot.waitUntil(lambda: "encode" in win.runner.running, timeout=10000)
        t0 = time.monotonic()
        win.close()
    else:
        rng = np.random.default_rng(0)
        x = (rng.random((2000, 28, 28)) > 0.8).astype(np.uint8) * 255
        d = tmp_path / "data"
        d.mkdir()
        header = bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in x.shape)
        (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + x.tobytes()))
        tab = win.training
        tab.controls.data_dir.setText(str(d))
        tab.controls.epochs.setValue(100)
        tab.controls.start_btn.click()
        qtbot.waitUntil(lambda: len(tab.plots.step_x) > 0, timeout=20000)
        from helpers.gui import answer_next_dialog

        answer_next_dialog("Discard")  # the window asks whether to save the unsaved run
        t0 = time.monotonic()
        win.close()
    assert time.monotonic() - t0 < 5
    assert not win.runner.busy() and not win.training.is_running()
