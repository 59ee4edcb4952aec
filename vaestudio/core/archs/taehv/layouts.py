"""Reading the tiny video autoencoders' files: the author's key layout (``encoder.N...`` /
``decoder.N...``, as ComfyUI keeps them in ``models/vae_approx``, ``.pth`` or ``.safetensors``), the
network's ``Spec`` from the shapes, the model a file is for from its name, and finding the tiny decoder
of a family in a folder.

ComfyUI recognises these files by ``decoder.22.bias`` (the decoder's last convolution). TAESD files
never have that key (their decoder ends at 19, 29 for SANA's, and their keys are bare indices,
``encoder.layers.N`` or ``taesd_*``), and here a memory block's doubled input must be there too.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from vaestudio.core.archs.taehv.networks import Spec
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES
from vaestudio.core.filetypes import WEIGHT_SUFFIXES

#: The published files' names, each with the family it previews; longest first where one contains another.
TINY_VIDEO_NAMES = {"taeltx2_3": "ltx2.3", "taeltx_2": "ltx2", "taew2_1": "wan", "taew2_2": "wan22", "taehv": "hunyuan-video"}
#: Published files of models vaestudio has no family for yet: refused by name, in one sentence.
NOT_YET = {"taehv1_5": "HunyuanVideo 1.5", "taecvx": "CogVideoX", "taeos1_3": "Open-Sora 1.3", "taeh3": "MiniMax H3"}
_ORDER = sorted([*TINY_VIDEO_NAMES, *NOT_YET], key=len, reverse=True)

_ENC_POOLS, _ENC_OUT = (2, 7, 12), 17
_DEC = {"base": {"widths": (1, 8, 14, 20), "grows": (7, 13, 19)}, "super": {"widths": (0, 4, 11, 18), "grows": (7, 14, 21)}}


def split_halves(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str]] | None:
    """The encoder's and the decoder's tensors (keys without the half's prefix) and the ignored keys;
    None when these are not a tiny video autoencoder's."""
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    dec = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    is_enc = _memory_block(enc.get("4.conv.0.weight")) and "17.weight" in enc
    is_dec = "22.bias" in dec and (_memory_block(dec.get("3.conv.0.weight")) or _depthwise(dec.get("1.conv.0.weight")))
    if not (is_enc or is_dec):
        return None
    ignored = [k for k in sd if not k.startswith(("encoder.", "decoder."))]
    return (enc if is_enc else {}), (dec if is_dec else {}), ignored


def _memory_block(t) -> bool:  # a MemBlock's first convolution takes the frame and the past frame
    return isinstance(t, torch.Tensor) and t.ndim == 4 and t.shape[1] == 2 * t.shape[0]


def _depthwise(t) -> bool:  # a SuperMemBlock's first convolution: 7x7 depthwise
    return isinstance(t, torch.Tensor) and t.ndim == 4 and t.shape[1] == 1 and t.shape[2] == 7


def detect(enc: dict, dec: dict, label: str) -> Spec:
    """The network's ``Spec`` from the shapes alone; one sentence when they do not make one."""
    try:
        return _detect(enc, dec, label)
    except (KeyError, IndexError, AttributeError, ZeroDivisionError):
        raise VaeLoadError("the tiny video autoencoder's weights are incomplete (layers are missing)", label) from None


def _ratio(big: int, small: int, what: str, label: str) -> int:
    if small <= 0 or big % small:
        raise VaeLoadError(f"the tiny video autoencoder's {what} has {big} channels, not a multiple of {small}", label)
    return big // small


def _patch(channels: int, what: str, label: str) -> int:
    p = math.isqrt(max(channels // 3, 1))
    if 3 * p * p != channels:
        raise VaeLoadError(f"the tiny video autoencoder's {what} has {channels} channels, not 3 x a square", label)
    return p


def _detect(enc: dict, dec: dict, label: str) -> Spec:
    fields: dict = {}
    if enc:
        w = int(enc["0.weight"].shape[0])
        fields.update(enc_width=w, patch=_patch(int(enc["0.weight"].shape[1]), "first convolution", label),
                      latent_channels=int(enc[f"{_ENC_OUT}.weight"].shape[0]),
                      enc_strides=tuple(_ratio(int(enc[f"{i}.conv.weight"].shape[1]), w, f"TPool {i}", label)
                                        for i in _ENC_POOLS))
    if dec:
        variant = "super" if "0.weight" in dec else "base"
        at = _DEC[variant]
        first = dec[f"{at['widths'][0]}.weight"]
        widths = [int(first.shape[0])] + [int(dec[f"{i}.weight"].shape[0]) // (4 if variant == "super" else 1)
                                          for i in at["widths"][1:]]
        grown = widths[:3] if variant == "base" else widths[1:]
        strides = tuple(_ratio(int(dec[f"{i}.conv.weight"].shape[0]), n, f"TGrow {i}", label)
                        for i, n in zip(at["grows"], grown, strict=True))
        channels, patch = int(first.shape[1]), _patch(int(dec["22.weight"].shape[0]), "last convolution", label)
        for key, value, what in (("latent_channels", channels, "latent channels"), ("patch", patch, "pixel patch")):
            if key in fields and fields[key] != value:
                raise VaeLoadError(f"the tiny video encoder has {fields[key]} {what} but its decoder {value}: they "
                                   f"are not a pair", label)
        fields.update(dec_variant=variant, dec_widths=tuple(widths), dec_strides=strides, latent_channels=channels,
                      patch=patch)
    spec = Spec(**fields)
    if enc and dec and spec.time_down != spec.time_up:
        raise VaeLoadError(f"the tiny video encoder shrinks time {spec.time_down}x but its decoder grows it "
                           f"{spec.time_up}x: they are not a pair", label)
    return spec


def tiny_video_name(text: str) -> str | None:
    low = text.lower()
    return next((n for n in _ORDER if n in low), None)


def find_tiny_video_decoder(location: Path, family: str) -> Path | None:
    """The tiny video decoder for ``family`` at ``location`` (ComfyUI's models/vae_approx, or the file
    itself when it is that family's); the plain file before a variant (taew2_2 before taew2_2_super)."""
    fam = FAMILIES.get(family)
    if fam is None or fam.tiny not in TINY_VIDEO_NAMES:
        return None
    if location.is_file():
        return location if tiny_video_name(location.name) == fam.tiny else None
    if not location.is_dir():
        return None
    found = [p for p in location.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES
             and tiny_video_name(p.name) == fam.tiny and not re.search(r"_encoder$", p.stem)]
    found.sort(key=lambda p: (p.stem.lower() != fam.tiny, p.suffix.lower() != ".safetensors", p.name))
    return found[0] if found else None
