"""Loading a VAE from every layout users download, compared weight for weight with diffusers."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sys

import pytest
import torch
from conftest import ldm_state_dict, tiny_vae
from safetensors.torch import save_file

from vaestudio.core.errors import UnsafeFileError, VaeLoadError
from vaestudio.core.sources import load_vae, prepare_source
from vaestudio.core.weights import read_weight_file

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, os.PathLike)):
        _OPENED.append(os.fspath(args[0]))


sys.addaudithook(_audit)  # records nothing outside ``opened`` (audit hooks cannot be removed)


@contextlib.contextmanager
def opened(path):
    """The times Python opens ``path`` inside the block."""
    global _OPENED
    _OPENED, seen, target = [], [], os.path.realpath(path)
    try:
        yield seen
    finally:
        seen.extend(p for p in _OPENED if os.path.realpath(p) == target)
        _OPENED = None


def assert_same_weights(reference: torch.nn.Module, vae) -> None:
    ref = reference.state_dict()
    got = vae.model.state_dict()
    assert set(ref) == set(got)
    for k, v in ref.items():
        assert torch.equal(v.float(), got[k].float()), k


def test_diffusers_folder_equals_from_pretrained(vae_dir):
    from diffusers import AutoencoderKL

    ref = AutoencoderKL.from_pretrained(vae_dir)
    vae = load_vae(vae_dir)
    assert_same_weights(ref, vae)
    assert vae.info.format == "diffusers-folder"
    assert vae.info.key_layout == "diffusers"
    assert vae.info.family == "sd1" and not vae.info.family_guessed
    assert vae.info.downscale == 8


def test_a_folder_without_a_class_name_reads_its_weights_once(tmp_path, tiny_model):
    """An old config.json (no _class_name) makes vaestudio ask the weights what they are; that one read is
    the one the VAE is made from."""
    folder = tmp_path / "old-vae"
    tiny_model.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["_class_name"]
    (folder / "config.json").write_text(json.dumps(cfg))
    weights = folder / "diffusion_pytorch_model.safetensors"
    with opened(weights) as one_read:
        read_weight_file(weights)
    with opened(weights) as loading:
        vae = load_vae(folder)
    assert len(loading) == len(one_read) > 0
    assert_same_weights(tiny_model, vae)
    assert vae.info.architecture == "autoencoder-kl" and vae.info.format == "diffusers-folder"


def test_pipeline_folder_uses_its_vae_subfolder(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text("{}")
    assert_same_weights(tiny_model, load_vae(tmp_path))


@pytest.mark.parametrize("prefix", ["", "first_stage_model.", "vae."])
def test_ldm_single_file_equals_from_single_file(tmp_path, tiny_model, vae_dir, prefix):
    from diffusers import AutoencoderKL

    p = tmp_path / "vae.safetensors"
    save_file(ldm_state_dict(tiny_model, prefix), str(p))
    ref = AutoencoderKL.from_single_file(str(p), config=str(vae_dir))
    vae = load_vae(p)
    assert_same_weights(ref, vae)
    assert_same_weights(tiny_model, vae)
    assert vae.info.key_layout == "ldm"
    assert vae.info.format == "safetensors"


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_wrapped_fp16_pickle_with_extra_keys(tmp_path, tiny_model, suffix):
    sd = {k: v.half() for k, v in ldm_state_dict(tiny_model, "first_stage_model.").items()}
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    sd["model_ema.decay"] = torch.tensor(0.999)
    p = tmp_path / f"vae{suffix}"
    torch.save({"state_dict": sd, "global_step": 840000, "epoch": 6}, p)
    info = prepare_source(p).info
    assert info.format == "pickle"
    assert info.dtype == "float16"
    assert any(s.startswith("loss.") for s in info.ignored_keys)
    assert any(s.startswith("model_ema") for s in info.ignored_keys)
    assert any("global_step" in n for n in info.notes)
    vae = load_vae(p)
    ref = {k: v.half().float() for k, v in tiny_model.state_dict().items()}
    for k, v in ref.items():
        assert torch.equal(v, vae.model.state_dict()[k].float()), k


def test_full_sd_checkpoint_takes_the_vae_part(tmp_path, tiny_model):
    sd = ldm_state_dict(tiny_model, "first_stage_model.")
    sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.randn(8, 4, 3, 3)
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.randn(10, 8)
    p = tmp_path / "sd15-full.safetensors"
    save_file(sd, str(p))
    vae = load_vae(p)
    assert_same_weights(tiny_model, vae)
    assert vae.info.family == "sd1"
    assert any("model.diffusion_model" in s for s in vae.info.ignored_keys)


def test_diffusers_layout_single_file(tmp_path, tiny_model):
    p = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(p))
    vae = load_vae(p)
    assert vae.info.key_layout == "diffusers"
    assert_same_weights(tiny_model, vae)


def test_sixteen_channel_vae_without_quant_convs(tmp_path, vae_dir):
    from diffusers import AutoencoderKL

    model = tiny_vae(latent_channels=16, quant=False, seed=3)
    p = tmp_path / "flux_ae.safetensors"
    save_file(ldm_state_dict(model), str(p))
    cfg_dir = tmp_path / "cfg"
    model.save_pretrained(cfg_dir)
    ref = AutoencoderKL.from_single_file(str(p), config=str(cfg_dir))
    vae = load_vae(p)
    assert_same_weights(ref, vae)
    assert vae.info.latent_channels == 16
    # the name says flux: a hint, so still reported as a guess, with its reason
    assert vae.info.family == "flux" and vae.info.family_guessed and "name" in vae.info.family_reason
    assert (vae.info.scaling_factor, vae.info.shift_factor) == (0.3611, 0.1159)
    p3 = tmp_path / "some_ae.safetensors"
    shutil.copy(p, p3)
    guess = prepare_source(p3).info
    assert guess.family_guessed and guess.family in ("flux", "sd3") and "no hint" in guess.family_reason
    sd3 = prepare_source(p3, family="sd3").info
    assert (sd3.family, sd3.scaling_factor, sd3.shift_factor, sd3.family_guessed) == ("sd3", 1.5305, 0.0609, False)


def test_sdxl_from_metadata_and_name(tmp_path, tiny_model):
    p = tmp_path / "x.safetensors"
    save_file(ldm_state_dict(tiny_model), str(p), metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"})
    info = prepare_source(p).info
    assert (info.family, info.scaling_factor, info.family_guessed) == ("sdxl", 0.13025, False)
    q = tmp_path / "sdxl_vae.safetensors"
    save_file(ldm_state_dict(tiny_model), str(q))
    info = prepare_source(q).info
    assert info.family == "sdxl" and info.family_guessed
    with pytest.raises(VaeLoadError, match="16 latent channels"):
        prepare_source(q, family="flux")


def test_old_diffusers_attention_names(tmp_path, tiny_model):
    sd = {}
    for k, v in tiny_model.state_dict().items():
        k = k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
        sd[k.replace(".to_out.0.", ".proj_attn.")] = v.contiguous()
    p = tmp_path / "old.safetensors"
    save_file(sd, str(p))
    assert_same_weights(tiny_model, load_vae(p))


# -- bad inputs -----------------------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # creating the marker file proves code ran


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
@pytest.mark.parametrize("zipped", [True, False])
def test_hostile_pickle_never_runs(tmp_path, suffix, zipped):
    marker = tmp_path / "PWNED"
    p = tmp_path / f"evil{suffix}"
    if zipped:
        payload = {"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "x": _RunsCode(marker)}
        torch.save(payload, p)
    else:
        with open(p, "wb") as fh:
            pickle.dump({"x": _RunsCode(marker)}, fh, protocol=2)
    with pytest.raises(UnsafeFileError) as err:
        load_vae(p)
    assert not marker.exists()
    assert "refused" in str(err.value) and "\n" not in str(err.value)
    assert "(io.open)" in str(err.value)  # names what it refused


def _bad(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    "name,data,expect",
    [
        ("empty.safetensors", b"", "empty"),
        ("short.safetensors", b"\x05\x00", "not a valid safetensors"),
        ("huge_header.safetensors", (10_000).to_bytes(8, "little") + b'{"a":1}', "truncated or corrupt"),
        ("badjson.safetensors", (8).to_bytes(8, "little") + b"{not json", "not valid JSON"),
        ("text.ckpt", b"hello, I am not a checkpoint at all", "not a weight file"),
        ("zip.safetensors", b"PK\x03\x04" + b"\x00" * 60, "truncated or corrupt"),
    ],
)
def test_corrupt_files_give_one_sentence(tmp_path, name, data, expect):
    with pytest.raises(VaeLoadError, match=expect) as err:
        load_vae(_bad(tmp_path, name, data))
    assert "\n" not in str(err.value)


def _header_file(tmp_path, header: dict, data_len: int, name="x.safetensors"):
    raw = json.dumps(header).encode()
    return _bad(tmp_path, name, len(raw).to_bytes(8, "little") + raw + b"\x00" * data_len)


def test_overlapping_and_out_of_range_offsets(tmp_path):
    over = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    with pytest.raises(VaeLoadError, match="overlap"):
        load_vae(_header_file(tmp_path, over, 12))
    beyond = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    with pytest.raises(VaeLoadError, match="outside the file"):
        load_vae(_header_file(tmp_path, beyond, 8, "b.safetensors"))


def test_truncated_safetensors(tmp_path, ldm_file):
    data = ldm_file.read_bytes()
    with pytest.raises(VaeLoadError, match="truncated or corrupt"):
        load_vae(_bad(tmp_path, "cut.safetensors", data[: len(data) // 2]))


def test_trailing_junk_is_refused_clearly(tmp_path, ldm_file):
    p = _bad(tmp_path, "junk.safetensors", ldm_file.read_bytes() + b"JUNK" * 10)
    with pytest.raises(VaeLoadError, match="40 bytes of unexpected data after the last tensor"):
        load_vae(p)


def test_zip_checkpoint_renamed_as_safetensors(tmp_path, tiny_model):
    p = tmp_path / "renamed.safetensors"
    torch.save(ldm_state_dict(tiny_model), p)
    vae = load_vae(p)
    assert any("zip checkpoint" in n for n in vae.info.notes)
    assert_same_weights(tiny_model, vae)


@pytest.mark.parametrize(
    "keys,expect",
    [
        ({"lora_unet_down_blocks_0_attentions_0.lora_down.weight": (4, 8), "lora_unet_x.alpha": ()}, "LoRA"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3)}, "UNet"),
        ({"text_model.encoder.layers.0.mlp.fc1.weight": (8, 8)}, "text encoder"),
        ({"decoder.conv_in.weight": (8, 4, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3)}, "only an SD VAE decoder and no encoder"),
        ({"foo.bar": (3,)}, "no VAE weights"),
    ],
)
def test_files_that_are_not_vaes(tmp_path, keys, expect):
    p = tmp_path / "thing.safetensors"
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(p))
    with pytest.raises(VaeLoadError, match=expect):
        load_vae(p)


def test_incomplete_vae(tmp_path, tiny_model):
    sd = ldm_state_dict(tiny_model)
    del sd["decoder.up.0.block.0.conv1.weight"]
    p = tmp_path / "partial.safetensors"
    save_file(sd, str(p))
    with pytest.raises(VaeLoadError, match="incomplete"):
        load_vae(p)


def test_non_finite_weights_refused(tmp_path, tiny_model):
    sd = ldm_state_dict(tiny_model)
    sd["decoder.conv_out.weight"][0, 0, 0, 0] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_file(sd, str(p))
    with pytest.raises(VaeLoadError, match="NaN or Inf"):
        load_vae(p)


def test_folders_without_valid_config(tmp_path, vae_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VaeLoadError, match="no config.json"):
        load_vae(empty)
    broken = tmp_path / "broken"
    shutil.copytree(vae_dir, broken)
    (broken / "config.json").write_text("{ this is not json")
    with pytest.raises(VaeLoadError, match="not valid JSON"):
        load_vae(broken)
    unet = tmp_path / "unet"
    shutil.copytree(vae_dir, unet)
    cfg = json.loads((unet / "config.json").read_text())
    cfg["_class_name"] = "UNet2DConditionModel"
    (unet / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VaeLoadError, match="UNet2DConditionModel, not an AutoencoderKL"):
        load_vae(unet)
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    shutil.copy(vae_dir / "config.json", noweights / "config.json")
    with pytest.raises(VaeLoadError, match="no weights file"):
        load_vae(noweights)
    lying = tmp_path / "lying"
    shutil.copytree(vae_dir, lying)
    cfg = json.loads((lying / "config.json").read_text())
    cfg["latent_channels"] = 16
    (lying / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VaeLoadError, match="latent_channels"):
        load_vae(lying)


def test_unknown_source(tmp_path):
    with pytest.raises(VaeLoadError, match="no such file"):
        load_vae(tmp_path / "missing.safetensors")
    with pytest.raises(VaeLoadError, match="no such file"):
        load_vae("./not/here")


def test_an_incomplete_ldm_file_is_one_sentence(tmp_path, tiny_model):
    sd = ldm_state_dict(tiny_model)
    half = {k: v for k, v in sd.items() if not k.startswith("decoder.up.1")}  # half a decoder
    p = tmp_path / "half.safetensors"
    save_file(half, str(p))
    with pytest.raises(VaeLoadError) as e:
        load_vae(p)
    assert "incomplete" in str(e.value) and "\n" not in str(e.value)


def test_another_sd_vaes_decoder_pairs_with_the_encoder(tmp_path, ldm_file, tiny_model):
    """--decoder: an LDM file's encoder with another SD VAE's decoder (a diffusers-key file, e.g. a decoder fine-tune)
    is AutoencoderKL holding exactly those halves; a whole VAE given as the decoder lends only its decoder."""
    from diffusers import AutoencoderKL

    other = tiny_vae(seed=7)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "finetune.safetensors"))
    vae = load_vae(ldm_file, decoder=tmp_path / "finetune.safetensors")
    mine = tiny_model.state_dict()
    want = {k: (other.state_dict() if k.startswith(("decoder.", "post_quant_conv.")) else mine)[k] for k in mine}
    got = vae.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k].float(), want[k].float()) for k in want)
    ref = AutoencoderKL(**tiny_model.config).eval()
    ref.load_state_dict(want)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        mean = ref.encode(x).latent_dist.mean
        torch.testing.assert_close(vae.model.decode(mean).sample, ref.decode(mean).sample, rtol=1e-5, atol=1e-5)
    assert vae.info.family == prepare_source(ldm_file).info.family
    with pytest.raises(VaeLoadError, match="the decoder must be a weight file"):
        prepare_source(ldm_file, decoder=tmp_path / "missing.safetensors")
