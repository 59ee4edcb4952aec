"""The fine-tuning loop: ``finetune(options)`` is a generator of events (``options``'s Started,
StepDone, Skipped, Validated, Checkpointed, Finished, Stopped).

One process, or one per device under ``torchrun`` (``evaluate.dist.Dist``: gloo on the CPU, NCCL on
CUDA): the model is wrapped in DistributedDataParallel, rank ``r`` reads the samples ``j`` of the
global batch with ``j % world_size == r`` (the batch must divide evenly, so averaging the ranks'
gradients is the global batch's gradient), and rank 0 alone validates and writes; the others wait.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import torch

from vaestudio.core.errors import VaeLoadError
from vaestudio.core.evaluate.dist import Dist
from vaestudio.core.files import write_atomic
from vaestudio.core.finetune import data as fdata
from vaestudio.core.finetune import state as fstate
from vaestudio.core.finetune.model import Losses, Trainable, autocast_dtype, enable_checkpointing
from vaestudio.core.finetune.options import (
    SUPPORTED,
    Checkpointed,
    FinetuneError,
    FinetuneOptions,
    Finished,
    Skipped,
    Started,
    StepDone,
    Stopped,
)
from vaestudio.core.finetune.validate import pictures, validate, validation_event

CSV_COLUMNS = ("step", "train_loss", "psnr", "ssim", "lpips", "ema_psnr", "ema_ssim", "ema_lpips",
               "base_psnr", "base_ssim", "base_lpips", "seconds")


def source_hash(info, source: str) -> str:
    """sha256 of the base VAE's weight files (a folder: its config.json and weights, sorted); "" for a hub id."""
    from vaestudio.core.filetypes import WEIGHT_SUFFIXES

    p = Path(source).expanduser()
    files = [p] if p.is_file() else []
    if p.is_file() and info.architecture == "taesd":
        from vaestudio.core.archs.taesd.layouts import sibling

        files += [s] if (s := sibling(p)) is not None else []
    elif p.is_dir():
        sub = p / "vae" if not (p / "config.json").is_file() and (p / "vae").is_dir() else p
        files = sorted(f for f in sub.iterdir() if f.is_file() and (f.suffix.lower() in WEIGHT_SUFFIXES or f.name == "config.json"))
    if not files:  # a Hugging Face id: the cache's files are not named by the source
        return ""
    h = hashlib.sha256()
    for f in sorted(files):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def check_out(out: Path) -> None:
    """Refuse an output folder that cannot be written, before any training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / ".vaestudio-write-test", b"")
        (out / ".vaestudio-write-test").unlink()
    except OSError as exc:
        raise FinetuneError(f"the output folder cannot be written ({exc.strerror or exc})", out) from None


def load_base(opts: FinetuneOptions, device: str | None):
    from vaestudio.core.sources import build_vae, prepare_source

    prepared = prepare_source(opts.source, family=opts.family)
    if prepared.architecture not in SUPPORTED:
        raise VaeLoadError(f"a {prepared.architecture} VAE cannot be fine-tuned yet (only {', '.join(SUPPORTED)})",
                           opts.source)
    return build_vae(prepared, device=device, dtype="fp32")


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    write_atomic(path, buf.getvalue())


def sample_noise(shape: tuple[int, ...], seed: int, g: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(fdata._mix(seed, g, 0x9015E))
    return torch.randn(shape, generator=gen)


def finetune(opts: FinetuneOptions, should_stop: Callable[[], bool] | None = None) -> Iterator:
    """Fine-tune ``opts.source`` on ``opts.data``; see the module docstring."""
    opts.validate()
    with Dist.from_env(opts.device) as dist:
        yield from _run(opts, dist, should_stop)


class _Session(SimpleNamespace):
    """What the loop works with, made by ``_setup`` on every rank."""


def _agree_started(dist: Dist, failure: BaseException | None) -> None:
    """Every rank learns which ranks could not start, so all stop together; rank 0 alone says why when it
    failed too (the others' errors are then ``quiet``)."""
    if not dist.active:
        if failure is not None:
            raise failure
        return
    flags = torch.zeros(dist.world_size, dtype=torch.float64)
    flags[dist.rank] = 0.0 if failure is None else 1.0
    flags = dist.all_reduce_(flags)
    if not bool(flags.any()):
        return
    if failure is None:
        failure = FinetuneError("another process of the run could not start (its error says why)")
        failure.quiet = dist.rank != 0 or bool(flags[0])
    elif dist.rank != 0 and bool(flags[0]):
        failure.quiet = True  # rank 0 says it
    raise failure


def _run(opts: FinetuneOptions, dist: Dist, should_stop) -> Iterator:
    try:
        s, failure = _setup(opts, dist), None
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank after they agree
        s, failure = None, exc
    _agree_started(dist, failure)
    s.module = s.trainable
    if dist.active:  # after every rank started: DDP's first broadcast is a collective
        from torch.nn.parallel import DistributedDataParallel

        dev = s.device
        s.module = DistributedDataParallel(s.trainable, device_ids=[dev.index] if dev.type == "cuda" else None,
                                           broadcast_buffers=False)
    yield from _loop(opts, dist, s, should_stop)


def _setup(opts: FinetuneOptions, dist: Dist) -> _Session:
    out = Path(opts.out).expanduser()
    lead = dist.rank == 0
    if opts.batch % dist.world_size:
        raise FinetuneError(f"--batch {opts.batch} does not divide among {dist.world_size} processes")
    if lead:
        check_out(out)
    ckpt = out / fstate.CHECKPOINT
    if ckpt.exists() and not opts.resume:
        raise FinetuneError("the output folder holds a fine-tune's checkpoint already; resume it or choose "
                            "another output folder", out)
    if opts.resume and not ckpt.is_file():
        raise FinetuneError("there is no checkpoint to resume in the output folder", out)
    split = fdata.split_data(opts.data, opts.val)
    vae = load_base(opts, dist.device or opts.device)
    device = vae.device
    notes: list[str] = []
    if vae.info.family_guessed:
        notes.append(f"family {vae.info.family}: {vae.info.family_reason}")
    if opts.part == "all":
        notes.append("--part all trains the encoder too: the latent space changes, so a diffusion model trained on "
                     "the base VAE's latents no longer matches it exactly")
    trainable = Trainable(vae, opts.part)
    losses = dict(opts.losses)
    if opts.part == "all" and trainable.has_logvar and "kl" not in losses:
        losses["kl"] = 1e-6
        notes.append("the KL term (weight 1e-06) is added: --part all trains the encoder")
    if "kl" in losses and not trainable.has_logvar:
        losses.pop("kl")
        notes.append("a tiny autoencoder has no log-variance: no KL term")
    loss_fn = Losses(losses, device)
    if (n := enable_checkpointing(vae.model, opts.checkpointing, device)) is not None:
        notes.append(n)
    amp = autocast_dtype(opts.precision, device)
    if amp is not None:
        notes.append(f"mixed precision: {str(amp).removeprefix('torch.')} autocast")
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    params = trainable.trained()
    optimizer = torch.optim.Adam([p for _, p in params], lr=opts.lr)
    ema = fstate.Ema(params, opts.ema) if opts.ema is not None else None
    base_hash = source_hash(vae.info, opts.source)
    protocol = {**opts.protocol(), "losses": losses, "base_sha256": base_hash}
    src = fdata.ImageSource()
    val_images: list[torch.Tensor] = []
    bad_val: list[str] = []
    base_metrics = gallery_base = None
    if lead:
        val_images, bad_val = fdata.validation_images(src, split.val, opts.size)
        if not split.val:
            notes.append("no held-out images (raise --val or give a --val folder): no validation metrics")
        base_metrics = validate(trainable, val_images, loss_fn, opts.batch) if val_images else None
        gallery_base = pictures(trainable, val_images[: opts.gallery]) if opts.gallery and val_images else None
    progress = fstate.Progress()
    if opts.resume:
        tensors, meta = fstate.load(ckpt)
        theirs = fstate.protocol_of(meta)
        differ = [k for k in protocol if k != "steps" and theirs.get(k) != protocol[k]]
        if differ:
            raise FinetuneError(f"the checkpoint was made with another {differ[0]} ({theirs.get(differ[0])!r}); "
                                "resume with the same options, or choose another output folder", out)
        progress = fstate.restore(tensors, meta, params, optimizer, ema, ckpt)
        src.failed.update(progress.skipped)
    return _Session(out=out, lead=lead, ckpt=ckpt, split=split, vae=vae, device=device, notes=notes,
                    trainable=trainable, losses=losses, loss_fn=loss_fn, amp=amp, scaler=scaler, params=params,
                    optimizer=optimizer, ema=ema, base_hash=base_hash, protocol=protocol, src=src,
                    val_images=val_images, bad_val=bad_val if lead else [], base_metrics=base_metrics,
                    gallery_base=gallery_base, progress=progress)


def _loop(opts: FinetuneOptions, dist: Dist, s: _Session, should_stop) -> Iterator:
    out, lead, ckpt, split, vae, device, notes = s.out, s.lead, s.ckpt, s.split, s.vae, s.device, s.notes
    trainable, losses, loss_fn, amp, scaler, params = s.trainable, s.losses, s.loss_fn, s.amp, s.scaler, s.params
    optimizer, ema, base_hash, protocol, src = s.optimizer, s.ema, s.base_hash, s.protocol, s.src
    val_images, base_metrics, progress, module = s.val_images, s.base_metrics, s.progress, s.module
    for p in s.bad_val:
        yield Skipped(p, src.failed[p])
    yield Started(progress.step, opts.steps, len(split.train), len(val_images), vae.architecture, vae.info.family,
                  opts.part, dist.world_size, notes)
    share = list(range(dist.rank, opts.batch, dist.world_size))
    while progress.step < opts.steps:
        if should_stop is not None and should_stop():
            if lead:
                fstate.save(ckpt, params, optimizer, ema, progress, protocol)
            yield Stopped("stopped", f"stopped at step {progress.step}; the checkpoint is kept (resume to continue)",
                          progress.step)
            return
        t0 = time.perf_counter()
        first = progress.step * opts.batch
        crops = []
        for j in share:
            x, failed = fdata.training_sample(src, split.train, opts.seed, first + j, opts.size)
            for p in failed:
                if p not in progress.skipped:
                    progress.skipped[p] = src.failed[p]
                    yield Skipped(p, src.failed[p])
            crops.append(x)
        x = torch.stack(crops).to(device)
        noise = None
        if opts.part == "all" and trainable.has_logvar:
            shape = trainable.latent_shape(x)
            noise = torch.stack([sample_noise(shape, opts.seed, first + j) for j in share]).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            recon, kl = module(x, noise)
            loss, terms = loss_fn(recon, x, kl)
        total = dist.all_reduce_(torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64))
        mean_loss = float(total[0] / total[1])
        if not math.isfinite(mean_loss):
            kept = "the last good checkpoint is kept" if ckpt.is_file() else "no checkpoint had been written yet"
            yield Stopped("diverged", f"the loss became {mean_loss} at step {progress.step + 1}; training stopped and "
                                      f"{kept} (try a lower --lr)", progress.step)
            return
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update()
        progress.step += 1
        progress.loss_sum += mean_loss
        progress.loss_count += 1
        dt = time.perf_counter() - t0
        progress.seconds += dt
        yield StepDone(progress.step, mean_loss, terms, len(share) * dist.world_size / max(dt, 1e-9))
        if progress.step % opts.every == 0 or progress.step == opts.steps:
            if lead:
                event = validation_event(trainable, val_images, loss_fn, opts.batch, ema, base_metrics, progress,
                                         s.gallery_base)
                write_metrics_csv(out / "metrics.csv", progress.history)
                if event is not None:
                    yield event
                fstate.save(ckpt, params, optimizer, ema, progress, protocol)
                yield Checkpointed(progress.step, str(ckpt))
            dist.barrier()
    outputs: list[str] = []
    if lead:
        from vaestudio.core.finetune.export import write_outputs

        meta = {"base_vae": opts.source, "base_sha256": base_hash, "architecture": vae.architecture,
                "family": vae.info.family, "part": opts.part, "steps": str(progress.step),
                "data": json.dumps(opts.data), "losses": json.dumps(losses), "batch": str(opts.batch),
                "size": str(opts.size), "lr": repr(opts.lr), "ema": "" if opts.ema is None else repr(opts.ema),
                "weights": "ema" if ema is not None else "final"}
        if ema is not None:
            with ema.swapped():
                written = write_outputs(out, vae, meta)
        else:
            written = write_outputs(out, vae, meta)
        outputs = [str(p) for p in [*written, out / "metrics.csv", ckpt]]
    dist.barrier()
    yield Finished(progress.step, outputs, notes)
