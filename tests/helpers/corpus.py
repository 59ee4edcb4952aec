"""A corpus of bad inputs, generated (never checked in as blobs): images and weight files.

``build_corpus(folder)`` writes every file and returns a list of ``(path, kind, note)``, where kind
is "image", "weights" or "folder". ``scripts/make_corpus.py`` writes it to disk for a look.
Hostile pickles create the file named by ``marker`` when unpickled unsafely; its absence after a
test proves no code ran.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

GOOD_RGB = (np.indices((24, 32)).sum(axis=0)[..., None] * np.array([3, 5, 7]) % 256).astype(np.uint8)


class RunsCode:
    """Unpickling this calls open(marker, 'w'): any such file means code ran."""

    def __init__(self, marker: Path, how: str = "open") -> None:
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "exec":
            return (exec, (f"open({self.marker!r}, 'w').close()",))
        if self.how == "system":
            import os

            return (os.system, (f"touch {self.marker}",))
        return (open, (self.marker, "w"))


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def image_bytes(fmt: str, mode: str = "RGB", orientation: int | None = None) -> bytes:
    from PIL import Image

    im = Image.fromarray(GOOD_RGB)
    if mode == "I;16":
        im = Image.fromarray(GOOD_RGB[..., 0].astype(np.uint16) * 257)
    elif mode == "F":
        im = Image.fromarray(GOOD_RGB[..., 0].astype(np.float32) / 100.0 - 0.5, mode="F")
    elif mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    kw = {}
    if orientation is not None:
        exif = im.getexif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def tiny_vae_files(folder: Path) -> dict[str, Path]:
    """Valid files to mutate: a tiny VAE as LDM safetensors and as a zip checkpoint."""
    import torch
    from safetensors.torch import save_file

    from vaestudio.core.archs.autoencoder_kl import diffusers_to_ldm

    torch.manual_seed(0)
    from diffusers import AutoencoderKL

    model = AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                          up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=32)
    sd = {k: v.contiguous() for k, v in diffusers_to_ldm(model.state_dict()).items()}
    folder.mkdir(parents=True, exist_ok=True)
    st, ck = folder / "valid.safetensors", folder / "valid.ckpt"
    save_file(sd, str(st))
    torch.save({"state_dict": sd}, ck)
    return {"safetensors": st, "ckpt": ck, "model": model}


def hostile_weight_files(valid: dict[str, Path], marker: Path) -> dict[str, bytes]:
    """The valid tiny VAE (``tiny_vae_files``) with a payload that creates ``marker`` when unpickled
    unsafely, as a zip checkpoint and as a plain pickle: mutated, they must still never run it."""
    import torch
    from safetensors.torch import load_file

    sd = load_file(str(valid["safetensors"]))
    zipped = io.BytesIO()
    torch.save({"state_dict": sd, "evil": RunsCode(marker, "exec")}, zipped)
    return {"hostile_zip": zipped.getvalue(),
            "hostile_plain": pickle.dumps({"state_dict": sd, "evil": RunsCode(marker)}, protocol=2)}


def build_corpus(folder: str | Path, marker: Path) -> list[tuple[Path, str, str]]:
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, str, str]] = []

    def add(rel: str, data: bytes, kind: str, note: str) -> None:
        p = folder / rel
        p.write_bytes(data)
        out.append((p, kind, note))

    # -- images: every format, mode and orientation, and broken ones --------------------------
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff"), ("GIF", "gif")):
        good = image_bytes(fmt)
        add(f"images/ok.{ext}", good, "image", f"valid {fmt}")
        add(f"images/truncated.{ext}", good[: len(good) // 2], "image", f"{fmt} cut in half")
        add(f"images/header_only.{ext}", good[:16], "image", f"{fmt} header only")
    for mode in ("L", "LA", "P", "PA", "1", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"):
        fmt = "TIFF" if mode in ("I;16", "I", "F", "CMYK", "YCbCr", "PA") else "PNG"
        try:
            add(f"images/mode_{mode.replace(';', '_')}.{fmt.lower()}", image_bytes(fmt, mode), "image", f"mode {mode}")
        except (OSError, ValueError, KeyError):
            continue
    for o in range(1, 9):
        add(f"images/orientation_{o}.jpg", image_bytes("JPEG", orientation=o), "image", f"EXIF orientation {o}")
    add("images/empty.png", b"", "image", "empty file")
    add("images/text.png", b"just some text, not pixels\n" * 4, "image", "text named .png")
    add("images/mislabelled.jpg", image_bytes("PNG"), "image", "a PNG named .jpg")
    add("images/bomb.png", _png_claiming(100_000, 100_000), "image", "header claims 10 gigapixels")
    add("images/big_claim.png", _png_claiming(9_000, 9_000), "image", "81 megapixels (over our limit)")
    add("images/zero_size.png", _png_claiming(0, 10), "image", "zero width")

    # -- weights: hostile pickles ---------------------------------------------------------------
    for how in ("open", "exec", "system"):
        payload = {"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}, "evil": RunsCode(marker, how)}
        for ext in ("ckpt", "pt", "bin"):
            buf = io.BytesIO()
            torch.save(payload, buf)
            add(f"weights/hostile_{how}_zip.{ext}", buf.getvalue(), "weights", f"zip pickle calling {how}")
            add(f"weights/hostile_{how}_plain.{ext}", pickle.dumps({"x": RunsCode(marker, how)}, protocol=2),
                "weights", f"plain pickle calling {how}")
    # -- weights: malformed safetensors -----------------------------------------------------------
    entry = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    add("weights/short_header.safetensors", b"\x08\x00\x00", "weights", "shorter than the 8-byte length")
    add("weights/header_too_big.safetensors", struct.pack("<Q", 1 << 40) + b"{}", "weights", "header larger than file")
    add("weights/bad_json.safetensors", struct.pack("<Q", 9) + b"{not json", "weights", "header is not JSON")
    add("weights/json_list.safetensors", _safetensors([1, 2], b""), "weights", "header is a JSON list")  # type: ignore[arg-type]
    add("weights/overlap.safetensors", _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                                                    b"\x00" * 12), "weights", "overlapping offsets")
    add("weights/beyond_end.safetensors", _safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                                       b"\x00" * 8), "weights", "offsets past the end")
    add("weights/trailing_junk.safetensors", _safetensors(entry, b"\x00" * 8 + b"JUNK"), "weights", "trailing junk")
    add("weights/bad_dtype.safetensors", _safetensors({"t": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}},
                                                      b"\x00" * 8), "weights", "unknown dtype")
    add("weights/negative_shape.safetensors", _safetensors({"t": {"dtype": "F32", "shape": [-2],
                                                                  "data_offsets": [0, 8]}}, b"\x00" * 8),
        "weights", "negative shape")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    add("weights/zip_renamed.safetensors", zbuf.getvalue(), "weights", "a plain zip named .safetensors")
    add("weights/empty.ckpt", b"", "weights", "empty checkpoint")
    add("weights/text.pt", b"hello", "weights", "text named .pt")

    # -- weights: real tensors that are not a usable VAE ----------------------------------------------
    def st(rel: str, tensors: dict, note: str) -> None:
        p = folder / rel
        save_file(tensors, str(p))
        out.append((p, "weights", note))

    st("weights/lora.safetensors", {"lora_unet_x.lora_down.weight": torch.zeros(4, 8),
                                    "lora_unet_x.lora_up.weight": torch.zeros(8, 4), "lora_unet_x.alpha": torch.ones(())},
       "a LoRA")
    st("weights/unet.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, "UNet only")
    st("weights/text_encoder.safetensors", {"text_model.embeddings.token_embedding.weight": torch.zeros(10, 8)},
       "a text encoder")
    files = tiny_vae_files(folder / "valid")
    from safetensors.torch import load_file

    sd = load_file(str(files["safetensors"]))
    nan = dict(sd)
    nan["decoder.conv_out.weight"] = nan["decoder.conv_out.weight"].clone()
    nan["decoder.conv_out.weight"][0, 0, 0, 0] = float("inf")
    st("weights/non_finite.safetensors", nan, "an Inf weight")
    half = {k: v for i, (k, v) in enumerate(sd.items()) if i % 2}
    st("weights/half_the_keys.safetensors", half, "half the VAE's tensors")

    # -- diffusers folders with missing or broken configs -------------------------------------------
    model = files["model"]
    for name, cfg in (("no_config", None), ("broken_config", "{ oops"), ("list_config", "[1, 2]"),
                      ("unet_config", json.dumps({"_class_name": "UNet2DConditionModel"})),
                      ("wrong_channels", json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 16}))):
        d = folder / "folders" / name
        model.save_pretrained(d)
        if cfg is None:
            (d / "config.json").unlink()
        else:
            (d / "config.json").write_text(cfg)
        out.append((d, "folder", name.replace("_", " ")))
    d = folder / "folders" / "no_weights"
    model.save_pretrained(d)
    (d / "diffusion_pytorch_model.safetensors").unlink()
    out.append((d, "folder", "config without weights"))
    return out
