"""The fine-tune's worker functions: the run (the core's generator) and the fine-tuned VAE for the
inspector (the exported file when the run finished, else the base with the checkpoint's weights)."""

from __future__ import annotations


def finetune_job(options, *, progress, should_stop):
    """``core.finetune.run.finetune``: it checks ``should_stop`` between steps and writes a checkpoint."""
    from vaestudio.core.finetune.run import finetune

    return (yield from finetune(options, should_stop=should_stop))


def tuned_vae_job(source, family, prefs, out, exported, *, progress, should_stop):
    """The fine-tune as a VAE: ``exported`` (its file) loaded, or, before the run has exported one,
    ``source`` loaded with the trained weights of ``out``'s checkpoint (the EMA copy where there is
    one, as the export takes); its ``info.source`` is then the checkpoint."""
    import dataclasses
    from pathlib import Path

    from vaestudio.core.errors import CheckpointError
    from vaestudio.core.finetune import state
    from vaestudio.ui.jobs import load_vae_job

    if exported:
        return load_vae_job(exported, family, prefs, progress=progress, should_stop=should_stop)
    ckpt = Path(out) / state.CHECKPOINT
    tensors, _meta = state.load(ckpt)
    vae = load_vae_job(source, family, prefs, progress=progress, should_stop=should_stop)
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
    trained = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = vae.model.state_dict()
    if not trained or any(k not in own or own[k].shape != v.shape for k, v in trained.items()):
        raise CheckpointError("the checkpoint does not hold this VAE's trained weights", ckpt)
    vae.model.load_state_dict(trained, strict=False)
    vae.info = dataclasses.replace(vae.info, source=str(ckpt))
    return vae
