/*
 * Similarity of one vector against many (kernels.h, "vector distances").
 *
 * Each dot product sums sixteen lanes in four independent accumulators over
 * the vector in order, then adds the lanes in a fixed tree, so a pair of
 * vectors always gives the same bits, whichever caller or thread asks.
 */
#include "cpu/common.h"

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

MFK_SIMD float mfk_dot(const float *a, const float *b, int64_t n) { return dot(a, b, n); }

MFK_SIMD void mfk_dot_rows(float *out, const float *q, const float *x, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; r++) out[r] = dot(q, x + r * dim, dim);
}
