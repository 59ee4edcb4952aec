"""The machinery the torch VAEs share: ``TorchAutoencoder`` implements ``vaestudio.core.vae.Autoencoder``.

It holds what convolutional VAEs have in common: the device and precision policy
(``vaestudio.core.device``: bf16 on a CPU that computes it natively, except the halves an
architecture keeps in fp32, else fp32; half precision on a GPU; a reduced precision is checked for
NaN/Inf and retried in fp32), padding to the downscale factor, tiling (automatic above 1 megapixel and on running out
of memory), progress, cancellation before each of the blocks the architecture declares, and the
notes of each call. An architecture module subclasses it and supplies ``_encode_tensor`` and
``_decode_tensor``; the latent spaces are described in ``vaestudio.core.vae``. Clips
(``encode_clip``, ``iter_decode_clip``...) come from ``vaestudio.core.clips.ClipMixin``: frame by
frame for image VAEs, the architecture's causal chunks for video VAEs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from vaestudio.core.clips import ClipMixin
from vaestudio.core.device import dtype_name, is_oom, no_kernel, pick_device, pick_dtype
from vaestudio.core.errors import Cancelled, VaeStudioError
from vaestudio.core.tensors import pad_to_multiple
from vaestudio.core.tiling import Progress, ShouldStop, run_tiled
from vaestudio.core.vae import Decoding, Encoding

if TYPE_CHECKING:
    from vaestudio.core.families import Family
    from vaestudio.core.vae import VaeInfo

#: Images with more pixels than this are tiled automatically (attention grows as pixels^2).
AUTO_TILE_PIXELS = 1024 * 1024


class TorchAutoencoder(ClipMixin):
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
    #: Halves ("encode", "decode") that ``--dtype auto`` keeps in fp32 on a CPU with native bf16, each
    #: with the measured reason (benchmarks/bench_dtype.py); the other half still runs in bf16.
    cpu_fp32: ClassVar[Mapping[str, str]] = {}

    def __init__(self, model: torch.nn.Module, info: VaeInfo, family: Family,
                 device: torch.device | None = None, dtype: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.info = info
        self.family = family
        self.device = pick_device(None) if device is None else device
        choice = pick_dtype(dtype, self.device, info.force_upcast, self.cpu_fp32)
        self.dtype = choice.dtype
        #: why ``dtype``, in words (shown in --json, summary.json and the VAE panel)
        self.dtype_reason = choice.reason
        # halves computed in bf16 under autocast while the weights stay fp32 (the other half needs fp32)
        self._autocast = {h for h, dt in choice.halves.items() if dt != choice.dtype}
        self._cast(self.dtype)
        self._precision = threading.Lock()
        self.encode_tile = 512  # pixels
        self.tile_overlap = 64  # pixels

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

    def _computes(self, half: str) -> torch.dtype:
        """The dtype ``half`` ("encode"/"decode") computes in now."""
        return torch.bfloat16 if self.dtype == torch.float32 and half in self._autocast else self.dtype

    def _guarded(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, notes: list[str],
                 half: str) -> torch.Tensor:
        """Run ``fn`` in the precision of ``half``; a reduced precision that gives NaN/Inf switches the
        VAE to fp32 for good (once, even with several jobs on it) and runs again. A job whose pass fails
        because another job switched the weights under it runs again in the new precision."""
        cl = torch.channels_last if x.ndim == 4 and self.channels_last else torch.contiguous_format
        dtype, computes = self.dtype, self._computes(half)
        autocast = torch.autocast(self.device.type, torch.bfloat16) if computes != dtype else contextlib.nullcontext()
        try:
            with autocast:
                out = fn(x.to(self.device, dtype, memory_format=cl))
        except NotImplementedError as exc:  # torch has no kernel for an operation in this precision here
            if computes == torch.float32 or self.dtype != dtype:
                raise
            self._fall_back_to_fp32(computes, notes, no_kernel(exc, self.device))
            out = fn(x.to(self.device, torch.float32, memory_format=cl))
        except RuntimeError:
            if self.dtype == dtype:
                raise
            return self._guarded(fn, x, notes, half)
        if computes != torch.float32 and not torch.isfinite(out).all():
            self._fall_back_to_fp32(computes, notes, "produced NaN/Inf")
            out = fn(x.to(self.device, torch.float32, memory_format=cl))
        return out.float().contiguous()

    def _fall_back_to_fp32(self, computes: torch.dtype, notes: list[str], why: str) -> None:
        """``computes`` gave NaN/Inf or has no kernel: switch the VAE to fp32 for good (once, even with
        several jobs on it)."""
        with self._precision:
            if self.dtype != torch.float32 or self._autocast:
                self._cast(torch.float32)
                self.dtype = torch.float32
                self._autocast = set()
                self.dtype_reason += f"; {dtype_name(computes)} {why}, fp32 since"
        notes.append(f"{dtype_name(computes)} {why}; retried in fp32")

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

    def _apply(self, fn, x, *, half: str, tile_mode: str, tiled_kwargs: dict, progress, should_stop,
               notes: list[str]) -> tuple[torch.Tensor, bool]:
        with self._stoppable(should_stop):
            return self._apply_inner(fn, x, half=half, tile_mode=tile_mode, tiled_kwargs=tiled_kwargs,
                                     progress=progress, should_stop=should_stop, notes=notes)

    def _apply_inner(self, fn, x, *, half: str, tile_mode: str, tiled_kwargs: dict, progress, should_stop,
                     notes: list[str]) -> tuple[torch.Tensor, bool]:
        h, w = x.shape[-2:]
        pixels = h * w * (tiled_kwargs["up"] ** 2 if tiled_kwargs["up"] > 1 else 1)
        tiled = tile_mode == "on" or (tile_mode == "auto" and pixels > self.auto_tile_pixels)

        def one(t: torch.Tensor) -> torch.Tensor:
            return self._guarded(fn, t, notes, half)

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
                notes.append("ran out of memory; retried with tiles")
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
                     progress: Progress | None = None, should_stop: ShouldStop | None = None,
                     notes: list[str] | None = None) -> tuple[torch.Tensor, bool]:
        """Encode (N, 3, H, W) images in [0, 1] to raw latents; see ``Autoencoder.encode_batch``.

        With ``sample``, image i draws its sample with ``torch.Generator().manual_seed(seeds[i])``,
        so results do not depend on how images are batched. ``tile_size``/``tile_overlap`` (pixels)
        override the VAE's tiling for this call.
        """
        self._need("encoder")
        notes = [] if notes is None else notes
        lo, hi = self.input_range
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        f = self.downscale
        size, overlap = self._tiles(tile_size, tile_overlap)
        tk = {"tile": size, "overlap": overlap, "up": 1, "down": f}
        with torch.inference_mode():
            out, tiled = self._apply(self._encode_tensor, x, half="encode", tile_mode=tile, tiled_kwargs=tk, progress=progress,
                                     should_stop=should_stop, notes=notes)
        if not self.has_logvar:
            if sample:
                notes.append(f"{self.architecture} latents are deterministic; sampling has no effect")
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
                     should_stop: ShouldStop | None = None, notes: list[str] | None = None) -> torch.Tensor:
        """Decode model-space latents (N, ...) to (N, 3, H, W) images in [0, 1]."""
        return self._decode_batch(latent, tile=tile, tile_size=tile_size, tile_overlap=tile_overlap,
                                  progress=progress, should_stop=should_stop, notes=[] if notes is None else notes)[0]

    def _decode_batch(self, latent: torch.Tensor, *, tile: str, tile_size: int | None, tile_overlap: int | None,
                      progress: Progress | None, should_stop: ShouldStop | None,
                      notes: list[str]) -> tuple[torch.Tensor, bool]:
        self._need("decoder")
        z = self.from_model(latent.float())
        f = self.downscale
        size, overlap = self._tiles(tile_size, tile_overlap)
        tk = {"tile": size // f, "overlap": overlap // f, "up": f, "down": 1}
        with torch.inference_mode():
            x, tiled = self._apply(self._decode_tensor, z, half="decode", tile_mode=tile, tiled_kwargs=tk, progress=progress,
                                   should_stop=should_stop, notes=notes)
        lo, hi = self.input_range
        if (lo, hi) != (0.0, 1.0):
            x = (x - lo) / (hi - lo)
        return x.clamp(0, 1), tiled

    def encode(self, pixels: np.ndarray, *, sample: bool = False, seed: int = 0, tile: str = "auto",
               tile_size: int | None = None, tile_overlap: int | None = None,
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Encoding:
        """Prepare and encode an (H, W, 3) float image in [0, 1] (see ``Encoding``)."""
        self._need("encoder")
        t0 = time.perf_counter()
        original, notes = self.prepare_pixels(pixels)
        notes = list(notes)
        h, w = original.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(original, dtype=np.float32)).permute(2, 0, 1)[None]
        x = pad_to_multiple(x, self.info.pad_multiple)
        z, tiled = self.encode_batch(x, sample=sample, seeds=[seed], tile=tile, tile_size=tile_size,
                                     tile_overlap=tile_overlap, progress=progress, should_stop=should_stop,
                                     notes=notes)
        raw = z[0].contiguous()
        return Encoding(original, self.to_model(raw).contiguous(), raw, h, w, time.perf_counter() - t0, tiled,
                        list(dict.fromkeys(notes)))

    def decode(self, latent: torch.Tensor, height: int | None = None, width: int | None = None, *,
               tile: str = "auto", tile_size: int | None = None, tile_overlap: int | None = None,
               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Decoding:
        """Decode a model-space latent to an (H, W, 3) float image, cropped to (height, width)."""
        t0 = time.perf_counter()
        notes: list[str] = []
        x, tiled = self._decode_batch(latent[None], tile=tile, tile_size=tile_size, tile_overlap=tile_overlap,
                                      progress=progress, should_stop=should_stop, notes=notes)
        x = x[0, :, : height or x.shape[2], : width or x.shape[3]]
        pixels = x.permute(1, 2, 0).numpy().astype(np.float32, copy=False)
        return Decoding(pixels, time.perf_counter() - t0, tiled, list(dict.fromkeys(notes)))

    def close(self) -> None:
        """Free the model's memory."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
