"""Helpers every architecture module may use; not an architecture itself (it defines no ``ARCHITECTURE``)
and it imports none: the shipped configs that let single files load offline, finding a VAE inside a
larger state dict, the families that fit a latent, and the ``VaeInfo`` of checked weights.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from importlib import resources

import torch

from vaestudio.core.families import FAMILIES, Family
from vaestudio.core.registry import find_prefix
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile


@cache
def _shipped(name: str) -> str:
    return resources.files("vaestudio.resources").joinpath("configs", f"{name}.json").read_text(encoding="utf-8")


def shipped_config(name: str) -> dict:
    """A diffusers config shipped with vaestudio (resources/configs/<name>.json), without '_' keys."""
    return {k: v for k, v in json.loads(_shipped(name)).items() if not k.startswith("_")}


def extract(sd: dict[str, torch.Tensor], anchor: str,
            parts: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """The tensors under the prefix where ``anchor`` is (bare, ``vae.``, ``first_stage_model.``...) whose
    first key part is in ``parts``, and the keys left out; None when ``anchor`` is absent."""
    prefix = find_prefix(sd, anchor)
    if prefix is None:
        return None
    tensors = {k[len(prefix):]: v for k, v in sd.items()
               if k.startswith(prefix) and k[len(prefix):].split(".")[0] in parts}
    ignored = sorted(k for k in sd if not (k.startswith(prefix) and k[len(prefix):] in tensors))
    return tensors, ignored


def count_index(tensors: Iterable[str], pattern: str) -> int:
    """1 + the largest integer captured by ``pattern`` (a regex with one group) over the keys; 0 if none."""
    found = [int(m.group(1)) for k in tensors if (m := re.match(pattern, k))]
    return 1 + max(found) if found else 0


def summarize_keys(keys: list[str], limit: int = 6) -> list[str]:
    """Group keys by their first two dotted parts: ['loss.* (12 keys)', ...]."""
    groups = Counter(".".join(k.split(".")[:2]) if k.count(".") >= 2 else k.split(".")[0] for k in keys)
    out = [f"{g}.* ({n} key{'s' if n != 1 else ''})" for g, n in groups.most_common(limit)]
    if len(groups) > limit:
        out.append(f"... and {len(groups) - limit} more groups")
    return out


def fitting_families(names: Iterable[str], channels: int, downscale: int | None = None) -> list[Family]:
    """The families among ``names`` whose latent has ``channels`` channels (at ``downscale``, if given)."""
    return [FAMILIES[n] for n in names if n in FAMILIES and FAMILIES[n].latent_channels == channels
            and (downscale is None or FAMILIES[n].downscale == downscale)]


def dtype_of(tensors: dict[str, torch.Tensor]) -> str:
    """The dtype most of the weights are stored in."""
    counts = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
    return counts.most_common(1)[0][0] if counts else "float32"


def new_info(arch: str, label: str, wf: WeightFile, tensors: dict[str, torch.Tensor], *, fmt: str, layout: str,
             family: Family, guessed: bool, reason: str, latent_channels: int, downscale: int,
             ignored: list[str], notes: Iterable[str] = (), scaling: float | None = None, shift: float | None = None,
             force_upcast: bool = False, **extra) -> VaeInfo:
    """What was learned about checked weights, with the weight file's own notes first."""
    all_notes = list(wf.notes) + list(notes)
    if wf.dropped:
        all_notes.append(f"non-tensor entries ignored: {', '.join(wf.dropped[:6])}")
    return VaeInfo(
        source=label, format=fmt, key_layout=layout, architecture=arch, family=family.name,
        family_guessed=guessed, family_reason=reason, latent_channels=latent_channels, downscale=downscale,
        scaling_factor=family.scaling_factor if scaling is None else float(scaling),
        shift_factor=family.shift_factor if shift is None else float(shift),
        parameters=sum(t.numel() for t in tensors.values()), dtype=dtype_of(tensors),
        ignored_keys=summarize_keys(ignored), notes=all_notes,
        force_upcast=force_upcast, **extra,
    )


def misfit(net: torch.nn.Module, sd: dict[str, torch.Tensor]) -> str | None:
    """Why ``sd`` cannot be loaded strictly into ``net``, naming the first key at fault; None when it can."""
    expected = net.state_dict()
    for key, want in expected.items():
        if key not in sd:
            return f"{len([k for k in expected if k not in sd])} weights are missing, e.g. {key}"
        if tuple(sd[key].shape) != tuple(want.shape):
            return f"{key} has shape {tuple(sd[key].shape)} where {tuple(want.shape)} belongs"
    extra = [k for k in sd if k not in expected]
    return f"{len(extra)} weights it does not use, e.g. {extra[0]}" if extra else None
