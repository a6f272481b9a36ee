/*
 * bf16 GEMM micro-kernels, one per instruction set; the driver is
 * gemm_bf16.c. Not part of the kernel API (tests and benchmarks use it).
 *
 * Packed panels hold bf16 values in pairs along K, one pair to a 32-bit
 * word, the even k in the low half and the odd k in the high half: the
 * operand layout of AVX512_BF16's vdpbf16ps. A micro-kernel multiplies a
 * packed MR x kp-pair panel of A (pair p of row i at a[p*MR + i]) by a packed
 * kp-pair x NR panel of B (pair p of column j at b[p*NR + j]) and stores
 * C = alpha * acc + beta * C over the full MR x NR tile, as one fused
 * multiply-add, fma(beta, C, alpha*acc) (beta == 0 ignores C's old contents).
 *
 * acc starts at zero and takes, pair after pair, acc += a_odd*b_odd, then
 * acc += a_even*b_even, each sum rounded to f32: the instruction's order.
 * A product of two bf16 values is exact in f32 (8-bit significands), so a
 * step is one rounding whether or not it is fused, and every micro-kernel
 * gives the same bits as long as no product or sum is subnormal (the
 * instruction flushes those to zero) and no product overflows.
 */
#ifndef MFK_GEMM_BF16_H
#define MFK_GEMM_BF16_H

#include "cpu/kernels.h"

#include <stdint.h>

typedef void (*mfk_bf16_ukernel_fn)(int64_t kp, const uint32_t *a, const uint32_t *b, float *c,
                                    int64_t ldc, float alpha, float beta);

typedef struct mfk_bf16_ukernel {
  const char *isa;
  int mr, nr;
  mfk_bf16_ukernel_fn run;
} mfk_bf16_ukernel;

extern const mfk_bf16_ukernel mfk_bf16_ukernel_generic;
#if defined(__x86_64__)
extern const mfk_bf16_ukernel mfk_bf16_ukernel_avx512;
#endif

/* The micro-kernel mfk_gemm_bf16 uses on this machine. */
const mfk_bf16_ukernel *mfk_gemm_bf16_best_ukernel(void);

/* mfk_gemm_bf16 and mfk_gemm_f32_bf16 with a given micro-kernel: exactly one
 * of A16 (bf16) and A32 (f32, rounded to bf16 on packing) is non-NULL. */
void mfk_gemm_bf16_using(const mfk_bf16_ukernel *uk, mfk_pool *pool, int trans_a, int trans_b,
                         int64_t M, int64_t N, int64_t K, float alpha, const uint16_t *A16,
                         const float *A32, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                         float *C, int64_t ldc);

#endif
