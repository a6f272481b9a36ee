/*
 * Bundles: a tiny model, tokenizer and adapter packed and unpacked byte for
 * byte, the same bytes from the same files, and hostile archives (crafted
 * here with libarchive) refused with a clear message while the folder that
 * would hold the target stays exactly as it was.
 */
#include "format_testing.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

static const char *source_file(const char *rel) {
  static char path[4096];
  const char *root = getenv("MF_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/reference/golden/%s", root ? root : ".", rel);
  return path;
}

/* The members of the round trip: archive name, source file. */
static const char *const MEMBERS[][2] = {
    {"model/config.json", "models/llama_gqa/config.json"},
    {"model/model.safetensors", "models/llama_gqa/model.safetensors"},
    {"tokenizer/tokenizer.json", "tokenizers/llama3.json"},
};
enum { NMEMBERS = sizeof MEMBERS / sizeof *MEMBERS };
static const char ADAPTER_CONFIG[] = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4}\n";
static const char CARD[] = "# tiny\n\nA test model.\n";

/* Packs the round-trip members into path, adding them in the order given
 * (forward or backward) to show that the order does not matter. */
static int pack(const char *path, int backward) {
  mf_bundle_writer *w = mf_bundle_writer_new();
  int rc = 0;
  for (int k = 0; k < NMEMBERS && rc == 0; k++) {
    int i = backward ? NMEMBERS - 1 - k : k;
    char src[4096];
    snprintf(src, sizeof src, "%s", source_file(MEMBERS[i][1]));
    rc = mf_bundle_add_file(w, MEMBERS[i][0], src);
  }
  if (rc == 0) rc = mf_bundle_add_file(w, "adapter/adapter_config.json", ft_path("adapter_config.json"));
  if (rc == 0) rc = mf_bundle_add_bytes(w, "README.md", CARD, strlen(CARD));
  if (rc == 0) rc = mf_bundle_write(w, path, "{\"contents\": {\"model\": \"model\"}}", 1700000000);
  mf_bundle_writer_free(w);
  return rc;
}

static void test_round_trip(void) {
  ft_write(ft_path("adapter_config.json"), ADAPTER_CONFIG, strlen(ADAPTER_CONFIG));
  FT_CHECK(pack(ft_path("a.mfb"), 0) == 0, "pack: %s", mf_errmsg());
  FT_CHECK(pack(ft_path("b.mfb"), 1) == 0, "pack: %s", mf_errmsg());
  FT_CHECK(ft_same_file(ft_path("a.mfb"), ft_path("b.mfb")), "the same files give different archives");

  char sha[65], want[65];
  FT_CHECK(mf_bundle_unpack(ft_path("a.mfb"), ft_path("out"), NULL, sha) == 0, "unpack: %s", mf_errmsg());
  mf_sha256_file(ft_path("a.mfb"), want);
  FT_CHECK(!strcmp(sha, want), "archive hash %s, want %s", sha, want);
  char out[4096];
  for (int i = 0; i < NMEMBERS; i++) {
    snprintf(out, sizeof out, "%s", ft_path("out"));
    strcat(out, "/");
    strcat(out, MEMBERS[i][0]);
    FT_CHECK(ft_same_file(out, source_file(MEMBERS[i][1])), "%s differs after the round trip", MEMBERS[i][0]);
  }
  FT_CHECK(ft_same_file(ft_path("out/adapter/adapter_config.json"), ft_path("adapter_config.json")),
           "adapter differs");
  size_t n = 0;
  char *card = (char *)ft_read(ft_path("out/README.md"), &n);
  FT_CHECK(card && n == strlen(CARD) && !memcmp(card, CARD, n), "card differs");
  free(card);

  json_error_t err;
  json_t *m = json_load_file(ft_path("out/MANIFEST.json"), 0, &err);
  FT_CHECK(m != NULL, "MANIFEST.json: %s", err.text);
  FT_CHECK(!strcmp(json_string_value(json_object_get(m, "format")), "moonforge-bundle"), "format");
  FT_CHECK(!strcmp(json_string_value(json_object_get(m, "created")), "2023-11-14T22:13:20Z"), "created");
  FT_CHECK(json_is_object(json_object_get(m, "contents")), "the info keys are kept");
  json_t *files = json_object_get(m, "files");
  FT_CHECK(json_array_size(files) == NMEMBERS + 2, "%zu files listed", json_array_size(files));
  FT_CHECK(!strcmp(json_string_value(json_object_get(json_array_get(files, 0), "path")), "README.md"),
           "files are listed in name order");
  json_decref(m);

  FT_FAILS_WITH(mf_bundle_unpack(ft_path("a.mfb"), ft_path("out"), NULL, NULL) != 0, "already exists");
}

static void test_writer_refuses_bad_input(void) {
  mf_bundle_writer *w = mf_bundle_writer_new();
  const char *bad[] = {"../x", "/etc/x", "a//b", "a/./b", "", "MANIFEST.json"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    FT_CHECK(mf_bundle_add_bytes(w, bad[i], "x", 1) != 0, "name '%s' accepted", bad[i]);
  FT_CHECK(mf_bundle_add_bytes(w, "a", "x", 1) == 0, "%s", mf_errmsg());
  FT_FAILS_WITH(mf_bundle_add_bytes(w, "a", "y", 1) != 0, "added twice");
  FT_FAILS_WITH(mf_bundle_add_file(w, "b", ft_path("absent")) != 0, "absent");
  FT_FAILS_WITH(mf_bundle_write(w, ft_path("bad.mfb"), "[1]", 0) != 0, "JSON object");
  FT_FAILS_WITH(mf_bundle_write(w, ft_path("bad.mfb"), "{\"files\": 1}", 0) != 0, "'files'");
  struct stat st;
  FT_CHECK(stat(ft_path("bad.mfb"), &st) != 0, "a failed write left a file");
  mf_bundle_writer_free(w);
}

/* ---- hostile archives ---- */

typedef struct entry {
  const char *name;
  mode_t type;          /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFIFO, AE_IFCHR; 0: only in the manifest */
  const char *data;     /* a regular file's bytes */
  int64_t zeros;        /* or this many zero bytes */
  const char *link;     /* a symbolic link's target */
  const char *hardlink; /* a hard link's target */
  int unlisted;         /* left out of the manifest */
  const char *listed;   /* the manifest describes these bytes instead of data */
} entry;

static void write_header(struct archive *a, const entry *e, int64_t size) {
  struct archive_entry *ae = archive_entry_new();
  archive_entry_set_pathname(ae, e->name);
  archive_entry_set_filetype(ae, e->type);
  archive_entry_set_perm(ae, 0644);
  archive_entry_set_size(ae, size);
  if (e->link) archive_entry_set_symlink(ae, e->link);
  if (e->hardlink) archive_entry_set_hardlink(ae, e->hardlink);
  if (archive_write_header(a, ae) != ARCHIVE_OK) fprintf(stderr, "craft: %s\n", archive_error_string(a));
  archive_entry_free(ae);
}

/* A manifest listing the regular files that are not unlisted. */
static char *manifest_of(const entry *entries, int n) {
  json_t *files = json_array();
  for (int i = 0; i < n; i++) {
    const entry *e = &entries[i];
    if ((e->type != AE_IFREG && e->type != 0) || e->unlisted) continue;
    const char *bytes = e->listed ? e->listed : e->data ? e->data : "";
    char sha[65];
    mf_sha256_bytes(bytes, strlen(bytes), sha);
    json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "path", e->name, "size", (json_int_t)strlen(bytes),
                                           "sha256", sha));
  }
  json_t *root = json_pack("{s:s, s:i, s:o}", "format", "moonforge-bundle", "format_version", 1, "files", files);
  char *text = json_dumps(root, JSON_SORT_KEYS);
  json_decref(root);
  return text;
}

/* Writes a zstd-compressed tar of the entries (MANIFEST.json first when
 * with_manifest), as a hostile packer could. */
static void craft(const char *path, const entry *entries, int n, int with_manifest) {
  struct archive *a = archive_write_new();
  archive_write_add_filter_zstd(a);
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path);
  if (with_manifest) {
    char *text = manifest_of(entries, n);
    entry m = {.name = "MANIFEST.json", .type = AE_IFREG};
    write_header(a, &m, (int64_t)strlen(text));
    archive_write_data(a, text, strlen(text));
    free(text);
  }
  static char zeros[1 << 20];
  for (int i = 0; i < n; i++) {
    const entry *e = &entries[i];
    if (e->type == 0) continue;
    int64_t size = e->data ? (int64_t)strlen(e->data) : e->zeros;
    write_header(a, e, size);
    if (e->data) archive_write_data(a, e->data, strlen(e->data));
    for (int64_t left = e->zeros; left > 0; left -= (int64_t)sizeof zeros)
      archive_write_data(a, zeros, left < (int64_t)sizeof zeros ? (size_t)left : sizeof zeros);
  }
  archive_write_close(a);
  archive_write_free(a);
}

/* The names in a folder, joined, to see that nothing appeared there. */
static void listing(const char *dir, char *out, size_t cap) {
  out[0] = 0;
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    strncat(out, e->d_name, cap - strlen(out) - 2);
    strcat(out, "|");
  }
  if (d) closedir(d);
}

/* Unpacking archive into t/out fails with `want` in the message, and t
 * (the target's parent) is unchanged. */
static void expect_refused(const char *what, const char *archive, const mf_bundle_limits *limits, const char *want) {
  char path[4096], parent[4096], target[4096], before[8192], after[8192];
  snprintf(path, sizeof path, "%s", archive); /* ft_path's buffers are reused below */
  snprintf(parent, sizeof parent, "%s", ft_path("t"));
  snprintf(target, sizeof target, "%s", ft_path("t/out"));
  mkdir(parent, 0755);
  listing(parent, before, sizeof before);
  int rc = mf_bundle_unpack(path, target, limits, NULL);
  FT_CHECK(rc != 0 && strstr(mf_errmsg(), want), "%s: expected an error containing \"%s\", got %s \"%s\"", what, want,
           rc ? "error" : "success", mf_errmsg());
  listing(parent, after, sizeof after);
  FT_CHECK(!strcmp(before, after), "%s: the parent folder changed: [%s] became [%s]", what, before, after);
}

static void refuse(const char *what, const entry *entries, int n, int with_manifest, const char *want) {
  craft(ft_path("evil.mfb"), entries, n, with_manifest);
  expect_refused(what, ft_path("evil.mfb"), NULL, want);
}

static void test_hostile_names_and_types(void) {
  entry ok = {.name = "model/config.json", .type = AE_IFREG, .data = "{}"};
  refuse("dotdot", (entry[]){ok, {.name = "../evil", .type = AE_IFREG, .data = "x"}}, 2, 1, "'..'");
  refuse("nested dotdot", (entry[]){{.name = "model/../../evil", .type = AE_IFREG, .data = "x"}}, 1, 1, "'..'");
  refuse("absolute", (entry[]){{.name = "/tmp/evil", .type = AE_IFREG, .data = "x"}}, 1, 1, "absolute");
  refuse("symlink", (entry[]){{.name = "model/link", .type = AE_IFLNK, .link = "../../../etc"}}, 1, 1, "is a link");
  refuse("symlink then file through it",
         (entry[]){{.name = "d", .type = AE_IFLNK, .link = "/tmp"}, {.name = "d/evil", .type = AE_IFREG, .data = "x"}},
         2, 1, "is a link");
  refuse("hardlink", (entry[]){ok, {.name = "h", .type = AE_IFREG, .hardlink = "/etc/passwd"}}, 2, 1, "is a link");
  refuse("fifo", (entry[]){{.name = "fifo", .type = AE_IFIFO}}, 1, 1, "special file");
  refuse("device", (entry[]){{.name = "dev", .type = AE_IFCHR}}, 1, 1, "special file");
  refuse("duplicate", (entry[]){ok, ok}, 2, 1, "appears twice");
}

static void test_manifest_mismatches(void) {
  entry ok = {.name = "model/config.json", .type = AE_IFREG, .data = "{\"a\": 1}"};
  refuse("no manifest", (entry[]){ok}, 1, 0, "no MANIFEST.json");
  refuse("checksum", (entry[]){{.name = "w", .type = AE_IFREG, .data = "good", .listed = "evil"}}, 1, 1, "SHA-256");
  refuse("size", (entry[]){{.name = "w", .type = AE_IFREG, .data = "good", .listed = "longer"}}, 1, 1, "bytes");
  refuse("extra file", (entry[]){ok, {.name = "extra", .type = AE_IFREG, .data = "x", .unlisted = 1}}, 2, 1,
         "not in MANIFEST.json");
  refuse("missing file", (entry[]){ok, {.name = "gone", .type = 0, .data = "x"}}, 2, 1, "missing from the archive");
  ft_write(ft_path("junk.mfb"), "not an archive at all", 21);
  expect_refused("not an archive", ft_path("junk.mfb"), NULL, "not a bundle");
}

/* The round-trip bundle cut short, and with one byte flipped. */
static void test_damaged(void) {
  size_t n = 0;
  unsigned char *bytes = ft_read(ft_path("a.mfb"), &n);
  ft_write(ft_path("cut.mfb"), bytes, n / 2);
  expect_refused("truncated", ft_path("cut.mfb"), NULL, "truncated");
  bytes[n / 2] ^= 0x40;
  ft_write(ft_path("flip.mfb"), bytes, n);
  expect_refused("corrupted", ft_path("flip.mfb"), NULL, "flip.mfb: ");
  free(bytes);
}

static void test_limits(void) {
  double t0 = (double)clock() / CLOCKS_PER_SEC;
  entry bomb[] = {{.name = "zeros", .type = AE_IFREG, .zeros = 2ll << 30, .unlisted = 1}};
  craft(ft_path("bomb.mfb"), bomb, 1, 1);
  struct stat st;
  stat(ft_path("bomb.mfb"), &st);
  FT_CHECK(st.st_size < (1 << 20), "the bomb is %lld bytes", (long long)st.st_size);
  expect_refused("2 GiB of zeros", ft_path("bomb.mfb"), NULL, "decompression bomb");
  mf_bundle_limits small = {.max_total_bytes = 1 << 20, .max_file_bytes = 4ll << 30};
  expect_refused("total cap", ft_path("bomb.mfb"), &small, "more than the limit of 1048576 bytes");
  small = (mf_bundle_limits){.max_file_bytes = 1 << 20};
  expect_refused("file cap", ft_path("bomb.mfb"), &small, "per file");
  small = (mf_bundle_limits){.max_entries = 3};
  expect_refused("entry cap", ft_path("a.mfb"), &small, "more than 3 entries");
  printf("bomb crafted and refused in %.1f s of CPU\n", (double)clock() / CLOCKS_PER_SEC - t0);
}

int main(void) {
  ft_make_dir("bundle");
  test_round_trip();
  test_writer_refuses_bad_input();
  test_hostile_names_and_types();
  test_manifest_mismatches();
  test_damaged();
  test_limits();
  return ft_finish();
}
