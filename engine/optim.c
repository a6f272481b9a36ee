/*
 * AdamW over a set of model parameters, with PyTorch's update (mfk_adamw)
 * and defaults, and global gradient-norm clipping. The optimizer holds the
 * moment estimates of its parameters in one block; parameters and their
 * gradients stay in the model.
 */
#include "model.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
  mf_param *param;
  float *m, *v;  /* first and second moments */
} slot;

struct mf_optim {
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

/* The parameters named (every one when names is NULL), each once. */
static int select_params(mf_model *m, const char *const *names, int nnames, slot *slots) {
  if (!names) {
    for (int i = 0; i < m->nparams; i++) slots[i].param = &m->params[i];
    return m->nparams;
  }
  for (int i = 0; i < nnames; i++) {
    if (!(slots[i].param = mf_model_find(m, names[i]))) return -1;
    for (int j = 0; j < i; j++)
      if (slots[j].param == slots[i].param) return mf_fail("adamw: parameter '%s' listed twice", names[i]);
  }
  return nnames;
}

mf_optim *mf_optim_adamw(mf_model *m, const char *const *names, int nnames, const mf_adamw_opts *opts) {
  static const mf_adamw_opts defaults = {1e-3, 0.9, 0.999, 1e-8, 0.01};
  if (!opts) opts = &defaults;
  if (check_opts(opts) || mf_model_ensure_grads(m)) return NULL;
  int cap = names ? nnames : m->nparams;
  mf_optim *o = calloc(1, sizeof *o);
  if (!o || !(o->slots = calloc((size_t)(cap > 0 ? cap : 1), sizeof *o->slots))) {
    mf_optim_free(o);
    return mf_fail_null("adamw: out of memory");
  }
  o->opts = *opts;
  if ((o->nslots = select_params(m, names, nnames, o->slots)) < 0) {
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
