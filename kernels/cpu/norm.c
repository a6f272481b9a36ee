/*
 * RMSNorm and LayerNorm over rows, forward and backward.
 *
 * Row statistics are accumulated in double, one row per range, in element
 * order. Parameter gradients are sums over rows: each thread owns a slice of
 * columns and adds the rows in order, so the sum never depends on how rows
 * were split among threads.
 */
#include "cpu/common.h"

typedef struct norm_job {
  float *y, *dx, *dw, *db, *mean, *rstd;
  const float *x, *w, *b, *dy, *mean_in, *rstd_in;
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

/* out[j] += sum over rows of term(row, j): rows in order, in double, columns split
 * among threads. */
typedef float (*col_term_fn)(const norm_job *job, int64_t row, int64_t col);
typedef struct col_job { const norm_job *job; col_term_fn term; float *out; } col_job;

static void run_cols(void *arg, int64_t c0, int64_t c1) {
  enum { COLS = 64 }; /* a slice of double accumulators that stays in registers and L1 */
  const col_job *cj = arg;
  const norm_job *job = cj->job;
  for (int64_t s = c0; s < c1; s += COLS) {
    int64_t width = mfk_min(COLS, c1 - s);
    double acc[COLS] = { 0 };
    for (int64_t r = 0; r < job->n; r++)
      for (int64_t c = 0; c < width; c++) acc[c] += cj->term(job, r, s + c);
    for (int64_t c = 0; c < width; c++) cj->out[s + c] += (float)acc[c];
  }
}

static void sum_over_rows(mfk_pool *pool, const norm_job *job, col_term_fn term, float *out) {
  if (!out) return;
  col_job cj = { job, term, out };
  mfk_parallel_for(pool, job->d, run_cols, &cj);
}

/* ---- RMSNorm ---- */
static void rms_fwd_row(const norm_job *job, int64_t r) {
  const float *x = job->x + r * job->d;
  float *y = job->y + r * job->d;
  double ss = 0;
  for (int64_t j = 0; j < job->d; j++) ss += (double)x[j] * x[j];
  float rstd = (float)(1.0 / sqrt(ss / (double)job->d + job->eps));
  for (int64_t j = 0; j < job->d; j++) y[j] = x[j] * rstd * job->w[j];
  if (job->rstd) job->rstd[r] = rstd;
}

void mfk_rmsnorm_fwd(mfk_pool *pool, float *y, float *rstd, const float *x, const float *w,
                     int64_t n, int64_t d, float eps) {
  norm_job job = { .y = y, .rstd = rstd, .x = x, .w = w, .n = n, .d = d, .eps = eps };
  for_each_row(pool, &job, rms_fwd_row);
}

/* dx = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)) */
static void rms_bwd_row(const norm_job *job, int64_t r) {
  const float *x = job->x + r * job->d, *dy = job->dy + r * job->d;
  float *dx = job->dx + r * job->d;
  double dot = 0;
  for (int64_t j = 0; j < job->d; j++) dot += (double)dy[j] * job->w[j] * x[j];
  float rstd = job->rstd_in[r];
  float k = (float)(dot / (double)job->d) * rstd * rstd;
  for (int64_t j = 0; j < job->d; j++) dx[j] = rstd * (job->w[j] * dy[j] - x[j] * k);
}

static float rms_dw_term(const norm_job *job, int64_t r, int64_t c) {
  return job->dy[r * job->d + c] * (job->x[r * job->d + c] * job->rstd_in[r]);
}

void mfk_rmsnorm_bwd(mfk_pool *pool, float *dx, float *dw, const float *dy, const float *x,
                     const float *w, const float *rstd, int64_t n, int64_t d) {
  norm_job job = { .dx = dx, .dy = dy, .x = x, .w = w, .rstd_in = rstd, .n = n, .d = d };
  if (dx) for_each_row(pool, &job, rms_bwd_row);
  sum_over_rows(pool, &job, rms_dw_term, dw);
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

static float ln_dw_term(const norm_job *job, int64_t r, int64_t c) {
  return job->dy[r * job->d + c] * ln_xhat(job, r, c);
}

static float ln_db_term(const norm_job *job, int64_t r, int64_t c) { return job->dy[r * job->d + c]; }

void mfk_layernorm_bwd(mfk_pool *pool, float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, const float *mean, const float *rstd,
                       int64_t n, int64_t d) {
  norm_job job = { .dx = dx, .dy = dy, .x = x, .w = w, .mean_in = mean, .rstd_in = rstd, .n = n,
                   .d = d };
  if (dx) for_each_row(pool, &job, ln_bwd_row);
  sum_over_rows(pool, &job, ln_dw_term, dw);
  sum_over_rows(pool, &job, ln_db_term, db);
}
