"""`vaestudio finetune --resume` continues with the same data order, crops, noise, Adam state and EMA: a run
stopped at step k (asked to stop, or a subprocess SIGKILLed after a checkpoint) and resumed ends with the weights of an
uninterrupted run, within 1e-6 on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from helpers.finetune import make_images, options, run_all, sd_file
from safetensors.torch import load_file

from vaestudio.cli import main
from vaestudio.core.finetune.options import Finished, Stopped
from vaestudio.core.finetune.run import finetune


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_weights(a, b, tol=1e-6):
    x, y = load_file(str(a)), load_file(str(b))
    assert set(x) == set(y)
    worst = max(float((x[k].float() - y[k].float()).abs().max()) for k in x)
    assert worst <= tol, worst


@pytest.mark.parametrize("kw", [dict(ema=0.7), dict(part="all")], ids=["decoder-ema", "all-kl"])
def test_stop_and_resume_equals_uninterrupted(tmp_path, kw):
    make_images(tmp_path / "imgs", n=3)
    make_images(tmp_path / "val", n=1)
    src, _ = sd_file(tmp_path)
    whole = options(tmp_path, src, steps=6, every=2, **kw)
    whole.out = str(tmp_path / "whole")
    assert isinstance(run_all(whole)[-1], Finished)

    opts = options(tmp_path, src, steps=6, every=2, **kw)
    done: list[int] = []
    events = []
    for ev in finetune(opts, should_stop=lambda: len(done) >= 3):
        events.append(ev)
        if type(ev).__name__ == "StepDone":
            done.append(ev.step)
    assert isinstance(events[-1], Stopped) and events[-1].step == 3
    resumed = options(tmp_path, src, steps=6, every=2, resume=True, **kw)
    tail = run_all(resumed)
    assert tail[0].step == events[-1].step and isinstance(tail[-1], Finished)
    assert_same_weights(tmp_path / "whole" / "vae.safetensors", tmp_path / "out" / "vae.safetensors")
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]  # the history came back with the checkpoint


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, capsys):
    make_images(tmp_path / "imgs", n=3)
    make_images(tmp_path / "val", n=1)
    src, _ = sd_file(tmp_path)
    args = ["finetune", str(tmp_path / "imgs"), "--vae", str(src), "--size", "32", "--batch", "2", "--lr", "1e-3",
            "--steps", "10", "--every", "3", "--val", str(tmp_path / "val"), "--ema", "0.8", "--json"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "vaestudio", *args]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0  # uninterrupted, in this process (1 thread)
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            ev = json.loads(line)
            if ev["event"] == "checkpoint" and ev["step"] == 3:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "vae.safetensors").exists()
    assert main([*args, "--out", str(tmp_path / "out"), "--resume"]) == 0
    assert "resuming at step 3 of 10" in capsys.readouterr().err
    assert_same_weights(tmp_path / "whole" / "vae.safetensors", tmp_path / "out" / "vae.safetensors")
    assert not list((tmp_path / "out").glob(".*.tmp"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_loses_no_checkpoint(tmp_path):
    """A checkpoint that cannot be written (the file size limit stands in for a full disk: the write fails with
    EFBIG as with ENOSPC) stops the run with one sentence; the previous checkpoint is intact and resumes."""
    import resource

    from vaestudio.core.errors import CheckpointError
    from vaestudio.core.finetune import state as fstate

    make_images(tmp_path / "imgs", n=2)
    make_images(tmp_path / "val", n=1)
    src, _ = sd_file(tmp_path)
    run_all(options(tmp_path, src, steps=2, every=2))
    ckpt = tmp_path / "out" / "checkpoint.safetensors"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (ckpt.stat().st_size // 2, hard))
    try:
        with pytest.raises(CheckpointError, match="the previous one is kept"):
            run_all(options(tmp_path, src, steps=4, every=2, resume=True))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    _, meta = fstate.load(ckpt)
    assert json.loads(meta["progress"])["step"] == 2
    assert not list((tmp_path / "out").glob(".*.tmp"))
    assert isinstance(run_all(options(tmp_path, src, steps=4, every=2, resume=True))[-1], Finished)
