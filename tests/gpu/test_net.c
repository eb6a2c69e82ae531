/* Nets end to end on the CPU backend: construction (shapes, names, memory
 * plans, errors), a whole net's backward against finite differences, a
 * residual graph with every layer kind (fan-out gradients, in-place
 * layers, batch norm), training that fits a fixed batch, and AlexNet and
 * CNN-F at 224.
 *
 * Finite differences through a whole net run through the float net itself,
 * in training mode with every forward replaying the same dropout masks
 * (nn_net_set_rng). Per tensor (and for the input) the three elements with
 * the largest gradient are checked with a central difference of step
 * 1e-3: large gradients stand well above the loss's float rounding and
 * above the error a step picks up when it moves a ReLU input or a
 * max-pool winner across its switch point. Tolerance |g - fd| <= 1e-4 +
 * 2e-2 |fd|. (Every gradient of whole nets is also compared with PyTorch
 * in double precision by torch_parity.py where PyTorch is installed.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "harness.h"
#include "net_priv.h"
#include "nn.h"
#include "nn_test.h"

#define NET_FD_STEP 1e-3f
#define NET_FD_ATOL 1e-4
#define NET_FD_RTOL 2e-2
#define NET_FD_SEED 777
#define NET_FD_PER_TENSOR 3

static nn_backend *cpu(void)
{
	nn_backend *b = NULL;
	if (nn_backend_open("cpu", &b))
		return NULL;
	return b;
}

TEST(backend_open)
{
	nn_backend *b;
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_STR_EQ(nn_backend_name(b), "cpu");
	ASSERT_CONTAINS(nn_backend_device(b), "CPU");
	nn_backend_close(b);
	ASSERT_EQ_INT(nn_backend_open("tpu", &b), VR_EINVAL);
	ASSERT(b == NULL);
	/* auto always opens something and says which. */
	ASSERT_OK(nn_backend_open("auto", &b));
	if (!strcmp(nn_backend_name(b), "cpu"))
		ASSERT_CONTAINS(nn_backend_device(b), "cuda: ");
	nn_backend_close(b);
	int rc = nn_backend_open("cuda", &b);
	if (rc == 0)
		nn_backend_close(b);
	else
		ASSERT(rc == VR_EUNSUPPORTED || rc == VR_EDEVICE);
}

TEST(arch_info)
{
	struct nn_arch_info a;
	int n = 0, base = 0;
	for (const char *const *name = nn_arch_names(); *name; name++, n++) {
		ASSERT_OK(nn_arch_info(*name, &a));
		base += !strcmp(*name, "alexnet") + !strcmp(*name, "cnnf") + !strcmp(*name, "small");
	}
	ASSERT_EQ_INT(base, 3);
	ASSERT(n >= 3);
	ASSERT_EQ_INT(nn_arch_info("no-such-net", &a), VR_ENOTFOUND);
	ASSERT_OK(nn_arch_info("alexnet", &a));
	ASSERT_EQ_INT(a.num_outputs, 100);
	ASSERT_EQ_INT(a.input_size, 224);
	ASSERT_NEAR(a.mean[0], 0.485, 1e-7);
	ASSERT_NEAR(a.std[2], 0.225, 1e-7);
	ASSERT_OK(nn_arch_info("cnnf", &a));
	ASSERT_EQ_INT(a.num_outputs, 50);
	ASSERT_OK(nn_arch_info("small", &a));
	ASSERT_EQ_INT(a.input_size, 64);
	ASSERT_EQ_INT(nn_arch_info("vgg", &a), VR_ENOTFOUND);
}

/* Builds at the smallest input each arch declares, and fails clearly one below. */
TEST(min_input_sizes)
{
	nn_backend *b = cpu();
	char err[256];
	for (const char *const *name = nn_arch_names(); *name; name++) {
		struct nn_arch_info a;
		nn_net *net;
		ASSERT_OK(nn_arch_info(*name, &a));
		struct nn_net_opts o = { .input_size = a.input_size, .max_batch = 1,
			.inference_only = 1, .num_outputs = 3 };
		o.input_size = a.min_input_size;
		ASSERT_OK(nn_net_create(b, *name, &o, &net, err, sizeof(err)));
		nn_net_destroy(net);
		o.input_size = a.min_input_size - 1;
		ASSERT_EQ_INT(nn_net_create(b, *name, &o, &net, err, sizeof(err)), VR_EINVAL);
		ASSERT(net == NULL);
		ASSERT_CONTAINS(err, *name);
	}
	nn_net *net;
	ASSERT_EQ_INT(nn_net_create(b, "nope", NULL, &net, err, sizeof(err)), VR_ENOTFOUND);
	ASSERT_CONTAINS(err, "nope");
	struct nn_net_opts o = { .output_layer = "fc9", .inference_only = 1, .input_size = 16 };
	ASSERT_EQ_INT(nn_net_create(b, "small", &o, &net, err, sizeof(err)), VR_ENOTFOUND);
	ASSERT_CONTAINS(err, "fc9");
	nn_backend_close(b);
}

/* torchvision's AlexNet state_dict: names, shapes and parameter count. */
TEST(alexnet_tensors)
{
	static const struct { const char *name; int ndim, shape[4]; } want[] = {
		{ "features.0.weight", 4, { 64, 3, 11, 11 } }, { "features.0.bias", 1, { 64 } },
		{ "features.3.weight", 4, { 192, 64, 5, 5 } }, { "features.3.bias", 1, { 192 } },
		{ "features.6.weight", 4, { 384, 192, 3, 3 } }, { "features.6.bias", 1, { 384 } },
		{ "features.8.weight", 4, { 256, 384, 3, 3 } }, { "features.8.bias", 1, { 256 } },
		{ "features.10.weight", 4, { 256, 256, 3, 3 } }, { "features.10.bias", 1, { 256 } },
		{ "classifier.1.weight", 2, { 4096, 9216 } }, { "classifier.1.bias", 1, { 4096 } },
		{ "classifier.4.weight", 2, { 4096, 4096 } }, { "classifier.4.bias", 1, { 4096 } },
		{ "classifier.6.weight", 2, { 1000, 4096 } }, { "classifier.6.bias", 1, { 1000 } },
	};
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .num_outputs = 1000, .max_batch = 1, .inference_only = 1 };
	ASSERT_OK(nn_net_create(b, "alexnet", &o, &net, NULL, 0));
	ASSERT_EQ_INT(nn_net_tensor_count(net), 16);
	size_t total = 0;
	for (int i = 0; i < 16; i++) {
		struct nn_tensor_info t;
		ASSERT_OK(nn_net_tensor_at(net, i, &t));
		ASSERT_STR_EQ(t.name, want[i].name);
		ASSERT_EQ_INT(t.ndim, want[i].ndim);
		for (int d = 0; d < t.ndim; d++)
			ASSERT_EQ_INT(t.shape[d], want[i].shape[d]);
		total += t.numel;
	}
	ASSERT_EQ_INT(total, 61100840);      /* torchvision's count */
	size_t size;
	ASSERT_OK(nn_net_layer_size(net, "fc7", &size));
	ASSERT_EQ_INT(size, 4096);
	ASSERT_OK(nn_net_layer_size(net, "pool5", &size));
	ASSERT_EQ_INT(size, 9216);
	ASSERT_EQ_INT(nn_net_layer_size(net, "fc8", &size), VR_ENOTFOUND);
	nn_net_destroy(net);
	nn_backend_close(b);
}

static float *random_images(int n, int s, uint64_t seed)
{
	float *x = malloc(sizeof(float) * n * 3 * s * s);
	fill_uniform(x, (size_t)n * 3 * s * s, seed, -2, 2);
	return x;
}

static void check_224(const char *arch, int k, size_t pool5)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .max_batch = 2, .inference_only = 1 };
	ASSERT_OK(nn_net_create(b, arch, &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 1));
	int c, h, w;
	nn_net_output_dims(net, &c, &h, &w);
	ASSERT_EQ_INT(c, k);
	ASSERT_EQ_INT(h * w, 1);
	ASSERT_EQ_INT(nn_net_output_size(net), k);
	ASSERT_EQ_INT(nn_net_num_outputs(net), k);
	ASSERT_EQ_INT(nn_net_input_size(net), 224);
	size_t size;
	ASSERT_OK(nn_net_layer_size(net, "pool5", &size));
	ASSERT_EQ_INT(size, pool5);
	float *x = random_images(2, 224, 5), *y = malloc(sizeof(float) * 2 * k);
	float *f7 = malloc(sizeof(float) * 2 * 4096);
	ASSERT_OK(nn_net_forward(net, x, 2, 0, y));
	int nonzero = 0;
	for (int i = 0; i < 2 * k; i++) {
		ASSERT_MSG(isfinite(y[i]), "output %d is %g", i, y[i]);
		nonzero += y[i] != 0.0f;
	}
	ASSERT(nonzero > k);
	/* The two images differ, so do their outputs. */
	ASSERT(memcmp(y, y + k, sizeof(float) * k));
	ASSERT_OK(nn_net_features(net, "fc7", x, 2, f7));
	for (int i = 0; i < 2 * 4096; i++)
		ASSERT(f7[i] >= 0.0f);                /* after its ReLU */
	free(x); free(y); free(f7);
	nn_net_destroy(net);
	nn_backend_close(b);
}

TEST(alexnet_224_forward)
{
	check_224("alexnet", 100, 256 * 6 * 6);
}

TEST(cnnf_224_forward)
{
	check_224("cnnf", 50, 256 * 5 * 5);
}

TEST(cnnf_227_pool5)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .input_size = 227, .max_batch = 1, .inference_only = 1 };
	ASSERT_OK(nn_net_create(b, "cnnf", &o, &net, NULL, 0));
	size_t size;
	ASSERT_OK(nn_net_layer_size(net, "pool5", &size));
	ASSERT_EQ_INT(size, 256 * 6 * 6);     /* Chatfield's 6x6 */
	struct nn_tensor_info t;
	ASSERT_OK(nn_net_tensor_find(net, "classifier.0.weight", &t));
	ASSERT_EQ_INT(t.shape[1], 9216);
	ASSERT_OK(nn_net_tensor_find(net, "classifier.6.bias", &t));
	ASSERT_EQ_INT(t.shape[0], 50);
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* An inference-only net (activation buffers reused) computes exactly what a
 * training net does. */
TEST(inference_only_equals_training_net)
{
	nn_backend *b = cpu();
	nn_net *inf, *tr;
	struct nn_net_opts o = { .input_size = 99, .max_batch = 3, .num_outputs = 7 };
	ASSERT_OK(nn_net_create(b, "cnnf", &o, &tr, NULL, 0));
	o.inference_only = 1;
	ASSERT_OK(nn_net_create(b, "cnnf", &o, &inf, NULL, 0));
	ASSERT_OK(nn_net_init(tr, 11));
	ASSERT_OK(nn_net_init(inf, 11));
	size_t fl;
	ASSERT_OK(nn_net_layer_size(tr, "features.6", &fl));
	float *x = random_images(3, 99, 12), y1[21], y2[21];
	float *f1 = malloc(sizeof(float) * 3 * fl), *f2 = malloc(sizeof(float) * 3 * fl);
	ASSERT_OK(nn_net_forward(tr, x, 3, 0, y1));
	ASSERT_OK(nn_net_forward(inf, x, 3, 0, y2));
	ASSERT(!memcmp(y1, y2, sizeof(y1)));
	ASSERT_OK(nn_net_features(tr, "features.6", x, 2, f1));
	ASSERT_OK(nn_net_features(inf, "features.6", x, 2, f2));
	ASSERT(!memcmp(f1, f2, sizeof(float) * 2 * fl));
	ASSERT_EQ_INT(nn_net_backward(inf, y2, NULL), VR_ESTATE);
	free(x); free(f1); free(f2);
	nn_net_destroy(tr);
	nn_net_destroy(inf);
	nn_backend_close(b);
}

/* AlexNet below 224 upsamples in its adaptive pool (1x1 -> 6x6 at 63). */
TEST(alexnet_adaptive_pool)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .input_size = 63, .max_batch = 1, .inference_only = 1 };
	ASSERT_OK(nn_net_create(b, "alexnet", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 13));
	float *x = random_images(1, 63, 14), p5[256], avg[9216];
	ASSERT_OK(nn_net_features(net, "pool5", x, 1, p5));
	ASSERT_OK(nn_net_features(net, "avgpool", x, 1, avg));
	for (int c = 0; c < 256; c++)
		for (int i = 0; i < 36; i++)
			ASSERT(avg[c * 36 + i] == p5[c]);
	free(x);
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* nn_net_set_stop's stop: says stop at its *arg-th call (counting down),
 * and counts calls past that in the next int. */
static int stop_at_call(void *arg)
{
	int *left = arg;
	if (--left[0] > 0)
		return 0;
	left[1]++;
	return 1;
}

/* A forward whose stop says so partway returns VR_ECANCELLED at once (one
 * more call asked nothing), writes no output, refuses a backward, and the
 * next forward, stop taken off, gives what an uncancelled one gives. */
TEST(forward_stops_between_layers)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .input_size = 16, .max_batch = 2 };
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 3));
	size_t in = 2 * nn_net_input_count(net), out = 2 * nn_net_output_size(net);
	float *x = malloc(sizeof(float) * in), *y = malloc(sizeof(float) * out),
	      *want = malloc(sizeof(float) * out), *dy = calloc(out, sizeof(float));
	for (size_t i = 0; i < in; i++)
		x[i] = (float)((i * 7919) % 200) / 100.0f - 1.0f;
	ASSERT_OK(nn_net_forward(net, x, 2, 0, want));
	int calls[2] = { 3, 0 };
	nn_net_set_stop(net, stop_at_call, calls);
	for (size_t i = 0; i < out; i++)
		y[i] = -12345.0f;
	ASSERT_EQ_INT(nn_net_forward(net, x, 2, 1, y), VR_ECANCELLED);
	ASSERT_EQ_INT(calls[1], 1);
	ASSERT_CONTAINS(nn_net_errmsg(net), "stopped before");
	for (size_t i = 0; i < out; i++)
		ASSERT(y[i] == -12345.0f);
	ASSERT_EQ_INT(nn_net_backward(net, dy, NULL), VR_ESTATE);
	nn_net_set_stop(net, NULL, NULL);
	ASSERT_OK(nn_net_forward(net, x, 2, 0, y));
	ASSERT(!memcmp(y, want, sizeof(float) * out));
	free(x);
	free(y);
	free(want);
	free(dy);
	nn_net_destroy(net);
	nn_backend_close(b);
}

TEST(init_is_seeded)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .input_size = 16, .max_batch = 1, .inference_only = 1 };
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	size_t n = nn_net_param_count(net);
	float *a = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
	ASSERT_OK(nn_net_init(net, 5));
	ASSERT_OK(nn_net_params_get(net, a));
	ASSERT_OK(nn_net_init(net, 5));
	ASSERT_OK(nn_net_params_get(net, c));
	ASSERT(!memcmp(a, c, sizeof(float) * n));
	ASSERT_OK(nn_net_init(net, 6));
	ASSERT_OK(nn_net_params_get(net, c));
	ASSERT(memcmp(a, c, sizeof(float) * n));
	/* PyTorch's bound: features.0 has fan-in 27. */
	struct nn_tensor_info t;
	ASSERT_OK(nn_net_tensor_find(net, "features.0.weight", &t));
	float bound = 1.0f / sqrtf(27.0f), lo = 0, hi = 0;
	for (size_t i = 0; i < t.numel; i++) {
		float v = a[t.offset + i];
		ASSERT(v >= -bound && v <= bound);
		lo = v < lo ? v : lo;
		hi = v > hi ? v : hi;
	}
	ASSERT(lo < -0.8f * bound && hi > 0.8f * bound);
	free(a);
	free(c);
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* ---- Finite differences through a whole net ------------------------------ */

/* The loss of one training forward with the replayed dropout masks. */
static double net_loss(nn_net *net, const float *x, int n, const float *r, float *y)
{
	nn_net_set_rng(net, NET_FD_SEED, 0);
	if (nn_net_forward(net, x, n, 1, y))
		return NAN;
	double l = 0;
	for (size_t i = 0; i < (size_t)n * nn_net_output_size(net); i++)
		l += (double)r[i] * y[i];
	return l;
}

/* The central difference of the loss in *v (an element of the parameter
 * arena copy p, or of the input when p is NULL). */
static double central(nn_net *net, float *v, float *p, float *x, int n, const float *r, float *y)
{
	double l[2];
	float keep = *v;
	for (int k = 0; k < 2; k++) {
		*v = keep + (k ? -NET_FD_STEP : NET_FD_STEP);
		if (p)
			nn_net_params_set(net, p);
		l[k] = net_loss(net, x, n, r, y);
	}
	*v = keep;
	if (p)
		nn_net_params_set(net, p);
	return (l[0] - l[1]) / (2 * NET_FD_STEP);
}

/* The indices of the k largest |g[i]|, i < n (n >= k), into top. */
static void largest(const float *g, size_t n, size_t *top, int k)
{
	for (int j = 0; j < k; j++) {
		size_t best = n;
		for (size_t i = 0; i < n; i++) {
			int taken = 0;
			for (int q = 0; q < j; q++)
				taken |= top[q] == i;
			if (!taken && (best == n || fabsf(g[i]) > fabsf(g[best])))
				best = i;
		}
		top[j] = best;
	}
}

/* Checks the largest gradients of every trainable tensor and the input. */
static void check_net_fd(nn_net *net, float *x, int n)
{
	size_t np = nn_net_param_count(net), out = (size_t)n * nn_net_output_size(net);
	size_t xl = (size_t)n * nn_net_input_count(net);
	float *p = malloc(sizeof(float) * np), *g = malloc(sizeof(float) * np);
	float *r = malloc(sizeof(float) * out), *y = malloc(sizeof(float) * out);
	float *dx = malloc(sizeof(float) * xl);
	fill_uniform(r, out, 99, -1, 1);
	ASSERT_OK(nn_net_zero_grad(net));
	ASSERT(isfinite(net_loss(net, x, n, r, y)));
	ASSERT_OK(nn_net_backward(net, r, dx));
	ASSERT_OK(nn_net_grads_get(net, g));
	ASSERT_OK(nn_net_params_get(net, p));
	for (int t = -1; t < nn_net_tensor_count(net); t++) {
		struct nn_tensor_info ti = { .name = "input", .numel = xl };
		size_t top[NET_FD_PER_TENSOR];
		if (t >= 0)
			ASSERT_OK(nn_net_tensor_at(net, t, &ti));
		if (!ti.trainable && t >= 0)
			continue;
		const float *grad = t >= 0 ? g + ti.offset : dx;
		int k_n = ti.numel < NET_FD_PER_TENSOR ? (int)ti.numel : NET_FD_PER_TENSOR;
		largest(grad, ti.numel, top, k_n);
		for (int k = 0; k < k_n; k++) {
			size_t i = top[k];
			double fd = t >= 0 ? central(net, p + ti.offset + i, p, x, n, r, y) :
				central(net, x + i, NULL, x, n, r, y);
			ASSERT_MSG(fabs(grad[i] - fd) <= NET_FD_ATOL + NET_FD_RTOL * fabs(fd),
				"%s[%zu]: gradient %.7g, finite difference %.7g", ti.name, i, grad[i], fd);
		}
	}
	free(p); free(g); free(r); free(y); free(dx);
}

TEST(small_net_backward_fd)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .num_outputs = 5, .input_size = 16, .max_batch = 2 };
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 21));
	float *x = random_images(2, 16, 22);
	check_net_fd(net, x, 2);
	free(x);
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* A residual graph with every layer kind: conv without bias, batch norm,
 * ReLU6 in place, a branch (depthwise, ReLU, pointwise) added back to its
 * input (so that tensor's gradient sums two readers), LRN, average, max and
 * global pooling, dropout, linear. */
static int build_graph(nn_net *net)
{
	int t = nn__conv(net, "stem", 0, 8, 3, 1, 1, 1, 0);
	t = nn__batchnorm(net, "bn", t, 1e-5f);
	t = nn__relu6(net, "act", t);
	int br = nn__conv(net, "dw", t, 8, 3, 1, 1, 8, 1);
	br = nn__relu(net, "dw_act", br);
	br = nn__conv(net, "pw", br, 8, 1, 1, 0, 1, 1);
	t = nn__add(net, "res", t, br);
	t = nn__lrn(net, "lrn", t, 3, 0.5f, 0.75f, 1.0f);
	t = nn__avgpool(net, "avg", t, 2, 2, 0);
	t = nn__maxpool(net, "max", t, 3, 1, 1);
	t = nn__adaptive_avgpool(net, "gap", t, 1, 1);
	t = nn__dropout(net, "drop", t, 0.5f);
	return nn__linear(net, "fc", t, 3);
}

static const struct nn__arch graph_arch = {
	{ "graph", "test graph", 3, 8, 8, { 0, 0, 0 }, { 1, 1, 1 } }, build_graph };

TEST(residual_graph_backward_fd)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .max_batch = 2 };
	ASSERT_OK(nn__net_create_with(b, &graph_arch, &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 31));
	/* Batch-norm statistics away from the identity. */
	size_t np = nn_net_param_count(net), nt = nn_net_trainable_count(net);
	float *p = malloc(sizeof(float) * np);
	struct nn_tensor_info mean, var;
	ASSERT_OK(nn_net_params_get(net, p));
	ASSERT_OK(nn_net_tensor_find(net, "bn.running_mean", &mean));
	ASSERT_OK(nn_net_tensor_find(net, "bn.running_var", &var));
	ASSERT(!mean.trainable && mean.offset >= nt);
	fill_uniform(p + mean.offset, 8, 32, -0.2f, 0.2f);
	fill_uniform(p + var.offset, 8, 33, 0.5f, 2.0f);
	ASSERT_OK(nn_net_params_set(net, p));
	float *x = random_images(2, 8, 34);
	check_net_fd(net, x, 2);
	free(x);
	free(p);
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* ---- Cuts and heads -------------------------------------------------------
 * A net that starts at a cut must compute exactly what the full net
 * computes above it: the same outputs from the cut layer's activations and
 * the same parameter gradients; a head's backward is checked with finite
 * differences. MobileNetV2 at 32 px: its residual blocks and feature taps
 * are what the cut rules are about. */

#define CUT_S 32
#define CUT_K 6

/* The full mobilenet_v2 (output_layer NULL) or its map at block_10's end. */
static nn_net *mobilenet(nn_backend *b, const char *output_layer, int inference)
{
	nn_net *net = NULL;
	struct nn_net_opts o = { .num_outputs = CUT_K, .input_size = CUT_S, .max_batch = 2,
		.output_layer = output_layer, .inference_only = inference };
	if (nn_net_create(b, "mobilenet_v2", &o, &net, NULL, 0) || nn_net_init(net, 41))
		return NULL;
	return net;
}

/* Fails unless every trainable tensor of sub has the same gradient in full. */
static void same_grads(nn_net *sub, nn_net *full, double rtol)
{
	float *gs = malloc(sizeof(float) * nn_net_trainable_count(sub) + 4);
	float *gf = malloc(sizeof(float) * nn_net_trainable_count(full) + 4);
	ASSERT_OK(nn_net_grads_get(sub, gs));
	ASSERT_OK(nn_net_grads_get(full, gf));
	for (int t = 0; t < nn_net_tensor_count(sub); t++) {
		struct nn_tensor_info a, c;
		ASSERT_OK(nn_net_tensor_at(sub, t, &a));
		if (!a.trainable)
			continue;
		ASSERT_OK(nn_net_tensor_find(full, a.name, &c));
		double *ref = malloc(sizeof(double) * a.numel);
		for (size_t i = 0; i < a.numel; i++)
			ref[i] = gf[c.offset + i];
		ASSERT_CLOSE(gs + a.offset, ref, a.numel, 1e-6, rtol, a.name);
		free(ref);
	}
	free(gs);
	free(gf);
}

TEST(cut_net_equals_the_full_nets_upper_part)
{
	nn_backend *b = cpu();
	nn_net *full = mobilenet(b, NULL, 0), *trunk = mobilenet(b, "block_10_project_BN", 1), *cut;
	ASSERT(full && trunk);
	struct nn_net_opts o = { .num_outputs = CUT_K, .input_size = CUT_S, .max_batch = 2,
		.input_layer = "block_10" };
	ASSERT_OK(nn_net_create(b, "mobilenet_v2", &o, &cut, NULL, 0));
	int c, h, w;
	nn_net_input_dims(cut, &c, &h, &w);
	ASSERT(c == 96 && h == 2 && w == 2);          /* the tap names the map it pools */
	ASSERT_EQ_INT(nn_net_tensor_find(cut, "Conv1.weight", &(struct nn_tensor_info){ 0 }),
		VR_ENOTFOUND);
	ASSERT_EQ_INT(nn_net_tensor_find(cut, "block_10_project.weight",
		&(struct nn_tensor_info){ 0 }), VR_ENOTFOUND);
	ASSERT(nn_net_trainable_count(cut) < nn_net_trainable_count(full));
	int copied;
	ASSERT_OK(nn_net_params_copy(cut, full, &copied));
	ASSERT_EQ_INT(copied, nn_net_tensor_count(cut));

	size_t ni = nn_net_input_count(cut), no = nn_net_output_size(full);
	float *x = random_images(2, CUT_S, 42), *a = malloc(sizeof(float) * 2 * ni);
	float *yf = malloc(sizeof(float) * 2 * no), *yc = malloc(sizeof(float) * 2 * no);
	float *dy = malloc(sizeof(float) * 2 * no);
	double *ref = malloc(sizeof(double) * 2 * no);
	ASSERT_OK(nn_net_forward(trunk, x, 2, 0, a));
	ASSERT_OK(nn_net_zero_grad(full));
	ASSERT_OK(nn_net_zero_grad(cut));
	ASSERT_OK(nn_net_forward(full, x, 2, 0, yf));
	ASSERT_OK(nn_net_forward(cut, a, 2, 0, yc));
	for (size_t i = 0; i < 2 * no; i++)
		ref[i] = yf[i];
	ASSERT_CLOSE(yc, ref, 2 * no, 1e-6, 1e-5, "cut net output");
	fill_uniform(dy, 2 * no, 43, -1, 1);
	ASSERT_OK(nn_net_backward(full, dy, NULL));
	ASSERT_OK(nn_net_backward(cut, dy, NULL));
	same_grads(cut, full, 1e-4);
	/* A cut net takes activations, not images. */
	const uint8_t img[CUT_S * CUT_S * 3] = { 0 }, *imgs[1] = { img };
	ASSERT_EQ_INT(nn_net_forward_u8(cut, imgs, 1, 0, yc), VR_EINVAL);
	ASSERT_CONTAINS(nn_net_errmsg(cut), "block_10");
	free(x); free(a); free(yf); free(yc); free(dy); free(ref);
	nn_net_destroy(full);
	nn_net_destroy(trunk);
	nn_net_destroy(cut);
	nn_backend_close(b);
}

/* A head on a cut: its backward passes finite differences, and the
 * serving net (trunk + the same head on images) agrees with it on cached
 * activations. head_norm: the head ends with "head.norm" (no parameter)
 * and every row of its output has unit length. */
static void head_on_a_cut(int head_norm)
{
	nn_backend *b = cpu();
	nn_net *head, *serve, *trunk = mobilenet(b, "block_5_add", 1);
	/* "block_5" ends with a residual add: a cut there is legal. */
	struct nn_net_opts o = { .num_outputs = CUT_K, .input_size = CUT_S, .max_batch = 2,
		.input_layer = "block_5", .head_width = 8, .head_norm = head_norm };
	ASSERT(trunk);
	ASSERT_OK(nn_net_create(b, "mobilenet_v2", &o, &head, NULL, 0));
	ASSERT_EQ_INT(nn_net_tensor_count(head), 4);  /* head.conv and head.fc, weight + bias */
	ASSERT_OK(nn_net_init(head, 44));
	float *a = malloc(sizeof(float) * 2 * nn_net_input_count(head));
	float *x = random_images(2, CUT_S, 45);
	fill_uniform(a, 2 * nn_net_input_count(head), 46, -1, 2);
	check_net_fd(head, a, 2);

	/* The same head behind the trunk, on images. */
	o.input_layer = NULL;
	o.head_layer = "block_5";
	o.inference_only = 1;
	ASSERT_OK(nn_net_create(b, "mobilenet_v2", &o, &serve, NULL, 0));
	ASSERT_OK(nn_net_init(serve, 41));            /* the trunk's seed, as mobilenet() */
	ASSERT_OK(nn_net_params_copy(serve, head, NULL));
	float ys[2 * CUT_K], yh[2 * CUT_K];
	double ref[2 * CUT_K];
	ASSERT_OK(nn_net_forward(serve, x, 2, 0, ys));
	ASSERT_OK(nn_net_forward(trunk, x, 2, 0, a));
	ASSERT_OK(nn_net_forward(head, a, 2, 0, yh));
	for (int i = 0; i < 2 * CUT_K; i++)
		ref[i] = ys[i];
	ASSERT_CLOSE(yh, ref, 2 * CUT_K, 1e-6, 1e-5, "head on cached activations vs trunk + head");
	for (int i = 0; head_norm && i < 2; i++) {
		double norm = 0;
		for (int k = 0; k < CUT_K; k++)
			norm += (double)yh[i * CUT_K + k] * yh[i * CUT_K + k];
		ASSERT_MSG(fabs(norm - 1) < 1e-5, "row %d has squared length %g", i, norm);
	}
	free(a); free(x);
	nn_net_destroy(head);
	nn_net_destroy(serve);
	nn_net_destroy(trunk);
	nn_backend_close(b);
}

TEST(head_on_a_cut_backward_fd_and_serving_net_agrees)
{
	head_on_a_cut(0);
}

TEST(normalised_head_unit_rows_fd_and_serving_net_agrees)
{
	head_on_a_cut(1);
}

TEST(cut_errors)
{
	nn_backend *b = cpu();
	nn_net *net;
	char err[256];
	struct nn_net_opts o = { .input_size = CUT_S, .max_batch = 2, .input_layer = "block_11_expand" };
	/* block_11 adds its input back: cutting inside it is refused. */
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "residual");
	ASSERT_CONTAINS(err, "block_11_add");
	o.input_layer = "no_such_layer";
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_ENOTFOUND);
	ASSERT_CONTAINS(err, "no_such_layer");
	o.input_layer = "output";
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_EINVAL);
	o.input_layer = NULL;
	o.head_layer = "block_10";
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "head_width");
	o.head_layer = "block_5";
	o.input_layer = "block_10";
	o.head_width = 4;
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "below the cut");
	o.head_layer = NULL;
	o.head_width = 0;
	o.head_norm = 1;
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "head_norm");
	o.head_norm = 0;
	/* A cut in a plain chain (AlexNet's fc6 after its ReLU) keeps the rest. */
	struct nn_net_opts a = { .num_outputs = 3, .max_batch = 1, .input_size = 63,
		.input_layer = "fc6" };
	ASSERT_OK(nn_net_create(b, "alexnet", &a, &net, err, sizeof(err)));
	ASSERT_EQ_INT(nn_net_input_count(net), 4096);
	ASSERT_EQ_INT(nn_net_tensor_count(net), 4);   /* classifier.4 and .6 */
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* ---- Training ----------------------------------------------------------- */

static double mse(const float *y, const float *t, size_t n, float *dy)
{
	double l = 0;
	for (size_t i = 0; i < n; i++) {
		double d = (double)y[i] - t[i];
		l += d * d / n;
		if (dy)
			dy[i] = (float)(2 * d / n);
	}
	return l;
}

TEST(small_net_fits_a_batch)
{
	enum { N = 8, K = 4, S = 32 };
	nn_backend *b = cpu();
	nn_net *net;
	nn_optim *opt;
	struct nn_net_opts o = { .num_outputs = K, .input_size = S, .max_batch = N };
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 41));
	ASSERT_OK(nn_optim_create(net, &(struct nn_optim_opts){ .kind = NN_OPTIM_ADAM,
		.lr = 1e-3f, .weight_decay = 1e-4f }, &opt));
	float *x = random_images(N, S, 42), target[N * K], y[N * K], dy[N * K];
	fill_uniform(target, N * K, 43, -1, 1);
	ASSERT_OK(nn_net_forward(net, x, N, 0, y));
	double first = mse(y, target, N * K, NULL), last = 0;
	for (int step = 0; step < 60; step++) {
		ASSERT_OK(nn_net_zero_grad(net));
		ASSERT_OK(nn_net_forward(net, x, N, 1, y));
		mse(y, target, N * K, dy);
		ASSERT_OK(nn_net_backward(net, dy, NULL));
		ASSERT_OK(nn_optim_step(opt));
	}
	ASSERT_OK(nn_net_forward(net, x, N, 0, y));
	last = mse(y, target, N * K, NULL);
	ASSERT_MSG(last < 0.2 * first, "loss %.4f -> %.4f after 60 steps", first, last);
	nn_optim_destroy(opt);
	free(x);
	nn_net_destroy(net);
	nn_backend_close(b);
}

TEST(dropout_only_in_training)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .num_outputs = 6, .input_size = 16, .max_batch = 2 };
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 51));
	float *x = random_images(2, 16, 52), e1[12], e2[12], t1[12], t2[12];
	ASSERT_OK(nn_net_forward(net, x, 2, 0, e1));
	ASSERT_OK(nn_net_forward(net, x, 2, 1, t1));
	ASSERT_OK(nn_net_forward(net, x, 2, 1, t2));
	ASSERT_OK(nn_net_forward(net, x, 2, 0, e2));
	ASSERT(!memcmp(e1, e2, sizeof(e1)));
	ASSERT(memcmp(e1, t1, sizeof(e1)));
	ASSERT(memcmp(t1, t2, sizeof(t1)));       /* a fresh mask per step */
	/* The same seed replays the same masks. */
	ASSERT_OK(nn_net_init(net, 51));
	ASSERT_OK(nn_net_forward(net, x, 2, 1, t2));
	ASSERT(!memcmp(t1, t2, sizeof(t1)));
	free(x);
	nn_net_destroy(net);
	nn_backend_close(b);
}

/* Forward to fc7 and backward from it: the last layer gets no gradient. */
TEST(output_layer_fc7)
{
	nn_backend *b = cpu();
	nn_net *net;
	struct nn_net_opts o = { .input_size = 67, .max_batch = 2, .output_layer = "fc7" };
	ASSERT_OK(nn_net_create(b, "cnnf", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 61));
	ASSERT_EQ_INT(nn_net_output_size(net), 4096);
	float *x = random_images(2, 67, 62), *y = malloc(sizeof(float) * 2 * 4096);
	float *g = malloc(sizeof(float) * nn_net_trainable_count(net));
	ASSERT_EQ_INT(nn_net_backward(net, y, NULL), VR_ESTATE);   /* no forward yet */
	ASSERT_CONTAINS(nn_net_errmsg(net), "forward");
	ASSERT_EQ_INT(nn_net_forward(net, x, 3, 0, y), VR_EINVAL);  /* over max_batch */
	ASSERT_OK(nn_net_forward(net, x, 2, 1, y));
	ASSERT_OK(nn_net_zero_grad(net));
	ASSERT_OK(nn_net_backward(net, y, NULL));
	ASSERT_OK(nn_net_grads_get(net, g));
	struct nn_tensor_info w6, w4;
	ASSERT_OK(nn_net_tensor_find(net, "classifier.6.weight", &w6));
	ASSERT_OK(nn_net_tensor_find(net, "classifier.3.weight", &w4));
	for (size_t i = 0; i < w6.numel; i++)
		ASSERT(g[w6.offset + i] == 0.0f);
	double sum = 0;
	for (size_t i = 0; i < w4.numel; i++)
		sum += fabsf(g[w4.offset + i]);
	ASSERT(sum > 0);
	free(x); free(y); free(g);
	nn_net_destroy(net);
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(backend_open),
	T(arch_info),
	T(min_input_sizes),
	T(alexnet_tensors),
	T(alexnet_224_forward),
	T(cnnf_224_forward),
	T(cnnf_227_pool5),
	T(inference_only_equals_training_net),
	T(alexnet_adaptive_pool),
	T(init_is_seeded),
	T(forward_stops_between_layers),
	T(small_net_backward_fd),
	T(residual_graph_backward_fd),
	T(small_net_fits_a_batch),
	T(dropout_only_in_training),
	T(output_layer_fc7),
	T(cut_net_equals_the_full_nets_upper_part),
	T(head_on_a_cut_backward_fd_and_serving_net_agrees),
	T(normalised_head_unit_rows_fd_and_serving_net_agrees),
	T(cut_errors),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
