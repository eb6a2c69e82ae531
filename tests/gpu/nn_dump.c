/* nn_dump ARCH SIZE K BATCH SEED DIR: builds ARCH (input SIZE, K outputs),
 * initialises it with SEED, runs an evaluation-mode forward of BATCH seeded
 * random images and a backward of a seeded random output gradient r, and
 * writes DIR/weights.safetensors (nn_net_save) and DIR/io.safetensors
 * (tensors x, r, y, dx and grad.<name> for every trainable tensor:
 * nn_dump_io.h). Used by torch_parity.py to check every output and
 * gradient of a whole net against PyTorch. */
#include <stdio.h>
#include <stdlib.h>

#include "err.h"
#include "nn.h"
#include "nn_dump_io.h"

int main(int argc, char **argv)
{
	nn_backend *b = NULL;
	nn_net *net = NULL;
	char path[4096], err[256] = "";
	int rc = 1;
	if (argc != 7) {
		fprintf(stderr, "usage: nn_dump ARCH SIZE K BATCH SEED DIR\n");
		return 2;
	}
	struct nn_net_opts o = { .input_size = atoi(argv[2]), .num_outputs = atoi(argv[3]),
		.max_batch = atoi(argv[4]) };
	uint64_t seed = strtoull(argv[5], NULL, 10);
	if (nn_backend_open("cpu", &b) || nn_net_create(b, argv[1], &o, &net, err, sizeof(err)) ||
	    nn_net_init(net, seed)) {
		fprintf(stderr, "nn_dump: %s\n", err);
		goto leave;
	}
	snprintf(path, sizeof(path), "%s/weights.safetensors", argv[6]);
	if (nn_net_save(net, path, NULL, NULL)) {
		fprintf(stderr, "nn_dump: %s\n", nn_net_errmsg(net));
		goto leave;
	}
	snprintf(path, sizeof(path), "%s/io.safetensors", argv[6]);
	rc = nn_dump_io("nn_dump", net, o.max_batch, seed, -2.0f, 4.0f, NULL, path);
leave:
	nn_net_destroy(net);
	nn_backend_close(b);
	return rc ? 1 : 0;
}
