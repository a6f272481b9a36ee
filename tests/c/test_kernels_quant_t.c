/*
 * The quantized matmuls for Q8_0, Q4_0 and Q4_1 weights decoded by hand
 * from the block formats:
 * - transposed (kernels/cpu/quant_t.c): dx = dy W against a double-precision
 *   product, accumulation, shapes that do not fill a tile, and the same bits
 *   on 1, 2 and 3 threads;
 * - forward (kernels/cpu/quant.c): y = x W^T on the int8 activation blocks
 *   against the same products in double, for row counts around the rows
 *   handled per weight load; each row's bits do not depend on the rows
 *   computed with it nor on the thread count;
 * - several weights sharing one input (mfk_qgemm_many) give each the bits
 *   of its own product.
 * Weights go through mfk_qpack, so row counts that do not fill a group of
 * eight check its padding too.
 */
#include "kernel_testing.h"

/* IEEE half bits of a small positive scale (exact for the values used). */
static uint16_t half_of(float x) {
  int e;
  float m = frexpf(x, &e);  /* x = m 2^e, m in [0.5, 1) */
  return (uint16_t)(((e - 1 + 15) << 10) | (uint16_t)((m * 2 - 1) * 1024));
}

/* Random blocks of `type` for a [out, in] weight, packed for the matmul;
 * their values into wf. */
static void *random_weight(mfk_qtype type, int64_t out, int64_t in, double *wf) {
  size_t bytes = mfk_qblock_bytes(type);
  int64_t nb = out * in / 32;
  unsigned char *w = malloc((size_t)nb * bytes);
  for (int64_t i = 0; i < nb; i++) {
    unsigned char *b = w + (size_t)i * bytes;
    float d = 0.015625f * (1 + (i % 5)), m = -0.125f;
    double *y = wf + i * 32;
    if (type == MFK_Q8_0) {
      mfk_block_q8_0 *q = (mfk_block_q8_0 *)b;
      q->d = half_of(d);
      for (int j = 0; j < 32; j++) y[j] = d * (q->qs[j] = (int8_t)(kt_uniform() * 127));
    } else {
      mfk_block_q4_1 *q1 = (mfk_block_q4_1 *)b;
      mfk_block_q4_0 *q0 = (mfk_block_q4_0 *)b;
      uint8_t *qs = type == MFK_Q4_0 ? q0->qs : q1->qs;
      if (type == MFK_Q4_0) q0->d = half_of(d);
      else q1->d = half_of(d), q1->m = half_of(-m) | 0x8000;
      for (int j = 0; j < 16; j++) {
        int lo = (int)((kt_uniform() + 1) * 8) & 15, hi = (int)((kt_uniform() + 1) * 8) & 15;
        qs[j] = (uint8_t)(lo | hi << 4);
        y[j] = type == MFK_Q4_0 ? d * (lo - 8) : d * lo + m;
        y[j + 16] = type == MFK_Q4_0 ? d * (hi - 8) : d * hi + m;
      }
    }
  }
  void *packed = malloc(mfk_qpack_bytes(type, out, in));
  mfk_qpack(type, packed, w, out, in);
  free(w);
  return packed;
}

typedef struct job {
  mfk_qtype type;
  const void *w;
  const float *dy;
  int64_t rows, out, in;
} job;

static void run_t(mfk_pool *pool, void *ctx, float *dx) {
  job *j = ctx;
  mfk_qgemm_t(pool, j->type, dx, 0, j->dy, j->w, j->rows, j->out, j->in);
}

static void check(mfk_qtype type, int64_t rows, int64_t out, int64_t in) {
  double *wf = kt_doubles(out * in), *want = kt_doubles(rows * in);
  void *w = random_weight(type, out, in, wf);
  float *dy = kt_random(rows * out, 1.0f), *dx = kt_random(rows * in, 1.0f), *dx0 = kt_copy(dx, rows * in);
  float *decoded = calloc((size_t)(out * in), sizeof(float));
  char what[96];

  mfk_qdequantize(type, decoded, w, out, in);
  int64_t bad = 0;
  for (int64_t i = 0; i < out * in; i++) bad += decoded[i] != (float)wf[i];
  KT_CHECK(bad == 0, "type %d: %lld decoded weights differ from the block formats", (int)type, (long long)bad);

  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < in; c++) {
      double s = dx0[r * in + c];
      for (int64_t o = 0; o < out; o++) s += (double)dy[r * out + o] * wf[o * in + c];
      want[r * in + c] = s;
    }
  mfk_pool *pool = mfk_pool_new(2);
  mfk_qgemm_t(pool, type, dx, 1, dy, w, rows, out, in);
  snprintf(what, sizeof what, "qgemm_t type %d [%lld x %lld] x [%lld x %lld] accumulate", (int)type,
           (long long)rows, (long long)out, (long long)out, (long long)in);
  kt_close(what, dx, want, rows * in, 1e-4, 1e-4);
  mfk_pool_free(pool);

  job j = {type, w, dy, rows, out, in};
  snprintf(what, sizeof what, "qgemm_t type %d rows %lld", (int)type, (long long)rows);
  kt_same_bits(what, run_t, &j, rows * in);
  free(w), free(wf), free(want), free(dy), free(dx), free(dx0), free(decoded);
}

typedef struct fwd_job {
  mfk_qtype type;
  const void *w;
  const float *x;
  int64_t rows, out, in;
  mfk_block_q8_act *act;
} fwd_job;

static void run_fwd(mfk_pool *pool, void *ctx, float *y) {
  fwd_job *j = ctx;
  mfk_qgemm(pool, j->type, y, 0, j->x, j->w, j->rows, j->out, j->in, j->act);
}

/* The exact value of the forward product on quantized activations, in
 * double: what the kernel computes before float rounding. */
static void forward_reference(double *want, const double *wf, const float *x, int64_t rows,
                              int64_t out, int64_t in) {
  int8_t qs[32];
  double *xq = kt_doubles(rows * in);
  for (int64_t b = 0; b < rows * in / 32; b++) {
    float d = mfk_quantize_q8(x + b * 32, qs);
    for (int j = 0; j < 32; j++) xq[b * 32 + j] = (double)d * qs[j];
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < out; o++) {
      double s = 0;
      for (int64_t c = 0; c < in; c++) s += xq[r * in + c] * wf[o * in + c];
      want[r * out + o] = s;
    }
  free(xq);
}

static void check_forward(mfk_qtype type, int64_t rows, int64_t out, int64_t in) {
  double *wf = kt_doubles(out * in), *want = kt_doubles(rows * out);
  void *w = random_weight(type, out, in, wf);
  float *x = kt_random(rows * in, 1.0f), *y = kt_random(rows * out, 1.0f), *y0 = kt_copy(y, rows * out);
  float *alone = malloc((size_t)out * sizeof(float));
  mfk_block_q8_act *act = malloc((size_t)(rows * in / 32) * sizeof *act);
  char what[96];

  forward_reference(want, wf, x, rows, out, in);
  for (int64_t i = 0; i < rows * out; i++) want[i] += y0[i];
  mfk_pool *pool = mfk_pool_new(2);
  mfk_qgemm(pool, type, y, 1, x, w, rows, out, in, act);
  snprintf(what, sizeof what, "qgemm type %d [%lld x %lld] x [%lld x %lld]^T accumulate", (int)type,
           (long long)rows, (long long)in, (long long)out, (long long)in);
  kt_close(what, y, want, rows * out, 1e-5, 1e-5);

  mfk_qgemm(pool, type, y, 0, x, w, rows, out, in, act);
  int64_t differ = 0;
  for (int64_t r = 0; r < rows; r++) {
    mfk_qgemm(pool, type, alone, 0, x + r * in, w, 1, out, in, act);
    differ += memcmp(alone, y + r * out, (size_t)out * sizeof(float)) != 0;
  }
  KT_CHECK(differ == 0, "qgemm type %d: %lld of %lld rows change when computed alone", (int)type,
           (long long)differ, (long long)rows);
  mfk_pool_free(pool);

  fwd_job j = {type, w, x, rows, out, in, act};
  snprintf(what, sizeof what, "qgemm type %d rows %lld", (int)type, (long long)rows);
  kt_same_bits(what, run_fwd, &j, rows * out);
  free(w), free(wf), free(want), free(x), free(y), free(y0), free(alone), free(act);
}

typedef struct many_job {
  mfk_qweight w[3];
  const float *x;
  int64_t rows, in;
  mfk_block_q8_act *act;
} many_job;

/* The weights' outputs lie one after the other in y. */
static void run_many(mfk_pool *pool, void *ctx, float *y) {
  many_job *j = ctx;
  for (int k = 0; k < 3; k++) j->w[k].y = k == 0 ? y : j->w[k - 1].y + j->rows * j->w[k - 1].out;
  mfk_qgemm_many(pool, 3, j->w, 0, j->x, j->rows, j->in, j->act);
}

static void check_many(int64_t rows, int64_t in) {
  mfk_qtype types[3] = {MFK_Q4_1, MFK_Q8_0, MFK_Q4_0};
  int64_t outs[3] = {64, 21, 35}, total = 0;
  many_job j = {.rows = rows, .in = in};
  for (int k = 0; k < 3; k++) {
    double *wf = kt_doubles(outs[k] * in);
    j.w[k] = (mfk_qweight){types[k], random_weight(types[k], outs[k], in, wf), outs[k], NULL};
    total += rows * outs[k];
    free(wf);
  }
  float *x = kt_random(rows * in, 1.0f), *y = calloc((size_t)total, sizeof(float));
  float *alone = calloc((size_t)total, sizeof(float));
  j.x = x;
  j.act = malloc((size_t)(rows * in / 32) * sizeof *j.act);
  mfk_pool *pool = mfk_pool_new(2);
  run_many(pool, &j, y);
  for (int k = 0, at = 0; k < 3; at += (int)(rows * outs[k]), k++)
    mfk_qgemm(pool, types[k], alone + at, 0, x, j.w[k].packed, rows, outs[k], in, j.act);
  mfk_pool_free(pool);
  KT_CHECK(memcmp(y, alone, (size_t)total * sizeof(float)) == 0,
           "qgemm_many: the shared products differ from the products one by one");
  kt_same_bits("qgemm_many", run_many, &j, total);
  for (int k = 0; k < 3; k++) free((void *)j.w[k].packed);
  free(x), free(y), free(alone), free(j.act);
}

int main(void) {
  mfk_qtype types[] = {MFK_Q8_0, MFK_Q4_0, MFK_Q4_1};
  for (int t = 0; t < 3; t++) {
    check(types[t], 7, 40, 96);     /* less than a tile both ways */
    check(types[t], 33, 300, 160);  /* a partial tile after whole ones */
    for (int rows = 1; rows <= 9; rows += 2) check_forward(types[t], rows, 37, 160);
    check_forward(types[t], 4, 200, 96);
  }
  check_many(1, 128);
  check_many(6, 64);
  if (!kt_failures) printf("ok\n");
  return kt_failures != 0;
}
