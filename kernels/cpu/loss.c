/*
 * Softmax cross-entropy over rows of logits.
 *
 * A row is read three times while it sits in L2, exp taken once per
 * element: its maximum (16 lanes); then e = exp(x - max) a chunk at a time,
 * each chunk summed in 16 float lanes and the chunk sums added in double,
 * e written over dlogits when wanted; then dlogits scaled by dscale / sum.
 * loss = log(sum) + max - x[target], the target logit read before the row
 * is overwritten, since dlogits may alias logits. Every sum has a fixed
 * order set by the vocabulary size alone; rows run in parallel and their
 * losses are added in row order (mfk_parallel_sum).
 */
#include "cpu/common.h"

#include <string.h>

enum { CHUNK = 512 }; /* elements per float partial sum: short enough to keep its error small */

typedef struct xent_args {
  float *dlogits;
  const float *logits;
  const int32_t *targets;
  int64_t vocab;
  int32_t ignore_index;
  float dscale;
} xent_args;

MFK_INLINE float row_max(const float *x, int64_t n) {
  v16 m = (v16){ 0 } + x[0];
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) v16_keep_max(&m, V16(x + j));
  float mx = m[0];
  for (int l = 1; l < 16; l++) mx = m[l] > mx ? m[l] : mx;
  for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
  return mx;
}

/* e[j] = exp(x[j] - mx) for j < n <= CHUNK; returns their sum. */
MFK_INLINE double exp_chunk(float *e, const float *x, int64_t n, float mx) {
  for (int64_t j = 0; j < n; j++) e[j] = mfk_expf(x[j] - mx);
  v16 acc = { 0 };
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) acc += V16(e + j);
  float sum = v16_sum(acc);
  for (; j < n; j++) sum += e[j];
  return sum;
}

MFK_SIMD static double xent_row(void *arg, int64_t r) {
  const xent_args a = *(const xent_args *)arg; /* locals: stores to dx cannot change them */
  const float *x = a.logits + r * a.vocab;
  float *dx = a.dlogits ? a.dlogits + r * a.vocab : NULL;
  int32_t t = a.targets[r];
  if (t == a.ignore_index) {
    if (dx) memset(dx, 0, (size_t)a.vocab * sizeof(float));
    return 0.0;
  }
  float target_logit = x[t];
  float mx = row_max(x, a.vocab);
  _Alignas(64) float e[CHUNK];
  double sum = 0;
  for (int64_t j = 0; j < a.vocab; j += CHUNK) {
    int64_t n = mfk_min(CHUNK, a.vocab - j);
    sum += exp_chunk(e, x + j, n, mx);
    if (dx) memcpy(dx + j, e, (size_t)n * sizeof(float));
  }
  if (dx) {
    float k = (float)(a.dscale / sum);
    for (int64_t j = 0; j < a.vocab; j++) dx[j] *= k;
    dx[t] -= a.dscale;
  }
  return log(sum) + mx - target_logit;
}

double mfk_xent(mfk_pool *pool, float *dlogits, const float *logits, const int32_t *targets,
                int64_t n, int64_t vocab, int32_t ignore_index, float dscale, int64_t *count) {
  int64_t counted = 0;
  for (int64_t r = 0; r < n; r++) counted += targets[r] != ignore_index;
  if (count) *count = counted;
  xent_args a = { dlogits, logits, targets, vocab, ignore_index, dscale };
  return mfk_parallel_sum(pool, n, xent_row, &a);
}
