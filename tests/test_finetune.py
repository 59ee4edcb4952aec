"""`vaestudio finetune` and its core generator (issue 21): a tiny SD-shaped VAE fine-tuned for a few steps
gets closer to its images; decoder-only leaves every encoder weight bit-identical; the exported LDM file
loads back (vaestudio and diffusers' from_single_file) with the fine-tuned weights; the tiny autoencoder's
pair and FLUX.2's BFL file come back in their layouts; bad input is one line with its exit code.

Data: small real PNGs made here (smooth gradients with noise: the tiny random VAEs reconstruct them badly,
so a few steps at a high learning rate visibly help). VAEs: tiny real diffusers models (tests/conftest.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ldm_state_dict, tiny_vae
from helpers.finetune import make_images, options, run_all, sd_file
from safetensors.torch import load_file, save_file

from vaestudio.cli import main
from vaestudio.core.finetune.data import held_out_hash, random_crop, split_data
from vaestudio.core.finetune.options import (
    Checkpointed,
    FinetuneError,
    Finished,
    Skipped,
    Started,
    Validated,
    parse_losses,
)
from vaestudio.core.sources import load_vae


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_decoder_finetune_improves_keeps_encoder_and_exports_ldm(tmp_path):
    make_images(tmp_path / "imgs")
    make_images(tmp_path / "val")  # the same pictures under other paths: what training sees, held out
    src, base = sd_file(tmp_path)
    events = run_all(options(tmp_path, src, steps=8, every=4, ema=0.5))
    started = events[0]
    assert isinstance(started, Started) and started.train_images == 4 and started.val_images == 4
    assert started.part == "decoder" and started.architecture == "autoencoder-kl" and started.family == "sd1"
    vals = [e for e in events if isinstance(e, Validated)]
    assert [v.step for v in vals] == [4, 8]
    assert [e.step for e in events if isinstance(e, Checkpointed)] == [4, 8]
    assert vals[-1].current["psnr"] > vals[-1].base["psnr"] + 0.5  # a few steps at lr 1e-3: clearly closer
    assert vals[-1].ema is not None and vals[-1].base == vals[0].base
    assert isinstance(events[-1], Finished)

    out = tmp_path / "out"
    ldm = load_file(str(out / "vae.safetensors"))
    original = ldm_state_dict(base)
    assert set(ldm) == set(original)
    enc = [k for k in ldm if k.startswith(("encoder.", "quant_conv."))]
    assert enc and all(torch.equal(ldm[k], original[k]) for k in enc)  # bit-identical encoder
    assert any(not torch.equal(ldm[k], original[k]) for k in ldm if k.startswith("decoder."))

    # vaestudio reads it back as the same architecture and family, with the fine-tuned weights
    vae = load_vae(out / "vae.safetensors")
    assert (vae.info.architecture, vae.info.family, vae.info.key_layout) == ("autoencoder-kl", "sd1", "ldm")
    folder = load_vae(out / "diffusers")
    assert (folder.info.architecture, folder.info.family) == ("autoencoder-kl", "sd1")
    sd_a, sd_b = vae.model.state_dict(), folder.model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # diffusers' own single-file loader reads the LDM file (config from the diffusers folder written beside it)
    from diffusers import AutoencoderKL

    ref = AutoencoderKL.from_single_file(str(out / "vae.safetensors"), config=str(out / "diffusers"))
    assert all(torch.equal(v, sd_a[k].to(v.dtype)) for k, v in ref.state_dict().items())

    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["4", "8"] and float(rows[1]["psnr"]) == pytest.approx(vals[1].current["psnr"])
    assert rows[1]["base_psnr"] and rows[1]["ema_psnr"]
    from safetensors import safe_open

    with safe_open(str(out / "vae.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["vaestudio.finetune.base_vae"] == str(src) and meta["vaestudio.finetune.steps"] == "8"
    assert len(meta["vaestudio.finetune.base_sha256"]) == 64 and json.loads(meta["vaestudio.finetune.losses"]) == {"l1": 1.0}
    assert json.loads(meta["vaestudio.finetune.data"]) == [str(tmp_path / "imgs")]
    record = json.loads((out / "finetune.json").read_text())
    assert record["weights"] == "ema" and "vae.safetensors" in record["outputs"]


def test_part_all_trains_the_encoder_with_kl_and_says_so(tmp_path):
    make_images(tmp_path / "imgs")
    make_images(tmp_path / "val", n=1)
    src, base = sd_file(tmp_path)
    events = run_all(options(tmp_path, src, part="all", steps=2))
    assert any("latent space changes" in n for n in events[0].notes)
    assert any("KL term" in n for n in events[0].notes)
    ldm, original = load_file(str(tmp_path / "out" / "vae.safetensors")), ldm_state_dict(base)
    assert not torch.equal(ldm["encoder.conv_in.weight"], original["encoder.conv_in.weight"])
    assert json.loads((tmp_path / "out" / "finetune.json").read_text())["losses"] == '{"l1": 1.0, "kl": 1e-06}'


@pytest.mark.parametrize(("name", "family"), [("flux1-ae.safetensors", "flux"), ("sd3_vae.safetensors", "sd3")])
def test_sixteen_channel_files_come_back_as_their_family(tmp_path, name, family):
    """FLUX.1 and SD3 VAEs (16 channels, no quant convs): the LDM file out is read as the source's family."""
    make_images(tmp_path / "imgs", n=2)
    make_images(tmp_path / "val", n=1)
    src = tmp_path / name
    save_file(ldm_state_dict(tiny_vae(latent_channels=16, quant=False)), str(src))
    events = run_all(options(tmp_path, src, steps=1, every=1))
    assert events[0].family == family
    out = load_vae(tmp_path / "out" / "vae.safetensors")
    assert (out.info.architecture, out.info.family, out.info.latent_channels) == ("autoencoder-kl", family, 16)
    assert load_vae(tmp_path / "out" / "diffusers").info.family == family


def test_tiny_autoencoder_pair_out(tmp_path):
    from vaestudio.core.archs.taesd import make_decoder, make_encoder

    make_images(tmp_path / "imgs")
    make_images(tmp_path / "val", n=1)
    torch.manual_seed(0)
    enc, dec = make_encoder(4, "sd").state_dict(), make_decoder(4, "sd").state_dict()
    torch.save(enc, tmp_path / "taesdxl_encoder.pth")
    torch.save(dec, tmp_path / "taesdxl_decoder.pth")
    events = run_all(options(tmp_path, tmp_path / "taesdxl_encoder.pth", steps=2, every=1))
    assert events[0].architecture == "taesd" and events[0].family == "sdxl"
    out = tmp_path / "out"
    e2 = torch.load(out / "taesdxl_finetune_encoder.pth", weights_only=True)
    d2 = torch.load(out / "taesdxl_finetune_decoder.pth", weights_only=True)
    assert set(e2) == set(enc) and all(torch.equal(e2[k], enc[k]) for k in enc)
    assert any(not torch.equal(d2[k], dec[k]) for k in dec)
    vae = load_vae(out / "taesdxl_finetune_decoder.pth")
    assert (vae.info.architecture, vae.info.family, vae.info.format) == ("taesd", "sdxl", "pair")
    assert not (out / "vae.safetensors").exists()


def test_flux2_bfl_file_out(tmp_path):
    from diffusers import AutoencoderKLFlux2

    from vaestudio.core.archs.flux2 import diffusers_to_bfl

    make_images(tmp_path / "imgs", n=2)
    make_images(tmp_path / "val", n=1)
    torch.manual_seed(0)
    m = AutoencoderKLFlux2(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=32)
    with torch.no_grad():
        m.bn.running_mean.normal_(0, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    src = tmp_path / "flux2-vae.safetensors"
    save_file({k: v.contiguous() for k, v in diffusers_to_bfl(m.state_dict()).items()}, str(src))
    run_all(options(tmp_path, src, steps=1, every=1))
    out = load_vae(tmp_path / "out" / "vae.safetensors")
    assert (out.info.architecture, out.info.family, out.info.key_layout) == ("flux2", "flux2", "bfl")
    assert torch.equal(out.model.bn.running_mean, m.bn.running_mean)  # the model space is never trained
    assert load_vae(tmp_path / "out" / "diffusers").info.architecture == "flux2"


def test_unreadable_images_are_listed_and_skipped(tmp_path):
    make_images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png at all")
    make_images(tmp_path / "val", n=1)
    src, _ = sd_file(tmp_path)
    events = run_all(options(tmp_path, src, steps=3, every=3))
    skipped = [e for e in events if isinstance(e, Skipped)]
    assert [Path(e.path).name for e in skipped] == ["broken.png"] and skipped[0].reason
    assert isinstance(events[-1], Finished)


def test_held_out_split_is_a_fixed_hash_and_crops_are_seeded(tmp_path):
    paths = make_images(tmp_path / "many", n=40, h=20, w=20)
    s1, s2 = split_data([str(tmp_path / "many")], "0.3"), split_data([str(tmp_path / "many")], "0.3")
    assert s1 == s2 and 0 < len(s1.val) < 40 and set(s1.val) | set(s1.train) == {str(p) for p in paths}
    assert all(held_out_hash(p) < 0.3 for p in s1.val)
    assert held_out_hash("a/b.png") == pytest.approx(held_out_hash("a/b.png")) != held_out_hash("a/c.png")
    x = torch.rand(3, 40, 50)
    assert torch.equal(random_crop(x, 16, 0, 5), random_crop(x, 16, 0, 5))
    crops = {random_crop(x, 16, 0, g).sum().item() for g in range(8)}
    assert len(crops) > 4 and random_crop(torch.rand(3, 10, 12), 16, 0, 0).shape == (3, 16, 16)


def test_losses_parse():
    assert parse_losses("l1,lpips=0.5,kl") == {"l1": 1.0, "lpips": 0.5, "kl": 1e-6}
    with pytest.raises(FinetuneError):
        parse_losses("l2")


def test_lpips_loss_runs(tmp_path):
    make_images(tmp_path / "imgs", n=2, h=40, w=40)
    make_images(tmp_path / "val", n=1, h=40, w=40)
    src, _ = sd_file(tmp_path)
    events = run_all(options(tmp_path, src, steps=2, every=2, losses={"l1": 1.0, "lpips": 0.5}))
    step = [e for e in events if type(e).__name__ == "StepDone"][0]
    assert set(step.terms) == {"l1", "lpips"} and step.terms["lpips"] > 0
    val = [e for e in events if isinstance(e, Validated)][0]
    assert val.current["lpips"] is not None


def test_diverging_loss_stops_and_keeps_the_checkpoint(tmp_path, capsys):
    make_images(tmp_path / "imgs", n=2)
    make_images(tmp_path / "val", n=1)
    src, _ = sd_file(tmp_path)
    args = ["finetune", str(tmp_path / "imgs"), "--vae", str(src), "--out", str(tmp_path / "out"), "--size", "32",
            "--batch", "2", "--val", str(tmp_path / "val"), "--every", "1", "--steps", "40", "--lr", "1e12"]
    assert main(args) == 3
    msg = capsys.readouterr().err
    assert "the last good checkpoint is kept" in msg and "Traceback" not in msg
    assert (tmp_path / "out" / "checkpoint.safetensors").is_file()


def test_cli_bad_input_one_line_each(tmp_path, capsys):
    make_images(tmp_path / "imgs", n=2)
    src, _ = sd_file(tmp_path)
    base = ["finetune", str(tmp_path / "imgs"), "--vae", str(src), "--size", "32", "--steps", "1", "--batch", "2"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*base, "--out", str(blocker / "sub")]) == 2  # unwritable --out: refused before training
    assert main([*base, "--out", str(tmp_path / "o"), "--loss", "mse"]) == 2
    assert main([*base, "--out", str(tmp_path / "o"), "--loss", "kl"]) == 2  # KL needs --part all
    assert main([*base, "--out", str(tmp_path / "o"), "--size", "30"]) == 2
    assert main([*base, "--out", str(tmp_path / "o"), "--resume"]) == 2  # nothing to resume
    assert main(["finetune", str(tmp_path / "nothing"), "--vae", str(src), "--out", str(tmp_path / "o")]) == 2
    assert main([*base[:2], "--vae", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o")]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 7
    assert main([*base, "--out", str(tmp_path / "ok"), "--json", "--val", "0"]) == 0
    printed = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert printed[-1]["event"] == "finished" and printed[-1]["step"] == 1
    assert main([*base, "--out", str(tmp_path / "ok")]) == 2  # a finished run's folder without --resume
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"no")
    assert main(["finetune", str(tmp_path / "broken"), "--vae", str(src), "--out", str(tmp_path / "b"), "--size", "32",
                 "--val", "0"]) == 3
    assert "none of the training images can be read" in capsys.readouterr().err


def test_other_architectures_cannot_be_finetuned_yet(tmp_path, capsys):
    from diffusers import AutoencoderTiny  # noqa: F401 - only to be sure diffusers is importable

    from vaestudio.core.mnist.train import TrainConfig, Trainer

    make_images(tmp_path / "imgs", n=2)
    x = np.random.default_rng(0).random((8, 784)).astype(np.float32)
    tr = Trainer(TrainConfig(epochs=1, batch_size=4, hidden_dim=8, latent_dim=2), x, x[:4])
    ckpt = tr.save(tmp_path / "mnist.safetensors")
    code = main(["finetune", str(tmp_path / "imgs"), "--vae", str(ckpt), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and "cannot be fine-tuned yet" in err[0]


def test_gradient_checkpointing_and_bf16_autocast_on_the_cpu(tmp_path):
    """diffusers' gradient checkpointing (the GPU default) recomputes the same forward: the same weights; bf16
    autocast (asked for here, a GPU's default where it has bf16) trains and says so."""
    make_images(tmp_path / "imgs", n=2)
    make_images(tmp_path / "val", n=1)
    src, _ = sd_file(tmp_path)
    outs = []
    for name, kw in (("off", {}), ("on", dict(checkpointing="on")), ("bf16", dict(precision="bf16"))):
        opts = options(tmp_path, src, steps=2, every=2, **kw)
        opts.out = str(tmp_path / name)
        events = run_all(opts)
        outs.append(load_file(str(tmp_path / name / "vae.safetensors")))
        if name == "on":
            assert "gradient checkpointing on" in events[0].notes
        if name == "bf16":
            assert "mixed precision: bfloat16 autocast" in events[0].notes and isinstance(events[-1], Finished)
    off, on, bf16 = outs
    assert max(float((off[k] - on[k]).abs().max()) for k in off) <= 1e-6
    assert max(float((off[k] - bf16[k]).abs().max()) for k in off) < 0.05  # close, not equal
