/*
 * GEMM for a C of at most MFK_SMALL_M rows: the matrix-vector products of
 * decoding, where packing B for the blocked driver would cost as much as the
 * product itself. B is read where it lies, once per call.
 *
 * - op(B) = B^T (B is [N, K], the layout of weights): each element of C is
 *   the dot product of a row of op(A) and a row of B, summed in 16 lanes
 *   over K, the lanes added in a fixed tree, then the K % 16 tail in order.
 *   Four rows of B are read together so that four sums are in flight.
 * - op(B) = B ([K, N]): rows of C accumulate op(A)[i, k] * (row k of B) over
 *   k in order, 64 columns by up to 4 rows at a time, the sums in registers.
 *
 * Threads take fixed chunks of columns, and every element of C goes through
 * the same code whatever the chunk it falls in, so the thread count never
 * changes the bits. Each element is stored as C = fma(beta, C, alpha * sum)
 * (beta = 0: alpha * sum), the update of the micro-kernels.
 */
#include "cpu/common.h"
#include "cpu/gemm.h"

#include <stdlib.h>

enum {
  DOT_COLS = 4,        /* rows of B read together on the dot-product path */
  TILE_VECS = 4,       /* columns of an axpy tile, in v16 */
  TILE_ROWS = 4,       /* rows of an axpy tile: 16 sums in registers */
  TASK_WORK = 1 << 16, /* multiply-adds worth handing to a thread */
};

typedef struct small_job {
  int64_t M, N, K;
  float alpha, beta;
  const float *A;
  int64_t a_row, a_k; /* op(A)[i, k] = A[i * a_row + k * a_k] */
  const float *B;
  int64_t ldb;
  float *C;
  int64_t ldc;
  int64_t cols_per_task; /* a multiple of the axpy tile width */
} small_job;

static inline float op_a(const small_job *s, int64_t i, int64_t k) {
  return s->A[i * s->a_row + k * s->a_k];
}

static inline void store(const small_job *s, int64_t i, int64_t j, float sum) {
  float r = s->alpha * sum, *c = s->C + i * s->ldc + j;
  *c = s->beta != 0.0f ? fmaf(s->beta, *c, r) : r;
}

/* ---- op(B) = B^T: dot products ---- */

/* Row i of C, columns [j0, j0 + ncols): ncols is a constant at each call so
 * that the sums stay in registers. Rows of op(A) are contiguous here. */
MFK_INLINE void dot_cols(const small_job *s, int64_t i, int64_t j0, int ncols) {
  const float *a = s->A + i * s->a_row, *b[DOT_COLS];
  v16 acc[DOT_COLS];
  for (int c = 0; c < ncols; c++) {
    b[c] = s->B + (j0 + c) * s->ldb;
    acc[c] = (v16){ 0 };
  }
  int64_t k = 0;
  for (; k + 16 <= s->K; k += 16) {
    v16 x = V16(a + k);
    for (int c = 0; c < ncols; c++) acc[c] += x * V16(b[c] + k);
  }
  for (int c = 0; c < ncols; c++) {
    float sum = v16_sum(acc[c]);
    for (int64_t t = k; t < s->K; t++) sum += a[t] * b[c][t];
    store(s, i, j0 + c, sum);
  }
}

MFK_SIMD static void dot_tasks(void *arg, int64_t t0, int64_t t1) {
  const small_job *s = arg;
  int64_t j = t0 * s->cols_per_task, end = mfk_min(s->N, t1 * s->cols_per_task);
  /* the rows of B in hand stay in L1 while every row of A meets them */
  for (; j + DOT_COLS <= end; j += DOT_COLS)
    for (int64_t i = 0; i < s->M; i++) dot_cols(s, i, j, DOT_COLS);
  for (; j < end; j++)
    for (int64_t i = 0; i < s->M; i++) dot_cols(s, i, j, 1);
}

/* ---- op(B) = B: rows of B scaled and added ---- */

/* Rows [i0, i0 + rows) of C, columns [j0, j0 + 16 * vecs); rows and vecs are
 * constants at each call. */
MFK_INLINE void axpy_tile(const small_job *s, int64_t i0, int rows, int64_t j0, int vecs) {
  v16 acc[TILE_ROWS][TILE_VECS];
  for (int r = 0; r < rows; r++)
    for (int v = 0; v < vecs; v++) acc[r][v] = (v16){ 0 };
  for (int64_t k = 0; k < s->K; k++) {
    const float *b = s->B + k * s->ldb + j0;
    for (int r = 0; r < rows; r++) {
      float a = op_a(s, i0 + r, k);
      for (int v = 0; v < vecs; v++) acc[r][v] += a * V16(b + 16 * v);
    }
  }
  for (int r = 0; r < rows; r++)
    for (int v = 0; v < vecs; v++)
      for (int l = 0; l < 16; l++) store(s, i0 + r, j0 + 16 * v + l, acc[r][v][l]);
}

/* Every row of C, columns [j0, j0 + 16 * vecs). */
MFK_INLINE void axpy_cols(const small_job *s, int64_t j0, int vecs) {
  int64_t i = 0;
  for (; i + TILE_ROWS <= s->M; i += TILE_ROWS) axpy_tile(s, i, TILE_ROWS, j0, vecs);
  switch (s->M - i) {
  case 3: axpy_tile(s, i, 3, j0, vecs); break;
  case 2: axpy_tile(s, i, 2, j0, vecs); break;
  case 1: axpy_tile(s, i, 1, j0, vecs); break;
  }
}

MFK_SIMD static void axpy_tasks(void *arg, int64_t t0, int64_t t1) {
  const small_job *s = arg;
  int64_t j = t0 * s->cols_per_task, end = mfk_min(s->N, t1 * s->cols_per_task);
  for (; j + 16 * TILE_VECS <= end; j += 16 * TILE_VECS) axpy_cols(s, j, TILE_VECS);
  for (; j + 16 <= end; j += 16) axpy_cols(s, j, 1);
  for (; j < end; j++)
    for (int64_t i = 0; i < s->M; i++) {
      float sum = 0.0f;
      for (int64_t k = 0; k < s->K; k++) sum += op_a(s, i, k) * s->B[k * s->ldb + j];
      store(s, i, j, sum);
    }
}

int mfk_gemm_small(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                   float beta, float *C, int64_t ldc) {
  small_job s = { .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta, .A = A,
                  .a_row = trans_a ? 1 : lda, .a_k = trans_a ? lda : 1, .B = B, .ldb = ldb,
                  .C = C, .ldc = ldc };
  /* dot products want the rows of op(A) contiguous: copy a transposed A */
  float *rows = NULL;
  if (trans_a && trans_b) {
    rows = malloc((size_t)(M * K) * sizeof(float));
    if (!rows) return 0;
    for (int64_t i = 0; i < M; i++)
      for (int64_t k = 0; k < K; k++) rows[i * K + k] = A[k * lda + i];
    s.A = rows, s.a_row = K, s.a_k = 1;
  }
  int64_t tile = 16 * TILE_VECS;
  s.cols_per_task = tile * mfk_max(1, TASK_WORK / (M * K * tile));
  mfk_parallel_for(pool, mfk_ceil_div(N, s.cols_per_task), trans_b ? dot_tasks : axpy_tasks, &s);
  free(rows);
  return 1;
}
