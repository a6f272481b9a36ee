/* int8 linear layers: mfk_i8_linear against the dequantized product
 * computed here in double from the documented quantization (blocks of 64
 * along K, each with scale max|block|/127, round half away from zero),
 * within rounding's bound of the f32 product, shapes with ragged edges
 * (rows not a multiple of the row strip, out not a multiple of 32, in not
 * a multiple of 4 or 64), and the same bits on 1, 2 and 3 threads. */
#include "kernel_testing.h"

typedef struct i8_case {
  int64_t rows, out, in;
  float *x, *w;
  mfk_i8_weight *q;
} i8_case;

static i8_case make_case(int64_t rows, int64_t out, int64_t in) {
  i8_case c = {rows, out, in, kt_random(rows * in, 2.0f), kt_random(out * in, 0.1f), NULL};
  c.x[3] = 9.0f; /* an outlier, as BERT hidden states have */
  c.q = mfk_i8_weight_new(c.w, out, in);
  return c;
}

static void run(mfk_pool *pool, void *arg, float *out) {
  const i8_case *c = arg;
  void *scratch = malloc(mfk_i8_scratch_bytes(c->rows, c->in));
  mfk_i8_linear(pool, out, c->x, c->q, c->rows, scratch);
  free(scratch);
}

enum { KB = 64 };

/* v's int8 codes and the scale of each element's block, as the kernel
 * documents them. */
static void quantize_row(const float *v, int64_t n, int *q, double *scale) {
  for (int64_t b = 0; b < n; b += KB) {
    float amax = 0;
    for (int64_t k = b; k < n && k < b + KB; k++) amax = fmaxf(amax, fabsf(v[k]));
    float d = amax / 127, inv = d != 0 ? 1 / d : 0;
    for (int64_t k = b; k < n && k < b + KB; k++) q[k] = (int)roundf(v[k] * inv), scale[k] = d;
  }
}

/* exact: the dequantized product; f32: the float product; bound: how far
 * apart rounding each factor by half a step can put them. */
static void reference(const i8_case *c, double *exact, double *f32, double *bound) {
  int *qx = malloc((size_t)c->in * sizeof(int)), *qw = malloc((size_t)c->in * sizeof(int));
  double *sx = kt_doubles(c->in), *sw = kt_doubles(c->in);
  for (int64_t r = 0; r < c->rows; r++) {
    quantize_row(c->x + r * c->in, c->in, qx, sx);
    for (int64_t o = 0; o < c->out; o++) {
      quantize_row(c->w + o * c->in, c->in, qw, sw);
      double sum = 0, dot = 0, err = 0;
      for (int64_t k = 0; k < c->in; k++) {
        double x = c->x[r * c->in + k], w = c->w[o * c->in + k];
        sum += qx[k] * qw[k] * sx[k] * sw[k];
        dot += x * w;
        err += fabs(x) * sw[k] / 2 + (fabs(w) + sw[k] / 2) * sx[k] / 2;
      }
      exact[r * c->out + o] = sum;
      f32[r * c->out + o] = dot;
      bound[r * c->out + o] = err;
    }
  }
  free(qx);
  free(qw);
  free(sx);
  free(sw);
}

static void check_case(int64_t rows, int64_t out, int64_t in, const char *what) {
  i8_case c = make_case(rows, out, in);
  int64_t n = rows * out;
  float *got = calloc((size_t)n, sizeof(float));
  double *exact = kt_doubles(n), *f32 = kt_doubles(n), *bound = kt_doubles(n);
  run(NULL, &c, got);
  reference(&c, exact, f32, bound);
  kt_close(what, got, exact, n, 1e-5, 1e-5);
  int64_t i = 0;
  while (i < n && fabs(got[i] - f32[i]) <= bound[i] + 1e-5) i++;
  KT_CHECK(i == n, "%s: element %lld is %.6g, the f32 product %.6g, more than %.3g apart", what, (long long)i,
           got[i], f32[i], bound[i]);
  kt_same_bits(what, run, &c, n);
  mfk_i8_weight_free(c.q);
  free(c.x);
  free(c.w);
  free(got);
  free(exact);
  free(f32);
  free(bound);
}

int main(void) {
  printf("int8 micro-kernel: %s\n", mfk_i8_isa());
  check_case(1, 1, 1, "one element");
  check_case(37, 45, 30, "ragged edges");
  check_case(13, 70, 150, "a ragged last block");
  check_case(200, 384, 384, "a MiniLM projection");
  check_case(29, 96, 1536, "a MiniLM down projection");
  if (kt_failures == 0) printf("ok\n");
  return kt_failures != 0;
}
