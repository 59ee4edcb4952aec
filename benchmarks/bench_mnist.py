"""MNIST VAE: the seed's plain training loop against vaestudio's trainer, headless and in the panel.

On the agreed split of ../shared/data/mnist (images 0-7999 train, 8000-9999 held out), 10 epochs,
default settings (784-400-20, BCE + KL, Adam 1e-3, batch 128, seed 1), all in one run:
  - plain:  the seed's loop (pytorch/examples vae/main.py: DataLoader, model(data), loss.backward())
  - core:   vaestudio's Trainer.run() generator, headless (what `vaestudio train-mnist` runs)
  - panel:  the MNIST studio tab with its live plots, offscreen
Reports held-out loss (nats per image, negative ELBO with one sample, as the seed's test loop) and
training throughput (images per second, the epoch's training time; the seed's loop has no
held-out pass inside its timing either).

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_mnist.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
EPOCHS = 10


def plain(train_x, held_x):
    """The seed's loop, as close to pytorch/examples vae/main.py as our data allows."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from vaestudio.core.mnist.model import VAE, loss_terms

    torch.manual_seed(1)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(torch.from_numpy(train_x)), batch_size=128, shuffle=True)
    test_loader = DataLoader(TensorDataset(torch.from_numpy(held_x)), batch_size=128)
    speeds, held = [], []
    for _ in range(EPOCHS):
        model.train()
        t0 = time.perf_counter()
        train_loss = 0.0
        for (data,) in loader:
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = loss_terms(recon, data, mu, logvar)[0]
            loss.backward()
            train_loss += loss.item()
            opt.step()
        speeds.append(len(train_x) / (time.perf_counter() - t0))
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for (data,) in test_loader:
                recon, mu, logvar = model(data)
                test_loss += loss_terms(recon, data, mu, logvar)[0].item()
        held.append(test_loss / len(held_x))
    return held, speeds


def core(train_x, held_x):
    from vaestudio.core.mnist.train import EpochRecord, TrainConfig, Trainer

    recs = [r for r in Trainer(TrainConfig(epochs=EPOCHS), train_x, held_x).run() if isinstance(r, EpochRecord)]
    return [r.heldout_loss for r in recs], [r.samples_per_s for r in recs]


def panel():
    from PySide6.QtCore import QSettings

    from vaestudio.ui.app import make_app
    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import Store

    make_app()
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    win = MainWindow(store=Store(QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat)))
    win.show()
    tab = win.training
    win.tabs.setCurrentWidget(tab)
    tab.data_dir.setText(str(MNIST))
    tab.epochs.setValue(EPOCHS)
    tab.start_btn.click()
    updates = [0]
    tab.step_curve.sigPlotChanged.connect(lambda *_: updates.__setitem__(0, updates[0] + 1))
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()  # a real event loop, idle between events, as in the app
    check = QTimer()
    check.timeout.connect(lambda: (not tab.is_running() and len(tab.history) >= EPOCHS) and loop.quit())
    check.start(50)
    loop.exec()
    win.close()
    return [r.heldout_loss for r in tab.history], [r.samples_per_s for r in tab.history], updates[0]


def run_variant(name: str) -> None:
    from vaestudio.core.mnist.data import load_dataset

    data = load_dataset("mnist", MNIST)
    assert (len(data.train_x), len(data.heldout_x)) == (8000, 2000)
    if name == "plain":
        held, speed = plain(data.train_x, data.heldout_x)
        extra = 0
    elif name == "core":
        held, speed = core(data.train_x, data.heldout_x)
        extra = 0
    else:
        held, speed, extra = panel()
    print(json.dumps({"held": held, "speed": speed, "updates": extra}))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--variant":
        run_variant(sys.argv[2])
        return
    if not MNIST.exists():
        sys.exit(f"needs the shared MNIST data at {MNIST}")
    # each variant in a fresh process: torch's OpenMP thread team belongs to the thread that first
    # ran an op, so running one variant on the main thread would slow a later one in a worker thread
    repeats = int(os.environ.get("BENCH_REPEATS", "5"))
    order = [v for _ in range(repeats) for v in ("plain", "core", "panel")]  # interleaved
    results: dict[str, list[dict]] = {"plain": [], "core": [], "panel": []}
    for key in order:
        out = subprocess.run([sys.executable, __file__, "--variant", key], capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        results[key].append(json.loads(out))

    def speed(key):  # median over runs of each run's median epoch
        return statistics.median(statistics.median(r["speed"]) for r in results[key])

    def best(key):  # best run: this 2-core VM's neighbours make single runs vary by +-25%
        return max(statistics.median(r["speed"]) for r in results[key])

    base = speed("plain")
    print(f"MNIST agreed split (8000 train / 2000 held out), {EPOCHS} epochs, 784-400-20, batch 128, Adam 1e-3, "
          f"seed 1; {os.cpu_count()} cores; {repeats} runs of each variant, interleaved, each in a fresh process\n")
    print("| variant | held-out loss after 10 epochs (nats/image) | throughput, median run (img/s) | "
          "median / plain | best run (img/s) | best / plain | per-run throughput (img/s) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    names = {"plain": "seed's plain loop", "core": "vaestudio trainer, headless (train-mnist)",
             "panel": "vaestudio MNIST studio panel, live plots on"}
    for key in ("plain", "core", "panel"):
        runs = ", ".join(f"{statistics.median(r['speed']):,.0f}" for r in results[key])
        print(f"| {names[key]} | {results[key][0]['held'][-1]:.2f} | {speed(key):,.0f} | {speed(key) / base:.2f} "
              f"| {best(key):,.0f} | {best(key) / best('plain'):.2f} | {runs} |")
    ups = [r["updates"] for r in results["panel"]]
    print(f"\n(throughput: median over runs of each run's median epoch; the panel redrew its loss-per-step curve "
          f"{', '.join(map(str, ups))} times in its runs)")


if __name__ == "__main__":
    main()
