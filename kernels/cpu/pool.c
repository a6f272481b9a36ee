/*
 * Thread pool: persistent workers that share each mfk_parallel_for call with
 * the calling thread.
 *
 * Ranges are handed out from an atomic counter, so a worker slowed down by
 * the rest of the machine takes fewer of them. Which thread runs a range
 * never changes the result: kernels only split work along independent
 * outputs, and the ranges depend on n and the pool size alone.
 *
 * A call is open while its caller still runs ranges. Workers join an open
 * call (the count of those inside it sits next to the open bit in one atomic
 * word), and the caller, once it runs out of ranges, closes the call and
 * waits only for the workers that joined. So a worker the system has not
 * scheduled yet never holds up a call: on a machine with more runnable
 * threads than cores the caller simply does that worker's share itself.
 *
 * Waiting, by workers for the next call and by the caller for the joined
 * workers, spins briefly (kernels come in quick succession and a wake-up
 * costs more than a short spin), then yields the core a few times, then
 * sleeps on a condition variable. Calls from several threads are
 * serialised; a call from inside a range runs inline.
 */
#include "cpu/common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

enum {
  SPIN_ROUNDS = 2000, /* pause instructions, some tens of microseconds */
  YIELD_ROUNDS = 8,   /* sched_yield calls before sleeping */
};

/* The call word: generation << 32 | OPEN | workers inside the call. */
#define CALL_OPEN ((uint64_t)1 << 31)
#define CALL_INSIDE ((uint64_t)0xffff)
#define CALL_GENERATION(s) ((uint32_t)((s) >> 32))

struct mfk_pool {
  int nthreads; /* workers plus the calling thread */
  pthread_t *workers;
  pthread_mutex_t call_lock; /* one parallel_for at a time */
  pthread_mutex_t lock;      /* guards sleeping on wake and done */
  pthread_cond_t wake, done;
  atomic_int stop;
  /* the current call, written by the caller before it opens the call */
  mfk_range_fn fn;
  void *ctx;
  int64_t n, grain;
  atomic_llong next;
  _Atomic uint64_t call;
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

/* Waits until ready(p, arg) holds: spinning, then yielding, then sleeping
 * on cond, whose signallers change the state under p->lock. */
typedef int (*ready_fn)(mfk_pool *p, uint64_t arg);

static void wait_until(mfk_pool *p, pthread_cond_t *cond, ready_fn ready, uint64_t arg) {
  for (int i = 0; i < SPIN_ROUNDS; i++) {
    if (ready(p, arg)) return;
    cpu_pause();
  }
  for (int i = 0; i < YIELD_ROUNDS; i++) {
    if (ready(p, arg)) return;
    sched_yield();
  }
  pthread_mutex_lock(&p->lock);
  while (!ready(p, arg)) pthread_cond_wait(cond, &p->lock);
  pthread_mutex_unlock(&p->lock);
}

static int new_call(mfk_pool *p, uint64_t seen) {
  return CALL_GENERATION(atomic_load(&p->call)) != seen || atomic_load(&p->stop);
}

static int workers_out(mfk_pool *p, uint64_t unused) {
  (void)unused;
  return (atomic_load(&p->call) & CALL_INSIDE) == 0;
}

/* Enters the call if it is still open; returns its generation either way. */
static uint32_t join(mfk_pool *p, int *joined) {
  uint64_t s = atomic_load(&p->call);
  while (s & CALL_OPEN)
    if (atomic_compare_exchange_weak(&p->call, &s, s + 1)) {
      *joined = 1;
      return CALL_GENERATION(s);
    }
  *joined = 0;
  return CALL_GENERATION(s);
}

static void *worker_main(void *arg) {
  mfk_pool *p = arg;
  uint32_t seen = 0;
  for (;;) {
    wait_until(p, &p->wake, new_call, seen);
    if (atomic_load(&p->stop)) return NULL;
    int joined;
    seen = join(p, &joined);
    if (!joined) continue;
    run_ranges(p);
    /* The last one out of a closed call wakes the caller. */
    uint64_t s = atomic_fetch_sub(&p->call, 1) - 1;
    if ((s & (CALL_OPEN | CALL_INSIDE)) == 0) {
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
  atomic_store(&p->stop, 1);
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
  uint64_t generation = CALL_GENERATION(atomic_load(&p->call)) + 1u;
  pthread_mutex_lock(&p->lock);
  atomic_store(&p->call, (uint64_t)(uint32_t)generation << 32 | CALL_OPEN);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  run_ranges(p);
  /* Every range is taken: workers that have not joined yet need not. */
  atomic_fetch_and(&p->call, ~CALL_OPEN);
  wait_until(p, &p->done, workers_out, 0);
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
