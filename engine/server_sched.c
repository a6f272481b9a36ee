/*
 * The server's scheduler: continuous batching over the KV cache's slots.
 *
 * One thread owns the model and the cache. Each turn it takes waiting
 * requests into free slots and prefills each in one forward pass over its
 * prompt, then advances every active sequence by one token in one batched
 * forward pass (the matmuls see one row per sequence), so throughput grows
 * with the number of requests in flight. A finished or cancelled sequence
 * frees its slot at once for the next request. Embedding requests need no
 * slot and run when they reach the head of the queue.
 *
 * Replies follow moonforge.generate's rules: a reply ends at eos, at the
 * chat template's end-of-turn id (neither is part of the text), before the
 * first stop string, or after max_tokens. Text is published to the waiting
 * connection only once no stop string can take it back and it ends on a
 * whole UTF-8 character, so streamed pieces concatenate to the reply.
 * Sampling draws from the stream (seed, 0), as a single model:generate
 * does, so a request's reply does not depend on its neighbours.
 */
#define _GNU_SOURCE /* memmem */
#include "server.h"
#include "internal.h"
#include "model.h"

#include <stdlib.h>
#include <string.h>

typedef struct slot {
  srv_request *r;   /* NULL when free */
  int32_t *out;     /* the ids generated so far */
  int count;
  int32_t last;
  mf_rng rng;
  char *text;       /* their decoded text */
  size_t text_len, text_cap;
} slot;

typedef struct sched {
  mf_server *s;
  mf_kv_cache *cache;
  int nslots;
  slot *slots;
  int64_t *active;  /* [nslots] the slots a step feeds */
  int32_t *input;   /* [nslots] */
  float *logits;    /* [nslots, vocab] */
  int32_t eos[2];
} sched;

static void sched_free(sched *q) {
  for (int i = 0; q->slots && i < q->nslots; i++) {
    free(q->slots[i].out);
    free(q->slots[i].text);
  }
  free(q->slots);
  free(q->active);
  free(q->input);
  free(q->logits);
  mf_kv_cache_free(q->cache);
  free(q);
}

void *srv_sched_new(mf_server *s) {
  const mf_model_config *cfg = mf_model_get_config(s->model);
  sched *q = calloc(1, sizeof *q);
  if (!q) return mf_fail_null("server: out of memory");
  q->s = s;
  q->nslots = s->opts.parallel;
  q->cache = mf_kv_cache_new(s->model, q->nslots, s->opts.context);
  if (!q->cache) {
    sched_free(q);
    return NULL;
  }
  q->slots = calloc((size_t)q->nslots, sizeof *q->slots);
  q->active = malloc((size_t)q->nslots * sizeof *q->active);
  q->input = malloc((size_t)q->nslots * sizeof *q->input);
  q->logits = malloc((size_t)q->nslots * (size_t)cfg->vocab_size * sizeof *q->logits);
  if (!q->slots || !q->active || !q->input || !q->logits) {
    sched_free(q);
    return mf_fail_null("server: out of memory for %d sequences", s->opts.parallel);
  }
  q->eos[0] = cfg->eos_token_id;
  q->eos[1] = mf_tokenizer_eos_id(s->tok);
  return q;
}

/* ---- publishing (under the server's lock) ---- */

/* Appends text to the reply as one piece (one event of a stream). */
static void publish(srv_request *r, const char *text, size_t n) {
  if (r->text_len + n + 1 > r->text_cap) {
    size_t cap = 2 * (r->text_len + n) + 64;
    char *grown = realloc(r->text, cap);
    if (!grown) return;  /* the reply stays short; the request still ends */
    r->text = grown;
    r->text_cap = cap;
  }
  memcpy(r->text + r->text_len, text, n);
  r->text_len += n;
  r->text[r->text_len] = 0;
  if (r->npieces == r->pieces_cap) {
    int cap = 2 * r->pieces_cap + 16;
    size_t *grown = realloc(r->piece_ends, (size_t)cap * sizeof *grown);
    if (!grown) return;  /* this piece joins the next event */
    r->piece_ends = grown;
    r->pieces_cap = cap;
  }
  r->piece_ends[r->npieces++] = r->text_len;
}

/* Hands the slot's text up to `upto` to the connection; reason, when set,
 * ends the request and frees the slot. */
static void deliver(sched *q, slot *sl, size_t upto, const char *reason) {
  mf_server *s = q->s;
  srv_request *r = sl->r;
  pthread_mutex_lock(&s->lock);
  if (upto > r->text_len) publish(r, sl->text + r->text_len, upto - r->text_len);
  r->completion_tokens = sl->count;
  if (reason) {
    r->finish_reason = reason;
    s->active--;
    s->metrics.prompt_tokens += (uint64_t)r->nids;
    s->metrics.completion_tokens += (uint64_t)sl->count;
  }
  pthread_cond_broadcast(&r->changed);
  pthread_mutex_unlock(&s->lock);
  if (reason) {
    srv_request_release(s, r);
    sl->r = NULL;
  }
}

static void fail(sched *q, slot *sl, const char *why) {
  pthread_mutex_lock(&q->s->lock);
  if (!sl->r->error) sl->r->error = strdup(why);
  pthread_mutex_unlock(&q->s->lock);
  deliver(q, sl, 0, "error");
}

/* ---- text ---- */

/* The length of the longest prefix of s[0, n) that does not end inside a
 * UTF-8 character (bytes that cannot start one pass as they are). */
static size_t whole_chars(const char *s, size_t n) {
  for (size_t back = 0; back < 4 && back < n; back++) {
    unsigned char b = (unsigned char)s[n - 1 - back];
    if (b < 0x80) return n;
    if (b >= 0xC0) {
      size_t size = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
      return size <= back + 1 ? n : n - back - 1;
    }
  }
  return n;
}

/* The length of the longest tail of text that begins some stop string. */
static size_t stop_prefix(const srv_request *r, const char *text, size_t n) {
  size_t hold = 0;
  for (int i = 0; i < r->nstop; i++) {
    size_t len = strlen(r->stop[i]);
    for (size_t k = len - 1 < n ? len - 1 : n; k > hold; k--)
      if (memcmp(text + n - k, r->stop[i], k) == 0) {
        hold = k;
        break;
      }
  }
  return hold;
}

/* Where the first stop string starts in text[0, n), looking only at
 * matches that end after `from`; n when none does. */
static size_t find_stop(const srv_request *r, const char *text, size_t n, size_t from) {
  size_t first = n;
  for (int i = 0; i < r->nstop; i++) {
    size_t len = strlen(r->stop[i]);
    size_t start = from >= len ? from - len + 1 : 0;
    if (start > n) start = n;
    const char *at = len <= n ? memmem(text + start, n - start, r->stop[i], len) : NULL;
    if (at && (size_t)(at - text) < first) first = (size_t)(at - text);
  }
  return first;
}

static int decode_text(sched *q, slot *sl) {
  for (;;) {
    int64_t len = mf_tokenizer_decode(q->s->tok, sl->out, sl->count, 1, sl->text, sl->text_cap);
    if (len < 0) return -1;
    if ((size_t)len <= sl->text_cap) {
      sl->text_len = (size_t)len;
      return 0;
    }
    char *grown = realloc(sl->text, (size_t)len * 2);
    if (!grown) return mf_fail("server: out of memory for a reply of %lld bytes", (long long)len);
    sl->text = grown;
    sl->text_cap = (size_t)len * 2;
  }
}

/* ---- one token ---- */

static int is_end(const sched *q, const srv_request *r, int32_t id) {
  return id == q->eos[0] || id == q->eos[1] || id == r->end_id;
}

/* Picks the slot's next id from its logits and publishes what it adds. */
static void advance(sched *q, slot *sl, const float *logits) {
  srv_request *r = sl->r;
  mf_generate_opts o = {.temperature = r->temperature, .top_p = r->top_p};
  int32_t id = mf_choose_id(logits, mf_model_get_config(q->s->model)->vocab_size, &o, &sl->rng);
  if (id < 0) return fail(q, sl, mf_errmsg());
  if (is_end(q, r, id)) {
    sl->count++;  /* counted as generated, as model:generate does, but not text */
    return deliver(q, sl, sl->text_len, "stop");
  }
  sl->out[sl->count++] = id;
  sl->last = id;
  size_t before = sl->text_len;
  if (decode_text(q, sl)) return fail(q, sl, mf_errmsg());
  size_t n = sl->text_len, at = find_stop(r, sl->text, n, before);
  if (at < n) return deliver(q, sl, at, "stop");
  if (sl->count == r->max_tokens) return deliver(q, sl, n, "length");
  deliver(q, sl, whole_chars(sl->text, n - stop_prefix(r, sl->text, n)), NULL);
}

/* ---- admitting requests ---- */

static void start(sched *q, int64_t s_index, srv_request *r) {
  slot *sl = &q->slots[s_index];
  sl->r = r;
  sl->count = 0;
  sl->text_len = 0;
  mf_rng_init(&sl->rng, r->seed, mf_hash64("generate", 8));
  int32_t *out = realloc(sl->out, (size_t)r->max_tokens * sizeof *out);
  if (!out) return fail(q, sl, "server: out of memory for the reply's ids");
  sl->out = out;
  q->cache->len[s_index] = 0;
  if (mf_model_decode_slots(q->s->model, q->cache, &s_index, 1, r->ids, r->nids, q->logits))
    return fail(q, sl, mf_errmsg());
  advance(q, sl, q->logits);
}

static void embed(sched *q, srv_request *r) {
  mf_server *s = q->s;
  int64_t D = mf_model_get_config(s->model)->hidden_size;
  float *e = malloc((size_t)(r->ninputs * D) * sizeof *e);
  const char *error = e ? NULL : "server: out of memory for the embeddings";
  for (int i = 0; !error && i < r->ninputs; i++)
    if (mf_model_embed(s->model, r->ids + r->offsets[i], r->offsets[i + 1] - r->offsets[i], e + i * D))
      error = mf_errmsg();
  pthread_mutex_lock(&s->lock);
  r->embeddings = e;
  if (error) r->error = strdup(error);
  r->finish_reason = error ? "error" : "stop";
  s->metrics.prompt_tokens += (uint64_t)r->nids;
  pthread_cond_broadcast(&r->changed);
  pthread_mutex_unlock(&s->lock);
  srv_request_release(s, r);
}

static int64_t free_slot(const sched *q) {
  for (int i = 0; i < q->nslots; i++)
    if (!q->slots[i].r) return i;
  return -1;
}

/* Under the lock: the next request the scheduler can take, or NULL. */
static srv_request *next_request(sched *q) {
  mf_server *s = q->s;
  srv_request *r = s->head;
  if (!r || (r->endpoint != EP_EMBEDDINGS && free_slot(q) < 0)) return NULL;
  s->head = r->next;
  if (!s->head) s->tail = NULL;
  s->queued--;
  if (r->endpoint != EP_EMBEDDINGS) s->active++;
  return r;
}

static void admit(sched *q) {
  mf_server *s = q->s;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    srv_request *r = next_request(q);
    int cancelled = r && (r->cancelled || s->cancel_all);
    if (cancelled) {
      r->finish_reason = "cancelled";
      if (r->endpoint != EP_EMBEDDINGS) s->active--;
      pthread_cond_broadcast(&r->changed);
    }
    pthread_mutex_unlock(&s->lock);
    if (!r) return;
    if (cancelled) srv_request_release(s, r);
    else if (r->endpoint == EP_EMBEDDINGS) embed(q, r);
    else start(q, free_slot(q), r);
  }
}

/* Frees the slots of requests whose clients left (or all, when stopping). */
static void drop_cancelled(sched *q) {
  mf_server *s = q->s;
  for (int i = 0; i < q->nslots; i++) {
    slot *sl = &q->slots[i];
    pthread_mutex_lock(&s->lock);
    int cancelled = sl->r && (sl->r->cancelled || s->cancel_all);
    pthread_mutex_unlock(&s->lock);
    if (cancelled) deliver(q, sl, 0, "cancelled");
  }
}

/* One token for every active sequence, in one forward pass. */
static void step(sched *q) {
  int64_t B = 0, V = mf_model_get_config(q->s->model)->vocab_size;
  for (int i = 0; i < q->nslots; i++)
    if (q->slots[i].r) {
      q->active[B] = i;
      q->input[B++] = q->slots[i].last;
    }
  if (B == 0) return;
  if (mf_model_decode_slots(q->s->model, q->cache, q->active, B, q->input, 1, q->logits)) {
    const char *why = mf_errmsg();
    for (int64_t b = 0; b < B; b++) fail(q, &q->slots[q->active[b]], why);
    return;
  }
  for (int64_t b = 0; b < B; b++) advance(q, &q->slots[q->active[b]], q->logits + b * V);
}

/* Waits for work; 0 when the server is stopping and nothing is left. */
static int wait_for_work(sched *q) {
  mf_server *s = q->s;
  pthread_mutex_lock(&s->lock);
  while (!s->active && !s->head && !s->stopping) pthread_cond_wait(&s->wake, &s->lock);
  int more = s->active || s->head;
  pthread_mutex_unlock(&s->lock);
  return more;
}

void *srv_schedule(void *server) {
  sched *q = server;
  while (wait_for_work(q)) {
    drop_cancelled(q);
    admit(q);
    step(q);
  }
  sched_free(q);
  return NULL;
}

