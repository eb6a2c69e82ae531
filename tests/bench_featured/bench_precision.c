/* bench_precision: what featured --precision bf16 costs in agreement with
 * FP32, on real JPEGs. A measuring program, not a test.
 *
 *   bench_precision DIR ARCH LAYER SIZE WEIGHTS|seed:N [LIMIT]
 *
 * Decodes the first LIMIT *.jpg of DIR (sorted) as featured does
 * (fd_decode: shorter side to SIZE, centre crop; the net's
 * normalisation), runs ARCH up to LAYER on the oneDNN backend twice, in
 * FP32 and in BF16 (two backends, the same weights: WEIGHTS loaded or
 * the seeded init), and prints, over the images, the cosine similarity of
 * each image's two vectors (min, 1st percentile, median) and the relative
 * L2 distance |bf16 - fp32| / |fp32| (median, max). Exit 77 when oneDNN
 * has no BF16 on this CPU. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "err.h"
#include "harness.h"
#include "nn.h"

#define BATCH 16

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The sorted *.jpg names of dir; returns how many. */
static int list_jpegs(const char *dir, char ***out)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0, cap = 0;
	*out = NULL;
	while (d && (e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 5 || strcmp(e->d_name + l - 4, ".jpg"))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			char **p = realloc(*out, sizeof(*p) * cap);
			if (!p)
				break;
			*out = p;
		}
		(*out)[n++] = strdup(e->d_name);
	}
	if (d)
		closedir(d);
	if (n)
		qsort(*out, n, sizeof(**out), cmp_str);
	return n;
}

static int open_net(int precision, const char *arch, const char *layer, int size, const char *src,
	nn_backend **b, nn_net **net, char *err, size_t errlen)
{
	struct nn_net_opts o = { .input_size = size, .max_batch = BATCH, .output_layer = layer,
		.inference_only = 1 };
	int rc = nn_backend_open_err("onednn", b, err, errlen);
	if (!rc && (rc = nn_backend_set_precision(*b, precision)))
		snprintf(err, errlen, "onednn cannot run %s here (%s)", nn_precision_name(precision),
			nn_backend_device(*b));
	if (!rc)
		rc = nn_net_create(*b, arch, &o, net, err, errlen);
	if (!rc && (rc = strncmp(src, "seed:", 5) ? nn_net_load(*net, src, NULL) :
			nn_net_init(*net, strtoull(src + 5, NULL, 10))))
		snprintf(err, errlen, "%s", nn_net_errmsg(*net));
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: bench_precision DIR ARCH LAYER SIZE WEIGHTS|seed:N [LIMIT]\n");
		return 2;
	}
	const char *dir = argv[1], *arch = argv[2], *layer = argv[3], *src = argv[5];
	const int size = atoi(argv[4]);
	char **names = NULL, err[512] = "", path[4096];
	const int all = list_jpegs(dir, &names), limit = argc == 7 ? atoi(argv[6]) : all;
	const int n = all < limit ? all : limit;
	nn_backend *b[2] = { NULL, NULL };
	nn_net *net[2] = { NULL, NULL };
	fd_decoder *dec = NULL;
	int rc = 1;
	if (n < 1 || size < 16 || size > 1024) {
		fprintf(stderr, "bench_precision: no JPEGs in %s, or SIZE out of 16..1024\n", dir);
		return 2;
	}
	for (int i = 0; i < 2; i++) {
		int r = open_net(i ? NN_PRECISION_BF16 : NN_PRECISION_FP32, arch, layer, size, src,
			&b[i], &net[i], err, sizeof(err));
		if (r) {
			fprintf(stderr, "bench_precision: %s\n", err);
			rc = r == VR_EUNSUPPORTED ? 77 : 1;
			goto leave;
		}
	}
	float mean[3], std[3];
	nn_net_norm(net[0], mean, std);
	const size_t d = nn_net_output_size(net[0]), px = (size_t)3 * size * size;
	uint8_t *rgb = malloc(px);
	float *x = malloc(sizeof(float) * BATCH * px), *y[2] = { malloc(sizeof(float) * BATCH * d),
		malloc(sizeof(float) * BATCH * d) };
	double *cos = malloc(sizeof(double) * n), *rel = malloc(sizeof(double) * n);
	if (!rgb || !x || !y[0] || !y[1] || !cos || !rel || fd_decoder_create(&dec, NULL))
		goto free_bufs;
	for (int i0 = 0; i0 < n; i0 += BATCH) {
		const int nb = n - i0 < BATCH ? n - i0 : BATCH;
		for (int j = 0; j < nb; j++) {
			size_t len;
			snprintf(path, sizeof(path), "%s/%s", dir, names[i0 + j]);
			unsigned char *jpeg = vr_test_read_file(path, &len);
			int drc = jpeg ? fd_decode(dec, jpeg, len, size, 0, rgb, NULL, err, sizeof(err)) :
				-1;
			free(jpeg);
			if (drc) {
				fprintf(stderr, "bench_precision: %s: %s\n", path, jpeg ? err : "unreadable");
				goto free_bufs;
			}
			fd_normalize(x + (size_t)j * px, rgb, size, mean, std);
		}
		for (int k = 0; k < 2; k++)
			if (nn_net_forward(net[k], x, nb, 0, y[k])) {
				fprintf(stderr, "bench_precision: %s\n", nn_net_errmsg(net[k]));
				goto free_bufs;
			}
		for (int j = 0; j < nb; j++) {
			const float *a = y[0] + (size_t)j * d, *c = y[1] + (size_t)j * d;
			double ab = 0, aa = 0, cc = 0, dd = 0;
			for (size_t t = 0; t < d; t++) {
				ab += (double)a[t] * c[t];
				aa += (double)a[t] * a[t];
				cc += (double)c[t] * c[t];
				dd += ((double)c[t] - a[t]) * ((double)c[t] - a[t]);
			}
			cos[i0 + j] = aa > 0 && cc > 0 ? ab / sqrt(aa * cc) : (aa == cc ? 1 : 0);
			rel[i0 + j] = aa > 0 ? sqrt(dd / aa) : sqrt(dd);
		}
	}
	qsort(cos, n, sizeof(*cos), cmp_double);
	qsort(rel, n, sizeof(*rel), cmp_double);
	printf("%s %s at %d px (%s), %d JPEGs of %s, %zu dims, onednn BF16 vs FP32 (%s):\n", arch,
		layer, size, src, n, dir, d, nn_backend_device(b[1]));
	printf("  cosine min %.6f, 1st percentile %.6f, median %.6f; relative L2 distance median "
		"%.5f, max %.5f\n", cos[0], cos[n / 100], cos[n / 2], rel[n / 2], rel[n - 1]);
	rc = 0;
free_bufs:
	free(rgb); free(x); free(y[0]); free(y[1]); free(cos); free(rel);
leave:
	fd_decoder_destroy(dec);
	for (int i = 0; i < 2; i++) {
		nn_net_destroy(net[i]);
		nn_backend_close(b[i]);
	}
	for (int i = 0; i < all; i++)
		free(names[i]);
	free(names);
	return rc;
}
