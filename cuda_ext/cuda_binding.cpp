// Thin torch binding of the GPU kernels (lif_kernels.cu): checks shapes, dtypes and
// devices, then hands raw pointers and torch's current stream to the launchers.
// Built by cuda_ext/cuda_backend.py with torch.utils.cpp_extension: with nvcc for CUDA
// tensors, or with -DDTB_HIP_CPU beside the HIP-CPU build of the kernels for CPU tensors
// (on HIP-CPU device memory is host memory; the stream is 0).  Only device-neutral torch
// headers are used (the caller passes torch.cuda.current_stream().cuda_stream), so this file
// also compiles against CPU-only torch, which is how CI checks it.
#include <c10/core/DeviceGuard.h>
#include <torch/extension.h>

#include <optional>
#include <vector>

#include "lif_kernels.h"

namespace {

using OptTensor = std::optional<torch::Tensor>;

#ifdef DTB_HIP_CPU
constexpr const char* kDeviceName = "CPU (HIP-CPU build)";
bool on_kernel_device(const torch::Tensor& t) { return t.is_cpu(); }
#else
constexpr const char* kDeviceName = "CUDA";
bool on_kernel_device(const torch::Tensor& t) { return t.is_cuda(); }
#endif

void check(const torch::Tensor& t, torch::ScalarType dtype, int64_t numel, const char* name,
           const torch::Device& device) {
  TORCH_CHECK(t.device() == device, name, " is on ", t.device(), ", expected ", device);
  TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(numel < 0 || t.numel() == numel, name, " has ", t.numel(), " elements, expected ", numel);
}

template <typename T>
T* ptr_or_null(const OptTensor& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

void raise_if(const char* message) {
  TORCH_CHECK(message == nullptr, "dtb ", kDeviceName, " kernel launch failed: ", message);
}

}  // namespace

// Advance V, J, I_ou, refractory (in place) by n_steps; see lif_kernels.h for the layout.
void integrate(torch::Tensor V, torch::Tensor J, torch::Tensor I_ou, torch::Tensor refractory, torch::Tensor drive,
               int64_t drive_offset, bool clear_drive, torch::Tensor neuron_class, torch::Tensor ftab,
               torch::Tensor itab, torch::Tensor dtab, std::vector<double> decay, std::vector<double> E_rev,
               std::vector<int64_t> receptor_kind, torch::Tensor keys, int64_t id_base, OptTensor global_ids,
               int64_t max_events, bool exponential_euler, bool ou_on, bool poisson_on, int64_t step0,
               int64_t n_steps, OptTensor spiked, OptTensor spike_rows, OptTensor spike_count, OptTensor population,
               OptTensor pop_counts, OptTensor sample_slot, int64_t sample_every, OptTensor V_s, OptTensor J_s,
               OptTensor Isyn_s, OptTensor Ibg_s, int64_t stream) {
  TORCH_CHECK(on_kernel_device(V) && V.dim() == 2, "V must be a (M, N) ", kDeviceName, " tensor");
  const torch::Device dev = V.device();
  const c10::DeviceGuard guard(dev);
  const int64_t M = V.size(0), N = V.size(1), MN = M * N;
  const int R = static_cast<int>(J.size(0));
  TORCH_CHECK(R >= 1 && R <= dtb::kMaxReceptors, "between 1 and ", dtb::kMaxReceptors, " receptors, got ", R);
  TORCH_CHECK(static_cast<int>(decay.size()) == R && static_cast<int>(E_rev.size()) == R &&
                  static_cast<int>(receptor_kind.size()) == R,
              "decay, E_rev and receptor_kind need one entry per receptor");
  TORCH_CHECK(drive.dim() == 4 && drive.size(1) == 2 && drive.size(2) == M && drive.size(3) == N,
              "drive must be (D, 2, M, N)");
  TORCH_CHECK(drive_offset >= 0 && drive_offset + n_steps <= drive.size(0), "drive slots out of range");
  TORCH_CHECK(sample_every >= 1, "sample_every must be >= 1");
  check(V, torch::kFloat32, MN, "V", dev);
  check(J, torch::kFloat32, R * MN, "J", dev);
  check(I_ou, torch::kFloat32, MN, "I_ou", dev);
  check(refractory, torch::kInt32, MN, "refractory", dev);
  check(drive, torch::kInt32, -1, "drive", dev);
  check(neuron_class, torch::kInt32, N, "neuron_class", dev);
  TORCH_CHECK(ftab.dim() == 3 && ftab.size(0) == M && ftab.size(2) == dtb_cuda::kFloatFields + R,
              "ftab must be (M, n_classes, ", dtb_cuda::kFloatFields + R, ")");
  const int64_t C = ftab.size(1);
  check(ftab, torch::kFloat32, M * C * (dtb_cuda::kFloatFields + R), "ftab", dev);
  check(itab, torch::kInt32, M * C * 2, "itab", dev);
  check(dtab, torch::kFloat64, M * C * 2, "dtab", dev);
  check(keys, torch::kInt64, M * 2, "keys", dev);
  if (global_ids) check(*global_ids, torch::kInt64, N, "global_ids", dev);
  if (spiked) check(*spiked, torch::kBool, n_steps * MN, "spiked", dev);
  int64_t capacity = 0;
  if (spike_rows) {
    TORCH_CHECK(spike_count.has_value(), "spike_rows needs spike_count");
    TORCH_CHECK(spike_rows->dim() == 2 && spike_rows->size(1) == 3, "spike_rows must be (capacity, 3)");
    check(*spike_rows, torch::kInt64, -1, "spike_rows", dev);
    check(*spike_count, torch::kInt64, 1, "spike_count", dev);
    capacity = spike_rows->size(0);
  }
  int64_t P = 0;
  if (pop_counts) {
    TORCH_CHECK(population.has_value(), "pop_counts needs population");
    TORCH_CHECK(pop_counts->dim() == 3 && pop_counts->size(0) == n_steps && pop_counts->size(1) == M,
                "pop_counts must be (n_steps, M, n_populations)");
    P = pop_counts->size(2);
    check(*pop_counts, torch::kInt32, -1, "pop_counts", dev);
    check(*population, torch::kInt32, N, "population", dev);
  }
  int64_t n_cols = 0;
  if (sample_slot) {
    check(*sample_slot, torch::kInt64, N, "sample_slot", dev);
    TORCH_CHECK(V_s && J_s && Isyn_s && Ibg_s && V_s->dim() == 3, "samples need V_s (S, M, C), J_s, Isyn_s, Ibg_s");
    n_cols = V_s->size(2);
    const int64_t S = V_s->size(0);
    check(*V_s, torch::kFloat32, S * M * n_cols, "V_s", dev);
    check(*J_s, torch::kFloat32, S * M * R * n_cols, "J_s", dev);
    check(*Isyn_s, torch::kFloat32, S * M * R * n_cols, "Isyn_s", dev);
    check(*Ibg_s, torch::kFloat32, S * M * n_cols, "Ibg_s", dev);
  }

  dtb_cuda::IntegrateArgs a;
  a.M = M;
  a.N = N;
  a.R = R;
  a.receptors.R = R;
  for (int u = 0; u < R; ++u) {
    a.receptors.decay[u] = static_cast<float>(decay[u]);
    a.receptors.E_rev[u] = static_cast<float>(E_rev[u]);
    a.receptors.kind[u] = static_cast<int>(receptor_kind[u]);
    TORCH_CHECK(a.receptors.kind[u] == 0 || a.receptors.kind[u] == 1, "receptor kind must be 0 (E) or 1 (I)");
  }
  a.V = V.data_ptr<float>();
  a.J = J.data_ptr<float>();
  a.I_ou = I_ou.data_ptr<float>();
  a.refractory = refractory.data_ptr<int32_t>();
  a.drive = drive.data_ptr<int32_t>();
  a.drive_offset = drive_offset;
  a.clear_drive = clear_drive;
  a.neuron_class = neuron_class.data_ptr<int32_t>();
  a.n_classes = C;
  a.ftab = ftab.data_ptr<float>();
  a.itab = itab.data_ptr<int32_t>();
  a.dtab = dtab.data_ptr<double>();
  a.max_events = max_events;
  a.exponential_euler = exponential_euler;
  a.ou_on = ou_on;
  a.poisson_on = poisson_on;
  a.keys = keys.data_ptr<int64_t>();
  a.id_base = id_base;
  a.global_ids = ptr_or_null<int64_t>(global_ids);
  a.step0 = step0;
  a.n_steps = n_steps;
  a.spiked = ptr_or_null<bool>(spiked);
  a.spike_rows = ptr_or_null<int64_t>(spike_rows);
  a.spike_capacity = capacity;
  a.spike_count = ptr_or_null<int64_t>(spike_count);
  a.population = pop_counts ? ptr_or_null<int32_t>(population) : nullptr;
  a.n_populations = P;
  a.pop_counts = ptr_or_null<int32_t>(pop_counts);
  a.sample_slot = ptr_or_null<int64_t>(sample_slot);
  a.sample_every = sample_every;
  a.n_sample_cols = n_cols;
  if (sample_slot) {
    a.V_s = V_s->data_ptr<float>();
    a.J_s = J_s->data_ptr<float>();
    a.Isyn_s = Isyn_s->data_ptr<float>();
    a.Ibg_s = Ibg_s->data_ptr<float>();
  }
  raise_if(dtb_cuda::launch_integrate(a, reinterpret_cast<void*>(stream)));
}

// out[slot, kind(source), member, target] += weight for every synapse of every spike row.
void deliver(torch::Tensor spikes, torch::Tensor indptr, torch::Tensor targets, torch::Tensor weights,
             torch::Tensor source_kind, torch::Tensor out, int64_t stream) {
  TORCH_CHECK(on_kernel_device(out) && out.dim() == 4 && out.size(1) == 2, "out must be a (D, 2, M, N) ",
              kDeviceName, " tensor");
  const torch::Device dev = out.device();
  const c10::DeviceGuard guard(dev);
  TORCH_CHECK(spikes.dim() == 2 && spikes.size(1) == 3, "spikes must be (n, 3)");
  check(spikes, torch::kInt64, -1, "spikes", dev);
  check(out, torch::kInt32, -1, "out", dev);
  check(indptr, torch::kInt64, -1, "indptr", dev);
  check(weights, torch::kUInt8, targets.numel(), "weights", dev);
  check(source_kind, torch::kInt64, indptr.numel() - 1, "source_kind", dev);
  const bool wide = targets.scalar_type() == torch::kInt64;
  check(targets, wide ? torch::kInt64 : torch::kInt32, -1, "targets", dev);
  raise_if(dtb_cuda::launch_deliver(spikes.data_ptr<int64_t>(), spikes.size(0), indptr.data_ptr<int64_t>(),
                                    wide ? nullptr : targets.data_ptr<int32_t>(),
                                    wide ? targets.data_ptr<int64_t>() : nullptr, weights.data_ptr<uint8_t>(),
                                    source_kind.data_ptr<int64_t>(), out.data_ptr<int32_t>(), out.size(2),
                                    out.size(3), reinterpret_cast<void*>(stream)));
}

// Philox4x32-10 computed on the GPU: counter (n, 4), key (n, 2) int64 -> (n, 4) int64 words.
torch::Tensor philox(torch::Tensor counter, torch::Tensor key, int64_t stream) {
  TORCH_CHECK(on_kernel_device(counter) && counter.dim() == 2 && counter.size(1) == 4, "counter must be (n, 4) on ",
              kDeviceName);
  const c10::DeviceGuard guard(counter.device());
  check(counter, torch::kInt64, -1, "counter", counter.device());
  check(key, torch::kInt64, counter.size(0) * 2, "key", counter.device());
  auto out = torch::empty_like(counter);
  raise_if(dtb_cuda::launch_philox(counter.data_ptr<int64_t>(), key.data_ptr<int64_t>(), out.data_ptr<int64_t>(),
                                   counter.size(0), reinterpret_cast<void*>(stream)));
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("integrate", &integrate, "Fused interval of LIF steps by the GPU kernels (arithmetic contract)");
  m.def("deliver", &deliver, "Integer push-CSR delivery of spike rows into the drive, one warp per row");
  m.def("philox", &philox, "Philox4x32-10 computed by the GPU kernels");
}
