/*
 * Chat templates in C, for the server's threads, which cannot call Lua.
 *
 * mf_chat_encode gives exactly the ids runner/lua/moonforge/chat.lua gives
 * for tok:chat(messages, {add_generation_prompt = true}) with the built-in
 * templates (ChatML, Llama 3, Mistral), and tests/lua/test_serve_chat.lua
 * holds the two to that. The rules are chat.lua's: a template is a list of
 * pieces, each a marker (inserted as its id when the vocabulary has it as
 * one token, else kept as text) or text encoded as data; adjacent texts
 * with the same train flag (assistant contents and the marker closing them)
 * are encoded together, because that is how HF encodes the text between
 * two special tokens, and the flag boundaries change the ids.
 */
#include "internal.h"
#include "moonforge.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum { CHATML, LLAMA3, MISTRAL };

typedef struct piece {
  const char *s;
  size_t n;
  int marker;
  int train;
} piece;

typedef struct chat {
  mf_tokenizer *tok;
  piece *pieces;
  int npieces, cap;
  int failed;
} chat;

static void add(chat *c, const char *s, size_t n, int marker, int train) {
  if (c->npieces == c->cap) {
    int cap = c->cap ? 2 * c->cap : 32;
    piece *p = realloc(c->pieces, (size_t)cap * sizeof *p);
    if (!p) {
      c->failed = 1;
      return;
    }
    c->pieces = p;
    c->cap = cap;
  }
  c->pieces[c->npieces++] = (piece){s, n, marker, train};
}

static void marker(chat *c, const char *s, int train) { add(c, s, strlen(s), 1, train); }
static void text(chat *c, const char *s, int train) { add(c, s, strlen(s), 0, train); }

/* ---- the templates, as in chat.lua ---- */

static void chatml_turn(chat *c, const char *role, const char *content, int train) {
  marker(c, "<|im_start|>", 0);
  text(c, role, 0);
  text(c, "\n", 0);
  text(c, content, train);
  marker(c, "<|im_end|>", train);
  text(c, "\n", 0);
}

static void chatml(chat *c, int n, const char *const *roles, const char *const *contents,
                   const char *default_system) {
  if (default_system && (n == 0 || strcmp(roles[0], "system") != 0))
    chatml_turn(c, "system", default_system, 0);
  for (int i = 0; i < n; i++) chatml_turn(c, roles[i], contents[i], strcmp(roles[i], "assistant") == 0);
  marker(c, "<|im_start|>", 0);
  text(c, "assistant\n", 0);
}

static void llama3_header(chat *c, const char *role) {
  marker(c, "<|start_header_id|>", 0);
  text(c, role, 0);
  marker(c, "<|end_header_id|>", 0);
  text(c, "\n\n", 0);
}

/* Contents are trimmed, as Llama 3's template does. */
static void llama3(chat *c, int n, const char *const *roles, const char *const *contents) {
  marker(c, "<|begin_of_text|>", 0);
  for (int i = 0; i < n; i++) {
    int train = strcmp(roles[i], "assistant") == 0;
    const char *s = contents[i], *e = s + strlen(s);
    while (s < e && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    llama3_header(c, roles[i]);
    add(c, s, (size_t)(e - s), 0, train);
    marker(c, "<|eot_id|>", train);
  }
  llama3_header(c, "assistant");
}

/* A system message goes before the next user message, joined by a blank
 * line, as Mistral's template does. */
static void mistral(chat *c, int n, const char *const *roles, const char *const *contents) {
  const char *system = NULL;
  marker(c, "<s>", 0);
  for (int i = 0; i < n; i++) {
    if (strcmp(roles[i], "system") == 0) {
      system = contents[i];
    } else if (strcmp(roles[i], "user") == 0) {
      marker(c, "[INST]", 0);
      text(c, " ", 0);
      if (system) {
        text(c, system, 0);
        text(c, "\n\n", 0);
      }
      system = NULL;
      text(c, contents[i], 0);
      text(c, " ", 0);
      marker(c, "[/INST]", 0);
    } else {
      text(c, contents[i], 1);
      marker(c, "</s>", 1);
    }
  }
}

/* ---- recognising a declared template ---- */

/* chat.lua's default system prompt: the first literal
 * "<|im_start|>system...<|im_end|>" turn in the template source whose text
 * (after one leading "\n", escaped or not) has no template syntax. */
static char *default_system(const char *source) {
  static const char open[] = "<|im_start|>system", close[] = "<|im_end|>";
  const char *at = source;
  while ((at = strstr(at, open))) {
    const char *s = at + sizeof open - 1, *e = strstr(s, close);
    if (!e) return NULL;
    at = e + sizeof close - 1;
    if (e - s >= 2 && s[0] == '\\' && s[1] == 'n') s += 2;
    if (s < e && *s == '\n') s++;
    size_t n = (size_t)(e - s);
    if (memchr(s, '{', n) || memchr(s, '}', n) || memchr(s, '\'', n)) continue;
    char *copy = malloc(n + 1);
    if (copy) {
      memcpy(copy, s, n);
      copy[n] = 0;
    }
    return copy;
  }
  return NULL;
}

/* The template named (NULL: the one the tokenizer declares). */
static int choose(const mf_tokenizer *t, const char *name, char **system) {
  *system = NULL;
  if (name && *name) {
    if (strcmp(name, "chatml") == 0) return CHATML;
    if (strcmp(name, "llama3") == 0) return LLAMA3;
    if (strcmp(name, "mistral") == 0) return MISTRAL;
    return mf_fail("chat: unknown template '%s' (chatml, llama3, mistral)", name);
  }
  const char *source = mf_tokenizer_chat_template(t);
  if (!*source) return mf_fail("chat: the tokenizer declares no chat template; name one (chatml, llama3, mistral)");
  if (strstr(source, "<|im_start|>")) {
    *system = default_system(source);
    return CHATML;
  }
  if (strstr(source, "<|start_header_id|>")) return LLAMA3;
  if (strstr(source, "[INST]")) return MISTRAL;
  return mf_fail("chat: the model's chat template is not one moonforge knows; name one (chatml, llama3, mistral)");
}

int mf_chat_template_kind(const mf_tokenizer *t, const char *name) {
  char *system;
  int kind = choose(t, name, &system);
  free(system);
  return kind;
}

/* ---- pieces to ids ---- */

typedef struct ids {
  int32_t *out;
  int64_t cap, n;
} ids;

static void push(ids *d, int32_t id) {
  if (d->n < d->cap) d->out[d->n] = id;
  d->n++;
}

/* Encodes the text pieces [from, to) as one string. */
static int flush(chat *c, int from, int to, ids *d) {
  size_t len = 0;
  for (int i = from; i < to; i++) len += c->pieces[i].n;
  if (len == 0) return 0;
  char *run = malloc(len);
  if (!run) return mf_fail("chat: out of memory");
  len = 0;
  for (int i = from; i < to; i++) {
    memcpy(run + len, c->pieces[i].s, c->pieces[i].n);
    len += c->pieces[i].n;
  }
  int64_t room = d->n < d->cap ? d->cap - d->n : 0;
  int64_t n = mf_tokenizer_encode(c->tok, run, len, 0, 0, room ? d->out + d->n : NULL, room);
  free(run);
  if (n < 0) return -1;
  d->n += n;
  return 0;
}

static int64_t encode_pieces(chat *c, int32_t *out, int64_t cap) {
  ids d = {out, cap, 0};
  int start = 0, run_train = 0;
  for (int i = 0; i < c->npieces; i++) {
    const piece *p = &c->pieces[i];
    int32_t id = p->marker ? mf_tokenizer_token_id(c->tok, p->s, p->n) : -1;
    if (id >= 0 || p->train != run_train) {
      if (flush(c, start, i, &d)) return -1;
      start = i;
    }
    run_train = p->train;
    if (id >= 0) {
      push(&d, id);
      start = i + 1;
    }
  }
  if (flush(c, start, c->npieces, &d)) return -1;
  return d.n;
}

int64_t mf_chat_encode(mf_tokenizer *t, const char *template_name, int n, const char *const *roles,
                       const char *const *contents, int32_t *out, int64_t cap) {
  for (int i = 0; i < n; i++) {
    if (!roles[i] || (strcmp(roles[i], "system") && strcmp(roles[i], "user") && strcmp(roles[i], "assistant")))
      return mf_fail("chat: message %d has role '%s' (expected system, user or assistant)", i + 1,
                     roles[i] ? roles[i] : "(none)");
    if (!contents[i]) return mf_fail("chat: message %d (%s) has no content", i + 1, roles[i]);
  }
  char *system;
  int kind = choose(t, template_name, &system);
  if (kind < 0) return -1;
  chat c = {.tok = t};
  if (kind == CHATML) chatml(&c, n, roles, contents, system);
  else if (kind == LLAMA3) llama3(&c, n, roles, contents);
  else mistral(&c, n, roles, contents);
  int64_t count = c.failed ? mf_fail("chat: out of memory") : encode_pieces(&c, out, cap);
  free(c.pieces);
  free(system);
  return count;
}

int32_t mf_chat_end_id(const mf_tokenizer *t, const char *template_name) {
  static const char *const ends[] = {"<|im_end|>", "<|eot_id|>", "</s>"};
  int kind = mf_chat_template_kind(t, template_name);
  if (kind < 0) return -1;
  return mf_tokenizer_token_id(t, ends[kind], strlen(ends[kind]));
}
