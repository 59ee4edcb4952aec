"""The desktop bundle against the development install: size, and launch to window shown.

Run after packaging/build.sh:
    QT_QPA_PLATFORM=offscreen python benchmarks/bench_bundle.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "dist" / "vaestudio" / "vaestudio"
sys.path.insert(0, str(ROOT / "benchmarks"))


def du_mb(path: Path) -> float:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0]) / 1024


def main() -> None:
    from bench_gui import time_launch

    if not BUNDLE.exists():
        sys.exit("build the bundle first: packaging/build.sh")
    repeats = 5
    dev = time_launch([sys.executable, "-m", "vaestudio"], repeats)
    bundle = time_launch([str(BUNDLE)], repeats)
    internal = BUNDLE.parent / "_internal"
    parts = sorted(((du_mb(p), p.name) for p in internal.iterdir()), reverse=True)[:4]
    print("| measure | development install | bundle | target |")
    print("|---|---:|---:|---:|")
    print(f"| size on disk | - | {du_mb(BUNDLE.parent):.0f} MB | < 900 MB |")
    print(f"| launch to window shown (median of {repeats}) | {statistics.median(dev):.2f} s | "
          f"{statistics.median(bundle):.2f} s | <= 1.2 s |")
    print("\nlargest parts of the bundle: " + ", ".join(f"{n} {s:.0f} MB" for s, n in parts))


if __name__ == "__main__":
    main()
