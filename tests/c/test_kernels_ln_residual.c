/* The residual LayerNorm of post-LN encoders, y = LayerNorm(x + bias +
 * res): against a double reference, the sum left in x, y written over res,
 * and the same bits on 1, 2 and 3 threads. */
#include "kernel_testing.h"

enum { N = 53, D = 384 };

typedef struct ln_case { const float *x, *bias, *res, *w, *b; } ln_case;

/* out = y, computed in place over a copy of res, as encoders call it. */
static void run(mfk_pool *pool, void *arg, float *out) {
  const ln_case *c = arg;
  float *x = kt_copy(c->x, N * D);
  memcpy(out, c->res, N * D * sizeof(float));
  mfk_layernorm_residual_fwd(pool, out, x, c->bias, out, c->w, c->b, N, D, 1e-12f);
  free(x);
}

int main(void) {
  ln_case c = {kt_random(N * D, 3.0f), kt_random(D, 0.5f), kt_random(N * D, 1.0f), kt_random(D, 1.0f),
               kt_random(D, 0.2f)};
  double *want = kt_doubles(N * D);
  for (int64_t r = 0; r < N; r++) {
    double z[D], mean = 0, var = 0;
    for (int j = 0; j < D; j++) mean += z[j] = (double)c.x[r * D + j] + c.bias[j] + c.res[r * D + j];
    mean /= D;
    for (int j = 0; j < D; j++) var += (z[j] - mean) * (z[j] - mean);
    double rstd = 1 / sqrt(var / D + 1e-12);
    for (int j = 0; j < D; j++) want[r * D + j] = (z[j] - mean) * rstd * c.w[j] + c.b[j];
  }
  float *got = malloc(N * D * sizeof(float)), *x = kt_copy(c.x, N * D);
  run(NULL, &c, got);
  kt_close("layernorm(x + bias + res)", got, want, N * D, 1e-5, 1e-5);
  mfk_layernorm_residual_fwd(NULL, got, x, c.bias, c.res, c.w, c.b, N, D, 1e-12f);
  KT_CHECK(x[7] == c.x[7] + c.bias[7] + c.res[7], "x does not hold the sum");
  kt_same_bits("layernorm(x + bias + res)", run, &c, N * D);
  free(got);
  free(x);
  free(want);
  free((void *)c.x), free((void *)c.bias), free((void *)c.res), free((void *)c.w), free((void *)c.b);
  if (kt_failures == 0) printf("ok\n");
  return kt_failures != 0;
}
