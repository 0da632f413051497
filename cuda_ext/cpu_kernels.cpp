// Fused CPU kernels of the dtb engine (torch C++ extension, OpenMP).
//
// `integrate` follows the arithmetic contract of dtb/sim/backends/base.py operation by
// operation in float32 (float64 only where the contract says so, rounded to float once),
// with each neuron's state held in registers across the steps of one interval.  Build
// with -ffp-contract=off and without -ffast-math: a fused multiply-add or a reassociated
// sum would change float results and break bitwise agreement with the torch backend.
#include <torch/extension.h>

#include "lif_common.h"

#include <cmath>
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
// Per-neuron parameters are (M, N) contiguous (the Python side expands (1, N) tables).
// sample_slot (N,) int64: -1, or the column of the neuron in the sample tensors
// V_s (S, M, C), J_s (S, M, R, C), Isyn_s (S, M, R, C), Ibg_s (S, M, C), where S counts
// the steps of this call with (step + 1) % sample_every == 0.  Returns spiked (n, M, N).
torch::Tensor integrate(torch::Tensor V, torch::Tensor J, torch::Tensor I_ou, torch::Tensor refractory,
                        torch::Tensor drive, int64_t drive_offset, torch::Tensor g, torch::Tensor g_L,
                        torch::Tensor gLVL, torch::Tensor V_th, torch::Tensor V_reset, torch::Tensor dt_over_C,
                        torch::Tensor n_ref, torch::Tensor ou_a, torch::Tensor ou_mu, torch::Tensor ou_b_sigma,
                        torch::Tensor i_ext, torch::Tensor lam, torch::Tensor p0, torch::Tensor k_pois,
                        int64_t max_events, std::vector<double> decay, std::vector<double> E_rev,
                        std::vector<int64_t> receptor_kind, torch::Tensor key0, torch::Tensor key1,
                        torch::Tensor id_lo, torch::Tensor id_hi, bool exponential_euler, bool ou_on,
                        bool poisson_on, int64_t step0, int64_t n_steps, torch::Tensor sample_slot,
                        int64_t sample_every, torch::Tensor V_s, torch::Tensor J_s, torch::Tensor Isyn_s,
                        torch::Tensor Ibg_s) {
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
  check(g, torch::kFloat32, R * MN, "g");
  for (auto* p : {&g_L, &gLVL, &V_th, &V_reset, &dt_over_C, &ou_a, &ou_mu, &ou_b_sigma, &i_ext})
    check(*p, torch::kFloat32, MN, "float parameter");
  check(n_ref, torch::kInt32, MN, "n_ref");
  check(k_pois, torch::kInt32, MN, "poisson_k");
  check(lam, torch::kFloat64, MN, "poisson_lam");
  check(p0, torch::kFloat64, MN, "poisson_p0");
  check(key0, torch::kInt64, M, "key0");
  check(key1, torch::kInt64, M, "key1");
  check(id_lo, torch::kInt64, N, "id_lo");
  check(id_hi, torch::kInt64, N, "id_hi");
  check(sample_slot, torch::kInt64, N, "sample_slot");
  const int64_t C = V_s.dim() == 3 ? V_s.size(2) : 0;
  const int64_t S = V_s.dim() == 3 ? V_s.size(0) : 0;
  check(V_s, torch::kFloat32, S * M * C, "V_s");
  check(J_s, torch::kFloat32, S * M * R * C, "J_s");
  check(Isyn_s, torch::kFloat32, S * M * R * C, "Isyn_s");
  check(Ibg_s, torch::kFloat32, S * M * C, "Ibg_s");
  TORCH_CHECK(sample_every >= 1, "sample_every must be >= 1");

  auto spiked = torch::zeros({n_steps, M, N}, torch::kBool);
  bool* spk = spiked.data_ptr<bool>();
  float* Vp = V.data_ptr<float>();
  float* Jp = J.data_ptr<float>();
  float* Ip = I_ou.data_ptr<float>();
  int32_t* refp = refractory.data_ptr<int32_t>();
  const int32_t* drv = drive.data_ptr<int32_t>();
  const float* gp = g.data_ptr<float>();
  const float *gLp = g_L.data_ptr<float>(), *gLVLp = gLVL.data_ptr<float>(), *Vthp = V_th.data_ptr<float>();
  const float *Vrp = V_reset.data_ptr<float>(), *dtCp = dt_over_C.data_ptr<float>();
  const int32_t* nrefp = n_ref.data_ptr<int32_t>();
  const float *oap = ou_a.data_ptr<float>(), *omup = ou_mu.data_ptr<float>(), *obp = ou_b_sigma.data_ptr<float>();
  const float* iextp = i_ext.data_ptr<float>();
  const double *lamp = lam.data_ptr<double>(), *p0p = p0.data_ptr<double>();
  const int32_t* kp = k_pois.data_ptr<int32_t>();
  const int64_t *k0p = key0.data_ptr<int64_t>(), *k1p = key1.data_ptr<int64_t>();
  const int64_t *idlo = id_lo.data_ptr<int64_t>(), *idhi = id_hi.data_ptr<int64_t>();
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

#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t mi = 0; mi < MN; ++mi) {
    const int64_t m = mi / N, i = mi - m * N;
    float v = Vp[mi], iou = Ip[mi];
    int32_t ref = refp[mi];
    float Jl[kMaxReceptors], gl[kMaxReceptors];
    for (int u = 0; u < R; ++u) {
      Jl[u] = Jp[u * MN + mi];
      gl[u] = gp[u * MN + mi];
    }
    dtb::LifParams lp;
    lp.g_L = gLp[mi];
    lp.gLVL = gLVLp[mi];
    lp.V_th = Vthp[mi];
    lp.V_reset = Vrp[mi];
    lp.dt_over_C = dtCp[mi];
    lp.n_ref = nrefp[mi];
    lp.ou_a = oap[mi];
    lp.ou_mu = omup[mi];
    lp.ou_b_sigma = obp[mi];
    lp.i_ext = iextp[mi];
    lp.k_pois = kp[mi];
    const double lam_ = lamp[mi], p0_ = p0p[mi];
    const uint32_t k0 = static_cast<uint32_t>(k0p[m]), k1 = static_cast<uint32_t>(k1p[m]);
    const uint32_t c0 = static_cast<uint32_t>(idlo[i]), c1 = static_cast<uint32_t>(idhi[i]);
    const int64_t col = slotp[i];
    for (int64_t t = 0; t < n_steps; ++t) {
      const int64_t step = step0 + t;
      float xi = 0.0f;
      int32_t n_pois = 0;
      if (need_words) {
        const Words w = dtb::step_words(c0, c1, step, k0, k1);
        if (ou_on) xi = dtb::normal_from_uint32(w.w[0], w.w[1]);
        if (poisson_on) n_pois = dtb::poisson_inversion(dtb::uniform_from_uint32(w.w[2]), lam_, p0_, max_events);
      }
      const int32_t* slot = drv + (drive_offset + t) * 2 * MN;
      int32_t exc = slot[mi];
      if (poisson_on) exc = exc + n_pois * lp.k_pois;
      if (dtb::lif_substep(v, Jl, iou, ref, gl, rc, lp, exponential_euler, ou_on, exc, slot[MN + mi], xi))
        spk[t * MN + mi] = true;
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
  }
  return spiked;
}

template <typename TargetT>
void deliver_impl(const int64_t* spikes, int64_t n, const int64_t* indptr, const TargetT* targets,
                  const uint8_t* weights, const int64_t* source_kind, int32_t* out, int64_t M, int64_t N) {
  int64_t edges = 0;
  for (int64_t s = 0; s < n; ++s) edges += indptr[spikes[3 * s + 2] + 1] - indptr[spikes[3 * s + 2]];
#pragma omp parallel for schedule(dynamic, 16) num_threads(num_threads()) if (edges > 20000)
  for (int64_t s = 0; s < n; ++s) {
    const int64_t slot = spikes[3 * s], member = spikes[3 * s + 1], source = spikes[3 * s + 2];
    int32_t* row = out + ((slot * 2 + source_kind[source]) * M + member) * N;
    for (int64_t e = indptr[source]; e < indptr[source + 1]; ++e) {
      const int32_t w = static_cast<int32_t>(weights[e]);
#pragma omp atomic
      row[static_cast<int64_t>(targets[e])] += w;
    }
  }
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
                 weights.data_ptr<uint8_t>(), source_kind.data_ptr<int64_t>(), out.data_ptr<int32_t>(), M, N);
  } else {
    TORCH_CHECK(targets.scalar_type() == torch::kInt64, "targets must be int32 or int64");
    deliver_impl(spikes.data_ptr<int64_t>(), n, indptr.data_ptr<int64_t>(), targets.data_ptr<int64_t>(),
                 weights.data_ptr<uint8_t>(), source_kind.data_ptr<int64_t>(), out.data_ptr<int32_t>(), M, N);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("philox", &philox, "Philox4x32-10: counter (n, 4), key (n, 2) -> (n, 4) words in int64");
  m.def("integrate", &integrate, "Fused integration of one interval (arithmetic contract of dtb backends)");
  m.def("deliver", &deliver, "Integer CSR delivery of spikes into the drive");
}
