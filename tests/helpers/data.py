"""Test data written to disk: photos, MNIST-style IDX folders."""

from __future__ import annotations


def photo(tmp_path, name="photo.png", size=(40, 56), seed=0):
    """A small real PNG: gradients plus a little noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    arr = np.stack([xx / size[1], yy / size[0], rng.random(size) * 0.3], axis=2)
    p = tmp_path / name
    Image.fromarray((arr * 255).astype(np.uint8)).save(p)
    return p


def idx_bytes(arr) -> bytes:
    """An array as an IDX file's bytes (the MNIST format)."""
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.astype("uint8").tobytes()


def mnist_folder(tmp_path, n=600, seed=0, labels=True):
    """A folder with a gzipped IDX test set of random strokes (and labels 0..9)."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(seed)
    x = (rng.random((n, 28, 28)) > 0.8).astype(np.uint8) * 255
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
    if labels:
        (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(n) % 10)))
    return d, x
