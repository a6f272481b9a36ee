/*
 * bf16 GEMM with f32 accumulation: C[M,N] = alpha op(A) op(B) + beta C with
 * bf16 operands (for mfk_gemm_f32_bf16, A in f32, rounded to bf16 as it is
 * packed) and C in f32.
 *
 * The loops are those of mfk_gemm (gemm.c) in their plainest form. C is cut
 * into column blocks of at most NC_MAX and K into blocks of at most KC_MAX,
 * even, so that no pair of K steps straddles two blocks. For each column
 * block and K block in turn the threads pack that panel of op(B) into NR-wide
 * strips of pairs, then take tasks: a few MR-row strips of op(A), packed by
 * the thread (they stay in L1), against some strips of the panel (it stays
 * in L2). An odd K is padded with a zero pair half on both sides.
 *
 * Determinism: the blocking depends only on the shape, the K blocks are
 * applied in order, and every element of C goes through the same
 * micro-kernel code whichever task runs it, so the thread count never
 * changes the bits. The micro-kernels add in one order (gemm_bf16.h), so the
 * portable path gives the AVX512_BF16 path's bits as long as no subnormal
 * turns up.
 */
#include "cpu/common.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"

#include <stdlib.h>
#include <string.h>

enum {
  KC_MAX = 768,          /* K block: a 14-row A strip of 384 pairs is 21 KiB of L1 */
  NC_MAX = 512,          /* column block: a 384-pair x 512 panel is 768 KiB of L2 */
  MR_MAX = 16,
  NR_MAX = 32,
  TASK_STRIPS = 16,      /* A strips per task at most */
  TASKS_PER_THREAD = 8,  /* enough to even out a thread slowed by other work */
};

/* ---- portable micro-kernel ---- */
enum { GENERIC_MR = 6, GENERIC_NR = 16 };

typedef uint32_t v16u __attribute__((vector_size(16 * sizeof(uint32_t)), aligned(4), may_alias));

static inline float bf16_value(uint32_t bits) {
  union { uint32_t u; float f; } v = { .u = bits << 16 };
  return v.f;
}

MFK_SIMD static void ukernel_generic(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                                     int64_t ldc, float alpha, float beta) {
  v16 acc[GENERIC_MR];
  for (int i = 0; i < GENERIC_MR; i++) acc[i] = (v16){ 0 };
  for (int64_t p = 0; p < kp; p++) {
    v16u pairs = *(const v16u *)(b + p * GENERIC_NR);
    v16 b_even = (v16)(pairs << 16), b_odd = (v16)(pairs & 0xffff0000u);
    for (int i = 0; i < GENERIC_MR; i++) {
      uint32_t pair = a[p * GENERIC_MR + i];
      acc[i] += bf16_value(pair >> 16) * b_odd; /* vdpbf16ps's order: odd k first */
      acc[i] += bf16_value(pair & 0xffffu) * b_even;
    }
  }
  for (int i = 0; i < GENERIC_MR; i++)
    for (int j = 0; j < GENERIC_NR; j++) {
      float r = alpha * acc[i][j];
      c[i * ldc + j] = beta != 0.0f ? fmaf(beta, c[i * ldc + j], r) : r;
    }
}

const mfk_bf16_ukernel mfk_bf16_ukernel_generic = { "generic", GENERIC_MR, GENERIC_NR, ukernel_generic };

const mfk_bf16_ukernel *mfk_gemm_bf16_best_ukernel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) return &mfk_bf16_ukernel_avx512;
#endif
  return &mfk_bf16_ukernel_generic;
}

const char *mfk_gemm_bf16_isa(void) { return mfk_gemm_bf16_best_ukernel()->isa; }

/* f32 to bf16, rounding to nearest even (a carry into the exponent is the
 * right result too); a NaN stays a quiet NaN. */
static uint32_t bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* ---- few rows: the matrix-vector products of decoding ----
 * With at most MFK_SMALL_M rows of C and op(B) = B^T (weights [N, K] as they
 * lie), packing B would cost as much as the product. Each element of C is
 * the dot product of a row of op(A), rounded to bf16, and a row of B, both
 * widened to f32 (exactly), summed in 16 lanes over K, the lanes added by
 * v16_sum, then the K % 16 tail in order. The products are exact, so a
 * fused multiply-add gives the same bits as a separate one. This is not the
 * blocked path's order, but it is fixed by the shape: threads take whole
 * columns, and their count never changes the bits. */
enum { SMALL_COLS = 16 };  /* columns of C per task */
typedef uint16_t v16h __attribute__((vector_size(16 * sizeof(uint16_t))));

typedef struct small_job {
  int64_t M, N, K;
  float alpha, beta;
  const float *a;  /* op(A) rounded to bf16, [M, K] */
  const uint16_t *B;
  int64_t ldb;
  float *C;
  int64_t ldc;
} small_job;

MFK_SIMD static void small_columns(void *arg, int64_t t0, int64_t t1) {
  const small_job *g = arg;
  int64_t j1 = mfk_min(g->N, t1 * SMALL_COLS);
  for (int64_t j = t0 * SMALL_COLS; j < j1; j++) {
    const uint16_t *w = g->B + j * g->ldb;
    for (int64_t i = 0; i < g->M; i++) {
      const float *a = g->a + i * g->K;
      v16 acc = { 0 };
      int64_t k = 0;
      for (; k + 16 <= g->K; k += 16) {
        v16h bits;
        memcpy(&bits, w + k, sizeof bits);
        acc += V16(a + k) * (v16)(__builtin_convertvector(bits, v16u) << 16);
      }
      float sum = v16_sum(acc);
      for (; k < g->K; k++) sum += a[k] * bf16_value(w[k]);
      float r = g->alpha * sum, *c = g->C + i * g->ldc + j;
      *c = g->beta != 0.0f ? fmaf(g->beta, *c, r) : r;
    }
  }
}

/* C = alpha op(A) B^T + beta C on the few-rows path; 0 (nothing done)
 * without memory for the rounded A. */
static int gemm_small_rows(mfk_pool *pool, int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                           const uint16_t *A16, const float *A32, int64_t lda, const uint16_t *B, int64_t ldb,
                           float beta, float *C, int64_t ldc) {
  float *a = malloc((size_t)(M * K) * sizeof(float));
  if (!a) return 0;
  for (int64_t i = 0; i < M; i++)
    for (int64_t k = 0; k < K; k++) {
      int64_t at = trans_a ? k * lda + i : i * lda + k;
      a[i * K + k] = bf16_value(A32 ? bf16_round(A32[at]) : A16[at]);
    }
  small_job g = { .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta, .a = a, .B = B, .ldb = ldb,
                  .C = C, .ldc = ldc };
  mfk_parallel_for(pool, mfk_ceil_div(N, SMALL_COLS), small_columns, &g);
  free(a);
  return 1;
}

/* ---- driver ---- */
typedef struct bf16_job {
  const mfk_bf16_ukernel *uk;
  int trans_a, trans_b;
  int64_t M, N, K;
  float alpha, beta;
  const uint16_t *A16;
  const float *A32;
  const uint16_t *B;
  int64_t lda, ldb, ldc;
  float *C;
  int64_t kc_max, nc_max; /* block sizes, fixed by the shape */
  /* the current panel: columns [j0, j0 + nc) and K steps [k0, k0 + kc) */
  int64_t j0, nc, k0, kc;
  uint32_t *bpack;
  int64_t strips_per_task, row_tasks, col_parts;
} bf16_job;


/* op(A)[i, k] and op(B)[k, j] as bf16 bits; zero at k = K (odd K's padding). */
static uint32_t a_bits(const bf16_job *g, int64_t i, int64_t k) {
  if (k >= g->K) return 0;
  int64_t at = g->trans_a ? k * g->lda + i : i * g->lda + k;
  return g->A32 ? bf16_round(g->A32[at]) : g->A16[at];
}

static uint32_t b_bits(const bf16_job *g, int64_t k, int64_t j) {
  if (k >= g->K) return 0;
  return g->B[g->trans_b ? j * g->ldb + k : k * g->ldb + j];
}

static int64_t panel_pairs(const bf16_job *g) { return (g->kc + 1) / 2; }

/* Packs rows [i0, i0 + rows) of op(A) over the panel's K steps, zero-padded to MR rows. */
static void pack_a(const bf16_job *g, int64_t i0, int64_t rows, uint32_t *out) {
  const int mr = g->uk->mr;
  for (int64_t p = 0; p < panel_pairs(g); p++) {
    int64_t k = g->k0 + 2 * p;
    for (int64_t i = 0; i < mr; i++)
      out[p * mr + i] = i < rows ? a_bits(g, i0 + i, k) | a_bits(g, i0 + i, k + 1) << 16 : 0;
  }
}

/* Packs strips [s0, s1) of the panel, zero-padded to NR columns. */
static void pack_b_strips(void *arg, int64_t s0, int64_t s1) {
  const bf16_job *g = arg;
  const int nr = g->uk->nr;
  const int64_t pairs = panel_pairs(g);
  for (int64_t s = s0; s < s1; s++) {
    int64_t j0 = g->j0 + s * nr, cols = mfk_min(nr, g->j0 + g->nc - j0);
    uint32_t *out = g->bpack + s * pairs * nr;
    for (int64_t p = 0; p < pairs; p++) {
      int64_t k = g->k0 + 2 * p;
      for (int64_t j = 0; j < nr; j++)
        out[p * nr + j] = j < cols ? b_bits(g, k, j0 + j) | b_bits(g, k + 1, j0 + j) << 16 : 0;
    }
  }
}

/* One MR x NR tile; edge tiles go through a full-size scratch tile and are
 * finished with the micro-kernel's own update formula. */
static void compute_tile(const bf16_job *g, float beta, const uint32_t *apack, const uint32_t *bstrip,
                         float *c, int64_t rows, int64_t cols) {
  const mfk_bf16_ukernel *uk = g->uk;
  if (rows == uk->mr && cols == uk->nr) {
    uk->run(panel_pairs(g), apack, bstrip, c, g->ldc, g->alpha, beta);
    return;
  }
  _Alignas(64) float tile[MR_MAX * NR_MAX];
  uk->run(panel_pairs(g), apack, bstrip, tile, uk->nr, g->alpha, 0.0f);
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      float r = tile[i * uk->nr + j], *cij = c + i * g->ldc + j;
      *cij = beta != 0.0f ? fmaf(beta, *cij, r) : r;
    }
}

/* Task t: the A strips of row task t / col_parts against part t % col_parts
 * of the panel's strips. */
static void compute_tasks(void *arg, int64_t t0, int64_t t1) {
  const bf16_job *g = arg;
  const int mr = g->uk->mr, nr = g->uk->nr;
  const int64_t pairs = panel_pairs(g), a_strips = mfk_ceil_div(g->M, mr);
  const int64_t b_strips = mfk_ceil_div(g->nc, nr);
  const float beta = g->k0 == 0 ? g->beta : 1.0f; /* later K blocks add to the first */
  _Alignas(64) uint32_t apack[MR_MAX * KC_MAX / 2];
  for (int64_t t = t0; t < t1; t++) {
    int64_t rt = t / g->col_parts, part = t % g->col_parts;
    int64_t s0 = b_strips * part / g->col_parts, s1 = b_strips * (part + 1) / g->col_parts;
    int64_t is0 = rt * g->strips_per_task, is1 = mfk_min(a_strips, is0 + g->strips_per_task);
    for (int64_t is = is0; is < is1; is++) {
      int64_t i0 = is * mr, rows = mfk_min(mr, g->M - i0);
      pack_a(g, i0, rows, apack);
      for (int64_t s = s0; s < s1; s++) {
        int64_t j0 = g->j0 + s * nr;
        compute_tile(g, beta, apack, g->bpack + s * pairs * nr, g->C + i0 * g->ldc + j0, rows,
                     mfk_min(nr, g->N - j0));
      }
    }
  }
}

/* About TASKS_PER_THREAD tasks per thread, of at most TASK_STRIPS A strips,
 * splitting the panel's columns too when there are too few row strips. One
 * thread takes it all in big tasks. */
static void plan_tasks(bf16_job *g, int threads) {
  const int64_t a_strips = mfk_ceil_div(g->M, g->uk->mr), want = threads > 1 ? TASKS_PER_THREAD * threads : 1;
  g->strips_per_task = mfk_max(1, mfk_min(TASK_STRIPS, a_strips / want));
  g->row_tasks = mfk_ceil_div(a_strips, g->strips_per_task);
  g->col_parts = mfk_max(1, mfk_min(g->nc_max / g->uk->nr, want / g->row_tasks));
}

void mfk_gemm_bf16_using(const mfk_bf16_ukernel *uk, mfk_pool *pool, int trans_a, int trans_b,
                         int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A16,
                         const float *A32, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                         float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) { /* no products: the f32 GEMM scales C alone */
    mfk_gemm(pool, trans_a, trans_b, M, N, 0, 0.0f, NULL, 1, NULL, 1, beta, C, ldc);
    return;
  }
  if (M <= MFK_SMALL_M && trans_b &&
      gemm_small_rows(pool, trans_a, M, N, K, alpha, A16, A32, lda, B, ldb, beta, C, ldc))
    return;
  bf16_job g = { .uk = uk, .trans_a = trans_a, .trans_b = trans_b, .M = M, .N = N, .K = K,
                 .alpha = alpha, .beta = beta, .A16 = A16, .A32 = A32, .B = B, .lda = lda,
                 .ldb = ldb, .ldc = ldc, .C = C };
  int64_t k_blocks = mfk_ceil_div(K, KC_MAX);
  g.kc_max = 2 * mfk_ceil_div(mfk_ceil_div(K, k_blocks), 2);
  g.nc_max = mfk_min(NC_MAX / uk->nr, mfk_ceil_div(N, uk->nr)) * uk->nr;
  /* Kernels have no error path: without memory for a panel, pack one strip
   * at a time on the stack. */
  _Alignas(64) uint32_t one_strip[KC_MAX / 2 * NR_MAX];
  uint32_t *heap = aligned_alloc(64, (size_t)(g.kc_max / 2 * g.nc_max) * sizeof(uint32_t));
  g.bpack = heap ? heap : one_strip;
  if (!heap) g.nc_max = uk->nr;
  plan_tasks(&g, mfk_pool_size(pool));
  for (g.j0 = 0; g.j0 < N; g.j0 += g.nc_max) {
    g.nc = mfk_min(g.nc_max, N - g.j0);
    for (g.k0 = 0; g.k0 < K; g.k0 += g.kc_max) {
      g.kc = mfk_min(g.kc_max, K - g.k0);
      mfk_parallel_for(pool, mfk_ceil_div(g.nc, uk->nr), pack_b_strips, &g);
      mfk_parallel_for(pool, g.row_tasks * g.col_parts, compute_tasks, &g);
    }
  }
  free(heap);
}

void mfk_gemm_bf16(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                   float beta, float *C, int64_t ldc) {
  mfk_gemm_bf16_using(mfk_gemm_bf16_best_ukernel(), pool, trans_a, trans_b, M, N, K, alpha, A, NULL,
                      lda, B, ldb, beta, C, ldc);
}

void mfk_gemm_f32_bf16(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                       float alpha, const float *A, int64_t lda, const uint16_t *B, int64_t ldb,
                       float beta, float *C, int64_t ldc) {
  mfk_gemm_bf16_using(mfk_gemm_bf16_best_ukernel(), pool, trans_a, trans_b, M, N, K, alpha, NULL, A,
                      lda, B, ldb, beta, C, ldc);
}
