/*
 * GEMM micro-kernels, one per instruction set; the driver is gemm.c.
 *
 * A micro-kernel multiplies a packed MR x kc panel of A (column after column:
 * a[k*MR + i]) by a packed kc x NR panel of B (row after row: b[k*NR + j])
 * and stores C = alpha * acc + beta * C over the full MR x NR tile, where acc
 * sums over k in increasing order from zero and beta == 0 ignores C's old
 * contents. The update is one fused multiply-add, C = fma(beta, C, alpha*acc).
 * The driver runs edge tiles on a full-size copy, so that every element of C
 * gets this same update.
 */
#ifndef MFK_GEMM_H
#define MFK_GEMM_H

#include "cpu/kernels.h"

#include <stdint.h>

typedef void (*mfk_ukernel_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                               float alpha, float beta);

/* Packs rows x kc of op(A) starting at a (a[i*lda + k], or a[k*lda + i]
 * when trans) into an MR x kc panel, rows < MR zero-padded; or, as pack_b,
 * cols x kc of op(B) starting at b (b[k*ldb + j], or b[j*ldb + k] when
 * trans) into a kc x NR panel, columns >= cols zero-padded. */
typedef void (*mfk_pack_fn)(int trans, const float *src, int64_t ld, int64_t count, int64_t kc, float *out);

typedef struct mfk_ukernel {
  const char *isa;
  int mr, nr;
  mfk_ukernel_fn run;
  mfk_pack_fn pack_a;  /* NULL: the driver's portable packing */
  mfk_pack_fn pack_b;  /* likewise */
} mfk_ukernel;

extern const mfk_ukernel mfk_ukernel_generic;
#if defined(__x86_64__)
extern const mfk_ukernel mfk_ukernel_avx512;
extern const mfk_ukernel mfk_ukernel_avx2;
#endif

/* The micro-kernel mfk_gemm uses on this machine. */
const mfk_ukernel *mfk_gemm_best_ukernel(void);

/* Products with at most MFK_SMALL_M rows of C skip the packing and the
 * micro-kernels: mfk_gemm_small (gemm_small.c) streams B instead. It returns
 * 0, having done nothing, when it cannot get the memory it needs. */
enum { MFK_SMALL_M = 8 };
int mfk_gemm_small(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                   float beta, float *C, int64_t ldc);

/* mfk_gemm_terms with a given micro-kernel (tests compare them). */
void mfk_gemm_terms_using(const mfk_ukernel *uk, mfk_pool *pool, int64_t M, int64_t N, int n_terms,
                          const mfk_gemm_term *terms, float alpha, float beta, float *C, int64_t ldc);

#endif
