"""The process starts that the in-process spawn tests (test_platforms.py) do not cover, under ``spawn`` (the
start method of Windows and macOS): `python -m vaestudio evaluate` with DataLoader workers (how a console
script and each torchrun rank start), and torchrun's two ranks each with a spawned DataLoader worker,
whose merged rows equal one process reading in-process. The frozen app's spawn is packaging/build.py
--test's; the window's evaluation always asks for spawn (tests/test_evaluate_tab.py runs it)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT
from helpers.evaluation import comparable_rows, make_crops, read_rows


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", VAESTUDIO_MP_START="spawn")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_module_run_and_torchrun_ranks_with_spawned_workers_equal_reading_in_process(tmp_path, vae_dir):
    crops = make_crops(tmp_path / "photos données", limit=5, stride=200)[:5]
    data = tmp_path / "list é.txt"
    data.write_text("\n".join(map(str, crops)) + "\n", encoding="utf-8")
    args = ["evaluate", str(data), "--vae", str(vae_dir), "--size", "32", "--batch-size", "1", "--metrics", "psnr,mae",
            "--no-report"]
    run([sys.executable, "-m", "vaestudio", *args, "--workers", "0", "--out", str(tmp_path / "in process")])
    run([sys.executable, "-m", "vaestudio", *args, "--workers", "2", "--out", str(tmp_path / "spawned")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaestudio"]
    run([*torchrun, *args, "--workers", "1", "--out", str(tmp_path / "ranks")])
    expected = comparable_rows(tmp_path / "in process" / "rows.csv")
    assert len(expected) == 5 and not any(r["error"] for r in read_rows(tmp_path / "in process" / "rows.csv"))
    assert comparable_rows(tmp_path / "spawned" / "rows.csv") == expected
    assert comparable_rows(tmp_path / "ranks" / "rows.csv") == expected
    assert [len(read_rows(tmp_path / "ranks" / "state" / f"rank{k}" / "rows.csv")) for k in (0, 1)] == [3, 2]
