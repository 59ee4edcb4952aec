"""The base of every architecture whose model is a diffusers class (AutoencoderKL, FLUX.2, Wan, DC-AE,
HunyuanImage): the loading steps they share, written once.

``DiffusersArchitecture.prepare_weights`` finds the key layout and the VAE's prefix (``layouts``), keeps
the VAE's tensors, converts them to diffusers' keys, refuses NaN/Inf, reads the config from the shapes
(``infer_config``) and merges it with what is known, decides the family (``decide_family``) and
describes the result. ``build`` makes the diffusers model on the meta device and assigns the weights.

The config rule: a folder's config.json is the truth for every value it sets (as ``from_pretrained``
reads it), and the shapes only fill in what it does not say; where it sets a value the shapes show
too, the two must agree. A single file has no config: the shapes and the shipped config
(``resources/configs``) say everything.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from vaestudio.core.archs._common import extract, fitting_families, new_info, shipped_config
from vaestudio.core.autoencoder import TorchAutoencoder
from vaestudio.core.errors import VaeLoadError, one_line
from vaestudio.core.families import FAMILIES, Family, FamilyGuess, guess_family
from vaestudio.core.registry import Architecture, PreparedVae, find_prefix
from vaestudio.core.vae import VaeInfo
from vaestudio.core.weights import WeightFile, check_finite

_BROKEN_FILE = (KeyError, IndexError, ValueError, ZeroDivisionError, RuntimeError)  # converters, shapes


@dataclass(frozen=True)
class Layout:
    """One key layout of an architecture's weights (diffusers', or an original repository's)."""

    name: str  # reported as key_layout
    anchor: str  # a key every file of this layout has; the VAE's prefix is found from it
    blocks: tuple[str, ...] = ()  # key starts (after the prefix) that tell this layout from another
    to_diffusers: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    # the inverse, where it exists: what lets another file's decoder, in this layout, pair with a loaded encoder
    from_diffusers: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


@dataclass
class Found:
    """What ``prepare_weights`` learned, handed to the hooks that decide the family and describe it."""

    wf: WeightFile
    label: str
    name: str  # the file or folder name, for family hints
    config: dict | None  # the folder's config.json (None for a single file)
    layout: Layout
    tensors: dict[str, torch.Tensor]  # diffusers' keys
    merged: dict  # the config the model is built from
    channels: int
    downscale: int

    @property
    def config_class(self) -> str | None:
        return (self.config or {}).get("_class_name")


def load_state_into(cls_name: str, config: dict, tensors: dict[str, torch.Tensor], label: str, *,
                    real_buffers: bool = False) -> torch.nn.Module:
    """The diffusers model ``cls_name`` built from ``config`` on the meta device with these weights assigned
    (no random initialisation). Weights that do not fit, and the assertions some constructors make about
    channel counts read from a broken file, become one-sentence VaeLoadErrors. ``real_buffers``: built on the
    CPU instead, paying for a random initialisation (a model with constant non-persistent buffers or a
    scheduler, which the meta device would leave without values)."""
    import diffusers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its dtype-cast advice does not apply to a plain VAE
    cls = getattr(diffusers, cls_name)
    try:
        with contextlib.nullcontext() if real_buffers else torch.device("meta"):
            model = cls.from_config(config)
        result = model.load_state_dict(tensors, strict=False, assign=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise VaeLoadError(f"the weights do not fit a {cls_name} ({one_line(exc, limit=160)})", label) from None
    except (AssertionError, ZeroDivisionError, KeyError, IndexError, AttributeError) as exc:
        raise VaeLoadError(f"the weights do not describe a valid {cls_name} ({one_line(exc, limit=120)})",
                           label) from None
    if result.missing_keys:
        raise VaeLoadError(
            f"the VAE is incomplete: {len(result.missing_keys)} weights are missing (e.g. {result.missing_keys[0]})", label)
    if result.unexpected_keys:
        raise VaeLoadError(
            f"the file has {len(result.unexpected_keys)} weights this VAE layout does not use "
            f"(e.g. {result.unexpected_keys[0]})", label)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # buffers not in the state dict (none for these models, but never run on meta tensors)
        raise VaeLoadError(f"the VAE is incomplete: {leftover[0]} has no value", label)
    return model.float()


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def agrees(given, shown) -> bool:
    """Whether a config.json value and the one the shapes show are the same (a list and a tuple are; so are
    one value and a list of it for every stage, as diffusers broadcasts it)."""
    given, shown = _plain(given), _plain(shown)
    if isinstance(given, list) != isinstance(shown, list):
        one, many = (shown, given) if isinstance(given, list) else (given, shown)
        return all(x == one for x in many)
    return given == shown


class DiffusersArchitecture(Architecture):
    """An architecture whose model is a diffusers class. Subclasses say what is their own: layouts and
    their conversions, ``infer_config``, the family decision where several fit, and the model class."""

    #: The diffusers class the model is built as (``model_class`` may choose another).
    diffusers_class: ClassVar[str] = ""
    #: The Autoencoder class that wraps the model.
    vae_class: ClassVar[type[TorchAutoencoder]] = TorchAutoencoder
    #: The key layouts, tried in order.
    layouts: ClassVar[tuple[Layout, ...]] = ()
    #: First key parts that belong to the VAE (the rest of a larger checkpoint is ignored).
    parts: ClassVar[tuple[str, ...]] = ("encoder", "decoder")
    #: What the messages call it ("a FLUX.2 VAE").
    short: ClassVar[str] = "VAE"
    #: The shipped config a single file is completed with (resources/configs/<name>.json), if any.
    shipped: ClassVar[str | None] = None
    #: Keys of ``infer_config`` that are guesses, not read from shapes: config.json wins without a check.
    guessed: ClassVar[tuple[str, ...]] = ()
    #: Whether a family must also have this VAE's downscale factor to fit.
    match_downscale: ClassVar[bool] = True
    #: The model's config keys that hold the model space (set from the VaeInfo when building).
    model_scaling: ClassVar[tuple[str, ...]] = ()
    #: force_upcast when config.json does not say.
    upcast: ClassVar[bool] = False
    #: How the model space is made, for inspect-vae's notes.
    space_notes: ClassVar[tuple[str, ...]] = ()
    #: The first key part of each half (a model whose decoder is a UNet: "decoder_unet").
    half_keys: ClassVar[dict[str, str]] = {"encoder": "encoder", "decoder": "decoder"}
    #: Build with real buffers (see ``load_state_into``).
    real_buffers: ClassVar[bool] = False
    #: The first key parts (diffusers' keys) of what decodes: another file's decoder replaces them (``pair_decoder``).
    decoder_parts: ClassVar[tuple[str, ...]] = ()

    # -- hooks --------------------------------------------------------------------------------
    def infer_config(self, tensors: dict[str, torch.Tensor], label: str) -> dict:
        """The model config of diffusers-layout tensors, from shapes; KeyError/IndexError/ValueError mean
        that blocks are missing."""
        raise NotImplementedError

    def check(self, tensors: dict[str, torch.Tensor], layout: Layout, label: str) -> None:
        """Refuse, in one sentence, weights this architecture recognises but cannot use (original keys)."""

    def check_config(self, cfg: dict, tensors: dict[str, torch.Tensor], label: str) -> None:
        """Refuse, in one sentence, a merged config this architecture cannot use: by default one whose
        ``in_channels``/``out_channels`` are not the 3 colours of an image."""
        take, give = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
        if take != 3 or give != 3:
            raise VaeLoadError(f"an image VAE takes and gives 3 colour channels, this one takes {take} and gives "
                               f"{give}", label)

    def downscale_of(self, cfg: dict) -> int:
        raise NotImplementedError

    def decide_family(self, found: Found) -> FamilyGuess:
        """The family: the only one that fits, else the config's scaling, metadata and name decide."""
        candidates = self.candidates(found.channels, found.downscale)
        if not candidates:
            raise VaeLoadError(self._no_family(found.channels, found.downscale), found.label)
        if len(candidates) == 1:
            reason = f"config class {found.config_class}" if found.config_class else \
                f"the only {self.short} family with {found.channels} latent channels"
            return FamilyGuess(candidates[0], False, reason)
        scaling = (found.config or {}).get("scaling_factor")
        return guess_family(candidates, config_scaling=scaling, metadata=found.wf.metadata, name=found.name,
                            default=self.default_family(candidates))

    def default_family(self, candidates: list[Family]) -> Family:
        return candidates[0]

    def describe(self, info: VaeInfo, found: Found) -> None:
        """Add what only this architecture knows to the VaeInfo (its model space's shape...)."""

    def shipped_for(self, inferred: dict) -> str | None:
        return self.shipped

    def model_class(self, prepared: PreparedVae) -> str:
        return self.diffusers_class

    def model_config(self, prepared: PreparedVae) -> dict:
        """The config the model is made from: the merged one, with the model space from the VaeInfo."""
        info = prepared.info
        space = {"scaling_factor": info.scaling_factor, "shift_factor": info.shift_factor or None}
        return dict(prepared.config, **{k: space[k] for k in self.model_scaling})

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    # -- the shared steps ---------------------------------------------------------------------
    def candidates(self, channels: int, downscale: int) -> list[Family]:
        return fitting_families(self.families, channels, downscale if self.match_downscale else None)

    def family_choices(self, info: VaeInfo) -> list[Family]:
        return self.candidates(info.latent_channels, info.downscale)

    def _no_family(self, channels: int, downscale: int) -> str:
        if fitting_families(self.families, channels):
            return f"no known {self.short} family has {channels} latent channels at 1/{downscale} size"
        if len(self.families) == 1:
            return (f"a {self.short} has {FAMILIES[self.families[0]].latent_channels} latent channels but this one "
                    f"has {channels}")
        return f"no known {self.short} family has {channels} latent channels"

    def find_layout(self, sd: dict[str, torch.Tensor]) -> tuple[Layout, str] | None:
        """The first layout whose anchor (and, if it has them, blocks) the keys have, and the VAE's prefix."""
        for layout in self.layouts:
            prefix = find_prefix(sd, layout.anchor)
            if prefix is not None and (not layout.blocks or any(k.startswith(prefix) and k[len(prefix):].startswith(
                    layout.blocks) for k in sd)):
                return layout, prefix
        return None

    def prepare_weights(self, wf: WeightFile, label: str, *, fmt: str, name: str, config: dict | None) -> PreparedVae:
        layout = self._layout(wf.tensors, label)
        tensors, ignored = extract(wf.tensors, layout.anchor, self.parts)
        for have, other in (("encoder", "decoder"), ("decoder", "encoder")):
            if not any(k.startswith(self.half_keys[other] + ".") for k in tensors):
                raise VaeLoadError(f"holds only a {self.short} {have}; the {other} is missing", label)
        self.check(tensors, layout, label)
        try:
            tensors = layout.to_diffusers(tensors) if layout.to_diffusers else dict(tensors)
            check_finite(tensors, label)
            inferred = self.infer_config(tensors, label)
        except _BROKEN_FILE as exc:
            raise VaeLoadError(f"the {self.short} weights are incomplete (blocks are missing: "
                               f"{one_line(exc, limit=80, with_type=True)})", label) from None
        merged = self.merge(inferred, config, label)
        self.check_config(merged, tensors, label)
        found = Found(wf, label, name, config, layout, tensors, merged, self.channels_of(merged),
                      self.downscale_of(merged))
        guess = self.decide_family(found)
        scaling, shift = self._scaling(config, guess.family, label)
        info = new_info(
            self.name, label, wf, tensors, fmt=fmt, layout=layout.name, family=guess.family, guessed=guess.guessed,
            reason=guess.reason, latent_channels=found.channels, downscale=found.downscale, ignored=ignored,
            notes=self.space_notes, scaling=scaling, shift=shift,
            force_upcast=bool((config or {}).get("force_upcast", self.upcast)),
        )
        self.describe(info, found)
        return PreparedVae(self.name, tensors, merged, info, guess.family, extra={"config_class": found.config_class})

    def pair_decoder(self, prepared: PreparedVae, wf: WeightFile, label: str) -> PreparedVae:
        """The loaded VAE with the decoder of another file (a decoder-only file such as FLUX.2's small decoder, or a
        whole VAE's decoder half) in place of its own: the encoder side is put into the decoder file's key layout and
        the two are read as one file, so the config comes from their shapes as for any file."""
        if not self.decoder_parts:
            raise VaeLoadError(f"a {self.short} cannot take another file's decoder yet", label)
        hit = self._decoder_layout(wf.tensors)
        if hit is None:
            raise VaeLoadError(f"no {self.short} decoder found in the decoder file", label)
        layout, prefix = hit
        mine = set(self.decoder_parts) | {self.half_keys["decoder"]}
        decoder = {k[len(prefix):]: v for k, v in wf.tensors.items()
                   if k.startswith(prefix) and k[len(prefix):].split(".")[0] in mine}
        encoder = {k: v for k, v in prepared.tensors.items() if k.split(".")[0] not in mine}
        paired = WeightFile({**(layout.from_diffusers or dict)(encoder), **decoder}, wf.format, dict(wf.metadata))
        try:
            out = self.prepare_weights(paired, label, fmt=prepared.info.format, name=label, config=None)
        except VaeLoadError as exc:
            raise VaeLoadError(f"the decoder does not fit this {self.short}'s encoder ({exc.reason})", label) from None
        out.family, full = prepared.family, prepared.info
        for key in ("family", "family_guessed", "family_reason", "scaling_factor", "shift_factor"):
            setattr(out.info, key, getattr(full, key))
        out.info.notes = [*out.info.notes, "the decoder is another file's, paired with this VAE's encoder"]
        return out

    def _decoder_layout(self, sd: dict[str, torch.Tensor]) -> tuple[Layout, str] | None:
        """The layout (one with an inverse converter, or diffusers' own) whose decoder blocks the keys have, and
        the prefix before them."""
        half = self.half_keys["decoder"] + "."
        for layout in self.layouts:
            if layout.to_diffusers is not None and layout.from_diffusers is None and layout.name != "diffusers":
                continue
            for block in (b for b in layout.blocks if b.startswith(half)):
                key = next((k for k in sd if block in k), None)
                if key is not None:
                    return layout, key[:key.index(block)]
        return None

    def channels_of(self, cfg: dict) -> int:
        return int(cfg["latent_channels"])

    def _layout(self, sd: dict[str, torch.Tensor], label: str) -> Layout:
        hit = self.find_layout(sd)
        if hit is not None:
            return hit[0]
        if any(find_prefix(sd, layout.anchor) is not None for layout in self.layouts):
            raise VaeLoadError("has an encoder input layer but no recognisable VAE blocks", label)
        half = self.layouts[0].anchor.split(".")[0]
        raise VaeLoadError(f"no {self.short} {half} found ({self.layouts[0].anchor} is missing)", label)

    def merge(self, inferred: dict, config: dict | None, label: str) -> dict:
        """The config the model is built from (see the module docstring for the rule)."""
        if config is None:
            shipped = self.shipped_for(inferred)
            return {**(shipped_config(shipped) if shipped else {}), **inferred}
        given = {k: v for k, v in config.items() if not k.startswith("_")}
        for key, shown in inferred.items():
            if key in given and key not in self.guessed and not agrees(given[key], shown):
                raise VaeLoadError(f"config.json says {key}={given[key]} but the weights have {shown}", label)
        return {**inferred, **given}

    @staticmethod
    def _scaling(config: dict | None, family: Family, label: str) -> tuple[float, float]:
        """The model space's scale and shift: config.json's where it sets them, else the family's."""
        if config is None or config.get("scaling_factor") is None:
            return family.scaling_factor, family.shift_factor
        scaling = config["scaling_factor"]
        if not isinstance(scaling, (int, float)) or not math.isfinite(scaling) or scaling <= 0:
            raise VaeLoadError(f"config.json's scaling_factor {scaling} is not a positive number", label)
        return float(scaling), float(config.get("shift_factor") or 0.0)

    def auto_dtype(self, info, device):
        from vaestudio.core.device import pick_dtype

        return pick_dtype("auto", device, info.force_upcast, self.vae_class.cpu_fp32)

    def build(self, prepared: PreparedVae, *, device, dtype, halves) -> TorchAutoencoder:
        info = prepared.info
        model = load_state_into(self.model_class(prepared), self.model_config(prepared), prepared.tensors, info.source,
                                real_buffers=self.real_buffers)
        return self.vae_class(self.wrap(model), info, prepared.family, device=device, dtype=dtype)
