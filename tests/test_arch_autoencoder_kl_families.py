"""The AutoencoderKL families beyond SD1/SDXL/SD3/FLUX.1: Playground v2.5 (per-channel latent statistics),
the SD x4 upscaler's VAE (3 down blocks, 1/4 size) and the models that share FLUX.1's VAE (Z-Image,
Lumina 2, HiDream).

No pretrained weights are reachable here: tiny random AutoencoderKLs (the real diffusers class) are
written as folders and single files; the model spaces are checked against the pipelines' own code."""

from __future__ import annotations

import json
import types

import pytest
import torch
from conftest import ldm_state_dict, tiny_vae
from helpers.archs import as_input, assert_weights, close, pixels, state, to_hwc
from safetensors.torch import save_file

from vaestudio.core.archs._common import shipped_config
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.families import FAMILIES, get_family, guess_family
from vaestudio.core.sources import load_vae, prepare_source

PG_MEAN, PG_STD = [-1.6574, 1.886, -1.383, 2.5155], [8.4927, 5.9022, 6.5498, 5.2299]  # ComfyUI's and diffusers'
X4 = dict(block_out_channels=(32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
          up_block_types=("UpDecoderBlock2D",) * 3)


def _stats(mean, std):
    return torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)


# -- Playground v2.5 -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def playground():
    return tiny_vae(scaling_factor=0.5, latents_mean=PG_MEAN, latents_std=PG_STD, force_upcast=True, seed=5)


def test_playground_family_is_its_published_config():
    fam, cfg = FAMILIES["playground-v2.5"], shipped_config("playground-v2.5")
    assert (fam.scaling_factor, list(fam.latents_mean), list(fam.latents_std)) == (0.5, PG_MEAN, PG_STD)
    assert (cfg["scaling_factor"], cfg["latents_mean"], cfg["latents_std"]) == (0.5, PG_MEAN, PG_STD)
    assert (fam.latent_channels, fam.downscale, fam.tiny) == (4, 8, "taesdxl")
    assert get_family("playground") is fam


def test_playground_folder_is_told_from_sdxl_by_its_config(tmp_path, playground):
    playground.save_pretrained(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    assert_weights(vae, state(playground))
    d = vae.info.to_dict()
    assert (d["family"], d["family_guessed"], d["scaling_factor"]) == ("playground-v2.5", False, 0.5)
    assert "latents_mean" in " ".join(d["notes"])


def test_playground_model_space_is_sdxl_pipelines(tmp_path, playground):
    """StableDiffusionXLImg2ImgPipeline.prepare_latents (its own code) turns a seeded posterior sample into
    (z - mean) * scale / std; the decode path (pipeline_stable_diffusion_xl) undoes it before vae.decode."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    playground.save_pretrained(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    x = as_input(pixels(64, 96, seed=3))
    with torch.no_grad():
        want = StableDiffusionXLImg2ImgPipeline.prepare_latents(
            types.SimpleNamespace(vae=playground), x, None, 1, 1, torch.float32, "cpu",
            generator=torch.Generator().manual_seed(4), add_noise=False)
        sample = playground.encode(x).latent_dist.sample(torch.Generator().manual_seed(4))
    close(vae.to_model(sample[0]), want[0])
    mean, std = _stats(PG_MEAN, PG_STD)
    z = torch.randn(4, 8, 12)
    close(vae.from_model(z), z * std / 0.5 + mean)
    with torch.no_grad():
        ref = to_hwc(playground.decode((z * std / 0.5 + mean)[None]).sample)
    close(vae.decode(z, 64, 96).pixels, ref)
    enc = vae.encode(pixels(64, 96, seed=3))
    with torch.no_grad():
        close(enc.raw, playground.encode(x).latent_dist.mean[0])


@pytest.mark.parametrize(("name", "metadata", "guessed"), [
    ("playground-v2.5-1024px-aesthetic.vae.safetensors", None, True),
    ("vae.safetensors", {"modelspec.architecture": "playground-v2.5"}, False),
])
def test_playground_single_file_takes_the_shipped_statistics(tmp_path, playground, name, metadata, guessed):
    save_file(ldm_state_dict(playground), str(tmp_path / name), metadata=metadata)
    vae = load_vae(tmp_path / name)
    assert (vae.info.family, vae.info.family_guessed, vae.info.scaling_factor) == ("playground-v2.5", guessed, 0.5)
    mean, std = _stats(PG_MEAN, PG_STD)
    raw = torch.randn(4, 3, 5)
    close(vae.to_model(raw), (raw - mean) * 0.5 / std)
    close(vae.from_model(vae.to_model(raw)), raw)


def test_sdxl_shapes_without_a_hint_are_not_playground(tmp_path, playground):
    save_file(ldm_state_dict(playground), str(tmp_path / "vae.safetensors"))
    info = prepare_source(tmp_path / "vae.safetensors").info
    assert info.family == "sd1" and info.family_guessed
    assert "playground-v2.5" in info.family_reason


def test_choosing_a_family_switches_the_statistics(tmp_path, playground):
    playground.save_pretrained(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae")
    raw = torch.randn(4, 3, 5)
    vae.set_family(FAMILIES["sdxl"])
    close(vae.to_model(raw), raw * 0.13025)
    vae.set_family(FAMILIES["playground-v2.5"])
    mean, std = _stats(PG_MEAN, PG_STD)
    close(vae.to_model(raw), (raw - mean) * 0.5 / std)


def test_sdxl_folder_chosen_as_playground_takes_its_statistics(tmp_path):
    tiny_vae(scaling_factor=0.13025, seed=6).save_pretrained(tmp_path / "vae")
    vae = load_vae(tmp_path / "vae", family="playground")
    mean, std = _stats(PG_MEAN, PG_STD)
    raw = torch.randn(4, 3, 5)
    assert vae.info.family == "playground-v2.5"
    close(vae.to_model(raw), (raw - mean) * 0.5 / std)


# -- SD x4 upscaler ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upscaler():
    return tiny_vae(scaling_factor=0.08333, seed=8, **X4)


def test_x4_family_is_its_published_config():
    fam, cfg = FAMILIES["sd-x4-upscaler"], shipped_config("sd-x4-upscaler")
    assert (fam.scaling_factor, fam.downscale, fam.latent_channels) == (0.08333, 4, 4)
    assert (cfg["scaling_factor"], len(cfg["block_out_channels"]), cfg["latent_channels"]) == (0.08333, 3, 4)


def test_x4_folder_encodes_and_decodes_as_autoencoder_kl(tmp_path, upscaler):
    upscaler.save_pretrained(tmp_path / "stable-diffusion-x4-upscaler" / "vae")
    vae = load_vae(tmp_path / "stable-diffusion-x4-upscaler")
    assert_weights(vae, state(upscaler))
    d = vae.info.to_dict()
    assert (d["family"], d["family_guessed"], d["downscale"], d["scaling_factor"]) == \
        ("sd-x4-upscaler", False, 4, 0.08333)
    x = pixels(64, 96, seed=1)
    enc = vae.encode(x)
    with torch.no_grad():
        mean = upscaler.encode(as_input(x)).latent_dist.mean
        # StableDiffusionUpscalePipeline's own decode: vae.decode(latents / vae.config.scaling_factor)
        ref = to_hwc(upscaler.decode(enc.latent[None] / upscaler.config.scaling_factor).sample)
    assert tuple(enc.raw.shape) == (4, 16, 24)
    close(enc.raw, mean[0])
    close(enc.latent, mean[0] * 0.08333)
    close(vae.decode(enc.latent, 64, 96).pixels, ref)


@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_x4_single_file_is_the_upscalers_by_its_depth(tmp_path, upscaler, layout):
    sd = ldm_state_dict(upscaler) if layout == "ldm" else {k: v.contiguous() for k, v in state(upscaler).items()}
    save_file(sd, str(tmp_path / "vae.safetensors"))
    vae = load_vae(tmp_path / "vae.safetensors")
    assert_weights(vae, state(upscaler))
    assert (vae.info.key_layout, vae.info.family, vae.info.downscale) == (layout, "sd-x4-upscaler", 4)
    assert "sd-x4-upscaler" in vae.info.family_reason


def test_x4_family_fits_only_its_depth(tmp_path, playground, upscaler):
    save_file(ldm_state_dict(playground), str(tmp_path / "upscaler_named.safetensors"))
    assert prepare_source(tmp_path / "upscaler_named.safetensors").info.family != "sd-x4-upscaler"
    with pytest.raises(VaeLoadError, match="cannot be of family sd-x4-upscaler"):
        prepare_source(tmp_path / "upscaler_named.safetensors", family="sd-x4-upscaler")
    save_file(ldm_state_dict(upscaler), str(tmp_path / "x4.safetensors"))
    assert prepare_source(tmp_path / "x4.safetensors", family="sd1").info.scaling_factor == 0.18215


# -- FLUX.1's VAE under other names -----------------------------------------------------------------

@pytest.mark.parametrize(("name", "family"), [
    ("z_image_turbo_vae.safetensors", "z-image"), ("lumina_2_vae.safetensors", "lumina2"),
    ("hidream_i1_vae.safetensors", "hidream"), ("flux1-dev-ae.safetensors", "flux"), ("ae.safetensors", "flux"),
])
def test_flux_vae_files_are_named_for_their_model(tmp_path, name, family):
    save_file(ldm_state_dict(tiny_vae(16, quant=False, seed=2)), str(tmp_path / name))
    vae = load_vae(tmp_path / name)
    assert vae.info.family == family
    assert (vae.info.scaling_factor, vae.info.shift_factor) == (0.3611, 0.1159)
    raw = torch.randn(16, 3, 5)
    close(vae.to_model(raw), (raw - 0.1159) * 0.3611)


def test_flux_sharing_families_share_its_latent_format():
    from vaestudio.core.families import latent_rgb_factors

    flux = FAMILIES["flux"]
    for name in ("z-image", "lumina2", "hidream"):
        fam = FAMILIES[name]
        assert (fam.latent_channels, fam.scaling_factor, fam.shift_factor, fam.schedule, fam.tiny) == \
            (16, flux.scaling_factor, flux.shift_factor, "flow", "taef1")
        assert latent_rgb_factors(name) == latent_rgb_factors("flux")
    cands = [FAMILIES[n] for n in ("sd3", "flux", "z-image", "lumina2", "hidream")]
    assert guess_family(cands, metadata={"modelspec.architecture": "lumina2"}).family.name == "lumina2"
    assert guess_family(cands, name="HiDream-I1-Full").family.name == "hidream"
    assert guess_family(cands, name="ae").family.name == "sd3"  # no hint: the first candidate, a guess


def test_shipped_configs_are_json_with_a_source():
    from importlib import resources

    for name in ("playground-v2.5", "sd-x4-upscaler"):
        raw = json.loads(resources.files("vaestudio.resources").joinpath("configs", f"{name}.json").read_text())
        assert raw["_class_name"] == "AutoencoderKL" and raw["_source"]
