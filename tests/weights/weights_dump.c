/* weights_dump ARCH WEIGHTS SIZE BATCH SEED LAYER DIR: the C half of
 * torch_parity.py. Builds ARCH at input SIZE with K from the weights file's
 * metadata, loads WEIGHTS by name (a file another tool wrote, e.g. from a
 * torchvision state_dict), runs an evaluation-mode forward of BATCH seeded
 * random images and a backward of a seeded random output gradient r, and
 * writes DIR/io.safetensors (x, r, y, dx, grad.<name> of every trainable
 * tensor, and feat: LAYER's output for the same images) and
 * DIR/resaved.safetensors (nn_net_save of what was loaded: the round trip
 * back to PyTorch's names). */
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "err.h"
#include "nn.h"
#include "safetensors.h"

int main(int argc, char **argv)
{
	nn_backend *b = NULL;
	nn_net *net = NULL;
	nn_st_file *f = NULL;
	struct nn_st_entry *e = NULL;
	char path[4096], err[256] = "", (*names)[96] = NULL;
	int64_t (*shapes)[4] = NULL;
	float *x = NULL, *dx = NULL, *r = NULL, *y = NULL, *g = NULL, *feat = NULL;
	int rc = 2;
	if (argc != 8) {
		fprintf(stderr, "usage: weights_dump ARCH WEIGHTS SIZE BATCH SEED LAYER DIR\n");
		return 2;
	}
	struct nn_net_opts o = { .input_size = atoi(argv[3]), .max_batch = atoi(argv[4]) };
	const int n = o.max_batch;
	const uint64_t seed = strtoull(argv[5], NULL, 10);
	const char *k = NULL;
	if (nn_st_open(argv[2], &f, err, sizeof(err)) || !(k = nn_st_meta(f, "num_outputs")) ||
	    (o.num_outputs = atoi(k)) < 1) {
		fprintf(stderr, "weights_dump: %s: %s\n", argv[2], err[0] ? err : "no num_outputs");
		goto leave;
	}
	if (nn_backend_open("cpu", &b) || nn_net_create(b, argv[1], &o, &net, err, sizeof(err))) {
		fprintf(stderr, "weights_dump: %s\n", err);
		goto leave;
	}
	if (nn_net_load(net, argv[2], NULL)) {
		fprintf(stderr, "weights_dump: %s\n", nn_net_errmsg(net));
		goto leave;
	}
	size_t fl;
	if (nn_net_layer_size(net, argv[6], &fl)) {
		fprintf(stderr, "weights_dump: no layer %s\n", argv[6]);
		goto leave;
	}
	int64_t xs[4] = { n, 3, o.input_size, o.input_size }, ys[2] = { n, 0 }, fs[2] = { n, 0 };
	size_t xl = (size_t)n * 3 * o.input_size * o.input_size;
	ys[1] = (int64_t)nn_net_output_size(net);
	fs[1] = (int64_t)fl;
	size_t yl = (size_t)n * ys[1], nt = nn_net_trainable_count(net);
	int ntensors = nn_net_tensor_count(net);
	x = malloc(sizeof(float) * xl);
	dx = malloc(sizeof(float) * xl);
	r = malloc(sizeof(float) * yl);
	y = malloc(sizeof(float) * yl);
	g = malloc(sizeof(float) * (nt ? nt : 1));
	feat = malloc(sizeof(float) * n * fl);
	e = calloc(5 + ntensors, sizeof(*e));
	names = calloc(ntensors, sizeof(*names));
	shapes = calloc(ntensors, sizeof(*shapes));
	rc = 1;
	if (!x || !dx || !r || !y || !g || !feat || !e || !names || !shapes)
		goto leave;
	for (size_t i = 0; i < xl; i++)
		x[i] = nn_uniform01(seed + 1, i);
	for (size_t i = 0; i < yl; i++)
		r[i] = 2.0f * nn_uniform01(seed + 2, i) - 1.0f;
	if (nn_net_zero_grad(net) || nn_net_forward(net, x, n, 0, y) ||
	    nn_net_backward(net, r, dx) || nn_net_grads_get(net, g) ||
	    nn_net_features(net, argv[6], x, n, feat)) {
		fprintf(stderr, "weights_dump: %s\n", nn_net_errmsg(net));
		goto leave;
	}
	int m = 0;
	e[m++] = (struct nn_st_entry){ "x", 4, xs, x };
	e[m++] = (struct nn_st_entry){ "r", 2, ys, r };
	e[m++] = (struct nn_st_entry){ "y", 2, ys, y };
	e[m++] = (struct nn_st_entry){ "dx", 4, xs, dx };
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
	snprintf(path, sizeof(path), "%s/io.safetensors", argv[7]);
	if (nn_st_write(path, e, m, NULL, err, sizeof(err))) {
		fprintf(stderr, "weights_dump: %s\n", err);
		goto leave;
	}
	snprintf(path, sizeof(path), "%s/resaved.safetensors", argv[7]);
	if (nn_net_save(net, path, NULL, NULL)) {
		fprintf(stderr, "weights_dump: %s\n", nn_net_errmsg(net));
		goto leave;
	}
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
	nn_net_destroy(net);
	nn_st_close(f);
	nn_backend_close(b);
	return rc;
}
