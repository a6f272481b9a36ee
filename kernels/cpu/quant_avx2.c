/*
 * AVX2 dot products for the quantized matmul (body in quant_rows.h): byte
 * products are formed with maddubs (u8 x s8 pairs into i16, which cannot
 * saturate here: |u| <= 128 and |s| <= 127) and summed exactly to i32 with
 * madd.
 */
#if defined(__x86_64__)
#include "cpu/quant.h"

#include <immintrin.h>

#define QR_TARGET __attribute__((target("avx2,fma,f16c")))

static QR_TARGET inline __m256i dot_u8_s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

#include "cpu/quant_rows.h"

const mfk_qdot_group_fn mfk_qdot_group_avx2 = qdot_group;
#endif
