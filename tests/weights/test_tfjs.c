/* The proof that the out-of-the-box weights are right: nsfwjs's
 * MobileNetV2, converted at set-up time by tools/weights/install.sh, loaded
 * into our "mobilenet_v2" and run on the CPU backend, against what
 * TensorFlow.js computed from the same package on the same images
 * (tools/weights/reference.js): the 96-d block_10 and 1280-d avgpool
 * features, the head's 128-d hidden layer and the 5 class probabilities.
 *
 * Tolerance: |ours - tfjs| <= 1e-5 max|tfjs| + 1e-4 |tfjs| per element.
 * Both are float32 with different summation orders over ~60 layers, and
 * the differences measured are below 4e-7 of each tensor's largest value
 * (3% of the tolerance). A wrong layout, epsilon or name moves them to
 * 1e-1 and more; so does padding on the wrong side, which the second test
 * shows by shifting the images one pixel and watching the check fail.
 *
 * The files live in ${VISREC_CACHE:-$HOME/.cache/visrec}: mobilenet_v2.safetensors
 * and mobilenet_v2.reference.safetensors. Without them (install.sh not
 * run) every test here skips. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "harness.h"
#include "nn.h"
#include "safetensors.h"

#define ATOL_OF_MAX 1e-5
#define RTOL 1e-4

static char weights_path[4096], reference_path[4096];

/* Finds the converted files; 0 when both exist. */
static int find_files(void)
{
	const char *cache = getenv("VISREC_CACHE"), *home = getenv("HOME");
	char dir[4000];
	if (cache && cache[0])
		snprintf(dir, sizeof(dir), "%s", cache);
	else if (home && home[0])
		snprintf(dir, sizeof(dir), "%s/.cache/visrec", home);
	else
		return -1;
	snprintf(weights_path, sizeof(weights_path), "%s/mobilenet_v2.safetensors", dir);
	snprintf(reference_path, sizeof(reference_path), "%s/mobilenet_v2.reference.safetensors",
		dir);
	FILE *a = fopen(weights_path, "rb"), *b = fopen(reference_path, "rb");
	int rc = a && b ? 0 : -1;
	if (a)
		fclose(a);
	if (b)
		fclose(b);
	return rc;
}

/* Reads tensor name of the reference file into a new buffer; *rows and
 * *cols its first dimension and the product of the rest. */
static float *read_ref(nn_st_file *f, const char *name, int *rows, size_t *cols)
{
	const struct nn_st_tensor *t = nn_st_find(f, name);
	char err[256];
	if (!t || t->ndim < 2)
		return NULL;
	float *p = malloc(sizeof(float) * t->numel);
	if (p && nn_st_read_f32(f, t, p, err, sizeof(err))) {
		free(p);
		return NULL;
	}
	*rows = (int)t->shape[0];
	*cols = t->numel / t->shape[0];
	return p;
}

/* The worst error over tensor scale; > 1 fails. */
static double compare(const float *ours, const float *ref, size_t n, size_t *worst)
{
	double max = 0, ratio = 0;
	for (size_t i = 0; i < n; i++)
		max = fmax(max, fabs(ref[i]));
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)ours[i] - ref[i]);
		double r = d / (ATOL_OF_MAX * max + RTOL * fabs(ref[i]) + 1e-30);
		if (!(r <= ratio)) {
			ratio = r;
			*worst = i;
		}
	}
	return ratio;
}

static void softmax(float *v, int n)
{
	float m = v[0], sum = 0;
	for (int i = 1; i < n; i++)
		m = fmaxf(m, v[i]);
	for (int i = 0; i < n; i++)
		sum += v[i] = expf(v[i] - m);
	for (int i = 0; i < n; i++)
		v[i] /= sum;
}

TEST(matches_tensorflow_js)
{
	if (find_files())
		SKIP("no converted weights (run tools/weights/install.sh): %s", weights_path);
	static const char *const layers[] = { "block_10", "avgpool", "fc", "output" };
	static const char *const ref_names[] = { "block_10", "avgpool", "dense_2", "probs" };
	nn_backend *b = NULL;
	nn_net *net = NULL;
	nn_st_file *f = NULL;
	float *x = NULL, *ref = NULL, *ours = NULL;
	char err[256] = "";
	int n = 0;
	size_t xs = 0;
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn_st_open(reference_path, &f, err, sizeof(err)));
	x = read_ref(f, "x", &n, &xs);
	ASSERT_MSG(x && n > 0 && xs == 3 * 224 * 224, "%s: no input x", reference_path);
	struct nn_net_opts o = { .max_batch = n, .inference_only = 1 };
	ASSERT_OK(nn_net_open_file(b, weights_path, &o, &net, err, sizeof(err)));
	ASSERT_STR_EQ(nn_net_arch(net), "mobilenet_v2");
	float mean[3], std[3];
	nn_net_norm(net, mean, std);
	ASSERT(mean[0] == 0 && mean[2] == 0 && std[0] == 1 && std[2] == 1);
	for (int l = 0; l < 4; l++) {
		int rows;
		size_t cols, dims, worst = 0;
		ref = read_ref(f, ref_names[l], &rows, &cols);
		ASSERT_MSG(ref && rows == n, "%s: no tensor %s", reference_path, ref_names[l]);
		ASSERT_OK(nn_net_layer_size(net, layers[l], &dims));
		ASSERT_EQ_INT(dims, cols);
		ours = malloc(sizeof(float) * n * dims);
		ASSERT_OK(nn_net_features(net, layers[l], x, n, ours));
		if (!strcmp(layers[l], "output"))
			for (int i = 0; i < n; i++)
				softmax(ours + i * dims, (int)dims);
		double r = compare(ours, ref, n * dims, &worst);
		fprintf(stderr, "  %-8s %4zu-d: worst error %.3g of tolerance (%.9g vs %.9g)\n",
			layers[l], dims, r, ours[worst], ref[worst]);
		ASSERT_MSG(r <= 1.0, "%s: element %zu: ours %.9g, TensorFlow.js %.9g", layers[l],
			worst, ours[worst], ref[worst]);
		free(ours);
		free(ref);
		ours = ref = NULL;
	}
	free(x);
	nn_net_destroy(net);
	nn_st_close(f);
	nn_backend_close(b);
}

/* The same check on the images moved one pixel right and down (what
 * padding the top and left instead of the bottom and right would amount
 * to at the first layer) must fail: the tolerance sees such errors. */
TEST(one_pixel_shift_is_detected)
{
	if (find_files())
		SKIP("no converted weights (run tools/weights/install.sh): %s", weights_path);
	nn_backend *b = NULL;
	nn_net *net = NULL;
	nn_st_file *f = NULL;
	char err[256] = "";
	int n = 0, rows = 0;
	size_t xs = 0, cols = 0, worst = 0;
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn_st_open(reference_path, &f, err, sizeof(err)));
	float *x = read_ref(f, "x", &n, &xs), *ref = read_ref(f, "block_10", &rows, &cols);
	ASSERT(x && ref && rows == n && cols == 96);
	float *moved = calloc((size_t)n * xs, sizeof(float)), *ours = malloc(sizeof(float) * n * 96);
	ASSERT(moved && ours);
	for (int p = 0; p < n * 3; p++)
		for (int y = 1; y < 224; y++)
			memcpy(moved + ((size_t)p * 224 + y) * 224 + 1, x + ((size_t)p * 224 + y - 1) * 224,
				sizeof(float) * 223);
	struct nn_net_opts o = { .max_batch = n, .inference_only = 1 };
	ASSERT_OK(nn_net_open_file(b, weights_path, &o, &net, err, sizeof(err)));
	ASSERT_OK(nn_net_features(net, "block_10", moved, n, ours));
	double r = compare(ours, ref, (size_t)n * 96, &worst);
	fprintf(stderr, "  shifted: worst error %.3g of tolerance\n", r);
	ASSERT_MSG(r > 10.0, "a one-pixel shift stays within %.3g of the tolerance", r);
	free(x);
	free(ref);
	free(moved);
	free(ours);
	nn_net_destroy(net);
	nn_st_close(f);
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(matches_tensorflow_js),
	T(one_pixel_shift_is_detected),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
