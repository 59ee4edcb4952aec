"""Reading real image files of every format, mode and orientation; bad files refused clearly."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vaestudio.core.errors import ImageLoadError
from vaestudio.core.images import list_images, load_image, resize_longer_side, save_png

RGB = (np.arange(20 * 30 * 3).reshape(20, 30, 3) % 256).astype(np.uint8)


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("bmp", "BMP"), ("tiff", "TIFF"), ("webp", "WEBP")])
def test_lossless_formats_round_trip(tmp_path, ext, fmt):
    p = tmp_path / f"a.{ext}"
    Image.fromarray(RGB).save(p, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    img = load_image(p)
    assert (img.width, img.height) == (30, 20) and img.source_format == fmt
    np.testing.assert_allclose(img.pixels, RGB / 255.0, atol=1e-6)


def test_jpeg_and_gif_first_frame_notice(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(load_image(tmp_path / "a.jpg").pixels - RGB / 255.0).mean() < 0.05
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    img = load_image(tmp_path / "a.gif")
    assert img.notes and "3 frames" in img.notes[0]
    assert img.pixels[0, 0, 0] > 0.9 and img.pixels[0, 0, 1] < 0.1


@pytest.mark.parametrize("orientation,shape", [(1, (20, 30)), (3, (20, 30)), (6, (30, 20)), (8, (30, 20))])
def test_exif_orientation(tmp_path, orientation, shape):
    im = Image.fromarray(RGB)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / "o.jpg"
    im.save(p, exif=exif, quality=100)
    img = load_image(p)
    assert img.pixels.shape[:2] == shape
    if orientation == 3:  # rotated 180 degrees: the top-left pixel comes from the bottom-right
        assert np.abs(img.pixels[0, 0] - RGB[-1, -1] / 255).max() < 0.1


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    arr = np.linspace(0, 65535, 64 * 16).reshape(16, 64).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    img = load_image(p)
    assert img.source_mode in ("I;16", "I")
    np.testing.assert_allclose(img.pixels[..., 0], arr / 65535.0, atol=1e-6)
    assert img.pixels.max() == pytest.approx(1.0) and np.unique(img.pixels).size > 256


def test_float_tiff_scaled(tmp_path):
    arr = np.linspace(-2.0, 6.0, 100, dtype=np.float32).reshape(10, 10)
    p = tmp_path / "f.tiff"
    Image.fromarray(arr, mode="F").save(p)
    img = load_image(p)
    assert img.pixels.min() == pytest.approx(0.0) and img.pixels.max() == pytest.approx(1.0)
    assert np.unique(img.pixels[..., 0]).size == 100  # nothing clipped


def test_alpha_and_palette_transparency_composited(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top opaque red, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(img.pixels[0, 0], [1, 0, 0])
    np.testing.assert_allclose(img.pixels[3, 0], [1, 1, 1])  # white background
    black = load_image(tmp_path / "a.png", background=(0, 0, 0))
    np.testing.assert_allclose(black.pixels[3, 0], [0, 0, 0])
    pal = Image.fromarray(rgba, "RGBA").convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png").pixels.shape == (4, 4, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "1", "CMYK", "P", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    im = Image.fromarray(RGB).convert(mode) if mode != "I;16" else Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)
    p = tmp_path / ("m.jpg" if mode == "CMYK" else "m.tiff" if mode in ("I;16",) else "m.png")
    im.save(p)
    img = load_image(p)
    assert img.pixels.shape == (20, 30, 3) and img.pixels.dtype == np.float32
    assert 0 <= img.pixels.min() and img.pixels.max() <= 1


def _png_claiming(width, height):
    """A small valid PNG whose header claims a huge size (a decompression bomb's shape)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(100_000, 100_000))
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(p)
    p.write_bytes(_png_claiming(9000, 9000))  # 81 MP: over our 64 MP limit, under Pillow's
    with pytest.raises(ImageLoadError, match="megapixels"):
        load_image(p)


@pytest.mark.parametrize(
    "name,data,expect",
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"this is not an image", "not an image file"),
        ("cut.png", None, "truncated|decode"),
    ],
)
def test_bad_files(tmp_path, name, data, expect):
    p = tmp_path / name
    if data is None:
        Image.fromarray(RGB).save(tmp_path / "full.png")
        full = (tmp_path / "full.png").read_bytes()
        data = full[: len(full) // 2]
    p.write_bytes(data)
    with pytest.raises(ImageLoadError, match=expect) as err:
        load_image(p)
    assert "\n" not in str(err.value)


def test_missing_folder_and_unsupported(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)
    Image.fromarray(RGB).save(tmp_path / "x.ppm")
    with pytest.raises(ImageLoadError, match="not supported"):
        load_image(tmp_path / "x.ppm")


def test_bytes_resize_save_and_listing(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "b.png")
    img = load_image((tmp_path / "b.png").read_bytes(), size=60)
    assert (img.width, img.height) == (60, 40)
    assert resize_longer_side(img.pixels, 15).shape == (10, 15, 3)
    out = save_png(img.pixels, tmp_path / "o.png")
    assert np.asarray(Image.open(out)).shape == (40, 60, 3)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images([str(tmp_path)])] == ["b.png", "o.png"]
