/* Helpers shared by the gpu/ tests: seeded random arrays and array
 * comparisons that name the worst element. */
#ifndef NN_TEST_H
#define NN_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"

/* Uniform in [lo, hi), from nn_uniform01 (a stateless stream per seed). */
static inline void fill_uniform(float *a, size_t n, uint64_t seed, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		a[i] = lo + (hi - lo) * nn_uniform01(seed, i);
}

/* len floats aligned for any op (64 bytes), or NULL. */
static inline float *nn_test_buf(size_t len)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, sizeof(float) * (len ? len : 1)))
		return NULL;
	return p;
}

/* nn_test_buf filled by fill_uniform. */
static inline float *nn_test_random_buf(size_t len, uint64_t seed, float lo, float hi)
{
	float *a = nn_test_buf(len);
	if (a)
		fill_uniform(a, len, seed, lo, hi);
	return a;
}

/* The index of the worst |a - b| / (atol + rtol |b|); *ratio > 1 fails. */
static inline size_t worst_error(const float *a, const double *b, size_t n, double atol,
	double rtol, double *ratio)
{
	size_t worst = 0;
	*ratio = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		double r = d == 0 ? 0 : d / (atol + rtol * fabs(b[i]));
		if (!(r <= *ratio)) {
			*ratio = r;
			worst = i;
		}
	}
	return worst;
}

/* Fails the test unless every a[i] is within atol + rtol |b[i]| of b[i]. */
#define ASSERT_CLOSE(a, b, n, atol, rtol, what) do { double r_; \
	size_t w_ = worst_error((a), (b), (n), (atol), (rtol), &r_); \
	if (!(r_ <= 1.0)) FAIL_("%s: element %zu of %zu: %.9g vs reference %.9g " \
		"(atol %g, rtol %g)", (what), w_, (size_t)(n), (double)(a)[w_], (b)[w_], \
		(double)(atol), (double)(rtol)); } while (0)

/* max |g - c| / max(max |c|, 1e-6): the parity tables' error, one scale
 * for the whole tensor. A NaN in g makes it NaN, so the row fails. */
static inline double nn_rel_error(const float *g, const float *c, size_t len)
{
	double diff = 0, ref = 0;
	for (size_t i = 0; i < len; i++) {
		double d = fabs((double)g[i] - c[i]);
		if (!(d <= diff))
			diff = d;
		if (fabs(c[i]) > ref)
			ref = fabs(c[i]);
	}
	return diff / (ref > 1e-6 ? ref : 1e-6);
}

/* Nets a and b (one architecture on two backends) forward on n random
 * images of size px from the same parameters: a's init scaled and shifted
 * a little, so batch norms are no identities (variances stay above 0.4).
 * Outputs start as NaN. Returns the rel error of b's output against a's
 * (nn_rel_error, below), or 1 when a call failed. */
static inline double nn_test_same_params_forward(nn_net *a, nn_net *b, int n, int size)
{
	nn_net *net[2] = { a, b };
	size_t pc = nn_net_param_count(a);
	float *p = nn_test_buf(pc), *u = nn_test_random_buf(pc, 6, 0.5f, 1.5f),
		*v = nn_test_random_buf(pc, 7, -0.1f, 0.1f);
	size_t xl = (size_t)n * 3 * size * size, yl = (size_t)n * nn_net_output_size(a);
	float *x = nn_test_random_buf(xl, 8, -2, 2), *y[2] = { nn_test_buf(yl), nn_test_buf(yl) };
	int rc = !p || !u || !v || !x || !y[0] || !y[1] || nn_net_params_get(a, p);
	for (size_t i = 0; !rc && i < pc; i++)
		p[i] = p[i] * u[i] + v[i];
	for (size_t i = 0; !rc && i < yl; i++)
		y[0][i] = y[1][i] = NAN;
	for (int i = 0; i < 2 && !rc; i++)
		rc = nn_net_params_set(net[i], p) || nn_net_forward(net[i], x, n, 0, y[i]);
	double e = rc ? 1 : nn_rel_error(y[1], y[0], yl);
	free(p); free(u); free(v); free(x); free(y[0]); free(y[1]);
	return e;
}

#endif
