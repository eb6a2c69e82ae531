/* vbpr_features: the item features of a generated data set, as featured
 * would compute them (its decoder: shorter side resized to S, centre crop,
 * the net's normalisation), for the offline VBPR comparison
 * (vbpr_coldstart.py). A measuring tool, not a test.
 *
 *   vbpr_features DATA OUT.bin ARCH LAYER SIZE WEIGHTS|seed:N [LIMIT]
 *   vbpr_features DATA OUT.bin pixels - SIZE - [LIMIT]
 *
 * Items in truth_items.csv order (the first LIMIT); images DATA/images/<item>.jpg.
 * The CNN form runs ARCH on the CPU backend up to LAYER, with WEIGHTS
 * loaded or randomly initialised from seed N. The pixels form keeps the
 * decoded SIZE x SIZE RGB image itself, / 255. OUT.bin: int32 n, int32 d,
 * then n rows of d float32. Prints the items per second of decode + net
 * and of the net alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode.h"
#include "err.h"
#include "nn.h"

#define BATCH 16

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static unsigned char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long n;
	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) > 0 && !fseek(f, 0, SEEK_SET) &&
	    (buf = malloc(n)) && fread(buf, 1, n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	*len = buf ? (size_t)n : 0;
	fclose(f);
	return buf;
}

/* The item ids of truth_items.csv, at most limit; returns the count. */
static int read_items(const char *dir, int limit, char (**ids)[16])
{
	char path[4096], line[1024];
	int n = 0, cap = 0;
	snprintf(path, sizeof(path), "%s/truth_items.csv", dir);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(line, sizeof(line), f)) {
		if (f)
			fclose(f);
		return -1;
	}
	while (n < limit && fgets(line, sizeof(line), f)) {
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			void *p = realloc(*ids, sizeof(**ids) * cap);
			if (!p)
				break;
			*ids = p;
		}
		line[strcspn(line, ",\n")] = 0;
		snprintf((*ids)[n++], sizeof(**ids), "%.15s", line);
	}
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 7 || argc > 8) {
		fprintf(stderr, "usage: vbpr_features DATA OUT.bin ARCH LAYER SIZE WEIGHTS|seed:N "
			"[LIMIT]\n       vbpr_features DATA OUT.bin pixels - SIZE - [LIMIT]\n");
		return 2;
	}
	const char *dir = argv[1], *arch = argv[3], *layer = argv[4], *src = argv[6];
	const int size = atoi(argv[5]), pixels = !strcmp(arch, "pixels");
	int limit = argc == 8 ? atoi(argv[7]) : 1 << 30;
	char (*ids)[16] = NULL, err[512] = "", path[4096];
	nn_backend *b = NULL;
	nn_net *net = NULL;
	fd_decoder *dec = NULL;
	FILE *out = NULL;
	uint8_t *rgb = NULL;
	float *x = NULL, *y = NULL;
	int rc = 1, n = read_items(dir, limit, &ids);
	float mean[3] = { 0, 0, 0 }, std[3] = { 1, 1, 1 };
	size_t d = (size_t)size * size * 3;
	if (n < 1 || size < 1 || size > 1024) {
		fprintf(stderr, "vbpr_features: no items in %s/truth_items.csv or bad size\n", dir);
		goto leave;
	}
	if (!pixels) {
		struct nn_net_opts o = { .input_size = size, .max_batch = BATCH,
			.output_layer = layer, .inference_only = 1 };
		if (nn_backend_open("cpu", &b) || nn_net_create(b, arch, &o, &net, err, sizeof(err)) ||
		    (strncmp(src, "seed:", 5) ? nn_net_load(net, src, NULL) :
			nn_net_init(net, strtoull(src + 5, NULL, 10)))) {
			fprintf(stderr, "vbpr_features: %s\n", net ? nn_net_errmsg(net) : err);
			goto leave;
		}
		nn_net_norm(net, mean, std);
		d = nn_net_output_size(net);
	}
	rgb = malloc((size_t)size * size * 3);
	x = malloc(sizeof(float) * BATCH * 3 * size * size);
	y = malloc(sizeof(float) * BATCH * d);
	out = fopen(argv[2], "wb");
	int32_t head[2] = { n, (int32_t)d };
	if (!rgb || !x || !y || !out || fd_decoder_create(&dec, NULL) ||
	    fwrite(head, sizeof(head), 1, out) != 1) {
		fprintf(stderr, "vbpr_features: cannot start (memory, decoder or %s)\n", argv[2]);
		goto leave;
	}
	double t0 = now(), t_net = 0;
	for (int i0 = 0; i0 < n; i0 += BATCH) {
		int nb = n - i0 < BATCH ? n - i0 : BATCH;
		for (int j = 0; j < nb; j++) {
			size_t len;
			snprintf(path, sizeof(path), "%s/images/%s.jpg", dir, ids[i0 + j]);
			unsigned char *jpeg = read_all(path, &len);
			int drc = jpeg ? fd_decode(dec, jpeg, len, size, 0, rgb, NULL, err, sizeof(err)) :
				-1;
			free(jpeg);
			if (drc) {
				fprintf(stderr, "vbpr_features: %s: %s\n", path, jpeg ? err : "unreadable");
				goto leave;
			}
			fd_normalize(x + (size_t)j * 3 * size * size, rgb, size, mean, std);
		}
		if (pixels) {
			memcpy(y, x, sizeof(float) * nb * d);
		} else {
			double t = now();
			if (nn_net_forward(net, x, nb, 0, y)) {
				fprintf(stderr, "vbpr_features: %s\n", nn_net_errmsg(net));
				goto leave;
			}
			t_net += now() - t;
		}
		if (fwrite(y, sizeof(float) * d, nb, out) != (size_t)nb)
			goto leave;
	}
	double total = now() - t0;
	printf("%d items, %zu dims: %.1f items/s decode + %s", n, d, n / total,
		pixels ? "resize\n" : "net");
	if (!pixels)
		printf(", %.1f items/s net alone (%s %s at %d, CPU)\n", n / t_net, arch, layer, size);
	rc = 0;
leave:
	if (out && fclose(out))
		rc = 1;
	fd_decoder_destroy(dec);
	nn_net_destroy(net);
	nn_backend_close(b);
	free(ids);
	free(rgb);
	free(x);
	free(y);
	return rc;
}
