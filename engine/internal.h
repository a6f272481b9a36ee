/* Helpers shared by engine sources; not part of the public API. */
#ifndef MF_INTERNAL_H
#define MF_INTERNAL_H

#include "cpu/kernels.h"

/* Record an error message for mf_errmsg() and return -1 / NULL. */
int mf_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *mf_fail_null(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The engine's kernel pool, mf_threads() wide, created on first use. NULL
 * (run on the calling thread) only if threads could not be created. */
mfk_pool *mf_pool(void);

#endif
