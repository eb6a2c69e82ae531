/* training: the Train handler and the training run behind it.
 *
 * DESIGN
 * Threads. The Train call runs on a stream thread of the server (never a
 * worker). It checks the request, claims the service's one training slot
 * (a second Train while one runs is refused with FAILED_PRECONDITION, not
 * queued: the caller sees which run holds it and can wait or cancel it)
 * and starts a training thread, which does every slow step: featured's
 * vectors (VBPR), the CSR and split, the trainer (with its own threads),
 * the item matrix, the LMDB snapshot and the swap. The training thread
 * lowers its scheduling priority (nice 10) before the trainer starts, and
 * the trainer's threads inherit it, so serving on the same cores keeps
 * its latency while a run takes the idle cycles.
 * Work. The training thread queues progress (one TrainProgress per epoch,
 * then the final one) in the job; the call's thread sends them in order
 * and watches the call every 50 ms.
 * End. The run ends by itself (the final progress says done, with the new
 * model_version), fails (the call ends with the cause), or is cancelled:
 * when the client cancels the call, or the server stops, the call's thread
 * cancels the trainer (it stops within one step) and joins the training
 * thread. A cancelled run's model is discarded and the served model stays
 * as it was; a run keeps nothing half-done: the swap is its last step.
 * The call's thread always joins the training thread before it frees the
 * job and frees the slot.
 * DVBPR. The training thread drives featured's TrainVisual stream itself
 * (run_dvbpr, through rankd/dvbpr.h) instead of rk_trainer_run: it samples
 * each step's triples, sends them, applies featured's answer to θ, γ, β by
 * Adam (or SGD), asks featured for every item's φ at each epoch's end
 * (validation AUC on the held-out items), and after an epoch better than
 * every earlier one keeps a copy of its half and has featured keep the
 * net (mark_best); patience epochs without gain stop the run. It
 * checkpoints its half, the best epoch's and Adam's state in the "models"
 * db at the steps featured checkpoints its net, and at the end has
 * featured re-embed every item with the best epoch's net as a new model
 * version, fetches that version's vectors (not featured's active
 * version's: the model keeps the version it was trained with) and serves
 * β_i + γ_u·γ_i + θ_u·φ_i of the best epoch. A failure of featured ends
 * the call with its status and the step of the last checkpoint;
 * TrainRequest.resume continues from there. */
#include "service.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "err.h"
#include "log.h"
#include "dvbpr.h"
#include "prior.h"
#include "trainer.h"
#include "visrec/v1/rankd.pb-c.h"

#define QUEUE 64            /* progress messages waiting to be sent */
#define POLL_MS 50          /* how often the call's thread looks at the call */
#define TRAIN_NICE 10
#define MAX_DIMS 4096
#define MAX_EPOCHS 100000
#define MAX_BATCH (1u << 22)
#define MAX_THREADS 256

/* DVBPR's settings beyond rk_train_config (TrainRequest fields 16-21). */
struct dvbpr_settings {
	char arch[32];
	uint32_t input_size;
	float cnn_lr, cnn_wd;
	int no_latent, resume;
	uint32_t checkpoint_every;
	char trunk_layer[32];
	uint32_t head_width;
};

struct progress {
	rk_progress p;
	const char *state;
	int done;
	uint64_t version;
};

struct rk_train_job {
	rk_service *svc;
	/* settings (fixed before the thread starts) */
	enum rk_model_kind kind;
	uint32_t k, k2;
	int use_all;
	uint32_t feature_version;  /* VBPR: featured's version to train on; 0 = active */
	rk_train_config cfg;
	struct dvbpr_settings dv;  /* DVBPR only */
	pthread_t tid;
	/* shared with the call's thread, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	rk_trainer *trainer;   /* while rk_trainer_run runs */
	int cancel, finished;
	struct progress q[QUEUE];
	unsigned head, n;
	uint32_t epoch;
	int code;              /* grpc status of the run */
	char msg[512];
};

static const char *kind_name(int kind)
{
	return kind == RK_MODEL_BPR ? "BPR" : kind == RK_MODEL_VBPR ? "VBPR" :
	       kind == RK_MODEL_DVBPR ? "DVBPR" : "?";
}

static void push(struct rk_train_job *job, const struct progress *p)
{
	pthread_mutex_lock(&job->mu);
	if (job->n == QUEUE) { /* the client reads slowly: keep the newest */
		job->head = (job->head + 1) % QUEUE;
		job->n--;
	}
	job->q[(job->head + job->n) % QUEUE] = *p;
	job->n++;
	if (p->p.epoch)
		job->epoch = p->p.epoch;
	if (!p->done) /* the final summary carries no loss */
		rk_metrics_progress(&p->p);
	pthread_cond_broadcast(&job->cv);
	pthread_mutex_unlock(&job->mu);
}

static int cancelled(struct rk_train_job *job)
{
	pthread_mutex_lock(&job->mu);
	int c = job->cancel;
	pthread_mutex_unlock(&job->mu);
	return c;
}

static int fail(struct rk_train_job *job, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct rk_train_job *job, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(job->msg, sizeof job->msg, fmt, ap);
	va_end(ap);
	job->code = code;
	return code;
}

static int on_progress(void *ctx, const rk_progress *p)
{
	struct rk_train_job *job = ctx;
	struct progress m = { .p = *p, .state = "training" };
	push(job, &m);
	VR_INFO("Train %s epoch %u/%u: loss %.5f, validation AUC %.4f, %.0f triples/s, lr %.3g",
		kind_name(job->kind), p->epoch, p->max_epochs, p->loss, p->val_auc, p->triples_per_s,
		(double)p->lr);
	return cancelled(job);
}

/* ---- featured's vectors --------------------------------------------------- */

struct fetch {
	struct rk_train_job *job;
	float *feats;         /* rows × dims, row i = item index i */
	size_t rows, cap;     /* rows filled (max index + 1), rows allocated */
	uint32_t dims;
	uint64_t vectors;
};

static int on_vector(void *ctx, const char *id, const float *values, uint32_t dims,
		     uint32_t version)
{
	struct fetch *f = ctx;
	rk_service *svc = f->job->svc;
	uint32_t i;
	if (cancelled(f->job))
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
 * position before the fetch into *base_seq. */
static int fetch_vectors(struct rk_train_job *job, struct fetch *f, uint32_t want,
			 uint32_t *version, uint64_t *base_seq)
{
	rk_service *svc = job->svc;
	vr_status st = { 0 };
	if (!svc->featured)
		return fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			    "%s needs item vectors from featured, and rankd runs without one (--featured)",
			    kind_name(job->kind));
	int rc = rk_fc_last_seq(svc->featured, base_seq, &st);
	if (!rc)
		rc = rk_fc_get_vectors(svc->featured, want, NULL, 0, on_vector, f, &f->dims, version,
				       &st);
	if (rc == VR_ECANCELLED)
		return fail(job, GRPC_STATUS_CANCELLED, "cancelled while fetching vectors");
	if (rc == VR_ERPC && st.code == GRPC_STATUS_NOT_FOUND && want)
		return fail(job, GRPC_STATUS_NOT_FOUND,
			    "featured at %s has no model version %u (feature_version): %s; its Info "
			    "lists the versions it holds", svc->featured_addr, want, st.message);
	if (rc == VR_ERPC)
		return fail(job, GRPC_STATUS_UNAVAILABLE,
			    "cannot fetch item vectors from featured at %s (%s needs them): %s%s%s",
			    svc->featured_addr, kind_name(job->kind), vr_status_name(st.code), st.message[0] ? ": " : "", st.message);
	if (rc)
		return fail(job, vr_status_from_rc(rc), "fetching item vectors from featured failed: %s%s%s",
			    vr_strerror(rc), st.message[0] ? ": " : "", st.message);
	pthread_rwlock_wrlock(&svc->ix_lock);
	rc = rk_interactions_flush(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		return fail(job, vr_status_from_rc(rc), "cannot store featured's item ids: %s%s%s",
			    vr_strerror(rc), vr_store_last_error()[0] ? ": " : "", vr_store_last_error());
	if (!f->vectors || !f->dims)
		return fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			    "featured at %s holds no item vectors yet; put item images with PutItems "
			    "before training %s", svc->featured_addr, kind_name(job->kind));
	VR_INFO("Train %s: %" PRIu64 " vectors of %u floats (featured model version %u, feed at seq %" PRIu64 ")",
		kind_name(job->kind), f->vectors, f->dims, *version, *base_seq);
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

static int64_t unix_now(void)
{
	return (int64_t)time(NULL);
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
static int serve_model(struct rk_train_job *job, rk_model **modelp, const float *feats,
		       const float *scale, uint32_t n_rows, uint32_t fversion, rk_csr *all,
		       const rk_csr *on, uint64_t base_seq, uint64_t *version)
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
		fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the item counts");
		goto leave;
	}
	rk_csr_item_counts(on, count);
	rk_prior_report pr;
	double t0 = vr_now_s();
	rc = rk_prior_fit(model, feats, n_rows < on->n_items ? n_rows : on->n_items, count, &pr);
	if (rc == VR_ENOMEM) {
		fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory fitting the cold-item prior");
		goto leave;
	}
	if (rc)
		VR_WARN("Train %s: no cold-item prior (%s): cold items are ranked by their visual terms alone",
			kind_name(job->kind), vr_strerror(rc));
	else if (model->prior_rows > 1)
		VR_INFO("Train %s: cold-item prior fitted on %u warm items in %.2f s (ridge λ %.3g, "
			"held-out R² of β %.3f, of γ %.3f); %u cold items get its prediction",
			kind_name(job->kind), pr.warm, vr_now_s() - t0, pr.lambda, pr.r2_beta, pr.r2_gamma,
			pr.cold);
	else
		VR_INFO("Train %s: cold-item prior = the interaction-weighted mean of %u warm items (β %.4f); %u cold items get it",
			kind_name(job->kind), pr.warm, (double)model->prior[0], pr.cold);
	if (!(rows = malloc(((size_t)n_rows ? n_rows : 1) * dim * sizeof(float)))) {
		fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the item matrix");
		goto leave;
	}
	if ((rc = rk_model_item_rows(model, NULL, feats, n_rows, rows)) ||
	    (rc = rk_index_create(dim, NULL, &index)) ||
	    (n_rows && (rc = rk_index_append(index, rows, n_rows, NULL)))) {
		fail(job, vr_status_from_rc(rc), "cannot build the item matrix: %s", vr_strerror(rc));
		goto leave;
	}
	if (scale)
		rk_model_fold_scales(model, scale);
	rk_snap_meta meta = { .kind = job->kind, .n_rows = n_rows, .dim = dim,
			      .feature_dims = rk_model_feature_dims(model), .feature_version = fversion,
			      .use_all = (uint32_t)job->use_all, .created_unix = unix_now(),
			      .trained_pairs = pairs };
	if ((rc = rk_snap_next_version(&svc->snap, &meta.version)) ||
	    (rc = rk_snap_save(&svc->snap, model, rows, &meta))) {
		fail(job, vr_status_from_rc(rc), "cannot store the model snapshot: %s%s%s", vr_strerror(rc),
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
		fail(job, vr_status_from_rc(rc), "cannot prepare the model for serving: %s", vr_strerror(rc));
		goto leave;
	}
	if ((rc = rk_service_publish(svc, s, base_seq))) {
		fail(job, GRPC_STATUS_INTERNAL, "cannot switch to the new model: %s", vr_strerror(rc));
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

/* The interactions as a CSR in *all (taken under the lock) and, unless
 * the job uses them all, each user's last item held out for testing and
 * the one before for validation (*test, *valid: n_users + 1 entries),
 * leaving *on the part to fit; else *on = all, *test = *valid = NULL.
 * GRPC_STATUS_OK or the code, with the reason in job->msg. */
static int load_interactions(struct rk_train_job *job, rk_csr *all, rk_csr *train, rk_csr *fit,
			     uint32_t **test, uint32_t **valid, const rk_csr **on)
{
	rk_service *svc = job->svc;
	pthread_rwlock_rdlock(&svc->ix_lock);
	int rc = rk_interactions_csr(svc->ix, all);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		return fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot index the interactions: %s",
			    vr_strerror(rc));
	if (!all->nnz)
		return fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			    "no interactions stored yet; call AddInteractions first");
	*on = all;
	if (job->use_all)
		return GRPC_STATUS_OK;
	*test = malloc(((size_t)all->n_users + 1) * sizeof **test);
	*valid = malloc(((size_t)all->n_users + 1) * sizeof **valid);
	if (!*test || !*valid || rk_split_last(all, train, *test) || rk_split_last(train, fit, *valid))
		return fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED,
			    "out of memory splitting the interactions");
	*on = fit;
	return GRPC_STATUS_OK;
}

/* Gives f a zero row for every item index below n_items that featured
 * sent no vector for (items known here only). */
static int pad_vectors(struct rk_train_job *job, struct fetch *f, uint32_t n_items)
{
	if (f->cap >= n_items)
		return GRPC_STATUS_OK;
	float *g = realloc(f->feats, (size_t)n_items * f->dims * sizeof(float));
	if (!g)
		return fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the item vectors");
	memset(g + f->cap * f->dims, 0, (n_items - f->cap) * f->dims * sizeof(float));
	f->feats = g;
	f->cap = n_items;
	return GRPC_STATUS_OK;
}

static int run(struct rk_train_job *job)
{
	struct fetch f = { .job = job };
	rk_csr all = { 0 }, train = { 0 }, fit = { 0 };
	uint32_t *test = NULL, *valid = NULL, fversion = 0;
	uint64_t base_seq = UINT64_MAX;
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
			fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			     "no interactions stored yet; call AddInteractions first");
			goto leave;
		}
		/* BPR ranks every item featured holds too (cold ones by the
		 * prior), whatever the change feed brought in so far: the same
		 * data, flags and seed give the same catalogue and model. Only
		 * the ids are kept. */
		if (fetch_vectors(job, &f, 0, &fversion, &base_seq)) {
			if (job->code == GRPC_STATUS_CANCELLED)
				goto leave;
			VR_WARN("Train BPR: %s; training on the items rankd knows", job->msg);
			job->code = GRPC_STATUS_OK;
			job->msg[0] = 0;
		}
		free(f.feats);
		f = (struct fetch){ .job = job };
		fversion = 0;
		base_seq = UINT64_MAX;
	}
	if ((job->kind == RK_MODEL_VBPR &&
	     fetch_vectors(job, &f, job->feature_version, &fversion, &base_seq)) ||
	    load_interactions(job, &all, &train, &fit, &test, &valid, &on) ||
	    (f.feats && pad_vectors(job, &f, all.n_items)))
		goto leave;
	if (f.feats) {
		if (!(scale = malloc((size_t)f.dims * sizeof *scale))) {
			fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the feature scales");
			goto leave;
		}
		if ((rc = rk_feature_scales(f.feats, all.n_items, f.dims, scale))) {
			fail(job, rc == VR_EINVAL ? GRPC_STATUS_FAILED_PRECONDITION : vr_status_from_rc(rc),
			     "cannot scale featured's item vectors (%s): every vector is all zeros",
			     vr_strerror(rc));
			goto leave;
		}
		log_spread(scale, f.dims);
		rk_features_scale(f.feats, all.n_items, f.dims, scale);
	}
	rk_model_dims d;
	rk_model_dims_default(&d, job->kind, all.n_users, all.n_items, f.dims);
	if (job->k)
		d.k = job->k;
	if (job->k2 && job->kind != RK_MODEL_BPR)
		d.k2 = job->k2;
	if ((rc = rk_model_create(&model, &d))) {
		fail(job, rc == VR_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED,
		     "cannot create a %s model of %u users × %u items (K %u, K' %u, F %u): %s",
		     kind_name(job->kind), d.n_users, d.n_items, d.k, d.k2, d.f, vr_strerror(rc));
		goto leave;
	}
	rk_model_init(model, job->cfg.seed);
	rc = rk_trainer_create(&t, model, on, valid, f.feats, &job->cfg);
	if (rc == VR_ENOTFOUND) {
		fail(job, GRPC_STATUS_FAILED_PRECONDITION,
		     "no user has both a training item and an item to contrast it with; add interactions "
		     "(each user's last item is held out for testing unless use_all_interactions)");
		goto leave;
	}
	if (rc) {
		fail(job, rc == VR_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT : vr_status_from_rc(rc),
		     "cannot set up training: %s", vr_strerror(rc));
		goto leave;
	}
	pthread_mutex_lock(&job->mu);
	job->trainer = t;
	if (job->cancel)
		rk_trainer_cancel(t);
	pthread_mutex_unlock(&job->mu);
	rc = rk_trainer_run(t, on_progress, job, &res);
	pthread_mutex_lock(&job->mu);
	job->trainer = NULL;
	pthread_mutex_unlock(&job->mu);
	if (rc == VR_ECANCELLED) {
		fail(job, GRPC_STATUS_CANCELLED, "cancelled");
		goto leave;
	}
	if (rc) {
		fail(job, vr_status_from_rc(rc), "training failed: %s", vr_strerror(rc));
		goto leave;
	}
	uint64_t version = 0;
	if (serve_model(job, &model, f.feats, scale, all.n_items, fversion, &all, on, base_seq,
			&version))
		goto leave;
	rk_progress last = { .epoch = res.epochs, .max_epochs = job->cfg.max_epochs,
			     .loss = res.loss, .val_auc = res.best_auc, .best_auc = res.best_auc, .best_epoch = res.best_epoch,
			     .lr = rk_trainer_lr(t), .elapsed_s = res.seconds,
			     .triples_per_s = res.seconds > 0 ? res.triples / res.seconds : 0 };
	struct progress done = { .p = last, .state = res.stopped_early ? "stopped_early" : "finished",
				 .done = 1, .version = version };
	push(job, &done);
	VR_INFO("Train %s done: model v%" PRIu64 " (best epoch %u of %u, validation AUC %.4f, %.1f s) is served",
		kind_name(job->kind), version, res.best_epoch, res.epochs, res.best_auc, res.seconds);
	job->code = GRPC_STATUS_OK;
leave:
	rk_trainer_free(t);
	rk_model_free(model);
	free(f.feats);
	free(scale);
	free(test);
	free(valid);
	rk_csr_free(&fit);
	rk_csr_free(&train);
	rk_csr_free(&all);
	return job->code;
}

/* ---- DVBPR: the loop over featured's TrainVisual ---------------------------- */

#define DV_CKPT_MODEL "dvbpr/checkpoint"
#define DV_CKPT_BEST "dvbpr/checkpoint-best"
#define DV_CKPT_META "dvbpr/checkpoint-meta"
#define DV_CKPT_ADAM_M "dvbpr/checkpoint-adam-m"
#define DV_CKPT_ADAM_V "dvbpr/checkpoint-adam-v"
#define DV_CKPT_MAGIC 0x44564251u /* "DVBQ": with the best epoch and Adam */

/* Where a DVBPR run stands: stored beside its model (rk_model_save under
 * DV_CKPT_MODEL, whose version field holds the same step), the best
 * epoch's model so far (DV_CKPT_BEST, the same version; its net is the one
 * featured kept at best_step) and Adam's moments (DV_CKPT_ADAM_M, _V:
 * n_params floats each, Adam only) after every checkpoint_every steps,
 * when featured has saved the same step. The meta goes last, in the
 * transaction with the moments: a crash before it leaves the previous
 * checkpoint's meta, whose step the models then fail to match. */
struct dv_ckpt {
	uint32_t magic, epoch;         /* the epoch in progress, 1-based */
	uint64_t step, epoch_step;     /* steps done; of them, in this epoch */
	uint64_t rng[4];
	double epoch_loss;
	char session[65];
	char arch[32];
	uint32_t best_epoch;           /* 0: no epoch validated yet */
	uint32_t bad;                  /* epochs since the best */
	uint64_t best_step;            /* the best epoch's net in featured */
	double best_auc, best_loss;
	uint64_t adam_t;               /* Adam's steps (0: SGD) */
};

struct put_arg {
	vr_dbi db;
	const struct dv_ckpt *c;
	const rk_dvbpr_adam *adam;
	size_t n;
};

static int put_ckpt_fn(vr_txn *txn, void *arg)
{
	struct put_arg *a = arg;
	int rc = 0;
	if (a->adam &&
	    ((rc = vr_put(txn, a->db, DV_CKPT_ADAM_M, strlen(DV_CKPT_ADAM_M), a->adam->m,
			  a->n * sizeof(float))) ||
	     (rc = vr_put(txn, a->db, DV_CKPT_ADAM_V, strlen(DV_CKPT_ADAM_V), a->adam->v,
			  a->n * sizeof(float)))))
		return rc;
	return vr_put(txn, a->db, DV_CKPT_META, strlen(DV_CKPT_META), a->c, sizeof *a->c);
}

/* best: the best epoch's model (NULL before the first); adam: NULL with SGD. */
static int ckpt_save(rk_service *svc, rk_model *model, rk_model *best, const rk_dvbpr_adam *adam,
		     const struct dv_ckpt *c)
{
	struct put_arg a = { .db = svc->snap.models, .c = c, .adam = adam, .n = model->n_params };
	model->version = c->step;
	int rc = rk_model_save(model, svc->snap.st, svc->snap.models, DV_CKPT_MODEL);
	if (!rc && best) {
		best->version = c->step;
		rc = rk_model_save(best, svc->snap.st, svc->snap.models, DV_CKPT_BEST);
	}
	return rc ? rc : vr_store_write(svc->snap.st, put_ckpt_fn, &a);
}

/* Loads the model stored under key, checking it is of the checkpoint's
 * step and of like's sizes. */
static int ckpt_model(rk_service *svc, const char *key, const rk_model *like, uint64_t step,
		      rk_model **out)
{
	rk_model *m = NULL;
	int rc = rk_model_load(&m, svc->snap.st, svc->snap.models, key);
	if (!rc && (m->version != step || m->d.n_users != like->d.n_users ||
		    m->d.n_items != like->d.n_items || m->d.k != like->d.k || m->d.k2 != like->d.k2))
		rc = VR_ESTATE;
	if (rc) {
		rk_model_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

/* Loads the checkpoint into c, *model (replacing it) and *best (NULL when
 * no epoch was validated before it). */
static int ckpt_load(rk_service *svc, rk_model **model, rk_model **best, struct dv_ckpt *c)
{
	vr_txn *txn;
	const void *v;
	size_t len;
	rk_model *m = NULL, *b = NULL;
	int rc = vr_store_read_begin(svc->snap.st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, svc->snap.models, DV_CKPT_META, strlen(DV_CKPT_META), &v, &len);
	if (!rc && len != sizeof *c)
		rc = VR_ECORRUPT;
	if (!rc)
		memcpy(c, v, sizeof *c);
	vr_store_read_end(txn);
	if (!rc && c->magic != DV_CKPT_MAGIC)
		rc = VR_ECORRUPT;
	if (!rc)
		rc = ckpt_model(svc, DV_CKPT_MODEL, *model, c->step, &m);
	if (!rc && c->best_epoch)
		rc = ckpt_model(svc, DV_CKPT_BEST, *model, c->step, &b);
	if (rc) {
		rk_model_free(m);
		return rc;
	}
	rk_model_free(*model);
	*model = m;
	*best = b;
	return 0;
}

/* Adam's moments of the checkpoint c (n floats each) into adam. */
static int ckpt_load_adam(rk_service *svc, const struct dv_ckpt *c, rk_dvbpr_adam *adam, size_t n)
{
	vr_txn *txn;
	const void *m, *v;
	size_t ml, vl;
	int rc = vr_store_read_begin(svc->snap.st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, svc->snap.models, DV_CKPT_ADAM_M, strlen(DV_CKPT_ADAM_M), &m, &ml);
	if (!rc)
		rc = vr_get(txn, svc->snap.models, DV_CKPT_ADAM_V, strlen(DV_CKPT_ADAM_V), &v, &vl);
	if (!rc && (ml != n * sizeof(float) || vl != n * sizeof(float) || !c->adam_t))
		rc = VR_ESTATE;
	if (!rc) {
		memcpy(adam->m, m, ml);
		memcpy(adam->v, v, vl);
		adam->t = c->adam_t;
	}
	vr_store_read_end(txn);
	return rc;
}

/* Validation AUC (DESIGN.md 8, standard protocol): per user with a
 * validation item v, the share of items not among u's training items (and
 * not v) that score below v (ties half), averaged. rows: the item matrix
 * (n_items × D) with the current φ. */
static double dv_validate(const rk_model *m, const float *rows, const rk_csr *train,
			  const uint32_t *valid, float *scores, float *urow)
{
	uint32_t n = m->d.n_items, dim = rk_model_dim(m);
	double sum = 0;
	uint32_t users = 0;
	for (uint32_t u = 0; u < train->n_users && u < m->d.n_users; u++) {
		uint32_t v = valid[u];
		if (v == RK_NONE || v >= n)
			continue;
		rk_model_user_row(m, u, urow);
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)dim, 1.0f, rows, (int)dim, urow, 1,
			    0.0f, scores, 1);
		float sv = scores[v];
		for (uint64_t k = train->off[u]; k < train->off[u + 1]; k++)
			scores[train->item[k]] = NAN;
		double below = 0;
		uint32_t cmp = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (i == v || isnan(scores[i]))
				continue;
			below += scores[i] < sv ? 1 : scores[i] == sv ? 0.5 : 0;
			cmp++;
		}
		if (cmp) {
			sum += below / cmp;
			users++;
		}
	}
	return users ? sum / users : NAN;
}

/* Item ids by index, NUL-terminated, for the wire. */
static int item_ids(rk_service *svc, uint32_t n, char ***ids, char **blob)
{
	size_t bytes = 0, len;
	pthread_rwlock_rdlock(&svc->ix_lock);
	for (uint32_t i = 0; i < n; i++) {
		rk_item_id(svc->ix, i, &len);
		bytes += len + 1;
	}
	*ids = malloc(((size_t)n + 1) * sizeof **ids);
	*blob = malloc(bytes + 1);
	if (*ids && *blob) {
		char *p = *blob;
		for (uint32_t i = 0; i < n; i++) {
			const char *id = rk_item_id(svc->ix, i, &len);
			memcpy(p, id, len);
			p[len] = 0;
			(*ids)[i] = p;
			p += len + 1;
		}
	}
	pthread_rwlock_unlock(&svc->ix_lock);
	return *ids && *blob ? 0 : VR_ENOMEM;
}

static int rpc_fail(struct rk_train_job *job, int rc, const vr_status *st, uint64_t step,
		    uint64_t ckpt_step)
{
	if (rc == VR_ERPC)
		return fail(job, st->code == GRPC_STATUS_OK ? GRPC_STATUS_UNAVAILABLE : st->code,
			    "featured at %s failed during DVBPR step %" PRIu64 ": %s: %s; the last "
			    "checkpoint is at step %" PRIu64 ": train again with resume to continue",
			    job->svc->featured_addr, step, vr_status_name(st->code), st->message,
			    ckpt_step);
	return fail(job, rc == VR_ECORRUPT ? GRPC_STATUS_INTERNAL : vr_status_from_rc(rc),
		    "DVBPR step %" PRIu64 " failed: %s%s%s", step, vr_strerror(rc),
		    st->message[0] ? ": " : "", st->message);
}

static int run_dvbpr(struct rk_train_job *job)
{
	rk_service *svc = job->svc;
	const struct dvbpr_settings *dv = &job->dv;
	const rk_train_config *c = &job->cfg;
	rk_csr all = { 0 }, train = { 0 }, fit = { 0 };
	uint32_t *test = NULL, *valid = NULL, *tr = NULL, *items = NULL, fversion = 0;
	char **ids = NULL, *blob = NULL;
	float *phi = NULL, *rows = NULL, *scores = NULL, *urow = NULL;
	rk_model *model = NULL, *best = NULL;
	rk_sampler *smp = NULL;
	rk_dvbpr *d = NULL;
	struct fetch f = { .job = job };
	struct dv_ckpt ck = { .magic = DV_CKPT_MAGIC, .epoch = 1, .best_auc = NAN,
			      .best_loss = NAN };
	vr_status st = { 0 };
	rk_rng rng;
	uint64_t base_seq = UINT64_MAX, ckpt_step = 0, step0 = 0;
	double t_start = 0;
	int rc;

	if (!svc->featured) {
		fail(job, GRPC_STATUS_FAILED_PRECONDITION,
		     "DVBPR trains its CNN in featured, and rankd runs without one (--featured)");
		goto leave;
	}
	const rk_csr *on = NULL;
	if (load_interactions(job, &all, &train, &fit, &test, &valid, &on))
		goto leave;
	if (!valid) { /* use_all: nothing held out, so no user validates */
		if (!(valid = malloc(((size_t)all.n_users + 1) * sizeof *valid))) {
			fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the validation items");
			goto leave;
		}
		for (uint32_t u = 0; u < all.n_users; u++)
			valid[u] = RK_NONE;
	}
	rk_model_dims md;
	rk_model_dims_default(&md, RK_MODEL_DVBPR, all.n_users, all.n_items, 0);
	md.k = dv->no_latent ? 0 : job->k ? job->k : md.k;
	md.k2 = job->k2 ? job->k2 : !strcmp(dv->arch, "alexnet") ? 100 : 50;
	if ((rc = rk_model_create(&model, &md))) {
		fail(job, vr_status_from_rc(rc), "cannot create a DVBPR model of %u users × %u items: %s",
		     md.n_users, md.n_items, vr_strerror(rc));
		goto leave;
	}
	rk_model_init(model, c->seed);
	if ((rc = rk_sampler_create(&smp, on, &c->sampler))) {
		fail(job, rc == VR_ENOTFOUND ? GRPC_STATUS_FAILED_PRECONDITION : vr_status_from_rc(rc),
		     "cannot sample triples: %s", vr_strerror(rc));
		goto leave;
	}
	/* Items with no training interaction stay cold: ranked by φ alone. */
	for (uint32_t i = 0; i < md.n_items; i++) {
		if (rk_sampler_in_pool(smp, i))
			continue;
		model->beta_i[i] = 0;
		if (md.k)
			memset(model->gamma_i + (size_t)i * md.k, 0, md.k * sizeof(float));
	}
	rk_rng_seed(&rng, c->seed, 7);
	if (dv->resume) {
		if ((rc = ckpt_load(svc, &model, &best, &ck))) {
			fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			     "cannot resume DVBPR: %s (no checkpoint of a run on these interactions and "
			     "settings)", vr_strerror(rc));
			goto leave;
		}
		memcpy(rng.s, ck.rng, sizeof rng.s);
		ckpt_step = ck.step;
	} else {
		snprintf(ck.session, sizeof ck.session, "dvbpr-%" PRIu64 "-%lld", c->seed,
			 (long long)unix_now());
	}
	snprintf(ck.arch, sizeof ck.arch, "%s", dv->arch);
	uint32_t batch = c->batch;
	uint64_t per_epoch = c->epoch_triples ? c->epoch_triples : on->nnz;
	uint64_t steps = (per_epoch + batch - 1) / batch;
	/* Both ends save at the same steps: every 200, or every epoch if shorter. */
	uint32_t every = steps < dv->checkpoint_every ? (uint32_t)steps : dv->checkpoint_every;
	size_t nb = batch;
	if (item_ids(svc, md.n_items, &ids, &blob) ||
	    !(tr = malloc(3 * nb * sizeof *tr)) || !(items = malloc(md.n_items * sizeof *items)) ||
	    !(phi = malloc((size_t)md.n_items * md.k2 * sizeof *phi)) ||
	    !(rows = malloc((size_t)md.n_items * rk_model_dim(model) * sizeof *rows)) ||
	    !(scores = malloc(md.n_items * sizeof *scores)) ||
	    !(urow = malloc(rk_model_dim(model) * sizeof *urow))) {
		fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for DVBPR's buffers");
		goto leave;
	}
	for (uint32_t i = 0; i < md.n_items; i++)
		items[i] = i;
	rk_dvbpr_opts o = { .arch = dv->arch, .input_size = dv->input_size, .cnn_lr = dv->cnn_lr,
			    .cnn_wd = dv->cnn_wd, .seed = c->seed, .session_id = ck.session,
			    .resume = dv->resume, .checkpoint_every = every,
			    .item_ids = (const char *const *)ids, .n_items = md.n_items,
			    .max_batch = batch, .trunk_layer = dv->trunk_layer,
			    .head_width = dv->head_width, .optim = c->optim,
			    .adam = { c->adam_beta1, c->adam_beta2, c->adam_eps } };
	if ((rc = rk_dvbpr_open(&d, svc->featured, model, &o, &step0, &st))) {
		rpc_fail(job, rc, &st, 0, ckpt_step);
		goto leave;
	}
	if (dv->resume && step0 != ck.step) {
		fail(job, GRPC_STATUS_FAILED_PRECONDITION,
		     "cannot resume DVBPR session %s: featured's checkpoint is at step %" PRIu64
		     " and rankd's at step %" PRIu64, ck.session, step0, ck.step);
		goto leave;
	}
	rk_dvbpr_adam *adam = rk_dvbpr_adam_state(d);
	if (dv->resume && !adam != !ck.adam_t) {
		fail(job, GRPC_STATUS_FAILED_PRECONDITION,
		     "cannot resume DVBPR session %s: its checkpoint was made with %s and this run "
		     "asks for %s (optimizer)", ck.session, ck.adam_t ? "Adam" : "SGD",
		     adam ? "Adam" : "SGD");
		goto leave;
	}
	if (dv->resume && adam && (rc = ckpt_load_adam(svc, &ck, adam, model->n_params))) {
		fail(job, GRPC_STATUS_FAILED_PRECONDITION,
		     "cannot resume DVBPR session %s: its Adam state cannot be read: %s", ck.session,
		     vr_strerror(rc));
		goto leave;
	}
	VR_INFO("Train DVBPR: session %s %s at step %" PRIu64 ": %s K'=%u, K=%u, %" PRIu64
		" steps of %u triples per epoch, %u epochs (patience %u), rankd's parameters by %s "
		"lr %g λ %g", ck.session, dv->resume ? "resumed" : "started", step0, dv->arch, md.k2,
		md.k, steps, batch, c->max_epochs, c->patience, adam ? "Adam" : "SGD", (double)c->lr,
		(double)c->lambda);
	t_start = vr_now_s();
	uint32_t epochs = ck.epoch - 1;
	int stopped_early = 0;
	double last_loss = NAN;
	for (; ck.epoch <= c->max_epochs; ck.epoch++, ck.epoch_step = 0, ck.epoch_loss = 0) {
		double t0 = vr_now_s();
		uint64_t done0 = ck.epoch_step;
		for (; ck.epoch_step < steps; ck.epoch_step++) {
			double loss = 0;
			if (cancelled(job)) {
				fail(job, GRPC_STATUS_CANCELLED, "cancelled");
				goto leave;
			}
			rk_sampler_fill(smp, &rng, nb, tr, tr + nb, tr + 2 * nb);
			if ((rc = rk_dvbpr_step(d, model, tr, tr + nb, tr + 2 * nb, nb, c->lr, c->lambda,
						&loss, &st))) {
				rpc_fail(job, rc, &st, rk_dvbpr_step_no(d) + 1, ckpt_step);
				goto leave;
			}
			ck.epoch_loss += loss;
			ck.step = rk_dvbpr_step_no(d);
			if (ck.step % every == 0) {
				ck.epoch_step++; /* this step is done */
				memcpy(ck.rng, rng.s, sizeof ck.rng);
				ck.adam_t = adam ? adam->t : 0;
				if ((rc = ckpt_save(svc, model, best, adam, &ck)))
					VR_WARN("Train DVBPR: cannot save the checkpoint at step %" PRIu64 ": %s",
						ck.step, vr_strerror(rc));
				else
					ckpt_step = ck.step;
				ck.epoch_step--;
			}
		}
		/* φ of every item with the net as it is now, for validation. */
		if ((rc = rk_dvbpr_embed(d, items, md.n_items, phi, &st))) {
			rpc_fail(job, rc, &st, rk_dvbpr_step_no(d), ckpt_step);
			goto leave;
		}
		rk_model_item_rows(model, NULL, phi, md.n_items, rows);
		double auc = dv_validate(model, rows, on, valid, scores, urow);
		double loss = ck.epoch_loss / ((double)steps * nb);
		epochs = ck.epoch;
		last_loss = loss;
		/* The best epoch so far, as rk_trainer_run's: its model here and
		 * its net kept by featured, to be served at the end. */
		if (!isnan(auc) && (!ck.best_epoch || auc > ck.best_auc + c->min_delta)) {
			if ((rc = best ? rk_model_copy(best, model) : rk_model_clone(model, &best))) {
				fail(job, vr_status_from_rc(rc), "cannot keep DVBPR's best epoch: %s",
				     vr_strerror(rc));
				goto leave;
			}
			if ((rc = rk_dvbpr_mark_best(d, &ck.best_step, &st))) {
				rpc_fail(job, rc, &st, rk_dvbpr_step_no(d), ckpt_step);
				goto leave;
			}
			ck.best_epoch = ck.epoch;
			ck.best_auc = auc;
			ck.best_loss = loss;
			ck.bad = 0;
		} else if (!isnan(auc)) {
			ck.bad++;
		}
		double secs = vr_now_s() - t0, elapsed = vr_now_s() - t_start;
		rk_progress p = { .epoch = ck.epoch, .max_epochs = c->max_epochs, .loss = loss,
				  .val_auc = auc, .best_auc = ck.best_auc, .best_epoch = ck.best_epoch,
				  .lr = c->lr, .elapsed_s = elapsed,
				  .triples_per_s = secs > 0 ? (double)(steps - done0) * nb / secs : 0,
				  .eta_s = secs * (c->max_epochs - ck.epoch) };
		rk_dvbpr_stats ds;
		rk_dvbpr_stats_get(d, &ds);
		VR_INFO("Train DVBPR time per step over %" PRIu64 " steps: featured network %.2f ms, "
			"round trip %.2f ms, rankd %.2f ms", ds.steps, 1e3 * ds.network_s / ds.steps,
			1e3 * ds.round_trip_s / ds.steps, 1e3 * ds.rankd_s / ds.steps);
		on_progress(job, &p);
		/* Patience running out at the last epoch stops nothing. */
		if (c->patience && ck.bad >= c->patience && ck.epoch < c->max_epochs) {
			stopped_early = 1;
			break;
		}
	}
	/* Serve the best epoch: rankd's half from its copy, the net from the
	 * one featured kept (without validation, the last epoch). */
	uint64_t from_step = 0;
	if (best) {
		rk_model_copy(model, best);
		from_step = ck.best_step;
	}
	uint32_t version = 0;
	uint64_t embedded = 0;
	if ((rc = rk_dvbpr_finish(d, 1, from_step, &version, &embedded, &st))) {
		rpc_fail(job, rc, &st, rk_dvbpr_step_no(d), ckpt_step);
		goto leave;
	}
	VR_INFO("Train DVBPR: featured re-embedded %" PRIu64 " items with the net of step %" PRIu64
		" (epoch %u) into model version %u", embedded, from_step ? from_step : ck.step,
		best ? ck.best_epoch : epochs, version);
	/* The served φ: that version's vectors, whatever featured's active
	 * version is (the model keeps the version it was trained with). */
	if (fetch_vectors(job, &f, version, &fversion, &base_seq))
		goto leave;
	if (fversion != version || f.dims != md.k2) {
		fail(job, GRPC_STATUS_INTERNAL,
		     "featured sent vectors of version %u with %u dims for the run's version %u of %u",
		     fversion, f.dims, version, md.k2);
		goto leave;
	}
	if (pad_vectors(job, &f, all.n_items))
		goto leave;
	uint64_t sversion = 0;
	if (serve_model(job, &model, f.feats, NULL, all.n_items, fversion, &all, on, base_seq,
			&sversion))
		goto leave;
	rk_progress last = { .epoch = epochs, .max_epochs = c->max_epochs,
			     .loss = best ? ck.best_loss : last_loss,
			     .val_auc = best ? ck.best_auc : NAN, .best_auc = ck.best_auc,
			     .best_epoch = ck.best_epoch, .lr = c->lr,
			     .elapsed_s = vr_now_s() - t_start };
	struct progress done = { .p = last, .state = stopped_early ? "stopped_early" : "finished",
				 .done = 1, .version = sversion };
	push(job, &done);
	VR_INFO("Train DVBPR done: model v%" PRIu64 " (best epoch %u of %u, validation AUC %.4f, "
		"featured version %u) is served", sversion, ck.best_epoch, epochs, ck.best_auc,
		version);
	job->code = GRPC_STATUS_OK;
leave:
	rk_dvbpr_close(d);
	rk_sampler_free(smp);
	rk_model_free(model);
	rk_model_free(best);
	free(f.feats);
	free(ids);
	free(blob);
	free(tr);
	free(items);
	free(phi);
	free(rows);
	free(scores);
	free(urow);
	free(test);
	free(valid);
	rk_csr_free(&fit);
	rk_csr_free(&train);
	rk_csr_free(&all);
	return job->code;
}

static void *train_main(void *arg)
{
	struct rk_train_job *job = arg;
	/* Linux: nice is per thread and inherited by the trainer's threads. */
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), TRAIN_NICE))
		VR_DEBUG("Train: cannot lower the training threads' priority: %s", strerror(errno));
	if (job->kind == RK_MODEL_DVBPR)
		run_dvbpr(job);
	else
		run(job);
	pthread_mutex_lock(&job->mu);
	job->finished = 1;
	pthread_cond_broadcast(&job->cv);
	pthread_mutex_unlock(&job->mu);
	return NULL;
}

/* ---- the request -------------------------------------------------------------- */

/* DVBPR's part of settings(): the tutorial's defaults (AlexNet K=100 from
 * scratch, γ of 100, Adam lr 1e-3 and weight decay 1e-4 on the CNN, batch
 * 128, 5 epochs; CNN-F K=50, "small" K=50 for CPU runs). rankd's own
 * parameters step by Adam as the tutorial's one Adam over net and
 * embeddings (lr 1e-3, weight decay λ 1e-4), or by SGD with optimizer
 * "sgd" (lr 0.05, λ 0.0025, BPR's); either unless given. Measured on the
 * main job (./run.sh, small net at 16 px, 2 epochs of 96,000 triples;
 * test AUC all / cold users, standard protocol): Adam lr 1e-3 .749 / .693
 * (RR .0109, nDCG@20 .0136), Adam lr 1e-2 .678 / .606 (it overfits: loss
 * .11), the SGD run.sh used before (lr 0.2, λ 0.05) .759 / .676 (RR .0070,
 * nDCG@20 .0101). On tests/dvbpr's tiny sets, whose epochs are 10 to 30
 * steps, 1e-3 barely moves in 10 epochs: those tests ask for 1e-2 or SGD. The best epoch
 * by validation AUC is served, and patience (5) stops a run early. */
static int dvbpr_settings(struct rk_train_job *job, const Visrec__V1__TrainRequest *r)
{
	struct dvbpr_settings *dv = &job->dv;
	rk_train_config *c = &job->cfg;
	int trunk = r->trunk_layer && r->trunk_layer[0];
	/* With a trunk featured's active model is the net: arch may stay empty. */
	const char *arch = r->arch && r->arch[0] ? r->arch : trunk ? "" : "alexnet";
	uint32_t max_batch = trunk ? 1024 : 128;
	if (!trunk && strcmp(arch, "alexnet") && strcmp(arch, "cnnf") && strcmp(arch, "small"))
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "arch \"%.32s\" is not known: use \"alexnet\", \"cnnf\" or \"small\"", arch);
	if ((trunk && strlen(r->trunk_layer) >= sizeof dv->trunk_layer) || r->head_width > 4096 ||
	    (r->head_width && !trunk))
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "trunk_layer is a layer name of at most 31 characters; head_width (at most "
			    "4096) needs trunk_layer");
	if (!isfinite(r->cnn_learning_rate) || r->cnn_learning_rate < 0 ||
	    !isfinite(r->cnn_weight_decay) || r->cnn_weight_decay < 0 || r->input_size > 1024)
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "cnn_learning_rate and cnn_weight_decay must be finite and >= 0, input_size <= 1024");
	if (r->batch_size > max_batch)
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "DVBPR steps carry at most %u triples%s (batch_size %u)", max_batch,
			    trunk ? " with a trunk" : "", r->batch_size);
	snprintf(dv->arch, sizeof dv->arch, "%s", arch);
	snprintf(dv->trunk_layer, sizeof dv->trunk_layer, "%s", trunk ? r->trunk_layer : "");
	dv->head_width = r->head_width;
	dv->input_size = r->input_size;
	dv->cnn_lr = r->cnn_learning_rate ? r->cnn_learning_rate : 1e-3f;
	dv->cnn_wd = r->cnn_weight_decay ? r->cnn_weight_decay : 1e-4f;
	dv->no_latent = r->no_latent;
	dv->resume = r->resume;
	dv->checkpoint_every = 200;
	if (!r->batch_size)
		c->batch = 128;
	if (!r->epochs)
		c->max_epochs = 5;
	if (!r->dims && !r->no_latent)
		job->k = 100;
	if (!r->optimizer || !r->optimizer[0])
		c->optim = RK_OPT_ADAM;
	if (c->optim == RK_OPT_ADAM) {
		c->lr = r->learning_rate ? r->learning_rate : 1e-3f;
		c->lambda = r->lambda ? r->lambda : 1e-4f;
	}
	return GRPC_STATUS_OK;
}

/* Fills the job's settings from the request; GRPC_STATUS_OK or the code with
 * the reason in job->msg. */
static int settings(struct rk_train_job *job, const Visrec__V1__TrainRequest *r)
{
	switch (r->model) {
	case VISREC__V1__MODEL_KIND__BPR:
		job->kind = RK_MODEL_BPR;
		break;
	case VISREC__V1__MODEL_KIND__VBPR:
		job->kind = RK_MODEL_VBPR;
		break;
	case VISREC__V1__MODEL_KIND__DVBPR:
		job->kind = RK_MODEL_DVBPR;
		break;
	default:
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT, "model is required: BPR or VBPR, or DVBPR");
	}
	if (r->epochs > MAX_EPOCHS || r->dims > MAX_DIMS || r->visual_dims > MAX_DIMS ||
	    r->batch_size > MAX_BATCH || r->threads > MAX_THREADS)
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "out of range: epochs <= %u, dims and visual_dims <= %u, batch_size <= %u, threads <= %u",
			    MAX_EPOCHS, MAX_DIMS, MAX_BATCH, MAX_THREADS);
	if (!isfinite(r->learning_rate) || r->learning_rate < 0 || !isfinite(r->lambda) ||
	    r->lambda < 0 || !isfinite(r->lambda_e) || r->lambda_e < 0)
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "learning_rate, lambda and lambda_e must be finite and >= 0 (0 = default)");
	rk_train_config *c = &job->cfg;
	rk_train_config_default(c, job->kind == RK_MODEL_DVBPR ? RK_MODEL_BPR : job->kind);
	const char *opt = r->optimizer && r->optimizer[0] ? r->optimizer : NULL;
	if (opt && strcmp(opt, "adam") && strcmp(opt, "sgd"))
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "optimizer \"%.32s\" is not known: use \"adam\" or \"sgd\"", opt);
	if (opt && !strcmp(opt, "adam")) {
		c->optim = RK_OPT_ADAM;
		c->algo = RK_ALGO_MINIBATCH; /* Hogwild is SGD only */
	} else if (opt) {
		c->optim = RK_OPT_SGD;
	}
	const char *neg = r->negatives && r->negatives[0] ? r->negatives : NULL;
	if (neg && strcmp(neg, "uniform") && strcmp(neg, "popularity"))
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "negatives \"%.32s\" is not known: use \"uniform\" or \"popularity\"", neg);
	if (neg)
		c->sampler.negatives = strcmp(neg, "uniform") ? RK_NEG_POPULARITY : RK_NEG_UNIFORM;
	if (r->epochs)
		c->max_epochs = r->epochs;
	if (r->learning_rate)
		c->lr = r->learning_rate;
	if (r->lambda)
		c->lambda = r->lambda;
	if (r->lambda_e)
		c->lambda_e = r->lambda_e;
	if (r->batch_size)
		c->batch = r->batch_size;
	c->threads = r->threads;
	/* Hogwild's lock-free updates race, so no two runs on several threads
	 * are alike: the same request must give the same model (issue 14.5),
	 * so unless the request names a thread count Hogwild runs on one. BPR
	 * on the main job's data (9,633 items, 30 epochs) trains in about a
	 * second either way. */
	if (c->algo == RK_ALGO_HOGWILD && !r->threads)
		c->threads = 1;
	c->seed = r->seed;
	if (r->triples_per_epoch)
		c->epoch_triples = r->triples_per_epoch;
	if (r->patience)
		c->patience = r->patience;
	job->k = r->dims;
	job->k2 = r->visual_dims;
	job->use_all = r->use_all_interactions;
	if (r->feature_version && job->kind != RK_MODEL_VBPR)
		return fail(job, GRPC_STATUS_INVALID_ARGUMENT,
			    "feature_version (%u) names the featured vectors VBPR trains on; %s takes "
			    "none (leave it 0)", r->feature_version, kind_name(job->kind));
	job->feature_version = r->feature_version;
	return job->kind == RK_MODEL_DVBPR ? dvbpr_settings(job, r) : GRPC_STATUS_OK;
}

int rk_train_check(const Visrec__V1__TrainRequest *r, char *why, size_t cap)
{
	struct rk_train_job job = { 0 };
	int code = settings(&job, r);
	snprintf(why, cap, "%s", code ? job.msg : "");
	return code;
}

static void to_proto(const struct progress *m, Visrec__V1__TrainProgress *out)
{
	visrec__v1__train_progress__init(out);
	out->epoch = m->p.epoch;
	out->epochs = m->p.max_epochs;
	out->loss = isfinite(m->p.loss) ? m->p.loss : 0;
	out->val_auc = isfinite(m->p.val_auc) ? m->p.val_auc : 0;
	out->triples_per_second = m->p.triples_per_s;
	out->eta_seconds = m->done ? 0 : m->p.eta_s;
	out->learning_rate = m->p.lr;
	out->done = m->done;
	out->state = (char *)m->state;
	out->model_version = m->version;
	out->elapsed_seconds = m->p.elapsed_s;
}

static void job_free(struct rk_train_job *job)
{
	pthread_cond_destroy(&job->cv);
	pthread_mutex_destroy(&job->mu);
	free(job);
}

int rk_service_training(rk_service *svc, int *kind, uint32_t *epoch, uint32_t *epochs)
{
	pthread_mutex_lock(&svc->train_mu);
	struct rk_train_job *job = svc->job;
	if (job) {
		if (kind)
			*kind = job->kind;
		if (epochs)
			*epochs = job->cfg.max_epochs;
		if (epoch) {
			pthread_mutex_lock(&job->mu);
			*epoch = job->epoch;
			pthread_mutex_unlock(&job->mu);
		}
	}
	pthread_mutex_unlock(&svc->train_mu);
	return job != NULL;
}

/* Asks the run to stop (trainer included). */
static void job_cancel(struct rk_train_job *job)
{
	pthread_mutex_lock(&job->mu);
	job->cancel = 1;
	if (job->trainer)
		rk_trainer_cancel(job->trainer);
	pthread_mutex_unlock(&job->mu);
}

int rk_handle_train(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__TrainRequest *r = (const void *)vr_call_request(call);
	struct rk_train_job *job = calloc(1, sizeof *job);
	if (!job)
		return VR_ENOMEM;
	job->svc = svc;
	pthread_mutex_init(&job->mu, NULL);
	vr_cond_init(&job->cv);
	int code = settings(job, r);
	if (code) {
		code = vr_call_error(call, code, "%s", job->msg);
		job_free(job);
		return code;
	}
	pthread_mutex_lock(&svc->train_mu);
	struct rk_train_job *busy = svc->job;
	if (busy) {
		pthread_mutex_lock(&busy->mu);
		uint32_t e = busy->epoch;
		pthread_mutex_unlock(&busy->mu);
		code = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				     "a training run is in progress (model %s, epoch %u/%u); wait for it or cancel it",
				     kind_name(busy->kind), e, busy->cfg.max_epochs);
		pthread_mutex_unlock(&svc->train_mu);
		job_free(job);
		return code;
	}
	svc->job = job;
	pthread_mutex_unlock(&svc->train_mu);

	Visrec__V1__TrainProgress out;
	struct progress loading = { .p = { .max_epochs = job->cfg.max_epochs }, .state = "loading" };
	to_proto(&loading, &out);
	int started = 0, lost = vr_call_send(call, &out.base) != 0;
	if (!lost) {
		int e = pthread_create(&job->tid, NULL, train_main, job);
		if (e)
			code = vr_call_error(call, GRPC_STATUS_UNAVAILABLE, "cannot start the training thread: %s",
					     strerror(e));
		started = !e;
	}
	while (started) {
		struct progress batch[QUEUE];
		unsigned n = 0;
		pthread_mutex_lock(&job->mu);
		if (!job->n && !job->finished)
			vr_cond_wait_until(&job->cv, &job->mu, vr_deadline_ms(POLL_MS));
		while (job->n) {
			batch[n++] = job->q[job->head];
			job->head = (job->head + 1) % QUEUE;
			job->n--;
		}
		int finished = job->finished;
		pthread_mutex_unlock(&job->mu);
		for (unsigned x = 0; x < n && !lost; x++) {
			to_proto(&batch[x], &out);
			lost = vr_call_send(call, &out.base) != 0;
		}
		if (lost || vr_call_stopping(call))
			job_cancel(job);
		if (finished)
			break;
	}
	if (started)
		pthread_join(job->tid, NULL);
	pthread_mutex_lock(&svc->train_mu);
	svc->job = NULL;
	pthread_mutex_unlock(&svc->train_mu);
	if (started) {
		int stopping = vr_call_stopping(call), gone = vr_call_cancelled(call) || lost;
		if (job->code == GRPC_STATUS_OK)
			code = GRPC_STATUS_OK;
		else if (gone)
			code = VR_ECANCELLED;
		else if (stopping)
			code = vr_call_error(call, GRPC_STATUS_UNAVAILABLE,
					     "rankd is shutting down: training stopped at epoch %u and was discarded; "
					     "the served model is unchanged", job->epoch);
		else
			code = vr_call_error(call, job->code, "%s", job->msg);
		if (job->code == GRPC_STATUS_CANCELLED)
			VR_INFO("Train %s cancelled at epoch %u/%u: the partial model is discarded",
				kind_name(job->kind), job->epoch, job->cfg.max_epochs);
	} else if (lost) {
		code = VR_ECANCELLED;
	}
	job_free(job);
	return code;
}
