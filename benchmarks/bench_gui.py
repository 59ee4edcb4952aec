"""Responsiveness of the window, measured against baselines in the same run.

1. Launch: ``vaestudio`` from process start to the window shown, against a bare PySide6 window
   (the floor for any Qt app on this machine). Target: <= 1.2 s.
2. Heartbeat: a 10 ms QTimer in the UI thread while an SD-sized (84M-parameter) VAE decodes a
   512x512 image in a worker, against the same timer with nothing running. Reports the timer's
   lateness; target: max stall <= 50 ms.
3. Slider to preview: moving the noise slider until the instant (latent-to-RGB) preview is shown,
   on an SD-sized VAE. Target: <= 100 ms.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

BARE = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv)
w = QMainWindow(); w.setWindowTitle("bare"); w.show()
QTimer.singleShot(0, lambda: (print("window shown", flush=True), app.quit()))
app.exec()
"""


def time_launch(cmd: list[str], repeats: int) -> list[float]:
    out = []
    env = dict(os.environ, VAESTUDIO_EXIT_AFTER_SHOW="1")
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        line = p.stdout.readline()
        out.append(time.perf_counter() - t0)
        p.wait(30)
        assert "window shown" in line, line
    return out


def heartbeat(app, seconds: float, work=None) -> list[float]:
    """Lateness (ms) of a 10 ms timer over ``seconds`` while ``work`` (if any) runs in a worker."""
    from PySide6.QtCore import QElapsedTimer, QTimer

    late: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick():
        now = clock.nsecsElapsed()
        late.append(max(0.0, (now - last[0]) / 1e6 - 10.0))
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    done = [work is None]
    if work is not None:
        work(lambda *_: done.__setitem__(0, True))
    end = time.monotonic() + seconds
    while time.monotonic() < end or not done[0]:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    return late


def main() -> None:
    from bench_reconstruct import sd_vae

    repeats = 5
    vae_cmd = [sys.executable, "-m", "vaestudio"]
    bare = time_launch([sys.executable, "-c", BARE], repeats)
    ours = time_launch(vae_cmd, repeats)

    from PySide6.QtCore import QSettings

    from vaestudio.ui.app import make_app
    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import Store

    app = make_app()
    tmp = Path(tempfile.mkdtemp())
    sd_vae().save_pretrained(tmp / "vae")
    win = MainWindow(store=Store(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)))
    win.show()
    ins = win.inspector
    ins.load_vae(str(tmp / "vae"))
    while ins.vae is None:
        app.processEvents()
        time.sleep(0.01)
    import numpy as np
    from PIL import Image

    img = ROOT.parent / "shared" / "data" / "images" / "astronaut.png"
    if not img.exists():
        img = tmp / "photo.png"
        Image.fromarray((np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)).save(img)
    win.open_images([str(img)])
    while ins.result is None:
        app.processEvents()
        time.sleep(0.01)

    idle = heartbeat(app, 3.0)

    def decode(done):
        ins.result = None
        win.runner.start("decode", __import__("vaestudio.ui.jobs", fromlist=["decode_job"]).decode_job, ins.vae,
                         ins.enc, ins.original, {}, "off", on_result=done)

    busy = heartbeat(app, 1.0, decode)

    # slider to instant preview
    ins.noise.strength.setChecked(True)
    lat = []
    for v in (100, 300, 500, 700, 900, 200, 400, 600, 800, 1000):
        ins.runner.cancel("decode")
        ins.noise.snr.setText("SNR: -")
        t0 = time.perf_counter()
        ins.noise.slider.setValue(v)
        while ins.noise.snr.text() == "SNR: -":
            app.processEvents()
        lat.append((time.perf_counter() - t0) * 1000)
    win.close()

    def row(name, base, mine, unit, target):
        print(f"| {name} | {base} | {mine} | {target} |")

    print(f"torch threads: {__import__('torch').get_num_threads()}, cores: {os.cpu_count()}\n")
    print("| measure | baseline | vaestudio | target |")
    print("|---|---:|---:|---:|")
    row("launch to window shown (median of 5)", f"{statistics.median(bare):.2f} s (bare Qt window)",
        f"{statistics.median(ours):.2f} s", "s", "<= 1.2 s")
    row("UI timer lateness, max", f"{max(idle):.1f} ms (idle)", f"{max(busy):.1f} ms (84M VAE decoding)", "ms",
        "<= 50 ms")
    row("UI timer lateness, 99th percentile", f"{np.percentile(idle, 99):.1f} ms",
        f"{np.percentile(busy, 99):.1f} ms", "ms", "")
    row("slider to instant preview (median, max of 10)", "-",
        f"{statistics.median(lat):.1f} ms, {max(lat):.1f} ms", "ms", "<= 100 ms")
    print(f"\n(decode under the heartbeat took {len(busy) * 10 / 1000:.1f}+ s; {len(busy)} ticks)")


if __name__ == "__main__":
    main()
