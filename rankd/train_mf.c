/* train_mf: the BPR and VBPR run (rk_trainer_run on the training
 * thread; trainer.c is its math), and the steps every run takes, DVBPR's
 * too (training_priv.h): featured's vectors, the interactions and their
 * split, and serving the trained model. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "err.h"
#include "log.h"
#include "prior.h"
#include "training_priv.h"

/* ---- featured's vectors --------------------------------------------------- */

#define GET_ALL_MS 600000 /* deadline of GetVectors(all) per shard: a stalled shard ends it */

static int on_vector(void *ctx, size_t shard, const char *id, const float *values,
		     uint32_t dims, uint32_t version)
{
	struct fetch *f = ctx;
	(void)shard;
	rk_service *svc = f->job->svc;
	uint32_t i;
	if (rk__cancelled(f->job))
		return VR_ECANCELLED;
	size_t len = strlen(id);
	pthread_rwlock_rdlock(&svc->ix_lock);
	int rc = rk_items_find(svc->ix, id, len, &i);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc == VR_ENOTFOUND) {
		pthread_rwlock_wrlock(&svc->ix_lock);
		rc = rk_items_intern(svc->ix, id, len, &i);
		pthread_rwlock_unlock(&svc->ix_lock);
	}
	if (rc == VR_EINVAL) {
		char why[VR_ID_WHY], esc[64];
		vr_id_check(id, len, why, sizeof why);
		VR_WARN("featured's item id \"%s\" %s; its vector is skipped",
			vr_id_escape(esc, sizeof esc, id, len), why);
		return 0;
	}
	if (rc)
		return rc;
	f->dims = dims;
	if (i >= f->cap) {
		size_t cap = f->cap ? f->cap : 1024;
		while (cap <= i)
			cap *= 2;
		float *g = realloc(f->feats, cap * dims * sizeof(float));
		if (!g)
			return VR_ENOMEM;
		memset(g + f->cap * dims, 0, (cap - f->cap) * dims * sizeof(float));
		f->feats = g;
		f->cap = cap;
	}
	memcpy(f->feats + (size_t)i * dims, values, (size_t)dims * sizeof(float));
	if (i + 1 > f->rows)
		f->rows = i + 1;
	f->vectors++;
	return 0;
}

/* Fetches every vector of featured's model version want (0: its active
 * one) into f (rows indexed by item index, interning ids featured knows
 * and rankd does not), the version into *version and featured's feed
 * positions before the fetch into f->base_seq (every shard must answer:
 * the vectors come from all of them). */
int rk__fetch_vectors(struct rk_train_job *job, struct fetch *f, uint32_t want,
		      uint32_t *version)
{
	rk_service *svc = job->svc;
	vr_status st = { 0 };
	if (!svc->shards)
		return rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
				"%s needs item vectors from featured, and rankd runs without one (--featured)",
				rk__kind_name(job->kind));
	/* Every shard first, so that one that is down is named before
	 * anything is fetched; then the vectors of all of them at once. */
	int rc = rk_service_feeds_head(svc, f->base_seq, &st);
	if (rc == VR_ESTATE)
		return rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION, "%s", st.message);
	if (rc == VR_ERPC)
		return rk__fail(job, GRPC_STATUS_UNAVAILABLE, "cannot fetch item vectors from featured "
				"at %s (%s needs every shard's): %s; Train again when it is back",
				svc->featured_addr, rk__kind_name(job->kind), st.message);
	f->have_base = !rc;
	if (!rc)
		rc = vr_shards_get_vectors(svc->shards, want, NULL, 0, on_vector, f, &f->dims, version,
					   GET_ALL_MS, &st);
	if (rc == VR_ECANCELLED)
		return rk__fail(job, GRPC_STATUS_CANCELLED, "cancelled while fetching vectors");
	if (rc == VR_ERPC && st.code == GRPC_STATUS_NOT_FOUND && want)
		return rk__fail(job, GRPC_STATUS_NOT_FOUND,
				"featured at %s has no model version %u (feature_version): %s; its Info "
				"lists the versions it holds", svc->featured_addr, want, st.message);
	if (rc == VR_ERPC)
		return rk__fail(job, GRPC_STATUS_UNAVAILABLE,
				"cannot fetch item vectors from featured at %s (%s needs them): %s%s%s",
				svc->featured_addr, rk__kind_name(job->kind), vr_status_name(st.code), st.message[0] ? ": " : "", st.message);
	if (rc)
		return rk__fail(job, vr_status_from_rc(rc), "fetching item vectors from featured failed: %s%s%s",
				vr_strerror(rc), st.message[0] ? ": " : "", st.message);
	pthread_rwlock_wrlock(&svc->ix_lock);
	rc = rk_interactions_flush(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		return rk__fail(job, vr_status_from_rc(rc), "cannot store featured's item ids: %s%s%s",
				vr_strerror(rc), vr_store_last_error()[0] ? ": " : "", vr_store_last_error());
	if (!f->vectors || !f->dims)
		return rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
				"featured at %s holds no item vectors yet; put item images with PutItems "
				"before training %s", svc->featured_addr, rk__kind_name(job->kind));
	VR_INFO("Train %s: %" PRIu64 " vectors of %u floats (featured model version %u, from %zu "
		"shard(s))", rk__kind_name(job->kind), f->vectors, f->dims, *version, svc->n_feeds);
	return 0;
}

/* ---- the run ---------------------------------------------------------------- */

/* Logs how far featured's vectors spread per dimension (the inverse of the
 * scales, so the operator sees what the trainer compensated for). */
static void log_spread(const float *scale, uint32_t dims)
{
	double ss = 0, lo = INFINITY, hi = 0, root = sqrt((double)dims);
	for (uint32_t r = 0; r < dims; r++) {
		double sd = 1.0 / (scale[r] * root);
		ss += sd * sd;
		lo = sd < lo ? sd : lo;
		hi = sd > hi ? sd : hi;
	}
	VR_INFO("Train VBPR: features scaled to unit spread per item; their spread per dimension "
		"was %.3g rms (%.3g to %.3g)", sqrt(ss / dims), lo, hi);
}

/* Folds the trained model (taken from *modelp, also on failure) and its
 * item vectors (feats, n_rows = the model's items; NULL for BPR) into the
 * serving item matrix, snapshots both and serves them. feats are the
 * vectors as the trainer saw them: scaled by scale (F values) when scale is
 * not NULL, in which case the model is folded (rk_model_fold_scales) after
 * the item matrix is made and before it is stored, so the snapshot and
 * serving take featured's vectors as they are. all's arrays are taken
 * too.
 * *version gets the snapshot's version. GRPC_STATUS_OK or the code, with
 * the reason in job->msg. */
int rk__serve_model(struct rk_train_job *job, rk_model **modelp, const float *feats,
		    const float *scale, uint32_t n_rows, uint32_t fversion, rk_csr *all,
		    const rk_csr *on, const uint64_t *base_seq, uint64_t *version)
{
	rk_service *svc = job->svc;
	rk_model *model = *modelp;
	struct rk_index *index = NULL;
	float *rows = NULL;
	uint32_t *count = NULL;
	rk_served *s = NULL;
	uint64_t pairs = on->nnz;
	int rc;
	*modelp = NULL;
	uint32_t dim = rk_model_dim(model);
	/* The cold-item prior (prior.h), on the features as the trainer saw
	 * them: folded with the model below. */
	if (!(count = calloc((size_t)on->n_items + 1, sizeof *count))) {
		rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the item counts");
		goto leave;
	}
	rk_csr_item_counts(on, count);
	rk_prior_report pr;
	double t0 = vr_now_s();
	rc = rk_prior_fit(model, feats, n_rows < on->n_items ? n_rows : on->n_items, count, &pr);
	if (rc == VR_ENOMEM) {
		rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory fitting the cold-item prior");
		goto leave;
	}
	if (rc)
		VR_WARN("Train %s: no cold-item prior (%s): cold items are ranked by their visual terms alone",
			rk__kind_name(job->kind), vr_strerror(rc));
	else if (model->prior_rows > 1)
		VR_INFO("Train %s: cold-item prior fitted on %u warm items in %.2f s (ridge λ %.3g, "
			"held-out R² of β %.3f, of γ %.3f); %u cold items get its prediction",
			rk__kind_name(job->kind), pr.warm, vr_now_s() - t0, pr.lambda, pr.r2_beta, pr.r2_gamma,
			pr.cold);
	else
		VR_INFO("Train %s: cold-item prior = the interaction-weighted mean of %u warm items (β %.4f); %u cold items get it",
			rk__kind_name(job->kind), pr.warm, (double)model->prior[0], pr.cold);
	if (!(rows = malloc(((size_t)n_rows ? n_rows : 1) * dim * sizeof(float)))) {
		rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the item matrix");
		goto leave;
	}
	if ((rc = rk_model_item_rows(model, NULL, feats, n_rows, rows)) ||
	    (rc = rk_index_create(dim, NULL, &index)) ||
	    (n_rows && (rc = rk_index_append(index, rows, n_rows, NULL)))) {
		rk__fail(job, vr_status_from_rc(rc), "cannot build the item matrix: %s", vr_strerror(rc));
		goto leave;
	}
	if (scale)
		rk_model_fold_scales(model, scale);
	rk_snap_meta meta = { .kind = job->kind, .n_rows = n_rows, .dim = dim,
			      .feature_dims = rk_model_feature_dims(model), .feature_version = fversion,
			      .use_all = (uint32_t)job->use_all, .created_unix = rk__unix_now(),
			      .trained_pairs = pairs };
	if ((rc = rk_snap_next_version(&svc->snap, &meta.version)) ||
	    (rc = rk_snap_save(&svc->snap, model, rows, &meta))) {
		rk__fail(job, vr_status_from_rc(rc), "cannot store the model snapshot: %s%s%s", vr_strerror(rc),
			 vr_store_last_error()[0] ? ": " : "", vr_store_last_error());
		goto leave;
	}
	model->version = meta.version;
	rk_served_info info = { .version = meta.version, .feature_dims = meta.feature_dims,
				.feature_version = fversion, .use_all = job->use_all,
				.created_unix = meta.created_unix };
	rc = rk_served_create(&s, model, index, all, &info);
	model = NULL;
	index = NULL;
	if (rc) {
		rk__fail(job, vr_status_from_rc(rc), "cannot prepare the model for serving: %s", vr_strerror(rc));
		goto leave;
	}
	if ((rc = rk_service_publish(svc, s, base_seq))) {
		rk__fail(job, GRPC_STATUS_INTERNAL, "cannot switch to the new model: %s", vr_strerror(rc));
		goto leave;
	}
	*version = meta.version;
	job->code = GRPC_STATUS_OK;
leave:
	rk_model_free(model);
	rk_index_destroy(index);
	free(rows);
	free(count);
	return job->code;
}

/* The interactions as a CSR in sp->all (taken under the lock) and, unless
 * the job uses them all, each user's last item held out for testing and
 * the one before for validation (sp->test, sp->valid), leaving sp->fit the
 * part to fit; sp->on points to it (to sp->all with use_all). sp starts
 * zeroed and is freed by rk__split_free, also on failure.
 * GRPC_STATUS_OK or the code, with the reason in job->msg. */
int rk__load_interactions(struct rk_train_job *job, struct split *sp)
{
	rk_service *svc = job->svc;
	pthread_rwlock_rdlock(&svc->ix_lock);
	int rc = rk_interactions_csr(svc->ix, &sp->all);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		return rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot index the interactions: %s",
				vr_strerror(rc));
	if (!sp->all.nnz)
		return rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
				"no interactions stored yet; call AddInteractions first");
	sp->on = &sp->all;
	if (job->use_all)
		return GRPC_STATUS_OK;
	sp->test = malloc(((size_t)sp->all.n_users + 1) * sizeof *sp->test);
	sp->valid = malloc(((size_t)sp->all.n_users + 1) * sizeof *sp->valid);
	if (!sp->test || !sp->valid || rk_split_last(&sp->all, &sp->train, sp->test) ||
	    rk_split_last(&sp->train, &sp->fit, sp->valid))
		return rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED,
				"out of memory splitting the interactions");
	sp->on = &sp->fit;
	return GRPC_STATUS_OK;
}

void rk__split_free(struct split *sp)
{
	free(sp->test);
	free(sp->valid);
	rk_csr_free(&sp->fit);
	rk_csr_free(&sp->train);
	rk_csr_free(&sp->all);
}

/* Gives f a zero row for every item index below n_items that featured
 * sent no vector for (items known here only). */
int rk__pad_vectors(struct rk_train_job *job, struct fetch *f, uint32_t n_items)
{
	if (f->cap >= n_items)
		return GRPC_STATUS_OK;
	float *g = realloc(f->feats, (size_t)n_items * f->dims * sizeof(float));
	if (!g)
		return rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the item vectors");
	memset(g + f->cap * f->dims, 0, (n_items - f->cap) * f->dims * sizeof(float));
	f->feats = g;
	f->cap = n_items;
	return GRPC_STATUS_OK;
}

int rk__run_mf(struct rk_train_job *job)
{
	struct fetch f = { .job = job };
	struct split sp = { 0 };
	uint32_t fversion = 0;
	float *scale = NULL;
	rk_model *model = NULL;
	rk_trainer *t = NULL;
	rk_train_result res = { 0 };
	int rc;

	const rk_csr *on = NULL;
	if (job->kind == RK_MODEL_BPR && job->svc->featured) {
		pthread_rwlock_rdlock(&job->svc->ix_lock);
		uint64_t stored = rk_interactions_count(job->svc->ix);
		pthread_rwlock_unlock(&job->svc->ix_lock);
		if (!stored) { /* before featured's ids: a refused Train changes nothing */
			rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
				 "no interactions stored yet; call AddInteractions first");
			goto leave;
		}
		/* BPR ranks every item featured holds too (cold ones by the
		 * prior), whatever the change feed brought in so far: the same
		 * data, flags and seed give the same catalogue and model. Only
		 * the ids are kept. */
		if (rk__fetch_vectors(job, &f, 0, &fversion)) {
			if (job->code == GRPC_STATUS_CANCELLED)
				goto leave;
			VR_WARN("Train BPR: %s; training on the items rankd knows", job->msg);
			job->code = GRPC_STATUS_OK;
			job->msg[0] = 0;
		}
		free(f.feats);
		f = (struct fetch){ .job = job };
		fversion = 0;
	}
	if ((job->kind == RK_MODEL_VBPR &&
	     rk__fetch_vectors(job, &f, job->feature_version, &fversion)) ||
	    rk__load_interactions(job, &sp) ||
	    (f.feats && rk__pad_vectors(job, &f, sp.all.n_items)))
		goto leave;
	on = sp.on;
	if (f.feats) {
		if (!(scale = malloc((size_t)f.dims * sizeof *scale))) {
			rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the feature scales");
			goto leave;
		}
		if ((rc = rk_feature_scales(f.feats, sp.all.n_items, f.dims, scale))) {
			rk__fail(job, rc == VR_EINVAL ? GRPC_STATUS_FAILED_PRECONDITION : vr_status_from_rc(rc),
				 "cannot scale featured's item vectors (%s): every vector is all zeros",
				 vr_strerror(rc));
			goto leave;
		}
		log_spread(scale, f.dims);
		rk_features_scale(f.feats, sp.all.n_items, f.dims, scale);
	}
	rk_model_dims d;
	rk_model_dims_default(&d, job->kind, sp.all.n_users, sp.all.n_items, f.dims);
	if (job->k)
		d.k = job->k;
	if (job->k2 && job->kind != RK_MODEL_BPR)
		d.k2 = job->k2;
	if ((rc = rk_model_create(&model, &d))) {
		rk__fail(job, rc == VR_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
			 "cannot create a %s model of %u users × %u items (K %u, K' %u, F %u): %s",
			 rk__kind_name(job->kind), d.n_users, d.n_items, d.k, d.k2, d.f, vr_strerror(rc));
		goto leave;
	}
	rk_model_init(model, job->cfg.seed);
	rc = rk_trainer_create(&t, model, on, sp.valid, f.feats, &job->cfg);
	if (rc == VR_ENOTFOUND) {
		rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			 "no user has both a training item and an item to contrast it with; add interactions "
			 "(each user's last item is held out for testing unless use_all_interactions)");
		goto leave;
	}
	if (rc) {
		rk__fail(job, rc == VR_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : vr_status_from_rc(rc),
			 "cannot set up training: %s", vr_strerror(rc));
		goto leave;
	}
	pthread_mutex_lock(&job->mu);
	job->trainer = t;
	if (job->cancel)
		rk_trainer_cancel(t);
	pthread_mutex_unlock(&job->mu);
	rc = rk_trainer_run(t, rk__on_progress, job, &res);
	pthread_mutex_lock(&job->mu);
	job->trainer = NULL;
	pthread_mutex_unlock(&job->mu);
	if (rc == VR_ECANCELLED) {
		rk__fail(job, GRPC_STATUS_CANCELLED, "cancelled");
		goto leave;
	}
	if (res.diverged) {
		rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			 "%s diverged in epoch %u: rankd's parameters are no longer finite; train "
			 "again with a smaller lr (%g)", rk__kind_name(job->kind), res.diverged,
			 (double)job->cfg.lr);
		goto leave;
	}
	if (rc) {
		rk__fail(job, vr_status_from_rc(rc), "training failed: %s", vr_strerror(rc));
		goto leave;
	}
	uint64_t version = 0;
	if (rk__serve_model(job, &model, f.feats, scale, sp.all.n_items, fversion, &sp.all, on,
			    f.have_base ? f.base_seq : NULL, &version))
		goto leave;
	rk_progress last = { .epoch = res.epochs, .max_epochs = job->cfg.max_epochs,
			     .loss = res.loss, .val_auc = res.best_auc, .best_auc = res.best_auc, .best_epoch = res.best_epoch,
			     .lr = rk_trainer_lr(t), .elapsed_s = res.seconds,
			     .triples_per_s = res.seconds > 0 ? res.triples / res.seconds : 0 };
	struct progress done = { .p = last, .state = res.stopped_early ? "stopped_early" : "finished",
				 .done = 1, .version = version };
	rk__push(job, &done);
	VR_INFO("Train %s done: model v%" PRIu64 " (best epoch %u of %u, validation AUC %.4f, %.1f s) is served",
		rk__kind_name(job->kind), version, res.best_epoch, res.epochs, res.best_auc, res.seconds);
	job->code = GRPC_STATUS_OK;
leave:
	rk_trainer_free(t);
	rk_model_free(model);
	free(f.feats);
	free(scale);
	rk__split_free(&sp);
	return job->code;
}
