/*
 * LoRA adapters on the linear layers of a model (PEFT's algorithm): each
 * adapted weight W [out, in] gains A [r, in] and B [out, r] and the layer
 * computes
 *   y = x W^T + scale * dropout(x) A^T B^T,  scale = alpha / r (rslora:
 *   alpha / sqrt(r)).
 * Adding adapters freezes the base, so backward forms only the adapters'
 * gradients (and the input gradients through the frozen weights, which may
 * be quantized blocks). A starts as PEFT's kaiming-uniform (a = sqrt(5):
 * uniform in +-1/sqrt(in)) from the parameter's counter-based stream; B
 * starts at zero, so a new adapter leaves the model's outputs unchanged.
 *
 * Merging folds scale * B A into W and switches the adapter path off;
 * unmerging subtracts the same product. W + D - D is W up to one rounding
 * of each addition, so unmerge restores the base to within a few ulps of
 * each weight, not bit for bit. A base held in bf16 or in blocks becomes
 * f32 when merged or unmerged (mf_model_expand), and the sum is f32.
 *
 * Adapter activations: each adapter keeps h = scale * dropout(x) A^T
 * [rows, r] and its dropout mask (one bit an input) for backward; dh is
 * scratch for the adapters of one input. The low-rank kernels apply the mask
 * as they read x, so the dropped input is never written out. With h scaled,
 * h B^T is a plain product: on an f32 base it is one more term of the base
 * weight's GEMM, summed with it in registers rather than in a pass over y.
 */
#include "model.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PEFT's module names for Llama-family layers, with the module holding them. */
static const char *const targets[][2] = {
  {"q_proj", "self_attn"}, {"k_proj", "self_attn"}, {"v_proj", "self_attn"}, {"o_proj", "self_attn"},
  {"gate_proj", "mlp"},    {"up_proj", "mlp"},      {"down_proj", "mlp"},
};
enum { NTARGETS = sizeof targets / sizeof targets[0] };

static int target_mask(const mf_lora_opts *o, unsigned *mask) {
  *mask = 0;
  if (o->ntargets <= 0) return mf_fail("add_lora: no target modules");
  for (int i = 0; i < o->ntargets; i++) {
    const char *name = o->targets[i];
    if (!strcmp(name, "all-linear")) {
      *mask = (1u << NTARGETS) - 1;
      continue;
    }
    int t = 0;
    while (t < NTARGETS && strcmp(name, targets[t][0])) t++;
    if (t == NTARGETS)
      return mf_fail("add_lora: unknown target module '%s' (expected q_proj, k_proj, v_proj, o_proj, "
                     "gate_proj, up_proj, down_proj or all-linear)", name);
    *mask |= 1u << t;
  }
  return 0;
}

static int check_opts(const mf_model *m, const mf_lora_opts *o) {
  if (m->lora) return mf_fail("add_lora: the model already has LoRA adapters");
  if (o->r <= 0) return mf_fail("add_lora: rank r = %d must be positive", o->r);
  if (!(o->alpha > 0)) return mf_fail("add_lora: alpha %g must be positive", o->alpha);
  if (!(o->dropout >= 0 && o->dropout < 1)) return mf_fail("add_lora: dropout %g must lie in [0, 1)", o->dropout);
  return 0;
}

static void init_param(mf_param *p, float *value, int64_t rows, int64_t cols, const char *weight,
                       const char *which) {
  size_t stem = strlen(weight) - strlen(".weight");
  snprintf(p->name, sizeof p->name, "%.*s.%s.weight", (int)stem, weight, which);
  p->value = (mf_tensor){MF_F32, 2, {rows, cols}, value, 0};
  p->grad = p->value;
  p->grad.data = NULL;
}

/* A: uniform(-1/sqrt(in), 1/sqrt(in)), torch's kaiming_uniform_ with
 * a = sqrt(5) as PEFT initialises it; B: zeros. */
static void init_adapter(mf_lora *a, uint64_t seed) {
  int64_t n = mf_tensor_numel(&a->a->value), in = a->a->value.shape[1];
  double bound = 1 / sqrt((double)in);
  mf_rng rng;
  mf_rng_init(&rng, seed, mf_hash64(a->a->name, strlen(a->a->name)));
  for (int64_t i = 0; i < n; i++) mf_pv(a->a)[i] = (float)((2 * mf_rng_uniform(&rng) - 1) * bound);
  memset(mf_pv(a->b), 0, mf_tensor_nbytes(&a->b->value));
  mf_rng_init(&rng, seed, mf_hash64(a->b->name, strlen(a->b->name)));
  a->stream = mf_rng_u64(&rng);
}

/* The adapted weights, layer by layer in target order; NULL entries when
 * only counting. */
static int find_weights(mf_model *m, unsigned mask, mf_param **out) {
  int n = 0;
  char name[MF_PARAM_NAME_MAX];
  for (int l = 0; l < m->cfg.num_hidden_layers; l++)
    for (int t = 0; t < NTARGETS; t++) {
      if (!(mask & 1u << t)) continue;
      snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l, targets[t][1], targets[t][0]);
      mf_param *w = mf_model_find(m, name);
      if (!w) return mf_fail("add_lora: this model has no '%s' for target %s", name, targets[t][0]);
      if (out) out[n] = w;
      n++;
    }
  return n;
}

static void set_frozen_base(mf_model *m, int frozen) {
  for (int i = 0; i < m->nparams; i++) m->params[i].frozen = frozen;
  mf_model_drop_grads(m);
}

int mf_model_add_lora(mf_model *m, const mf_lora_opts *o) {
  unsigned mask;
  if (check_opts(m, o) || target_mask(o, &mask)) return -1;
  int n = find_weights(m, mask, NULL);
  if (n < 0) return -1;
  mf_lora_set *s = calloc(1, sizeof *s);
  mf_param **weights = calloc((size_t)n, sizeof *weights);
  if (s) {
    s->adapters = calloc((size_t)n, sizeof *s->adapters);
    s->params = calloc(2 * (size_t)n, sizeof *s->params);
  }
  int64_t total = 0;
  if (s && weights && s->adapters && s->params) {
    find_weights(m, mask, weights);
    for (int i = 0; i < n; i++) total += o->r * (weights[i]->value.shape[0] + weights[i]->value.shape[1]);
    s->values = malloc((size_t)total * sizeof(float));
    int64_t max_out = 0;
    for (int i = 0; i < n; i++)
      if (weights[i]->value.shape[0] > max_out) max_out = weights[i]->value.shape[0];
    s->bt = malloc((size_t)(o->r * max_out) * sizeof(float));
  }
  if (!s || !weights || !s->values || !s->bt) {
    free(weights);
    mf_lora_free(s);
    return mf_fail("add_lora: out of memory for %lld adapter values", (long long)total);
  }
  *s = (mf_lora_set){.r = o->r, .alpha = o->alpha, .dropout = o->dropout, .rslora = o->rslora, .seed = o->seed,
                     .targets = mask, .nadapters = n, .nparams = 2 * n, .adapters = s->adapters,
                     .params = s->params, .values = s->values, .bt = s->bt};
  float scale = (float)(o->rslora ? o->alpha / sqrt(o->r) : o->alpha / o->r);
  float *next = s->values;
  for (int i = 0; i < n; i++) {
    mf_lora *a = &s->adapters[i];
    mf_param *w = weights[i];
    int64_t out = w->value.shape[0], in = w->value.shape[1];
    *a = (mf_lora){.w = w, .a = &s->params[2 * i], .b = &s->params[2 * i + 1], .scale = scale, .set = s};
    init_param(a->a, next, o->r, in, w->name, "lora_A");
    init_param(a->b, next + o->r * in, out, o->r, w->name, "lora_B");
    next += o->r * (in + out);
    init_adapter(a, o->seed);
    w->lora = a;
  }
  free(weights);
  set_frozen_base(m, 1);
  m->lora = s;
  m->training = 1;
  return 0;
}

/* Removes the adapters and unfreezes the base (undoing a failed load). */
void mf_lora_remove(mf_model *m) {
  if (!m->lora) return;
  for (int i = 0; i < m->lora->nadapters; i++) m->lora->adapters[i].w->lora = NULL;
  mf_model_drop_grads(m);
  mf_lora_free(m->lora);
  m->lora = NULL;
  set_frozen_base(m, 0);
}

void mf_lora_free(mf_lora_set *s) {
  if (!s) return;
  free(s->adapters);
  free(s->params);
  free(s->values);
  free(s->bt);
  free(s->block);
  free(s->keep_bits);
  free(s);
}

void mf_lora_release(mf_lora_set *s) {
  if (!s) return;
  free(s->block);
  free(s->keep_bits);
  s->block = NULL;
  s->keep_bits = NULL;
  s->cap_rows = 0;
}

int mf_model_lora_count(const mf_model *m) { return m->lora ? m->lora->nparams : 0; }

const char *mf_model_lora_name(const mf_model *m, int i) {
  if (i < 0 || i >= mf_model_lora_count(m)) return mf_fail_null("model: adapter parameter %d out of range", i);
  return m->lora->params[i].name;
}

int mf_model_is_trainable(const mf_model *m, const char *name) {
  mf_param *p = mf_model_find(m, name);
  return p ? !p->frozen : -1;
}

void mf_model_set_train(mf_model *m, int on) { m->training = on != 0; }

/* ---- the pass ---- */

/* An adapter's dropout mask over rows x in inputs, in 64-bit words. */
static int64_t mask_words(const mf_lora *a, int64_t rows) { return (rows * a->a->value.shape[1] + 63) / 64; }

/* Sizes the buffers for rows tokens: every adapter's h, the shared dh and,
 * with dropout, every adapter's mask (kept from forward to backward). */
static int reserve_rows(mf_lora_set *s, int64_t rows) {
  int64_t floats = rows * (s->nadapters + MF_LINEARS_MAX) * (int64_t)s->r, words = 0;
  if (s->dropout > 0)
    for (int i = 0; i < s->nadapters; i++) words += mask_words(&s->adapters[i], rows);
  free(s->block);
  free(s->keep_bits);
  s->cap_rows = 0;
  s->block = malloc((size_t)floats * sizeof(float));
  s->keep_bits = words ? malloc((size_t)words * sizeof(uint64_t)) : NULL;
  if (!s->block || (words && !s->keep_bits))
    return mf_fail("lora: out of memory for the adapter activations of %lld tokens", (long long)rows);
  uint64_t *bits = s->keep_bits;
  for (int i = 0; i < s->nadapters; i++) {
    s->adapters[i].h = s->block + i * rows * s->r;
    s->adapters[i].keep = bits;
    if (bits) bits += mask_words(&s->adapters[i], rows);
  }
  s->dh = s->block + s->nadapters * rows * s->r;
  s->cap_rows = rows;
  return 0;
}

int mf_lora_begin(mf_model *m, int64_t rows, int training) {
  mf_lora_set *s = m->lora;
  if (!s) return 0;
  if (!training) m->loss_ready = 0;
  s->dropout_on = training && m->training && s->dropout > 0;
  s->pass = (uint64_t)m->backward_steps;
  return rows <= s->cap_rows ? 0 : reserve_rows(s, rows);
}

/* Dropout draws 16-bit uniforms, four from each 64-bit draw of the
 * adapter's stream for this pass: element i is kept when field i % 4 of
 * draw i / 4 is at least p * 2^16 (p at 16-bit resolution), as
 * mfk_dropout_mask draws it. The mask is drawn once in forward and kept as
 * bits for backward. */
static void draw_mask(mfk_pool *pool, const mf_lora *a, int64_t rows) {
  const mf_lora_set *s = a->set;
  mfk_dropout_mask(pool, a->keep, mask_words(a, rows), mf_rng_at(a->stream, s->pass),
                   (uint32_t)lround(s->dropout * 65536));
}

/* The mask and scale dropout applies to the adapter's input in this pass. */
static const uint64_t *mask_of(const mf_lora *a) { return a->set->dropout_on ? a->keep : NULL; }

static float input_scale(const mf_lora *a) {
  return a->set->dropout_on ? (float)(1 / (1 - a->set->dropout)) : 1.0f;
}

/* B^T [r, out] in the set's scratch: the kernels take factors by rows. */
static const float *b_transposed(const mf_lora *a) {
  int64_t r = a->set->r, out = a->b->value.shape[0];
  const float *b = mf_pv(a->b);
  float *bt = a->set->bt;
  for (int64_t o = 0; o < out; o++)
    for (int64_t j = 0; j < r; j++) bt[j * out + o] = b[o * r + j];
  return bt;
}

void mf_lora_down(mfk_pool *pool, int n, const mf_lora *const *a, const float *x, int64_t rows) {
  if (n == 0) return;
  mfk_lowrank_term t[MF_LINEARS_MAX];
  for (int k = 0; k < n; k++) {
    if (a[k]->set->dropout_on) draw_mask(pool, a[k], rows);
    t[k] = (mfk_lowrank_term){ .out = a[k]->h, .v = mf_pv(a[k]->a), .keep = mask_of(a[k]),
                               .alpha = a[k]->scale * input_scale(a[k]) };
  }
  mfk_lowrank_down_terms(pool, n, t, x, rows, a[0]->a->value.shape[1], a[0]->set->r);
}

mfk_gemm_term mf_lora_term(const mf_lora *a) {
  int64_t r = a->set->r;
  return (mfk_gemm_term){ .a = a->h, .b = mf_pv(a->b), .k = r, .lda = r, .ldb = r, .trans_b = 1 };
}

void mf_lora_up(mfk_pool *pool, float *y, const mf_lora *a, int64_t rows) {
  mfk_lowrank_term t = { .h = a->h, .v = b_transposed(a), .alpha = 1.0f };
  mfk_lowrank_up_terms(pool, y, 1, &t, rows, a->b->value.shape[0], a->set->r);
}

/* dh = scale dy B and dB += dy^T h, in one pass over dy where B trains. */
static void bwd_through_b(mfk_pool *pool, const mf_lora *a, float *dh, const float *dy, int64_t rows) {
  int64_t r = a->set->r, out = a->b->value.shape[0];
  if (mf_pg(a->b)) {
    mfk_lowrank_down_grad(pool, dh, b_transposed(a), a->scale, mf_pg(a->b), 1, r, a->h, 1.0f, dy, rows, out, r);
    return;
  }
  mfk_lowrank_term t = { .out = dh, .v = b_transposed(a), .alpha = a->scale };
  mfk_lowrank_down_terms(pool, 1, &t, dy, rows, out, r);
}

/* Per adapter: dh = scale dy B; dB += dy^T h; dA += dh^T dropout(x); dx +=
 * dropout'(dh A). The adapters' dA read x once, and their dx terms add into
 * dx in one pass. */
void mf_lora_bwd(mfk_pool *pool, int n, const mf_lora *const *a, float *dx, const float *const *dy,
                 const float *x, int64_t rows) {
  if (n == 0) return;
  const mf_lora_set *s = a[0]->set;
  int64_t r = s->r, in = a[0]->a->value.shape[1];
  mfk_lowrank_term grad[MF_LINEARS_MAX], up[MF_LINEARS_MAX];
  int grads = 0;
  for (int k = 0; k < n; k++) {
    float *dh = s->dh + k * rows * r;
    bwd_through_b(pool, a[k], dh, dy[k], rows);
    if (mf_pg(a[k]->a))
      grad[grads++] = (mfk_lowrank_term){ .out = mf_pg(a[k]->a), .h = dh, .keep = mask_of(a[k]),
                                          .alpha = input_scale(a[k]) };
    up[k] = (mfk_lowrank_term){ .h = dh, .v = mf_pv(a[k]->a), .keep = mask_of(a[k]), .alpha = input_scale(a[k]) };
  }
  mfk_lowrank_grad_terms(pool, grads, grad, in, 1, x, rows, in, r);
  mfk_lowrank_up_terms(pool, dx, n, up, rows, in, r);
}

/* ---- merging ---- */

/* W += sign * scale * B A for every adapter, on the base's f32 values. */
static int fold(mf_model *m, float sign) {
  mf_lora_set *s = m->lora;
  if (mf_model_expand(m)) return -1;
  for (int i = 0; i < s->nadapters; i++) {
    mf_lora *a = &s->adapters[i];
    int64_t out = a->w->value.shape[0], in = a->w->value.shape[1];
    mfk_gemm(mf_pool(), 0, 0, out, in, s->r, sign * a->scale, mf_pv(a->b), s->r, mf_pv(a->a), in, 1.0f,
             mf_pv(a->w), in);
  }
  return 0;
}

int mf_model_merge_lora(mf_model *m) {
  mf_lora_set *s = m->lora;
  if (!s) return mf_fail("merge_lora: the model has no LoRA adapters");
  if (s->merged) return mf_fail("merge_lora: the adapters are already merged");
  if (fold(m, 1.0f)) return -1;
  for (int i = 0; i < s->nadapters; i++) s->adapters[i].w->lora = NULL;
  s->merged = 1;
  return 0;
}

int mf_model_unmerge_lora(mf_model *m) {
  mf_lora_set *s = m->lora;
  if (!s || !s->merged) return mf_fail("unmerge_lora: no merged LoRA adapters");
  if (fold(m, -1.0f)) return -1;
  for (int i = 0; i < s->nadapters; i++) s->adapters[i].w->lora = &s->adapters[i];
  s->merged = 0;
  return 0;
}
