// Fused CPU kernels of the dtb engine (plain C++ and OpenMP on raw pointers; the torch binding is
// cpu_binding.cpp, the interface cpu_kernels.h).
//
// `integrate` follows the arithmetic contract of dtb/sim/backends/base.py operation by
// operation in float32 (float64 only where the contract says so, rounded to float once),
// with each neuron's state held in registers across the steps of one interval.  Build
// with -ffp-contract=off and without -ffast-math (dtb/kernel_build.py): a fused multiply-add
// or a reassociated sum would change float results and break bitwise agreement with the
// torch backend.
#include "cpu_kernels.h"

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

namespace dtb::cpu {
namespace {

using dtb::kMaxReceptors;
using dtb::Words;

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

// Delivery as a sparse-times-dense product over members: the spikes are grouped by
// (slot, source), and each group walks its source's CSR row once, adding every synapse's
// weight for all members in the group (the graph is read once per source, not per member).
// Threads (above 20,000 synapses) split the drive between them: by members when there are at
// least as many members as threads, else by (slot, kind) plane; atomic adds only when there
// are more threads than planes.  Integer sums: the result is the same for every split.
template <typename TargetT>
void deliver_impl(const int64_t* spikes, int64_t n, const int64_t* indptr, const TargetT* targets,
                  const uint8_t* weights, const int64_t* source_kind, int32_t* out, int64_t n_slots, int64_t M,
                  int64_t N, int threads) {
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

}  // namespace

void philox(const int64_t* c, const int64_t* k, int64_t n, int64_t* o) {
  for (int64_t i = 0; i < n; ++i) {
    Words w = dtb::philox4x32_10(static_cast<uint32_t>(c[4 * i]), static_cast<uint32_t>(c[4 * i + 1]),
                            static_cast<uint32_t>(c[4 * i + 2]), static_cast<uint32_t>(c[4 * i + 3]),
                            static_cast<uint32_t>(k[2 * i]), static_cast<uint32_t>(k[2 * i + 1]));
    for (int j = 0; j < 4; ++j) o[4 * i + j] = static_cast<int64_t>(w.w[j]);
  }
}

void integrate(const IntegrateArgs& a, RowBuffer rows, void* context) {
  const int64_t M = a.M, N = a.N, MN = M * N;
  const dtb::Receptors rc = a.receptors;  // a local copy: no store through the state pointers can alias it
  const int R = rc.R;
  float* Vp = a.V;
  float* Jp = a.J;
  float* Ip = a.I_ou;
  int32_t* refp = a.refractory;
  int32_t* drv = a.drive;
  const int64_t drive_offset = a.drive_offset;
  const bool consume_drive = a.consume_drive;
  const float* gp = a.g;
  const float *gLp = a.g_L, *gLVLp = a.gLVL, *Vthp = a.V_th;
  const float *Vrp = a.V_reset, *dtCp = a.dt_over_C;
  const int32_t* nrefp = a.n_ref;
  const float *oap = a.ou_a, *omup = a.ou_mu, *obp = a.ou_b_sigma;
  const float* iextp = a.i_ext;
  const int32_t* kp = a.k_pois;
  const int32_t *pidx = a.p_index, *pbase = a.p_base;
  const int32_t* plen = a.p_length;
  const uint32_t* pthr = a.p_thr;
  const int width = a.p_width;
  const int64_t *k0p = a.key0, *k1p = a.key1;
  const int32_t *idlo = a.id_lo, *idhi = a.id_hi;
  const int64_t* slotp = a.sample_slot;
  float *Vsp = a.V_s, *Jsp = a.J_s, *Isp = a.Isyn_s;
  float* Ibp = a.Ibg_s;
  const int64_t C = a.sample_columns;
  const int64_t* ms = a.member_strides;
  const int64_t g_plane = ms[12] ? MN : N;  // stride of one receptor in g
  const bool exponential_euler = a.exponential_euler, ou_on = a.ou_on, poisson_on = a.poisson_on;
  const int64_t step0 = a.step0, n_steps = a.n_steps, sample_every = a.sample_every;
  const bool counting = a.counts != nullptr;
  const int64_t n_pops = a.n_pops, count_phase = a.count_phase, count_bin_steps = a.count_bin_steps;

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
  const int threads = std::max(1, a.threads);
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
  int64_t* r = rows(total, context);
  int32_t* cnt = a.counts;
  const int32_t* pop = a.population;
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
}

void exp_contract(const float* xp, float* o, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, dtb::avx2::exp_contract8(_mm256_loadu_ps(xp + i)));
#endif
  for (; i < n; ++i) o[i] = dtb::exp_contract(xp[i]);
}

void fpmath(const double* xp, double* o, int64_t n, int which) {
  for (int64_t i = 0; i < n; ++i)
    o[i] = which == 0 ? dtb::log_f64(xp[i]) : (which == 1 ? dtb::cos_2pi_f64(xp[i]) : dtb::exp_f64(xp[i]));
}

void pow_f64(const double* xp, const double* yp, double* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = dtb::pow_f64(xp[i], yp[i]);
}

void normal_words(const int64_t* ap, const int64_t* bp, float* o, int64_t n, bool vector) {
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
#else
  (void)vector;
#endif
  for (; i < n; ++i) o[i] = dtb::normal_from_uint32(static_cast<uint32_t>(ap[i]), static_cast<uint32_t>(bp[i]));
}

// Each state's steps run in order; states are independent, so threads change nothing.
void balloon_window(double* sp, double* fp, double* vp, double* qp, const double* up, int64_t T, int64_t K,
                    const BalloonConst& p, double* yp, bool every, int threads) {
  threads = T * K > 50000 ? std::max(1, threads) : 1;
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

// The input is the same bits as (counts @ membership) / region_neurons in float64 (integer sums
// are exact).
void balloon_window_counts(double* sp, double* fp, double* vp, double* qp, const int32_t* cp, int64_t T, int64_t M,
                           int64_t P, const int64_t* pr, const double* rn, int64_t R, const BalloonConst& p,
                           double* yp, int threads) {
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(R));  // populations of each region
  for (int64_t pi = 0; pi < P; ++pi) members[static_cast<size_t>(pr[pi])].push_back(pi);
  threads = T * M * R > 50000 ? std::max(1, threads) : 1;
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

void poisson_counts(const int64_t* w, const int32_t* rp, int64_t n, const int32_t* base, const int32_t* len,
                    const uint32_t* thr, int width, int32_t* o) {
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
}

bool has_avx2() {
#if defined(__AVX2__)
  return true;
#else
  return false;
#endif
}

void deliver(const int64_t* spikes, int64_t n, const int64_t* indptr, const int32_t* targets32,
             const int64_t* targets64, const uint8_t* weights, const int64_t* source_kind, int32_t* out,
             int64_t n_slots, int64_t M, int64_t N, int threads) {
  if (n == 0) return;
  threads = std::max(1, threads);
  if (targets32 != nullptr)
    deliver_impl(spikes, n, indptr, targets32, weights, source_kind, out, n_slots, M, N, threads);
  else
    deliver_impl(spikes, n, indptr, targets64, weights, source_kind, out, n_slots, M, N, threads);
}

}  // namespace dtb::cpu
