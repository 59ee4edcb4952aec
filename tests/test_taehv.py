"""The tiny video autoencoders (TAEHV family): the author's key layout in .pth and .safetensors, equality
with a plain re-statement of the author's math on a 9-frame clip, families from shapes and names, the
border with TAESD, broken files, the decoder alone as a preview decoder.

The author's ``taehv.py`` cannot be imported here (no network, not vendored), so the reference below is
an independent re-statement of its math: the state dict's keys and shapes written out from its
``TAEHV.__init__``, and the forward pass written frame by frame with ``torch.nn.functional`` (each memory
block seeing its input of the previous frame, zeros before the first; TPool putting ``s`` consecutive
frames side by side on the channel axis; TGrow splitting channels into ``s`` frames; the clip padded at
its end with its last frame, and the first ``t - 1`` decoded frames dropped).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.archs import assert_weights, check_broken
from helpers.taehv import (
    PUBLISHED,
    REAL_WIDTHS,
    clip,
    close,
    reference_decode,
    reference_encode,
    reference_state,
    write,
)

from vaestudio.cli import main
from vaestudio.core.errors import VaeLoadError
from vaestudio.core.registry import find_preview_decoder, get_architecture, recognise
from vaestudio.core.sources import load_vae, prepare_source
from vaestudio.core.weights import read_weight_file


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_authors_layout_loads_equal_to_the_file(tmp_path, suffix):
    sd = reference_state("taew2_1", seed=1)
    vae = load_vae(write(tmp_path, "taew2_1", sd, suffix))
    assert_weights(vae, sd)
    info = vae.info
    assert (info.architecture, info.key_layout, info.family, info.family_guessed) == ("taehv", "taehv", "wan", False)
    assert (info.kind, info.temporal_downscale, info.latent_channels, info.downscale) == ("video", 4, 16, 8)
    assert (info.scaling_factor, info.shift_factor, info.halves) == (1.0, 0.0, ["encoder", "decoder"])


@pytest.mark.parametrize("name", ["taew2_1", "taew2_2", "taew2_2_super", "taeltx_2"])
def test_a_9_frame_clip_equals_the_restated_reference(tmp_path, name, monkeypatch):
    sd = reference_state(name, seed=2)
    vae = load_vae(write(tmp_path, name, sd))
    p, c, enc_s, _, _ = PUBLISHED[name]
    size = 64 if p == 4 else 32  # vaestudio pads frames to 2 latent pixels at least: LTX's 1/32 takes 64 px
    x = clip(9, size)
    frames = torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref_z = reference_encode(sd, name, frames)
        ref_x = reference_decode(sd, name, ref_z)
    assert 0.3 < float(((ref_x > 0) & (ref_x < 1)).float().mean())  # mostly unclamped: the values are compared
    enc = vae.encode_clip(x)
    t = int(np.prod(enc_s))
    assert tuple(enc.raw.shape) == (c, 1 + 8 // t, size // (8 * p), size // (8 * p)) and enc.frames == 9
    close(enc.raw.movedim(0, 1), ref_z)
    close(enc.latent, enc.raw)  # already the diffusion model's latent
    dec = vae.decode_clip(enc.latent)
    assert dec.complete and dec.frames.shape == (9, size, size, 3)
    close(dec.frames, ref_x.permute(0, 2, 3, 1))
    # one latent frame per chunk: chunked equals whole
    import vaestudio.core.archs.taehv as taehv

    monkeypatch.setattr(taehv, "CHUNK_PIXELS", 1)
    enc1 = vae.encode_clip(x)
    assert len(enc1.chunks) == enc.raw.shape[1] and enc1.chunks[0] == (0, t)
    close(enc1.raw, enc.raw)
    parts = list(vae.iter_decode_clip(enc.latent))
    assert [s for s, _ in parts] == [0] + [1 + t * i for i in range(len(parts) - 1)]
    close(np.concatenate([f for _, f in parts]), dec.frames)


def test_an_image_is_a_one_frame_clip(tmp_path):
    sd = reference_state("taew2_2", seed=3)
    vae = load_vae(write(tmp_path, "taew2_2", sd))
    img = clip(1, 48)[0]
    with torch.no_grad():
        ref_z = reference_encode(sd, "taew2_2", torch.from_numpy(img).permute(2, 0, 1)[None])
        ref_x = reference_decode(sd, "taew2_2", ref_z)
    enc = vae.encode(img)
    assert tuple(enc.raw.shape) == (48, 3, 3)
    close(enc.raw, ref_z[0])
    close(vae.decode(enc.latent, 48, 48).pixels, ref_x[0].permute(1, 2, 0))
    vae.encode_tile, vae.tile_overlap = 32, 16  # images tile as for any VAE (each tile a one-frame clip)
    tiled = vae.encode(img, tile="on")
    assert tiled.tiled and tiled.raw.shape == enc.raw.shape
    assert vae.frames_valid(10) == 9 and vae.frames_valid(1) == 1
    trimmed = vae.encode_clip(clip(10))
    assert trimmed.frames == 9 and any("trimmed 10 frames to 9" in n for n in trimmed.notes)


@pytest.mark.parametrize("name, family, downscale, time", [
    ("taew2_1", "wan", 8, 4), ("taehv", "hunyuan-video", 8, 4), ("taew2_2", "wan22", 16, 4),
    ("taew2_2_super", "wan22", 16, 4), ("taeltx_2", "ltx2", 32, 8), ("taeltx2_3", "ltx2.3", 32, 8)])
def test_the_published_shapes_load_as_their_family(tmp_path, name, family, downscale, time):
    sd = reference_state(name, widths=REAL_WIDTHS)
    path = write(tmp_path, name, sd, ".pth" if "ltx" in name else ".safetensors")
    info = prepare_source(path).info
    assert (info.architecture, info.family, info.family_guessed, info.kind) == ("taehv", family, False, "video")
    assert (info.latent_channels, info.downscale, info.temporal_downscale) == (PUBLISHED[name][1], downscale, time)
    assert get_architecture("taesd").claims(read_weight_file(path), path) is False
    if name in ("taew2_2_super", "taeltx_2"):  # built at full size too (the others differ only in numbers)
        vae = load_vae(path)
        assert_weights(vae, sd)
        assert vae.frames_valid(20) == 1 + (19 // time) * time


def test_without_a_name_the_family_is_a_guess_and_can_be_chosen(tmp_path):
    path = write(tmp_path, "preview", reference_state("taehv"))
    info = prepare_source(path).info
    assert info.family_guessed and info.family == "wan"
    assert prepare_source(path, family="hunyuan-video").info.family == "hunyuan-video"
    with pytest.raises(VaeLoadError, match="48 latent channels but this VAE has 16"):
        prepare_source(path, family="wan22")
    assert prepare_source(write(tmp_path, "qwen_image_taew2_1", reference_state("taew2_1"))).info.family == "wan"


def test_taesd_and_taehv_never_claim_each_others_files(tmp_path):
    from vaestudio.core.archs.taesd import make_decoder, make_encoder

    enc, dec = make_encoder(16, "sd").state_dict(), make_decoder(16, "sd").state_dict()
    f32 = make_decoder(32, "f32").state_dict()  # SANA's decoder runs past index 22
    taesd_files = {
        "pair": write(tmp_path, "taef1_decoder", dec, ".pth"),
        "f32 pair": write(tmp_path, "taesana_decoder", f32, ".pth"),
        "diffusers": write(tmp_path, "taef1", {**{f"encoder.layers.{k}": v for k, v in enc.items()},
                                               **{f"decoder.layers.{int(k.split('.')[0]) - 1}.{k.split('.', 1)[1]}": v
                                                  for k, v in f32.items()}}),
        "comfyui": write(tmp_path, "taef1_comfy", {**{f"taesd_encoder.{k}": v for k, v in enc.items()},
                                                   **{f"taesd_decoder.{k}": v for k, v in f32.items()}}),
    }
    taehv = get_architecture("taehv")
    for what, path in taesd_files.items():
        wf = read_weight_file(path)
        assert not taehv.claims(wf, path), what
        assert recognise(wf, path).name == "taesd", what
    for name in PUBLISHED:
        path = write(tmp_path, name, reference_state(name))
        assert recognise(read_weight_file(path), path).name == "taehv", name


def test_the_decoder_alone_previews_a_full_vaes_latents(tmp_path, capsys):
    dec = {k: v for k, v in reference_state("taew2_1").items() if k.startswith("decoder.")}
    folder = tmp_path / "vae_approx"
    folder.mkdir()
    write(folder, "taew2_1", dec)
    for name in ("taew2_2_super", "taew2_2"):
        write(folder, name, reference_state(name), ".pth")
    assert find_preview_decoder(folder, "wan") == folder / "taew2_1.safetensors"
    assert find_preview_decoder(folder, "qwen-image") == folder / "taew2_1.safetensors"
    assert find_preview_decoder(folder, "wan22") == folder / "taew2_2.pth"
    assert find_preview_decoder(folder, "hunyuan-video") is None
    assert find_preview_decoder(folder / "taew2_2_super.pth", "wan22") == folder / "taew2_2_super.pth"
    tiny = load_vae(folder / "taew2_1.safetensors", halves=("decoder",))
    assert tiny.info.halves == ["decoder"] and tiny.info.temporal_downscale == 4
    out = tiny.decode_clip(torch.randn(16, 3, 4, 4))  # a Wan 2.1 latent of a 9-frame 32x32 clip
    assert out.frames.shape == (9, 32, 32, 3)
    with pytest.raises(VaeLoadError, match="has no encoder"):
        load_vae(folder / "taew2_1.safetensors")
    assert main(["inspect-vae", str(folder / "taew2_1.safetensors"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["kind"], d["temporal_downscale"], d["halves"], d["family"]) == ("video", 4, ["decoder"], "wan")


def test_broken_files_give_one_sentence(tmp_path, rgb_image, capsys):
    sd = reference_state("taew2_1")
    check_broken(tmp_path, sd, "decoder.7.conv.weight", rgb_image, capsys, name="taew2_1")
    cases = {
        "not a pair": {**{k: v for k, v in reference_state("taew2_2").items() if k.startswith("encoder.")},
                       **{k: v for k, v in sd.items() if k.startswith("decoder.")}},
        "does not read yet": sd,
        "no video family": {**sd, "decoder.1.weight": torch.zeros(16, 24, 3, 3),
                            "encoder.17.weight": torch.zeros(24, 8, 3, 3), "encoder.17.bias": torch.zeros(24)},
    }
    for what, variant in cases.items():
        path = write(tmp_path, "taecvx" if what == "does not read yet" else f"odd_{what.replace(' ', '_')}", variant)
        with pytest.raises(VaeLoadError, match=what) as e:
            load_vae(path)
        assert "\n" not in str(e.value)
        assert main(["inspect-vae", str(path)]) == 4
        assert capsys.readouterr().err.count("\n") == 1


def test_reconstruct_a_clip_file_through_the_cli(tmp_path, capsys):
    av = pytest.importorskip("av")
    path = tmp_path / "walk.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=12, options={"crf": "12"})
        s.height, s.width, s.pix_fmt = 32, 32, "yuv420p"
        for f in (clip(10) * 255).round().astype(np.uint8):
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    vae = write(tmp_path, "taew2_1", reference_state("taew2_1"))
    assert main(["reconstruct", str(path), "--vae", str(vae), "--out", str(tmp_path / "out"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert (rec["frames"], rec["latent_shape"], rec["kind"], rec["family"]) == (9, [16, 3, 4, 4], "video", "wan")
    assert any("trimmed 10 frames to 9" in n for n in rec["notes"])


def test_cancel_keeps_the_frames_decoded(tmp_path, monkeypatch):
    import vaestudio.core.archs.taehv as taehv

    vae = load_vae(write(tmp_path, "taew2_1", reference_state("taew2_1")))
    z = vae.encode_clip(clip(9)).latent
    whole = vae.decode_clip(z)
    done = []
    monkeypatch.setattr(taehv, "CHUNK_PIXELS", 1)  # one latent frame per chunk: 1 + 4 + 4 frames
    # Cancel pressed as the second chunk arrives
    part = vae.decode_clip(z, progress=lambda i, n: done.append(i), should_stop=lambda: len(done) >= 2)
    assert not part.complete and len(part.frames) == 5 and part.chunks == [(0, 1), (1, 5)]
    close(part.frames, whole.frames[: len(part.frames)])
