// The HIP-CPU build of the GPU kernels: lif_kernels.cu, unchanged, compiled by the host
// compiler with -DDTB_HIP_CPU against the header-only runtime in third_party/hip-cpu (see
// gpu_portability.h).  A .cpp file so that torch.utils.cpp_extension hands it to the host
// compiler rather than to nvcc.  Built by cuda_ext/cuda_backend.py (load_hipcpu_extension).
#ifndef DTB_HIP_CPU
#error "build with -DDTB_HIP_CPU (cuda_ext/cuda_backend.py does)"
#endif
#include "lif_kernels.cu"
