"""Mochi 1 (AutoencoderKLMochi): a tiny random model of the real diffusers class (attention in the encoder,
the published temporal and spatial expansions) as a diffusers folder and a diffusers-key single file; a
7-frame clip encoded (mean) and decoded equal to diffusers' encode/decode within 1e-5, the model space
MochiPipeline's own latent code, kind video with temporal_downscale 6; genmo's original file named."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers.archs import assert_clip_tiles, assert_weights, check_broken, clip, close, perturbed, state
from safetensors.torch import save_file

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


_STACK = {"norm1.norm_layer": "0", "conv1.conv": "2", "norm2.norm_layer": "3", "conv2.conv": "5"}


def to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' keys to genmo's (the inverse of diffusers' scripts/convert_mochi_to_diffusers.py), in one file."""
    cfg = model().config
    n0, nd = cfg.layers_per_block[0], len(cfg.temporal_expansions)
    where = {"encoder.block_in": lambda i: f"encoder.layers.{i + 1}", "encoder.block_out": lambda i: f"encoder.layers.{1 + n0 + nd + i}",
             "decoder.block_in": lambda i: f"decoder.blocks.0.{i + 1}", "decoder.block_out": lambda i: f"decoder.blocks.{nd + 1}.{i}"}
    for b in range(nd):
        where[f"encoder.down_blocks.{b}"] = lambda i, b=b: f"encoder.layers.{1 + n0 + b}.layers.{i + 1}"
        where[f"decoder.up_blocks.{b}"] = lambda i, b=b: f"decoder.blocks.{b + 1}.blocks.{i}"
    out, qkv = {}, {}
    for k, v in sd.items():
        m = re.match(r"^(.*)\.(resnets|attentions|norms)\.(\d+)\.(.*)$", k)
        if m and m.group(1) in where:
            base, kind, i, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            at = where[base](i)
            if kind == "resnets":
                part, param = rest.rsplit(".", 1)
                out[f"{at}.stack.{_STACK[part]}.{param}"] = v
            elif kind == "norms":
                out[f"{at}.attn_block.norm.{rest.split('.', 1)[1]}"] = v
            elif rest.startswith("to_out.0."):
                out[f"{at}.attn_block.attn.out.{rest[len('to_out.0.'):]}"] = v
            else:
                qkv.setdefault(at, {})[rest.split(".")[0]] = v
            continue
        m = re.match(r"^encoder\.down_blocks\.(\d+)\.conv_in\.conv\.(.*)$", k)
        m2 = re.match(r"^decoder\.up_blocks\.(\d+)\.proj\.(.*)$", k)
        if m:
            out[f"encoder.layers.{1 + n0 + int(m.group(1))}.layers.0.{m.group(2)}"] = v
        elif m2:
            out[f"decoder.blocks.{int(m2.group(1)) + 1}.proj.{m2.group(2)}"] = v
        else:
            for new, old in (("encoder.proj_in.", "encoder.layers.0."), ("encoder.norm_out.norm_layer.", "encoder.output_norm."),
                             ("encoder.proj_out.", "encoder.output_proj."), ("decoder.conv_in.", "decoder.blocks.0.0."),
                             ("decoder.proj_out.", "decoder.output_proj.")):
                if k.startswith(new):
                    k = old + k[len(new):]
            out[k] = v
    for at, parts in qkv.items():
        out[f"{at}.attn_block.attn.qkv.weight"] = torch.cat([parts["to_q"], parts["to_k"], parts["to_v"]])
    return out


def write(layout: str, tmp_path):
    if layout == "diffusers-folder":
        model().save_pretrained(tmp_path / "vae")
        return tmp_path / "vae"
    sd = state(model()) if layout == "diffusers-file" else to_original(state(model()))
    save_file(sd, str(tmp_path / "mochi_vae.safetensors"))
    return tmp_path / "mochi_vae.safetensors"


@pytest.mark.parametrize("layout", ["diffusers-folder", "diffusers-file", "original"])
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
    half = tmp_path / "mochi_decoder.safetensors"  # genmo's decoder file alone (ComfyUI's marker key, no prefix)
    save_file({"blocks.2.blocks.3.stack.5.weight": torch.zeros(4), "blocks.0.0.weight": torch.zeros(8, 12, 1, 1, 1)},
              str(half))
    with pytest.raises(VaeLoadError, match="one half of a Mochi VAE in genmo's original keys"):
        load_vae(half)
    decoder_only = tmp_path / "mochi_vae_decoder_only.safetensors"
    save_file({k: v for k, v in to_original(state(model())).items() if k.startswith("decoder.")}, str(decoder_only))
    with pytest.raises(VaeLoadError, match="holds only a Mochi VAE decoder; the encoder is missing"):
        load_vae(decoder_only)


def test_broken_files_fail_in_one_sentence(tmp_path, capsys):
    from helpers.data import photo

    check_broken(tmp_path, state(model()), "decoder.conv_in.weight", photo(tmp_path), capsys, name="mochi_vae")


def test_latent_to_rgb_factors_are_comfyuis():
    from vaestudio.core.families import latent_rgb_factors

    factors, bias = latent_rgb_factors("mochi")  # ComfyUI's latent_formats, one row per latent channel
    assert len(factors) == 12 and all(len(r) == 3 for r in factors) and len(bias) == 3


def test_a_hub_id_through_the_cache(tmp_path):
    from helpers.archs import load_from_hub, save_hub_repo

    m = model()
    save_hub_repo(m, tmp_path / "hub", "genmo/mochi-1-preview", "vae")  # a pipeline repository with vae/
    vae = load_from_hub(tmp_path, "genmo/mochi-1-preview")
    assert vae.info.architecture == "mochi" and vae.info.kind == "video"
    assert_weights(vae, state(m))


def test_clip_tiles_are_the_model_on_each_tile(tmp_path):
    """Large frames: each spatial tile the whole clip, blended linearly (the clip is not split in time: diffusers'
    Mochi encoder has no temporal tiles)."""
    assert_clip_tiles(load_vae(write("diffusers-folder", tmp_path)), clip(7, 32, 48, seed=7))
