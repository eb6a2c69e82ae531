/* The pieces the imported architectures add to gpu/: the zero-padding
 * layer (forward against a direct loop, backward as the crop, both with
 * accumulation, and inside a net: pad + unpadded convolution equals the
 * padded convolution, output and input gradient), and the shapes and
 * names of mobilenet_v2 and resnet50 (state_dict names and counts as
 * torchvision and Keras have them, feature layers, size limits). Values
 * of whole nets are checked against PyTorch (torch_parity.py) and
 * TensorFlow.js (test_tfjs.c). */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "err.h"
#include "harness.h"
#include "net_priv.h"
#include "nn.h"

static void fill(float *a, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		a[i] = 2.0f * nn_uniform01(seed, i) - 1.0f;
}

TEST(pad_forward_backward)
{
	struct nn_pad_shape s = { .n = 2, .c = 3, .h = 5, .w = 4, .top = 0, .bottom = 1,
		.left = 2, .right = 3 };
	ASSERT_OK(nn_pad_shape_check(&s));
	ASSERT_EQ_INT(s.oh, 6);
	ASSERT_EQ_INT(s.ow, 9);
	size_t xn = 2 * 3 * 5 * 4, yn = 2 * 3 * 6 * 9;
	float x[120], y[324], dy[324], dx[120];
	fill(x, xn, 1);
	fill(dy, yn, 2);
	nn_cpu_pad_fwd(&s, 2, x, y);
	for (int p = 0; p < 6; p++)
		for (int i = 0; i < 6; i++)
			for (int j = 0; j < 9; j++) {
				int si = i - s.top, sj = j - s.left;
				float want = si >= 0 && si < 5 && sj >= 0 && sj < 4 ?
					x[(p * 5 + si) * 4 + sj] : 0.0f;
				ASSERT(y[(p * 6 + i) * 9 + j] == want);
			}
	nn_cpu_pad_bwd(&s, 2, dy, dx, 0);
	for (int p = 0; p < 6; p++)
		for (int i = 0; i < 5; i++)
			for (int j = 0; j < 4; j++)
				ASSERT(dx[(p * 5 + i) * 4 + j] == dy[(p * 6 + i + s.top) * 9 + j + s.left]);
	nn_cpu_pad_bwd(&s, 2, dy, dx, 1);
	ASSERT(dx[7] == 2.0f * dy[(1 + s.top) * 9 + 3 + s.left]);
	s.top = -1;
	ASSERT_EQ_INT(nn_pad_shape_check(&s), VR_EINVAL);
}

static int build_padded(nn_net *net)
{
	int t = nn__pad(net, "pad", 0, 1, 1, 1, 1);
	return nn__conv(net, "conv", t, 4, 3, 2, 0, 1, 1);
}

static int build_conv_pad(nn_net *net)
{
	return nn__conv(net, "conv", 0, 4, 3, 2, 1, 1, 1);
}

/* An explicit pad before an unpadded convolution is the padded
 * convolution: outputs and input gradients agree (to rounding). */
TEST(pad_layer_in_a_net)
{
	const struct nn__arch a = { { "a", "", 4, 9, 3, { 0, 0, 0 }, { 1, 1, 1 } }, build_padded };
	const struct nn__arch c = { { "a", "", 4, 9, 3, { 0, 0, 0 }, { 1, 1, 1 } },
		build_conv_pad };
	struct nn_net_opts o = { .max_batch = 2 };
	nn_backend *b;
	nn_net *na = NULL, *nc = NULL;
	float x[2 * 3 * 81], ya[2 * 4 * 25], yc[2 * 4 * 25], r[2 * 4 * 25], dxa[2 * 3 * 81],
		dxc[2 * 3 * 81];
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn__net_create_with(b, &a, &o, &na, NULL, 0));
	ASSERT_OK(nn__net_create_with(b, &c, &o, &nc, NULL, 0));
	ASSERT_EQ_INT(nn_net_output_size(na), 4 * 25);
	ASSERT_OK(nn_net_init(na, 3));
	ASSERT_OK(nn_net_init(nc, 3));
	fill(x, sizeof(x) / sizeof(x[0]), 4);
	fill(r, sizeof(r) / sizeof(r[0]), 5);
	ASSERT_OK(nn_net_forward(na, x, 2, 0, ya));
	ASSERT_OK(nn_net_forward(nc, x, 2, 0, yc));
	ASSERT_OK(nn_net_backward(na, r, dxa));
	ASSERT_OK(nn_net_backward(nc, r, dxc));
	for (size_t i = 0; i < sizeof(ya) / sizeof(ya[0]); i++)
		ASSERT_NEAR(ya[i], yc[i], 1e-6);
	for (size_t i = 0; i < sizeof(dxa) / sizeof(dxa[0]); i++)
		ASSERT_NEAR(dxa[i], dxc[i], 1e-6);
	nn_net_destroy(na);
	nn_net_destroy(nc);
	nn_backend_close(b);
}

/* Sum of numel over the tensors whose name ends with suffix. */
static size_t count_suffix(const nn_net *net, const char *suffix, int *tensors)
{
	size_t total = 0;
	*tensors = 0;
	for (int i = 0; i < nn_net_tensor_count(net); i++) {
		struct nn_tensor_info t;
		nn_net_tensor_at(net, i, &t);
		size_t ln = strlen(t.name), ls = strlen(suffix);
		if (ln >= ls && !strcmp(t.name + ln - ls, suffix)) {
			total += t.numel;
			(*tensors)++;
		}
	}
	return total;
}

TEST(mobilenet_v2_shapes)
{
	nn_backend *b;
	nn_net *net = NULL;
	char err[256];
	struct nn_net_opts o = { .max_batch = 1, .inference_only = 1 };
	struct nn_arch_info info;
	struct nn_tensor_info t;
	size_t size;
	int c, h, w, n;
	ASSERT_OK(nn_arch_info("mobilenet_v2", &info));
	ASSERT_EQ_INT(info.input_size, 224);
	ASSERT(info.mean[0] == 0 && info.std[0] == 1);
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)));
	/* nsfwjs's manifest: 266 tensors, 2,619,461 values, of which 34,112
	 * batch-norm statistics in 52 layers. */
	ASSERT_EQ_INT(nn_net_tensor_count(net), 266);
	ASSERT_EQ_INT(count_suffix(net, "", &n), 2619461);
	size_t stats = count_suffix(net, ".running_mean", &n) * 2;
	ASSERT_EQ_INT(stats, 34112);
	ASSERT_EQ_INT(n, 52);
	ASSERT_OK(nn_net_tensor_find(net, "block_13_depthwise.weight", &t));
	ASSERT_EQ_INT(t.shape[0], 576);
	ASSERT_EQ_INT(t.shape[1], 1);
	ASSERT_EQ_INT(t.shape[2], 3);
	ASSERT_OK(nn_net_tensor_find(net, "dense_1.weight", &t));
	ASSERT_EQ_INT(t.shape[0], 256);
	ASSERT_EQ_INT(t.shape[1], 1280);
	nn_net_output_dims(net, &c, &h, &w);
	ASSERT_EQ_INT(c, 5);
	static const struct { const char *layer; size_t size; } taps[] = {
		{ "block_1", 24 }, { "block_5", 32 }, { "block_10", 96 }, { "block_16", 320 },
		{ "avgpool", 1280 }, { "fc", 128 }, { "out_relu", 1280 * 7 * 7 },
		{ "block_12_pad", 0 },
	};
	for (size_t i = 0; i < sizeof(taps) / sizeof(taps[0]); i++) {
		int rc = nn_net_layer_size(net, taps[i].layer, &size);
		if (!taps[i].size) {
			ASSERT_EQ_INT(rc, VR_ENOTFOUND);    /* stride 1: no pad layer */
			continue;
		}
		ASSERT_OK(rc);
		ASSERT_EQ_INT(size, taps[i].size);
	}
	ASSERT_OK(nn_net_layer_size(net, "block_13_pad", &size));
	ASSERT_EQ_INT(size, 576 * 15 * 15);                  /* 14 + 0 + 1 */
	nn_net_destroy(net);
	/* Odd sides pad evenly (33, 17, 9, 5, 3: no pad layer at all); 32 is
	 * the smallest input. */
	o.input_size = 33;
	ASSERT_OK(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)));
	ASSERT_EQ_INT(nn_net_layer_size(net, "Conv1_pad", &size), VR_ENOTFOUND);
	ASSERT_EQ_INT(nn_net_layer_size(net, "block_1_pad", &size), VR_ENOTFOUND);   /* 17 */
	nn_net_destroy(net);
	o.input_size = 31;
	ASSERT_EQ_INT(nn_net_create(b, "mobilenet_v2", &o, &net, err, sizeof(err)), VR_EINVAL);
	nn_backend_close(b);
}

TEST(resnet50_shapes)
{
	nn_backend *b;
	nn_net *net = NULL;
	char err[256];
	struct nn_net_opts o = { .max_batch = 1, .inference_only = 1 };
	struct nn_tensor_info t;
	size_t size;
	int n;
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn_net_create(b, "resnet50", &o, &net, err, sizeof(err)));
	/* torchvision's resnet50().state_dict(): 320 entries, of which 53
	 * num_batches_tracked; 25,557,032 trainable parameters. */
	ASSERT_EQ_INT(nn_net_tensor_count(net), 320 - 53);
	ASSERT_EQ_INT(nn_net_num_outputs(net), 1000);
	count_suffix(net, ".running_var", &n);
	ASSERT_EQ_INT(n, 53);
	size_t trainable = 0;
	for (int i = 0; i < nn_net_tensor_count(net); i++) {
		nn_net_tensor_at(net, i, &t);
		trainable += t.trainable ? t.numel : 0;
	}
	ASSERT_EQ_INT(trainable, 25557032);
	ASSERT_OK(nn_net_tensor_find(net, "layer3.0.downsample.0.weight", &t));
	ASSERT_EQ_INT(t.shape[0], 1024);
	ASSERT_EQ_INT(t.shape[1], 512);
	ASSERT_OK(nn_net_tensor_find(net, "layer4.2.bn3.running_mean", &t));
	ASSERT_EQ_INT(t.numel, 2048);
	ASSERT_OK(nn_net_layer_size(net, "avgpool", &size));
	ASSERT_EQ_INT(size, 2048);
	ASSERT_OK(nn_net_layer_size(net, "layer4.2.relu", &size));
	ASSERT_EQ_INT(size, 2048 * 7 * 7);
	nn_net_destroy(net);
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(pad_forward_backward),
	T(pad_layer_in_a_net),
	T(mobilenet_v2_shapes),
	T(resnet50_shapes),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
