/* The CPU backend: the ops table of backend.h over host memory, each op a
 * call into the kernels of cpu.h. Memory comes from posix_memalign, with
 * transparent huge pages asked for on large buffers, because the first
 * touch of a 4 KiB page costs ~9 us here and a net's buffers are large
 * and touched every step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu.h"
#include "err.h"

#ifndef NN_NO_BLAS
#include <cblas.h>
#endif

#define HUGE_ALIGN (2u << 20)

static int cpu_alloc(struct nn_backend *b, size_t bytes, void **out)
{
	size_t align = bytes >= 4 * HUGE_ALIGN ? HUGE_ALIGN : 64;
	void *p = NULL;
	if (bytes == 0)
		bytes = 64;
	if (posix_memalign(&p, align, bytes))
		return VR_ENOMEM;
	if (align == HUGE_ALIGN)
		madvise(p, bytes & ~(size_t)(HUGE_ALIGN - 1), MADV_HUGEPAGE);
	*out = p;
	return 0;
}

static void cpu_free(struct nn_backend *b, void *p)
{
	free(p);
}

static int cpu_memcpy(struct nn_backend *b, void *dst, const void *src, size_t bytes)
{
	if (bytes && dst != src)
		memmove(dst, src, bytes);
	return 0;
}

static int cpu_fill(struct nn_backend *b, float *p, float value, size_t count)
{
	if (value == 0.0f) {
		memset(p, 0, sizeof(float) * count);
		return 0;
	}
	for (size_t i = 0; i < count; i++)
		p[i] = value;
	return 0;
}

static int cpu_sync(struct nn_backend *b)
{
	return 0;
}

static int cpu_plan_create(struct nn_backend *b, int kind, const void *shape, void **plan,
	size_t *ws_bytes)
{
	*plan = NULL;
	*ws_bytes = 0;
	switch (kind) {
	case NN_OP_CONV:
		*ws_bytes = sizeof(float) * nn_cpu_conv_ws_floats(shape);
		return 0;
	case NN_OP_LRN:
		*ws_bytes = sizeof(float) * nn_cpu_lrn_ws_floats(shape);
		return 0;
	case NN_OP_POOL:
	case NN_OP_FC:
	case NN_OP_BN:
		return 0;
	}
	return VR_EINVAL;
}

static void cpu_plan_free(struct nn_backend *b, void *plan)
{
}

static int cpu_conv_fwd(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y, void *ws)
{
	nn_cpu_conv_fwd(s, n, x, w, bias, y, ws);
	return 0;
}

static int cpu_conv_bwd_data(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, const float *w, float *dx, int acc, void *ws)
{
	nn_cpu_conv_bwd_data(s, n, dy, w, dx, acc, ws);
	return 0;
}

static int cpu_conv_bwd_filter(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *x, const float *dy, float *dw, void *ws)
{
	nn_cpu_conv_bwd_filter(s, n, x, dy, dw, ws);
	return 0;
}

static int cpu_conv_bwd_bias(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, float *db)
{
	nn_cpu_conv_bwd_bias(s, n, dy, db);
	return 0;
}

static int cpu_pool_fwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, float *y)
{
	nn_cpu_pool_fwd(s, n, x, y);
	return 0;
}

static int cpu_pool_bwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc)
{
	nn_cpu_pool_bwd(s, n, x, dy, dx, acc);
	return 0;
}

static int cpu_act_fwd(struct nn_backend *b, int mode, size_t count, const float *x, float *y)
{
	nn_cpu_act_fwd(mode, count, x, y);
	return 0;
}

static int cpu_act_bwd(struct nn_backend *b, int mode, size_t count, const float *y,
	const float *dy, float *dx, int acc)
{
	nn_cpu_act_bwd(mode, count, y, dy, dx, acc);
	return 0;
}

static int cpu_fc_fwd(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y)
{
	nn_cpu_fc_fwd(n, s->in, s->out, x, w, bias, y);
	return 0;
}

static int cpu_fc_bwd_data(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *dy, const float *w, float *dx, int acc)
{
	nn_cpu_fc_bwd_data(n, s->in, s->out, dy, w, dx, acc);
	return 0;
}

static int cpu_fc_bwd_weights(struct nn_backend *b, void *plan, const struct nn_fc_shape *s,
	int n, const float *x, const float *dy, float *dw, float *db)
{
	nn_cpu_fc_bwd_weights(n, s->in, s->out, x, dy, dw, db);
	return 0;
}

static int cpu_dropout_fwd(struct nn_backend *b, size_t count, float p, uint64_t seed,
	const float *x, float *y)
{
	nn_cpu_dropout_fwd(count, p, seed, x, y);
	return 0;
}

static int cpu_dropout_bwd(struct nn_backend *b, size_t count, float p, uint64_t seed,
	const float *dy, float *dx, int acc)
{
	nn_cpu_dropout_bwd(count, p, seed, dy, dx, acc);
	return 0;
}

static int cpu_lrn_fwd(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
	const float *x, float *y, void *ws)
{
	nn_cpu_lrn_fwd(s, n, x, y);
	return 0;
}

static int cpu_lrn_bwd(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc, void *ws)
{
	nn_cpu_lrn_bwd(s, n, x, y, dy, dx, acc, ws);
	return 0;
}

static int cpu_bn_fwd(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
	const float *x, const float *gamma, const float *beta, const float *mean,
	const float *var, float *y)
{
	nn_cpu_bn_fwd(n, s->c, s->h * s->w, s->eps, x, gamma, beta, mean, var, y);
	return 0;
}

static int cpu_bn_bwd(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
	const float *x, const float *gamma, const float *mean, const float *var,
	const float *dy, float *dx, int acc, float *dgamma, float *dbeta)
{
	nn_cpu_bn_bwd(n, s->c, s->h * s->w, s->eps, x, gamma, mean, var, dy, dx, acc, dgamma,
		dbeta);
	return 0;
}

static int cpu_add(struct nn_backend *b, size_t count, const float *a, const float *c, float *y)
{
	nn_cpu_add(count, a, c, y);
	return 0;
}

static int cpu_accumulate(struct nn_backend *b, size_t count, const float *src, float *dst,
	int acc)
{
	nn_cpu_accumulate(count, src, dst, acc);
	return 0;
}

static int cpu_pad_fwd(struct nn_backend *b, const struct nn_pad_shape *s, int n, const float *x,
	float *y)
{
	nn_cpu_pad_fwd(s, n, x, y);
	return 0;
}

static int cpu_pad_bwd(struct nn_backend *b, const struct nn_pad_shape *s, int n,
	const float *dy, float *dx, int acc)
{
	nn_cpu_pad_bwd(s, n, dy, dx, acc);
	return 0;
}

static int cpu_l2norm_fwd(struct nn_backend *b, int n, int d, float eps, const float *x,
	float *y)
{
	nn_cpu_l2norm_fwd(n, d, eps, x, y);
	return 0;
}

static int cpu_l2norm_bwd(struct nn_backend *b, int n, int d, float eps, const float *x,
	const float *dy, float *dx, int acc)
{
	nn_cpu_l2norm_bwd(n, d, eps, x, dy, dx, acc);
	return 0;
}

static int cpu_sgd_step(struct nn_backend *b, size_t count, float *w, const float *g, float *m,
	const struct nn_sgd_params *p)
{
	nn_cpu_sgd_step(count, w, g, m, p);
	return 0;
}

static int cpu_adam_step(struct nn_backend *b, size_t count, float *w, const float *g, float *m,
	float *v, const struct nn_adam_params *p)
{
	nn_cpu_adam_step(count, w, g, m, v, p);
	return 0;
}

/* One HWC byte image into its three CHW float planes. */
static void u8_image(const uint8_t *img, size_t plane, const float mul[3], const float add[3],
	float *x)
{
	for (int c = 0; c < 3; c++) {
		const uint8_t *in = img + c;
		float *o = x + c * plane;
		for (size_t p = 0; p < plane; p++)
			o[p] = in[3 * p] * mul[c] + add[c];
	}
}

static int cpu_input_u8(struct nn_backend *b, int n, int size, const uint8_t *const *img,
	const float mul[3], const float add[3], float *x)
{
	const size_t plane = (size_t)size * size;
	for (int i = 0; i < n; i++)
		u8_image(img[i], plane, mul, add, x + (size_t)i * 3 * plane);
	return 0;
}

static int cpu_input_u8_gather(struct nn_backend *b, int n, int size, const uint8_t *set,
	const uint32_t *idx, const float mul[3], const float add[3], float *x)
{
	const size_t plane = (size_t)size * size;
	for (int i = 0; i < n; i++)
		u8_image(set + idx[i] * 3 * plane, plane, mul, add, x + (size_t)i * 3 * plane);
	return 0;
}

static void cpu_close(struct nn_backend *b)
{
}

const struct nn_backend_ops nn__cpu_ops = {
	.alloc = cpu_alloc,
	.free = cpu_free,
	.upload = cpu_memcpy,
	.download = cpu_memcpy,
	.copy = cpu_memcpy,
	.fill = cpu_fill,
	.sync = cpu_sync,
	.plan_create = cpu_plan_create,
	.plan_free = cpu_plan_free,
	.conv_fwd = cpu_conv_fwd,
	.conv_bwd_data = cpu_conv_bwd_data,
	.conv_bwd_filter = cpu_conv_bwd_filter,
	.conv_bwd_bias = cpu_conv_bwd_bias,
	.pool_fwd = cpu_pool_fwd,
	.pool_bwd = cpu_pool_bwd,
	.act_fwd = cpu_act_fwd,
	.act_bwd = cpu_act_bwd,
	.fc_fwd = cpu_fc_fwd,
	.fc_bwd_data = cpu_fc_bwd_data,
	.fc_bwd_weights = cpu_fc_bwd_weights,
	.dropout_fwd = cpu_dropout_fwd,
	.dropout_bwd = cpu_dropout_bwd,
	.lrn_fwd = cpu_lrn_fwd,
	.lrn_bwd = cpu_lrn_bwd,
	.bn_fwd = cpu_bn_fwd,
	.bn_bwd = cpu_bn_bwd,
	.add = cpu_add,
	.accumulate = cpu_accumulate,
	.pad_fwd = cpu_pad_fwd,
	.pad_bwd = cpu_pad_bwd,
	.l2norm_fwd = cpu_l2norm_fwd,
	.l2norm_bwd = cpu_l2norm_bwd,
	.sgd_step = cpu_sgd_step,
	.adam_step = cpu_adam_step,
	.input_u8 = cpu_input_u8,
	.input_u8_gather = cpu_input_u8_gather,
	.close = cpu_close,
};

int nn__cpu_open(struct nn_backend **out)
{
	struct nn_backend *b = calloc(1, sizeof(*b));
	if (!b)
		return VR_ENOMEM;
	b->ops = &nn__cpu_ops;
	snprintf(b->name, sizeof(b->name), "cpu");
#ifndef NN_NO_BLAS
	snprintf(b->device, sizeof(b->device), "CPU, %s, %d threads",
		openblas_get_config(), openblas_get_num_threads());
#else
	snprintf(b->device, sizeof(b->device), "CPU, reference GEMM (no BLAS)");
#endif
	*out = b;
	return 0;
}
