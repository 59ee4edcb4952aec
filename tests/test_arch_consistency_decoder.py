"""OpenAI's consistency decoder (for SD 1.x latents): its layouts, equality with diffusers'
ConsistencyDecoderVAE decoding in 2 steps from noise seeded 0, the SD1 model space, its notes, tiles and
broken files.

No pretrained weights are reachable here: a tiny random ConsistencyDecoderVAE (the real diffusers class:
SD1's encoder, a UNet decoder with learned time embeddings) is written in each layout."""

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

CONFIG = dict(encoder_block_out_channels=(8, 8, 16, 16), encoder_layers_per_block=1, encoder_norm_num_groups=8,
              decoder_block_out_channels=(8, 16, 16, 32), decoder_layers_per_block=1, decoder_norm_num_groups=8)


@pytest.fixture(scope="module")
def model():
    from diffusers import ConsistencyDecoderVAE

    torch.manual_seed(4)
    return perturbed(ConsistencyDecoderVAE(**CONFIG), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "consistency-decoder")
        return tmp_path / "consistency-decoder"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "consistency_decoder.safetensors"))
        return tmp_path / "consistency_decoder.safetensors"
    if layout == "diffusers-pth":
        torch.save(sd, tmp_path / "consistency_decoder.pth")
        return tmp_path / "consistency_decoder.pth"
    raise AssertionError(layout)


def reference(model, x, seed=0):
    """diffusers: the posterior's mean, and its 2-step decode from a generator seeded ``seed``."""
    with torch.no_grad():
        mean = model.encode(as_input(x)).latent_dist.mean
        img = model.decode(mean, generator=torch.Generator().manual_seed(seed), num_inference_steps=2).sample
    return mean[0], to_hwc(img)


@pytest.mark.parametrize("layout", ["diffusers-folder", "diffusers-file", "diffusers-pth"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["family_guessed"]) == ("consistency-decoder", "sd1", False)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (4, 8, 0.18215)
    assert any("2 steps" in n and "seeded 0" in n for n in d["notes"])  # its step count, shown


def test_its_latent_statistics_and_scheduler_are_diffusers(tmp_path, model, sd):
    vae = load_vae(write("diffusers-file", model, sd, tmp_path))
    assert torch.equal(vae.model.means, model.means) and torch.equal(vae.model.stds, model.stds)
    assert not any(t.is_meta for t in vae.model.buffers())
    assert torch.equal(vae.model.decoder_scheduler.c_in, model.decoder_scheduler.c_in)
    cfg = prepare_source(write("diffusers-file", model, sd, tmp_path)).config
    assert (cfg["decoder_block_out_channels"], cfg["decoder_num_train_timesteps"]) == ([8, 16, 16, 32], 1024)


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "openai/consistency-decoder")
    assert_weights(load_from_hub(tmp_path, "openai/consistency-decoder"), sd)


@pytest.mark.parametrize("layout", ["diffusers-folder", "diffusers-file"])
def test_encode_and_decode_equal_consistency_decoder_vae_seeded(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    x = pixels(64, 96)
    enc = vae.encode(x)
    mean, ref = reference(model, x)
    close(enc.raw, mean)
    dec = vae.decode(vae.to_model(mean), 64, 96).pixels
    close(dec, ref)
    close(vae.decode(vae.to_model(mean), 64, 96).pixels, dec, 0)  # the same image every time
    _, other = reference(model, x, seed=1)
    assert not torch.allclose(torch.as_tensor(other), torch.as_tensor(ref), atol=1e-3)  # the seed matters
    # a batch: each image's noise is its own single-image decode's
    z = torch.stack([vae.to_model(mean), vae.to_model(mean) * 0.5])
    batch = vae.decode_batch(z)
    close(batch[0].permute(1, 2, 0), ref)


def test_model_space_is_the_sd1_pipelines(tmp_path, model, sd):
    vae = load_vae(write("diffusers-file", model, sd, tmp_path))
    x = pixels(64, 64, seed=3)
    mean, _ = reference(model, x)
    # StableDiffusionPipeline(vae=ConsistencyDecoderVAE): scaling_factor * latents in, decode(latents / scaling)
    close(vae.encode(x).latent, model.config.scaling_factor * mean)
    z = torch.randn(4, 8, 8)
    close(vae.from_model(z), z / model.config.scaling_factor, 1e-6)


def test_the_cli(tmp_path, model, sd, rgb_image, capsys):
    path = write("diffusers-file", model, sd, tmp_path)
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["family"] == "sd1" and rec["latent_shape"][0] == 4
    assert main(["inspect-vae", str(path)]) == 0
    assert "2 steps" in capsys.readouterr().out


def test_tiles(tmp_path, model, sd):
    """At 8x, a 32x48 image in 32 px tiles overlapping by 16: the tiled encode is each tile's (the decoder
    draws each tile's own seeded noise)."""
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(32, 48, seed=4)
    vae.encode_tile, vae.tile_overlap = 32, 16
    tiled = vae.encode(x, tile="on")
    left, right = vae.encode(x[:, :32], tile="off").raw, vae.encode(x[:, 16:], tile="off").raw
    assert tiled.tiled and tuple(tiled.raw.shape) == (4, 4, 6)
    close(tiled.raw[..., :2], left[..., :2])
    close(tiled.raw[..., 4:], right[..., 2:])
    dec = vae.decode(tiled.latent, 32, 48, tile="on")
    assert dec.tiled and dec.pixels.shape == (32, 48, 3)


def test_broken_consistency_decoder_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, sd, "decoder_unet.down_blocks.0.resnets.0.conv1.weight", rgb_image, capsys,
                 name="consistency_decoder")
