"""A training session as the studio runs it: load the data, build or resume a trainer, train, and
stream what the window shows (Qt-free; the window's worker iterates it).

Step records are gathered and yielded at most twice a second, so plotting never slows training;
after each epoch the pictures (reconstructions, prior samples, a PCA of held-out latents) and a CPU
snapshot of the weights are yielded with the epoch's record. The session's return value is the
trainer, so that a stopped run can be continued by the next session.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from vaestudio.core.mnist.pictures import EpochPictures, epoch_pictures, pick_one_per_class
from vaestudio.core.mnist.train import EpochRecord, StepRecord, StopRecord, TrainConfig, Trainer


@dataclass
class Loaded:
    """The run is ready: what it trains and where it starts."""

    config: TrainConfig
    total_steps: int
    start_step: int
    description: str  # "mnist: 8000 training images, 2000 held out (...)"
    history: list[EpochRecord]
    class_digits: dict[int, np.ndarray] = field(default_factory=dict)  # a held-out example (784,) per class
    trainer: Trainer | None = None  # for requests the worker runs between batches (save, snapshot)


@dataclass
class Steps:
    records: list[StepRecord]


@dataclass
class Epoch:
    record: EpochRecord
    pictures: EpochPictures
    weights: dict[str, torch.Tensor]  # a CPU snapshot, safe to use while training goes on


def snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}


def studio_vae(spec: tuple[str, int, int], weights: dict[str, torch.Tensor]):
    """The studio's model (``spec``: architecture, hidden and latent size) as an inspector VAE."""
    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.pictures import model_from_snapshot

    arch, hidden, latent = spec
    return MnistVae.from_trained(model_from_snapshot(arch, hidden, latent, weights),
                                 f"MNIST VAE (studio, {arch} {hidden}-{latent})")


def training_session(*, config: TrainConfig, dataset: str, data_dir: str | None, download: bool, device: str,
                     trainer: Trainer | None = None, resume_path: str | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     should_pause: Callable[[], bool] | None = None,
                     ) -> Iterator[Loaded | Steps | Epoch | StopRecord]:
    """Train ``config`` (or continue ``trainer``, or the checkpoint at ``resume_path``)."""
    from vaestudio.core.mnist.data import load_dataset

    description = ""
    if trainer is None:
        def dl(_name: str, done: int, total: int | None) -> None:
            if progress is not None:
                progress(done, total or 0)

        data = load_dataset(dataset, data_dir, download=download, progress=dl, should_stop=should_stop)
        description = f"{data.name}: {len(data.train_x)} training images, {len(data.heldout_x)} held out ({data.split})"
        heldout_y = data.heldout_y
        if resume_path is not None:
            trainer = Trainer.resume(resume_path, data.train_x, data.heldout_x, device=device, heldout_y=heldout_y)
        else:
            trainer = Trainer(config, data.train_x, data.heldout_x, device=device, heldout_y=heldout_y)
    else:
        heldout_y = trainer.heldout_y
    trainer.config.epochs = max(trainer.config.epochs, config.epochs)
    batches = math.ceil(len(trainer.train_x) / trainer.config.batch_size)
    classes = {}
    if len(heldout_y):
        for i in pick_one_per_class(heldout_y):
            classes[int(heldout_y[i])] = trainer.heldout_x[i].cpu().numpy()
    yield Loaded(trainer.config, batches * trainer.config.epochs, trainer.progress.step, description,
                 list(trainer.history), classes, trainer)
    pending: list[StepRecord] = []
    last = time.monotonic()
    for rec in trainer.run(should_pause=should_pause, should_stop=should_stop):
        if isinstance(rec, StepRecord):
            pending.append(rec)
            if time.monotonic() - last > 0.5:  # 2 redraws a second: live, and cheap
                yield Steps(pending)
                pending, last = [], time.monotonic()
        elif isinstance(rec, EpochRecord):
            if pending:
                yield Steps(pending)
                pending = []
            pics = epoch_pictures(trainer.model, trainer.heldout_x, heldout_y, rec.epoch)
            yield Epoch(rec, pics, snapshot(trainer))
        else:
            if pending:
                yield Steps(pending)
                pending = []
            yield rec
    return trainer
