// 8-lane AVX2 form of the per-neuron step of lif_common.h, for the CPU kernels.
//
// One block = 8 consecutive neurons of one member, their state held in vector registers for
// all steps of an interval.  Every operation is the lane-wise twin of the scalar code in
// lif_common.h (same float32 operations in the same order, no fused multiply-add; the
// build uses -ffp-contract=off), so blocks and scalar neurons give bitwise the same results.
// Without __AVX2__ (generic build) this header defines nothing and the kernels run the
// scalar lif_common.h path only.
#pragma once

#include "lif_common.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace dtb {
namespace avx2 {

constexpr int kLanes = 8;

// 32x32 -> 64 bit products of 8 lanes, split into low and high words.
inline void mulhilo8(__m256i a, __m256i m, __m256i& lo, __m256i& hi) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Philox4x32-10 of 8 counters with one key (the member's).
inline void philox8(__m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3, uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    __m256i lo0, hi0, lo1, hi1;
    mulhilo8(c0, m0, lo0, hi0);
    mulhilo8(c2, m1, lo1, hi1);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
}

// exp_contract of 8 lanes (the scalar recipe in lif_common.h, operation by operation).
inline __m256 exp_contract8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
  const __m256 t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _mm256_set1_ps(0.5f));
  const __m256 n = _mm256_floor_ps(t);
  __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(kExpC1)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(kExpC2)));
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(kExpP0);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(kExpP1));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(kExpP2));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(kExpP3));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(kExpP4));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(kExpP5));
  p = _mm256_mul_ps(p, z);
  p = _mm256_add_ps(p, r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// Unsigned a > b per lane (as an all-ones mask).
inline __m256i cmpgt_u32(__m256i a, __m256i b) {
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  return _mm256_cmpgt_epi32(_mm256_xor_si256(a, flip), _mm256_xor_si256(b, flip));
}

// Poisson counts of 8 words from integer thresholds (poisson_from_thresholds per lane).
// table: per lane, the offset of its row in `thresholds` (row width `width`, padded with 2**32-1).
inline __m256i poisson8(__m256i w, __m256i base, __m256i table, const uint32_t* thresholds, int width) {
  __m256i count = base;
  __m256i alive = _mm256_set1_epi32(-1);
  for (int j = 0; j < width; ++j) {
    const __m256i t = _mm256_i32gather_epi32(reinterpret_cast<const int*>(thresholds),
                                             _mm256_add_epi32(table, _mm256_set1_epi32(j)), 4);
    alive = _mm256_and_si256(alive, cmpgt_u32(w, t));
    if (_mm256_testz_si256(alive, alive)) break;
    count = _mm256_sub_epi32(count, alive);  // alive lanes are -1
  }
  return count;
}

// poisson8 when all 8 lanes use the same table row (one population, the usual case): the
// thresholds are broadcast instead of gathered; same counts.
inline __m256i poisson8_shared(__m256i w, __m256i base, const uint32_t* row, int length) {
  __m256i count = base;
  __m256i alive = _mm256_set1_epi32(-1);
  for (int j = 0; j < length; ++j) {
    alive = _mm256_and_si256(alive, cmpgt_u32(w, _mm256_set1_epi32(static_cast<int>(row[j]))));
    if (_mm256_testz_si256(alive, alive)) break;
    count = _mm256_sub_epi32(count, alive);  // alive lanes are -1
  }
  return count;
}

// --- Box-Muller in 4-lane float64: normal_from_uint32 of lif_common.h, lane-wise -------------
// Both branches of the scalar code are computed and blended; every lane sees exactly the scalar
// sequence of separately rounded float64 operations (sqrt, division and rounding to an integer
// are correctly rounded in AVX as in scalar SSE2), so the bits are those of the scalar path.

// uint32 words (4 lanes) -> uniform_from_uint32: (w + 0.5) / 2**32, exactly as the scalar cast.
inline __m256d uniform4(__m128i w) {
  const __m128i flipped = _mm_xor_si128(w, _mm_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256d as_double = _mm256_add_pd(_mm256_cvtepi32_pd(flipped), _mm256_set1_pd(2147483648.0));  // exact
  return _mm256_mul_pd(_mm256_add_pd(as_double, _mm256_set1_pd(0.5)), _mm256_set1_pd(1.0 / 4294967296.0));
}

// log_f64 of 4 positive normal lanes.
inline __m256d log4(__m256d x) {
  const __m256i bits = _mm256_castpd_si256(x);
  // biased exponent E as a double, exactly: 2^52 + E - 2^52
  const __m256i exp_field = _mm256_and_si256(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x7FF));
  const __m256d magic = _mm256_set1_pd(4503599627370496.0);  // 2^52
  const __m256d E = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(exp_field, _mm256_castpd_si256(magic))), magic);
  const __m256i mant = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFll)),
                                       _mm256_set1_epi64x(static_cast<long long>(1022) << 52));
  __m256d m = _mm256_castsi256_pd(mant);
  const __m256d low = _mm256_cmp_pd(m, _mm256_set1_pd(kSqrtHalf), _CMP_LT_OQ);
  m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(2.0)), low);
  // k = E - 1022 (- 1 where low): small integers, exact in any order
  const __m256d k = _mm256_sub_pd(_mm256_sub_pd(E, _mm256_set1_pd(1022.0)), _mm256_and_pd(low, _mm256_set1_pd(1.0)));
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d f = _mm256_sub_pd(m, one);
  const __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
  const __m256d z = _mm256_mul_pd(s, s);
  const __m256d w = _mm256_mul_pd(z, z);
  const __m256d t1 = _mm256_mul_pd(
      w, _mm256_add_pd(_mm256_set1_pd(kLg2),
                       _mm256_mul_pd(w, _mm256_add_pd(_mm256_set1_pd(kLg4), _mm256_mul_pd(w, _mm256_set1_pd(kLg6))))));
  const __m256d t2 = _mm256_mul_pd(
      z, _mm256_add_pd(
             _mm256_set1_pd(kLg1),
             _mm256_mul_pd(w, _mm256_add_pd(_mm256_set1_pd(kLg3),
                                            _mm256_mul_pd(w, _mm256_add_pd(_mm256_set1_pd(kLg5),
                                                                           _mm256_mul_pd(w, _mm256_set1_pd(kLg7))))))));
  const __m256d r = _mm256_add_pd(t2, t1);
  const __m256d hfsq = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), f), f);
  const __m256d inner = _mm256_add_pd(_mm256_mul_pd(s, _mm256_add_pd(hfsq, r)), _mm256_mul_pd(k, _mm256_set1_pd(kLn2Lo)));
  return _mm256_sub_pd(_mm256_mul_pd(k, _mm256_set1_pd(kLn2Hi)), _mm256_sub_pd(_mm256_sub_pd(hfsq, inner), f));
}

// cos_2pi_f64 of 4 lanes (|u| small: quarter turns fit an int32).
inline __m256d cos_2pi4(__m256d u) {
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(_mm256_set1_pd(4.0), u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256d x = _mm256_mul_pd(_mm256_sub_pd(u, _mm256_mul_pd(_mm256_set1_pd(0.25), n)), _mm256_set1_pd(kTwoPi));
  const __m256i q = _mm256_cvtepi32_epi64(_mm_and_si128(_mm256_cvtpd_epi32(n), _mm_set1_epi32(3)));
  const __m256d z = _mm256_mul_pd(x, x);
  const __m256d w = _mm256_mul_pd(z, z);
  // cosine kernel
  const __m256d rc = _mm256_add_pd(
      _mm256_mul_pd(z, _mm256_add_pd(_mm256_set1_pd(kC1),
                                     _mm256_mul_pd(z, _mm256_add_pd(_mm256_set1_pd(kC2), _mm256_mul_pd(z, _mm256_set1_pd(kC3)))))),
      _mm256_mul_pd(_mm256_mul_pd(w, w),
                    _mm256_add_pd(_mm256_set1_pd(kC4),
                                  _mm256_mul_pd(z, _mm256_add_pd(_mm256_set1_pd(kC5), _mm256_mul_pd(z, _mm256_set1_pd(kC6)))))));
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d hz = _mm256_mul_pd(_mm256_set1_pd(0.5), z);
  const __m256d v = _mm256_sub_pd(one, hz);
  const __m256d c = _mm256_add_pd(v, _mm256_add_pd(_mm256_sub_pd(_mm256_sub_pd(one, v), hz), _mm256_mul_pd(z, rc)));
  // sine kernel
  const __m256d rs = _mm256_add_pd(
      _mm256_add_pd(_mm256_set1_pd(kS2), _mm256_mul_pd(z, _mm256_add_pd(_mm256_set1_pd(kS3), _mm256_mul_pd(z, _mm256_set1_pd(kS4))))),
      _mm256_mul_pd(_mm256_mul_pd(z, w), _mm256_add_pd(_mm256_set1_pd(kS5), _mm256_mul_pd(z, _mm256_set1_pd(kS6)))));
  const __m256d zx = _mm256_mul_pd(z, x);
  const __m256d s = _mm256_add_pd(x, _mm256_mul_pd(zx, _mm256_add_pd(_mm256_set1_pd(kS1), _mm256_mul_pd(z, rs))));
  // q = 0: c, 1: -s, 2: -c, 3: s (negation flips the sign bit, as unary minus does)
  const __m256d sign = _mm256_set1_pd(-0.0);
  const __m256d odd = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(q, _mm256_set1_epi64x(1)), _mm256_set1_epi64x(1)));
  const __m256d negate = _mm256_castsi256_pd(
      _mm256_or_si256(_mm256_cmpeq_epi64(q, _mm256_set1_epi64x(1)), _mm256_cmpeq_epi64(q, _mm256_set1_epi64x(2))));
  const __m256d value = _mm256_blendv_pd(c, s, odd);
  return _mm256_xor_pd(value, _mm256_and_pd(negate, sign));
}

// normal_from_uint32 of 8 word pairs (a, b), as float32 lanes.
inline __m256 normal8(__m256i a, __m256i b) {
  __m128 half[2];
  for (int h = 0; h < 2; ++h) {
    const __m128i wa = h ? _mm256_extracti128_si256(a, 1) : _mm256_castsi256_si128(a);
    const __m128i wb = h ? _mm256_extracti128_si256(b, 1) : _mm256_castsi256_si128(b);
    const __m256d radius = _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), log4(uniform4(wa))));
    half[h] = _mm256_cvtpd_ps(_mm256_mul_pd(radius, cos_2pi4(uniform4(wb))));
  }
  return _mm256_set_m128(half[1], half[0]);
}

}  // namespace avx2
}  // namespace dtb

#endif  // __AVX2__
