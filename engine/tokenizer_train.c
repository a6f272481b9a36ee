/*
 * Training a byte-level BPE vocabulary with GPT-2's pre-tokenizer, the way
 * HF tokenizers' BpeTrainer does, and writing it as a tokenizer.json.
 *
 * The rules, taken from BpeTrainer so that both give the same vocabulary:
 * - ids: the special tokens first, then the 256 byte characters in code
 *   point order of their GPT-2 spelling, then one per merge;
 * - every adjacent pair in every word is counted (times the word's count);
 *   a max-heap holds (count, pair, words it occurs in), highest count first
 *   and, among equal counts, the smallest (left id, right id);
 * - an entry whose count is stale is re-queued with the current count; the
 *   merged pair's own count is not decreased (BpeTrainer leaves it), and
 *   each merge queues the pairs it formed, with the words it formed them in;
 * - training stops at vocab_size, or when the best count is below
 *   min_frequency (or 1).
 * One difference remains: where two heap entries tie on count and pair
 * (possible only when a token string is formed twice by different merges),
 * BpeTrainer's order depends on Rust's heap internals and hash order; here
 * the older entry goes first.
 */
#define _GNU_SOURCE
#include "tokenizer.h"
#include "formats.h"
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- (left, right) -> count ---- */

typedef struct count_slot { uint64_t key; int64_t count; } count_slot;
typedef struct countmap { count_slot *slots; size_t mask, n; } countmap;
static const uint64_t EMPTY = UINT64_MAX;

static uint64_t pkey(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }
static size_t slot_of(const countmap *m, uint64_t key) {
  size_t i = (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 20) & m->mask;
  while (m->slots[i].key != EMPTY && m->slots[i].key != key) i = (i + 1) & m->mask;
  return i;
}

static int count_add(countmap *m, uint64_t key, int64_t delta) {
  if ((m->n + 1) * 2 > (m->slots ? m->mask + 1 : 0)) {
    size_t cap = m->slots ? 2 * (m->mask + 1) : 4096;
    countmap grown = {malloc(cap * sizeof(count_slot)), cap - 1, m->n};
    if (!grown.slots) return mf_fail("tokenizer train: out of memory");
    for (size_t i = 0; i < cap; i++) grown.slots[i].key = EMPTY;
    for (size_t i = 0; m->slots && i <= m->mask; i++)
      if (m->slots[i].key != EMPTY) grown.slots[slot_of(&grown, m->slots[i].key)] = m->slots[i];
    free(m->slots);
    *m = grown;
  }
  size_t i = slot_of(m, key);
  if (m->slots[i].key == EMPTY) {
    m->slots[i] = (count_slot){key, 0};
    m->n++;
  }
  m->slots[i].count += delta;
  return 0;
}

static int64_t count_get(const countmap *m, uint64_t key) {
  if (!m->slots) return 0;
  size_t i = slot_of(m, key);
  return m->slots[i].key == key ? m->slots[i].count : 0;
}

/* ---- the trainer's state ---- */

typedef struct entry { int64_t count, seq; int32_t a, b; int32_t *words; size_t nwords; } entry;
typedef struct change { int32_t a, b, word, delta; } change;

typedef struct trainer {
  const mf_bpe_train_opts *opts;
  tok_split split;
  pcre2_match_data *md;
  tok_spans spans, tmp;
  tok_strmap word_index;     /* word bytes -> word */
  int64_t *counts;
  int32_t **syms, *nsyms;
  size_t nwords, words_cap;
  tok_strmap vocab;          /* token text -> id */
  tok_buf texts;
  uint32_t *off, *len;
  size_t off_cap, len_cap;
  int32_t nvocab, nspecial;
  int32_t byte_id[256];
  countmap pairs;
  entry *heap;
  size_t nheap, heap_cap;
  int64_t seq;
  change *changes;
  size_t nchanges, changes_cap;
  int32_t (*merges)[3];
  size_t nmerges;
} trainer;

static void *grow(void *p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return p;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(p, c * size);
  if (q) *cap = c;
  return q;
}

#define GROW(T, field, capfield, need)                                                       \
  do {                                                                                       \
    void *g_ = grow((T)->field, &(T)->capfield, (need), sizeof *(T)->field);                 \
    if (!g_) return mf_fail("tokenizer train: out of memory");                               \
    (T)->field = g_;                                                                         \
  } while (0)

/* ---- counting words ---- */

static int count_word(trainer *T, const char *w, size_t n) {
  int32_t i = tok_strmap_get(&T->word_index, w, n);
  if (i < 0) {
    GROW(T, counts, words_cap, T->nwords + 1);
    i = (int32_t)T->nwords++;
    T->counts[i] = 0;
    if (tok_strmap_put(&T->word_index, w, n, i)) return -1;
  }
  T->counts[i]++;
  return 0;
}

static int feed(trainer *T, const char *s, size_t n) {
  if (tok_pretokenize(&T->split, 1, s, n, T->md, &T->spans, &T->tmp)) return -1;
  for (size_t i = 0; i < T->spans.n; i++)
    if (count_word(T, s + T->spans.v[i].start, T->spans.v[i].len)) return -1;
  return 0;
}

/* Each line of the file, its newline kept, is one sequence. */
static int feed_file(trainer *T, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return mf_fail("%s: %s", path, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  int rc = 0;
  while (rc == 0 && (n = getline(&line, &cap, f)) > 0) rc = feed(T, line, (size_t)n);
  if (rc == 0 && ferror(f)) rc = mf_fail("%s: read error", path);
  free(line);
  fclose(f);
  return rc;
}

/* ---- vocabulary ---- */

static int add_token(trainer *T, const char *s, size_t n, int32_t *id) {
  *id = tok_strmap_get(&T->vocab, s, n);
  if (*id >= 0) return 0;
  GROW(T, off, off_cap, (size_t)T->nvocab + 1);
  GROW(T, len, len_cap, (size_t)T->nvocab + 1);
  *id = T->nvocab++;
  T->off[*id] = (uint32_t)T->texts.len;
  T->len[*id] = (uint32_t)n;
  return tok_buf_put(&T->texts, s, n) || tok_strmap_put(&T->vocab, s, n, *id) ? -1 : 0;
}

static int byte_order(const void *a, const void *b) {
  uint32_t x = tok_byte_char(*(const uint8_t *)a), y = tok_byte_char(*(const uint8_t *)b);
  return x < y ? -1 : x > y;
}

static int initial_vocab(trainer *T) {
  const mf_bpe_train_opts *o = T->opts;
  for (int i = 0; i < o->nspecial; i++) {
    int32_t id;
    if (add_token(T, o->special_tokens[i], strlen(o->special_tokens[i]), &id)) return -1;
  }
  T->nspecial = T->nvocab;
  uint8_t bytes[256];
  for (int b = 0; b < 256; b++) bytes[b] = (uint8_t)b;
  qsort(bytes, 256, 1, byte_order);
  tok_buf spelled = {0};
  for (int k = 0; k < 256; k++) {
    spelled.len = 0;
    char c = (char)bytes[k];
    if (tok_spell(&c, 1, &spelled) || add_token(T, spelled.data, spelled.len, &T->byte_id[bytes[k]])) {
      tok_buf_free(&spelled);
      return -1;
    }
  }
  tok_buf_free(&spelled);
  return 0;
}

/* ---- the heap ---- */

static int entry_before(const entry *x, const entry *y) {
  if (x->count != y->count) return x->count > y->count;
  if (x->a != y->a) return x->a < y->a;
  if (x->b != y->b) return x->b < y->b;
  return x->seq < y->seq;
}

static int heap_push(trainer *T, entry e) {
  GROW(T, heap, heap_cap, T->nheap + 1);
  size_t i = T->nheap++;
  while (i > 0 && entry_before(&e, &T->heap[(i - 1) / 2])) {
    T->heap[i] = T->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  T->heap[i] = e;
  return 0;
}

static entry heap_pop(trainer *T) {
  entry top = T->heap[0], last = T->heap[--T->nheap];
  size_t i = 0, n = T->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && entry_before(&T->heap[c + 1], &T->heap[c])) c++;
    if (!entry_before(&T->heap[c], &last)) break;
    T->heap[i] = T->heap[c];
    i = c;
  }
  if (n) T->heap[i] = last;
  return top;
}

/* ---- pair changes ---- */

static int note(trainer *T, int32_t a, int32_t b, int32_t word, int32_t delta) {
  GROW(T, changes, changes_cap, T->nchanges + 1);
  T->changes[T->nchanges++] = (change){a, b, word, delta};
  return 0;
}

static int change_cmp(const void *pa, const void *pb) {
  const change *x = pa, *y = pb;
  if (x->a != y->a) return x->a < y->a ? -1 : 1;
  if (x->b != y->b) return x->b < y->b ? -1 : 1;
  return (x->word > y->word) - (x->word < y->word);
}

/* Applies the noted changes to the pair counts and queues each pair that
 * gained, with the words where it did. */
static int settle(trainer *T, int positive_only) {
  for (size_t i = 0; i < T->nchanges; i++) {
    change *c = &T->changes[i];
    if (count_add(&T->pairs, pkey(c->a, c->b), (int64_t)c->delta * T->counts[c->word])) return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < T->nchanges; i++)
    if (!positive_only || T->changes[i].delta > 0) T->changes[k++] = T->changes[i];
  qsort(T->changes, k, sizeof *T->changes, change_cmp);
  for (size_t i = 0; i < k;) {
    size_t j = i;
    while (j < k && T->changes[j].a == T->changes[i].a && T->changes[j].b == T->changes[i].b) j++;
    int64_t count = count_get(&T->pairs, pkey(T->changes[i].a, T->changes[i].b));
    if (count > 0) {
      entry e = {count, T->seq++, T->changes[i].a, T->changes[i].b, malloc((j - i) * sizeof(int32_t)), 0};
      if (!e.words) return mf_fail("tokenizer train: out of memory");
      for (size_t m = i; m < j; m++)
        if (e.nwords == 0 || e.words[e.nwords - 1] != T->changes[m].word) e.words[e.nwords++] = T->changes[m].word;
      if (heap_push(T, e)) {
        free(e.words);
        return -1;
      }
    }
    i = j;
  }
  T->nchanges = 0;
  return 0;
}

static int initial_pairs(trainer *T) {
  T->syms = calloc(T->nwords + 1, sizeof *T->syms);
  T->nsyms = calloc(T->nwords + 1, sizeof *T->nsyms);
  if (!T->syms || !T->nsyms) return mf_fail("tokenizer train: out of memory");
  for (size_t i = 0; i < T->word_index.mask + 1; i++) {
    tok_strslot *s = &T->word_index.slots[i];
    if (s->value < 0) continue;
    const char *w = T->word_index.keys.data + s->off;
    int32_t *v = T->syms[s->value] = malloc((s->len + 1) * sizeof *v);
    if (!v) return mf_fail("tokenizer train: out of memory");
    for (uint32_t k = 0; k < s->len; k++) v[k] = T->byte_id[(uint8_t)w[k]];
    T->nsyms[s->value] = (int32_t)s->len;
    for (uint32_t k = 0; k + 1 < s->len; k++)
      if (note(T, v[k], v[k + 1], s->value, 1)) return -1;
  }
  return settle(T, 0);
}

/* Merges (a, b) into id left to right in word w, noting the pairs lost and
 * formed, as BpeTrainer's Word::merge does. */
static int merge_word(trainer *T, int32_t w, int32_t a, int32_t b, int32_t id) {
  int32_t *s = T->syms[w], n = T->nsyms[w];
  for (int32_t i = 0; i < n; i++) {
    if (s[i] != a || i + 1 >= n || s[i + 1] != b) continue;
    if (i > 0 && (note(T, s[i - 1], a, w, -1) || note(T, s[i - 1], id, w, 1))) return -1;
    s[i] = id;
    memmove(s + i + 1, s + i + 2, (size_t)(n - i - 2) * sizeof *s);
    n--;
    if (i < n - 1 && (note(T, b, s[i + 1], w, -1) || note(T, id, s[i + 1], w, 1))) return -1;
  }
  T->nsyms[w] = n;
  return 0;
}

static int apply_merge(trainer *T, const entry *top) {
  tok_buf joined = {0};
  int32_t id;
  int rc = tok_buf_put(&joined, T->texts.data + T->off[top->a], T->len[top->a]) ||
           tok_buf_put(&joined, T->texts.data + T->off[top->b], T->len[top->b]) ||
           add_token(T, joined.data, joined.len, &id);
  tok_buf_free(&joined);
  if (rc) return -1;
  void *m = realloc(T->merges, (T->nmerges + 1) * sizeof *T->merges);
  if (!m) return mf_fail("tokenizer train: out of memory");
  T->merges = m;
  T->merges[T->nmerges][0] = top->a;
  T->merges[T->nmerges][1] = top->b;
  T->merges[T->nmerges++][2] = id;
  for (size_t i = 0; i < top->nwords; i++)
    if (merge_word(T, top->words[i], top->a, top->b, id)) return -1;
  return settle(T, 1);
}

static int learn(trainer *T) {
  int64_t min_freq = T->opts->min_frequency;
  while (T->nvocab < T->opts->vocab_size && T->nheap) {
    entry top = heap_pop(T);
    int64_t now = count_get(&T->pairs, pkey(top.a, top.b));
    if (top.count != now) {
      top.count = now;
      if (heap_push(T, top)) return -1;
      continue;
    }
    int rc = top.count < 1 || top.count < min_freq ? 1 : apply_merge(T, &top);
    free(top.words);
    if (rc) return rc > 0 ? 0 : -1;
  }
  return 0;
}

/* ---- tokenizer.json ---- */

static json_t *byte_level_step(const char *type, int add_prefix_space, int trim_offsets) {
  return json_pack("{s:s, s:b, s:b, s:b}", "type", type, "add_prefix_space", add_prefix_space, "trim_offsets",
                   trim_offsets, "use_regex", 1);
}

static json_t *text_json(const trainer *T, int32_t id) {
  return json_stringn(T->texts.data + T->off[id], T->len[id]);
}

/* The merges list; a pair merged twice (a token formed by two routes)
 * keeps its last rank, as the trained BPE model does. */
static json_t *merges_json(const trainer *T) {
  countmap last = {0};
  json_t *merges = json_array();
  for (size_t i = 0; i < T->nmerges; i++) {
    uint64_t key = pkey(T->merges[i][0], T->merges[i][1]);
    if (count_add(&last, key, (int64_t)i + 1 - count_get(&last, key))) break;
  }
  for (size_t i = 0; i < T->nmerges; i++)
    if (count_get(&last, pkey(T->merges[i][0], T->merges[i][1])) == (int64_t)i + 1)
      json_array_append_new(merges, json_pack("[o, o]", text_json(T, T->merges[i][0]), text_json(T, T->merges[i][1])));
  free(last.slots);
  return merges;
}

static json_t *tokenizer_json(const trainer *T) {
  json_t *vocab = json_object(), *merges = merges_json(T), *added = json_array();
  for (int32_t id = 0; id < T->nvocab; id++)
    json_object_setn_new(vocab, T->texts.data + T->off[id], T->len[id], json_integer(id));
  for (int32_t id = 0; id < T->nspecial; id++)
    json_array_append_new(added, json_pack("{s:i, s:o, s:b, s:b, s:b, s:b, s:b}", "id", id, "content",
                                           text_json(T, id), "single_word", 0, "lstrip", 0, "rstrip", 0,
                                           "normalized", 0, "special", 1));
  json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                            "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                            "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", merges);
  return json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:o, s:o}", "version", "1.0", "truncation", "padding",
                   "added_tokens", added, "normalizer", "pre_tokenizer", byte_level_step("ByteLevel", 0, 1),
                   "post_processor", byte_level_step("ByteLevel", 1, 0), "decoder",
                   byte_level_step("ByteLevel", 1, 1), "model", model);
}

static int write_json(const trainer *T, const char *path) {
  json_t *root = tokenizer_json(T);
  if (!root) return mf_fail("%s: could not build the tokenizer JSON", path);
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  int ok = f && json_dumpf(root, f, JSON_INDENT(2) | JSON_ENSURE_ASCII) == 0;
  json_decref(root);
  if (!f) return -1;
  return mf_atomic_finish(f, tmp, path, ok) ? mf_fail("%s: could not write the tokenizer", path) : 0;
}

/* ---- entry ---- */

static void trainer_free(trainer *T) {
  if (T->split.re) pcre2_code_free(T->split.re);
  if (T->md) pcre2_match_data_free(T->md);
  free(T->spans.v);
  free(T->tmp.v);
  tok_strmap_free(&T->word_index);
  for (size_t i = 0; T->syms && i < T->nwords; i++) free(T->syms[i]);
  free(T->syms);
  free(T->nsyms);
  free(T->counts);
  tok_strmap_free(&T->vocab);
  tok_buf_free(&T->texts);
  free(T->off);
  free(T->len);
  free(T->pairs.slots);
  for (size_t i = 0; i < T->nheap; i++) free(T->heap[i].words);
  free(T->heap);
  free(T->changes);
  free(T->merges);
}

static int check_opts(const mf_bpe_train_opts *o, const char *out) {
  if (!o || !out) return mf_fail("tokenizer train: no options or no output path");
  if (o->vocab_size < 256 + o->nspecial)
    return mf_fail("tokenizer train: vocab_size %d is below the 256 bytes plus %d special tokens",
                   (int)o->vocab_size, o->nspecial);
  if (o->nfiles + o->ntexts == 0) return mf_fail("tokenizer train: no files and no texts to train on");
  return 0;
}

int mf_tokenizer_train(const mf_bpe_train_opts *opts, const char *output_path) {
  if (check_opts(opts, output_path)) return -1;
  trainer T = {.opts = opts};
  int rc = tok_compile_split(TOK_RE_GPT2, SPLIT_ISOLATED, &T.split, "tokenizer train");
  if (rc == 0 && !(T.md = pcre2_match_data_create(1, NULL))) rc = mf_fail("tokenizer train: out of memory");
  for (int i = 0; rc == 0 && i < opts->nfiles; i++) rc = feed_file(&T, opts->files[i]);
  for (int64_t i = 0; rc == 0 && i < opts->ntexts; i++) rc = feed(&T, opts->texts[i], opts->text_lens[i]);
  if (rc == 0) rc = initial_vocab(&T) || initial_pairs(&T) || learn(&T) || write_json(&T, output_path) ? -1 : 0;
  trainer_free(&T);
  return rc;
}
