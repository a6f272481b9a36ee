/*
 * SwiGLU and GELU, forward and backward, elementwise.
 *
 * SwiGLU's sigmoid uses mfk_expf so the loops vectorise. GELU (GPT-2 and
 * BERT variants, off the Llama path) uses libm's tanhf for the tanh form
 * and mfk_erf below for the exact one.
 *
 * mfk_erf is branch-free polynomials, so loops over it vectorise where
 * libm's erff does not (erff was a fifth of a BERT encoder's time). It
 * rounds only through fmaf, never through a*b+c the compiler may or may
 * not contract, so the vector clones and the portable build give the same
 * bits; it stays within 1.2 ulp of erf (tests/c/test_kernels_erf.c).
 */
#include "cpu/common.h"

typedef struct act_args {
  float *out, *out2;
  const float *in, *in2, *grad, *bias;
  int64_t d;
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

/* c[0] + c[1] x + ... + c[n-1] x^(n-1) */
MFK_INLINE float horner(const float *c, int n, float x) {
  float p = c[n - 1];
  for (int i = n - 2; i >= 0; i--) p = fmaf(p, x, c[i]);
  return p;
}

/* exp(x) = the result times *scale, for x in [-20, 0]: x = k ln2 + r,
 * exp(r) by Taylor to r^7, scale = 2^k from its exponent bits. (Two parts,
 * so that 1 - exp(x) is one fmaf.) */
MFK_INLINE float exp_neg_parts(float x, float *scale) {
  static const float taylor[] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
  const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  float k = fmaf(x, 1.44269504f, round_magic) - round_magic;
  float r = fmaf(k, -0.693145752f, x); /* ln2 split: a high part exact in float */
  r = fmaf(k, -1.42860677e-6f, r);     /* and the low remainder */
  union { uint32_t u; float f; } two_k = { .u = (uint32_t)((int32_t)k + 127) << 23 };
  *scale = two_k.f;
  return horner(taylor, 8, r);
}

/* Least-squares fits (in double, on dense grids) of
 *   (erf(a) - a) / a           in a^2        for a < 0.875, and
 *   log(erfc(a)) + a^2         in a - 2.4375 for 0.875 <= a <= 4,
 * the second one smooth and small where erfc itself is not. Past 4, erf
 * is 1 in float. */
static const float ERF_SMALL[] = {1.28379167e-01f, -3.761263671e-01f, 1.128374376e-01f, -2.686223298e-02f,
                                  5.208500515e-03f, -8.232817116e-04f, 8.775702742e-05f};
static const float ERFC_LOG[] = {-1.534550883e+00f, -3.598233835e-01f, 5.819409213e-02f,
                                 -1.141655435e-02f, 2.301172408e-03f, -4.503297161e-04f,
                                 8.334639099e-05f, -1.410331364e-05f, 1.624419598e-06f};

MFK_INLINE float erf_poly(float x) {
  float a = fabsf(x);
  a = a > 4.0f ? 4.0f : a; /* NaN stays NaN */
  float small = fmaf(a, horner(ERF_SMALL, 7, a * a), a);
  float scale, e = exp_neg_parts(fmaf(-a, a, horner(ERFC_LOG, 9, a - 2.4375f)), &scale);
  float large = fmaf(-e, scale, 1.0f);
  return copysignf(a < 0.875f ? small : large, x);
}

float mfk_erf(float x) { return erf_poly(x); }

static const float SQRT_2_OVER_PI = 0.7978845608f, GELU_C = 0.044715f;
static const float INV_SQRT_2 = 0.7071067812f, INV_SQRT_2PI = 0.3989422804f;

/* The tanh form is not built in vector clones: a clone could contract its
 * products into FMAs and change the bits GPT-2 models have always had. */
static inline float gelu_tanh(float x) { return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))); }
MFK_INLINE float gelu_erf(float x) { return 0.5f * x * (1.0f + erf_poly(x * INV_SQRT_2)); }

static void gelu_tanh_range(void *arg, int64_t i0, int64_t i1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t i = i0; i < i1; i++) a.out[i] = gelu_tanh(a.bias ? a.in[i] + a.bias[i % a.d] : a.in[i]);
}

MFK_SIMD static void gelu_erf_range(void *arg, int64_t i0, int64_t i1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t i = i0; i < i1; i++) a.out[i] = gelu_erf(a.in[i]);
}

/* Rows [r0, r1) of out [rows, d] = gelu(in + bias), exact form. */
MFK_SIMD static void gelu_erf_bias_rows(void *arg, int64_t r0, int64_t r1) {
  const act_args a = *(const act_args *)arg;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t j = 0; j < a.d; j++) a.out[r * a.d + j] = gelu_erf(a.in[r * a.d + j] + a.bias[j]);
}

void mfk_gelu_fwd(mfk_pool *pool, float *y, const float *x, int64_t n, int approx) {
  act_args a = { .out = y, .in = x, .d = 1, .approx = approx };
  mfk_parallel_for_elems(pool, n, approx ? gelu_tanh_range : gelu_erf_range, &a);
}

void mfk_bias_gelu_fwd(mfk_pool *pool, float *y, const float *bias, int64_t rows, int64_t d, int approx) {
  act_args a = { .out = y, .in = y, .bias = bias, .d = d, .approx = approx };
  if (approx) mfk_parallel_for_elems(pool, rows * d, gelu_tanh_range, &a);
  else mfk_parallel_for(pool, rows, gelu_erf_bias_rows, &a);
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
      d = 0.5f * (1.0f + erf_poly(x * INV_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    }
    a.out[i] = a.grad[i] * d;
  }
}

void mfk_gelu_bwd(mfk_pool *pool, float *dx, const float *dy, const float *x, int64_t n, int approx) {
  act_args a = { .out = dx, .grad = dy, .in = x, .approx = approx };
  mfk_parallel_for_elems(pool, n, gelu_bwd_range, &a);
}
