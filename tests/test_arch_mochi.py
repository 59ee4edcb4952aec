"""Mochi 1 (AutoencoderKLMochi): a tiny random model of the real diffusers class (attention in the encoder,
the published temporal and spatial expansions) as a diffusers folder and a diffusers-key single file; a
7-frame clip encoded (mean) and decoded equal to diffusers' encode/decode within 1e-5, the model space
MochiPipeline's own latent code, kind video with temporal_downscale 6; genmo's original file named."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.archs import assert_weights, check_broken, close, perturbed, state
from safetensors.torch import save_file
from test_arch_wan_video import clip

from vaestudio.cli import main
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.sources import load_vae

MODEL: list[torch.nn.Module] = []


def model() -> torch.nn.Module:
    from diffusers import AutoencoderKLMochi

    if not MODEL:
        torch.manual_seed(2)
        MODEL.append(perturbed(AutoencoderKLMochi(encoder_block_out_channels=(32, 32, 32, 64),
                                                  decoder_block_out_channels=(32, 32, 32, 64),
                                                  layers_per_block=(1, 1, 1, 1, 1), scaling_factor=1.3)))
    return MODEL[0]


def write(layout: str, tmp_path):
    if layout == "diffusers-folder":
        model().save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    save_file(state(model()), str(tmp_path / "mochi_vae.safetensors"))
    return tmp_path / "mochi_vae.safetensors"


@pytest.mark.parametrize("layout", ["diffusers-folder", "diffusers-file"])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, layout):
    m = model()
    vae = load_vae(write(layout, tmp_path))
    assert_weights(vae, state(m))
    info = vae.info
    assert (info.architecture, info.family, info.kind, info.temporal_downscale) == ("mochi", "mochi", "video", 6)
    assert (info.latent_channels, info.downscale) == (12, 8)
    x = clip(7, 32, 32)
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mean = m.encode(video).latent_dist.mean
        ref = (m.decode(mean).sample[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    enc = vae.encode_clip(x)
    assert enc.raw.shape == (12, 2, 4, 4) and enc.frames == 7
    close(enc.raw, mean[0])
    dec = vae.decode_clip(enc.latent, 32, 32)
    assert dec.complete and dec.frames.shape == (7, 32, 32, 3)
    close(dec.frames, ref)
    # MochiPipeline's latent code: it decodes latents * latents_std / scaling_factor + latents_mean
    c = m.config
    mu, sd = torch.tensor(c.latents_mean).view(12, 1, 1, 1), torch.tensor(c.latents_std).view(12, 1, 1, 1)
    scale = 1.3 if layout == "diffusers-folder" else 1.0  # a single file has no config: the published scale 1.0
    close(vae.clip_from_model(enc.latent), mean[0])
    close(enc.latent * sd / scale + mu, mean[0])
    assert [vae.frames_valid(n) for n in (1, 6, 7, 12, 13)] == [1, 1, 7, 7, 13]


def test_inspect_vae_and_the_original_file(tmp_path, capsys):
    assert main(["inspect-vae", str(write("diffusers-file", tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["kind"], out["temporal_downscale"], out["family"]) == ("video", 6, "mochi")
    original = tmp_path / "mochi_vae_bf16.safetensors"  # genmo's decoder keys (ComfyUI's marker)
    save_file({"blocks.2.blocks.3.stack.5.weight": torch.zeros(4), "blocks.0.0.weight": torch.zeros(8, 12, 1, 1, 1)},
              str(original))
    with pytest.raises(VaeLoadError, match="original .*Mochi"):
        load_vae(original)


def test_broken_files_fail_in_one_sentence(tmp_path, capsys):
    from helpers.data import photo

    check_broken(tmp_path, state(model()), "decoder.conv_in.weight", photo(tmp_path), capsys, name="mochi_vae")


def test_latent_to_rgb_factors_are_comfyuis():
    from vaestudio.core.families import latent_rgb_factors

    factors, bias = latent_rgb_factors("mochi")  # ComfyUI's latent_formats, one row per latent channel
    assert len(factors) == 12 and all(len(r) == 3 for r in factors) and len(bias) == 3
