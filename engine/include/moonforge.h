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

#endif
