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
#include "nn_dump_io.h"
#include "safetensors.h"

int main(int argc, char **argv)
{
	nn_backend *b = NULL;
	nn_net *net = NULL;
	nn_st_file *f = NULL;
	char path[4096], err[256] = "";
	int rc = 2;
	if (argc != 8) {
		fprintf(stderr, "usage: weights_dump ARCH WEIGHTS SIZE BATCH SEED LAYER DIR\n");
		return 2;
	}
	struct nn_net_opts o = { .input_size = atoi(argv[3]), .max_batch = atoi(argv[4]) };
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
	snprintf(path, sizeof(path), "%s/io.safetensors", argv[7]);
	if ((rc = nn_dump_io("weights_dump", net, o.max_batch, seed, 0.0f, 1.0f, argv[6], path)))
		goto leave;
	snprintf(path, sizeof(path), "%s/resaved.safetensors", argv[7]);
	if (nn_net_save(net, path, NULL, NULL)) {
		fprintf(stderr, "weights_dump: %s\n", nn_net_errmsg(net));
		rc = 1;
	}
leave:
	nn_net_destroy(net);
	nn_st_close(f);
	nn_backend_close(b);
	return rc;
}
