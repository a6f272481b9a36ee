/*
 * The server's private view, shared by its parts:
 *   server.c          lifecycle: start, the scheduler thread, stop
 *   server_http.c     libmicrohttpd: connections, bodies, routing, replies, SSE
 *   server_request.c  JSON requests to srv_request, and replies to JSON
 *   server_sched.c    continuous batching over the KV cache's slots
 *   server_metrics.c  counters and histograms in Prometheus' text format
 *   server_chat.c     chat templates (as chat.lua has them)
 *   server_rag.c      the retriever: a RAG store's chunks as a chat's sources
 *   (server_http.c also serves the routes of mf_server_route: pages, and
 *   proxies that relay to an upstream through the HTTP client)
 *
 * Threads: libmicrohttpd runs one thread per connection; those threads
 * parse, tokenize (the tokenizer is thread-safe), look up a chat's sources
 * (server_rag.c says why there) and wait. One scheduler thread owns the
 * model and the KV cache. They meet in srv_request, whose answer fields
 * are guarded by the server's lock; `changed` is signalled whenever the
 * answer grows or ends.
 */
#ifndef MF_SERVER_H
#define MF_SERVER_H

#include "moonforge.h"

#include <pthread.h>
#include <stdint.h>

struct MHD_Daemon;
struct json_t;

typedef enum srv_endpoint {
  EP_MODELS, EP_COMPLETIONS, EP_CHAT, EP_EMBEDDINGS, EP_HEALTH, EP_METRICS, EP_OTHER, EP_COUNT
} srv_endpoint;

enum { SRV_MAX_STOP = 4, SRV_MAX_TOP_K = 64 };

typedef struct srv_request {
  /* The ask, fixed once queued. */
  srv_endpoint endpoint;
  int stream, include_usage;
  int32_t *ids;          /* the prompt, or every embedding input end to end */
  int64_t nids;
  int64_t *offsets;      /* embeddings: input i is ids[offsets[i], offsets[i + 1]) */
  int ninputs;
  int base64;            /* embeddings as base64 float32 bytes */
  int max_tokens;
  double temperature, top_p;
  uint64_t seed;
  char *stop[SRV_MAX_STOP];
  int nstop;
  int32_t end_id;        /* the chat template's end-of-turn id, or -1 */
  struct json_t *sources;  /* chat: the chunks put before the conversation, or NULL without retrieval */
  char id[48];
  int64_t created;

  /* The answer, under the server's lock. */
  pthread_cond_t changed;
  char *text;            /* the reply so far: only text no stop string can take back */
  size_t text_len, text_cap;
  size_t *piece_ends;    /* where each publishing of text ended: a stream's events */
  int npieces, pieces_cap;
  int completion_tokens;
  const char *finish_reason;  /* NULL while generating */
  float *embeddings;     /* [ninputs, hidden_size] */
  char *error;           /* why the model failed, when it did */
  int cancelled;         /* the client left or the server is stopping */
  int refs;              /* the connection's and the scheduler's */
  struct srv_request *next;  /* in the queue */
} srv_request;

typedef struct srv_histogram {
  uint64_t buckets[16];  /* observations by upper bound (see server_metrics.c) */
  double sum;
  uint64_t count;
} srv_histogram;

typedef struct srv_metrics {
  uint64_t requests[EP_COUNT][8];  /* by endpoint and status class (see server_metrics.c) */
  srv_histogram latency[EP_COUNT];
  srv_histogram retrieval;         /* embedding a chat's query and searching the store */
  uint64_t prompt_tokens, completion_tokens;
} srv_metrics;

/* A page or a proxy of mf_server_opts.routes, owned by the server. */
typedef struct srv_route {
  char *path, *content_type, *body, *upstream;
  size_t body_len;
  char **headers;        /* NULL-terminated */
} srv_route;

struct mf_server {
  mf_model *model;       /* NULL for a server of routes alone */
  mf_tokenizer *tok;
  mf_server_opts opts;
  char host[64], name[128], chat_template[16];
  char *chat_error;      /* why chat is unavailable (no known template), or NULL */
  struct MHD_Daemon *daemon;
  int port;
  int listen_fd;         /* the listening socket once quiesced, else -1 */

  pthread_t scheduler;
  int scheduler_started;
  pthread_mutex_t lock;
  pthread_cond_t wake;   /* the scheduler waits here for work */
  srv_request *head, *tail;
  int queued, active;
  int stopping;          /* no new requests; the scheduler ends when idle */
  int cancel_all;        /* in-flight requests are cancelled */
  srv_metrics metrics;
  srv_route *routes;
  int nroutes;
};

/* server.c: 0, or the HTTP status that refuses it (429 full queue, 503 stopping). */
int srv_enqueue(mf_server *s, srv_request *r);

/* server_sched.c: the scheduler's state (the KV cache, the slots), or
 * NULL with a message; then the scheduler thread's body, which frees it. */
void *srv_sched_new(mf_server *s);
void *srv_schedule(void *sched);

/* server_http.c */
int srv_http_start(mf_server *s);
void srv_http_quiesce(mf_server *s);
void srv_http_stop(mf_server *s);
/* Copies opts.routes into the server after checking them; frees them. */
int srv_routes_copy(mf_server *s);
void srv_routes_free(mf_server *s);

/* server_request.c: a request body to a request, or NULL with an
 * OpenAI-shaped error in *error and its HTTP status in *status. */
srv_request *srv_parse(mf_server *s, srv_endpoint ep, const char *body, size_t len, char **error, int *status);
void srv_request_release(mf_server *s, srv_request *r);
char *srv_error_json(const char *message, const char *type, const char *param, const char *code);
char *srv_models_json(mf_server *s);
/* The finished reply of a request, as OpenAI shapes it. */
char *srv_reply_json(mf_server *s, const srv_request *r);
/* One server-sent event of a stream: the assistant role (chat; it carries
 * the sources too), a piece of text, the end (finish_reason), or the usage
 * (stream_options). */
typedef enum srv_chunk { CHUNK_ROLE, CHUNK_TEXT, CHUNK_END, CHUNK_USAGE } srv_chunk;
char *srv_chunk_json(mf_server *s, const srv_request *r, const char *text, size_t n, srv_chunk kind);

/* server_metrics.c (callers hold the server's lock) */
void srv_metrics_request(srv_metrics *m, srv_endpoint ep, int status, double seconds);
void srv_metrics_retrieval(srv_metrics *m, double seconds);
char *srv_metrics_text(mf_server *s);

/* server_rag.c: the k chunks nearest to query as the reply's "sources"
 * (a new JSON array) and as the text of a system message that asks the
 * model to cite them (caller frees); -1 with a message. */
int srv_rag_sources(mf_retriever *r, const char *query, int k, struct json_t **sources, char **text);

/* server_chat.c */
int mf_chat_template_kind(const mf_tokenizer *t, const char *name);
int32_t mf_chat_end_id(const mf_tokenizer *t, const char *name);

#endif
