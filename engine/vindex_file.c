/*
 * Vector index files (moonforge.h, "retrieval: vector indexes").
 *
 * Layout (little-endian), every section starting where the last ends:
 *   0    the 128-byte header below
 *   128  ids        int64 [count]
 *        upper_off  int64 [count]             (HNSW only, like the next three)
 *        vectors    float [count, dim]
 *        levels     int32 [count]
 *        links0     int32 [count, 1 + 2M]
 *        upper      int32 [upper_len]
 *        deleted    uint8 [count]
 * The 8-byte sections come first, so each array is aligned for its type
 * in a page-aligned mapping and is used where it lies. The digest is the
 * SHA-256 of every byte after the header.
 *
 * Writing streams the sections to a temporary file, then writes the header
 * and renames the file into place. Opening checks the size, the digest and
 * then every link, level and id, so no damaged or hostile file can send a
 * search outside the arrays.
 */
#define _GNU_SOURCE
#include "formats.h"
#include "vindex.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

enum { VERSION = 1, NSECTIONS = 7 };
static const char MAGIC[8] = {'M', 'F', 'V', 'I', 'N', 'D', 'E', 'X'};

typedef struct {
  char magic[8];
  uint32_t version, dim, metric, kind, M, ef_construction, ef_search;
  int32_t max_level;
  uint64_t count, live;
  int64_t entry;
  uint64_t upper_len, seed;
  int64_t next_id;
  unsigned char digest[32];
  unsigned char reserved[8];
} file_header;
_Static_assert(sizeof(file_header) == 128, "the header is 128 bytes without padding");

/* Where each section lives in ix and how many bytes it takes, in file order. */
static void sections(mf_vindex *ix, void **fields[NSECTIONS], uint64_t bytes[NSECTIONS]) {
  uint64_t n = (uint64_t)ix->count, hnsw = ix->o.kind == MF_VINDEX_HNSW;
  void **f[NSECTIONS] = {(void **)&ix->ids,    (void **)&ix->upper_off, (void **)&ix->vectors,
                         (void **)&ix->levels, (void **)&ix->links0,    (void **)&ix->upper,
                         (void **)&ix->deleted};
  uint64_t b[NSECTIONS] = {n * 8,
                           hnsw * n * 8,
                           n * (uint64_t)ix->o.dim * 4,
                           hnsw * n * 4,
                           hnsw * n * (uint64_t)vx_links0_width(ix) * 4,
                           hnsw * (uint64_t)ix->upper_len * 4,
                           n};
  memcpy(fields, f, sizeof f);
  memcpy(bytes, b, sizeof b);
}

/* ---- writing ---- */

static int put(FILE *f, EVP_MD_CTX *md, const void *data, uint64_t n) {
  return n == 0 || (fwrite(data, 1, n, f) == n && EVP_DigestUpdate(md, data, n));
}

int mf_vindex_save(const mf_vindex *ix, const char *path) {
  file_header h = {{0}, VERSION, (uint32_t)ix->o.dim, (uint32_t)ix->o.metric, (uint32_t)ix->o.kind,
                   (uint32_t)ix->o.M, (uint32_t)ix->o.ef_construction, (uint32_t)ix->o.ef_search,
                   ix->max_level, (uint64_t)ix->count, (uint64_t)ix->live, ix->entry,
                   (uint64_t)ix->upper_len, ix->o.seed, ix->next_id, {0}, {0}};
  memcpy(h.magic, MAGIC, 8);
  void **fields[NSECTIONS];
  uint64_t bytes[NSECTIONS];
  sections((mf_vindex *)ix, fields, bytes); /* only read here */
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  if (!f) return -1;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  static const file_header blank;
  int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) && fwrite(&blank, sizeof blank, 1, f) == 1;
  for (int i = 0; ok && i < NSECTIONS; i++) ok = put(f, md, *fields[i], bytes[i]);
  unsigned int len = 0;
  ok = ok && EVP_DigestFinal_ex(md, h.digest, &len) && fseek(f, 0, SEEK_SET) == 0 && fwrite(&h, sizeof h, 1, f) == 1;
  if (!ok) mf_fail("%s: cannot write: %s", path, strerror(errno));
  EVP_MD_CTX_free(md);
  return mf_atomic_finish(f, tmp, path, ok);
}

/* ---- reading ---- */

static int check_digest(const char *path, const unsigned char *map, size_t size, const file_header *h) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(map + sizeof *h, size - sizeof *h, md, &len, EVP_sha256(), NULL))
    return mf_fail("%s: checksum failed", path);
  if (memcmp(md, h->digest, sizeof h->digest) != 0)
    return mf_fail("%s: checksum mismatch: the index file is corrupted", path);
  return 0;
}

/* One links list: a length within cap and neighbours within the index. */
static int check_list(const mf_vindex *ix, const int32_t *nb, int cap) {
  if (nb[0] < 0 || nb[0] > cap) return -1;
  for (int i = 1; i <= nb[0]; i++)
    if (nb[i] < 0 || nb[i] >= ix->count) return -1;
  return 0;
}

static int check_graph(const char *path, const mf_vindex *ix) {
  int64_t width = 1 + ix->o.M;
  if (ix->count > 0 && (ix->entry < 0 || ix->entry >= ix->count || ix->levels[ix->entry] != ix->max_level))
    return mf_fail("%s: corrupted index: bad entry point %lld", path, (long long)ix->entry);
  for (int64_t node = 0; node < ix->count; node++) {
    int level = ix->levels[node];
    int ok = level >= 0 && level <= ix->max_level && ix->upper_off[node] >= 0 &&
             ix->upper_off[node] <= ix->upper_len - level * width &&
             check_list(ix, ix->links0 + node * vx_links0_width(ix), 2 * ix->o.M) == 0;
    for (int l = 0; ok && l < level; l++) ok = check_list(ix, ix->upper + ix->upper_off[node] + l * width, ix->o.M) == 0;
    if (!ok) return mf_fail("%s: corrupted index: node %lld has bad links", path, (long long)node);
  }
  return 0;
}

/* Counts, tombstones and the id table agree. */
static int check_ids(const char *path, mf_vindex *ix) {
  int64_t live = 0;
  for (int64_t slot = 0; slot < ix->count; slot++) {
    if (ix->deleted[slot] > 1) return mf_fail("%s: corrupted index: bad tombstone at %lld", path, (long long)slot);
    if (ix->ids[slot] < 0 || ix->ids[slot] >= ix->next_id)
      return mf_fail("%s: corrupted index: id %lld out of range", path, (long long)ix->ids[slot]);
    int32_t before = vx_slot_of(ix, ix->ids[slot]);
    if (before >= 0 && !ix->deleted[before])
      return mf_fail("%s: corrupted index: id %lld appears twice", path, (long long)ix->ids[slot]);
    if (vx_table_put(ix, ix->ids[slot], (int32_t)slot) != 0) return -1;
    live += !ix->deleted[slot];
  }
  if (live != ix->live) return mf_fail("%s: corrupted index: %lld live vectors, the header says %lld", path,
                                       (long long)live, (long long)ix->live);
  return 0;
}

/* The header's numbers, within the limits a new index would accept. */
static mf_vindex *index_of_header(const char *path, const file_header *h, size_t size) {
  if (h->version != VERSION)
    return mf_fail_null("%s: index format version %u; this engine reads version %d", path, h->version, VERSION);
  mf_vindex_opts o = {(int)h->dim, (mf_metric)h->metric, (mf_vindex_kind)h->kind, (int)h->M,
                      (int)h->ef_construction, (int)h->ef_search, h->seed};
  if (h->dim > (1u << 16) || h->M > VX_MAX_M || h->count > INT32_MAX || h->live > h->count ||
      h->upper_len > ((uint64_t)1 << 40) || h->max_level < 0 || h->max_level > 64 || h->next_id < 1)
    return mf_fail_null("%s: corrupted header", path);
  mf_vindex *ix = mf_vindex_new(&o);
  if (!ix) return mf_fail_null("%s: corrupted header: %s", path, mf_errmsg());
  ix->count = ix->cap = (int64_t)h->count;
  ix->live = (int64_t)h->live;
  ix->entry = h->entry;
  ix->max_level = h->max_level;
  ix->upper_len = ix->upper_cap = (int64_t)h->upper_len;
  ix->next_id = h->next_id;
  void **fields[NSECTIONS];
  uint64_t bytes[NSECTIONS], want = sizeof *h;
  sections(ix, fields, bytes);
  for (int i = 0; i < NSECTIONS; i++) want += bytes[i];
  if (size != want) {
    mf_vindex_free(ix);
    return mf_fail_null("%s: %s: the header promises %llu bytes, the file has %zu", path,
                        size < want ? "truncated" : "trailing bytes", (unsigned long long)want, size);
  }
  return ix;
}

/* Points every section at its place in the mapping. */
static void place_sections(mf_vindex *ix, unsigned char *map) {
  void **fields[NSECTIONS];
  uint64_t bytes[NSECTIONS], at = sizeof(file_header);
  sections(ix, fields, bytes);
  for (int i = 0; i < NSECTIONS; i++) {
    *fields[i] = bytes[i] ? map + at : NULL;
    at += bytes[i];
  }
}

static unsigned char *map_file(const char *path, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail_null("%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mf_fail_null("%s: not a regular file", path);
  }
  *size = (size_t)st.st_size;
  if (*size < sizeof(file_header)) {
    close(fd);
    return mf_fail_null("%s: truncated: %zu bytes, an index header takes %zu", path, *size, sizeof(file_header));
  }
  void *map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return mf_fail_null("%s: cannot map: %s", path, strerror(errno));
  return map;
}

mf_vindex *mf_vindex_open(const char *path) {
  size_t size = 0;
  unsigned char *map = map_file(path, &size);
  if (!map) return NULL;
  file_header h;
  memcpy(&h, map, sizeof h);
  mf_vindex *ix = NULL;
  if (memcmp(h.magic, MAGIC, 8) != 0) mf_fail("%s: not a vector index (bad magic)", path);
  else ix = index_of_header(path, &h, size);
  if (!ix || check_digest(path, map, size, &h) != 0) {
    mf_vindex_free(ix);
    munmap(map, size);
    return NULL;
  }
  ix->map = map;
  ix->map_size = size;
  place_sections(ix, map);
  if ((ix->o.kind == MF_VINDEX_HNSW && check_graph(path, ix) != 0) || check_ids(path, ix) != 0) {
    mf_vindex_free(ix);
    return NULL;
  }
  return ix;
}
