/*
 * Atomic file writes for the engine's file formats: a reader (or a process
 * restarted after a kill) sees the old file or the whole new one, never a
 * part. The temporary file lives in the same folder so rename() stays within
 * one file system.
 */
#define _GNU_SOURCE
#include "formats.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

FILE *mf_atomic_begin(const char *path, char *tmp) {
  int n = snprintf(tmp, MF_ATOMIC_TMP_MAX, "%s.tmp.%d", path, (int)getpid());
  if (n < 0 || n >= MF_ATOMIC_TMP_MAX) return mf_fail_null("%s: path too long", path);
  FILE *f = fopen(tmp, "wbe");
  if (!f) return mf_fail_null("%s: cannot write: %s", tmp, strerror(errno));
  return f;
}

int mf_atomic_finish(FILE *f, const char *tmp, const char *path, int ok) {
  int written = ok && fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
  int closed = fclose(f) == 0;
  if (written && closed && rename(tmp, path) == 0) return 0;
  int err = errno;
  unlink(tmp);
  if (!ok) return -1; /* the caller has recorded why */
  return mf_fail("%s: cannot write: %s", path, strerror(err));
}
