/* Unit tests of rankd's models and trainer: gradients against finite
 * differences, the serving rows, the minibatch step against the naive
 * per-triple reference, snapshots, determinism, and learning on a small
 * generated data set whose item features carry the users' taste.
 *
 * Why one file at ~1,120 lines: rankd's models and trainer are tested
 * together against one set of references and fixtures. */
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"
#include "interactions.h"
#include "model.h"
#include "prior.h"
#include "sampler.h"
#include "store.h"
#include "trainer.h"

static void fill_random(float *p, size_t n, float scale, uint64_t seed)
{
	rk_rng rng;
	rk_rng_seed(&rng, seed, 99);
	for (size_t k = 0; k < n; k++)
		p[k] = (2 * rk_rng_float(&rng) - 1) * scale;
}

/* Features as badly scaled as real sources are, and as unlike each other:
 * column r spreads 10^(r mod 10 - 6) (1e-6, as a random net's activations,
 * up to 1e3) about a mean of twice that; one column in 7 is constant and
 * rows in zero_every (if any) are all zeros (items without a vector). */
static void badly_scaled(float *feat, uint32_t n, uint32_t f, uint32_t zero_every, uint64_t seed)
{
	fill_random(feat, (size_t)n * f, 1.0f, seed);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t r = 0; r < f; r++) {
			float spread = powf(10.0f, (float)(r % 10) - 6.0f);
			float *v = feat + (size_t)i * f + r;
			*v = r % 7 == 6 ? 3.0f : spread * (2.0f + *v);
			if (zero_every && i % zero_every == 1)
				*v = 0;
		}
}

static rk_model *random_model(enum rk_model_kind kind, uint32_t nu, uint32_t ni, uint32_t k,
			      uint32_t k2, uint32_t f, uint64_t seed)
{
	rk_model_dims d = {kind, nu, ni, k, k2, f};
	rk_model *m;
	if (rk_model_create(&m, &d))
		return NULL;
	fill_random(m->params, m->n_params, 0.5f, seed);
	return m;
}

static double loss_of(const rk_model *m, uint32_t u, uint32_t i, uint32_t j,
		      const float *fi, const float *fj)
{
	double a, b;
	rk_model_score(m, u, i, fi, &a);
	rk_model_score(m, u, j, fj, &b);
	double x = a - b;
	return x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
}

/* Every parameter's analytic gradient against a central difference. */
static void check_fd(rk_model *m, const float *feat, uint32_t u, uint32_t i, uint32_t j)
{
	uint32_t fd = rk_model_feature_dims(m);
	const float *fi = feat ? feat + (size_t)i * fd : NULL;
	const float *fj = feat ? feat + (size_t)j * fd : NULL;
	float *grad = calloc(m->n_params, sizeof(float));
	double loss = rk_model_triple_grad(m, u, i, j, fi, fj, grad);
	ASSERT_NEAR(loss, loss_of(m, u, i, j, fi, fj), 1e-6);
	for (int t = 0; t < RK_N_TENSORS; t++) {
		const rk_tensor *x = &m->t[t];
		for (size_t k = 0; k < x->rows * x->cols; k++) {
			float *p = m->params + x->off + k, orig = *p;
			float hi = orig + 1e-2f, lo = orig - 1e-2f;
			*p = hi;
			double lp = loss_of(m, u, i, j, fi, fj);
			*p = lo;
			double lm = loss_of(m, u, i, j, fi, fj);
			*p = orig;
			double num = (lp - lm) / ((double)hi - lo);
			double ana = grad[x->off + k];
			ASSERT_MSG(fabs(num - ana) <= 1e-3 * (1 + fabs(num)),
				   "tensor %d param %zu: finite difference %.7g, analytic %.7g", t, k,
				   num, ana);
		}
	}
	free(grad);
}

TEST(vbpr_gradients_match_finite_differences)
{
	rk_model *m = random_model(RK_MODEL_VBPR, 3, 5, 3, 2, 4, 1);
	ASSERT(m);
	float feat[5 * 4];
	fill_random(feat, 20, 1.0f, 2);
	check_fd(m, feat, 1, 2, 4);
	check_fd(m, feat, 0, 3, 0);
	/* What rankd trains on: a badly scaled source, standardised. */
	float scale[4];
	badly_scaled(feat, 5, 4, 0, 3);
	ASSERT_OK(rk_feature_scales(feat, 5, 4, scale));
	rk_features_scale(feat, 5, 4, scale);
	check_fd(m, feat, 1, 2, 4);
	check_fd(m, feat, 2, 0, 3);
	rk_model_free(m);
}

TEST(bpr_and_dvbpr_gradients_match_finite_differences)
{
	rk_model *m = random_model(RK_MODEL_BPR, 3, 5, 4, 0, 0, 3);
	ASSERT(m);
	check_fd(m, NULL, 2, 0, 4);
	rk_model_free(m);
	m = random_model(RK_MODEL_DVBPR, 3, 5, 2, 3, 0, 4);
	ASSERT(m);
	float phi[5 * 3];
	fill_random(phi, 15, 1.0f, 5);
	check_fd(m, phi, 1, 4, 2);
	rk_model_free(m);
}

static double dot(const float *a, const float *b, uint32_t n)
{
	double s = 0;
	for (uint32_t k = 0; k < n; k++)
		s += (double)a[k] * b[k];
	return s;
}

TEST(serving_rows_fold_the_score)
{
	enum rk_model_kind kinds[] = {RK_MODEL_BPR, RK_MODEL_VBPR, RK_MODEL_DVBPR};
	for (int q = 0; q < 3; q++) {
		enum rk_model_kind kind = kinds[q];
		rk_model *m = random_model(kind, 4, 6, 3, kind == RK_MODEL_BPR ? 0 : 2,
					   kind == RK_MODEL_VBPR ? 5 : 0, 10 + q);
		ASSERT(m);
		uint32_t fd = rk_model_feature_dims(m), dim = rk_model_dim(m);
		ASSERT_EQ_INT(dim, kind == RK_MODEL_BPR ? 4 : 6);
		float feat[8 * 5], urow[8], irow[8], rows[8 * 8];
		fill_random(feat, sizeof feat / sizeof *feat, 1.0f, 20 + q);
		uint32_t items[8] = {0, 1, 2, 3, 4, 5, 6, 7}; /* 6 and 7: cold */
		ASSERT_OK(rk_model_item_rows(m, items, fd ? feat : NULL, 8, rows));
		for (uint32_t u = 0; u < 4; u++) {
			ASSERT_OK(rk_model_user_row(m, u, urow));
			for (uint32_t i = 0; i < 8; i++) {
				const float *fi = fd ? feat + i * fd : NULL;
				ASSERT_OK(rk_model_item_row(m, i, fi, irow));
				for (uint32_t c = 0; c < dim; c++)
					ASSERT_NEAR(irow[c], rows[i * dim + c], 1e-5);
				double s;
				ASSERT_OK(rk_model_score(m, u, i, fi, &s));
				ASSERT_NEAR(dot(urow, irow, dim), s, 1e-5);
				if (i >= 6) {
					for (uint32_t c = 1; c <= m->d.k; c++)
						ASSERT_EQ_INT(irow[c] != 0, 0);
				}
			}
		}
		ASSERT_EQ_INT(rk_model_user_row(m, 4, urow), VR_ENOTFOUND);
		if (fd)
			ASSERT_EQ_INT(rk_model_item_row(m, 0, NULL, irow), VR_EINVAL);
		rk_model_free(m);
	}
}

/* Standard deviation of column r over the rows that are not all zero. */
static double column_sd(const float *feat, uint32_t n, uint32_t f, uint32_t r)
{
	double sum = 0, sq = 0, rows = 0;
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t i = 0; i < n; i++) {
			const float *row = feat + (size_t)i * f;
			uint32_t nz = 0;
			for (uint32_t c = 0; c < f; c++)
				nz += row[c] != 0;
			if (!nz)
				continue;
			if (!pass) {
				sum += row[r];
				rows++;
			} else {
				sq += (row[r] - sum / rows) * (row[r] - sum / rows);
			}
		}
	return sqrt(sq / rows);
}

TEST(feature_scales_standardise_and_fold)
{
	enum { N = 40, F = 14, NU = 4 };
	float raw[(N + 2) * F], scaled[(N + 2) * F], scale[F];
	badly_scaled(raw, N + 2, F, 5, 60);
	ASSERT_OK(rk_feature_scales(raw, N, F, scale));
	memcpy(scaled, raw, sizeof raw);
	rk_features_scale(scaled, N + 2, F, scale);
	for (uint32_t r = 0; r < F; r++) {
		if (r % 7 == 6) { /* constant: tells no items apart, left as it is */
			ASSERT_EQ_INT(scale[r] == 1.0f, 1);
			continue;
		}
		double sd = column_sd(scaled, N, F, r);
		ASSERT_MSG(fabs(sd * sqrt(F) - 1) < 1e-3, "column %u: scaled spread %.6g, want %.6g", r,
			   sd, 1 / sqrt(F));
	}
	/* Training on scaled features is serving the folded model on raw ones:
	 * every item row (items N and N + 1 are cold) and every score. */
	rk_model *m = random_model(RK_MODEL_VBPR, NU, N, 3, 4, F, 61), *folded;
	ASSERT(m);
	ASSERT_OK(rk_model_clone(m, &folded));
	rk_model_fold_scales(folded, scale);
	uint32_t dim = rk_model_dim(m);
	float *a = malloc((N + 2) * dim * sizeof(float)), *b = malloc((N + 2) * dim * sizeof(float));
	ASSERT_OK(rk_model_item_rows(m, NULL, scaled, N + 2, a));
	ASSERT_OK(rk_model_item_rows(folded, NULL, raw, N + 2, b));
	for (uint32_t k = 0; k < (N + 2) * dim; k++)
		ASSERT_MSG(fabs(a[k] - b[k]) <= 1e-4 * (1 + fabs(a[k])),
			   "item row value %u: scaled features %.7g, folded model %.7g", k, a[k], b[k]);
	for (uint32_t u = 0; u < NU; u++)
		for (uint32_t i = 0; i < N + 2; i++) {
			double x, y;
			ASSERT_OK(rk_model_score(m, u, i, scaled + i * F, &x));
			ASSERT_OK(rk_model_score(folded, u, i, raw + i * F, &y));
			ASSERT_NEAR(x, y, 1e-4 * (1 + fabs(x)));
		}
	/* Errors: no dimensions, or nothing but zero rows. */
	ASSERT_EQ_INT(rk_feature_scales(raw, N, 0, scale), VR_EINVAL);
	memset(raw, 0, sizeof raw);
	ASSERT_EQ_INT(rk_feature_scales(raw, N, F, scale), VR_EINVAL);
	free(a);
	free(b);
	rk_model_free(folded);
	rk_model_free(m);
}

TEST(dvbpr_margin_and_update)
{
	rk_model *m = random_model(RK_MODEL_DVBPR, 3, 5, 2, 3, 0, 30);
	ASSERT(m);
	float phi[5 * 3];
	fill_random(phi, 15, 1.0f, 31);
	uint32_t u = 2, i = 1, j = 3;
	float theta[3], margin;
	rk_model_dvbpr_margins(m, &u, &i, &j, 1, theta, &margin);
	double si, sj;
	rk_model_score(m, u, i, phi + 3, &si);
	rk_model_score(m, u, j, phi + 9, &sj);
	double vis = dot(theta, phi + 3, 3) - dot(theta, phi + 9, 3);
	ASSERT_NEAR(margin + vis, si - sj, 1e-5);
	/* featured's answer for this triple, then the update equals one SGD
	 * step along the reference gradient. */
	double x = si - sj;
	float g = (float)(1 / (1 + exp(x))), dtheta[3];
	for (int c = 0; c < 3; c++)
		dtheta[c] = -g * (phi[3 + c] - phi[9 + c]);
	float *grad = calloc(m->n_params, sizeof(float)), *dense = calloc(m->n_params, sizeof(float));
	rk_model_triple_grad(m, u, i, j, phi + 3, phi + 9, grad);
	/* The gradient Adam steps with is the reference gradient, every
	 * parameter of the arena (zeros off the triple's rows). */
	rk_model_dvbpr_grad(m, &u, &i, &j, 1, &g, dtheta, dense);
	for (size_t k = 0; k < m->n_params; k++)
		ASSERT_NEAR(dense[k], grad[k], 1e-5);
	free(dense);
	rk_model *ref;
	ASSERT_OK(rk_model_clone(m, &ref));
	for (size_t k = 0; k < m->n_params; k++)
		ref->params[k] -= 0.1f * grad[k];
	rk_model_dvbpr_update(m, &u, &i, &j, 1, &g, dtheta, 0.1f, 0.0f);
	for (size_t k = 0; k < m->n_params; k++)
		ASSERT_NEAR(m->params[k], ref->params[k], 1e-5);
	free(grad);
	rk_model_free(ref);
	rk_model_free(m);
}

struct raw_put {
	vr_dbi db;
	void *v;
	size_t len;
};

static int put_raw(vr_txn *t, void *arg)
{
	struct raw_put *w = arg;
	return vr_put(t, w->db, "bad", 3, w->v, w->len);
}

TEST(snapshot_round_trip)
{
	char dir[] = "/tmp/rk_model_test.XXXXXX";
	ASSERT(mkdtemp(dir));
	vr_store_opts opts = {.no_sync = 1};
	vr_store *st;
	vr_dbi db;
	ASSERT_OK(vr_store_open(&st, dir, &opts));
	ASSERT_OK(vr_store_dbi(st, "models", 0, &db));
	rk_model *m = random_model(RK_MODEL_VBPR, 7, 11, 5, 4, 9, 40), *back;
	ASSERT(m);
	m->version = 12345;
	float prior[(2 + 9) * 6];
	fill_random(prior, sizeof prior / sizeof *prior, 1.0f, 41);
	ASSERT_EQ_INT(rk_model_set_prior(m, prior, 3), VR_EINVAL); /* neither 0, 1 nor 2 + F */
	ASSERT_OK(rk_model_set_prior(m, prior, 2 + 9));
	ASSERT_OK(rk_model_save(m, st, db, "current"));
	ASSERT_EQ_INT(rk_model_load(&back, st, db, "missing"), VR_ENOTFOUND);
	ASSERT_OK(rk_model_load(&back, st, db, "current"));
	ASSERT(!memcmp(&back->d, &m->d, sizeof(m->d)));
	ASSERT_EQ_INT(back->version, 12345);
	ASSERT_EQ_INT(back->n_params, m->n_params);
	ASSERT(!memcmp(back->params, m->params, m->n_params * sizeof(float)));
	ASSERT_EQ_INT(back->prior_rows, 2 + 9);
	ASSERT(!memcmp(back->prior, prior, sizeof prior));
	rk_model_free(back);
	/* A truncated value is corrupt, not a crash. */
	vr_txn *txn;
	const void *v;
	size_t len;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	ASSERT_OK(vr_get(txn, db, "current", 7, &v, &len));
	void *copy = malloc(len);
	memcpy(copy, v, len);
	vr_store_read_end(txn);
	struct raw_put w = {db, copy, len - 4};
	ASSERT_OK(vr_store_write(st, put_raw, &w));
	ASSERT_EQ_INT(rk_model_load(&back, st, db, "bad"), VR_ECORRUPT);
	free(copy);
	rk_model_free(m);
	vr_store_close(st);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	ASSERT_EQ_INT(system(cmd), 0);
}

/* A model value's header is checked against its length before the
 * arena is allocated: the fuzzer found a 100-byte value that made the
 * decoder allocate 6 GiB. This one asks for 2^37 floats (512 GiB) and
 * must be refused as corrupt, not fail for want of memory. */
TEST(model_header_checked_before_allocating)
{
	uint8_t val[64 + 16] = "RKMODEL1";
	const uint32_t head[8] = {1, RK_MODEL_BPR, 1u << 30, 1, 128, 0, 0, 0};
	const uint64_t tail[3] = {7, ((uint64_t)1 << 37) + 16, 0};
	memcpy(val + 8, head, sizeof(head));
	memcpy(val + 40, tail, sizeof(tail));
	rk_model *m = (rk_model *)1;
	ASSERT_EQ_INT(rk_model_decode(&m, val, sizeof(val)), VR_ECORRUPT);
	ASSERT(m == NULL);
	/* The same header with a value of the size it names would decode;
	 * one float short or long is corrupt. */
	rk_model *good = random_model(RK_MODEL_BPR, 3, 2, 4, 0, 0, 5);
	ASSERT(good);
	size_t len = 64 + good->n_params * sizeof(float);
	uint8_t *buf = calloc(1, len + 4);
	ASSERT(buf);
	const uint32_t h2[8] = {1, RK_MODEL_BPR, 3, 2, 4, 0, 0, 0};
	const uint64_t t2[3] = {0, good->n_params, 0};
	memcpy(buf, "RKMODEL1", 8);
	memcpy(buf + 8, h2, sizeof(h2));
	memcpy(buf + 40, t2, sizeof(t2));
	ASSERT_OK(rk_model_decode(&m, buf, len));
	ASSERT_EQ_INT(m->n_params, good->n_params);
	rk_model_free(m);
	ASSERT_EQ_INT(rk_model_decode(&m, buf, len - 4), VR_ECORRUPT);
	ASSERT_EQ_INT(rk_model_decode(&m, buf, len + 4), VR_ECORRUPT);
	ASSERT_EQ_INT(rk_model_decode(&m, buf, 63), VR_ECORRUPT);
	free(buf);
	rk_model_free(good);
}

/* A random training CSR where every item has a training interaction. */
static void dense_csr(rk_csr *c, uint32_t nu, uint32_t ni, uint64_t seed)
{
	rk_rng rng;
	rk_rng_seed(&rng, seed, 0);
	c->n_users = nu;
	c->n_items = ni;
	c->off = calloc(nu + 1, sizeof(uint64_t));
	c->item = malloc((size_t)nu * ni * sizeof(uint32_t));
	c->ts = calloc((size_t)nu * ni, sizeof(int64_t));
	uint64_t o = 0;
	for (uint32_t u = 0; u < nu; u++) {
		for (uint32_t i = 0; i < ni; i++)
			if (i % nu == u || rk_rng_below(&rng, 5) == 0)
				c->item[o++] = i;
		c->off[u + 1] = o;
	}
	c->nnz = o;
}

/* The naive reference step: per-triple gradients summed, plus L2. */
static void reference_step(rk_model *m, const float *feat, const uint32_t *u, const uint32_t *i,
			   const uint32_t *j, size_t n, const rk_train_config *c, float *adam_m,
			   float *adam_v, int step)
{
	uint32_t fd = rk_model_feature_dims(m);
	float *grad = calloc(m->n_params, sizeof(float));
	for (size_t x = 0; x < n; x++)
		rk_model_triple_grad(m, u[x], i[x], j[x], feat ? feat + (size_t)i[x] * fd : NULL,
				     feat ? feat + (size_t)j[x] * fd : NULL, grad);
	for (int t = 0; t < RK_N_TENSORS; t++) {
		float lam = t == RK_VIS ? c->lambda_e : c->lambda;
		for (size_t k = m->t[t].off; k < m->t[t].off + m->t[t].rows * m->t[t].cols; k++) {
			double g = grad[k] + lam * m->params[k];
			if (c->optim == RK_OPT_SGD) {
				m->params[k] -= c->lr * g;
				continue;
			}
			adam_m[k] = c->adam_beta1 * adam_m[k] + (1 - c->adam_beta1) * g;
			adam_v[k] = c->adam_beta2 * adam_v[k] + (1 - c->adam_beta2) * g * g;
			double bc1 = 1 - pow(c->adam_beta1, step), bc2 = 1 - pow(c->adam_beta2, step);
			m->params[k] -= c->lr / bc1 * adam_m[k] / (sqrt(adam_v[k]) / sqrt(bc2) + c->adam_eps);
		}
	}
	free(grad);
}

static uint32_t distinct_items(const uint32_t *i, const uint32_t *j, size_t n, uint32_t ni)
{
	uint8_t *seen = calloc(ni, 1);
	uint32_t d = 0;
	for (size_t x = 0; x < n; x++) {
		d += !seen[i[x]];
		seen[i[x]] = 1;
		d += !seen[j[x]];
		seen[j[x]] = 1;
	}
	free(seen);
	return d;
}

/* Runs `steps` steps of the trainer and of the reference on the same
 * triples and compares every parameter. scaled: the features are what
 * rankd gives the trainer (a badly scaled source, standardised) and λ_E is
 * the default. */
static void compare_steps_on(enum rk_model_kind kind, enum rk_optim optim, size_t n, int steps,
			     int expect_gather, enum rk_vis_path path, uint32_t NU, uint32_t F,
			     int scaled)
{
	enum { NI = 60 };
	rk_csr c;
	dense_csr(&c, NU, NI, 50);
	rk_model *m = random_model(kind, NU, NI, 4, kind == RK_MODEL_VBPR ? 3 : 0,
				   kind == RK_MODEL_VBPR ? F : 0, 51);
	ASSERT(m);
	float *feat = malloc(NI * F * sizeof(float)), *scale = malloc(F * sizeof(float));
	fill_random(feat, NI * F, 1.0f, 52);
	if (scaled) {
		badly_scaled(feat, NI, F, 0, 52);
		ASSERT_OK(rk_feature_scales(feat, NI, F, scale));
		rk_features_scale(feat, NI, F, scale);
	}
	const float *fp = kind == RK_MODEL_VBPR ? feat : NULL;
	rk_train_config cfg;
	rk_train_config_default(&cfg, kind);
	cfg.algo = RK_ALGO_MINIBATCH;
	cfg.optim = optim;
	cfg.batch = (uint32_t)n;
	cfg.threads = 2;
	cfg.visual_path = path;
	cfg.lr = optim == RK_OPT_SGD ? 0.01f : 0.01f;
	cfg.lambda = 0.05f;
	if (!scaled)
		cfg.lambda_e = 0.02f;
	rk_trainer *t;
	ASSERT_OK(rk_trainer_create(&t, m, &c, NULL, fp, &cfg));
	rk_model *ref;
	ASSERT_OK(rk_model_clone(m, &ref));
	float *am = calloc(m->n_params, sizeof(float)), *av = calloc(m->n_params, sizeof(float));
	uint32_t *u = malloc(3 * n * sizeof(uint32_t)), *i = u + n, *j = i + n;
	rk_sampler *s;
	ASSERT_OK(rk_sampler_create(&s, &c, NULL));
	rk_rng rng;
	rk_rng_seed(&rng, 53, 0);
	for (int st = 1; st <= steps; st++) {
		rk_sampler_fill(s, &rng, n, u, i, j);
		uint32_t d = distinct_items(i, j, n, NI);
		ASSERT_EQ_INT(d * 4 < NI * 3, expect_gather);
		double loss;
		ASSERT_OK(rk_trainer_step(t, u, i, j, n, &loss));
		ASSERT(loss > 0);
		reference_step(ref, fp, u, i, j, n, &cfg, am, av, st);
	}
	/* Adam divides by the gradient's root mean square: where the default
	 * λ_E's decay all but cancels the data's pull on an entry of E, float
	 * rounding (summation order differs between builds) shows more. A wrong
	 * term would be off by a whole step, lr. */
	double tol = optim == RK_OPT_SGD ? 1e-5 : (scaled ? 1e-3 : 1e-4) * cfg.lr;
	for (int x = 0; x < RK_N_TENSORS; x++)
		for (size_t k = m->t[x].off; k < m->t[x].off + m->t[x].rows * m->t[x].cols; k++)
			ASSERT_MSG(fabs(m->params[k] - ref->params[k]) <= tol * (1 + fabs(ref->params[k])),
				   "tensor %d param %zu: step %.8g, reference %.8g", x,
				   k - m->t[x].off, m->params[k], ref->params[k]);
	rk_sampler_free(s);
	free(u);
	free(am);
	free(av);
	free(feat);
	free(scale);
	rk_trainer_free(t);
	rk_model_free(ref);
	rk_model_free(m);
	rk_csr_free(&c);
}

static void compare_steps(enum rk_model_kind kind, enum rk_optim optim, size_t n, int steps,
			  int expect_gather, enum rk_vis_path path, uint32_t NU, uint32_t F)
{
	compare_steps_on(kind, optim, n, steps, expect_gather, path, NU, F, 0);
}

TEST(minibatch_step_equals_reference_vbpr_gathered)
{
	compare_steps(RK_MODEL_VBPR, RK_OPT_SGD, 8, 3, 1, RK_VIS_ITEMS, 12, 16);
}

TEST(minibatch_step_equals_reference_vbpr_full)
{
	compare_steps(RK_MODEL_VBPR, RK_OPT_SGD, 300, 3, 0, RK_VIS_ITEMS, 12, 16);
}

TEST(minibatch_step_equals_reference_vbpr_user_side)
{
	compare_steps(RK_MODEL_VBPR, RK_OPT_SGD, 8, 3, 1, RK_VIS_USERS, 12, 16);
	compare_steps(RK_MODEL_VBPR, RK_OPT_SGD, 300, 3, 0, RK_VIS_USERS, 12, 16);
}

/* Enough users times features that the user side reads the features in
 * several column blocks. */
TEST(minibatch_step_equals_reference_vbpr_blocked)
{
	compare_steps(RK_MODEL_VBPR, RK_OPT_SGD, 300, 2, 0, RK_VIS_USERS, 120, 1024);
}

TEST(minibatch_step_equals_reference_adam)
{
	compare_steps(RK_MODEL_VBPR, RK_OPT_ADAM, 80, 4, 0, RK_VIS_AUTO, 12, 16);
	compare_steps(RK_MODEL_BPR, RK_OPT_ADAM, 80, 4, 0, RK_VIS_AUTO, 12, 16);
}

/* rankd's VBPR run: standardised features, the default λ_E, Adam, both
 * sides of the visual terms. */
TEST(minibatch_step_equals_reference_scaled_features)
{
	compare_steps_on(RK_MODEL_VBPR, RK_OPT_ADAM, 80, 4, 0, RK_VIS_ITEMS, 12, 16, 1);
	compare_steps_on(RK_MODEL_VBPR, RK_OPT_ADAM, 80, 4, 0, RK_VIS_USERS, 12, 16, 1);
	compare_steps_on(RK_MODEL_VBPR, RK_OPT_SGD, 8, 3, 1, RK_VIS_AUTO, 12, 16, 1);
}

/* ---- learning on a generated data set ---- */

enum { LU = 300, LI = 500, LCOLD = 50, LF = 24, NCAT = 6, NLAT = 8 };

struct synth {
	rk_csr all, train, fit;  /* fit = train minus the validation items */
	uint32_t test[LU], valid[LU];
	float feat[LI * LF];
	uint32_t cat[LI];
};

/* Items have a category (visible in their features) and a latent cluster
 * (invisible); a user prefers one category and one cluster. Items
 * [LI - LCOLD, LI) are cold: each is only the last (test) interaction of a
 * user who prefers its category. */
static void make_synth(struct synth *s, uint64_t seed)
{
	rk_rng rng;
	rk_rng_seed(&rng, seed, 0);
	float proto[NCAT][LF];
	for (int c = 0; c < NCAT; c++)
		for (int d = 0; d < LF; d++)
			proto[c][d] = 2 * rk_rng_float(&rng) - 1;
	uint32_t lat[LI];
	double pop[LI];
	for (uint32_t i = 0; i < LI; i++) {
		s->cat[i] = rk_rng_below(&rng, NCAT);
		lat[i] = rk_rng_below(&rng, NLAT);
		pop[i] = 1.0 / (1 + rk_rng_below(&rng, 5));
		for (int d = 0; d < LF; d++)
			s->feat[i * LF + d] = proto[s->cat[i]][d] + 0.3f * (2 * rk_rng_float(&rng) - 1);
	}
	rk_interactions *ix;
	rk_interactions_open(&ix, NULL);
	char uid[16], iid[16];
	for (uint32_t i = 0; i < LI; i++) { /* item index = i */
		uint32_t dummy;
		snprintf(iid, sizeof iid, "i%u", i);
		rk_items_intern(ix, iid, strlen(iid), &dummy);
	}
	uint32_t ucat[LU];
	uint32_t next_cold = LI - LCOLD;
	for (uint32_t u = 0; u < LU; u++) {
		ucat[u] = rk_rng_below(&rng, NCAT);
		uint32_t ulat = rk_rng_below(&rng, NLAT), deg = 20 + rk_rng_below(&rng, 20);
		snprintf(uid, sizeof uid, "u%u", u);
		uint8_t picked[LI] = {0};
		for (uint32_t d = 0; d < deg;) {
			uint32_t i = rk_rng_below(&rng, LI - LCOLD);
			double w = pop[i] * exp(2.5 * (s->cat[i] == ucat[u]) + 2.0 * (lat[i] == ulat));
			if (picked[i] || rk_rng_float(&rng) * 20 * exp(4.5) > w * 20)
				continue;
			picked[i] = 1;
			snprintf(iid, sizeof iid, "i%u", i);
			rk_interaction_in r = {uid, strlen(uid), iid, strlen(iid), d++};
			rk_interactions_add_batch(ix, &r, 1, NULL);
		}
		/* Cold test items go to users of the matching category. */
		if (next_cold < LI && s->cat[next_cold] == ucat[u]) {
			snprintf(iid, sizeof iid, "i%u", next_cold++);
			rk_interaction_in r = {uid, strlen(uid), iid, strlen(iid), 1000};
			rk_interactions_add_batch(ix, &r, 1, NULL);
		}
	}
	/* Any cold items left go to the first users of their category. */
	for (; next_cold < LI; next_cold++)
		for (uint32_t u = 0; u < LU; u++)
			if (ucat[u] == s->cat[next_cold]) {
				snprintf(uid, sizeof uid, "u%u", u);
				snprintf(iid, sizeof iid, "i%u", next_cold);
				rk_interaction_in r = {uid, strlen(uid), iid, strlen(iid), 1001};
				rk_interactions_add_batch(ix, &r, 1, NULL);
				break;
			}
	rk_interactions_csr(ix, &s->all);
	rk_split_last(&s->all, &s->train, s->test);
	rk_split_last(&s->train, &s->fit, s->valid);
	rk_interactions_close(ix);
}

static void free_synth(struct synth *s)
{
	rk_csr_free(&s->all);
	rk_csr_free(&s->train);
	rk_csr_free(&s->fit);
}

/* Full AUC of each user's test item against candidates (cold: the other
 * cold items; warm: every item the user has not trained on), through the
 * serving rows. pop != NULL ranks by popularity instead. */
static double auc_on(const struct synth *s, const rk_model *m, const uint32_t *pop, int cold)
{
	uint32_t dim = m ? rk_model_dim(m) : 0;
	float *rows = m ? malloc((size_t)LI * dim * sizeof(float)) : NULL;
	float *urow = m ? malloc(dim * sizeof(float)) : NULL;
	float scores[LI];
	if (m)
		rk_model_item_rows(m, NULL, rk_model_feature_dims(m) ? s->feat : NULL, LI, rows);
	double sum = 0;
	uint32_t users = 0;
	for (uint32_t u = 0; u < LU; u++) {
		uint32_t it = s->test[u];
		if (it == RK_NONE || (it >= LI - LCOLD) != cold)
			continue;
		if (m)
			rk_model_user_row(m, u, urow);
		for (uint32_t i = 0; i < LI; i++)
			scores[i] = m ? (float)dot(urow, rows + (size_t)i * dim, dim) : (float)pop[i];
		double below = 0, n = 0;
		for (uint32_t j = cold ? LI - LCOLD : 0; j < LI; j++) {
			if (j == it || rk_csr_has(&s->train, u, j))
				continue;
			below += scores[j] < scores[it] ? 1 : scores[j] == scores[it] ? 0.5 : 0;
			n++;
		}
		sum += below / n;
		users++;
	}
	free(rows);
	free(urow);
	return sum / users;
}

/* Trains on s->fit with validation; VBPR by minibatches (Adam) or Hogwild
 * SGD, BPR with its defaults (Hogwild). */
static rk_model *train_model_algo(const struct synth *s, enum rk_model_kind kind,
				  uint32_t threads, enum rk_algo vbpr_algo, rk_train_result *res)
{
	rk_model_dims d;
	rk_model_dims_default(&d, kind, LU, LI, LF);
	d.k = 16;
	d.k2 = kind == RK_MODEL_VBPR ? 8 : 0;
	rk_model *m;
	if (rk_model_create(&m, &d))
		return NULL;
	rk_model_init(m, 7);
	rk_train_config c;
	rk_train_config_default(&c, kind);
	c.threads = threads;
	c.max_epochs = 40;
	c.seed = 9;
	if (kind == RK_MODEL_VBPR && vbpr_algo == RK_ALGO_HOGWILD) {
		c.algo = RK_ALGO_HOGWILD;
		c.optim = RK_OPT_SGD;
		c.lr = 0.02f;
		c.lambda = 0.0025f;
		c.lambda_e = 0.0025f;
	} else if (kind == RK_MODEL_VBPR) {
		c.batch = 256;
		c.lr = 0.01f;
		c.lambda = 0.01f;
		c.lambda_e = 0.01f;
	}
	rk_trainer *t;
	if (rk_trainer_create(&t, m, &s->fit, s->valid, kind == RK_MODEL_VBPR ? s->feat : NULL, &c)) {
		rk_model_free(m);
		return NULL;
	}
	rk_trainer_run(t, NULL, NULL, res);
	rk_trainer_free(t);
	return m;
}

static rk_model *train_model(const struct synth *s, enum rk_model_kind kind, uint32_t threads,
			     rk_train_result *res)
{
	return train_model_algo(s, kind, threads, RK_ALGO_MINIBATCH, res);
}

TEST(learning_bpr_and_vbpr)
{
	struct synth *s = calloc(1, sizeof(*s));
	make_synth(s, 3);
	rk_train_result rb, rv;
	rk_model *bpr = train_model(s, RK_MODEL_BPR, 2, &rb);
	rk_model *vbpr = train_model(s, RK_MODEL_VBPR, 2, &rv);
	ASSERT(bpr && vbpr);
	uint32_t pop[LI];
	rk_csr_item_counts(&s->train, pop);
	double bw = auc_on(s, bpr, NULL, 0), vw = auc_on(s, vbpr, NULL, 0);
	double bc = auc_on(s, bpr, NULL, 1), vc = auc_on(s, vbpr, NULL, 1);
	double pw = auc_on(s, NULL, pop, 0);
	fprintf(stderr, "  BPR: val %.3f (epoch %u/%u), warm %.3f, cold %.3f\n", rb.best_auc,
		rb.best_epoch, rb.epochs, bw, bc);
	fprintf(stderr, "  VBPR: val %.3f (epoch %u/%u), warm %.3f, cold %.3f\n", rv.best_auc,
		rv.best_epoch, rv.epochs, vw, vc);
	fprintf(stderr, "  popularity: warm %.3f\n", pw);
	ASSERT(rb.best_auc > 0.7);
	ASSERT(rv.best_auc > 0.7);
	ASSERT(bw > pw + 0.03);
	ASSERT(vw > pw + 0.03);
	ASSERT_NEAR(bc, 0.5, 1e-9);
	ASSERT(vc > 0.7);
	rk_model_free(bpr);
	rk_model_free(vbpr);
	free_synth(s);
	free(s);
}

/* VBPR as rankd trains it: features standardised (rk_feature_scales),
 * the default λ_E, the model folded back to s->feat as they are. */
static rk_model *train_vbpr_scaled(const struct synth *s, rk_train_result *res)
{
	float scale[LF], *feat = malloc(sizeof s->feat);
	rk_model_dims d;
	rk_model_dims_default(&d, RK_MODEL_VBPR, LU, LI, LF);
	d.k = 16;
	d.k2 = 8;
	rk_model *m;
	rk_trainer *t;
	if (!feat || rk_model_create(&m, &d)) {
		free(feat);
		return NULL;
	}
	rk_model_init(m, 7);
	rk_train_config c;
	rk_train_config_default(&c, RK_MODEL_VBPR);
	c.threads = 2;
	c.max_epochs = 40;
	c.seed = 9;
	c.batch = 1024;
	memcpy(feat, s->feat, sizeof s->feat);
	int rc = rk_feature_scales(feat, LI, LF, scale);
	if (!rc) {
		rk_features_scale(feat, LI, LF, scale);
		rc = rk_trainer_create(&t, m, &s->fit, s->valid, feat, &c);
	}
	if (rc) {
		free(feat);
		rk_model_free(m);
		return NULL;
	}
	rk_trainer_run(t, NULL, NULL, res);
	rk_trainer_free(t);
	rk_model_fold_scales(m, scale);
	free(feat);
	return m;
}

/* Standardised features make VBPR indifferent to its source's scale: the
 * same features, and the same ones with columns scaled from 1e-6 to 1e3,
 * rank cold items alike, and well. */
TEST(vbpr_learns_whatever_the_feature_scale)
{
	struct synth *s = calloc(1, sizeof(*s));
	make_synth(s, 8);
	rk_train_result r1, r2;
	rk_model *a = train_vbpr_scaled(s, &r1);
	ASSERT(a);
	double warm_a = auc_on(s, a, NULL, 0), cold_a = auc_on(s, a, NULL, 1);
	for (uint32_t i = 0; i < LI; i++)
		for (uint32_t r = 0; r < LF; r++)
			s->feat[i * LF + r] *= powf(10.0f, (float)(r % 10) - 6.0f);
	rk_model *b = train_vbpr_scaled(s, &r2);
	ASSERT(b);
	double warm_b = auc_on(s, b, NULL, 0), cold_b = auc_on(s, b, NULL, 1);
	fprintf(stderr, "  VBPR, features as made: val %.3f (epoch %u/%u), warm %.3f, cold %.3f\n",
		r1.best_auc, r1.best_epoch, r1.epochs, warm_a, cold_a);
	fprintf(stderr, "  VBPR, columns scaled 1e-6..1e3: val %.3f (epoch %u/%u), warm %.3f, cold %.3f\n",
		r2.best_auc, r2.best_epoch, r2.epochs, warm_b, cold_b);
	ASSERT(r1.best_auc > 0.7);
	ASSERT(cold_a > 0.7);
	ASSERT_NEAR(cold_a, cold_b, 0.01);
	ASSERT_NEAR(warm_a, warm_b, 0.01);
	rk_model_free(a);
	rk_model_free(b);
	free_synth(s);
	free(s);
}

TEST(hogwild_vbpr_learns)
{
	struct synth *s = calloc(1, sizeof(*s));
	make_synth(s, 6);
	rk_train_result r;
	rk_model *m = train_model_algo(s, RK_MODEL_VBPR, 1, RK_ALGO_HOGWILD, &r);
	ASSERT(m);
	double warm = auc_on(s, m, NULL, 0), cold = auc_on(s, m, NULL, 1);
	fprintf(stderr, "  VBPR Hogwild: val %.3f (epoch %u/%u), warm %.3f, cold %.3f\n",
		r.best_auc, r.best_epoch, r.epochs, warm, cold);
	ASSERT(r.best_auc > 0.7);
	ASSERT(cold > 0.7);
	rk_model_free(m);
	free_synth(s);
	free(s);
}

TEST(deterministic_runs)
{
	struct synth *s = calloc(1, sizeof(*s));
	make_synth(s, 4);
	rk_train_result r;
	rk_model *a = train_model(s, RK_MODEL_BPR, 1, &r);
	rk_model *b = train_model(s, RK_MODEL_BPR, 1, &r);
	ASSERT(a && b);
	ASSERT(!memcmp(a->params, b->params, a->n_params * sizeof(float)));
	rk_model_free(a);
	rk_model_free(b);
	a = train_model(s, RK_MODEL_VBPR, 1, &r);
	b = train_model(s, RK_MODEL_VBPR, 1, &r);
	rk_model *c = train_model(s, RK_MODEL_VBPR, 3, &r);
	ASSERT(a && b && c);
	ASSERT(!memcmp(a->params, b->params, a->n_params * sizeof(float)));
	/* The minibatch path gives the same bits for any thread count. */
	ASSERT(!memcmp(a->params, c->params, a->n_params * sizeof(float)));
	rk_model_free(a);
	rk_model_free(b);
	rk_model_free(c);
	free_synth(s);
	free(s);
}

static int stop_at_two(void *ctx, const rk_progress *p)
{
	int *calls = ctx;
	++*calls;
	return p->epoch == 2 && p->loss > 0 && p->triples_per_s > 0;
}

TEST(progress_and_cancel)
{
	struct synth *s = calloc(1, sizeof(*s));
	make_synth(s, 5);
	rk_model_dims d;
	rk_model_dims_default(&d, RK_MODEL_BPR, LU, LI, 0);
	rk_model *m;
	ASSERT_OK(rk_model_create(&m, &d));
	rk_model_init(m, 1);
	rk_trainer *t;
	ASSERT_OK(rk_trainer_create(&t, m, &s->fit, s->valid, NULL, NULL));
	int calls = 0;
	rk_train_result r;
	ASSERT_EQ_INT(rk_trainer_run(t, stop_at_two, &calls, &r), VR_ECANCELLED);
	ASSERT_EQ_INT(calls, 2);
	ASSERT_EQ_INT(r.epochs, 2);
	rk_trainer_cancel(t);
	ASSERT_EQ_INT(rk_trainer_train(t, 1000, NULL), VR_ECANCELLED);
	rk_trainer_free(t);
	rk_train_config c;
	rk_train_config_default(&c, RK_MODEL_BPR);
	c.optim = RK_OPT_ADAM;
	ASSERT_EQ_INT(rk_trainer_create(&t, m, &s->fit, NULL, NULL, &c), VR_EINVAL);
	rk_model_free(m);
	free_synth(s);
	free(s);
}

/* A step too large for the data (SGD at lr 1e8 with λ 1 multiplies a
 * sampled row by about -1e8) overflows the parameters: the run stops at
 * that epoch with VR_EINVAL and says which; at the default step it runs. */
TEST(divergence_reported)
{
	struct synth *s = calloc(1, sizeof(*s));
	make_synth(s, 5);
	rk_model_dims d;
	rk_model_dims_default(&d, RK_MODEL_BPR, LU, LI, 0);
	rk_model *m;
	ASSERT_OK(rk_model_create(&m, &d));
	rk_model_init(m, 1);
	rk_train_config c;
	rk_train_config_default(&c, RK_MODEL_BPR);
	c.max_epochs = 5;
	c.threads = 1;
	c.lr = 1e8f;
	c.lambda = 1;
	rk_trainer *t;
	rk_train_result r;
	ASSERT_OK(rk_trainer_create(&t, m, &s->fit, s->valid, NULL, &c));
	ASSERT_EQ_INT(rk_trainer_run(t, NULL, NULL, &r), VR_EINVAL);
	ASSERT(r.diverged >= 1 && r.diverged <= 5);
	ASSERT_EQ_INT(r.epochs, r.diverged);
	ASSERT(!rk_all_finite(m->params, m->n_params));
	rk_trainer_free(t);
	rk_model_init(m, 1);
	rk_train_config_default(&c, RK_MODEL_BPR);
	c.max_epochs = 2;
	c.threads = 1;
	ASSERT_OK(rk_trainer_create(&t, m, &s->fit, s->valid, NULL, &c));
	ASSERT_OK(rk_trainer_run(t, NULL, NULL, &r));
	ASSERT_EQ_INT(r.diverged, 0);
	ASSERT(rk_all_finite(m->params, m->n_params));
	rk_trainer_free(t);
	rk_model_free(m);
	free_synth(s);
	free(s);
}

/* ---- the cold-item prior (prior.h) ---- */

/* The reference ridge: standardise in double, form the normal equations
 * and solve them by Gaussian elimination with partial pivoting, then map
 * the weights back to raw features. */
static void ridge_reference(const float *x, const float *y, size_t n, uint32_t p, uint32_t q,
			    double lambda, double *coef, double *b)
{
	double mu[16] = {0}, sd[16] = {0}, ybar[4] = {0}, a[16][16 + 4];
	for (size_t i = 0; i < n; i++) {
		for (uint32_t c = 0; c < p; c++)
			mu[c] += x[i * p + c];
		for (uint32_t c = 0; c < q; c++)
			ybar[c] += y[i * q + c];
	}
	for (uint32_t c = 0; c < p; c++)
		mu[c] /= (double)n;
	for (uint32_t c = 0; c < q; c++)
		ybar[c] /= (double)n;
	for (size_t i = 0; i < n; i++)
		for (uint32_t c = 0; c < p; c++)
			sd[c] += (x[i * p + c] - mu[c]) * (x[i * p + c] - mu[c]) / (double)n;
	for (uint32_t c = 0; c < p; c++)
		sd[c] = sd[c] > 0 ? 1 / sqrt(sd[c]) : 0;
	for (uint32_t r = 0; r < p; r++) {
		for (uint32_t c = 0; c < p + q; c++) {
			double v = 0;
			for (size_t i = 0; i < n; i++) {
				double zr = (x[i * p + r] - mu[r]) * sd[r];
				double o = c < p ? (x[i * p + c] - mu[c]) * sd[c] : y[i * q + c - p] - ybar[c - p];
				v += zr * o;
			}
			a[r][c] = v + (c == r ? lambda : 0);
		}
	}
	for (uint32_t col = 0; col < p; col++) {
		uint32_t piv = col;
		for (uint32_t r = col + 1; r < p; r++)
			if (fabs(a[r][col]) > fabs(a[piv][col]))
				piv = r;
		for (uint32_t c = 0; c < p + q; c++) {
			double t = a[col][c];
			a[col][c] = a[piv][c];
			a[piv][c] = t;
		}
		for (uint32_t r = 0; r < p; r++) {
			if (r == col)
				continue;
			double f = a[r][col] / a[col][col];
			for (uint32_t c = 0; c < p + q; c++)
				a[r][c] -= f * a[col][c];
		}
	}
	for (uint32_t c = 0; c < q; c++) {
		b[c] = ybar[c];
		for (uint32_t r = 0; r < p; r++) {
			coef[r * q + c] = a[r][p + c] / a[r][r] * sd[r];
			b[c] -= coef[r * q + c] * mu[r];
		}
	}
}

TEST(ridge_matches_reference)
{
	enum { N = 80, P = 6, Q = 3 };
	float x[N * P], y[N * Q], coef[P * Q], b[Q];
	double rcoef[P * Q], rb[Q];
	badly_scaled(x, N, P, 0, 5); /* column 6 would be constant: P = 6 keeps 0..5 */
	for (uint32_t i = 0; i < N; i++)
		x[i * P + 3] = 4.0f; /* a constant column gets weight 0 */
	fill_random(y, N * Q, 1.0f, 6);
	for (double lambda = 0.01; lambda < 1000; lambda *= 30) {
		ASSERT_OK(rk_ridge_fit(x, y, NULL, N, P, Q, NULL, lambda, coef, b));
		ridge_reference(x, y, N, P, Q, lambda, rcoef, rb);
		for (int c = 0; c < P * Q; c++)
			ASSERT_MSG(fabs(coef[c] - rcoef[c]) <= 1e-4 * fmax(1, fabs(rcoef[c])),
				   "λ %g coef[%d] %g, reference %g", lambda, c, coef[c], rcoef[c]);
		for (int c = 0; c < Q; c++)
			ASSERT_NEAR(b[c], rb[c], 1e-4);
	}
	/* A mask counts only its rows: the same as the fit of those rows. */
	uint8_t use[N];
	for (int i = 0; i < N; i++)
		use[i] = i % 3 != 0;
	float xs[N * P], ys[N * Q];
	size_t m = 0;
	for (int i = 0; i < N; i++)
		if (use[i]) {
			memcpy(xs + m * P, x + i * P, P * sizeof *x);
			memcpy(ys + m * Q, y + i * Q, Q * sizeof *y);
			m++;
		}
	ASSERT_OK(rk_ridge_fit(x, y, NULL, N, P, Q, use, 2.0, coef, b));
	ridge_reference(xs, ys, m, P, Q, 2.0, rcoef, rb);
	for (int c = 0; c < P * Q; c++)
		ASSERT_NEAR(coef[c], rcoef[c], 1e-4);
	/* Integer weights fit as repeated rows do: row i weighs 1 + i % 3. */
	float w[N], xr[3 * N * P], yr[3 * N * Q];
	size_t nr = 0;
	for (int i = 0; i < N; i++) {
		w[i] = (float)(1 + i % 3);
		for (int c = 0; c <= i % 3; c++, nr++) {
			memcpy(xr + nr * P, x + i * P, P * sizeof *x);
			memcpy(yr + nr * Q, y + i * Q, Q * sizeof *y);
		}
	}
	ASSERT_OK(rk_ridge_fit(x, y, w, N, P, Q, NULL, 3.0, coef, b));
	ridge_reference(xr, yr, nr, P, Q, 3.0, rcoef, rb);
	for (int c = 0; c < P * Q; c++)
		ASSERT_NEAR(coef[c], rcoef[c], 1e-4);
	for (int c = 0; c < Q; c++)
		ASSERT_NEAR(b[c], rb[c], 1e-4);
	memset(use, 0, sizeof use);
	ASSERT_EQ_INT(rk_ridge_fit(x, y, NULL, N, P, Q, use, 1.0, coef, b), VR_EINVAL);
}

/* Targets that are a linear function of the features: the fitted prior
 * predicts a cold item's β and γ from its vector, blends the learned values
 * of warm items by n / (n + RK_PRIOR_BLEND), and serves a new item
 * (index >= n_items) the prediction. BPR gets the warm items' mean. */
TEST(prior_predicts_cold_items_and_blends)
{
	enum { U = 5, I = 400, K = 3, K2 = 4 };
	rk_model_dims d = { RK_MODEL_DVBPR, U, I, K, K2, 0 };
	rk_model *m;
	ASSERT_OK(rk_model_create(&m, &d));
	float phi[(I + 1) * K2], truth[K2 * (1 + K)];
	uint32_t count[I];
	fill_random(phi, (I + 1) * K2, 1.0f, 8);
	fill_random(truth, K2 * (1 + K), 1.0f, 9);
	for (uint32_t i = 0; i < I; i++) {
		count[i] = i % 4 == 0 ? 0 : i % 4;
		for (uint32_t c = 0; c <= K; c++) {
			double v = 0.5 + 0.25 * c;
			for (uint32_t r = 0; r < K2; r++)
				v += phi[i * K2 + r] * truth[r * (1 + K) + c];
			float *dst = c ? &m->gamma_i[i * K + c - 1] : &m->beta_i[i];
			*dst = count[i] ? (float)v : 0.0f; /* cold items: zeros, as trained */
		}
	}
	float before = m->beta_i[1];
	rk_prior_report rep;
	ASSERT_OK(rk_prior_fit(m, phi, I, count, &rep));
	ASSERT_EQ_INT(m->prior_rows, 2 + K2);
	ASSERT_EQ_INT(rep.cold, I / 4);
	ASSERT(rep.r2_beta > 0.99 && rep.r2_gamma > 0.99);
	for (uint32_t i = 0; i < 8; i++) {
		double v = 0.5;
		for (uint32_t r = 0; r < K2; r++)
			v += phi[i * K2 + r] * truth[r * (1 + K)];
		/* Exact targets: the blend of the learned value and the
		 * prediction is the value itself, cold or warm. */
		ASSERT_MSG(fabs(m->beta_i[i] - v) < 0.02, "item %u: β %g, truth %g", i, m->beta_i[i], v);
	}
	ASSERT_NEAR(m->beta_i[1], before, 0.02);
	/* A new item's serving row carries the prediction. */
	float row[1 + K + K2], pred[1 + K];
	uint32_t item = I;
	ASSERT_OK(rk_model_item_rows(m, &item, phi + I * K2, 1, row));
	rk_model_prior_predict(m, phi + I * K2, pred);
	for (int c = 0; c <= K; c++)
		ASSERT_NEAR(row[c], pred[c], 1e-6);
	ASSERT_NEAR(pred[0], m->prior[2 * (1 + K)] * phi[I * K2] + m->prior[3 * (1 + K)] * phi[I * K2 + 1] +
		    m->prior[4 * (1 + K)] * phi[I * K2 + 2] + m->prior[5 * (1 + K)] * phi[I * K2 + 3] +
		    m->prior[1 + K], 1e-5);
	/* The blend: a warm item whose learned β is off by 1 keeps
	 * n / (n + c) of that. */
	m->beta_i[2] += 1.0f;
	float pre = m->beta_i[2];
	ASSERT_OK(rk_prior_fit(m, phi, I, count, NULL));
	double w = count[2] / (count[2] + RK_PRIOR_BLEND);
	ASSERT_NEAR(m->beta_i[2], pre - (1 - w) * 1.0, 0.05);
	rk_model_free(m);

	/* BPR: the interaction-weighted mean of the warm items, cold ones get it. */
	rk_model_dims db = { RK_MODEL_BPR, U, 4, 2, 0, 0 };
	ASSERT_OK(rk_model_create(&m, &db));
	uint32_t c2[4] = { 3, 0, 1, 0 };
	float beta[4] = { 1.0f, 0, 3.0f, 0 };
	memcpy(m->beta_i, beta, sizeof beta);
	ASSERT_OK(rk_prior_fit(m, NULL, 4, c2, &rep));
	ASSERT_EQ_INT(m->prior_rows, 1);
	/* Weighted by interactions: (3 · 1 + 1 · 3) / 4. */
	ASSERT_NEAR(m->prior[0], 1.5, 1e-6);
	ASSERT_NEAR(m->beta_i[1], 1.5, 1e-6);
	ASSERT_NEAR(m->beta_i[0], 0.75 * 1.0 + 0.25 * 1.5, 1e-6);
	uint32_t none[4] = { 0 };
	ASSERT_EQ_INT(rk_prior_fit(m, NULL, 4, none, NULL), VR_EINVAL);
	rk_model_free(m);
}

static const struct vr_test tests[] = {
	T(vbpr_gradients_match_finite_differences),
	T(bpr_and_dvbpr_gradients_match_finite_differences),
	T(serving_rows_fold_the_score),
	T(dvbpr_margin_and_update),
	T(snapshot_round_trip),
	T(model_header_checked_before_allocating),
	T(minibatch_step_equals_reference_vbpr_gathered),
	T(minibatch_step_equals_reference_vbpr_full),
	T(minibatch_step_equals_reference_vbpr_user_side),
	T(minibatch_step_equals_reference_vbpr_blocked),
	T(minibatch_step_equals_reference_adam),
	T(minibatch_step_equals_reference_scaled_features),
	T(feature_scales_standardise_and_fold),
	T(vbpr_learns_whatever_the_feature_scale),
	T(learning_bpr_and_vbpr),
	T(hogwild_vbpr_learns),
	T(deterministic_runs),
	T(progress_and_cancel),
	T(divergence_reported),
	T(ridge_matches_reference),
	T(prior_predicts_cold_items_and_blends),
	{0},
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
