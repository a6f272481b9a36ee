/*
 * RMSNorm and LayerNorm over rows, forward and backward.
 *
 * Row statistics are accumulated in double, one row per range (RMSNorm's in
 * eight interleaved lanes, LayerNorm's in element order). Parameter
 * gradients are sums over rows: each thread owns a slice of columns and adds
 * the rows in order, so the sum never depends on how rows were split among
 * threads.
 */
#include "cpu/common.h"

typedef struct norm_job {
  float *y, *dx, *dw, *db, *mean, *rstd, *sum;
  const float *x, *w, *b, *dy, *mean_in, *rstd_in, *bias, *res;
  int64_t n, d;
  float eps;
} norm_job;

/* Rows per unit of work, about MFK_BLOCK elements. */
static int64_t rows_per_block(int64_t d) { return mfk_max(1, MFK_BLOCK / mfk_max(d, 1)); }

typedef void (*row_fn)(const norm_job *job, int64_t row);
typedef struct row_job { const norm_job *job; row_fn fn; } row_job;

static void run_rows(void *arg, int64_t b0, int64_t b1) {
  const row_job *rj = arg;
  int64_t per = rows_per_block(rj->job->d);
  for (int64_t r = b0 * per; r < mfk_min(b1 * per, rj->job->n); r++) rj->fn(rj->job, r);
}

static void for_each_row(mfk_pool *pool, const norm_job *job, row_fn fn) {
  row_job rj = { job, fn };
  mfk_parallel_for(pool, mfk_ceil_div(job->n, rows_per_block(job->d)), run_rows, &rj);
}

/* out[c] += sum over rows r of dy[r, c] * ((x[r, c] - shift[r]) * rstd[r])
 * (shift NULL: 0), rows in order, in double. Threads take slices of COLS
 * columns; a full slice sums in vector registers, eight floats at a time
 * widened to double, the columns past the last full slice one at a time,
 * each term formed the same way. */
enum { COLS = 32 };
typedef float v8f __attribute__((vector_size(8 * sizeof(float)), aligned(4), may_alias));
typedef double v8d __attribute__((vector_size(8 * sizeof(double))));
typedef struct col_job { const norm_job *job; const float *shift; float *out; } col_job;

MFK_INLINE void sum_slice(const norm_job *job, const float *shift, float *out, int64_t c0) {
  v8d acc[COLS / 8] = { 0 };
  for (int64_t r = 0; r < job->n; r++) {
    const float *dy = job->dy + r * job->d + c0, *x = job->x + r * job->d + c0;
    float sh = shift ? shift[r] : 0.0f, rstd = job->rstd_in[r];
    for (int v = 0; v < COLS / 8; v++) {
      v8f term = *(const v8f *)(dy + 8 * v) * ((*(const v8f *)(x + 8 * v) - sh) * rstd);
      acc[v] += __builtin_convertvector(term, v8d);
    }
  }
  for (int c = 0; c < COLS; c++) out[c0 + c] += (float)acc[c / 8][c % 8];
}

MFK_INLINE void sum_column(const norm_job *job, const float *shift, float *out, int64_t c) {
  double acc = 0;
  for (int64_t r = 0; r < job->n; r++)
    acc += job->dy[r * job->d + c] * ((job->x[r * job->d + c] - (shift ? shift[r] : 0.0f)) * job->rstd_in[r]);
  out[c] += (float)acc;
}

MFK_SIMD static void run_cols(void *arg, int64_t s0, int64_t s1) {
  const col_job cj = *(const col_job *)arg;
  const norm_job job = *cj.job;
  for (int64_t s = s0; s < s1; s++) {
    int64_t c0 = s * COLS;
    if (c0 + COLS <= job.d) sum_slice(&job, cj.shift, cj.out, c0);
    else for (int64_t c = c0; c < job.d; c++) sum_column(&job, cj.shift, cj.out, c);
  }
}

static void weight_grad(mfk_pool *pool, const norm_job *job, const float *shift, float *out) {
  if (!out) return;
  col_job cj = { job, shift, out };
  mfk_parallel_for(pool, mfk_ceil_div(job->d, COLS), run_cols, &cj);
}

/* Sum over j < d of a[j] * b[j] * (c ? c[j] : 1) in double, in eight
 * interleaved lanes: a fixed order that vectorises. */
MFK_INLINE double sum_products(const float *a, const float *b, const float *c, int64_t d) {
  v8d lanes = { 0 };
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    v8d p = __builtin_convertvector(*(const v8f *)(a + j), v8d) *
            __builtin_convertvector(*(const v8f *)(b + j), v8d);
    lanes += c ? p * __builtin_convertvector(*(const v8f *)(c + j), v8d) : p;
  }
  double total = 0;
  for (; j < d; j++) total += (double)a[j] * b[j] * (c ? c[j] : 1.0f);
  for (int l = 0; l < 8; l++) total += lanes[l];
  return total;
}

/* ---- RMSNorm ---- */
MFK_SIMD static void rms_fwd_row(const norm_job *job, int64_t r) {
  const norm_job j = *job;
  const float *x = j.x + r * j.d;
  float *y = j.y + r * j.d;
  float rstd = (float)(1.0 / sqrt(sum_products(x, x, NULL, j.d) / (double)j.d + j.eps));
  for (int64_t i = 0; i < j.d; i++) y[i] = x[i] * rstd * j.w[i];
  if (j.rstd) j.rstd[r] = rstd;
}

void mfk_rmsnorm_fwd(mfk_pool *pool, float *y, float *rstd, const float *x, const float *w,
                     int64_t n, int64_t d, float eps) {
  norm_job job = { .y = y, .rstd = rstd, .x = x, .w = w, .n = n, .d = d, .eps = eps };
  for_each_row(pool, &job, rms_fwd_row);
}

/* dx = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)) */
MFK_SIMD static void rms_bwd_row(const norm_job *job, int64_t r) {
  const norm_job j = *job;
  const float *x = j.x + r * j.d, *dy = j.dy + r * j.d;
  float *dx = j.dx + r * j.d;
  float rstd = j.rstd_in[r];
  float k = (float)(sum_products(dy, j.w, x, j.d) / (double)j.d) * rstd * rstd;
  for (int64_t i = 0; i < j.d; i++) dx[i] = rstd * (j.w[i] * dy[i] - x[i] * k);
}

void mfk_rmsnorm_bwd(mfk_pool *pool, float *dx, float *dw, const float *dy, const float *x,
                     const float *w, const float *rstd, int64_t n, int64_t d) {
  norm_job job = { .dx = dx, .dy = dy, .x = x, .w = w, .rstd_in = rstd, .n = n, .d = d };
  if (dx) for_each_row(pool, &job, rms_bwd_row);
  weight_grad(pool, &job, NULL, dw);
}

/* ---- LayerNorm ---- */
static void ln_fwd_row(const norm_job *job, int64_t r) {
  const float *x = job->x + r * job->d;
  float *y = job->y + r * job->d;
  double sum = 0, ss = 0;
  for (int64_t j = 0; j < job->d; j++) sum += x[j];
  double mean = sum / (double)job->d;
  for (int64_t j = 0; j < job->d; j++) ss += (x[j] - mean) * (x[j] - mean);
  float m = (float)mean, rstd = (float)(1.0 / sqrt(ss / (double)job->d + job->eps));
  for (int64_t j = 0; j < job->d; j++) {
    float v = (x[j] - m) * rstd * job->w[j];
    y[j] = job->b ? v + job->b[j] : v;
  }
  if (job->mean) job->mean[r] = m;
  if (job->rstd) job->rstd[r] = rstd;
}

void mfk_layernorm_fwd(mfk_pool *pool, float *y, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, int64_t n, int64_t d, float eps) {
  norm_job job = { .y = y, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b, .n = n, .d = d,
                   .eps = eps };
  for_each_row(pool, &job, ln_fwd_row);
}

/* x += bias + res, then LayerNorm into y. The sum is written back first,
 * so y may be res. */
MFK_SIMD static void ln_residual_row(const norm_job *job, int64_t r) {
  const norm_job j = *job;
  float *x = j.sum + r * j.d, *y = j.y + r * j.d;
  const float *res = j.res + r * j.d;
  for (int64_t i = 0; i < j.d; i++) x[i] = x[i] + j.bias[i] + res[i];
  v8d lanes = { 0 };
  int64_t i = 0;
  for (; i + 8 <= j.d; i += 8) lanes += __builtin_convertvector(*(const v8f *)(x + i), v8d);
  double sum = 0;
  for (; i < j.d; i++) sum += x[i];
  for (int l = 0; l < 8; l++) sum += lanes[l];
  float m = (float)(sum / (double)j.d);
  for (i = 0; i < j.d; i++) y[i] = x[i] - m; /* centred, in y for the moment */
  float rstd = (float)(1.0 / sqrt(sum_products(y, y, NULL, j.d) / (double)j.d + j.eps));
  for (i = 0; i < j.d; i++) y[i] = fmaf(y[i] * rstd, j.w[i], j.b[i]); /* fmaf: one rounding in every clone */
}

void mfk_layernorm_residual_fwd(mfk_pool *pool, float *y, float *x, const float *bias, const float *res,
                                const float *w, const float *b, int64_t n, int64_t d, float eps) {
  norm_job job = { .y = y, .sum = x, .res = res, .bias = bias, .w = w, .b = b, .n = n, .d = d, .eps = eps };
  for_each_row(pool, &job, ln_residual_row);
}

static float ln_xhat(const norm_job *job, int64_t r, int64_t c) {
  return (job->x[r * job->d + c] - job->mean_in[r]) * job->rstd_in[r];
}

/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = w * dy */
static void ln_bwd_row(const norm_job *job, int64_t r) {
  const float *dy = job->dy + r * job->d;
  float *dx = job->dx + r * job->d;
  double sum_g = 0, sum_gx = 0;
  for (int64_t j = 0; j < job->d; j++) {
    double g = (double)job->w[j] * dy[j];
    sum_g += g;
    sum_gx += g * ln_xhat(job, r, j);
  }
  float mean_g = (float)(sum_g / (double)job->d), mean_gx = (float)(sum_gx / (double)job->d);
  for (int64_t j = 0; j < job->d; j++)
    dx[j] = job->rstd_in[r] * (job->w[j] * dy[j] - mean_g - ln_xhat(job, r, j) * mean_gx);
}

void mfk_layernorm_bwd(mfk_pool *pool, float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, const float *mean, const float *rstd,
                       int64_t n, int64_t d) {
  norm_job job = { .dx = dx, .dy = dy, .x = x, .w = w, .mean_in = mean, .rstd_in = rstd, .n = n,
                   .d = d };
  if (dx) for_each_row(pool, &job, ln_bwd_row);
  weight_grad(pool, &job, mean, dw);
  if (db) mfk_bias_bwd(pool, db, dy, n, d); /* the column sums of dy */
}
