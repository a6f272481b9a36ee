/*
 * AVX2 dot products for the quantized matmul (see quant.h). A block's 32
 * products are formed with maddubs (u8 x s8 pairs into i16, which cannot
 * saturate here: |w| <= 127 or <= 15 and |x| <= 127) and summed exactly to
 * i32; the block scale multiplies the eight i32 lanes into float lanes,
 * accumulated separately for even and odd blocks and added at the end.
 */
#if defined(__x86_64__)
#include "cpu/quant.h"

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

static AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/* Eight i32 sums of u[i] * s[i] over groups of four bytes. */
static AVX2 inline __m256i dot_u8_s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* The same for signed weights: move a's sign onto b. */
static AVX2 inline __m256i dot_s8_s8(__m256i a, __m256i b) {
  return dot_u8_s8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* 16 bytes of nibble pairs as 32 values 0..15: low nibbles first, as the
 * Q4 blocks order their weights. */
static AVX2 inline __m256i nibbles(const uint8_t *qs) {
  __m128i b = _mm_loadu_si128((const __m128i *)qs);
  __m256i both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

static AVX2 inline __m256i load_x(const mfk_block_q8_act *x) {
  return _mm256_loadu_si256((const __m256i *)x->qs);
}

static AVX2 inline __m256 scaled(__m256 acc, float scale, __m256i sums) {
  return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(sums), acc);
}

/* One block's contribution added to acc. */
static AVX2 inline __m256 block_q8_0(__m256 acc, const mfk_block_q8_0 *b, const mfk_block_q8_act *x) {
  __m256i q = _mm256_loadu_si256((const __m256i *)b->qs);
  return scaled(acc, _cvtsh_ss(b->d) * x->d, dot_s8_s8(q, load_x(x)));
}

static AVX2 inline __m256 block_q4_0(__m256 acc, const mfk_block_q4_0 *b, const mfk_block_q8_act *x) {
  __m256i q = _mm256_sub_epi8(nibbles(b->qs), _mm256_set1_epi8(8));
  return scaled(acc, _cvtsh_ss(b->d) * x->d, dot_s8_s8(q, load_x(x)));
}

/* Q4_1's offset m * s goes to lane 0 of a second accumulator. */
static AVX2 inline __m256 block_q4_1(__m256 acc, __m256 *offsets, const mfk_block_q4_1 *b,
                                     const mfk_block_q8_act *x) {
  *offsets = _mm256_add_ps(*offsets, _mm256_castps128_ps256(_mm_set_ss(_cvtsh_ss(b->m) * x->s)));
  return scaled(acc, _cvtsh_ss(b->d) * x->d, dot_u8_s8(nibbles(b->qs), load_x(x)));
}

/* Two accumulators over even and odd blocks hide the add latency. */
static AVX2 float dot_q8_0(const void *w, const mfk_block_q8_act *x, int64_t nb) {
  const mfk_block_q8_0 *b = w;
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    even = block_q8_0(even, &b[i], &x[i]);
    odd = block_q8_0(odd, &b[i + 1], &x[i + 1]);
  }
  if (i < nb) even = block_q8_0(even, &b[i], &x[i]);
  return hsum(_mm256_add_ps(even, odd));
}

static AVX2 float dot_q4_0(const void *w, const mfk_block_q8_act *x, int64_t nb) {
  const mfk_block_q4_0 *b = w;
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    even = block_q4_0(even, &b[i], &x[i]);
    odd = block_q4_0(odd, &b[i + 1], &x[i + 1]);
  }
  if (i < nb) even = block_q4_0(even, &b[i], &x[i]);
  return hsum(_mm256_add_ps(even, odd));
}

static AVX2 float dot_q4_1(const void *w, const mfk_block_q8_act *x, int64_t nb) {
  const mfk_block_q4_1 *b = w;
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  __m256 even_off = _mm256_setzero_ps(), odd_off = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    even = block_q4_1(even, &even_off, &b[i], &x[i]);
    odd = block_q4_1(odd, &odd_off, &b[i + 1], &x[i + 1]);
  }
  if (i < nb) even = block_q4_1(even, &even_off, &b[i], &x[i]);
  return hsum(_mm256_add_ps(_mm256_add_ps(even, odd), _mm256_add_ps(even_off, odd_off)));
}

const mfk_qdots mfk_qdots_avx2 = {dot_q8_0, dot_q4_0, dot_q4_1};
#endif
