/* rpc client: blocking unary and streaming calls over a gRPC core channel.
 *
 * Every call has a pluck completion queue of its own and waits for exactly
 * the batch it started, so a call needs no lock and channels are shared
 * freely between threads. Method paths are registered with the channel
 * once (a small table under the channel's lock) so core does not parse the
 * path on every call. The token, when set, goes with every call as
 * "authorization: Bearer <token>" metadata, and so does the shard map's
 * tag as "visrec-shard-map" (shardmap.h). */
#include "rpc_int.h"

#include "err.h"
#include "log.h"

#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reg {
	char *path;
	void *handle;
};

struct vr_channel {
	grpc_channel *ch;
	size_t max_message;
	grpc_metadata md[2]; /* sent with every call: the token, the shard map tag */
	size_t nmd;
	pthread_mutex_t mu; /* guards regs */
	struct reg *regs;
	size_t nregs, cap;
};

struct vr_ccall {
	vr_channel *ch;
	grpc_call *call;
	grpc_completion_queue *cq;
	const ProtobufCMessageDescriptor *resp_desc;
	grpc_metadata_array md_in, trailers;
	int md_sent, md_received, closed;
};

int vr_channel_create(vr_channel **out, const char *target, const vr_channel_opts *opts)
{
	static const vr_channel_opts none;
	int rc = 0;
	char *roots = NULL;
	grpc_channel_credentials *creds = NULL;
	if (!target || !target[0])
		return VR_EINVAL;
	if (!opts)
		opts = &none;
	vr_channel *ch = calloc(1, sizeof *ch);
	if (!ch)
		return VR_ENOMEM;
	pthread_mutex_init(&ch->mu, NULL);
	ch->max_message = opts->max_message_bytes ? opts->max_message_bytes : VR__DEFAULT_MAX_MESSAGE;
	if (opts->tls_root_file && opts->tls_root_file[0]) {
		rc = vr__read_file(opts->tls_root_file, &roots);
		if (rc)
			goto fail;
		creds = grpc_ssl_credentials_create(roots, NULL, NULL, NULL);
	} else {
		creds = grpc_insecure_credentials_create();
	}
	if (!creds) {
		rc = VR_EINVAL;
		goto fail;
	}
	grpc_arg args[4];
	vr__message_args(args, ch->max_message);
	size_t nargs = 2;
	/* gRPC's own reconnect back-off grows to 120 s by default: after a
	 * peer was down for a minute, the channel would not try it again for
	 * tens of seconds after it is back, and every call meanwhile fails at
	 * once. Our peers are the pair's own daemons in one cluster, and each
	 * caller that retries (rankd's feed followers, a replica) backs off up
	 * to 5 s itself: the channel does not wait longer than they do. */
	args[nargs].type = GRPC_ARG_INTEGER;
	args[nargs].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
	args[nargs++].value.integer = VR__MAX_RECONNECT_BACKOFF_MS;
	if (opts->tls_server_name && opts->tls_server_name[0]) {
		args[nargs].type = GRPC_ARG_STRING;
		args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		args[nargs++].value.string = (char *)opts->tls_server_name;
	}
	grpc_channel_args cargs = { .num_args = nargs, .args = args };
	ch->ch = grpc_channel_create(target, creds, &cargs);
	if (!ch->ch) {
		rc = VR_EINVAL;
		goto fail;
	}
	if (opts->token && opts->token[0]) {
		char *v = NULL;
		if (asprintf(&v, "Bearer %s", opts->token) < 0) {
			rc = VR_ENOMEM;
			goto fail;
		}
		ch->md[ch->nmd].key = grpc_slice_from_static_string("authorization");
		ch->md[ch->nmd++].value = grpc_slice_from_copied_string(v);
		free(v);
	}
	if (opts->shard_map && opts->shard_map[0]) {
		ch->md[ch->nmd].key = grpc_slice_from_static_string("visrec-shard-map");
		ch->md[ch->nmd++].value = grpc_slice_from_copied_string(opts->shard_map);
	}
	*out = ch;
	ch = NULL;
fail:
	if (creds)
		grpc_channel_credentials_release(creds);
	free(roots);
	vr_channel_destroy(ch);
	return rc;
}

void vr_channel_destroy(vr_channel *ch)
{
	if (!ch)
		return;
	if (ch->ch)
		grpc_channel_destroy(ch->ch);
	for (size_t i = 0; i < ch->nmd; i++)
		grpc_slice_unref(ch->md[i].value);
	for (size_t i = 0; i < ch->nregs; i++)
		free(ch->regs[i].path);
	free(ch->regs);
	pthread_mutex_destroy(&ch->mu);
	free(ch);
}

int vr_channel_connected(vr_channel *ch, int try_connect)
{
	return grpc_channel_check_connectivity_state(ch->ch, try_connect) == GRPC_CHANNEL_READY;
}

/* The channel's handle for path, registered on first use. */
static void *registered(vr_channel *ch, const char *path)
{
	void *h = NULL;
	pthread_mutex_lock(&ch->mu);
	for (size_t i = 0; i < ch->nregs; i++) {
		if (!strcmp(ch->regs[i].path, path)) {
			h = ch->regs[i].handle;
			goto leave;
		}
	}
	if (ch->nregs == ch->cap) {
		size_t cap = ch->cap ? 2 * ch->cap : 8;
		struct reg *p = realloc(ch->regs, cap * sizeof *p);
		if (!p)
			goto leave;
		ch->regs = p;
		ch->cap = cap;
	}
	char *copy = strdup(path); /* core keeps the pointer for the channel's life */
	if (!copy)
		goto leave;
	h = grpc_channel_register_call(ch->ch, copy, NULL, NULL);
	ch->regs[ch->nregs].path = copy;
	ch->regs[ch->nregs++].handle = h;
leave:
	pthread_mutex_unlock(&ch->mu);
	return h;
}

static int new_call(vr_channel *ch, const char *path, int64_t deadline_ms, vr_call *parent,
		    grpc_completion_queue **cq, grpc_call **call)
{
	void *h = registered(ch, path);
	if (!h)
		return VR_ENOMEM;
	*cq = grpc_completion_queue_create_for_pluck(NULL);
	if (!*cq)
		return VR_ENOMEM;
	*call = grpc_channel_create_registered_call(ch->ch, parent ? vr_call_grpc(parent) : NULL,
						    GRPC_PROPAGATE_DEFAULTS, *cq, h,
						    vr__deadline(deadline_ms), NULL);
	if (!*call) {
		grpc_completion_queue_destroy(*cq);
		*cq = NULL;
		return VR_ENOMEM;
	}
	return 0;
}

/* Starts a batch and waits for it. 0 when it succeeded. */
static int run_batch(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n)
{
	int tag;
	grpc_call_error e = grpc_call_start_batch(call, ops, n, &tag, NULL);
	if (e != GRPC_CALL_OK) {
		VR_WARN("rpc client: grpc_call_start_batch: %s", grpc_call_error_to_string(e));
		return VR_ESTATE;
	}
	grpc_event ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	return ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : VR_ERPC;
}

static void fill_status(vr_status *st, grpc_status_code code, grpc_slice details)
{
	if (!st)
		return;
	st->code = code;
	snprintf(st->message, sizeof st->message, "%.*s", (int)GRPC_SLICE_LENGTH(details),
		 (const char *)GRPC_SLICE_START_PTR(details));
}

static void set_status(vr_status *st, int code, const char *msg)
{
	if (!st)
		return;
	st->code = code;
	snprintf(st->message, sizeof st->message, "%s", msg);
}

static void init_md_op(vr_channel *ch, grpc_op *op)
{
	op->op = GRPC_OP_SEND_INITIAL_METADATA;
	if (ch->nmd) {
		op->data.send_initial_metadata.count = ch->nmd;
		op->data.send_initial_metadata.metadata = ch->md;
	}
}

int vr_client_unary(vr_channel *ch, const char *path, const ProtobufCMessage *req,
		    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
		    int64_t deadline_ms, vr_call *parent, vr_status *st)
{
	grpc_byte_buffer *out = NULL, *in = NULL;
	grpc_completion_queue *cq = NULL;
	grpc_call *call = NULL;
	grpc_metadata_array md_in, trailers;
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	*resp = NULL;
	grpc_metadata_array_init(&md_in);
	grpc_metadata_array_init(&trailers);
	int rc = vr__pack(req, ch->max_message, &out);
	if (rc) {
		set_status(st, vr_status_from_rc(rc), "the request is over the message limit");
		goto leave;
	}
	rc = new_call(ch, path, deadline_ms, parent, &cq, &call);
	if (rc)
		goto leave;
	grpc_op ops[6];
	memset(ops, 0, sizeof ops);
	init_md_op(ch, &ops[0]);
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = out;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &in;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailers;
	ops[5].data.recv_status_on_client.status = &code;
	ops[5].data.recv_status_on_client.status_details = &details;
	rc = run_batch(call, cq, ops, 6);
	if (rc) {
		set_status(st, GRPC_STATUS_INTERNAL, "the call's batch failed");
		goto leave;
	}
	fill_status(st, code, details);
	if (code != GRPC_STATUS_OK) {
		rc = VR_ERPC;
		goto leave;
	}
	if (!in || vr__unpack(in, resp_desc, resp, NULL, 0)) {
		set_status(st, GRPC_STATUS_INTERNAL, in ? "the response is not a valid message"
							: "the server sent no response");
		rc = VR_EINVAL;
	}
leave:
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&md_in);
	grpc_metadata_array_destroy(&trailers);
	if (in)
		grpc_byte_buffer_destroy(in);
	if (out)
		grpc_byte_buffer_destroy(out);
	if (call)
		grpc_call_unref(call);
	if (cq)
		grpc_completion_queue_destroy(cq);
	return rc;
}

int vr_ccall_start(vr_ccall **out, vr_channel *ch, const char *path,
		   const ProtobufCMessageDescriptor *resp_desc, int64_t deadline_ms,
		   vr_call *parent)
{
	vr_ccall *cc = calloc(1, sizeof *cc);
	if (!cc)
		return VR_ENOMEM;
	cc->ch = ch;
	cc->resp_desc = resp_desc;
	grpc_metadata_array_init(&cc->md_in);
	grpc_metadata_array_init(&cc->trailers);
	int rc = new_call(ch, path, deadline_ms, parent, &cc->cq, &cc->call);
	if (rc) {
		grpc_metadata_array_destroy(&cc->md_in);
		grpc_metadata_array_destroy(&cc->trailers);
		free(cc);
		return rc;
	}
	*out = cc;
	return 0;
}

/* Adds the first-time metadata ops to a batch. */
static size_t lead_ops(vr_ccall *cc, grpc_op *ops, int recv)
{
	size_t n = 0;
	if (!cc->md_sent)
		init_md_op(cc->ch, &ops[n++]);
	if (recv && !cc->md_received) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n++].data.recv_initial_metadata.recv_initial_metadata = &cc->md_in;
	}
	return n;
}

static int ccall_batch(vr_ccall *cc, grpc_op *ops, size_t n, int recv)
{
	int rc = run_batch(cc->call, cc->cq, ops, n);
	if (rc != VR_ESTATE) {
		/* Whatever happened to the call, these ops are spent. */
		cc->md_sent = 1;
		if (recv)
			cc->md_received = 1;
	}
	return rc;
}

int vr_ccall_send(vr_ccall *cc, const ProtobufCMessage *msg)
{
	if (cc->closed)
		return VR_ESTATE;
	grpc_byte_buffer *bb = NULL;
	int rc = vr__pack(msg, cc->ch->max_message, &bb);
	if (rc)
		return rc;
	grpc_op ops[2];
	memset(ops, 0, sizeof ops);
	size_t n = lead_ops(cc, ops, 0);
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = bb;
	rc = ccall_batch(cc, ops, n, 0);
	grpc_byte_buffer_destroy(bb);
	return rc;
}

int vr_ccall_close_send(vr_ccall *cc)
{
	if (cc->closed)
		return 0;
	grpc_op ops[2];
	memset(ops, 0, sizeof ops);
	size_t n = lead_ops(cc, ops, 0);
	ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	int rc = ccall_batch(cc, ops, n, 0);
	cc->closed = 1;
	return rc;
}

int vr_ccall_recv(vr_ccall *cc, ProtobufCMessage **msg)
{
	*msg = NULL;
	grpc_byte_buffer *bb = NULL;
	grpc_op ops[3];
	memset(ops, 0, sizeof ops);
	size_t n = lead_ops(cc, ops, 1);
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n++].data.recv_message.recv_message = &bb;
	int rc = ccall_batch(cc, ops, n, 1);
	if (rc == 0 && !bb)
		rc = VR_EEOF;
	if (rc == 0 && vr__unpack(bb, cc->resp_desc, msg, NULL, 0))
		rc = VR_EINVAL;
	if (bb)
		grpc_byte_buffer_destroy(bb);
	return rc;
}

void vr_ccall_cancel(vr_ccall *cc)
{
	grpc_call_cancel(cc->call, NULL);
}

int vr_ccall_finish(vr_ccall *cc, vr_status *st)
{
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_op ops[3];
	memset(ops, 0, sizeof ops);
	size_t n = lead_ops(cc, ops, 1);
	ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[n].data.recv_status_on_client.trailing_metadata = &cc->trailers;
	ops[n].data.recv_status_on_client.status = &code;
	ops[n++].data.recv_status_on_client.status_details = &details;
	int rc = run_batch(cc->call, cc->cq, ops, n);
	if (rc == 0)
		fill_status(st, code, details);
	else
		set_status(st, GRPC_STATUS_INTERNAL, "the status batch failed");
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&cc->md_in);
	grpc_metadata_array_destroy(&cc->trailers);
	grpc_call_unref(cc->call);
	grpc_completion_queue_destroy(cc->cq);
	free(cc);
	return rc == 0 && code == GRPC_STATUS_OK ? 0 : VR_ERPC;
}
