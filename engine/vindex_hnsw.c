/*
 * HNSW graphs for vector indexes (Malkov and Yashunin, "Efficient and robust
 * approximate nearest neighbor search using Hierarchical Navigable Small
 * World graphs", 2016): insertion with the neighbour-selection heuristic,
 * and search; both parallel, with the same graph and the same results for
 * any thread count.
 *
 * A node's level is drawn from the counter-based stream of the index's seed
 * at the node's slot. The vectors of one addition are linked in rounds of
 * ROUND slots, each in three steps:
 *   1. every new node chooses its neighbours, in parallel: it searches the
 *      graph as it stood when the round began (nothing writes to that graph
 *      meanwhile) and also weighs every earlier node of its round, which
 *      that graph cannot reach yet; it writes only its own lists;
 *   2. the chosen neighbours link back, in parallel over the lists that
 *      change, each list taking its new links in slot order (pruned by the
 *      same heuristic when full);
 *   3. the entry point moves to the first node above the top level.
 * Each step depends on the vectors, the levels and the graph at the start
 * of the round alone, so the same additions give the same graph, link for
 * link. (Vectors added in several calls give another graph than in one
 * call, as their rounds start elsewhere.) Each query is searched by one
 * thread alone; which thread does not matter.
 *
 * A walk is one thread's scratch: visit stamps per slot (a new stamp per
 * search rather than clearing) and heaps sized for the whole index, so that
 * neither a search nor an insertion allocates. The index keeps one walk per
 * pool thread, and a range of work claims a free one for its length; an
 * index therefore serves one call at a time.
 */
#include "vindex.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum {
  MAX_LEVEL = 30,
  ROUND = 256, /* nodes linked per round of a build */
};

/* A binary heap of hits; the root is the best hit, or the worst with worst_on_top. */
typedef struct {
  vx_hit *h;
  int64_t n;
  int worst_on_top;
} heap;

typedef struct vx_walk {
  atomic_int busy; /* held by a range of work */
  uint8_t *seen;   /* seen[slot] == stamp: visited in this search; a byte, to stay in cache */
  uint8_t stamp;
  int64_t slots; /* what seen, cand and res can hold */
  heap cand, res;
  vx_hit *sorted; /* res drained best first */
  int64_t distances;
  int32_t fresh[2 * VX_MAX_M]; /* one node's neighbours not yet visited */
  float fresh_s[2 * VX_MAX_M]; /* and their similarities to the query */
  float round_s[ROUND];        /* a new node's similarities to its round's earlier nodes */
} walk;

/* A link from a chosen neighbour back to a new node, added in step 2. */
typedef struct {
  int32_t to, level, from;
} backlink;

static int above(const mf_vindex *ix, const heap *q, vx_hit a, vx_hit b) {
  return q->worst_on_top ? vx_better(ix, b, a) : vx_better(ix, a, b);
}

static void heap_push(const mf_vindex *ix, heap *q, vx_hit x) {
  int64_t i = q->n++;
  for (; i > 0 && above(ix, q, x, q->h[(i - 1) / 2]); i = (i - 1) / 2) q->h[i] = q->h[(i - 1) / 2];
  q->h[i] = x;
}

/* Puts x at slot i of q, whose subtrees are heaps, and moves it down. */
static void sift_down(const mf_vindex *ix, heap *q, int64_t i, vx_hit x) {
  for (;;) {
    int64_t child = 2 * i + 1;
    if (child >= q->n) break;
    if (child + 1 < q->n && above(ix, q, q->h[child + 1], q->h[child])) child++;
    if (!above(ix, q, q->h[child], x)) break;
    q->h[i] = q->h[child];
    i = child;
  }
  q->h[i] = x;
}

static vx_hit heap_pop(const mf_vindex *ix, heap *q) {
  vx_hit top = q->h[0], last = q->h[--q->n];
  if (q->n > 0) sift_down(ix, q, 0, last);
  return top;
}

/* Adds h to res (worst on top), which keeps the ef best hits: when it is
 * full, h takes the worst one's place. */
static void keep_best(const mf_vindex *ix, heap *res, vx_hit h, int ef) {
  if (res->n < ef) heap_push(ix, res, h);
  else if (vx_better(ix, h, res->h[0])) sift_down(ix, res, 0, h);
}

/* ---- walks ---- */

static void walk_free(walk *w) {
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
  if (!w) return NULL;
  w->slots = slots;
  w->seen = calloc((size_t)slots, sizeof *w->seen);
  w->cand.h = malloc((size_t)(slots + 1) * sizeof(vx_hit));
  w->res.h = malloc((size_t)(slots + 1) * sizeof(vx_hit));
  w->sorted = malloc((size_t)(slots + 1) * sizeof(vx_hit));
  w->res.worst_on_top = 1;
  if (!w->seen || !w->cand.h || !w->res.h || !w->sorted) {
    walk_free(w);
    return NULL;
  }
  return w;
}

void vx_hnsw_free_walks(mf_vindex *ix) {
  for (int i = 0; i < ix->nwalks; i++) walk_free(ix->walks[i]);
  free(ix->walks);
  ix->walks = NULL;
  ix->nwalks = 0;
}

/* One walk per pool thread, each over the index's capacity. */
static int ready_walks(mf_vindex *ix) {
  int n = mfk_pool_size(mf_pool());
  if (ix->nwalks == n && ix->walks[0]->slots >= ix->cap) return 0;
  vx_hnsw_free_walks(ix);
  ix->walks = calloc((size_t)n, sizeof *ix->walks);
  for (int i = 0; ix->walks && i < n; i++) {
    ix->nwalks = i + 1;
    if (!(ix->walks[i] = walk_new(ix->cap))) break;
  }
  if (ix->walks && ix->walks[n - 1]) return 0;
  vx_hnsw_free_walks(ix);
  return mf_fail("vector index: out of memory for the scratch of %d threads over %lld vectors", n, (long long)ix->cap);
}

/* A walk no other range holds: there is one per thread, so one is free. */
static walk *claim_walk(const mf_vindex *ix) {
  for (int i = 0;; i = (i + 1) % ix->nwalks)
    if (!atomic_exchange(&ix->walks[i]->busy, 1)) return ix->walks[i];
}

static void release_walk(walk *w) { atomic_store(&w->busy, 0); }

static void next_stamp(walk *w) {
  if (++w->stamp == 0) { /* wrapped (every 255 searches): old stamps could read as current */
    memset(w->seen, 0, (size_t)w->slots * sizeof *w->seen);
    w->stamp = 1;
  }
}

/* ---- searching a level ---- */

static int32_t *links(const mf_vindex *ix, int64_t node, int level) {
  if (level == 0) return ix->links0 + node * vx_links0_width(ix);
  return ix->upper + ix->upper_off[node] + (int64_t)(level - 1) * (1 + ix->o.M);
}

static vx_hit score(const mf_vindex *ix, walk *w, const float *q, int32_t node) {
  w->distances++;
  return (vx_hit){mfk_dot(q, vx_vector(ix, node), ix->o.dim), node};
}

/* The best candidate is likely the next one whose links a search reads:
 * asking for them early hides the cache miss behind the work before. */
static void prefetch_links(const mf_vindex *ix, int32_t node, int level) {
  __builtin_prefetch(links(ix, node, level));
}

/* w->fresh_s[i] = the similarity of q and node rows[i], for i < n. */
static void score_rows(const mf_vindex *ix, walk *w, const float *q, const int32_t *rows, int n) {
  mfk_dot_gather(w->fresh_s, q, ix->vectors, rows, n, ix->o.dim);
  w->distances += n;
}

/* Greedy descent from ep through levels from..to+1: the best node found. */
static vx_hit descend(const mf_vindex *ix, walk *w, const float *q, vx_hit ep, int from, int to) {
  for (int level = from; level > to; level--)
    for (int moved = 1; moved;) {
      moved = 0;
      const int32_t *nb = links(ix, ep.node, level);
      score_rows(ix, w, q, nb + 1, nb[0]);
      for (int i = 0; i < nb[0]; i++) {
        vx_hit h = {w->fresh_s[i], nb[i + 1]};
        if (vx_better(ix, h, ep)) ep = h, moved = 1;
      }
    }
  return ep;
}

/* The ef nodes most like q reachable on `level` from ep, into w->res. With
 * live_only, tombstones still lead the way but are not results. A node's
 * unvisited neighbours are scored together, so that their vectors are
 * fetched while the ones before them are multiplied. */
static void search_level(const mf_vindex *ix, walk *w, const float *q, vx_hit ep, int ef, int level, int live_only) {
  next_stamp(w);
  w->cand.n = w->res.n = 0;
  w->seen[ep.node] = w->stamp;
  heap_push(ix, &w->cand, ep);
  if (!live_only || !ix->deleted[ep.node]) heap_push(ix, &w->res, ep);
  while (w->cand.n > 0) {
    vx_hit c = heap_pop(ix, &w->cand);
    if (w->res.n >= ef && vx_better(ix, w->res.h[0], c)) break;
    if (w->cand.n > 0) prefetch_links(ix, w->cand.h[0].node, level);
    const int32_t *nb = links(ix, c.node, level);
    int fresh = 0, n = nb[0];
    uint8_t *seen = w->seen, stamp = w->stamp; /* locals: stores through seen may alias w */
    for (int i = 1; i <= n; i++) {
      int32_t node = nb[i];
      if (seen[node] != stamp) {
        seen[node] = stamp;
        w->fresh[fresh++] = node;
        __builtin_prefetch(vx_vector(ix, node));
      }
    }
    score_rows(ix, w, q, w->fresh, fresh);
    for (int i = 0; i < fresh; i++) {
      vx_hit h = {w->fresh_s[i], w->fresh[i]};
      if (w->res.n >= ef && !vx_better(ix, h, w->res.h[0])) continue;
      heap_push(ix, &w->cand, h);
      if (w->cand.h[0].node == h.node) prefetch_links(ix, h.node, level);
      if (!live_only || !ix->deleted[h.node]) keep_best(ix, &w->res, h, ef);
    }
  }
}

static vx_hit best_of(const mf_vindex *ix, const heap *q) {
  vx_hit best = q->h[0];
  for (int64_t i = 1; i < q->n; i++)
    if (vx_better(ix, q->h[i], best)) best = q->h[i];
  return best;
}

/* Empties w->res into w->sorted, best first; returns the count. */
static int64_t drain(const mf_vindex *ix, walk *w) {
  int64_t n = w->res.n;
  for (int64_t i = n - 1; i >= 0; i--) w->sorted[i] = heap_pop(ix, &w->res);
  return n;
}

/* ---- building ---- */

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
  int32_t others[2 * VX_MAX_M + 1];
  float s[2 * VX_MAX_M + 1];
  vx_hit cands[2 * VX_MAX_M + 1];
  memcpy(others, nb + 1, (size_t)cap * sizeof *others);
  others[cap] = to;
  mfk_dot_gather(s, vx_vector(ix, node), ix->vectors, others, cap + 1, ix->o.dim);
  for (int i = 0; i <= cap; i++) {
    vx_hit h = {s[i], others[i]};
    int at = i;
    for (; at > 0 && vx_better(ix, h, cands[at - 1]); at--) cands[at] = cands[at - 1];
    cands[at] = h;
  }
  nb[0] = select_neighbours(ix, cands, cap + 1, cap);
  for (int i = 0; i < nb[0]; i++) nb[i + 1] = cands[i].node;
}

/* Step 1 for one node of the round that starts at slot `first`: its
 * neighbours on each of its levels, among the nodes the graph reaches and
 * the round's earlier nodes, into its own lists. */
static void choose_neighbours(const mf_vindex *ix, walk *w, int32_t first, int32_t slot) {
  const float *q = vx_vector(ix, slot);
  int level = ix->levels[slot], ef = ix->o.ef_construction;
  int32_t earlier = slot - first;
  mfk_dot_rows(w->round_s, q, vx_vector(ix, first), earlier, ix->o.dim);
  vx_hit ep = {0, -1};
  if (ix->entry >= 0) ep = descend(ix, w, q, score(ix, w, q, (int32_t)ix->entry), ix->max_level, level);
  for (int l = level; l >= 0; l--) {
    w->res.n = 0;
    if (ep.node >= 0 && l <= ix->max_level) {
      search_level(ix, w, q, ep, ef, l, 0);
      ep = best_of(ix, &w->res);
    }
    for (int32_t j = 0; j < earlier; j++)
      if (ix->levels[first + j] >= l) keep_best(ix, &w->res, (vx_hit){w->round_s[j], first + j}, ef);
    int64_t n = drain(ix, w);
    int32_t *nb = links(ix, slot, l);
    nb[0] = select_neighbours(ix, w->sorted, n, ix->o.M);
    for (int i = 0; i < nb[0]; i++) nb[i + 1] = w->sorted[i].node;
  }
}

typedef struct {
  mf_vindex *ix;
  int32_t first, end; /* the round's slots */
  backlink *back;     /* step 2's links, grouped by list */
  int64_t *groups;    /* where each list's links start in back, then the end */
  int64_t ngroups;
} round_job;

static void choose_range(void *ctx, int64_t begin, int64_t end) {
  const round_job *job = ctx;
  walk *w = claim_walk(job->ix);
  for (int64_t i = begin; i < end; i++) choose_neighbours(job->ix, w, job->first, job->first + (int32_t)i);
  release_walk(w);
}

static void link_back_range(void *ctx, int64_t begin, int64_t end) {
  const round_job *job = ctx;
  for (int64_t g = begin; g < end; g++)
    for (int64_t i = job->groups[g]; i < job->groups[g + 1]; i++)
      link_back(job->ix, job->back[i].to, job->back[i].from, job->back[i].level);
}

static int compare_backlinks(const void *a, const void *b) {
  const backlink *x = a, *y = b;
  if (x->to != y->to) return x->to < y->to ? -1 : 1;
  if (x->level != y->level) return x->level < y->level ? -1 : 1;
  return (x->from > y->from) - (x->from < y->from);
}

/* Step 2's links of the round, sorted by the list they join, then grouped. */
static void gather_backlinks(round_job *job) {
  const mf_vindex *ix = job->ix;
  int64_t n = 0;
  for (int32_t slot = job->first; slot < job->end; slot++)
    for (int l = 0; l <= ix->levels[slot]; l++) {
      const int32_t *nb = links(ix, slot, l);
      for (int i = 1; i <= nb[0]; i++) job->back[n++] = (backlink){nb[i], l, slot};
    }
  qsort(job->back, (size_t)n, sizeof *job->back, compare_backlinks);
  job->ngroups = 0;
  for (int64_t i = 0; i < n; i++)
    if (i == 0 || job->back[i].to != job->back[i - 1].to || job->back[i].level != job->back[i - 1].level)
      job->groups[job->ngroups++] = i;
  job->groups[job->ngroups] = n;
}

static void link_round(round_job *job) {
  mf_vindex *ix = job->ix;
  mfk_parallel_for(mf_pool(), job->end - job->first, choose_range, job);
  gather_backlinks(job);
  mfk_parallel_for(mf_pool(), job->ngroups, link_back_range, job);
  for (int32_t slot = job->first; slot < job->end; slot++)
    if (ix->entry < 0 || ix->levels[slot] > ix->max_level) {
      ix->entry = slot;
      ix->max_level = ix->levels[slot];
    }
}

static int draw_level(const mf_vindex *ix, int64_t slot) {
  mf_rng r;
  mf_rng_init(&r, ix->o.seed, mf_hash64("hnsw level", 10));
  double u = ((double)(mf_rng_at(r.key, (uint64_t)slot) >> 11) + 0.5) * 0x1.0p-53; /* (0, 1) */
  int level = (int)(-log(u) / log((double)ix->o.M));
  return level < MAX_LEVEL ? level : MAX_LEVEL;
}

/* Gives slots first..count-1 their levels and empty lists; the highest level into *top. */
static int place_nodes(mf_vindex *ix, int32_t first, int *top) {
  int64_t width = 1 + ix->o.M, upper = ix->upper_len;
  *top = 0;
  for (int64_t slot = first; slot < ix->count; slot++) {
    ix->levels[slot] = draw_level(ix, slot);
    upper += ix->levels[slot] * width;
    if (ix->levels[slot] > *top) *top = ix->levels[slot];
  }
  if (vx_reserve(ix, ix->count, upper) != 0) return -1;
  for (int64_t slot = first; slot < ix->count; slot++) {
    ix->upper_off[slot] = ix->upper_len;
    ix->upper_len += ix->levels[slot] * width;
    links(ix, slot, 0)[0] = 0;
  }
  int64_t placed = ix->upper_len - ix->upper_off[first];
  if (placed > 0) memset(ix->upper + ix->upper_off[first], 0, (size_t)placed * sizeof(int32_t));
  return 0;
}

int vx_hnsw_insert(mf_vindex *ix, int32_t first) {
  int top;
  if (place_nodes(ix, first, &top) != 0 || ready_walks(ix) != 0) return -1;
  int64_t most = (int64_t)ROUND * ix->o.M * (top + 1); /* links a round can add back */
  round_job job = {ix, 0, 0, malloc((size_t)most * sizeof(backlink)), malloc((size_t)(most + 1) * sizeof(int64_t)), 0};
  if (!job.back || !job.groups) {
    free(job.back);
    free(job.groups);
    return mf_fail("vector index: out of memory for %lld links", (long long)most);
  }
  for (int64_t start = first; start < ix->count; start += ROUND) {
    job.first = (int32_t)start;
    job.end = (int32_t)(ix->count - start < ROUND ? ix->count : start + ROUND);
    link_round(&job);
  }
  free(job.back);
  free(job.groups);
  return 0;
}

/* ---- searching ---- */

typedef struct {
  const mf_vindex *ix;
  const float *queries;
  int k;
  vx_hit *hits;
  int *found;
} search_job;

static void search_range(void *ctx, int64_t begin, int64_t end) {
  const search_job *job = ctx;
  const mf_vindex *ix = job->ix;
  int ef = ix->o.ef_search > job->k ? ix->o.ef_search : job->k;
  walk *w = claim_walk(ix);
  for (int64_t q = begin; q < end; q++) {
    const float *v = job->queries + q * ix->o.dim;
    vx_hit ep = descend(ix, w, v, score(ix, w, v, (int32_t)ix->entry), ix->max_level, 0);
    search_level(ix, w, v, ep, ef, 0, ix->live < ix->count); /* no tombstones: no look-ups */
    int64_t n = drain(ix, w);
    job->found[q] = (int)(n < job->k ? n : job->k);
    memcpy(job->hits + q * job->k, w->sorted, (size_t)job->found[q] * sizeof(vx_hit));
  }
  release_walk(w);
}

int vx_hnsw_search(mf_vindex *ix, const float *queries, int64_t nq, int k, vx_hit *hits, int *found) {
  if (ready_walks(ix) != 0) return -1;
  for (int i = 0; i < ix->nwalks; i++) ix->walks[i]->distances = 0;
  search_job job = {ix, queries, k, hits, found};
  mfk_parallel_for(mf_pool(), nq, search_range, &job);
  for (int i = 0; i < ix->nwalks; i++) ix->distances += ix->walks[i]->distances;
  return 0;
}
