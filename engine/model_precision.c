/*
 * How a model holds its weights, and changing it.
 *
 * A parameter's values live in one of these forms (model.h):
 *   f32   in the values block: value.dtype F32 (every parameter, by default);
 *   bf16  in the packed block: value.dtype BF16, value.data into it;
 *   ggml blocks (Q8_0, Q4_0, Q4_1) in the packed block, repacked for the
 *         matmul by mfk_qpack (quant, quant_type), value.data NULL; a GGUF
 *         model loaded with keep_quantized holds its blocks and the f32
 *         values decoded from them both.
 * Linear layers run on whichever form a weight has (model.c); backward goes
 * through bf16 and block weights to the input but forms no gradient of them,
 * so such weights must be frozen (LoRA's base). The optimizer, merging and
 * the embedding lookup need f32.
 *
 * mf_model_set_base_precision moves the layers' linear weights into one form
 * and frees what they held before: a bf16 base takes half the memory of an
 * f32 one, a Q4_0 base about a seventh. Embeddings, the LM head and the norms
 * stay as they are. Every change rebuilds both blocks (one allocation each,
 * as before) from the old ones, then frees the old ones; a failure leaves the
 * model as it was.
 */
#include "model.h"
#include "internal.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { KEEP = -1 };  /* a parameter whose form does not change */

static const struct { const char *name; int form; } precisions[] = {
  {"f32", MF_GGML_F32}, {"bf16", MF_GGML_BF16}, {"q8_0", MF_GGML_Q8_0}, {"q4_0", MF_GGML_Q4_0},
  {"q4_1", MF_GGML_Q4_1},
};
enum { NPRECISIONS = sizeof precisions / sizeof precisions[0] };

/* The form of p's packed part (ggml type number), or KEEP for none. */
static int packed_form(const mf_param *p) {
  if (p->quant) return p->quant_type;
  return p->value.dtype == MF_BF16 ? MF_GGML_BF16 : KEEP;
}

static int64_t rows_of(const mf_param *p) { return p->value.ndim == 2 ? p->value.shape[0] : 1; }
static int64_t cols_of(const mf_param *p) { return p->value.shape[p->value.ndim - 1]; }

static size_t packed_bytes(const mf_param *p, int form) {
  int64_t n = mf_tensor_numel(&p->value);
  if (form == MF_GGML_BF16) return (size_t)n * sizeof(uint16_t);
  if (form == KEEP) return 0;
  return mfk_qpack_bytes((mfk_qtype)form, rows_of(p), cols_of(p));
}

int mf_is_base_weight(const mf_param *p) {
  return p->value.ndim == 2 && !strncmp(p->name, "model.layers.", 13);
}

const char *mf_param_storage(const mf_param *p) {
  int form = packed_form(p);
  for (int i = 0; form != KEEP && i < NPRECISIONS; i++)
    if (precisions[i].form == form) return precisions[i].name;
  return "f32";
}

const float *mf_param_f32(const mf_param *p, float **owned) {
  *owned = NULL;
  if (mf_param_holds_f32(p)) return mf_pv(p);
  int64_t n = mf_tensor_numel(&p->value);
  float *out = malloc((size_t)n * sizeof(float));
  if (!out) return mf_fail_null("model: out of memory decoding '%s'", p->name);
  if (p->quant) mfk_qdequantize((mfk_qtype)p->quant_type, out, p->quant, rows_of(p), cols_of(p));
  else
    for (int64_t i = 0; i < n; i++) out[i] = mf_bf16_to_f32(((const uint16_t *)p->value.data)[i]);
  *owned = out;
  return out;
}

/* What a parameter becomes: f32 values kept or not, and its packed form. */
typedef struct target {
  int f32;
  int form;
} target;

static target target_of(const mf_param *p, int want) {
  if (want == KEEP) return (target){mf_param_holds_f32(p), packed_form(p)};
  if (want == MF_GGML_F32) return (target){1, KEEP};
  return (target){0, want};
}

/* Writes p's values in `form` at dst, from its current form. */
static int pack_into(const mf_param *p, int form, unsigned char *dst) {
  if (form == packed_form(p)) {
    memcpy(dst, p->quant ? p->quant : p->value.data, packed_bytes(p, form));
    return 0;
  }
  float *owned;
  const float *x = mf_param_f32(p, &owned);
  if (!x) return -1;
  int rc = 0;
  if (form == MF_GGML_BF16) {
    int64_t n = mf_tensor_numel(&p->value);
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = mf_f32_to_bf16(x[i]);
  } else {
    int64_t rows = rows_of(p), cols = cols_of(p);
    size_t row_bytes = (size_t)(cols / MFK_QBLOCK) * mfk_qblock_bytes((mfk_qtype)form);
    unsigned char *blocks = malloc(row_bytes * (size_t)rows);  /* GGUF's row-major blocks */
    rc = blocks ? 0 : mf_fail("model: out of memory quantizing '%s'", p->name);
    for (int64_t r = 0; rc == 0 && r < rows; r++)
      rc = mf_ggml_encode(form, x + r * cols, blocks + r * row_bytes, cols);
    if (rc == 0) mfk_qpack((mfk_qtype)form, dst, blocks, rows, cols);
    free(blocks);
  }
  free(owned);
  return rc;
}

/* Writes every parameter's new form into the new blocks, reading the old
 * ones (the packed block is reused as it is when `same_packed`). */
static int fill_blocks(const mf_model *m, const int *want, float *values, unsigned char *packed, int same_packed) {
  for (int i = 0; i < m->nparams; i++) {
    const mf_param *p = &m->params[i];
    target t = target_of(p, want[i]);
    float *owned = NULL;
    const float *x = t.f32 ? mf_param_f32(p, &owned) : NULL;
    int rc = (t.f32 && !x) || (!same_packed && t.form != KEEP && pack_into(p, t.form, packed)) ? -1 : 0;
    if (x) memcpy(values, x, (size_t)mf_tensor_numel(&p->value) * sizeof(float));
    free(owned);
    if (rc) return -1;
    values += t.f32 ? mf_tensor_numel(&p->value) : 0;
    packed += packed_bytes(p, t.form);
  }
  return 0;
}

/* Points every parameter at its place in the new blocks. */
static void point_params(mf_model *m, const int *want, float *values, unsigned char *packed) {
  for (int i = 0; i < m->nparams; i++) {
    mf_param *p = &m->params[i];
    target t = target_of(p, want[i]);
    int quant = t.form != KEEP && t.form != MF_GGML_BF16;
    p->value.dtype = t.form == MF_GGML_BF16 ? MF_BF16 : MF_F32;
    p->value.data = t.form == MF_GGML_BF16 ? (void *)packed : t.f32 ? values : NULL;
    p->quant = quant ? packed : NULL;
    p->quant_type = quant ? t.form : 0;
    values += t.f32 ? mf_tensor_numel(&p->value) : 0;
    packed += packed_bytes(p, t.form);
  }
}

/* Rebuilds the values and packed blocks with parameter i in form want[i]
 * (KEEP, MF_GGML_F32, MF_GGML_BF16 or a block type). */
static int relayout(mf_model *m, const int *want) {
  int64_t nvalues = 0;
  size_t npacked = 0;
  int same_packed = 1;  /* no packed form changes: the packed block stays */
  for (int i = 0; i < m->nparams; i++) {
    target t = target_of(&m->params[i], want[i]);
    nvalues += t.f32 ? mf_tensor_numel(&m->params[i].value) : 0;
    npacked += packed_bytes(&m->params[i], t.form);
    same_packed = same_packed && t.form == packed_form(&m->params[i]);
  }
  float *values = malloc((size_t)(nvalues > 0 ? nvalues : 1) * sizeof(float));
  unsigned char *packed = same_packed ? m->packed : npacked ? malloc(npacked) : NULL;
  int rc = !values || (npacked && !packed)
               ? mf_fail("model: out of memory for %lld values and %zu packed bytes", (long long)nvalues, npacked)
               : fill_blocks(m, want, values, packed, same_packed);
  if (rc) {
    free(values);
    if (!same_packed) free(packed);
    return -1;
  }
  point_params(m, want, values, packed);
  free(m->values);
  if (!same_packed) free(m->packed);
  m->values = values;
  m->packed = packed;
  return 0;
}

/* The ggml type number of a precision's name, or KEEP when unknown. */
static int precision_form(const char *name) {
  for (int i = 0; name && i < NPRECISIONS; i++)
    if (!strcasecmp(name, precisions[i].name)) return precisions[i].form;
  return KEEP;
}

static int check_blocks(const mf_param *p, int form) {
  if (form == MF_GGML_BF16) return 0;
  int64_t in = cols_of(p);
  if (in % MFK_QBLOCK || in / MFK_QBLOCK > MF_QROW_BLOCKS_MAX)
    return mf_fail("set_base_precision: '%s' has %lld columns; %s blocks need a multiple of %d up to %d",
                   p->name, (long long)in, mf_ggml_type_name(form), MFK_QBLOCK, MFK_QBLOCK * MF_QROW_BLOCKS_MAX);
  return 0;
}

/* relayout with the layers' linear weights in base_form, the others in other_form. */
static int relayout_as(mf_model *m, int base_form, int other_form) {
  int *want = malloc((size_t)m->nparams * sizeof *want);
  if (!want) return mf_fail("model: out of memory");
  for (int i = 0; i < m->nparams; i++) want[i] = mf_is_base_weight(&m->params[i]) ? base_form : other_form;
  int rc = relayout(m, want);
  free(want);
  return rc;
}

int mf_model_set_base_precision(mf_model *m, const char *precision) {
  int form = precision_form(precision);
  if (form == KEEP)
    return mf_fail("set_base_precision: unknown precision '%s' (f32, bf16, q8_0, q4_0, q4_1)",
                   precision ? precision : "(null)");
  if (m->lora && m->lora->merged)
    return mf_fail("set_base_precision: the LoRA adapters are merged into the base; unmerge them first");
  if (form == MF_GGML_F32) return mf_model_expand(m);
  for (int i = 0; i < m->nparams; i++)
    if (mf_is_base_weight(&m->params[i]) && check_blocks(&m->params[i], form)) return -1;
  return relayout_as(m, form, KEEP);
}

int mf_model_shrink(mf_model *m) { return relayout_as(m, KEEP, KEEP); }

int mf_model_expand(mf_model *m) { return relayout_as(m, MF_GGML_F32, MF_GGML_F32); }

const char *mf_model_base_precision(const mf_model *m) {
  const char *seen = NULL;
  for (int i = 0; i < m->nparams; i++) {
    const mf_param *p = &m->params[i];
    if (!mf_is_base_weight(p)) continue;
    const char *s = mf_param_storage(p);
    if (seen && strcmp(seen, s)) return "mixed";
    seen = s;
  }
  return seen ? seen : "f32";
}

int64_t mf_model_weight_bytes(const mf_model *m) {
  int64_t bytes = 0;
  for (int i = 0; i < m->nparams; i++) {
    const mf_param *p = &m->params[i];
    bytes += (mf_param_holds_f32(p) ? mf_tensor_numel(&p->value) * (int64_t)sizeof(float) : 0) +
             (int64_t)packed_bytes(p, packed_form(p));
  }
  return bytes;
}
