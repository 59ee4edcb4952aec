"""The packaging scripts (packaging/*.py are scripts, not a package) loaded as modules for their tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def packaging_module(name: str):
    """``packaging/<name>.py`` as a module (build, make_icons)."""
    spec = importlib.util.spec_from_file_location(f"packaging_{name}", ROOT / "packaging" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
