"""The one interface every VAE implements, and the machinery torch VAEs share.

``Autoencoder`` is what the rest of vaestudio (pipeline, CLI, window) talks to: it encodes an
image into the latent space its diffusion model sees (the *model space*) and decodes it back, and
describes its latent. ``TorchAutoencoder`` holds what convolutional VAEs have in common: the
device and precision policy (fp32 on the CPU; half precision on a GPU, checked for NaN and retried
in fp32), padding to the downscale factor, tiling (automatic above 1 megapixel and on running out
of memory), progress, and cancellation before each of the blocks the architecture declares.
An architecture module subclasses it and supplies ``_encode_tensor``/``_decode_tensor``.

Latents come in two spaces:

- **raw**: what the encoder outputs (the mean of its distribution, or a seeded sample);
- **model space**: what the diffusion model works with: scaled and shifted for SD-style VAEs,
  normalised per channel for Wan, patchified and normalised for FLUX.2. Noise is always added here.

``to_model`` and ``from_model`` convert between them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from vaestudio.core.errors import Cancelled, DeviceUnavailable, VaeStudioError
from vaestudio.core.tiling import Progress, ShouldStop, run_tiled

if TYPE_CHECKING:
    from vaestudio.core.families import Family

#: Images with more pixels than this are tiled automatically (attention grows as pixels^2).
AUTO_TILE_PIXELS = 1024 * 1024
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


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
class EncodeResult:
    """An encoded image: its latent in model space (noise acts here) and in the encoder's raw space."""

    latent: torch.Tensor  # model space, (C, h, w) float32 on the CPU; (D,) for a vector latent
    raw: torch.Tensor  # the encoder's latent, (C, h, w) (the mean, or a seeded sample)
    height: int  # the image size this latent decodes back to
    width: int
    seconds: float
    tiled: bool
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Autoencoder(Protocol):
    """What the pipeline, the CLI and the window need from a VAE, whatever its architecture."""

    info: VaeInfo
    family: Family
    device: torch.device
    dtype: torch.dtype
    notes: list[str]  # what happened during the last call (precision retries, tiling...)
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
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> EncodeResult: ...

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> np.ndarray:
        """Decode a model-space latent to an (H, W, 3) float image in [0, 1]. Tiled VAEs also take
        ``tile_size``/``tile_overlap`` (pixels) to override their tiling for one call."""
        ...

    def encode_batch(self, x: torch.Tensor, *, sample: bool = False, seeds: Sequence[int] | None = None,
                     tile: str = "auto", progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> tuple[torch.Tensor, bool]:
        """Encode (N, 3, H, W) images in [0, 1] (sides a multiple of ``info.pad_multiple``) to raw
        latents (N, C, h, w); returns them and whether tiles were used."""
        ...

    def decode_batch(self, latent: torch.Tensor, *, tile: str = "auto", progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> torch.Tensor:
        """Decode model-space latents (N, ...) to (N, 3, H, W) images in [0, 1] (float32, CPU)."""
        ...

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latent (..., C, h, w) to model space (leading batch dimensions allowed)."""
        ...

    def from_model(self, latent: torch.Tensor) -> torch.Tensor: ...

    def family_choices(self) -> list[Family]:
        """The families this VAE may be switched to (those whose latent it has)."""
        ...

    def set_family(self, family: Family) -> None: ...

    def close(self) -> None: ...


# -- device and precision policy -------------------------------------------------------------

def available_devices() -> list[str]:
    """The devices this machine has, for choices shown to the user ('auto' first)."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + ([f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.device_count() > 1 else [])
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        out.append("mps")
    return out


def pick_device(name: str | None = None) -> torch.device:
    """'auto' (or None) picks cuda, then mps, then cpu."""
    if name and name != "auto":
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise VaeStudioError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(f"device '{name}' was asked for but CUDA is not available")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceUnavailable(f"device '{name}' was asked for but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str | None, device: torch.device, force_upcast: bool) -> torch.dtype:
    """fp32 on CPU; on a GPU fp32 when the VAE asks to be upcast, else bf16/fp16."""
    if name and name != "auto":
        if name not in DTYPES:
            raise VaeStudioError(f"unknown dtype '{name}' (use auto, fp32, fp16 or bf16)")
        dt = DTYPES[name]
        if device.type == "cpu" and dt == torch.float16:
            raise VaeStudioError("fp16 is not supported on the CPU; use fp32 or bf16")
        return dt
    if device.type == "cpu" or force_upcast:
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def dtype_name(dt: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dt, str(dt))


def pad_to_multiple(x: torch.Tensor, f: int) -> torch.Tensor:
    """Pad (N, C, H, W) on the bottom and right to a multiple of f, and to at least 2f so that
    normalisation layers see more than one latent pixel (reflect where the image allows it)."""
    h, w = x.shape[-2:]
    ph, pw = max((-h) % f, 2 * f - h), max((-w) % f, 2 * f - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


def patchify(z: torch.Tensor, p: int = 2) -> torch.Tensor:
    """(..., C, h, w) -> (..., C*p*p, h/p, w/p), channels ordered (c, dy, dx) as in diffusers' FLUX.2."""
    *lead, c, h, w = z.shape
    n = len(lead)
    z = z.reshape(*lead, c, h // p, p, w // p, p)
    z = z.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return z.reshape(*lead, c * p * p, h // p, w // p)


def unpatchify(z: torch.Tensor, p: int = 2) -> torch.Tensor:
    """The inverse of ``patchify``: (..., C*p*p, h, w) -> (..., C, h*p, w*p)."""
    *lead, cpp, h, w = z.shape
    n = len(lead)
    c = cpp // (p * p)
    z = z.reshape(*lead, c, p, p, h, w)
    z = z.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return z.reshape(*lead, c, h * p, w * p)


# -- the shared implementation ---------------------------------------------------------------

class TorchAutoencoder:
    """Base class for convolutional VAEs; see the module docstring.

    Subclasses set the class attributes and implement ``_encode_tensor`` (an image batch in
    ``input_range`` to the raw latent, or to mean and log-variance concatenated on the channel axis
    when ``has_logvar``) and ``_decode_tensor`` (raw latent to an image batch in ``input_range``).
    """

    architecture: ClassVar[str] = ""
    input_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    has_logvar: ClassVar[bool] = True
    #: Class names of the blocks before which a running job checks for cancellation.
    cancel_blocks: ClassVar[tuple[str, ...]] = ()
    #: tile="auto" tiles images larger than this (pixels); memory-light VAEs set it higher
    auto_tile_pixels: ClassVar[int] = AUTO_TILE_PIXELS
    previews_itself: ClassVar[bool] = False
    #: Store 4-D weights channels-last (faster convolutions); False for models with 5-D (3D conv) weights.
    channels_last: ClassVar[bool] = True

    def __init__(self, model: torch.nn.Module, info: VaeInfo, family: Family,
                 device: torch.device | None = None, dtype: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.info = info
        self.family = family
        self.device = pick_device(None) if device is None else device
        self.dtype = pick_dtype(dtype, self.device, info.force_upcast)
        self._cast(self.dtype)
        self._precision = threading.Lock()
        self.encode_tile = 512  # pixels
        self.tile_overlap = 64  # pixels
        self.notes: list[str] = []

    # -- description ------------------------------------------------------------------------
    @property
    def downscale(self) -> int:
        return self.info.downscale

    @property
    def can_encode(self) -> bool:
        return "encoder" in self.info.halves

    @property
    def can_decode(self) -> bool:
        return "decoder" in self.info.halves

    def prepare_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return pixels, []

    def family_choices(self) -> list[Family]:
        from vaestudio.core.registry import get_architecture

        return get_architecture(self.architecture).family_choices(self.info)

    def set_family(self, family: Family) -> None:
        from vaestudio.core.registry import get_architecture

        get_architecture(self.architecture).use_family(self.info, family)
        self.family = family

    # -- spaces -----------------------------------------------------------------------------
    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.info.shift_factor) * self.info.scaling_factor

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.info.scaling_factor + self.info.shift_factor

    # -- what subclasses provide ------------------------------------------------------------
    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _cancel_points(self) -> Iterable[torch.nn.Module]:
        return [m for m in self.model.modules() if type(m).__name__ in self.cancel_blocks]

    # -- precision and memory fallbacks ------------------------------------------------------
    def _cast(self, dtype: torch.dtype) -> None:
        # channels-last convolutions are ~10% faster on CPU (oneDNN) and use tensor cores on GPU
        if self.channels_last:
            self.model.to(self.device, dtype, memory_format=torch.channels_last)
        else:  # torch cannot store 5-D (3D convolution) weights channels-last
            self.model.to(self.device, dtype)

    def _guarded(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run ``fn`` in the VAE's precision; a half precision that gives NaN/Inf switches the VAE to
        fp32 for good (once, even with several jobs on it) and runs again. A job whose pass fails
        because another job switched the weights under it runs again in the new precision."""
        cl = torch.channels_last if x.ndim == 4 and self.channels_last else torch.contiguous_format
        dtype = self.dtype
        try:
            out = fn(x.to(self.device, dtype, memory_format=cl))
        except RuntimeError:
            if self.dtype == dtype:
                raise
            return self._guarded(fn, x)
        if dtype != torch.float32 and not torch.isfinite(out).all():
            with self._precision:
                if self.dtype != torch.float32:
                    self.notes.append(f"{dtype_name(self.dtype)} produced NaN/Inf; retried in fp32")
                    self._cast(torch.float32)
                    self.dtype = torch.float32
            out = fn(x.to(self.device, torch.float32, memory_format=cl))
        return out.contiguous()

    @contextlib.contextmanager
    def _stoppable(self, should_stop: ShouldStop | None):
        """Check for cancellation before every declared block, so a long pass stops within ~1 s."""
        if should_stop is None:
            yield
            return

        owner = threading.get_ident()

        def check(_module, _inputs):
            # hooks live on the shared model: only the job that set them may be stopped by them
            if threading.get_ident() == owner and should_stop():
                raise Cancelled()

        handles = [m.register_forward_pre_hook(check) for m in self._cancel_points()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _apply(self, fn, x, *, tile_mode: str, tiled_kwargs: dict, progress, should_stop):
        with self._stoppable(should_stop):
            return self._apply_inner(fn, x, tile_mode=tile_mode, tiled_kwargs=tiled_kwargs, progress=progress,
                                     should_stop=should_stop)

    def _apply_inner(self, fn, x, *, tile_mode: str, tiled_kwargs: dict, progress, should_stop):
        h, w = x.shape[-2:]
        pixels = h * w * (tiled_kwargs["up"] ** 2 if tiled_kwargs["up"] > 1 else 1)
        tiled = tile_mode == "on" or (tile_mode == "auto" and pixels > self.auto_tile_pixels)

        def one(t: torch.Tensor) -> torch.Tensor:
            return self._guarded(fn, t)

        if not tiled:
            try:
                out = one(x)
                if progress is not None:
                    progress(1, 1)
                return out.float().cpu(), False
            except Cancelled:
                raise
            except Exception as exc:
                if not is_oom(exc) or tile_mode != "auto":
                    if is_oom(exc):
                        raise VaeStudioError("ran out of memory; try --tile on or a smaller --size") from None
                    raise
                self.notes.append("ran out of memory; retried with tiles")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        try:
            return run_tiled(x, one, progress=progress, should_stop=should_stop, **tiled_kwargs), True
        except Cancelled:
            raise
        except Exception as exc:
            if is_oom(exc):
                raise VaeStudioError("ran out of memory even with tiles; try a smaller --size") from None
            raise

    def _need(self, half: str) -> None:
        if half not in self.info.halves:
            raise VaeStudioError(f"this VAE source has no {half} (only its {', '.join(self.info.halves)})",
                                 self.info.source)

    # -- the round trip ---------------------------------------------------------------------
    def _tiles(self, tile_size: int | None, tile_overlap: int | None) -> tuple[int, int]:
        return (self.encode_tile if tile_size is None else int(tile_size),
                self.tile_overlap if tile_overlap is None else int(tile_overlap))

    def encode_batch(self, x: torch.Tensor, *, sample: bool = False, seeds: Sequence[int] | None = None,
                     tile: str = "auto", tile_size: int | None = None, tile_overlap: int | None = None,
                     progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> tuple[torch.Tensor, bool]:
        """Encode (N, 3, H, W) images in [0, 1] to raw latents; see ``Autoencoder.encode_batch``.

        With ``sample``, image i draws its sample with ``torch.Generator().manual_seed(seeds[i])``,
        so results do not depend on how images are batched. ``tile_size``/``tile_overlap`` (pixels)
        override the VAE's tiling for this call.
        """
        self._need("encoder")
        lo, hi = self.input_range
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        f = self.downscale
        size, overlap = self._tiles(tile_size, tile_overlap)
        tk = {"tile": size, "overlap": overlap, "up": 1, "down": f}
        with torch.inference_mode():
            out, tiled = self._apply(self._encode_tensor, x, tile_mode=tile, tiled_kwargs=tk, progress=progress,
                                     should_stop=should_stop)
        if not self.has_logvar:
            if sample:
                self.notes.append(f"{self.architecture} latents are deterministic; sampling has no effect")
            return out, tiled
        mean, logvar = out.chunk(2, dim=1)
        if not sample:
            return mean.contiguous(), tiled
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        seeds = list(seeds) if seeds is not None else [0] * len(mean)
        eps = torch.stack([torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(int(s)),
                                       dtype=mean.dtype) for s in seeds])
        return (mean + std * eps).contiguous(), tiled

    def decode_batch(self, latent: torch.Tensor, *, tile: str = "auto", tile_size: int | None = None,
                     tile_overlap: int | None = None, progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> torch.Tensor:
        """Decode model-space latents (N, ...) to (N, 3, H, W) images in [0, 1]."""
        self._need("decoder")
        z = self.from_model(latent.float())
        f = self.downscale
        size, overlap = self._tiles(tile_size, tile_overlap)
        tk = {"tile": size // f, "overlap": overlap // f, "up": f, "down": 1}
        with torch.inference_mode():
            x, _ = self._apply(self._decode_tensor, z, tile_mode=tile, tiled_kwargs=tk, progress=progress,
                               should_stop=should_stop)
        lo, hi = self.input_range
        if (lo, hi) != (0.0, 1.0):
            x = (x - lo) / (hi - lo)
        return x.clamp(0, 1)

    def encode(self, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
               tile_size: int | None = None, tile_overlap: int | None = None,
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> EncodeResult:
        """Encode an (H, W, 3) float image in [0, 1] to its latent (see ``EncodeResult``)."""
        self._need("encoder")
        t0 = time.perf_counter()
        self.notes = []
        h, w = pixels.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
        x = pad_to_multiple(x, self.info.pad_multiple)
        z, tiled = self.encode_batch(x, sample=sample, seeds=[seed], tile=tile, tile_size=tile_size,
                                     tile_overlap=tile_overlap, progress=progress, should_stop=should_stop)
        raw = z[0].contiguous()
        return EncodeResult(self.to_model(raw).contiguous(), raw, h, w, time.perf_counter() - t0, tiled,
                            list(self.notes))

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", tile_size: int | None = None, tile_overlap: int | None = None,
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> np.ndarray:
        """Decode a model-space latent to an (H, W, 3) float image, cropped to (height, width)."""
        self.notes = []
        x = self.decode_batch(latent[None], tile=tile, tile_size=tile_size, tile_overlap=tile_overlap,
                              progress=progress, should_stop=should_stop)
        x = x[0, :, : height or x.shape[2], : width or x.shape[3]]
        return x.permute(1, 2, 0).numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the model's memory."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
