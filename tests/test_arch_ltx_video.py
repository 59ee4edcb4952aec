"""LTX-Video 0.9.x (AutoencoderKLLTXVideo): tiny random models of the real diffusers class in the 0.9.0,
0.9.1 (timestep-conditioned, noise-injecting decoder) and 0.9.5 block layouts, written as a diffusers
folder, the original single file (ComfyUI's keys, converted by diffusers' own single-file converter) and a
diffusers-key file; a 9-frame clip encoded (mean) and decoded equal to diffusers' encode/decode within
1e-5, a 25- and a 33-frame clip in diffusers' temporal tiles (its frame-wise path) equal to it tile by tile,
the model space LTXPipeline's _normalize_latents, the family, kind video with temporal_downscale 8."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.archs import assert_clip_tiles, assert_weights, check_broken, clip, close, perturbed, state
from helpers.temporal import assert_clip_in_tiles, frames_seen, framewise
from safetensors.torch import save_file

from vaestudio.cli import main
from vaestudio.core.sources import load_vae

MODELS: dict[str, torch.nn.Module] = {}


def model_of(kind: str) -> torch.nn.Module:
    from diffusers import AutoencoderKLLTXVideo

    if kind not in MODELS:
        torch.manual_seed(1)
        small = dict(latent_channels=128, layers_per_block=(1, 1, 1, 1, 1))
        if kind == "0.9.0":
            m = AutoencoderKLLTXVideo(block_out_channels=(8, 8, 16, 16), decoder_block_out_channels=(8, 8, 16, 16),
                                      decoder_layers_per_block=(1, 1, 1, 1, 1), **small)
        elif kind == "0.9.1":
            m = AutoencoderKLLTXVideo(
                block_out_channels=(8, 8, 16, 16), decoder_block_out_channels=(8, 16, 32), decoder_layers_per_block=(1,) * 4,
                decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(True, True, True, False),
                upsample_residual=(True,) * 3, upsample_factor=(2, 2, 2), timestep_conditioning=True, **small)
        else:
            m = AutoencoderKLLTXVideo(
                block_out_channels=(8, 8, 16, 16, 32), down_block_types=("LTXVideo095DownBlock3D",) * 4,
                decoder_block_out_channels=(8, 16, 32), decoder_layers_per_block=(1,) * 4, spatio_temporal_scaling=(True,) * 4,
                decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
                downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"), upsample_residual=(True,) * 3,
                upsample_factor=(2, 2, 2), timestep_conditioning=True, spatial_compression_ratio=32,
                temporal_compression_ratio=8, **small)
        perturbed(m)
        with torch.no_grad():  # statistics that are not the identity, so the model space is really checked
            m.latents_mean.copy_(torch.linspace(-0.5, 0.5, 128))
            m.latents_std.copy_(torch.linspace(0.5, 1.5, 128))
        MODELS[kind] = m
    return MODELS[kind]


# the inverse of diffusers' convert_ltx_vae_checkpoint_to_diffusers (its rename tables read backwards)
_DEC_090 = [("mid_block.", "up_blocks.0."), ("up_blocks.0.", "up_blocks.1."), ("up_blocks.1.upsamplers.0.", "up_blocks.2."),
            ("up_blocks.1.", "up_blocks.3."), ("up_blocks.2.conv_in.", "up_blocks.4."),
            ("up_blocks.2.upsamplers.0.", "up_blocks.5."), ("up_blocks.2.", "up_blocks.6."),
            ("up_blocks.3.conv_in.", "up_blocks.7."), ("up_blocks.3.upsamplers.0.", "up_blocks.8."), ("up_blocks.3.", "up_blocks.9.")]
_DEC_091 = [("mid_block.", "up_blocks.0."), ("up_blocks.0.upsamplers.0.", "up_blocks.1."), ("up_blocks.0.", "up_blocks.2."),
            ("up_blocks.1.upsamplers.0.", "up_blocks.3."), ("up_blocks.1.", "up_blocks.4."),
            ("up_blocks.2.upsamplers.0.", "up_blocks.5."), ("up_blocks.2.", "up_blocks.6."), ("time_embedder.", "last_time_embedder."),
            ("scale_shift_table", "last_scale_shift_table")]
_ENC_090 = [("down_blocks.0.downsamplers.0.", "down_blocks.1."), ("down_blocks.0.conv_out.", "down_blocks.2."),
            ("down_blocks.0.", "down_blocks.0."), ("down_blocks.1.downsamplers.0.", "down_blocks.4."),
            ("down_blocks.1.conv_out.", "down_blocks.5."), ("down_blocks.1.", "down_blocks.3."),
            ("down_blocks.2.downsamplers.0.", "down_blocks.7."), ("down_blocks.2.", "down_blocks.6."),
            ("down_blocks.3.", "down_blocks.8."), ("mid_block.", "down_blocks.9.")]


def to_original(sd: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k in ("latents_mean", "latents_std"):
            out["per_channel_statistics." + ("mean-of-means" if k == "latents_mean" else "std-of-means")] = v
            continue
        half, rest = k.split(".", 1)
        for new, old in _ENC_090 if half == "encoder" else (_DEC_091 if kind == "0.9.1" else _DEC_090):
            if rest.startswith(new):
                rest = old + rest[len(new):]
                break
        rest = rest.replace("resnets.", "res_blocks.").replace("conv_shortcut.conv.", "conv_shortcut.").replace(
            "norm3.", "norm3.norm.")
        out[f"{half}.{rest}"] = v
    out["per_channel_statistics.channel"] = torch.arange(128.0)  # in the original files, dropped by the converter
    out["per_channel_statistics.mean-of-stds"] = torch.ones(128)
    return out


def write(kind: str, layout: str, tmp_path):
    m = model_of(kind)
    if layout == "diffusers-folder":
        m.save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    sd = state(m) if layout == "diffusers-file" else to_original(state(m), kind)
    save_file(sd, str(tmp_path / "ltx-video_vae.safetensors"))
    return tmp_path / "ltx-video_vae.safetensors"


def reference(m, x: np.ndarray):
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mean = m.encode(video).latent_dist.mean
        temb = torch.zeros(1) if m.config.timestep_conditioning else None
        torch.manual_seed(0)  # 0.9.1's decoder injects noise from the global generator; vaestudio seeds it 0
        out = m.decode(mean, temb).sample
    return mean[0], (out[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize(("kind", "layout"), [("0.9.0", "comfyui-original"), ("0.9.1", "comfyui-original"),
                                              ("0.9.5", "diffusers-folder"), ("0.9.5", "diffusers-file")])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, kind, layout):
    from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline

    m = model_of(kind)
    vae = load_vae(write(kind, layout, tmp_path))
    assert_weights(vae, state(m))
    info = vae.info
    assert (info.architecture, info.family, info.kind, info.temporal_downscale) == ("ltx-video", "ltx-video", "video", 8)
    assert (info.latent_channels, info.downscale) == (128, 32) and not info.family_guessed
    x = clip(9, 64, 64)
    mean, ref = reference(m, x)
    enc = vae.encode_clip(x)
    assert enc.raw.shape == (128, 2, 2, 2) and enc.frames == 9
    close(enc.raw, mean)
    # the model space is LTXPipeline's own normalisation (and back)
    close(enc.latent, LTXPipeline._normalize_latents(mean[None], m.latents_mean, m.latents_std,
                                                        m.config.scaling_factor)[0])
    close(vae.clip_from_model(enc.latent), mean)
    dec = vae.decode_clip(enc.latent, 64, 64)
    assert dec.complete and dec.frames.shape == (9, 64, 64, 3)
    close(dec.frames, ref)
    # an image is a one-frame clip
    one = vae.encode(x[0])
    close(one.raw, reference(m, x[:1])[0][:, 0])


def test_trimmed_to_one_plus_8k_frames(tmp_path):
    vae = load_vae(write("0.9.0", "comfyui-original", tmp_path))
    assert [vae.frames_valid(n) for n in (1, 8, 9, 16, 17)] == [1, 1, 9, 9, 17]
    enc = vae.encode_clip(clip(10, 64, 64))
    assert enc.frames == 9 and "trimmed 10 frames to 9 (this VAE takes 1 + 8k frames)" in enc.notes
    assert any("in diffusers' temporal tiles (17 frames every 8" in n for n in vae.info.notes)


@pytest.mark.parametrize(("kind", "size", "stride", "frames", "chunks"), [
    ("0.9.0", None, None, 25, [(0, 9), (9, 17), (17, 25)]),  # diffusers' default tiles: 17 frames every 8
    ("0.9.1", None, None, 25, [(0, 9), (9, 17), (17, 25)]),  # its decode noise drawn on from tile to tile
    ("0.9.5", 24, 16, 33, [(0, 17), (17, 33)]),  # tiles set on the model: 25 frames every 16
])
def test_a_clip_longer_than_a_tile_runs_in_diffusers_temporal_tiles(tmp_path, kind, size, stride, frames, chunks):
    m = model_of(kind)
    vae = load_vae(write(kind, "diffusers-folder", tmp_path))
    x = clip(frames, 64, 64, seed=2)
    with framewise(m, vae.model, size=size, stride=stride):
        mean, ref = reference(m, x)  # diffusers' own _temporal_tiled_encode / _temporal_tiled_decode
        with frames_seen(vae.model.encoder) as enc_in, frames_seen(vae.model.decoder) as dec_in:
            assert_clip_in_tiles(vae, x, mean, ref, chunks)
        tile = vae.model.tile_sample_min_num_frames
    assert max(enc_in) == tile + 1 and max(dec_in) == tile // 8 + 1  # memory bounded by one tile


def test_a_clip_one_tile_holds_runs_whole(tmp_path):
    """17 frames: diffusers' frame-wise path would tile it (computing the same frames again); here it runs whole,
    equal to diffusers' default encode/decode. A longer but small clip (25 frames, 64x64: below whole_clip_voxels)
    runs whole too by default, equal to diffusers' default (untiled) encode and decode."""
    m = model_of("0.9.0")
    vae = load_vae(write("0.9.0", "diffusers-folder", tmp_path))
    x = clip(17, 64, 64)
    mean, ref = reference(m, x)
    assert_clip_in_tiles(vae, x, mean, ref, [(0, 17)])
    vae = load_vae(tmp_path / "vae")
    x = clip(25, 64, 64, seed=2)
    mean, ref = reference(m, x)
    enc = vae.encode_clip(x)
    assert enc.chunks == [(0, 25)]
    close(enc.raw, mean)
    close(vae.decode_clip(enc.latent, 64, 64).frames, ref)


def test_cancel_keeps_the_frames_of_the_finished_tiles(tmp_path):
    vae = load_vae(write("0.9.0", "diffusers-folder", tmp_path))
    vae.whole_clip_voxels = 0  # a tiny clip in tiles
    enc = vae.encode_clip(clip(25, 64, 64))
    whole = vae.decode_clip(enc.latent, 64, 64).frames
    steps = []
    dec = vae.decode_clip(enc.latent, 64, 64, progress=lambda i, n: steps.append(i), should_stop=lambda: len(steps) >= 1)
    assert not dec.complete and dec.chunks == [(0, 9)]
    np.testing.assert_array_equal(dec.frames, whole[:9])


def test_inspect_vae_reports_kind_video(tmp_path, capsys):
    path = write("0.9.1", "comfyui-original", tmp_path)
    assert main(["inspect-vae", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["kind"], out["temporal_downscale"], out["architecture"]) == ("video", 8, "ltx-video")
    assert out["key_layout"] == "original"


def test_broken_files_fail_in_one_sentence(tmp_path, capsys):
    from helpers.data import photo

    sd = to_original(state(model_of("0.9.0")), "0.9.0")
    check_broken(tmp_path, sd, "decoder.conv_in.conv.weight", photo(tmp_path), capsys, name="ltx_video_vae")


def test_latent_to_rgb_factors_are_comfyuis():
    from vaestudio.core.families import latent_rgb_factors

    factors, bias = latent_rgb_factors("ltx-video")  # ComfyUI's latent_formats, one row per latent channel
    assert len(factors) == 128 and all(len(r) == 3 for r in factors) and len(bias) == 3


def test_a_hub_id_through_the_cache(tmp_path):
    from helpers.archs import load_from_hub, save_hub_repo

    m = model_of("0.9.5")
    save_hub_repo(m, tmp_path / "hub", "Lightricks/LTX-Video", "vae")  # a pipeline repository with vae/
    vae = load_from_hub(tmp_path, "Lightricks/LTX-Video")
    assert vae.info.architecture == "ltx-video" and vae.info.kind == "video"
    assert_weights(vae, state(m))


def test_clip_tiles_are_the_model_on_each_tile(tmp_path):
    """Large frames: the clip tiled spatially (128 px tiles overlapping by 64 at 32x), blended linearly."""
    assert_clip_tiles(load_vae(write("0.9.5", "diffusers-folder", tmp_path)), clip(9, 128, 192, seed=7), scale=4)
