/* GEMM against a double-precision reference for every micro-kernel this
 * machine runs, every transpose combination, edge tiles, several K blocks,
 * several groups of packed panels, K cut into chunks (a chunk across two
 * groups; a last chunk short enough to end in an empty K block),
 * alpha/beta (beta = 0 must ignore NaN in C); the unpacked path for M =
 * 1..8 the same way; and the same bits on 1, 2 and 3 threads for both
 * paths. */
#include "cpu/gemm.h"
#include "kernel_testing.h"

#include <float.h>

typedef struct gemm_case {
  int ta, tb;
  int64_t M, N, K;
  float alpha, beta;
} gemm_case;

static float op_at(const float *X, int64_t ld, int trans, int64_t r, int64_t c) {
  return trans ? X[c * ld + r] : X[r * ld + c];
}

static void check_case(const mfk_ukernel *uk, mfk_pool *pool, gemm_case g) {
  /* Leading dimensions larger than the rows, to catch stride mistakes. */
  int64_t lda = (g.ta ? g.M : g.K) + 3, ldb = (g.tb ? g.K : g.N) + 2, ldc = g.N + 1;
  float *A = kt_random((g.ta ? g.K : g.M) * lda, 1.0f), *B = kt_random((g.tb ? g.N : g.K) * ldb, 1.0f);
  float *C = kt_random(g.M * ldc, 1.0f);
  if (g.beta == 0.0f)
    for (int64_t i = 0; i < g.M * ldc; i++) C[i] = NAN;
  double worst_ratio = 0;
  float *Cout = kt_copy(C, g.M * ldc);
  mfk_gemm_using(uk, pool, g.ta, g.tb, g.M, g.N, g.K, g.alpha, A, lda, B, ldb, g.beta, Cout, ldc);
  for (int64_t i = 0; i < g.M; i++)
    for (int64_t j = 0; j < g.N; j++) {
      double sum = 0, mag = 0;
      for (int64_t k = 0; k < g.K; k++) {
        double p = (double)op_at(A, lda, g.ta, i, k) * op_at(B, ldb, g.tb, k, j);
        sum += p;
        mag += fabs(p);
      }
      double c = g.beta == 0.0f ? 0.0 : (double)g.beta * C[i * ldc + j];
      double ref = g.alpha * sum + c;
      /* recursive summation error bound: K ulps of the magnitude */
      double tol = (g.K + 2) * FLT_EPSILON * (fabs(g.alpha) * mag + fabs(c)) + 1e-30;
      double err = fabs(Cout[i * ldc + j] - ref) / tol;
      if (!(err <= worst_ratio)) worst_ratio = err;
    }
  KT_CHECK(worst_ratio <= 1.0, "%s gemm ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g: error %.3g x bound",
           uk->isa, g.ta, g.tb, (long long)g.M, (long long)g.N, (long long)g.K, g.alpha, g.beta, worst_ratio);
  /* columns past N (the ldc padding) must be untouched */
  for (int64_t i = 0; i < g.M; i++) {
    float a = Cout[i * ldc + g.N], b = C[i * ldc + g.N];
    KT_CHECK(memcmp(&a, &b, sizeof a) == 0, "%s gemm wrote outside C", uk->isa);
  }
  free(A), free(B), free(C), free(Cout);
}

typedef struct bits_ctx { const mfk_ukernel *uk; gemm_case g; const float *A, *B, *C; } bits_ctx;

static void run_gemm(mfk_pool *pool, void *arg, float *out) {
  bits_ctx *b = arg;
  gemm_case g = b->g;
  memcpy(out, b->C, (size_t)(g.M * g.N) * sizeof(float));
  mfk_gemm_using(b->uk, pool, g.ta, g.tb, g.M, g.N, g.K, g.alpha, b->A, g.ta ? g.M : g.K, b->B,
                 g.tb ? g.K : g.N, g.beta, out, g.N);
}

static void check_bits(const mfk_ukernel *uk, gemm_case g) {
  float *A = kt_random(g.M * g.K, 1.0f), *B = kt_random(g.K * g.N, 1.0f), *C = kt_random(g.M * g.N, 1.0f);
  bits_ctx ctx = { uk, g, A, B, C };
  char what[64];
  snprintf(what, sizeof what, "%s gemm %lldx%lldx%lld", uk->isa, (long long)g.M, (long long)g.N,
           (long long)g.K);
  kt_same_bits(what, run_gemm, &ctx, g.M * g.N);
  free(A), free(B), free(C);
}

static int machine_runs(const mfk_ukernel *uk) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (uk == &mfk_ukernel_avx512) return __builtin_cpu_supports("avx512f");
  if (uk == &mfk_ukernel_avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return 1;
}

int main(void) {
  const mfk_ukernel *kernels[] = {
    &mfk_ukernel_generic,
#if defined(__x86_64__)
    &mfk_ukernel_avx2, &mfk_ukernel_avx512,
#endif
  };
  const gemm_case shapes[] = {
    { 0, 0, 11, 13, 5, 1.0f, 0.0f },  { 0, 0, 9, 1, 1, 1.0f, 0.0f },
    { 0, 0, 15, 33, 17, 0.5f, 1.5f }, { 0, 0, 29, 70, 700, 1.0f, 1.0f }, /* 3 K blocks */
    { 0, 0, 10, 1000, 40, 1.0f, 0.0f },                                /* split columns */
    { 0, 0, 50, 800, 9, -2.0f, 0.0f },                                 /* 2 column blocks */
    { 0, 0, 20, 2400, 700, 1.0f, 0.5f },  /* groups of whole column blocks */
    { 0, 0, 17, 800, 3000, 1.0f, 0.0f },  /* groups of K blocks, a chunk across two */
    { 0, 0, 30, 40, 2100, 0.5f, 1.5f },   /* K in chunks */
    { 0, 0, 9, 1, 259081, 1.0f, 0.0f },   /* 254 chunks, the last with an empty block */
  };
  /* the unpacked path: one column, a K tail, several column tiles, several tasks */
  const gemm_case small_shapes[] = {
    { 0, 0, 0, 1, 1, 1.0f, 0.0f },    { 0, 0, 0, 5, 17, 0.5f, 1.5f },
    { 0, 0, 0, 70, 33, 1.0f, 1.0f },  { 0, 0, 0, 1000, 300, -2.0f, 0.0f },
  };
  mfk_pool *pool = mfk_pool_new(2);
  for (size_t u = 0; u < sizeof kernels / sizeof *kernels; u++) {
    if (!machine_runs(kernels[u])) {
      printf("skip %s: not supported here\n", kernels[u]->isa);
      continue;
    }
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      for (int t = 0; t < 4; t++) {
        gemm_case g = shapes[s];
        g.ta = t & 1;
        g.tb = t >> 1;
        check_case(kernels[u], pool, g);
      }
    check_bits(kernels[u], (gemm_case){ 0, 1, 300, 290, 700, 1.0f, 0.5f });
    check_bits(kernels[u], (gemm_case){ 1, 0, 15, 900, 30, 1.0f, 0.0f });
    check_bits(kernels[u], (gemm_case){ 0, 0, 40, 2500, 700, 1.0f, 0.0f });
    check_bits(kernels[u], (gemm_case){ 1, 0, 100, 70, 2100, 1.0f, 0.5f });
    check_bits(kernels[u], (gemm_case){ 0, 0, 17, 800, 3000, 1.0f, 0.0f });
  }
  const mfk_ukernel *best = mfk_gemm_best_ukernel();
  for (int64_t m = 1; m <= MFK_SMALL_M; m++)
    for (size_t s = 0; s < sizeof small_shapes / sizeof *small_shapes; s++)
      for (int t = 0; t < 4; t++) {
        gemm_case g = small_shapes[s];
        g.M = m;
        g.ta = t & 1;
        g.tb = t >> 1;
        check_case(best, pool, g);
        if (s == 3 && (m == 1 || m == 7)) check_bits(best, g);
      }
  /* alpha = 0 and K = 0 only scale C */
  float C[4] = { 1, 2, NAN, 4 }, A[4] = { 1, 1, 1, 1 };
  mfk_gemm(pool, 0, 0, 2, 2, 2, 0.0f, A, 2, A, 2, 0.0f, C, 2);
  KT_CHECK(C[0] == 0 && C[2] == 0, "alpha = 0, beta = 0 must zero C");
  float D[4] = { 1, 2, 3, 4 };
  mfk_gemm(pool, 0, 0, 2, 2, 0, 1.0f, A, 2, A, 2, 2.0f, D, 2);
  KT_CHECK(D[3] == 8, "K = 0 must give beta * C");
  printf("gemm dispatches to %s\n", mfk_gemm_isa());
  mfk_pool_free(pool);
  return kt_failures != 0;
}
