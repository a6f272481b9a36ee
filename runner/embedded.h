/* The Lua library and public header, compiled into the executable. */
#ifndef MF_EMBEDDED_H
#define MF_EMBEDDED_H
#include <stddef.h>

typedef struct {
  const char *module;  /* Lua module name, e.g. "moonforge.recipe" */
  const char *chunk;   /* chunk name for tracebacks, e.g. "@runner/lua/moonforge/recipe.lua" */
  const char *data;
  size_t size;
} mf_embedded_file;

extern const mf_embedded_file mf_embedded_files[];

#endif
