"""The Wan-layout VAEs (Wan 2.1, Qwen-Image, Wan 2.2): every layout users have, equality with diffusers'
AutoencoderKLWan / AutoencoderKLQwenImage on one frame and with the Wan and Qwen-Image pipelines' own
latent code, the Wan 2.1 / Qwen-Image decision, noise, tiling and broken files.

No pretrained weights are reachable here: tiny random models of the real diffusers classes, written in
each layout (ComfyUI's original keys included), take the code paths real files take."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.archs import (
    ZeroTransformer,
    as_input,
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
from vaestudio.core.archs._wan_layout import diffusers_to_original, original_to_diffusers
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.noise import add_noise
from vaestudio.core.sources import load_vae, prepare_source

# dim_mult and num_res_blocks as in the real VAEs (diffusers' converter assumes that block layout)
SMALL = dict(base_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
MEAN22, STD22 = [0.1 * ((i % 7) - 3) for i in range(48)], [0.5 + 0.05 * (i % 5) for i in range(48)]


def make(kind: str):
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan

    torch.manual_seed(1)
    if kind == "wan2.1":
        return perturbed(AutoencoderKLWan(z_dim=16, **SMALL))
    if kind == "qwen-image":
        return perturbed(AutoencoderKLQwenImage(z_dim=16, **SMALL))
    return perturbed(AutoencoderKLWan(z_dim=48, decoder_base_dim=12, is_residual=True, in_channels=12, out_channels=12,
                                      patch_size=2, scale_factor_spatial=16, latents_mean=MEAN22, latents_std=STD22,
                                      **SMALL))


MODELS: dict[str, torch.nn.Module] = {}


def model_of(kind: str):
    if kind not in MODELS:
        MODELS[kind] = make(kind)
    return MODELS[kind]


FAMILY = {"wan2.1": ("wan", 16, 8), "qwen-image": ("qwen-image", 16, 8), "wan2.2": ("wan22", 48, 16)}
FILE_NAME = {"wan2.1": "wan_2.1_vae", "qwen-image": "qwen_image_vae", "wan2.2": "wan2.2_vae"}


def write(layout: str, kind: str, tmp_path):
    m = model_of(kind)
    sd = state(m)
    name = FILE_NAME[kind]
    if layout == "diffusers-folder":
        m.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        m.save_pretrained(tmp_path / "pipe" / "vae")
        return tmp_path / "pipe"
    if layout == "comfyui-safetensors":
        save_file(diffusers_to_original(sd), str(tmp_path / f"{name}.safetensors"))
        return tmp_path / f"{name}.safetensors"
    if layout == "comfyui-pth":
        torch.save(diffusers_to_original(sd), tmp_path / f"{name}.pth")
        return tmp_path / f"{name}.pth"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / f"{name}_diffusers.safetensors"))
        return tmp_path / f"{name}_diffusers.safetensors"
    raise AssertionError(layout)


@pytest.mark.parametrize("kind", ["wan2.1", "qwen-image", "wan2.2"])
@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "comfyui-safetensors", "comfyui-pth",
                                    "diffusers-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, kind, layout):
    vae = load_vae(write(layout, kind, tmp_path))
    assert_weights(vae, state(model_of(kind)))
    d = vae.info.to_dict()
    family, channels, f = FAMILY[kind]
    assert (d["architecture"], d["family"], d["latent_channels"], d["downscale"]) == ("wan", family, channels, f)
    assert "model_latent_channels" not in d and "model_downscale" not in d
    assert d["key_layout"] == ("comfyui" if layout.startswith("comfyui") else "diffusers")
    # a folder's config class decides; a single file is decided by its name here (reported as a guess)
    assert d["family_guessed"] == (layout not in ("diffusers-folder", "pipeline-folder") and kind != "wan2.2")


def test_hub_ids_through_the_cache(tmp_path):
    save_hub_repo(model_of("qwen-image"), tmp_path / "hub", "Qwen/Qwen-Image", "vae")
    save_hub_repo(model_of("wan2.2"), tmp_path / "hub", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "vae")
    vae = load_from_hub(tmp_path, "Qwen/Qwen-Image")
    assert (vae.info.family, vae.info.family_guessed) == ("qwen-image", False)
    assert_weights(vae, state(model_of("qwen-image")))
    assert load_from_hub(tmp_path, "Wan-AI/Wan2.2-TI2V-5B-Diffusers").info.family == "wan22"


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_original_key_mapping_both_ways(kind):
    sd = state(model_of(kind))
    orig = diffusers_to_original(sd)
    assert "decoder.middle.0.residual.0.gamma" in orig and "conv1.weight" in orig and "decoder.head.2.weight" in orig
    if kind == "wan2.2":  # ComfyUI's Wan 2.2 marker: the nested up blocks
        assert "decoder.upsamples.0.upsamples.0.residual.2.weight" in orig
    else:
        assert "decoder.upsamples.4.shortcut.weight" in orig  # the flat layout diffusers' converter reads
    back = original_to_diffusers(orig)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


@pytest.mark.parametrize("kind", ["wan2.1", "qwen-image", "wan2.2"])
def test_one_frame_encode_and_decode_equal_diffusers(tmp_path, kind):
    m = model_of(kind)
    vae = load_vae(write("comfyui-safetensors", kind, tmp_path))
    assert type(vae.model).__name__ == type(m).__name__
    x = pixels(32, 48)
    enc = vae.encode(x)
    with torch.no_grad():
        mean = m.encode(as_input(x)[:, :, None]).latent_dist.mean
        ref = to_hwc(m.decode(mean).sample[:, :, 0])
    close(enc.raw, mean[0, :, 0])
    close(vae.decode(vae.to_model(mean[0, :, 0]), 32, 48).pixels, ref)


def test_model_space_is_the_qwen_image_pipelines(tmp_path):
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import QwenImagePipeline
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_img2img import QwenImageImg2ImgPipeline

    m = model_of("qwen-image")
    vae = load_vae(write("diffusers-folder", "qwen-image", tmp_path))
    x = pixels(32, 48, seed=2)
    # encode direction: the img2img pipeline's _encode_vae_image samples the posterior and normalises;
    # the same seed draws the same noise, so our sample must match it
    stub = type("Stub", (), {"vae": m})()
    with torch.no_grad():
        ref = QwenImageImg2ImgPipeline._encode_vae_image(stub, as_input(x)[:, :, None],
                                                         generator=torch.Generator().manual_seed(7))
    close(vae.encode(x, sample=True, seed=7).latent, ref[0, :, 0])
    # decode direction: QwenImagePipeline run on our model-space latent with a zero-velocity transformer
    z = vae.encode(x).latent
    pipe = pipeline_quiet(QwenImagePipeline(scheduler=scheduler(), vae=m, text_encoder=None, tokenizer=None,
                                            transformer=ZeroTransformer(in_channels=64, guidance_embeds=False)))
    packed = QwenImagePipeline._pack_latents(z[None, None], 1, 16, *z.shape[1:])
    with torch.no_grad():
        img = pipe(prompt_embeds=torch.zeros(1, 4, 8), prompt_embeds_mask=torch.ones(1, 4, dtype=torch.long),
                   latents=packed, height=32, width=48, num_inference_steps=1, output_type="pt").images
    close(vae.decode(z, 32, 48).pixels, img[0].permute(1, 2, 0))


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_model_space_is_the_wan_pipelines(tmp_path, kind):
    from diffusers.pipelines.wan.pipeline_wan import WanPipeline

    m = model_of(kind)
    vae = load_vae(write("diffusers-folder", kind, tmp_path))
    x = pixels(32, 48, seed=4)
    z = vae.encode(x).latent
    with torch.no_grad():
        mean = m.encode(as_input(x)[:, :, None]).latent_dist.mean[0, :, 0]
    cfg = m.config
    expected = (mean - torch.tensor(cfg.latents_mean).view(-1, 1, 1)) * (1.0 / torch.tensor(cfg.latents_std).view(-1, 1, 1))
    close(z, expected)
    pipe = pipeline_quiet(WanPipeline(scheduler=scheduler(), vae=m, text_encoder=None, tokenizer=None,
                                      transformer=ZeroTransformer(in_channels=cfg.z_dim, patch_size=(1, 2, 2))))
    with torch.no_grad():
        frames = pipe(prompt_embeds=torch.zeros(1, 4, 8), latents=z[None, :, None], height=32, width=48, num_frames=1,
                      num_inference_steps=1, guidance_scale=1.0, output_type="pt").frames
    close(vae.decode(z, 32, 48).pixels, frames[0, 0].permute(1, 2, 0))
    w = torch.randn(3, cfg.z_dim, 2, 3)
    close(vae.from_model(vae.to_model(w)), w, 1e-6)
    close(vae.to_model(w[1]), vae.to_model(w)[1], 0)


def test_wan_or_qwen_image_from_the_name_metadata_or_a_guess(tmp_path):
    orig = diffusers_to_original(state(model_of("wan2.1")))
    save_file(orig, str(tmp_path / "vae.safetensors"))
    info = prepare_source(tmp_path / "vae.safetensors").info
    assert (info.family, info.family_guessed) == ("wan", True) and "no hint" in info.family_reason
    save_file(orig, str(tmp_path / "anon.safetensors"), metadata={"modelspec.architecture": "qwen-image"})
    info = prepare_source(tmp_path / "anon.safetensors").info
    assert (info.family, info.family_guessed) == ("qwen-image", False)
    assert prepare_source(tmp_path / "vae.safetensors", family="qwen-image").info.family == "qwen-image"
    vae = load_vae(tmp_path / "vae.safetensors", family="qwen-image")
    assert type(vae.model).__name__ == "AutoencoderKLQwenImage"
    with pytest.raises(VaeLoadError, match="48 latent channels"):
        prepare_source(tmp_path / "vae.safetensors", family="wan22")


def test_qwen_image_2_1_vae_is_refused_in_one_sentence(tmp_path):
    orig = diffusers_to_original(state(model_of("wan2.2")))
    w = orig["decoder.head.2.weight"]
    orig["decoder.head.2.weight"] = w[:, :, -1:].contiguous()
    save_file(orig, str(tmp_path / "qwen_image_2.1_vae.safetensors"))
    with pytest.raises(VaeLoadError, match="Qwen-Image 2.1") as e:
        prepare_source(tmp_path / "qwen_image_2.1_vae.safetensors")
    assert "\n" not in str(e.value)


def test_noise_at_the_schedule_ends_and_the_cli(tmp_path, rgb_image, capsys):
    path = write("comfyui-safetensors", "wan2.2", tmp_path)
    vae = load_vae(path)
    z = vae.encode(pixels(32, 48)).latent
    assert torch.equal(add_noise(z, vae.family, timestep=0, seed=2).latent, z)
    full = add_noise(z, vae.family, timestep=1000, seed=2)
    assert torch.equal(full.latent, torch.randn(z.shape, generator=torch.Generator().manual_seed(2))) and full.snr == 0
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json",
                 "--timestep", "1000"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["latent_shape"] == [48, 3, 4] and rec["family"] == "wan22" and rec["snr"] == 0  # 61x45 -> 64x48
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["latent_channels"], info["downscale"]) == ("wan", 48, 16)


def test_tiles(tmp_path):
    vae = load_vae(write("diffusers-folder", "wan2.1", tmp_path))
    vae.encode_tile, vae.tile_overlap = 32, 8
    x = pixels(48, 64, seed=6)
    tiled = vae.encode(x, tile="on")
    assert tiled.tiled and tuple(tiled.raw.shape) == (16, 6, 8) and torch.isfinite(tiled.latent).all()
    assert vae.decode(tiled.latent, 48, 64, tile="on").pixels.shape == (48, 64, 3)


def test_broken_wan_files(tmp_path, rgb_image, capsys):
    orig = diffusers_to_original(state(model_of("wan2.1")))
    check_broken(tmp_path, orig, "decoder.middle.0.residual.2.weight", rgb_image, capsys, name="wan_2.1_vae")
