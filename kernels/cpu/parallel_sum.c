/*
 * Ordered parallel sums: items are evaluated in parallel a group at a time
 * into a buffer, then added in index order, so the total never depends on
 * the thread count.
 */
#include "cpu/common.h"

enum { GROUP = 1024 };

typedef struct sum_job {
  mfk_item_fn item;
  void *ctx;
  int64_t first;
  double *values;
} sum_job;

static void eval_items(void *arg, int64_t i0, int64_t i1) {
  const sum_job *job = arg;
  for (int64_t i = i0; i < i1; i++) job->values[i] = job->item(job->ctx, job->first + i);
}

double mfk_parallel_sum(mfk_pool *pool, int64_t n, mfk_item_fn item, void *ctx) {
  double values[GROUP], total = 0;
  for (int64_t first = 0; first < n; first += GROUP) {
    int64_t count = mfk_min(GROUP, n - first);
    sum_job job = { item, ctx, first, values };
    mfk_parallel_for(pool, count, eval_items, &job);
    for (int64_t i = 0; i < count; i++) total += values[i];
  }
  return total;
}
