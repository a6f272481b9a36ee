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

#endif
