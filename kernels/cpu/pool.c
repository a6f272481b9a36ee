/*
 * Thread pool: persistent workers that share each mfk_parallel_for call with
 * the calling thread.
 *
 * Ranges are handed out from an atomic counter, so a worker slowed down by
 * the rest of the machine takes fewer of them. Which thread runs a range
 * never changes the result: kernels only split work along independent
 * outputs. Workers spin briefly before sleeping because kernels come in quick
 * succession and a futex wake-up costs more than a short spin. Calls from
 * several threads are serialised; a call from inside a range runs inline.
 */
#include "cpu/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

enum { SPIN_ROUNDS = 20000 };

struct mfk_pool {
  int nthreads; /* workers plus the calling thread */
  pthread_t *workers;
  pthread_mutex_t call_lock; /* one parallel_for at a time */
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  /* the current call */
  mfk_range_fn fn;
  void *ctx;
  int64_t n, grain;
  atomic_llong next;
  atomic_uint generation;
  atomic_int running; /* workers still inside the current call */
  int stop;
};

static _Thread_local int inside_range;

static void cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void run_ranges(mfk_pool *p) {
  inside_range = 1;
  for (;;) {
    int64_t begin = atomic_fetch_add(&p->next, p->grain);
    if (begin >= p->n) break;
    p->fn(p->ctx, begin, mfk_min(begin + p->grain, p->n));
  }
  inside_range = 0;
}

static unsigned wait_for_call(mfk_pool *p, unsigned seen) {
  for (int i = 0; i < SPIN_ROUNDS; i++) {
    unsigned g = atomic_load(&p->generation);
    if (g != seen) return g;
    cpu_pause();
  }
  pthread_mutex_lock(&p->lock);
  unsigned g;
  while ((g = atomic_load(&p->generation)) == seen && !p->stop) pthread_cond_wait(&p->wake, &p->lock);
  pthread_mutex_unlock(&p->lock);
  return g;
}

static void *worker_main(void *arg) {
  mfk_pool *p = arg;
  unsigned seen = 0;
  for (;;) {
    seen = wait_for_call(p, seen);
    pthread_mutex_lock(&p->lock);
    int stop = p->stop;
    pthread_mutex_unlock(&p->lock);
    if (stop) return NULL;
    run_ranges(p);
    if (atomic_fetch_sub(&p->running, 1) == 1) {
      pthread_mutex_lock(&p->lock);
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->lock);
    }
  }
}

mfk_pool *mfk_pool_new(int nthreads) {
  if (nthreads < 1) nthreads = 1;
  mfk_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->nthreads = nthreads;
  pthread_mutex_init(&p->call_lock, NULL);
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  p->workers = calloc((size_t)nthreads, sizeof *p->workers);
  if (!p->workers) {
    free(p);
    return NULL;
  }
  for (int i = 0; i < nthreads - 1; i++) {
    if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
      p->nthreads = i + 1; /* run with the workers that did start */
      break;
    }
  }
  return p;
}

void mfk_pool_free(mfk_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->stop = 1;
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->workers[i], NULL);
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->call_lock);
  free(p->workers);
  free(p);
}

int mfk_pool_size(const mfk_pool *p) { return p ? p->nthreads : 1; }

void mfk_parallel_for(mfk_pool *p, int64_t n, mfk_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (!p || p->nthreads == 1 || n == 1 || inside_range) {
    fn(ctx, 0, n);
    return;
  }
  pthread_mutex_lock(&p->call_lock);
  p->fn = fn;
  p->ctx = ctx;
  p->n = n;
  /* about four ranges per thread: enough to even out, few enough to be cheap */
  p->grain = mfk_max(1, n / (4 * (int64_t)p->nthreads));
  atomic_store(&p->next, 0);
  atomic_store(&p->running, p->nthreads - 1);
  pthread_mutex_lock(&p->lock);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  run_ranges(p);
  for (int i = 0; i < SPIN_ROUNDS && atomic_load(&p->running) > 0; i++) cpu_pause();
  pthread_mutex_lock(&p->lock);
  while (atomic_load(&p->running) > 0) pthread_cond_wait(&p->done, &p->lock);
  pthread_mutex_unlock(&p->lock);
  pthread_mutex_unlock(&p->call_lock);
}

typedef struct elem_job {
  mfk_range_fn fn;
  void *ctx;
  int64_t n;
} elem_job;

static void run_elem_blocks(void *arg, int64_t b0, int64_t b1) {
  elem_job *job = arg;
  job->fn(job->ctx, b0 * MFK_BLOCK, mfk_min(b1 * MFK_BLOCK, job->n));
}

void mfk_parallel_for_elems(mfk_pool *pool, int64_t n, mfk_range_fn fn, void *ctx) {
  elem_job job = { fn, ctx, n };
  mfk_parallel_for(pool, mfk_ceil_div(n, MFK_BLOCK), run_elem_blocks, &job);
}
