"""HunyuanVideo 1.5's VAE: its layouts (the original / ComfyUI keys as diffusers' conversion script names
them), a 9-frame clip encoded (mean) and decoded equal to diffusers' own AutoencoderKLHunyuanVideo15.encode /
decode within 1e-5, the model space the HunyuanVideo 1.5 I2V pipeline's own latent code, the config from
shapes, inspect-vae, latent-to-RGB factors and broken files.

No pretrained weights are reachable here: a tiny random AutoencoderKLHunyuanVideo15 (the real diffusers
class, 32 latent channels at 16x, 4x in time) is written in each layout, so the loading code is the one real
files take."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.archs import (
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
from PIL import Image
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.archs.hunyuan_video15 import diffusers_to_original, infer_config, original_to_diffusers
from vaestudio.core.sources import load_vae

WIDTHS = (8, 16, 16, 32, 64)  # five levels as the real VAE (16x), the last 2 x the latent channels


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKLHunyuanVideo15

    torch.manual_seed(3)
    return perturbed(AutoencoderKLHunyuanVideo15(block_out_channels=WIDTHS, layers_per_block=1, latent_channels=32), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "HunyuanVideo-1.5-Diffusers-480p_t2v" / "vae")
        return tmp_path / "HunyuanVideo-1.5-Diffusers-480p_t2v"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "hunyuanvideo15_vae_diffusers.safetensors"))
        return tmp_path / "hunyuanvideo15_vae_diffusers.safetensors"
    if layout == "comfyui-file":  # the original keys (tencent/HunyuanVideo-1.5 vae/, ComfyUI's file)
        save_file(diffusers_to_original(sd), str(tmp_path / "hunyuanvideo15_vae_fp16.safetensors"))
        return tmp_path / "hunyuanvideo15_vae_fp16.safetensors"
    raise AssertionError(layout)


def test_the_original_layout_is_the_conversion_scripts(sd):
    """The names convert_hunyuan_video_15_vae_checkpoint_to_diffusers pops, written out here by hand."""
    orig = diffusers_to_original(sd)
    for k in ("encoder.down.0.block.0.norm1.gamma", "encoder.down.0.block.0.conv1.conv.weight",
              "encoder.down.0.downsample.conv.conv.weight", "encoder.mid.block_1.norm1.gamma",
              "encoder.mid.attn_1.norm.gamma", "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.proj_out.bias",
              "encoder.norm_out.gamma", "encoder.conv_out.conv.weight", "decoder.conv_in.conv.weight",
              "decoder.mid.block_2.conv2.conv.bias", "decoder.up.0.block.1.norm2.gamma",
              "decoder.up.0.upsample.conv.conv.weight", "decoder.norm_out.gamma"):
        assert k in orig, k
    assert len(orig) == len(sd) and set(original_to_diffusers(orig)) == set(sd)
    assert torch.equal(orig["decoder.up.0.block.1.norm2.gamma"], sd["decoder.up_blocks.0.resnets.1.norm2.gamma"])


def test_config_from_shapes(sd):
    cfg = infer_config(sd, "x")
    assert cfg["block_out_channels"] == list(WIDTHS) and cfg["layers_per_block"] == 1
    assert (cfg["latent_channels"], cfg["spatial_compression_ratio"], cfg["temporal_compression_ratio"]) == (32, 16, 4)


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "diffusers-file", "comfyui-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["kind"], d["temporal_downscale"]) == (
        "hunyuan-video-15", "hunyuan-video-15", "video", 4)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (32, 16, pytest.approx(1.03682))
    assert d["key_layout"] == ("original" if layout == "comfyui-file" else "diffusers")


@pytest.mark.parametrize("layout", ["diffusers-folder", "comfyui-file"])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    x = clip(9)
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mean = model.encode(video).latent_dist.mean[0]
        ref = (model.decode(mean[None]).sample[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    enc = vae.encode_clip(x)
    assert enc.raw.shape == (32, 3, 2, 2) and enc.chunks == [(0, 9)]
    close(enc.raw, mean)
    close(enc.latent, mean * model.config.scaling_factor)
    dec = vae.decode_clip(enc.latent, 32, 32)
    assert dec.complete and dec.frames.shape == (9, 32, 32, 3)
    close(dec.frames, ref)
    assert [vae.frames_valid(n) for n in (1, 4, 5, 10)] == [1, 1, 5, 9]


def test_model_space_is_the_i2v_pipelines_image_latent(tmp_path, model, sd):
    """HunyuanVideo15ImageToVideoPipeline._get_image_latents: the image encoded (argmax) and scaled."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5_image2video import (
        HunyuanVideo15ImageToVideoPipeline,
    )

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    img = Image.fromarray((pixels(32, 48, seed=3) * 255).round().astype(np.uint8))
    with torch.no_grad():
        want = HunyuanVideo15ImageToVideoPipeline._get_image_latents(
            model, HunyuanVideo15ImageProcessor(vae_scale_factor=16), img, 32, 48, torch.device("cpu"))
    close(vae.encode(np.asarray(img, dtype=np.float32) / 255).latent, want[0, :, 0])


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v", "vae")
    assert_weights(load_from_hub(tmp_path, "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v"), sd)


def test_inspect_vae_json_says_kind_and_temporal_downscale(tmp_path, capsys, model, sd):
    path = write("comfyui-file", model, sd, tmp_path)
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["kind"], info["temporal_downscale"]) == ("hunyuan-video-15", "video", 4)


def test_latent_to_rgb_factors_are_comfyuis():
    from vaestudio.core.families import latent_rgb_factors

    factors, bias = latent_rgb_factors("hunyuan-video-15")
    assert len(factors) == 32 and factors[9] == [0.0393, 0.0944, 0.1131] and bias == [0.0456, -0.0202, -0.0644]


def test_broken_files_give_one_sentence(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, diffusers_to_original(sd), "decoder.conv_in.conv.weight", rgb_image, capsys,
                 name="hunyuanvideo15")


def test_clip_tiles_are_the_model_on_each_tile(tmp_path, model, sd):
    """A 16x VAE on 32x48 frames with 32 px tiles overlapping by 16: latent columns 0 and 2 are one tile's
    own, column 1 their blend (each tile the whole clip)."""
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    vae.encode_tile, vae.tile_overlap = 32, 16
    x = clip(5, 32, 48, seed=7)
    tiled = vae.encode_clip(x, tile="on")
    left, right = vae.encode_clip(x[:, :, :32], tile="off").raw, vae.encode_clip(x[:, :, 16:], tile="off").raw
    assert tiled.tiled and tiled.raw.shape == (32, 2, 2, 3)
    close(tiled.raw[..., 0], left[..., 0])
    close(tiled.raw[..., 2], right[..., 1])
    close(tiled.raw[..., 1], (left[..., 1] + right[..., 0]) / 2)  # one shared latent column, half each
    dec = vae.decode_clip(tiled.latent, 32, 48, tile="on")
    a = vae.decode_clip(tiled.latent[..., :2], 32, 32, tile="off").frames
    b = vae.decode_clip(tiled.latent[..., 1:], 32, 32, tile="off").frames
    assert dec.tiled and dec.frames.shape == (5, 32, 48, 3)
    close(dec.frames[:, :, :16], a[:, :, :16])
    close(dec.frames[:, :, 32:], b[:, :, 16:])
