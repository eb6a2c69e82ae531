/* A net's weights as a safetensors file: every parameter tensor under its
 * state_dict name, metadata naming the architecture, K, input size and
 * normalisation, and optionally an optimiser's state for resuming. The
 * whole arena moves through one host buffer, so a load or save is one
 * download or upload whatever the backend. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "net_priv.h"
#include "safetensors.h"

static const char *optim_name(int kind)
{
	return kind == NN_OPTIM_SGD ? "sgd" : kind == NN_OPTIM_ADAM ? "adam" : "adamw";
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
	size_t at = 0;
	at += (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < ndim && at < len; i++)
		at += (size_t)snprintf(buf + at, len - at, i ? ", %lld" : "%lld", (long long)shape[i]);
	if (at < len)
		snprintf(buf + at, len - at, "]");
}

/* "a,b,c" with each float in the fewest digits that read back exactly. */
static void format3(char *buf, size_t len, const float v[3])
{
	size_t at = 0;
	for (int i = 0; i < 3 && at < len; i++) {
		char one[32];
		for (int digits = 6; digits <= 9; digits++) {
			snprintf(one, sizeof(one), "%.*g", digits, v[i]);
			if (strtof(one, NULL) == v[i])
				break;
		}
		at += (size_t)snprintf(buf + at, len - at, i ? ",%s" : "%s", one);
	}
}

/* Parses "a,b,c" into three floats. */
static int parse3(const char *s, float out[3])
{
	return s && sscanf(s, "%f,%f,%f", &out[0], &out[1], &out[2]) == 3;
}

int nn_net_save(nn_net *net, const char *path, const nn_optim *opt, const char *const *meta)
{
	struct nn_backend *b = net->b;
	int n = net->nparams + (opt ? 2 : 0), nm = 0, rc = VR_ENOMEM;
	float *host = malloc(sizeof(float) * (net->arena_count ? net->arena_count : 1));
	float *m = NULL, *v = NULL;
	struct nn_st_entry *e = calloc(n ? n : 1, sizeof(*e));
	int64_t *shapes = calloc((size_t)(n ? n : 1) * 4, sizeof(int64_t));
	const char *kv[64];
	char num[3][32], mean[96], std[96], step[32];
	if (!host || !e || !shapes)
		goto leave;
	if ((rc = nn_net_params_get(net, host))) {
		nn__errmsg(net, "downloading the parameters failed");
		goto leave;
	}
	for (int i = 0; i < net->nparams; i++) {
		const struct nn__param *p = &net->params[i];
		for (int d = 0; d < p->ndim; d++)
			shapes[i * 4 + d] = p->shape[d];
		e[i] = (struct nn_st_entry){ p->name, p->ndim, &shapes[i * 4], host + p->offset };
	}
	snprintf(num[0], sizeof(num[0]), "%d", net->num_outputs);
	snprintf(num[1], sizeof(num[1]), "%d", net->input_size);
	format3(mean, sizeof(mean), net->mean);
	format3(std, sizeof(std), net->std);
	const char *base[] = { "format", "visrec-nn", "arch", net->arch, "num_outputs", num[0],
		"input_size", num[1], "mean", mean, "std", std };
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		kv[nm++] = base[i];
	if (net->input_layer[0]) {
		kv[nm++] = "input_layer";
		kv[nm++] = net->input_layer;
	}
	if (net->head[0]) {
		kv[nm++] = "head";
		kv[nm++] = net->head;
	}
	if (opt) {
		size_t bytes = sizeof(float) * (opt->count ? opt->count : 1);
		int64_t count = (int64_t)opt->count;
		rc = VR_ENOMEM;
		if (!(m = calloc(1, bytes)) || !(v = calloc(1, bytes)))
			goto leave;
		if ((opt->m && (rc = b->ops->download(b, m, opt->m, sizeof(float) * opt->count))) ||
		    (opt->v && (rc = b->ops->download(b, v, opt->v, sizeof(float) * opt->count)))) {
			nn__errmsg(net, "downloading the optimiser state failed");
			goto leave;
		}
		shapes[net->nparams * 4] = shapes[(net->nparams + 1) * 4] = count;
		e[net->nparams] = (struct nn_st_entry){ "optim.m", 1, &shapes[net->nparams * 4], m };
		e[net->nparams + 1] = (struct nn_st_entry){ "optim.v", 1,
			&shapes[(net->nparams + 1) * 4], v };
		snprintf(step, sizeof(step), "%ld", opt->steps);
		kv[nm++] = "optim";
		kv[nm++] = optim_name(opt->opts.kind);
		kv[nm++] = "optim_step";
		kv[nm++] = step;
	}
	for (int i = 0; meta && meta[i] && meta[i + 1] && nm < 62; i += 2) {
		kv[nm++] = meta[i];
		kv[nm++] = meta[i + 1];
	}
	kv[nm] = NULL;
	rc = nn_st_write(path, e, n, kv, net->errmsg, sizeof(net->errmsg));
leave:
	if (rc == VR_ENOMEM && !net->errmsg[0])
		nn__errmsg(net, "out of memory saving the net");
	free(host);
	free(m);
	free(v);
	free(e);
	free(shapes);
	return rc;
}

/* Reads the named tensor, which must have the given shape, into dst. */
static int load_tensor(nn_net *net, nn_st_file *f, const char *name, int ndim,
	const int64_t *shape, float *dst)
{
	const struct nn_st_tensor *t = nn_st_find(f, name);
	char want[96], got[96];
	if (!t) {
		nn__errmsg(net, "tensor \"%s\" is missing from the file", name);
		return VR_ENOTFOUND;
	}
	int same = t->ndim == ndim;
	for (int d = 0; same && d < ndim; d++)
		same = t->shape[d] == shape[d];
	if (!same) {
		shape_str(want, sizeof(want), ndim, shape);
		shape_str(got, sizeof(got), t->ndim, t->shape);
		nn__errmsg(net, "tensor \"%s\": the file has shape %s, the net needs %s", name, got,
			want);
		return VR_ESHAPE;
	}
	return nn_st_read_f32(f, t, dst, net->errmsg, sizeof(net->errmsg));
}

static int load_optim(nn_net *net, nn_st_file *f, nn_optim *opt, float *host)
{
	struct nn_backend *b = net->b;
	const char *kind = nn_st_meta(f, "optim"), *step = nn_st_meta(f, "optim_step");
	int64_t count = (int64_t)opt->count;
	long steps;
	int rc;
	if (!kind || strcmp(kind, optim_name(opt->opts.kind)) || !step ||
	    sscanf(step, "%ld", &steps) != 1 || steps < 0) {
		nn__errmsg(net, "the file holds no %s optimiser state (it has %s)",
			optim_name(opt->opts.kind), kind ? kind : "none");
		return VR_EINVAL;
	}
	if (opt->m && ((rc = load_tensor(net, f, "optim.m", 1, &count, host)) ||
		       (rc = b->ops->upload(b, opt->m, host, sizeof(float) * opt->count))))
		return rc;
	if (opt->v && ((rc = load_tensor(net, f, "optim.v", 1, &count, host)) ||
		       (rc = b->ops->upload(b, opt->v, host, sizeof(float) * opt->count))))
		return rc;
	opt->steps = steps;
	return 0;
}

int nn_net_load(nn_net *net, const char *path, nn_optim *opt)
{
	nn_st_file *f = NULL;
	float *host = NULL;
	float mean[3], std[3];
	int rc;
	net->errmsg[0] = 0;
	if ((rc = nn_st_open(path, &f, net->errmsg, sizeof(net->errmsg))))
		return rc;
	const char *arch = nn_st_meta(f, "arch");
	if (arch && strcmp(arch, net->arch)) {
		nn__errmsg(net, "%s holds a %s net, not %s", path, arch, net->arch);
		rc = VR_EINVAL;
		goto leave;
	}
	rc = VR_ENOMEM;
	size_t floats = net->arena_count;
	if (opt && opt->count > floats)
		floats = opt->count;
	if (!(host = calloc(floats ? floats : 1, sizeof(float))))
		goto leave;
	/* A fresh head keeps what nn_net_init gave it unless the file is of
	 * the same head: the values come from the net first. */
	const char *head = nn_st_meta(f, "head");
	int same_head = head && !strcmp(head, net->head);
	/* Optimiser state goes on training the same net: a checkpoint of
	 * another head (width, layer or normalisation) would leave this net's
	 * head at its init under state made for other values. */
	if (opt && net->head[0] && !same_head) {
		nn__errmsg(net, "%s is a checkpoint of head \"%.40s\", not this net's \"%s\"", path,
			head ? head : "", net->head);
		rc = VR_EINVAL;
		goto leave;
	}
	if (net->head[0] && !same_head && (rc = nn_net_params_get(net, host))) {
		nn__errmsg(net, "downloading the parameters failed");
		goto leave;
	}
	for (int i = 0; i < net->nparams; i++) {
		const struct nn__param *p = &net->params[i];
		int64_t shape[4];
		if (p->fresh && !same_head)
			continue;
		for (int d = 0; d < p->ndim; d++)
			shape[d] = p->shape[d];
		if ((rc = load_tensor(net, f, p->name, p->ndim, shape, host + p->offset)))
			goto leave;
	}
	if ((rc = nn_net_params_set(net, host))) {
		nn__errmsg(net, "uploading the parameters failed");
		goto leave;
	}
	if (parse3(nn_st_meta(f, "mean"), mean) && parse3(nn_st_meta(f, "std"), std))
		nn_net_set_norm(net, mean, std);
	if (opt && (rc = load_optim(net, f, opt, host)))
		goto leave;
	net->can_backward = 0;
	rc = 0;
leave:
	free(host);
	nn_st_close(f);
	return rc;
}

int nn_net_open_file(nn_backend *b, const char *path, const struct nn_net_opts *opts,
	nn_net **out, char *errbuf, size_t errlen)
{
	struct nn_net_opts o = { 0 };
	nn_st_file *f = NULL;
	char arch[16];
	int rc;
	*out = NULL;
	if ((rc = nn_st_open(path, &f, errbuf, errlen)))
		return rc;
	const char *a = nn_st_meta(f, "arch"), *k = nn_st_meta(f, "num_outputs");
	const char *s = nn_st_meta(f, "input_size");
	if (opts)
		o = *opts;
	if (!a || !k || !s || strlen(a) >= sizeof(arch) || sscanf(k, "%d", &o.num_outputs) != 1 ||
	    sscanf(s, "%d", &o.input_size) != 1 || o.num_outputs < 1 || o.input_size < 1) {
		if (errbuf)
			snprintf(errbuf, errlen, "%s: no arch/num_outputs/input_size metadata", path);
		nn_st_close(f);
		return VR_EINVAL;
	}
	/* A cut or head net: "layer:width" (width 0: a cut with the layers
	 * above it kept). */
	const char *in = nn_st_meta(f, "input_layer"), *head = nn_st_meta(f, "head");
	char in_layer[32], head_layer[40];
	o.input_layer = o.head_layer = NULL;
	o.head_width = 0;
	if (in && strlen(in) < sizeof(in_layer)) {
		snprintf(in_layer, sizeof(in_layer), "%s", in);
		o.input_layer = in_layer;
	}
	o.head_norm = 0;
	if (head) {
		/* "layer:width", or "layer:width:l2" for a head_norm head. */
		size_t hl = strlen(head);
		char hbuf[48];
		if (hl > 3 && hl < sizeof(hbuf) && !strcmp(head + hl - 3, ":l2")) {
			snprintf(hbuf, sizeof(hbuf), "%.*s", (int)(hl - 3), head);
			head = hbuf;
			o.head_norm = 1;
		}
		const char *colon = strrchr(head, ':');
		if (!colon || (size_t)(colon - head) >= sizeof(head_layer) ||
		    sscanf(colon + 1, "%d", &o.head_width) != 1 || o.head_width < 0) {
			if (errbuf)
				snprintf(errbuf, errlen, "%s: bad head metadata \"%.40s\"", path, head);
			nn_st_close(f);
			return VR_EINVAL;
		}
		snprintf(head_layer, sizeof(head_layer), "%.*s", (int)(colon - head), head);
		if (o.head_width > 0)
			o.head_layer = head_layer;
	}
	snprintf(arch, sizeof(arch), "%s", a);
	nn_st_close(f);
	if ((rc = nn_net_create(b, arch, &o, out, errbuf, errlen)))
		return rc;
	if ((rc = nn_net_load(*out, path, NULL))) {
		if (errbuf)
			snprintf(errbuf, errlen, "%s", nn_net_errmsg(*out));
		nn_net_destroy(*out);
		*out = NULL;
	}
	return rc;
}
