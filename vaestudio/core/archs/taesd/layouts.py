"""Reading the tiny autoencoders' files: the key layouts (the original pair's ``N.weight``, diffusers'
``encoder.layers.N``, ComfyUI's ``taesd_encoder.``), the variant from shapes, the pairs of
``<name>_encoder`` / ``<name>_decoder`` files, and what an ``AutoencoderTiny`` config.json may say.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vaestudio.core.archs._diffusers import agrees
from vaestudio.core.archs.taesd.networks import ACTIVATIONS, UPSAMPLE_MODES
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES
from vaestudio.core.filetypes import WEIGHT_SUFFIXES

#: The published names, longest first (taesd is a prefix of taesdxl and taesd3).
TINY_NAMES = ("taesdxl", "taesd3", "taesana", "taef1", "taef2", "taesd")
PAIR_RE = re.compile(r"^(?P<stem>.*)_(?P<half>encoder|decoder)$")
#: What an AutoencoderTiny config.json may say that these networks have in one way only.
_FIXED = {"in_channels": 3, "out_channels": 3, "encoder_block_out_channels": [64] * 4,
          "decoder_block_out_channels": [64] * 4, "num_encoder_blocks": [1, 3, 3, 3],
          "num_decoder_blocks": [3, 3, 3, 1], "upsampling_scaling_factor": 2}


def split_halves(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, str, list[str]] | None:
    """Canonical (original-index) encoder and decoder tensors, the key layout, and ignored keys.

    Returns None when the keys are not a tiny autoencoder's.
    """
    enc: dict[str, torch.Tensor] = {}
    dec: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    keys = list(sd)
    if any(k.startswith(("taesd_encoder.", "taesd_decoder.")) for k in keys):
        layout = "comfyui"
        for k, v in sd.items():
            if k.startswith("taesd_encoder."):
                enc[k[len("taesd_encoder."):]] = v
            elif k.startswith("taesd_decoder."):
                dec[k[len("taesd_decoder."):]] = v
            else:
                ignored.append(k)
    elif any(k.startswith(("encoder.layers.", "decoder.layers.")) for k in keys):
        layout = "diffusers"
        for k, v in sd.items():
            if m := re.match(r"^encoder\.layers\.(\d+)\.(.*)$", k):
                enc[f"{m.group(1)}.{m.group(2)}"] = v
            elif m := re.match(r"^decoder\.layers\.(\d+)\.(.*)$", k):  # diffusers drops the leading Clamp
                dec[f"{int(m.group(1)) + 1}.{m.group(2)}"] = v
            else:
                ignored.append(k)
    elif keys and all(re.match(r"^\d+\.", k) for k in keys):
        layout = "taesd"
        first = sd.get("0.weight")
        if first is not None and first.ndim == 4 and first.shape[1] == 3:
            enc = dict(sd)
        elif "1.weight" in sd and "0.weight" not in sd:
            dec = dict(sd)
        else:
            return None
    else:
        return None
    if enc and not ("0.weight" in enc and enc["0.weight"].ndim == 4):
        return None
    if dec and not ("1.weight" in dec and dec["1.weight"].ndim == 4):
        return None
    if not enc and not dec:
        return None
    return enc, dec, layout, ignored


def detect(enc: dict, dec: dict, label: str) -> tuple[str, int]:
    """The variant ("sd", "flux2", "f32") and the latent channel count, from shapes alone."""
    try:
        return _detect(enc, dec, label)
    except (KeyError, ValueError, IndexError):
        raise VaeLoadError("the tiny autoencoder's weights are incomplete (layers are missing)", label) from None


def _detect(enc: dict, dec: dict, label: str) -> tuple[str, int]:
    pool = any(".pool." in k for k in list(enc) + list(dec))
    f32 = (enc and enc["0.weight"].shape[0] == 32) or (dec and dec["1.weight"].shape[0] == 256)
    variant = "f32" if f32 else "flux2" if pool else "sd"
    out_convs = [int(m.group(1)) for k in enc if (m := re.match(r"^(\d+)\.weight$", k))]
    enc_channels = int(enc[f"{max(out_convs)}.weight"].shape[0]) if enc else None
    dec_channels = int(dec["1.weight"].shape[1]) if dec else None
    if enc_channels and dec_channels and enc_channels != dec_channels:
        raise VaeLoadError(f"the tiny encoder makes {enc_channels} latent channels but its decoder takes "
                           f"{dec_channels}: they are not a pair", label)
    return variant, int(enc_channels or dec_channels)


def tiny_name(text: str) -> str | None:
    low = text.lower()
    return next((n for n in TINY_NAMES if n in low), None)


def sibling(path: Path) -> Path | None:
    """The other half of an original pair: <name>_decoder.pth beside <name>_encoder.pth."""
    m = PAIR_RE.match(path.stem)
    if not m:
        return None
    other = "decoder" if m.group("half") == "encoder" else "encoder"
    for suffix in [path.suffix] + sorted(WEIGHT_SUFFIXES - {path.suffix}):
        cand = path.with_name(f"{m.group('stem')}_{other}{suffix}")
        if cand.is_file():
            return cand
    return None


def pairs_in(folder: Path) -> dict[str, dict[str, Path]]:
    pairs: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.suffix.lower() in WEIGHT_SUFFIXES and (m := PAIR_RE.match(p.stem)) and tiny_name(m.group("stem")):
            pairs.setdefault(m.group("stem"), {})[m.group("half")] = p
    return pairs


def find_tiny_decoder(location: str | Path, family: str) -> Path | None:
    """The tiny decoder for ``family`` in a folder of them (ComfyUI's models/vae_approx), or the file
    itself when it is that family's; None when there is none."""
    fam = FAMILIES.get(family)
    if fam is None or not fam.tiny:
        return None
    location = Path(location).expanduser()
    if location.is_file():
        name = tiny_name(location.name)
        return location if name == fam.tiny else None
    if not location.is_dir():
        return None
    for stem, halves in pairs_in(location).items():
        if tiny_name(stem) == fam.tiny and "decoder" in halves:
            return halves["decoder"]
    for p in sorted(location.iterdir()):  # diffusers-layout single files, named after the model
        if p.suffix.lower() == ".safetensors" and tiny_name(p.stem) == fam.tiny and "encoder" not in p.stem:
            return p
    return None


def folder_config(config: dict, channels: int, label: str) -> dict:
    """The activation and upsampling an ``AutoencoderTiny`` config.json sets (its word is kept), after
    checking that it describes these weights and networks."""
    if "latent_channels" in config and not agrees(config["latent_channels"], channels):
        raise VaeLoadError(f"config.json says latent_channels={config['latent_channels']} but the weights have "
                           f"{channels}", label)
    for key, value in _FIXED.items():
        if key in config and not agrees(config[key], value):
            raise VaeLoadError(f"config.json says {key}={config[key]}, but a tiny autoencoder has {value}", label)
    act, upsample = config.get("act_fn", "relu"), config.get("upsample_fn", "nearest")
    if act not in ACTIVATIONS:
        raise VaeLoadError(f"config.json's act_fn {act!r} is not one of {', '.join(ACTIVATIONS)}", label)
    if upsample not in UPSAMPLE_MODES:
        raise VaeLoadError(f"config.json's upsample_fn {upsample!r} is not one of {', '.join(UPSAMPLE_MODES)}", label)
    return {"act_fn": act, "upsample_fn": upsample}
