/*
 * int8 linear layers: y = x W^T with W quantized once and x on every call,
 * the products summed exactly in int32.
 *
 * Both sides are quantized in blocks of KB = 64 along K, each block of a
 * row with its own scale max|block| / 127 and q = round(v / scale) (half
 * away from zero): w[c, k] ~ sw[c, b] qw[c, k] and
 * x[r, k] ~ sx[r, b] qx[r, k] for k in block b. Per-block scales keep the
 * few large channels of a transformer's activations from costing every
 * other channel its resolution (one scale per row loses about three times
 * as much cosine on MiniLM). Then
 *   y[r, c] = sum over blocks b of sx[r, b] sw[c, b] S(r, c, b),
 * S the block's exact int32 sum of qx qw. AVX-512 VNNI's vpdpbusd
 * multiplies unsigned by signed bytes, four at a time into an int32 lane,
 * so activations are stored offset by 128 (as unsigned qx + 128), and
 * each block's int32 sum starts from -128 * sum over the block of
 * qw[c, k], kept per column and block, which takes the offset off again at
 * no cost. Each block's sum is converted to float and added with one fmaf,
 * blocks in order, so the portable micro-kernel, the VNNI one and any
 * thread count give the same bits.
 *
 * Layout, as in gemm.c's packing: K is taken in groups of four bytes. The
 * weight is packed once into strips of NR columns, [in/4][NR][4] bytes
 * each; activations into strips of MR rows, [in/4][MR][4]. A micro-kernel
 * call multiplies one row strip by one column strip over all of K (in is
 * a layer width, at most a few thousand: a strip is a few KiB and stays in
 * L1). Tasks own blocks of row strips by blocks of column strips, so every
 * output is written by one task.
 */
#include "cpu/common.h"

#include <stdlib.h>
#include <string.h>

enum {
  KB = 64,             /* K per quantization block */
  MR = 6,              /* rows per strip: 6 x 2 int32 and 6 x 2 float accumulators + 2 B vectors;
                          a step's 8 loads (2 B, 6 broadcasts) keep up with its 12 vpdpbusd */
  NR = 32,             /* columns per strip: two zmm */
  ROW_STRIPS = 16,     /* row strips per task: 96 rows of packed activations stay in L2 */
  COL_STRIPS = 8,      /* column strips per task */
};

struct mfk_i8_weight {
  int64_t out, in, nb;   /* nb: blocks of KB along in (the last one zero-padded) */
  int8_t *packed;        /* ceil(out / NR) strips of [nb * KB / 4][NR][4] */
  float *scale;          /* per strip [nb][NR] */
  int32_t *offset;       /* per strip [nb][NR]: -128 * the block's sum of qw */
};

/* Bytes of one strip of rows (MR or NR) over K. */
static int64_t strip_bytes(int64_t nb, int rows) { return nb * KB * rows; }

/* round(y) half away from zero for |y| <= 127, in operations that
 * vectorise (libm's roundf does not) and that no compiler can fuse. */
MFK_INLINE int round_away(float y) {
  int t = (int)y;
  return t + (y >= (float)t + 0.5f) - (y <= (float)t - 0.5f);
}

/* The largest of m's lanes, halving in a tree (lane 0 ends up with it): a
 * loop over the lanes compiles to a serial chain of sixteen scalar maxima. */
static inline float lanes_max(v16 m) {
  v16_keep_max(&m, __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  v16_keep_max(&m, __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3));
  v16_keep_max(&m, __builtin_shufflevector(m, m, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1));
  v16_keep_max(&m, __builtin_shufflevector(m, m, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0));
  return m[0];
}

/* The scale of v [n <= KB] and its codes, written in groups of four bytes
 * to q[k / 4 * step]: round(v / d) plus bias (0, or 128 for unsigned
 * storage); *sum gets the sum of the codes. */
MFK_SIMD static float quantize_block(const float *v, int64_t n, uint8_t *q, int64_t step, int bias, int32_t *sum) {
  _Alignas(64) float x[KB], a[KB];
  _Alignas(64) uint8_t codes[KB];
  for (int k = 0; k < KB; k++) x[k] = k < n ? v[k] : 0.0f; /* masked loads, not a libc call per block */
  for (int k = 0; k < KB; k++) a[k] = fabsf(x[k]);
  v16 m = V16(a);
  for (int k = 16; k < KB; k += 16) v16_keep_max(&m, V16(a + k));
  float d = lanes_max(m) / 127, inv = d != 0 ? 1 / d : 0;
  int32_t s = 0;
  for (int k = 0; k < KB; k++) {
    int c = round_away(x[k] * inv);
    codes[k] = (uint8_t)(c + bias);
    s += c;
  }
  for (int g = 0; g < KB / 4; g++) memcpy(q + g * step, codes + 4 * g, 4);
  *sum = s;
  return d;
}

mfk_i8_weight *mfk_i8_weight_new(const float *w, int64_t out, int64_t in) {
  mfk_i8_weight *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  int64_t strips = mfk_ceil_div(out, NR);
  q->out = out, q->in = in, q->nb = mfk_ceil_div(in, KB);
  size_t bytes = (size_t)(strips * strip_bytes(q->nb, NR));
  q->packed = aligned_alloc(64, bytes);
  q->scale = calloc((size_t)(strips * q->nb * NR), sizeof(float));
  q->offset = calloc((size_t)(strips * q->nb * NR), sizeof(int32_t));
  if (!q->packed || !q->scale || !q->offset) {
    mfk_i8_weight_free(q);
    return NULL;
  }
  memset(q->packed, 0, bytes);
  for (int64_t c = 0; c < out; c++) {
    int64_t strip = c / NR, j = c % NR;
    for (int64_t b = 0; b < q->nb; b++) {
      uint8_t *codes = (uint8_t *)q->packed + strip * strip_bytes(q->nb, NR) + b * KB * NR + j * 4;
      int64_t at = (strip * q->nb + b) * NR + j;
      int32_t sum;
      q->scale[at] = quantize_block(w + c * in + b * KB, mfk_min(KB, in - b * KB), codes, NR * 4, 0, &sum);
      q->offset[at] = -128 * sum;
    }
  }
  return q;
}

void mfk_i8_weight_free(mfk_i8_weight *w) {
  if (!w) return;
  free(w->packed);
  free(w->scale);
  free(w->offset);
  free(w);
}

size_t mfk_i8_scratch_bytes(int64_t rows, int64_t in) {
  int64_t strips = mfk_ceil_div(rows, MR), nb = mfk_ceil_div(in, KB);
  return (size_t)(strips * strip_bytes(nb, MR)) + (size_t)(strips * nb * MR) * sizeof(float);
}

/* ---- micro-kernels ----
 * y[i * ldy + j] (i < MR, j < NR) = sum over blocks b, in order, of
 *   float(offset[b][j] + S_b) * (sx[b][i] * sw[b][j])
 * added with fmaf, S_b the block's int32 sum of a's unsigned bytes times
 * b's signed ones. */

typedef struct i8_strips {
  const uint8_t *a;   /* [nb * KB / 4][MR][4] */
  const int8_t *b;    /* [nb * KB / 4][NR][4] */
  const float *sx;    /* [nb][MR] */
  const float *sw;    /* [nb][NR] */
  const int32_t *offset; /* [nb][NR]: where each block's sum starts */
} i8_strips;

typedef void (*i8_ukernel)(int64_t nb, const i8_strips *s, float *y, int64_t ldy);

static void ukernel_generic(int64_t nb, const i8_strips *s, float *y, int64_t ldy) {
  float acc[MR * NR] = { 0 };
  for (int64_t blk = 0; blk < nb; blk++) {
    int32_t sum[MR][NR];
    for (int i = 0; i < MR; i++) memcpy(sum[i], s->offset + blk * NR, sizeof sum[i]);
    for (int64_t k = blk * KB / 4; k < (blk + 1) * KB / 4; k++)
      for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
          for (int l = 0; l < 4; l++) sum[i][j] += s->a[(k * MR + i) * 4 + l] * s->b[(k * NR + j) * 4 + l];
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++)
        acc[i * NR + j] = fmaf((float)sum[i][j], s->sx[blk * MR + i] * s->sw[blk * NR + j], acc[i * NR + j]);
  }
  for (int i = 0; i < MR; i++) memcpy(y + i * ldy, acc + i * NR, NR * sizeof(float));
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

static VNNI void ukernel_vnni(int64_t nb, const i8_strips *s, float *y, int64_t ldy) {
  __m512 f[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) f[i][0] = f[i][1] = _mm512_setzero_ps();
  for (int64_t blk = 0; blk < nb; blk++) {
    __m512i c[MR][2];
    __m512i off0 = _mm512_loadu_si512(s->offset + blk * NR), off1 = _mm512_loadu_si512(s->offset + blk * NR + 16);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) c[i][0] = off0, c[i][1] = off1;
    const int8_t *b = s->b + blk * KB * NR;
    const int32_t *a = (const int32_t *)(s->a + blk * KB * MR);
    /* Unrolled over the whole block: rolled, GCC copies the 12 sums from
     * register to register on every step. */
#pragma GCC unroll 16
    for (int k = 0; k < KB / 4; k++) {
      __m512i b0 = _mm512_load_si512(b + k * NR * 4), b1 = _mm512_load_si512(b + k * NR * 4 + 64);
      const int32_t *ak = a + k * MR;
#pragma GCC unroll 6
      for (int i = 0; i < MR; i++) {
        __m512i ai = _mm512_set1_epi32(ak[i]);
        c[i][0] = _mm512_dpbusd_epi32(c[i][0], ai, b0);
        c[i][1] = _mm512_dpbusd_epi32(c[i][1], ai, b1);
      }
    }
    __m512 sw0 = _mm512_loadu_ps(s->sw + blk * NR), sw1 = _mm512_loadu_ps(s->sw + blk * NR + 16);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      __m512 sx = _mm512_set1_ps(s->sx[blk * MR + i]);
      f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[i][0]), _mm512_mul_ps(sx, sw0), f[i][0]);
      f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[i][1]), _mm512_mul_ps(sx, sw1), f[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    _mm512_storeu_ps(y + i * ldy, f[i][0]);
    _mm512_storeu_ps(y + i * ldy + 16, f[i][1]);
  }
}
#endif

static i8_ukernel best_ukernel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) return ukernel_vnni;
#endif
  return ukernel_generic;
}

const char *mfk_i8_isa(void) { return best_ukernel() == ukernel_generic ? "generic" : "avx512vnni"; }

/* ---- driver ---- */

typedef struct i8_job {
  i8_ukernel uk;
  const mfk_i8_weight *w;
  const float *x;
  float *y;
  int64_t rows, col_blocks;
  uint8_t *apack;  /* row strips of [nb * KB / 4][MR][4] */
  float *ascale;   /* per row strip [nb][MR] */
} i8_job;

/* Row strips [s0, s1) of x, quantized and offset by 128; rows past the end
 * and K past in are code 0 (byte 128). */
static void quantize_strips(void *arg, int64_t s0, int64_t s1) {
  const i8_job *j = arg;
  int64_t in = j->w->in, nb = j->w->nb;
  for (int64_t s = s0; s < s1; s++) {
    uint8_t *strip = j->apack + s * strip_bytes(nb, MR);
    float *scale = j->ascale + s * nb * MR;
    memset(strip, 128, (size_t)strip_bytes(nb, MR)); /* rows past the end */
    memset(scale, 0, (size_t)(nb * MR) * sizeof(float));
    for (int64_t i = 0; i < MR && s * MR + i < j->rows; i++)
      for (int64_t b = 0; b < nb; b++) {
        int32_t sum;
        scale[b * MR + i] = quantize_block(j->x + (s * MR + i) * in + b * KB, mfk_min(KB, in - b * KB),
                                           strip + b * KB * MR + i * 4, MR * 4, 128, &sum);
      }
  }
}

static void run_tasks(void *arg, int64_t t0, int64_t t1) {
  const i8_job *j = arg;
  const mfk_i8_weight *w = j->w;
  int64_t nb = w->nb, row_strips = mfk_ceil_div(j->rows, MR), col_strips = mfk_ceil_div(w->out, NR);
  _Alignas(64) float acc[MR * NR];
  for (int64_t t = t0; t < t1; t++) {
    int64_t rb = t / j->col_blocks, cb = t % j->col_blocks;
    for (int64_t cs = cb * COL_STRIPS; cs < mfk_min(col_strips, (cb + 1) * COL_STRIPS); cs++)
      for (int64_t rs = rb * ROW_STRIPS; rs < mfk_min(row_strips, (rb + 1) * ROW_STRIPS); rs++) {
        i8_strips s = {j->apack + rs * strip_bytes(nb, MR), w->packed + cs * strip_bytes(nb, NR),
                       j->ascale + rs * nb * MR, w->scale + cs * nb * NR, w->offset + cs * nb * NR};
        int64_t r0 = rs * MR, c0 = cs * NR, rows = mfk_min(MR, j->rows - r0), cols = mfk_min(NR, w->out - c0);
        if (rows == MR && cols == NR) { /* a whole tile goes straight to y */
          j->uk(nb, &s, j->y + r0 * w->out + c0, w->out);
          continue;
        }
        j->uk(nb, &s, acc, NR);
        for (int64_t i = 0; i < rows; i++)
          memcpy(j->y + (r0 + i) * w->out + c0, acc + i * NR, (size_t)cols * sizeof(float));
      }
  }
}

void mfk_i8_linear(mfk_pool *pool, float *y, const float *x, const mfk_i8_weight *w, int64_t rows,
                   void *scratch) {
  int64_t row_strips = mfk_ceil_div(rows, MR);
  uint8_t *apack = scratch;
  i8_job j = {best_ukernel(), w, x, y, rows, mfk_ceil_div(mfk_ceil_div(w->out, NR), COL_STRIPS), apack,
              (float *)(apack + row_strips * strip_bytes(w->nb, MR))};
  mfk_parallel_for(pool, row_strips, quantize_strips, &j);
  mfk_parallel_for(pool, mfk_ceil_div(row_strips, ROW_STRIPS) * j.col_blocks, run_tasks, &j);
}
