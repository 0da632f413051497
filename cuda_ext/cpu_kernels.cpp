// Fused CPU kernels of the dtb engine (torch C++ extension, OpenMP).
//
// `integrate` follows the arithmetic contract of dtb/sim/backends/base.py operation by
// operation in float32 (float64 only where the contract says so, rounded to float once),
// with each neuron's state held in registers across the steps of one interval.  Build
// with -ffp-contract=off and without -ffast-math: a fused multiply-add or a reassociated
// sum would change float results and break bitwise agreement with the torch backend.
#include <torch/extension.h>

#include "balloon.h"
#include "cpu_block.h"
#include "lif_common.h"

#include <cmath>
#include <algorithm>
#include <utility>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using dtb::kMaxReceptors;
using dtb::Words;

int num_threads() {
  // torch.set_num_threads governs these kernels too
  return std::max(1, at::get_num_threads());
}

// (this thread's index, team size) inside a parallel region; (0, 1) without OpenMP
struct TeamSlot {
  int tid, team;
};
TeamSlot team_slot() {
#ifdef _OPENMP
  return {omp_get_thread_num(), omp_get_num_threads()};
#else
  return {0, 1};
#endif
}

void check(const torch::Tensor& t, torch::ScalarType dtype, int64_t numel, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.numel() == numel, name, " has ", t.numel(), " elements, expected ", numel);
}

}  // namespace

// Philox4x32-10 on native uint32: counter (n, 4) and key (n, 2) int64 holding uint32 values.
torch::Tensor philox(torch::Tensor counter, torch::Tensor key) {
  counter = counter.to(torch::kInt64).contiguous();
  key = key.to(torch::kInt64).contiguous();
  TORCH_CHECK(counter.dim() == 2 && counter.size(1) == 4, "counter must be (n, 4)");
  TORCH_CHECK(key.dim() == 2 && key.size(1) == 2 && key.size(0) == counter.size(0), "key must be (n, 2)");
  const int64_t n = counter.size(0);
  auto out = torch::empty({n, 4}, torch::kInt64);
  const int64_t* c = counter.data_ptr<int64_t>();
  const int64_t* k = key.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    Words w = dtb::philox4x32_10(static_cast<uint32_t>(c[4 * i]), static_cast<uint32_t>(c[4 * i + 1]),
                            static_cast<uint32_t>(c[4 * i + 2]), static_cast<uint32_t>(c[4 * i + 3]),
                            static_cast<uint32_t>(k[2 * i]), static_cast<uint32_t>(k[2 * i + 1]));
    for (int j = 0; j < 4; ++j) o[4 * i + j] = static_cast<int64_t>(w.w[j]);
  }
  return out;
}

// Advance the state (V, J, I_ou, refractory; modified in place) by n_steps steps.
// Per-neuron parameter tables are (M, N) or, when all members share them, (1, N), contiguous;
// member_strides gives each table's member stride (N or 0), in the order g_L, gLVL, V_th,
// V_reset, dt_over_C, n_ref, ou_a, ou_mu, ou_b_sigma, i_ext, k_pois, p_index, g (g is
// (R, M, N) or (R, 1, N)).  Shared tables are read once per neuron, not once per member.
// Poisson counts come from integer threshold tables (dtb/sim/backends/poisson_tables.py):
// p_index (M, N) int32 row of each neuron, p_base (T,), p_length (T,), p_thr (T, L) int32
// holding uint32 bit patterns.  id_lo, id_hi (N,) int32 hold the words of global neuron ids.
// sample_slot (N,) int64: -1, or the column of the neuron in the sample tensors
// V_s (S, M, C), J_s (S, M, R, C), Isyn_s (S, M, R, C), Ibg_s (S, M, C), where S counts
// the steps of this call with (step + 1) % sample_every == 0.  With consume_drive the drive
// slots read are zeroed, so the drive is ready for the next delivery without a clearing pass.
// Returns the spikes as (n, 3) int64 rows (step in the call, member, neuron) in the order of
// torch.nonzero on an (n_steps, M, N) mask; the result does not depend on the thread count.
torch::Tensor integrate(torch::Tensor V, torch::Tensor J, torch::Tensor I_ou, torch::Tensor refractory,
                        torch::Tensor drive, int64_t drive_offset, bool consume_drive, torch::Tensor g,
                        torch::Tensor g_L, torch::Tensor gLVL, torch::Tensor V_th, torch::Tensor V_reset,
                        torch::Tensor dt_over_C, torch::Tensor n_ref, torch::Tensor ou_a, torch::Tensor ou_mu,
                        torch::Tensor ou_b_sigma, torch::Tensor i_ext, torch::Tensor k_pois, torch::Tensor p_index,
                        std::vector<int64_t> member_strides, torch::Tensor p_base, torch::Tensor p_length,
                        torch::Tensor p_thr, std::vector<double> decay,
                        std::vector<double> E_rev, std::vector<int64_t> receptor_kind, torch::Tensor key0,
                        torch::Tensor key1, torch::Tensor id_lo, torch::Tensor id_hi, bool exponential_euler,
                        bool ou_on, bool poisson_on, int64_t step0, int64_t n_steps, torch::Tensor sample_slot,
                        int64_t sample_every, torch::Tensor V_s, torch::Tensor J_s, torch::Tensor Isyn_s,
                        torch::Tensor Ibg_s, torch::Tensor population, torch::Tensor counts, int64_t count_phase,
                        int64_t count_bin_steps) {
  TORCH_CHECK(V.dim() == 2, "V must be (M, N)");
  const int64_t M = V.size(0), N = V.size(1), MN = M * N;
  const int R = static_cast<int>(J.size(0));
  TORCH_CHECK(R >= 1 && R <= kMaxReceptors, "between 1 and ", kMaxReceptors, " receptors supported, got ", R);
  TORCH_CHECK(static_cast<int>(decay.size()) == R && static_cast<int>(E_rev.size()) == R &&
                  static_cast<int>(receptor_kind.size()) == R,
              "decay, E_rev and receptor_kind need one entry per receptor");
  TORCH_CHECK(drive.dim() == 4 && drive.size(1) == 2 && drive.size(2) == M && drive.size(3) == N,
              "drive must be (D, 2, M, N)");
  TORCH_CHECK(drive_offset >= 0 && drive_offset + n_steps <= drive.size(0), "drive slots out of range");
  check(V, torch::kFloat32, MN, "V");
  check(J, torch::kFloat32, R * MN, "J");
  check(I_ou, torch::kFloat32, MN, "I_ou");
  check(refractory, torch::kInt32, MN, "refractory");
  check(drive, torch::kInt32, drive.size(0) * 2 * MN, "drive");
  constexpr int kTables = 13;
  TORCH_CHECK(static_cast<int>(member_strides.size()) == kTables, "member_strides needs ", kTables, " entries");
  for (const int64_t st : member_strides) TORCH_CHECK(st == 0 || st == N, "member strides must be 0 or N");
  // numel of a per-neuron table with member stride st
  auto table_numel = [&](int64_t st) { return st ? MN : N; };
  const int64_t* ms = member_strides.data();
  struct TableArg {
    const torch::Tensor* tensor;
    torch::ScalarType dtype;
    const char* name;
  };
  const TableArg per_neuron[kTables - 1] = {  // in the order of member_strides
      {&g_L, torch::kFloat32, "g_L"},       {&gLVL, torch::kFloat32, "gLVL"},
      {&V_th, torch::kFloat32, "V_th"},     {&V_reset, torch::kFloat32, "V_reset"},
      {&dt_over_C, torch::kFloat32, "dt_over_C"}, {&n_ref, torch::kInt32, "n_ref"},
      {&ou_a, torch::kFloat32, "ou_a"},     {&ou_mu, torch::kFloat32, "ou_mu"},
      {&ou_b_sigma, torch::kFloat32, "ou_b_sigma"}, {&i_ext, torch::kFloat32, "i_ext"},
      {&k_pois, torch::kInt32, "poisson_k"}, {&p_index, torch::kInt32, "poisson table index"}};
  for (int k = 0; k < kTables - 1; ++k)
    check(*per_neuron[k].tensor, per_neuron[k].dtype, table_numel(ms[k]), per_neuron[k].name);
  check(g, torch::kFloat32, R * table_numel(ms[12]), "g");
  const int64_t g_plane = table_numel(ms[12]);  // stride of one receptor in g
  const int64_t n_tables = p_base.numel();
  check(p_base, torch::kInt32, n_tables, "poisson table base");
  check(p_length, torch::kInt32, n_tables, "poisson table length");
  TORCH_CHECK(p_thr.dim() == 2 && p_thr.size(0) == n_tables, "poisson thresholds must be (T, L)");
  check(p_thr, torch::kInt32, p_thr.numel(), "poisson thresholds");
  const int width = static_cast<int>(p_thr.size(1));
  check(key0, torch::kInt64, M, "key0");
  check(key1, torch::kInt64, M, "key1");
  check(id_lo, torch::kInt32, N, "id_lo");
  check(id_hi, torch::kInt32, N, "id_hi");
  check(sample_slot, torch::kInt64, N, "sample_slot");
  const int64_t C = V_s.dim() == 3 ? V_s.size(2) : 0;
  const int64_t S = V_s.dim() == 3 ? V_s.size(0) : 0;
  check(V_s, torch::kFloat32, S * M * C, "V_s");
  check(J_s, torch::kFloat32, S * M * R * C, "J_s");
  check(Isyn_s, torch::kFloat32, S * M * R * C, "Isyn_s");
  check(Ibg_s, torch::kFloat32, S * M * C, "Ibg_s");
  TORCH_CHECK(sample_every >= 1, "sample_every must be >= 1");
  // optional spike counts per (bin, member, population): step t of this call adds to bin
  // (count_phase + t) / count_bin_steps of counts (B, M, P) int32; population (N,) int32
  const bool counting = counts.numel() > 0;
  int64_t n_bins = 0, n_pops = 0;
  if (counting) {
    TORCH_CHECK(counts.dim() == 3 && counts.size(1) == M, "counts must be (bins, M, populations)");
    n_bins = counts.size(0);
    n_pops = counts.size(2);
    check(counts, torch::kInt32, counts.numel(), "counts");
    check(population, torch::kInt32, N, "population");
    TORCH_CHECK(count_bin_steps >= 1 && count_phase >= 0, "count_bin_steps must be >= 1 and count_phase >= 0");
    TORCH_CHECK((count_phase + n_steps - 1) / count_bin_steps < n_bins || n_steps == 0,
                "counts has ", n_bins, " bins, too few for ", n_steps, " steps from phase ", count_phase);
  }

  float* Vp = V.data_ptr<float>();
  float* Jp = J.data_ptr<float>();
  float* Ip = I_ou.data_ptr<float>();
  int32_t* refp = refractory.data_ptr<int32_t>();
  int32_t* drv = drive.data_ptr<int32_t>();
  const float* gp = g.data_ptr<float>();
  const float *gLp = g_L.data_ptr<float>(), *gLVLp = gLVL.data_ptr<float>(), *Vthp = V_th.data_ptr<float>();
  const float *Vrp = V_reset.data_ptr<float>(), *dtCp = dt_over_C.data_ptr<float>();
  const int32_t* nrefp = n_ref.data_ptr<int32_t>();
  const float *oap = ou_a.data_ptr<float>(), *omup = ou_mu.data_ptr<float>(), *obp = ou_b_sigma.data_ptr<float>();
  const float* iextp = i_ext.data_ptr<float>();
  const int32_t* kp = k_pois.data_ptr<int32_t>();
  const int32_t *pidx = p_index.data_ptr<int32_t>(), *pbase = p_base.data_ptr<int32_t>();
  const int32_t* plen = p_length.data_ptr<int32_t>();
  const uint32_t* pthr = reinterpret_cast<const uint32_t*>(p_thr.data_ptr<int32_t>());
  const int64_t *k0p = key0.data_ptr<int64_t>(), *k1p = key1.data_ptr<int64_t>();
  const int32_t *idlo = id_lo.data_ptr<int32_t>(), *idhi = id_hi.data_ptr<int32_t>();
  const int64_t* slotp = sample_slot.data_ptr<int64_t>();
  float *Vsp = V_s.data_ptr<float>(), *Jsp = J_s.data_ptr<float>(), *Isp = Isyn_s.data_ptr<float>();
  float* Ibp = Ibg_s.data_ptr<float>();

  dtb::Receptors rc;
  rc.R = R;
  for (int u = 0; u < R; ++u) {
    rc.decay[u] = static_cast<float>(decay[u]);
    rc.E_rev[u] = static_cast<float>(E_rev[u]);
    rc.kind[u] = static_cast<int>(receptor_kind[u]);
    TORCH_CHECK(rc.kind[u] == 0 || rc.kind[u] == 1, "receptor kind must be 0 (E) or 1 (I)");
  }
  const bool need_words = ou_on || poisson_on;
  // row of each step in the sample tensors, -1 when the step is not sampled
  std::vector<int64_t> sample_row(static_cast<size_t>(n_steps), -1);
  for (int64_t t = 0, row = 0; t < n_steps; ++t)
    if ((step0 + t + 1) % sample_every == 0) sample_row[static_cast<size_t>(t)] = row++;
  const int64_t* srows = sample_row.data();

  // work units: blocks of kBlock neurons of one member
  constexpr int64_t kBlock = 8;
  const int64_t blocks_per_member = (N + kBlock - 1) / kBlock, units = M * blocks_per_member;
  std::vector<uint8_t> block_sampled(static_cast<size_t>(blocks_per_member), 0);
  for (int64_t i = 0; i < N; ++i)
    if (slotp[i] >= 0) block_sampled[static_cast<size_t>(i / kBlock)] = 1;
  const int threads = num_threads();
  // spikes[thread][step]: flat indices m * N + i found by that thread, ascending
  std::vector<std::vector<std::vector<int64_t>>> found(
      static_cast<size_t>(threads), std::vector<std::vector<int64_t>>(static_cast<size_t>(n_steps)));

  // one neuron, all steps, scalar (lif_common.h)
  auto scalar_neuron = [&](int64_t m, int64_t i, std::vector<std::vector<int64_t>>& out) {
    const int64_t mi = m * N + i;
    float v = Vp[mi], iou = Ip[mi];
    int32_t ref = refp[mi];
    float Jl[kMaxReceptors], gl[kMaxReceptors];
    for (int u = 0; u < R; ++u) {
      Jl[u] = Jp[u * MN + mi];
      gl[u] = gp[u * g_plane + m * ms[12] + i];
    }
    dtb::LifParams lp;
    lp.g_L = gLp[m * ms[0] + i];
    lp.gLVL = gLVLp[m * ms[1] + i];
    lp.V_th = Vthp[m * ms[2] + i];
    lp.V_reset = Vrp[m * ms[3] + i];
    lp.dt_over_C = dtCp[m * ms[4] + i];
    lp.n_ref = nrefp[m * ms[5] + i];
    lp.ou_a = oap[m * ms[6] + i];
    lp.ou_mu = omup[m * ms[7] + i];
    lp.ou_b_sigma = obp[m * ms[8] + i];
    lp.i_ext = iextp[m * ms[9] + i];
    lp.k_pois = kp[m * ms[10] + i];
    const int32_t tab = pidx[m * ms[11] + i];
    const uint32_t* thr = pthr + static_cast<int64_t>(tab) * width;
    const uint32_t k0 = static_cast<uint32_t>(k0p[m]), k1 = static_cast<uint32_t>(k1p[m]);
    const uint32_t c0 = static_cast<uint32_t>(idlo[i]), c1 = static_cast<uint32_t>(idhi[i]);
    const int64_t col = slotp[i];
    for (int64_t t = 0; t < n_steps; ++t) {
      float xi = 0.0f;
      int32_t n_pois = 0;
      if (need_words) {
        const Words w = dtb::step_words(c0, c1, step0 + t, k0, k1);
        if (ou_on) xi = dtb::normal_from_uint32(w.w[0], w.w[1]);
        if (poisson_on) n_pois = dtb::poisson_from_thresholds(w.w[2], pbase[tab], thr, plen[tab]);
      }
      int32_t* slot = drv + (drive_offset + t) * 2 * MN;
      int32_t exc = slot[mi];
      const int32_t inh = slot[MN + mi];
      if (consume_drive) {  // zero what is not zero already: a clean cache line stays clean
        if (exc) slot[mi] = 0;
        if (inh) slot[MN + mi] = 0;
      }
      if (poisson_on) exc = exc + n_pois * lp.k_pois;
      if (dtb::lif_substep(v, Jl, iou, ref, gl, rc, lp, exponential_euler, ou_on, exc, inh, xi))
        out[static_cast<size_t>(t)].push_back(mi);
      if (col >= 0) {
        const int64_t srow = srows[t];
        if (srow >= 0) {
          const int64_t base = (srow * M + m) * C + col;
          Vsp[base] = v;
          Ibp[base] = iou;
          for (int u = 0; u < R; ++u) {
            const int64_t jb = ((srow * M + m) * R + u) * C + col;
            Jsp[jb] = Jl[u];
            Isp[jb] = (gl[u] * Jl[u]) * (rc.E_rev[u] - v);
          }
        }
      }
    }
    Vp[mi] = v;
    Ip[mi] = iou;
    refp[mi] = ref;
    for (int u = 0; u < R; ++u) Jp[u * MN + mi] = Jl[u];
  };

#if defined(__AVX2__)
  // 8 neurons of one member, all steps, in AVX2 registers (cpu_block.h); lane-wise the scalar path
  auto vector_block = [&](int64_t m, int64_t i0, std::vector<std::vector<int64_t>>& out) {
    using namespace dtb::avx2;
    const int64_t mi0 = m * N + i0;
    __m256 v = _mm256_loadu_ps(Vp + mi0), iou = _mm256_loadu_ps(Ip + mi0);
    __m256i ref = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(refp + mi0));
    __m256 Jv[kMaxReceptors], gv[kMaxReceptors], dec[kMaxReceptors], Ev[kMaxReceptors];
    for (int u = 0; u < R; ++u) {
      Jv[u] = _mm256_loadu_ps(Jp + u * MN + mi0);
      gv[u] = _mm256_loadu_ps(gp + u * g_plane + m * ms[12] + i0);
      dec[u] = _mm256_set1_ps(rc.decay[u]);
      Ev[u] = _mm256_set1_ps(rc.E_rev[u]);
    }
    const __m256 gL = _mm256_loadu_ps(gLp + m * ms[0] + i0), gLVL_ = _mm256_loadu_ps(gLVLp + m * ms[1] + i0);
    const __m256 vth = _mm256_loadu_ps(Vthp + m * ms[2] + i0), vreset = _mm256_loadu_ps(Vrp + m * ms[3] + i0);
    const __m256 dtC = _mm256_loadu_ps(dtCp + m * ms[4] + i0);
    const __m256i nref = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nrefp + m * ms[5] + i0));
    const __m256 oa = _mm256_loadu_ps(oap + m * ms[6] + i0), omu = _mm256_loadu_ps(omup + m * ms[7] + i0);
    const __m256 ob = _mm256_loadu_ps(obp + m * ms[8] + i0), iext = _mm256_loadu_ps(iextp + m * ms[9] + i0);
    const __m256i kpois = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kp + m * ms[10] + i0));
    const __m256i tab = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pidx + m * ms[11] + i0));
    const __m256i tab_base = _mm256_i32gather_epi32(pbase, tab, 4);
    const __m256i tab_row = _mm256_mullo_epi32(tab, _mm256_set1_epi32(width));
    // one table for all 8 lanes: broadcast its thresholds rather than gather them
    const int32_t tab0 = pidx[m * ms[11] + i0];
    const bool one_table = _mm256_movemask_epi8(_mm256_cmpeq_epi32(tab, _mm256_set1_epi32(tab0))) == -1;
    const uint32_t* row0 = pthr + static_cast<int64_t>(tab0) * width;
    const int len0 = plen[tab0];
    const __m256i id0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idlo + i0));
    const __m256i id1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idhi + i0));
    const uint32_t k0 = static_cast<uint32_t>(k0p[m]), k1 = static_cast<uint32_t>(k1p[m]);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 w255 = _mm256_set1_ps(255.0f);
    const __m256i zero = _mm256_setzero_si256(), minus_one = _mm256_set1_epi32(-1);
    // the random words and normals of a chunk of steps first: they depend on the step index only,
    // so the long float64 Box-Muller chains of successive steps overlap instead of stalling
    constexpr int64_t kChunk = 16;
    __m256 xi_chunk[kChunk];
    __m256i w2_chunk[kChunk];
    for (int64_t t = 0; t < n_steps; ++t) {
      const int64_t in_chunk = t % kChunk;
      if (need_words && in_chunk == 0) {
        const int64_t len = std::min(kChunk, n_steps - t);
        for (int64_t c = 0; c < len; ++c) {
          __m256i c0 = id0, c1 = id1, c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(step0 + t + c)));
          __m256i c3 = _mm256_set1_epi32(static_cast<int>(dtb::kStreamStep));
          philox8(c0, c1, c2, c3, k0, k1);
          xi_chunk[c] = ou_on ? normal8(c0, c1) : _mm256_setzero_ps();  // lane-wise dtb::normal_from_uint32
          w2_chunk[c] = c2;
        }
      }
      __m256 xi = _mm256_setzero_ps();
      __m256i n_pois = zero;
      if (need_words) {
        xi = xi_chunk[in_chunk];
        if (poisson_on)
          n_pois = one_table ? poisson8_shared(w2_chunk[in_chunk], tab_base, row0, len0)
                             : poisson8(w2_chunk[in_chunk], tab_base, tab_row, pthr, width);
      }
      // membrane
      const __m256i integrating = _mm256_cmpeq_epi32(ref, zero);
      __m256 G = gL, cur = gLVL_;
      for (int u = 0; u < R; ++u) {
        const __m256 gJ = _mm256_mul_ps(gv[u], Jv[u]);
        G = _mm256_add_ps(G, gJ);
        cur = _mm256_add_ps(cur, _mm256_mul_ps(gJ, Ev[u]));
      }
      cur = _mm256_add_ps(cur, iou);
      cur = _mm256_add_ps(cur, iext);
      __m256 v_new;
      if (exponential_euler) {
        const __m256 V_inf = _mm256_div_ps(cur, G);
        const __m256 factor = exp_contract8(_mm256_xor_ps(_mm256_mul_ps(dtC, G), sign));
        v_new = _mm256_add_ps(V_inf, _mm256_mul_ps(_mm256_sub_ps(v, V_inf), factor));
      } else {
        v_new = _mm256_add_ps(v, _mm256_mul_ps(dtC, _mm256_sub_ps(cur, _mm256_mul_ps(G, v))));
      }
      v = _mm256_blendv_ps(v, v_new, _mm256_castsi256_ps(integrating));
      ref = _mm256_add_epi32(ref, _mm256_andnot_si256(integrating, minus_one));
      // synapses
      int32_t* slot = drv + (drive_offset + t) * 2 * MN;
      __m256i exc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(slot + mi0));
      const __m256i inh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(slot + MN + mi0));
      if (consume_drive) {  // zero what is not zero already: a clean cache line stays clean
        if (!_mm256_testz_si256(exc, exc)) _mm256_storeu_si256(reinterpret_cast<__m256i*>(slot + mi0), zero);
        if (!_mm256_testz_si256(inh, inh))
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(slot + MN + mi0), zero);
      }
      if (poisson_on) exc = _mm256_add_epi32(exc, _mm256_mullo_epi32(n_pois, kpois));
      const __m256 in_e = _mm256_div_ps(_mm256_cvtepi32_ps(exc), w255);
      const __m256 in_i = _mm256_div_ps(_mm256_cvtepi32_ps(inh), w255);
      for (int u = 0; u < R; ++u) Jv[u] = _mm256_add_ps(_mm256_mul_ps(Jv[u], dec[u]), rc.kind[u] ? in_i : in_e);
      // OU
      if (ou_on) {
        const __m256 drift = _mm256_add_ps(iou, _mm256_mul_ps(oa, _mm256_sub_ps(omu, iou)));
        iou = _mm256_add_ps(drift, _mm256_mul_ps(ob, xi));
      }
      // threshold, reset
      const __m256 spike = _mm256_and_ps(_mm256_castsi256_ps(integrating), _mm256_cmp_ps(v, vth, _CMP_GE_OQ));
      v = _mm256_blendv_ps(v, vreset, spike);
      ref = _mm256_blendv_epi8(ref, nref, _mm256_castps_si256(spike));
      int bits = _mm256_movemask_ps(spike);
      while (bits) {
        const int l = __builtin_ctz(bits);
        out[static_cast<size_t>(t)].push_back(mi0 + l);
        bits &= bits - 1;
      }
    }
    _mm256_storeu_ps(Vp + mi0, v);
    _mm256_storeu_ps(Ip + mi0, iou);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(refp + mi0), ref);
    for (int u = 0; u < R; ++u) _mm256_storeu_ps(Jp + u * MN + mi0, Jv[u]);
  };
#endif

#pragma omp parallel num_threads(threads)
  {
    const auto [tid, team] = team_slot();
    auto& out = found[static_cast<size_t>(tid)];
    const int64_t first = units * tid / team, last = units * (tid + 1) / team;
    for (int64_t unit = first; unit < last; ++unit) {
      const int64_t m = unit / blocks_per_member, b = unit - m * blocks_per_member;
      const int64_t i0 = b * kBlock, i1 = std::min(N, i0 + kBlock);
#if defined(__AVX2__)
      if (i1 - i0 == kBlock && !block_sampled[static_cast<size_t>(b)]) {
        vector_block(m, i0, out);
        continue;
      }
#endif
      for (int64_t i = i0; i < i1; ++i) scalar_neuron(m, i, out);
    }
  }

  int64_t total = 0;
  for (const auto& per_thread : found)
    for (const auto& bucket : per_thread) total += static_cast<int64_t>(bucket.size());
  auto rows = torch::empty({total, 3}, torch::kInt64);
  int64_t* r = rows.data_ptr<int64_t>();
  int32_t* cnt = counting ? counts.data_ptr<int32_t>() : nullptr;
  const int32_t* pop = counting ? population.data_ptr<int32_t>() : nullptr;
  for (int64_t t = 0; t < n_steps; ++t) {
    int32_t* bin = counting ? cnt + ((count_phase + t) / count_bin_steps) * M * n_pops : nullptr;
    for (const auto& per_thread : found)
      for (const int64_t mi : per_thread[static_cast<size_t>(t)]) {
        const int64_t m = mi / N, i = mi - m * N;
        r[0] = t;
        r[1] = m;
        r[2] = i;
        r += 3;
        if (counting) bin[m * n_pops + pop[i]] += 1;
      }
  }
  return rows;
}

// exp_contract on a float32 tensor, through the vector path where this build has one.
torch::Tensor exp_contract(torch::Tensor x) {
  x = x.contiguous();
  check(x, torch::kFloat32, x.numel(), "x");
  auto out = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t n = x.numel();
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, dtb::avx2::exp_contract8(_mm256_loadu_ps(xp + i)));
#endif
  for (; i < n; ++i) o[i] = dtb::exp_contract(xp[i]);
  return out;
}

// The machine-independent float64 functions of lif_common.h on a float64 tensor (which: 0 log_f64,
// 1 cos_2pi_f64), for the tests against dtb.fpmath.
torch::Tensor fpmath(torch::Tensor x, int64_t which) {
  x = x.contiguous();
  check(x, torch::kFloat64, x.numel(), "x");
  TORCH_CHECK(which >= 0 && which <= 2, "which must be 0 (log_f64), 1 (cos_2pi_f64) or 2 (exp_f64)");
  auto out = torch::empty_like(x);
  const double* xp = x.data_ptr<double>();
  double* o = out.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); ++i)
    o[i] = which == 0 ? dtb::log_f64(xp[i]) : (which == 1 ? dtb::cos_2pi_f64(xp[i]) : dtb::exp_f64(xp[i]));
  return out;
}

// pow_f64 (dtb.fpmath.pow) of float64 tensors of one shape, for the tests.
torch::Tensor pow_f64(torch::Tensor x, torch::Tensor y) {
  x = x.contiguous();
  y = y.contiguous();
  check(x, torch::kFloat64, x.numel(), "x");
  check(y, torch::kFloat64, x.numel(), "y");
  auto out = torch::empty_like(x);
  const double *xp = x.data_ptr<double>(), *yp = y.data_ptr<double>();
  double* o = out.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); ++i) o[i] = dtb::pow_f64(xp[i], yp[i]);
  return out;
}

// normal_from_uint32 of word pairs (a, b) (n,) int64 holding uint32 values: through the 8-lane
// AVX2 path (vector, where built; the tail scalar) or the scalar path, for the tests.
torch::Tensor normal_words(torch::Tensor a, torch::Tensor b, bool vector) {
  a = a.to(torch::kInt64).contiguous();
  b = b.to(torch::kInt64).contiguous();
  const int64_t n = a.numel();
  check(b, torch::kInt64, n, "b");
  auto out = torch::empty({n}, torch::kFloat32);
  const int64_t *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  int64_t i = 0;
#if defined(__AVX2__)
  if (vector) {
    alignas(32) int32_t la[8], lb[8];
    for (; i + 8 <= n; i += 8) {
      for (int l = 0; l < 8; ++l) {
        la[l] = static_cast<int32_t>(static_cast<uint32_t>(ap[i + l]));
        lb[l] = static_cast<int32_t>(static_cast<uint32_t>(bp[i + l]));
      }
      _mm256_storeu_ps(o + i, dtb::avx2::normal8(_mm256_load_si256(reinterpret_cast<const __m256i*>(la)),
                                                 _mm256_load_si256(reinterpret_cast<const __m256i*>(lb))));
    }
  }
#endif
  for (; i < n; ++i) o[i] = dtb::normal_from_uint32(static_cast<uint32_t>(ap[i]), static_cast<uint32_t>(bp[i]));
  return out;
}

// Balloon constants from the binding's list (eps, tau_s, tau_f, tau_0, 1/alpha, E_0, V_0, dt, u_floor,
// log(1 - E_0)).
dtb::BalloonConst balloon_const(const std::vector<double>& c) {
  TORCH_CHECK(c.size() == 10, "Balloon constants: 10 values expected, got ", c.size());
  return dtb::BalloonConst{c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]};
}

void check_balloon_state(const torch::Tensor& s, const torch::Tensor& f, const torch::Tensor& v,
                         const torch::Tensor& q, int64_t K) {
  check(s, torch::kFloat64, K, "s");
  check(f, torch::kFloat64, K, "f");
  check(v, torch::kFloat64, K, "v");
  check(q, torch::kFloat64, K, "q");
}

// Integrate the Balloon model over a window of T steps for K independent states (s, f, v, q: K
// float64 each, updated in place) with input u (T, K) float64; y (T, K) float64 receives the BOLD
// signal after every step (or, with y of K elements, after the last step only).  Each state's steps
// run in order; states are independent, so threads change nothing.
void balloon_window(torch::Tensor s, torch::Tensor f, torch::Tensor v, torch::Tensor q, torch::Tensor u,
                    std::vector<double> constants, torch::Tensor y) {
  const int64_t K = s.numel();
  TORCH_CHECK(u.dim() >= 1 && (K == 0 || u.numel() % K == 0), "u must be (T, K)");
  const int64_t T = K ? u.numel() / K : 0;
  check(u, torch::kFloat64, T * K, "u");
  check_balloon_state(s, f, v, q, K);
  const bool every = y.numel() == T * K && T != 1;
  TORCH_CHECK(every || y.numel() == K, "y must have T * K or K elements");
  check(y, torch::kFloat64, y.numel(), "y");
  const dtb::BalloonConst p = balloon_const(constants);
  double *sp = s.data_ptr<double>(), *fp = f.data_ptr<double>(), *vp = v.data_ptr<double>(), *qp = q.data_ptr<double>();
  const double* up = u.data_ptr<double>();
  double* yp = y.data_ptr<double>();
  const int threads = T * K > 50000 ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t k = 0; k < K; ++k) {
    double S = sp[k], F = fp[k], V = vp[k], Q = qp[k];
    for (int64_t t = 0; t < T; ++t) {
      dtb::balloon_step_f64(S, F, V, Q, up[t * K + k], p);
      if (every) yp[t * K + k] = dtb::bold_signal_f64(Q, V, p);
    }
    if (!every) yp[k] = dtb::bold_signal_f64(Q, V, p);
    sp[k] = S;
    fp[k] = F;
    vp[k] = V;
    qp[k] = Q;
  }
}

// balloon_window with the input made from spike counts (T, M, P) int32: the fraction of state
// (m, r) at step t is (the integer sum of counts[t, m, p] over the populations p of region r) /
// region_neurons[r], the same bits as (counts @ membership) / region_neurons in float64 (integer
// sums are exact).  population_region (P,) int64; states (M, R) float64; y (M, R): BOLD at the end.
void balloon_window_counts(torch::Tensor s, torch::Tensor f, torch::Tensor v, torch::Tensor q, torch::Tensor counts,
                           torch::Tensor population_region, torch::Tensor region_neurons,
                           std::vector<double> constants, torch::Tensor y) {
  TORCH_CHECK(counts.dim() == 3, "counts must be (T, M, P)");
  const int64_t T = counts.size(0), M = counts.size(1), P = counts.size(2), R = region_neurons.numel();
  check(counts, torch::kInt32, T * M * P, "counts");
  check(population_region, torch::kInt64, P, "population_region");
  check(region_neurons, torch::kFloat64, R, "region_neurons");
  check_balloon_state(s, f, v, q, M * R);
  check(y, torch::kFloat64, M * R, "y");
  const int64_t* pr = population_region.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(R));  // populations of each region
  for (int64_t pi = 0; pi < P; ++pi) {
    TORCH_CHECK(pr[pi] >= 0 && pr[pi] < R, "population_region out of range");
    members[static_cast<size_t>(pr[pi])].push_back(pi);
  }
  const dtb::BalloonConst p = balloon_const(constants);
  double *sp = s.data_ptr<double>(), *fp = f.data_ptr<double>(), *vp = v.data_ptr<double>(), *qp = q.data_ptr<double>();
  const int32_t* cp = counts.data_ptr<int32_t>();
  const double* rn = region_neurons.data_ptr<double>();
  double* yp = y.data_ptr<double>();
  const int threads = T * M * R > 50000 ? num_threads() : 1;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t k = 0; k < M * R; ++k) {
    const int64_t m = k / R, r = k - m * R;
    const auto& pops = members[static_cast<size_t>(r)];
    double S = sp[k], F = fp[k], V = vp[k], Q = qp[k];
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* row = cp + (t * M + m) * P;
      int64_t spikes = 0;
      for (const int64_t pi : pops) spikes += row[pi];
      dtb::balloon_step_f64(S, F, V, Q, static_cast<double>(spikes) / rn[r], p);
    }
    yp[k] = dtb::bold_signal_f64(Q, V, p);
    sp[k] = S;
    fp[k] = F;
    vp[k] = V;
    qp[k] = Q;
  }
}

// Poisson counts from threshold tables for words (n,) int64 and table rows (n,) int32.
torch::Tensor poisson_counts(torch::Tensor words, torch::Tensor rows, torch::Tensor p_base, torch::Tensor p_length,
                             torch::Tensor p_thr) {
  words = words.to(torch::kInt64).contiguous();
  rows = rows.to(torch::kInt32).contiguous();
  const int64_t n = words.numel();
  check(rows, torch::kInt32, n, "rows");
  check(p_thr, torch::kInt32, p_thr.numel(), "p_thr");
  const int width = static_cast<int>(p_thr.size(1));
  const int32_t *base = p_base.data_ptr<int32_t>(), *len = p_length.data_ptr<int32_t>();
  const uint32_t* thr = reinterpret_cast<const uint32_t*>(p_thr.data_ptr<int32_t>());
  auto out = torch::empty({n}, torch::kInt32);
  const int64_t* w = words.data_ptr<int64_t>();
  const int32_t* rp = rows.data_ptr<int32_t>();
  int32_t* o = out.data_ptr<int32_t>();
  int64_t i = 0;
#if defined(__AVX2__)
  alignas(32) int32_t wl[8];
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) wl[l] = static_cast<int32_t>(static_cast<uint32_t>(w[i + l]));
    const __m256i tab = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rp + i));
    const __m256i counts = dtb::avx2::poisson8(_mm256_load_si256(reinterpret_cast<const __m256i*>(wl)),
                                               _mm256_i32gather_epi32(base, tab, 4),
                                               _mm256_mullo_epi32(tab, _mm256_set1_epi32(width)), thr, width);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), counts);
  }
#endif
  for (; i < n; ++i)
    o[i] = dtb::poisson_from_thresholds(static_cast<uint32_t>(w[i]), base[rp[i]],
                                        thr + static_cast<int64_t>(rp[i]) * width, len[rp[i]]);
  return out;
}

bool has_avx2() {
#if defined(__AVX2__)
  return true;
#else
  return false;
#endif
}

// Delivery as a sparse-times-dense product over members: the spikes are grouped by
// (slot, source), and each group walks its source's CSR row once, adding every synapse's
// weight for all members in the group (the graph is read once per source, not per member).
// Threads (above 20,000 synapses) split the drive between them: by members when there are at
// least as many members as threads, else by (slot, kind) plane; atomic adds only when there
// are more threads than planes.  Integer sums: the result is the same for every split.
template <typename TargetT>
void deliver_impl(const int64_t* spikes, int64_t n, const int64_t* indptr, const TargetT* targets,
                  const uint8_t* weights, const int64_t* source_kind, int32_t* out, int64_t n_slots, int64_t M,
                  int64_t N) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) order[static_cast<size_t>(s)] = s;
  auto key = [&](int64_t s) { return std::make_pair(spikes[3 * s], spikes[3 * s + 2]); };
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return key(x) < key(y); });
  std::vector<int64_t> group_start;  // first index (into order) of each (slot, source) group
  int64_t edges = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t s = order[static_cast<size_t>(k)];
    if (k == 0 || key(s) != key(order[static_cast<size_t>(k - 1)])) group_start.push_back(k);
    edges += indptr[spikes[3 * s + 2] + 1] - indptr[spikes[3 * s + 2]];
  }
  group_start.push_back(n);
  const int64_t n_groups = static_cast<int64_t>(group_start.size()) - 1;
  const int threads = num_threads();
  const bool threaded = edges > 20000 && threads > 1;
  const int64_t plane = M * N;  // one (slot, kind) plane of the drive
  // Walk group gi's row once for its members in [m_lo, m_hi), if plane_tid owns its (slot, kind)
  // plane (planes dealt out round-robin to plane_team threads); atomic adds when other threads
  // may write the same entries.
  auto walk_group = [&](int64_t gi, int64_t m_lo, int64_t m_hi, int plane_tid, int plane_team, bool atomic) {
    const int64_t k0 = group_start[static_cast<size_t>(gi)], k1 = group_start[static_cast<size_t>(gi + 1)];
    const int64_t first = order[static_cast<size_t>(k0)];
    const int64_t source = spikes[3 * first + 2];
    const int64_t plane_index = spikes[3 * first] * 2 + source_kind[source];
    if (plane_index % plane_team != plane_tid) return;
    int32_t* base = out + plane_index * plane;
    int64_t member_offset[64];
    for (int64_t k = k0; k < k1;) {  // the group's members in range, in chunks of 64
      int64_t chunk = 0;
      for (; k < k1 && chunk < 64; ++k) {
        const int64_t m = spikes[3 * order[static_cast<size_t>(k)] + 1];
        if (m >= m_lo && m < m_hi) member_offset[chunk++] = m * N;
      }
      if (chunk == 0) continue;
      for (int64_t e = indptr[source]; e < indptr[source + 1]; ++e) {
        const int32_t w = static_cast<int32_t>(weights[e]);
        int32_t* target = base + static_cast<int64_t>(targets[e]);
        for (int64_t c = 0; c < chunk; ++c) {
          if (atomic) {
#pragma omp atomic
            target[member_offset[c]] += w;
          } else {
            target[member_offset[c]] += w;
          }
        }
      }
    }
  };
  if (!threaded) {
    for (int64_t gi = 0; gi < n_groups; ++gi) walk_group(gi, 0, M, 0, 1, false);
    return;
  }
  const bool by_member = M >= threads, by_plane = !by_member && 2 * n_slots >= threads;
  if (by_member || by_plane) {
    // Each thread owns part of the drive and adds only into it, so no two threads write the
    // same entry and no atomics are needed (atomic adds cost several times a plain add):
    // a range of members (an ensemble), or else every team-th (slot, kind) plane.  A row is
    // still read once for all of a thread's members in its group.
#pragma omp parallel num_threads(threads)
    {
      const auto [tid, team] = team_slot();
      for (int64_t gi = 0; gi < n_groups; ++gi) {
        if (by_member)
          walk_group(gi, M * tid / team, M * (tid + 1) / team, 0, 1, false);
        else
          walk_group(gi, 0, M, tid, team, false);
      }
    }
    return;
  }
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads)
  for (int64_t gi = 0; gi < n_groups; ++gi) walk_group(gi, 0, M, 0, 1, true);
}

// Integer delivery: out[slot, kind(source), member, target] += weight for every synapse.
void deliver(torch::Tensor spikes, torch::Tensor indptr, torch::Tensor targets, torch::Tensor weights,
             torch::Tensor source_kind, torch::Tensor out) {
  spikes = spikes.to(torch::kInt64).contiguous();
  TORCH_CHECK(spikes.dim() == 2 && spikes.size(1) == 3, "spikes must be (n, 3)");
  TORCH_CHECK(out.dim() == 4 && out.size(1) == 2 && out.scalar_type() == torch::kInt32 && out.is_contiguous(),
              "out must be a contiguous (D, 2, M, N) int32 tensor");
  check(indptr, torch::kInt64, indptr.numel(), "indptr");
  check(weights, torch::kUInt8, weights.numel(), "weights");
  check(source_kind, torch::kInt64, source_kind.numel(), "source_kind");
  TORCH_CHECK(targets.is_contiguous(), "targets must be contiguous");
  const int64_t n = spikes.size(0), M = out.size(2), N = out.size(3);
  if (n == 0) return;
  if (targets.scalar_type() == torch::kInt32) {
    deliver_impl(spikes.data_ptr<int64_t>(), n, indptr.data_ptr<int64_t>(), targets.data_ptr<int32_t>(),
                 weights.data_ptr<uint8_t>(), source_kind.data_ptr<int64_t>(), out.data_ptr<int32_t>(), out.size(0), M,
                 N);
  } else {
    TORCH_CHECK(targets.scalar_type() == torch::kInt64, "targets must be int32 or int64");
    deliver_impl(spikes.data_ptr<int64_t>(), n, indptr.data_ptr<int64_t>(), targets.data_ptr<int64_t>(),
                 weights.data_ptr<uint8_t>(), source_kind.data_ptr<int64_t>(), out.data_ptr<int32_t>(), out.size(0), M,
                 N);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("philox", &philox, "Philox4x32-10: counter (n, 4), key (n, 2) -> (n, 4) words in int64");
  m.def("integrate", &integrate, "Fused integration of one interval (arithmetic contract of dtb backends)");
  m.def("exp_contract", &exp_contract, "exp_contract of a float32 tensor (vector path where built)");
  m.def("fpmath", &fpmath, "log_f64 (which 0), cos_2pi_f64 (which 1) or exp_f64 (which 2) of a float64 tensor");
  m.def("pow_f64", &pow_f64, "pow_f64 (dtb.fpmath.pow) of two float64 tensors");
  m.def("normal_words", &normal_words, "normal_from_uint32 of word pairs, through the AVX2 path or the scalar one");
  m.def("balloon_window", &balloon_window, "Balloon-Windkessel over a window of inputs (T, K), states in place");
  m.def("balloon_window_counts", &balloon_window_counts,
        "Balloon-Windkessel over a window of spike counts (T, M, P), states (M, R) in place");
  m.def("poisson_counts", &poisson_counts, "Poisson counts from integer threshold tables");
  m.def("has_avx2", &has_avx2, "whether this build has the AVX2 8-lane path");
  m.def("deliver", &deliver, "Integer CSR delivery of spikes into the drive");
}
