"""Choosing the part of a clip the window reads (issue 19): the start and frames boxes of the clip view,
the CLI's --start and --frames. The real window offscreen, a real 20-frame H.264 clip written with PyAV, a
tiny real taew2_1 (a causal video VAE: 1 + 4k frames).

A clip opens whole ("all"); a start and a frame count read that part with the CLI's read_clip and
reconstruct it again (the label says what the VAE takes of it); the latest request wins; a part past the
end says so in one line and the clip on screen stays; a new file starts from 0 s, all frames.
"""

from __future__ import annotations

import numpy as np
from helpers.clips import complete, open_clip, write_clip
from helpers.gui import drop

from vaestudio.core.video import read_clip


def test_start_and_frames_choose_the_part_reconstructed(qtbot, win, tmp_path):
    from helpers.taehv import reference_state, write

    path = write_clip(tmp_path / "long.mp4", frames=20)  # 12 fps
    open_clip(qtbot, win, path, write(tmp_path, "taew2_1", reference_state("taew2_1")))
    s, view = win.session, win.inspector.clip
    bar = view.part
    qtbot.waitUntil(lambda: complete(win), timeout=30000)
    assert bar.isVisible() and bar.frames.text() == "all" and bar.start.value() == 0.0
    assert s.clip.count == 20 and s.clip_result.total == 17 and view.slider.maximum() == 16
    assert bar.read.text() == "read 20 frames (1.67 s) from 0 s; the VAE takes 17 (1 + 4k)"

    # from 0.5 s, 10 frames: the CLI's part, reconstructed again (trimmed to 9)
    bar.start.setValue(0.5)
    bar.frames.setValue(10)
    qtbot.waitUntil(lambda: s.clip_part == (0.5, 10) and complete(win), timeout=30000)
    want = read_clip(path, start=0.5, frames=10)
    np.testing.assert_array_equal(s.clip.frames, want.frames)
    assert s.clip.start == 0.5 and s.clip_result.total == 9 and view.slider.maximum() == 8
    assert bar.read.text() == "read 10 frames (0.83 s) from 0.5 s; the VAE takes 9 (1 + 4k)"
    enc = s.clip_encoded.encoding
    np.testing.assert_array_equal(enc.original, want.frames[:9])
    whole = s.vae.decode_clip(s.vae.encode_clip(want.frames).latent, enc.height, enc.width).frames
    np.testing.assert_allclose(np.stack(s.clip_result.frames), whole, atol=1e-5)
    assert view.frame_label.text().endswith("(0-8)")

    # two requests in a row: the latest wins (a count the VAE takes whole: no trim said)
    s.choose_clip_part(0.0, 5)
    s.choose_clip_part(0.25, 13)
    qtbot.waitUntil(lambda: s.clip_part == (0.25, 13) and complete(win), timeout=30000)
    qtbot.waitUntil(win.runner.idle, timeout=10000)
    assert s.clip.count == 13 and s.clip_result.total == 13 and s.clip_part == (0.25, 13)
    assert (bar.start.value(), bar.frames.value()) == (0.25, 13)
    assert bar.read.text() == "read 13 frames (1.08 s) from 0.25 s"

    # a part past the end: one line, the clip on screen stays
    bar.start.setValue(100.0)
    qtbot.waitUntil(lambda: "no frames at or after 100 s" in win.last_error, timeout=10000)
    assert "\n" not in win.last_error and s.clip_part == (0.25, 13) and s.clip.count == 13
    qtbot.waitUntil(win.runner.idle, timeout=10000)

    # another file: from its start, every frame
    drop(win, [write_clip(tmp_path / "short.mp4", frames=9)])
    qtbot.waitUntil(lambda: s.clip.name == "short" and complete(win), timeout=30000)
    assert s.clip_part == (0.0, None) and bar.frames.text() == "all" and bar.start.value() == 0.0
    assert s.clip.count == 9 and s.clip_result.total == 9


def test_a_streamed_clip_says_the_trimmed_count_before_its_encoding(qtbot, win, tmp_path):
    """Wan streams the round trip: while chunk 2 is still to be encoded, the slider, the frame label and
    the part's label already count the 9 frames Wan takes of 10 (1 + 4k), not the 10 read."""
    import threading

    from helpers.wan import write as write_wan

    s, view = win.session, win.inspector.clip
    s.load_vae(str(write_wan("wan2.1", "diffusers-folder", tmp_path)))
    qtbot.waitUntil(lambda: s.vae is not None, timeout=30000)
    gate, calls = threading.Event(), []

    def hold(_module, _inputs):  # the real encoder; its calls after the first wait for the test
        calls.append(1)
        while len(calls) > 1 and not gate.wait(0.005):
            pass

    handle = s.vae.model.encoder.register_forward_pre_hook(hold)
    try:
        drop(win, [write_clip(tmp_path / "walk.mp4", frames=10)])
        qtbot.waitUntil(lambda: s.clip_result is not None and s.clip_result.decoded == 1, timeout=60000)
        assert s.clip_encoded is None and s.clip.count == 10 and s.clip_result.total == 9
        assert view.slider.maximum() == 8 and view.frame_label.text() == "frame 0 (0-8)"
        assert not win.inspector.latents.ab_button.isEnabled()  # no latent to change yet
        assert view.part.read.text() == "read 10 frames (0.83 s) from 0 s; the VAE takes 9 (1 + 4k)"
        view.slider.setValue(8)
        assert view.frame_label.text() == "frame 8 (0-8)"
        np.testing.assert_array_equal(win.inspector.compare.original.data, s.clip.frames[8])
    finally:
        gate.set()
        handle.remove()
    qtbot.waitUntil(lambda: complete(win), timeout=60000)
    assert view.slider.maximum() == 8 and s.clip_encoded.encoding.frames == 9
