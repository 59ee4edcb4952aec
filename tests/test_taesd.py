"""The tiny autoencoders: every layout users have, equality with diffusers, halves, families, real weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED, SHARED_IMAGES
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.archs.taesd import find_tiny_decoder, make_decoder, make_encoder
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.images import load_image
from vaestudio.core.sources import load_vae, prepare_source

WEIGHTS = SHARED / "data" / "weights"


def random_tiny(channels: int, variant: str = "sd", seed: int = 0):
    """A tiny autoencoder with random weights (original key layout), perturbed so layouts really differ."""
    torch.manual_seed(seed)
    enc, dec = make_encoder(channels, variant), make_decoder(channels, variant)
    with torch.no_grad():
        for p in list(enc.parameters()) + list(dec.parameters()):
            p.add_(torch.randn_like(p) * 0.02)
    return enc.state_dict(), dec.state_dict()


def diffusers_tiny(channels: int, seed: int = 0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    model = AutoencoderTiny(latent_channels=channels).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def to_diffusers_keys(enc: dict, dec: dict) -> dict:
    out = {f"encoder.layers.{k}": v for k, v in enc.items()}
    for k, v in dec.items():
        i, rest = k.split(".", 1)
        out[f"decoder.layers.{int(i) - 1}.{rest}"] = v
    return out


def assert_weights(vae, enc: dict, dec: dict) -> None:
    for half, sd in (("encoder", enc), ("decoder", dec)):
        got = getattr(vae.model, half).state_dict()
        assert set(got) == set(sd), half
        for k, v in sd.items():
            assert torch.equal(got[k], v.float()), f"{half}.{k}"


def pixels(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(np.stack([xx / w, yy / h, 0.5 + 0.2 * rng.standard_normal((h, w))], axis=2), 0, 1).astype(np.float32)


@pytest.mark.parametrize("layout", ["pair-pth", "pair-safetensors", "pair-folder", "diffusers-file",
                                    "diffusers-folder", "comfyui-file"])
def test_every_layout_loads_equal_to_its_weights(tmp_path, layout):
    enc, dec = random_tiny(4, seed=1)
    if layout in ("pair-pth", "pair-folder"):
        torch.save(enc, tmp_path / "taesdxl_encoder.pth")
        torch.save(dec, tmp_path / "taesdxl_decoder.pth")
        source = tmp_path if layout == "pair-folder" else tmp_path / "taesdxl_decoder.pth"
    elif layout == "pair-safetensors":
        save_file(enc, str(tmp_path / "taesdxl_encoder.safetensors"))
        save_file(dec, str(tmp_path / "taesdxl_decoder.safetensors"))
        source = tmp_path / "taesdxl_encoder.safetensors"
    elif layout == "diffusers-file":
        source = tmp_path / "taesdxl.safetensors"
        save_file(to_diffusers_keys(enc, dec), str(source))
    elif layout == "diffusers-folder":
        from diffusers import AutoencoderTiny

        model = AutoencoderTiny(latent_channels=4)
        model.load_state_dict(to_diffusers_keys(enc, dec))
        source = tmp_path / "taesdxl"
        model.save_pretrained(source)
    else:
        source = tmp_path / "taesdxl_comfy.safetensors"
        sd = {**{f"taesd_encoder.{k}": v for k, v in enc.items()}, **{f"taesd_decoder.{k}": v for k, v in dec.items()}}
        sd["vae_scale"], sd["vae_shift"] = torch.tensor(0.13025), torch.tensor(0.0)
        save_file(sd, str(source))
    vae = load_vae(source)
    assert_weights(vae, enc, dec)
    info = vae.info
    assert (info.architecture, info.family, info.family_guessed) == ("taesd", "sdxl", False)
    assert (info.latent_channels, info.downscale, info.scaling_factor, info.shift_factor) == (4, 8, 1.0, 0.0)
    assert info.halves == ["encoder", "decoder"]


@pytest.mark.parametrize("channels", [4, 16])
def test_diffusers_layout_equals_autoencoder_tiny(tmp_path, channels):
    model = diffusers_tiny(channels, seed=channels)
    model.save_pretrained(tmp_path / "tiny")
    vae = load_vae(tmp_path / "tiny")
    x = pixels(40, 56)
    enc = vae.encode(x)
    t = torch.from_numpy(x).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        ref_lat = model.encode(t).latents
        ref_img = (model.decode(ref_lat).sample / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    torch.testing.assert_close(enc.raw, ref_lat[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.latent, ref_lat[0], rtol=1e-5, atol=1e-5)  # scale 1, shift 0
    np.testing.assert_allclose(vae.decode(enc.latent, 40, 56).pixels, ref_img, rtol=1e-5, atol=1e-5)


def test_family_from_the_name_and_a_guess_without_one(tmp_path):
    enc, dec = random_tiny(16)
    for name, family in (("taesd3", "sd3"), ("taef1", "flux")):
        torch.save(enc, tmp_path / f"{name}_encoder.pth")
        torch.save(dec, tmp_path / f"{name}_decoder.pth")
        info = prepare_source(tmp_path / f"{name}_encoder.pth").info
        assert (info.family, info.family_guessed) == (family, False)
    anon = tmp_path / "anon"
    anon.mkdir()
    torch.save(enc, anon / "mystery_encoder.pth")
    torch.save(dec, anon / "mystery_decoder.pth")
    info = prepare_source(anon / "mystery_encoder.pth").info
    assert info.family_guessed and info.family in ("sd3", "flux")
    assert prepare_source(anon / "mystery_encoder.pth", family="sd3").info.family == "sd3"
    with pytest.raises(VaeLoadError, match="4 latent channels"):
        prepare_source(anon / "mystery_encoder.pth", family="sdxl")


def test_flux2_and_sana_variants_come_from_the_weights(tmp_path):
    for variant, channels, family, f, model_ch, model_f in (("flux2", 32, "flux2", 8, 128, 16),
                                                          ("f32", 32, "sana", 32, None, None)):
        enc, dec = random_tiny(channels, variant)
        torch.save(enc, tmp_path / f"x{variant}_encoder.pth")
        torch.save(dec, tmp_path / f"x{variant}_decoder.pth")
        vae = load_vae(tmp_path / f"x{variant}_encoder.pth")
        info = vae.info
        assert (info.family, info.family_guessed, info.latent_channels, info.downscale) == (family, False, channels, f)
        assert (info.model_latent_channels, info.model_downscale) == (model_ch, model_f)
        assert_weights(vae, enc, dec)
        x = pixels(64, 96)
        e = vae.encode(x)
        assert tuple(e.raw.shape) == (channels, 64 // f, 96 // f)
        if model_ch:
            assert tuple(e.latent.shape) == (model_ch, 64 // model_f, 96 // model_f)
        torch.testing.assert_close(vae.from_model(e.latent), e.raw, rtol=0, atol=0)  # patchify is a permutation
        assert vae.decode(e.latent, 64, 96).pixels.shape == (64, 96, 3)


def test_a_half_alone_inspects_but_does_not_reconstruct(tmp_path, rgb_image, capsys):
    enc, dec = random_tiny(4)
    torch.save(dec, tmp_path / "taesd_decoder.pth")
    torch.save(enc, tmp_path / "lonely_encoder.pth")
    assert main(["inspect-vae", str(tmp_path / "taesd_decoder.pth"), str(tmp_path / "lonely_encoder.pth"),
                 "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["halves"] for d in lines] == [["decoder"], ["encoder"]]
    assert lines[0]["family"] == "sd1" and lines[0]["architecture"] == "taesd" and lines[0]["downscale"] == 8
    assert main(["reconstruct", str(rgb_image), "--vae", str(tmp_path / "taesd_decoder.pth")]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no encoder" in err and "taesd_encoder.pth was not found" in err
    assert main(["reconstruct", str(rgb_image), "--vae", str(tmp_path / "lonely_encoder.pth")]) == 4
    assert "lonely_decoder.pth was not found" in capsys.readouterr().err
    # the decoder alone is still a VAE that decodes (what the preview decoder needs)
    vae = load_vae(tmp_path / "taesd_decoder.pth", halves=("decoder",))
    assert vae.decode(torch.zeros(4, 3, 5), 24, 40).pixels.shape == (24, 40, 3)


def test_broken_tiny_files_give_one_sentence(tmp_path):
    enc, dec = random_tiny(4)
    half = dict(list(enc.items())[: len(enc) // 2])
    torch.save(half, tmp_path / "taesd_encoder.pth")
    torch.save(dec, tmp_path / "taesd_decoder.pth")
    with pytest.raises(VaeLoadError) as e:
        load_vae(tmp_path / "taesd_encoder.pth")
    assert "\n" not in str(e.value) and "encoder" in str(e.value)
    bad = dict(dec)
    bad["1.weight"] = torch.zeros(64, 16, 3, 3)
    torch.save(enc, tmp_path / "pair_encoder.pth")
    torch.save(bad, tmp_path / "pair_decoder.pth")
    with pytest.raises(VaeLoadError, match="not a pair|do not fit"):
        load_vae(tmp_path / "pair_encoder.pth")


def test_cli_noise_and_latent_shape_in_the_family_space(tmp_path, rgb_image, capsys):
    enc, dec = random_tiny(32, "flux2")
    torch.save(enc, tmp_path / "taef2_encoder.pth")
    torch.save(dec, tmp_path / "taef2_decoder.pth")
    assert main(["reconstruct", str(rgb_image), "--vae", str(tmp_path), "--out", str(tmp_path), "--json",
                 "--timestep", "1000"]) == 0
    rec = json.loads(capsys.readouterr().out)
    # 61x45 pads to 64x48 (a multiple of FLUX.2's 16): the raw latent is 32 x 6 x 8
    assert rec["latent_shape"] == [32, 6, 8] and rec["family"] == "flux2" and rec["noise_mode"] == "timestep"
    assert rec["snr"] == 0  # flow matching at t = 1000 is pure noise


def test_preview_decoder_is_found_by_family(tmp_path):
    enc, dec = random_tiny(4)
    for name in ("taesd", "taesdxl"):
        torch.save(dec, tmp_path / f"{name}_decoder.pth")
    assert find_tiny_decoder(tmp_path, "sdxl") == tmp_path / "taesdxl_decoder.pth"
    assert find_tiny_decoder(tmp_path, "sd1") == tmp_path / "taesd_decoder.pth"
    assert find_tiny_decoder(tmp_path, "flux") is None
    assert find_tiny_decoder(tmp_path / "taesd_decoder.pth", "sd1") == tmp_path / "taesd_decoder.pth"
    assert find_tiny_decoder(tmp_path / "taesd_decoder.pth", "sdxl") is None


def test_hub_id_of_a_tiny_autoencoder(tmp_path):
    from helpers.servers import hub_handler, serve

    from vaestudio.core.sources import download_from_hub

    model = diffusers_tiny(4)
    model.save_pretrained(tmp_path / "hub" / "madebyollin" / "taesd")
    with serve(hub_handler(tmp_path / "hub", [])) as url:
        folder = download_from_hub("madebyollin/taesd", cache_dir=tmp_path / "cache", endpoint=url)
    vae = load_vae(folder)
    assert vae.info.architecture == "taesd" and vae.info.key_layout == "diffusers"


@pytest.mark.skipif(not (WEIGHTS / "taef2_encoder.pth").exists(), reason=f"real weights not found at {WEIGHTS}")
def test_real_taef2_reconstructs_the_astronaut():
    img = load_image(SHARED_IMAGES / "astronaut.png")
    vae = load_vae(WEIGHTS / "taef2_encoder.pth")
    assert (vae.info.family, vae.info.latent_channels, vae.info.model_latent_channels) == ("flux2", 32, 128)
    from vaestudio.core.pipeline import reconstruct

    rec = reconstruct(vae, img)
    assert rec.metrics.psnr >= 30.0, rec.metrics  # the author's code: 31.2 dB
    assert tuple(rec.encoded.raw.shape) == (32, 64, 64) and tuple(rec.encoded.latent.shape) == (128, 32, 32)


def test_pairs_from_a_copied_folder_keep_working(tmp_path):
    """ComfyUI's models/vae_approx holds several pairs: naming one file picks its pair."""
    a_enc, a_dec = random_tiny(4, seed=3)
    b_enc, b_dec = random_tiny(16, seed=4)
    for name, (e, d) in (("taesd", (a_enc, a_dec)), ("taef1", (b_enc, b_dec))):
        torch.save(e, tmp_path / f"{name}_encoder.pth")
        torch.save(d, tmp_path / f"{name}_decoder.pth")
    assert_weights(load_vae(tmp_path / "taef1_decoder.pth"), b_enc, b_dec)
    with pytest.raises(VaeLoadError, match="several tiny autoencoders"):
        load_vae(tmp_path)
