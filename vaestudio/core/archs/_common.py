"""What the modules for today's large VAEs (FLUX.2, Wan / Qwen-Image, DC-AE, HunyuanImage) share.

Not an architecture itself (it defines no ``ARCHITECTURE``): the shipped configs that let single
files load offline, finding a VAE inside a larger state dict, and building a diffusers model from
checked tensors with one-sentence errors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from importlib import resources

import torch

from vaestudio.core.archs.autoencoder_kl import load_state_into, summarize_keys
from vaestudio.core.autoencoder import VaeInfo
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.registry import find_prefix
from vaestudio.core.weights import WeightFile, check_finite

__all__ = ["build_model", "dtype_of", "extract", "load_state_into", "new_info", "shipped_config", "summarize_keys"]


@cache
def _shipped(name: str) -> str:
    return resources.files("vaestudio.resources").joinpath("configs", f"{name}.json").read_text(encoding="utf-8")


def shipped_config(name: str) -> dict:
    """A diffusers config shipped with vaestudio (resources/configs/<name>.json), without '_' keys."""
    return {k: v for k, v in json.loads(_shipped(name)).items() if not k.startswith("_")}


def extract(wf: WeightFile, anchor: str, parts: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """The tensors under the prefix where ``anchor`` is (bare, ``vae.``, ``first_stage_model.``...) whose
    first key part is in ``parts``, and the keys left out; None when ``anchor`` is absent."""
    prefix = find_prefix(wf.tensors, anchor)
    if prefix is None:
        return None
    tensors = {k[len(prefix):]: v for k, v in wf.tensors.items()
               if k.startswith(prefix) and k[len(prefix):].split(".")[0] in parts}
    ignored = sorted(k for k in wf.tensors if not (k.startswith(prefix) and k[len(prefix):] in tensors))
    return tensors, ignored


def dtype_of(tensors: dict[str, torch.Tensor]) -> str:
    counts = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
    return counts.most_common(1)[0][0] if counts else "float32"


def count_index(tensors, pattern: str) -> int:
    """1 + the largest integer captured by ``pattern`` (a regex with one group) over the keys; 0 if none."""
    found = [int(m.group(1)) for k in tensors if (m := re.match(pattern, k))]
    return 1 + max(found) if found else 0


def new_info(arch: str, label: str, wf: WeightFile, tensors: dict[str, torch.Tensor], *, fmt: str, layout: str,
             family, guessed: bool, reason: str, latent_channels: int, downscale: int, ignored: list[str],
             notes: list[str] | None = None, scaling: float | None = None, force_upcast: bool = False) -> VaeInfo:
    all_notes = list(wf.notes) + list(notes or [])
    if wf.dropped:
        all_notes.append(f"non-tensor entries ignored: {', '.join(wf.dropped[:6])}")
    return VaeInfo(
        source=label, format=fmt, key_layout=layout, architecture=arch, family=family.name,
        family_guessed=guessed, family_reason=reason, latent_channels=latent_channels, downscale=downscale,
        scaling_factor=family.scaling_factor if scaling is None else float(scaling),
        shift_factor=family.shift_factor, parameters=sum(t.numel() for t in tensors.values()),
        dtype=dtype_of(tensors), ignored_keys=summarize_keys(ignored), notes=all_notes, force_upcast=force_upcast,
    )


def build_model(cls_name: str, config: dict, tensors: dict[str, torch.Tensor], label: str) -> torch.nn.Module:
    """The diffusers model ``cls_name`` built from ``config`` with exactly these weights (see
    ``load_state_into``); shape mismatches become one-sentence VaeLoadErrors, and so do the
    assertions some diffusers constructors make about channel counts read from a broken file."""
    try:
        return load_state_into(cls_name, config, tensors, label)
    except (AssertionError, ZeroDivisionError, KeyError, IndexError, AttributeError) as exc:
        what = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise VaeLoadError(f"the weights do not describe a valid {cls_name} ({what})", label) from None


def checked(tensors: dict[str, torch.Tensor], label: str) -> dict[str, torch.Tensor]:
    check_finite(tensors, label)
    return tensors
