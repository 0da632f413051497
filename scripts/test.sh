#!/usr/bin/env bash
# Install dtb with its test dependencies into .venv and run the whole test suite.
# (The README's test command; .ci/run calls exactly this.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch first: the CPU wheel on machines without a GPU; keeps an existing (CUDA) torch.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev]"
.venv/bin/ruff check .
.venv/bin/lint-imports
# every .cu source must at least compile (no GPU needed), so CUDA code cannot rot
if ls cuda_ext/*.cu >/dev/null 2>&1; then
  if command -v nvcc >/dev/null; then
    for f in cuda_ext/*.cu; do nvcc -std=c++17 -c "$f" -o /dev/null || { echo "nvcc failed on $f"; exit 1; }; done
    echo "nvcc compiled: $(ls cuda_ext/*.cu | tr '\n' ' ')"
  else
    echo "nvcc not found: .cu sources NOT compiled"
  fi
fi
# pytest exit 5 (no tests collected) is a failure here, like any non-zero exit
.venv/bin/python -m pytest "$@"
