"""The fine-tune's outputs: the VAE in the layout its source came in, a diffusers folder, finetune.json.

- autoencoder-kl: ``vae.safetensors`` with LDM keys (``diffusers_to_ldm``: what ComfyUI, A1111/Forge
  and diffusers' ``from_single_file`` read), or diffusers keys when the source was a diffusers-key
  single file; ``diffusers/`` (config.json + diffusion_pytorch_model.safetensors);
- flux2: ``vae.safetensors`` in Black Forest Labs' layout (``diffusers_to_bfl``), or diffusers keys
  when the source had them; ``diffusers/``;
- taesd: the original pair ``<name>_encoder.pth`` / ``<name>_decoder.pth`` (``torch.save`` of plain
  state dicts: they load with ``weights_only=True``), named after the base so its family is found
  again; no diffusers folder (``AutoencoderTiny`` holds neither taef2's pool branch nor taesana).

The safetensors files carry the metadata (base VAE, its hash, steps, data, losses); finetune.json
holds it too, beside every output. Each file is written atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from vaestudio.core.files import write_atomic

METADATA_PREFIX = "vaestudio.finetune."


def _plain(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in sd.items()}


def _safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save

    return write_atomic(path, save(_plain(tensors), metadata=metadata))


def single_file_layout(architecture: str, info) -> str:
    """The key layout vae.safetensors is written in: the source's where it was a single file, else the
    original (LDM / BFL) one community tools read."""
    single = info.format not in ("diffusers-folder", "hub")
    if single and info.key_layout == "diffusers":
        return "diffusers"
    return "bfl" if architecture == "flux2" else "ldm"


def write_diffusers(folder: Path, model, info, metadata: dict[str, str]) -> Path:
    """config.json (with the scaling vaestudio used, which a single file's shapes cannot tell) and weights."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(model.config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if "scaling_factor" in cfg:
        cfg["scaling_factor"] = info.scaling_factor
    if "shift_factor" in cfg and (cfg["shift_factor"] is not None or info.shift_factor):
        cfg["shift_factor"] = info.shift_factor  # SD's null stays null
    cfg = {"_class_name": type(model).__name__, **cfg}
    import diffusers

    cfg["_diffusers_version"] = diffusers.__version__
    _safetensors(folder / "diffusion_pytorch_model.safetensors", model.state_dict(), {"format": "pt", **metadata})
    write_atomic(folder / "config.json", json.dumps(cfg, indent=2, default=list) + "\n")
    return folder


def tiny_stem(info, family) -> str:
    from vaestudio.core.archs.taesd import TINY_NAMES

    low = Path(info.source.rstrip("/\\")).name.lower()
    name = next((n for n in TINY_NAMES if n in low), None) or family.tiny or "taesd"
    return f"{name}_finetune"


def write_outputs(out: Path, vae, metadata: dict[str, str]) -> list[Path]:
    """Write the fine-tuned ``vae`` (its model holds the weights to export); the paths written."""
    arch, info, model = vae.architecture, vae.info, vae.model
    meta = {"format": "pt", **{METADATA_PREFIX + k: v for k, v in metadata.items()},
            "modelspec.architecture": f"{info.family} vae"}
    written: list[Path] = []
    if arch == "taesd":
        stem = tiny_stem(info, vae.family)
        for half in ("encoder", "decoder"):
            buf = io.BytesIO()
            torch.save(_plain(getattr(model, half).state_dict()), buf)
            written.append(write_atomic(out / f"{stem}_{half}.pth", buf.getvalue()))
    else:
        sd = model.state_dict()
        layout = single_file_layout(arch, info)
        if layout == "ldm":
            from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm

            sd = diffusers_to_ldm(sd)
        elif layout == "bfl":
            from vaestudio.core.archs.flux2 import diffusers_to_bfl

            sd = diffusers_to_bfl({k: v for k, v in sd.items() if k != "bn.num_batches_tracked"})
        meta[METADATA_PREFIX + "layout"] = layout
        written.append(_safetensors(out / "vae.safetensors", sd, meta))
        written.append(write_diffusers(out / "diffusers", model, info, {METADATA_PREFIX + k: v for k, v in metadata.items()}))
    record = {**metadata, "outputs": [p.name for p in written]}
    written.append(write_atomic(out / "finetune.json", json.dumps(record, indent=2) + "\n"))
    return written
