/*
 * Before BPE: GPT-2's byte alphabet, UTF-8 helpers, the normalizer steps
 * (prepend, replace) and the pre-tokenizer splits.
 *
 * Splits run the regex a tokenizer declares with PCRE2 in UTF + UCP mode
 * (Unicode categories for \p{L}, \p{N}, \s) and JIT. Each piece of the
 * previous step is matched as a subject of its own, as HF tokenizers does,
 * so lookaheads such as \s+(?!\S) stop at the piece's end. Invalid UTF-8
 * never matches (PCRE2_MATCH_INVALID_UTF); with the "isolated" behaviour
 * such bytes become pieces of their own, so no byte is lost.
 */
#include "tokenizer.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

const char TOK_RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char TOK_RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char TOK_RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char TOK_RE_DIGIT[] = "\\p{N}";
/* Metaspace's split: every "▁" starts a new word. */
const char TOK_RE_METASPACE[] = "[^\\x{2581}]+|\\x{2581}[^\\x{2581}]*";

int tok_buf_put(tok_buf *b, const void *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return mf_fail("tokenizer: out of memory");
    b->data = data;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

void tok_buf_free(tok_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

size_t tok_utf8_len(const char *p, size_t left) {
  unsigned char c = (unsigned char)p[0];
  size_t n = c < 0x80 ? 1 : c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 1;
  if (n > left) return 1;
  for (size_t i = 1; i < n; i++)
    if (((unsigned char)p[i] & 0xC0) != 0x80) return 1;
  return n;
}

uint32_t tok_utf8_decode(const char *p, size_t n) {
  const unsigned char *s = (const unsigned char *)p;
  if (n == 1) return s[0];
  uint32_t cp = s[0] & (0x7F >> n);
  for (size_t i = 1; i < n; i++) cp = cp << 6 | (s[i] & 0x3F);
  return cp;
}

int tok_put_utf8(tok_buf *b, uint32_t cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
  else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
  } else {
    u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    u[2] = (char)(0x80 | (cp >> 6 & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
  }
  return tok_buf_put(b, u, n);
}

/* GPT-2 spells the printable Latin-1 bytes as themselves and the others
 * (controls, space, 0x7F-0xA0, 0xAD) as 256, 257, ... in byte order. */
static int byte_is_printable(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_char(uint8_t b) {
  if (byte_is_printable(b)) return b;
  uint32_t k = 0;
  for (unsigned c = 0; c < b; c++) k += !byte_is_printable(c);
  return 256 + k;
}

/* The byte that code point cp spells, or -1. */
static int char_byte(uint32_t cp) {
  static int16_t table[324];
  static int ready;
  if (!ready) { /* idempotent: racing threads write the same values */
    for (int i = 0; i < 324; i++) table[i] = -1;
    for (int b = 0; b < 256; b++) table[tok_byte_char((uint8_t)b)] = (int16_t)b;
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
  }
  return cp < 324 ? table[cp] : -1;
}

int tok_unspell(const char *text, size_t len, tok_buf *out) {
  for (size_t i = 0; i < len;) {
    size_t n = tok_utf8_len(text + i, len - i);
    int b = char_byte(tok_utf8_decode(text + i, n));
    char c = (char)b;
    if (b >= 0 ? tok_buf_put(out, &c, 1) : tok_buf_put(out, text + i, n)) return -1;
    i += n;
  }
  return 0;
}

int tok_spell(const char *bytes, size_t len, tok_buf *out) {
  for (size_t i = 0; i < len; i++)
    if (tok_put_utf8(out, tok_byte_char((uint8_t)bytes[i]))) return -1;
  return 0;
}

/* ---- normalizer ---- */

static int replace_all(const char *s, size_t len, const char *from, const char *to, tok_buf *out) {
  size_t flen = strlen(from), tlen = strlen(to), i = 0;
  while (i < len) {
    if (flen && i + flen <= len && memcmp(s + i, from, flen) == 0) {
      if (tok_buf_put(out, to, tlen)) return -1;
      i += flen;
    } else {
      if (tok_buf_put(out, s + i, 1)) return -1;
      i++;
    }
  }
  return 0;
}

static int apply_norm(const tok_norm *op, const char *s, size_t len, int at_start, tok_buf *out) {
  if (op->kind == NORM_REPLACE) return replace_all(s, len, op->from, op->to, out);
  size_t tlen = strlen(op->to);
  int present = len >= tlen && memcmp(s, op->to, tlen) == 0;
  int prepend = len > 0 && (!op->first_only || at_start) && !(op->unless_present && present);
  if (prepend && tok_buf_put(out, op->to, tlen)) return -1;
  return tok_buf_put(out, s, len);
}

int tok_normalize(const mf_tokenizer *t, const char *s, size_t len, int at_start, tok_buf *out) {
  tok_buf tmp = {0};
  out->len = 0;
  if (tok_buf_put(out, s, len)) return -1;
  for (int i = 0; i < t->nnorms; i++) {
    tmp.len = 0;
    if (apply_norm(&t->norms[i], out->data, out->len, at_start, &tmp)) {
      tok_buf_free(&tmp);
      return -1;
    }
    tok_buf swap = *out;
    *out = tmp;
    tmp = swap;
  }
  tok_buf_free(&tmp);
  return 0;
}

/* ---- splits ---- */

int tok_compile_split(const char *pattern, int behavior, tok_split *out, const char *where) {
  int err;
  PCRE2_SIZE at;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return mf_fail("%s: pre-tokenizer regex at offset %zu: %s", where, (size_t)at, (char *)msg);
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT it still matches, only slower */
  *out = (tok_split){re, behavior};
  return 0;
}

int tok_add_split(mf_tokenizer *t, const char *pattern, int behavior, const char *where) {
  tok_split *splits = realloc(t->splits, (size_t)(t->nsplits + 1) * sizeof *splits);
  if (!splits) return mf_fail("tokenizer: out of memory");
  t->splits = splits;
  if (tok_compile_split(pattern, behavior, &t->splits[t->nsplits], where)) return -1;
  t->nsplits++;
  return 0;
}

static int push_span(tok_spans *s, size_t start, size_t len) {
  if (len == 0) return 0;
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    tok_span *v = realloc(s->v, cap * sizeof *v);
    if (!v) return mf_fail("tokenizer: out of memory");
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = (tok_span){start, len};
  return 0;
}

/* Appends the pieces of span sp (offsets into text) that one split makes. */
static int split_span(const tok_split *sp, const char *text, tok_span span, pcre2_match_data *md,
                      tok_spans *out) {
  const char *s = text + span.start;
  size_t len = span.len, prev = 0, pos = 0, pending = (size_t)-1;
  size_t first_piece = out->n;
  while (pos < len) {
    int rc = pcre2_match(sp->re, (PCRE2_SPTR)s, len, pos, 0, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) return mf_fail("tokenizer: regex match failed (PCRE2 error %d)", rc);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t ms = ov[0], me = ov[1];
    if (me == ms) { /* an empty match splits nothing */
      pos = ms + tok_utf8_len(s + ms, len - ms);
      continue;
    }
    size_t base = span.start;
    switch (sp->behavior) {
    case SPLIT_ISOLATED:
      if (push_span(out, base + prev, ms - prev) || push_span(out, base + ms, me - ms)) return -1;
      break;
    case SPLIT_REMOVED:
      if (push_span(out, base + prev, ms - prev)) return -1;
      break;
    case SPLIT_MERGED_PREV:
      if (ms > prev) {
        if (push_span(out, base + prev, me - prev)) return -1;
      } else if (out->n > first_piece && out->v[out->n - 1].start + out->v[out->n - 1].len == base + ms) {
        out->v[out->n - 1].len += me - ms;
      } else if (push_span(out, base + ms, me - ms)) {
        return -1;
      }
      break;
    case SPLIT_MERGED_NEXT: {
      size_t from = pending != (size_t)-1 ? pending : prev;
      if (ms > from && push_span(out, base + from, ms - from)) return -1;
      pending = ms;
      break;
    }
    }
    prev = pos = me;
  }
  size_t from = sp->behavior == SPLIT_MERGED_NEXT && pending != (size_t)-1 ? pending : prev;
  return push_span(out, span.start + from, len - from);
}

int tok_pretokenize(const tok_split *splits, int nsplits, const char *text, size_t len,
                    pcre2_match_data *md, tok_spans *out, tok_spans *tmp) {
  out->n = 0;
  if (push_span(out, 0, len)) return -1;
  for (int i = 0; i < nsplits; i++) {
    tmp->n = 0;
    for (size_t j = 0; j < out->n; j++)
      if (split_span(&splits[i], text, out->v[j], md, tmp)) return -1;
    tok_spans swap = *out;
    *out = *tmp;
    *tmp = swap;
  }
  return 0;
}
