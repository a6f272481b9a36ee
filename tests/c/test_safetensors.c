/* safetensors: files written by Python's safetensors load exactly (single
 * and sharded), mf_st_save writes the same bytes as Python does, and hostile
 * files fail with a message naming the file and the problem. */
#include "format_testing.h"

#include <sys/stat.h>

static void check_all(const char *what, const mf_st_file *f, json_t *want) {
  const char *name;
  json_t *desc;
  FT_CHECK(mf_st_count(f) == (int)json_object_size(want), "%s: %d tensors", what, mf_st_count(f));
  json_object_foreach(want, name, desc) ft_check_tensor(name, mf_st_get(f, name), desc);
  for (int i = 1; i < mf_st_count(f); i++)
    FT_CHECK(strcmp(mf_st_name(f, i - 1), mf_st_name(f, i)) < 0, "%s: names in order", what);
}

/* Saves every tensor of f to path. */
static int save_all(const mf_st_file *f, const char *path, const char *metadata) {
  int n = mf_st_count(f);
  const char *names[16];
  const mf_tensor *tensors[16];
  for (int i = 0; i < n && i < 16; i++) {
    names[i] = mf_st_name(f, i);
    tensors[i] = mf_st_get(f, names[i]);
  }
  return mf_st_save(path, n, names, tensors, metadata);
}

static void test_golden(json_t *expected) {
  json_t *want = json_object_get(expected, "tiny.safetensors");
  mf_st_file *f = mf_st_open(ft_golden("tiny.safetensors"));
  FT_CHECK(f, "open tiny.safetensors: %s", mf_errmsg());
  if (!f) return;
  check_all("tiny", f, want);
  FT_CHECK(!strcmp(mf_st_metadata(f), "{\"format\":\"pt\"}"), "metadata %s", mf_st_metadata(f));
  FT_FAILS_WITH(!mf_st_get(f, "nope"), "no tensor named 'nope'");
  FT_FAILS_WITH(!mf_st_name(f, 99), "out of range");

  FT_CHECK(save_all(f, ft_path("tiny.safetensors"), "{\"format\": \"pt\"}") == 0, "save: %s", mf_errmsg());
  FT_CHECK(ft_same_file(ft_path("tiny.safetensors"), ft_golden("tiny.safetensors")),
           "saved bytes differ from Python's safetensors");

  /* Round trip through a folder, with several metadata keys. */
  mkdir(ft_path("model"), 0777);
  FT_CHECK(save_all(f, ft_path("model/model.safetensors"), "{\"z\": \"1\", \"a\": \"\\u00e9\"}") == 0,
           "save: %s", mf_errmsg());
  mf_st_file *back = mf_st_open(ft_path("model"));
  FT_CHECK(back, "open saved folder: %s", mf_errmsg());
  if (back) {
    check_all("round trip", back, want);
    FT_CHECK(!strcmp(mf_st_metadata(back), "{\"a\":\"\xc3\xa9\",\"z\":\"1\"}"), "metadata %s", mf_st_metadata(back));
  }
  mf_st_close(back);
  mf_st_close(f);
}

static void test_sharded(json_t *expected) {
  json_t *want = json_object_get(expected, "sharded");
  const char *names[] = {"sharded", "sharded/model.safetensors.index.json"};
  for (int i = 0; i < 2; i++) {
    const char *path = ft_golden(names[i]);
    mf_st_file *f = mf_st_open(path);
    FT_CHECK(f, "open %s: %s", path, mf_errmsg());
    if (f) check_all(path, f, want);
    if (f) FT_CHECK(!strcmp(mf_st_metadata(f), "{\"format\":\"pt\"}"), "sharded metadata");
    mf_st_close(f);
  }
  mf_st_file *one = mf_st_open(ft_golden("sharded/model-00002-of-00002.safetensors"));
  FT_CHECK(one && mf_st_count(one) == 2, "one shard alone");
  mf_st_close(one);
}

/* ---- hostile files ---- */

/* A safetensors file: header length, header text, then `buffer` zero bytes. */
static const char *file_with(const char *name, uint64_t header_len, const char *header, size_t buffer) {
  size_t n = strlen(header);
  unsigned char *buf = calloc(1, 8 + n + buffer);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(header_len >> (8 * i));
  memcpy(buf + 8, header, n);
  const char *path = ft_path(name);
  ft_write(path, buf, 8 + n + buffer);
  free(buf);
  return path;
}

static const char *hostile(const char *header, size_t buffer) {
  return file_with("hostile.safetensors", strlen(header), header, buffer);
}

static void test_hostile(void) {
  static const struct {
    const char *header;
    size_t buffer;
    const char *error;
  } cases[] = {
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "not valid JSON"},
    {"[1, 2]", 0, "not a JSON object"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside the data buffer of 4 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, "data_offsets [8, 4]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, "needs 24 bytes but data_offsets span 20"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "tensors 'a' and 'b' overlap"},
    {"{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': unknown dtype 'Q7'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': bad shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "bad shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "needs a dtype string, a shape array and two data_offsets"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", 8, "not non-negative integers"},
    {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of 'k' is not a string"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}", 8, "duplicate"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mf_st_file *f = mf_st_open(hostile(cases[i].header, cases[i].buffer));
    FT_FAILS_WITH(!f, cases[i].error);
    FT_CHECK(f || strstr(mf_errmsg(), "hostile.safetensors"), "message names the file: %s", mf_errmsg());
    mf_st_close(f);
  }
  ft_write(ft_path("short.safetensors"), "\x10\x00\x00", 3);
  FT_FAILS_WITH(!mf_st_open(ft_path("short.safetensors")), "truncated: 3 bytes");
  file_with("past.safetensors", 1000, "{}", 0);
  FT_FAILS_WITH(!mf_st_open(ft_path("past.safetensors")), "header length 1000 runs past the end");
  file_with("huge.safetensors", 1ull << 40, "{}", 0);
  FT_FAILS_WITH(!mf_st_open(ft_path("huge.safetensors")), "implausible");
  FT_FAILS_WITH(!mf_st_open(ft_path("absent.safetensors")), "absent.safetensors: No such file");
}

static void test_unsupported_dtype(void) {
  const char *path = hostile("{\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                             "\"f\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[8,12]},"
                             "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16);
  mf_st_file *f = mf_st_open(path);
  FT_CHECK(f && mf_st_count(f) == 3, "a file with an F64 tensor opens: %s", mf_errmsg());
  if (!f) return;
  FT_CHECK(mf_st_get(f, "x") != NULL, "supported tensor readable");
  FT_FAILS_WITH(!mf_st_get(f, "d"), "tensor 'd' has dtype F64, which moonforge does not read");
  FT_FAILS_WITH(!mf_st_get(f, "f"), "tensor 'f' has 5 dimensions");
  mf_st_close(f);
}

static void write_text(const char *name, const char *text) { ft_write(ft_path(name), text, strlen(text)); }

static void test_bad_index(void) {
  mkdir(ft_path("idx"), 0777);
  const char *t = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  file_with("idx/one.safetensors", strlen(t), t, 4);
  file_with("idx/two.safetensors", strlen(t), t, 4);
  write_text("idx/missing.index.json", "{\"weight_map\": {\"w\": \"one.safetensors\", \"v\": \"gone.safetensors\"}}");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx/missing.index.json")), "gone.safetensors: No such file");
  write_text("idx/absent.index.json", "{\"weight_map\": {\"w\": \"one.safetensors\", \"v\": \"one.safetensors\"}}");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx/absent.index.json")), "tensor 'v' is not in one.safetensors");
  write_text("idx/twice.index.json", "{\"weight_map\": {\"w\": \"one.safetensors\", \"v\": \"two.safetensors\"}}");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx/twice.index.json")), "tensor 'w' is in both");
  write_text("idx/escape.index.json", "{\"weight_map\": {\"w\": \"../one.safetensors\"}}");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx/escape.index.json")), "not a plain file name");
  write_text("idx/nomap.index.json", "{\"metadata\": {}}");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx/nomap.index.json")), "no \"weight_map\" object");
  write_text("idx/broken.index.json", "{\"weight_map\": ");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx/broken.index.json")), "not a valid index");
  FT_FAILS_WITH(!mf_st_open(ft_path("idx")), "has neither model.safetensors nor model.safetensors.index.json");
}

static void test_bad_save(void) {
  mf_tensor *t = mf_tensor_new(MF_F32, 1, (int64_t[]){2});
  const mf_tensor *ts[2] = {t, t};
  const char *dup[2] = {"a", "a"}, *reserved[1] = {"__metadata__"};
  FT_FAILS_WITH(mf_st_save(ft_path("s.safetensors"), 2, dup, ts, NULL) != 0, "'a' is empty, reserved or repeated");
  FT_FAILS_WITH(mf_st_save(ft_path("s.safetensors"), 1, reserved, ts, NULL) != 0, "reserved");
  FT_FAILS_WITH(mf_st_save(ft_path("s.safetensors"), 1, dup, ts, "{\"k\": 3}") != 0, "object of strings");
  FT_FAILS_WITH(mf_st_save(ft_path("no/such/dir/s.safetensors"), 1, dup, ts, NULL) != 0, "cannot write");
  FT_CHECK(!ft_read(ft_path("s.safetensors"), &(size_t){0}), "nothing left behind by failed saves");
  FT_CHECK(mf_st_save(ft_path("e.safetensors"), 0, NULL, NULL, NULL) == 0, "empty file: %s", mf_errmsg());
  mf_st_file *f = mf_st_open(ft_path("e.safetensors"));
  FT_CHECK(f && mf_st_count(f) == 0 && !strcmp(mf_st_metadata(f), "{}"), "empty file reads back");
  mf_st_close(f);
  mf_tensor_free(t);
}

int main(void) {
  json_t *expected = ft_expected();
  ft_make_dir("st");
  test_golden(expected);
  test_sharded(expected);
  test_hostile();
  test_unsupported_dtype();
  test_bad_index();
  test_bad_save();
  json_decref(expected);
  return ft_finish();
}
