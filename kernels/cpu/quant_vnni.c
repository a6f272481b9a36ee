/*
 * AVX-512 VNNI dot products for the quantized matmul (body in
 * quant_rows.h): vpdpbusd multiplies the u8 x s8 pairs and sums each group
 * of four into an i32 lane in one instruction, exactly, where AVX2 needs
 * maddubs and madd. The sums, and so the results, equal the
 * AVX2 set's bit for bit. Uses 256-bit registers (AVX512VL), which also
 * gives the row accumulators sixteen more of them.
 */
#if defined(__x86_64__)
#include "cpu/quant.h"

#include <immintrin.h>

#define QR_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))

static QR_TARGET inline __m256i dot_u8_s8(__m256i u, __m256i s) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

#include "cpu/quant_rows.h"

const mfk_qdot_group_fn mfk_qdot_group_vnni = qdot_group;
#endif
