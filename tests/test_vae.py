"""Encode/decode equal plain diffusers; odd sizes; tiling with progress and cancel; OOM fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.tally import count

from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.images import load_image
from vaestudio.core.sources import load_vae


def diffusers_round_trip(model, pixels, scaling, shift=0.0, generator=None):
    """The seed's reference: pixels to [-1, 1], latents (z - shift) * scale, the inverse on decode."""
    h, w = pixels.shape[:2]
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None] * 2 - 1
    x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="reflect")
    with torch.no_grad():
        dist = model.encode(x).latent_dist
        z = dist.sample(generator=generator) if generator is not None else dist.mode()
        z = (z - shift) * scaling
        out = model.decode(z / scaling + shift).sample
    return z[0], (out[0, :, :h, :w] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size", [(45, 61), (64, 64), (17, 9), (1, 1)])
def test_round_trip_equals_diffusers(tiny_model, vae_dir, size):
    rng = np.random.default_rng(0)
    pixels = rng.random((*size, 3), dtype=np.float32)
    vae = load_vae(vae_dir)
    enc = vae.encode(pixels)
    out = vae.decode(enc.latent, enc.height, enc.width).pixels
    assert out.shape == pixels.shape
    if min(size) > 8:  # tiny sizes use replicate padding, which the reference does not do
        z_ref, out_ref = diffusers_round_trip(tiny_model, pixels, 0.18215)
        torch.testing.assert_close(enc.latent, z_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)


def test_seeded_sample_equals_diffusers(tiny_model, vae_dir):
    pixels = np.random.default_rng(1).random((32, 40, 3), dtype=np.float32)
    vae = load_vae(vae_dir)
    a = vae.encode(pixels, sample=True, seed=7).latent
    b = vae.encode(pixels, sample=True, seed=7).latent
    c = vae.encode(pixels, sample=True, seed=8).latent
    z_ref, _ = diffusers_round_trip(tiny_model, pixels, 0.18215, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a, z_ref, rtol=1e-5, atol=1e-5)


def test_shift_factor_is_applied_like_diffusers(tmp_path):
    from conftest import ldm_state_dict, tiny_vae
    from safetensors.torch import save_file

    model = tiny_vae(latent_channels=16, quant=False, seed=5)
    p = tmp_path / "sd3_vae.safetensors"
    save_file(ldm_state_dict(model), str(p))
    vae = load_vae(p, family="sd3")
    pixels = np.random.default_rng(2).random((24, 24, 3), dtype=np.float32)
    enc = vae.encode(pixels)
    z_ref, out_ref = diffusers_round_trip(model, pixels, 1.5305, 0.0609)
    torch.testing.assert_close(enc.latent, z_ref, rtol=1e-5, atol=1e-5)
    # the decoder from the reference's own latent: decoding ours (within 1e-5 of it) amplified the encoders' 1e-6
    # rounding differences past 1e-5 on an AMX Xeon
    np.testing.assert_allclose(vae.decode(z_ref, 24, 24).pixels, out_ref, rtol=1e-5, atol=1e-5)


def test_tiles_report_progress_and_cover_the_image(vae_dir):
    vae = load_vae(vae_dir)
    vae.encode_tile, vae.tile_overlap = 32, 16
    yy, xx = np.mgrid[0:80, 0:96] / 96.0
    pixels = np.stack([xx, yy, 0.5 * (xx + yy)], axis=2).astype(np.float32)
    calls = []
    enc = vae.encode(pixels, tile="on", progress=lambda d, t: calls.append((d, t)))
    assert enc.tiled
    assert calls[-1][0] == calls[-1][1] == len(calls) > 1
    dec_calls = []
    dec = vae.decode(enc.latent, enc.height, enc.width, tile="on", progress=lambda d, t: dec_calls.append((d, t)))
    assert dec.tiled
    assert dec.pixels.shape == pixels.shape and len(dec_calls) > 1 and np.isfinite(dec.pixels).all()


@pytest.mark.parametrize("up,down", [(1, 8), (8, 1)])
def test_tile_blending_is_exact_for_local_operations(up, down):
    """With a purely local fn (pooling, nearest upsampling) tiling must change nothing."""
    from vaestudio.core.tiling import run_tiled

    x = torch.randn(1, 3, 8 * 13, 8 * 11)

    def fn(t):
        return F.avg_pool2d(t, down) if down > 1 else F.interpolate(t, scale_factor=up, mode="nearest")

    tile, overlap = (32, 16) if down > 1 else (4, 2)
    tiled = run_tiled(x, fn, tile=tile, overlap=overlap, up=up, down=down)
    torch.testing.assert_close(tiled, fn(x), rtol=1e-5, atol=1e-5)


def test_cancel_between_tiles(vae_dir):
    vae = load_vae(vae_dir)
    vae.encode_tile, vae.tile_overlap = 32, 16
    pixels = np.zeros((96, 96, 3), np.float32)
    seen = []
    with pytest.raises(Cancelled):
        vae.encode(pixels, tile="on", progress=lambda d, t: seen.append(d), should_stop=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_out_of_memory_falls_back_to_tiles(vae_dir):
    vae = load_vae(vae_dir)
    vae.encode_tile, vae.tile_overlap = 32, 16
    real_decode = vae.model.decode

    def decode_that_runs_out(z, *a, **k):
        if z.shape[-1] * z.shape[-2] > 16:  # anything bigger than one 4x4 latent tile
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_decode(z, *a, **k)

    vae.model.decode = decode_that_runs_out
    count("faults")
    enc = vae.encode(np.full((64, 64, 3), 0.5, np.float32))
    dec = vae.decode(enc.latent, 64, 64)
    assert dec.pixels.shape == (64, 64, 3) and dec.tiled
    assert any("out of memory" in n for n in dec.notes)
    assert not enc.notes  # the encode ran untiled: the decode's retry is the decode's note only
    with pytest.raises(VaeStudioError, match="out of memory"):
        vae.decode(enc.latent, 64, 64, tile="off")

    def always_oom(z, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    vae.model.decode = always_oom
    with pytest.raises(VaeStudioError, match="even with tiles"):
        vae.decode(enc.latent, 64, 64)


def test_nan_in_half_precision_retries_in_fp32(vae_dir):
    vae = load_vae(vae_dir)
    vae.dtype = torch.bfloat16  # CPU has no fp16 kernels everywhere; bf16 exercises the same path
    vae.model.to(torch.bfloat16)
    real_decode = vae.model.decode

    def nan_in_half(z, *a, **k):
        out = real_decode(z, *a, **k)
        if z.dtype != torch.float32:
            out.sample[:] = float("nan")
        return out

    vae.model.decode = nan_in_half
    count("faults")
    enc = vae.encode(np.full((16, 16, 3), 0.5, np.float32))
    dec = vae.decode(enc.latent, 16, 16)
    assert np.isfinite(dec.pixels).all()
    assert vae.dtype == torch.float32
    assert any("retried in fp32" in n for n in dec.notes)
    assert not vae.decode(enc.latent, 16, 16).notes  # fp32 for good: the next call has nothing to say


def test_a_pass_caught_by_another_jobs_switch_to_fp32_runs_again(vae_dir):
    """Two jobs share one VAE: while one decodes in bf16, the other finds NaN and switches the weights
    to fp32. The first pass then fails on mixed dtypes (a real torch error); it runs again in fp32."""
    vae = load_vae(vae_dir)
    vae.dtype = torch.bfloat16
    vae.model.to(torch.bfloat16)
    enc = vae.encode(np.full((16, 16, 3), 0.5, np.float32))
    real_decode = vae.model.decode
    calls = []

    def switched_meanwhile(z, *a, **k):
        calls.append(z.dtype)
        if len(calls) == 1:  # what the other job does in the middle of this pass
            vae.model.to(torch.float32)
            vae.dtype = torch.float32
        return real_decode(z, *a, **k)

    vae.model.decode = switched_meanwhile
    dec = vae.decode(enc.latent, 16, 16)
    assert calls == [torch.bfloat16, torch.float32]
    assert np.isfinite(dec.pixels).all()


def test_tiling_a_real_vae_stays_close_to_untiled():
    """Real weights (taef2): tiles with 64-pixel overlaps decode close to the untiled result. Its
    GroupNorm branch normalises each tile on its own, so close means within about 5 dB here."""
    from conftest import SHARED, SHARED_IMAGES

    from vaestudio.core.metrics import psnr

    weights = SHARED / "data" / "weights" / "taef2_encoder.pth"
    if not weights.exists():
        pytest.skip(f"real weights not found at {weights}")
    img = load_image(SHARED_IMAGES / "astronaut.png", size=256)
    vae = load_vae(weights)
    vae.encode_tile, vae.tile_overlap = 128, 64
    enc = vae.encode(img.pixels, tile="off")
    untiled = vae.decode(enc.latent, 256, 256, tile="off").pixels
    tiled = vae.decode(enc.latent, 256, 256, tile="on").pixels
    assert psnr(tiled, untiled) > 24.0
    assert psnr(tiled, img.pixels) > psnr(untiled, img.pixels) - 6.0


def test_real_photo_round_trip(vae_dir):
    from conftest import SHARED_IMAGES, needs_shared

    if not SHARED_IMAGES.exists():
        pytest.skip(f"shared images not found at {SHARED_IMAGES}")
    _ = needs_shared
    img = load_image(SHARED_IMAGES / "chelsea.png", size=96)
    vae = load_vae(vae_dir)
    enc = vae.encode(img.pixels)
    assert tuple(enc.latent.shape) == (4, 8, 12)
    assert vae.decode(enc.latent, img.height, img.width).pixels.shape == img.pixels.shape


def test_cancel_inside_one_untiled_pass(vae_dir):
    """Cancellation is checked before every ResNet block, not only between tiles."""
    vae = load_vae(vae_dir)
    calls = {"n": 0}

    def stop_soon():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        vae.encode(np.zeros((64, 64, 3), np.float32), tile="off", should_stop=stop_soon)
    assert calls["n"] == 4
    assert not any(m._forward_pre_hooks for m in vae.model.modules())  # hooks removed again


def test_cancelling_one_job_never_stops_another_on_the_same_model(vae_dir):
    """Two threads encode with one VAE; stopping the first must not cancel the second."""
    import threading

    vae = load_vae(vae_dir)
    pixels = np.zeros((64, 64, 3), np.float32)
    started, release = threading.Event(), threading.Event()
    outcome = {}

    def first_stop():
        started.set()
        release.wait(10)
        return True  # the first job is cancelled, while its hooks are on the model

    def run_first():
        try:
            vae.encode(pixels, tile="off", should_stop=first_stop)
        except Cancelled:
            outcome["first"] = "cancelled"

    t = threading.Thread(target=run_first)
    t.start()
    started.wait(10)
    try:
        outcome["second"] = vae.encode(pixels, tile="off", should_stop=lambda: False).latent.shape
    finally:
        release.set()
        t.join(10)
    assert outcome == {"first": "cancelled", "second": (4, 8, 8)}


def test_jobs_sharing_one_vae_get_their_own_notes(vae_dir):
    """Two threads encode with one VAE at the same time: each call returns its own notes. The sampling
    job's note ("sampling has no effect") must not reach the other job, nor be lost to it."""
    import threading

    vae = load_vae(vae_dir)
    vae.has_logvar = False  # a deterministic encoder: sampling is noted, not done
    real = vae._encode_tensor
    both_inside = threading.Barrier(2, timeout=10)
    sampler_done = threading.Event()

    def encode_tensor(x):
        out = real(x)
        out = out[:, : out.shape[1] // 2]  # the mean only, as a deterministic encoder returns
        both_inside.wait()  # both jobs are in the middle of a call on the same VAE
        if threading.current_thread().name == "plain":
            sampler_done.wait(10)  # the plain job finishes after the sampling job has noted its sample
        return out

    vae._encode_tensor = encode_tensor
    pixels = np.full((16, 16, 3), 0.5, np.float32)
    out: dict[str, list[str]] = {}

    def job(name: str, sample: bool) -> None:
        out[name] = vae.encode(pixels, sample=sample, tile="off").notes
        if sample:
            sampler_done.set()

    threads = [threading.Thread(target=job, args=("sampler", True), name="sampler"),
               threading.Thread(target=job, args=("plain", False), name="plain")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert out["plain"] == []
    assert len(out["sampler"]) == 1 and "sampling has no effect" in out["sampler"][0]
