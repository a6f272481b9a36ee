/*
 * Loading a tokenizer from GGUF metadata (llama.cpp's tokenizer.* keys).
 *
 * tokenizer.ggml.model "gpt2" is byte-level BPE with the merges listed and
 * the pre-tokenizer named by tokenizer.ggml.pre; "llama" is
 * SentencePiece-style BPE with byte fallback, whose merges are recovered
 * from the scores as transformers does (every split of a token into two
 * tokens, best score first). Token types: 2 unknown, 3 control (special
 * added tokens), 4 user-defined (added, not special), 6 byte.
 */
#define _GNU_SOURCE
#include "tokenizer.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_USER_DEFINED = 4 };

typedef struct gloader {
  const char *path;
  mf_gguf *g;
  mf_tokenizer *t;
  int64_t tokens, types, scores;
} gloader;

/* Index of array entry key: -1 when absent, -2 (with a message) when it
 * is not an array (of elem_type, when elem_type >= 0). */
static int64_t find_array(const gloader *L, const char *key, int elem_type) {
  int64_t i = mf_gguf_find(L->g, key);
  if (i < 0) return -1;
  if (mf_gguf_type(L->g, i) != 9 || (elem_type >= 0 && mf_gguf_arr_type(L->g, i) != elem_type)) {
    mf_fail("%s: %s is not an array of the expected type", L->path, key);
    return -2;
  }
  return i;
}

/* An optional integer key into *out (left alone when absent). */
static int get_int(const gloader *L, const char *key, int64_t *out) {
  int64_t i = mf_gguf_find(L->g, key);
  return i < 0 ? 0 : mf_gguf_int(L->g, i, out);
}

static int set_tokens(gloader *L) {
  int64_t n = mf_gguf_arr_len(L->g, L->tokens);
  if (L->types >= 0 && mf_gguf_arr_len(L->g, L->types) != n)
    return mf_fail("%s: tokenizer.ggml.token_type has %lld entries for %lld tokens", L->path,
                   (long long)mf_gguf_arr_len(L->g, L->types), (long long)n);
  for (int64_t id = 0; id < n; id++) {
    size_t len;
    int64_t type = 1;
    const char *s = mf_gguf_arr_str(L->g, L->tokens, id, &len);
    if (!s || (L->types >= 0 && mf_gguf_arr_int(L->g, L->types, id, &type))) return -1;
    unsigned flags = type == TYPE_CONTROL ? TOK_ADDED | TOK_SPECIAL : type == TYPE_USER_DEFINED ? TOK_ADDED : 0;
    if (tok_set(L->t, (int32_t)id, s, len, flags)) return -1;
    if (type == TYPE_UNKNOWN && L->t->unk_id < 0) L->t->unk_id = (int32_t)id;
  }
  return tok_finish(L->t, L->path);
}

static int listed_merges(const gloader *L) {
  int64_t m = find_array(L, "tokenizer.ggml.merges", 8);
  if (m == -1) return mf_fail("%s: no tokenizer.ggml.merges", L->path);
  if (m < 0) return -1;
  char where[4200];
  snprintf(where, sizeof where, "%s: tokenizer.ggml.merges", L->path);
  for (int64_t j = 0; j < mf_gguf_arr_len(L->g, m); j++) {
    size_t len;
    const char *s = mf_gguf_arr_str(L->g, m, j, &len);
    const char *space = s ? memchr(s, ' ', len) : NULL;
    if (!space) return mf_fail("%s[%lld] is not two tokens separated by a space", where, (long long)j);
    if (tok_merge_texts(L->t, s, (size_t)(space - s), space + 1, len - (size_t)(space - s) - 1, where))
      return -1;
  }
  return 0;
}

/* ---- merges recovered from SentencePiece scores ---- */

typedef struct cand { int32_t a, b, id; size_t alen, blen; double score; int64_t seq; } cand;

static int cand_cmp(const void *pa, const void *pb) {
  const cand *x = pa, *y = pb;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  if (x->alen != y->alen) return x->alen > y->alen ? -1 : 1;
  if (x->blen != y->blen) return x->blen > y->blen ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static size_t count_chars(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i += tok_utf8_len(s + i, len - i)) n++;
  return n;
}

/* Every split of token id into two tokens, in (left id, right id) order
 * within the token, as transformers' generate_merges lists them. */
static int token_splits(const gloader *L, int32_t id, double score, cand **v, size_t *n, size_t *cap) {
  const mf_tokenizer *t = L->t;
  size_t len, first = *n;
  const char *s = mf_tokenizer_token(t, id, &len);
  for (size_t k = tok_utf8_len(s, len); k < len; k += tok_utf8_len(s + k, len - k)) {
    int32_t a = tok_strmap_get(&t->by_text, s, k), b = tok_strmap_get(&t->by_text, s + k, len - k);
    if (a < 0 || b < 0) continue;
    if (*n == *cap) {
      *cap = *cap ? 2 * *cap : 4096;
      cand *grown = realloc(*v, *cap * sizeof *grown);
      if (!grown) return mf_fail("tokenizer: out of memory");
      *v = grown;
    }
    (*v)[(*n)++] = (cand){a, b, id, count_chars(s, k), count_chars(s + k, len - k), score, 0};
  }
  for (size_t i = first + 1; i < *n; i++) /* few splits per token: insertion sort */
    for (size_t j = i; j > first && ((*v)[j].a < (*v)[j - 1].a ||
                                     ((*v)[j].a == (*v)[j - 1].a && (*v)[j].b < (*v)[j - 1].b)); j--) {
      cand tmp = (*v)[j];
      (*v)[j] = (*v)[j - 1];
      (*v)[j - 1] = tmp;
    }
  return 0;
}

static int scored_merges(const gloader *L) {
  if (L->scores < 0) return mf_fail("%s: a llama tokenizer needs tokenizer.ggml.scores", L->path);
  if (mf_gguf_arr_len(L->g, L->scores) != L->t->n)
    return mf_fail("%s: tokenizer.ggml.scores has %lld entries for %d tokens", L->path,
                   (long long)mf_gguf_arr_len(L->g, L->scores), (int)L->t->n);
  cand *v = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  for (int32_t id = 0; id < L->t->n && rc == 0; id++) {
    double score;
    rc = mf_gguf_arr_float(L->g, L->scores, id, &score) || token_splits(L, id, score, &v, &n, &cap) ? -1 : 0;
  }
  for (size_t i = 0; i < n; i++) v[i].seq = (int64_t)i;
  if (rc == 0) qsort(v, n, sizeof *v, cand_cmp);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = tok_pairmap_put(&L->t->merges, v[i].a, v[i].b, (tok_merge){L->t->nmerges++, v[i].id});
  free(v);
  return rc;
}

/* ---- pre-tokenizer and normalizer ---- */

static int byte_level_splits(const gloader *L) {
  char pre[64] = "default";
  int64_t i = mf_gguf_find(L->g, "tokenizer.ggml.pre");
  if (i >= 0) {
    size_t len;
    const char *s = mf_gguf_str(L->g, i, &len);
    if (!s) return -1;
    snprintf(pre, sizeof pre, "%.*s", (int)len, s);
  }
  mf_tokenizer *t = L->t;
  if (strcmp(pre, "default") == 0 || strcmp(pre, "gpt2") == 0 || strcmp(pre, "gpt-2") == 0)
    return tok_add_split(t, TOK_RE_GPT2, SPLIT_ISOLATED, L->path);
  if (strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0 || strcmp(pre, "llama-v3") == 0)
    return tok_add_split(t, TOK_RE_LLAMA3, SPLIT_ISOLATED, L->path);
  if (strcmp(pre, "qwen2") == 0) return tok_add_split(t, TOK_RE_QWEN2, SPLIT_ISOLATED, L->path);
  if (strcmp(pre, "smollm") == 0)
    return tok_add_split(t, TOK_RE_DIGIT, SPLIT_ISOLATED, L->path) ||
           tok_add_split(t, TOK_RE_GPT2, SPLIT_ISOLATED, L->path);
  return mf_fail("%s: tokenizer.ggml.pre '%s' is not a known pre-tokenizer "
                 "(default, gpt2, llama-bpe, qwen2, smollm)", L->path, pre);
}

/* SentencePiece: spaces become "▁", and one is put before the text. */
static int sentencepiece_normalizer(const gloader *L) {
  int64_t prefix = 1;
  if (get_int(L, "tokenizer.ggml.add_space_prefix", &prefix)) return -1;
  L->t->strip_space = prefix != 0;
  return tok_add_norm(L->t, NORM_REPLACE, " ", "\xE2\x96\x81", 0, 0) ||
         (prefix && tok_add_norm(L->t, NORM_PREPEND, NULL, "\xE2\x96\x81", 1, 1)) ? -1 : 0;
}

/* ---- ids and the chat template ---- */

static int special_ids(const gloader *L, int byte_level) {
  mf_tokenizer *t = L->t;
  int64_t bos = -1, eos = -1, pad = -1, unk = t->unk_id, add_bos = !byte_level, add_eos = 0;
  if (get_int(L, "tokenizer.ggml.bos_token_id", &bos) || get_int(L, "tokenizer.ggml.eos_token_id", &eos) ||
      get_int(L, "tokenizer.ggml.padding_token_id", &pad) || get_int(L, "tokenizer.ggml.unknown_token_id", &unk) ||
      get_int(L, "tokenizer.ggml.add_bos_token", &add_bos) || get_int(L, "tokenizer.ggml.add_eos_token", &add_eos))
    return -1;
  int64_t ids[] = {bos, eos, pad, unk};
  for (int i = 0; i < 4; i++)
    if (ids[i] < -1 || ids[i] >= t->n)
      return mf_fail("%s: special token id %lld is outside the vocabulary [0, %d)", L->path, (long long)ids[i], (int)t->n);
  t->bos_id = (int32_t)bos;
  t->eos_id = (int32_t)eos;
  t->pad_id = (int32_t)pad;
  t->unk_id = (int32_t)unk;
  if (add_bos && bos >= 0) t->prefix[t->nprefix++] = t->bos_id;
  if (add_eos && eos >= 0) t->suffix[t->nsuffix++] = t->eos_id;
  return 0;
}

static int chat_template(const gloader *L) {
  int64_t i = mf_gguf_find(L->g, "tokenizer.chat_template");
  size_t len;
  const char *s = i >= 0 ? mf_gguf_str(L->g, i, &len) : NULL;
  if (i < 0) return 0;
  if (!s || !(L->t->chat_template = strndup(s, len))) return -1;
  return 0;
}

static int build(gloader *L) {
  int64_t i = mf_gguf_find(L->g, "tokenizer.ggml.model");
  size_t len = 0;
  const char *model = i >= 0 ? mf_gguf_str(L->g, i, &len) : NULL;
  if (!model) return mf_fail("%s: no tokenizer.ggml.model string", L->path);
  int byte_level = len == 4 && memcmp(model, "gpt2", 4) == 0;
  if (!byte_level && !(len == 5 && memcmp(model, "llama", 5) == 0))
    return mf_fail("%s: tokenizer.ggml.model '%.*s' is not supported (gpt2 or llama)", L->path, (int)len, model);
  L->tokens = find_array(L, "tokenizer.ggml.tokens", 8);
  L->types = find_array(L, "tokenizer.ggml.token_type", -1);
  L->scores = find_array(L, "tokenizer.ggml.scores", -1);
  if (L->tokens == -1) return mf_fail("%s: no tokenizer.ggml.tokens", L->path);
  if (L->tokens < 0 || L->types == -2 || L->scores == -2) return -1;
  int64_t n = mf_gguf_arr_len(L->g, L->tokens);
  if (n <= 0 || n >= INT32_MAX) return mf_fail("%s: tokenizer.ggml.tokens has %lld entries", L->path, (long long)n);
  if (!(L->t = tok_alloc((int32_t)n, byte_level))) return -1;
  L->t->byte_fallback = !byte_level;
  if (set_tokens(L)) return -1;
  if (byte_level ? listed_merges(L) || byte_level_splits(L) : scored_merges(L) || sentencepiece_normalizer(L))
    return -1;
  return special_ids(L, byte_level) || chat_template(L) ? -1 : 0;
}

mf_tokenizer *tok_load_gguf(const char *path) {
  gloader L = {path, mf_gguf_open(path), NULL, -1, -1, -1};
  if (!L.g) return NULL;
  int rc = build(&L);
  mf_gguf_close(L.g);
  if (rc) {
    mf_tokenizer_free(L.t);
    return NULL;
  }
  return L.t;
}
