/*
 * Causal attention with grouped-query heads, forward and backward, tiled
 * over keys with an online softmax: no Tq x Tk matrix is ever formed.
 *
 * Layout: q, out, dq, dout are [B, T, Hq, hd]; k and v are [B, Tk, Hkv, hd]
 * with kv_stride floats between positions and Tk * kv_stride between
 * sequences (the backward pass takes them dense). Head dimensions up to
 * HD_MAX are supported.
 *
 * Work is cut into blocks of QB queries and KB keys, so that each step is a
 * small matrix product with its accumulators in registers: a key block is
 * transposed into a tile (hd rows of KB keys) and the KB scores of a few
 * queries at once come from hd vector multiply-adds; products with V, K or Q
 * accumulate 32 output columns of eight rows at a time over the block,
 * reading the block of weights (P or dS) as it lies or transposed, which
 * costs the same and needs no copy.
 * When a key block serves several query blocks or heads, every block of K
 * (and V) is transposed once up front. When it serves only a few queries
 * (decoding: one query per head over a KV cache), the transposition would
 * cost more than the scores, which then come from vector dot products over
 * K's rows. Block sizes are fixed, the choice of path depends on the shapes
 * alone and each sum runs in one order however many rows are taken
 * together, so results do not depend on the thread count. Range functions
 * work on a local copy of the job (see common.h).
 *
 * The backward pass recomputes probabilities from the saved log-sum-exp,
 * P = exp(scale q.k - lse). With D = rowsum(dout * out), made once up front:
 *   dS = P (dout.v - D),  dq = scale dS k,  dk = scale dS^T q,  dv = P^T dout.
 * A thread that owns a whole (sequence, kv head) makes each block of P and
 * dS once and takes it into dq, dk and dv. With too few such pairs to go
 * round the threads, two passes that never write the same memory make every
 * block twice: one over query blocks for dq, one over key blocks (of a kv
 * head, with all its query heads) for dk and dv. Both add in the same order
 * and give the same bits.
 */
#include "cpu/common.h"

#include <stdlib.h>
#include <string.h>

enum {
  KB = 32,         /* keys per block */
  QB = 32,         /* queries per block: each transposed key block serves them all */
  HD_MAX = 256,
  COLS = 16,       /* floats in a v16 */
  DOT_ROWS = 8,    /* queries scored together: 16 sums in registers */
  ACC_ROWS = 8,    /* output rows accumulated together */
  ROW_CHUNKS = 2,  /* column chunks of those rows accumulated together */
  ACC_CHUNKS = 4,  /* column chunks of a lone output row accumulated together */
  ROWS_MAX = 6,    /* most queries per kv head scored from K's rows (measured) */
  ONE_PASS_UNITS = 4, /* (sequence, kv head) pairs per thread for the one-pass backward */
};

typedef struct attn_job {
  float *out, *lse, *dq, *dk, *dv;
  const float *q, *k, *v, *dout, *o, *lse_in;
  int64_t B, Tq, Tk, Hq, Hkv, hd, kv_stride;
  float scale;
  float *kt, *vt; /* every key (value) block transposed, or NULL: see key_tile */
  float *delta;   /* D of every query row, laid out as lse, or NULL: see row_delta */
  int from_rows;  /* scores from K's rows, no tiles: see row_dots */
} attn_job;

/* Where the row of query t, head h of sequence b starts in q, out, dq, dout. */
static int64_t q_at(const attn_job *a, int64_t b, int64_t t, int64_t h) {
  return ((b * a->Tq + t) * a->Hq + h) * a->hd;
}

static const float *q_row(const attn_job *a, const float *base, int64_t b, int64_t t, int64_t h) {
  return base + q_at(a, b, t, h);
}

static const float *kv_row(const attn_job *a, const float *base, int64_t b, int64_t t, int64_t g) {
  return base + (b * a->Tk + t) * a->kv_stride + g * a->hd;
}

/* tile[d * KB + j] = element d of key j0 + j; columns past n are zero. */
static inline void transpose_block(const attn_job *a, float *tile, const float *base, int64_t b,
                                   int64_t g, int64_t j0, int64_t n) {
  if (n < KB) memset(tile, 0, (size_t)(a->hd * KB) * sizeof(float));
  for (int64_t j = 0; j < n; j++) {
    const float *row = kv_row(a, base, b, j0 + j, g);
    for (int64_t d = 0; d < a->hd; d++) tile[d * KB + j] = row[d];
  }
}

/* The transposed block of base at key j0 (n keys) of kv head g: from tiles
 * when they were made up front, else transposed into scratch. */
static inline const float *key_tile(const attn_job *a, const float *tiles, float *scratch,
                                    const float *base, int64_t b, int64_t g, int64_t j0, int64_t n) {
  if (tiles) return tiles + ((b * a->Hkv + g) * mfk_ceil_div(a->Tk, KB) + j0 / KB) * a->hd * KB;
  transpose_block(a, scratch, base, b, g, j0, n);
  return scratch;
}

static void transpose_tiles(void *arg, int64_t t0, int64_t t1) {
  attn_job job = *(const attn_job *)arg, *a = &job;
  int64_t nkb = mfk_ceil_div(a->Tk, KB);
  for (int64_t t = t0; t < t1; t++) {
    int64_t b = t / (a->Hkv * nkb), g = t / nkb % a->Hkv, j0 = t % nkb * KB, n = mfk_min(KB, a->Tk - j0);
    transpose_block(a, a->kt + t * a->hd * KB, a->k, b, g, j0, n);
    if (a->vt) transpose_block(a, a->vt + t * a->hd * KB, a->v, b, g, j0, n);
  }
}

/* Transposes every block of K (and of V when values is set) once, for the
 * passes that would otherwise transpose each block again and again. Without
 * the memory the passes transpose as they go. */
static void make_tiles(mfk_pool *pool, attn_job *a, int values) {
  int64_t tiles = a->B * a->Hkv * mfk_ceil_div(a->Tk, KB);
  size_t bytes = (size_t)(tiles * a->hd * KB) * sizeof(float);
  a->kt = malloc(bytes);
  a->vt = values && a->kt ? malloc(bytes) : NULL;
  if (values && !a->vt) {
    free(a->kt);
    a->kt = NULL;
  }
  if (a->kt) mfk_parallel_for(pool, tiles, transpose_tiles, a);
}

/* Rows [qi0, qi0 + rows) of block_dots; rows is a constant at each call, so
 * that the 2 x rows sums stay in registers. */
MFK_INLINE void dots_rows(const attn_job *a, float *s, const float *base, int64_t b, int64_t i0,
                          int64_t qi0, int rows, int64_t h, const float *tile) {
  const float *x[DOT_ROWS];
  v16 lo[DOT_ROWS], hi[DOT_ROWS];
  for (int r = 0; r < rows; r++) {
    x[r] = q_row(a, base, b, i0 + qi0 + r, h);
    lo[r] = hi[r] = (v16){ 0 };
  }
  for (int64_t d = 0; d < a->hd; d++) {
    v16 t0 = V16(tile + d * KB), t1 = V16(tile + d * KB + COLS);
    for (int r = 0; r < rows; r++) {
      lo[r] += x[r][d] * t0;
      hi[r] += x[r][d] * t1;
    }
  }
  for (int r = 0; r < rows; r++) {
    V16(s + (qi0 + r) * KB) = lo[r];
    V16(s + (qi0 + r) * KB + COLS) = hi[r];
  }
}

/* s[qi * KB + j] = x_qi . (column j of tile) for nq rows x_qi = q_row(base, b, i0 + qi, h).
 * A half group takes 4 to 7 rows left over, as when decoding a few tokens. */
MFK_INLINE void block_dots(const attn_job *a, float *s, const float *base, int64_t b, int64_t i0,
                           int64_t nq, int64_t h, const float *tile) {
  int64_t qi = 0;
  for (; qi + DOT_ROWS <= nq; qi += DOT_ROWS) dots_rows(a, s, base, b, i0, qi, DOT_ROWS, h, tile);
  for (; qi + DOT_ROWS / 2 <= nq; qi += DOT_ROWS / 2) dots_rows(a, s, base, b, i0, qi, DOT_ROWS / 2, h, tile);
  for (; qi < nq; qi++) dots_rows(a, s, base, b, i0, qi, 1, h, tile);
}

/* x . y over n floats: sums in COLS lanes, then across them, then the tail. */
MFK_INLINE float row_dot(const float *x, const float *y, int64_t n) {
  v16 acc = { 0 };
  int64_t d = 0;
  for (; d + COLS <= n; d += COLS) acc += V16(x + d) * V16(y + d);
  float sum = v16_sum(acc);
  for (; d < n; d++) sum += x[d] * y[d];
  return sum;
}

/* The scores of block_dots for keys [j0, j0 + n), read straight from the
 * rows of K: when few queries share a key block, cheaper than transposing
 * it. Columns past n are zero. */
MFK_INLINE void row_dots(const attn_job *a, float *s, int64_t b, int64_t i0, int64_t nq, int64_t h,
                         int64_t g, int64_t j0, int64_t n) {
  for (int64_t qi = 0; qi < nq; qi++) {
    const float *x = q_row(a, a->q, b, i0 + qi, h);
    float *sr = s + qi * KB;
    for (int64_t j = 0; j < KB; j++)
      sr[j] = j < n ? row_dot(x, kv_row(a, a->k, b, j0 + j, g), a->hd) : 0.0f;
  }
}

/* The largest of s[j] for j < visible, and of init. Exact whatever the
 * order, so it can run in lanes. */
static inline float masked_max(const float *s, float init, int64_t visible) {
  float m[KB / 2], mx = init;
  for (int l = 0; l < KB / 2; l++) {
    float x = l < visible ? s[l] : init, y = l + KB / 2 < visible ? s[l + KB / 2] : init;
    m[l] = x > y ? x : y;
  }
  for (int l = 0; l < KB / 2; l++) mx = m[l] > mx ? m[l] : mx;
  return mx;
}

/* p[j] = exp(p[j] * scale - shift) for j < visible, 0 past it. */
static inline void masked_exp(float *p, float scale, float shift, int64_t visible) {
  for (int j = 0; j < KB; j++) p[j] = mfk_expf(p[j] * scale - shift);
  for (int j = 0; j < KB; j++) p[j] = j < visible ? p[j] : 0.0f;
}

/* Columns [d0, d0 + chunks * COLS) of rows [r0, r0 + rows) of
 * accumulate_rows, with rows x chunks sums in registers. */
MFK_INLINE void accumulate_tile(float *out, int64_t ldo, int64_t r0, int rows, int64_t d0, int chunks,
                                const float *w, int64_t w_row, int64_t w_col, const float *src, int64_t ld,
                                int64_t nj) {
  v16 acc[ACC_ROWS * ACC_CHUNKS];
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < chunks; c++) acc[r * chunks + c] = V16(out + (r0 + r) * ldo + d0 + c * COLS);
  for (int64_t j = 0; j < nj; j++)
    for (int c = 0; c < chunks; c++) {
      v16 x = V16(src + j * ld + d0 + c * COLS);
      for (int r = 0; r < rows; r++) acc[r * chunks + c] += w[(r0 + r) * w_row + j * w_col] * x;
    }
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < chunks; c++) V16(out + (r0 + r) * ldo + d0 + c * COLS) = acc[r * chunks + c];
}

/* Rows [r0, r0 + rows) of accumulate_rows; rows is a constant at each call.
 * Several rows take two column chunks: 16 sums per pair of loads make the
 * multiply-adds, not the loads, the limit. A lone row takes more chunks at
 * once: one chain of additions would wait on each multiply-add in turn. */
MFK_INLINE void accumulate_group(float *out, int64_t ldo, int64_t hd, int64_t r0, int rows, const float *w,
                                 int64_t w_row, int64_t w_col, const float *src, int64_t ld, int64_t nj) {
  int chunks = rows == 1 ? ACC_CHUNKS : ROW_CHUNKS;
  int64_t d0 = 0;
  for (; d0 + chunks * COLS <= hd; d0 += chunks * COLS)
    accumulate_tile(out, ldo, r0, rows, d0, chunks, w, w_row, w_col, src, ld, nj);
  for (; d0 + COLS <= hd; d0 += COLS)
    accumulate_tile(out, ldo, r0, rows, d0, 1, w, w_row, w_col, src, ld, nj);
  for (int r = 0; r < rows; r++)
    for (int64_t j = 0; j < nj; j++)
      for (int64_t d = d0; d < hd; d++)
        out[(r0 + r) * ldo + d] += w[(r0 + r) * w_row + j * w_col] * src[j * ld + d];
}

/* out[r * ldo, :] += sum over j < nj of w[r * w_row + j * w_col] * src[j * ld, :]
 * for r < nr (w_row = 1 reads w transposed), over hd columns, ACC_ROWS rows
 * at a time so that each row of src loaded serves several sums held in
 * registers. */
MFK_INLINE void accumulate_rows(float *out, int64_t ldo, int64_t hd, int64_t nr, const float *w,
                                int64_t w_row, int64_t w_col, const float *src, int64_t ld, int64_t nj) {
  int64_t r = 0;
  for (; r + ACC_ROWS <= nr; r += ACC_ROWS)
    accumulate_group(out, ldo, hd, r, ACC_ROWS, w, w_row, w_col, src, ld, nj);
  for (; r < nr; r++) accumulate_group(out, ldo, hd, r, 1, w, w_row, w_col, src, ld, nj);
}

/* ---- forward ---- */
MFK_SIMD static void fwd_units(void *arg, int64_t u0, int64_t u1) {
  attn_job job = *(const attn_job *)arg, *a = &job;
  int64_t nqb = mfk_ceil_div(a->Tq, QB), group = a->Hq / a->Hkv, offset = a->Tk - a->Tq;
  _Alignas(64) float scratch[KB * HD_MAX], acc[QB * HD_MAX], p[QB * KB];
  float row_max[QB], row_sum[QB], mx[QB], corr[QB];
  for (int64_t u = u0; u < u1; u++) {
    int64_t b = u / (a->Hq * nqb), h = u / nqb % a->Hq, i0 = u % nqb * QB;
    int64_t g = h / group, nq = mfk_min(QB, a->Tq - i0);
    int64_t keys = offset + i0 + nq; /* keys visible to the block's last query */
    for (int64_t qi = 0; qi < nq; qi++) row_max[qi] = -INFINITY, row_sum[qi] = 0.0f;
    memset(acc, 0, (size_t)(nq * a->hd) * sizeof(float));
    for (int64_t j0 = 0; j0 < keys; j0 += KB) {
      int64_t n = mfk_min(KB, keys - j0);
      if (a->from_rows) row_dots(a, p, b, i0, nq, h, g, j0, n);
      else block_dots(a, p, a->q, b, i0, nq, h, key_tile(a, a->kt, scratch, a->k, b, g, j0, n));
      for (int64_t qi = 0; qi < nq; qi++) {
        int64_t visible = mfk_min(n, offset + i0 + qi + 1 - j0);
        /* scaling by a positive number keeps the order: max(s) scale = max(s scale) */
        mx[qi] = masked_max(p + qi * KB, row_max[qi] / a->scale, visible) * a->scale;
        masked_exp(p + qi * KB, a->scale, mx[qi], visible);
      }
      /* every row's rescaling at once, which vectorises; ~0 on the first block, where acc is 0 */
      for (int64_t qi = 0; qi < nq; qi++) corr[qi] = mfk_expf(row_max[qi] - mx[qi]);
      for (int64_t qi = 0; qi < nq; qi++) {
        for (int64_t d = 0; d < a->hd; d++) acc[qi * a->hd + d] *= corr[qi];
        row_sum[qi] = row_sum[qi] * corr[qi] + v16_sum(V16(p + qi * KB) + V16(p + qi * KB + COLS));
        row_max[qi] = mx[qi];
      }
      accumulate_rows(acc, a->hd, a->hd, nq, p, KB, 1, kv_row(a, a->v, b, j0, g), a->kv_stride, n);
    }
    for (int64_t qi = 0; qi < nq; qi++) {
      float sum = row_sum[qi], inv = 1.0f / sum;
      float *o = a->out + ((b * a->Tq + i0 + qi) * a->Hq + h) * a->hd;
      for (int64_t d = 0; d < a->hd; d++) o[d] = acc[qi * a->hd + d] * inv;
      if (a->lse) a->lse[(b * a->Hq + h) * a->Tq + i0 + qi] = row_max[qi] + logf(sum);
    }
  }
}

void mfk_attention_fwd(mfk_pool *pool, float *out, float *lse, const float *q, const float *k,
                       const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                       int64_t hd, int64_t kv_stride) {
  attn_job a = { .out = out, .lse = lse, .q = q, .k = k, .v = v, .B = B, .Tq = Tq, .Tk = Tk,
                 .Hq = Hq, .Hkv = Hkv, .hd = hd, .kv_stride = kv_stride,
                 .scale = 1.0f / sqrtf((float)hd) };
  int64_t units = B * Hq * mfk_ceil_div(Tq, QB);
  a.from_rows = Tq * (Hq / Hkv) <= ROWS_MAX;
  if (!a.from_rows && units > B * Hkv) make_tiles(pool, &a, 0); /* a key block serves several units */
  mfk_parallel_for(pool, units, fwd_units, &a);
  free(a.kt);
}

/* ---- backward ---- */
/* D = dout . out of query t, head h: from the table made up front when there
 * was memory for it (every key block that the query sees needs it), else
 * afresh. */
MFK_INLINE float row_delta(const attn_job *a, int64_t b, int64_t t, int64_t h) {
  if (a->delta) return a->delta[(b * a->Hq + h) * a->Tq + t];
  return row_dot(q_row(a, a->dout, b, t, h), q_row(a, a->o, b, t, h), a->hd);
}

MFK_SIMD static void fill_deltas(void *arg, int64_t u0, int64_t u1) {
  attn_job job = *(const attn_job *)arg, *a = &job;
  float *table = job.delta;
  job.delta = NULL; /* so that row_delta computes each D */
  for (int64_t u = u0; u < u1; u++) /* u = b * Hq + h */
    for (int64_t t = 0; t < a->Tq; t++) table[u * a->Tq + t] = row_delta(a, u / a->Hq, t, u % a->Hq);
}

/* P and scaled dS of queries [i0, i0+nq) of head h against the key block at
 * j0 whose K and V tiles are given; masked entries are 0. */
MFK_INLINE void block_grads(const attn_job *a, float *p, float *ds, const float *ktile,
                            const float *vtile, int64_t b, int64_t h, int64_t i0, int64_t nq,
                            int64_t j0) {
  float dp[QB * KB];
  block_dots(a, p, a->q, b, i0, nq, h, ktile);
  block_dots(a, dp, a->dout, b, i0, nq, h, vtile);
  for (int64_t qi = 0; qi < nq; qi++) {
    float lse = a->lse_in[(b * a->Hq + h) * a->Tq + i0 + qi];
    float delta = row_delta(a, b, i0 + qi, h);
    int64_t visible = i0 + qi + 1 - j0;
    float *pr = p + qi * KB, *dsr = ds + qi * KB, *dpr = dp + qi * KB;
    masked_exp(pr, a->scale, lse, visible);
    for (int j = 0; j < KB; j++) dsr[j] = pr[j] * (dpr[j] - delta) * a->scale;
  }
}

MFK_SIMD static void dq_units(void *arg, int64_t u0, int64_t u1) {
  attn_job job = *(const attn_job *)arg, *a = &job;
  int64_t nqb = mfk_ceil_div(a->Tq, QB), group = a->Hq / a->Hkv;
  _Alignas(64) float kscratch[KB * HD_MAX], vscratch[KB * HD_MAX], acc[QB * HD_MAX];
  float p[QB * KB], ds[QB * KB];
  for (int64_t u = u0; u < u1; u++) {
    int64_t b = u / (a->Hq * nqb), h = u / nqb % a->Hq, i0 = u % nqb * QB;
    int64_t g = h / group, nq = mfk_min(QB, a->Tq - i0), keys = i0 + nq;
    memset(acc, 0, (size_t)(nq * a->hd) * sizeof(float));
    for (int64_t j0 = 0; j0 < keys; j0 += KB) {
      int64_t n = mfk_min(KB, keys - j0);
      const float *ktile = key_tile(a, a->kt, kscratch, a->k, b, g, j0, n);
      const float *vtile = key_tile(a, a->vt, vscratch, a->v, b, g, j0, n);
      block_grads(a, p, ds, ktile, vtile, b, h, i0, nq, j0);
      accumulate_rows(acc, a->hd, a->hd, nq, ds, KB, 1, kv_row(a, a->k, b, j0, g), a->kv_stride, n);
    }
    for (int64_t qi = 0; qi < nq; qi++)
      memcpy(a->dq + ((b * a->Tq + i0 + qi) * a->Hq + h) * a->hd, acc + qi * a->hd,
             (size_t)a->hd * sizeof(float));
  }
}

/* dk and dv of the key block at j0 (n keys) of kv head g, summed over the
 * group's query heads and the query blocks that see it, in that order; with
 * dq set, each block's dS k is added to those queries' rows of dq too. */
MFK_INLINE void key_block_grads(const attn_job *a, int64_t b, int64_t g, int64_t j0, int64_t n,
                                const float *ktile, const float *vtile, int dq) {
  int64_t group = a->Hq / a->Hkv, row = a->Hq * a->hd;
  _Alignas(64) float dk[KB * HD_MAX], dv[KB * HD_MAX];
  float p[QB * KB], ds[QB * KB];
  memset(dk, 0, (size_t)(n * a->hd) * sizeof(float));
  memset(dv, 0, (size_t)(n * a->hd) * sizeof(float));
  for (int64_t h = g * group; h < (g + 1) * group; h++)
    for (int64_t i0 = j0 / QB * QB; i0 < a->Tq; i0 += QB) {
      int64_t nq = mfk_min(QB, a->Tq - i0);
      block_grads(a, p, ds, ktile, vtile, b, h, i0, nq, j0);
      if (dq)
        accumulate_rows(a->dq + q_at(a, b, i0, h), row, a->hd, nq, ds, KB, 1, kv_row(a, a->k, b, j0, g),
                        a->kv_stride, n);
      accumulate_rows(dk, a->hd, a->hd, n, ds, 1, KB, q_row(a, a->q, b, i0, h), row, nq);
      accumulate_rows(dv, a->hd, a->hd, n, p, 1, KB, q_row(a, a->dout, b, i0, h), row, nq);
    }
  for (int64_t j = 0; j < n; j++) {
    memcpy(a->dk + ((b * a->Tk + j0 + j) * a->Hkv + g) * a->hd, dk + j * a->hd, (size_t)a->hd * sizeof(float));
    memcpy(a->dv + ((b * a->Tk + j0 + j) * a->Hkv + g) * a->hd, dv + j * a->hd, (size_t)a->hd * sizeof(float));
  }
}

MFK_SIMD static void dkv_units(void *arg, int64_t u0, int64_t u1) {
  attn_job job = *(const attn_job *)arg, *a = &job;
  int64_t nkb = mfk_ceil_div(a->Tk, KB);
  _Alignas(64) float kscratch[KB * HD_MAX], vscratch[KB * HD_MAX];
  for (int64_t u = u0; u < u1; u++) {
    int64_t b = u / (a->Hkv * nkb), g = u / nkb % a->Hkv, j0 = u % nkb * KB;
    int64_t n = mfk_min(KB, a->Tk - j0);
    const float *ktile = key_tile(a, a->kt, kscratch, a->k, b, g, j0, n);
    const float *vtile = key_tile(a, a->vt, vscratch, a->v, b, g, j0, n);
    key_block_grads(a, b, g, j0, n, ktile, vtile, 0);
  }
}

/* One pass for dq, dk and dv of a (sequence, kv head): each P and dS block
 * is made once. Key blocks are taken in order, so every row of dq adds its
 * key blocks in the order of dq_units and gets the same bits. */
MFK_SIMD static void bwd_units(void *arg, int64_t u0, int64_t u1) {
  attn_job job = *(const attn_job *)arg, *a = &job;
  int64_t group = a->Hq / a->Hkv;
  _Alignas(64) float ktile[KB * HD_MAX], vtile[KB * HD_MAX];
  for (int64_t u = u0; u < u1; u++) {
    int64_t b = u / a->Hkv, g = u % a->Hkv;
    for (int64_t i = 0; i < a->Tq; i++)
      for (int64_t h = g * group; h < (g + 1) * group; h++)
        memset(a->dq + q_at(a, b, i, h), 0, (size_t)a->hd * sizeof(float));
    for (int64_t j0 = 0; j0 < a->Tk; j0 += KB) {
      int64_t n = mfk_min(KB, a->Tk - j0);
      transpose_block(a, ktile, a->k, b, g, j0, n);
      transpose_block(a, vtile, a->v, b, g, j0, n);
      key_block_grads(a, b, g, j0, n, ktile, vtile, 1);
    }
  }
}

void mfk_attention_bwd(mfk_pool *pool, float *dq, float *dk, float *dv, const float *dout,
                       const float *q, const float *k, const float *v, const float *out,
                       const float *lse, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd) {
  attn_job a = { .dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k, .v = v, .o = out,
                 .lse_in = lse, .B = B, .Tq = T, .Tk = T, .Hq = Hq, .Hkv = Hkv, .hd = hd,
                 .kv_stride = Hkv * hd, .scale = 1.0f / sqrtf((float)hd) };
  a.delta = malloc((size_t)(B * Hq * T) * sizeof(float));
  if (a.delta) mfk_parallel_for(pool, B * Hq, fill_deltas, &a);
  if (B * Hkv >= ONE_PASS_UNITS * mfk_pool_size(pool)) {
    mfk_parallel_for(pool, B * Hkv, bwd_units, &a);
  } else {
    make_tiles(pool, &a, 1);
    mfk_parallel_for(pool, B * Hq * mfk_ceil_div(T, QB), dq_units, &a);
    mfk_parallel_for(pool, B * Hkv * mfk_ceil_div(T, KB), dkv_units, &a);
    free(a.kt);
    free(a.vt);
  }
  free(a.delta);
}
