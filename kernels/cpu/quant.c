/*
 * Matmul against quantized weights (Q8_0, Q4_0, Q4_1), the decoding path of
 * models kept in a GGUF file's block formats.
 *
 * As llama.cpp does on CPUs, the activations are quantized too: each block
 * of 32 becomes int8 with one float scale, so a block's dot product is an
 * exact integer sum scaled once by d_w * d_x (plus m_w * s_x for Q4_1,
 * whose weights carry an offset). Activations are quantized once per call;
 * threads then take ranges of output columns, each dot product running
 * over its blocks in order, so the thread count never changes the bits.
 * A weight row serves several activation rows per load (quant.h).
 */
#include "cpu/common.h"
#include "cpu/quant.h"

#include <string.h>

float mfk_quantize_q8(const float *x, int8_t *qs) {
  float amax = 0;
  for (int j = 0; j < MFK_QBLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
  float d = amax / 127, id = d != 0 ? 1 / d : 0;
  for (int j = 0; j < MFK_QBLOCK; j++) qs[j] = (int8_t)roundf(x[j] * id);
  return d;
}

float mfk_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
  }
  bits = exp == 31 ? sign | 0x7f800000u | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

size_t mfk_qblock_bytes(mfk_qtype type) {
  switch (type) {
  case MFK_Q8_0: return sizeof(mfk_block_q8_0);
  case MFK_Q4_0: return sizeof(mfk_block_q4_0);
  case MFK_Q4_1: return sizeof(mfk_block_q4_1);
  }
  return 0;
}

/* ---- portable dot products ---- */

/* One weight block's dot product with activation block x. */
static float dot_block(mfk_qtype type, const unsigned char *w, const mfk_block_q8_act *x) {
  int s = 0;
  if (type == MFK_Q8_0) {
    const mfk_block_q8_0 *b = (const mfk_block_q8_0 *)w;
    for (int j = 0; j < 32; j++) s += b->qs[j] * x->qs[j];
    return (mfk_f16_to_f32(b->d) * x->d) * (float)s;
  }
  if (type == MFK_Q4_0) {
    const mfk_block_q4_0 *b = (const mfk_block_q4_0 *)w;
    for (int j = 0; j < 16; j++) s += ((b->qs[j] & 15) - 8) * x->qs[j] + ((b->qs[j] >> 4) - 8) * x->qs[j + 16];
    return (mfk_f16_to_f32(b->d) * x->d) * (float)s;
  }
  const mfk_block_q4_1 *b = (const mfk_block_q4_1 *)w;
  for (int j = 0; j < 16; j++) s += (b->qs[j] & 15) * x->qs[j] + (b->qs[j] >> 4) * x->qs[j + 16];
  return (mfk_f16_to_f32(b->d) * x->d) * (float)s + mfk_f16_to_f32(b->m) * x->s;
}

static void qdot_rows_generic(mfk_qtype type, const void *w, const mfk_block_q8_act *x, int64_t xs,
                              int64_t nb, int rows, float *out) {
  size_t bytes = mfk_qblock_bytes(type);
  for (int r = 0; r < rows; r++) {
    float sum = 0;
    for (int64_t i = 0; i < nb; i++) sum += dot_block(type, (const unsigned char *)w + i * bytes, x + r * xs + i);
    out[r] = sum;
  }
}

static mfk_qdot_rows_fn best_qdot_rows(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) return mfk_qdot_rows_vnni;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return mfk_qdot_rows_avx2;
#endif
  return qdot_rows_generic;
}

/* ---- driver ---- */

typedef struct qgemm_job {
  mfk_qdot_rows_fn dot_rows;
  mfk_qtype type;
  float *y;
  int accumulate;
  const float *x;
  const unsigned char *w;
  int64_t rows, out, nb;
  size_t row_bytes;
  mfk_block_q8_act *act;
} qgemm_job;

static void quantize_rows(void *ctx, int64_t begin, int64_t end) {
  qgemm_job *j = ctx;
  for (int64_t b = begin; b < end; b++) {
    mfk_block_q8_act *a = &j->act[b];
    a->d = mfk_quantize_q8(j->x + b * MFK_QBLOCK, a->qs);
    int s = 0;
    for (int k = 0; k < MFK_QBLOCK; k++) s += a->qs[k];
    a->s = a->d * (float)s;
  }
}

/* Each weight row meets the activation rows MFK_QROWS at a time: its blocks
 * are read and unpacked once per group, not once per row. */
static void dot_columns(void *ctx, int64_t begin, int64_t end) {
  const qgemm_job *j = ctx;
  float v[MFK_QROWS];
  for (int64_t c = begin; c < end; c++)
    for (int64_t r = 0; r < j->rows; r += MFK_QROWS) {
      int n = (int)mfk_min(MFK_QROWS, j->rows - r);
      j->dot_rows(j->type, j->w + c * j->row_bytes, j->act + r * j->nb, j->nb, j->nb, n, v);
      for (int i = 0; i < n; i++) {
        float *y = j->y + (r + i) * j->out + c;
        *y = j->accumulate ? *y + v[i] : v[i];
      }
    }
}

void mfk_qgemm(mfk_pool *pool, mfk_qtype type, float *y, int accumulate, const float *x,
               const void *w, int64_t rows, int64_t out, int64_t in, mfk_block_q8_act *act) {
  int64_t nb = in / MFK_QBLOCK;
  qgemm_job j = {best_qdot_rows(), type, y, accumulate, x, w, rows, out, nb,
                 (size_t)nb * mfk_qblock_bytes(type), act};
  if (rows * nb >= 4096) mfk_parallel_for(pool, rows * nb, quantize_rows, &j);
  else quantize_rows(&j, 0, rows * nb);
  mfk_parallel_for(pool, out, dot_columns, &j);
}
