/* Models in GGUF: a tiny llama and a tiny qwen2 (with q/k/v biases) saved
 * and loaded back are the same model; llama's q and k rows are stored in
 * llama.cpp's RoPE order (HF row t*hd/2 + i of a head is GGUF row 2i + t)
 * and qwen2's are not; a Q8_0 file runs on its blocks, close to the f32
 * model, and refuses backward. */
#include "format_testing.h"

#include <math.h>

static mf_model *tiny(const char *arch, int bias) {
  mf_model_config c = {0};
  snprintf(c.arch, sizeof c.arch, "%s", arch);
  c.vocab_size = 80;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  c.tie_word_embeddings = !bias;
  c.attention_bias = bias;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  mf_model *m = mf_model_new(&c, 5);
  /* Biases and norms away from their initial 0 and 1, so that they count. */
  for (int i = 0; m && i < mf_model_param_count(m); i++) {
    mf_tensor *t = mf_model_param(m, mf_model_param_name(m, i));
    if (t->ndim == 1)
      for (int64_t j = 0; j < t->shape[0]; j++) ((float *)t->data)[j] += 0.01f * (float)(j % 7);
  }
  return m;
}

static mf_tensor *logits(mf_model *m) {
  int32_t ids[12] = {3, 17, 42, 5, 79, 0, 8, 8, 61, 23, 4, 1};
  return mf_model_forward(m, ids, 2, 6);
}

static float max_diff(const mf_tensor *a, const mf_tensor *b) {
  float d = 0;
  for (int64_t i = 0; i < mf_tensor_numel(a); i++)
    d = fmaxf(d, fabsf(((float *)a->data)[i] - ((float *)b->data)[i]));
  return d;
}

static int same_params(mf_model *a, mf_model *b) {
  if (mf_model_param_count(a) != mf_model_param_count(b)) return 0;
  for (int i = 0; i < mf_model_param_count(a); i++) {
    const char *name = mf_model_param_name(a, i);
    mf_tensor *x = mf_model_param(a, name), *y = mf_model_param(b, name);
    if (!y || memcmp(x->data, y->data, mf_tensor_nbytes(x))) {
      fprintf(stderr, "parameter %s differs\n", name);
      return 0;
    }
  }
  return 1;
}

/* Row r of HF's q_proj is GGUF row gguf_row(r) (or r when not permuted). */
static void check_rows(mf_model *m, const char *path, int permuted) {
  mf_gguf *g = mf_gguf_open(path);
  FT_CHECK(g, "open %s: %s", path, mf_errmsg());
  if (!g) return;
  mf_tensor *q = mf_gguf_tensor_f32(g, mf_gguf_tensor_find(g, "blk.1.attn_q.weight"));
  const float *hf = mf_model_param(m, "model.layers.1.self_attn.q_proj.weight")->data;
  int ok = q && q->shape[0] == 64 && q->shape[1] == 64;
  for (int h = 0; ok && h < 4; h++)
    for (int t = 0; t < 2; t++)
      for (int i = 0; i < 8; i++) {
        int hf_row = h * 16 + t * 8 + i, file_row = permuted ? h * 16 + 2 * i + t : hf_row;
        ok = ok && !memcmp((float *)q->data + file_row * 64, hf + hf_row * 64, 64 * sizeof(float));
      }
  FT_CHECK(ok, "%s: q rows %s", path, permuted ? "not in llama.cpp's RoPE order" : "reordered");
  int64_t v;
  FT_CHECK(mf_gguf_int(g, mf_gguf_find(g, "general.alignment"), &v) == 0 && v == 32, "alignment");
  mf_tensor_free(q);
  mf_gguf_close(g);
}

static void test_round_trip(const char *arch, int bias) {
  char path[64];
  snprintf(path, sizeof path, "%s.gguf", arch);
  mf_model *m = tiny(arch, bias);
  FT_CHECK(mf_model_save_gguf(m, ft_path(path), 0, NULL) == 0, "save %s: %s", arch, mf_errmsg());
  check_rows(m, ft_path(path), strcmp(arch, "qwen2") != 0);
  mf_model *back = mf_model_load(ft_path(path));
  FT_CHECK(back, "load %s: %s", arch, mf_errmsg());
  if (back) {
    const mf_model_config *a = mf_model_get_config(m), *b = mf_model_get_config(back);
    FT_CHECK(!strcmp(a->arch, b->arch) && a->head_dim == b->head_dim && a->num_key_value_heads == b->num_key_value_heads &&
             a->tie_word_embeddings == b->tie_word_embeddings && a->attention_bias == b->attention_bias &&
             a->rope_theta == b->rope_theta && (float)a->rms_norm_eps == (float)b->rms_norm_eps &&
             a->vocab_size == b->vocab_size && a->eos_token_id == b->eos_token_id, "%s config", arch);
    FT_CHECK(same_params(m, back), "%s parameters", arch);
    FT_CHECK(!mf_model_is_quantized(back), "an f32 file is not quantized");
  }
  mf_model_free(back);
  mf_model_free(m);
}

static void test_q8_0(void) {
  mf_model *m = tiny("llama", 0);
  FT_CHECK(mf_model_save_gguf(m, ft_path("q8.gguf"), 8, NULL) == 0, "save q8_0: %s", mf_errmsg());
  FT_FAILS_WITH(mf_model_save_gguf(m, ft_path("q4.gguf"), 12, NULL), "cannot save as ggml Q4_K");
  mf_model *q = mf_model_load_gguf(ft_path("q8.gguf"), 1), *f = mf_model_load_gguf(ft_path("q8.gguf"), 0);
  FT_CHECK(q && f && mf_model_is_quantized(q) && !mf_model_is_quantized(f), "load q8_0: %s", mf_errmsg());
  if (q && f) {
    mf_tensor *a = logits(m), *b = logits(q), *c = logits(f);
    /* Dequantized weights: Q8_0 rounding of the weights alone; on blocks:
     * the activations' rounding too. Logits here are about 0.5 in size. */
    FT_CHECK(max_diff(a, c) < 0.01f, "dequantized q8_0 logits differ by %g", max_diff(a, c));
    FT_CHECK(max_diff(a, b) < 0.02f, "quantized q8_0 logits differ by %g", max_diff(a, b));
    mf_tensor_free(a);
    mf_tensor_free(b);
    mf_tensor_free(c);
    int32_t ids[4] = {1, 2, 3, 4}, targets[4] = {2, 3, 4, 5};
    double loss;
    FT_CHECK(mf_model_loss(q, ids, targets, 1, 4, &loss) == 0, "loss on a quantized model");
    FT_FAILS_WITH(mf_model_backward(q), "runs on quantized q8_0 weights");
  }
  mf_model_free(q);
  mf_model_free(f);
  mf_model_free(m);
}

static void test_bad(void) {
  mf_gguf_writer *w = mf_gguf_writer_new();
  mf_gguf_set_str(w, "general.architecture", "gpt2", 4);
  mf_gguf_write(w, ft_path("gpt2.gguf"));
  mf_gguf_writer_free(w);
  FT_FAILS_WITH(!mf_model_load(ft_path("gpt2.gguf")), "architecture 'gpt2' is not supported");
  w = mf_gguf_writer_new();
  mf_gguf_set_str(w, "general.architecture", "llama", 5);
  mf_gguf_write(w, ft_path("nokeys.gguf"));
  mf_gguf_writer_free(w);
  FT_FAILS_WITH(!mf_model_load(ft_path("nokeys.gguf")), "missing key 'llama.embedding_length'");
}

int main(void) {
  ft_make_dir("gguf-model");
  test_round_trip("llama", 0);
  test_round_trip("qwen2", 1);
  test_q8_0();
  test_bad();
  return ft_finish();
}
