"""The machine a benchmark ran on, printed beside its table: machines differ from one session to the next."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_line() -> str:
    """The CPU (model name, family and model), its cores, the flags that decide bf16 speed, oneDNN's bf16 answer,
    torch's version and threads."""
    import torch

    from vaestudio.core.device import cpu_native_bf16

    info, flags = {}, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("model name", "cpu family", "model") and k not in info:
                info[k] = v.strip()
            if k == "flags" and not flags:
                flags = set(v.split())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    family = f" (family {info['cpu family']} model {info['model']})" if "cpu family" in info and "model" in info else ""
    have = " ".join(f for f in FLAGS if f in flags) or "?"
    return (f"CPU: {name}{family}, {os.cpu_count()} cores; flags: {have}; oneDNN native bf16: {cpu_native_bf16()}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"capability {torch.backends.cpu.get_cpu_capability()}")


def install_line() -> str:
    """Whether the test extras are installed: diffusers' import pulls in transformers (and through it scipy) when
    they are, which makes a launch about 1.3 s slower than the app's own install."""
    extra = [m for m in ("transformers", "scipy") if importlib.util.find_spec(m) is not None]
    return (f"install: test extras present ({', '.join(extra)}: diffusers imports them; a launch is slower than in "
            "the app's own install)" if extra else "install: the app's own (no transformers, no scipy)")
