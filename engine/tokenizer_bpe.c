/*
 * BPE over one pre-tokenized word, and the hash maps it runs on.
 *
 * Merging follows HF tokenizers exactly: every adjacent pair that has a
 * merge goes into a min-heap ordered by (rank, position); the top is
 * applied if it still describes the pair at its position, and the pairs it
 * forms with its neighbours go in. Symbols form a linked list over an array,
 * so a word of n symbols costs O(n log n).
 *
 * Results for words up to CACHE_WORD_MAX bytes are cached per tokenizer
 * (guarded by a mutex so that one tokenizer serves several threads); the
 * cache is emptied when it fills.
 */
#include "tokenizer.h"
#include "internal.h"
#include "cpu/kernels.h"

#include <stdlib.h>
#include <string.h>

enum { CACHE_WORD_MAX = 64, CACHE_MAX_WORDS = 1 << 16 };

/* ---- maps ---- */

uint64_t tok_hash(const char *key, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 0x100000001b3ULL;
  return mfk_mix64(h ^ len);
}

/* Slot index holding key, or the empty slot where it would go. */
static size_t strmap_find(const tok_strmap *m, const char *key, size_t len, uint64_t h) {
  size_t i = h & m->mask;
  for (;;) {
    const tok_strslot *s = &m->slots[i];
    if (s->value < 0) return i;
    if (s->hash == h && s->len == len && memcmp(m->keys.data + s->off, key, len) == 0) return i;
    i = (i + 1) & m->mask;
  }
}

static int strmap_grow(tok_strmap *m) {
  size_t cap = m->slots ? 2 * (m->mask + 1) : 64;
  tok_strslot *slots = malloc(cap * sizeof *slots);
  if (!slots) return mf_fail("tokenizer: out of memory");
  for (size_t i = 0; i < cap; i++) slots[i].value = -1;
  tok_strslot *old = m->slots;
  size_t old_cap = old ? m->mask + 1 : 0;
  m->slots = slots;
  m->mask = cap - 1;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].value < 0) continue;
    size_t j = old[i].hash & m->mask;
    while (slots[j].value >= 0) j = (j + 1) & m->mask;
    slots[j] = old[i];
  }
  free(old);
  return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t value) {
  if ((m->count + 1) * 2 > (m->slots ? m->mask + 1 : 0) && strmap_grow(m)) return -1;
  uint64_t h = tok_hash(key, len);
  size_t i = strmap_find(m, key, len, h);
  if (m->slots[i].value < 0) {
    size_t off = m->keys.len;
    if (tok_buf_put(&m->keys, key, len)) return -1;
    m->slots[i] = (tok_strslot){h, (uint32_t)off, (uint32_t)len, 0};
    m->count++;
  }
  m->slots[i].value = value;
  return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
  if (!m->slots) return -1;
  return m->slots[strmap_find(m, key, len, tok_hash(key, len))].value;
}

void tok_strmap_clear(tok_strmap *m) {
  for (size_t i = 0; m->slots && i <= m->mask; i++) m->slots[i].value = -1;
  m->count = 0;
  m->keys.len = 0;
}

void tok_strmap_free(tok_strmap *m) {
  free(m->slots);
  tok_buf_free(&m->keys);
  memset(m, 0, sizeof *m);
}

static const uint64_t NO_PAIR = UINT64_MAX;

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static int pairmap_grow(tok_pairmap *m) {
  size_t cap = m->slots ? 2 * (m->mask + 1) : 1024;
  tok_pairslot *slots = malloc(cap * sizeof *slots);
  if (!slots) return mf_fail("tokenizer: out of memory");
  for (size_t i = 0; i < cap; i++) slots[i].key = NO_PAIR;
  tok_pairslot *old = m->slots;
  size_t old_cap = old ? m->mask + 1 : 0;
  m->slots = slots;
  m->mask = cap - 1;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].key == NO_PAIR) continue;
    size_t j = mfk_mix64(old[i].key) & m->mask;
    while (slots[j].key != NO_PAIR) j = (j + 1) & m->mask;
    slots[j] = old[i];
  }
  free(old);
  return 0;
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, tok_merge merge) {
  if ((m->count + 1) * 2 > (m->slots ? m->mask + 1 : 0) && pairmap_grow(m)) return -1;
  uint64_t key = pair_key(a, b);
  size_t i = mfk_mix64(key) & m->mask;
  while (m->slots[i].key != NO_PAIR && m->slots[i].key != key) i = (i + 1) & m->mask;
  if (m->slots[i].key == NO_PAIR) m->count++;
  m->slots[i] = (tok_pairslot){key, merge};
  return 0;
}

const tok_merge *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b) {
  if (!m->slots) return NULL;
  uint64_t key = pair_key(a, b);
  for (size_t i = mfk_mix64(key) & m->mask;; i = (i + 1) & m->mask) {
    if (m->slots[i].key == key) return &m->slots[i].merge;
    if (m->slots[i].key == NO_PAIR) return NULL;
  }
}

void tok_pairmap_free(tok_pairmap *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

/* ---- the word's symbols ---- */

static int push_sym(tok_work *w, size_t *n, int32_t id, int32_t len) {
  if (*n == w->syms_cap) {
    size_t cap = w->syms_cap ? 2 * w->syms_cap : 256;
    tok_sym *s = realloc(w->syms, cap * sizeof *s);
    if (!s) return mf_fail("tokenizer: out of memory");
    w->syms = s;
    w->syms_cap = cap;
  }
  w->syms[*n] = (tok_sym){id, (int32_t)*n - 1, -1, len};
  if (*n > 0) w->syms[*n - 1].next = (int32_t)*n;
  (*n)++;
  return 0;
}

/* A character with no token: its bytes' <0xXX> tokens, else the unknown
 * token (one for a run of them with fuse_unk), else nothing (HF drops it). */
static int push_unknown(const mf_tokenizer *t, tok_work *w, size_t *n, const char *c, size_t clen) {
  int all_bytes = t->byte_fallback;
  for (size_t i = 0; i < clen && all_bytes; i++) all_bytes = t->byte_id[(uint8_t)c[i]] >= 0;
  if (all_bytes) {
    for (size_t i = 0; i < clen; i++)
      if (push_sym(w, n, t->byte_id[(uint8_t)c[i]], 1)) return -1;
    return 0;
  }
  if (t->unk_id < 0) return 0;
  if (t->fuse_unk && *n > 0 && w->syms[*n - 1].id == t->unk_id) {
    w->syms[*n - 1].len += (int32_t)clen;
    return 0;
  }
  return push_sym(w, n, t->unk_id, (int32_t)clen);
}

/* The initial symbols: bytes (byte-level) or characters (SentencePiece). */
static int word_symbols(const mf_tokenizer *t, const char *s, size_t len, tok_work *w, size_t *n) {
  *n = 0;
  for (size_t i = 0; i < len;) {
    size_t clen = t->byte_level ? 1 : tok_utf8_len(s + i, len - i);
    int32_t id = t->byte_level ? t->byte_id[(uint8_t)s[i]] : tok_strmap_get(&t->by_piece, s + i, clen);
    if (id >= 0 ? push_sym(w, n, id, (int32_t)clen) : push_unknown(t, w, n, s + i, clen)) return -1;
    i += clen;
  }
  return 0;
}

/* ---- the heap of candidate merges, smallest (rank, pos) on top ---- */

static int cand_less(tok_cand a, tok_cand b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static int heap_push(tok_work *w, tok_cand c) {
  if (w->nheap == w->heap_cap) {
    size_t cap = w->heap_cap ? 2 * w->heap_cap : 256;
    tok_cand *h = realloc(w->heap, cap * sizeof *h);
    if (!h) return mf_fail("tokenizer: out of memory");
    w->heap = h;
    w->heap_cap = cap;
  }
  size_t i = w->nheap++;
  while (i > 0 && cand_less(c, w->heap[(i - 1) / 2])) {
    w->heap[i] = w->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  w->heap[i] = c;
  return 0;
}

static tok_cand heap_pop(tok_work *w) {
  tok_cand top = w->heap[0], last = w->heap[--w->nheap];
  size_t i = 0, n = w->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && cand_less(w->heap[c + 1], w->heap[c])) c++;
    if (!cand_less(w->heap[c], last)) break;
    w->heap[i] = w->heap[c];
    i = c;
  }
  if (n) w->heap[i] = last;
  return top;
}

/* Queues the merge of the symbol at pos with its successor, if any. */
static int offer(const mf_tokenizer *t, tok_work *w, int32_t pos) {
  if (pos < 0 || w->syms[pos].next < 0) return 0;
  const tok_merge *m = tok_pairmap_get(&t->merges, w->syms[pos].id, w->syms[w->syms[pos].next].id);
  return m ? heap_push(w, (tok_cand){m->rank, pos, m->id}) : 0;
}

static int merge_all(const mf_tokenizer *t, tok_work *w, size_t n) {
  w->nheap = 0;
  for (size_t i = 0; i + 1 < n; i++)
    if (offer(t, w, (int32_t)i)) return -1;
  while (w->nheap) {
    tok_cand c = heap_pop(w);
    tok_sym *s = &w->syms[c.pos];
    if (s->len == 0 || s->next < 0) continue;
    tok_sym *right = &w->syms[s->next];
    const tok_merge *m = tok_pairmap_get(&t->merges, s->id, right->id);
    if (!m || m->id != c.id) continue; /* the pair changed since it was queued */
    s->id = c.id;
    s->len += right->len;
    right->len = 0;
    s->next = right->next;
    if (s->next >= 0) w->syms[s->next].prev = c.pos;
    if (offer(t, w, s->prev) || offer(t, w, c.pos)) return -1;
  }
  return 0;
}

/* ---- one word ---- */

static int bpe_uncached(const mf_tokenizer *t, const char *s, size_t len, tok_work *w, tok_emit *e) {
  if (t->ignore_merges) {
    int32_t id = tok_strmap_get(&t->by_piece, s, len);
    if (id >= 0) {
      tok_emit_id(e, id);
      return 0;
    }
  }
  size_t n;
  if (word_symbols(t, s, len, w, &n) || merge_all(t, w, n)) return -1;
  for (size_t i = 0; i < n; i++)
    if (w->syms[i].len) tok_emit_id(e, w->syms[i].id);
  return 0;
}

static void emit_cached(const mf_tokenizer *t, int32_t off, tok_emit *e) {
  const int32_t *ids = (const int32_t *)(t->cache_ids.data + off);
  for (int32_t i = 1; i <= ids[0]; i++) tok_emit_id(e, ids[i]);
}

/* Stores the ids the word gave (found in the emitter after start). */
static int cache_store(mf_tokenizer *t, const char *s, size_t len, const tok_emit *e, int64_t start) {
  int32_t count = (int32_t)(e->n - start), scratch[CACHE_WORD_MAX + 1];
  if (count > CACHE_WORD_MAX || e->n > e->cap) return 0; /* not all ids were kept */
  scratch[0] = count;
  memcpy(scratch + 1, e->out + start, (size_t)count * sizeof *scratch);
  if (t->cache.count >= CACHE_MAX_WORDS) {
    tok_strmap_clear(&t->cache);
    t->cache_ids.len = 0;
  }
  /* ids are stored 4-byte aligned: cache_ids only ever grows by whole int32s */
  int32_t off = (int32_t)t->cache_ids.len;
  if (tok_buf_put(&t->cache_ids, scratch, (size_t)(count + 1) * sizeof *scratch)) return -1;
  return tok_strmap_put(&t->cache, s, len, off);
}

int tok_bpe_word(mf_tokenizer *t, const char *s, size_t len, tok_work *w, tok_emit *e) {
  if (len > CACHE_WORD_MAX) return bpe_uncached(t, s, len, w, e);
  pthread_mutex_lock(&t->cache_lock);
  int32_t off = tok_strmap_get(&t->cache, s, len);
  if (off >= 0) emit_cached(t, off, e);
  pthread_mutex_unlock(&t->cache_lock);
  if (off >= 0) return 0;
  int64_t start = e->n;
  if (bpe_uncached(t, s, len, w, e)) return -1;
  pthread_mutex_lock(&t->cache_lock);
  int rc = cache_store(t, s, len, e, start);
  pthread_mutex_unlock(&t->cache_lock);
  return rc;
}

void tok_work_free(tok_work *w) {
  free(w->syms);
  free(w->heap);
  tok_buf_free(&w->norm);
  free(w->words.v);
  free(w->tmp.v);
  if (w->md) pcre2_match_data_free(w->md);
  memset(w, 0, sizeof *w);
}
