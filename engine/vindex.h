/*
 * The vector index's parts, shared by vindex.c (storage, ids, exact search,
 * the public calls), vindex_hnsw.c (the graph) and vindex_file.c (the file);
 * not part of the public API.
 *
 * Vectors live in slots 0..count-1 in the order they were added; a slot's
 * id, tombstone and graph links sit in arrays indexed by slot. Links are
 * int32 lists whose first element is their length: each node has one list
 * of up to 2M on level 0 (links0, fixed width) and one of up to M on each
 * level above, packed in `upper` from upper_off[node]. While the index reads
 * a file in place (map != NULL) every array points into the read-only
 * mapping; vx_reserve copies them out before anything changes.
 */
#ifndef MF_VINDEX_H
#define MF_VINDEX_H

#include "internal.h"
#include "moonforge.h"

#include <stddef.h>
#include <stdint.h>

struct mf_vindex {
  mf_vindex_opts o;
  int64_t count, cap, live, next_id;
  int64_t entry; /* HNSW entry point's slot, -1 when empty */
  int max_level;
  float *vectors;     /* [cap, dim]; unit length under the cosine */
  int64_t *ids;       /* [cap] */
  uint8_t *deleted;   /* [cap] */
  int32_t *levels;    /* [cap], HNSW only, like the next three */
  int64_t *upper_off; /* [cap] */
  int32_t *links0;    /* [cap, 1 + 2M] */
  int32_t *upper;     /* [upper_cap] */
  int64_t upper_len, upper_cap;
  int64_t *table_ids; /* id -> slot, open addressing; slot -1 is empty */
  int32_t *table_slots;
  int64_t table_cap;
  struct vx_walk **walks; /* scratch of builds and searches, one per thread */
  int nwalks;
  void *map;
  size_t map_size;
  int64_t distances;
};

enum { VX_MAX_M = 256 }; /* links per node and level, at most (2x on level 0) */

/* One similarity: a slot and its score against some vector. */
typedef struct vx_hit {
  float s;
  int32_t node;
} vx_hit;

/* The order of results: higher score first, then lower id. */
static inline int vx_better(const mf_vindex *ix, vx_hit a, vx_hit b) {
  return a.s > b.s || (a.s == b.s && ix->ids[a.node] < ix->ids[b.node]);
}

static inline const float *vx_vector(const mf_vindex *ix, int64_t slot) {
  return ix->vectors + slot * ix->o.dim;
}

static inline int vx_links0_width(const mf_vindex *ix) { return 1 + 2 * ix->o.M; }

/* Room for `slots` vectors and `upper` packed link ints, arrays owned. */
int vx_reserve(mf_vindex *ix, int64_t slots, int64_t upper);
/* The live or tombstoned slot of id, -1 when never added. */
int32_t vx_slot_of(const mf_vindex *ix, int64_t id);
/* Records id -> slot, replacing an older slot of the same id. */
int vx_table_put(mf_vindex *ix, int64_t id, int32_t slot);

/* Links slots first..count-1 (stored by one addition) into the graph. */
int vx_hnsw_insert(mf_vindex *ix, int32_t first);
/* Up to k hits per query into hits [nq, k], their number into found [nq]. */
int vx_hnsw_search(mf_vindex *ix, const float *queries, int64_t nq, int k, vx_hit *hits, int *found);
void vx_hnsw_free_walks(mf_vindex *ix);

#endif
