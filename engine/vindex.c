/*
 * Vector indexes (moonforge.h, "retrieval: vector indexes"): storage of
 * vectors by slot, the id table, adding, deleting, compacting, and exact
 * search. The graph is in vindex_hnsw.c, the file in vindex_file.c.
 *
 * Exact search splits the index into fixed blocks of slots; each block keeps
 * its own top k for every query and the blocks' lists are merged in block
 * order. Since the blocks depend only on the index size and hits are ordered
 * by score then id, the result does not depend on the threads.
 */
#include "vindex.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum {
  EXACT_BLOCK = 512, /* slots per unit of exact-search work */
  QUERY_BATCH = 32,  /* queries sharing one pass over the index */
  MAX_DIM = 1 << 16,
};
static const int64_t MAX_SLOTS = INT32_MAX; /* links are int32 */

mf_vindex *mf_vindex_new(const mf_vindex_opts *opts) {
  mf_vindex_opts o = *opts;
  if (o.M <= 0) o.M = 16;
  if (o.ef_construction <= 0) o.ef_construction = 200;
  if (o.ef_search <= 0) o.ef_search = 64;
  if (o.dim <= 0 || o.dim > MAX_DIM) return mf_fail_null("vector index: dimension %d outside 1..%d", o.dim, MAX_DIM);
  if (o.metric != MF_METRIC_COSINE && o.metric != MF_METRIC_DOT)
    return mf_fail_null("vector index: unknown metric %d", (int)o.metric);
  if (o.kind != MF_VINDEX_EXACT && o.kind != MF_VINDEX_HNSW)
    return mf_fail_null("vector index: unknown kind %d", (int)o.kind);
  if (o.M < 2 || o.M > VX_MAX_M) return mf_fail_null("vector index: M = %d outside 2..%d", o.M, VX_MAX_M);
  mf_vindex *ix = calloc(1, sizeof *ix);
  if (!ix) return mf_fail_null("vector index: out of memory");
  ix->o = o;
  ix->entry = -1;
  ix->next_id = 1;
  return ix;
}

static void free_arrays(mf_vindex *ix) {
  free(ix->vectors);
  free(ix->ids);
  free(ix->deleted);
  free(ix->levels);
  free(ix->upper_off);
  free(ix->links0);
  free(ix->upper);
}

void mf_vindex_free(mf_vindex *ix) {
  if (!ix) return;
  if (ix->map) munmap(ix->map, ix->map_size);
  else free_arrays(ix);
  free(ix->table_ids);
  free(ix->table_slots);
  vx_hnsw_free_walks(ix);
  free(ix);
}

/* ---- storage ---- */

/* *p (an array pointer) grows to n elements of size; unchanged on failure. */
static int grow(void *p, size_t size, int64_t n) {
  void **array = p;
  void *bigger = realloc(*array, (size_t)n * size);
  if (!bigger) return -1;
  *array = bigger;
  return 0;
}

/* Searches jump between vectors all over their array: on 2 MiB pages the
 * translations of a whole index fit the TLB, where 4 KiB pages miss on
 * almost every vector. Only advice: nothing changes if the system refuses. */
static void huge_pages(void *p, size_t bytes) {
  uintptr_t huge = (uintptr_t)2 << 20, begin = ((uintptr_t)p + huge - 1) & ~(huge - 1);
  uintptr_t end = ((uintptr_t)p + bytes) & ~(huge - 1);
  if (end > begin) madvise((void *)begin, end - begin, MADV_HUGEPAGE);
}

static void *copy_out(const void *src, size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (p) huge_pages(p, bytes);
  if (p && bytes) memcpy(p, src, bytes);
  return p;
}

/* Copies every array out of the file mapping, all or nothing. */
static int unmap(mf_vindex *ix) {
  size_t n = (size_t)ix->count;
  int hnsw = ix->o.kind == MF_VINDEX_HNSW;
  mf_vindex copy = *ix;
  copy.vectors = copy_out(ix->vectors, n * ix->o.dim * sizeof(float));
  copy.ids = copy_out(ix->ids, n * 8);
  copy.deleted = copy_out(ix->deleted, n);
  copy.levels = hnsw ? copy_out(ix->levels, n * 4) : NULL;
  copy.upper_off = hnsw ? copy_out(ix->upper_off, n * 8) : NULL;
  copy.links0 = hnsw ? copy_out(ix->links0, n * vx_links0_width(ix) * 4) : NULL;
  copy.upper = hnsw ? copy_out(ix->upper, (size_t)ix->upper_len * 4) : NULL;
  if (!copy.vectors || !copy.ids || !copy.deleted ||
      (hnsw && (!copy.levels || !copy.upper_off || !copy.links0 || !copy.upper))) {
    free_arrays(&copy);
    return mf_fail("vector index: out of memory copying %lld vectors from the file", (long long)n);
  }
  munmap(ix->map, ix->map_size);
  copy.map = NULL;
  copy.map_size = 0;
  copy.cap = ix->count;
  copy.upper_cap = ix->upper_len;
  *ix = copy;
  return 0;
}

int vx_reserve(mf_vindex *ix, int64_t slots, int64_t upper) {
  if (ix->map && unmap(ix) != 0) return -1;
  if (slots > MAX_SLOTS) return mf_fail("vector index: more than %lld vectors", (long long)MAX_SLOTS);
  int hnsw = ix->o.kind == MF_VINDEX_HNSW;
  if (slots > ix->cap) {
    int64_t cap = ix->cap ? ix->cap : 256;
    while (cap < slots) cap *= 2;
    int failed = grow(&ix->vectors, ix->o.dim * sizeof(float), cap) || grow(&ix->ids, 8, cap) ||
                 grow(&ix->deleted, 1, cap) ||
                 (hnsw && (grow(&ix->levels, 4, cap) || grow(&ix->upper_off, 8, cap) ||
                           grow(&ix->links0, vx_links0_width(ix) * 4, cap)));
    if (failed) return mf_fail("vector index: out of memory for %lld vectors", (long long)cap);
    ix->cap = cap;
    huge_pages(ix->vectors, (size_t)cap * ix->o.dim * sizeof(float));
    if (hnsw) huge_pages(ix->links0, (size_t)cap * vx_links0_width(ix) * 4);
  }
  if (upper > ix->upper_cap) {
    int64_t cap = ix->upper_cap ? ix->upper_cap : 1024;
    while (cap < upper) cap *= 2;
    if (grow(&ix->upper, 4, cap)) return mf_fail("vector index: out of memory for the graph");
    ix->upper_cap = cap;
  }
  return 0;
}

/* ---- the id table ---- */

static uint64_t id_hash(int64_t id) { return (uint64_t)id * 0x9e3779b97f4a7c15ULL; }

/* The table position holding id, or the empty one where it would go. */
static int64_t table_find(const mf_vindex *ix, int64_t id) {
  int64_t mask = ix->table_cap - 1;
  int64_t at = (int64_t)(id_hash(id) >> 20) & mask;
  while (ix->table_slots[at] >= 0 && ix->table_ids[at] != id) at = (at + 1) & mask;
  return at;
}

int32_t vx_slot_of(const mf_vindex *ix, int64_t id) {
  return ix->table_cap ? ix->table_slots[table_find(ix, id)] : -1;
}

/* Room for `ids` distinct ids at most half full. */
static int table_reserve(mf_vindex *ix, int64_t ids) {
  if (2 * ids <= ix->table_cap) return 0;
  int64_t cap = 1024;
  while (cap < 2 * ids) cap *= 2;
  mf_vindex bigger = *ix;
  bigger.table_cap = cap;
  bigger.table_ids = malloc((size_t)cap * 8);
  bigger.table_slots = malloc((size_t)cap * 4);
  if (!bigger.table_ids || !bigger.table_slots) {
    free(bigger.table_ids);
    free(bigger.table_slots);
    return mf_fail("vector index: out of memory for %lld ids", (long long)ids);
  }
  memset(bigger.table_slots, 0xff, (size_t)cap * 4);
  for (int64_t at = 0; at < ix->table_cap; at++)
    if (ix->table_slots[at] >= 0) {
      int64_t to = table_find(&bigger, ix->table_ids[at]);
      bigger.table_ids[to] = ix->table_ids[at];
      bigger.table_slots[to] = ix->table_slots[at];
    }
  free(ix->table_ids);
  free(ix->table_slots);
  ix->table_ids = bigger.table_ids;
  ix->table_slots = bigger.table_slots;
  ix->table_cap = cap;
  return 0;
}

int vx_table_put(mf_vindex *ix, int64_t id, int32_t slot) {
  if (table_reserve(ix, ix->count + 1) != 0) return -1;
  int64_t at = table_find(ix, id);
  ix->table_ids[at] = id;
  ix->table_slots[at] = slot;
  return 0;
}

/* ---- adding and deleting ---- */

static int compare_ids(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Every id new (or deleted) and non-negative, none twice in the batch. */
static int check_ids(const mf_vindex *ix, const int64_t *ids, int64_t n) {
  int64_t *sorted = malloc((size_t)n * 8);
  if (!sorted) return mf_fail("vector index: out of memory");
  memcpy(sorted, ids, (size_t)n * 8);
  qsort(sorted, (size_t)n, 8, compare_ids);
  int rc = 0;
  for (int64_t i = 0; i < n && rc == 0; i++) {
    int32_t slot = vx_slot_of(ix, sorted[i]);
    if (sorted[i] < 0) rc = mf_fail("vector index: id %lld is negative", (long long)sorted[i]);
    else if (i > 0 && sorted[i] == sorted[i - 1]) rc = mf_fail("vector index: id %lld given twice", (long long)sorted[i]);
    else if (slot >= 0 && !ix->deleted[slot]) rc = mf_fail("vector index: id %lld is already in the index", (long long)sorted[i]);
  }
  free(sorted);
  return rc;
}

/* Finite values, and a length to divide by under the cosine. */
static int check_vectors(const mf_vindex *ix, const float *vectors, int64_t n, const char *what) {
  for (int64_t i = 0; i < n; i++) {
    const float *v = vectors + i * ix->o.dim;
    double sumsq = 0;
    for (int j = 0; j < ix->o.dim; j++) sumsq += (double)v[j] * v[j];
    if (!isfinite(sumsq)) return mf_fail("vector index: %s %lld has a value that is not finite", what, (long long)i);
    if (ix->o.metric == MF_METRIC_COSINE && sumsq == 0)
      return mf_fail("vector index: %s %lld has length zero (no cosine)", what, (long long)i);
  }
  return 0;
}

/* dst = src, scaled to unit length under the cosine. */
static void store_vector(const mf_vindex *ix, float *dst, const float *src) {
  memcpy(dst, src, (size_t)ix->o.dim * sizeof(float));
  if (ix->o.metric != MF_METRIC_COSINE) return;
  double sumsq = 0;
  for (int j = 0; j < ix->o.dim; j++) sumsq += (double)src[j] * src[j];
  float inv = (float)(1.0 / sqrt(sumsq));
  for (int j = 0; j < ix->o.dim; j++) dst[j] *= inv;
}

/* Adds n checked vectors; `scale` stores them through store_vector. */
static int add_checked(mf_vindex *ix, const int64_t *ids, const float *vectors, int64_t n, int scale) {
  if (vx_reserve(ix, ix->count + n, ix->upper_len) != 0 || table_reserve(ix, ix->count + n) != 0) return -1;
  for (int64_t i = 0; i < n; i++) {
    int32_t slot = (int32_t)ix->count;
    int64_t id = ids ? ids[i] : ix->next_id;
    const float *v = vectors + i * ix->o.dim;
    if (scale) store_vector(ix, ix->vectors + (int64_t)slot * ix->o.dim, v);
    else memcpy(ix->vectors + (int64_t)slot * ix->o.dim, v, (size_t)ix->o.dim * sizeof(float));
    ix->ids[slot] = id;
    ix->deleted[slot] = 0;
    vx_table_put(ix, id, slot); /* cannot fail: reserved above */
    ix->count++;
    ix->live++;
    if (id >= ix->next_id) ix->next_id = id + 1;
  }
  return ix->o.kind == MF_VINDEX_HNSW ? vx_hnsw_insert(ix, (int32_t)(ix->count - n)) : 0;
}

int mf_vindex_add(mf_vindex *ix, const int64_t *ids, const float *vectors, int64_t n) {
  if (n < 0) return mf_fail("vector index: negative count %lld", (long long)n);
  if (n == 0) return 0;
  if (ids && check_ids(ix, ids, n) != 0) return -1;
  if (check_vectors(ix, vectors, n, "vector") != 0) return -1;
  return add_checked(ix, ids, vectors, n, 1);
}

int mf_vindex_delete(mf_vindex *ix, int64_t id) {
  int32_t slot = vx_slot_of(ix, id);
  if (slot < 0 || ix->deleted[slot]) return mf_fail("vector index: id %lld is not in the index", (long long)id);
  if (vx_reserve(ix, ix->count, ix->upper_len) != 0) return -1;
  ix->deleted[slot] = 1;
  ix->live--;
  return 0;
}

/* Rebuilds from the live vectors in slot order; the vectors are already
 * scaled, so they are stored as they are. */
int mf_vindex_compact(mf_vindex *ix) {
  mf_vindex *fresh = mf_vindex_new(&ix->o);
  int64_t *ids = malloc((size_t)(ix->live > 0 ? ix->live : 1) * 8);
  float *vectors = malloc((size_t)(ix->live > 0 ? ix->live : 1) * ix->o.dim * sizeof(float));
  int ok = fresh && ids && vectors;
  if (!ok) mf_fail("vector index: out of memory compacting");
  int64_t n = 0;
  for (int64_t slot = 0; ok && slot < ix->count; slot++)
    if (!ix->deleted[slot]) {
      ids[n] = ix->ids[slot];
      memcpy(vectors + n * ix->o.dim, vx_vector(ix, slot), (size_t)ix->o.dim * sizeof(float));
      n++;
    }
  ok = ok && add_checked(fresh, ids, vectors, n, 0) == 0;
  free(ids);
  free(vectors);
  if (!ok) {
    mf_vindex_free(fresh);
    return -1;
  }
  fresh->next_id = ix->next_id; /* ids given out once stay given out */
  fresh->distances = ix->distances;
  mf_vindex tmp = *ix;
  *ix = *fresh;
  *fresh = tmp;
  mf_vindex_free(fresh);
  return 0;
}

/* ---- exact search ---- */

/* Inserts h into top (best first, n of at most k) if it belongs there. */
static void topk_push(const mf_vindex *ix, vx_hit *top, int *n, int k, vx_hit h) {
  if (*n == k && !vx_better(ix, h, top[k - 1])) return;
  int i = *n < k ? (*n)++ : k - 1;
  for (; i > 0 && vx_better(ix, h, top[i - 1]); i--) top[i] = top[i - 1];
  top[i] = h;
}

typedef struct {
  const mf_vindex *ix;
  const float *queries;
  int64_t nq;
  int k;
  vx_hit *part; /* [block, query, k] */
  int *npart;   /* [block, query] */
} exact_job;

static void exact_blocks(void *ctx, int64_t begin, int64_t end) {
  const exact_job *job = ctx;
  const mf_vindex *ix = job->ix;
  float scores[EXACT_BLOCK];
  for (int64_t b = begin; b < end; b++) {
    int64_t first = b * EXACT_BLOCK, rows = ix->count - first < EXACT_BLOCK ? ix->count - first : EXACT_BLOCK;
    for (int64_t q = 0; q < job->nq; q++) {
      vx_hit *top = job->part + (b * job->nq + q) * job->k;
      int *n = job->npart + b * job->nq + q;
      *n = 0;
      mfk_dot_rows(scores, job->queries + q * ix->o.dim, vx_vector(ix, first), rows, ix->o.dim);
      for (int64_t r = 0; r < rows; r++)
        if (!ix->deleted[first + r]) topk_push(ix, top, n, job->k, (vx_hit){scores[r], (int32_t)(first + r)});
    }
  }
}

static int exact_search(mf_vindex *ix, const float *queries, int64_t nq, int k, vx_hit *hits, int *found) {
  int64_t nblocks = (ix->count + EXACT_BLOCK - 1) / EXACT_BLOCK;
  int64_t batch = nq < QUERY_BATCH ? nq : QUERY_BATCH;
  exact_job job = {ix, NULL, 0, k, malloc((size_t)(nblocks * batch * k) * sizeof(vx_hit)),
                   malloc((size_t)(nblocks * batch) * sizeof(int))};
  if (!job.part || !job.npart) {
    free(job.part);
    free(job.npart);
    return mf_fail("vector index: out of memory for %lld partial results", (long long)(nblocks * batch * k));
  }
  for (int64_t q0 = 0; q0 < nq; q0 += batch) {
    job.queries = queries + q0 * ix->o.dim;
    job.nq = nq - q0 < batch ? nq - q0 : batch;
    mfk_parallel_for(mf_pool(), nblocks, exact_blocks, &job);
    for (int64_t q = 0; q < job.nq; q++) {
      found[q0 + q] = 0;
      for (int64_t b = 0; b < nblocks; b++) {
        const vx_hit *part = job.part + (b * job.nq + q) * k;
        for (int i = 0; i < job.npart[b * job.nq + q]; i++) topk_push(ix, hits + (q0 + q) * k, &found[q0 + q], k, part[i]);
      }
    }
  }
  ix->distances += nq * ix->live;
  free(job.part);
  free(job.npart);
  return 0;
}

/* ---- searching ---- */

int mf_vindex_search(mf_vindex *ix, const float *queries, int64_t nq, int dim, int k, int64_t *ids, float *scores) {
  if (dim != ix->o.dim)
    return mf_fail("vector index: queries have dimension %d, the index has dimension %d", dim, ix->o.dim);
  if (k <= 0 || nq < 0) return mf_fail("vector index: k = %d, %lld queries: both must be positive", k, (long long)nq);
  if (check_vectors(ix, queries, nq, "query") != 0) return -1;
  if (nq == 0) return 0;
  float *scaled = malloc((size_t)nq * dim * sizeof(float));
  vx_hit *hits = malloc((size_t)nq * k * sizeof(vx_hit));
  int *found = malloc((size_t)nq * sizeof(int));
  int rc = scaled && hits && found ? 0 : mf_fail("vector index: out of memory for %lld queries", (long long)nq);
  for (int64_t q = 0; rc == 0 && q < nq; q++) store_vector(ix, scaled + q * dim, queries + q * dim);
  if (rc == 0 && ix->live == 0)
    memset(found, 0, (size_t)nq * sizeof(int));
  else if (rc == 0)
    rc = ix->o.kind == MF_VINDEX_HNSW ? vx_hnsw_search(ix, scaled, nq, k, hits, found)
                                      : exact_search(ix, scaled, nq, k, hits, found);
  for (int64_t q = 0; rc == 0 && q < nq; q++)
    for (int i = 0; i < k; i++) {
      vx_hit h = hits[q * k + i];
      ids[q * k + i] = i < found[q] ? ix->ids[h.node] : -1;
      scores[q * k + i] = i < found[q] ? h.s : -INFINITY;
    }
  free(scaled);
  free(hits);
  free(found);
  return rc;
}

/* ---- properties ---- */

void mf_vindex_get_opts(const mf_vindex *ix, mf_vindex_opts *out) { *out = ix->o; }

int mf_vindex_set_ef_search(mf_vindex *ix, int ef_search) {
  if (ef_search <= 0) return mf_fail("vector index: ef_search = %d must be positive", ef_search);
  ix->o.ef_search = ef_search;
  return 0;
}

int64_t mf_vindex_count(const mf_vindex *ix) { return ix->live; }
int64_t mf_vindex_deleted(const mf_vindex *ix) { return ix->count - ix->live; }
int64_t mf_vindex_next_id(const mf_vindex *ix) { return ix->next_id; }
int64_t mf_vindex_distance_count(const mf_vindex *ix) { return ix->distances; }
void mf_vindex_reset_distance_count(mf_vindex *ix) { ix->distances = 0; }
