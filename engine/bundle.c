/*
 * Bundles: a model's files in one tar archive compressed with zstd, written
 * and read through libarchive, with MANIFEST.json listing every other member
 * with its size and SHA-256.
 *
 * Writing (mf_bundle_writer): MANIFEST.json comes first, then the members in
 * name order, each stamped with one time, owner 0:0 and mode 0644, so the
 * same files give the same bytes. The archive is written under a temporary
 * name and renamed into place.
 *
 * Reading (mf_bundle_unpack): entries go into a fresh folder beside the
 * destination, checked one by one and then against the manifest, and the
 * folder is renamed to the destination only when everything holds; on any
 * failure it is removed, so the destination is complete or absent and
 * nothing is left outside it. Refused: any entry that is not a regular file
 * or a folder (symbolic and hard links, devices, fifos), a name that is
 * absolute or has an empty, "." or ".." component, sparse entries, a name
 * seen twice, sizes past the limits (per file, in total, and relative to the
 * archive's own size, which stops a decompression bomb before a byte of it is
 * written), a truncated or corrupt stream, and any difference from the
 * manifest (a file missing, extra, or of another size or checksum).
 *
 * libarchive's disk writer is not used: its secure-extraction flags refuse
 * an absolute destination (ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS) or one
 * below a symbolic link (_SECURE_SYMLINKS), so honouring them would take a
 * process-wide chdir. Files are created instead with openat(O_CREAT | O_EXCL
 * | O_NOFOLLOW) relative to the fresh folder, which no name can leave even
 * if a check above were wrong.
 */
#define _GNU_SOURCE
#include "formats.h"
#include "internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MANIFEST_NAME "MANIFEST.json"
#define BUNDLE_FORMAT "moonforge-bundle"
enum { FORMAT_VERSION = 1, NAME_MAX_BYTES = 1024, CHUNK = 1 << 20 };
/* Unpacked bytes allowed past max_ratio times the archive's size, so tiny
 * archives of very compressible text are not refused. */
static const int64_t RATIO_SLACK = 16ll << 20;
static const int64_t MANIFEST_MAX_BYTES = 64ll << 20;

/* NULL when name is a relative '/'-separated path without empty, "." or
 * ".." components; otherwise what is wrong with it. */
static const char *name_problem(const char *name) {
  if (!*name) return "is empty";
  if (strlen(name) > NAME_MAX_BYTES) return "is longer than 1024 bytes";
  if (name[0] == '/') return "is an absolute path";
  for (const char *p = name;;) {
    size_t len = strcspn(p, "/");
    if (len == 0) return "has an empty path component";
    if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
      return "has a '.' or '..' component";
    if (!p[len]) return NULL;
    p += len + 1;
  }
}

static void digest_hex(EVP_MD_CTX *sha, char *hex) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(sha, md, &len);
  for (unsigned i = 0; i < len; i++) sprintf(hex + 2 * i, "%02x", md[i]);
}

/* ---- writing ---- */

typedef struct member {
  char *name;
  char *path;          /* a file to copy, or NULL for data */
  unsigned char *data; /* bytes given by the caller */
  int64_t size;
  char sha256[65];
} member;

struct mf_bundle_writer {
  member *members;
  int n, cap;
};

mf_bundle_writer *mf_bundle_writer_new(void) {
  mf_bundle_writer *w = calloc(1, sizeof *w);
  return w ? w : mf_fail_null("bundle: out of memory");
}

void mf_bundle_writer_free(mf_bundle_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) {
    free(w->members[i].name);
    free(w->members[i].path);
    free(w->members[i].data);
  }
  free(w->members);
  free(w);
}

static member *add_member(mf_bundle_writer *w, const char *name) {
  const char *problem = name_problem(name);
  if (problem) return mf_fail_null("bundle: member name '%s' %s", name, problem);
  if (!strcmp(name, MANIFEST_NAME)) return mf_fail_null("bundle: %s is written by the bundle itself", name);
  for (int i = 0; i < w->n; i++)
    if (!strcmp(w->members[i].name, name)) return mf_fail_null("bundle: member '%s' added twice", name);
  if (w->n == w->cap) {
    int cap = w->cap ? 2 * w->cap : 16;
    member *grown = realloc(w->members, (size_t)cap * sizeof *grown);
    if (!grown) return mf_fail_null("bundle: out of memory");
    w->members = grown;
    w->cap = cap;
  }
  member *m = &w->members[w->n];
  memset(m, 0, sizeof *m);
  if (!(m->name = strdup(name))) return mf_fail_null("bundle: out of memory");
  w->n++;
  return m;
}

int mf_bundle_add_file(mf_bundle_writer *w, const char *name, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return mf_fail("bundle: %s: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return mf_fail("bundle: %s is not a regular file", path);
  member *m = add_member(w, name);
  if (!m) return -1;
  if (!(m->path = strdup(path))) return mf_fail("bundle: out of memory");
  return 0;
}

int mf_bundle_add_bytes(mf_bundle_writer *w, const char *name, const void *data, size_t n) {
  member *m = add_member(w, name);
  if (!m) return -1;
  if (!(m->data = malloc(n ? n : 1))) return mf_fail("bundle: out of memory");
  memcpy(m->data, data, n);
  m->size = (int64_t)n;
  return 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const member *)a)->name, ((const member *)b)->name);
}

/* Streams a member's bytes through SHA-256 into hex and counts them into
 * *size, writing them into the archive too when `a` is not NULL. */
static int read_member(const member *m, struct archive *a, char *hex, int64_t *size) {
  EVP_MD_CTX *sha = EVP_MD_CTX_new();
  if (!sha || !EVP_DigestInit_ex(sha, EVP_sha256(), NULL)) {
    EVP_MD_CTX_free(sha);
    return mf_fail("bundle: cannot start SHA-256");
  }
  int rc = 0;
  int64_t count = 0;
  if (!m->path) {
    EVP_DigestUpdate(sha, m->data, (size_t)m->size);
    count = m->size;
    if (a && m->size && archive_write_data(a, m->data, (size_t)m->size) != (la_ssize_t)m->size)
      rc = mf_fail("bundle: writing %s: %s", m->name, archive_error_string(a));
  } else {
    FILE *f = fopen(m->path, "rb");
    unsigned char *buf = malloc(CHUNK);
    if (!f || !buf) rc = mf_fail("bundle: %s: %s", m->path, f ? "out of memory" : strerror(errno));
    size_t got;
    while (rc == 0 && (got = fread(buf, 1, CHUNK, f)) > 0) {
      EVP_DigestUpdate(sha, buf, got);
      count += (int64_t)got;
      if (a && archive_write_data(a, buf, got) != (la_ssize_t)got)
        rc = mf_fail("bundle: writing %s: %s", m->name, archive_error_string(a));
    }
    if (rc == 0 && ferror(f)) rc = mf_fail("bundle: cannot read %s", m->path);
    if (f) fclose(f);
    free(buf);
  }
  digest_hex(sha, hex);
  EVP_MD_CTX_free(sha);
  *size = count;
  return rc;
}

/* MANIFEST.json: the caller's info object plus the format, versions, time
 * and the member list. Keys sorted, two-space indent, a final newline. */
static char *manifest_text(const mf_bundle_writer *w, const char *info_json, int64_t created) {
  json_error_t jerr;
  json_t *root = info_json && *info_json ? json_loads(info_json, 0, &jerr) : json_object();
  if (!root) return mf_fail_null("bundle: info is not JSON: %s", jerr.text);
  if (!json_is_object(root)) {
    json_decref(root);
    return mf_fail_null("bundle: info must be a JSON object");
  }
  static const char *const reserved[] = {"format", "format_version", "moonforge_version", "created", "files"};
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++) {
    if (json_object_get(root, reserved[i])) {
      json_decref(root);
      return mf_fail_null("bundle: info may not set the key '%s', which the bundle writes", reserved[i]);
    }
  }
  char when[32];
  time_t t = (time_t)created;
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
  json_t *files = json_array();
  for (int i = 0; i < w->n; i++) {
    const member *m = &w->members[i];
    json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "path", m->name, "size", (json_int_t)m->size,
                                           "sha256", m->sha256));
  }
  json_object_set_new(root, "format", json_string(BUNDLE_FORMAT));
  json_object_set_new(root, "format_version", json_integer(FORMAT_VERSION));
  json_object_set_new(root, "moonforge_version", json_string(mf_version()));
  json_object_set_new(root, "created", json_string(when));
  json_object_set_new(root, "files", files);
  char *body = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(root);
  char *text = body ? malloc(strlen(body) + 2) : NULL;
  if (text) sprintf(text, "%s\n", body);
  free(body);
  return text ? text : mf_fail_null("bundle: out of memory");
}

static int write_entry(struct archive *a, const char *name, int64_t size, int64_t created) {
  struct archive_entry *e = archive_entry_new();
  archive_entry_set_pathname(e, name);
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, size);
  archive_entry_set_mtime(e, (time_t)created, 0);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  int rc = archive_write_header(a, e) == ARCHIVE_OK ? 0 : mf_fail("bundle: %s: %s", name, archive_error_string(a));
  archive_entry_free(e);
  return rc;
}

/* Writes one member's header and data, and checks that a file still holds
 * what was hashed for the manifest. */
static int write_member(struct archive *a, const member *m, int64_t created) {
  char again[65];
  int64_t size;
  if (write_entry(a, m->name, m->size, created) != 0 || read_member(m, a, again, &size) != 0) return -1;
  if (size != m->size || strcmp(again, m->sha256))
    return mf_fail("bundle: %s changed while it was being packed", m->path);
  return 0;
}

/* Writes the archive, MANIFEST.json first, into the open FILE f. */
static int write_archive(const mf_bundle_writer *w, FILE *f, const char *manifest, int64_t created) {
  struct archive *a = archive_write_new();
  if (!a) return mf_fail("bundle: out of memory");
  int rc = 0;
  if (archive_write_add_filter_zstd(a) != ARCHIVE_OK || archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK || archive_write_open_FILE(a, f) != ARCHIVE_OK)
    rc = mf_fail("bundle: cannot start the archive: %s", archive_error_string(a));
  member head = {.name = (char *)MANIFEST_NAME, .data = (unsigned char *)manifest, .size = (int64_t)strlen(manifest)};
  int64_t size;
  if (rc == 0) rc = read_member(&head, NULL, head.sha256, &size);
  for (int i = -1; rc == 0 && i < w->n; i++) rc = write_member(a, i < 0 ? &head : &w->members[i], created);
  if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
    rc = mf_fail("bundle: finishing the archive: %s", archive_error_string(a));
  archive_write_free(a);
  return rc;
}

int mf_bundle_write(mf_bundle_writer *w, const char *path, const char *info_json, int64_t created) {
  qsort(w->members, (size_t)w->n, sizeof *w->members, by_name);
  int64_t newest = 0;
  for (int i = 0; i < w->n; i++) {
    member *m = &w->members[i];
    struct stat st;
    if (m->path && stat(m->path, &st) == 0 && st.st_mtime > newest) newest = st.st_mtime;
    if (read_member(m, NULL, m->sha256, &m->size) != 0) return -1;
  }
  if (created < 0) created = newest;
  char *manifest = manifest_text(w, info_json, created);
  if (!manifest) return -1;
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  int rc = f ? mf_atomic_finish(f, tmp, path, write_archive(w, f, manifest, created) == 0) : -1;
  free(manifest);
  return rc;
}

/* ---- reading ---- */

/* The archive file, read through SHA-256 so that the caller learns the
 * hash of exactly the bytes that were unpacked. */
typedef struct source {
  FILE *f;
  EVP_MD_CTX *sha;
  unsigned char buf[1 << 16];
} source;

static la_ssize_t source_read(struct archive *a, void *ctx, const void **out) {
  source *s = ctx;
  size_t got = fread(s->buf, 1, sizeof s->buf, s->f);
  if (got == 0 && ferror(s->f)) {
    archive_set_error(a, EIO, "read error");
    return -1;
  }
  EVP_DigestUpdate(s->sha, s->buf, got);
  *out = s->buf;
  return (la_ssize_t)got;
}

typedef struct extracted {
  char *name;
  int64_t size;
  char sha256[65];
  int listed; /* matched by a manifest entry */
} extracted;

typedef struct unpack {
  const char *archive;
  mf_bundle_limits lim;
  int64_t archive_bytes, total;
  int root; /* the fresh folder */
  extracted *files;
  int n, cap;
  unsigned char *buf;
} unpack;

static mf_bundle_limits limits_or_defaults(const mf_bundle_limits *given) {
  mf_bundle_limits l = given ? *given : (mf_bundle_limits){0};
  if (l.max_total_bytes <= 0) l.max_total_bytes = 64ll << 30;
  if (l.max_file_bytes <= 0) l.max_file_bytes = l.max_total_bytes;
  if (l.max_entries <= 0) l.max_entries = 100000;
  if (l.max_ratio <= 0) l.max_ratio = 1000;
  return l;
}

/* The entry's type, name and size are acceptable. */
static int check_entry(unpack *u, struct archive_entry *e, int64_t count) {
  const char *name = archive_entry_pathname(e);
  if (!name) return mf_fail("%s: an entry has no name", u->archive);
  const char *problem = name_problem(name);
  if (problem) return mf_fail("%s: entry '%s' %s; refused", u->archive, name, problem);
  mode_t type = archive_entry_filetype(e);
  if (archive_entry_hardlink(e) || archive_entry_symlink(e) || type == AE_IFLNK)
    return mf_fail("%s: entry '%s' is a link; bundles hold only files and folders", u->archive, name);
  if (type != AE_IFREG && type != AE_IFDIR)
    return mf_fail("%s: entry '%s' is a special file (device, fifo or socket); refused", u->archive, name);
  if (archive_entry_sparse_count(e) > 0) return mf_fail("%s: entry '%s' is sparse; refused", u->archive, name);
  if (count > u->lim.max_entries)
    return mf_fail("%s: more than %lld entries; refused", u->archive, (long long)u->lim.max_entries);
  int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
  if (type == AE_IFREG && size < 0) return mf_fail("%s: entry '%s' has no size", u->archive, name);
  if (size > u->lim.max_file_bytes)
    return mf_fail("%s: entry '%s' would unpack to %lld bytes, over the limit of %lld per file", u->archive, name,
                   (long long)size, (long long)u->lim.max_file_bytes);
  if (type == AE_IFREG) u->total += size;
  if (u->total > u->lim.max_total_bytes)
    return mf_fail("%s: the entries would unpack to more than the limit of %lld bytes", u->archive,
                   (long long)u->lim.max_total_bytes);
  if ((double)u->total > u->lim.max_ratio * (double)u->archive_bytes + (double)RATIO_SLACK)
    return mf_fail("%s: entry '%s' brings the unpacked size to %lld bytes, over %g times the archive's %lld "
                   "bytes (a decompression bomb?); refused",
                   u->archive, name, (long long)u->total, u->lim.max_ratio, (long long)u->archive_bytes);
  return 0;
}

/* Opens the folder that holds the last component of name (or, when
 * all_dirs, the folder name itself), creating folders as needed and never
 * following a link. Returns a descriptor (u->root itself or one the caller
 * closes) with *leaf set to the last component, or -1. */
static int open_parent(unpack *u, const char *name, int all_dirs, const char **leaf) {
  char comp[NAME_MAX_BYTES + 1];
  int fd = u->root;
  for (const char *p = name;;) {
    size_t len = strcspn(p, "/");
    int last = !p[len];
    if (last && !all_dirs) {
      *leaf = p;
      return fd;
    }
    memcpy(comp, p, len);
    comp[len] = 0;
    int next = -1;
    if (mkdirat(fd, comp, 0755) == 0 || errno == EEXIST)
      next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    if (fd != u->root) close(fd);
    if (next < 0) return mf_fail("%s: cannot create the folder '%s' of '%s': %s", u->archive, comp, name, strerror(err));
    fd = next;
    if (last) {
      *leaf = p + len;
      return fd;
    }
    p += len + 1;
  }
}

static extracted *record(unpack *u, const char *name, int64_t size) {
  if (u->n == u->cap) {
    int cap = u->cap ? 2 * u->cap : 16;
    extracted *grown = realloc(u->files, (size_t)cap * sizeof *grown);
    if (!grown) return mf_fail_null("%s: out of memory", u->archive);
    u->files = grown;
    u->cap = cap;
  }
  extracted *x = &u->files[u->n];
  memset(x, 0, sizeof *x);
  if (!(x->name = strdup(name))) return mf_fail_null("%s: out of memory", u->archive);
  x->size = size;
  u->n++;
  return x;
}

/* Writes the current entry's data to a new file, hashing it. */
static int extract_file(unpack *u, struct archive *a, const char *name, int64_t size) {
  const char *leaf;
  int dir = open_parent(u, name, 0, &leaf);
  if (dir < 0) return -1;
  int fd = openat(dir, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  int err = errno;
  if (dir != u->root) close(dir);
  if (fd < 0 && err == EEXIST) return mf_fail("%s: entry '%s' appears twice; refused", u->archive, name);
  if (fd < 0) return mf_fail("%s: cannot create '%s': %s", u->archive, name, strerror(err));
  extracted *x = record(u, name, size);
  EVP_MD_CTX *sha = EVP_MD_CTX_new();
  int rc = x && sha && EVP_DigestInit_ex(sha, EVP_sha256(), NULL) ? 0 : mf_fail("%s: out of memory", u->archive);
  int64_t written = 0;
  la_ssize_t got;
  while (rc == 0 && (got = archive_read_data(a, u->buf, CHUNK)) > 0) {
    written += got;
    if (written > size) rc = mf_fail("%s: entry '%s' holds more than its %lld bytes", u->archive, name, (long long)size);
    else if (write(fd, u->buf, (size_t)got) != got) rc = mf_fail("%s: writing '%s': %s", u->archive, name, strerror(errno));
    else EVP_DigestUpdate(sha, u->buf, (size_t)got);
  }
  if (rc == 0 && got < 0)
    rc = mf_fail("%s: damaged or truncated archive at entry '%s': %s", u->archive, name, archive_error_string(a));
  if (rc == 0 && written != size)
    rc = mf_fail("%s: entry '%s' ends after %lld of its %lld bytes", u->archive, name, (long long)written, (long long)size);
  if (rc == 0) digest_hex(sha, x->sha256);
  EVP_MD_CTX_free(sha);
  if (close(fd) != 0 && rc == 0) rc = mf_fail("%s: writing '%s': %s", u->archive, name, strerror(errno));
  return rc;
}

/* Reads every entry of the archive into u->root. */
static int extract_all(unpack *u, source *src) {
  struct archive *a = archive_read_new();
  if (!a) return mf_fail("%s: out of memory", u->archive);
  archive_read_support_filter_zstd(a);
  archive_read_support_format_tar(a);
  int rc = archive_read_open(a, src, NULL, source_read, NULL) == ARCHIVE_OK
               ? 0
               : mf_fail("%s: not a bundle, or damaged or truncated (a bundle is a zstd-compressed tar): %s", u->archive,
                         archive_error_string(a));
  struct archive_entry *e;
  for (int64_t count = 1; rc == 0; count++) {
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) {
      rc = mf_fail("%s: damaged or truncated archive: %s", u->archive, archive_error_string(a));
      break;
    }
    if ((rc = check_entry(u, e, count)) != 0) break;
    const char *name = archive_entry_pathname(e), *leaf;
    if (archive_entry_filetype(e) == AE_IFREG) {
      rc = extract_file(u, a, name, archive_entry_size(e));
    } else {
      int fd = open_parent(u, name, 1, &leaf);
      if (fd < 0) rc = -1;
      else if (fd != u->root) close(fd);
    }
  }
  archive_read_free(a);
  return rc;
}

/* The whole of MANIFEST.json, NUL-terminated, or NULL. */
static char *read_manifest(unpack *u) {
  int fd = openat(u->root, MANIFEST_NAME, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return mf_fail_null("%s: no %s; not a bundle", u->archive, MANIFEST_NAME);
  struct stat st;
  char *text = NULL;
  if (fstat(fd, &st) == 0 && st.st_size <= MANIFEST_MAX_BYTES && (text = malloc((size_t)st.st_size + 1))) {
    if (read(fd, text, (size_t)st.st_size) == st.st_size) text[st.st_size] = 0;
    else {
      free(text);
      text = NULL;
    }
  }
  close(fd);
  return text ? text : mf_fail_null("%s: cannot read its %s", u->archive, MANIFEST_NAME);
}

static int by_extracted_name(const void *a, const void *b) {
  return strcmp(((const extracted *)a)->name, ((const extracted *)b)->name);
}

/* One manifest entry matches exactly one unpacked file, by size and hash. */
static int check_listed(unpack *u, json_t *entry) {
  const char *path = NULL, *sha = NULL;
  json_int_t size = -1;
  if (json_unpack(entry, "{s:s, s:I, s:s}", "path", &path, "size", &size, "sha256", &sha) != 0)
    return mf_fail("%s: %s has a file entry without path, size and sha256", u->archive, MANIFEST_NAME);
  extracted key = {.name = (char *)path};
  extracted *x = bsearch(&key, u->files, (size_t)u->n, sizeof *u->files, by_extracted_name);
  if (!x || !strcmp(path, MANIFEST_NAME))
    return mf_fail("%s: '%s' is listed in %s but missing from the archive", u->archive, path, MANIFEST_NAME);
  if (x->listed) return mf_fail("%s: '%s' is listed twice in %s", u->archive, path, MANIFEST_NAME);
  x->listed = 1;
  if (x->size != size)
    return mf_fail("%s: '%s' has %lld bytes, %s says %lld", u->archive, path, (long long)x->size, MANIFEST_NAME,
                   (long long)size);
  if (strcmp(x->sha256, sha))
    return mf_fail("%s: '%s' has SHA-256 %s, %s says %s (corrupted or altered)", u->archive, path, x->sha256,
                   MANIFEST_NAME, sha);
  return 0;
}

/* Every unpacked file is listed in MANIFEST.json with its size and hash,
 * and every listed file was unpacked. */
static int check_manifest(unpack *u) {
  char *text = read_manifest(u);
  if (!text) return -1;
  json_error_t jerr;
  json_t *root = json_loads(text, 0, &jerr);
  free(text);
  if (!root) return mf_fail("%s: %s is not JSON: %s (line %d)", u->archive, MANIFEST_NAME, jerr.text, jerr.line);
  json_t *format = json_object_get(root, "format"), *files = json_object_get(root, "files");
  json_int_t version = json_integer_value(json_object_get(root, "format_version"));
  int rc = 0;
  if (!json_is_string(format) || strcmp(json_string_value(format), BUNDLE_FORMAT) || !json_is_array(files))
    rc = mf_fail("%s: %s is not a moonforge bundle manifest", u->archive, MANIFEST_NAME);
  else if (version < 1 || version > FORMAT_VERSION)
    rc = mf_fail("%s: bundle format version %lld; this moonforge reads version %d", u->archive, (long long)version,
                 FORMAT_VERSION);
  qsort(u->files, (size_t)u->n, sizeof *u->files, by_extracted_name);
  for (size_t i = 0; rc == 0 && i < json_array_size(files); i++) rc = check_listed(u, json_array_get(files, i));
  for (int i = 0; rc == 0 && i < u->n; i++)
    if (!u->files[i].listed && strcmp(u->files[i].name, MANIFEST_NAME))
      rc = mf_fail("%s: '%s' is in the archive but not in %s; refused", u->archive, u->files[i].name, MANIFEST_NAME);
  json_decref(root);
  return rc;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

/* Creates the fresh folder "<parent of dir>/.<name of dir>.unpack-XXXXXX"
 * and puts its path in tmp. */
static int temp_beside(const char *dir, char *tmp, size_t cap) {
  char parent[PATH_MAX];
  if (snprintf(parent, sizeof parent, "%s", dir) >= (int)sizeof parent) return mf_fail("%s: path too long", dir);
  size_t n = strlen(parent);
  while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
  const char *base = parent, *where = ".";
  char *slash = strrchr(parent, '/');
  if (slash) {
    *slash = 0;
    base = slash + 1;
    where = slash == parent ? "/" : parent;
  }
  int len = snprintf(tmp, cap, "%s/.%s.unpack-XXXXXX", where, base);
  if (len < 0 || (size_t)len >= cap) return mf_fail("%s: path too long", dir);
  if (!mkdtemp(tmp)) return mf_fail("cannot create a folder beside %s: %s", dir, strerror(errno));
  return 0;
}

/* Unpacks into the fresh folder tmp and checks the result; the caller
 * renames or removes tmp. */
static int unpack_into(unpack *u, const char *tmp, char *sha256_hex) {
  source *src = calloc(1, sizeof *src);
  u->buf = malloc(CHUNK);
  u->root = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = src && u->buf && u->root >= 0 ? 0 : mf_fail("%s: cannot open %s: %s", u->archive, tmp, strerror(errno));
  if (rc == 0 && !(src->f = fopen(u->archive, "rbe"))) rc = mf_fail("%s: %s", u->archive, strerror(errno));
  if (rc == 0 && (!(src->sha = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(src->sha, EVP_sha256(), NULL)))
    rc = mf_fail("%s: cannot start SHA-256", u->archive);
  if (rc == 0) rc = extract_all(u, src);
  if (rc == 0) rc = check_manifest(u);
  if (rc == 0 && sha256_hex) {
    size_t got; /* the hash covers any bytes after the end of the archive too */
    while ((got = fread(src->buf, 1, sizeof src->buf, src->f)) > 0) EVP_DigestUpdate(src->sha, src->buf, got);
    digest_hex(src->sha, sha256_hex);
  }
  if (src && src->f) fclose(src->f);
  if (src) EVP_MD_CTX_free(src->sha);
  free(src);
  if (u->root >= 0) close(u->root);
  free(u->buf);
  for (int i = 0; i < u->n; i++) free(u->files[i].name);
  free(u->files);
  return rc;
}

int mf_bundle_unpack(const char *archive, const char *dir, const mf_bundle_limits *limits, char *sha256_hex) {
  struct stat st;
  if (stat(archive, &st) != 0) return mf_fail("%s: %s", archive, strerror(errno));
  if (!S_ISREG(st.st_mode)) return mf_fail("%s: not a regular file", archive);
  unpack u = {.archive = archive, .lim = limits_or_defaults(limits), .archive_bytes = st.st_size, .root = -1};
  if (lstat(dir, &st) == 0) return mf_fail("%s already exists; unpack into a new folder", dir);
  char tmp[PATH_MAX];
  if (temp_beside(dir, tmp, sizeof tmp) != 0) return -1;
  int rc = unpack_into(&u, tmp, sha256_hex);
  if (rc == 0 && rename(tmp, dir) != 0) rc = mf_fail("cannot move the unpacked bundle to %s: %s", dir, strerror(errno));
  if (rc != 0) nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return rc;
}
