"""CogVideoX's VAE: its layouts, a 17-frame clip encoded (mean) and decoded equal to diffusers' own
AutoencoderKLCogVideoX.encode / decode within 1e-5 (two batches each, so the causal cache is carried),
the model space CogVideoXPipeline's own latent code, trimming to 1 + 8k frames, cancellation, families,
inspect-vae and broken files.

No pretrained weights are reachable here: a tiny random AutoencoderKLCogVideoX (the real diffusers class,
16 latent channels at 8x, 4x in time) is written in each layout, so the loading code is the one real files take."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.archs import (
    as_input,
    assert_clip_tiles,
    assert_weights,
    check_broken,
    clip,
    close,
    load_from_hub,
    perturbed,
    pipeline_quiet,
    pixels,
    save_hub_repo,
    state,
    to_hwc,
)
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.archs.cogvideox import diffusers_to_original, original_to_diffusers
from vaestudio.core.sources import load_vae, prepare_source

WIDTHS = (32, 32, 64, 64)  # four levels as the real VAE (8x), group norms of 32 as its shipped config


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(3)
    return perturbed(AutoencoderKLCogVideoX(block_out_channels=WIDTHS, layers_per_block=1, latent_channels=16), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "CogVideoX-2b" / "vae")
        return tmp_path / "CogVideoX-2b"
    if layout == "comfyui-file":  # diffusers keys, as ComfyUI's CogVideoX loader reads them
        save_file(sd, str(tmp_path / "cogvideox_vae.safetensors"))
        return tmp_path / "cogvideox_vae.safetensors"
    if layout == "original-pth":  # the SAT file, with its loss weights
        orig = diffusers_to_original(sd)
        orig["loss.logvar"] = torch.zeros(())
        torch.save(orig, tmp_path / "3d-vae.pt")
        return tmp_path / "3d-vae.pt"
    raise AssertionError(layout)


def reference(m, x: np.ndarray):
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mean = m.encode(video).latent_dist.mean
        out = m.decode(mean).sample
    return mean[0], (out[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "comfyui-file", "original-pth"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["kind"], d["temporal_downscale"]) == ("cogvideox", "cogvideox", "video", 4)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (16, 8, pytest.approx(1.15258426))
    assert d["key_layout"] == ("original" if layout == "original-pth" else "diffusers")


def test_the_original_layout_is_the_conversion_scripts():
    """diffusers' script renames block. -> resnets., down. -> down_blocks., downsample -> downsamplers.0 and
    numbers decoder.up.N from the top (3 - N); our inverse writes those names and the converter reads them back."""
    from diffusers import AutoencoderKLCogVideoX

    sd = AutoencoderKLCogVideoX(block_out_channels=WIDTHS, layers_per_block=1).state_dict()
    orig = diffusers_to_original(sd)
    assert "decoder.up.0.block.0.conv1.conv.weight" in orig and "encoder.down.2.block.0.nin_shortcut.weight" in orig
    assert "encoder.mid.block_1.norm1.weight" in orig and "decoder.up.3.upsample.conv.weight" in orig
    assert torch.equal(orig["decoder.up.0.block.0.conv1.conv.weight"], sd["decoder.up_blocks.3.resnets.0.conv1.conv.weight"])
    assert set(original_to_diffusers(orig)) == set(sd)


@pytest.mark.parametrize("layout, frames", [("comfyui-file", 17), ("original-pth", 9)])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, model, sd, layout, frames):
    vae = load_vae(write(layout, model, sd, tmp_path))
    x = clip(frames)
    mean, ref = reference(model, x)
    steps = []
    enc = vae.encode_clip(x, progress=lambda i, n: steps.append((i, n)))
    chunks = [(0, 9), (9, 17)][: (frames - 1) // 8]
    assert enc.raw.shape == (16, (frames - 1) // 4 + 1, 4, 4) and enc.chunks == chunks
    assert steps == [(i + 1, len(chunks)) for i in range(len(chunks))]
    close(enc.raw, mean)
    close(enc.latent, mean * model.config.scaling_factor)
    dec = vae.decode_clip(enc.latent, 32, 32)
    assert dec.complete and dec.frames.shape == (frames, 32, 32, 3) and dec.chunks == chunks
    close(dec.frames, ref)
    parts = list(vae.iter_decode_clip(enc.latent, 32, 32))
    assert [(s, s + len(p)) for s, p in parts] == chunks


def test_model_space_decodes_as_the_cogvideox_pipeline_does(tmp_path, model, sd):
    from diffusers import CogVideoXPipeline

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    enc = vae.encode_clip(clip(9, seed=5))
    pipe = pipeline_quiet(CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=model, transformer=None,
                                            scheduler=None))
    with torch.no_grad():
        frames = pipe.decode_latents(enc.latent[None].permute(0, 2, 1, 3, 4))  # (B, F, C, H, W), as the pipeline
    want = (frames[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    close(vae.decode_clip(enc.latent, 32, 32).frames, want)


def test_trimmed_to_one_plus_8k_frames_with_a_note(tmp_path, model, sd):
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    assert [vae.frames_valid(n) for n in (1, 5, 8, 9, 13, 16, 17, 49, 81)] == [1, 1, 1, 9, 9, 9, 17, 49, 81]
    x = clip(12)
    enc = vae.encode_clip(x)
    assert enc.frames == 9 and enc.raw.shape[1] == 3
    assert any("trimmed 12 frames to 9 (this VAE takes 1 + 8k frames" in n for n in enc.notes), enc.notes
    assert vae.decode_clip(enc.latent, 32, 32).frames.shape[0] == 9


def test_an_image_is_a_one_frame_clip(tmp_path, model, sd):
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    x = pixels(32, 48, seed=2)
    with torch.no_grad():
        mean = model.encode(as_input(x)[:, :, None]).latent_dist.mean
        ref = to_hwc(model.decode(mean).sample[:, :, 0])
    enc = vae.encode(x)
    close(enc.raw, mean[0, :, 0])
    close(vae.decode(enc.latent, 32, 48).pixels, ref)


def test_cancel_mid_clip_keeps_the_decoded_frames(tmp_path, model, sd):
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    enc = vae.encode_clip(clip(17))
    whole = vae.decode_clip(enc.latent, 32, 32).frames
    steps = []
    dec = vae.decode_clip(enc.latent, 32, 32, progress=lambda i, n: steps.append(i), should_stop=lambda: len(steps) >= 1)
    assert not dec.complete and dec.chunks == [(0, 9)]
    np.testing.assert_array_equal(dec.frames, whole[:9])


def test_family_from_the_config_and_the_name(tmp_path, model, sd):
    from diffusers import AutoencoderKLCogVideoX

    five = AutoencoderKLCogVideoX(block_out_channels=WIDTHS, layers_per_block=1, scaling_factor=0.7)
    five.load_state_dict(sd)
    five.save_pretrained(tmp_path / "five" / "vae")
    info = load_vae(tmp_path / "five" / "vae").info
    assert (info.family, info.scaling_factor, info.family_guessed) == ("cogvideox1.5", 0.7, False)
    save_file(sd, str(tmp_path / "cogvideox1.5_vae.safetensors"))
    info = prepare_source(tmp_path / "cogvideox1.5_vae.safetensors").info
    assert (info.family, info.scaling_factor) == ("cogvideox1.5", 0.7)
    info = prepare_source(write("comfyui-file", model, sd, tmp_path)).info
    assert info.family == "cogvideox"


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "THUDM/CogVideoX-2b", "vae")
    assert_weights(load_from_hub(tmp_path, "THUDM/CogVideoX-2b"), sd)


def test_inspect_vae_json_says_kind_and_temporal_downscale(tmp_path, capsys, model, sd):
    path = write("comfyui-file", model, sd, tmp_path)
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["kind"], info["temporal_downscale"]) == ("cogvideox", "video", 4)


def test_broken_files_give_one_sentence(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, sd, "decoder.conv_in.conv.weight", rgb_image, capsys, name="cogvideox")


def test_clip_tiles_are_the_model_on_each_tile(tmp_path):
    """17 frames: two batches, so each tile's causal cache is carried from batch to batch (a narrower model
    whose folder sets its group norms, to keep this fast)."""
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(4)
    perturbed(AutoencoderKLCogVideoX(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4),
              0.03).save_pretrained(tmp_path / "vae")
    assert_clip_tiles(load_vae(tmp_path / "vae"), clip(17, 32, 48, seed=7))
