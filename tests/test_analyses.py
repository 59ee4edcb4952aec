"""The five analyses (issue 13) on cases with a known answer, on a real tiny AutoencoderKL, and from the CLI.

The test "VAEs" are small honest autoencoders: ``TorchAutoencoder`` subclasses whose encoder and decoder
are exact, known operations (pixel unshuffle/shuffle, a Gaussian blur, a colour bias, a known latent
scale), so each analysis has an answer worked out by hand.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaestudio.cli import main
from vaestudio.core.analyses import ANALYSES, drift, robustness, scale, seam_maps, seams, spectrum
from vaestudio.core.analyses.common import Step, drive
from vaestudio.core.analyses.plotting import colour, draw
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import Cancelled
from vaestudio.core.evaluate.accumulators import add_states as _add_into
from vaestudio.core.families import Family
from vaestudio.core.images import load_image
from vaestudio.core.vae import VaeInfo


def add_states(*states):
    """The sum of accumulator states, as the evaluation adds those of its processes."""
    total: dict = {}
    for st in states:
        _add_into(total, st)
    return total

F8 = 8
TEST_FAMILY = Family("test-ddpm", "test", 3 * F8 * F8, 1.0, 0.0, "ddpm", downscale=F8)


def _info(name: str, channels: int, downscale: int, scaling: float = 1.0, shift: float = 0.0) -> VaeInfo:
    return VaeInfo(source=name, format="test", key_layout="test", architecture=name, family="test-ddpm",
                   family_guessed=False, family_reason="test double", latent_channels=channels,
                   downscale=downscale, scaling_factor=scaling, shift_factor=shift, parameters=0, dtype="float32",
                   force_upcast=False)


class IdentityVae(TorchAutoencoder):
    """Exactly lossless: the latent is the image's 8x8 blocks folded into channels (pixel unshuffle)."""

    architecture = "identity"
    input_range = (0.0, 1.0)
    has_logvar = False

    def __init__(self, model: nn.Module | None = None, family: Family = TEST_FAMILY, scaling: float = 1.0,
                 shift: float = 0.0) -> None:
        super().__init__(model or nn.Identity(), _info(self.architecture, 3 * F8 * F8, F8, scaling, shift), family,
                         device=torch.device("cpu"))

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, F8)

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(z, F8)


class BlurVae(IdentityVae):
    """Decodes to the image blurred by a 5x5 binomial filter, zero-padded (so tile edges darken)."""

    architecture = "blur"

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(z, F8)
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        w = (k[:, None] * k[None, :] / 256).expand(3, 1, 5, 5).to(x)
        return F.conv2d(x, w, padding=2, groups=3)


class BiasVae(IdentityVae):
    """Lossless except that every decode adds ``BIAS`` to red (in [0, 1] units)."""

    architecture = "bias"
    BIAS = 0.01

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(z, F8).clone()
        x[:, 0] += self.BIAS
        return x


class KnownScaleVae(IdentityVae):
    """Raw latents with mean ``SHIFT`` and standard deviation ``K`` (the image standardised, times K)."""

    architecture = "known-scale"
    K, SHIFT = 5.49, 0.3

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        z = F.pixel_unshuffle(x, F8)
        return (z - z.mean()) / z.std(unbiased=False) * self.K + self.SHIFT


class Sleep(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return x


class SlowVae(IdentityVae):
    """Lossless, but each decode runs 25 blocks of 20 ms, before each of which cancellation is checked."""

    architecture = "slow"
    cancel_blocks = ("Sleep",)

    def __init__(self) -> None:
        super().__init__(nn.Sequential(*[Sleep() for _ in range(25)]))

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(F.pixel_shuffle(z, F8))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: with two threads, every small op waits for the other thread, which on a
    busy machine made a 2 s test take 30 s. One thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph (the astronaut shipped as a sample), 64x64, values kept within [0.2, 0.6]."""
    path = resources.files("vaestudio.resources").joinpath("samples/astronaut.png")
    px = load_image(str(path), size=64).pixels
    return (0.2 + 0.4 * px).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_sd(vae_dir):
    from vaestudio.core.sources import load_vae

    return load_vae(vae_dir, device="cpu")


# -- drift -------------------------------------------------------------------------------------------

def test_identity_has_no_drift(photo):
    res = drive(drift.run_drift(IdentityVae(), photo, rounds=3))
    assert [r.round for r in res.rounds] == [1, 2, 3]
    for r in res.rounds:
        assert math.isinf(r.psnr) and r.ssim == pytest.approx(1.0, abs=1e-9) and r.color_shift == (0.0, 0.0, 0.0)
    assert res.to_dict()["rounds"][0] == {"round": 1, "psnr": None, "ssim": 1.0, "color_shift": [0.0, 0.0, 0.0]}
    np.testing.assert_array_equal(res.last, photo)


def test_colour_bias_drifts_linearly_with_the_rounds(photo):
    b = BiasVae.BIAS
    res = drive(drift.run_drift(BiasVae(), photo, rounds=6))
    for r in res.rounds:
        k = r.round
        assert r.color_shift[0] == pytest.approx(k * b, abs=1e-5)
        assert r.color_shift[1] == pytest.approx(0, abs=1e-6) and r.color_shift[2] == pytest.approx(0, abs=1e-6)
        # only red is off, by k*b everywhere: MSE = (k b)^2 / 3
        assert r.psnr == pytest.approx(10 * math.log10(3 / (k * b) ** 2), abs=0.01)
    assert all(a.ssim > b_.ssim for a, b_ in zip(res.rounds, res.rounds[1:], strict=False))


def test_drift_reports_steps_and_progress(photo):
    seen = []
    gen = drift.run_drift(IdentityVae(), photo, rounds=4, progress=lambda d, t: seen.append((d, t)))
    items = list(gen)
    steps = [i for i in items if isinstance(i, Step)]
    assert [(s.done, s.total) for s in steps] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert steps[0].what == "round 1 of 4"
    assert isinstance(items[-1], drift.DriftResult)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


# -- seams -------------------------------------------------------------------------------------------

def test_boundary_lines_are_where_tiles_meet():
    assert seams.boundary_lines(64, 8, 8, 32, 0) == [32.0]
    # latent tiles of 4 with overlap 2 start at 0, 2, 4: they meet in the middle of each overlap
    assert seams.boundary_lines(64, 8, 8, 32, 16) == [24.0, 40.0]
    assert seams.boundary_lines(64, 8, 8, 64, 0) == []
    mask = seams.band_mask(64, 64, [32.0], [], 8)
    assert mask[24:40].all() and not mask[:24].any() and not mask[40:].any()


def test_identity_seam_score_is_one(photo):
    res = drive(seams.run_seams(IdentityVae(), photo, tiles=(16, 32), overlaps=(0, 8)))
    assert [(s.tile, s.overlap) for s in res.settings] == [(16, 0), (16, 8), (32, 0), (32, 8)]
    for s in res.settings:
        assert s.seam_score == 1.0 and s.max_difference < 1e-6
        assert s.rows and s.cols
    assert res.to_dict()["seams"][0]["seam_score"] == 1.0


def test_a_pointwise_decoder_with_constant_error_has_seam_score_one(photo):
    """Nonzero error (red + 0.01 everywhere) that tiling cannot change: the bands are like elsewhere."""
    res = drive(seams.run_seams(BiasVae(), photo, tiles=(16, 32), overlaps=(0, 8)))
    for s in res.settings:
        assert s.band_error == pytest.approx(BiasVae.BIAS / 3, rel=1e-3)
        assert s.seam_score == pytest.approx(1.0, abs=1e-3)


def test_zero_padded_blur_shows_seams_that_overlap_hides(photo):
    vae = BlurVae()
    res = drive(seams.run_seams(vae, photo, tiles=(32,), overlaps=(0, 16)))
    cut, blended = res.settings
    # without overlap the tiles' zero-padded edges darken a line: far more error in the band than the control
    assert cut.seam_score > 1.3 * cut.untiled_score and cut.max_difference > 0.1
    # the overlap blends those edges away: the band is then like the untiled decode's
    assert blended.seam_score == pytest.approx(blended.untiled_score, rel=0.15)
    assert blended.max_difference < cut.max_difference / 2
    assert (vae.encode_tile, vae.tile_overlap) == (512, 64)  # restored
    maps = seam_maps.seam_maps(res)
    assert maps.dtype == np.uint8 and maps.ndim == 3 and (maps == [0, 220, 255]).all(axis=2).any()  # boundaries drawn


def test_seams_skips_impossible_settings_with_a_note(photo):
    res = drive(seams.run_seams(IdentityVae(), photo, tiles=(20, 128), overlaps=(16,)))
    assert [(s.tile, s.overlap) for s in res.settings] == [(128, 16)]
    assert math.isnan(res.settings[0].seam_score)  # one tile covers the 64x64 image
    assert any("rounded down" in n for n in res.notes) and any("skipped" in n for n in res.notes)
    assert any("one tile" in n for n in res.notes)


# -- spectrum ----------------------------------------------------------------------------------------

def test_identity_spectrum_ratio_is_one(photo):
    res = drive(spectrum.run_spectrum(IdentityVae(), photo))
    assert len(res.frequencies) == 32 and res.frequencies[0] == 1 / 64 and res.frequencies[-1] == 0.5
    np.testing.assert_array_equal(res.ratio, np.ones_like(res.ratio))
    d = res.to_dict()
    assert len(d["frequencies"]) == len(d["ratio"]) == 32


def test_blur_loses_high_frequencies(photo):
    res = drive(spectrum.run_spectrum(BlurVae(), photo))
    low, high = res.ratio[res.frequencies < 0.05], res.ratio[res.frequencies > 0.35]
    assert (low > 0.8).all() and (high < 0.05).all()
    assert np.all(np.diff(res.ratio[res.frequencies > 0.1]) < 0.05)  # falls (nearly monotonically)


def test_spectrum_frequencies_are_cycles_per_pixel():
    """A stripe pattern with a period of 8 pixels puts its power at 0.125 cycles/pixel."""
    x = np.arange(128)
    img = np.repeat((0.5 + 0.4 * np.sin(2 * np.pi * x / 8))[None, :, None], 128, axis=0).repeat(3, axis=2)
    res = spectrum.spectrum_of(img.astype(np.float32), img.astype(np.float32))
    assert res.frequencies[np.argmax(res.original_power)] == 0.125


def test_spectrum_accumulator_sums_reduce_by_adding(photo):
    vae = BlurVae()
    imgs = torch.from_numpy(photo).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    imgs[1:] = imgs[1:].flip(-1) * torch.tensor([1.0, 0.9, 0.8, 0.7])[1:, None, None, None]
    recons = vae.decode_batch(vae.to_model(vae.encode_batch(imgs)[0]))
    one = spectrum.SpectrumAccumulator(bins=16)
    one.update(imgs, recons, None)
    a, b = spectrum.SpectrumAccumulator(bins=16), spectrum.SpectrumAccumulator(bins=16)
    a.update(imgs[:1], recons[:1], None)
    b.update(imgs[1:], recons[1:], None)
    merged = one.result(add_states(a.state(), b.state()))
    direct = one.result()
    assert merged["images"] == direct["images"] == 4
    np.testing.assert_allclose(merged["ratio"], direct["ratio"], rtol=1e-9)
    assert len(direct["frequencies"]) == len(direct["ratio"]) == 16
    assert direct["ratio"][-1] < 0.05 < 0.8 < direct["ratio"][0]
    fragment = one.html(direct)
    assert fragment.startswith("<section") and "data:image/png;base64," in fragment and "Spectrum" in fragment
    json.dumps(direct)


# -- noise robustness --------------------------------------------------------------------------------

def test_noise_strength_on_an_identity_gives_the_expected_psnr(photo):
    """Identity decoder: the picture gets the latent's noise itself, so PSNR = -20 log10(strength)."""
    res = drive(robustness.run_noise(IdentityVae(), photo, steps=5, mode="strength", max_strength=0.04))
    assert [p.t for p in res.points] == pytest.approx([0, 0.01, 0.02, 0.03, 0.04])
    assert math.isinf(res.points[0].psnr) and res.points[0].ssim == pytest.approx(1.0)
    for p in res.points[1:]:
        assert p.psnr == pytest.approx(-20 * math.log10(p.t), abs=0.15)
    assert res.to_dict()["points"][0] == {"t": 0.0, "psnr": None, "ssim": 1.0, "snr_db": None}


def test_noise_timesteps_span_the_family_schedule(photo):
    flow = Family("test-flow", "test", 3 * F8 * F8, 1.0, 0.0, "flow", downscale=F8)
    res = drive(robustness.run_noise(IdentityVae(family=flow), photo, steps=5))
    assert [p.t for p in res.points] == [0, 250, 500, 750, 1000]
    assert math.isinf(res.points[0].psnr)
    psnrs = [p.psnr for p in res.points]
    assert all(a > b for a, b in zip(psnrs, psnrs[1:], strict=False))
    res = drive(robustness.run_noise(IdentityVae(), photo, steps=4))
    assert [p.t for p in res.points] == [0, 333, 666, 999]


# -- scaling factor ----------------------------------------------------------------------------------

def test_suggested_factor_recovers_a_known_latent_scale(photo):
    k, s = KnownScaleVae.K, KnownScaleVae.SHIFT
    res = drive(scale.run_scale(KnownScaleVae(), photo))
    assert res.std == pytest.approx(k, rel=1e-4) and res.mean == pytest.approx(s, abs=1e-4)
    assert res.suggested_scaling_factor == pytest.approx(1 / k, rel=0.01)
    assert res.suggested_shift == pytest.approx(s, abs=0.01)
    assert res.far and "scaling factor 1 " in res.warning  # configured 1.0, the latents have std 5.49
    # configured right: model space has unit variance, no warning
    ok = drive(scale.run_scale(KnownScaleVae(scaling=1 / k, shift=s), photo))
    assert ok.model_std == pytest.approx(1.0, rel=1e-4) and ok.model_mean == pytest.approx(0.0, abs=1e-4)
    assert not ok.far and ok.warning is None
    # "far" starts beyond a factor of 1.5 either way
    assert not drive(scale.run_scale(KnownScaleVae(scaling=1.45 / k, shift=s), photo)).far
    assert drive(scale.run_scale(KnownScaleVae(scaling=1.55 / k, shift=s), photo)).far
    assert drive(scale.run_scale(KnownScaleVae(scaling=0.6 / k, shift=s), photo)).far
    d = res.to_dict()
    for key in ("mean", "std", "suggested_scaling_factor", "suggested_shift", "configured_scaling_factor",
                "configured_shift"):
        assert isinstance(d[key], float)
    assert len(d["channel_mean"]) == 3 * F8 * F8


def test_latent_stats_accumulator_matches_direct_moments():
    torch.manual_seed(0)
    lat = torch.randn(6, 4, 5, 7) * torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None, None] + 0.5
    def make():
        return scale.LatentStatsAccumulator(to_model=lambda z: (z - 0.1) * 0.5, scaling_factor=0.5, shift_factor=0.1)

    acc = make()
    acc.update(None, None, lat)
    a, b = make(), make()
    a.update(None, None, lat[:2])
    b.update(None, None, lat[2:])
    r = acc.result(add_states(a.state(), b.state()))
    flat = lat.permute(1, 0, 2, 3).reshape(4, -1).double()
    assert r["channel_std"] == pytest.approx(flat.std(dim=1, unbiased=False).tolist(), rel=1e-5)
    assert r["std"] == pytest.approx(float(lat.double().std(unbiased=False)), rel=1e-5)
    assert r["suggested_scaling_factor"] == pytest.approx(1 / r["std"], rel=1e-5)
    assert r["model_std"] == pytest.approx(0.5 * r["std"], rel=1e-5)
    assert r["values"] == 6 * 5 * 7
    assert "Scaling factor" in acc.html(r)
    json.dumps(r)


def test_accumulators_plug_into_the_evaluation_hook(photo):
    """The classes are factories of a VaeRef-like object; state/load_state carry the sums; result() and
    html() work without arguments, as vaestudio.core.evaluate calls them."""
    from types import SimpleNamespace

    ref = SimpleNamespace(name="tiny", source="x", family="sd1")
    torch.manual_seed(1)
    lat = torch.randn(3, 4, 6, 6) * 4.0 + 1.0
    imgs = torch.from_numpy(photo).permute(2, 0, 1)[None].repeat(3, 1, 1, 1)
    for cls in (scale.LatentStatsAccumulator, spectrum.SpectrumAccumulator):
        empty = cls(ref)
        assert empty.html() is None
        parts = [cls(ref) for _ in range(3)]
        for i, p in enumerate(parts):  # one batch each, as the evaluation's resumable contributions
            p.update(imgs[i: i + 1], imgs[i: i + 1] * 0.9, lat[i: i + 1])
        total = add_states(*(p.state() for p in parts))
        final = cls(ref)
        final.load_state(total)
        whole = cls(ref)
        whole.update(imgs, imgs * 0.9, lat)
        got, want = final.result(), whole.result()
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == (pytest.approx(v, rel=1e-9) if isinstance(v, (float, list)) else v), k
        assert final.html().startswith("<section")
        assert isinstance(final.name, str) and final.name
    r = scale.LatentStatsAccumulator(ref)
    r.update(None, None, lat)
    res = r.result()
    # from the family alone: SD1's model space, (raw - 0) * 0.18215
    assert res["configured_scaling_factor"] == pytest.approx(0.18215) and res["family"] == "sd1"
    assert res["model_std"] == pytest.approx(0.18215 * res["std"], rel=1e-5)


# -- a real tiny AutoencoderKL through every analysis --------------------------------------------------

def test_real_tiny_autoencoder_kl_through_every_analysis(tiny_sd, photo):
    vae = tiny_sd
    d = drive(drift.run_drift(vae, photo, rounds=2))
    assert len(d.rounds) == 2 and d.last.shape == photo.shape and all(math.isfinite(r.psnr) for r in d.rounds)
    s = drive(seams.run_seams(vae, photo, tiles=(32,), overlaps=(0, 16)))
    assert [x.tile for x in s.settings] == [32, 32] and all(x.max_difference > 0 for x in s.settings)
    assert all(math.isfinite(x.seam_score) and x.seam_score > 0 for x in s.settings)
    assert (vae.encode_tile, vae.tile_overlap) == (512, 64)
    sp = drive(spectrum.run_spectrum(vae, photo))
    assert len(sp.ratio) == 32 and np.isfinite(sp.ratio).all() and not np.allclose(sp.ratio, 1)
    n = drive(robustness.run_noise(vae, photo, steps=3))
    assert [p.t for p in n.points] == [0, 500, 999] and n.points[0].psnr > n.points[-1].psnr
    sc = drive(scale.run_scale(vae, photo))
    # SD-style model space: (raw - shift) * scale, so the model-space std is the configured factor x the raw std
    assert sc.configured_scaling_factor == pytest.approx(0.18215) and sc.family == "sd1"
    assert sc.model_std == pytest.approx(0.18215 * sc.std, rel=1e-4)
    assert sc.suggested_scaling_factor == pytest.approx(1 / sc.std, rel=1e-6)


@pytest.mark.parametrize("plotter", ["drift", "seams", "spectrum", "noise", "scale"])
def test_plots_draw_one_colour_per_vae(photo, plotter):
    a, b = IdentityVae(), BlurVae()
    run = {"drift": lambda v: drift.run_drift(v, photo, rounds=2),
           "seams": lambda v: seams.run_seams(v, photo, tiles=(32,), overlaps=(0, 8)),
           "spectrum": lambda v: spectrum.run_spectrum(v, photo),
           "noise": lambda v: robustness.run_noise(v, photo, steps=3, mode="strength", max_strength=0.1),
           "scale": lambda v: scale.run_scale(v, photo)}[plotter]
    results = [("identity", drive(run(a))), ("blur", drive(run(b)))]
    kind = ANALYSES[plotter]
    img = draw(kind, [(label, r.to_dict()) for label, r in results], kind.pictures(results, "photo"))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[1] >= 800
    for i in (0, 1):
        assert (img == colour(i)).all(axis=2).sum() > 50, f"no pixels of VAE {i}'s colour"


# -- cancellation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["drift", "seams", "noise"])
def test_cancelling_mid_analysis_stops_within_a_fraction_of_a_second(photo, which):
    vae = SlowVae()  # each decode takes 0.5 s; the whole analysis would take several seconds
    flag = threading.Event()
    gen = {"drift": lambda: drift.run_drift(vae, photo, rounds=10, should_stop=flag.is_set),
           "seams": lambda: seams.run_seams(vae, photo, tiles=(16,), overlaps=(0, 8), should_stop=flag.is_set),
           "noise": lambda: robustness.run_noise(vae, photo, steps=10, should_stop=flag.is_set)}[which]()
    asked: list[float] = []

    def ask() -> None:
        asked.append(time.perf_counter())
        flag.set()

    timer = threading.Timer(0.7, ask)  # in the middle of the second decode
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        drive(gen)
    t1 = time.perf_counter()
    timer.cancel()
    assert asked, f"finished ({t1 - t0:.2f} s) before cancellation was asked for"
    # the next 20 ms block checks the flag; allow for a busy machine, far below one decode (0.5 s)
    assert t1 - asked[0] < 0.3, f"stopped {t1 - asked[0]:.2f} s after the request"
    assert (vae.encode_tile, vae.tile_overlap) == (512, 64)


def test_cancel_between_steps_on_a_real_autoencoder(tiny_sd, photo):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 40  # well after the first round started, well before 10 rounds ended

    with pytest.raises(Cancelled):
        drive(drift.run_drift(tiny_sd, photo, rounds=10, should_stop=should_stop))
    assert calls["n"] == 41


# -- the command line --------------------------------------------------------------------------------

CASES = {
    "drift": (["--rounds", "2"], {"rounds"}),
    "seams": (["--tiles", "32", "--overlaps", "0,16"], {"seams"}),
    "spectrum": ([], {"frequencies", "ratio"}),
    "noise": (["--steps", "3"], {"points"}),
    "scale": ([], {"mean", "std", "suggested_scaling_factor", "suggested_shift", "configured_scaling_factor",
                   "configured_shift"}),
}


@pytest.mark.parametrize("analysis", list(CASES))
def test_cli_analysis_json_and_files(tmp_path, rgb_image, vae_dir, capsys, analysis):
    extra, fields = CASES[analysis]
    out = tmp_path / "out"
    code = main(["analyze", analysis, str(rgb_image), "--vae", str(vae_dir), "--out", str(out), "--size", "64",
                 "--json", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rec = json.loads(captured.out)
    assert rec["image"] == str(rgb_image) and rec["vae"] == str(vae_dir) and rec["analysis"] == analysis
    assert fields <= set(rec)
    png, csv_path = out / f"gradient_{analysis}.png", out / f"gradient_{analysis}.csv"
    assert png.is_file() and csv_path.is_file()
    assert rec["outputs"]["plot"] == str(png) and rec["outputs"]["csv"] == str(csv_path)
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert rows and {r["vae"] for r in rows} == {vae_dir.name}
    assert f"{analysis} {rgb_image}" in captured.err  # progress went to stderr
    if analysis == "drift":
        assert [r["round"] for r in rec["rounds"]] == [1, 2]
        assert set(rec["rounds"][0]) == {"round", "psnr", "ssim", "color_shift"}
        assert len(rec["rounds"][0]["color_shift"]) == 3 and len(rows) == 2
        assert (out / f"gradient_{vae_dir.name}_drift_last.png").is_file()
    elif analysis == "seams":
        assert [(s["tile"], s["overlap"]) for s in rec["seams"]] == [(32, 0), (32, 16)]
        assert all({"tile", "overlap", "seam_score"} <= set(s) for s in rec["seams"])
        assert (out / f"gradient_{vae_dir.name}_seams_maps.png").is_file()
    elif analysis == "spectrum":
        assert len(rec["frequencies"]) == len(rec["ratio"]) == 23  # 64x47: half the shorter side
    elif analysis == "noise":
        assert [p["t"] for p in rec["points"]] == [0, 500, 999]
        assert all({"t", "psnr", "ssim"} <= set(p) for p in rec["points"])
    else:
        assert rec["configured_scaling_factor"] == pytest.approx(0.18215)
        assert rec["suggested_scaling_factor"] == pytest.approx(1 / rec["std"], rel=1e-4)


def test_cli_overlays_vaes_and_goes_on_past_bad_inputs(tmp_path, rgb_image, vae_dir, ldm_file, capsys):
    bad_image = tmp_path / "broken.png"
    bad_image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bad_vae = tmp_path / "not_a_vae.safetensors"
    bad_vae.write_bytes(b"nonsense")
    out = tmp_path / "out"
    code = main(["analyze", "spectrum", str(bad_image), str(rgb_image), "--vae", str(vae_dir), "--vae", str(bad_vae),
                 "--vae", str(ldm_file), "--out", str(out), "--size", "48", "--json"])
    captured = capsys.readouterr()
    assert code == 4  # a VAE that cannot be loaded outranks an unreadable image (3), as the max of the codes
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: {bad_image}: ") and errors[1].startswith(f"error: {bad_vae}: ")
    assert len(errors) == 2 and "Traceback" not in captured.err
    recs = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["vae"] for r in recs] == [str(vae_dir), str(ldm_file)]
    rows = list(csv.DictReader(open(out / "gradient_spectrum.csv", encoding="utf-8")))
    assert {r["vae"] for r in rows} == {vae_dir.name, "community_vae"}


def test_cli_exit_codes_for_images_and_usage(tmp_path, rgb_image, vae_dir, capsys):
    missing = tmp_path / "missing.png"
    assert main(["analyze", "scale", str(missing), "--vae", str(vae_dir), "--out", str(tmp_path)]) == 3
    assert capsys.readouterr().err.startswith(f"error: {missing}: ")
    assert main(["analyze", "drift", str(rgb_image), "--vae", str(vae_dir), "--rounds", "0"]) == 2
    assert main(["analyze", "noise", str(rgb_image), "--vae", str(vae_dir), "--steps", "1"]) == 2
    assert main(["analyze", "seams", str(rgb_image), "--vae", str(vae_dir), "--tiles", "32", "--overlaps", "32"]) == 2
    assert main(["analyze", "scale", str(rgb_image), "--vae", str(vae_dir), "--size", "4"]) == 2
    for argv in (["analyze"], ["analyze", "drift", str(rgb_image)], ["analyze", "seams", str(rgb_image), "--vae",
                                                                      str(vae_dir), "--tiles", "a,b"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    capsys.readouterr()


def test_cli_human_output_and_scale_warning(tmp_path, rgb_image, vae_dir, capsys):
    # the tiny random VAE's latents are far from SD's 0.18215: the scale analysis says so on stderr
    assert main(["analyze", "scale", str(rgb_image), "--vae", str(vae_dir), "--out", str(tmp_path),
                 "--size", "32"]) == 0
    captured = capsys.readouterr()
    assert "suggested scaling factor" in captured.out
    assert f"warning: {rgb_image}: {vae_dir}: latents have standard deviation" in captured.err
    assert "the configured scaling factor 0.18215 is" in captured.err



# -- each analysis described once --------------------------------------------------------------------

def test_the_front_ends_never_name_an_analysis():
    """The CLI and the window are made from the descriptions: no analysis name appears in their code."""
    from pathlib import Path

    import vaestudio

    root = Path(vaestudio.__file__).parent
    for front in (root / "cli" / "analyze.py", root / "ui" / "analysis_tab.py"):
        code = "\n".join(line for line in front.read_text("utf-8").splitlines() if not line.lstrip().startswith("#"))
        code = code.split('"""', 2)[-1]  # past the module docstring, which lists them for the reader
        for name in ANALYSES:
            assert f'"{name}"' not in code and f"'{name}'" not in code, f"{front.name} names {name}"


def test_cli_arguments_are_the_described_options_with_their_defaults():
    from vaestudio.cli import build_parser

    parser = build_parser()
    for name, kind in ANALYSES.items():
        args = parser.parse_args(["analyze", name, "x.png", "--vae", "v"])
        assert {o.name: getattr(args, o.name) for o in kind.options} == kind.defaults()
    # the contract of the README, unchanged
    assert ANALYSES["drift"].defaults() == {"rounds": 10}
    assert ANALYSES["seams"].defaults() == {"tiles": [64, 128], "overlaps": [0, 16, 32]}
    assert ANALYSES["spectrum"].defaults() == {"bins": None}
    assert ANALYSES["noise"].defaults() == {"steps": 10, "mode": "timestep", "max_strength": 1.0, "seed": 0}
    args = parser.parse_args(["analyze", "noise", "x.png", "--vae", "v", "--mode", "strength", "--max-strength",
                              "1.5", "--steps", "4", "--seed", "3"])
    assert (args.mode, args.max_strength, args.steps, args.seed) == ("strength", 1.5, 4, 3)
    args = parser.parse_args(["analyze", "seams", "x.png", "--vae", "v", "--tiles", "256,512", "--overlaps", "32,64"])
    assert (args.tiles, args.overlaps) == ([256, 512], [32, 64])


def test_validation_names_the_field_as_each_front_end_calls_it():
    drift_, noise, seams_ = ANALYSES["drift"], ANALYSES["noise"], ANALYSES["seams"]
    with pytest.raises(ValueError, match="^--rounds must be at least 1$"):
        drift_.validate({"rounds": 0}, lambda o: o.flag)
    with pytest.raises(ValueError, match="^Points must be at least 2$"):
        noise.validate({**noise.defaults(), "steps": 1}, lambda o: o.label)
    with pytest.raises(ValueError, match="^--max-strength must be a finite number > 0$"):
        noise.validate({**noise.defaults(), "max_strength": math.inf}, lambda o: o.flag)
    with pytest.raises(ValueError, match="an overlap must be smaller than the tile"):
        seams_.validate({"tiles": [32], "overlaps": [32, 64]}, lambda o: o.flag)
    assert seams_.validate({"tiles": [32], "overlaps": [0, 32]}, lambda o: o.flag) == {"tiles": [32], "overlaps": [0, 32]}


def test_csv_columns_are_the_described_columns(tmp_path, rgb_image, vae_dir, capsys):
    """The CSV header is the description's (the same as before issue 16, the README's contract)."""
    header = {
        "drift": "vae,round,psnr,ssim,color_shift_r,color_shift_g,color_shift_b",
        "seams": "vae,tile,overlap,seam_score,untiled_score,band_error,other_error,max_difference,band_width",
        "spectrum": "vae,frequency,original_power,reconstruction_power,ratio",
        "noise": "vae,mode,t,psnr,ssim,snr_db",
        "scale": "vae,space,channel,mean,std,suggested_scaling_factor,suggested_shift,configured_scaling_factor,"
                 "configured_shift",
    }
    for name, kind in ANALYSES.items():
        assert ",".join(kind.fields) == header[name]


# -- a flat image: the spectrum's ratios are undefined ------------------------------------------------

def test_power_ratio_is_undefined_where_the_original_has_no_power():
    ratio = spectrum.power_ratio(np.array([2.0, 1e-7, 0.0, 3e-13]), np.array([1.0, 0.0, 0.0, 1e-20]))
    assert ratio[0] == 2.0 and np.isnan(ratio[1:]).all()  # was 1e23 for the second
    res = spectrum.spectrum_of(np.full((32, 32, 3), 0.5, np.float32), np.full((32, 32, 3), 0.5, np.float32) +
                               np.random.default_rng(0).normal(0, 1e-3, (32, 32, 3)).astype(np.float32))
    assert np.isnan(res.ratio).all() and all(v is None for v in res.to_dict()["ratio"])
    assert res.notes and "undefined" in res.notes[0]


def test_cli_spectrum_of_a_flat_image_leaves_the_ratio_blank_with_a_note(tmp_path, vae_dir, capsys):
    from PIL import Image

    flat = tmp_path / "flat.png"
    Image.new("RGB", (1, 1), (120, 130, 140)).save(flat)
    out = tmp_path / "out"
    assert main(["analyze", "spectrum", str(flat), "--vae", str(vae_dir), "--out", str(out), "--size", "32",
                 "--json"]) == 0
    captured = capsys.readouterr()
    rec = json.loads(captured.out)
    assert rec["ratio"] and all(v is None for v in rec["ratio"])
    rows = list(csv.DictReader(open(out / "flat_spectrum.csv", encoding="utf-8")))
    assert rows and all(r["ratio"] == "" for r in rows)
    assert f"note: {flat}: the original has no power at" in captured.err
    assert main(["analyze", "spectrum", str(flat), "--vae", str(vae_dir), "--out", str(out), "--size", "32"]) == 0
    line = capsys.readouterr().out
    assert "power ratio at cycles/pixel 0.09: n/a" in line and "e+" not in line


# -- the evaluation report's fragments ---------------------------------------------------------------

def _embedded_png(fragment: str) -> np.ndarray:
    import base64
    import io
    import re

    from PIL import Image

    data = re.search(r'src="data:image/png;base64,([^"]+)"', fragment).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def test_the_report_plots_name_the_vae(photo):
    """The dataset spectrum's legend names the VAE (it said "dataset")."""
    from types import SimpleNamespace

    ref = SimpleNamespace(name="my-vae", source="x/my-vae.safetensors", family="sd1")
    imgs = torch.from_numpy(photo).permute(2, 0, 1)[None]
    acc = spectrum.SpectrumAccumulator(ref, bins=16)
    acc.update(imgs, imgs * 0.9, None)
    shown = _embedded_png(acc.html())
    np.testing.assert_array_equal(shown, draw(ANALYSES["spectrum"], [("my-vae", acc.result())]))
    assert not np.array_equal(shown, draw(ANALYSES["spectrum"], [("dataset", acc.result())]))
    stats = scale.LatentStatsAccumulator(ref)
    stats.update(None, None, torch.randn(2, 4, 3, 3))
    np.testing.assert_array_equal(_embedded_png(stats.html()), draw(ANALYSES["scale"], [("my-vae", stats.result())]))


def test_report_scaling_tables_keep_raw_and_model_channels_apart():
    """FLUX.2's model space is patchified: 32 raw channels become 128. Each space gets its own table
    (raw channel i and model channel i are different channels)."""
    import re
    from types import SimpleNamespace

    acc = scale.LatentStatsAccumulator(SimpleNamespace(name="flux2", source="x", family="flux2"))
    acc.update(None, None, torch.randn(2, 32, 4, 4))
    fragment = acc.html()
    tables = re.findall(r"<table>.*?</table>", fragment)
    assert len(tables) == 2
    assert "Raw channels" in tables[0] and tables[0].count("<tr>") == 1 + 32
    assert "Model-space channels" in tables[1] and tables[1].count("<tr>") == 1 + 128
