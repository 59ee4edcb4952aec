"""A real fine-tune: the published taef2 weights (../shared/data/weights), a few decoder steps on crops of two
shared photos lower the L1 (mean absolute error) of their reconstructions, and the output pair loads back as
taef2 (family flux2) with its encoder untouched."""

from __future__ import annotations

import numpy as np
import torch
from conftest import SHARED, SHARED_IMAGES, needs_shared
from PIL import Image

from vaestudio.core.finetune.options import FinetuneOptions, Finished, Validated
from vaestudio.core.finetune.run import finetune
from vaestudio.core.images import load_image
from vaestudio.core.pipeline import reconstruct
from vaestudio.core.sources import load_vae

WEIGHTS = SHARED / "data" / "weights"
pytestmark = [needs_shared(WEIGHTS / "taef2_encoder.pth"), needs_shared(SHARED_IMAGES / "chelsea.png")]


def test_taef2_decoder_steps_lower_l1_on_shared_photos(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(tmp_path)
    finally:
        torch.set_num_threads(before)


def _run(tmp_path):
    for folder in ("train", "val"):
        (tmp_path / folder).mkdir()
    for name in ("chelsea.png", "coffee.png"):
        im = Image.open(SHARED_IMAGES / name).convert("RGB")
        im = im.resize((im.width // 3, im.height // 3), Image.BICUBIC)  # ~150x100: a few fast steps
        im.save(tmp_path / "train" / name)
        im.save(tmp_path / "val" / name)
    src = WEIGHTS / "taef2_encoder.pth"
    opts = FinetuneOptions([str(tmp_path / "train")], str(src), str(tmp_path / "out"), steps=8, batch=2, size=64,
                           lr=1e-5, every=8, val=str(tmp_path / "val"), seed=0)
    events = list(finetune(opts))
    assert isinstance(events[-1], Finished) and events[0].family == "flux2"
    val = [e for e in events if isinstance(e, Validated)][-1]
    assert val.current["psnr"] > val.base["psnr"]

    out = tmp_path / "out"
    base, tuned = load_vae(src), load_vae(out / "taef2_finetune_decoder.pth")
    assert (tuned.info.architecture, tuned.info.family, tuned.info.format) == ("taesd", "flux2", "pair")
    enc_a, enc_b = base.model.encoder.state_dict(), tuned.model.encoder.state_dict()
    assert all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)
    maes = {}
    for name in ("chelsea.png", "coffee.png"):
        img = load_image(tmp_path / "train" / name)
        maes[name] = [reconstruct(v, img).metrics.mae for v in (base, tuned)]
    print(maes)
    assert all(after < before for before, after in maes.values()), maes
    assert np.mean([b - a for b, a in maes.values()]) > 0
