/*
 * The input gradient through a frozen quantized weight, dx = dy W for W
 * [out, in] held in Q8_0, Q4_0 or Q4_1 blocks: what LoRA training on a
 * quantized base needs to pass gradients down the layers.
 *
 * W is decoded one tile at a time (TILE_OUT rows by TILE_IN columns, on the
 * stack) to the f32 values its blocks stand for, and each tile goes through
 * mfk_gemm. The tiles along `out` are added into dx in order, so every sum
 * runs in an order fixed by the shapes alone: the thread count never
 * changes the bits.
 */
#include "cpu/common.h"

enum { TILE_OUT = 256, TILE_IN = 64 };  /* a 64 KiB tile; TILE_IN is whole blocks */

static void decode_block(mfk_qtype type, const unsigned char *block, float *y) {
  if (type == MFK_Q8_0) {
    const mfk_block_q8_0 *b = (const mfk_block_q8_0 *)block;
    float d = mfk_f16_to_f32(b->d);
    for (int j = 0; j < 32; j++) y[j] = b->qs[j] * d;
  } else if (type == MFK_Q4_0) {
    const mfk_block_q4_0 *b = (const mfk_block_q4_0 *)block;
    float d = mfk_f16_to_f32(b->d);
    for (int j = 0; j < 16; j++) {
      y[j] = ((b->qs[j] & 15) - 8) * d;
      y[j + 16] = ((b->qs[j] >> 4) - 8) * d;
    }
  } else {
    const mfk_block_q4_1 *b = (const mfk_block_q4_1 *)block;
    float d = mfk_f16_to_f32(b->d), m = mfk_f16_to_f32(b->m);
    for (int j = 0; j < 16; j++) {
      y[j] = (b->qs[j] & 15) * d + m;
      y[j + 16] = (b->qs[j] >> 4) * d + m;
    }
  }
}

void mfk_qdequantize(mfk_qtype type, float *y, const void *w, int64_t rows, int64_t in) {
  size_t bytes = mfk_qblock_bytes(type);
  const unsigned char *b = w;
  for (int64_t i = 0; i < rows * in / MFK_QBLOCK; i++) decode_block(type, b + (size_t)i * bytes, y + i * MFK_QBLOCK);
}

/* Rows [o0, o0 + n) and columns [c0, c0 + width) of W into tile [n, width]. */
static void decode_tile(mfk_qtype type, float *tile, const unsigned char *w, size_t row_bytes, int64_t o0,
                        int64_t n, int64_t c0, int64_t width) {
  size_t bytes = mfk_qblock_bytes(type);
  for (int64_t o = 0; o < n; o++)
    for (int64_t c = 0; c < width; c += MFK_QBLOCK)
      decode_block(type, w + (size_t)(o0 + o) * row_bytes + (size_t)((c0 + c) / MFK_QBLOCK) * bytes,
                   tile + o * width + c);
}

void mfk_qgemm_t(mfk_pool *pool, mfk_qtype type, float *dx, int accumulate, const float *dy, const void *w,
                 int64_t rows, int64_t out, int64_t in) {
  _Alignas(64) float tile[TILE_OUT * TILE_IN];
  size_t row_bytes = (size_t)(in / MFK_QBLOCK) * mfk_qblock_bytes(type);
  for (int64_t c0 = 0; c0 < in; c0 += TILE_IN) {
    int64_t width = in - c0 < TILE_IN ? in - c0 : TILE_IN;
    for (int64_t o0 = 0; o0 < out; o0 += TILE_OUT) {
      int64_t n = out - o0 < TILE_OUT ? out - o0 : TILE_OUT;
      decode_tile(type, tile, w, row_bytes, o0, n, c0, width);
      float beta = accumulate || o0 > 0 ? 1.0f : 0.0f;
      mfk_gemm(pool, 0, 0, rows, width, n, 1.0f, dy + o0, out, tile, width, beta, dx + c0, in);
    }
  }
}
