/* featured_client: Info and the Watch follower (see the header).
 *
 * DESIGN (the follower)
 * Threads: one, the follower's, which owns its calls (Info, Watch) and
 * calls the callbacks. Other threads only read the state, request a
 * rewind, or stop; they share the state below under f->mu, and reach the
 * open call only to cancel it (vr_ccall_cancel may come from any thread).
 * Work: while not connected, ask Info first (connected once it answers);
 * open Watch(after_seq = seq, include_vectors), hand each change to the
 * callback, advance seq when it accepts; when the stream breaks (or Info
 * fails), note why, wait the back-off (woken early by stop or rewind) and
 * try again.
 * End: rk_follower_stop sets stop, cancels the open call, wakes the wait
 * and joins; the thread never blocks anywhere else. */
#include "featured_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "deadline.h"
#include "err.h"
#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define INFO_MS 10000          /* deadline of featured Info */

/* ---- the follower ------------------------------------------------------- */

struct rk_follower {
	vr_channel *ch;
	const char *name;
	rk_follow_fn fn;
	rk_follow_state_fn state_fn;
	void *ctx;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu */
	uint64_t seq;
	uint64_t rewind_to;  /* valid when rewind */
	int rewind, stop;
	int joined;          /* rk_follower_halt joined the thread (or is joining it) */
	int failing;         /* the last Watch broke: say so once it answers again */
	int connected;       /* Info answered and no Watch broke since */
	uint64_t head;       /* Info's last_seq then */
	int64_t since_unix_ms;
	char error[256];
	vr_ccall *cc;        /* the open call (Info or Watch), for cancelling */
};

static int64_t unix_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Sets connected (error: why not, NULL when connected) and tells the
 * state callback when it changed. The follower's thread, f->mu not held. */
static void set_connected(rk_follower *f, int connected, const char *error)
{
	pthread_mutex_lock(&f->mu);
	int changed = f->connected != connected;
	f->connected = connected;
	if (changed)
		f->since_unix_ms = unix_ms();
	if (error)
		snprintf(f->error, sizeof f->error, "%s", error);
	pthread_mutex_unlock(&f->mu);
	if (changed && f->state_fn)
		f->state_fn(f->ctx, connected, error);
}

/* Starts a call on f->ch that stop and rewind can cancel (f->cc). Returns
 * vr_ccall_start's code; *cc is then f->cc. */
static int start_call(rk_follower *f, const char *path, const ProtobufCMessageDescriptor *desc,
		      int64_t deadline_ms, vr_ccall **cc)
{
	int rc = vr_ccall_start(cc, f->ch, path, desc, deadline_ms, NULL);
	if (rc)
		return rc;
	pthread_mutex_lock(&f->mu);
	f->cc = *cc;
	if (f->stop || f->rewind)
		vr_ccall_cancel(*cc);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static void end_call(rk_follower *f)
{
	pthread_mutex_lock(&f->mu);
	f->cc = NULL;
	pthread_mutex_unlock(&f->mu);
}

/* Info of the followed featured: is it there, and where its feed is.
 * Returns 0 (f->head set), or the failure with st filled. */
static int hello(rk_follower *f, vr_status *st)
{
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	int rc = start_call(f, "/visrec.v1.Featured/Info",
			    &visrec__v1__featured_info_response__descriptor, INFO_MS, &cc);
	if (rc)
		return rc;
	if (!(rc = vr_ccall_send(cc, &req.base)) && !(rc = vr_ccall_close_send(cc)))
		rc = vr_ccall_recv(cc, &m);
	if (rc && rc != VR_EEOF && rc != VR_ERPC)
		vr_ccall_cancel(cc);
	end_call(f);
	int frc = vr_ccall_finish(cc, st);
	if (!rc) {
		pthread_mutex_lock(&f->mu);
		f->head = ((Visrec__V1__FeaturedInfoResponse *)m)->last_seq;
		pthread_mutex_unlock(&f->mu);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	return rc ? (rc == VR_EEOF ? VR_ERPC : rc) : frc;
}

static void wait_ms(rk_follower *f, int ms)
{
	int64_t until = vr_deadline_ms(ms);
	pthread_mutex_lock(&f->mu);
	while (!f->stop && !f->rewind)
		if (vr_cond_wait_until(&f->cv, &f->mu, until))
			break;
	pthread_mutex_unlock(&f->mu);
}

/* One Watch: opens it after the current seq and applies changes until the
 * stream ends; *answered = 1 once featured sent a change. Returns 0 when it
 * ended for a stop or a rewind, else the reason it broke (st holds
 * featured's status for VR_ERPC). */
static int follow_once(rk_follower *f, vr_status *st, int *answered)
{
	Visrec__V1__WatchRequest req = VISREC__V1__WATCH_REQUEST__INIT;
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	st->code = GRPC_STATUS_OK;
	st->message[0] = 0;
	*answered = 0;
	pthread_mutex_lock(&f->mu);
	if (f->rewind && f->rewind_to < f->seq)
		f->seq = f->rewind_to;
	f->rewind = 0;
	req.after_seq = f->seq;
	req.include_vectors = 1;
	int stop = f->stop;
	int connected = f->connected;
	pthread_mutex_unlock(&f->mu);
	if (stop)
		return 0;
	int rc;
	if (!connected) {
		if ((rc = hello(f, st))) {
			pthread_mutex_lock(&f->mu);
			int quiet = f->stop || f->rewind;
			pthread_mutex_unlock(&f->mu);
			return quiet ? 0 : rc;
		}
		set_connected(f, 1, NULL);
	}
	if ((rc = start_call(f, "/visrec.v1.Featured/Watch", &visrec__v1__item_change__descriptor, 0,
			     &cc)))
		return rc;
	if (!(rc = vr_ccall_send(cc, &req.base)) && !(rc = vr_ccall_close_send(cc))) {
		while (!(rc = vr_ccall_recv(cc, &m))) {
			const Visrec__V1__ItemChange *c = (const void *)m;
			pthread_mutex_lock(&f->mu);
			int resumed = f->failing;
			f->failing = 0;
			pthread_mutex_unlock(&f->mu);
			*answered = 1;
			if (resumed)
				VR_INFO("featured %s: change feed resumed after seq %llu", f->name,
					(unsigned long long)req.after_seq);
			rc = f->fn(f->ctx, c);
			if (!rc) {
				pthread_mutex_lock(&f->mu);
				if (c->seq > f->seq)
					f->seq = c->seq;
				pthread_mutex_unlock(&f->mu);
			}
			protobuf_c_message_free_unpacked(m, NULL);
			if (rc)
				break;
		}
	}
	/* A stream that ended (EEOF, ERPC) has featured's status, which the
	 * warning names: cancelling it would turn that into CANCELLED. */
	if (rc && rc != VR_EEOF && rc != VR_ERPC)
		vr_ccall_cancel(cc);
	pthread_mutex_lock(&f->mu);
	f->cc = NULL;
	int quiet = f->stop || f->rewind || rc == VR_ECANCELLED;
	pthread_mutex_unlock(&f->mu);
	vr_ccall_finish(cc, st);
	return quiet ? 0 : rc == VR_EEOF ? VR_ERPC : rc;
}

static void *follow_main(void *arg)
{
	rk_follower *f = arg;
	int backoff = BACKOFF_MIN_MS;
	for (;;) {
		vr_status st;
		int answered;
		int rc = follow_once(f, &st, &answered);
		pthread_mutex_lock(&f->mu);
		int stop = f->stop, rewind = f->rewind, failing = f->failing;
		uint64_t seq = f->seq;
		if (rc && !rewind)
			f->failing = 1;
		pthread_mutex_unlock(&f->mu);
		if (stop)
			break;
		if (answered)
			backoff = BACKOFF_MIN_MS;
		if (!rc || rewind)
			continue;
		char why[256];
		snprintf(why, sizeof why, "%s%s%.200s",
			 rc == VR_ERPC ? vr_status_name(st.code) : vr_strerror(rc),
			 st.message[0] ? ": " : "", st.message);
		set_connected(f, 0, why);
		if (!failing)
			VR_WARN("featured %s: change feed interrupted after seq %llu (%s); "
				"reconnecting with back-off up to %d ms", f->name,
				(unsigned long long)seq, why, BACKOFF_MAX_MS);
		wait_ms(f, backoff);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

int rk_follower_start(rk_follower **out, vr_channel *ch, const char *name, uint64_t after_seq,
		      rk_follow_fn fn, rk_follow_state_fn state_fn, void *ctx)
{
	rk_follower *f = calloc(1, sizeof *f);
	*out = NULL;
	if (!f)
		return VR_ENOMEM;
	f->ch = ch;
	f->name = name;
	f->state_fn = state_fn;
	f->since_unix_ms = unix_ms();
	f->fn = fn;
	f->ctx = ctx;
	f->seq = after_seq;
	pthread_mutex_init(&f->mu, NULL);
	vr_cond_init(&f->cv);
	int e = pthread_create(&f->tid, NULL, follow_main, f);
	if (e) {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->mu);
		free(f);
		return -e;
	}
	*out = f;
	return 0;
}

void rk_follower_rewind(rk_follower *f, uint64_t seq)
{
	pthread_mutex_lock(&f->mu);
	if (seq < f->seq) {
		if (!f->rewind || seq < f->rewind_to)
			f->rewind_to = seq;
		f->rewind = 1;
		if (f->cc)
			vr_ccall_cancel(f->cc);
		pthread_cond_broadcast(&f->cv);
	}
	pthread_mutex_unlock(&f->mu);
}

int rk_follower_rewinding(rk_follower *f)
{
	pthread_mutex_lock(&f->mu);
	int r = f->rewind;
	pthread_mutex_unlock(&f->mu);
	return r;
}

uint64_t rk_follower_seq(rk_follower *f)
{
	pthread_mutex_lock(&f->mu);
	uint64_t s = f->seq;
	pthread_mutex_unlock(&f->mu);
	return s;
}

void rk_follower_state_get(rk_follower *f, rk_follower_state *out)
{
	pthread_mutex_lock(&f->mu);
	out->seq = f->seq;
	out->head = f->head;
	out->connected = f->connected;
	out->since_unix_ms = f->since_unix_ms;
	memcpy(out->error, f->error, sizeof out->error);
	pthread_mutex_unlock(&f->mu);
}

void rk_follower_halt(rk_follower *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	int joined = f->joined;
	f->stop = 1;
	f->joined = 1;
	if (f->cc)
		vr_ccall_cancel(f->cc);
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	if (!joined)
		pthread_join(f->tid, NULL);
}

void rk_follower_stop(rk_follower *f)
{
	if (!f)
		return;
	rk_follower_halt(f);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	free(f);
}
