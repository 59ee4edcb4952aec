#!/usr/bin/env bash
# Build the desktop bundle from a clean environment with the CPU build of torch, check that no CUDA
# library slipped in, and zip it as dist/vaestudio-<version>-<platform>-<arch>.zip (packaging/build.py
# does the work, the same on Linux, Windows and macOS).
#   packaging/build.sh            # build
#   packaging/build.sh --test     # build, then run the bundle's self-test (dist/vaestudio/vaestudio self-test)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" packaging/build.py "$@"
