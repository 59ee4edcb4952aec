"""Build the desktop bundle on Linux, Windows or macOS with one PyInstaller spec, and zip it for release.

    python packaging/build.py            # build
    python packaging/build.py --test     # build, then run the bundle's self-test

Steps: a fresh virtual environment in build/pkg-venv with only the runtime dependencies (``pip install
-c constraints.txt .`` plus PyInstaller; the CPU build of torch must come from the index pip is given:
PyPI is CPU-only on Windows and macOS, Linux needs https://download.pytorch.org/whl/cpu), the
platform's icons from the PNGs (``make_icons.py --platform``: .ico, .icns), PyInstaller on
``packaging/vaestudio.spec``, a check that no CUDA library slipped in, on macOS an ad-hoc signature of
``vaestudio.app`` (``codesign --force --deep -s -``), with ``--test`` the self-test and ``evaluate`` with spawned
workers from a folder with spaces and non-ASCII characters in its name (on Windows in both executables:
the window's, which has no console, is judged by its exit code and the rows it writes), and the release
archive ``dist/vaestudio-<version>-<platform>-<arch>.zip``.

What the bundle is, per platform (the spec decides it from ``sys.platform``):
- Linux: ``dist/vaestudio/vaestudio`` (window and CLI in one executable);
- Windows: ``dist/vaestudio/vaestudio.exe`` without a console window (the window) and
  ``vaestudio-cli.exe`` with one (the CLI, ``self-test``), both from one analysis in one folder;
- macOS: ``dist/vaestudio.app`` (the CLI is ``vaestudio.app/Contents/MacOS/vaestudio``).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "build" / "pkg-venv"
DIST = ROOT / "dist"
#: CUDA runtime libraries, by the part of the file name every platform shares (libcudart.so.12, cudart64_12.dll)
CUDA_LIBS = ("cudart", "cublas", "cudnn", "nccl")
#: what a shared library's name has (torch's own Python modules, torch/cuda/nccl.py, are not libraries)
LIBRARY_SUFFIXES = (".so", ".dll", ".dylib")


def platform_name(plat: str = sys.platform) -> str:
    """linux, windows or macos: the platform in the archive's name."""
    if plat.startswith("win"):
        return "windows"
    if plat == "darwin":
        return "macos"
    return "linux" if plat.startswith("linux") else plat


def arch_name(machine: str | None = None) -> str:
    """x86_64 or arm64, whatever the platform calls them (AMD64 on Windows, aarch64 on Linux)."""
    m = (machine if machine is not None else platform.machine()).lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m or "unknown")


def version() -> str:
    text = (ROOT / "vaestudio" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not found:
        raise SystemExit("build: error: no __version__ in vaestudio/__init__.py")
    return found.group(1)


def archive_name(plat: str = sys.platform, machine: str | None = None) -> str:
    return f"vaestudio-{version()}-{platform_name(plat)}-{arch_name(machine)}.zip"


def env_exe(name: str) -> Path:
    """A program of the build environment (bin/ or Scripts\\ with .exe)."""
    if os.name == "nt":
        return ENV / "Scripts" / f"{name}.exe"
    return ENV / "bin" / name


def bundle_path(plat: str = sys.platform) -> Path:
    """What is shipped: the .app on macOS, else the one-folder bundle."""
    return DIST / ("vaestudio.app" if plat == "darwin" else "vaestudio")


def windowed_path(plat: str = sys.platform) -> Path | None:
    """Windows: the window's executable, which has no console (no stdout: checked by its exit code alone);
    elsewhere None (the window and the CLI are one executable)."""
    return DIST / "vaestudio" / "vaestudio.exe" if plat.startswith("win") else None


def cli_path(plat: str = sys.platform) -> Path:
    """The executable that runs the CLI with a console (the self-test prints its steps)."""
    if plat.startswith("win"):
        return DIST / "vaestudio" / "vaestudio-cli.exe"
    if plat == "darwin":
        return DIST / "vaestudio.app" / "Contents" / "MacOS" / "vaestudio"
    return DIST / "vaestudio" / "vaestudio"


#: a tiny AutoencoderKL folder, written by the build environment's diffusers for the frozen evaluate check
TINY_VAE = """import sys, torch
from diffusers import AutoencoderKL
torch.manual_seed(0)
AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
              up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
              norm_num_groups=32).save_pretrained(sys.argv[1])
"""


def run(*cmd: str | os.PathLike, **kw) -> None:
    print("build: $", " ".join(str(c) if "\n" not in str(c) else "<script>" for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def is_cuda_library(name: str) -> bool:
    name = name.lower()
    library = any(name.endswith(s) or f"{s}." in name for s in LIBRARY_SUFFIXES)
    return library and any(lib in name for lib in CUDA_LIBS)


def cuda_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_cuda_library(p.name) and not p.is_dir()]


def folder_mb(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) // 2**20


def zip_folder(folder: Path, out: Path) -> Path:
    """Zip ``folder`` (as its own top-level folder) keeping symbolic links as links and executable bits."""
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for p in sorted([folder, *folder.rglob("*")]):
            arc = p.relative_to(folder.parent).as_posix()
            if p.is_symlink():
                info = zipfile.ZipInfo(arc)
                info.create_system = 3  # unix: the mode below is read
                info.external_attr = (0o120777 << 16)
                zf.writestr(info, os.readlink(p))
            else:  # folders and files, with their mode (executable bits)
                zf.write(p, arc)
    os.replace(tmp, out)
    return out


def frozen_evaluate_check(exe: Path) -> None:
    """``evaluate`` in the bundle (``exe``) with two DataLoader workers started by ``spawn`` (the start method
    of Windows and macOS, here on every platform), from a folder whose name has spaces and non-ASCII
    characters: the workers are the frozen executable started again (``freeze_support`` in entry.py)."""
    tmp = Path(tempfile.mkdtemp(prefix="vaestudio check "))
    try:
        work = tmp / "données 空間 with spaces"
        images = work / "images"
        images.mkdir(parents=True)
        for name in ("astronaut.png", "chelsea.png"):
            shutil.copy(ROOT / "vaestudio" / "resources" / "samples" / name, images / f"sample {name}")
        run(env_exe("python"), "-c", TINY_VAE, work / "tiny vae")
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VAESTUDIO_MP_START="spawn")
        run(exe, "evaluate", images, "--vae", work / "tiny vae", "--out", work / "out", "--workers", "2",
            "--size", "64", "--metrics", "psnr,ssim,mae", "--no-report", env=env)
        with open(work / "out" / "rows.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        bad = [r for r in rows if r.get("error")]
        if len(rows) != 2 or bad:
            raise SystemExit(f"build: error: the frozen evaluate check wrote {len(rows)} rows, "
                             f"{len(bad)} with errors ({bad[0]['error'] if bad else 'expected 2'})")
        print(f"build: frozen evaluate with spawn workers ({exe.name}): 2 rows, no errors")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def strip_debug_info(bundle: Path, plat: str = sys.platform) -> list[Path]:
    """Linux: a distribution's libpython carries its debug information (16 of its 22 MB here), which
    nothing reads at run time: ``strip --strip-debug`` removes just that, from libpython alone (stripping
    everything, PyInstaller's ``strip=True``, breaks the auditwheel-patched libraries in numpy.libs/).
    Nothing elsewhere (macOS signs its binaries; Windows keeps debug information in .pdb files)."""
    if not plat.startswith("linux") or not shutil.which("strip"):
        return []
    libs = sorted((bundle / "_internal").glob("libpython3*.so*"))
    for lib in libs:
        run("strip", "--strip-debug", lib)
    return libs


def sign_commands(plat: str, bundle: Path) -> list[list[str | Path]]:
    """macOS: sign the .app ad hoc (Apple Silicon runs no unsigned code) and verify it; nothing elsewhere
    (Windows would need an Authenticode certificate the project does not have)."""
    if plat != "darwin":
        return []
    return [["codesign", "--force", "--deep", "-s", "-", bundle], ["codesign", "--verify", "--deep", "--strict", bundle]]


def make_archive(plat: str = sys.platform) -> Path:
    out = DIST / archive_name(plat)
    out.unlink(missing_ok=True)
    if plat == "darwin":
        # ditto keeps the .app's symbolic links, extended attributes and signature as Finder expects
        run("ditto", "-c", "-k", "--sequesterRsrc", "--keepParent", bundle_path(plat), out)
        return out
    return zip_folder(bundle_path(plat), out)


def build(test: bool) -> int:
    for p in (ENV, ROOT / "build" / "pyinstaller", DIST / "vaestudio", DIST / "vaestudio.app"):
        shutil.rmtree(p, ignore_errors=True)
    run(sys.executable, "-m", "venv", ENV)
    # torch==2.13.0 from constraints.txt; no test or dev packages are installed here
    run(env_exe("python"), "-m", "pip", "install", "-q", "-c", "constraints.txt", ".", "pyinstaller",
        "pyinstaller-hooks-contrib")
    run(env_exe("python"), "packaging/make_icons.py", "--platform", ROOT / "build" / "icons")
    start = time.time()
    run(env_exe("pyinstaller"), "--noconfirm", "--clean", "--log-level", "WARN", "--distpath", DIST,
        "--workpath", ROOT / "build" / "pyinstaller", "packaging/vaestudio.spec")
    print(f"build: pyinstaller took {time.time() - start:.0f} s")
    bundle = bundle_path()
    for lib in strip_debug_info(bundle):
        print(f"build: debug information stripped from {lib.name}")
    print(f"build: {bundle.relative_to(ROOT)} is {folder_mb(bundle)} MB")
    found = cuda_files(bundle)
    if found:
        print(f"build: error: CUDA libraries found in a CPU bundle: {', '.join(p.name for p in found[:5])}",
              file=sys.stderr)
        return 1
    print("build: no CUDA libraries in the bundle")
    for cmd in sign_commands(sys.platform, bundle):
        run(*cmd)
    if test:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
        for exe in filter(None, (cli_path(), windowed_path())):  # Windows: the window's executable too
            code = subprocess.run([str(exe), "self-test"], cwd=ROOT, env=env).returncode
            if code != 0:
                print(f"build: error: the bundle's self-test failed in {exe.name} (exit code {code})",
                      file=sys.stderr)
                return code
            frozen_evaluate_check(exe)
    archive = make_archive()
    print(f"build: {archive.relative_to(ROOT)} is {archive.stat().st_size // 2**20} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the vaestudio desktop bundle and its release archive.")
    ap.add_argument("--test", action="store_true", help="run the bundle's self-test after building")
    args = ap.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # a Windows pipe (cp1252) cannot encode the check's folder name
        stream.reconfigure(errors="backslashreplace")
    try:
        return build(args.test)
    except subprocess.CalledProcessError as exc:
        print(f"build: error: {Path(str(exc.cmd[0])).name} failed with exit code {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
