/* Version, per-thread error messages, hashing and counter-based RNG. */
#include "moonforge.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>

static _Thread_local char errbuf[1024];

const char *mf_version(void) { return MF_VERSION_STRING; }
const char *mf_errmsg(void) { return errbuf; }

int mf_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  return -1;
}

void *mf_fail_null(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, sizeof errbuf, fmt, ap);
  va_end(ap);
  return NULL;
}

static void to_hex(const unsigned char *md, unsigned n, char *hex) {
  static const char digits[] = "0123456789abcdef";
  for (unsigned i = 0; i < n; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  hex[2 * n] = 0;
}

int mf_sha256_bytes(const void *data, size_t n, char *hex_out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (!EVP_Digest(data, n, md, &len, EVP_sha256(), NULL))
    return mf_fail("sha256: digest failed");
  to_hex(md, len, hex_out);
  return 0;
}

int mf_sha256_file(const char *path, char *hex_out) {
  FILE *f = fopen(path, "rb");
  if (!f) return mf_fail("%s: %s", path, strerror(errno));
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  static _Thread_local unsigned char buf[1 << 16];
  size_t got;
  while (ok && (got = fread(buf, 1, sizeof buf, f)) > 0) ok = EVP_DigestUpdate(ctx, buf, got);
  int read_error = ferror(f);
  fclose(f);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  ok = ok && !read_error && EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  if (!ok) return mf_fail("%s: could not read for hashing", path);
  to_hex(md, len, hex_out);
  return 0;
}

uint64_t mf_hash64(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return mfk_mix64(h);
}

void mf_rng_init(mf_rng *r, uint64_t seed, uint64_t stream) {
  r->key = mfk_mix64(mfk_mix64(seed) ^ (stream * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
  r->counter = 0;
}

/* The kernels' inline definition, which their dropout mask shares. */
uint64_t mf_rng_at(uint64_t key, uint64_t index) { return mfk_rng_at(key, index); }

uint64_t mf_rng_u64(mf_rng *r) { return mf_rng_at(r->key, r->counter++); }

double mf_rng_uniform(mf_rng *r) { return (double)(mf_rng_u64(r) >> 11) * 0x1.0p-53; }

double mf_rng_normal(mf_rng *r) {
  double u1 = ((double)(mf_rng_u64(r) >> 11) + 0.5) * 0x1.0p-53; /* (0,1): log is finite */
  double u2 = mf_rng_uniform(r);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
