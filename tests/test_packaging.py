"""The desktop bundle's build on Linux, Windows and macOS (issue 22), tested here: the PyInstaller spec run as
PyInstaller runs it with the platform set to each of the three (what it builds: executables, console,
icons, the .app, what it leaves out), the build script's names, signing, CUDA check and zip, the platform
icons, and the CI workflow (the README's commands on each runner, its lint). The bundle itself is built and
self-tested by .ci/run here and by .github/workflows/build.yml on each platform's runner.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT
from helpers.packaging import packaging_module
from PIL import Image

from vaestudio import __version__

SPEC = ROOT / "packaging" / "vaestudio.spec"


class Step:
    """One of PyInstaller's build steps as the spec called it (Analysis, PYZ, EXE, COLLECT, BUNDLE)."""

    def __init__(self, kind: str, args: tuple, kw: dict):
        self.kind, self.args, self.kw = kind, args, kw


#: files PyInstaller's analysis collects (destination in the bundle), some the spec must leave out:
#: Linux/macOS separators and Windows' (backslashes; Windows' PySide6 has no Qt/ folder)
COLLECTED = {
    "torch/lib/libtorch_cpu.so": True, "torch/lib/libtorchbind_test.so": False,
    "torch\\lib\\torchbind_test.dll": False, "torch/lib/libjitbackend_test.dylib": False,
    "torch/lib/libbackend_with_compiler.so": False, "torch/lib/libaoti_custom_ops.so": False,
    "torch/bin/torch_shm_manager": True, "torch/bin/protoc": False, "torch/test/test_x.py": False,
    "torch/include/ATen/ATen.h": False, "torch/testing/_internal/data/x.pt": False, "torch/testing/__init__.py": True,
    "PySide6/Qt/translations/qt_de.qm": False, "PySide6\\translations\\qt_de.qm": False,
    "PySide6/Qt/lib/libQt6Core.so.6": True, "PySide6/Qt/plugins/platforms/libqxcb.so": True,
}


@pytest.fixture(scope="module")
def spec_root(tmp_path_factory) -> Path:
    """A checkout as the spec sees it (SPECPATH's parent): the version file, and build/icons/ written by
    make_icons.py, as build.py makes them before it runs PyInstaller."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "vaestudio").mkdir()
    shutil.copy(ROOT / "vaestudio" / "__init__.py", root / "vaestudio" / "__init__.py")
    packaging_module("make_icons").platform_icons(root / "build" / "icons")
    return root


def run_spec(plat: str, root: Path, monkeypatch) -> tuple[list[Step], dict]:
    """Execute packaging/vaestudio.spec as PyInstaller does (its globals: SPECPATH and the build steps) with
    ``sys.platform`` set to ``plat``. PyInstaller cannot build for another platform, so its build steps
    and the three hooks the spec calls are stand-ins that record what they are given (the hooks return
    names, not a scan of the environment); the spec's own logic runs as it is."""
    steps: list[Step] = []

    def step(kind):
        def make(*args, **kw):
            steps.append(Step(kind, args, kw))
            return steps[-1]
        return make

    def analysis(*args, **kw):
        a = step("Analysis")(*args, **kw)
        a.datas = [(dest, "src", "DATA") for dest in COLLECTED]
        a.binaries = [(dest, "src", "BINARY") for dest in COLLECTED]
        a.pure, a.scripts = [], []
        return a

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda name, filter=None: [name]
    hooks.collect_data_files = lambda name, includes=None: []
    hooks.copy_metadata = lambda dist: [(f"{dist}.dist-info", dist)]
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    spec_globals = {"__name__": "__main__", "SPECPATH": str(root / "packaging"), "Analysis": analysis,
                    **{k: step(k) for k in ("PYZ", "EXE", "COLLECT", "BUNDLE")}}
    code = compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec")
    real = sys.platform
    sys.platform = plat
    try:
        exec(code, spec_globals)
    finally:
        sys.platform = real
    return steps, spec_globals


def _of(steps, kind):
    return [s for s in steps if s.kind == kind]


def test_the_spec_on_linux_makes_one_console_executable_in_one_folder(spec_root, monkeypatch):
    steps, _ = run_spec("linux", spec_root, monkeypatch)
    (exe,) = _of(steps, "EXE")
    assert exe.kw["name"] == "vaestudio" and exe.kw["console"] is True and exe.kw["icon"] is None
    (coll,) = _of(steps, "COLLECT")
    assert coll.kw["name"] == "vaestudio" and exe in coll.args
    assert not _of(steps, "BUNDLE")
    (analysis,) = _of(steps, "Analysis")
    assert analysis.args[0] == [str(spec_root / "packaging" / "entry.py")]
    assert {"pytest", "hypothesis", "skimage", "scipy"} <= set(analysis.kw["excludes"])


def test_the_spec_on_windows_makes_a_window_without_console_and_a_cli_with_one(spec_root, monkeypatch):
    steps, _ = run_spec("win32", spec_root, monkeypatch)
    exes = _of(steps, "EXE")
    assert [(e.kw["name"], e.kw["console"]) for e in exes] == [("vaestudio", False), ("vaestudio-cli", True)]
    assert {e.kw["icon"] for e in exes} == {str(spec_root / "build" / "icons" / "vaestudio.ico")}
    (coll,) = _of(steps, "COLLECT")
    assert all(e in coll.args for e in exes)  # one folder, the libraries once
    assert not _of(steps, "BUNDLE")
    build = packaging_module("build")  # what build.py runs the self-test with is what the spec makes
    assert build.cli_path("win32").name == exes[1].kw["name"] + ".exe"


def test_the_spec_on_macos_makes_a_windowed_app_with_the_icns(spec_root, monkeypatch):
    steps, _ = run_spec("darwin", spec_root, monkeypatch)
    (exe,) = _of(steps, "EXE")
    icns = str(spec_root / "build" / "icons" / "vaestudio.icns")
    assert exe.kw["console"] is False and exe.kw["icon"] == icns
    (coll,) = _of(steps, "COLLECT")
    (app,) = _of(steps, "BUNDLE")
    assert app.args == (coll,) and app.kw["icon"] == icns
    assert app.kw["info_plist"]["CFBundleShortVersionString"] == __version__
    build = packaging_module("build")
    assert build.bundle_path("darwin").name == app.kw["name"] == "vaestudio.app"
    assert build.cli_path("darwin").name == exe.kw["name"]


@pytest.mark.parametrize("plat", ["linux", "win32", "darwin"])
def test_the_spec_leaves_out_test_libraries_build_tools_and_translations(plat, spec_root, monkeypatch):
    _, spec_globals = run_spec(plat, spec_root, monkeypatch)
    a = spec_globals["a"]
    for entries in (a.datas, a.binaries):
        assert {dest for dest, *_ in entries} == {dest for dest, kept in COLLECTED.items() if kept}


@pytest.mark.parametrize("plat, icon", [("win32", "vaestudio.ico"), ("darwin", "vaestudio.icns")])
def test_the_spec_refuses_to_build_without_the_platform_icon(plat, icon, spec_root, tmp_path, monkeypatch):
    bare = tmp_path / "checkout"
    shutil.copytree(spec_root / "vaestudio", bare / "vaestudio")
    with pytest.raises(SystemExit, match=f"{icon} is missing: build with packaging/build.py"):
        run_spec(plat, bare, monkeypatch)
    run_spec("linux", bare, monkeypatch)  # Linux takes no icon file


def test_only_the_macos_app_is_signed_ad_hoc(tmp_path):
    build = packaging_module("build")
    app = tmp_path / "vaestudio.app"
    assert build.sign_commands("darwin", app) == [["codesign", "--force", "--deep", "-s", "-", app],
                                                   ["codesign", "--verify", "--deep", "--strict", app]]
    assert build.sign_commands("win32", app) == build.sign_commands("linux", app) == []


@pytest.mark.skipif(sys.platform != "darwin", reason="codesign is macOS's")
def test_the_signing_commands_sign_an_app_ad_hoc_on_macos(tmp_path):
    """On the macOS runner: a minimal .app (a copy of /usr/bin/true as its executable) signed by the very
    commands build.py runs, then `codesign -dv` says the signature is ad hoc."""
    app = tmp_path / "t.app"
    (app / "Contents" / "MacOS").mkdir(parents=True)
    (app / "Contents" / "Info.plist").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>CFBundleExecutable</key>'
        "<string>t</string><key>CFBundleIdentifier</key><string>org.vaestudio.t</string></dict></plist>")
    shutil.copy("/usr/bin/true", app / "Contents" / "MacOS" / "t")
    for cmd in packaging_module("build").sign_commands("darwin", app):
        subprocess.run([str(c) for c in cmd], check=True)
    shown = subprocess.run(["codesign", "-dv", str(app)], capture_output=True, text=True)
    assert "Signature=adhoc" in shown.stderr, shown.stderr


@pytest.mark.skipif(not (sys.platform.startswith("linux") and shutil.which("gcc") and shutil.which("strip")),
                    reason="Linux with gcc and binutils")
def test_strip_debug_info_takes_the_debug_sections_of_libpython_alone(tmp_path):
    """A real shared library with debug information (gcc -g) named as the bundle's libpython: stripped, it
    loses its .debug_* sections and still loads and runs; other libraries and other platforms are left."""
    import ctypes

    build = packaging_module("build")
    internal = tmp_path / "vaestudio" / "_internal"
    internal.mkdir(parents=True)
    (tmp_path / "f.c").write_text("int answer(int x) { int y = x * 2; return y + 1; }\n")
    for name in ("libpython3.11.so.1.0", "libother.so"):
        subprocess.run(["gcc", "-g", "-O0", "-shared", "-fPIC", "-o", str(internal / name), str(tmp_path / "f.c")],
                       check=True)
    before = {p.name: p.read_bytes() for p in internal.iterdir()}
    assert build.strip_debug_info(tmp_path / "vaestudio", "darwin") == []
    assert build.strip_debug_info(tmp_path / "vaestudio", "win32") == []
    assert {p.name: p.read_bytes() for p in internal.iterdir()} == before
    assert build.strip_debug_info(tmp_path / "vaestudio", "linux") == [internal / "libpython3.11.so.1.0"]

    def sections(p):
        return subprocess.run(["readelf", "-S", "-W", str(p)], capture_output=True, text=True, check=True).stdout

    assert ".debug_info" in sections(internal / "libother.so")
    assert (internal / "libother.so").read_bytes() == before["libother.so"]
    assert ".debug_info" not in sections(internal / "libpython3.11.so.1.0")
    assert ".dynsym" in sections(internal / "libpython3.11.so.1.0")
    assert ctypes.CDLL(str(internal / "libpython3.11.so.1.0")).answer(20) == 41


#: entry.py as Windows' windowed vaestudio.exe starts it: no console, so no stdout and no stderr at all
NO_STREAMS = ("import runpy, sys; sys.stdout = sys.stderr = None; sys.argv[0] = 'vaestudio'; "
              "runpy.run_path(sys.argv.pop(1), run_name='__main__')")


def test_the_entry_point_without_stdout_evaluates_with_spawned_workers(tmp_path, vae_dir):
    """The bundle's entry point (unfrozen here) with sys.stdout and sys.stderr None, as in the windowed
    Windows executable: `evaluate` with a DataLoader worker started by spawn writes its rows and exits 0,
    and a bad request is still exit code 2 (its one-line error has nowhere to go, and must not crash)."""
    from helpers.data import photo

    data = tmp_path / "données"
    data.mkdir()
    photo(data, "a é.png", seed=1)
    photo(data, "b.png", seed=2)
    env = dict(os.environ, VAESTUDIO_MP_START="spawn", QT_QPA_PLATFORM="offscreen")
    cmd = [sys.executable, "-c", NO_STREAMS, str(ROOT / "packaging" / "entry.py"), "evaluate", str(data), "--vae",
           str(vae_dir), "--out", str(tmp_path / "out"), "--size", "32", "--workers", "1", "--metrics", "psnr"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout == "", r.stderr[-2000:]
    with open(tmp_path / "out" / "rows.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(row["image"]).name for row in rows) == ["a é.png", "b.png"]
    assert not any(row["error"] for row in rows)
    bad = subprocess.run([*cmd[:4], "evaluate", str(data), "--vae", str(vae_dir), "--out", str(tmp_path / "o2"),
                          "--metrics", "nonsense"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]


def test_archive_names_say_platform_and_architecture():
    build = packaging_module("build")
    from vaestudio import __version__

    assert build.archive_name("linux", "x86_64") == f"vaestudio-{__version__}-linux-x86_64.zip"
    assert build.archive_name("win32", "AMD64") == f"vaestudio-{__version__}-windows-x86_64.zip"
    assert build.archive_name("darwin", "arm64") == f"vaestudio-{__version__}-macos-arm64.zip"
    assert build.archive_name("linux", "aarch64").endswith("-linux-arm64.zip")
    assert build.cli_path("win32").name == "vaestudio-cli.exe"
    assert build.cli_path("darwin").parts[-4:] == ("vaestudio.app", "Contents", "MacOS", "vaestudio")
    assert build.bundle_path("darwin").name == "vaestudio.app"


def test_the_cuda_check_finds_libraries_not_torch_modules():
    build = packaging_module("build")
    for lib in ("libcudart.so.12", "cudart64_12.dll", "libcudnn.so.9", "cudnn64_9.dll", "libnccl.so.2",
                "cublas64_12.dll", "libcublasLt.dylib"):
        assert build.is_cuda_library(lib), lib
    for other in ("nccl.py", "cudnn_frontend", "cudart.py", "libtorch_cpu.so", "_C.cpython-311-x86_64-linux-gnu.so"):
        assert not build.is_cuda_library(other), other


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_the_release_zip_keeps_links_and_executable_bits(tmp_path):
    build = packaging_module("build")
    bundle = tmp_path / "vaestudio"
    (bundle / "_internal").mkdir(parents=True)
    (bundle / "vaestudio").write_bytes(b"#!/bin/sh\n")
    (bundle / "vaestudio").chmod(0o755)
    (bundle / "_internal" / "libx.so.1").write_bytes(b"lib")
    (bundle / "_internal" / "libx.so").symlink_to("libx.so.1")
    out = build.zip_folder(bundle, tmp_path / "a.zip")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    if shutil.which("unzip"):  # the tool users have, when it is there
        subprocess.run(["unzip", "-q", str(out), "-d", str(unpacked)], check=True)
        assert os.readlink(unpacked / "vaestudio" / "_internal" / "libx.so") == "libx.so.1"
        assert os.access(unpacked / "vaestudio" / "vaestudio", os.X_OK)
    modes = {i.filename: i.external_attr >> 16 for i in zipfile.ZipFile(out).infolist()}
    assert modes["vaestudio/_internal/libx.so"] & 0o170000 == 0o120000
    assert modes["vaestudio/vaestudio"] & 0o111


def test_platform_icons_hold_each_size(tmp_path):
    icons = packaging_module("make_icons")
    ico, icns = icons.platform_icons(tmp_path)
    with Image.open(ico) as im:
        assert im.format == "ICO" and sorted(im.ico.sizes()) == [(s, s) for s in icons.ICO_SIZES]
    with Image.open(icns) as im:
        assert im.format == "ICNS" and {s[0] for s in im.info["sizes"]} >= {16, 32, 128, 256, 512}


WORKFLOW = ROOT / ".github" / "workflows" / "build.yml"


def test_the_workflow_runs_the_readme_commands_on_each_platform():
    import yaml

    text = WORKFLOW.read_text(encoding="utf-8")
    flow = yaml.safe_load(text)
    job = flow["jobs"]["bundle"]
    assert job["strategy"]["matrix"]["os"] == ["ubuntu-latest", "windows-latest", "macos-14"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines() if line.startswith("python3 -m venv .venv && ")]
    assert len(commands) == 2
    runs = [s.get("run", "") for s in job["steps"]]
    for cmd in commands:
        assert cmd in runs
        windows = cmd.replace("python3 -m venv", "py -m venv").replace(".venv/bin/", ".venv\\Scripts\\")
        assert windows in runs and windows in readme
    assert "python packaging/build.py --test" in runs
    assert "download.pytorch.org/whl/cpu" in text  # the CPU build of torch on Linux runners


def test_the_workflow_lints_clean():
    """zizmor (pinned in the test extra) parses the workflow as GitHub does and audits it, offline."""
    import sysconfig

    exe = Path(sysconfig.get_path("scripts")) / ("zizmor.exe" if os.name == "nt" else "zizmor")
    res = subprocess.run([str(exe), "--offline", "--no-progress", str(WORKFLOW)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
