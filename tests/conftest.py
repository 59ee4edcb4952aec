"""Shared fixtures: tiny real AutoencoderKL models written to disk in each layout users download."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The reference comparisons (equal to diffusers within 1e-5) are fp32 contracts: on a CPU with native
# bf16, --dtype auto would run them in bf16. tests/test_dtype.py sets this per test to try both kinds of
# CPU, and runs bf16 for real.
os.environ.setdefault("VAESTUDIO_CPU_BF16", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_IMAGES = SHARED / "data" / "images"
SHARED_MNIST = SHARED / "data" / "mnist"

#: Four blocks, so the downscale factor is 8 as in real SD VAEs, but only 32 channels wide.
TINY_CONFIG = dict(
    block_out_channels=(32, 32, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=32,
    sample_size=64,
)


def tiny_vae(latent_channels: int = 4, quant: bool = True, seed: int = 0, **over):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    cfg = dict(TINY_CONFIG, latent_channels=latent_channels, use_quant_conv=quant, use_post_quant_conv=quant, **over)
    model = AutoencoderKL(**cfg).eval()
    # random init leaves the output near zero; perturb every weight so layouts are really compared
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def ldm_state_dict(model, prefix: str = "") -> dict:
    from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm

    return {prefix + k: v.detach().clone().contiguous() for k, v in diffusers_to_ldm(model.state_dict()).items()}


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_vae()


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory, tiny_model) -> Path:
    """A diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
    d = tmp_path_factory.mktemp("diffusers_vae")
    tiny_model.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def ldm_file(tmp_path_factory, tiny_model) -> Path:
    """A community-style single file: LDM keys with the first_stage_model. prefix."""
    from safetensors.torch import save_file

    p = tmp_path_factory.mktemp("ldm") / "community_vae.safetensors"
    save_file(ldm_state_dict(tiny_model, "first_stage_model."), str(p))
    return p


@pytest.fixture
def rgb_image(tmp_path) -> Path:
    """A smooth, real PNG with an odd size (not a multiple of 8)."""
    from PIL import Image

    h, w = 45, 61
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 7.0)], axis=2)
    p = tmp_path / "gradient.png"
    Image.fromarray((arr * 255).astype(np.uint8)).save(p)
    return p


@pytest.fixture
def win(qtbot, tmp_path):
    """The real main window, shown offscreen, closed at the end with no worker left behind."""
    from helpers.gui import make_window

    w = make_window(tmp_path)
    w.show()
    yield w
    w._close_approved = True  # no save question at teardown (not qtbot.addWidget: it closes first)
    w.close()
    assert not w.runner.busy(), "a worker thread outlived the window"


@pytest.fixture(scope="session", autouse=True)
def _isolated_settings(tmp_path_factory):
    """No test reads or writes the user's real settings (the window stores them as an ini file)."""
    from PySide6.QtCore import QSettings

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path_factory.mktemp("qsettings")))


@pytest.fixture(autouse=True)
def _no_qt_leaks(request):
    """A GUI test fails if it leaves a worker thread running or a top-level window open."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    import time

    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    before = {id(w) for w in app.topLevelWidgets()} if app is not None else set()
    yield
    from vaestudio.ui.workers import Worker

    app = QApplication.instance()
    deadline = time.monotonic() + 5
    while Worker.running_workers() and time.monotonic() < deadline:  # bounded: a closing job may end
        app.processEvents()
        time.sleep(0.01)
    running = [w.label for w in Worker.running_workers()]
    app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()
    leaked = [f"{type(w).__name__} '{w.windowTitle()}'" for w in app.topLevelWidgets()
              if w.isVisible() and id(w) not in before]
    for w in app.topLevelWidgets():  # do not let one failure cascade into the next tests
        if id(w) not in before:
            w.close()
    if running or leaked:
        pytest.fail(f"the test left worker threads running {running} or windows open {leaked}")


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"shared data not found at {path} (../shared is absent)")


def pytest_addoption(parser):
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="fuzz with a much larger budget (also: VAESTUDIO_FUZZ_EXAMPLES=N)")


def pytest_terminal_summary(terminalreporter):
    from helpers.tally import TALLY, summary

    if TALLY:
        terminalreporter.write_line(summary())
