"""Loading a VAE from any source: a weight file, a folder, a Hugging Face id.

``prepare_source`` reads and checks the weights and works out what they are (that is all
``inspect-vae`` needs); ``load_vae`` then builds the model. Which architecture a source holds is
asked of the registry (``vaestudio.core.registry``): by the diffusers config's class name for a
folder, by marker keys and shapes for a file. How the model is built is the architecture's own
affair (``Architecture.build``): the diffusers-backed ones create it on the meta device and assign
the weights, so no time is spent on a random initialisation; the small native ones (TAESD, MNIST)
are built normally and loaded strictly.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vaestudio.core.device import pick_device
from vaestudio.core.errors import Cancelled, DownloadError, VaeLoadError, one_line
from vaestudio.core.filetypes import WEIGHT_SUFFIXES
from vaestudio.core.registry import PreparedVae, architectures, for_config_class, get_architecture, recognise
from vaestudio.core.unsupported import not_a_vae_reason, other_vae
from vaestudio.core.vae import Autoencoder
from vaestudio.core.weights import FOLDER_WEIGHT_NAMES, folder_weights_path, read_weight_file

HUB_ID_RE = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:/([\w./-]+))?$")
BOTH_HALVES = ("encoder", "decoder")


@dataclass
class DownloadProgress:
    filename: str
    done: int
    total: int | None


def hf_cache_dir() -> Path:
    """Where Hugging Face downloads are cached (HF_HUB_CACHE, HF_HOME, or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def prepare_source(source: str | os.PathLike, *, family: str | None = None, subfolder: str | None = None,
                   progress: Callable[[DownloadProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   decoder: str | os.PathLike | None = None) -> PreparedVae:
    """Read and check a VAE source without building the model; ``decoder`` names a weight file whose decoder
    takes the place of the source's own (FLUX.2's small decoder; another SD VAE's decoder).

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
    if decoder is not None:
        prepared = _pair_decoder(prepared, Path(decoder).expanduser(), f"{text} + decoder {decoder}")
    if family:
        arch = get_architecture(prepared.architecture)
        fam = arch.check_family(prepared.info, family)
        arch.use_family(prepared.info, fam)
        prepared.family = fam
    return prepared


def load_vae(source: str | os.PathLike, *, family: str | None = None, device: str | None = None,
             dtype: str | None = None, subfolder: str | None = None, halves: tuple[str, ...] = BOTH_HALVES,
             progress: Callable[[DownloadProgress], None] | None = None,
             should_stop: Callable[[], bool] | None = None, decoder: str | os.PathLike | None = None) -> Autoencoder:
    """Load a VAE from a file, a folder, a Hugging Face id or an MNIST checkpoint.

    ``halves`` names what the caller needs: a source that lacks one of them (a tiny decoder without
    its encoder file) fails with a sentence naming what is missing.
    """
    prepared = prepare_source(source, family=family, subfolder=subfolder, progress=progress, should_stop=should_stop,
                              decoder=decoder)
    return build_vae(prepared, device=device, dtype=dtype, halves=halves)


def build_vae(prepared: PreparedVae, *, device: str | None = None, dtype: str | None = None,
              halves: tuple[str, ...] = BOTH_HALVES) -> Autoencoder:
    arch = get_architecture(prepared.architecture)
    missing = [h for h in halves if h not in prepared.info.halves]
    if missing:
        hint = prepared.extra.get("missing_hint", "")
        raise VaeLoadError(f"has no {missing[0]}{hint}", prepared.info.source)
    return arch.build(prepared, device=pick_device(device), dtype=dtype, halves=halves)


# -- files ------------------------------------------------------------------------------------

def _prepare_file(path: Path, label: str) -> PreparedVae:
    wf = read_weight_file(path)
    arch = recognise(wf, path)
    if arch is None:
        raise VaeLoadError(not_a_vae_reason(wf.tensors), label)
    try:
        return arch.prepare_file(path, wf, label)
    except VaeLoadError:
        other = other_vae(wf.tensors)  # claimed by its keys' look, but another architecture's VAE
        if other is None:
            raise
        raise VaeLoadError(other, label) from None


def _pair_decoder(prepared: PreparedVae, path: Path, label: str) -> PreparedVae:
    if not path.is_file():
        raise VaeLoadError("the decoder must be a weight file, and there is no such file", path)
    pair = getattr(get_architecture(prepared.architecture), "pair_decoder", None)
    if pair is None:
        raise VaeLoadError(f"a {prepared.info.architecture} VAE cannot take another file's decoder yet", label)
    return pair(prepared, read_weight_file(path), label)


# -- folders ----------------------------------------------------------------------------------

def _prepare_folder(folder: Path, label: str, fmt: str = "diffusers-folder") -> PreparedVae:
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        for arch in architectures():
            if arch.claims_folder(folder):
                return arch.prepare_folder(folder, None, label, "folder")
        weights = [p.name for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES] if folder.is_dir() else []
        hint = f" (it holds {weights[0]}: pick that file instead)" if weights else ""
        raise VaeLoadError(f"the folder has no config.json, so it is not a diffusers model folder{hint}", label)
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VaeLoadError(f"config.json is not valid JSON ({exc.msg if isinstance(exc, json.JSONDecodeError) else one_line(exc)})", label) from None
    except OSError as exc:
        raise VaeLoadError(f"config.json could not be read ({exc.strerror})", label) from None
    if not isinstance(config, dict):
        raise VaeLoadError("config.json is not a JSON object", label)
    cls = config.get("_class_name")
    if cls is None:  # an old diffusers config, or an original repository's own: ask the weights
        path = folder_weights_path(folder, label)
        wf = read_weight_file(path)
        arch = recognise(wf, path)
        if arch is not None and "AutoencoderKL" not in arch.config_classes:
            return arch.prepare_file(path, wf, label)
        # an old AutoencoderKL config: the weights just read are the ones it is made from (read once)
        return for_config_class(None).prepare_weights(wf, label, fmt=fmt, name=str(folder), config=config)
    arch = for_config_class(cls)
    if arch is None:
        known = sorted({c for a in architectures() for c in a.config_classes} - {"AutoencoderKL"})
        raise VaeLoadError(f"config.json describes a {cls}, not an AutoencoderKL or another VAE vaestudio knows "
                           f"({', '.join(known)})", label)
    return arch.prepare_folder(folder, config, label, fmt)


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
        raise DownloadError(f"download failed ({one_line(exc, limit=160)})", label) from None


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
