/* Local response normalisation across channels on the GPU, PyTorch's
 * LocalResponseNorm as gpu/lrn.c defines it. Our own kernels rather than
 * cuDNN's LRN: cuDNN centres an even window differently (it looks one
 * channel further ahead than behind; PyTorch looks further behind), and
 * the formulas are a few lines.
 *
 * One thread per element. Backward needs, for each channel c whose window
 * holds j, the scale s_c; it recomputes them from x (size^2 loads per
 * element, all cached) instead of keeping an n x c x h x w scale tensor. */
#include "kernels.h"

/* s = k + a * sum of x^2 over channels [lo, hi] at one pixel, summed in
 * ascending channel order as the CPU does. */
static __device__ float window_scale(const float *x, size_t hw, int c_count, int lo, int hi,
	float k, float a)
{
	float sum = 0.0f;
	for (int cc = lo < 0 ? 0 : lo; cc <= hi && cc < c_count; cc++) {
		float v = x[(size_t)cc * hw];
		sum += v * v;
	}
	return k + a * sum;
}

static __device__ float pow_neg_beta(float s, float beta)
{
	if (beta == 0.75f)
		return 1.0f / sqrtf(s * sqrtf(s));
	return powf(s, -beta);
}

struct lrn_args {
	int c, size;
	size_t hw;
	float k, a, beta;
};

static __global__ void lrn_fwd_kernel(struct lrn_args l, size_t count, const float *x, float *y)
{
	NN_FOR_EACH(i, count) {
		size_t img = i / (l.c * l.hw), p = i % l.hw;
		int c = (int)(i / l.hw % l.c);
		const float *xp = x + img * l.c * l.hw + p;
		float s = window_scale(xp, l.hw, l.c, c - l.size / 2, c + (l.size - 1) / 2, l.k, l.a);
		y[i] = pow_neg_beta(s, l.beta) * x[i];
	}
}

static __global__ void lrn_bwd_kernel(struct lrn_args l, float coef, size_t count,
	const float *x, const float *y, const float *dy, float *dx, int acc)
{
	NN_FOR_EACH(i, count) {
		size_t img = i / (l.c * l.hw), p = i % l.hw;
		int j = (int)(i / l.hw % l.c);
		size_t base = img * l.c * l.hw + p;
		const float *xp = x + base;
		float s = window_scale(xp, l.hw, l.c, j - l.size / 2, j + (l.size - 1) / 2, l.k, l.a);
		float g = dy[i] * pow_neg_beta(s, l.beta);
		float d = acc ? dx[i] + g : g;
		/* Channel c's window holds j iff c is in [j - (size-1)/2, j + size/2]. */
		int lo = j - (l.size - 1) / 2, hi = j + l.size / 2;
		for (int c = lo < 0 ? 0 : lo; c <= hi && c < l.c; c++) {
			float sc = window_scale(xp, l.hw, l.c, c - l.size / 2, c + (l.size - 1) / 2,
				l.k, l.a);
			size_t at = base + (size_t)c * l.hw;
			float t = dy[at] * y[at] / sc;
			d -= coef * x[i] * t;
		}
		dx[i] = d;
	}
}

static struct lrn_args args_of(const struct nn_lrn_shape *s)
{
	struct lrn_args l;
	l.c = s->c;
	l.size = s->size;
	l.hw = (size_t)s->h * s->w;
	l.k = s->k;
	l.a = s->alpha / s->size;
	l.beta = s->beta;
	return l;
}

extern "C" cudaError_t nn__k_lrn_fwd(cudaStream_t st, const struct nn_lrn_shape *s, int n,
	const float *x, float *y)
{
	size_t count = (size_t)n * s->c * s->h * s->w;
	if (!count)
		return cudaSuccess;
	lrn_fwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(args_of(s), count, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_lrn_bwd(cudaStream_t st, const struct nn_lrn_shape *s, int n,
	float coef, const float *x, const float *y, const float *dy, float *dx, int acc)
{
	size_t count = (size_t)n * s->c * s->h * s->w;
	if (!count)
		return cudaSuccess;
	lrn_bwd_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(args_of(s), coef, count, x, y, dy,
		dx, acc);
	return cudaGetLastError();
}
