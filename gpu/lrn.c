/* Local response normalisation across channels on the CPU (PyTorch's
 * LocalResponseNorm, as in AlexNet's paper and Chatfield et al.'s CNN-F):
 *   s_c = k + alpha / size * sum of x_c'^2 over c' in [c - size/2, c + (size-1)/2]
 *   y_c = x_c s_c^-beta
 * and backward
 *   dx_j = dy_j s_j^-beta - 2 alpha beta / size * x_j * sum over the c whose
 *          window holds j of dy_c y_c / s_c.
 * Sums run plane by plane so memory is read in order. */
#include <math.h>
#include <string.h>

#include "cpu.h"
#include "err.h"

int nn_lrn_shape_check(const struct nn_lrn_shape *s)
{
	if (s->n < 1 || s->c < 1 || s->h < 1 || s->w < 1 || s->size < 1 || s->size > s->c * 2 + 1)
		return VR_EINVAL;
	if (!(s->k > 0.0f) || !(s->alpha >= 0.0f) || !(s->beta >= 0.0f))
		return VR_EINVAL;
	return 0;
}

size_t nn_cpu_lrn_ws_floats(const struct nn_lrn_shape *s)
{
	return 2 * (size_t)s->c * s->h * s->w;
}

/* s[i] = s[i]^-beta. powf does not vectorise, and every net here uses
 * beta = 3/4, which is two square roots. */
static void pow_neg_beta(float *s, size_t n, float beta)
{
	if (beta == 0.75f) {
		for (size_t i = 0; i < n; i++)
			s[i] = 1.0f / sqrtf(s[i] * sqrtf(s[i]));
		return;
	}
	for (size_t i = 0; i < n; i++)
		s[i] = powf(s[i], -beta);
}

/* s[c][p] = k + alpha / size * window sum of x^2, for one image. */
static void lrn_scale(const struct nn_lrn_shape *s, const float *x, float *scale)
{
	const size_t hw = (size_t)s->h * s->w;
	const float a = s->alpha / s->size;
	for (int c = 0; c < s->c; c++) {
		float *sp = scale + c * hw;
		for (size_t p = 0; p < hw; p++)
			sp[p] = 0.0f;
		int lo = c - s->size / 2, hi = c + (s->size - 1) / 2;
		for (int cc = lo < 0 ? 0 : lo; cc <= hi && cc < s->c; cc++) {
			const float *xp = x + cc * hw;
			for (size_t p = 0; p < hw; p++)
				sp[p] += xp[p] * xp[p];
		}
		for (size_t p = 0; p < hw; p++)
			sp[p] = s->k + a * sp[p];
	}
}

void nn_cpu_lrn_fwd(const struct nn_lrn_shape *s, int n, const float *x, float *y)
{
	const size_t img = (size_t)s->c * s->h * s->w;
	for (int i = 0; i < n; i++) {
		const float *xi = x + i * img;
		float *yi = y + i * img;
		lrn_scale(s, xi, yi);
		pow_neg_beta(yi, img, s->beta);
		for (size_t p = 0; p < img; p++)
			yi[p] *= xi[p];
	}
}

void nn_cpu_lrn_bwd(const struct nn_lrn_shape *s, int n, const float *x, const float *y,
	const float *dy, float *dx, int acc, float *ws)
{
	const size_t hw = (size_t)s->h * s->w, img = (size_t)s->c * hw;
	const float coef = 2.0f * s->alpha * s->beta / s->size;
	for (int i = 0; i < n; i++) {
		const float *xi = x + i * img, *yi = y + i * img, *dyi = dy + i * img;
		float *dxi = dx + i * img;
		float *scale = ws, *pw = ws + img;
		lrn_scale(s, xi, scale);
		memcpy(pw, scale, sizeof(float) * img);
		pow_neg_beta(pw, img, s->beta);
		for (size_t p = 0; p < img; p++) {
			float g = dyi[p] * pw[p];
			dxi[p] = acc ? dxi[p] + g : g;
			scale[p] = dyi[p] * yi[p] / scale[p];
		}
		/* Channel c's window holds j iff c is in [j - (size-1)/2, j + size/2]. */
		for (int j = 0; j < s->c; j++) {
			int lo = j - (s->size - 1) / 2, hi = j + s->size / 2;
			const float *xp = xi + j * hw;
			float *dxp = dxi + j * hw;
			for (int c = lo < 0 ? 0 : lo; c <= hi && c < s->c; c++) {
				const float *tp = scale + c * hw;
				for (size_t p = 0; p < hw; p++)
					dxp[p] -= coef * xp[p] * tp[p];
			}
		}
	}
}
