"""`vaestudio evaluate` and its core generator: outputs, protocol, resume after SIGKILL, the accumulator
hook, cancellation, any VAE through the Autoencoder interface, and `compare` as a view of the same core.

Data: real photos (../shared/data/images when present, and scikit-image's bundled sample photos) cut
into 256x256 crops, made once per session in a temporary folder. VAEs: tiny random AutoencoderKLs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SHARED_IMAGES, needs_shared, tiny_vae
from helpers.accumulators import MeanAccumulator
from helpers.evaluation import assert_close_json, comparable_rows, comparable_summary, make_crops, read_rows
from PIL import Image

from vaestudio.cli import main
from vaestudio.core.errors import Cancelled
from vaestudio.core.evaluate import (
    ROW_FIELDS,
    EvaluationRequest,
    Finished,
    Progress,
    Row,
    Started,
    VaeSummary,
    evaluate,
    list_data,
    short_names,
)

CONTRACT_COLUMNS = {"image", "vae", "width", "height", "psnr", "ssim", "mae", "color_shift_r", "color_shift_g",
                    "color_shift_b", "lpips", "seconds"}
STATS = ("mean", "std", "median", "p5", "p95")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and do not stall when other jobs share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    crops = make_crops(root)
    assert len(crops) >= 150, "too few photos to cut crops from"
    return root


@pytest.fixture(scope="session")
def other_vae(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("other") / "other_vae"
    tiny_vae(seed=1).save_pretrained(d)
    return d


def small_set(root: Path, photos: Path, n: int = 6, odd: bool = True) -> Path:
    """A small DATA folder: n crops in two subfolders, a non-square photo, a broken file, a non-image."""
    crops = sorted(photos.rglob("*.png"))
    pick = crops[:: max(1, len(crops) // n)][:n]
    for i, p in enumerate(pick):
        d = root / ("a" if i % 2 else "b/deeper")
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name).write_bytes(p.read_bytes())
    if odd:
        Image.open(pick[0]).crop((0, 0, 200, 120)).save(root / "wide.jpg", quality=95)
        (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.md").write_text("not an image")
    return root


# -- the command's contract -----------------------------------------------------------------------

def test_evaluate_writes_rows_summary_report_and_json(tmp_path, photos, vae_dir, other_vae, capsys):
    data = small_set(tmp_path / "data", photos)
    listed = tmp_path / "more.txt"
    extra = sorted(photos.rglob("*.png"))[-1]
    listed.write_text(f"# a list\n{extra}\nmissing/nothing.png\n\n")
    out = tmp_path / "out"
    code = main(["evaluate", str(data), str(listed), "--vae", str(vae_dir), "--vae", str(other_vae),
                 "--vae", str(tmp_path / "no_such.safetensors"), "--out", str(out), "--size", "32",
                 "--metrics", "psnr,ssim,mae,color,lpips", "--workers", "1", "--batch-size", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 4  # one VAE could not be loaded; the others were evaluated
    assert "error: " + str(tmp_path / "no_such.safetensors") in captured.err
    assert "images" in captured.err  # the progress bar went to stderr

    summaries = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [s["vae"] for s in summaries] == ["diffusers_vae0", "other_vae"]
    images = 6 + 1 + 1 + 1 + 1  # crops, wide.jpg, broken.png, the listed crop, the missing entry
    rows = read_rows(out / "rows.csv")
    assert CONTRACT_COLUMNS <= set(rows[0]) and tuple(rows[0]) == ROW_FIELDS
    assert len(rows) == 2 * images
    ok = [r for r in rows if not r["error"]]
    assert len(ok) == 2 * 8 and all(r["width"] == r["height"] == "32" for r in ok)
    assert all(float(r["lpips"]) > 0 for r in ok) and all(r["lpips"] == "" for r in rows if r["error"])
    assert {r["image"] for r in rows} >= {str(extra), str(listed.parent / "missing/nothing.png")}
    assert not any(r["image"].endswith("notes.md") for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == images and summary["protocol"]["size"] == 32
    assert summary["protocol"]["resize"] == "shorter-crop" and summary["protocol"]["latent"] == "mean"
    assert {u["image"].rsplit("/", 1)[-1] for u in summary["unreadable"]} == {"broken.png", "nothing.png"}
    assert all(u["reason"] and "\n" not in u["reason"] for u in summary["unreadable"])
    assert summary["load_failures"][0]["source"] == str(tmp_path / "no_such.safetensors")
    assert {"torch", "vaestudio", "diffusers"} <= set(summary["versions"])
    assert summary["hardware"]["devices"] == ["cpu"]
    for s in summary["vaes"]:
        assert s["images"] == 8 and s["failed"] == 2 and len(s["failures"]) == 2
        assert {"vae", "source", "architecture", "family", "rfid", "rfid_status"} <= set(s)
        for m in ("psnr", "ssim", "mae", "color_shift_r", "lpips"):
            assert all(f"{m}_{k}" in s for k in STATS)
        assert s["psnr_p5"] <= s["psnr_median"] <= s["psnr_p95"]
        assert s["lpips_status"] == "available"
        assert s["lpips_mean"] == pytest.approx(np.mean([float(r["lpips"]) for r in ok if r["source"] == s["source"]]))
        assert s["rfid"] is None and s["rfid_status"] == "not requested"
        mine = [r for r in ok if r["source"] == s["source"]]
        assert s["psnr_mean"] == pytest.approx(np.mean([float(r["psnr"]) for r in mine]))
        mse = np.mean([float(r["mse"]) for r in mine])  # same-size images: pixel weights are equal
        assert s["psnr_dataset"] == pytest.approx(10 * math.log10(1 / mse))
    assert summaries == summary["vaes"]

    page = (out / "report.html").read_text()
    assert "<svg" in page and page.count("data:image/png;base64,") >= 2 * 3 * 8
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline
    assert "diffusers_vae0" in page and "against" in page  # the scatter of one VAE against the other


def test_sizes_kept_with_size_0_and_reconstructions_mirror_the_tree(tmp_path, photos, rgb_image, vae_dir):
    data = small_set(tmp_path / "data", photos, n=2, odd=False)
    (data / "b" / "odd").mkdir()
    (data / "b" / "odd" / "gradient.png").write_bytes(rgb_image.read_bytes())  # 61x45: not a multiple of 8
    out = tmp_path / "out"
    assert main(["evaluate", str(data), "--vae", str(vae_dir), "--out", str(out), "--size", "0", "--workers", "0",
                 "--metrics", "psnr,ssim", "--save-recons", "--no-report"]) == 0
    rows = {Path(r["image"]).name: r for r in read_rows(out / "rows.csv")}
    assert (rows["gradient.png"]["width"], rows["gradient.png"]["height"]) == ("61", "45")
    assert rows["gradient.png"]["mae"] == "" and rows["gradient.png"]["psnr"] != ""
    recon = out / "recons" / "diffusers_vae0" / "b" / "odd" / "gradient.png"
    assert Image.open(recon).size == (61, 45)
    assert len(list((out / "recons" / "diffusers_vae0").rglob("*.png"))) == 3
    assert not (out / "report.html").exists()


def test_usage_errors_exit_2_with_one_line(tmp_path, vae_dir, rgb_image, capsys):
    for args in (["--metrics", "psnr,bogus"], ["--size", "4"], ["--batch-size", "0"]):
        assert main(["evaluate", str(rgb_image), "--vae", str(vae_dir), "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0]
    assert main(["evaluate", str(tmp_path / "nowhere"), "--vae", str(vae_dir), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty), "--vae", str(vae_dir), "--out", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err


def test_many_photos_sorted_with_limit(tmp_path, photos, vae_dir):
    items = list_data([str(photos)])
    assert len(items) >= 150 and [i.path for i in items] == sorted(i.path for i in items)
    assert all(i.rel.count("/") == 1 for i in items)  # relative to the folder given
    out = tmp_path / "out"
    events = list(evaluate(EvaluationRequest([str(photos)], [str(vae_dir)], out, size=16, batch_size=32, workers=1,
                                             metrics=("psnr", "mae"), report=False)))
    started = next(e for e in events if isinstance(e, Started))
    assert started.images == len(items) and started.pending_images == len(items)
    rows = [e for e in events if isinstance(e, Row)]
    assert len(rows) == len(items) and not any(r.error for r in rows)
    prog = [e for e in events if isinstance(e, Progress)]
    assert prog[-1].done == prog[-1].total == len(items) and prog[-1].images_per_s > 0
    assert len(read_rows(out / "rows.csv")) == len(items)
    limited = list_data([str(photos)], limit=10)
    assert [i.path for i in limited] == [i.path for i in items[:10]]


@needs_shared(SHARED_IMAGES)
def test_shared_photos_are_part_of_the_crops(photos):
    names = {p.parent.name for p in photos.rglob("*.png")}
    assert any(n.startswith(SHARED_IMAGES.name + "-") for n in names)


def test_rows_agree_with_reconstruct(tmp_path, rgb_image, ldm_file):
    """The batched loop gives the numbers `reconstruct` gives for one image (same padding, same metrics)."""
    from vaestudio.core.images import load_image
    from vaestudio.core.pipeline import reconstruct
    from vaestudio.core.sources import load_vae

    vae = load_vae(ldm_file)
    rows = [e for e in evaluate(EvaluationRequest([str(rgb_image)], [str(ldm_file)], None, size=0, workers=0,
                                                  metrics=("psnr", "ssim", "mae", "color"), preloaded={str(ldm_file): vae}))
            if isinstance(e, Row)]
    rec = reconstruct(vae, load_image(rgb_image))
    (r,) = rows
    assert (r.width, r.height) == (61, 45)
    assert r.psnr == pytest.approx(rec.metrics.psnr, rel=1e-9)
    assert r.ssim == pytest.approx(rec.metrics.ssim, rel=1e-9)
    assert r.mae == pytest.approx(rec.metrics.mae, rel=1e-9)
    assert [r.color_shift_r, r.color_shift_g, r.color_shift_b] == pytest.approx(list(rec.metrics.color_shift), abs=1e-12)


# -- resume ---------------------------------------------------------------------------------------

def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaestudio", "evaluate", *args]


SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, photos, vae_dir, capsys):
    data = tmp_path / "data.txt"
    crops = sorted(photos.rglob("*.png"))
    data.write_text("\n".join(str(p) for p in crops[:: len(crops) // 12][:12]) + "\n")
    common = [str(data), "--vae", str(vae_dir), "--size", "32", "--batch-size", "1", "--workers", "0",
              "--metrics", "psnr,ssim,mae,color", "--no-report"]
    whole = tmp_path / "whole"
    assert main(["evaluate", *common, "--out", str(whole)]) == 0

    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cli(*common, "--out", str(cut)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=SUBPROCESS_ENV)
    rows_file = cut / "rows.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once a few batches are in, wherever it is then
        if rows_file.exists() and rows_file.read_text().count("\n") >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = rows_file.read_text()
    assert 4 <= before.count("\n") <= 12, "the run should have been killed mid-way"
    capsys.readouterr()

    # a different protocol is refused with one line, and nothing is touched
    assert main(["evaluate", *[a if a != "32" else "48" for a in common], "--out", str(cut), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "size was 32, now 48" in err
    # without --resume the folder is not overwritten
    assert main(["evaluate", *common, "--out", str(cut)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert rows_file.read_text() == before

    # a torn last line (as if the machine died mid-write) is dropped on resume
    with open(rows_file, "a") as fh:
        fh.write(str(crops[0]) + ",diffusers_vae0,")
    assert main(["evaluate", *common, "--out", str(cut), "--resume"]) == 0
    assert "rows already done" in capsys.readouterr().err
    assert comparable_rows(cut / "rows.csv") == comparable_rows(whole / "rows.csv")
    assert len(read_rows(cut / "rows.csv")) == 12
    assert_close_json(comparable_summary(whole / "summary.json"), comparable_summary(cut / "summary.json"))


@pytest.mark.parametrize("written", [0.0, 0.5])
def test_a_batch_cut_between_its_sidecar_and_its_rows_is_redone(tmp_path, photos, vae_dir, monkeypatch, written):
    """The process dies after a batch's sidecar landed and before (or halfway through) its rows: resume
    drops the orphan sidecar and the torn rows, and its accumulator sums are not counted twice."""
    from vaestudio.core.evaluate.store import RunStore

    crops = [str(p) for p in sorted(photos.rglob("*.png"))[:6]]

    def request(out: Path, **kw) -> EvaluationRequest:
        return EvaluationRequest(crops, [str(vae_dir)], out, size=32, batch_size=2, workers=0, metrics=("psnr",),
                                 accumulators=[MeanAccumulator], report=False, **kw)

    whole = [e for e in evaluate(request(tmp_path / "whole")) if isinstance(e, VaeSummary)]
    real_append = RunStore._append
    calls = []

    def power_cut(self, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 2:
            real_append(self, data[: int(len(data) * written)])
            raise OSError("power cut")
        real_append(self, data)

    monkeypatch.setattr(RunStore, "_append", power_cut)
    with pytest.raises(OSError, match="power cut"):
        list(evaluate(request(tmp_path / "cut")))
    monkeypatch.setattr(RunStore, "_append", real_append)
    assert len(list((tmp_path / "cut" / "state" / "rank0").glob("batch-*.npz"))) == 2
    resumed = list(evaluate(request(tmp_path / "cut", resume=True)))
    assert next(e for e in resumed if isinstance(e, Started)).resumed_rows == 2
    assert comparable_rows(tmp_path / "cut" / "rows.csv") == comparable_rows(tmp_path / "whole" / "rows.csv")
    again = next(e for e in resumed if isinstance(e, VaeSummary))
    assert again.analyses == whole[0].analyses and again.stats == whole[0].stats


def test_a_refused_or_abandoned_run_lets_go_of_its_vaes_and_files(tmp_path, photos, vae_dir, other_vae, monkeypatch):
    """A resume refused for another protocol, or a run abandoned at its first event, closes the VAEs it
    loaded and the rows file it opened."""
    from vaestudio.core.autoencoder import TorchAutoencoder
    from vaestudio.core.evaluate import StateError

    closed = []
    real_close = TorchAutoencoder.close
    monkeypatch.setattr(TorchAutoencoder, "close", lambda self: (closed.append(self), real_close(self))[1])
    crops = [str(p) for p in sorted(photos.rglob("*.png"))[:2]]

    def request(size: int, **kw) -> EvaluationRequest:
        return EvaluationRequest(crops, [str(vae_dir), str(other_vae)], tmp_path / "run", size=size, batch_size=2,
                                 workers=0, metrics=("psnr",), report=False, **kw)

    list(evaluate(request(32)))
    assert len(closed) == 2  # a finished run closes them too
    closed.clear()
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(StateError, match="size was 32, now 48"):
        list(evaluate(request(48, resume=True)))
    assert len(closed) == 2 and len(os.listdir("/proc/self/fd")) == fds
    closed.clear()
    events = evaluate(request(32, resume=True))
    assert isinstance(next(events), Started)
    events.close()  # what the window's worker does when the job is cancelled
    assert len(closed) == 2 and len(os.listdir("/proc/self/fd")) == fds


def test_cancel_then_resume_with_accumulators(tmp_path, photos, vae_dir, other_vae):
    """should_stop cancels between batches; a resume completes the rows, and the accumulator sums saved
    beside each batch make its result equal to an uninterrupted run's."""
    crops = [str(p) for p in sorted(photos.rglob("*.png"))[:8]]

    def request(out: Path, **kw) -> EvaluationRequest:
        return EvaluationRequest(crops, [str(vae_dir), str(other_vae)], out, size=32, batch_size=2, workers=0,
                                 metrics=("psnr", "mae"), accumulators=[MeanAccumulator], **kw)

    whole = list(evaluate(request(tmp_path / "whole")))
    rows_seen = 0

    def stop() -> bool:
        return rows_seen >= 4

    with pytest.raises(Cancelled):
        for e in evaluate(request(tmp_path / "cut"), should_stop=stop):
            rows_seen += isinstance(e, Row)
    assert 4 <= len(read_rows(tmp_path / "cut" / "rows.csv")) < 16
    resumed = list(evaluate(request(tmp_path / "cut", resume=True)))
    assert next(e for e in resumed if isinstance(e, Started)).resumed_rows >= 4
    assert comparable_rows(tmp_path / "cut" / "rows.csv") == comparable_rows(tmp_path / "whole" / "rows.csv")

    a = [e for e in whole if isinstance(e, VaeSummary)]
    b = [e for e in resumed if isinstance(e, VaeSummary)]
    for x, y in zip(a, b, strict=True):
        ra, rb = x.analyses["latent_channel_stats"], y.analyses["latent_channel_stats"]
        assert ra["n"] == rb["n"] == 8 * 4 * 4  # 8 images, 4x4 latent pixels each
        assert ra["mean"] == pytest.approx(rb["mean"], abs=1e-6) and ra["std"] == pytest.approx(rb["std"], abs=1e-6)
    fin = next(e for e in resumed if isinstance(e, Finished))
    report = (tmp_path / "cut" / "report.html").read_text()
    # the fragment is in the report under its own title; the accumulator's key is no heading (issue 16)
    assert "<h4>Latent channel statistics</h4>" in report and "latent_channel_stats" not in report
    assert fin.summary["vaes"][0]["analyses"]["latent_channel_stats"]["n"] == 128

    # the accumulator saw the raw latents: its mean equals the latents' own mean
    from vaestudio.core.evaluate.data import apply_protocol
    from vaestudio.core.images import load_image
    from vaestudio.core.sources import load_vae

    vae = load_vae(vae_dir)
    x = torch.stack([apply_protocol(load_image(p).pixels, 32, "shorter-crop") for p in crops])
    raw, _ = vae.encode_batch(x)
    assert a[0].analyses["latent_channel_stats"]["mean"] == pytest.approx(raw.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)


# -- any VAE, through the Autoencoder interface ---------------------------------------------------

def test_tiny_autoencoder_and_mnist_vae_are_evaluated_alike(tmp_path, photos):
    from diffusers import AutoencoderTiny

    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.model import VAE

    torch.manual_seed(0)
    AutoencoderTiny(latent_channels=4).eval().save_pretrained(tmp_path / "taesd")
    mnist = MnistVae.from_trained(VAE(hidden_dim=32, latent_dim=4))
    crops = [str(p) for p in sorted(photos.rglob("*.png"))[:3]]
    events = list(evaluate(EvaluationRequest(crops, [str(tmp_path / "taesd"), "mnist"], tmp_path / "out", size=32,
                                             workers=0, metrics=("psnr", "ssim"), preloaded={"mnist": mnist},
                                             sample=True, seed=3)))
    rows = [e for e in events if isinstance(e, Row)]
    assert not any(r.error for r in rows), [r.error for r in rows]
    by_vae = {r.vae: r for r in rows}
    assert (by_vae["taesd"].width, by_vae["taesd"].height) == (32, 32)
    assert (by_vae["mnist"].width, by_vae["mnist"].height) == (28, 28)  # what prepare_pixels made of it
    summary = next(e for e in events if isinstance(e, Finished)).summary
    assert [v["architecture"] for v in summary["vaes"]] == ["taesd", "mnist"]
    assert (tmp_path / "out" / "report.html").is_file()
    assert summary["protocol"]["latent"] == "seeded sample (seed 3)"


# -- names and compare ------------------------------------------------------------------------------

def test_short_unique_names():
    assert short_names(["/a/b/sdxl_vae.safetensors", "/x/y/vae", "stabilityai/sd-vae-ft-mse"]) == [
        "sdxl_vae", "y-vae", "sd-vae-ft-mse"]
    assert short_names(["/one/m/vae.safetensors", "/two/m/vae.safetensors"]) == ["one-m-vae", "two-m-vae"]
    assert short_names(["/p/a.safetensors", "/p/a.safetensors2"]) == ["a", "a.safetensors2"]
    assert short_names(["same", "same"]) == ["same", "same-2"]


def test_compare_names_vaes_by_short_unique_names(tmp_path, rgb_image, tiny_model, capsys):
    paths = []
    for d in ("first_experiment_with_a_long_folder_name", "second_experiment_with_a_long_folder_name"):
        p = tmp_path / d / "vae"
        tiny_model.save_pretrained(p)
        paths.append(str(p))
    assert main(["compare", str(rgb_image), "--vae", paths[0], "--vae", paths[1]]) == 0
    out = capsys.readouterr().out
    assert "first_experiment_with_a_long_folder_name-vae" in out
    assert "second_experiment_with_a_long_folder_name-vae" in out
    assert str(tmp_path) not in out


def test_the_report_includes_the_dataset_spectrum_and_scaling_factor(tmp_path, photos, vae_dir):
    """`vaestudio evaluate` plugs the analyses' accumulators in: the dataset's average spectrum and
    the latent statistics, measured in each VAE's own model space."""
    crops = [str(p) for p in sorted(photos.rglob("*.png"))[:4]]
    out = tmp_path / "out"
    assert main(["evaluate", *crops, "--vae", str(vae_dir), "--out", str(out), "--size", "32", "--workers", "0",
                 "--metrics", "psnr"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    analyses = summary["vaes"][0]["analyses"]
    assert set(analyses) >= {"spectrum", "latent_stats"}
    assert len(analyses["spectrum"]["ratio"]) == len(analyses["spectrum"]["frequencies"]) > 0
    assert analyses["latent_stats"]["configured_scaling_factor"] == pytest.approx(0.18215)
    assert analyses["latent_stats"]["suggested_scaling_factor"] > 0
    html = (out / "report.html").read_text()
    assert "spectrum" in html.lower() and "scaling factor" in html.lower()
