/*
 * Models in GGUF files, as llama.cpp reads and writes them.
 *
 * Names: token_embd, output_norm, output and blk.N.{attn_norm, attn_q,
 * attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}
 * (.weight, and .bias for q, k, v) stand for transformers' parameters.
 * Shapes: ggml lists dimensions fastest first, so a [rows, cols] parameter
 * is a GGUF tensor with dims {cols, rows}; the bytes are the same.
 *
 * RoPE: llama.cpp's llama architecture rotates adjacent pairs (2i, 2i+1)
 * where transformers rotates (i, i + head_dim/2); its converter therefore
 * reorders the rows of q and k within each head so that HF row
 * t*head_dim/2 + i becomes GGUF row 2i + t. Loading a llama file undoes
 * that, saving redoes it. qwen2 uses the rotate-half form in llama.cpp
 * too and is stored unpermuted.
 *
 * Quantized inference: with keep_quantized, Q8_0, Q4_0 and Q4_1 weights
 * also stay in their blocks (rows reordered like the f32 copy, then packed
 * for the matmul by mfk_qpack) and every linear layer on them goes through
 * mf_qlinear_fwd, which quantizes the activations per block of 32 as
 * llama.cpp does (mfk_qgemm_many).
 */
#include "model.h"
#include "internal.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GGUF_U32 = 4, GGUF_F32 = 6, GGUF_STRING = 8 };

/* transformers' per-layer names and llama.cpp's */
static const char *const layer_names[][2] = {
  {"self_attn.q_proj.weight", "attn_q.weight"},   {"self_attn.q_proj.bias", "attn_q.bias"},
  {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.k_proj.bias", "attn_k.bias"},
  {"self_attn.v_proj.weight", "attn_v.weight"},   {"self_attn.v_proj.bias", "attn_v.bias"},
  {"self_attn.o_proj.weight", "attn_output.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
  {"mlp.up_proj.weight", "ffn_up.weight"},        {"mlp.down_proj.weight", "ffn_down.weight"},
  {"input_layernorm.weight", "attn_norm.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
};
static const char *const top_names[][2] = {
  {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"},
  {"lm_head.weight", "output.weight"},
};

/* The GGUF name of a parameter into buf. */
static int gguf_name(const char *hf, char *buf, size_t n) {
  for (size_t i = 0; i < sizeof top_names / sizeof top_names[0]; i++)
    if (!strcmp(hf, top_names[i][0])) return snprintf(buf, n, "%s", top_names[i][1]) < (int)n ? 0 : -1;
  int layer, used = 0;
  if (sscanf(hf, "model.layers.%d.%n", &layer, &used) == 1 && used > 0)
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++)
      if (!strcmp(hf + used, layer_names[i][0]))
        return snprintf(buf, n, "blk.%d.%s", layer, layer_names[i][1]) < (int)n ? 0 : -1;
  return mf_fail("gguf: no GGUF name for parameter '%s'", hf);
}

/* 1 when the parameter's rows are stored in llama.cpp's RoPE order. */
static int permuted(const mf_model_config *cfg, const char *hf) {
  return strcmp(cfg->arch, "qwen2") != 0 &&
         (strstr(hf, "self_attn.q_proj.") != NULL || strstr(hf, "self_attn.k_proj.") != NULL);
}

/* The GGUF row holding HF row r of a permuted q or k. */
static int64_t gguf_row(int64_t r, int64_t head_dim) {
  int64_t half = head_dim / 2, j = r % head_dim;
  return r - j + 2 * (j % half) + j / half;
}

/* ---- configuration ---- */

typedef struct meta {
  const mf_gguf *g;
  const char *path, *arch;
} meta;

/* {arch}.suffix as an integer; absent keys leave *out. */
static int meta_int(const meta *mt, const char *suffix, int required, int *out) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", mt->arch, suffix);
  int64_t i = mf_gguf_find(mt->g, key), v;
  if (i < 0) return required ? mf_fail("%s: missing key '%s'", mt->path, key) : 0;
  if (mf_gguf_int(mt->g, i, &v)) return -1;
  if (v <= 0 || v > 1 << 30) return mf_fail("%s: key '%s' = %lld is out of range", mt->path, key, (long long)v);
  *out = (int)v;
  return 0;
}

static int meta_float(const meta *mt, const char *suffix, double *out) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", mt->arch, suffix);
  int64_t i = mf_gguf_find(mt->g, key);
  if (i < 0) return 0;
  if (mf_gguf_float(mt->g, i, out)) return -1;
  return *out > 0 ? 0 : mf_fail("%s: key '%s' must be positive", mt->path, key);
}

static int token_id(const mf_gguf *g, const char *key, int *out) {
  int64_t i = mf_gguf_find(g, key), v;
  *out = -1;
  if (i < 0) return 0;
  if (mf_gguf_int(g, i, &v)) return -1;
  *out = v >= 0 && v < 1 << 30 ? (int)v : -1;
  return 0;
}

static int read_config(const mf_gguf *g, const char *path, mf_model_config *cfg) {
  size_t len;
  int64_t ai = mf_gguf_find(g, "general.architecture");
  const char *arch = ai >= 0 ? mf_gguf_str(g, ai, &len) : NULL;
  if (!arch) return mf_fail("%s: missing general.architecture", path);
  memset(cfg, 0, sizeof *cfg);
  if (len >= sizeof cfg->arch || (strncmp(arch, "llama", len) && strncmp(arch, "qwen2", len)) || !len)
    return mf_fail("%s: architecture '%.*s' is not supported (llama and qwen2 are)", path, (int)len, arch);
  memcpy(cfg->arch, arch, len);
  meta mt = {g, path, cfg->arch};
  cfg->max_position_embeddings = 2048;
  cfg->rope_theta = 10000;
  cfg->rms_norm_eps = 1e-5;
  if (meta_int(&mt, "embedding_length", 1, &cfg->hidden_size) ||
      meta_int(&mt, "feed_forward_length", 1, &cfg->intermediate_size) ||
      meta_int(&mt, "block_count", 1, &cfg->num_hidden_layers) ||
      meta_int(&mt, "attention.head_count", 1, &cfg->num_attention_heads) ||
      meta_int(&mt, "context_length", 0, &cfg->max_position_embeddings) ||
      meta_float(&mt, "rope.freq_base", &cfg->rope_theta) ||
      meta_float(&mt, "attention.layer_norm_rms_epsilon", &cfg->rms_norm_eps))
    return -1;
  cfg->num_key_value_heads = cfg->num_attention_heads;
  cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
  int rope_dims = 0;
  if (meta_int(&mt, "attention.head_count_kv", 0, &cfg->num_key_value_heads) ||
      meta_int(&mt, "attention.key_length", 0, &cfg->head_dim) ||
      meta_int(&mt, "rope.dimension_count", 0, &rope_dims))
    return -1;
  if (rope_dims && rope_dims != cfg->head_dim)
    return mf_fail("%s: RoPE over %d of %d head dimensions is not supported", path, rope_dims, cfg->head_dim);
  int64_t tokens = mf_gguf_find(g, "tokenizer.ggml.tokens");
  if (tokens >= 0) cfg->vocab_size = (int)mf_gguf_arr_len(g, tokens);
  else if (meta_int(&mt, "vocab_size", 1, &cfg->vocab_size)) return -1;
  cfg->tie_word_embeddings = mf_gguf_tensor_find(g, "output.weight") < 0;
  cfg->attention_bias = mf_gguf_tensor_find(g, "blk.0.attn_q.bias") >= 0;
  if (token_id(g, "tokenizer.ggml.bos_token_id", &cfg->bos_token_id) ||
      token_id(g, "tokenizer.ggml.eos_token_id", &cfg->eos_token_id))
    return -1;
  return 0;
}

/* ---- loading ---- */

typedef struct source {
  const char *path;
  int64_t index;     /* in the GGUF file */
  int type;
  const unsigned char *data;
  size_t row_bytes;
} source;

static int quantizable(int type) { return type == MFK_Q8_0 || type == MFK_Q4_0 || type == MFK_Q4_1; }

/* Finds p's tensor and checks its shape against the parameter's. */
static int find_source(const mf_gguf *g, const char *path, const mf_param *p, source *s) {
  char name[MF_PARAM_NAME_MAX];
  int64_t dims[4];
  if (gguf_name(p->name, name, sizeof name)) return -1;
  s->path = path;
  s->index = mf_gguf_tensor_find(g, name);
  if (s->index < 0) return mf_fail("%s: missing tensor '%s' (parameter %s)", path, name, p->name);
  int ndim = mf_gguf_tensor_dims(g, s->index, dims);
  int64_t rows = p->value.ndim == 2 ? p->value.shape[0] : 1, cols = p->value.shape[p->value.ndim - 1];
  if (ndim != p->value.ndim || dims[0] != cols || (ndim == 2 && dims[1] != rows))
    return mf_fail("%s: tensor '%s' has dims {%lld, %lld}, expected {%lld, %lld} for %s", path, name,
                   (long long)dims[0], (long long)(ndim > 1 ? dims[1] : 1), (long long)cols, (long long)rows, p->name);
  size_t nbytes;
  s->type = mf_gguf_tensor_type(g, s->index);
  s->data = mf_gguf_tensor_data(g, s->index, &nbytes);
  if (!s->data) return -1;
  s->row_bytes = nbytes / (size_t)rows;
  return 0;
}

/* Keeps p's blocks at quant, packed, when given, and decodes its values
 * unless it is a layer weight kept in blocks (those need no f32 copy). */
static int load_param(const mf_model *m, mf_param *p, const source *s, unsigned char *quant) {
  int64_t rows = p->value.ndim == 2 ? p->value.shape[0] : 1, cols = p->value.shape[p->value.ndim - 1];
  int perm = permuted(&m->cfg, p->name);
  unsigned char *blocks = quant ? malloc(s->row_bytes * (size_t)rows) : NULL;  /* rows in HF order */
  if (quant && !blocks) return mf_fail("%s: out of memory for %s", s->path, p->name);
  if (quant && mf_is_base_weight(p)) p->value.data = NULL;
  for (int64_t r = 0; r < rows; r++) {
    int64_t from = perm ? gguf_row(r, m->cfg.head_dim) : r;
    if (p->value.data && mf_ggml_decode(s->type, s->data + from * s->row_bytes, mf_pv(p) + r * cols, cols)) {
      free(blocks);
      return mf_fail("%s: tensor for %s: %s", s->path, p->name, mf_errmsg());
    }
    if (blocks) memcpy(blocks + r * s->row_bytes, s->data + from * s->row_bytes, s->row_bytes);
  }
  if (quant) {
    mfk_qpack((mfk_qtype)s->type, quant, blocks, rows, cols);
    free(blocks);
    p->quant = quant;
    p->quant_type = s->type;
  }
  return 0;
}

static size_t packed_bytes(const mf_param *p, const source *s) {
  return mfk_qpack_bytes((mfk_qtype)s->type, p->value.shape[0], p->value.shape[1]);
}

static int keeps_blocks(const mf_param *p, const source *s) {
  return p->value.ndim == 2 && quantizable(s->type) && p->value.shape[1] / MFK_QBLOCK <= MF_QROW_BLOCKS_MAX;
}

static int load_params(mf_model *m, const mf_gguf *g, const char *path, int keep_quantized) {
  source *src = calloc((size_t)m->nparams, sizeof *src);
  if (!src) return mf_fail("%s: out of memory", path);
  size_t quant_bytes = 0;
  int rc = 0;
  for (int i = 0; rc == 0 && i < m->nparams; i++) {
    rc = find_source(g, path, &m->params[i], &src[i]);
    if (rc == 0 && keep_quantized && keeps_blocks(&m->params[i], &src[i]))
      quant_bytes += packed_bytes(&m->params[i], &src[i]);
  }
  if (rc == 0 && quant_bytes && !(m->packed = malloc(quant_bytes))) rc = mf_fail("%s: out of memory", path);
  unsigned char *next = m->packed;
  for (int i = 0; rc == 0 && i < m->nparams; i++) {
    mf_param *p = &m->params[i];
    unsigned char *quant = next && keeps_blocks(p, &src[i]) ? next : NULL;
    rc = load_param(m, p, &src[i], quant);
    if (quant) next += packed_bytes(p, &src[i]);
  }
  free(src);
  return rc;
}

/* Every tensor of the file must be a parameter of the model. */
static int check_extra(const mf_model *m, const mf_gguf *g, const char *path) {
  char name[MF_PARAM_NAME_MAX];
  int64_t n = mf_gguf_tensor_count(g);
  if (n == m->nparams) return 0;
  for (int64_t t = 0; t < n; t++) {
    const char *tn = mf_gguf_tensor_name(g, t);
    int found = 0;
    for (int i = 0; !found && i < m->nparams; i++)
      found = gguf_name(m->params[i].name, name, sizeof name) == 0 && !strcmp(name, tn);
    if (!found) return mf_fail("%s: unexpected tensor '%s' (not a parameter of this %s model)", path, tn, m->cfg.arch);
  }
  return 0;
}

mf_model *mf_model_load_gguf(const char *path, int keep_quantized) {
  mf_gguf *g = mf_gguf_open(path);
  if (!g) return NULL;
  mf_model_config cfg;
  mf_model *m = read_config(g, path, &cfg) ? NULL : mf_model_alloc(&cfg);
  if (m && (load_params(m, g, path, keep_quantized) || check_extra(m, g, path) ||
            (keep_quantized && mf_model_shrink(m)))) {
    mf_model_free(m);
    m = NULL;
  }
  mf_gguf_close(g);
  return m;
}

int mf_model_is_quantized(const mf_model *m) {
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i].quant) return 1;
  return 0;
}

void mf_qlinear_fwd(mfk_pool *pool, int n, const mf_param *const *w, float *const *y, int accumulate,
                    const float *x, int64_t rows) {
  mfk_block_q8_act act[MF_QROW_BLOCKS_MAX];
  mfk_qweight q[MF_LINEARS_MAX];
  int64_t in = w[0]->value.shape[1], chunk = MF_QROW_BLOCKS_MAX / (in / MFK_QBLOCK);
  for (int64_t r = 0; r < rows; r += chunk) {
    for (int k = 0; k < n; k++) {
      int64_t out = w[k]->value.shape[0];
      q[k] = (mfk_qweight){(mfk_qtype)w[k]->quant_type, w[k]->quant, out, y[k] + r * out};
    }
    mfk_qgemm_many(pool, n, q, accumulate, x + r * in, rows - r < chunk ? rows - r : chunk, in, act);
  }
}

/* ---- saving ---- */

static int set_u32(mf_gguf_writer *w, const char *arch, const char *suffix, int64_t v) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", arch, suffix);
  return mf_gguf_set_int(w, key, GGUF_U32, v);
}

static int set_f32(mf_gguf_writer *w, const char *arch, const char *suffix, double v) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", arch, suffix);
  return mf_gguf_set_float(w, key, GGUF_F32, v);
}

/* llama.cpp's general.file_type for a model written as `type`. */
static int file_type(int type) {
  switch (type) {
  case MF_GGML_F32: return 0;
  case MF_GGML_F16: return 1;
  case MF_GGML_Q4_0: return 2;
  case MF_GGML_Q4_1: return 3;
  case MF_GGML_Q8_0: return 7;
  default: return 32; /* BF16 */
  }
}

static int write_config(mf_gguf_writer *w, const mf_model_config *c, int type) {
  const char *arch = strcmp(c->arch, "qwen2") ? "llama" : "qwen2";  /* mistral files say llama */
  if (mf_gguf_set_str(w, "general.architecture", arch, strlen(arch)) ||
      mf_gguf_set_int(w, "general.alignment", GGUF_U32, 32) ||
      mf_gguf_set_int(w, "general.file_type", GGUF_U32, file_type(type)) ||
      set_u32(w, arch, "context_length", c->max_position_embeddings) ||
      set_u32(w, arch, "embedding_length", c->hidden_size) || set_u32(w, arch, "block_count", c->num_hidden_layers) ||
      set_u32(w, arch, "feed_forward_length", c->intermediate_size) ||
      set_u32(w, arch, "attention.head_count", c->num_attention_heads) ||
      set_u32(w, arch, "attention.head_count_kv", c->num_key_value_heads) ||
      set_f32(w, arch, "rope.freq_base", c->rope_theta) ||
      set_f32(w, arch, "attention.layer_norm_rms_epsilon", c->rms_norm_eps) ||
      set_u32(w, arch, "rope.dimension_count", c->head_dim) || set_u32(w, arch, "vocab_size", c->vocab_size))
    return -1;
  if (c->head_dim * c->num_attention_heads != c->hidden_size &&
      (set_u32(w, arch, "attention.key_length", c->head_dim) || set_u32(w, arch, "attention.value_length", c->head_dim)))
    return -1;
  return 0;
}

/* tokenizer.* entries of src, then bos/eos from the config where src has none. */
static int write_tokenizer(mf_gguf_writer *w, const mf_model_config *c, const mf_gguf *src) {
  for (int64_t i = 0; src && i < mf_gguf_kv_count(src); i++)
    if (!strncmp(mf_gguf_key(src, i), "tokenizer.", 10) && mf_gguf_copy_kv(w, src, i)) return -1;
  const char *keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
  int ids[] = {c->bos_token_id, c->eos_token_id};
  for (int k = 0; k < 2; k++)
    if (ids[k] >= 0 && (!src || mf_gguf_find(src, keys[k]) < 0) && mf_gguf_set_int(w, keys[k], GGUF_U32, ids[k]))
      return -1;
  return 0;
}

/* p in `type` (F32 for vectors), rows in GGUF order, at out. */
static int encode_param(const mf_model *m, const mf_param *p, int type, unsigned char *out, size_t row_bytes) {
  int64_t rows = p->value.ndim == 2 ? p->value.shape[0] : 1, cols = p->value.shape[p->value.ndim - 1];
  int perm = permuted(&m->cfg, p->name);
  float *owned;
  const float *x = mf_param_f32(p, &owned);
  int rc = x ? 0 : -1;
  for (int64_t r = 0; rc == 0 && r < rows; r++) {
    int64_t to = perm ? gguf_row(r, m->cfg.head_dim) : r;
    rc = mf_ggml_encode(type, x + r * cols, out + to * row_bytes, cols);
  }
  free(owned);
  return rc;
}

static int param_type(const mf_param *p, int type) {
  return p->value.ndim == 2 && p->value.shape[1] % mf_ggml_type_info(type)->block == 0 ? type : MF_GGML_F32;
}

static size_t param_row_bytes(const mf_param *p, int type) {
  const mf_ggml_type *t = mf_ggml_type_info(type);
  return (size_t)(p->value.shape[p->value.ndim - 1] / t->block * t->bytes);
}

static int write_tensors(mf_gguf_writer *w, const mf_model *m, int type, unsigned char **buffer) {
  size_t total = 0;
  for (int i = 0; i < m->nparams; i++) {
    const mf_param *p = &m->params[i];
    total += param_row_bytes(p, param_type(p, type)) * (size_t)(p->value.ndim == 2 ? p->value.shape[0] : 1);
  }
  unsigned char *at = *buffer = malloc(total ? total : 1);
  if (!at) return mf_fail("gguf: out of memory for %zu bytes of tensors", total);
  for (int i = 0; i < m->nparams; i++) {
    const mf_param *p = &m->params[i];
    int pt = param_type(p, type);
    size_t row_bytes = param_row_bytes(p, pt);
    char name[MF_PARAM_NAME_MAX];
    int64_t dims[2] = {p->value.shape[p->value.ndim - 1], p->value.shape[0]};
    if (gguf_name(p->name, name, sizeof name) || encode_param(m, p, pt, at, row_bytes) ||
        mf_gguf_add_tensor(w, name, pt, p->value.ndim, dims, at))
      return -1;
    at += row_bytes * (size_t)(p->value.ndim == 2 ? p->value.shape[0] : 1);
  }
  return 0;
}

int mf_model_save_gguf(const mf_model *m, const char *path, int type, const mf_gguf *tokenizer_from) {
  if (type != MF_GGML_F32 && type != MF_GGML_F16 && type != MF_GGML_BF16 && type != MF_GGML_Q8_0 &&
      type != MF_GGML_Q4_0 && type != MF_GGML_Q4_1)
    return mf_fail("%s: cannot save as ggml %s (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 can be written)", path,
                   mf_ggml_type_name(type));
  mf_gguf_writer *w = mf_gguf_writer_new();
  unsigned char *buffer = NULL;
  if (!w) return -1;
  int rc = write_config(w, &m->cfg, type) || write_tokenizer(w, &m->cfg, tokenizer_from) ||
           write_tensors(w, m, type, &buffer) || mf_gguf_write(w, path) ? -1 : 0;
  mf_gguf_writer_free(w);
  free(buffer);
  return rc;
}

/* ---- names and row order for GGUF LoRA adapters (lora_io.c) ---- */

int mf_gguf_param_name(const char *hf, char *buf, size_t n) { return gguf_name(hf, buf, n); }

int64_t mf_gguf_param_row(const mf_model_config *cfg, const char *hf, int64_t r) {
  return permuted(cfg, hf) ? gguf_row(r, cfg->head_dim) : r;
}
