/*
 * ggml's tensor types as GGUF files store them: the table of block sizes
 * and the codecs between blocks and f32 (quant.c). Shared by the GGUF
 * reader, writer and model loader; not part of the public API.
 *
 * Decoding follows llama.cpp's reference dequantize_row_* bit for bit
 * (same operations in the same order, no fused multiply-add); encoding
 * covers what moonforge writes: F32, F16, BF16, Q8_0 (as llama.cpp's
 * quantize_row_q8_0_ref: scale amax/127 stored as f16, values roundf(x/scale)),
 * and Q4_0 and Q4_1 as its quantize_row_q4_0_ref and _q4_1_ref (Q4_0: scale
 * -max/8 from the value of largest magnitude; Q4_1: scale (max-min)/15 and
 * min; values truncated after adding 8.5, resp. 0.5, capped at 15).
 */
#ifndef MF_QUANT_H
#define MF_QUANT_H

#include <stdint.h>

enum {
  MF_GGML_F32 = 0, MF_GGML_F16 = 1, MF_GGML_Q4_0 = 2, MF_GGML_Q4_1 = 3, MF_GGML_Q8_0 = 8,
  MF_GGML_Q4_K = 12, MF_GGML_Q6_K = 14, MF_GGML_BF16 = 30
};

typedef struct mf_ggml_type {
  const char *name;
  int block;      /* elements per block */
  int bytes;      /* bytes per block */
  int decodable;  /* 1 when mf_ggml_decode handles it */
} mf_ggml_type;

/* The type's sizes, or NULL for a type number moonforge does not know. */
const mf_ggml_type *mf_ggml_type_info(int type);
/* "Q4_1", or "type 99" for unknown numbers (in a static buffer per thread). */
const char *mf_ggml_type_name(int type);
/* n values (a multiple of the block) from src into dst. */
int mf_ggml_decode(int type, const void *src, float *dst, int64_t n);
/* n floats (a multiple of the block) into dst, for the types moonforge writes. */
int mf_ggml_encode(int type, const float *src, void *dst, int64_t n);

#endif
