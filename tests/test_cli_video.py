"""``vaestudio reconstruct CLIP``: a clip written with PyAV through the tiny AutoencoderKL of conftest."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vaestudio.cli import main
from vaestudio.core.metrics import clip_metrics, flicker, psnr, ssim
from vaestudio.core.video import read_clip

av = pytest.importorskip("av")


def moving_square(n: int = 7, size: int = 32) -> np.ndarray:
    """A smooth background with a bright square moving right by 3 pixels a frame."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = 60 + 3 * xx
        out[i, ..., 1] = 80 + 2 * yy
        out[i, ..., 2] = 120
        out[i, 10:18, 2 + 3 * i : 10 + 3 * i] = 240
    return out


@pytest.fixture
def clip_file(tmp_path) -> Path:
    path = tmp_path / "walk.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=12, options={"crf": "12"})
        s.height, s.width, s.pix_fmt = 32, 32, "yuv420p"
        for f in moving_square():
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def run_json(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main(["reconstruct", *map(str, argv), "--json"])
    cap = capsys.readouterr()
    return code, [json.loads(line) for line in cap.out.splitlines() if line.strip()], cap.err


def test_reconstruct_clip_writes_videos_csv_and_json(tmp_path, clip_file, vae_dir, capsys):
    out = tmp_path / "out"
    code, records, err = run_json(capsys, clip_file, "--vae", vae_dir, "--out", out)
    assert code == 0, err
    (r,) = records
    assert r["frames"] == 7 and r["fps"] == pytest.approx(12.0)
    assert r["latent_shape"] == [4, 7, 4, 4]  # [C, T', H', W']: an image VAE keeps every frame
    assert r["kind"] == "image" and any("frame by frame" in n for n in r["notes"])
    assert "frame by frame" in err
    assert r["codec"] == "libx264"
    for key, name in (("output", "walk_recon.mp4"), ("diff", "walk_diff.mp4"), ("csv", "walk_frames.csv")):
        assert Path(r[key]) == out / name and Path(r[key]).stat().st_size > 0
    with open(out / "walk_frames.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", "psnr", "ssim", "mae"] and len(rows) == 1 + 7
    per_frame = [float(row[1]) for row in rows[1:]]
    assert [int(row[0]) for row in rows[1:]] == list(range(7))
    assert r["psnr"] == pytest.approx(sum(per_frame) / 7, abs=1e-4)
    assert r["psnr_min_frame"] == int(np.argmin(per_frame))
    assert r["flicker"] > 0
    recon, diff = read_clip(out / "walk_recon.mp4"), read_clip(out / "walk_diff.mp4")
    assert recon.frames.shape == diff.frames.shape == (7, 32, 32, 3)
    assert recon.fps == pytest.approx(12.0) and diff.fps == pytest.approx(12.0)


def test_an_image_vae_reconstructs_each_frame_as_the_image_path_does(tmp_path, clip_file, vae_dir, capsys):
    """The CSV's frame metrics are those of reconstructing each frame alone as an image."""
    from vaestudio.core.images import LoadedImage
    from vaestudio.core.pipeline import reconstruct
    from vaestudio.core.sources import load_vae

    code, (r,), _ = run_json(capsys, clip_file, "--vae", vae_dir, "--out", tmp_path, "--start", "0.25",
                             "--frames", "3")
    assert code == 0 and r["frames"] == 3 and r["latent_shape"][1] == 3
    with open(r["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    frames = read_clip(clip_file, start=0.25, frames=3).frames
    vae = load_vae(str(vae_dir), device="cpu")
    for i, row in enumerate(rows):
        rec = reconstruct(vae, LoadedImage(frames[i], "f", "PNG", "RGB"))
        assert float(row["psnr"]) == pytest.approx(rec.metrics.psnr, abs=1e-3)
        assert float(row["ssim"]) == pytest.approx(rec.metrics.ssim, abs=1e-4)


def test_a_video_vae_trims_the_clip_and_says_so(tmp_path, clip_file, capsys):
    """A tiny random Wan 2.1 VAE (diffusers' AutoencoderKLWan) takes 1 + 4k frames: 7 become 5."""
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    folder = tmp_path / "wan"
    AutoencoderKLWan(z_dim=16, base_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=2).save_pretrained(folder)
    code, (r,), err = run_json(capsys, clip_file, "--vae", folder, "--out", tmp_path / "o")
    assert code == 0, err
    assert r["kind"] == "video" and r["frames"] == 5
    assert r["latent_shape"] == [16, 2, 4, 4]  # T' = 1 + (5 - 1) / 4
    assert any("trimmed 7 frames to 5" in n for n in r["notes"]) and "trimmed" in err
    with open(r["csv"], newline="") as fh:
        assert len(list(csv.reader(fh))) == 1 + 5
    assert read_clip(r["output"]).count == read_clip(r["diff"]).count == 5


def test_noise_over_the_clip_latent(tmp_path, clip_file, vae_dir, capsys):
    code, (clean,), _ = run_json(capsys, clip_file, "--vae", vae_dir, "--out", tmp_path / "a", "--frames", "5")
    code2, (noisy,), _ = run_json(capsys, clip_file, "--vae", vae_dir, "--out", tmp_path / "b", "--frames", "5",
                                  "--timestep", "600")
    assert code == code2 == 0
    assert noisy["noise_mode"] == "timestep" and noisy["snr_db"] is not None
    assert noisy["psnr"] < clean["psnr"]


def test_bad_clips_exit_3_in_one_line_and_the_batch_goes_on(tmp_path, clip_file, vae_dir, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip_file.read_bytes()[:300])
    code, records, err = run_json(capsys, text, cut, clip_file, "--vae", vae_dir, "--out", tmp_path / "o",
                                  "--frames", "3")
    assert code == 3
    assert [r["clip"] for r in records] == [str(clip_file)]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in err
    assert errors[0].startswith(f"error: {text}: ") and errors[1].startswith(f"error: {cut}: ")
    assert main(["reconstruct", str(clip_file), "--vae", str(vae_dir), "--frames", "0"]) == 2
    assert main(["reconstruct", str(clip_file), "--vae", str(vae_dir), "--start", "-1"]) == 2


def test_flicker():
    rng = np.random.default_rng(0)
    x = rng.random((6, 12, 12, 3)).astype(np.float32)
    assert flicker(x, x) == 0.0
    shifted = np.clip(x, 0.2, 0.8) + 0.1  # the same error in every frame does not flicker
    assert flicker(np.clip(x, 0.2, 0.8), shifted) == pytest.approx(0.0, abs=1e-7)
    flat = np.full((5, 8, 8, 3), 0.5, np.float32)
    blink = flat + np.where(np.arange(5) % 2 == 0, 0.1, -0.1).astype(np.float32)[:, None, None, None]
    assert flicker(flat, blink) == pytest.approx(0.2, abs=1e-6)  # |(+-0.1) - (-+0.1)| at each step
    assert flicker(flat[:1], blink[:1]) == 0.0


def test_clip_metrics_are_the_image_metrics_per_frame():
    rng = np.random.default_rng(1)
    x = rng.random((3, 16, 16, 3)).astype(np.float32)
    r = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
    m = clip_metrics(x, r)
    assert m.psnr == pytest.approx([psnr(a, b) for a, b in zip(x, r, strict=True)])
    assert m.ssim == pytest.approx([ssim(a, b) for a, b in zip(x, r, strict=True)])
    assert m.mae == pytest.approx([float(np.abs(a.astype(np.float64) - b).mean()) for a, b in zip(x, r, strict=True)])
    assert m.psnr_mean == pytest.approx(sum(m.psnr) / 3) and m.psnr_min_frame == int(np.argmin(m.psnr))
    assert math.isinf(clip_metrics(x, x).psnr_mean)
