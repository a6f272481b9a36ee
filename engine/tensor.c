/*
 * Tensors: dense row-major arrays of up to 4 dimensions, and conversions
 * between element types.
 *
 * Owned data is zero-filled and 64-byte aligned (kernels use SIMD loads);
 * its allocation is rounded up to whole 64-byte lines so that a vector loop
 * may read the last line whole. Shapes are validated once, here, so every
 * other module can trust numel and nbytes. Conversions between F32, F16 and
 * BF16 round to nearest, ties to even, exactly as numpy and PyTorch do; they
 * go through float, which holds every F16 and BF16 value exactly. A NaN
 * narrows to a quiet NaN of the same sign and leading payload bits, as the
 * F16C and AVX-512 BF16 instructions do.
 */
#include "formats.h"
#include "internal.h"
#include "moonforge.h"

#include <stdlib.h>
#include <string.h>

enum { ALIGNMENT = 64, MAX_DIMS = 4 };

static const struct {
  const char *name;
  size_t size;
} dtypes[] = {
  [MF_F32] = {"F32", 4}, [MF_F16] = {"F16", 2}, [MF_BF16] = {"BF16", 2},
  [MF_I32] = {"I32", 4}, [MF_I64] = {"I64", 8}, [MF_U8] = {"U8", 1},
};

static int dtype_valid(mf_dtype dtype) { return (unsigned)dtype <= MF_U8; }

size_t mf_dtype_size(mf_dtype dtype) { return dtype_valid(dtype) ? dtypes[dtype].size : 0; }

const char *mf_dtype_name(mf_dtype dtype) { return dtype_valid(dtype) ? dtypes[dtype].name : "invalid"; }

/* ---- half and bfloat16 ---- */

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* m >> s, rounded to nearest with ties to even; 1 <= s <= 31. */
static uint32_t shift_round_even(uint32_t m, int s) {
  uint32_t q = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
  return q + (rem > half || (rem == half && (q & 1)));
}

uint16_t mf_f32_to_f16(float x) {
  uint32_t u = f32_bits(x), mag = u & 0x7fffffffu;
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  if (mag > 0x7f800000u) return sign | 0x7e00 | ((mag >> 13) & 0x3ff);  /* quiet NaN */
  if (mag >= 0x477ff000u) return sign | 0x7c00;  /* 65520 and up round to infinity */
  if (mag >= 0x38800000u)                        /* normal half: rebias 127 -> 15 */
    return sign | (uint16_t)(shift_round_even(mag, 13) - (112u << 10));
  int exp = (int)(mag >> 23);
  if (exp < 102) return sign;  /* at most 2^-25, half the smallest subnormal: zero */
  /* Subnormal half: units of 2^-24. A carry into bit 10 makes it the smallest
   * normal, which is the right encoding too. */
  return sign | (uint16_t)shift_round_even((mag & 0x7fffffu) | 0x800000u, 126 - exp);
}

uint16_t mf_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
  /* Rounding the whole pattern is right: a carry out of the mantissa bumps
   * the exponent, and the largest finite values round up to infinity. */
  return (uint16_t)shift_round_even(u, 16);
}

float mf_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) {
    float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

float mf_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* ---- shapes and allocation ---- */

int mf_shape_check(const char *what, mf_dtype dtype, int ndim, const int64_t *shape,
                   size_t *nbytes) {
  if (!dtype_valid(dtype)) return mf_fail("%s: invalid dtype %d", what, (int)dtype);
  if (ndim < 0 || ndim > MAX_DIMS)
    return mf_fail("%s: %d dimensions; 0 to %d are supported", what, ndim, MAX_DIMS);
  size_t size = dtypes[dtype].size;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return mf_fail("%s: dimension %d is negative (%lld)", what, i, (long long)shape[i]);
    if (size > 0 && (uint64_t)shape[i] > (uint64_t)(SIZE_MAX / 2) / size)
      return mf_fail("%s: shape too large (dimension %d is %lld)", what, i, (long long)shape[i]);
    size *= (size_t)shape[i];
  }
  *nbytes = size;
  return 0;
}

static mf_tensor *tensor_alloc(mf_dtype dtype, int ndim, const int64_t *shape, size_t *nbytes) {
  if (mf_shape_check("tensor", dtype, ndim, shape, nbytes) != 0) return NULL;
  mf_tensor *t = calloc(1, sizeof *t);
  if (!t) return mf_fail_null("tensor: out of memory");
  t->dtype = dtype;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  return t;
}

mf_tensor *mf_tensor_new(mf_dtype dtype, int ndim, const int64_t *shape) {
  size_t nbytes;
  mf_tensor *t = tensor_alloc(dtype, ndim, shape, &nbytes);
  if (!t) return NULL;
  size_t padded = (nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
  if (padded == 0) padded = ALIGNMENT;  /* aligned_alloc of 0 bytes may return NULL */
  t->data = aligned_alloc(ALIGNMENT, padded);
  if (!t->data) {
    free(t);
    return mf_fail_null("tensor: out of memory allocating %zu bytes", nbytes);
  }
  memset(t->data, 0, padded);
  t->owns_data = 1;
  return t;
}

mf_tensor *mf_tensor_view(mf_dtype dtype, int ndim, const int64_t *shape, void *data) {
  size_t nbytes;
  mf_tensor *t = tensor_alloc(dtype, ndim, shape, &nbytes);
  if (!t) return NULL;
  if (!data && nbytes > 0) {
    free(t);
    return mf_fail_null("tensor: view of %zu bytes at NULL", nbytes);
  }
  t->data = data;
  return t;
}

void mf_tensor_free(mf_tensor *t) {
  if (!t) return;
  if (t->owns_data) free(t->data);
  free(t);
}

int64_t mf_tensor_numel(const mf_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t mf_tensor_nbytes(const mf_tensor *t) {
  return (size_t)mf_tensor_numel(t) * mf_dtype_size(t->dtype);
}

/* ---- conversion ---- */

static int is_float(mf_dtype d) { return d == MF_F32 || d == MF_F16 || d == MF_BF16; }
static int is_int(mf_dtype d) { return d == MF_I32 || d == MF_I64; }

static float load_float(mf_dtype d, const void *p, int64_t i) {
  switch (d) {
  case MF_F16: return mf_f16_to_f32(((const uint16_t *)p)[i]);
  case MF_BF16: return mf_bf16_to_f32(((const uint16_t *)p)[i]);
  default: return ((const float *)p)[i];
  }
}

static void convert_floats(void *dst, mf_dtype to, const void *src, mf_dtype from, int64_t n) {
  switch (to) {
  case MF_F16:
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = mf_f32_to_f16(load_float(from, src, i));
    break;
  case MF_BF16:
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = mf_f32_to_bf16(load_float(from, src, i));
    break;
  default:
    for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = load_float(from, src, i);
    break;
  }
}

static int convert_ints(void *dst, mf_dtype to, const void *src, mf_dtype from, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    int64_t v = from == MF_I64 ? ((const int64_t *)src)[i] : ((const int32_t *)src)[i];
    if (to == MF_I64) {
      ((int64_t *)dst)[i] = v;
    } else if (v < INT32_MIN || v > INT32_MAX) {
      return mf_fail("tensor: element %lld (%lld) does not fit in I32", (long long)i, (long long)v);
    } else {
      ((int32_t *)dst)[i] = (int32_t)v;
    }
  }
  return 0;
}

mf_tensor *mf_tensor_convert(const mf_tensor *t, mf_dtype dtype) {
  int same_kind = t->dtype == dtype || (is_float(t->dtype) && is_float(dtype)) ||
                  (is_int(t->dtype) && is_int(dtype));
  if (!same_kind)
    return mf_fail_null("tensor: cannot convert %s to %s", mf_dtype_name(t->dtype), mf_dtype_name(dtype));
  mf_tensor *out = mf_tensor_new(dtype, t->ndim, t->shape);
  if (!out) return NULL;
  int64_t n = mf_tensor_numel(t);
  if (t->dtype == dtype) {
    memcpy(out->data, t->data, mf_tensor_nbytes(t));
  } else if (is_float(dtype)) {
    convert_floats(out->data, dtype, t->data, t->dtype, n);
  } else if (convert_ints(out->data, dtype, t->data, t->dtype, n) != 0) {
    mf_tensor_free(out);
    return NULL;
  }
  return out;
}
