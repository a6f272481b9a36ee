/*
 * Matmul against quantized weights (Q8_0, Q4_0, Q4_1), the decoding path of
 * models kept in a GGUF file's block formats.
 *
 * As llama.cpp does on CPUs, the activations are quantized too: each block
 * of 32 becomes int8 with one float scale, so a block's dot product is an
 * exact integer sum scaled once by d_w * d_x (plus m_w * s_x for Q4_1,
 * whose weights carry an offset). The weights are repacked once, eight rows
 * side by side (quant.h), so that one SIMD lane computes one output.
 *
 * Activations are quantized once per call, for every weight that shares
 * them (Q, K and V; gate and up); threads then take ranges of row groups
 * across those weights in one pool call, each dot product running over its
 * blocks in order, so the thread count never changes the bits. A group
 * serves several activation rows per load of its weights.
 */
#include "cpu/common.h"
#include "cpu/quant.h"

#include <string.h>

/* fmaxf and roundf (half away from zero) lane by lane, with the same
 * results: a NaN never becomes the maximum, and |x * id| <= 127 keeps
 * a - trunc(a) exact. */
typedef int8_t v16c __attribute__((vector_size(16)));

MFK_SIMD float mfk_quantize_q8(const float *x, int8_t *qs) {
  const v16i abs_mask = (v16i){0} + 0x7fffffff;
  v16 top = {0};
  for (int h = 0; h < MFK_QBLOCK; h += 16) {
    v16 a = (v16)((v16i)V16(x + h) & abs_mask);
    v16i larger = a > top;
    top = (v16)(((v16i)a & larger) | ((v16i)top & ~larger));
  }
  float amax = 0;
  for (int l = 0; l < 16; l++) amax = top[l] > amax ? top[l] : amax;
  float d = amax / 127, id = d != 0 ? 1 / d : 0;
  for (int h = 0; h < MFK_QBLOCK; h += 16) {
    v16 v = V16(x + h) * id, a = (v16)((v16i)v & abs_mask);
    v16i t = __builtin_convertvector(a, v16i);
    t -= a - __builtin_convertvector(t, v16) >= 0.5f; /* a true comparison is -1 */
    v16i negative = v < 0;
    v16c q = __builtin_convertvector((t ^ negative) - negative, v16c);
    memcpy(qs + h, &q, sizeof q);
  }
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

/* ---- the packed layout ---- */

size_t mfk_qpack_bytes(mfk_qtype type, int64_t out, int64_t in) {
  return (size_t)(mfk_ceil_div(out, MFK_QLANES) * (in / MFK_QBLOCK)) * mfk_qrecord_bytes(type);
}

/* Moves one block between ggml's format and lane `lane` of a record, into
 * the record when pack, out of it otherwise. Both formats start with the
 * f16 scales (d, then m for Q4_1) followed by the quants. */
static void move_block(mfk_qtype type, unsigned char *record, int lane, unsigned char *block, int pack) {
  int scales = type == MFK_Q4_1 ? 2 : 1, chunks = type == MFK_Q8_0 ? 8 : 4;
  for (int k = 0; k < scales + chunks; k++) {
    size_t n = k < scales ? 2 : 4;
    unsigned char *in_block = k < scales ? block + 2 * k : block + 2 * scales + 4 * (k - scales);
    unsigned char *in_record = k < scales ? record + 16 * k + 2 * lane
                                          : record + 16 * scales + 32 * (k - scales) + 4 * lane;
    if (pack) memcpy(in_record, in_block, n);
    else memcpy(in_block, in_record, n);
  }
}

void mfk_qpack(mfk_qtype type, void *packed, const void *w, int64_t out, int64_t in) {
  int64_t nb = in / MFK_QBLOCK;
  size_t bytes = mfk_qblock_bytes(type), record = mfk_qrecord_bytes(type);
  memset(packed, 0, mfk_qpack_bytes(type, out, in));
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < nb; i++)
      move_block(type, (unsigned char *)packed + (size_t)((o / MFK_QLANES) * nb + i) * record, (int)(o % MFK_QLANES),
                 (unsigned char *)w + (size_t)(o * nb + i) * bytes, 1);
}

void mfk_qunpack_block(mfk_qtype type, const void *record, int lane, void *block) {
  move_block(type, (unsigned char *)record, lane, block, 0);
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

static void qdot_group_generic(mfk_qtype type, const void *group, const mfk_block_q8_act *x, int64_t nb,
                               int rows, float out[][MFK_QLANES]) {
  size_t bytes = mfk_qrecord_bytes(type);
  unsigned char block[sizeof(mfk_block_q8_0)];
  for (int r = 0; r < rows; r++)
    for (int l = 0; l < MFK_QLANES; l++) {
      float sum = 0;
      for (int64_t i = 0; i < nb; i++) {
        mfk_qunpack_block(type, (const unsigned char *)group + i * bytes, l, block);
        sum += dot_block(type, block, x + r * nb + i);
      }
      out[r][l] = sum;
    }
}

static mfk_qdot_group_fn best_qdot_group(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) return mfk_qdot_group_vnni;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return mfk_qdot_group_avx2;
#endif
  return qdot_group_generic;
}

/* ---- driver ---- */

typedef struct qgemm_job {
  mfk_qdot_group_fn dot_group;
  const mfk_qweight *w;
  int n;
  int accumulate;
  const float *x;
  int64_t rows, nb;
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

/* Group g of weight w against every activation row, MFK_QROWS at a time. */
static void dot_rows(const qgemm_job *j, const mfk_qweight *w, int64_t g) {
  float v[MFK_QROWS][MFK_QLANES];
  const unsigned char *group = (const unsigned char *)w->packed + (size_t)(g * j->nb) * mfk_qrecord_bytes(w->type);
  int lanes = (int)mfk_min(MFK_QLANES, w->out - g * MFK_QLANES);
  for (int64_t r = 0; r < j->rows; r += MFK_QROWS) {
    int n = (int)mfk_min(MFK_QROWS, j->rows - r);
    j->dot_group(w->type, group, j->act + r * j->nb, j->nb, n, v);
    for (int i = 0; i < n; i++) {
      float *y = w->y + (r + i) * w->out + g * MFK_QLANES;
      for (int l = 0; l < lanes; l++) y[l] = j->accumulate ? y[l] + v[i][l] : v[i][l];
    }
  }
}

/* Range [begin, end) of the row groups of all the weights, one after the other. */
static void dot_groups(void *ctx, int64_t begin, int64_t end) {
  const qgemm_job *j = ctx;
  int64_t first = 0;
  for (int k = 0; k < j->n && begin < end; k++) {
    int64_t groups = mfk_ceil_div(j->w[k].out, MFK_QLANES);
    for (; begin < end && begin < first + groups; begin++) dot_rows(j, &j->w[k], begin - first);
    first += groups;
  }
}

void mfk_qgemm_many(mfk_pool *pool, int n, const mfk_qweight *w, int accumulate, const float *x, int64_t rows,
                    int64_t in, mfk_block_q8_act *act) {
  qgemm_job j = {best_qdot_group(), w, n, accumulate, x, rows, in / MFK_QBLOCK, act};
  int64_t groups = 0;
  for (int k = 0; k < n; k++) groups += mfk_ceil_div(w[k].out, MFK_QLANES);
  if (rows * j.nb >= 4096) mfk_parallel_for(pool, rows * j.nb, quantize_rows, &j);
  else quantize_rows(&j, 0, rows * j.nb);
  mfk_parallel_for(pool, groups, dot_groups, &j);
}

void mfk_qgemm(mfk_pool *pool, mfk_qtype type, float *y, int accumulate, const float *x, const void *packed,
               int64_t rows, int64_t out, int64_t in, mfk_block_q8_act *act) {
  mfk_qweight w = {type, packed, out, y};
  mfk_qgemm_many(pool, 1, &w, accumulate, x, rows, in, act);
}
