"""HunyuanImage 2.1's VAE: its layouts, equality with diffusers' AutoencoderKLHunyuanImage and with
HunyuanImagePipeline's own latent code, noise, tiling and broken files.

No pretrained weights are reachable here: a tiny random AutoencoderKLHunyuanImage (the real diffusers
class, 64 latent channels at 32x) is written in each layout, so the loading code is the one real files take."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.archs import (
    ZeroTransformer,
    as_input,
    assert_tiles_are_the_model_on_each_tile,
    assert_weights,
    check_broken,
    close,
    load_from_hub,
    perturbed,
    pipeline_quiet,
    pixels,
    save_hub_repo,
    scheduler,
    state,
    to_hwc,
)
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.noise import add_noise
from vaestudio.core.sources import load_vae, prepare_source


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKLHunyuanImage

    torch.manual_seed(3)
    return perturbed(AutoencoderKLHunyuanImage(
        in_channels=3, out_channels=3, latent_channels=64, block_out_channels=(32, 32, 32, 64, 64, 128),
        layers_per_block=1, spatial_compression_ratio=32, sample_size=256, scaling_factor=0.75289), 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def comfyui_keys(sd, widths=(32, 32, 32, 64, 64, 128), layers=1):
    """The same weights under the key names ComfyUI's HunyuanImage VAE (comfy.ldm.hunyuan_video.vae) gives
    them, written out stage by stage as its Encoder and Decoder build them (not with vaestudio's converter)."""
    prefixes, n = {}, 0
    for i in range(len(widths)):
        for j in range(layers):
            prefixes[f"encoder.down_blocks.{n}."], n = f"encoder.down.{i}.block.{j}.", n + 1
        if i < len(widths) - 1:
            prefixes[f"encoder.down_blocks.{n}."], n = f"encoder.down.{i}.downsample.", n + 1
    n = 0
    for i in range(len(widths)):
        for j in range(layers + 1):
            prefixes[f"decoder.up_blocks.{n}."], n = f"decoder.up.{i}.block.{j}.", n + 1
        if i < len(widths) - 1:
            prefixes[f"decoder.up_blocks.{n}."], n = f"decoder.up.{i}.upsample.", n + 1
    for half in ("encoder", "decoder"):
        prefixes.update({f"{half}.mid_block.resnets.0.": f"{half}.mid.block_1.",
                         f"{half}.mid_block.resnets.1.": f"{half}.mid.block_2.",
                         f"{half}.mid_block.attentions.0.": f"{half}.mid.attn_1."})
    out = {}
    for k, v in sd.items():
        p = next((p for p in prefixes if k.startswith(p)), "")
        rest = k[len(p):]
        if p.endswith("attentions.0."):
            rest = {"to_q": "q", "to_k": "k", "to_v": "v", "proj": "proj_out"}.get(rest.split(".")[0], rest.split(".")[0]) \
                + "." + rest.split(".", 1)[1]
        out[prefixes.get(p, "") + rest] = v
    return out


def write(layout: str, model, sd, tmp_path):
    if layout == "comfyui-file":
        save_file(comfyui_keys(sd), str(tmp_path / "hunyuan_image_2.1_vae_fp16.safetensors"))
        return tmp_path / "hunyuan_image_2.1_vae_fp16.safetensors"
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "HunyuanImage-2.1-Diffusers" / "vae")
        return tmp_path / "HunyuanImage-2.1-Diffusers"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "hunyuan_image_2.1_vae.safetensors"))
        return tmp_path / "hunyuan_image_2.1_vae.safetensors"
    if layout == "diffusers-pth":
        torch.save({f"vae.{k}": v for k, v in sd.items()}, tmp_path / "hunyuan_image_vae.pth")
        return tmp_path / "hunyuan_image_vae.pth"
    raise AssertionError(layout)


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "diffusers-file", "diffusers-pth",
                                    "comfyui-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["family_guessed"]) == ("hunyuan-image", "hunyuan-image", False)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (64, 32, 0.75289)
    assert "model_latent_channels" not in d


def test_comfyui_file_is_read_in_its_own_layout_and_shapes(tmp_path, model, sd):
    comfy = comfyui_keys(sd)
    # what ComfyUI's modules hold: a pixel-shuffle downsample conv to a quarter of the next width, a
    # pixel-unshuffle upsample conv to 4x the next width, 1x1 conv attention
    assert tuple(comfy["encoder.down.2.downsample.conv.weight"].shape) == (16, 32, 3, 3)
    assert tuple(comfy["decoder.up.0.upsample.conv.weight"].shape) == (256, 128, 3, 3)
    assert comfy["encoder.mid.attn_1.q.weight"].ndim == 4 and "decoder.up.5.block.1.conv2.weight" in comfy
    info = prepare_source(write("comfyui-file", model, sd, tmp_path)).info
    assert (info.key_layout, info.architecture, info.latent_channels) == ("original", "hunyuan-image", 64)
    from vaestudio.core.archs.hunyuan_image import diffusers_to_original, original_to_diffusers

    assert set(diffusers_to_original(sd)) == set(comfy) and set(original_to_diffusers(comfy)) == set(sd)


def test_comfyui_file_reconstructs_as_autoencoder_kl_hunyuan_image(tmp_path, model, sd, rgb_image, capsys):
    path = write("comfyui-file", model, sd, tmp_path)
    vae = load_vae(path)
    x = pixels(64, 96, seed=1)
    with torch.no_grad():
        mean = model.encode(as_input(x)).latent_dist.mean
        ref = to_hwc(model.decode(mean).sample)
    close(vae.encode(x).raw, mean[0])
    close(vae.decode(vae.to_model(mean[0]), 64, 96).pixels, ref)
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "hunyuan-image"


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "hunyuanvideo-community/HunyuanImage-2.1-Diffusers", "vae")
    assert_weights(load_from_hub(tmp_path, "hunyuanvideo-community/HunyuanImage-2.1-Diffusers"), sd)


def test_encode_and_decode_equal_autoencoder_kl_hunyuan_image(tmp_path, model, sd):
    vae = load_vae(write("diffusers-file", model, sd, tmp_path))
    x = pixels(64, 96)
    enc = vae.encode(x)
    with torch.no_grad():
        mean = model.encode(as_input(x)).latent_dist.mean
        ref = to_hwc(model.decode(mean).sample)
    close(enc.raw, mean[0])
    close(vae.decode(vae.to_model(mean[0]), 64, 96).pixels, ref)
    assert tuple(enc.raw.shape) == (64, 2, 3)


def test_model_space_is_hunyuan_image_pipelines(tmp_path, model, sd):
    from diffusers.pipelines.hunyuan_image.pipeline_hunyuanimage import HunyuanImagePipeline

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(64, 128, seed=2)
    z = vae.encode(x).latent
    with torch.no_grad():
        close(z, model.encode(as_input(x)).latent_dist.mean[0] * model.config.scaling_factor)
    pipe = pipeline_quiet(HunyuanImagePipeline(
        scheduler=scheduler(), vae=model, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
        transformer=ZeroTransformer(in_channels=64, guidance_embeds=False, use_meanflow=False)))
    ones = torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        img = pipe(prompt_embeds=torch.zeros(1, 4, 8), prompt_embeds_mask=ones, prompt_embeds_2=torch.zeros(1, 4, 8),
                   prompt_embeds_mask_2=ones, latents=z[None], height=64, width=128, num_inference_steps=1,
                   distilled_guidance_scale=None, output_type="pt").images
    close(vae.decode(z, 64, 128).pixels, img[0].permute(1, 2, 0))
    w = torch.randn(2, 64, 2, 3)
    close(vae.from_model(vae.to_model(w)), w, 1e-6)


def test_other_diffusers_layouts_are_not_taken_for_it(tmp_path, sd):
    from conftest import tiny_vae

    save_file({k: v.contiguous() for k, v in tiny_vae().state_dict().items()}, str(tmp_path / "sd.safetensors"))
    assert prepare_source(tmp_path / "sd.safetensors").info.architecture == "autoencoder-kl"


def test_noise_at_the_schedule_ends_and_the_cli(tmp_path, model, sd, rgb_image, capsys):
    path = write("diffusers-file", model, sd, tmp_path)
    vae = load_vae(path)
    z = vae.encode(pixels(64, 64)).latent
    assert torch.equal(add_noise(z, vae.family, timestep=0, seed=5).latent, z)
    assert add_noise(z, vae.family, timestep=1000, seed=5).snr == 0
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json",
                 "--timestep", "1000", "--family", "hunyuan-image"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["latent_shape"] == [64, 2, 2] and rec["family"] == "hunyuan-image" and rec["snr"] == 0
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["latent_channels"], info["downscale"]) == ("hunyuan-image", 64, 32)


def test_tiles_at_32x(tmp_path, model, sd):
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    assert_tiles_are_the_model_on_each_tile(vae, pixels(64, 96, seed=4))
    assert vae.encode(pixels(64, 96), tile="on").raw.shape[0] == 64


def test_broken_hunyuan_image_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, sd, "encoder.down_blocks.0.conv1.weight", rgb_image, capsys, name="hunyuan_image")


def test_broken_comfyui_hunyuan_image_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, comfyui_keys(sd), "encoder.down.0.block.0.conv1.weight", rgb_image, capsys,
                 name="hunyuan_image_comfy")
