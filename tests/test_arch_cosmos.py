"""Cosmos 1.0 tokenizer (AutoencoderKLCosmos): a tiny random model of the real diffusers class (Haar patcher,
factorised convolutions, attention) as a diffusers folder, a diffusers-key file and the original tokenizer
keys (renamed with diffusers' conversion table); a 9-frame clip encoded and decoded equal to diffusers'
encode/decode within 1e-5, the model space CosmosVideoToWorldPipeline's (per channel and latent frame,
sigma_data), kind video with temporal_downscale 8, and a clip longer than the statistics refused."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.archs import assert_weights, check_broken, clip, close, perturbed, state
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.archs.cosmos import RENAME, original_to_diffusers
from vaestudio.core.errors import VaeStudioError
from vaestudio.core.sources import load_vae

MODEL: list[torch.nn.Module] = []
FRAMES = 3  # latent frames the tiny model's statistics cover (the published ones: 16)


def model() -> torch.nn.Module:
    from diffusers import AutoencoderKLCosmos

    if not MODEL:
        torch.manual_seed(4)
        MODEL.append(perturbed(AutoencoderKLCosmos(
            encoder_block_out_channels=(16, 32, 32, 32), decode_block_out_channels=(32, 32, 32, 32), num_layers=1,
            attention_resolutions=(16,), resolution=64, latents_mean=torch.linspace(-0.3, 0.3, 16 * FRAMES).tolist(),
            latents_std=torch.linspace(0.5, 1.5, 16 * FRAMES).tolist())))
    return MODEL[0]


def to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for old, new in reversed(RENAME):
            k = k.replace(new, old)
        out[k] = v
    out["encoder.patcher3d.wavelets"] = torch.tensor([0.7071, 0.7071])  # the tokenizer's constants, dropped
    out[_ORIG_MARK] = torch.tensor([0.7071, 0.7071])
    return out


_ORIG_MARK = "decoder.unpatcher3d.wavelets"


def write(layout: str, tmp_path):
    if layout == "diffusers-folder":
        model().save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    sd = state(model())
    if layout == "original":
        sd = to_original(sd)
        assert original_to_diffusers(dict(sd)).keys() == state(model()).keys()  # the table round-trips
    save_file(sd, str(tmp_path / "cosmos_cv8x8x8.safetensors"))
    return tmp_path / "cosmos_cv8x8x8.safetensors"


@pytest.mark.parametrize("layout", ["diffusers-folder", "diffusers-file", "original"])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, layout):
    m = model()
    vae = load_vae(write(layout, tmp_path))
    assert_weights(vae, state(m))
    info = vae.info
    assert (info.architecture, info.family, info.kind, info.temporal_downscale) == ("cosmos", "cosmos", "video", 8)
    assert (info.latent_channels, info.downscale) == (16, 8)
    x = clip(9, 32, 32)
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        z = m.encode(video).latent_dist.mode()
    enc = vae.encode_clip(x)
    assert enc.raw.shape == (16, 2, 4, 4) and enc.frames == 9
    close(enc.raw, z[0])
    # decoded from the latent vaestudio decodes (the model-space round trip's float rounding, ~1e-7, grows through
    # the perturbed decoder to ~1e-5; the round trip itself is checked below)
    with torch.no_grad():
        ref = (m.decode(vae.clip_from_model(enc.latent)[None]).sample[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    dec = vae.decode_clip(enc.latent, 32, 32)
    assert dec.complete and dec.frames.shape == (9, 32, 32, 3)
    close(dec.frames, ref)
    close(vae.clip_from_model(enc.latent), z[0])
    if layout == "diffusers-folder":
        # CosmosVideoToWorldPipeline.prepare_latents: (z - mean) * sigma_data / std, statistics per latent frame
        from diffusers import EDMEulerScheduler

        sigma = EDMEulerScheduler().config.sigma_data
        mean = torch.tensor(m.config.latents_mean).view(1, 16, -1, 1, 1)[:, :, :2]
        std = torch.tensor(m.config.latents_std).view(1, 16, -1, 1, 1)[:, :, :2]
        close(enc.latent, ((z - mean) * sigma / std)[0])
        # more latent frames than the statistics cover: one sentence
        with pytest.raises(VaeStudioError, match="cover 3 latent frames"):
            vae.encode_clip(clip(25, 32, 32))


def test_inspect_vae_reports_kind_video(tmp_path, capsys):
    assert main(["inspect-vae", str(write("original", tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["kind"], out["temporal_downscale"], out["key_layout"]) == ("video", 8, "original")


def test_broken_files_fail_in_one_sentence(tmp_path, capsys):
    from helpers.data import photo

    check_broken(tmp_path, state(model()), "decoder.conv_in.conv_s.weight", photo(tmp_path), capsys, name="cosmos_vae")


def test_latent_to_rgb_factors_are_comfyuis():
    from vaestudio.core.families import latent_rgb_factors

    factors, bias = latent_rgb_factors("cosmos")  # ComfyUI's latent_formats, one row per latent channel
    assert len(factors) == 16 and all(len(r) == 3 for r in factors) and len(bias) == 3


def test_a_hub_id_through_the_cache(tmp_path):
    from helpers.archs import load_from_hub, save_hub_repo

    m = model()
    save_hub_repo(m, tmp_path / "hub", "nvidia/Cosmos-1.0-Diffusion-7B-Text2World", "vae")  # a pipeline repository with vae/
    vae = load_from_hub(tmp_path, "nvidia/Cosmos-1.0-Diffusion-7B-Text2World")
    assert vae.info.architecture == "cosmos" and vae.info.kind == "video"
    assert_weights(vae, state(m))


def test_bf16_asked_for_falls_back_to_fp32_where_torch_has_no_kernel(tmp_path):
    """torch's CPU avg_pool3d (Cosmos' downsamplers) has no bf16 kernel: ``--dtype bf16`` computes the clip in
    fp32 on the bf16 weights it loaded (equal to an fp32 run of bf16-rounded weights) and says why, instead of
    stopping with NotImplementedError."""
    path = write("diffusers-file", tmp_path)
    x = clip(9, 32, 32)
    rounded = load_vae(path, dtype="fp32")
    rounded.model.to(torch.bfloat16).to(torch.float32)
    fp32 = rounded.encode_clip(x)
    vae = load_vae(path, dtype="bf16")
    enc = vae.encode_clip(x)
    assert any("bf16 has no cpu kernel here" in n and "retried in fp32" in n for n in enc.notes), enc.notes
    assert vae.dtype == torch.float32 and "fp32 since" in vae.dtype_reason
    close(enc.raw, fp32.raw)
    assert vae.decode_clip(enc.latent, 32, 32).complete
