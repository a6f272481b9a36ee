/*
 * The input gradient through a frozen quantized weight, dx = dy W for W
 * [out, in] held in Q8_0, Q4_0 or Q4_1 blocks, packed for the forward
 * matmul (quant.h): what LoRA training on a quantized base needs to pass
 * gradients down the layers.
 *
 * W is decoded one tile at a time (TILE_OUT rows by TILE_IN columns, on the
 * stack) to the f32 values its blocks stand for, and each tile goes through
 * mfk_gemm. The tiles along `out` are added into dx in order, so every sum
 * runs in an order fixed by the shapes alone: the thread count never
 * changes the bits.
 */
#include "cpu/common.h"
#include "cpu/quant.h"

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

/* Block i of row o of packed W (nb blocks a row) into y[32]. */
static void decode_at(mfk_qtype type, const void *w, int64_t nb, int64_t o, int64_t i, float *y) {
  unsigned char block[sizeof(mfk_block_q8_0)];
  size_t record = (size_t)((o / MFK_QLANES) * nb + i) * mfk_qrecord_bytes(type);
  mfk_qunpack_block(type, (const unsigned char *)w + record, (int)(o % MFK_QLANES), block);
  decode_block(type, block, y);
}

void mfk_qdequantize(mfk_qtype type, float *y, const void *w, int64_t rows, int64_t in) {
  int64_t nb = in / MFK_QBLOCK;
  for (int64_t o = 0; o < rows; o++)
    for (int64_t i = 0; i < nb; i++) decode_at(type, w, nb, o, i, y + (o * nb + i) * MFK_QBLOCK);
}

/* Rows [o0, o0 + n) and columns [c0, c0 + width) of W into tile [n, width]. */
static void decode_tile(mfk_qtype type, float *tile, const void *w, int64_t nb, int64_t o0, int64_t n, int64_t c0,
                        int64_t width) {
  for (int64_t o = 0; o < n; o++)
    for (int64_t c = 0; c < width; c += MFK_QBLOCK)
      decode_at(type, w, nb, o0 + o, (c0 + c) / MFK_QBLOCK, tile + o * width + c);
}

void mfk_qgemm_t(mfk_pool *pool, mfk_qtype type, float *dx, int accumulate, const float *dy, const void *w,
                 int64_t rows, int64_t out, int64_t in) {
  _Alignas(64) float tile[TILE_OUT * TILE_IN];
  for (int64_t c0 = 0; c0 < in; c0 += TILE_IN) {
    int64_t width = in - c0 < TILE_IN ? in - c0 : TILE_IN;
    for (int64_t o0 = 0; o0 < out; o0 += TILE_OUT) {
      int64_t n = out - o0 < TILE_OUT ? out - o0 : TILE_OUT;
      decode_tile(type, tile, w, in / MFK_QBLOCK, o0, n, c0, width);
      float beta = accumulate || o0 > 0 ? 1.0f : 0.0f;
      mfk_gemm(pool, 0, 0, rows, width, n, 1.0f, dy + o0, out, tile, width, beta, dx + c0, in);
    }
  }
}
