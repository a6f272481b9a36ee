/*
 * Helpers shared by the CPU kernel sources; not part of the kernel API.
 *
 * Elementwise kernels hand the pool fixed-size blocks rather than single
 * elements, so that a range is always worth a call, and small inputs run on
 * the calling thread, where waking workers would cost more than the work.
 *
 * The kernels are built with -fno-strict-aliasing, so a store through a
 * float pointer may, for the compiler, change the argument struct the
 * pointer came from. Range functions therefore copy their arguments into a
 * local struct first: otherwise every field is reloaded after each store and
 * the loop does not vectorise.
 */
#ifndef MFK_COMMON_H
#define MFK_COMMON_H

#include "cpu/kernels.h"

#include <math.h>
#include <stdint.h>

/* Hot loops are compiled for AVX-512 and AVX2 as well as the baseline, and
 * the loader picks one for the machine (GCC function multi-versioning). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MFK_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MFK_SIMD
#endif

/* For helpers of MFK_SIMD functions that take their sizes as constants:
 * inlined, each call's loops unroll and its sums stay in registers. */
#define MFK_INLINE static inline __attribute__((always_inline))

enum { MFK_BLOCK = 1 << 14 }; /* elements per unit of elementwise work */

/* Sixteen floats as one value: a zmm register in the AVX-512 build of a
 * function, two ymm or four xmm in the others. V16(p) is the 16 floats at
 * p, which need only a float's alignment. */
typedef float v16 __attribute__((vector_size(16 * sizeof(float)), aligned(4), may_alias));
#define V16(p) (*(v16 *)(p))

/* The sum of x's lanes, added pairwise in a fixed tree: lane l + lane l + 8,
 * then l + l + 4 of those, and so on. Written with half vectors, which
 * compile to a few extracts and adds where lane-by-lane code went through
 * memory. */
typedef float v8 __attribute__((vector_size(8 * sizeof(float)), aligned(4), may_alias));
typedef float v4 __attribute__((vector_size(4 * sizeof(float)), aligned(4), may_alias));
static inline float v16_sum(v16 x) {
  v8 h = *(v8 *)&x + *((v8 *)&x + 1);
  v4 q = *(v4 *)&h + *((v4 *)&h + 1);
  return (q[0] + q[2]) + (q[1] + q[3]);
}

/* m = the larger of m and x in each lane (x where either is NaN): one
 * blend, where a lane-by-lane loop would compile to scalar code. (Through a
 * pointer: returning a v16 from a function of the baseline clone would change
 * the ABI.) */
typedef int32_t v16i __attribute__((vector_size(16 * sizeof(int32_t))));
static inline void v16_keep_max(v16 *m, v16 x) {
  v16i m_larger = *m > x;
  *m = (v16)(((v16i)*m & m_larger) | ((v16i)x & ~m_larger));
}

static inline int64_t mfk_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t mfk_max(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t mfk_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Runs fn over [0, n) in MFK_BLOCK-sized ranges of elements. */
void mfk_parallel_for_elems(mfk_pool *pool, int64_t n, mfk_range_fn fn, void *ctx);

/* Sum over i in [0, n) of item(ctx, i): items evaluated in parallel, added
 * in index order. */
typedef double (*mfk_item_fn)(void *ctx, int64_t i);
double mfk_parallel_sum(mfk_pool *pool, int64_t n, mfk_item_fn item, void *ctx);

/* exp(x) in float without libm's branches, so loops over it vectorise:
 * x = k ln2 + r with |r| <= ln2/2, exp(r) by its Taylor polynomial to r^7,
 * 2^k by building the exponent bits. Within a few ulp of expf; inputs are
 * clamped to [-87.3, 88.7], so very negative x gives ~1e-38, not 0. */
static inline float mfk_expf(float x) {
  const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  x = x < -87.33f ? -87.33f : x;
  x = x > 88.72f ? 88.72f : x;
  float k = (x * 1.44269504f + round_magic) - round_magic;
  float r = x - k * 0.693145752f; /* ln2 split: a high part exact in float */
  r = r - k * 1.42860677e-6f;     /* and the low remainder */
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  union { uint32_t u; float f; } two_k = { .u = (uint32_t)((int32_t)k + 127) << 23 };
  return p * two_k.f;
}

#endif
