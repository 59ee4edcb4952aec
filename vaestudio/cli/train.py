"""``vaestudio train-mnist``: train the MNIST VAE from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaestudio.cli.common import EXIT_OTHER, output_folder, usage

ORDER = 40


def add_parser(sub) -> None:
    t = sub.add_parser("train-mnist", help="train the classic MNIST VAE (784-400-20, BCE + KL, Adam)")
    t.add_argument("--data", default=None, metavar="DIR",
                   help="folder with the IDX files (default: $VAESTUDIO_DATA or the user cache folder)")
    t.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    t.add_argument("--dataset", default="mnist", help="mnist, fashion, or a FOLDER of IDX files or images")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--latent-dim", type=int, default=20)
    t.add_argument("--hidden-dim", type=int, default=400)
    t.add_argument("--beta", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--arch", default="mlp", choices=["mlp", "conv"])
    t.add_argument("--holdout-fraction", type=float, default=0.2,
                   help="share held out when the data has no separate test set (default 0.2)")
    t.add_argument("--out", default=None, metavar="CKPT", help="checkpoint to write (after every epoch)")
    t.add_argument("--resume", default=None, metavar="CKPT", help="continue from a checkpoint")
    t.add_argument("--device", default="cpu")
    t.add_argument("--json", action="store_true", help="one JSON record per epoch")
    t.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vaestudio.core.mnist.data import load_dataset
    from vaestudio.core.mnist.train import EpochRecord, StopRecord, TrainConfig, Trainer

    if not 0 < args.holdout_fraction < 1:
        return usage("--holdout-fraction must be between 0 and 1")
    if args.out and Path(args.out).is_dir():
        return usage(f"--out {args.out} is a folder: name the checkpoint file to write")

    def show_download(name: str, done: int, total: int | None) -> None:
        if not args.json and total:
            print(f"\rdownloading {name}: {100 * done // total}%", end="", file=sys.stderr, flush=True)

    from vaestudio.core.errors import DatasetMissing, one_line

    try:
        data = load_dataset(args.dataset, args.data, download=args.download, holdout_fraction=args.holdout_fraction,
                            progress=show_download)
    except DatasetMissing as exc:
        exc.reason += "; run with --download or point --data at the IDX files"
        raise
    if args.out and not prepare_output(args.out):
        return EXIT_OTHER
    if args.resume:
        trainer = Trainer.resume(args.resume, data.train_x, data.heldout_x, device=args.device)
        trainer.config.epochs = max(trainer.config.epochs, args.epochs)
    else:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim,
                             hidden_dim=args.hidden_dim, beta=args.beta, seed=args.seed, arch=args.arch,
                             dataset=data.name)
        try:
            config.validate()
        except ValueError as exc:
            return usage(one_line(exc))
        trainer = Trainer(config, data.train_x, data.heldout_x, device=args.device)
    if not args.json:
        print(f"{data.name}: {len(data.train_x)} training images, {len(data.heldout_x)} held out ({data.split})",
              file=sys.stderr)
    for rec in trainer.run():
        if isinstance(rec, EpochRecord):
            if args.out:
                trainer.save(args.out)
            if args.json:
                print(json.dumps(rec.to_dict()), flush=True)
            else:
                print(f"epoch {rec.epoch:3d}  train {rec.train_loss:8.2f}  held-out {rec.heldout_loss:8.2f}  "
                      f"(recon {rec.recon:7.2f}, KL {rec.kl:6.2f})  {rec.seconds:5.2f}s  "
                      f"{rec.samples_per_s:8.0f} img/s", flush=True)
        elif isinstance(rec, StopRecord) and rec.reason == "diverged":
            print(f"error: {rec.message}", file=sys.stderr)
            return 1
    return 0


def prepare_output(out: str) -> bool:
    """Before the run: the checkpoint's folder made (as ``reconstruct`` makes its output folder) and
    the temporaries of a process killed mid-write tidied; False after an error line."""
    from vaestudio.core.mnist.train import clean_stale_temporaries

    checkpoint = Path(out).resolve()
    if output_folder(str(checkpoint.parent)) is None:
        return False
    clean_stale_temporaries(checkpoint)
    return True
