/*
 * Similarity of one vector against many (kernels.h, "vector distances").
 *
 * Each dot product sums sixteen lanes in four independent accumulators over
 * the vector in order, then adds the lanes in a fixed tree, so a pair of
 * vectors always gives the same bits, whichever caller or thread asks.
 *
 * A graph search reads rows scattered over memory, and a row of a few
 * hundred floats takes longer to arrive from DRAM than to multiply, so the
 * gathering kernel asks for the rows two places ahead of the one it is
 * multiplying: their loads overlap the arithmetic instead of following it.
 * Only a row's first lines are asked for; the hardware prefetcher follows
 * on with the rest, and asking for more fills the core's miss buffers and
 * stalls it (measured: slower).
 */
#include "cpu/common.h"

enum {
  CACHE_LINE = 64,
  ROWS_AHEAD = 2,  /* rows requested ahead of the one being multiplied */
  LINES_AHEAD = 4, /* cache lines requested of each: the hardware streams the rest */
};

MFK_INLINE float dot(const float *a, const float *b, int64_t n) {
  v16 acc[4] = {{0}, {0}, {0}, {0}};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int u = 0; u < 4; u++) acc[u] += V16(a + i + 16 * u) * V16(b + i + 16 * u);
  for (; i + 16 <= n; i += 16) acc[0] += V16(a + i) * V16(b + i);
  float tail = 0.0f;
  for (; i < n; i++) tail += a[i] * b[i];
  return v16_sum((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
}

MFK_INLINE void prefetch_row(const float *row, int64_t n) {
  int64_t bytes = mfk_min(n * (int64_t)sizeof(float), LINES_AHEAD * CACHE_LINE);
  for (int64_t b = 0; b < bytes; b += CACHE_LINE) __builtin_prefetch((const char *)row + b);
}

MFK_SIMD float mfk_dot(const float *a, const float *b, int64_t n) { return dot(a, b, n); }

MFK_SIMD void mfk_dot_rows(float *out, const float *q, const float *x, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; r++) out[r] = dot(q, x + r * dim, dim);
}

MFK_SIMD void mfk_dot_gather(float *out, const float *q, const float *x, const int32_t *rows, int64_t n, int64_t dim) {
  for (int64_t i = 0; i < n && i < ROWS_AHEAD; i++) prefetch_row(x + rows[i] * dim, dim);
  for (int64_t i = 0; i < n; i++) {
    if (i + ROWS_AHEAD < n) prefetch_row(x + rows[i + ROWS_AHEAD] * dim, dim);
    out[i] = dot(q, x + rows[i] * dim, dim);
  }
}
