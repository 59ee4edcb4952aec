"""The EMA copy and the checkpoint of a fine-tune.

The checkpoint is one safetensors file (``checkpoint.safetensors`` in the output folder; loading it
never runs code) written atomically (``mnist.train.write_checkpoint``: temporary file, fsync,
replace; a full disk keeps the previous one): the trained parameters (the frozen rest is the base
VAE's, whose hash the protocol holds), the EMA copy, Adam's state, the torch RNG state, and as JSON
metadata the protocol, the step (the data order's position is ``step * batch``: the order is a
function of it), the running loss and the validation history.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vaestudio.core.errors import CheckpointError, VaeLoadError
from vaestudio.core.finetune.options import CHECKPOINT  # noqa: F401 - its name, here as fstate.CHECKPOINT
from vaestudio.core.mnist.train import clean_stale_temporaries, write_checkpoint

FORMAT_TAG = "vaestudio-finetune"
FORMAT_VERSION = "1"


class Ema:
    """An exponential moving average of the trained parameters (kept in fp32 on their device)."""

    def __init__(self, params: list[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.params = params
        self.shadow = {n: p.detach().float().clone() for n, p in params}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params:
            self.shadow[n].mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self):
        """The model holds the EMA weights inside the block, its own again after it."""
        saved = {n: p.detach().clone() for n, p in self.params}
        with torch.no_grad():
            for n, p in self.params:
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params:
                    p.copy_(saved[n])


@dataclass
class Progress:
    step: int = 0
    loss_sum: float = 0.0  # since the last validation
    loss_count: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)  # metrics.csv's rows
    skipped: dict[str, str] = field(default_factory=dict)


def save(path: Path, params, optimizer: torch.optim.Optimizer, ema: Ema | None, progress: Progress,
         protocol: dict) -> Path:
    tensors = {f"model.{n}": p.detach().cpu().contiguous() for n, p in params}
    if ema is not None:
        tensors.update({f"ema.{n}": v.detach().cpu().contiguous() for n, v in ema.shadow.items()})
    for pid, st in optimizer.state_dict()["state"].items():
        for name, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"optim.{pid}.{name}"] = t.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "vaestudio": FORMAT_TAG, "version": FORMAT_VERSION,
        "protocol": json.dumps(protocol, sort_keys=True),
        "progress": json.dumps({"step": progress.step, "samples": progress.step * int(protocol["batch"]), "loss_sum": progress.loss_sum,
                                "loss_count": progress.loss_count, "seconds": progress.seconds}),
        "history": json.dumps(progress.history),
        "skipped": json.dumps(progress.skipped),
        "param_groups": json.dumps(optimizer.state_dict()["param_groups"]),
    }
    clean_stale_temporaries(path)
    return write_checkpoint(path, tensors, meta)


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from vaestudio.core.weights import read_weight_file

    try:
        wf = read_weight_file(path)
    except VaeLoadError as exc:
        raise CheckpointError(exc.reason, path) from None
    if wf.metadata.get("vaestudio") != FORMAT_TAG:
        raise CheckpointError("not a vaestudio fine-tune checkpoint", path)
    for key in ("protocol", "progress", "param_groups"):
        if key not in wf.metadata:
            raise CheckpointError(f"the checkpoint lacks its '{key}' record", path)
    return wf.tensors, wf.metadata


def protocol_of(meta: dict[str, str]) -> dict:
    return json.loads(meta["protocol"])


def restore(tensors: dict[str, torch.Tensor], meta: dict[str, str], params, optimizer: torch.optim.Optimizer,
            ema: Ema | None, path: Path) -> Progress:
    """Put the checkpoint's weights, Adam state, EMA and RNG state back; its progress."""
    with torch.no_grad():
        for n, p in params:
            t = tensors.get(f"model.{n}")
            if t is None or t.shape != p.shape:
                raise CheckpointError(f"the checkpoint does not hold this VAE's trained weights ({n})", path)
            p.copy_(t)
            if ema is not None:
                ema.shadow[n].copy_(tensors.get(f"ema.{n}", t))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    device = params[0][1].device if params else torch.device("cpu")
    for st in state.values():
        for name, v in st.items():
            if name != "step":
                st[name] = v.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    p = json.loads(meta["progress"])
    return Progress(int(p["step"]), float(p["loss_sum"]), int(p["loss_count"]), float(p["seconds"]),
                    json.loads(meta.get("history", "[]")), json.loads(meta.get("skipped", "{}")))
