/*
 * HNSW graphs for vector indexes (Malkov and Yashunin, "Efficient and robust
 * approximate nearest neighbor search using Hierarchical Navigable Small
 * World graphs", 2016): insertion with the neighbour-selection heuristic,
 * and search, parallel over queries.
 *
 * A node's level is drawn from the counter-based stream of the index's seed
 * at the node's slot, and insertions run one after another, so the same
 * vectors added in the same order give the same graph, link for link. Each
 * query is searched by one thread alone; which thread does not matter.
 *
 * A walk holds one search's scratch: visit stamps per slot and two heaps,
 * sized for the whole index so that a search never allocates.
 */
#include "vindex.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_LEVEL = 30 };

/* A binary heap of hits; the root is the best hit, or the worst with worst_on_top. */
typedef struct {
  vx_hit *h;
  int64_t n;
  int worst_on_top;
} heap;

typedef struct vx_walk {
  uint32_t *seen; /* seen[slot] == stamp: visited in this search */
  uint32_t stamp;
  int64_t slots;  /* what seen, cand and res can hold */
  heap cand, res;
  vx_hit *sorted; /* res drained best first */
  int64_t distances;
} walk;

static int above(const mf_vindex *ix, const heap *q, vx_hit a, vx_hit b) {
  return q->worst_on_top ? vx_better(ix, b, a) : vx_better(ix, a, b);
}

static void heap_push(const mf_vindex *ix, heap *q, vx_hit x) {
  int64_t i = q->n++;
  for (; i > 0 && above(ix, q, x, q->h[(i - 1) / 2]); i = (i - 1) / 2) q->h[i] = q->h[(i - 1) / 2];
  q->h[i] = x;
}

static vx_hit heap_pop(const mf_vindex *ix, heap *q) {
  vx_hit top = q->h[0], last = q->h[--q->n];
  int64_t i = 0;
  for (;;) {
    int64_t child = 2 * i + 1;
    if (child >= q->n) break;
    if (child + 1 < q->n && above(ix, q, q->h[child + 1], q->h[child])) child++;
    if (!above(ix, q, q->h[child], last)) break;
    q->h[i] = q->h[child];
    i = child;
  }
  if (q->n > 0) q->h[i] = last;
  return top;
}

void vx_walk_free(walk *w) {
  if (!w) return;
  free(w->seen);
  free(w->cand.h);
  free(w->res.h);
  free(w->sorted);
  free(w);
}

/* A walk over slots 0..slots-1 (each heap can hold every slot once, plus one). */
static walk *walk_new(int64_t slots) {
  walk *w = calloc(1, sizeof *w);
  if (!w) return mf_fail_null("vector index: out of memory for a search");
  w->slots = slots;
  w->seen = calloc((size_t)slots, sizeof *w->seen);
  w->cand.h = malloc((size_t)(slots + 1) * sizeof(vx_hit));
  w->res.h = malloc((size_t)(slots + 1) * sizeof(vx_hit));
  w->sorted = malloc((size_t)(slots + 1) * sizeof(vx_hit));
  w->res.worst_on_top = 1;
  if (!w->seen || !w->cand.h || !w->res.h || !w->sorted) {
    vx_walk_free(w);
    return mf_fail_null("vector index: out of memory for a search over %lld vectors", (long long)slots);
  }
  return w;
}

static void next_stamp(walk *w) {
  if (++w->stamp == 0) { /* wrapped: old stamps could read as current */
    memset(w->seen, 0, (size_t)w->slots * sizeof *w->seen);
    w->stamp = 1;
  }
}

static int32_t *links(const mf_vindex *ix, int64_t node, int level) {
  if (level == 0) return ix->links0 + node * vx_links0_width(ix);
  return ix->upper + ix->upper_off[node] + (int64_t)(level - 1) * (1 + ix->o.M);
}

static vx_hit score(const mf_vindex *ix, walk *w, const float *q, int32_t node) {
  w->distances++;
  return (vx_hit){mfk_dot(q, vx_vector(ix, node), ix->o.dim), node};
}

/* Greedy descent from ep through levels from..to+1: the best node found. */
static vx_hit descend(const mf_vindex *ix, walk *w, const float *q, vx_hit ep, int from, int to) {
  for (int level = from; level > to; level--)
    for (int moved = 1; moved;) {
      moved = 0;
      const int32_t *nb = links(ix, ep.node, level);
      for (int i = 1; i <= nb[0]; i++) {
        vx_hit h = score(ix, w, q, nb[i]);
        if (vx_better(ix, h, ep)) ep = h, moved = 1;
      }
    }
  return ep;
}

/* The ef nodes most like q reachable on `level` from ep, into w->res. With
 * live_only, tombstones still lead the way but are not results. */
static void search_level(const mf_vindex *ix, walk *w, const float *q, vx_hit ep, int ef, int level, int live_only) {
  next_stamp(w);
  w->cand.n = w->res.n = 0;
  w->seen[ep.node] = w->stamp;
  heap_push(ix, &w->cand, ep);
  if (!live_only || !ix->deleted[ep.node]) heap_push(ix, &w->res, ep);
  while (w->cand.n > 0) {
    vx_hit c = heap_pop(ix, &w->cand);
    if (w->res.n >= ef && vx_better(ix, w->res.h[0], c)) break;
    const int32_t *nb = links(ix, c.node, level);
    for (int i = 1; i <= nb[0]; i++) {
      if (w->seen[nb[i]] == w->stamp) continue;
      w->seen[nb[i]] = w->stamp;
      vx_hit h = score(ix, w, q, nb[i]);
      if (w->res.n >= ef && !vx_better(ix, h, w->res.h[0])) continue;
      heap_push(ix, &w->cand, h);
      if (live_only && ix->deleted[h.node]) continue;
      heap_push(ix, &w->res, h);
      if (w->res.n > ef) heap_pop(ix, &w->res);
    }
  }
}

/* Empties w->res into w->sorted, best first; returns the count. */
static int64_t drain(const mf_vindex *ix, walk *w) {
  int64_t n = w->res.n;
  for (int64_t i = n - 1; i >= 0; i--) w->sorted[i] = heap_pop(ix, &w->res);
  return n;
}

/* Keeps at most m of the hits (best first, scored against one base): a hit
 * stays when it is more like the base than like any hit kept before it, so
 * links spread over directions instead of crowding into one cluster. */
static int select_neighbours(const mf_vindex *ix, vx_hit *hits, int64_t n, int m) {
  int kept = 0;
  for (int64_t i = 0; i < n && kept < m; i++) {
    int diverse = 1;
    for (int j = 0; j < kept && diverse; j++)
      diverse = mfk_dot(vx_vector(ix, hits[i].node), vx_vector(ix, hits[j].node), ix->o.dim) < hits[i].s;
    if (diverse) hits[kept++] = hits[i];
  }
  return kept;
}

/* Adds a link node -> to on level; a full list is pruned by the heuristic. */
static void link_back(const mf_vindex *ix, int32_t node, int32_t to, int level) {
  int cap = level == 0 ? 2 * ix->o.M : ix->o.M;
  int32_t *nb = links(ix, node, level);
  if (nb[0] < cap) {
    nb[++nb[0]] = to;
    return;
  }
  vx_hit cands[2 * VX_MAX_M + 1];
  const float *base = vx_vector(ix, node);
  int n = 0;
  for (int i = 0; i <= cap; i++) {
    int32_t other = i < cap ? nb[i + 1] : to;
    vx_hit h = {mfk_dot(base, vx_vector(ix, other), ix->o.dim), other};
    int at = n++;
    for (; at > 0 && vx_better(ix, h, cands[at - 1]); at--) cands[at] = cands[at - 1];
    cands[at] = h;
  }
  nb[0] = select_neighbours(ix, cands, n, cap);
  for (int i = 0; i < nb[0]; i++) nb[i + 1] = cands[i].node;
}

static int draw_level(const mf_vindex *ix, int64_t slot) {
  mf_rng r;
  mf_rng_init(&r, ix->o.seed, mf_hash64("hnsw level", 10));
  double u = ((double)(mf_rng_at(r.key, (uint64_t)slot) >> 11) + 0.5) * 0x1.0p-53; /* (0, 1) */
  int level = (int)(-log(u) / log((double)ix->o.M));
  return level < MAX_LEVEL ? level : MAX_LEVEL;
}

/* The walk for insertions, grown to the index's capacity. */
static walk *build_walk(mf_vindex *ix) {
  if (ix->build_walk && ix->build_walk->slots >= ix->cap) return ix->build_walk;
  walk *w = walk_new(ix->cap);
  if (!w) return NULL;
  vx_walk_free(ix->build_walk);
  ix->build_walk = w;
  return w;
}

int vx_hnsw_insert(mf_vindex *ix, int32_t slot) {
  int level = draw_level(ix, slot);
  int64_t width = 1 + ix->o.M;
  if (vx_reserve(ix, ix->count, ix->upper_len + level * width) != 0) return -1;
  walk *w = build_walk(ix);
  if (!w) return -1;
  ix->levels[slot] = level;
  ix->upper_off[slot] = ix->upper_len;
  memset(ix->upper + ix->upper_len, 0, (size_t)(level * width) * sizeof(int32_t));
  ix->upper_len += level * width;
  links(ix, slot, 0)[0] = 0;
  if (ix->entry < 0) {
    ix->entry = slot;
    ix->max_level = level;
    return 0;
  }
  const float *q = vx_vector(ix, slot);
  vx_hit ep = descend(ix, w, q, score(ix, w, q, (int32_t)ix->entry), ix->max_level, level);
  for (int l = level < ix->max_level ? level : ix->max_level; l >= 0; l--) {
    search_level(ix, w, q, ep, ix->o.ef_construction, l, 0);
    int64_t n = drain(ix, w);
    ep = w->sorted[0];
    int m = select_neighbours(ix, w->sorted, n, ix->o.M);
    int32_t *nb = links(ix, slot, l);
    nb[0] = m;
    for (int i = 0; i < m; i++) {
      nb[i + 1] = w->sorted[i].node;
      link_back(ix, w->sorted[i].node, slot, l);
    }
  }
  if (level > ix->max_level) {
    ix->max_level = level;
    ix->entry = slot;
  }
  return 0;
}

typedef struct {
  const mf_vindex *ix;
  const float *queries;
  int64_t nq, nchunks;
  int k;
  vx_hit *hits;
  int *found;
  int64_t *distances; /* [chunk] */
  int *failed;        /* [chunk] */
} search_job;

static void search_chunks(void *ctx, int64_t begin, int64_t end) {
  const search_job *job = ctx;
  const mf_vindex *ix = job->ix;
  int ef = ix->o.ef_search > job->k ? ix->o.ef_search : job->k;
  for (int64_t c = begin; c < end; c++) {
    walk *w = walk_new(ix->count);
    if (!w) {
      job->failed[c] = 1;
      continue;
    }
    for (int64_t q = c * job->nq / job->nchunks; q < (c + 1) * job->nq / job->nchunks; q++) {
      const float *v = job->queries + q * ix->o.dim;
      vx_hit ep = descend(ix, w, v, score(ix, w, v, (int32_t)ix->entry), ix->max_level, 0);
      search_level(ix, w, v, ep, ef, 0, 1);
      int64_t n = drain(ix, w);
      job->found[q] = (int)(n < job->k ? n : job->k);
      memcpy(job->hits + q * job->k, w->sorted, (size_t)job->found[q] * sizeof(vx_hit));
    }
    job->distances[c] = w->distances;
    vx_walk_free(w);
  }
}

int vx_hnsw_search(mf_vindex *ix, const float *queries, int64_t nq, int k, vx_hit *hits, int *found) {
  int64_t nchunks = 4 * (int64_t)mf_threads();
  if (nchunks > nq) nchunks = nq;
  search_job job = {ix, queries, nq, nchunks, k, hits, found, calloc((size_t)nchunks, 8),
                    calloc((size_t)nchunks, sizeof(int))};
  if (!job.distances || !job.failed) {
    free(job.distances);
    free(job.failed);
    return mf_fail("vector index: out of memory for %lld queries", (long long)nq);
  }
  mfk_parallel_for(mf_pool(), nchunks, search_chunks, &job);
  int failed = 0;
  for (int64_t c = 0; c < nchunks; c++) {
    ix->distances += job.distances[c];
    failed |= job.failed[c];
  }
  free(job.distances);
  free(job.failed);
  return failed ? mf_fail("vector index: out of memory for a search over %lld vectors", (long long)ix->count) : 0;
}
