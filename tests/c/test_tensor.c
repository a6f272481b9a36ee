/* Tensors: allocation, shape checks, views, and dtype conversions checked
 * exhaustively for F16/BF16 and against PyTorch's rounding for F32. */
#include "format_testing.h"

#include <math.h>

static mf_tensor *vector(mf_dtype dtype, int64_t n) { return mf_tensor_new(dtype, 1, &n); }

static void test_dtypes(void) {
  FT_CHECK(mf_dtype_size(MF_F32) == 4 && mf_dtype_size(MF_BF16) == 2 && mf_dtype_size(MF_I64) == 8 &&
           mf_dtype_size(MF_U8) == 1, "dtype sizes");
  FT_CHECK(!strcmp(mf_dtype_name(MF_F16), "F16") && !strcmp(mf_dtype_name(MF_I32), "I32"), "dtype names");
  FT_CHECK(mf_dtype_size((mf_dtype)42) == 0, "invalid dtype has no size");
}

static void test_new_and_view(void) {
  int64_t shape[3] = {3, 5, 7};
  mf_tensor *t = mf_tensor_new(MF_F32, 3, shape);
  FT_CHECK(t && t->owns_data && ((uintptr_t)t->data % 64) == 0, "owned and 64-byte aligned");
  FT_CHECK(mf_tensor_numel(t) == 105 && mf_tensor_nbytes(t) == 420, "numel and nbytes");
  int zero = 1;
  for (int i = 0; i < 105; i++) zero = zero && ((float *)t->data)[i] == 0.0f;
  FT_CHECK(zero, "zero-filled");
  mf_tensor *v = mf_tensor_view(MF_F32, 2, (int64_t[]){15, 7}, t->data);
  FT_CHECK(v && !v->owns_data && v->data == t->data && mf_tensor_numel(v) == 105, "view");
  mf_tensor_free(v);
  mf_tensor_free(t);

  mf_tensor *scalar = mf_tensor_new(MF_I64, 0, NULL), *empty = mf_tensor_new(MF_F16, 2, (int64_t[]){0, 3});
  FT_CHECK(scalar && mf_tensor_numel(scalar) == 1 && mf_tensor_nbytes(scalar) == 8, "scalar");
  FT_CHECK(empty && mf_tensor_numel(empty) == 0 && empty->data, "empty tensor");
  mf_tensor_free(scalar);
  mf_tensor_free(empty);
  mf_tensor_free(NULL);
}

static void test_bad_shapes(void) {
  int64_t shape[5] = {1, 1, 1, 1, 1};
  FT_FAILS_WITH(!mf_tensor_new(MF_F32, 5, shape), "5 dimensions");
  FT_FAILS_WITH(!mf_tensor_new(MF_F32, -1, shape), "-1 dimensions");
  FT_FAILS_WITH(!mf_tensor_new(MF_F32, 2, (int64_t[]){4, -3}), "dimension 1 is negative (-3)");
  FT_FAILS_WITH(!mf_tensor_new(MF_F32, 3, (int64_t[]){1ll << 30, 1ll << 30, 1ll << 30}), "too large");
  FT_FAILS_WITH(!mf_tensor_new((mf_dtype)9, 1, shape), "invalid dtype");
  FT_FAILS_WITH(!mf_tensor_view(MF_F32, 1, (int64_t[]){4}, NULL), "NULL");
}

/* Half-precision value computed independently of the engine. */
static double f16_reference(uint16_t h) {
  int exp = (h >> 10) & 31, mant = h & 1023;
  double mag = exp == 0 ? ldexp(mant, -24) : exp == 31 ? (mant ? NAN : INFINITY) : ldexp(1024 + mant, exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

/* Every 16-bit pattern widens to float and narrows back to itself; NaNs
 * come back quiet. */
static void test_half_round_trip(mf_dtype half, uint16_t quiet_bit) {
  mf_tensor *h = vector(half, 65536);
  for (int i = 0; i < 65536; i++) ((uint16_t *)h->data)[i] = (uint16_t)i;
  mf_tensor *f = mf_tensor_convert(h, MF_F32), *back = f ? mf_tensor_convert(f, half) : NULL;
  FT_CHECK(back, "%s round trip: %s", mf_dtype_name(half), mf_errmsg());
  int bad = 0;
  for (int i = 0; back && i < 65536 && bad < 5; i++) {
    float x = ((float *)f->data)[i];
    uint16_t got = ((uint16_t *)back->data)[i];
    double want = half == MF_F16 ? f16_reference((uint16_t)i) : 0;
    int nan = isnan(x);
    int ok = nan ? got == (i | quiet_bit) : got == i;
    if (half == MF_F16) ok = ok && (nan ? isnan(want) : (double)x == want);
    if (!ok) bad++;
    FT_CHECK(ok, "%s pattern 0x%04x: widened %g, back 0x%04x", mf_dtype_name(half), i, x, got);
  }
  mf_tensor_free(back);
  mf_tensor_free(f);
  mf_tensor_free(h);
}

static mf_tensor *tensor_of_bits(mf_dtype dtype, json_t *bits) {
  mf_tensor *t = vector(dtype, (int64_t)json_array_size(bits));
  for (size_t i = 0; i < json_array_size(bits); i++) {
    uint64_t v = (uint64_t)json_integer_value(json_array_get(bits, i));
    memcpy((char *)t->data + i * mf_dtype_size(dtype), &v, mf_dtype_size(dtype));
  }
  return t;
}

/* F32 -> F16/BF16 rounding matches PyTorch bit for bit (any NaN for NaN). */
static void test_narrowing_matches_torch(json_t *expected) {
  json_t *conv = json_object_get(expected, "conversions");
  mf_tensor *f32 = tensor_of_bits(MF_F32, json_object_get(conv, "f32"));
  const struct { const char *key; mf_dtype dtype; } cases[] = {{"f16", MF_F16}, {"bf16", MF_BF16}};
  for (int c = 0; c < 2; c++) {
    mf_tensor *got = mf_tensor_convert(f32, cases[c].dtype);
    mf_tensor *want = tensor_of_bits(cases[c].dtype, json_object_get(conv, cases[c].key));
    mf_tensor *got32 = mf_tensor_convert(got, MF_F32), *want32 = mf_tensor_convert(want, MF_F32);
    for (int64_t i = 0; i < mf_tensor_numel(f32); i++) {
      float g = ((float *)got32->data)[i], w = ((float *)want32->data)[i];
      int same = isnan(w) ? isnan(g) : ft_bits(got, i) == ft_bits(want, i);
      FT_CHECK(same, "%s of f32 0x%08llx: got 0x%04llx, torch 0x%04llx", cases[c].key,
               (unsigned long long)ft_bits(f32, i), (unsigned long long)ft_bits(got, i),
               (unsigned long long)ft_bits(want, i));
    }
    mf_tensor_free(got);
    mf_tensor_free(want);
    mf_tensor_free(got32);
    mf_tensor_free(want32);
  }
  mf_tensor_free(f32);
}

static void test_integer_conversions(void) {
  mf_tensor *wide = vector(MF_I64, 3);
  int64_t *w = wide->data;
  w[0] = -5, w[1] = INT32_MAX, w[2] = INT32_MIN;
  mf_tensor *narrow = mf_tensor_convert(wide, MF_I32), *again = narrow ? mf_tensor_convert(narrow, MF_I64) : NULL;
  FT_CHECK(again && !memcmp(again->data, wide->data, 24), "I64 -> I32 -> I64");
  w[1] = (int64_t)INT32_MAX + 1;
  FT_FAILS_WITH(!mf_tensor_convert(wide, MF_I32), "element 1 (2147483648) does not fit in I32");
  FT_FAILS_WITH(!mf_tensor_convert(wide, MF_F32), "cannot convert I64 to F32");
  mf_tensor_free(again);
  mf_tensor_free(narrow);
  mf_tensor_free(wide);
}

int main(void) {
  json_t *expected = ft_expected();
  test_dtypes();
  test_new_and_view();
  test_bad_shapes();
  test_half_round_trip(MF_F16, 0x200);
  test_half_round_trip(MF_BF16, 0x40);
  test_narrowing_matches_torch(expected);
  test_integer_conversions();
  json_decref(expected);
  return ft_finish();
}
