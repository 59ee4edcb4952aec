"""Held-out metrics of a fine-tune: PSNR, SSIM and LPIPS (where its weights ship) of the current
weights, the EMA copy and the starting VAE, on the held-out images (each resized and centre-cropped
to ``--size``), reconstructed as in training (the latent mean); and, for a window, the pictures of
the first few (``pictures``: the base's once at the start, the current weights' at each validation)."""

from __future__ import annotations

import math

import numpy as np
import torch

from vaestudio.core.finetune.options import Gallery, Validated


@torch.no_grad()
def validate(trainable, images: list[torch.Tensor], losses, batch: int) -> dict[str, float | None]:
    """Mean PSNR (of the mean squared error per image), SSIM and LPIPS of reconstructions of ``images``."""
    from vaestudio.core.lpips import MIN_SIDE
    from vaestudio.core.metrics import lpips_status, pixel_errors, psnr_from_mse, ssim

    device = next(trainable.model.parameters()).device
    part, trainable.part = trainable.part, "decoder"  # the latent mean, no noise
    psnrs, ssims, lps = [], [], []
    try:
        for i in range(0, len(images), max(1, batch)):
            x = torch.stack(images[i : i + batch]).to(device)
            recon = trainable(x)[0].float().clamp(0.0, 1.0)
            e = pixel_errors(x.cpu(), recon.cpu())
            psnrs += [psnr_from_mse(float(m)) for m in e.mse]
            for a, b in zip(x.cpu(), recon.cpu(), strict=True):
                ssims.append(ssim(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()))
            if lpips_status() == "available" and min(x.shape[-2:]) >= MIN_SIDE:
                net = losses.lpips
                if net is None:
                    from vaestudio.core.lpips import model

                    net = model()
                    x, recon = x.cpu(), recon.cpu()
                lps += [float(v) for v in net(recon * 2 - 1, x * 2 - 1).reshape(-1)]
    finally:
        trainable.part = part
    finite = [p for p in psnrs if math.isfinite(p)]
    return {"psnr": round(float(np.mean(finite)), 6) if finite else None,
            "ssim": round(float(np.mean(ssims)), 6) if ssims else None,
            "lpips": round(float(np.mean(lps)), 6) if lps else None}


@torch.no_grad()
def pictures(trainable, images: list[torch.Tensor]) -> np.ndarray:
    """Reconstructions of ``images`` (the latent mean, as ``validate``) as (N, H, W, 3) float32 in [0, 1]."""
    device = next(trainable.model.parameters()).device
    part, trainable.part = trainable.part, "decoder"
    try:
        out = [trainable(x[None].to(device))[0].float().clamp(0.0, 1.0)[0].cpu() for x in images]
    finally:
        trainable.part = part
    return torch.stack(out).permute(0, 2, 3, 1).numpy() if out else np.zeros((0, 1, 1, 3), np.float32)


def validation_event(trainable, images, losses, batch, ema, base, progress,
                     gallery_base: np.ndarray | None = None) -> Validated | None:
    """Measure at this step, add the metrics.csv row to ``progress.history``, reset the running loss;
    with ``gallery_base`` (the base's ``pictures`` of the first held-out images) the event carries
    those images' pictures by the current weights too."""
    train_loss = progress.loss_sum / progress.loss_count if progress.loss_count else None
    row: dict = {"step": progress.step, "train_loss": None if train_loss is None else round(train_loss, 8),
                 "seconds": round(progress.seconds, 3)}
    event = None
    if images:
        current = validate(trainable, images, losses, batch)
        ema_m = None
        if ema is not None:
            with ema.swapped():
                ema_m = validate(trainable, images, losses, batch)
        for prefix, m in (("", current), ("ema_", ema_m or {}), ("base_", base or {})):
            for k, v in m.items():
                row[prefix + k] = v
        event = Validated(progress.step, row["train_loss"], current, ema_m, base or {})
        if gallery_base is not None and len(gallery_base):
            shown = images[: len(gallery_base)]
            event.gallery = Gallery(torch.stack(shown).permute(0, 2, 3, 1).numpy().astype(np.float32),
                                    gallery_base, pictures(trainable, shown))
    progress.history.append(row)
    progress.loss_sum, progress.loss_count = 0.0, 0
    return event
