"""The tiny autoencoders (TAESD family, madebyollin/taesd): taesd, taesdxl, taesd3, taef1, taef2, taesana.

About 1.2M parameters a side; images in [0, 1]; latents already in the diffusion model's latent
space (scale 1, shift 0), so a tiny decoder can preview another VAE's latents at full size. Three
variants, told apart by the weights:

- the original 8x encoder/decoder (4 channels: SD1/SDXL; 16: SD3/FLUX.1);
- FLUX.2 (taef2): 32 channels and a GroupNorm "pool" branch in the middle blocks; FLUX.2's model
  space is this latent patchified 2x2 (128 channels at 1/16), which ``to_model`` does;
- SANA (taesana): 32 channels at 32x, with a stride-2 first convolution.

Diffusers' ``AutoencoderTiny`` holds neither of the last two, so the networks are written here
(``networks``), module for module as in the author's ``taesd.py`` (so the original files load as they
are); ``layouts`` reads the files. An ``AutoencoderTiny`` folder's config.json is the truth for what it
sets (activation, upsampling, scaling and shift, as diffusers' pipelines read them).

Sources: the original pair ``<name>_encoder.pth`` + ``<name>_decoder.pth`` (as in ComfyUI's
``models/vae_approx``; either file, or the folder holding them, names the pair), the diffusers
layout (``encoder.layers.N``; an ``AutoencoderTiny`` folder or its single file), and ComfyUI's
single file (``taesd_encoder.`` / ``taesd_decoder.`` prefixes). One half alone loads too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vaestudio.core.archs._common import dtype_of, fitting_families, misfit
from vaestudio.core.archs.taesd.layouts import (
    PAIR_RE,
    TINY_NAMES,
    detect,
    find_tiny_decoder,
    folder_config,
    pairs_in,
    sibling,
    split_halves,
    tiny_name,
)
from vaestudio.core.archs.taesd.networks import TinyModel, make_decoder, make_encoder
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, Family, guess_family
from vaestudio.core.registry import Architecture, PreparedVae
from vaestudio.core.tensors import patchify, unpatchify
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile, check_finite, read_folder_weights, read_weight_file

__all__ = ["ARCHITECTURE", "TINY_NAMES", "TinyAutoencoder", "find_tiny_decoder", "make_decoder", "make_encoder"]


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
        z, p = super().to_model(raw), self.family.patch  # scale 1 and shift 0 unless a config.json says otherwise
        return patchify(z, p) if p > 1 else z

    def from_model(self, latent: torch.Tensor) -> torch.Tensor:
        p = self.family.patch
        return super().from_model(unpatchify(latent, p) if p > 1 else latent)

    def set_family(self, family: Family) -> None:
        super().set_family(family)
        _describe_model_space(self.info, family)


def _describe_model_space(info: VaeInfo, family: Family) -> None:
    p = family.patch
    info.model_latent_channels = info.latent_channels * p * p if p > 1 else None
    info.model_downscale = info.downscale * p if p > 1 else None


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
        return bool(pairs_in(folder))

    def find_preview_decoder(self, location: Path, family: str) -> Path | None:
        return find_tiny_decoder(location, family)

    def prepare_file(self, path: Path, wf: WeightFile, label: str) -> PreparedVae:
        enc, dec, layout, ignored = split_halves(wf.tensors)
        files = {"encoder" if enc else "decoder": path}
        fmt = wf.format
        notes = list(wf.notes)
        missing_hint = ""
        if layout == "taesd":  # one half of an original pair: find the other by name
            sib = sibling(path)
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
                m = PAIR_RE.match(path.stem)
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
                                 ignored=ignored, notes=list(wf.notes), files={"folder": folder}, config=config)
        pairs = pairs_in(folder)
        if len(pairs) > 1:
            raise VaeLoadError(f"the folder holds several tiny autoencoders ({', '.join(pairs)}); pick one file", label)
        (_stem, halves), = pairs.items()
        return self.prepare_file(next(iter(halves.values())), read_weight_file(next(iter(halves.values()))), label)

    def _prepare(self, enc, dec, label, *, fmt, layout, name, metadata, ignored, notes, files,
                 missing_hint: str = "", comfy_scale: float | None = None, config: dict | None = None) -> PreparedVae:
        tensors = {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in dec.items()}}
        check_finite(tensors, label)
        variant, channels = detect(enc, dec, label)
        nets = {"variant": variant, **(folder_config(config, channels, label) if config is not None else {})}
        downscale = 32 if variant == "f32" else 8
        candidates = fitting_families(self.families, channels, downscale)
        if variant == "flux2":
            candidates = [FAMILIES["flux2"]]
        elif variant == "sd":
            candidates = [f for f in candidates if f.name != "flux2"] or candidates
        if not candidates:
            raise VaeLoadError(f"no tiny autoencoder family has {channels} latent channels at 1/{downscale} size", label)
        tiny = tiny_name(Path(name).name) or tiny_name(name)
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
        cfg = config or {}
        info = VaeInfo(
            source=label, format=fmt, key_layout=layout, architecture=self.name, family=fam.name,
            family_guessed=guessed, family_reason=reason, latent_channels=channels, downscale=downscale,
            scaling_factor=float(cfg.get("scaling_factor", 1.0)), shift_factor=float(cfg.get("shift_factor") or 0.0),
            parameters=sum(t.numel() for t in tensors.values()), dtype=dtype_of(tensors),
            halves=[h for h, d in (("encoder", enc), ("decoder", dec)) if d], ignored_keys=ignored[:6], notes=notes,
            force_upcast=bool(cfg.get("force_upcast", False)),
        )
        _describe_model_space(info, fam)
        return PreparedVae(self.name, tensors, nets, info, fam,
                           extra={"files": files, "missing_hint": missing_hint})

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> TinyAutoencoder:
        info, cfg = prepared.info, prepared.config
        act = cfg.get("act_fn", "relu")
        makers = {"encoder": lambda: make_encoder(info.latent_channels, cfg["variant"], act),
                  "decoder": lambda: make_decoder(info.latent_channels, cfg["variant"], act,
                                                  cfg.get("upsample_fn", "nearest"))}
        parts = {}
        for half, make in makers.items():
            sd = {k[len(half) + 1:]: v.float() for k, v in prepared.tensors.items() if k.startswith(half + ".")}
            if not sd:
                parts[half] = None
                continue
            net = make()
            if (why := misfit(net, sd)) is not None:
                raise VaeLoadError(f"the tiny {half}'s weights do not fit its layout ({why})", info.source)
            net.load_state_dict(sd, strict=True)
            parts[half] = net
        return TinyAutoencoder(TinyModel(parts["encoder"], parts["decoder"]), info, prepared.family, device=device,
                               dtype=dtype)

    def family_choices(self, info: VaeInfo) -> list[Family]:
        return fitting_families(self.families, info.latent_channels, info.downscale)

    def use_family(self, info: VaeInfo, family: Family) -> None:
        super().use_family(info, family)
        info.scaling_factor, info.shift_factor = 1.0, 0.0  # tiny latents are already in model space


ARCHITECTURE = TinyArchitecture()
