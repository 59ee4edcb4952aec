"""Latent noise at both ends of its range; metrics against references; latent analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaestudio.core.families import FAMILIES
from vaestudio.core.latents import channel_stats, latent_preview
from vaestudio.core.metrics import (
    color_shift,
    colorize,
    compute_metrics,
    lpips_status,
    psnr,
    ssim,
)
from vaestudio.core.noise import add_noise, edm_sigma, noise_like
from vaestudio.core.pictures import channel_mosaic

Z = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))


def test_strength_zero_and_large():
    r0 = add_noise(Z, FAMILIES["sd1"], strength=0.0, seed=1)
    assert torch.equal(r0.latent, Z) and math.isinf(r0.snr)
    big = add_noise(Z, FAMILIES["sd1"], strength=100.0, seed=1)
    torch.testing.assert_close(big.latent, Z + 100.0 * noise_like(Z, 1))
    assert big.snr < 1e-3 and big.snr_db < -30


def test_ddpm_equals_diffusers_scheduler_at_both_ends():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    eps = noise_like(Z, 3)
    for t in (0, 1, 500, 999):
        ours = add_noise(Z, FAMILIES["sdxl"], timestep=t, seed=3)
        ref = sched.add_noise(Z, eps, torch.tensor([t]))
        torch.testing.assert_close(ours.latent, ref)
    assert add_noise(Z, FAMILIES["sd1"], timestep=0, seed=3).snr > 500
    assert add_noise(Z, FAMILIES["sd1"], timestep=999, seed=3).snr < 0.01
    with pytest.raises(ValueError, match="between 0 and 999"):
        add_noise(Z, FAMILIES["sd1"], timestep=1000)


def test_edm_is_diffusers_edm_scheduler_preconditioned():
    """Playground v2.5 / Cosmos: the noise level at t is the Karras sigma of diffusers' EDM scheduler (a ramp of 11
    steps puts step i at t = 1000 (1 - i/10)); the decoded latent is add_noise's z + sigma eps preconditioned by
    c_in and times sigma_data."""
    from diffusers import EDMDPMSolverMultistepScheduler

    sched = EDMDPMSolverMultistepScheduler()  # the class defaults: what Playground v2.5's pipeline config sets
    sched.set_timesteps(11)
    eps = noise_like(Z, 5)
    fam = FAMILIES["playground-v2.5"]
    data = sched.config.sigma_data
    for i in range(10):  # the ramp's last step is sigma_min; t = 0 is the clean latent (as for every schedule)
        t = 1000 * (1 - i / 10)
        sigma = float(sched.sigmas[i])
        assert edm_sigma(t, fam.edm) == pytest.approx(sigma, rel=1e-5)
        ref = sched.add_noise(Z, eps, sched.timesteps[i:i + 1]) * data / math.sqrt(sigma**2 + data**2)
        ours = add_noise(Z, fam, timestep=t, seed=5)
        torch.testing.assert_close(ours.latent, ref, rtol=1e-5, atol=1e-5)
    zero = add_noise(Z, fam, timestep=0, seed=5)
    assert torch.equal(zero.latent, Z) and math.isinf(zero.snr)
    assert add_noise(Z, fam, timestep=1000, seed=5).snr < 1e-3  # sigma 80 against a latent of std ~1
    assert FAMILIES["cosmos"].schedule == "edm" and fam.max_timestep == 1000


def test_flow_matching_at_both_ends():
    eps = noise_like(Z, 4)
    zero = add_noise(Z, FAMILIES["flux"], timestep=0, seed=4)
    assert torch.equal(zero.latent, Z) and math.isinf(zero.snr)
    full = add_noise(Z, FAMILIES["sd3"], timestep=1000, seed=4)
    torch.testing.assert_close(full.latent, eps)
    assert full.snr == 0.0
    mid = add_noise(Z, FAMILIES["sd3"], timestep=250, seed=4)
    torch.testing.assert_close(mid.latent, 0.75 * Z + 0.25 * eps)


def test_noise_is_seeded_and_arguments_checked():
    a = add_noise(Z, FAMILIES["sd1"], strength=0.5, seed=9).latent
    assert torch.equal(a, add_noise(Z, FAMILIES["sd1"], strength=0.5, seed=9).latent)
    assert not torch.equal(a, add_noise(Z, FAMILIES["sd1"], strength=0.5, seed=10).latent)
    with pytest.raises(ValueError):
        add_noise(Z, FAMILIES["sd1"])
    with pytest.raises(ValueError):
        add_noise(Z, FAMILIES["sd1"], strength=-1)
    with pytest.raises(ValueError):
        add_noise(Z, FAMILIES["sd1"], strength=float("nan"))


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((70, 53, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-7)
    assert ssim(a, a) == pytest.approx(1.0)
    assert -1 <= ssim(np.zeros((4, 4, 3)), np.ones((4, 4, 3))) <= 1  # smaller than the window


def test_psnr_mae_and_colour_shift():
    a = np.full((10, 10, 3), 0.5)
    b = a.copy()
    b[..., 2] += 0.1
    m = compute_metrics(a, b)
    assert m.psnr == pytest.approx(10 * math.log10(1 / (0.01 / 3)))
    assert m.mae == pytest.approx(0.1 / 3)
    assert m.color_shift == pytest.approx((0.0, 0.0, 0.1))
    assert math.isinf(psnr(a, a))
    assert color_shift(a, b) == m.color_shift


def test_the_evaluation_measures_as_the_window_does():
    """The evaluation measures whole batches (evaluate.measure.batch_metrics), the window and the CLI
    one image (compute_metrics): the same numbers, and the textbook formulas (numpy, float64)."""
    from vaestudio.core.evaluate.measure import batch_metrics

    rng = np.random.default_rng(3)
    originals = rng.random((3, 20, 24, 3), dtype=np.float32)
    recons = np.clip(originals + rng.normal(0, 0.05, originals.shape), 0, 1).astype(np.float32)
    rows = batch_metrics(torch.from_numpy(originals).permute(0, 3, 1, 2), torch.from_numpy(recons).permute(0, 3, 1, 2),
                         ("psnr", "mae", "color", "ssim"), use_lpips=False)
    for i in range(3):
        diff = recons[i].astype(np.float64) - originals[i].astype(np.float64)
        m = compute_metrics(originals[i], recons[i])
        assert m.psnr == pytest.approx(10 * math.log10(1 / np.mean(diff**2)), rel=1e-12) == rows["psnr"][i]
        assert m.mae == pytest.approx(np.abs(diff).mean(), rel=1e-12) == rows["mae"][i]
        shift = tuple(diff.reshape(-1, 3).mean(axis=0))
        assert m.color_shift == pytest.approx(shift, rel=1e-12)
        assert m.color_shift == pytest.approx((rows["color_shift_r"][i], rows["color_shift_g"][i],
                                               rows["color_shift_b"][i]), rel=1e-12)
        assert m.ssim == pytest.approx(rows["ssim"][i], rel=1e-12)

def test_lpips_is_measured_when_asked():
    """LPIPS ships with vaestudio (its weights are in the package): asked for, it is measured; not asked
    for, it is not (tests/test_lpips.py checks its values against the reference implementations)."""
    a = np.random.default_rng(0).random((32, 40, 3))
    m = compute_metrics(a, np.clip(a + 0.1, 0, 1), with_lpips=True)
    assert m.lpips_status == "available" == lpips_status()
    assert m.lpips is not None and m.lpips > 0
    m = compute_metrics(a, np.clip(a + 0.1, 0, 1))
    assert (m.lpips, m.lpips_status) == (None, "not requested")
    # smaller than AlexNet's receptive field: not measured, and said why
    m = compute_metrics(a[:30], np.clip(a[:30] + 0.1, 0, 1), with_lpips=True)
    assert (m.lpips, m.lpips_status) == (None, "not measured (LPIPS needs images of at least 31 pixels a side)")


def test_colorize_range():
    rgb = colorize(np.array([[0.0, 0.25, 10.0]]))
    assert rgb.shape == (1, 3, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[0, 0].sum() < rgb[0, 1].sum()  # brighter for larger errors
    np.testing.assert_allclose(rgb[0, 1], rgb[0, 2])  # clipped at the scale


def test_channel_stats_mosaic_and_preview():
    stats = channel_stats(Z)
    assert stats.shape == (4, 4)
    assert stats[0, 0] == pytest.approx(float(Z[0].mean()), abs=1e-6)
    assert stats[1, 1] == pytest.approx(float(Z[1].std(unbiased=False)), abs=1e-6)
    assert stats[2, 2] == pytest.approx(float(Z[2].min())) and stats[3, 3] == pytest.approx(float(Z[3].max()))
    own = channel_mosaic(Z, shared=False, order=[3, 2, 1, 0], cols=2, gap=1)
    assert own.values.shape == (17, 17) and np.isnan(own.values[8]).all()  # 2x2 cells of 8x8, 1-pixel gaps
    np.testing.assert_allclose(own.values[:8, :8], (Z[3] - Z[3].min()) / (Z[3].max() - Z[3].min()), atol=1e-6)
    assert own.cell_at(9.5, 0.5) == (2, 0, 0) and own.cell_at(8.5, 0.5) is None  # a gap is no channel
    for c in range(4):
        cell = own.values[own.cell_origin(c)[1]:][:8, own.cell_origin(c)[0]:][:, :8]
        assert cell.min() == 0 and cell.max() == pytest.approx(1)  # each channel spans the whole range
    shared = channel_mosaic(Z, shared=True)
    assert np.all(shared.levels == [float(Z.min()), float(Z.max())])
    assert np.nanmax(shared.values) == pytest.approx(1) and np.nanmin(shared.values) == 0
    assert channel_mosaic(torch.randn(20)).values.shape == (1, 20)  # a latent vector is one strip
    prev = latent_preview(Z, "sd1")
    assert prev.shape == (8, 8, 3) and 0 <= prev.min() and prev.max() <= 1
    assert latent_preview(torch.randn(16, 4, 4), "flux").shape == (4, 4, 3)
    assert latent_preview(Z, "mnist") is None
