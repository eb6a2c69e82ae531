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
 * All declare ImageNet's normalisation: the nets expect RGB / 255 minus
 * mean, over std. */
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

static const struct nn__arch archs[] = {
	{ { "alexnet", "torchvision AlexNet, last layer K outputs", 100, 224, 63,
	    IMAGENET_MEAN, IMAGENET_STD }, build_alexnet },
	{ { "cnnf", "CNN-F (Chatfield et al. 2014), as in DVBPR", 50, 224, 67,
	    IMAGENET_MEAN, IMAGENET_STD }, build_cnnf },
	{ { "small", "4 x (conv 3x3, ReLU, max-pool 2), fc 256, fc K: for CPU training", 50, 64,
	    16, IMAGENET_MEAN, IMAGENET_STD }, build_small },
};

static const char *const arch_names[] = { "alexnet", "cnnf", "small", NULL };

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
