/*
 * HTTP client: one request at a time through libcurl, for remote model
 * endpoints (OpenAI-compatible APIs, judges) and server-sent event streams.
 *
 * Contract (see moonforge.h, "HTTP client"): any HTTP status counts as a
 * response and is handed to the caller, who decides what a 4xx or 5xx
 * means; only a request that got no response at all fails. Only http and
 * https are spoken, also across redirects. The caller owns retries.
 */
#define _POSIX_C_SOURCE 200809L
#include "moonforge.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

/* A buffered response larger than this is refused: a reply from a model
 * endpoint is small, and a hostile server must not exhaust memory. Bulk
 * transfers go through mf_http_stream. */
enum { MAX_BUFFERED = 256 << 20 };

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_status;

/* curl_global_init is not thread-safe; it must run exactly once. */
static void init_curl(void) { curl_init_status = curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct stream_state {
  mf_http_chunk_fn on_chunk;
  void *ctx;
  int stopped; /* the caller asked to stop: not a failure */
} stream_state;

static size_t on_data(char *data, size_t size, size_t nmemb, void *userdata) {
  stream_state *s = userdata;
  size_t n = size * nmemb;
  if (n > 0 && s->on_chunk(s->ctx, data, n) != 0) {
    s->stopped = 1;
    return 0; /* any count but n makes curl abort the transfer */
  }
  return n;
}

static int known_method(const char *method) {
  static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"};
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (strcmp(method, methods[i]) == 0) return 1;
  return 0;
}

/* The header list for curl. "Expect:" stops curl from waiting for a
 * 100-continue that many servers never send before a large body. */
static struct curl_slist *header_list(const char *const *headers, int *failed) {
  struct curl_slist *list = curl_slist_append(NULL, "Expect:");
  for (size_t i = 0; list && headers && headers[i]; i++) {
    struct curl_slist *next = curl_slist_append(list, headers[i]);
    if (!next) {
      curl_slist_free_all(list);
      list = NULL;
    } else {
      list = next;
    }
  }
  *failed = list == NULL;
  return list;
}

static void set_method(CURL *curl, const char *method, const void *body, size_t body_len) {
  if (body) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  else if (strcmp(method, body ? "POST" : "GET") != 0) curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
}

static int report_failure(CURLcode rc, const char *url, const char *detail) {
  const char *why = detail[0] ? detail : curl_easy_strerror(rc);
  if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL)
    return mf_fail("bad URL %s: %s", url, why);
  if (rc == CURLE_OUT_OF_MEMORY) return mf_fail("%s: out of memory", url);
  return mf_fail("cannot reach %s: %s", url, why);
}

static void set_options(CURL *curl, const char *url, struct curl_slist *headers, stream_state *state,
                        char *detail, int64_t timeout_ms) {
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, state);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, detail);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM: callers may be threads */
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "moonforge/" MF_VERSION_STRING);
  if (timeout_ms > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
}

int mf_http_stream(const char *method, const char *url, const char *const *headers, const void *body,
                   size_t body_len, int64_t timeout_ms, mf_http_chunk_fn on_chunk, void *ctx, int *status) {
  if (!method || !known_method(method))
    return mf_fail("http: unsupported method '%s' (GET, POST, PUT, PATCH, DELETE, HEAD)", method ? method : "(null)");
  if (!url || !on_chunk || !status) return mf_fail("http: url, on_chunk and status are required");
  pthread_once(&curl_once, init_curl);
  if (curl_init_status != CURLE_OK)
    return mf_fail("http: libcurl failed to initialise: %s", curl_easy_strerror(curl_init_status));
  CURL *curl = curl_easy_init();
  int failed;
  struct curl_slist *list = header_list(headers, &failed);
  if (!curl || failed) {
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    return mf_fail("%s: out of memory", url);
  }
  char detail[CURL_ERROR_SIZE] = "";
  stream_state state = {on_chunk, ctx, 0};
  set_options(curl, url, list, &state, detail, timeout_ms);
  set_method(curl, method, body, body_len);
  CURLcode rc = curl_easy_perform(curl);
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(curl);
  curl_slist_free_all(list);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && state.stopped)) return report_failure(rc, url, detail);
  *status = (int)code;
  return 0;
}

typedef struct buffer {
  char *data;
  size_t len, cap;
  int too_big, out_of_memory; /* why the reply could not be kept */
} buffer;

static int append(void *ctx, const char *data, size_t n) {
  buffer *b = ctx;
  if (n > MAX_BUFFERED - b->len) {
    b->too_big = 1;
    return 1;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap;
    while (cap < b->len + n + 1) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) {
      b->out_of_memory = 1;
      return 1;
    }
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

int mf_http_request(const char *method, const char *url, const char *const *headers, const void *body,
                    size_t body_len, int64_t timeout_ms, int *status, char **response, size_t *response_len) {
  if (!response || !response_len) return mf_fail("http: response and response_len are required");
  buffer b = {malloc(4096), 0, 4096, 0, 0};
  if (!b.data) return mf_fail("http: out of memory");
  b.data[0] = 0;
  int rc = mf_http_stream(method, url, headers, body, body_len, timeout_ms, append, &b, status);
  if (rc == 0 && b.too_big) rc = mf_fail("%s: the response exceeds %d MiB", url, MAX_BUFFERED >> 20);
  if (rc == 0 && b.out_of_memory) rc = mf_fail("%s: out of memory", url);
  if (rc != 0) {
    free(b.data);
    return -1;
  }
  *response = b.data;
  *response_len = b.len;
  return 0;
}

void mf_sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}
