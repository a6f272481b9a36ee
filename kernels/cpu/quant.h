/*
 * The quantized matmul's weight layout and its dot products, one set per
 * instruction set; the driver is quant.c.
 *
 * mfk_qpack groups a weight's rows by eight: group g holds rows 8g..8g+7,
 * and for each block index i one record of the eight rows' block i, so
 * that a SIMD register holds one value per row and one register of results
 * is eight outputs. A record keeps the eight f16 scales (then the eight
 * offsets for Q4_1) and the quants in chunks of four bytes: chunk c holds
 * bytes 4c..4c+3 of each row's qs, row by row. For Q4 the low nibbles of
 * chunk c are weights 4c..4c+3 and the high nibbles weights 16+4c..16+4c+3;
 * for Q8_0 chunk c is weights 4c..4c+3. Rows past `out` in the last group
 * are zero.
 *
 * A dot product set takes one group against up to MFK_QROWS activation
 * rows, a group's weights being loaded and unpacked once for all of them.
 * Every set sums a block's integer products exactly and scales them per
 * block. Each activation row gets its own accumulators, updated in the same
 * order however many rows come along, so a row's result never depends on
 * the rows grouped with it; sets differ only in float summation order.
 */
#ifndef MFK_QUANT_H
#define MFK_QUANT_H

#include "cpu/kernels.h"

enum { MFK_QROWS = 2, MFK_QLANES = 8 };

typedef struct mfk_q8_0x8 { uint16_t d[8]; int8_t qs[8 * 32]; } mfk_q8_0x8;
typedef struct mfk_q4_0x8 { uint16_t d[8]; uint8_t qs[8 * 16]; } mfk_q4_0x8;
typedef struct mfk_q4_1x8 { uint16_t d[8], m[8]; uint8_t qs[8 * 16]; } mfk_q4_1x8;

/* Bytes of one record (eight rows' block i) of type. */
static inline size_t mfk_qrecord_bytes(mfk_qtype type) {
  return type == MFK_Q8_0 ? sizeof(mfk_q8_0x8) : type == MFK_Q4_0 ? sizeof(mfk_q4_0x8) : sizeof(mfk_q4_1x8);
}
/* Copies lane `lane` of a record back out as one block in ggml's format. */
void mfk_qunpack_block(mfk_qtype type, const void *record, int lane, void *block);

/* out[r][l] = dot(row l of the group, activation row r) for r < rows <=
 * MFK_QROWS; the group is nb records from `group`, activation row r starts
 * at x + r * nb. */
typedef void (*mfk_qdot_group_fn)(mfk_qtype type, const void *group, const mfk_block_q8_act *x, int64_t nb,
                                  int rows, float out[][MFK_QLANES]);

#if defined(__x86_64__)
extern const mfk_qdot_group_fn mfk_qdot_group_avx2;
extern const mfk_qdot_group_fn mfk_qdot_group_vnni;
#endif

#endif
