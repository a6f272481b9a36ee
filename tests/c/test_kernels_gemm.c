/* GEMM against a double-precision reference for every micro-kernel this
 * machine runs, every transpose combination, edge tiles, several K blocks,
 * several groups of packed panels, K cut into chunks (a chunk across two
 * groups; a last chunk short enough to end in an empty K block),
 * alpha/beta (beta = 0 must ignore NaN in C); sums of two and three terms
 * whose K blocks and chunks straddle terms, with the terms' transposes
 * mixed; the unpacked path for M = 1..8 the same way; and the same bits on
 * 1, 2 and 3 threads for both paths. */
#include "cpu/gemm.h"
#include "kernel_testing.h"

#include <float.h>

enum { MAX_TERMS = 3 };

/* Term 0 has depth k[0] and transposes ta, tb; terms 1 and 2, where their
 * depths are not zero, have the opposite transposes of A and of B in turn. */
typedef struct gemm_case {
  int ta, tb;
  int64_t M, N;
  float alpha, beta;
  int64_t k[MAX_TERMS];
} gemm_case;

/* The case's terms on random operands, with leading dimensions pad larger
 * than the rows (to catch stride mistakes) when pad is set. */
static int make_terms(gemm_case g, int pad, mfk_gemm_term *t) {
  int n = 0;
  for (int i = 0; i < MAX_TERMS; i++) {
    if (i > 0 && g.k[i] == 0) continue;
    mfk_gemm_term *u = &t[n++];
    u->k = g.k[i];
    u->trans_a = g.ta ^ (i == 1);
    u->trans_b = g.tb ^ (i == 2);
    u->lda = (u->trans_a ? g.M : u->k) + (pad ? 3 : 0);
    u->ldb = (u->trans_b ? u->k : g.N) + (pad ? 2 : 0);
    u->a = kt_random((u->trans_a ? u->k : g.M) * u->lda, 1.0f);
    u->b = kt_random((u->trans_b ? g.N : u->k) * u->ldb, 1.0f);
  }
  return n;
}

static void free_terms(mfk_gemm_term *t, int n) {
  for (int i = 0; i < n; i++) free((void *)t[i].a), free((void *)t[i].b);
}

static double op_at(const float *X, int64_t ld, int trans, int64_t r, int64_t c) {
  return trans ? X[c * ld + r] : X[r * ld + c];
}

static void check_case(const mfk_ukernel *uk, mfk_pool *pool, gemm_case g) {
  mfk_gemm_term t[MAX_TERMS];
  int n = make_terms(g, 1, t);
  int64_t ldc = g.N + 1, depth = 0;
  for (int u = 0; u < n; u++) depth += t[u].k;
  float *C = kt_random(g.M * ldc, 1.0f);
  if (g.beta == 0.0f)
    for (int64_t i = 0; i < g.M * ldc; i++) C[i] = NAN;
  double worst_ratio = 0;
  float *Cout = kt_copy(C, g.M * ldc);
  mfk_gemm_terms_using(uk, pool, g.M, g.N, n, t, g.alpha, g.beta, Cout, ldc);
  for (int64_t i = 0; i < g.M; i++)
    for (int64_t j = 0; j < g.N; j++) {
      double sum = 0, mag = 0;
      for (int u = 0; u < n; u++)
        for (int64_t k = 0; k < t[u].k; k++) {
          double p = op_at(t[u].a, t[u].lda, t[u].trans_a, i, k) * op_at(t[u].b, t[u].ldb, t[u].trans_b, k, j);
          sum += p;
          mag += fabs(p);
        }
      double c = g.beta == 0.0f ? 0.0 : (double)g.beta * C[i * ldc + j];
      double ref = g.alpha * sum + c;
      /* recursive summation error bound: K ulps of the magnitude */
      double tol = (depth + 2) * FLT_EPSILON * (fabs(g.alpha) * mag + fabs(c)) + 1e-30;
      double err = fabs(Cout[i * ldc + j] - ref) / tol;
      if (!(err <= worst_ratio)) worst_ratio = err;
    }
  KT_CHECK(worst_ratio <= 1.0,
           "%s gemm ta=%d tb=%d M=%lld N=%lld K=%lld+%lld+%lld alpha=%g beta=%g: error %.3g x bound", uk->isa,
           g.ta, g.tb, (long long)g.M, (long long)g.N, (long long)g.k[0], (long long)g.k[1], (long long)g.k[2],
           g.alpha, g.beta, worst_ratio);
  /* columns past N (the ldc padding) must be untouched */
  for (int64_t i = 0; i < g.M; i++) {
    float a = Cout[i * ldc + g.N], b = C[i * ldc + g.N];
    KT_CHECK(memcmp(&a, &b, sizeof a) == 0, "%s gemm wrote outside C", uk->isa);
  }
  free_terms(t, n), free(C), free(Cout);
}

typedef struct bits_ctx {
  const mfk_ukernel *uk;
  gemm_case g;
  mfk_gemm_term t[MAX_TERMS];
  int n;
  const float *C;
} bits_ctx;

static void run_gemm(mfk_pool *pool, void *arg, float *out) {
  bits_ctx *b = arg;
  memcpy(out, b->C, (size_t)(b->g.M * b->g.N) * sizeof(float));
  mfk_gemm_terms_using(b->uk, pool, b->g.M, b->g.N, b->n, b->t, b->g.alpha, b->g.beta, out, b->g.N);
}

static void check_bits(const mfk_ukernel *uk, gemm_case g) {
  bits_ctx ctx = { .uk = uk, .g = g, .C = kt_random(g.M * g.N, 1.0f) };
  ctx.n = make_terms(g, 0, ctx.t);
  char what[80];
  snprintf(what, sizeof what, "%s gemm %lldx%lldx(%lld+%lld+%lld)", uk->isa, (long long)g.M, (long long)g.N,
           (long long)g.k[0], (long long)g.k[1], (long long)g.k[2]);
  kt_same_bits(what, run_gemm, &ctx, g.M * g.N);
  free_terms(ctx.t, ctx.n);
  free((void *)ctx.C);
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
    { 0, 0, 11, 13, 1.0f, 0.0f, { 5 } },  { 0, 0, 9, 1, 1.0f, 0.0f, { 1 } },
    { 0, 0, 15, 33, 0.5f, 1.5f, { 17 } }, { 0, 0, 29, 70, 1.0f, 1.0f, { 700 } }, /* 3 K blocks */
    { 0, 0, 10, 1000, 1.0f, 0.0f, { 40 } },                                /* split columns */
    { 0, 0, 50, 800, -2.0f, 0.0f, { 9 } },                                 /* 2 column blocks */
    { 0, 0, 20, 2400, 1.0f, 0.5f, { 700 } },  /* groups of whole column blocks */
    { 0, 0, 17, 800, 1.0f, 0.0f, { 3000 } },  /* groups of K blocks, a chunk across two */
    { 0, 0, 30, 40, 0.5f, 1.5f, { 2100 } },   /* K in chunks */
    { 0, 0, 9, 1, 1.0f, 0.0f, { 259081 } },   /* 254 chunks, the last with an empty block */
    { 0, 0, 30, 70, 1.0f, 0.5f, { 300, 8 } }, /* a rank-8 term in the last K block */
    { 0, 0, 33, 65, 1.0f, 0.0f, { 310, 20, 300 } }, /* K blocks straddle terms */
    { 0, 0, 20, 40, 1.0f, 1.0f, { 1000, 30, 1100 } }, /* K chunks straddle terms */
    { 0, 0, 15, 50, 1.0f, 0.0f, { 0, 7 } },   /* an empty first term */
  };
  /* the unpacked path: one column, a K tail, several column tiles, several tasks */
  const gemm_case small_shapes[] = {
    { 0, 0, 0, 1, 1.0f, 0.0f, { 1 } },    { 0, 0, 0, 5, 0.5f, 1.5f, { 17 } },
    { 0, 0, 0, 70, 1.0f, 1.0f, { 33 } },  { 0, 0, 0, 1000, -2.0f, 0.0f, { 300 } },
    { 0, 0, 0, 70, 1.0f, 0.0f, { 33, 8, 5 } },
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
    check_bits(kernels[u], (gemm_case){ 0, 1, 300, 290, 1.0f, 0.5f, { 700 } });
    check_bits(kernels[u], (gemm_case){ 1, 0, 15, 900, 1.0f, 0.0f, { 30 } });
    check_bits(kernels[u], (gemm_case){ 0, 0, 40, 2500, 1.0f, 0.0f, { 700 } });
    check_bits(kernels[u], (gemm_case){ 1, 0, 100, 70, 1.0f, 0.5f, { 2100 } });
    check_bits(kernels[u], (gemm_case){ 0, 0, 17, 800, 1.0f, 0.0f, { 3000 } });
    check_bits(kernels[u], (gemm_case){ 0, 1, 300, 290, 1.0f, 0.0f, { 576, 8 } });
    check_bits(kernels[u], (gemm_case){ 0, 0, 40, 90, 1.0f, 0.5f, { 1000, 30, 1100 } });
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
        if (s >= 3 && (m == 1 || m == 7)) check_bits(best, g);
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
