"""The MNIST studio's core: IDX files, downloads, determinism, exact resume, safe checkpoints."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import SHARED_MNIST
from helpers.data import idx_bytes
from helpers.servers import files_handler, serve
from helpers.tally import count

from vaestudio.core.errors import CheckpointError, DataError, DatasetMissing, DownloadError
from vaestudio.core.mnist.data import download_dataset, load_dataset, load_idx_folder, read_idx
from vaestudio.core.mnist.train import (
    EpochRecord,
    StepRecord,
    StopRecord,
    TrainConfig,
    Trainer,
    clean_stale_temporaries,
    read_checkpoint,
)


def digits(n=300, seed=0):
    """Blurry synthetic strokes: enough structure for the VAE to learn something."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        r, c = rng.integers(6, 22, size=2)
        x[i, r - 4 : r + 4, c - 1 : c + 2] = 255
        x[i, r - 1 : r + 2, c - 4 : c + 4] = rng.integers(0, 2) * 255
    return x


def test_idx_valid_gz_truncated_and_magic(tmp_path):
    x = digits(10)
    (tmp_path / "a").write_bytes(idx_bytes(x))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(x)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), x)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), x)
    (tmp_path / "cut").write_bytes(idx_bytes(x)[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + idx_bytes(x)[2:])
    with pytest.raises(DataError, match="wrong magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "hdr").write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(DataError, match="header is truncated"):
        read_idx(tmp_path / "hdr")


def test_split_rules(tmp_path, capsys):
    only = tmp_path / "only"
    only.mkdir()
    (only / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(digits(100)))
    (only / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(100) % 10))
    ds = load_idx_folder(only)
    assert (len(ds.train_x), len(ds.heldout_x)) == (80, 20) and ds.heldout_y[0] == 0
    assert len(load_idx_folder(only, holdout_fraction=0.5).heldout_x) == 50
    both = tmp_path / "both"
    both.mkdir()
    (both / "train-images-idx3-ubyte").write_bytes(idx_bytes(digits(60)))
    (both / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(digits(30)))
    ds = load_idx_folder(both)
    assert (len(ds.train_x), len(ds.heldout_x)) == (60, 30) and "official" in ds.split
    assert (ds.train_y == -1).all()
    with pytest.raises(DatasetMissing, match="no mnist data here"):  # the core says what is wrong ...
        load_dataset("mnist", tmp_path / "nothing")
    from vaestudio.cli import main

    assert main(["train-mnist", "--data", str(tmp_path / "nothing")]) == 3  # ... and the CLI how to fix it
    assert "run with --download or point --data at the IDX files" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason=f"shared MNIST not found at {SHARED_MNIST}")
def test_shared_mnist_uses_the_agreed_split():
    ds = load_dataset("mnist", SHARED_MNIST)
    assert (len(ds.train_x), len(ds.heldout_x)) == (8000, 2000)
    assert ds.train_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert ds.train_x.dtype == np.float32 and ds.train_x.max() == 1.0


def test_image_folder_dataset(tmp_path):
    from PIL import Image

    for label in ("3", "7"):
        (tmp_path / label).mkdir()
        for i, d in enumerate(digits(5, seed=int(label))):
            Image.fromarray(255 - d).resize((56, 56)).save(tmp_path / label / f"{i}.png")  # dark on light
    ds = load_dataset(str(tmp_path))
    assert ds.train_x.shape[1] == 784 and len(ds.train_x) + len(ds.heldout_x) == 10
    assert ds.train_x.mean() < 0.5  # inverted to light on dark
    assert set(ds.train_y.tolist()) <= {3, 7}


# -- downloads against a loopback server ---------------------------------------------------------

@pytest.fixture
def mnist_files():
    files = {
        "train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(digits(50))),
        "train-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.arange(50) % 10)),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(digits(20, 1))),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(np.arange(20) % 10)),
    }
    sums = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    return files, sums


def test_download_success_with_progress(tmp_path, mnist_files):
    files, sums = mnist_files
    seen = []
    with serve(files_handler(files)) as url:
        folder = download_dataset("mnist", tmp_path / "m", mirrors=[url], checksums=sums,
                                  progress=lambda n, d, t: seen.append((n, d, t)))
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert seen[-1][1] == seen[-1][2]
    ds = load_idx_folder(folder)
    assert (len(ds.train_x), len(ds.heldout_x)) == (50, 20)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, mnist_files):
    files, sums = mnist_files
    sums = dict(sums, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with serve(files_handler(files)) as url, pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset("mnist", tmp_path, mirrors=[url], checksums=sums)
    assert not any(p.name.startswith("train-images") or p.suffix == ".part" for p in tmp_path.iterdir())


def test_download_cut_mid_file_leaves_nothing(tmp_path, mnist_files):
    files, sums = mnist_files
    with serve(files_handler(files, cut_after=100)) as url, pytest.raises(DownloadError, match="closed after 100"):
        download_dataset("mnist", tmp_path, mirrors=[url], checksums=sums)
    assert list(tmp_path.iterdir()) == []


def test_download_offline_is_clear(tmp_path, mnist_files):
    _, sums = mnist_files
    with pytest.raises(DownloadError, match="offline"):
        download_dataset("mnist", tmp_path, mirrors=["http://127.0.0.1:9/"], checksums=sums, timeout=3)
    assert list(tmp_path.iterdir()) == []


# -- training ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    x = digits(400).reshape(400, 784).astype(np.float32) / 255.0
    return x[:320], x[320:]


def small_config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "hidden_dim": 64, "latent_dim": 4, "seed": 3, **kw})


def test_same_seed_same_losses(data):
    a = [r for r in Trainer(small_config(), *data).run() if isinstance(r, (StepRecord, EpochRecord))]
    b = [r for r in Trainer(small_config(), *data).run() if isinstance(r, (StepRecord, EpochRecord))]
    assert [(r.epoch, r.loss if isinstance(r, StepRecord) else r.heldout_loss) for r in a] == \
           [(r.epoch, r.loss if isinstance(r, StepRecord) else r.heldout_loss) for r in b]
    c = [r.loss for r in Trainer(small_config(seed=4), *data).run() if isinstance(r, StepRecord)]
    assert c != [r.loss for r in a if isinstance(r, StepRecord)]
    epochs = [r for r in a if isinstance(r, EpochRecord)]
    assert epochs[1].train_loss < epochs[0].train_loss  # it learns
    assert all(abs(e.train_loss - (e.recon + e.kl)) < 1e-3 for e in epochs)


@pytest.mark.parametrize("stop_after", [3, 5, 7])  # inside epoch 1, at its end, inside epoch 2
def test_stop_and_resume_equals_uninterrupted(tmp_path, data, stop_after):
    full = Trainer(small_config(), *data)
    full_records = [r for r in full.run() if isinstance(r, EpochRecord)]
    part = Trainer(small_config(), *data)
    steps = []
    for r in part.run(should_stop=lambda: len(steps) >= stop_after):
        if isinstance(r, StepRecord):
            steps.append(r)
        if isinstance(r, StopRecord):
            assert r.reason == "stopped"
    ckpt = part.save(tmp_path / "run.safetensors")
    resumed = Trainer.resume(ckpt, *data)
    resumed_records = [r for r in resumed.run() if isinstance(r, EpochRecord)]
    assert [r.heldout_loss for r in resumed.history] == [r.heldout_loss for r in full_records]
    assert resumed_records[-1].train_loss == full_records[-1].train_loss
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_pause_blocks_at_a_batch_boundary(data):
    paused = {"on": True}
    trainer = Trainer(small_config(), *data)
    gen = trainer.run(should_pause=lambda: paused["on"])
    import threading

    threading.Timer(0.2, lambda: paused.update(on=False)).start()
    t0 = time.monotonic()
    first = next(gen)
    assert isinstance(first, StepRecord) and time.monotonic() - t0 >= 0.15


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path, data):
    train, held = data
    bad = train.copy()
    trainer = Trainer(small_config(epochs=3), bad, held)
    records = []
    for r in trainer.run():
        records.append(r)
        if isinstance(r, EpochRecord) and r.epoch == 1:
            trainer.save(tmp_path / "good.safetensors")
            trainer.train_x[:] = float("nan")  # the data goes bad during epoch 2
    stop = records[-1]
    assert isinstance(stop, StopRecord) and stop.reason == "diverged"
    assert "nan" in stop.message.lower() and "last good checkpoint" in stop.message
    good = Trainer.resume(tmp_path / "good.safetensors", train, held)
    assert all(torch.isfinite(p).all() for p in good.model.parameters())


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, data, monkeypatch):
    trainer = Trainer(small_config(epochs=1), *data)
    list(trainer.run())
    path = trainer.save(tmp_path / "c.safetensors")
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    count("faults")
    with pytest.raises(CheckpointError, match="No space left on device.*previous one is kept"):
        trainer.save(path)
    monkeypatch.undo()
    if path.read_bytes() != before:
        count("files_lost")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_process_killed_mid_write_leaves_old_checkpoint(tmp_path, data):
    trainer = Trainer(small_config(epochs=1), *data)
    list(trainer.run())
    path = trainer.save(tmp_path / "c.safetensors")
    before = read_checkpoint(path)[0]["model.fc1.weight"].clone()
    code = f"""
import os, torch, time
from vaestudio.core.mnist.train import write_checkpoint
big = {{f"t{{i}}": torch.zeros(4_000_000) for i in range(40)}}
orig = os.fsync
def slow(fd):
    print("writing", flush=True); time.sleep(30)
os.fsync = slow
write_checkpoint({str(path)!r}, big, {{"vaestudio": "mnist-vae"}})
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # the temporary file is written, not yet in place
    proc.send_signal(signal.SIGKILL)
    count("faults")
    proc.wait(10)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert torch.equal(read_checkpoint(path)[0]["model.fc1.weight"], before)
    removed = clean_stale_temporaries(path)
    assert removed and [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_checkpoint_opens_in_the_inspector(tmp_path, data):
    from PIL import Image

    from vaestudio.core.images import load_image
    from vaestudio.core.pipeline import reconstruct
    from vaestudio.core.sources import load_vae

    trainer = Trainer(small_config(epochs=1), *data)
    list(trainer.run())
    ckpt = trainer.save(tmp_path / "m.safetensors")
    vae = load_vae(ckpt)
    assert vae.info.format == "mnist" and vae.info.latent_channels == 4
    Image.fromarray(255 - digits(1)[0]).resize((100, 100)).save(tmp_path / "d.png")
    rec = reconstruct(vae, load_image(tmp_path / "d.png"))
    assert rec.decoded.shape == (28, 28, 3) and tuple(rec.encoded.latent.shape) == (4,)
    assert any("inverted" in n for n in rec.encoded.notes)
    with pytest.raises(CheckpointError):
        Trainer.resume(tmp_path / "d.png", *data)


def _dead_pid() -> int:
    """The process id of a process that has ended (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_cleaning_removes_only_this_checkpoints_temporaries_that_nobody_is_writing(tmp_path):
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes(b"the checkpoint")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = _dead_pid()
        stale = tmp_path / f".c.safetensors.{dead}-7.tmp"  # its writer was killed mid-write
        writing = tmp_path / f".c.safetensors.{writer.pid}-7.tmp"  # another process is writing it now
        forgotten = tmp_path / f".c.safetensors.{writer.pid}-8.tmp"  # that pid's, but untouched for a day
        other = tmp_path / f".other.safetensors.{dead}-7.tmp"  # another file's temporary
        not_ours = tmp_path / ".c.safetensors.notes.tmp"  # not named as core.files names temporaries
        for p in (stale, writing, forgotten, other, not_ours):
            p.write_bytes(b"partial")
        a_day_ago = time.time() - 86400
        os.utime(forgotten, (a_day_ago, a_day_ago))
        removed = clean_stale_temporaries(ckpt)
    finally:
        writer.kill()
        writer.wait(10)
    assert sorted(removed) == sorted([stale, forgotten])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (ckpt, writing, other, not_ours))


def test_train_mnist_makes_the_output_folder_or_refuses_before_training(tmp_path, capsys):
    from helpers.data import mnist_folder

    from vaestudio.cli import main

    data, _ = mnist_folder(tmp_path, n=200)
    small = ["train-mnist", "--dataset", str(data), "--epochs", "1", "--hidden-dim", "16", "--latent-dim", "2"]
    out = tmp_path / "missing" / "deeper" / "m.safetensors"
    assert main([*small, "--out", str(out)]) == 0
    assert read_checkpoint(out)[1]["vaestudio"] == "mnist-vae"
    assert "epoch   1" in capsys.readouterr().out
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main([*small, "--out", str(blocker / "m.safetensors")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == f"error: {blocker}: cannot create the output folder (File exists)"
    assert captured.out == ""  # refused before the run, not after it
    assert main([*small, "--out", str(tmp_path / "missing")]) == 2  # a folder, not a file
    captured = capsys.readouterr()
    assert "is a folder" in captured.err and captured.out == ""
