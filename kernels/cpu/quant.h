/*
 * Dot products of the quantized matmul, one set per instruction set; the
 * driver is quant.c. One weight row of nb blocks of a type times up to
 * MFK_QROWS activation rows at once, so a weight block is loaded and
 * unpacked once for all of them. Every set sums a block's integer products
 * exactly and scales them per block. Each activation row gets its own
 * accumulators, updated in the same order however many rows come along, so
 * a row's result never depends on the rows grouped with it; sets differ
 * only in float summation order.
 */
#ifndef MFK_QUANT_H
#define MFK_QUANT_H

#include "cpu/kernels.h"

enum { MFK_QROWS = 4 };

/* out[r] = dot(weight row w, activation row r) for r < rows <= MFK_QROWS;
 * activation row r starts at x + r * x_stride blocks. */
typedef void (*mfk_qdot_rows_fn)(mfk_qtype type, const void *w, const mfk_block_q8_act *x,
                                 int64_t x_stride, int64_t nb, int rows, float *out);

#if defined(__x86_64__)
extern const mfk_qdot_rows_fn mfk_qdot_rows_avx2;
extern const mfk_qdot_rows_fn mfk_qdot_rows_vnni;
#endif

#endif
