/*
 * Products with a low-rank factor: LoRA's adapters (engine/lora.c), where a
 * big operand X [rows, n] meets factors of rank r (8 or so).
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
 * Adapters share big operands: q, k and v read one input and add their
 * input gradients into one dx, gate and up likewise. So each kernel takes
 * a list of terms, one per adapter, and runs them all on one block of rows
 * (down, up) or one column block (grad) before the next: the shared
 * operand comes from memory for the first term and from L2 for the others.
 * Down and up blocks are some tens of rows, not a pair: each term's V must
 * stay in L1 across many rows, and refetching it from L2 for every pair
 * cost more than X's second read. Every term goes through the code it
 * would go through alone, so its bits do not depend on the other terms;
 * up's terms add into Y in their order.
 *
 * down_grad serves LoRA's backward through B, which reads dy twice, for
 * dh = s dy B and dB += s dy^T h; see its section.
 *
 * Threads take row blocks (down, up), column blocks (grad) or fixed row
 * chunks (down_grad), and every element goes through the same code
 * whichever thread runs it, so the thread count never changes the bits.
 */
#include "cpu/common.h"

#include <stdlib.h>
#include <string.h>

enum {
  RB = 8,               /* rank vectors in registers at once */
  UP_VECS = 4,          /* v16 columns of an up tile */
  GRAD_VECS = 2,        /* v16 columns of a grad tile: RB x 2 sums */
  BLOCK_FLOATS = 32768, /* X of a down or up block: 128 KiB, well inside L2 */
  AHEAD_ROWS = 16,      /* grad: rows of X fetched ahead of the sums */
};

typedef struct lowrank_job {
  const mfk_lowrank_term *terms;
  int n_terms;
  const float *x; /* down and grad: X */
  float *y;       /* up: Y */
  int64_t rows, n, r, g_j, g_c;
  int64_t block_rows; /* down and up */
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

/* Row i of X from column c, as load_v, and masked where t's keep says. */
MFK_INLINE void load_x(v16 *x, const lowrank_job *e, const mfk_lowrank_term *t, int64_t i, int64_t c,
                       int count) {
  load_v(x, e->x + i * e->n + c, count);
  if (t->keep) mask_lanes(x, t->keep, i * e->n + c, count);
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
MFK_INLINE void down_chunk(const lowrank_job *e, const mfk_lowrank_term *t, v16 acc[2][RB], int64_t i,
                           int nrows, int64_t j0, int nj, int64_t c, int count) {
  v16 x[2];
  for (int q = 0; q < nrows; q++) load_x(&x[q], e, t, i + q, c, count);
  for (int j = 0; j < nj; j++) {
    v16 w;
    load_v(&w, t->v + (j0 + j) * e->n + c, count);
    for (int q = 0; q < nrows; q++) acc[q][j] += x[q] * w;
  }
}

MFK_INLINE void down_tile(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i, int nrows, int64_t j0,
                          int nj) {
  v16 acc[2][RB];
  for (int q = 0; q < nrows; q++)
    for (int j = 0; j < nj; j++) acc[q][j] = (v16){ 0 };
  int64_t c = 0;
  for (; c + 16 <= e->n; c += 16) down_chunk(e, t, acc, i, nrows, j0, nj, c, 16);
  if (c < e->n) down_chunk(e, t, acc, i, nrows, j0, nj, c, (int)(e->n - c));
  for (int q = 0; q < nrows; q++)
    for (int j = 0; j < nj; j++) t->out[(i + q) * e->r + j0 + j] = t->alpha * v16_sum(acc[q][j]);
}

MFK_INLINE void down_rows(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i, int nrows) {
  int64_t j0 = 0;
  for (; j0 + RB <= e->r; j0 += RB) down_tile(e, t, i, nrows, j0, RB);
  if (j0 < e->r) down_tile(e, t, i, nrows, j0, (int)(e->r - j0));
}

/* ---- up: Y[i, c] += keep(alpha * sum_j H[i, j] V[j, c]) ---- */

/* Rows [i, i + nrows), nvecs v16 columns from c, the last holding count. */
MFK_INLINE void up_tile(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i, int nrows, int64_t c,
                        int nvecs, int count) {
  v16 acc[2][UP_VECS];
  for (int q = 0; q < nrows; q++)
    for (int u = 0; u < nvecs; u++) acc[q][u] = (v16){ 0 };
  for (int64_t j = 0; j < e->r; j++) {
    const float *vj = t->v + j * e->n + c;
    for (int u = 0; u < nvecs; u++) {
      v16 w;
      load_v(&w, vj + 16 * u, u == nvecs - 1 ? count : 16);
      for (int q = 0; q < nrows; q++) acc[q][u] += t->h[(i + q) * e->r + j] * w;
    }
  }
  for (int q = 0; q < nrows; q++)
    for (int u = 0; u < nvecs; u++) {
      int m = u == nvecs - 1 ? count : 16;
      v16 p = t->alpha * acc[q][u];
      if (t->keep) mask_lanes(&p, t->keep, (i + q) * e->n + c + 16 * u, m);
      add_lanes(e->y + (i + q) * e->n + c + 16 * u, 1, &p, m);
    }
}

MFK_INLINE void up_rows(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i, int nrows) {
  int64_t c = 0;
  for (; c + 16 * UP_VECS <= e->n; c += 16 * UP_VECS) up_tile(e, t, i, nrows, c, UP_VECS, 16);
  for (; c < e->n; c += 16) up_tile(e, t, i, nrows, c, 1, (int)mfk_min(16, e->n - c));
}

/* Rows [i0, i1) of term t, of up or of down, two at a time (constant row
 * counts, so that each case compiles to its own loop). */
MFK_INLINE void term_rows(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i0, int64_t i1, int up) {
  int64_t i = i0;
  for (; i + 2 <= i1; i += 2) up ? up_rows(e, t, i, 2) : down_rows(e, t, i, 2);
  if (i < i1) up ? up_rows(e, t, i, 1) : down_rows(e, t, i, 1);
}

/* Items b0 .. b1 of down or up: blocks of block_rows rows, each taken by
 * every term in turn. */
MFK_INLINE void row_blocks(const lowrank_job *arg, int64_t b0, int64_t b1, int up) {
  const lowrank_job e = *arg;
  for (int64_t b = b0; b < b1; b++)
    for (int k = 0; k < e.n_terms; k++) {
      const mfk_lowrank_term t = e.terms[k];
      term_rows(&e, &t, b * e.block_rows, mfk_min((b + 1) * e.block_rows, e.rows), up);
    }
}

MFK_SIMD static void down_blocks(void *arg, int64_t b0, int64_t b1) { row_blocks(arg, b0, b1, 0); }
MFK_SIMD static void up_blocks(void *arg, int64_t b0, int64_t b1) { row_blocks(arg, b0, b1, 1); }

/* Rows of a down or up block: about BLOCK_FLOATS of X, fewer where that
 * would leave under 16 blocks to share among threads; even, so that the
 * rows pair up. */
static int64_t block_rows(int64_t rows, int64_t n) {
  return mfk_max(2, mfk_min(BLOCK_FLOATS / mfk_max(n, 1), mfk_ceil_div(rows, 16)) & ~(int64_t)1);
}

void mfk_lowrank_down_terms(mfk_pool *pool, int n_terms, const mfk_lowrank_term *t, const float *X,
                            int64_t rows, int64_t n, int64_t r) {
  lowrank_job e = { .terms = t, .n_terms = n_terms, .x = X, .rows = rows, .n = n, .r = r,
                    .block_rows = block_rows(rows, n) };
  mfk_parallel_for(pool, mfk_ceil_div(rows, e.block_rows), down_blocks, &e);
}

void mfk_lowrank_up_terms(mfk_pool *pool, float *Y, int n_terms, const mfk_lowrank_term *t, int64_t rows,
                          int64_t n, int64_t r) {
  lowrank_job e = { .terms = t, .n_terms = n_terms, .y = Y, .rows = rows, .n = n, .r = r,
                    .block_rows = block_rows(rows, n) };
  mfk_parallel_for(pool, mfk_ceil_div(rows, e.block_rows), up_blocks, &e);
}

/* ---- grad: G(j, c) += alpha * sum_i H[i, j] keep(X)[i, c] ---- */

/* The sums of rank vectors [j0, j0 + nj) over columns [c0, c0 + 16 nvecs)
 * (the last v16 holding count) gain rows [i, i + nrows). */
MFK_INLINE void grad_rows(const lowrank_job *e, const mfk_lowrank_term *t, v16 acc[RB][GRAD_VECS], int64_t i,
                          int nrows, int64_t c0, int nvecs, int count, int64_t j0, int nj) {
  v16 x[2][GRAD_VECS];
  for (int q = 0; q < nrows; q++)
    for (int u = 0; u < nvecs; u++) load_x(&x[q][u], e, t, i + q, c0 + 16 * u, u == nvecs - 1 ? count : 16);
  for (int j = 0; j < nj; j++)
    for (int q = 0; q < nrows; q++) {
      float h = t->h[(i + q) * e->r + j0 + j];
      for (int u = 0; u < nvecs; u++) acc[j][u] += h * x[q][u];
    }
}

/* Column block cb against rank vectors [j0, j0 + nj), over rows [i0, i1). */
MFK_INLINE void grad_tile(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i0, int64_t i1, int64_t cb,
                          int nvecs, int count, int64_t j0, int nj) {
  int64_t c0 = cb * 16 * GRAD_VECS;
  v16 acc[RB][GRAD_VECS];
  for (int j = 0; j < nj; j++)
    for (int u = 0; u < nvecs; u++) acc[j][u] = (v16){ 0 };
  int64_t i = i0;
  for (; i + 2 <= i1; i += 2) {
    /* A column block's rows lie n floats apart, too far for the hardware
     * prefetchers: without these, grad waited on memory for each row. */
    for (int64_t a = i + AHEAD_ROWS; a < mfk_min(i + AHEAD_ROWS + 2, i1); a++)
      for (int u = 0; u < nvecs; u++) __builtin_prefetch(e->x + a * e->n + c0 + 16 * u);
    grad_rows(e, t, acc, i, 2, c0, nvecs, count, j0, nj);
  }
  if (i < i1) grad_rows(e, t, acc, i, 1, c0, nvecs, count, j0, nj);
  for (int j = 0; j < nj; j++)
    for (int u = 0; u < nvecs; u++) {
      v16 p = t->alpha * acc[j][u];
      add_lanes(t->out + (j0 + j) * e->g_j + (c0 + 16 * u) * e->g_c, e->g_c, &p, u == nvecs - 1 ? count : 16);
    }
}

MFK_INLINE void grad_tiles(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i0, int64_t i1, int64_t cb,
                           int nvecs, int count) {
  int64_t j0 = 0;
  for (; j0 + RB <= e->r; j0 += RB) grad_tile(e, t, i0, i1, cb, nvecs, count, j0, RB);
  if (j0 < e->r) grad_tile(e, t, i0, i1, cb, nvecs, count, j0, (int)(e->r - j0));
}

/* Column block cb of term t over rows [i0, i1); the last block may be
 * narrower. */
MFK_INLINE void grad_block(const lowrank_job *e, const mfk_lowrank_term *t, int64_t i0, int64_t i1, int64_t cb) {
  int64_t width = mfk_min(16 * GRAD_VECS, e->n - cb * 16 * GRAD_VECS);
  int nvecs = (int)mfk_ceil_div(width, 16);
  if (width == 16 * GRAD_VECS) grad_tiles(e, t, i0, i1, cb, GRAD_VECS, 16);
  else grad_tiles(e, t, i0, i1, cb, nvecs, (int)(width - 16 * (nvecs - 1)));
}

MFK_SIMD static void grad_blocks(void *arg, int64_t b0, int64_t b1) {
  const lowrank_job e = *(const lowrank_job *)arg;
  for (int64_t cb = b0; cb < b1; cb++)
    for (int k = 0; k < e.n_terms; k++) {
      const mfk_lowrank_term t = e.terms[k];
      grad_block(&e, &t, 0, e.rows, cb);
    }
}

void mfk_lowrank_grad_terms(mfk_pool *pool, int n_terms, const mfk_lowrank_term *t, int64_t g_j, int64_t g_c,
                            const float *X, int64_t rows, int64_t n, int64_t r) {
  lowrank_job e = { .terms = t, .n_terms = n_terms, .x = X, .rows = rows, .n = n, .r = r,
                    .g_j = g_j, .g_c = g_c };
  mfk_parallel_for(pool, mfk_ceil_div(n, 16 * GRAD_VECS), grad_blocks, &e);
}

/* ---- down_grad: D = alpha_d Y V^T and G += alpha_g H^T Y, one pass ----
 *
 * D sums along rows of Y, G along columns, so the pass must cut one of the
 * sums short. It cuts G's: rows go in chunks of CHUNK_ROWS (their number
 * depends on the shape alone), each chunk keeps its own partial of G, [r,
 * n], and the partials are added in chunk order at the end. Cutting columns
 * instead would leave partials of D for each column block, and G's sums
 * for a block wider than 32 columns out of registers. A chunk runs down
 * over its rows, which brings them into L2, then grad over the same rows
 * from there: Y comes from memory once, where down and grad read it once
 * each. With r = 8 the partials are a sixteenth of Y.
 *
 * That pays where Y's rows lie far apart: grad's column blocks then fetch
 * one row after another from memory, further apart than the prefetchers
 * follow. Rows of under FUSE_MIN_N floats come from memory about as fast:
 * there (n = 192 and 256, 1024 rows) the two kernels apart measured some 5%
 * faster than the fused pass, which gains 5 to 15% at n = 576 and 10 to
 * 15% at n = 1536. */
enum {
  CHUNK_ROWS = 128,
  FUSE_MIN_N = 320,
};

typedef struct down_grad_job {
  lowrank_job e;         /* X = Y; g_j, g_c: the partials' layout */
  mfk_lowrank_term down; /* D, V, alpha_d */
  const float *h;
  float *partials;       /* [chunks, r, n] */
  int64_t chunks;
  float *g;
  int64_t g_j, g_c;
  float alpha_g;
} down_grad_job;

MFK_SIMD static void down_grad_chunks(void *arg, int64_t k0, int64_t k1) {
  const down_grad_job d = *(const down_grad_job *)arg;
  int64_t n = d.e.n;
  for (int64_t k = k0; k < k1; k++) {
    int64_t i0 = k * CHUNK_ROWS, i1 = mfk_min(d.e.rows, i0 + CHUNK_ROWS);
    mfk_lowrank_term sums = { .out = d.partials + k * d.e.r * n, .h = d.h, .alpha = 1.0f };
    memset(sums.out, 0, (size_t)(d.e.r * n) * sizeof(float));
    term_rows(&d.e, &d.down, i0, i1, 0);
    for (int64_t cb = 0; cb < mfk_ceil_div(n, 16 * GRAD_VECS); cb++) grad_block(&d.e, &sums, i0, i1, cb);
  }
}

/* G's rank vectors [j0, j1) gain alpha_g times the partials' sum. */
MFK_SIMD static void add_partials(void *arg, int64_t j0, int64_t j1) {
  const down_grad_job d = *(const down_grad_job *)arg;
  int64_t n = d.e.n, r = d.e.r;
  for (int64_t j = j0; j < j1; j++)
    for (int64_t c = 0; c < n; c += 16) {
      int m = (int)mfk_min(16, n - c);
      v16 sum, p;
      load_v(&sum, d.partials + j * n + c, m);
      for (int64_t k = 1; k < d.chunks; k++) {
        load_v(&p, d.partials + (k * r + j) * n + c, m);
        sum += p;
      }
      sum *= d.alpha_g;
      add_lanes(d.g + j * d.g_j + c * d.g_c, d.g_c, &sum, m);
    }
}

void mfk_lowrank_down_grad(mfk_pool *pool, float *D, const float *V, float alpha_d, float *G, int64_t g_j,
                           int64_t g_c, const float *H, float alpha_g, const float *Y, int64_t rows, int64_t n,
                           int64_t r) {
  mfk_lowrank_term down = { .out = D, .v = V, .alpha = alpha_d };
  int64_t chunks = mfk_ceil_div(rows, CHUNK_ROWS);
  float *partials = rows > 0 && n >= FUSE_MIN_N ? malloc((size_t)(chunks * r * n) * sizeof(float)) : NULL;
  if (!partials) { /* short rows, no rows, or out of memory */
    mfk_lowrank_term grad = { .out = G, .h = H, .alpha = alpha_g };
    mfk_lowrank_down_terms(pool, 1, &down, Y, rows, n, r);
    mfk_lowrank_grad_terms(pool, 1, &grad, g_j, g_c, Y, rows, n, r);
    return;
  }
  down_grad_job d = {
    .e = { .x = Y, .rows = rows, .n = n, .r = r, .g_j = n, .g_c = 1 },
    .down = down, .h = H, .partials = partials, .chunks = chunks,
    .g = G, .g_j = g_j, .g_c = g_c, .alpha_g = alpha_g,
  };
  mfk_parallel_for(pool, chunks, down_grad_chunks, &d);
  mfk_parallel_for(pool, r, add_partials, &d);
  free(partials);
}
