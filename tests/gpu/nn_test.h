/* Helpers shared by the gpu/ tests: seeded random arrays and array
 * comparisons that name the worst element. */
#ifndef NN_TEST_H
#define NN_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"

/* Uniform in [lo, hi), from nn_uniform01 (a stateless stream per seed). */
static inline void fill_uniform(float *a, size_t n, uint64_t seed, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		a[i] = lo + (hi - lo) * nn_uniform01(seed, i);
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

#endif
