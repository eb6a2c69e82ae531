/* rpc server: serves method tables of protobuf-c messages over gRPC core.
 *
 * DESIGN
 * Threads. K worker threads, each blocked in grpc_completion_queue_next on
 * its own notification queue (registered with the server). Streaming
 * handlers, and unary ones marked own_thread, get one thread each, at
 * most max_streams at a time; beyond that a call is answered
 * RESOURCE_EXHAUSTED.
 *
 * Ownership. Every requested call (a vr_call) carries a completion queue
 * of its own, given to core as the call's cq_bound_to_call, so every event
 * of a call (its batches and its RECV_CLOSE_ON_SERVER) arrives on that
 * queue and the one thread that owns the call sees them all: no per-call
 * lock. The owner is the worker while it checks and unpacks the request
 * and runs a unary handler inline; otherwise the worker hands the call
 * to a new thread and never touches it again; a unary handler may hand it
 * to another thread with VR_DETACHED. The owner waits for its own batches
 * by draining the call's queue and marking which op finished; the close
 * op completes early only when the call is cancelled, which is how
 * handlers see cancellation without blocking.
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
 * End. vr_server_shutdown stops admission (grpc_server_shutdown_and_notify:
 * armed requests come back failed and are freed), waits up to the grace
 * for calls to finish (srv->pending counts armed requests and live calls;
 * core's own notify tag also waits for idle connections to close), then
 * cancels whatever is left (every blocked batch fails, handlers return,
 * connections drop), waits for the notify tag and for stream threads, and
 * finally shuts each worker queue and joins its thread after it drained
 * the queue to GRPC_QUEUE_SHUTDOWN. A call's own queue is shut and
 * drained when the call is freed. */
#include "rpc_int.h"

#include "err.h"
#include "log.h"

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
#include <time.h>
#include <unistd.h>

enum { TAG_CALL = 1, TAG_SHUTDOWN = 2 };
enum { GENERIC_ARMED = 2, STREAM_ARMED = 2, UNARY_ARMED = 1 };

struct method_rt {
	vr_method m;
	void *registered; /* core's handle */
};

struct worker {
	vr_server *srv;
	grpc_completion_queue *cq;
	pthread_t tid;
	int running;
};

struct stream_thr {
	pthread_t tid;
	vr_call *call;
	struct stream_thr *next;
};

struct vr_server {
	int shutdown_tag; /* TAG_SHUTDOWN: the notify tag's address */
	char *listen, *cert_file, *key_file, *bearer; /* bearer: "Bearer <token>" */
	int nworkers, max_streams;
	size_t max_message;
	struct method_rt *methods;
	size_t nmethods, cap_methods;

	grpc_server *server;
	struct worker *workers;
	int port, started, shut;
	atomic_int stopping;
	atomic_int pending; /* armed requests not yet back + calls not yet freed */

	pthread_mutex_t mu; /* guards the fields below */
	pthread_cond_t cv;
	int notified;       /* the shutdown tag arrived */
	int nstreams;
	struct stream_thr *streams, *finished;
	char err[256];
};

struct op {
	int done, ok;
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
	struct timespec t0;
	char path[160];
	char msg[256];
};

static double ms_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Shuts a queue nobody else uses and drains it so it can be destroyed. */
static void cq_close(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}

/* ---- the call's own queue ---------------------------------------------- */

static void mark(grpc_event ev)
{
	struct op *o = ev.tag;
	o->done = 1;
	o->ok = ev.success;
}

static int call_start(vr_call *c, const grpc_op *ops, size_t n, struct op *op)
{
	op->done = op->ok = 0;
	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, op, NULL);
	if (e == GRPC_CALL_OK)
		return 0;
	op->done = 1;
	VR_WARN("rpc %s: grpc_call_start_batch: %s", c->path, grpc_call_error_to_string(e));
	return VR_ESTATE;
}

/* Waits for op; every event seen on the way is marked. */
static int call_wait(vr_call *c, struct op *op)
{
	while (!op->done) {
		grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			mark(ev);
	}
	return op->ok ? 0 : VR_ECANCELLED;
}

static void call_poll(vr_call *c)
{
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			return;
		mark(ev);
	}
}

static void call_free(vr_call *c)
{
	if (c->call)
		grpc_call_unref(c->call);
	grpc_metadata_array_destroy(&c->md);
	grpc_call_details_destroy(&c->details);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	if (c->reply)
		grpc_byte_buffer_destroy(c->reply);
	if (c->request)
		protobuf_c_message_free_unpacked(c->request, NULL);
	gpr_free(c->peer);
	if (c->cq)
		cq_close(c->cq);
	vr_server *srv = c->srv;
	int counted = c->counted;
	free(c);
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
	vr_call *c = calloc(1, sizeof *c);
	if (!c)
		return VR_ENOMEM;
	c->tag = TAG_CALL;
	c->srv = srv;
	c->w = w;
	c->mt = mt;
	grpc_metadata_array_init(&c->md);
	grpc_call_details_init(&c->details);
	c->cq = grpc_completion_queue_create_for_next(NULL);
	if (!c->cq) {
		call_free(c);
		return VR_ENOMEM;
	}
	grpc_call_error e;
	if (mt)
		e = grpc_server_request_registered_call(srv->server, mt->registered, &c->call,
							&c->deadline, &c->md,
							has_payload(mt) ? &c->payload : NULL,
							c->cq, w->cq, c);
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

/* ---- finishing a call --------------------------------------------------- */

static void call_log(vr_call *c, int status)
{
	if (!vr_log_enabled(VR_LOG_DEBUG))
		return;
	VR_DEBUG("rpc %s peer=%s %s %.3f ms%s%s", c->path, vr_call_peer(c), vr_status_name(status),
		 ms_since(&c->t0), c->msg[0] ? ": " : "", c->msg);
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
	grpc_slice details = grpc_slice_from_copied_string(c->msg);
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)status;
	ops[n++].data.send_status_from_server.status_details = &details;
	if (call_start(c, ops, n, &c->op) == 0)
		call_wait(c, &c->op);
	else
		grpc_call_cancel(c->call, NULL); /* or the close below never comes */
	grpc_slice_unref(details);
	call_wait(c, &c->close);
	call_log(c, status);
	call_free(c);
}

/* ---- streams -------------------------------------------------------------- */

static void *stream_main(void *arg)
{
	struct stream_thr *t = arg;
	vr_call *c = t->call;
	vr_server *srv = c->srv;
	int code = c->mt->m.handler(c, c->mt->m.ctx);
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
	if (srv->nstreams >= srv->max_streams) {
		rc = VR_EFULL;
		goto leave;
	}
	int e = pthread_create(&t->tid, NULL, stream_main, t);
	if (e) {
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
	clock_gettime(CLOCK_MONOTONIC, &c->t0);
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
	if (call_start(c, &close_op, 1, &c->close)) {
		grpc_call_cancel(c->call, NULL);
		call_free(c);
		goto leave;
	}

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
		code = mt->m.handler(c, mt->m.ctx);
		if (code != VR_DETACHED)
			vr_call_finish(c, code);
		goto leave;
	}
	int rc = spawn_stream(c);
	if (rc == VR_EFULL)
		vr_call_finish(c, vr_call_error(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
						"too many streaming calls at once (limit %d); retry later",
						c->srv->max_streams));
	else if (rc)
		vr_call_finish(c, vr_call_error(c, GRPC_STATUS_UNAVAILABLE,
						"cannot start a handler thread: %s", vr_strerror(rc)));
leave:
	if (inline_unary)
		rearm(w, mt);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	vr_server *srv = w->srv;
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (*(int *)ev.tag == TAG_SHUTDOWN) {
			pthread_mutex_lock(&srv->mu);
			srv->notified = 1;
			pthread_cond_broadcast(&srv->cv);
			pthread_mutex_unlock(&srv->mu);
			continue;
		}
		vr_call *c = ev.tag;
		if (!ev.success) {
			call_free(c); /* a request voided by shutdown */
			continue;
		}
		dispatch(w, c);
	}
	return NULL;
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
	pthread_cond_init(&srv->cv, NULL);
	srv->nworkers = opts->threads > 0 ? opts->threads : 2;
	srv->max_streams = opts->max_streams > 0 ? opts->max_streams : 64;
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
		    m->kind < VR_UNARY || m->kind > VR_BIDI || (m->own_thread && m->kind != VR_UNARY))
			return VR_EINVAL;
		for (size_t j = 0; j < srv->nmethods; j++)
			if (!strcmp(srv->methods[j].m.path, m->path))
				return VR_EINVAL;
		if (srv->nmethods == srv->cap_methods) {
			size_t cap = srv->cap_methods ? 2 * srv->cap_methods : 16;
			struct method_rt *p = realloc(srv->methods, cap * sizeof *p);
			if (!p)
				return VR_ENOMEM;
			srv->methods = p;
			srv->cap_methods = cap;
		}
		struct method_rt *mt = &srv->methods[srv->nmethods];
		mt->m = *m;
		mt->registered = NULL;
		mt->m.path = strdup(m->path);
		if (!mt->m.path)
			return VR_ENOMEM;
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

	/* Workers first: once core has a listener, the server can only be
	 * taken down through a full shutdown. */
	srv->workers = calloc((size_t)srv->nworkers, sizeof *srv->workers);
	if (!srv->workers) {
		rc = VR_ENOMEM;
		goto fail;
	}
	for (int i = 0; i < srv->nworkers; i++) {
		struct worker *w = &srv->workers[i];
		w->srv = srv;
		w->cq = grpc_completion_queue_create_for_next(NULL);
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
static void wait_done(vr_server *srv, const struct timespec *until, int idle_too)
{
	while (!srv->notified && !(idle_too && atomic_load(&srv->pending) == 0))
		if (pthread_cond_timedwait(&srv->cv, &srv->mu, until) == ETIMEDOUT)
			return;
}

void vr_server_shutdown(vr_server *srv, int grace_ms)
{
	if (!srv->started || srv->shut)
		return;
	srv->shut = 1;
	atomic_store(&srv->stopping, 1);
	grpc_server_shutdown_and_notify(srv->server, srv->workers[0].cq, &srv->shutdown_tag);

	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += grace_ms / 1000;
	until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	/* Core's tag waits for every connection to close, and an idle
	 * client that is not polling never reads our GOAWAY; so once no call
	 * is pending, cancelling (which also drops connections) loses
	 * nothing. */
	pthread_mutex_lock(&srv->mu);
	wait_done(srv, &until, 1);
	if (!srv->notified) {
		int left = atomic_load(&srv->pending);
		if (left > 0 && grace_ms > 0)
			VR_INFO("rpc: %d calls still running after %d ms; cancelling them", left, grace_ms);
		pthread_mutex_unlock(&srv->mu);
		grpc_server_cancel_all_calls(srv->server);
		pthread_mutex_lock(&srv->mu);
		for (;;) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 5;
			wait_done(srv, &until, 0);
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
}

void vr_server_destroy(vr_server *srv)
{
	if (!srv)
		return;
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
	pthread_mutex_destroy(&srv->mu);
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

int vr_call_send(vr_call *c, const ProtobufCMessage *msg)
{
	grpc_byte_buffer *bb = NULL;
	int unary = c->mt->m.kind == VR_UNARY;
	if (unary && c->reply)
		return VR_ESTATE;
	int rc = vr__pack(msg, c->srv->max_message, &bb);
	if (rc == VR_ETOOBIG)
		vr_call_error(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
			      "response of %zu bytes is over the message limit of %zu bytes",
			      protobuf_c_message_get_packed_size(msg), c->srv->max_message);
	if (rc)
		return rc;
	if (unary) {
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
	rc = call_start(c, ops, n, &c->op);
	if (rc == 0) {
		c->md_sent = 1;
		rc = call_wait(c, &c->op);
	}
	grpc_byte_buffer_destroy(bb);
	return rc ? VR_ECANCELLED : 0;
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
	if (!c->close.done)
		call_poll(c);
	return c->close.done && c->cancelled;
}

int vr_call_stopping(vr_call *c)
{
	return atomic_load(&c->srv->stopping) || vr_call_cancelled(c);
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
