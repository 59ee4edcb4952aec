"""Write the hostile-input corpus (bad images, hostile pickles, malformed weights) to a folder.

The same generator the test suite uses (tests/helpers/corpus.py); nothing binary is checked in.

    python scripts/make_corpus.py out/corpus
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from helpers.corpus import build_corpus

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "out/corpus")
    marker = folder / "CODE_RAN"
    files = build_corpus(folder / "files", marker)
    for path, kind, note in files:
        print(f"{kind:8} {path.relative_to(folder)}  ({note})")
    print(f"{len(files)} inputs in {folder}; hostile pickles would create {marker} if ever unpickled unsafely")


if __name__ == "__main__":
    main()
