"""What a fine-tuning run is, and what it tells its caller as it goes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from vaestudio.core.errors import VaeStudioError

#: the architectures whose trainable module ``model`` knows
SUPPORTED = ("autoencoder-kl", "flux2", "taesd")
KNOWN_LOSSES = ("l1", "lpips", "kl")
#: each loss's weight when the list does not give one (KL as in the LDM autoencoders' training)
DEFAULT_WEIGHTS = {"l1": 1.0, "lpips": 1.0, "kl": 1e-6}
#: the checkpoint's name in the output folder (here, so a window can look for one without importing torch)
CHECKPOINT = "checkpoint.safetensors"
#: protocol fields a resumed run must share with the checkpoint
PROTOCOL = ("source", "data", "part", "size", "batch", "lr", "losses", "ema", "val", "seed")


class FinetuneError(VaeStudioError):
    """A fine-tuning run cannot start as asked (usage: exit code 2)."""

    exit_code = 2


def parse_losses(text: str) -> dict[str, float]:
    """``l1,lpips=0.5,kl`` -> {"l1": 1.0, "lpips": 0.5, "kl": 1e-6}."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition("=")
        name = name.strip().lower()
        if name not in KNOWN_LOSSES:
            raise FinetuneError(f"unknown loss '{name}' (use {', '.join(KNOWN_LOSSES)})")
        try:
            w = float(weight) if weight else DEFAULT_WEIGHTS[name]
        except ValueError:
            raise FinetuneError(f"the weight of loss '{name}' is not a number ({weight})") from None
        if not (w >= 0 and math.isfinite(w)):
            raise FinetuneError(f"the weight of loss '{name}' must be >= 0")
        out[name] = w
    if not out:
        raise FinetuneError("--loss names no loss")
    return out


@dataclass
class FinetuneOptions:
    data: list[str]
    source: str
    out: str
    part: str = "decoder"  # decoder | all
    steps: int = 1000
    batch: int = 4
    size: int = 256
    lr: float = 1e-5
    losses: dict[str, float] = field(default_factory=lambda: {"l1": 1.0})
    ema: float | None = None
    val: str = "0.05"  # a fraction, or a folder of held-out images
    every: int = 100
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast)
    checkpointing: str = "auto"  # auto (on a GPU) | on | off
    family: str | None = None
    #: held-out images whose pictures (base, current, original) each validation carries: 0 none (a window asks)
    gallery: int = 0

    def validate(self) -> None:
        if self.part not in ("decoder", "all"):
            raise FinetuneError(f"--part must be decoder or all, not '{self.part}'")
        for name in ("steps", "batch", "every"):
            if getattr(self, name) < 1:
                raise FinetuneError(f"--{name} must be at least 1")
        if self.size < 16 or self.size % 16:
            raise FinetuneError("--size must be a multiple of 16, at least 16")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FinetuneError("--lr must be a positive number")
        if self.gallery < 0:
            raise FinetuneError("gallery must be at least 0")
        if self.ema is not None and not (0.0 < self.ema < 1.0):
            raise FinetuneError("--ema must be between 0 and 1 (e.g. 0.999)")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise FinetuneError("--precision must be auto, fp32, bf16 or fp16")
        if self.checkpointing not in ("auto", "on", "off"):
            raise FinetuneError("--checkpointing must be auto, on or off")
        if "kl" in self.losses and self.part == "decoder":
            raise FinetuneError("the KL term trains the encoder: use it with --part all")

    def protocol(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in PROTOCOL}


# -- events -------------------------------------------------------------------------------------

@dataclass
class Started:
    step: int  # the step it starts from (0, or the checkpoint's)
    steps: int
    train_images: int
    val_images: int
    architecture: str
    family: str
    part: str
    world_size: int
    notes: list[str] = field(default_factory=list)


@dataclass
class StepDone:
    step: int  # steps done
    loss: float  # the weighted sum, this step (rank 0's share of the batch)
    terms: dict[str, float]
    samples_per_s: float


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class Gallery:
    """The first ``gallery`` held-out images as (N, size, size, 3) float32 arrays in [0, 1]: each
    reconstructed by the starting VAE (``base``) and by the current weights (``current``)."""

    original: object
    base: object
    current: object


@dataclass
class Validated:
    step: int
    train_loss: float | None  # mean since the previous validation
    current: dict[str, float | None]  # psnr, ssim, lpips on the held-out images
    ema: dict[str, float | None] | None
    base: dict[str, float | None]  # the starting VAE's
    gallery: Gallery | None = None  # with options.gallery > 0

    def to_dict(self) -> dict:
        d = asdict(replace(self, gallery=None))
        d.pop("gallery")
        return {"event": "validation", **d}


@dataclass
class Checkpointed:
    step: int
    path: str


@dataclass
class Finished:
    step: int
    outputs: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Stopped:
    reason: str  # "diverged" | "stopped"
    message: str
    step: int
