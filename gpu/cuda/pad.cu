/* Zero padding on the GPU, by a different amount on each side (gpu/pad.c):
 * forward writes every output cell, the input's value or zero; backward
 * is the crop of the gradient. One thread per written element. */
#include "kernels.h"

static __global__ void pad_fwd_kernel(struct nn_pad_shape s, size_t count, const float *x,
	float *y)
{
	NN_FOR_EACH(i, count) {
		size_t plane = i / ((size_t)s.oh * s.ow);
		int oy = (int)(i / s.ow % s.oh), ox = (int)(i % s.ow);
		int iy = oy - s.top, ix = ox - s.left;
		y[i] = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w ?
			x[(plane * s.h + iy) * s.w + ix] : 0.0f;
	}
}

static __global__ void pad_bwd_kernel(struct nn_pad_shape s, size_t count, const float *dy,
	float *dx, int acc)
{
	NN_FOR_EACH(i, count) {
		size_t plane = i / ((size_t)s.h * s.w);
		int iy = (int)(i / s.w % s.h), ix = (int)(i % s.w);
		float g = dy[(plane * s.oh + iy + s.top) * s.ow + ix + s.left];
		dx[i] = acc ? dx[i] + g : g;
	}
}

extern "C" cudaError_t nn__k_pad_fwd(cudaStream_t st, const struct nn_pad_shape *s, int n,
	const float *x, float *y)
{
	size_t count = (size_t)n * s->c * s->oh * s->ow;
	if (!count)
		return cudaSuccess;
	pad_fwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(*s, count, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_pad_bwd(cudaStream_t st, const struct nn_pad_shape *s, int n,
	const float *dy, float *dx, int acc)
{
	size_t count = (size_t)n * s->c * s->h * s->w;
	if (!count)
		return cudaSuccess;
	pad_bwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(*s, count, dy, dx, acc);
	return cudaGetLastError();
}
