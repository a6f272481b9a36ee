/*
 * Sequence packing: tokenized examples laid end to end in rows of one fixed
 * length, so that a batch is not mostly padding.
 *
 * Examples fill rows in order; an example that does not fit in what is left
 * of the current row starts the next one (the rest is padding), so no example
 * is ever split. Targets are shifted within each example: the target of
 * token t is the label of token t + 1 of the same example; it is -100 at an
 * example's last token (what follows belongs to another example), on padding,
 * and wherever the label itself is -100 (a masked prompt token). Examples in
 * one row attend to each other under the row's causal mask, as packing
 * trainers do by default; only the loss stops at boundaries.
 */
#include "internal.h"
#include "moonforge.h"

static void place(const int32_t *ids, const int32_t *labels, int64_t n, int32_t *tokens, int32_t *targets) {
  for (int64_t i = 0; i < n; i++) {
    tokens[i] = ids[i];
    targets[i] = i + 1 < n ? labels[i + 1] : -100;
  }
}

static void pad(int64_t n, int32_t pad_id, int32_t *tokens, int32_t *targets) {
  for (int64_t i = 0; i < n; i++) {
    tokens[i] = pad_id;
    targets[i] = -100;
  }
}

int64_t mf_pack_rows(const int32_t *ids, const int32_t *labels, const int64_t *offsets, int64_t nexamples,
                     int64_t length, int32_t pad_id, int32_t *tokens, int32_t *targets) {
  if (length <= 0) return mf_fail("pack: row length %lld must be positive", (long long)length);
  int64_t rows = 0, used = length; /* as if a row 0 were full: the first example opens row 1 */
  for (int64_t e = 0; e < nexamples; e++) {
    int64_t begin = offsets[e], n = offsets[e + 1] - offsets[e];
    if (n < 0) return mf_fail("pack: example %lld has a negative length", (long long)e + 1);
    if (n > length)
      return mf_fail("pack: example %lld has %lld tokens, more than the row length %lld", (long long)e + 1,
                     (long long)n, (long long)length);
    if (n == 0) continue;
    if (used + n > length) {
      int64_t at = (rows - 1) * length + used;
      if (tokens && rows > 0) pad(length - used, pad_id, tokens + at, targets + at);
      rows++;
      used = 0;
    }
    int64_t at = (rows - 1) * length + used;
    if (tokens) place(ids + begin, labels + begin, n, tokens + at, targets + at);
    used += n;
  }
  int64_t at = (rows - 1) * length + used;
  if (tokens && rows > 0) pad(length - used, pad_id, tokens + at, targets + at);
  return rows;
}
