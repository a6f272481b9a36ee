/*
 * Softmax cross-entropy over rows of logits.
 *
 * Each row: its maximum, then sum(exp(x - max)) in eight interleaved double
 * lanes; loss = log(sum) + max - x[target]. The target logit is read before
 * the row is overwritten, since dlogits may alias logits. Row losses are
 * added in row order (mfk_parallel_sum).
 */
#include "cpu/common.h"

typedef struct xent_args {
  float *dlogits;
  const float *logits;
  const int32_t *targets;
  int64_t vocab;
  int32_t ignore_index;
  float dscale;
} xent_args;

MFK_SIMD static double xent_row(void *arg, int64_t r) {
  enum { LANES = 8 };
  const xent_args *a = arg;
  const float *x = a->logits + r * a->vocab;
  float *dx = a->dlogits ? a->dlogits + r * a->vocab : NULL;
  int32_t t = a->targets[r];
  if (t == a->ignore_index) {
    for (int64_t j = 0; dx && j < a->vocab; j++) dx[j] = 0.0f;
    return 0.0;
  }
  float target_logit = x[t], mx = x[0];
  for (int64_t j = 1; j < a->vocab; j++) mx = x[j] > mx ? x[j] : mx;
  double lane[LANES] = { 0 }, sum = 0;
  int64_t j = 0;
  for (; j + LANES <= a->vocab; j += LANES)
    for (int l = 0; l < LANES; l++) lane[l] += mfk_expf(x[j + l] - mx);
  for (; j < a->vocab; j++) sum += mfk_expf(x[j] - mx);
  for (int l = 0; l < LANES; l++) sum += lane[l];
  if (dx) {
    float k = (float)(a->dscale / sum);
    for (j = 0; j < a->vocab; j++) dx[j] = mfk_expf(x[j] - mx) * k;
    dx[t] -= a->dscale;
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
