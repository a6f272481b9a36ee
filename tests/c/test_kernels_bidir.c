/* Bidirectional attention over padded sequences: forward against a double
 * reference (sequences of several lengths, one longer than a key block, a
 * fused-QKV stride), zeros at padding rows, padding keys that change
 * nothing, and the same bits on 1, 2 and 3 threads. */
#include "kernel_testing.h"

typedef struct bidir_case {
  int64_t B, T, H, hd, stride;
  int32_t *lens;
  float *qkv; /* [B, T, stride]: q, k and v at offsets 0, H*hd, 2*H*hd */
} bidir_case;

static bidir_case make_case(int64_t B, int64_t T, int64_t H, int64_t hd, const int32_t *lens) {
  bidir_case c = {B, T, H, hd, 3 * H * hd, malloc((size_t)B * sizeof(int32_t)), NULL};
  memcpy(c.lens, lens, (size_t)B * sizeof(int32_t));
  c.qkv = kt_random(B * T * c.stride, 1.5f);
  return c;
}

static void run(mfk_pool *pool, void *arg, float *out) {
  const bidir_case *c = arg;
  int64_t D = c->H * c->hd;
  float *scratch = malloc((size_t)mfk_attention_bidir_scratch(c->B, c->T, c->H, c->hd) * sizeof(float));
  mfk_attention_bidir_fwd(pool, out, c->qkv, c->qkv + D, c->qkv + 2 * D, c->lens, c->B, c->T, c->H, c->hd,
                          c->stride, scratch);
  free(scratch);
}

static void reference(const bidir_case *c, double *out) {
  int64_t D = c->H * c->hd;
  double *p = kt_doubles(c->T);
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t t = 0; t < c->lens[b]; t++)
      for (int64_t h = 0; h < c->H; h++) {
        const float *q = c->qkv + (b * c->T + t) * c->stride + h * c->hd;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < c->lens[b]; j++) {
          const float *k = c->qkv + (b * c->T + j) * c->stride + D + h * c->hd;
          double s = 0;
          for (int64_t d = 0; d < c->hd; d++) s += (double)q[d] * k[d];
          p[j] = s / sqrt((double)c->hd);
          mx = p[j] > mx ? p[j] : mx;
        }
        for (int64_t j = 0; j < c->lens[b]; j++) sum += p[j] = exp(p[j] - mx);
        double *o = out + (b * c->T + t) * D + h * c->hd;
        for (int64_t j = 0; j < c->lens[b]; j++) {
          const float *v = c->qkv + (b * c->T + j) * c->stride + 2 * D + h * c->hd;
          for (int64_t d = 0; d < c->hd; d++) o[d] += p[j] / sum * v[d];
        }
      }
  free(p);
}

static void check_case(bidir_case c, const char *what) {
  int64_t n = c.B * c.T * c.H * c.hd;
  float *got = calloc((size_t)n, sizeof(float));
  double *want = kt_doubles(n);
  mfk_pool *pool = mfk_pool_new(2);
  run(pool, &c, got);
  reference(&c, want);
  kt_close(what, got, want, n, 1e-5, 1e-5);
  kt_same_bits(what, run, &c, n);
  mfk_pool_free(pool);
  free(got);
  free(want);
}

/* Changing the padding keys, values and queries changes no real row. */
static void check_padding_ignored(bidir_case c) {
  int64_t n = c.B * c.T * c.H * c.hd;
  float *before = calloc((size_t)n, sizeof(float)), *after = calloc((size_t)n, sizeof(float));
  run(NULL, &c, before);
  for (int64_t b = 0; b < c.B; b++)
    for (int64_t t = c.lens[b]; t < c.T; t++)
      for (int64_t i = 0; i < c.stride; i++) c.qkv[(b * c.T + t) * c.stride + i] = 1e4f * kt_uniform();
  run(NULL, &c, after);
  KT_CHECK(memcmp(before, after, (size_t)n * sizeof(float)) == 0, "padding changed the output");
  free(before);
  free(after);
}

int main(void) {
  const int32_t short_lens[] = {5, 1, 3};
  bidir_case small = make_case(3, 5, 2, 8, short_lens);
  check_case(small, "three short sequences");
  check_padding_ignored(small);
  const int32_t long_lens[] = {150, 97};
  bidir_case wide = make_case(2, 150, 3, 32, long_lens);
  check_case(wide, "sequences longer than a key block");
  check_padding_ignored(wide);
  for (bidir_case *c = &small; c; c = c == &small ? &wide : NULL) {
    free(c->lens);
    free(c->qkv);
  }
  if (kt_failures == 0) printf("ok\n");
  return kt_failures != 0;
}
