/* AVX2 + FMA GEMM micro-kernel: a 6 x 16 tile of C held in 12 ymm registers,
 * leaving room for two B vectors and the broadcast A element. */
#if defined(__x86_64__)
#include "cpu/gemm.h"

#include <immintrin.h>

enum { MR = 6, NR = 16 };

static void ukernel_6x16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                         float alpha, float beta) {
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(b + k * NR);
    __m256 b1 = _mm256_load_ps(b + k * NR + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      __m256 ai = _mm256_broadcast_ss(a + k * MR + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    float *ci = c + i * ldc;
    __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
    if (beta != 0.0f) {
      r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
      r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
    }
    _mm256_storeu_ps(ci, r0);
    _mm256_storeu_ps(ci + 8, r1);
  }
}

const mfk_ukernel mfk_ukernel_avx2 = { "avx2", MR, NR, ukernel_6x16, NULL, NULL };
#endif
