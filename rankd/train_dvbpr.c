/* train_dvbpr: the DVBPR run.
 *
 * DESIGN
 * The training thread drives featured's TrainVisual stream itself
 * (rk__run_dvbpr, through rankd/dvbpr.h) instead of rk_trainer_run: it samples
 * each step's triples, sends them, applies featured's answer to θ, γ, β by
 * Adam (or SGD), asks featured for every item's φ at each epoch's end
 * (validation AUC on the held-out items), and after an epoch better than
 * every earlier one keeps a copy of its half and has featured keep the
 * net (mark_best); patience epochs without gain stop the run. It
 * checkpoints its half, the best epoch's and Adam's state at the steps
 * featured checkpoints its net (rk_snap_ckpt_save: one LMDB transaction
 * with its models, snapshot.h), and at the end has
 * featured re-embed every item with the best epoch's net as a new model
 * version, fetches that version's vectors (not featured's active
 * version's: the model keeps the version it was trained with) and serves
 * β_i + γ_u·γ_i + θ_u·φ_i of the best epoch. A failure of featured ends
 * the call with its status and the step of the last checkpoint;
 * TrainRequest.resume continues from there.
 *
 * With several featured shards (featured.proto, "DVBPR across shards"),
 * the first shard of the sorted list is the trainer: its TrainVisual
 * caches every shard's images (all_shards), its Finish makes the version
 * and re-embeds its own items, and adopt_everywhere has every other shard
 * adopt that version (AdoptModel, in parallel) before any vector of it is
 * fetched. The model is served only once every shard answered, so a
 * shard that fails mid-switch fails the Train naming it and the previous
 * model keeps serving. */
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "featured_shards.h"
#include "dvbpr.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "training_priv.h"

/* ---- DVBPR: the loop over featured's TrainVisual ---------------------------- */

/* Validation AUC (DESIGN.md 8, standard protocol): per user with a
 * validation item v, AUC by metrics.h's one rule (vr_auc) of v against
 * the items not among u's training items, averaged. rows: the item matrix
 * (n_items × D) with the current φ; ex: room for the longest training
 * list. */
static double dv_validate(const rk_model *m, const float *rows, const rk_csr *train,
			  const uint32_t *valid, float *scores, float *urow, uint32_t *ex)
{
	uint32_t n = m->d.n_items, dim = rk_model_dim(m);
	struct vr_metrics_cfg std;
	vr_metrics_cfg_init(&std);
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
		size_t n_ex, x = 0;
		vr_metrics_exclusion(&std, train->item + train->off[u], train->off[u + 1] - train->off[u],
				     v, ex, &n_ex);
		/* The negatives' scores, gathered in place (ex is ascending). */
		uint64_t count = 0, above = 0, tied = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (x < n_ex && ex[x] == i) {
				x++;
				continue;
			}
			if (i != v)
				scores[count++] = scores[i];
		}
		vr_auc_count(sv, scores, count, &above, &tied);
		sum += vr_auc(count, above, tied);
		users++;
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

/* A TrainVisual round trip failed in the phase fmt names ("DVBPR step
 * 12"): CANCELLED when the run was cancelled (job_cancel cancelled the
 * call), else featured's failure with the checkpoint to resume from. */
static int rpc_fail(struct rk_train_job *job, int rc, const vr_status *st, uint64_t ckpt_step,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int rpc_fail(struct rk_train_job *job, int rc, const vr_status *st, uint64_t ckpt_step,
		    const char *fmt, ...)
{
	char phase[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(phase, sizeof phase, fmt, ap);
	va_end(ap);
	if (rk__cancelled(job))
		return rk__fail(job, GRPC_STATUS_CANCELLED, "cancelled during %s", phase);
	if (rc == VR_ERPC)
		return rk__fail(job, st->code == GRPC_STATUS_OK ? GRPC_STATUS_UNAVAILABLE : st->code,
				"featured at %s failed during %s: %s: %s; the last checkpoint is at "
				"step %" PRIu64 ": train again with resume to continue",
				vr_shards_count(job->svc->shards) > 1 ? vr_shards_name(job->svc->shards, 0) :
				job->svc->featured_addr, phase, vr_status_name(st->code), st->message,
				ckpt_step);
	return rk__fail(job, rc == VR_ECORRUPT ? GRPC_STATUS_INTERNAL : vr_status_from_rc(rc),
			"%s failed: %s%s%s", phase, vr_strerror(rc), st->message[0] ? ": " : "",
			st->message);
}

/* ---- DVBPR across shards: every other shard adopts the trainer's version -- */

/* One shard's re-embedding of its items: minutes for large shards. */
#define ADOPT_MS (30 * 60 * 1000)

struct adopt_call {
	struct rk_train_job *job;
	rk_service *svc;
	size_t k;              /* the shard */
	uint32_t version;
	pthread_t tid;
	int started, rc;
	vr_status st;
	uint64_t embedded;
};

/* One shard's AdoptModel, as a call the job can cancel (job_cancel: the
 * shard then stops re-embedding, as its handler sees the call end). */
static void *adopt_one(void *arg)
{
	struct adopt_call *a = arg;
	struct rk_train_job *job = a->job;
	Visrec__V1__AdoptModelRequest req = VISREC__V1__ADOPT_MODEL_REQUEST__INIT;
	Visrec__V1__AdoptModelResponse *resp = NULL;
	vr_ccall *cc = NULL;
	req.model_version = a->version;
	req.from = (char *)vr_shards_name(a->svc->shards, 0);
	a->rc = vr_ccall_start(&cc, vr_shards_channel(a->svc->shards, a->k),
			       "/visrec.v1.Featured/AdoptModel", &visrec__v1__adopt_model_response__descriptor,
			       ADOPT_MS, NULL);
	if (!a->rc) {
		pthread_mutex_lock(&job->mu);
		job->adopting[a->k] = cc;
		if (job->cancel)
			vr_ccall_cancel(cc);
		pthread_mutex_unlock(&job->mu);
		if (!(a->rc = vr_ccall_send(cc, &req.base)) && !(a->rc = vr_ccall_close_send(cc)))
			a->rc = vr_ccall_recv(cc, (ProtobufCMessage **)&resp);
		pthread_mutex_lock(&job->mu);
		job->adopting[a->k] = NULL;
		pthread_mutex_unlock(&job->mu);
		/* A status other than OK says why; with OK, recv's error stands
		 * (no answer at all: one that does not unpack). */
		int frc = vr_ccall_finish(cc, &a->st);
		if (frc)
			a->rc = frc;
		else if (a->rc == VR_EEOF)
			a->rc = VR_EINVAL;
	}
	if (!a->rc && resp->model_version != a->version) {
		a->rc = VR_ECORRUPT;
		snprintf(a->st.message, sizeof a->st.message, "it answered version %u",
			 resp->model_version);
	}
	if (!a->rc)
		a->embedded = resp->items_embedded;
	if (resp)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	return NULL;
}

/* Has every shard but the trainer (shard 0) adopt version: all at once,
 * each with its deadline. Returns 0 when every one answered; else fails
 * the job naming each shard that did not (its status when it refused,
 * UNAVAILABLE when it could not be reached or died) and returns that
 * code: nothing of version is served then. */
static int adopt_everywhere(struct rk_train_job *job, uint32_t version)
{
	rk_service *svc = job->svc;
	size_t n = vr_shards_count(svc->shards);
	struct adopt_call *a = calloc(n, sizeof *a);
	char who[1024] = "";
	uint64_t embedded = 0;
	size_t failed = 0, first = 0, at = 0;
	double t0 = vr_now_s();
	vr_ccall **calls = calloc(n, sizeof *calls);
	if (!a || !calls) {
		free(a);
		free(calls);
		return rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for AdoptModel");
	}
	pthread_mutex_lock(&job->mu);
	job->adopting = calls;
	job->n_adopting = n;
	pthread_mutex_unlock(&job->mu);
	for (size_t k = 1; k < n; k++) {
		a[k] = (struct adopt_call){ .job = job, .svc = svc, .k = k, .version = version };
		if (pthread_create(&a[k].tid, NULL, adopt_one, &a[k]))
			adopt_one(&a[k]); /* no thread: this one in turn */
		else
			a[k].started = 1;
	}
	for (size_t k = 1; k < n; k++) {
		if (a[k].started)
			pthread_join(a[k].tid, NULL);
		if (!a[k].rc) {
			embedded += a[k].embedded;
			continue;
		}
		if (!failed++)
			first = k;
		if (at < sizeof who)
			at += (size_t)snprintf(who + at, sizeof who - at, "%s%s", at ? ", " : "",
					       vr_shards_name(svc->shards, k));
	}
	pthread_mutex_lock(&job->mu);
	job->adopting = NULL;
	job->n_adopting = 0;
	pthread_mutex_unlock(&job->mu);
	free(calls);
	if (failed && rk__cancelled(job)) {
		free(a);
		return rk__fail(job, GRPC_STATUS_CANCELLED, "cancelled while the other shards adopted "
				"model version %u (%s not done); nothing of it is served, the previous model "
				"serves on", version, who);
	}
	if (failed) {
		struct adopt_call *f = &a[first];
		int code = f->rc != VR_ERPC ? vr_status_from_rc(f->rc) :
			f->st.code == GRPC_STATUS_FAILED_PRECONDITION ||
			f->st.code == GRPC_STATUS_NOT_FOUND || f->st.code == GRPC_STATUS_CANCELLED ?
			f->st.code : GRPC_STATUS_UNAVAILABLE;
		rk__fail(job, code, "featured shard%s %s did not adopt model version %u of the trainer "
			 "shard %s (%s: %s%s%s); nothing of it is served, the previous model serves on; "
			 "train again once %s back (version %u stays unused where it was adopted)",
			 failed > 1 ? "s" : "", who, version, vr_shards_name(svc->shards, 0),
			 vr_shards_name(svc->shards, first), f->rc == VR_ERPC ?
			 vr_status_name(f->st.code) : vr_strerror(f->rc), f->st.message[0] ? ": " : "",
			 f->st.message, failed > 1 ? "they are" : "it is", version);
		free(a);
		return code;
	}
	VR_INFO("Train DVBPR: %zu other shards adopted model version %u of the trainer shard %s "
		"(%" PRIu64 " items re-embedded) in %.1f s", n - 1, version,
		vr_shards_name(svc->shards, 0), embedded, vr_now_s() - t0);
	free(a);
	return 0;
}

int rk__run_dvbpr(struct rk_train_job *job)
{
	rk_service *svc = job->svc;
	const struct dvbpr_settings *dv = &job->dv;
	const rk_train_config *c = &job->cfg;
	struct split sp = { 0 };
	uint32_t *tr = NULL, *items = NULL, *ex = NULL, fversion = 0;
	char **ids = NULL, *blob = NULL;
	float *phi = NULL, *rows = NULL, *scores = NULL, *urow = NULL;
	rk_model *model = NULL, *best = NULL;
	rk_sampler *smp = NULL;
	rk_dvbpr *d = NULL;
	struct fetch f = { .job = job };
	rk_snap_ckpt ck = { .magic = RK_SNAP_CKPT_MAGIC, .epoch = 1, .best_auc = NAN,
			      .best_loss = NAN };
	vr_status st = { 0 };
	rk_rng rng;
	uint64_t ckpt_step = 0, step0 = 0;
	double t_start = 0;
	int rc;

	if (!svc->featured) {
		rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			 "DVBPR trains its CNN in featured, and rankd runs without one (--featured)");
		goto leave;
	}
	const rk_csr *on = NULL;
	if (rk__load_interactions(job, &sp))
		goto leave;
	on = sp.on;
	uint32_t *valid = sp.valid;
	if (!valid) { /* use_all: nothing held out, so no user validates */
		if (!(valid = sp.valid = malloc(((size_t)sp.all.n_users + 1) * sizeof *valid))) {
			rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for the validation items");
			goto leave;
		}
		for (uint32_t u = 0; u < sp.all.n_users; u++)
			valid[u] = RK_NONE;
	}
	rk_model_dims md;
	rk_model_dims_default(&md, RK_MODEL_DVBPR, sp.all.n_users, sp.all.n_items, 0);
	md.k = dv->no_latent ? 0 : job->k ? job->k : md.k;
	md.k2 = job->k2 ? job->k2 : !strcmp(dv->arch, "alexnet") ? 100 : 50;
	if ((rc = rk_model_create(&model, &md))) {
		rk__fail(job, vr_status_from_rc(rc), "cannot create a DVBPR model of %u users × %u items: %s",
			 md.n_users, md.n_items, vr_strerror(rc));
		goto leave;
	}
	rk_model_init(model, c->seed);
	if ((rc = rk_sampler_create(&smp, on, &c->sampler))) {
		rk__fail(job, rc == VR_ENOTFOUND ? GRPC_STATUS_FAILED_PRECONDITION : vr_status_from_rc(rc),
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
		rk_model *m = NULL;
		if ((rc = rk_snap_ckpt_load(&svc->snap, model, &m, &best, &ck))) {
			rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
				 "cannot resume DVBPR: %s (no checkpoint of a run on these interactions and "
				 "settings)", vr_strerror(rc));
			goto leave;
		}
		rk_model_free(model);
		model = m;
		memcpy(rng.s, ck.rng, sizeof rng.s);
		ckpt_step = ck.step;
	} else {
		snprintf(ck.session, sizeof ck.session, "dvbpr-%" PRIu64 "-%lld", c->seed,
			 (long long)rk__unix_now());
	}
	snprintf(ck.arch, sizeof ck.arch, "%s", dv->arch);
	uint32_t batch = c->batch;
	uint64_t per_epoch = c->epoch_triples ? c->epoch_triples : on->nnz;
	uint64_t steps = (per_epoch + batch - 1) / batch;
	/* Both ends save at the same steps: every 200, or every epoch if shorter. */
	uint32_t every = steps < dv->checkpoint_every ? (uint32_t)steps : dv->checkpoint_every;
	size_t nb = batch, longest = 0;
	for (uint32_t u = 0; u < on->n_users; u++)
		if (on->off[u + 1] - on->off[u] > longest)
			longest = on->off[u + 1] - on->off[u];
	if (item_ids(svc, md.n_items, &ids, &blob) ||
	    !(ex = malloc((longest + 1) * sizeof *ex)) ||
	    !(tr = malloc(3 * nb * sizeof *tr)) || !(items = malloc(md.n_items * sizeof *items)) ||
	    !(phi = malloc((size_t)md.n_items * md.k2 * sizeof *phi)) ||
	    !(rows = malloc((size_t)md.n_items * rk_model_dim(model) * sizeof *rows)) ||
	    !(scores = malloc(md.n_items * sizeof *scores)) ||
	    !(urow = malloc(rk_model_dim(model) * sizeof *urow))) {
		rk__fail(job, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for DVBPR's buffers");
		goto leave;
	}
	for (uint32_t i = 0; i < md.n_items; i++)
		items[i] = i;
	rk_dvbpr_opts o = { .arch = dv->arch, .input_size = dv->input_size, .cnn_lr = dv->cnn_lr,
			    .cnn_wd = dv->cnn_wd, .seed = c->seed, .session_id = ck.session,
			    .resume = dv->resume, .checkpoint_every = every,
			    .item_ids = (const char *const *)ids, .n_items = md.n_items,
			    .max_batch = batch, .trunk_layer = dv->trunk_layer,
			    .head_width = dv->head_width, .head_norm = dv->head_norm,
			    .optim = c->optim,
			    .all_shards = vr_shards_count(svc->shards) > 1,
			    .adam = { c->adam_beta1, c->adam_beta2, c->adam_eps } };
	/* The session is the job's to cancel before its Start, which takes as
	 * long as featured's image cache and trunk pass. */
	if ((rc = rk_dvbpr_create(&d, model, &o))) {
		rk__fail(job, vr_status_from_rc(rc), "cannot set up the DVBPR session: %s",
			 vr_strerror(rc));
		goto leave;
	}
	pthread_mutex_lock(&job->mu);
	job->dvbpr = d;
	if (job->cancel)
		rk_dvbpr_cancel(d);
	pthread_mutex_unlock(&job->mu);
	if ((rc = rk_dvbpr_start(d, svc->featured, &step0, &st))) {
		rpc_fail(job, rc, &st, ckpt_step, "featured's TrainVisual start (%s)",
			 dv->trunk_layer[0] ? "its image cache and trunk pass" : "its image cache");
		goto leave;
	}
	if (dv->resume && step0 != ck.step) {
		rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			 "cannot resume DVBPR session %s: featured's checkpoint is at step %" PRIu64
			 " and rankd's at step %" PRIu64, ck.session, step0, ck.step);
		goto leave;
	}
	rk_dvbpr_adam *adam = rk_dvbpr_adam_state(d);
	if (dv->resume && !adam != !ck.adam_t) {
		rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			 "cannot resume DVBPR session %s: its checkpoint was made with %s and this run "
			 "asks for %s (optimizer)", ck.session, ck.adam_t ? "Adam" : "SGD",
			 adam ? "Adam" : "SGD");
		goto leave;
	}
	if (dv->resume && adam &&
	    (rc = rk_snap_ckpt_load_adam(&svc->snap, &ck, adam->m, adam->v, model->n_params))) {
		rk__fail(job, GRPC_STATUS_FAILED_PRECONDITION,
			 "cannot resume DVBPR session %s: its Adam state cannot be read: %s", ck.session,
			 vr_strerror(rc));
		goto leave;
	}
	if (dv->resume && adam)
		adam->t = ck.adam_t;
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
			if (rk__cancelled(job)) {
				rk__fail(job, GRPC_STATUS_CANCELLED, "cancelled before DVBPR step %" PRIu64
					 " (epoch %u)", rk_dvbpr_step_no(d) + 1, ck.epoch);
				goto leave;
			}
			rk_sampler_fill(smp, &rng, nb, tr, tr + nb, tr + 2 * nb);
			if ((rc = rk_dvbpr_step(d, model, tr, tr + nb, tr + 2 * nb, nb, c->lr, c->lambda,
						&loss, &st))) {
				rpc_fail(job, rc, &st, ckpt_step, "DVBPR step %" PRIu64,
					 rk_dvbpr_step_no(d) + 1);
				goto leave;
			}
			ck.epoch_loss += loss;
			ck.step = rk_dvbpr_step_no(d);
			if (ck.step % every == 0) {
				ck.epoch_step++; /* this step is done */
				memcpy(ck.rng, rng.s, sizeof ck.rng);
				ck.adam_t = adam ? adam->t : 0;
				model->version = ck.step;
				if (best)
					best->version = ck.step;
				if ((rc = rk_snap_ckpt_save(&svc->snap, model, best, adam ? adam->m : NULL,
							    adam ? adam->v : NULL, &ck)))
					VR_WARN("Train DVBPR: cannot save the checkpoint at step %" PRIu64 ": %s",
						ck.step, vr_strerror(rc));
				else
					ckpt_step = ck.step;
				ck.epoch_step--;
			}
		}
		/* φ of every item with the net as it is now, for validation. */
		if ((rc = rk_dvbpr_embed(d, items, md.n_items, phi, &st))) {
			rpc_fail(job, rc, &st, ckpt_step, "epoch %u's validation embedding (step %"
				 PRIu64 ")", ck.epoch, rk_dvbpr_step_no(d));
			goto leave;
		}
		/* A step too large for the data sends values to infinity: say so,
		 * rather than serve (or fail to index) a model of NaNs. */
		const char *bad = !rk_all_finite(phi, (size_t)md.n_items * md.k2) ? "featured's item vectors" :
				  !rk_all_finite(model->params, model->n_params) ? "rankd's parameters" : NULL;
		if (bad) {
			rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				 "DVBPR diverged in epoch %u (step %" PRIu64 "): %s are no longer finite; "
				 "train again with a smaller lr (%g) or cnn_learning_rate (%g)", ck.epoch,
				 rk_dvbpr_step_no(d), bad, (double)c->lr, (double)dv->cnn_lr);
			goto leave;
		}
		rk_model_item_rows(model, NULL, phi, md.n_items, rows);
		double auc = dv_validate(model, rows, on, valid, scores, urow, ex);
		double loss = ck.epoch_loss / ((double)steps * nb);
		epochs = ck.epoch;
		last_loss = loss;
		/* The best epoch so far, as rk_trainer_run's: its model here and
		 * its net kept by featured, to be served at the end. */
		if (!isnan(auc) && (!ck.best_epoch || auc > ck.best_auc + c->min_delta)) {
			if ((rc = best ? rk_model_copy(best, model) : rk_model_clone(model, &best))) {
				rk__fail(job, vr_status_from_rc(rc), "cannot keep DVBPR's best epoch: %s",
					 vr_strerror(rc));
				goto leave;
			}
			if ((rc = rk_dvbpr_mark_best(d, &ck.best_step, &st))) {
				rpc_fail(job, rc, &st, ckpt_step, "mark_best of epoch %u (step %" PRIu64
					 ")", ck.epoch, rk_dvbpr_step_no(d));
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
		rk__on_progress(job, &p);
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
		rpc_fail(job, rc, &st, ckpt_step, "featured's Finish (re-embedding every item with "
			 "the net of step %" PRIu64 ")", from_step ? from_step : rk_dvbpr_step_no(d));
		goto leave;
	}
	VR_INFO("Train DVBPR: featured re-embedded %" PRIu64 " items with the net of step %" PRIu64
		" (epoch %u) into model version %u", embedded, from_step ? from_step : ck.step,
		best ? ck.best_epoch : epochs, version);
	if (vr_shards_count(svc->shards) > 1 && adopt_everywhere(job, version))
		goto leave;
	/* The served φ: that version's vectors, whatever featured's active
	 * version is (the model keeps the version it was trained with). */
	if (rk__fetch_vectors(job, &f, version, &fversion))
		goto leave;
	if (fversion != version || f.dims != md.k2) {
		rk__fail(job, GRPC_STATUS_INTERNAL,
			 "featured sent vectors of version %u with %u dims for the run's version %u of %u",
			 fversion, f.dims, version, md.k2);
		goto leave;
	}
	if (rk__pad_vectors(job, &f, sp.all.n_items))
		goto leave;
	uint64_t sversion = 0;
	if (rk__serve_model(job, &model, f.feats, NULL, sp.all.n_items, fversion, &sp.all, on,
			    f.have_base ? f.base_seq : NULL, &sversion))
		goto leave;
	rk_progress last = { .epoch = epochs, .max_epochs = c->max_epochs,
			     .loss = best ? ck.best_loss : last_loss,
			     .val_auc = best ? ck.best_auc : NAN, .best_auc = ck.best_auc,
			     .best_epoch = ck.best_epoch, .lr = c->lr,
			     .elapsed_s = vr_now_s() - t_start };
	struct progress done = { .p = last, .state = stopped_early ? "stopped_early" : "finished",
				 .done = 1, .version = sversion };
	rk__push(job, &done);
	VR_INFO("Train DVBPR done: model v%" PRIu64 " (best epoch %u of %u, validation AUC %.4f, "
		"featured version %u) is served", sversion, ck.best_epoch, epochs, ck.best_auc,
		version);
	job->code = GRPC_STATUS_OK;
leave:
	pthread_mutex_lock(&job->mu);
	job->dvbpr = NULL;
	pthread_mutex_unlock(&job->mu);
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
	free(ex);
	rk__split_free(&sp);
	return job->code;
}
