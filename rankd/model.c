/* model: the parameter arena, scores, serving rows, the reference triple
 * gradient, DVBPR's rankd-side update and snapshots; see model.h. */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "sampler.h"

#define SNAP_MAGIC "RKMODEL1"
#define SNAP_FORMAT 2        /* 2: the prior follows the arena */
#define SNAP_HEADER 64
#define MAX_PARAMS ((size_t)1 << 38) /* 1 TiB of floats: a sanity bound */

void rk_model_dims_default(rk_model_dims *d, enum rk_model_kind kind,
			   uint32_t n_users, uint32_t n_items, uint32_t f)
{
	memset(d, 0, sizeof(*d));
	d->kind = kind;
	d->n_users = n_users;
	d->n_items = n_items;
	switch (kind) {
	case RK_MODEL_BPR:
		d->k = 64;
		break;
	case RK_MODEL_VBPR:
		d->k = 200;
		d->k2 = 100;
		d->f = f;
		break;
	case RK_MODEL_DVBPR:
		d->k = 100;
		d->k2 = 100;
		break;
	}
}

static int layout(rk_model *m)
{
	const rk_model_dims *d = &m->d;
	size_t rows[RK_N_TENSORS] = {0}, cols[RK_N_TENSORS] = {0};
	if (d->n_users == 0 || d->n_items == 0)
		return VR_EINVAL;
	switch (d->kind) {
	case RK_MODEL_BPR:
		if (d->k == 0 || d->k2 || d->f)
			return VR_EINVAL;
		break;
	case RK_MODEL_VBPR:
		if (d->k2 == 0 || d->f == 0)
			return VR_EINVAL;
		rows[RK_VIS] = d->f;
		cols[RK_VIS] = (size_t)d->k2 + 1;
		break;
	case RK_MODEL_DVBPR:
		if (d->k2 == 0 || d->f)
			return VR_EINVAL;
		break;
	default:
		return VR_EINVAL;
	}
	rows[RK_BETA_I] = d->n_items;
	cols[RK_BETA_I] = 1;
	rows[RK_GAMMA_U] = d->k ? d->n_users : 0;
	rows[RK_GAMMA_I] = d->k ? d->n_items : 0;
	cols[RK_GAMMA_U] = cols[RK_GAMMA_I] = d->k;
	rows[RK_THETA_U] = d->k2 ? d->n_users : 0;
	cols[RK_THETA_U] = d->k2;
	size_t off = 0;
	for (int t = 0; t < RK_N_TENSORS; t++) {
		if (cols[t] && rows[t] > MAX_PARAMS / cols[t])
			return VR_EINVAL;
		m->t[t] = (rk_tensor){off, rows[t], cols[t]};
		off += (rows[t] * cols[t] + 15) & ~(size_t)15;
		if (off > MAX_PARAMS)
			return VR_EINVAL;
	}
	m->n_params = off;
	return 0;
}

static float *view(rk_model *m, int t)
{
	return m->t[t].rows ? m->params + m->t[t].off : NULL;
}

int rk_model_create(rk_model **out, const rk_model_dims *d)
{
	*out = NULL;
	rk_model *m = calloc(1, sizeof(*m));
	if (!m)
		return VR_ENOMEM;
	m->d = *d;
	int rc = layout(m);
	if (rc) {
		free(m);
		return rc;
	}
	size_t bytes = (m->n_params * sizeof(float) + 63) & ~(size_t)63;
	m->params = aligned_alloc(64, bytes ? bytes : 64);
	if (!m->params) {
		free(m);
		return VR_ENOMEM;
	}
	memset(m->params, 0, bytes);
	m->beta_i = view(m, RK_BETA_I);
	m->gamma_u = view(m, RK_GAMMA_U);
	m->gamma_i = view(m, RK_GAMMA_I);
	m->theta_u = view(m, RK_THETA_U);
	m->vis = view(m, RK_VIS);
	*out = m;
	return 0;
}

void rk_model_free(rk_model *m)
{
	if (!m)
		return;
	free(m->params);
	free(m->prior);
	free(m);
}

int rk_all_finite(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return 0;
	return 1;
}

void rk_model_init(rk_model *m, uint64_t seed)
{
	rk_rng rng;
	memset(m->params, 0, m->n_params * sizeof(float));
	for (int t = RK_GAMMA_U; t < RK_N_TENSORS; t++) {
		const rk_tensor *x = &m->t[t];
		float bound = (float)sqrt(6.0 / (double)(x->rows + x->cols));
		rk_rng_seed(&rng, seed, (uint64_t)t);
		float *p = m->params + x->off;
		for (size_t r = 0; r < x->rows; r++)
			for (size_t c = 0; c < x->cols; c++)
				p[r * x->cols + c] = t == RK_VIS && c == x->cols - 1 ? 0.0f :
					(2.0f * rk_rng_float(&rng) - 1.0f) * bound;
	}
}

int rk_model_copy(rk_model *dst, const rk_model *src)
{
	if (memcmp(&dst->d, &src->d, sizeof(dst->d)))
		return VR_EINVAL;
	memcpy(dst->params, src->params, src->n_params * sizeof(float));
	dst->version = src->version;
	return rk_model_set_prior(dst, src->prior, src->prior_rows);
}

int rk_model_clone(const rk_model *src, rk_model **out)
{
	int rc = rk_model_create(out, &src->d);
	if (!rc)
		rc = rk_model_copy(*out, src);
	return rc;
}

uint32_t rk_model_feature_dims(const rk_model *m)
{
	return m->d.kind == RK_MODEL_VBPR ? m->d.f : m->d.kind == RK_MODEL_DVBPR ? m->d.k2 : 0;
}

int rk_feature_scales(const float *feats, size_t n, uint32_t f, float *scale)
{
	double *sum = calloc(2 * (size_t)(f ? f : 1), sizeof(double));
	double *sq = sum ? sum + f : NULL;
	size_t rows = 0;
	int rc = 0;
	if (!sum)
		return VR_ENOMEM;
	if (!f) {
		rc = VR_EINVAL;
		goto leave;
	}
	/* Two passes (mean, then squares about it): features with a large mean
	 * and a tiny spread would lose the spread in one pass of Σx². */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			const float *row = feats + i * f;
			uint32_t r = 0;
			while (r < f && row[r] == 0.0f)
				r++;
			if (r == f)
				continue;
			rows += !pass;
			for (r = 0; r < f; r++) {
				if (!pass) {
					sum[r] += row[r];
				} else {
					double d = row[r] - sum[r];
					sq[r] += d * d;
				}
			}
		}
		if (!rows) {
			rc = VR_EINVAL;
			goto leave;
		}
		for (uint32_t r = 0; !pass && r < f; r++)
			sum[r] /= (double)rows;
	}
	double root_f = sqrt((double)f);
	for (uint32_t r = 0; r < f; r++) {
		double sd = sqrt(sq[r] / (double)rows);
		double s = 1.0 / (sd * root_f);
		scale[r] = sd > 0 && isfinite(s) && s < 3e38 ? (float)s : 1.0f;
	}
leave:
	free(sum);
	return rc;
}

void rk_features_scale(float *feats, size_t n, uint32_t f, const float *scale)
{
	for (size_t i = 0; i < n; i++) {
		float *row = feats + i * f;
		for (uint32_t r = 0; r < f; r++)
			row[r] *= scale[r];
	}
}

void rk_model_fold_scales(rk_model *m, const float *scale)
{
	uint32_t pw = m->d.k2 + 1;
	if (m->d.kind != RK_MODEL_VBPR)
		return;
	for (uint32_t r = 0; r < m->d.f; r++)
		for (uint32_t c = 0; c < pw; c++)
			m->vis[(size_t)r * pw + c] *= scale[r];
	/* The prior's coefficients were fitted on scaled features too. */
	uint32_t cols = 1 + m->d.k;
	for (uint32_t r = 0; m->prior_rows == 2 + m->d.f && r < m->d.f; r++)
		for (uint32_t c = 0; c < cols; c++)
			m->prior[(size_t)(2 + r) * cols + c] *= scale[r];
}

int rk_model_set_prior(rk_model *m, const float *p, uint32_t rows)
{
	uint32_t pf = rk_model_feature_dims(m);
	size_t cols = 1 + (size_t)m->d.k;
	if (rows != 0 && rows != 1 && (!pf || rows != 2 + pf))
		return VR_EINVAL;
	float *q = rows ? malloc((size_t)rows * cols * sizeof(float)) : NULL;
	if (rows && !q)
		return VR_ENOMEM;
	if (rows)
		memcpy(q, p, (size_t)rows * cols * sizeof(float));
	free(m->prior);
	m->prior = q;
	m->prior_rows = rows;
	return 0;
}

void rk_model_prior_predict(const rk_model *m, const float *f_i, float *out)
{
	uint32_t pf = rk_model_feature_dims(m), cols = 1 + m->d.k, r = 0;
	if (!m->prior_rows) {
		memset(out, 0, cols * sizeof(float));
		return;
	}
	while (f_i && r < pf && f_i[r] == 0.0f)
		r++;
	if (m->prior_rows == 1 || !f_i || r == pf) {
		memcpy(out, m->prior, cols * sizeof(float));
		return;
	}
	memcpy(out, m->prior + cols, cols * sizeof(float));
	cblas_sgemv(CblasRowMajor, CblasTrans, (int)pf, (int)cols, 1.0f, m->prior + 2 * (size_t)cols,
		    (int)cols, f_i, 1, 1.0f, out, 1);
}

uint32_t rk_model_dim(const rk_model *m)
{
	return 1 + m->d.k + m->d.k2;
}

int rk_model_user_row(const rk_model *m, uint32_t u, float *row)
{
	if (u >= m->d.n_users)
		return VR_ENOTFOUND;
	uint32_t k = m->d.k, k2 = m->d.k2;
	row[0] = 1.0f;
	if (k)
		memcpy(row + 1, m->gamma_u + (size_t)u * k, k * sizeof(float));
	if (k2)
		memcpy(row + 1 + k, m->theta_u + (size_t)u * k2, k2 * sizeof(float));
	return 0;
}

int rk_model_item_row(const rk_model *m, uint32_t i, const float *f_i, float *row)
{
	return rk_model_item_rows(m, &i, f_i, 1, row);
}

int rk_model_item_rows(const rk_model *m, const uint32_t *items, const float *feats,
		       size_t n, float *out)
{
	uint32_t k = m->d.k, k2 = m->d.k2, f = m->d.f, dim = rk_model_dim(m);
	if (m->d.kind != RK_MODEL_BPR && !feats)
		return VR_EINVAL;
	if (n == 0)
		return 0;
	if (m->d.kind == RK_MODEL_VBPR) {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)k2, (int)f,
			    1.0f, feats, (int)f, m->vis, (int)k2 + 1, 0.0f, out + 1 + k, (int)dim);
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)f, 1.0f, feats, (int)f,
			    m->vis + k2, (int)k2 + 1, 0.0f, out, (int)dim);
	}
	for (size_t r = 0; r < n; r++) {
		uint32_t i = items ? items[r] : (uint32_t)r;
		float *row = out + r * dim;
		int warm = i < m->d.n_items;
		float vbias = m->d.kind == RK_MODEL_VBPR ? row[0] : 0.0f;
		if (warm) {
			row[0] = m->beta_i[i];
			if (k)
				memcpy(row + 1, m->gamma_i + (size_t)i * k, k * sizeof(float));
		} else {
			/* β̂ and γ̂ land in row[0 .. K], the visual part written
			 * above stays (rows are laid out [β, γ, θ-side]). */
			rk_model_prior_predict(m, feats ? feats + r * rk_model_feature_dims(m) : NULL, row);
		}
		row[0] += vbias;
		if (m->d.kind == RK_MODEL_DVBPR)
			memcpy(row + 1 + k, feats + r * k2, k2 * sizeof(float));
	}
	return 0;
}

/* E f and β'·f (VBPR) or φ (DVBPR) into vis_out (K' values) and *vbias. */
static void visual(const rk_model *m, const float *f_i, double *vis_out, double *vbias)
{
	uint32_t k2 = m->d.k2;
	*vbias = 0;
	if (m->d.kind == RK_MODEL_DVBPR) {
		for (uint32_t c = 0; c < k2; c++)
			vis_out[c] = f_i[c];
		return;
	}
	for (uint32_t c = 0; c < k2; c++)
		vis_out[c] = 0;
	for (uint32_t r = 0; r < m->d.f; r++) {
		const float *row = m->vis + (size_t)r * (k2 + 1);
		for (uint32_t c = 0; c < k2; c++)
			vis_out[c] += (double)f_i[r] * row[c];
		*vbias += (double)f_i[r] * row[k2];
	}
}

static double score(const rk_model *m, uint32_t u, uint32_t i, const float *f_i, double *vis_buf)
{
	uint32_t k = m->d.k, k2 = m->d.k2;
	int warm = i < m->d.n_items;
	double x = warm ? m->beta_i[i] : 0;
	for (uint32_t c = 0; warm && c < k; c++)
		x += (double)m->gamma_u[(size_t)u * k + c] * m->gamma_i[(size_t)i * k + c];
	if (!warm && m->prior_rows) {
		float *p = malloc((1 + (size_t)k) * sizeof(float));
		if (!p)
			return NAN;
		rk_model_prior_predict(m, f_i, p);
		x = p[0];
		for (uint32_t c = 0; c < k; c++)
			x += (double)m->gamma_u[(size_t)u * k + c] * p[1 + c];
		free(p);
	}
	if (k2) {
		double vb;
		visual(m, f_i, vis_buf, &vb);
		x += vb;
		for (uint32_t c = 0; c < k2; c++)
			x += (double)m->theta_u[(size_t)u * k2 + c] * vis_buf[c];
	}
	return x;
}

int rk_model_score(const rk_model *m, uint32_t u, uint32_t i, const float *f_i, double *out)
{
	if (u >= m->d.n_users)
		return VR_ENOTFOUND;
	if (m->d.kind != RK_MODEL_BPR && !f_i)
		return VR_EINVAL;
	double *buf = m->d.k2 ? malloc(m->d.k2 * sizeof(double)) : NULL;
	if (m->d.k2 && !buf)
		return VR_ENOMEM;
	*out = score(m, u, i, f_i, buf);
	free(buf);
	return 0;
}

double rk_model_triple_grad(const rk_model *m, uint32_t u, uint32_t i, uint32_t j,
			    const float *f_i, const float *f_j, float *grad)
{
	uint32_t k = m->d.k, k2 = m->d.k2;
	double *pi = k2 ? calloc(2 * (size_t)k2, sizeof(double)) : NULL;
	double *pj = pi ? pi + k2 : NULL;
	if (k2 && !pi)
		return NAN;
	double x = score(m, u, i, f_i, pi) - score(m, u, j, f_j, pj);
	double loss = x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
	float g = (float)(1.0 / (1.0 + exp(x))); /* σ(-x); ∂loss/∂x = -g */
	grad[m->t[RK_BETA_I].off + i] -= g;
	grad[m->t[RK_BETA_I].off + j] += g;
	const float *gu = m->gamma_u + (size_t)u * k;
	const float *gi = m->gamma_i + (size_t)i * k;
	const float *gj = m->gamma_i + (size_t)j * k;
	float *dgu = grad + m->t[RK_GAMMA_U].off + (size_t)u * k;
	float *dgi = grad + m->t[RK_GAMMA_I].off + (size_t)i * k;
	float *dgj = grad + m->t[RK_GAMMA_I].off + (size_t)j * k;
	for (uint32_t c = 0; c < k; c++) {
		dgu[c] -= g * (gi[c] - gj[c]);
		dgi[c] -= g * gu[c];
		dgj[c] += g * gu[c];
	}
	if (k2) {
		float *dth = grad + m->t[RK_THETA_U].off + (size_t)u * k2;
		const float *th = m->theta_u + (size_t)u * k2;
		for (uint32_t c = 0; c < k2; c++)
			dth[c] -= g * (float)(pi[c] - pj[c]);
		if (m->d.kind == RK_MODEL_VBPR) {
			float *dv = grad + m->t[RK_VIS].off;
			for (uint32_t r = 0; r < m->d.f; r++) {
				float df = f_i[r] - f_j[r];
				for (uint32_t c = 0; c < k2; c++)
					dv[(size_t)r * (k2 + 1) + c] -= g * df * th[c];
				dv[(size_t)r * (k2 + 1) + k2] -= g * df;
			}
		}
	}
	free(pi);
	return loss;
}

void rk_model_dvbpr_margins(const rk_model *m, const uint32_t *u, const uint32_t *i,
			    const uint32_t *j, size_t n, float *theta, float *margin)
{
	uint32_t k = m->d.k, k2 = m->d.k2;
	for (size_t t = 0; t < n; t++) {
		const float *gu = m->gamma_u + (size_t)u[t] * k;
		const float *gi = m->gamma_i + (size_t)i[t] * k;
		const float *gj = m->gamma_i + (size_t)j[t] * k;
		float x = m->beta_i[i[t]] - m->beta_i[j[t]];
		for (uint32_t c = 0; c < k; c++)
			x += gu[c] * (gi[c] - gj[c]);
		margin[t] = x;
		memcpy(theta + t * k2, m->theta_u + (size_t)u[t] * k2, k2 * sizeof(float));
	}
}

void rk_model_dvbpr_update(rk_model *m, const uint32_t *u, const uint32_t *i,
			   const uint32_t *j, size_t n, const float *g, const float *dtheta,
			   float lr, float lambda)
{
	uint32_t k = m->d.k, k2 = m->d.k2;
	for (size_t t = 0; t < n; t++) {
		float gt = g[t];
		float *bi = m->beta_i + i[t], *bj = m->beta_i + j[t];
		*bi -= lr * (-gt + lambda * *bi);
		*bj -= lr * (gt + lambda * *bj);
		float *gu = m->gamma_u + (size_t)u[t] * k;
		float *gi = m->gamma_i + (size_t)i[t] * k;
		float *gj = m->gamma_i + (size_t)j[t] * k;
		for (uint32_t c = 0; c < k; c++) {
			float a = gu[c], b = gi[c], d = gj[c];
			gu[c] -= lr * (-gt * (b - d) + lambda * a);
			gi[c] -= lr * (-gt * a + lambda * b);
			gj[c] -= lr * (gt * a + lambda * d);
		}
		float *th = m->theta_u + (size_t)u[t] * k2;
		for (uint32_t c = 0; c < k2; c++)
			th[c] -= lr * (dtheta[t * k2 + c] + lambda * th[c]);
	}
}

void rk_model_dvbpr_grad(const rk_model *m, const uint32_t *u, const uint32_t *i,
			 const uint32_t *j, size_t n, const float *g, const float *dtheta,
			 float *grad)
{
	uint32_t k = m->d.k, k2 = m->d.k2;
	float *gb = grad + m->t[RK_BETA_I].off, *ggu = grad + m->t[RK_GAMMA_U].off,
	      *ggi = grad + m->t[RK_GAMMA_I].off, *gth = grad + m->t[RK_THETA_U].off;
	for (size_t t = 0; t < n; t++) {
		float gt = g[t];
		gb[i[t]] -= gt;
		gb[j[t]] += gt;
		const float *gu = m->gamma_u + (size_t)u[t] * k, *gi = m->gamma_i + (size_t)i[t] * k,
			    *gj = m->gamma_i + (size_t)j[t] * k;
		float *du = ggu + (size_t)u[t] * k, *di = ggi + (size_t)i[t] * k,
		      *dj = ggi + (size_t)j[t] * k;
		for (uint32_t c = 0; c < k; c++) {
			du[c] -= gt * (gi[c] - gj[c]);
			di[c] -= gt * gu[c];
			dj[c] += gt * gu[c];
		}
		float *dt = gth + (size_t)u[t] * k2;
		for (uint32_t c = 0; c < k2; c++)
			dt[c] += dtheta[t * k2 + c];
	}
}

/* ---- snapshots ---- */

struct snap_header {
	char magic[8];
	uint32_t format, kind, n_users, n_items, k, k2, f, prior_rows;
	uint64_t version, n_params, reserved2;
};

int rk_model_put(const rk_model *m, vr_txn *txn, vr_dbi db, const char *key)
{
	_Static_assert(sizeof(struct snap_header) == SNAP_HEADER, "snapshot header is 64 bytes");
	void *val;
	size_t bytes = m->n_params * sizeof(float);
	size_t pbytes = (size_t)m->prior_rows * (1 + m->d.k) * sizeof(float);
	int rc = vr_put_reserve(txn, db, key, strlen(key), SNAP_HEADER + bytes + pbytes, &val);
	if (rc)
		return rc;
	struct snap_header h = {.format = SNAP_FORMAT, .kind = (uint32_t)m->d.kind,
		.n_users = m->d.n_users, .n_items = m->d.n_items, .k = m->d.k, .k2 = m->d.k2,
		.f = m->d.f, .prior_rows = m->prior_rows, .version = m->version,
		.n_params = m->n_params};
	memcpy(h.magic, SNAP_MAGIC, sizeof(h.magic));
	memcpy(val, &h, sizeof(h));
	memcpy((char *)val + SNAP_HEADER, m->params, bytes);
	if (pbytes)
		memcpy((char *)val + SNAP_HEADER + bytes, m->prior, pbytes);
	return 0;
}

struct save_ctx {
	const rk_model *m;
	vr_dbi db;
	const char *key;
};

static int save_fn(vr_txn *txn, void *arg)
{
	struct save_ctx *s = arg;
	return rk_model_put(s->m, txn, s->db, s->key);
}

int rk_model_save(const rk_model *m, vr_store *st, vr_dbi db, const char *key)
{
	struct save_ctx s = {m, db, key};
	return vr_store_write(st, save_fn, &s);
}

int rk_model_decode(rk_model **out, const void *val, size_t len)
{
	rk_model *m = NULL;
	struct snap_header h;
	*out = NULL;
	if (len < SNAP_HEADER)
		return VR_ECORRUPT;
	memcpy(&h, val, sizeof(h));
	if (memcmp(h.magic, SNAP_MAGIC, sizeof(h.magic)) || (h.format != 1 && h.format != SNAP_FORMAT))
		return VR_ECORRUPT;
	if (h.format == 1) /* before the prior: that field was reserved, 0 */
		h.prior_rows = 0;
	/* The sizes are checked against the value before anything is
	 * allocated: a damaged header could ask for up to 1 TiB. */
	rk_model shape = {.d = {(enum rk_model_kind)h.kind, h.n_users, h.n_items, h.k, h.k2, h.f}};
	if (layout(&shape) || h.n_params != shape.n_params)
		return VR_ECORRUPT;
	uint32_t pf = rk_model_feature_dims(&shape);
	if (h.prior_rows != 0 && h.prior_rows != 1 && (!pf || h.prior_rows != 2 + pf))
		return VR_ECORRUPT;
	size_t pfloats = (size_t)h.prior_rows * (1 + h.k);
	if (len - SNAP_HEADER != (shape.n_params + pfloats) * sizeof(float))
		return VR_ECORRUPT;
	int rc = rk_model_create(&m, &shape.d);
	if (rc)
		return rc;
	memcpy(m->params, (const char *)val + SNAP_HEADER, m->n_params * sizeof(float));
	if ((rc = rk_model_set_prior(m, (const float *)((const char *)val + SNAP_HEADER) + m->n_params,
				     h.prior_rows))) {
		rk_model_free(m);
		return rc;
	}
	m->version = h.version;
	*out = m;
	return 0;
}

int rk_model_load(rk_model **out, vr_store *st, vr_dbi db, const char *key)
{
	vr_txn *txn = NULL;
	const void *val;
	size_t len;
	*out = NULL;
	int rc = vr_store_read_begin(st, &txn);
	if (!rc)
		rc = vr_get(txn, db, key, strlen(key), &val, &len);
	if (!rc)
		rc = rk_model_decode(out, val, len);
	vr_store_read_end(txn);
	return rc;
}
