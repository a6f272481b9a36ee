/*
 * KV-cache decoding and generation.
 *
 * A cache keeps, per layer and sequence, the keys and values of every
 * position seen so far. mf_model_decode runs only the new tokens through the
 * layers (their attention reads the cache) and computes the LM head for the
 * last new position of each sequence alone. Sampling draws from a
 * counter-based stream, so a seed gives the same text on every machine and
 * thread count.
 */
#include "model.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

mf_kv_cache *mf_kv_cache_new(const mf_model *m, int64_t batch, int64_t max_len) {
  const mf_model_config *cfg = &m->cfg;
  if (max_len <= 0) max_len = cfg->max_position_embeddings;
  if (batch <= 0 || max_len <= 0)
    return mf_fail_null("kv cache: batch %lld and length %lld must be positive", (long long)batch,
                        (long long)max_len);
  mf_kv_cache *c = calloc(1, sizeof *c);
  if (!c) return mf_fail_null("kv cache: out of memory");
  c->batch = batch;
  c->max_len = max_len;
  c->kv_dim = (int64_t)cfg->num_key_value_heads * cfg->head_dim;
  c->layers = cfg->num_hidden_layers;
  size_t n = (size_t)(c->layers * batch * max_len * c->kv_dim);
  c->k = malloc(n * sizeof(float));
  c->v = malloc(n * sizeof(float));
  if (!c->k || !c->v) {
    mf_kv_cache_free(c);
    return mf_fail_null("kv cache: out of memory for %lld positions", (long long)max_len);
  }
  return c;
}

void mf_kv_cache_free(mf_kv_cache *c) {
  if (!c) return;
  free(c->k);
  free(c->v);
  free(c->block);
  free(c->pos);
  free(c);
}

int64_t mf_kv_cache_len(const mf_kv_cache *c) { return c->len; }
void mf_kv_cache_reset(mf_kv_cache *c) { c->len = 0; }

static void layout_decode(const mf_model *m, mf_kv_cache *c, mf_carver *cv, int64_t rows) {
  mf_layout_acts(m, cv, rows, &c->acts, 0);
  c->last = mf_take(cv, c->batch * m->cfg.hidden_size);
  c->last_rstd = mf_take(cv, c->batch);
}

/* Grows the decoding activations to rows new tokens; shorter steps reuse them. */
static int reserve_decode(const mf_model *m, mf_kv_cache *c, int64_t rows) {
  if (rows <= c->cap_rows) return 0;
  mf_carver cv = {NULL, 0};
  layout_decode(m, c, &cv, rows);
  free(c->block);
  free(c->pos);
  c->block = malloc((size_t)cv.used * sizeof(float));
  c->pos = malloc((size_t)rows * sizeof(int32_t));
  c->cap_rows = 0;
  if (!c->block || !c->pos) return mf_fail("kv cache: out of memory for %lld tokens", (long long)rows);
  cv = (mf_carver){c->block, 0};
  layout_decode(m, c, &cv, rows);
  c->cap_rows = rows;
  return 0;
}

int mf_model_decode(mf_model *m, mf_kv_cache *c, const int32_t *tokens, int64_t n, float *logits) {
  const mf_model_config *cfg = &m->cfg;
  int64_t B = c->batch, rows = B * n, D = cfg->hidden_size;
  if (c->layers != cfg->num_hidden_layers || c->kv_dim != (int64_t)cfg->num_key_value_heads * cfg->head_dim)
    return mf_fail("decode: the KV cache was made for another model shape");
  if (n <= 0) return mf_fail("decode: no tokens");
  if (c->len + n > c->max_len)
    return mf_fail("decode: %lld tokens at position %lld exceed the KV cache length %lld",
                   (long long)n, (long long)c->len, (long long)c->max_len);
  if (mf_check_ids(m, tokens, B, n, "token", 0) || reserve_decode(m, c, rows)) return -1;
  mfk_pool *pool = mf_pool();
  mf_layer_acts *a = &c->acts;
  for (int64_t i = 0; i < rows; i++) c->pos[i] = (int32_t)(c->len + i % n);

  mfk_embedding_fwd(pool, a->x, mf_pv(m->embed), tokens, rows, D);
  for (int l = 0; l < cfg->num_hidden_layers; l++) mf_layer_forward(m, l, a, a->x, c->pos, B, n, c);
  /* Only each sequence's last position needs logits. */
  for (int64_t b = 0; b < B; b++)
    memcpy(a->xn1 + b * D, a->x + (b * n + n - 1) * D, (size_t)D * sizeof(float));
  mfk_rmsnorm_fwd(pool, c->last, c->last_rstd, a->xn1, mf_pv(m->final_norm), B, D,
                  (float)cfg->rms_norm_eps);
  mf_linear_fwd(pool, logits, 0, c->last, m->lm_head, NULL, B);
  c->len += n;
  return 0;
}

/* ---- sampling ---- */

typedef struct scored {
  float logit;
  int32_t id;
} scored;

/* Highest logit first; equal logits by id, so the order is total. */
static int by_logit(const void *pa, const void *pb) {
  const scored *a = pa, *b = pb;
  if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
  return (a->id > b->id) - (a->id < b->id);
}

static int32_t argmax(const float *logits, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; i++)
    if (logits[i] > logits[best]) best = i;
  return (int32_t)best;
}

/* temperature, then top-k, then top-p, as transformers applies them. */
static int32_t sample(const float *logits, int64_t V, const mf_generate_opts *o, mf_rng *rng,
                      scored *work) {
  for (int64_t i = 0; i < V; i++) work[i] = (scored){logits[i], (int32_t)i};
  qsort(work, (size_t)V, sizeof *work, by_logit);
  int64_t keep = o->top_k > 0 && o->top_k < V ? o->top_k : V;
  double total = 0;
  for (int64_t i = 0; i < keep; i++) total += exp((work[i].logit - work[0].logit) / o->temperature);
  if (o->top_p > 0 && o->top_p < 1) {
    double mass = 0;
    int64_t i = 0;
    while (i < keep && mass < o->top_p * total)
      mass += exp((work[i++].logit - work[0].logit) / o->temperature);
    keep = i;
    total = mass;
  }
  double u = mf_rng_uniform(rng) * total, acc = 0;
  for (int64_t i = 0; i < keep; i++) {
    acc += exp((work[i].logit - work[0].logit) / o->temperature);
    if (u < acc) return work[i].id;
  }
  return work[keep - 1].id;
}

static int is_stop(const mf_model *m, const mf_generate_opts *o, int32_t id) {
  if (!o->ignore_eos && id == m->cfg.eos_token_id) return 1;
  for (int i = 0; i < o->nstop; i++)
    if (o->stop_ids[i] == id) return 1;
  return 0;
}

int mf_model_generate(mf_model *m, const int32_t *prompt, int64_t n, const mf_generate_opts *o,
                      int32_t *out) {
  int64_t V = m->cfg.vocab_size;
  if (n <= 0) return mf_fail("generate: empty prompt");
  if (o->max_tokens <= 0) return 0;
  mf_kv_cache *c = mf_kv_cache_new(m, 1, o->max_len > 0 ? o->max_len : n + o->max_tokens);
  if (!c) return -1;
  float *logits = malloc((size_t)V * sizeof *logits);
  scored *work = malloc((size_t)V * sizeof *work);
  int count = 0;
  int rc = logits && work ? mf_model_decode(m, c, prompt, n, logits)
                          : mf_fail("generate: out of memory for %lld logits", (long long)V);
  mf_rng rng;
  mf_rng_init(&rng, o->seed, mf_hash64("generate", 8));
  while (rc == 0) {
    int32_t id = o->temperature > 0 ? sample(logits, V, o, &rng, work) : argmax(logits, V);
    out[count++] = id;
    if ((o->on_token && o->on_token(o->ctx, id)) || is_stop(m, o, id) || count == o->max_tokens) break;
    rc = mf_model_decode(m, c, &id, 1, logits);
  }
  mf_kv_cache_free(c);
  free(logits);
  free(work);
  return rc ? -1 : count;
}
