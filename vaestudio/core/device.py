"""The device and precision policy: which device a VAE runs on, in which dtype, and what counts as
running out of memory there."""

from __future__ import annotations

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
