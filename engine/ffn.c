/*
 * The dense SwiGLU feed-forward module of Llama-family layers:
 *   ffn(x) = down_proj(silu(gate_proj(x)) * up_proj(x))
 * reached by the model only through mf_ffn_ops (model.h).
 */
#include "model.h"

enum { GATE, UP, DOWN };

static int swiglu_params(const mf_model_config *cfg, const char *prefix, mf_param_spec *out) {
  int64_t D = cfg->hidden_size, I = cfg->intermediate_size;
  mf_param_spec_set(&out[GATE], MF_INIT_NORMAL, I, D, "%sgate_proj.weight", prefix);
  mf_param_spec_set(&out[UP], MF_INIT_NORMAL, I, D, "%sup_proj.weight", prefix);
  mf_param_spec_set(&out[DOWN], MF_INIT_NORMAL, D, I, "%sdown_proj.weight", prefix);
  return 3;
}

/* Both what forward keeps (gate, up, product) and what backward needs
 * (their gradients) are three rows of intermediate_size per token. */
static int64_t swiglu_floats(const mf_model_config *cfg, int64_t rows) {
  return 3 * rows * cfg->intermediate_size;
}

static void swiglu_forward(const mf_ffn *ffn, mfk_pool *pool, float *y, const float *x, int64_t rows,
                           float *saved) {
  int64_t n = rows * ffn->cfg->intermediate_size;
  float *gate = saved, *up = saved + n, *act = saved + 2 * n;
  const mf_param *w[] = {ffn->params[GATE], ffn->params[UP]};
  float *out[] = {gate, up};
  mf_linears_fwd(pool, 2, w, NULL, out, x, rows);
  mfk_swiglu_fwd(pool, act, gate, up, n);
  mf_linear_fwd(pool, y, 1, act, ffn->params[DOWN], NULL, rows);
}

static void swiglu_backward(const mf_ffn *ffn, mfk_pool *pool, float *dx, const float *dy,
                            const float *x, int64_t rows, const float *saved, float *scratch) {
  int64_t n = rows * ffn->cfg->intermediate_size;
  const float *gate = saved, *up = saved + n, *act = saved + 2 * n;
  float *dact = scratch, *dgate = scratch + n, *dup = scratch + 2 * n;
  mf_linear_bwd(pool, dact, 0, dy, act, ffn->params[DOWN], NULL, rows);
  mfk_swiglu_bwd(pool, dgate, dup, dact, gate, up, n);
  const mf_param *w[] = {ffn->params[GATE], ffn->params[UP]};
  const float *dy_gate_up[] = {dgate, dup};
  mf_linears_bwd(pool, dx, 0, 2, dy_gate_up, x, w, NULL, rows);
}

const mf_ffn_ops mf_ffn_swiglu = {swiglu_params, swiglu_floats, swiglu_floats,
                                  swiglu_forward, swiglu_backward};
