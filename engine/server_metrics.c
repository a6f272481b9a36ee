/*
 * The server's /metrics: Prometheus' text exposition format (version
 * 0.0.4). Requests by endpoint and status, request latency histograms by
 * endpoint, prompt and completion tokens, the queue's length and the
 * sequences being decoded; with a RAG store, a histogram of the time its
 * queries take. Counters live in srv_metrics under the server's lock.
 */
#define _GNU_SOURCE /* open_memstream */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>

static const int statuses[8] = {200, 400, 404, 405, 413, 429, 500, 503};
static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
enum { NBOUNDS = sizeof bounds / sizeof bounds[0] };
static const char *const endpoints[EP_COUNT] = {"/v1/models", "/v1/completions", "/v1/chat/completions",
                                                "/v1/embeddings", "/health", "/metrics", "other"};

static int status_index(int status) {
  for (int i = 0; i < 8; i++)
    if (statuses[i] == status) return i;
  return 6; /* any other status is counted as a 500 */
}

static void observe(srv_histogram *h, double seconds) {
  int b = 0;
  while (b < NBOUNDS && seconds > bounds[b]) b++;
  h->buckets[b]++;
  h->sum += seconds;
  h->count++;
}

void srv_metrics_request(srv_metrics *m, srv_endpoint ep, int status, double seconds) {
  m->requests[ep][status_index(status)]++;
  observe(&m->latency[ep], seconds);
}

void srv_metrics_retrieval(srv_metrics *m, double seconds) { observe(&m->retrieval, seconds); }

/* The series of one histogram; labels is "" or 'key="value"'. */
static void histogram(FILE *f, const char *name, const char *labels, const srv_histogram *h) {
  const char *comma = *labels ? "," : "";
  uint64_t cumulative = 0;
  for (int b = 0; b < NBOUNDS; b++) {
    cumulative += h->buckets[b];
    fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, comma, bounds[b], (unsigned long long)cumulative);
  }
  fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, comma, (unsigned long long)h->count);
  char set[96] = "";
  if (*labels) snprintf(set, sizeof set, "{%s}", labels);
  fprintf(f, "%s_sum%s %.6f\n", name, set, h->sum);
  fprintf(f, "%s_count%s %llu\n", name, set, (unsigned long long)h->count);
}

static void gauge(FILE *f, const char *name, const char *help, const char *type, unsigned long long value) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, value);
}

char *srv_metrics_text(mf_server *s) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return NULL;
  pthread_mutex_lock(&s->lock);
  const srv_metrics *m = &s->metrics;
  fputs("# HELP moonforge_requests_total HTTP requests by endpoint and status.\n"
        "# TYPE moonforge_requests_total counter\n", f);
  for (int ep = 0; ep < EP_COUNT; ep++)
    for (int i = 0; i < 8; i++)
      if (m->requests[ep][i])
        fprintf(f, "moonforge_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", endpoints[ep], statuses[i],
                (unsigned long long)m->requests[ep][i]);
  fputs("# HELP moonforge_request_duration_seconds Time from a request's arrival to the end of its reply.\n"
        "# TYPE moonforge_request_duration_seconds histogram\n", f);
  for (int ep = 0; ep < EP_COUNT; ep++) {
    char labels[64];
    snprintf(labels, sizeof labels, "endpoint=\"%s\"", endpoints[ep]);
    if (m->latency[ep].count) histogram(f, "moonforge_request_duration_seconds", labels, &m->latency[ep]);
  }
  if (s->opts.retriever) {
    fputs("# HELP moonforge_retrieval_duration_seconds Time to embed a chat's query and search the RAG store.\n"
          "# TYPE moonforge_retrieval_duration_seconds histogram\n", f);
    histogram(f, "moonforge_retrieval_duration_seconds", "", &m->retrieval);
  }
  gauge(f, "moonforge_prompt_tokens_total", "Prompt tokens of finished requests.", "counter", m->prompt_tokens);
  gauge(f, "moonforge_completion_tokens_total", "Tokens generated.", "counter", m->completion_tokens);
  gauge(f, "moonforge_queue_length", "Requests waiting for a slot.", "gauge", (unsigned long long)s->queued);
  gauge(f, "moonforge_active_sequences", "Sequences being decoded.", "gauge", (unsigned long long)s->active);
  gauge(f, "moonforge_slots", "Sequences that can be decoded together.", "gauge", (unsigned long long)s->opts.parallel);
  pthread_mutex_unlock(&s->lock);
  fclose(f);
  return text;
}
