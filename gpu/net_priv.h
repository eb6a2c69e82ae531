/* The insides of a net, shared by net.c (graph, memory, passes), arch.c
 * (the architectures, built with the nn__ builder calls below), weights.c
 * (safetensors mapping) and optim.c. Not part of the public contract.
 *
 * A net is a list of layers in execution order over numbered activation
 * tensors (tensor 0 is the input); each layer reads one or two tensors and
 * writes one, so residual graphs fit. Parameters are a table of named
 * tensors over one arena. */
#ifndef NN_NET_PRIV_H
#define NN_NET_PRIV_H

#include "backend.h"
#include "nn.h"

enum nn__layer_kind {
	NN__CONV = 1,
	NN__POOL,
	NN__ACT,
	NN__LRN,
	NN__FC,
	NN__DROPOUT,
	NN__BN,
	NN__ADD,
	NN__IDENTITY,              /* an adaptive pool whose output equals its input */
	NN__PAD,                   /* zero padding, different on each side */
	NN__L2NORM,                /* each image's values divided by their L2 norm */
};

enum nn__init { NN__INIT_UNIFORM = 1, NN__INIT_ONE, NN__INIT_ZERO };

struct nn__param {
	char name[64];             /* "features.0.weight" */
	int ndim, shape[4];
	size_t numel, offset;      /* floats; offset into the arena */
	int trainable;
	int init;                  /* enum nn__init; UNIFORM is +-1/sqrt(fan_in) */
	int fan_in;
	int fresh;                 /* a new or resized head: loaded only from a file of the same head */
};

struct nn__tensor {
	int c, h, w;
	size_t size;               /* floats per image */
	int producer;              /* layer index, -1 for the net input */
	int consumers;
	int group;                 /* storage: an in-place layer's output shares its input's */
	int layout;                /* 0: NCHW; else the backend's layout id (an inference
	                              net on a backend with layouts, backend.h) */
	float *data, *grad;        /* backend memory for max_batch images */
};

struct nn__layer {
	char name[32];             /* "features.0", "avgpool" */
	int kind;
	int in[2], nin, out;       /* tensors */
	int inplace;
	int w, b, mean, var;       /* parameter indices, -1 if none */
	union {
		struct nn_conv_shape conv;
		struct nn_pool_shape pool;
		struct nn_lrn_shape lrn;
		struct nn_fc_shape fc;
		struct nn_pad_shape pad;
		int act;               /* enum nn_act_mode */
		float p;               /* dropout */
		struct nn_bn_shape bn;
		float eps;             /* l2norm: y = x / sqrt(|x|² + eps) */
	} u;
	uint64_t seed;             /* dropout mask of the last forward; 0: none */
	/* Fusion (inference nets on a backend with conv_fwd_post): a conv
	 * with post_bn >= 0 runs that batch-norm layer, and its post_act the
	 * activation after, writing their output; those layers are fused (not
	 * run, their own outputs never written). */
	int post_bn, post_act_layer, fused;
	void *plan;
};

struct nn__alias {
	char name[16], layer[32];
};

struct nn_net {
	struct nn_backend *b;
	char arch[16];
	int num_outputs, input_size, max_batch, inference_only;
	int precision;             /* the backend's when the net was made (enum nn_precision) */
	float mean[3], std[3];
	/* Where the net starts and what replaced its top (nn_net_opts):
	 * input_layer "" for the image; head "" when nothing is fresh, else
	 * "layer:width" as the weights metadata records it. */
	char input_layer[32], head[48];
	char input_from[32];       /* at a cut: the full net's layer whose output is the input */

	struct nn__layer *layers;
	struct nn__tensor *tensors;
	struct nn__param *params;
	int nlayers, ntensors, nparams;
	int cap_layers, cap_tensors, cap_params;
	struct nn__alias aliases[8];
	int naliases;
	int build_rc;              /* first builder failure, sticky */
	int out_layer;             /* what forward returns and backward starts from */

	float *arena, *grads;      /* parameters; their gradients (trainable part) */
	size_t arena_count, trainable_count;
	void **bufs;               /* every backend allocation, for destroy */
	int nbufs;
	void *ws;                  /* the shared workspace */
	size_t ws_bytes;
	float *dinput;             /* gradient of the input, made on first request */
	char *written;             /* per tensor: its gradient has been written this pass */

	int last_n;                /* images of the last forward */
	int can_backward;
	uint64_t seed, steps;      /* dropout: a fresh mask per training forward */
	double *prof;              /* NULL, or per layer: forward and backward seconds */
	int (*stop)(void *arg);    /* NULL, or asked between a forward's layers (nn_net_set_stop) */
	void *stop_arg;
	char errmsg[256];
};

struct nn_images {
	struct nn_backend *b;
	size_t n;                  /* images */
	int size;                  /* S: each image is S x S x 3 bytes */
	uint8_t *data;             /* n x S x S x 3 bytes of the backend's memory */
};

struct nn_optim {
	nn_net *net;
	struct nn_optim_opts opts;
	size_t count;
	float *m, *v;              /* state arenas; NULL when unused */
	long steps;
};

/* Records a failure's cause in net->errmsg. */
void nn__errmsg(nn_net *net, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Builders: each appends a layer named name reading tensor in and returns
 * its output tensor, or, once any call failed (or in < 0), a negative
 * code; so an architecture is a straight list of calls whose last result
 * is checked. Parameters get state_dict names, name + ".weight" etc. */
int nn__conv(nn_net *net, const char *name, int in, int k, int kernel, int stride, int pad,
	int groups, int bias);
int nn__relu(nn_net *net, const char *name, int in);
int nn__relu6(nn_net *net, const char *name, int in);
int nn__maxpool(nn_net *net, const char *name, int in, int kernel, int stride, int pad);
int nn__avgpool(nn_net *net, const char *name, int in, int kernel, int stride, int pad);
int nn__adaptive_avgpool(nn_net *net, const char *name, int in, int oh, int ow);
int nn__lrn(nn_net *net, const char *name, int in, int size, float alpha, float beta, float k);
int nn__linear(nn_net *net, const char *name, int in, int out);
int nn__dropout(nn_net *net, const char *name, int in, float p);
int nn__batchnorm(nn_net *net, const char *name, int in, float eps);
int nn__add(nn_net *net, const char *name, int a, int c);
/* Zero padding: top, bottom, left, right pixels. Fails (VR_EUNSUPPORTED)
 * on a backend without the pad ops. */
int nn__pad(nn_net *net, const char *name, int in, int top, int bottom, int left, int right);
/* Each image's C x H x W values divided by their L2 norm (sqrt(|x|² +
 * 1e-12)); no parameters. Fails (VR_EUNSUPPORTED) on a backend without
 * the l2norm ops. */
int nn__l2norm(nn_net *net, const char *name, int in);
/* A short name for a layer's output ("fc7" -> "classifier.5"). */
void nn__alias(nn_net *net, const char *alias, const char *layer);

/* The architectures (arch.c): builds the layers after the input tensor. */
struct nn__arch {
	struct nn_arch_info info;
	int (*build)(nn_net *net);
};
const struct nn__arch *nn__arch_find(const char *name);

/* nn_net_create for an architecture given by value (tests, importers). */
int nn__net_create_with(nn_backend *b, const struct nn__arch *a, const struct nn_net_opts *opts,
	nn_net **out, char *errbuf, size_t errlen);

/* Finds a layer by name or alias; -1 if none. */
int nn__layer_find(const nn_net *net, const char *name);

/* Per-layer timing for benchmarks: while sec (2 x nlayers doubles) is set,
 * every forward and backward waits for each layer's ops to finish and adds
 * layer l's seconds to sec[2 l] (forward) and sec[2 l + 1] (backward).
 * NULL stops it. The waits serialise the backend: totals exceed an
 * unprofiled step's time. */
void nn__net_profile(nn_net *net, double *sec);

#endif
