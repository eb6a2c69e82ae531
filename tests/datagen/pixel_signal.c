/* pixel_signal: how much of an item's hidden category and hue its image
 * shows to the crudest learner, for a generated set (a measuring tool, not
 * a test). It decodes the first N images, box-downscales each to 24 x 24
 * RGB, normalises it (zero mean, unit norm), and classifies the last fifth
 * by the nearest neighbour among the first four fifths.
 *
 *   pixel_signal DIR [N]     (N defaults to 5000)
 *
 * Prints the accuracy for category (chance 0.1) and hue (chance 0.125). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#define SIDE 24
#define DIM (SIDE * SIDE * 3)

static unsigned char *read_all(const char *path, long *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	if (!f)
		return NULL;
	if (!fseek(f, 0, SEEK_END) && (*len = ftell(f)) > 0 && !fseek(f, 0, SEEK_SET) &&
	    (buf = malloc(*len)) && fread(buf, 1, *len, f) != (size_t)*len) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Reads category and hue of items 0..n-1 from truth_items.csv. */
static int read_truth(const char *dir, int n, int *cat, int *hue)
{
	char path[4096], line[1024];
	snprintf(path, sizeof(path), "%s/truth_items.csv", dir);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(line, sizeof(line), f))
		return -1;
	int k = 0;
	for (; k < n && fgets(line, sizeof(line), f); k++)
		if (sscanf(line, "%*[^,],%*d,%d,%d", &cat[k], &hue[k]) != 2)
			break;
	fclose(f);
	return k == n ? 0 : -1;
}

/* Decodes image i and writes its normalised 24 x 24 feature to x. */
static int feature(tjhandle tj, const char *dir, int i, unsigned char *rgb, float *x)
{
	char path[4096];
	long len = 0;
	int w, h, sub, cs, cnt[SIDE * SIDE] = { 0 };
	snprintf(path, sizeof(path), "%s/images/i%06d.jpg", dir, i);
	unsigned char *jpg = read_all(path, &len);
	if (!jpg)
		return -1;
	int bad = tjDecompressHeader3(tj, jpg, len, &w, &h, &sub, &cs) || w > 4096 || h > 4096 ||
		  tjDecompress2(tj, jpg, len, rgb, w, 0, h, TJPF_RGB, 0);
	free(jpg);
	if (bad)
		return -1;
	memset(x, 0, DIM * sizeof(float));
	for (int y = 0; y < h; y++)
		for (int c = 0; c < w; c++) {
			int cell = (y * SIDE / h) * SIDE + c * SIDE / w;
			cnt[cell]++;
			for (int k = 0; k < 3; k++)
				x[cell * 3 + k] += rgb[(y * w + c) * 3 + k];
		}
	double mean = 0, norm = 0;
	for (int k = 0; k < DIM; k++) {
		x[k] /= cnt[k / 3];
		mean += x[k];
	}
	mean /= DIM;
	for (int k = 0; k < DIM; k++) {
		x[k] -= (float)mean;
		norm += (double)x[k] * x[k];
	}
	norm = norm > 0 ? sqrt(norm) : 1;
	for (int k = 0; k < DIM; k++)
		x[k] /= (float)norm;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pixel_signal DIR [N]\n");
		return 2;
	}
	const char *dir = argv[1];
	int n = argc > 2 ? atoi(argv[2]) : 5000, train = n * 4 / 5, rc = 1;
	float *x = malloc((size_t)n * DIM * sizeof(float));
	int *cat = malloc(n * sizeof(int)), *hue = malloc(n * sizeof(int));
	unsigned char *rgb = malloc((size_t)4096 * 4096 * 3);
	tjhandle tj = tjInitDecompress();
	if (n < 10 || !x || !cat || !hue || !rgb || !tj || read_truth(dir, n, cat, hue)) {
		fprintf(stderr, "pixel_signal: cannot read %d items of %s\n", n, dir);
		goto leave;
	}
	for (int i = 0; i < n; i++)
		if (feature(tj, dir, i, rgb, x + (size_t)i * DIM)) {
			fprintf(stderr, "pixel_signal: image %d of %s unreadable\n", i, dir);
			goto leave;
		}
	int right_cat = 0, right_hue = 0;
	for (int i = train; i < n; i++) {
		int best = 0;
		double best_d = INFINITY;
		for (int j = 0; j < train; j++) {
			double d = 0;
			for (int k = 0; k < DIM; k++) {
				double t = x[(size_t)i * DIM + k] - x[(size_t)j * DIM + k];
				d += t * t;
			}
			if (d < best_d) {
				best_d = d;
				best = j;
			}
		}
		right_cat += cat[best] == cat[i];
		right_hue += hue[best] == hue[i];
	}
	printf("1-NN on raw %dx%d RGB pixels, %d train / %d test images: category accuracy "
	       "%.3f (chance 0.100), hue accuracy %.3f (chance 0.125)\n", SIDE, SIDE, train,
	       n - train, (double)right_cat / (n - train), (double)right_hue / (n - train));
	rc = 0;
leave:
	if (tj)
		tjDestroy(tj);
	free(x);
	free(cat);
	free(hue);
	free(rgb);
	return rc;
}
