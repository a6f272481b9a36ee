/*
 * The server's lifecycle (its parts are listed in server.h): options and
 * their defaults, the request queue between connection threads and the
 * scheduler, and an orderly stop: no new connections, in-flight requests
 * finish within the grace period, the rest are cancelled, then every
 * thread is joined.
 */
#include "server.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { STOP_POLL_MS = 20 };

static int set_string(char *dst, size_t cap, const char *src, const char *fallback, const char *what) {
  if (!src || !*src) src = fallback;
  if (strlen(src) >= cap) return mf_fail("server: %s '%.40s...' is longer than %zu bytes", what, src, cap - 1);
  strcpy(dst, src);
  return 0;
}

/* What the HTTP side needs, with or without a model. */
static int apply_http_defaults(mf_server *s) {
  mf_server_opts *o = &s->opts;
  if (o->max_body <= 0) o->max_body = 1 << 20;
  if (o->timeout_s <= 0) o->timeout_s = 30;
  if (o->max_connections <= 0) o->max_connections = 256;
  if (o->grace_ms <= 0) o->grace_ms = 5000;
  if (o->port < 0 || o->port > 65535) return mf_fail("server: port %d is not in [0, 65535]", o->port);
  return 0;
}

static int apply_model_defaults(mf_server *s, const mf_model_config *cfg) {
  mf_server_opts *o = &s->opts;
  int64_t longest = cfg->max_position_embeddings > 0 ? cfg->max_position_embeddings : 2048;
  if (o->context <= 0) o->context = longest < 2048 ? longest : 2048;
  if (o->context > longest)
    return mf_fail("server: context %lld exceeds the model's max_position_embeddings %lld", (long long)o->context,
                   (long long)longest);
  if (o->parallel <= 0) o->parallel = 8;
  if (o->max_tokens <= 0 || o->max_tokens > o->context) o->max_tokens = (int)o->context;
  if (o->default_max_tokens <= 0) o->default_max_tokens = 256;
  if (o->default_max_tokens > o->max_tokens) o->default_max_tokens = o->max_tokens;
  if (o->max_queue <= 0) o->max_queue = 64;
  if (o->top_k <= 0) o->top_k = 4;
  if (o->top_k > SRV_MAX_TOP_K) return mf_fail("server: top_k %d exceeds %d", o->top_k, SRV_MAX_TOP_K);
  return 0;
}

/* Chat needs a template the server knows; without one, chat requests get
 * a 400 saying so and the rest of the API still works. */
static int choose_template(mf_server *s) {
  if (mf_chat_template_kind(s->tok, s->chat_template[0] ? s->chat_template : NULL) >= 0) return 0;
  if (s->chat_template[0]) return -1;
  s->chat_error = strdup(mf_errmsg());
  return 0;
}

static int configure_model(mf_server *s) {
  const mf_model_config *cfg = mf_model_get_config(s->model);
  int32_t V = mf_tokenizer_vocab_size(s->tok);
  if (V > cfg->vocab_size)
    return mf_fail("server: the tokenizer has %d ids but the model only %d", (int)V, cfg->vocab_size);
  return apply_model_defaults(s, cfg) || choose_template(s) ? -1 : 0;
}

static int configure(mf_server *s, const mf_server_opts *opts) {
  if (opts) s->opts = *opts;
  if (set_string(s->host, sizeof s->host, s->opts.host, "127.0.0.1", "host") ||
      set_string(s->name, sizeof s->name, s->opts.name, "moonforge", "name") ||
      set_string(s->chat_template, sizeof s->chat_template, s->opts.chat_template, "", "chat template") ||
      apply_http_defaults(s) || (s->model && configure_model(s)) || srv_routes_copy(s))
    return -1;
  /* the copies above are the ones used */
  s->opts.host = s->opts.name = s->opts.chat_template = NULL;
  s->opts.routes = NULL;
  return 0;
}

/* Ends the scheduler: cancels whatever is left and joins the thread. */
static void stop_scheduler(mf_server *s) {
  pthread_mutex_lock(&s->lock);
  s->stopping = s->cancel_all = 1;
  pthread_cond_broadcast(&s->wake);
  pthread_mutex_unlock(&s->lock);
  if (s->scheduler_started) pthread_join(s->scheduler, NULL);
}

static void server_free(mf_server *s) {
  srv_routes_free(s);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->wake);
  free(s->chat_error);
  free(s);
}

static int start_scheduler(mf_server *s) {
  void *sched = srv_sched_new(s);
  if (!sched) return -1;
  if (pthread_create(&s->scheduler, NULL, srv_schedule, sched) != 0) {
    s->stopping = 1;
    srv_schedule(sched);  /* nothing to do: it frees its state and returns */
    return mf_fail("server: cannot start the scheduler thread");
  }
  s->scheduler_started = 1;
  return 0;
}

mf_server *mf_server_start(mf_model *m, mf_tokenizer *t, const mf_server_opts *opts) {
  if (!m != !t) return mf_fail_null("server: a model needs its tokenizer (both, or neither for routes alone)");
  mf_server *s = calloc(1, sizeof *s);
  if (!s) return mf_fail_null("server: out of memory");
  s->model = m;
  s->tok = t;
  s->listen_fd = -1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->wake, NULL);
  if (configure(s, opts) || (m && start_scheduler(s))) {
    server_free(s);
    return NULL;
  }
  if (srv_http_start(s)) {
    stop_scheduler(s);
    server_free(s);
    return NULL;
  }
  return s;
}

int mf_server_port(const mf_server *s) { return s->port; }

int srv_enqueue(mf_server *s, srv_request *r) {
  int status = 0;
  pthread_mutex_lock(&s->lock);
  if (s->stopping) status = 503;
  else if (s->queued >= s->opts.max_queue) status = 429;
  else {
    if (s->tail) s->tail->next = r;
    else s->head = r;
    s->tail = r;
    s->queued++;
    pthread_cond_signal(&s->wake);
  }
  pthread_mutex_unlock(&s->lock);
  return status;
}

static int busy(mf_server *s) {
  pthread_mutex_lock(&s->lock);
  int n = s->active + s->queued;
  pthread_mutex_unlock(&s->lock);
  return n > 0;
}

void mf_server_stop(mf_server *s) {
  if (!s) return;
  srv_http_quiesce(s);
  pthread_mutex_lock(&s->lock);
  s->stopping = 1;
  pthread_cond_broadcast(&s->wake);
  pthread_mutex_unlock(&s->lock);
  for (int waited = 0; busy(s) && waited < s->opts.grace_ms; waited += STOP_POLL_MS) mf_sleep_ms(STOP_POLL_MS);
  stop_scheduler(s);
  srv_http_stop(s);
  server_free(s);
}
