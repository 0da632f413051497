// Host interface of the CUDA kernels of dtb (cuda_ext/lif_kernels.cu).
//
// Plain C++ on raw device pointers (no torch, no CUDA headers), so the .cu file compiles
// standalone with `nvcc -std=c++17 -c` and the torch binding (cuda_binding.cpp) is the only
// file that knows about tensors.  Every pointer is a device pointer; `stream` is a
// cudaStream_t passed as void*.  Launchers return nullptr on success, else a static
// message (no std::string crosses the nvcc / host-compiler boundary).
#pragma once

#include <cstdint>

#include "lif_common.h"

namespace dtb_cuda {

// Parameter tables: neurons of one "class" (in practice a population) share every
// per-neuron constant.  ftab is (M, n_classes, kFloatFields + R) float32 with fields
// kF* then g_0 .. g_{R-1}; itab is (M, n_classes, 2) int32 (n_ref, k_pois); dtab is
// (M, n_classes, 2) float64 (poisson lam, p0 = exp(-lam)).
enum FloatField : int {
  kFgL = 0,
  kFgLVL,
  kFVth,
  kFVreset,
  kFdtC,
  kFouA,
  kFouMu,
  kFouB,
  kFiext,
  kFloatFields
};

struct IntegrateArgs {
  int64_t M = 0, N = 0;            // members, neurons
  int R = 0;                       // receptor channels
  dtb::Receptors receptors{};      // decay, E_rev, kind per channel
  // state, modified in place
  float* V = nullptr;              // (M, N) [mV]
  float* J = nullptr;              // (R, M, N)
  float* I_ou = nullptr;           // (M, N)
  int32_t* refractory = nullptr;   // (M, N) steps left
  // integer synaptic drive (D, 2, M, N); step t of the call reads slot drive_offset + t
  int32_t* drive = nullptr;
  int64_t drive_offset = 0;
  bool clear_drive = false;        // zero each slot once read (lets delivery reuse the ring)
  // parameters
  const int32_t* neuron_class = nullptr;  // (N,)
  int64_t n_classes = 0;
  const float* ftab = nullptr;
  const int32_t* itab = nullptr;
  const double* dtab = nullptr;
  int64_t max_events = 0;
  bool exponential_euler = true, ou_on = false, poisson_on = false;
  // Philox: key words per member (M, 2) as int64 holding uint32; neuron ids are
  // id_base + i unless global_ids (N,) int64 is given
  const int64_t* keys = nullptr;
  int64_t id_base = 0;
  const int64_t* global_ids = nullptr;
  int64_t step0 = 0, n_steps = 0;
  // outputs, each optional (nullptr = not produced)
  bool* spiked = nullptr;          // (n_steps, M, N)
  int64_t* spike_rows = nullptr;   // (capacity, 3) rows (drive_offset + t, member, neuron)
  int64_t spike_capacity = 0;
  int64_t* spike_count = nullptr;  // (1,) running count; may exceed capacity (then rows were dropped)
  const int32_t* population = nullptr;  // (N,) population index, for pop_counts
  int64_t n_populations = 0;
  int32_t* pop_counts = nullptr;   // (n_steps, M, n_populations), accumulated
  // samples: column per neuron (-1 = not sampled); a step t is sampled when
  // (step0 + t + 1) % sample_every == 0.  V_s (S, M, C), J_s/Isyn_s (S, M, R, C), Ibg_s (S, M, C)
  const int64_t* sample_slot = nullptr;
  int64_t sample_every = 1, n_sample_cols = 0;
  float *V_s = nullptr, *J_s = nullptr, *Isyn_s = nullptr, *Ibg_s = nullptr;
};

// Fused interval: one thread per (member, neuron), state in registers for all n_steps.
const char* launch_integrate(const IntegrateArgs& a, void* stream);

// Integer delivery, one warp per spike row (slot, member, source) of the push CSR:
// out[slot, source_kind[source], member, target] += weight for every synapse of the row.
// targets are int32 (targets32) or int64 (targets64), exactly one non-null.
const char* launch_deliver(const int64_t* spikes, int64_t n_spikes, const int64_t* indptr, const int32_t* targets32,
                           const int64_t* targets64, const uint8_t* weights, const int64_t* source_kind,
                           int32_t* out, int64_t M, int64_t N, void* stream);

// Philox4x32-10 on the device: counter (n, 4), key (n, 2) int64 holding uint32 -> out (n, 4).
const char* launch_philox(const int64_t* counter, const int64_t* key, int64_t* out, int64_t n, void* stream);

}  // namespace dtb_cuda
