/* Row-wise L2 normalisation on the CPU: y = x / r, r = sqrt(|x|² + eps),
 * over each image's d values. DVBPR's head ends with it (nn_net_opts
 * head_norm), so φ has unit length and the user side's L2 penalty weighs
 * the preference itself rather than a scale the CNN is free to grow.
 * Backward: dx = (dy - y (y · dy)) / r, computed from x (r and y again).
 * The row arithmetic is backend.h's, shared with the CUDA kernel. */
#include "backend.h"
#include "cpu.h"

void nn_cpu_l2norm_fwd(int n, int d, float eps, const float *x, float *y)
{
	for (int i = 0; i < n; i++)
		nn_l2norm_row_fwd(d, eps, x + (size_t)i * d, y + (size_t)i * d);
}

void nn_cpu_l2norm_bwd(int n, int d, float eps, const float *x, const float *dy, float *dx,
	int acc)
{
	for (int i = 0; i < n; i++)
		nn_l2norm_row_bwd(d, eps, x + (size_t)i * d, dy + (size_t)i * d, dx + (size_t)i * d,
			acc);
}
