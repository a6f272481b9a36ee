/*
 * Models on disk in transformers' layout: a folder holding config.json and
 * model.safetensors (or shards with model.safetensors.index.json), tensors
 * under their HF names. Loading widens F16/BF16 to f32 and insists that the
 * file and the model agree: a missing, unexpected or misshapen tensor is an
 * error naming it and both shapes. Saving writes f32 with
 * metadata {"format": "pt"}, which transformers requires.
 */
#define _GNU_SOURCE
#include "model.h"
#include "internal.h"
#include "formats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return mf_fail_null("%s: %s", path, strerror(errno));
  char *text = NULL;
  long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1))) {
    if (fread(text, 1, (size_t)size, f) == (size_t)size) {
      text[size] = 0;
    } else {
      free(text);
      text = NULL;
    }
  }
  fclose(f);
  return text ? text : mf_fail_null("%s: cannot read", path);
}

static const char *shape_text(const mf_tensor *t, char *buf, size_t n) {
  int used = snprintf(buf, n, "[");
  for (int i = 0; i < t->ndim && used < (int)n; i++)
    used += snprintf(buf + used, n - (size_t)used, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (used < (int)n) snprintf(buf + used, n - (size_t)used, "]");
  return buf;
}

static int same_shape(const mf_tensor *a, const mf_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

static int load_param(mf_param *p, const mf_st_file *st, const char *path) {
  char want[64], got[64];
  const mf_tensor *t = mf_st_get(st, p->name);
  if (!t)
    return mf_fail("%s: missing tensor '%s' (model expects %s)", path, p->name,
                   shape_text(&p->value, want, sizeof want));
  if (!same_shape(t, &p->value))
    return mf_fail("%s: tensor '%s' has shape %s, model expects %s", path, p->name,
                   shape_text(t, got, sizeof got), shape_text(&p->value, want, sizeof want));
  if (t->dtype != MF_F32 && t->dtype != MF_F16 && t->dtype != MF_BF16)
    return mf_fail("%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", path, p->name,
                   mf_dtype_name(t->dtype));
  mf_tensor *wide = t->dtype == MF_F32 ? NULL : mf_tensor_convert(t, MF_F32);
  if (t->dtype != MF_F32 && !wide) return -1;
  memcpy(p->value.data, (wide ? wide : t)->data, mf_tensor_nbytes(&p->value));
  mf_tensor_free(wide);
  return 0;
}

/* Tensors a checkpoint may carry beyond the parameters: a tied model's copy
 * of the embeddings as lm_head, and RoPE tables older exports kept. */
static int ignorable(const mf_model *m, const char *name) {
  size_t n = strlen(name), suffix = strlen("rotary_emb.inv_freq");
  if (n >= suffix && strcmp(name + n - suffix, "rotary_emb.inv_freq") == 0) return 1;
  return m->cfg.tie_word_embeddings && strcmp(name, "lm_head.weight") == 0;
}

static int load_weights(mf_model *m, const mf_st_file *st, const char *path) {
  for (int i = 0; i < m->nparams; i++)
    if (load_param(&m->params[i], st, path)) return -1;
  int n = mf_st_count(st);
  for (int i = 0; i < n; i++) {
    const char *name = mf_st_name(st, i);
    if (ignorable(m, name) || mf_model_find(m, name)) continue;
    char shape[64];
    const mf_tensor *t = mf_st_get(st, name);
    return mf_fail("%s: unexpected tensor '%s' %s (not a parameter of this %s model)", path, name,
                   t ? shape_text(t, shape, sizeof shape) : "", m->cfg.arch);
  }
  return 0;
}

/* The model folder of path: path itself, or the folder of a config.json. */
static int model_dir(const char *path, char *dir, size_t n) {
  struct stat sb;
  if (stat(path, &sb) != 0) return mf_fail("%s: %s", path, strerror(errno));
  if (snprintf(dir, n, "%s", path) >= (int)n) return mf_fail("%s: path too long", path);
  if (S_ISDIR(sb.st_mode)) return 0;
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, n, ".");
  return 0;
}

mf_model *mf_model_load(const char *path) {
  char dir[4096], file[4200];
  size_t n = strlen(path);
  if (n > 5 && !strcmp(path + n - 5, ".gguf")) return mf_model_load_gguf(path, 1);
  if (model_dir(path, dir, sizeof dir)) return NULL;
  snprintf(file, sizeof file, "%s/config.json", dir);
  char *text = read_text(file);
  if (!text) return NULL;
  mf_model_config cfg;
  int rc = mf_config_parse(text, &cfg);
  free(text);
  if (rc) return mf_fail_null("%s: %s", file, mf_errmsg());
  mf_st_file *st = mf_st_open(dir);
  if (!st) return NULL;
  mf_model *m = mf_model_alloc(&cfg);
  if (m && load_weights(m, st, dir)) {
    mf_model_free(m);
    m = NULL;
  }
  mf_st_close(st);
  return m;
}

static int write_text(const char *path, const char *text) {
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  if (!f) return -1;
  int ok = fputs(text, f) >= 0;
  return mf_atomic_finish(f, tmp, path, ok);
}

int mf_model_save(const mf_model *m, const char *dir) {
  char file[4200];
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) return mf_fail("%s: %s", dir, strerror(errno));
  if (snprintf(file, sizeof file, "%s/config.json", dir) >= (int)sizeof file)
    return mf_fail("%s: path too long", dir);
  char *json = mf_config_to_json(&m->cfg);
  if (!json) return -1;
  int rc = write_text(file, json);
  mf_free(json);
  if (rc) return -1;

  /* Weights held in blocks alone are written as their decoded f32 values. */
  const char **names = malloc((size_t)m->nparams * sizeof *names);
  const mf_tensor **tensors = malloc((size_t)m->nparams * sizeof *tensors);
  mf_tensor *decoded = calloc((size_t)m->nparams, sizeof *decoded);
  if (!names || !tensors || !decoded) rc = mf_fail("%s: out of memory", dir);
  for (int i = 0; rc == 0 && i < m->nparams; i++) {
    const mf_param *p = &m->params[i];
    names[i] = p->name;
    tensors[i] = &p->value;
    if (p->value.data) continue;
    float *owned;
    decoded[i] = p->value;
    rc = mf_param_f32(p, &owned) ? 0 : -1;
    decoded[i].data = owned;
    tensors[i] = &decoded[i];
  }
  snprintf(file, sizeof file, "%s/model.safetensors", dir);
  if (rc == 0) rc = mf_st_save(file, m->nparams, names, tensors, "{\"format\":\"pt\"}");
  for (int i = 0; decoded && i < m->nparams; i++) free(decoded[i].data);
  free(decoded);
  free(names);
  free(tensors);
  return rc;
}
