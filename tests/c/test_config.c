/* Model configuration: configs written by transformers (with its defaults
 * left out) parse to the values transformers reads, inconsistent configs
 * fail naming the keys, and mf_config_to_json round-trips. */
#include "format_testing.h"

#include <stddef.h>

static char *text_of(const char *path) {
  size_t n = 0;
  unsigned char *buf = ft_read(path, &n);
  char *text = buf ? realloc(buf, n + 1) : NULL;
  if (!text) {
    fprintf(stderr, "cannot read %s\n", path);
    exit(1);
  }
  text[n] = 0;
  return text;
}

static const struct {
  const char *key;
  size_t offset;
} int_fields[] = {
#define FIELD(k) {#k, offsetof(mf_model_config, k)}
  FIELD(vocab_size), FIELD(hidden_size), FIELD(intermediate_size), FIELD(num_hidden_layers),
  FIELD(num_attention_heads), FIELD(num_key_value_heads), FIELD(head_dim), FIELD(max_position_embeddings),
  FIELD(tie_word_embeddings), FIELD(attention_bias), FIELD(bos_token_id), FIELD(eos_token_id),
#undef FIELD
};

static int field(const mf_model_config *c, size_t i) { return *(const int *)((const char *)c + int_fields[i].offset); }

static void check_config(const char *what, const mf_model_config *c, json_t *want) {
  for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++) {
    json_t *w = json_object_get(want, int_fields[i].key);
    int expect = json_is_boolean(w) ? json_is_true(w) : (int)json_integer_value(w);
    FT_CHECK(field(c, i) == expect, "%s: %s is %d, want %d", what, int_fields[i].key, field(c, i), expect);
  }
  FT_CHECK(c->rms_norm_eps == json_real_value(json_object_get(want, "rms_norm_eps")), "%s: rms_norm_eps %g", what,
           c->rms_norm_eps);
  FT_CHECK(c->rope_theta == json_real_value(json_object_get(want, "rope_theta")), "%s: rope_theta %g", what,
           c->rope_theta);
}

static int same_config(const mf_model_config *a, const mf_model_config *b) {
  for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++)
    if (field(a, i) != field(b, i)) return 0;
  return !strcmp(a->arch, b->arch) && a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta;
}

/* Each transformers config parses as transformers reads it, and survives
 * a trip through mf_config_to_json. */
static void test_transformers_configs(json_t *expected) {
  const char *arch;
  json_t *want;
  json_object_foreach(json_object_get(expected, "configs"), arch, want) {
    char name[64];
    snprintf(name, sizeof name, "config_%s.json", arch);
    char *text = text_of(ft_golden(name));
    mf_model_config c, back;
    FT_CHECK(mf_config_parse(text, &c) == 0, "%s: %s", name, mf_errmsg());
    check_config(name, &c, want);
    FT_CHECK(!strcmp(c.arch, arch), "%s: arch %s", name, c.arch);
    char *json = mf_config_to_json(&c);
    FT_CHECK(json && mf_config_parse(json, &back) == 0 && same_config(&c, &back), "%s: round trip: %s", name,
             json ? json : mf_errmsg());
    mf_free(json);
    free(text);
  }
}

/* A SmolLM-135M config.json as published (transformers 4 style). */
static const char *SMOLLM =
  "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
  " \"bos_token_id\": 0, \"eos_token_id\": 0, \"hidden_act\": \"silu\", \"hidden_size\": 576,"
  " \"initializer_range\": 0.02, \"intermediate_size\": 1536, \"max_position_embeddings\": 2048,"
  " \"model_type\": \"llama\", \"num_attention_heads\": 9, \"num_hidden_layers\": 30,"
  " \"num_key_value_heads\": 3, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": null,"
  " \"rope_theta\": 10000.0, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
  " \"transformers_version\": \"4.40.1\", \"use_cache\": true, \"vocab_size\": 49152}";

static void test_smollm(void) {
  mf_model_config c;
  FT_CHECK(mf_config_parse(SMOLLM, &c) == 0, "SmolLM: %s", mf_errmsg());
  FT_CHECK(!strcmp(c.arch, "llama") && c.hidden_size == 576 && c.num_key_value_heads == 3 && c.head_dim == 64 &&
           c.tie_word_embeddings == 1 && c.rms_norm_eps == 1e-5 && c.bos_token_id == 0 && c.vocab_size == 49152,
           "SmolLM values");
  char *json = mf_config_to_json(&c);
  FT_CHECK(json && strstr(json, "\"LlamaForCausalLM\"") && strstr(json, "\"rms_norm_eps\": 1e-5") &&
           strstr(json, "\"rope_theta\": 10000.0"), "written config: %s", json ? json : mf_errmsg());
  mf_free(json);
}

static void test_errors(void) {
  static const struct {
    const char *json;
    const char *error;
  } cases[] = {
    {"{\"model_type\": \"gpt2\"}", "unknown architecture 'gpt2'"},
    {"{\"hidden_size\": 64}", "model_type is missing"},
    {"{\"model_type\": \"llama\", \"hidden_size\": 96, \"num_attention_heads\": 6, \"num_key_value_heads\": 4}",
     "num_attention_heads (6) is not a multiple of num_key_value_heads (4)"},
    {"{\"model_type\": \"llama\", \"hidden_size\": 100, \"num_attention_heads\": 6}",
     "hidden_size (100) is not a multiple of num_attention_heads (6)"},
    {"{\"model_type\": \"llama\", \"hidden_size\": 60, \"num_attention_heads\": 4, \"head_dim\": 15}",
     "head_dim (15) must be even"},
    {"{\"model_type\": \"llama\", \"hidden_size\": -3}", "hidden_size must be an integer of at least 1, got -3"},
    {"{\"model_type\": \"llama\", \"vocab_size\": 3.5}", "vocab_size must be an integer"},
    {"{\"model_type\": \"llama\", \"num_hidden_layers\": \"2\"}", "num_hidden_layers must be a number"},
    {"{\"model_type\": \"llama\", \"rms_norm_eps\": 0}", "rms_norm_eps must be a positive number"},
    {"{\"model_type\": \"llama\", \"tie_word_embeddings\": 1}", "tie_word_embeddings must be true or false"},
    {"{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}",
     "rope_scaling type 'llama3' is not supported"},
    {"{\"model_type\": \"llama\", \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 1e4}}",
     "rope_parameters type 'yarn' is not supported"},
    {"{\"model_type\": \"qwen2\", \"attention_bias\": false}", "qwen2 models have attention_bias true"},
    {"{\"model_type\": \"llama\", \"mlp_bias\": true}", "mlp_bias is not supported"},
    {"{\"model_type\": \"llama\", \"eos_token_id\": -2}", "eos_token_id must be an integer of at least 0"},
    {"{\"model_type\": \"llama\",}", "not valid JSON"},
    {"[1]", "not a JSON object"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mf_model_config c;
    FT_FAILS_WITH(mf_config_parse(cases[i].json, &c) != 0, cases[i].error);
  }
  mf_model_config c = {.arch = "gpt2"};
  FT_FAILS_WITH(!mf_config_to_json(&c), "unknown architecture 'gpt2'");
}

static void test_defaults_and_variants(void) {
  mf_model_config c;
  FT_CHECK(mf_config_parse("{\"model_type\": \"mistral\", \"num_attention_heads\": 16}", &c) == 0 &&
           c.num_key_value_heads == 8 && c.head_dim == 256 && c.max_position_embeddings == 131072 &&
           c.intermediate_size == 14336, "mistral defaults: %s", mf_errmsg());
  FT_CHECK(mf_config_parse("{\"model_type\": \"llama\", \"rope_theta\": 500000.0, \"rope_scaling\": null,"
                           " \"eos_token_id\": [128001, 128009], \"head_dim\": 128, \"hidden_size\": 2048,"
                           " \"num_attention_heads\": 32, \"num_key_value_heads\": null, \"bos_token_id\": null}",
                           &c) == 0 && c.rope_theta == 500000.0 && c.eos_token_id == 128001 && c.head_dim == 128 &&
           c.num_key_value_heads == 32 && c.bos_token_id == -1, "llama variants: %s", mf_errmsg());
  FT_CHECK(mf_config_parse("{\"model_type\": \"qwen2\", \"rope_scaling\": {\"type\": \"default\"},"
                           " \"num_key_value_heads\": 4}", &c) == 0 && c.attention_bias == 1 &&
           c.bos_token_id == -1 && c.vocab_size == 151936, "qwen2 defaults: %s", mf_errmsg());
}

int main(void) {
  json_t *expected = ft_expected();
  test_transformers_configs(expected);
  test_smollm();
  test_errors();
  test_defaults_and_variants();
  json_decref(expected);
  return ft_finish();
}
