"""`vaestudio finetune` under torchrun: 2 CPU processes (gloo) with the same global batch end with the weights of
one process (within 1e-5); each rank reads its share of the batch and rank 0 alone prints and writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch
from conftest import ROOT, tiny_vae
from helpers.finetune import make_images
from safetensors.torch import load_file

from vaestudio.cli import main


def torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """torchrun with 2 processes in a session of their own, all of it killed if it outlives ``timeout``
    (a rank waiting for another would otherwise hang the suite)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaestudio", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"torchrun did not finish in {timeout} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_processes_equal_one(tmp_path, capsys):
    make_images(tmp_path / "imgs", n=5)
    make_images(tmp_path / "val", n=1)
    # groups of 4 channels (a folder's config.json says so): with a GroupNorm per channel, as a single file's
    # guessed 32 groups of 32 channels would give, the biases before each norm have no gradient but rounding
    # noise, which Adam scales up to the learning rate in either run
    src = tmp_path / "vae"
    tiny_vae(norm_num_groups=8).save_pretrained(src)
    args = ["finetune", str(tmp_path / "imgs"), "--vae", str(src), "--size", "32", "--batch", "4", "--lr", "1e-3",
            "--steps", "3", "--every", "3", "--val", str(tmp_path / "val"), "--ema", "0.5", "--json"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(before)
    one_printed = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    r = torchrun([*args, "--out", str(tmp_path / "two")])
    assert r.returncode == 0, r.stderr[-3000:]
    printed = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [p["event"] for p in printed] == [p["event"] for p in one_printed] == ["validation", "checkpoint", "finished"]
    assert "on 2 processes" in r.stderr and r.stderr.count("fine-tuning the decoder") == 1  # rank 0 alone speaks
    a, b = load_file(str(tmp_path / "one" / "vae.safetensors")), load_file(str(tmp_path / "two" / "vae.safetensors"))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-5, worst
    base = load_file(str(src / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(a["decoder.conv_out.weight"], base["decoder.conv_out.weight"])
    # the held-out metrics agree too (rank 0 measures them on the same weights)
    assert abs(printed[0]["current"]["psnr"] - one_printed[0]["current"]["psnr"]) < 1e-3
    assert printed[0]["train_loss"] == pytest_approx(one_printed[0]["train_loss"])


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5)


def test_a_rank_that_cannot_start_stops_all_and_is_said_once(tmp_path):
    """Rank 0 alone checks --out; when it cannot be written every rank stops (none waits for the others)."""
    make_images(tmp_path / "imgs", n=2)
    src = tmp_path / "vae"
    tiny_vae(norm_num_groups=8).save_pretrained(src)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = torchrun(["finetune", str(tmp_path / "imgs"), "--vae", str(src), "--size", "32", "--batch", "2", "--steps", "2",
                  "--out", str(blocker / "out")])
    assert r.returncode != 0
    assert r.stderr.count("error: ") == 1 and "the output folder cannot be written" in r.stderr, r.stderr[-3000:]
