/*
 * KV-cache decoding and generation.
 *
 * A cache keeps, per layer and sequence, the keys and values of every
 * position seen so far, and each sequence's own length. A decoding step runs
 * only the new tokens of some sequences through the layers (their attention
 * reads the cache) and computes the LM head for the last new position of
 * each alone.
 *
 * Generation feeds a batch of prompts through a fixed number of cache slots.
 * The prefix common to all prompts (a shared system message, say) is run
 * once into a slot of its own and copied into each sequence's slot; the
 * rest of a prompt is prefilled into a free slot in one forward pass over
 * its tokens; then every active sequence advances one token per step, in
 * one forward pass whose matmuls see one row per sequence; a finished
 * sequence frees its slot for the next prompt. Each sequence samples from
 * its own counter-based stream keyed by (seed, sequence index), and the
 * kernels compute each row on its own, so a sequence's ids do not depend on its
 * neighbours, the slot count or the thread count. (One caveat: on f32
 * weights a product of more than 8 rows takes the GEMM's blocked path,
 * whose sums round differently from the matrix-vector path in the last
 * bits, so batching or a shared prefix can move logits by an ulp; the
 * quantized matmul has no such switch.)
 */
#include "model.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { DEFAULT_MAX_BATCH = 16 };

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
  c->len = calloc((size_t)batch, sizeof *c->len);
  c->all = malloc((size_t)batch * sizeof *c->all);
  if (!c->k || !c->v || !c->len || !c->all) {
    mf_kv_cache_free(c);
    return mf_fail_null("kv cache: out of memory for %lld sequences of %lld positions", (long long)batch,
                        (long long)max_len);
  }
  for (int64_t s = 0; s < batch; s++) c->all[s] = s;
  return c;
}

void mf_kv_cache_free(mf_kv_cache *c) {
  if (!c) return;
  free(c->k);
  free(c->v);
  free(c->len);
  free(c->all);
  free(c->block);
  free(c->pos);
  free(c);
}

int64_t mf_kv_cache_len(const mf_kv_cache *c) { return c->len[0]; }
void mf_kv_cache_reset(mf_kv_cache *c) { memset(c->len, 0, (size_t)c->batch * sizeof *c->len); }

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

/* Runs n new tokens of each of the B sequences slots[0..B) (tokens [B, n])
 * and writes the logits of each one's last new token into logits [B, vocab]. */
static int decode_slots(mf_model *m, mf_kv_cache *c, const int64_t *slots, int64_t B, const int32_t *tokens,
                        int64_t n, float *logits) {
  const mf_model_config *cfg = &m->cfg;
  int64_t rows = B * n, D = cfg->hidden_size;
  if (c->layers != cfg->num_hidden_layers || c->kv_dim != (int64_t)cfg->num_key_value_heads * cfg->head_dim)
    return mf_fail("decode: the KV cache was made for another model shape");
  if (n <= 0) return mf_fail("decode: no tokens");
  for (int64_t b = 0; b < B; b++)
    if (c->len[slots[b]] + n > c->max_len)
      return mf_fail("decode: %lld tokens at position %lld exceed the KV cache length %lld", (long long)n,
                     (long long)c->len[slots[b]], (long long)c->max_len);
  if (mf_check_ids(m, tokens, B, n, "token", 0) || reserve_decode(m, c, rows) || mf_lora_begin(m, rows, 0))
    return -1;
  mfk_pool *pool = mf_pool();
  mf_layer_acts *a = &c->acts;
  for (int64_t i = 0; i < rows; i++) c->pos[i] = (int32_t)(c->len[slots[i / n]] + i % n);
  c->slots = slots;

  mfk_embedding_fwd(pool, a->x, mf_pv(m->embed), tokens, rows, D);
  for (int l = 0; l < cfg->num_hidden_layers; l++) mf_layer_forward(m, l, a, a->x, c->pos, B, n, c);
  /* Only each sequence's last position needs logits. */
  for (int64_t b = 0; b < B; b++)
    memcpy(a->xn1 + b * D, a->x + (b * n + n - 1) * D, (size_t)D * sizeof(float));
  mfk_rmsnorm_fwd(pool, c->last, c->last_rstd, a->xn1, mf_pv(m->final_norm), B, D,
                  (float)cfg->rms_norm_eps);
  mf_linear_fwd(pool, logits, 0, c->last, m->lm_head, NULL, B);
  for (int64_t b = 0; b < B; b++) c->len[slots[b]] += n;
  return 0;
}

int mf_model_decode(mf_model *m, mf_kv_cache *c, const int32_t *tokens, int64_t n, float *logits) {
  return decode_slots(m, c, c->all, c->batch, tokens, n, logits);
}

/* ---- choosing the next id ---- */

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

/* ---- batched generation ---- */

/* One call's state. Slot s of the cache holds sequence seq_of[s] (-1: free). */
typedef struct gen {
  mf_model *m;
  const mf_generate_opts *o;
  const int32_t *prompts;
  const int64_t *offsets;
  int64_t nseq, next;  /* prompts, and the first not yet started */
  int32_t *out, *counts;
  mf_kv_cache *cache;
  int64_t slots;     /* sequences decoded together; cache slot `slots` holds the shared prefix */
  int64_t shared;    /* length of the prefix every prompt starts with */
  int64_t *seq_of;   /* [slots] */
  int64_t *active;   /* [slots]: the slots a step feeds */
  int32_t *last;     /* [slots]: each sequence's newest id */
  int32_t *input;    /* [slots]: a step's tokens */
  mf_rng *rng;       /* [slots]: each sequence's stream */
  float *logits;     /* [slots, vocab] */
  scored *work;      /* [vocab] for sampling */
  uint32_t *marked;  /* [vocab]: the penalty pass that last touched each id */
  uint32_t pass;
} gen;

/* Applies the repetition penalty to each id of ids not yet penalised in
 * this pass. */
static void penalize(gen *g, float *logits, const int32_t *ids, int64_t n) {
  float p = (float)g->o->repetition_penalty;
  for (int64_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (g->marked[id] == g->pass) continue;
    g->marked[id] = g->pass;
    logits[id] = logits[id] < 0 ? logits[id] * p : logits[id] / p;
  }
}

/* Picks the next id of slot s from its logits (changed in place), appends
 * it to the sequence's output and frees the slot when the sequence is done. */
static void advance(gen *g, int64_t s, float *logits) {
  const mf_generate_opts *o = g->o;
  int64_t seq = g->seq_of[s], V = g->m->cfg.vocab_size;
  int32_t *out = g->out + seq * o->max_tokens;
  if (o->repetition_penalty > 0 && o->repetition_penalty != 1) {
    g->pass++;
    penalize(g, logits, g->prompts + g->offsets[seq], g->offsets[seq + 1] - g->offsets[seq]);
    penalize(g, logits, out, g->counts[seq]);
  }
  int32_t id = o->temperature > 0 ? sample(logits, V, o, &g->rng[s], g->work) : argmax(logits, V);
  out[g->counts[seq]++] = id;
  g->last[s] = id;
  if ((o->on_token && o->on_token(o->ctx, seq, id)) || is_stop(g->m, o, id) || g->counts[seq] == o->max_tokens)
    g->seq_of[s] = -1;
}

/* Starts slot s with the keys and values of the shared prefix. */
static void copy_prefix(gen *g, int64_t s) {
  mf_kv_cache *c = g->cache;
  size_t bytes = (size_t)(g->shared * c->kv_dim) * sizeof(float);
  for (int l = 0; l < c->layers && bytes; l++) {
    int64_t from = ((int64_t)l * c->batch + g->slots) * c->max_len * c->kv_dim;
    int64_t to = ((int64_t)l * c->batch + s) * c->max_len * c->kv_dim;
    memcpy(c->k + to, c->k + from, bytes);
    memcpy(c->v + to, c->v + from, bytes);
  }
  c->len[s] = g->shared;
}

/* Prefills the waiting prompts (past the shared prefix) into free slots
 * and picks their first ids; a prompt that is done at once leaves its slot
 * to the next. */
static int fill_slots(gen *g) {
  for (int64_t s = 0; s < g->slots; s++) {
    while (g->seq_of[s] < 0 && g->next < g->nseq) {
      int64_t seq = g->next++, start = g->offsets[seq] + g->shared;
      copy_prefix(g, s);
      if (decode_slots(g->m, g->cache, &s, 1, g->prompts + start, g->offsets[seq + 1] - start, g->logits))
        return -1;
      g->seq_of[s] = seq;
      mf_rng_init(&g->rng[s], g->o->seed, mf_hash64("generate", 8) + (uint64_t)seq);
      advance(g, s, g->logits);
    }
  }
  return 0;
}

/* One token for every active sequence; returns how many advanced, or -1. */
static int64_t step(gen *g) {
  int64_t B = 0, V = g->m->cfg.vocab_size;
  for (int64_t s = 0; s < g->slots; s++)
    if (g->seq_of[s] >= 0) {
      g->active[B] = s;
      g->input[B++] = g->last[s];
    }
  if (B == 0) return 0;
  if (decode_slots(g->m, g->cache, g->active, B, g->input, 1, g->logits)) return -1;
  for (int64_t b = 0; b < B; b++) advance(g, g->active[b], g->logits + b * V);
  return B;
}

static void gen_free(gen *g) {
  mf_kv_cache_free(g->cache);
  free(g->seq_of);
  free(g->active);
  free(g->last);
  free(g->input);
  free(g->rng);
  free(g->logits);
  free(g->work);
  free(g->marked);
}

/* The prompts' common prefix, short of the last token of each (whose logits
 * its sequence needs from its own prefill). Evaluation prompts often share
 * a long system message; it is then computed once. */
static int64_t common_prefix(const gen *g) {
  const int32_t *first = g->prompts + g->offsets[0];
  int64_t n = g->nseq > 1 ? g->offsets[1] - g->offsets[0] - 1 : 0;
  for (int64_t s = 1; s < g->nseq; s++) {
    const int32_t *p = g->prompts + g->offsets[s];
    int64_t len = g->offsets[s + 1] - g->offsets[s] - 1, i = 0;
    while (i < n && i < len && p[i] == first[i]) i++;
    n = i;
  }
  return n;
}

/* Checks the prompts, sizes the cache and runs the shared prefix. */
static int gen_init(gen *g) {
  const mf_generate_opts *o = g->o;
  int64_t V = g->m->cfg.vocab_size, longest = 0;
  for (int64_t s = 0; s < g->nseq; s++) {
    int64_t n = g->offsets[s + 1] - g->offsets[s];
    if (n <= 0) return mf_fail("generate: prompt %lld is empty", (long long)s);
    if (n > longest) longest = n;
  }
  g->slots = o->max_batch > 0 ? o->max_batch : DEFAULT_MAX_BATCH;
  if (g->slots > g->nseq) g->slots = g->nseq;
  g->shared = common_prefix(g);
  g->cache = mf_kv_cache_new(g->m, g->slots + (g->shared > 0),
                             o->max_len > 0 ? o->max_len : longest + o->max_tokens);
  if (!g->cache) return -1;
  size_t S = (size_t)g->slots;
  g->seq_of = malloc(S * sizeof *g->seq_of);
  g->active = malloc(S * sizeof *g->active);
  g->last = malloc(S * sizeof *g->last);
  g->input = malloc(S * sizeof *g->input);
  g->rng = malloc(S * sizeof *g->rng);
  g->logits = malloc(S * (size_t)V * sizeof *g->logits);
  g->work = malloc((size_t)V * sizeof *g->work);
  g->marked = calloc((size_t)V, sizeof *g->marked);
  if (!g->seq_of || !g->active || !g->last || !g->input || !g->rng || !g->logits || !g->work || !g->marked)
    return mf_fail("generate: out of memory for %lld sequences", (long long)g->slots);
  for (size_t s = 0; s < S; s++) g->seq_of[s] = -1;
  int64_t prefix_slot = g->slots;
  return g->shared ? decode_slots(g->m, g->cache, &prefix_slot, 1, g->prompts, g->shared, g->logits) : 0;
}

int mf_model_generate_batch(mf_model *m, const int32_t *prompts, const int64_t *offsets, int64_t nseq,
                            const mf_generate_opts *opts, int32_t *out, int32_t *counts) {
  if (nseq <= 0) return mf_fail("generate: no prompts");
  memset(counts, 0, (size_t)nseq * sizeof *counts);
  if (opts->max_tokens <= 0) return 0;
  gen g = {.m = m, .o = opts, .prompts = prompts, .offsets = offsets, .nseq = nseq, .out = out,
           .counts = counts};
  /* Once the prompts are all started, a step with no sequence left ends it. */
  int64_t advanced = gen_init(&g) ? -1 : 1;
  while (advanced > 0) advanced = fill_slots(&g) ? -1 : step(&g);
  gen_free(&g);
  return advanced < 0 ? -1 : 0;
}

int mf_model_generate(mf_model *m, const int32_t *prompt, int64_t n, const mf_generate_opts *opts,
                      int32_t *out) {
  int64_t offsets[2] = {0, n};
  int32_t count;
  return mf_model_generate_batch(m, prompt, offsets, 1, opts, out, &count) ? -1 : count;
}

/* ---- one step at a time, for callers that schedule sequences themselves ----
 * The server (engine/server_sched.c) admits requests while others decode,
 * so it drives the cache's slots directly with these two. */

int mf_model_decode_slots(mf_model *m, mf_kv_cache *c, const int64_t *slots, int64_t nslots, const int32_t *tokens,
                          int64_t n, float *logits) {
  for (int64_t b = 0; b < nslots; b++)
    if (slots[b] < 0 || slots[b] >= c->batch)
      return mf_fail("decode: slot %lld is outside the cache's %lld", (long long)slots[b], (long long)c->batch);
  return decode_slots(m, c, slots, nslots, tokens, n, logits);
}

int32_t mf_choose_id(const float *logits, int64_t V, const mf_generate_opts *o, mf_rng *rng) {
  if (o->temperature <= 0) return argmax(logits, V);
  scored *work = malloc((size_t)V * sizeof *work);
  if (!work) return mf_fail("generate: out of memory for %lld logits", (long long)V);
  int32_t id = sample(logits, V, o, rng, work);
  free(work);
  return id;
}
