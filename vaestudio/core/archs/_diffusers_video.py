"""What the diffusers video VAEs read through diffusers' own encoder and decoder share (LTX-Video, LTX-2,
Mochi, Cosmos; HunyuanVideo uses ``TemporalTiles``): not an architecture itself.

``ClipVae`` runs a clip through the model's encoder (the posterior's mean; Cosmos' identity posterior gives
the latent itself) and decoder as diffusers' ``encode``/``decode`` do, so a clip equals diffusers' on the
same weights; an image is a clip of one frame. Where diffusers has temporal tiles (LTX-Video, LTX-2:
``temporal()``) a clip longer than one tile runs in those tiles, one at a time, each tile's final part
handed out as it comes (``TemporalTiles``), so memory is bounded by a tile; elsewhere the clip is one chunk
and memory grows with its length (the VAE's notes say which). Where diffusers tiles frames spatially
(``clip_tiles``) large frames are tiled as images are (``tiling.clip_tiled``, blended linearly; diffusers'
own spatial blending differs). The model space is per channel ``(z - mean) * scale / std`` (``stats``), as
the pipelines' ``_normalize_latents`` make it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.registry import PreparedVae
from vaestudio.core.tiling import clip_tiled

WHOLE = "clips run whole, as one chunk through diffusers' encoder/decoder (memory grows with the clip's length)"

Fn = Callable[[torch.Tensor], torch.Tensor]
Blend = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def make_video(prepared: PreparedVae, temporal: int, what: str, how: str = WHOLE) -> PreparedVae:
    """Mark a prepared VAE kind video with its temporal factor and say how its clips run."""
    prepared.info.kind = "video"
    prepared.info.temporal_downscale = int(temporal)
    prepared.info.notes.append(f"clips: 1 + {temporal}k frames ({what}); {how}")
    return prepared


def frame_range(lat: tuple[int, int], factor: int) -> tuple[int, int]:
    """The frames a range of latent frames decodes to (latent 0 is frame 0, latent j the frames
    ``factor * (j - 1) + 1 .. factor * j``)."""
    s, e = lat
    return (0 if s == 0 else factor * (s - 1) + 1, factor * (e - 1) + 1)


@dataclass(frozen=True)
class TemporalTiles:
    """diffusers' temporal tiles of a video VAE (``_temporal_tiled_encode``/``_decode``, HunyuanVideo's
    frame-wise path), run one tile at a time: each encoded tile of ``size + 1`` frames every ``stride`` loses
    its first latent frame after the first tile and is blended into the previous one over ``(size - stride) /
    factor`` latent frames; each decoded tile of ``size / factor + 1`` latent frames every ``stride / factor``
    loses its first frame (its last with ``drop_last``, LTX's) and is blended over ``size - stride`` frames.
    A tile's leading part is final once it is blended, so it is handed out at once and the next tile needs
    only the previous one. Clips of up to ``size`` frames (``size / factor`` latent frames) run whole, as
    diffusers runs them; with ``one_tile`` also a clip that one tile holds (``size + 1`` frames), which tiles
    would only compute again."""

    factor: int  # the temporal compression
    size: int  # tile_sample_min_num_frames
    stride: int  # tile_sample_stride_num_frames
    one_tile: bool = False
    drop_last: bool = False

    @classmethod
    def of(cls, model, one_tile: bool = False, drop_last: bool = False) -> TemporalTiles:
        """The tiles set on a diffusers model now (its ``tile_sample_*_num_frames``)."""
        return cls(int(model.temporal_compression_ratio), int(model.tile_sample_min_num_frames),
                   int(model.tile_sample_stride_num_frames), one_tile, drop_last)

    def whole(self, frames: int) -> bool:
        """Whether a clip of ``frames`` frames runs whole."""
        return frames <= self.size + self.one_tile

    def _whole_latents(self, latents: int) -> bool:
        return latents <= self.size // self.factor + self.one_tile

    def chunks(self, frames: int) -> list[tuple[int, int]]:
        """The frame ranges made final one tile at a time (one range when the clip runs whole)."""
        if self.whole(frames):
            return [(0, frames)]
        latents = (frames - 1) // self.factor + 1
        step = self.stride // self.factor
        out, start = [], 0
        for n in range(0, latents, step):
            end = min(latents, start + step + (1 if n == 0 else 0))
            if end > start:
                out.append(frame_range((start, end), self.factor))
            start = end
        return out

    def iter_encode(self, enc: Fn, x: torch.Tensor, blend_t: Blend) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
        """``((start, end), latent part)`` per tile of x (1, 3, T, H, W); ``enc`` gives a tile's latent."""
        frames = x.shape[2]
        if self.whole(frames):
            yield (0, frames), enc(x)
            return
        latents = (frames - 1) // self.factor + 1
        step = self.stride // self.factor
        blend = self.size // self.factor - step
        prev, given = None, 0
        for n, i in enumerate(range(0, frames, self.stride)):
            if given >= latents:
                return
            tile = enc(x[:, :, i : i + self.size + 1])
            if n > 0:
                tile = blend_t(prev, tile[:, :, 1:], blend)
            prev = tile
            part = tile[:, :, : min(step + (1 if n == 0 else 0), latents - given)]
            if part.shape[2]:
                yield frame_range((given, given + part.shape[2]), self.factor), part
                given += part.shape[2]

    def iter_decode(self, dec: Fn, z: torch.Tensor, blend_t: Blend) -> Iterator[torch.Tensor]:
        """The frames of each tile of z (1, C, T', h, w) as they are final; ``dec`` decodes a tile."""
        latents = z.shape[2]
        if self._whole_latents(latents):
            yield dec(z)
            return
        frames = (latents - 1) * self.factor + 1
        step, lat_size = self.stride // self.factor, self.size // self.factor
        prev, given = None, 0
        for n, i in enumerate(range(0, latents, step)):
            if given >= frames:
                return
            tile = dec(z[:, :, i : i + lat_size + 1])
            if n > 0:
                tile = blend_t(prev, tile[:, :, :-1] if self.drop_last else tile[:, :, 1:], self.size - self.stride)
            prev = tile
            part = tile[:, :, : min(self.stride + (1 if n == 0 else 0), frames - given)]
            if part.shape[2]:
                given += part.shape[2]
                yield part


class ClipVae(TorchAutoencoder):
    """A diffusers video VAE: clips through the model's encoder/decoder (whole, or in diffusers' temporal tiles),
    images as one-frame clips."""

    has_logvar = False  # _encode_tensor gives the posterior's mean
    channels_last = False  # 5-D weights
    #: a clip of at most this many frames x pixels runs whole even where diffusers has temporal tiles (unless its
    #: frames are tiled spatially too): the tiles compute about 2 of every 3 latent frames twice (3x the time at 49
    #: frames), which pays only where the whole clip's activations would not fit
    whole_clip_voxels = 0

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

    def temporal(self) -> TemporalTiles | None:
        """diffusers' temporal tiles of this architecture (read from the model now), or None: clips run whole."""
        return None

    def _enc(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior's mean of a clip (or a tile of one), as diffusers' untiled ``encode``."""
        return self.model.encode(x).latent_dist.mode()

    def _decoder(self) -> Fn:
        """A clip's decoder, as diffusers' untiled ``decode`` (a new one per clip: LTX-Video 0.9.1's noise)."""
        return lambda z: self.model.decode(z).sample

    def _temporal_for(self, frames: int, pixels: int, spatial: bool) -> TemporalTiles | None:
        """The temporal tiles a clip of ``frames`` x ``pixels`` runs in (None: whole)."""
        t = self.temporal()
        return None if t is None or (not spatial and frames * pixels <= self.whole_clip_voxels) else t

    # -- the hooks ---------------------------------------------------------------------------
    def _clip_chunks(self, frames: int, height: int, width: int) -> list[tuple[int, int]]:
        t = self._temporal_for(frames, height * width, height * width > self.auto_tile_pixels)
        return [(0, frames)] if t is None else t.chunks(frames)

    def _iter_encode_clip_tensor(self, x: torch.Tensor, tiles: dict | None = None):
        def enc(p: torch.Tensor) -> torch.Tensor:
            return clip_tiled(self._enc, p, tiles)

        t = self._temporal_for(int(x.shape[2]), int(x.shape[-2] * x.shape[-1]), tiles is not None)
        if t is None:
            yield (0, x.shape[2]), enc(x)
        else:
            yield from t.iter_encode(enc, x, self.model.blend_t)

    def _iter_decode_clip_tensor(self, z: torch.Tensor, tiles: dict | None = None) -> Iterator[torch.Tensor]:
        decoder = self._decoder()

        def dec(p: torch.Tensor) -> torch.Tensor:
            return clip_tiled(decoder, p, tiles)

        f = self.downscale
        t = self._temporal_for(self._clip_frames(int(z.shape[2])), int(z.shape[-2] * z.shape[-1]) * f * f,
                               tiles is not None)
        if t is None:
            yield dec(z)
        else:
            yield from t.iter_decode(dec, z, self.model.blend_t)

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self._enc(x.unsqueeze(2))[:, :, 0]

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self._decoder()(z.unsqueeze(2))[:, :, 0]

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self._mean.to(raw.device, raw.dtype)) * self._factor.to(raw.device, raw.dtype)

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self._factor.to(latent.device, latent.dtype) + self._mean.to(latent.device, latent.dtype)
