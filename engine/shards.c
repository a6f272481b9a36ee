/*
 * Token shards: tokenized corpora on disk, for data larger than memory.
 *
 * File layout (little-endian):
 *   0   8 bytes  magic "MFTOKENS"
 *   8   u32      format version (1)
 *   12  u32      bytes per token: 2 (uint16) or 4 (int32)
 *   16  u64      token count
 *   24  u64      document count
 *   32  32 bytes SHA-256 of every byte after the header
 *   64  tokens, then zero padding to a multiple of 8 bytes, then
 *       document count + 1 u64 offsets: the index of each document's first
 *       token, ending with the token count.
 * Offsets come after the tokens so that a writer can stream documents of
 * unknown number and size, keeping only the offsets in memory.
 *
 * Writing goes to a temporary file renamed over the target at the end, so a
 * reader never sees half a shard. Opening memory-maps the file and trusts
 * nothing: the size must match the header exactly, the offsets must rise
 * from 0 to the token count, and (unless asked not to, for huge files whose
 * full read would cost too much) the checksum must match. Reads copy tokens
 * out as int32, so callers need not care how they are stored.
 */
#define _GNU_SOURCE
#include "formats.h"
#include "internal.h"
#include "moonforge.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

enum { HEADER_SIZE = 64, VERSION = 1, DIGEST_SIZE = 32, CHUNK = 4096 };
static const char MAGIC[8] = {'M', 'F', 'T', 'O', 'K', 'E', 'N', 'S'};

typedef struct {
  uint32_t version;
  uint32_t token_bytes;
  uint64_t ntokens;
  uint64_t ndocs;
  unsigned char digest[DIGEST_SIZE];
} header;

static void header_encode(const header *h, unsigned char *out) {
  memcpy(out, MAGIC, 8);
  memcpy(out + 8, &h->version, 4);
  memcpy(out + 12, &h->token_bytes, 4);
  memcpy(out + 16, &h->ntokens, 8);
  memcpy(out + 24, &h->ndocs, 8);
  memcpy(out + 32, h->digest, DIGEST_SIZE);
}

static void header_decode(const unsigned char *in, header *h) {
  memcpy(&h->version, in + 8, 4);
  memcpy(&h->token_bytes, in + 12, 4);
  memcpy(&h->ntokens, in + 16, 8);
  memcpy(&h->ndocs, in + 24, 8);
  memcpy(h->digest, in + 32, DIGEST_SIZE);
}

static uint64_t padded(uint64_t nbytes) { return (nbytes + 7) / 8 * 8; }

/* ---- writing ---- */

struct mf_shard_writer {
  char *path;
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f;
  EVP_MD_CTX *md;
  int token_bytes;
  int ok;             /* 0 once any write failed: close then discards */
  uint64_t ntokens;
  uint64_t *offsets;  /* start of each document so far */
  uint64_t ndocs, cap;
};

static int writer_put(mf_shard_writer *w, const void *data, size_t n) {
  if (fwrite(data, 1, n, w->f) != n || !EVP_DigestUpdate(w->md, data, n)) {
    w->ok = 0;
    return mf_fail("%s: cannot write: %s", w->path, strerror(errno));
  }
  return 0;
}

mf_shard_writer *mf_shard_writer_new(const char *path, int token_bytes) {
  if (token_bytes != 2 && token_bytes != 4)
    return mf_fail_null("%s: tokens take 2 (uint16) or 4 (int32) bytes, not %d", path, token_bytes);
  mf_shard_writer *w = calloc(1, sizeof *w);
  if (!w) return mf_fail_null("%s: out of memory", path);
  w->path = strdup(path);
  w->md = EVP_MD_CTX_new();
  w->token_bytes = token_bytes;
  w->ok = 1;
  if (!w->path || !w->md || !EVP_DigestInit_ex(w->md, EVP_sha256(), NULL)) {
    mf_shard_writer_close(w, 0);
    return mf_fail_null("%s: cannot start a checksum", path);
  }
  w->f = mf_atomic_begin(path, w->tmp);
  unsigned char blank[HEADER_SIZE] = {0};
  if (!w->f || fwrite(blank, 1, HEADER_SIZE, w->f) != HEADER_SIZE) {
    if (w->f) mf_fail("%s: cannot write: %s", path, strerror(errno));
    w->ok = 0;
    mf_shard_writer_close(w, 0);
    return NULL;
  }
  return w;
}

static int check_ids(const mf_shard_writer *w, const int32_t *ids, int64_t n) {
  int32_t max = w->token_bytes == 2 ? 65535 : INT32_MAX;
  for (int64_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] > max)
      return mf_fail("%s: document %llu, token %lld: id %d does not fit a %s shard", w->path,
                     (unsigned long long)w->ndocs + 1, (long long)i + 1, ids[i],
                     w->token_bytes == 2 ? "uint16" : "int32");
  return 0;
}

static int write_tokens(mf_shard_writer *w, const int32_t *ids, int64_t n) {
  if (w->token_bytes == 4) return writer_put(w, ids, (size_t)n * 4);
  uint16_t buf[CHUNK];
  for (int64_t i = 0; i < n; i += CHUNK) {
    int64_t m = n - i < CHUNK ? n - i : CHUNK;
    for (int64_t j = 0; j < m; j++) buf[j] = (uint16_t)ids[i + j];
    if (writer_put(w, buf, (size_t)m * 2) != 0) return -1;
  }
  return 0;
}

int mf_shard_writer_add(mf_shard_writer *w, const int32_t *ids, int64_t n) {
  if (!w->ok) return mf_fail("%s: an earlier write failed", w->path);
  if (n < 0) return mf_fail("%s: negative document length %lld", w->path, (long long)n);
  if (check_ids(w, ids, n) != 0) return -1;
  if (w->ndocs == w->cap) {
    uint64_t cap = w->cap ? w->cap * 2 : 1024;
    uint64_t *grown = realloc(w->offsets, cap * sizeof *grown);
    if (!grown) return mf_fail("%s: out of memory for %llu documents", w->path, (unsigned long long)cap);
    w->offsets = grown;
    w->cap = cap;
  }
  if (write_tokens(w, ids, n) != 0) return -1;
  w->offsets[w->ndocs++] = w->ntokens;
  w->ntokens += (uint64_t)n;
  return 0;
}

/* Padding, offsets and the header: everything after the last document. */
static int write_tail(mf_shard_writer *w) {
  if (w->ntokens == 0) return mf_fail("%s: no tokens to write", w->path);
  static const unsigned char zeros[8];
  uint64_t nbytes = w->ntokens * (uint64_t)w->token_bytes;
  if (writer_put(w, zeros, (size_t)(padded(nbytes) - nbytes)) != 0) return -1;
  if (writer_put(w, w->offsets, (size_t)w->ndocs * 8) != 0) return -1;
  if (writer_put(w, &w->ntokens, 8) != 0) return -1;
  header h = {VERSION, (uint32_t)w->token_bytes, w->ntokens, w->ndocs, {0}};
  unsigned int len = 0;
  if (!EVP_DigestFinal_ex(w->md, h.digest, &len)) return mf_fail("%s: checksum failed", w->path);
  unsigned char bytes[HEADER_SIZE];
  header_encode(&h, bytes);
  if (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(bytes, 1, HEADER_SIZE, w->f) != HEADER_SIZE)
    return mf_fail("%s: cannot write the header: %s", w->path, strerror(errno));
  return 0;
}

int mf_shard_writer_close(mf_shard_writer *w, int commit) {
  if (!w) return 0;
  int rc = 0;
  if (w->f) {
    int finished = mf_atomic_finish(w->f, w->tmp, w->path, commit && w->ok && write_tail(w) == 0);
    if (commit) rc = finished; /* a discarded shard leaves nothing behind, as asked */
  }
  EVP_MD_CTX_free(w->md);
  free(w->offsets);
  free(w->path);
  free(w);
  return rc;
}

/* ---- reading ---- */

struct mf_shard {
  char *path;
  unsigned char *map;
  size_t size;
  header h;
  const unsigned char *tokens;
  const uint64_t *offsets;  /* ndocs + 1 entries, 8-byte aligned in the mapping */
};

/* The header agrees with the file size and the offsets rise from 0 to the
 * token count. */
static int check_layout(mf_shard *s) {
  const header *h = &s->h;
  if (h->version != VERSION)
    return mf_fail("%s: shard format version %u; this engine reads version %d", s->path, h->version, VERSION);
  if (h->token_bytes != 2 && h->token_bytes != 4)
    return mf_fail("%s: corrupted header: %u bytes per token", s->path, h->token_bytes);
  uint64_t limit = (uint64_t)1 << 60;
  if (h->ntokens == 0 || h->ntokens > limit || h->ndocs > limit)
    return mf_fail("%s: corrupted header: %llu tokens, %llu documents", s->path,
                   (unsigned long long)h->ntokens, (unsigned long long)h->ndocs);
  uint64_t token_end = HEADER_SIZE + padded(h->ntokens * h->token_bytes);
  uint64_t want = token_end + (h->ndocs + 1) * 8;
  if (s->size != want)
    return mf_fail("%s: %s: the header promises %llu bytes, the file has %zu", s->path,
                   s->size < want ? "truncated" : "trailing bytes", (unsigned long long)want, s->size);
  s->tokens = s->map + HEADER_SIZE;
  s->offsets = (const uint64_t *)(s->map + token_end);
  if (s->offsets[0] != 0 || s->offsets[h->ndocs] != h->ntokens)
    return mf_fail("%s: corrupted document offsets", s->path);
  for (uint64_t d = 0; d < h->ndocs; d++)
    if (s->offsets[d + 1] < s->offsets[d])
      return mf_fail("%s: corrupted document offsets (document %llu ends before it starts)", s->path,
                     (unsigned long long)d + 1);
  return 0;
}

static int check_digest(const mf_shard *s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(s->map + HEADER_SIZE, s->size - HEADER_SIZE, md, &len, EVP_sha256(), NULL))
    return mf_fail("%s: checksum failed", s->path);
  if (memcmp(md, s->h.digest, DIGEST_SIZE) != 0)
    return mf_fail("%s: checksum mismatch: the shard is corrupted", s->path);
  return 0;
}

static int map_file(mf_shard *s) {
  int fd = open(s->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mf_fail("%s: cannot open: %s", s->path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mf_fail("%s: not a regular file", s->path);
  }
  s->size = (size_t)st.st_size;
  if (s->size < HEADER_SIZE) {
    close(fd);
    return mf_fail("%s: truncated: %zu bytes, a shard header takes %d", s->path, s->size, HEADER_SIZE);
  }
  void *map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return mf_fail("%s: cannot map: %s", s->path, strerror(errno));
  s->map = map;
  return 0;
}

mf_shard *mf_shard_open(const char *path, int verify) {
  mf_shard *s = calloc(1, sizeof *s);
  if (!s || !(s->path = strdup(path))) {
    free(s);
    return mf_fail_null("%s: out of memory", path);
  }
  int ok = map_file(s) == 0;
  if (ok && memcmp(s->map, MAGIC, 8) != 0) ok = mf_fail("%s: not a token shard (bad magic)", path) == 0;
  if (ok) header_decode(s->map, &s->h);
  ok = ok && check_layout(s) == 0 && (!verify || check_digest(s) == 0);
  if (!ok) {
    mf_shard_free(s);
    return NULL;
  }
  return s;
}

void mf_shard_free(mf_shard *s) {
  if (!s) return;
  if (s->map) munmap(s->map, s->size);
  free(s->path);
  free(s);
}

int mf_shard_token_bytes(const mf_shard *s) { return (int)s->h.token_bytes; }
int64_t mf_shard_ntokens(const mf_shard *s) { return (int64_t)s->h.ntokens; }
int64_t mf_shard_ndocs(const mf_shard *s) { return (int64_t)s->h.ndocs; }

int64_t mf_shard_doc_start(const mf_shard *s, int64_t d) {
  if (d < 0 || (uint64_t)d > s->h.ndocs)
    return mf_fail("%s: document %lld is outside 0..%llu", s->path, (long long)d,
                   (unsigned long long)s->h.ndocs);
  return (int64_t)s->offsets[d];
}

/* Tokens [start, start + n) widened to int32; the range is the caller's to check. */
static void copy_tokens(const mf_shard *s, uint64_t start, int64_t n, int32_t *out) {
  if (s->h.token_bytes == 4) {
    memcpy(out, s->tokens + start * 4, (size_t)n * 4);
    return;
  }
  const unsigned char *p = s->tokens + start * 2;
  for (int64_t i = 0; i < n; i++) {
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    out[i] = v;
  }
}

int mf_shard_read(const mf_shard *s, int64_t start, int64_t n, int32_t *out) {
  if (start < 0 || n < 0 || (uint64_t)start > s->h.ntokens || (uint64_t)n > s->h.ntokens - (uint64_t)start)
    return mf_fail("%s: tokens %lld..%lld are outside the shard's %llu", s->path, (long long)start,
                   (long long)(start + n), (unsigned long long)s->h.ntokens);
  copy_tokens(s, (uint64_t)start, n, out);
  return 0;
}

int mf_shard_sample_batch(const mf_shard *s, int64_t batch, int64_t seq, uint64_t seed, uint64_t step,
                          int32_t *tokens, int32_t *targets) {
  if (batch <= 0 || seq <= 0)
    return mf_fail("%s: batch %lld x %lld: both must be positive", s->path, (long long)batch, (long long)seq);
  if ((uint64_t)seq >= s->h.ntokens)
    return mf_fail("%s: %llu tokens cannot fill a window of %lld plus its target", s->path,
                   (unsigned long long)s->h.ntokens, (long long)seq);
  mf_rng r;
  mf_rng_init(&r, seed, mf_hash64("shard batch", 11));
  uint64_t starts = s->h.ntokens - (uint64_t)seq;
  for (int64_t b = 0; b < batch; b++) {
    /* One draw per (step, row): a batch depends on nothing but its step. */
    uint64_t u = mf_rng_at(r.key, step * (uint64_t)batch + (uint64_t)b) >> 11;
    uint64_t start = (uint64_t)((double)u * 0x1.0p-53 * (double)starts);
    copy_tokens(s, start, seq, tokens + b * seq);
    copy_tokens(s, start + 1, seq, targets + b * seq);
  }
  return 0;
}
