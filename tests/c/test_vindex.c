/* Vector indexes: the similarity kernels, exact search against a
 * brute-force reference, ties by id, HNSW recall and distance counts against
 * exact search, the same results for any thread count, reproducible graphs
 * (whatever the thread count of the build), deletes and compaction, files
 * that round-trip and damaged files refused with a clear message. */
#include "format_testing.h"

#include "cpu/kernels.h"

#include <math.h>

enum { DIM = 37 };

/* n vectors [n, dim] from the normal stream of seed. */
static float *random_vectors(int64_t n, int dim, uint64_t seed) {
  float *v = malloc((size_t)(n * dim) * sizeof *v);
  mf_rng r;
  mf_rng_init(&r, seed, 1);
  for (int64_t i = 0; i < n * dim; i++) v[i] = (float)mf_rng_normal(&r);
  return v;
}

static mf_vindex *index_of(mf_vindex_kind kind, mf_metric metric, int dim, const float *v, int64_t n) {
  mf_vindex_opts o = {dim, metric, kind, 8, 64, 32, 7};
  mf_vindex *ix = mf_vindex_new(&o);
  FT_CHECK(ix && mf_vindex_add(ix, NULL, v, n) == 0, "build: %s", mf_errmsg());
  return ix;
}

/* The top k of query q by cosine, in double, ids 1-based as the index gives them. */
static void brute_force(const float *v, int64_t n, const float *q, int k, int64_t *ids) {
  double *score = malloc((size_t)n * sizeof *score);
  for (int64_t i = 0; i < n; i++) {
    double dot = 0, vv = 0, qq = 0;
    for (int j = 0; j < DIM; j++) dot += (double)v[i * DIM + j] * q[j], vv += (double)v[i * DIM + j] * v[i * DIM + j],
                                  qq += (double)q[j] * q[j];
    score[i] = dot / sqrt(vv * qq);
  }
  for (int r = 0; r < k; r++) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
      if (score[i] > -INFINITY && (best < 0 || score[i] > score[best])) best = i;
    ids[r] = best + 1;
    score[best] = -INFINITY;
  }
  free(score);
}

static void test_exact(void) {
  int64_t n = 1500, nq = 40;
  float *v = random_vectors(n, DIM, 1), *q = random_vectors(nq, DIM, 2);
  mf_vindex *ix = index_of(MF_VINDEX_EXACT, MF_METRIC_COSINE, DIM, v, n);
  int64_t ids[40 * 10], want[10];
  float scores[40 * 10];
  FT_CHECK(mf_vindex_search(ix, q, nq, DIM, 10, ids, scores) == 0, "search: %s", mf_errmsg());
  for (int64_t i = 0; i < nq; i++) {
    brute_force(v, n, q + i * DIM, 10, want);
    FT_CHECK(!memcmp(ids + i * 10, want, sizeof want), "query %lld: exact top 10 differs from brute force",
             (long long)i);
    for (int r = 1; r < 10; r++) FT_CHECK(scores[i * 10 + r] <= scores[i * 10 + r - 1], "scores out of order");
  }
  FT_CHECK(mf_vindex_distance_count(ix) == n * nq, "exact distances %lld", (long long)mf_vindex_distance_count(ix));
  mf_vindex_free(ix);
  free(v);
  free(q);
}

static void test_ties_and_short_results(void) {
  mf_vindex_opts o = {2, MF_METRIC_DOT, MF_VINDEX_EXACT, 0, 0, 0, 0};
  mf_vindex *ix = mf_vindex_new(&o);
  float v[] = {1, 0, 1, 0, 0, 1, 1, 0};
  int64_t ids[] = {9, 3, 4, 5};
  FT_CHECK(mf_vindex_add(ix, ids, v, 4) == 0, "add: %s", mf_errmsg());
  int64_t got[5];
  float s[5];
  FT_CHECK(mf_vindex_search(ix, (float[]){2, 0}, 1, 2, 5, got, s) == 0, "search: %s", mf_errmsg());
  FT_CHECK(got[0] == 3 && got[1] == 5 && got[2] == 9 && got[3] == 4 && got[4] == -1, "tie order %lld %lld %lld %lld %lld",
           (long long)got[0], (long long)got[1], (long long)got[2], (long long)got[3], (long long)got[4]);
  FT_CHECK(s[0] == 2 && s[3] == 0 && s[4] == -INFINITY, "dot scores %g %g %g", s[0], s[3], s[4]);
  FT_CHECK(mf_vindex_next_id(ix) == 10, "next id %lld", (long long)mf_vindex_next_id(ix));
  mf_vindex_free(ix);
}

/* Recall of hnsw against exact on the same queries, averaged over queries. */
static double recall(const int64_t *hnsw, const int64_t *exact, int64_t nq, int k) {
  int64_t hit = 0;
  for (int64_t q = 0; q < nq; q++)
    for (int i = 0; i < k; i++)
      for (int j = 0; j < k; j++) hit += hnsw[q * k + i] == exact[q * k + j];
  return (double)hit / (double)(nq * k);
}

static void test_hnsw(void) {
  int64_t n = 4000, nq = 100;
  float *v = random_vectors(n, 24, 3), *q = random_vectors(nq, 24, 4);
  mf_vindex *exact = index_of(MF_VINDEX_EXACT, MF_METRIC_COSINE, 24, v, n);
  mf_vindex *hnsw = index_of(MF_VINDEX_HNSW, MF_METRIC_COSINE, 24, v, n);
  int64_t *want = malloc(nq * 10 * 8), *got = malloc(nq * 10 * 8), *again = malloc(nq * 10 * 8);
  float *s = malloc(nq * 10 * 4), *s2 = malloc(nq * 10 * 4);
  mf_vindex_search(exact, q, nq, 24, 10, want, s);
  mf_vindex_set_ef_search(hnsw, 80);
  mf_set_threads(1);
  FT_CHECK(mf_vindex_search(hnsw, q, nq, 24, 10, got, s) == 0, "hnsw search: %s", mf_errmsg());
  double r = recall(got, want, nq, 10);
  int64_t dist = mf_vindex_distance_count(hnsw);
  FT_CHECK(r >= 0.9, "hnsw recall@10 %.3f", r);
  FT_CHECK(dist * 4 < n * nq, "hnsw computed %lld similarities, exact %lld", (long long)dist, (long long)(n * nq));
  mf_set_threads(3);
  FT_CHECK(mf_vindex_search(hnsw, q, nq, 24, 10, again, s2) == 0, "hnsw search: %s", mf_errmsg());
  FT_CHECK(!memcmp(got, again, nq * 10 * 8) && !memcmp(s, s2, nq * 10 * 4), "results depend on the thread count");
  FT_CHECK(mf_vindex_distance_count(hnsw) == 2 * dist, "distance count depends on the thread count");
  mf_set_threads(2);
  printf("hnsw n=%lld: recall@10 %.3f with %lld similarities per query (exact %lld)\n", (long long)n, r,
         (long long)(dist / nq), (long long)n);

  /* The same additions give the same file, byte for byte. */
  mf_vindex *twin = index_of(MF_VINDEX_HNSW, MF_METRIC_COSINE, 24, v, n);
  mf_vindex_set_ef_search(twin, 80);
  FT_CHECK(mf_vindex_save(hnsw, ft_path("a.mfvi")) == 0 && mf_vindex_save(twin, ft_path("b.mfvi")) == 0, "save: %s",
           mf_errmsg());
  FT_CHECK(ft_same_file(ft_path("a.mfvi"), ft_path("b.mfvi")), "two builds of one graph differ");
  mf_vindex_free(twin);

  /* Read in place, then changed: a copy is made, the file stays as it was. */
  mf_vindex *opened = mf_vindex_open(ft_path("a.mfvi"));
  FT_CHECK(opened, "open: %s", mf_errmsg());
  if (opened) {
    FT_CHECK(mf_vindex_search(opened, q, nq, 24, 10, again, s2) == 0 && !memcmp(got, again, nq * 10 * 8),
             "an opened index answers differently");
    FT_CHECK(mf_vindex_delete(opened, got[0]) == 0, "delete: %s", mf_errmsg());
    FT_CHECK(mf_vindex_add(opened, NULL, v, 1) == 0 && mf_vindex_count(opened) == n, "add after open: %s", mf_errmsg());
    mf_vindex_search(opened, q, 1, 24, 10, again, s2);
    for (int i = 0; i < 10; i++) FT_CHECK(again[i] != got[0], "a deleted id came back");
    mf_vindex_free(opened);
  }
  mf_vindex_free(hnsw);
  mf_vindex_free(exact);
  free(v), free(q), free(want), free(got), free(again), free(s), free(s2);
}

/* Compacting equals building from the live vectors alone. */
static void test_compact(void) {
  int64_t n = 600;
  float *v = random_vectors(n, 16, 5);
  mf_vindex *ix = index_of(MF_VINDEX_HNSW, MF_METRIC_DOT, 16, v, n);
  mf_vindex *fresh = index_of(MF_VINDEX_HNSW, MF_METRIC_DOT, 16, v, n / 2);
  for (int64_t id = n / 2 + 1; id <= n; id++) mf_vindex_delete(ix, id);
  FT_CHECK(mf_vindex_deleted(ix) == n / 2 && mf_vindex_count(ix) == n / 2, "tombstones");
  FT_FAILS_WITH(mf_vindex_delete(ix, n) != 0, "id 600 is not in the index");
  FT_CHECK(mf_vindex_compact(ix) == 0 && mf_vindex_deleted(ix) == 0, "compact: %s", mf_errmsg());
  FT_CHECK(mf_vindex_save(ix, ft_path("c1.mfvi")) == 0 && mf_vindex_save(fresh, ft_path("c2.mfvi")) == 0, "save");
  FT_CHECK(!ft_same_file(ft_path("c1.mfvi"), ft_path("c2.mfvi")), "next id should survive compaction");
  FT_CHECK(mf_vindex_next_id(ix) == n + 1, "next id after compaction %lld", (long long)mf_vindex_next_id(ix));
  int64_t a[5], b[5];
  float sa[5], sb[5];
  mf_vindex_search(ix, v + 3 * 16, 1, 16, 5, a, sa);
  mf_vindex_search(fresh, v + 3 * 16, 1, 16, 5, b, sb);
  FT_CHECK(!memcmp(a, b, sizeof a) && !memcmp(sa, sb, sizeof sa), "compacted index differs from a fresh one");
  mf_vindex_free(ix);
  mf_vindex_free(fresh);
  free(v);
}

/* The gathering kernel gives mfk_dot's bits for every row it gathers, and
 * mfk_dot is the dot product to float accuracy; dimensions with and without
 * a tail past the last 16 floats. */
static void test_gathered_dots(void) {
  const int dims[] = {5, 37, 384};
  const int32_t rows[] = {7, 0, 31, 7, 12, 30, 1};
  float out[7];
  for (int d = 0; d < 3; d++) {
    int dim = dims[d];
    float *x = random_vectors(32, dim, 8), *q = random_vectors(1, dim, 9);
    mfk_dot_gather(out, q, x, rows, 7, dim);
    for (int i = 0; i < 7; i++) {
      const float *row = x + (int64_t)rows[i] * dim;
      double want = 0, size = 0;
      for (int j = 0; j < dim; j++) want += (double)q[j] * row[j], size += fabs((double)q[j] * row[j]);
      float one = mfk_dot(q, row, dim);
      FT_CHECK(!memcmp(&out[i], &one, sizeof one), "dim %d row %d: gathered %.9g, alone %.9g", dim, rows[i], out[i], one);
      FT_CHECK(fabs(one - want) <= 1e-6 * size, "dim %d row %d: dot %.9g, in double %.9g", dim, rows[i], one, want);
    }
    free(x);
    free(q);
  }
}

/* A build links its vectors in parallel rounds; the graph must not depend
 * on the thread count: the files of builds on 1, 2 and 3 threads are the
 * same, byte for byte. 1500 vectors make several rounds and, with M = 8,
 * nodes on upper levels that the graph at the start of their round lacks. */
static void test_parallel_build(void) {
  int64_t n = 1500;
  float *v = random_vectors(n, 24, 7);
  const char *names[] = {"t1.mfvi", "t2.mfvi", "t3.mfvi"};
  for (int threads = 1; threads <= 3; threads++) {
    mf_set_threads(threads);
    mf_vindex *ix = index_of(MF_VINDEX_HNSW, MF_METRIC_COSINE, 24, v, n);
    FT_CHECK(mf_vindex_save(ix, ft_path(names[threads - 1])) == 0, "save: %s", mf_errmsg());
    mf_vindex_free(ix);
  }
  mf_set_threads(2);
  FT_CHECK(ft_same_file(ft_path("t1.mfvi"), ft_path("t2.mfvi")), "builds on 1 and 2 threads differ");
  FT_CHECK(ft_same_file(ft_path("t1.mfvi"), ft_path("t3.mfvi")), "builds on 1 and 3 threads differ");
  free(v);
}

/* A copy of the saved index with byte `at` set to `value` and `keep` bytes kept. */
static const char *damaged(size_t at, unsigned char value, size_t keep) {
  size_t n = 0;
  unsigned char *bytes = ft_read(ft_path("e.mfvi"), &n);
  if (at < n) bytes[at] = value;
  ft_write(ft_path("bad.mfvi"), bytes, keep < n ? keep : n);
  free(bytes);
  return ft_path("bad.mfvi");
}

static void test_errors(void) {
  float *v = random_vectors(50, 8, 6);
  mf_vindex *ix = index_of(MF_VINDEX_HNSW, MF_METRIC_COSINE, 8, v, 50);
  int64_t ids[2];
  float s[2];
  FT_FAILS_WITH(mf_vindex_search(ix, v, 1, 9, 2, ids, s) != 0, "queries have dimension 9, the index has dimension 8");
  FT_FAILS_WITH(mf_vindex_add(ix, (int64_t[]){7}, v, 1) != 0, "id 7 is already in the index");
  FT_FAILS_WITH(mf_vindex_add(ix, (int64_t[]){70, 70}, v, 2) != 0, "id 70 given twice");
  float zero[8] = {0};
  FT_FAILS_WITH(mf_vindex_add(ix, NULL, zero, 1) != 0, "vector 0 has length zero");
  FT_CHECK(mf_vindex_count(ix) == 50, "a refused add changed the index");
  FT_FAILS_WITH(mf_vindex_save(ix, ft_path("missing/x.mfvi")) != 0, "cannot write");
  FT_CHECK(mf_vindex_save(ix, ft_path("e.mfvi")) == 0, "save: %s", mf_errmsg());
  size_t n = 0;
  free(ft_read(ft_path("e.mfvi"), &n));
  FT_FAILS_WITH(mf_vindex_open(damaged(n, 0, 100)) == NULL, "truncated: 100 bytes, an index header takes 128");
  FT_FAILS_WITH(mf_vindex_open(damaged(n, 0, n - 1)) == NULL, "truncated: the header promises");
  FT_FAILS_WITH(mf_vindex_open(damaged(0, 'X', n)) == NULL, "not a vector index (bad magic)");
  FT_FAILS_WITH(mf_vindex_open(damaged(8, 2, n)) == NULL, "index format version 2");
  FT_FAILS_WITH(mf_vindex_open(damaged(n - 3, 1, n)) == NULL, "checksum mismatch");
  FT_FAILS_WITH(mf_vindex_open(damaged(12, 9, n)) == NULL, "the header promises");
  FT_FAILS_WITH(mf_vindex_open(ft_path("absent.mfvi")) == NULL, "cannot open");
  mf_vindex_opts bad = {0, MF_METRIC_COSINE, MF_VINDEX_EXACT, 0, 0, 0, 0};
  FT_FAILS_WITH(mf_vindex_new(&bad) == NULL, "dimension 0 outside 1..65536");
  mf_vindex_free(ix);
  free(v);
}

static void test_empty(void) {
  mf_vindex_opts o = {4, MF_METRIC_COSINE, MF_VINDEX_HNSW, 0, 0, 0, 0};
  mf_vindex *ix = mf_vindex_new(&o);
  int64_t ids[2];
  float s[2];
  FT_CHECK(mf_vindex_search(ix, (float[]){1, 0, 0, 0}, 1, 4, 2, ids, s) == 0 && ids[0] == -1 && ids[1] == -1,
           "an empty index should find nothing");
  FT_CHECK(mf_vindex_save(ix, ft_path("empty.mfvi")) == 0, "save empty: %s", mf_errmsg());
  mf_vindex *back = mf_vindex_open(ft_path("empty.mfvi"));
  FT_CHECK(back && mf_vindex_count(back) == 0, "open empty: %s", mf_errmsg());
  FT_CHECK(back && mf_vindex_add(back, NULL, (float[]){0, 1, 0, 0}, 1) == 0, "add to an opened empty index: %s",
           mf_errmsg());
  mf_vindex_free(back);
  mf_vindex_free(ix);
}

int main(void) {
  ft_make_dir("vindex");
  test_gathered_dots();
  test_exact();
  test_ties_and_short_results();
  test_hnsw();
  test_compact();
  test_parallel_build();
  test_errors();
  test_empty();
  return ft_finish();
}
