"""vaestudio's MNIST VAE as an inspector VAE: an image becomes a 28x28 digit once, whichever way it is
encoded (``encode`` prepares it; ``encode_batch`` takes the digits ``prepare_pixels`` made, as the
evaluation gives them, and does not prepare them again)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaestudio.core.archs.mnist import MnistVae
from vaestudio.core.mnist.model import make_model


class CountingMnistVae(MnistVae):
    """The real MNIST VAE, counting how often it prepares an image."""

    prepared = 0

    def prepare_pixels(self, pixels):
        self.prepared += 1
        return super().prepare_pixels(pixels)


def _vae() -> CountingMnistVae:
    torch.manual_seed(0)
    return CountingMnistVae.from_trained(make_model("mlp", 32, 4))


def _photo(seed: int) -> np.ndarray:  # bright (so it is inverted) and not 28x28 (so it is resized)
    rng = np.random.default_rng(seed)
    return np.clip(0.7 + 0.2 * rng.standard_normal((40, 56, 3)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("sample", [False, True])
def test_an_image_is_prepared_once(sample):
    vae = _vae()
    encs = [vae.encode(_photo(i), sample=sample, seed=10 + i) for i in range(2)]
    assert vae.prepared == 2
    assert any("resized" in n for n in encs[0].notes) and any("inverted" in n for n in encs[0].notes)
    digits = torch.stack([torch.from_numpy(e.original).permute(2, 0, 1) for e in encs])
    assert tuple(digits.shape) == (2, 3, 28, 28)
    z, tiled = vae.encode_batch(digits, sample=sample, seeds=[10, 11])
    assert vae.prepared == 2 and not tiled  # the digits are encoded as they are
    for i, e in enumerate(encs):
        torch.testing.assert_close(z[i], e.raw, rtol=1e-5, atol=1e-6)  # batched: float rounding
    if sample:
        assert not torch.equal(z[0], vae.encode(_photo(0)).latent)  # the seed drew a sample, not the mean


def test_a_batch_of_images_that_are_not_digits_is_refused():
    with pytest.raises(ValueError, match="28x28"):
        _vae().encode_batch(torch.zeros(1, 3, 32, 32))
