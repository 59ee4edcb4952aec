"""``vaestudio finetune``: fine-tune a VAE's decoder (or all of it) on your own images.

Runs as one process, or one per device under ``torchrun --nproc_per_node=N -m vaestudio finetune ...``
(rank 0 alone prints and writes). Exit codes: 0 finished (skipped images included); 2 usage (bad
options, an output folder that cannot be written or holds another run, nothing to train on); 3 the
training diverged (the last good checkpoint is kept) or no image could be read; 4 the VAE could not
be loaded or cannot be fine-tuned yet; 1 anything else (a checkpoint that could not be written:
the previous one is kept); 130 interrupted (the last checkpoint is kept: --resume continues).
"""

from __future__ import annotations

import json
import sys

from vaestudio.cli.common import EXIT_IMAGE, EXIT_OK, err, report

ORDER = 38


def add_parser(sub) -> None:
    f = sub.add_parser(
        "finetune", help="fine-tune a VAE on your images (decoder only by default; torchrun for many GPUs)",
        description="Fine-tune a VAE on your own images. --part decoder keeps the latent space, so the result "
                    "drops in for the diffusion model. Under torchrun, one process per device.")
    f.add_argument("data", nargs="+", metavar="DATA", help="image files, folders (recursive) or .txt lists of paths")
    f.add_argument("--vae", required=True, metavar="SOURCE", help="the VAE to start from (file, folder, hub id)")
    f.add_argument("--out", required=True, metavar="DIR", help="output folder")
    f.add_argument("--part", default="decoder", choices=["decoder", "all"],
                   help="decoder (default: the encoder and latent space stay) or all (with the KL term: the latent "
                        "space changes)")
    f.add_argument("--steps", type=int, default=1000, metavar="N", help="optimizer steps (default 1000)")
    f.add_argument("--batch", type=int, default=4, metavar="B", help="images per step, over all processes (default 4)")
    f.add_argument("--size", type=int, default=256, metavar="N", help="random NxN crops, with flips (default 256)")
    f.add_argument("--lr", type=float, default=1e-5, metavar="LR", help="Adam learning rate (default 1e-5)")
    f.add_argument("--loss", default="l1", metavar="LIST",
                   help="comma-separated from l1, lpips, kl, each optionally NAME=WEIGHT (default l1; kl 1e-6)")
    f.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an EMA copy (e.g. 0.999); it is what is exported")
    f.add_argument("--val", default="0.05", metavar="FRACTION|DIR",
                   help="held-out share, by a fixed hash of each path (default 0.05), or a folder of held-out images")
    f.add_argument("--every", type=int, default=100, metavar="N",
                   help="validate and write a checkpoint every N steps (default 100)")
    f.add_argument("--seed", type=int, default=0, metavar="S", help="data order, crops and flips (default 0)")
    f.add_argument("--resume", action="store_true", help="continue from DIR's checkpoint (the same data order)")
    f.add_argument("--json", action="store_true", help="one JSON line per validation, and one at the end")
    f.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (under torchrun: cuda:LOCAL_RANK)")
    f.add_argument("--family", default=None, help="override the detected family")
    f.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="mixed precision (autocast); auto: bf16 on a GPU that has it, else fp32")
    f.add_argument("--checkpointing", default="auto", choices=["auto", "on", "off"],
                   help="gradient checkpointing where diffusers offers it (auto: on a GPU)")
    f.set_defaults(handler=run)


def run(args) -> int:
    from vaestudio.core.evaluate.dist import env_rank
    from vaestudio.core.finetune.options import (
        Checkpointed,
        FinetuneError,
        FinetuneOptions,
        Finished,
        Skipped,
        Started,
        StepDone,
        Stopped,
        Validated,
        parse_losses,
    )
    from vaestudio.core.finetune.run import finetune

    lead = env_rank() == 0
    try:
        opts = FinetuneOptions(list(args.data), args.vae, args.out, part=args.part, steps=args.steps,
                               batch=args.batch, size=args.size, lr=args.lr, losses=parse_losses(args.loss),
                               ema=args.ema, val=args.val, every=args.every, seed=args.seed, resume=args.resume,
                               device=args.device, precision=args.precision, checkpointing=args.checkpointing,
                               family=args.family)
        opts.validate()
    except FinetuneError as exc:
        return report(exc, args.debug) if lead else exc.exit_code
    code = EXIT_OK
    try:
        for ev in finetune(opts):
            if not lead:
                continue
            if isinstance(ev, Started):
                what = f"resuming at step {ev.step} of {ev.steps}" if ev.step else f"{ev.steps} steps"
                procs = f" on {ev.world_size} processes" if ev.world_size > 1 else ""
                print(f"fine-tuning the {ev.part} of the {ev.architecture} VAE ({ev.family}): {ev.train_images} training "
                      f"images, {ev.val_images} held out, {what}{procs}", file=sys.stderr, flush=True)
                for n in ev.notes:
                    print(f"note: {n}", file=sys.stderr, flush=True)
            elif isinstance(ev, Skipped):
                err(ev.path, f"{ev.reason}; skipped")
            elif isinstance(ev, StepDone):
                if sys.stderr.isatty():
                    print(f"\rstep {ev.step}  loss {ev.loss:.5f}  {ev.samples_per_s:.2f} img/s\033[K", end="",
                          file=sys.stderr, flush=True)
            elif isinstance(ev, Validated):
                _show_validation(ev, args.json)
            elif isinstance(ev, Checkpointed):
                if args.json:
                    print(json.dumps({"event": "checkpoint", "step": ev.step, "path": ev.path}), flush=True)
            elif isinstance(ev, Stopped):
                err(None, ev.message)
                code = EXIT_IMAGE if ev.reason == "diverged" else 130
            elif isinstance(ev, Finished):
                if args.json:
                    print(json.dumps({"event": "finished", "step": ev.step, "outputs": ev.outputs}), flush=True)
                else:
                    print(f"finished {ev.step} steps: {ev.outputs[0]}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        err(None, "interrupted; the last checkpoint is kept (--resume continues)")
        return 130
    except Exception as exc:  # noqa: BLE001 - one line and the error's exit code; said once under torchrun
        if getattr(exc, "quiet", False):
            return getattr(exc, "exit_code", 1)
        return report(exc, args.debug)
    return code


def _show_validation(ev, as_json: bool) -> None:
    if as_json:
        print(json.dumps(ev.to_dict()), flush=True)
        return

    def fmt(m) -> str:
        if not m:
            return "-"
        parts = [f"PSNR {m['psnr']:.2f} dB" if m.get("psnr") is not None else "PSNR -",
                 f"SSIM {m['ssim']:.4f}" if m.get("ssim") is not None else "SSIM -"]
        if m.get("lpips") is not None:
            parts.append(f"LPIPS {m['lpips']:.4f}")
        return ", ".join(parts)

    ema = f" | EMA {fmt(ev.ema)}" if ev.ema is not None else ""
    loss = f"loss {ev.train_loss:.5f}  " if ev.train_loss is not None else ""
    line = f"step {ev.step}: {loss}held-out {fmt(ev.current)}{ema} | base {fmt(ev.base)}"
    print(f"\r{line}\033[K" if sys.stderr.isatty() else line, file=sys.stderr, flush=True)
