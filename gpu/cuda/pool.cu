/* Adaptive average pooling on the GPU (PyTorch's AdaptiveAvgPool2d, as
 * gpu/pool.c defines it: output cell i averages [floor(i h / oh),
 * ceil((i + 1) h / oh))). cuDNN has no such mode; max and average pooling
 * go through cuDNN (pool.c beside this file).
 *
 * Forward: one thread per output cell. Backward gathers instead of
 * scattering: one thread per input cell sums dy / window size over the
 * cells whose windows hold it, in the CPU's order (rows, then columns,
 * ascending), so overlapping windows need no atomics. */
#include "kernels.h"

struct geom {
	long h, w, oh, ow;
};

static __device__ long lo_of(long i, long in, long out)
{
	return i * in / out;
}

static __device__ long hi_of(long i, long in, long out)
{
	return ((i + 1) * in + out - 1) / out;
}

static __global__ void adaptive_fwd_kernel(struct geom g, size_t count, const float *x,
	float *y)
{
	NN_FOR_EACH(i, count) {
		size_t plane = i / (size_t)(g.oh * g.ow);
		long oy = (long)(i / g.ow % g.oh), ox = (long)(i % g.ow);
		long y0 = lo_of(oy, g.h, g.oh), y1 = hi_of(oy, g.h, g.oh);
		long x0 = lo_of(ox, g.w, g.ow), x1 = hi_of(ox, g.w, g.ow);
		const float *xp = x + plane * g.h * g.w;
		float sum = 0.0f;
		for (long yy = y0; yy < y1; yy++)
			for (long xx = x0; xx < x1; xx++)
				sum += xp[yy * g.w + xx];
		y[i] = sum / (float)((y1 - y0) * (x1 - x0));
	}
}

static __global__ void adaptive_bwd_kernel(struct geom g, size_t count, const float *dy,
	float *dx, int acc)
{
	NN_FOR_EACH(i, count) {
		size_t plane = i / (size_t)(g.h * g.w);
		long yy = (long)(i / g.w % g.h), xx = (long)(i % g.w);
		const float *dyp = dy + plane * g.oh * g.ow;
		float d = acc ? dx[i] : 0.0f;
		/* A window holding yy starts at cell floor(yy oh / h) or later. */
		for (long oy = yy * g.oh / g.h; oy < g.oh && lo_of(oy, g.h, g.oh) <= yy; oy++) {
			long y0 = lo_of(oy, g.h, g.oh), y1 = hi_of(oy, g.h, g.oh);
			if (yy >= y1)
				continue;
			for (long ox = xx * g.ow / g.w; ox < g.ow && lo_of(ox, g.w, g.ow) <= xx; ox++) {
				long x0 = lo_of(ox, g.w, g.ow), x1 = hi_of(ox, g.w, g.ow);
				if (xx >= x1)
					continue;
				d += dyp[oy * g.ow + ox] / (float)((y1 - y0) * (x1 - x0));
			}
		}
		dx[i] = d;
	}
}

static struct geom geom_of(const struct nn_pool_shape *s)
{
	struct geom g = { s->h, s->w, s->oh, s->ow };
	return g;
}

extern "C" cudaError_t nn__k_adaptive_avg_fwd(cudaStream_t st, const struct nn_pool_shape *s,
	int n, const float *x, float *y)
{
	size_t count = (size_t)n * s->c * s->oh * s->ow;
	if (!count)
		return cudaSuccess;
	adaptive_fwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(geom_of(s), count, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_adaptive_avg_bwd(cudaStream_t st, const struct nn_pool_shape *s,
	int n, const float *dy, float *dx, int acc)
{
	size_t count = (size_t)n * s->c * s->h * s->w;
	if (!count)
		return cudaSuccess;
	adaptive_bwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(geom_of(s), count, dy, dx,
		acc);
	return cudaGetLastError();
}
