// Torch binding of the CPU kernels (cpu_kernels.cpp, interface cpu_kernels.h): shape, dtype and
// device checks, then raw pointers to the kernels.  No arithmetic of the model happens here.
#include <torch/extension.h>

#include "balloon.h"
#include "cpu_kernels.h"
#include "lif_common.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using dtb::kMaxReceptors;

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

// The kernel's row buffer: a torch tensor (n, 3) int64 held by the caller.
int64_t* torch_rows(int64_t n_rows, void* context) {
  auto* rows = static_cast<torch::Tensor*>(context);
  *rows = torch::empty({n_rows, 3}, torch::kInt64);
  return rows->data_ptr<int64_t>();
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
  dtb::cpu::philox(counter.data_ptr<int64_t>(), key.data_ptr<int64_t>(), n, out.data_ptr<int64_t>());
  return out;
}

// Advance the state (V, J, I_ou, refractory; modified in place) by n_steps steps; see
// dtb::cpu::IntegrateArgs for the tables.  Returns the spikes as (n, 3) int64 rows (step in the
// call, member, neuron) in the order of torch.nonzero on an (n_steps, M, N) mask.
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
  using dtb::cpu::kTables;
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

  dtb::Receptors rc;
  rc.R = R;
  for (int u = 0; u < R; ++u) {
    rc.decay[u] = static_cast<float>(decay[u]);
    rc.E_rev[u] = static_cast<float>(E_rev[u]);
    rc.kind[u] = static_cast<int>(receptor_kind[u]);
    TORCH_CHECK(rc.kind[u] == 0 || rc.kind[u] == 1, "receptor kind must be 0 (E) or 1 (I)");
  }
  dtb::cpu::IntegrateArgs a;
  a.M = M;
  a.N = N;
  a.V = V.data_ptr<float>();
  a.J = J.data_ptr<float>();
  a.I_ou = I_ou.data_ptr<float>();
  a.refractory = refractory.data_ptr<int32_t>();
  a.drive = drive.data_ptr<int32_t>();
  a.drive_offset = drive_offset;
  a.consume_drive = consume_drive;
  a.g = g.data_ptr<float>();
  a.g_L = g_L.data_ptr<float>();
  a.gLVL = gLVL.data_ptr<float>();
  a.V_th = V_th.data_ptr<float>();
  a.V_reset = V_reset.data_ptr<float>();
  a.dt_over_C = dt_over_C.data_ptr<float>();
  a.n_ref = n_ref.data_ptr<int32_t>();
  a.ou_a = ou_a.data_ptr<float>();
  a.ou_mu = ou_mu.data_ptr<float>();
  a.ou_b_sigma = ou_b_sigma.data_ptr<float>();
  a.i_ext = i_ext.data_ptr<float>();
  a.k_pois = k_pois.data_ptr<int32_t>();
  a.p_index = p_index.data_ptr<int32_t>();
  std::copy(member_strides.begin(), member_strides.end(), a.member_strides);
  a.p_base = p_base.data_ptr<int32_t>();
  a.p_length = p_length.data_ptr<int32_t>();
  a.p_thr = reinterpret_cast<const uint32_t*>(p_thr.data_ptr<int32_t>());
  a.p_width = width;
  a.receptors = rc;
  a.key0 = key0.data_ptr<int64_t>();
  a.key1 = key1.data_ptr<int64_t>();
  a.id_lo = id_lo.data_ptr<int32_t>();
  a.id_hi = id_hi.data_ptr<int32_t>();
  a.exponential_euler = exponential_euler;
  a.ou_on = ou_on;
  a.poisson_on = poisson_on;
  a.step0 = step0;
  a.n_steps = n_steps;
  a.sample_slot = sample_slot.data_ptr<int64_t>();
  a.sample_every = sample_every;
  a.sample_columns = C;
  a.V_s = V_s.data_ptr<float>();
  a.J_s = J_s.data_ptr<float>();
  a.Isyn_s = Isyn_s.data_ptr<float>();
  a.Ibg_s = Ibg_s.data_ptr<float>();
  if (counting) {
    a.counts = counts.data_ptr<int32_t>();
    a.population = population.data_ptr<int32_t>();
    a.n_pops = n_pops;
    a.count_phase = count_phase;
    a.count_bin_steps = count_bin_steps;
  }
  a.threads = num_threads();
  torch::Tensor rows;
  dtb::cpu::integrate(a, &torch_rows, &rows);
  return rows;
}

// exp_contract on a float32 tensor, through the vector path where this build has one.
torch::Tensor exp_contract(torch::Tensor x) {
  x = x.contiguous();
  check(x, torch::kFloat32, x.numel(), "x");
  auto out = torch::empty_like(x);
  dtb::cpu::exp_contract(x.data_ptr<float>(), out.data_ptr<float>(), x.numel());
  return out;
}

// The machine-independent float64 functions of lif_common.h on a float64 tensor (which: 0 log_f64,
// 1 cos_2pi_f64, 2 exp_f64), for the tests against dtb.fpmath.
torch::Tensor fpmath(torch::Tensor x, int64_t which) {
  x = x.contiguous();
  check(x, torch::kFloat64, x.numel(), "x");
  TORCH_CHECK(which >= 0 && which <= 2, "which must be 0 (log_f64), 1 (cos_2pi_f64) or 2 (exp_f64)");
  auto out = torch::empty_like(x);
  dtb::cpu::fpmath(x.data_ptr<double>(), out.data_ptr<double>(), x.numel(), static_cast<int>(which));
  return out;
}

// pow_f64 (dtb.fpmath.pow) of float64 tensors of one shape, for the tests.
torch::Tensor pow_f64(torch::Tensor x, torch::Tensor y) {
  x = x.contiguous();
  y = y.contiguous();
  check(x, torch::kFloat64, x.numel(), "x");
  check(y, torch::kFloat64, x.numel(), "y");
  auto out = torch::empty_like(x);
  dtb::cpu::pow_f64(x.data_ptr<double>(), y.data_ptr<double>(), out.data_ptr<double>(), x.numel());
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
  dtb::cpu::normal_words(a.data_ptr<int64_t>(), b.data_ptr<int64_t>(), out.data_ptr<float>(), n, vector);
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
// signal after every step (or, with y of K elements, after the last step only).
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
  dtb::cpu::balloon_window(s.data_ptr<double>(), f.data_ptr<double>(), v.data_ptr<double>(), q.data_ptr<double>(),
                           u.data_ptr<double>(), T, K, balloon_const(constants), y.data_ptr<double>(), every,
                           num_threads());
}

// balloon_window with the input made from spike counts (T, M, P) int32 (see cpu_kernels.h);
// population_region (P,) int64; states (M, R) float64; y (M, R): BOLD at the end.
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
  for (int64_t pi = 0; pi < P; ++pi) TORCH_CHECK(pr[pi] >= 0 && pr[pi] < R, "population_region out of range");
  const dtb::BalloonConst p = balloon_const(constants);
  dtb::cpu::balloon_window_counts(s.data_ptr<double>(), f.data_ptr<double>(), v.data_ptr<double>(),
                                  q.data_ptr<double>(), counts.data_ptr<int32_t>(), T, M, P, pr,
                                  region_neurons.data_ptr<double>(), R, p, y.data_ptr<double>(), num_threads());
}

// Poisson counts from threshold tables for words (n,) int64 and table rows (n,) int32.
torch::Tensor poisson_counts(torch::Tensor words, torch::Tensor rows, torch::Tensor p_base, torch::Tensor p_length,
                             torch::Tensor p_thr) {
  words = words.to(torch::kInt64).contiguous();
  rows = rows.to(torch::kInt32).contiguous();
  const int64_t n = words.numel();
  check(rows, torch::kInt32, n, "rows");
  check(p_thr, torch::kInt32, p_thr.numel(), "p_thr");
  auto out = torch::empty({n}, torch::kInt32);
  dtb::cpu::poisson_counts(words.data_ptr<int64_t>(), rows.data_ptr<int32_t>(), n, p_base.data_ptr<int32_t>(),
                           p_length.data_ptr<int32_t>(), reinterpret_cast<const uint32_t*>(p_thr.data_ptr<int32_t>()),
                           static_cast<int>(p_thr.size(1)), out.data_ptr<int32_t>());
  return out;
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
  const bool narrow = targets.scalar_type() == torch::kInt32;
  TORCH_CHECK(narrow || targets.scalar_type() == torch::kInt64, "targets must be int32 or int64");
  dtb::cpu::deliver(spikes.data_ptr<int64_t>(), n, indptr.data_ptr<int64_t>(),
                    narrow ? targets.data_ptr<int32_t>() : nullptr, narrow ? nullptr : targets.data_ptr<int64_t>(),
                    weights.data_ptr<uint8_t>(), source_kind.data_ptr<int64_t>(), out.data_ptr<int32_t>(),
                    out.size(0), M, N, num_threads());
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
  m.def("has_avx2", &dtb::cpu::has_avx2, "whether this build has the AVX2 8-lane path");
  m.def("deliver", &deliver, "Integer CSR delivery of spikes into the drive");
}
