/*
 * Products with a low-rank factor: LoRA's adapters (engine/lora.c), where a
 * big operand X [rows, n] meets a factor of rank r (8 or so).
 *
 * Packing for the blocked GEMM would cost more than these products, and its
 * 32-column micro-kernel would run a quarter full, so each kernel streams X
 * once with the factor's r vectors in L1:
 * - down: every row of X against each of r rows of V, summed in 16 lanes
 *   along n, two rows of X at a time;
 * - up: rows of Y gain r scaled rows of V, 64 columns by two rows at a time;
 * - grad: 32 columns of X at a time take every row's contribution, in row
 *   order, into r x 32 sums in registers. Rows go two at a time, which
 *   keeps twice the loads in flight: X's rows lie further apart than the
 *   prefetchers follow, and one row at a time ran at half the speed.
 * A dropout mask (bit i * n + c for X[i, c], mfk_dropout_mask's layout)
 * is applied as the elements are loaded, so the dropped operand is never
 * written out.
 *
 * Threads take rows (down, up) or column blocks (grad), and every element
 * goes through the same code whichever thread runs it, so the thread count
 * never changes the bits.
 */
#include "cpu/common.h"

#include <string.h>

enum {
  RB = 8,        /* rank vectors in registers at once */
  UP_VECS = 4,   /* v16 columns of an up tile */
  GRAD_VECS = 2, /* v16 columns of a grad tile: RB x 2 sums */
};

typedef struct lowrank_job {
  float *out;
  const float *x, *v, *h;
  const uint64_t *keep;
  int64_t rows, n, r, g_j, g_c;
  float alpha;
} lowrank_job;

/* Zeroes the lanes of *x whose bit of keep, counting from pos, is clear;
 * count (<= 16) bits are read, and no word past them. (Values go through
 * pointers: returning a v16 from the baseline clone would change the ABI.) */
MFK_INLINE void mask_lanes(v16 *x, const uint64_t *keep, int64_t pos, int count) {
  const v16i lane_bit = { 1 << 0, 1 << 1, 1 << 2,  1 << 3,  1 << 4,  1 << 5,  1 << 6,  1 << 7,
                          1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15 };
  const uint64_t *w = keep + (pos >> 6);
  int off = (int)(pos & 63);
  uint64_t bits = w[0] >> off;
  if (off + count > 64) bits |= w[1] << (64 - off);
  bits &= (1u << count) - 1;
  *x = (v16)((v16i)*x & ((lane_bit & (int32_t)bits) != 0));
}

/* count (<= 16) floats from p, zero-padded. */
MFK_INLINE void load_v(v16 *v, const float *p, int count) {
  if (count == 16) {
    *v = V16(p);
    return;
  }
  *v = (v16){ 0 };
  memcpy(v, p, (size_t)count * sizeof(float));
}

/* Row i of X from column c, as load_v, and masked where keep says. */
MFK_INLINE void load_x(v16 *x, const lowrank_job *e, int64_t i, int64_t c, int count) {
  load_v(x, e->x + i * e->n + c, count);
  if (e->keep) mask_lanes(x, e->keep, i * e->n + c, count);
}

/* dst[l * stride] += lane l of *p for the first m lanes. */
MFK_INLINE void add_lanes(float *dst, int64_t stride, const v16 *p, int m) {
  if (m == 16 && stride == 1) {
    V16(dst) += *p;
    return;
  }
  for (int l = 0; l < m; l++) dst[l * stride] += (*p)[l];
}

/* ---- down: out[i, j] = alpha * sum_c keep(X)[i, c] V[j, c] ---- */

/* One chunk of count (<= 16) columns from c into the sums of rows
 * [i, i + nrows) against rank vectors [j0, j0 + nj). */
MFK_INLINE void down_chunk(const lowrank_job *e, v16 acc[2][RB], int64_t i, int nrows, int64_t j0, int nj,
                           int64_t c, int count) {
  v16 x[2];
  for (int q = 0; q < nrows; q++) load_x(&x[q], e, i + q, c, count);
  for (int j = 0; j < nj; j++) {
    v16 w;
    load_v(&w, e->v + (j0 + j) * e->n + c, count);
    for (int q = 0; q < nrows; q++) acc[q][j] += x[q] * w;
  }
}

MFK_INLINE void down_tile(const lowrank_job *e, int64_t i, int nrows, int64_t j0, int nj) {
  v16 acc[2][RB];
  for (int q = 0; q < nrows; q++)
    for (int j = 0; j < nj; j++) acc[q][j] = (v16){ 0 };
  int64_t c = 0;
  for (; c + 16 <= e->n; c += 16) down_chunk(e, acc, i, nrows, j0, nj, c, 16);
  if (c < e->n) down_chunk(e, acc, i, nrows, j0, nj, c, (int)(e->n - c));
  for (int q = 0; q < nrows; q++)
    for (int j = 0; j < nj; j++) e->out[(i + q) * e->r + j0 + j] = e->alpha * v16_sum(acc[q][j]);
}

MFK_INLINE void down_rows(const lowrank_job *e, int64_t i, int nrows) {
  int64_t j0 = 0;
  for (; j0 + RB <= e->r; j0 += RB) down_tile(e, i, nrows, j0, RB);
  if (j0 < e->r) down_tile(e, i, nrows, j0, (int)(e->r - j0));
}

/* ---- up: Y[i, c] += keep(alpha * sum_j H[i, j] V[j, c]) ---- */

/* Rows [i, i + nrows), nvecs v16 columns from c, the last holding count. */
MFK_INLINE void up_tile(const lowrank_job *e, int64_t i, int nrows, int64_t c, int nvecs, int count) {
  v16 acc[2][UP_VECS];
  for (int q = 0; q < nrows; q++)
    for (int u = 0; u < nvecs; u++) acc[q][u] = (v16){ 0 };
  for (int64_t j = 0; j < e->r; j++) {
    const float *vj = e->v + j * e->n + c;
    for (int u = 0; u < nvecs; u++) {
      v16 w;
      load_v(&w, vj + 16 * u, u == nvecs - 1 ? count : 16);
      for (int q = 0; q < nrows; q++) acc[q][u] += e->h[(i + q) * e->r + j] * w;
    }
  }
  for (int q = 0; q < nrows; q++)
    for (int u = 0; u < nvecs; u++) {
      int m = u == nvecs - 1 ? count : 16;
      v16 p = e->alpha * acc[q][u];
      if (e->keep) mask_lanes(&p, e->keep, (i + q) * e->n + c + 16 * u, m);
      add_lanes(e->out + (i + q) * e->n + c + 16 * u, 1, &p, m);
    }
}

MFK_INLINE void up_rows(const lowrank_job *e, int64_t i, int nrows) {
  int64_t c = 0;
  for (; c + 16 * UP_VECS <= e->n; c += 16 * UP_VECS) up_tile(e, i, nrows, c, UP_VECS, 16);
  for (; c < e->n; c += 16) up_tile(e, i, nrows, c, 1, (int)mfk_min(16, e->n - c));
}

/* Items p0 .. p1 of down or up: rows 2p and 2p + 1, the last maybe alone. */
MFK_INLINE void row_pairs(const lowrank_job *arg, int64_t p0, int64_t p1, int up) {
  const lowrank_job e = *arg;
  for (int64_t p = p0; p < p1; p++) {
    /* constant row counts, so that each case compiles to its own loop */
    if (2 * p + 1 < e.rows) up ? up_rows(&e, 2 * p, 2) : down_rows(&e, 2 * p, 2);
    else up ? up_rows(&e, 2 * p, 1) : down_rows(&e, 2 * p, 1);
  }
}

MFK_SIMD static void down_pairs(void *arg, int64_t p0, int64_t p1) { row_pairs(arg, p0, p1, 0); }
MFK_SIMD static void up_pairs(void *arg, int64_t p0, int64_t p1) { row_pairs(arg, p0, p1, 1); }

void mfk_lowrank_down(mfk_pool *pool, float *out, const float *X, const uint64_t *keep, const float *V,
                      int64_t rows, int64_t n, int64_t r, float alpha) {
  lowrank_job e = { .out = out, .x = X, .v = V, .keep = keep, .rows = rows, .n = n, .r = r, .alpha = alpha };
  mfk_parallel_for(pool, mfk_ceil_div(rows, 2), down_pairs, &e);
}

void mfk_lowrank_up(mfk_pool *pool, float *Y, const float *H, const float *V, const uint64_t *keep,
                    int64_t rows, int64_t n, int64_t r, float alpha) {
  lowrank_job e = { .out = Y, .h = H, .v = V, .keep = keep, .rows = rows, .n = n, .r = r, .alpha = alpha };
  mfk_parallel_for(pool, mfk_ceil_div(rows, 2), up_pairs, &e);
}

/* ---- grad: G[j, c] += alpha * sum_i H[i, j] keep(X)[i, c] ---- */

/* The sums of rank vectors [j0, j0 + nj) over columns [c0, c0 + 16 nvecs)
 * (the last v16 holding count) gain rows [i, i + nrows). */
MFK_INLINE void grad_rows(const lowrank_job *e, v16 acc[RB][GRAD_VECS], int64_t i, int nrows, int64_t c0,
                          int nvecs, int count, int64_t j0, int nj) {
  v16 x[2][GRAD_VECS];
  for (int q = 0; q < nrows; q++)
    for (int u = 0; u < nvecs; u++) load_x(&x[q][u], e, i + q, c0 + 16 * u, u == nvecs - 1 ? count : 16);
  for (int j = 0; j < nj; j++)
    for (int q = 0; q < nrows; q++) {
      float h = e->h[(i + q) * e->r + j0 + j];
      for (int u = 0; u < nvecs; u++) acc[j][u] += h * x[q][u];
    }
}

/* Column block cb against rank vectors [j0, j0 + nj). */
MFK_INLINE void grad_tile(const lowrank_job *e, int64_t cb, int nvecs, int count, int64_t j0, int nj) {
  int64_t c0 = cb * 16 * GRAD_VECS;
  v16 acc[RB][GRAD_VECS];
  for (int j = 0; j < nj; j++)
    for (int u = 0; u < nvecs; u++) acc[j][u] = (v16){ 0 };
  int64_t i = 0;
  for (; i + 2 <= e->rows; i += 2) grad_rows(e, acc, i, 2, c0, nvecs, count, j0, nj);
  if (i < e->rows) grad_rows(e, acc, i, 1, c0, nvecs, count, j0, nj);
  for (int j = 0; j < nj; j++)
    for (int u = 0; u < nvecs; u++) {
      v16 p = e->alpha * acc[j][u];
      add_lanes(e->out + (j0 + j) * e->g_j + (c0 + 16 * u) * e->g_c, e->g_c, &p, u == nvecs - 1 ? count : 16);
    }
}

MFK_INLINE void grad_block(const lowrank_job *e, int64_t cb, int nvecs, int count) {
  int64_t j0 = 0;
  for (; j0 + RB <= e->r; j0 += RB) grad_tile(e, cb, nvecs, count, j0, RB);
  if (j0 < e->r) grad_tile(e, cb, nvecs, count, j0, (int)(e->r - j0));
}

MFK_SIMD static void grad_blocks(void *arg, int64_t b0, int64_t b1) {
  const lowrank_job e = *(const lowrank_job *)arg;
  for (int64_t cb = b0; cb < b1; cb++) {
    int64_t width = mfk_min(16 * GRAD_VECS, e.n - cb * 16 * GRAD_VECS);
    if (width == 16 * GRAD_VECS) grad_block(&e, cb, GRAD_VECS, 16);
    else grad_block(&e, cb, (int)mfk_ceil_div(width, 16), (int)(width - 16 * (mfk_ceil_div(width, 16) - 1)));
  }
}

void mfk_lowrank_grad(mfk_pool *pool, float *G, int64_t g_j, int64_t g_c, const float *H, const float *X,
                      const uint64_t *keep, int64_t rows, int64_t n, int64_t r, float alpha) {
  lowrank_job e = { .out = G, .h = H, .x = X, .keep = keep, .rows = rows, .n = n, .r = r,
                    .g_j = g_j, .g_c = g_c, .alpha = alpha };
  mfk_parallel_for(pool, mfk_ceil_div(n, 16 * GRAD_VECS), grad_blocks, &e);
}
