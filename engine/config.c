/*
 * Model configuration: the HF config.json of llama, mistral and qwen2 models
 * (SmolLM and TinyLlama say "llama"), read into mf_model_config and written
 * back in a form transformers loads.
 *
 * Missing keys take the defaults of transformers' configuration classes
 * (LlamaConfig, MistralConfig, Qwen2Config as of transformers 5):
 *
 *                            llama      mistral     qwen2
 *   vocab_size               32000      32000       151936
 *   hidden_size              4096       4096        4096
 *   intermediate_size        11008      14336       22016
 *   num_hidden_layers        32         32          32
 *   num_attention_heads      32         32          32
 *   num_key_value_heads      = heads    8           32
 *   head_dim                 hidden_size / num_attention_heads
 *   max_position_embeddings  2048       131072      32768
 *   rms_norm_eps             1e-6       1e-6        1e-6
 *   rope_theta               10000      10000       10000
 *   tie_word_embeddings      false      false       false
 *   attention_bias           false      always off  always on
 *   bos_token_id, eos_token_id  1, 2    1, 2        unset
 *
 * Only llama has an attention_bias key; mistral and qwen2 fix it in their
 * model code, so a contrary value is an error. rope_theta is read from the
 * top level (transformers 4) or from "rope_parameters" (transformers 5).
 * RoPE scaling other than the default type is refused, not ignored, since
 * it changes every logit. A sliding window (mistral) is not applied: it only
 * matters past its length, and the written config says so with null.
 */
#include "internal.h"
#include "moonforge.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct {
  const char *model_type;
  const char *architecture;  /* the transformers class, for "architectures" */
  int bias_key;              /* 1 when attention_bias is read from the config */
  mf_model_config defaults;  /* num_key_value_heads 0: same as the heads */
} arch;

static const arch archs[] = {
  {"llama", "LlamaForCausalLM", 1,
   {"llama", 32000, 4096, 11008, 32, 32, 0, 0, 2048, 1e-6, 10000.0, 0, 0, 1, 2}},
  {"mistral", "MistralForCausalLM", 0,
   {"mistral", 32000, 4096, 14336, 32, 32, 8, 0, 131072, 1e-6, 10000.0, 0, 0, 1, 2}},
  {"qwen2", "Qwen2ForCausalLM", 0,
   {"qwen2", 151936, 4096, 22016, 32, 32, 32, 0, 32768, 1e-6, 10000.0, 0, 1, -1, -1}},
};

static const arch *find_arch(const char *model_type) {
  for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
    if (!strcmp(archs[i].model_type, model_type)) return &archs[i];
  return NULL;
}

/* The sizes: positive integers, each optional. */
static const struct {
  const char *key;
  size_t offset;
} size_keys[] = {
#define SIZE_KEY(k) {#k, offsetof(mf_model_config, k)}
  SIZE_KEY(vocab_size), SIZE_KEY(hidden_size), SIZE_KEY(intermediate_size), SIZE_KEY(num_hidden_layers),
  SIZE_KEY(num_attention_heads), SIZE_KEY(num_key_value_heads), SIZE_KEY(head_dim),
  SIZE_KEY(max_position_embeddings),
#undef SIZE_KEY
};

/* ---- reading values ---- */

/* The key's value, or NULL when absent or null. */
static json_t *get(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  return json_is_null(v) ? NULL : v;
}

static int integer_value(json_t *v, const char *key, long long lo, int *out) {
  double d = json_number_value(v);
  if (!json_is_number(v)) return mf_fail("config: %s must be a number", key);
  if (d != floor(d) || d < (double)lo || d > 2147483647.0)
    return mf_fail("config: %s must be an integer of at least %lld, got %g", key, lo, d);
  *out = (int)d;
  return 0;
}

static int read_sizes(json_t *root, mf_model_config *cfg) {
  for (size_t i = 0; i < sizeof size_keys / sizeof size_keys[0]; i++) {
    json_t *v = get(root, size_keys[i].key);
    if (v && integer_value(v, size_keys[i].key, 1, (int *)((char *)cfg + size_keys[i].offset)) != 0)
      return -1;
  }
  return 0;
}

static int read_positive(json_t *obj, const char *key, double *out) {
  json_t *v = get(obj, key);
  if (!v) return 0;
  if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
    return mf_fail("config: %s must be a positive number", key);
  *out = json_number_value(v);
  return 0;
}

static int read_bool(json_t *root, const char *key, int *out) {
  json_t *v = get(root, key);
  if (!v) return 0;
  if (!json_is_boolean(v)) return mf_fail("config: %s must be true or false", key);
  *out = json_is_true(v);
  return 0;
}

/* A token id: absent or null is -1; a list (several eos ids) gives its first. */
static int read_token(json_t *root, const char *key, int *out) {
  json_t *v = get(root, key);
  if (json_is_array(v)) v = json_array_get(v, 0);
  if (!v) {
    if (json_object_get(root, key)) *out = -1;
    return 0;
  }
  return integer_value(v, key, 0, out);
}

/* rope_scaling (transformers 4) and rope_parameters (5) may only ask for
 * the default rotary embedding; the latter may also carry rope_theta. */
static int read_rope(json_t *root, mf_model_config *cfg) {
  const char *keys[] = {"rope_scaling", "rope_parameters"};
  for (int i = 0; i < 2; i++) {
    json_t *rope = get(root, keys[i]);
    if (!rope) continue;
    if (!json_is_object(rope)) return mf_fail("config: %s must be an object or null", keys[i]);
    json_t *type = json_object_get(rope, "rope_type");
    if (!type) type = json_object_get(rope, "type");
    const char *name = json_string_value(type);
    if (type && (!name || strcmp(name, "default") != 0))
      return mf_fail("config: %s type '%s' is not supported (only the default rotary embedding is)", keys[i],
                     name ? name : "?");
    if (read_positive(rope, "rope_theta", &cfg->rope_theta) != 0) return -1;
  }
  return read_positive(root, "rope_theta", &cfg->rope_theta);
}

static int read_bias(json_t *root, const arch *a, mf_model_config *cfg) {
  int bias = cfg->attention_bias, mlp_bias = 0;
  if (read_bool(root, "attention_bias", &bias) != 0 || read_bool(root, "mlp_bias", &mlp_bias) != 0) return -1;
  if (mlp_bias) return mf_fail("config: mlp_bias is not supported");
  if (!a->bias_key && bias != cfg->attention_bias)
    return mf_fail("config: %s models have attention_bias %s", a->model_type, cfg->attention_bias ? "true" : "false");
  cfg->attention_bias = bias;
  return 0;
}

/* ---- consistency ---- */

static int validate(mf_model_config *cfg, int explicit_head_dim) {
  if (!cfg->num_key_value_heads) cfg->num_key_value_heads = cfg->num_attention_heads;
  if (!explicit_head_dim) {
    if (cfg->hidden_size % cfg->num_attention_heads != 0)
      return mf_fail("config: hidden_size (%d) is not a multiple of num_attention_heads (%d)", cfg->hidden_size,
                     cfg->num_attention_heads);
    cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
  }
  if (cfg->num_attention_heads % cfg->num_key_value_heads != 0)
    return mf_fail("config: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                   cfg->num_attention_heads, cfg->num_key_value_heads);
  if (cfg->head_dim % 2 != 0)
    return mf_fail("config: head_dim (%d) must be even: rotary embedding turns pairs", cfg->head_dim);
  return 0;
}

static int parse_root(json_t *root, mf_model_config *out) {
  if (!json_is_object(root)) return mf_fail("config: not a JSON object");
  json_t *type = json_object_get(root, "model_type");
  if (!json_is_string(type)) return mf_fail("config: model_type is missing or not a string");
  const arch *a = find_arch(json_string_value(type));
  if (!a) return mf_fail("config: unknown architecture '%s' (llama, mistral and qwen2 are supported)",
                         json_string_value(type));
  mf_model_config cfg = a->defaults;
  if (read_sizes(root, &cfg) != 0 || read_positive(root, "rms_norm_eps", &cfg.rms_norm_eps) != 0 ||
      read_rope(root, &cfg) != 0 || read_bool(root, "tie_word_embeddings", &cfg.tie_word_embeddings) != 0 ||
      read_bias(root, a, &cfg) != 0 || read_token(root, "bos_token_id", &cfg.bos_token_id) != 0 ||
      read_token(root, "eos_token_id", &cfg.eos_token_id) != 0 ||
      validate(&cfg, get(root, "head_dim") != NULL) != 0)
    return -1;
  *out = cfg;
  return 0;
}

int mf_config_parse(const char *json_text, mf_model_config *out) {
  json_error_t err;
  json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &err);
  if (!root) return mf_fail("config: not valid JSON (line %d, column %d: %s)", err.line, err.column, err.text);
  int rc = parse_root(root, out);
  json_decref(root);
  return rc;
}

/* ---- writing ---- */

/* Fewest significant digits that read back as x. */
static int shortest_digits(double x) {
  char buf[32];
  for (int p = 1; p < 17; p++) {
    snprintf(buf, sizeof buf, "%.*g", p, x);
    if (strtod(buf, NULL) == x) return p;
  }
  return 17;
}

static json_t *token_json(int id) { return id < 0 ? json_null() : json_integer(id); }

char *mf_config_to_json(const mf_model_config *cfg) {
  const arch *a = find_arch(cfg->arch);
  if (!a) return mf_fail_null("config: unknown architecture '%s'", cfg->arch);
  json_t *root = json_pack(
    "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:{s:s, s:f}, s:b, s:b, s:o, s:o, s:s}",
    "architectures", a->architecture, "model_type", a->model_type, "vocab_size", cfg->vocab_size,
    "hidden_size", cfg->hidden_size, "intermediate_size", cfg->intermediate_size,
    "num_hidden_layers", cfg->num_hidden_layers, "num_attention_heads", cfg->num_attention_heads,
    "num_key_value_heads", cfg->num_key_value_heads, "head_dim", cfg->head_dim,
    "max_position_embeddings", cfg->max_position_embeddings, "rms_norm_eps", cfg->rms_norm_eps,
    "rope_theta", cfg->rope_theta, "rope_parameters", "rope_type", "default", "rope_theta", cfg->rope_theta,
    "tie_word_embeddings", cfg->tie_word_embeddings, "attention_bias", cfg->attention_bias,
    "bos_token_id", token_json(cfg->bos_token_id), "eos_token_id", token_json(cfg->eos_token_id),
    "hidden_act", "silu");
  if (root && !strcmp(a->model_type, "mistral")) json_object_set_new(root, "sliding_window", json_null());
  /* At least 15 significant digits: short values stay short (1e-5, 10000.0), all stay exact. */
  int digits = shortest_digits(cfg->rms_norm_eps), theta_digits = shortest_digits(cfg->rope_theta);
  if (theta_digits > digits) digits = theta_digits;
  if (digits < 15) digits = 15;
  char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(digits)) : NULL;
  json_decref(root);
  return text ? text : mf_fail_null("config: out of memory");
}

void mf_free(void *p) { free(p); }
