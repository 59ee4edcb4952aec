"""The README's table of supported VAEs is generated from the registry and covers every architecture:
it cannot drift from the code."""

from __future__ import annotations

import importlib.util

from conftest import ROOT

from vaestudio.core.registry import architectures


def _script():
    spec = importlib.util.spec_from_file_location("supported_table", ROOT / "scripts" / "supported_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _render() -> str:
    return _script().render()


def test_readme_table_equals_the_generators_output():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _script().readme_block(readme) == _render(), "the README's table is stale: run scripts/supported_table.py"


def test_the_table_covers_every_architecture_with_its_sources_and_families():
    table = _render()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(architectures())
    for arch in architectures():
        row = next(r for r in rows if r.startswith(f"| `{arch.name}`"))
        for fmt, _ in arch.sources:
            assert f"**{fmt}**" in row, (arch.name, fmt)
        for fam in arch.families:
            assert f"`{fam}`" in row, (arch.name, fam)
    for name in ("flux2", "wan", "dc-ae", "hunyuan-image"):
        assert any(r.startswith(f"| `{name}`") for r in rows), name
