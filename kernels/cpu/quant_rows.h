/*
 * The x86 body of the quantized dot products (quant.h), included by
 * quant_avx2.c and quant_vnni.c, which differ only in how a block's 32 byte
 * products become eight i32 sums. The includer defines
 *   QR_TARGET       the target attribute of every function here,
 *   dot_u8_s8(u, s) eight i32 sums of u[i] * s[i] over groups of four bytes,
 *                   u unsigned and s signed (no saturation: |u| <= 127),
 * and then names qdot_rows, the set's entry point.
 *
 * One block against one activation row: unsigned Q4_1 nibbles go straight
 * into dot_u8_s8; signed Q8_0 and Q4_0 weights give it their magnitude and
 * move their sign onto the activations. The block scale turns the eight sums
 * into float lanes, added to the row's accumulator for even or odd blocks
 * (two chains hide the add latency); Q4_1's offsets m * s are summed apart
 * and join lane 0 at the end. Sums go through intrinsics, never through
 * plain float expressions the compiler could contract into an FMA, so the
 * rounding is the same in every build.
 */
#include <immintrin.h>

#define QR_INLINE static QR_TARGET inline __attribute__((always_inline))

QR_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/* 16 bytes of nibble pairs as 32 values 0..15: low nibbles first, as the
 * Q4 blocks order their weights. */
QR_INLINE __m256i nibbles(const uint8_t *qs) {
  __m128i b = _mm_loadu_si128((const __m128i *)qs);
  __m256i both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

/* Weight block i of w as 32 bytes for dot_u8_s8 (unsigned) plus, for the
 * signed types, the signs to put on the activations. */
typedef struct qr_block {
  __m256i mag, sign;
  float d, m;
} qr_block;

QR_INLINE qr_block load_block(mfk_qtype type, const void *w, int64_t i) {
  qr_block k = { _mm256_setzero_si256(), _mm256_setzero_si256(), 0, 0 };
  if (type == MFK_Q4_1) {
    const mfk_block_q4_1 *b = (const mfk_block_q4_1 *)w + i;
    k.mag = nibbles(b->qs);
    k.d = _cvtsh_ss(b->d);
    k.m = _cvtsh_ss(b->m);
    return k;
  }
  if (type == MFK_Q8_0) {
    const mfk_block_q8_0 *b = (const mfk_block_q8_0 *)w + i;
    k.sign = _mm256_loadu_si256((const __m256i *)b->qs);
    k.d = _cvtsh_ss(b->d);
  } else {
    const mfk_block_q4_0 *b = (const mfk_block_q4_0 *)w + i;
    k.sign = _mm256_sub_epi8(nibbles(b->qs), _mm256_set1_epi8(8));
    k.d = _cvtsh_ss(b->d);
  }
  k.mag = _mm256_sign_epi8(k.sign, k.sign);
  return k;
}

/* acc += the block's products with activation block x (Q4_1's offset apart). */
QR_INLINE __m256 add_block(mfk_qtype type, __m256 acc, const qr_block *k, const mfk_block_q8_act *x) {
  __m256i xq = _mm256_loadu_si256((const __m256i *)x->qs);
  if (type != MFK_Q4_1) xq = _mm256_sign_epi8(xq, k->sign);
  __m256 sums = _mm256_cvtepi32_ps(dot_u8_s8(k->mag, xq));
  return _mm256_fmadd_ps(_mm256_set1_ps(k->d * x->d), sums, acc);
}

/* Weight block i against block i of each activation row. */
QR_INLINE void add_blocks(mfk_qtype type, __m256 *acc, __m128 *offset, const void *w, int64_t i,
                          const mfk_block_q8_act *x, int64_t xs, int rows) {
  qr_block k = load_block(type, w, i);
  for (int r = 0; r < rows; r++) {
    const mfk_block_q8_act *xb = x + r * xs + i;
    acc[r] = add_block(type, acc[r], &k, xb);
    if (type == MFK_Q4_1) offset[r] = _mm_add_ss(offset[r], _mm_set_ss(k.m * xb->s));
  }
}

QR_INLINE void dot_rows(mfk_qtype type, const void *w, const mfk_block_q8_act *x, int64_t xs,
                        int64_t nb, int rows, float *out) {
  __m256 acc[2][MFK_QROWS];
  __m128 offset[2][MFK_QROWS];
  for (int r = 0; r < rows; r++) {
    acc[0][r] = acc[1][r] = _mm256_setzero_ps();
    offset[0][r] = offset[1][r] = _mm_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    add_blocks(type, acc[0], offset[0], w, i, x, xs, rows);
    add_blocks(type, acc[1], offset[1], w, i + 1, x, xs, rows);
  }
  if (i < nb) add_blocks(type, acc[0], offset[0], w, i, x, xs, rows);
  for (int r = 0; r < rows; r++) {
    __m256 sum = _mm256_add_ps(acc[0][r], acc[1][r]);
    if (type == MFK_Q4_1)
      sum = _mm256_add_ps(sum, _mm256_zextps128_ps256(_mm_add_ss(offset[0][r], offset[1][r])));
    out[r] = hsum(sum);
  }
}

/* Constant row counts, so each case's row loops unroll into registers. */
QR_INLINE void dot_rows_of(mfk_qtype type, const void *w, const mfk_block_q8_act *x, int64_t xs,
                           int64_t nb, int rows, float *out) {
  switch (rows) {
  case 1: dot_rows(type, w, x, xs, nb, 1, out); return;
  case 2: dot_rows(type, w, x, xs, nb, 2, out); return;
  case 3: dot_rows(type, w, x, xs, nb, 3, out); return;
  default: dot_rows(type, w, x, xs, nb, MFK_QROWS, out); return;
  }
}

static QR_TARGET void qdot_rows(mfk_qtype type, const void *w, const mfk_block_q8_act *x, int64_t xs,
                                int64_t nb, int rows, float *out) {
  switch (type) {
  case MFK_Q8_0: dot_rows_of(MFK_Q8_0, w, x, xs, nb, rows, out); return;
  case MFK_Q4_0: dot_rows_of(MFK_Q4_0, w, x, xs, nb, rows, out); return;
  case MFK_Q4_1: dot_rows_of(MFK_Q4_1, w, x, xs, nb, rows, out); return;
  }
}
