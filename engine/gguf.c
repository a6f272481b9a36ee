/*
 * GGUF files (llama.cpp's format), versions 2 and 3, read by memory-mapping.
 *
 * Layout, all little-endian:
 *   "GGUF" u32 version, u64 tensor_count, u64 kv_count
 *   kv_count entries:    string key, u32 value type, value
 *   tensor_count infos:  string name, u32 n_dims, u64 dims[n_dims] (ggml
 *                        order: dims[0] varies fastest), u32 ggml type,
 *                        u64 offset into the data section
 *   padding to general.alignment (default 32), then the data section.
 * A string is a u64 length and that many bytes (no NUL). An array value is
 * u32 element type, u64 count, then the elements. (Version 1 had 32-bit
 * lengths and counts; it is refused. Version 3 only added big-endian files,
 * which announce themselves by a byte-swapped version and are refused.)
 *
 * Opening trusts nothing: every length and count is checked against the
 * bytes left in the file before it is used, so a lying count fails with a
 * message and never drives an allocation larger than the file; every tensor
 * of a known type must lie inside the data section. A tensor of a type
 * moonforge does not know still lets the file open; reading it is the error.
 * Strings and arrays stay in the mapping; string arrays get an index of
 * offsets so that element j is found without a scan.
 */
#define _GNU_SOURCE
#include "quant.h"
#include "internal.h"
#include "moonforge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64, T_I64, T_F64, NTYPES };
enum { MAX_DIMS = 4, DEFAULT_ALIGNMENT = 32 };

/* Bytes of a scalar value of each type (0 for strings and arrays). */
static const int scalar_size[NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const type_names[NTYPES] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                               "bool", "string", "array", "u64", "i64", "f64"};

typedef struct kv {
  char *key;
  int type, arr_type;   /* arr_type: element type when type is an array */
  int64_t arr_len;
  size_t at;            /* offset of the value (of the first element for arrays) */
  size_t *str_at;       /* string arrays: offset of each element */
} kv;

typedef struct tensor_info {
  char *name;
  int type, ndim;
  int64_t dims[MAX_DIMS];
  uint64_t offset, nbytes;  /* nbytes 0 when the type is unknown */
} tensor_info;

struct mf_gguf {
  char *path;
  const unsigned char *map;
  size_t size, data_at;
  kv *kvs;
  int64_t nkv;
  tensor_info *tensors;
  int64_t ntensors;
};

/* A read position in the mapping; every read checks the bytes left. */
typedef struct cursor {
  const mf_gguf *g;
  size_t at;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
  if (n <= c->g->size - c->at) return 0;
  return mf_fail("%s: truncated: %s needs %llu bytes at offset %zu, the file has %zu", c->g->path, what,
                 (unsigned long long)n, c->at, c->g->size);
}

static int read_u32(cursor *c, uint32_t *out, const char *what) {
  if (need(c, 4, what)) return -1;
  memcpy(out, c->g->map + c->at, 4);
  c->at += 4;
  return 0;
}

static int read_u64(cursor *c, uint64_t *out, const char *what) {
  if (need(c, 8, what)) return -1;
  memcpy(out, c->g->map + c->at, 8);
  c->at += 8;
  return 0;
}

/* Skips a string, leaving its bytes at *at and its length in *len. */
static int read_str(cursor *c, size_t *at, uint64_t *len, const char *what) {
  if (read_u64(c, len, what) || need(c, *len, what)) return -1;
  *at = c->at;
  c->at += *len;
  return 0;
}

static char *copy_str(const mf_gguf *g, size_t at, uint64_t len) {
  char *s = strndup((const char *)g->map + at, len);
  if (!s) mf_fail("%s: out of memory", g->path);
  else if (strlen(s) != len) {
    free(s);
    s = mf_fail_null("%s: a key or tensor name at offset %zu holds a NUL byte", g->path, at);
  }
  return s;
}

/* ---- metadata ---- */

static int read_array(cursor *c, kv *e, const char *what) {
  uint32_t type;
  uint64_t n;
  if (read_u32(c, &type, what) || read_u64(c, &n, what)) return -1;
  if (type >= NTYPES || type == T_ARRAY)
    return mf_fail("%s: key '%s': array element type %u is not supported", c->g->path, e->key, type);
  e->arr_type = (int)type;
  e->at = c->at;
  if (type != T_STRING) {
    /* Bounded by the bytes left before multiplying, so no overflow. */
    if (n > c->g->size || need(c, n * (uint64_t)scalar_size[type], what)) return -1;
    e->arr_len = (int64_t)n;
    c->at += n * scalar_size[type];
    return 0;
  }
  if (n > (c->g->size - c->at) / 8)
    return mf_fail("%s: key '%s': %llu strings cannot fit in the %zu bytes left", c->g->path, e->key,
                   (unsigned long long)n, c->g->size - c->at);
  e->str_at = malloc((n ? n : 1) * sizeof *e->str_at);
  if (!e->str_at) return mf_fail("%s: out of memory", c->g->path);
  for (uint64_t j = 0; j < n; j++) {
    uint64_t len;
    e->str_at[j] = c->at;
    size_t at;
    if (read_str(c, &at, &len, what)) return -1;
  }
  e->arr_len = (int64_t)n;
  return 0;
}

static int read_kv(cursor *c, kv *e, int64_t index) {
  size_t at;
  uint64_t len;
  uint32_t type;
  char what[128];
  snprintf(what, sizeof what, "metadata entry %lld", (long long)index);
  if (read_str(c, &at, &len, what) || !(e->key = copy_str(c->g, at, len))) return -1;
  snprintf(what, sizeof what, "key '%s'", e->key);
  if (read_u32(c, &type, what)) return -1;
  if (type >= NTYPES) return mf_fail("%s: key '%s': unknown value type %u", c->g->path, e->key, type);
  e->type = (int)type;
  e->at = c->at;
  if (type == T_ARRAY) return read_array(c, e, what);
  if (type == T_STRING) return read_str(c, &at, &len, what);
  if (need(c, scalar_size[type], what)) return -1;
  c->at += scalar_size[type];
  return 0;
}

static int read_metadata(mf_gguf *g, cursor *c, uint64_t n) {
  /* Each entry takes at least 12 bytes (key length and type). */
  if (n > (g->size - c->at) / 12)
    return mf_fail("%s: %llu metadata entries cannot fit in a %zu-byte file", g->path, (unsigned long long)n, g->size);
  g->kvs = calloc(n ? n : 1, sizeof *g->kvs);
  if (!g->kvs) return mf_fail("%s: out of memory", g->path);
  for (uint64_t i = 0; i < n; i++) {
    int rc = read_kv(c, &g->kvs[i], (int64_t)i);
    g->nkv = (int64_t)i + 1;
    if (rc) return -1;
    if (mf_gguf_find(g, g->kvs[i].key) != (int64_t)i)
      return mf_fail("%s: key '%s' appears twice", g->path, g->kvs[i].key);
  }
  return 0;
}

/* ---- tensor infos ---- */

static int read_tensor_info(cursor *c, tensor_info *t, int64_t index) {
  size_t at;
  uint64_t len, n = 1;
  uint32_t ndim, type;
  char what[128];
  snprintf(what, sizeof what, "tensor info %lld", (long long)index);
  if (read_str(c, &at, &len, what) || !(t->name = copy_str(c->g, at, len))) return -1;
  snprintf(what, sizeof what, "tensor '%s'", t->name);
  if (read_u32(c, &ndim, what)) return -1;
  if (ndim < 1 || ndim > MAX_DIMS)
    return mf_fail("%s: tensor '%s' has %u dimensions (1 to %d supported)", c->g->path, t->name, ndim, MAX_DIMS);
  t->ndim = (int)ndim;
  for (int d = 0; d < t->ndim; d++) {
    uint64_t dim;
    if (read_u64(c, &dim, what)) return -1;
    if (dim > INT64_MAX || (dim && n > (uint64_t)INT64_MAX / dim))
      return mf_fail("%s: tensor '%s': dimension %d (%llu) is absurd", c->g->path, t->name, d, (unsigned long long)dim);
    t->dims[d] = (int64_t)dim;
    n *= dim;
  }
  if (read_u32(c, &type, what) || read_u64(c, &t->offset, what)) return -1;
  t->type = (int)type;
  const mf_ggml_type *info = mf_ggml_type_info(t->type);
  if (!info) return 0;
  if (t->dims[0] % info->block)
    return mf_fail("%s: tensor '%s': row of %lld is not a whole number of %s blocks of %d", c->g->path,
                   t->name, (long long)t->dims[0], info->name, info->block);
  if (n / info->block > c->g->size / info->bytes)
    return mf_fail("%s: tensor '%s': %llu elements of %s cannot fit in a %zu-byte file", c->g->path, t->name,
                   (unsigned long long)n, info->name, c->g->size);
  t->nbytes = n / info->block * info->bytes;
  return 0;
}

static int alignment(const mf_gguf *g, uint64_t *out) {
  int64_t i = mf_gguf_find(g, "general.alignment"), v;
  *out = DEFAULT_ALIGNMENT;
  if (i < 0) return 0;
  if (mf_gguf_int(g, i, &v)) return -1;
  if (v <= 0 || v > 1 << 20 || (v & (v - 1)))
    return mf_fail("%s: general.alignment %lld is not a power of two", g->path, (long long)v);
  *out = (uint64_t)v;
  return 0;
}

static int read_tensors(mf_gguf *g, cursor *c, uint64_t n) {
  /* Each info takes at least 24 bytes (name length, n_dims, a dim, type; offset). */
  if (n > (g->size - c->at) / 24)
    return mf_fail("%s: %llu tensors cannot fit in a %zu-byte file", g->path, (unsigned long long)n, g->size);
  g->tensors = calloc(n ? n : 1, sizeof *g->tensors);
  if (!g->tensors) return mf_fail("%s: out of memory", g->path);
  for (uint64_t i = 0; i < n; i++) {
    int rc = read_tensor_info(c, &g->tensors[i], (int64_t)i);
    g->ntensors = (int64_t)i + 1;
    if (rc) return -1;
    if (mf_gguf_tensor_find(g, g->tensors[i].name) != (int64_t)i)
      return mf_fail("%s: tensor '%s' appears twice", g->path, g->tensors[i].name);
  }
  uint64_t align;
  if (alignment(g, &align)) return -1;
  g->data_at = (size_t)((c->at + align - 1) / align * align);
  uint64_t data_len = g->data_at <= g->size ? g->size - g->data_at : 0;
  for (int64_t i = 0; i < g->ntensors; i++) {
    const tensor_info *t = &g->tensors[i];
    if (t->offset % align)
      return mf_fail("%s: tensor '%s': offset %llu is not a multiple of the alignment %llu", g->path, t->name,
                     (unsigned long long)t->offset, (unsigned long long)align);
    if (t->offset > data_len || t->nbytes > data_len - t->offset)
      return mf_fail("%s: tensor '%s': %llu bytes at data offset %llu run past the end of the file "
                     "(data section of %llu bytes)", g->path, t->name, (unsigned long long)t->nbytes,
                     (unsigned long long)t->offset, (unsigned long long)data_len);
  }
  return 0;
}

/* ---- opening ---- */

static int map_file(mf_gguf *g) {
  int fd = open(g->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail("%s: %s", g->path, strerror(errno));
  struct stat st;
  int rc = fstat(fd, &st);
  if (rc == 0 && st.st_size < 24) {
    close(fd);
    return mf_fail("%s: truncated: %lld bytes, less than the 24-byte GGUF header", g->path, (long long)st.st_size);
  }
  void *map = rc == 0 ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  int err = errno;
  close(fd);
  if (map == MAP_FAILED) return mf_fail("%s: cannot map: %s", g->path, strerror(err));
  g->map = map;
  g->size = (size_t)st.st_size;
  return 0;
}

static int read_header(mf_gguf *g) {
  cursor c = {g, 0};
  uint32_t magic, version;
  uint64_t ntensors, nkv;
  if (map_file(g) || read_u32(&c, &magic, "magic") || read_u32(&c, &version, "version")) return -1;
  if (memcmp(g->map, "GGUF", 4))
    return mf_fail("%s: not a GGUF file (magic bytes %02x %02x %02x %02x)", g->path, g->map[0], g->map[1],
                   g->map[2], g->map[3]);
  if (version != 2 && version != 3)
    return mf_fail("%s: GGUF version %u is not supported (2 and 3 are%s)", g->path, version,
                   version > 0xffff ? "; this may be a big-endian file" : "");
  if (read_u64(&c, &ntensors, "tensor count") || read_u64(&c, &nkv, "metadata count")) return -1;
  return read_metadata(g, &c, nkv) || read_tensors(g, &c, ntensors) ? -1 : 0;
}

mf_gguf *mf_gguf_open(const char *path) {
  mf_gguf *g = calloc(1, sizeof *g);
  if (!g || !(g->path = strdup(path))) {
    free(g);
    return mf_fail_null("%s: out of memory", path);
  }
  if (read_header(g)) {
    mf_gguf_close(g);
    return NULL;
  }
  return g;
}

void mf_gguf_close(mf_gguf *g) {
  if (!g) return;
  for (int64_t i = 0; i < g->nkv; i++) {
    free(g->kvs[i].key);
    free(g->kvs[i].str_at);
  }
  for (int64_t i = 0; i < g->ntensors; i++) free(g->tensors[i].name);
  free(g->kvs);
  free(g->tensors);
  if (g->map) munmap((void *)g->map, g->size);
  free(g->path);
  free(g);
}

/* ---- metadata access ---- */

int64_t mf_gguf_kv_count(const mf_gguf *g) { return g->nkv; }

static const kv *entry(const mf_gguf *g, int64_t i) {
  if (i >= 0 && i < g->nkv) return &g->kvs[i];
  return mf_fail_null("%s: metadata index %lld out of range (%lld entries)", g->path, (long long)i, (long long)g->nkv);
}

const char *mf_gguf_key(const mf_gguf *g, int64_t i) {
  const kv *e = entry(g, i);
  return e ? e->key : NULL;
}

int64_t mf_gguf_find(const mf_gguf *g, const char *key) {
  for (int64_t i = 0; i < g->nkv; i++)
    if (!strcmp(g->kvs[i].key, key)) return i;
  return -1;
}

int mf_gguf_type(const mf_gguf *g, int64_t i) {
  const kv *e = entry(g, i);
  return e ? e->type : -1;
}

int mf_gguf_arr_type(const mf_gguf *g, int64_t i) {
  const kv *e = entry(g, i);
  if (e && e->type != T_ARRAY) return mf_fail("%s: key '%s' is not an array", g->path, e->key);
  return e ? e->arr_type : -1;
}

int64_t mf_gguf_arr_len(const mf_gguf *g, int64_t i) {
  const kv *e = entry(g, i);
  if (e && e->type != T_ARRAY) return mf_fail("%s: key '%s' is not an array", g->path, e->key);
  return e ? e->arr_len : -1;
}

/* A number of type `type` at p, as an integer (*is_int) or as a double. */
static void load_number(int type, const unsigned char *p, int64_t *iv, double *fv, int *is_int) {
  union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
          uint64_t u64; int64_t i64; double f64; } u;
  memcpy(&u, p, (size_t)scalar_size[type]);
  *is_int = 1;
  switch (type) {
  case T_U8: case T_BOOL: *iv = u.u8; break;
  case T_I8: *iv = u.i8; break;
  case T_U16: *iv = u.u16; break;
  case T_I16: *iv = u.i16; break;
  case T_U32: *iv = u.u32; break;
  case T_I32: *iv = u.i32; break;
  case T_I64: *iv = u.i64; break;
  case T_U64: *iv = (int64_t)u.u64; *is_int = u.u64 <= INT64_MAX ? 1 : -1; break;
  case T_F32: *fv = u.f32; *is_int = 0; break;
  case T_F64: *fv = u.f64; *is_int = 0; break;
  }
}

static int get_number(const mf_gguf *g, const char *key, int type, size_t at, int64_t *iv, double *fv) {
  if (type == T_STRING || type == T_ARRAY)
    return mf_fail("%s: key '%s' holds a %s, not a number", g->path, key, type_names[type]);
  int64_t i = 0;
  double f = 0;
  int is_int;
  load_number(type, g->map + at, &i, &f, &is_int);
  if (is_int < 0) return mf_fail("%s: key '%s': u64 value too large", g->path, key);
  if (fv) *fv = is_int ? (double)i : f;
  if (iv && !is_int && !(f >= -9.2e18 && f <= 9.2e18))
    return mf_fail("%s: key '%s': %g is not an integer", g->path, key, f);
  if (iv) *iv = is_int ? i : (int64_t)f;
  return 0;
}

int mf_gguf_int(const mf_gguf *g, int64_t i, int64_t *out) {
  const kv *e = entry(g, i);
  return e ? get_number(g, e->key, e->type, e->at, out, NULL) : -1;
}

int mf_gguf_float(const mf_gguf *g, int64_t i, double *out) {
  const kv *e = entry(g, i);
  return e ? get_number(g, e->key, e->type, e->at, NULL, out) : -1;
}

const char *mf_gguf_str(const mf_gguf *g, int64_t i, size_t *len) {
  const kv *e = entry(g, i);
  if (!e) return NULL;
  if (e->type != T_STRING) return mf_fail_null("%s: key '%s' holds a %s, not a string", g->path, e->key, type_names[e->type]);
  uint64_t n;
  memcpy(&n, g->map + e->at, 8);
  *len = (size_t)n;
  return (const char *)g->map + e->at + 8;
}

/* Element j of array i, checked against the array's type. */
static const kv *element(const mf_gguf *g, int64_t i, int64_t j, int want_string) {
  const kv *e = entry(g, i);
  if (!e) return NULL;
  if (e->type != T_ARRAY) return mf_fail_null("%s: key '%s' is not an array", g->path, e->key);
  if ((e->arr_type == T_STRING) != want_string)
    return mf_fail_null("%s: key '%s' is an array of %s", g->path, e->key, type_names[e->arr_type]);
  if (j < 0 || j >= e->arr_len)
    return mf_fail_null("%s: key '%s': index %lld out of range (%lld elements)", g->path, e->key, (long long)j,
                        (long long)e->arr_len);
  return e;
}

const char *mf_gguf_arr_str(const mf_gguf *g, int64_t i, int64_t j, size_t *len) {
  const kv *e = element(g, i, j, 1);
  if (!e) return NULL;
  uint64_t n;
  memcpy(&n, g->map + e->str_at[j], 8);
  *len = (size_t)n;
  return (const char *)g->map + e->str_at[j] + 8;
}

int mf_gguf_arr_int(const mf_gguf *g, int64_t i, int64_t j, int64_t *out) {
  const kv *e = element(g, i, j, 0);
  return e ? get_number(g, e->key, e->arr_type, e->at + (size_t)j * scalar_size[e->arr_type], out, NULL) : -1;
}

int mf_gguf_arr_float(const mf_gguf *g, int64_t i, int64_t j, double *out) {
  const kv *e = element(g, i, j, 0);
  return e ? get_number(g, e->key, e->arr_type, e->at + (size_t)j * scalar_size[e->arr_type], NULL, out) : -1;
}

/* ---- tensors ---- */

int64_t mf_gguf_tensor_count(const mf_gguf *g) { return g->ntensors; }

static const tensor_info *tensor(const mf_gguf *g, int64_t i) {
  if (i >= 0 && i < g->ntensors) return &g->tensors[i];
  return mf_fail_null("%s: tensor index %lld out of range (%lld tensors)", g->path, (long long)i, (long long)g->ntensors);
}

const char *mf_gguf_tensor_name(const mf_gguf *g, int64_t i) {
  const tensor_info *t = tensor(g, i);
  return t ? t->name : NULL;
}

int64_t mf_gguf_tensor_find(const mf_gguf *g, const char *name) {
  for (int64_t i = 0; i < g->ntensors; i++)
    if (!strcmp(g->tensors[i].name, name)) return i;
  return -1;
}

int mf_gguf_tensor_type(const mf_gguf *g, int64_t i) {
  const tensor_info *t = tensor(g, i);
  return t ? t->type : -1;
}

int mf_gguf_tensor_dims(const mf_gguf *g, int64_t i, int64_t *dims) {
  const tensor_info *t = tensor(g, i);
  if (!t) return -1;
  memcpy(dims, t->dims, (size_t)t->ndim * sizeof *dims);
  return t->ndim;
}

const void *mf_gguf_tensor_data(const mf_gguf *g, int64_t i, size_t *nbytes) {
  const tensor_info *t = tensor(g, i);
  if (!t) return NULL;
  if (!mf_ggml_type_info(t->type))
    return mf_fail_null("%s: tensor '%s' has ggml type %d, which moonforge does not know", g->path, t->name, t->type);
  *nbytes = (size_t)t->nbytes;
  return g->map + g->data_at + t->offset;
}

mf_tensor *mf_gguf_tensor_f32(const mf_gguf *g, int64_t i) {
  size_t nbytes;
  const void *data = mf_gguf_tensor_data(g, i, &nbytes);
  if (!data) return NULL;
  const tensor_info *t = &g->tensors[i];
  int64_t shape[MAX_DIMS];
  for (int d = 0; d < t->ndim; d++) shape[d] = t->dims[t->ndim - 1 - d];
  mf_tensor *out = mf_tensor_new(MF_F32, t->ndim, shape);
  if (!out) return NULL;
  if (mf_ggml_decode(t->type, data, out->data, mf_tensor_numel(out))) {
    mf_tensor_free(out);
    return mf_fail_null("%s: tensor '%s': %s", g->path, t->name, mf_errmsg());
  }
  return out;
}
