"""VAE families: the model line a latent belongs to, its noise schedule and how to preview it.

A family is what shapes alone cannot always tell: SD1.x/SD2 and SDXL VAEs have identical shapes, as
do SD3 and Flux. ``guess_family`` uses the diffusers config, file metadata and the name to decide,
and says whether it guessed. Which families an architecture can have, and how a family changes its
scaling, is the architecture's business (``vaestudio.core.registry``).

This module imports nothing heavy: the window lists families before torch is loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

# diffusers' EDMDPMSolverMultistepScheduler / EDMEulerScheduler defaults (the Karras et al. 2022 values)
EDM_DEFAULTS = (0.002, 80.0, 0.5, 7.0)


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    latent_channels: int  # channels of the raw latent of this family's VAEs (0: a vector latent)
    scaling_factor: float  # of an SD-style VAE of this family: model = (raw - shift) * scale
    shift_factor: float
    schedule: str  # "ddpm" (scaled-linear betas), "flow" (rectified flow) or "edm" (Karras noise levels, ``edm``)
    downscale: int = 8  # spatial factor of the raw latent (1: a vector latent)
    tiny: str = ""  # the name of this family's tiny autoencoder (madebyollin's files: <tiny>_decoder.pth)
    patch: int = 1  # the model space packs patch x patch raw latent pixels into channels (FLUX.2: 2)
    hints: tuple[str, ...] = ()  # words in a file name or metadata that point to this family
    # per-channel statistics of an SD-style VAE whose model space is (raw - mean) * scale / std (Playground v2.5)
    latents_mean: tuple[float, ...] = ()
    latents_std: tuple[float, ...] = ()
    # an "edm" schedule's (sigma_min, sigma_max, sigma_data, rho), as its diffusers scheduler config has them
    edm: tuple[float, float, float, float] = EDM_DEFAULTS

    @property
    def max_timestep(self) -> int:
        return 999 if self.schedule == "ddpm" else 1000  # flow and EDM: t / 1000 is the place on the ramp


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sd1", "Stable Diffusion 1.x / 2.x", 4, 0.18215, 0.0, "ddpm", tiny="taesd",
           hints=("sd1", "sd15", "sd_1", "sd-1", "v1-5", "stable-diffusion-v1", "sd2", "v2-1", "ft-mse", "ft-ema",
                  "840000")),
    Family("sdxl", "Stable Diffusion XL", 4, 0.13025, 0.0, "ddpm", tiny="taesdxl",
           hints=("sdxl", "sd_xl", "stable-diffusion-xl", "pony", "illustrious")),
    # its statistics are those of the published vae/config.json (resources/configs/playground-v2.5.json); EDM-trained
    # (EDMDPMSolverMultistepScheduler, Karras sigmas 0.002..80, sigma_data 0.5: the class defaults its pipeline uses)
    Family("playground-v2.5", "Playground v2.5", 4, 0.5, 0.0, "edm", tiny="taesdxl",
           hints=("playground-v2.5", "playground_v2.5", "playground-v2", "playground"),
           latents_mean=(-1.6574, 1.886, -1.383, 2.5155), latents_std=(8.4927, 5.9022, 6.5498, 5.2299)),
    Family("sd-x4-upscaler", "Stable Diffusion x4 upscaler", 4, 0.08333, 0.0, "ddpm", 4,
           hints=("x4-upscaler", "x4_upscaler", "x4upscaler", "upscaler")),
    Family("sd3", "Stable Diffusion 3", 16, 1.5305, 0.0609, "flow", tiny="taesd3",
           hints=("sd3", "stable-diffusion-3")),
    Family("flux", "FLUX.1", 16, 0.3611, 0.1159, "flow", tiny="taef1", hints=("flux1", "flux.1", "flux-1", "flux")),
    # models that use FLUX.1's VAE and latent format (ComfyUI's latent_formats.Flux): named, not called "flux"
    Family("z-image", "Z-Image", 16, 0.3611, 0.1159, "flow", tiny="taef1", hints=("z-image", "z_image", "zimage")),
    Family("lumina2", "Lumina Image 2.0", 16, 0.3611, 0.1159, "flow", tiny="taef1",
           hints=("lumina2", "lumina-2", "lumina_2", "lumina-image", "lumina")),
    Family("hidream", "HiDream-I1", 16, 0.3611, 0.1159, "flow", tiny="taef1", hints=("hidream", "hi-dream")),
    Family("flux2", "FLUX.2", 32, 1.0, 0.0, "flow", tiny="taef2", patch=2, hints=("flux2", "flux.2", "flux-2")),
    Family("sana", "SANA (DC-AE f32c32)", 32, 0.41407, 0.0, "flow", 32, "taesana", hints=("sana", "dc-ae", "dcae")),
    # model space of the Wan-layout VAEs: per-channel (z - latents_mean) / latents_std (the architecture's config)
    Family("wan", "Wan 2.1 (and Wan 2.2 A14B)", 16, 1.0, 0.0, "flow", tiny="taew2_1", hints=("wan2", "wan_2", "wan-2", "wan21")),
    Family("qwen-image", "Qwen-Image", 16, 1.0, 0.0, "flow", tiny="taew2_1", hints=("qwen-image", "qwen_image", "qwenimage", "qwen")),
    Family("wan22", "Wan 2.2 (TI2V-5B)", 48, 1.0, 0.0, "flow", 16, "taew2_2", hints=("wan2.2", "wan2_2", "wan22", "wan_2.2", "wan-2.2")),
    # video models whose tiny autoencoders (madebyollin's TAEHV) vaestudio reads; their full VAEs not yet
    Family("hunyuan-video", "HunyuanVideo", 16, 0.476986, 0.0, "flow", tiny="taehv",
           hints=("hunyuanvideo", "hunyuan_video", "hunyuan-video")),
    # LTX-Video 0.9.x: model space per channel (z - mean) * scale / std from the VAE's own statistics (archs/ltx_video.py)
    Family("ltx-video", "LTX-Video 0.9.x", 128, 1.0, 0.0, "flow", 32,
           hints=("ltx-video", "ltx_video", "ltxv", "ltx-v0.9", "ltx-2b", "ltxvideo")),
    # Mochi 1: per channel (z - latents_mean) * scale / latents_std from the config (ComfyUI latent_formats.Mochi)
    Family("mochi", "Mochi 1", 12, 1.0, 0.0, "flow", hints=("mochi", "genmo")),
    # Cosmos 1.0 (CV8x8x8): per channel and latent frame statistics * sigma_data (archs/cosmos.py); its diffusion
    # models are EDM-trained (EDMEulerScheduler): Karras sigmas with the class defaults (sigma_data 0.5, as the
    # model space assumes; the published scheduler config was not read here, so sigma_min/max are the defaults)
    Family("cosmos", "Cosmos 1.0 (CV8x8x8)", 16, 1.0, 0.0, "edm", hints=("cosmos", "cv8x8x8")),
    # model space: the VAE's per-channel statistics (the diffusion model's latents, as the tiny one makes them)
    Family("ltx2", "LTX-2", 128, 1.0, 0.0, "flow", 32, "taeltx_2", hints=("ltx2", "ltx-2", "ltx_2", "ltxv2")),
    Family("ltx2.3", "LTX-2.3", 128, 1.0, 0.0, "flow", 32, "taeltx2_3", hints=("ltx2.3", "ltx2_3", "ltx-2.3")),
    # CogVideoX: z * scale (ComfyUI latent_formats.CogVideoX / CogVideoX1_5); DDIM v-prediction on SD's scaled-linear
    # betas, which its scheduler rescales to zero terminal SNR (and shifts): "ddpm" here is the plain SD schedule
    Family("cogvideox", "CogVideoX-2b", 16, 1.15258426, 0.0, "ddpm", hints=("cogvideox", "cogvideo", "cogvideox-2b")),
    Family("cogvideox1.5", "CogVideoX-5b / CogVideoX 1.5", 16, 0.7, 0.0, "ddpm",
           hints=("cogvideox-5b", "cogvideox_5b", "cogvideox1.5", "cogvideox-1.5", "cogvideox1_5", "cogvideox_1.5")),
    # HunyuanVideo 1.5: z * 1.03682 at 1/16 (ComfyUI latent_formats.HunyuanVideo15; its tiny decoder lighttaehy1_5 not read)
    Family("hunyuan-video-15", "HunyuanVideo 1.5", 32, 1.03682, 0.0, "flow", 16,
           hints=("hunyuanvideo-1.5", "hunyuanvideo15", "hunyuan_video_1.5", "hunyuanvideo1.5", "hunyuan-video-1.5",
                  "hunyuanvideo_1.5", "hunyuan_video15", "hy15")),
    # per-channel (z - latents_mean) / latents_std (the config), RGBA images (core/archs/qwen_image21.py)
    Family("qwen-image-2.1", "Qwen-Image 2.1", 64, 1.0, 0.0, "flow", 16,
           hints=("qwen-image-2.1", "qwen_image_2.1", "qwen-image-2_1", "qwenimage21", "qwen_image21")),
    Family("hunyuan-image", "HunyuanImage 2.1", 64, 0.75289, 0.0, "flow", 32,
           hints=("hunyuanimage", "hunyuan_image", "hunyuan-image", "hunyuan")),
    Family("mnist", "MNIST VAE (vaestudio)", 0, 1.0, 0.0, "ddpm", 1),
)}
ALIASES = {"sd15": "sd1", "sd1.5": "sd1", "sd2": "sd1", "sd21": "sd1", "xl": "sdxl", "sd35": "sd3", "flux1": "flux",
           "flux.1": "flux", "flux.2": "flux2", "dc-ae": "sana", "wan2.1": "wan", "wan21": "wan", "wan2.2": "wan22",
           "qwen": "qwen-image", "qwenimage": "qwen-image", "qwen_image": "qwen-image", "hunyuanimage": "hunyuan-image",
           "hunyuan-image-2.1": "hunyuan-image", "playground": "playground-v2.5", "playground-v2": "playground-v2.5",
           "x4-upscaler": "sd-x4-upscaler", "hunyuanvideo": "hunyuan-video", "ltx-2": "ltx2", "ltx-2.3": "ltx2.3",
           "zimage": "z-image", "lumina": "lumina2", "lumina-2": "lumina2",
           "cogvideo": "cogvideox", "cogvideox-2b": "cogvideox", "cogvideox-5b": "cogvideox1.5",
           "cogvideox-1.5": "cogvideox1.5", "qwen-image-21": "qwen-image-2.1", "qwenimage21": "qwen-image-2.1", "qwen2.1": "qwen-image-2.1"}


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


def guess_family(candidates: Iterable[Family], *, config_scaling: float | None = None,
                 metadata: dict[str, str] | None = None, name: str = "",
                 default: Family | None = None) -> FamilyGuess:
    """Decide the family among ``candidates`` (those whose latent fits) from what is known.

    A diffusers config's scaling factor is decisive; then file metadata (``modelspec.architecture``,
    ``ss_base_model_version``...), then hints in the name. Without any, ``default`` (or the first
    candidate) is taken and marked as a guess.
    """
    cands = list(candidates)
    if not cands:
        raise ValueError("no known family fits this latent")
    if len(cands) == 1:
        return FamilyGuess(cands[0], False, f"the only family with {cands[0].latent_channels} latent channels")
    if config_scaling is not None:
        for fam in cands:
            if abs(fam.scaling_factor - config_scaling) < 1e-4:
                return FamilyGuess(fam, False, f"config scaling_factor {config_scaling}")
    hint_text = " ".join(f"{k}={v}" for k, v in (metadata or {}).items()).lower()
    for source, text in (("file metadata", hint_text), ("name", name.lower())):
        fam = family_from_text(text, cands)
        if fam is not None:
            return FamilyGuess(fam, source == "name", f"{source} mentions {fam.name}")
    pick = default or cands[0]
    others = ", ".join(f.name for f in cands if f is not pick)
    return FamilyGuess(pick, True, f"shapes fit {pick.name} and {others}; no hint found, assumed {pick.name}")


def family_from_text(text: str, candidates: Iterable[Family]) -> Family | None:
    """The candidate whose longest hint appears in ``text`` (so 'sdxl' beats 'sd1' hints inside it)."""
    tokens = set(re.split(r"[^a-z0-9.]+", text))
    best: tuple[int, Family] | None = None
    for fam in candidates:
        for hint in fam.hints:
            if hint in text or hint in tokens:
                if best is None or len(hint) > best[0]:
                    best = (len(hint), fam)
    if best is None and "xl" in tokens:
        best = next(((0, f) for f in candidates if f.name == "sdxl"), None)
    return None if best is None else best[1]


@cache
def latent_rgb_factors(family: str) -> tuple[list[list[float]], list[float]] | None:
    """Linear factors (C x 3) and bias (3) mapping model-space latents to RGB in [-1, 1], if known."""
    data = json.loads(resources.files("vaestudio.resources").joinpath("latent_rgb.json").read_text())
    entry = data.get(family)
    return None if entry is None else (entry["factors"], entry["bias"])
