#!/usr/bin/env bash
# The GPU paths in one run (issue 18): auto dtype per VAE, NaN -> fp32, out of memory -> tiles,
# evaluate under torchrun (NCCL) = one process, and encode+decode times against plain diffusers.
# Installs nothing: uses the project's environment (.venv if present, else python3). Under 5 minutes
# on a CUDA machine; prints one Markdown table on stdout (progress on stderr). Exits 3 without CUDA.
#   bash benchmarks/gpu_check.sh [--quick]      GPU_CHECK_COMPILE=1 adds torch.compile timings
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing was checked" >&2
  exit 3
fi
exec timeout 300 "$PY" benchmarks/gpu_check.py "$@"
