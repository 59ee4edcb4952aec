"""The architecture registry: one module per VAE architecture in ``vaestudio.core.archs``.

Each module defines ``ARCHITECTURE``, an ``Architecture`` that says how its weights are
recognised (marker keys and shapes in a state dict, a diffusers config class name, files in a
folder), how they are read into a ``PreparedVae`` (checked tensors, config and what was detected),
how the model is built, and which families it can have. Loading (``vaestudio.core.sources``) only
asks the registry; outside the architecture modules, only the MNIST studio (which wraps the model it
trains) and the self-test (which writes weight files to load) name a concrete one.

Modules are found by listing the package, so adding an architecture is adding one module (and its
test). They are tried in ``order``: specific markers first, the broad Stable Diffusion layout last.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, Family, get_family

if TYPE_CHECKING:
    import torch

    from vaestudio.core.device import DtypeChoice
    from vaestudio.core.vae import Autoencoder, VaeInfo
    from vaestudio.core.weights import WeightFile


@dataclass
class PreparedVae:
    """Checked weights in the architecture's own layout, its config and what was learned about it."""

    architecture: str
    tensors: dict[str, torch.Tensor]
    config: dict
    info: VaeInfo
    family: Family
    extra: dict = field(default_factory=dict)  # whatever else the architecture needs to build the model


class Architecture:
    """How one VAE architecture is recognised, read and built. Subclassed once per module."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    #: Recognition priority: lower is tried first.
    order: ClassVar[int] = 50
    #: diffusers ``_class_name`` values of its config.json.
    config_classes: ClassVar[tuple[str, ...]] = ()
    #: Families it can have (names in ``vaestudio.core.families``).
    families: ClassVar[tuple[str, ...]] = ()
    #: The sources users have, for the README's table: (format, description).
    sources: ClassVar[tuple[tuple[str, str], ...]] = ()

    # -- recognition ------------------------------------------------------------------------
    def claims(self, wf: WeightFile, path: Path | None) -> bool:
        """Whether these tensors (from ``path``, if a file) are this architecture's."""
        return False

    def claims_folder(self, folder: Path) -> bool:
        """Whether a folder without a diffusers config.json holds this architecture's files."""
        return False

    # -- reading ----------------------------------------------------------------------------
    def prepare_weights(self, wf: WeightFile, label: str, *, fmt: str, name: str, config: dict | None) -> PreparedVae:
        """Convert, check and describe these weights (from a single file, ``config`` None, or from a
        diffusers folder's weight files with its config.json). Architectures whose file and folder
        differ only in where the weights come from override this; others override the two below."""
        raise NotImplementedError

    def _reads_weights(self) -> bool:
        return type(self).prepare_weights is not Architecture.prepare_weights

    def prepare_file(self, path: Path, wf: WeightFile, label: str) -> PreparedVae:
        if not self._reads_weights():
            raise VaeLoadError(f"{self.label} weights cannot be read from a single file", label)
        return self.prepare_weights(wf, label, fmt=wf.format, name=path.name, config=None)

    def prepare_folder(self, folder: Path, config: dict | None, label: str, fmt: str) -> PreparedVae:
        if not self._reads_weights():
            raise VaeLoadError(f"{self.label} weights cannot be read from a folder", label)
        from vaestudio.core.weights import read_folder_weights

        return self.prepare_weights(read_folder_weights(folder, label), label, fmt=fmt, name=str(folder), config=config)

    # -- building ---------------------------------------------------------------------------
    def build(self, prepared: PreparedVae, *, device: torch.device, dtype: str | None,
              halves: tuple[str, ...]) -> Autoencoder:
        raise NotImplementedError

    def auto_dtype(self, info: VaeInfo, device: torch.device) -> DtypeChoice:
        """What ``--dtype auto`` runs this VAE in on ``device``, without building it (inspect-vae)."""
        from vaestudio.core.device import pick_dtype

        return pick_dtype("auto", device, info.force_upcast)

    def find_preview_decoder(self, location: Path, family: str) -> Path | None:
        """A fast decoder of this architecture for ``family`` at ``location`` (a file or a folder of
        them), for full-size previews of another VAE's latents; None when there is none."""
        return None

    # -- families ---------------------------------------------------------------------------
    def family_choices(self, info: VaeInfo) -> list[Family]:
        """Families this VAE may be switched to: this architecture's, with its latent channels."""
        return [FAMILIES[n] for n in self.families if n in FAMILIES
                and FAMILIES[n].latent_channels == info.latent_channels]

    def use_family(self, info: VaeInfo, family: Family) -> None:
        """The user chose ``family``: by default its scaling and shift apply."""
        info.family = family.name
        info.family_guessed = False
        info.family_reason = "chosen by the user"
        info.scaling_factor = family.scaling_factor
        info.shift_factor = family.shift_factor

    def check_family(self, info: VaeInfo, name: str) -> Family:
        """Resolve a family name the user gave, or explain in one sentence why it does not fit."""
        try:
            fam = get_family(name)
        except ValueError as exc:
            raise VaeLoadError(str(exc), info.source) from None
        choices = self.family_choices(info)
        if fam not in choices:
            if fam.latent_channels and fam.latent_channels != info.latent_channels:
                raise VaeLoadError(f"family {fam.name} has {fam.latent_channels} latent channels but this VAE has "
                                   f"{info.latent_channels}", info.source)
            allowed = ", ".join(f.name for f in choices) or "none"
            raise VaeLoadError(f"a {self.label} cannot be of family {fam.name} (it can be: {allowed})", info.source)
        return fam


@cache
def architectures() -> tuple[Architecture, ...]:
    """Every architecture module in ``vaestudio.core.archs``, in recognition order."""
    import vaestudio.core.archs as pkg

    found = []
    for mod in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        arch = getattr(module, "ARCHITECTURE", None)
        if isinstance(arch, Architecture):
            found.append(arch)
    return tuple(sorted(found, key=lambda a: (a.order, a.name)))


def get_architecture(name: str) -> Architecture:
    for arch in architectures():
        if arch.name == name:
            return arch
    raise KeyError(name)


def for_config_class(cls: str | None) -> Architecture | None:
    """The architecture of a diffusers config's ``_class_name`` (None: an old config, AutoencoderKL)."""
    for arch in architectures():
        if (cls or "AutoencoderKL") in arch.config_classes:
            return arch
    return None


def recognise(wf: WeightFile, path: Path | None) -> Architecture | None:
    for arch in architectures():
        if arch.claims(wf, path):
            return arch
    return None


def find_preview_decoder(location: str | Path, family: str) -> Path | None:
    """The first preview decoder any architecture finds for ``family`` at ``location``."""
    for arch in architectures():
        found = arch.find_preview_decoder(Path(location).expanduser(), family)
        if found is not None:
            return found
    return None


def find_prefix(keys, anchor: str, known: tuple[str, ...] = ("first_stage_model.", "vae.", "")) -> str | None:
    """The prefix under which ``anchor`` appears in ``keys`` (preferring the usual ones), or None."""
    anchors = [k[: -len(anchor)] for k in keys if k.endswith(anchor)]
    if not anchors:
        return None
    return next((p for p in known if p in anchors), min(anchors, key=len))


def supported_table() -> list[dict]:
    """Rows for the README's table of supported VAEs: architecture, families, sources."""
    rows = []
    for arch in architectures():
        fams = [get_family(n) for n in arch.families if n in FAMILIES]
        rows.append({
            "architecture": arch.name,
            "label": arch.label,
            "families": [f"{f.name} ({f.label})" for f in fams],
            "sources": [f"{fmt}: {desc}" for fmt, desc in arch.sources],
            "config_classes": list(arch.config_classes),
        })
    return rows
