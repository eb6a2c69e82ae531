/* Optimisers: the CPU kernels of SGD with momentum and Adam/AdamW over a
 * flat arena (PyTorch's formulas, backend.h), and nn_optim, which owns the
 * state arenas on the net's backend and steps the whole trainable arena
 * in one op. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "err.h"
#include "net_priv.h"

void nn_cpu_sgd_step(size_t count, float *w, const float *g, float *m,
	const struct nn_sgd_params *p)
{
	const float lr = p->lr, mu = p->momentum, wd = p->weight_decay;
	for (size_t i = 0; i < count; i++) {
		float d = g[i] + wd * w[i];
		if (m) {
			m[i] = mu * m[i] + d;
			d = m[i];
		}
		w[i] -= lr * d;
	}
}

void nn_cpu_adam_step(size_t count, float *w, const float *g, float *m, float *v,
	const struct nn_adam_params *p)
{
	/* The scalars in double, as PyTorch computes them in Python. */
	const double bc1 = 1.0 - pow(p->beta1, (double)p->step);
	const double bc2 = 1.0 - pow(p->beta2, (double)p->step);
	const float step_size = (float)(p->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
	const float b1 = p->beta1, b2 = p->beta2, eps = p->eps, wd = p->weight_decay;
	const float shrink = p->decoupled ? 1.0f - p->lr * wd : 1.0f;
	const float l2 = p->decoupled ? 0.0f : wd;
	for (size_t i = 0; i < count; i++) {
		float wi = w[i] * shrink;
		float gi = g[i] + l2 * wi;
		m[i] = b1 * m[i] + (1.0f - b1) * gi;
		v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
		w[i] = wi - step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
	}
}

int nn_optim_create(nn_net *net, const struct nn_optim_opts *opts, nn_optim **out)
{
	struct nn_backend *b = net->b;
	nn_optim *o = NULL;
	int rc = VR_EINVAL;
	*out = NULL;
	if (net->inference_only) {
		nn__errmsg(net, "optimiser on an inference-only net");
		return VR_ESTATE;
	}
	if (!opts || opts->kind < NN_OPTIM_SGD || opts->kind > NN_OPTIM_ADAMW ||
	    !(opts->lr > 0.0f) || !(opts->weight_decay >= 0.0f) || !(opts->momentum >= 0.0f)) {
		nn__errmsg(net, "optimiser options: unknown kind or a bad lr/momentum/decay");
		return VR_EINVAL;
	}
	o = calloc(1, sizeof(*o));
	if (!o)
		return VR_ENOMEM;
	o->net = net;
	o->opts = *opts;
	if (opts->kind != NN_OPTIM_SGD) {
		o->opts.beta1 = opts->beta1 > 0.0f ? opts->beta1 : 0.9f;
		o->opts.beta2 = opts->beta2 > 0.0f ? opts->beta2 : 0.999f;
		o->opts.eps = opts->eps > 0.0f ? opts->eps : 1e-8f;
		if (o->opts.beta1 >= 1.0f || o->opts.beta2 >= 1.0f)
			goto fail;
	}
	o->count = net->trainable_count;
	size_t bytes = sizeof(float) * (o->count ? o->count : 1);
	if (opts->kind != NN_OPTIM_SGD || opts->momentum > 0.0f) {
		if ((rc = b->ops->alloc(b, bytes, (void **)&o->m)) ||
		    (rc = b->ops->fill(b, o->m, 0.0f, o->count)))
			goto fail;
	}
	if (opts->kind != NN_OPTIM_SGD) {
		if ((rc = b->ops->alloc(b, bytes, (void **)&o->v)) ||
		    (rc = b->ops->fill(b, o->v, 0.0f, o->count)))
			goto fail;
	}
	*out = o;
	return 0;
fail:
	nn_optim_destroy(o);
	return rc;
}

void nn_optim_destroy(nn_optim *o)
{
	if (!o)
		return;
	struct nn_backend *b = o->net->b;
	if (o->m)
		b->ops->free(b, o->m);
	if (o->v)
		b->ops->free(b, o->v);
	free(o);
}

int nn_optim_step(nn_optim *o)
{
	nn_net *net = o->net;
	struct nn_backend *b = net->b;
	int rc;
	o->steps++;
	b->param_version++;        /* the backend's derived weights are stale now */
	if (o->opts.kind == NN_OPTIM_SGD) {
		struct nn_sgd_params p = { o->opts.lr, o->opts.momentum, o->opts.weight_decay };
		rc = b->ops->sgd_step(b, o->count, net->arena, net->grads, o->m, &p);
	} else {
		struct nn_adam_params p = { o->opts.lr, o->opts.beta1, o->opts.beta2, o->opts.eps,
			o->opts.weight_decay, o->opts.kind == NN_OPTIM_ADAMW, o->steps };
		rc = b->ops->adam_step(b, o->count, net->arena, net->grads, o->m, o->v, &p);
	}
	if (rc)
		nn__errmsg(net, "optimiser step failed on the backend");
	return rc;
}

void nn_optim_set_lr(nn_optim *o, float lr)
{
	o->opts.lr = lr;
}

long nn_optim_steps(const nn_optim *o)
{
	return o->steps;
}
