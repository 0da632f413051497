// GPU kernels of the dtb engine: fused interval, spike compaction, per-population counts
// and integer delivery.  One source for CUDA (nvcc), HIP on AMD GPUs (hipcc) and HIP-CPU
// (g++ against third_party/hip-cpu, the kernels run on the CPU): the runtime, the warp
// width, the lane-mask type and the warp collectives come from gpu_portability.h.  The
// per-neuron arithmetic is lif_common.h, shared with the C++ kernels, so all follow the
// contract of dtb/sim/backends/base.py operation by operation.  Build with --fmad=false
// (nvcc; -ffp-contract=off for host compilers) and never with fast-math: contraction would
// change float32 results and break bitwise agreement with torch and C++.
//
// No torch headers: this file compiles standalone (`nvcc -std=c++17 -c lif_kernels.cu`);
// the torch binding is cuda_binding.cpp.
#include <cstdint>

#include "gpu_portability.h"
#include "lif_common.h"
#include "lif_kernels.h"

namespace dtb_cuda {
namespace {

using dtb_gpu::LaneMask;
constexpr int kWarp = dtb_gpu::kWarpSize;  // 32 on CUDA, 64 on HIP-CPU and AMD CDNA
constexpr int kBlock = 256;
static_assert(kBlock % kWarp == 0, "blocks hold whole warps");

// One thread per (member m, neuron i) of the flattened (M, N) grid; the thread keeps the
// neuron's V, J, I_ou and refractory count in registers for all n_steps of the interval.
// RT is the number of receptor channels at compile time, so J and g stay in registers.
// Every lane of a warp runs every step (lanes past M*N with valid = false), because the
// compaction uses warp collectives (on HIP-CPU: block-wide barriers, see gpu_portability.h).
template <int RT>
__global__ void __launch_bounds__(kBlock) integrate_kernel(const IntegrateArgs a) {
  const int64_t MN = a.M * a.N;
  const int64_t mi = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = mi < MN;
  const unsigned lane = threadIdx.x & (kWarp - 1);
  dtb::Receptors rc = a.receptors;
  rc.R = RT;  // a compile-time trip count: the receptor loops unroll
  const int64_t m = valid ? mi / a.N : 0;
  const int64_t i = valid ? mi - m * a.N : 0;
  float v = 0.0f, iou = 0.0f;
  int32_t ref = 0, pop = 0;
  float J[RT], g[RT];
  dtb::LifParams p{};
  double lam = 0.0, p0 = 1.0;
  uint32_t k0 = 0, k1 = 0, c0 = 0, c1 = 0;
  int64_t col = -1;
  if (valid) {
    v = a.V[mi];
    iou = a.I_ou[mi];
    ref = a.refractory[mi];
    const int64_t row = m * a.n_classes + a.neuron_class[i];
    const float* f = a.ftab + row * (kFloatFields + RT);
    p.g_L = __ldg(f + kFgL);
    p.gLVL = __ldg(f + kFgLVL);
    p.V_th = __ldg(f + kFVth);
    p.V_reset = __ldg(f + kFVreset);
    p.dt_over_C = __ldg(f + kFdtC);
    p.ou_a = __ldg(f + kFouA);
    p.ou_mu = __ldg(f + kFouMu);
    p.ou_b_sigma = __ldg(f + kFouB);
    p.i_ext = __ldg(f + kFiext);
#pragma unroll
    for (int u = 0; u < RT; ++u) {
      J[u] = a.J[u * MN + mi];
      g[u] = __ldg(f + kFloatFields + u);
    }
    p.n_ref = __ldg(a.itab + 2 * row);
    p.k_pois = __ldg(a.itab + 2 * row + 1);
    lam = __ldg(a.dtab + 2 * row);
    p0 = __ldg(a.dtab + 2 * row + 1);
    k0 = static_cast<uint32_t>(a.keys[2 * m]);
    k1 = static_cast<uint32_t>(a.keys[2 * m + 1]);
    const int64_t gid = a.global_ids ? a.global_ids[i] : a.id_base + i;
    c0 = static_cast<uint32_t>(static_cast<uint64_t>(gid) & 0xffffffffu);
    c1 = static_cast<uint32_t>(static_cast<uint64_t>(gid) >> 32);
    if (a.sample_slot) col = a.sample_slot[i];
    if (a.population) pop = a.population[i];
  } else {
#pragma unroll
    for (int u = 0; u < RT; ++u) J[u] = g[u] = 0.0f;
  }
  const bool compact = a.spike_rows != nullptr || a.pop_counts != nullptr;
  for (int64_t t = 0; t < a.n_steps; ++t) {
    bool spike = false;
    if (valid) {
      const int64_t step = a.step0 + t;
      float xi = 0.0f;
      int32_t n_pois = 0;
      if (a.ou_on || a.poisson_on) {
        const dtb::Words w = dtb::step_words(c0, c1, step, k0, k1);
        if (a.ou_on) xi = dtb::normal_from_uint32(w.w[0], w.w[1]);
        if (a.poisson_on) n_pois = dtb::poisson_inversion(dtb::uniform_from_uint32(w.w[2]), lam, p0, a.max_events);
      }
      int32_t* slot = a.drive + (a.drive_offset + t) * 2 * MN;
      int32_t exc = slot[mi];
      const int32_t inh = slot[MN + mi];
      if (a.clear_drive) {
        slot[mi] = 0;
        slot[MN + mi] = 0;
      }
      if (a.poisson_on) exc = exc + n_pois * p.k_pois;
      spike = dtb::lif_substep(v, J, iou, ref, g, rc, p, a.exponential_euler, a.ou_on, exc, inh, xi);
      if (a.spiked) a.spiked[t * MN + mi] = spike;
      if (col >= 0 && (step + 1) % a.sample_every == 0) {
        const int64_t srow = (step + 1) / a.sample_every - a.step0 / a.sample_every - 1;
        const int64_t C = a.n_sample_cols;
        const int64_t base = (srow * a.M + m) * C + col;
        a.V_s[base] = v;
        a.Ibg_s[base] = iou;
#pragma unroll
        for (int u = 0; u < RT; ++u) {
          const int64_t jb = ((srow * a.M + m) * RT + u) * C + col;
          a.J_s[jb] = J[u];
          a.Isyn_s[jb] = (g[u] * J[u]) * (rc.E_rev[u] - v);
        }
      }
    }
    if (compact) {  // uniform over the grid: every lane of every warp is here
      const LaneMask mask = dtb_gpu::ballot(spike);
      // a GPU warp with no spike skips the rest; on HIP-CPU a collective is a barrier of the
      // whole block, so every warp takes the same ones (they change nothing when mask == 0)
      if (mask != 0u || dtb_gpu::kCollectivesAreBlockBarriers) {
        if (a.spike_rows) {
          // warp-aggregated atomic: one atomicAdd per warp and step, then a prefix by popcount
          const int leader = mask != 0u ? dtb_gpu::first_lane(mask) : 0;
          unsigned long long base = 0;
          if (mask != 0u && static_cast<int>(lane) == leader)
            base = atomicAdd(reinterpret_cast<unsigned long long*>(a.spike_count),
                             static_cast<unsigned long long>(dtb_gpu::popc(mask)));
          base = dtb_gpu::shfl(base, leader);
          if (spike) {
            const int64_t pos = static_cast<int64_t>(base) + dtb_gpu::popc(mask & dtb_gpu::lanemask_lt(lane));
            if (pos < a.spike_capacity) {
              a.spike_rows[3 * pos] = a.drive_offset + t;
              a.spike_rows[3 * pos + 1] = m;
              a.spike_rows[3 * pos + 2] = i;
            }
          }
        }
        if (a.pop_counts) {
          // spiking lanes of the same (member, population) add their count once; lanes
          // without a spike carry the key M * P, above every real one
          const int no_spike = static_cast<int>(a.M * a.n_populations);
          const int key = spike ? static_cast<int>(m * a.n_populations + pop) : no_spike;
          const LaneMask peers = dtb_gpu::match_any(key, no_spike);
          if (spike && static_cast<int>(lane) == dtb_gpu::first_lane(peers))
            atomicAdd(a.pop_counts + t * a.M * a.n_populations + key, dtb_gpu::popc(peers));
        }
      }
    }
  }
  if (valid) {
    a.V[mi] = v;
    a.I_ou[mi] = iou;
    a.refractory[mi] = ref;
#pragma unroll
    for (int u = 0; u < RT; ++u) a.J[u * MN + mi] = J[u];
  }
}

// One warp per spike row: the lanes stride over the row's synapses; integer atomics make
// the sum exact and independent of order.
template <typename TargetT>
__global__ void __launch_bounds__(kBlock)
    deliver_kernel(const int64_t* __restrict__ spikes, int64_t n_spikes, const int64_t* __restrict__ indptr,
                   const TargetT* __restrict__ targets, const uint8_t* __restrict__ weights,
                   const int64_t* __restrict__ source_kind, int32_t* __restrict__ out, int64_t M, int64_t N) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  if (warp >= n_spikes) return;
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t slot = spikes[3 * warp], member = spikes[3 * warp + 1], source = spikes[3 * warp + 2];
  int32_t* row = out + ((slot * 2 + source_kind[source]) * M + member) * N;
  const int64_t end = indptr[source + 1];
  for (int64_t e = indptr[source] + lane; e < end; e += kWarp) {
    const int32_t w = static_cast<int32_t>(__ldg(weights + e));
    if (w) atomicAdd(row + static_cast<int64_t>(__ldg(targets + e)), w);
  }
}

__global__ void philox_kernel(const int64_t* counter, const int64_t* key, int64_t* out, int64_t n) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= n) return;
  const dtb::Words w = dtb::philox4x32_10(
      static_cast<uint32_t>(counter[4 * k]), static_cast<uint32_t>(counter[4 * k + 1]),
      static_cast<uint32_t>(counter[4 * k + 2]), static_cast<uint32_t>(counter[4 * k + 3]),
      static_cast<uint32_t>(key[2 * k]), static_cast<uint32_t>(key[2 * k + 1]));
  for (int j = 0; j < 4; ++j) out[4 * k + j] = static_cast<int64_t>(w.w[j]);
}

int64_t blocks_for(int64_t threads) { return (threads + kBlock - 1) / kBlock; }

}  // namespace

const char* launch_integrate(const IntegrateArgs& a, void* stream) {
  const int64_t MN = a.M * a.N;
  if (MN == 0 || a.n_steps == 0) return nullptr;
  if (a.R < 1 || a.R > dtb::kMaxReceptors) return "between 1 and 8 receptor channels are supported";
  if (a.spike_rows && !a.spike_count) return "spike_rows needs spike_count";
  if (a.pop_counts && !a.population) return "pop_counts needs population";
  const dtb_gpu::Stream s = static_cast<dtb_gpu::Stream>(stream);
  const dim3 grid(static_cast<unsigned>(blocks_for(MN))), block(kBlock);
  switch (a.R) {
    case 1: DTB_LAUNCH(integrate_kernel<1>, grid, block, s, a); break;
    case 2: DTB_LAUNCH(integrate_kernel<2>, grid, block, s, a); break;
    case 3: DTB_LAUNCH(integrate_kernel<3>, grid, block, s, a); break;
    case 4: DTB_LAUNCH(integrate_kernel<4>, grid, block, s, a); break;
    case 5: DTB_LAUNCH(integrate_kernel<5>, grid, block, s, a); break;
    case 6: DTB_LAUNCH(integrate_kernel<6>, grid, block, s, a); break;
    case 7: DTB_LAUNCH(integrate_kernel<7>, grid, block, s, a); break;
    default: DTB_LAUNCH(integrate_kernel<8>, grid, block, s, a); break;
  }
  return dtb_gpu::finish_launch(s);
}

const char* launch_deliver(const int64_t* spikes, int64_t n_spikes, const int64_t* indptr, const int32_t* targets32,
                           const int64_t* targets64, const uint8_t* weights, const int64_t* source_kind,
                           int32_t* out, int64_t M, int64_t N, void* stream) {
  if (n_spikes == 0) return nullptr;
  if ((targets32 == nullptr) == (targets64 == nullptr)) return "give exactly one of int32 or int64 targets";
  const dtb_gpu::Stream s = static_cast<dtb_gpu::Stream>(stream);
  const dim3 grid(static_cast<unsigned>(blocks_for(n_spikes * kWarp))), block(kBlock);
  if (targets32) {
    DTB_LAUNCH(deliver_kernel<int32_t>, grid, block, s, spikes, n_spikes, indptr, targets32, weights, source_kind, out,
               M, N);
  } else {
    DTB_LAUNCH(deliver_kernel<int64_t>, grid, block, s, spikes, n_spikes, indptr, targets64, weights, source_kind, out,
               M, N);
  }
  return dtb_gpu::finish_launch(s);
}

const char* launch_philox(const int64_t* counter, const int64_t* key, int64_t* out, int64_t n, void* stream) {
  if (n == 0) return nullptr;
  const dtb_gpu::Stream s = static_cast<dtb_gpu::Stream>(stream);
  DTB_LAUNCH(philox_kernel, dim3(static_cast<unsigned>(blocks_for(n))), dim3(kBlock), s, counter, key, out, n);
  return dtb_gpu::finish_launch(s);
}

}  // namespace dtb_cuda
