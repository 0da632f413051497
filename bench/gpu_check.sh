#!/usr/bin/env bash
# One-command GPU check of the cuda_ext GPU kernels on a machine with a GPU and nvcc:
# builds the extensions (CUDA, C++ and the HIP-CPU emulation), compiles the kernels for AMD
# GPUs where hipcc exists, runs the kernel tests (targets cuda and hipcpu), then
# bench/gpu_engine.py.
#   bash bench/gpu_check.sh [OUT_DIR]        (default bench/results)
# Optional: wheels of missing Python packages in .whl/ (installed to /tmp/site first);
# PEERS=DIR with the peers' brunel_common.py for the Brunel-COBA timing (skipped otherwise).
set -u -o pipefail
OUT_DIR=${1:-bench/results}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DTB_CACHE_DIR=${DTB_CACHE_DIR:-/tmp/dtb-cache} MAX_JOBS=${MAX_JOBS:-16}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  export TORCH_CUDA_ARCH_LIST
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
start=$SECONDS
# build the extensions at once (each prints its error if it fails)
python3 -c "from cuda_ext.cuda_backend import load_cuda_extension as l; l(); print('CUDA kernels built')" &
python3 -c "from cuda_ext.loader import load_cpu_extension as l; l(); print('C++ kernels built')" &
python3 -c "from cuda_ext.cuda_backend import load_hipcpu_extension as l; l(); print('HIP-CPU kernels built')" &
wait
if command -v hipcc >/dev/null; then  # the HIP flavour for AMD GPUs: the same source through gpu_portability.h
  arch=$(rocminfo 2>/dev/null | grep -o -m1 'gfx[0-9a-f]*' || true)
  hipcc -std=c++17 -O3 -ffp-contract=off ${arch:+--offload-arch=$arch} -x hip -c cuda_ext/lif_kernels.cu \
    -o /tmp/dtb_lif_kernels_hip.o && echo "HIP kernels compiled (${arch:-default arch})" || echo "hipcc FAILED on cuda_ext/lif_kernels.cu"
fi
echo "build: $((SECONDS - start)) s"
start=$SECONDS
timeout "${TEST_TIMEOUT:-420}" python3 -m pytest -q -p no:cacheprovider tests/sim/test_kernels_cuda.py 2>&1 | tee "$OUT_DIR/gpu_tests.log"
echo "tests: $((SECONDS - start)) s"
start=$SECONDS
brunel=(--brunel-n 0)
if [ -n "${PEERS:-}" ] && [ -f "$PEERS/brunel_common.py" ]; then brunel=(--peers "$PEERS"); fi
timeout "${BENCH_TIMEOUT:-300}" python3 bench/gpu_engine.py --json "$OUT_DIR/gpu_engine.json" "${brunel[@]}" 2>&1 | tee "$OUT_DIR/gpu_engine.log"
echo "bench: $((SECONDS - start)) s"
