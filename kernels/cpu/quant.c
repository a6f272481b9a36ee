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

static float dot_q8_0(const void *w, const mfk_block_q8_act *x, int64_t nb) {
  const mfk_block_q8_0 *b = w;
  float sum = 0;
  for (int64_t i = 0; i < nb; i++) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += b[i].qs[j] * x[i].qs[j];
    sum += (mfk_f16_to_f32(b[i].d) * x[i].d) * (float)s;
  }
  return sum;
}

static float dot_q4_0(const void *w, const mfk_block_q8_act *x, int64_t nb) {
  const mfk_block_q4_0 *b = w;
  float sum = 0;
  for (int64_t i = 0; i < nb; i++) {
    int s = 0;
    for (int j = 0; j < 16; j++)
      s += ((b[i].qs[j] & 15) - 8) * x[i].qs[j] + ((b[i].qs[j] >> 4) - 8) * x[i].qs[j + 16];
    sum += (mfk_f16_to_f32(b[i].d) * x[i].d) * (float)s;
  }
  return sum;
}

static float dot_q4_1(const void *w, const mfk_block_q8_act *x, int64_t nb) {
  const mfk_block_q4_1 *b = w;
  float sum = 0;
  for (int64_t i = 0; i < nb; i++) {
    int s = 0;
    for (int j = 0; j < 16; j++) s += (b[i].qs[j] & 15) * x[i].qs[j] + (b[i].qs[j] >> 4) * x[i].qs[j + 16];
    sum += (mfk_f16_to_f32(b[i].d) * x[i].d) * (float)s + mfk_f16_to_f32(b[i].m) * x[i].s;
  }
  return sum;
}

static const mfk_qdots qdots_generic = {dot_q8_0, dot_q4_0, dot_q4_1};

static const mfk_qdots *best_qdots(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &mfk_qdots_avx2;
#endif
  return &qdots_generic;
}

/* ---- driver ---- */

typedef struct qgemm_job {
  mfk_qdot_fn dot;
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

static void dot_columns(void *ctx, int64_t begin, int64_t end) {
  qgemm_job *j = ctx;
  for (int64_t r = 0; r < j->rows; r++) {
    const mfk_block_q8_act *a = j->act + r * j->nb;
    float *y = j->y + r * j->out;
    for (int64_t c = begin; c < end; c++) {
      float v = j->dot(j->w + c * j->row_bytes, a, j->nb);
      y[c] = j->accumulate ? y[c] + v : v;
    }
  }
}

void mfk_qgemm(mfk_pool *pool, mfk_qtype type, float *y, int accumulate, const float *x,
               const void *w, int64_t rows, int64_t out, int64_t in, mfk_block_q8_act *act) {
  const mfk_qdots *dots = best_qdots();
  mfk_qdot_fn dot = type == MFK_Q8_0 ? dots->q8_0 : type == MFK_Q4_0 ? dots->q4_0 : dots->q4_1;
  int64_t nb = in / MFK_QBLOCK;
  qgemm_job j = {dot, y, accumulate, x, w, rows, out, nb, (size_t)nb * mfk_qblock_bytes(type), act};
  if (rows * nb >= 4096) mfk_parallel_for(pool, rows * nb, quantize_rows, &j);
  else quantize_rows(&j, 0, rows * nb);
  mfk_parallel_for(pool, out, dot_columns, &j);
}
