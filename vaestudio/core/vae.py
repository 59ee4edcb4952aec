"""What a VAE is to the rest of vaestudio: the ``Autoencoder`` interface and the records it exchanges.

``Autoencoder`` is what the pipeline, the CLI, the analyses, the evaluation and the window talk to:
it encodes an image into the latent space its diffusion model sees (the *model space*) and decodes
it back, and describes its latent (``VaeInfo``). ``vaestudio.core.autoencoder.TorchAutoencoder``
implements it for the convolutional VAEs; the architecture modules (``vaestudio.core.archs``)
subclass that.

Latents come in two spaces:

- **raw**: what the encoder outputs (the mean of its distribution, or a seeded sample);
- **model space**: what the diffusion model works with: scaled and shifted for SD-style VAEs,
  normalised per channel for Wan, patchified and normalised for FLUX.2. Noise is always added here.

``to_model`` and ``from_model`` convert between them.

Every call returns what happened during it (``Encoding.notes``, ``Decoding.notes``: a retry in
fp32, tiles after running out of memory...), so jobs that share one VAE never see each other's notes.

Clips (``encode_clip``, ``iter_decode_clip``, ``decode_clip``) are (T, H, W, 3) frames and latents
(C, T', h, w): a video VAE (``VaeInfo.kind == "video"``) encodes the time axis in causal chunks
(``ClipEncoding.chunks``), an image VAE encodes the frames one by one (batched).

This module imports neither torch nor numpy: the registry, the CLI parser and the window can
name these types without loading them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy as np
    import torch

    from vaestudio.core.families import Family
    from vaestudio.core.tiling import Progress, ShouldStop


@dataclass
class VaeInfo:
    """What was detected about a VAE source (shown by inspect-vae and the VAE panel)."""

    source: str
    format: str  # safetensors | pickle | diffusers-folder | hub | mnist | pth-pair
    key_layout: str  # ldm | diffusers | mnist | taesd | comfyui | ...
    architecture: str  # the registry name, e.g. autoencoder-kl, taesd, mnist
    family: str
    family_guessed: bool
    family_reason: str
    latent_channels: int  # channels of the encoder's (raw) latent
    downscale: int  # spatial factor between the image and the raw latent
    scaling_factor: float
    shift_factor: float
    parameters: int
    dtype: str  # the dtype the weights were stored in
    model_latent_channels: int | None = None  # only where the model space differs (FLUX.2: 128)
    model_downscale: int | None = None  # (FLUX.2: 16)
    halves: list[str] = field(default_factory=lambda: ["encoder", "decoder"])
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    force_upcast: bool = True
    kind: str = "image"  # "image" or "video" (a VAE with a time axis)
    temporal_downscale: int = 1  # frames per latent frame after the first (Wan: 4)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("model_latent_channels", "model_downscale"):
            if d[key] is None:
                del d[key]
        return d

    @property
    def pad_multiple(self) -> int:
        """Image sides are padded to a multiple of this (the model space's factor where larger)."""
        return max(self.downscale, self.model_downscale or 1)


@dataclass
class Encoding:
    """An image encoded by one VAE: the pixels it saw, its latent in model space (noise acts here)
    and in the encoder's raw space, and what happened on the way."""

    original: np.ndarray  # (H, W, 3) what the VAE was given: the image, or e.g. the 28x28 digit of an MNIST VAE
    latent: torch.Tensor  # model space, (C, h, w) float32 on the CPU; (D,) for a vector latent
    raw: torch.Tensor  # the encoder's latent, (C, h, w) (the mean, or a seeded sample)
    height: int  # the image size this latent decodes back to
    width: int
    seconds: float
    tiled: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class Decoding:
    """A latent decoded by one VAE, and what happened on the way."""

    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1], cropped to the size asked for
    seconds: float
    tiled: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class ClipEncoding:
    """A clip encoded by one VAE: the frames it saw (after trimming), its latent in model space and
    in the encoder's raw space, (C, T', h, w) each, and the frame ranges encoded together."""

    original: np.ndarray  # (T, H, W, 3) float32 in [0, 1]: the frames the VAE was given, after trimming
    latent: torch.Tensor  # model space, (C, T', h, w) float32 on the CPU
    raw: torch.Tensor  # the encoder's latent (the mean), (C, T', h, w)
    frames: int  # T
    height: int  # the frame size this latent decodes back to
    width: int
    seconds: float
    tiled: bool
    chunks: list[tuple[int, int]] = field(default_factory=list)  # frame ranges [start, end) encoded together
    notes: list[str] = field(default_factory=list)


@dataclass
class ClipDecoding:
    """A clip latent decoded by one VAE; ``complete`` is False when it was cancelled part-way, and
    ``frames`` then holds the frames decoded until then."""

    frames: np.ndarray  # (T, H, W, 3) float32 in [0, 1]
    seconds: float
    tiled: bool
    chunks: list[tuple[int, int]] = field(default_factory=list)  # frame ranges [start, end) decoded together
    notes: list[str] = field(default_factory=list)
    complete: bool = True


@runtime_checkable
class Autoencoder(Protocol):
    """What the pipeline, the CLI and the window need from a VAE, whatever its architecture."""

    info: VaeInfo
    family: Family
    device: torch.device
    dtype: torch.dtype
    dtype_reason: str  # why ``dtype``, in words ("auto: fp32, this CPU has no native bf16")
    previews_itself: bool  # decodes so fast that a preview decoder in front of it would not help

    @property
    def downscale(self) -> int: ...

    @property
    def can_encode(self) -> bool: ...

    @property
    def can_decode(self) -> bool: ...

    def prepare_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The (H, W, 3) image as the VAE sees it (the image itself, or e.g. a 28x28 digit)."""
        ...

    def encode(self, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Encoding:
        """Prepare (``prepare_pixels``) and encode an (H, W, 3) float image in [0, 1]."""
        ...

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> Decoding:
        """Decode a model-space latent to an (H, W, 3) float image in [0, 1]. Tiled VAEs also take
        ``tile_size``/``tile_overlap`` (pixels) to override their tiling for one call."""
        ...

    def encode_batch(self, x: torch.Tensor, *, sample: bool = False, seeds: Sequence[int] | None = None,
                     tile: str = "auto", progress: Progress | None = None,
                     should_stop: ShouldStop | None = None,
                     notes: list[str] | None = None) -> tuple[torch.Tensor, bool]:
        """Encode (N, 3, H, W) images in [0, 1] (sides a multiple of ``info.pad_multiple``, already
        prepared) to raw latents (N, C, h, w); returns them and whether tiles were used. What
        happened is appended to ``notes`` when given."""
        ...

    def decode_batch(self, latent: torch.Tensor, *, tile: str = "auto", progress: Progress | None = None,
                     should_stop: ShouldStop | None = None, notes: list[str] | None = None) -> torch.Tensor:
        """Decode model-space latents (N, ...) to (N, 3, H, W) images in [0, 1] (float32, CPU)."""
        ...

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latent (..., C, h, w) to model space (leading batch dimensions allowed)."""
        ...

    def from_model(self, latent: torch.Tensor) -> torch.Tensor: ...

    def frames_valid(self, n: int) -> int:
        """The largest frame count <= n this VAE takes (1 + k * temporal_downscale for a causal video
        VAE, n for an image VAE)."""
        ...

    def encode_clip(self, frames: np.ndarray, *, tile: str = "auto", progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> ClipEncoding:
        """Encode (T, H, W, 3) float frames in [0, 1], trimmed to ``frames_valid`` (and noted); an
        image VAE encodes them frame by frame. Progress is reported per chunk."""
        ...

    def iter_decode_clip(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
                         tile: str = "auto", progress: Progress | None = None,
                         should_stop: ShouldStop | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Decode a model-space clip latent (C, T', h, w) chunk by chunk: yields ``(start_frame, frames)``
        with frames (t, H, W, 3) float32 in [0, 1] as each temporal chunk is decoded; stops (without
        raising) when ``should_stop`` says so."""
        ...

    def decode_clip(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
                    tile: str = "auto", progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> ClipDecoding:
        """``iter_decode_clip`` collected; ``complete`` False when cancelled part-way."""
        ...

    def clip_to_model(self, raw: torch.Tensor) -> torch.Tensor:
        """A raw clip latent (C, T', h, w) to model space (``to_model`` takes (..., C, h, w))."""
        ...

    def clip_from_model(self, latent: torch.Tensor) -> torch.Tensor: ...

    def family_choices(self) -> list[Family]:
        """The families this VAE may be switched to (those whose latent it has)."""
        ...

    def set_family(self, family: Family) -> None: ...

    def close(self) -> None: ...
