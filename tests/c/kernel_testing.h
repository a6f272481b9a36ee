/*
 * Small helpers for the kernel tests: deterministic random inputs, checks
 * against double-precision references, finite-difference gradients, and
 * bit-for-bit comparison of a kernel run on pools of 1, 2 and 3 threads.
 * Each check prints what failed; main returns kt_failures != 0.
 */
#ifndef KERNEL_TESTING_H
#define KERNEL_TESTING_H

#include "cpu/kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int kt_failures;

#define KT_CHECK(cond, ...)                                  \
  do {                                                       \
    if (!(cond)) {                                           \
      kt_failures++;                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
      fprintf(stderr, __VA_ARGS__);                          \
      fputc('\n', stderr);                                   \
    }                                                        \
  } while (0)

static uint64_t kt_state = 0x9e3779b97f4a7c15ULL;

/* Uniform in [-1, 1), from a fixed xorshift sequence. */
static inline float kt_uniform(void) {
  kt_state ^= kt_state << 13;
  kt_state ^= kt_state >> 7;
  kt_state ^= kt_state << 17;
  return (float)((double)(kt_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static inline float *kt_random(int64_t n, float scale) {
  float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  for (int64_t i = 0; i < n; i++) x[i] = scale * kt_uniform();
  return x;
}

static inline float *kt_copy(const float *x, int64_t n) {
  float *y = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  memcpy(y, x, (size_t)n * sizeof(float));
  return y;
}

/* Every |got - want| <= atol + rtol |want|; reports the worst element. */
static inline void kt_close(const char *what, const float *got, const double *want, int64_t n, double rtol,
                     double atol) {
  int64_t worst = -1;
  double worst_ratio = 1.0;
  for (int64_t i = 0; i < n; i++) {
    double ratio = fabs(got[i] - want[i]) / (atol + rtol * fabs(want[i]));
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  KT_CHECK(worst < 0, "%s: element %lld is %.9g, expected %.9g (rtol %g, atol %g)", what,
           (long long)worst, worst >= 0 ? got[worst] : 0.0, worst >= 0 ? want[worst] : 0.0, rtol,
           atol);
}

/* Central differences of a scalar function of x, in double: grad[i] =
 * (f(x + h e_i) - f(x - h e_i)) / 2h, dividing by the step float rounding
 * actually made. x is restored afterwards. */
typedef double (*kt_scalar_fn)(void *ctx);
static inline void kt_numeric_grad(double *grad, float *x, int64_t n, float h, kt_scalar_fn f, void *ctx) {
  for (int64_t i = 0; i < n; i++) {
    float saved = x[i], above = saved + h, below = saved - h;
    x[i] = above;
    double up = f(ctx);
    x[i] = below;
    double down = f(ctx);
    x[i] = saved;
    grad[i] = (up - down) / ((double)above - (double)below);
  }
}

/* Runs run(pool, ctx, out) with pools of 1, 2 and 3 threads, out zeroed
 * first; the n floats of out must be the same bits each time. */
typedef void (*kt_pool_fn)(mfk_pool *pool, void *ctx, float *out);
static inline void kt_same_bits(const char *what, kt_pool_fn run, void *ctx, int64_t n) {
  float *first = calloc((size_t)n, sizeof(float)), *again = calloc((size_t)n, sizeof(float));
  for (int threads = 1; threads <= 3; threads++) {
    mfk_pool *pool = mfk_pool_new(threads);
    memset(again, 0, (size_t)n * sizeof(float)); /* outputs that accumulate start from zero */
    run(pool, ctx, threads == 1 ? first : again);
    mfk_pool_free(pool);
    int64_t i = 0;
    while (threads > 1 && i < n && memcmp(first + i, again + i, sizeof(float)) == 0) i++;
    KT_CHECK(threads == 1 || i == n, "%s: %d threads give different bits than 1 from float %lld on",
             what, threads, (long long)i);
  }
  free(first);
  free(again);
}

static inline double *kt_doubles(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

#endif
