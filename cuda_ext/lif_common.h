// Per-neuron arithmetic shared by the C++ (cpu_kernels.cpp) and CUDA kernels of dtb.
//
// Every function here follows the arithmetic contract of dtb/sim/backends/base.py
// operation by operation (float32 unless noted, left-to-right sums, no fused multiply-add),
// so CPU and GPU builds give bitwise the same results as the torch reference backend.
// Compile with -ffp-contract=off (host) and --fmad=false (nvcc), never with fast-math.
//
// Names and signatures are a stable interface of the kernels: the CUDA kernels include this
// header too.  Add functions rather than change existing ones.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// __host__ __device__ under nvcc and hipcc; plain inline for host compilers, HIP-CPU included
#if defined(__CUDACC__) || ((defined(__HIP__) || defined(__HIPCC__)) && !defined(__HIP_CPU_RT__))
#define DTB_HD __host__ __device__ __forceinline__
#else
#define DTB_HD inline
#endif

namespace dtb {

constexpr int kMaxReceptors = 8;
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr uint32_t kStreamStep = 0u;  // dtb.philox.Stream.STEP

struct Words {
  uint32_t w[4];
};

// Philox4x32-10 (Salmon et al. 2011): counter (c0..c3), key (k0, k1) -> four uint32 words.
DTB_HD Words philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return Words{{c0, c1, c2, c3}};
}

// The words of neuron (id_lo, id_hi) at global step `step` for the member key (k0, k1).
DTB_HD Words step_words(uint32_t id_lo, uint32_t id_hi, int64_t step, uint32_t k0, uint32_t k1) {
  return philox4x32_10(id_lo, id_hi, static_cast<uint32_t>(step), kStreamStep, k0, k1);
}

// Uniform in (0, 1), float64: (w + 0.5) / 2**32.
DTB_HD double uniform_from_uint32(uint32_t w) { return (static_cast<double>(w) + 0.5) * (1.0 / 4294967296.0); }

// Machine-independent float64 log and cos(2 pi u) of dtb/fpmath.py (fdlibm's polynomials), the same
// separately rounded operations in the same order: the C library's log/cos differ in the last bit
// between implementations (glibc's FMA and SSE2 variants, CUDA's libdevice), these do not.
constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
constexpr double kSqrtHalf = 0.70710678118654752440, kTwoPi = 6.283185307179586;
constexpr double kLg1 = 6.666666666666735130e-01, kLg2 = 3.999999999940941908e-01, kLg3 = 2.857142874366239149e-01;
constexpr double kLg4 = 2.222219843214978396e-01, kLg5 = 1.818357216161805012e-01, kLg6 = 1.531383769920937332e-01;
constexpr double kLg7 = 1.479819860511658591e-01;
constexpr double kC1 = 4.16666666666666019037e-02, kC2 = -1.38888888888741095749e-03, kC3 = 2.48015872894767294178e-05;
constexpr double kC4 = -2.75573143513906633035e-07, kC5 = 2.08757232129817482790e-09, kC6 = -1.13596475577881948265e-11;
constexpr double kS1 = -1.66666666666666324348e-01, kS2 = 8.33333333332248946124e-03, kS3 = -1.98412698298579493134e-04;
constexpr double kS4 = 2.75573137070700676789e-06, kS5 = -2.50507602534068634195e-08, kS6 = 1.58969099521155010221e-10;

// log of a positive normal float64 (dtb.fpmath.log).
DTB_HD double log_f64(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  int64_t e = static_cast<int64_t>((bits >> 52) & 0x7FF) - 1022;  // x = m 2^e, m in [0.5, 1)
  bits = (bits & 0x000FFFFFFFFFFFFFull) | (static_cast<uint64_t>(1022) << 52);
  double m;
  memcpy(&m, &bits, sizeof m);
  if (m < kSqrtHalf) {
    m = m * 2.0;
    e = e - 1;
  }
  const double k = static_cast<double>(e);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double w = z * z;
  const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
  const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
  const double r = t2 + t1;
  const double hfsq = 0.5 * f * f;
  return k * kLn2Hi - ((hfsq - (s * (hfsq + r) + k * kLn2Lo)) - f);
}

// cos(2 pi u) (dtb.fpmath.cos_2pi): exact reduction to the nearest quarter turn, fdlibm kernels.
DTB_HD double cos_2pi_f64(double u) {
  const double n = ::rint(4.0 * u);
  const double x = (u - 0.25 * n) * kTwoPi;
  const int64_t q = static_cast<int64_t>(n) & 3;
  const double z = x * x;
  const double w = z * z;
  if (q == 0 || q == 2) {
    const double r = z * (kC1 + z * (kC2 + z * kC3)) + w * w * (kC4 + z * (kC5 + z * kC6));
    const double hz = 0.5 * z;
    const double v = 1.0 - hz;
    const double c = v + (((1.0 - v) - hz) + z * r);
    return q == 0 ? c : -c;
  }
  const double r = kS2 + z * (kS3 + z * kS4) + z * w * (kS5 + z * kS6);
  const double v = z * x;
  const double s = x + v * (kS1 + z * r);
  return q == 1 ? -s : s;
}

// exp of float64 (dtb.fpmath.exp, fdlibm e_exp): clamp to [-1000, 1000], reduce by the nearest
// multiple of ln 2, the rational kernel, then two exact scalings by powers of two.  NaN gives NaN.
constexpr double kInvLn2 = 1.44269504088896338700e00;
constexpr double kP1 = 1.66666666666666019037e-01, kP2 = -2.77777777770155933842e-03, kP3 = 6.61375632143793436117e-05;
constexpr double kP4 = -1.65339022054652515390e-06, kP5 = 4.13813679705723846039e-08;

DTB_HD double pow2_f64(double k) {  // 2^k for integer-valued k in [-1022, 1023], exactly
  const uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(k) + 1023) << 52;
  double out;
  memcpy(&out, &bits, sizeof out);
  return out;
}

DTB_HD double exp_f64(double x) {
  if (x != x) return x;
  x = x < -1000.0 ? -1000.0 : (x > 1000.0 ? 1000.0 : x);
  const double k = ::rint(x * kInvLn2);
  const double hi = x - k * kLn2Hi;
  const double lo = k * kLn2Lo;
  const double r = hi - lo;
  const double t = r * r;
  const double c = r - t * (kP1 + t * (kP2 + t * (kP3 + t * (kP4 + t * kP5))));
  const double y = 1.0 + ((r * c) / (2.0 - c) - lo + hi);
  const double k1 = ::rint(0.5 * k);
  return (y * pow2_f64(k1)) * pow2_f64(k - k1);
}

// log of float64 with dtb.fpmath.log's special values: log(0) = -inf, log(x < 0) = nan, log(inf) = inf.
DTB_HD double log_any_f64(double x) {
  if (x > 0.0) return x < INFINITY ? log_f64(x) : x;
  return x == 0.0 ? -INFINITY : NAN;
}

// x^y of dtb.fpmath.pow: an integer |y| <= 64 by repeated squaring (the same products in the same
// order, one division for negative y), any other y as exp(y log x).
DTB_HD double pow_f64(double x, double y) {
  const double ay = y < 0.0 ? -y : y;
  if (ay <= 64.0 && ::floor(y) == y) {
    int64_t m = static_cast<int64_t>(ay);
    double result = 1.0, base = x;
    bool first = true;
    if (m == 0) return x * 0.0 + 1.0;
    while (m) {
      if (m & 1) {
        result = first ? base : result * base;
        first = false;
      }
      m >>= 1;
      if (m) base = base * base;
    }
    return y < 0.0 ? 1.0 / result : result;
  }
  return exp_f64(y * log_any_f64(x));
}

// Standard normal (Box-Muller, cosine branch) in float64, rounded to float32 once
// (dtb.philox.normal_from_uint32).
DTB_HD float normal_from_uint32(uint32_t a, uint32_t b) {
  const double ua = uniform_from_uint32(a), ub = uniform_from_uint32(b);
  return static_cast<float>(::sqrt(-2.0 * log_f64(ua)) * cos_2pi_f64(ub));
}

// Poisson count by CDF inversion in float64: the smallest k with u <= P(X <= k), capped.
DTB_HD int32_t poisson_inversion(double u, double lam, double p0, int64_t max_events) {
  int32_t count = 0;
  double p = p0, cdf = p0;
  for (int64_t j = 1; j <= max_events && u > cdf; ++j) {
    ++count;
    p = p * lam / static_cast<double>(j);
    cdf = cdf + p;
  }
  return count;
}

// Bit pattern -> float32 (no conversion).
DTB_HD float float_from_bits(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// exp_contract: the float32 exp of the arithmetic contract (dtb.sim.backends.base.exp_contract),
// Cephes' expf in separately rounded float32 operations (no fused multiply-add), so the torch
// reference, these kernels and their 8-lane AVX2 form (cpu_block.h) agree bitwise.
// Input clamped to [-87, 88]; relative error below 2 ulp against exp in float64.
constexpr float kExpLo = -87.0f, kExpHi = 88.0f, kLog2e = 1.44269504088896341f;
constexpr float kExpC1 = 0.693359375f, kExpC2 = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

DTB_HD float exp_contract(float x) {
  x = x < kExpLo ? kExpLo : (x > kExpHi ? kExpHi : x);
  const float n = ::floorf(x * kLog2e + 0.5f);
  float r = x - n * kExpC1;
  r = r - n * kExpC2;
  const float z = r * r;
  float p = kExpP0;
  p = p * r + kExpP1;
  p = p * r + kExpP2;
  p = p * r + kExpP3;
  p = p * r + kExpP4;
  p = p * r + kExpP5;
  p = p * z;
  p = p + r;
  p = p + 1.0f;
  return p * float_from_bits(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

// Poisson count from an integer threshold table (same result as poisson_inversion on
// uniform_from_uint32(w)): base + the number of leading thresholds t_j (ascending) with w > t_j.
// The table of a rate is made by dtb.sim.backends.poisson_tables.
DTB_HD int32_t poisson_from_thresholds(uint32_t w, int32_t base, const uint32_t* thresholds, int32_t length) {
  int32_t j = 0;
  while (j < length && w > thresholds[j]) ++j;
  return base + j;
}

// Per-neuron constants of one LIF neuron (one member).
struct LifParams {
  float g_L, gLVL, V_th, V_reset, dt_over_C;  // [nS], [nS mV], [mV], [mV], [ms/pF]
  int32_t n_ref;                              // refractory steps
  float ou_a, ou_mu, ou_b_sigma, i_ext;       // OU update constants [1], [pA], [pA]; external current [pA]
  int32_t k_pois;                             // uint8-scale weight of one Poisson event
};

// Receptor channels shared by all neurons: decay per step, reversal [mV], kind (0 = E, 1 = I).
struct Receptors {
  int R;
  float decay[kMaxReceptors];
  float E_rev[kMaxReceptors];
  int kind[kMaxReceptors];
};

// Membrane update of an integrating neuron with conductance scales g and gating J at step start.
DTB_HD float membrane_update(float v, const float* g, const float* J, const Receptors& rc, const LifParams& p,
                             float iou, bool exponential_euler) {
  float G = p.g_L, cur = p.gLVL;
  for (int u = 0; u < rc.R; ++u) {
    const float gJ = g[u] * J[u];
    G = G + gJ;
    cur = cur + gJ * rc.E_rev[u];
  }
  cur = cur + iou;
  cur = cur + p.i_ext;
  if (exponential_euler) {
    const float V_inf = cur / G;
    const float factor = exp_contract(-(p.dt_over_C * G));
    return V_inf + (v - V_inf) * factor;
  }
  return v + p.dt_over_C * (cur - G * v);
}

// Exact decay plus integer input: exc / inh are the integer uint8-weight sums of this step
// (exc including Poisson events times k_pois).
DTB_HD void synapse_update(float* J, const Receptors& rc, int32_t exc, int32_t inh) {
  const float in_e = static_cast<float>(exc) / 255.0f, in_i = static_cast<float>(inh) / 255.0f;
  for (int u = 0; u < rc.R; ++u) J[u] = J[u] * rc.decay[u] + (rc.kind[u] ? in_i : in_e);
}

// One OU background-current step with standard normal xi.
DTB_HD float ou_update(float iou, float a, float mu, float b_sigma, float xi) {
  const float drift = iou + a * (mu - iou);
  return drift + b_sigma * xi;
}

// One full step of one neuron (state in registers, modified in place); returns whether it spiked.
// exc includes n_pois * k_pois; xi is ignored unless ou_on.
DTB_HD bool lif_substep(float& v, float* J, float& iou, int32_t& ref, const float* g, const Receptors& rc,
                        const LifParams& p, bool exponential_euler, bool ou_on, int32_t exc, int32_t inh,
                        float xi) {
  const bool integrating = ref == 0;
  if (integrating) {
    v = membrane_update(v, g, J, rc, p, iou, exponential_euler);
  } else {
    ref -= 1;  // refractory: V stays at V_reset
  }
  synapse_update(J, rc, exc, inh);
  if (ou_on) iou = ou_update(iou, p.ou_a, p.ou_mu, p.ou_b_sigma, xi);
  if (integrating && v >= p.V_th) {
    v = p.V_reset;
    ref = p.n_ref;
    return true;
  }
  return false;
}

}  // namespace dtb
