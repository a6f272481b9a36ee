/* The low-rank product kernels against double precision references: down,
 * up and grad with one, two and three terms that share X (each with its own
 * factor, alpha and dropout mask, or none), and down_grad, on shapes with
 * column tails, odd row counts, ranks that are not a multiple of the
 * register tile and rows enough for several of down_grad's chunks. Each
 * term must give the bits of its call alone (up: of the calls one after
 * the other), and every kernel the same bits on pools of 1, 2 and 3
 * threads. */
#include "kernel_testing.h"

typedef struct shape {
  int64_t rows, n, r;
} shape;

static const shape shapes[] = {
  { 1, 1, 1 },  { 5, 17, 3 },   { 7, 40, 8 },     { 33, 576, 8 },   { 9, 70, 11 },
  { 4, 100, 16 }, { 64, 131, 9 }, { 300, 400, 8 }, { 257, 576, 5 },
};
enum { NSHAPES = sizeof shapes / sizeof shapes[0], MAX_TERMS = 3 };

/* One adapter's operands. */
typedef struct adapter {
  float *v, *h, *g;   /* V [r, n], H [rows, r], G's values before grad [r * n] */
  uint64_t *keep;     /* NULL: no mask */
  float alpha;
} adapter;

typedef struct problem {
  shape s;
  float *x; /* X [rows, n], and Y's values before up */
  int n_terms;
  adapter a[MAX_TERMS];
  int transposed; /* G(j, c) at G[c * r + j] (LoRA's B) rather than G[j * n + c] (A) */
} problem;

/* masked: bit k set when term k has a dropout mask, each its own. */
static problem make(shape s, int n_terms, int masked) {
  problem p = { .s = s, .n_terms = n_terms };
  p.x = kt_random(s.rows * s.n, 1.0f);
  for (int k = 0; k < n_terms; k++) {
    adapter *a = &p.a[k];
    a->v = kt_random(s.r * s.n, 1.0f);
    a->h = kt_random(s.rows * s.r, 1.0f);
    a->g = kt_random(s.r * s.n, 1.0f);
    a->alpha = 0.75f - 0.5f * k;
    if (masked >> k & 1) {
      int64_t words = (s.rows * s.n + 63) / 64;
      a->keep = malloc((size_t)words * sizeof *a->keep);
      mfk_dropout_mask(NULL, a->keep, words, 99 + k, 16384); /* keeps about 3 in 4 */
    }
  }
  return p;
}

static void release(problem *p) {
  free(p->x);
  for (int k = 0; k < p->n_terms; k++) {
    free(p->a[k].v);
    free(p->a[k].h);
    free(p->a[k].g);
    free(p->a[k].keep);
  }
}

static int kept(const adapter *a, int64_t n, int64_t i, int64_t c) {
  int64_t bit = i * n + c;
  return !a->keep || (a->keep[bit / 64] >> bit % 64 & 1);
}

/* Where G(j, c) lies. */
static int64_t g_at(const problem *p, int64_t j, int64_t c) {
  return p->transposed ? c * p->s.r + j : j * p->s.n + c;
}

static void grad_strides(const problem *p, int64_t *g_j, int64_t *g_c) {
  *g_j = p->transposed ? 1 : p->s.n;
  *g_c = p->transposed ? p->s.r : 1;
}

/* The terms of p, with term k's out at out + k * out_size (out may be NULL). */
static void terms(const problem *p, mfk_lowrank_term *t, float *out, int64_t out_size) {
  for (int k = 0; k < p->n_terms; k++)
    t[k] = (mfk_lowrank_term){ .out = out ? out + k * out_size : NULL, .h = p->a[k].h, .v = p->a[k].v,
                               .keep = p->a[k].keep, .alpha = p->a[k].alpha };
}

/* The first n floats of got and want are the same bits. */
static void same_bits(const char *what, const float *got, const float *want, int64_t n) {
  int64_t i = 0;
  while (i < n && memcmp(got + i, want + i, sizeof(float)) == 0) i++;
  KT_CHECK(i == n, "%s: float %lld differs from the term's call alone", what, (long long)i);
}

/* ---- the kernels as kt_same_bits runs them: every output in out ---- */

static void run_down(mfk_pool *pool, void *ctx, float *out) {
  const problem *p = ctx;
  mfk_lowrank_term t[MAX_TERMS];
  terms(p, t, out, p->s.rows * p->s.r);
  mfk_lowrank_down_terms(pool, p->n_terms, t, p->x, p->s.rows, p->s.n, p->s.r);
}

static void run_up(mfk_pool *pool, void *ctx, float *out) {
  const problem *p = ctx;
  mfk_lowrank_term t[MAX_TERMS];
  terms(p, t, NULL, 0);
  mfk_lowrank_up_terms(pool, out, p->n_terms, t, p->s.rows, p->s.n, p->s.r);
}

static void run_grad(mfk_pool *pool, void *ctx, float *out) {
  const problem *p = ctx;
  mfk_lowrank_term t[MAX_TERMS];
  int64_t g_j, g_c;
  terms(p, t, out, p->s.r * p->s.n);
  grad_strides(p, &g_j, &g_c);
  mfk_lowrank_grad_terms(pool, p->n_terms, t, g_j, g_c, p->x, p->s.rows, p->s.n, p->s.r);
}

/* D = alpha_0 X V_0^T into out, then G += alpha_1 H_0^T X. */
static void run_down_grad(mfk_pool *pool, void *ctx, float *out) {
  const problem *p = ctx;
  int64_t g_j, g_c;
  grad_strides(p, &g_j, &g_c);
  mfk_lowrank_down_grad(pool, out, p->a[0].v, p->a[0].alpha, out + p->s.rows * p->s.r, g_j, g_c, p->a[0].h,
                        p->a[1].alpha, p->x, p->s.rows, p->s.n, p->s.r);
}

/* ---- references, in double ---- */

/* want[i, j] = alpha * sum_c keep(X)[i, c] V[j, c] */
static void ref_down(const problem *p, const adapter *a, double *want) {
  shape s = p->s;
  for (int64_t i = 0; i < s.rows; i++)
    for (int64_t j = 0; j < s.r; j++) {
      double sum = 0;
      for (int64_t c = 0; c < s.n; c++)
        if (kept(a, s.n, i, c)) sum += (double)p->x[i * s.n + c] * a->v[j * s.n + c];
      want[i * s.r + j] = a->alpha * sum;
    }
}

/* want(j, c) = G(j, c) + alpha * sum_i H[i, j] keep(X)[i, c] */
static void ref_grad(const problem *p, const adapter *a, double *want) {
  shape s = p->s;
  for (int64_t j = 0; j < s.r; j++)
    for (int64_t c = 0; c < s.n; c++) {
      double sum = 0;
      for (int64_t i = 0; i < s.rows; i++)
        if (kept(a, s.n, i, c)) sum += (double)a->h[i * s.r + j] * p->x[i * s.n + c];
      want[g_at(p, j, c)] = a->g[g_at(p, j, c)] + a->alpha * sum;
    }
}

/* ---- checks ---- */

static void check_down(const problem *p, const char *what) {
  shape s = p->s;
  int64_t size = s.rows * s.r;
  double *want = kt_doubles(size);
  float *got = calloc((size_t)(p->n_terms * size), sizeof *got), *alone = calloc((size_t)size, sizeof *alone);
  mfk_lowrank_term t[MAX_TERMS];
  terms(p, t, got, size);
  mfk_lowrank_down_terms(NULL, p->n_terms, t, p->x, s.rows, s.n, s.r);
  for (int k = 0; k < p->n_terms; k++) {
    ref_down(p, &p->a[k], want);
    kt_close(what, got + k * size, want, size, 1e-5, 1e-6 * s.n);
    mfk_lowrank_term one = t[k];
    one.out = alone;
    mfk_lowrank_down_terms(NULL, 1, &one, p->x, s.rows, s.n, s.r);
    same_bits(what, got + k * size, alone, size);
  }
  kt_same_bits(what, run_down, (void *)p, p->n_terms * size);
  free(want);
  free(got);
  free(alone);
}

static void check_up(const problem *p, const char *what) {
  shape s = p->s;
  int64_t size = s.rows * s.n;
  double *want = kt_doubles(size);
  float *got = kt_copy(p->x, size), *in_turn = kt_copy(p->x, size);
  for (int64_t i = 0; i < s.rows; i++)
    for (int64_t c = 0; c < s.n; c++) {
      double y = p->x[i * s.n + c];
      for (int k = 0; k < p->n_terms; k++) {
        const adapter *a = &p->a[k];
        double sum = 0;
        for (int64_t j = 0; j < s.r; j++) sum += (double)a->h[i * s.r + j] * a->v[j * s.n + c];
        if (kept(a, s.n, i, c)) y += a->alpha * sum;
      }
      want[i * s.n + c] = y;
    }
  mfk_lowrank_term t[MAX_TERMS];
  terms(p, t, NULL, 0);
  mfk_lowrank_up_terms(NULL, got, p->n_terms, t, s.rows, s.n, s.r);
  kt_close(what, got, want, size, 1e-5, 1e-6 * s.r * p->n_terms);
  for (int k = 0; k < p->n_terms; k++) mfk_lowrank_up_terms(NULL, in_turn, 1, &t[k], s.rows, s.n, s.r);
  same_bits(what, got, in_turn, size);
  kt_same_bits(what, run_up, (void *)p, size);
  free(want);
  free(got);
  free(in_turn);
}

static void check_grad(const problem *p, const char *what) {
  shape s = p->s;
  int64_t size = s.r * s.n, g_j, g_c;
  grad_strides(p, &g_j, &g_c);
  double *want = kt_doubles(size);
  float *got = malloc((size_t)(p->n_terms * size) * sizeof *got);
  for (int k = 0; k < p->n_terms; k++) memcpy(got + k * size, p->a[k].g, (size_t)size * sizeof *got);
  mfk_lowrank_term t[MAX_TERMS];
  terms(p, t, got, size);
  mfk_lowrank_grad_terms(NULL, p->n_terms, t, g_j, g_c, p->x, s.rows, s.n, s.r);
  for (int k = 0; k < p->n_terms; k++) {
    ref_grad(p, &p->a[k], want);
    kt_close(what, got + k * size, want, size, 1e-5, 1e-6 * s.rows);
    float *alone = kt_copy(p->a[k].g, size);
    mfk_lowrank_term one = t[k];
    one.out = alone;
    mfk_lowrank_grad_terms(NULL, 1, &one, g_j, g_c, p->x, s.rows, s.n, s.r);
    same_bits(what, got + k * size, alone, size);
    free(alone);
  }
  kt_same_bits(what, run_grad, (void *)p, p->n_terms * size);
  free(want);
  free(got);
}

/* Needs two terms: V_0, H_0 and alpha_0 for D, alpha_1 for G. */
static void check_down_grad(const problem *p, const char *what) {
  shape s = p->s;
  int64_t d_size = s.rows * s.r, g_size = s.r * s.n;
  double *want = kt_doubles(d_size + g_size);
  float *got = malloc((size_t)(d_size + g_size) * sizeof *got);
  adapter a = p->a[0];
  ref_down(p, &a, want);
  a.alpha = p->a[1].alpha;
  ref_grad(p, &a, want + d_size);
  memcpy(got + d_size, a.g, (size_t)g_size * sizeof *got);
  run_down_grad(NULL, (void *)p, got);
  kt_close(what, got, want, d_size, 1e-5, 1e-6 * s.n);
  kt_close(what, got + d_size, want + d_size, g_size, 1e-5, 1e-6 * s.rows);
  kt_same_bits(what, run_down_grad, (void *)p, d_size + g_size);
  free(want);
  free(got);
}

/* Term counts, and which terms have masks (bit k for term k). */
static const struct {
  int n_terms, masked;
} cases[] = { { 1, 0 }, { 1, 1 }, { 2, 0 }, { 2, 3 }, { 2, 2 }, { 3, 0 }, { 3, 7 }, { 3, 5 } };
enum { NCASES = sizeof cases / sizeof cases[0] };

int main(void) {
  char what[128];
  for (int k = 0; k < NSHAPES; k++)
    for (int c = 0; c < NCASES; c++) {
      problem p = make(shapes[k], cases[c].n_terms, cases[c].masked);
      int len = snprintf(what, sizeof what, "%lldx%lld r %lld, %d terms, masks %d: ", (long long)p.s.rows,
                         (long long)p.s.n, (long long)p.s.r, p.n_terms, cases[c].masked);
      snprintf(what + len, sizeof what - len, "down");
      check_down(&p, what);
      snprintf(what + len, sizeof what - len, "up");
      check_up(&p, what);
      for (p.transposed = 0; p.transposed <= 1; p.transposed++) {
        snprintf(what + len, sizeof what - len, "grad%s", p.transposed ? "^T" : "");
        check_grad(&p, what);
        if (p.n_terms == 2 && !cases[c].masked) { /* down_grad takes no mask */
          snprintf(what + len, sizeof what - len, "down_grad%s", p.transposed ? "^T" : "");
          check_down_grad(&p, what);
        }
      }
      release(&p);
    }
  /* a mask that drops everything leaves nothing of X */
  problem p = make((shape){ 3, 50, 4 }, 1, 1);
  memset(p.a[0].keep, 0, (size_t)((3 * 50 + 63) / 64) * sizeof *p.a[0].keep);
  float out[12];
  mfk_lowrank_term t = { .out = out, .v = p.a[0].v, .keep = p.a[0].keep, .alpha = 1.0f };
  mfk_lowrank_down_terms(NULL, 1, &t, p.x, 3, 50, 4);
  for (int i = 0; i < 12; i++) KT_CHECK(out[i] == 0.0f, "an all-dropped row gives %g, not 0", out[i]);
  release(&p);
  if (!kt_failures) printf("ok\n");
  return kt_failures != 0;
}
