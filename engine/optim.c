/*
 * AdamW over a set of model parameters, with PyTorch's update (mfk_adamw)
 * and defaults, and global gradient-norm clipping. The optimizer holds the
 * moment estimates of its parameters in one block; parameters and their
 * gradients stay in the model.
 *
 * The training state saves to one safetensors file: the moments under
 * PyTorch's state names "<param>.exp_avg" and "<param>.exp_avg_sq" (f32,
 * the parameter's shape), and metadata {"format": "moonforge-adamw-1",
 * "step": "<n>", "passes": "<n>"}: the optimizer's step count and the
 * model's count of backward passes, which keys the LoRA dropout masks.
 * Loading it into an optimizer over the same parameters makes the next
 * step bit-identical to the one the saved optimizer would have taken, which
 * is what resuming a killed run needs.
 */
#include "model.h"
#include "internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
  mf_param *param;
  float *m, *v;  /* first and second moments */
} slot;

struct mf_optim {
  mf_model *model;
  mf_adamw_opts opts;
  int64_t step;
  int nslots;
  slot *slots;
  float *state;
};

static int check_opts(const mf_adamw_opts *o) {
  if (!(o->lr >= 0)) return mf_fail("adamw: lr %g must be >= 0", o->lr);
  if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
    return mf_fail("adamw: betas (%g, %g) must lie in [0, 1)", o->beta1, o->beta2);
  if (!(o->eps > 0)) return mf_fail("adamw: eps %g must be > 0", o->eps);
  if (!(o->weight_decay >= 0)) return mf_fail("adamw: weight_decay %g must be >= 0", o->weight_decay);
  return 0;
}

/* The parameters named (every trainable one when names is NULL), each once. */
static int select_params(mf_model *m, const char *const *names, int nnames, slot *slots) {
  if (!names) {
    int n = 0;
    for (int i = 0; i < mf_model_nall(m); i++)
      if (!mf_model_at(m, i)->frozen) slots[n++].param = mf_model_at(m, i);
    return n;
  }
  for (int i = 0; i < nnames; i++) {
    if (!(slots[i].param = mf_model_find(m, names[i]))) return -1;
    if (slots[i].param->frozen) return mf_fail("adamw: parameter '%s' is frozen", names[i]);
    for (int j = 0; j < i; j++)
      if (slots[j].param == slots[i].param) return mf_fail("adamw: parameter '%s' listed twice", names[i]);
  }
  return nnames;
}

/* AdamW updates f32 values in place. */
static int check_f32(const mf_optim *o) {
  for (int i = 0; i < o->nslots; i++)
    if (!mf_param_holds_f32(o->slots[i].param))
      return mf_fail("adamw: parameter '%s' is held in %s; set the base precision to f32 to train it",
                     o->slots[i].param->name, mf_param_storage(o->slots[i].param));
  return 0;
}

mf_optim *mf_optim_adamw(mf_model *m, const char *const *names, int nnames, const mf_adamw_opts *opts) {
  static const mf_adamw_opts defaults = {1e-3, 0.9, 0.999, 1e-8, 0.01};
  if (!opts) opts = &defaults;
  if (check_opts(opts) || mf_model_ensure_grads(m)) return NULL;
  int cap = names ? nnames : mf_model_nall(m);
  mf_optim *o = calloc(1, sizeof *o);
  if (!o || !(o->slots = calloc((size_t)(cap > 0 ? cap : 1), sizeof *o->slots))) {
    mf_optim_free(o);
    return mf_fail_null("adamw: out of memory");
  }
  o->model = m;
  o->opts = *opts;
  if ((o->nslots = select_params(m, names, nnames, o->slots)) < 0 || check_f32(o)) {
    mf_optim_free(o);
    return NULL;
  }
  int64_t total = 0;
  for (int i = 0; i < o->nslots; i++) total += mf_tensor_numel(&o->slots[i].param->value);
  if (!(o->state = calloc((size_t)(2 * total + 1), sizeof(float)))) {
    mf_optim_free(o);
    return mf_fail_null("adamw: out of memory for the state of %lld values", (long long)total);
  }
  float *next = o->state;
  for (int i = 0; i < o->nslots; i++) {
    int64_t n = mf_tensor_numel(&o->slots[i].param->value);
    o->slots[i].m = next;
    o->slots[i].v = next + n;
    next += 2 * n;
  }
  return o;
}

void mf_optim_free(mf_optim *o) {
  if (!o) return;
  free(o->slots);
  free(o->state);
  free(o);
}

int mf_optim_step(mf_optim *o) {
  const mf_adamw_opts *h = &o->opts;
  o->step++;
  for (int i = 0; i < o->nslots; i++) {
    mf_param *p = o->slots[i].param;
    mfk_adamw(mf_pool(), mf_pv(p), mf_pg(p), o->slots[i].m, o->slots[i].v, mf_tensor_numel(&p->value),
              (float)h->lr, (float)h->beta1, (float)h->beta2, (float)h->eps, (float)h->weight_decay,
              o->step);
  }
  return 0;
}

void mf_optim_zero_grad(mf_optim *o) {
  for (int i = 0; i < o->nslots; i++) {
    mf_param *p = o->slots[i].param;
    memset(mf_pg(p), 0, mf_tensor_nbytes(&p->grad));
  }
}

void mf_optim_set_lr(mf_optim *o, double lr) { o->opts.lr = lr; }

void mf_optim_scale_grad(mf_optim *o, double factor) {
  for (int i = 0; i < o->nslots; i++) {
    mf_param *p = o->slots[i].param;
    mfk_scale(mf_pool(), mf_pg(p), (float)factor, mf_tensor_numel(&p->grad));
  }
}
int64_t mf_optim_steps(const mf_optim *o) { return o->step; }

double mf_optim_clip_grad_norm(mf_optim *o, double max_norm) {
  double sumsq = 0;
  for (int i = 0; i < o->nslots; i++) {
    mf_param *p = o->slots[i].param;
    sumsq += mfk_sumsq(mf_pool(), mf_pg(p), mf_tensor_numel(&p->grad));
  }
  double norm = sqrt(sumsq), scale = max_norm / (norm + 1e-6);
  if (max_norm > 0 && scale < 1)
    for (int i = 0; i < o->nslots; i++) {
      mf_param *p = o->slots[i].param;
      mfk_scale(mf_pool(), mf_pg(p), (float)scale, mf_tensor_numel(&p->grad));
    }
  return norm;
}

#define OPTIM_FORMAT "moonforge-adamw-1"

/* Views of slot i's moments as tensors shaped like its parameter. */
static void moment_views(const slot *s, mf_tensor *m, mf_tensor *v) {
  *m = s->param->value;
  m->data = s->m;
  m->owns_data = 0;
  *v = *m;
  v->data = s->v;
}

int mf_optim_save(const mf_optim *o, const char *path) {
  int n = 2 * o->nslots;
  char (*names)[MF_PARAM_NAME_MAX + 16] = calloc((size_t)(n > 0 ? n : 1), sizeof *names);
  const char **name_ptrs = calloc((size_t)(n > 0 ? n : 1), sizeof *name_ptrs);
  mf_tensor *views = calloc((size_t)(n > 0 ? n : 1), sizeof *views);
  const mf_tensor **view_ptrs = calloc((size_t)(n > 0 ? n : 1), sizeof *view_ptrs);
  int rc = -1;
  if (!names || !name_ptrs || !views || !view_ptrs) {
    mf_fail("optimizer state %s: out of memory", path);
    goto done;
  }
  for (int i = 0; i < o->nslots; i++) {
    snprintf(names[2 * i], sizeof names[0], "%s.exp_avg", o->slots[i].param->name);
    snprintf(names[2 * i + 1], sizeof names[0], "%s.exp_avg_sq", o->slots[i].param->name);
    moment_views(&o->slots[i], &views[2 * i], &views[2 * i + 1]);
  }
  for (int i = 0; i < n; i++) {
    name_ptrs[i] = names[i];
    view_ptrs[i] = &views[i];
  }
  char metadata[128];
  snprintf(metadata, sizeof metadata,
           "{\"format\": \"" OPTIM_FORMAT "\", \"step\": \"%lld\", \"passes\": \"%lld\"}",
           (long long)o->step, (long long)o->model->backward_steps);
  rc = mf_st_save(path, n, name_ptrs, view_ptrs, metadata);
done:
  free(names);
  free(name_ptrs);
  free(views);
  free(view_ptrs);
  return rc;
}

/* A non-negative integer from the metadata (stored as a string), or -1. */
static int64_t metadata_count(json_t *meta, const char *key) {
  const char *text = json_string_value(json_object_get(meta, key));
  char *end = NULL;
  long long n = text ? strtoll(text, &end, 10) : -1;
  return end && end != text && *end == 0 && n >= 0 ? n : -1;
}

/* The step and pass counts of the file's metadata; -1 when it is not ours. */
static int read_counts(const mf_st_file *f, const char *path, int64_t *step, int64_t *passes) {
  json_t *meta = json_loads(mf_st_metadata(f), 0, NULL);
  const char *format = json_string_value(json_object_get(meta, "format"));
  int ours = format && !strcmp(format, OPTIM_FORMAT);
  *step = metadata_count(meta, "step");
  *passes = metadata_count(meta, "passes");
  json_decref(meta);
  if (!ours || *step < 0 || *passes < 0)
    return mf_fail("%s: not a moonforge AdamW state (metadata format " OPTIM_FORMAT ", step, passes)", path);
  return 0;
}

/* The saved moment `name` of parameter p, checked against p's shape; NULL
 * with a message when absent or misshapen. */
static const float *saved_moment(const mf_st_file *f, const char *path, const mf_param *p, const char *suffix) {
  char name[MF_PARAM_NAME_MAX + 16];
  snprintf(name, sizeof name, "%s.%s", p->name, suffix);
  const mf_tensor *t = mf_st_get(f, name);
  const mf_tensor *want = &p->value;
  if (!t) return mf_fail_null("%s: no tensor '%s'; the state belongs to other parameters", path, name);
  if (t->dtype != MF_F32 || t->ndim != want->ndim ||
      memcmp(t->shape, want->shape, (size_t)want->ndim * sizeof *want->shape))
    return mf_fail_null("%s: '%s' is %s with %lld values, the parameter has %lld f32 values", path, name,
                        mf_dtype_name(t->dtype), (long long)mf_tensor_numel(t), (long long)mf_tensor_numel(want));
  return t->data;
}

/* Every tensor is checked before any is copied, so a failed load leaves the
 * optimizer as it was. */
int mf_optim_load(mf_optim *o, const char *path) {
  mf_st_file *f = mf_st_open(path);
  if (!f) return -1;
  int64_t step, passes;
  int rc = read_counts(f, path, &step, &passes);
  if (rc == 0 && mf_st_count(f) != 2 * o->nslots)
    rc = mf_fail("%s: holds %d tensors, the optimizer has %d parameters (2 moments each)", path, mf_st_count(f),
                 o->nslots);
  for (int pass = 0; rc == 0 && pass < 2; pass++)
    for (int i = 0; rc == 0 && i < o->nslots; i++) {
      const slot *s = &o->slots[i];
      const float *m = saved_moment(f, path, s->param, "exp_avg");
      const float *v = m ? saved_moment(f, path, s->param, "exp_avg_sq") : NULL;
      if (!v) rc = -1;
      else if (pass == 1) {
        memcpy(s->m, m, mf_tensor_nbytes(&s->param->value));
        memcpy(s->v, v, mf_tensor_nbytes(&s->param->value));
      }
    }
  if (rc == 0) {
    o->step = step;
    o->model->backward_steps = passes;
  }
  mf_st_close(f);
  return rc;
}
