/* rpc server: serves method tables of protobuf-c messages over gRPC core.
 *
 * DESIGN
 * Threads. K worker threads, each blocked in grpc_completion_queue_next on
 * its own notification queue (registered with the server). Streaming
 * handlers, and unary ones marked own_thread, get one thread each, drawn
 * from one of three bounded pools so that no kind of call can starve
 * another: followers (long-lived feeds such as Watch: max_followers, and
 * max_followers_per_peer per client address), admin calls (methods that
 * need the token: max_admin_streams) and the rest (max_streams). A call
 * beyond its pool's limit is answered RESOURCE_EXHAUSTED naming the limit;
 * an open feed never costs an admin call its thread.
 *
 * Ownership. Every requested call (a vr_call) but an inline unary one
 * (below) carries a completion queue of its own, given to core as the
 * call's cq_bound_to_call, so every event of a call (its batches and its
 * RECV_CLOSE_ON_SERVER) arrives on that queue and the one thread that
 * owns the call sees them all: no per-call lock. The owner is the worker while it checks and unpacks the request
 * and runs a unary handler inline; otherwise the worker hands the call
 * to a new thread and never touches it again; a unary handler may hand it
 * to another thread with VR_DETACHED. The owner waits for its own batches
 * by draining the call's queue and marking which op finished; the close
 * op completes early only when the call is cancelled, which is how
 * handlers see cancellation without blocking.
 *
 * Inline unary. A unary call whose handler runs on the worker (not
 * own_thread) is bound to the worker's own notification queue instead,
 * and its final batch (metadata, message and status in one) is started
 * and not waited for: the worker goes back to its queue at once, and the
 * completions of the call's two ops (close, final batch) come to it there
 * among new calls; whichever completes last ends the call (c->left). Waiting
 * on a call's own queue instead made each call a sleep and a wake-up of
 * its worker (a futex pair, a context switch) behind the executor thread
 * core hands a contended transport's writes to, and one sendmsg per call;
 * not waiting lets writes of calls finished together go out in one (bench_rpc
 * --perf, 64 in flight: futex calls 2.1 -> 0.5, context switches 2.6 ->
 * 0.7, sendmsg 1.04 -> 0.6 per call). An inline handler that asks whether
 * its call was cancelled takes what waits on the worker's queue without
 * blocking (worker_poll): ops are marked, arrivals kept for the loop. A
 * detached call's owner reads the close mark the worker sets (atomic), and
 * its vr_call_finish only starts the batch; the worker ends the call.
 *
 * Followers. A follower's handler spends its life asleep, waiting for
 * something to send (a change committed, a status set), and must still
 * wake the moment its client goes away; a thread cannot sleep on a
 * condition variable and on its call's queue at once, and waking every
 * so often to look would keep an idle server busy. So follower calls are
 * bound to one shared queue instead, drained by the reactor thread, which
 * marks each finished op under the call's own mutex and signals the
 * owner (the reactor's queue does no polling of its own: idle workers
 * poll for everyone); when a follower's close op completes (cancellation), it also runs
 * the wake-up the handler registered (vr_call_wake_on_stop), which
 * broadcasts the condition variable the handler sleeps on. Shutdown runs
 * every registered wake-up too. The owner still owns the call; the
 * reactor touches only the op marks, under the call's mutex.
 *
 * Arming. Each worker keeps one request armed per unary method and
 * re-arms after the handler returns, so a busy worker holds no request
 * and core routes the next call to an idle one (core offers a call first
 * to the worker of the connection it came on). Streaming methods keep two
 * armed per worker, re-armed on arrival since their handlers leave the
 * worker at once. Two generic requests per worker take methods nobody
 * registered and answer UNIMPLEMENTED, so such calls never hang. A
 * worker blocked in a long inline handler still holds requests of other
 * methods, and calls core gives it wait; that is what own_thread is for.
 *
 * Reuse. A call that ends keeps its completion queue if it has one (empty: its
 * owner waited for every op it started) and its metadata array's room,
 * and goes on a free list of up to SPARE_MAX calls that arm() takes from,
 * so a unary call costs no queue made and destroyed and no metadata
 * array grown (measured with bench_rpc --perf). Followers, which use the
 * shared queue, are not kept. Once the server is stopping, ended calls
 * are freed instead, and shutdown frees the list.
 *
 * End. vr_server_shutdown stops admission (grpc_server_shutdown_and_notify:
 * armed requests come back failed and are freed), waits up to the grace
 * for calls to finish (srv->pending counts armed requests and live calls;
 * core's own notify tag also waits for idle connections to close), then
 * cancels whatever is left (every blocked batch fails, handlers return,
 * connections drop), waits for the notify tag and for stream threads, and
 * finally shuts each worker queue and joins its thread after it drained
 * the queue to GRPC_QUEUE_SHUTDOWN, and the reactor's queue last. A
 * call's own queue is shut and drained when the call is freed.
 *
 * Why one file at ~1,580 lines: the server side of one mechanism, the
 * calls' life cycle over gRPC core, whose threads, pools and queues share
 * the state described above. */
#include "rpc_int.h"

#include "deadline.h"
#include "err.h"
#include "log.h"
#include "prom.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { TAG_CALL = 1, TAG_SHUTDOWN = 2, TAG_OP = 3 };
enum { GENERIC_ARMED = 2, STREAM_ARMED = 2, UNARY_ARMED = 1 };
enum { SPARE_MAX = 64 };

/* gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED). */
#define NCODES 17

struct method_rt {
	vr_method m;
	void *registered; /* core's handle */
	/* Metrics (see "metrics" below): calls in flight, their latency,
	 * and the requests by status code, each code's series made when
	 * that code is first answered. */
	vr_prom_series *inflight, *duration;
	_Atomic(vr_prom_series *) requests[NCODES];
};

struct worker {
	vr_server *srv;
	grpc_completion_queue *cq;
	pthread_t tid;
	int running;
	/* Calls that arrived while an inline handler polled the queue
	 * (worker_poll), dispatched by the loop in arrival order. */
	vr_call *ready, **ready_tail;
};

/* The pools calls on threads of their own are drawn from (see DESIGN). */
enum pool { POOL_READ, POOL_ADMIN, POOL_FOLLOW, NPOOLS };

struct stream_thr {
	pthread_t tid;
	vr_call *call;
	enum pool pool;
	char host[96]; /* a follower's client address */
	struct stream_thr *next;
};

/* Followers open from one client address. */
struct peer {
	char host[96];
	int n;
};

struct waker {
	void (*fn)(void *);
	void *arg;
};

struct vr_server {
	int shutdown_tag; /* TAG_SHUTDOWN: the notify tag's address */
	char *listen, *cert_file, *key_file, *bearer; /* bearer: "Bearer <token>" */
	int nworkers, limit[NPOOLS], max_per_peer;
	size_t max_message;
	struct method_rt *methods;
	size_t nmethods, cap_methods;

	grpc_server *server;
	struct worker *workers;
	grpc_completion_queue *follow_cq; /* every follower call's events */
	pthread_t reactor;
	int reactor_running;
	int port, started, shut;
	atomic_int stopping;
	atomic_int pending; /* armed requests not yet back + calls not yet freed */

	pthread_mutex_t mu; /* guards the fields below */
	pthread_cond_t cv;
	int notified;       /* the shutdown tag arrived */
	int nstreams, busy[NPOOLS];
	struct stream_thr *streams, *finished;
	struct peer *peers; /* addresses with followers open */
	size_t npeers, cap_peers;
	struct waker *wakers; /* distinct vr_call_wake_on_stop wake-ups */
	size_t nwakers, cap_wakers;

	pthread_mutex_t spare_mu; /* guards the two below */
	vr_call *spare;           /* freed calls kept for the next arm (see Reuse) */
	int nspare;
	char err[256];
};

struct op {
	int tag; /* TAG_OP; first, so a notification tag names an op */
	atomic_int done;
	int ok;
	vr_call *call;
};

struct vr_call {
	int tag; /* TAG_CALL; first, so a notification tag names its call */
	vr_server *srv;
	struct worker *w;
	const struct method_rt *mt; /* NULL: a method nobody registered */
	grpc_call *call;
	grpc_completion_queue *cq;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_call_details details; /* generic requests only */
	grpc_byte_buffer *payload;
	ProtobufCMessage *request;
	grpc_byte_buffer *reply;   /* unary: kept until the status goes */
	struct op op, close;
	int cancelled;             /* written by RECV_CLOSE_ON_SERVER */
	int md_sent;
	int counted;               /* in srv->pending */
	char *peer;
	double t0;
	char path[160];
	char msg[256];
	/* A follower's: its events arrive on srv->follow_cq, and the reactor
	 * marks op and close under mu (so does the owner) and signals cv. */
	int shared;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*wake)(void *);      /* under mu */
	void *wake_arg;
	vr_call *next_spare;       /* in srv->spare */
	/* An inline unary call's: its events arrive on its worker's queue,
	 * its final batch is not waited for, and whichever of its two ops
	 * (close, final batch) completes last ends it (see Inline unary). */
	int async;
	atomic_int left;           /* of those two ops, not yet complete */
	int status;                /* the status the final batch sends */
	grpc_slice status_msg;     /* its message, held until the call ends */
	vr_call *next_ready;       /* in w->ready */
};

/* Shuts a queue nobody else uses and drains it so it can be destroyed. */
static void cq_close(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}

/* An array of n elements of size bytes, at *cap, made room for one more:
 * the array to use (arr or its doubled copy), or NULL without memory
 * (arr is then unchanged). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size, size_t first)
{
	if (n < *cap)
		return arr;
	size_t want = *cap ? 2 * *cap : first;
	void *p = realloc(arr, want * size);
	if (p)
		*cap = want;
	return p;
}

/* ---- the call's own queue ---------------------------------------------- */

static void mark(grpc_event ev)
{
	struct op *o = ev.tag;
	o->done = 1;
	o->ok = ev.success;
}

/* Sets op's marks, under the call's mutex when the reactor shares them. */
static void op_set(vr_call *c, struct op *op, int done)
{
	if (c->shared)
		pthread_mutex_lock(&c->mu);
	op->done = done;
	op->ok = 0;
	if (c->shared)
		pthread_mutex_unlock(&c->mu);
}

static int call_start(vr_call *c, const grpc_op *ops, size_t n, struct op *op)
{
	op_set(c, op, 0);
	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, op, NULL);
	if (e == GRPC_CALL_OK)
		return 0;
	op_set(c, op, 1);
	VR_WARN("rpc %s: grpc_call_start_batch: %s", c->path, grpc_call_error_to_string(e));
	return VR_ESTATE;
}

/* Waits for op; every event seen on the way is marked. */
static int call_wait(vr_call *c, struct op *op)
{
	int ok;
	if (c->shared) {
		pthread_mutex_lock(&c->mu);
		while (!op->done)
			pthread_cond_wait(&c->cv, &c->mu);
		ok = op->ok;
		pthread_mutex_unlock(&c->mu);
		return ok ? 0 : VR_ECANCELLED;
	}
	while (!op->done) {
		grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			mark(ev);
	}
	return op->ok ? 0 : VR_ECANCELLED;
}

static void call_poll(vr_call *c)
{
	if (c->shared)
		return; /* the reactor marks */
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			return;
		mark(ev);
	}
}

/* Keeps c (its own queue and metadata room, the rest cleared) for the
 * next arm; 0 when the list is full or the server is stopping. */
static int spare_put(vr_server *srv, vr_call *c)
{
	int kept = 0;
	pthread_mutex_lock(&srv->spare_mu);
	if (srv->nspare < SPARE_MAX && !atomic_load(&srv->stopping)) {
		grpc_completion_queue *cq = c->cq;
		grpc_metadata_array md = c->md;
		md.count = 0; /* core appends after count, into the room kept */
		memset(c, 0, sizeof *c);
		c->cq = cq;
		c->md = md;
		c->next_spare = srv->spare;
		srv->spare = c;
		srv->nspare++;
		kept = 1;
	}
	pthread_mutex_unlock(&srv->spare_mu);
	return kept;
}

static vr_call *spare_get(vr_server *srv)
{
	pthread_mutex_lock(&srv->spare_mu);
	vr_call *c = srv->spare;
	if (c) {
		srv->spare = c->next_spare;
		srv->nspare--;
		c->next_spare = NULL;
	}
	pthread_mutex_unlock(&srv->spare_mu);
	return c;
}

/* Frees the kept calls; after every call ended (shutdown). */
static void spare_drain(vr_server *srv)
{
	vr_call *c;
	while ((c = spare_get(srv))) {
		grpc_metadata_array_destroy(&c->md);
		if (c->cq)
			cq_close(c->cq);
		free(c);
	}
}

static void call_free(vr_call *c)
{
	if (c->call)
		grpc_call_unref(c->call);
	grpc_call_details_destroy(&c->details);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	if (c->reply)
		grpc_byte_buffer_destroy(c->reply);
	if (c->request)
		protobuf_c_message_free_unpacked(c->request, NULL);
	gpr_free(c->peer);
	grpc_slice_unref(c->status_msg);
	vr_server *srv = c->srv;
	int counted = c->counted;
	if (c->shared) {
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cv);
	}
	if (c->shared || !spare_put(srv, c)) {
		grpc_metadata_array_destroy(&c->md);
		if (c->cq)
			cq_close(c->cq);
		free(c);
	}
	if (counted && atomic_fetch_sub(&srv->pending, 1) == 1) {
		pthread_mutex_lock(&srv->mu);
		pthread_cond_broadcast(&srv->cv);
		pthread_mutex_unlock(&srv->mu);
	}
}

/* ---- arming -------------------------------------------------------------- */

static int has_payload(const struct method_rt *mt)
{
	return mt->m.kind == VR_UNARY || mt->m.kind == VR_SERVER_STREAM;
}

static int arm(struct worker *w, const struct method_rt *mt)
{
	vr_server *srv = w->srv;
	int follower = mt && mt->m.follower;
	vr_call *c = follower ? NULL : spare_get(srv);
	if (!c) {
		if (!(c = calloc(1, sizeof *c)))
			return VR_ENOMEM;
		grpc_metadata_array_init(&c->md);
	}
	c->tag = TAG_CALL;
	c->srv = srv;
	c->w = w;
	c->mt = mt;
	c->op.call = c->close.call = c;
	c->op.tag = c->close.tag = TAG_OP;
	c->async = mt && mt->m.kind == VR_UNARY && !mt->m.own_thread;
	grpc_call_details_init(&c->details);
	if (follower) {
		c->shared = 1;
		pthread_mutex_init(&c->mu, NULL);
		vr_cond_init(&c->cv);
	} else if (!c->async && !c->cq && !(c->cq = grpc_completion_queue_create_for_next(NULL))) {
		call_free(c);
		return VR_ENOMEM;
	}
	grpc_call_error e;
	if (mt)
		e = grpc_server_request_registered_call(srv->server, mt->registered, &c->call,
							&c->deadline, &c->md,
							has_payload(mt) ? &c->payload : NULL,
							c->shared ? srv->follow_cq : c->async ? w->cq : c->cq,
							w->cq, c);
	else
		e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md,
					     c->cq, w->cq, c);
	if (e != GRPC_CALL_OK) {
		VR_WARN("rpc: cannot request a call for %s: %s", mt ? mt->m.path : "unknown methods",
			grpc_call_error_to_string(e));
		call_free(c);
		return VR_ESTATE;
	}
	c->counted = 1;
	atomic_fetch_add(&srv->pending, 1);
	return 0;
}

static void rearm(struct worker *w, const struct method_rt *mt)
{
	if (!atomic_load(&w->srv->stopping))
		arm(w, mt);
}

/* ---- metrics -------------------------------------------------------------- */

/* Every server of the process counts into these families (one server per
 * daemon). Labels come from the method table, never from a request:
 * a call to a method nobody registered counts under method "unknown". */
static vr_prom_family *fam_requests, *fam_duration, *fam_inflight, *fam_slots, *fam_slots_max;
static struct method_rt unknown_method = { .m = { .path = "/unknown" } };

static void metrics_families(void)
{
	fam_requests = vr_prom_register("visrec_rpc_requests_total",
					"RPCs answered, by method and gRPC status code.", VR_PROM_COUNTER,
					"method,code", NULL, 0);
	fam_duration = vr_prom_register("visrec_rpc_duration_seconds",
					"RPC time from arrival to the status sent, by method.",
					VR_PROM_HISTOGRAM, "method", vr_prom_rpc_buckets,
					vr_prom_rpc_nbuckets);
	fam_inflight = vr_prom_register("visrec_rpc_in_flight", "RPCs being served now, by method.",
					VR_PROM_GAUGE, "method", NULL, 0);
	fam_slots = vr_prom_register("visrec_rpc_stream_slots_in_use",
				     "Handler threads of their own in use, by pool: read (streams), admin "
				     "(writes, training), follow (change feeds).",
				     VR_PROM_GAUGE, "pool", NULL, 0);
	fam_slots_max = vr_prom_register("visrec_rpc_stream_slots",
					 "Handler threads of their own a pool may use at once "
					 "(--max-streams, --max-admin-streams, --max-followers).",
					 VR_PROM_GAUGE, "pool", NULL, 0);
	unknown_method.inflight = vr_prom_get(fam_inflight, "unknown");
	unknown_method.duration = vr_prom_get(fam_duration, "unknown");
}

/* Makes mt's series; the method label is the path without its '/'. */
static void metrics_method(struct method_rt *mt)
{
	const char *name = mt->m.path + 1;
	mt->inflight = vr_prom_get(fam_inflight, name);
	mt->duration = vr_prom_get(fam_duration, name);
	for (int i = 0; i < NCODES; i++)
		atomic_init(&mt->requests[i], NULL);
}

static void metrics_done(vr_call *c, int status)
{
	struct method_rt *mt = c->mt ? (struct method_rt *)c->mt : &unknown_method;
	if (status < 0 || status >= NCODES)
		status = GRPC_STATUS_UNKNOWN;
	vr_prom_series *s = atomic_load_explicit(&mt->requests[status], memory_order_acquire);
	if (!s) {
		/* Two threads may both look it up: vr_prom_get returns the
		 * same series to both. */
		s = vr_prom_get(fam_requests, mt->m.path + 1, vr_status_name(status));
		atomic_store_explicit(&mt->requests[status], s, memory_order_release);
	}
	vr_prom_add(s, 1);
	vr_prom_observe(mt->duration, vr_now_s() - c->t0);
	vr_prom_add(mt->inflight, -1);
}

static const char *const pool_names[] = { "read", "admin", "follow" };

/* At each scrape: the pools' use, read under srv->mu. */
static void metrics_collect(void *arg)
{
	vr_server *srv = arg;
	int busy[NPOOLS];
	pthread_mutex_lock(&srv->mu);
	memcpy(busy, srv->busy, sizeof busy);
	pthread_mutex_unlock(&srv->mu);
	for (int i = 0; i < NPOOLS; i++) {
		vr_prom_set(vr_prom_get(fam_slots, pool_names[i]), busy[i]);
		vr_prom_set(vr_prom_get(fam_slots_max, pool_names[i]), srv->limit[i]);
	}
}

/* ---- finishing a call --------------------------------------------------- */

/* The call JSON log lines name while its handler runs: the peer costs
 * an allocation, so text logs go without it. */
static void log_call_begin(vr_call *c)
{
	vr_log_set_call(c->path, vr_log_get_format() == VR_LOG_JSON ? vr_call_peer(c) : NULL);
}

static void call_log(vr_call *c, int status)
{
	if (!vr_log_enabled(VR_LOG_DEBUG))
		return;
	log_call_begin(c);
	VR_DEBUG("rpc %s peer=%s %s %.3f ms%s%s", c->path, vr_call_peer(c), vr_status_name(status),
		 (vr_now_s() - c->t0) * 1e3, c->msg[0] ? ": " : "", c->msg);
	vr_log_set_call(NULL, NULL);
}

/* The status went (or failed) and the close came: counts and frees c. */
static void call_end(vr_call *c)
{
	metrics_done(c, c->status);
	call_log(c, c->status);
	call_free(c);
}

/* One of an inline unary call's two ops completed: the last ends it. */
static void op_end(vr_call *c)
{
	if (atomic_fetch_sub(&c->left, 1) == 1)
		call_end(c);
}

void vr_call_finish(vr_call *c, int code)
{
	int status = vr_status_from_rc(code);
	if (code == VR_DETACHED) {
		status = GRPC_STATUS_INTERNAL;
		snprintf(c->msg, sizeof c->msg, "%s: only unary handlers may detach", c->path);
		VR_ERROR("rpc %s", c->msg);
	} else if (code < 0 && !c->msg[0]) {
		snprintf(c->msg, sizeof c->msg, "%s", vr_strerror(code));
	}
	if (status == GRPC_STATUS_OK && c->mt && c->mt->m.kind == VR_UNARY && !c->reply) {
		status = GRPC_STATUS_INTERNAL;
		snprintf(c->msg, sizeof c->msg, "%s returned no response", c->path);
		VR_ERROR("rpc %s", c->msg);
	}
	grpc_op ops[3];
	memset(ops, 0, sizeof ops);
	size_t n = 0;
	if (!c->md_sent)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (status == GRPC_STATUS_OK && c->reply) {
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = c->reply;
	}
	c->status = status;
	c->status_msg = grpc_slice_from_copied_string(c->msg);
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)status;
	ops[n++].data.send_status_from_server.status_details = &c->status_msg;
	if (c->async) {
		/* From here the worker may end c as soon as both ops complete. */
		if (call_start(c, ops, n, &c->op)) {
			grpc_call_cancel(c->call, NULL); /* or the close never comes */
			op_end(c);
		}
		return;
	}
	if (call_start(c, ops, n, &c->op) == 0)
		call_wait(c, &c->op);
	else
		grpc_call_cancel(c->call, NULL); /* or the close below never comes */
	call_wait(c, &c->close);
	call_end(c);
}

/* ---- streams -------------------------------------------------------------- */

/* The client's address without its port ("ipv4:10.0.0.7"), the unit of
 * the per-peer limit: one client opens each stream from a new port. */
static void peer_host(vr_call *c, char *buf, size_t len)
{
	const char *p = vr_call_peer(c);
	const char *colon = strrchr(p, ':');
	size_t n = strlen(p);
	if ((!strncmp(p, "ipv4:", 5) || !strncmp(p, "ipv6:", 5)) && colon > p + 5)
		n = (size_t)(colon - p);
	snprintf(buf, len, "%.*s", (int)n, p);
}

/* The follower count of host; srv->mu held. NULL when absent and !add
 * or when memory ran out. */
static struct peer *peer_find(vr_server *srv, const char *host, int add)
{
	for (size_t i = 0; i < srv->npeers; i++)
		if (!strcmp(srv->peers[i].host, host))
			return &srv->peers[i];
	struct peer *peers = add ? grow(srv->peers, &srv->cap_peers, srv->npeers, sizeof *peers, 8) : NULL;
	if (!peers)
		return NULL;
	srv->peers = peers;
	struct peer *p = &peers[srv->npeers++];
	snprintf(p->host, sizeof p->host, "%s", host);
	p->n = 0;
	return p;
}

/* Gives back t's place in its pool; srv->mu held. */
static void pool_leave(vr_server *srv, const struct stream_thr *t)
{
	srv->busy[t->pool]--;
	struct peer *p = t->pool == POOL_FOLLOW ? peer_find(srv, t->host, 0) : NULL;
	if (p && --p->n == 0)
		*p = srv->peers[--srv->npeers];
}

static void *stream_main(void *arg)
{
	struct stream_thr *t = arg;
	vr_call *c = t->call;
	vr_server *srv = c->srv;
	log_call_begin(c);
	int code = c->mt->m.handler(c, c->mt->m.ctx);
	vr_log_set_call(NULL, NULL);
	if (code != VR_DETACHED || c->mt->m.kind != VR_UNARY)
		vr_call_finish(c, code);
	pthread_mutex_lock(&srv->mu);
	for (struct stream_thr **p = &srv->streams; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			break;
		}
	}
	t->next = srv->finished;
	srv->finished = t;
	srv->nstreams--;
	pool_leave(srv, t);
	pthread_cond_broadcast(&srv->cv);
	pthread_mutex_unlock(&srv->mu);
	return NULL;
}

static void join_all(struct stream_thr *t)
{
	while (t) {
		struct stream_thr *next = t->next;
		pthread_join(t->tid, NULL);
		free(t);
		t = next;
	}
}

/* Takes a place in its pool for t's call; srv->mu held. 0, or VR_EFULL
 * with the call's status message naming the limit. */
static int pool_enter(vr_server *srv, struct stream_thr *t)
{
	vr_call *c = t->call;
	static const char *const what[NPOOLS] = { "streaming calls", "admin calls", "followers" };
	static const char *const flag[NPOOLS] = { "--max-streams", "--max-admin-streams",
						  "--max-followers" };
	const vr_method *m = &c->mt->m;
	enum pool pool = m->follower ? POOL_FOLLOW : m->admin ? POOL_ADMIN : POOL_READ;
	t->pool = pool;
	if (srv->busy[pool] >= srv->limit[pool]) {
		vr_call_error(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
			      "too many %s at once: %s is one of them and this server takes %d (%s); "
			      "retry later", what[pool], m->path + 1, srv->limit[pool], flag[pool]);
		return VR_EFULL;
	}
	if (pool == POOL_FOLLOW) {
		peer_host(c, t->host, sizeof t->host);
		struct peer *p = peer_find(srv, t->host, 1);
		if (!p)
			return VR_ENOMEM;
		if (p->n >= srv->max_per_peer) {
			vr_call_error(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
				      "too many followers from %s: %d are open and this server takes %d per "
				      "client address (--max-followers-per-peer); close one or retry later",
				      t->host, p->n, srv->max_per_peer);
			return VR_EFULL;
		}
		p->n++;
	}
	srv->busy[pool]++;
	return 0;
}

static int spawn_stream(vr_call *c)
{
	vr_server *srv = c->srv;
	int rc = 0;
	struct stream_thr *t = calloc(1, sizeof *t);
	if (!t)
		return VR_ENOMEM;
	t->call = c;
	pthread_mutex_lock(&srv->mu);
	struct stream_thr *done = srv->finished;
	srv->finished = NULL;
	if ((rc = pool_enter(srv, t)))
		goto leave;
	int e = pthread_create(&t->tid, NULL, stream_main, t);
	if (e) {
		pool_leave(srv, t);
		rc = -e;
		goto leave;
	}
	srv->nstreams++;
	t->next = srv->streams;
	srv->streams = t;
	t = NULL;
leave:
	pthread_mutex_unlock(&srv->mu);
	free(t);
	join_all(done);
	return rc;
}

/* ---- arrival ------------------------------------------------------------- */

static int token_ok(const char *want, const char *got)
{
	size_t n = strlen(want);
	unsigned char diff = strlen(got) != n;
	for (size_t i = 0; i < n && got[i]; i++)
		diff |= (unsigned char)(want[i] ^ got[i]);
	return !diff;
}

/* Auth, a handler to run, and the request: GRPC_STATUS_OK or the status
 * to answer with (its message set). */
static int admit(vr_call *c)
{
	const vr_method *m = &c->mt->m;
	const char *name = m->path + 1;
	if (m->admin && c->srv->bearer) {
		char got[512];
		if (vr_call_metadata(c, "authorization", got, sizeof got) < 0)
			return vr_call_error(c, GRPC_STATUS_UNAUTHENTICATED,
					     "%s needs the admin token: send metadata \"authorization: Bearer <token>\"",
					     name);
		if (!token_ok(c->srv->bearer, got))
			return vr_call_error(c, GRPC_STATUS_UNAUTHENTICATED,
					     "the admin token sent for %s is not valid", name);
	}
	if (!m->handler)
		return vr_call_error(c, GRPC_STATUS_UNIMPLEMENTED, "%s is not implemented yet", name);
	if (!has_payload(c->mt))
		return GRPC_STATUS_OK;
	if (!c->payload)
		return vr_call_error(c, GRPC_STATUS_INVALID_ARGUMENT,
				     "%s expects one request message and got none", name);
	char why[256];
	int rc = vr__unpack(c->payload, m->request, &c->request, why, sizeof why);
	grpc_byte_buffer_destroy(c->payload);
	c->payload = NULL;
	if (rc)
		return vr_call_error(c, GRPC_STATUS_INVALID_ARGUMENT,
				     "request is not a valid %s message", m->request->name);
	if (why[0])
		return vr_call_error(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
	return GRPC_STATUS_OK;
}

static void dispatch(struct worker *w, vr_call *c)
{
	const struct method_rt *mt = c->mt;
	c->t0 = vr_now_s();
	if (mt) {
		snprintf(c->path, sizeof c->path, "%s", mt->m.path);
	} else {
		grpc_slice s = c->details.method;
		snprintf(c->path, sizeof c->path, "%.*s", (int)GRPC_SLICE_LENGTH(s),
			 (const char *)GRPC_SLICE_START_PTR(s));
	}
	int inline_unary = mt && mt->m.kind == VR_UNARY && !mt->m.own_thread;
	if (!inline_unary)
		rearm(w, mt);

	grpc_op close_op;
	memset(&close_op, 0, sizeof close_op);
	close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	close_op.data.recv_close_on_server.cancelled = &c->cancelled;
	atomic_store(&c->left, 2);
	if (call_start(c, &close_op, 1, &c->close)) {
		grpc_call_cancel(c->call, NULL);
		call_free(c);
		goto leave;
	}
	/* From here every path ends in vr_call_finish, which counts the call. */
	vr_prom_add(mt ? mt->inflight : unknown_method.inflight, 1);

	if (!mt) {
		vr_call_finish(c, vr_call_error(c, GRPC_STATUS_UNIMPLEMENTED,
						"method %s is not implemented by this server", c->path));
		goto leave;
	}
	int code = admit(c);
	if (code != GRPC_STATUS_OK) {
		vr_call_finish(c, code);
		goto leave;
	}
	if (inline_unary) {
		log_call_begin(c);
		code = mt->m.handler(c, mt->m.ctx);
		vr_log_set_call(NULL, NULL);
		if (code != VR_DETACHED)
			vr_call_finish(c, code);
		goto leave;
	}
	int rc = spawn_stream(c);
	if (rc == VR_EFULL)
		vr_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED);
	else if (rc)
		vr_call_finish(c, vr_call_error(c, GRPC_STATUS_UNAVAILABLE,
						"cannot start a handler thread: %s", vr_strerror(rc)));
leave:
	if (inline_unary)
		rearm(w, mt);
}

/* One event of w's queue. An op's completion belongs to an inline unary
 * call of w's (its close or its final batch); a call's arrival is
 * dispatched now, or kept for the loop when defer (an inline handler is
 * polling: dispatching there would nest handlers). */
static void worker_event(struct worker *w, grpc_event ev, int defer)
{
	vr_server *srv = w->srv;
	int tag = *(int *)ev.tag;
	if (tag == TAG_SHUTDOWN) {
		pthread_mutex_lock(&srv->mu);
		srv->notified = 1;
		pthread_cond_broadcast(&srv->cv);
		pthread_mutex_unlock(&srv->mu);
		return;
	}
	if (tag == TAG_OP) {
		struct op *o = ev.tag;
		o->ok = ev.success;
		atomic_store(&o->done, 1);
		op_end(o->call);
		return;
	}
	vr_call *c = ev.tag;
	if (!ev.success) {
		call_free(c); /* a request voided by shutdown */
	} else if (defer) {
		c->next_ready = NULL;
		*w->ready_tail = c;
		w->ready_tail = &c->next_ready;
	} else {
		dispatch(w, c);
	}
}

/* Takes what waits on w's queue without blocking (an inline handler asks
 * whether its call was cancelled). */
static void worker_poll(struct worker *w)
{
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			return;
		worker_event(w, ev, 1);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (;;) {
		while (w->ready) {
			vr_call *c = w->ready;
			if (!(w->ready = c->next_ready))
				w->ready_tail = &w->ready;
			dispatch(w, c);
		}
		grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE)
			worker_event(w, ev, 0);
	}
	return NULL;
}

/* The reactor: marks the ops of follower calls (see DESIGN). */
static void *reactor_main(void *arg)
{
	vr_server *srv = arg;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(srv->follow_cq,
							   gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		struct op *o = ev.tag;
		vr_call *c = o->call;
		void (*wake)(void *) = NULL;
		void *wake_arg = NULL;
		pthread_mutex_lock(&c->mu);
		o->done = 1;
		o->ok = ev.success;
		if (o == &c->close) {
			wake = c->wake;
			wake_arg = c->wake_arg;
		}
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
		/* c may be gone from here on; the wake-up's argument outlives
		 * the server. */
		if (wake)
			wake(wake_arg);
	}
	return NULL;
}

static int reactor_start(vr_server *srv)
{
	/* Non-polling: the reactor only waits for marks. A polling queue
	 * made it one more thread taking turns at epoll, so it read unary
	 * calls' bytes and then had to wake their worker (a futex hop per
	 * call, seen in perf); the workers, idle in their own queues, do
	 * the polling for followers too. */
	grpc_completion_queue_attributes attr = { GRPC_CQ_CURRENT_VERSION, GRPC_CQ_NEXT,
						  GRPC_CQ_NON_POLLING, NULL };
	if (!(srv->follow_cq = grpc_completion_queue_create(grpc_completion_queue_factory_lookup(&attr),
							     &attr, NULL)))
		return VR_ENOMEM;
	int e = pthread_create(&srv->reactor, NULL, reactor_main, srv);
	if (e) {
		grpc_completion_queue_destroy(srv->follow_cq);
		srv->follow_cq = NULL;
		return -e;
	}
	srv->reactor_running = 1;
	return 0;
}

/* After every follower call is freed. */
static void reactor_stop(vr_server *srv)
{
	if (!srv->reactor_running)
		return;
	grpc_completion_queue_shutdown(srv->follow_cq);
	pthread_join(srv->reactor, NULL);
	grpc_completion_queue_destroy(srv->follow_cq);
	srv->follow_cq = NULL;
	srv->reactor_running = 0;
}

/* ---- the server ---------------------------------------------------------- */

int vr_server_create(vr_server **out, const vr_server_opts *opts)
{
	if (!opts || !opts->listen || !opts->listen[0])
		return VR_EINVAL;
	int has_cert = opts->tls_cert_file && opts->tls_cert_file[0];
	int has_key = opts->tls_key_file && opts->tls_key_file[0];
	if (has_cert != has_key)
		return VR_EINVAL;
	vr_server *srv = calloc(1, sizeof *srv);
	if (!srv)
		return VR_ENOMEM;
	srv->shutdown_tag = TAG_SHUTDOWN;
	pthread_mutex_init(&srv->mu, NULL);
	pthread_mutex_init(&srv->spare_mu, NULL);
	static pthread_once_t families_once = PTHREAD_ONCE_INIT;
	pthread_once(&families_once, metrics_families);
	vr_cond_init(&srv->cv);
	srv->nworkers = opts->threads > 0 ? opts->threads : 2;
	srv->limit[POOL_READ] = opts->max_streams > 0 ? opts->max_streams : 64;
	srv->limit[POOL_ADMIN] = opts->max_admin_streams > 0 ? opts->max_admin_streams : 64;
	srv->limit[POOL_FOLLOW] = opts->max_followers > 0 ? opts->max_followers : 256;
	srv->max_per_peer = opts->max_followers_per_peer > 0 ? opts->max_followers_per_peer : 16;
	srv->max_message = opts->max_message_bytes ? opts->max_message_bytes : VR__DEFAULT_MAX_MESSAGE;
	srv->listen = strdup(opts->listen);
	int bad = !srv->listen;
	if (has_cert) {
		srv->cert_file = strdup(opts->tls_cert_file);
		srv->key_file = strdup(opts->tls_key_file);
		bad |= !srv->cert_file || !srv->key_file;
	}
	if (opts->admin_token && opts->admin_token[0]) {
		bad |= asprintf(&srv->bearer, "Bearer %s", opts->admin_token) < 0;
	}
	if (bad) {
		vr_server_destroy(srv);
		return VR_ENOMEM;
	}
	*out = srv;
	return 0;
}

int vr_server_add_service(vr_server *srv, const vr_method *table, size_t n)
{
	if (srv->server)
		return VR_ESTATE;
	for (size_t i = 0; i < n; i++) {
		const vr_method *m = &table[i];
		if (!m->path || m->path[0] != '/' || !m->request || !m->response ||
		    m->kind < VR_UNARY || m->kind > VR_BIDI || (m->own_thread && m->kind != VR_UNARY) ||
		    (m->follower && m->kind == VR_UNARY)) {
			snprintf(srv->err, sizeof srv->err, "method %s is not valid (a path, both "
				 "descriptors, a kind; own_thread is for unary methods, follower for streams)",
				 m->path ? m->path : "(no path)");
			return VR_EINVAL;
		}
		for (size_t j = 0; j < srv->nmethods; j++)
			if (!strcmp(srv->methods[j].m.path, m->path)) {
				snprintf(srv->err, sizeof srv->err, "method %s is registered twice", m->path);
				return VR_EINVAL;
			}
		struct method_rt *methods = grow(srv->methods, &srv->cap_methods, srv->nmethods,
						 sizeof *methods, 16);
		if (!methods)
			return VR_ENOMEM;
		srv->methods = methods;
		struct method_rt *mt = &methods[srv->nmethods];
		mt->m = *m;
		mt->registered = NULL;
		mt->m.path = strdup(m->path);
		if (!mt->m.path)
			return VR_ENOMEM;
		metrics_method(mt);
		srv->nmethods++;
	}
	return 0;
}

/* gRPC listens with SO_REUSEADDR, so only a listening socket makes its
 * bind fail; we try the same bind first to name the reason in one line
 * (core's own failure message is a multi-line error tree). */
static int probe_port(vr_server *srv)
{
	char host[256];
	const char *colon = strrchr(srv->listen, ':');
	if (!colon || !strncmp(srv->listen, "unix:", 5) || !strcmp(colon + 1, "0"))
		return 0;
	const char *h = srv->listen;
	size_t hl = (size_t)(colon - h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= sizeof host)
		return 0;
	memcpy(host, h, hl);
	host[hl] = 0;
	struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM }, *res = NULL;
	if (getaddrinfo(hl ? host : NULL, colon + 1, &hints, &res))
		return 0; /* core reports what it makes of the name */
	int rc = 0;
	for (struct addrinfo *a = res; a && !rc; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 && errno == EADDRINUSE)
			rc = -EADDRINUSE;
		close(fd);
	}
	freeaddrinfo(res);
	return rc;
}

static int make_creds(vr_server *srv, grpc_server_credentials **out)
{
	if (!srv->cert_file) {
		*out = grpc_insecure_server_credentials_create();
		return 0;
	}
	char *cert = NULL, *key = NULL;
	int rc = vr__read_file(srv->cert_file, &cert);
	if (rc) {
		snprintf(srv->err, sizeof srv->err, "cannot read TLS certificate %s: %s",
			 srv->cert_file, vr_strerror(rc));
		goto leave;
	}
	rc = vr__read_file(srv->key_file, &key);
	if (rc) {
		snprintf(srv->err, sizeof srv->err, "cannot read TLS key %s: %s",
			 srv->key_file, vr_strerror(rc));
		goto leave;
	}
	grpc_ssl_pem_key_cert_pair pair = { .private_key = key, .cert_chain = cert };
	*out = grpc_ssl_server_credentials_create_ex(NULL, &pair, 1,
						     GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
	if (!*out) {
		snprintf(srv->err, sizeof srv->err, "TLS certificate %s or key %s is not usable",
			 srv->cert_file, srv->key_file);
		rc = VR_EINVAL;
	}
leave:
	free(cert);
	free(key);
	return rc;
}

static void stop_workers(vr_server *srv)
{
	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		if (!w->cq)
			continue;
		grpc_completion_queue_shutdown(w->cq);
		if (w->running)
			pthread_join(w->tid, NULL);
		else
			while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
			       GRPC_QUEUE_SHUTDOWN)
				;
		w->running = 0;
		grpc_completion_queue_destroy(w->cq);
		w->cq = NULL;
	}
}

int vr_server_start(vr_server *srv)
{
	int rc = 0;
	grpc_server_credentials *creds = NULL;
	if (srv->server || srv->shut)
		return VR_ESTATE;
	srv->err[0] = 0;
	rc = probe_port(srv);
	if (rc) {
		snprintf(srv->err, sizeof srv->err, "cannot listen on %s: %s", srv->listen, vr_strerror(rc));
		return rc;
	}
	rc = make_creds(srv, &creds);
	if (rc)
		return rc;

	/* Threads first: once core has a listener, the server can only be
	 * taken down through a full shutdown. */
	if ((rc = reactor_start(srv))) {
		snprintf(srv->err, sizeof srv->err, "cannot start server threads: %s", vr_strerror(rc));
		goto fail;
	}
	srv->workers = calloc((size_t)srv->nworkers, sizeof *srv->workers);
	if (!srv->workers) {
		rc = VR_ENOMEM;
		goto fail;
	}
	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		w->srv = srv;
		w->cq = grpc_completion_queue_create_for_next(NULL);
		w->ready_tail = &w->ready;
		int e = w->cq ? pthread_create(&w->tid, NULL, worker_main, w) : ENOMEM;
		if (e) {
			rc = -e;
			snprintf(srv->err, sizeof srv->err, "cannot start server threads: %s", vr_strerror(rc));
			goto fail;
		}
		w->running = 1;
	}

	grpc_arg args[3];
	vr__message_args(args, srv->max_message);
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT; /* a second daemon on our port must fail */
	args[2].value.integer = 0;
	grpc_channel_args cargs = { .num_args = 3, .args = args };
	srv->server = grpc_server_create(&cargs, NULL);
	for (int i = 0; i < srv->nworkers; i++)
		grpc_server_register_completion_queue(srv->server, srv->workers[i].cq, NULL);
	for (size_t i = 0; i < srv->nmethods; i++) {
		struct method_rt *mt = &srv->methods[i];
		mt->registered = grpc_server_register_method(
			srv->server, mt->m.path, NULL,
			has_payload(mt) ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
		if (!mt->registered) {
			snprintf(srv->err, sizeof srv->err, "cannot register method %s", mt->m.path);
			rc = VR_EINVAL;
			goto fail;
		}
	}
	srv->port = grpc_server_add_http2_port(srv->server, srv->listen, creds);
	if (srv->port <= 0) {
		srv->port = 0;
		snprintf(srv->err, sizeof srv->err, "cannot listen on %s (bad address, or in use)", srv->listen);
		rc = VR_EIO;
		goto fail;
	}
	grpc_server_credentials_release(creds);
	creds = NULL;
	grpc_server_start(srv->server);
	srv->started = 1;
	/* Without memory for it the pools' gauges stay unset. */
	vr_prom_collector(metrics_collect, srv);
	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		for (int g = 0; g < GENERIC_ARMED; g++)
			arm(w, NULL);
		for (size_t j = 0; j < srv->nmethods; j++) {
			const vr_method *m = &srv->methods[j].m;
			int k = m->kind == VR_UNARY && !m->own_thread ? UNARY_ARMED : STREAM_ARMED;
			while (k--)
				arm(w, &srv->methods[j]);
		}
	}
	return 0;
fail:
	if (creds)
		grpc_server_credentials_release(creds);
	if (srv->server) {
		grpc_server_destroy(srv->server); /* not started, no listener */
		srv->server = NULL;
	}
	if (srv->workers)
		stop_workers(srv);
	free(srv->workers);
	srv->workers = NULL;
	reactor_stop(srv);
	return rc;
}

const char *vr_server_error(const vr_server *srv)
{
	return srv->err;
}

int vr_server_port(const vr_server *srv)
{
	return srv->port;
}

size_t vr_server_max_message(const vr_server *srv)
{
	return srv->max_message;
}

/* Waits until the notify tag came, or (idle_too) no call is pending. */
static void wait_done(vr_server *srv, int64_t until, int idle_too)
{
	while (!srv->notified && !(idle_too && atomic_load(&srv->pending) == 0))
		if (vr_cond_wait_until(&srv->cv, &srv->mu, until))
			return;
}

/* Tells every sleeping follower that the server stops (stopping is set). */
static void wake_followers(vr_server *srv)
{
	pthread_mutex_lock(&srv->mu);
	size_t n = srv->nwakers;
	struct waker *w = n ? malloc(n * sizeof *w) : NULL;
	if (w)
		memcpy(w, srv->wakers, n * sizeof *w);
	pthread_mutex_unlock(&srv->mu);
	/* Outside srv->mu: a wake-up takes its handler's mutex. Without
	 * memory the followers still end when their calls are cancelled. */
	for (size_t i = 0; w && i < n; i++)
		w[i].fn(w[i].arg);
	free(w);
}

void vr_server_shutdown(vr_server *srv, int grace_ms)
{
	if (!srv->started || srv->shut)
		return;
	srv->shut = 1;
	atomic_store(&srv->stopping, 1);
	wake_followers(srv);
	grpc_server_shutdown_and_notify(srv->server, srv->workers[0].cq, &srv->shutdown_tag);

	int64_t until = vr_deadline_ms(grace_ms);
	/* Core's tag waits for every connection to close, and an idle
	 * client that is not polling never reads our GOAWAY; so once no call
	 * is pending, cancelling (which also drops connections) loses
	 * nothing. */
	pthread_mutex_lock(&srv->mu);
	wait_done(srv, until, 1);
	if (!srv->notified) {
		int left = atomic_load(&srv->pending);
		if (left > 0 && grace_ms > 0)
			VR_INFO("rpc: %d calls still running after %d ms; cancelling them", left, grace_ms);
		pthread_mutex_unlock(&srv->mu);
		grpc_server_cancel_all_calls(srv->server);
		pthread_mutex_lock(&srv->mu);
		for (;;) {
			wait_done(srv, vr_deadline_ms(5000), 0);
			if (srv->notified)
				break;
			VR_WARN("rpc: a handler still holds a cancelled call; waiting for it");
		}
	}
	while (srv->nstreams > 0)
		pthread_cond_wait(&srv->cv, &srv->mu);
	struct stream_thr *done = srv->finished;
	srv->finished = NULL;
	pthread_mutex_unlock(&srv->mu);
	join_all(done);
	stop_workers(srv);
	reactor_stop(srv);
	spare_drain(srv);
}

void vr_server_destroy(vr_server *srv)
{
	if (!srv)
		return;
	vr_prom_collector_remove(metrics_collect, srv);
	vr_server_shutdown(srv, 0);
	if (srv->server)
		grpc_server_destroy(srv->server);
	free(srv->workers);
	for (size_t i = 0; i < srv->nmethods; i++)
		free((char *)srv->methods[i].m.path);
	free(srv->methods);
	free(srv->listen);
	free(srv->cert_file);
	free(srv->key_file);
	free(srv->bearer);
	free(srv->peers);
	free(srv->wakers);
	pthread_mutex_destroy(&srv->mu);
	pthread_mutex_destroy(&srv->spare_mu);
	pthread_cond_destroy(&srv->cv);
	free(srv);
}

/* ---- the handler's view ------------------------------------------------- */

const ProtobufCMessage *vr_call_request(vr_call *c)
{
	return c->request;
}

int vr_call_read(vr_call *c, ProtobufCMessage **msg)
{
	char why[256];
	int rc = vr_call_read_each(c, msg, why, sizeof why);
	if (rc == 0 && why[0]) {
		protobuf_c_message_free_unpacked(*msg, NULL);
		*msg = NULL;
		vr_call_error(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
		return VR_EINVAL;
	}
	return rc;
}

int vr_call_read_each(vr_call *c, ProtobufCMessage **msg, char *why, size_t cap)
{
	*msg = NULL;
	if (cap)
		why[0] = 0;
	if (c->mt->m.kind != VR_CLIENT_STREAM && c->mt->m.kind != VR_BIDI)
		return VR_ESTATE;
	grpc_byte_buffer *bb = NULL;
	grpc_op op;
	memset(&op, 0, sizeof op);
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &bb;
	int rc = call_start(c, &op, 1, &c->op);
	if (rc == 0)
		rc = call_wait(c, &c->op);
	if (rc) {
		if (bb)
			grpc_byte_buffer_destroy(bb);
		return VR_ECANCELLED;
	}
	if (!bb)
		return VR_EEOF;
	rc = vr__unpack(bb, c->mt->m.request, msg, why, cap);
	grpc_byte_buffer_destroy(bb);
	if (rc)
		vr_call_error(c, GRPC_STATUS_INVALID_ARGUMENT, "request is not a valid %s message",
			      c->mt->m.request->name);
	return rc;
}

/* Sends bb, which this takes (see vr_call_send). */
static int send_bb(vr_call *c, grpc_byte_buffer *bb)
{
	if (c->mt->m.kind == VR_UNARY) {
		c->reply = bb;
		return 0;
	}
	grpc_op ops[2];
	memset(ops, 0, sizeof ops);
	size_t n = 0;
	if (!c->md_sent)
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = bb;
	int rc = call_start(c, ops, n, &c->op);
	if (rc == 0) {
		c->md_sent = 1;
		rc = call_wait(c, &c->op);
	}
	grpc_byte_buffer_destroy(bb);
	return rc ? VR_ECANCELLED : 0;
}

static int too_big(vr_call *c, size_t len)
{
	return vr_call_error(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
			     "response of %zu bytes is over the message limit of %zu bytes", len,
			     c->srv->max_message);
}

int vr_call_send(vr_call *c, const ProtobufCMessage *msg)
{
	grpc_byte_buffer *bb = NULL;
	if (c->mt->m.kind == VR_UNARY && c->reply)
		return VR_ESTATE;
	int rc = vr__pack(msg, c->srv->max_message, &bb);
	if (rc == VR_ETOOBIG)
		too_big(c, protobuf_c_message_get_packed_size(msg));
	return rc ? rc : send_bb(c, bb);
}

int vr_call_send_packed(vr_call *c, const void *bytes, size_t len)
{
	if (c->mt->m.kind == VR_UNARY && c->reply)
		return VR_ESTATE;
	if (len > c->srv->max_message) {
		too_big(c, len);
		return VR_ETOOBIG;
	}
	grpc_slice s = grpc_slice_from_copied_buffer(bytes, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb ? send_bb(c, bb) : VR_ENOMEM;
}

int vr_call_error(vr_call *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
	return code;
}

int vr_call_cancelled(vr_call *c)
{
	if (c->shared) {
		pthread_mutex_lock(&c->mu);
		int gone = c->close.done && c->cancelled;
		pthread_mutex_unlock(&c->mu);
		return gone;
	}
	if (c->async) {
		/* The owner may be the worker itself (an inline handler: it takes
		 * its queue's events), or another thread (a detached call: the
		 * worker marks the close as it comes). */
		if (!atomic_load(&c->close.done) && pthread_equal(pthread_self(), c->w->tid))
			worker_poll(c->w);
		return atomic_load(&c->close.done) && c->cancelled;
	}
	if (!c->close.done)
		call_poll(c);
	return c->close.done && c->cancelled;
}

int vr_call_stopping(vr_call *c)
{
	return atomic_load(&c->srv->stopping) || vr_call_cancelled(c);
}

int vr_call_server_stopping(const vr_call *c)
{
	return atomic_load(&c->srv->stopping);
}

int vr_call_wake_on_stop(vr_call *c, void (*wake)(void *arg), void *arg)
{
	vr_server *srv = c->srv;
	if (!c->shared || !wake)
		return VR_ESTATE;
	int rc = 0;
	pthread_mutex_lock(&srv->mu);
	size_t i = 0;
	while (i < srv->nwakers && (srv->wakers[i].fn != wake || srv->wakers[i].arg != arg))
		i++;
	if (i == srv->nwakers) {
		struct waker *w = grow(srv->wakers, &srv->cap_wakers, srv->nwakers, sizeof *w, 4);
		if (w) {
			srv->wakers = w;
			w[srv->nwakers++] = (struct waker){ wake, arg };
		} else {
			rc = VR_ENOMEM;
		}
	}
	pthread_mutex_unlock(&srv->mu);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->mu);
	c->wake = wake;
	c->wake_arg = arg;
	pthread_mutex_unlock(&c->mu);
	return 0;
}

int64_t vr_call_deadline_ms(vr_call *c)
{
	gpr_timespec d = c->mt ? c->deadline : c->details.deadline;
	if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
		return INT64_MAX;
	d = gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC);
	int64_t ms = gpr_time_to_millis(gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC)));
	return ms > 0 ? ms : 0;
}

int vr_call_metadata(vr_call *c, const char *key, char *buf, size_t len)
{
	for (size_t i = 0; i < c->md.count; i++) {
		const grpc_metadata *m = &c->md.metadata[i];
		if (grpc_slice_str_cmp(m->key, key))
			continue;
		size_t n = GRPC_SLICE_LENGTH(m->value);
		if (n + 1 > len)
			return VR_ETOOBIG;
		memcpy(buf, GRPC_SLICE_START_PTR(m->value), n);
		buf[n] = 0;
		return (int)n;
	}
	return VR_ENOTFOUND;
}

const char *vr_call_peer(vr_call *c)
{
	if (!c->peer)
		c->peer = grpc_call_get_peer(c->call);
	return c->peer ? c->peer : "?";
}

const char *vr_call_method(const vr_call *c)
{
	return c->path;
}

size_t vr_call_max_message(const vr_call *c)
{
	return c->srv->max_message;
}

grpc_call *vr_call_grpc(vr_call *c)
{
	return c->call;
}
