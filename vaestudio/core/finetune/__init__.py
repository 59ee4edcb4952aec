"""Fine-tuning a VAE on one's own images (``vaestudio finetune``): a generator of events.

``run.finetune(options)`` yields ``Started``, ``StepDone`` after every step, ``Skipped`` for an image
that cannot be read, ``Validated`` and ``Checkpointed`` every ``every`` steps, and ``Finished`` (the
outputs written) or ``Stopped`` (diverged, or asked to stop); the CLI prints them and a window can
show them. The pieces:

- ``options``: what a run is (``FinetuneOptions``), the losses, and the events;
- ``data``: the training and held-out images, and the data order: global sample ``g`` (step ``s``,
  place ``j`` in the batch: ``g = s * batch + j``) is item ``perm_e[g % n]`` of the epoch's
  permutation (seeded by the seed and epoch ``g // n``), cropped and flipped by a generator seeded
  with ``(seed, g)``; so the order is a function of the step alone and a resumed run sees the same
  images, whatever stopped it;
- ``model``: the trainable torch module of a loaded VAE (``vae.model``) for autoencoder-kl, flux2
  and taesd, its frozen part, losses and gradient checkpointing;
- ``state``: the EMA copy and the checkpoint (model, optimizer, EMA, step, RNG state, history),
  one safetensors file written atomically;
- ``export``: vae.safetensors (or the tiny pair) in the source's layout, diffusers/, finetune.json;
- ``run``: the loop, DistributedDataParallel under torchrun (each rank reads its share of the global
  batch; rank 0 alone validates and writes).
"""
