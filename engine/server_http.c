/*
 * The server's HTTP side, on libmicrohttpd with a thread per connection.
 *
 * A connection's thread collects the body (refusing more than max_body
 * bytes with 413, from Content-Length when it is given), routes it, hands a
 * parsed request to the scheduler and waits for the answer: a JSON reply,
 * or server-sent events that the response callback writes as text arrives.
 * While it waits it probes the socket, so a client that leaves cancels its
 * request and frees its slot at the next step. libmicrohttpd closes idle
 * connections after timeout_s, which ends partial requests left hanging.
 */
#include "server.h"
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { WAIT_SLICE_MS = 100 };

typedef struct conn {
  mf_server *s;
  struct MHD_Connection *c;
  srv_endpoint ep;
  double started;
  char *body;
  size_t len, cap;
  int too_large;
  int status;       /* of the reply queued; 0 before */
} conn;

/* A stream's state, owned by its libmicrohttpd response (which may
 * outlive the conn). */
typedef struct stream {
  mf_server *s;
  struct MHD_Connection *c;
  srv_request *r;
  size_t sent;      /* bytes of r->text already in events */
  int piece;        /* the first of r's pieces not yet wholly sent */
  int started, ended;
  char *pending;    /* formatted events not yet handed over */
  size_t pending_len, pending_pos;
} stream;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static srv_endpoint route(const char *url) {
  static const char *const paths[EP_OTHER] = {"/v1/models", "/v1/completions", "/v1/chat/completions",
                                              "/v1/embeddings", "/health", "/metrics"};
  for (int ep = 0; ep < EP_OTHER; ep++)
    if (strcmp(url, paths[ep]) == 0) return (srv_endpoint)ep;
  return EP_OTHER;
}

/* Whether the client closed its end (or the socket failed). */
static int client_gone(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  char byte;
  if (!info) return 1;
  ssize_t n = recv(info->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Waits on cond for at most one slice. */
static void wait_one_slice(pthread_cond_t *cond, pthread_mutex_t *lock) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += WAIT_SLICE_MS * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(cond, lock, &until);
}

/* Waits up to one slice for r to change; cancels r when its client left. */
/* Cancels r when its client has left. */
static void check_gone(struct MHD_Connection *c, srv_request *r) {
  if (!r->finish_reason && !r->cancelled && client_gone(c)) r->cancelled = 1;
}

static void wait_slice(mf_server *s, struct MHD_Connection *c, srv_request *r) {
  wait_one_slice(&r->changed, &s->lock);
  check_gone(c, r);
}

/* ---- replies ---- */

static enum MHD_Result send_text(conn *k, int status, char *text, const char *type) {
  if (!text) {
    status = 500;
    text = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    if (!text) return MHD_NO;
  }
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  k->status = status;
  enum MHD_Result ok = MHD_queue_response(k->c, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ok;
}

static enum MHD_Result send_json(conn *k, int status, char *json) {
  return send_text(k, status, json, "application/json");
}

static enum MHD_Result send_error(conn *k, int status, const char *message, const char *code) {
  const char *type = status >= 500 ? "server_error" : "invalid_request_error";
  return send_json(k, status, srv_error_json(message, type, NULL, code));
}

/* The error of a request that ended without an answer (the model failed,
 * or the server cancelled it while stopping), and its status. */
static char *failure_json(const srv_request *r, int *status) {
  *status = r->error ? 500 : 503;
  if (r->error) return srv_error_json(r->error, "server_error", NULL, "model_error");
  return srv_error_json("the request was cancelled: the server is stopping", "server_error", NULL, "cancelled");
}

static enum MHD_Result send_failure(conn *k, const srv_request *r) {
  int status;
  char *json = failure_json(r, &status);
  return send_json(k, status, json);
}

static int failed(const srv_request *r) { return r->error || strcmp(r->finish_reason, "cancelled") == 0; }

/* ---- streams ---- */

/* Appends the event "data: <data>". */
static void pend(stream *st, const char *data) {
  size_t n = strlen(data);
  char *grown = realloc(st->pending, st->pending_len + n + 8);
  if (!grown) return;  /* the event is lost; the stream still ends */
  st->pending = grown;
  memcpy(st->pending + st->pending_len, "data: ", 6);
  memcpy(st->pending + st->pending_len + 6, data, n);
  memcpy(st->pending + st->pending_len + 6 + n, "\n\n", 2);
  st->pending_len += n + 8;
}

static void pend_json(stream *st, char *json) {
  if (json) pend(st, json);
  free(json);
}

/* Formats the events for whatever the request added since the last call
 * (under the lock): one per piece the scheduler published, as a token at a
 * time comes, however many came since. */
static void next_events(stream *st) {
  mf_server *s = st->s;
  srv_request *r = st->r;
  if (!st->started && r->endpoint == EP_CHAT) pend_json(st, srv_chunk_json(s, r, NULL, 0, CHUNK_ROLE));
  st->started = 1;
  while (st->sent < r->text_len) {
    while (st->piece < r->npieces && r->piece_ends[st->piece] <= st->sent) st->piece++;
    size_t end = st->piece < r->npieces ? r->piece_ends[st->piece] : r->text_len;
    pend_json(st, srv_chunk_json(s, r, r->text + st->sent, end - st->sent, CHUNK_TEXT));
    st->sent = end;
  }
  if (!r->finish_reason) return;
  int status;
  if (failed(r)) pend_json(st, failure_json(r, &status));
  else pend_json(st, srv_chunk_json(s, r, NULL, 0, CHUNK_END));
  if (r->include_usage && !failed(r)) pend_json(st, srv_chunk_json(s, r, NULL, 0, CHUNK_USAGE));
  pend(st, "[DONE]");
  st->ended = 1;
}

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max) {
  stream *st = cls;
  mf_server *s = st->s;
  if (st->pending_pos == st->pending_len) {
    if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
    st->pending_len = st->pending_pos = 0;
    pthread_mutex_lock(&s->lock);
    while (st->started && st->r->text_len == st->sent && !st->r->finish_reason && !st->r->cancelled)
      wait_slice(s, st->c, st->r);
    check_gone(st->c, st->r);  /* a fast reply never waits: look at every block too */
    int gone = st->r->cancelled && !st->r->finish_reason;
    if (!gone) next_events(st);
    pthread_mutex_unlock(&s->lock);
    if (gone) return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  size_t n = st->pending_len - st->pending_pos;
  if (n > max) n = max;
  memcpy(buf, st->pending + st->pending_pos, n);
  st->pending_pos += n;
  return (ssize_t)n;
}

static void free_stream(void *cls) {
  stream *st = cls;
  mf_server *s = st->s;
  pthread_mutex_lock(&s->lock);
  if (!st->r->finish_reason) st->r->cancelled = 1;
  pthread_mutex_unlock(&s->lock);
  srv_request_release(s, st->r);
  free(st->pending);
  free(st);
}

static enum MHD_Result send_stream(conn *k, srv_request *r) {
  stream *st = calloc(1, sizeof *st);
  struct MHD_Response *resp = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, read_stream, st,
                                                                     free_stream)
                                 : NULL;
  if (!resp) {
    free(st);
    pthread_mutex_lock(&k->s->lock);
    r->cancelled = 1;
    pthread_mutex_unlock(&k->s->lock);
    srv_request_release(k->s, r);
    return send_error(k, 500, "out of memory", NULL);
  }
  st->s = k->s;
  st->c = k->c;
  st->r = r;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  k->status = 200;
  enum MHD_Result ok = MHD_queue_response(k->c, MHD_HTTP_OK, resp);
  MHD_destroy_response(resp);
  return ok;
}

/* ---- pages and proxies (mf_server_route) ----
 * A page is bytes served on GET. A proxy relays a POST body to its
 * upstream through the HTTP client (mf_http_stream) on a thread of its
 * own, while the connection's thread hands the browser whatever has
 * arrived. They share a relay, freed by whichever lets go of it last; the
 * relay copies what it needs, so its thread may outlive the server. */

enum { RELAY_TIMEOUT_MS = 600000, RELAY_MAX_PENDING = 16 << 20, RELAY_HEAD = 400 };

typedef struct relay {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  struct MHD_Connection *c;  /* the browser's connection (its thread only) */
  char *url, **headers, *body;
  size_t body_len;
  char *pending;             /* bytes from upstream not yet handed over */
  size_t len, pos, cap;
  char head[RELAY_HEAD];     /* the start of the upstream's body, for its error */
  size_t head_len;
  int done;                  /* the upstream's reply is complete */
  int abandoned;             /* the browser left: stop the transfer */
  int overflowed;            /* the browser read too slowly to keep up */
  int refs;
} relay;

static void free_lines(char **lines) {
  for (size_t i = 0; lines && lines[i]; i++) free(lines[i]);
  free(lines);
}

/* A NULL-terminated copy of lines (NULL: none), or NULL when out of memory. */
static char **copy_lines(const char *const *lines) {
  size_t n = 0;
  while (lines && lines[n]) n++;
  char **copy = calloc(n + 1, sizeof *copy);
  for (size_t i = 0; copy && i < n; i++)
    if (!(copy[i] = strdup(lines[i]))) {
      free_lines(copy);
      return NULL;
    }
  return copy;
}

static char *copy_bytes(const char *data, size_t n) {
  char *copy = malloc(n + 1);
  if (!copy) return NULL;
  if (n) memcpy(copy, data, n);
  copy[n] = 0;
  return copy;
}

static void relay_release(relay *r) {
  pthread_mutex_lock(&r->lock);
  int left = --r->refs;
  pthread_mutex_unlock(&r->lock);
  if (left) return;
  pthread_mutex_destroy(&r->lock);
  pthread_cond_destroy(&r->changed);
  free(r->url);
  free_lines(r->headers);
  free(r->body);
  free(r->pending);
  free(r);
}

/* Appends n bytes to the pending ones (under the lock); -1 when they
 * cannot be kept. */
static int relay_append(relay *r, const char *data, size_t n) {
  if (r->len - r->pos + n > RELAY_MAX_PENDING) return -1;
  if (r->len + n > r->cap) {
    size_t cap = 2 * (r->len + n);
    char *grown = realloc(r->pending, cap);
    if (!grown) return -1;
    r->pending = grown;
    r->cap = cap;
  }
  memcpy(r->pending + r->len, data, n);
  r->len += n;
  return 0;
}

/* Ends the stream with an error event saying message (under the lock). */
static void relay_fail(relay *r, const char *message) {
  char *json = srv_error_json(message, "server_error", NULL, "upstream_error");
  if (json && !relay_append(r, "\n\ndata: ", 8) && !relay_append(r, json, strlen(json)))
    relay_append(r, "\n\n", 2);
  free(json);
  r->done = 1;
  pthread_cond_broadcast(&r->changed);
}

static int relay_take(void *ctx, const char *data, size_t n) {
  relay *r = ctx;
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < n && r->head_len < RELAY_HEAD - 1; i++)
    r->head[r->head_len++] = data[i] >= 0x20 && data[i] < 0x7f ? data[i] : ' ';  /* JSON-safe text */
  if (!r->abandoned && relay_append(r, data, n)) r->overflowed = 1;
  int stop = r->abandoned || r->overflowed;
  pthread_cond_broadcast(&r->changed);
  pthread_mutex_unlock(&r->lock);
  return stop;
}

static void *relay_run(void *arg) {
  relay *r = arg;
  int status = 0;
  int rc = mf_http_stream("POST", r->url, (const char *const *)r->headers, r->body, r->body_len, RELAY_TIMEOUT_MS,
                          relay_take, r, &status);
  char message[RELAY_HEAD + 256];
  if (rc) snprintf(message, sizeof message, "%s", mf_errmsg());
  else snprintf(message, sizeof message, "%s answered HTTP %d: %.*s", r->url, status, (int)r->head_len, r->head);
  pthread_mutex_lock(&r->lock);
  if (r->overflowed) relay_fail(r, "the browser read the upstream's reply too slowly");
  else if (rc || status < 200 || status > 299) relay_fail(r, message);
  r->done = 1;
  pthread_cond_broadcast(&r->changed);
  pthread_mutex_unlock(&r->lock);
  relay_release(r);
  return NULL;
}

static ssize_t relay_read(void *cls, uint64_t at, char *buf, size_t max) {
  relay *r = cls;
  ssize_t n;
  pthread_mutex_lock(&r->lock);
  while (r->pos == r->len && !r->done && !r->abandoned) {
    wait_one_slice(&r->changed, &r->lock);
    if (client_gone(r->c)) r->abandoned = 1;
  }
  if (r->abandoned) n = MHD_CONTENT_READER_END_WITH_ERROR;
  else if (r->pos == r->len) n = MHD_CONTENT_READER_END_OF_STREAM;
  else {
    n = (ssize_t)(r->len - r->pos < max ? r->len - r->pos : max);
    memcpy(buf, r->pending + r->pos, (size_t)n);
    r->pos += (size_t)n;
    if (r->pos == r->len) r->pos = r->len = 0;
  }
  pthread_mutex_unlock(&r->lock);
  return n;
}

static void relay_let_go(void *cls) {
  relay *r = cls;
  pthread_mutex_lock(&r->lock);
  r->abandoned = 1;
  pthread_mutex_unlock(&r->lock);
  relay_release(r);
}

static relay *relay_new(const conn *k, const srv_route *route) {
  relay *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->changed, NULL);
  r->c = k->c;
  r->refs = 1;
  r->url = strdup(route->upstream);
  r->headers = copy_lines((const char *const *)route->headers);
  r->body = copy_bytes(k->body ? k->body : "", k->len);
  r->body_len = k->len;
  if (!r->url || !r->headers || !r->body) {
    relay_release(r);
    return NULL;
  }
  return r;
}

/* Whether a request comes from a page of this server. A browser names the
 * page's origin on a cross-site POST, and a DNS name rebound to loopback
 * arrives with that name as Host: neither may spend the upstream's key. */
static int from_own_page(struct MHD_Connection *c) {
  const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
  const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
  if (!host) return 0;
  size_t name = strcspn(host, ":");
  int loopback = name == 9 && (strncmp(host, "127.0.0.1", 9) == 0 || strncmp(host, "localhost", 9) == 0);
  return loopback && (!origin || (strncmp(origin, "http://", 7) == 0 && strcmp(origin + 7, host) == 0));
}

static enum MHD_Result send_relay(conn *k, const srv_route *route) {
  if (!from_own_page(k->c))
    return send_error(k, 403, "this proxy serves pages of its own server only", "forbidden");
  relay *r = relay_new(k, route);
  struct MHD_Response *resp =
      r ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, relay_read, r, relay_let_go) : NULL;
  if (!resp) {
    if (r) relay_release(r);
    return send_error(k, 500, "out of memory", NULL);
  }
  pthread_t thread;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  r->refs++;
  if (pthread_create(&thread, &attr, relay_run, r) != 0) {
    r->refs--;
    relay_fail(r, "cannot start a thread for the upstream request");
  }
  pthread_attr_destroy(&attr);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  k->status = 200;
  enum MHD_Result ok = MHD_queue_response(k->c, MHD_HTTP_OK, resp);
  MHD_destroy_response(resp);
  return ok;
}

static enum MHD_Result send_page(conn *k, const srv_route *route) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(route->body_len, route->body, MHD_RESPMEM_PERSISTENT);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, route->content_type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  k->status = 200;
  enum MHD_Result ok = MHD_queue_response(k->c, MHD_HTTP_OK, resp);
  MHD_destroy_response(resp);
  return ok;
}

static enum MHD_Result dispatch_route(conn *k, const char *url, const char *method) {
  const srv_route *route = NULL;
  for (int i = 0; i < k->s->nroutes && !route; i++)
    if (strcmp(k->s->routes[i].path, url) == 0) route = &k->s->routes[i];
  if (!route) return send_error(k, 404, "no such endpoint", "not_found");
  if (route->upstream)
    return strcmp(method, "POST") == 0 ? send_relay(k, route)
                                       : send_error(k, 405, "this endpoint takes POST", "method_not_allowed");
  if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) return send_page(k, route);
  return send_error(k, 405, "this page takes GET", "method_not_allowed");
}

static int check_route(const mf_server_route *r) {
  if (!r->path || r->path[0] != '/') return mf_fail("server: a route's path must start with '/'");
  if (route(r->path) != EP_OTHER) return mf_fail("server: route %s is an API endpoint", r->path);
  if (r->upstream && strncmp(r->upstream, "http://", 7) != 0 && strncmp(r->upstream, "https://", 8) != 0)
    return mf_fail("server: route %s: upstream '%s' is not an http:// or https:// URL", r->path, r->upstream);
  if (!r->upstream && (!r->content_type || (!r->body && r->body_len)))
    return mf_fail("server: route %s: a page needs a content type and its bytes", r->path);
  return 0;
}

int srv_routes_copy(mf_server *s) {
  int n = s->opts.nroutes;
  if (n <= 0) return 0;
  if (!s->opts.routes) return mf_fail("server: nroutes is %d but routes is NULL", n);
  if (!(s->routes = calloc((size_t)n, sizeof *s->routes))) return mf_fail("server: out of memory");
  for (int i = 0; i < n; i++) {
    const mf_server_route *from = &s->opts.routes[i];
    srv_route *to = &s->routes[i];
    if (check_route(from)) return -1;
    s->nroutes = i + 1;
    to->path = strdup(from->path);
    to->headers = copy_lines(from->headers);
    if (from->upstream) to->upstream = strdup(from->upstream);
    else {
      to->content_type = strdup(from->content_type);
      to->body = copy_bytes(from->body, from->body_len);
      to->body_len = from->body_len;
    }
    if (!to->path || !to->headers || !(to->upstream || (to->content_type && to->body)))
      return mf_fail("server: out of memory");
  }
  return 0;
}

void srv_routes_free(mf_server *s) {
  for (int i = 0; i < s->nroutes; i++) {
    srv_route *r = &s->routes[i];
    free(r->path);
    free(r->content_type);
    free(r->body);
    free(r->upstream);
    free_lines(r->headers);
  }
  free(s->routes);
  s->routes = NULL;
  s->nroutes = 0;
}

/* ---- requests ---- */

static enum MHD_Result send_answer(conn *k, srv_request *r) {
  mf_server *s = k->s;
  pthread_mutex_lock(&s->lock);
  while (!r->finish_reason) wait_slice(s, k->c, r);
  pthread_mutex_unlock(&s->lock);
  enum MHD_Result ok = failed(r) ? send_failure(k, r) : send_json(k, 200, srv_reply_json(s, r));
  srv_request_release(s, r);
  return ok;
}

static enum MHD_Result handle_post(conn *k) {
  char *error = NULL;
  int status = 0;
  srv_request *r = srv_parse(k->s, k->ep, k->body ? k->body : "", k->len, &error, &status);
  if (!r) return send_json(k, status, error);
  r->refs = 2;  /* this connection's and the scheduler's */
  status = srv_enqueue(k->s, r);
  if (status) {
    srv_request_release(k->s, r);
    srv_request_release(k->s, r);
    return status == 429 ? send_error(k, 429, "the queue is full; try again later", "queue_full")
                         : send_error(k, 503, "the server is stopping", "stopping");
  }
  return r->stream && r->endpoint != EP_EMBEDDINGS ? send_stream(k, r) : send_answer(k, r);
}

static enum MHD_Result dispatch(conn *k, const char *url, const char *method) {
  mf_server *s = k->s;
  int post = k->ep == EP_COMPLETIONS || k->ep == EP_CHAT || k->ep == EP_EMBEDDINGS;
  if (k->ep == EP_OTHER) return dispatch_route(k, url, method);
  if (!s->model && k->ep != EP_HEALTH && k->ep != EP_METRICS)
    return send_error(k, 404, "this server serves no model", "no_model");
  if (strcmp(method, post ? "POST" : "GET") != 0)
    return send_error(k, 405, post ? "this endpoint takes POST" : "this endpoint takes GET", "method_not_allowed");
  if (post) return handle_post(k);
  if (k->ep == EP_HEALTH) return send_json(k, 200, strdup("{\"status\":\"ok\"}"));
  if (k->ep == EP_MODELS) return send_json(k, 200, srv_models_json(s));
  return send_text(k, 200, srv_metrics_text(s), "text/plain; version=0.0.4");
}

static void take_body(conn *k, const char *data, size_t n) {
  if (k->too_large) return;
  if (k->len + n > (size_t)k->s->opts.max_body) {
    k->too_large = 1;
    free(k->body);
    k->body = NULL;
    return;
  }
  if (k->len + n + 1 > k->cap) {
    size_t cap = 2 * (k->len + n) + 1;
    char *grown = realloc(k->body, cap);
    if (!grown) {
      k->too_large = 1;
      return;
    }
    k->body = grown;
    k->cap = cap;
  }
  memcpy(k->body + k->len, data, n);
  k->len += n;
}

static enum MHD_Result too_large(conn *k) {
  char message[128];
  snprintf(message, sizeof message, "the body exceeds %lld bytes", (long long)k->s->opts.max_body);
  return send_error(k, 413, message, "body_too_large");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **state) {
  mf_server *s = cls;
  conn *k = *state;
  if (!k) {
    k = calloc(1, sizeof *k);
    if (!k) return MHD_NO;
    *k = (conn){.s = s, .c = c, .ep = route(url), .started = now()};
    *state = k;
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length && strtoull(length, NULL, 10) > (unsigned long long)s->opts.max_body) return too_large(k);
    return MHD_YES;
  }
  if (*upload_size) {
    take_body(k, upload_data, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  if (k->status) return MHD_YES;  /* answered already (413 before the body) */
  if (k->too_large) return too_large(k);
  return dispatch(k, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode why) {
  mf_server *s = cls;
  conn *k = *state;
  if (!k) return;
  if (k->status) {
    pthread_mutex_lock(&s->lock);
    srv_metrics_request(&s->metrics, k->ep, k->status, now() - k->started);
    pthread_mutex_unlock(&s->lock);
  }
  free(k->body);
  free(k);
  *state = NULL;
}

int srv_http_start(mf_server *s) {
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->opts.port)};
  if (inet_pton(AF_INET, s->host, &addr.sin_addr) != 1)
    return mf_fail("server: '%s' is not an IPv4 address to bind", s->host);
  s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC,
                               (uint16_t)s->opts.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->opts.timeout_s,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->opts.max_connections,
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
  if (!s->daemon) return mf_fail("server: cannot listen on %s:%d (in use, or not allowed)", s->host, s->opts.port);
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : s->opts.port;
  return 0;
}

/* Closes the listening socket: no new connections. */
void srv_http_quiesce(mf_server *s) {
  MHD_socket fd = MHD_quiesce_daemon(s->daemon);
  if (fd != MHD_INVALID_SOCKET) s->listen_fd = fd;
}

void srv_http_stop(mf_server *s) {
  MHD_stop_daemon(s->daemon);
  if (s->listen_fd >= 0) close(s->listen_fd);
}
