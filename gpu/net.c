/* Nets: the layer graph, its memory, and the forward and backward passes,
 * all through the backend's ops (backend.h), so the same code drives the
 * CPU and CUDA backends.
 *
 * Memory is planned once, in nn_net_create, for max_batch images:
 * - one parameter arena (trainable tensors first, then buffers such as
 *   batch-norm statistics), one gradient arena beside it;
 * - activations: an in-place layer (a ReLU after a layer whose backward
 *   does not read its own output) shares its input's storage; in a
 *   training net every other activation has its own buffer, because
 *   backward reads them all; in an inference-only net buffers are reused
 *   once a tensor's last reader has run;
 * - activation gradients live only from the first layer that writes them
 *   to the layer that reads them, so backward reuses a few buffers (two,
 *   for a chain);
 * - one workspace, the largest any layer's plan asked for.
 * Nothing is allocated per call afterwards, except the input gradient on
 * the first backward that asks for it.
 *
 * One file past 800 lines because it is one concept: the graph's build,
 * its memory and layout plan and its passes read the same layer and
 * tensor tables, and each decision (in place, fusion, layouts, buffer
 * lifetimes) depends on the others. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "net_priv.h"

#define ALIGN_FLOATS 16        /* parameter offsets: 64-byte aligned */

void nn__errmsg(nn_net *net, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(net->errmsg, sizeof(net->errmsg), fmt, ap);
	va_end(ap);
}

/* Records the first builder failure and returns the sticky code. */
static int build_fail(nn_net *net, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int build_fail(nn_net *net, int rc, const char *fmt, ...)
{
	if (net->build_rc)
		return net->build_rc;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(net->errmsg, sizeof(net->errmsg), fmt, ap);
	va_end(ap);
	net->build_rc = rc;
	return rc;
}

/* Grows *arr (of *cap elements of size sz) to hold one more than used. */
static int grow(void **arr, int *cap, int used, size_t sz)
{
	if (used < *cap)
		return 0;
	int ncap = *cap ? *cap * 2 : 16;
	void *p = realloc(*arr, (size_t)ncap * sz);
	if (!p)
		return VR_ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

static int new_tensor(nn_net *net, int c, int h, int w, int producer)
{
	if (grow((void **)&net->tensors, &net->cap_tensors, net->ntensors, sizeof(*net->tensors)))
		return build_fail(net, VR_ENOMEM, "out of memory building the net");
	int id = net->ntensors++;
	struct nn__tensor *t = &net->tensors[id];
	memset(t, 0, sizeof(*t));
	t->c = c;
	t->h = h;
	t->w = w;
	t->size = (size_t)c * h * w;
	t->producer = producer;
	t->group = id;
	return id;
}

static int new_param(nn_net *net, const char *layer, const char *suffix, int ndim,
	const int *shape, int trainable, int init, int fan_in)
{
	if (grow((void **)&net->params, &net->cap_params, net->nparams, sizeof(*net->params)))
		return build_fail(net, VR_ENOMEM, "out of memory building the net");
	int id = net->nparams++;
	struct nn__param *p = &net->params[id];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s.%s", layer, suffix);
	p->ndim = ndim;
	p->numel = 1;
	for (int i = 0; i < ndim; i++) {
		p->shape[i] = shape[i];
		p->numel *= (size_t)shape[i];
	}
	p->trainable = trainable;
	p->init = init;
	p->fan_in = fan_in;
	return id;
}

/* Appends a layer reading tensor in; NULL (with build_rc set) on failure. */
static struct nn__layer *new_layer(nn_net *net, const char *name, int kind, int in)
{
	if (net->build_rc)
		return NULL;
	if (in < 0 || in >= net->ntensors) {
		build_fail(net, VR_EINVAL, "%s: no such input tensor %d", name, in);
		return NULL;
	}
	if (strlen(name) >= sizeof(net->layers->name)) {
		build_fail(net, VR_EINVAL, "layer name too long: %s", name);
		return NULL;
	}
	if (grow((void **)&net->layers, &net->cap_layers, net->nlayers, sizeof(*net->layers))) {
		build_fail(net, VR_ENOMEM, "out of memory building the net");
		return NULL;
	}
	struct nn__layer *l = &net->layers[net->nlayers++];
	memset(l, 0, sizeof(*l));
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->kind = kind;
	l->in[0] = in;
	l->nin = 1;
	l->w = l->b = l->mean = l->var = -1;
	l->post_bn = l->post_act_layer = -1;
	net->tensors[in].consumers++;
	return l;
}

/* Gives layer l (the last added) its output tensor; in place shares the
 * input's storage. Returns the tensor or the sticky code. */
static int set_output(nn_net *net, int c, int h, int w, int inplace)
{
	int li = net->nlayers - 1;
	int t = new_tensor(net, c, h, w, li);
	if (t < 0)
		return t;
	struct nn__layer *l = &net->layers[li];
	l->out = t;
	l->inplace = inplace;
	if (inplace)
		net->tensors[t].group = net->tensors[l->in[0]].group;
	return t;
}

static const struct nn__tensor *tin(const nn_net *net, int in)
{
	return &net->tensors[in];
}

int nn__conv(nn_net *net, const char *name, int in, int k, int kernel, int stride, int pad,
	int groups, int bias)
{
	struct nn__layer *l = new_layer(net, name, NN__CONV, in);
	if (!l)
		return net->build_rc;
	const struct nn__tensor *x = tin(net, in);
	struct nn_conv_shape *s = &l->u.conv;
	*s = (struct nn_conv_shape){ .n = net->max_batch, .c = x->c, .h = x->h, .w = x->w,
		.k = k, .kh = kernel, .kw = kernel, .stride_h = stride, .stride_w = stride,
		.pad_h = pad, .pad_w = pad, .groups = groups };
	if (nn_conv_shape_check(s))
		return build_fail(net, VR_EINVAL, "%s: a %dx%d convolution (stride %d, pad %d, "
			"%d groups) does not fit its %dx%dx%d input", name, kernel, kernel, stride, pad,
			groups, x->c, x->h, x->w);
	int fan_in = x->c / groups * kernel * kernel;
	int wshape[4] = { k, x->c / groups, kernel, kernel };
	l->w = new_param(net, name, "weight", 4, wshape, 1, NN__INIT_UNIFORM, fan_in);
	if (bias)
		l->b = new_param(net, name, "bias", 1, &k, 1, NN__INIT_UNIFORM, fan_in);
	return set_output(net, k, s->oh, s->ow, 0);
}

/* Whether layer li's backward reads only its input and the gradient, so a
 * following layer may overwrite its output. */
static int output_is_free(const nn_net *net, int li)
{
	if (li < 0)
		return 0;
	int kind = net->layers[li].kind;
	return kind == NN__CONV || kind == NN__FC || kind == NN__BN || kind == NN__ADD ||
		kind == NN__PAD || kind == NN__L2NORM;
}

static int act(nn_net *net, const char *name, int in, int mode)
{
	struct nn__layer *l = new_layer(net, name, NN__ACT, in);
	if (!l)
		return net->build_rc;
	l->u.act = mode;
	const struct nn__tensor *x = tin(net, in);
	return set_output(net, x->c, x->h, x->w, output_is_free(net, x->producer));
}

int nn__relu(nn_net *net, const char *name, int in)
{
	return act(net, name, in, NN_ACT_RELU);
}

int nn__relu6(nn_net *net, const char *name, int in)
{
	return act(net, name, in, NN_ACT_RELU6);
}

static int pool(nn_net *net, const char *name, int in, struct nn_pool_shape *proto)
{
	struct nn__layer *l = new_layer(net, name, NN__POOL, in);
	if (!l)
		return net->build_rc;
	const struct nn__tensor *x = tin(net, in);
	struct nn_pool_shape *s = &l->u.pool;
	*s = *proto;
	s->n = net->max_batch;
	s->c = x->c;
	s->h = x->h;
	s->w = x->w;
	if (nn_pool_shape_check(s))
		return build_fail(net, VR_EINVAL, "%s: a %dx%d pool (stride %d, pad %d) does not "
			"fit its %dx%dx%d input", name, s->kh, s->kw, s->stride_h, s->pad_h, x->c,
			x->h, x->w);
	return set_output(net, x->c, s->oh, s->ow, 0);
}

int nn__maxpool(nn_net *net, const char *name, int in, int kernel, int stride, int pad)
{
	struct nn_pool_shape s = { .mode = NN_POOL_MAX, .kh = kernel, .kw = kernel,
		.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad };
	return pool(net, name, in, &s);
}

int nn__avgpool(nn_net *net, const char *name, int in, int kernel, int stride, int pad)
{
	struct nn_pool_shape s = { .mode = NN_POOL_AVG, .kh = kernel, .kw = kernel,
		.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad };
	return pool(net, name, in, &s);
}

int nn__adaptive_avgpool(nn_net *net, const char *name, int in, int oh, int ow)
{
	if (!net->build_rc && in > 0 && in < net->ntensors && tin(net, in)->h == oh &&
	    tin(net, in)->w == ow) {
		/* AlexNet's avgpool at 224: nothing to compute. */
		struct nn__layer *l = new_layer(net, name, NN__IDENTITY, in);
		if (!l)
			return net->build_rc;
		const struct nn__tensor *x = tin(net, in);
		return set_output(net, x->c, x->h, x->w, 1);
	}
	struct nn_pool_shape s = { .mode = NN_POOL_ADAPTIVE_AVG, .oh = oh, .ow = ow };
	return pool(net, name, in, &s);
}

int nn__lrn(nn_net *net, const char *name, int in, int size, float alpha, float beta, float k)
{
	struct nn__layer *l = new_layer(net, name, NN__LRN, in);
	if (!l)
		return net->build_rc;
	const struct nn__tensor *x = tin(net, in);
	l->u.lrn = (struct nn_lrn_shape){ .n = net->max_batch, .c = x->c, .h = x->h, .w = x->w,
		.size = size, .alpha = alpha, .beta = beta, .k = k };
	if (nn_lrn_shape_check(&l->u.lrn))
		return build_fail(net, VR_EINVAL, "%s: bad local response norm parameters", name);
	return set_output(net, x->c, x->h, x->w, 0);
}

int nn__linear(nn_net *net, const char *name, int in, int out)
{
	struct nn__layer *l = new_layer(net, name, NN__FC, in);
	if (!l)
		return net->build_rc;
	const struct nn__tensor *x = tin(net, in);
	if (out < 1 || x->size > (1u << 30))
		return build_fail(net, VR_EINVAL, "%s: bad linear layer %zu -> %d", name, x->size, out);
	l->u.fc = (struct nn_fc_shape){ .n = net->max_batch, .in = (int)x->size, .out = out };
	int wshape[2] = { out, (int)x->size };
	l->w = new_param(net, name, "weight", 2, wshape, 1, NN__INIT_UNIFORM, (int)x->size);
	l->b = new_param(net, name, "bias", 1, &out, 1, NN__INIT_UNIFORM, (int)x->size);
	return set_output(net, out, 1, 1, 0);
}

int nn__dropout(nn_net *net, const char *name, int in, float p)
{
	struct nn__layer *l = new_layer(net, name, NN__DROPOUT, in);
	if (!l)
		return net->build_rc;
	if (!(p >= 0.0f && p < 1.0f))
		return build_fail(net, VR_EINVAL, "%s: dropout probability %g not in [0, 1)", name,
			(double)p);
	l->u.p = p;
	const struct nn__tensor *x = tin(net, in);
	return set_output(net, x->c, x->h, x->w, 0);
}

int nn__batchnorm(nn_net *net, const char *name, int in, float eps)
{
	struct nn__layer *l = new_layer(net, name, NN__BN, in);
	if (!l)
		return net->build_rc;
	const struct nn__tensor *x = tin(net, in);
	int c = x->c;
	l->u.bn = (struct nn_bn_shape){ .n = net->max_batch, .c = x->c, .h = x->h, .w = x->w,
		.eps = eps };
	l->w = new_param(net, name, "weight", 1, &c, 1, NN__INIT_ONE, 0);
	l->b = new_param(net, name, "bias", 1, &c, 1, NN__INIT_ZERO, 0);
	l->mean = new_param(net, name, "running_mean", 1, &c, 0, NN__INIT_ZERO, 0);
	l->var = new_param(net, name, "running_var", 1, &c, 0, NN__INIT_ONE, 0);
	return set_output(net, x->c, x->h, x->w, 0);
}

int nn__add(nn_net *net, const char *name, int a, int c)
{
	struct nn__layer *l = new_layer(net, name, NN__ADD, a);
	if (!l)
		return net->build_rc;
	if (c < 0 || c >= net->ntensors)
		return build_fail(net, VR_EINVAL, "%s: no such input tensor %d", name, c);
	const struct nn__tensor *x = tin(net, a), *y = tin(net, c);
	if (x->c != y->c || x->h != y->h || x->w != y->w)
		return build_fail(net, VR_ESHAPE, "%s: adding %dx%dx%d to %dx%dx%d", name, x->c, x->h,
			x->w, y->c, y->h, y->w);
	l->in[1] = c;
	l->nin = 2;
	net->tensors[c].consumers++;
	return set_output(net, x->c, x->h, x->w, 0);
}

int nn__pad(nn_net *net, const char *name, int in, int top, int bottom, int left, int right)
{
	struct nn__layer *l = new_layer(net, name, NN__PAD, in);
	if (!l)
		return net->build_rc;
	if (!net->b->ops->pad_fwd || !net->b->ops->pad_bwd)
		return build_fail(net, VR_EUNSUPPORTED, "%s: the %s backend has no zero padding",
			name, net->b->name);
	const struct nn__tensor *x = tin(net, in);
	l->u.pad = (struct nn_pad_shape){ .n = net->max_batch, .c = x->c, .h = x->h, .w = x->w,
		.top = top, .bottom = bottom, .left = left, .right = right };
	if (nn_pad_shape_check(&l->u.pad))
		return build_fail(net, VR_EINVAL, "%s: bad padding %d, %d, %d, %d", name, top, bottom,
			left, right);
	return set_output(net, x->c, l->u.pad.oh, l->u.pad.ow, 0);
}

int nn__l2norm(nn_net *net, const char *name, int in)
{
	struct nn__layer *l = new_layer(net, name, NN__L2NORM, in);
	if (!l)
		return net->build_rc;
	if (!net->b->ops->l2norm_fwd || !net->b->ops->l2norm_bwd)
		return build_fail(net, VR_EUNSUPPORTED, "%s: the %s backend has no L2 normalisation",
			name, net->b->name);
	const struct nn__tensor *x = tin(net, in);
	if (x->size > (1u << 24))
		return build_fail(net, VR_EINVAL, "%s: %zu values an image is too many to normalise",
			name, x->size);
	l->u.eps = 1e-12f;
	return set_output(net, x->c, x->h, x->w, 0);
}

void nn__alias(nn_net *net, const char *alias, const char *layer)
{
	if (net->naliases == (int)(sizeof(net->aliases) / sizeof(net->aliases[0]))) {
		build_fail(net, VR_EINVAL, "too many aliases");
		return;
	}
	struct nn__alias *a = &net->aliases[net->naliases++];
	snprintf(a->name, sizeof(a->name), "%s", alias);
	snprintf(a->layer, sizeof(a->layer), "%s", layer);
}

int nn__layer_find(const nn_net *net, const char *name)
{
	if (!name || !strcmp(name, "output"))
		return net->nlayers - 1;
	for (int i = 0; i < net->naliases; i++)
		if (!strcmp(net->aliases[i].name, name)) {
			name = net->aliases[i].layer;
			break;
		}
	for (int i = 0; i < net->nlayers; i++)
		if (!strcmp(net->layers[i].name, name))
			return i;
	return -1;
}

/* ---- Cuts and heads --------------------------------------------------------
 * Both reshape the graph an architecture built, before any memory exists:
 * a cut drops the layers below a tensor and makes it the input; a head
 * drops the layers above a tensor and appends the head's. Tensors, layers
 * and parameters are numbered in build order, so both are compactions. */

/* The tensor layer name stands for: its output, or for a feature tap (a
 * layer before the last whose output nothing reads) the map it pools.
 * what says which option named it. */
static int cut_tensor(nn_net *net, const char *name, const char *what, int *tensor)
{
	int l = nn__layer_find(net, name);
	if (!name || l < 0) {
		nn__errmsg(net, "%s has no layer \"%s\" (%s)", net->arch, name ? name : "(null)",
			what);
		return VR_ENOTFOUND;
	}
	int t = net->layers[l].out;
	if (l < net->nlayers - 1 && net->tensors[t].consumers == 0)
		t = net->layers[l].in[0];
	*tensor = t;
	return 0;
}

/* Recounts every tensor's readers from the layers. */
static void count_consumers(nn_net *net)
{
	for (int t = 0; t < net->ntensors; t++)
		net->tensors[t].consumers = 0;
	for (int l = 0; l < net->nlayers; l++)
		for (int i = 0; i < net->layers[l].nin; i++)
			net->tensors[net->layers[l].in[i]].consumers++;
}

/* Keeps the parameters the layers use, renumbered in order. */
static void compact_params(nn_net *net)
{
	int *map = calloc((size_t)net->nparams + 1, sizeof(int)), n = 0;
	if (!map) {
		build_fail(net, VR_ENOMEM, "out of memory building the net");
		return;
	}
	for (int p = 0; p < net->nparams; p++)
		map[p] = -1;
	for (int l = 0; l < net->nlayers; l++) {
		int *ps[4] = { &net->layers[l].w, &net->layers[l].b, &net->layers[l].mean,
			&net->layers[l].var };
		for (int i = 0; i < 4; i++)
			if (*ps[i] >= 0)
				map[*ps[i]] = 0;
	}
	for (int p = 0; p < net->nparams; p++)
		if (map[p] == 0) {
			map[p] = n;
			net->params[n++] = net->params[p];
		}
	for (int l = 0; l < net->nlayers; l++) {
		int *ps[4] = { &net->layers[l].w, &net->layers[l].b, &net->layers[l].mean,
			&net->layers[l].var };
		for (int i = 0; i < 4; i++)
			if (*ps[i] >= 0)
				*ps[i] = map[*ps[i]];
	}
	net->nparams = n;
	free(map);
}

/* Makes tensor t the input: drops every layer up to its producer. A head
 * will follow when head is set, so nothing need be left above. */
static int cut_below(nn_net *net, int t, int head)
{
	const int P = net->tensors[t].producer, nt = net->ntensors;
	int *map = NULL, n = 1, nl = 0;
	if (P < 0)
		return build_fail(net, VR_EINVAL, "\"%s\" is the image: nothing to cut",
			net->input_layer);
	for (int l = P + 1; l < net->nlayers; l++)
		for (int i = 0; i < net->layers[l].nin; i++) {
			int u = net->layers[l].in[i];
			if (u != t && net->tensors[u].producer <= P)
				return build_fail(net, VR_EINVAL, "cannot start the net at \"%s\": it is "
					"inside a residual block (%s above it reads a tensor from below it); "
					"cut at a block's end", net->input_layer, net->layers[l].name);
		}
	if (P == net->nlayers - 1 && !head)
		return build_fail(net, VR_EINVAL, "cannot start the net at its last layer \"%s\"",
			net->input_layer);
	if (!(map = malloc(sizeof(int) * nt)))
		return build_fail(net, VR_ENOMEM, "out of memory building the net");
	snprintf(net->input_from, sizeof(net->input_from), "%s", net->layers[P].name);
	for (int u = 0; u < nt; u++)
		map[u] = u == t ? 0 : net->tensors[u].producer > P ? n++ : -1;
	struct nn__tensor input = net->tensors[t];
	input.producer = -1;
	input.group = 0;
	for (int u = 0; u < nt; u++)
		if (map[u] > 0)
			net->tensors[map[u]] = net->tensors[u];
	net->tensors[0] = input;
	net->ntensors = n;
	for (int l = P + 1; l < net->nlayers; l++, nl++) {
		struct nn__layer *ly = &net->layers[nl];
		*ly = net->layers[l];
		for (int i = 0; i < ly->nin; i++)
			ly->in[i] = map[ly->in[i]];
		ly->out = map[ly->out];
		net->tensors[ly->out].producer = nl;
		/* In place over the input would write the caller's activations'
		 * copy and leave the layer's output without a gradient buffer. */
		if (ly->inplace && ly->in[0] == 0) {
			if (ly->kind == NN__IDENTITY) {
				free(map);
				return build_fail(net, VR_EINVAL, "cannot start the net at \"%s\": the "
					"next layer %s only renames it", net->input_layer, ly->name);
			}
			ly->inplace = 0;
		}
		net->tensors[ly->out].group = ly->inplace ? net->tensors[ly->in[0]].group : ly->out;
	}
	net->nlayers = nl;
	free(map);
	count_consumers(net);
	compact_params(net);
	return net->build_rc;
}

/* Drops every layer above tensor t's producer (and the tensors they made). */
static void cut_above(nn_net *net, int t)
{
	int P = net->tensors[t].producer, nt = 0;
	net->nlayers = P + 1;
	for (int u = 0; u < net->ntensors; u++)
		if (net->tensors[u].producer <= P)
			nt = u + 1;
	net->ntensors = nt;
	count_consumers(net);
	compact_params(net);
}

/* Applies opts' cut and head to the net an architecture built. */
static int reshape(nn_net *net, const struct nn_net_opts *opts)
{
	int t = 0, h = 0, rc, first_fresh;
	if (opts->head_width < 0 || opts->head_width > (1 << 16))
		return build_fail(net, VR_EINVAL, "head_width %d is not in 0..65536", opts->head_width);
	if (opts->head_layer && opts->head_width <= 0)
		return build_fail(net, VR_EINVAL, "head_layer needs head_width > 0");
	if (opts->head_norm && opts->head_width <= 0)
		return build_fail(net, VR_EINVAL, "head_norm needs head_width > 0");
	if (opts->input_layer) {
		snprintf(net->input_layer, sizeof(net->input_layer), "%s", opts->input_layer);
		if (strlen(opts->input_layer) >= sizeof(net->input_layer))
			return build_fail(net, VR_EINVAL, "input_layer name too long");
		if ((rc = cut_tensor(net, opts->input_layer, "input_layer", &t)))
			return net->build_rc = rc;
	}
	const char *at = opts->head_layer ? opts->head_layer : opts->input_layer;
	if (opts->head_width > 0) {
		if (!at)
			return build_fail(net, VR_EINVAL, "head_width needs head_layer or input_layer");
		if ((rc = cut_tensor(net, at, "head_layer", &h)))
			return net->build_rc = rc;
		if (opts->input_layer && net->tensors[h].producer < net->tensors[t].producer)
			return build_fail(net, VR_EINVAL, "head_layer \"%s\" is below the cut \"%s\"",
				at, opts->input_layer);
		if (strlen(at) > 32)
			return build_fail(net, VR_EINVAL, "head_layer name too long");
		snprintf(net->head, sizeof(net->head), "%s:%d%s", at, opts->head_width,
			opts->head_norm ? ":l2" : "");
	} else if (opts->input_layer) {
		snprintf(net->head, sizeof(net->head), "%s:0", opts->input_layer);
	}
	if (opts->head_width > 0) {
		cut_above(net, h);
		if (opts->input_layer)
			t = h;
	}
	if (opts->input_layer && (rc = cut_below(net, t, opts->head_width > 0)))
		return rc;
	first_fresh = net->nparams;
	if (opts->head_width > 0) {
		int x = opts->input_layer ? 0 : h;
		x = nn__conv(net, "head.conv", x, opts->head_width, 1, 1, 0, 1, 1);
		x = nn__relu(net, "head.relu", x);
		x = nn__adaptive_avgpool(net, "head.pool", x, 1, 1);
		x = nn__linear(net, "head.fc", x, net->num_outputs);
		if (opts->head_norm)
			x = nn__l2norm(net, "head.norm", x);
		if (x < 0)
			return x;
	} else if (opts->input_layer) {
		/* The last layer is resized to K: new, whatever the file holds. */
		const struct nn__layer *last = &net->layers[net->nlayers - 1];
		first_fresh = last->w >= 0 ? last->w : net->nparams;
	}
	for (int p = first_fresh; p < net->nparams; p++)
		net->params[p].fresh = 1;
	return net->build_rc;
}

/* ---- Memory planning ---------------------------------------------------- */

static int net_alloc(nn_net *net, size_t bytes, void **out)
{
	void **bufs = realloc(net->bufs, sizeof(void *) * (net->nbufs + 1));
	if (!bufs)
		return VR_ENOMEM;
	net->bufs = bufs;
	int rc = net->b->ops->alloc(net->b, bytes, out);
	if (rc)
		return rc;
	net->bufs[net->nbufs++] = *out;
	return 0;
}

/* Places groups with lifetimes [birth, death] (bytes 0: not needed) into
 * as few buffers as a greedy pass finds: a group takes a buffer whose last
 * occupant died before it was born, the smallest that fits, else the
 * largest (grown). Writes each group's buffer into ptr. */
static int place(nn_net *net, int n, const long *birth, const long *death, const size_t *bytes,
	float **ptr)
{
	int *order = malloc(sizeof(int) * (n ? n : 1));
	int *slot_of = malloc(sizeof(int) * (n ? n : 1));
	size_t *slot_bytes = malloc(sizeof(size_t) * (n ? n : 1));
	long *slot_free = malloc(sizeof(long) * (n ? n : 1));
	void **slot_ptr = NULL;
	int nslots = 0, rc = VR_ENOMEM;
	if (!order || !slot_of || !slot_bytes || !slot_free)
		goto leave;
	int m = 0;
	for (int g = 0; g < n; g++)
		if (bytes[g])
			order[m++] = g;
	for (int i = 1; i < m; i++)      /* insertion sort by birth: nets are small */
		for (int j = i; j > 0 && birth[order[j - 1]] > birth[order[j]]; j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (int i = 0; i < m; i++) {
		int g = order[i], best = -1;
		for (int s = 0; s < nslots; s++) {
			if (slot_free[s] >= birth[g])
				continue;
			if (best < 0) {
				best = s;
				continue;
			}
			int fits = slot_bytes[s] >= bytes[g], best_fits = slot_bytes[best] >= bytes[g];
			if ((fits && (!best_fits || slot_bytes[s] < slot_bytes[best])) ||
			    (!fits && !best_fits && slot_bytes[s] > slot_bytes[best]))
				best = s;
		}
		if (best < 0) {
			best = nslots++;
			slot_bytes[best] = 0;
		}
		if (slot_bytes[best] < bytes[g])
			slot_bytes[best] = bytes[g];
		slot_free[best] = death[g];
		slot_of[g] = best;
	}
	slot_ptr = calloc(nslots ? nslots : 1, sizeof(void *));
	if (!slot_ptr)
		goto leave;
	for (int s = 0; s < nslots; s++)
		if ((rc = net_alloc(net, slot_bytes[s], &slot_ptr[s])))
			goto leave;
	for (int g = 0; g < n; g++)
		ptr[g] = bytes[g] ? slot_ptr[slot_of[g]] : NULL;
	rc = 0;
leave:
	free(order);
	free(slot_of);
	free(slot_bytes);
	free(slot_free);
	free(slot_ptr);
	return rc;
}

static long lmin(long a, long b)
{
	return a < b ? a : b;
}

static long lmax(long a, long b)
{
	return a > b ? a : b;
}

/* Activation storage, per group (indexed by the group's root tensor). */
static int plan_activations(nn_net *net)
{
	const int nt = net->ntensors, L = net->nlayers;
	long *birth = calloc(nt, sizeof(long)), *death = calloc(nt, sizeof(long));
	size_t *bytes = calloc(nt, sizeof(size_t));
	float **ptr = calloc(nt, sizeof(float *));
	int rc = VR_ENOMEM;
	if (!birth || !death || !bytes || !ptr)
		goto leave;
	for (int g = 0; g < nt; g++) {
		birth[g] = L + 1;
		death[g] = -2;
	}
	/* Data: live from the producer to the last reader; in a training net,
	 * all the time. */
	for (int t = 0; t < nt; t++) {
		const struct nn__tensor *x = &net->tensors[t];
		int g = x->group;
		size_t b = sizeof(float) * x->size * net->max_batch;
		bytes[g] = b > bytes[g] ? b : bytes[g];
		birth[g] = lmin(birth[g], x->producer);
		death[g] = lmax(death[g], x->producer);
	}
	for (int l = 0; l < L; l++)
		for (int i = 0; i < net->layers[l].nin; i++) {
			int g = net->tensors[net->layers[l].in[i]].group;
			death[g] = lmax(death[g], l);
		}
	if (!net->inference_only)
		for (int g = 0; g < nt; g++) {
			birth[g] = -1;
			death[g] = L;
		}
	if ((rc = place(net, nt, birth, death, bytes, ptr)))
		goto leave;
	for (int t = 0; t < nt; t++)
		net->tensors[t].data = ptr[net->tensors[t].group];
	if (net->inference_only)
		goto leave;

	/* Gradients, in backward steps s = L - 1 - l: written first by the
	 * last reader of the tensor, read last by its producer. The input's
	 * gradient is made on request (net->dinput). */
	for (int g = 0; g < nt; g++) {
		birth[g] = L + 1;
		death[g] = -2;
		bytes[g] = 0;
	}
	for (int l = 0; l <= net->out_layer; l++)
		for (int i = 0; i < net->layers[l].nin; i++) {
			int g = net->tensors[net->layers[l].in[i]].group;
			birth[g] = lmin(birth[g], L - 1 - l);
			death[g] = lmax(death[g], L - 1 - l);
		}
	int gout = net->tensors[net->layers[net->out_layer].out].group;
	birth[gout] = lmin(birth[gout], L - 2 - net->out_layer);
	for (int t = 0; t < nt; t++) {
		const struct nn__tensor *x = &net->tensors[t];
		int g = x->group;
		if (birth[g] > L || g == net->tensors[0].group)
			continue;
		if (x->producer >= 0 && x->producer <= net->out_layer)
			death[g] = lmax(death[g], L - 1 - x->producer);
		size_t b = sizeof(float) * x->size * net->max_batch;
		bytes[g] = b > bytes[g] ? b : bytes[g];
	}
	if ((rc = place(net, nt, birth, death, bytes, ptr)))
		goto leave;
	for (int t = 0; t < nt; t++)
		net->tensors[t].grad = ptr[net->tensors[t].group];
leave:
	free(birth);
	free(death);
	free(bytes);
	free(ptr);
	return rc;
}

/* ---- Fusion --------------------------------------------------------------- */

/* Layer l + 1 if it is of kind and the only reader of layer l's output,
 * neither being past the net's output layer; else -1. */
static int fusable_next(const nn_net *net, int l, int kind)
{
	const struct nn__layer *ly = &net->layers[l], *nx = &net->layers[l + 1];
	if (l + 1 > net->out_layer || nx->kind != kind || nx->nin != 1 || nx->in[0] != ly->out ||
	    net->tensors[ly->out].consumers != 1)
		return -1;
	return l + 1;
}

/* Convolution l absorbs the batch norm and the activation after it: it
 * writes the last one's output, whose storage now starts at l. */
static void conv_fuse(nn_net *net, int l)
{
	struct nn__layer *ly = &net->layers[l];
	int last = l, j;
	if ((j = fusable_next(net, last, NN__BN)) >= 0) {
		ly->post_bn = j;
		ly->u.conv.post_bn = 1;
		ly->u.conv.bn_eps = net->layers[j].u.bn.eps;
		last = j;
	}
	if ((j = fusable_next(net, last, NN__ACT)) >= 0) {
		ly->post_act_layer = j;
		ly->u.conv.post_act = net->layers[j].u.act;
		last = j;
	}
	for (int m = l + 1; m <= last; m++) {
		net->layers[m].fused = 1;
		net->tensors[net->layers[m].out].producer = l;
	}
	ly->out = net->layers[last].out;
}

/* Undoes conv_fuse when the backend cannot run the fused layers. */
static void conv_unfuse(nn_net *net, int l)
{
	struct nn__layer *ly = &net->layers[l];
	int first = ly->post_bn >= 0 ? ly->post_bn : ly->post_act_layer;
	if (first < 0)
		return;
	ly->out = net->layers[first].in[0];
	for (int m = first; m < net->nlayers && net->layers[m].fused; m++) {
		net->layers[m].fused = 0;
		net->tensors[net->layers[m].out].producer = m;
	}
	ly->post_bn = ly->post_act_layer = -1;
	ly->u.conv.post_bn = ly->u.conv.post_act = 0;
	ly->u.conv.bn_eps = 0;
}

/* ---- Layouts ---------------------------------------------------------------
 * A net on a backend with layouts (backend.h) keeps each planned layer's
 * output in the layout its plan chose when every reader takes it: conv,
 * pooling and LRN read any layout; ReLU, dropout's copy, an identity and
 * the residual add pass theirs on (a residual add's two inputs must
 * agree: the later one's producer is asked for the earlier one's layout);
 * fully connected and padding read NCHW, and so does batch norm in an
 * inference net (fused into its conv, or on NCHW). The edges convert:
 * the input is NCHW (the first conv reorders it), and an output or
 * feature read is downloaded through layout_download. Where a plan
 * refuses a layout, or an add's inputs still differ, that tensor is made
 * NCHW and the net planned again.
 * A training net does the same with plans that also run backward
 * (layout_bwd): a tensor's gradient is in the tensor's layout, so the
 * elementwise backward ops (ReLU's, the add's, accumulation) run on them
 * unchanged and each backward primitive reads dy and writes dx without a
 * reorder. Its output is NCHW (the output gradient comes from the caller),
 * and so is what a dropout with p > 0 reads: its mask is drawn per
 * element index, which must be NCHW's to match every other backend. */

static int use_layouts(const nn_net *net)
{
	return net->b->ops->plan_layout && net->b->ops->layout_download;
}

static int reads(const struct nn__layer *ly, int t)
{
	return !ly->fused && (ly->in[0] == t || (ly->nin > 1 && ly->in[1] == t));
}

/* may[t]: tensor t may be in a backend layout. From the last tensor down,
 * so a pass-through reader's output is decided before its input. */
static void layouts_allowed(const nn_net *net, const char *plain, char *may)
{
	for (int t = net->ntensors - 1; t >= 0; t--) {
		int ok = t > 0 && !plain[t] &&
			(net->inference_only || t != net->layers[net->out_layer].out);
		for (int l = 0; ok && l < net->nlayers; l++) {
			const struct nn__layer *ly = &net->layers[l];
			if (!reads(ly, t))
				continue;
			switch (ly->kind) {
			case NN__CONV:
			case NN__POOL:
			case NN__LRN:
				break;
			case NN__DROPOUT:
				ok = (net->inference_only || ly->u.p == 0.0f) && may[ly->out];
				break;
			case NN__BN:
				ok = !net->inference_only;  /* inference fuses it, or runs NCHW */
				break;
			case NN__ACT:
			case NN__IDENTITY:
			case NN__ADD:
				ok = may[ly->out];
				break;
			default:
				ok = 0;
			}
		}
		may[t] = ok;
	}
}

/* The layout layer l's output is asked for: NCHW when a reader needs it,
 * the other input's when a residual add reads it beside an earlier tensor,
 * else the plan's choice (-1). */
static int layout_request(const nn_net *net, const char *may, int l)
{
	const int t = net->layers[l].out;
	if (!may[t])
		return 0;
	for (int m = l + 1; m < net->nlayers; m++) {
		const struct nn__layer *ly = &net->layers[m];
		if (ly->kind != NN__ADD || !reads(ly, t))
			continue;
		int u = ly->in[0] == t ? ly->in[1] : ly->in[0];
		if (net->tensors[u].producer < l)
			return net->tensors[u].layout;
	}
	return -1;
}

static void set_layouts(struct nn__layer *ly, int in, int out, int bwd)
{
	switch (ly->kind) {
	case NN__CONV:
		ly->u.conv.in_layout = in;
		ly->u.conv.out_layout = out;
		ly->u.conv.layout_bwd = bwd;
		break;
	case NN__POOL:
		ly->u.pool.in_layout = in;
		ly->u.pool.out_layout = out;
		ly->u.pool.layout_bwd = bwd;
		break;
	case NN__LRN:
		ly->u.lrn.in_layout = in;
		ly->u.lrn.out_layout = out;
		ly->u.lrn.layout_bwd = bwd;
		break;
	case NN__BN:
		ly->u.bn.in_layout = in;
		ly->u.bn.out_layout = out;
		ly->u.bn.layout_bwd = bwd;
		break;
	}
}

static void free_plans(nn_net *net)
{
	for (int l = 0; l < net->nlayers; l++)
		if (net->layers[l].plan) {
			net->b->ops->plan_free(net->b, net->layers[l].plan);
			net->layers[l].plan = NULL;
		}
	net->ws_bytes = 0;
}

/* Plans every layer (fusing and choosing layouts where the backend can),
 * and the workspace the largest asks for. *bad >= 0: tensor *bad must be
 * NCHW (plain[*bad]) and the net planned again. */
static int plan_layers(nn_net *net, const char *plain, int *bad)
{
	struct nn_backend *b = net->b;
	const int lay = use_layouts(net), bwd = lay && !net->inference_only;
	char *may = calloc(net->ntensors, 1);
	int rc = 0;
	*bad = -1;
	if (!may)
		return VR_ENOMEM;
	if (lay)
		layouts_allowed(net, plain, may);
	for (int t = 0; t < net->ntensors; t++)
		net->tensors[t].layout = 0;
	for (int l = 0; l < net->nlayers; l++) {
		struct nn__layer *ly = &net->layers[l];
		int kind = ly->kind == NN__CONV ? NN_OP_CONV : ly->kind == NN__POOL ? NN_OP_POOL :
			ly->kind == NN__LRN ? NN_OP_LRN : ly->kind == NN__FC ? NN_OP_FC :
			ly->kind == NN__BN ? NN_OP_BN : 0;
		const int in = net->tensors[ly->in[0]].layout;
		size_t ws = 0;
		if (ly->fused)
			continue;
		if (!kind) {
			if (ly->kind == NN__ADD && net->tensors[ly->in[1]].layout != in) {
				int a = ly->in[0], c = ly->in[1];
				if (net->tensors[a].producer < net->tensors[c].producer) {
					a = ly->in[1];     /* the later one first */
					c = ly->in[0];
				}
				*bad = plain[a] ? c : a;
				goto leave;
			}
			if (ly->kind == NN__ACT || ly->kind == NN__DROPOUT || ly->kind == NN__IDENTITY ||
			    ly->kind == NN__ADD)
				net->tensors[ly->out].layout = in;
			continue;
		}
		int fused = 0;
		if (kind == NN_OP_CONV && net->inference_only && b->ops->conv_fwd_post) {
			conv_fuse(net, l);
			fused = ly->u.conv.post_bn || ly->u.conv.post_act;
		}
		int out = lay ? layout_request(net, may, l) : 0;
		set_layouts(ly, in, out, bwd);
		rc = b->ops->plan_create(b, kind, &ly->u, &ly->plan, &ws);
		if (rc == VR_EUNSUPPORTED && fused) {
			conv_unfuse(net, l);
			out = lay ? layout_request(net, may, l) : 0;
			set_layouts(ly, in, out, bwd);
			rc = b->ops->plan_create(b, kind, &ly->u, &ly->plan, &ws);
		}
		if (rc == VR_EUNSUPPORTED && (in || out > 0)) {
			*bad = in ? ly->in[0] : ly->out;
			rc = 0;
			goto leave;
		}
		if (rc) {
			nn__errmsg(net, "%s: the %s backend could not plan this layer", ly->name,
				b->name);
			goto leave;
		}
		if (lay && kind != NN_OP_FC)
			net->tensors[ly->out].layout = b->ops->plan_layout(b, ly->plan);
		if (ws > net->ws_bytes)
			net->ws_bytes = ws;
	}
leave:
	free(may);
	return rc;
}

static int finalize(nn_net *net)
{
	struct nn_backend *b = net->b;
	int rc;
	for (int l = 0; l < net->nlayers; l++) {
		const struct nn__layer *ly = &net->layers[l];
		if (ly->inplace && net->tensors[ly->in[0]].consumers != 1) {
			nn__errmsg(net, "%s: runs in place but its input has other readers", ly->name);
			return VR_EINVAL;
		}
	}
	/* The arena: trainable tensors, then buffers. */
	size_t off = 0;
	for (int pass = 1; pass >= 0; pass--) {
		for (int i = 0; i < net->nparams; i++) {
			struct nn__param *p = &net->params[i];
			if (p->trainable != pass)
				continue;
			p->offset = off;
			off += (p->numel + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
		}
		if (pass == 1)
			net->trainable_count = off;
	}
	net->arena_count = off;
	if (!(net->written = calloc(net->ntensors, 1)))
		return VR_ENOMEM;
	if ((rc = net_alloc(net, sizeof(float) * (off ? off : 1), (void **)&net->arena)) ||
	    (rc = b->ops->fill(b, net->arena, 0.0f, off)))
		goto fail;
	if (!net->inference_only) {
		size_t tc = net->trainable_count;
		if ((rc = net_alloc(net, sizeof(float) * (tc ? tc : 1), (void **)&net->grads)) ||
		    (rc = b->ops->fill(b, net->grads, 0.0f, tc)))
			goto fail;
	}
	/* Plans; each retry makes one more tensor NCHW. */
	char *plain = calloc(net->ntensors, 1);
	int bad = -1;
	if (!plain)
		return VR_ENOMEM;
	for (int tries = 0; tries <= net->ntensors; tries++) {
		if ((rc = plan_layers(net, plain, &bad)) || bad < 0)
			break;
		free_plans(net);
		plain[bad] = 1;
	}
	free(plain);
	if (!rc && bad >= 0) {
		nn__errmsg(net, "the %s backend's layouts do not settle", b->name);
		rc = VR_EDEVICE;
	}
	if (rc)
		return rc;
	/* Never NULL: kernels may form (unused) pointers into it. */
	if ((rc = net_alloc(net, net->ws_bytes ? net->ws_bytes : 64, &net->ws)))
		goto fail;
	if ((rc = plan_activations(net)))
		goto fail;
	return 0;
fail:
	nn__errmsg(net, "allocating the net's memory on the %s backend: %s", b->name,
		rc == VR_ENOMEM ? "out of memory" : "backend error");
	return rc;
}

/* ---- Creation and queries ------------------------------------------------ */

void nn_net_destroy(nn_net *net)
{
	if (!net)
		return;
	for (int l = 0; l < net->nlayers; l++)
		if (net->layers[l].plan)
			net->b->ops->plan_free(net->b, net->layers[l].plan);
	for (int i = 0; i < net->nbufs; i++)
		net->b->ops->free(net->b, net->bufs[i]);
	free(net->bufs);
	free(net->written);
	free(net->layers);
	free(net->tensors);
	free(net->params);
	free(net);
}

int nn_net_create(nn_backend *b, const char *arch, const struct nn_net_opts *opts, nn_net **out,
	char *errbuf, size_t errlen)
{
	const struct nn__arch *a = nn__arch_find(arch);
	if (!a) {
		*out = NULL;
		if (errbuf)
			snprintf(errbuf, errlen, "unknown architecture \"%s\"", arch ? arch : "(null)");
		return VR_ENOTFOUND;
	}
	return nn__net_create_with(b, a, opts, out, errbuf, errlen);
}

int nn__net_create_with(nn_backend *b, const struct nn__arch *a, const struct nn_net_opts *opts,
	nn_net **out, char *errbuf, size_t errlen)
{
	static const struct nn_net_opts defaults;
	nn_net *net = NULL;
	int rc;
	*out = NULL;
	if (!opts)
		opts = &defaults;
	net = calloc(1, sizeof(*net));
	if (!net)
		return VR_ENOMEM;
	net->b = b;
	net->precision = nn_backend_precision(b);
	snprintf(net->arch, sizeof(net->arch), "%s", a->info.name);
	net->num_outputs = opts->num_outputs > 0 ? opts->num_outputs : a->info.num_outputs;
	net->input_size = opts->input_size > 0 ? opts->input_size : a->info.input_size;
	net->max_batch = opts->max_batch > 0 ? opts->max_batch : 32;
	net->inference_only = opts->inference_only;
	memcpy(net->mean, a->info.mean, sizeof(net->mean));
	memcpy(net->std, a->info.std, sizeof(net->std));
	rc = VR_EINVAL;
	if (opts->num_outputs < 0 || opts->input_size < 0 || opts->max_batch < 0 ||
	    net->max_batch > 65536 || net->num_outputs > (1 << 24)) {
		nn__errmsg(net, "bad options: num_outputs %d, input_size %d, max_batch %d",
			opts->num_outputs, opts->input_size, opts->max_batch);
		goto fail;
	}
	if (net->input_size < a->info.min_input_size || net->input_size > 4096) {
		nn__errmsg(net, "%s needs an input size from %d to 4096, not %d", a->info.name,
			a->info.min_input_size, net->input_size);
		goto fail;
	}
	if ((rc = new_tensor(net, 3, net->input_size, net->input_size, -1)) < 0)
		goto fail;
	if ((rc = a->build(net)) < 0 || (rc = net->build_rc) || (rc = reshape(net, opts)))
		goto fail;
	net->out_layer = nn__layer_find(net, opts->output_layer);
	if (net->out_layer < 0) {
		rc = VR_ENOTFOUND;
		nn__errmsg(net, "%s has no layer \"%s\"", a->info.name, opts->output_layer);
		goto fail;
	}
	if ((rc = finalize(net)))
		goto fail;
	*out = net;
	return 0;
fail:
	if (errbuf)
		snprintf(errbuf, errlen, "%s", net->errmsg[0] ? net->errmsg : "out of memory");
	nn_net_destroy(net);
	return rc < 0 ? rc : VR_EINVAL;
}

const char *nn_net_errmsg(const nn_net *net)
{
	return net->errmsg;
}

const char *nn_net_arch(const nn_net *net)
{
	return net->arch;
}

int nn_net_precision(const nn_net *net)
{
	return net->precision;
}

int nn_net_num_outputs(const nn_net *net)
{
	return net->num_outputs;
}

int nn_net_input_size(const nn_net *net)
{
	return net->input_size;
}

int nn_net_max_batch(const nn_net *net)
{
	return net->max_batch;
}

static const struct nn__tensor *out_tensor(const nn_net *net)
{
	return &net->tensors[net->layers[net->out_layer].out];
}

const char *nn_net_input_layer(const nn_net *net)
{
	return net->input_from[0] ? net->input_from : NULL;
}

void nn_net_input_dims(const nn_net *net, int *c, int *h, int *w)
{
	*c = net->tensors[0].c;
	*h = net->tensors[0].h;
	*w = net->tensors[0].w;
}

size_t nn_net_input_count(const nn_net *net)
{
	return net->tensors[0].size;
}

void nn_net_output_dims(const nn_net *net, int *c, int *h, int *w)
{
	const struct nn__tensor *t = out_tensor(net);
	*c = t->c;
	*h = t->h;
	*w = t->w;
}

size_t nn_net_output_size(const nn_net *net)
{
	return out_tensor(net)->size;
}

int nn_net_layer_size(const nn_net *net, const char *layer, size_t *size)
{
	int l = nn__layer_find(net, layer);
	if (l < 0)
		return VR_ENOTFOUND;
	*size = net->tensors[net->layers[l].out].size;
	return 0;
}

void nn_net_norm(const nn_net *net, float mean[3], float std[3])
{
	memcpy(mean, net->mean, sizeof(net->mean));
	memcpy(std, net->std, sizeof(net->std));
}

void nn_net_set_norm(nn_net *net, const float mean[3], const float std[3])
{
	memcpy(net->mean, mean, sizeof(net->mean));
	memcpy(net->std, std, sizeof(net->std));
}

size_t nn_net_param_count(const nn_net *net)
{
	return net->arena_count;
}

size_t nn_net_trainable_count(const nn_net *net)
{
	return net->trainable_count;
}

int nn_net_tensor_count(const nn_net *net)
{
	return net->nparams;
}

int nn_net_tensor_at(const nn_net *net, int i, struct nn_tensor_info *out)
{
	if (i < 0 || i >= net->nparams)
		return VR_EINVAL;
	const struct nn__param *p = &net->params[i];
	out->name = p->name;
	out->ndim = p->ndim;
	memset(out->shape, 0, sizeof(out->shape));
	memcpy(out->shape, p->shape, sizeof(int) * p->ndim);
	out->numel = p->numel;
	out->offset = p->offset;
	out->trainable = p->trainable;
	return 0;
}

int nn_net_tensor_find(const nn_net *net, const char *name, struct nn_tensor_info *out)
{
	for (int i = 0; i < net->nparams; i++)
		if (!strcmp(net->params[i].name, name))
			return nn_net_tensor_at(net, i, out);
	return VR_ENOTFOUND;
}

int nn_net_params_copy(nn_net *dst, nn_net *src, int *copied)
{
	float *from = NULL, *to = NULL;
	int rc = VR_ENOMEM, n = 0;
	if (dst->b != src->b) {
		nn__errmsg(dst, "copying parameters between nets on different backends");
		return VR_EINVAL;
	}
	if (!(from = malloc(sizeof(float) * (src->arena_count ? src->arena_count : 1))) ||
	    !(to = malloc(sizeof(float) * (dst->arena_count ? dst->arena_count : 1))))
		goto leave;
	if ((rc = nn_net_params_get(src, from)) || (rc = nn_net_params_get(dst, to)))
		goto leave;
	for (int i = 0; i < dst->nparams; i++) {
		const struct nn__param *d = &dst->params[i];
		for (int j = 0; j < src->nparams; j++) {
			const struct nn__param *p = &src->params[j];
			if (strcmp(d->name, p->name) || d->ndim != p->ndim ||
			    memcmp(d->shape, p->shape, sizeof(int) * d->ndim))
				continue;
			memcpy(to + d->offset, from + p->offset, sizeof(float) * d->numel);
			n++;
			break;
		}
	}
	rc = nn_net_params_set(dst, to);
leave:
	if (rc)
		nn__errmsg(dst, "copying parameters: %s", rc == VR_ENOMEM ? "out of memory" :
			"backend error");
	if (copied)
		*copied = rc ? 0 : n;
	free(from);
	free(to);
	return rc;
}

int nn_net_params_get(nn_net *net, float *host)
{
	return net->b->ops->download(net->b, host, net->arena, sizeof(float) * net->arena_count);
}

int nn_net_params_set(nn_net *net, const float *host)
{
	net->b->param_version++;
	return net->b->ops->upload(net->b, net->arena, host, sizeof(float) * net->arena_count);
}

int nn_net_grads_get(nn_net *net, float *host)
{
	if (net->inference_only)
		return VR_ESTATE;
	return net->b->ops->download(net->b, host, net->grads, sizeof(float) * net->trainable_count);
}

int nn_net_init(nn_net *net, uint64_t seed)
{
	float *host = malloc(sizeof(float) * (net->arena_count ? net->arena_count : 1));
	int rc;
	if (!host)
		return VR_ENOMEM;
	memset(host, 0, sizeof(float) * net->arena_count);
	for (int i = 0; i < net->nparams; i++) {
		const struct nn__param *p = &net->params[i];
		float *d = host + p->offset;
		uint64_t s = nn_splitmix64(seed, (uint64_t)i);
		float bound = p->fan_in > 0 ? 1.0f / sqrtf((float)p->fan_in) : 0.0f;
		for (size_t j = 0; j < p->numel; j++)
			d[j] = p->init == NN__INIT_UNIFORM ? (2.0f * nn_uniform01(s, j) - 1.0f) * bound :
				p->init == NN__INIT_ONE ? 1.0f : 0.0f;
	}
	rc = nn_net_params_set(net, host);
	free(host);
	if (rc) {
		nn__errmsg(net, "uploading the initial parameters failed");
		return rc;
	}
	net->seed = seed;
	net->steps = 0;
	net->can_backward = 0;
	return 0;
}

void nn_net_set_rng(nn_net *net, uint64_t seed, uint64_t step)
{
	net->seed = seed;
	net->steps = step;
}

/* ---- Passes --------------------------------------------------------------- */

static float *param(const nn_net *net, int p)
{
	return p >= 0 ? net->arena + net->params[p].offset : NULL;
}

static float *pgrad(const nn_net *net, int p)
{
	return p >= 0 && net->params[p].trainable ? net->grads + net->params[p].offset : NULL;
}

static int layer_fwd(nn_net *net, int li, int n, int train)
{
	struct nn_backend *b = net->b;
	const struct nn_backend_ops *o = b->ops;
	struct nn__layer *l = &net->layers[li];
	const struct nn__tensor *xt = &net->tensors[l->in[0]], *yt = &net->tensors[l->out];
	const float *x = xt->data;
	float *y = yt->data;
	size_t count = (size_t)n * yt->size;
	if (l->fused)
		return 0;              /* run by the convolution before it */
	switch (l->kind) {
	case NN__CONV:
		if (l->u.conv.post_bn || l->u.conv.post_act) {
			const struct nn__layer *bn = l->post_bn >= 0 ? &net->layers[l->post_bn] : NULL;
			return o->conv_fwd_post(b, l->plan, &l->u.conv, n, x, param(net, l->w),
				param(net, l->b), bn ? param(net, bn->w) : NULL,
				bn ? param(net, bn->b) : NULL, bn ? param(net, bn->mean) : NULL,
				bn ? param(net, bn->var) : NULL, y, net->ws);
		}
		return o->conv_fwd(b, l->plan, &l->u.conv, n, x, param(net, l->w), param(net, l->b),
			y, net->ws);
	case NN__POOL:
		return o->pool_fwd(b, l->plan, &l->u.pool, n, x, y);
	case NN__ACT:
		return o->act_fwd(b, l->u.act, count, x, y);
	case NN__LRN:
		return o->lrn_fwd(b, l->plan, &l->u.lrn, n, x, y, net->ws);
	case NN__FC:
		return o->fc_fwd(b, l->plan, &l->u.fc, n, x, param(net, l->w), param(net, l->b), y);
	case NN__DROPOUT:
		l->seed = 0;
		if (!train || l->u.p == 0.0f)
			return o->copy(b, y, x, sizeof(float) * count);
		l->seed = nn_splitmix64(nn_splitmix64(net->seed, net->steps), (uint64_t)li) | 1;
		return o->dropout_fwd(b, count, l->u.p, l->seed, x, y);
	case NN__BN:
		return o->bn_fwd(b, l->plan, &l->u.bn, n, x, param(net, l->w),
			param(net, l->b), param(net, l->mean), param(net, l->var), y);
	case NN__ADD:
		return o->add(b, count, x, net->tensors[l->in[1]].data, y);
	case NN__IDENTITY:
		return 0;
	case NN__PAD:
		return o->pad_fwd(b, &l->u.pad, n, x, y);
	case NN__L2NORM:
		return o->l2norm_fwd(b, n, (int)yt->size, l->u.eps, x, y);
	}
	return VR_EINVAL;
}

void nn_net_set_stop(nn_net *net, int (*stop)(void *arg), void *arg)
{
	net->stop = stop;
	net->stop_arg = arg;
}

void nn__net_profile(nn_net *net, double *sec)
{
	net->prof = sec;
}

/* With profiling on: waits for the backend and reads the clock. */
static int prof_mark(nn_net *net, double *t)
{
	struct timespec ts;
	int rc = net->b->ops->sync(net->b);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	*t = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
	return rc;
}

/* Profiling brackets around one layer's pass; no-ops when it is off. */
static int prof_begin(nn_net *net, double *t0)
{
	return net->prof ? prof_mark(net, t0) : 0;
}

static int prof_end(nn_net *net, int slot, double t0)
{
	double t1;
	int rc;
	if (!net->prof)
		return 0;
	if ((rc = prof_mark(net, &t1)))
		return rc;
	net->prof[slot] += t1 - t0;
	return 0;
}

/* Where a forward's input comes from: normalised host floats, host
 * bytes, or images of a set. */
struct source {
	const float *x;
	const uint8_t *const *images;
	const nn_images *set;
	const uint32_t *idx;
};

/* Puts n images of src into the input tensor on the backend; bytes are
 * normalised there with the net's mean and std: (byte / 255 - mean) / std. */
static int load_input(nn_net *net, const struct source *src, int n)
{
	const struct nn_backend_ops *o = net->b->ops;
	float mul[3], add[3], *x = net->tensors[0].data;
	if (src->x)
		return o->upload(net->b, x, src->x, sizeof(float) * n * net->tensors[0].size);
	if (net->input_layer[0]) {
		nn__errmsg(net, "this net starts at \"%s\": its input is that layer's activations "
			"(nn_net_forward), not images", net->input_layer);
		return VR_EINVAL;
	}
	for (int c = 0; c < 3; c++) {
		mul[c] = 1.0f / (255.0f * net->std[c]);
		add[c] = -net->mean[c] / net->std[c];
	}
	if (src->images) {
		for (int i = 0; i < n; i++)
			if (!src->images[i]) {
				nn__errmsg(net, "image %d of the batch is NULL", i);
				return VR_EINVAL;
			}
		return o->input_u8(net->b, n, net->input_size, src->images, mul, add, x);
	}
	if (src->set->b != net->b || src->set->size != net->input_size) {
		nn__errmsg(net, "the image set is on another backend or of %d px, not %d",
			src->set->size, net->input_size);
		return VR_EINVAL;
	}
	for (int i = 0; i < n; i++)
		if (src->idx[i] >= src->set->n) {
			nn__errmsg(net, "image %u is not in the set of %zu", src->idx[i], src->set->n);
			return VR_EINVAL;
		}
	return o->input_u8_gather(net->b, n, net->input_size, src->set->data, src->idx, mul, add,
		x);
}

/* Loads the input from src and runs layers 0 to last. */
static int run_forward(nn_net *net, const struct source *src, int n, int last, int train)
{
	int rc;
	if (n < 1 || n > net->max_batch) {
		nn__errmsg(net, "batch of %d images; this net takes 1 to %d", n, net->max_batch);
		return VR_EINVAL;
	}
	net->can_backward = 0;
	if ((rc = load_input(net, src, n))) {
		if (rc != VR_EINVAL)
			nn__errmsg(net, "loading the input failed");
		return rc;
	}
	if (train)
		net->steps++;
	for (int l = 0; l <= last; l++) {
		double t0 = 0;
		if (net->stop && net->stop(net->stop_arg)) {
			nn__errmsg(net, "stopped before %s (layer %d of %d): the caller's stop said so",
				net->layers[l].name, l + 1, last + 1);
			return VR_ECANCELLED;
		}
		if ((rc = prof_begin(net, &t0)) || (rc = layer_fwd(net, l, n, train)) ||
		    (rc = prof_end(net, 2 * l, t0))) {
			nn__errmsg(net, "%s: forward failed on the %s backend", net->layers[l].name,
				net->b->name);
			return rc;
		}
	}
	net->last_n = n;
	return 0;
}

static int download_output(nn_net *net, int layer, int n, float *out)
{
	const struct nn__tensor *t = &net->tensors[net->layers[layer].out];
	int rc = t->layout ? net->b->ops->layout_download(net->b, t->layout, n, t->data, out) :
		net->b->ops->download(net->b, out, t->data, sizeof(float) * n * t->size);
	if (rc)
		nn__errmsg(net, "downloading %s's output failed", net->layers[layer].name);
	return rc;
}

static int forward(nn_net *net, const struct source *src, int n, int train, float *out)
{
	int rc = run_forward(net, src, n, net->out_layer, train);
	if (!rc && (rc = download_output(net, net->out_layer, n, out)) == 0)
		net->can_backward = !net->inference_only;
	return rc;
}

int nn_net_forward(nn_net *net, const float *input, int n, int train, float *out)
{
	if (!input)
		return VR_EINVAL;
	return forward(net, &(struct source){ .x = input }, n, train, out);
}

int nn_net_forward_u8(nn_net *net, const uint8_t *const *images, int n, int train, float *out)
{
	if (!images)
		return VR_EINVAL;
	return forward(net, &(struct source){ .images = images }, n, train, out);
}

int nn_net_forward_images(nn_net *net, const nn_images *set, const uint32_t *idx, int n,
	int train, float *out)
{
	if (!set || !idx)
		return VR_EINVAL;
	return forward(net, &(struct source){ .set = set, .idx = idx }, n, train, out);
}

int nn_net_features(nn_net *net, const char *layer, const float *input, int n, float *out)
{
	int l = nn__layer_find(net, layer);
	int rc;
	if (l < 0) {
		nn__errmsg(net, "%s has no layer \"%s\"", net->arch, layer ? layer : "(null)");
		return VR_ENOTFOUND;
	}
	if (!input)
		return VR_EINVAL;
	const struct nn__layer *ly = &net->layers[l];
	const int maker = net->tensors[ly->out].producer;
	/* a conv that absorbed layers writes their output, not its own; a fused
	 * layer's output is written only when it is the last of its chain */
	if ((maker == l && (ly->post_bn >= 0 || ly->post_act_layer >= 0)) ||
	    (ly->fused && net->layers[maker].out != ly->out)) {
		nn__errmsg(net, "%s is fused with the layers around it in this inference net on the "
			"%s backend; name the last of them, or make the net for training", layer,
			net->b->name);
		return VR_EUNSUPPORTED;
	}
	if ((rc = run_forward(net, &(struct source){ .x = input }, n, l, 0)))
		return rc;
	return download_output(net, l, n, out);
}

/* One layer's backward: parameter gradients, then input gradients for the
 * inputs that need one (acc when another reader already wrote it). */
static int layer_bwd(nn_net *net, int li, int n, int want_dinput, char *written)
{
	struct nn_backend *b = net->b;
	const struct nn_backend_ops *o = b->ops;
	struct nn__layer *l = &net->layers[li];
	const struct nn__tensor *xt = &net->tensors[l->in[0]], *yt = &net->tensors[l->out];
	const float *x = xt->data, *y = yt->data, *dy = yt->grad;
	int want = l->in[0] != 0 || want_dinput;
	float *dx = want ? xt->grad : NULL;
	int acc = written[l->in[0]];
	size_t count = (size_t)n * yt->size;
	int rc = 0;
	switch (l->kind) {
	case NN__CONV:
		if ((rc = o->conv_bwd_filter(b, l->plan, &l->u.conv, n, x, dy, pgrad(net, l->w),
			     net->ws)))
			return rc;
		if (l->b >= 0 && (rc = o->conv_bwd_bias(b, l->plan, &l->u.conv, n, dy,
					  pgrad(net, l->b))))
			return rc;
		if (dx)
			rc = o->conv_bwd_data(b, l->plan, &l->u.conv, n, dy, param(net, l->w), dx, acc,
				net->ws);
		break;
	case NN__POOL:
		if (dx)
			rc = o->pool_bwd(b, l->plan, &l->u.pool, n, x, y, dy, dx, acc);
		break;
	case NN__ACT:
		if (dx)
			rc = o->act_bwd(b, l->u.act, count, y, dy, dx, acc);
		break;
	case NN__LRN:
		if (dx)
			rc = o->lrn_bwd(b, l->plan, &l->u.lrn, n, x, y, dy, dx, acc, net->ws);
		break;
	case NN__FC:
		if ((rc = o->fc_bwd_weights(b, l->plan, &l->u.fc, n, x, dy, pgrad(net, l->w),
			     pgrad(net, l->b))))
			return rc;
		if (dx)
			rc = o->fc_bwd_data(b, l->plan, &l->u.fc, n, dy, param(net, l->w), dx, acc);
		break;
	case NN__DROPOUT:
		if (dx)
			rc = l->seed ? o->dropout_bwd(b, count, l->u.p, l->seed, dy, dx, acc) :
				o->accumulate(b, count, dy, dx, acc);
		break;
	case NN__BN:
		rc = o->bn_bwd(b, l->plan, &l->u.bn, n, x, param(net, l->w),
			param(net, l->mean), param(net, l->var), dy, dx, acc, pgrad(net, l->w),
			pgrad(net, l->b));
		break;
	case NN__ADD:
		/* Both inputs get dy; x + x gets it twice. */
		for (int i = 0; i < 2 && !rc; i++) {
			int t = l->in[i];
			if (t == 0 && !want_dinput)
				continue;
			rc = o->accumulate(b, count, dy, net->tensors[t].grad, written[t]);
			written[t] = 1;
		}
		return rc;
	case NN__IDENTITY:
		break;                 /* in place: the gradient is already there */
	case NN__PAD:
		if (dx)
			rc = o->pad_bwd(b, &l->u.pad, n, dy, dx, acc);
		break;
	case NN__L2NORM:
		if (dx)
			rc = o->l2norm_bwd(b, n, (int)yt->size, l->u.eps, x, dy, dx, acc);
		break;
	}
	if (dx)
		written[l->in[0]] = 1;
	return rc;
}

int nn_net_backward(nn_net *net, const float *dout, float *dinput)
{
	struct nn_backend *b = net->b;
	char *written = net->written;
	int rc, n = net->last_n;
	if (net->inference_only || !net->can_backward) {
		nn__errmsg(net, net->inference_only ? "backward on an inference-only net" :
			"backward needs a forward (nn_net_forward) first");
		return VR_ESTATE;
	}
	if (dinput && !net->dinput) {
		size_t bytes = sizeof(float) * net->tensors[0].size * net->max_batch;
		if ((rc = net_alloc(net, bytes, (void **)&net->dinput))) {
			nn__errmsg(net, "allocating the input gradient failed");
			return rc;
		}
		net->tensors[0].grad = net->dinput;
	}
	memset(written, 0, net->ntensors);
	const struct nn__tensor *ot = out_tensor(net);
	if ((rc = b->ops->upload(b, ot->grad, dout, sizeof(float) * n * ot->size))) {
		nn__errmsg(net, "uploading the output gradient failed");
		return rc;
	}
	written[net->layers[net->out_layer].out] = 1;
	for (int l = net->out_layer; l >= 0; l--) {
		if (!written[net->layers[l].out])
			continue;
		double t0 = 0;
		if ((rc = prof_begin(net, &t0)) ||
		    (rc = layer_bwd(net, l, n, dinput != NULL, written)) ||
		    (rc = prof_end(net, 2 * l + 1, t0))) {
			nn__errmsg(net, "%s: backward failed on the %s backend", net->layers[l].name,
				b->name);
			return rc;
		}
	}
	if (dinput) {
		size_t bytes = sizeof(float) * n * net->tensors[0].size;
		if (written[0])
			rc = b->ops->download(b, dinput, net->dinput, bytes);
		else
			memset(dinput, 0, bytes);
	}
	return rc;
}

int nn_net_zero_grad(nn_net *net)
{
	if (net->inference_only)
		return VR_ESTATE;
	return net->b->ops->fill(net->b, net->grads, 0.0f, net->trainable_count);
}
