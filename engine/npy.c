/*
 * NumPy .npy files: read format 1.0 and 2.0, write 1.0 (2.0 exists only for
 * headers over 64 KiB, which four dimensions never need).
 *
 * Layout: "\x93NUMPY", major, minor, header length (2 bytes LE in 1.0, 4 in
 * 2.0), then a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a newline so the data starts on a 64-byte boundary,
 * then the raw little-endian elements in C order. Files are written exactly
 * as numpy writes them. The data length is checked against the file size
 * before anything is allocated, so a hostile shape cannot exhaust memory.
 */
#include "formats.h"
#include "internal.h"
#include "moonforge.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { PREFIX = 8, MAX_HEADER = 1 << 20, ALIGN = 64 };

static const char MAGIC[6] = "\x93NUMPY";

/* The element types moonforge reads; bf16 has no numpy type. */
static const struct {
  const char *descr;
  mf_dtype dtype;
} descrs[] = {
  {"<f4", MF_F32}, {"<f2", MF_F16}, {"<i4", MF_I32}, {"<i8", MF_I64}, {"|u1", MF_U8},
};

/* ---- reading the header dict ---- */

typedef struct {
  const char *path;
  const char *p;
} cursor;

static void skip_space(cursor *c) {
  while (isspace((unsigned char)*c->p)) c->p++;
}

/* Consumes ch (after spaces) when it is next; returns whether it was. */
static int accept(cursor *c, char ch) {
  skip_space(c);
  if (*c->p != ch) return 0;
  c->p++;
  return 1;
}

static int expect(cursor *c, char ch) {
  if (accept(c, ch)) return 0;
  return mf_fail("%s: malformed .npy header: expected '%c' at \"%.20s\"", c->path, ch, c->p);
}

/* A quoted Python string without escapes (keys and descr never need them). */
static int parse_string(cursor *c, char *out, size_t cap) {
  skip_space(c);
  char quote = *c->p;
  if (quote != '\'' && quote != '"')
    return mf_fail("%s: malformed .npy header: expected a string at \"%.20s\"", c->path, c->p);
  const char *end = strchr(c->p + 1, quote);
  if (!end || (size_t)(end - c->p - 1) >= cap)
    return mf_fail("%s: malformed .npy header: bad string at \"%.20s\"", c->path, c->p);
  size_t n = (size_t)(end - c->p - 1);
  memcpy(out, c->p + 1, n);
  out[n] = 0;
  c->p = end + 1;
  return 0;
}

static int parse_bool(cursor *c, int *out) {
  skip_space(c);
  if (!strncmp(c->p, "False", 5)) *out = 0;
  else if (!strncmp(c->p, "True", 4)) *out = 1;
  else return mf_fail("%s: malformed .npy header: expected True or False at \"%.20s\"", c->path, c->p);
  c->p += *out ? 4 : 5;
  return 0;
}

/* A tuple of non-negative integers: (), (3,), (2, 3). */
static int parse_shape(cursor *c, int *ndim, int64_t *shape) {
  if (expect(c, '(') != 0) return -1;
  *ndim = 0;
  while (!accept(c, ')')) {
    if (*ndim == 4) return mf_fail("%s: more than 4 dimensions are not supported", c->path);
    skip_space(c);
    if (!isdigit((unsigned char)*c->p))
      return mf_fail("%s: malformed .npy header: bad shape at \"%.20s\"", c->path, c->p);
    int64_t v = 0;
    for (; isdigit((unsigned char)*c->p); c->p++) {
      if (v > (INT64_MAX - 9) / 10) return mf_fail("%s: shape dimension too large", c->path);
      v = v * 10 + (*c->p - '0');
    }
    shape[(*ndim)++] = v;
    if (!accept(c, ',') && (skip_space(c), *c->p != ')'))
      return mf_fail("%s: malformed .npy header: bad shape at \"%.20s\"", c->path, c->p);
  }
  return 0;
}

static int dtype_from_descr(const char *path, const char *descr, mf_dtype *out) {
  for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
    if (!strcmp(descr, descrs[i].descr)) {
      *out = descrs[i].dtype;
      return 0;
    }
  if (descr[0] == '>') return mf_fail("%s: big-endian data ('%s') is not supported", path, descr);
  return mf_fail("%s: element type '%s' is not supported (<f4, <f2, <i4, <i8, |u1 are)", path, descr);
}

static int parse_header(const char *path, const char *text, mf_dtype *dtype, int *ndim, int64_t *shape) {
  cursor c = {path, text};
  int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
  if (expect(&c, '{') != 0) return -1;
  while (!accept(&c, '}')) {
    char key[32], descr[32];
    if (parse_string(&c, key, sizeof key) != 0 || expect(&c, ':') != 0) return -1;
    int rc;
    if (!strcmp(key, "descr") && !have_descr++) {
      rc = parse_string(&c, descr, sizeof descr);
      if (rc == 0) rc = dtype_from_descr(path, descr, dtype);
    } else if (!strcmp(key, "fortran_order") && !have_order++) {
      rc = parse_bool(&c, &fortran);
    } else if (!strcmp(key, "shape") && !have_shape++) {
      rc = parse_shape(&c, ndim, shape);
    } else {
      return mf_fail("%s: malformed .npy header: unexpected or repeated key '%s'", path, key);
    }
    if (rc != 0) return -1;
    if (!accept(&c, ',') && (skip_space(&c), *c.p != '}'))
      return mf_fail("%s: malformed .npy header: expected ',' or '}' at \"%.20s\"", path, c.p);
  }
  skip_space(&c);
  if (*c.p) return mf_fail("%s: malformed .npy header: text after the dict", path);
  if (!have_descr || !have_order || !have_shape)
    return mf_fail("%s: .npy header lacks '%s'", path,
                   !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
  if (fortran) return mf_fail("%s: Fortran-order arrays are not supported", path);
  return 0;
}

/* ---- loading ---- */

static uint32_t read_le(const unsigned char *p, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Reads the prefix and header; leaves f at the start of the data and
 * stores the header's end offset. */
static int read_header(FILE *f, const char *path, mf_dtype *dtype, int *ndim, int64_t *shape,
                       long *data_start) {
  unsigned char prefix[PREFIX + 4];
  if (fread(prefix, 1, PREFIX, f) != PREFIX || memcmp(prefix, MAGIC, sizeof MAGIC) != 0)
    return mf_fail("%s: not a .npy file (bad magic or truncated)", path);
  int major = prefix[6], len_bytes = major == 1 ? 2 : 4;
  if (major != 1 && major != 2)
    return mf_fail("%s: .npy format %d.%d is not supported (1.0 and 2.0 are)", path, major, prefix[7]);
  if (fread(prefix + PREFIX, 1, len_bytes, f) != (size_t)len_bytes)
    return mf_fail("%s: truncated .npy header", path);
  uint32_t header_len = read_le(prefix + PREFIX, len_bytes);
  if (header_len > MAX_HEADER) return mf_fail("%s: .npy header of %u bytes is too long", path, header_len);
  char *text = malloc(header_len + 1);
  if (!text) return mf_fail("%s: out of memory", path);
  int rc = -1;
  if (fread(text, 1, header_len, f) != header_len) {
    mf_fail("%s: truncated .npy header", path);
  } else {
    text[header_len] = 0;
    if (strlen(text) != header_len) mf_fail("%s: malformed .npy header: NUL byte", path);
    else rc = parse_header(path, text, dtype, ndim, shape);
  }
  free(text);
  *data_start = PREFIX + len_bytes + (long)header_len;
  return rc;
}

static mf_tensor *load_open(FILE *f, const char *path) {
  mf_dtype dtype = MF_F32;
  int ndim = 0;
  int64_t shape[4];
  long data_start = 0;
  size_t nbytes;
  struct stat st;
  if (read_header(f, path, &dtype, &ndim, shape, &data_start) != 0 ||
      mf_shape_check(path, dtype, ndim, shape, &nbytes) != 0)
    return NULL;
  if (fstat(fileno(f), &st) != 0) return mf_fail_null("%s: %s", path, strerror(errno));
  uint64_t have = (uint64_t)st.st_size - (uint64_t)data_start;
  if (have < nbytes)
    return mf_fail_null("%s: truncated: shape needs %zu data bytes, the file has %llu", path, nbytes,
                        (unsigned long long)have);
  if (have > nbytes)
    return mf_fail_null("%s: %llu bytes after the data", path, (unsigned long long)(have - nbytes));
  mf_tensor *t = mf_tensor_new(dtype, ndim, shape);
  if (t && fread(t->data, 1, nbytes, f) != nbytes) {
    mf_tensor_free(t);
    return mf_fail_null("%s: read error", path);
  }
  return t;
}

mf_tensor *mf_tensor_load_npy(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return mf_fail_null("%s: %s", path, strerror(errno));
  mf_tensor *t = load_open(f, path);
  fclose(f);
  return t;
}

/* ---- saving ---- */

static const char *descr_of(mf_dtype dtype) {
  for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
    if (descrs[i].dtype == dtype) return descrs[i].descr;
  return NULL;
}

/* The header as numpy writes it, padded to the alignment; returns its length. */
static int format_header(const mf_tensor *t, const char *descr, char *out, size_t cap) {
  char shape[128] = "";
  size_t n = 0;
  for (int i = 0; i < t->ndim; i++)
    n += (size_t)snprintf(shape + n, sizeof shape - n, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (t->ndim == 1) strcat(shape, ",");
  int len = snprintf(out, cap, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
  int total = (PREFIX + 2 + len + 1 + ALIGN - 1) / ALIGN * ALIGN - PREFIX - 2;
  memset(out + len, ' ', (size_t)(total - len - 1));
  out[total - 1] = '\n';
  return total;
}

int mf_tensor_save_npy(const mf_tensor *t, const char *path) {
  const char *descr = descr_of(t->dtype);
  if (!descr)
    return mf_fail("%s: %s has no .npy element type; convert to F32 first", path, mf_dtype_name(t->dtype));
  char header[256];
  int len = format_header(t, descr, header, sizeof header);
  unsigned char prefix[PREFIX + 2];
  memcpy(prefix, MAGIC, sizeof MAGIC);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix[8] = (unsigned char)(len & 0xff);
  prefix[9] = (unsigned char)(len >> 8);
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  if (!f) return -1;
  size_t nbytes = mf_tensor_nbytes(t);
  fwrite(prefix, 1, sizeof prefix, f);
  fwrite(header, 1, (size_t)len, f);
  fwrite(t->data, 1, nbytes, f);
  return mf_atomic_finish(f, tmp, path, 1);
}
