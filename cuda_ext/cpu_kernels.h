// Plain C++ interface of the CPU kernels (cpu_kernels.cpp): raw pointers, no torch header.
//
// The torch binding (cpu_binding.cpp) checks shapes, dtypes and devices and hands the pointers
// over; the kernels assume checked input.  Arithmetic follows the contract of
// dtb/sim/backends/base.py (docs/architecture.md, "The engine"); build with -ffp-contract=off
// and without -ffast-math (dtb/kernel_build.py gives every build these flags).
#pragma once

#include <cstdint>

#include "balloon.h"
#include "lif_common.h"

namespace dtb::cpu {

//! Number of per-neuron tables with a member stride (IntegrateArgs::member_strides).
constexpr int kTables = 13;

//! One interval of neuron steps (see integrate()).  Tables are (M, N) or, shared by all members,
//! (1, N); member_strides[k] (N or 0) is table k's member stride in the order g_L, gLVL, V_th,
//! V_reset, dt_over_C, n_ref, ou_a, ou_mu, ou_b_sigma, i_ext, k_pois, p_index, g.
struct IntegrateArgs {
  int64_t M = 0, N = 0;  //!< members, neurons
  // state, advanced in place: V, I_ou, refractory (M, N); J (R, M, N)
  float* V = nullptr;
  float* J = nullptr;
  float* I_ou = nullptr;
  int32_t* refractory = nullptr;
  // drive (D, 2, M, N) int32: slots drive_offset .. drive_offset + n_steps - 1 are read (and
  // zeroed where consume_drive)
  int32_t* drive = nullptr;
  int64_t drive_offset = 0;
  bool consume_drive = true;
  // per-neuron tables
  const float* g = nullptr;  //!< (R, 1 or M, N)
  const float *g_L = nullptr, *gLVL = nullptr, *V_th = nullptr, *V_reset = nullptr, *dt_over_C = nullptr;
  const int32_t* n_ref = nullptr;
  const float *ou_a = nullptr, *ou_mu = nullptr, *ou_b_sigma = nullptr, *i_ext = nullptr;
  const int32_t* k_pois = nullptr;
  const int32_t* p_index = nullptr;  //!< each neuron's Poisson threshold table
  int64_t member_strides[kTables] = {};
  // Poisson threshold tables (dtb/sim/backends/poisson_tables.py): T tables of width p_width
  const int32_t* p_base = nullptr;
  const int32_t* p_length = nullptr;
  const uint32_t* p_thr = nullptr;
  int p_width = 0;
  Receptors receptors;
  // Philox: keys (M,) holding uint32 values; global neuron id words (N,) as uint32 bit patterns
  const int64_t *key0 = nullptr, *key1 = nullptr;
  const int32_t *id_lo = nullptr, *id_hi = nullptr;
  bool exponential_euler = true, ou_on = false, poisson_on = false;
  int64_t step0 = 0, n_steps = 0;
  // samples: sample_slot (N,) -1 or the neuron's column; V_s, Ibg_s (S, M, C), J_s, Isyn_s
  // (S, M, R, C), S = steps of this call with (step + 1) % sample_every == 0
  const int64_t* sample_slot = nullptr;
  int64_t sample_every = 1, sample_columns = 0;
  float *V_s = nullptr, *J_s = nullptr, *Isyn_s = nullptr, *Ibg_s = nullptr;
  // optional counts (bins, M, n_pops) int32 (nullptr: none): step t adds to bin
  // (count_phase + t) / count_bin_steps; population (N,) int32
  int32_t* counts = nullptr;
  const int32_t* population = nullptr;
  int64_t n_pops = 0, count_phase = 0, count_bin_steps = 1;
  int threads = 1;  //!< OpenMP threads (the binding passes torch's setting)
};

//! Memory for n_rows spike rows of 3 int64 each, allocated by the caller (context is its own).
using RowBuffer = int64_t* (*)(int64_t n_rows, void* context);

//! Advance the state by n_steps steps; the spikes go to rows(n, context) as (step in the call,
//! member, neuron) in the order of torch.nonzero on an (n_steps, M, N) mask, the same for any
//! thread count.
void integrate(const IntegrateArgs& a, RowBuffer rows, void* context);

//! Philox4x32-10: counter (n, 4), key (n, 2) holding uint32 values -> out (n, 4).
void philox(const int64_t* counter, const int64_t* key, int64_t n, int64_t* out);

//! exp_contract of n floats (the AVX2 path where built, the tail scalar).
void exp_contract(const float* x, float* out, int64_t n);

//! which 0: log_f64, 1: cos_2pi_f64, 2: exp_f64 of n doubles (lif_common.h, as dtb.fpmath).
void fpmath(const double* x, double* out, int64_t n, int which);

//! pow_f64 (dtb.fpmath.pow) elementwise.
void pow_f64(const double* x, const double* y, double* out, int64_t n);

//! normal_from_uint32 of word pairs (uint32 values in int64): the AVX2 path (vector, where built) or scalar.
void normal_words(const int64_t* a, const int64_t* b, float* out, int64_t n, bool vector);

//! Balloon model over T steps for K states (s, f, v, q in place), input u (T, K); y receives BOLD
//! after every step (every_step: y (T, K)) or after the last (y (K,)).
void balloon_window(double* s, double* f, double* v, double* q, const double* u, int64_t T, int64_t K,
                    const BalloonConst& p, double* y, bool every_step, int threads);

//! balloon_window with inputs from spike counts (T, M, P) int32: state (m, r)'s input at step t is the
//! integer sum of counts[t, m, p] over populations p with population_region[p] == r (each in [0, R)),
//! divided by region_neurons[r].  States (M, R); y (M, R): BOLD at the end.
void balloon_window_counts(double* s, double* f, double* v, double* q, const int32_t* counts, int64_t T, int64_t M,
                           int64_t P, const int64_t* population_region, const double* region_neurons, int64_t R,
                           const BalloonConst& p, double* y, int threads);

//! Poisson counts from threshold tables for words (n,) (uint32 values in int64) and table rows (n,).
void poisson_counts(const int64_t* words, const int32_t* rows, int64_t n, const int32_t* p_base,
                    const int32_t* p_length, const uint32_t* p_thr, int width, int32_t* out);

//! Whether this build has the AVX2 8-lane path.
bool has_avx2();

//! Integer delivery: out[slot, kind(source), member, target] += weight for every synapse of every
//! spike row (slot, member, source) of spikes (n, 3); targets int32 (targets32) or int64 (targets64).
void deliver(const int64_t* spikes, int64_t n, const int64_t* indptr, const int32_t* targets32,
             const int64_t* targets64, const uint8_t* weights, const int64_t* source_kind, int32_t* out,
             int64_t n_slots, int64_t M, int64_t N, int threads);

}  // namespace dtb::cpu
