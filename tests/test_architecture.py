"""The shape of the package: the layering contracts hold (import-linter, pyproject.toml), no import
circles, no module over 400 lines; importing vaestudio, the CLI parser and the window stays free of torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import vaestudio

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(vaestudio.__file__).parent
MAX_LINES = 400


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_contracts_hold():
    """The core never imports the window, the CLI or Qt; the window never imports the CLI; architecture
    modules never import each other: the contracts in pyproject.toml, checked by import-linter."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def test_no_import_circles():
    """No two modules import each other, even through others, counting imports inside functions and
    under TYPE_CHECKING (what import-linter's graph holds)."""
    import grimp

    graph = grimp.build_graph("vaestudio", cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(edges):
        if m not in index:
            visit(m)
    assert len(edges) > 50
    assert not circles, circles


def test_no_module_over_400_lines():
    sizes = {p.relative_to(PACKAGE.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}


def test_the_plain_records_import_no_torch():
    """What a VAE is (its interface, VaeInfo, Encoding, Decoding), the registry and the evaluation's
    records can be named by the CLI parser and the window without loading torch or numpy."""
    loaded = _modules_after("import vaestudio.core.vae, vaestudio.core.registry, vaestudio.core.evaluate.types, "
                            "vaestudio.core.families, vaestudio.core.errors")
    assert not {"torch", "numpy", "diffusers"} & loaded


def test_importing_vaestudio_and_cli_imports_no_torch():
    loaded = _modules_after("import vaestudio, vaestudio.cli; vaestudio.cli.build_parser()")
    assert "torch" not in loaded and "diffusers" not in loaded


def test_the_window_is_built_without_torch():
    """torch and diffusers load in the first worker, after the window is on screen."""
    loaded = _modules_after(
        "import os; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from vaestudio.ui.app import make_app\nfrom vaestudio.ui.main_window import MainWindow\n"
        "app = make_app(); w = MainWindow(); w.show(); app.processEvents()"
    )
    assert "PySide6.QtWidgets" in loaded
    assert "torch" not in loaded and "diffusers" not in loaded


def test_qt_signals_keep_reference_counts():
    """PySide6 6.12.0 decrements True's refcount on every emit(); a long session then aborts."""
    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        plain = Signal()
        flag = Signal(bool)

    e = Emitter()
    e.plain.connect(lambda: None)
    e.flag.connect(lambda v: None)
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(500):
        e.plain.emit()
        e.flag.emit(False)
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert after[0] - before[0] >= -5 and after[1] - before[1] >= -5, (before, after)
