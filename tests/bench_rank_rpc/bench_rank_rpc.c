/* bench_rank_rpc: Recommend top-k through a real rankd over loopback.
 *
 * It writes a synthetic VBPR snapshot (synth_snapshot.h: U users with 20
 * interactions each, N items, the tutorial's dims) into a fresh data
 * directory.
 * Then, per concurrency level (or offered rate), it starts rankd on that
 * directory, runs blocking Recommend calls from that many client threads
 * (or at that rate) for a while, and stops rankd, which logs its handler-time percentiles: the server-side
 * figures. Prints per level: QPS, client p50/p99, server p50/p99, errors,
 * and rankd's start-up time and peak RSS. A benchmark, not a test.
 *
 *   bench_rank_rpc [--items 10000] [--users 1000] [--seconds 3]
 *                  [--levels 1,8,64] [--rate QPS,...] [--in-flight 64]
 *                  [--arrivals poisson] [--train none,vbpr]
 *                  [--train-threads 0] [--channels 8] [--server-threads 2]
 *                  [--k 20] [--approx 0] [--fp16] [--int4] [--scan-threads 0]
 *                  [--cold-slots 0] [--batch 0] [--dir DIR] [--metrics]
 *                  [--rankd PATH] [--topk-cache-mb 64]
 *                  [--replicas 1,2 [--lag-samples 200]]
 *
 * --levels runs closed loops: that many callers, each sending its next call
 * when the last one is answered. --rate runs open loops instead (openloop.h):
 * calls arrive at that offered rate (Poisson arrivals, or --arrivals even),
 * at most --in-flight outstanding, latency from each call's intended send
 * time; per rate it prints offered and achieved QPS, p50/p90/p99/p99.9,
 * the sends delayed because --in-flight calls were outstanding, the
 * arrivals never sent (still queued 5 s after the window) and errors.
 * Failed and unsent calls rank above every answer ("inf" when a
 * percentile falls on them).
 * --train LIST (of none, bpr, vbpr) runs each level or rate once per value,
 * beside a Train of that model on the same rankd (--train-threads trainer
 * threads; 0 = rankd's default, one per core): the Train starts after
 * rankd is up, the measurement begins once the Train has finished its
 * first epoch, and the Train is cancelled after it (so the served model
 * stays the snapshot's). VBPR's item vectors come from a real featured
 * (the "small" CNN at its defaults: 64 px in, 50 outputs) holding a 32x32
 * JPEG per item, put once before the first level. Each row then says the
 * epochs the Train finished during the measurement and whether it still
 * ran at its end, and every answer is checked to come from the snapshot's
 * model (version 1). A --dir of an earlier run keeps featured's data, so
 * its images are not put again (rankd's data is written afresh every run).
 *
 * --scan-threads 1 (rankd's default) keeps every Recommend's scan on one
 * core; 0 lets a call that finds no other ranking call in flight split its
 * scan over every core (catalogues of 32768 items and up): run both to
 * compare low-load latency (level 1) and loaded throughput (levels 8, 64).
 *
 * --batch N sends RecommendBatch calls of N random users each instead of
 * Recommend (users/s = calls/s × N; the server columns stay Recommend's,
 * empty then).
 * --cold-slots N asks every Recommend to keep N of its k places for cold
 * items (RecommendRequest.cold_slots): the items no synthetic interaction
 * names, about e^-2 = 14% of them at the defaults. Run it with 0 and with
 * N on the same settings to see what the reserved places cost.
 * --topk-cache-mb LIST runs each level once per value, in the order given
 * (rankd --topk-cache-mb; 0 = off): "0,64,0,64" alternates the cache off
 * and on. The users are drawn uniformly from --users, so once the 0.5 s
 * warm-up has asked for most of them the cache answers nearly every call.
 * --replicas LIST runs, per count N in it, a writer rankd on the snapshot and
 * N read replicas of it (rankd --writer), replica r pinned to core r with
 * taskset: it prints each replica's time from its start to serving the
 * writer's model version (replica_load_s), then per level a closed loop
 * whose channels go round-robin over the replicas (the callers run
 * unpinned, on the same cores), key=value lines; --lag-samples N then
 * measures, idle, the time from the writer's answer to an AddInteractions
 * until the first replica no longer ranks its item first (p50, p99). Only
 * the first --topk-cache-mb value is used.
 * --metrics serves rankd's Prometheus endpoint on loopback during the run;
 * --rankd runs another build's rankd (an older one without the RPC
 * metrics, to measure what they cost). */
#include "err.h"
#include "jpeg_enc.h"
#include "openloop.h"
#include "flags.h"
#include "procs.h"
#include "rpc.h"
#include "synth_snapshot.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>

#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- clients ---------------------------------------------------------------------- */

/* One caller's state: a closed-loop client thread, or an open-loop worker. */
struct client {
	pthread_t tid;
	vr_channel *ch;
	uint32_t n_users;
	int k;
	uint64_t seed;
	int cold_slots;
	int batch;
	uint32_t *lat_us;
	size_t cap, n;
	long errors;
	uint64_t want_version; /* answers must come from this model version (0: any) */
	long other_version;    /* answers that did not */
	rk_rng rng;
	char (*user)[16];
	Visrec__V1__RecommendRequest *req, **reqs;
	Visrec__V1__RecommendBatchRequest breq;
};

static atomic_int phase; /* 0 warm-up, 1 measure, 2 stop */

static int client_init(struct client *c)
{
	rk_rng_seed(&c->rng, c->seed, 1);
	int nb = c->batch ? c->batch : 1;
	c->user = calloc((size_t)nb, sizeof *c->user);
	c->req = calloc((size_t)nb, sizeof *c->req);
	c->reqs = calloc((size_t)nb, sizeof *c->reqs);
	if (!c->user || !c->req || !c->reqs)
		return -1;
	for (int q = 0; q < nb; q++) {
		visrec__v1__recommend_request__init(&c->req[q]);
		c->req[q].user_id = c->user[q];
		c->req[q].k = c->k;
		c->req[q].cold_slots = c->cold_slots;
		c->reqs[q] = &c->req[q];
	}
	visrec__v1__recommend_batch_request__init(&c->breq);
	c->breq.requests = c->reqs;
	c->breq.n_requests = (size_t)nb;
	return 0;
}

static void client_free(struct client *c)
{
	free(c->user);
	free(c->req);
	free(c->reqs);
	free(c->lat_us);
}

/* The next call's request: random users. */
static const ProtobufCMessage *client_next(struct client *c)
{
	int nb = c->batch ? c->batch : 1;
	for (int q = 0; q < nb; q++)
		snprintf(c->user[q], sizeof c->user[q], "u%06u", rk_rng_below(&c->rng, c->n_users));
	return c->batch ? &c->breq.base : &c->req[0].base;
}

static const char *client_method(const struct client *c)
{
	return c->batch ? "/visrec.v1.Rank/RecommendBatch" : "/visrec.v1.Rank/Recommend";
}

static const ProtobufCMessageDescriptor *client_answer(const struct client *c)
{
	return c->batch ? &visrec__v1__recommend_batch_response__descriptor
			: &visrec__v1__recommend_response__descriptor;
}

/* 0 when answer m (freed here) has k items a user (and is by want_version's
 * model). */
static int client_check(struct client *c, ProtobufCMessage *m)
{
	int rc = 0, nb = c->batch ? c->batch : 1;
	if (!c->batch) {
		Visrec__V1__RecommendResponse *r = (Visrec__V1__RecommendResponse *)m;
		if (r->n_items != (size_t)c->k)
			rc = -1;
		else if (c->want_version && r->model_version != c->want_version)
			c->other_version++, rc = -1;
	}
	for (int q = 0; !rc && c->batch && q < nb; q++)
		if (((Visrec__V1__RecommendBatchResponse *)m)->n_responses != (size_t)nb ||
		    ((Visrec__V1__RecommendBatchResponse *)m)->responses[q]->n_items != (size_t)c->k)
			rc = -1;
	protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

/* One Recommend (or RecommendBatch) of random users, blocking; 0 when
 * answered as client_check wants. */
static int client_call(struct client *c)
{
	ProtobufCMessage *m = NULL;
	vr_status st;
	const ProtobufCMessage *req = client_next(c);
	int rc = vr_client_unary(c->ch, client_method(c), req, client_answer(c), &m, 10000, NULL, &st);
	return rc ? rc : client_check(c, m);
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	for (;;) {
		int ph = atomic_load(&phase);
		if (ph == 2)
			break;
		double a = now_s();
		int rc = client_call(c);
		double b = now_s();
		if (ph != 1)
			continue;
		if (rc)
			c->errors++;
		else if (c->n < c->cap)
			c->lat_us[c->n++] = (uint32_t)((b - a) * 1e6);
	}
	return NULL;
}

/* openloop's call: worker w's client. */
static int open_call(void *arg, int w)
{
	struct client *cl = arg;
	int rc = client_call(&cl[w]);
	if (rc)
		cl[w].errors++;
	return rc;
}

/* ---- the asynchronous open-loop client -----------------------------------------
 *
 * openloop's ol_run_async: its sender threads start each call on one
 * completion queue (a call and one batch of all six unary ops, the
 * request packed here), the receiver thread takes the completions from it.
 * Five client threads whatever the calls in flight, where the blocking
 * client (--open-client threads) runs one per slot: what the open-loop
 * figures are taken with by default (openloop.h says why). Slot s keeps
 * client s's users, request and counts, and its call's buffers until the
 * call ends. */
/* The async client's sender threads (openloop.h: one was the tail beside
 * a Train). */
#define OPEN_SENDERS 4

struct aslot {
	grpc_call *call;
	grpc_byte_buffer *out, *in;
	grpc_metadata_array md, trailers;
	grpc_status_code code;
	grpc_slice details;
	int s;
};

struct aclient {
	grpc_channel **ch;
	int nch;
	grpc_completion_queue *cq;
	grpc_slice method;
	struct client *cl;
	struct aslot *slot;
	int n;
};

static int async_start(void *arg, int s)
{
	struct aclient *a = arg;
	struct aslot *sl = &a->slot[s];
	struct client *c = &a->cl[s];
	const ProtobufCMessage *req = client_next(c);
	grpc_slice body = grpc_slice_malloc(protobuf_c_message_get_packed_size(req));
	protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
	sl->out = grpc_raw_byte_buffer_create(&body, 1);
	grpc_slice_unref(body);
	sl->in = NULL;
	sl->code = GRPC_STATUS_UNKNOWN;
	sl->details = grpc_empty_slice();
	grpc_metadata_array_init(&sl->md);
	grpc_metadata_array_init(&sl->trailers);
	gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(10, GPR_TIMESPAN));
	sl->call = grpc_channel_create_call(a->ch[s % a->nch], NULL, GRPC_PROPAGATE_DEFAULTS, a->cq, a->method, NULL,
					    deadline, NULL);
	grpc_op ops[6];
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = sl->out;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &sl->md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &sl->in;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &sl->trailers;
	ops[5].data.recv_status_on_client.status = &sl->code;
	ops[5].data.recv_status_on_client.status_details = &sl->details;
	if (sl->call && grpc_call_start_batch(sl->call, ops, 6, sl, NULL) == GRPC_CALL_OK)
		return 0;
	if (sl->call)
		grpc_call_unref(sl->call);
	grpc_byte_buffer_destroy(sl->out);
	grpc_metadata_array_destroy(&sl->md);
	grpc_metadata_array_destroy(&sl->trailers);
	c->errors++;
	return -1;
}

static int async_wait(void *arg, double timeout_s, int *s, int *rc)
{
	struct aclient *a = arg;
	gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					  gpr_time_from_micros((int64_t)(timeout_s * 1e6), GPR_TIMESPAN));
	grpc_event ev = grpc_completion_queue_next(a->cq, until, NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return 0;
	if (ev.type != GRPC_OP_COMPLETE)
		return -1;
	struct aslot *sl = ev.tag;
	struct client *c = &a->cl[sl->s];
	*s = sl->s;
	*rc = -1;
	if (ev.success && sl->code == GRPC_STATUS_OK && sl->in) {
		grpc_byte_buffer_reader r;
		if (grpc_byte_buffer_reader_init(&r, sl->in)) {
			grpc_slice all = grpc_byte_buffer_reader_readall(&r);
			grpc_byte_buffer_reader_destroy(&r);
			ProtobufCMessage *m = protobuf_c_message_unpack(client_answer(c), NULL, GRPC_SLICE_LENGTH(all),
									GRPC_SLICE_START_PTR(all));
			grpc_slice_unref(all);
			*rc = m ? client_check(c, m) : -1;
		}
	}
	if (*rc)
		c->errors++;
	if (sl->in)
		grpc_byte_buffer_destroy(sl->in);
	grpc_byte_buffer_destroy(sl->out);
	grpc_slice_unref(sl->details);
	grpc_metadata_array_destroy(&sl->md);
	grpc_metadata_array_destroy(&sl->trailers);
	grpc_call_unref(sl->call);
	return 1;
}

/* Runs ol_run_async over n slots (clients cl) on nch channels to addr.
 * 0, or -1 when it could not run. */
static int async_open_loop(const struct ol_config *oc, const char *addr, int nch, struct client *cl, int n,
			   struct ol_result *res)
{
	struct aclient a = { .nch = nch, .cl = cl, .n = n };
	int rc = -1;
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	a.ch = calloc((size_t)nch, sizeof *a.ch);
	a.slot = calloc((size_t)n, sizeof *a.slot);
	a.cq = grpc_completion_queue_create_for_next(NULL);
	a.method = grpc_slice_from_static_string(client_method(&cl[0]));
	if (!creds || !a.ch || !a.slot || !a.cq)
		goto leave;
	for (int i = 0; i < nch; i++)
		if (!(a.ch[i] = grpc_channel_create(addr, creds, NULL)))
			goto leave;
	for (int s = 0; s < n; s++)
		a.slot[s].s = s;
	struct ol_async ops = { async_start, async_wait, &a, OPEN_SENDERS };
	rc = ol_run_async(oc, &ops, res);
leave:
	if (a.cq) {
		grpc_completion_queue_shutdown(a.cq);
		while (grpc_completion_queue_next(a.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
		       GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(a.cq);
	}
	for (int i = 0; a.ch && i < nch; i++)
		if (a.ch[i])
			grpc_channel_destroy(a.ch[i]);
	if (creds)
		grpc_channel_credentials_release(creds);
	free(a.ch);
	free(a.slot);
	return rc;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* "Recommend: N calls, handler time p50 X us, p99 Y us" from rankd's log. */
static int server_times(const char *path, double *p50, double *p99)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int found = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		const char *s = strstr(line, "handler time p50 ");
		if (s && sscanf(s, "handler time p50 %lf us, p99 %lf us", p50, p99) == 2)
			found = 1;
	}
	fclose(f);
	return found;
}

/* A line of /proc/PID/status ("VmHWM:", "RssAnon:"), in kB; -1 if none. */
static long status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	long kb = -1;
	size_t n = strlen(field);
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, field, n))
			kb = atol(line + n);
	fclose(f);
	return kb;
}

static long peak_rss_kb(pid_t pid)
{
	return status_kb(pid, "VmHWM:");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* ---- a Train beside the load ------------------------------------------------------ */

/* A Train call whose progress a thread reads while the load runs. */
struct bg_train {
	pthread_t tid;
	vr_ccall *cc;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint32_t epoch; /* epochs finished */
	int ended, done;
	vr_status st;
};

static void *bg_train_main(void *arg)
{
	struct bg_train *t = arg;
	ProtobufCMessage *m;
	while (vr_ccall_recv(t->cc, &m) == 0) {
		Visrec__V1__TrainProgress *p = (void *)m;
		pthread_mutex_lock(&t->mu);
		if (p->epoch > t->epoch)
			t->epoch = p->epoch;
		t->done |= p->done;
		pthread_cond_broadcast(&t->cv);
		pthread_mutex_unlock(&t->mu);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	vr_status st;
	vr_ccall_finish(t->cc, &st);
	pthread_mutex_lock(&t->mu);
	t->st = st;
	t->ended = 1;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/* Cancels the Train and waits for its thread. */
static void bg_train_stop(struct bg_train *t)
{
	vr_ccall_cancel(t->cc);
	pthread_join(t->tid, NULL);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
}

/* Starts a Train of kind (endless: it is cancelled) on ch and waits up to
 * 10 minutes for its first epoch. 0, or -1 with why printed. */
static int bg_train_start(struct bg_train *t, vr_channel *ch, Visrec__V1__ModelKind kind, int threads)
{
	memset(t, 0, sizeof *t);
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	Visrec__V1__TrainRequest req = VISREC__V1__TRAIN_REQUEST__INIT;
	req.model = kind;
	req.epochs = 100000;
	req.patience = 100000;
	req.threads = (uint32_t)threads;
	req.seed = 1;
	if (vr_ccall_start(&t->cc, ch, "/visrec.v1.Rank/Train", &visrec__v1__train_progress__descriptor, 0, NULL) ||
	    vr_ccall_send(t->cc, &req.base) || vr_ccall_close_send(t->cc) ||
	    pthread_create(&t->tid, NULL, bg_train_main, t)) {
		if (t->cc)
			vr_ccall_finish(t->cc, &t->st);
		fprintf(stderr, "bench_rank_rpc: cannot start the Train\n");
		return -1;
	}
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 600;
	pthread_mutex_lock(&t->mu);
	while (!t->ended && t->epoch < 1 && pthread_cond_timedwait(&t->cv, &t->mu, &until) == 0)
		;
	int ok = !t->ended && t->epoch >= 1;
	pthread_mutex_unlock(&t->mu);
	if (!ok)
		fprintf(stderr, "bench_rank_rpc: the Train %s before its first epoch: %s \"%s\"\n",
			t->ended ? "ended" : "took 10 minutes", vr_status_name(t->st.code), t->st.message);
	return ok ? 0 : -1;
}

static uint32_t bg_train_epoch(struct bg_train *t, int *ended)
{
	pthread_mutex_lock(&t->mu);
	uint32_t e = t->epoch;
	*ended = t->ended || t->done;
	pthread_mutex_unlock(&t->mu);
	return e;
}

/* A 32x32 JPEG for item i: a colour and a gradient that follow i. */
static int item_jpeg(uint32_t i, uint8_t **jpeg, size_t *len)
{
	enum { S = 32 };
	uint8_t px[S * S * 3];
	for (int y = 0; y < S; y++)
		for (int x = 0; x < S; x++)
			for (int c = 0; c < 3; c++)
				px[(y * S + x) * 3 + c] = (uint8_t)((i * (37u + 50u * (uint32_t)c)) + (uint32_t)(x * (c + 1) + y * (3 - c)) * (i % 7 + 1));
	return vr_jpeg_encode(px, S, S, VR_PIX_RGB, VR_SUBSAMP_444, 85, jpeg, len);
}

/* featured on a fresh data directory under work holding an image of every
 * item (the synthetic snapshot's ids), for VBPR's Train. 0 or -1. */
static int featured_with_items(struct proc *f, const char *work, int items)
{
	char data[300], log[300];
	snprintf(data, sizeof data, "%s/featured-data", work);
	snprintf(log, sizeof log, "%s/featured.stderr", work);
	char *argv[] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", data, "--threads", "2", "--arch", "small",
			 "--init-seed", "1", NULL };
	if (proc_spawn(f, log, argv) || proc_wait_ready(f, "featured", 120000)) {
		fprintf(stderr, "bench_rank_rpc: featured did not start (see %s)\n", log);
		return -1;
	}
	vr_channel *ch;
	vr_channel_create(&ch, f->addr, NULL);
	int rc = 0;
	double t0 = now_s();
	/* A --dir of an earlier run may hold them already. */
	Visrec__V1__FeaturedInfoRequest ireq = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	ProtobufCMessage *im = NULL;
	uint32_t have = 0;
	if (!vr_client_unary(ch, "/visrec.v1.Featured/Info", &ireq.base, &visrec__v1__featured_info_response__descriptor,
			     &im, 10000, NULL, NULL))
		have = ((Visrec__V1__FeaturedInfoResponse *)im)->items >= (uint64_t)items ? (uint32_t)items : 0;
	if (im)
		protobuf_c_message_free_unpacked(im, NULL);
	for (uint32_t from = have; from < (uint32_t)items && !rc; from += 1000) {
		uint32_t to = from + 1000 < (uint32_t)items ? from + 1000 : (uint32_t)items;
		vr_ccall *cc;
		if ((rc = vr_ccall_start(&cc, ch, "/visrec.v1.Featured/PutItems", &visrec__v1__put_items_response__descriptor,
					 600000, NULL)))
			break;
		for (uint32_t i = from; i < to && !rc; i++) {
			Visrec__V1__PutItemsRequest req = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
			char id[16];
			uint8_t *jpeg;
			size_t len;
			snprintf(id, sizeof id, "i%07u", i);
			if ((rc = item_jpeg(i, &jpeg, &len)))
				break;
			req.item_id = id;
			req.image.data = jpeg;
			req.image.len = len;
			rc = vr_ccall_send(cc, &req.base);
			vr_jpeg_free(jpeg);
		}
		vr_ccall_close_send(cc);
		ProtobufCMessage *m = NULL;
		if (!rc)
			rc = vr_ccall_recv(cc, &m);
		vr_status st;
		int frc = vr_ccall_finish(cc, &st);
		if (!rc && !frc && ((Visrec__V1__PutItemsResponse *)m)->accepted != to - from)
			rc = -1;
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
		if (!rc && frc) {
			fprintf(stderr, "bench_rank_rpc: PutItems: %s \"%s\"\n", vr_status_name(st.code), st.message);
			rc = frc;
		}
	}
	vr_channel_destroy(ch);
	if (rc) {
		fprintf(stderr, "bench_rank_rpc: cannot put the item images into featured (see %s)\n", log);
		return -1;
	}
	if (have)
		printf("featured (small CNN): the %d item images of an earlier run\n", items);
	else
		printf("featured (small CNN): %d item images embedded in %.1f s\n", items, now_s() - t0);
	return 0;
}

/* ---- one level or rate ------------------------------------------------------------- */

struct opts {
	int items, users, channels, server_threads, k, approx, cold_slots, batch, fp16, int4, scan_threads;
	int metrics, in_flight, poisson, train_threads, open_threads;
	double seconds;
	const char *rankd_bin, *work, *data, *featured; /* featured: its address, or NULL */
};

/* The Train kind a --train value names: 0 for none, -1 for no such value. */
static int train_kind(const char *v, size_t len)
{
	if (len == 4 && !strncmp(v, "none", 4))
		return 0;
	if (len == 3 && !strncmp(v, "bpr", 3))
		return VISREC__V1__MODEL_KIND__BPR;
	if (len == 4 && !strncmp(v, "vbpr", 4))
		return VISREC__V1__MODEL_KIND__VBPR;
	return -1;
}

/* Starts rankd with cache_mb of top-k cache, runs one closed loop of conc
 * callers (rate 0) or one open loop at rate with o->in_flight, beside a
 * Train of kind train (0: none), prints its row, stops rankd. 0, or 1 when
 * rankd or the Train failed. */
static int run_case(const struct opts *o, int conc, double rate, int cache_mb, int train)
{
	char cache_arg[16], threads_arg[16], approx_arg[16], scan_arg[16], log[300];
	snprintf(cache_arg, sizeof cache_arg, "%d", cache_mb < 0 ? 0 : cache_mb);
	snprintf(scan_arg, sizeof scan_arg, "%d", o->scan_threads);
	snprintf(threads_arg, sizeof threads_arg, "%d", o->server_threads);
	snprintf(approx_arg, sizeof approx_arg, "%d", o->approx);
	snprintf(log, sizeof log, "%s/rankd-%d.stderr", o->work, rate > 0 ? (int)rate : conc);
	remove(log);
	char *rargv[] = { (char *)o->rankd_bin, "--listen", "127.0.0.1:0", "--data", (char *)o->data, "--threads",
			  threads_arg, "--follow-featured=false", "--featured",
			  (char *)(o->featured ? o->featured : "127.0.0.1:9"), "--topk-approx", approx_arg,
			  "--scan-threads", scan_arg, "--topk-cache-mb", cache_arg,
			  o->int4 ? "--topk-int4" : "--topk-int4=false", o->fp16 ? "--topk-fp16" : "--topk-fp16=false",
			  o->metrics ? "--metrics-listen" : NULL, "127.0.0.1:0", NULL };
	struct proc r;
	double s0 = now_s();
	if (proc_spawn(&r, log, rargv) || proc_wait_ready(&r, "rankd", 600000)) {
		fprintf(stderr, "bench_rank_rpc: rankd did not start (see %s)\n", log);
		proc_stop(&r, 5000);
		return 1;
	}
	double start_s = now_s() - s0;
	int status = 0, nc = rate > 0 ? o->in_flight : conc;
	int nch = o->channels < nc ? o->channels : nc;
	vr_channel **chs = calloc((size_t)nch, sizeof *chs);
	struct client *cl = calloc((size_t)nc, sizeof *cl);
	for (int c = 0; c < nch; c++)
		vr_channel_create(&chs[c], r.addr, NULL);
	for (int c = 0; c < nc; c++) {
		cl[c] = (struct client){ .ch = chs[c % nch], .n_users = (uint32_t)o->users, .k = o->k,
					 .seed = (uint64_t)c + 1, .cold_slots = o->cold_slots, .batch = o->batch,
					 .want_version = train ? 1 : 0 };
		if (rate <= 0) {
			cl[c].cap = (size_t)(o->seconds * 200000 / conc + 1000);
			cl[c].lat_us = calloc(cl[c].cap, sizeof *cl[c].lat_us);
		}
		client_init(&cl[c]);
	}
	struct bg_train tr;
	uint32_t epoch0 = 0, epoch1 = 0, *all = NULL;
	int train_ended = 0, rankd_up = 1;
	double took = 0;
	size_t total = 0;
	long errors = 0, other = 0;
	struct ol_result res;
	if (train && bg_train_start(&tr, chs[0], (Visrec__V1__ModelKind)train, o->train_threads)) {
		status = 1;
		goto leave;
	}
	if (rate > 0) {
		struct ol_config oc = { .rate = rate, .in_flight = o->in_flight, .warmup_s = 0.5, .seconds = o->seconds,
					.drain_s = 5, .poisson = o->poisson, .seed = 1 };
		epoch0 = train ? bg_train_epoch(&tr, &train_ended) : 0;
		if (o->open_threads ? ol_run(&oc, open_call, cl, &res)
				    : async_open_loop(&oc, r.addr, nch, cl, nc, &res)) {
			fprintf(stderr, "bench_rank_rpc: the open loop could not run\n");
			status = 1;
		}
		if (train)
			epoch1 = bg_train_epoch(&tr, &train_ended);
	} else {
		atomic_store(&phase, 0);
		for (int c = 0; c < conc; c++)
			pthread_create(&cl[c].tid, NULL, client_main, &cl[c]);
		usleep(500000);
		epoch0 = train ? bg_train_epoch(&tr, &train_ended) : 0;
		atomic_store(&phase, 1);
		double m0 = now_s();
		usleep((useconds_t)(o->seconds * 1e6));
		atomic_store(&phase, 2);
		took = now_s() - m0;
		if (train)
			epoch1 = bg_train_epoch(&tr, &train_ended);
		for (int c = 0; c < conc; c++) {
			pthread_join(cl[c].tid, NULL);
			total += cl[c].n;
		}
		all = malloc((total + 1) * sizeof *all);
		size_t at = 0;
		for (int c = 0; c < conc; c++) {
			memcpy(all + at, cl[c].lat_us, cl[c].n * sizeof *all);
			at += cl[c].n;
		}
		qsort(all, total, sizeof *all, cmp_u32);
	}
	for (int c = 0; c < nc; c++) {
		errors += cl[c].errors;
		other += cl[c].other_version;
	}
	if (train)
		bg_train_stop(&tr);
	long rss = peak_rss_kb(r.pid);
	for (int c = 0; c < nch; c++)
		vr_channel_destroy(chs[c]);
	int st = proc_stop(&r, 30000);
	rankd_up = 0;
	double sp50 = -1, sp99 = -1;
	server_times(log, &sp50, &sp99);
	if (rate > 0 && !status) {
		char b[5][24];
		printf("%8.0f %8d %8s %9zu %9.0f %9.0f %9s %9s %9s %9s %8zu %7zu %7ld %10.1f %10.1f %9.2f %9.1f %5s\n", rate,
		       o->in_flight, cache_arg, res.offered, res.offered_qps, res.achieved_qps,
		       ol_us(b[0], sizeof b[0], res.p50_us), ol_us(b[1], sizeof b[1], res.p90_us),
		       ol_us(b[2], sizeof b[2], res.p99_us), ol_us(b[3], sizeof b[3], res.p999_us), res.delayed,
		       res.unsent, errors, sp50, sp99, start_s, rss / 1024.0,
		       train == VISREC__V1__MODEL_KIND__VBPR ? "vbpr" : train ? "bpr" : "-");
		printf("%8s generator lag p99 %.0f us (sends not delayed), worst %s us\n", "",
		       res.lag_p99_us, ol_us(b[4], sizeof b[4], res.max_us));
	} else if (!status) {
		printf("%6d %8s %9zu %9.0f %10.0f %10u %10u %10.1f %10.1f %7ld %9.2f %9.1f\n", conc, cache_arg, total,
		       total / took, total * (o->batch ? o->batch : 1) / took, total ? all[total / 2] : 0,
		       total ? all[total * 99 / 100] : 0, sp50, sp99, errors, start_s, rss / 1024.0);
	}
	/* Trainer threads as rankd picks them: threads 0 is one per core, but
	 * one for BPR's Hogwild (its default optimiser). */
	int tthreads = o->train_threads ? o->train_threads
		       : train == VISREC__V1__MODEL_KIND__BPR ? 1 : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (train && !status)
		printf("%8s Train (%d trainer threads): epochs %u..%u during the measurement, %s at its end; "
		       "%ld answers from another model than the snapshot's\n", "", tthreads, epoch0, epoch1,
		       train_ended ? "ENDED (the load was not all beside a Train)" : "still running", other);
	fflush(stdout);
	if (st != 0)
		fprintf(stderr, "bench_rank_rpc: rankd exited with status %d (see %s)\n", st, log);
leave:
	if (rankd_up) { /* the Train could not start */
		for (int c = 0; c < nch; c++)
			vr_channel_destroy(chs[c]);
		proc_stop(&r, 30000);
	}
	free(all);
	for (int c = 0; c < nc; c++)
		client_free(&cl[c]);
	free(cl);
	free(chs);
	return status;
}

/* Next number of a comma-separated list at *p (advanced past it). */
static double next_item(const char **p)
{
	double v = atof(*p);
	while (**p && **p != ',')
		(*p)++;
	if (**p == ',')
		(*p)++;
	return v;
}

/* ---- read replicas (--replicas) ------------------------------------------------ */

/* taskset's path (posix_spawn does not search PATH), or NULL. */
static const char *taskset_bin(void)
{
	static const char *const where[] = { "/usr/bin/taskset", "/bin/taskset" };
	for (size_t i = 0; i < sizeof where / sizeof *where; i++)
		if (!access(where[i], X_OK))
			return where[i];
	return NULL;
}

static Visrec__V1__RankInfoResponse *rank_info(vr_channel *ch)
{
	Visrec__V1__RankInfoRequest req = VISREC__V1__RANK_INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	vr_status st;
	if (vr_client_unary(ch, "/visrec.v1.Rank/Info", &req.base, &visrec__v1__rank_info_response__descriptor,
			    &m, 5000, NULL, &st))
		return NULL;
	return (Visrec__V1__RankInfoResponse *)m;
}

/* The top item of user's Recommend on ch (k 1) into item (64 bytes): 0, or -1. */
static int top_item(vr_channel *ch, const char *user, char *item)
{
	Visrec__V1__RecommendRequest req = VISREC__V1__RECOMMEND_REQUEST__INIT;
	req.user_id = (char *)user;
	req.k = 1;
	ProtobufCMessage *m = NULL;
	vr_status st;
	if (vr_client_unary(ch, "/visrec.v1.Rank/Recommend", &req.base, &visrec__v1__recommend_response__descriptor,
			    &m, 5000, NULL, &st))
		return -1;
	Visrec__V1__RecommendResponse *r = (Visrec__V1__RecommendResponse *)m;
	int rc = r->n_items == 1 ? 0 : -1;
	if (!rc)
		snprintf(item, 64, "%s", r->items[0]->item_id);
	protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

/* Replica lag, idle: per sample, user u's top item x on the replica, then
 * AddInteractions(u, x) on the writer; from the writer's answer, the
 * replica's Recommend of u is asked every 100 us until x is no longer its
 * top (the replica applied the writer's log record and excluded x). Prints
 * p50/p99/max in ms. 0, or -1 when a call failed or a sample took 10 s. */
static int measure_lag(vr_channel *writer, vr_channel *replica, int users, int samples)
{
	double *lag = calloc((size_t)samples, sizeof *lag);
	int rc = lag ? 0 : -1;
	for (int s = 0; !rc && s < samples; s++) {
		char user[16], item[64], now[64];
		snprintf(user, sizeof user, "u%06u", (unsigned)(s * 7919 % users));
		if (top_item(replica, user, item)) {
			rc = -1;
			break;
		}
		Visrec__V1__Interaction row = VISREC__V1__INTERACTION__INIT, *rows[1] = { &row };
		row.user_id = user;
		row.item_id = item;
		row.timestamp = 2000000000 + s;
		Visrec__V1__AddInteractionsRequest req = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
		req.n_interactions = 1;
		req.interactions = rows;
		ProtobufCMessage *m = NULL;
		vr_status st;
		if (vr_client_unary(writer, "/visrec.v1.Rank/AddInteractions", &req.base,
				    &visrec__v1__add_interactions_response__descriptor, &m, 5000, NULL, &st)) {
			fprintf(stderr, "bench_rank_rpc: AddInteractions on the writer: %s %s\n",
				vr_status_name(st.code), st.message);
			rc = -1;
			break;
		}
		protobuf_c_message_free_unpacked(m, NULL);
		double t0 = now_s();
		for (;;) {
			if (top_item(replica, user, now)) {
				rc = -1;
				break;
			}
			if (strcmp(now, item))
				break;
			if (now_s() - t0 > 10) {
				fprintf(stderr, "bench_rank_rpc: the replica still ranks %s first for %s 10 s after the "
					"writer acknowledged it as seen\n", item, user);
				rc = -1;
				break;
			}
			usleep(100);
		}
		lag[s] = (now_s() - t0) * 1e3;
	}
	if (!rc) {
		qsort(lag, (size_t)samples, sizeof *lag, cmp_double);
		printf("replica_lag_samples=%d\nreplica_lag_p50_ms=%.2f\nreplica_lag_p99_ms=%.2f\nreplica_lag_max_ms=%.2f\n",
		       samples, lag[samples / 2], lag[samples * 99 / 100], lag[samples - 1]);
	}
	free(lag);
	return rc;
}

/* One writer rankd on the snapshot (not pinned: it serves no ranking
 * calls here) and nrep read replicas (rankd --writer), replica r pinned to
 * core r % cores with taskset, each on a fresh data directory. Prints each
 * replica's time from its start to serving the writer's model version,
 * then per level one closed loop whose callers' channels go round-robin
 * over the replicas (the callers share the machine's cores), and, when
 * lag_samples, the replica lag after AddInteractions (measure_lag).
 * 0, or 1 when a daemon or a call failed. */
static int run_replicas(const struct opts *o, int nrep, const char *levels, int cache_mb, int lag_samples)
{
	enum { MAXREP = 16 };
	const char *taskset = taskset_bin();
	if (!taskset || nrep < 1 || nrep > MAXREP) {
		fprintf(stderr, "bench_rank_rpc: --replicas needs taskset (util-linux) and 1..%d replicas\n", MAXREP);
		return 1;
	}
	char cache_arg[16], threads_arg[16], log[300];
	snprintf(cache_arg, sizeof cache_arg, "%d", cache_mb < 0 ? 0 : cache_mb);
	snprintf(threads_arg, sizeof threads_arg, "%d", o->server_threads);
	snprintf(log, sizeof log, "%s/writer.stderr", o->work);
	char *wargv[] = { (char *)o->rankd_bin, "--listen", "127.0.0.1:0", "--data", (char *)o->data, "--threads",
			  threads_arg, "--follow-featured=false", "--featured", "127.0.0.1:9", "--topk-cache-mb",
			  cache_arg, NULL };
	struct proc w, rep[MAXREP];
	vr_channel *wch = NULL, *rch[MAXREP] = { 0 };
	int status = 0, started = 0;
	if (proc_spawn(&w, log, wargv) || proc_wait_ready(&w, "rankd", 600000)) {
		fprintf(stderr, "bench_rank_rpc: the writer did not start (see %s)\n", log);
		proc_stop(&w, 5000);
		return 1;
	}
	vr_channel_create(&wch, w.addr, NULL);
	Visrec__V1__RankInfoResponse *wi = rank_info(wch);
	uint64_t version = wi ? wi->model_version : 0;
	if (wi)
		protobuf_c_message_free_unpacked(&wi->base, NULL);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	double load_max = 0;
	long writer_rss0 = peak_rss_kb(w.pid);
	printf("writer before the replicas: rss_anon_mb=%.1f rss_file_mb=%.1f\n", status_kb(w.pid, "RssAnon:") / 1024.0,
	       status_kb(w.pid, "RssFile:") / 1024.0);
	for (int r = 0; r < nrep && !status; r++) {
		char core[16], data[300], rlog[300];
		snprintf(core, sizeof core, "%ld", r % (cores > 0 ? cores : 1));
		snprintf(data, sizeof data, "%s/replica-%d", o->work, r);
		snprintf(rlog, sizeof rlog, "%s/replica-%d.stderr", o->work, r);
		nftw(data, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		remove(rlog);
		char *rargv[] = { (char *)taskset, "-c", core, (char *)o->rankd_bin, "--listen", "127.0.0.1:0",
				  "--data", data, "--threads", threads_arg, "--follow-featured=false", "--featured",
				  "127.0.0.1:9", "--topk-cache-mb", cache_arg, "--writer", w.addr, NULL };
		double t0 = now_s();
		if (proc_spawn(&rep[r], rlog, rargv) || proc_wait_ready(&rep[r], "rankd", 600000)) {
			fprintf(stderr, "bench_rank_rpc: replica %d did not start (see %s)\n", r, rlog);
			proc_stop(&rep[r], 5000);
			status = 1;
			break;
		}
		started++;
		vr_channel_create(&rch[r], rep[r].addr, NULL);
		uint64_t got = 0;
		while (got != version && now_s() - t0 < 600) {
			Visrec__V1__RankInfoResponse *in = rank_info(rch[r]);
			got = in ? in->model_version : 0;
			if (in)
				protobuf_c_message_free_unpacked(&in->base, NULL);
			if (got != version)
				usleep(10000);
		}
		double took = now_s() - t0;
		if (got != version) {
			fprintf(stderr, "bench_rank_rpc: replica %d does not serve the writer's version %llu after 600 s "
				"(see %s)\n", r, (unsigned long long)version, rlog);
			status = 1;
			break;
		}
		printf("replicas=%d replica=%d core=%s model_version=%llu replica_load_s=%.2f writer_peak_rss_mb=%.1f "
		       "(%.1f before the replicas) writer_rss_anon_mb=%.1f writer_rss_file_mb=%.1f\n", nrep, r, core,
		       (unsigned long long)version, took, peak_rss_kb(w.pid) / 1024.0, writer_rss0 / 1024.0,
		       status_kb(w.pid, "RssAnon:") / 1024.0, status_kb(w.pid, "RssFile:") / 1024.0);
		if (took > load_max)
			load_max = took;
	}
	for (const char *p = levels; *p && !status;) {
		int conc = (int)next_item(&p);
		if (conc < 1)
			continue;
		int nch = o->channels < conc ? o->channels : conc;
		if (nch < nrep)
			nch = nrep;
		vr_channel **chs = calloc((size_t)nch, sizeof *chs);
		struct client *cl = calloc((size_t)conc, sizeof *cl);
		for (int c = 0; c < nch; c++)
			vr_channel_create(&chs[c], rep[c % nrep].addr, NULL);
		for (int c = 0; c < conc; c++) {
			cl[c] = (struct client){ .ch = chs[c % nch], .n_users = (uint32_t)o->users, .k = o->k,
						 .seed = (uint64_t)c + 1, .cold_slots = o->cold_slots };
			cl[c].cap = (size_t)(o->seconds * 200000 / conc + 1000);
			cl[c].lat_us = calloc(cl[c].cap, sizeof *cl[c].lat_us);
			client_init(&cl[c]);
		}
		atomic_store(&phase, 0);
		for (int c = 0; c < conc; c++)
			pthread_create(&cl[c].tid, NULL, client_main, &cl[c]);
		usleep(500000);
		atomic_store(&phase, 1);
		double m0 = now_s();
		usleep((useconds_t)(o->seconds * 1e6));
		atomic_store(&phase, 2);
		double took = now_s() - m0;
		size_t total = 0, at = 0;
		long errors = 0;
		for (int c = 0; c < conc; c++) {
			pthread_join(cl[c].tid, NULL);
			total += cl[c].n;
			errors += cl[c].errors;
		}
		uint32_t *all = malloc((total + 1) * sizeof *all);
		for (int c = 0; c < conc; c++) {
			memcpy(all + at, cl[c].lat_us, cl[c].n * sizeof *all);
			at += cl[c].n;
		}
		qsort(all, total, sizeof *all, cmp_u32);
		printf("replicas=%d conc=%d cache_mb=%s calls=%zu qps=%.0f cli_p50_us=%u cli_p99_us=%u errors=%ld\n",
		       nrep, conc, cache_arg, total, total / took, total ? all[total / 2] : 0,
		       total ? all[total * 99 / 100] : 0, errors);
		fflush(stdout);
		free(all);
		for (int c = 0; c < conc; c++)
			client_free(&cl[c]);
		for (int c = 0; c < nch; c++)
			vr_channel_destroy(chs[c]);
		free(cl);
		free(chs);
		if (errors)
			status = 1;
	}
	if (!status && lag_samples > 0 && measure_lag(wch, rch[0], o->users, lag_samples))
		status = 1;
	for (int r = 0; r < started; r++) {
		vr_channel_destroy(rch[r]);
		proc_stop(&rep[r], 30000);
	}
	vr_channel_destroy(wch);
	proc_stop(&w, 30000);
	return status;
}

int main(int argc, char **argv)
{
	struct opts o = { .items = 10000, .users = 1000, .channels = 8, .server_threads = 2, .k = 20,
			  .scan_threads = 1, .in_flight = 64, .seconds = 3, .rankd_bin = RANKD_BIN };
	const char *levels = "1,8,64", *dir = NULL, *caches = "64", *rates = "", *arrivals = "poisson",
		   *train = "none", *replicas = "", *open_client = "async";
	int lag_samples = 0;
	const vr_flag flags[] = {
		{ "items", NULL, VR_FLAG_INT, &o.items, "10000", "catalogue size", 0 },
		{ "users", NULL, VR_FLAG_INT, &o.users, "1000", "users (20 interactions each)", 0 },
		{ "seconds", NULL, VR_FLAG_DOUBLE, &o.seconds, "3", "measured seconds per level", 0 },
		{ "levels", NULL, VR_FLAG_STRING, &levels, "1,8,64", "concurrent clients per level (closed loop)", 0 },
		{ "rate", NULL, VR_FLAG_STRING, &rates, "",
		  "offered calls/s, a list: open loops instead of the levels", 0 },
		{ "in-flight", NULL, VR_FLAG_INT, &o.in_flight, "64", "open loop: most calls outstanding", 0 },
		{ "arrivals", NULL, VR_FLAG_STRING, &arrivals, "poisson", "open loop: poisson or even", 0 },
		{ "open-client", NULL, VR_FLAG_STRING, &open_client, "async",
		  "open loop: async (4 sender threads and a receiver on one completion queue) or threads (one blocking caller "
		  "a slot)", 0 },
		{ "train", NULL, VR_FLAG_STRING, &train, "none",
		  "a list of none, bpr, vbpr: each level run once per value, beside such a Train", 0 },
		{ "train-threads", NULL, VR_FLAG_INT, &o.train_threads, "0",
		  "TrainRequest.threads (0: rankd's default, one per core)", 0 },
		{ "channels", NULL, VR_FLAG_INT, &o.channels, "8", "client channels (connections), shared round-robin", 0 },
		{ "server-threads", NULL, VR_FLAG_INT, &o.server_threads, "2", "rankd --threads", 0 },
		{ "k", NULL, VR_FLAG_INT, &o.k, "20", "top-k", 0 },
		{ "approx", NULL, VR_FLAG_INT, &o.approx, "0", "rankd --topk-approx", 0 },
		{ "fp16", NULL, VR_FLAG_BOOL, &o.fp16, "false", "rankd --topk-fp16", 0 },
		{ "int4", NULL, VR_FLAG_BOOL, &o.int4, "false", "rankd --topk-int4", 0 },
		{ "scan-threads", NULL, VR_FLAG_INT, &o.scan_threads, "1", "rankd --scan-threads", 0 },
		{ "cold-slots", NULL, VR_FLAG_INT, &o.cold_slots, "0", "places of k kept for cold items", 0 },
		{ "batch", NULL, VR_FLAG_INT, &o.batch, "0", "users per RecommendBatch call; 0: Recommend", 0 },
		{ "dir", NULL, VR_FLAG_STRING, &dir, NULL, "work directory (default: a new one under /tmp)", 0 },
		{ "metrics", NULL, VR_FLAG_BOOL, &o.metrics, "false", "rankd --metrics-listen 127.0.0.1:0", 0 },
		{ "rankd", NULL, VR_FLAG_STRING, &o.rankd_bin, RANKD_BIN, "the rankd binary to run", 0 },
		{ "replicas", NULL, VR_FLAG_STRING, &replicas, "",
		  "a list of read-replica counts: per count, a writer and that many replicas "
		  "(taskset, one core each), the levels' callers spread over the replicas", 0 },
		{ "lag-samples", NULL, VR_FLAG_INT, &lag_samples, "0",
		  "with --replicas: after the levels, the replica lag of that many AddInteractions", 0 },
		{ "topk-cache-mb", NULL, VR_FLAG_STRING, &caches, "64",
		  "rankd --topk-cache-mb values, each level run once per value", 0 },
		{ 0 },
	};
	char err[256];
	int rc = vr_flags_parse(flags, argc, argv, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		vr_flags_usage(stdout, "bench_rank_rpc", "Recommend through a real rankd on loopback.", flags);
		return 0;
	}
	o.poisson = !strcmp(arrivals, "poisson");
	o.open_threads = !strcmp(open_client, "threads");
	int any_train = 0, vbpr = 0, bad_train = 0;
	for (const char *t = train; *t;) {
		size_t len = strcspn(t, ",");
		int kind = train_kind(t, len);
		bad_train |= kind < 0;
		any_train |= kind > 0;
		vbpr |= kind == VISREC__V1__MODEL_KIND__VBPR;
		t += len + (t[len] == ',');
	}
	if (rc || o.items < 1 || o.users < 1 || o.channels < 1 || o.k < 1 || o.cold_slots < 0 || o.cold_slots > o.k ||
	    o.batch < 0 || o.batch > 256 || o.in_flight < 1 || o.in_flight > 4096 || o.train_threads < 0 ||
	    (!o.poisson && strcmp(arrivals, "even")) || bad_train || !*train ||
	    (!o.open_threads && strcmp(open_client, "async")) ||
	    (any_train && o.batch)) {
		fprintf(stderr, "bench_rank_rpc: %s\n", rc ? err : "--items, --users, --channels, --k must be >= 1, "
			"--cold-slots 0..k, --batch 0..256, --in-flight 1..4096, --arrivals poisson or even, "
			"--open-client async or threads, "
			"--train a list of none, bpr and vbpr (not with --batch), --train-threads >= 0");
		return 2;
	}
	char work[256], data[300];
	snprintf(work, sizeof work, "%s", dir ? dir : "/tmp/bench_rank_rpc.XXXXXX");
	if (!dir && !mkdtemp(work))
		return 1;
	snprintf(data, sizeof data, "%s/rankd-data", work);
	o.work = work;
	o.data = data;
	nftw(data, rm_entry, 8, FTW_DEPTH | FTW_PHYS); /* an earlier run's (--dir); featured's data stays */
	double t0 = now_s();
	if ((rc = synth_snapshot_write(data, (uint32_t)o.items, (uint32_t)o.users))) {
		fprintf(stderr, "bench_rank_rpc: cannot write the snapshot: %s\n", vr_strerror(rc));
		return 1;
	}
	printf("snapshot: %d items, %d users, VBPR K=200 K'=100 F=2048 (D=301), written in %.1f s; "
	       "k %d, cold slots %d, %s; rankd --topk-approx %d%s --scan-threads %d\n", o.items, o.users,
	       now_s() - t0, o.k, o.cold_slots, o.batch ? "RecommendBatch calls" : "Recommend calls", o.approx,
	       o.fp16 ? " --topk-fp16" : o.int4 ? " --topk-int4" : "", o.scan_threads);
	vr_rpc_init();
	int status = 0;
	struct proc f = { .pid = -1 };
	if (vbpr) {
		if (featured_with_items(&f, work, o.items))
			status = 1;
		o.featured = f.addr;
	}
	for (const char *p = replicas; *p && !status;) {
		int n = (int)next_item(&p);
		status = run_replicas(&o, n, levels, atoi(caches), lag_samples);
	}
	if (*replicas)
		goto done;
	if (!status && *rates)
		printf("open loop, %s arrivals; latency from the intended send time\n%8s %8s %8s %9s %9s %9s %9s %9s "
		       "%9s %9s %8s %7s %7s %10s %10s %9s %9s %5s\n", o.poisson ? "Poisson" : "evenly spaced", "rate",
		       "inflight", "cache_mb", "offered", "off_qps", "ach_qps", "p50_us", "p90_us", "p99_us", "p999_us",
		       "delayed", "unsent", "errors", "srv_p50_us", "srv_p99_us", "start_s", "rss_MB", "train");
	else if (!status)
		printf("%6s %8s %9s %9s %10s %10s %10s %10s %10s %7s %9s %9s\n", "conc", "cache_mb", "calls", "QPS",
		       "users/s", "cli_p50_us", "cli_p99_us", "srv_p50_us", "srv_p99_us", "errors", "start_s", "rss_MB");
	for (const char *p = *rates ? rates : levels; *p && !status;) {
		double v = next_item(&p);
		if (v <= 0 || (!*rates && v < 1))
			continue;
		for (const char *cp = caches; *cp && !status;) {
			int mb = (int)next_item(&cp);
			for (const char *t = train; *t && !status;) {
				size_t len = strcspn(t, ",");
				status = run_case(&o, *rates ? 0 : (int)v, *rates ? v : 0, mb, train_kind(t, len));
				t += len + (t[len] == ',');
			}
		}
	}
done:
	if (f.pid > 0)
		proc_stop(&f, 30000);
	vr_rpc_shutdown();
	if (!dir)
		nftw(work, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return status;
}
