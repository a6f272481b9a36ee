/*
 * The engine's worker count (MOONFORGE_THREADS, else every online core) and
 * the default kernel pool of that size, created on first use. Changing the
 * count replaces the pool; do it between computations, not during one.
 */
#include "moonforge.h"
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static int thread_count;
static mfk_pool *default_pool;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

int mf_threads(void) {
  if (thread_count > 0) return thread_count;
  const char *env = getenv("MOONFORGE_THREADS");
  int n = env ? atoi(env) : 0;
  if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  thread_count = n > 0 ? n : 1;
  return thread_count;
}

int mf_set_threads(int n) {
  if (n < 1 || n > 1024) return mf_fail("thread count %d out of range 1..1024", n);
  pthread_mutex_lock(&pool_lock);
  thread_count = n;
  if (default_pool && mfk_pool_size(default_pool) != n) {
    mfk_pool_free(default_pool);
    default_pool = NULL;
  }
  pthread_mutex_unlock(&pool_lock);
  return 0;
}

mfk_pool *mf_pool(void) {
  pthread_mutex_lock(&pool_lock);
  if (!default_pool) default_pool = mfk_pool_new(mf_threads());
  mfk_pool *pool = default_pool;
  pthread_mutex_unlock(&pool_lock);
  return pool;
}
