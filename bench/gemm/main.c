/*
 * GEMM benchmark: the machine's single-precision FMA peak, measured with a
 * register-only loop, and mfk_gemm's throughput on the matrix shapes of one
 * training step of the llama2.c "stories15M" model (dim 288, FFN 768, vocab
 * 32000, batch 8 x seq 256 = 2048 rows), as a share of that peak; then
 * decoding's products, one row of activations times a weight matrix
 * [N x K] transposed, as GFLOP/s and as GB/s of weights read (they are
 * bound by memory, not by the FMA peak). Each training shape is also run
 * by mfk_gemm_bf16 on the same values rounded to bf16, reported as a share
 * of the peak of its own instruction (vdpbf16ps, measured the same way) and
 * as a speed-up over the f32 GEMM.
 *
 *   mf_bench_gemm [--peak-only]
 *
 * Output lines are "peak THREADS GFLOPS", "peak_bf16 THREADS GFLOPS",
 * "gemm SHAPE THREADS GFLOPS PERCENT", "bf16 SHAPE THREADS GFLOPS PERCENT
 * xSPEEDUP" and "decode SHAPE THREADS GFLOPS GBPS"; the thread counts are 1
 * and mf_threads() (MOONFORGE_THREADS).
 * Every figure is the best of several repetitions: the machine is shared.
 */
#include "moonforge.h"
#include "cpu/gemm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- peak: independent FMA chains, enough to cover latency on both ports ---- */
enum { CHAINS = 16, PEAK_ITERS = 20000000 };

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static float fma_loop_avx512(long iters) {
  __m512 acc[CHAINS], x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
  for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
  float sum = 0;
  for (int c = 0; c < CHAINS; c++) sum += _mm512_reduce_add_ps(acc[c]);
  return sum;
}

__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iters) {
  __m256 acc[CHAINS], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
  for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
  float out[8], sum = 0;
  for (int c = 0; c < CHAINS; c++) {
    _mm256_storeu_ps(out, acc[c]);
    for (int l = 0; l < 8; l++) sum += out[l];
  }
  return sum;
}

/* vdpbf16ps: each instruction is 16 lanes of two multiply-adds. */
__attribute__((target("avx512f,avx512bf16"))) static float dpbf16_loop_avx512(long iters) {
  __m512 acc[CHAINS];
  __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
  for (long i = 0; i < iters; i++)
#pragma GCC unroll 16
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], x, y);
  float sum = 0;
  for (int c = 0; c < CHAINS; c++) sum += _mm512_reduce_add_ps(acc[c]);
  return sum;
}
#endif

static float fma_loop_generic(long iters) {
  float acc[CHAINS];
  for (int c = 0; c < CHAINS; c++) acc[c] = (float)c;
  for (long i = 0; i < iters; i++)
    for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * 0.999999f + 1e-7f;
  float sum = 0;
  for (int c = 0; c < CHAINS; c++) sum += acc[c];
  return sum;
}

volatile float bench_sink; /* keeps the loops' results alive */

/* Runs the loop matching the GEMM's instruction set; returns its FLOPs. */
static double fma_loop(long iters) {
  const char *isa = mfk_gemm_isa();
#if defined(__x86_64__)
  if (!strcmp(isa, "avx512")) {
    bench_sink = fma_loop_avx512(iters);
    return 2.0 * 16 * CHAINS * iters;
  }
  if (!strcmp(isa, "avx2")) {
    bench_sink = fma_loop_avx2(iters);
    return 2.0 * 8 * CHAINS * iters;
  }
#endif
  bench_sink = fma_loop_generic(iters);
  return 2.0 * CHAINS * iters;
}

/* The loop of the bf16 GEMM's instruction: vdpbf16ps, or FMA for the
 * portable path. */
static double bf16_loop(long iters) {
#if defined(__x86_64__)
  if (!strcmp(mfk_gemm_bf16_isa(), "avx512bf16")) {
    bench_sink = dpbf16_loop_avx512(iters);
    return 2.0 * 32 * CHAINS * iters;
  }
#endif
  return fma_loop(iters);
}

typedef struct peak_run {
  double (*loop)(long iters);
  double flops;
} peak_run;

/* One plain thread per core rather than the pool, so that every thread runs
 * exactly one loop at the same time. */
static void *peak_thread(void *arg) {
  peak_run *run = arg;
  run->flops = run->loop(PEAK_ITERS);
  return NULL;
}

static double measure_peak(int threads, double (*loop)(long iters)) {
  pthread_t tid[64];
  peak_run runs[64];
  double best = 0;
  if (threads > 64) threads = 64;
  for (int i = 0; i < threads; i++) runs[i].loop = loop;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now(), total = 0;
    for (int i = 1; i < threads; i++) pthread_create(&tid[i], NULL, peak_thread, &runs[i]);
    peak_thread(&runs[0]);
    for (int i = 1; i < threads; i++) pthread_join(tid[i], NULL);
    double dt = now() - t0;
    for (int i = 0; i < threads; i++) total += runs[i].flops;
    if (total / dt > best) best = total / dt;
  }
  return best / 1e9;
}

/* ---- GEMM on the model's shapes ---- */
typedef struct shape {
  const char *name;
  int ta, tb;
  int64_t M, N, K;
  int per_step; /* how many times one training step runs it (6 layers) */
} shape;

static const shape shapes[] = {
  /* forward: activations [2048 x in] times weights [out x in] transposed */
  { "fwd_qkvo  2048x288x288", 0, 1, 2048, 288, 288, 24 },
  { "fwd_up    2048x768x288", 0, 1, 2048, 768, 288, 12 },
  { "fwd_down  2048x288x768", 0, 1, 2048, 288, 768, 6 },
  { "fwd_logit 2048x32000x288", 0, 1, 2048, 32000, 288, 1 },
  /* backward, input gradients: dY [2048 x out] times W [out x in] */
  { "dx_qkvo   2048x288x288", 0, 0, 2048, 288, 288, 24 },
  { "dx_up     2048x288x768", 0, 0, 2048, 288, 768, 12 },
  { "dx_down   2048x768x288", 0, 0, 2048, 768, 288, 6 },
  { "dx_logit  2048x288x32000", 0, 0, 2048, 288, 32000, 1 },
  /* backward, weight gradients: dY^T [out x 2048] times X [2048 x in] */
  { "dw_qkvo   288x288x2048", 1, 0, 288, 288, 2048, 24 },
  { "dw_up     768x288x2048", 1, 0, 768, 288, 2048, 12 },
  { "dw_down   288x768x2048", 1, 0, 288, 768, 2048, 6 },
  { "dw_logit  32000x288x2048", 1, 0, 32000, 288, 2048, 1 },
};

/* decoding: the weights' [N x K] times one token's K activations */
static const shape decode_shapes[] = {
  { "dec_qkvo  1x768x288", 0, 1, 1, 768, 288, 0 },
  { "dec_up    1x768x576", 0, 1, 1, 768, 576, 0 },
  { "dec_logit 1x32000x288", 0, 1, 1, 32000, 288, 0 },
  { "dec_logit 1x32000x576", 0, 1, 1, 32000, 576, 0 },
  { "dec_logit 1x49152x288", 0, 1, 1, 49152, 288, 0 },
  { "dec_logit 1x49152x576", 0, 1, 1, 49152, 576, 0 },
};

static float *filled(int64_t n) {
  float *x = malloc((size_t)n * sizeof(float));
  if (!x) {
    fprintf(stderr, "mf_bench_gemm: out of memory\n");
    exit(1);
  }
  for (int64_t i = 0; i < n; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
  return x;
}

static uint16_t *to_bf16(const float *x, int64_t n) {
  uint16_t *y = malloc((size_t)n * sizeof *y);
  if (!y) {
    fprintf(stderr, "mf_bench_gemm: out of memory\n");
    exit(1);
  }
  for (int64_t i = 0; i < n; i++) y[i] = mf_f32_to_bf16(x[i]);
  return y;
}

/* A shape's operands: f32, and bf16 (NULL where only f32 is timed). */
typedef struct operands {
  const float *A, *B;
  const uint16_t *A16, *B16;
  float *C;
} operands;

/* Best time of several runs, at least 3 and at least 0.5 s in all, of the
 * bf16 GEMM when bf16 is set, else the f32 one. */
static double best_seconds(mfk_pool *pool, const shape *s, const operands *o, int bf16) {
  double best = 1e30, spent = 0;
  int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
  for (int rep = 0; rep < 3 || (spent < 0.5 && rep < 50); rep++) {
    double t0 = now();
    if (bf16)
      mfk_gemm_bf16(pool, s->ta, s->tb, s->M, s->N, s->K, 1.0f, o->A16, lda, o->B16, ldb, 0.0f, o->C, s->N);
    else
      mfk_gemm(pool, s->ta, s->tb, s->M, s->N, s->K, 1.0f, o->A, lda, o->B, ldb, 0.0f, o->C, s->N);
    double dt = now() - t0;
    spent += dt;
    if (dt < best) best = dt;
  }
  return best;
}

static void bench_shapes(mfk_pool *pool, double peak, double peak_bf16) {
  int threads = mfk_pool_size(pool);
  double step_flops = 0, step_seconds = 0, step_seconds_bf16 = 0;
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    const shape *s = &shapes[i];
    float *A = filled(s->M * s->K), *B = filled(s->K * s->N), *C = filled(s->M * s->N);
    uint16_t *A16 = to_bf16(A, s->M * s->K), *B16 = to_bf16(B, s->K * s->N);
    operands o = { A, B, A16, B16, C };
    double flops = 2.0 * s->M * s->N * s->K, t = best_seconds(pool, s, &o, 0);
    printf("gemm %-26s %d %8.1f %5.1f%%\n", s->name, threads, flops / t / 1e9, 100 * flops / t / 1e9 / peak);
    double t16 = best_seconds(pool, s, &o, 1);
    printf("bf16 %-26s %d %8.1f %5.1f%% x%.2f\n", s->name, threads, flops / t16 / 1e9,
           100 * flops / t16 / 1e9 / peak_bf16, t / t16);
    fflush(stdout);
    step_flops += s->per_step * flops;
    step_seconds += s->per_step * t;
    step_seconds_bf16 += s->per_step * t16;
    free(A), free(B), free(C), free(A16), free(B16);
  }
  printf("gemm %-26s %d %8.1f %5.1f%%\n", "one_training_step", threads, step_flops / step_seconds / 1e9,
         100 * step_flops / step_seconds / 1e9 / peak);
  printf("bf16 %-26s %d %8.1f %5.1f%% x%.2f\n", "one_training_step", threads,
         step_flops / step_seconds_bf16 / 1e9, 100 * step_flops / step_seconds_bf16 / 1e9 / peak_bf16,
         step_seconds / step_seconds_bf16);
}

static void bench_decode(mfk_pool *pool) {
  for (size_t i = 0; i < sizeof decode_shapes / sizeof *decode_shapes; i++) {
    const shape *s = &decode_shapes[i];
    float *A = filled(s->M * s->K), *B = filled(s->K * s->N), *C = filled(s->M * s->N);
    operands o = { A, B, NULL, NULL, C };
    double t = best_seconds(pool, s, &o, 0);
    printf("decode %-24s %d %8.1f %6.1f\n", s->name, mfk_pool_size(pool), 2.0 * s->M * s->N * s->K / t / 1e9,
           (double)s->N * s->K * sizeof(float) / t / 1e9);
    fflush(stdout);
    free(A), free(B), free(C);
  }
}

int main(int argc, char **argv) {
  int peak_only = argc > 1 && !strcmp(argv[1], "--peak-only");
  int counts[2] = { 1, mf_threads() };
  printf("# isa %s, bf16 %s; columns: peak THREADS GFLOP/s | gemm SHAPE(MxNxK) THREADS GFLOP/s %%-of-peak"
         " | peak_bf16 THREADS GFLOP/s | bf16 SHAPE THREADS GFLOP/s %%-of-peak_bf16 speed-up-over-f32\n",
         mfk_gemm_isa(), mfk_gemm_bf16_isa());
  for (int c = 0; c < 2; c++) {
    if (c == 1 && counts[1] == 1) break;
    mfk_pool *pool = mfk_pool_new(counts[c]);
    double peak = measure_peak(counts[c], fma_loop), peak_bf16 = measure_peak(counts[c], bf16_loop);
    printf("peak %d %.1f\n", counts[c], peak);
    printf("peak_bf16 %d %.1f\n", counts[c], peak_bf16);
    fflush(stdout);
    if (!peak_only) {
      bench_shapes(pool, peak, peak_bf16);
      bench_decode(pool);
    }
    mfk_pool_free(pool);
  }
  return 0;
}
