"""Rules the test suite keeps about itself."""

from __future__ import annotations

import ast

from conftest import ROOT


def test_no_test_module_imports_another():
    """What tests share lives in tests/helpers/ (a test module imported by another runs its fixtures twice and
    ties the two files together)."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert not offenders, offenders
