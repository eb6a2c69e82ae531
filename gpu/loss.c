/* DVBPR's pairwise loss over a batch of triples (nn.h, nn_bpr_triples):
 * the host-side glue between one training forward of 2n images and the
 * backward that follows. It is O(n K) against the network's billions of
 * FLOPs, so it stays on the host, where rankd's margins and θ_u arrive
 * and the per-triple results leave. Sums run in double: K terms of mixed
 * sign, and the loss and g = σ(−x) must agree with a reference to 1e-6. */
#include <math.h>

#include "nn.h"

/* −ln σ(x) without overflow. */
static double softplus_neg(double x)
{
	return x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
}

double nn_bpr_triples(const float *phi, size_t n, size_t k, const float *theta,
	const float *margin, float *loss, float *g, float *dphi, float *dtheta)
{
	double total = 0;
	for (size_t t = 0; t < n; t++) {
		const float *th = theta + t * k, *pi = phi + t * k, *pj = phi + (n + t) * k;
		float *di = dphi + t * k, *dj = dphi + (n + t) * k, *dt = dtheta + t * k;
		double x = margin ? margin[t] : 0.0;
		for (size_t c = 0; c < k; c++)
			x += (double)th[c] * ((double)pi[c] - pj[c]);
		const float gt = (float)(1.0 / (1.0 + exp(x)));
		const double l = softplus_neg(x);
		total += l;
		if (loss)
			loss[t] = (float)l;
		if (g)
			g[t] = gt;
		for (size_t c = 0; c < k; c++) {
			di[c] = -gt * th[c];
			dj[c] = gt * th[c];
			dt[c] = -gt * (pi[c] - pj[c]);
		}
	}
	return total;
}
