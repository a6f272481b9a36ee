/*
 * moonforge compute kernels (CPU).
 *
 * Contract
 * - Kernels know nothing of models: plain row-major float arrays and shapes.
 * - Deterministic: the same inputs give the same bits whatever the thread
 *   count. Work is split only along independent outputs; every reduction runs
 *   in a fixed order (partial sums over fixed-size chunks, combined in index
 *   order), never in an order that depends on scheduling.
 * - Threads come from an mfk_pool the caller owns; pool may be NULL (run on
 *   the calling thread).
 * - Backward kernels ACCUMULATE into parameter gradients (dw += ...) and
 *   WRITE input gradients (dx = ...) unless stated otherwise.
 */
#ifndef MF_KERNELS_H
#define MF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Kernel library version, part of cache keys: it changes whenever some
 * kernel's results change bits, so that cells cached (and fine-tuning
 * checkpoints made) by older kernels are not taken for this one's. */
const char *mfk_version(void);

/* ---- thread pool ---- */
typedef struct mfk_pool mfk_pool;
mfk_pool *mfk_pool_new(int nthreads);
void mfk_pool_free(mfk_pool *pool);
int mfk_pool_size(const mfk_pool *pool);
/* Calls fn(ctx, begin, end) over a partition of [0, n) into contiguous
 * ranges, one or more per worker, and waits for all. */
typedef void (*mfk_range_fn)(void *ctx, int64_t begin, int64_t end);
void mfk_parallel_for(mfk_pool *pool, int64_t n, mfk_range_fn fn, void *ctx);

/* ---- matrix multiply ----
 * C[M,N] = alpha * op(A) * op(B) + beta * C, row-major with leading
 * dimensions; op(A) is A[M,K] (trans_a = 0) or A[K,M] transposed (1); op(B)
 * is B[K,N] (trans_b = 0) or B[N,K] transposed (1). beta = 0 ignores C's old
 * contents (NaN included). */
void mfk_gemm(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
              float beta, float *C, int64_t ldc);
/* C[M,N] = alpha * sum_t op(A_t) * op(B_t) + beta * C over n_terms terms of
 * depth k >= 0 each, summed as one product over their K ranges laid end to
 * end (term 0 first): a LoRA adapter's up-projection joins its base weight's
 * product, and input gradients from several weights meet in one C. */
typedef struct mfk_gemm_term {
  const float *a, *b;
  int64_t k, lda, ldb;
  int trans_a, trans_b;
} mfk_gemm_term;
void mfk_gemm_terms(mfk_pool *pool, int64_t M, int64_t N, int n_terms, const mfk_gemm_term *terms,
                    float alpha, float beta, float *C, int64_t ldc);
/* The instruction set the GEMM dispatched to: "avx512", "avx2" or "generic". */
const char *mfk_gemm_isa(void);

/* ---- normalisation ----
 * RMSNorm over rows of length d: y = x / sqrt(mean(x^2) + eps) * w.
 * rstd[n] receives 1/sqrt(mean(x^2)+eps) for the backward pass (may be NULL). */
void mfk_rmsnorm_fwd(mfk_pool *pool, float *y, float *rstd, const float *x, const float *w,
                     int64_t n, int64_t d, float eps);
void mfk_rmsnorm_bwd(mfk_pool *pool, float *dx, float *dw, const float *dy, const float *x,
                     const float *w, const float *rstd, int64_t n, int64_t d);
/* LayerNorm (GPT-2/BERT variants): y = (x - mean) * rstd * w + b; b may be NULL. */
void mfk_layernorm_fwd(mfk_pool *pool, float *y, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, int64_t n, int64_t d, float eps);
/* y = LayerNorm(x + bias + res) over rows of d, the residual step of a
 * post-LN transformer; x is overwritten with the sum and y may be res.
 * Row statistics in double, in eight interleaved lanes. */
void mfk_layernorm_residual_fwd(mfk_pool *pool, float *y, float *x, const float *bias, const float *res,
                                const float *w, const float *b, int64_t n, int64_t d, float eps);
void mfk_layernorm_bwd(mfk_pool *pool, float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, const float *mean, const float *rstd,
                       int64_t n, int64_t d);

/* ---- rotary position embedding (HF rotate-half convention) ----
 * x is [rows, heads, head_dim] in place; row r has position pos[r]. The pair
 * (i, i + head_dim/2) is rotated by angle pos * theta^(-2i/head_dim).
 * Backward is the inverse rotation, applied in place to the gradient. */
void mfk_rope_fwd(mfk_pool *pool, float *x, const int32_t *pos, int64_t rows, int64_t heads,
                  int64_t head_dim, float theta);
void mfk_rope_bwd(mfk_pool *pool, float *dx, const int32_t *pos, int64_t rows, int64_t heads,
                  int64_t head_dim, float theta);

/* ---- causal attention with grouped-query heads ----
 * q is [B, Tq, Hq, hd]; k and v are [B, Tk, Hkv, hd] with row stride kv_stride
 * floats between consecutive positions (Hkv*hd when dense; larger for a KV
 * cache) and Tk*kv_stride between sequences; hd <= 256; Hq is a multiple of
 * Hkv and query head h reads kv head h/(Hq/Hkv).
 * Query i sits at position (Tk - Tq + i) and sees keys 0..Tk-Tq+i.
 * out is [B, Tq, Hq, hd]; lse is [B, Hq, Tq] (log-sum-exp of the scaled
 * scores, kept for backward; may be NULL). Scale is 1/sqrt(hd). Tiled over
 * keys (online softmax): no Tq x Tk matrix is kept. With at most 6 queries
 * per kv head (Tq * Hq/Hkv), as in decoding, keys are scored straight from
 * their rows; that path agrees with the tiled one to float rounding. */
void mfk_attention_fwd(mfk_pool *pool, float *out, float *lse, const float *q, const float *k,
                       const float *v, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv,
                       int64_t hd, int64_t kv_stride);
/* Backward of the above with Tq == Tk (training). Writes dq, dk, dv. */
void mfk_attention_bwd(mfk_pool *pool, float *dq, float *dk, float *dv, const float *dout,
                       const float *q, const float *k, const float *v, const float *out,
                       const float *lse, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd);

/* ---- activations (n elements) ---- */
/* out = silu(gate) * up */
void mfk_swiglu_fwd(mfk_pool *pool, float *out, const float *gate, const float *up, int64_t n);
void mfk_swiglu_bwd(mfk_pool *pool, float *dgate, float *dup, const float *dout,
                    const float *gate, const float *up, int64_t n);
/* GELU: tanh approximation when approx != 0 (GPT-2), else exact erf (BERT). */
void mfk_gelu_fwd(mfk_pool *pool, float *y, const float *x, int64_t n, int approx);
void mfk_gelu_bwd(mfk_pool *pool, float *dx, const float *dy, const float *x, int64_t n, int approx);
/* y [rows, d] = gelu(y + bias) in place: a linear layer's bias and
 * activation in one pass. */
void mfk_bias_gelu_fwd(mfk_pool *pool, float *y, const float *bias, int64_t rows, int64_t d, int approx);
/* erf(x) as the exact GELU computes it: within 1.2 ulp of erf, the same
 * bits in every build. */
float mfk_erf(float x);

/* ---- loss ----
 * Softmax cross-entropy over rows of logits [n, vocab] against targets[n];
 * targets equal to ignore_index count for nothing. Returns the SUM of the
 * counted rows' losses and stores their number in *count. When dlogits is
 * non-NULL it receives (softmax - onehot) * dscale for counted rows and 0
 * for ignored ones (dlogits may alias logits). */
double mfk_xent(mfk_pool *pool, float *dlogits, const float *logits, const int32_t *targets,
                int64_t n, int64_t vocab, int32_t ignore_index, float dscale, int64_t *count);

/* ---- embeddings ---- */
/* out[i, :] = table[ids[i], :] */
void mfk_embedding_fwd(mfk_pool *pool, float *out, const float *table, const int32_t *ids,
                       int64_t n, int64_t d);
/* dtable[ids[i], :] += dout[i, :], in order of i (deterministic). */
void mfk_embedding_bwd(mfk_pool *pool, float *dtable, const float *dout, const int32_t *ids,
                       int64_t n, int64_t d);

/* ---- products with a low-rank factor (LoRA adapters) ----
 * X [rows, n] (Y for up) is the big operand, r the small rank, V [r, n] and
 * H [rows, r] the factors. keep, where not NULL, is a dropout mask (bit
 * i * n + c for element [i, c], as mfk_dropout_mask draws it): masked-out
 * elements count as zero. Adapters that share the big operand come as
 * terms of one call, which reads it once; each term gets the bits it would
 * get alone, and the thread count never changes the bits. */
/* One adapter's part in a low-rank product whose big operand several
 * adapters share (LoRA's q, k and v read one input). */
typedef struct mfk_lowrank_term {
  float *out;            /* down: [rows, r]; grad: G, laid out as g_j, g_c say */
  const float *h;        /* up and grad: H [rows, r] */
  const float *v;        /* down and up: V [r, n] */
  const uint64_t *keep;  /* dropout mask of X (down, grad) or of the product (up), or NULL */
  float alpha;
} mfk_lowrank_term;
/* t[k].out[i, j] = t[k].alpha * sum_c keep_k(X)[i, c] t[k].v[j, c], for each of n_terms terms. */
void mfk_lowrank_down_terms(mfk_pool *pool, int n_terms, const mfk_lowrank_term *t, const float *X,
                            int64_t rows, int64_t n, int64_t r);
/* Y[i, c] += keep_k(t[k].alpha * sum_j t[k].h[i, j] t[k].v[j, c]) for k = 0, 1, ... in that order. */
void mfk_lowrank_up_terms(mfk_pool *pool, float *Y, int n_terms, const mfk_lowrank_term *t,
                          int64_t rows, int64_t n, int64_t r);
/* G_k(j, c) += t[k].alpha * sum_i t[k].h[i, j] keep_k(X)[i, c] (row order), G_k(j, c) at
 * t[k].out[j * g_j + c * g_c]. */
void mfk_lowrank_grad_terms(mfk_pool *pool, int n_terms, const mfk_lowrank_term *t, int64_t g_j, int64_t g_c,
                            const float *X, int64_t rows, int64_t n, int64_t r);
/* In one pass over Y [rows, n]: D[i, j] = alpha_d * sum_c Y[i, c] V[j, c] (D [rows, r], V [r, n]) and
 * G(j, c) += alpha_g * sum_i H[i, j] Y[i, c] (H [rows, r], G(j, c) at G[j * g_j + c * g_c]). D has
 * down's bits; G's sum may run over chunks of rows added in order, chunks that depend on the shape
 * alone. */
void mfk_lowrank_down_grad(mfk_pool *pool, float *D, const float *V, float alpha_d, float *G, int64_t g_j,
                           int64_t g_c, const float *H, float alpha_g, const float *Y, int64_t rows, int64_t n,
                           int64_t r);

/* ---- elementwise and reductions ---- */
void mfk_add(mfk_pool *pool, float *y, const float *a, const float *b, int64_t n); /* y = a + b */
void mfk_axpy(mfk_pool *pool, float *y, float alpha, const float *x, int64_t n);  /* y += alpha*x */
void mfk_copy(mfk_pool *pool, float *y, const float *x, int64_t n);               /* y = x */
void mfk_scale(mfk_pool *pool, float *x, float alpha, int64_t n);                /* x *= alpha */
/* Counter-based random numbers: mfk_rng_at(key, i) is draw i of the stream
 * key (the engine's mf_rng_at). Two rounds of splitmix64's finalizer, the
 * second keyed by the stream, make neighbouring counters independent. Inline
 * so that loops over counters vectorise. */
static inline uint64_t mfk_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static inline uint64_t mfk_rng_at(uint64_t key, uint64_t index) {
  return mfk_mix64(mfk_mix64(key + index * 0x9e3779b97f4a7c15ULL) ^ key);
}
/* A dropout mask of nwords 64-bit words (see mfk_lowrank_term): bit i of word
 * w is set (kept) when 16-bit field i % 4 (bits 16 f .. 16 f + 15 for field
 * f) of mfk_rng_at(key, 16 w + i / 4) is at least cut, which keeps an
 * element with probability 1 - cut / 2^16. */
void mfk_dropout_mask(mfk_pool *pool, uint64_t *keep, int64_t nwords, uint64_t key, uint32_t cut);
/* y[r, :] += bias for r < rows; dbias += column sums of dy (fixed order). */
void mfk_bias_fwd(mfk_pool *pool, float *y, const float *bias, int64_t rows, int64_t d);
void mfk_bias_bwd(mfk_pool *pool, float *dbias, const float *dy, int64_t rows, int64_t d);
/* Sum of squares in double, fixed chunking (for gradient-norm clipping). */
double mfk_sumsq(mfk_pool *pool, const float *x, int64_t n);

/* ---- optimizer ----
 * One AdamW step (decoupled weight decay, bias-corrected), step >= 1, in
 * PyTorch's order of operations so results track torch.optim.AdamW:
 *   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= (lr / (1-b1^step)) * m / (sqrt(v) / sqrt(1-b2^step) + eps) */
void mfk_adamw(mfk_pool *pool, float *p, const float *g, float *m, float *v, int64_t n,
               float lr, float b1, float b2, float eps, float wd, int64_t step);

/* ---- quantized weights (ggml's block formats) ----
 * A weight matrix [out, in] stored as `out` rows of in/32 blocks; each block
 * holds 32 consecutive weights of a row and f16 scales (IEEE half bits):
 *   Q8_0  w[j] = d * qs[j]
 *   Q4_0  w[j] = d * ((qs[j] & 15) - 8),  w[j + 16] = d * ((qs[j] >> 4) - 8)
 *   Q4_1  w[j] = d * (qs[j] & 15) + m,    w[j + 16] = d * (qs[j] >> 4) + m
 * The matmul takes a weight repacked once by mfk_qpack (eight rows side by
 * side, for SIMD lanes), quantizes activations per block of 32 to int8 with
 * a float scale (as llama.cpp's Q8_0/Q8_1 activations) and sums integer
 * products per block, scaled once per block. */
enum { MFK_QBLOCK = 32 };
typedef enum mfk_qtype { MFK_Q8_0 = 8, MFK_Q4_0 = 2, MFK_Q4_1 = 3 } mfk_qtype; /* ggml's numbers */
typedef struct mfk_block_q8_0 { uint16_t d; int8_t qs[32]; } mfk_block_q8_0;
typedef struct mfk_block_q4_0 { uint16_t d; uint8_t qs[16]; } mfk_block_q4_0;
typedef struct mfk_block_q4_1 { uint16_t d, m; uint8_t qs[16]; } mfk_block_q4_1;
/* An activation block: x[j] ~ d * qs[j]; s = d * sum(qs) serves Q4_1's offset. */
typedef struct mfk_block_q8_act { float d, s; int8_t qs[32]; } mfk_block_q8_act;

/* Quantizes 32 floats to int8 with scale max|x|/127, rounding half away
 * from zero (C's roundf); returns the scale (0 for an all-zero block). */
float mfk_quantize_q8(const float *x, int8_t *qs);
/* Bytes of one block of type; 0 for a type the matmul does not take. */
size_t mfk_qblock_bytes(mfk_qtype type);
/* IEEE half to float (for block scales). */
float mfk_f16_to_f32(uint16_t h);
/* Bytes of W [out, in] of type in the matmul's layout. */
size_t mfk_qpack_bytes(mfk_qtype type, int64_t out, int64_t in);
/* packed = W [out, in] given as `out` rows of in/32 blocks (as GGUF stores
 * it), in the matmul's layout; in is a multiple of 32. */
void mfk_qpack(mfk_qtype type, void *packed, const void *w, int64_t out, int64_t in);
/* y[rows, out] = x[rows, in] W[out, in]^T for packed W, added to y when
 * accumulate. act holds rows * in/32 blocks of scratch. Work is split over
 * output columns; each dot product sums its blocks in order, so the result
 * does not depend on the thread count, nor a row's on the other rows. */
void mfk_qgemm(mfk_pool *pool, mfk_qtype type, float *y, int accumulate, const float *x,
               const void *packed, int64_t rows, int64_t out, int64_t in, mfk_block_q8_act *act);
/* The products of n weights with one input x [rows, in] (Q, K and V; gate
 * and up): x is quantized once and all run in one pool call, each y as
 * mfk_qgemm would give it. */
typedef struct mfk_qweight {
  mfk_qtype type;
  const void *packed;  /* W [out, in], from mfk_qpack */
  int64_t out;
  float *y;            /* [rows, out] */
} mfk_qweight;
void mfk_qgemm_many(mfk_pool *pool, int n, const mfk_qweight *w, int accumulate, const float *x,
                    int64_t rows, int64_t in, mfk_block_q8_act *act);

/* ---- quantized weights, transposed (kernels/cpu/quant_t.c) ----
 * For gradients through a frozen quantized weight W [out, in] (packed by
 * mfk_qpack; in a multiple of 32). */
/* y[rows, in] = the f32 values of W's first `rows` rows. */
void mfk_qdequantize(mfk_qtype type, float *y, const void *w, int64_t rows, int64_t in);
/* dx[rows, in] = dy[rows, out] W[out, in], added to dx when accumulate. W is
 * decoded tile by tile to f32 (no activation quantization) and the tiles'
 * products are summed in a fixed order: the bits do not depend on the
 * thread count. */
void mfk_qgemm_t(mfk_pool *pool, mfk_qtype type, float *dx, int accumulate, const float *dy, const void *w,
                 int64_t rows, int64_t out, int64_t in);

/* ---- vector distances (kernels/cpu/distance.c) ----
 * Dot products for vector search. A pair of vectors gives the same bits in
 * every call: the sum runs in a fixed order that depends on n alone. */
float mfk_dot(const float *a, const float *b, int64_t n);
/* out[r] = dot(q, x[r, :]) for the rows of x [rows, dim]. */
void mfk_dot_rows(float *out, const float *q, const float *x, int64_t rows, int64_t dim);
/* out[i] = dot(q, x[rows[i], :]) for i < n, x being [*, dim]: the rows a
 * graph search visits, fetched from memory ahead of their turn. */
void mfk_dot_gather(float *out, const float *q, const float *x, const int32_t *rows, int64_t n, int64_t dim);

/* ---- bidirectional attention over padded sequences (encoders) ----
 * kernels/cpu/attention_bidir.c. q, k and v are [B, T, H, hd] with stride
 * floats between consecutive positions (H*hd when dense; 3*H*hd for a fused
 * QKV projection); out is [B, T, H, hd] dense. Query t of sequence b sees
 * keys 0 .. lens[b]-1 (1 <= lens[b] <= T); rows t >= lens[b] are padding and
 * get zeros. Scale is 1/sqrt(hd). scratch holds
 * mfk_attention_bidir_scratch(B, T, H, hd) floats (each head's keys and
 * values copied into tiles). */
int64_t mfk_attention_bidir_scratch(int64_t B, int64_t T, int64_t H, int64_t hd);
void mfk_attention_bidir_fwd(mfk_pool *pool, float *out, const float *q, const float *k, const float *v,
                             const int32_t *lens, int64_t B, int64_t T, int64_t H, int64_t hd,
                             int64_t stride, float *scratch);

/* ---- int8 linear layers (kernels/cpu/gemm_i8.c) ----
 * y[rows, out] = x[rows, in] W[out, in]^T with W quantized to int8 once
 * and x on each call, both in blocks of 64 along `in` (scale
 * max|block|/127); each block's int8 products are summed exactly in int32
 * (AVX-512 VNNI where the CPU has it, portable code elsewhere), scaled and
 * added in block order: the same bits either way and on any thread
 * count. in < 66000. */
typedef struct mfk_i8_weight mfk_i8_weight;
/* NULL when out of memory. */
mfk_i8_weight *mfk_i8_weight_new(const float *w, int64_t out, int64_t in);
void mfk_i8_weight_free(mfk_i8_weight *w);
/* Bytes of scratch mfk_i8_linear needs for rows x [rows, in]. */
size_t mfk_i8_scratch_bytes(int64_t rows, int64_t in);
void mfk_i8_linear(mfk_pool *pool, float *y, const float *x, const mfk_i8_weight *w, int64_t rows,
                   void *scratch);
/* The micro-kernel mfk_i8_linear runs: "avx512vnni" or "generic". */
const char *mfk_i8_isa(void);

/* ---- bf16 matrix multiply (kernels/cpu/gemm_bf16.c) ----
 * mfk_gemm's product, shapes and transposes with bf16 operands (the bit
 * patterns: the high half of an IEEE float) and f32 C. Products of bf16
 * values are exact in f32 and summed in f32 in a fixed order of K, so the
 * result is as accurate as mfk_gemm's on the rounded inputs. Runs on
 * AVX512_BF16 (vdpbf16ps) where the CPU has it and on portable code
 * elsewhere; both add in the instruction's order and give the same bits,
 * except that the instruction flushes subnormals to zero. */
void mfk_gemm_bf16(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                   float alpha, const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                   float beta, float *C, int64_t ldc);
/* The same with A in f32, rounded to bf16 (to nearest even) as it is read:
 * f32 activations times bf16 weights. The result equals mfk_gemm_bf16's on
 * the rounded A, bit for bit. */
void mfk_gemm_f32_bf16(mfk_pool *pool, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                       float alpha, const float *A, int64_t lda, const uint16_t *B, int64_t ldb,
                       float beta, float *C, int64_t ldc);
/* The path mfk_gemm_bf16 takes: "avx512bf16" or "generic". */
const char *mfk_gemm_bf16_isa(void);

#endif
