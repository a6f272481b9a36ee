/* The low-rank product kernels (mfk_lowrank_down/up/grad) against double
 * precision references, with and without a dropout mask, on shapes with
 * column tails, odd row counts and ranks that are not a multiple of the
 * register tile; and their bits on pools of 1, 2 and 3 threads. */
#include "kernel_testing.h"

typedef struct shape {
  int64_t rows, n, r;
} shape;

static const shape shapes[] = {
  { 1, 1, 1 }, { 5, 17, 3 }, { 7, 40, 8 }, { 33, 576, 8 }, { 9, 70, 11 }, { 4, 100, 16 }, { 64, 131, 9 },
};
enum { NSHAPES = sizeof shapes / sizeof shapes[0] };

typedef struct operands {
  shape s;
  float *x, *v, *h, *g;
  uint64_t *keep; /* NULL: no mask */
  float alpha;
} operands;

static int kept(const operands *o, int64_t i, int64_t c) {
  int64_t bit = i * o->s.n + c;
  return !o->keep || (o->keep[bit / 64] >> bit % 64 & 1);
}

static operands make(shape s, int masked) {
  operands o = { .s = s, .alpha = 0.75f };
  o.x = kt_random(s.rows * s.n, 1.0f);
  o.v = kt_random(s.r * s.n, 1.0f);
  o.h = kt_random(s.rows * s.r, 1.0f);
  o.g = kt_random(s.r * s.n, 1.0f);
  if (masked) {
    int64_t words = (s.rows * s.n + 63) / 64;
    o.keep = malloc((size_t)words * sizeof *o.keep);
    mfk_dropout_mask(NULL, o.keep, words, 99, 16384); /* keeps about 3 in 4 */
  }
  return o;
}

static void release(operands *o) {
  free(o->x);
  free(o->v);
  free(o->h);
  free(o->g);
  free(o->keep);
}

static void run_down(mfk_pool *pool, void *ctx, float *out) {
  const operands *o = ctx;
  mfk_lowrank_down(pool, out, o->x, o->keep, o->v, o->s.rows, o->s.n, o->s.r, o->alpha);
}

/* out starts as x (zero when kt_same_bits runs it): up accumulates. */
static void run_up(mfk_pool *pool, void *ctx, float *out) {
  const operands *o = ctx;
  mfk_lowrank_up(pool, out, o->h, o->v, o->keep, o->s.rows, o->s.n, o->s.r, o->alpha);
}

/* G as LoRA's A gradient lies ([r, n]) ... */
static void run_grad_rows(mfk_pool *pool, void *ctx, float *out) {
  const operands *o = ctx;
  mfk_lowrank_grad(pool, out, o->s.n, 1, o->h, o->x, o->keep, o->s.rows, o->s.n, o->s.r, o->alpha);
}

/* ... and as B's ([n, r]). */
static void run_grad_cols(mfk_pool *pool, void *ctx, float *out) {
  const operands *o = ctx;
  mfk_lowrank_grad(pool, out, 1, o->s.r, o->h, o->x, o->keep, o->s.rows, o->s.n, o->s.r, o->alpha);
}

static void check_down(const operands *o, const char *what) {
  shape s = o->s;
  double *want = kt_doubles(s.rows * s.r);
  float *got = calloc((size_t)(s.rows * s.r), sizeof *got);
  for (int64_t i = 0; i < s.rows; i++)
    for (int64_t j = 0; j < s.r; j++) {
      double sum = 0;
      for (int64_t c = 0; c < s.n; c++)
        if (kept(o, i, c)) sum += (double)o->x[i * s.n + c] * o->v[j * s.n + c];
      want[i * s.r + j] = o->alpha * sum;
    }
  mfk_lowrank_down(NULL, got, o->x, o->keep, o->v, s.rows, s.n, s.r, o->alpha);
  kt_close(what, got, want, s.rows * s.r, 1e-5, 1e-5 * s.n);
  kt_same_bits(what, run_down, (void *)o, s.rows * s.r);
  free(want);
  free(got);
}

static void check_up(const operands *o, const char *what) {
  shape s = o->s;
  double *want = kt_doubles(s.rows * s.n);
  float *got = kt_copy(o->x, s.rows * s.n);
  for (int64_t i = 0; i < s.rows; i++)
    for (int64_t c = 0; c < s.n; c++) {
      double sum = 0;
      for (int64_t j = 0; j < s.r; j++) sum += (double)o->h[i * s.r + j] * o->v[j * s.n + c];
      want[i * s.n + c] = o->x[i * s.n + c] + (kept(o, i, c) ? o->alpha * sum : 0);
    }
  mfk_lowrank_up(NULL, got, o->h, o->v, o->keep, s.rows, s.n, s.r, o->alpha);
  kt_close(what, got, want, s.rows * s.n, 1e-5, 1e-5 * s.r);
  kt_same_bits(what, run_up, (void *)o, s.rows * s.n);
  free(want);
  free(got);
}

/* transposed: G(j, c) at G[c * r + j]. */
static void check_grad(const operands *o, int transposed, const char *what) {
  shape s = o->s;
  double *want = kt_doubles(s.r * s.n);
  float *got = malloc((size_t)(s.r * s.n) * sizeof *got);
  for (int64_t j = 0; j < s.r; j++)
    for (int64_t c = 0; c < s.n; c++) {
      int64_t at = transposed ? c * s.r + j : j * s.n + c;
      double sum = 0;
      for (int64_t i = 0; i < s.rows; i++)
        if (kept(o, i, c)) sum += (double)o->h[i * s.r + j] * o->x[i * s.n + c];
      want[at] = o->g[at] + o->alpha * sum;
      got[at] = o->g[at];
    }
  if (transposed) mfk_lowrank_grad(NULL, got, 1, s.r, o->h, o->x, o->keep, s.rows, s.n, s.r, o->alpha);
  else mfk_lowrank_grad(NULL, got, s.n, 1, o->h, o->x, o->keep, s.rows, s.n, s.r, o->alpha);
  kt_close(what, got, want, s.r * s.n, 1e-5, 1e-5 * s.rows);
  kt_same_bits(what, transposed ? run_grad_cols : run_grad_rows, (void *)o, s.r * s.n);
  free(want);
  free(got);
}

int main(void) {
  char what[96];
  for (int masked = 0; masked <= 1; masked++)
    for (int k = 0; k < NSHAPES; k++) {
      operands o = make(shapes[k], masked);
      const char *m = masked ? "masked" : "plain";
      snprintf(what, sizeof what, "down %s %lldx%lld r %lld", m, (long long)o.s.rows, (long long)o.s.n,
               (long long)o.s.r);
      check_down(&o, what);
      snprintf(what, sizeof what, "up %s %lldx%lld r %lld", m, (long long)o.s.rows, (long long)o.s.n,
               (long long)o.s.r);
      check_up(&o, what);
      for (int t = 0; t <= 1; t++) {
        snprintf(what, sizeof what, "grad%s %s %lldx%lld r %lld", t ? "^T" : "", m, (long long)o.s.rows,
                 (long long)o.s.n, (long long)o.s.r);
        check_grad(&o, t, what);
      }
      release(&o);
    }
  /* a mask that drops everything leaves nothing of X */
  operands o = make((shape){ 3, 50, 4 }, 1);
  memset(o.keep, 0, (size_t)((3 * 50 + 63) / 64) * sizeof *o.keep);
  float out[12];
  mfk_lowrank_down(NULL, out, o.x, o.keep, o.v, 3, 50, 4, 1.0f);
  for (int i = 0; i < 12; i++) KT_CHECK(out[i] == 0.0f, "an all-dropped row gives %g, not 0", out[i]);
  release(&o);
  if (!kt_failures) printf("ok\n");
  return kt_failures != 0;
}
