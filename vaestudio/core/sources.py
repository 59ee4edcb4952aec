"""Loading a VAE from any source: a weight file, a diffusers folder, a Hugging Face id, an MNIST VAE.

``prepare_source`` reads and checks the weights and works out what they are (that is all
``inspect-vae`` needs); ``load_vae`` then builds the model. The model is created on the meta device
and the weights are assigned to it, so no time is spent on a random initialisation.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vaestudio.core.convert import extract_vae, infer_config, ldm_to_diffusers, modernize_attention_names
from vaestudio.core.errors import Cancelled, DownloadError, VaeLoadError
from vaestudio.core.families import Family, get_family, guess_family
from vaestudio.core.vae import SdVae, VaeInfo, pick_device
from vaestudio.core.weights import WEIGHT_SUFFIXES, WeightFile, read_weight_file

HUB_ID_RE = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:/([\w./-]+))?$")
FOLDER_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)
SUPPORTED_CLASSES = {None, "AutoencoderKL"}


@dataclass
class DownloadProgress:
    filename: str
    done: int
    total: int | None


@dataclass
class PreparedVae:
    """Checked weights in diffusers layout with their config and what we learned."""

    tensors: dict[str, torch.Tensor]
    config: dict
    info: VaeInfo
    family: Family
    mnist: object | None = None  # an MNIST checkpoint, when the source is one


def hf_cache_dir() -> Path:
    """Where Hugging Face downloads are cached (HF_HUB_CACHE, HF_HOME, or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def prepare_source(source: str | os.PathLike, *, family: str | None = None, subfolder: str | None = None,
                   progress: Callable[[DownloadProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> PreparedVae:
    """Read and check a VAE source without building the model.

    Raises
    ------
    VaeLoadError
        One sentence saying what is wrong (unsafe, corrupt, not a VAE, not cached offline...).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        prepared = _prepare_folder(path, text)
    elif path.is_file():
        prepared = _prepare_file(path, text)
    elif (m := HUB_ID_RE.match(text)) and not text.startswith((".", "/", "~")) and path.suffix.lower() not in WEIGHT_SUFFIXES:
        folder = download_from_hub(m.group(1), subfolder or m.group(2), progress=progress, should_stop=should_stop)
        prepared = _prepare_folder(folder, text, fmt="hub")
    else:
        raise VaeLoadError("no such file or folder, and not a Hugging Face model id (like org/name)", text)
    if family:
        try:
            fam = get_family(family)
        except ValueError as exc:
            raise VaeLoadError(str(exc), text) from None
        if prepared.mnist is not None and fam.name != "mnist":
            raise VaeLoadError("an MNIST VAE has no Stable Diffusion family to override", text)
        if prepared.mnist is None and fam.latent_channels != prepared.info.latent_channels:
            raise VaeLoadError(
                f"family {fam.name} has {fam.latent_channels} latent channels but this VAE has "
                f"{prepared.info.latent_channels}", text)
        prepared.family = fam
        prepared.info.use_family(fam)
    return prepared


def load_vae(source: str | os.PathLike, *, family: str | None = None, device: str | None = None,
             dtype: str | None = None, subfolder: str | None = None,
             progress: Callable[[DownloadProgress], None] | None = None,
             should_stop: Callable[[], bool] | None = None):
    """Load a VAE from a file, a diffusers folder, a Hugging Face id or an MNIST checkpoint."""
    prepared = prepare_source(source, family=family, subfolder=subfolder, progress=progress, should_stop=should_stop)
    return build_vae(prepared, device=device, dtype=dtype)


def build_vae(prepared: PreparedVae, *, device: str | None = None, dtype: str | None = None):
    if prepared.mnist is not None:
        from vaestudio.core.mnist.adapter import MnistVae

        return MnistVae.from_checkpoint(prepared.mnist, prepared.info, device=pick_device(device))
    from diffusers import AutoencoderKL
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its dtype-cast advice does not apply to a plain VAE
    config = dict(prepared.config)
    config.update(scaling_factor=prepared.info.scaling_factor, shift_factor=prepared.info.shift_factor or None)
    label = prepared.info.source
    try:
        with torch.device("meta"):
            model = AutoencoderKL.from_config(config)
        result = model.load_state_dict(prepared.tensors, strict=False, assign=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VaeLoadError(f"the weights do not fit a Stable Diffusion VAE ({msg[:160]})", label) from None
    if result.missing_keys:
        raise VaeLoadError(
            f"the VAE is incomplete: {len(result.missing_keys)} weights are missing (e.g. {result.missing_keys[0]})", label)
    if result.unexpected_keys:
        raise VaeLoadError(
            f"the file has {len(result.unexpected_keys)} weights this VAE layout does not use "
            f"(e.g. {result.unexpected_keys[0]})", label)
    model = model.float()
    return SdVae(model, prepared.info, prepared.family, device=pick_device(device), dtype=dtype)


# -- files ------------------------------------------------------------------------------------

def _prepare_file(path: Path, label: str) -> PreparedVae:
    wf = read_weight_file(path)
    if wf.metadata.get("vaestudio") == "mnist-vae":
        from vaestudio.core.mnist.adapter import prepare_mnist_checkpoint

        return prepare_mnist_checkpoint(path, wf, label)
    return _prepare_tensors(wf, label, fmt=wf.format, name=path.name)


def _prepare_tensors(wf: WeightFile, label: str, *, fmt: str, name: str, config: dict | None = None) -> PreparedVae:
    extracted = extract_vae(wf.tensors, label)
    tensors = extracted.tensors
    if extracted.layout == "ldm":
        tensors = ldm_to_diffusers(tensors)
    else:
        tensors = modernize_attention_names(tensors)
    _check_finite(tensors, label)
    inferred = infer_config(tensors, label)
    if config is not None:
        for key in ("latent_channels", "block_out_channels", "layers_per_block"):
            if key in config and list(_aslist(config[key])) != list(_aslist(inferred[key])):
                raise VaeLoadError(
                    f"config.json says {key}={config[key]} but the weights have {inferred[key]}", label)
        merged = {k: v for k, v in config.items() if not k.startswith("_")}
        merged.update({k: inferred[k] for k in ("use_quant_conv", "use_post_quant_conv")})
    else:
        merged = inferred
    dtype_counts = Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
    notes = list(wf.notes)
    if wf.dropped:
        notes.append(f"non-tensor entries ignored: {', '.join(wf.dropped[:6])}")
    cfg_scale = config.get("scaling_factor") if config else None
    guess = guess_family(inferred["latent_channels"], config_scaling=cfg_scale, metadata=wf.metadata, name=name)
    info = VaeInfo(
        source=label,
        format=fmt,
        key_layout=extracted.layout,
        family=guess.family.name,
        family_guessed=guess.guessed,
        family_reason=guess.reason,
        latent_channels=inferred["latent_channels"],
        scaling_factor=guess.family.scaling_factor,
        shift_factor=guess.family.shift_factor,
        parameters=sum(t.numel() for t in tensors.values()),
        dtype=dtype_counts.most_common(1)[0][0],
        downscale=2 ** (len(inferred["block_out_channels"]) - 1),
        ignored_keys=extracted.ignored_summary(),
        notes=notes,
        force_upcast=bool((config or {}).get("force_upcast", True)),
    )
    if config is not None and cfg_scale is not None:
        info.scaling_factor = float(cfg_scale)
        info.shift_factor = float(config.get("shift_factor") or 0.0)
    return PreparedVae(tensors, merged, info, guess.family)


def _aslist(v):
    return v if isinstance(v, (list, tuple)) else [v]


def _check_finite(tensors: dict[str, torch.Tensor], label: str) -> None:
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise VaeLoadError(f"refused: {len(bad)} weight tensors contain NaN or Inf (e.g. {bad[0]})", label)


# -- folders ----------------------------------------------------------------------------------

def _prepare_folder(folder: Path, label: str, fmt: str = "diffusers-folder") -> PreparedVae:
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        weights = [p.name for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES] if folder.is_dir() else []
        hint = f" (it holds {weights[0]}: pick that file instead)" if weights else ""
        raise VaeLoadError(f"the folder has no config.json, so it is not a diffusers model folder{hint}", label)
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VaeLoadError(f"config.json is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})", label) from None
    except OSError as exc:
        raise VaeLoadError(f"config.json could not be read ({exc.strerror})", label) from None
    if not isinstance(config, dict):
        raise VaeLoadError("config.json is not a JSON object", label)
    cls = config.get("_class_name")
    if cls not in SUPPORTED_CLASSES:
        raise VaeLoadError(f"config.json describes a {cls}, not an AutoencoderKL VAE", label)
    weights = next((folder / n for n in FOLDER_WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise VaeLoadError("the folder has a config.json but no weights file (diffusion_pytorch_model.safetensors)", label)
    wf = read_weight_file(weights)
    return _prepare_tensors(wf, label, fmt=fmt, name=str(folder), config=config)


# -- the Hugging Face hub ---------------------------------------------------------------------

def _tqdm_adapter(filename: str, progress, should_stop):
    from tqdm.auto import tqdm as base_tqdm

    class _Adapter(base_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = io.StringIO()
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if should_stop is not None and should_stop():
                raise Cancelled("download cancelled")
            out = super().update(n)
            if progress is not None:
                progress(DownloadProgress(filename, int(self.n), int(self.total) if self.total else None))
            return out

    return _Adapter


def download_from_hub(repo_id: str, subfolder: str | None = None, *,
                      progress: Callable[[DownloadProgress], None] | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      cache_dir: str | os.PathLike | None = None, endpoint: str | None = None) -> Path:
    """Fetch a VAE's config and weights through the standard Hugging Face cache; return the folder.

    Cached files are used without touching the network when ``HF_HUB_OFFLINE=1``; otherwise an
    unreachable hub gives a clear error quickly (short timeouts), never a hang.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # progress (and so cancellation) is reported once per chunk: 256 KB instead of 10 MB keeps
    # the progress bar moving and lets Cancel act within a fraction of a second
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, 256 * 1024)
    # huggingface_hub retries an unreachable hub for ~25 s; a 3 s connection probe lets us go
    # straight to the cache instead, and fail at once when the files are not there
    local_only = _offline_flag() or not _reachable(endpoint)

    def fetch(filename: str, sub: str | None) -> Path:
        return Path(hf_hub_download(
            repo_id, filename, subfolder=sub or None, etag_timeout=10, cache_dir=cache_dir, endpoint=endpoint,
            tqdm_class=_tqdm_adapter(filename, progress, should_stop), local_files_only=local_only,
        ))

    subs = [subfolder] if subfolder else [None, "vae"]
    label = f"{repo_id}/{subfolder}" if subfolder else repo_id
    try:
        for i, sub in enumerate(subs):
            try:
                cfg = fetch("config.json", sub)
                break
            except EntryNotFoundError:  # includes "not in the cache" when offline
                if i == len(subs) - 1:
                    raise
        else:  # pragma: no cover
            raise AssertionError
        folder = cfg.parent
        missing: list[Exception] = []
        for name in FOLDER_WEIGHT_NAMES:
            try:
                fetch(name, sub)
                return folder
            except EntryNotFoundError as exc:
                missing.append(exc)
        local = [e for e in missing if isinstance(e, LocalEntryNotFoundError)]
        if local:
            raise local[0]
        raise VaeLoadError("the model repository has no VAE weights file", label)
    except Cancelled:
        raise
    except GatedRepoError:
        raise VaeLoadError("the model is gated on the Hugging Face hub: log in with a token that has access", label) from None
    except RepositoryNotFoundError:
        raise VaeLoadError("no such model on the Hugging Face hub (or it is private)", label) from None
    except RevisionNotFoundError:
        raise VaeLoadError("no such revision on the Hugging Face hub", label) from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if _offline_flag() else "the Hugging Face hub could not be reached (offline?)"
        raise VaeLoadError(f"not in the local cache ({cache_dir or hf_cache_dir()}) and {why}", label) from None
    except EntryNotFoundError:
        raise VaeLoadError("the model repository has no VAE config.json (try naming the subfolder, e.g. org/name/vae)",
                           label) from None
    except (OSError, ValueError) as exc:
        raise DownloadError(f"download failed ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})",
                            label) from None


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _reachable(endpoint: str | None, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub (or HTTPS proxy) at all?"""
    import socket
    from urllib.parse import urlparse
    from urllib.request import getproxies

    from huggingface_hub import constants

    url = urlparse(endpoint or constants.ENDPOINT)
    proxy = getproxies().get(url.scheme)
    if proxy:
        url = urlparse(proxy)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False
