"""The MNIST studio's worker functions: the training session, checkpoints, latent exploration."""

from __future__ import annotations


def session_job(*, should_pause, **kwargs):
    """The core's training session; a missing dataset is explained in the window's own terms."""
    from vaestudio.core.errors import DatasetMissing
    from vaestudio.core.mnist.session import training_session

    try:
        return (yield from training_session(should_pause=should_pause, **kwargs))
    except DatasetMissing as exc:
        exc.reason += "; choose 'download if missing' under Data, or Browse to the folder with the IDX files"
        raise


def save_job(trainer, path, *, progress, should_stop):
    return trainer.save(path)


def explore_job(what, spec, weights, arg, *, progress, should_stop):
    from vaestudio.core.mnist.pictures import interpolation, model_from_snapshot, traversal

    model = model_from_snapshot(*spec, weights)
    if what == "interpolate":
        import torch

        a, b = arg
        return interpolation(model, torch.from_numpy(a), torch.from_numpy(b))
    return traversal(model, arg)


def as_value(fn):
    """``fn()``, or the exception it raised (handed back to the UI thread as a value)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - handed back to the UI as a value
        return exc


def read_checkpoint_job(path, *, progress, should_stop):
    import json

    from vaestudio.core.mnist.train import EpochRecord, TrainConfig, read_checkpoint

    tensors, meta = read_checkpoint(path)
    config = TrainConfig(**json.loads(meta["config"]))
    history = [EpochRecord(**r) for r in json.loads(meta.get("history", "[]"))]
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    step = int(json.loads(meta["progress"])["step"])
    return config, history, weights, step
