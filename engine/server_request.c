/*
 * The server's JSON: request bodies checked and turned into srv_request
 * (prompts tokenized here, on the connection's thread), and replies, stream
 * chunks and errors shaped as OpenAI's API shapes them.
 *
 * Every fault in a body is a 400 (404 for an unknown model) with an
 * OpenAI-style error naming the parameter; nothing in a body can crash the
 * server or reach the model unchecked: ids are checked against the
 * vocabulary and prompts against the context here.
 *
 * With a RAG store, a chat's last user message is the query: the chunks
 * it finds go before the conversation as a system message (appended to
 * the first message when that is a system message already) and come back
 * as the reply's "sources" (in a stream, with its first chunk). A request
 * may name "top_k" or opt out with "retrieval": false.
 */
#include "server.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_EMBED_INPUTS = 256 };

typedef struct parse {
  mf_server *s;
  json_t *root;
  char *error;
  int status;
} parse;

char *srv_error_json(const char *message, const char *type, const char *param, const char *code) {
  json_t *e = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", message, "type", type, "param", param,
                        "code", code);
  char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
  json_decref(e);
  return text;
}

/* Records a 4xx for param and returns -1. */
static int bad(parse *p, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad(parse *p, int status, const char *param, const char *code, const char *fmt, ...) {
  char message[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  p->status = status;
  p->error = srv_error_json(message, "invalid_request_error", param, code);
  return -1;
}

/* ---- requests ---- */

static srv_request *request_new(srv_endpoint ep) {
  static uint64_t counter;
  srv_request *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  static const char *const prefixes[EP_COUNT] = {[EP_COMPLETIONS] = "cmpl", [EP_CHAT] = "chatcmpl",
                                                  [EP_EMBEDDINGS] = "embd"};
  r->endpoint = ep;
  r->end_id = -1;
  r->refs = 1;
  r->created = (int64_t)time(NULL);
  snprintf(r->id, sizeof r->id, "%s-%llx%08llx", prefixes[ep] ? prefixes[ep] : "req", (unsigned long long)r->created,
           (unsigned long long)__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
  pthread_cond_init(&r->changed, NULL);
  return r;
}

static void request_free(srv_request *r) {
  free(r->ids);
  free(r->offsets);
  for (int i = 0; i < r->nstop; i++) free(r->stop[i]);
  free(r->text);
  free(r->piece_ends);
  free(r->embeddings);
  free(r->error);
  json_decref(r->sources);
  pthread_cond_destroy(&r->changed);
  free(r);
}

void srv_request_release(mf_server *s, srv_request *r) {
  if (!r) return;
  pthread_mutex_lock(&s->lock);
  int last = --r->refs == 0;
  pthread_mutex_unlock(&s->lock);
  if (last) request_free(r);
}

/* ---- fields ---- */

static int number(parse *p, const char *key, double lo, double hi, double *out) {
  json_t *v = json_object_get(p->root, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_number(v)) return bad(p, 400, key, "invalid_type", "'%s' must be a number", key);
  double x = json_number_value(v);
  if (!(x >= lo && x <= hi)) return bad(p, 400, key, "invalid_value", "'%s' must be in [%g, %g], got %g", key, lo, hi, x);
  *out = x;
  return 0;
}

static int integer(parse *p, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  json_t *v = json_object_get(p->root, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_integer(v)) return bad(p, 400, key, "invalid_type", "'%s' must be an integer", key);
  int64_t x = json_integer_value(v);
  if (x < lo || x > hi)
    return bad(p, 400, key, "invalid_value", "'%s' must be in [%lld, %lld], got %lld", key, (long long)lo,
               (long long)hi, (long long)x);
  *out = x;
  return 0;
}

static int boolean(parse *p, const char *key, int *out) {
  json_t *v = json_object_get(p->root, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_boolean(v)) return bad(p, 400, key, "invalid_type", "'%s' must be true or false", key);
  *out = json_is_true(v);
  return 0;
}

static int model_name(parse *p) {
  json_t *v = json_object_get(p->root, "model");
  if (!v || json_is_null(v)) return 0;
  if (!json_is_string(v)) return bad(p, 400, "model", "invalid_type", "'model' must be a string");
  if (strcmp(json_string_value(v), p->s->name) != 0)
    return bad(p, 404, "model", "model_not_found", "the model '%s' does not exist; this server has '%s'",
               json_string_value(v), p->s->name);
  return 0;
}

static int stop_strings(parse *p, srv_request *r) {
  json_t *v = json_object_get(p->root, "stop"), *one;
  size_t i;
  if (!v || json_is_null(v)) return 0;
  json_t *list = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
  int rc = 0;
  if (!json_is_array(list) || json_array_size(list) > SRV_MAX_STOP)
    rc = bad(p, 400, "stop", "invalid_type", "'stop' must be a string or a list of up to %d strings", SRV_MAX_STOP);
  json_array_foreach(list, i, one) {
    if (rc) break;
    if (!json_is_string(one) || json_string_length(one) == 0)
      rc = bad(p, 400, "stop", "invalid_value", "stop[%zu] must be a non-empty string", i);
    else r->stop[r->nstop++] = strdup(json_string_value(one));
  }
  json_decref(list);
  return rc;
}

/* The sampling fields shared by completions and chat completions. */
static int sampling(parse *p, srv_request *r) {
  const mf_server_opts *o = &p->s->opts;
  int64_t max_tokens = o->default_max_tokens, n = 1, seed = 0;
  r->temperature = 1.0;
  r->top_p = 1.0;
  const char *max_key = json_object_get(p->root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  json_t *stream_options = json_object_get(p->root, "stream_options");
  if (stream_options && !json_is_null(stream_options) && !json_is_object(stream_options))
    return bad(p, 400, "stream_options", "invalid_type", "'stream_options' must be an object");
  r->include_usage = json_is_true(json_object_get(stream_options, "include_usage"));
  if (model_name(p) || integer(p, max_key, 1, o->max_tokens, &max_tokens) || integer(p, "n", 1, 1, &n) ||
      number(p, "temperature", 0, 2, &r->temperature) || number(p, "top_p", 1e-9, 1, &r->top_p) ||
      integer(p, "seed", INT64_MIN, INT64_MAX, &seed) || boolean(p, "stream", &r->stream) || stop_strings(p, r))
    return -1;
  r->max_tokens = (int)max_tokens;
  r->seed = (uint64_t)seed;
  return 0;
}

/* ---- prompts ---- */

static int64_t encode(mf_server *s, const char *text, size_t len, int32_t **ids) {
  int64_t cap = (int64_t)len + 16;
  for (;;) {
    int32_t *buf = malloc((size_t)cap * sizeof *buf);
    if (!buf) return -1;
    int64_t n = mf_tokenizer_encode(s->tok, text, len, 1, 0, buf, cap);
    if (n < 0 || n <= cap) {
      *ids = buf;
      return n;
    }
    free(buf);
    cap = n;
  }
}

/* Appends a token list (a JSON array of ids) to r->ids. */
static int token_list(parse *p, srv_request *r, json_t *list, const char *param) {
  int32_t V = mf_model_get_config(p->s->model)->vocab_size;
  size_t i, n = json_array_size(list);
  json_t *v;
  int32_t *ids = realloc(r->ids, (size_t)(r->nids + (int64_t)n + 1) * sizeof *ids);
  if (!ids) return bad(p, 500, param, NULL, "out of memory");
  r->ids = ids;
  json_array_foreach(list, i, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= V)
      return bad(p, 400, param, "invalid_value", "%s[%zu] is not a token id of this model [0, %d)", param, i, (int)V);
    r->ids[r->nids++] = (int32_t)json_integer_value(v);
  }
  return 0;
}

/* Appends the ids of a string or a token list to r->ids. */
static int input(parse *p, srv_request *r, json_t *v, const char *param) {
  if (json_is_array(v)) return token_list(p, r, v, param);
  if (!json_is_string(v)) return bad(p, 400, param, "invalid_type", "'%s' must be a string or a list of token ids", param);
  int32_t *ids;
  int64_t n = encode(p->s, json_string_value(v), json_string_length(v), &ids);
  if (n < 0) return bad(p, 400, param, "invalid_value", "cannot tokenize '%s': %s", param, mf_errmsg());
  int32_t *all = realloc(r->ids, (size_t)(r->nids + n + 1) * sizeof *all);
  if (!all) {
    free(ids);
    return bad(p, 500, param, NULL, "out of memory");
  }
  memcpy(all + r->nids, ids, (size_t)n * sizeof *ids);
  free(ids);
  r->ids = all;
  r->nids += n;
  return 0;
}

/* Positions left for the reply, or an error when the prompt fills the context. */
static int fits(parse *p, srv_request *r, int64_t n, const char *param) {
  int64_t context = p->s->opts.context;
  if (n == 0) return bad(p, 400, param, "invalid_value", "'%s' has no tokens", param);
  if (n >= context)
    return bad(p, 400, param, "context_length_exceeded",
               "'%s' has %lld tokens; this model's context holds %lld, the reply included", param, (long long)n,
               (long long)context);
  if (r->max_tokens > context - n) r->max_tokens = (int)(context - n);
  return 0;
}

static int completion(parse *p, srv_request *r) {
  json_t *prompt = json_object_get(p->root, "prompt");
  if (!prompt) return bad(p, 400, "prompt", "missing_field", "'prompt' is required");
  if (json_is_array(prompt) && json_array_size(prompt) == 1 && !json_is_integer(json_array_get(prompt, 0)))
    prompt = json_array_get(prompt, 0);  /* a batch of one */
  if (sampling(p, r) || input(p, r, prompt, "prompt")) return -1;
  return fits(p, r, r->nids, "prompt");
}

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* head + "\n\n" + tail in new memory, or NULL. */
static char *join_paragraphs(const char *head, const char *tail) {
  size_t a = strlen(head), b = strlen(tail);
  char *joined = malloc(a + b + 3);
  if (!joined) return NULL;
  memcpy(joined, head, a);
  memcpy(joined + a, "\n\n", 2);
  memcpy(joined + a + 2, tail, b + 1);
  return joined;
}

/* Makes text the chat's system message: appended to the chat's own, or a
 * new first message (roles and contents have room for one more). Returns
 * the message's text, which the caller frees, or NULL. */
static char *put_first(const char **roles, const char **contents, size_t *n, char *text) {
  if (strcmp(roles[0], "system") == 0) {
    char *joined = join_paragraphs(contents[0], text);
    free(text);
    text = joined;
  } else {
    memmove(roles + 1, roles, *n * sizeof *roles);
    memmove(contents + 1, contents, *n * sizeof *contents);
    roles[0] = "system";
    (*n)++;
  }
  if (text) contents[0] = text;
  return text;
}

/* Puts the sources the last user message finds before the chat (see
 * put_first, which sets *system), when the server has a RAG store and the
 * request does not opt out. */
static int retrieve(parse *p, srv_request *r, const char **roles, const char **contents, size_t *n, char **system) {
  mf_server *s = p->s;
  int enabled = 1;
  int64_t k = s->opts.top_k;
  if (!s->opts.retriever) return 0;
  if (boolean(p, "retrieval", &enabled) || integer(p, "top_k", 1, SRV_MAX_TOP_K, &k)) return -1;
  if (!enabled) return 0;
  size_t last = *n;
  for (size_t i = 0; i < *n; i++)
    if (strcmp(roles[i], "user") == 0) last = i;
  if (last == *n) {  /* nothing to look up */
    r->sources = json_array();
    return 0;
  }
  double started = seconds_now();
  char *block;
  if (srv_rag_sources(s->opts.retriever, contents[last], (int)k, &r->sources, &block))
    return bad(p, 500, "messages", "retrieval_error", "cannot retrieve sources: %s", mf_errmsg());
  pthread_mutex_lock(&s->lock);
  srv_metrics_retrieval(&s->metrics, seconds_now() - started);
  pthread_mutex_unlock(&s->lock);
  *system = put_first(roles, contents, n, block);
  return *system ? 0 : bad(p, 500, NULL, NULL, "out of memory");
}

static int chat(parse *p, srv_request *r) {
  mf_server *s = p->s;
  json_t *messages = json_object_get(p->root, "messages"), *m;
  size_t i, n = json_array_size(messages);
  if (!messages) return bad(p, 400, "messages", "missing_field", "'messages' is required");
  if (!json_is_array(messages) || n == 0)
    return bad(p, 400, "messages", "invalid_type", "'messages' must be a non-empty list of {role, content}");
  if (s->chat_error) return bad(p, 400, "messages", "unsupported", "%s", s->chat_error);
  if (sampling(p, r)) return -1;
  const char **roles = calloc(n + 1, sizeof *roles), **contents = calloc(n + 1, sizeof *contents);
  char *system = NULL;
  int rc = roles && contents ? 0 : bad(p, 500, NULL, NULL, "out of memory");
  char param[64];
  json_array_foreach(messages, i, m) {
    if (rc) break;
    json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_is_object(m)) rc = bad(p, 400, param, "invalid_type", "%s must be an object {role, content}", param);
    else if (!json_is_string(role)) rc = bad(p, 400, param, "invalid_type", "%s.role must be a string", param);
    else if (!json_is_string(content)) rc = bad(p, 400, param, "invalid_type", "%s.content must be a string", param);
    else if (strcmp(json_string_value(role), "system") && strcmp(json_string_value(role), "user") &&
             strcmp(json_string_value(role), "assistant"))
      rc = bad(p, 400, param, "invalid_value", "%s.role '%s' is not one of system, user, assistant", param,
               json_string_value(role));
    else {
      roles[i] = json_string_value(role);
      contents[i] = json_string_value(content);
    }
  }
  if (!rc) rc = retrieve(p, r, roles, contents, &n, &system);
  const char *template = s->chat_template[0] ? s->chat_template : NULL;
  int64_t count = rc ? 0 : mf_chat_encode(s->tok, template, (int)n, roles, contents, NULL, 0);
  if (!rc && count >= 0) r->ids = malloc((size_t)(count + 1) * sizeof *r->ids);
  if (!rc && (count < 0 || !r->ids || mf_chat_encode(s->tok, template, (int)n, roles, contents, r->ids, count) != count))
    rc = bad(p, 400, "messages", "invalid_value", "cannot format the chat: %s", mf_errmsg());
  free(roles);
  free(contents);
  free(system);
  if (rc) return -1;
  r->nids = count;
  r->end_id = mf_chat_end_id(s->tok, template);
  return fits(p, r, r->nids, "messages");
}

/* input: a string, a token list, or a list of either. */
static int embeddings(parse *p, srv_request *r) {
  json_t *in = json_object_get(p->root, "input"), *one;
  json_t *format = json_object_get(p->root, "encoding_format");
  if (!in) return bad(p, 400, "input", "missing_field", "'input' is required");
  if (model_name(p)) return -1;
  r->base64 = json_is_string(format) && strcmp(json_string_value(format), "base64") == 0;
  if (format && !json_is_null(format) && !r->base64 &&
      !(json_is_string(format) && strcmp(json_string_value(format), "float") == 0))
    return bad(p, 400, "encoding_format", "unsupported_value", "'encoding_format' must be \"float\" or \"base64\"");
  int single = json_is_string(in) || (json_is_array(in) && json_is_integer(json_array_get(in, 0)));
  json_t *list = single ? json_pack("[O]", in) : json_incref(in);
  size_t i, n = json_array_size(list);
  int rc = 0;
  if (!json_is_array(list) || n == 0 || n > MAX_EMBED_INPUTS)
    rc = bad(p, 400, "input", "invalid_type", "'input' must be a string, a token list, or a list of 1 to %d of them",
             MAX_EMBED_INPUTS);
  r->offsets = rc ? NULL : calloc(n + 1, sizeof *r->offsets);
  if (!rc && !r->offsets) rc = bad(p, 500, NULL, NULL, "out of memory");
  char param[32];
  json_array_foreach(list, i, one) {
    if (rc) break;
    snprintf(param, sizeof param, "input[%zu]", i);
    r->offsets[i] = r->nids;
    rc = input(p, r, one, param) || fits(p, r, r->nids - r->offsets[i], param);
  }
  json_decref(list);
  if (rc) return -1;
  r->ninputs = (int)n;
  r->offsets[n] = r->nids;
  return 0;
}

srv_request *srv_parse(mf_server *s, srv_endpoint ep, const char *body, size_t len, char **error, int *status) {
  json_error_t jerr;
  parse p = {.s = s, .root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)};
  srv_request *r = request_new(ep);
  int rc;
  if (!r) rc = bad(&p, 500, NULL, NULL, "out of memory");
  else if (!p.root)
    rc = bad(&p, 400, NULL, "invalid_json", "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
             jerr.column);
  else if (!json_is_object(p.root)) rc = bad(&p, 400, NULL, "invalid_json", "the body must be a JSON object");
  else if (ep == EP_COMPLETIONS) rc = completion(&p, r);
  else if (ep == EP_CHAT) rc = chat(&p, r);
  else rc = embeddings(&p, r);
  json_decref(p.root);
  if (rc == 0) return r;
  if (r) request_free(r);
  *error = p.error;
  *status = p.status;
  return NULL;
}

/* ---- replies ---- */

/* The length of the valid UTF-8 character at s (n bytes left), or 0. */
static size_t utf8_char(const unsigned char *s, size_t n) {
  size_t size = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : s[0] >= 0xE0 && s[0] < 0xF0 ? 3
              : s[0] >= 0xF0 && s[0] < 0xF5 ? 4 : 0;
  if (size == 0 || size > n) return 0;
  for (size_t i = 1; i < size; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  /* overlong forms, surrogates and code points beyond U+10FFFF */
  if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0) || (s[0] == 0xF0 && s[1] < 0x90) ||
      (s[0] == 0xF4 && s[1] >= 0x90))
    return 0;
  return size;
}

/* text with every byte that is not part of valid UTF-8 replaced by U+FFFD,
 * since a model may produce any bytes and JSON strings hold characters. */
static json_t *utf8_string(const char *text, size_t n) {
  const unsigned char *u = (const unsigned char *)text;
  char *clean = malloc(3 * n + 1);
  size_t k = 0;
  if (!clean) return NULL;
  for (size_t i = 0; i < n;) {
    size_t size = utf8_char(u + i, n - i);
    if (size) memcpy(clean + k, text + i, size);
    else memcpy(clean + k, "\xEF\xBF\xBD", 3);
    k += size ? size : 3;
    i += size ? size : 1;
  }
  json_t *j = json_stringn(clean, k);
  free(clean);
  return j;
}

static char *dump(json_t *j) {
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  return text;
}

char *srv_models_json(mf_server *s) {
  return dump(json_pack("{s:s, s:[{s:s, s:s, s:I, s:s}]}", "object", "list", "data", "id", s->name, "object", "model",
                        "created", (json_int_t)0, "owned_by", "moonforge"));
}

static json_t *usage(const srv_request *r) {
  return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)r->nids, "completion_tokens",
                   (json_int_t)r->completion_tokens, "total_tokens", (json_int_t)(r->nids + r->completion_tokens));
}

/* An embedding as OpenAI's base64 form: the little-endian float32 bytes
 * (this engine runs on little-endian machines) in standard base64. */
static json_t *base64_floats(const float *v, int64_t n) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *b = (const unsigned char *)v;
  size_t len = (size_t)n * sizeof(float), k = 0;
  char *text = malloc(4 * ((len + 2) / 3) + 1);
  if (!text) return NULL;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t w = (uint32_t)b[i] << 16 | (i + 1 < len ? (uint32_t)b[i + 1] << 8 : 0) | (i + 2 < len ? b[i + 2] : 0);
    text[k++] = digits[w >> 18 & 63];
    text[k++] = digits[w >> 12 & 63];
    text[k++] = i + 1 < len ? digits[w >> 6 & 63] : '=';
    text[k++] = i + 2 < len ? digits[w & 63] : '=';
  }
  json_t *j = json_stringn(text, k);
  free(text);
  return j;
}

static json_t *float_list(const float *v, int64_t n) {
  json_t *list = json_array();
  for (int64_t j = 0; j < n; j++) json_array_append_new(list, json_real(v[j]));
  return list;
}

static char *embeddings_json(mf_server *s, const srv_request *r) {
  int64_t D = mf_model_get_config(s->model)->hidden_size;
  json_t *data = json_array();
  for (int i = 0; i < r->ninputs; i++) {
    const float *v = r->embeddings + i * D;
    json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index", i, "embedding",
                                          r->base64 ? base64_floats(v, D) : float_list(v, D)));
  }
  return dump(json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model", s->name, "usage",
                        "prompt_tokens", (json_int_t)r->nids, "total_tokens", (json_int_t)r->nids));
}

/* One choice: the whole reply, or a piece of a stream (final: the end). */
static json_t *choice(const srv_request *r, const char *text, size_t n, int stream, int final) {
  json_t *c = json_pack("{s:i, s:n}", "index", 0, "logprobs");
  json_object_set_new(c, "finish_reason", final ? json_string(r->finish_reason) : json_null());
  json_t *content = text ? utf8_string(text, n) : json_string("");
  if (r->endpoint == EP_COMPLETIONS) json_object_set_new(c, "text", content);
  else if (!stream) json_object_set_new(c, "message", json_pack("{s:s, s:o}", "role", "assistant", "content", content));
  else if (final) {
    json_object_set_new(c, "delta", json_object());
    json_decref(content);
  } else if (text) json_object_set_new(c, "delta", json_pack("{s:o}", "content", content));
  else json_object_set_new(c, "delta", json_pack("{s:s, s:o}", "role", "assistant", "content", content));
  return c;
}

static json_t *envelope(mf_server *s, const srv_request *r, int stream) {
  const char *object = r->endpoint == EP_COMPLETIONS ? "text_completion" : stream ? "chat.completion.chunk"
                                                                                   : "chat.completion";
  return json_pack("{s:s, s:s, s:I, s:s, s:[]}", "id", r->id, "object", object, "created", (json_int_t)r->created,
                   "model", s->name, "choices");
}

char *srv_reply_json(mf_server *s, const srv_request *r) {
  if (r->endpoint == EP_EMBEDDINGS) return embeddings_json(s, r);
  json_t *reply = envelope(s, r, 0);
  json_array_append_new(json_object_get(reply, "choices"), choice(r, r->text, r->text_len, 0, 1));
  json_object_set_new(reply, "usage", usage(r));
  if (r->sources) json_object_set(reply, "sources", r->sources);
  return dump(reply);
}

char *srv_chunk_json(mf_server *s, const srv_request *r, const char *text, size_t n, srv_chunk kind) {
  json_t *chunk = envelope(s, r, 1);
  if (kind == CHUNK_USAGE) json_object_set_new(chunk, "usage", usage(r));
  else json_array_append_new(json_object_get(chunk, "choices"), choice(r, text, n, 1, kind == CHUNK_END));
  if (kind == CHUNK_ROLE && r->sources) json_object_set(chunk, "sources", r->sources);
  return dump(chunk);
}
