/* The C half both PyTorch parity scripts share (tests/gpu/torch_parity.py
 * through nn_dump, tests/weights/torch_parity.py through weights_dump):
 * one evaluation-mode forward of seeded random images, a backward of a
 * seeded random output gradient, and every tensor PyTorch must reproduce,
 * written to one safetensors file. */
#ifndef NN_DUMP_IO_H
#define NN_DUMP_IO_H

#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "nn.h"
#include "safetensors.h"

/* Runs net (batch n, input S x S) on images x = x_lo + x_span · u with u
 * uniform from seed + 1, backpropagates r = 2 u' - 1 (u' from seed + 2)
 * and writes path with tensors x, r, y (the output), dx, grad.<name> for
 * every trainable tensor and, when layer is not NULL, feat (layer's output
 * for the same x). Returns 0, or 1 with the cause on stderr after prog. */
static int nn_dump_io(const char *prog, nn_net *net, int n, uint64_t seed, float x_lo,
	float x_span, const char *layer, const char *path)
{
	const int S = nn_net_input_size(net), ntensors = nn_net_tensor_count(net);
	const size_t xl = (size_t)n * 3 * S * S, yl = (size_t)n * nn_net_output_size(net),
		     nt = nn_net_trainable_count(net);
	size_t fl = 0;
	int64_t xs[4] = { n, 3, S, S }, ys[2] = { n, (int64_t)nn_net_output_size(net) }, fs[2];
	char err[256] = "";
	int rc = 1, m = 0;
	if (layer && nn_net_layer_size(net, layer, &fl)) {
		fprintf(stderr, "%s: no layer %s\n", prog, layer);
		return 1;
	}
	fs[0] = n;
	fs[1] = (int64_t)fl;
	float *x = malloc(sizeof(float) * xl), *dx = malloc(sizeof(float) * xl);
	float *r = malloc(sizeof(float) * yl), *y = malloc(sizeof(float) * yl);
	float *g = malloc(sizeof(float) * (nt ? nt : 1)), *feat = malloc(sizeof(float) * (n * fl + 1));
	struct nn_st_entry *e = calloc(5 + (size_t)ntensors, sizeof(*e));
	char (*names)[96] = calloc((size_t)ntensors, sizeof(*names));
	int64_t (*shapes)[4] = calloc((size_t)ntensors, sizeof(*shapes));
	if (!x || !dx || !r || !y || !g || !feat || !e || !names || !shapes)
		goto leave;
	for (size_t i = 0; i < xl; i++)
		x[i] = x_lo + x_span * nn_uniform01(seed + 1, i);
	for (size_t i = 0; i < yl; i++)
		r[i] = 2.0f * nn_uniform01(seed + 2, i) - 1.0f;
	if (nn_net_zero_grad(net) || nn_net_forward(net, x, n, 0, y) ||
	    nn_net_backward(net, r, dx) || nn_net_grads_get(net, g) ||
	    (layer && nn_net_features(net, layer, x, n, feat))) {
		fprintf(stderr, "%s: %s\n", prog, nn_net_errmsg(net));
		goto leave;
	}
	e[m++] = (struct nn_st_entry){ "x", 4, xs, x };
	e[m++] = (struct nn_st_entry){ "r", 2, ys, r };
	e[m++] = (struct nn_st_entry){ "y", 2, ys, y };
	e[m++] = (struct nn_st_entry){ "dx", 4, xs, dx };
	if (layer)
		e[m++] = (struct nn_st_entry){ "feat", 2, fs, feat };
	for (int i = 0; i < ntensors; i++) {
		struct nn_tensor_info t;
		nn_net_tensor_at(net, i, &t);
		if (!t.trainable)
			continue;
		snprintf(names[i], sizeof(names[i]), "grad.%s", t.name);
		for (int d = 0; d < t.ndim; d++)
			shapes[i][d] = t.shape[d];
		e[m++] = (struct nn_st_entry){ names[i], t.ndim, shapes[i], g + t.offset };
	}
	if (nn_st_write(path, e, m, NULL, err, sizeof(err)))
		fprintf(stderr, "%s: %s\n", prog, err);
	else
		rc = 0;
leave:
	free(x);
	free(dx);
	free(r);
	free(y);
	free(g);
	free(feat);
	free(e);
	free(names);
	free(shapes);
	return rc;
}

#endif
