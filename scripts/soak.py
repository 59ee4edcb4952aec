"""Long-session soak: load N images and swap VAEs M times in the running window; record memory.

Each round opens every image with the current VAE (encode, decode, metrics, heatmaps), then swaps
to the other VAE. Memory (RSS) is recorded after each round; it must stay flat: the encode cache
has a fixed limit and a swapped-out VAE is freed.

    QT_QPA_PLATFORM=offscreen python scripts/soak.py [--images 8] [--rounds 12] [--out docs/soak.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "docs" / "soak.md"))
    args = ap.parse_args()
    import numpy as np
    from conftest import ldm_state_dict, tiny_vae
    from PIL import Image
    from PySide6.QtCore import QSettings
    from safetensors.torch import save_file

    from vaestudio.ui.app import make_app
    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import Store

    tmp = Path(tempfile.mkdtemp())
    vaes = []
    for i in range(2):
        p = tmp / f"vae{i}.safetensors"
        save_file(ldm_state_dict(tiny_vae(seed=i)), str(p))
        vaes.append(str(p))
    rng = np.random.default_rng(0)
    images = []
    for i in range(args.images):
        p = tmp / f"img{i}.png"
        Image.fromarray((rng.random((256, 320, 3)) * 255).astype(np.uint8)).save(p)
        images.append(str(p))
    app = make_app()
    win = MainWindow(store=Store(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)))
    win.show()
    session = win.session
    if os.environ.get("SOAK_DEBUG"):
        session.message.connect(lambda m: print("  msg:", m, flush=True))

    def wait(cond, timeout=120):
        end = time.monotonic() + timeout
        while not cond():
            app.processEvents()
            time.sleep(0.002)
            if time.monotonic() > end:
                raise TimeoutError(f"no result; last error: {win.last_error!r}; running: {list(win.runner.running)}")

    rows = []
    t0 = time.monotonic()
    for r in range(args.rounds):
        old = session.vae
        session.load_vae(vaes[r % 2])
        wait(lambda old=old: session.vae is not None and session.vae is not old)
        win.open_images(images)
        for k in range(len(images)):
            if k:
                session.step(1)
            wait(lambda: session.result is not None and not win.runner.busy())
            session.set_result(None)
        gc.collect()
        app.processEvents()
        rows.append((r + 1, rss_mb(), session.cache_entries))
        print(f"round {r + 1}: RSS {rows[-1][1]:.0f} MB, encode cache {rows[-1][2]} entries", flush=True)
    win.close()
    first, last = rows[1][1], rows[-1][1]
    lines = [
        "# Soak: memory over a long session",
        "",
        f"`scripts/soak.py --images {args.images} --rounds {args.rounds}`: each round swaps the VAE (two tiny "
        f"AutoencoderKL files, alternating) and runs all {args.images} images (256x320) through it in the real "
        f"window (encode, decode, metrics, heatmaps). {len(rows) * args.images} reconstructions and "
        f"{len(rows)} VAE swaps in {time.monotonic() - t0:.0f} s.",
        "",
        "| round | RSS (MB) | encode cache entries |",
        "|---:|---:|---:|",
        *[f"| {r} | {m:.0f} | {c} |" for r, m, c in rows],
        "",
        f"From round 2 to round {rows[-1][0]}: {last - first:+.0f} MB "
        f"({(last - first) / max(1, len(rows) - 2):+.1f} MB per round). The encode cache is capped at 8 entries.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
