/* The architectures, each a straight list of builder calls whose layer
 * names follow PyTorch's nn.Sequential numbering, so a state_dict of the
 * same model (torchvision's AlexNet; CNN-F or the small net written as
 * nn.Sequential in the same order) maps tensor for tensor.
 *
 * - alexnet: torchvision's AlexNet, the last layer K outputs.
 * - cnnf: CNN-F of Chatfield et al. (BMVC 2014), the DVBPR paper's net:
 *   conv 64x11x11/4, LRN, pool; conv 256x5x5, LRN, pool; 3 x conv
 *   256x3x3; pool; fc 4096, 4096, K, dropout after fc6 and fc7. LRN as
 *   PyTorch's LocalResponseNorm(5, 1e-4, 0.75, 2). Pools are floor mode (the
 *   original Caffe net used ceil mode), so pool5 is 5x5 at 224 (fc6 reads
 *   6400 values) and 6x6 at 227.
 * - small: four 3x3 conv + ReLU + 2x2 max-pool stages (16, 32, 64, 128
 *   channels), fc 256, dropout, fc K: a net a DVBPR step of 256 64x64
 *   images trains on two cores in a fraction of a second.
 * - mobilenet_v2: Keras's MobileNetV2 1.0 (Sandler et al. 2018) as npm's
 *   nsfwjs bundles it, with Keras's layer names (so tools/weights/ maps
 *   its weights by name) and Keras's geometry: TensorFlow's "same"
 *   padding, which at stride 2 on an even side pads only the bottom and
 *   right (a pad layer, Keras's ZeroPadding2D), batch norm with epsilon
 *   1e-3, ReLU6. Then a global average pool ("avgpool", 1280) and the
 *   nsfwjs head: dense 256, ReLU, dropout 0.5, dense 128, ReLU, dropout
 *   0.25, dense K. Layers "block_1" .. "block_16" are the global average
 *   of each inverted-residual block's output: feature taps that cost a
 *   pass over a small map ("block_10", 96-d, ends nsfwjs's ImageNet part).
 *   It declares nsfwjs's input: RGB / 255 (mean 0, std 1).
 * - resnet50: torchvision's ResNet-50 (v1.5: the stride on the 3x3 of
 *   each bottleneck, batch norm epsilon 1e-5), names as its state_dict;
 *   "avgpool" is the 2048-d global average, "fc" the K outputs.
 * The others declare ImageNet's normalisation: the nets expect RGB / 255
 * minus mean, over std. */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "net_priv.h"

#define IMAGENET_MEAN { 0.485f, 0.456f, 0.406f }
#define IMAGENET_STD { 0.229f, 0.224f, 0.225f }

static int build_alexnet(nn_net *net)
{
	int t = 0;
	t = nn__conv(net, "features.0", t, 64, 11, 4, 2, 1, 1);
	t = nn__relu(net, "features.1", t);
	t = nn__maxpool(net, "features.2", t, 3, 2, 0);
	t = nn__conv(net, "features.3", t, 192, 5, 1, 2, 1, 1);
	t = nn__relu(net, "features.4", t);
	t = nn__maxpool(net, "features.5", t, 3, 2, 0);
	t = nn__conv(net, "features.6", t, 384, 3, 1, 1, 1, 1);
	t = nn__relu(net, "features.7", t);
	t = nn__conv(net, "features.8", t, 256, 3, 1, 1, 1, 1);
	t = nn__relu(net, "features.9", t);
	t = nn__conv(net, "features.10", t, 256, 3, 1, 1, 1, 1);
	t = nn__relu(net, "features.11", t);
	t = nn__maxpool(net, "features.12", t, 3, 2, 0);
	t = nn__adaptive_avgpool(net, "avgpool", t, 6, 6);
	t = nn__dropout(net, "classifier.0", t, 0.5f);
	t = nn__linear(net, "classifier.1", t, 4096);
	t = nn__relu(net, "classifier.2", t);
	t = nn__dropout(net, "classifier.3", t, 0.5f);
	t = nn__linear(net, "classifier.4", t, 4096);
	t = nn__relu(net, "classifier.5", t);
	t = nn__linear(net, "classifier.6", t, net->num_outputs);
	nn__alias(net, "pool5", "features.12");
	nn__alias(net, "fc6", "classifier.2");
	nn__alias(net, "fc7", "classifier.5");
	return t;
}

static int build_cnnf(nn_net *net)
{
	int t = 0;
	t = nn__conv(net, "features.0", t, 64, 11, 4, 0, 1, 1);
	t = nn__relu(net, "features.1", t);
	t = nn__lrn(net, "features.2", t, 5, 1e-4f, 0.75f, 2.0f);
	t = nn__maxpool(net, "features.3", t, 3, 2, 0);
	t = nn__conv(net, "features.4", t, 256, 5, 1, 2, 1, 1);
	t = nn__relu(net, "features.5", t);
	t = nn__lrn(net, "features.6", t, 5, 1e-4f, 0.75f, 2.0f);
	t = nn__maxpool(net, "features.7", t, 3, 2, 0);
	t = nn__conv(net, "features.8", t, 256, 3, 1, 1, 1, 1);
	t = nn__relu(net, "features.9", t);
	t = nn__conv(net, "features.10", t, 256, 3, 1, 1, 1, 1);
	t = nn__relu(net, "features.11", t);
	t = nn__conv(net, "features.12", t, 256, 3, 1, 1, 1, 1);
	t = nn__relu(net, "features.13", t);
	t = nn__maxpool(net, "features.14", t, 3, 2, 0);
	t = nn__linear(net, "classifier.0", t, 4096);
	t = nn__relu(net, "classifier.1", t);
	t = nn__dropout(net, "classifier.2", t, 0.5f);
	t = nn__linear(net, "classifier.3", t, 4096);
	t = nn__relu(net, "classifier.4", t);
	t = nn__dropout(net, "classifier.5", t, 0.5f);
	t = nn__linear(net, "classifier.6", t, net->num_outputs);
	nn__alias(net, "pool5", "features.14");
	nn__alias(net, "fc6", "classifier.1");
	nn__alias(net, "fc7", "classifier.4");
	return t;
}

static int build_small(nn_net *net)
{
	static const char *names[4][3] = {
		{ "features.0", "features.1", "features.2" },
		{ "features.3", "features.4", "features.5" },
		{ "features.6", "features.7", "features.8" },
		{ "features.9", "features.10", "features.11" },
	};
	int t = 0;
	for (int i = 0; i < 4; i++) {
		t = nn__conv(net, names[i][0], t, 16 << i, 3, 1, 1, 1, 1);
		t = nn__relu(net, names[i][1], t);
		t = nn__maxpool(net, names[i][2], t, 2, 2, 0);
	}
	t = nn__linear(net, "classifier.0", t, 256);
	t = nn__relu(net, "classifier.1", t);
	t = nn__dropout(net, "classifier.2", t, 0.5f);
	t = nn__linear(net, "classifier.3", t, net->num_outputs);
	nn__alias(net, "pool", "features.11");
	nn__alias(net, "fc", "classifier.1");
	return t;
}

/* ---- MobileNetV2 (Keras) ---- */

#define KERAS_BN_EPS 1e-3f

/* One side's TensorFlow "same" padding: total = max((ceil(h / stride) - 1)
 * stride + kernel - h, 0), the odd pixel after. */
static void same_pad(int h, int kernel, int stride, int *before, int *after)
{
	int total = ((h + stride - 1) / stride - 1) * stride + kernel - h;
	if (total < 0)
		total = 0;
	*before = total / 2;
	*after = total - *before;
}

/* A Keras Conv2D or DepthwiseConv2D (groups = channels) without bias,
 * padding "same", then BatchNormalization and, when relu is non-NULL,
 * ReLU(6). Uneven padding becomes a pad layer named pad before an
 * unpadded convolution, as Keras's ZeroPadding2D. */
static int keras_conv(nn_net *net, const char *pad, const char *conv, const char *bn,
	const char *relu, int in, int k, int kernel, int stride, int depthwise)
{
	if (in < 0)
		return in;
	const struct nn__tensor *x = &net->tensors[in];
	int groups = depthwise ? x->c : 1, top, bottom, left, right, t = in;
	same_pad(x->h, kernel, stride, &top, &bottom);
	same_pad(x->w, kernel, stride, &left, &right);
	if (top != bottom || left != right || top != left) {
		t = nn__pad(net, pad, t, top, bottom, left, right);
		top = 0;
	}
	t = nn__conv(net, conv, t, k, kernel, stride, top, groups, 0);
	t = nn__batchnorm(net, bn, t, KERAS_BN_EPS);
	return relu ? nn__relu6(net, relu, t) : t;
}

/* Keras's _inverted_res_block: expand 1x1 (not in block 0, whose prefix
 * is "expanded_conv_"), depthwise 3x3 at stride, project 1x1 (linear),
 * and the residual add when the shape is kept. */
static int inverted_residual(nn_net *net, int block, int in, int expansion, int stride,
	int filters)
{
	char p[24], n[4][48];
	if (in < 0)
		return in;
	int c = net->tensors[in].c, t = in;
	if (block)
		snprintf(p, sizeof(p), "block_%d_", block);
	else
		snprintf(p, sizeof(p), "expanded_conv_");
	if (block) {
		snprintf(n[0], sizeof(n[0]), "%sexpand", p);
		snprintf(n[1], sizeof(n[1]), "%sexpand_BN", p);
		snprintf(n[2], sizeof(n[2]), "%sexpand_relu", p);
		t = keras_conv(net, NULL, n[0], n[1], n[2], t, c * expansion, 1, 1, 0);
	}
	snprintf(n[0], sizeof(n[0]), "%spad", p);
	snprintf(n[1], sizeof(n[1]), "%sdepthwise", p);
	snprintf(n[2], sizeof(n[2]), "%sdepthwise_BN", p);
	snprintf(n[3], sizeof(n[3]), "%sdepthwise_relu", p);
	t = keras_conv(net, n[0], n[1], n[2], n[3], t, c * expansion, 3, stride, 1);
	snprintf(n[0], sizeof(n[0]), "%sproject", p);
	snprintf(n[1], sizeof(n[1]), "%sproject_BN", p);
	t = keras_conv(net, NULL, n[0], n[1], NULL, t, filters, 1, 1, 0);
	if (c == filters && stride == 1) {
		snprintf(n[0], sizeof(n[0]), "%sadd", p);
		t = nn__add(net, n[0], in, t);
	}
	return t;
}

/* The global average of tensor in as a layer of its own (a window the
 * size of the map: never the in-place identity that an adaptive pool of a
 * 1x1 map becomes, which a tensor with other readers cannot take). */
static int tap(nn_net *net, const char *name, int in)
{
	if (in < 0)
		return in;
	const struct nn__tensor *x = &net->tensors[in];
	if (x->h != x->w)
		return nn__adaptive_avgpool(net, name, in, 1, 1);
	return nn__avgpool(net, name, in, x->h, 1, 0);
}

static int build_mobilenet_v2(nn_net *net)
{
	/* Keras's table: expansion, stride, output channels per block. */
	static const int blocks[17][3] = {
		{ 1, 1, 16 }, { 6, 2, 24 }, { 6, 1, 24 }, { 6, 2, 32 }, { 6, 1, 32 }, { 6, 1, 32 },
		{ 6, 2, 64 }, { 6, 1, 64 }, { 6, 1, 64 }, { 6, 1, 64 }, { 6, 1, 96 }, { 6, 1, 96 },
		{ 6, 1, 96 }, { 6, 2, 160 }, { 6, 1, 160 }, { 6, 1, 160 }, { 6, 1, 320 },
	};
	char name[24];
	int t = keras_conv(net, "Conv1_pad", "Conv1", "bn_Conv1", "Conv1_relu", 0, 32, 3, 2, 0);
	for (int b = 0; b < 17; b++) {
		t = inverted_residual(net, b, t, blocks[b][0], blocks[b][1], blocks[b][2]);
		if (b == 0)
			continue;
		snprintf(name, sizeof(name), "block_%d", b);
		if (tap(net, name, t) < 0)
			return net->build_rc;
	}
	t = keras_conv(net, NULL, "Conv_1", "Conv_1_bn", "out_relu", t, 1280, 1, 1, 0);
	t = nn__adaptive_avgpool(net, "avgpool", t, 1, 1);
	t = nn__linear(net, "dense_1", t, 256);
	t = nn__relu(net, "dense_1_relu", t);
	t = nn__dropout(net, "dropout_2", t, 0.5f);
	t = nn__linear(net, "dense_2", t, 128);
	t = nn__relu(net, "dense_2_relu", t);
	t = nn__dropout(net, "dropout_3", t, 0.25f);
	t = nn__linear(net, "dense_3", t, net->num_outputs);
	nn__alias(net, "fc", "dense_2_relu");
	return t;
}

/* ---- ResNet-50 (torchvision) ---- */

#define TORCH_BN_EPS 1e-5f

/* torchvision's Bottleneck: 1x1 (planes), 3x3 at stride, 1x1 (4 planes),
 * each with batch norm, the shortcut (1x1 conv + batch norm when the
 * shape changes), add, ReLU. p is the block's prefix, "layer2.0". */
static int bottleneck(nn_net *net, const char *p, int in, int planes, int stride,
	int downsample)
{
	char n[6][48];
	const char *const part[6] = { "conv1", "bn1", "relu1", "conv2", "bn2", "relu2" };
	for (int i = 0; i < 6; i++)
		snprintf(n[i], sizeof(n[i]), "%s.%s", p, part[i]);
	int t = nn__conv(net, n[0], in, planes, 1, 1, 0, 1, 0);
	t = nn__batchnorm(net, n[1], t, TORCH_BN_EPS);
	t = nn__relu(net, n[2], t);
	t = nn__conv(net, n[3], t, planes, 3, stride, 1, 1, 0);
	t = nn__batchnorm(net, n[4], t, TORCH_BN_EPS);
	t = nn__relu(net, n[5], t);
	snprintf(n[0], sizeof(n[0]), "%s.conv3", p);
	snprintf(n[1], sizeof(n[1]), "%s.bn3", p);
	t = nn__conv(net, n[0], t, planes * 4, 1, 1, 0, 1, 0);
	t = nn__batchnorm(net, n[1], t, TORCH_BN_EPS);
	int shortcut = in;
	if (downsample) {
		snprintf(n[0], sizeof(n[0]), "%s.downsample.0", p);
		snprintf(n[1], sizeof(n[1]), "%s.downsample.1", p);
		shortcut = nn__conv(net, n[0], in, planes * 4, 1, stride, 0, 1, 0);
		shortcut = nn__batchnorm(net, n[1], shortcut, TORCH_BN_EPS);
	}
	snprintf(n[0], sizeof(n[0]), "%s.add", p);
	snprintf(n[1], sizeof(n[1]), "%s.relu", p);
	t = nn__add(net, n[0], t, shortcut);
	return nn__relu(net, n[1], t);
}

static int build_resnet50(nn_net *net)
{
	static const int layers[4] = { 3, 4, 6, 3 };
	char p[32];
	int t = nn__conv(net, "conv1", 0, 64, 7, 2, 3, 1, 0);
	t = nn__batchnorm(net, "bn1", t, TORCH_BN_EPS);
	t = nn__relu(net, "relu", t);
	t = nn__maxpool(net, "maxpool", t, 3, 2, 1);
	for (int l = 0; l < 4; l++)
		for (int i = 0; i < layers[l]; i++) {
			snprintf(p, sizeof(p), "layer%d.%d", l + 1, i);
			t = bottleneck(net, p, t, 64 << l, i == 0 && l > 0 ? 2 : 1, i == 0);
		}
	t = nn__adaptive_avgpool(net, "avgpool", t, 1, 1);
	return nn__linear(net, "fc", t, net->num_outputs);
}

static const struct nn__arch archs[] = {
	{ { "alexnet", "torchvision AlexNet, last layer K outputs", 100, 224, 63,
	    IMAGENET_MEAN, IMAGENET_STD }, build_alexnet },
	{ { "cnnf", "CNN-F (Chatfield et al. 2014), as in DVBPR", 50, 224, 67,
	    IMAGENET_MEAN, IMAGENET_STD }, build_cnnf },
	{ { "small", "4 x (conv 3x3, ReLU, max-pool 2), fc 256, fc K: for CPU training", 50, 64,
	    16, IMAGENET_MEAN, IMAGENET_STD }, build_small },
	{ { "mobilenet_v2", "Keras MobileNetV2 1.0 as in npm nsfwjs, head 256-128-K; "
	    "features block_1..block_16, avgpool", 5, 224, 32, { 0, 0, 0 }, { 1, 1, 1 } },
	  build_mobilenet_v2 },
	{ { "resnet50", "torchvision ResNet-50 (v1.5); features avgpool (2048)", 1000, 224, 32,
	    IMAGENET_MEAN, IMAGENET_STD }, build_resnet50 },
};

static const char *const arch_names[] = { "alexnet", "cnnf", "small", "mobilenet_v2", "resnet50",
	NULL };

const struct nn__arch *nn__arch_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(archs) / sizeof(archs[0]); i++)
		if (!strcmp(archs[i].info.name, name))
			return &archs[i];
	return NULL;
}

int nn_arch_info(const char *arch, struct nn_arch_info *out)
{
	const struct nn__arch *a = nn__arch_find(arch);
	if (!a)
		return VR_ENOTFOUND;
	*out = a->info;
	return 0;
}

const char *const *nn_arch_names(void)
{
	return arch_names;
}
