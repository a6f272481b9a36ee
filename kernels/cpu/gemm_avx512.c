/* AVX-512 GEMM micro-kernel: a 14 x 32 tile of C held in 28 zmm registers,
 * leaving room for two B vectors and the broadcast A element. */
#if defined(__x86_64__)
#include "cpu/gemm.h"

#include <immintrin.h>

enum { MR = 14, NR = 32 };

static void ukernel_14x32(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                          float alpha, float beta) {
  __m512 acc[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_load_ps(b + k * NR);
    __m512 b1 = _mm512_load_ps(b + k * NR + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
      __m512 ai = _mm512_set1_ps(a[k * MR + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
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

const mfk_ukernel mfk_ukernel_avx512 = { "avx512", MR, NR, ukernel_14x32 };
#endif
