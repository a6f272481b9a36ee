/*
 * LoRA adapters on disk, in the two formats other tools read.
 *
 * PEFT (save_pretrained): a folder with adapter_config.json (peft_type
 * LORA, r, lora_alpha, lora_dropout, target_modules, use_rslora, bias
 * "none", task_type CAUSAL_LM, base_model_name_or_path) and
 * adapter_model.safetensors, whose keys are the adapter parameters' names
 * behind "base_model.model.". Loading checks every tensor against the shape
 * the model gives it and refuses missing or unexpected ones, naming the
 * tensor and both shapes.
 *
 * GGUF (llama.cpp's convert_lora_to_gguf.py): general.type "adapter",
 * adapter.type "lora", adapter.lora.alpha, and per adapted weight
 * "<gguf name>.lora_a" (ggml dims {in, r}) and ".lora_b" ({r, out}): the
 * same bytes as PEFT's [r, in] and [out, r]. llama.cpp's llama layout keeps
 * q and k rows in its RoPE order (model_gguf.c), and B's rows are rows of
 * the weight, so they move the same way. llama.cpp scales by alpha / r, so
 * an rslora adapter stores alpha * sqrt(r) to keep its scale.
 */
#define _GNU_SOURCE
#include "model.h"
#include "internal.h"
#include "formats.h"
#include "quant.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { GGUF_F32 = 6 };
#define PEFT_PREFIX "base_model.model."

static const char *shape_text(const mf_tensor *t, char *buf, size_t n) {
  if (t->ndim == 1) snprintf(buf, n, "[%lld]", (long long)t->shape[0]);
  else snprintf(buf, n, "[%lld, %lld]", (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0));
  return buf;
}

/* ---- PEFT ---- */

/* The module names of the adapted targets, in PEFT's list order. */
static json_t *target_list(const mf_lora_set *s) {
  static const char *const names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  json_t *list = json_array();
  for (int t = 0; t < 7; t++)
    if (s->targets & 1u << t) json_array_append_new(list, json_string(names[t]));
  return list;
}

static int write_config(const mf_lora_set *s, const char *path, const char *base_model) {
  json_t *c = json_object();
  json_object_set_new(c, "peft_type", json_string("LORA"));
  json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
  json_object_set_new(c, "base_model_name_or_path", base_model ? json_string(base_model) : json_null());
  json_object_set_new(c, "r", json_integer(s->r));
  json_object_set_new(c, "lora_alpha", json_real(s->alpha));
  json_object_set_new(c, "lora_dropout", json_real(s->dropout));
  json_object_set_new(c, "target_modules", target_list(s));
  json_object_set_new(c, "bias", json_string("none"));
  json_object_set_new(c, "use_rslora", json_boolean(s->rslora));
  json_object_set_new(c, "fan_in_fan_out", json_false());
  json_object_set_new(c, "inference_mode", json_true());
  json_object_set_new(c, "init_lora_weights", json_true());
  char *text = json_dumps(c, JSON_INDENT(2));
  json_decref(c);
  if (!text) return mf_fail("%s: out of memory", path);
  char tmp[MF_ATOMIC_TMP_MAX];
  FILE *f = mf_atomic_begin(path, tmp);
  int rc = f ? mf_atomic_finish(f, tmp, path, fputs(text, f) >= 0 && fputc('\n', f) != EOF) : -1;
  free(text);
  return rc;
}

static int no_adapters(const mf_model *m, const char *what) {
  if (!m->lora) return mf_fail("%s: the model has no LoRA adapters", what);
  if (m->lora->merged) return mf_fail("%s: the adapters are merged into the base; unmerge them first", what);
  return 0;
}

int mf_model_save_adapter(const mf_model *m, const char *dir, const char *base_model) {
  if (no_adapters(m, "save_adapter")) return -1;
  const mf_lora_set *s = m->lora;
  char path[4200];
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) return mf_fail("%s: %s", dir, strerror(errno));
  if (snprintf(path, sizeof path, "%s/adapter_config.json", dir) >= (int)sizeof path)
    return mf_fail("%s: path too long", dir);
  if (write_config(s, path, base_model)) return -1;
  char (*names)[MF_PARAM_NAME_MAX + 32] = calloc((size_t)s->nparams, sizeof *names);
  const char **name_ptrs = calloc((size_t)s->nparams, sizeof *name_ptrs);
  const mf_tensor **tensors = calloc((size_t)s->nparams, sizeof *tensors);
  int rc = names && name_ptrs && tensors ? 0 : mf_fail("%s: out of memory", dir);
  for (int i = 0; rc == 0 && i < s->nparams; i++) {
    snprintf(names[i], sizeof names[i], PEFT_PREFIX "%s", s->params[i].name);
    name_ptrs[i] = names[i];
    tensors[i] = &s->params[i].value;
  }
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  if (rc == 0) rc = mf_st_save(path, s->nparams, name_ptrs, tensors, "{\"format\":\"pt\"}");
  free(names);
  free(name_ptrs);
  free(tensors);
  return rc;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return mf_fail_null("%s: %s", path, strerror(errno));
  char *text = NULL;
  long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1))) {
    if (fread(text, 1, (size_t)size, f) == (size_t)size) text[size] = 0;
    else free(text), text = NULL;
  }
  fclose(f);
  return text ? text : mf_fail_null("%s: cannot read", path);
}

/* Adds the module name of a target to names (at most 8, each once).
 * PEFT lists "all-linear" targets by path (model.layers.0.mlp.up_proj):
 * the last part names the module. */
static int add_module(const char **names, int *n, const char *target) {
  if (!target) return -1;
  const char *dot = strrchr(target, '.');
  const char *name = dot ? dot + 1 : target;
  for (int i = 0; i < *n; i++)
    if (!strcmp(names[i], name)) return 0;
  if (*n == 8) return -1;
  names[(*n)++] = name;
  return 0;
}

/* Options from a PEFT adapter_config.json; names points into root. */
static int read_config(json_t *root, const char *path, mf_lora_opts *o, const char **names) {
  const char *type = json_string_value(json_object_get(root, "peft_type"));
  const char *bias = json_string_value(json_object_get(root, "bias"));
  json_t *targets = json_object_get(root, "target_modules"), *r = json_object_get(root, "r");
  if (!type || strcmp(type, "LORA")) return mf_fail("%s: peft_type is %s, not LORA", path, type ? type : "missing");
  if (bias && strcmp(bias, "none"))
    return mf_fail("%s: bias \"%s\" is not supported (adapters without bias terms are)", path, bias);
  if (json_is_true(json_object_get(root, "fan_in_fan_out")))
    return mf_fail("%s: fan_in_fan_out adapters are not supported", path);
  if (!json_is_integer(r)) return mf_fail("%s: r must be an integer", path);
  o->r = (int)json_integer_value(r);
  o->alpha = json_is_number(json_object_get(root, "lora_alpha")) ? json_number_value(json_object_get(root, "lora_alpha")) : 8;
  o->dropout = json_number_value(json_object_get(root, "lora_dropout"));
  o->rslora = json_is_true(json_object_get(root, "use_rslora"));
  if (json_is_string(targets)) {
    names[0] = json_string_value(targets);
    o->ntargets = 1;
  } else if (json_is_array(targets) && json_array_size(targets) > 0) {
    for (size_t i = 0; i < json_array_size(targets); i++)
      if (add_module(names, &o->ntargets, json_string_value(json_array_get(targets, i))))
        return mf_fail("%s: target_modules[%zu] is not a module name of a Llama-family layer", path, i);
  } else {
    return mf_fail("%s: target_modules must be a list of module names or \"all-linear\"", path);
  }
  o->targets = names;
  return 0;
}

/* Copies the file's tensor for p, which must have p's shape. */
static int copy_tensor(const mf_st_file *st, const char *path, const char *key, mf_param *p) {
  char want[48], got[48];
  const mf_tensor *t = mf_st_get(st, key);
  if (!t)
    return mf_fail("%s: missing tensor '%s' (the model expects %s)", path, key, shape_text(&p->value, want, sizeof want));
  if (t->ndim != 2 || t->shape[0] != p->value.shape[0] || t->shape[1] != p->value.shape[1])
    return mf_fail("%s: tensor '%s' has shape %s, the model expects %s: the adapter was made for another base",
                   path, key, shape_text(t, got, sizeof got), shape_text(&p->value, want, sizeof want));
  if (t->dtype != MF_F32 && t->dtype != MF_F16 && t->dtype != MF_BF16)
    return mf_fail("%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", path, key, mf_dtype_name(t->dtype));
  mf_tensor *wide = t->dtype == MF_F32 ? NULL : mf_tensor_convert(t, MF_F32);
  if (t->dtype != MF_F32 && !wide) return -1;
  memcpy(mf_pv(p), (wide ? wide : t)->data, mf_tensor_nbytes(&p->value));
  mf_tensor_free(wide);
  return 0;
}

static int is_adapter_key(const mf_lora_set *s, const char *key) {
  size_t n = strlen(PEFT_PREFIX);
  if (strncmp(key, PEFT_PREFIX, n)) return 0;
  for (int i = 0; i < s->nparams; i++)
    if (!strcmp(key + n, s->params[i].name)) return 1;
  return 0;
}

static int load_peft_tensors(mf_model *m, const char *dir) {
  char path[4200], key[MF_PARAM_NAME_MAX + 32];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  mf_st_file *st = mf_st_open(path);
  if (!st) return -1;
  const mf_lora_set *s = m->lora;
  int rc = 0;
  for (int i = 0; rc == 0 && i < s->nparams; i++) {
    snprintf(key, sizeof key, PEFT_PREFIX "%s", s->params[i].name);
    rc = copy_tensor(st, path, key, &s->params[i]);
  }
  for (int i = 0; rc == 0 && i < mf_st_count(st); i++)
    if (!is_adapter_key(s, mf_st_name(st, i)))
      rc = mf_fail("%s: unexpected tensor '%s' (no such adapter on this %s model)", path, mf_st_name(st, i),
                   m->cfg.arch);
  mf_st_close(st);
  return rc;
}

static int load_peft(mf_model *m, const char *dir) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s/adapter_config.json", dir) >= (int)sizeof path)
    return mf_fail("%s: path too long", dir);
  char *text = read_file(path);
  if (!text) return -1;
  json_error_t err;
  json_t *root = json_loads(text, 0, &err);
  free(text);
  if (!json_is_object(root)) {
    json_decref(root);
    return mf_fail("%s: not a JSON object (line %d: %s)", path, err.line, err.text);
  }
  mf_lora_opts o = {0};
  const char *names[8];
  int rc = read_config(root, path, &o, names);
  if (rc == 0 && mf_model_add_lora(m, &o)) rc = mf_fail("%s: %s", path, mf_errmsg());
  json_decref(root);
  if (rc == 0 && load_peft_tensors(m, dir)) {
    mf_lora_remove(m);
    rc = -1;
  }
  return rc;
}

/* ---- GGUF ---- */

static const char *gguf_arch(const mf_model *m) { return strcmp(m->cfg.arch, "qwen2") ? "llama" : "qwen2"; }

/* "<gguf name of the adapted weight>.lora_a" or ".lora_b" */
static int gguf_key(const mf_lora *a, const char *suffix, char *buf, size_t n) {
  char base[MF_PARAM_NAME_MAX];
  if (mf_gguf_param_name(a->w->name, base, sizeof base)) return -1;
  return snprintf(buf, n, "%s.%s", base, suffix) < (int)n ? 0 : mf_fail("gguf: name too long");
}

/* B's rows between HF order and the file's: to_file 1 writes, 0 reads. */
static void reorder_b(const mf_model *m, const mf_lora *a, const float *from, float *to, int to_file) {
  int64_t rows = a->b->value.shape[0], r = a->b->value.shape[1];
  for (int64_t i = 0; i < rows; i++) {
    int64_t g = mf_gguf_param_row(&m->cfg, a->w->name, i);
    memcpy(to + (to_file ? g : i) * r, from + (to_file ? i : g) * r, (size_t)r * sizeof(float));
  }
}

int mf_model_save_adapter_gguf(const mf_model *m, const char *path) {
  if (no_adapters(m, "save_adapter")) return -1;
  const mf_lora_set *s = m->lora;
  int64_t nb = 0;
  for (int i = 0; i < s->nadapters; i++) nb += mf_tensor_numel(&s->adapters[i].b->value);
  float *bs = malloc((size_t)(nb > 0 ? nb : 1) * sizeof(float));
  mf_gguf_writer *w = mf_gguf_writer_new();
  const char *arch = gguf_arch(m);
  double alpha = s->rslora ? s->alpha * sqrt(s->r) : s->alpha;
  int rc = bs && w ? 0 : mf_fail("%s: out of memory", path);
  if (rc == 0 && (mf_gguf_set_str(w, "general.architecture", arch, strlen(arch)) ||
                  mf_gguf_set_str(w, "general.type", "adapter", 7) || mf_gguf_set_str(w, "adapter.type", "lora", 4) ||
                  mf_gguf_set_float(w, "adapter.lora.alpha", GGUF_F32, alpha)))
    rc = -1;
  float *next = bs;
  for (int i = 0; rc == 0 && i < s->nadapters; i++) {
    const mf_lora *a = &s->adapters[i];
    char ka[MF_PARAM_NAME_MAX + 8], kb[MF_PARAM_NAME_MAX + 8];
    int64_t da[2] = {a->a->value.shape[1], s->r}, db[2] = {s->r, a->b->value.shape[0]};
    reorder_b(m, a, mf_pv(a->b), next, 1);
    if (gguf_key(a, "lora_a", ka, sizeof ka) || gguf_key(a, "lora_b", kb, sizeof kb) ||
        mf_gguf_add_tensor(w, ka, MF_GGML_F32, 2, da, mf_pv(a->a)) ||
        mf_gguf_add_tensor(w, kb, MF_GGML_F32, 2, db, next))
      rc = -1;
    next += mf_tensor_numel(&a->b->value);
  }
  if (rc == 0) rc = mf_gguf_write(w, path);
  mf_gguf_writer_free(w);
  free(bs);
  return rc;
}

/* The f32 values of the file's tensor `key`, which must be [rows, cols]. */
static mf_tensor *gguf_tensor(const mf_gguf *g, const char *path, const char *key, const mf_param *p) {
  char want[48], got[48];
  int64_t i = mf_gguf_tensor_find(g, key);
  if (i < 0) return mf_fail_null("%s: missing tensor '%s' (the model expects %s)", path, key,
                                 shape_text(&p->value, want, sizeof want));
  mf_tensor *t = mf_gguf_tensor_f32(g, i);
  if (t && (t->ndim != 2 || t->shape[0] != p->value.shape[0] || t->shape[1] != p->value.shape[1])) {
    mf_fail("%s: tensor '%s' has shape %s, the model expects %s: the adapter was made for another base", path,
            key, shape_text(t, got, sizeof got), shape_text(&p->value, want, sizeof want));
    mf_tensor_free(t);
    return NULL;
  }
  return t;
}

/* Targets and rank from the tensors the file holds. */
static int gguf_opts(const mf_gguf *g, const char *path, mf_lora_opts *o, const char **names) {
  static const char *const modules[][2] = {
    {"q_proj", "attn_q"}, {"k_proj", "attn_k"}, {"v_proj", "attn_v"}, {"o_proj", "attn_output"},
    {"gate_proj", "ffn_gate"}, {"up_proj", "ffn_up"}, {"down_proj", "ffn_down"}};
  char key[64];
  int64_t dims[4];
  o->ntargets = 0;
  for (int t = 0; t < 7; t++) {
    snprintf(key, sizeof key, "blk.0.%s.weight.lora_a", modules[t][1]);
    int64_t i = mf_gguf_tensor_find(g, key);
    if (i < 0) continue;
    names[o->ntargets++] = modules[t][0];
    if (mf_gguf_tensor_dims(g, i, dims) != 2) return mf_fail("%s: tensor '%s' is not a matrix", path, key);
    o->r = (int)dims[1];
  }
  if (!o->ntargets) return mf_fail("%s: no LoRA tensors for layer 0 (blk.0.*.lora_a)", path);
  int64_t ai = mf_gguf_find(g, "adapter.lora.alpha");
  if (ai < 0 || mf_gguf_float(g, ai, &o->alpha)) return mf_fail("%s: missing adapter.lora.alpha", path);
  o->targets = names;
  return 0;
}

static int load_gguf_tensors(mf_model *m, const mf_gguf *g, const char *path) {
  const mf_lora_set *s = m->lora;
  int rc = 0;
  for (int i = 0; rc == 0 && i < s->nadapters; i++) {
    const mf_lora *a = &s->adapters[i];
    char ka[MF_PARAM_NAME_MAX + 8], kb[MF_PARAM_NAME_MAX + 8];
    mf_tensor *ta = NULL, *tb = NULL;
    rc = gguf_key(a, "lora_a", ka, sizeof ka) || gguf_key(a, "lora_b", kb, sizeof kb) ||
         !(ta = gguf_tensor(g, path, ka, a->a)) || !(tb = gguf_tensor(g, path, kb, a->b)) ? -1 : 0;
    if (rc == 0) {
      memcpy(mf_pv(a->a), ta->data, mf_tensor_nbytes(ta));
      reorder_b(m, a, tb->data, mf_pv(a->b), 0);
    }
    mf_tensor_free(ta);
    mf_tensor_free(tb);
  }
  if (rc == 0 && mf_gguf_tensor_count(g) != 2 * s->nadapters)
    rc = mf_fail("%s: holds %lld tensors, but adapters on every layer's targets make %d", path,
                 (long long)mf_gguf_tensor_count(g), 2 * s->nadapters);
  return rc;
}

static int load_gguf(mf_model *m, const char *path) {
  mf_gguf *g = mf_gguf_open(path);
  if (!g) return -1;
  size_t len;
  int64_t ti = mf_gguf_find(g, "general.type"), ai = mf_gguf_find(g, "adapter.type");
  const char *type = ti >= 0 ? mf_gguf_str(g, ti, &len) : NULL;
  const char *atype = ai >= 0 ? mf_gguf_str(g, ai, &len) : NULL;
  mf_lora_opts o = {0};
  const char *names[8];
  int rc = 0;
  if (!type || strncmp(type, "adapter", 7) || !atype || strncmp(atype, "lora", 4))
    rc = mf_fail("%s: not a GGUF LoRA adapter (general.type \"adapter\", adapter.type \"lora\")", path);
  if (rc == 0) rc = gguf_opts(g, path, &o, names);
  if (rc == 0 && mf_model_add_lora(m, &o)) rc = mf_fail("%s: %s", path, mf_errmsg());
  if (rc == 0 && load_gguf_tensors(m, g, path)) {
    mf_lora_remove(m);
    rc = -1;
  }
  mf_gguf_close(g);
  return rc;
}

int mf_model_load_adapter(mf_model *m, const char *path) {
  size_t n = strlen(path);
  if (m->lora) return mf_fail("load_adapter: the model already has LoRA adapters");
  int rc = n > 5 && !strcmp(path + n - 5, ".gguf") ? load_gguf(m, path) : load_peft(m, path);
  /* Loaded for inference, as PEFT's from_pretrained: no dropout until set_train. */
  m->training = 0;
  return rc;
}
