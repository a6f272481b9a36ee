/*
 * moonforge compute kernels (CPU). Kernels know nothing of models: they take
 * plain arrays and shapes. Every kernel is deterministic: the same inputs give
 * the same bits whatever the thread count.
 */
#ifndef MF_KERNELS_H
#define MF_KERNELS_H

#include <stddef.h>

/* Kernel library version, for cache keys. */
const char *mfk_version(void);

#endif
