/* GGUF: a file written by the reference gguf package reads back with every
 * metadata type and every block type decoded exactly as it decodes them;
 * moonforge's writer round-trips every type it writes (Q8_0 byte-identical
 * to the package's quantizer); hostile files fail with a message naming the
 * problem; the quantized matmul matches f32 within its quantization error
 * and gives the same bits on any thread count. */
#include "format_testing.h"
#include "quant.h"
#include "cpu/kernels.h"

#include <math.h>

static const char *golden(const char *name) {
  static char path[4096];
  const char *root = getenv("MF_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/reference/golden/gguf/%s", root ? root : ".", name);
  return path;
}

static int64_t find(const mf_gguf *g, const char *key) {
  int64_t i = mf_gguf_find(g, key);
  FT_CHECK(i >= 0, "key %s missing", key);
  return i;
}

static void check_int(const mf_gguf *g, const char *key, int type, int64_t want) {
  int64_t i = find(g, key), v = 0;
  FT_CHECK(mf_gguf_type(g, i) == type, "%s: type %d, want %d", key, mf_gguf_type(g, i), type);
  FT_CHECK(mf_gguf_int(g, i, &v) == 0 && v == want, "%s: %lld, want %lld", key, (long long)v, (long long)want);
}

static void check_float(const mf_gguf *g, const char *key, double want) {
  double v = 0;
  FT_CHECK(mf_gguf_float(g, find(g, key), &v) == 0 && v == want, "%s: %.17g, want %.17g", key, v, want);
}

static void check_arr_str(const mf_gguf *g, int64_t i, int64_t j, const char *want) {
  size_t len = 0;
  const char *s = mf_gguf_arr_str(g, i, j, &len);
  FT_CHECK(s && len == strlen(want) && !memcmp(s, want, len), "array string %lld", (long long)j);
}

/* Metadata as the gguf package wrote it (tests/reference/make_gguf_golden.py). */
static void check_metadata(const mf_gguf *g) {
  size_t len;
  check_int(g, "test.u8", 0, 200);
  check_int(g, "test.i8", 1, -100);
  check_int(g, "test.u16", 2, 60000);
  check_int(g, "test.i16", 3, -30000);
  check_int(g, "test.u32", 4, 4000000000);
  check_int(g, "test.i32", 5, -2000000000);
  check_int(g, "test.bool", 7, 1);
  check_int(g, "test.u64", 10, (1ll << 40) + 3);
  check_int(g, "test.i64", 11, -(1ll << 40) - 3);
  check_float(g, "test.f32", 0.15625);
  check_float(g, "test.f64", 2.718281828459045);
  check_float(g, "test.i8", -100);
  const char *s = mf_gguf_str(g, find(g, "test.string"), &len);
  FT_CHECK(s && len == strlen("héllo wörld") && !memcmp(s, "héllo wörld", len), "string");
  int64_t ai = find(g, "test.arr_i32"), af = find(g, "test.arr_f32"), as = find(g, "test.arr_str"), v;
  double d;
  FT_CHECK(mf_gguf_arr_type(g, ai) == 5 && mf_gguf_arr_len(g, ai) == 4, "i32 array");
  FT_CHECK(mf_gguf_arr_int(g, ai, 1, &v) == 0 && v == -2, "i32 array element");
  FT_CHECK(mf_gguf_arr_float(g, af, 1, &d) == 0 && d == -1.25, "f32 array element");
  FT_CHECK(mf_gguf_arr_type(g, as) == 8 && mf_gguf_arr_len(g, as) == 3, "string array");
  check_arr_str(g, as, 0, "alpha");
  check_arr_str(g, as, 1, "");
  check_arr_str(g, as, 2, "γάμμα");
  FT_FAILS_WITH(mf_gguf_arr_int(g, ai, 4, &v), "index 4 out of range");
  FT_FAILS_WITH(!mf_gguf_arr_str(g, ai, 0, &len), "array of i32");
  FT_FAILS_WITH(mf_gguf_int(g, find(g, "test.string"), &v), "not a number");
  FT_FAILS_WITH(!mf_gguf_str(g, find(g, "test.u8"), &len), "not a string");
  FT_CHECK(mf_gguf_find(g, "no.such.key") == -1, "absent key");
}

static int same_floats(const mf_tensor *a, const mf_tensor *b) {
  return a && b && mf_tensor_numel(a) == mf_tensor_numel(b) && !memcmp(a->data, b->data, mf_tensor_nbytes(a));
}

/* NAME decodes to NAME.expected bit for bit; NAME.source, when present,
 * encodes to NAME's bytes (the types moonforge writes). */
static void check_codec(const mf_gguf *g, const char *name) {
  char key[64];
  snprintf(key, sizeof key, "%s.expected", name);
  int64_t t = mf_gguf_tensor_find(g, name);
  mf_tensor *got = mf_gguf_tensor_f32(g, t), *want = mf_gguf_tensor_f32(g, mf_gguf_tensor_find(g, key));
  FT_CHECK(same_floats(got, want), "%s decodes differently from the gguf package (%s)", name, mf_errmsg());
  snprintf(key, sizeof key, "%s.source", name);
  int64_t s = mf_gguf_tensor_find(g, key);
  if (s >= 0) {
    size_t nbytes;
    const unsigned char *blocks = mf_gguf_tensor_data(g, t, &nbytes);
    mf_tensor *src = mf_gguf_tensor_f32(g, s);
    unsigned char *mine = malloc(nbytes);
    int rc = mf_ggml_encode(mf_gguf_tensor_type(g, t), src->data, mine, mf_tensor_numel(src));
    FT_CHECK(rc == 0 && !memcmp(mine, blocks, nbytes), "%s encodes differently from the gguf package", name);
    free(mine);
    mf_tensor_free(src);
  }
  mf_tensor_free(got);
  mf_tensor_free(want);
}

static void test_golden(void) {
  mf_gguf *g = mf_gguf_open(golden("codecs.gguf"));
  FT_CHECK(g, "open codecs.gguf: %s", mf_errmsg());
  if (!g) return;
  check_metadata(g);
  const char *names[] = {"q8_0", "q4_0", "q4_1", "q4_k", "q6_k", "f16", "bf16"};
  for (int i = 0; i < 7; i++) check_codec(g, names[i]);
  int64_t dims[4], t = mf_gguf_tensor_find(g, "q4_k");
  FT_CHECK(mf_gguf_tensor_dims(g, t, dims) == 2 && dims[0] == 512 && dims[1] == 1, "q4_k dims");
  mf_gguf_close(g);
}

/* ---- writing ---- */

static void test_round_trip(void) {
  mf_gguf *src = mf_gguf_open(golden("codecs.gguf"));
  mf_gguf_writer *w = mf_gguf_writer_new();
  if (!src || !w) return;
  for (int64_t i = 0; i < mf_gguf_kv_count(src); i++)
    FT_CHECK(mf_gguf_copy_kv(w, src, i) == 0, "copy %s: %s", mf_gguf_key(src, i), mf_errmsg());
  FT_FAILS_WITH(mf_gguf_set_int(w, "test.u8", 0, 1), "set twice");
  float x[3 * 64];
  mf_rng rng;
  mf_rng_init(&rng, 7, 1);
  for (int i = 0; i < 3 * 64; i++) x[i] = (float)mf_rng_normal(&rng);
  int types[] = {MF_GGML_F32, MF_GGML_F16, MF_GGML_BF16, MF_GGML_Q8_0};
  unsigned char data[4][3 * 64 * 4];
  int64_t dims[2] = {64, 3};
  for (int k = 0; k < 4; k++) {
    FT_CHECK(mf_ggml_encode(types[k], x, data[k], 3 * 64) == 0, "encode %d", types[k]);
    FT_CHECK(mf_gguf_add_tensor(w, mf_ggml_type_name(types[k]), types[k], 2, dims, data[k]) == 0, "add: %s", mf_errmsg());
  }
  FT_CHECK(mf_gguf_write(w, ft_path("rt.gguf")) == 0, "write: %s", mf_errmsg());
  mf_gguf_writer_free(w);

  mf_gguf *g = mf_gguf_open(ft_path("rt.gguf"));
  FT_CHECK(g, "reopen: %s", mf_errmsg());
  if (g) {
    check_metadata(g);
    for (int k = 0; k < 4; k++) {
      int64_t t = mf_gguf_tensor_find(g, mf_ggml_type_name(types[k]));
      float want[3 * 64];
      mf_ggml_decode(types[k], data[k], want, 3 * 64);
      mf_tensor *got = mf_gguf_tensor_f32(g, t);
      FT_CHECK(got && got->ndim == 2 && got->shape[0] == 3 && got->shape[1] == 64 &&
               !memcmp(got->data, want, sizeof want), "%s round trip", mf_ggml_type_name(types[k]));
      if (types[k] == MF_GGML_F32) FT_CHECK(got && !memcmp(got->data, x, sizeof x), "f32 exact");
      for (int i = 0; i < 3 * 64; i++)
        if (fabsf(want[i] - x[i]) > 0.02f * (fabsf(x[i]) + 1)) {
          FT_CHECK(0, "%s value %d: %g vs %g", mf_ggml_type_name(types[k]), i, want[i], x[i]);
          break;
        }
      mf_tensor_free(got);
    }
    mf_gguf_close(g);
  }
  mf_gguf_close(src);
}

/* ---- hostile files ---- */

/* A file with no metadata and one F32 tensor "t" of 8 values: header (24
 * bytes), name (8 + 1), n_dims (4), dims (8), type at 45, offset at 49,
 * padding to 64, then 32 bytes of data. */
static size_t small_file(unsigned char **out) {
  mf_gguf_writer *w = mf_gguf_writer_new();
  float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  int64_t dims[1] = {8};
  mf_gguf_add_tensor(w, "t", MF_GGML_F32, 1, dims, v);
  mf_gguf_write(w, ft_path("small.gguf"));
  mf_gguf_writer_free(w);
  size_t n;
  *out = ft_read(ft_path("small.gguf"), &n);
  return n;
}

/* Opening `n` bytes of `data` fails with `want`. */
static void expect_open_error(const unsigned char *data, size_t n, const char *want) {
  ft_write(ft_path("bad.gguf"), data, n);
  mf_gguf *g = mf_gguf_open(ft_path("bad.gguf"));
  FT_FAILS_WITH(!g, want);
  FT_CHECK(!g || strstr(mf_errmsg(), "bad.gguf"), "message names the file: %s", mf_errmsg());
  mf_gguf_close(g);
}

static void patch_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

static void test_hostile(void) {
  unsigned char *f;
  size_t n = small_file(&f);
  FT_CHECK(n == 96, "small file is %zu bytes", n);
  mf_gguf *g = mf_gguf_open(ft_path("small.gguf"));
  FT_CHECK(g && mf_gguf_tensor_count(g) == 1, "small file opens: %s", mf_errmsg());
  mf_gguf_close(g);

  expect_open_error(f, 10, "less than the 24-byte GGUF header");
  expect_open_error(f, 50, "truncated: tensor 't' needs 8 bytes at offset 49");
  expect_open_error(f, 80, "run past the end of the file");
  unsigned char bad[96];
  memcpy(bad, f, 96);
  bad[0] = 'X';
  expect_open_error(bad, 96, "not a GGUF file");
  memcpy(bad, f, 96);
  bad[4] = 1;
  expect_open_error(bad, 96, "GGUF version 1 is not supported");
  memcpy(bad, f, 96);
  patch_u64(bad + 16, 1ull << 60);
  expect_open_error(bad, 96, "metadata entries cannot fit");
  memcpy(bad, f, 96);
  patch_u64(bad + 8, 1ull << 60);
  expect_open_error(bad, 96, "tensors cannot fit");
  memcpy(bad, f, 96);
  patch_u64(bad + 24, 1ull << 62);
  expect_open_error(bad, 96, "truncated: tensor info 0 needs 4611686018427387904 bytes");
  memcpy(bad, f, 96);
  patch_u64(bad + 37, 1ull << 40);
  expect_open_error(bad, 96, "cannot fit in a 96-byte file");
  memcpy(bad, f, 96);
  patch_u64(bad + 49, 64);
  expect_open_error(bad, 96, "tensor 't': 32 bytes at data offset 64 run past the end");

  memcpy(bad, f, 96);
  bad[45] = 99;
  ft_write(ft_path("odd.gguf"), bad, 96);
  g = mf_gguf_open(ft_path("odd.gguf"));
  FT_CHECK(g, "a tensor of an unknown type does not stop the file opening: %s", mf_errmsg());
  if (g) FT_FAILS_WITH(!mf_gguf_tensor_f32(g, 0), "tensor 't' has ggml type 99");
  mf_gguf_close(g);
  free(f);
}

/* ---- quantized matmul ---- */

static void test_qgemm(void) {
  enum { ROWS = 3, OUT = 37, IN = 96 };
  float x[ROWS * IN], w[OUT * IN], wq[OUT * IN], ref[ROWS * OUT], y1[ROWS * OUT], y3[ROWS * OUT];
  unsigned char blocks[OUT * IN / 32 * 34], packed[(OUT + 7) / 8 * 8 * IN / 32 * 34];
  mfk_block_q8_act act[ROWS * IN / 32];
  mf_rng rng;
  mf_rng_init(&rng, 3, 2);
  for (int i = 0; i < ROWS * IN; i++) x[i] = (float)mf_rng_normal(&rng);
  for (int i = 0; i < OUT * IN; i++) w[i] = (float)mf_rng_normal(&rng) * 0.1f;
  mfk_pool *one = mfk_pool_new(1), *three = mfk_pool_new(3);
  mfk_qtype types[] = {MFK_Q8_0, MFK_Q4_0, MFK_Q4_1};
  for (int k = 0; k < 3; k++) {
    /* Q4 blocks from random bytes with sane scales; Q8_0 by the encoder. */
    size_t bb = mfk_qblock_bytes(types[k]);
    if (types[k] == MFK_Q8_0) mf_ggml_encode(MF_GGML_Q8_0, w, blocks, OUT * IN);
    for (int b = 0; types[k] != MFK_Q8_0 && b < OUT * IN / 32; b++) {
      unsigned char *p = blocks + b * bb;
      for (size_t j = 0; j < bb; j++) p[j] = (unsigned char)mf_rng_u64(&rng);
      uint16_t d = mf_f32_to_f16(0.01f + 0.01f * (float)mf_rng_uniform(&rng)), m = mf_f32_to_f16(-0.05f);
      memcpy(p, &d, 2);
      if (types[k] == MFK_Q4_1) memcpy(p + 2, &m, 2);
    }
    mf_ggml_decode(types[k], blocks, wq, OUT * IN);
    mfk_gemm(NULL, 0, 1, ROWS, OUT, IN, 1.0f, x, IN, wq, IN, 0.0f, ref, OUT);
    for (int i = 0; i < ROWS * OUT; i++) y1[i] = y3[i] = 1.0f;
    mfk_qpack(types[k], packed, blocks, OUT, IN);
    mfk_qgemm(one, types[k], y1, 1, x, packed, ROWS, OUT, IN, act);
    mfk_qgemm(three, types[k], y3, 1, x, packed, ROWS, OUT, IN, act);
    FT_CHECK(!memcmp(y1, y3, sizeof y1), "qgemm type %d: thread count changes the bits", types[k]);
    double err = 0, norm = 0;
    for (int i = 0; i < ROWS * OUT; i++) {
      err = fmax(err, fabs(y1[i] - 1.0 - ref[i]));
      norm = fmax(norm, fabs(ref[i]));
    }
    /* Activations rounded to 8 bits: about 1% of the largest output. */
    FT_CHECK(err < 0.02 * norm, "qgemm type %d: max error %g for outputs up to %g", types[k], err, norm);
  }
  mfk_pool_free(one);
  mfk_pool_free(three);
}

int main(void) {
  ft_make_dir("gguf");
  test_golden();
  test_round_trip();
  test_hostile();
  test_qgemm();
  return ft_finish();
}
