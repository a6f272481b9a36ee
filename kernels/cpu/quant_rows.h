/*
 * The x86 body of the quantized dot products (quant.h), included by
 * quant_avx2.c and quant_vnni.c, which differ only in how byte products
 * are summed. The includer defines
 *   QR_TARGET       the target attribute of every function here,
 *   dot_u8_s8(u, s) eight i32 sums of u[i] * s[i] over groups of four bytes,
 *                   u unsigned and s signed (no saturation: |u| <= 128),
 * and then names qdot_group, the set's entry point.
 *
 * One register lane per weight row of the group. Chunk k of a record gives
 * each row the sum of four products, "part k" (weights 4k..4k+3 for Q8_0;
 * for Q4, k < 4 the low nibbles 4k.., k >= 4 the high nibbles 16+4(k-4)..;
 * either way they meet activations 4k..4k+3, broadcast to every lane).
 * Unsigned Q4_1 nibbles go straight into dot_u8_s8; signed Q8_0 and Q4_0
 * weights give it their magnitude and move their sign onto the activations.
 *
 * The float arithmetic is fixed: part k, scaled by d_w * d_x, goes into
 * accumulator k of the row, one set of eight for even blocks and one for
 * odd blocks; Q4_1's offsets m_w * s_x are summed apart per set. At the end
 * the sets are added, the offsets join part 0, and the eight parts are
 * added pairwise, ((0+4)+(2+6)) + ((1+5)+(3+7)). GCC writes _mm256_mul_ps
 * and _mm256_add_ps as plain vector arithmetic, which it may contract into
 * an FMA; the one product that feeds an add is kept apart, so the rounding
 * is the same in every build.
 */
#include <immintrin.h>
#include <string.h>

#define QR_INLINE static QR_TARGET inline __attribute__((always_inline))

enum { QR_PARTS = 8 };

/* One activation row's float sums over the blocks of one parity. */
typedef struct qr_acc {
  __m256 part[QR_PARTS];
  __m256 offset;
} qr_acc;

/* Four activation bytes at p in every lane. */
QR_INLINE __m256i broadcast4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

/* a * b rounded on its own: the empty asm hides it from FMA contraction. */
QR_INLINE __m256 mul_apart(__m256 a, __m256 b) {
  __m256 p = _mm256_mul_ps(a, b);
  __asm__("" : "+x"(p));
  return p;
}

/* The record's weights of part k as bytes, four per lane: unsigned for
 * Q4_1, signed for the others. */
QR_INLINE void load_parts(mfk_qtype type, const uint8_t *qs, __m256i w[QR_PARTS]) {
  if (type == MFK_Q8_0) {
    for (int k = 0; k < QR_PARTS; k++) w[k] = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
    return;
  }
  const __m256i mask = _mm256_set1_epi8(15), eight = _mm256_set1_epi8(8);
  for (int c = 0; c < 4; c++) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
    w[c] = _mm256_and_si256(v, mask);
    w[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
  }
  if (type == MFK_Q4_0)
    for (int k = 0; k < QR_PARTS; k++) w[k] = _mm256_sub_epi8(w[k], eight);
}

QR_INLINE __m256i part_sums(mfk_qtype type, __m256i w, const int8_t *x4) {
  __m256i x = broadcast4(x4);
  if (type == MFK_Q4_1) return dot_u8_s8(w, x);
  return dot_u8_s8(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
}

/* Record `rec` (block i) against block i of each activation row. */
QR_INLINE void add_record(mfk_qtype type, const unsigned char *rec, const mfk_block_q8_act *x, int64_t nb,
                          int rows, qr_acc *acc) {
  const uint16_t *d = (const uint16_t *)rec, *m = d + MFK_QLANES;
  const uint8_t *qs = rec + (type == MFK_Q4_1 ? 32 : 16);
  __m256i w[QR_PARTS];
  __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d));
  load_parts(type, qs, w);
  for (int r = 0; r < rows; r++) {
    const mfk_block_q8_act *xb = x + r * nb;
    __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(xb->d));
    for (int k = 0; k < QR_PARTS; k++)
      acc[r].part[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(part_sums(type, w[k], xb->qs + 4 * k)),
                                       acc[r].part[k]);
    if (type == MFK_Q4_1) {
      __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)m));
      acc[r].offset = _mm256_add_ps(acc[r].offset, mul_apart(mw, _mm256_set1_ps(xb->s)));
    }
  }
}

/* The records i = parity, parity + 2, ... of the group into acc. */
QR_INLINE void add_records(mfk_qtype type, const unsigned char *group, const mfk_block_q8_act *x, int64_t nb,
                           int rows, int parity, qr_acc *acc) {
  size_t bytes = mfk_qrecord_bytes(type);
  for (int r = 0; r < rows; r++) {
    for (int k = 0; k < QR_PARTS; k++) acc[r].part[k] = _mm256_setzero_ps();
    acc[r].offset = _mm256_setzero_ps();
  }
  for (int64_t i = parity; i < nb; i += 2) add_record(type, group + i * bytes, x + i, nb, rows, acc);
}

QR_INLINE void dot_group(mfk_qtype type, const void *group, const mfk_block_q8_act *x, int64_t nb, int rows,
                         float out[][MFK_QLANES]) {
  qr_acc even[MFK_QROWS], odd[MFK_QROWS];
  add_records(type, group, x, nb, rows, 0, even);
  add_records(type, group, x, nb, rows, 1, odd);
  for (int r = 0; r < rows; r++) {
    __m256 p[QR_PARTS];
    for (int k = 0; k < QR_PARTS; k++) p[k] = _mm256_add_ps(even[r].part[k], odd[r].part[k]);
    if (type == MFK_Q4_1) p[0] = _mm256_add_ps(p[0], _mm256_add_ps(even[r].offset, odd[r].offset));
    __m256 a = _mm256_add_ps(_mm256_add_ps(p[0], p[4]), _mm256_add_ps(p[2], p[6]));
    __m256 b = _mm256_add_ps(_mm256_add_ps(p[1], p[5]), _mm256_add_ps(p[3], p[7]));
    _mm256_storeu_ps(out[r], _mm256_add_ps(a, b));
  }
}

/* Constant row counts, so each case's row loops unroll into registers. */
QR_INLINE void dot_group_of(mfk_qtype type, const void *group, const mfk_block_q8_act *x, int64_t nb, int rows,
                            float out[][MFK_QLANES]) {
  if (rows == 1) dot_group(type, group, x, nb, 1, out);
  else dot_group(type, group, x, nb, MFK_QROWS, out);
}

static QR_TARGET void qdot_group(mfk_qtype type, const void *group, const mfk_block_q8_act *x, int64_t nb,
                                 int rows, float out[][MFK_QLANES]) {
  switch (type) {
  case MFK_Q8_0: dot_group_of(MFK_Q8_0, group, x, nb, rows, out); return;
  case MFK_Q4_0: dot_group_of(MFK_Q4_0, group, x, nb, rows, out); return;
  case MFK_Q4_1: dot_group_of(MFK_Q4_1, group, x, nb, rows, out); return;
  }
}
