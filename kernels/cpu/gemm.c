/*
 * Single-precision GEMM: the blocked driver and the portable micro-kernel.
 *
 * The loops follow the GotoBLAS/BLIS layout. C is cut into column blocks of
 * at most NC_MAX; K into blocks of at most KC_MAX. For each (column block, K
 * block) a panel of op(B) is packed once into NR-wide strips shared by all
 * threads, then threads take MR-row strips of C: each packs its strip of
 * op(A) (small enough to stay in L1) and runs the micro-kernel along the
 * packed B (which stays in L2). Transposed operands are handled by the
 * packing, never by copies.
 *
 * Determinism: the K blocking depends only on K, the K blocks are applied in
 * order, and every element of C goes through the same micro-kernel code
 * whichever thread runs it, so the thread count never changes the bits.
 */
#include "cpu/common.h"
#include "cpu/gemm.h"

#include <stdlib.h>
#include <string.h>

enum {
  KC_MAX = 320, /* K block: a 14 x 320 A strip is 18 KiB, half the L1 */
  NC_MAX = 768, /* column block: a 320 x 768 packed B panel is 960 KiB of L2 */
  MR_MAX = 16,
  NR_MAX = 32,
};

/* ---- portable micro-kernel ---- */
enum { GENERIC_MR = 4, GENERIC_NR = 16 };

static void ukernel_generic(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                            float alpha, float beta) {
  float acc[GENERIC_MR][GENERIC_NR] = { { 0 } };
  for (int64_t k = 0; k < kc; k++)
    for (int i = 0; i < GENERIC_MR; i++)
      for (int j = 0; j < GENERIC_NR; j++) acc[i][j] += a[k * GENERIC_MR + i] * b[k * GENERIC_NR + j];
  for (int i = 0; i < GENERIC_MR; i++)
    for (int j = 0; j < GENERIC_NR; j++) {
      float r = alpha * acc[i][j];
      c[i * ldc + j] = beta != 0.0f ? fmaf(beta, c[i * ldc + j], r) : r;
    }
}

const mfk_ukernel mfk_ukernel_generic = { "generic", GENERIC_MR, GENERIC_NR, ukernel_generic };

const mfk_ukernel *mfk_gemm_best_ukernel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return &mfk_ukernel_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &mfk_ukernel_avx2;
#endif
  return &mfk_ukernel_generic;
}

const char *mfk_gemm_isa(void) { return mfk_gemm_best_ukernel()->isa; }

/* ---- driver ---- */
typedef struct gemm_job {
  const mfk_ukernel *uk;
  int trans_a, trans_b;
  int64_t M, N;
  float alpha;
  const float *A, *B;
  int64_t lda, ldb, ldc;
  float *C;
  /* the block being computed */
  int64_t pc, kc, jc, nc;
  float beta;
  float *bpack;      /* ceil(nc/NR) strips of kc x NR */
  int64_t col_parts; /* each A strip's columns are split this many ways */
} gemm_job;

/* Packs rows [i0, i0+rows) of op(A), K block [pc, pc+kc), zero-padded to MR rows. */
static void pack_a(const gemm_job *g, int64_t i0, int64_t rows, float *out) {
  const int mr = g->uk->mr;
  if (g->trans_a) {
    for (int64_t k = 0; k < g->kc; k++) {
      const float *src = g->A + (g->pc + k) * g->lda + i0;
      float *dst = out + k * mr;
      for (int64_t i = 0; i < rows; i++) dst[i] = src[i];
      for (int64_t i = rows; i < mr; i++) dst[i] = 0.0f;
    }
    return;
  }
  for (int64_t i = 0; i < rows; i++) {
    const float *src = g->A + (i0 + i) * g->lda + g->pc;
    for (int64_t k = 0; k < g->kc; k++) out[k * mr + i] = src[k];
  }
  for (int64_t i = rows; i < mr; i++)
    for (int64_t k = 0; k < g->kc; k++) out[k * mr + i] = 0.0f;
}

/* Packs columns [j0, j0+cols) of op(B), K block [pc, pc+kc), zero-padded to NR columns. */
static void pack_b(const gemm_job *g, int64_t j0, int64_t cols, float *out) {
  const int nr = g->uk->nr;
  if (!g->trans_b) {
    for (int64_t k = 0; k < g->kc; k++) {
      const float *src = g->B + (g->pc + k) * g->ldb + j0;
      float *dst = out + k * nr;
      for (int64_t j = 0; j < cols; j++) dst[j] = src[j];
      for (int64_t j = cols; j < nr; j++) dst[j] = 0.0f;
    }
    return;
  }
  for (int64_t j = 0; j < cols; j++) {
    const float *src = g->B + (j0 + j) * g->ldb + g->pc;
    for (int64_t k = 0; k < g->kc; k++) out[k * nr + j] = src[k];
  }
  for (int64_t j = cols; j < nr; j++)
    for (int64_t k = 0; k < g->kc; k++) out[k * nr + j] = 0.0f;
}

static void pack_b_strips(void *arg, int64_t s0, int64_t s1) {
  const gemm_job *g = arg;
  const int nr = g->uk->nr;
  for (int64_t s = s0; s < s1; s++) {
    int64_t j0 = g->jc + s * nr;
    pack_b(g, j0, mfk_min(nr, g->jc + g->nc - j0), g->bpack + s * g->kc * nr);
  }
}

/* One MR x NR tile; edge tiles go through a full-size scratch tile and are
 * finished with the micro-kernel's own update formula. */
static void compute_tile(const gemm_job *g, const float *apack, const float *bstrip, float *c,
                         int64_t rows, int64_t cols) {
  const mfk_ukernel *uk = g->uk;
  if (rows == uk->mr && cols == uk->nr) {
    uk->run(g->kc, apack, bstrip, c, g->ldc, g->alpha, g->beta);
    return;
  }
  _Alignas(64) float tile[MR_MAX * NR_MAX];
  uk->run(g->kc, apack, bstrip, tile, uk->nr, g->alpha, 0.0f);
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      float r = tile[i * uk->nr + j];
      float *cij = c + i * g->ldc + j;
      *cij = g->beta != 0.0f ? fmaf(g->beta, *cij, r) : r;
    }
}

/* Task t: A strip t / col_parts against part t % col_parts of the B strips. */
static void compute_tasks(void *arg, int64_t t0, int64_t t1) {
  const gemm_job *g = arg;
  const int mr = g->uk->mr, nr = g->uk->nr;
  const int64_t strips = mfk_ceil_div(g->nc, nr);
  _Alignas(64) float apack[MR_MAX * KC_MAX];
  int64_t packed = -1;
  for (int64_t t = t0; t < t1; t++) {
    int64_t is = t / g->col_parts, part = t % g->col_parts;
    int64_t i0 = is * mr, rows = mfk_min(mr, g->M - i0);
    if (packed != is) {
      pack_a(g, i0, rows, apack);
      packed = is;
    }
    int64_t s0 = strips * part / g->col_parts, s1 = strips * (part + 1) / g->col_parts;
    for (int64_t s = s0; s < s1; s++) {
      int64_t j0 = g->jc + s * nr;
      compute_tile(g, apack, g->bpack + s * g->kc * nr, g->C + i0 * g->ldc + j0, rows,
                   mfk_min(nr, g->N - j0));
    }
  }
}

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta != 0.0f ? beta * C[i * ldc + j] : 0.0f;
}

void mfk_gemm_using(const mfk_ukernel *uk, mfk_pool *pool, int trans_a, int trans_b, int64_t M,
                    int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  gemm_job g = { .uk = uk, .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N, .alpha = alpha,
                 .A = A, .B = B, .lda = lda, .ldb = ldb, .ldc = ldc, .C = C };
  int64_t k_blocks = mfk_ceil_div(K, KC_MAX), kc_even = mfk_ceil_div(K, k_blocks);
  int64_t nc_max = NC_MAX / uk->nr * uk->nr;
  /* Kernels have no error path: without memory for a wide B panel, run one
   * strip at a time from the stack. */
  _Alignas(64) float one_strip[KC_MAX * NR_MAX];
  float *heap = aligned_alloc(64, (size_t)(kc_even * nc_max) * sizeof(float));
  g.bpack = heap ? heap : one_strip;
  if (!heap) nc_max = uk->nr;
  /* Enough tasks for every thread: split columns too when C has few row strips. */
  int64_t a_strips = mfk_ceil_div(M, uk->mr), want = 4 * (int64_t)mfk_pool_size(pool);
  for (g.jc = 0; g.jc < N; g.jc += nc_max) {
    g.nc = mfk_min(nc_max, N - g.jc);
    int64_t b_strips = mfk_ceil_div(g.nc, uk->nr);
    g.col_parts = a_strips >= want ? 1 : mfk_min(b_strips, mfk_ceil_div(want, a_strips));
    for (int64_t kb = 0; kb < k_blocks; kb++) {
      g.pc = kb * kc_even;
      g.kc = mfk_min(kc_even, K - g.pc);
      g.beta = kb == 0 ? beta : 1.0f;
      mfk_parallel_for(pool, b_strips, pack_b_strips, &g);
      mfk_parallel_for(pool, a_strips * g.col_parts, compute_tasks, &g);
    }
  }
  free(heap);
}

void mfk_gemm(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc) {
  mfk_gemm_using(mfk_gemm_best_ukernel(), pool, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
