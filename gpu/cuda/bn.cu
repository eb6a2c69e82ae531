/* Batch normalisation with running statistics on the GPU (gpu/bn.c):
 * forward and the input gradient elementwise, one thread per element; the
 * gamma and beta gradients as one block per channel that reduces its
 * n x hw terms in shared memory and adds the sums to dgamma[c], dbeta[c].
 * A single block owns each channel, so no atomics and the sums are the
 * same on every run. */
#include "kernels.h"

#define REDUCE_THREADS 256

static __global__ void bn_fwd_kernel(size_t count, int c, size_t hw, float eps, const float *x,
	const float *gamma, const float *beta, const float *mean, const float *var, float *y)
{
	NN_FOR_EACH(i, count) {
		int ch = (int)(i / hw % c);
		float scale = gamma[ch] / sqrtf(var[ch] + eps);
		float shift = beta[ch] - mean[ch] * scale;
		y[i] = x[i] * scale + shift;
	}
}

static __global__ void bn_dx_kernel(size_t count, int c, size_t hw, float eps,
	const float *gamma, const float *var, const float *dy, float *dx, int acc)
{
	NN_FOR_EACH(i, count) {
		int ch = (int)(i / hw % c);
		float scale = gamma[ch] * (1.0f / sqrtf(var[ch] + eps));
		float g = dy[i] * scale;
		dx[i] = acc ? dx[i] + g : g;
	}
}

/* Block ch: dgamma[ch] += sum g (x - mean) inv, dbeta[ch] += sum g. */
static __global__ void bn_params_kernel(int n, int c, size_t hw, float eps, const float *x,
	const float *mean, const float *var, const float *dy, float *dgamma, float *dbeta)
{
	__shared__ float sg[REDUCE_THREADS], sb[REDUCE_THREADS];
	const int ch = blockIdx.x;
	const float inv = 1.0f / sqrtf(var[ch] + eps), mu = mean[ch];
	const size_t total = (size_t)n * hw;
	float dg = 0.0f, db = 0.0f;
	for (size_t k = threadIdx.x; k < total; k += blockDim.x) {
		size_t at = ((k / hw) * c + ch) * hw + k % hw;
		float g = dy[at];
		dg += g * (x[at] - mu) * inv;
		db += g;
	}
	sg[threadIdx.x] = dg;
	sb[threadIdx.x] = db;
	__syncthreads();
	for (int half = blockDim.x / 2; half > 0; half /= 2) {
		if ((int)threadIdx.x < half) {
			sg[threadIdx.x] += sg[threadIdx.x + half];
			sb[threadIdx.x] += sb[threadIdx.x + half];
		}
		__syncthreads();
	}
	if (threadIdx.x == 0) {
		if (dgamma)
			dgamma[ch] += sg[0];
		if (dbeta)
			dbeta[ch] += sb[0];
	}
}

extern "C" cudaError_t nn__k_bn_fwd(cudaStream_t st, int n, int c, int hw, float eps,
	const float *x, const float *gamma, const float *beta, const float *mean, const float *var,
	float *y)
{
	size_t count = (size_t)n * c * hw;
	if (!count)
		return cudaSuccess;
	bn_fwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, c, (size_t)hw, eps, x, gamma,
		beta, mean, var, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_bn_bwd(cudaStream_t st, int n, int c, int hw, float eps,
	const float *x, const float *gamma, const float *mean, const float *var, const float *dy,
	float *dx, int acc, float *dgamma, float *dbeta)
{
	size_t count = (size_t)n * c * hw;
	if (!count)
		return cudaSuccess;
	if (dx) {
		bn_dx_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, c, (size_t)hw, eps, gamma,
			var, dy, dx, acc);
		cudaError_t e = cudaGetLastError();
		if (e != cudaSuccess)
			return e;
	}
	if (dgamma || dbeta)
		bn_params_kernel<<<c, REDUCE_THREADS, 0, st>>>(n, c, (size_t)hw, eps, x, mean, var, dy,
			dgamma, dbeta);
	return cudaGetLastError();
}
