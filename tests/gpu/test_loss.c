/* nn_bpr_triples, DVBPR's loss, against a double-precision reference on
 * random inputs: the summed loss and g = σ(−x) exactly as defined, and
 * dphi and dtheta against central finite differences of the summed loss
 * (every element, in double, so the differences are exact to ~1e-9). */
#include <stdlib.h>

#include "harness.h"
#include "nn.h"
#include "nn_test.h"

enum { N = 7, K = 5 };

/* Σ_t −ln σ(m_t + θ_t·(φ_t − φ_{N+t})) in double. */
static double loss_ref(const double *phi, const double *theta, const double *margin)
{
	double s = 0;
	for (int t = 0; t < N; t++) {
		double x = margin[t];
		for (int c = 0; c < K; c++)
			x += theta[t * K + c] * (phi[t * K + c] - phi[(N + t) * K + c]);
		s += log1p(exp(-x));
	}
	return s;
}

/* d loss_ref / d v[i] for each of v's n elements (v is phi or theta). */
static void central_diff(double *v, int n, const double *phi, const double *theta,
	const double *margin, double *out)
{
	const double h = 1e-5;
	for (int i = 0; i < n; i++) {
		double keep = v[i];
		v[i] = keep + h;
		double up = loss_ref(phi, theta, margin);
		v[i] = keep - h;
		out[i] = (up - loss_ref(phi, theta, margin)) / (2 * h);
		v[i] = keep;
	}
}

TEST(loss_and_gradients_match_finite_differences)
{
	float phi[2 * N * K], theta[N * K], margin[N], loss[N], g[N], dphi[2 * N * K],
		dtheta[N * K];
	double p[2 * N * K], th[N * K], m[N], want_dphi[2 * N * K], want_dtheta[N * K], want_g[N],
		want_loss[N];
	fill_uniform(phi, 2 * N * K, 11, -1.5f, 1.5f);
	fill_uniform(theta, N * K, 12, -1.0f, 1.0f);
	fill_uniform(margin, N, 13, -2.0f, 2.0f);
	margin[0] = 40.0f;  /* σ(−x) underflows towards 0: the loss must not be NaN */
	margin[1] = -40.0f; /* and here exp(x) would overflow a naive form */
	for (int i = 0; i < 2 * N * K; i++)
		p[i] = phi[i];
	for (int i = 0; i < N * K; i++)
		th[i] = theta[i];
	for (int i = 0; i < N; i++)
		m[i] = margin[i];
	double total = nn_bpr_triples(phi, N, K, theta, margin, loss, g, dphi, dtheta);

	central_diff(p, 2 * N * K, p, th, m, want_dphi);
	central_diff(th, N * K, p, th, m, want_dtheta);
	double want_total = 0;
	for (int t = 0; t < N; t++) {
		double x = m[t];
		for (int c = 0; c < K; c++)
			x += th[t * K + c] * (p[t * K + c] - p[(N + t) * K + c]);
		want_g[t] = 1 / (1 + exp(x));
		want_loss[t] = x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
		want_total += want_loss[t];
	}
	ASSERT_MSG(fabs(total - want_total) <= 1e-6 * (1 + want_total), "total %.9g vs %.9g", total,
		   want_total);
	ASSERT_CLOSE(loss, want_loss, N, 1e-7, 1e-6, "loss");
	ASSERT_CLOSE(g, want_g, N, 1e-7, 1e-6, "g");
	ASSERT_CLOSE(dphi, want_dphi, 2 * N * K, 1e-6, 1e-5, "dphi");
	ASSERT_CLOSE(dtheta, want_dtheta, N * K, 1e-6, 1e-5, "dtheta");
}

TEST(optional_outputs_and_no_margin)
{
	float phi[2 * N * K], theta[N * K], zero[N] = { 0 }, dphi[2 * N * K], dtheta[N * K],
		dphi2[2 * N * K], dtheta2[N * K];
	fill_uniform(phi, 2 * N * K, 21, -1.0f, 1.0f);
	fill_uniform(theta, N * K, 22, -1.0f, 1.0f);
	double a = nn_bpr_triples(phi, N, K, theta, NULL, NULL, NULL, dphi, dtheta);
	double b = nn_bpr_triples(phi, N, K, theta, zero, NULL, NULL, dphi2, dtheta2);
	ASSERT(a == b);
	ASSERT(!memcmp(dphi, dphi2, sizeof dphi));
	ASSERT(!memcmp(dtheta, dtheta2, sizeof dtheta));
}

static const struct vr_test tests[] = {
	T(loss_and_gradients_match_finite_differences),
	T(optional_outputs_and_no_margin),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
