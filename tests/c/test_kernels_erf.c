/* The exact GELU's erf and the fused bias + GELU pass: mfk_erf within 1.2
 * ulp of erf (in double) at every float of [0, 2^-10] stepped by 97 ulp
 * and on a grid of 2^-16 through [2^-10, 6], odd, 1 past 4, NaN kept;
 * mfk_gelu_fwd (its vector clone, where the machine has one) giving the
 * same bits as the portable mfk_erf; mfk_bias_gelu_fwd equal to a bias
 * pass and mfk_gelu_fwd, bit for bit, on 1, 2 and 3 threads. */
#include "kernel_testing.h"

/* |got - erf(x)| in units of the float spacing at erf(x). */
static double ulps(float x) {
  double want = erf((double)x);
  float w = fabsf((float)want);
  double spacing = w >= 1.0f ? 0x1p-24 : (double)(nextafterf(w, INFINITY) - w);
  return fabs((double)mfk_erf(x) - want) / spacing;
}

static void check_accuracy(void) {
  double worst = 0;
  float at = 0;
  const float edge = 0x1p-10f;
  uint32_t end;
  memcpy(&end, &edge, sizeof end);
  for (uint32_t bits = 0; bits < end; bits += 97) {
    float x;
    memcpy(&x, &bits, sizeof x);
    double u = ulps(x);
    if (u > worst) worst = u, at = x;
  }
  for (double xd = 0x1p-10; xd < 6; xd += 0x1p-16) {
    double u = ulps((float)xd);
    if (u > worst) worst = u, at = (float)xd;
  }
  KT_CHECK(worst <= 1.2, "mfk_erf is %.3f ulp from erf at %.9g", worst, at);
  KT_CHECK(mfk_erf(-0.3f) == -mfk_erf(0.3f) && mfk_erf(5.0f) == 1.0f && mfk_erf(-INFINITY) == -1.0f,
           "mfk_erf is not odd or not 1 far out");
  KT_CHECK(isnan(mfk_erf(NAN)), "mfk_erf(NaN) is not NaN");
}

enum { ROWS = 37, D = 1536 };

static void gelu_reference_bits(void) {
  float *x = kt_random(ROWS * D, 6.0f), *y = malloc(ROWS * D * sizeof(float));
  mfk_gelu_fwd(NULL, y, x, ROWS * D, 0);
  int64_t i = 0;
  while (i < ROWS * D && y[i] == 0.5f * x[i] * (1.0f + mfk_erf(x[i] * 0.7071067812f))) i++;
  KT_CHECK(i == ROWS * D, "gelu of %.9g is %.9g, the portable erf gives %.9g", x[i], y[i],
           0.5f * x[i] * (1.0f + mfk_erf(x[i] * 0.7071067812f)));
  free(x);
  free(y);
}

typedef struct bias_case { const float *x, *bias; int approx; } bias_case;

static void run_fused(mfk_pool *pool, void *arg, float *out) {
  const bias_case *c = arg;
  memcpy(out, c->x, ROWS * D * sizeof(float));
  mfk_bias_gelu_fwd(pool, out, c->bias, ROWS, D, c->approx);
}

static void fused_bias_gelu(int approx) {
  bias_case c = {kt_random(ROWS * D, 4.0f), kt_random(D, 1.0f), approx};
  float *fused = malloc(ROWS * D * sizeof(float)), *apart = kt_copy(c.x, ROWS * D);
  run_fused(NULL, &c, fused);
  mfk_bias_fwd(NULL, apart, c.bias, ROWS, D);
  mfk_gelu_fwd(NULL, apart, apart, ROWS * D, approx);
  KT_CHECK(memcmp(fused, apart, ROWS * D * sizeof(float)) == 0, "bias + gelu (approx %d) differs from the two passes",
           approx);
  kt_same_bits(approx ? "bias + tanh gelu" : "bias + erf gelu", run_fused, &c, ROWS * D);
  free((void *)c.x);
  free((void *)c.bias);
  free(fused);
  free(apart);
}

int main(void) {
  check_accuracy();
  gelu_reference_bits();
  fused_bias_gelu(0);
  fused_bias_gelu(1);
  if (kt_failures == 0) printf("ok\n");
  return kt_failures != 0;
}
