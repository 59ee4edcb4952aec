"""`vaestudio evaluate` with clips beside images (issue 19): a clip is one row per VAE, scored as the mean
over its frames, with `frames`, `flicker` and `worst_frame`; the summary's `flicker_mean` and `clips`; the
report's worst frames; a broken clip is an unreadable row; resume after a cancel and torchrun with clips.

Data: clips written by the test with PyAV (libx264, 32x32, 5 to 9 frames) and an animated GIF written with
Pillow, PNG images; VAEs: the tiny random AutoencoderKLs of conftest and a tiny random AutoencoderKLWan.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_vae
from helpers.evaluation import assert_close_json, comparable_rows, comparable_summary, read_rows
from PIL import Image

from vaestudio.cli import main
from vaestudio.core.errors import Cancelled
from vaestudio.core.evaluate import (
    EvaluationRequest,
    Finished,
    Row,
    Started,
    StateError,
    VaeSummary,
    evaluate,
)

av = pytest.importorskip("av")

SIZE = 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def moving_square(n: int, shift: int = 3, size: int = SIZE) -> np.ndarray:
    """A smooth background with a bright square moving right by ``shift`` pixels a frame."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = 60 + 3 * xx
        out[i, ..., 1] = 80 + 2 * yy
        out[i, ..., 2] = 120
        x0 = (2 + shift * i) % (size - 8)
        out[i, 10:18, x0 : x0 + 8] = 240
    return out


def write_clip(path: Path, frames: np.ndarray, fps: int = 12) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps, options={"crf": "12"})
        s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def mixed_folder(root: Path) -> Path:
    """Two PNG images, two mp4 clips (9 and 5 frames, in a subfolder too), a 6-frame animated GIF,
    a broken clip (text named .mp4) and a file that is neither."""
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png"):
        img = (np.clip(moving_square(1, size=40)[0] + rng.normal(0, 8, (40, 40, 3)), 0, 255)).astype(np.uint8)
        Image.fromarray(img).save(root / name)
    write_clip(root / "walk.mp4", moving_square(9))
    write_clip(root / "sub" / "short.mp4", moving_square(5, shift=5))
    gif = [Image.fromarray(f) for f in moving_square(6, shift=2)]
    gif[0].save(root / "anim.gif", save_all=True, append_images=gif[1:], duration=80, loop=0)
    (root / "broken.mp4").write_text("not a video\n" * 20)
    (root / "notes.md").write_text("neither")
    return root


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory) -> Path:
    """A tiny random Wan 2.1 VAE (diffusers' AutoencoderKLWan): a video VAE taking 1 + 4k frames."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wan") / "wan"
    AutoencoderKLWan(z_dim=16, base_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=1).save_pretrained(folder)
    return folder


def floats(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows]


def test_images_and_clips_in_one_run(tmp_path, vae_dir, wan_dir, capsys):
    data = mixed_folder(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["evaluate", str(data), "--vae", str(vae_dir), "--vae", str(wan_dir), "--out", str(out),
                 "--size", str(SIZE), "--workers", "0", "--metrics", "psnr,ssim,mae,color,lpips", "--json"])
    cap = capsys.readouterr()
    assert code == 0, cap.err  # a broken clip is skipped, as an unreadable image is
    assert "Traceback" not in cap.err
    printed = {p["vae"]: p for p in map(json.loads, cap.out.splitlines())}
    rows = read_rows(out / "rows.csv")
    assert {"frames", "flicker", "worst_frame"} <= set(rows[0])
    names = {Path(r["image"]).name for r in rows}
    assert names == {"a.png", "b.png", "walk.mp4", "short.mp4", "anim.gif", "broken.mp4"}  # notes.md not listed
    by = {(Path(r["image"]).name, r["vae"]): r for r in rows}

    for vae in ("diffusers_vae0", "wan"):
        for image in ("a.png", "b.png"):  # an image: no frames, no flicker
            r = by[image, vae]
            assert r["frames"] == r["flicker"] == r["worst_frame"] == "" and not r["error"]
            assert (int(r["width"]), int(r["height"])) == (SIZE, SIZE) and float(r["psnr"]) > 0
        broken = by["broken.mp4", vae]
        assert broken["error"].startswith("unreadable image: ") and broken["psnr"] == broken["frames"] == ""
    # each VAE takes the most frames it can: the image VAE every frame, Wan 1 + 4k
    frames = {(image, vae): int(by[image, vae]["frames"]) for image in ("walk.mp4", "short.mp4", "anim.gif")
              for vae in ("diffusers_vae0", "wan")}
    assert frames == {("walk.mp4", "diffusers_vae0"): 9, ("short.mp4", "diffusers_vae0"): 5,
                      ("anim.gif", "diffusers_vae0"): 6, ("walk.mp4", "wan"): 9, ("short.mp4", "wan"): 5,
                      ("anim.gif", "wan"): 5}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["frames"] == 17 and "first 17 frames" in summary["protocol"]["clips_description"]
    assert [u["image"] for u in summary["unreadable"]] == [str(data / "broken.mp4")]
    for v in summary["vaes"]:
        mine = [r for r in rows if r["source"] == v["source"]]
        clips = [r for r in mine if r["frames"]]
        assert v["images"] == 5 and v["clips"] == 3 and v["failed"] == 1
        assert all(float(r["flicker"]) > 0 for r in clips)
        assert v["flicker_mean"] == pytest.approx(np.mean(floats(clips, "flicker")), rel=1e-12)
        assert v["psnr_mean"] == pytest.approx(np.mean(floats([r for r in mine if r["psnr"]], "psnr")), rel=1e-12)
        assert v["lpips_mean"] is not None and all(r["lpips"] for r in clips)  # 32 px: LPIPS is measured
        # psnr_dataset weights a clip by all its frames' pixels
        ok = [r for r in mine if r["psnr"]]
        weight = [int(r["width"]) * int(r["height"]) * int(r["frames"] or 1) for r in ok]
        mse = np.sum(np.array(floats(ok, "mse")) * weight) / np.sum(weight)
        assert v["psnr_dataset"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)
        assert printed[v["vae"]]["flicker_mean"] == v["flicker_mean"]

    # a clip's row is the mean of `reconstruct CLIP`'s per-frame CSV, and its worst frame is the CSV's
    for clip in (data / "walk.mp4", data / "sub" / "short.mp4"):
        for vae in (vae_dir, wan_dir):
            rdir = tmp_path / f"recon-{vae.name}"
            assert main(["reconstruct", str(clip), "--vae", str(vae), "--out", str(rdir), "--json"]) == 0
            record = json.loads(capsys.readouterr().out.splitlines()[-1])
            with open(rdir / f"{clip.stem}_frames.csv", newline="") as fh:
                per_frame = list(csv.DictReader(fh))
            row = next(r for r in rows if r["image"] == str(clip) and r["source"] == str(vae))
            assert int(row["frames"]) == len(per_frame) == record["frames"]
            for key in ("psnr", "ssim", "mae"):
                assert float(row[key]) == pytest.approx(np.mean(floats(per_frame, key)), abs=2e-6), key
            assert int(row["worst_frame"]) == int(np.argmin(floats(per_frame, "psnr"))) == record["psnr_min_frame"]
            assert float(row["flicker"]) == pytest.approx(record["flicker"], abs=1e-6)

    report = (out / "report.html").read_text()
    assert '<h2 id="clips">Clips</h2>' in report and "the worst 3 clips" in report
    worst = {Path(r["image"]).name: r["worst_frame"] for r in rows if r["vae"] == "diffusers_vae0" and r["frames"]}
    assert f"worst frame {worst['walk.mp4']} of 9" in report and "Flicker (clips)" in report


def test_images_alone_have_no_flicker_and_frames_is_part_of_the_protocol(tmp_path, vae_dir, rgb_image):
    """Without clips flicker_mean is null; --frames bounds what is read, and a resume with another
    --frames is refused in one line."""
    clip = write_clip(tmp_path / "walk.mp4", moving_square(9))

    def request(data, out, **kw) -> EvaluationRequest:
        return EvaluationRequest([str(p) for p in data], [str(vae_dir)], out, size=SIZE, workers=0,
                                 metrics=("psnr",), report=False, **kw)

    fin = [e for e in evaluate(request([rgb_image], tmp_path / "img")) if isinstance(e, Finished)][0]
    v = fin.summary["vaes"][0]
    assert v["flicker_mean"] is None and v["clips"] == 0 and v["psnr_mean"] is not None
    rows = [e for e in evaluate(request([clip, rgb_image], tmp_path / "three", frames=3)) if isinstance(e, Row)]
    assert sorted(r.frames or 0 for r in rows) == [0, 3]
    with pytest.raises(StateError, match="frames was 3, now 5"):
        list(evaluate(request([clip, rgb_image], tmp_path / "three", frames=5, resume=True)))
    assert main(["evaluate", str(clip), "--vae", str(vae_dir), "--out", str(tmp_path / "x"), "--frames", "0"]) == 2


def test_resume_after_a_cancel_with_clips(tmp_path, vae_dir):
    """Cancelled after a few rows, resumed: the same rows and summary (accumulators included) as an
    uninterrupted run; a clip is one item of the run."""
    from vaestudio.core.evaluate.accumulators import default_accumulators

    data = mixed_folder(tmp_path / "data")
    other = tmp_path / "other_vae"
    tiny_vae(seed=1).save_pretrained(other)
    metrics = ("psnr", "ssim", "mae")

    def request(out: Path, **kw) -> EvaluationRequest:
        return EvaluationRequest([str(data)], [str(vae_dir), str(other)], out, size=SIZE, batch_size=2, workers=0,
                                 metrics=metrics, accumulators=default_accumulators(), report=False, **kw)

    whole = list(evaluate(request(tmp_path / "whole")))
    seen = 0

    def stop() -> bool:
        return seen >= 4

    with pytest.raises(Cancelled):
        for e in evaluate(request(tmp_path / "cut"), should_stop=stop):
            seen += isinstance(e, Row)
    assert 4 <= len(read_rows(tmp_path / "cut" / "rows.csv")) < 12
    resumed = list(evaluate(request(tmp_path / "cut", resume=True)))
    assert next(e for e in resumed if isinstance(e, Started)).resumed_rows >= 4
    assert comparable_rows(tmp_path / "cut" / "rows.csv") == comparable_rows(tmp_path / "whole" / "rows.csv")
    assert len(read_rows(tmp_path / "cut" / "rows.csv")) == 12
    a = comparable_summary(tmp_path / "whole" / "summary.json")
    b = comparable_summary(tmp_path / "cut" / "summary.json")
    for s in (a, b):
        s.pop("versions")
        for v in s["vaes"]:
            v.get("analyses", {}).get("spectrum", {}).pop("partial", None)
    assert_close_json(a, b, rel=1e-6)
    done = [e for e in whole if isinstance(e, VaeSummary)]
    assert [s.clips for s in done] == [3, 3] and all(s.stats["flicker_mean"] for s in done)
    stats = [e.analyses["latent_stats"] for e in resumed if isinstance(e, VaeSummary)]
    assert stats[0]["values"] == (2 + 9 + 5 + 6) * 4 * 4  # latent pixels per channel: each latent frame counts


def test_rfid_takes_each_clip_frame_as_an_image(tmp_path, vae_dir, rgb_image):
    from vaestudio.core.evaluate.fid import FeatureStats, InceptionFeatures, fid_from_stats, find_network

    if not find_network().available:
        pytest.skip("the FID network (vaestudio[fid]) is not installed")
    clip = write_clip(tmp_path / "walk.mp4", moving_square(5))
    request = EvaluationRequest([str(clip), str(rgb_image)], [str(vae_dir)], tmp_path / "out", size=SIZE, workers=0,
                                metrics=("psnr", "fid"), report=False)
    (s,) = [e for e in evaluate(request) if isinstance(e, VaeSummary)]
    assert "computed on 6 images (each clip's frames counted as images)" in s.rfid_status
    # the same as the FID of the clip's frames and the image, each a picture of its own
    from vaestudio.core.clip_pipeline import reconstruct_clip
    from vaestudio.core.evaluate.data import apply_protocol
    from vaestudio.core.images import load_image
    from vaestudio.core.sources import load_vae
    from vaestudio.core.video import read_clip

    vae = load_vae(str(vae_dir), device="cpu")
    rc = reconstruct_clip(vae, read_clip(clip))
    x = torch.from_numpy(rc.original).permute(0, 3, 1, 2)
    r = torch.from_numpy(rc.decoded.frames).permute(0, 3, 1, 2)
    img = apply_protocol(load_image(rgb_image).pixels, SIZE, "shorter-crop")[None]
    raw, _ = vae.encode_batch(img)
    x, r = torch.cat([x, img]), torch.cat([r, vae.decode_batch(vae.to_model(raw)).float()])
    net = InceptionFeatures("cpu")
    a, b = FeatureStats(), FeatureStats()
    a.update(net(x))
    b.update(net(r))
    assert s.rfid == pytest.approx(fid_from_stats(a, b), rel=1e-4)


def test_two_processes_with_clips_equal_one(tmp_path, vae_dir):
    """torchrun: each rank takes every other item (a clip is one item); rank 0's merged rows equal one process's."""
    data = tmp_path / "list.txt"
    clips = [write_clip(tmp_path / f"c{i}.mp4", moving_square(5, shift=2 + i)) for i in range(2)]
    img = tmp_path / "img.png"
    Image.fromarray(moving_square(1, size=40)[0]).save(img)
    data.write_text("\n".join(map(str, [*clips, img])) + "\n")
    args = ["evaluate", str(data), "--vae", str(vae_dir), "--size", str(SIZE), "--workers", "0", "--batch-size", "1",
            "--metrics", "psnr,ssim,mae", "--no-report"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")

    def run(cmd: list[str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]

    assert main([*args, "--out", str(tmp_path / "one")]) == 0  # one process: this one
    two = tmp_path / "two"
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vaestudio",
         *args, "--out", str(two)])
    assert [len(read_rows(two / "state" / f"rank{k}" / "rows.csv")) for k in (0, 1)] == [2, 1]
    assert comparable_rows(two / "rows.csv") == comparable_rows(tmp_path / "one" / "rows.csv")
    a, b = comparable_summary(tmp_path / "one" / "summary.json"), comparable_summary(two / "summary.json")
    for s in (a, b):
        for k in ("world_size", "versions", "hardware"):
            s.pop(k)
        for v in s["vaes"]:
            v.pop("analyses", None)
    assert_close_json(a, b, rel=1e-9)
    assert b["vaes"][0]["clips"] == 2 and b["vaes"][0]["flicker_mean"] > 0
