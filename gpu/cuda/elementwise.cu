/* Elementwise kernels of the CUDA backend: fill, ReLU and ReLU6 with their
 * gradients, the residual add and gradient accumulation, the fully
 * connected bias, and inverted dropout. Each is a grid-stride loop over a
 * flat index, one element per step, so in-place calls (x == y, dx == dy)
 * are safe: every element is read before it is written, by the same thread.
 * Dropout draws its mask from nn_dropout_keep (backend.h), the function the
 * CPU backend uses, so both draw the same mask. */
#include "kernels.h"

static __global__ void fill_kernel(size_t count, float value, float *p)
{
	NN_FOR_EACH(i, count)
		p[i] = value;
}

static __global__ void act_fwd_kernel(int relu6, size_t count, const float *x, float *y)
{
	NN_FOR_EACH(i, count) {
		float v = x[i];
		y[i] = v > 0.0f ? (relu6 && !(v < 6.0f) ? 6.0f : v) : 0.0f;
	}
}

static __global__ void act_bwd_kernel(float hi, size_t count, const float *y, const float *dy,
	float *dx, int acc)
{
	NN_FOR_EACH(i, count) {
		float g = dy[i], base = acc ? dx[i] : 0.0f, v = y[i];
		dx[i] = base + (v > 0.0f && v < hi ? g : 0.0f);
	}
}

static __global__ void add_kernel(size_t count, const float *a, const float *c, float *y)
{
	NN_FOR_EACH(i, count)
		y[i] = a[i] + c[i];
}

static __global__ void accumulate_kernel(size_t count, const float *src, float *dst)
{
	NN_FOR_EACH(i, count)
		dst[i] += src[i];
}

static __global__ void add_bias_rows_kernel(size_t count, int out, const float *bias, float *y)
{
	NN_FOR_EACH(i, count)
		y[i] += bias[i % (size_t)out];
}

static __global__ void dropout_fwd_kernel(size_t count, float p, float scale, uint64_t seed,
	const float *x, float *y)
{
	NN_FOR_EACH(i, count)
		y[i] = nn_dropout_keep(seed, i, p) ? x[i] * scale : 0.0f;
}

static __global__ void dropout_bwd_kernel(size_t count, float p, float scale, uint64_t seed,
	const float *dy, float *dx, int acc)
{
	NN_FOR_EACH(i, count) {
		float g = nn_dropout_keep(seed, i, p) ? dy[i] * scale : 0.0f;
		dx[i] = acc ? dx[i] + g : g;
	}
}

extern "C" cudaError_t nn__k_fill(cudaStream_t st, size_t count, float value, float *p)
{
	if (!count)
		return cudaSuccess;
	fill_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, value, p);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_act_fwd(cudaStream_t st, int mode, size_t count, const float *x,
	float *y)
{
	if (!count)
		return cudaSuccess;
	act_fwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(mode == NN_ACT_RELU6, count, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_act_bwd(cudaStream_t st, int mode, size_t count, const float *y,
	const float *dy, float *dx, int acc)
{
	if (!count)
		return cudaSuccess;
	float hi = mode == NN_ACT_RELU6 ? 6.0f : __builtin_huge_valf();
	act_bwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(hi, count, y, dy, dx, acc);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_add(cudaStream_t st, size_t count, const float *a, const float *c,
	float *y)
{
	if (!count)
		return cudaSuccess;
	add_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, a, c, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_accumulate(cudaStream_t st, size_t count, const float *src,
	float *dst)
{
	if (!count)
		return cudaSuccess;
	accumulate_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, src, dst);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_add_bias_rows(cudaStream_t st, int n, int out, const float *bias,
	float *y)
{
	size_t count = (size_t)n * out;
	if (!count)
		return cudaSuccess;
	add_bias_rows_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, out, bias, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_dropout_fwd(cudaStream_t st, size_t count, float p, float scale,
	uint64_t seed, const float *x, float *y)
{
	if (!count)
		return cudaSuccess;
	dropout_fwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, p, scale, seed, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_dropout_bwd(cudaStream_t st, size_t count, float p, float scale,
	uint64_t seed, const float *dy, float *dx, int acc)
{
	if (!count)
		return cudaSuccess;
	dropout_bwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, p, scale, seed, dy, dx,
		acc);
	return cudaGetLastError();
}
