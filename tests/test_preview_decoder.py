"""Full-size previews from a tiny decoder (Preferences > Preview decoder), in the real window."""

from __future__ import annotations

import numpy as np
import torch
from helpers.data import photo

from vaestudio.core.archs.taesd import make_decoder


def tiny_decoders(folder, names=("taesd", "taef1")):
    folder.mkdir(exist_ok=True)
    for name in names:
        torch.manual_seed(0)
        torch.save(make_decoder(16 if name == "taef1" else 4, "sd").state_dict(), folder / f"{name}_decoder.pth")
    return folder


def slow_decodes(ins):
    ins.session.prefs.tile = "on"
    ins.session.vae.encode_tile, ins.session.vae.tile_overlap = 32, 16


def test_the_tiny_decoder_of_the_vae_family_previews_at_full_size(qtbot, win, tmp_path, vae_dir):
    ins = win.inspector
    ins.session.prefs.preview_decoder = str(tiny_decoders(tmp_path / "vae_approx"))
    ins.session.load_vae(str(vae_dir))  # an SD1 VAE: taesd_decoder.pth is its family's
    qtbot.waitUntil(lambda: ins.session.preview_vae is not None, timeout=30000)
    assert ins.session.preview_vae.info.source.endswith("taesd_decoder.pth")
    slow_decodes(ins)
    titles = []
    ins.compare.reconstruction.title.setText = lambda t, *a, _orig=ins.compare.reconstruction.title.setText, **k: (
        titles.append(t), _orig(t, *a, **k))
    win.open_images([str(photo(tmp_path, size=(96, 128)))])
    qtbot.waitUntil(lambda: ins.session.result is not None, timeout=60000)
    # right after the encode, while the full decoder worked: a full-size picture from the tiny decoder
    assert any(t.startswith("Preview (tiny decoder, clean)") for t in titles), titles
    assert titles[-1] == "Reconstruction"  # replaced when the full result arrived
    assert ins.compare.reconstruction.data.shape == (96, 128, 3)
    titles.clear()
    ins.noise.timestep.setChecked(True)
    ins.noise.slider.setValue(500)
    qtbot.waitUntil(lambda: any(t.startswith("Preview (tiny decoder, t = 500") for t in titles), timeout=30000)
    qtbot.waitUntil(lambda: ins.session.result.noise is not None, timeout=60000)
    assert ins.compare.reconstruction.title.text.startswith("Noised: timestep 500")


def test_without_a_matching_tiny_decoder_the_preview_is_latent_to_rgb(qtbot, win, tmp_path, vae_dir):
    ins = win.inspector
    ins.session.prefs.preview_decoder = str(tiny_decoders(tmp_path / "vae_approx", names=("taef1",)))  # FLUX.1 only
    ins.session.load_vae(str(vae_dir))
    qtbot.waitUntil(lambda: ins.session.vae is not None, timeout=30000)
    win.open_images([str(photo(tmp_path))])
    qtbot.waitUntil(lambda: ins.session.result is not None and "preview_vae" not in win.runner.running, timeout=30000)
    assert ins.session.preview_vae is None  # the folder has no decoder of this family
    slow_decodes(ins)
    ins.noise.strength.setChecked(True)
    ins.noise.slider.setValue(400)
    qtbot.waitUntil(lambda: ins.compare.reconstruction.title.text.startswith("Preview (latent-to-RGB"), timeout=20000)
    assert ins.compare.reconstruction.data.shape == (40, 56, 3)  # enlarged to the image size
    qtbot.waitUntil(lambda: ins.session.result.noise is not None, timeout=60000)
    assert not np.isnan(ins.compare.reconstruction.data).any()
