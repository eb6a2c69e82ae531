/* Fully connected layers on the CPU (PyTorch's Linear, weights [out][in]):
 * three GEMMs, y = x W^T + b, dx = dy W, dW += dy^T x, and a column sum
 * for the bias. A layer's input is any per-image tensor, read flat. */
#include "cpu.h"

void nn_cpu_fc_fwd(int n, int in, int out, const float *x, const float *w, const float *bias,
	float *y)
{
	if (bias)
		for (int i = 0; i < n; i++)
			for (int o = 0; o < out; o++)
				y[(size_t)i * out + o] = bias[o];
	nn_sgemm(0, 1, n, out, in, 1.0f, x, in, w, in, bias ? 1.0f : 0.0f, y, out);
}

void nn_cpu_fc_bwd_data(int n, int in, int out, const float *dy, const float *w, float *dx,
	int acc)
{
	nn_sgemm(0, 0, n, in, out, 1.0f, dy, out, w, in, acc ? 1.0f : 0.0f, dx, in);
}

void nn_cpu_fc_bwd_weights(int n, int in, int out, const float *x, const float *dy, float *dw,
	float *db)
{
	nn_sgemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
	if (db)
		for (int i = 0; i < n; i++)
			for (int o = 0; o < out; o++)
				db[o] += dy[(size_t)i * out + o];
}
