"""What the diffusers video VAEs read through diffusers' own ``encode``/``decode`` share (LTX-Video,
LTX-2, Mochi, Cosmos): not an architecture itself.

``ClipVae`` runs a clip whole through the model's ``encode(x).latent_dist.mean`` (the posterior's mean;
Cosmos' identity posterior gives the latent itself) and ``decode(z)``, so a clip equals diffusers' on
the same weights by construction; an image is a clip of one frame. The clip is one chunk (diffusers'
own frame-wise and tiled paths are not used: their blending differs from the whole clip), so memory
grows with the clip's length; spatial tiling of clips is not available (ClipMixin says so in a note),
images tile as every VAE's do. The model space is per channel ``(z - mean) * scale / std``
(``stats``), as the pipelines' ``_normalize_latents`` make it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import PreparedVae

_WHOLE = "clips run whole, as one chunk through diffusers' encode/decode (memory grows with the clip's length)"


def make_video(prepared: PreparedVae, temporal: int, what: str) -> PreparedVae:
    """Mark a prepared VAE kind video with its temporal factor and say how its clips run."""
    prepared.info.kind = "video"
    prepared.info.temporal_downscale = int(temporal)
    prepared.info.notes.append(f"clips: 1 + {temporal}k frames ({what}); {_WHOLE}")
    return prepared


class ClipVae(TorchAutoencoder):
    """A diffusers video VAE: clips through the model's encode/decode whole, images as one-frame clips."""

    has_logvar = False  # _encode_tensor gives the posterior's mean
    channels_last = False  # 5-D weights

    def __init__(self, model, info, family, device=None, dtype=None) -> None:
        super().__init__(model, info, family, device=device, dtype=dtype)
        mean, std, scale = self.stats()
        self._mean = mean.float().view(-1, 1, 1)
        self._factor = (scale / std.float()).view(-1, 1, 1)

    # -- what each architecture says --------------------------------------------------------
    def stats(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per-channel latents mean and std and the scaling factor of the model space."""
        c = int(self.info.latent_channels)
        return torch.zeros(c), torch.ones(c), 1.0

    def _decode_clip(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z).sample

    # -- the hooks ---------------------------------------------------------------------------
    def _encode_clip_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latent_dist.mode()

    def _iter_decode_clip_tensor(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        yield self._decode_clip(z)

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode_clip_tensor(x.unsqueeze(2))[:, :, 0]

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode_clip(z.unsqueeze(2))[:, :, 0]

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self._mean.to(raw.device, raw.dtype)) * self._factor.to(raw.device, raw.dtype)

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self._factor.to(latent.device, latent.dtype) + self._mean.to(latent.device, latent.dtype)
