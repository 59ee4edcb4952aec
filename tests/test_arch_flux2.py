"""FLUX.2's VAE: every layout users have, equality with diffusers' AutoencoderKLFlux2 and with
Flux2Pipeline's own latent code, recognition against FLUX.1, noise, tiling and broken files.

No pretrained FLUX.2 weights are reachable here: the model is a tiny random AutoencoderKLFlux2 (real
diffusers class) written in each layout, so the loading code is the one real files take."""

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
from vaestudio.core.archs.flux2 import bfl_to_diffusers, diffusers_to_bfl
from vaestudio.core.noise import add_noise
from vaestudio.core.sources import load_vae, prepare_source


@pytest.fixture(scope="module")
def model():
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    m = AutoencoderKLFlux2(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=32)
    with torch.no_grad():
        m.bn.running_mean.normal_(0, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return perturbed(m, 0.03)


@pytest.fixture(scope="module")
def sd(model):
    return state(model)


def write(layout: str, model, sd, tmp_path):
    if layout == "diffusers-folder":
        model.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    if layout == "pipeline-folder":
        model.save_pretrained(tmp_path / "FLUX.2-dev" / "vae")
        return tmp_path / "FLUX.2-dev"
    if layout == "bfl-safetensors":
        save_file({k: v.contiguous() for k, v in diffusers_to_bfl(sd).items()}, str(tmp_path / "flux2-vae.safetensors"))
        return tmp_path / "flux2-vae.safetensors"
    if layout == "bfl-ckpt":
        bfl = {k: v for k, v in diffusers_to_bfl(sd).items() if k != "bn.num_batches_tracked"}  # absent in some files
        torch.save(bfl, tmp_path / "ae.ckpt")
        return tmp_path / "ae.ckpt"
    if layout == "diffusers-file":
        save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
        return tmp_path / "diffusion_pytorch_model.safetensors"
    raise AssertionError(layout)


@pytest.mark.parametrize("layout", ["diffusers-folder", "pipeline-folder", "bfl-safetensors", "bfl-ckpt",
                                    "diffusers-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, model, sd, layout):
    vae = load_vae(write(layout, model, sd, tmp_path))
    assert_weights(vae, sd)
    d = vae.info.to_dict()
    assert (d["architecture"], d["family"], d["family_guessed"]) == ("flux2", "flux2", False)
    assert (d["latent_channels"], d["downscale"], d["model_latent_channels"], d["model_downscale"]) == (32, 8, 128, 16)
    assert d["key_layout"] == ("bfl" if layout.startswith("bfl") else "diffusers")


def test_hub_id_through_the_cache(tmp_path, model, sd):
    save_hub_repo(model, tmp_path / "hub", "black-forest-labs/FLUX.2-dev", "vae")
    vae = load_from_hub(tmp_path, "black-forest-labs/FLUX.2-dev")
    assert_weights(vae, sd)
    assert vae.info.architecture == "flux2"


def test_bfl_key_mapping_both_ways(sd):
    bfl = diffusers_to_bfl(sd)
    # the original file's own names: LDM blocks, quant convs inside the halves, the BatchNorm
    for key in ("encoder.down.0.block.0.norm1.weight", "encoder.mid.attn_1.q.weight", "decoder.up.3.block.0.conv1.weight",
                "encoder.quant_conv.weight", "decoder.post_quant_conv.weight", "bn.running_mean", "bn.running_var"):
        assert key in bfl, key
    assert not any(k.startswith(("quant_conv.", "post_quant_conv.", "encoder.down_blocks.")) for k in bfl)
    back = bfl_to_diffusers(bfl)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_encode_and_decode_equal_autoencoder_kl_flux2(tmp_path, model, sd):
    vae = load_vae(write("bfl-safetensors", model, sd, tmp_path))
    x = pixels(64, 96)
    enc = vae.encode(x)
    with torch.no_grad():
        mean = model.encode(as_input(x)).latent_dist.mean
        ref = to_hwc(model.decode(mean).sample)
    close(enc.raw, mean[0])
    close(vae.decode(vae.to_model(mean[0]), 64, 96).pixels, ref)
    assert tuple(enc.raw.shape) == (32, 8, 12) and tuple(enc.latent.shape) == (128, 4, 6)


def test_model_space_is_flux2_pipelines(tmp_path, model, sd):
    from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    x = pixels(64, 96, seed=3)
    enc = vae.encode(x)
    # encode direction: the pipeline's own _encode_vae_image (argmax, patchify, BatchNorm statistics)
    stub = type("Stub", (), {"vae": model, "_patchify_latents": staticmethod(Flux2Pipeline._patchify_latents)})()
    with torch.no_grad():
        ref = Flux2Pipeline._encode_vae_image(stub, as_input(x), generator=None)
    close(enc.latent, ref[0])
    # decode direction: the pipeline run end to end on our model-space latent with a zero-velocity transformer
    pipe = pipeline_quiet(Flux2Pipeline(scheduler=scheduler(), vae=model, text_encoder=None, tokenizer=None,
                                        transformer=ZeroTransformer(in_channels=128)))
    with torch.no_grad():
        img = pipe(prompt_embeds=torch.zeros(1, 4, 8), latents=enc.latent[None], height=64, width=96,
                   num_inference_steps=1, output_type="pt").images
    close(vae.decode(enc.latent, 64, 96).pixels, img[0].permute(1, 2, 0))
    # the transform and its inverse, with and without a batch dimension
    z = torch.randn(2, 32, 6, 8)
    close(vae.from_model(vae.to_model(z)), z, 1e-6)
    close(vae.to_model(z[0]), vae.to_model(z)[0], 0)


def test_flux1_vae_is_not_taken_for_flux2(tmp_path, sd):
    from conftest import ldm_state_dict, tiny_vae

    flux1 = tiny_vae(latent_channels=16, quant=False)
    save_file(ldm_state_dict(flux1), str(tmp_path / "ae.safetensors"))
    assert prepare_source(tmp_path / "ae.safetensors").info.architecture == "autoencoder-kl"
    bfl = diffusers_to_bfl(sd)
    save_file({k: v.contiguous() for k, v in bfl.items()}, str(tmp_path / "flux2.safetensors"))
    assert prepare_source(tmp_path / "flux2.safetensors").info.architecture == "flux2"


def test_noise_at_the_schedule_ends_and_the_cli(tmp_path, model, sd, rgb_image, capsys):
    path = write("bfl-safetensors", model, sd, tmp_path)
    vae = load_vae(path)
    z = vae.encode(pixels(48, 64)).latent
    clean = add_noise(z, vae.family, timestep=0, seed=1)
    assert torch.equal(clean.latent, z) and clean.snr == float("inf")
    full = add_noise(z, vae.family, timestep=1000, seed=1)
    assert torch.equal(full.latent, torch.randn(z.shape, generator=torch.Generator().manual_seed(1))) and full.snr == 0
    assert main(["reconstruct", str(rgb_image), "--vae", str(path), "--out", str(tmp_path), "--json",
                 "--timestep", "1000"]) == 0
    rec = json.loads(capsys.readouterr().out)
    # 61x45 pads to 64x48 (a multiple of 16): the raw latent is 32 x 6 x 8
    assert rec["latent_shape"] == [32, 6, 8] and rec["family"] == "flux2" and rec["snr"] == 0
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["architecture"], info["model_latent_channels"], info["model_downscale"]) == ("flux2", 128, 16)


def test_tiles(tmp_path, model, sd):
    vae = load_vae(write("diffusers-folder", model, sd, tmp_path))
    vae.encode_tile, vae.tile_overlap = 64, 16
    x = pixels(96, 128, seed=5)
    plain, tiled = vae.encode(x, tile="off"), vae.encode(x, tile="on")
    assert tiled.tiled and not plain.tiled and tiled.latent.shape == plain.latent.shape
    assert torch.isfinite(tiled.latent).all()
    assert vae.decode(tiled.latent, 96, 128, tile="on").pixels.shape == (96, 128, 3)


def test_broken_flux2_files(tmp_path, sd, rgb_image, capsys):
    check_broken(tmp_path, diffusers_to_bfl(sd), "decoder.conv_in.weight", rgb_image, capsys, name="flux2")


@pytest.mark.parametrize("layout", ["bfl-safetensors", "diffusers-folder"])
def test_small_decoder_narrower_than_the_encoder(tmp_path, layout):
    """FLUX.2's small decoder (diffusers PR #13428): decoder widths differ from the encoder's, read from the
    decoder's shapes (as ComfyUI does) and reconstructing as AutoencoderKLFlux2 with decoder_block_out_channels."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(1)
    small = AutoencoderKLFlux2(block_out_channels=(32, 32, 64, 64), decoder_block_out_channels=(16, 16, 32, 32),
                               layers_per_block=1, latent_channels=32, norm_num_groups=16)
    with torch.no_grad():
        small.bn.running_var.uniform_(0.5, 2.0)
    small = perturbed(small, 0.03)
    weights = state(small)
    vae = load_vae(write(layout, small, weights, tmp_path))
    assert_weights(vae, weights)
    assert list(vae.model.config.decoder_block_out_channels) == [16, 16, 32, 32]
    x = pixels(64, 96, seed=3)
    with torch.no_grad():
        mean = small.encode(as_input(x)).latent_dist.mean
        ref = to_hwc(small.decode(mean).sample)
    close(vae.encode(x).raw, mean[0])
    close(vae.decode(vae.to_model(mean[0]), 64, 96).pixels, ref)


def _full_and_small():
    """A FLUX.2 VAE and a small decoder trained for its latent: the small model's encoder is the full one's."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(2)
    full = AutoencoderKLFlux2(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=32,
                              norm_num_groups=16)
    with torch.no_grad():
        full.bn.running_mean.normal_(0, 0.5)
        full.bn.running_var.uniform_(0.5, 2.0)
    full = perturbed(full, 0.03)
    small = perturbed(AutoencoderKLFlux2(block_out_channels=(32, 32, 64, 64), decoder_block_out_channels=(16, 16, 32, 32),
                                         layers_per_block=1, latent_channels=32, norm_num_groups=16), 0.03, seed=5)
    mine = state(full)
    small.load_state_dict({**state(small), **{k: v for k, v in mine.items() if not k.startswith(("decoder.", "post_quant"))}})
    return full, small


@pytest.mark.parametrize("decoder_layout", ["bfl", "diffusers"])
def test_a_decoder_only_file_pairs_with_the_full_encoder(tmp_path, decoder_layout, rgb_image, capsys):
    """A decoder-only file (FLUX.2's small decoder) given with --decoder decodes the full VAE's latent: equal to
    AutoencoderKLFlux2 with the small decoder's widths holding the full encoder and the small decoder."""
    full, small = _full_and_small()
    save_file({k: v.contiguous() for k, v in diffusers_to_bfl(state(full)).items()}, str(tmp_path / "flux2-vae.safetensors"))
    dec = {k: v for k, v in state(small).items() if k.startswith(("decoder.", "post_quant_conv."))}
    if decoder_layout == "bfl":
        dec = {k: v for k, v in diffusers_to_bfl(dec).items() if k.startswith("decoder.")}
        assert "decoder.post_quant_conv.weight" in dec
    save_file({k: v.contiguous() for k, v in dec.items()}, str(tmp_path / "small_decoder.safetensors"))
    vae = load_vae(tmp_path / "flux2-vae.safetensors", decoder=tmp_path / "small_decoder.safetensors")
    assert_weights(vae, state(small))
    assert (vae.info.architecture, vae.info.family, vae.info.family_guessed) == ("flux2", "flux2", False)
    assert any("another file's" in n for n in vae.info.notes)
    x = pixels(64, 96, seed=4)
    with torch.no_grad():
        mean = small.encode(as_input(x)).latent_dist.mean
        ref = to_hwc(small.decode(mean).sample)
    close(vae.encode(x).raw, mean[0])
    close(vae.decode(vae.to_model(mean[0]), 64, 96).pixels, ref)
    # alone, the decoder-only file is named for what it is
    assert main(["inspect-vae", str(tmp_path / "small_decoder.safetensors")]) == 4
    assert "holds only a FLUX.2 VAE decoder" in capsys.readouterr().err
    # the CLI: --decoder on reconstruct and inspect-vae; a decoder for another latent is refused in one sentence
    assert main(["reconstruct", str(rgb_image), "--vae", str(tmp_path / "flux2-vae.safetensors"), "--decoder",
                 str(tmp_path / "small_decoder.safetensors"), "--out", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["architecture"] == "flux2"
    sd1_decoder = {**dec, "decoder.conv_in.weight": torch.zeros(dec["decoder.conv_in.weight"].shape[0], 4, 3, 3)}
    save_file({k: v.contiguous() for k, v in sd1_decoder.items()}, str(tmp_path / "other.safetensors"))
    code = main(["inspect-vae", str(tmp_path / "flux2-vae.safetensors"), "--decoder", str(tmp_path / "other.safetensors")])
    err = capsys.readouterr().err.strip()
    assert code == 4 and "the decoder does not fit this FLUX.2 VAE's encoder" in err and len(err.splitlines()) == 1
