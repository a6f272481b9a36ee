/* Causal GQA attention: forward against a double reference (training shape,
 * several key and query blocks, and decode shapes with Tq < Tk and a padded
 * kv_stride, both with keys scored straight from K's rows (few queries per
 * kv head) and from transposed key blocks), decoding one query at a time
 * against the rows of a full forward, backward against central differences
 * (in one pass and in two), and the same bits on 1, 2 and 3 threads (one
 * thread takes the one-pass backward there, two and three the two-pass). */
#include "kernel_testing.h"

typedef struct attn_case {
  int64_t B, Tq, Tk, Hq, Hkv, hd, kv_stride;
  float *q, *k, *v, *r; /* r: weights of the scalar loss sum(out * r) */
} attn_case;

static attn_case make_case(int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t hd,
                           int64_t kv_stride) {
  attn_case c = { B, Tq, Tk, Hq, Hkv, hd, kv_stride, NULL, NULL, NULL, NULL };
  c.q = kt_random(B * Tq * Hq * hd, 1.5f);
  c.k = kt_random(B * Tk * kv_stride, 1.5f);
  c.v = kt_random(B * Tk * kv_stride, 1.0f);
  c.r = kt_random(B * Tq * Hq * hd, 1.0f);
  return c;
}

static void free_case(attn_case *c) { free(c->q), free(c->k), free(c->v), free(c->r); }

static void reference(const attn_case *c, double *out, double *lse) {
  double scale = 1.0 / sqrt((double)c->hd);
  double *p = kt_doubles(c->Tk);
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t i = 0; i < c->Tq; i++)
      for (int64_t h = 0; h < c->Hq; h++) {
        const float *q = c->q + ((b * c->Tq + i) * c->Hq + h) * c->hd;
        int64_t g = h / (c->Hq / c->Hkv), last = c->Tk - c->Tq + i;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= last; j++) {
          const float *k = c->k + (b * c->Tk + j) * c->kv_stride + g * c->hd;
          double s = 0;
          for (int64_t d = 0; d < c->hd; d++) s += (double)q[d] * k[d];
          p[j] = s * scale;
          mx = p[j] > mx ? p[j] : mx;
        }
        for (int64_t j = 0; j <= last; j++) sum += p[j] = exp(p[j] - mx);
        double *o = out + ((b * c->Tq + i) * c->Hq + h) * c->hd;
        for (int64_t d = 0; d < c->hd; d++) o[d] = 0;
        for (int64_t j = 0; j <= last; j++) {
          const float *v = c->v + (b * c->Tk + j) * c->kv_stride + g * c->hd;
          for (int64_t d = 0; d < c->hd; d++) o[d] += p[j] / sum * v[d];
        }
        lse[(b * c->Hq + h) * c->Tq + i] = mx + log(sum);
      }
  free(p);
}

static void check_forward(attn_case c, const char *what) {
  int64_t n_out = c.B * c.Tq * c.Hq * c.hd, n_lse = c.B * c.Hq * c.Tq;
  float *out = kt_random(n_out, 1.0f), *lse = kt_random(n_lse, 1.0f);
  double *want = kt_doubles(n_out), *want_lse = kt_doubles(n_lse);
  mfk_pool *pool = mfk_pool_new(2);
  mfk_attention_fwd(pool, out, lse, c.q, c.k, c.v, c.B, c.Tq, c.Tk, c.Hq, c.Hkv, c.hd, c.kv_stride);
  mfk_pool_free(pool);
  reference(&c, want, want_lse);
  char label[96];
  snprintf(label, sizeof label, "attention %s out", what);
  kt_close(label, out, want, n_out, 1e-5, 1e-5);
  snprintf(label, sizeof label, "attention %s lse", what);
  kt_close(label, lse, want_lse, n_lse, 1e-5, 1e-5);
  free(out), free(lse), free(want), free(want_lse);
}

/* Each row of a full forward (all queries at once: transposed key blocks)
 * against the same query decoded alone over the keys before it (scores from
 * K's rows), within rel 1e-5 + abs 1e-6: the two sum in different orders. */
static void check_decode_steps(attn_case c) {
  int64_t row = c.Hq * c.hd;
  float *full = malloc((size_t)(c.Tq * row) * sizeof(float));
  float *step = malloc((size_t)(c.Tq * row) * sizeof(float));
  double *want = kt_doubles(c.Tq * row);
  mfk_pool *pool = mfk_pool_new(2);
  mfk_attention_fwd(pool, full, NULL, c.q, c.k, c.v, 1, c.Tq, c.Tq, c.Hq, c.Hkv, c.hd, c.kv_stride);
  for (int64_t t = 0; t < c.Tq; t++)
    mfk_attention_fwd(pool, step + t * row, NULL, c.q + t * row, c.k, c.v, 1, 1, t + 1, c.Hq, c.Hkv,
                      c.hd, c.kv_stride);
  mfk_pool_free(pool);
  for (int64_t i = 0; i < c.Tq * row; i++) want[i] = full[i];
  kt_close("attention decoded one query at a time vs full forward", step, want, c.Tq * row, 1e-5, 1e-6);
  free(full), free(step), free(want);
}

static void run_decode(mfk_pool *pool, void *arg, float *out) {
  attn_case *c = arg;
  mfk_attention_fwd(pool, out, out + c->B * c->Tq * c->Hq * c->hd, c->q, c->k, c->v, c->B, c->Tq,
                    c->Tk, c->Hq, c->Hkv, c->hd, c->kv_stride);
}

static double loss(void *arg) {
  attn_case *c = arg;
  int64_t n = c->B * c->Tq * c->Hq * c->hd;
  float *out = malloc((size_t)n * sizeof(float));
  mfk_attention_fwd(NULL, out, NULL, c->q, c->k, c->v, c->B, c->Tq, c->Tk, c->Hq, c->Hkv, c->hd,
                    c->kv_stride);
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += (double)out[i] * c->r[i];
  free(out);
  return sum;
}

/* Finite differences of sum(out * r) in double: tolerance rel 1e-3 + abs 2e-4
 * (float forward passes, step 1e-2). */
static void check_backward(attn_case c) {
  int64_t nq = c.B * c.Tq * c.Hq * c.hd, nkv = c.B * c.Tk * c.Hkv * c.hd;
  float *out = malloc((size_t)nq * sizeof(float)), *lse = malloc((size_t)(c.B * c.Hq * c.Tq) * sizeof(float));
  float *dq = malloc((size_t)nq * sizeof(float)), *dk = malloc((size_t)nkv * sizeof(float));
  float *dv = malloc((size_t)nkv * sizeof(float));
  mfk_pool *pool = mfk_pool_new(2);
  mfk_attention_fwd(pool, out, lse, c.q, c.k, c.v, c.B, c.Tq, c.Tk, c.Hq, c.Hkv, c.hd, c.kv_stride);
  mfk_attention_bwd(pool, dq, dk, dv, c.r, c.q, c.k, c.v, out, lse, c.B, c.Tq, c.Hq, c.Hkv, c.hd);
  mfk_pool_free(pool);
  double *num = kt_doubles(nq);
  kt_numeric_grad(num, c.q, nq, 1e-2f, loss, &c);
  kt_close("attention dq", dq, num, nq, 1e-3, 2e-4);
  kt_numeric_grad(num, c.k, nkv, 1e-2f, loss, &c);
  kt_close("attention dk", dk, num, nkv, 1e-3, 2e-4);
  kt_numeric_grad(num, c.v, nkv, 1e-2f, loss, &c);
  kt_close("attention dv", dv, num, nkv, 1e-3, 2e-4);
  free(num), free(out), free(lse), free(dq), free(dk), free(dv);
}

static void run_both(mfk_pool *pool, void *arg, float *all) {
  attn_case *c = arg;
  int64_t nq = c->B * c->Tq * c->Hq * c->hd, nkv = c->B * c->Tk * c->Hkv * c->hd;
  float *out = all, *lse = out + nq, *dq = lse + c->B * c->Hq * c->Tq, *dk = dq + nq, *dv = dk + nkv;
  mfk_attention_fwd(pool, out, lse, c->q, c->k, c->v, c->B, c->Tq, c->Tk, c->Hq, c->Hkv, c->hd,
                    c->kv_stride);
  mfk_attention_bwd(pool, dq, dk, dv, c->r, c->q, c->k, c->v, out, lse, c->B, c->Tq, c->Hq, c->Hkv,
                    c->hd);
}

int main(void) {
  attn_case small = make_case(2, 5, 5, 4, 2, 8, 2 * 8);
  check_forward(small, "B2 T5 Hq4 Hkv2");
  check_backward(small);
  free_case(&small);

  attn_case blocks = make_case(1, 37, 37, 4, 2, 8, 2 * 8); /* crosses key and query blocks */
  check_forward(blocks, "T37");
  check_backward(blocks);
  free_case(&blocks);

  attn_case pairs = make_case(4, 37, 37, 4, 2, 8, 2 * 8); /* enough (sequence, kv head) pairs for one pass */
  check_backward(pairs);
  free_case(&pairs);

  attn_case mha = make_case(1, 20, 20, 3, 3, 48, 3 * 48); /* no grouping, llama's head size */
  check_forward(mha, "Hq=Hkv hd48");
  free_case(&mha);

  attn_case decode = make_case(2, 2, 7, 4, 2, 8, 2 * 8 + 5); /* Tq < Tk, padded rows */
  check_forward(decode, "decode Tq2 Tk7");
  free_case(&decode);
  attn_case step = make_case(1, 1, 40, 4, 1, 16, 16);
  check_forward(step, "decode Tq1 Tk40");
  free_case(&step);
  attn_case wide = make_case(2, 1, 50, 2, 2, 72, 2 * 72 + 3); /* column chunks and a tail */
  check_forward(wide, "decode Tq1 hd72");
  free_case(&wide);
  attn_case tiled = make_case(2, 4, 39, 4, 2, 16, 2 * 16 + 5); /* 8 queries per kv head */
  check_forward(tiled, "decode Tq4 Tk39 tiled");
  free_case(&tiled);

  attn_case steps = make_case(1, 45, 45, 6, 2, 40, 2 * 40 + 8);
  check_decode_steps(steps);
  free_case(&steps);
  attn_case smol = make_case(3, 1, 70, 9, 3, 64, 3 * 64 + 16); /* SmolLM2's heads */
  kt_same_bits("attention decode fwd", run_decode, &smol, 3 * 9 * 64 + 3 * 9);
  free_case(&smol);

  attn_case bits = make_case(2, 45, 45, 4, 2, 16, 2 * 16);
  int64_t n = 2 * (2 * 45 * 4 * 16) + 2 * 4 * 45 + 2 * (2 * 45 * 2 * 16);
  kt_same_bits("attention fwd+bwd", run_both, &bits, n);
  free_case(&bits);
  return kt_failures != 0;
}
