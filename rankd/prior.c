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

static int ridge_prepare(struct ridge *r, const float *x, const float *y, size_t n, uint32_t p,
			 uint32_t q, const uint8_t *use)
{
	double *z = NULL, *yc = NULL;
	int rc = 0;
	memset(r, 0, sizeof *r);
	r->p = p;
	r->q = q;
	for (size_t i = 0; i < n; i++)
		r->m += !use || use[i];
	if (!r->m || !p || !q)
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
		for (uint32_t c = 0; c < p; c++)
			r->mu[c] += x[i * p + c];
		for (uint32_t c = 0; c < q; c++)
			r->ybar[c] += y[i * q + c];
	}
	for (uint32_t c = 0; c < p; c++)
		r->mu[c] /= (double)r->m;
	for (uint32_t c = 0; c < q; c++)
		r->ybar[c] /= (double)r->m;
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		if (use && !use[i])
			continue;
		for (uint32_t c = 0; c < p; c++) {
			double d = x[i * p + c] - r->mu[c];
			z[at * p + c] = d;
			r->s[c] += d * d;
		}
		for (uint32_t c = 0; c < q; c++)
			yc[at * q + c] = y[i * q + c] - r->ybar[c];
		at++;
	}
	for (uint32_t c = 0; c < p; c++) {
		double sd = sqrt(r->s[c] / (double)r->m);
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

int rk_ridge_fit(const float *x, const float *y, size_t n, uint32_t p, uint32_t q,
		 const uint8_t *use, double lambda, float *coef, float *intercept)
{
	struct ridge r;
	int rc = ridge_prepare(&r, x, y, n, p, q, use);
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
static void held_out_error(const float *x, const float *y, size_t n, uint32_t p, uint32_t q,
			   const uint8_t *use, const float *coef, const float *b, float *pred,
			   double sse[2], double sst[2])
{
	double *mean = calloc(q, sizeof *mean);
	size_t m = 0;
	sse[0] = sse[1] = sst[0] = sst[1] = 0;
	for (size_t i = 0; mean && i < n; i++)
		if (use[i]) {
			m++;
			for (uint32_t c = 0; c < q; c++)
				mean[c] += y[i * q + c];
		}
	for (size_t i = 0; i < n; i++) {
		if (!use[i])
			continue;
		memcpy(pred, b, q * sizeof *pred);
		cblas_sgemv(CblasRowMajor, CblasTrans, (int)p, (int)q, 1.0f, coef, (int)q, x + i * p, 1,
			    1.0f, pred, 1);
		for (uint32_t c = 0; c < q; c++) {
			double e = pred[c] - y[i * q + c];
			double t = mean ? y[i * q + c] - mean[c] / (double)m : 0;
			sse[c > 0] += e * e;
			sst[c > 0] += t * t;
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
	float *y = malloc(((size_t)n + 1) * q * sizeof *y), *prior = NULL, *pred = NULL;
	uint8_t *fit = calloc((size_t)n + 1, 1), *train = calloc((size_t)n + 1, 1),
		*hold = calloc((size_t)n + 1, 1);
	double *mean = calloc(q, sizeof *mean);
	struct ridge r = { 0 };
	int rc = 0;
	if (!y || !fit || !train || !hold || !mean) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (uint32_t i = 0; i < n; i++) {
		y[(size_t)i * q] = m->beta_i[i];
		if (k)
			memcpy(y + (size_t)i * q + 1, m->gamma_i + (size_t)i * k, k * sizeof *y);
		if (!count[i]) {
			rr.cold++;
			continue;
		}
		for (uint32_t c = 0; c < q; c++)
			mean[c] += y[(size_t)i * q + c];
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
		prior[c] = (float)(mean[c] / rr.warm);
	if (rows > 1) {
		float *coef = prior + 2 * (size_t)q, *b = prior + q;
		double best = INFINITY;
		if ((rc = ridge_prepare(&r, feats, y, n, p, q, train)))
			goto leave;
		for (size_t g = 0; g < sizeof grid / sizeof *grid; g++) {
			double lambda = grid[g] * (double)r.m, sse[2], sst[2];
			if (ridge_solve(&r, lambda, coef, b))
				continue;
			held_out_error(feats, y, n, p, q, hold, coef, b, pred, sse, sst);
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
			if ((rc = ridge_prepare(&r, feats, y, n, p, q, fit)) ||
			    (rc = ridge_solve(&r, rr.lambda * (double)r.m, coef, b)))
				goto leave;
			rr.lambda *= (double)r.m;
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
	free(prior);
	free(pred);
	free(fit);
	free(train);
	free(hold);
	free(mean);
	return rc;
}

#define CAL_USERS 4096 /* validation users scored at most (the first ones) */
#define CAL_BLOCK 256

int rk_prior_calibrate(rk_model *m, const float *feats, uint32_t n_rows, const uint32_t *count,
		       const rk_csr *fit, const uint32_t *valid, rk_prior_report *rep)
{
	static const double grid[] = { -1, -0.5, 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6 };
	enum { G = sizeof grid / sizeof *grid };
	uint32_t n = n_rows < m->d.n_items ? n_rows : m->d.n_items, dim = rk_model_dim(m);
	uint32_t nu = fit->n_users < m->d.n_users ? fit->n_users : m->d.n_users, pf = rk_model_feature_dims(m);
	float *rows = NULL, *urows = NULL, *scores = NULL, *shift = NULL;
	uint32_t *users = NULL;
	double auc[G] = { 0 };
	size_t n_users = 0;
	int rc = 0;
	if (!m->prior_rows || !valid || !n)
		return VR_EINVAL;
	if (!(users = malloc(((size_t)nu + 1) * sizeof *users)) ||
	    !(rows = malloc((size_t)n * dim * sizeof *rows)) ||
	    !(urows = malloc((size_t)CAL_BLOCK * dim * sizeof *urows)) ||
	    !(scores = malloc((size_t)CAL_BLOCK * n * sizeof *scores)) ||
	    !(shift = malloc((size_t)n * sizeof *shift))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (uint32_t u = 0; u < nu && n_users < CAL_USERS; u++)
		if (valid[u] != RK_NONE && valid[u] < n)
			users[n_users++] = u;
	if (!n_users) {
		rc = VR_EINVAL;
		goto leave;
	}
	/* Item rows as served (the model is not folded yet: feats as the
	 * trainer saw them), and each item's share of δ. */
	if ((rc = rk_model_item_rows(m, NULL, pf ? feats : NULL, n, rows)))
		goto leave;
	double sb = 0, sbb = 0;
	uint32_t warm = 0;
	for (uint32_t i = 0; i < n; i++) {
		shift[i] = (float)(1 - count[i] / (count[i] + RK_PRIOR_BLEND));
		if (count[i]) {
			sb += m->beta_i[i];
			sbb += (double)m->beta_i[i] * m->beta_i[i];
			warm++;
		}
	}
	double spread = warm > 1 ? sqrt(fmax(sbb / warm - (sb / warm) * (sb / warm), 0)) : 0;
	if (!(spread > 0)) {
		rc = VR_EINVAL;
		goto leave;
	}
	for (size_t b0 = 0; b0 < n_users; b0 += CAL_BLOCK) {
		size_t nb = n_users - b0 < CAL_BLOCK ? n_users - b0 : CAL_BLOCK;
		for (size_t x = 0; x < nb; x++)
			rk_model_user_row(m, users[b0 + x], urows + x * dim);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)n, (int)dim, 1.0f,
			    urows, (int)dim, rows, (int)dim, 0.0f, scores, (int)n);
		for (size_t x = 0; x < nb; x++) {
			uint32_t u = users[b0 + x], v = valid[u];
			const float *sc = scores + x * n;
			for (int g = 0; g < G; g++) {
				double d = grid[g] * spread, sv = sc[v] + shift[v] * d, below = 0;
				size_t neg = 0;
				for (uint32_t j = 0; j < n; j++) {
					if (j == v)
						continue;
					double sj = sc[j] + shift[j] * d;
					neg++;
					below += sj < sv ? 1 : sj == sv ? 0.5 : 0;
				}
				/* The user's training items are not negatives. */
				for (uint64_t p = fit->off[u]; p < fit->off[u + 1]; p++) {
					uint32_t j = fit->item[p];
					if (j >= n || j == v)
						continue;
					double sj = sc[j] + shift[j] * d;
					neg--;
					below -= sj < sv ? 1 : sj == sv ? 0.5 : 0;
				}
				auc[g] += neg ? below / (double)neg : 0.5;
			}
		}
	}
	int best = 2; /* δ = 0 */
	for (int g = 0; g < G; g++)
		if (auc[g] > auc[best] + 1e-6)
			best = g;
	double d = grid[best] * spread;
	if (rep) {
		rep->delta = d;
		rep->val_auc0 = auc[2] / (double)n_users;
		rep->val_auc = auc[best] / (double)n_users;
	}
	uint32_t cols = 1 + m->d.k;
	m->prior[0] += (float)d;
	if (m->prior_rows > 1)
		m->prior[cols] += (float)d;
	for (uint32_t i = 0; i < n; i++)
		m->beta_i[i] += shift[i] * (float)d;
leave:
	free(users);
	free(rows);
	free(urows);
	free(scores);
	free(shift);
	return rc;
}
