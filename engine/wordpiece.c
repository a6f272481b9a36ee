/*
 * WordPiece tokenization as BERT and HF tokenizers do it: the BERT
 * normalizer, the BERT pre-tokenizer (as two splits) and greedy
 * longest-match-first splitting of each word into vocabulary pieces.
 *
 * Normalizer (BertNormalizer), per code point and in HF's order:
 *   clean text      drop NUL, U+FFFD and "other" characters (Cc Cf Cn Co
 *                   Cs) except tab, newline and return; whitespace -> ' '
 *   Chinese chars   put spaces around CJK ideographs, so each is a word
 *   strip accents   canonical decomposition, then drop nonspacing marks
 *   lowercase       Unicode's full lowercase mapping
 * Each step maps one code point to a few, so applying all four to each
 * code point in turn equals applying each to the whole text in turn.
 *
 * Words: a word longer than max_word_chars code points is the unknown
 * token. Otherwise, from the start, the longest prefix that is in the
 * vocabulary is taken (pieces after the first are looked up with the
 * continuing-subword prefix, "##"), and so on; if some remainder has no
 * piece at all, the whole word is the unknown token.
 */
#include "tokenizer.h"
#include "internal.h"
#include "wordpiece.h"

#include <stdlib.h>
#include <string.h>

/* ---- Unicode lookups ---- */

static int in_ranges(const wp_range *r, int n, uint32_t cp) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (cp < r[mid].lo) hi = mid - 1;
    else if (cp > r[mid].hi) lo = mid + 1;
    else return 1;
  }
  return 0;
}

/* The replacement of cp in map m, or NULL when cp maps to itself. */
static const uint32_t *mapped(const wp_map *m, int n, uint32_t cp) {
  int lo = 0, hi = n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (cp < m[mid].cp) hi = mid - 1;
    else if (cp > m[mid].cp) lo = mid + 1;
    else return m[mid].to;
  }
  return NULL;
}

/* The CJK blocks BERT's original tokenizer isolates (not all of CJK:
 * Japanese kana and Hangul are written with spaces and stay in words). */
static int is_cjk(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) ||
         (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* ---- normalizer ---- */

static int put_lowered(const mf_tokenizer *t, uint32_t cp, tok_buf *out) {
  const uint32_t *to = (t->bert_norm & BERT_LOWERCASE) ? mapped(wp_lower_map, wp_lower_map_count, cp) : NULL;
  if (!to) return tok_put_utf8(out, cp);
  for (int i = 0; i < 3 && to[i]; i++)
    if (tok_put_utf8(out, to[i])) return -1;
  return 0;
}

/* Hangul syllables decompose by formula (Unicode 3.12) into two or three
 * jamo, none of them marks. */
static int put_hangul(const mf_tokenizer *t, uint32_t cp, tok_buf *out) {
  uint32_t s = cp - 0xAC00, l = 0x1100 + s / 588, v = 0x1161 + (s % 588) / 28, tj = 0x11A7 + s % 28;
  return put_lowered(t, l, out) || put_lowered(t, v, out) || (tj != 0x11A7 && put_lowered(t, tj, out)) ? -1 : 0;
}

static int put_stripped(const mf_tokenizer *t, uint32_t cp, tok_buf *out) {
  if (!(t->bert_norm & BERT_STRIP_ACCENTS)) return put_lowered(t, cp, out);
  if (in_ranges(wp_nonspacing_marks, wp_nonspacing_marks_count, cp)) return 0;
  if (cp >= 0xAC00 && cp <= 0xD7A3) return put_hangul(t, cp, out);
  const uint32_t *to = mapped(wp_strip_map, wp_strip_map_count, cp);
  if (!to) return put_lowered(t, cp, out);
  for (int i = 0; i < 3 && to[i]; i++)
    if (put_lowered(t, to[i], out)) return -1;
  return 0;
}

static int put_char(const mf_tokenizer *t, uint32_t cp, tok_buf *out) {
  if (t->bert_norm & BERT_CLEAN_TEXT) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return tok_buf_put(out, " ", 1);
    if (cp == 0 || cp == 0xFFFD || in_ranges(wp_other_chars, wp_other_chars_count, cp)) return 0;
    if (tok_is_space(cp)) return tok_buf_put(out, " ", 1);
  }
  if ((t->bert_norm & BERT_CHINESE_CHARS) && is_cjk(cp))
    return tok_buf_put(out, " ", 1) || put_stripped(t, cp, out) || tok_buf_put(out, " ", 1) ? -1 : 0;
  return put_stripped(t, cp, out);
}

int tok_bert_normalize(const mf_tokenizer *t, const char *s, size_t len, tok_buf *out) {
  out->len = 0;
  if (tok_buf_put(out, "", 0)) return -1;
  for (size_t i = 0; i < len;) {
    size_t n = tok_utf8_len(s + i, len - i);
    /* a byte that is not UTF-8 reads as U+FFFD, as a lossy decoder makes it */
    uint32_t cp = n == 1 && (unsigned char)s[i] >= 0x80 ? 0xFFFD : tok_utf8_decode(s + i, n);
    if (put_char(t, cp, out)) return -1;
    i += n;
  }
  return 0;
}

/* BertPreTokenizer: whitespace separates words and is dropped; each
 * punctuation character (Unicode P*, or any ASCII symbol) is a word. */
int tok_add_bert_pretokenizer(mf_tokenizer *t, const char *where) {
  return tok_add_split(t, "\\s+", SPLIT_REMOVED, where) ||
         tok_add_split(t, "[\\p{P}!-/:-@\\[-`{-~]", SPLIT_ISOLATED, where) ? -1 : 0;
}

/* ---- words ---- */

static size_t count_chars(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i += tok_utf8_len(s + i, len - i)) n++;
  return n;
}

/* The id of the longest vocabulary piece of word[start, end) that begins at
 * start (with the subword prefix unless start is 0); *end moves to where it
 * stops. -1 when none. key holds prefix + piece. */
static int32_t longest_piece(const mf_tokenizer *t, const char *word, size_t start, size_t *end, char *key) {
  size_t plen = start ? strlen(t->subword_prefix) : 0;
  memcpy(key, t->subword_prefix, plen);
  memcpy(key + plen, word + start, *end - start);
  while (*end > start) {
    int32_t id = tok_strmap_get(&t->by_text, key, plen + *end - start);
    if (id >= 0) return id;
    do (*end)--; while (*end > start && ((unsigned char)word[*end] & 0xC0) == 0x80);
  }
  return -1;
}

int tok_wordpiece_word(const mf_tokenizer *t, const char *word, size_t len, tok_emit *e) {
  if (count_chars(word, len) > (size_t)t->max_word_chars) {
    tok_emit_id(e, t->unk_id);
    return 0;
  }
  char small[512];
  size_t need = strlen(t->subword_prefix) + len;
  char *key = need <= sizeof small ? small : malloc(need);
  if (!key) return mf_fail("tokenizer: out of memory for a word of %zu bytes", len);
  int64_t first = e->n;
  for (size_t start = 0; start < len;) {
    size_t end = len;
    int32_t id = longest_piece(t, word, start, &end, key);
    if (id < 0) { /* the whole word is unknown: take back its pieces */
      e->n = first;
      id = t->unk_id;
      end = len;
    }
    tok_emit_id(e, id);
    start = end;
  }
  if (key != small) free(key);
  return 0;
}

int tok_wordpiece_bytes(const mf_tokenizer *t, const char *text, size_t len, tok_buf *out) {
  size_t plen = strlen(t->subword_prefix);
  if (len >= plen && memcmp(text, t->subword_prefix, plen) == 0) return tok_buf_put(out, text + plen, len - plen);
  return tok_buf_put(out, " ", 1) || tok_buf_put(out, text, len) ? -1 : 0;
}
