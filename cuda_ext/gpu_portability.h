// One kernel source, three targets: the thin layer between lif_kernels.cu and its runtime.
//
//   CUDA      nvcc                          warps of 32, 32-bit lane masks
//   HIP (AMD) hipcc                         wavefronts of 64 (CDNA) or 32 (RDNA, wave32),
//                                           64-bit lane masks (HIP's __ballot is 64-bit)
//   HIP-CPU   g++ -DDTB_HIP_CPU             the header-only HIP runtime of third_party/hip-cpu
//             -I third_party/hip-cpu/include  (kernels run on the CPU, one fiber per thread,
//             -ltbb                          blocks in parallel through TBB); warps of 64
//
// The warp width and the lane-mask type are compile-time constants of the target
// (kWarpSize, LaneMask), never literals in the kernels.  Warp collectives (ballot, shuffle,
// match) go through the functions below; every lane of a warp calls them.  On HIP-CPU a
// collective is a barrier of the whole *block* (the runtime switches fibers round-robin), so
// every thread of a block must reach the same collectives in the same order:
// kCollectivesAreBlockBarriers tells the kernels to skip none (a GPU may let a warp skip
// collectives that would change nothing, e.g. when none of its lanes spiked).
//
// Device memory is host memory on HIP-CPU, and DTB_LAUNCH runs the kernel to completion in
// the calling thread there (kSynchronousLaunches): the blocks in parallel through TBB, as
// HIP-CPU's own launch does, but without its stream queue, whose runtime thread would spin
// on a core for as long as the process lives.  finish_launch() checks the launch.
#pragma once

#include <cstdint>
#include <tuple>
#include <utility>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define DTB_GPU_CUDA 1
#elif defined(DTB_HIP_CPU) || defined(__HIP__) || defined(__HIPCC__) || defined(__HIP_PLATFORM_AMD__)
#include <hip/hip_runtime.h>
#define DTB_GPU_HIP 1
#if defined(__HIP_CPU_RT__)
#define DTB_GPU_HIP_CPU 1
// HIP-CPU marks kernels `simd` for g++, which only adds unused SIMD clones (and warnings)
#undef __global__
#define __global__ __attribute__((flatten))
#endif
#else
#error "gpu_portability.h: compile with nvcc, hipcc, or g++ -DDTB_HIP_CPU -I third_party/hip-cpu/include"
#endif

// Device helpers: inline host functions on HIP-CPU (its __device__ asks g++ for SIMD clones).
#if defined(DTB_GPU_HIP_CPU)
#define DTB_DEVICE inline
#else
#define DTB_DEVICE __device__ __forceinline__
#endif

namespace dtb_gpu {

#if defined(DTB_GPU_CUDA)
using LaneMask = uint32_t;
constexpr int kWarpSize = 32;
constexpr bool kCollectivesAreBlockBarriers = false;
constexpr bool kSynchronousLaunches = false;
using Stream = cudaStream_t;
#define DTB_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
using LaneMask = uint64_t;  // HIP's __ballot returns 64 bits whatever the wavefront width
#if defined(DTB_GPU_HIP_CPU)
constexpr int kWarpSize = 64;  // HIP-CPU emulates 64-lane warps
static_assert(warpSize == kWarpSize, "HIP-CPU's warp width changed");
constexpr bool kCollectivesAreBlockBarriers = true;
constexpr bool kSynchronousLaunches = true;
#else
#if defined(__AMDGCN_WAVEFRONT_SIZE)
constexpr int kWarpSize = __AMDGCN_WAVEFRONT_SIZE;  // device pass: 32 (wave32) or 64
#else
constexpr int kWarpSize = 64;  // host pass: only used to size launches
#endif
constexpr bool kCollectivesAreBlockBarriers = false;
constexpr bool kSynchronousLaunches = false;
#endif
using Stream = hipStream_t;
#if defined(DTB_GPU_HIP_CPU)
// HIP-CPU's launch (hipLaunchKernelGGL) minus the stream: the same tiled domain, run here
template <typename F, typename... Args>
inline void run_tiles(const dim3& blocks, const dim3& threads, F fn, std::tuple<Args...> args) {
  struct {
    const F* fn_;
    const std::tuple<Args...>* args_;
    void operator()() const noexcept { std::apply(*fn_, *args_); }
  } kernel{&fn, &args};
  const ::hip::detail::Tiled_domain domain{threads, blocks, 0u, kernel};
  for_each_tile(domain, fn, args);  // found by argument-dependent lookup (hip::detail)
}
#define DTB_LAUNCH(kernel, grid, block, stream, ...)                                                        \
  ((void)(stream), ::dtb_gpu::run_tiles(                                                                    \
                       (grid), (block),                                                                     \
                       [=](auto&&... xs) noexcept { kernel(std::forward<decltype(xs)>(xs)...); }, \
                       std::make_tuple(__VA_ARGS__)))
#else
#define DTB_LAUNCH(kernel, grid, block, stream, ...) \
  hipLaunchKernelGGL(HIP_KERNEL_NAME(kernel), (grid), (block), 0, (stream), __VA_ARGS__)
#endif
#endif

static_assert(kWarpSize <= 8 * static_cast<int>(sizeof(LaneMask)), "a lane mask holds one bit per lane");
static_assert((kWarpSize & (kWarpSize - 1)) == 0, "the warp width is a power of two");

// Every lane of a warp.
constexpr LaneMask kFullMask =
    kWarpSize == 8 * static_cast<int>(sizeof(LaneMask)) ? ~LaneMask{0} : (LaneMask{1} << kWarpSize) - 1;

// Lane mask of the lanes whose predicate is true (every lane calls it).
DTB_DEVICE LaneMask ballot(bool predicate) {
#if defined(DTB_GPU_CUDA)
  return __ballot_sync(kFullMask, predicate);
#else
  return static_cast<LaneMask>(__ballot(predicate ? 1 : 0)) & kFullMask;
#endif
}

// The value of `src_lane` in every lane (every lane calls it).
template <typename T>
DTB_DEVICE T shfl(T value, int src_lane) {
#if defined(DTB_GPU_CUDA)
  return __shfl_sync(kFullMask, value, src_lane);
#else
  return __shfl(value, src_lane);
#endif
}

// Index of the lowest set lane of a non-zero mask.
DTB_DEVICE int first_lane(LaneMask mask) {
#if defined(DTB_GPU_CUDA)
  return __ffs(mask) - 1;
#else
  return __builtin_ctzll(static_cast<unsigned long long>(mask));
#endif
}

// Number of lanes set in a mask.
DTB_DEVICE int popc(LaneMask mask) {
#if defined(DTB_GPU_CUDA)
  return __popc(mask);
#else
  return __builtin_popcountll(static_cast<unsigned long long>(mask));
#endif
}

// Lanes below `lane` (the CUDA %lanemask_lt register, written for either width).
DTB_DEVICE LaneMask lanemask_lt(unsigned lane) {
#if defined(DTB_GPU_CUDA)
  LaneMask mask;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(mask));
  return mask;
#else
  return (LaneMask{1} << lane) - 1;  // lane < kWarpSize <= bits of LaneMask
#endif
}

// Lanes whose key equals this lane's key (every lane calls it); keys lie in [0, max_key].
// CUDA has the instruction; elsewhere one ballot per bit of max_key: the same number of
// collectives in every warp of the grid, as HIP-CPU needs.
DTB_DEVICE LaneMask match_any(int key, int max_key) {
#if defined(DTB_GPU_CUDA)
  (void)max_key;
  return __match_any_sync(kFullMask, key);
#else
  LaneMask peers = kFullMask;
  for (unsigned rest = static_cast<unsigned>(max_key), b = 0; rest != 0u; rest >>= 1, ++b) {
    const bool bit = (static_cast<unsigned>(key) >> b) & 1u;
    const LaneMask ones = ballot(bit);
    peers &= bit ? ones : ~ones;
  }
  return peers & kFullMask;
#endif
}

// nullptr when the last launch succeeded (on HIP-CPU it has also run to completion), else a message.
inline const char* finish_launch(Stream stream) {
  (void)stream;
#if defined(DTB_GPU_CUDA)
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
#else
  const hipError_t err = hipGetLastError();
  return err == hipSuccess ? nullptr : hipGetErrorString(err);
#endif
}

}  // namespace dtb_gpu
