/*
 * safetensors files: read by memory-mapping, written atomically.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [2, 3],
 *    "data_offsets": [begin, end]}, ...}
 * then the data buffer; offsets are relative to the buffer's start.
 *
 * Opening trusts nothing: the header length must lie within the file (and
 * under 100 MB), the JSON must parse, every dtype must be one the format
 * defines, every tensor's byte range must match its shape, lie within the
 * buffer and overlap no other. Only then are tensors handed out, as views of
 * the mapping. Dtypes the format defines but moonforge does not hold (F64,
 * I8, BOOL...) are refused when such a tensor is asked for, so a file with
 * one odd tensor still opens. A sharded model (an *.index.json with a
 * "weight_map" from tensor names to shard files) opens every shard; a name
 * found in two shards is an error. The metadata of a sharded model is that of
 * its first shard in name order.
 *
 * Saving lays the data out as the reference implementation does: tensors by
 * decreasing dtype size (I64, F32, I32, BF16, F16, U8), then by name, with the
 * header padded by spaces to a multiple of 8 bytes. Each tensor then starts
 * aligned to its element size, no padding sits between tensors, and the file
 * is byte-identical to what Python's safetensors writes for the same tensors.
 */
#define _GNU_SOURCE
#include "formats.h"
#include "internal.h"
#include "moonforge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

enum { MAX_HEADER = 100 * 1000 * 1000 };

/* Every dtype of the format, with its size in bits; mf is the moonforge
 * dtype, or -1 for those moonforge does not hold. */
static const struct {
  const char *name;
  int bits;
  int mf;
} st_dtypes[] = {
  {"F32", 32, MF_F32}, {"F16", 16, MF_F16}, {"BF16", 16, MF_BF16}, {"I32", 32, MF_I32},
  {"I64", 64, MF_I64}, {"U8", 8, MF_U8}, {"F64", 64, -1}, {"I8", 8, -1}, {"I16", 16, -1},
  {"U16", 16, -1}, {"U32", 32, -1}, {"U64", 64, -1}, {"BOOL", 8, -1}, {"F8_E4M3", 8, -1},
  {"F8_E5M2", 8, -1}, {"F8_E8M0", 8, -1}, {"F6_E2M3", 6, -1}, {"F6_E3M2", 6, -1}, {"F4", 4, -1},
};
enum { N_ST_DTYPES = sizeof st_dtypes / sizeof st_dtypes[0] };

typedef struct {
  char *path;
  unsigned char *map;
  size_t size;
  char *metadata;  /* "__metadata__" as compact JSON text, or NULL */
} shard;

typedef struct {
  char *name;
  int shard;
  int type;        /* index into st_dtypes */
  int ndim;        /* may exceed 4: such a tensor is refused by mf_st_get */
  uint64_t begin, end;
  mf_tensor view;  /* valid when the dtype and ndim are supported */
} entry;

struct mf_st_file {
  char *path;      /* as opened, for messages */
  shard *shards;
  int nshards;
  entry *entries;  /* sorted by name once every shard is read */
  int count;
};

/* ---- reading one shard's header ---- */

static int dtype_index(const char *name) {
  for (int i = 0; i < N_ST_DTYPES; i++)
    if (!strcmp(name, st_dtypes[i].name)) return i;
  return -1;
}

static int metadata_from_json(const shard *s, json_t *meta, char **out) {
  const char *key;
  json_t *v;
  if (!json_is_object(meta)) return mf_fail("%s: __metadata__ is not an object", s->path);
  json_object_foreach(meta, key, v) {
    if (!json_is_string(v)) return mf_fail("%s: __metadata__ value of '%s' is not a string", s->path, key);
  }
  *out = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
  return *out ? 0 : mf_fail("%s: out of memory", s->path);
}

static int int_at(json_t *array, size_t i, uint64_t *out) {
  json_t *v = json_array_get(array, i);
  if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

/* The byte size of a shape of `bits`-bit elements, or -1 if it is not a
 * whole number of bytes or exceeds `limit`. */
static int shape_bytes(json_t *shape, int bits, uint64_t limit, uint64_t *out) {
  uint64_t n = 1;
  for (size_t i = 0; i < json_array_size(shape); i++) {
    uint64_t d;
    if (int_at(shape, i, &d) != 0) return -1;
    if (d > 0 && n > limit * 8 / d) return -1;
    n *= d;
  }
  if (n * (uint64_t)bits % 8 != 0 || n * (uint64_t)bits / 8 > limit) return -1;
  *out = n * (uint64_t)bits / 8;
  return 0;
}

static void fill_view(entry *e, json_t *shape, unsigned char *buffer) {
  if (st_dtypes[e->type].mf < 0 || e->ndim > 4) return;
  e->view.dtype = (mf_dtype)st_dtypes[e->type].mf;
  e->view.ndim = e->ndim;
  for (int i = 0; i < e->ndim; i++) e->view.shape[i] = json_integer_value(json_array_get(shape, i));
  e->view.data = buffer + e->begin;
  e->view.owns_data = 0;
}

static int parse_entry(const shard *s, const char *name, json_t *desc, uint64_t buffer_len, entry *e) {
  json_t *dtype = json_object_get(desc, "dtype"), *shape = json_object_get(desc, "shape");
  json_t *offsets = json_object_get(desc, "data_offsets");
  if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets) ||
      json_array_size(offsets) != 2)
    return mf_fail("%s: tensor '%s': needs a dtype string, a shape array and two data_offsets", s->path, name);
  e->type = dtype_index(json_string_value(dtype));
  if (e->type < 0) return mf_fail("%s: tensor '%s': unknown dtype '%s'", s->path, name, json_string_value(dtype));
  if (int_at(offsets, 0, &e->begin) != 0 || int_at(offsets, 1, &e->end) != 0)
    return mf_fail("%s: tensor '%s': data_offsets are not non-negative integers", s->path, name);
  if (e->begin > e->end || e->end > buffer_len)
    return mf_fail("%s: tensor '%s': data_offsets [%llu, %llu] outside the data buffer of %llu bytes",
                   s->path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                   (unsigned long long)buffer_len);
  uint64_t nbytes;
  if (shape_bytes(shape, st_dtypes[e->type].bits, buffer_len, &nbytes) != 0)
    return mf_fail("%s: tensor '%s': bad shape (negative, fractional bytes, or larger than the file)",
                   s->path, name);
  if (nbytes != e->end - e->begin)
    return mf_fail("%s: tensor '%s': shape of %s needs %llu bytes but data_offsets span %llu",
                   s->path, name, st_dtypes[e->type].name, (unsigned long long)nbytes,
                   (unsigned long long)(e->end - e->begin));
  e->ndim = (int)json_array_size(shape);
  e->name = strdup(name);
  return e->name ? 0 : mf_fail("%s: out of memory", s->path);
}

static int by_begin(const void *a, const void *b) {
  const entry *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* Entries of one shard, sorted by offset, must not share a byte. */
static int check_overlaps(const shard *s, entry *e, int n) {
  qsort(e, (size_t)n, sizeof *e, by_begin);
  for (int i = 1; i < n; i++)
    if (e[i].begin < e[i - 1].end)
      return mf_fail("%s: tensors '%s' and '%s' overlap in the data buffer", s->path, e[i - 1].name, e[i].name);
  return 0;
}

static int parse_header(mf_st_file *f, int si, json_t *root, uint64_t header_len) {
  shard *s = &f->shards[si];
  uint64_t buffer_len = s->size - 8 - header_len;
  unsigned char *buffer = s->map + 8 + header_len;
  entry *grown = realloc(f->entries, (f->count + json_object_size(root)) * sizeof *grown);
  if (!grown) return mf_fail("%s: out of memory", s->path);
  f->entries = grown;
  int first = f->count;
  const char *name;
  json_t *desc;
  json_object_foreach(root, name, desc) {
    if (!strcmp(name, "__metadata__")) {
      if (metadata_from_json(s, desc, &s->metadata) != 0) return -1;
      continue;
    }
    entry *e = &f->entries[f->count];
    memset(e, 0, sizeof *e);
    e->shard = si;
    if (!json_is_object(desc)) return mf_fail("%s: tensor '%s': not an object", s->path, name);
    if (parse_entry(s, name, desc, buffer_len, e) != 0) return -1;
    fill_view(e, json_object_get(desc, "shape"), buffer);
    f->count++;
  }
  return check_overlaps(s, f->entries + first, f->count - first);
}

static int map_file(shard *s) {
  int fd = open(s->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail("%s: %s", s->path, strerror(errno));
  struct stat st;
  int rc = fstat(fd, &st);
  if (rc == 0 && st.st_size < 8) {
    close(fd);
    return mf_fail("%s: truncated: %lld bytes, less than the 8-byte header length", s->path,
                   (long long)st.st_size);
  }
  void *map = rc == 0 ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  int err = errno;
  close(fd);
  if (map == MAP_FAILED) return mf_fail("%s: cannot map: %s", s->path, strerror(err));
  s->map = map;
  s->size = (size_t)st.st_size;
  return 0;
}

/* Maps the file at `path` as a new shard of f and reads its header. */
static int add_shard(mf_st_file *f, const char *path) {
  shard *grown = realloc(f->shards, (size_t)(f->nshards + 1) * sizeof *grown);
  if (!grown) return mf_fail("%s: out of memory", path);
  f->shards = grown;
  shard *s = &f->shards[f->nshards];
  memset(s, 0, sizeof *s);
  s->path = strdup(path);
  if (!s->path) return mf_fail("%s: out of memory", path);
  f->nshards++;
  if (map_file(s) != 0) return -1;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | s->map[i];
  if (n > MAX_HEADER) return mf_fail("%s: header length %llu is implausible (over 100 MB)", path, (unsigned long long)n);
  if (n > s->size - 8)
    return mf_fail("%s: header length %llu runs past the end of the file (%zu bytes)", path,
                   (unsigned long long)n, s->size);
  json_error_t err;
  json_t *root = json_loadb((const char *)s->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &err);
  if (!root) return mf_fail("%s: header is not valid JSON (column %d: %s)", path, err.column, err.text);
  int rc = json_is_object(root) ? parse_header(f, f->nshards - 1, root, n)
                                : mf_fail("%s: header is not a JSON object", path);
  json_decref(root);
  return rc;
}

/* ---- opening files, folders and indexes ---- */

static char *join_path(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
}

static int by_name(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

static const entry *find(const mf_st_file *f, const char *name) {
  entry key = {.name = (char *)name};
  return bsearch(&key, f->entries, (size_t)f->count, sizeof key, by_name);
}

/* Sorts the entries by name and refuses a name held by two shards. */
static int index_names(mf_st_file *f) {
  qsort(f->entries, (size_t)f->count, sizeof *f->entries, by_name);
  for (int i = 1; i < f->count; i++)
    if (!strcmp(f->entries[i].name, f->entries[i - 1].name))
      return mf_fail("%s: tensor '%s' is in both %s and %s", f->path, f->entries[i].name,
                     f->shards[f->entries[i - 1].shard].path, f->shards[f->entries[i].shard].path);
  return 0;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Opens each shard the weight map names, once, in name order. */
static int open_shards(mf_st_file *f, const char *dir, json_t *weight_map) {
  size_t n = 0, cap = json_object_size(weight_map);
  const char **files = malloc((cap ? cap : 1) * sizeof *files);
  if (!files) return mf_fail("%s: out of memory", f->path);
  const char *name;
  json_t *file;
  int rc = 0;
  json_object_foreach(weight_map, name, file) {
    const char *fn = json_string_value(file);
    if (!fn || !*fn || strchr(fn, '/')) {
      rc = mf_fail("%s: weight_map entry '%s' is not a plain file name", f->path, name);
      break;
    }
    files[n++] = fn;
  }
  qsort(files, n, sizeof *files, by_string);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if (i > 0 && !strcmp(files[i], files[i - 1])) continue;
    char *path = join_path(dir, files[i]);
    rc = path ? add_shard(f, path) : mf_fail("%s: out of memory", f->path);
    free(path);
  }
  free(files);
  return rc;
}

/* Every name of the weight map must be in the shard it names. */
static int check_weight_map(mf_st_file *f, json_t *weight_map) {
  const char *name;
  json_t *file;
  json_object_foreach(weight_map, name, file) {
    const entry *e = find(f, name);
    const char *shard_path = e ? f->shards[e->shard].path : "";
    const char *base = strrchr(shard_path, '/');
    if (!e || strcmp(base ? base + 1 : shard_path, json_string_value(file)) != 0)
      return mf_fail("%s: tensor '%s' is not in %s", f->path, name, json_string_value(file));
  }
  return 0;
}

static int open_index(mf_st_file *f, const char *path) {
  json_error_t err;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
  if (!root) return mf_fail("%s: not a valid index (line %d: %s)", path, err.line, err.text);
  json_t *weight_map = json_object_get(root, "weight_map");
  char *dir = dir_of(path);
  int rc;
  if (!json_is_object(weight_map)) rc = mf_fail("%s: no \"weight_map\" object", path);
  else if (!dir) rc = mf_fail("%s: out of memory", path);
  else rc = open_shards(f, dir, weight_map);
  if (rc == 0) rc = index_names(f);
  if (rc == 0) rc = check_weight_map(f, weight_map);
  free(dir);
  json_decref(root);
  return rc;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcmp(s + n - m, suffix);
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A folder holds model.safetensors or model.safetensors.index.json. */
static int open_path(mf_st_file *f, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return mf_fail("%s: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode)) {
    if (ends_with(path, ".json")) return open_index(f, path);
    return add_shard(f, path) == 0 ? index_names(f) : -1;
  }
  char *single = join_path(path, "model.safetensors");
  char *index = join_path(path, "model.safetensors.index.json");
  int rc;
  if (!single || !index) rc = mf_fail("%s: out of memory", path);
  else if (is_file(single)) rc = open_path(f, single);
  else if (is_file(index)) rc = open_path(f, index);
  else rc = mf_fail("%s: has neither model.safetensors nor model.safetensors.index.json", path);
  free(single);
  free(index);
  return rc;
}

mf_st_file *mf_st_open(const char *path) {
  mf_st_file *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return mf_fail_null("%s: out of memory", path);
  }
  if (open_path(f, path) != 0) {
    mf_st_close(f);
    return NULL;
  }
  return f;
}

void mf_st_close(mf_st_file *f) {
  if (!f) return;
  for (int i = 0; i < f->count; i++) free(f->entries[i].name);
  for (int i = 0; i < f->nshards; i++) {
    if (f->shards[i].map) munmap(f->shards[i].map, f->shards[i].size);
    free(f->shards[i].path);
    free(f->shards[i].metadata);
  }
  free(f->entries);
  free(f->shards);
  free(f->path);
  free(f);
}

int mf_st_count(const mf_st_file *f) { return f->count; }

const char *mf_st_name(const mf_st_file *f, int i) {
  if (i < 0 || i >= f->count) return mf_fail_null("%s: tensor index %d out of range (%d tensors)", f->path, i, f->count);
  return f->entries[i].name;
}

const mf_tensor *mf_st_get(const mf_st_file *f, const char *name) {
  const entry *e = find(f, name);
  if (!e) return mf_fail_null("%s: no tensor named '%s'", f->path, name);
  const char *file = f->shards[e->shard].path;
  if (st_dtypes[e->type].mf < 0)
    return mf_fail_null("%s: tensor '%s' has dtype %s, which moonforge does not read", file, name,
                        st_dtypes[e->type].name);
  if (e->ndim > 4)
    return mf_fail_null("%s: tensor '%s' has %d dimensions; at most 4 are supported", file, name, e->ndim);
  return &e->view;
}

const char *mf_st_metadata(const mf_st_file *f) {
  return f->nshards > 0 && f->shards[0].metadata ? f->shards[0].metadata : "{}";
}

/* ---- saving ---- */

/* Position in the reference writer's order: larger dtypes first. */
static int dtype_rank(mf_dtype d) {
  static const int rank[] = {[MF_I64] = 0, [MF_F32] = 1, [MF_I32] = 2, [MF_BF16] = 3, [MF_F16] = 4, [MF_U8] = 5};
  return rank[d];
}

typedef struct {
  const char *name;
  const mf_tensor *t;
} named;

static int by_layout(const void *a, const void *b) {
  const named *x = a, *y = b;
  int r = dtype_rank(x->t->dtype) - dtype_rank(y->t->dtype);
  return r ? r : strcmp(x->name, y->name);
}

static json_t *tensor_desc(const mf_tensor *t, uint64_t begin) {
  json_t *shape = json_array();
  for (int i = 0; i < t->ndim; i++) json_array_append_new(shape, json_integer(t->shape[i]));
  return json_pack("{s:s, s:o, s:[I, I]}", "dtype", mf_dtype_name(t->dtype), "shape", shape, "data_offsets",
                   (json_int_t)begin, (json_int_t)(begin + mf_tensor_nbytes(t)));
}

/* The metadata with its keys in sorted order, so equal metadata gives equal
 * files (jansson dumps keys in insertion order: a sorted dump read back has
 * them sorted), or NULL unless it is an object of strings. */
static json_t *sorted_metadata(const char *metadata_json) {
  json_t *meta = json_loads(metadata_json, JSON_REJECT_DUPLICATES, NULL);
  const char *key;
  json_t *v;
  int strings = json_is_object(meta);
  json_object_foreach(meta, key, v) strings = strings && json_is_string(v);
  char *text = strings ? json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
  json_decref(meta);
  json_t *sorted = text ? json_loads(text, 0, NULL) : NULL;
  free(text);
  return sorted;
}

/* The header object: metadata first, then tensors in layout order. */
static json_t *build_header(const char *path, int n, const named *items, const char *metadata_json) {
  json_t *root = json_object();
  if (metadata_json) {
    json_t *meta = sorted_metadata(metadata_json);
    if (!meta) {
      json_decref(root);
      return mf_fail_null("%s: metadata must be a JSON object of strings", path);
    }
    json_object_set_new(root, "__metadata__", meta);
  }
  uint64_t offset = 0;
  for (int i = 0; i < n; i++) {
    const char *name = items[i].name;
    if (!*name || !strcmp(name, "__metadata__") || json_object_get(root, name)) {
      json_decref(root);
      return mf_fail_null("%s: tensor name '%s' is empty, reserved or repeated", path, name);
    }
    json_object_set_new(root, name, tensor_desc(items[i].t, offset));
    offset += mf_tensor_nbytes(items[i].t);
  }
  return root;
}

static int write_file(const char *path, const char *header, int n, const named *items) {
  size_t len = strlen(header), padded = (len + 7) / 8 * 8;
  unsigned char prefix[8];
  for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *out = mf_atomic_begin(path, tmp);
  if (!out) return -1;
  fwrite(prefix, 1, 8, out);
  fwrite(header, 1, len, out);
  fprintf(out, "%*s", (int)(padded - len), "");
  for (int i = 0; i < n; i++) fwrite(items[i].t->data, 1, mf_tensor_nbytes(items[i].t), out);
  return mf_atomic_finish(out, tmp, path, 1);
}

int mf_st_save(const char *path, int n, const char *const *names, const mf_tensor *const *tensors,
               const char *metadata_json) {
  if (n < 0) return mf_fail("%s: negative tensor count", path);
  named *items = malloc((size_t)(n ? n : 1) * sizeof *items);
  if (!items) return mf_fail("%s: out of memory", path);
  for (int i = 0; i < n; i++) items[i] = (named){names[i], tensors[i]};
  qsort(items, (size_t)n, sizeof *items, by_layout);
  json_t *root = build_header(path, n, items, metadata_json);
  char *header = root ? json_dumps(root, JSON_COMPACT) : NULL;
  int rc = !root ? -1 : !header ? mf_fail("%s: out of memory", path) : write_file(path, header, n, items);
  free(header);
  json_decref(root);
  free(items);
  return rc;
}
