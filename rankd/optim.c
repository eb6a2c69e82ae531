/* optim: Adam and SGD steps (contract: optim.h). */
#include "optim.h"

#include <math.h>

void rk_adam_scales(const rk_adam_opts *o, double lr, uint64_t t, float *step, float *bc2s)
{
	*step = (float)(lr / (1 - pow(o->beta1, (double)t)));
	*bc2s = (float)sqrt(1 - pow(o->beta2, (double)t));
}

RK_HOT void rk_adam_update(float *restrict p, const float *restrict g, float *restrict m,
			   float *restrict v, size_t n, float lambda, const rk_adam_opts *o,
			   float step, float bc2s)
{
	const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
#pragma omp simd
	for (size_t x = 0; x < n; x++) {
		float gr = g[x] + lambda * p[x];
		m[x] = b1 * m[x] + (1 - b1) * gr;
		v[x] = b2 * v[x] + (1 - b2) * gr * gr;
		p[x] -= step * m[x] / (sqrtf(v[x]) / bc2s + eps);
	}
}

RK_HOT void rk_sgd_update(float *restrict p, const float *restrict g, size_t n, float lambda,
			  float lr)
{
#pragma omp simd
	for (size_t x = 0; x < n; x++)
		p[x] -= lr * (g[x] + lambda * p[x]);
}
