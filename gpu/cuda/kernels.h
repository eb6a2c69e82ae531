/* The CUDA backend's own kernels (*.cu beside this header), one launcher
 * each, callable from C. A launcher queues its kernel on stream and
 * returns the launch status (cudaGetLastError); the kernel's own failures
 * surface at the next synchronisation. Counts of zero launch nothing.
 *
 * Each kernel computes what the CPU kernel of the same layer computes
 * (gpu/act.c, dropout.c, lrn.c, bn.c, pad.c, optim.c, pool.c), in the same order
 * of operations where that order is visible in the result, so the parity
 * check compares like with like. Pointers are device memory unless named
 * host. */
#ifndef NN_CUDA_KERNELS_H
#define NN_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend.h"

#ifdef __CUDACC__
/* For the kernels' grid-stride loops: one element per thread and step.
 * More blocks than NN_MAX_BLOCKS only add scheduling, as the loops stride. */
#define NN_THREADS 256
#define NN_MAX_BLOCKS 65535

static inline unsigned nn__blocks(size_t count)
{
	size_t b = (count + NN_THREADS - 1) / NN_THREADS;
	return (unsigned)(b < NN_MAX_BLOCKS ? b : NN_MAX_BLOCKS);
}

#define NN_FOR_EACH(i, count) \
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (count); \
	     i += (size_t)blockDim.x * gridDim.x)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* elementwise.cu */
cudaError_t nn__k_fill(cudaStream_t st, size_t count, float value, float *p);
cudaError_t nn__k_act_fwd(cudaStream_t st, int mode, size_t count, const float *x, float *y);
cudaError_t nn__k_act_bwd(cudaStream_t st, int mode, size_t count, const float *y,
	const float *dy, float *dx, int acc);
cudaError_t nn__k_add(cudaStream_t st, size_t count, const float *a, const float *c, float *y);
/* dst += src */
cudaError_t nn__k_accumulate(cudaStream_t st, size_t count, const float *src, float *dst);
/* y[i][o] += bias[o] for rows i < n of width out. */
cudaError_t nn__k_add_bias_rows(cudaStream_t st, int n, int out, const float *bias, float *y);
/* scale is 1 / (1 - p), computed once by the caller as the CPU does. */
cudaError_t nn__k_dropout_fwd(cudaStream_t st, size_t count, float p, float scale,
	uint64_t seed, const float *x, float *y);
cudaError_t nn__k_dropout_bwd(cudaStream_t st, size_t count, float p, float scale,
	uint64_t seed, const float *dy, float *dx, int acc);

/* lrn.cu; coef is 2 alpha beta / size, computed by the caller as the CPU does. */
cudaError_t nn__k_lrn_fwd(cudaStream_t st, const struct nn_lrn_shape *s, int n, const float *x,
	float *y);
cudaError_t nn__k_lrn_bwd(cudaStream_t st, const struct nn_lrn_shape *s, int n, float coef,
	const float *x, const float *y, const float *dy, float *dx, int acc);

/* bn.cu; dx, dgamma, dbeta may each be NULL. */
cudaError_t nn__k_bn_fwd(cudaStream_t st, int n, int c, int hw, float eps, const float *x,
	const float *gamma, const float *beta, const float *mean, const float *var, float *y);
cudaError_t nn__k_bn_bwd(cudaStream_t st, int n, int c, int hw, float eps, const float *x,
	const float *gamma, const float *mean, const float *var, const float *dy, float *dx,
	int acc, float *dgamma, float *dbeta);

/* pool.cu: adaptive average pooling (cuDNN has no such mode). */
cudaError_t nn__k_adaptive_avg_fwd(cudaStream_t st, const struct nn_pool_shape *s, int n,
	const float *x, float *y);
cudaError_t nn__k_adaptive_avg_bwd(cudaStream_t st, const struct nn_pool_shape *s, int n,
	const float *dy, float *dx, int acc);

/* pad.cu: zero padding (x != y) and its backward, the crop of dy. */
cudaError_t nn__k_pad_fwd(cudaStream_t st, const struct nn_pad_shape *s, int n, const float *x,
	float *y);
cudaError_t nn__k_pad_bwd(cudaStream_t st, const struct nn_pad_shape *s, int n, const float *dy,
	float *dx, int acc);

/* l2norm.cu: row-wise L2 normalisation (x != y) and its backward. */
cudaError_t nn__k_l2norm_fwd(cudaStream_t st, int n, int d, float eps, const float *x, float *y);
cudaError_t nn__k_l2norm_bwd(cudaStream_t st, int n, int d, float eps, const float *x,
	const float *dy, float *dx, int acc);

/* optim.cu. m may be NULL for SGD without momentum. The Adam scalars are
 * computed on the host exactly as nn_cpu_adam_step does. */
cudaError_t nn__k_sgd(cudaStream_t st, size_t count, float *w, const float *g, float *m,
	float lr, float momentum, float weight_decay);
cudaError_t nn__k_adam(cudaStream_t st, size_t count, float *w, const float *g, float *m,
	float *v, float beta1, float beta2, float eps, float l2, float shrink, float step_size,
	float bc2_sqrt);

/* im2col.cu: a convolution's geometry, and the two layouts of conv.c's
 * im2col + GEMM weight gradient for m images (x and dy at their first):
 * col [m oh ow][c kh kw] (input patches, zero-padded) and dyt [k][m oh ow]. */
struct nn__im2col {
	int c, h, w, kh, kw, stride_h, stride_w, pad_h, pad_w, oh, ow;
};
cudaError_t nn__k_im2col_rows(cudaStream_t st, int m, struct nn__im2col g, const float *x,
	float *col);
cudaError_t nn__k_images_side_by_side(cudaStream_t st, int m, int k, size_t pn,
	const float *dy, float *dyt);

/* input.cu: x[i][c][p] = u8[i][p][c] * mul[c] + add[c] for n images of
 * plane pixels each (HWC bytes in, CHW floats out). */
cudaError_t nn__k_input_u8(cudaStream_t st, int n, size_t plane, const unsigned char *u8,
	const float mul[3], const float add[3], float *x);
/* The same for n images of an image set on the device: image i at
 * set + idx[i] * 3 * plane (idx in host memory; it travels in the launch). */
cudaError_t nn__k_input_u8_gather(cudaStream_t st, int n, size_t plane,
	const unsigned char *set, const unsigned *idx, const float mul[3], const float add[3],
	float *x);

/* bf16.cu: the BF16 mode's operand copies (gpu/bf16.h's rounding).
 * y[i] = bf16(x[i]); and for batch matrices of rows x cols,
 * y[b][c][r] = bf16(x[b][r][c]) (NCHW to NHWC, KCRS to KRSC), and back,
 * out[b][r][c] (= or, with acc, +=) y[b][c][r] + bias[r] (bias may be
 * NULL). The batch and the row tiles must fit a grid (65,535 each). */
cudaError_t nn__k_to_bf16(cudaStream_t st, size_t count, const float *x, uint16_t *y);
cudaError_t nn__k_to_bf16_t(cudaStream_t st, int batch, int rows, int cols, const float *x,
	uint16_t *y);
cudaError_t nn__k_from_bf16_t(cudaStream_t st, int batch, int rows, int cols,
	const uint16_t *y, const float *bias, int acc, float *out);

#ifdef __cplusplus
}
#endif

#endif
