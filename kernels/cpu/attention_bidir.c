/*
 * Bidirectional attention over padded sequences (BERT-style encoders).
 *
 * Every query of sequence b sees every key of that sequence that is not
 * padding: keys 0 .. lens[b]-1. Queries at padding positions get zeros, so
 * padding never carries NaN or stale data into the next layer.
 *
 * Work is split over (sequence, head) pairs. A pair's keys are transposed
 * once into a [hd, width] tile in the caller's scratch memory, width = len
 * rounded up to 16 with zero columns, so that the scores of one query
 * against all keys are whole 16-wide vector multiply-adds over d (no
 * scalar tails: sentences are a few dozen tokens, and a tail would cost
 * as much as the vectors), and the weighted sum of values is hd-wide
 * multiply-adds over the real keys. Sequences are short (BERT
 * allows 512 positions), so a whole row of scores is kept and the softmax
 * is exact in two passes. Each sum runs in one fixed order, so results do
 * not depend on the thread count.
 */
#include "cpu/common.h"

#include <math.h>
#include <string.h>

typedef struct bidir_args {
  float *out, *scratch;
  const float *q, *k, *v;
  const int32_t *lens;
  int64_t T, H, hd, stride;
  float scale;
} bidir_args;

enum { W = 16 }; /* key tiles are whole multiples of 16 wide */

static int64_t tile_width(int64_t len) { return (len + W - 1) / W * W; }

/* kt [hd, width] = the head's keys, transposed, zero past len. */
static void transpose_keys(const bidir_args *a, float *kt, const float *k, int64_t len) {
  int64_t width = tile_width(len);
  for (int64_t d = 0; d < a->hd; d++) memset(kt + d * width + len, 0, (size_t)(width - len) * sizeof(float));
  for (int64_t j = 0; j < len; j++)
    for (int64_t d = 0; d < a->hd; d++) kt[d * width + j] = k[j * a->stride + d];
}

/* out [hd] = softmax(scale q.k_j) weighted sum of v_j over j < len. The
 * row's maximum and sum run in 16 lanes, combined in a fixed tree. */
MFK_SIMD static void attend_row(const bidir_args *a, float *out, const float *q, const float *kt,
                                const float *v, int64_t len, float *s) {
  int64_t hd = a->hd, width = tile_width(len);
  memset(s, 0, (size_t)width * sizeof(float));
  for (int64_t d = 0; d < hd; d++) {
    float qd = q[d] * a->scale;
    const float *row = kt + d * width;
    for (int64_t j = 0; j < width; j++) s[j] += qd * row[j];
  }
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
  memset(out, 0, (size_t)hd * sizeof(float));
  for (int64_t j = 0; j < len; j++) {
    float p = s[j] * inv;
    const float *vj = v + j * a->stride;
    for (int64_t d = 0; d < hd; d++) out[d] += p * vj[d];
  }
}

static void bidir_heads(void *ctx, int64_t begin, int64_t end) {
  const bidir_args *a = ctx;
  int64_t T = a->T, hd = a->hd, D = a->H * hd;
  for (int64_t u = begin; u < end; u++) {
    int64_t b = u / a->H, h = u % a->H, len = a->lens[b];
    float *kt = a->scratch + u * (hd + 1) * tile_width(T), *s = kt + hd * tile_width(T);
    const float *k = a->k + b * T * a->stride + h * hd, *v = a->v + b * T * a->stride + h * hd;
    transpose_keys(a, kt, k, len);
    for (int64_t t = 0; t < T; t++) {
      float *out = a->out + (b * T + t) * D + h * hd;
      if (t < len) attend_row(a, out, a->q + (b * T + t) * a->stride + h * hd, kt, v, len, s);
      else memset(out, 0, (size_t)hd * sizeof(float));
    }
  }
}

int64_t mfk_attention_bidir_scratch(int64_t B, int64_t T, int64_t H, int64_t hd) {
  return B * H * (hd + 1) * tile_width(T);
}

void mfk_attention_bidir_fwd(mfk_pool *pool, float *out, const float *q, const float *k, const float *v,
                             const int32_t *lens, int64_t B, int64_t T, int64_t H, int64_t hd,
                             int64_t stride, float *scratch) {
  bidir_args a = {out, scratch, q, k, v, lens, T, H, hd, stride, 1.0f / sqrtf((float)hd)};
  mfk_parallel_for(pool, B * H, bidir_heads, &a);
}
