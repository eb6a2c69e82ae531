/* Tests of the rpc layer (common/rpc.h, common/health.h): our C client
 * against our C server in one process over real loopback sockets, with a
 * small test service (tests/rpc/rpctest.proto). The TLS test makes its
 * key and certificate with openssl before gRPC starts (no fork after
 * grpc_init).
 *
 * Why one file at ~1,050 lines: one layer under test (client and
 * server of common/rpc) through one test service. */
#include "deadline.h"
#include "err.h"
#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "health.h"
#include "rpc.h"
#include "rpctest.pb-c.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define SVC "/visrec.rpctest.Test/"
#define TOKEN "s3cret"
#define MB ((size_t)1 << 20)

typedef Visrec__Rpctest__Msg Msg;
static const Msg msg_init = VISREC__RPCTEST__MSG__INIT;
static const ProtobufCMessageDescriptor *const msg_desc = &visrec__rpctest__msg__descriptor;

static atomic_int hang_cancelled, forever_ended, deaf_cancelled;
static atomic_llong hang_deadline_ms;

static vr_server *srv;      /* token TOKEN, 8 MiB messages, Health */
static vr_health *health;
static char target[64];
static vr_channel *plain;   /* no token, 4 MiB */
static vr_channel *admin;   /* right token */
static vr_channel *wrong;   /* wrong token */
static vr_channel *big;     /* 16 MiB, so only the server's 8 MiB limit applies */
static vr_channel *relay_ch; /* Relay's way back into the server it runs in */
static char tmpdir[64], cert_file[96], key_file[96];
static int have_tls;

/* Waits up to ms for *v to reach at least want. */
static int wait_at_least(atomic_int *v, int want, int ms)
{
	int64_t end = vr_now_ms() + ms;
	while (atomic_load(v) < want && vr_now_ms() < end)
		usleep(2000);
	return atomic_load(v) >= want;
}

/* ---- the test service ------------------------------------------------- */

static int send_msg(vr_call *call, const char *text, int64_t n)
{
	Msg m = msg_init;
	m.text = (char *)text;
	m.n = n;
	int rc = vr_call_send(call, &m.base);
	return rc ? rc : GRPC_STATUS_OK;
}

static int echo(vr_call *call, void *ctx)
{
	const Msg *req = (const Msg *)vr_call_request(call);
	char buf[256];
	Msg resp = msg_init;
	resp.text = req->text;
	resp.blob = req->blob;
	int64_t left = vr_call_deadline_ms(call);
	resp.n = left == INT64_MAX ? -1 : left;
	if (!strcmp(req->text, "peer")) {
		resp.text = (char *)vr_call_peer(call);
	} else if (!strcmp(req->text, "auth")) {
		if (vr_call_metadata(call, "authorization", buf, sizeof buf) < 0)
			snprintf(buf, sizeof buf, "(none)");
		resp.text = buf;
	}
	int rc = vr_call_send(call, &resp.base);
	return rc ? rc : GRPC_STATUS_OK;
}

static int count(vr_call *call, void *ctx)
{
	const Msg *req = (const Msg *)vr_call_request(call);
	for (int64_t i = 0; i < req->n; i++) {
		int rc = send_msg(call, req->text, i);
		if (rc)
			return rc;
	}
	return GRPC_STATUS_OK;
}

static int sum(vr_call *call, void *ctx)
{
	int64_t total = 0, k = 0;
	for (;;) {
		ProtobufCMessage *m;
		int rc = vr_call_read(call, &m);
		if (rc == VR_EEOF)
			break;
		if (rc)
			return rc;
		total += ((Msg *)m)->n;
		k++;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	char text[32];
	snprintf(text, sizeof text, "%lld", (long long)k);
	return send_msg(call, text, total);
}

static int chat(vr_call *call, void *ctx)
{
	for (;;) {
		ProtobufCMessage *m;
		int rc = vr_call_read(call, &m);
		if (rc == VR_EEOF)
			return GRPC_STATUS_OK;
		if (rc)
			return rc;
		rc = send_msg(call, ((Msg *)m)->text, ((Msg *)m)->n * 2);
		protobuf_c_message_free_unpacked(m, NULL);
		if (rc)
			return rc;
	}
}

static int hang(vr_call *call, void *ctx)
{
	atomic_store(&hang_deadline_ms, vr_call_deadline_ms(call));
	for (int i = 0; i < 5000; i++) {
		if (vr_call_cancelled(call)) {
			atomic_fetch_add(&hang_cancelled, 1);
			return GRPC_STATUS_CANCELLED;
		}
		usleep(2000);
	}
	return vr_call_error(call, GRPC_STATUS_INTERNAL, "hang was never cancelled");
}

static int forever(vr_call *call, void *ctx)
{
	int64_t i = 0;
	while (!vr_call_stopping(call)) {
		if (send_msg(call, "tick", i++))
			break;
		usleep(5000);
	}
	atomic_fetch_add(&forever_ended, 1);
	if (vr_call_cancelled(call))
		return GRPC_STATUS_CANCELLED;
	return vr_call_error(call, GRPC_STATUS_UNAVAILABLE, "stopping");
}

/* A stream that ignores shutdown: only cancellation ends it. */
static int deaf(vr_call *call, void *ctx)
{
	int rc = send_msg(call, "deaf", 0);
	if (rc)
		return rc;
	for (int i = 0; i < 5000 && !vr_call_cancelled(call); i++)
		usleep(2000);
	atomic_fetch_add(&deaf_cancelled, 1);
	return GRPC_STATUS_CANCELLED;
}

/* Calls Hang on its own server with this call as parent: the outer
 * deadline and cancellation must reach Hang. */
static int relay(vr_call *call, void *ctx)
{
	const Msg *req = (const Msg *)vr_call_request(call);
	ProtobufCMessage *resp = NULL;
	vr_status st;
	if (vr_client_unary(relay_ch, SVC "Hang", &req->base, msg_desc, &resp, 0, call, &st))
		return vr_call_error(call, st.code, "inner call: %s", st.message);
	int rc = vr_call_send(call, resp);
	protobuf_c_message_free_unpacked(resp, NULL);
	return rc ? rc : GRPC_STATUS_OK;
}

static int big_reply(vr_call *call, void *ctx)
{
	const Msg *req = (const Msg *)vr_call_request(call);
	Msg resp = msg_init;
	resp.blob.len = (size_t)req->n;
	resp.blob.data = calloc(1, resp.blob.len + 1);
	if (!resp.blob.data)
		return VR_ENOMEM;
	int rc = vr_call_send(call, &resp.base);
	free(resp.blob.data);
	return rc ? rc : GRPC_STATUS_OK;
}

static int no_response(vr_call *call, void *ctx)
{
	return GRPC_STATUS_OK;
}

static void *finish_later(void *arg)
{
	vr_call *call = arg;
	usleep(20000);
	Msg resp = msg_init;
	resp.text = (char *)"from another thread";
	int rc = vr_call_send(call, &resp.base);
	vr_call_finish(call, rc ? rc : GRPC_STATUS_OK);
	return NULL;
}

static int detach(vr_call *call, void *ctx)
{
	pthread_t t;
	if (pthread_create(&t, NULL, finish_later, call))
		return VR_ENOMEM;
	pthread_detach(t);
	return VR_DETACHED;
}

/* A feed: followers sleep on cv until gen moves, counting their wake-ups. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int64_t gen;
	atomic_int wakeups, ended;
} feed = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void feed_wake(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&feed.mu);
	pthread_cond_broadcast(&feed.cv);
	pthread_mutex_unlock(&feed.mu);
}

/* A follower: sends the feed's generation each time it moves, sleeping
 * (no timeout) in between; its call's end and the server's wake it. */
static int follow(vr_call *call, void *ctx)
{
	int rc = vr_call_wake_on_stop(call, feed_wake, NULL);
	if (rc)
		return rc;
	int64_t sent = -1;
	for (;;) {
		pthread_mutex_lock(&feed.mu);
		int64_t gen = feed.gen;
		int stopping = vr_call_stopping(call);
		while (gen == sent && !stopping) {
			pthread_cond_wait(&feed.cv, &feed.mu);
			atomic_fetch_add(&feed.wakeups, 1);
			gen = feed.gen;
			stopping = vr_call_stopping(call);
		}
		pthread_mutex_unlock(&feed.mu);
		if (stopping)
			break;
		if ((rc = send_msg(call, "gen", gen)))
			break;
		sent = gen;
	}
	atomic_fetch_add(&feed.ended, 1);
	if (vr_call_cancelled(call))
		return GRPC_STATUS_CANCELLED;
	return rc ? rc : vr_call_error(call, GRPC_STATUS_UNAVAILABLE, "stopping");
}

#define METHOD(name, kind_, fn, ...) \
	{ .path = SVC name, .request = &visrec__rpctest__msg__descriptor, \
	  .response = &visrec__rpctest__msg__descriptor, .kind = kind_, .handler = fn, __VA_ARGS__ }

static vr_server *start_server(const vr_server_opts *opts, vr_health *h)
{
	const vr_method methods[] = {
		METHOD("Echo", VR_UNARY, echo),
		METHOD("Count", VR_SERVER_STREAM, count),
		METHOD("Sum", VR_CLIENT_STREAM, sum),
		METHOD("Chat", VR_BIDI, chat),
		METHOD("Hang", VR_UNARY, hang),
		METHOD("Forever", VR_SERVER_STREAM, forever),
		METHOD("Deaf", VR_SERVER_STREAM, deaf),
		METHOD("Feed", VR_SERVER_STREAM, follow, .follower = 1),
		METHOD("AdminForever", VR_SERVER_STREAM, forever, .admin = 1),
		METHOD("Admin", VR_UNARY, echo, .admin = 1),
		METHOD("Relay", VR_UNARY, relay, .own_thread = 1),
		METHOD("Big", VR_UNARY, big_reply),
		METHOD("Empty", VR_UNARY, no_response),
		METHOD("Detach", VR_UNARY, detach),
		METHOD("Later", VR_UNARY, NULL),
	};
	vr_server *s = NULL;
	if (vr_server_create(&s, opts))
		return NULL;
	if (vr_server_add_service(s, methods, sizeof methods / sizeof methods[0]) ||
	    (h && vr_health_register(h, s)) || vr_server_start(s)) {
		fprintf(stderr, "server start failed: %s\n", vr_server_error(s));
		vr_server_destroy(s);
		return NULL;
	}
	return s;
}

/* ---- client helpers ---------------------------------------------------- */

static int call_echo(vr_channel *ch, const char *path, const char *text, size_t bloblen,
		     int64_t deadline_ms, vr_status *st, Msg **out)
{
	Msg req = msg_init;
	req.text = (char *)text;
	req.n = (int64_t)bloblen;
	if (bloblen) {
		req.blob.len = bloblen;
		req.blob.data = malloc(bloblen);
		for (size_t i = 0; i < bloblen; i++)
			req.blob.data[i] = (uint8_t)(i * 2654435761u >> 13);
	}
	ProtobufCMessage *resp = NULL;
	int rc = vr_client_unary(ch, path, &req.base, msg_desc, &resp, deadline_ms, NULL, st);
	free(req.blob.data);
	if (out)
		*out = (Msg *)resp;
	else if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

static void free_msg(Msg *m)
{
	if (m)
		protobuf_c_message_free_unpacked(&m->base, NULL);
}

/* A unary call with raw bytes as the request, through core directly. */
static void raw_call(const char *path, const void *bytes, size_t n, vr_status *st)
{
	grpc_channel_credentials *cr = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(target, cr, NULL);
	grpc_channel_credentials_release(cr);
	grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_slice method = grpc_slice_from_copied_string(path);
	gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					     gpr_time_from_millis(5000, GPR_TIMESPAN));
	grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method,
						   NULL, deadline, NULL);
	grpc_slice_unref(method);
	grpc_slice s = grpc_slice_from_copied_buffer(bytes, n);
	grpc_byte_buffer *out = grpc_raw_byte_buffer_create(&s, 1), *in = NULL;
	grpc_slice_unref(s);
	grpc_metadata_array md, trailers;
	grpc_metadata_array_init(&md);
	grpc_metadata_array_init(&trailers);
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_op ops[6];
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = out;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &in;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailers;
	ops[5].data.recv_status_on_client.status = &code;
	ops[5].data.recv_status_on_client.status_details = &details;
	int tag;
	st->code = -1;
	st->message[0] = 0;
	if (grpc_call_start_batch(call, ops, 6, &tag, NULL) == GRPC_CALL_OK &&
	    grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type ==
		    GRPC_OP_COMPLETE) {
		st->code = code;
		snprintf(st->message, sizeof st->message, "%.*s", (int)GRPC_SLICE_LENGTH(details),
			 (const char *)GRPC_SLICE_START_PTR(details));
	}
	grpc_slice_unref(details);
	if (in)
		grpc_byte_buffer_destroy(in);
	grpc_byte_buffer_destroy(out);
	grpc_metadata_array_destroy(&md);
	grpc_metadata_array_destroy(&trailers);
	grpc_call_unref(call);
	grpc_completion_queue_destroy(cq);
	grpc_channel_destroy(ch);
}

/* ---- tests -------------------------------------------------------------- */

TEST(unary)
{
	vr_status st;
	Msg *r = NULL;
	ASSERT_OK(call_echo(plain, SVC "Echo", "hello", 0, 5000, &st, &r));
	ASSERT_EQ_INT(st.code, GRPC_STATUS_OK);
	ASSERT_STR_EQ(r->text, "hello");
	/* grpc-timeout goes on the wire rounded up, so allow a little more. */
	ASSERT_MSG(r->n > 0 && r->n <= 5500, "deadline seen by the handler: %lld ms", (long long)r->n);
	free_msg(r);
	ASSERT_OK(call_echo(plain, SVC "Echo", "no deadline", 0, 0, &st, &r));
	ASSERT_EQ_INT(r->n, -1);
	free_msg(r);
}

TEST(peer_and_metadata)
{
	vr_status st;
	Msg *r = NULL;
	ASSERT_OK(call_echo(plain, SVC "Echo", "peer", 0, 5000, &st, &r));
	ASSERT_CONTAINS(r->text, "127.0.0.1");
	free_msg(r);
	/* The authorization metadata: reused_calls_forget_metadata. */
}

/* The server keeps ended calls for the next request (rpc_server.c, Reuse):
 * a call must never see metadata or the status message of the one before
 * it in the same object, so a call without a token after one with it sees
 * none, and an answer after a refusal carries no stale reason, every time. */
TEST(reused_calls_forget_metadata)
{
	vr_status st;
	Msg *r = NULL;
	for (int i = 0; i < 20; i++) {
		ASSERT_EQ_INT(call_echo(plain, SVC "Admin", "x", 0, 5000, &st, NULL), VR_ERPC);
		ASSERT_CONTAINS(st.message, "needs the admin token");
		ASSERT_OK(call_echo(admin, SVC "Admin", "x", 0, 5000, &st, NULL));
		ASSERT_STR_EQ(st.message, "");
		ASSERT_OK(call_echo(admin, SVC "Echo", "auth", 0, 5000, &st, &r));
		ASSERT_STR_EQ(r->text, "Bearer " TOKEN);
		free_msg(r);
		ASSERT_OK(call_echo(plain, SVC "Echo", "auth", 0, 5000, &st, &r));
		ASSERT_STR_EQ(r->text, "(none)");
		free_msg(r);
	}
}

TEST(server_stream)
{
	vr_ccall *cc;
	ASSERT_OK(vr_ccall_start(&cc, plain, SVC "Count", msg_desc, 5000, NULL));
	Msg req = msg_init;
	req.text = (char *)"c";
	req.n = 50;
	ASSERT_OK(vr_ccall_send(cc, &req.base));
	ASSERT_OK(vr_ccall_close_send(cc));
	int64_t got = 0, bad = 0;
	ProtobufCMessage *m;
	int rc;
	while ((rc = vr_ccall_recv(cc, &m)) == 0) {
		bad += ((Msg *)m)->n != got;
		got++;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	vr_status st;
	int frc = vr_ccall_finish(cc, &st);
	ASSERT_EQ_INT(rc, VR_EEOF);
	ASSERT_OK(frc);
	ASSERT_EQ_INT(got, 50);
	ASSERT_EQ_INT(bad, 0);
}

TEST(client_stream)
{
	vr_ccall *cc;
	ASSERT_OK(vr_ccall_start(&cc, plain, SVC "Sum", msg_desc, 5000, NULL));
	int sent = 0;
	for (int i = 0; i < 100; i++) {
		Msg m = msg_init;
		m.n = i;
		sent += vr_ccall_send(cc, &m.base) == 0;
	}
	int crc = vr_ccall_close_send(cc);
	ProtobufCMessage *m = NULL;
	int rrc = vr_ccall_recv(cc, &m);
	vr_status st;
	int frc = vr_ccall_finish(cc, &st);
	ASSERT_EQ_INT(sent, 100);
	ASSERT_OK(crc);
	ASSERT_OK(rrc);
	ASSERT_OK(frc);
	ASSERT_EQ_INT(((Msg *)m)->n, 4950);
	ASSERT_STR_EQ(((Msg *)m)->text, "100");
	protobuf_c_message_free_unpacked(m, NULL);
}

TEST(bidi)
{
	vr_ccall *cc;
	ASSERT_OK(vr_ccall_start(&cc, plain, SVC "Chat", msg_desc, 5000, NULL));
	int ok = 0;
	for (int i = 0; i < 20; i++) {
		Msg m = msg_init;
		m.text = (char *)"ping";
		m.n = i;
		ProtobufCMessage *r = NULL;
		if (vr_ccall_send(cc, &m.base) == 0 && vr_ccall_recv(cc, &r) == 0)
			ok += ((Msg *)r)->n == 2 * i && !strcmp(((Msg *)r)->text, "ping");
		if (r)
			protobuf_c_message_free_unpacked(r, NULL);
	}
	ASSERT_OK(vr_ccall_close_send(cc));
	ProtobufCMessage *r = NULL;
	int rc = vr_ccall_recv(cc, &r);
	vr_status st;
	ASSERT_OK(vr_ccall_finish(cc, &st));
	ASSERT_EQ_INT(rc, VR_EEOF);
	ASSERT_EQ_INT(ok, 20);
}

TEST(deadline_exceeded)
{
	int before = atomic_load(&hang_cancelled);
	vr_status st;
	int64_t t0 = vr_now_ms();
	int rc = call_echo(plain, SVC "Hang", "x", 0, 200, &st, NULL);
	int64_t took = vr_now_ms() - t0;
	ASSERT_EQ_INT(rc, VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
	ASSERT_MSG(took >= 150 && took < 3000, "took %lld ms", (long long)took);
	ASSERT_MSG(wait_at_least(&hang_cancelled, before + 1, 3000), "the handler never saw the deadline");
}

TEST(cancel_mid_stream)
{
	int before = atomic_load(&forever_ended);
	vr_ccall *cc;
	ASSERT_OK(vr_ccall_start(&cc, plain, SVC "Forever", msg_desc, 10000, NULL));
	Msg req = msg_init;
	ASSERT_OK(vr_ccall_send(cc, &req.base));
	ASSERT_OK(vr_ccall_close_send(cc));
	int got = 0;
	for (int i = 0; i < 3; i++) {
		ProtobufCMessage *m;
		if (vr_ccall_recv(cc, &m) == 0) {
			got++;
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	vr_ccall_cancel(cc);
	vr_status st;
	ASSERT_EQ_INT(vr_ccall_finish(cc, &st), VR_ERPC);
	ASSERT_EQ_INT(got, 3);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_CANCELLED);
	ASSERT_MSG(wait_at_least(&forever_ended, before + 1, 3000), "the handler never saw the cancel");
}

TEST(parent_propagation)
{
	int before = atomic_load(&hang_cancelled);
	atomic_store(&hang_deadline_ms, -1);
	vr_status st;
	int64_t t0 = vr_now_ms();
	int rc = call_echo(plain, SVC "Relay", "x", 0, 300, &st, NULL);
	int64_t took = vr_now_ms() - t0;
	ASSERT_EQ_INT(rc, VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_DEADLINE_EXCEEDED);
	ASSERT_MSG(took < 3000, "took %lld ms", (long long)took);
	ASSERT_MSG(wait_at_least(&hang_cancelled, before + 1, 3000), "the inner call was not cancelled");
	long long inner = atomic_load(&hang_deadline_ms);
	ASSERT_MSG(inner >= 0 && inner <= 350, "inner call's deadline: %lld ms (not propagated)", inner);
}

TEST(large_messages)
{
	vr_status st;
	Msg *r = NULL;
	ASSERT_OK(call_echo(big, SVC "Echo", "6 MiB", 6 * MB, 20000, &st, &r));
	ASSERT_EQ_INT(r->blob.len, 6 * MB);
	size_t bad = 0;
	for (size_t i = 0; i < r->blob.len; i++)
		bad += r->blob.data[i] != (uint8_t)(i * 2654435761u >> 13);
	free_msg(r);
	ASSERT_EQ_INT(bad, 0);

	/* Over the server's 8 MiB receive limit. */
	ASSERT_EQ_INT(call_echo(big, SVC "Echo", "9 MiB", 9 * MB, 20000, &st, NULL), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	/* Over the client's own 4 MiB send limit: refused before sending. */
	ASSERT_EQ_INT(call_echo(plain, SVC "Echo", "6 MiB", 6 * MB, 20000, &st, NULL), VR_ETOOBIG);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	/* A 6 MiB response to a client that takes 4 MiB. */
	Msg req = msg_init;
	req.n = (int64_t)(6 * MB);
	ProtobufCMessage *resp = NULL;
	ASSERT_EQ_INT(vr_client_unary(plain, SVC "Big", &req.base, msg_desc, &resp, 20000, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	/* A response over the server's own 8 MiB send limit. */
	req.n = (int64_t)(9 * MB);
	ASSERT_EQ_INT(vr_client_unary(big, SVC "Big", &req.base, msg_desc, &resp, 20000, NULL, &st), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(st.message, "over the message limit");
}

TEST(unknown_method)
{
	vr_status st;
	int64_t t0 = vr_now_ms();
	ASSERT_EQ_INT(call_echo(plain, "/nope.Svc/X", "x", 0, 10000, &st, NULL), VR_ERPC);
	int64_t took = vr_now_ms() - t0;
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNIMPLEMENTED);
	ASSERT_CONTAINS(st.message, "/nope.Svc/X is not implemented by this server");
	ASSERT_MSG(took < 1000, "took %lld ms", (long long)took);
	ASSERT_EQ_INT(call_echo(plain, SVC "Later", "x", 0, 5000, &st, NULL), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNIMPLEMENTED);
	ASSERT_STR_EQ(st.message, "visrec.rpctest.Test/Later is not implemented yet");
}

TEST(malformed_request)
{
	static const unsigned char junk[] = { 0x0a, 0x7f, 'a', 'b' }; /* field 1, length 127, 2 bytes */
	vr_status st;
	raw_call(SVC "Echo", junk, sizeof junk, &st);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(st.message, "not a valid visrec.rpctest.Msg");
	raw_call(SVC "Sum", junk, sizeof junk, &st);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(st.message, "not a valid visrec.rpctest.Msg");
	/* The server is still fine. */
	ASSERT_OK(call_echo(plain, SVC "Echo", "still here", 0, 5000, &st, NULL));
}

/* protobuf-c 1.4.1 ends an unpacked string at its first NUL, so a value
 * with one inside would reach a handler cut short, the rest unseen: the
 * layer refuses it for every kind of call, naming the field. A NUL in a
 * bytes field is data. */
TEST(nul_in_string_refused)
{
	static const unsigned char nul[] = { 0x0a, 0x07, 'i', '5', 0, 'e', 'v', 'i', 'l' };
	static const unsigned char blob[] = { 0x12, 0x03, 'a', 0, 'b' };
	Msg *m = visrec__rpctest__msg__unpack(NULL, sizeof nul, nul);
	ASSERT(m);
	ASSERT_EQ_INT(strlen(m->text), 2);
	ASSERT(!memcmp(m->text, "i5\0evil", 7));
	visrec__rpctest__msg__free_unpacked(m, NULL);
	vr_status st;
	const char *const paths[] = { SVC "Echo", SVC "Count", SVC "Sum", SVC "Chat" };
	for (int i = 0; i < 4; i++) {
		raw_call(paths[i], nul, sizeof nul, &st);
		ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
		ASSERT_STR_EQ(st.message, "text contains a NUL byte at offset 2");
	}
	raw_call(SVC "Echo", blob, sizeof blob, &st);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_OK);
}

TEST(admin_token)
{
	vr_status st;
	ASSERT_EQ_INT(call_echo(plain, SVC "Admin", "x", 0, 5000, &st, NULL), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_CONTAINS(st.message, "needs the admin token");
	ASSERT_EQ_INT(call_echo(wrong, SVC "Admin", "x", 0, 5000, &st, NULL), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_CONTAINS(st.message, "not valid");
	ASSERT_OK(call_echo(admin, SVC "Admin", "x", 0, 5000, &st, NULL));
	ASSERT_OK(call_echo(wrong, SVC "Echo", "x", 0, 5000, &st, NULL));
}

TEST(no_response_is_internal)
{
	vr_status st;
	ASSERT_EQ_INT(call_echo(plain, SVC "Empty", "x", 0, 5000, &st, NULL), VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INTERNAL);
	ASSERT_CONTAINS(st.message, "returned no response");
}

TEST(detached)
{
	vr_status st;
	Msg *r = NULL;
	ASSERT_OK(call_echo(plain, SVC "Detach", "x", 0, 5000, &st, &r));
	ASSERT_STR_EQ(r->text, "from another thread");
	free_msg(r);
}

static void *echo_loop(void *arg)
{
	intptr_t id = (intptr_t)arg, ok = 0;
	for (int i = 0; i < 100; i++) {
		char text[32];
		snprintf(text, sizeof text, "t%ld-%d", (long)id, i);
		vr_status st;
		Msg *r = NULL;
		if (call_echo(plain, SVC "Echo", text, 0, 5000, &st, &r) == 0)
			ok += !strcmp(r->text, text);
		free_msg(r);
	}
	return (void *)ok;
}

TEST(concurrent_unary)
{
	pthread_t t[4];
	for (intptr_t i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, echo_loop, (void *)i);
	intptr_t ok = 0;
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		ok += (intptr_t)r;
	}
	ASSERT_EQ_INT(ok, 400);
}

TEST(health)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	const ProtobufCMessageDescriptor *rd = &grpc__health__v1__health_check_response__descriptor;
	ProtobufCMessage *m = NULL;
	vr_status st;
	req.service = (char *)"";
	ASSERT_OK(vr_client_unary(plain, "/grpc.health.v1.Health/Check", &req.base, rd, &m, 5000, NULL, &st));
	ASSERT_EQ_INT(((Grpc__Health__V1__HealthCheckResponse *)m)->status, VR_HEALTH_SERVING);
	protobuf_c_message_free_unpacked(m, NULL);
	req.service = (char *)"nope";
	ASSERT_EQ_INT(vr_client_unary(plain, "/grpc.health.v1.Health/Check", &req.base, rd, &m, 5000, NULL, &st),
		      VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_NOT_FOUND);

	vr_ccall *cc;
	req.service = (char *)"visrec.rpctest.Test";
	ASSERT_OK(vr_ccall_start(&cc, plain, "/grpc.health.v1.Health/Watch", rd, 10000, NULL));
	ASSERT_OK(vr_ccall_send(cc, &req.base));
	ASSERT_OK(vr_ccall_close_send(cc));
	int first = -1, second = -1;
	if (vr_ccall_recv(cc, &m) == 0) {
		first = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	vr_health_set(health, "visrec.rpctest.Test", VR_HEALTH_NOT_SERVING);
	if (vr_ccall_recv(cc, &m) == 0) {
		second = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	vr_health_set(health, "visrec.rpctest.Test", VR_HEALTH_SERVING);
	vr_ccall_cancel(cc);
	ASSERT_EQ_INT(vr_ccall_finish(cc, &st), VR_ERPC);
	ASSERT_EQ_INT(first, VR_HEALTH_SERVING);
	ASSERT_EQ_INT(second, VR_HEALTH_NOT_SERVING);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_CANCELLED);
}

/* Opens a server stream of method on ch and reads one message. */
static vr_ccall *open_stream(vr_channel *ch, const char *method)
{
	vr_ccall *cc;
	if (vr_ccall_start(&cc, ch, method, msg_desc, 20000, NULL))
		return NULL;
	Msg req = msg_init;
	ProtobufCMessage *m = NULL;
	vr_ccall_send(cc, &req.base);
	vr_ccall_close_send(cc);
	if (vr_ccall_recv(cc, &m) == 0)
		protobuf_c_message_free_unpacked(m, NULL);
	return cc;
}

/* A server of its own (opts) and a plaintext channel to it. */
static vr_server *start_with_channel(const vr_server_opts *opts, vr_channel **ch)
{
	char t[64];
	vr_server *s = start_server(opts, NULL);
	if (!s)
		return NULL;
	snprintf(t, sizeof t, "127.0.0.1:%d", vr_server_port(s));
	vr_channel_create(ch, t, NULL);
	return s;
}

TEST(max_streams)
{
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 1, .max_streams = 2 };
	vr_channel *ch = NULL;
	vr_server *s = start_with_channel(&o, &ch);
	ASSERT(s);
	vr_ccall *a = open_stream(ch, SVC "Forever"), *b = open_stream(ch, SVC "Forever");
	vr_ccall *c = open_stream(ch, SVC "Forever");
	vr_status sa, sb, sc;
	vr_ccall_cancel(a);
	vr_ccall_cancel(b);
	vr_ccall_finish(a, &sa);
	vr_ccall_finish(b, &sb);
	vr_ccall_finish(c, &sc);
	vr_channel_destroy(ch);
	vr_server_destroy(s);
	ASSERT_EQ_INT(sa.code, GRPC_STATUS_CANCELLED);
	ASSERT_EQ_INT(sb.code, GRPC_STATUS_CANCELLED);
	ASSERT_EQ_INT(sc.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(sc.message, "too many streaming calls");
}

/* Each kind of call has a pool of its own: read streams that fill theirs
 * leave admin calls and followers served, and one client address holds
 * at most max_followers_per_peer followers. */
TEST(pools)
{
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 1, .max_streams = 1,
			     .max_admin_streams = 1, .max_followers = 4, .max_followers_per_peer = 1 };
	vr_channel *ch = NULL;
	vr_server *s = start_with_channel(&o, &ch);
	ASSERT(s);
	vr_ccall *cc[6] = {
		open_stream(ch, SVC "Forever"), open_stream(ch, SVC "Forever"),
		open_stream(ch, SVC "AdminForever"), open_stream(ch, SVC "AdminForever"),
		open_stream(ch, SVC "Feed"), open_stream(ch, SVC "Feed"),
	};
	vr_status st[6];
	for (int i = 0; i < 6; i += 2) /* the refused ones have their status */
		vr_ccall_cancel(cc[i]);
	for (int i = 0; i < 6; i++)
		vr_ccall_finish(cc[i], &st[i]);
	vr_channel_destroy(ch);
	vr_server_destroy(s);
	ASSERT_EQ_INT(st[0].code, GRPC_STATUS_CANCELLED);
	ASSERT_EQ_INT(st[1].code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(st[1].message, "too many streaming calls at once");
	ASSERT_CONTAINS(st[1].message, "(--max-streams)");
	ASSERT_EQ_INT(st[2].code, GRPC_STATUS_CANCELLED);
	ASSERT_EQ_INT(st[3].code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(st[3].message, "too many admin calls at once");
	ASSERT_EQ_INT(st[4].code, GRPC_STATUS_CANCELLED);
	ASSERT_EQ_INT(st[5].code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(st[5].message, "too many followers from ipv4:127.0.0.1: 1 are open");
	ASSERT_CONTAINS(st[5].message, "--max-followers-per-peer");
}

/* A follower sleeps with no timeout: idle, it never wakes; a change, its
 * client's cancellation and the server's shutdown each wake it at once. */
TEST(followers_sleep_until_woken)
{
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 2 };
	vr_channel *ch = NULL;
	vr_server *s = start_with_channel(&o, &ch);
	ASSERT(s);
	int ended = atomic_load(&feed.ended);
	vr_ccall *cc = open_stream(ch, SVC "Feed");
	int wakeups = atomic_load(&feed.wakeups);
	usleep(300000);
	int idle_wakeups = atomic_load(&feed.wakeups) - wakeups;
	pthread_mutex_lock(&feed.mu);
	feed.gen++;
	pthread_cond_broadcast(&feed.cv);
	pthread_mutex_unlock(&feed.mu);
	ProtobufCMessage *m = NULL;
	int64_t got = -1;
	if (vr_ccall_recv(cc, &m) == 0)
		got = ((Msg *)m)->n;
	free_msg((Msg *)m);
	vr_ccall_cancel(cc);
	vr_status st_cancel, st_stop;
	vr_ccall_finish(cc, &st_cancel);
	int ended_on_cancel = wait_at_least(&feed.ended, ended + 1, 2000);

	cc = open_stream(ch, SVC "Feed");
	int64_t t0 = vr_now_ms();
	vr_server_shutdown(s, 3000);
	int64_t took = vr_now_ms() - t0;
	while (vr_ccall_recv(cc, &m) == 0)
		free_msg((Msg *)m);
	vr_ccall_finish(cc, &st_stop);
	vr_channel_destroy(ch);
	vr_server_destroy(s);
	ASSERT_EQ_INT(idle_wakeups, 0);
	ASSERT_EQ_INT(got, feed.gen);
	ASSERT_EQ_INT(st_cancel.code, GRPC_STATUS_CANCELLED);
	ASSERT(ended_on_cancel);
	ASSERT_MSG(took < 2500, "shutdown took %lld ms with a follower open", (long long)took);
	ASSERT_EQ_INT(st_stop.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_EQ_INT(atomic_load(&feed.ended), ended + 2);
}

/* Shutdown with a stream open: the handler sees vr_call_stopping and ends
 * well within the grace. */
TEST(shutdown_ends_streams)
{
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 2 };
	vr_channel *ch = NULL;
	vr_server *s = start_with_channel(&o, &ch);
	ASSERT(s);
	vr_ccall *cc = open_stream(ch, SVC "Forever");
	int64_t t0 = vr_now_ms();
	vr_server_shutdown(s, 3000);
	int64_t took = vr_now_ms() - t0;
	ProtobufCMessage *m;
	while (vr_ccall_recv(cc, &m) == 0)
		protobuf_c_message_free_unpacked(m, NULL);
	vr_status st;
	vr_ccall_finish(cc, &st);
	vr_channel_destroy(ch);
	vr_server_destroy(s);
	ASSERT_MSG(took < 2500, "shutdown took %lld ms", (long long)took);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_UNAVAILABLE);
}

/* A handler that ignores shutdown is cancelled when the grace is over. */
TEST(shutdown_cancels_after_grace)
{
	int before = atomic_load(&deaf_cancelled);
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 2 };
	vr_channel *ch = NULL;
	vr_server *s = start_with_channel(&o, &ch);
	ASSERT(s);
	vr_ccall *cc = open_stream(ch, SVC "Deaf");
	int64_t t0 = vr_now_ms();
	vr_server_shutdown(s, 200);
	int64_t took = vr_now_ms() - t0;
	vr_status st;
	vr_ccall_finish(cc, &st);
	vr_channel_destroy(ch);
	vr_server_destroy(s);
	ASSERT_MSG(took >= 150 && took < 2500, "shutdown took %lld ms", (long long)took);
	ASSERT_EQ_INT(atomic_load(&deaf_cancelled), before + 1);
	ASSERT_NE_INT(st.code, GRPC_STATUS_OK);
}

TEST(tls_roundtrip)
{
	if (!have_tls)
		SKIP("openssl could not make a test certificate");
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 2, .tls_cert_file = cert_file,
			     .tls_key_file = key_file, .admin_token = TOKEN };
	vr_server *s = start_server(&o, NULL);
	ASSERT(s);
	char t[64];
	snprintf(t, sizeof t, "127.0.0.1:%d", vr_server_port(s));
	/* By address (the certificate's IP name), and by its DNS name. */
	vr_channel_opts co = { .tls_root_file = cert_file, .token = TOKEN };
	vr_channel_opts named = { .tls_root_file = cert_file, .tls_server_name = "localhost" };
	vr_channel_opts wrong_name = { .tls_root_file = cert_file, .tls_server_name = "example.org" };
	vr_channel *tls = NULL, *by_name = NULL, *bad_name = NULL, *clear = NULL, *to_plain = NULL;
	vr_channel_create(&tls, t, &co);
	vr_channel_create(&by_name, t, &named);
	vr_channel_create(&bad_name, t, &wrong_name);
	vr_channel_create(&clear, t, NULL);
	vr_channel_create(&to_plain, target, &co); /* TLS client, plaintext server */
	vr_status s1, s2, s3, s4, s5;
	Msg *r = NULL;
	int rc1 = call_echo(tls, SVC "Admin", "over tls", 0, 5000, &s1, &r);
	int rc2 = call_echo(by_name, SVC "Echo", "by name", 0, 5000, &s2, NULL);
	int rc3 = call_echo(bad_name, SVC "Echo", "x", 0, 2000, &s3, NULL);
	int rc4 = call_echo(clear, SVC "Echo", "plaintext", 0, 2000, &s4, NULL);
	int rc5 = call_echo(to_plain, SVC "Echo", "x", 0, 2000, &s5, NULL);
	vr_channel_destroy(tls);
	vr_channel_destroy(by_name);
	vr_channel_destroy(bad_name);
	vr_channel_destroy(clear);
	vr_channel_destroy(to_plain);
	vr_server_destroy(s);
	ASSERT_MSG(rc1 == 0, "TLS call: %s %s", vr_status_name(s1.code), s1.message);
	ASSERT_STR_EQ(r ? r->text : NULL, "over tls");
	free_msg(r);
	ASSERT_MSG(rc2 == 0, "TLS call by name: %s %s", vr_status_name(s2.code), s2.message);
	ASSERT_EQ_INT(rc3, VR_ERPC);
	ASSERT_EQ_INT(s3.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_EQ_INT(rc4, VR_ERPC);
	ASSERT_EQ_INT(s4.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_EQ_INT(rc5, VR_ERPC);
	ASSERT_EQ_INT(s5.code, GRPC_STATUS_UNAVAILABLE);
}

TEST(port_in_use)
{
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", vr_server_port(srv));
	vr_server_opts o = { .listen = addr };
	vr_server *s = NULL;
	ASSERT_OK(vr_server_create(&s, &o));
	int rc = vr_server_start(s);
	char why[256];
	snprintf(why, sizeof why, "%s", vr_server_error(s));
	vr_server_destroy(s);
	ASSERT_EQ_INT(rc, -EADDRINUSE);
	ASSERT_CONTAINS(why, addr);
}

TEST(bad_options)
{
	vr_server *s = NULL;
	vr_server_opts o = { .listen = "127.0.0.1:0", .tls_cert_file = "x.pem" };
	ASSERT_EQ_INT(vr_server_create(&s, &o), VR_EINVAL);
	o.tls_key_file = "/nonexistent/key.pem";
	o.tls_cert_file = "/nonexistent/cert.pem";
	ASSERT_OK(vr_server_create(&s, &o));
	int rc = vr_server_start(s);
	char why[256];
	snprintf(why, sizeof why, "%s", vr_server_error(s));
	vr_server_destroy(s);
	ASSERT_EQ_INT(rc, -ENOENT);
	ASSERT_CONTAINS(why, "/nonexistent/cert.pem");
	/* An address core itself refuses: the server is torn down unstarted. */
	vr_server_opts bad = { .listen = "192.0.2.1:0" }; /* TEST-NET: not ours */
	ASSERT_OK(vr_server_create(&s, &bad));
	rc = vr_server_start(s);
	snprintf(why, sizeof why, "%s", vr_server_error(s));
	vr_server_destroy(s);
	ASSERT_EQ_INT(rc, VR_EIO);
	ASSERT_CONTAINS(why, "192.0.2.1:0");
}

static const struct vr_test tests[] = {
	T(unary), T(peer_and_metadata), T(server_stream), T(client_stream), T(bidi),
	T(deadline_exceeded), T(cancel_mid_stream), T(parent_propagation), T(large_messages),
	T(unknown_method), T(malformed_request), T(nul_in_string_refused), T(admin_token), T(reused_calls_forget_metadata),
	T(no_response_is_internal), T(detached), T(concurrent_unary), T(health), T(max_streams),
	T(pools), T(followers_sleep_until_woken), T(shutdown_ends_streams),
	T(shutdown_cancels_after_grace), T(tls_roundtrip), T(port_in_use), T(bad_options),
	{ 0 },
};

/* Runs before grpc_init: openssl is a child process. */
static void make_cert(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/vr_rpc_test.XXXXXX");
	if (!mkdtemp(tmpdir))
		return;
	snprintf(cert_file, sizeof cert_file, "%s/cert.pem", tmpdir);
	snprintf(key_file, sizeof key_file, "%s/key.pem", tmpdir);
	char cmd[512];
	snprintf(cmd, sizeof cmd,
		 "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
		 "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s -out %s >/dev/null 2>&1",
		 key_file, cert_file);
	have_tls = system(cmd) == 0;
}

int main(int argc, char **argv)
{
	if (vr_test_listing(argc, argv))
		return vr_test_main(tests, argc, argv);
	if (vr_test_selected(argc, argv, "tls_roundtrip"))
		make_cert();
	vr_cond_init(&feed.cv);
	vr_rpc_init();
	vr_health_create(&health);
	vr_server_opts o = { .listen = "127.0.0.1:0", .threads = 2, .max_message_bytes = 8 * MB,
			     .admin_token = TOKEN };
	int rc = 1;
	vr_health_set(health, "", VR_HEALTH_SERVING);
	vr_health_set(health, "visrec.rpctest.Test", VR_HEALTH_SERVING);
	srv = start_server(&o, health);
	if (!srv)
		goto leave;
	snprintf(target, sizeof target, "127.0.0.1:%d", vr_server_port(srv));
	vr_channel_opts big_o = { .max_message_bytes = 16 * MB };
	vr_channel_opts admin_o = { .token = TOKEN }, wrong_o = { .token = "guess" };
	if (vr_channel_create(&plain, target, NULL) || vr_channel_create(&admin, target, &admin_o) ||
	    vr_channel_create(&wrong, target, &wrong_o) || vr_channel_create(&big, target, &big_o) ||
	    vr_channel_create(&relay_ch, target, NULL))
		goto leave;
	rc = vr_test_main(tests, argc, argv);
leave:
	vr_server_destroy(srv);
	vr_channel_destroy(plain);
	vr_channel_destroy(admin);
	vr_channel_destroy(wrong);
	vr_channel_destroy(big);
	vr_channel_destroy(relay_ch);
	vr_health_destroy(health);
	vr_rpc_shutdown();
	unlink(cert_file);
	unlink(key_file);
	rmdir(tmpdir);
	return rc;
}
