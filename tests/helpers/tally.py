"""Figures the hostile-input suite reports at the end of the run (printed by conftest)."""

from __future__ import annotations

from collections import Counter

TALLY: Counter = Counter()


def count(name: str, n: int = 1) -> None:
    TALLY[name] += n


def summary() -> str:
    t = TALLY
    return (f"hostile-input suite: inputs tried {t['inputs']}, files in corpus {t['corpus']}, "
            f"faults injected {t['faults']}, crashes {t['crashes']}, code executions {t['code_executions']}, "
            f"files lost {t['files_lost']}")
