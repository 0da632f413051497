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

}  // namespace avx2
}  // namespace dtb

#endif  // __AVX2__
