/*
 * Loading HF tokenizer.json (and the tokenizer_config.json beside it).
 *
 * Understood: model BPE (vocab, merges as "a b" strings or [a, b] pairs,
 * byte_fallback, ignore_merges, fuse_unk, unk_token); model WordPiece
 * (vocab, unk_token, continuing_subword_prefix, max_input_chars_per_word)
 * with normalizer BertNormalizer and pre-tokenizer BertPreTokenizer
 * (engine/wordpiece.c); added_tokens;
 * normalizers Prepend, Replace (string patterns), NFC (taken as already
 * satisfied: the text is assumed NFC, as nearly all text is) and Sequence;
 * pre-tokenizers ByteLevel, Split (regex or string), Digits, Metaspace and
 * Sequence; post-processors TemplateProcessing, RobertaProcessing,
 * BertProcessing (the ids around a single text), others add nothing;
 * decoders: a Strip of one leading space or a Metaspace decoder make decode
 * drop the space the normalizer added. Anything else is an error naming the
 * key, rather than a tokenizer that silently encodes differently.
 *
 * From tokenizer_config.json: chat_template, bos/eos/pad tokens and
 * add_bos_token / add_eos_token.
 */
#define _GNU_SOURCE
#include "tokenizer.h"
#include "internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader {
  const char *path;
  json_t *root;
  mf_tokenizer *t;
} loader;

static const char *str_or(json_t *obj, const char *key, const char *fallback) {
  json_t *v = json_object_get(obj, key);
  return json_is_string(v) ? json_string_value(v) : fallback;
}

static int bool_or(json_t *obj, const char *key, int fallback) {
  json_t *v = json_object_get(obj, key);
  return json_is_boolean(v) ? json_is_true(v) : fallback;
}

static json_t *need(const loader *L, json_t *obj, const char *key, int type, const char *where) {
  json_t *v = json_object_get(obj, key);
  if (!v || (int)json_typeof(v) != type) {
    static const char *names[] = {"an object", "an array", "a string", "an integer", "a number",
                                  "a boolean", "a boolean", "null"};
    mf_fail("%s: %s%s must be %s", L->path, where, key, names[type]);
    return NULL;
  }
  return v;
}

/* ---- vocabulary, added tokens, merges ---- */

static int32_t vocab_size(const loader *L, json_t *vocab, json_t *added) {
  int64_t top = -1;
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= INT32_MAX)
      return mf_fail("%s: model.vocab['%s'] must be a non-negative integer id", L->path, key);
    if (json_integer_value(v) > top) top = json_integer_value(v);
  }
  size_t i;
  json_array_foreach(added, i, v) {
    json_t *id = json_object_get(v, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX)
      return mf_fail("%s: added_tokens[%zu].id must be a non-negative integer", L->path, i);
    if (json_integer_value(id) > top) top = json_integer_value(id);
  }
  return (int32_t)(top + 1);
}

static int set_vocab(const loader *L, json_t *vocab, json_t *added) {
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    if (tok_set(L->t, (int32_t)json_integer_value(v), key, strlen(key), 0)) return -1;
  }
  size_t i;
  json_array_foreach(added, i, v) {
    json_t *content = json_object_get(v, "content");
    if (!json_is_string(content)) return mf_fail("%s: added_tokens[%zu].content must be a string", L->path, i);
    unsigned flags = TOK_ADDED | (bool_or(v, "special", 0) ? TOK_SPECIAL : 0) |
                     (bool_or(v, "lstrip", 0) ? TOK_LSTRIP : 0) | (bool_or(v, "rstrip", 0) ? TOK_RSTRIP : 0) |
                     (bool_or(v, "single_word", 0) ? TOK_SINGLE_WORD : 0);
    if (tok_set(L->t, (int32_t)json_integer_value(json_object_get(v, "id")), json_string_value(content),
                json_string_length(content), flags))
      return -1;
  }
  return 0;
}

static int add_merges(const loader *L, json_t *merges) {
  size_t i;
  json_t *m;
  char where[4200];
  snprintf(where, sizeof where, "%s: model.merges", L->path);
  json_array_foreach(merges, i, m) {
    const char *a, *b;
    size_t alen, blen;
    if (json_is_string(m)) {
      a = json_string_value(m);
      const char *space = strchr(a, ' ');
      if (!space || strchr(space + 1, ' '))
        return mf_fail("%s[%zu]: '%s' is not two tokens separated by one space", where, i, a);
      alen = (size_t)(space - a);
      b = space + 1;
      blen = strlen(b);
    } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
               json_is_string(json_array_get(m, 1))) {
      a = json_string_value(json_array_get(m, 0));
      alen = json_string_length(json_array_get(m, 0));
      b = json_string_value(json_array_get(m, 1));
      blen = json_string_length(json_array_get(m, 1));
    } else {
      return mf_fail("%s[%zu] must be a string \"a b\" or a pair [a, b]", where, i);
    }
    if (tok_merge_texts(L->t, a, alen, b, blen, where)) return -1;
  }
  return 0;
}

/* ---- normalizer ---- */

static int add_normalizer(const loader *L, json_t *n, const char *where) {
  if (!n || json_is_null(n)) return 0;
  const char *type = str_or(n, "type", "");
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = need(L, n, "normalizers", JSON_ARRAY, where);
    size_t i;
    json_t *v;
    if (!list) return -1;
    json_array_foreach(list, i, v) if (add_normalizer(L, v, where)) return -1;
    return 0;
  }
  if (strcmp(type, "NFC") == 0) return 0;
  if (strcmp(type, "BertNormalizer") == 0) {
    int lowercase = bool_or(n, "lowercase", 1);
    L->t->bert_norm = (bool_or(n, "clean_text", 1) ? BERT_CLEAN_TEXT : 0) |
                      (bool_or(n, "handle_chinese_chars", 1) ? BERT_CHINESE_CHARS : 0) |
                      (bool_or(n, "strip_accents", lowercase) ? BERT_STRIP_ACCENTS : 0) |
                      (lowercase ? BERT_LOWERCASE : 0);
    return 0;
  }
  if (strcmp(type, "Prepend") == 0) {
    json_t *p = need(L, n, "prepend", JSON_STRING, "normalizer.");
    return p ? tok_add_norm(L->t, NORM_PREPEND, NULL, json_string_value(p), 0, 0) : -1;
  }
  if (strcmp(type, "Replace") == 0) {
    const char *from = str_or(json_object_get(n, "pattern"), "String", NULL);
    json_t *to = need(L, n, "content", JSON_STRING, "normalizer.");
    if (!from) return mf_fail("%s: normalizer Replace: only string patterns are supported", L->path);
    return to ? tok_add_norm(L->t, NORM_REPLACE, from, json_string_value(to), 0, 0) : -1;
  }
  return mf_fail("%s: normalizer type '%s' is not supported", L->path, type);
}

/* ---- pre-tokenizer ---- */

static int split_behavior(const loader *L, const char *name) {
  static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"};
  for (int i = 0; i < 4; i++)
    if (strcmp(name, names[i]) == 0) return i;
  return mf_fail("%s: pre_tokenizer Split behavior '%s' is not supported", L->path, name);
}

static int add_split(const loader *L, json_t *p, const char *where) {
  json_t *pattern = json_object_get(p, "pattern");
  const char *regex = str_or(pattern, "Regex", NULL), *literal = str_or(pattern, "String", NULL);
  int behavior = split_behavior(L, str_or(p, "behavior", ""));
  if (behavior < 0) return -1;
  if (bool_or(p, "invert", 0)) return mf_fail("%s: pre_tokenizer Split with invert is not supported", L->path);
  if (regex) return tok_add_split(L->t, regex, behavior, where);
  if (!literal) return mf_fail("%s: pre_tokenizer Split needs pattern.Regex or pattern.String", L->path);
  tok_buf quoted = {0};
  int rc = tok_buf_put(&quoted, "\\Q", 2) || tok_buf_put(&quoted, literal, strlen(literal)) ||
           tok_buf_put(&quoted, "\\E", 2) ? -1 : tok_add_split(L->t, quoted.data, behavior, where);
  tok_buf_free(&quoted);
  return rc;
}

static int add_metaspace(const loader *L, json_t *p) {
  const char *rep = str_or(p, "replacement", "\xE2\x96\x81");
  const char *scheme = str_or(p, "prepend_scheme", bool_or(p, "add_prefix_space", 1) ? "always" : "never");
  if (strcmp(rep, "\xE2\x96\x81") != 0)
    return mf_fail("%s: pre_tokenizer Metaspace replacement '%s' is not supported", L->path, rep);
  if (tok_add_norm(L->t, NORM_REPLACE, " ", rep, 0, 0)) return -1;
  if (strcmp(scheme, "never") != 0 &&
      tok_add_norm(L->t, NORM_PREPEND, NULL, rep, strcmp(scheme, "first") == 0, 1))
    return -1;
  return bool_or(p, "split", 1) ? tok_add_split(L->t, TOK_RE_METASPACE, SPLIT_ISOLATED, L->path) : 0;
}

static int add_pretokenizer(const loader *L, json_t *p, int first) {
  if (!p || json_is_null(p)) return 0;
  const char *type = str_or(p, "type", "");
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = need(L, p, "pretokenizers", JSON_ARRAY, "pre_tokenizer.");
    size_t i;
    json_t *v;
    if (!list) return -1;
    json_array_foreach(list, i, v) if (add_pretokenizer(L, v, first && i == 0)) return -1;
    return 0;
  }
  if (strcmp(type, "ByteLevel") == 0) {
    if (bool_or(p, "add_prefix_space", 0)) {
      if (!first) return mf_fail("%s: ByteLevel add_prefix_space after another pre-tokenizer is not supported", L->path);
      if (tok_add_norm(L->t, NORM_PREPEND, NULL, " ", 0, 1)) return -1;
    }
    return bool_or(p, "use_regex", 1) ? tok_add_split(L->t, TOK_RE_GPT2, SPLIT_ISOLATED, L->path) : 0;
  }
  if (strcmp(type, "Split") == 0) return add_split(L, p, L->path);
  if (strcmp(type, "Digits") == 0)
    return tok_add_split(L->t, bool_or(p, "individual_digits", 0) ? TOK_RE_DIGIT : "\\p{N}+",
                         SPLIT_ISOLATED, L->path);
  if (strcmp(type, "Metaspace") == 0) return add_metaspace(L, p);
  if (strcmp(type, "BertPreTokenizer") == 0) return tok_add_bert_pretokenizer(L->t, L->path);
  return mf_fail("%s: pre_tokenizer type '%s' is not supported", L->path, type);
}

/* ---- post-processor and decoder ---- */

static int template_ids(const loader *L, json_t *post) {
  json_t *single = need(L, post, "single", JSON_ARRAY, "post_processor.");
  json_t *specials = json_object_get(post, "special_tokens");
  if (!single) return -1;
  mf_tokenizer *t = L->t;
  int after = 0;
  size_t i;
  json_t *piece;
  json_array_foreach(single, i, piece) {
    json_t *sp = json_object_get(piece, "SpecialToken");
    if (!sp) {
      after = 1;
      continue;
    }
    const char *name = str_or(sp, "id", "");
    json_t *ids = json_object_get(json_object_get(specials, name), "ids");
    if (!json_is_array(ids))
      return mf_fail("%s: post_processor.special_tokens['%s'].ids must be an array", L->path, name);
    size_t k;
    json_t *id;
    json_array_foreach(ids, k, id) {
      int *n = after ? &t->nsuffix : &t->nprefix;
      int32_t *dst = after ? t->suffix : t->prefix;
      if (*n == 4) return mf_fail("%s: post_processor adds more than 4 tokens", L->path);
      dst[(*n)++] = (int32_t)json_integer_value(id);
    }
  }
  return 0;
}

/* RobertaProcessing / BertProcessing: {"cls": [text, id], "sep": [text, id]}. */
static int cls_sep_ids(const loader *L, json_t *post) {
  json_t *cls = json_array_get(json_object_get(post, "cls"), 1);
  json_t *sep = json_array_get(json_object_get(post, "sep"), 1);
  if (!json_is_integer(cls) || !json_is_integer(sep))
    return mf_fail("%s: post_processor.cls and .sep must be [token, id]", L->path);
  L->t->prefix[L->t->nprefix++] = (int32_t)json_integer_value(cls);
  L->t->suffix[L->t->nsuffix++] = (int32_t)json_integer_value(sep);
  return 0;
}

static int add_post_processor(const loader *L, json_t *post) {
  const char *type = str_or(post, "type", "");
  if (strcmp(type, "Sequence") == 0) {
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(post, "processors"), i, v) if (add_post_processor(L, v)) return -1;
    return 0;
  }
  if (strcmp(type, "TemplateProcessing") == 0) return template_ids(L, post);
  if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) return cls_sep_ids(L, post);
  return 0;
}

static int decoder_strips_space(json_t *d) {
  const char *type = str_or(d, "type", "");
  if (strcmp(type, "Sequence") == 0) {
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(d, "decoders"), i, v) if (decoder_strips_space(v)) return 1;
    return 0;
  }
  if (strcmp(type, "Strip") == 0)
    return strcmp(str_or(d, "content", ""), " ") == 0 && json_integer_value(json_object_get(d, "start")) >= 1;
  if (strcmp(type, "Metaspace") == 0)
    return strcmp(str_or(d, "prepend_scheme", bool_or(d, "add_prefix_space", 1) ? "always" : "never"), "never") != 0;
  return 0;
}

/* ---- the model ---- */

static int is_byte_level(json_t *root) {
  json_t *pre = json_object_get(root, "pre_tokenizer"), *dec = json_object_get(root, "decoder");
  if (strcmp(str_or(dec, "type", ""), "ByteLevel") == 0 || strcmp(str_or(pre, "type", ""), "ByteLevel") == 0)
    return 1;
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(pre, "pretokenizers"), i, v) {
    if (strcmp(str_or(v, "type", ""), "ByteLevel") == 0) return 1;
  }
  return 0;
}

static int check_model_options(const loader *L, json_t *model) {
  const char *prefix = str_or(model, "continuing_subword_prefix", ""), *suffix = str_or(model, "end_of_word_suffix", "");
  json_t *dropout = json_object_get(model, "dropout");
  if (*prefix || *suffix)
    return mf_fail("%s: model.continuing_subword_prefix / end_of_word_suffix are not supported", L->path);
  if (dropout && !json_is_null(dropout)) return mf_fail("%s: model.dropout is not supported", L->path);
  return 0;
}

/* WordPiece's options; its unknown token is required (checked in build). */
static int wordpiece_options(const loader *L, json_t *model) {
  const char *prefix = str_or(model, "continuing_subword_prefix", "##");
  json_t *max = json_object_get(model, "max_input_chars_per_word");
  if (strlen(prefix) >= sizeof L->t->subword_prefix)
    return mf_fail("%s: model.continuing_subword_prefix '%s' is too long", L->path, prefix);
  if (max && (!json_is_integer(max) || json_integer_value(max) < 1 || json_integer_value(max) > 1000000))
    return mf_fail("%s: model.max_input_chars_per_word must be a positive integer", L->path);
  strcpy(L->t->subword_prefix, prefix);
  L->t->max_word_chars = max ? (int)json_integer_value(max) : 100;
  L->t->wordpiece = 1;
  return 0;
}

static int build(loader *L) {
  json_t *root = L->root;
  json_t *model = need(L, root, "model", JSON_OBJECT, "");
  if (!model) return -1;
  const char *type = str_or(model, "type", "BPE");
  int wordpiece = strcmp(type, "WordPiece") == 0;
  if (!wordpiece && strcmp(type, "BPE") != 0)
    return mf_fail("%s: model.type '%s' is not supported (BPE or WordPiece)", L->path, type);
  json_t *vocab = need(L, model, "vocab", JSON_OBJECT, "model.");
  json_t *merges = wordpiece ? NULL : need(L, model, "merges", JSON_ARRAY, "model.");
  json_t *added = json_object_get(root, "added_tokens");
  if (!vocab || (!wordpiece && (!merges || check_model_options(L, model)))) return -1;
  if (added && !json_is_array(added)) return mf_fail("%s: added_tokens must be an array", L->path);
  int32_t n = vocab_size(L, vocab, added);
  if (n < 0 || !(L->t = tok_alloc(n, is_byte_level(root)))) return -1;
  mf_tokenizer *t = L->t;
  t->byte_fallback = bool_or(model, "byte_fallback", 0);
  t->ignore_merges = bool_or(model, "ignore_merges", 0);
  t->fuse_unk = bool_or(model, "fuse_unk", 0);
  t->strip_space = wordpiece || decoder_strips_space(json_object_get(root, "decoder"));
  if ((wordpiece && wordpiece_options(L, model)) || set_vocab(L, vocab, added) || tok_finish(t, L->path) ||
      (merges && add_merges(L, merges)) ||
      add_normalizer(L, json_object_get(root, "normalizer"), "normalizer.") ||
      add_pretokenizer(L, json_object_get(root, "pre_tokenizer"), 1) ||
      add_post_processor(L, json_object_get(root, "post_processor")))
    return -1;
  const char *unk = str_or(model, "unk_token", NULL);
  if (unk && tok_require(t, unk, strlen(unk), &t->unk_id, L->path)) return -1;
  if (wordpiece && t->unk_id < 0) return mf_fail("%s: model.unk_token is required for WordPiece", L->path);
  for (int i = 0; i < t->nprefix + t->nsuffix; i++) {
    int32_t id = i < t->nprefix ? t->prefix[i] : t->suffix[i - t->nprefix];
    if (id < 0 || id >= t->n) return mf_fail("%s: post_processor id %d is not in the vocabulary", L->path, (int)id);
  }
  t->bos_id = t->nprefix ? t->prefix[0] : -1;
  t->eos_id = t->nsuffix ? t->suffix[t->nsuffix - 1] : -1;
  return 0;
}

/* ---- tokenizer_config.json ---- */

/* bos_token etc. are a string or an AddedToken object {"content": ...}. */
static int config_token(const loader *L, json_t *cfg, const char *key, int32_t *id) {
  json_t *v = json_object_get(cfg, key);
  const char *s = json_is_string(v) ? json_string_value(v) : str_or(v, "content", NULL);
  if (!s) return 0;
  char where[4200];
  snprintf(where, sizeof where, "%s: %s", L->path, key);
  return tok_require(L->t, s, strlen(s), id, where);
}

static const char *config_template(json_t *cfg) {
  json_t *v = json_object_get(cfg, "chat_template");
  if (json_is_string(v)) return json_string_value(v);
  size_t i;
  json_t *named;
  json_array_foreach(v, i, named) {
    if (strcmp(str_or(named, "name", ""), "default") == 0) return str_or(named, "template", NULL);
  }
  return NULL;
}

/* add_bos_token / add_eos_token switch the id at the front / back. */
static void toggle_edge(int32_t *ids, int *n, int32_t id, int want, int at_front) {
  int idx = at_front ? 0 : *n - 1;
  int present = *n > 0 && ids[idx] == id;
  if (want < 0 || id < 0 || want == present || (want && *n == 4)) return;
  if (want) {
    if (at_front) memmove(ids + 1, ids, (size_t)*n * sizeof *ids);
    ids[at_front ? 0 : *n] = id;
    (*n)++;
  } else {
    if (at_front) memmove(ids, ids + 1, (size_t)(*n - 1) * sizeof *ids);
    (*n)--;
  }
}

static int apply_config(loader *L, const char *config_path) {
  json_error_t err;
  json_t *cfg = json_load_file(config_path, 0, &err);
  if (!cfg) return mf_fail("%s: line %d: %s", config_path, err.line, err.text);
  const char *saved = L->path;
  L->path = config_path;
  mf_tokenizer *t = L->t;
  int rc = config_token(L, cfg, "bos_token", &t->bos_id) || config_token(L, cfg, "eos_token", &t->eos_id) ||
           config_token(L, cfg, "pad_token", &t->pad_id) ? -1 : 0;
  const char *tmpl = config_template(cfg);
  if (rc == 0 && tmpl && !(t->chat_template = strdup(tmpl))) rc = mf_fail("tokenizer: out of memory");
  json_t *bos = json_object_get(cfg, "add_bos_token"), *eos = json_object_get(cfg, "add_eos_token");
  toggle_edge(t->prefix, &t->nprefix, t->bos_id, json_is_boolean(bos) ? json_is_true(bos) : -1, 1);
  toggle_edge(t->suffix, &t->nsuffix, t->eos_id, json_is_boolean(eos) ? json_is_true(eos) : -1, 0);
  L->path = saved;
  json_decref(cfg);
  return rc;
}

mf_tokenizer *tok_load_json(const char *path, const char *config_path) {
  json_error_t err;
  loader L = {path, NULL, NULL};
  L.root = json_load_file(path, 0, &err);
  if (!L.root) return mf_fail_null("%s: line %d: %s", path, err.line, err.text);
  int rc = json_is_object(L.root) ? build(&L) : mf_fail("%s: not a JSON object", path);
  if (rc == 0 && config_path) rc = apply_config(&L, config_path);
  json_decref(L.root);
  if (rc) {
    mf_tokenizer_free(L.t);
    return NULL;
  }
  return L.t;
}
