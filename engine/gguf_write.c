/*
 * Writing GGUF v3 files (see gguf.c for the layout).
 *
 * Metadata entries are serialised as they are set into one growing byte
 * buffer, which is the file's metadata section verbatim; tensors are kept
 * as (name, type, dims, data pointer) and laid out at write time, each at
 * the next multiple of 32 bytes of the data section, as llama.cpp writes
 * them. The file appears atomically under its name or not at all.
 */
#define _GNU_SOURCE
#include "quant.h"
#include "formats.h"
#include "internal.h"
#include "moonforge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ALIGNMENT = 32, T_BOOL = 7, T_STRING = 8, T_ARRAY = 9, MAX_DIMS = 4 };

/* Bytes of each GGUF value type's scalars; 0 for string and array. */
static const int value_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
enum { NVALUE_TYPES = sizeof value_size / sizeof value_size[0] };

typedef struct out_tensor {
  char *name;
  int type, ndim;
  int64_t dims[MAX_DIMS];
  const void *data;
  uint64_t nbytes, offset;
} out_tensor;

struct mf_gguf_writer {
  unsigned char *kv;  /* the serialised metadata section */
  size_t kv_len, kv_cap;
  char **keys;
  int64_t nkeys;
  out_tensor *tensors;
  int64_t ntensors;
  int failed;         /* out of memory while appending */
};

mf_gguf_writer *mf_gguf_writer_new(void) {
  mf_gguf_writer *w = calloc(1, sizeof *w);
  return w ? w : mf_fail_null("gguf writer: out of memory");
}

void mf_gguf_writer_free(mf_gguf_writer *w) {
  if (!w) return;
  for (int64_t i = 0; i < w->nkeys; i++) free(w->keys[i]);
  for (int64_t i = 0; i < w->ntensors; i++) free(w->tensors[i].name);
  free(w->keys);
  free(w->tensors);
  free(w->kv);
  free(w);
}

/* ---- metadata ---- */

static void append(mf_gguf_writer *w, const void *p, size_t n) {
  if (w->failed) return;
  if (w->kv_len + n > w->kv_cap) {
    size_t cap = w->kv_cap ? w->kv_cap : 4096;
    while (cap < w->kv_len + n) cap *= 2;
    unsigned char *grown = realloc(w->kv, cap);
    if (!grown) {
      w->failed = 1;
      return;
    }
    w->kv = grown;
    w->kv_cap = cap;
  }
  memcpy(w->kv + w->kv_len, p, n);
  w->kv_len += n;
}

static void append_u32(mf_gguf_writer *w, uint32_t v) { append(w, &v, 4); }
static void append_u64(mf_gguf_writer *w, uint64_t v) { append(w, &v, 8); }

static void append_str(mf_gguf_writer *w, const char *s, size_t len) {
  append_u64(w, len);
  append(w, s, len);
}

/* Starts an entry: records the key (refusing a repeat) and writes it with its type. */
static int begin(mf_gguf_writer *w, const char *key, int type) {
  for (int64_t i = 0; i < w->nkeys; i++)
    if (!strcmp(w->keys[i], key)) return mf_fail("gguf writer: key '%s' set twice", key);
  char **grown = realloc(w->keys, (size_t)(w->nkeys + 1) * sizeof *grown);
  if (!grown) return mf_fail("gguf writer: out of memory");
  w->keys = grown;
  if (!(w->keys[w->nkeys] = strdup(key))) return mf_fail("gguf writer: out of memory");
  w->nkeys++;
  append_str(w, key, strlen(key));
  append_u32(w, (uint32_t)type);
  return 0;
}

static int finish(mf_gguf_writer *w, const char *key) {
  return w->failed ? mf_fail("gguf writer: out of memory at key '%s'", key) : 0;
}

static int is_int_type(int type) { return (type >= 0 && type <= 5) || type == T_BOOL || type == 10 || type == 11; }
static int is_float_type(int type) { return type == 6 || type == 12; }

/* value as GGUF type `type` (numeric) into out. */
static void encode_number(int type, int64_t iv, double fv, unsigned char *out) {
  float f32 = (float)fv;
  switch (type) {
  case 6: memcpy(out, &f32, 4); break;
  case 12: memcpy(out, &fv, 8); break;
  default: memcpy(out, &iv, (size_t)value_size[type]); break;  /* little-endian: the low bytes */
  }
}

int mf_gguf_set_int(mf_gguf_writer *w, const char *key, int type, int64_t value) {
  if (!is_int_type(type)) return mf_fail("gguf writer: key '%s': type %d is not an integer type", key, type);
  unsigned char buf[8];
  encode_number(type, value, 0, buf);
  if (begin(w, key, type)) return -1;
  append(w, buf, (size_t)value_size[type]);
  return finish(w, key);
}

int mf_gguf_set_float(mf_gguf_writer *w, const char *key, int type, double value) {
  if (!is_float_type(type)) return mf_fail("gguf writer: key '%s': type %d is not a float type", key, type);
  unsigned char buf[8];
  encode_number(type, 0, value, buf);
  if (begin(w, key, type)) return -1;
  append(w, buf, (size_t)value_size[type]);
  return finish(w, key);
}

int mf_gguf_set_str(mf_gguf_writer *w, const char *key, const char *s, size_t len) {
  if (begin(w, key, T_STRING)) return -1;
  append_str(w, s, len);
  return finish(w, key);
}

int mf_gguf_set_arr(mf_gguf_writer *w, const char *key, int type, int64_t n, const void *values) {
  if (!is_int_type(type) && !is_float_type(type))
    return mf_fail("gguf writer: key '%s': array type %d is not numeric", key, type);
  if (n < 0) return mf_fail("gguf writer: key '%s': negative length", key);
  if (begin(w, key, T_ARRAY)) return -1;
  append_u32(w, (uint32_t)type);
  append_u64(w, (uint64_t)n);
  append(w, values, (size_t)n * (size_t)value_size[type]);
  return finish(w, key);
}

int mf_gguf_set_arr_str(mf_gguf_writer *w, const char *key, int64_t n, const char *const *s,
                        const size_t *lens) {
  if (n < 0) return mf_fail("gguf writer: key '%s': negative length", key);
  if (begin(w, key, T_ARRAY)) return -1;
  append_u32(w, T_STRING);
  append_u64(w, (uint64_t)n);
  for (int64_t i = 0; i < n; i++) append_str(w, s[i], lens[i]);
  return finish(w, key);
}

int mf_gguf_copy_kv(mf_gguf_writer *w, const mf_gguf *g, int64_t i) {
  const char *key = mf_gguf_key(g, i);
  int type = mf_gguf_type(g, i);
  if (!key) return -1;
  size_t len;
  if (type == T_STRING) {
    const char *s = mf_gguf_str(g, i, &len);
    return mf_gguf_set_str(w, key, s, len);
  }
  if (type != T_ARRAY) {
    if (is_float_type(type)) {
      double v;
      return mf_gguf_float(g, i, &v) ? -1 : mf_gguf_set_float(w, key, type, v);
    }
    int64_t v;
    return mf_gguf_int(g, i, &v) ? -1 : mf_gguf_set_int(w, key, type, v);
  }
  int at = mf_gguf_arr_type(g, i);
  int64_t n = mf_gguf_arr_len(g, i);
  if (begin(w, key, T_ARRAY)) return -1;
  append_u32(w, (uint32_t)at);
  append_u64(w, (uint64_t)n);
  for (int64_t j = 0; j < n; j++) {
    unsigned char buf[8];
    int64_t iv = 0;
    double fv = 0;
    if (at == T_STRING) {
      const char *s = mf_gguf_arr_str(g, i, j, &len);
      append_str(w, s, len);
      continue;
    }
    if (is_float_type(at) ? mf_gguf_arr_float(g, i, j, &fv) : mf_gguf_arr_int(g, i, j, &iv)) return -1;
    encode_number(at, iv, fv, buf);
    append(w, buf, (size_t)value_size[at]);
  }
  return finish(w, key);
}

/* ---- tensors ---- */

int mf_gguf_add_tensor(mf_gguf_writer *w, const char *name, int type, int ndim, const int64_t *dims,
                       const void *data) {
  const mf_ggml_type *info = mf_ggml_type_info(type);
  if (!info) return mf_fail("gguf writer: tensor '%s': unknown ggml type %d", name, type);
  if (ndim < 1 || ndim > MAX_DIMS) return mf_fail("gguf writer: tensor '%s': %d dimensions", name, ndim);
  uint64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    if (dims[d] < 0) return mf_fail("gguf writer: tensor '%s': negative dimension", name);
    n *= (uint64_t)dims[d];
  }
  if (dims[0] % info->block)
    return mf_fail("gguf writer: tensor '%s': row of %lld is not whole %s blocks", name, (long long)dims[0], info->name);
  for (int64_t i = 0; i < w->ntensors; i++)
    if (!strcmp(w->tensors[i].name, name)) return mf_fail("gguf writer: tensor '%s' added twice", name);
  out_tensor *grown = realloc(w->tensors, (size_t)(w->ntensors + 1) * sizeof *grown);
  if (!grown) return mf_fail("gguf writer: out of memory");
  w->tensors = grown;
  out_tensor *t = &w->tensors[w->ntensors];
  *t = (out_tensor){strdup(name), type, ndim, {0}, data, n / info->block * info->bytes, 0};
  if (!t->name) return mf_fail("gguf writer: out of memory");
  memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
  w->ntensors++;
  return 0;
}

static uint64_t pad(uint64_t n) { return (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT; }

static int write_all(FILE *f, mf_gguf_writer *w) {
  static const unsigned char zeros[ALIGNMENT];
  uint32_t version = 3;
  uint64_t counts[2] = {(uint64_t)w->ntensors, (uint64_t)w->nkeys}, offset = 0, at;
  int ok = fwrite("GGUF", 1, 4, f) == 4 && fwrite(&version, 4, 1, f) == 1 && fwrite(counts, 8, 2, f) == 2 &&
           fwrite(w->kv, 1, w->kv_len, f) == w->kv_len;
  for (int64_t i = 0; ok && i < w->ntensors; i++) {
    out_tensor *t = &w->tensors[i];
    uint64_t len = strlen(t->name);
    uint32_t ndim = (uint32_t)t->ndim, type = (uint32_t)t->type;
    t->offset = offset;
    offset += t->nbytes + pad(t->nbytes);
    ok = fwrite(&len, 8, 1, f) == 1 && fwrite(t->name, 1, len, f) == len && fwrite(&ndim, 4, 1, f) == 1 &&
         fwrite(t->dims, 8, ndim, f) == ndim && fwrite(&type, 4, 1, f) == 1 && fwrite(&t->offset, 8, 1, f) == 1;
  }
  at = (uint64_t)ftell(f);
  ok = ok && fwrite(zeros, 1, pad(at), f) == pad(at);
  for (int64_t i = 0; ok && i < w->ntensors; i++) {
    const out_tensor *t = &w->tensors[i];
    ok = fwrite(t->data, 1, t->nbytes, f) == t->nbytes && fwrite(zeros, 1, pad(t->nbytes), f) == pad(t->nbytes);
  }
  return ok;
}

int mf_gguf_write(mf_gguf_writer *w, const char *path) {
  if (w->failed) return mf_fail("%s: out of memory while building the metadata", path);
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  if (!f) return -1;
  return mf_atomic_finish(f, tmp, path, write_all(f, w));
}
