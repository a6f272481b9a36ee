/* The engine's worker count: MOONFORGE_THREADS, else every online core. */
#include "moonforge.h"
#include "internal.h"

#include <stdlib.h>
#include <unistd.h>

static int thread_count;

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
  thread_count = n;
  return 0;
}
