/* dvbpr: the TrainVisual client that drives DVBPR's split training from
 * rankd (protocol: featured/train_visual.h; contract: dvbpr.h). Buffers
 * for a step (θ rows, margins, item id pointers) are allocated at create
 * and reused. The one thread that drives the session owns it all but the
 * call pointer, which rk_dvbpr_cancel reads from another thread: mu guards
 * it (set, cancelled, taken before it is finished and freed). */
#include "dvbpr.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "err.h"
#include "visrec/v1/featured.pb-c.h"

#define PATH "/visrec.v1.Featured/TrainVisual"
#define MAX_TRIPLES 128
#define MAX_HEAD_TRIPLES 1024   /* featured's limit for trunk sessions */

struct rk_dvbpr {
	pthread_mutex_t mu;         /* guards cc and cancelled */
	vr_ccall *cc;
	int cancelled;
	int started;                /* rk_dvbpr_start ran: a session starts once */
	rk_dvbpr_opts o;            /* its strings are the caller's */
	char session[65];
	uint64_t step;
	uint32_t k2, max_batch, n_items;
	const char *const *ids;
	float *theta, *margin;
	char **pos, **neg;
	enum rk_optim optim;
	rk_adam_opts adam_o;
	rk_dvbpr_adam adam;         /* Adam only */
	float *grad;                /* Adam only: the arena's gradient of a step */
	size_t n_params;
	rk_dvbpr_stats stats;
};

static int corrupt(vr_status *st, const char *what)
{
	if (st) {
		st->code = GRPC_STATUS_INTERNAL;
		snprintf(st->message, sizeof st->message, "featured's TrainVisual reply: %s", what);
	}
	return VR_ECORRUPT;
}

/* Takes the call out of d (NULL once ended), so that no cancel reaches
 * it while it is finished and freed. */
static vr_ccall *take_call(rk_dvbpr *d)
{
	pthread_mutex_lock(&d->mu);
	vr_ccall *cc = d->cc;
	d->cc = NULL;
	pthread_mutex_unlock(&d->mu);
	return cc;
}

/* A send or receive failed: the call is over; its status says why. */
static int ended(rk_dvbpr *d, int rc, vr_status *st)
{
	if (rc != VR_ERPC)
		return rc;
	vr_ccall_finish(take_call(d), st);
	if (st && st->code == GRPC_STATUS_OK) {
		st->code = GRPC_STATUS_UNAVAILABLE;
		snprintf(st->message, sizeof st->message, "featured ended the TrainVisual stream early");
	}
	return VR_ERPC;
}

/* Sends req and receives the reply of kind want. */
static int round_trip(rk_dvbpr *d, const Visrec__V1__TrainVisualRequest *req, int want,
		      Visrec__V1__TrainVisualResponse **resp, vr_status *st)
{
	ProtobufCMessage *m = NULL;
	if (!d->cc)
		return VR_ESTATE;
	int rc = vr_ccall_send(d->cc, &req->base);
	if (!rc)
		rc = vr_ccall_recv(d->cc, &m);
	if (rc == VR_EEOF)
		rc = VR_ERPC;
	if (rc)
		return ended(d, rc, st);
	*resp = (Visrec__V1__TrainVisualResponse *)m;
	if ((int)(*resp)->msg_case != want) {
		protobuf_c_message_free_unpacked(m, NULL);
		*resp = NULL;
		return corrupt(st, "a reply of another kind than the request");
	}
	return 0;
}

int rk_dvbpr_create(rk_dvbpr **out, const rk_model *model, const rk_dvbpr_opts *o)
{
	rk_dvbpr *d = NULL;
	*out = NULL;
	if (!o->session_id || strlen(o->session_id) >= sizeof d->session || !o->item_ids ||
	    !model->d.k2 || o->max_batch < 1 ||
	    o->max_batch > (o->trunk_layer && o->trunk_layer[0] ? MAX_HEAD_TRIPLES : MAX_TRIPLES))
		return VR_EINVAL;
	if (!(d = calloc(1, sizeof *d)))
		return VR_ENOMEM;
	pthread_mutex_init(&d->mu, NULL);
	d->o = *o;
	snprintf(d->session, sizeof d->session, "%s", o->session_id);
	d->k2 = model->d.k2;
	d->max_batch = o->max_batch;
	d->ids = o->item_ids;
	d->n_items = o->n_items;
	d->theta = malloc((size_t)d->max_batch * d->k2 * sizeof(float));
	d->margin = malloc(d->max_batch * sizeof(float));
	d->pos = malloc(d->max_batch * sizeof(char *));
	d->neg = malloc(d->max_batch * sizeof(char *));
	d->optim = o->optim;
	d->adam_o = o->adam;
	d->n_params = model->n_params;
	if (d->optim == RK_OPT_ADAM) {
		d->grad = malloc(d->n_params * sizeof(float));
		d->adam.m = calloc(d->n_params, sizeof(float));
		d->adam.v = calloc(d->n_params, sizeof(float));
	}
	if (!d->theta || !d->margin || !d->pos || !d->neg ||
	    (d->optim == RK_OPT_ADAM && (!d->grad || !d->adam.m || !d->adam.v))) {
		rk_dvbpr_close(d);
		return VR_ENOMEM;
	}
	*out = d;
	return 0;
}

int rk_dvbpr_start(rk_dvbpr *d, vr_channel *ch, uint64_t *step, vr_status *st)
{
	Visrec__V1__TrainVisualResponse *r = NULL;
	const rk_dvbpr_opts *o = &d->o;
	vr_ccall *cc = NULL;
	int rc;
	if (d->cc || d->started)
		return VR_ESTATE;
	if ((rc = vr_ccall_start(&cc, ch, PATH, &visrec__v1__train_visual_response__descriptor, 0,
				 NULL)))
		return rc;
	/* A cancel that came first ends the call at once. */
	pthread_mutex_lock(&d->mu);
	d->cc = cc;
	if (d->cancelled)
		vr_ccall_cancel(cc);
	pthread_mutex_unlock(&d->mu);
	d->started = 1;
	Visrec__V1__TrainVisualStart s = VISREC__V1__TRAIN_VISUAL_START__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	s.arch = (char *)o->arch;
	s.dims = d->k2;
	s.input_size = o->input_size;
	s.learning_rate = o->cnn_lr;
	s.weight_decay = o->cnn_wd;
	s.seed = o->seed;
	s.session_id = d->session;
	s.resume = o->resume;
	s.checkpoint_every = o->checkpoint_every;
	s.trunk_layer = (char *)o->trunk_layer;
	s.head_width = o->head_width;
	s.head_norm = o->head_norm;
	s.all_shards = o->all_shards;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START;
	req.start = &s;
	if ((rc = round_trip(d, &req, VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_STARTED, &r, st)))
		return rc;
	if (r->started->dims != d->k2 || !r->started->session_id ||
	    strcmp(r->started->session_id, d->session)) {
		rc = corrupt(st, "Started names another session or dims");
	} else {
		d->step = r->started->step;
		if (step)
			*step = d->step;
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return rc;
}

int rk_dvbpr_open(rk_dvbpr **out, vr_channel *ch, const rk_model *model, const rk_dvbpr_opts *o,
		  uint64_t *step, vr_status *st)
{
	int rc = rk_dvbpr_create(out, model, o);
	if (!rc && (rc = rk_dvbpr_start(*out, ch, step, st))) {
		rk_dvbpr_close(*out);
		*out = NULL;
	}
	return rc;
}

void rk_dvbpr_cancel(rk_dvbpr *d)
{
	pthread_mutex_lock(&d->mu);
	d->cancelled = 1;
	if (d->cc)
		vr_ccall_cancel(d->cc);
	pthread_mutex_unlock(&d->mu);
}

int rk_dvbpr_step(rk_dvbpr *d, rk_model *model, const uint32_t *u, const uint32_t *i,
		  const uint32_t *j, size_t n, float lr, float lambda, double *loss, vr_status *st)
{
	Visrec__V1__TrainVisualResponse *r = NULL;
	if (!n || n > d->max_batch || model->n_params != d->n_params)
		return VR_EINVAL;
	double t0 = vr_now_s();
	for (size_t t = 0; t < n; t++) {
		if (i[t] >= d->n_items || j[t] >= d->n_items || u[t] >= model->d.n_users)
			return VR_EINVAL;
		d->pos[t] = (char *)d->ids[i[t]];
		d->neg[t] = (char *)d->ids[j[t]];
	}
	rk_model_dvbpr_margins(model, u, i, j, n, d->theta, d->margin);
	Visrec__V1__TrainVisualStep s = VISREC__V1__TRAIN_VISUAL_STEP__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	s.session_id = d->session;
	s.step = d->step + 1;
	s.n_pos_items = s.n_neg_items = s.n_margin = n;
	s.pos_items = d->pos;
	s.neg_items = d->neg;
	s.margin = d->margin;
	s.n_theta = n * d->k2;
	s.theta = d->theta;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_STEP;
	req.step = &s;
	double t1 = vr_now_s();
	int rc = round_trip(d, &req, VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_STEP, &r, st);
	if (rc)
		return rc;
	double t2 = vr_now_s();
	const Visrec__V1__TrainVisualStepResult *res = r->step;
	if (res->step != d->step + 1 || res->n_g != n || res->n_loss != n ||
	    res->n_dtheta != n * d->k2) {
		rc = corrupt(st, "the step number or sizes differ from the request");
		goto leave;
	}
	if (d->optim == RK_OPT_ADAM) {
		float step, bc2s;
		memset(d->grad, 0, d->n_params * sizeof(float));
		rk_model_dvbpr_grad(model, u, i, j, n, res->g, res->dtheta, d->grad);
		rk_adam_scales(&d->adam_o, lr, ++d->adam.t, &step, &bc2s);
		rk_adam_update(model->params, d->grad, d->adam.m, d->adam.v, d->n_params, lambda,
			       &d->adam_o, step, bc2s);
	} else {
		rk_model_dvbpr_update(model, u, i, j, n, res->g, res->dtheta, lr, lambda);
	}
	if (loss) {
		double sum = 0;
		for (size_t t = 0; t < n; t++)
			sum += res->loss[t];
		*loss = sum;
	}
	d->step++;
	d->stats.steps++;
	d->stats.network_s += res->network_seconds;
	d->stats.round_trip_s += (t2 - t1) - res->network_seconds;
	d->stats.rankd_s += (t1 - t0) + (vr_now_s() - t2);
leave:
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return rc;
}

int rk_dvbpr_embed(rk_dvbpr *d, const uint32_t *items, size_t n, float *phi, vr_status *st)
{
	Visrec__V1__TrainVisualEmbed e = VISREC__V1__TRAIN_VISUAL_EMBED__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	e.session_id = d->session;
	e.items = d->pos;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_EMBED;
	req.embed = &e;
	for (size_t off = 0; off < n; off += d->max_batch) {
		Visrec__V1__TrainVisualResponse *r = NULL;
		size_t c = n - off < d->max_batch ? n - off : d->max_batch;
		for (size_t t = 0; t < c; t++) {
			if (items[off + t] >= d->n_items)
				return VR_EINVAL;
			d->pos[t] = (char *)d->ids[items[off + t]];
		}
		e.n_items = c;
		int rc = round_trip(d, &req, VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_EMBEDDED, &r, st);
		if (rc)
			return rc;
		if (r->embedded->dims != d->k2 || r->embedded->n_values != c * d->k2)
			rc = corrupt(st, "an embedding of the wrong size");
		else
			memcpy(phi + off * d->k2, r->embedded->values, c * d->k2 * sizeof(float));
		protobuf_c_message_free_unpacked(&r->base, NULL);
		if (rc)
			return rc;
	}
	return 0;
}

int rk_dvbpr_mark_best(rk_dvbpr *d, uint64_t *step, vr_status *st)
{
	Visrec__V1__TrainVisualResponse *r = NULL;
	Visrec__V1__TrainVisualMarkBest mb = VISREC__V1__TRAIN_VISUAL_MARK_BEST__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	mb.session_id = d->session;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_MARK_BEST;
	req.mark_best = &mb;
	int rc = round_trip(d, &req, VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_MARKED, &r, st);
	if (rc)
		return rc;
	if (r->marked->step != d->step)
		rc = corrupt(st, "Marked names another step than the session's");
	else if (step)
		*step = r->marked->step;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return rc;
}

int rk_dvbpr_finish(rk_dvbpr *d, int reembed, uint64_t from_step, uint32_t *version,
		    uint64_t *embedded, vr_status *st)
{
	Visrec__V1__TrainVisualResponse *r = NULL;
	Visrec__V1__TrainVisualFinish f = VISREC__V1__TRAIN_VISUAL_FINISH__INIT;
	Visrec__V1__TrainVisualRequest req = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	f.session_id = d->session;
	f.reembed = reembed;
	f.from_step = from_step;
	req.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_FINISH;
	req.finish = &f;
	int rc = round_trip(d, &req, VISREC__V1__TRAIN_VISUAL_RESPONSE__MSG_FINISHED, &r, st);
	if (rc)
		return rc;
	if (version)
		*version = r->finished->model_version;
	if (embedded)
		*embedded = r->finished->items_embedded;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	vr_ccall_close_send(d->cc);
	return vr_ccall_finish(take_call(d), st);
}

rk_dvbpr_adam *rk_dvbpr_adam_state(rk_dvbpr *d)
{
	return d->optim == RK_OPT_ADAM ? &d->adam : NULL;
}

uint64_t rk_dvbpr_step_no(const rk_dvbpr *d)
{
	return d->step;
}

void rk_dvbpr_stats_get(const rk_dvbpr *d, rk_dvbpr_stats *out)
{
	*out = d->stats;
}

void rk_dvbpr_close(rk_dvbpr *d)
{
	if (!d)
		return;
	vr_ccall *cc = take_call(d);
	if (cc) {
		vr_ccall_cancel(cc);
		vr_ccall_finish(cc, NULL);
	}
	pthread_mutex_destroy(&d->mu);
	free(d->theta);
	free(d->margin);
	free(d->pos);
	free(d->neg);
	free(d->grad);
	free(d->adam.m);
	free(d->adam.v);
	free(d);
}
