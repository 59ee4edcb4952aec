"""Video IO: clips written here with PyAV (and Pillow for animated images), read back by core/video."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaestudio.core.filetypes import is_clip
from vaestudio.core.video import VideoError, iter_frames, read_clip, write_video
from vaestudio.core.video.write import CONTAINERS

av = pytest.importorskip("av")


def frames_u8(n: int = 9, h: int = 32, w: int = 48) -> np.ndarray:
    """Frame i is a flat grey of level 20 i with a white 8x8 square at the top left corner."""
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i] = 20 * i + 10
        out[i, :8, :8] = 255
    return out


def write_av(path: Path, frames: np.ndarray, fps: int = 12, codec: str = "libx264", rotation: int | None = None,
             hflip: bool = False, vflip: bool = False, **opts) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps, options={"crf": "10"} if codec == "libx264" else {})
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        if rotation is not None:
            s.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def levels(clip_frames: np.ndarray) -> list[int]:
    """The grey level of each frame (away from the square), rounded to the 20-step code."""
    return [round((float(f[-4:, -4:].mean()) * 255 - 10) / 20) for f in clip_frames]


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".mov", "libx264"),
                                          (".mkv", "libx264"), (".avi", "mpeg4")])
def test_containers_frame_count_fps_and_pixels(tmp_path, suffix, codec):
    src = frames_u8()
    clip = read_clip(write_av(tmp_path / f"c{suffix}", src, fps=12, codec=codec))
    assert clip.frames.shape == (9, 32, 48, 3) and clip.frames.dtype == np.float32
    assert clip.fps == pytest.approx(12.0) and clip.name == "c"
    assert levels(clip.frames) == list(range(9))
    assert np.abs(clip.frames - src / 255.0).mean() < 0.03
    assert is_clip(tmp_path / f"c{suffix}")


@pytest.mark.parametrize("rotation,corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right"),
                                             (0, "top-left")])
def test_orientation_from_rotation_metadata(tmp_path, rotation, corner):
    clip = read_clip(write_av(tmp_path / "r.mp4", frames_u8(3, 32, 48), rotation=rotation))
    h, w = (48, 32) if rotation in (90, -90) else (32, 48)
    assert clip.frames.shape[1:3] == (h, w)
    square = clip.frames[0, :, :, 0] > 0.9
    ys, xs = np.nonzero(square)
    where = ("top" if ys.mean() < h / 2 else "bottom") + "-" + ("left" if xs.mean() < w / 2 else "right")
    assert where == corner
    assert bool(clip.notes) == (rotation != 0)


@pytest.mark.parametrize("rotation,hflip,vflip", [(0, True, False), (0, False, True), (90, True, False),
                                                   (-90, True, False), (90, False, False), (180, False, False)])
def test_all_eight_orientations_as_ffmpeg_shows_them(tmp_path, rotation, hflip, vflip):
    """PyAV writes the display matrix of "turn ``rotation`` degrees counter-clockwise, then mirror"; the
    frames read are the stored ones turned and mirrored so (a mirror is not read as a half turn)."""
    src = frames_u8(2, 32, 48)
    clip = read_clip(write_av(tmp_path / "o.mp4", src, rotation=rotation, hflip=hflip, vflip=vflip))
    want = np.rot90(src[0], k=rotation // 90)
    want = want[:, ::-1] if hflip else want
    want = want[::-1] if vflip else want
    assert clip.frames.shape[1:3] == want.shape[:2]
    assert np.abs(clip.frames[0] - want / 255.0).mean() < 0.03
    assert (("mirrored" in clip.notes[0]) if hflip or vflip else ("turned" in clip.notes[0])), clip.notes


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts", ".avi"])  # TS starts at 1.4 s; AVI's H.264 a frame late
def test_start_frames_and_size(tmp_path, suffix):
    path = write_av(tmp_path / f"s{suffix}", frames_u8(12), fps=12)
    part = read_clip(path, start=0.25, frames=3)
    assert levels(part.frames) == [3, 4, 5]
    assert levels(read_clip(path, start=0.5).frames) == list(range(6, 12))
    small = read_clip(path, frames=2, size=24)
    assert small.frames.shape == (2, 16, 24, 3)
    with pytest.raises(VideoError, match="no frames at or after"):
        read_clip(path, start=5.0)


def test_iter_frames_streams_and_stops_early(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)  # every frame large
    path = write_av(tmp_path / "long.mkv", noisy)
    data = path.read_bytes()
    truncated = tmp_path / "cut.mkv"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with iter_frames(truncated) as stream:  # frames come one by one, before the reader reaches the cut
        assert stream.fps == pytest.approx(12.0) and stream.codec == "h264"
        got = []
        with pytest.raises(VideoError, match="truncated"):
            for f in stream:
                got.append(f)
        assert 1 <= len(got) < 9
    with iter_frames(path) as stream:  # closing early is fine
        first = next(iter(stream))
        assert first.shape == (32, 48, 3)


@pytest.mark.parametrize("fmt", ["gif", "webp", "png"])
def test_animated_images(tmp_path, fmt):
    src = frames_u8(6, 20, 30)
    ims = [Image.fromarray(f) for f in src]
    path = tmp_path / f"anim.{fmt}"
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=50, loop=0,
                **({"lossless": True} if fmt == "webp" else {}))
    assert is_clip(path)
    clip = read_clip(path)
    assert clip.frames.shape == (6, 20, 30, 3) and clip.fps == pytest.approx(20.0)
    assert levels(clip.frames) == list(range(6))
    assert levels(read_clip(path, start=0.1, frames=2).frames) == [2, 3]
    still = tmp_path / f"still.{fmt}"
    ims[0].save(still)
    assert not is_clip(still)
    with pytest.raises(VideoError, match="still"):
        read_clip(still)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv"])
def test_write_read_round_trip(tmp_path, suffix):
    src = frames_u8(7, 30, 46).astype(np.float32) / 255.0
    path = tmp_path / f"out{suffix}"
    codec = write_video(path, iter(src), 15)
    assert codec in CONTAINERS[suffix][1]
    if suffix == ".mp4":
        assert codec == "libx264"  # this PyAV has it; the fallbacks are for builds without
    clip = read_clip(path)
    assert clip.frames.shape == (7, 30, 46, 3) and clip.fps == pytest.approx(15.0)
    assert levels(clip.frames) == list(range(7))
    assert np.abs(clip.frames - src).mean() < 0.03
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind


def test_write_odd_size_and_refusals(tmp_path):
    src = frames_u8(3, 31, 45)
    write_video(tmp_path / "odd.mp4", src, 10)
    clip = read_clip(tmp_path / "odd.mp4")
    assert clip.frames.shape == (3, 32, 46, 3)  # yuv420p: the last row and column repeated
    assert np.abs(clip.frames[:, :31, :45] - src / 255.0).mean() < 0.03
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "none.mp4", [], 10)
    with pytest.raises(VideoError, match="cannot write"):
        write_video(tmp_path / "x.flv", src, 10)
    assert not (tmp_path / "none.mp4").exists()


def _bad_files(tmp: Path) -> dict[str, Path]:
    noisy = np.random.default_rng(0).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)  # a cut lands mid-clip
    good_mp4 = write_av(tmp / "good.mp4", noisy)
    good_mkv = write_av(tmp / "good.mkv", noisy)
    fast = tmp / "fast.mp4"
    with av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=12)
        s.height, s.width, s.pix_fmt = 32, 48, "yuv420p"
        for f in noisy:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    mp4, mkv, fst = good_mp4.read_bytes(), good_mkv.read_bytes(), fast.read_bytes()
    files = {
        "truncated mp4": mp4[: len(mp4) // 2],
        "truncated faststart mp4": fst[: len(fst) // 2],
        "truncated mkv": mkv[: len(mkv) // 2],
        "cut before the first frame": mkv[: mkv.find(b"\x1f\x43\xb6\x75")],  # the header, up to the first Cluster
        "unknown codec": mkv.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/ISO/AVC"),
        "text named mp4": b"this is not a video\n" * 20,
        "empty": b"",
    }
    out = {}
    for i, (what, data) in enumerate(files.items()):
        p = tmp / f"bad{i}{'.mkv' if 'mkv' in what or 'codec' in what else '.mp4'}"
        p.write_bytes(data)
        out[what] = p
    for suffix in (".mp4", ".mkv"):  # a header and a video stream, no frame
        with av.open(str(tmp / f"zero{suffix}"), "w") as o:
            s = o.add_stream("libx264", rate=12)
            s.height, s.width, s.pix_fmt = 32, 32, "yuv420p"
            o.start_encoding()
        out[f"0-frame {suffix[1:]}"] = tmp / f"zero{suffix}"
    png, jpg = tmp / "still_png.mp4", tmp / "still_jpg.mp4"
    Image.fromarray(frames_u8(1)[0]).save(png, format="PNG")
    Image.fromarray(frames_u8(1)[0]).save(jpg, format="JPEG")
    out["still PNG named mp4"], out["still JPEG named mp4"] = png, jpg
    wav = tmp / "audio_only.mkv"
    with av.open(str(wav), "w") as o:
        a = o.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in a.encode(frame):
            o.mux(p)
        for p in a.encode():
            o.mux(p)
    out["audio only"] = wav
    out["missing"] = tmp / "missing.mp4"
    (tmp / "folder.mp4").mkdir()
    out["folder"] = tmp / "folder.mp4"
    gif = tmp / "cut.gif"
    ims = [Image.fromarray(f) for f in frames_u8(6, 20, 30)]
    ims[0].save(gif, save_all=True, append_images=ims[1:], duration=50)
    gif.write_bytes(gif.read_bytes()[: gif.stat().st_size // 2])
    out["truncated gif"] = gif
    return out


def test_bad_videos_are_one_line_video_errors_and_fast(tmp_path):
    for what, path in _bad_files(tmp_path).items():
        t = time.monotonic()
        with pytest.raises(VideoError) as info:
            read_clip(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(path)), (what, message)
        assert "Traceback" not in message and "Errno" not in message, (what, message)
        assert time.monotonic() - t < 5, what
        assert info.value.exit_code == 3


def test_specific_reasons(tmp_path):
    bad = _bad_files(tmp_path)
    expect = {"still PNG named mp4": "still PNG image", "still JPEG named mp4": "still", "0-frame mkv": "no frames", "0-frame mp4": "no frames",
              "cut before the first frame": "no frames",
              "unknown codec": "codec", "audio only": "no video stream", "truncated mkv": "truncated",
              "truncated faststart mp4": "truncated", "missing": "no such file", "empty": "empty"}
    for what, words in expect.items():
        with pytest.raises(VideoError, match=words):
            read_clip(bad[what])


def test_read_time_and_memory_are_bounded(tmp_path):
    path = write_av(tmp_path / "c.mp4", frames_u8(9))
    with pytest.raises(VideoError, match="longer than"):
        read_clip(path, timeout=0.0)
    with pytest.raises(VideoError, match="choose fewer frames"):
        read_clip(path, max_bytes=3 * 32 * 48 * 3 * 4)
    assert read_clip(path, frames=3, max_bytes=3 * 32 * 48 * 3 * 4).count == 3
    fits = read_clip(path, max_bytes=3 * 32 * 48 * 3 * 4, keep_what_fits=True)  # the window's read
    assert fits.count == 3 and "only 3 frames of 48x32 fit" in fits.notes[-1]
    assert np.array_equal(fits.frames, read_clip(path).frames[:3])


def test_streaming_memory_does_not_grow_with_the_clip(tmp_path):
    """iter_frames holds about one frame at a time: the peak of Python/numpy allocations while streaming
    a 240-frame clip is a few frames, not the clip (tracemalloc sees numpy's buffers)."""
    import tracemalloc

    n, h, w = 240, 64, 96
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = write_av(tmp_path / "long.mp4", np.stack([np.roll(base, i, axis=1) for i in range(n)]), fps=24)
    del base
    frame_bytes = h * w * 3 * 4
    tracemalloc.start()
    try:
        count = 0
        with iter_frames(path) as stream:
            for f in stream:
                count += 1
                assert f.shape == (h, w, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak < 8 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames while streaming {n}"
