#include "cpu/kernels.h"

const char *mfk_version(void) { return "cpu-3"; }
