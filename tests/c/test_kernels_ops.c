/* Every non-GEMM, non-attention kernel: forward results against double
 * references on small odd shapes, backward passes against central
 * differences (tolerances at each check), and the same bits on 1, 2 and 3
 * threads on inputs large enough to be split. */
#include "kernel_testing.h"

enum { N = 7, D = 13 }; /* rows and width of the small cases */

/* ---- the scalar losses the gradient checks differentiate ---- */
typedef struct probe {
  int kind;
  float *x, *w, *b, *r, *y;
  const int32_t *pos, *targets;
  int64_t n, d;
} probe;

enum { RMS, LN, ROPE, SWIGLU, GELU_TANH, GELU_ERF, XENT };

static double weighted(const float *y, const float *r, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)y[i] * r[i];
  return s;
}

static double probe_loss(void *arg) {
  probe *p = arg;
  int64_t count;
  switch (p->kind) {
  case RMS: mfk_rmsnorm_fwd(NULL, p->y, NULL, p->x, p->w, p->n, p->d, 1e-5f); break;
  case LN: mfk_layernorm_fwd(NULL, p->y, NULL, NULL, p->x, p->w, p->b, p->n, p->d, 1e-5f); break;
  case ROPE:
    memcpy(p->y, p->x, (size_t)(p->n * p->d) * sizeof(float));
    mfk_rope_fwd(NULL, p->y, p->pos, p->n, 1, p->d, 10000.0f);
    break;
  case SWIGLU: mfk_swiglu_fwd(NULL, p->y, p->x, p->w, p->n * p->d); break;
  case GELU_TANH: mfk_gelu_fwd(NULL, p->y, p->x, p->n * p->d, 1); break;
  case GELU_ERF: mfk_gelu_fwd(NULL, p->y, p->x, p->n * p->d, 0); break;
  case XENT: return mfk_xent(NULL, NULL, p->x, p->targets, p->n, p->d, -100, 1.0f, &count);
  }
  return weighted(p->y, p->r, p->n * p->d);
}

static void grad_check(const char *what, probe *p, float *wrt, const float *analytic, int64_t n,
                       double rtol, double atol) {
  double *num = kt_doubles(n);
  kt_numeric_grad(num, wrt, n, 1e-2f, probe_loss, p);
  kt_close(what, analytic, num, n, rtol, atol);
  free(num);
}

static probe make_probe(int kind) {
  probe p = { kind, kt_random(N * D, 2.0f), kt_random(D > N * D ? D : N * D, 1.0f), kt_random(D, 1.0f),
              kt_random(N * D, 1.0f), kt_random(N * D, 1.0f), NULL, NULL, N, D };
  return p;
}

static void free_probe(probe *p) { free(p->x), free(p->w), free(p->b), free(p->r), free(p->y); }

static void test_rmsnorm(void) {
  probe p = make_probe(RMS);
  float rstd[N], *dx = kt_random(N * D, 1.0f), *dw = kt_random(D, 1.0f), *dw0 = kt_copy(dw, D);
  double want[N * D], want_rstd[N];
  mfk_rmsnorm_fwd(NULL, p.y, rstd, p.x, p.w, N, D, 1e-5f);
  for (int i = 0; i < N; i++) {
    double ss = 0;
    for (int j = 0; j < D; j++) ss += (double)p.x[i * D + j] * p.x[i * D + j];
    want_rstd[i] = 1.0 / sqrt(ss / D + 1e-5);
    for (int j = 0; j < D; j++) want[i * D + j] = p.x[i * D + j] * want_rstd[i] * p.w[j];
  }
  kt_close("rmsnorm y", p.y, want, N * D, 1e-6, 1e-6);
  kt_close("rmsnorm rstd", rstd, want_rstd, N, 1e-6, 0);
  mfk_rmsnorm_bwd(NULL, dx, dw, p.r, p.x, p.w, rstd, N, D);
  for (int j = 0; j < D; j++) dw[j] -= dw0[j]; /* dw accumulates */
  grad_check("rmsnorm dx (rel 1e-3)", &p, p.x, dx, N * D, 1e-3, 1e-4);
  grad_check("rmsnorm dw (rel 1e-3)", &p, p.w, dw, D, 1e-3, 1e-4);
  free_probe(&p), free(dx), free(dw), free(dw0);
}

static void test_layernorm(int with_bias) {
  probe p = make_probe(LN);
  if (!with_bias) free(p.b), p.b = NULL;
  float mean[N], rstd[N], *dx = kt_random(N * D, 1.0f), *dw = calloc(D, 4), *db = calloc(D, 4);
  double want[N * D];
  mfk_layernorm_fwd(NULL, p.y, mean, rstd, p.x, p.w, p.b, N, D, 1e-5f);
  for (int i = 0; i < N; i++) {
    double m = 0, var = 0;
    for (int j = 0; j < D; j++) m += p.x[i * D + j] / (double)D;
    for (int j = 0; j < D; j++) var += (p.x[i * D + j] - m) * (p.x[i * D + j] - m) / D;
    for (int j = 0; j < D; j++)
      want[i * D + j] = (p.x[i * D + j] - m) / sqrt(var + 1e-5) * p.w[j] + (p.b ? p.b[j] : 0);
  }
  kt_close("layernorm y", p.y, want, N * D, 1e-5, 1e-6);
  mfk_layernorm_bwd(NULL, dx, dw, p.b ? db : NULL, p.r, p.x, p.w, mean, rstd, N, D);
  grad_check("layernorm dx (rel 1e-3)", &p, p.x, dx, N * D, 1e-3, 1e-4);
  grad_check("layernorm dw (rel 1e-3)", &p, p.w, dw, D, 1e-3, 1e-4);
  if (p.b) grad_check("layernorm db (rel 1e-3)", &p, p.b, db, D, 1e-3, 1e-4);
  free_probe(&p), free(dx), free(dw), free(db);
}

/* Rows wider than one slice of weight-gradient columns and than the
 * vector lanes of the row sums, with tails of both, against double
 * references of the analytic gradients. */
static void test_norms_wide(void) {
  enum { R = 5, W = 45 };
  float *x = kt_random(R * W, 2.0f), *w = kt_random(W, 1.0f), *dy = kt_random(R * W, 1.0f);
  float y[R * W], dx[R * W], rstd[R], mean[R], dw[W] = { 0 }, db[W] = { 0 };
  double want_dx[R * W], want_dw[W] = { 0 }, want_db[W] = { 0 };
  mfk_rmsnorm_fwd(NULL, y, rstd, x, w, R, W, 1e-5f);
  mfk_rmsnorm_bwd(NULL, dx, dw, dy, x, w, rstd, R, W);
  for (int i = 0; i < R; i++) {
    double ss = 0, dot = 0;
    for (int j = 0; j < W; j++) ss += (double)x[i * W + j] * x[i * W + j];
    double r = 1.0 / sqrt(ss / W + 1e-5);
    for (int j = 0; j < W; j++) dot += (double)dy[i * W + j] * w[j] * x[i * W + j];
    for (int j = 0; j < W; j++) {
      want_dx[i * W + j] = r * (w[j] * dy[i * W + j] - x[i * W + j] * r * r * dot / W);
      want_dw[j] += dy[i * W + j] * x[i * W + j] * r;
    }
  }
  kt_close("rmsnorm dx, width 45", dx, want_dx, R * W, 1e-5, 1e-6);
  kt_close("rmsnorm dw, width 45", dw, want_dw, W, 1e-5, 1e-6);
  memset(dw, 0, sizeof dw);
  memset(want_dw, 0, sizeof want_dw);
  mfk_layernorm_fwd(NULL, y, mean, rstd, x, w, NULL, R, W, 1e-5f);
  mfk_layernorm_bwd(NULL, NULL, dw, db, dy, x, w, mean, rstd, R, W);
  for (int i = 0; i < R; i++)
    for (int j = 0; j < W; j++) {
      want_dw[j] += dy[i * W + j] * ((double)x[i * W + j] - mean[i]) * rstd[i];
      want_db[j] += dy[i * W + j];
    }
  kt_close("layernorm dw, width 45", dw, want_dw, W, 1e-5, 1e-6);
  kt_close("layernorm db, width 45", db, want_db, W, 1e-6, 1e-6);
  free(x), free(w), free(dy);
}

/* Forward against a double reference for rows at positions pos. */
static void check_rope_fwd(const char *what, const int32_t *pos, int rows, int heads, int hd) {
  int64_t n = (int64_t)rows * heads * hd;
  float *x = kt_random(n, 1.0f), *y = kt_copy(x, n);
  double *want = kt_doubles(n);
  mfk_rope_fwd(NULL, y, pos, rows, heads, hd, 10000.0f);
  for (int r = 0; r < rows; r++)
    for (int h = 0; h < heads; h++)
      for (int i = 0; i < hd / 2; i++) {
        double angle = pos[r] * pow(10000.0, -2.0 * i / hd);
        const float *v = x + ((int64_t)r * heads + h) * hd;
        double *w = want + ((int64_t)r * heads + h) * hd;
        w[i] = v[i] * cos(angle) - v[i + hd / 2] * sin(angle);
        w[i + hd / 2] = v[i + hd / 2] * cos(angle) + v[i] * sin(angle);
      }
  /* angles near 4095 rad are formed in float as HF does: allow for that rounding */
  kt_close(what, y, want, n, 1e-5, 1e-3);
  free(x), free(y), free(want);
}

static void test_rope(void) {
  /* scattered positions: cos and sin per row; a batch of sequences: a table */
  const int32_t scattered[5] = { 0, 1, 7, 300, 4095 }, batch[8] = { 40, 41, 42, 43, 40, 41, 42, 43 };
  check_rope_fwd("rope fwd, scattered positions", scattered, 5, 3, 8);
  check_rope_fwd("rope fwd, scattered positions, head_dim 136", scattered, 5, 2, 136);
  check_rope_fwd("rope fwd, repeated positions", batch, 8, 3, 8);
  check_rope_fwd("rope fwd, repeated positions, head_dim 136", batch, 8, 2, 136);

  const int32_t positions[2][N] = { { 0, 3, 1, 9, 2, 100, 5 }, { 3, 1, 2, 0, 1, 3, 2 } };
  for (int set = 0; set < 2; set++) {
    probe p = make_probe(ROPE); /* one head of width D - 1: even */
    p.d = D - 1;
    p.pos = positions[set];
    float *dx = kt_copy(p.r, N * (D - 1));
    mfk_rope_bwd(NULL, dx, p.pos, N, 1, D - 1, 10000.0f);
    grad_check(set ? "rope bwd, repeated positions (rel 1e-3)" : "rope bwd (rel 1e-3)", &p, p.x, dx,
               N * (D - 1), 1e-3, 1e-4);
    free_probe(&p), free(dx);
  }
}

static void test_activations(void) {
  probe p = make_probe(SWIGLU);
  float *dg = malloc(N * D * 4), *du = malloc(N * D * 4);
  double want[N * D];
  mfk_swiglu_fwd(NULL, p.y, p.x, p.w, N * D);
  for (int i = 0; i < N * D; i++) want[i] = p.x[i] / (1.0 + exp(-(double)p.x[i])) * p.w[i];
  kt_close("swiglu fwd", p.y, want, N * D, 1e-6, 1e-7);
  mfk_swiglu_bwd(NULL, dg, du, p.r, p.x, p.w, N * D);
  grad_check("swiglu dgate (rel 1e-3)", &p, p.x, dg, N * D, 1e-3, 1e-4);
  grad_check("swiglu dup (rel 1e-3)", &p, p.w, du, N * D, 1e-3, 1e-4);
  for (int approx = 0; approx <= 1; approx++) {
    p.kind = approx ? GELU_TANH : GELU_ERF;
    mfk_gelu_fwd(NULL, p.y, p.x, N * D, approx);
    for (int i = 0; i < N * D; i++) {
      double x = p.x[i];
      want[i] = approx ? 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)))
                       : 0.5 * x * (1 + erf(x / sqrt(2.0)));
    }
    kt_close(approx ? "gelu tanh fwd" : "gelu erf fwd", p.y, want, N * D, 1e-6, 1e-6);
    mfk_gelu_bwd(NULL, dg, p.r, p.x, N * D, approx);
    grad_check(approx ? "gelu tanh bwd (rel 1e-3)" : "gelu erf bwd (rel 1e-3)", &p, p.x, dg, N * D,
               1e-3, 1e-4);
  }
  free_probe(&p), free(dg), free(du);
}

static void test_xent(void) {
  probe p = make_probe(XENT);
  int32_t targets[N] = { 3, -100, 0, 12, 5, -100, 7 };
  p.targets = targets;
  int64_t count = -1;
  float *d = malloc(N * D * 4);
  double loss = mfk_xent(NULL, d, p.x, targets, N, D, -100, 0.25f, &count), want = 0;
  double want_d[N * D];
  for (int i = 0; i < N; i++) {
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < D; j++) mx = fmax(mx, p.x[i * D + j]);
    for (int j = 0; j < D; j++) sum += exp(p.x[i * D + j] - mx);
    for (int j = 0; j < D; j++)
      want_d[i * D + j] = targets[i] == -100 ? 0 : 0.25 * (exp(p.x[i * D + j] - mx) / sum - (j == targets[i]));
    if (targets[i] != -100) want += log(sum) + mx - p.x[i * D + targets[i]];
  }
  KT_CHECK(count == 5, "xent counted %lld rows, expected 5", (long long)count);
  KT_CHECK(fabs(loss - want) <= 1e-5 * fabs(want), "xent loss %.9g, expected %.9g", loss, want);
  kt_close("xent dlogits", d, want_d, N * D, 1e-5, 1e-7);
  float *alias = kt_copy(p.x, N * D);
  double loss2 = mfk_xent(NULL, alias, alias, targets, N, D, -100, 0.25f, &count);
  KT_CHECK(loss2 == loss && memcmp(alias, d, N * D * 4) == 0, "xent with dlogits == logits differs");
  mfk_xent(NULL, d, p.x, targets, N, D, -100, 1.0f, &count);
  grad_check("xent dlogits vs d(sum of losses) (rel 1e-3)", &p, p.x, d, N * D, 1e-3, 1e-4);
  free_probe(&p), free(d), free(alias);
}

/* A vocabulary of several exp chunks and a ragged tail, logits spread
 * wide, one row ignored; in place too. */
static void test_xent_wide(void) {
  enum { R = 4, V = 1037 };
  float *x = kt_random(R * V, 12.0f), *d = malloc(R * V * 4);
  int32_t targets[R] = { 1036, 0, -100, 517 };
  double want = 0, *want_d = kt_doubles(R * V);
  int64_t count;
  double loss = mfk_xent(NULL, d, x, targets, R, V, -100, 0.5f, &count);
  for (int i = 0; i < R; i++) {
    if (targets[i] == -100) continue;
    const float *row = x + i * V;
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++) mx = fmax(mx, row[j]);
    for (int j = 0; j < V; j++) sum += exp(row[j] - mx);
    for (int j = 0; j < V; j++) want_d[i * V + j] = 0.5 * (exp(row[j] - mx) / sum - (j == targets[i]));
    want += log(sum) + mx - row[targets[i]];
  }
  KT_CHECK(count == 3, "xent (vocab 1037) counted %lld rows, expected 3", (long long)count);
  KT_CHECK(fabs(loss - want) <= 1e-6 * fabs(want), "xent (vocab 1037) loss %.9g, expected %.9g", loss, want);
  kt_close("xent dlogits, vocab 1037", d, want_d, R * V, 1e-5, 1e-9);
  double again = mfk_xent(NULL, x, x, targets, R, V, -100, 0.5f, &count);
  KT_CHECK(again == loss && memcmp(x, d, R * V * 4) == 0, "xent (vocab 1037) in place differs");
  free(x), free(d), free(want_d);
}

static void test_embedding(void) {
  enum { VOCAB = 6, DIM = 5, IDS = 7 };
  int32_t ids[IDS] = { 2, 0, 2, 5, 2, 1, 0 };
  float *table = kt_random(VOCAB * DIM, 1.0f), out[IDS * DIM];
  mfk_embedding_fwd(NULL, out, table, ids, IDS, DIM);
  int ok = 1;
  for (int i = 0; i < IDS; i++) ok &= memcmp(out + i * DIM, table + ids[i] * DIM, DIM * 4) == 0;
  KT_CHECK(ok, "embedding fwd copies rows");
  float *dtable = kt_random(VOCAB * DIM, 1.0f), *g = kt_random(IDS * DIM, 1.0f);
  double want[VOCAB * DIM];
  for (int i = 0; i < VOCAB * DIM; i++) want[i] = dtable[i];
  for (int i = 0; i < IDS; i++)
    for (int j = 0; j < DIM; j++) want[ids[i] * DIM + j] += g[i * DIM + j];
  mfk_embedding_bwd(NULL, dtable, g, ids, IDS, DIM);
  kt_close("embedding bwd", dtable, want, VOCAB * DIM, 1e-6, 1e-7);
  free(table), free(dtable), free(g);
}

static void test_elementwise(void) {
  float *a = kt_random(N * D, 1.0f), *b = kt_random(N * D, 1.0f), *y = malloc(N * D * 4);
  double want[N * D], colsum[D] = { 0 };
  mfk_add(NULL, y, a, b, N * D);
  for (int i = 0; i < N * D; i++) want[i] = (double)a[i] + b[i];
  kt_close("add", y, want, N * D, 1e-7, 0);
  mfk_axpy(NULL, y, 0.5f, a, N * D);
  for (int i = 0; i < N * D; i++) want[i] += 0.5 * a[i];
  kt_close("axpy", y, want, N * D, 1e-6, 1e-7);
  mfk_scale(NULL, y, -3.0f, N * D);
  for (int i = 0; i < N * D; i++) want[i] *= -3.0;
  kt_close("scale", y, want, N * D, 1e-6, 1e-7);
  mfk_bias_fwd(NULL, y, b, N, D);
  for (int i = 0; i < N * D; i++) want[i] += b[i % D];
  kt_close("bias fwd", y, want, N * D, 1e-6, 1e-6);
  float *copy = malloc(N * D * 4);
  mfk_copy(NULL, copy, y, N * D);
  KT_CHECK(memcmp(copy, y, N * D * 4) == 0, "copy");
  free(copy);
  float dbias[D];
  for (int j = 0; j < D; j++) colsum[j] = dbias[j] = a[j];
  mfk_bias_bwd(NULL, dbias, b, N, D);
  for (int i = 0; i < N * D; i++) colsum[i % D] += b[i];
  kt_close("bias bwd", dbias, colsum, D, 1e-6, 1e-6);
  double ss = 0;
  for (int i = 0; i < N * D; i++) ss += (double)a[i] * a[i];
  KT_CHECK(fabs(mfk_sumsq(NULL, a, N * D) - ss) <= 1e-12 * ss, "sumsq");
  free(a), free(b), free(y);
}

static void test_adamw(void) {
  enum { P = 11 };
  float *p = kt_random(P, 1.0f), *m = calloc(P, 4), *v = calloc(P, 4);
  double pd[P], md[P] = { 0 }, vd[P] = { 0 };
  for (int i = 0; i < P; i++) pd[i] = p[i];
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  for (int step = 1; step <= 3; step++) {
    float *g = kt_random(P, 1.0f);
    mfk_adamw(NULL, p, g, m, v, P, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, step);
    for (int i = 0; i < P; i++) {
      pd[i] *= 1 - lr * wd;
      md[i] = b1 * md[i] + (1 - b1) * g[i];
      vd[i] = b2 * vd[i] + (1 - b2) * (double)g[i] * g[i];
      pd[i] -= lr / (1 - pow(b1, step)) * md[i] / (sqrt(vd[i]) / sqrt(1 - pow(b2, step)) + eps);
    }
    free(g);
  }
  kt_close("adamw p after 3 steps", p, pd, P, 1e-5, 1e-6);
  free(p), free(m), free(v);
}

/* ---- same bits on 1, 2 and 3 threads ---- */
enum { BR = 300, BD = 288, BIG = BR * BD }; /* BIG > MFK_BLOCK: elementwise kernels split */

typedef struct bits_in { float *x, *w, *g, *r; int32_t *ids, *pos; } bits_in;

static void run_all(mfk_pool *pool, void *arg, float *out) {
  bits_in *in = arg;
  float *o = out;
  float *x = kt_copy(in->x, BIG);
  mfk_rmsnorm_fwd(pool, o, o + BIG, x, in->w, BR, BD, 1e-5f);
  o += BIG + BR;
  mfk_rmsnorm_bwd(pool, o, o + BIG, in->g, x, in->w, out + BIG, BR, BD);
  o += BIG + BD;
  mfk_layernorm_fwd(pool, o, o + BIG, o + BIG + BR, x, in->w, in->w, BR, BD, 1e-5f);
  float *mean = o + BIG, *rstd = o + BIG + BR;
  o += BIG + 2 * BR;
  mfk_layernorm_bwd(pool, o, o + BIG, o + BIG + BD, in->g, x, in->w, mean, rstd, BR, BD);
  o += BIG + 2 * BD;
  memcpy(o, x, BIG * 4);
  mfk_rope_fwd(pool, o, in->pos, BR, 6, 48, 10000.0f);
  mfk_rope_bwd(pool, o, in->pos, BR / 2, 6, 48, 500000.0f);
  o += BIG;
  mfk_swiglu_fwd(pool, o, x, in->g, BIG);
  mfk_swiglu_bwd(pool, o + BIG, o + 2 * BIG, in->r, x, in->g, BIG);
  o += 3 * BIG;
  mfk_gelu_fwd(pool, o, x, BIG, 1);
  mfk_gelu_bwd(pool, o + BIG, in->g, x, BIG, 0);
  o += 2 * BIG;
  o[0] = (float)mfk_xent(pool, o + 1, x, in->ids, BR, BD, 3, 0.5f, NULL);
  o += 1 + BIG;
  mfk_embedding_fwd(pool, o, in->x, in->ids, BR / 2, BD);
  memcpy(o + BIG, in->x, BIG * 4);
  mfk_embedding_bwd(pool, o + BIG, in->g, in->ids, BR, BD);
  o += 2 * BIG;
  mfk_add(pool, o, x, in->g, BIG);
  mfk_axpy(pool, o, 0.3f, in->r, BIG);
  mfk_scale(pool, o, 1.7f, BIG);
  mfk_bias_fwd(pool, o, in->w, BR, BD);
  memcpy(o + BIG, in->w, BD * 4);
  mfk_bias_bwd(pool, o + BIG, o, BR, BD);
  o += BIG + BD;
  o[0] = (float)mfk_sumsq(pool, x, BIG);
  o[1] = (float)(mfk_sumsq(pool, x, BIG) - o[0]);
  o += 2;
  float *m = calloc(BIG, 4), *v = calloc(BIG, 4);
  memcpy(o, x, BIG * 4);
  for (int step = 1; step <= 2; step++) mfk_adamw(pool, o, in->g, m, v, BIG, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
  free(m), free(v), free(x);
}

static void test_same_bits(void) {
  bits_in in = { kt_random(BIG, 3.0f), kt_random(BIG, 1.0f), kt_random(BIG, 1.0f), kt_random(BIG, 1.0f),
                 malloc(BR * 4), malloc(BR * 4) };
  for (int i = 0; i < BR; i++) in.ids[i] = (i * 7) % (BR / 2), in.pos[i] = i % 97;
  kt_same_bits("every elementwise/norm/rope/loss/embedding/adamw kernel", run_all, &in, 20 * BIG);
  free(in.x), free(in.w), free(in.g), free(in.r), free(in.ids), free(in.pos);
}

int main(void) {
  test_rmsnorm();
  test_norms_wide();
  test_layernorm(1);
  test_layernorm(0);
  test_rope();
  test_activations();
  test_xent();
  test_xent_wide();
  test_embedding();
  test_elementwise();
  test_adamw();
  test_same_bits();
  return kt_failures != 0;
}
