"""HunyuanVideo's VAE: its layouts, a 9-frame clip (whole) and a 21-frame clip (diffusers' temporal tiles,
two of them, blended) encoded (mean) and decoded equal to diffusers' own AutoencoderKLHunyuanVideo.encode /
decode within 1e-5, the model space the HunyuanVideo I2V pipeline's own latent code, frames as each tile is
final, cancellation, inspect-vae and broken files.

No pretrained weights are reachable here: a tiny random AutoencoderKLHunyuanVideo (the real diffusers class,
16 latent channels at 8x, 4x in time) is written in each layout, so the loading code is the one real files take."""

from __future__ import annotations

import json
import types

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
    pixels,
    save_hub_repo,
    state,
)
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.sources import load_vae

WIDTHS = (32, 32, 64, 64)  # four levels as the real VAE (8x), group norms of 32 as its shipped config


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(3)
    return perturbed(AutoencoderKLHunyuanVideo(block_out_channels=WIDTHS, layers_per_block=1), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "HunyuanVideo" / "vae")
        return tmp_path / "HunyuanVideo"
    if layout == "comfyui-file":  # ComfyUI's repackaged file and Tencent's original: diffusers' key names
        save_file(sd, str(tmp_path / "hunyuan_video_vae_bf16.safetensors"))
        return tmp_path / "hunyuan_video_vae_bf16.safetensors"
    if layout == "original-pt":  # Tencent's pytorch_model.pt, under a vae. prefix here
        torch.save({f"vae.{k}": v for k, v in sd.items()}, tmp_path / "pytorch_model.pt")
        return tmp_path / "pytorch_model.pt"
    raise AssertionError(layout)


def reference(m, x: np.ndarray):
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mean = m.encode(video).latent_dist.mean
        out = m.decode(mean).sample
    return mean[0], (out[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "comfyui-file", "original-pt"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["kind"], d["temporal_downscale"]) == (
        "hunyuan-video", "hunyuan-video", "video", 4)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (16, 8, pytest.approx(0.476986))


@pytest.mark.parametrize("frames, chunks", [(9, [(0, 9)]), (21, [(0, 13), (13, 21)])])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, model, sd, frames, chunks):
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    x = clip(frames)
    mean, ref = reference(model, x)  # 21 frames: diffusers' own frame-wise (temporally tiled) encode and decode
    enc = vae.encode_clip(x)
    assert enc.raw.shape == (16, (frames - 1) // 4 + 1, 4, 4) and enc.chunks == chunks
    close(enc.raw, mean)
    close(enc.latent, mean * model.config.scaling_factor)
    dec = vae.decode_clip(enc.latent, 32, 32)
    assert dec.complete and dec.frames.shape == (frames, 32, 32, 3) and dec.chunks == chunks
    close(dec.frames, ref)
    parts = list(vae.iter_decode_clip(enc.latent, 32, 32))
    assert [(s, s + len(p)) for s, p in parts] == chunks


def test_model_space_is_the_i2v_pipelines_image_latent(tmp_path, model, sd):
    """HunyuanVideoImageToVideoPipeline.prepare_latents encodes the image (argmax) and scales it: our
    model-space latent of that image is its image_latents."""
    from diffusers import HunyuanVideoImageToVideoPipeline

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(32, 48, seed=3)
    pipe = types.SimpleNamespace(vae=model, vae_scale_factor_temporal=4, vae_scale_factor_spatial=8,
                                 vae_scaling_factor=model.config.scaling_factor)
    with torch.no_grad():
        _, image_latents = HunyuanVideoImageToVideoPipeline.prepare_latents(
            pipe, as_input(x), 1, 16, 32, 48, 1, torch.float32, torch.device("cpu"), image_condition_type="token_replace")
    close(vae.encode(x).latent, image_latents[0, :, 0])
    close(vae.encode_clip(x[None]).latent[:, 0], image_latents[0, :, 0])


def test_trimmed_to_one_plus_4k_frames(tmp_path, model, sd):
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    assert [vae.frames_valid(n) for n in (1, 4, 5, 8, 17, 20)] == [1, 1, 5, 5, 17, 17]
    enc = vae.encode_clip(clip(7))
    assert enc.frames == 5 and "trimmed 7 frames to 5 (this VAE takes 1 + 4k frames)" in enc.notes


def test_cancel_keeps_the_frames_of_the_finished_tiles(tmp_path, model, sd):
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    enc = vae.encode_clip(clip(21))
    whole = vae.decode_clip(enc.latent, 32, 32).frames
    steps = []
    dec = vae.decode_clip(enc.latent, 32, 32, progress=lambda i, n: steps.append(i), should_stop=lambda: len(steps) >= 1)
    assert not dec.complete and dec.chunks == [(0, 13)]
    np.testing.assert_array_equal(dec.frames, whole[:13])


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "hunyuanvideo-community/HunyuanVideo", "vae")
    assert_weights(load_from_hub(tmp_path, "hunyuanvideo-community/HunyuanVideo"), sd)


def test_inspect_vae_json_says_kind_and_temporal_downscale(tmp_path, capsys, model, sd):
    path = write("comfyui-file", model, sd, tmp_path)
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["kind"], info["temporal_downscale"]) == ("hunyuan-video", "video", 4)


def test_latent_to_rgb_factors_are_comfyuis():
    from vaestudio.core.families import latent_rgb_factors

    factors, bias = latent_rgb_factors("hunyuan-video")
    assert len(factors) == 16 and factors[12] == [-0.2315, -0.1920, -0.1355] and bias == [0.0259, -0.0192, -0.0761]


def test_broken_files_give_one_sentence(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, sd, "decoder.conv_in.conv.weight", rgb_image, capsys, name="hunyuan_video")


def test_clip_tiles_are_the_model_on_each_tile(tmp_path):
    """21 frames: each of diffusers' temporal tiles tiled spatially (a narrower model whose folder sets its
    group norms, to keep this fast)."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(4)
    perturbed(AutoencoderKLHunyuanVideo(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4),
              0.03).save_pretrained(tmp_path / "vae")
    assert_clip_tiles(load_vae(tmp_path / "vae"), clip(21, 32, 48, seed=7))
