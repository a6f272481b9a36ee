/* Helpers shared by the tensor and file-format sources (tensor.c, npy.c,
 * safetensors.c, atomic_file.c); not part of the public API. */
#ifndef MF_FORMATS_H
#define MF_FORMATS_H

#include <stdint.h>
#include <stdio.h>

#include "moonforge.h"

/* Checks dtype, ndim (0..4) and dims (>= 0, byte size fits in size_t);
 * stores the byte size. Messages start with `what` (a file, a tensor name). */
int mf_shape_check(const char *what, mf_dtype dtype, int ndim, const int64_t *shape,
                   size_t *nbytes);

/* Atomic file writes: write to a temporary name beside `path`, then
 * mf_atomic_finish flushes it to disk and renames it over `path`. With
 * ok == 0, or when any write failed, the temporary file is removed instead
 * and -1 returned. tmp must hold MF_ATOMIC_TMP_MAX bytes. */
enum { MF_ATOMIC_TMP_MAX = 4096 };
FILE *mf_atomic_begin(const char *path, char *tmp);
int mf_atomic_finish(FILE *f, const char *tmp, const char *path, int ok);

#endif
