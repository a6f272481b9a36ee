/*
 * Llama-family decoder: parameters by HF name, random init, the training
 * forward pass over a [B, T] batch, cross-entropy loss and backward.
 *
 * One forward, loss and backward form a step. The step's activations live
 * in one arena sized for B*T tokens and reused by every later step of that
 * size or smaller, so steady-state training allocates nothing. The layer
 * forward pass is shared with KV-cache decoding (generate.c).
 */
#include "model.h"
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { IGNORE_INDEX = -100 };

/* ---- parameters ---- */

void mf_param_spec_set(mf_param_spec *s, mf_init init, int64_t rows, int64_t cols,
                       const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->name, sizeof s->name, fmt, ap);
  va_end(ap);
  s->init = init;
  s->ndim = cols > 0 ? 2 : 1;
  s->shape[0] = rows;
  s->shape[1] = cols;
}

static mf_param *declare(mf_model *m, const mf_param_spec *s) {
  mf_param *p = &m->params[m->nparams++];
  memcpy(p->name, s->name, sizeof p->name);
  p->init = s->init;
  p->value = (mf_tensor){MF_F32, s->ndim, {s->shape[0], s->shape[1]}, NULL, 0};
  p->grad = p->value;
  p->offset = m->nvalues;
  m->nvalues += mf_tensor_numel(&p->value);
  return p;
}

/* Declares the parameter named prefix + suffix. */
static mf_param *add(mf_model *m, mf_init init, int64_t rows, int64_t cols, const char *prefix,
                     const char *suffix) {
  mf_param_spec s;
  mf_param_spec_set(&s, init, rows, cols, "%s%s", prefix, suffix);
  return declare(m, &s);
}

/* What the code below relies on. mf_config_parse checks the same with
 * messages naming config keys; this guards configs filled in C. */
static int check_config(const mf_model_config *c) {
  if (strcmp(c->arch, "llama") && strcmp(c->arch, "mistral") && strcmp(c->arch, "qwen2"))
    return mf_fail("model: unknown architecture '%s' (expected llama, mistral or qwen2)", c->arch);
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 ||
      c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 ||
      c->head_dim <= 0 || c->head_dim % 2)
    return mf_fail("model: sizes must be positive and head_dim even");
  if (c->num_attention_heads % c->num_key_value_heads)
    return mf_fail("model: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                   c->num_attention_heads, c->num_key_value_heads);
  return 0;
}

static void declare_layer(mf_model *m, mf_layer *L, int l) {
  const mf_model_config *c = &m->cfg;
  int64_t D = c->hidden_size, qd = (int64_t)c->num_attention_heads * c->head_dim;
  int64_t kvd = (int64_t)c->num_key_value_heads * c->head_dim;
  int bias = c->attention_bias;
  char prefix[MF_PARAM_NAME_MAX];
  snprintf(prefix, sizeof prefix, "model.layers.%d.", l);
  /* In transformers' order, so that names list as they do there. */
  L->q = add(m, MF_INIT_NORMAL, qd, D, prefix, "self_attn.q_proj.weight");
  L->q_bias = bias ? add(m, MF_INIT_ZEROS, qd, 0, prefix, "self_attn.q_proj.bias") : NULL;
  L->k = add(m, MF_INIT_NORMAL, kvd, D, prefix, "self_attn.k_proj.weight");
  L->k_bias = bias ? add(m, MF_INIT_ZEROS, kvd, 0, prefix, "self_attn.k_proj.bias") : NULL;
  L->v = add(m, MF_INIT_NORMAL, kvd, D, prefix, "self_attn.v_proj.weight");
  L->v_bias = bias ? add(m, MF_INIT_ZEROS, kvd, 0, prefix, "self_attn.v_proj.bias") : NULL;
  L->o = add(m, MF_INIT_NORMAL, D, qd, prefix, "self_attn.o_proj.weight");

  mf_param_spec specs[MF_FFN_MAX_PARAMS];
  char mlp[MF_PARAM_NAME_MAX];
  snprintf(mlp, sizeof mlp, "model.layers.%d.mlp.", l);
  L->ffn.ops = &mf_ffn_swiglu;
  L->ffn.cfg = &m->cfg;
  L->ffn.nparams = L->ffn.ops->params(c, mlp, specs);
  for (int i = 0; i < L->ffn.nparams; i++) L->ffn.params[i] = declare(m, &specs[i]);

  L->input_norm = add(m, MF_INIT_ONES, D, 0, prefix, "input_layernorm.weight");
  L->post_norm = add(m, MF_INIT_ONES, D, 0, prefix, "post_attention_layernorm.weight");
}

mf_model *mf_model_alloc(const mf_model_config *cfg) {
  if (check_config(cfg)) return NULL;
  int L = cfg->num_hidden_layers;
  mf_model *m = calloc(1, sizeof *m);
  if (!m) return mf_fail_null("model: out of memory");
  m->cfg = *cfg;
  m->params = calloc(3 + (size_t)L * (9 + MF_FFN_MAX_PARAMS), sizeof *m->params);
  m->layers = calloc((size_t)L, sizeof *m->layers);
  m->arena.layers = calloc((size_t)L + 1, sizeof *m->arena.layers);
  if (!m->params || !m->layers || !m->arena.layers) {
    mf_model_free(m);
    return mf_fail_null("model: out of memory");
  }
  int64_t V = cfg->vocab_size, D = cfg->hidden_size;
  m->embed = add(m, MF_INIT_NORMAL, V, D, "model.", "embed_tokens.weight");
  for (int l = 0; l < L; l++) declare_layer(m, &m->layers[l], l);
  m->final_norm = add(m, MF_INIT_ONES, D, 0, "model.", "norm.weight");
  m->lm_head = cfg->tie_word_embeddings ? m->embed : add(m, MF_INIT_NORMAL, V, D, "", "lm_head.weight");

  m->values = malloc((size_t)m->nvalues * sizeof(float));
  if (!m->values) {
    int64_t n = m->nvalues;
    mf_model_free(m);
    return mf_fail_null("model: out of memory for %lld parameters", (long long)n);
  }
  for (int i = 0; i < m->nparams; i++) m->params[i].value.data = m->values + m->params[i].offset;
  return m;
}

mf_model *mf_model_new(const mf_model_config *cfg, uint64_t seed) {
  mf_model *m = mf_model_alloc(cfg);
  if (!m) return NULL;
  for (int i = 0; i < m->nparams; i++) {
    mf_param *p = &m->params[i];
    float *x = mf_pv(p);
    int64_t n = mf_tensor_numel(&p->value);
    mf_rng rng;
    mf_rng_init(&rng, seed, mf_hash64(p->name, strlen(p->name)));
    for (int64_t j = 0; j < n; j++)
      x[j] = p->init == MF_INIT_NORMAL ? (float)(0.02 * mf_rng_normal(&rng)) : p->init == MF_INIT_ONES;
  }
  return m;
}

void mf_model_free(mf_model *m) {
  if (!m) return;
  free(m->arena.block);
  free(m->arena.ints);
  free(m->arena.layers);
  free(m->values);
  free(m->grads);
  free(m->packed);
  mf_lora_free(m->lora);
  free(m->params);
  free(m->layers);
  free(m);
}

const mf_model_config *mf_model_get_config(const mf_model *m) { return &m->cfg; }
int mf_model_param_count(const mf_model *m) { return m->nparams; }

const char *mf_model_param_name(const mf_model *m, int i) {
  if (i < 0 || i >= m->nparams) return mf_fail_null("model: parameter index %d out of range", i);
  return m->params[i].name;
}

int mf_model_nall(const mf_model *m) { return m->nparams + (m->lora ? m->lora->nparams : 0); }

mf_param *mf_model_at(const mf_model *m, int i) {
  return i < m->nparams ? &m->params[i] : &m->lora->params[i - m->nparams];
}

mf_param *mf_model_find(const mf_model *m, const char *name) {
  for (int i = 0; i < mf_model_nall(m); i++)
    if (strcmp(mf_model_at(m, i)->name, name) == 0) return mf_model_at(m, i);
  return mf_fail_null("model: no parameter named '%s'", name);
}

/* Frozen parameters get no room: a LoRA run keeps gradients of the
 * adapters alone. */
int mf_model_ensure_grads(mf_model *m) {
  if (m->grads) return 0;
  int64_t n = 0;
  for (int i = 0; i < mf_model_nall(m); i++)
    if (!mf_model_at(m, i)->frozen) n += mf_tensor_numel(&mf_model_at(m, i)->value);
  m->grads = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
  if (!m->grads) return mf_fail("model: out of memory for gradients");
  m->ngrads = n;
  float *next = m->grads;
  for (int i = 0; i < mf_model_nall(m); i++) {
    mf_param *p = mf_model_at(m, i);
    p->grad.data = p->frozen ? NULL : next;
    if (!p->frozen) next += mf_tensor_numel(&p->value);
  }
  return 0;
}

void mf_model_drop_grads(mf_model *m) {
  free(m->grads);
  m->grads = NULL;
  m->ngrads = 0;
  for (int i = 0; i < mf_model_nall(m); i++) mf_model_at(m, i)->grad.data = NULL;
}

mf_tensor *mf_model_param(mf_model *m, const char *name) {
  mf_param *p = mf_model_find(m, name);
  if (p && !p->value.data)
    return mf_fail_null("model: '%s' is held in %s blocks alone; set the base precision to f32 or bf16 to read it",
                        name, mf_param_storage(p));
  return p ? &p->value : NULL;
}

mf_tensor *mf_model_grad(mf_model *m, const char *name) {
  mf_param *p = mf_model_find(m, name);
  if (p && p->frozen) return mf_fail_null("model: parameter '%s' is frozen (it has no gradient)", name);
  if (!p || mf_model_ensure_grads(m)) return NULL;
  return &p->grad;
}

void mf_model_zero_grad(mf_model *m) {
  if (m->grads) memset(m->grads, 0, (size_t)m->ngrads * sizeof(float));
}

/* ---- layers ---- */

/* y (+)= x W^T and the weight's adapter, whose h is ready: on an f32 base
 * the adapter's product is a term of the same GEMM. */
static void linear_product(mfk_pool *pool, float *y, int accumulate, const float *x, const mf_param *w,
                           int64_t rows) {
  int64_t out = w->value.shape[0], in = w->value.shape[1];
  float beta = accumulate ? 1.0f : 0.0f;
  if (w->quant) mf_qlinear_fwd(pool, 1, &w, &y, accumulate, x, rows);
  else if (w->value.dtype == MF_BF16)
    mfk_gemm_f32_bf16(pool, 0, 1, rows, out, in, 1.0f, x, in, w->value.data, in, beta, y, out);
  else {
    mfk_gemm_term t[2] = { { .a = x, .b = mf_pv(w), .k = in, .lda = in, .ldb = in, .trans_b = 1 } };
    if (w->lora) t[1] = mf_lora_term(w->lora);
    mfk_gemm_terms(pool, rows, out, w->lora ? 2 : 1, t, 1.0f, beta, y, out);
    return;
  }
  if (w->lora) mf_lora_up(pool, y, w->lora, rows);
}

void mf_linear_fwd(mfk_pool *pool, float *y, int accumulate, const float *x, const mf_param *w,
                   const mf_param *b, int64_t rows) {
  if (w->lora) mf_lora_down(pool, 1, (const mf_lora *const[]){ w->lora }, x, rows);
  linear_product(pool, y, accumulate, x, w, rows);
  if (b) mfk_bias_fwd(pool, y, mf_pv(b), rows, w->value.shape[0]);
}

void mf_linears_fwd(mfk_pool *pool, int n, const mf_param *const *w, const mf_param *const *b, float *const *y,
                    const float *x, int64_t rows) {
  const mf_lora *adapters[MF_LINEARS_MAX] = { NULL };
  int count = 0;
  for (int k = 0; k < n; k++)
    if (w[k]->lora) adapters[count++] = w[k]->lora;
  mf_lora_down(pool, count, adapters, x, rows);
  int quantized = 1;
  for (int k = 0; k < n; k++) quantized = quantized && w[k]->quant;
  if (quantized) mf_qlinear_fwd(pool, n, w, y, 0, x, rows);
  for (int k = 0; k < n; k++) {
    if (!quantized) linear_product(pool, y[k], 0, x, w[k], rows);
    else if (w[k]->lora) mf_lora_up(pool, y[k], w[k]->lora, rows);
    if (b && b[k]) mfk_bias_fwd(pool, y[k], mf_pv(b[k]), rows, w[k]->value.shape[0]);
  }
}

/* dx (+)= dy W, alone; see mf_linears_bwd. */
static void input_grad(mfk_pool *pool, float *dx, int accumulate, const float *dy, const mf_param *w,
                       int64_t rows) {
  int64_t out = w->value.shape[0], in = w->value.shape[1];
  float beta = accumulate ? 1.0f : 0.0f;
  if (w->quant) mfk_qgemm_t(pool, (mfk_qtype)w->quant_type, dx, accumulate, dy, w->quant, rows, out, in);
  else if (w->value.dtype == MF_BF16)
    mfk_gemm_f32_bf16(pool, 0, 0, rows, in, out, 1.0f, dy, out, w->value.data, in, beta, dx, in);
  else mfk_gemm(pool, 0, 0, rows, in, out, 1.0f, dy, out, mf_pv(w), in, beta, dx, in);
}

void mf_linears_bwd(mfk_pool *pool, float *dx, int accumulate, int n, const float *const *dy, const float *x,
                    const mf_param *const *w, const mf_param *const *b, int64_t rows) {
  int64_t in = w[0]->value.shape[1];
  int f32 = 1;
  for (int k = 0; k < n; k++) f32 = f32 && !w[k]->quant && mf_param_holds_f32(w[k]);
  if (f32) {
    mfk_gemm_term t[MF_LINEARS_MAX];
    for (int k = 0; k < n; k++) {
      int64_t out = w[k]->value.shape[0];
      t[k] = (mfk_gemm_term){ .a = dy[k], .b = mf_pv(w[k]), .k = out, .lda = out, .ldb = in };
    }
    mfk_gemm_terms(pool, rows, in, n, t, 1.0f, accumulate ? 1.0f : 0.0f, dx, in);
  } else
    for (int k = 0; k < n; k++) input_grad(pool, dx, accumulate || k > 0, dy[k], w[k], rows);
  for (int k = 0; k < n; k++) {
    int64_t out = w[k]->value.shape[0];
    /* A frozen parameter has no gradient, and its product is skipped. */
    if (mf_pg(w[k])) mfk_gemm(pool, 1, 0, out, in, rows, 1.0f, dy[k], out, x, in, 1.0f, mf_pg(w[k]), in);
    if (b && b[k] && mf_pg(b[k])) mfk_bias_bwd(pool, mf_pg(b[k]), dy[k], rows, out);
  }
  const mf_lora *adapters[MF_LINEARS_MAX] = { NULL };
  const float *adapter_dy[MF_LINEARS_MAX] = { NULL };
  int count = 0;
  for (int k = 0; k < n; k++)
    if (w[k]->lora) adapters[count] = w[k]->lora, adapter_dy[count++] = dy[k];
  mf_lora_bwd(pool, count, adapters, dx, adapter_dy, x, rows);
}

void mf_linear_bwd(mfk_pool *pool, float *dx, int accumulate, const float *dy, const float *x,
                   const mf_param *w, const mf_param *b, int64_t rows) {
  mf_linears_bwd(pool, dx, accumulate, 1, &dy, x, &w, &b, rows);
}

/* Attention of the new rows: over themselves in training; in decoding, over
 * the cache after appending their keys and values. The cache keeps each
 * sequence's positions contiguous, so attention runs one sequence at a
 * time with the cache's row stride; row group b belongs to sequence
 * c->slots[b], at that sequence's own length. */
static void attend(const mf_model *m, int l, const mf_layer_acts *a, int64_t B, int64_t Tq,
                   mf_kv_cache *c) {
  const mf_model_config *cfg = &m->cfg;
  int64_t Hq = cfg->num_attention_heads, Hkv = cfg->num_key_value_heads, hd = cfg->head_dim;
  int64_t qd = Hq * hd, kvd = Hkv * hd;
  if (!c) {
    mfk_attention_fwd(mf_pool(), a->att, a->lse, a->q, a->k, a->v, B, Tq, Tq, Hq, Hkv, hd, kvd);
    return;
  }
  for (int64_t b = 0; b < B; b++) {
    int64_t s = c->slots[b], len = c->len[s];
    int64_t seq = ((int64_t)l * c->batch + s) * c->max_len * kvd;
    float *k = c->k + seq, *v = c->v + seq;
    memcpy(k + len * kvd, a->k + b * Tq * kvd, (size_t)(Tq * kvd) * sizeof(float));
    memcpy(v + len * kvd, a->v + b * Tq * kvd, (size_t)(Tq * kvd) * sizeof(float));
    mfk_attention_fwd(mf_pool(), a->att + b * Tq * qd, NULL, a->q + b * Tq * qd, k, v, 1, Tq,
                      len + Tq, Hq, Hkv, hd, kvd);
  }
}

void mf_layer_forward(const mf_model *m, int l, const mf_layer_acts *a, float *out,
                      const int32_t *pos, int64_t B, int64_t Tq, mf_kv_cache *cache) {
  const mf_model_config *cfg = &m->cfg;
  const mf_layer *L = &m->layers[l];
  mfk_pool *pool = mf_pool();
  int64_t rows = B * Tq, D = cfg->hidden_size, hd = cfg->head_dim;
  float eps = (float)cfg->rms_norm_eps, theta = (float)cfg->rope_theta;

  mfk_rmsnorm_fwd(pool, a->xn1, a->rstd1, a->x, mf_pv(L->input_norm), rows, D, eps);
  const mf_param *qkv[] = {L->q, L->k, L->v}, *qkv_bias[] = {L->q_bias, L->k_bias, L->v_bias};
  float *qkv_out[] = {a->q, a->k, a->v};
  mf_linears_fwd(pool, 3, qkv, qkv_bias, qkv_out, a->xn1, rows);
  mfk_rope_fwd(pool, a->q, pos, rows, cfg->num_attention_heads, hd, theta);
  mfk_rope_fwd(pool, a->k, pos, rows, cfg->num_key_value_heads, hd, theta);
  attend(m, l, a, B, Tq, cache);
  if (a->mid != a->x) mfk_copy(pool, a->mid, a->x, rows * D);
  mf_linear_fwd(pool, a->mid, 1, a->att, L->o, NULL, rows);

  mfk_rmsnorm_fwd(pool, a->xn2, a->rstd2, a->mid, mf_pv(L->post_norm), rows, D, eps);
  if (out != a->mid) mfk_copy(pool, out, a->mid, rows * D);
  L->ffn.ops->forward(&L->ffn, pool, out, a->xn2, rows, a->ffn);
}

/* ---- activation arenas ---- */

float *mf_take(mf_carver *c, int64_t n) {
  float *p = c->base ? c->base + c->used : NULL;
  c->used += n;
  return p;
}

void mf_layout_acts(const mf_model *m, mf_carver *c, int64_t rows, mf_layer_acts *a, int own_mid) {
  const mf_model_config *cfg = &m->cfg;
  int64_t D = cfg->hidden_size, Hq = cfg->num_attention_heads;
  int64_t qd = Hq * cfg->head_dim, kvd = (int64_t)cfg->num_key_value_heads * cfg->head_dim;
  a->x = mf_take(c, rows * D);
  a->rstd1 = mf_take(c, rows);
  a->xn1 = mf_take(c, rows * D);
  a->q = mf_take(c, rows * qd);
  a->k = mf_take(c, rows * kvd);
  a->v = mf_take(c, rows * kvd);
  a->att = mf_take(c, rows * qd);
  a->lse = mf_take(c, rows * Hq);
  a->mid = own_mid ? mf_take(c, rows * D) : a->x;
  a->rstd2 = mf_take(c, rows);
  a->xn2 = mf_take(c, rows * D);
  a->ffn = mf_take(c, m->layers[0].ffn.ops->saved_floats(cfg, rows));
}

static void layout_train(mf_model *m, mf_carver *c, int64_t rows) {
  const mf_model_config *cfg = &m->cfg;
  mf_train_arena *A = &m->arena;
  int L = cfg->num_hidden_layers;
  int64_t D = cfg->hidden_size, qd = (int64_t)cfg->num_attention_heads * cfg->head_dim;
  int64_t kvd = (int64_t)cfg->num_key_value_heads * cfg->head_dim;
  for (int l = 0; l < L; l++) mf_layout_acts(m, c, rows, &A->layers[l], 1);
  A->layers[L].x = mf_take(c, rows * D);
  A->head_x = mf_take(c, rows * D);
  A->final_rstd = mf_take(c, rows);
  A->final_xn = mf_take(c, rows * D);
  A->logits = mf_take(c, rows * cfg->vocab_size);
  A->dres = mf_take(c, rows * D);
  A->dtmp = mf_take(c, rows * D);
  A->dxn = mf_take(c, rows * D);
  A->dq = mf_take(c, rows * qd);
  A->dk = mf_take(c, rows * kvd);
  A->dv = mf_take(c, rows * kvd);
  A->datt = mf_take(c, rows * qd);
  A->ffn_scratch = mf_take(c, m->layers[0].ffn.ops->scratch_floats(cfg, rows));
}

void mf_model_free_activations(mf_model *m) {
  mf_train_arena *A = &m->arena;
  free(A->block);
  free(A->ints);
  A->block = NULL;
  A->ints = NULL;
  A->cap_rows = 0;
  m->loss_ready = 0;
  mf_lora_release(m->lora);
}

/* Makes the arena hold rows tokens; smaller steps reuse a larger layout. */
static int reserve_train(mf_model *m, int64_t rows) {
  mf_train_arena *A = &m->arena;
  if (rows <= A->cap_rows) return 0;
  mf_carver c = {NULL, 0};
  layout_train(m, &c, rows);
  free(A->block);
  free(A->ints);
  A->block = malloc((size_t)c.used * sizeof(float));
  A->ints = malloc((size_t)rows * 4 * sizeof(int32_t));
  A->cap_rows = 0;
  if (!A->block || !A->ints)
    return mf_fail("model: out of memory for the activations of %lld tokens", (long long)rows);
  c = (mf_carver){A->block, 0};
  layout_train(m, &c, rows);
  A->tokens = A->ints;
  A->targets = A->ints + rows;
  A->pos = A->ints + 2 * rows;
  A->head_rows = A->ints + 3 * rows;
  A->cap_rows = rows;
  return 0;
}

/* ---- the training step ---- */

int mf_check_ids(const mf_model *m, const int32_t *ids, int64_t B, int64_t T, const char *what,
                 int allow_ignore) {
  for (int64_t i = 0; i < B * T; i++) {
    if (ids[i] >= 0 && ids[i] < m->cfg.vocab_size) continue;
    if (allow_ignore && ids[i] == IGNORE_INDEX) continue;
    return mf_fail("%s id %d at [%lld, %lld] is out of range for vocab size %d", what, (int)ids[i],
                   (long long)(i / T), (long long)(i % T), m->cfg.vocab_size);
  }
  return 0;
}

static int forward_train(mf_model *m, const int32_t *tokens, int64_t B, int64_t T) {
  const mf_model_config *cfg = &m->cfg;
  mf_train_arena *A = &m->arena;
  mfk_pool *pool = mf_pool();
  int L = cfg->num_hidden_layers;
  int64_t rows = B * T;
  m->loss_ready = 0;
  if (B <= 0 || T <= 0) return mf_fail("model: empty batch [%lld, %lld]", (long long)B, (long long)T);
  if (mf_check_ids(m, tokens, B, T, "token", 0) || reserve_train(m, rows) || mf_lora_begin(m, rows, 1))
    return -1;
  A->B = B;
  A->T = T;
  memcpy(A->tokens, tokens, (size_t)rows * sizeof(int32_t));
  for (int64_t i = 0; i < rows; i++) A->pos[i] = (int32_t)(i % T);

  mfk_embedding_fwd(pool, A->layers[0].x, mf_pv(m->embed), A->tokens, rows, cfg->hidden_size);
  for (int l = 0; l < L; l++) mf_layer_forward(m, l, &A->layers[l], A->layers[l + 1].x, A->pos, B, T, NULL);
  return 0;
}

/* The final norm and the LM head over the n rows listed in head_rows. */
static void head_forward(mf_model *m, int64_t n) {
  const mf_model_config *cfg = &m->cfg;
  mf_train_arena *A = &m->arena;
  mfk_pool *pool = mf_pool();
  int64_t D = cfg->hidden_size;
  const float *x = A->layers[cfg->num_hidden_layers].x;
  for (int64_t i = 0; i < n; i++)
    memcpy(A->head_x + i * D, x + (int64_t)A->head_rows[i] * D, (size_t)D * sizeof(float));
  mfk_rmsnorm_fwd(pool, A->final_xn, A->final_rstd, A->head_x, mf_pv(m->final_norm), n, D,
                  (float)cfg->rms_norm_eps);
  mf_linear_fwd(pool, A->logits, 0, A->final_xn, m->lm_head, NULL, n);
  A->nhead = n;
}

mf_tensor *mf_model_forward(mf_model *m, const int32_t *tokens, int64_t B, int64_t T) {
  if (forward_train(m, tokens, B, T)) return NULL;
  for (int64_t i = 0; i < B * T; i++) m->arena.head_rows[i] = (int32_t)i;
  head_forward(m, B * T);
  int64_t shape[3] = {B, T, m->cfg.vocab_size};
  mf_tensor *logits = mf_tensor_new(MF_F32, 3, shape);
  if (logits) memcpy(logits->data, m->arena.logits, mf_tensor_nbytes(logits));
  return logits;
}

int mf_model_loss(mf_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                  double *loss) {
  if (forward_train(m, tokens, B, T) || mf_check_ids(m, targets, B, T, "target", 1)) return -1;
  mf_train_arena *A = &m->arena;
  int64_t counted = 0;
  /* Only positions with a target reach the head: with a masked prompt most
   * of the LM head's work, forward and backward, is never done. */
  for (int64_t i = 0; i < B * T; i++)
    if (targets[i] != IGNORE_INDEX) {
      A->head_rows[counted] = (int32_t)i;
      A->targets[counted++] = targets[i];
    }
  if (counted == 0) return mf_fail("loss: every target is -100, nothing to score");
  head_forward(m, counted);
  /* The logits become d(loss)/d(logits) in place: backward needs no more. */
  double sum = mfk_xent(mf_pool(), A->logits, A->logits, A->targets, counted, m->cfg.vocab_size,
                        IGNORE_INDEX, 1.0f / (float)counted, &counted);
  *loss = sum / (double)counted;
  if (!isfinite(*loss))
    return mf_fail("loss is %s at step %lld", isnan(*loss) ? "NaN" : "infinite",
                   (long long)m->backward_steps + 1);
  m->loss_ready = 1;
  return 0;
}

/* Turns dres from the gradient of layer l's output into that of its input. */
static void layer_backward(mf_model *m, int l) {
  const mf_model_config *cfg = &m->cfg;
  mf_train_arena *A = &m->arena;
  const mf_layer *L = &m->layers[l];
  const mf_layer_acts *a = &A->layers[l];
  mfk_pool *pool = mf_pool();
  int64_t rows = A->B * A->T, D = cfg->hidden_size, hd = cfg->head_dim;
  int64_t Hq = cfg->num_attention_heads, Hkv = cfg->num_key_value_heads;
  float theta = (float)cfg->rope_theta;

  /* out = mid + ffn(norm(mid)) */
  L->ffn.ops->backward(&L->ffn, pool, A->dxn, A->dres, a->xn2, rows, a->ffn, A->ffn_scratch);
  mfk_rmsnorm_bwd(pool, A->dtmp, mf_pg(L->post_norm), A->dxn, a->mid, mf_pv(L->post_norm), a->rstd2,
                  rows, D);
  mfk_axpy(pool, A->dres, 1.0f, A->dtmp, rows * D);

  /* mid = x + o_proj(attention(rope(q), rope(k), v)) with q, k, v from norm(x) */
  mf_linear_bwd(pool, A->datt, 0, A->dres, a->att, L->o, NULL, rows);
  mfk_attention_bwd(pool, A->dq, A->dk, A->dv, A->datt, a->q, a->k, a->v, a->att, a->lse, A->B, A->T,
                    Hq, Hkv, hd);
  mfk_rope_bwd(pool, A->dq, A->pos, rows, Hq, hd, theta);
  mfk_rope_bwd(pool, A->dk, A->pos, rows, Hkv, hd, theta);
  const mf_param *qkv[] = {L->q, L->k, L->v}, *qkv_bias[] = {L->q_bias, L->k_bias, L->v_bias};
  const float *dqkv[] = {A->dq, A->dk, A->dv};
  mf_linears_bwd(pool, A->dxn, 0, 3, dqkv, a->xn1, qkv, qkv_bias, rows);
  mfk_rmsnorm_bwd(pool, A->dtmp, mf_pg(L->input_norm), A->dxn, a->x, mf_pv(L->input_norm), a->rstd1,
                  rows, D);
  mfk_axpy(pool, A->dres, 1.0f, A->dtmp, rows * D);
}

int mf_model_backward(mf_model *m) {
  if (!m->loss_ready) return mf_fail("backward: no loss to differentiate (call loss first, once per backward)");
  for (int i = 0; i < m->nparams; i++)
    if ((m->params[i].quant || !mf_param_holds_f32(&m->params[i])) && !m->params[i].frozen)
      return mf_fail("backward: '%s' runs on %s%s weights and is trainable; add LoRA adapters "
                     "(they freeze the base) or set the base precision to f32 to train it",
                     m->params[i].name, m->params[i].quant ? "quantized " : "", mf_param_storage(&m->params[i]));
  if (m->lora && m->lora->merged)
    return mf_fail("backward: the LoRA adapters are merged into the base; unmerge them to train");
  if (mf_model_ensure_grads(m)) return -1;
  const mf_model_config *cfg = &m->cfg;
  mf_train_arena *A = &m->arena;
  mfk_pool *pool = mf_pool();
  int L = cfg->num_hidden_layers;
  int64_t rows = A->B * A->T, D = cfg->hidden_size, n = A->nhead;

  mf_linear_bwd(pool, A->dxn, 0, A->logits, A->final_xn, m->lm_head, NULL, n);
  mfk_rmsnorm_bwd(pool, A->dtmp, mf_pg(m->final_norm), A->dxn, A->head_x, mf_pv(m->final_norm),
                  A->final_rstd, n, D);
  memset(A->dres, 0, (size_t)(rows * D) * sizeof(float));
  for (int64_t i = 0; i < n; i++)
    memcpy(A->dres + (int64_t)A->head_rows[i] * D, A->dtmp + i * D, (size_t)D * sizeof(float));
  for (int l = L - 1; l >= 0; l--) layer_backward(m, l);
  if (mf_pg(m->embed)) mfk_embedding_bwd(pool, mf_pg(m->embed), A->dres, A->tokens, rows, D);
  m->loss_ready = 0;
  m->backward_steps++;
  return 0;
}
