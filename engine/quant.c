/*
 * ggml's block formats: sizes of every type llama.cpp defines up to BF16,
 * decoding of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K, and encoding
 * of F32, F16, BF16, Q8_0, Q4_0 and Q4_1 (see quant.h for the contract).
 *
 * The K-quants hold 256 weights in a super-block:
 *   Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}: eight groups of 32, each
 *     with a 6-bit scale and 6-bit min packed into `scales`;
 *     w = d*sc * q - dmin*mn, where q is the low nibble of qs for the first
 *     32 of each 64 and the high nibble for the second.
 *   Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 6-bit values, low 4
 *     bits in ql and high 2 in qh, offset by 32; sixteen groups of 16 with
 *     an int8 scale each; w = d * scale * (q - 32).
 */
#include "quant.h"
#include "internal.h"
#include "moonforge.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { QK_K = 256 };

typedef struct block_q4_k {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[QK_K / 2];
} block_q4_k;

typedef struct block_q6_k {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;
} block_q6_k;

/* Indexed by ggml type number; name NULL marks numbers ggml retired. */
static const mf_ggml_type types[] = {
  [0] = {"F32", 1, 4, 1},       [1] = {"F16", 1, 2, 1},      [2] = {"Q4_0", 32, 18, 1},
  [3] = {"Q4_1", 32, 20, 1},    [6] = {"Q5_0", 32, 22, 0},   [7] = {"Q5_1", 32, 24, 0},
  [8] = {"Q8_0", 32, 34, 1},    [9] = {"Q8_1", 32, 36, 0},   [10] = {"Q2_K", 256, 84, 0},
  [11] = {"Q3_K", 256, 110, 0}, [12] = {"Q4_K", 256, 144, 1}, [13] = {"Q5_K", 256, 176, 0},
  [14] = {"Q6_K", 256, 210, 1}, [15] = {"Q8_K", 256, 292, 0}, [24] = {"I8", 1, 1, 0},
  [25] = {"I16", 1, 2, 0},      [26] = {"I32", 1, 4, 0},     [27] = {"I64", 1, 8, 0},
  [28] = {"F64", 1, 8, 0},      [30] = {"BF16", 1, 2, 1},
};
enum { NTYPES = sizeof types / sizeof types[0] };

const mf_ggml_type *mf_ggml_type_info(int type) {
  return type >= 0 && type < NTYPES && types[type].name ? &types[type] : NULL;
}

const char *mf_ggml_type_name(int type) {
  static _Thread_local char buf[32];
  const mf_ggml_type *t = mf_ggml_type_info(type);
  if (t) return t->name;
  snprintf(buf, sizeof buf, "type %d", type);
  return buf;
}

/* ---- decoding ---- */

static void decode_q8_0(const mfk_block_q8_0 *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++, y += 32) {
    float d = mf_f16_to_f32(b[i].d);
    for (int j = 0; j < 32; j++) y[j] = b[i].qs[j] * d;
  }
}

static void decode_q4_0(const mfk_block_q4_0 *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++, y += 32) {
    float d = mf_f16_to_f32(b[i].d);
    for (int j = 0; j < 16; j++) {
      y[j] = ((b[i].qs[j] & 15) - 8) * d;
      y[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

static void decode_q4_1(const mfk_block_q4_1 *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++, y += 32) {
    float d = mf_f16_to_f32(b[i].d), m = mf_f16_to_f32(b[i].m);
    for (int j = 0; j < 16; j++) {
      y[j] = (b[i].qs[j] & 15) * d + m;
      y[j + 16] = (b[i].qs[j] >> 4) * d + m;
    }
  }
}

/* Scale and min of group j (0..7) of a Q4_K block: 6 bits each; groups 4..7
 * keep their low 4 bits in scales[8..11] and their top 2 in the spare top
 * bits of scales[0..7]. */
static void q4_k_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
    *mn = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

static void decode_q4_k(const block_q4_k *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++) {
    float d = mf_f16_to_f32(b[i].d), dmin = mf_f16_to_f32(b[i].dmin);
    const uint8_t *q = b[i].qs;
    for (int g = 0; g < 8; g += 2, q += 32) {
      uint8_t sc, mn;
      q4_k_scale_min(g, b[i].scales, &sc, &mn);
      float d1 = d * sc, m1 = dmin * mn;
      q4_k_scale_min(g + 1, b[i].scales, &sc, &mn);
      float d2 = d * sc, m2 = dmin * mn;
      for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 15) - m1;
      for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

static void decode_q6_k(const block_q6_k *b, float *y, int64_t nb) {
  for (int64_t i = 0; i < nb; i++) {
    float d = mf_f16_to_f32(b[i].d);
    const uint8_t *ql = b[i].ql, *qh = b[i].qh;
    const int8_t *sc = b[i].scales;
    for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; l++) {
        int is = l / 16;
        int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
        int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
        int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

int mf_ggml_decode(int type, const void *src, float *dst, int64_t n) {
  const mf_ggml_type *t = mf_ggml_type_info(type);
  if (!t || !t->decodable) return mf_fail("ggml type %s cannot be decoded", mf_ggml_type_name(type));
  if (n % t->block) return mf_fail("%lld values are not whole %s blocks", (long long)n, t->name);
  int64_t nb = n / t->block;
  const uint16_t *h = src;
  switch (type) {
  case MF_GGML_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
  case MF_GGML_F16: for (int64_t i = 0; i < n; i++) dst[i] = mf_f16_to_f32(h[i]); break;
  case MF_GGML_BF16: for (int64_t i = 0; i < n; i++) dst[i] = mf_bf16_to_f32(h[i]); break;
  case MF_GGML_Q8_0: decode_q8_0(src, dst, nb); break;
  case MF_GGML_Q4_0: decode_q4_0(src, dst, nb); break;
  case MF_GGML_Q4_1: decode_q4_1(src, dst, nb); break;
  case MF_GGML_Q4_K: decode_q4_k(src, dst, nb); break;
  case MF_GGML_Q6_K: decode_q6_k(src, dst, nb); break;
  }
  return 0;
}

/* ---- encoding ---- */

/* Q4_0: the scale maps the block's value of largest magnitude to -8, so
 * both signs keep their full range on the side that needs it. */
static void encode_q4_0(const float *x, mfk_block_q4_0 *b) {
  float extreme = 0.0f;
  for (int j = 0; j < 32; j++)
    if (fabsf(x[j]) > fabsf(extreme)) extreme = x[j];
  float d = extreme / -8.0f, inv = d != 0.0f ? 1.0f / d : 0.0f;
  b->d = mf_f32_to_f16(d);
  for (int j = 0; j < 16; j++) {
    int lo = (int)(int8_t)(x[j] * inv + 8.5f), hi = (int)(int8_t)(x[j + 16] * inv + 8.5f);
    b->qs[j] = (uint8_t)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
  }
}

/* Q4_1: sixteen steps from the block's minimum to its maximum. */
static void encode_q4_1(const float *x, mfk_block_q4_1 *b) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; j++) {
    lo = x[j] < lo ? x[j] : lo;
    hi = x[j] > hi ? x[j] : hi;
  }
  float d = (hi - lo) / 15.0f, inv = d != 0.0f ? 1.0f / d : 0.0f;
  b->d = mf_f32_to_f16(d);
  b->m = mf_f32_to_f16(lo);
  for (int j = 0; j < 16; j++) {
    int q0 = (int)(int8_t)((x[j] - lo) * inv + 0.5f), q1 = (int)(int8_t)((x[j + 16] - lo) * inv + 0.5f);
    b->qs[j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
  }
}

int mf_ggml_encode(int type, const float *src, void *dst, int64_t n) {
  uint16_t *h = dst;
  mfk_block_q8_0 *b = dst;
  const mf_ggml_type *t = mf_ggml_type_info(type);
  if (t && n % t->block) return mf_fail("%lld values are not whole %s blocks", (long long)n, t->name);
  switch (type) {
  case MF_GGML_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return 0;
  case MF_GGML_F16: for (int64_t i = 0; i < n; i++) h[i] = mf_f32_to_f16(src[i]); return 0;
  case MF_GGML_BF16: for (int64_t i = 0; i < n; i++) h[i] = mf_f32_to_bf16(src[i]); return 0;
  case MF_GGML_Q8_0:
    for (int64_t i = 0; i < n / 32; i++) b[i].d = mf_f32_to_f16(mfk_quantize_q8(src + 32 * i, b[i].qs));
    return 0;
  case MF_GGML_Q4_0:
    for (int64_t i = 0; i < n / 32; i++) encode_q4_0(src + 32 * i, (mfk_block_q4_0 *)dst + i);
    return 0;
  case MF_GGML_Q4_1:
    for (int64_t i = 0; i < n / 32; i++) encode_q4_1(src + 32 * i, (mfk_block_q4_1 *)dst + i);
    return 0;
  }
  return mf_fail("ggml type %s cannot be written", mf_ggml_type_name(type));
}
