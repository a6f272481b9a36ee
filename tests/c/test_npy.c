/* .npy files: numpy-written goldens load exactly, saved files are
 * byte-identical to numpy's, and malformed files fail with a clear message. */
#include "format_testing.h"

static const char *const golden_files[] = {"f4.npy", "f2.npy", "i8.npy", "i4.npy", "u1.npy", "scalar.npy", "v2.npy"};

static void test_golden(json_t *expected) {
  json_t *npy = json_object_get(expected, "npy");
  for (size_t i = 0; i < sizeof golden_files / sizeof golden_files[0]; i++) {
    const char *name = golden_files[i];
    mf_tensor *t = mf_tensor_load_npy(ft_golden(name));
    ft_check_tensor(name, t, json_object_get(npy, name));
    /* numpy writes format 1.0 unless asked; ours must match those bytes. */
    if (t && mf_tensor_save_npy(t, ft_path(name)) != 0) FT_CHECK(0, "save %s: %s", name, mf_errmsg());
    if (t && strcmp(name, "v2.npy") != 0)
      FT_CHECK(ft_same_file(ft_path(name), ft_golden(name)), "%s: saved bytes differ from numpy's", name);
    mf_tensor *back = mf_tensor_load_npy(ft_path(name));
    ft_check_tensor(name, back, json_object_get(npy, name));
    mf_tensor_free(back);
    mf_tensor_free(t);
  }
}

static void test_bf16_refused(void) {
  mf_tensor *t = mf_tensor_new(MF_BF16, 1, (int64_t[]){2});
  FT_FAILS_WITH(mf_tensor_save_npy(t, ft_path("b.npy")) != 0, "BF16 has no .npy element type");
  FT_CHECK(!ft_read(ft_path("b.npy"), &(size_t){0}), "nothing written for a refused save");
  mf_tensor_free(t);
}

/* A .npy file with the given header text (padded to 64 bytes) and data. */
static const char *npy_with_header(const char *header, size_t data_bytes) {
  unsigned char buf[512] = "\x93NUMPY\x01\x00";
  size_t len = strlen(header), total = (10 + len + 1 + 63) / 64 * 64;
  buf[8] = (unsigned char)(total - 10);
  memcpy(buf + 10, header, len);
  memset(buf + 10 + len, ' ', total - 10 - len - 1);
  buf[total - 1] = '\n';
  memset(buf + total, 0, data_bytes);
  const char *path = ft_path("hostile.npy");
  ft_write(path, buf, total + data_bytes);
  return path;
}

static void test_malformed(void) {
  static const struct {
    const char *header;
    size_t data;
    const char *error;
  } cases[] = {
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, "truncated: shape needs 24 data bytes"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12, "4 bytes after the data"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", 8, "truncated"},
    {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8, "Fortran-order"},
    {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, "big-endian"},
    {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, "'<f8' is not supported"},
    {"{'descr': '<f4', 'shape': (2,), }", 8, "lacks 'fortran_order'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", 8, "unexpected or repeated key 'extra'"},
    {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8, "repeated key 'descr'"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", 8, "bad shape"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1), }", 4, "more than 4 dimensions"},
    {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", 8, "expected ',' or '}'"},
    {"['descr', '<f4']", 8, "expected '{'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *path = npy_with_header(cases[i].header, cases[i].data);
    mf_tensor *t = mf_tensor_load_npy(path);
    FT_FAILS_WITH(!t, cases[i].error);
    FT_CHECK(t || strstr(mf_errmsg(), "hostile.npy"), "message names the file");
    mf_tensor_free(t);
  }
  ft_write(ft_path("short.npy"), "\x93NUMPY\x01\x00\x76", 9);
  FT_FAILS_WITH(!mf_tensor_load_npy(ft_path("short.npy")), "truncated .npy header");
  ft_write(ft_path("notnpy.npy"), "PK\x03\x04 not numpy", 15);
  FT_FAILS_WITH(!mf_tensor_load_npy(ft_path("notnpy.npy")), "not a .npy file");
  ft_write(ft_path("v3.npy"), "\x93NUMPY\x03\x00\x00\x00\x00\x00", 12);
  FT_FAILS_WITH(!mf_tensor_load_npy(ft_path("v3.npy")), "format 3.0 is not supported");
  FT_FAILS_WITH(!mf_tensor_load_npy(ft_path("missing.npy")), "missing.npy: No such file");
}

int main(void) {
  json_t *expected = ft_expected();
  ft_make_dir("npy");
  test_golden(expected);
  test_bf16_refused();
  test_malformed();
  json_decref(expected);
  return ft_finish();
}
