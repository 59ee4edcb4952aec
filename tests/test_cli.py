"""The command line as users and scripts call it: outputs, JSON fields, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from vaestudio.cli import main

JSON_FIELDS = {"image", "width", "height", "latent_shape", "psnr", "ssim", "encode_s", "decode_s", "device", "dtype",
               "family", "output"}


def test_reconstruct_writes_outputs_and_json(tmp_path, rgb_image, ldm_file, capsys):
    out = tmp_path / "out"
    code = main(["reconstruct", str(rgb_image), "--vae", str(ldm_file), "--out", str(out), "--json"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert JSON_FIELDS <= set(rec)
    assert (rec["width"], rec["height"], rec["latent_shape"]) == (61, 45, [4, 6, 8])
    assert (out / "gradient_recon.png").is_file() and (out / "gradient_diff.png").is_file()
    assert Image.open(out / "gradient_recon.png").size == (61, 45)
    assert rec["output"] == str(out / "gradient_recon.png")
    assert rec["family"] == "sd1" and rec["device"] == "cpu" and rec["dtype"] == "fp32"
    assert 0 < rec["ssim"] <= 1 and rec["psnr"] > 0


@pytest.mark.parametrize("flag", [["--noise", "0.8"], ["--timestep", "500"]])
def test_reconstruct_with_noise_reports_snr(tmp_path, rgb_image, vae_dir, capsys, flag):
    assert main(["reconstruct", str(rgb_image), "--vae", str(vae_dir), "--out", str(tmp_path), "--json",
                 "--seed", "3", "--size", "32", *flag]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["snr"] is not None and rec["noise_mode"] in ("strength", "timestep")
    assert rec["width"] == 32


def test_batch_goes_on_after_a_bad_image(tmp_path, rgb_image, ldm_file, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(["reconstruct", str(bad), str(rgb_image), "--vae", str(ldm_file), "--out", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err.startswith(f"error: {bad}: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert len(captured.out.strip().splitlines()) == 1  # the good image was still processed


def test_bad_vae_exit_code_and_usage_errors(tmp_path, rgb_image, capsys):
    evil = tmp_path / "lora.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(evil))
    assert main(["reconstruct", str(rgb_image), "--vae", str(evil)]) == 4
    assert capsys.readouterr().err == f"error: {evil}: is a LoRA (1 tensors), not a VAE\n"
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(rgb_image)])  # --vae missing
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(rgb_image), "--vae", "x", "--noise", "1", "--timestep", "3"])
    assert e.value.code == 2


@pytest.mark.parametrize("command", [["reconstruct"], ["analyze", "spectrum"]])
def test_output_folder_that_cannot_be_made_is_one_error_line(tmp_path, rgb_image, vae_dir, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main([*command, str(rgb_image), "--vae", str(vae_dir), "--out", str(blocker / "out")])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {blocker / 'out'}: cannot create the output folder (Not a directory)"]
    assert blocker.read_text() == "not a folder"


def test_timestep_out_of_range_is_usage(tmp_path, rgb_image, vae_dir, capsys):
    assert main(["reconstruct", str(rgb_image), "--vae", str(vae_dir), "--timestep", "1000"]) == 2
    assert "between 0 and 999" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path, rgb_image, capsys):
    assert main(["--debug", "reconstruct", str(rgb_image), "--vae", str(tmp_path / "no.ckpt")]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("no such file or folder, and not a Hugging Face model id (like org/name)")


def test_inspect_vae_reports_each_source(tmp_path, ldm_file, vae_dir, capsys):
    code = main(["inspect-vae", str(ldm_file), str(tmp_path / "missing.ckpt"), str(vae_dir), "--json"])
    assert code == 4
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [d["source"] for d in lines] == [str(ldm_file), str(tmp_path / "missing.ckpt"), str(vae_dir)]
    first = lines[0]
    for key in ("format", "key_layout", "family", "family_guessed", "latent_channels", "scaling_factor",
                "shift_factor", "parameters", "dtype", "ignored_keys"):
        assert key in first
    assert first["key_layout"] == "ldm" and lines[2]["key_layout"] == "diffusers"
    assert "error" in lines[1]
    assert main(["inspect-vae", str(ldm_file)]) == 0
    assert "key layout:      ldm" in capsys.readouterr().out


def test_compare_two_vaes_with_csv(tmp_path, rgb_image, ldm_file, vae_dir, capsys):
    table = tmp_path / "t.csv"
    assert main(["compare", str(rgb_image.parent), "--vae", str(ldm_file), "--vae", str(vae_dir), "--csv",
                 str(table)]) == 0
    out = capsys.readouterr().out
    assert "(mean)" in out
    rows = list(csv.DictReader(table.open()))
    assert {r["vae"] for r in rows} == {str(ldm_file), str(vae_dir)}
    assert sum(r["image"] == "(mean)" for r in rows) == 2
    # the same weights in two layouts give the same numbers
    a, b = (r for r in rows if r["image"] == "gradient")
    assert a["psnr"] == b["psnr"] and a["ssim"] == b["ssim"]


def test_reconstruct_never_overwrites_an_output_with_another_image_of_the_same_name(tmp_path, rgb_image, ldm_file,
                                                                                    capsys):
    for folder, size in (("a", 32), ("b", 48)):
        (tmp_path / folder).mkdir()
        Image.open(rgb_image).resize((size, size)).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "--vae", str(ldm_file),
                 "--out", str(out), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["output"]).name for r in records] == ["x_recon.png", "x-2_recon.png"]
    assert [Path(r["diff"]).name for r in records] == ["x_diff.png", "x-2_diff.png"]
    assert [Image.open(r["output"]).size for r in records] == [(32, 32), (48, 48)]


def test_compare_tells_images_with_the_same_name_apart(tmp_path, rgb_image, ldm_file, capsys):
    import shutil

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(rgb_image, tmp_path / folder / "x.png")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--vae", str(ldm_file), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows if r["image"] != "(mean)"] == ["a/x", "b/x"]


@pytest.mark.parametrize("command", [["reconstruct"], ["analyze", "spectrum"], ["compare"], ["evaluate"]])
def test_a_folder_without_images_is_one_usage_error_for_every_command(tmp_path, vae_dir, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("not an image")
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command != ["compare"] else []
    assert main([*command, str(empty), "--vae", str(vae_dir), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {empty}: no image files found\n" and captured.out == ""
    if command == ["reconstruct"]:
        assert not out.exists()  # refused before the VAE is loaded or the folder made


@pytest.mark.parametrize("platform", [None, "xcb"])
def test_the_window_without_a_display_says_so_in_one_line(tmp_path, platform):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    if platform:
        env["QT_QPA_PLATFORM"] = platform
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "vaestudio"], capture_output=True, text=True, env=env, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == ["error: no display found (DISPLAY and WAYLAND_DISPLAY are not set), so the window "
                                     "cannot open; the command line works without one: see vaestudio --help"]
    assert r.stdout == ""
