"""VAE families: how latents are scaled, which noise schedule applies, how to preview them.

A family is what shapes alone cannot always tell: SD1.x/SD2 and SDXL VAEs have identical shapes, as
do SD3 and Flux. ``guess_family`` uses the diffusers config, file metadata and the name to decide,
and says whether it guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    latent_channels: int
    scaling_factor: float
    shift_factor: float
    schedule: str  # "ddpm" (scaled-linear betas) or "flow" (rectified flow)
    sample_size: int  # the training resolution, used as the default tile size

    @property
    def max_timestep(self) -> int:
        return 999 if self.schedule == "ddpm" else 1000


FAMILIES: dict[str, Family] = {
    "sd1": Family("sd1", "Stable Diffusion 1.x / 2.x", 4, 0.18215, 0.0, "ddpm", 512),
    "sdxl": Family("sdxl", "Stable Diffusion XL", 4, 0.13025, 0.0, "ddpm", 1024),
    "sd3": Family("sd3", "Stable Diffusion 3", 16, 1.5305, 0.0609, "flow", 1024),
    "flux": Family("flux", "Flux", 16, 0.3611, 0.1159, "flow", 1024),
    "mnist": Family("mnist", "MNIST VAE (vaestudio)", 0, 1.0, 0.0, "ddpm", 28),
}
ALIASES = {"sd15": "sd1", "sd1.5": "sd1", "sd2": "sd1", "sd21": "sd1", "xl": "sdxl", "sd35": "sd3", "flux1": "flux"}


def get_family(name: str) -> Family:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FAMILIES:
        raise ValueError(f"unknown family '{name}' (choose from {', '.join(FAMILIES)})")
    return FAMILIES[key]


@dataclass(frozen=True)
class FamilyGuess:
    family: Family
    guessed: bool
    reason: str


def guess_family(
    latent_channels: int,
    *,
    config_scaling: float | None = None,
    metadata: dict[str, str] | None = None,
    name: str = "",
) -> FamilyGuess:
    """Decide the family of an SD-style VAE from what is known about it.

    A diffusers config's scaling factor is decisive; then file metadata (``modelspec.architecture``,
    ``ss_base_model_version``...), then hints in the name. Without any, the commonest family for the
    channel count is guessed (SD1 for 4 channels, Flux for 16) and marked as a guess.
    """
    candidates = [f for f in FAMILIES.values() if f.latent_channels == latent_channels]
    if not candidates:
        raise ValueError(f"no known Stable Diffusion VAE family has {latent_channels} latent channels")
    if config_scaling is not None:
        for fam in candidates:
            if abs(fam.scaling_factor - config_scaling) < 1e-4:
                return FamilyGuess(fam, False, f"config scaling_factor {config_scaling}")
    hint_text = " ".join(f"{k}={v}" for k, v in (metadata or {}).items()).lower()
    for source, text in (("file metadata", hint_text), ("name", name.lower())):
        fam = _family_from_text(text, latent_channels)
        if fam is not None:
            return FamilyGuess(fam, source == "name", f"{source} mentions {fam.name}")
    default = FAMILIES["sd1"] if latent_channels == 4 else FAMILIES["flux"]
    other = "sdxl" if latent_channels == 4 else "sd3"
    return FamilyGuess(default, True, f"shapes fit {default.name} and {other}; no hint found, assumed {default.name}")


def _family_from_text(text: str, latent_channels: int) -> Family | None:
    tokens = set(re.split(r"[^a-z0-9.]+", text))
    if latent_channels == 16:
        if "flux" in text:
            return FAMILIES["flux"]
        if "sd3" in text or "stable-diffusion-3" in text:
            return FAMILIES["sd3"]
    if latent_channels == 4:
        if "sdxl" in text or "sd_xl" in text or "stable-diffusion-xl" in text or "xl" in tokens or "pony" in text:
            return FAMILIES["sdxl"]
        sd1_hints = ("sd1", "sd15", "sd_1", "sd-1", "v1-5", "stable-diffusion-v1", "sd2", "v2-1", "ft-mse", "ft-ema", "840000")
        if any(h in text for h in sd1_hints):
            return FAMILIES["sd1"]
    return None


@cache
def latent_rgb_factors(family: str) -> tuple[list[list[float]], list[float]] | None:
    """Linear factors (C x 3) and bias (3) mapping scaled latents to RGB in [-1, 1], if known."""
    data = json.loads(resources.files("vaestudio.resources").joinpath("latent_rgb.json").read_text())
    entry = data.get(family)
    return None if entry is None else (entry["factors"], entry["bias"])
