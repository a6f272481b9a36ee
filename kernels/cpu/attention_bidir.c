/*
 * Bidirectional attention over padded sequences (BERT-style encoders).
 *
 * Every query of sequence b sees every key of that sequence that is not
 * padding: keys 0 .. lens[b]-1. Queries at padding positions get zeros, so
 * padding never carries NaN or stale data into the next layer.
 *
 * Work is split over (sequence, head) units; a range of units works in the
 * scratch slot of its first unit, so no call allocates and the tiles stay
 * in cache from one unit to the next. A unit copies its keys, transposed,
 * into kt [hd, width] and its values into vt [len, hdp], width and hdp
 * rounded up to 16 with zeros, so that every inner loop is whole 16-wide
 * vector multiply-adds (sentences are a few dozen tokens: a scalar tail
 * would cost as much as the vectors). Queries then go in groups of QB:
 * each key or value vector loaded serves QB queries, whose QB sums are
 * independent chains in registers. A group's scores [QB, width] stay in
 * L1; sequences are short (BERT allows 512 positions), so the softmax is
 * exact in two passes over a whole row.
 *
 * A query's result does not depend on its group or on the thread that runs
 * it: every sum runs in one fixed order (d ascending for scores, keys
 * ascending for the weighted values, a fixed lane tree for the softmax).
 */
#include "cpu/common.h"

#include <math.h>
#include <string.h>

enum {
  W = 16, /* key tiles and value rows are whole multiples of 16 wide */
  QB = 8, /* queries per group: eight independent multiply-add chains */
};

typedef struct bidir_args {
  float *out, *scratch;
  const float *q, *k, *v;
  const int32_t *lens;
  int64_t T, H, hd, stride;
  float scale;
} bidir_args;

static int64_t round16(int64_t n) { return (n + W - 1) / W * W; }

/* Floats of one unit's tiles: kt [hd, width], vt [width, hdp], the group's
 * scaled queries [QB, hd] and scores [QB, width]. */
static int64_t slot_floats(int64_t T, int64_t hd) {
  int64_t width = round16(T);
  return hd * width + width * round16(hd) + QB * hd + QB * width;
}

typedef struct unit_tiles {
  float *kt, *vt, *q, *s;
  int64_t len, width, hd, hdp; /* width: len rounded up to 16; hdp: hd rounded up to 16 */
} unit_tiles;

/* The tiles of the head whose keys and values start at k and v. (Element
 * loops: rows are a few dozen floats, shorter than a libc call is worth.) */
static void load_tiles(const bidir_args *a, const unit_tiles *u, const float *k, const float *v) {
  for (int64_t d = 0; d < u->hd; d++)
    for (int64_t j = 0; j < u->width; j++) u->kt[d * u->width + j] = j < u->len ? k[j * a->stride + d] : 0.0f;
  for (int64_t j = 0; j < u->len; j++)
    for (int64_t d = 0; d < u->hdp; d++) u->vt[j * u->hdp + d] = d < u->hd ? v[j * a->stride + d] : 0.0f;
}

/* s [QB, width] = u->q [QB, hd] kt, key tile by key tile. */
MFK_INLINE void group_scores(const unit_tiles *u) {
  for (int64_t j0 = 0; j0 < u->width; j0 += W) {
    v16 acc[QB];
    for (int i = 0; i < QB; i++) acc[i] = (v16){ 0 };
    for (int64_t d = 0; d < u->hd; d++) {
      v16 key = V16(u->kt + d * u->width + j0);
      for (int i = 0; i < QB; i++) acc[i] += u->q[i * u->hd + d] * key;
    }
    for (int i = 0; i < QB; i++) V16(u->s + i * u->width + j0) = acc[i];
  }
}

/* s [width] = softmax of its first len scores, zeros past them. The row's
 * maximum and sum run in 16 lanes, combined in a fixed tree. */
MFK_INLINE void softmax_row(float *s, int64_t len, int64_t width) {
  for (int64_t j = len; j < width; j++) s[j] = -INFINITY;
  v16 m = V16(s);
  for (int64_t j = W; j < width; j += W) v16_keep_max(&m, V16(s + j));
  float mx = m[0];
  for (int l = 1; l < W; l++) mx = m[l] > mx ? m[l] : mx;
  v16 lanes = { 0 };
  for (int64_t j = 0; j < width; j += W) {
    for (int l = 0; l < W; l++) s[j + l] = j + l < len ? mfk_expf(s[j + l] - mx) : 0.0f;
    lanes += V16(s + j);
  }
  float inv = 1.0f / v16_sum(lanes);
  for (int64_t j = 0; j < len; j++) s[j] *= inv;
}

/* Rows out[i] (NULL: a query past len, not written) = s [QB, width] vt,
 * 16 dimensions at a time. */
MFK_INLINE void group_values(const unit_tiles *u, float *const *out) {
  for (int64_t d0 = 0; d0 < u->hdp; d0 += W) {
    v16 acc[QB];
    for (int i = 0; i < QB; i++) acc[i] = (v16){ 0 };
    for (int64_t j = 0; j < u->len; j++) {
      v16 val = V16(u->vt + j * u->hdp + d0);
      for (int i = 0; i < QB; i++) acc[i] += u->s[i * u->width + j] * val;
    }
    int64_t n = mfk_min(W, u->hd - d0);
    for (int i = 0; i < QB; i++) {
      if (!out[i]) continue;
      if (n == W) V16(out[i] + d0) = acc[i]; /* a libc call per row would cost as much as the row */
      else for (int64_t l = 0; l < n; l++) out[i][d0 + l] = acc[i][l];
    }
  }
}

/* Queries t0 .. t0+QB-1 of the unit; those past len repeat the last real
 * query (their results are dropped), so every group is full. */
MFK_SIMD static void attend_group(const bidir_args *a, unit_tiles tiles, const float *q, float *out, int64_t t0) {
  const unit_tiles *u = &tiles; /* a local copy: stores through its pointers cannot change it */
  float *rows[QB], scale = a->scale;
  int64_t D = a->H * a->hd;
  for (int i = 0; i < QB; i++) {
    const float *src = q + mfk_min(t0 + i, u->len - 1) * a->stride;
    float *dst = u->q + i * u->hd;
    for (int64_t d = 0; d < u->hd; d++) dst[d] = src[d] * scale;
    rows[i] = t0 + i < u->len ? out + (t0 + i) * D : NULL;
  }
  group_scores(u);
  for (int i = 0; i < QB; i++) softmax_row(u->s + i * u->width, u->len, u->width);
  group_values(u, rows);
}

static void bidir_heads(void *ctx, int64_t begin, int64_t end) {
  const bidir_args *a = ctx;
  int64_t T = a->T, hd = a->hd, D = a->H * hd;
  float *slot = a->scratch + begin * slot_floats(T, hd);
  for (int64_t u = begin; u < end; u++) {
    int64_t b = u / a->H, h = u % a->H;
    unit_tiles tiles = {NULL, NULL, NULL, NULL, a->lens[b], round16(a->lens[b]), hd, round16(hd)};
    tiles.kt = slot;
    tiles.vt = tiles.kt + hd * round16(T);
    tiles.q = tiles.vt + round16(T) * tiles.hdp;
    tiles.s = tiles.q + QB * hd;
    int64_t first = b * T * a->stride + h * hd;
    float *out = a->out + b * T * D + h * hd;
    load_tiles(a, &tiles, a->k + first, a->v + first);
    for (int64_t t0 = 0; t0 < tiles.len; t0 += QB) attend_group(a, tiles, a->q + first, out, t0);
    for (int64_t t = tiles.len; t < T; t++) memset(out + t * D, 0, (size_t)hd * sizeof(float));
  }
}

int64_t mfk_attention_bidir_scratch(int64_t B, int64_t T, int64_t H, int64_t hd) {
  return B * H * slot_floats(T, hd);
}

void mfk_attention_bidir_fwd(mfk_pool *pool, float *out, const float *q, const float *k, const float *v,
                             const int32_t *lens, int64_t B, int64_t T, int64_t H, int64_t hd,
                             int64_t stride, float *scratch) {
  bidir_args a = {out, scratch, q, k, v, lens, T, H, hd, stride, 1.0f / sqrtf((float)hd)};
  mfk_parallel_for(pool, B * H, bidir_heads, &a);
}
