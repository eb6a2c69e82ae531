/* prior: the cold-item prior's ridge regression and blend; see prior.h. */
#include "prior.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* LAPACK (OpenBLAS carries it; Debian ships no LAPACKE header with it). */
extern void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda,
		   double *b, const int *ldb, int *info);

/* The normal equations of one fit, on standardised columns. */
struct ridge {
	uint32_t p, q;
	size_t m;          /* rows used */
	double sw;         /* their total weight */
	double *mu, *s;    /* p: column means and 1/σ (0 for a constant column) */
	double *ybar;      /* q */
	double *g;         /* p × p: ZᵀZ */
	double *bt;        /* q × p: (Y - ȳ)ᵀZ */
};

static void ridge_free(struct ridge *r)
{
	free(r->mu);
	free(r->s);
	free(r->ybar);
	free(r->g);
	free(r->bt);
	memset(r, 0, sizeof *r);
}

static int ridge_prepare(struct ridge *r, const float *x, const float *y, const float *wt, size_t n,
			 uint32_t p, uint32_t q, const uint8_t *use)
{
	double *z = NULL, *yc = NULL;
	int rc = 0;
	memset(r, 0, sizeof *r);
	r->p = p;
	r->q = q;
	for (size_t i = 0; i < n; i++)
		if (!use || use[i]) {
			r->m++;
			r->sw += wt ? wt[i] : 1.0;
		}
	if (!r->m || !p || !q || !(r->sw > 0))
		return VR_EINVAL;
	r->mu = calloc(p, sizeof *r->mu);
	r->s = calloc(p, sizeof *r->s);
	r->ybar = calloc(q, sizeof *r->ybar);
	r->g = malloc((size_t)p * p * sizeof *r->g);
	r->bt = malloc((size_t)q * p * sizeof *r->bt);
	z = malloc(r->m * p * sizeof *z);
	yc = malloc(r->m * q * sizeof *yc);
	if (!r->mu || !r->s || !r->ybar || !r->g || !r->bt || !z || !yc) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (size_t i = 0; i < n; i++) {
		if (use && !use[i])
			continue;
		double w = wt ? wt[i] : 1.0;
		for (uint32_t c = 0; c < p; c++)
			r->mu[c] += w * x[i * p + c];
		for (uint32_t c = 0; c < q; c++)
			r->ybar[c] += w * y[i * q + c];
	}
	for (uint32_t c = 0; c < p; c++)
		r->mu[c] /= r->sw;
	for (uint32_t c = 0; c < q; c++)
		r->ybar[c] /= r->sw;
	/* Rows scaled by sqrt(w): ZᵀZ and Zᵀ(Y - ȳ) are then the weighted sums. */
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		if (use && !use[i])
			continue;
		double rw = sqrt(wt ? wt[i] : 1.0);
		for (uint32_t c = 0; c < p; c++) {
			double d = x[i * p + c] - r->mu[c];
			z[at * p + c] = rw * d;
			r->s[c] += rw * rw * d * d;
		}
		for (uint32_t c = 0; c < q; c++)
			yc[at * q + c] = rw * (y[i * q + c] - r->ybar[c]);
		at++;
	}
	for (uint32_t c = 0; c < p; c++) {
		double sd = sqrt(r->s[c] / r->sw);
		r->s[c] = sd > 0 && isfinite(1.0 / sd) ? 1.0 / sd : 0.0;
	}
	for (size_t i = 0; i < r->m; i++)
		for (uint32_t c = 0; c < p; c++)
			z[i * p + c] *= r->s[c];
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)p, (int)p, (int)r->m, 1.0, z, (int)p,
		    z, (int)p, 0.0, r->g, (int)p);
	cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)p, (int)r->m, 1.0, yc, (int)q,
		    z, (int)p, 0.0, r->bt, (int)p);
leave:
	free(z);
	free(yc);
	if (rc)
		ridge_free(r);
	return rc;
}

/* Solves for one λ into raw-feature coef (p × q) and intercept (q). */
static int ridge_solve(const struct ridge *r, double lambda, float *coef, float *intercept)
{
	int p = (int)r->p, q = (int)r->q, info = 0;
	double *a = malloc((size_t)p * p * sizeof *a), *w = malloc((size_t)q * p * sizeof *w);
	int rc = 0;
	if (!a || !w) {
		rc = VR_ENOMEM;
		goto leave;
	}
	memcpy(a, r->g, (size_t)p * p * sizeof *a);
	memcpy(w, r->bt, (size_t)q * p * sizeof *w);
	/* A constant column (s = 0) is all zeros in Z: λ alone holds its row,
	 * so λ must be positive. */
	for (int c = 0; c < p; c++)
		a[(size_t)c * p + c] += lambda > 0 ? lambda : 1e-9;
	/* Column-major: a is symmetric, and w (q × p row major) is the p × q
	 * right-hand side column by column; it comes back as W the same way. */
	dposv_("L", &p, &q, a, &p, w, &p, &info);
	if (info) {
		rc = VR_EINVAL;
		goto leave;
	}
	for (int c = 0; c < q; c++) {
		double b = r->ybar[c];
		for (int x = 0; x < p; x++) {
			double k = w[(size_t)c * p + x] * r->s[x];
			coef[(size_t)x * q + c] = (float)k;
			b -= k * r->mu[x];
		}
		intercept[c] = (float)b;
	}
leave:
	free(a);
	free(w);
	return rc;
}

int rk_ridge_fit(const float *x, const float *y, const float *w, size_t n, uint32_t p, uint32_t q,
		 const uint8_t *use, double lambda, float *coef, float *intercept)
{
	struct ridge r;
	int rc = ridge_prepare(&r, x, y, w, n, p, q, use);
	if (!rc)
		rc = ridge_solve(&r, lambda, coef, intercept);
	ridge_free(&r);
	return rc;
}

static int nonzero(const float *row, uint32_t p)
{
	for (uint32_t c = 0; c < p; c++)
		if (row[c] != 0.0f)
			return 1;
	return 0;
}

/* Squared error per column of the prediction b + xᵀW against y over the
 * rows in use: sse[0] for β, sse[1] for the γ columns; sst likewise about
 * the rows' own mean. */
static void held_out_error(const float *x, const float *y, const float *wt, size_t n, uint32_t p,
			   uint32_t q, const uint8_t *use, const float *coef, const float *b, float *pred,
			   double sse[2], double sst[2])
{
	double *mean = calloc(q, sizeof *mean);
	double m = 0;
	sse[0] = sse[1] = sst[0] = sst[1] = 0;
	for (size_t i = 0; mean && i < n; i++)
		if (use[i]) {
			m += wt[i];
			for (uint32_t c = 0; c < q; c++)
				mean[c] += wt[i] * y[i * q + c];
		}
	for (size_t i = 0; i < n; i++) {
		if (!use[i])
			continue;
		memcpy(pred, b, q * sizeof *pred);
		cblas_sgemv(CblasRowMajor, CblasTrans, (int)p, (int)q, 1.0f, coef, (int)q, x + i * p, 1,
			    1.0f, pred, 1);
		for (uint32_t c = 0; c < q; c++) {
			double e = pred[c] - y[i * q + c];
			double t = mean ? y[i * q + c] - mean[c] / m : 0;
			sse[c > 0] += wt[i] * e * e;
			sst[c > 0] += wt[i] * t * t;
		}
	}
	free(mean);
}

int rk_prior_fit(rk_model *m, const float *feats, uint32_t n_rows, const uint32_t *count,
		 rk_prior_report *rep)
{
	static const double grid[] = { 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000 };
	uint32_t k = m->d.k, q = 1 + k, p = feats ? rk_model_feature_dims(m) : 0;
	uint32_t n = n_rows < m->d.n_items ? n_rows : m->d.n_items;
	rk_prior_report rr = { 0 };
	float *y = malloc(((size_t)n + 1) * q * sizeof *y), *wt = malloc(((size_t)n + 1) * sizeof *wt);
	float *prior = NULL, *pred = NULL;
	double sw = 0;
	uint8_t *fit = calloc((size_t)n + 1, 1), *train = calloc((size_t)n + 1, 1),
		*hold = calloc((size_t)n + 1, 1);
	double *mean = calloc(q, sizeof *mean);
	struct ridge r = { 0 };
	int rc = 0;
	if (!y || !wt || !fit || !train || !hold || !mean) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (uint32_t i = 0; i < n; i++) {
		y[(size_t)i * q] = m->beta_i[i];
		if (k)
			memcpy(y + (size_t)i * q + 1, m->gamma_i + (size_t)i * k, k * sizeof *y);
		wt[i] = (float)count[i];
		if (!count[i]) {
			rr.cold++;
			continue;
		}
		for (uint32_t c = 0; c < q; c++)
			mean[c] += wt[i] * y[(size_t)i * q + c];
		sw += wt[i];
		rr.warm++;
		if (p && nonzero(feats + (size_t)i * p, p)) {
			fit[i] = 1;
			(i % 5 == 4 ? hold : train)[i] = 1;
			rr.held_out += i % 5 == 4;
		}
	}
	if (!rr.warm) {
		rc = VR_EINVAL;
		goto leave;
	}
	uint32_t fitted = 0;
	for (uint32_t i = 0; i < n; i++)
		fitted += fit[i];
	uint32_t rows = p && fitted >= RK_PRIOR_MIN_ITEMS && rr.held_out ? 2 + p : 1;
	if (!(prior = calloc((size_t)rows * q, sizeof *prior)) || !(pred = malloc(q * sizeof *pred))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (uint32_t c = 0; c < q; c++)
		prior[c] = (float)(mean[c] / sw);
	if (rows > 1) {
		float *coef = prior + 2 * (size_t)q, *b = prior + q;
		double best = INFINITY;
		if ((rc = ridge_prepare(&r, feats, y, wt, n, p, q, train)))
			goto leave;
		for (size_t g = 0; g < sizeof grid / sizeof *grid; g++) {
			double lambda = grid[g] * r.sw, sse[2], sst[2];
			if (ridge_solve(&r, lambda, coef, b))
				continue;
			held_out_error(feats, y, wt, n, p, q, hold, coef, b, pred, sse, sst);
			if (sse[0] + sse[1] < best) {
				best = sse[0] + sse[1];
				rr.lambda = grid[g];
				rr.r2_beta = sst[0] > 0 ? 1 - sse[0] / sst[0] : 0;
				rr.r2_gamma = sst[1] > 0 ? 1 - sse[1] / sst[1] : 0;
			}
		}
		ridge_free(&r);
		if (!isfinite(best)) {
			rows = 1;
		} else {
			rr.warm = fitted;
			if ((rc = ridge_prepare(&r, feats, y, wt, n, p, q, fit)) ||
			    (rc = ridge_solve(&r, rr.lambda * r.sw, coef, b)))
				goto leave;
			rr.lambda *= r.sw;
		}
	}
	if ((rc = rk_model_set_prior(m, prior, rows)))
		goto leave;
	for (uint32_t i = 0; i < n; i++) {
		double w = count[i] / (count[i] + RK_PRIOR_BLEND);
		rk_model_prior_predict(m, p ? feats + (size_t)i * p : NULL, pred);
		m->beta_i[i] = (float)(w * m->beta_i[i] + (1 - w) * pred[0]);
		for (uint32_t c = 0; c < k; c++) {
			float *g = m->gamma_i + (size_t)i * k + c;
			*g = (float)(w * *g + (1 - w) * pred[1 + c]);
		}
	}
leave:
	if (rep)
		*rep = rr;
	ridge_free(&r);
	free(y);
	free(wt);
	free(prior);
	free(pred);
	free(fit);
	free(train);
	free(hold);
	free(mean);
	return rc;
}
