"""The CPU dtype rule (issue 18): ``--dtype auto`` is bf16 where the CPU computes bf16 natively and fp32
elsewhere, per architecture and half where bf16 loses quality; the reason is carried; a bf16 result with
NaN/Inf falls back to fp32 once. The other kind of CPU is simulated with VAESTUDIO_CPU_BF16 (the override
of oneDNN's answer); bf16 itself runs here for real (slowly on an AVX2-only CPU), so the quality guards
per architecture measure the real thing. No test asserts a time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaestudio.core.device import CPU_BF16_ENV, cpu_native_bf16, pick_dtype
from vaestudio.core.registry import get_architecture
from vaestudio.core.sources import load_vae

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_dtype import bf16_loss, models, photo  # noqa: E402

GUARD_DB = 40.0
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The benchmark's models: each architecture's tiny random-weight model, and the real taef2."""
    return models(None, False, tmp_path_factory.mktemp("dtype_models"))


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")


def test_the_capability_is_onednns_unless_overridden(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    assert cpu_native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    monkeypatch.setenv(CPU_BF16_ENV, "yes")  # not 0 or 1: oneDNN's answer stands
    assert cpu_native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv(CPU_BF16_ENV, value)
        assert cpu_native_bf16() is expected


def test_the_rule_on_each_kind_of_cpu(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    c = pick_dtype("auto", CPU, True)
    assert (c.dtype, set(c.halves.values())) == (torch.float32, {torch.float32})
    assert c.reason == "auto: fp32, this CPU has no native bf16"
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    for upcast in (False, True):  # force_upcast is a GPU half-precision matter: bf16 keeps fp32's range
        c = pick_dtype(None, CPU, upcast)
        assert (c.dtype, set(c.halves.values()), c.reason) == (torch.bfloat16, {torch.bfloat16},
                                                               "auto: bf16, native bf16 on this CPU")
    c = pick_dtype("auto", CPU, False, {"encode": "bf16 costs it 6 dB"})
    assert c.dtype == torch.float32 and c.halves == {"encode": torch.float32, "decode": torch.bfloat16}
    assert c.reason == "auto: bf16 for the decoder, fp32 for the encoder, bf16 costs it 6 dB"
    c = pick_dtype("auto", CPU, False, {"encode": "a", "decode": "b"})
    assert c.dtype == torch.float32 and set(c.halves.values()) == {torch.float32}
    c = pick_dtype("fp32", CPU, False)
    assert (c.dtype, c.reason) == (torch.float32, "fp32 asked for")
    assert pick_dtype("bf16", CPU, False).reason == "bf16 asked for"


@pytest.mark.parametrize("kind", ["native_bf16", "no_native_bf16"])
def test_a_vae_runs_as_the_rule_says(vae_dir, request, kind):
    request.getfixturevalue(kind)
    vae = load_vae(vae_dir)
    want = torch.bfloat16 if kind == "native_bf16" else torch.float32
    assert vae.dtype == want and {p.dtype for p in vae.model.parameters()} == {want}
    assert vae.dtype_reason.startswith("auto: " + ("bf16" if want == torch.bfloat16 else "fp32"))
    pixels = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    enc = vae.encode(pixels)
    dec = vae.decode(enc.latent, 32, 32)
    assert enc.latent.dtype == torch.float32 and dec.pixels.dtype == np.float32  # callers always get fp32
    assert np.isfinite(dec.pixels).all() and not dec.notes


def test_fp32_asked_for_is_fp32_on_any_cpu(vae_dir, native_bf16):
    vae = load_vae(vae_dir, dtype="fp32")
    assert vae.dtype == torch.float32 and vae.dtype_reason == "fp32 asked for"
    assert {p.dtype for p in vae.model.parameters()} == {torch.float32}


def test_bf16_nan_falls_back_to_fp32_once(vae_dir, native_bf16):
    """The same guard as half precision on a GPU: NaN from bf16 switches the VAE to fp32 for good."""
    vae = load_vae(vae_dir)
    assert vae.dtype == torch.bfloat16
    real_decode = vae.model.decode
    seen = []

    def nan_in_bf16(z, *a, **k):
        seen.append(z.dtype)
        out = real_decode(z, *a, **k)
        if z.dtype == torch.bfloat16:
            out.sample[:] = float("nan")
        return out

    vae.model.decode = nan_in_bf16
    enc = vae.encode(np.full((16, 16, 3), 0.5, np.float32))
    dec = vae.decode(enc.latent, 16, 16)
    assert seen == [torch.bfloat16, torch.float32]
    assert np.isfinite(dec.pixels).all() and dec.notes == ["bf16 produced NaN/Inf; retried in fp32"]
    assert vae.dtype == torch.float32 and {p.dtype for p in vae.model.parameters()} == {torch.float32}
    assert vae.dtype_reason == "auto: bf16, native bf16 on this CPU; bf16 produced NaN/Inf, fp32 since"
    assert not vae.decode(enc.latent, 16, 16).notes and seen[-1] == torch.float32


def test_a_half_kept_in_fp32_runs_in_fp32_and_the_other_in_bf16(sources, native_bf16):
    """FLUX.2 keeps its encoder in fp32 (measured below): weights stay fp32, the encoder matches the
    fp32 VAE exactly, the decoder runs under bf16 autocast (differs from fp32, close to it)."""
    pixels = photo(64)
    vae, f32 = load_vae(sources["flux2"]), load_vae(sources["flux2"], dtype="fp32")
    assert "encode" in type(vae).cpu_fp32 and "decode" not in type(vae).cpu_fp32
    assert vae.dtype == torch.float32 and vae.dtype_reason.startswith("auto: bf16 for the decoder, fp32 for the encoder")
    z, z32 = vae.encode(pixels).latent, f32.encode(pixels).latent
    assert torch.equal(z, z32)
    got, ref = vae.decode(z, 64, 64).pixels, f32.decode(z, 64, 64).pixels
    err = float(np.abs(got - ref).max())
    assert 0 < err < 0.05, err


def test_bf16_nan_in_an_autocast_half_falls_back_too(sources, native_bf16):
    vae = load_vae(sources["flux2"])
    real_decode = vae.model.decode

    def nan_under_autocast(z, *a, **k):
        out = real_decode(z, *a, **k)
        if torch.is_autocast_enabled("cpu"):
            out.sample[:] = float("inf")
        return out

    vae.model.decode = nan_under_autocast
    dec = vae.decode(vae.encode(photo(32)).latent, 32, 32)
    assert np.isfinite(dec.pixels).all() and dec.notes == ["bf16 produced NaN/Inf; retried in fp32"]
    assert not vae._autocast and vae.dtype_reason.endswith("; bf16 produced NaN/Inf, fp32 since")


@pytest.mark.parametrize("name", ["sd", "flux2", "wan2.1", "qwen-image", "wan2.2", "dc-ae", "hunyuan-image",
                                  "taef2 (real weights)"])
def test_bf16_quality_per_architecture_and_half(sources, name):
    """Each half auto runs in bf16 stays within 40 dB PSNR of fp32 on the decoded image; each half an
    architecture keeps in fp32 really falls below it (the exception is measured, not guessed)."""
    if name not in sources:
        pytest.skip("real taef2 weights not found")
    loss = bf16_loss(sources[name], photo(64))
    info = load_vae(sources[name], dtype="fp32")
    keeps = type(info).cpu_fp32
    assert get_architecture(info.info.architecture)  # measured through the registry, as users load it
    for half, db in loss.items():
        if half in keeps:
            assert db < GUARD_DB, (name, half, db, "bf16 is good enough here now: drop the fp32 exception")
        else:
            assert db >= GUARD_DB, (name, half, db)


def test_mnist_stays_fp32(native_bf16):
    from vaestudio.core.archs.mnist import MnistVae
    from vaestudio.core.mnist.model import VAE

    vae = MnistVae.from_trained(VAE())
    assert vae.dtype == torch.float32 and {p.dtype for p in vae.model.parameters()} == {torch.float32}


# -- what was chosen and why is visible ----------------------------------------------------------------

def test_reconstruct_json_says_dtype_and_why(rgb_image, ldm_file, tmp_path, capsys, monkeypatch):
    import json

    from vaestudio.cli import main

    for env, dtype, want, reason in (("1", "auto", "bf16", "auto: bf16, native bf16 on this CPU"),
                                     ("0", "auto", "fp32", "auto: fp32, this CPU has no native bf16"),
                                     ("1", "fp32", "fp32", "fp32 asked for")):
        monkeypatch.setenv(CPU_BF16_ENV, env)
        assert main(["reconstruct", str(rgb_image), "--vae", str(ldm_file), "--out", str(tmp_path / env / dtype),
                     "--dtype", dtype, "--json"]) == 0
        rec = json.loads(capsys.readouterr().out.strip())
        assert (rec["dtype"], rec["dtype_reason"]) == (want, reason)


def test_inspect_vae_json_says_what_auto_would_run(sources, vae_dir, capsys, monkeypatch):
    import json

    from vaestudio.cli import main

    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert main(["inspect-vae", str(vae_dir), str(sources["flux2"]), "--json"]) == 0
    sd, flux2 = (json.loads(x) for x in capsys.readouterr().out.strip().splitlines())
    assert sd["dtype"] == "float32"  # the weights as stored, as before
    assert (sd["auto_dtype"], sd["dtype_reason"]) == ("bf16", "auto: bf16, native bf16 on this CPU")
    assert flux2["auto_dtype"] == "fp32"
    assert flux2["dtype_reason"] == load_vae(sources["flux2"]).dtype_reason  # the same rule as a loaded VAE
    assert "fp32 for the encoder" in flux2["dtype_reason"]
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert main(["inspect-vae", str(vae_dir)]) == 0
    assert "auto dtype:      fp32 on cpu (auto: fp32, this CPU has no native bf16)" in capsys.readouterr().out


def test_summary_json_says_each_vaes_dtype_and_why(tmp_path, vae_dir, sources, native_bf16):
    import json

    from PIL import Image

    from vaestudio.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray((photo(32) * 255).astype(np.uint8)[:, ::-1] if i else (photo(32) * 255).astype(np.uint8)
                        ).save(data / f"{i}.png")
    out = tmp_path / "out"
    assert main(["evaluate", str(data), "--vae", str(vae_dir), "--vae", str(sources["flux2"]), "--out", str(out),
                 "--size", "32", "--workers", "0", "--metrics", "psnr", "--no-report"]) == 0
    vaes = json.loads((out / "summary.json").read_text())["vaes"]
    assert [(v["dtype"], v["dtype_reason"].split(",")[0]) for v in vaes] == [("bf16", "auto: bf16"),
                                                                            ("fp32", "auto: bf16 for the decoder")]
    assert all(v["images"] == 2 for v in vaes)


def test_the_vae_panel_shows_why(qtbot, vae_dir, native_bf16):
    from vaestudio.core.device import dtype_name
    from vaestudio.ui.panels import VaePanel

    vae = load_vae(vae_dir)
    panel = VaePanel()
    qtbot.addWidget(panel)
    panel.show_info(vae.info.to_dict(), str(vae.device), dtype_name(vae.dtype), None, vae.dtype_reason)
    text = panel.info.text()
    assert "running bf16 on cpu" in text and "precision: auto: bf16, native bf16 on this CPU" in text
