/*
 * AdamW, elementwise, following torch.optim.AdamW's single-tensor code: the
 * bias corrections and step size are formed in double as Python floats are,
 * then used in float like PyTorch's scalar arguments.
 *
 * The step streams four arrays through memory once; the loop reads the
 * arrays through local pointers so that it vectorises (sqrtf too, the
 * kernels being built without errno for libm).
 */
#include "cpu/common.h"

typedef struct adamw_args {
  float *p, *m, *v;
  const float *g;
  float decay, b1, b2, step_size, bc2_sqrt, eps;
} adamw_args;

MFK_SIMD static void adamw_range(void *arg, int64_t i0, int64_t i1) {
  const adamw_args a = *(const adamw_args *)arg;
  for (int64_t i = i0; i < i1; i++) {
    float g = a.g[i];
    float m = a.b1 * a.m[i] + (1.0f - a.b1) * g;
    float v = a.b2 * a.v[i] + (1.0f - a.b2) * g * g;
    float denom = sqrtf(v) / a.bc2_sqrt + a.eps;
    a.p[i] = a.p[i] * a.decay - a.step_size * (m / denom);
    a.m[i] = m;
    a.v[i] = v;
  }
}

void mfk_adamw(mfk_pool *pool, float *p, const float *g, float *m, float *v, int64_t n,
               float lr, float b1, float b2, float eps, float wd, int64_t step) {
  double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
  adamw_args a = { p, m, v, g, (float)(1.0 - (double)lr * wd), b1, b2, (float)(lr / bc1),
                   (float)sqrt(bc2), eps };
  mfk_parallel_for_elems(pool, n, adamw_range, &a);
}
