"""The Wan temporal path (Wan 2.1, Wan 2.2 TI2V-5B): a 9-frame clip encoded (mean) and decoded equal to
diffusers' own AutoencoderKLWan.encode / decode within 1e-5, the model space the Wan pipelines' latent
code, chunked decoding (iter_decode_clip) equal to the whole, the ComfyUI single file, trimming, progress
and cancellation per chunk, and inspect-vae's kind / temporal_downscale.

Tiny random models of the real diffusers class (perturbed weights), 32x32 frames: the code paths real
Wan files take, in a few seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.archs import ZeroTransformer, clip, close, pipeline_quiet, scheduler
from helpers.wan import model_of, write

from vaestudio.cli import main
from vaestudio.core.sources import load_vae


def reference(m, x: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """diffusers' own AutoencoderKLWan on the whole clip: encode(...).latent_dist.mean and decode(mean)."""
    video = torch.from_numpy(x).permute(3, 0, 1, 2)[None] * 2 - 1  # (1, 3, T, H, W) in [-1, 1]
    with torch.no_grad():
        mean = m.encode(video).latent_dist.mean
        out = m.decode(mean).sample
    return mean[0], (out[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).numpy()


def normalised(m, mean: torch.Tensor) -> torch.Tensor:
    """The Wan pipelines' latent code: (z - latents_mean) * (1 / latents_std) per channel."""
    c = m.config
    return (mean - torch.tensor(c.latents_mean).view(-1, 1, 1, 1)) * (1.0 / torch.tensor(c.latents_std).view(-1, 1, 1, 1))


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
@pytest.mark.parametrize("layout", ["diffusers-folder", "comfyui-safetensors"])
def test_clip_encode_and_decode_equal_diffusers(tmp_path, kind, layout):
    m = model_of(kind)
    vae = load_vae(write(kind, layout, tmp_path))
    assert (vae.info.kind, vae.info.temporal_downscale) == ("video", 4)
    x = clip()
    mean, ref = reference(m, x)
    steps = []
    enc = vae.encode_clip(x, progress=lambda i, n: steps.append((i, n)))
    channels, f = (16, 8) if kind == "wan2.1" else (48, 16)
    assert enc.raw.shape == (channels, 3, 32 // f, 32 // f) and enc.frames == 9
    assert enc.chunks == [(0, 1), (1, 5), (5, 9)] and steps == [(1, 3), (2, 3), (3, 3)]
    close(enc.raw, mean)
    close(enc.latent, normalised(m, mean))
    close(vae.clip_from_model(enc.latent), mean)

    steps.clear()
    dec = vae.decode_clip(enc.latent, 32, 32, progress=lambda i, n: steps.append((i, n)))
    assert dec.complete and dec.frames.shape == (9, 32, 32, 3) and dec.chunks == [(0, 1), (1, 5), (5, 9)]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    close(dec.frames, ref)

    parts = list(vae.iter_decode_clip(enc.latent, 32, 32))  # frames as they come, chunk by chunk
    assert [(s, len(p)) for s, p in parts] == [(0, 1), (1, 4), (5, 4)]
    np.testing.assert_array_equal(np.concatenate([p for _, p in parts]), dec.frames)


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_model_space_decodes_as_the_wan_pipeline_does(tmp_path, kind):
    """WanPipeline run on our model-space clip latent with a zero-velocity transformer gives our frames."""
    from diffusers.pipelines.wan.pipeline_wan import WanPipeline

    m = model_of(kind)
    vae = load_vae(write(kind, "diffusers-folder", tmp_path))
    enc = vae.encode_clip(clip(seed=5))
    pipe = pipeline_quiet(WanPipeline(scheduler=scheduler(), vae=m, text_encoder=None, tokenizer=None,
                                      transformer=ZeroTransformer(in_channels=m.config.z_dim, patch_size=(1, 2, 2))))
    with torch.no_grad():
        frames = pipe(prompt_embeds=torch.zeros(1, 4, 8), latents=enc.latent[None], height=32, width=32, num_frames=9,
                      num_inference_steps=1, guidance_scale=1.0, output_type="pt").frames
    close(vae.decode_clip(enc.latent, 32, 32).frames, frames[0].permute(0, 2, 3, 1))


def test_trimmed_to_one_plus_4k_frames_with_a_note(tmp_path):
    m = model_of("wan2.1")
    vae = load_vae(write("wan2.1", "comfyui-safetensors", tmp_path))
    assert [vae.frames_valid(n) for n in (1, 2, 4, 5, 9, 10, 12, 13)] == [1, 1, 1, 5, 9, 9, 9, 13]
    x = clip(10)
    enc = vae.encode_clip(x)
    assert enc.frames == 9 and enc.original.shape == (9, 32, 32, 3)
    assert "trimmed 10 frames to 9 (this VAE takes 1 + 4k frames)" in enc.notes
    np.testing.assert_array_equal(enc.original, x[:9])
    close(enc.raw, reference(m, x[:9])[0])
    # one frame is an image: the clip path and the one-frame (2D) speed-up agree
    one = vae.encode_clip(x[:1])
    assert one.chunks == [(0, 1)]
    close(one.raw[:, 0], vae.encode(x[0]).raw)
    close(vae.decode_clip(one.latent, 32, 32).frames[0], vae.decode(one.latent[:, 0], 32, 32).pixels)


def test_cancel_mid_clip_keeps_the_decoded_frames(tmp_path):
    vae = load_vae(write("wan2.1", "diffusers-folder", tmp_path))
    enc = vae.encode_clip(clip())
    whole = vae.decode_clip(enc.latent, 32, 32).frames
    steps = []
    dec = vae.decode_clip(enc.latent, 32, 32, progress=lambda i, n: steps.append(i),
                          should_stop=lambda: len(steps) >= 2)
    assert not dec.complete and dec.chunks == [(0, 1), (1, 5)] and len(dec.frames) == 5
    np.testing.assert_array_equal(dec.frames, whole[:5])
    # a stop asked inside a chunk (before a residual block) ends the generator cleanly
    asked = []
    parts = list(vae.iter_decode_clip(enc.latent, 32, 32, should_stop=lambda: asked.append(1) or len(asked) > 3))
    assert parts == [] and len(asked) == 4


def test_qwen_image_stays_an_image_vae(tmp_path):
    vae = load_vae(write("qwen-image", "diffusers-folder", tmp_path))
    assert (vae.info.kind, vae.info.temporal_downscale, vae.frames_valid(10)) == ("image", 1, 10)
    x = clip(3)
    enc = vae.encode_clip(x)
    assert "an image VAE: the clip is encoded frame by frame" in enc.notes
    close(enc.raw[:, 2], vae.encode(x[2]).raw)


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2", "qwen-image"])
def test_inspect_vae_json_says_kind_and_temporal_downscale(tmp_path, capsys, kind):
    path = write(kind, "diffusers-folder" if kind == "qwen-image" else "comfyui-safetensors", tmp_path)
    assert main(["inspect-vae", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    want = ("image", 1) if kind == "qwen-image" else ("video", 4)
    assert (info["architecture"], info["kind"], info["temporal_downscale"]) == ("wan", *want)
    assert main(["inspect-vae", str(path)]) == 0
    text = capsys.readouterr().out
    assert ("kind:            video (temporal_downscale 4)" in text) == (kind != "qwen-image")


def test_clip_tiles_are_the_model_on_each_tile(tmp_path):
    """Two tiles side by side (32 px, overlapping by 16), each with its own causal cache: the tiled clip is
    each tile's untiled clip where only one covers it, and their linear blend where both do."""
    vae = load_vae(write("wan2.1", "diffusers-folder", tmp_path))
    vae.encode_tile, vae.tile_overlap = 32, 16
    x = clip(5, 32, 48, seed=7)
    tiled = vae.encode_clip(x, tile="on")
    left, right = vae.encode_clip(x[:, :, :32], tile="off").raw, vae.encode_clip(x[:, :, 16:], tile="off").raw
    assert tiled.tiled and tiled.raw.shape == (16, 2, 4, 6) and tiled.chunks == [(0, 1), (1, 5)]
    close(tiled.raw[..., :2], left[..., :2])
    close(tiled.raw[..., 4:], right[..., 2:])
    close(tiled.raw[..., 2], left[..., 2] * 2 / 3 + right[..., 0] / 3)  # the 2 shared latent columns, ramped
    close(tiled.raw[..., 3], left[..., 3] / 3 + right[..., 1] * 2 / 3)

    z = tiled.latent
    dec = vae.decode_clip(z, 32, 48, tile="on")
    a = vae.decode_clip(z[..., :4], 32, 32, tile="off").frames
    b = vae.decode_clip(z[..., 2:], 32, 32, tile="off").frames
    assert dec.tiled and dec.complete and dec.frames.shape == (5, 32, 48, 3)
    close(dec.frames[:, :, :16], a[:, :, :16])
    close(dec.frames[:, :, 32:], b[:, :, 16:])
    ramp = (np.arange(1, 17, dtype=np.float32) / 17)[None, None, :, None]  # the right tile's weight
    close(dec.frames[:, :, 16:32], a[:, :, 16:] * (1 - ramp) + b[:, :, :16] * ramp)


def test_out_of_memory_falls_back_to_tiles(tmp_path):
    from vaestudio.core.errors import VaeStudioError

    vae = load_vae(write("wan2.1", "diffusers-folder", tmp_path))
    vae.encode_tile, vae.tile_overlap = 32, 16
    x = clip(5, 32, 48, seed=7)
    want_enc = vae.encode_clip(x, tile="on")
    want_dec = vae.decode_clip(want_enc.latent, 32, 48, tile="on").frames
    for half, limit in (("encoder", 32 * 32), ("decoder", 4 * 4)):  # more than one tile runs out of memory
        module = getattr(vae.model, half)
        real = module.forward

        def forward(x, *a, real=real, limit=limit, **k):
            if x.shape[-1] * x.shape[-2] > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return real(x, *a, **k)

        module.forward = forward
    enc = vae.encode_clip(x)
    assert enc.tiled and "ran out of memory; retried with tiles" in enc.notes
    close(enc.raw, want_enc.raw)
    dec = vae.decode_clip(enc.latent, 32, 48)
    assert dec.tiled and dec.complete and "ran out of memory; retried with tiles" in dec.notes
    close(dec.frames, want_dec)
    with pytest.raises(VaeStudioError, match="ran out of memory"):
        vae.encode_clip(x, tile="off")
    with pytest.raises(VaeStudioError, match="ran out of memory"):
        vae.decode_clip(enc.latent, 32, 48, tile="off")


def test_memory_is_bounded_by_the_chunk_not_the_clip():
    """The causal cache carries at most 2 frames per convolution, whatever the clip's length: after the
    first chunks its size stays the same however many more latent frames are decoded or encoded."""
    from vaestudio.core.archs._wan_video import Stream

    def cached(stream: Stream) -> tuple[int, int]:
        tensors = [c for c in stream.cache if isinstance(c, torch.Tensor)]
        return max(c.shape[2] for c in tensors), sum(c.numel() for c in tensors)

    m = model_of("wan2.1")
    with torch.no_grad():
        enc, dec = Stream(m, "encoder", 1), Stream(m, "decoder", 1)
        x = torch.from_numpy(clip(17)).permute(3, 0, 1, 2)[None] * 2 - 1
        sizes = []
        for s in range(1, 17, 4):
            if s == 1:
                enc.encode(x[:, :, :1])
            enc.encode(x[:, :, s : s + 4])
            sizes.append(cached(enc))
        assert sizes[1:] == sizes[1:2] * 3 and sizes[-1][0] <= 2
        z = torch.randn(1, 16, 6, 4, 4)
        sizes = []
        for i in range(6):
            dec.decode(z[:, :, i : i + 1])
            sizes.append(cached(dec))
        assert sizes[2:] == sizes[2:3] * 4 and sizes[-1][0] <= 2
