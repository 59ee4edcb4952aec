"""MNIST-style data: IDX files (gz or raw), downloads from the standard mirrors, image folders.

Split rule: when a folder holds both the training and the test files, the official test set is
held out; when it holds only one set (say only the 10,000 test images), the last
``holdout_fraction`` of it in file order is held out.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaestudio.core.errors import Cancelled, DataError, DatasetMissing, DownloadError, one_line
from vaestudio.core.files import replace

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# md5 of the .gz files as published (the same sums torchvision checks)
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"],
    "fashion": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """Images as float32 (N, 784) in [0, 1] with integer labels (-1 when unknown)."""

    train_x: np.ndarray
    train_y: np.ndarray
    heldout_x: np.ndarray
    heldout_y: np.ndarray
    name: str
    split: str  # how the held-out set was chosen


def default_data_dir() -> Path:
    """``$VAESTUDIO_DATA``, else the user's cache folder (e.g. ~/.cache/vaestudio/datasets)."""
    env = os.environ.get("VAESTUDIO_DATA")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vaestudio")) / "datasets"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (raw or .gz). Raises DataError for truncated or malformed files."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"could not read the IDX file ({one_line(exc)})", path) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError("not an IDX file (wrong magic number)", path)
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError("the IDX header is truncated", path)
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(shape, dtype=np.int64))
    need = 4 + 4 * ndim + count * dtype.itemsize
    if len(raw) < need:
        raise DataError(f"the IDX file is truncated ({len(raw)} of {need} bytes)", path)
    return np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _images(path: Path) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 3 or arr.shape[1:] != (28, 28):
        raise DataError(f"expected 28x28 images, got shape {arr.shape}", path)
    return (arr.reshape(len(arr), 784).astype(np.float32) / 255.0)


def _labels(path: Path | None, n: int) -> np.ndarray:
    if path is None:
        return np.full(n, -1, dtype=np.int64)
    arr = read_idx(path).astype(np.int64)
    if arr.shape != (n,):
        raise DataError(f"{arr.shape[0] if arr.ndim else 0} labels for {n} images", path)
    return arr


def load_idx_folder(folder: str | os.PathLike, *, holdout_fraction: float = 0.2, name: str = "mnist") -> Dataset:
    """Load MNIST-format IDX files from a folder (see the module docstring for the split)."""
    folder = Path(folder)
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout fraction must be between 0 and 1")
    tr = _find(folder, FILES["train_images"])
    te = _find(folder, FILES["test_images"])
    if tr is not None and te is not None:
        tx, vx = _images(tr), _images(te)
        ty, vy = _labels(_find(folder, FILES["train_labels"]), len(tx)), _labels(_find(folder, FILES["test_labels"]), len(vx))
        return Dataset(tx, ty, vx, vy, name, "official test set held out")
    only = tr or te
    if only is None:
        raise DatasetMissing(f"no {name} data here (expected train-images-idx3-ubyte[.gz] or "
                             "t10k-images-idx3-ubyte[.gz])", folder)
    x = _images(only)
    y = _labels(_find(folder, FILES["train_labels" if only is tr else "test_labels"]), len(x))
    cut = len(x) - int(round(len(x) * holdout_fraction))
    if cut <= 0 or cut >= len(x):
        raise DataError("too few images to hold some out", folder)
    return Dataset(x[:cut], y[:cut], x[cut:], y[cut:], name,
                   f"images 0-{cut - 1} train, {cut}-{len(x) - 1} held out")


def as_digit(grey: np.ndarray) -> tuple[np.ndarray, bool]:
    """A grey 28x28 image as MNIST digits are: light on a dark background. Returns (digit, inverted)."""
    inverted = bool(grey.mean() > 0.5)
    return (1.0 - grey if inverted else grey), inverted


def load_image_folder(folder: str | os.PathLike, *, holdout_fraction: float = 0.2) -> Dataset:
    """Any folder of images as a dataset: grey, resized to 28x28; sub-folder names become labels."""
    from PIL import Image

    from vaestudio.core.filetypes import IMAGE_SUFFIXES

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise DataError("the folder holds fewer than two images", folder)
    xs, ys = [], []
    for p in files:
        try:
            with Image.open(p) as im:
                im.draft("L", (28, 28))
                g = np.asarray(im.convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32) / 255.0
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        xs.append(as_digit(g)[0].reshape(784))
        label = p.parent.name if p.parent != folder else ""
        ys.append(int(label) if label.isdigit() else -1)
    if len(xs) < 2:
        raise DataError("none of the images in the folder could be read", folder)
    x, y = np.stack(xs), np.asarray(ys, np.int64)
    cut = len(x) - max(1, int(round(len(x) * holdout_fraction)))
    return Dataset(x[:cut], y[:cut], x[cut:], y[cut:], folder.name, "last images in name order held out")


def download_dataset(dataset: str, folder: str | os.PathLike, *, mirrors: list[str] | None = None,
                     progress: Callable[[str, int, int | None], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, timeout: float = 15.0,
                     checksums: dict[str, str] | None = None) -> Path:
    """Download MNIST or Fashion-MNIST into ``folder``, verifying checksums.

    Files already present with the right checksum are kept. A partial or corrupt download never
    stays behind: data goes to a temporary file that replaces the target only once verified.
    """
    if dataset not in CHECKSUMS:
        raise ValueError(f"unknown dataset '{dataset}' (mnist or fashion)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    env = os.environ.get("VAESTUDIO_MNIST_MIRROR")
    urls = mirrors or ([env] if env else MIRRORS[dataset])
    for name, md5 in (checksums or CHECKSUMS[dataset]).items():
        target = folder / name
        if target.is_file() and _md5(target) == md5:
            continue
        errors = []
        for base in urls:
            try:
                _fetch(base.rstrip("/") + "/" + name, target, md5, timeout, progress, should_stop)
                break
            except DownloadError as exc:
                errors.append(exc.reason)
        else:
            raise DownloadError(f"could not download {name}: {'; '.join(errors)}", folder)
    return folder


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, target: Path, md5: str, timeout: float, progress, should_stop) -> None:
    tmp = target.with_name(f".{target.name}.part")
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while True:
                if should_stop is not None and should_stop():
                    raise Cancelled("download cancelled")
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(target.name, done, total)
            if total is not None and done != total:
                raise DownloadError(f"the connection closed after {done} of {total} bytes")
        if h.hexdigest() != md5:
            raise DownloadError(f"checksum mismatch for {target.name} (got md5 {h.hexdigest()}, expected {md5})")
        replace(tmp, target)  # retried while the target is held open (Windows)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)  # URLError wraps the socket error
        text = one_line(reason) if isinstance(reason, BaseException) else str(reason)
        raise DownloadError(f"cannot reach {url} ({text}; offline?)") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_dataset(dataset: str = "mnist", data_dir: str | os.PathLike | None = None, *, download: bool = False,
                 holdout_fraction: float = 0.2, progress=None, should_stop=None) -> Dataset:
    """Resolve ``mnist``, ``fashion`` or a folder (of IDX files or of images) to a Dataset."""
    if dataset not in ("mnist", "fashion"):
        folder = Path(dataset)
        if not folder.is_dir():
            raise DataError("not a folder, and not 'mnist' or 'fashion'", dataset)
        if _find(folder, FILES["train_images"]) or _find(folder, FILES["test_images"]):
            return load_idx_folder(folder, holdout_fraction=holdout_fraction, name=folder.name)
        return load_image_folder(folder, holdout_fraction=holdout_fraction)
    base = Path(data_dir) if data_dir else default_data_dir()
    # --data may point at the IDX files themselves or at a root with mnist/ and fashion/ inside
    folder = base if (_find(base, FILES["train_images"]) or _find(base, FILES["test_images"])) else base / dataset
    if download and not (_find(folder, FILES["train_images"]) and _find(folder, FILES["test_images"])):
        download_dataset(dataset, folder, progress=progress, should_stop=should_stop)
    if not folder.is_dir():
        raise DatasetMissing(f"no {dataset} data here (the folder does not exist)", folder)
    return load_idx_folder(folder, holdout_fraction=holdout_fraction, name=dataset)
