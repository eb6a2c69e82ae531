/* nn_dump ARCH SIZE K BATCH SEED DIR: builds ARCH (input SIZE, K outputs),
 * initialises it with SEED, runs an evaluation-mode forward of BATCH seeded
 * random images and a backward of a seeded random output gradient r, and
 * writes DIR/weights.safetensors (nn_net_save) and DIR/io.safetensors
 * (tensors x, r, y, dx and grad.<name> for every trainable tensor). Used by
 * torch_parity.py to check every output and gradient of a whole net
 * against PyTorch. */
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
	char path[4096], err[256] = "";
	int rc = 2;
	if (argc != 7) {
		fprintf(stderr, "usage: nn_dump ARCH SIZE K BATCH SEED DIR\n");
		return 2;
	}
	struct nn_net_opts o = { .input_size = atoi(argv[2]), .num_outputs = atoi(argv[3]),
		.max_batch = atoi(argv[4]) };
	int n = o.max_batch;
	uint64_t seed = strtoull(argv[5], NULL, 10);
	if (nn_backend_open("cpu", &b) || nn_net_create(b, argv[1], &o, &net, err, sizeof(err)) ||
	    nn_net_init(net, seed)) {
		fprintf(stderr, "nn_dump: %s\n", err);
		goto leave;
	}
	int64_t xs[4] = { n, 3, o.input_size, o.input_size }, ys[2] = { n, 0 };
	size_t xl = (size_t)n * 3 * o.input_size * o.input_size;
	ys[1] = (int64_t)nn_net_output_size(net);
	size_t yl = (size_t)n * ys[1], nt = nn_net_trainable_count(net);
	int ntensors = nn_net_tensor_count(net);
	float *x = malloc(sizeof(float) * xl), *dx = malloc(sizeof(float) * xl);
	float *r = malloc(sizeof(float) * yl), *y = malloc(sizeof(float) * yl);
	float *g = malloc(sizeof(float) * (nt ? nt : 1));
	struct nn_st_entry *e = calloc(4 + ntensors, sizeof(*e));
	char (*names)[96] = calloc(ntensors, sizeof(*names));
	int64_t (*shapes)[4] = calloc(ntensors, sizeof(*shapes));
	for (size_t i = 0; i < xl; i++)
		x[i] = 4.0f * nn_uniform01(seed + 1, i) - 2.0f;
	for (size_t i = 0; i < yl; i++)
		r[i] = 2.0f * nn_uniform01(seed + 2, i) - 1.0f;
	if (nn_net_zero_grad(net) || nn_net_forward(net, x, n, 0, y) ||
	    nn_net_backward(net, r, dx) || nn_net_grads_get(net, g)) {
		fprintf(stderr, "nn_dump: %s\n", nn_net_errmsg(net));
		goto leave;
	}
	int m = 0;
	e[m++] = (struct nn_st_entry){ "x", 4, xs, x };
	e[m++] = (struct nn_st_entry){ "r", 2, ys, r };
	e[m++] = (struct nn_st_entry){ "y", 2, ys, y };
	e[m++] = (struct nn_st_entry){ "dx", 4, xs, dx };
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
	snprintf(path, sizeof(path), "%s/weights.safetensors", argv[6]);
	if ((rc = nn_net_save(net, path, NULL, NULL))) {
		fprintf(stderr, "nn_dump: %s\n", nn_net_errmsg(net));
		goto leave;
	}
	snprintf(path, sizeof(path), "%s/io.safetensors", argv[6]);
	if ((rc = nn_st_write(path, e, m, NULL, err, sizeof(err))))
		fprintf(stderr, "nn_dump: %s\n", err);
	free(x); free(dx); free(r); free(y); free(g); free(e); free(names); free(shapes);
leave:
	nn_net_destroy(net);
	nn_backend_close(b);
	return rc ? 1 : 0;
}
