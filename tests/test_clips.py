"""Clips through an image VAE (vaestudio.core.clips): frame by frame, each frame exactly as alone;
chunks, progress per chunk, cancellation between and inside chunks (the decoded frames are kept).

The VAE is the tiny real AutoencoderKL of tests/conftest.py, loaded from its diffusers folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.sources import load_vae


def clip(t: int = 9, h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    """A moving gradient with a little noise (odd sizes: padded and cropped back)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([(xx + 3 * i) % w / w, yy / h, 0.5 + 0.1 * rng.standard_normal((h, w))], axis=2)
              for i in range(t)]
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def vae(vae_dir):
    return load_vae(vae_dir)


def test_an_image_vae_is_kind_image(vae):
    d = vae.info.to_dict()
    assert (d["kind"], d["temporal_downscale"]) == ("image", 1)
    assert [vae.frames_valid(n) for n in (1, 2, 9, 10)] == [1, 2, 9, 10]


def test_frame_by_frame_equals_each_frame_alone(vae):
    x = clip()
    steps = []
    enc = vae.encode_clip(x, progress=lambda i, n: steps.append((i, n)))
    assert enc.frames == 9 and (enc.height, enc.width) == (24, 40)
    assert enc.latent.shape == (4, 9, 3, 5) and enc.raw.shape == (4, 9, 3, 5)
    assert enc.chunks == [(0, 4), (4, 8), (8, 9)]  # batches of 4 frames
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert "an image VAE: the clip is encoded frame by frame" in enc.notes
    np.testing.assert_array_equal(enc.original, x)
    for t in range(9):
        alone = vae.encode(x[t])
        torch.testing.assert_close(enc.raw[:, t], alone.raw, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(enc.latent[:, t], alone.latent, rtol=1e-5, atol=1e-5)

    dec = vae.decode_clip(enc.latent, enc.height, enc.width)
    assert dec.complete and dec.frames.shape == x.shape and dec.frames.dtype == np.float32
    assert dec.chunks == [(0, 4), (4, 8), (8, 9)]
    for t in range(9):
        alone = vae.decode(enc.latent[:, t], 24, 40).pixels
        np.testing.assert_allclose(dec.frames[t], alone, rtol=1e-5, atol=1e-5)

    parts = list(vae.iter_decode_clip(enc.latent, 24, 40))
    assert [s for s, _ in parts] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([p for _, p in parts]), dec.frames)


def test_cancel_between_chunks_keeps_the_decoded_frames(vae):
    enc = vae.encode_clip(clip())
    whole = vae.decode_clip(enc.latent, 24, 40).frames
    steps = []
    dec = vae.decode_clip(enc.latent, 24, 40, progress=lambda i, n: steps.append(i), should_stop=lambda: bool(steps))
    assert not dec.complete and dec.chunks == [(0, 4)]
    assert dec.frames.shape == (4, 24, 40, 3)
    np.testing.assert_array_equal(dec.frames, whole[:4])
    assert any("cancelled: 4 of 9 frames" in n for n in dec.notes)


def test_cancel_inside_a_chunk_stops_cleanly(vae):
    """should_stop is also asked before every block inside a chunk: a stop there ends the generator."""
    enc = vae.encode_clip(clip())
    asked = []

    def stop() -> bool:
        asked.append(1)
        # a chunk asks 12 times (once before it, then before each of its 11 blocks): the 16th call
        # is inside the second chunk
        return len(asked) >= 16

    parts = list(vae.iter_decode_clip(enc.latent, 24, 40, should_stop=stop))
    assert [s for s, _ in parts] == [0]  # the second chunk was stopped inside; nothing raised
    assert len(asked) == 16
    with pytest.raises(Cancelled):
        vae.encode_clip(clip(), should_stop=lambda: True)


def test_a_clip_that_is_not_frames_is_one_sentence(vae):
    for bad in (np.zeros((0, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32)):
        with pytest.raises(VaeStudioError, match="a clip is"):
            vae.encode_clip(bad)


def test_the_mnist_vae_takes_a_clip_digit_by_digit():
    """The MNIST VAE is no TorchAutoencoder: its clips go through its own encode_batch/decode_batch."""
    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.model import make_model

    torch.manual_seed(0)
    vae = MnistVae.from_trained(make_model("mlp", 32, 4))
    x = clip(3, 40, 56)
    enc = vae.encode_clip(x)
    assert enc.original.shape == (3, 28, 28, 3) and enc.latent.shape == (4, 3)
    assert "resized from 56x40 to 28x28 for the MNIST VAE" in enc.notes
    for t in range(3):
        torch.testing.assert_close(enc.latent[:, t], vae.encode(x[t]).latent)
    dec = vae.decode_clip(enc.latent)
    assert dec.complete and dec.frames.shape == (3, 28, 28, 3)
    np.testing.assert_allclose(dec.frames[2], vae.decode(enc.latent[:, 2]).pixels, atol=1e-6)
