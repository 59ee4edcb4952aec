"""Shared by the tests of today's large VAEs (tests/test_arch_*.py): tiny real models, the pipelines' own
decode path run with a transformer that predicts zero velocity, and the broken-file checks."""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vaestudio.core.errors import VaeLoadError
from vaestudio.core.sources import load_vae


def perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Random init leaves many outputs near zero; perturb every weight so layouts are really compared."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def assert_weights(vae, expected: dict[str, torch.Tensor]) -> None:
    got = vae.model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def pixels(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(np.stack([xx / w, yy / h, 0.5 + 0.2 * rng.standard_normal((h, w))], axis=2), 0, 1).astype(np.float32)


def clip(t: int = 9, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """A gradient moving right, with noise: frames that differ, so a wrong frame order or cache shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([(xx + 2 * i) % w / w, yy / h, 0.5 + 0.2 * rng.standard_normal((h, w))], axis=2)
              for i in range(t)]
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)


def as_input(x: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] to the (1, 3, H, W) batch in [-1, 1] diffusers' VAEs and pipelines take."""
    return torch.from_numpy(x).permute(2, 0, 1)[None] * 2 - 1


def to_hwc(img: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) decoder output in [-1, 1] to (H, W, 3) in [0, 1], as vaestudio returns it."""
    return (img / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def close(a, b, tol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=tol, atol=tol)


class ZeroTransformer(torch.nn.Module):
    """Stands in for a pipeline's transformer and predicts zero velocity, so the flow-matching scheduler
    leaves the given latents exactly as they are and the pipeline's own decode code runs on them."""

    def __init__(self, **config) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(**config)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def cache_context(self, *args, **kwargs):
        return contextlib.nullcontext()

    def forward(self, hidden_states, *args, **kwargs):
        return (torch.zeros_like(hidden_states),)


def scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler()


def pipeline_quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_hub_repo(model, root: Path, repo: str, subfolder: str | None = None) -> None:
    """Lay a model out as a Hugging Face repository folder (for the loopback hub in helpers.servers)."""
    target = root / repo / subfolder if subfolder else root / repo
    model.save_pretrained(target)
    if subfolder:
        (root / repo / "model_index.json").write_text(json.dumps({"_class_name": "SomePipeline"}))


def load_from_hub(tmp_path: Path, repo: str):
    from helpers.servers import hub_handler, serve
    from vaestudio.core.sources import download_from_hub

    with serve(hub_handler(tmp_path / "hub", [])) as url:
        folder = download_from_hub(repo, cache_dir=tmp_path / "cache", endpoint=url)
    return load_vae(folder)


# -- broken files ----------------------------------------------------------------------------------

def broken_variants(sd: dict[str, torch.Tensor], reshape_key: str) -> dict[str, dict[str, torch.Tensor]]:
    """Half the keys; one tensor with the wrong shape; NaN weights."""
    keys = sorted(sd)
    half = {k: sd[k] for k in keys[::2]}
    wrong = dict(sd)
    t = wrong[reshape_key]
    wrong[reshape_key] = torch.zeros(t.shape[0] + 1, *t.shape[1:], dtype=t.dtype)
    nan = dict(sd)
    first = next(k for k in keys if sd[k].is_floating_point() and sd[k].numel() > 1)
    nan[first] = torch.full_like(sd[first], float("nan"))
    return {"half the keys": half, "wrong shape": wrong, "NaN": nan}


def check_broken(tmp_path: Path, sd: dict[str, torch.Tensor], reshape_key: str, rgb_image: Path, capsys,
                 name: str = "vae") -> None:
    """Every broken variant of ``sd`` (and a truncated file) fails with one sentence; the CLI exits 4."""
    from vaestudio.cli import main

    files = {}
    for what, variant in broken_variants(sd, reshape_key).items():
        p = tmp_path / f"{name}_{what.replace(' ', '_')}.safetensors"
        save_file({k: v.contiguous() for k, v in variant.items()}, str(p))
        files[what] = p
    full = tmp_path / f"{name}_whole.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(full))
    trunc = tmp_path / f"{name}_truncated.safetensors"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    files["truncated"] = trunc
    pth = tmp_path / f"{name}_half.pth"
    torch.save({k: sd[k] for k in sorted(sd)[1::2]}, pth)
    files["half .pth"] = pth
    for what, p in files.items():
        with pytest.raises(VaeLoadError) as e:
            load_vae(p)
        msg = str(e.value)
        assert "\n" not in msg and msg.strip(), (what, msg)
        assert main(["reconstruct", str(rgb_image), "--vae", str(p)]) == 4, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (what, err)


# -- tiles ------------------------------------------------------------------------------------------

def assert_tiles_are_the_model_on_each_tile(vae, x: np.ndarray) -> None:
    """A 32x VAE on a 64x96 image with 64 px tiles overlapping by 32: two tiles side by side. The tiled
    encode and decode must be the untiled ones of each tile, blended linearly where the tiles overlap;
    nothing else may change a value (so a tile placed, scaled or blended wrongly fails here)."""
    assert x.shape[:2] == (64, 96) and vae.downscale == 32
    vae.encode_tile, vae.tile_overlap = 64, 32
    tiled = vae.encode(x, tile="on")
    left, right = vae.encode(x[:, :64], tile="off").raw, vae.encode(x[:, 32:], tile="off").raw
    assert tiled.tiled and tuple(tiled.raw.shape[1:]) == (2, 3)
    close(tiled.raw[..., 0], left[..., 0])
    close(tiled.raw[..., 2], right[..., 1])
    close(tiled.raw[..., 1], (left[..., 1] + right[..., 0]) / 2)  # one shared latent column, half each
    z = tiled.latent
    dec = vae.decode(z, 64, 96, tile="on")
    a, b = vae.decode(z[..., :2], 64, 64, tile="off").pixels, vae.decode(z[..., 1:], 64, 64, tile="off").pixels
    assert dec.tiled and dec.pixels.shape == (64, 96, 3)
    close(dec.pixels[:, :32], a[:, :32])
    close(dec.pixels[:, 64:], b[:, 32:])
    ramp = (np.arange(1, 33, dtype=np.float32) / 33)[None, :, None]  # the right tile's weight over the 32 shared px
    blend = a[:, 32:] * (1 - ramp) + b[:, :32] * ramp
    # the decoder's output is clamped to [0, 1] after blending: compare where neither tile was clamped
    inside = (a[:, 32:] > 0) & (a[:, 32:] < 1) & (b[:, :32] > 0) & (b[:, :32] < 1)
    assert inside.mean() > 0.5
    close(dec.pixels[:, 32:64][inside], blend[inside])


def assert_clip_tiles(vae, x: np.ndarray, scale: int = 1) -> None:
    """An 8x video VAE on (T, 32, 48) frames with 32 px tiles overlapping by 16: two tiles side by side (a
    ``scale`` times larger VAE on frames, tiles and overlap ``scale`` times larger: the same latents). The tiled
    clip is each tile's untiled clip where only one covers it, and their linear blend where both do."""
    s = scale
    h, w, t, o = 32 * s, 48 * s, 32 * s, 16 * s  # frame height, width, tile, overlap
    assert x.shape[1:3] == (h, w) and vae.downscale == 8 * s
    vae.encode_tile, vae.tile_overlap = t, o
    tiled = vae.encode_clip(x, tile="on")
    left, right = vae.encode_clip(x[:, :, :t], tile="off").raw, vae.encode_clip(x[:, :, o:], tile="off").raw
    assert tiled.tiled and tiled.raw.shape[-2:] == (4, 6)
    close(tiled.raw[..., :2], left[..., :2])
    close(tiled.raw[..., 4:], right[..., 2:])
    close(tiled.raw[..., 2], left[..., 2] * 2 / 3 + right[..., 0] / 3)  # the 2 shared latent columns, ramped
    close(tiled.raw[..., 3], left[..., 3] / 3 + right[..., 1] * 2 / 3)
    z = tiled.latent
    dec = vae.decode_clip(z, h, w, tile="on")
    a = vae.decode_clip(z[..., :4], h, t, tile="off").frames
    b = vae.decode_clip(z[..., 2:], h, t, tile="off").frames
    assert dec.tiled and dec.complete and dec.frames.shape == (len(x), h, w, 3)
    close(dec.frames[:, :, :o], a[:, :, :o])
    close(dec.frames[:, :, t:], b[:, :, o:])
    ramp = (np.arange(1, o + 1, dtype=np.float32) / (o + 1))[None, None, :, None]  # the right tile's weight
    blend = a[:, :, o:] * (1 - ramp) + b[:, :, :o] * ramp
    inside = (a[:, :, o:] > 0) & (a[:, :, o:] < 1) & (b[:, :, :o] > 0) & (b[:, :, :o] < 1)  # not clamped
    assert inside.mean() > 0.5
    close(dec.frames[:, :, o:t][inside], blend[inside])
