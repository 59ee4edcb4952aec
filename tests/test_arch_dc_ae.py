"""SANA's DC-AE: every layout users have, equality with diffusers' AutoencoderDC and with SanaPipeline's
own latent code, config from shapes, noise, tiling and broken files.

No pretrained DC-AE weights are reachable here: a tiny random AutoencoderDC (the real diffusers class,
SANA's block pattern at 32x) is written in each layout, so the loading code is the one real files take."""

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
from vaestudio.core.archs.dc_ae import diffusers_to_original, infer_config, original_to_diffusers
from vaestudio.core.noise import add_noise
from vaestudio.core.sources import load_vae

TYPES = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3


def make(**over):
    from diffusers import AutoencoderDC

    torch.manual_seed(2)
    cfg = dict(in_channels=3, latent_channels=32, attention_head_dim=8, encoder_block_types=TYPES,
               decoder_block_types=TYPES, encoder_block_out_channels=(8, 16, 16, 32, 32, 32),
               decoder_block_out_channels=(8, 16, 16, 32, 32, 32), encoder_layers_per_block=(1, 1, 1, 1, 1, 1),
               decoder_layers_per_block=(1, 1, 1, 1, 1, 2), encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
               decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), upsample_block_type="interpolate",
               downsample_block_type="Conv", decoder_norm_types="rms_norm", decoder_act_fns="silu",
               scaling_factor=0.41407)
    cfg.update(over)
    return perturbed(AutoencoderDC(**cfg), 0.03)


@pytest.fixture(scope="module")
def model():
    return make()


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "Sana_1600M_1024px_diffusers" / "vae")
        return tmp_path / "Sana_1600M_1024px_diffusers"
    if layout == "original-safetensors":
        save_file(diffusers_to_original(sd), str(tmp_path / "model.safetensors"))
        return tmp_path / "model.safetensors"
    if layout == "original-pth":
        torch.save(diffusers_to_original(sd), tmp_path / "dc-ae-f32c32-sana-1.0.pth")
        return tmp_path / "dc-ae-f32c32-sana-1.0.pth"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "dc_ae.safetensors"))
        return tmp_path / "dc_ae.safetensors"
    raise AssertionError(layout)


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "original-safetensors", "original-pth",
                                    "diffusers-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["family_guessed"]) == ("dc-ae", "sana", False)
    assert (d["latent_channels"], d["downscale"], d["scaling_factor"]) == (32, 32, 0.41407)
    assert "model_latent_channels" not in d
    assert d["key_layout"] == ("original" if layout.startswith("original") else "diffusers")


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
    vae = load_from_hub(tmp_path, "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
    assert_weights(vae, sd)


def test_original_key_mapping_both_ways(sd):
    orig = diffusers_to_original(sd)
    for key in ("encoder.project_in.conv.weight", "encoder.stages.0.op_list.0.main.conv1.conv.weight",
                "encoder.stages.3.op_list.0.context_module.main.qkv.conv.weight",
                "decoder.stages.5.op_list.1.local_module.main.depth_conv.conv.weight", "decoder.project_out.2.conv.weight"):
        assert key in orig, key
    back = original_to_diffusers(orig)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_config_comes_from_the_shapes(model):
    other = make(downsample_block_type="pixel_unshuffle", upsample_block_type="pixel_shuffle",
                 decoder_norm_types=["batch_norm"] * 3 + ["rms_norm"] * 3, decoder_act_fns=["relu"] * 3 + ["silu"] * 3)

    def plain(v, n):
        if isinstance(v, str) and n:
            return [v] * n  # one value for every stage
        return [plain(x, 0) for x in v] if isinstance(v, (list, tuple)) else v

    for m in (model, other):
        for key, value in infer_config(state(m), "x").items():
            n = len(value) if isinstance(value, list) else 0
            assert plain(value, 0) == plain(m.config[key], n), key


def test_encode_and_decode_equal_autoencoder_dc(tmp_path, model, sd):
    vae = load_vae(write("original-safetensors", model, sd, tmp_path))
    x = pixels(64, 96)
    enc = vae.encode(x)
    with torch.no_grad():
        lat = model.encode(as_input(x)).latent
        ref = to_hwc(model.decode(lat).sample)
    close(enc.raw, lat[0])
    close(vae.decode(vae.to_model(lat[0]), 64, 96).pixels, ref)
    assert tuple(enc.raw.shape) == (32, 2, 3)


def test_model_space_is_sana_pipelines(tmp_path, model, sd):
    from diffusers.pipelines.sana.pipeline_sana import SanaPipeline

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(64, 128, seed=3)
    z = vae.encode(x).latent
    with torch.no_grad():
        close(z, model.encode(as_input(x)).latent[0] * model.config.scaling_factor)
    pipe = pipeline_quiet(SanaPipeline(scheduler=scheduler(), vae=model, text_encoder=None, tokenizer=None,
                                       transformer=ZeroTransformer(in_channels=32, out_channels=32, sample_size=32,
                                                                   patch_size=1, timestep_scale=1.0)))
    with torch.no_grad():
        img = pipe(prompt_embeds=torch.zeros(1, 4, 8), prompt_attention_mask=torch.ones(1, 4, dtype=torch.long),
                   latents=z[None], height=64, width=128, num_inference_steps=1, guidance_scale=1.0,
                   use_resolution_binning=False, output_type="pt").images
    close(vae.decode(z, 64, 128).pixels, img[0].permute(1, 2, 0))
    w = torch.randn(2, 32, 2, 3)
    close(vae.from_model(vae.to_model(w)), w, 1e-6)


def test_noise_at_the_schedule_ends_and_the_cli(tmp_path, model, sd, rgb_image, capsys):
    path = write("original-safetensors", model, sd, tmp_path)
    vae = load_vae(path)
    z = vae.encode(pixels(64, 64)).latent
    assert torch.equal(add_noise(z, vae.family, timestep=0, seed=3).latent, z)
    assert add_noise(z, vae.family, timestep=1000, seed=3).snr == 0
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json",
                 "--timestep", "1000"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["latent_shape"] == [32, 2, 2] and rec["family"] == "sana" and rec["snr"] == 0  # 61x45 -> 64x64
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["latent_channels"], info["downscale"]) == ("dc-ae", 32, 32)


def test_tiles_at_32x(tmp_path, model, sd):
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    assert_tiles_are_the_model_on_each_tile(vae, pixels(64, 96, seed=5))
    assert vae.encode(pixels(64, 96), tile="on").raw.shape[0] == 32


def test_broken_dc_ae_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, diffusers_to_original(sd), "encoder.stages.0.op_list.0.main.conv1.conv.weight", rgb_image,
                 capsys, name="dc_ae")


def test_an_original_repository_folder_without_a_class_name(tmp_path, model, sd):
    """mit-han-lab's own repositories hold model.safetensors beside a config.json with no _class_name."""
    folder = tmp_path / "dc-ae-f32c32-sana-1.0"
    folder.mkdir()
    save_file(diffusers_to_original(sd), str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_name": "dc-ae-f32c32-sana-1.0"}')
    vae = load_vae(folder)
    assert vae.info.architecture == "dc-ae" and vae.info.family == "sana"
