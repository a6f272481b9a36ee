/*
 * Tokenizers: building the tables, encoding, decoding and the public
 * mf_tokenizer_* API (see tokenizer.h for the representation).
 *
 * Encoding follows HF tokenizers: added tokens are cut out of the text
 * first (special ones only when parse_special asks: by default text is
 * data), then each plain segment is normalized, pre-tokenized and BPE'd
 * word by word (or WordPiece'd); add_special puts the post-processor's ids
 * around it.
 */
#define _GNU_SOURCE
#include "tokenizer.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const uint32_t UNSET = UINT32_MAX;

/* ---- building ---- */

mf_tokenizer *tok_alloc(int32_t n, int byte_level) {
  if (n <= 0) return mf_fail_null("tokenizer: empty vocabulary");
  mf_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return mf_fail_null("tokenizer: out of memory");
  t->n = n;
  t->byte_level = byte_level;
  t->unk_id = t->bos_id = t->eos_id = t->pad_id = -1;
  pthread_mutex_init(&t->cache_lock, NULL);
  t->text_off = malloc((size_t)n * sizeof *t->text_off);
  t->text_len = malloc((size_t)n * sizeof *t->text_len);
  t->dec_off = malloc((size_t)n * sizeof *t->dec_off);
  t->dec_len = malloc((size_t)n * sizeof *t->dec_len);
  t->flags = calloc((size_t)n, 1);
  if (!t->text_off || !t->text_len || !t->dec_off || !t->dec_len || !t->flags) {
    mf_tokenizer_free(t);
    return mf_fail_null("tokenizer: out of memory for %d tokens", (int)n);
  }
  for (int32_t i = 0; i < n; i++) t->text_len[i] = UNSET;
  return t;
}

int tok_set(mf_tokenizer *t, int32_t id, const char *text, size_t len, unsigned flags) {
  if (id < 0 || id >= t->n) return mf_fail("tokenizer: token id %d outside [0, %d)", (int)id, (int)t->n);
  t->text_off[id] = (uint32_t)t->strings.len;
  t->text_len[id] = (uint32_t)len;
  t->flags[id] = (uint8_t)flags;
  return tok_buf_put(&t->strings, text, len);
}

int tok_require(const mf_tokenizer *t, const char *s, size_t len, int32_t *id, const char *where) {
  *id = tok_strmap_get(&t->by_text, s, len);
  if (*id < 0) return mf_fail("%s: token '%.*s' is not in the vocabulary", where, (int)len, s);
  return 0;
}

static const char *text_of(const mf_tokenizer *t, int32_t id) { return t->strings.data + t->text_off[id]; }

int tok_merge_texts(mf_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                    const char *where) {
  int32_t ia, ib, ij;
  tok_buf joined = {0};
  if (tok_require(t, a, alen, &ia, where) || tok_require(t, b, blen, &ib, where) ||
      tok_buf_put(&joined, a, alen) || tok_buf_put(&joined, b, blen) ||
      tok_require(t, joined.data, joined.len, &ij, where)) {
    tok_buf_free(&joined);
    return -1;
  }
  tok_buf_free(&joined);
  return tok_pairmap_put(&t->merges, ia, ib, (tok_merge){t->nmerges++, ij});
}

int tok_add_norm(mf_tokenizer *t, int kind, const char *from, const char *to, int first_only,
                 int unless_present) {
  tok_norm *norms = realloc(t->norms, (size_t)(t->nnorms + 1) * sizeof *norms);
  if (!norms) return mf_fail("tokenizer: out of memory");
  t->norms = norms;
  tok_norm *op = &t->norms[t->nnorms++];
  *op = (tok_norm){kind, strdup(from ? from : ""), strdup(to), first_only, unless_present};
  if (!op->from || !op->to) return mf_fail("tokenizer: out of memory");
  return 0;
}

/* SentencePiece's byte tokens are spelled <0xXX>; returns the byte or -1. */
static int byte_token(const char *s, size_t len) {
  if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/* What decoding a token yields: raw bytes for byte-level vocabulary tokens,
 * SentencePiece text with "▁" as a space, the byte of a <0xXX> token, and
 * the text itself for added tokens. */
static int token_bytes(const mf_tokenizer *t, int32_t id, tok_buf *out) {
  const char *s = text_of(t, id);
  size_t len = t->text_len[id];
  if (t->flags[id] & TOK_ADDED) return tok_buf_put(out, s, len);
  if (t->byte_level) return tok_unspell(s, len, out);
  if (t->wordpiece) return tok_wordpiece_bytes(t, s, len, out);
  int b = byte_token(s, len);
  char c = (char)b;
  if (b >= 0) return tok_buf_put(out, &c, 1);
  for (size_t i = 0; i < len;) {
    size_t n = tok_utf8_len(s + i, len - i);
    int space = n == 3 && memcmp(s + i, "\xE2\x96\x81", 3) == 0;
    if (tok_buf_put(out, space ? " " : s + i, space ? 1 : n)) return -1;
    i += n;
  }
  return 0;
}

/* Orders added tokens by first byte, longest first, so the first that
 * matches at a position is the longest (HF matches leftmost-longest). */
static int added_cmp(const void *pa, const void *pb, void *ctx) {
  const mf_tokenizer *t = ctx;
  int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
  uint8_t fa = (uint8_t)text_of(t, a)[0], fb = (uint8_t)text_of(t, b)[0];
  if (fa != fb) return fa - fb;
  if (t->text_len[a] != t->text_len[b]) return t->text_len[a] > t->text_len[b] ? -1 : 1;
  return a - b;
}

static int index_added(mf_tokenizer *t) {
  for (int32_t i = 0; i < t->n; i++) t->nadded += (t->flags[i] & TOK_ADDED) && t->text_len[i] > 0;
  t->added = malloc((size_t)(t->nadded + 1) * sizeof *t->added);
  if (!t->added) return mf_fail("tokenizer: out of memory");
  int32_t k = 0;
  for (int32_t i = 0; i < t->n; i++)
    if ((t->flags[i] & TOK_ADDED) && t->text_len[i] > 0) t->added[k++] = i;
  qsort_r(t->added, (size_t)k, sizeof *t->added, added_cmp, t);
  int32_t j = 0;
  for (int b = 0; b <= 256; b++) {
    while (j < k && (uint8_t)text_of(t, t->added[j])[0] < b) j++;
    t->added_start[b] = j;
  }
  return 0;
}

int tok_finish(mf_tokenizer *t, const char *where) {
  tok_buf dec = {0};
  for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
  for (int32_t id = 0; id < t->n; id++) {
    if (t->text_len[id] == UNSET) {
      tok_buf_free(&dec);
      return mf_fail("%s: no token has id %d (the vocabulary has %d ids)", where, (int)id, (int)t->n);
    }
    size_t off = dec.len;
    if (token_bytes(t, id, &dec)) goto fail;
    t->dec_off[id] = (uint32_t)off;
    t->dec_len[id] = (uint32_t)(dec.len - off);
  }
  for (int32_t id = 0; id < t->n; id++) {
    const char *text = text_of(t, id);
    size_t len = t->text_len[id];
    const char *piece = t->byte_level ? dec.data + t->dec_off[id] : text;
    size_t plen = t->byte_level ? t->dec_len[id] : len;
    if ((tok_strmap_get(&t->by_text, text, len) < 0 && tok_strmap_put(&t->by_text, text, len, id)) ||
        (tok_strmap_get(&t->by_piece, piece, plen) < 0 && tok_strmap_put(&t->by_piece, piece, plen, id)))
      goto fail;
    int added = t->flags[id] & TOK_ADDED;
    if (t->byte_level && !added && plen == 1 && t->byte_id[(uint8_t)piece[0]] < 0)
      t->byte_id[(uint8_t)piece[0]] = id;
    if (!t->byte_level && !added && byte_token(text, len) >= 0) t->byte_id[byte_token(text, len)] = id;
  }
  /* decoded bytes now live after the token texts, in one buffer */
  size_t base = t->strings.len;
  if (tok_buf_put(&t->strings, dec.data, dec.len)) goto fail;
  for (int32_t id = 0; id < t->n; id++) t->dec_off[id] += (uint32_t)base;
  tok_buf_free(&dec);
  return index_added(t);
fail:
  tok_buf_free(&dec);
  return -1;
}

/* ---- encoding ---- */

int tok_is_space(uint32_t cp) {
  return cp == ' ' || (cp >= '\t' && cp <= '\r') || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

/* Length of the whitespace character at p (0 if none). */
static size_t space_at(const char *p, size_t left) {
  size_t n = tok_utf8_len(p, left);
  return tok_is_space(tok_utf8_decode(p, n)) ? n : 0;
}

/* Length of the whitespace character that ends at end, not before from. */
static size_t space_before(const char *text, size_t from, size_t end) {
  size_t start = end;
  while (start > from && end - start < 4) {
    start--;
    if (((unsigned char)text[start] & 0xC0) != 0x80) break;
  }
  return start < end && space_at(text + start, end - start) == end - start ? end - start : 0;
}

/* Word characters for single_word added tokens: ASCII alphanumerics, '_'
 * and anything non-ASCII that is not whitespace. */
static int word_byte(const char *text, size_t len, size_t i) {
  unsigned char c = (unsigned char)text[i];
  if (c >= 0x80) return !space_at(text + i, len - i);
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

typedef struct added_match { size_t start, end; int32_t id; } added_match;

/* The added token at p, if one matches there and is wanted. */
static int32_t added_at(const mf_tokenizer *t, const char *text, size_t len, size_t p, int parse_special) {
  uint8_t b = (uint8_t)text[p];
  for (int32_t k = t->added_start[b]; k < t->added_start[b + 1]; k++) {
    int32_t id = t->added[k];
    size_t n = t->text_len[id];
    unsigned f = t->flags[id];
    if ((f & TOK_SPECIAL) && !parse_special) continue;
    if (n > len - p || memcmp(text + p, text_of(t, id), n) != 0) continue;
    if ((f & TOK_SINGLE_WORD) &&
        ((p > 0 && word_byte(text, len, p - 1)) || (p + n < len && word_byte(text, len, p + n))))
      continue;
    return id;
  }
  return -1;
}

/* The first added token at or after from; its span grows over whitespace
 * it strips, but not before seg (where the current plain segment began). */
static int find_added(const mf_tokenizer *t, const char *text, size_t len, size_t from, size_t seg,
                      int parse_special, added_match *m) {
  if (t->nadded == 0) return 0;
  for (size_t p = from; p < len; p++) {
    uint8_t b = (uint8_t)text[p];
    if (t->added_start[b] == t->added_start[b + 1]) continue;
    int32_t id = added_at(t, text, len, p, parse_special);
    if (id < 0) continue;
    m->id = id;
    m->start = p;
    m->end = p + t->text_len[id];
    if (t->flags[id] & TOK_LSTRIP)
      for (size_t n; (n = space_before(text, seg, m->start)) > 0;) m->start -= n;
    if (t->flags[id] & TOK_RSTRIP)
      for (size_t n; m->end < len && (n = space_at(text + m->end, len - m->end)) > 0;) m->end += n;
    return 1;
  }
  return 0;
}

static int encode_plain(mf_tokenizer *t, const char *s, size_t len, int at_start, tok_work *w, tok_emit *e) {
  if (len == 0) return 0;
  if (t->bert_norm || t->nnorms) {
    if (t->bert_norm ? tok_bert_normalize(t, s, len, &w->norm) : tok_normalize(t, s, len, at_start, &w->norm))
      return -1;
    s = w->norm.data;
    len = w->norm.len;
  }
  if (tok_pretokenize(t->splits, t->nsplits, s, len, w->md, &w->words, &w->tmp)) return -1;
  for (size_t i = 0; i < w->words.n; i++) {
    const char *word = s + w->words.v[i].start;
    size_t n = w->words.v[i].len;
    if (t->wordpiece ? tok_wordpiece_word(t, word, n, e) : tok_bpe_word(t, word, n, w, e)) return -1;
  }
  return 0;
}

static int encode_text(mf_tokenizer *t, const char *text, size_t len, int parse_special, tok_work *w,
                       tok_emit *e) {
  size_t seg = 0;
  added_match m;
  while (find_added(t, text, len, seg, seg, parse_special, &m)) {
    if (encode_plain(t, text + seg, m.start - seg, seg == 0, w, e)) return -1;
    tok_emit_id(e, m.id);
    seg = m.end;
  }
  return encode_plain(t, text + seg, len - seg, seg == 0, w, e);
}

int64_t mf_tokenizer_encode(mf_tokenizer *t, const char *text, size_t len, int add_special,
                            int parse_special, int32_t *out, int64_t cap) {
  if (!t || (!text && len)) return mf_fail("tokenizer encode: no tokenizer or no text");
  tok_emit e = {out, out ? cap : 0, 0};
  tok_work w = {0};
  w.md = pcre2_match_data_create(1, NULL);
  if (!w.md) return mf_fail("tokenizer: out of memory");
  for (int i = 0; add_special && i < t->nprefix; i++) tok_emit_id(&e, t->prefix[i]);
  int rc = encode_text(t, text, len, parse_special, &w, &e);
  for (int i = 0; add_special && i < t->nsuffix; i++) tok_emit_id(&e, t->suffix[i]);
  tok_work_free(&w);
  return rc ? -1 : e.n;
}

/* ---- decoding ---- */

int64_t mf_tokenizer_decode(const mf_tokenizer *t, const int32_t *ids, int64_t n, int skip_special,
                            char *out, size_t cap) {
  if (!t || (!ids && n)) return mf_fail("tokenizer decode: no tokenizer or no ids");
  size_t total = 0;
  int strip = t->strip_space;
  for (int64_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->n)
      return mf_fail("tokenizer decode: id %d at position %lld is outside the vocabulary [0, %d)",
                     (int)id, (long long)i, (int)t->n);
    if (skip_special && (t->flags[id] & TOK_SPECIAL)) continue;
    const char *s = t->strings.data + t->dec_off[id];
    size_t len = t->dec_len[id];
    if (strip && len > 0) { /* only the text's first byte can be the added space */
      strip = 0;
      if (s[0] == ' ') s++, len--;
    }
    if (out && total < cap) memcpy(out + total, s, len < cap - total ? len : cap - total);
    total += len;
  }
  return (int64_t)total;
}

/* ---- the public API ---- */

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_gguf_magic(const char *path) {
  char magic[4] = {0};
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  size_t got = fread(magic, 1, 4, f);
  fclose(f);
  return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* path/name into buf, or the folder of path/name when path is a file. */
static void sibling(const char *path, int path_is_dir, const char *name, char *buf, size_t cap) {
  const char *slash = strrchr(path, '/');
  if (path_is_dir) snprintf(buf, cap, "%s/%s", path, name);
  else if (slash) snprintf(buf, cap, "%.*s/%s", (int)(slash - path), path, name);
  else snprintf(buf, cap, "%s", name);
}

mf_tokenizer *mf_tokenizer_load(const char *path) {
  char json[4096], config[4096];
  if (!path) return mf_fail_null("tokenizer load: no path");
  int dir = is_dir(path);
  if (!dir && !is_file(path)) return mf_fail_null("%s: no such file or folder", path);
  if (!dir && has_gguf_magic(path)) return tok_load_gguf(path);
  if (dir) sibling(path, 1, "tokenizer.json", json, sizeof json);
  else snprintf(json, sizeof json, "%s", path);
  if (!is_file(json)) return mf_fail_null("%s: no tokenizer.json in this folder", path);
  sibling(path, dir, "tokenizer_config.json", config, sizeof config);
  return tok_load_json(json, is_file(config) ? config : NULL);
}

void mf_tokenizer_free(mf_tokenizer *t) {
  if (!t) return;
  tok_buf_free(&t->strings);
  free(t->text_off);
  free(t->text_len);
  free(t->dec_off);
  free(t->dec_len);
  free(t->flags);
  tok_strmap_free(&t->by_text);
  tok_strmap_free(&t->by_piece);
  tok_pairmap_free(&t->merges);
  free(t->added);
  for (int i = 0; i < t->nnorms; i++) {
    free(t->norms[i].from);
    free(t->norms[i].to);
  }
  free(t->norms);
  for (int i = 0; i < t->nsplits; i++) pcre2_code_free(t->splits[i].re);
  free(t->splits);
  free(t->chat_template);
  tok_strmap_free(&t->cache);
  tok_buf_free(&t->cache_ids);
  pthread_mutex_destroy(&t->cache_lock);
  free(t);
}

int32_t mf_tokenizer_vocab_size(const mf_tokenizer *t) { return t->n; }

int32_t mf_tokenizer_token_id(const mf_tokenizer *t, const char *token, size_t len) {
  return tok_strmap_get(&t->by_text, token, len);
}

const char *mf_tokenizer_token(const mf_tokenizer *t, int32_t id, size_t *len) {
  if (id < 0 || id >= t->n)
    return mf_fail_null("tokenizer: id %d is outside the vocabulary [0, %d)", (int)id, (int)t->n);
  *len = t->text_len[id];
  return text_of(t, id);
}

int mf_tokenizer_is_special(const mf_tokenizer *t, int32_t id) {
  return id >= 0 && id < t->n && (t->flags[id] & TOK_SPECIAL) != 0;
}

int32_t mf_tokenizer_bos_id(const mf_tokenizer *t) { return t->bos_id; }
int32_t mf_tokenizer_eos_id(const mf_tokenizer *t) { return t->eos_id; }
int32_t mf_tokenizer_pad_id(const mf_tokenizer *t) { return t->pad_id; }
const char *mf_tokenizer_chat_template(const mf_tokenizer *t) {
  return t->chat_template ? t->chat_template : "";
}
