/* The contract between the network code (net.c, optim.c) and a compute
 * backend (cpu.c; gpu/cuda/ later). Nets never touch tensor memory: every
 * buffer is allocated, filled, read and computed on through this table, so
 * a pointer handed to an op may be a device pointer.
 *
 * Conventions every op follows:
 * - Tensors are float32, NCHW, contiguous, except where an inference net
 *   lets a backend with layouts keep its own (Layouts, below). Weights
 *   use PyTorch's layouts: conv [k][c/groups][kh][kw], fully connected
 *   [out][in].
 * - n is the images in this call, 1 <= n <= the shape's n (the batch the
 *   plan was made for); a backend may re-set its descriptors when n changes.
 * - Gradients of parameters (dw, db, dgamma, dbeta) always ACCUMULATE into
 *   their buffers (the net zeroes them in nn_net_zero_grad).
 * - Gradients of inputs (dx) overwrite when acc == 0 and add when acc != 0:
 *   a tensor read by two layers (a residual branch) gets both gradients.
 * - Activation backward ops take the OUTPUT y, so they may run in place
 *   (x == y forward, dx == dy backward).
 * - ws is the net's one workspace, at least the largest ws_bytes any plan
 *   asked for; ops may use it freely during a call.
 * - Every op returns 0 or a negative VR_E* code (VR_EDEVICE for a device
 *   failure); ops never exit.
 * - Ops on one backend are called from one thread at a time.
 * - Weights (the w of conv and fc ops) change only where their writer bumps
 *   the backend's param_version (the net's nn_net_params_set and the
 *   optimiser step do): a backend may keep what it derives from a weights
 *   buffer (the oneDNN backend's reordered copy) keyed by the pointer and
 *   that version. */
#ifndef NN_BACKEND_H
#define NN_BACKEND_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "nn.h"
#include "xoshiro.h"

#ifdef __CUDACC__
#define NN_HD __host__ __device__
#else
#define NN_HD
#endif

/* Which op a plan is for (plan_create's kind). */
enum nn_op_kind { NN_OP_CONV = 1, NN_OP_POOL, NN_OP_LRN, NN_OP_FC, NN_OP_BN };

struct nn_conv_shape {
	int n;                     /* images the plan is made for (max batch) */
	int c, h, w;               /* input channels, height, width */
	int k, kh, kw;             /* output channels, kernel height, width */
	int stride_h, stride_w, pad_h, pad_w;
	int groups;                /* divides c and k; groups == c == k: depthwise */
	int oh, ow;                /* (h + 2 pad_h - kh) / stride_h + 1, same for w */
	/* Layers fused after the convolution, set by an inference net only on
	 * a backend with conv_fwd_post (zero everywhere else): post_bn, batch
	 * norm with eps bn_eps, then post_act (enum nn_act_mode, 0: none).
	 * plan_create returns VR_EUNSUPPORTED when it cannot fuse them, and the
	 * net runs the layers one by one. */
	int post_bn, post_act;
	float bn_eps;
	int in_layout, out_layout;  /* Layouts, below; 0 everywhere else */
	int layout_bwd;            /* Layouts: the plan runs backward too (a training net) */
};

enum nn_pool_mode {
	NN_POOL_MAX = 1,
	NN_POOL_AVG,               /* padding counted in the divisor (kh * kw), as PyTorch's default */
	NN_POOL_ADAPTIVE_AVG,      /* PyTorch's AdaptiveAvgPool2d: window i is
	                              [floor(i h / oh), ceil((i + 1) h / oh)); k, stride, pad unused */
};

struct nn_pool_shape {
	int mode;                  /* enum nn_pool_mode */
	int n, c, h, w;
	int kh, kw, stride_h, stride_w, pad_h, pad_w;
	int oh, ow;                /* floor mode: (h + 2 pad_h - kh) / stride_h + 1 */
	int in_layout, out_layout;  /* Layouts, below */
	int layout_bwd;            /* as nn_conv_shape's */
};

/* Local response normalisation across channels, PyTorch's LocalResponseNorm:
 * y_c = x_c / (k + alpha / size * sum_{c' = c - size/2}^{c + (size-1)/2} x_c'^2)^beta */
struct nn_lrn_shape {
	int n, c, h, w;
	int size;
	float alpha, beta, k;
	int in_layout, out_layout;  /* Layouts, below */
	int layout_bwd;            /* as nn_conv_shape's */
};

/* Batch norm with running statistics over x [n][c][h][w]. */
struct nn_bn_shape {
	int n, c, h, w;
	float eps;
	int in_layout, out_layout;  /* Layouts, below */
	int layout_bwd;            /* as nn_conv_shape's */
};

struct nn_fc_shape {
	int n, in, out;            /* y[n][out] = x[n][in] W[out][in]^T + b[out] */
};

/* Zero padding by different amounts on each side (TensorFlow's "same"
 * padding at stride 2 puts the odd pixel at the bottom and right, which a
 * convolution's symmetric pad cannot express; Keras's ZeroPadding2D):
 * y[c][top + i][left + j] = x[c][i][j], zero elsewhere. */
struct nn_pad_shape {
	int n, c, h, w;
	int top, bottom, left, right;
	int oh, ow;                /* h + top + bottom, w + left + right */
};

/* Validate a shape's fields and fill its derived output size (conv.c,
 * pool.c, lrn.c). Return 0 or VR_EINVAL. */
int nn_conv_shape_check(struct nn_conv_shape *s);
int nn_pool_shape_check(struct nn_pool_shape *s);
int nn_lrn_shape_check(const struct nn_lrn_shape *s);
int nn_pad_shape_check(struct nn_pad_shape *s);   /* pad.c */

enum nn_act_mode { NN_ACT_RELU = 1, NN_ACT_RELU6 };

/* torch.optim.SGD with dampening 0, no Nesterov:
 *   g' = g + weight_decay w;  m = momentum m + g';  w -= lr m
 * (m starts at zero, which equals PyTorch's first-step m = g'). */
struct nn_sgd_params {
	float lr, momentum, weight_decay;
};

/* torch.optim.Adam (decoupled == 0: weight decay is L2 added to the
 * gradient, g' = g + wd w) or torch.optim.AdamW (decoupled == 1:
 * w -= lr wd w before the update). With t the 1-based step:
 *   m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
 *   w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
struct nn_adam_params {
	float lr, beta1, beta2, eps, weight_decay;
	int decoupled;
	long step;                 /* t, >= 1 */
};

struct nn_backend;

struct nn_backend_ops {
	/* Memory. alloc returns memory aligned for any op (64 bytes at least). */
	int (*alloc)(struct nn_backend *b, size_t bytes, void **out);
	void (*free)(struct nn_backend *b, void *p);
	int (*upload)(struct nn_backend *b, void *dst, const void *host_src, size_t bytes);
	int (*download)(struct nn_backend *b, void *host_dst, const void *src, size_t bytes);
	int (*copy)(struct nn_backend *b, void *dst, const void *src, size_t bytes);
	int (*fill)(struct nn_backend *b, float *p, float value, size_t count);
	/* Waits until every op issued so far has finished. */
	int (*sync)(struct nn_backend *b);

	/* Per-layer setup, once per shape: shape points at the struct for kind.
	 * *plan may be left NULL; *ws_bytes is the workspace the layer's ops need. */
	int (*plan_create)(struct nn_backend *b, int kind, const void *shape, void **plan, size_t *ws_bytes);
	void (*plan_free)(struct nn_backend *b, void *plan);

	/* Convolution (cross-correlation, as PyTorch). bias may be NULL. */
	int (*conv_fwd)(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
		const float *x, const float *w, const float *bias, float *y, void *ws);
	int (*conv_bwd_data)(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
		const float *dy, const float *w, float *dx, int acc, void *ws);
	int (*conv_bwd_filter)(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
		const float *x, const float *dy, float *dw, void *ws);
	int (*conv_bwd_bias)(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
		const float *dy, float *db);

	/* Pooling. Max-pool backward sends each output's gradient to the first
	 * maximum of its window (recomputed from x; y may be used instead). */
	int (*pool_fwd)(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
		const float *x, float *y);
	int (*pool_bwd)(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
		const float *x, const float *y, const float *dy, float *dx, int acc);

	/* ReLU (y = max(x, 0)) and ReLU6 (y = min(max(x, 0), 6)); backward
	 * passes dy where 0 < y (< 6 for ReLU6). */
	int (*act_fwd)(struct nn_backend *b, int mode, size_t count, const float *x, float *y);
	int (*act_bwd)(struct nn_backend *b, int mode, size_t count, const float *y,
		const float *dy, float *dx, int acc);

	/* Fully connected. bias and db may be NULL. */
	int (*fc_fwd)(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
		const float *x, const float *w, const float *bias, float *y);
	int (*fc_bwd_data)(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
		const float *dy, const float *w, float *dx, int acc);
	int (*fc_bwd_weights)(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
		const float *x, const float *dy, float *dw, float *db);

	/* Inverted dropout: element i is kept iff nn_dropout_keep(seed, i, p)
	 * (below), and kept elements are scaled by 1 / (1 - p). The mask is a
	 * pure function of (seed, i), so backward recomputes it and every
	 * backend draws the same mask. */
	int (*dropout_fwd)(struct nn_backend *b, size_t count, float p, uint64_t seed,
		const float *x, float *y);
	int (*dropout_bwd)(struct nn_backend *b, size_t count, float p, uint64_t seed,
		const float *dy, float *dx, int acc);

	/* LRN (x != y); backward may use x and y. */
	int (*lrn_fwd)(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
		const float *x, float *y, void *ws);
	int (*lrn_bwd)(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
		const float *x, const float *y, const float *dy, float *dx, int acc, void *ws);

	/* Batch norm with running statistics (inference, or training with
	 * frozen statistics as PyTorch's eval mode):
	 *   y = (x - mean) / sqrt(var + eps) * gamma + beta,  x is [n][c][h w]. */
	int (*bn_fwd)(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
		const float *x, const float *gamma, const float *beta, const float *mean,
		const float *var, float *y);
	int (*bn_bwd)(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
		const float *x, const float *gamma, const float *mean, const float *var,
		const float *dy, float *dx, int acc, float *dgamma, float *dbeta);

	/* y = a + c (residual add); and dst = src (acc == 0) or dst += src. */
	int (*add)(struct nn_backend *b, size_t count, const float *a, const float *c, float *y);
	int (*accumulate)(struct nn_backend *b, size_t count, const float *src, float *dst, int acc);

	/* Zero padding (x != y); backward is the crop dx = dy[top..][left..]. */
	int (*pad_fwd)(struct nn_backend *b, const struct nn_pad_shape *s, int n, const float *x,
		float *y);
	int (*pad_bwd)(struct nn_backend *b, const struct nn_pad_shape *s, int n, const float *dy,
		float *dx, int acc);

	/* Row-wise L2 normalisation over n rows of d floats (x != y): y = x /
	 * sqrt(|x|² + eps); backward from x and dy, dx = (dy - y (y·dy)) / r. */
	int (*l2norm_fwd)(struct nn_backend *b, int n, int d, float eps, const float *x, float *y);
	int (*l2norm_bwd)(struct nn_backend *b, int n, int d, float eps, const float *x,
		const float *dy, float *dx, int acc);

	/* Optimiser steps over count parameters in one loop (the arena). */
	int (*sgd_step)(struct nn_backend *b, size_t count, float *w, const float *g, float *m,
		const struct nn_sgd_params *p);
	int (*adam_step)(struct nn_backend *b, size_t count, float *w, const float *g, float *m,
		float *v, const struct nn_adam_params *p);

	/* The uint8 input path: writes n images into x (n x 3 x size x size
	 * floats of this backend's memory), x[i][c][p] = img[i][3 p + c] *
	 * mul[c] + add[c], where img[i] is size x size x 3 bytes (HWC RGB) of
	 * host memory. The caller may reuse img once the op returns. */
	int (*input_u8)(struct nn_backend *b, int n, int size, const uint8_t *const *img,
		const float mul[3], const float add[3], float *x);
	/* The same from an image set in this backend's memory (nn_images):
	 * image i is set + idx[i] x size x size x 3; idx is host memory the
	 * caller may reuse once the op returns. */
	int (*input_u8_gather)(struct nn_backend *b, int n, int size, const uint8_t *set,
		const uint32_t *idx, const float mul[3], const float add[3], float *x);

	/* Optional (NULL: the backend does not fuse): conv_fwd, then with
	 * s->post_bn the batch norm of bn_fwd (gamma, beta, mean, var over
	 * c = s->k, eps s->bn_eps; unused otherwise), then s->post_act, in one
	 * pass over y. For a plan made with those fields set. */
	int (*conv_fwd_post)(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
		const float *x, const float *w, const float *bias, const float *gamma,
		const float *beta, const float *mean, const float *var, float *y, void *ws);

	/* Layouts (optional; NULL: every tensor is NCHW). An inference net on
	 * a backend with these lets its planned layers (conv, pool, LRN) pass
	 * tensors in the backend's own layouts: the shape's in_layout says
	 * what x is in (0: NCHW, else an id this backend's plan_layout gave),
	 * out_layout what y must be in (0: NCHW, -1: the plan's choice, else
	 * that id). plan_create returns VR_EUNSUPPORTED for an in_layout the
	 * op cannot take (the net then plans that tensor NCHW). A plan made
	 * with layouts runs forward only, unless the shape's layout_bwd is set
	 * (a training net): then its backward ops take x, y, dy and dx in the
	 * layouts of x and y (a tensor's gradient is in the tensor's layout),
	 * parameter gradients stay in PyTorch's layouts, and conv_bwd_bias
	 * comes right after conv_bwd_filter on the same dy (one oneDNN
	 * primitive computes both). plan_create returns VR_EUNSUPPORTED when
	 * it cannot run a direction in them. Every layout a backend hands out is
	 * the NCHW tensor's floats in another order within each image, images
	 * one after another: n images are the first n x c x h x w floats, so
	 * the elementwise ops (act, add, copy) run on it unchanged.
	 * plan_layout is the layout the plan writes y in; layout_download
	 * copies n images in layout to host memory in NCHW (a net's edges). */
	int (*plan_layout)(struct nn_backend *b, void *plan);
	int (*layout_download)(struct nn_backend *b, int layout, int n, const float *src,
		float *host_dst);
	/* Optional (NULL: FP32 only): sets enum nn_precision for plans made
	 * from now on, or returns VR_EUNSUPPORTED; precision reads it. */
	int (*set_precision)(struct nn_backend *b, int precision);
	int (*precision)(const struct nn_backend *b);
	/* Optional (NULL: the backend's thread count is not ours to set):
	 * the threads ops use from now on, >= 1 (nn_backend_set_threads). */
	int (*set_threads)(struct nn_backend *b, int threads);

	/* Releases priv; the backend struct itself is freed by nn_backend_close. */
	void (*close)(struct nn_backend *b);
};

struct nn_backend {
	const struct nn_backend_ops *ops;
	char name[16];             /* "cpu" (the reference), "onednn", "cuda" */
	char device[192];          /* what runs the ops, for logs and Info */
	uint64_t param_version;    /* bumped after any write of weights (above) */
	void *priv;                /* the backend's own state (handles, streams) */
};

/* Opens the CPU backend (cpu.c). */
int nn__cpu_open(struct nn_backend **out);

#ifdef NN_HAVE_ONEDNN
/* Opens the oneDNN backend (onednn.c): the CPU backend with convolution,
 * pooling, LRN and fully connected run by oneDNN. Returns VR_EDEVICE, with
 * the reason in why, when oneDNN cannot set up its CPU engine. */
int nn__onednn_open(struct nn_backend **out, char *why, size_t why_len);
/* The layout conversions (oneDNN reorders) a oneDNN backend has run since
 * it was opened: tensors into and out of a primitive's layout, weights
 * and gradients, downloads at a net's edges. For tests and benchmarks. */
uint64_t nn__onednn_reorders(const struct nn_backend *b);
#endif

#ifdef NN_HAVE_CUDA
/* Opens the CUDA backend (gpu/cuda/). Returns VR_EDEVICE, with the reason in
 * why, when no device answers. */
int nn__cuda_open(struct nn_backend **out, char *why, size_t why_len);
#endif

/* The dropout mask and the weight-init stream: splitmix64's i-th output
 * for the seed, so element i's draw needs no state. */
static inline NN_HD uint64_t nn_splitmix64(uint64_t seed, uint64_t i)
{
	return vr_splitmix64_mix(seed + (i + 1) * VR_SPLITMIX64_GAMMA);
}

/* A uniform draw in [0, 1) with 24 bits, exact in float. */
static inline NN_HD float nn_uniform01(uint64_t seed, uint64_t i)
{
	return (float)(nn_splitmix64(seed, i) >> 40) * (1.0f / 16777216.0f);
}

static inline NN_HD int nn_dropout_keep(uint64_t seed, uint64_t i, float p)
{
	return nn_uniform01(seed, i) >= p;
}

/* One row of the L2 normalisation (l2norm_fwd / l2norm_bwd above), shared
 * by the CPU and CUDA backends so both compute it alike: y = x / r, r =
 * sqrt(|x|² + eps); dx = (dy - x (x · dy) / r²) / r, added to dx when acc.
 * Sums in doubles. */
static inline NN_HD void nn_l2norm_row_fwd(int d, float eps, const float *x, float *y)
{
	double ss = 0;
	for (int j = 0; j < d; j++)
		ss += (double)x[j] * x[j];
	double inv = 1.0 / sqrt(ss + eps);
	for (int j = 0; j < d; j++)
		y[j] = (float)(x[j] * inv);
}

static inline NN_HD void nn_l2norm_row_bwd(int d, float eps, const float *x, const float *dy,
	float *dx, int acc)
{
	double ss = 0, dot = 0;
	for (int j = 0; j < d; j++) {
		ss += (double)x[j] * x[j];
		dot += (double)x[j] * dy[j];
	}
	double r2 = ss + eps, inv = 1.0 / sqrt(r2), proj = dot / r2;
	for (int j = 0; j < d; j++) {
		float v = (float)((dy[j] - x[j] * proj) * inv);
		dx[j] = acc ? dx[j] + v : v;
	}
}

#endif
