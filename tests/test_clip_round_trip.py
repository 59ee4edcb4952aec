"""The streamed round trip (vaestudio.core.clip_stream, ``vae.iter_round_trip_clip``): tiny Wan 2.1 / 2.2
clips come back chunk by chunk as each chunk is encoded, equal to the unstreamed encode_clip ->
(add_noise) -> iter_decode_clip, the latent and the noise too; an image VAE encodes all, then decodes.

Tiny random models of the real diffusers class (tests/helpers/wan.py), 32x32 frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.archs import clip
from helpers.wan import write

from vaestudio.core.noise import NoiseSpec, add_noise
from vaestudio.core.sources import load_vae


def unstreamed(vae, x, noise=None, tile="auto"):
    enc = vae.encode_clip(x, tile=tile)
    latent = enc.latent if noise is None else add_noise(enc.latent, vae.family, spec=noise).latent
    parts = list(vae.iter_decode_clip(latent, enc.height, enc.width, tile=tile))
    return enc, latent, parts


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
@pytest.mark.parametrize("noise", [None, NoiseSpec("strength", 0.7, seed=5)])
def test_streamed_round_trip_equals_encode_then_decode(tmp_path, kind, noise):
    vae = load_vae(write(kind, "diffusers-folder", tmp_path))
    x = clip()  # 9 frames
    enc, latent, parts = unstreamed(vae, x, noise)

    encoder_calls = []
    vae.model.encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    rt = vae.iter_round_trip_clip(x, noise=noise)
    assert rt.frames == 9 and rt.encoding is None
    got, calls_at = [], []
    for start, part in rt:
        got.append((start, part))
        calls_at.append(len(encoder_calls))
    assert rt.streamed
    assert calls_at == [1, 2, 3]  # chunk k handed out after k + 1 encoder calls, not after all of them
    assert [s for s, _ in got] == [s for s, _ in parts] == [0, 1, 5]
    np.testing.assert_allclose(np.concatenate([p for _, p in got]), np.concatenate([p for _, p in parts]),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(rt.encoding.latent, enc.latent, rtol=0, atol=1e-5)
    torch.testing.assert_close(rt.encoding.raw, enc.raw, rtol=0, atol=1e-5)
    assert rt.encoding.chunks == enc.chunks and rt.encoding.frames == 9
    if noise is None:
        assert rt.noised is None and rt.snr_db is None
    else:
        torch.testing.assert_close(rt.noised.latent, latent, rtol=0, atol=1e-5)
        assert rt.snr_db == pytest.approx(add_noise(enc.latent, vae.family, spec=noise).snr_db, rel=1e-5)


def test_streamed_tiles_equal_the_unstreamed_tiles(tmp_path):
    vae = load_vae(write("wan2.1", "diffusers-folder", tmp_path))
    x = clip(5, 32, 48)
    enc, _, parts = unstreamed(vae, x, tile="on")
    rt = vae.iter_round_trip_clip(x, tile="on")
    got = list(rt)
    assert rt.streamed and rt.encoding.tiled
    np.testing.assert_allclose(np.concatenate([p for _, p in got]), np.concatenate([p for _, p in parts]), atol=1e-5)
    torch.testing.assert_close(rt.encoding.latent, enc.latent, rtol=0, atol=1e-5)


def test_cancel_keeps_the_handed_out_frames_and_no_encoding(tmp_path):
    vae = load_vae(write("wan2.1", "diffusers-folder", tmp_path))
    got = []
    rt = vae.iter_round_trip_clip(clip(), should_stop=lambda: len(got) >= 2)
    for item in rt:
        got.append(item)
    assert [s for s, _ in got] == [0, 1] and rt.encoding is None


def test_an_image_vae_encodes_all_then_decodes(vae_dir):
    vae = load_vae(vae_dir)
    x = clip(5, 24, 40)
    noise = NoiseSpec("strength", 0.3, seed=1)
    enc, latent, parts = unstreamed(vae, x, noise)
    rt = vae.iter_round_trip_clip(x, noise=noise)
    got = list(rt)
    assert not rt.streamed and [s for s, _ in got] == [s for s, _ in parts]
    np.testing.assert_array_equal(np.concatenate([p for _, p in got]), np.concatenate([p for _, p in parts]))
    torch.testing.assert_close(rt.noised.latent, latent)
    assert "an image VAE: the clip is encoded frame by frame" in rt.encoding.notes
