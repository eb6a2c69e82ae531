/* DVBPR's split protocol through featured's real TrainVisual handler on
 * loopback, driven by rankd's client (rankd/dvbpr.h), against a reference
 * loop in this process that does the same steps on one net and one rankd
 * model: same init, same triples, same images. */
#include "dvbpr.h"
#include "featured_client.h"
#include "featured_shards.h"
#include "dvbpr_test.h"
#include "deadline.h"
#include "decode.h"
#include "err.h"
#include "log.h"
#include "model.h"
#include "nn.h"
#include "sampler.h"
#include "train_visual.h"
#include "visrec/v1/featured.pb-c.h"

#include <math.h>
#include <unistd.h>

#define N_ITEMS 10
#define N_USERS 3
#define SIZE 32
#define K2 8
#define NB 6
#define STEPS 4
#define SEED 11
#define LR 0.05f
#define LAMBDA 0.01f

static char tmpdir[64];

struct set {
	char *ids[N_ITEMS];
	uint8_t *jpeg[N_ITEMS];
	size_t len[N_ITEMS];
};

static int set_make(struct set *s)
{
	for (int k = 0; k < N_ITEMS; k++) {
		s->ids[k] = malloc(16);
		snprintf(s->ids[k], 16, "it%02d", k);
		if (!(s->jpeg[k] = dvt_jpeg((unsigned)k, &s->len[k])))
			return -1;
	}
	return 0;
}

static void set_free(struct set *s)
{
	for (int k = 0; k < N_ITEMS; k++) {
		free(s->ids[k]);
		vr_jpeg_free(s->jpeg[k]);
	}
}

/* The reference: one net and one rankd model, the protocol's math inline. */
struct ref {
	nn_backend *b;
	nn_net *net;
	nn_optim *opt;
	uint8_t *pix;    /* N_ITEMS × SIZE² × 3 */
};

static int ref_open(struct ref *r, const struct set *s)
{
	struct nn_net_opts o = { .num_outputs = K2, .input_size = SIZE, .max_batch = 2 * NB };
	struct nn_optim_opts a = { .kind = NN_OPTIM_ADAM, .lr = 1e-3f, .weight_decay = 1e-4f };
	fd_decoder *dec = NULL;
	memset(r, 0, sizeof *r);
	int rc = nn_backend_open("cpu", &r->b);
	if (!rc)
		rc = nn_net_create(r->b, "small", &o, &r->net, NULL, 0);
	if (!rc)
		rc = nn_net_init(r->net, SEED);
	if (!rc)
		rc = nn_optim_create(r->net, &a, &r->opt);
	if (!rc)
		rc = fd_decoder_create(&dec, NULL);
	r->pix = malloc((size_t)N_ITEMS * SIZE * SIZE * 3);
	for (int k = 0; !rc && k < N_ITEMS; k++)
		rc = fd_decode(dec, s->jpeg[k], s->len[k], SIZE, 0, r->pix + (size_t)k * SIZE * SIZE * 3,
			       NULL, NULL, 0);
	fd_decoder_destroy(dec);
	return rc;
}

static void ref_close(struct ref *r)
{
	nn_optim_destroy(r->opt);
	nn_net_destroy(r->net);
	nn_backend_close(r->b);
	free(r->pix);
}

/* One step: returns the summed loss (NAN on failure). */
static double ref_step(struct ref *r, rk_model *m, const uint32_t *u, const uint32_t *i,
		       const uint32_t *j)
{
	const uint8_t *img[2 * NB];
	float theta[NB * K2], margin[NB], phi[2 * NB * K2], dphi[2 * NB * K2], g[NB], dth[NB * K2];
	double total = 0;
	for (int t = 0; t < NB; t++) {
		img[t] = r->pix + (size_t)i[t] * SIZE * SIZE * 3;
		img[NB + t] = r->pix + (size_t)j[t] * SIZE * SIZE * 3;
	}
	rk_model_dvbpr_margins(m, u, i, j, NB, theta, margin);
	if (nn_net_zero_grad(r->net) || nn_net_forward_u8(r->net, img, 2 * NB, 1, phi))
		return NAN;
	for (int t = 0; t < NB; t++) {
		double x = margin[t];
		for (int k = 0; k < K2; k++)
			x += (double)theta[t * K2 + k] * (phi[t * K2 + k] - phi[(NB + t) * K2 + k]);
		total += log1p(exp(-x));
		g[t] = (float)(1 / (1 + exp(x)));
		for (int k = 0; k < K2; k++) {
			dphi[t * K2 + k] = -g[t] * theta[t * K2 + k];
			dphi[(NB + t) * K2 + k] = g[t] * theta[t * K2 + k];
			dth[t * K2 + k] = -g[t] * (phi[t * K2 + k] - phi[(NB + t) * K2 + k]);
		}
	}
	if (nn_net_backward(r->net, dphi, NULL) || nn_optim_step(r->opt))
		return NAN;
	rk_model_dvbpr_update(m, u, i, j, NB, g, dth, LR, LAMBDA);
	return total;
}

static double max_rel_diff(const float *a, const float *b, size_t n)
{
	double worst = 0;
	for (size_t k = 0; k < n; k++) {
		double d = fabs((double)a[k] - b[k]) / (1e-3 + fabs((double)b[k]));
		if (d > worst)
			worst = d;
	}
	return worst;
}

TEST(split_equals_one_process)
{
	struct set s;
	struct fd_proc fp;
	struct ref r;
	rk_model *m = NULL, *mref = NULL;
	rk_dvbpr *d = NULL;
	vr_status st = { 0 };
	char dir[128], path[256];
	snprintf(dir, sizeof dir, "%s/eq", tmpdir);
	ASSERT_OK(set_make(&s));
	ASSERT_OK(dvt_featured_start(&fp, dir, SIZE));
	ASSERT_OK(dvt_put(&fp, s.ids, s.jpeg, s.len, N_ITEMS));
	ASSERT_OK(ref_open(&r, &s));
	rk_model_dims md = { .kind = RK_MODEL_DVBPR, .n_users = N_USERS, .n_items = N_ITEMS, .k = 4,
			     .k2 = K2 };
	ASSERT_OK(rk_model_create(&m, &md));
	rk_model_init(m, 5);
	ASSERT_OK(rk_model_clone(m, &mref));
	vr_channel *ch = dvt_channel(fp.addr);
	rk_dvbpr_opts o = { .arch = "small", .input_size = SIZE, .cnn_lr = 1e-3f, .cnn_wd = 1e-4f,
			    .seed = SEED, .session_id = "eqv", .checkpoint_every = 1000,
			    .item_ids = (const char *const *)s.ids, .n_items = N_ITEMS, .max_batch = NB,
			    .optim = RK_OPT_SGD }; /* the reference steps rankd's half by SGD */
	uint64_t step0 = 99;
	ASSERT_MSG(rk_dvbpr_open(&d, ch, m, &o, &step0, &st) == 0, "open: %s", st.message);
	ASSERT_EQ_INT(step0, 0);
	rk_rng rng;
	rk_rng_seed(&rng, 3, 0);
	for (int step = 0; step < STEPS; step++) {
		uint32_t u[NB], i[NB], j[NB];
		for (int t = 0; t < NB; t++) {
			u[t] = rk_rng_below(&rng, N_USERS);
			i[t] = rk_rng_below(&rng, N_ITEMS);
			j[t] = (i[t] + 1 + rk_rng_below(&rng, N_ITEMS - 1)) % N_ITEMS;
		}
		double loss = 0;
		ASSERT_MSG(rk_dvbpr_step(d, m, u, i, j, NB, LR, LAMBDA, &loss, &st) == 0, "step: %s",
			   st.message);
		double want = ref_step(&r, mref, u, i, j);
		ASSERT_NEAR(loss, want, 1e-4 * (1 + fabs(want)));
	}
	ASSERT_EQ_INT(rk_dvbpr_step_no(d), STEPS);
	/* rankd's half is the same. */
	ASSERT_MSG(max_rel_diff(m->params, mref->params, m->n_params) < 1e-4, "rankd params differ by %g",
		   max_rel_diff(m->params, mref->params, m->n_params));
	/* TrainVisualEmbed gives the reference's evaluation-mode φ. */
	uint32_t all[N_ITEMS];
	float phi[N_ITEMS * K2], want[N_ITEMS * K2];
	const uint8_t *img[N_ITEMS];
	for (int k = 0; k < N_ITEMS; k++) {
		all[k] = (uint32_t)k;
		img[k] = r.pix + (size_t)k * SIZE * SIZE * 3;
	}
	ASSERT_OK(rk_dvbpr_embed(d, all, N_ITEMS, phi, &st));
	ASSERT_OK(nn_net_forward_u8(r.net, img, N_ITEMS, 0, want));
	ASSERT_MSG(max_rel_diff(phi, want, N_ITEMS * K2) < 1e-3, "phi differs by %g",
		   max_rel_diff(phi, want, N_ITEMS * K2));
	/* Finish: featured's new model version holds the reference's weights. */
	uint32_t version = 0;
	uint64_t embedded = 0;
	ASSERT_MSG(rk_dvbpr_finish(d, 1, 0, &version, &embedded, &st) == 0, "finish: %s", st.message);
	ASSERT_EQ_INT(version, 2);
	ASSERT_EQ_INT(embedded, N_ITEMS);
	/* It is live, not active: the active version (VBPR's features) stays. */
	fd_model_info active, v2, live[FD_MAX_LIVE];
	fd_executor_model(fp.svc.ex, &active);
	ASSERT_EQ_INT(active.version, 1);
	ASSERT_EQ_INT(fd_executor_live(fp.svc.ex, live), 1);
	ASSERT_EQ_INT(live[0].version, 2);
	ASSERT_OK(fd_fstore_model_get(fp.svc.fs, 2, &v2));
	ASSERT_STR_EQ(v2.purpose, "embedding");
	ASSERT_EQ_INT(v2.dims, K2);
	snprintf(path, sizeof path, "%s/%s", dir, v2.weights);
	nn_net *got = NULL;
	ASSERT_OK(nn_net_open_file(r.b, path, NULL, &got, NULL, 0));
	size_t np = nn_net_param_count(r.net);
	ASSERT_EQ_INT(nn_net_param_count(got), np);
	float *a = malloc(np * sizeof *a), *b = malloc(np * sizeof *b);
	ASSERT_OK(nn_net_params_get(got, a));
	ASSERT_OK(nn_net_params_get(r.net, b));
	double diff = max_rel_diff(a, b, np);
	fprintf(stderr, "  %zu CNN parameters after %d steps: max relative difference %.3g\n", np,
		STEPS, diff);
	ASSERT_MSG(diff < 1e-4, "CNN params differ by %g", diff);
	free(a);
	free(b);
	nn_net_destroy(got);
	rk_dvbpr_close(d);
	vr_channel_destroy(ch);
	rk_model_free(m);
	rk_model_free(mref);
	ref_close(&r);
	dvt_featured_stop(&fp);
	set_free(&s);
}

/* The vector of item id in version (dims floats into out); 0 or an error. */
static int stored_vec(struct fd_proc *fp, uint32_t version, const char *id, float *out, size_t dims)
{
	vr_txn *txn;
	fd_vec v;
	int rc = vr_store_read_begin(fd_fstore_store(fp->svc.fs), &txn);
	if (!rc && !(rc = fd_fstore_vec_get(fp->svc.fs, txn, version, id, &v)))
		rc = v.dims == dims ? (memcpy(out, v.values, dims * sizeof(float)), 0) : VR_ESHAPE;
	if (txn)
		vr_store_read_end(txn);
	return rc;
}

/* DVBPR over a frozen trunk: featured's active model (mobilenet_v2 at 32
 * px, storing block_10 features) up to block_10, a conv1x1 head trained on
 * the cached activations with steps over 128 triples. Finish assembles
 * trunk + head into version 2, which computes on images exactly what the
 * head computed on cached activations, does not replace the active
 * version and is live: an item put afterwards gets its vector and a
 * REEMBEDDED change of it. The head ends with its L2 normalisation (rankd's
 * default), so every vector, stored or computed by the reopened file, has
 * unit length. A trunk cache over featured's cap is refused, and so is a
 * normalisation without a head. */
TEST(trunk_session_goes_live)
{
	enum { NT = 200, TSTEPS = 3, N = N_ITEMS - 1 };
	struct set s;
	struct fd_proc fp;
	struct ref r;
	rk_model *m = NULL;
	rk_dvbpr *d = NULL;
	vr_status st = { 0 };
	char dir[128], path[256];
	snprintf(dir, sizeof dir, "%s/trunk", tmpdir);
	ASSERT_OK(set_make(&s));
	ASSERT_OK(ref_open(&r, &s));  /* for its decoded images */
	ASSERT_OK(dvt_featured_start_model(&fp, dir, "mobilenet_v2", SIZE, "block_10"));
	ASSERT_OK(dvt_put(&fp, s.ids, s.jpeg, s.len, N));
	rk_model_dims md = { .kind = RK_MODEL_DVBPR, .n_users = N_USERS, .n_items = N, .k = 4,
			     .k2 = K2 };
	ASSERT_OK(rk_model_create(&m, &md));
	rk_model_init(m, 5);
	vr_channel *ch = dvt_channel(fp.addr);
	/* Conv1 at 96 px: 9 items × 32×48×48 floats, 2.7 MB, over a 1 MB cap. */
	fp.svc.max_trunk_cache_mb = 1;
	rk_dvbpr_opts o = { .input_size = 96, .cnn_lr = 1e-2f, .seed = SEED, .session_id = "trunk",
			    .checkpoint_every = 1000, .item_ids = (const char *const *)s.ids,
			    .n_items = N, .max_batch = NT, .trunk_layer = "Conv1_relu", .head_width = 8,
			    .head_norm = 1 };
	ASSERT_EQ_INT(rk_dvbpr_open(&d, ch, m, &o, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(st.message, "--max-trunk-cache-mb");
	o.input_size = 0;
	o.trunk_layer = "block_10";
	o.arch = "alexnet";  /* not the active model's */
	ASSERT_EQ_INT(rk_dvbpr_open(&d, ch, m, &o, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	o.arch = NULL;
	o.head_width = 0;
	ASSERT_EQ_INT(rk_dvbpr_open(&d, ch, m, &o, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(st.message, "head_norm");
	o.head_width = 8;
	ASSERT_MSG(rk_dvbpr_open(&d, ch, m, &o, NULL, &st) == 0, "open: %s", st.message);
	rk_rng rng;
	rk_rng_seed(&rng, 3, 0);
	for (int step = 0; step < TSTEPS; step++) {
		uint32_t u[NT], i[NT], j[NT];
		for (int t = 0; t < NT; t++) {
			u[t] = rk_rng_below(&rng, N_USERS);
			i[t] = rk_rng_below(&rng, N);
			j[t] = (i[t] + 1 + rk_rng_below(&rng, N - 1)) % N;
		}
		double loss = NAN;
		ASSERT_MSG(rk_dvbpr_step(d, m, u, i, j, NT, LR, LAMBDA, &loss, &st) == 0, "step: %s",
			   st.message);
		ASSERT(isfinite(loss) && loss > 0);
	}
	uint32_t all[N];
	float phi[N * K2], want[N * K2];
	const uint8_t *img[N];
	for (int k = 0; k < N; k++) {
		all[k] = (uint32_t)k;
		img[k] = r.pix + (size_t)k * SIZE * SIZE * 3;
	}
	ASSERT_OK(rk_dvbpr_embed(d, all, N, phi, &st));
	uint32_t version = 0;
	uint64_t embedded = 0;
	ASSERT_MSG(rk_dvbpr_finish(d, 1, 0, &version, &embedded, &st) == 0, "finish: %s", st.message);
	ASSERT_EQ_INT(version, 2);
	ASSERT_EQ_INT(embedded, N);
	/* Version 2 on images is the trained head on the cached activations. */
	fd_model_info active, v2, live[FD_MAX_LIVE];
	fd_executor_model(fp.svc.ex, &active);
	ASSERT_EQ_INT(active.version, 1);
	ASSERT_EQ_INT(active.dims, 96);
	ASSERT_EQ_INT(fd_executor_live(fp.svc.ex, live), 1);
	ASSERT_EQ_INT(live[0].version, 2);
	ASSERT_OK(fd_fstore_model_get(fp.svc.fs, 2, &v2));
	ASSERT_EQ_INT(v2.dims, K2);
	snprintf(path, sizeof path, "%s/%s", dir, v2.weights);
	nn_net *got = NULL;
	char err[256] = "";
	ASSERT_MSG(nn_net_open_file(r.b, path, NULL, &got, err, sizeof err) == 0, "%s", err);
	ASSERT_OK(nn_net_forward_u8(got, img, N, 0, want));
	ASSERT_MSG(max_rel_diff(phi, want, N * K2) < 1e-4, "trunk + head on images differs from the "
		   "head on cached activations by %g", max_rel_diff(phi, want, N * K2));
	for (int k = 0; k < N; k++) {
		double norm = 0;
		for (int c = 0; c < K2; c++)
			norm += (double)want[k * K2 + c] * want[k * K2 + c];
		ASSERT_MSG(fabs(norm - 1) < 1e-5, "item %d's vector has squared length %g", k, norm);
	}
	float v[K2];
	ASSERT_OK(stored_vec(&fp, 2, s.ids[0], v, K2));
	ASSERT(max_rel_diff(v, want, K2) < 1e-4);
	/* An item put now: vectors of the active version and of version 2. */
	uint64_t items, seq0;
	ASSERT_OK(fd_fstore_stats(fp.svc.fs, &items, &seq0));
	ASSERT_OK(dvt_put(&fp, s.ids + N, s.jpeg + N, s.len + N, 1));
	float f1[96], last[K2];
	ASSERT_OK(stored_vec(&fp, 1, s.ids[N], f1, 96));
	ASSERT_OK(stored_vec(&fp, 2, s.ids[N], v, K2));
	const uint8_t *one[1] = { r.pix + (size_t)N * SIZE * SIZE * 3 };
	ASSERT_OK(nn_net_forward_u8(got, one, 1, 0, last));
	ASSERT(max_rel_diff(v, last, K2) < 1e-4);
	vr_txn *txn;
	fd_change c1, c2;
	ASSERT_OK(vr_store_read_begin(fd_fstore_store(fp.svc.fs), &txn));
	ASSERT_OK(fd_fstore_change_next(fp.svc.fs, txn, seq0, &c1));
	ASSERT_OK(fd_fstore_change_next(fp.svc.fs, txn, c1.seq, &c2));
	vr_store_read_end(txn);
	ASSERT(c1.kind == FD_ADDED && c1.version == 1);
	ASSERT(c2.kind == FD_REEMBEDDED && c2.version == 2 && c2.id_len == strlen(s.ids[N]));
	/* A restarted featured reopens it as live. */
	rk_dvbpr_close(d);
	vr_channel_destroy(ch);
	ch = NULL;
	dvt_featured_stop(&fp);
	ASSERT_OK(dvt_featured_start_model(&fp, dir, "mobilenet_v2", SIZE, "block_10"));
	ASSERT_EQ_INT(fd_executor_live(fp.svc.ex, live), 1);
	ASSERT_EQ_INT(live[0].version, 2);
	ASSERT_OK(dvt_put(&fp, s.ids, s.jpeg, s.len, 1));   /* replaced: new vectors of both */
	ASSERT_OK(stored_vec(&fp, 2, s.ids[0], v, K2));
	ASSERT(max_rel_diff(v, want, K2) < 1e-4);
	nn_net_destroy(got);
	rk_model_free(m);
	ref_close(&r);
	dvt_featured_stop(&fp);
	set_free(&s);
}

/* A restarted peer is detected: a second session while one is open, a
 * resume with no checkpoint, a session id featured never saw. */
struct by_id {
	char *const *ids;
	float *phi;   /* N_ITEMS × K2, in ids' order */
	int got;
};

static int on_vec(void *ctx, size_t shard, const char *id, const float *values, uint32_t dims,
		  uint32_t version)
{
	struct by_id *b = ctx;
	(void)shard;
	(void)version;
	for (int k = 0; k < N_ITEMS; k++)
		if (!strcmp(b->ids[k], id) && dims == K2) {
			memcpy(b->phi + k * K2, values, K2 * sizeof(float));
			b->got++;
		}
	return 0;
}

/* The net served is the one marked best, not the last: featured keeps the
 * net at mark_best, and Finish with that step re-embeds with it; a step no
 * mark_best kept is refused. rankd's half steps by Adam here (the
 * default). */
TEST(finish_from_marked_best)
{
	struct set s;
	struct fd_proc fp;
	rk_model *m = NULL;
	rk_dvbpr *d = NULL;
	vr_status st = { 0 };
	char dir[128];
	snprintf(dir, sizeof dir, "%s/best", tmpdir);
	ASSERT_OK(set_make(&s));
	ASSERT_OK(dvt_featured_start(&fp, dir, SIZE));
	ASSERT_OK(dvt_put(&fp, s.ids, s.jpeg, s.len, N_ITEMS));
	rk_model_dims md = { .kind = RK_MODEL_DVBPR, .n_users = N_USERS, .n_items = N_ITEMS, .k = 4,
			     .k2 = K2 };
	ASSERT_OK(rk_model_create(&m, &md));
	rk_model_init(m, 5);
	vr_channel *ch = dvt_channel(fp.addr);
	rk_dvbpr_opts o = { .arch = "small", .input_size = SIZE, .cnn_lr = 1e-2f, .seed = SEED,
			    .session_id = "nomark", .checkpoint_every = 1000,
			    .item_ids = (const char *const *)s.ids, .n_items = N_ITEMS, .max_batch = NB,
			    .optim = RK_OPT_ADAM, .adam = { 0.9f, 0.999f, 1e-8f } };
	uint32_t u[NB] = { 0, 1, 2, 0, 1, 2 }, i[NB] = { 0, 1, 2, 3, 4, 5 },
		 j[NB] = { 6, 7, 8, 9, 0, 1 }, all[N_ITEMS], version = 0;
	for (int k = 0; k < N_ITEMS; k++)
		all[k] = (uint32_t)k;
	/* No mark_best, or one of another step: a Finish from a step is
	 * refused (each refusal ends that session). */
	const char *sessions[2] = { "nomark", "wrongstep" }, *why[2] = { "kept no best net",
									  "is of step 1" };
	for (int k = 0; k < 2; k++) {
		o.session_id = sessions[k];
		for (int tries = 0; tries < 100; tries++) { /* featured ends the last session */
			if (!rk_dvbpr_open(&d, ch, m, &o, NULL, &st))
				break;
			usleep(50000);
		}
		ASSERT_MSG(d, "open: %s", st.message);
		ASSERT_OK(rk_dvbpr_step(d, m, u, i, j, NB, 1e-3f, 1e-4f, NULL, &st));
		if (k)
			ASSERT_OK(rk_dvbpr_mark_best(d, NULL, &st));
		ASSERT_EQ_INT(rk_dvbpr_finish(d, 1, 2, &version, NULL, &st), VR_ERPC);
		ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
		ASSERT_CONTAINS(st.message, why[k]);
		rk_dvbpr_close(d);
		d = NULL;
	}
	/* Mark at step 2, train on, Finish from step 2. */
	o.session_id = "marked";
	float best[N_ITEMS * K2], now[N_ITEMS * K2], got[N_ITEMS * K2];
	uint64_t at = 0;
	for (int tries = 0; tries < 100; tries++) { /* featured ends the first session */
		if (!rk_dvbpr_open(&d, ch, m, &o, NULL, &st))
			break;
		usleep(50000);
	}
	ASSERT_MSG(d, "open: %s", st.message);
	for (int k = 0; k < 2; k++)
		ASSERT_OK(rk_dvbpr_step(d, m, u, i, j, NB, 1e-3f, 1e-4f, NULL, &st));
	ASSERT_OK(rk_dvbpr_embed(d, all, N_ITEMS, best, &st));
	ASSERT_OK(rk_dvbpr_mark_best(d, &at, &st));
	ASSERT_EQ_INT(at, 2);
	for (int k = 0; k < 3; k++)
		ASSERT_OK(rk_dvbpr_step(d, m, u, i, j, NB, 1e-3f, 1e-4f, NULL, &st));
	ASSERT_OK(rk_dvbpr_embed(d, all, N_ITEMS, now, &st));
	ASSERT_MSG(max_rel_diff(now, best, N_ITEMS * K2) > 1e-3, "three steps changed no φ");
	ASSERT_EQ_INT(rk_dvbpr_adam_state(d)->t, 5); /* Adam: one step per round trip */
	ASSERT_MSG(rk_dvbpr_finish(d, 1, 2, &version, NULL, &st) == 0, "finish: %s", st.message);
	rk_dvbpr_close(d);
	/* The new version's vectors are the marked net's φ. */
	struct by_id b = { .ids = s.ids, .phi = got };
	uint32_t dims = 0, v = 0;
	vr_shards *fs = NULL;
	char fs_why[256];
	ASSERT_MSG(!vr_shards_open(&fs, fp.addr, NULL, fs_why, sizeof fs_why), "%s", fs_why);
	int grc = vr_shards_get_vectors(fs, version, NULL, 0, on_vec, &b, &dims, &v, 0, &st);
	vr_shards_close(fs);
	ASSERT_MSG(grc == 0, "GetVectors: %s", st.message);
	ASSERT_EQ_INT(v, version);
	ASSERT_EQ_INT(b.got, N_ITEMS);
	ASSERT_MSG(max_rel_diff(got, best, N_ITEMS * K2) < 1e-4, "served φ differs from the marked "
		   "net's by %g (from the last net's by %g)", max_rel_diff(got, best, N_ITEMS * K2),
		   max_rel_diff(got, now, N_ITEMS * K2));
	vr_channel_destroy(ch);
	rk_model_free(m);
	dvt_featured_stop(&fp);
	set_free(&s);
}

TEST(restarted_peer_detected)
{
	struct set s;
	struct fd_proc fp;
	rk_model *m = NULL;
	rk_dvbpr *d = NULL, *d2 = NULL;
	vr_status st = { 0 };
	char dir[128];
	snprintf(dir, sizeof dir, "%s/peer", tmpdir);
	ASSERT_OK(set_make(&s));
	ASSERT_OK(dvt_featured_start(&fp, dir, SIZE));
	ASSERT_OK(dvt_put(&fp, s.ids, s.jpeg, s.len, N_ITEMS));
	rk_model_dims md = { .kind = RK_MODEL_DVBPR, .n_users = N_USERS, .n_items = N_ITEMS, .k = 4,
			     .k2 = K2 };
	ASSERT_OK(rk_model_create(&m, &md));
	rk_model_init(m, 5);
	vr_channel *ch = dvt_channel(fp.addr);
	rk_dvbpr_opts o = { .arch = "small", .input_size = SIZE, .cnn_lr = 1e-3f, .seed = SEED,
			    .session_id = "peer", .checkpoint_every = 1,
			    .item_ids = (const char *const *)s.ids, .n_items = N_ITEMS, .max_batch = NB };
	ASSERT_OK(rk_dvbpr_open(&d, ch, m, &o, NULL, &st));
	ASSERT_EQ_INT(rk_dvbpr_open(&d2, ch, m, &o, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "another TrainVisual session");
	uint32_t u[2] = { 0, 1 }, i[2] = { 0, 1 }, j[2] = { 2, 3 };
	ASSERT_OK(rk_dvbpr_step(d, m, u, i, j, 2, LR, LAMBDA, NULL, &st));
	ASSERT_OK(rk_dvbpr_step(d, m, u, i, j, 2, LR, LAMBDA, NULL, &st));
	rk_dvbpr_close(d); /* rankd goes away after step 2 (checkpointed) */
	d = NULL;
	/* An unknown session cannot resume (once featured has seen the
	 * cancel and ended the first session). */
	o.session_id = "never";
	o.resume = 1;
	for (int tries = 0; tries < 100; tries++) {
		ASSERT_EQ_INT(rk_dvbpr_open(&d, ch, m, &o, NULL, &st), VR_ERPC);
		if (!strstr(st.message, "another TrainVisual session"))
			break;
		usleep(50000);
	}
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "cannot resume session never");
	/* The real one resumes at its step; a step from the past is refused. */
	o.session_id = "peer";
	uint64_t at = 0;
	ASSERT_MSG(rk_dvbpr_open(&d, ch, m, &o, &at, &st) == 0, "resume: %s", st.message);
	ASSERT_EQ_INT(at, 2);
	ASSERT_OK(rk_dvbpr_step(d, m, u, i, j, 2, LR, LAMBDA, NULL, &st));
	ASSERT_EQ_INT(rk_dvbpr_step_no(d), 3);
	/* Cancelled (rankd's Train cancel, from its call's thread): the next
	 * round trip fails CANCELLED at once. */
	rk_dvbpr_cancel(d);
	ASSERT_EQ_INT(rk_dvbpr_step(d, m, u, i, j, 2, LR, LAMBDA, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_CANCELLED);
	rk_dvbpr_close(d);
	/* Cancelled before its Start (the Train cancelled while rankd loads
	 * the interactions): the Start fails CANCELLED and starts nothing. */
	o.session_id = "cancelled";
	o.resume = 0;
	ASSERT_OK(rk_dvbpr_create(&d, m, &o));
	rk_dvbpr_cancel(d);
	ASSERT_EQ_INT(rk_dvbpr_start(d, ch, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_CANCELLED);
	rk_dvbpr_close(d);
	vr_channel_destroy(ch);
	rk_model_free(m);
	dvt_featured_stop(&fp);
	set_free(&s);
}

/* Opens a TrainVisual call on ch and sends the Start of session (small
 * net, K2 outputs, images of size px). */
static int raw_send_start(vr_channel *ch, vr_ccall **cc, const char *session, uint32_t size)
{
	Visrec__V1__TrainVisualStart s = VISREC__V1__TRAIN_VISUAL_START__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	s.arch = "small";
	s.dims = K2;
	s.input_size = size;
	s.learning_rate = 1e-3f;
	s.session_id = (char *)session;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START;
	req.start = &s;
	int rc = vr_ccall_start(cc, ch, "/visrec.v1.Featured/TrainVisual",
				&visrec__v1__train_visual_response__descriptor, 0, NULL);
	return rc ? rc : vr_ccall_send(*cc, &req.base);
}

/* Starts the session "raw" at SIZE px, consuming the Started reply. */
static int raw_start(vr_channel *ch, vr_ccall **cc)
{
	ProtobufCMessage *m = NULL;
	int rc = raw_send_start(ch, cc, "raw", SIZE);
	if (!rc && !(rc = vr_ccall_recv(*cc, &m)))
		protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

/* Sends req on a started call, reads one reply into *m (freed by the
 * caller; NULL when none), half-closes and takes the status: featured's
 * handler returns before the status. */
static int raw_exchange(vr_ccall *cc, int rc, const Visrec__V1__TrainVisualRequest *req,
			ProtobufCMessage **m, vr_status *st)
{
	*m = NULL;
	if (!rc)
		rc = vr_ccall_send(cc, &req->base);
	if (!rc)
		rc = vr_ccall_recv(cc, m);
	if (!rc)
		rc = vr_ccall_close_send(cc);
	if (cc && vr_ccall_finish(cc, st) && !rc)
		rc = VR_ERPC;
	return rc;
}

/* featured checks every step against its session: the step number
 * (a peer that restarted and lost count), the session id and item ids. */
static int raw_step(vr_channel *ch, uint64_t step, const char *session, char *pos, vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	Visrec__V1__TrainVisualStep p = VISREC__V1__TRAIN_VISUAL_STEP__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	char *neg[1] = { "it01" }, *posv[1] = { pos };
	float theta[K2] = { 0.5f }, margin[1] = { 0 };
	int rc = raw_start(ch, &cc);
	p.session_id = (char *)session;
	p.step = step;
	p.n_pos_items = p.n_neg_items = p.n_margin = 1;
	p.pos_items = posv;
	p.neg_items = neg;
	p.margin = margin;
	p.n_theta = K2;
	p.theta = theta;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_STEP;
	req.step = &p;
	rc = raw_exchange(cc, rc, &req, &m, st);
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

/* Start, then one Embed of n ids for session; *dims gets the reply's dims
 * (0 when there was none). */
static int raw_embed(vr_channel *ch, const char *session, char **ids, size_t n, uint32_t *dims,
		     vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	Visrec__V1__TrainVisualEmbed e = VISREC__V1__TRAIN_VISUAL_EMBED__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	int rc = raw_start(ch, &cc);
	*dims = 0;
	e.session_id = (char *)session;
	e.n_items = n;
	e.items = ids;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_EMBED;
	req.embed = &e;
	rc = raw_exchange(cc, rc, &req, &m, st);
	if (m) {
		const Visrec__V1__TrainVisualResponse *r = (const void *)m;
		if (r->msg_case == VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_EMBEDDED &&
		    r->embedded->n_values == n * r->embedded->dims)
			*dims = r->embedded->dims;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	return rc;
}

TEST(step_checks)
{
	struct set s;
	struct fd_proc fp;
	vr_status st = { 0 };
	char dir[128];
	snprintf(dir, sizeof dir, "%s/checks", tmpdir);
	ASSERT_OK(set_make(&s));
	ASSERT_OK(dvt_featured_start(&fp, dir, SIZE));
	ASSERT_OK(dvt_put(&fp, s.ids, s.jpeg, s.len, N_ITEMS));
	vr_channel *ch = dvt_channel(fp.addr);
	ASSERT_OK(raw_step(ch, 1, "raw", "it00", &st)); /* the right one works */
	ASSERT_NE_INT(raw_step(ch, 2, "raw", "it00", &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "step 2 out of order: session raw is at step 0");
	ASSERT_NE_INT(raw_step(ch, 1, "other", "it00", &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "session \"other\"");
	ASSERT_NE_INT(raw_step(ch, 1, "raw", "nope", &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_NOT_FOUND);
	ASSERT_CONTAINS(st.message, "\"nope\"");
	/* Step 0 is no embed request any more: only TrainVisualEmbed is. */
	ASSERT_NE_INT(raw_step(ch, 0, "raw", "it00", &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "step 0 out of order");
	uint32_t dims = 0;
	char *some[2] = { "it01", "it02" }, *bad[2] = { "it01", "nope" };
	char *many[FD_TV_MAX_TRIPLES + 1];
	for (int k = 0; k <= FD_TV_MAX_TRIPLES; k++)
		many[k] = "it00";
	ASSERT_OK(raw_embed(ch, "raw", some, 2, &dims, &st));
	ASSERT_EQ_INT(dims, K2);
	ASSERT_NE_INT(raw_embed(ch, "other", some, 2, &dims, &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st.message, "embed for session \"other\"");
	ASSERT_NE_INT(raw_embed(ch, "raw", bad, 2, &dims, &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_NOT_FOUND);
	ASSERT_NE_INT(raw_embed(ch, "raw", some, 0, &dims, &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_NE_INT(raw_embed(ch, "raw", many, FD_TV_MAX_TRIPLES + 1, &dims, &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_EQ_INT(dims, 0);
	vr_channel_destroy(ch);
	dvt_featured_stop(&fp);
	set_free(&s);
}

/* Start decodes every stored image into its cache. It reads the store in
 * short read transactions, so a write that must grow the map meanwhile
 * waits for one chunk of the cache, not for all of it (store.h: a read
 * transaction holds off a map resize). Both times are taken in this run,
 * so a slow machine slows both. */
#define GROW_ITEMS 400
#define GROW_SIZE 256

struct big_put {
	vr_dbi db;
	uint64_t key;
	size_t len;
};

static int put_big(vr_txn *txn, void *arg)
{
	struct big_put *b = arg;
	void *v;
	int rc = vr_put_reserve(txn, b->db, &b->key, sizeof b->key, b->len, &v);
	if (!rc)
		memset(v, 7, b->len);
	return rc;
}

static int nothing(fd_executor *ex, void *arg)
{
	(void)ex;
	(void)arg;
	return 0;
}

TEST(start_lets_the_map_grow)
{
	struct fd_proc fp;
	char dir[128], *ids[GROW_ITEMS];
	uint8_t *jpeg[GROW_ITEMS];
	size_t len[GROW_ITEMS], one_len;
	snprintf(dir, sizeof dir, "%s/grow", tmpdir);
	uint8_t *one = fixture_jpeg(800, 800, 3, VR_SUBSAMP_444, 90, &one_len);
	ASSERT(one);
	for (int k = 0; k < GROW_ITEMS; k++) {
		ids[k] = malloc(16);
		snprintf(ids[k], 16, "g%04d", k);
		jpeg[k] = one;
		len[k] = one_len;
	}
	ASSERT_OK(dvt_featured_start(&fp, dir, SIZE));
	ASSERT_OK(dvt_put(&fp, ids, jpeg, len, GROW_ITEMS));
	/* Fill the map to 2 MiB of its end, so that 3 MiB more must grow it. */
	struct big_put b = { .key = 1 };
	ASSERT_OK(vr_store_dbi(fp.st, "grow", VR_DB_INTEGERKEY, &b.db));
	ASSERT(vr_store_map_bytes(fp.st) > vr_store_used_bytes(fp.st) + (4 << 20));
	b.len = vr_store_map_bytes(fp.st) - vr_store_used_bytes(fp.st) - (2 << 20);
	ASSERT_OK(vr_store_write(fp.st, put_big, &b));
	unsigned grown = vr_store_grow_count(fp.st);
	b.key = 2;
	b.len = 3 << 20;

	vr_channel *ch = dvt_channel(fp.addr);
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	ASSERT_OK(raw_send_start(ch, &cc, "grow", GROW_SIZE));
	/* Start builds its net on the executor, then the cache: once a task
	 * queued behind the net's has run, the cache build is under way. */
	usleep(50 * 1000);
	ASSERT_OK(fd_executor_call(fp.svc.ex, nothing, NULL));
	usleep(100 * 1000);
	double t0 = vr_now_s();
	ASSERT_OK(vr_store_write(fp.st, put_big, &b));
	double wrote = vr_now_s() - t0;
	ASSERT_OK(vr_ccall_recv(cc, &m));
	double started = vr_now_s() - t0;
	ASSERT(m);
	protobuf_c_message_free_unpacked(m, NULL);
	ASSERT(vr_store_grow_count(fp.st) > grown);
	fprintf(stderr, "  growing write %.3f s, Start answered %.3f s after it began\n", wrote,
		started);
	ASSERT_MSG(started > 0.2, "the cache build took %.3f s: too short to tell a long read "
		   "transaction from short ones", started);
	ASSERT_MSG(wrote < started / 2, "the growing write waited %.3f s of the %.3f s Start took",
		   wrote, started);
	vr_status st = { 0 };
	ASSERT_OK(vr_ccall_close_send(cc));
	vr_ccall_finish(cc, &st);
	vr_channel_destroy(ch);
	dvt_featured_stop(&fp);
	for (int k = 0; k < GROW_ITEMS; k++)
		free(ids[k]);
	vr_jpeg_free(one);
}

static const struct vr_test tests[] = {
	T(split_equals_one_process), T(trunk_session_goes_live), T(restarted_peer_detected),
	T(step_checks), T(finish_from_marked_best), T(start_lets_the_map_grow), { 0 },
};

int main(int argc, char **argv)
{
	vr_log_set_level(VR_LOG_WARN);
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/vr-dvbpr-XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
