#!/usr/bin/env bash
# Install dtb with its test dependencies into .venv and run the whole test suite.
# (The README's test command; .ci/run calls exactly this.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# Headless Chromium for the `browser` tests (the report opened in a real browser): installed from
# Debian when we are root with apt-get and it is missing; DTB_NO_APT=1 skips this (the tests then
# skip, saying why). About 2 minutes on a fresh machine.
if [ "${DTB_NO_APT:-0}" != 1 ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium + chromium-driver from Debian for the browser tests (DTB_NO_APT=1 skips)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium chromium-driver >/tmp/dtb-apt-chromium.log 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/tmp/dtb-apt-chromium.log 2>&1; } \
    || echo "chromium install failed (see /tmp/dtb-apt-chromium.log): browser tests will be skipped"
fi
# TBB for the `hipcpu` tests (the GPU kernels built against the vendored HIP-CPU, third_party/hip-cpu, and run
# on the CPU): installed from Debian when we are root with apt-get and it is missing; DTB_NO_APT=1 skips this
# (the hipcpu tests then skip, saying why). About 10 s.
if [ ! -e /usr/include/tbb/tbb.h ] && [ ! -e /usr/include/oneapi/tbb.h ]; then
  if [ "${DTB_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libtbb-dev from Debian for the hipcpu tests (DTB_NO_APT=1 skips)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q libtbb-dev >/tmp/dtb-apt-tbb.log 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtbb-dev >/tmp/dtb-apt-tbb.log 2>&1; } \
      || echo "libtbb-dev install failed (see /tmp/dtb-apt-tbb.log): the hipcpu tests will be skipped"
  else
    echo "libtbb-dev is missing and is not installed here (not root, no apt-get, or DTB_NO_APT=1): the hipcpu tests will be skipped"
  fi
fi
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
  # the same sources for AMD GPUs where ROCm is installed (the HIP-CPU build is compiled by the hipcpu tests)
  if command -v hipcc >/dev/null; then
    for f in cuda_ext/*.cu; do hipcc -std=c++17 -x hip -c "$f" -o /dev/null || { echo "hipcc failed on $f"; exit 1; }; done
    echo "hipcc compiled: $(ls cuda_ext/*.cu | tr '\n' ' ')"
  fi
fi
# pytest exit 5 (no tests collected) is a failure here, like any non-zero exit
.venv/bin/python -m pytest "$@"
