"""Training the MNIST VAE as a generator of records, with exact pause/stop/resume.

``Trainer.run()`` yields a ``StepRecord`` after every batch and an ``EpochRecord`` after every
epoch; the caller (the CLI, or a Qt worker) decides what to do with them. Pausing and stopping
happen at batch boundaries. A checkpoint holds everything needed to continue bit-for-bit: weights,
Adam state, epoch, step, the position inside the epoch, the running sums and both RNG states. It is
one safetensors file (tensors plus JSON metadata), so loading it never runs code, and it is
written atomically: temporary file, flush, fsync, replace.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vaestudio.core.errors import CheckpointError, one_line
from vaestudio.core.files import write_atomic
from vaestudio.core.mnist.model import VAE, loss_terms, make_model

FORMAT_TAG = "mnist-vae"
FORMAT_VERSION = "1"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 20
    hidden_dim: int = 400
    beta: float = 1.0
    seed: int = 1
    arch: str = "mlp"
    dataset: str = "mnist"

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.latent_dim < 1 or self.hidden_dim < 1:
            raise ValueError("epochs, batch size, latent and hidden size must be positive")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError("learning rate must be > 0 and beta >= 0")


@dataclass
class StepRecord:
    epoch: int
    step: int  # global step (batches seen)
    loss: float  # nats per image, this batch
    recon: float
    kl: float
    samples_per_s: float


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float  # nats per image
    heldout_loss: float
    recon: float
    kl: float
    heldout_recon: float
    heldout_kl: float
    seconds: float
    samples_per_s: float
    step: int = 0

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class StopRecord:
    reason: str  # "stopped", "diverged", "finished"
    message: str = ""


@dataclass
class _Progress:
    epoch: int = 1  # the epoch in progress (1-based)
    batch: int = 0  # batches done inside it
    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # loss, recon, kl, images
    seconds: float = 0.0


class Trainer:
    """Train a VAE on (N, 784) float images; see the module docstring."""

    def __init__(self, config: TrainConfig, train_x: np.ndarray | torch.Tensor,
                 heldout_x: np.ndarray | torch.Tensor, device: str = "cpu", heldout_y: np.ndarray | None = None) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.train_x = torch.as_tensor(train_x, dtype=torch.float32).reshape(-1, 784).to(self.device)
        self.heldout_x = torch.as_tensor(heldout_x, dtype=torch.float32).reshape(-1, 784).to(self.device)
        self.heldout_y = np.zeros(0, np.int64) if heldout_y is None else np.asarray(heldout_y)  # labels, for pictures
        torch.manual_seed(config.seed)
        self.model: VAE = make_model(config.arch, config.hidden_dim, config.latent_dim).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.epoch_shuffle_state = self.shuffle.get_state()
        self.rng_state = torch.get_rng_state()
        self.progress = _Progress()
        self.history: list[EpochRecord] = []

    # -- the loop -------------------------------------------------------------------------------
    def run(self, should_pause: Callable[[], bool] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[StepRecord | EpochRecord | StopRecord]:
        """Train until the configured number of epochs, yielding records as it goes."""
        cfg, p, model = self.config, self.progress, self.model
        n = len(self.train_x)
        torch.set_rng_state(self.rng_state)
        while p.epoch <= cfg.epochs:
            # epoch_shuffle_state is always the state that draws this epoch's order, so a resumed
            # run (at any batch) regenerates exactly the same order
            self.shuffle.set_state(self.epoch_shuffle_state)
            perm = torch.randperm(n, generator=self.shuffle).to(self.device)
            batches = math.ceil(n / cfg.batch_size)
            model.train()
            t_epoch = time.perf_counter()
            while p.batch < batches:
                if should_stop is not None and should_stop():
                    yield StopRecord("stopped", f"stopped at epoch {p.epoch}, batch {p.batch}")
                    return
                while should_pause is not None and should_pause():
                    time.sleep(0.02)
                    if should_stop is not None and should_stop():
                        break
                t0 = time.perf_counter()
                idx = perm[p.batch * cfg.batch_size : (p.batch + 1) * cfg.batch_size]
                x = self.train_x[idx]
                self.optimizer.zero_grad(set_to_none=True)
                recon, mu, logvar = model(x)
                try:
                    loss, bce, kld = loss_terms(recon, x, mu, logvar, cfg.beta)
                    lv, bv, kv = loss.item(), bce.item(), kld.item()
                except RuntimeError:  # BCE refuses NaN probabilities: the model has diverged
                    if bool(torch.isfinite(recon).all()):
                        raise
                    lv = bv = kv = float("nan")
                if not (math.isfinite(lv) and math.isfinite(bv) and math.isfinite(kv)):
                    self.rng_state = torch.get_rng_state()
                    yield StopRecord("diverged", f"the loss became {lv} at epoch {p.epoch}, step {p.step + 1}; "
                                                 "training stopped and the last good checkpoint was kept "
                                                 "(try a lower learning rate)")
                    return
                loss.backward()
                self.optimizer.step()
                m = len(idx)
                p.batch += 1
                p.step += 1
                s = p.sums
                s[0] += lv
                s[1] += bv
                s[2] += kv
                s[3] += m
                dt = time.perf_counter() - t0
                # the consumer may draw random numbers between steps; keep ours untouched
                self.rng_state = torch.get_rng_state()
                yield StepRecord(p.epoch, p.step, lv / m, bv / m, kv / m, m / max(dt, 1e-9))
                torch.set_rng_state(self.rng_state)
            p.seconds += time.perf_counter() - t_epoch
            held = self.evaluate()
            s = p.sums
            rec = EpochRecord(p.epoch, s[0] / s[3], held[0], s[1] / s[3], s[2] / s[3], held[1], held[2],
                              p.seconds, s[3] / max(p.seconds, 1e-9), p.step)
            self.history.append(rec)
            self.epoch_shuffle_state = self.shuffle.get_state()
            p.epoch += 1
            p.batch = 0
            p.sums = [0.0, 0.0, 0.0, 0.0]
            p.seconds = 0.0
            self.rng_state = torch.get_rng_state()
            yield rec
            torch.set_rng_state(self.rng_state)
        yield StopRecord("finished", f"finished {cfg.epochs} epochs")

    @torch.inference_mode()
    def evaluate(self, batch_size: int = 1000) -> tuple[float, float, float]:
        """Held-out negative ELBO (loss, recon, kl) in nats per image.

        Like the seed's test loop it decodes a sample of q(z|x), but from a generator of its own
        (seeded) so that evaluating never changes the training run's random numbers.
        """
        model = self.model.eval()
        gen = torch.Generator().manual_seed(self.config.seed + 1_000_003)
        tot = [0.0, 0.0, 0.0]
        for i in range(0, len(self.heldout_x), batch_size):
            x = self.heldout_x[i : i + batch_size]
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen).to(mu.device)
            loss, bce, kld = loss_terms(model.decode(z), x, mu, logvar, self.config.beta)
            tot[0] += loss.item()
            tot[1] += bce.item()
            tot[2] += kld.item()
        n = max(1, len(self.heldout_x))
        model.train()
        return tot[0] / n, tot[1] / n, tot[2] / n

    # -- checkpoints ----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, st in opt["state"].items():
            for name, val in st.items():
                out[f"optim.{pid}.{name}"] = torch.as_tensor(val).detach().cpu().clone().reshape(
                    val.shape if torch.is_tensor(val) else ())
        out["rng.torch"] = self.rng_state.clone()
        out["rng.epoch_shuffle"] = self.epoch_shuffle_state.clone()
        return out

    def metadata(self) -> dict[str, str]:
        p = self.progress
        return {
            "vaestudio": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "config": json.dumps(asdict(self.config)),
            "progress": json.dumps({"epoch": p.epoch, "batch": p.batch, "step": p.step, "sums": p.sums,
                                    "seconds": p.seconds}),
            "history": json.dumps([asdict(r) for r in self.history]),
            "param_groups": json.dumps(self.optimizer.state_dict()["param_groups"]),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint atomically; the previous file survives any failure."""
        return write_checkpoint(path, self.state_tensors(), self.metadata())

    @classmethod
    def resume(cls, path: str | os.PathLike, train_x, heldout_x, device: str = "cpu",
               heldout_y: np.ndarray | None = None) -> Trainer:
        tensors, meta = read_checkpoint(path)
        config = TrainConfig(**json.loads(meta["config"]))
        tr = cls(config, train_x, heldout_x, device=device, heldout_y=heldout_y)
        tr.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        groups = json.loads(meta["param_groups"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        tr.optimizer.load_state_dict({"state": state, "param_groups": groups})
        tr.rng_state = tensors["rng.torch"].clone()
        tr.epoch_shuffle_state = tensors["rng.epoch_shuffle"].clone()
        p = json.loads(meta["progress"])
        tr.progress = _Progress(p["epoch"], p["batch"], p["step"], list(p["sums"]), p["seconds"])
        tr.history = [EpochRecord(**r) for r in json.loads(meta.get("history", "[]"))]
        return tr


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Atomic safetensors write: temporary file in the same folder, fsync, then replace."""
    from safetensors.torch import save

    path = Path(path)
    try:
        write_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))
    except OSError as exc:
        kept = "; the previous one is kept" if path.is_file() else ""
        raise CheckpointError(f"could not write the checkpoint ({exc.strerror or one_line(exc)}){kept}", path) from None
    return path


#: a temporary untouched this long is stale whoever wrote it (a checkpoint write takes seconds)
STALE_AFTER_S = 3600.0


def clean_stale_temporaries(checkpoint: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``checkpoint`` that a process killed mid-write left behind.

    Only this checkpoint's temporaries (``core.files.temporary_name``: ``.<name>.<pid>-<thread>.tmp``)
    are looked at, never another file's. One is removed when its writer is no longer a running
    process here, or when it has not been touched for ``STALE_AFTER_S`` (the writer's pid was reused,
    after a reboot, or the folder is shared with another machine); a live process's write in progress
    is kept. Where a process cannot be asked about (Windows), only the age counts.
    """
    checkpoint = Path(checkpoint)
    pattern = re.compile(rf"\.{re.escape(checkpoint.name)}\.(\d+)-\d+\.tmp")
    removed = []
    now = time.time()
    for p in checkpoint.parent.glob(f".{glob.escape(checkpoint.name)}.*.tmp"):
        m = pattern.fullmatch(p.name)
        if m is None:
            continue
        try:
            age = now - p.stat().st_mtime
        except OSError:  # gone already: its writer finished
            continue
        if age > STALE_AFTER_S or _process_gone(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs on this machine; False when it does or cannot be known."""
    if os.name != "posix":
        return False  # os.kill(pid, 0) would end the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's process, or not a pid
        return False
    return False


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from vaestudio.core.errors import VaeLoadError
    from vaestudio.core.weights import read_weight_file

    try:
        wf = read_weight_file(path)
    except VaeLoadError as exc:
        raise CheckpointError(exc.reason, path) from None
    if wf.metadata.get("vaestudio") != FORMAT_TAG:
        raise CheckpointError("not a vaestudio MNIST checkpoint", path)
    for key in ("config", "progress", "param_groups"):
        if key not in wf.metadata:
            raise CheckpointError(f"the checkpoint lacks its '{key}' record", path)
    return wf.tensors, wf.metadata
