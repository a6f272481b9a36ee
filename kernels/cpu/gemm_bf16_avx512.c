/* AVX512_BF16 GEMM micro-kernel: a 14 x 32 tile of C in 28 zmm registers,
 * leaving room for two B vectors and the broadcast A pair. vdpbf16ps adds
 * two products of bf16 pairs to each f32 lane: two steps of K at a time. */
#if defined(__x86_64__)
#include "cpu/gemm_bf16.h"

#include <immintrin.h>

enum { MR = 14, NR = 32 };

static void ukernel_14x32(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                          float alpha, float beta) {
  __m512 acc[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kp; p++) {
    __m512bh b0 = (__m512bh)_mm512_load_si512(b + p * NR);
    __m512bh b1 = (__m512bh)_mm512_load_si512(b + p * NR + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
      __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[p * MR + i]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
  for (int i = 0; i < MR; i++) {
    float *ci = c + i * ldc;
    __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
    if (beta != 0.0f) {
      r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
    }
    _mm512_storeu_ps(ci, r0);
    _mm512_storeu_ps(ci + 16, r1);
  }
}

const mfk_bf16_ukernel mfk_bf16_ukernel_avx512 = { "avx512bf16", MR, NR, ukernel_14x32 };
#endif
