/* Integration tests of rankd read replicas (rankd/replica.c): a writer
 * rankd and replicas started with --writer, all real processes on
 * 127.0.0.1, called with our C client.
 *
 * Covered: replicas load the writer's model and answer Recommend exactly as
 * the writer (ids and scores) for the same model version, also a replica
 * started after the Train and after a second Train; AddInteractions on the
 * writer excluded on the replicas within the lag Info reports; writes to a
 * replica refused naming the writer; a replica killed (VISREC_FAULT, as
 * kill -9) in the middle of a snapshot download resumes after the chunks
 * it stored and serves the same answers; an idle writer and replica use no
 * CPU. */
#include "err.h"
#include "harness.h"
#include "procs.h"
#include "rank_client.h"
#include "rpc.h"
#include "visrec/v1/rankd.pb-c.h"

#include <stdlib.h>

#define USERS 60
#define ITEMS 200
#define PER_USER 10
#define WAIT_MS 30000
#define IDLE_MS 2000
#define IDLE_MAX_MS 40

static char tmpdir[64];

static int start_rankd(struct proc *p, const char *tag, const char *writer, const char *fault)
{
	char data[128], err[160];
	snprintf(data, sizeof data, "%s/%s-data", tmpdir, tag);
	snprintf(err, sizeof err, "%s/%s.stderr", tmpdir, tag);
	char *argv[16] = { RANKD_BIN, "--listen", "127.0.0.1:0", "--data", data, "--threads", "2",
			   "--featured", "127.0.0.1:9", "--follow-featured=false" };
	int argc = 10;
	if (writer) {
		argv[argc++] = "--writer";
		argv[argc++] = (char *)writer;
		argv[argc++] = "--snapshot-chunk-bytes";
		argv[argc++] = "4096";
	}
	argv[argc] = NULL;
	if (fault)
		setenv("VISREC_FAULT", fault, 1);
	int rc = proc_spawn(p, err, argv);
	unsetenv("VISREC_FAULT");
	return rc ? rc : proc_wait_ready(p, "rankd", 20000);
}

/* user u, item i, at time ts; n rows. */
static int add(vr_channel *ch, const int *u, const int *i, size_t n, vr_status *st)
{
	Visrec__V1__Interaction *rows = calloc(n, sizeof *rows);
	Visrec__V1__Interaction **ptrs = calloc(n, sizeof *ptrs);
	char (*ids)[2][16] = calloc(n, sizeof *ids);
	for (size_t x = 0; x < n; x++) {
		visrec__v1__interaction__init(&rows[x]);
		snprintf(ids[x][0], 16, "u%03d", u[x]);
		snprintf(ids[x][1], 16, "i%03d", i[x]);
		rows[x].user_id = ids[x][0];
		rows[x].item_id = ids[x][1];
		rows[x].timestamp = 1000 + (int64_t)x;
		ptrs[x] = &rows[x];
	}
	Visrec__V1__AddInteractionsRequest req = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	req.n_interactions = n;
	req.interactions = ptrs;
	void *resp = NULL;
	int rc = unary(ch, "AddInteractions", &req.base, &visrec__v1__add_interactions_response__descriptor,
		       &resp, st);
	release(resp);
	free(rows);
	free(ptrs);
	free(ids);
	return rc;
}

/* users in 4 taste groups, mostly their group's items */
static int add_data(vr_channel *ch, vr_status *st)
{
	static int u[USERS * PER_USER], i[USERS * PER_USER];
	uint64_t s = 42;
	size_t n = 0;
	for (int x = 0; x < USERS; x++)
		for (int j = 0; j < PER_USER; j++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			u[n] = x;
			i[n] = (int)((s >> 33) % (ITEMS / 4)) * 4 + x % 4;
			n++;
		}
	return add(ch, u, i, n, st);
}

static int train(vr_channel *ch, uint64_t seed, uint64_t *version, vr_status *st)
{
	Visrec__V1__TrainRequest r = VISREC__V1__TRAIN_REQUEST__INIT;
	vr_ccall *cc = NULL;
	ProtobufCMessage *m;
	r.model = VISREC__V1__MODEL_KIND__BPR;
	r.epochs = 5;
	r.dims = 16;
	r.triples_per_epoch = 20000;
	r.seed = seed;
	r.threads = 1;
	r.patience = 5;
	*version = 0;
	if (vr_ccall_start(&cc, ch, "/visrec.v1.Rank/Train", &visrec__v1__train_progress__descriptor,
			   120000, NULL))
		return -1;
	vr_ccall_send(cc, &r.base);
	vr_ccall_close_send(cc);
	while (vr_ccall_recv(cc, &m) == 0) {
		Visrec__V1__TrainProgress *p = (void *)m;
		if (p->done)
			*version = p->model_version;
		release(m);
	}
	return vr_ccall_finish(cc, st);
}

/* Waits until the replica serves version with its log at seq. */
static int caught_up(vr_channel *ch, uint64_t version, uint64_t seq, int ms)
{
	int64_t end = procs_now_ms() + ms;
	while (procs_now_ms() < end) {
		Visrec__V1__RankInfoResponse *in = info(ch);
		int ok = in && in->model_version == version && in->interactions_seq >= seq;
		release(in);
		if (ok)
			return 0;
		usleep(20000);
	}
	return -1;
}

static uint64_t log_seq(vr_channel *ch)
{
	Visrec__V1__RankInfoResponse *in = info(ch);
	uint64_t s = in ? in->interactions_seq : 0;
	release(in);
	return s;
}

static Visrec__V1__RecommendResponse *recommend(vr_channel *ch, int user, int k)
{
	char id[16];
	snprintf(id, sizeof id, "u%03d", user);
	Visrec__V1__RecommendRequest req = VISREC__V1__RECOMMEND_REQUEST__INIT;
	req.user_id = id;
	req.k = k;
	Visrec__V1__RecommendResponse *resp = NULL;
	vr_status st;
	if (unary(ch, "Recommend", &req.base, &visrec__v1__recommend_response__descriptor, &resp, &st))
		return NULL;
	return resp;
}

/* 0 when a and b answer every user alike: same model version, ids and
 * scores bit for bit; else the first user that differs, plus one. */
static int same_answers(vr_channel *a, vr_channel *b)
{
	for (int u = 0; u < USERS; u++) {
		Visrec__V1__RecommendResponse *x = recommend(a, u, 10), *y = recommend(b, u, 10);
		int same = x && y && x->model_version == y->model_version && x->n_items == y->n_items;
		for (size_t k = 0; same && k < x->n_items; k++)
			same = !strcmp(x->items[k]->item_id, y->items[k]->item_id) &&
			       !memcmp(&x->items[k]->score, &y->items[k]->score, sizeof(float));
		if (!same && x && y) {
			fprintf(stderr, "  user %d: v%llu / v%llu, %zu / %zu items\n", u,
				(unsigned long long)x->model_version, (unsigned long long)y->model_version,
				x->n_items, y->n_items);
			for (size_t k = 0; k < x->n_items && k < y->n_items && k < 3; k++)
				fprintf(stderr, "    %s %.9g | %s %.9g\n", x->items[k]->item_id, x->items[k]->score,
					y->items[k]->item_id, y->items[k]->score);
		}
		release(x);
		release(y);
		if (!same)
			return u + 1;
	}
	return 0;
}

static int64_t idle_cpu(struct proc *p)
{
	int64_t a = proc_cpu_ms(p->pid);
	usleep(IDLE_MS * 1000);
	int64_t b = proc_cpu_ms(p->pid);
	return a < 0 || b < 0 ? -1 : b - a;
}

TEST(replicas_follow_the_writer)
{
	struct proc w, r1, r2;
	vr_channel *wc = NULL, *c1 = NULL, *c2 = NULL;
	vr_status st = { 0 }, st_add = { 0 }, st_train = { 0 };
	uint64_t v1 = 0, v2 = 0;
	ASSERT_OK(start_rankd(&w, "w", NULL, NULL));
	vr_channel_create(&wc, w.addr, NULL);
	ASSERT_OK(start_rankd(&r1, "r1", w.addr, NULL));
	vr_channel_create(&c1, r1.addr, NULL);
	ASSERT_OK(add_data(wc, &st));
	ASSERT_MSG(!train(wc, 7, &v1, &st) && v1, "Train: %s", st.message);

	/* r1 ran through it all; r2 starts late. */
	int up1 = caught_up(c1, v1, log_seq(wc), WAIT_MS);
	ASSERT_OK(start_rankd(&r2, "r2", w.addr, NULL));
	vr_channel_create(&c2, r2.addr, NULL);
	int up2 = caught_up(c2, v1, log_seq(wc), WAIT_MS);
	int diff1 = same_answers(wc, c1), diff2 = same_answers(wc, c2);

	/* A new interaction on the writer: its item leaves the replicas' top. */
	Visrec__V1__RecommendResponse *top = recommend(wc, 3, 1);
	ASSERT(top && top->n_items == 1);
	int item = atoi(top->items[0]->item_id + 1), user = 3;
	release(top);
	int64_t t0 = procs_now_ms();
	ASSERT_OK(add(wc, &user, &item, 1, &st));
	int excluded = 0;
	int64_t lag_ms = -1;
	while (procs_now_ms() - t0 < 5000 && !excluded) {
		Visrec__V1__RecommendResponse *a = recommend(c1, 3, 10), *b = recommend(c2, 3, 10);
		char id[16];
		snprintf(id, sizeof id, "i%03d", item);
		excluded = a && b;
		for (size_t k = 0; excluded && k < a->n_items; k++)
			excluded = strcmp(a->items[k]->item_id, id) != 0;
		for (size_t k = 0; excluded && k < b->n_items; k++)
			excluded = strcmp(b->items[k]->item_id, id) != 0;
		release(a);
		release(b);
		if (excluded)
			lag_ms = procs_now_ms() - t0;
	}
	int diff_after_add = same_answers(wc, c1);
	Visrec__V1__RankInfoResponse *in1 = info(c1);

	/* Writes to a replica are refused, naming the writer. */
	int refused_add = add(c1, &user, &item, 1, &st_add);
	uint64_t none;
	int refused_train = train(c1, 7, &none, &st_train);

	/* A second Train reaches both. */
	ASSERT_MSG(!train(wc, 8, &v2, &st) && v2 > v1, "Train 2: %s", st.message);
	int up3 = caught_up(c1, v2, log_seq(wc), WAIT_MS), up4 = caught_up(c2, v2, log_seq(wc), WAIT_MS);
	int diff3 = same_answers(wc, c1), diff4 = same_answers(wc, c2);
	int64_t idle_w = idle_cpu(&w), idle_r = idle_cpu(&r1);

	vr_channel_destroy(wc);
	vr_channel_destroy(c1);
	vr_channel_destroy(c2);
	int s1 = proc_stop(&r1, 10000), s2 = proc_stop(&r2, 10000), sw = proc_stop(&w, 10000);
	fprintf(stderr, "  exclusion visible on both replicas after %lld ms; idle CPU in %d s: writer "
		"%lld ms, replica %lld ms\n", (long long)lag_ms, IDLE_MS / 1000, (long long)idle_w,
		(long long)idle_r);
	ASSERT_MSG(!up1, "replica 1 did not reach model v%llu", (unsigned long long)v1);
	ASSERT_MSG(!up2, "the late replica did not reach model v%llu", (unsigned long long)v1);
	ASSERT_MSG(!diff1, "replica 1 answers user %d unlike the writer", diff1 - 1);
	ASSERT_MSG(!diff2, "replica 2 answers user %d unlike the writer", diff2 - 1);
	ASSERT_MSG(excluded, "the new interaction was not excluded on the replicas within 5 s");
	ASSERT_MSG(!diff_after_add, "after AddInteractions replica 1 answers user %d unlike the writer",
		   diff_after_add - 1);
	ASSERT(in1 != NULL);
	ASSERT_STR_EQ(in1->writer, w.addr);
	ASSERT(in1->writer_connected);
	ASSERT_EQ_INT(in1->seq_behind, 0);
	release(in1);
	ASSERT_EQ_INT(refused_add, VR_ERPC);
	ASSERT_EQ_INT(st_add.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st_add.message, w.addr);
	ASSERT_EQ_INT(refused_train, VR_ERPC);
	ASSERT_EQ_INT(st_train.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st_train.message, "read replica of the writer at");
	ASSERT_MSG(!up3 && !up4, "the replicas did not reach model v%llu", (unsigned long long)v2);
	ASSERT_MSG(!diff3 && !diff4, "after the second Train a replica answers unlike the writer");
	ASSERT_MSG(idle_w >= 0 && idle_w <= IDLE_MAX_MS, "the idle writer used %lld ms of CPU",
		   (long long)idle_w);
	ASSERT_MSG(idle_r >= 0 && idle_r <= IDLE_MAX_MS, "the idle replica used %lld ms of CPU",
		   (long long)idle_r);
	ASSERT_EQ_INT(s1, 0);
	ASSERT_EQ_INT(s2, 0);
	ASSERT_EQ_INT(sw, 0);
}

/* A replica that dies after its second snapshot chunk resumes from it. */
TEST(replica_killed_mid_snapshot_resumes)
{
	struct proc w, r;
	vr_channel *wc = NULL, *rc_ = NULL;
	vr_status st = { 0 };
	uint64_t v = 0;
	char path[160], log[8192] = "";
	ASSERT_OK(start_rankd(&w, "wk", NULL, NULL));
	vr_channel_create(&wc, w.addr, NULL);
	ASSERT_OK(add_data(wc, &st));
	ASSERT_MSG(!train(wc, 7, &v, &st) && v, "Train: %s", st.message);
	ASSERT_OK(start_rankd(&r, "rk", w.addr, "replica-chunk@2"));
	int status = -1;
	for (int64_t end = procs_now_ms() + WAIT_MS; procs_now_ms() < end;) {
		if (waitpid(r.pid, &status, WNOHANG) == r.pid)
			break;
		usleep(10000);
	}
	close(r.out);
	int died = WIFEXITED(status) && WEXITSTATUS(status) == 86;
	ASSERT_OK(start_rankd(&r, "rk", w.addr, NULL));
	vr_channel_create(&rc_, r.addr, NULL);
	int up = caught_up(rc_, v, log_seq(wc), WAIT_MS);
	int diff = same_answers(wc, rc_);
	vr_channel_destroy(rc_);
	vr_channel_destroy(wc);
	proc_stop(&r, 10000);
	proc_stop(&w, 10000);
	snprintf(path, sizeof path, "%s/rk.stderr", tmpdir);
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(log, 1, sizeof log - 1, f);
		log[n] = 0;
		fclose(f);
	}
	ASSERT_MSG(died, "the replica did not stop at its fault point (status %d)", status);
	ASSERT_CONTAINS(log, "from the writer at byte 8192");
	ASSERT_MSG(!up, "the restarted replica did not reach model v%llu", (unsigned long long)v);
	ASSERT_MSG(!diff, "the restarted replica answers user %d unlike the writer", diff - 1);
}

static const struct vr_test tests[] = {
	T(replicas_follow_the_writer), T(replica_killed_mid_snapshot_resumes), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/rk_replica_test.XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
