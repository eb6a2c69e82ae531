/* Batch normalisation with running statistics on the CPU: what ResNet and
 * MobileNetV2 need for inference (and for fine-tuning with frozen
 * statistics, PyTorch's eval mode), and the fold of it into the
 * convolution before it, which removes the layer from an inference net. */
#include <math.h>

#include "cpu.h"

void nn_cpu_bn_fwd(int n, int c, int hw, float eps, const float *x, const float *gamma,
	const float *beta, const float *mean, const float *var, float *y)
{
	for (int ch = 0; ch < c; ch++) {
		float scale = gamma[ch] / sqrtf(var[ch] + eps);
		float shift = beta[ch] - mean[ch] * scale;
		for (int i = 0; i < n; i++) {
			size_t o = ((size_t)i * c + ch) * hw;
			for (int p = 0; p < hw; p++)
				y[o + p] = x[o + p] * scale + shift;
		}
	}
}

void nn_cpu_bn_bwd(int n, int c, int hw, float eps, const float *x, const float *gamma,
	const float *mean, const float *var, const float *dy, float *dx, int acc,
	float *dgamma, float *dbeta)
{
	for (int ch = 0; ch < c; ch++) {
		float inv = 1.0f / sqrtf(var[ch] + eps), scale = gamma[ch] * inv;
		float dg = 0, db = 0;
		for (int i = 0; i < n; i++) {
			size_t o = ((size_t)i * c + ch) * hw;
			for (int p = 0; p < hw; p++) {
				float g = dy[o + p];
				dg += g * (x[o + p] - mean[ch]) * inv;
				db += g;
				if (dx)
					dx[o + p] = acc ? dx[o + p] + g * scale : g * scale;
			}
		}
		if (dgamma)
			dgamma[ch] += dg;
		if (dbeta)
			dbeta[ch] += db;
	}
}

void nn_bn_fold(int k, size_t per_k, float eps, float *w, float *bias, const float *gamma,
	const float *beta, const float *mean, const float *var)
{
	for (int ch = 0; ch < k; ch++) {
		float scale = gamma[ch] / sqrtf(var[ch] + eps);
		for (size_t i = 0; i < per_k; i++)
			w[ch * per_k + i] *= scale;
		bias[ch] = (bias[ch] - mean[ch]) * scale + beta[ch];
	}
}
