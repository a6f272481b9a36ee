/*
 * Llama-family decoder: the engine's private view of a model, shared by
 * model.c (parameters, training forward/backward), model_io.c (safetensors),
 * ffn.c (the feed-forward module), generate.c (KV-cache decoding) and
 * optim.c (AdamW).
 *
 * Parameters live in one f32 block, gradients in a second one allocated on
 * first use; each parameter carries its HF name and tensor views of both.
 * The layers' linear weights may be held in bf16 or in ggml blocks instead
 * (model_precision.c).
 * A layer is attention (in model.c) plus an FFN reached only through
 * mf_ffn_ops, so a mixture-of-experts FFN can replace the dense one without
 * touching attention, decoding or the optimizer.
 */
#ifndef MF_MODEL_H
#define MF_MODEL_H

#include "moonforge.h"
#include "cpu/kernels.h"

#define MF_PARAM_NAME_MAX 96
#define MF_FFN_MAX_PARAMS 8

typedef enum mf_init { MF_INIT_NORMAL, MF_INIT_ONES, MF_INIT_ZEROS } mf_init;

typedef struct mf_param {
  char name[MF_PARAM_NAME_MAX];
  mf_tensor value;  /* views mf_model.values (F32) or mf_model.packed (BF16); data is NULL when
                       the weight is held in blocks alone */
  mf_tensor grad;   /* views mf_model.grads; data is NULL until gradients exist and when frozen */
  int64_t offset;   /* in floats, into the block holding the value */
  mf_init init;     /* for mf_model_new */
  const void *quant; /* a weight kept in ggml blocks, packed by mfk_qpack, or NULL */
  int quant_type;    /* their mfk_qtype */
  int frozen;        /* no gradient: backward skips this parameter's products */
  struct mf_lora *lora; /* the adapter added to this linear weight's output, or NULL */
} mf_param;

/* A parameter as a module declares it: name, shape and initialisation. */
typedef struct mf_param_spec {
  char name[MF_PARAM_NAME_MAX];
  int ndim;
  int64_t shape[2];
  mf_init init;
} mf_param_spec;

/* name = printf(fmt, ...); cols == 0 declares a vector of rows. */
void mf_param_spec_set(mf_param_spec *s, mf_init init, int64_t rows, int64_t cols,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

typedef struct mf_ffn mf_ffn;

/* The feed-forward module of one layer. Rows are tokens of width hidden_size.
 * `saved` holds saved_floats(rows) floats that forward fills and backward
 * reads; `scratch` holds scratch_floats(rows) floats for backward alone. */
typedef struct mf_ffn_ops {
  /* Writes the layer's parameter specs (names under `prefix`) into out,
   * at most MF_FFN_MAX_PARAMS, and returns their number. */
  int (*params)(const mf_model_config *cfg, const char *prefix, mf_param_spec *out);
  int64_t (*saved_floats)(const mf_model_config *cfg, int64_t rows);
  int64_t (*scratch_floats)(const mf_model_config *cfg, int64_t rows);
  /* y += ffn(x) */
  void (*forward)(const mf_ffn *ffn, mfk_pool *pool, float *y, const float *x, int64_t rows,
                  float *saved);
  /* dx = (d ffn / dx)^T dy; parameter gradients accumulate. */
  void (*backward)(const mf_ffn *ffn, mfk_pool *pool, float *dx, const float *dy, const float *x,
                   int64_t rows, const float *saved, float *scratch);
} mf_ffn_ops;

struct mf_ffn {
  const mf_ffn_ops *ops;
  const mf_model_config *cfg;
  int nparams;
  mf_param *params[MF_FFN_MAX_PARAMS];  /* in the order ops->params declared them */
};

extern const mf_ffn_ops mf_ffn_swiglu;

typedef struct mf_layer {
  mf_param *input_norm, *q, *k, *v, *o, *q_bias, *k_bias, *v_bias, *post_norm;  /* biases may be NULL */
  mf_ffn ffn;
} mf_layer;

/* Activations of one layer for `rows` tokens. In training each layer has its
 * own, kept for backward; in decoding one set serves every layer and `mid`
 * aliases `x` (the residual stream is updated in place). */
typedef struct mf_layer_acts {
  float *x;     /* input residual stream [rows, D] */
  float *rstd1, *xn1;
  float *q, *k, *v;  /* after projection (and RoPE for q, k) */
  float *att, *lse;
  float *mid;   /* x + attention output [rows, D] */
  float *rstd2, *xn2;
  float *ffn;   /* the FFN's saved floats */
} mf_layer_acts;

/* Hands out consecutive pieces of one block; with base == NULL it only
 * counts, so one layout function both sizes and fills an arena. */
typedef struct mf_carver {
  float *base;
  int64_t used;
} mf_carver;
float *mf_take(mf_carver *c, int64_t n);
/* Lays out one layer's activations for rows tokens; own_mid == 0 makes
 * mid alias x (decoding). */
void mf_layout_acts(const mf_model *m, mf_carver *c, int64_t rows, mf_layer_acts *a, int own_mid);

/* Keys and values of every past position, per layer and sequence, plus the
 * decoding step's activations (sized for cap_rows new tokens, grown only
 * when a longer chunk comes). Each sequence has its own length, so one step
 * can advance sequences that started from prompts of different lengths. */
struct mf_kv_cache {
  int64_t batch, max_len, kv_dim;
  int layers;
  float *k, *v;  /* [layers, batch, max_len, kv_dim] */
  int64_t *len;  /* [batch]: positions held by each sequence */
  int64_t *all;  /* [batch]: 0, 1, ..., batch - 1 */
  const int64_t *slots;  /* the sequences the running step feeds, in row order */
  float *block;
  int32_t *pos;
  int64_t cap_rows;
  mf_layer_acts acts;
  float *last, *last_rstd;  /* the last position of each sequence, normed */
};

/* The training step's activations and backward scratch, sized for rows =
 * B*T and reused until a larger batch comes. */
typedef struct mf_train_arena {
  float *block;
  int32_t *ints;
  int64_t cap_rows;
  int64_t B, T;
  int32_t *tokens, *targets, *pos;
  mf_layer_acts *layers;  /* num_hidden_layers + final residual in layers[L].x */
  /* The final norm and LM head run on the rows head_rows lists (those with
   * a target when scoring a loss), gathered into head_x. */
  int32_t *head_rows;
  int64_t nhead;
  float *head_x, *final_rstd, *final_xn, *logits;
  float *dres, *dtmp, *dxn, *dq, *dk, *dv, *datt, *ffn_scratch;
} mf_train_arena;

struct mf_model {
  mf_model_config cfg;
  int nparams;
  mf_param *params;
  float *values, *grads;
  int64_t nvalues;
  mf_param *embed, *final_norm, *lm_head;  /* lm_head == embed when tied */
  mf_layer *layers;
  mf_train_arena arena;
  int loss_ready;         /* the arena holds dlogits for backward */
  int64_t backward_steps; /* completed backward passes, for messages */
  void *packed;           /* bf16 values and ggml blocks of parameters, or NULL */
  int64_t ngrads;         /* floats in grads: the trainable parameters' */
  struct mf_lora_set *lora; /* LoRA adapters (lora.c), or NULL */
  int training;           /* adapter dropout applies (mf_model_set_train) */
};

static inline float *mf_pv(const mf_param *p) { return (float *)p->value.data; }
static inline float *mf_pg(const mf_param *p) { return (float *)p->grad.data; }

/* y[rows, out] = x[rows, in] W[out, in]^T (+ b) (+ the weight's adapter),
 * added to y when accumulate */
void mf_linear_fwd(mfk_pool *pool, float *y, int accumulate, const float *x, const mf_param *w,
                   const mf_param *b, int64_t rows);
/* y[k] = x W[k]^T (+ b[k]) (+ adapter) for n <= MF_LINEARS_MAX weights of
 * the same input width that share the input x (Q, K and V; gate and up); b
 * may be NULL, as may its entries. On quantized weights the products run
 * together; the adapters read x once. */
#define MF_LINEARS_MAX 4
void mf_linears_fwd(mfk_pool *pool, int n, const mf_param *const *w, const mf_param *const *b, float *const *y,
                    const float *x, int64_t rows);
/* The products of n weights held in blocks (w[k]->quant), as mf_linears_fwd
 * without biases and adapters, added to y[k] when accumulate; model_gguf.c. */
void mf_qlinear_fwd(mfk_pool *pool, int n, const mf_param *const *w, float *const *y, int accumulate,
                    const float *x, int64_t rows);
/* dx = dy W (accumulating into dx when accumulate), dW += dy^T x, db += colsum(dy) */
void mf_linear_bwd(mfk_pool *pool, float *dx, int accumulate, const float *dy, const float *x,
                   const mf_param *w, const mf_param *b, int64_t rows);
/* mf_linear_bwd for n <= MF_LINEARS_MAX weights that share the input x, so
 * that their input gradients meet in dx: dx = sum_k dy[k] W[k] (added to dx
 * when accumulate), each in one product where the weights are f32. */
void mf_linears_bwd(mfk_pool *pool, float *dx, int accumulate, int n, const float *const *dy, const float *x,
                    const mf_param *const *w, const mf_param *const *b, int64_t rows);

/* Runs layer l over rows = B*Tq new tokens at positions pos[rows]. With
 * cache == NULL attention runs over the rows themselves (Tq == Tk);
 * otherwise their keys and values are appended to the cache first. Writes
 * the layer's output residual stream into out (which may be a->x). */
void mf_layer_forward(const mf_model *m, int l, const mf_layer_acts *a, float *out,
                      const int32_t *pos, int64_t B, int64_t Tq, mf_kv_cache *cache);

/* Checks every id against the vocabulary (-100 passes when allow_ignore);
 * `what` names the ids in errors. */
int mf_check_ids(const mf_model *m, const int32_t *ids, int64_t B, int64_t T, const char *what,
                 int allow_ignore);

/* Gradient block (zeroed) if absent, holding the trainable parameters'
 * gradients; frozen ones keep grad.data NULL. */
int mf_model_ensure_grads(mf_model *m);
/* Drops the gradient block, for when the set of trainable parameters changes. */
void mf_model_drop_grads(mf_model *m);
/* Every parameter: the base model's (index < nparams), then the adapters'. */
int mf_model_nall(const mf_model *m);
mf_param *mf_model_at(const mf_model *m, int i);

/* The model skeleton for cfg: parameters declared and allocated, values
 * uninitialised. */
mf_model *mf_model_alloc(const mf_model_config *cfg);
mf_param *mf_model_find(const mf_model *m, const char *name);

/* ---- weight storage (model_precision.c) ---- */
/* Activation blocks of 32 that mf_qlinear_fwd keeps on its stack: a block
 * weight's rows are at most 32 times this long. */
#define MF_QROW_BLOCKS_MAX 4096
/* 1 when p's values are held in f32: what the optimizer, merging and the
 * embedding lookup need. */
static inline int mf_param_holds_f32(const mf_param *p) { return p->value.dtype == MF_F32 && p->value.data; }
/* The form a linear layer computes with: "f32", "bf16", "q8_0", "q4_0" or "q4_1". */
const char *mf_param_storage(const mf_param *p);
/* p's values in f32: its own, or decoded into a new buffer left in *owned
 * (free it; NULL when p holds f32). NULL on failure. */
const float *mf_param_f32(const mf_param *p, float **owned);
/* Every parameter in f32 alone (merging needs it): bf16 and block-held
 * weights are decoded, blocks kept beside f32 values are dropped. */
int mf_model_expand(mf_model *m);
/* Frees the f32 room of parameters left without values (value.data NULL:
 * a loader that kept only their blocks). */
int mf_model_shrink(mf_model *m);
/* 1 for the layers' linear weights: what a base precision applies to. */
int mf_is_base_weight(const mf_param *p);

/* ---- LoRA (lora.c) ----
 * An adapter adds scale * dropout(x) A^T B^T to a linear weight's output,
 * A [r, in] and B [out, r] being parameters of the model. Dropout (training
 * passes only) keeps x[i, j] by a counter-based draw from the adapter's
 * stream keyed by the pass (lora.c), and scales kept values by 1/(1-p);
 * forward draws the mask, backward reuses it. */
typedef struct mf_lora {
  mf_param *w, *a, *b;  /* the adapted weight, lora_A, lora_B */
  float scale;
  uint64_t stream;      /* dropout stream of this adapter */
  float *h;             /* [rows, r]: scale * dropout(x) A^T of the last forward */
  uint64_t *keep;       /* its dropout mask, bit i*in + j for x[i, j] */
  struct mf_lora_set *set;
} mf_lora;

typedef struct mf_lora_set {
  int r;
  double alpha, dropout;
  int rslora;
  uint64_t seed;
  unsigned targets;     /* bit t: target module t of lora.c's list */
  int nadapters, nparams;
  mf_lora *adapters;    /* in layer order, targets in list order */
  mf_param *params;     /* lora_A, lora_B of each adapter */
  float *values;
  int merged;           /* B A is folded into the weights: adapters off */
  int dropout_on;       /* the running pass applies dropout */
  uint64_t pass;        /* keys this pass's dropout masks */
  int64_t cap_rows;
  float *block;         /* every adapter's h, then dh */
  float *dh;            /* [MF_LINEARS_MAX, rows, r] scratch: the adapters' dh in backward */
  float *bt;            /* [r, largest out] scratch: the running adapter's B^T */
  uint64_t *keep_bits;  /* every adapter's dropout mask, with dropout */
} mf_lora_set;

/* Forward, in two steps around the base weight's product: mf_lora_down
 * draws the pass's dropout masks of n adapters that share the input x and
 * computes each one's h = scale * dropout(x) A^T; the adapter then adds
 * h B^T, either as a term of the base's GEMM (mf_lora_term) or, where the
 * base's product is not an f32 GEMM, by mf_lora_up. */
void mf_lora_down(mfk_pool *pool, int n, const mf_lora *const *a, const float *x, int64_t rows);
mfk_gemm_term mf_lora_term(const mf_lora *a);
void mf_lora_up(mfk_pool *pool, float *y, const mf_lora *a, int64_t rows);
/* Backward of n adapters that share the input x: dy[k] is adapter k's
 * output gradient, dx += their input gradients; lora_A and lora_B
 * gradients accumulate. */
void mf_lora_bwd(mfk_pool *pool, int n, const mf_lora *const *a, float *dx, const float *const *dy,
                 const float *x, int64_t rows);
/* Readies the adapters for a pass over rows tokens: buffers, and dropout
 * when training (and the model is in training mode). A pass that is not
 * training (decoding) overwrites what backward needs: it cancels a pending
 * loss. No-op without adapters. */
int mf_lora_begin(mf_model *m, int64_t rows, int training);
void mf_lora_free(mf_lora_set *s);
/* Frees the adapters' activation buffers (mf_lora_begin sizes them again). */
void mf_lora_release(mf_lora_set *s);
/* Removes the adapters and unfreezes the base (undoing a failed load). */
void mf_lora_remove(mf_model *m);

/* GGUF names and row order (model_gguf.c), shared with GGUF LoRA files:
 * llama.cpp's name of an HF parameter, and the GGUF row holding HF row r. */
int mf_gguf_param_name(const char *hf, char *buf, size_t n);
int64_t mf_gguf_param_row(const mf_model_config *cfg, const char *hf, int64_t r);

#endif
