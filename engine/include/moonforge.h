/*
 * moonforge engine: the public C API.
 *
 * This is the one interface between the engine and everything above it. The
 * runner's Lua library binds it with LuaJIT's FFI: the build embeds this file
 * and feeds it to ffi.cdef with preprocessor lines removed, so declarations
 * here must be plain C that the FFI parser accepts (no macros in them).
 *
 * Conventions
 * - Fallible functions return 0 (or a non-NULL pointer) on success and -1 (or
 *   NULL) on failure; mf_errmsg() then says why, for the calling thread.
 * - The engine never exits the process and never prints.
 * - Objects are created by mf_X_new/mf_X_load and released by mf_X_free,
 *   which accepts NULL.
 */
#ifndef MOONFORGE_H
#define MOONFORGE_H

#include <stddef.h>
#include <stdint.h>

/* ---- version and errors ---- */
const char *mf_version(void);
/* Message of the last failure on this thread ("" if none). */
const char *mf_errmsg(void);

/* ---- hashing ---- */
/* SHA-256 as 64 lowercase hex digits plus NUL. */
int mf_sha256_bytes(const void *data, size_t n, char *hex_out);
int mf_sha256_file(const char *path, char *hex_out);

/* ---- deterministic random numbers ----
 * Counter-based: value i of a stream depends only on (seed, stream, i), so
 * results do not depend on thread count or call order across streams. */
typedef struct mf_rng { uint64_t key; uint64_t counter; } mf_rng;
void mf_rng_init(mf_rng *r, uint64_t seed, uint64_t stream);
uint64_t mf_rng_u64(mf_rng *r);
double mf_rng_uniform(mf_rng *r);          /* [0, 1) with 53 random bits */
double mf_rng_normal(mf_rng *r);           /* standard normal (Box-Muller) */
uint64_t mf_rng_at(uint64_t key, uint64_t index); /* random access to a stream */
/* 64-bit FNV-1a then mixed: turns names (cell titles, purposes) into streams. */
uint64_t mf_hash64(const void *data, size_t n);

/* ---- threads ---- */
/* Worker count for kernels: MOONFORGE_THREADS if set, else all cores. */
int mf_threads(void);
int mf_set_threads(int n);

/* ---- tensors ----
 * Dense row-major arrays of up to 4 dimensions. A tensor either owns its data
 * (mf_tensor_new) or views memory owned by something else (a model, a
 * memory-mapped file); mf_tensor_free releases owned data only. */
typedef enum mf_dtype { MF_F32 = 0, MF_F16 = 1, MF_BF16 = 2, MF_I32 = 3, MF_I64 = 4, MF_U8 = 5 } mf_dtype;
typedef struct mf_tensor {
  mf_dtype dtype;
  int ndim;
  int64_t shape[4];
  void *data;
  int owns_data;
} mf_tensor;
size_t mf_dtype_size(mf_dtype dtype);
const char *mf_dtype_name(mf_dtype dtype);
mf_tensor *mf_tensor_new(mf_dtype dtype, int ndim, const int64_t *shape);   /* zero-filled */
mf_tensor *mf_tensor_view(mf_dtype dtype, int ndim, const int64_t *shape, void *data);
void mf_tensor_free(mf_tensor *t);
int64_t mf_tensor_numel(const mf_tensor *t);
size_t mf_tensor_nbytes(const mf_tensor *t);
/* A new tensor holding t converted to dtype (F32/F16/BF16 among themselves,
 * I32/I64 among themselves). */
mf_tensor *mf_tensor_convert(const mf_tensor *t, mf_dtype dtype);
/* One element between float and IEEE half / bfloat16: narrowing rounds to
 * nearest, ties to even (subnormals, infinities kept; NaN stays NaN). */
uint16_t mf_f32_to_f16(float x);
uint16_t mf_f32_to_bf16(float x);
float mf_f16_to_f32(uint16_t h);
float mf_bf16_to_f32(uint16_t h);
/* NumPy .npy files (format 1.0/2.0, little-endian, C order). */
int mf_tensor_save_npy(const mf_tensor *t, const char *path);
mf_tensor *mf_tensor_load_npy(const char *path);

/* ---- safetensors ----
 * Open memory-maps the file(s); a directory or a *.index.json opens every
 * shard. Sizes, offsets and dtypes are checked against the file length
 * before any data is touched. Tensors from mf_st_get view the mapping and
 * stay valid until mf_st_close. */
typedef struct mf_st_file mf_st_file;
mf_st_file *mf_st_open(const char *path);
void mf_st_close(mf_st_file *f);
int mf_st_count(const mf_st_file *f);
const char *mf_st_name(const mf_st_file *f, int i);
/* NULL with a message when absent. */
const mf_tensor *mf_st_get(const mf_st_file *f, const char *name);
/* The "__metadata__" object as JSON text ("{}" when absent). */
const char *mf_st_metadata(const mf_st_file *f);
/* Writes one file atomically (temporary name, then rename). */
int mf_st_save(const char *path, int n, const char *const *names, const mf_tensor *const *tensors,
               const char *metadata_json);

/* ---- model configuration ----
 * The keys of an HF config.json for llama, mistral and qwen2 (and SmolLM,
 * which is llama). Parsed from JSON text so that a config.json and a Lua
 * table (encoded to JSON) take one path; missing optional keys get HF's
 * defaults; inconsistent values are an error naming the key. */
typedef struct mf_model_config {
  char arch[32];              /* "llama", "mistral" or "qwen2" (from model_type) */
  int vocab_size;
  int hidden_size;
  int intermediate_size;
  int num_hidden_layers;
  int num_attention_heads;
  int num_key_value_heads;    /* defaults to num_attention_heads */
  int head_dim;               /* defaults to hidden_size / num_attention_heads */
  int max_position_embeddings;
  double rms_norm_eps;
  double rope_theta;
  int tie_word_embeddings;
  int attention_bias;         /* bias on q, k, v projections (qwen2: 1) */
  int bos_token_id;           /* -1 when unset */
  int eos_token_id;           /* -1 when unset */
} mf_model_config;
int mf_config_parse(const char *json_text, mf_model_config *out);
/* The config as HF config.json text (caller frees with mf_free). */
char *mf_config_to_json(const mf_model_config *cfg);

void mf_free(void *p);

/* ---- models ----
 * A Llama-family decoder (llama, mistral, qwen2; SmolLM is llama) in f32.
 * Parameters carry their HF names (model.embed_tokens.weight, ...).
 * tokens and targets are int32 [B, T] row-major. Targets are already shifted
 * (target t is the token that should follow token t, as HF computes after
 * its internal shift); -100 marks positions that do not count. */
typedef struct mf_model mf_model;
/* Random init from seed: weights normal(0, 0.02), norms 1, biases 0; each
 * parameter draws from its own counter-based stream. */
mf_model *mf_model_new(const mf_model_config *cfg, uint64_t seed);
/* A folder with config.json and model.safetensors (or a sharded index), or
 * the path of a config.json. F32, F16 and BF16 weights become f32. */
mf_model *mf_model_load(const char *path);
/* Writes config.json and model.safetensors (f32, HF names) into dir. */
int mf_model_save(const mf_model *m, const char *dir);
void mf_model_free(mf_model *m);
const mf_model_config *mf_model_get_config(const mf_model *m);
int mf_model_param_count(const mf_model *m);
const char *mf_model_param_name(const mf_model *m, int i);
/* Views of the model's memory, valid while the model lives. mf_model_grad
 * allocates (zeroed) gradients when there are none yet. NULL with a message
 * for an unknown name. */
mf_tensor *mf_model_param(mf_model *m, const char *name);
mf_tensor *mf_model_grad(mf_model *m, const char *name);
/* Logits [B, T, vocab] in a new tensor (caller frees). */
mf_tensor *mf_model_forward(mf_model *m, const int32_t *tokens, int64_t B, int64_t T);
/* Mean cross-entropy over targets != -100 into *loss; keeps what backward
 * needs. A NaN or infinite loss is an error. */
int mf_model_loss(mf_model *m, const int32_t *tokens, const int32_t *targets, int64_t B, int64_t T,
                  double *loss);
/* Gradients of the last loss, accumulated into every parameter's gradient. */
int mf_model_backward(mf_model *m);
void mf_model_zero_grad(mf_model *m);
/* Frees the activations a training step keeps (they grow to the largest
 * batch seen and stay); the next step allocates them again. A pending loss
 * is cancelled. */
void mf_model_free_activations(mf_model *m);

/* KV-cache decoding. A cache holds batch sequences of up to max_len
 * positions (max_len <= 0: max_position_embeddings). mf_model_decode runs
 * tokens [batch, n] at positions len..len+n-1 of every sequence, appends
 * their keys and values, and writes the logits of the last new position of
 * each sequence into logits [batch, vocab]. mf_kv_cache_len is the length
 * of sequence 0 (mf_model_decode advances them all alike). */
typedef struct mf_kv_cache mf_kv_cache;
mf_kv_cache *mf_kv_cache_new(const mf_model *m, int64_t batch, int64_t max_len);
void mf_kv_cache_free(mf_kv_cache *c);
int64_t mf_kv_cache_len(const mf_kv_cache *c);
void mf_kv_cache_reset(mf_kv_cache *c);
int mf_model_decode(mf_model *m, mf_kv_cache *c, const int32_t *tokens, int64_t n, float *logits);

/* Generation. temperature <= 0 is greedy (ties go to the lowest id);
 * otherwise sampling from softmax(logits / temperature) limited to the
 * top_k ids (0: all) and to the smallest set whose probability reaches
 * top_p (1: all). repetition_penalty (<= 0 or 1: off) first scales, as
 * transformers does, the logit of every id already in the sequence (prompt
 * and generated, each id once): divided by it when positive, multiplied
 * otherwise. A sequence stops after max_tokens, at eos_token_id (unless
 * ignore_eos) or at any of stop_ids; the stopping id is included in the
 * output. on_token, when set, sees every new id of sequence seq (0-based)
 * as it is chosen; returning nonzero stops that sequence. */
typedef int (*mf_token_fn)(void *ctx, int64_t seq, int32_t id);
typedef struct mf_generate_opts {
  int max_tokens;
  double temperature;
  int top_k;
  double top_p;
  double repetition_penalty;
  uint64_t seed;
  const int32_t *stop_ids;
  int nstop;
  int ignore_eos;
  int64_t max_len;  /* KV cache length per sequence; <= 0: longest prompt + max_tokens */
  int max_batch;    /* sequences decoded together; <= 0: 16 */
  mf_token_fn on_token;
  void *ctx;
} mf_generate_opts;
/* Writes up to opts->max_tokens ids into out and returns their number, or -1. */
int mf_model_generate(mf_model *m, const int32_t *prompt, int64_t n, const mf_generate_opts *opts,
                      int32_t *out);
/* Several prompts at once: prompt s is prompts[offsets[s], offsets[s + 1]).
 * The prefix all prompts share is computed once; the rest of each prompt
 * is prefilled in one forward pass over its tokens; then every unfinished
 * sequence advances one token per step in one batched forward pass, and a
 * finished one hands its place to the next prompt. Sequence s writes its
 * ids to out + s * max_tokens and their number to counts[s]. Sampling draws
 * from the counter-based stream of (seed, s), so a sequence's ids depend
 * neither on the other prompts nor on max_batch or the thread count (on
 * f32 weights, up to the last bits of the logits: see engine/generate.c).
 * Returns 0 or -1. */
int mf_model_generate_batch(mf_model *m, const int32_t *prompts, const int64_t *offsets, int64_t nseq,
                            const mf_generate_opts *opts, int32_t *out, int32_t *counts);

/* AdamW over a model's parameters (PyTorch's algorithm and defaults:
 * betas 0.9/0.999, eps 1e-8, weight_decay 0.01). names selects a subset
 * (NULL: every parameter). The model must outlive the optimizer. */
typedef struct mf_optim mf_optim;
typedef struct mf_adamw_opts {
  double lr, beta1, beta2, eps, weight_decay;
} mf_adamw_opts;
mf_optim *mf_optim_adamw(mf_model *m, const char *const *names, int nnames, const mf_adamw_opts *opts);
void mf_optim_free(mf_optim *o);
int mf_optim_step(mf_optim *o);
void mf_optim_zero_grad(mf_optim *o);
void mf_optim_set_lr(mf_optim *o, double lr);
int64_t mf_optim_steps(const mf_optim *o);
/* Global L2 norm of the optimizer's gradients (summed in parameter order);
 * when max_norm > 0 and the norm exceeds it, scales them by
 * max_norm / (norm + 1e-6) as torch.nn.utils.clip_grad_norm_ does. Returns
 * the norm before clipping. */
double mf_optim_clip_grad_norm(mf_optim *o, double max_norm);
/* Multiplies the optimizer's gradients by factor (averaging accumulated
 * micro-batches). */
void mf_optim_scale_grad(mf_optim *o, double factor);
/* The training state (the step count, first and second moments, and the
 * model's count of backward passes, which keys LoRA dropout) as a
 * safetensors file written atomically, and back into an optimizer over the
 * same parameters (engine/optim.c gives the layout). Load checks every
 * tensor before it changes anything. */
int mf_optim_save(const mf_optim *o, const char *path);
int mf_optim_load(mf_optim *o, const char *path);

/* ---- GGUF ----
 * Reading GGUF v2/v3 files (llama.cpp's format). Open memory-maps the file
 * and checks every metadata entry and tensor extent against its length.
 * Metadata entries are addressed by index (mf_gguf_find: -1 when absent).
 * Strings live in the mapping, are not NUL-terminated, and come with their
 * length. Value types are GGUF's: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32,
 * 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64. The numeric
 * getters convert any integer, float or bool type and fail on others. */
typedef struct mf_gguf mf_gguf;
mf_gguf *mf_gguf_open(const char *path);
void mf_gguf_close(mf_gguf *g);
int64_t mf_gguf_kv_count(const mf_gguf *g);
const char *mf_gguf_key(const mf_gguf *g, int64_t i);
int64_t mf_gguf_find(const mf_gguf *g, const char *key);
int mf_gguf_type(const mf_gguf *g, int64_t i);
int mf_gguf_arr_type(const mf_gguf *g, int64_t i);
int64_t mf_gguf_arr_len(const mf_gguf *g, int64_t i);
int mf_gguf_int(const mf_gguf *g, int64_t i, int64_t *out);
int mf_gguf_float(const mf_gguf *g, int64_t i, double *out);
const char *mf_gguf_str(const mf_gguf *g, int64_t i, size_t *len);
const char *mf_gguf_arr_str(const mf_gguf *g, int64_t i, int64_t j, size_t *len);
int mf_gguf_arr_int(const mf_gguf *g, int64_t i, int64_t j, int64_t *out);
int mf_gguf_arr_float(const mf_gguf *g, int64_t i, int64_t j, double *out);
/* Tensors: type is ggml's (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 12 Q4_K,
 * 14 Q6_K, 30 BF16, ...); dims in ggml order (dims[0] varies fastest). */
int64_t mf_gguf_tensor_count(const mf_gguf *g);
const char *mf_gguf_tensor_name(const mf_gguf *g, int64_t i);
int64_t mf_gguf_tensor_find(const mf_gguf *g, const char *name);
int mf_gguf_tensor_type(const mf_gguf *g, int64_t i);
int mf_gguf_tensor_dims(const mf_gguf *g, int64_t i, int64_t *dims); /* returns ndim */
const void *mf_gguf_tensor_data(const mf_gguf *g, int64_t i, size_t *nbytes);
/* A new f32 tensor holding tensor i dequantized, shape in row-major
 * (reversed ggml) order. */
mf_tensor *mf_gguf_tensor_f32(const mf_gguf *g, int64_t i);
/* Writing GGUF v3: metadata entries in the order set (a key set twice is
 * an error), then tensors, each aligned to 32 bytes. Tensor data is
 * referenced, not copied, and must stay valid until mf_gguf_write, which
 * writes the file atomically. Numeric values are given in the GGUF type
 * named (integers 0-5, 7, 10, 11; floats 6, 12); mf_gguf_set_arr takes n
 * values already in that type's layout. */
typedef struct mf_gguf_writer mf_gguf_writer;
mf_gguf_writer *mf_gguf_writer_new(void);
void mf_gguf_writer_free(mf_gguf_writer *w);
int mf_gguf_set_int(mf_gguf_writer *w, const char *key, int type, int64_t value);
int mf_gguf_set_float(mf_gguf_writer *w, const char *key, int type, double value);
int mf_gguf_set_str(mf_gguf_writer *w, const char *key, const char *s, size_t len);
int mf_gguf_set_arr(mf_gguf_writer *w, const char *key, int type, int64_t n, const void *values);
int mf_gguf_set_arr_str(mf_gguf_writer *w, const char *key, int64_t n, const char *const *s,
                        const size_t *lens);
/* Copies entry i of an open file, whatever its type. */
int mf_gguf_copy_kv(mf_gguf_writer *w, const mf_gguf *g, int64_t i);
/* dims in ggml order; data holds the tensor in ggml type `type`. */
int mf_gguf_add_tensor(mf_gguf_writer *w, const char *name, int type, int ndim, const int64_t *dims,
                       const void *data);
int mf_gguf_write(mf_gguf_writer *w, const char *path);

/* Models in GGUF files (architectures llama and qwen2, llama.cpp's tensor
 * names and keys). keep_quantized != 0 keeps Q8_0, Q4_0 and Q4_1 linear
 * weights in their blocks and runs the matmuls on them (inference only:
 * backward is refused); the layers' weights are then held in blocks alone
 * (mf_model_param of one is an error; saving decodes them), the others also
 * in f32. mf_model_load(path) of a *.gguf file is
 * mf_model_load_gguf(path, 1). Saving takes type F32, F16, BF16 or Q8_0
 * (norms and biases stay F32) and copies the tokenizer.* entries of
 * tokenizer_from when it is not NULL. */
mf_model *mf_model_load_gguf(const char *path, int keep_quantized);
int mf_model_save_gguf(const mf_model *m, const char *path, int type, const mf_gguf *tokenizer_from);
/* 1 when the model runs on quantized weights. */
int mf_model_is_quantized(const mf_model *m);

/* The precision of the base: the form the layers' linear weights are held
 * and multiplied in, "bf16", "q8_0", "q4_0" or "q4_1" (llama.cpp's blocks,
 * quantized from the current values as llama.cpp's reference quantizers
 * do); the embeddings, LM head and norms keep theirs. Their previous form is
 * freed: a bf16 base takes half the memory of an f32 one. Backward goes
 * through them to the adapters, but they cannot be trained themselves.
 * "f32" turns every weight, embeddings included, into trainable f32 values
 * (decoding blocks and dropping those a GGUF model kept beside them).
 * mf_model_base_precision says "mixed" when the weights differ (a GGUF file
 * can mix types). mf_model_weight_bytes counts the bytes held for every
 * parameter's values. */
int mf_model_set_base_precision(mf_model *m, const char *precision);
const char *mf_model_base_precision(const mf_model *m);
int64_t mf_model_weight_bytes(const mf_model *m);

/* ---- tokenizers ----
 * BPE tokenizers: byte-level (GPT-2, Llama 3, Qwen, SmolLM) and
 * SentencePiece-style with byte fallback (Llama 2, Mistral), as HF
 * tokenizers encodes them. mf_tokenizer_load takes a tokenizer.json, a
 * folder holding one (its tokenizer_config.json adds the chat template and
 * the bos/eos tokens), or a .gguf file (its tokenizer.* metadata).
 * Encoding treats text as data: special tokens written in it stay text
 * unless parse_special is set; added tokens that are not special are
 * always matched whole, as in HF. Encode and decode return the full count
 * of ids or bytes even when it exceeds cap (only cap are written), so a
 * caller can retry with a larger buffer. A tokenizer may be used from
 * several threads at once. */
typedef struct mf_tokenizer mf_tokenizer;
mf_tokenizer *mf_tokenizer_load(const char *path);
void mf_tokenizer_free(mf_tokenizer *t);
int32_t mf_tokenizer_vocab_size(const mf_tokenizer *t);
int64_t mf_tokenizer_encode(mf_tokenizer *t, const char *text, size_t len, int add_special,
                            int parse_special, int32_t *out, int64_t cap);
/* The bytes the ids stand for (skip_special: leave out special tokens). */
int64_t mf_tokenizer_decode(const mf_tokenizer *t, const int32_t *ids, int64_t n, int skip_special,
                            char *out, size_t cap);
/* The id of a token as the vocabulary spells it (-1 when absent), and back. */
int32_t mf_tokenizer_token_id(const mf_tokenizer *t, const char *token, size_t len);
const char *mf_tokenizer_token(const mf_tokenizer *t, int32_t id, size_t *len);
int mf_tokenizer_is_special(const mf_tokenizer *t, int32_t id);
/* -1 when the tokenizer names none. */
int32_t mf_tokenizer_bos_id(const mf_tokenizer *t);
int32_t mf_tokenizer_eos_id(const mf_tokenizer *t);
int32_t mf_tokenizer_pad_id(const mf_tokenizer *t);
/* The model's chat template source ("" when none). */
const char *mf_tokenizer_chat_template(const mf_tokenizer *t);
/* Trains a byte-level BPE vocabulary with GPT-2's pre-tokenizer, as HF
 * tokenizers' BpeTrainer does (all 256 bytes in the alphabet), and writes
 * it as a tokenizer.json. Each line of each file (newline kept) and each
 * text is one sequence. Special tokens take the first ids. */
typedef struct mf_bpe_train_opts {
  const char *const *files;
  int nfiles;
  const char *const *texts;
  const size_t *text_lens;
  int64_t ntexts;
  int32_t vocab_size;
  int64_t min_frequency;
  const char *const *special_tokens;
  int nspecial;
} mf_bpe_train_opts;
int mf_tokenizer_train(const mf_bpe_train_opts *opts, const char *output_path);

/* ---- kernel library version (for the runner's cache keys) ----
 * Defined by the kernels (kernels/cpu/kernels.h) and linked into the
 * executable; declared here so the Lua library reaches it through this API. */
const char *mfk_version(void);

/* ---- token shards and packing ----
 * A token shard is a file of tokenized documents (engine/shards.c gives the
 * layout): tokens stored as uint16 (token_bytes 2) or int32 (4), document
 * boundaries, and a SHA-256 of the payload. Written atomically; read through
 * a memory map and checked on open (verify = 0 skips the checksum, which
 * reads the whole file). */
typedef struct mf_shard_writer mf_shard_writer;
mf_shard_writer *mf_shard_writer_new(const char *path, int token_bytes);
/* Appends one document of n ids (each must fit the token type). */
int mf_shard_writer_add(mf_shard_writer *w, const int32_t *ids, int64_t n);
/* commit = 1 completes the file and renames it into place; commit = 0 drops
 * it. Frees w either way. */
int mf_shard_writer_close(mf_shard_writer *w, int commit);

typedef struct mf_shard mf_shard;
mf_shard *mf_shard_open(const char *path, int verify);
void mf_shard_free(mf_shard *s);
int mf_shard_token_bytes(const mf_shard *s);
int64_t mf_shard_ntokens(const mf_shard *s);
int64_t mf_shard_ndocs(const mf_shard *s);
/* Index of document d's first token, d in 0..ndocs (ndocs: the token count). */
int64_t mf_shard_doc_start(const mf_shard *s, int64_t d);
/* Tokens [start, start + n) into out as int32. */
int mf_shard_read(const mf_shard *s, int64_t start, int64_t n, int32_t *out);
/* batch windows of seq + 1 tokens at starts drawn from the counter-based
 * stream of seed, indexed by step: tokens [batch, seq] get the first seq,
 * targets [batch, seq] the last seq. The same (seed, step) gives the same
 * batch in any order of calls. */
int mf_shard_sample_batch(const mf_shard *s, int64_t batch, int64_t seq, uint64_t seed, uint64_t step,
                          int32_t *tokens, int32_t *targets);

/* Sequence packing (engine/packing.c): example e is ids/labels
 * [offsets[e], offsets[e + 1]); labels are -100 where the loss is masked.
 * Fills rows of `length` tokens and shifted targets ([rows, length] each)
 * and returns the row count; with tokens == NULL only counts the rows. */
int64_t mf_pack_rows(const int32_t *ids, const int32_t *labels, const int64_t *offsets, int64_t nexamples,
                     int64_t length, int32_t pad_id, int32_t *tokens, int32_t *targets);

/* ---- HTTP client ----
 * One HTTP(S) request through libcurl (engine/http.c). headers is a
 * NULL-terminated list of "Key: value" lines (NULL: none); body, when not
 * NULL, is sent as the request body. timeout_ms bounds the whole request
 * (<= 0: no bound). Methods: GET, POST, PUT, PATCH, DELETE, HEAD; only http
 * and https URLs, also across redirects; proxies follow curl's environment
 * variables. Any HTTP status is a response: the call returns 0 with the
 * status in *status, and the caller judges a 4xx or 5xx. -1 means no
 * response came; the message is "bad URL ..." or "cannot reach URL: why"
 * (connecting, sending or receiving failed, or the time ran out). */
typedef int (*mf_http_chunk_fn)(void *ctx, const char *data, size_t n);
/* Hands the response body to on_chunk piece by piece as it arrives (for
 * server-sent events); on_chunk returns nonzero to stop the transfer early,
 * which is not a failure. */
int mf_http_stream(const char *method, const char *url, const char *const *headers, const void *body,
                   size_t body_len, int64_t timeout_ms, mf_http_chunk_fn on_chunk, void *ctx, int *status);
/* Buffers the whole body (at most 256 MiB): *response is NUL-terminated,
 * *response_len excludes the NUL, and the caller frees it with mf_free. */
int mf_http_request(const char *method, const char *url, const char *const *headers, const void *body,
                    size_t body_len, int64_t timeout_ms, int *status, char **response, size_t *response_len);
/* Sleeps the calling thread, e.g. between retries. */
void mf_sleep_ms(int64_t ms);

/* ---- LoRA ----
 * Low-rank adapters on linear layers, as PEFT computes them (engine/lora.c):
 * y = x W^T + scale * dropout(x) A^T B^T with A [r, in], B [out, r] and
 * scale = alpha / r (alpha / sqrt(r) with rslora). Targets are PEFT's
 * module names q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
 * down_proj, or "all-linear" (all seven). Adding adapters freezes every
 * base parameter (backward then forms the adapters' gradients only, also
 * over quantized weights), and turns training mode on: dropout applies to
 * forward and loss passes, never to decoding. Adapter parameters are named
 * after their weight: model.layers.0.self_attn.q_proj.lora_A.weight
 * (PEFT's key without its "base_model.model." prefix); they are listed by
 * mf_model_lora_name, not mf_model_param_name. */
typedef struct mf_lora_opts {
  int r;
  double alpha;
  double dropout;
  int rslora;
  uint64_t seed;               /* A's initialisation and the dropout masks */
  const char *const *targets;
  int ntargets;
} mf_lora_opts;
int mf_model_add_lora(mf_model *m, const mf_lora_opts *opts);
int mf_model_lora_count(const mf_model *m);
const char *mf_model_lora_name(const mf_model *m, int i);
/* 1 when the parameter gets gradients, 0 when frozen, -1 when unknown. */
int mf_model_is_trainable(const mf_model *m, const char *name);
/* Training mode: whether adapter dropout applies. */
void mf_model_set_train(mf_model *m, int on);
/* W += scale B A (the adapter path is then off); unmerge subtracts it again,
 * which restores W up to float rounding. A base held in bf16 or in
 * quantized blocks becomes f32 when merged. */
int mf_model_merge_lora(mf_model *m);
int mf_model_unmerge_lora(mf_model *m);
/* PEFT's adapter_model.safetensors + adapter_config.json in dir
 * (base_model may be NULL), and llama.cpp's GGUF LoRA file. */
int mf_model_save_adapter(const mf_model *m, const char *dir, const char *base_model);
int mf_model_save_adapter_gguf(const mf_model *m, const char *path);
/* Adds the adapters of a PEFT folder or a GGUF LoRA file (*.gguf), after
 * checking every tensor against the model's shapes; training mode is then
 * off, as after PEFT's from_pretrained. */
int mf_model_load_adapter(mf_model *m, const char *path);

/* ---- server ----
 * An OpenAI-compatible HTTP server (engine/server*.c) over one model and
 * its tokenizer, which must outlive it: /v1/models, /v1/completions,
 * /v1/chat/completions (with server-sent events), /v1/embeddings, /health
 * and /metrics. Connections get threads of their own; one scheduler thread
 * owns the model and decodes every active request together, one token per
 * step (continuous batching). While it runs, nothing else may use the
 * model. Zero or negative options take the defaults in brackets. */
typedef struct mf_server mf_server;
/* Routes beyond the API, for a web front end such as the playground. A
 * page answers GET path with fixed bytes. A proxy forwards the JSON body of
 * POST path to its upstream URL with its headers (e.g. an API key the page
 * must not see) and streams the upstream's reply back as it comes, so a
 * page reaches remote endpoints without CORS; an upstream that answers
 * other than 2xx, or cannot be reached, ends the stream with the event
 * data: {"error": {"message": ...}}. A proxy takes requests only from
 * pages of the server itself (loopback Host, same Origin). */
typedef struct mf_server_route {
  const char *path;              /* the exact URL path, e.g. "/" */
  const char *content_type;      /* a page's Content-Type */
  const char *body;              /* a page's bytes */
  size_t body_len;
  const char *upstream;          /* a proxy's URL (NULL for a page) */
  const char *const *headers;    /* a proxy's "Key: value" lines, NULL-terminated (NULL: none) */
} mf_server_route;
typedef struct mf_server_opts {
  const char *host;          /* IPv4 address to bind [127.0.0.1] */
  int port;                  /* 0: an ephemeral port (see mf_server_port) */
  const char *name;          /* the model's id in replies ["moonforge"] */
  const char *chat_template; /* "chatml", "llama3", "mistral" [the tokenizer's] */
  int parallel;              /* sequences decoded together, KV cache slots [8] */
  int64_t context;           /* positions per sequence [max_position_embeddings, at most 2048] */
  int max_tokens;            /* largest max_tokens accepted [context] */
  int default_max_tokens;    /* when a request names none [256] */
  int max_queue;             /* requests waiting for a slot; more get 429 [64] */
  int64_t max_body;          /* request body bytes; more get 413 [1 MiB] */
  int timeout_s;             /* idle connections are closed after [30] seconds */
  int max_connections;       /* [256] */
  int grace_ms;              /* mf_server_stop lets in-flight requests finish this long [5000] */
  const mf_server_route *routes;  /* pages and proxies, copied at start [none] */
  int nroutes;
  struct mf_retriever *retriever; /* a RAG store whose chunks chat replies cite (see below) [none] */
  int top_k;                 /* sources per chat request when a request names none [4] */
} mf_server_opts;
/* m and t may both be NULL: a server of routes alone, whose model
 * endpoints answer 404. */
mf_server *mf_server_start(mf_model *m, mf_tokenizer *t, const mf_server_opts *opts);
int mf_server_port(const mf_server *s);
/* Stops accepting, lets in-flight requests finish for grace_ms, cancels the
 * rest, joins every thread and frees s. */
void mf_server_stop(mf_server *s);
/* The prompt ids of a chat, as tok:chat(messages, {add_generation_prompt =
 * true}) makes them with the template named (NULL: the tokenizer's). Returns
 * the full count even beyond cap (only cap are written), or -1. */
int64_t mf_chat_encode(mf_tokenizer *t, const char *template_name, int n, const char *const *roles,
                       const char *const *contents, int32_t *out, int64_t cap);
/* Slot-level decoding (engine/generate.c), for callers that admit and
 * retire sequences themselves: mf_model_decode_slots runs tokens [nslots, n]
 * through the cache slots listed (each at its own length) and writes each
 * one's last logits into logits [nslots, vocab]; mf_choose_id picks the
 * next id as generation does (greedy when temperature <= 0; else
 * temperature, top_k and top_p of o, drawing from rng), or returns -1. */
int mf_model_decode_slots(mf_model *m, mf_kv_cache *c, const int64_t *slots, int64_t nslots, const int32_t *tokens,
                          int64_t n, float *logits);
int32_t mf_choose_id(const float *logits, int64_t V, const mf_generate_opts *o, mf_rng *rng);
/* The mean over positions of the final normed hidden states of tokens [n]
 * into out [hidden_size]: a sentence embedding from a decoder. */
int mf_model_embed(mf_model *m, const int32_t *tokens, int64_t n, float *out);

/* ---- bundles ----
 * A bundle (engine/bundle.c) is one zstd-compressed tar archive holding a
 * model's files and MANIFEST.json: format "moonforge-bundle",
 * format_version, moonforge_version, created (UTC, ISO 8601), files (path,
 * size and sha256 of every other member) and the keys of the writer's info
 * object. Member names are relative paths without empty, "." or ".."
 * components. Members are written in name order with one time stamp, owner
 * 0 and mode 0644, so the same files give the same bytes, and the archive is
 * written atomically. */
typedef struct mf_bundle_writer mf_bundle_writer;
mf_bundle_writer *mf_bundle_writer_new(void);
void mf_bundle_writer_free(mf_bundle_writer *w);
/* The file at path becomes member name; it is read by mf_bundle_write. */
int mf_bundle_add_file(mf_bundle_writer *w, const char *name, const char *path);
/* n bytes of data (copied now) become member name. */
int mf_bundle_add_bytes(mf_bundle_writer *w, const char *name, const void *data, size_t n);
/* info_json: a JSON object of extra manifest keys (NULL: none). created:
 * seconds since the epoch for the manifest and every member; < 0 takes the
 * newest modification time of the added files. */
int mf_bundle_write(mf_bundle_writer *w, const char *path, const char *info_json, int64_t created);
/* Unpacks a bundle into the new folder dir, through a temporary folder
 * beside it that is renamed to dir only once every entry and every
 * checksum is verified (and removed otherwise). Links, special files,
 * unsafe names, files missing from or extra to the manifest, a checksum or
 * size that differs, a damaged archive and sizes past the limits are
 * refused. sha256_hex, when not NULL, receives the SHA-256 of the archive
 * file as read. limits may be NULL; fields <= 0 take the defaults. */
typedef struct mf_bundle_limits {
  int64_t max_total_bytes;  /* all files together; default 64 GiB */
  int64_t max_file_bytes;   /* one file; default max_total_bytes */
  int64_t max_entries;      /* default 100000 */
  double max_ratio;         /* unpacked bytes per archive byte, beyond 16 MiB; default 1000 */
} mf_bundle_limits;
int mf_bundle_unpack(const char *archive, const char *dir, const mf_bundle_limits *limits, char *sha256_hex);

/* ---- retrieval: vector indexes ----
 * A set of float vectors of one dimension under int64 ids (engine/vindex.c),
 * searched by similarity: the dot product (MF_METRIC_DOT) or the cosine
 * (MF_METRIC_COSINE: vectors and queries are scaled to unit length first).
 * Higher scores are better. An exact index compares each query with every
 * vector; an HNSW index walks a navigable small-world graph (Malkov and
 * Yashunin) with M links per node (2M on the bottom layer), ef_construction
 * candidates while building and ef_search while searching; node levels are
 * drawn from the counter-based stream of seed, so the same additions give
 * the same graph. Deleting leaves a tombstone: the vector stays in the graph
 * for navigation and is never returned; compaction rebuilds without them.
 * Results hold min(k, live vectors) hits ordered by score, ties by lower id;
 * the rest of each row is id -1, score -INFINITY. Searches run queries (HNSW)
 * or slices of the index (exact) on the engine's threads, with the same
 * results for any thread count. An index is one file (written atomically,
 * checksummed); opening maps it and reads vectors and graph in place until
 * the first change copies them. */
typedef enum mf_vindex_kind { MF_VINDEX_EXACT = 0, MF_VINDEX_HNSW = 1 } mf_vindex_kind;
typedef enum mf_metric { MF_METRIC_COSINE = 0, MF_METRIC_DOT = 1 } mf_metric;
typedef struct mf_vindex_opts {
  int dim;
  mf_metric metric;
  mf_vindex_kind kind;
  int M;                 /* [16] */
  int ef_construction;   /* [200] */
  int ef_search;         /* [64] */
  uint64_t seed;
} mf_vindex_opts;
typedef struct mf_vindex mf_vindex;
mf_vindex *mf_vindex_new(const mf_vindex_opts *opts);
void mf_vindex_free(mf_vindex *ix);
/* Adds vectors [n, dim] under ids (NULL: mf_vindex_next_id onwards). An id
 * already live in the index is an error and nothing is added. */
int mf_vindex_add(mf_vindex *ix, const int64_t *ids, const float *vectors, int64_t n);
int mf_vindex_delete(mf_vindex *ix, int64_t id);
int mf_vindex_compact(mf_vindex *ix);
/* queries [nq, dim]; ids and scores [nq, k]. dim must be the index's. */
int mf_vindex_search(mf_vindex *ix, const float *queries, int64_t nq, int dim, int k, int64_t *ids,
                     float *scores);
int mf_vindex_save(const mf_vindex *ix, const char *path);
mf_vindex *mf_vindex_open(const char *path);
void mf_vindex_get_opts(const mf_vindex *ix, mf_vindex_opts *out);
int mf_vindex_set_ef_search(mf_vindex *ix, int ef_search);
int64_t mf_vindex_count(const mf_vindex *ix);     /* live vectors */
int64_t mf_vindex_deleted(const mf_vindex *ix);   /* tombstones */
int64_t mf_vindex_next_id(const mf_vindex *ix);   /* 1 + the largest id added, 1 when none */
/* Similarities computed by searches since the last reset (builds not counted). */
int64_t mf_vindex_distance_count(const mf_vindex *ix);
void mf_vindex_reset_distance_count(mf_vindex *ix);

/* ---- sentence embeddings ----
 * A BERT-family sentence encoder (engine/bert.c) as sentence-transformers
 * runs it: all-MiniLM-L6-v2, bge-small and the like, from a folder holding
 * config.json (model_type "bert"), model.safetensors, tokenizer.json
 * (WordPiece) and optionally modules.json with a Pooling module (mean or
 * CLS pooling; mean without one) and sentence_bert_config.json
 * (max_seq_length). Texts become [CLS] text [SEP], cut to max_len ids. */
typedef struct mf_encoder mf_encoder;
mf_encoder *mf_encoder_load(const char *dir);
/* precision "f32" (as mf_encoder_load) or "int8": the layers' GEMMs in
 * int8, weights quantized at load and activations on each call, in blocks
 * of 64 (faster; cosine >= 0.995 to f32 on MiniLM). */
mf_encoder *mf_encoder_load_precision(const char *dir, const char *precision);
const char *mf_encoder_precision(const mf_encoder *e);  /* "f32" or "int8" */
void mf_encoder_free(mf_encoder *e);
int mf_encoder_dim(const mf_encoder *e);
int mf_encoder_max_len(const mf_encoder *e);
const char *mf_encoder_pooling(const mf_encoder *e);  /* "mean" or "cls" */
/* The encoder's own tokenizer, valid while the encoder lives. */
mf_tokenizer *mf_encoder_tokenizer(mf_encoder *e);
/* Embeddings of n texts (lens[i] bytes each; lens NULL: NUL-terminated)
 * into out [n, dim], L2-normalised when normalize. Texts are sorted by
 * length into batches of batch_size (<= 0: 32) to limit padding; a text's
 * embedding depends on the texts and batch_size, not on the thread count. */
int mf_encoder_encode(mf_encoder *e, const char *const *texts, const size_t *lens, int64_t n, int batch_size,
                      int normalize, float *out);
/* The last hidden states of ids [B, T] into out [B, T, dim]; sequence b is
 * its first lens[b] ids, the rest padding (masked out of attention). */
int mf_encoder_hidden(mf_encoder *e, const int32_t *ids, const int32_t *lens, int64_t B, int64_t T, float *out);

/* ---- retrieval stores, for answers with sources ----
 * A RAG store is a folder (NAME.mfrag) holding index.mfvi, an mf_vindex
 * whose ids are the chunk numbers 1..n; chunks.jsonl, one JSON object a
 * line in id order ({"id", "text", "source", "title", "line_start",
 * "line_end"}; source, title and lines may be null); and store.json
 * ({"format": "moonforge-rag-store", "version": 1, "encoder", "dim",
 * "metric", "count", "bm25"}). runner/lua/moonforge/rag_store.lua writes
 * stores. A retriever (engine/server_rag.c) opens one with its sentence
 * encoder (store.json's "encoder": a BERT-family folder for
 * mf_encoder_load; a relative path is taken from the working directory)
 * and answers queries with their nearest chunks; the server uses one to
 * put sources before a chat (mf_server_opts.retriever). Opening checks
 * every file against the others (counts, dimension, metric, ids) and fails
 * with a message naming the store and the first fault. Queries may come
 * from several threads; they take turns. */
typedef struct mf_retriever mf_retriever;
typedef struct mf_rag_chunk {
  const char *text;
  const char *source;    /* NULL when unknown */
  const char *title;     /* the heading path, "A > B"; NULL when none */
  int64_t line_start, line_end;  /* 0 when unknown */
} mf_rag_chunk;
mf_retriever *mf_retriever_open(const char *dir);
void mf_retriever_free(mf_retriever *r);
int64_t mf_retriever_count(const mf_retriever *r);
const char *mf_retriever_encoder_path(const mf_retriever *r);  /* as store.json gives it */
int mf_retriever_bm25(const mf_retriever *r);                  /* store.json's "bm25" */
/* Chunk id (1..count) into *out; its strings live as long as r. */
int mf_retriever_chunk(const mf_retriever *r, int64_t id, mf_rag_chunk *out);
/* Embeds query (len bytes, L2-normalised) and writes the ids and scores of
 * its k nearest chunks into ids [k] and scores [k], best first (ties by
 * lower id). Returns how many were found, min(k, count), or -1. */
int mf_retriever_search(mf_retriever *r, const char *query, size_t len, int k, int64_t *ids, float *scores);

#endif
