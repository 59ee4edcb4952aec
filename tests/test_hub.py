"""Hugging Face ids: download with progress from a loopback hub, the offline cache, clean errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers.servers import hub_handler, serve

from vaestudio.core.errors import VaeLoadError
from vaestudio.core.sources import download_from_hub, load_vae


@pytest.fixture
def hub_root(tmp_path, vae_dir):
    root = tmp_path / "hub"
    shutil.copytree(vae_dir, root / "org" / "tiny-vae" / "vae")
    return root


def run_cli(*args, env=None, timeout=120):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "vaestudio", *args], capture_output=True, text=True,
                          env=full, timeout=timeout)


def test_download_with_progress_then_offline_from_cache(tmp_path, hub_root, tiny_model):
    log, seen = [], []
    cache = tmp_path / "cache"
    with serve(hub_handler(hub_root, log)) as url:
        folder = download_from_hub("org/tiny-vae", cache_dir=cache, endpoint=url, progress=seen.append)
    assert (folder / "config.json").is_file() and folder.name == "vae"  # found the vae/ subfolder itself
    weights = [p for p in seen if p.filename == "diffusion_pytorch_model.safetensors"]
    assert weights and weights[-1].done == weights[-1].total > 0
    assert any("resolve/main/vae/diffusion_pytorch_model.safetensors" in line for line in log)
    # the cache now holds it: with HF_HUB_OFFLINE=1 the CLI loads it with no server at all
    r = run_cli("inspect-vae", "org/tiny-vae/vae", "--json",
                env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert '"format": "hub"' in r.stdout and '"latent_channels": 4' in r.stdout


def test_prepared_cache_loads_offline_and_equals_weights(tmp_path, vae_dir, tiny_model):
    """A cache laid out by hand the way huggingface_hub lays it out (refs/main -> snapshot)."""
    cache = tmp_path / "hf"
    snap = cache / "models--stabilityai--sd-vae-ft-mse" / "snapshots" / ("1" * 40)
    shutil.copytree(vae_dir, snap)
    (cache / "models--stabilityai--sd-vae-ft-mse" / "refs").mkdir(parents=True)
    (cache / "models--stabilityai--sd-vae-ft-mse" / "refs" / "main").write_text("1" * 40)
    r = run_cli("reconstruct", str(tmp_path / "none.png"), "--vae", "stabilityai/sd-vae-ft-mse", "--out",
                str(tmp_path), env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert r.returncode == 3  # the VAE loaded; only the image is missing
    assert "none.png: no such file" in r.stderr
    folder = download_from_hub("stabilityai/sd-vae-ft-mse", cache_dir=cache)
    vae = load_vae(folder)
    for k, v in tiny_model.state_dict().items():
        assert (v == vae.model.state_dict()[k]).all()


def test_offline_and_not_cached_fails_at_once(tmp_path):
    t0 = time.monotonic()
    r = run_cli("inspect-vae", "runwayml/stable-diffusion-v1-5/vae",
                env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")})
    assert r.returncode == 4
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "not in the local cache" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert time.monotonic() - t0 < 60


def test_unreachable_hub_is_a_clean_error(tmp_path):
    # a closed port on loopback stands for a machine with no network
    with pytest.raises(VaeLoadError, match="could not be reached"):
        download_from_hub("org/whatever", cache_dir=tmp_path, endpoint="http://127.0.0.1:9")


def test_missing_repo_files(tmp_path, hub_root):
    with serve(hub_handler(hub_root, [])) as url, pytest.raises(VaeLoadError, match="no VAE config.json"):
        download_from_hub("org/other", cache_dir=tmp_path, endpoint=url)
