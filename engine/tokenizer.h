/*
 * Tokenizers inside the engine: the one representation behind
 * mf_tokenizer_*, shared by its loaders (tokenizer.json, GGUF), the trainer
 * and the encoder.
 *
 * A tokenizer is a BPE vocabulary in one of two styles, or a WordPiece
 * vocabulary (BERT; wordpiece.c):
 * - byte-level (GPT-2, Llama 3, Qwen, SmolLM): token text is spelled in
 *   GPT-2's byte alphabet; the encoder works on raw bytes, so every input
 *   byte has a token and nothing is lost;
 * - SentencePiece-style (Llama 2, Mistral): token text is UTF-8 with "▁" for
 *   a space; characters missing from the vocabulary fall back to <0xXX>
 *   byte tokens (or the unknown token);
 * - WordPiece: BERT's normalizer, then each word split greedily into the
 *   longest vocabulary pieces ("##" marks pieces that continue a word).
 * Encoding runs: added tokens split out first, then per plain segment the
 * normalizer steps, the pre-tokenizer splits (PCRE2 regexes) and BPE per
 * word (merge ranks in a hash map, a heap per word, a word -> ids cache).
 *
 * Loaders build one with tok_alloc, tok_set (every id), tok_finish, then
 * tok_merge_texts, tok_add_norm and tok_add_split (in the order they apply).
 */
#ifndef MF_TOKENIZER_H
#define MF_TOKENIZER_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "moonforge.h"

/* ---- growable byte buffers ---- */
typedef struct tok_buf { char *data; size_t len, cap; } tok_buf;
int tok_buf_put(tok_buf *b, const void *p, size_t n);
void tok_buf_free(tok_buf *b);

/* ---- byte string -> int32 map; keys are copied into the map ---- */
typedef struct tok_strslot { uint64_t hash; uint32_t off, len; int32_t value; } tok_strslot;
typedef struct tok_strmap { tok_strslot *slots; size_t mask, count; tok_buf keys; } tok_strmap;
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t value);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len); /* -1: absent */
void tok_strmap_clear(tok_strmap *m);
void tok_strmap_free(tok_strmap *m);
uint64_t tok_hash(const char *key, size_t len);

/* ---- (left id, right id) -> merge ---- */
typedef struct tok_merge { int32_t rank, id; } tok_merge;
typedef struct tok_pairslot { uint64_t key; tok_merge merge; } tok_pairslot;
typedef struct tok_pairmap { tok_pairslot *slots; size_t mask, count; } tok_pairmap;
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, tok_merge merge);
const tok_merge *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b);
void tok_pairmap_free(tok_pairmap *m);

/* ---- GPT-2's byte alphabet ---- */
/* The code point that spells byte b in byte-level token text. */
uint32_t tok_byte_char(uint8_t b);
/* Token text in the byte alphabet to raw bytes (characters outside the
 * alphabet are kept as they are). */
int tok_unspell(const char *text, size_t len, tok_buf *out);
/* Raw bytes to token text in the byte alphabet. */
int tok_spell(const char *bytes, size_t len, tok_buf *out);
/* Length of the UTF-8 sequence starting at p (1 for an invalid byte). */
size_t tok_utf8_len(const char *p, size_t left);
/* The code point at p, whose UTF-8 length (from tok_utf8_len) is n. */
uint32_t tok_utf8_decode(const char *p, size_t n);
/* Appends code point cp as UTF-8. */
int tok_put_utf8(tok_buf *b, uint32_t cp);
/* Unicode White_Space (what Rust's char::is_whitespace takes). */
int tok_is_space(uint32_t cp);

/* ---- token flags ---- */
enum {
  TOK_SPECIAL = 1,     /* special added token: split only when asked, skippable in decode */
  TOK_ADDED = 2,       /* added token: matched whole in the text before BPE */
  TOK_LSTRIP = 4,      /* added token absorbs the whitespace before it */
  TOK_RSTRIP = 8,      /* ... and after it */
  TOK_SINGLE_WORD = 16 /* added token matches only between word boundaries */
};

/* ---- normalizer steps and pre-tokenizer splits ---- */
enum { NORM_PREPEND, NORM_REPLACE };
typedef struct tok_norm {
  int kind;
  char *from, *to;     /* REPLACE: every occurrence of from becomes to; PREPEND: to */
  int first_only;      /* PREPEND only to the segment that starts the text */
  int unless_present;  /* PREPEND only when the segment does not start with it */
} tok_norm;

enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT };
typedef struct tok_split { pcre2_code *re; int behavior; } tok_split;

/* The pre-tokenizer patterns of the known families (Oniguruma syntax in
 * tokenizer.json; PCRE2 reads them the same). */
extern const char TOK_RE_GPT2[], TOK_RE_LLAMA3[], TOK_RE_QWEN2[], TOK_RE_DIGIT[], TOK_RE_METASPACE[];

struct mf_tokenizer {
  int byte_level;
  int byte_fallback;   /* SentencePiece: unknown characters become <0xXX> tokens */
  int ignore_merges;   /* a word that is a token is that token (Llama 3) */
  int fuse_unk;        /* consecutive unknown characters give one unknown token */
  int strip_space;     /* decoding drops one leading space (the normalizer added it) */
  int32_t unk_id, bos_id, eos_id, pad_id;
  int32_t n;           /* ids 0 .. n-1 */
  tok_buf strings;     /* token texts and decoded bytes */
  uint32_t *text_off, *text_len, *dec_off, *dec_len;
  uint8_t *flags;
  tok_strmap by_text;  /* token text -> id */
  tok_strmap by_piece; /* what BPE sees (raw bytes or SentencePiece text) -> id */
  tok_pairmap merges;
  int32_t nmerges;
  int32_t byte_id[256];  /* byte-level: the one-byte token; SentencePiece: <0xXX>; -1 */
  int32_t *added;        /* added token ids by (first byte, length descending) */
  int32_t nadded, added_start[257];
  tok_norm *norms;
  int nnorms;
  tok_split *splits;
  int nsplits;
  int32_t prefix[4], suffix[4]; /* ids added around the text with add_special */
  int nprefix, nsuffix;
  char *chat_template;
  int wordpiece;         /* WordPiece words (wordpiece.c) instead of BPE */
  unsigned bert_norm;    /* BERT_* normalizer steps (WordPiece vocabularies) */
  int max_word_chars;    /* WordPiece: longer words are the unknown token */
  char subword_prefix[8]; /* WordPiece: marks pieces that continue a word ("##") */
  pthread_mutex_t cache_lock;
  tok_strmap cache;      /* word -> offset of its ids in cache_ids */
  tok_buf cache_ids;
};

/* ---- building ---- */
mf_tokenizer *tok_alloc(int32_t n, int byte_level);
/* Sets token id's text (as the vocabulary spells it) and flags. */
int tok_set(mf_tokenizer *t, int32_t id, const char *text, size_t len, unsigned flags);
/* Adds the next merge (rank = merges so far) of two token texts. */
int tok_merge_texts(mf_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                    const char *where);
int tok_add_norm(mf_tokenizer *t, int kind, const char *from, const char *to, int first_only,
                 int unless_present);
int tok_add_split(mf_tokenizer *t, const char *pattern, int behavior, const char *where);
/* Compiles one split step (PCRE2, UTF + UCP, JIT). */
int tok_compile_split(const char *pattern, int behavior, tok_split *out, const char *where);
/* Checks every id has a token, builds the lookup tables. */
int tok_finish(mf_tokenizer *t, const char *where);
/* Sets *id to the id of token text s; a missing token is an error naming where. */
int tok_require(const mf_tokenizer *t, const char *s, size_t len, int32_t *id, const char *where);

/* ---- loaders (path already known to be of that kind) ---- */
mf_tokenizer *tok_load_json(const char *path, const char *config_path);
mf_tokenizer *tok_load_gguf(const char *path);

/* ---- pre-tokenization (tokenizer_pretok.c) ---- */
typedef struct tok_span { size_t start, len; } tok_span;
typedef struct tok_spans { tok_span *v; size_t n, cap; } tok_spans;
/* Applies the normalizer steps to one segment into out. */
int tok_normalize(const mf_tokenizer *t, const char *s, size_t len, int at_start, tok_buf *out);
/* Splits text into words with each split step in turn; out is reset. */
int tok_pretokenize(const tok_split *splits, int nsplits, const char *text, size_t len,
                    pcre2_match_data *md, tok_spans *out, tok_spans *tmp);

/* ---- BPE (tokenizer_bpe.c) ---- */
/* Where ids go: up to cap are stored, all are counted, so a caller whose
 * buffer was short learns the size it needs. */
typedef struct tok_emit { int32_t *out; int64_t cap, n; } tok_emit;
static inline void tok_emit_id(tok_emit *e, int32_t id) {
  if (e->n < e->cap) e->out[e->n] = id;
  e->n++;
}
/* Scratch memory of one encode call. */
typedef struct tok_sym { int32_t id, prev, next, len; } tok_sym;
typedef struct tok_cand { int32_t rank, pos, id; } tok_cand;
typedef struct tok_work {
  tok_sym *syms;
  tok_cand *heap;
  size_t syms_cap, heap_cap, nheap;
  tok_buf norm;
  tok_spans words, tmp;
  pcre2_match_data *md;
} tok_work;
void tok_work_free(tok_work *w);
/* Emits the ids of one pre-tokenized word (through the word cache). */
int tok_bpe_word(mf_tokenizer *t, const char *word, size_t len, tok_work *w, tok_emit *e);

/* ---- WordPiece (wordpiece.c) ---- */
enum { BERT_CLEAN_TEXT = 1, BERT_CHINESE_CHARS = 2, BERT_STRIP_ACCENTS = 4, BERT_LOWERCASE = 8 };
/* BERT's normalizer steps in t->bert_norm over one segment into out. */
int tok_bert_normalize(const mf_tokenizer *t, const char *s, size_t len, tok_buf *out);
/* BERT's pre-tokenizer as split steps. */
int tok_add_bert_pretokenizer(mf_tokenizer *t, const char *where);
/* Emits the ids of one pre-tokenized word. */
int tok_wordpiece_word(const mf_tokenizer *t, const char *word, size_t len, tok_emit *e);
/* What a vocabulary token decodes to: a continuing piece without its
 * prefix, any other piece after a space. */
int tok_wordpiece_bytes(const mf_tokenizer *t, const char *text, size_t len, tok_buf *out);

#endif
