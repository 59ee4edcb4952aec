"""Clips for the window's tests: a real H.264 clip written with PyAV, and opening it in the real window."""

from __future__ import annotations

import av
import numpy as np

from helpers.gui import drop


def write_clip(path, frames: int = 9, size: int = 32, fps: int = 12):
    """A square moving over a gradient, H.264 at high quality."""
    yy, xx = np.mgrid[0:size, 0:size]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps, options={"crf": "12"})
        s.height, s.width, s.pix_fmt = size, size, "yuv420p"
        for i in range(frames):
            f = np.zeros((size, size, 3), np.uint8)
            f[..., 0], f[..., 1], f[..., 2] = 60 + 3 * xx * 32 // size, 80 + 2 * yy * 32 // size, 120
            f[size // 3:size // 3 + 8, 2 + 2 * i:10 + 2 * i, 2] = 240
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def open_clip(qtbot, win, clip, vae_source):
    """Load ``vae_source`` as VAE A, then drop ``clip`` on the window."""
    win.session.load_vae(str(vae_source))
    qtbot.waitUntil(lambda: win.session.vae is not None, timeout=30000)
    drop(win, [clip])
    qtbot.waitUntil(lambda: win.session.clip is not None, timeout=10000)


def complete(win) -> bool:
    """The clip's reconstruction has every frame."""
    r = win.session.clip_result
    return r is not None and r.complete
