/*
 * Row dot products of the quantized matmul, one set per instruction set;
 * the driver is quant.c. A row of nb weight blocks of one type times nb
 * activation blocks; every set sums the blocks' integer products exactly
 * and scales them per block, so sets differ only in float summation order.
 */
#ifndef MFK_QUANT_H
#define MFK_QUANT_H

#include "cpu/kernels.h"

typedef float (*mfk_qdot_fn)(const void *w, const mfk_block_q8_act *x, int64_t nb);

typedef struct mfk_qdots {
  mfk_qdot_fn q8_0, q4_0, q4_1;
} mfk_qdots;

#if defined(__x86_64__)
extern const mfk_qdots mfk_qdots_avx2;
#endif

#endif
