"""The device and precision policy: which device a VAE runs on, in which dtype (and why), and what
counts as running out of memory there."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from vaestudio.core.errors import DeviceUnavailable, VaeStudioError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


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


#: Set to 1 or 0 to say whether the CPU computes bf16 natively, instead of asking oneDNN (for tests).
CPU_BF16_ENV = "VAESTUDIO_CPU_BF16"
HALVES = ("encode", "decode")


@functools.cache
def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it; the
    ``VAESTUDIO_CPU_BF16`` environment variable (1 or 0) overrides the answer."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _onednn_bf16()


@dataclass(frozen=True)
class DtypeChoice:
    """The precision a VAE runs in: ``dtype`` its weights', ``halves`` each half's computation (a half
    that differs runs under autocast on fp32 weights), ``reason`` why, in words."""

    dtype: torch.dtype
    halves: dict[str, torch.dtype]
    reason: str


def _all(dt: torch.dtype, reason: str) -> DtypeChoice:
    return DtypeChoice(dt, dict.fromkeys(HALVES, dt), reason)


def pick_dtype(name: str | None, device: torch.device, force_upcast: bool,
               cpu_fp32: Mapping[str, str] | None = None) -> DtypeChoice:
    """The precision for ``--dtype name`` on ``device``. 'auto': on the CPU bf16 where it computes bf16
    natively, except the halves in ``cpu_fp32`` (half -> why bf16 hurts there), else fp32; on a GPU fp32
    when the VAE asks to be upcast, else bf16 where CUDA supports it, else fp16."""
    if name and name != "auto":
        if name not in DTYPES:
            raise VaeStudioError(f"unknown dtype '{name}' (use auto, fp32, fp16 or bf16)")
        dt = DTYPES[name]
        if device.type == "cpu" and dt == torch.float16:
            raise VaeStudioError("fp16 is not supported on the CPU; use fp32 or bf16")
        return _all(dt, f"{dtype_name(dt)} asked for")
    if device.type == "cpu":
        if not cpu_native_bf16():
            return _all(torch.float32, "auto: fp32, this CPU has no native bf16")
        keep = {h: why for h, why in (cpu_fp32 or {}).items() if h in HALVES}
        if not keep:
            return _all(torch.bfloat16, "auto: bf16, native bf16 on this CPU")
        halves = {h: torch.float32 if h in keep else torch.bfloat16 for h in HALVES}
        why = "; ".join(f"fp32 for the {h}r, {keep[h]}" for h in HALVES if h in keep)
        bf16 = [h for h in HALVES if h not in keep]
        what = f"bf16 for the {bf16[0]}r, " if bf16 else ""
        dt = torch.bfloat16 if not any(v == torch.float32 for v in halves.values()) else torch.float32
        return DtypeChoice(dt, halves, f"auto: {what}{why}")
    if force_upcast:
        return _all(torch.float32, "auto: fp32, this VAE asks to be upcast (force_upcast)")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return _all(torch.bfloat16, f"auto: bf16 on {device.type}")
    if device.type == "mps":
        # Apple GPUs: fp16 as on a GPU without bf16; bf16 (macOS 14+ only) runs when asked for, never by
        # 'auto', and never as autocast over fp32 weights (that is the CPU's rule alone)
        return _all(torch.float16, "auto: fp16 on mps (bf16 is not assumed on Apple GPUs)")
    return _all(torch.float16, f"auto: fp16 on {device.type}")


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def no_kernel(exc: NotImplementedError, device: torch.device) -> str:
    """Why a reduced precision failed, from torch's "'avg_pool3d_out_frame' not implemented for 'BFloat16'"."""
    return f"has no {device.type} kernel here ({str(exc).splitlines()[0]})"


def dtype_name(dt: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dt, str(dt))
