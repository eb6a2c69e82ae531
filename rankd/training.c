/* training: the Train handler: the request, the job and its progress stream.
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
 * cancels the trainer (it stops within one step), or a DVBPR run's
 * TrainVisual call (its round trip in progress ends at once, and featured
 * stops its side within one batch: the Start's trunk pass is minutes on a
 * loaded box), and joins the training thread. A cancelled run's model is
 * discarded and the served model stays as it was; a run keeps nothing
 * half-done: the swap is its last step. The call's thread always joins
 * the training thread before it frees the job and frees the slot.
 * The runs. BPR and VBPR run in train_mf.c (rk_trainer_run), DVBPR in
 * train_dvbpr.c (featured's TrainVisual); training_priv.h holds what
 * they share with this handler. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "deadline.h"
#include "err.h"
#include "log.h"
#include "training_priv.h"
#include "visrec/v1/rankd.pb-c.h"

#define POLL_MS 50          /* how often the call's thread looks at the call */
#define TRAIN_NICE 10
#define MAX_DIMS 4096
#define MAX_EPOCHS 100000
#define MAX_BATCH (1u << 22)
#define MAX_THREADS 256

const char *rk__kind_name(int kind)
{
	return kind == RK_MODEL_BPR ? "BPR" : kind == RK_MODEL_VBPR ? "VBPR" :
	       kind == RK_MODEL_DVBPR ? "DVBPR" : "?";
}

void rk__push(struct rk_train_job *job, const struct progress *p)
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

int rk__cancelled(struct rk_train_job *job)
{
	pthread_mutex_lock(&job->mu);
	int c = job->cancel;
	pthread_mutex_unlock(&job->mu);
	return c;
}

int rk__fail(struct rk_train_job *job, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(job->msg, sizeof job->msg, fmt, ap);
	va_end(ap);
	job->code = code;
	return code;
}

int rk__on_progress(void *ctx, const rk_progress *p)
{
	struct rk_train_job *job = ctx;
	struct progress m = { .p = *p, .state = "training" };
	rk__push(job, &m);
	VR_INFO("Train %s epoch %u/%u: loss %.5f, validation AUC %.4f, %.0f triples/s, lr %.3g",
		rk__kind_name(job->kind), p->epoch, p->max_epochs, p->loss, p->val_auc, p->triples_per_s,
		(double)p->lr);
	return rk__cancelled(job);
}

static void *train_main(void *arg)
{
	struct rk_train_job *job = arg;
	/* Linux: nice is per thread and inherited by the trainer's threads. */
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), TRAIN_NICE))
		VR_DEBUG("Train: cannot lower the training threads' priority: %s", strerror(errno));
	if (job->kind == RK_MODEL_DVBPR)
		rk__run_dvbpr(job);
	else
		rk__run_mf(job);
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
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"arch \"%.32s\" is not known: use \"alexnet\", \"cnnf\" or \"small\"", arch);
	if ((trunk && strlen(r->trunk_layer) >= sizeof dv->trunk_layer) || r->head_width > 4096 ||
	    (r->head_width && !trunk))
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"trunk_layer is a layer name of at most 31 characters; head_width (at most "
				"4096) needs trunk_layer");
	const char *norm = r->head_norm && r->head_norm[0] ? r->head_norm : NULL;
	if (norm && strcmp(norm, "l2") && strcmp(norm, "none"))
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"head_norm \"%.16s\" is not known: use \"l2\" or \"none\"", norm);
	if (norm && !strcmp(norm, "l2") && !r->head_width)
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"head_norm \"l2\" normalises a head's output and needs head_width > 0");
	if (!isfinite(r->cnn_learning_rate) || r->cnn_learning_rate < 0 ||
	    !isfinite(r->cnn_weight_decay) || r->cnn_weight_decay < 0 || r->input_size > 1024)
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"cnn_learning_rate and cnn_weight_decay must be finite and >= 0, input_size <= 1024");
	if (r->batch_size > max_batch)
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"DVBPR steps carry at most %u triples%s (batch_size %u)", max_batch,
				trunk ? " with a trunk" : "", r->batch_size);
	snprintf(dv->arch, sizeof dv->arch, "%s", arch);
	snprintf(dv->trunk_layer, sizeof dv->trunk_layer, "%s", trunk ? r->trunk_layer : "");
	dv->head_width = r->head_width;
	dv->head_norm = r->head_width && (!norm || !strcmp(norm, "l2"));
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
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT, "model is required: BPR or VBPR, or DVBPR");
	}
	if (r->epochs > MAX_EPOCHS || r->dims > MAX_DIMS || r->visual_dims > MAX_DIMS ||
	    r->batch_size > MAX_BATCH || r->threads > MAX_THREADS)
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"out of range: epochs <= %u, dims and visual_dims <= %u, batch_size <= %u, threads <= %u",
				MAX_EPOCHS, MAX_DIMS, MAX_BATCH, MAX_THREADS);
	if (!isfinite(r->learning_rate) || r->learning_rate < 0 || !isfinite(r->lambda) ||
	    r->lambda < 0 || !isfinite(r->lambda_e) || r->lambda_e < 0)
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"learning_rate, lambda and lambda_e must be finite and >= 0 (0 = default)");
	rk_train_config *c = &job->cfg;
	rk_train_config_default(c, job->kind == RK_MODEL_DVBPR ? RK_MODEL_BPR : job->kind);
	const char *opt = r->optimizer && r->optimizer[0] ? r->optimizer : NULL;
	if (opt && strcmp(opt, "adam") && strcmp(opt, "sgd"))
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"optimizer \"%.32s\" is not known: use \"adam\" or \"sgd\"", opt);
	if (opt && !strcmp(opt, "adam")) {
		c->optim = RK_OPT_ADAM;
		c->algo = RK_ALGO_MINIBATCH; /* Hogwild is SGD only */
	} else if (opt) {
		c->optim = RK_OPT_SGD;
	}
	const char *neg = r->negatives && r->negatives[0] ? r->negatives : NULL;
	if (neg && strcmp(neg, "uniform") && strcmp(neg, "popularity"))
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
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
		return rk__fail(job, GRPC_STATUS_INVALID_ARGUMENT,
				"feature_version (%u) names the featured vectors VBPR trains on; %s takes "
				"none (leave it 0)", r->feature_version, rk__kind_name(job->kind));
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

/* Asks the run to stop (trainer and featured's TrainVisual call included). */
static void job_cancel(struct rk_train_job *job)
{
	pthread_mutex_lock(&job->mu);
	job->cancel = 1;
	if (job->trainer)
		rk_trainer_cancel(job->trainer);
	if (job->dvbpr)
		rk_dvbpr_cancel(job->dvbpr);
	for (size_t k = 0; k < job->n_adopting; k++)
		if (job->adopting[k])
			vr_ccall_cancel(job->adopting[k]);
	pthread_mutex_unlock(&job->mu);
}

int rk_handle_train(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__TrainRequest *r = (const void *)vr_call_request(call);
	int refused = rk_refuse_write(svc, call);
	if (refused)
		return refused;
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
				     rk__kind_name(busy->kind), e, busy->cfg.max_epochs);
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
					     "rankd is shutting down: training stopped at epoch %u (%s) and was "
					     "discarded; the served model is unchanged", job->epoch,
					     job->msg[0] ? job->msg : "cancelled");
		else
			code = vr_call_error(call, job->code, "%s", job->msg);
		if (job->code == GRPC_STATUS_CANCELLED)
			VR_INFO("Train %s cancelled at epoch %u/%u (%s): the partial model is discarded",
				rk__kind_name(job->kind), job->epoch, job->cfg.max_epochs,
				job->msg[0] ? job->msg : "cancelled");
	} else if (lost) {
		code = VR_ECANCELLED;
	}
	job_free(job);
	return code;
}
