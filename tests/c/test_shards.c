/* Token shards and sequence packing: round trips in both token types, the
 * on-disk bytes pinned by hash, damaged files refused with a clear message,
 * deterministic batches, and packed rows checked element by element. */
#include "format_testing.h"

/* Three documents: {1, 2, 3}, {}, {40000, 5}. */
static const int32_t doc_ids[] = {1, 2, 3, 40000, 5};
static const int64_t doc_len[] = {3, 0, 2};

static int write_docs(const char *path, int token_bytes) {
  mf_shard_writer *w = mf_shard_writer_new(path, token_bytes);
  if (!w) return -1;
  int ok = 1;
  const int32_t *p = doc_ids;
  for (int d = 0; d < 3 && ok; p += doc_len[d++]) ok = mf_shard_writer_add(w, p, doc_len[d]) == 0;
  return mf_shard_writer_close(w, ok);
}

static void test_round_trip(int token_bytes, const char *pinned_sha256) {
  const char *path = ft_path(token_bytes == 2 ? "u16.shard" : "i32.shard");
  FT_CHECK(write_docs(path, token_bytes) == 0, "write: %s", mf_errmsg());
  char hex[65];
  FT_CHECK(mf_sha256_file(path, hex) == 0 && !strcmp(hex, pinned_sha256), "%d-byte shard bytes changed: %s",
           token_bytes, hex);
  mf_shard *s = mf_shard_open(path, 1);
  FT_CHECK(s, "open: %s", mf_errmsg());
  if (!s) return;
  FT_CHECK(mf_shard_token_bytes(s) == token_bytes, "token bytes %d", mf_shard_token_bytes(s));
  FT_CHECK(mf_shard_ntokens(s) == 5 && mf_shard_ndocs(s) == 3, "counts %lld %lld",
           (long long)mf_shard_ntokens(s), (long long)mf_shard_ndocs(s));
  static const int64_t starts[] = {0, 3, 3, 5};
  for (int d = 0; d <= 3; d++) FT_CHECK(mf_shard_doc_start(s, d) == starts[d], "document %d start", d);
  FT_FAILS_WITH(mf_shard_doc_start(s, 4) == -1, "document 4 is outside 0..3");
  int32_t out[5];
  FT_CHECK(mf_shard_read(s, 0, 5, out) == 0 && !memcmp(out, doc_ids, sizeof out), "tokens differ");
  FT_CHECK(mf_shard_read(s, 3, 2, out) == 0 && out[0] == 40000 && out[1] == 5, "tail differs");
  FT_FAILS_WITH(mf_shard_read(s, 4, 2, out) != 0, "tokens 4..6 are outside the shard's 5");
  mf_shard_free(s);
}

static void test_bad_writes(void) {
  const char *path = ft_path("bad.shard");
  mf_shard_writer *w = mf_shard_writer_new(path, 2);
  FT_FAILS_WITH(mf_shard_writer_add(w, (int32_t[]){7, 65536}, 2) != 0,
                "document 1, token 2: id 65536 does not fit a uint16 shard");
  mf_shard_writer_close(w, 0);
  w = mf_shard_writer_new(path, 4);
  FT_FAILS_WITH(mf_shard_writer_add(w, (int32_t[]){-1}, 1) != 0, "id -1 does not fit a int32 shard");
  FT_FAILS_WITH(mf_shard_writer_close(w, 1) != 0, "no tokens to write");
  FT_CHECK(access(path, F_OK) != 0, "a failed write left a file behind");
  FT_FAILS_WITH(mf_shard_writer_new(path, 3) == NULL, "2 (uint16) or 4 (int32) bytes, not 3");
}

/* A copy of the good int32 shard with byte `at` set to `value` and `size` bytes kept. */
static const char *damaged(size_t at, unsigned char value, size_t keep) {
  size_t n = 0;
  unsigned char *bytes = ft_read(ft_path("i32.shard"), &n);
  if (at < n) bytes[at] = value;
  const char *path = ft_path("damaged.shard");
  ft_write(path, bytes, keep < n ? keep : n);
  free(bytes);
  return path;
}

static void test_damaged(void) {
  size_t n = 0;
  free(ft_read(ft_path("i32.shard"), &n));
  mf_shard *s;
  FT_FAILS_WITH(mf_shard_open(damaged(n, 0, 40), 1) == NULL, "truncated: 40 bytes, a shard header takes 64");
  FT_FAILS_WITH(mf_shard_open(damaged(n, 0, n - 1), 1) == NULL, "truncated: the header promises 120 bytes");
  FT_FAILS_WITH(mf_shard_open(damaged(0, 'X', n), 1) == NULL, "not a token shard (bad magic)");
  FT_FAILS_WITH(mf_shard_open(damaged(8, 9, n), 1) == NULL, "shard format version 9");
  FT_FAILS_WITH(mf_shard_open(damaged(12, 3, n), 1) == NULL, "corrupted header: 3 bytes per token");
  FT_FAILS_WITH(mf_shard_open(damaged(64, 99, n), 1) == NULL, "checksum mismatch");
  s = mf_shard_open(damaged(64, 99, n), 0);
  FT_CHECK(s != NULL, "an unverified open should skip the checksum: %s", mf_errmsg());
  mf_shard_free(s);
  /* The second document's offset (3) made larger than the third's (3). */
  FT_FAILS_WITH(mf_shard_open(damaged(64 + 24 + 8, 4, n), 0) == NULL, "document 2 ends before it starts");
  FT_FAILS_WITH(mf_shard_open(ft_path("absent.shard"), 1) == NULL, "cannot open");
}

static void test_sample_batch(void) {
  const char *path = ft_path("long.shard");
  mf_shard_writer *w = mf_shard_writer_new(path, 4);
  int32_t ids[1000];
  for (int i = 0; i < 1000; i++) ids[i] = i;
  mf_shard_writer_add(w, ids, 1000);
  FT_CHECK(mf_shard_writer_close(w, 1) == 0, "write: %s", mf_errmsg());
  mf_shard *s = mf_shard_open(path, 1);
  FT_CHECK(s, "open: %s", mf_errmsg());
  if (!s) return;
  int32_t a[4 * 16], at[4 * 16], b[4 * 16], bt[4 * 16], c[4 * 16], ct[4 * 16];
  FT_CHECK(mf_shard_sample_batch(s, 4, 16, 7, 5, a, at) == 0, "sample: %s", mf_errmsg());
  mf_shard_sample_batch(s, 4, 16, 7, 3, c, ct);
  mf_shard_sample_batch(s, 4, 16, 7, 5, b, bt);
  FT_CHECK(!memcmp(a, b, sizeof a) && !memcmp(at, bt, sizeof at), "the same step gave another batch");
  FT_CHECK(memcmp(a, c, sizeof a) != 0, "two steps gave the same batch");
  for (int r = 0; r < 4; r++)
    for (int t = 0; t < 16; t++) {
      int32_t tok = a[r * 16 + t];
      FT_CHECK(tok == a[r * 16] + t && at[r * 16 + t] == tok + 1, "row %d is not a window with its targets", r);
    }
  FT_FAILS_WITH(mf_shard_sample_batch(s, 1, 1000, 7, 0, a, at) != 0, "1000 tokens cannot fill a window of 1000");
  mf_shard_free(s);
}

static void test_pack(void) {
  /* Examples {10 11 12} (prompt 10 11 masked), {20 21}, {30 31 32 33}, {40 41}. */
  const int32_t ids[] = {10, 11, 12, 20, 21, 30, 31, 32, 33, 40, 41};
  const int32_t labels[] = {-100, -100, 12, 20, 21, 30, 31, 32, 33, 40, 41};
  const int64_t offsets[] = {0, 3, 5, 9, 11};
  FT_CHECK(mf_pack_rows(ids, labels, offsets, 4, 5, 0, NULL, NULL) == 3, "row count");
  int32_t tokens[15], targets[15];
  FT_CHECK(mf_pack_rows(ids, labels, offsets, 4, 5, 0, tokens, targets) == 3, "pack: %s", mf_errmsg());
  const int32_t want_tokens[] = {10, 11, 12, 20, 21, 30, 31, 32, 33, 0, 40, 41, 0, 0, 0};
  const int32_t want_targets[] = {-100, 12, -100, 21, -100, 31, 32, 33, -100, -100, 41, -100, -100, -100, -100};
  FT_CHECK(!memcmp(tokens, want_tokens, sizeof tokens), "packed tokens differ");
  FT_CHECK(!memcmp(targets, want_targets, sizeof targets), "packed targets differ");
  FT_FAILS_WITH(mf_pack_rows(ids, labels, offsets, 4, 3, 0, NULL, NULL) == -1,
                "example 3 has 4 tokens, more than the row length 3");
}

int main(void) {
  ft_make_dir("shards");
  test_round_trip(4, "4450b3631ca3a393ea82a520cdb8fe53f2d223198f56c53337482e1ff90995cf");
  test_round_trip(2, "9fffb1132be85878d8bfca6743fe185ab308941a6942637425007c3fbd3fc44c");
  test_bad_writes();
  test_damaged();
  test_sample_batch();
  test_pack();
  return ft_finish();
}
