/*
 * The retriever: a RAG store (see moonforge.h) opened for queries, and the
 * server's use of it, the numbered sources put before a chat.
 *
 * Opening reads store.json, maps index.mfvi, reads every chunk of
 * chunks.jsonl into memory and loads the sentence encoder, then checks
 * them against each other, so that a store that opens answers every query
 * without touching the files again.
 *
 * Threads: the server queries on each request's connection thread, under
 * the retriever's own lock. An index keeps its search scratch and its
 * distance count in itself, so searches may not overlap, and a query is
 * short next to a reply, so queries take turns; doing them on the
 * scheduler thread instead would stall every sequence being decoded for the
 * length of each query.
 */
#define _GNU_SOURCE /* open_memstream */
#include "server.h"
#include "internal.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct mf_retriever {
  char *dir, *encoder_path;
  int bm25;
  mf_encoder *encoder;
  mf_vindex *index;
  int dim;
  mf_rag_chunk *chunks;  /* [count], chunk id i at i - 1; the strings are owned */
  int64_t count;
  pthread_mutex_t lock;  /* one query at a time */
};

/* Fails with "rag store DIR: what", where what may quote mf_errmsg(). */
static int store_fail(const mf_retriever *r, const char *what) {
  char copy[2048];
  snprintf(copy, sizeof copy, "%s", what);
  return mf_fail("rag store %s: %s", r->dir, copy);
}

static int path_in(const mf_retriever *r, const char *name, char *path, size_t cap) {
  if ((size_t)snprintf(path, cap, "%s/%s", r->dir, name) >= cap) return store_fail(r, "the path is too long");
  return 0;
}

/* ---- store.json ---- */

static int read_manifest(mf_retriever *r, json_t **out) {
  char path[4200], why[512];
  json_error_t err;
  if (path_in(r, "store.json", path, sizeof path)) return -1;
  struct stat st;
  if (stat(path, &st) != 0) return store_fail(r, "no store.json (not a RAG store)");
  json_t *m = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
  if (!m) {
    snprintf(why, sizeof why, "store.json: line %d: %s", err.line, err.text);
    return store_fail(r, why);
  }
  *out = m;
  const char *format = json_string_value(json_object_get(m, "format"));
  if (!json_is_object(m) || !format || strcmp(format, "moonforge-rag-store") != 0)
    return store_fail(r, "store.json: \"format\" is not \"moonforge-rag-store\"");
  json_t *version = json_object_get(m, "version");
  if (!json_is_integer(version) || json_integer_value(version) != 1)
    return store_fail(r, "store.json: \"version\" is not 1, the only version this engine reads");
  const char *encoder = json_string_value(json_object_get(m, "encoder"));
  if (!encoder || !*encoder) return store_fail(r, "store.json names no \"encoder\", so queries cannot be embedded");
  if (!json_is_integer(json_object_get(m, "dim")) || !json_is_integer(json_object_get(m, "count")) ||
      !json_is_string(json_object_get(m, "metric")) || !json_is_boolean(json_object_get(m, "bm25")))
    return store_fail(r, "store.json: \"dim\", \"count\", \"metric\" or \"bm25\" is missing or of the wrong type");
  r->bm25 = json_is_true(json_object_get(m, "bm25"));
  r->encoder_path = strdup(encoder);
  return r->encoder_path ? 0 : store_fail(r, "out of memory");
}

/* ---- chunks.jsonl ---- */

/* A string field (NULL when absent or null), copied into *out. */
static int string_field(json_t *row, const char *key, int required, char **out, char *why, size_t cap,
                        int64_t line) {
  json_t *v = json_object_get(row, key);
  *out = NULL;
  if ((!v || json_is_null(v)) && !required) return 0;
  if (!json_is_string(v)) {
    snprintf(why, cap, "chunks.jsonl: line %lld: \"%s\" must be a string%s", (long long)line, key,
             required ? "" : " or null");
    return -1;
  }
  if (!(*out = strdup(json_string_value(v)))) {
    snprintf(why, cap, "out of memory");
    return -1;
  }
  return 0;
}

static int line_field(json_t *row, const char *key, int64_t *out, char *why, size_t cap, int64_t line) {
  json_t *v = json_object_get(row, key);
  *out = json_is_integer(v) ? json_integer_value(v) : 0;
  if (v && !json_is_null(v) && (!json_is_integer(v) || *out < 1)) {
    snprintf(why, cap, "chunks.jsonl: line %lld: \"%s\" must be a positive integer or null", (long long)line, key);
    return -1;
  }
  return 0;
}

/* Row `line` of chunks.jsonl, which must be chunk `line`. */
static int read_chunk(const char *text, int64_t line, mf_rag_chunk *c, char *why, size_t cap) {
  json_error_t err;
  json_t *row = json_loads(text, JSON_REJECT_DUPLICATES, &err);
  json_t *id = json_object_get(row, "id");
  char *body = NULL, *source = NULL, *title = NULL;
  int rc = -1;
  if (!json_is_object(row))
    snprintf(why, cap, "chunks.jsonl: line %lld: %s", (long long)line, row ? "not a JSON object" : err.text);
  else if (!json_is_integer(id) || json_integer_value(id) != line)
    snprintf(why, cap, "chunks.jsonl: line %lld: \"id\" must be %lld (chunks are numbered 1..n in order)",
             (long long)line, (long long)line);
  else if (!string_field(row, "text", 1, &body, why, cap, line) &&
           !string_field(row, "source", 0, &source, why, cap, line) &&
           !string_field(row, "title", 0, &title, why, cap, line) &&
           !line_field(row, "line_start", &c->line_start, why, cap, line) &&
           !line_field(row, "line_end", &c->line_end, why, cap, line))
    rc = 0;
  json_decref(row);
  if (rc) {
    free(body);
    free(source);
    free(title);
    return -1;
  }
  c->text = body;
  c->source = source;
  c->title = title;
  return 0;
}

static int add_chunk(mf_retriever *r, const char *text, int64_t *cap, char *why, size_t why_cap) {
  if (r->count == *cap) {
    int64_t grown_cap = *cap ? 2 * *cap : 64;
    mf_rag_chunk *grown = realloc(r->chunks, (size_t)grown_cap * sizeof *grown);
    if (!grown) {
      snprintf(why, why_cap, "out of memory for %lld chunks", (long long)grown_cap);
      return -1;
    }
    r->chunks = grown;
    *cap = grown_cap;
  }
  if (read_chunk(text, r->count + 1, &r->chunks[r->count], why, why_cap)) return -1;
  r->count++;
  return 0;
}

static int read_chunks(mf_retriever *r) {
  char path[4200], why[512] = "";
  if (path_in(r, "chunks.jsonl", path, sizeof path)) return -1;
  FILE *f = fopen(path, "rb");
  if (!f) return store_fail(r, "cannot read chunks.jsonl");
  char *line = NULL;
  size_t line_cap = 0;
  int64_t cap = 0;
  int rc = 0;
  while (rc == 0 && getline(&line, &line_cap, f) >= 0) rc = add_chunk(r, line, &cap, why, sizeof why);
  if (rc == 0 && ferror(f)) {
    snprintf(why, sizeof why, "cannot read chunks.jsonl");
    rc = -1;
  }
  free(line);
  fclose(f);
  return rc ? store_fail(r, why) : 0;
}

/* ---- the index and the encoder ---- */

static int open_index(mf_retriever *r, json_t *manifest) {
  char path[4200], why[1024];
  if (path_in(r, "index.mfvi", path, sizeof path)) return -1;
  if (!(r->index = mf_vindex_open(path))) return store_fail(r, mf_errmsg());
  mf_vindex_opts o;
  mf_vindex_get_opts(r->index, &o);
  int64_t count = mf_vindex_count(r->index), said = json_integer_value(json_object_get(manifest, "count"));
  const char *metric = o.metric == MF_METRIC_COSINE ? "cosine" : "dot";
  r->dim = o.dim;
  if (json_integer_value(json_object_get(manifest, "dim")) != o.dim)
    snprintf(why, sizeof why, "store.json says dim %lld but the index holds vectors of dim %d",
             (long long)json_integer_value(json_object_get(manifest, "dim")), o.dim);
  else if (strcmp(json_string_value(json_object_get(manifest, "metric")), metric) != 0)
    snprintf(why, sizeof why, "store.json says metric \"%s\" but the index uses \"%s\"",
             json_string_value(json_object_get(manifest, "metric")), metric);
  else if (said != count || count != r->count)
    snprintf(why, sizeof why, "store.json says %lld chunks, the index holds %lld vectors, chunks.jsonl %lld rows",
             (long long)said, (long long)count, (long long)r->count);
  else if (mf_vindex_deleted(r->index) || mf_vindex_next_id(r->index) != count + 1)
    snprintf(why, sizeof why, "the index's ids are not the chunk numbers 1..%lld", (long long)count);
  else return 0;
  return store_fail(r, why);
}

static int load_encoder(mf_retriever *r) {
  char why[1024];
  struct stat st;
  if (stat(r->encoder_path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(why, sizeof why, "the encoder folder '%s' does not exist", r->encoder_path);
    return store_fail(r, why);
  }
  if (!(r->encoder = mf_encoder_load(r->encoder_path))) {
    snprintf(why, sizeof why, "encoder: %s", mf_errmsg());
    return store_fail(r, why);
  }
  if (mf_encoder_dim(r->encoder) != r->dim) {
    snprintf(why, sizeof why, "the encoder '%s' gives vectors of dim %d but the index holds dim %d", r->encoder_path,
             mf_encoder_dim(r->encoder), r->dim);
    return store_fail(r, why);
  }
  return 0;
}

/* ---- the public API ---- */

mf_retriever *mf_retriever_open(const char *dir) {
  if (!dir || !*dir) return mf_fail_null("rag store: no folder given");
  mf_retriever *r = calloc(1, sizeof *r);
  if (!r || !(r->dir = strdup(dir))) {
    free(r);
    return mf_fail_null("rag store %s: out of memory", dir);
  }
  pthread_mutex_init(&r->lock, NULL);
  json_t *manifest = NULL;
  int rc = read_manifest(r, &manifest) || read_chunks(r) || open_index(r, manifest) || load_encoder(r);
  json_decref(manifest);
  if (rc) {
    mf_retriever_free(r);
    return NULL;
  }
  return r;
}

void mf_retriever_free(mf_retriever *r) {
  if (!r) return;
  for (int64_t i = 0; i < r->count; i++) {
    free((char *)r->chunks[i].text);
    free((char *)r->chunks[i].source);
    free((char *)r->chunks[i].title);
  }
  free(r->chunks);
  mf_encoder_free(r->encoder);
  mf_vindex_free(r->index);
  pthread_mutex_destroy(&r->lock);
  free(r->encoder_path);
  free(r->dir);
  free(r);
}

int64_t mf_retriever_count(const mf_retriever *r) { return r->count; }
const char *mf_retriever_encoder_path(const mf_retriever *r) { return r->encoder_path; }
int mf_retriever_bm25(const mf_retriever *r) { return r->bm25; }

int mf_retriever_chunk(const mf_retriever *r, int64_t id, mf_rag_chunk *out) {
  if (id < 1 || id > r->count)
    return mf_fail("rag store %s: no chunk %lld (chunks are 1..%lld)", r->dir, (long long)id, (long long)r->count);
  *out = r->chunks[id - 1];
  return 0;
}

int mf_retriever_search(mf_retriever *r, const char *query, size_t len, int k, int64_t *ids, float *scores) {
  if (!query) return mf_fail("rag store %s: no query", r->dir);
  if (k < 1) return mf_fail("rag store %s: k must be at least 1, got %d", r->dir, k);
  float *q = malloc((size_t)r->dim * sizeof *q);
  if (!q) return mf_fail("rag store %s: out of memory", r->dir);
  pthread_mutex_lock(&r->lock);
  int rc = mf_encoder_encode(r->encoder, &query, &len, 1, 1, 1, q) || mf_vindex_search(r->index, q, 1, r->dim, k, ids,
                                                                                         scores);
  pthread_mutex_unlock(&r->lock);
  free(q);
  if (rc) return -1;
  int found = 0;
  for (; found < k && ids[found] >= 0; found++)
    if (ids[found] < 1 || ids[found] > r->count)
      return mf_fail("rag store %s: the index holds id %lld, which is not a chunk number", r->dir,
                     (long long)ids[found]);
  return found;
}

/* ---- sources for the server ---- */

static json_t *source_json(int n, int64_t id, float score, const mf_rag_chunk *c) {
  return json_pack("{s:i, s:I, s:s?, s:s?, s:f, s:s}", "index", n, "id", (json_int_t)id, "source", c->source, "title",
                   c->title, "score", (double)score, "text", c->text);
}

/* "[n] (source › title) text" on its own line. */
static void source_line(FILE *f, int n, const mf_rag_chunk *c) {
  fprintf(f, "\n[%d] ", n);
  if (c->source || c->title) {
    fprintf(f, "(%s%s%s) ", c->source ? c->source : "", c->source && c->title ? " \xE2\x80\xBA " : "",
            c->title ? c->title : "");
  }
  fputs(c->text, f);
}

/* The hits as the reply's sources and as the system message's text. */
static int format_sources(const mf_retriever *r, const int64_t *ids, const float *scores, int n, json_t **sources,
                          char **text) {
  size_t len = 0;
  json_t *list = json_array();
  FILE *f = open_memstream(text, &len);
  if (f) {
    fputs("Answer from the numbered sources below and cite them as [n].", f);
    for (int i = 0; i < n; i++) {
      const mf_rag_chunk *c = &r->chunks[ids[i] - 1];
      json_array_append_new(list, source_json(i + 1, ids[i], scores[i], c));
      source_line(f, i + 1, c);
    }
    fclose(f);
  }
  if (!f || !*text || !list || json_array_size(list) != (size_t)n) {
    json_decref(list);
    free(*text);
    *text = NULL;
    return mf_fail("rag store %s: out of memory for the sources", r->dir);
  }
  *sources = list;
  return 0;
}

int srv_rag_sources(mf_retriever *r, const char *query, int k, json_t **sources, char **text) {
  int64_t *ids = malloc((size_t)k * sizeof *ids);
  float *scores = malloc((size_t)k * sizeof *scores);
  *sources = NULL;
  *text = NULL;
  int found = ids && scores ? mf_retriever_search(r, query, strlen(query), k, ids, scores)
                            : mf_fail("rag store %s: out of memory", r->dir);
  int rc = found < 0 ? -1 : format_sources(r, ids, scores, found, sources, text);
  free(ids);
  free(scores);
  return rc;
}
