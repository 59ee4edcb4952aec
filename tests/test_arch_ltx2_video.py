"""LTX-2 (AutoencoderKLLTX2Video): tiny random models of the real diffusers class in LTX-2.0's and LTX-2.3's
block layouts, written as the original single file (converted by diffusers' own single-file converter), a
diffusers folder and a diffusers-key file; a 9-frame clip encoded (mean) and decoded equal to diffusers'
encode/decode within 1e-5, a 25- and a 33-frame clip in diffusers' temporal tiles (its frame-wise path) equal to
it tile by tile, the model space LTX2Pipeline's _normalize_latents, LTX-2 told from LTX-Video
0.9.5 (the same keys), the family from the decoder, kind video with temporal_downscale 8."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.archs import assert_weights, clip, close, perturbed, state
from helpers.temporal import assert_clip_in_tiles, frames_seen, framewise
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.registry import recognise
from vaestudio.core.sources import load_vae
from vaestudio.core.weights import read_weight_file

MODELS: dict[str, torch.nn.Module] = {}


def model_of(kind: str) -> torch.nn.Module:
    from diffusers import AutoencoderKLLTX2Video

    if kind not in MODELS:
        torch.manual_seed(5)
        # what shapes cannot show is the published configs' (a single file gets those): decoder_causal False
        small = dict(latent_channels=128, layers_per_block=(1,) * 5, spatial_compression_ratio=32, decoder_causal=False,
                     temporal_compression_ratio=8)
        if kind == "2.0":
            m = AutoencoderKLLTX2Video(block_out_channels=(8, 16, 16, 32), decoder_block_out_channels=(8, 16, 32),
                                       decoder_layers_per_block=(1,) * 4, **small)
        else:  # LTX-2.3: a fourth up block, a temporal-only and a spatial-only upsampler
            m = AutoencoderKLLTX2Video(
                block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 16, 32),
                decoder_layers_per_block=(1,) * 5, decoder_spatio_temporal_scaling=(True,) * 4,
                decoder_inject_noise=(False,) * 5, upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
                upsample_residual=(False,) * 4, upsample_factor=(2, 2, 1, 2), decoder_spatial_padding_mode="zeros", **small)
        perturbed(m)
        with torch.no_grad():
            m.latents_mean.copy_(torch.linspace(-0.5, 0.5, 128))
            m.latents_std.copy_(torch.linspace(0.5, 1.5, 128))
        MODELS[kind] = m
    return MODELS[kind]


# the inverse of diffusers' convert_ltx2_vae_to_diffusers (and the conversion script's LTX-2.3 block)
_ENC = [("down_blocks.0.downsamplers.0.", "down_blocks.1."), ("down_blocks.0.", "down_blocks.0."),
        ("down_blocks.1.downsamplers.0.", "down_blocks.3."), ("down_blocks.1.", "down_blocks.2."),
        ("down_blocks.2.downsamplers.0.", "down_blocks.5."), ("down_blocks.2.", "down_blocks.4."),
        ("down_blocks.3.downsamplers.0.", "down_blocks.7."), ("down_blocks.3.", "down_blocks.6."), ("mid_block.", "down_blocks.8.")]
_DEC = [("mid_block.", "up_blocks.0."), ("up_blocks.0.upsamplers.0.", "up_blocks.1."), ("up_blocks.0.", "up_blocks.2."),
        ("up_blocks.1.upsamplers.0.", "up_blocks.3."), ("up_blocks.1.", "up_blocks.4."),
        ("up_blocks.2.upsamplers.0.", "up_blocks.5."), ("up_blocks.2.", "up_blocks.6."),
        ("up_blocks.3.upsamplers.0.", "up_blocks.7."), ("up_blocks.3.", "up_blocks.8.")]


def to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k in ("latents_mean", "latents_std"):
            out["per_channel_statistics." + ("mean-of-means" if k == "latents_mean" else "std-of-means")] = v
            continue
        half, rest = k.split(".", 1)
        for new, old in _ENC if half == "encoder" else _DEC:
            if rest.startswith(new):
                rest = old + rest[len(new):]
                break
        out[f"{half}.{rest.replace('resnets.', 'res_blocks.')}"] = v
    out["per_channel_statistics.channel"] = torch.arange(128.0)
    out["per_channel_statistics.mean-of-stds"] = torch.ones(128)
    return out


def write(kind: str, layout: str, tmp_path, name: str = "vae"):
    m = model_of(kind)
    if layout == "diffusers-folder":
        m.save_pretrained(tmp_path / name)
        return tmp_path / name
    sd = state(m) if layout == "diffusers-file" else to_original(state(m))
    save_file(sd, str(tmp_path / f"{name}.safetensors"))
    return tmp_path / f"{name}.safetensors"


@pytest.mark.parametrize(("kind", "layout"), [("2.0", "comfyui-original"), ("2.3", "comfyui-original"),
                                              ("2.0", "diffusers-folder"), ("2.3", "diffusers-file")])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, kind, layout):
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

    m = model_of(kind)
    vae = load_vae(write(kind, layout, tmp_path))
    assert_weights(vae, state(m))
    info = vae.info
    family = "ltx2" if kind == "2.0" else "ltx2.3"
    assert (info.architecture, info.family, info.kind, info.temporal_downscale) == ("ltx2-video", family, "video", 8)
    assert (info.latent_channels, info.downscale) == (128, 32)
    x = clip(9, 64, 64)
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mean = m.encode(video).latent_dist.mean
        ref = (m.decode(mean).sample[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    enc = vae.encode_clip(x)
    assert enc.raw.shape == (128, 2, 2, 2)
    close(enc.raw, mean[0])
    close(enc.latent, LTX2Pipeline._normalize_latents(mean, m.latents_mean, m.latents_std, m.config.scaling_factor)[0])
    dec = vae.decode_clip(enc.latent, 64, 64)
    assert dec.complete and dec.frames.shape == (9, 64, 64, 3)
    close(dec.frames, ref)


@pytest.mark.parametrize(("kind", "size", "stride", "frames", "chunks"), [
    ("2.0", None, None, 25, [(0, 9), (9, 17), (17, 25)]),  # diffusers' default tiles: 17 frames every 8
    ("2.3", 24, 16, 33, [(0, 17), (17, 33)]),  # tiles set on the model: 25 frames every 16
])
def test_a_clip_longer_than_a_tile_runs_in_diffusers_temporal_tiles(tmp_path, kind, size, stride, frames, chunks):
    m = model_of(kind)
    vae = load_vae(write(kind, "diffusers-folder", tmp_path))
    x = clip(frames, 64, 64, seed=2)
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with framewise(m, vae.model, size=size, stride=stride):
        with torch.no_grad():  # diffusers' own _temporal_tiled_encode / _temporal_tiled_decode
            mean = m.encode(video).latent_dist.mean
            ref = (m.decode(mean).sample[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()
        with frames_seen(vae.model.encoder) as enc_in, frames_seen(vae.model.decoder) as dec_in:
            assert_clip_in_tiles(vae, x, mean[0], ref, chunks)
        tile = vae.model.tile_sample_min_num_frames
    assert max(enc_in) == tile + 1 and max(dec_in) == tile // 8 + 1  # memory bounded by one tile


def test_told_from_ltx_video_by_name_and_timestep_conditioning(tmp_path, capsys):
    path = write("2.0", "comfyui-original", tmp_path, name="ltx-2-19b_vae")
    assert load_vae(path).info.architecture == "ltx2-video"
    # the same weights named as an LTX-Video file are claimed by LTX-Video (their keys are the same)
    path = write("2.0", "comfyui-original", tmp_path, name="ltx-video-0.9.5_vae")
    assert recognise(read_weight_file(path), path).name == "ltx-video"
    path = write("2.0", "comfyui-original", tmp_path)
    assert main(["inspect-vae", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["architecture"], out["kind"], out["temporal_downscale"]) == ("ltx2-video", "video", 8)
    assert any("without timestep conditioning" in n for n in out["notes"])



def test_a_hub_id_through_the_cache(tmp_path):
    from helpers.archs import load_from_hub, save_hub_repo

    m = model_of("2.0")
    save_hub_repo(m, tmp_path / "hub", "Lightricks/LTX-2", "vae")  # a pipeline repository with vae/
    vae = load_from_hub(tmp_path, "Lightricks/LTX-2")
    assert vae.info.architecture == "ltx2-video" and vae.info.kind == "video"
    assert_weights(vae, state(m))
