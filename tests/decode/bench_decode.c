/* bench_decode: JPEG decode + resize + crop throughput of featured/decode
 * on one core, 500×375 JPEGs (4:2:0, quality 90) to S×S, with and without
 * DCT scaling; beside it TurboJPEG's decode alone at the same scale (the
 * rest is header, resize and crop), and fd_normalize alone.
 *
 *   bench_decode [N] [S ...]     N images per run (default 500), S
 *                                default 224 and 64
 *
 * Each configuration runs three times alternating with the others; the
 * median of the thread's CPU time is printed. Not a test: run it by hand. */
#include "decode.h"
#include "jpeg_fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <turbojpeg.h>

enum { DISTINCT = 16, RUNS = 3 };

/* CPU time of this thread: the machine is shared, and wall time would
 * count other processes' turns on the core. */
static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 500;
	int sizes[8] = { 224, 64 }, nsizes = 2;
	if (argc > 2) {
		nsizes = 0;
		for (int i = 2; i < argc && nsizes < 8; i++)
			sizes[nsizes++] = atoi(argv[i]);
	}
	uint8_t *jpeg[DISTINCT];
	size_t len[DISTINCT], total = 0;
	for (int i = 0; i < DISTINCT; i++) {
		jpeg[i] = fixture_jpeg(500, 375, (unsigned)i, VR_SUBSAMP_420, 90, &len[i]);
		if (!jpeg[i]) {
			fprintf(stderr, "could not make test JPEGs\n");
			return 1;
		}
		total += len[i];
	}
	printf("%d images per run, %d distinct 500x375 JPEGs (4:2:0, q90, mean %zu bytes), one thread\n",
	       n, DISTINCT, total / DISTINCT);

	fd_decoder *d;
	if (fd_decoder_create(&d, NULL))
		return 1;
	uint8_t *out = malloc(4096 * 4096 * 3);
	float *planes = malloc(sizeof(float) * 3 * 1024 * 1024);
	for (int s = 0; s < nsizes; s++) {
		int S = sizes[s];
		double t[2][RUNS], tn[RUNS], tj[RUNS];
		fd_decode_info info;
		fd_decode(d, jpeg[0], len[0], S, 0, out, &info, NULL, 0);
		tjhandle h = tjInitDecompress();
		for (int r = 0; r < RUNS; r++) {
			for (int mode = 0; mode < 2; mode++) {
				unsigned flags = mode ? FD_DECODE_NO_DCT_SCALING : 0;
				fd_decode(d, jpeg[0], len[0], S, flags, out, NULL, NULL, 0); /* warm */
				double a = now();
				for (int i = 0; i < n; i++) {
					char why[128];
					if (fd_decode(d, jpeg[i % DISTINCT], len[i % DISTINCT], S, flags, out,
						      NULL, why, sizeof why)) {
						fprintf(stderr, "decode failed: %s\n", why);
						return 1;
					}
				}
				t[mode][r] = now() - a;
			}
			double a0 = now();
			for (int i = 0; i < n; i++)
				tjDecompress2(h, jpeg[i % DISTINCT], len[i % DISTINCT], out, info.scaled_width, 0,
					      info.scaled_height, TJPF_RGB, 0);
			tj[r] = now() - a0;
			const float mean[3] = { 0.485f, 0.456f, 0.406f }, sd[3] = { 0.229f, 0.224f, 0.225f };
			double a = now();
			if (S <= 1024)
				for (int i = 0; i < n; i++)
					fd_normalize(planes, out, S, mean, sd);
			tn[r] = now() - a;
		}
		qsort(t[0], RUNS, sizeof(double), cmp_double);
		qsort(t[1], RUNS, sizeof(double), cmp_double);
		qsort(tn, RUNS, sizeof(double), cmp_double);
		qsort(tj, RUNS, sizeof(double), cmp_double);
		tjDestroy(h);
		printf("S=%d: with DCT scaling (decoded at %dx%d) %.0f images/s, %.3f ms/image, of which TurboJPEG %.3f ms\n",
		       S, info.scaled_width, info.scaled_height, n / t[0][1], t[0][1] * 1e3 / n, tj[1] * 1e3 / n);
		printf("S=%d: full-size decode %.0f images/s, %.3f ms/image (DCT scaling %.2fx faster); fd_normalize %.3f ms/image\n",
		       S, n / t[1][1], t[1][1] * 1e3 / n, t[1][1] / t[0][1], tn[1] * 1e3 / n);
	}
	free(out);
	free(planes);
	fd_decoder_destroy(d);
	for (int i = 0; i < DISTINCT; i++)
		vr_jpeg_free(jpeg[i]);
	return 0;
}
