/*
 * Rotary position embedding, HF "rotate half" layout: element i of a head is
 * paired with element i + head_dim/2.
 *
 * Frequencies and angles are formed in float as HF does (inv_freq =
 * 1 / theta^(2i/hd), angle = pos * inv_freq), so positions far along the
 * sequence round the same way; cos and sin are then taken in double. The
 * backward pass is the same rotation by the opposite angle.
 *
 * A batch repeats the same positions in every sequence, so cos and sin are
 * computed once per distinct position into a table, rows looking their
 * position up; when positions are scattered wider than there are rows (or
 * the table cannot be had) each row computes its own, a chunk of pairs at a
 * time. Either way a rotation sees the same values.
 */
#include "cpu/common.h"

#include <stdlib.h>

enum { PAIRS = 64 }; /* pairs handled at a time without a table, any head_dim */

typedef struct rope_job {
  float *x;
  const int32_t *pos;
  int64_t rows, heads, hd;
  float theta, sign;
  /* cos then sin of position first + e at table + e * hd, or NULL */
  float *table;
  int32_t first;
} rope_job;

/* cs[i], sn[i] = cos and sign * sin of pair i0 + i at position p, i < count. */
static void angles(const rope_job *job, int32_t p, int64_t i0, int64_t count, float *cs, float *sn) {
  for (int64_t i = 0; i < count; i++) {
    float inv_freq = 1.0f / powf(job->theta, (float)(2 * (i0 + i)) / (float)job->hd);
    double angle = (float)p * inv_freq;
    cs[i] = (float)cos(angle);
    sn[i] = job->sign * (float)sin(angle);
  }
}

static void fill_table(void *arg, int64_t e0, int64_t e1) {
  const rope_job *job = arg;
  int64_t half = job->hd / 2;
  for (int64_t e = e0; e < e1; e++) {
    float *cs = job->table + e * job->hd;
    angles(job, job->first + (int32_t)e, 0, half, cs, cs + half);
  }
}

/* Rotates pairs [i0, i0 + count) of every head of row r. */
MFK_SIMD static void rotate(const rope_job *job, int64_t r, int64_t i0, int64_t count,
                            const float *cs, const float *sn) {
  int64_t half = job->hd / 2;
  for (int64_t h = 0; h < job->heads; h++) {
    float *lo = job->x + (r * job->heads + h) * job->hd + i0, *hi = lo + half;
    for (int64_t i = 0; i < count; i++) {
      float a = lo[i], b = hi[i];
      lo[i] = a * cs[i] - b * sn[i];
      hi[i] = b * cs[i] + a * sn[i];
    }
  }
}

static void rope_rows(void *arg, int64_t r0, int64_t r1) {
  const rope_job *job = arg;
  int64_t half = job->hd / 2;
  float cs[PAIRS], sn[PAIRS];
  for (int64_t r = r0; r < r1; r++) {
    if (job->table) {
      const float *row = job->table + (job->pos[r] - job->first) * job->hd;
      rotate(job, r, 0, half, row, row + half);
      continue;
    }
    for (int64_t i0 = 0; i0 < half; i0 += PAIRS) {
      int64_t count = mfk_min(PAIRS, half - i0);
      angles(job, job->pos[r], i0, count, cs, sn);
      rotate(job, r, i0, count, cs, sn);
    }
  }
}

static void rope(mfk_pool *pool, float *x, const int32_t *pos, int64_t rows, int64_t heads,
                 int64_t hd, float theta, float sign) {
  if (rows <= 0) return;
  int32_t lo = pos[0], hi = pos[0];
  for (int64_t r = 1; r < rows; r++) {
    lo = pos[r] < lo ? pos[r] : lo;
    hi = pos[r] > hi ? pos[r] : hi;
  }
  int64_t span = (int64_t)hi - lo + 1;
  rope_job job = { x, pos, rows, heads, hd, theta, sign, NULL, lo };
  if (span <= rows) job.table = malloc((size_t)(span * hd) * sizeof(float));
  if (job.table) mfk_parallel_for(pool, span, fill_table, &job);
  mfk_parallel_for(pool, rows, rope_rows, &job);
  free(job.table);
}

void mfk_rope_fwd(mfk_pool *pool, float *x, const int32_t *pos, int64_t rows, int64_t heads,
                  int64_t head_dim, float theta) {
  rope(pool, x, pos, rows, heads, head_dim, theta, 1.0f);
}

void mfk_rope_bwd(mfk_pool *pool, float *dx, const int32_t *pos, int64_t rows, int64_t heads,
                  int64_t head_dim, float theta) {
  rope(pool, dx, pos, rows, heads, head_dim, theta, -1.0f);
}
