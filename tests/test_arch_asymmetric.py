"""The asymmetric VAE (SD 1.x inpainting): its layouts, equality with diffusers' AsymmetricAutoencoderKL
decoded without a mask, the SD1 model space, tiles and broken files.

No pretrained weights are reachable here: a tiny random AsymmetricAutoencoderKL (the real diffusers class,
4 latent channels at 8x, a decoder wider and deeper than the encoder) is written in each layout."""

from __future__ import annotations

import json

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
from vaestudio.core.sources import load_vae, prepare_source

CONFIG = dict(down_block_types=("DownEncoderBlock2D",) * 4, down_block_out_channels=(8, 8, 16, 16),
              layers_per_down_block=1, up_block_types=("UpDecoderBlock2D",) * 4,
              up_block_out_channels=(12, 12, 24, 24), layers_per_up_block=2, norm_num_groups=4)


@pytest.fixture(scope="module")
def model():
    from diffusers import AsymmetricAutoencoderKL

    torch.manual_seed(2)
    return perturbed(AsymmetricAutoencoderKL(**CONFIG), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":  # an inpainting pipeline folder whose vae/ is the asymmetric one
        model.save_pretrained(tmp_path / "stable-diffusion-inpainting" / "vae")
        return tmp_path / "stable-diffusion-inpainting"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "asymmetric-autoencoder-kl-x-1-5.safetensors"))
        return tmp_path / "asymmetric-autoencoder-kl-x-1-5.safetensors"
    if layout == "diffusers-pth":
        torch.save(sd, tmp_path / "asymmetric_vae.pth")
        return tmp_path / "asymmetric_vae.pth"
    raise AssertionError(layout)


def reference(model, x):
    """diffusers' AsymmetricAutoencoderKL: the posterior's mean and its decode with no image and no mask."""
    with torch.no_grad():
        mean = model.encode(as_input(x)).latent_dist.mean
        return mean[0], to_hwc(model.decode(mean).sample)


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "diffusers-file", "diffusers-pth"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["family_guessed"]) == ("asymmetric-kl", "sd1", False)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (4, 8, 0.18215)
    assert any("without a mask" in n for n in d["notes"])


def test_single_file_config_is_read_from_shapes(tmp_path, model, sd):
    prepared = prepare_source(write("diffusers-file", model, sd, tmp_path))
    cfg = prepared.config
    assert (cfg["down_block_out_channels"], cfg["up_block_out_channels"]) == ([8, 8, 16, 16], [12, 12, 24, 24])
    assert (cfg["layers_per_down_block"], cfg["layers_per_up_block"], cfg["norm_num_groups"]) == (1, 2, 4)


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "cross-attention/asymmetric-autoencoder-kl-x-1-5")
    assert_weights(load_from_hub(tmp_path, "cross-attention/asymmetric-autoencoder-kl-x-1-5"), sd)


@pytest.mark.parametrize("layout", ["diffusers-folder", "diffusers-file"])
def test_encode_and_decode_equal_asymmetric_autoencoder_kl_without_a_mask(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    x = pixels(64, 96)
    enc = vae.encode(x)
    mean, ref = reference(model, x)
    close(enc.raw, mean)
    close(vae.decode(vae.to_model(mean), 64, 96).pixels, ref)
    assert tuple(enc.raw.shape) == (4, 8, 12)
    # a mask of ones (everything to paint) is the same decode; the whole image under a mask of zeros is not
    img = as_input(x)
    with torch.no_grad():
        ones = model.decode(mean[None], image=img, mask=torch.ones(1, 1, 64, 96)).sample
        zeros = model.decode(mean[None], image=img, mask=torch.zeros(1, 1, 64, 96)).sample
    close(to_hwc(ones), ref)
    assert not torch.allclose(torch.as_tensor(to_hwc(zeros)), torch.as_tensor(ref), atol=1e-3)


def test_model_space_is_the_sd1_pipelines(tmp_path, model, sd):
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(64, 64, seed=3)
    mean, _ = reference(model, x)
    # StableDiffusionInpaintPipeline: scaling_factor * the encoder's latents; decode(latents / scaling_factor)
    close(vae.encode(x).latent, model.config.scaling_factor * mean)
    z = torch.randn(4, 8, 8)
    close(vae.from_model(z), z / model.config.scaling_factor, 1e-6)


def test_sd_vaes_are_not_taken_for_it(tmp_path):
    from conftest import tiny_vae

    save_file({k: v.contiguous() for k, v in tiny_vae().state_dict().items()}, str(tmp_path / "sd.safetensors"))
    assert prepare_source(tmp_path / "sd.safetensors").info.architecture == "autoencoder-kl"


def test_the_cli(tmp_path, model, sd, rgb_image, capsys):
    path = write("diffusers-file", model, sd, tmp_path)
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["family"] == "sd1" and rec["latent_shape"][0] == 4
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["latent_channels"], info["downscale"]) == ("asymmetric-kl", 4, 8)


def test_tiles_are_the_model_on_each_tile(tmp_path, model, sd):
    """At 8x, a 32x48 image in 32 px tiles overlapping by 16: the tiled encode is each tile's, blended."""
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(32, 48, seed=4)
    vae.encode_tile, vae.tile_overlap = 32, 16
    tiled = vae.encode(x, tile="on")
    left, right = vae.encode(x[:, :32], tile="off").raw, vae.encode(x[:, 16:], tile="off").raw
    assert tiled.tiled and tuple(tiled.raw.shape) == (4, 4, 6)
    close(tiled.raw[..., :2], left[..., :2])
    close(tiled.raw[..., 4:], right[..., 2:])
    assert vae.decode(tiled.latent, 32, 48, tile="on").pixels.shape == (32, 48, 3)


def test_broken_asymmetric_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, sd, "decoder.up_blocks.0.resnets.0.conv1.weight", rgb_image, capsys, name="asymmetric")
