"""`vaestudio evaluate` under torchrun: 2 processes on the CPU (gloo) give the rows and the summary of one
process, rFID included (within 1e-6), and a torchrun run resumes per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from helpers.evaluation import assert_close_json, comparable_rows, comparable_summary, make_crops, read_rows

from vaestudio.core.evaluate.fid import find_network

HAS_FID = find_network().available
N_IMAGES = 9  # odd: the ranks get different numbers of images


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixtures' models; the runs themselves get OMP_NUM_THREADS=1
    yield
    torch.set_num_threads(before)


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_processes_equal_one(tmp_path, vae_dir, ldm_file):
    crops = make_crops(tmp_path / "photos", limit=N_IMAGES, stride=200)[:N_IMAGES]
    data = tmp_path / "list.txt"
    data.write_text("\n".join(map(str, crops)) + "\n")
    metrics = "psnr,ssim,mae,color,fid" if HAS_FID else "psnr,ssim,mae,color"
    # batch size 1: each image goes through the same computation in both runs, so rows are equal to the bit
    args = ["evaluate", str(data), "--vae", str(vae_dir), "--vae", str(ldm_file), "--size", "32", "--batch-size", "1",
            "--workers", "0", "--metrics", metrics]
    run([sys.executable, "-m", "vaestudio", *args, "--out", str(tmp_path / "one")])
    two = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaestudio"]
    r = run([*torchrun, *args, "--out", str(two), "--json"])
    printed = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [p["vae"] for p in printed] == ["diffusers_vae0", "community_vae"]  # rank 0 alone prints

    # each rank kept its own rows; rank 0 merged them
    per_rank = [read_rows(two / "state" / f"rank{k}" / "rows.csv") for k in (0, 1)]
    assert [len(p) for p in per_rank] == [2 * 5, 2 * 4]
    order = sorted(str(p) for p in crops)
    assert {r["image"] for r in per_rank[1]} == set(order[1::2])
    assert comparable_rows(two / "rows.csv") == comparable_rows(tmp_path / "one" / "rows.csv")
    a, b = comparable_summary(tmp_path / "one" / "summary.json"), comparable_summary(two / "summary.json")
    assert b["world_size"] == 2 and a["world_size"] == 1
    a.pop("world_size"), b.pop("world_size")
    a["hardware"].pop("torch_threads"), b["hardware"].pop("torch_threads")
    assert_close_json(a, b, rel=1e-6)
    if HAS_FID:
        for x, y in zip(a["vaes"], b["vaes"], strict=True):
            assert x["rfid"] > 0 and y["rfid"] == pytest.approx(x["rfid"], rel=1e-6)
    assert (two / "report.html").is_file()

    # resuming the finished run on 2 processes: each rank finds its rows done; the same summary again
    r = run([*torchrun, *args, "--out", str(two), "--resume"])
    assert "10 rows already done" in r.stderr  # rank 0's share: 5 images x 2 VAEs
    c = comparable_summary(two / "summary.json")
    c.pop("world_size")
    c["hardware"].pop("torch_threads")
    assert_close_json(b, c, rel=1e-9)


def test_a_vae_that_fails_to_load_is_reported_once(tmp_path, vae_dir):
    """Every rank fails to load it, rank 0 alone says so (load failures come before the run starts)."""
    crops = make_crops(tmp_path / "photos", limit=2, stride=200)[:2]
    missing = tmp_path / "missing.safetensors"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaestudio"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    r = subprocess.run([*torchrun, "evaluate", *map(str, crops), "--vae", str(vae_dir), "--vae", str(missing),
                        "--size", "32", "--workers", "0", "--metrics", "psnr", "--no-report",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=420, cwd=ROOT)
    assert r.returncode != 0
    assert r.stderr.count(f"error: {missing}:") == 1, r.stderr[-3000:]
    assert len(read_rows(tmp_path / "out" / "rows.csv")) == 2  # the good VAE was evaluated on both images
