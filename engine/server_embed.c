/*
 * Sentence embeddings from a decoder, for the server's /v1/embeddings: the
 * mean over positions of the final normed hidden states (what the LM head
 * reads), computed by one causal forward pass without a KV cache. The
 * pass reuses the model's layer code (mf_layer_forward); only the arena is
 * its own, so training state and decoding caches are untouched.
 */
#include "internal.h"
#include "model.h"

#include <stdlib.h>

static void layout_embed(const mf_model *m, mf_carver *c, int64_t rows, mf_layer_acts *a, float **normed) {
  mf_layout_acts(m, c, rows, a, 0);
  *normed = mf_take(c, rows * m->cfg.hidden_size);
}

int mf_model_embed(mf_model *m, const int32_t *tokens, int64_t n, float *out) {
  const mf_model_config *cfg = &m->cfg;
  int64_t D = cfg->hidden_size;
  if (n <= 0) return mf_fail("embed: no tokens");
  if (mf_check_ids(m, tokens, 1, n, "token", 0) || mf_lora_begin(m, n, 0)) return -1;
  mf_carver c = {NULL, 0};
  mf_layer_acts a;
  float *normed;
  layout_embed(m, &c, n, &a, &normed);
  float *block = malloc((size_t)c.used * sizeof(float));
  int32_t *pos = malloc((size_t)n * sizeof(int32_t));
  if (!block || !pos) {
    free(block);
    free(pos);
    return mf_fail("embed: out of memory for %lld tokens", (long long)n);
  }
  c = (mf_carver){block, 0};
  layout_embed(m, &c, n, &a, &normed);
  for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)i;

  mfk_pool *pool = mf_pool();
  mfk_embedding_fwd(pool, a.x, mf_pv(m->embed), tokens, n, D);
  for (int l = 0; l < cfg->num_hidden_layers; l++) mf_layer_forward(m, l, &a, a.x, pos, 1, n, NULL);
  mfk_rmsnorm_fwd(pool, normed, a.rstd1, a.x, mf_pv(m->final_norm), n, D, (float)cfg->rms_norm_eps);
  /* Summed in position order, in double, so the result is the same bits
   * whatever the thread count. */
  for (int64_t j = 0; j < D; j++) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += normed[i * D + j];
    out[j] = (float)(sum / (double)n);
  }
  free(block);
  free(pos);
  return 0;
}
