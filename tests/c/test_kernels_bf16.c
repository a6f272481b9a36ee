/* bf16 GEMM (kernels/cpu/gemm_bf16.c) against a double-precision product of
 * the same bf16 values, for each micro-kernel this machine runs: every
 * transpose combination, edge tiles, odd K, several K blocks and column
 * blocks, alpha/beta (beta = 0 must ignore NaN in C); f32 A rounded on
 * packing; the same bits on 1, 2 and 3 threads; and the portable path
 * against the AVX512_BF16 one.
 *
 * The error bound. The reference is computed from the bf16 inputs
 * themselves, so their rounding is no part of the error: a product of two
 * bf16 values (8-bit significands) is exact in f32, and the only roundings
 * are the K additions into the f32 sum and the alpha/beta update, each
 * within 2^-24 relative. Recursive summation then gives
 * |C - ref| <= (K + 2) 2^-24 (|alpha| sum|a b| + |beta c|), the f32 GEMM's
 * bound; the test allows twice that. The K 2^-8 often quoted for bf16 is
 * the error against the unrounded f32 operands: each rounding to bf16 moves
 * a value by up to 2^-9 relative, so a product by up to ~2^-8. With only A
 * rounded (mfk_gemm_f32_bf16, checked against the unrounded f32 A) the
 * input term is 2^-9 sum|a b|, added to the summation bound. */
#include "cpu/gemm_bf16.h"
#include "kernel_testing.h"
#include "moonforge.h"

#include <float.h>

typedef struct bf16_case {
  int ta, tb;
  int64_t M, N, K;
  float alpha, beta;
} bf16_case;

/* Random bf16 values in [-scale, scale), rounded from kt_uniform's floats. */
static uint16_t *random_bf16(int64_t n, float scale) {
  uint16_t *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
  for (int64_t i = 0; i < n; i++) x[i] = mf_f32_to_bf16(scale * kt_uniform());
  return x;
}

static int64_t at(int64_t ld, int trans, int64_t r, int64_t c) { return trans ? c * ld + r : r * ld + c; }

/* Checks C against alpha op(A) op(B) + beta C0 in double, within
 * (K + 2) FLT_EPSILON times the magnitude plus input_rel times the sum of
 * |products| (the rounding of inputs the reference did not round). */
static void check_result(const char *what, bf16_case g, const double *A, int64_t lda, const double *B,
                         int64_t ldb, const float *C0, const float *C, int64_t ldc, double input_rel) {
  double worst_ratio = 0;
  for (int64_t i = 0; i < g.M; i++)
    for (int64_t j = 0; j < g.N; j++) {
      double sum = 0, mag = 0;
      for (int64_t k = 0; k < g.K; k++) {
        double p = A[at(lda, g.ta, i, k)] * B[at(ldb, g.tb, k, j)];
        sum += p;
        mag += fabs(p);
      }
      double c = g.beta == 0.0f ? 0.0 : (double)g.beta * C0[i * ldc + j];
      double ref = g.alpha * sum + c;
      double tol = ((g.K + 2) * FLT_EPSILON + input_rel) * (fabs(g.alpha) * mag + fabs(c)) + 1e-30;
      double err = fabs(C[i * ldc + j] - ref) / tol;
      if (!(err <= worst_ratio)) worst_ratio = err;
    }
  KT_CHECK(worst_ratio <= 1.0, "%s ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g: error %.3g x bound", what,
           g.ta, g.tb, (long long)g.M, (long long)g.N, (long long)g.K, g.alpha, g.beta, worst_ratio);
  for (int64_t i = 0; i < g.M; i++) /* columns past N (the ldc padding) untouched */
    KT_CHECK(memcmp(&C[i * ldc + g.N], &C0[i * ldc + g.N], sizeof *C) == 0, "%s wrote outside C", what);
}

static double *bf16_values(const uint16_t *x, int64_t n) {
  double *y = kt_doubles(n);
  for (int64_t i = 0; i < n; i++) y[i] = mf_bf16_to_f32(x[i]);
  return y;
}

/* Initial C: random, or NaN where beta = 0 must ignore it. */
static float *initial_c(bf16_case g, int64_t ldc) {
  float *C = kt_random(g.M * ldc, 1.0f);
  if (g.beta == 0.0f)
    for (int64_t i = 0; i < g.M * ldc; i++) C[i] = NAN;
  return C;
}

static void check_case(const mfk_bf16_ukernel *uk, mfk_pool *pool, bf16_case g) {
  /* Leading dimensions larger than the rows, to catch stride mistakes. */
  int64_t lda = (g.ta ? g.M : g.K) + 3, ldb = (g.tb ? g.K : g.N) + 2, ldc = g.N + 1;
  int64_t na = (g.ta ? g.K : g.M) * lda, nb = (g.tb ? g.N : g.K) * ldb;
  uint16_t *A = random_bf16(na, 1.0f), *B = random_bf16(nb, 1.0f);
  double *Ad = bf16_values(A, na), *Bd = bf16_values(B, nb);
  float *C0 = initial_c(g, ldc), *C = kt_copy(C0, g.M * ldc);
  mfk_gemm_bf16_using(uk, pool, g.ta, g.tb, g.M, g.N, g.K, g.alpha, A, NULL, lda, B, ldb, g.beta, C, ldc);
  char what[64];
  snprintf(what, sizeof what, "%s bf16 gemm", uk->isa);
  check_result(what, g, Ad, lda, Bd, ldb, C0, C, ldc, 0.0);
  free(A), free(B), free(Ad), free(Bd), free(C0), free(C);
}

/* f32 A: within the bound of its unrounded values, and the same bits as
 * mfk_gemm_bf16 on A rounded by the engine's mf_f32_to_bf16. */
static void check_mixed(const mfk_bf16_ukernel *uk, mfk_pool *pool, bf16_case g) {
  int64_t lda = (g.ta ? g.M : g.K) + 1, ldb = g.tb ? g.K : g.N, ldc = g.N + 1;
  int64_t na = (g.ta ? g.K : g.M) * lda, nb = (g.tb ? g.N : g.K) * ldb;
  float *A = kt_random(na, 1.0f);
  uint16_t *A16 = malloc((size_t)na * sizeof *A16), *B = random_bf16(nb, 1.0f);
  double *Ad = kt_doubles(na), *Bd = bf16_values(B, nb);
  for (int64_t i = 0; i < na; i++) A16[i] = mf_f32_to_bf16(A[i]), Ad[i] = A[i];
  float *C0 = initial_c(g, ldc), *C = kt_copy(C0, g.M * ldc), *Cr = kt_copy(C0, g.M * ldc);
  mfk_gemm_bf16_using(uk, pool, g.ta, g.tb, g.M, g.N, g.K, g.alpha, NULL, A, lda, B, ldb, g.beta, C, ldc);
  mfk_gemm_bf16_using(uk, pool, g.ta, g.tb, g.M, g.N, g.K, g.alpha, A16, NULL, lda, B, ldb, g.beta, Cr, ldc);
  char what[64];
  snprintf(what, sizeof what, "%s f32 x bf16 gemm", uk->isa);
  check_result(what, g, Ad, lda, Bd, ldb, C0, C, ldc, 0x1p-9);
  KT_CHECK(memcmp(C, Cr, (size_t)(g.M * ldc) * sizeof *C) == 0,
           "%s: f32 A gives other bits than A rounded beforehand", what);
  free(A), free(A16), free(B), free(Ad), free(Bd), free(C0), free(C), free(Cr);
}

typedef struct bits_ctx {
  const mfk_bf16_ukernel *uk;
  bf16_case g;
  const uint16_t *A, *B;
  const float *C;
} bits_ctx;

static void run_gemm(mfk_pool *pool, void *arg, float *out) {
  bits_ctx *b = arg;
  bf16_case g = b->g;
  memcpy(out, b->C, (size_t)(g.M * g.N) * sizeof(float));
  mfk_gemm_bf16_using(b->uk, pool, g.ta, g.tb, g.M, g.N, g.K, g.alpha, b->A, NULL, g.ta ? g.M : g.K, b->B,
                      g.tb ? g.K : g.N, g.beta, out, g.N);
}

static void check_bits(const mfk_bf16_ukernel *uk, bf16_case g) {
  uint16_t *A = random_bf16(g.M * g.K, 1.0f), *B = random_bf16(g.K * g.N, 1.0f);
  float *C = kt_random(g.M * g.N, 1.0f);
  bits_ctx ctx = { uk, g, A, B, C };
  char what[64];
  snprintf(what, sizeof what, "%s bf16 gemm %lldx%lldx%lld", uk->isa, (long long)g.M, (long long)g.N,
           (long long)g.K);
  kt_same_bits(what, run_gemm, &ctx, g.M * g.N);
  free(A), free(B), free(C);
}

static int machine_runs(const mfk_bf16_ukernel *uk) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (uk == &mfk_bf16_ukernel_avx512) return __builtin_cpu_supports("avx512bf16");
#endif
  return 1;
}

#if defined(__x86_64__)
/* C = op(A) op(B) by both micro-kernels on the same inputs. */
static void run_both(mfk_pool *pool, bf16_case g, const uint16_t *A, const uint16_t *B, float *generic,
                     float *avx512) {
  int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
  mfk_gemm_bf16_using(&mfk_bf16_ukernel_generic, pool, g.ta, g.tb, g.M, g.N, g.K, 1.0f, A, NULL, lda, B, ldb,
                      0.0f, generic, g.N);
  mfk_gemm_bf16_using(&mfk_bf16_ukernel_avx512, pool, g.ta, g.tb, g.M, g.N, g.K, 1.0f, A, NULL, lda, B, ldb,
                      0.0f, avx512, g.N);
}

/* The portable kernel adds in vdpbf16ps's order, so on normal values the
 * two paths agree bit for bit. Where products are subnormal the instruction
 * flushes them to zero and the portable code does not: close, not equal. */
static void check_paths_agree(mfk_pool *pool) {
  bf16_case g = { 0, 1, 37, 45, 1601, 1.0f, 0.0f };
  uint16_t *A = random_bf16(g.M * g.K, 1.0f), *B = random_bf16(g.K * g.N, 1.0f);
  float *generic = calloc((size_t)(g.M * g.N), sizeof(float));
  float *avx512 = calloc((size_t)(g.M * g.N), sizeof(float));
  run_both(pool, g, A, B, generic, avx512);
  KT_CHECK(memcmp(generic, avx512, (size_t)(g.M * g.N) * sizeof(float)) == 0,
           "generic and avx512bf16 paths give different bits on normal inputs");
  for (int64_t i = 0; i < g.M * g.K; i++) A[i] = mf_f32_to_bf16(0x1p-70f);
  for (int64_t i = 0; i < g.K * g.N; i++) B[i] = mf_f32_to_bf16(0x1p-70f);
  run_both(pool, g, A, B, generic, avx512);
  KT_CHECK(generic[0] == (float)(g.K * 0x1p-140) && avx512[0] == 0.0f,
           "subnormal products: generic %g (want %g), avx512bf16 %g (want 0, flushed)", generic[0],
           (double)(g.K * 0x1p-140), avx512[0]);
  KT_CHECK(fabsf(generic[0] - avx512[0]) <= g.K * FLT_MIN, "subnormal products: paths further apart than K 2^-126");
  free(A), free(B), free(generic), free(avx512);
}
#endif

int main(void) {
  const mfk_bf16_ukernel *kernels[] = {
    &mfk_bf16_ukernel_generic,
#if defined(__x86_64__)
    &mfk_bf16_ukernel_avx512,
#endif
  };
  const bf16_case shapes[] = {
    { 0, 0, 11, 13, 5, 1.0f, 0.0f },    { 0, 0, 9, 1, 1, 1.0f, 0.0f },      /* odd K, K = 1 */
    { 0, 0, 15, 33, 18, 0.5f, 1.5f },   { 0, 0, 29, 70, 1601, 1.0f, 1.0f }, /* 3 K blocks, odd K */
    { 0, 0, 3, 700, 40, 1.0f, 0.0f },   /* split columns, 2 column blocks */
    { 0, 0, 50, 1100, 9, -2.0f, 0.5f }, /* 3 column blocks */
    { 0, 0, 5, 37, 1603, 0.5f, 1.5f },  /* few rows (the decoding path with op(B) = B^T), K tail */
  };
  const bf16_case mixed_shapes[] = {
    { 0, 0, 15, 33, 17, 1.0f, 0.0f }, { 0, 0, 30, 100, 800, 0.5f, 1.0f },
  };
  mfk_pool *pool = mfk_pool_new(2);
  for (size_t u = 0; u < sizeof kernels / sizeof *kernels; u++) {
    if (!machine_runs(kernels[u])) {
      printf("skip %s: not supported here\n", kernels[u]->isa);
      continue;
    }
    for (int t = 0; t < 4; t++) {
      for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        bf16_case g = shapes[s];
        g.ta = t & 1, g.tb = t >> 1;
        check_case(kernels[u], pool, g);
      }
      for (size_t s = 0; s < sizeof mixed_shapes / sizeof *mixed_shapes; s++) {
        bf16_case g = mixed_shapes[s];
        g.ta = t & 1, g.tb = t >> 1;
        check_mixed(kernels[u], pool, g);
      }
    }
    check_bits(kernels[u], (bf16_case){ 0, 1, 300, 290, 801, 1.0f, 0.5f });
    check_bits(kernels[u], (bf16_case){ 1, 0, 15, 900, 30, 1.0f, 0.0f });
    check_bits(kernels[u], (bf16_case){ 1, 1, 6, 300, 1001, 1.0f, 0.5f });  /* few rows */
  }
#if defined(__x86_64__)
  if (machine_runs(&mfk_bf16_ukernel_avx512)) check_paths_agree(pool);
#endif
  /* alpha = 0 and K = 0 only scale C */
  uint16_t ones[4] = { 0x3f80, 0x3f80, 0x3f80, 0x3f80 };
  float C[4] = { 1, 2, NAN, 4 }, D[4] = { 1, 2, 3, 4 };
  mfk_gemm_bf16(pool, 0, 0, 2, 2, 2, 0.0f, ones, 2, ones, 2, 0.0f, C, 2);
  KT_CHECK(C[0] == 0 && C[2] == 0, "alpha = 0, beta = 0 must zero C");
  mfk_gemm_bf16(pool, 0, 0, 2, 2, 0, 1.0f, ones, 2, ones, 2, 2.0f, D, 2);
  KT_CHECK(D[3] == 8, "K = 0 must give beta * C");
  printf("bf16 gemm dispatches to %s\n", mfk_gemm_bf16_isa());
  mfk_pool_free(pool);
  return kt_failures != 0;
}
