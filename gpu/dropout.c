/* Inverted dropout on the CPU. The mask is nn_dropout_keep(seed, i, p)
 * (backend.h), a pure function of the element's index, so nothing is
 * stored between forward and backward and a CUDA kernel draws the same
 * mask. */
#include "cpu.h"

void nn_cpu_dropout_fwd(size_t count, float p, uint64_t seed, const float *x, float *y)
{
	const float scale = 1.0f / (1.0f - p);
	for (size_t i = 0; i < count; i++)
		y[i] = nn_dropout_keep(seed, i, p) ? x[i] * scale : 0.0f;
}

void nn_cpu_dropout_bwd(size_t count, float p, uint64_t seed, const float *dy, float *dx, int acc)
{
	const float scale = 1.0f / (1.0f - p);
	for (size_t i = 0; i < count; i++) {
		float g = nn_dropout_keep(seed, i, p) ? dy[i] * scale : 0.0f;
		dx[i] = acc ? dx[i] + g : g;
	}
}
