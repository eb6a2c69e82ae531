/* Row-wise L2 normalisation on the GPU (gpu/l2norm.c): y = x / r, r =
 * sqrt(|x|² + eps) over each image's d values; backward dx = (dy - y (y ·
 * dy)) / r from x and dy. One thread per row: the rows are a head's
 * outputs (d of 16 to a few hundred, one row an image), a few thousand a
 * batch at most, so each row's sums stay in one thread's doubles, by the
 * same row functions as the CPU's (backend.h). */
#include "kernels.h"

static __global__ void l2norm_fwd_kernel(int n, int d, float eps, const float *x, float *y)
{
	NN_FOR_EACH(r, (size_t)n)
		nn_l2norm_row_fwd(d, eps, x + r * d, y + r * d);
}

static __global__ void l2norm_bwd_kernel(int n, int d, float eps, const float *x,
	const float *dy, float *dx, int acc)
{
	NN_FOR_EACH(r, (size_t)n)
		nn_l2norm_row_bwd(d, eps, x + r * d, dy + r * d, dx + r * d, acc);
}

extern "C" cudaError_t nn__k_l2norm_fwd(cudaStream_t st, int n, int d, float eps, const float *x,
	float *y)
{
	if (n <= 0 || d <= 0)
		return cudaSuccess;
	l2norm_fwd_kernel<<<nn__blocks((size_t)n), NN_THREADS, 0, st>>>(n, d, eps, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_l2norm_bwd(cudaStream_t st, int n, int d, float eps, const float *x,
	const float *dy, float *dx, int acc)
{
	if (n <= 0 || d <= 0)
		return cudaSuccess;
	l2norm_bwd_kernel<<<nn__blocks((size_t)n), NN_THREADS, 0, st>>>(n, d, eps, x, dy, dx, acc);
	return cudaGetLastError();
}
