/*
 * Single-precision GEMM: the blocked driver and the portable micro-kernel.
 *
 * The loops follow the GotoBLAS/BLIS layout. C is cut into column blocks of
 * at most NC_MAX and K into blocks of at most KC_MAX; op(B) is packed into
 * one panel of NR-wide strips per (column block, K block). A thread packs
 * MR-row strips of op(A) (small enough to stay in L1) and runs the
 * micro-kernel along a panel (which stays in L2). Transposed operands are
 * handled by the packing, never by copies.
 *
 * Panels are packed in groups of up to PACK_FLOATS, which holds all of op(B)
 * for every training shape but the vocabulary-sized ones; threads meet only
 * twice per group, once the group is packed and once it is used. In between
 * a task owns a block of C (some A strips by some B strips of one column
 * block) and takes it through the group's K blocks, so no two threads write
 * the same C, and tasks are small enough for every thread to get several.
 * A task has at least MIN_TASK_STRIPS A strips where M allows: each of its K
 * blocks' B panels comes from L3 once and is then reused from L2 by every
 * strip, so single-strip tasks spend their time waiting on B.
 *
 * A small C with a long K (the weight gradients: C is [out, in], K the
 * batch's 2048 tokens) has too few such tasks for the threads. There K is
 * cut into chunks of K blocks, a task takes its C block through one chunk,
 * chunk 0 accumulates into C and every other chunk into a scratch copy of
 * C, and the copies are added to C in chunk order at the end.
 *
 * A product may be a sum of terms, C = alpha * sum_t op(A_t) op(B_t) + beta
 * C: their K ranges are laid end to end, and a panel that spans two terms
 * is packed piece by piece, so the sum runs through the micro-kernel like
 * one product (LoRA adds its rank-r product to the base weight's this way,
 * and q, k and v's input gradients meet in one C).
 *
 * Determinism: the K blocking and the chunks depend only on the shape, the K
 * blocks of a chunk are applied in order, the chunks are added in order, and
 * every element of C goes through the same micro-kernel code whichever task
 * runs it, so the thread count never changes the bits. Products with at
 * most MFK_SMALL_M rows take the unpacked path of gemm_small.c instead.
 */
#include "cpu/common.h"
#include "cpu/gemm.h"

#include <stdlib.h>
#include <string.h>

enum {
  KC_MAX = 320,           /* K block: a 14 x 320 A strip is 18 KiB, half the L1 */
  NC_MAX = 768,           /* column block: a 320 x 768 packed B panel is 960 KiB of L2 */
  MR_MAX = 16,
  NR_MAX = 32,
  PACK_FLOATS = 1 << 21,  /* packed panels per group: 8 MiB */
  TASK_STRIPS = 16,       /* A strips per task at most */
  MIN_TASK_STRIPS = 4,    /* and at least, where M has that many */
  TASKS_PER_THREAD = 8,   /* enough to even out a thread slowed by other work */
  SPLIT_TILES = 1024,     /* a C of fewer MR x NR tiles splits K into chunks */
  CHUNK_K = 1024,         /* of at most this many: partial sums to add stay few */
};

/* ---- portable micro-kernel ---- */
enum { GENERIC_MR = 4, GENERIC_NR = 16 };

static void ukernel_generic(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                            float alpha, float beta) {
  float acc[GENERIC_MR][GENERIC_NR] = { { 0 } };
  for (int64_t k = 0; k < kc; k++)
    for (int i = 0; i < GENERIC_MR; i++)
      for (int j = 0; j < GENERIC_NR; j++) acc[i][j] += a[k * GENERIC_MR + i] * b[k * GENERIC_NR + j];
  for (int i = 0; i < GENERIC_MR; i++)
    for (int j = 0; j < GENERIC_NR; j++) {
      float r = alpha * acc[i][j];
      c[i * ldc + j] = beta != 0.0f ? fmaf(beta, c[i * ldc + j], r) : r;
    }
}

const mfk_ukernel mfk_ukernel_generic = { "generic", GENERIC_MR, GENERIC_NR, ukernel_generic, NULL, NULL };

const mfk_ukernel *mfk_gemm_best_ukernel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return &mfk_ukernel_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &mfk_ukernel_avx2;
#endif
  return &mfk_ukernel_generic;
}

const char *mfk_gemm_isa(void) { return mfk_gemm_best_ukernel()->isa; }

/* ---- driver ---- */
typedef struct gemm_job {
  const mfk_ukernel *uk;
  const mfk_gemm_term *terms; /* their K ranges laid end to end make K */
  int n_terms;
  int64_t M, N, K;
  float alpha, beta;
  int64_t ldc;
  float *C;
  float *partial;          /* chunks 1.. of K: (k_chunks - 1) scratch copies of C, [M, N] */
  int64_t k_chunks, chunk_k, chunk_blocks, kc_even, nc_max; /* blocking, fixed by the shape */
  /* the group of panels: column blocks [jb0, jb0 + jbs) x K blocks [kb0, kb0 + kbs),
   * which meet chunks [c0, c0 + chunks) */
  int64_t jb0, jbs, kb0, kbs, c0, chunks;
  float *bpack;
  /* its tasks: column block x chunk x col_parts x row_tasks */
  int64_t row_tasks, col_parts;
} gemm_job;

/* K block kb is block kb % chunk_blocks of chunk kb / chunk_blocks. */
static int64_t block_start(const gemm_job *g, int64_t kb) {
  return kb / g->chunk_blocks * g->chunk_k + kb % g->chunk_blocks * g->kc_even;
}

/* 0 for the empty blocks a short last chunk may end with. */
static int64_t block_depth(const gemm_job *g, int64_t kb) {
  int64_t chunk_end = mfk_min(g->K, (kb / g->chunk_blocks + 1) * g->chunk_k);
  return mfk_max(0, mfk_min(g->kc_even, chunk_end - block_start(g, kb)));
}

/* The packed panel of column block jb, K block kb: strip s at s * depth * NR. */
static float *panel(const gemm_job *g, int64_t jb, int64_t kb) {
  return g->bpack + ((jb - g->jb0) * g->kbs + kb - g->kb0) * g->kc_even * g->nc_max;
}

/* The portable packing of count rows of op(A), or columns of op(B), K range
 * kc, into a K-major panel width floats wide, zero-padded: element (x, k)
 * lies at src[k * ld + x] when k_major, else at src[x * ld + k]. */
static void pack_portable(int width, int k_major, const float *src, int64_t ld, int64_t count, int64_t kc,
                          float *out) {
  if (k_major) {
    for (int64_t k = 0; k < kc; k++) {
      const float *from = src + k * ld;
      float *dst = out + k * width;
      for (int64_t x = 0; x < count; x++) dst[x] = from[x];
      for (int64_t x = count; x < width; x++) dst[x] = 0.0f;
    }
    return;
  }
  for (int64_t x = 0; x < count; x++) {
    const float *from = src + x * ld;
    for (int64_t k = 0; k < kc; k++) out[k * width + x] = from[k];
  }
  for (int64_t x = count; x < width; x++)
    for (int64_t k = 0; k < kc; k++) out[k * width + x] = 0.0f;
}

/* The term that K range [*pc, *pc + kc) starts in; *pc becomes the
 * position in it. */
static const mfk_gemm_term *term_at(const gemm_job *g, int64_t *pc, int64_t kc) {
  const mfk_gemm_term *t = g->terms;
  for (; kc > 0 && *pc >= t->k; t++) *pc -= t->k;
  return t;
}

/* Packs rows [x0, x0+count) of the terms' op(A)s (of_b = 0) or columns of
 * their op(B)s (of_b = 1), K range [pc, pc+kc) of the terms laid end to
 * end, zero-padded to MR (NR) wide. A panel is K-major, so a range that
 * crosses from one term into the next is packed piece after piece. */
static void pack_terms(const gemm_job *g, int of_b, int64_t x0, int64_t count, int64_t pc, int64_t kc,
                       float *out) {
  const mfk_ukernel *uk = g->uk;
  const int width = of_b ? uk->nr : uk->mr;
  const mfk_pack_fn pack = of_b ? uk->pack_b : uk->pack_a;
  for (const mfk_gemm_term *t = term_at(g, &pc, kc); kc > 0; pc = 0, t++) {
    int64_t part = mfk_min(kc, t->k - pc), ld = of_b ? t->ldb : t->lda;
    int trans = of_b ? t->trans_b : t->trans_a, k_major = of_b ? !trans : trans;
    const float *src = (of_b ? t->b : t->a) + (k_major ? pc * ld + x0 : x0 * ld + pc);
    if (pack) pack(trans, src, ld, count, part, out);
    else pack_portable(width, k_major, src, ld, count, part, out);
    out += part * width, kc -= part;
  }
}

/* Item t: strip t % (nc_max / NR) of the group's panel t / (nc_max / NR). */
static void pack_b_strips(void *arg, int64_t t0, int64_t t1) {
  const gemm_job *g = arg;
  const int nr = g->uk->nr;
  const int64_t strips = g->nc_max / nr;
  for (int64_t t = t0; t < t1; t++) {
    int64_t jb = g->jb0 + t / strips / g->kbs, kb = g->kb0 + t / strips % g->kbs, s = t % strips;
    int64_t j0 = jb * g->nc_max + s * nr, kc = block_depth(g, kb);
    if (j0 < g->N) pack_terms(g, 1, j0, mfk_min(nr, g->N - j0), block_start(g, kb), kc, panel(g, jb, kb) + s * kc * nr);
  }
}

/* One MR x NR tile of c (leading dimension ldc) over kc; an edge tile is
 * copied into a full-size scratch tile and back, so that it gets the
 * micro-kernel's own update. */
static void compute_tile(const gemm_job *g, int64_t kc, float beta, const float *apack,
                         const float *bstrip, float *c, int64_t ldc, int64_t rows, int64_t cols) {
  const mfk_ukernel *uk = g->uk;
  if (rows == uk->mr && cols == uk->nr) {
    uk->run(kc, apack, bstrip, c, ldc, g->alpha, beta);
    return;
  }
  _Alignas(64) float tile[MR_MAX * NR_MAX];
  for (int64_t i = 0; i < rows; i++) memcpy(tile + i * uk->nr, c + i * ldc, (size_t)cols * sizeof(float));
  uk->run(kc, apack, bstrip, tile, uk->nr, g->alpha, beta);
  for (int64_t i = 0; i < rows; i++) memcpy(c + i * ldc, tile + i * uk->nr, (size_t)cols * sizeof(float));
}

/* Where chunk c of K accumulates: C itself, or its scratch copy. */
static float *chunk_c(const gemm_job *g, int64_t c, int64_t *ldc) {
  *ldc = c == 0 ? g->ldc : g->N;
  return c == 0 ? g->C : g->partial + (c - 1) * g->M * g->N;
}

/* Task t: row task t % row_tasks against part t / row_tasks % col_parts of
 * the B strips of column block jb0 + t / (chunks * col_parts * row_tasks),
 * through the K blocks of the group in chunk c0 + t / (col_parts * row_tasks)
 * % chunks. Consecutive tasks share their B strips. */
static void compute_tasks(void *arg, int64_t t0, int64_t t1) {
  const gemm_job *g = arg;
  const int mr = g->uk->mr, nr = g->uk->nr;
  const int64_t a_strips = mfk_ceil_div(g->M, mr), per_chunk = g->col_parts * g->row_tasks;
  _Alignas(64) float apack[MR_MAX * KC_MAX];
  for (int64_t t = t0; t < t1; t++) {
    int64_t jb = g->jb0 + t / (per_chunk * g->chunks), chunk = g->c0 + t / per_chunk % g->chunks;
    int64_t part = t / g->row_tasks % g->col_parts, rt = t % g->row_tasks;
    int64_t b_strips = mfk_ceil_div(mfk_min(g->nc_max, g->N - jb * g->nc_max), nr);
    int64_t s0 = b_strips * part / g->col_parts, s1 = b_strips * (part + 1) / g->col_parts;
    int64_t is0 = a_strips * rt / g->row_tasks, is1 = a_strips * (rt + 1) / g->row_tasks;
    int64_t ldc, first = chunk * g->chunk_blocks;
    float *c = chunk_c(g, chunk, &ldc);
    int64_t kb0 = mfk_max(g->kb0, first), kb1 = mfk_min(g->kb0 + g->kbs, first + g->chunk_blocks);
    for (int64_t kb = kb0; kb < kb1; kb++) {
      int64_t kc = block_depth(g, kb);
      if (kc == 0) break;
      const float *bp = panel(g, jb, kb);
      float beta = kb > first ? 1.0f : chunk == 0 ? g->beta : 0.0f;
      for (int64_t is = is0; is < is1; is++) {
        int64_t i0 = is * mr, rows = mfk_min(mr, g->M - i0);
        pack_terms(g, 0, i0, rows, block_start(g, kb), kc, apack);
        for (int64_t s = s0; s < s1; s++) {
          int64_t j0 = jb * g->nc_max + s * nr;
          compute_tile(g, kc, beta, apack, bp + s * kc * nr, c + i0 * ldc + j0, ldc, rows,
                       mfk_min(nr, g->N - j0));
        }
      }
    }
  }
}

/* Cuts a group's C into tasks: about TASKS_PER_THREAD per thread, each of
 * MIN_TASK_STRIPS to TASK_STRIPS A strips (their C block stays in L2),
 * splitting the columns too when there are too few row strips. One thread
 * takes it all in big tasks. */
static void plan_tasks(gemm_job *g, int threads, int64_t jbs, int64_t chunks) {
  int64_t a_strips = mfk_ceil_div(g->M, g->uk->mr), want = threads > 1 ? TASKS_PER_THREAD * threads : 1;
  int64_t per_chunk = mfk_max(1, want / (jbs * chunks));
  int64_t strips = mfk_min(a_strips, mfk_max(MIN_TASK_STRIPS, mfk_min(TASK_STRIPS, a_strips / per_chunk)));
  g->row_tasks = mfk_ceil_div(a_strips, strips);
  g->col_parts = mfk_max(1, mfk_min(g->nc_max / g->uk->nr, per_chunk / g->row_tasks));
}

/* K in k_chunks chunks of chunk_k (the last one shorter), each in the
 * fewest blocks of at most KC_MAX, as even as they go. */
static void plan_k(gemm_job *g, int64_t k_chunks) {
  g->k_chunks = k_chunks;
  g->chunk_k = mfk_ceil_div(g->K, k_chunks);
  g->chunk_blocks = mfk_ceil_div(g->chunk_k, KC_MAX);
  g->kc_even = mfk_ceil_div(g->chunk_k, g->chunk_blocks);
}

/* Rows [i0, i1) of C += the scratch copies, in chunk order. */
static void add_chunks(void *arg, int64_t i0, int64_t i1) {
  const gemm_job *g = arg;
  for (int64_t i = i0; i < i1; i++)
    for (int64_t c = 1; c < g->k_chunks; c++) {
      int64_t ld;
      const float *p = chunk_c(g, c, &ld) + i * ld;
      float *ci = g->C + i * g->ldc;
      for (int64_t j = 0; j < g->N; j++) ci[j] += p[j];
    }
}

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta != 0.0f ? beta * C[i * ldc + j] : 0.0f;
}

/* The blocked path: panels of op(B) packed by groups, then tasks over C. */
static void run_packed(gemm_job *g, mfk_pool *pool) {
  int64_t tiles = mfk_ceil_div(g->M, g->uk->mr) * mfk_ceil_div(g->N, g->uk->nr);
  /* the scratch copies of C take at most as much memory as the panels */
  plan_k(g, tiles < SPLIT_TILES ? mfk_min(mfk_ceil_div(g->K, CHUNK_K), 1 + PACK_FLOATS / (g->M * g->N)) : 1);
  g->nc_max = mfk_min(NC_MAX / g->uk->nr, mfk_ceil_div(g->N, g->uk->nr)) * g->uk->nr;
  int64_t k_blocks = g->chunk_blocks * g->k_chunks, panel_floats = g->kc_even * g->nc_max;
  int64_t floats = mfk_min(PACK_FLOATS, mfk_ceil_div(g->N, g->nc_max) * k_blocks * panel_floats);
  /* Kernels have no error path: without memory for the panels, do without
   * chunks and pack one strip at a time on the stack. */
  _Alignas(64) float one_strip[KC_MAX * NR_MAX];
  float *heap = aligned_alloc(64, (size_t)(floats + (g->k_chunks - 1) * g->M * g->N) * sizeof(float));
  g->bpack = heap ? heap : one_strip;
  g->partial = heap ? heap + floats : NULL;
  if (!heap) {
    plan_k(g, 1);
    k_blocks = g->chunk_blocks;
    g->nc_max = g->uk->nr, panel_floats = floats = g->kc_even * g->uk->nr;
  }
  int64_t col_blocks = mfk_ceil_div(g->N, g->nc_max);
  /* a group: every K block of as many column blocks as fit, or else as many
   * K blocks of one column block */
  int64_t kbs = mfk_min(k_blocks, floats / panel_floats);
  int64_t jbs = kbs == k_blocks ? mfk_min(col_blocks, floats / (k_blocks * panel_floats)) : 1;
  plan_tasks(g, mfk_pool_size(pool), jbs, mfk_min(g->k_chunks, mfk_ceil_div(kbs, g->chunk_blocks)));
  for (g->jb0 = 0; g->jb0 < col_blocks; g->jb0 += jbs) {
    g->jbs = mfk_min(jbs, col_blocks - g->jb0);
    for (g->kb0 = 0; g->kb0 < k_blocks; g->kb0 += kbs) {
      g->kbs = mfk_min(kbs, k_blocks - g->kb0);
      g->c0 = g->kb0 / g->chunk_blocks;
      g->chunks = (g->kb0 + g->kbs - 1) / g->chunk_blocks - g->c0 + 1;
      mfk_parallel_for(pool, g->jbs * g->kbs * (g->nc_max / g->uk->nr), pack_b_strips, g);
      mfk_parallel_for(pool, g->jbs * g->chunks * g->col_parts * g->row_tasks, compute_tasks, g);
    }
  }
  if (g->k_chunks > 1) mfk_parallel_for(pool, g->M, add_chunks, g);
  free(heap);
}

/* Products with few rows take gemm_small's path a term at a time; a term it
 * cannot take (out of memory) goes through the packed path alone. */
static void small_terms(const mfk_ukernel *uk, mfk_pool *pool, int64_t M, int64_t N, int n_terms,
                        const mfk_gemm_term *t, float alpha, float beta, float *C, int64_t ldc) {
  for (int i = 0; i < n_terms; i++, beta = 1.0f) {
    if (t[i].k <= 0) {
      scale_c(M, N, beta, C, ldc);
      continue;
    }
    if (!mfk_gemm_small(pool, t[i].trans_a, t[i].trans_b, M, N, t[i].k, alpha, t[i].a, t[i].lda, t[i].b,
                        t[i].ldb, beta, C, ldc)) {
      gemm_job g = { .uk = uk, .terms = &t[i], .n_terms = 1, .M = M, .N = N, .K = t[i].k, .alpha = alpha,
                     .beta = beta, .ldc = ldc, .C = C };
      run_packed(&g, pool);
    }
  }
}

void mfk_gemm_terms_using(const mfk_ukernel *uk, mfk_pool *pool, int64_t M, int64_t N, int n_terms,
                          const mfk_gemm_term *terms, float alpha, float beta, float *C, int64_t ldc) {
  int64_t K = 0;
  for (int t = 0; t < n_terms; t++) K += terms[t].k;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  if (M <= MFK_SMALL_M) {
    small_terms(uk, pool, M, N, n_terms, terms, alpha, beta, C, ldc);
    return;
  }
  gemm_job g = { .uk = uk, .terms = terms, .n_terms = n_terms, .M = M, .N = N, .K = K, .alpha = alpha,
                 .beta = beta, .ldc = ldc, .C = C };
  run_packed(&g, pool);
}

void mfk_gemm_terms(mfk_pool *pool, int64_t M, int64_t N, int n_terms, const mfk_gemm_term *terms,
                    float alpha, float beta, float *C, int64_t ldc) {
  mfk_gemm_terms_using(mfk_gemm_best_ukernel(), pool, M, N, n_terms, terms, alpha, beta, C, ldc);
}

void mfk_gemm(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc) {
  mfk_gemm_term t = { .a = A, .b = B, .k = K, .lda = lda, .ldb = ldb, .trans_a = trans_a, .trans_b = trans_b };
  mfk_gemm_terms(pool, M, N, 1, &t, alpha, beta, C, ldc);
}
