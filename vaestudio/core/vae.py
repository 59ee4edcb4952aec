"""A loaded VAE and the exact encode/decode round trip diffusers does.

Pixels in [0, 1] go to [-1, 1]; the encoder's latent mean (or a seeded sample) is scaled the way
diffusers pipelines do, ``(z - shift_factor) * scaling_factor``, and decode applies the inverse.
Images whose sides are not a multiple of the VAE's downscale factor are reflect-padded and the
reconstruction is cropped back. Half precision on a GPU is checked for NaN and retried in fp32;
running out of memory falls back to tiles.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.families import Family
from vaestudio.core.tiling import Progress, ShouldStop, run_tiled

#: Images with more pixels than this are tiled automatically (mid-block attention grows as pixels^2).
AUTO_TILE_PIXELS = 1024 * 1024
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class VaeInfo:
    """What was detected about a VAE source (shown by inspect-vae and the VAE panel)."""

    source: str
    format: str  # safetensors | pickle | diffusers-folder | hub | mnist
    key_layout: str  # ldm | diffusers | mnist
    family: str
    family_guessed: bool
    family_reason: str
    latent_channels: int
    scaling_factor: float
    shift_factor: float
    parameters: int
    dtype: str  # the dtype the weights were stored in
    downscale: int
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    force_upcast: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def use_family(self, family: Family) -> None:
        """The user chose the family: take its scaling and shift."""
        self.family = family.name
        self.family_guessed = False
        self.family_reason = "chosen by the user"
        self.scaling_factor = family.scaling_factor
        self.shift_factor = family.shift_factor


@dataclass
class EncodeResult:
    latent: torch.Tensor  # scaled latents, (C, h, w) float32 on CPU; (D,) for an MNIST VAE
    height: int  # the image size this latent decodes back to
    width: int
    seconds: float
    tiled: bool
    notices: list[str] = field(default_factory=list)


def pick_device(name: str | None = None) -> torch.device:
    """'auto' (or None) picks cuda, then mps, then cpu."""
    if name and name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise VaeStudioError(f"device '{name}' was asked for but CUDA is not available")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise VaeStudioError(f"device '{name}' was asked for but MPS is not available")
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


class SdVae:
    """A Stable Diffusion family AutoencoderKL ready to encode and decode images."""

    kind = "sd"

    def __init__(self, model: torch.nn.Module, info: VaeInfo, family: Family,
                 device: torch.device | None = None, dtype: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.info = info
        self.family = family
        self.device = pick_device(None) if device is None else device
        self.dtype = pick_dtype(dtype, self.device, info.force_upcast)
        # channels-last convolutions are ~10% faster on CPU (oneDNN) and use tensor cores on GPU
        self.model.to(self.device, self.dtype, memory_format=torch.channels_last)
        self.encode_tile = 512  # pixels
        self.tile_overlap = 64  # pixels
        self.notices: list[str] = []

    # -- family / scaling -------------------------------------------------------------------
    def set_family(self, family: Family) -> None:
        self.family = family
        self.info.use_family(family)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.info.shift_factor) * self.info.scaling_factor

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.info.scaling_factor + self.info.shift_factor

    # -- precision and memory fallbacks ------------------------------------------------------
    def _guarded(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        cl = torch.channels_last
        out = fn(x.to(self.device, self.dtype, memory_format=cl))
        if self.dtype != torch.float32 and not torch.isfinite(out).all():
            self.notices.append(f"{dtype_name(self.dtype)} produced NaN/Inf; retried in fp32")
            self.dtype = torch.float32
            self.model.to(self.device, torch.float32)
            out = fn(x.to(self.device, torch.float32, memory_format=cl))
        return out.contiguous()

    @contextlib.contextmanager
    def _stoppable(self, should_stop: ShouldStop | None):
        """Check for cancellation before every ResNet block, so a long decode stops within ~1 s."""
        if should_stop is None:
            yield
            return

        owner = threading.get_ident()

        def check(_module, _inputs):
            # hooks live on the shared model: only the job that set them may be stopped by them
            if threading.get_ident() == owner and should_stop():
                raise Cancelled()

        handles = [m.register_forward_pre_hook(check) for m in self.model.modules()
                   if type(m).__name__ in ("ResnetBlock2D", "Attention")]
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
        tiled = tile_mode == "on" or (tile_mode == "auto" and pixels > AUTO_TILE_PIXELS)

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
                self.notices.append("ran out of memory; retried with tiles")
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

    # -- the round trip ---------------------------------------------------------------------
    @property
    def downscale(self) -> int:
        return self.info.downscale

    def encode(self, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> EncodeResult:
        """Encode an (H, W, 3) float image in [0, 1] to scaled latents (C, h, w)."""
        t0 = time.perf_counter()
        self.notices = []
        h, w = pixels.shape[:2]
        f = self.downscale
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None] * 2.0 - 1.0
        # pad to a multiple of f, and to at least 2 latent pixels so normalisation layers have data
        ph, pw = max((-h) % f, 2 * f - h), max((-w) % f, 2 * f - w)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        model = self.model

        def enc(t: torch.Tensor) -> torch.Tensor:
            return model.encode(t).latent_dist.parameters

        tk = {"tile": self.encode_tile, "overlap": self.tile_overlap, "up": 1, "down": f}
        with torch.inference_mode():
            moments, tiled = self._apply(enc, x, tile_mode=tile, tiled_kwargs=tk, progress=progress, should_stop=should_stop)
        mean, logvar = moments.chunk(2, dim=1)
        if sample:
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed), dtype=mean.dtype)
            z = mean + std * eps
        else:
            z = mean
        z = self.scale(z)[0].contiguous()
        return EncodeResult(z, h, w, time.perf_counter() - t0, tiled, list(self.notices))

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> np.ndarray:
        """Decode scaled latents (C, h, w) to an (H, W, 3) float image, cropped to (height, width)."""
        self.notices = []
        z = self.unscale(latent.float())[None]
        f = self.downscale
        model = self.model

        def dec(t: torch.Tensor) -> torch.Tensor:
            return model.decode(t).sample

        tk = {"tile": self.encode_tile // f, "overlap": self.tile_overlap // f, "up": f, "down": 1}
        with torch.inference_mode():
            x, _ = self._apply(dec, z, tile_mode=tile, tiled_kwargs=tk, progress=progress, should_stop=should_stop)
        x = x[0, :, : height or x.shape[2], : width or x.shape[3]]
        return ((x / 2 + 0.5).clamp(0, 1)).permute(1, 2, 0).numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the model's memory."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
