/*
 * Rotary position embedding, HF "rotate half" layout: element i of a head is
 * paired with element i + head_dim/2.
 *
 * Frequencies and angles are formed in float as HF does (inv_freq =
 * 1 / theta^(2i/hd), angle = pos * inv_freq), so positions far along the
 * sequence round the same way; cos and sin are then taken in double. The
 * backward pass is the same rotation by the opposite angle.
 */
#include "cpu/common.h"

enum { PAIRS = 64 }; /* frequencies handled at a time, any head_dim */

typedef struct rope_job {
  float *x;
  const int32_t *pos;
  int64_t rows, heads, hd;
  float theta, sign;
} rope_job;

static void rope_rows(void *arg, int64_t r0, int64_t r1) {
  const rope_job *job = arg;
  int64_t half = job->hd / 2;
  float inv_freq[PAIRS], cs[PAIRS], sn[PAIRS];
  for (int64_t i0 = 0; i0 < half; i0 += PAIRS) {
    int64_t count = mfk_min(PAIRS, half - i0);
    for (int64_t i = 0; i < count; i++)
      inv_freq[i] = 1.0f / powf(job->theta, (float)(2 * (i0 + i)) / (float)job->hd);
    for (int64_t r = r0; r < r1; r++) {
      for (int64_t i = 0; i < count; i++) {
        double angle = (float)job->pos[r] * inv_freq[i];
        cs[i] = (float)cos(angle);
        sn[i] = job->sign * (float)sin(angle);
      }
      for (int64_t h = 0; h < job->heads; h++) {
        float *lo = job->x + (r * job->heads + h) * job->hd + i0, *hi = lo + half;
        for (int64_t i = 0; i < count; i++) {
          float a = lo[i], b = hi[i];
          lo[i] = a * cs[i] - b * sn[i];
          hi[i] = b * cs[i] + a * sn[i];
        }
      }
    }
  }
}

static void rope(mfk_pool *pool, float *x, const int32_t *pos, int64_t rows, int64_t heads,
                 int64_t hd, float theta, float sign) {
  rope_job job = { x, pos, rows, heads, hd, theta, sign };
  mfk_parallel_for(pool, rows, rope_rows, &job);
}

void mfk_rope_fwd(mfk_pool *pool, float *x, const int32_t *pos, int64_t rows, int64_t heads,
                  int64_t head_dim, float theta) {
  rope(pool, x, pos, rows, heads, head_dim, theta, 1.0f);
}

void mfk_rope_bwd(mfk_pool *pool, float *dx, const int32_t *pos, int64_t rows, int64_t heads,
                  int64_t head_dim, float theta) {
  rope(pool, dx, pos, rows, heads, head_dim, theta, -1.0f);
}
