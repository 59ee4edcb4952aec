#!/usr/bin/env bash
# Build the one-folder desktop bundle dist/vaestudio/ from a clean environment with the CPU build
# of torch, then report its size and check that no CUDA library slipped in.
#   packaging/build.sh            # build
#   packaging/build.sh --test     # build, then run dist/vaestudio/vaestudio self-test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ENV=build/pkg-venv
rm -rf "$ENV" build/vaestudio dist/vaestudio
"$PY" -m venv "$ENV"
# torch==2.13.0 from constraints.txt is the CPU build; no test or dev packages are installed here
"$ENV/bin/pip" install -q -c constraints.txt . "pyinstaller" "pyinstaller-hooks-contrib"
start=$(date +%s)
"$ENV/bin/pyinstaller" --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/vaestudio.spec
echo "build: pyinstaller took $(( $(date +%s) - start )) s"
size=$(du -sm dist/vaestudio | cut -f1)
echo "build: dist/vaestudio is ${size} MB"
if find dist/vaestudio -iname '*libcudart*' -o -iname '*libcublas*' -o -iname '*libcudnn*' -o -iname '*libnccl*' | grep -q .; then
    echo "build: error: CUDA libraries found in a CPU bundle" >&2
    exit 1
fi
echo "build: no CUDA libraries in the bundle"
if [ "${1:-}" = "--test" ]; then
    QT_QPA_PLATFORM=offscreen dist/vaestudio/vaestudio self-test
fi
