"""The tiny autoencoders (TAESD family, madebyollin/taesd): taesd, taesdxl, taesd3, taef1, taef2, taesana.

About 1.2M parameters a side; images in [0, 1]; latents already in the diffusion model's latent
space (scale 1, shift 0), so a tiny decoder can preview another VAE's latents at full size. Three
variants, told apart by the weights:

- the original 8x encoder/decoder (4 channels: SD1/SDXL; 16: SD3/FLUX.1);
- FLUX.2 (taef2): 32 channels and a GroupNorm "pool" branch in the middle blocks; FLUX.2's model
  space is this latent patchified 2x2 (128 channels at 1/16), which ``to_model`` does;
- SANA (taesana): 32 channels at 32x, with a stride-2 first convolution.

Diffusers' ``AutoencoderTiny`` holds neither of the last two, so the networks are written here,
module for module as in the author's ``taesd.py`` (so the original files load as they are).

Sources: the original pair ``<name>_encoder.pth`` + ``<name>_decoder.pth`` (as in ComfyUI's
``models/vae_approx``; either file, or the folder holding them, names the pair), the diffusers
layout (``encoder.layers.N``; an ``AutoencoderTiny`` folder or its single file), and ComfyUI's
single file (``taesd_encoder.`` / ``taesd_decoder.`` prefixes). One half alone loads too.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, Family, guess_family
from vaestudio.core.filetypes import WEIGHT_SUFFIXES
from vaestudio.core.registry import Architecture, PreparedVae
from vaestudio.core.tensors import patchify, unpatchify
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile, check_finite, read_folder_weights, read_weight_file

#: The published names, longest first (taesd is a prefix of taesdxl and taesd3).
TINY_NAMES = ("taesdxl", "taesd3", "taesana", "taef1", "taef2", "taesd")
_PAIR_RE = re.compile(r"^(?P<stem>.*)_(?P<half>encoder|decoder)$")


# -- the networks (layer for layer as madebyollin/taesd, so state dict keys match) ---------------

def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if pool:  # FLUX.2: a global GroupNorm branch
            n_gn = n_in * 4
            self.pool = nn.Sequential(nn.Conv2d(n_in, n_gn, 1, bias=False), nn.GroupNorm(4, n_gn), nn.ReLU(inplace=True),
                                      nn.Conv2d(n_gn, n_in, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def make_encoder(channels: int, variant: str) -> nn.Sequential:
    if variant == "f32":
        return nn.Sequential(
            _conv(3, 32, stride=2), nn.ReLU(inplace=True), _conv(32, 64, stride=2), nn.ReLU(inplace=True), Block(64, 64),
            *_down3(), *_down3(), *_down3(), _conv(64, channels),
        )
    pool = variant == "flux2"
    return nn.Sequential(
        _conv(3, 64), Block(64, 64), *_down3(), *_down3(),
        _conv(64, 64, stride=2, bias=False), Block(64, 64, pool), Block(64, 64, pool), Block(64, 64, pool),
        _conv(64, channels),
    )


def _down3() -> list[nn.Module]:
    return [_conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64)]


def _up3(n_in: int, n_out: int, pool: bool = False) -> list[nn.Module]:
    return [Block(n_in, n_in, pool), Block(n_in, n_in, pool), Block(n_in, n_in, pool), nn.Upsample(scale_factor=2),
            _conv(n_in, n_out, bias=False)]


def make_decoder(channels: int, variant: str) -> nn.Sequential:
    if variant == "f32":
        return nn.Sequential(
            Clamp(), _conv(channels, 256), nn.ReLU(),
            *_up3(256, 128), *_up3(128, 64), *_up3(64, 64), *_up3(64, 64), *_up3(64, 64), Block(64, 64), _conv(64, 3),
        )
    return nn.Sequential(
        Clamp(), _conv(channels, 64), nn.ReLU(),
        *_up3(64, 64, variant == "flux2"), *_up3(64, 64), *_up3(64, 64), Block(64, 64), _conv(64, 3),
    )


class TinyModel(nn.Module):
    def __init__(self, encoder: nn.Module | None, decoder: nn.Module | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


class TinyAutoencoder(TorchAutoencoder):
    """A tiny autoencoder (either half may be absent) with the shared round-trip machinery."""

    architecture = "taesd"
    previews_itself = True  # it decodes in a blink: no preview decoder needed in front of it
    input_range = (0.0, 1.0)
    has_logvar = False
    cancel_blocks = ("Block",)
    # tiny activations fit in memory at 16 MP, and tiles cost quality: taef2's GroupNorm branch
    # normalises each tile on its own (measured: 31.2 -> 25.2 dB on the astronaut at 256 px tiles)
    auto_tile_pixels = 16 * 1024 * 1024

    def _encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(x)

    def _decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(z)

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        p = self.family.patch
        return patchify(raw, p) if p > 1 else raw

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        p = self.family.patch
        return unpatchify(latent, p) if p > 1 else latent

    def set_family(self, family: Family) -> None:
        super().set_family(family)
        _describe_model_space(self.info, family)


def _describe_model_space(info: VaeInfo, family: Family) -> None:
    p = family.patch
    info.model_latent_channels = info.latent_channels * p * p if p > 1 else None
    info.model_downscale = info.downscale * p if p > 1 else None


# -- reading the layouts -------------------------------------------------------------------------

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


def _tiny_name(text: str) -> str | None:
    low = text.lower()
    return next((n for n in TINY_NAMES if n in low), None)


def _sibling(path: Path) -> Path | None:
    """The other half of an original pair: <name>_decoder.pth beside <name>_encoder.pth."""
    m = _PAIR_RE.match(path.stem)
    if not m:
        return None
    other = "decoder" if m.group("half") == "encoder" else "encoder"
    for suffix in [path.suffix] + sorted(WEIGHT_SUFFIXES - {path.suffix}):
        cand = path.with_name(f"{m.group('stem')}_{other}{suffix}")
        if cand.is_file():
            return cand
    return None


def _pairs_in(folder: Path) -> dict[str, dict[str, Path]]:
    pairs: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.suffix.lower() in WEIGHT_SUFFIXES and (m := _PAIR_RE.match(p.stem)) and _tiny_name(m.group("stem")):
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
        name = _tiny_name(location.name)
        return location if name == fam.tiny else None
    if not location.is_dir():
        return None
    for stem, halves in _pairs_in(location).items():
        if _tiny_name(stem) == fam.tiny and "decoder" in halves:
            return halves["decoder"]
    for p in sorted(location.iterdir()):  # diffusers-layout single files, named after the model
        if p.suffix.lower() == ".safetensors" and _tiny_name(p.stem) == fam.tiny and "encoder" not in p.stem:
            return p
    return None


class TinyArchitecture(Architecture):
    name = "taesd"
    label = "tiny autoencoder (TAESD family)"
    order = 10
    config_classes = ("AutoencoderTiny",)
    families = ("sd1", "sdxl", "sd3", "flux", "flux2", "sana")
    sources = (
        ("original pair", "<name>_encoder.pth + <name>_decoder.pth (ComfyUI models/vae_approx); either file or "
                          "their folder"),
        ("diffusers", "an AutoencoderTiny folder or its .safetensors file (madebyollin/taesd, taesdxl, taesd3, "
                      "taef1 on the hub)"),
        ("ComfyUI single file", "taesd_encoder.* / taesd_decoder.* keys"),
    )

    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        return split_halves(wf.tensors) is not None

    def claims_folder(self, folder: Path) -> bool:
        return bool(_pairs_in(folder))

    def find_preview_decoder(self, location: Path, family: str) -> Path | None:
        return find_tiny_decoder(location, family)

    def prepare_file(self, path: Path, wf: WeightFile, label: str) -> PreparedVae:
        enc, dec, layout, ignored = split_halves(wf.tensors)
        files = {"encoder" if enc else "decoder": path}
        fmt = wf.format
        notes = list(wf.notes)
        missing_hint = ""
        if layout == "taesd":  # one half of an original pair: find the other by name
            sib = _sibling(path)
            have = "encoder" if enc else "decoder"
            want = "decoder" if enc else "encoder"
            if sib is not None:
                other = split_halves(read_weight_file(sib).tensors)
                if other is None or other[2] != "taesd" or not (other[0] if want == "encoder" else other[1]):
                    raise VaeLoadError(f"{sib.name} beside it is not a tiny {want}", label)
                enc, dec = (other[0], dec) if want == "encoder" else (enc, other[1])
                files[want] = sib
                fmt = "pair"
            else:
                m = _PAIR_RE.match(path.stem)
                expected = f"{m.group('stem')}_{want}{path.suffix}" if m else f"<name>_{want}{path.suffix}"
                missing_hint = f" ({expected} was not found beside {path.name})"
                notes.append(f"only the {have}: {expected} was not found beside it")
        vae_scale = wf.tensors.get("vae_scale")
        return self._prepare(enc, dec, label, fmt=fmt, layout=layout, name=str(path), metadata=wf.metadata,
                             ignored=[k for k in ignored if k not in ("vae_scale", "vae_shift")], notes=notes,
                             files=files, missing_hint=missing_hint,
                             comfy_scale=None if vae_scale is None else float(vae_scale))

    def prepare_folder(self, folder: Path, config: dict | None, label: str, fmt: str) -> PreparedVae:
        if config is not None:  # an AutoencoderTiny diffusers folder
            wf = read_folder_weights(folder, label)
            split = split_halves(wf.tensors)
            if split is None or split[2] != "diffusers":
                raise VaeLoadError("config.json describes an AutoencoderTiny but the weights are not one", label)
            enc, dec, layout, ignored = split
            return self._prepare(enc, dec, label, fmt=fmt, layout=layout, name=str(folder), metadata=wf.metadata,
                                 ignored=ignored, notes=list(wf.notes), files={"folder": folder})
        pairs = _pairs_in(folder)
        if len(pairs) > 1:
            raise VaeLoadError(f"the folder holds several tiny autoencoders ({', '.join(pairs)}); pick one file", label)
        (_stem, halves), = pairs.items()
        return self.prepare_file(next(iter(halves.values())), read_weight_file(next(iter(halves.values()))), label)

    def _prepare(self, enc, dec, label, *, fmt, layout, name, metadata, ignored, notes, files,
                 missing_hint: str = "", comfy_scale: float | None = None) -> PreparedVae:
        tensors = {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in dec.items()}}
        check_finite(tensors, label)
        variant, channels = detect(enc, dec, label)
        downscale = 32 if variant == "f32" else 8
        candidates = [FAMILIES[n] for n in self.families if FAMILIES[n].latent_channels == channels
                      and FAMILIES[n].downscale == downscale]
        if variant == "flux2":
            candidates = [FAMILIES["flux2"]]
        elif variant == "sd":
            candidates = [f for f in candidates if f.name != "flux2"] or candidates
        if not candidates:
            raise VaeLoadError(f"no tiny autoencoder family has {channels} latent channels at 1/{downscale} size", label)
        tiny = _tiny_name(Path(name).name) or _tiny_name(name)
        by_name = next((f for f in candidates if f.tiny == tiny), None)
        by_scale = next((f for f in candidates if comfy_scale is not None and abs(f.scaling_factor - comfy_scale) < 1e-4),
                        None)
        if len(candidates) == 1:
            fam, guessed, reason = candidates[0], False, f"the only family of a {variant} tiny autoencoder " \
                                                         f"with {channels} channels"
        elif by_name is not None:
            fam, guessed, reason = by_name, False, f"the file name says {tiny}"
        elif by_scale is not None:
            fam, guessed, reason = by_scale, False, f"the file's vae_scale {comfy_scale} is {by_scale.name}'s"
        else:
            default = FAMILIES["sd1"] if channels == 4 else FAMILIES["flux"] if channels == 16 else candidates[0]
            g = guess_family(candidates, metadata=metadata, name=Path(name).name, default=default)
            fam, guessed, reason = g.family, g.guessed, g.reason
        dtypes = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
        info = VaeInfo(
            source=label, format=fmt, key_layout=layout, architecture=self.name, family=fam.name,
            family_guessed=guessed, family_reason=reason, latent_channels=channels, downscale=downscale,
            scaling_factor=1.0, shift_factor=0.0, parameters=sum(t.numel() for t in tensors.values()),
            dtype=dtypes.most_common(1)[0][0], halves=[h for h, d in (("encoder", enc), ("decoder", dec)) if d],
            ignored_keys=ignored[:6], notes=notes, force_upcast=False,
        )
        _describe_model_space(info, fam)
        return PreparedVae(self.name, tensors, {"variant": variant}, info, fam,
                           extra={"files": files, "missing_hint": missing_hint})

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> TinyAutoencoder:
        info = prepared.info
        variant = prepared.config["variant"]
        parts = {}
        for half, make in (("encoder", make_encoder), ("decoder", make_decoder)):
            sd = {k[len(half) + 1:]: v.float() for k, v in prepared.tensors.items() if k.startswith(half + ".")}
            if not sd:
                parts[half] = None
                continue
            net = make(info.latent_channels, variant)
            try:
                net.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                detail = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), "")
                raise VaeLoadError(f"the tiny {half}'s weights do not fit its layout ({first[:80]} {detail[:100]})",
                                   info.source) from None
            parts[half] = net
        return TinyAutoencoder(TinyModel(parts["encoder"], parts["decoder"]), info, prepared.family, device=device,
                               dtype=dtype)

    def family_choices(self, info: VaeInfo) -> list[Family]:
        fams = [FAMILIES[n] for n in self.families
                if FAMILIES[n].latent_channels == info.latent_channels and FAMILIES[n].downscale == info.downscale]
        return fams

    def use_family(self, info: VaeInfo, family: Family) -> None:
        super().use_family(info, family)
        info.scaling_factor, info.shift_factor = 1.0, 0.0  # tiny latents are already in model space


ARCHITECTURE = TinyArchitecture()
