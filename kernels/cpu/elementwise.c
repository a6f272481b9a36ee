/*
 * Elementwise arithmetic, dropout masks (drawn from a counter-based stream;
 * the low-rank kernels apply them), bias and the sum of squares.
 *
 * The sum of squares runs over fixed MFK_BLOCK-element blocks, each summed in
 * eight interleaved double lanes (a fixed order the compiler can vectorise),
 * and the block sums are added in order.
 */
#include "cpu/common.h"

#include <string.h>

typedef struct elem_args {
  float *y;
  const float *a, *b;
  float alpha;
  int64_t rows, d;
} elem_args;

MFK_SIMD static void add_range(void *arg, int64_t i0, int64_t i1) {
  const elem_args e = *(const elem_args *)arg;
  for (int64_t i = i0; i < i1; i++) e.y[i] = e.a[i] + e.b[i];
}

void mfk_add(mfk_pool *pool, float *y, const float *a, const float *b, int64_t n) {
  elem_args e = { .y = y, .a = a, .b = b };
  mfk_parallel_for_elems(pool, n, add_range, &e);
}

static void copy_range(void *arg, int64_t i0, int64_t i1) {
  const elem_args e = *(const elem_args *)arg;
  memcpy(e.y + i0, e.a + i0, (size_t)(i1 - i0) * sizeof(float));
}

void mfk_copy(mfk_pool *pool, float *y, const float *x, int64_t n) {
  elem_args e = { .y = y, .a = x };
  mfk_parallel_for_elems(pool, n, copy_range, &e);
}

MFK_SIMD static void axpy_range(void *arg, int64_t i0, int64_t i1) {
  const elem_args e = *(const elem_args *)arg;
  for (int64_t i = i0; i < i1; i++) e.y[i] += e.alpha * e.a[i];
}

void mfk_axpy(mfk_pool *pool, float *y, float alpha, const float *x, int64_t n) {
  elem_args e = { .y = y, .a = x, .alpha = alpha };
  mfk_parallel_for_elems(pool, n, axpy_range, &e);
}

MFK_SIMD static void scale_range(void *arg, int64_t i0, int64_t i1) {
  const elem_args e = *(const elem_args *)arg;
  for (int64_t i = i0; i < i1; i++) e.y[i] *= e.alpha;
}

void mfk_scale(mfk_pool *pool, float *x, float alpha, int64_t n) {
  elem_args e = { .y = x, .alpha = alpha };
  mfk_parallel_for_elems(pool, n, scale_range, &e);
}

typedef uint64_t u64x8 __attribute__((vector_size(8 * sizeof(uint64_t))));

typedef struct dropout_args {
  uint64_t *keep;
  uint64_t key;
  uint32_t cut;
} dropout_args;

/* Words [w0, w1) of the mask. The sixteen draws of a word are one loop the
 * compiler vectorises (the AVX-512 clone multiplies 64-bit lanes with
 * vpmullq); their fields are then compared eight draws at a time, draw d
 * of a half in lane d, each lane's kept field moved to its bit. */
MFK_SIMD static void dropout_mask_words(void *arg, int64_t w0, int64_t w1) {
  const dropout_args a = *(const dropout_args *)arg;
  const u64x8 field0_bit = { 1ull << 0, 1ull << 4, 1ull << 8, 1ull << 12,
                             1ull << 16, 1ull << 20, 1ull << 24, 1ull << 28 };
  for (int64_t w = w0; w < w1; w++) {
    uint64_t draw[16];
    for (int d = 0; d < 16; d++) draw[d] = mfk_rng_at(a.key, (uint64_t)w * 16 + (uint64_t)d);
    u64x8 bits = { 0 };
    for (int half = 0; half < 2; half++) {
      u64x8 v;
      memcpy(&v, draw + 8 * half, sizeof v);
      for (int f = 0; f < 4; f++) {
        u64x8 kept = (u64x8)((v >> 16 * f & 0xffff) >= a.cut);
        bits |= kept & field0_bit << (32 * half + f);
      }
    }
    uint64_t word = 0;
    for (int l = 0; l < 8; l++) word |= bits[l];
    a.keep[w] = word;
  }
}

void mfk_dropout_mask(mfk_pool *pool, uint64_t *keep, int64_t nwords, uint64_t key, uint32_t cut) {
  dropout_args a = { .keep = keep, .key = key, .cut = cut };
  mfk_parallel_for(pool, nwords, dropout_mask_words, &a);
}

MFK_SIMD static void bias_rows(void *arg, int64_t r0, int64_t r1) {
  const elem_args e = *(const elem_args *)arg;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t j = 0; j < e.d; j++) e.y[r * e.d + j] += e.a[j];
}

void mfk_bias_fwd(mfk_pool *pool, float *y, const float *bias, int64_t rows, int64_t d) {
  elem_args e = { .y = y, .a = bias, .rows = rows, .d = d };
  mfk_parallel_for(pool, rows, bias_rows, &e);
}

/* Columns [c0, c1) summed over all rows in row order, in double. */
MFK_SIMD static void bias_grad_cols(void *arg, int64_t c0, int64_t c1) {
  enum { COLS = 64 };
  const elem_args e = *(const elem_args *)arg;
  for (int64_t s = c0; s < c1; s += COLS) {
    int64_t width = mfk_min(COLS, c1 - s);
    double acc[COLS] = { 0 };
    for (int64_t r = 0; r < e.rows; r++)
      for (int64_t c = 0; c < width; c++) acc[c] += e.a[r * e.d + s + c];
    for (int64_t c = 0; c < width; c++) e.y[s + c] += (float)acc[c];
  }
}

void mfk_bias_bwd(mfk_pool *pool, float *dbias, const float *dy, int64_t rows, int64_t d) {
  elem_args e = { .y = dbias, .a = dy, .rows = rows, .d = d };
  mfk_parallel_for(pool, d, bias_grad_cols, &e);
}

typedef struct sumsq_args { const float *x; int64_t n; } sumsq_args;

MFK_SIMD static double block_sumsq(void *arg, int64_t block) {
  enum { LANES = 8 };
  const sumsq_args s = *(const sumsq_args *)arg;
  int64_t i0 = block * MFK_BLOCK, i1 = mfk_min(i0 + MFK_BLOCK, s.n);
  double lane[LANES] = { 0 };
  int64_t i = i0;
  for (; i + LANES <= i1; i += LANES)
    for (int l = 0; l < LANES; l++) lane[l] += (double)s.x[i + l] * s.x[i + l];
  double total = 0;
  for (; i < i1; i++) total += (double)s.x[i] * s.x[i];
  for (int l = 0; l < LANES; l++) total += lane[l];
  return total;
}

double mfk_sumsq(mfk_pool *pool, const float *x, int64_t n) {
  sumsq_args s = { x, n };
  return mfk_parallel_sum(pool, mfk_ceil_div(n, MFK_BLOCK), block_sumsq, &s);
}
