"""Reading tensors from weight files safely.

safetensors files are validated (header size, JSON, offsets) before the library reads them; pickle
formats (.ckpt, .pt, .bin, .pth) are only ever read with ``torch.load(weights_only=True)``: a file
that needs anything else is refused, never retried unsafely. The format is decided by the file's
bytes, not its name, so a renamed file is recognised (and reported).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vaestudio.core.errors import UnsafeFileError, VaeLoadError, one_line

#: A safetensors header larger than this is not a real model header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_SAFETENSORS_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass
class WeightFile:
    """The tensors of one file, with where they came from."""

    tensors: dict[str, torch.Tensor]
    format: str  # "safetensors" or "pickle"
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # non-tensor entries (e.g. global_step)


def sniff_format(path: Path) -> str:
    """Return 'safetensors', 'zip-pickle', 'pickle' or 'unknown' from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip-pickle"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= MAX_HEADER_BYTES and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def read_weight_file(path: str | os.PathLike) -> WeightFile:
    """Read every tensor of a weight file, safely.

    Raises
    ------
    VaeLoadError
        Missing, empty, truncated or corrupt file, or not a weight file at all.
    UnsafeFileError
        A pickle whose loading would need code execution or non-tensor objects.
    """
    path = Path(path)
    if not path.exists():
        raise VaeLoadError("no such file", path)
    if path.is_dir():
        raise VaeLoadError("is a folder (expected a weight file)", path)
    size = path.stat().st_size
    if size == 0:
        raise VaeLoadError("the file is empty", path)
    kind = sniff_format(path)
    suffix = path.suffix.lower()
    notes: list[str] = []
    if kind == "unknown":
        if suffix == ".safetensors":
            raise VaeLoadError(_describe_bad_safetensors(path, size), path)
        raise VaeLoadError(
            "not a weight file (expected .safetensors or a PyTorch checkpoint: the bytes match neither)", path
        )
    if suffix == ".safetensors" and kind != "safetensors":
        if kind == "zip-pickle":
            notes.append("named .safetensors but is a PyTorch zip checkpoint; read safely as one")
        else:
            notes.append("named .safetensors but is a pickle; read safely as one")
    elif suffix in {".ckpt", ".pt", ".pth", ".bin"} and kind == "safetensors":
        notes.append(f"named {suffix} but is a safetensors file; read as one")
    if kind == "safetensors":
        wf = _read_safetensors(path, size)
    else:
        wf = _read_pickle(path, kind)
    wf.notes[:0] = notes
    return wf


def _describe_bad_safetensors(path: Path, size: int) -> str:
    if size < 8:
        return "not a valid safetensors file: shorter than its 8-byte header length"
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
    if n > size - 8:
        return f"not a valid safetensors file: its header claims {n} bytes but the file has {size - 8} (truncated or corrupt)"
    return "not a valid safetensors file: the header is not JSON"


def _read_safetensors(path: Path, size: int) -> WeightFile:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8:
            raise VaeLoadError(
                f"not a valid safetensors file: its header claims {n} bytes but only {size - 8} follow "
                "(truncated or corrupt)",
                path,
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise VaeLoadError("not a valid safetensors file: the header is not valid JSON", path) from None
    if not isinstance(header, dict):
        raise VaeLoadError("not a valid safetensors file: the header is not a JSON object", path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        metadata = {}
    data_len = size - 8 - n
    spans = []
    for key, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError
                count *= d
            itemsize = _SAFETENSORS_DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError):
            raise VaeLoadError(f"not a valid safetensors file: entry '{key}' is malformed", path) from None
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_len):
            raise VaeLoadError(
                f"not a valid safetensors file: tensor '{key}' points outside the file (truncated or corrupt)", path
            )
        if end - start != count * itemsize:
            raise VaeLoadError(
                f"not a valid safetensors file: tensor '{key}' has {end - start} bytes for shape {shape}", path
            )
        spans.append((start, end, key))
    spans.sort()
    for (_s0, e0, k0), (s1, _e1, k1) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise VaeLoadError(f"not a valid safetensors file: tensors '{k0}' and '{k1}' overlap", path)
    covered = sum(e - s for s, e, _ in spans)
    if covered != data_len:
        extra = data_len - (spans[-1][1] if spans else 0)
        what = f"{extra} bytes of unexpected data after the last tensor" if extra > 0 else "gaps between its tensors"
        raise VaeLoadError(f"not a valid safetensors file: it has {what} (corrupt or tampered with)", path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise VaeLoadError(f"not a valid safetensors file ({one_line(exc)})", path) from None
    return WeightFile(tensors, "safetensors", {str(k): str(v) for k, v in metadata.items()})


_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _read_pickle(path: Path, kind: str) -> WeightFile:
    if kind == "zip-pickle":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            raise VaeLoadError("the checkpoint archive is truncated or corrupt", path) from None
        if not any(n.endswith("data.pkl") for n in names):
            raise VaeLoadError("a zip archive that is not a PyTorch checkpoint", path)
    try:
        if path.suffix.lower() == ".safetensors":  # torch.load would dispatch on the name; give it bytes
            with open(path, "rb") as fh:
                obj = torch.load(fh, map_location="cpu", weights_only=True)
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=kind == "zip-pickle")
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        m = _GLOBAL_RE.search(msg)
        what = f" ({m.group(1)})" if m else ""
        raise UnsafeFileError(
            f"refused: the file needs Python objects{what} that could run code when loaded; only plain "
            "tensors are loaded (convert it to .safetensors with a trusted tool)",
            path,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error, zipfile.BadZipFile, AttributeError) as exc:
        raise VaeLoadError(f"the checkpoint is truncated or corrupt ({one_line(exc)})", path) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types on corrupt pickles
        raise VaeLoadError(f"the checkpoint could not be read ({one_line(exc, with_type=True)})", path) from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> WeightFile:
    notes: list[str] = []
    outer: list[str] = []
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                notes.append(f"weights taken from the '{wrapper}' entry")
                outer = sorted(str(k) for k in obj if k != wrapper)
                obj = inner
                break
    if not isinstance(obj, dict):
        raise VaeLoadError(f"the checkpoint holds a {type(obj).__name__}, not a dictionary of weights", path)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    dropped = outer + sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not tensors:
        raise VaeLoadError("the checkpoint holds no tensors", path)
    return WeightFile(tensors, "pickle", {}, notes, dropped)


def check_finite(tensors: dict[str, torch.Tensor], label: str) -> None:
    """Refuse weights with NaN or Inf: they would only ever decode to garbage."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise VaeLoadError(f"refused: {len(bad)} weight tensors contain NaN or Inf (e.g. {bad[0]})", label)


#: The weight files a diffusers model folder may hold, in the order they are looked for.
FOLDER_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)


def folder_weights_path(folder: Path, label: str) -> Path:
    """The weights file of a diffusers model folder."""
    weights = next((folder / n for n in FOLDER_WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise VaeLoadError("the folder has a config.json but no weights file (diffusion_pytorch_model.safetensors)", label)
    return weights


def read_folder_weights(folder: Path, label: str) -> WeightFile:
    return read_weight_file(folder_weights_path(folder, label))
