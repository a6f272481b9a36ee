/*
 * Embedding lookup and its gradient. Ids must lie in [0, rows of the table);
 * the caller checks them. The gradient splits columns among threads and adds
 * rows in order of i, so repeated ids accumulate in a fixed order.
 */
#include "cpu/common.h"

#include <string.h>

typedef struct emb_args {
  float *dst;
  const float *src;
  const int32_t *ids;
  int64_t n, d;
} emb_args;

static void gather_rows(void *arg, int64_t i0, int64_t i1) {
  const emb_args *e = arg;
  for (int64_t i = i0; i < i1; i++)
    memcpy(e->dst + i * e->d, e->src + (int64_t)e->ids[i] * e->d, (size_t)e->d * sizeof(float));
}

void mfk_embedding_fwd(mfk_pool *pool, float *out, const float *table, const int32_t *ids,
                       int64_t n, int64_t d) {
  emb_args e = { out, table, ids, n, d };
  mfk_parallel_for(pool, n, gather_rows, &e);
}

MFK_SIMD static void scatter_cols(void *arg, int64_t c0, int64_t c1) {
  const emb_args *e = arg;
  for (int64_t i = 0; i < e->n; i++) {
    float *dst = e->dst + (int64_t)e->ids[i] * e->d;
    const float *src = e->src + i * e->d;
    for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
  }
}

void mfk_embedding_bwd(mfk_pool *pool, float *dtable, const float *dout, const int32_t *ids,
                       int64_t n, int64_t d) {
  emb_args e = { dtable, dout, ids, n, d };
  mfk_parallel_for(pool, d, scatter_cols, &e);
}
