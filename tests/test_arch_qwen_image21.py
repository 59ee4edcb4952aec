"""Qwen-Image 2.1's VAE: its layouts, equality with diffusers' AutoencoderKLQwenImage21 and with
QwenImage21Pipeline's own latent code, the RGBA input, noise, tiling and broken files.

No pretrained weights are reachable here: a tiny random AutoencoderKLQwenImage21 (the real diffusers class,
64 latent channels at 16x, RGBA in and out) is written in each layout users download."""

from __future__ import annotations

import json
import re
import types

import pytest
import torch
from helpers.archs import (
    as_input,
    assert_weights,
    check_broken,
    close,
    load_from_hub,
    perturbed,
    pixels,
    save_hub_repo,
    state,
    to_hwc,
)
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.noise import add_noise
from vaestudio.core.sources import load_vae, prepare_source

MEAN, STD = [0.03 * (i - 32) for i in range(64)], [0.5 + 0.05 * (i % 8) for i in range(64)]
# ComfyUI's Wan VAE modules that are causal 3D convolutions (5-D weights there): stems, residual convs,
# shortcuts, the head, the quant convs and the temporal resamplers; resample.1 and attention are 2D
_CAUSAL = re.compile(r"(^(encoder|decoder)\.conv1\.|^conv[12]\.|\.residual\.[26]\.|\.shortcut\.|\.head\.2\.|"
                     r"\.time_conv\.)weight$")


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKLQwenImage21

    torch.manual_seed(5)
    return perturbed(AutoencoderKLQwenImage21(base_dim=8, decoder_base_dim=12, z_dim=64, dim_mult=[1, 2, 4, 8, 8],
                                              num_res_blocks=1, latents_mean=MEAN, latents_std=STD), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def comfyui_keys(sd, five_d=True):
    """The weights as ComfyUI's file holds them: Wan 2.2's original nested names, and each causal
    convolution as a 5-D weight with one temporal tap (``five_d``; else stored 2D, as some exports do)."""
    from vaestudio.core.archs._wan_layout import diffusers_to_original

    return {k: v[:, :, None].contiguous() if five_d and _CAUSAL.search(k) else v
            for k, v in diffusers_to_original(sd).items()}


def write(layout: str, model, sd, tmp_path):
    if layout == "comfyui-file":
        save_file(comfyui_keys(sd), str(tmp_path / "qwen_image_2.1_vae_bf16.safetensors"))
        return tmp_path / "qwen_image_2.1_vae_bf16.safetensors"
    if layout == "original-2d-file":
        save_file(comfyui_keys(sd, five_d=False), str(tmp_path / "qwen_image_2.1_vae.safetensors"))
        return tmp_path / "qwen_image_2.1_vae.safetensors"
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "Qwen-Image-2.1" / "vae")
        return tmp_path / "Qwen-Image-2.1"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "qwen_image_2.1_vae.safetensors"))
        return tmp_path / "qwen_image_2.1_vae.safetensors"
    if layout == "diffusers-pth":
        torch.save({f"vae.{k}": v for k, v in sd.items()}, tmp_path / "qwen_image21_vae.pth")
        return tmp_path / "qwen_image21_vae.pth"
    raise AssertionError(layout)


def reference(model, x):
    """diffusers on the RGBA image QwenImage21Pipeline makes of an RGB one (alpha 255: +1), one frame."""
    rgba = torch.cat([as_input(x), torch.ones(1, 1, *x.shape[:2])], dim=1)[:, :, None]
    with torch.no_grad():
        mean = model.encode(rgba).latent_dist.mean
        return mean[0, :, 0], to_hwc(model.decode(mean).sample[:, :3, 0])


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "diffusers-file", "diffusers-pth",
                                    "comfyui-file", "original-2d-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["family_guessed"]) == ("qwen-image-2.1", "qwen-image-2.1", False)
    assert (d["latent_channels"], d["downscale"], d["key_layout"]) == (64, 16, "diffusers" if "diffusers" in layout
                                                                      or "pipeline" in layout else "comfyui")


def test_comfyui_file_is_read_in_its_own_layout_and_reconstructs_as_diffusers(tmp_path, model, sd):
    comfy = comfyui_keys(sd)
    assert tuple(comfy["encoder.conv1.weight"].shape) == (8, 4, 1, 3, 3)  # RGBA in, one temporal tap
    assert tuple(comfy["decoder.head.2.weight"].shape) == (4, 12, 1, 3, 3)
    assert "decoder.upsamples.0.upsamples.2.resample.1.weight" in comfy  # the resampler after 2 resnets
    assert comfy["encoder.middle.1.to_qkv.weight"].ndim == 4 and "conv2.weight" in comfy
    vae = load_vae(write("comfyui-file", model, sd, tmp_path))
    x = pixels(64, 96, seed=1)
    mean, ref = reference(model, x)
    close(vae.encode(x).raw, mean)
    close(vae.decode(vae.to_model(mean), 64, 96).pixels, ref)


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "Qwen/Qwen-Image-2.1", "vae")
    assert_weights(load_from_hub(tmp_path, "Qwen/Qwen-Image-2.1"), sd)


def test_encode_and_decode_equal_autoencoder_kl_qwen_image21(tmp_path, model, sd):
    vae = load_vae(write("diffusers-file", model, sd, tmp_path))
    x = pixels(64, 96)
    enc = vae.encode(x)
    mean, ref = reference(model, x)
    close(enc.raw, mean)
    close(vae.decode(vae.to_model(mean), 64, 96).pixels, ref)
    assert tuple(enc.raw.shape) == (64, 4, 6)


def test_model_space_is_qwen_image21_pipelines(tmp_path, model, sd):
    from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import QwenImage21Pipeline

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(64, 96, seed=2)
    rgba = torch.cat([as_input(x), torch.ones(1, 1, 64, 96)], dim=1)[:, :, None]
    pipe = types.SimpleNamespace(vae=model, latent_channels=64)  # the pipeline's own image-latent code
    with torch.no_grad():
        want = QwenImage21Pipeline._encode_vae_image(pipe, rgba, generator=None)
    z = vae.encode(x).latent
    close(z, want[0, :, 0])
    # its decode: latents * latents_std + latents_mean, then vae.decode (pipeline_qwenimage21, __call__)
    close(vae.from_model(z), z * torch.tensor(STD).view(-1, 1, 1) + torch.tensor(MEAN).view(-1, 1, 1))
    w = torch.randn(2, 64, 2, 3)
    close(vae.from_model(vae.to_model(w)), w, 1e-6)


def test_wan_files_are_not_taken_for_it(tmp_path):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(1)
    wan = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=48, is_residual=True, in_channels=12,
                           out_channels=12, patch_size=2, scale_factor_spatial=16, dim_mult=[1, 2, 4, 4],
                           latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    save_file(state(wan), str(tmp_path / "wan2.2_vae.safetensors"))
    assert prepare_source(tmp_path / "wan2.2_vae.safetensors").info.architecture == "wan"


def test_noise_at_the_schedule_ends_and_the_cli(tmp_path, model, sd, rgb_image, capsys):
    path = write("comfyui-file", model, sd, tmp_path)
    vae = load_vae(path)
    z = vae.encode(pixels(32, 32)).latent
    assert torch.equal(add_noise(z, vae.family, timestep=0, seed=5).latent, z)
    assert add_noise(z, vae.family, timestep=1000, seed=5).snr == 0
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json",
                 "--timestep", "1000", "--family", "qwen-image-2.1"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["latent_shape"] == [64, 3, 4] and rec["family"] == "qwen-image-2.1" and rec["snr"] == 0
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["latent_channels"], info["downscale"]) == ("qwen-image-2.1", 64, 16)


def test_tiles_are_the_model_on_each_tile(tmp_path, model, sd):
    """At 16x, a 32x48 image in 32 px tiles overlapping by 16: two tiles, one shared latent column."""
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(32, 48, seed=4)
    vae.encode_tile, vae.tile_overlap = 32, 16
    tiled = vae.encode(x, tile="on")
    left, right = vae.encode(x[:, :32], tile="off").raw, vae.encode(x[:, 16:], tile="off").raw
    assert tiled.tiled and tuple(tiled.raw.shape) == (64, 2, 3)
    close(tiled.raw[..., 0], left[..., 0])
    close(tiled.raw[..., 2], right[..., 1])
    close(tiled.raw[..., 1], (left[..., 1] + right[..., 0]) / 2)
    dec = vae.decode(tiled.latent, 32, 48, tile="on")
    a = vae.decode(tiled.latent[..., :2], 32, 32, tile="off").pixels
    assert dec.tiled and dec.pixels.shape == (32, 48, 3)
    close(dec.pixels[:, :16], a[:, :16])


def test_broken_qwen_image21_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, sd, "encoder.down_blocks.0.resnets.0.conv1.weight", rgb_image, capsys,
                 name="qwen_image_2.1_vae")


def test_broken_comfyui_qwen_image21_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, comfyui_keys(sd), "encoder.downsamples.0.downsamples.0.residual.2.weight", rgb_image,
                 capsys, name="qwen_image_2.1_comfy")
