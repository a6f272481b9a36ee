/*
 * Helpers for the tensor and file-format tests: checks that report and go
 * on, checks that a call failed with a telling message, golden files from
 * tests/reference/golden/formats (under MF_SOURCE_DIR, else the working
 * folder) with their expected.json, and scratch files in a fresh folder.
 * main returns ft_finish(), which also removes the scratch folder.
 */
#ifndef FORMAT_TESTING_H
#define FORMAT_TESTING_H
#define _GNU_SOURCE /* nftw, mkdtemp: include this header first */

#include "moonforge.h"

#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ft_failures;

#define FT_CHECK(cond, ...)                                \
  do {                                                     \
    if (!(cond)) {                                         \
      ft_failures++;                                       \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fputc('\n', stderr);                                 \
    }                                                      \
  } while (0)

/* The last call failed (failed != 0) and mf_errmsg() contains `want`. */
#define FT_FAILS_WITH(failed, want)                                                              \
  FT_CHECK((failed) && strstr(mf_errmsg(), want), "expected an error containing \"%s\", got %s" \
           " \"%s\"", want, (failed) ? "error" : "success", mf_errmsg())

static inline const char *ft_golden(const char *name) {
  static char path[4096];
  const char *root = getenv("MF_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/reference/golden/formats/%s", root ? root : ".", name);
  return path;
}

static inline json_t *ft_expected(void) {
  json_error_t err;
  json_t *j = json_load_file(ft_golden("expected.json"), 0, &err);
  if (!j) {
    fprintf(stderr, "cannot read expected.json: %s\n", err.text);
    exit(1);
  }
  return j;
}

/* The tensor's elements as raw bit patterns, one at a time. */
static inline uint64_t ft_bits(const mf_tensor *t, int64_t i) {
  size_t size = mf_dtype_size(t->dtype);
  uint64_t v = 0;
  memcpy(&v, (const char *)t->data + (size_t)i * size, size);
  return v;
}

/* t matches {"dtype", "shape", "bits"} of expected.json exactly. */
static inline void ft_check_tensor(const char *what, const mf_tensor *t, json_t *want) {
  if (!t) {
    FT_CHECK(0, "%s: %s", what, mf_errmsg());
    return;
  }
  json_t *shape = json_object_get(want, "shape"), *bits = json_object_get(want, "bits");
  FT_CHECK(!strcmp(mf_dtype_name(t->dtype), json_string_value(json_object_get(want, "dtype"))),
           "%s: dtype %s", what, mf_dtype_name(t->dtype));
  int same_shape = t->ndim == (int)json_array_size(shape);
  for (int d = 0; same_shape && d < t->ndim; d++)
    same_shape = t->shape[d] == json_integer_value(json_array_get(shape, (size_t)d));
  FT_CHECK(same_shape, "%s: shape differs", what);
  if (!same_shape) return;
  uint64_t mask = mf_dtype_size(t->dtype) == 8 ? ~0ull : (1ull << (8 * mf_dtype_size(t->dtype))) - 1;
  for (int64_t i = 0; i < mf_tensor_numel(t); i++) {
    uint64_t w = (uint64_t)json_integer_value(json_array_get(bits, (size_t)i)) & mask;
    FT_CHECK(ft_bits(t, i) == w, "%s: element %lld is 0x%llx, want 0x%llx", what, (long long)i,
             (unsigned long long)ft_bits(t, i), (unsigned long long)w);
  }
}

/* The whole file in a malloc'd buffer (NULL if unreadable). */
static inline unsigned char *ft_read(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  *n = 0;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
  *n = fread(buf, 1, (size_t)len, f);
  fclose(f);
  return buf;
}

static inline void ft_write(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, n, f) != n) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(1);
  }
  fclose(f);
}

/* Files a and b hold the same bytes. */
static inline int ft_same_file(const char *a, const char *b) {
  size_t na = 0, nb = 0;
  unsigned char *x = ft_read(a, &na), *y = ft_read(b, &nb);
  int same = x && y && na == nb && !memcmp(x, y, na);
  free(x);
  free(y);
  return same;
}

/* A fresh scratch folder; ft_path(name) is a path inside it. */
static char ft_dir[3072];

static inline void ft_make_dir(const char *tag) {
  const char *base = getenv("TMPDIR");
  snprintf(ft_dir, sizeof ft_dir, "%s/mf-test-%s-XXXXXX", base ? base : "/tmp", tag);
  if (!mkdtemp(ft_dir)) {
    fprintf(stderr, "cannot create %s\n", ft_dir);
    exit(1);
  }
}

static inline const char *ft_path(const char *name) {
  static char path[2][4096];
  static int turn;
  turn ^= 1;
  snprintf(path[turn], sizeof path[turn], "%s/%s", ft_dir, name);
  return path[turn];
}

static inline int ft_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

/* Removes the scratch folder; the exit status for main. */
static inline int ft_finish(void) {
  if (ft_dir[0]) nftw(ft_dir, ft_remove, 16, FTW_DEPTH | FTW_PHYS);
  if (ft_failures) fprintf(stderr, "%d checks failed\n", ft_failures);
  else printf("all checks passed\n");
  return ft_failures != 0;
}

#endif
