/* AVX-512 GEMM micro-kernel: a 14 x 32 tile of C held in 28 zmm registers,
 * leaving room for two B vectors and the broadcast A element; and its A
 * and B packings, which turn 16 x 16 blocks around in registers (packing
 * element by element cost as much as a tenth of a training step). */
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

/* r[0..15] become their transpose: r[c] lane i = old r[i] lane c. */
static void transpose16(__m512 r[16]) {
  __m512 a[16], b[16];
  for (int j = 0; j < 8; j++) {
    a[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
    a[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
  }
  /* b[4j + m], 128-bit lane L: column 4L + m of rows 4j .. 4j+3 */
  for (int j = 0; j < 4; j++) {
    __m512d lo0 = _mm512_castps_pd(a[4 * j]), lo1 = _mm512_castps_pd(a[4 * j + 2]);
    __m512d hi0 = _mm512_castps_pd(a[4 * j + 1]), hi1 = _mm512_castps_pd(a[4 * j + 3]);
    b[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
    b[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
    b[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
    b[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
  }
  for (int m = 0; m < 4; m++) {
    __m512 c0 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x88), c1 = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xdd);
    __m512 c2 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x88);
    __m512 c3 = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xdd);
    r[m] = _mm512_shuffle_f32x4(c0, c2, 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(c0, c2, 0xdd);
    r[4 + m] = _mm512_shuffle_f32x4(c1, c3, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(c1, c3, 0xdd);
  }
}

static void pack_a_14(int trans, const float *a, int64_t lda, int64_t rows, int64_t kc, float *out) {
  const __mmask16 panel = (1u << MR) - 1;
  if (trans) {
    const __mmask16 live = (__mmask16)((1u << rows) - 1);
    for (int64_t k = 0; k < kc; k++) _mm512_mask_storeu_ps(out + k * MR, panel, _mm512_maskz_loadu_ps(live, a + k * lda));
    return;
  }
  for (int64_t k0 = 0; k0 < kc; k0 += 16) {
    int n = kc - k0 < 16 ? (int)(kc - k0) : 16;
    const __mmask16 cols = (__mmask16)((1u << n) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_maskz_loadu_ps(cols, a + i * lda + k0) : _mm512_setzero_ps();
    transpose16(r);
    for (int k = 0; k < n; k++) _mm512_mask_storeu_ps(out + (k0 + k) * MR, panel, r[k]);
  }
}

/* B^T's rows are contiguous along K: 16 x 16 blocks are turned around in
 * registers, like A's. */
static void pack_b_32(int trans, const float *b, int64_t ldb, int64_t cols, int64_t kc, float *out) {
  if (!trans) {
    const __mmask32 live = (__mmask32)((1ull << cols) - 1);
    for (int64_t k = 0; k < kc; k++) {
      _mm512_storeu_ps(out + k * NR, _mm512_maskz_loadu_ps((__mmask16)live, b + k * ldb));
      _mm512_storeu_ps(out + k * NR + 16, _mm512_maskz_loadu_ps((__mmask16)(live >> 16), b + k * ldb + 16));
    }
    return;
  }
  for (int64_t k0 = 0; k0 < kc; k0 += 16) {
    int n = kc - k0 < 16 ? (int)(kc - k0) : 16;
    const __mmask16 depth = (__mmask16)((1u << n) - 1);
    for (int half = 0; half < 2; half++) {
      __m512 r[16];
      for (int j = 0; j < 16; j++) {
        int64_t col = half * 16 + j;
        r[j] = col < cols ? _mm512_maskz_loadu_ps(depth, b + col * ldb + k0) : _mm512_setzero_ps();
      }
      transpose16(r);
      for (int k = 0; k < n; k++) _mm512_storeu_ps(out + (k0 + k) * NR + half * 16, r[k]);
    }
  }
}

const mfk_ukernel mfk_ukernel_avx512 = { "avx512", MR, NR, ukernel_14x32, pack_a_14, pack_b_32 };
#endif
