/* The optimiser steps on the GPU (gpu/optim.c's formulas): one pass over
 * the whole trainable arena, one element per thread and step. The Adam
 * scalars (bias corrections, decoupled shrink) arrive computed on the host
 * in double, as nn_cpu_adam_step computes them. */
#include "kernels.h"

static __global__ void sgd_kernel(size_t count, float *w, const float *g, float *m, float lr,
	float mu, float wd)
{
	NN_FOR_EACH(i, count) {
		float d = g[i] + wd * w[i];
		if (m) {
			m[i] = mu * m[i] + d;
			d = m[i];
		}
		w[i] -= lr * d;
	}
}

static __global__ void adam_kernel(size_t count, float *w, const float *g, float *m, float *v,
	float b1, float b2, float eps, float l2, float shrink, float step_size, float bc2_sqrt)
{
	NN_FOR_EACH(i, count) {
		float wi = w[i] * shrink;
		float gi = g[i] + l2 * wi;
		float mi = b1 * m[i] + (1.0f - b1) * gi;
		float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		w[i] = wi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
	}
}

extern "C" cudaError_t nn__k_sgd(cudaStream_t st, size_t count, float *w, const float *g,
	float *m, float lr, float momentum, float weight_decay)
{
	if (!count)
		return cudaSuccess;
	sgd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, w, g, m, lr, momentum,
		weight_decay);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_adam(cudaStream_t st, size_t count, float *w, const float *g,
	float *m, float *v, float beta1, float beta2, float eps, float l2, float shrink,
	float step_size, float bc2_sqrt)
{
	if (!count)
		return cudaSuccess;
	adam_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, w, g, m, v, beta1, beta2, eps,
		l2, shrink, step_size, bc2_sqrt);
	return cudaGetLastError();
}
