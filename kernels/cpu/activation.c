/*
 * SwiGLU and GELU, forward and backward, elementwise.
 *
 * SwiGLU's sigmoid uses mfk_expf so the loops vectorise; GELU (GPT-2 and
 * BERT variants, off the Llama path) uses libm's tanhf and erff.
 */
#include "cpu/common.h"

typedef struct act_args {
  float *out, *out2;
  const float *in, *in2, *grad;
  int approx;
} act_args;

static inline float sigmoid(float x) { return 1.0f / (1.0f + mfk_expf(-x)); }

MFK_SIMD static void swiglu_fwd_range(void *arg, int64_t i0, int64_t i1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t i = i0; i < i1; i++) {
    float g = a.in[i];
    a.out[i] = g * sigmoid(g) * a.in2[i];
  }
}

void mfk_swiglu_fwd(mfk_pool *pool, float *out, const float *gate, const float *up, int64_t n) {
  act_args a = { .out = out, .in = gate, .in2 = up };
  mfk_parallel_for_elems(pool, n, swiglu_fwd_range, &a);
}

/* d silu(g)/dg = s (1 + g (1 - s)) with s = sigmoid(g) */
MFK_SIMD static void swiglu_bwd_range(void *arg, int64_t i0, int64_t i1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t i = i0; i < i1; i++) {
    float g = a.in[i], u = a.in2[i], dy = a.grad[i];
    float s = sigmoid(g);
    a.out[i] = dy * u * (s * (1.0f + g * (1.0f - s)));
    a.out2[i] = dy * (g * s);
  }
}

void mfk_swiglu_bwd(mfk_pool *pool, float *dgate, float *dup, const float *dout,
                    const float *gate, const float *up, int64_t n) {
  act_args a = { .out = dgate, .out2 = dup, .grad = dout, .in = gate, .in2 = up };
  mfk_parallel_for_elems(pool, n, swiglu_bwd_range, &a);
}

static const float SQRT_2_OVER_PI = 0.7978845608f, GELU_C = 0.044715f;
static const float INV_SQRT_2 = 0.7071067812f, INV_SQRT_2PI = 0.3989422804f;

static void gelu_fwd_range(void *arg, int64_t i0, int64_t i1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t i = i0; i < i1; i++) {
    float x = a.in[i];
    float t = a.approx ? tanhf(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)) : erff(x * INV_SQRT_2);
    a.out[i] = 0.5f * x * (1.0f + t);
  }
}

void mfk_gelu_fwd(mfk_pool *pool, float *y, const float *x, int64_t n, int approx) {
  act_args a = { .out = y, .in = x, .approx = approx };
  mfk_parallel_for_elems(pool, n, gelu_fwd_range, &a);
}

static void gelu_bwd_range(void *arg, int64_t i0, int64_t i1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t i = i0; i < i1; i++) {
    float x = a.in[i], d;
    if (a.approx) {
      float t = tanhf(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
      float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_C * x * x);
      d = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
    } else {
      d = 0.5f * (1.0f + erff(x * INV_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    }
    a.out[i] = a.grad[i] * d;
  }
}

void mfk_gelu_bwd(mfk_pool *pool, float *dx, const float *dy, const float *x, int64_t n, int approx) {
  act_args a = { .out = dx, .grad = dy, .in = x, .approx = approx };
  mfk_parallel_for_elems(pool, n, gelu_bwd_range, &a);
}
