/* The dropout mask against a plain scalar reference, bit for bit, on pools
 * of 1, 2 and 3 threads and on lengths that end in a partial mask word: the
 * counter-based hash (pinned to known values, since checkpoints and resumed
 * runs depend on every mask it draws) and mfk_dropout_mask. (The low-rank
 * kernels' tests cover applying a mask.) */
#include "kernel_testing.h"

static const int64_t lengths[] = { 1, 37, 64, 1000, 64 * 300 + 17 };
enum { NLENGTHS = sizeof lengths / sizeof lengths[0] };

static int64_t words_of(int64_t n) { return (n + 63) / 64; }

static void test_hash(void) {
  /* splitmix64's first output from seed 0, its published test value */
  KT_CHECK(mfk_mix64(0x9e3779b97f4a7c15ULL) == 0xe220a8397b1dcdafULL, "mix64 is not splitmix64's finalizer");
  static const struct { uint64_t key, index, draw; } known[] = {
    { 0, 1, 0x48218226ff3cd4bfULL },
    { 1, 0, 0x83ec686c1600460aULL },
    { 1, 1000003, 0xd6cf7ed2802407b2ULL },
    { 0x0123456789abcdefULL, 1, 0x2263eaf0002bcea9ULL },
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    KT_CHECK(mfk_rng_at(known[i].key, known[i].index) == known[i].draw, "rng_at(%llx, %llu) changed",
             (unsigned long long)known[i].key, (unsigned long long)known[i].index);
}

/* Bit by bit: field i % 4 of draw 16 w + i / 4 against the cut. */
static void reference_mask(uint64_t *keep, int64_t nwords, uint64_t key, uint32_t cut) {
  for (int64_t w = 0; w < nwords; w++) {
    keep[w] = 0;
    for (int i = 0; i < 64; i++) {
      uint64_t draw = mfk_rng_at(key, (uint64_t)(w * 16 + i / 4));
      uint64_t field = draw >> 16 * (i % 4) & 0xffff;
      keep[w] |= (uint64_t)(field >= cut) << i;
    }
  }
}

static int64_t ones(const uint64_t *keep, int64_t nwords) {
  int64_t count = 0;
  for (int64_t w = 0; w < nwords; w++) count += __builtin_popcountll(keep[w]);
  return count;
}

static void test_mask(void) {
  static const uint32_t cuts[] = { 0, 1, 3277, 32768, 65535, 65536 };
  int64_t nwords = words_of(lengths[NLENGTHS - 1]);
  uint64_t *want = malloc((size_t)nwords * sizeof *want), *got = malloc((size_t)nwords * sizeof *got);
  for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
    uint64_t key = mfk_rng_at(0x5eed, c);
    reference_mask(want, nwords, key, cuts[c]);
    for (int threads = 1; threads <= 3; threads++) {
      mfk_pool *pool = mfk_pool_new(threads);
      for (int k = 0; k < NLENGTHS; k++) {
        int64_t n = words_of(lengths[k]);
        memset(got, 0xa5, (size_t)nwords * sizeof *got);
        mfk_dropout_mask(pool, got, n, key, cuts[c]);
        KT_CHECK(!memcmp(got, want, (size_t)n * sizeof *got), "mask of %lld words, cut %u, %d threads",
                 (long long)n, cuts[c], threads);
        KT_CHECK(n == nwords || got[n] == 0xa5a5a5a5a5a5a5a5ULL, "mask of %lld words wrote past its end",
                 (long long)n);
      }
      mfk_pool_free(pool);
    }
  }
  /* dropout 0.05 keeps 95% of the elements */
  reference_mask(want, nwords, 42, 3277);
  double kept = (double)ones(want, nwords) / (64.0 * nwords);
  KT_CHECK(fabs(kept - 0.95) < 0.005, "cut 3277 keeps %.4f of the elements, expected 0.95", kept);
  free(want);
  free(got);
}

int main(void) {
  test_hash();
  test_mask();
  return kt_failures != 0;
}
