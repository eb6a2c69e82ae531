/* Integration tests of rankd's service: real rankd (and featured) processes
 * on 127.0.0.1, called with our C client. A small synthetic data set is
 * made in the test: users in 5 taste clusters, each interacting mostly with
 * its cluster's items, so a trained model must beat chance.
 *
 * Covered: AddInteractions validation; Recommend before any Train; Train
 * BPR streaming progress to done; Recommend never returns a seen item, k
 * over the catalogue returns the catalogue, unknown users get the
 * popularity fallback with its reason, bad k / user / candidates are
 * INVALID_ARGUMENT; Score, RecommendBatch, Evaluate, Info; the same top-k
 * after a restart; Recommend's latency while a Train runs; a second Train
 * refused; cancelling a Train; and with a real featured: VBPR trained on its
 * vectors, a new image rankable (cold) without retraining, the change feed
 * followed again after featured restarts, and the snapshot (new items
 * included) served after a restart of rankd while featured is down; items a
 * user interacts with after the last Train excluded at once, through a
 * Train that runs meanwhile and across restarts; an idle pair using no
 * CPU, before and after an ingest and a Train; the pair with tokens; and
 * a full disk under rankd.
 *
 * Why one file at ~1,750 lines: it is the one rankd service under test;
 * its length is its many small, separate tests over shared fixtures. */
#include "jpeg_enc.h"
#include "err.h"
#include "harness.h"
#include "procs.h"
#include "rank_client.h"
#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#define USERS 100
#define ITEMS 300
#define CLUSTERS 5
#define PER_USER 12

static char tmpdir[64];

/* ---- data ----------------------------------------------------------------- */

struct data {
	int n;                          /* interactions */
	int user[USERS * PER_USER], item[USERS * PER_USER];
	int64_t ts[USERS * PER_USER];
	unsigned char seen[USERS][ITEMS];
	int catalogue;                  /* distinct items */
};

static uint64_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

/* User u takes 2 items at random, then 10 of the items of cluster u % 5
 * (so the held-out last items follow the user's taste). */
static void make_data(struct data *d, uint64_t seed)
{
	memset(d, 0, sizeof *d);
	uint64_t s = seed;
	int used[ITEMS] = { 0 };
	for (int u = 0; u < USERS; u++) {
		for (int j = 0; j < PER_USER;) {
			int i = j >= 2 ? (int)(rnd(&s) % (ITEMS / CLUSTERS)) * CLUSTERS + u % CLUSTERS
				       : (int)(rnd(&s) % ITEMS);
			if (d->seen[u][i])
				continue;
			d->seen[u][i] = 1;
			d->user[d->n] = u;
			d->item[d->n] = i;
			d->ts[d->n] = 1000 + j * 10 + u;
			d->n++;
			j++;
			used[i] = 1;
		}
	}
	for (int i = 0; i < ITEMS; i++)
		d->catalogue += used[i];
}

static void uid(char *buf, int u)
{
	snprintf(buf, 16, "u%03d", u);
}

static void iid(char *buf, int i)
{
	snprintf(buf, 16, "i%03d", i);
}

static int item_index(const char *id)
{
	return id[0] == 'i' ? atoi(id + 1) : -1;
}

/* ---- calls ------------------------------------------------------------------- */

static int add_data(vr_channel *ch, const struct data *d, vr_status *st)
{
	static Visrec__V1__Interaction rows[USERS * PER_USER];
	static Visrec__V1__Interaction *ptrs[USERS * PER_USER];
	static char ids[USERS * PER_USER][2][16];
	for (int x = 0; x < d->n; x++) {
		visrec__v1__interaction__init(&rows[x]);
		uid(ids[x][0], d->user[x]);
		iid(ids[x][1], d->item[x]);
		rows[x].user_id = ids[x][0];
		rows[x].item_id = ids[x][1];
		rows[x].timestamp = d->ts[x];
		ptrs[x] = &rows[x];
	}
	Visrec__V1__AddInteractionsRequest req = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	req.n_interactions = (size_t)d->n;
	req.interactions = ptrs;
	Visrec__V1__AddInteractionsResponse *resp = NULL;
	int rc = unary(ch, "AddInteractions", &req.base, &visrec__v1__add_interactions_response__descriptor,
		       &resp, st);
	if (!rc && (resp->added != (uint32_t)d->n || resp->users != USERS))
		rc = -1;
	release(resp);
	return rc;
}

static int recommend(vr_channel *ch, const char *user, int k, int include_seen, char **cand,
		     size_t n_cand, Visrec__V1__RecommendResponse **out, vr_status *st)
{
	Visrec__V1__RecommendRequest req = VISREC__V1__RECOMMEND_REQUEST__INIT;
	req.user_id = (char *)user;
	req.k = k;
	req.include_seen = include_seen;
	req.candidates = cand;
	req.n_candidates = n_cand;
	*out = NULL;
	return unary(ch, "Recommend", &req.base, &visrec__v1__recommend_response__descriptor, out, st);
}

struct train_out {
	int messages, done, monotone, code;
	uint32_t last_epoch;
	uint64_t version;
	char first_state[32], last_state[32], message[256];
	double last_auc;
	/* for a run watched from another thread */
	vr_ccall *cc;
	atomic_int epochs_seen, finished;
	int64_t finished_ms;
};

static void train_req_bpr(Visrec__V1__TrainRequest *r, uint32_t epochs, uint32_t triples)
{
	visrec__v1__train_request__init(r);
	r->model = VISREC__V1__MODEL_KIND__BPR;
	r->epochs = epochs;
	r->dims = 16;
	r->triples_per_epoch = triples;
	r->seed = 7;
	r->threads = 1;
	r->patience = epochs;
}

/* Runs a Train call to its end, recording the progress stream in out. */
static void train_run(vr_channel *ch, const Visrec__V1__TrainRequest *req, struct train_out *out)
{
	vr_ccall *cc = NULL;
	vr_status st = { .code = -1 };
	out->monotone = 1;
	if (vr_ccall_start(&cc, ch, "/visrec.v1.Rank/Train", &visrec__v1__train_progress__descriptor,
			   120000, NULL)) {
		out->code = -1;
		return;
	}
	out->cc = cc;
	vr_ccall_send(cc, &req->base);
	vr_ccall_close_send(cc);
	ProtobufCMessage *m;
	while (vr_ccall_recv(cc, &m) == 0) {
		Visrec__V1__TrainProgress *p = (void *)m;
		if (!out->messages++)
			snprintf(out->first_state, sizeof out->first_state, "%s", p->state);
		snprintf(out->last_state, sizeof out->last_state, "%s", p->state);
		if (!p->done && p->epoch && p->epoch != out->last_epoch + 1)
			out->monotone = 0;
		if (!p->done && p->epoch) {
			out->last_epoch = p->epoch;
			atomic_store(&out->epochs_seen, (int)p->epoch);
		}
		out->last_auc = p->val_auc;
		if (p->done) {
			out->done = 1;
			out->version = p->model_version;
		}
		release(m);
	}
	vr_ccall_finish(cc, &st);
	out->code = st.code;
	snprintf(out->message, sizeof out->message, "%s", st.message);
	out->finished_ms = procs_now_ms();
	atomic_store(&out->finished, 1);
}

struct bg_train {
	vr_channel *ch;
	Visrec__V1__TrainRequest req;
	struct train_out out;
};

static void *train_thread(void *arg)
{
	struct bg_train *b = arg;
	train_run(b->ch, &b->req, &b->out);
	return NULL;
}

/* ---- daemons ------------------------------------------------------------------- */

/* Spawns argv0 with its fixed arguments, then extra (NULL-terminated, may
 * be NULL; later flags win), and waits for its ready line. The stderr
 * goes to tmpdir/B.stderr, B the last path component of tag. */
static int start_with(struct proc *p, const char *name, const char *tag, char **fixed,
		      const char *const *extra)
{
	char err[160];
	const char *argv[40];
	int argc = 0;
	const char *base = strrchr(tag, '/') ? strrchr(tag, '/') + 1 : tag;
	snprintf(err, sizeof err, "%s/%s.stderr", tmpdir, base);
	for (; *fixed && argc < 20; fixed++)
		argv[argc++] = *fixed;
	for (; extra && *extra && argc < 38; extra++)
		argv[argc++] = *extra;
	argv[argc] = NULL;
	if (proc_spawn(p, err, (char *const *)argv))
		return -1;
	return proc_wait_ready(p, name, 20000);
}

/* rankd on data directory tmpdir/tag-data, following featured when it is
 * not NULL, with extra flags. */
static int start_rankd_with(struct proc *p, const char *tag, const char *featured,
			    const char *const *extra)
{
	char data[128];
	snprintf(data, sizeof data, "%s/%s-data", tmpdir, tag);
	char *argv[] = { RANKD_BIN, "--listen", "127.0.0.1:0", "--data", data, "--threads", "2",
			 "--featured", (char *)(featured ? featured : "127.0.0.1:9"),
			 featured ? "--follow-featured=true" : "--follow-featured=false", NULL };
	return start_with(p, "rankd", tag, argv, extra);
}

static int start_rankd(struct proc *p, const char *tag, const char *featured)
{
	return start_rankd_with(p, tag, featured, NULL);
}

/* featured on listen (NULL: a free port); tag names its data directory. */
static int start_featured_with(struct proc *p, const char *tag, const char *listen,
			       const char *const *extra)
{
	char data[128], addr[64];
	snprintf(data, sizeof data, "%s/%s-data", tmpdir, tag);
	snprintf(addr, sizeof addr, "%s", listen ? listen : "127.0.0.1:0");
	char *argv[] = { FEATURED_BIN, "--listen", addr, "--data", data, "--threads", "2", NULL };
	return start_with(p, "featured", tag, argv, extra);
}

static int start_featured(struct proc *p, const char *tag, const char *listen)
{
	return start_featured_with(p, tag, listen, NULL);
}

/* A rankd with the data set stored and a BPR model trained on it. */
static int trained_rankd(struct proc *p, const char *tag, struct data *d, vr_channel **ch,
			 struct train_out *out)
{
	make_data(d, 42);
	if (start_rankd(p, tag, NULL))
		return -1;
	if (vr_channel_create(ch, p->addr, NULL))
		return -1;
	vr_status st;
	if (add_data(*ch, d, &st))
		return -1;
	Visrec__V1__TrainRequest req;
	train_req_bpr(&req, 8, 20000);
	train_run(*ch, &req, out);
	return out->code == GRPC_STATUS_OK && out->done ? 0 : -1;
}

/* ---- tests --------------------------------------------------------------------- */

TEST(refusals_before_training)
{
	struct proc r;
	ASSERT_OK(start_rankd(&r, "r1", NULL));
	vr_channel *ch = NULL;
	vr_channel_create(&ch, r.addr, NULL);
	vr_status st1, st2, st3, st4, st5, st6, st7, st8;
	Visrec__V1__RecommendResponse *rec = NULL;
	recommend(ch, "u001", 10, 0, NULL, 0, &rec, &st1);

	Visrec__V1__Interaction a = VISREC__V1__INTERACTION__INIT, b = VISREC__V1__INTERACTION__INIT;
	Visrec__V1__Interaction *rows[2] = { &a, &b };
	a.user_id = "u1";
	a.item_id = "i1";
	b.user_id = "u1";
	b.item_id = "";
	Visrec__V1__AddInteractionsRequest add = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	add.n_interactions = 2;
	add.interactions = rows;
	void *resp = NULL;
	unary(ch, "AddInteractions", &add.base, &visrec__v1__add_interactions_response__descriptor, &resp, &st2);
	release(resp);
	char long_id[300];
	memset(long_id, 'x', 257);
	long_id[257] = 0;
	b.item_id = long_id;
	resp = NULL;
	unary(ch, "AddInteractions", &add.base, &visrec__v1__add_interactions_response__descriptor, &resp, &st3);
	release(resp);
	/* Over the row limit: the same row 100,001 times. */
	size_t many = 100001;
	Visrec__V1__Interaction **lots = malloc(many * sizeof *lots);
	for (size_t x = 0; x < many; x++)
		lots[x] = &a;
	add.n_interactions = many;
	add.interactions = lots;
	resp = NULL;
	unary(ch, "AddInteractions", &add.base, &visrec__v1__add_interactions_response__descriptor, &resp, &st4);
	release(resp);
	free(lots);

	struct train_out t1 = { 0 }, t2 = { 0 }, t3 = { 0 };
	Visrec__V1__TrainRequest tr;
	train_req_bpr(&tr, 2, 1000);
	tr.model = VISREC__V1__MODEL_KIND__MODEL_KIND_UNSPECIFIED;
	train_run(ch, &tr, &t1);
	tr.model = VISREC__V1__MODEL_KIND__DVBPR;
	train_run(ch, &tr, &t2);
	tr.model = VISREC__V1__MODEL_KIND__BPR;
	train_run(ch, &tr, &t3); /* nothing stored yet: the bad batches added nothing */
	tr.model = VISREC__V1__MODEL_KIND__VBPR;
	struct train_out t4 = { 0 };
	train_run(ch, &tr, &t4); /* featured is not there */

	Visrec__V1__EvaluateRequest ev = VISREC__V1__EVALUATE_REQUEST__INIT;
	resp = NULL;
	unary(ch, "Evaluate", &ev.base, &visrec__v1__evaluate_response__descriptor, &resp, &st5);
	release(resp);
	Visrec__V1__ScoreRequest sc = VISREC__V1__SCORE_REQUEST__INIT;
	char *one[] = { "i1" };
	sc.user_id = "u1";
	sc.item_ids = one;
	sc.n_item_ids = 1;
	resp = NULL;
	unary(ch, "Score", &sc.base, &visrec__v1__score_response__descriptor, &resp, &st6);
	release(resp);
	Visrec__V1__RankInfoResponse *in = info(ch);
	recommend(ch, "", 10, 0, NULL, 0, &rec, &st7);
	recommend(ch, "u1", 0, 0, NULL, 0, &rec, &st8);

	vr_channel_destroy(ch);
	int status = proc_stop(&r, 10000);
	ASSERT_EQ_INT(st1.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(st1.message, "call Train");
	ASSERT_EQ_INT(st2.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_STR_EQ(st2.message, "interactions[1].item_id is empty");
	ASSERT_EQ_INT(st3.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(st3.message, "interactions[1].item_id \"");
	ASSERT_CONTAINS(st3.message, "...\" is longer than 256 bytes (257)");
	ASSERT_EQ_INT(st4.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(st4.message, "at most 100000");
	ASSERT_EQ_INT(t1.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(t1.message, "BPR or VBPR");
	ASSERT_EQ_INT(t2.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(t2.message, "AddInteractions");
	ASSERT_EQ_INT(t3.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(t3.message, "AddInteractions");
	ASSERT_EQ_INT(t4.code, GRPC_STATUS_UNAVAILABLE);
	ASSERT_CONTAINS(t4.message, "cannot fetch item vectors from featured at 127.0.0.1:9");
	ASSERT_EQ_INT(st5.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_EQ_INT(st6.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_EQ_INT(st7.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_EQ_INT(st8.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT(in != NULL);
	ASSERT_EQ_INT(in->interactions, 0);
	ASSERT_EQ_INT(in->model_version, 0);
	ASSERT_EQ_INT(in->max_k, 1000);
	release(in);
	ASSERT_EQ_INT(status, 0);
}

TEST(train_bpr_and_recommend)
{
	struct proc r;
	struct data *d = malloc(sizeof *d);
	vr_channel *ch = NULL;
	struct train_out t = { 0 };
	int ok = trained_rankd(&r, "r2", d, &ch, &t);
	if (ok) {
		proc_stop(&r, 5000);
		FAIL_("rankd did not train: %s \"%s\"", vr_status_name(t.code), t.message);
	}
	int seen_returned = 0, wrong_count = 0, bad_calls = 0, cold_warm = 0;
	char user[16];
	/* Every user: no seen item; k over the catalogue gives the unseen catalogue. */
	for (int u = 0; u < USERS; u++) {
		uid(user, u);
		Visrec__V1__RecommendResponse *rec = NULL;
		vr_status st;
		if (recommend(ch, user, 1000, 0, NULL, 0, &rec, &st)) {
			bad_calls++;
			continue;
		}
		int nseen = 0;
		for (int i = 0; i < ITEMS; i++)
			nseen += d->seen[u][i];
		if ((int)rec->n_items != d->catalogue - nseen)
			wrong_count++;
		for (size_t j = 0; j < rec->n_items; j++) {
			int i = item_index(rec->items[j]->item_id);
			if (i >= 0 && d->seen[u][i])
				seen_returned++;
			if (j && rec->items[j]->score > rec->items[j - 1]->score)
				wrong_count++;
		}
		release(rec);
	}
	/* include_seen: the whole catalogue; cold flags only on items with no training pair. */
	Visrec__V1__RecommendResponse *all = NULL, *unk = NULL, *top = NULL, *cand = NULL;
	vr_status s_all, s_unk, s_k0, s_kbig, s_cand_bad, s_cand, s_top;
	recommend(ch, "u003", 1000, 1, NULL, 0, &all, &s_all);
	for (size_t j = 0; all && j < all->n_items; j++)
		cold_warm += all->items[j]->cold;
	recommend(ch, "nobody-knows-me", 5, 0, NULL, 0, &unk, &s_unk);
	Visrec__V1__RecommendResponse *tmp = NULL;
	recommend(ch, "u003", 0, 0, NULL, 0, &tmp, &s_k0);
	recommend(ch, "u003", 1001, 0, NULL, 0, &tmp, &s_kbig);
	char *bad_cand[] = { "i000", "no-such-item" };
	recommend(ch, "u003", 5, 0, bad_cand, 2, &tmp, &s_cand_bad);
	recommend(ch, "u003", 10, 0, NULL, 0, &top, &s_top);
	/* Candidates: the top items, reversed, plus a seen one: same order back, seen dropped. */
	char *cands[4];
	int seen_item = -1;
	for (int i = 0; i < ITEMS && seen_item < 0; i++)
		if (d->seen[3][i])
			seen_item = i;
	char seen_id[16];
	iid(seen_id, seen_item);
	for (int x = 0; x < 3 && top; x++)
		cands[2 - x] = top->items[x]->item_id;
	cands[3] = seen_id;
	recommend(ch, "u003", 10, 0, cands, 4, &cand, &s_cand);

	/* Score agrees with Recommend; unknown items are NOT_FOUND by name. */
	Visrec__V1__ScoreRequest sreq = VISREC__V1__SCORE_REQUEST__INIT;
	sreq.user_id = "u003";
	sreq.item_ids = cands;
	sreq.n_item_ids = 3;
	Visrec__V1__ScoreResponse *score = NULL, *sbad = NULL;
	vr_status s_score, s_sbad;
	unary(ch, "Score", &sreq.base, &visrec__v1__score_response__descriptor, &score, &s_score);
	char *unknown_items[] = { "i001", "ghost-1", "ghost-2" };
	sreq.item_ids = unknown_items;
	unary(ch, "Score", &sreq.base, &visrec__v1__score_response__descriptor, &sbad, &s_sbad);

	/* RecommendBatch: the same lists as one by one, for every user (one
	 * GEMM over the catalogue for them all, each with its own k and seen
	 * items excluded unless include_seen) and a stranger (popularity). */
	enum { BN = USERS + 1 };
	Visrec__V1__RecommendRequest br[BN], *brp[BN];
	char busers[BN][16];
	int batch_seen = 0;
	for (int x = 0; x < BN; x++) {
		visrec__v1__recommend_request__init(&br[x]);
		if (x < USERS)
			uid(busers[x], (x * 37) % USERS); /* not in id order */
		else
			snprintf(busers[x], sizeof busers[x], "stranger");
		br[x].user_id = busers[x];
		br[x].k = 1 + (x * 7) % 40;
		br[x].include_seen = x % 4 == 3;
		brp[x] = &br[x];
	}
	Visrec__V1__RecommendBatchRequest breq = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
	breq.requests = brp;
	breq.n_requests = BN;
	Visrec__V1__RecommendBatchResponse *batch = NULL;
	vr_status s_batch;
	unary(ch, "RecommendBatch", &breq.base, &visrec__v1__recommend_batch_response__descriptor, &batch,
	      &s_batch);
	int batch_mismatch = 0;
	for (int x = 0; batch && x < BN && (size_t)x < batch->n_responses; x++) {
		Visrec__V1__RecommendResponse *one = NULL;
		vr_status s1;
		recommend(ch, busers[x], br[x].k, br[x].include_seen, NULL, 0, &one, &s1);
		Visrec__V1__RecommendResponse *b = batch->responses[x];
		if (!one || b->n_items != one->n_items || strcmp(b->fallback, one->fallback))
			batch_mismatch++;
		int u = x < USERS ? (x * 37) % USERS : -1;
		for (size_t j = 0; u >= 0 && !br[x].include_seen && j < b->n_items; j++) {
			int i = item_index(b->items[j]->item_id);
			batch_seen += i >= 0 && i < ITEMS && d->seen[u][i];
		}
		for (size_t j = 0; one && j < one->n_items && j < b->n_items; j++)
			if (fabsf(b->items[j]->score - one->items[j]->score) > 1e-4f ||
			    (strcmp(b->items[j]->item_id, one->items[j]->item_id) &&
			     (j + 1 >= one->n_items || fabsf(one->items[j]->score - one->items[j + 1]->score) > 1e-4f)))
				batch_mismatch++;
		release(one);
	}

	/* Evaluate: both protocols, both subsets. */
	Visrec__V1__EvaluateRequest ev = VISREC__V1__EVALUATE_REQUEST__INIT;
	Visrec__V1__EvaluateResponse *std = NULL, *tut = NULL;
	vr_status s_std, s_tut;
	unary(ch, "Evaluate", &ev.base, &visrec__v1__evaluate_response__descriptor, &std, &s_std);
	ev.protocol = "tutorial";
	ev.max_users = 50;
	ev.seed = 3;
	unary(ch, "Evaluate", &ev.base, &visrec__v1__evaluate_response__descriptor, &tut, &s_tut);
	Visrec__V1__RankInfoResponse *in = info(ch);

	/* An item first seen after the Train is in the catalogue at once, cold. */
	Visrec__V1__Interaction late = VISREC__V1__INTERACTION__INIT, *late_p = &late;
	late.user_id = "u000";
	late.item_id = "brand-new";
	late.timestamp = 5000;
	Visrec__V1__AddInteractionsRequest add = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	add.n_interactions = 1;
	add.interactions = &late_p;
	void *added = NULL;
	vr_status s_late_add, s_late;
	unary(ch, "AddInteractions", &add.base, &visrec__v1__add_interactions_response__descriptor, &added,
	      &s_late_add);
	release(added);
	char *late_cand[] = { "brand-new" };
	Visrec__V1__RecommendResponse *late_rec = NULL;
	recommend(ch, "u001", 3, 0, late_cand, 1, &late_rec, &s_late);

	vr_channel_destroy(ch);
	int status = proc_stop(&r, 10000);
	ASSERT_OK(s_late_add.code);
	ASSERT_OK(s_late.code);
	/* Scored by the prior (prior.h: BPR's is the warm items' mean β, γ),
	 * not by the zeros that sank cold items below every warm one. */
	ASSERT(late_rec && late_rec->n_items == 1 && late_rec->items[0]->cold &&
	       late_rec->items[0]->score != 0 && isfinite(late_rec->items[0]->score));
	release(late_rec);
	ASSERT(t.messages >= 3);
	ASSERT_STR_EQ(t.first_state, "loading");
	ASSERT(t.monotone);
	ASSERT_EQ_INT(t.last_epoch, 8);
	ASSERT_EQ_INT(t.version, 1);
	ASSERT_EQ_INT(bad_calls, 0);
	ASSERT_EQ_INT(seen_returned, 0);
	ASSERT_EQ_INT(wrong_count, 0);
	ASSERT_OK(s_all.code);
	ASSERT_EQ_INT(all->n_items, d->catalogue);
	ASSERT(cold_warm < d->catalogue / 4);
	ASSERT_OK(s_unk.code);
	ASSERT_EQ_INT(unk->n_items, 5);
	ASSERT_STR_EQ(unk->fallback, "popularity: unknown user");
	ASSERT_EQ_INT(s_k0.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_k0.message, "between 1 and 1000");
	ASSERT_EQ_INT(s_kbig.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_EQ_INT(s_cand_bad.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_cand_bad.message, "candidates[1]: unknown item \"no-such-item\"");
	ASSERT_OK(s_top.code);
	ASSERT_OK(s_cand.code);
	ASSERT_EQ_INT(cand->n_items, 3);
	for (int x = 0; x < 3; x++)
		ASSERT_STR_EQ(cand->items[x]->item_id, top->items[x]->item_id);
	ASSERT_STR_EQ(cand->fallback, "");
	ASSERT_OK(s_score.code);
	ASSERT_EQ_INT(score->n_items, 3);
	for (int x = 0; x < 3; x++)
		ASSERT_EQ_INT(score->items[x]->score == top->items[2 - x]->score, 1);
	ASSERT_EQ_INT(s_sbad.code, GRPC_STATUS_NOT_FOUND);
	ASSERT_CONTAINS(s_sbad.message, "2 unknown items: \"ghost-1\", \"ghost-2\"");
	ASSERT_OK(s_batch.code);
	ASSERT_EQ_INT(batch->n_responses, BN);
	ASSERT_EQ_INT(batch_mismatch, 0);
	ASSERT_EQ_INT(batch_seen, 0);
	ASSERT_CONTAINS(batch->responses[BN - 1]->fallback, "popularity");
	ASSERT_OK(s_std.code);
	ASSERT_STR_EQ(std->protocol, "standard");
	ASSERT_EQ_INT(std->n_results, 4);
	ASSERT_STR_EQ(std->results[0]->subset, "all");
	ASSERT_STR_EQ(std->results[1]->subset, "cold");
	ASSERT_STR_EQ(std->results[2]->subset, "new");
	ASSERT_STR_EQ(std->results[3]->subset, "warm");
	/* "warm": every user whose test item is not cold, among the warm items. */
	ASSERT_EQ_INT(std->results[3]->users + std->results[1]->users, std->results[0]->users);
	ASSERT_STR_EQ(std->popularity[3]->subset, "warm");
	/* "new" is the cold users again, among the cold items only, where BPR
	 * (no image features) gives every cold item the same prior: it knows
	 * no more than popularity there (all tie: 0.5, or 1 with one item). */
	ASSERT_EQ_INT(std->results[2]->users, std->results[1]->users);
	ASSERT_MSG(std->results[2]->users > 0, "no cold test users in this data");
	ASSERT_EQ_INT(std->n_popularity, 4);
	ASSERT_NEAR(std->results[2]->auc, std->popularity[2]->auc, 1e-9);
	ASSERT(std->results[2]->auc >= 0.5);
	ASSERT_EQ_INT(std->results[0]->users, USERS);
	ASSERT_EQ_INT(std->results[0]->n_at_k, 2);
	ASSERT_MSG(std->results[0]->auc > 0.6, "standard AUC %.4f", std->results[0]->auc);
	ASSERT_OK(s_tut.code);
	ASSERT_EQ_INT(tut->results[0]->users, 50);
	ASSERT(in != NULL);
	ASSERT_EQ_INT(in->model, VISREC__V1__MODEL_KIND__BPR);
	ASSERT_EQ_INT(in->model_version, 1);
	ASSERT_EQ_INT(in->users, USERS);
	ASSERT_EQ_INT(in->items, d->catalogue);
	ASSERT_EQ_INT(in->interactions, d->n);
	ASSERT_EQ_INT(in->training, 0);
	ASSERT_EQ_INT(status, 0);
	release(all);
	release(unk);
	release(top);
	release(cand);
	release(score);
	release(sbad);
	release(batch);
	release(std);
	release(tut);
	release(in);
	free(d);
}

TEST(restart_serves_the_same_topk)
{
	struct proc r;
	struct data *d = malloc(sizeof *d);
	vr_channel *ch = NULL;
	struct train_out t = { 0 };
	int ok = trained_rankd(&r, "r3", d, &ch, &t);
	if (ok) {
		proc_stop(&r, 5000);
		FAIL_("rankd did not train: %s \"%s\"", vr_status_name(t.code), t.message);
	}
	enum { N = 12 };
	Visrec__V1__RecommendResponse *before[N], *after[N];
	char user[16];
	for (int u = 0; u < N; u++) {
		vr_status st;
		uid(user, u * 7);
		recommend(ch, user, 20, 0, NULL, 0, &before[u], &st);
	}
	vr_channel_destroy(ch);
	int s1 = proc_stop(&r, 10000);
	ASSERT_OK(start_rankd(&r, "r3", NULL));
	vr_channel_create(&ch, r.addr, NULL);
	for (int u = 0; u < N; u++) {
		vr_status st;
		uid(user, u * 7);
		recommend(ch, user, 20, 0, NULL, 0, &after[u], &st);
	}
	Visrec__V1__RankInfoResponse *in = info(ch);
	vr_channel_destroy(ch);
	int s2 = proc_stop(&r, 10000);
	ASSERT_EQ_INT(s1, 0);
	ASSERT_EQ_INT(s2, 0);
	for (int u = 0; u < N; u++) {
		ASSERT(before[u] && after[u]);
		ASSERT_EQ_INT(before[u]->n_items, 20);
		ASSERT_EQ_INT(after[u]->n_items, 20);
		ASSERT_EQ_INT(after[u]->model_version, before[u]->model_version);
		for (size_t j = 0; j < 20; j++) {
			ASSERT_STR_EQ(after[u]->items[j]->item_id, before[u]->items[j]->item_id);
			ASSERT_EQ_INT(after[u]->items[j]->score == before[u]->items[j]->score, 1);
		}
		release(before[u]);
		release(after[u]);
	}
	ASSERT(in && in->model_version == 1 && in->model == VISREC__V1__MODEL_KIND__BPR);
	release(in);
	free(d);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

TEST(serving_during_training_and_cancel)
{
	struct proc r;
	struct data *d = malloc(sizeof *d);
	vr_channel *ch = NULL;
	struct train_out t = { 0 };
	int ok = trained_rankd(&r, "r4", d, &ch, &t);
	if (ok) {
		proc_stop(&r, 5000);
		FAIL_("rankd did not train: %s \"%s\"", vr_status_name(t.code), t.message);
	}
	/* A long run on both cores (2,000 epochs of 400,000 triples), cancelled below. */
	struct bg_train *bg = calloc(1, sizeof *bg);
	bg->ch = ch;
	train_req_bpr(&bg->req, 2000, 400000);
	bg->req.threads = 2;
	pthread_t tid;
	pthread_create(&tid, NULL, train_thread, bg);
	int64_t end = procs_now_ms() + 20000;
	while (atomic_load(&bg->out.epochs_seen) < 1 && !atomic_load(&bg->out.finished) &&
	       procs_now_ms() < end)
		usleep(10000);
	int running = atomic_load(&bg->out.epochs_seen) >= 1 && !atomic_load(&bg->out.finished);

	struct train_out second = { 0 };
	Visrec__V1__TrainRequest req2;
	train_req_bpr(&req2, 2, 1000);
	train_run(ch, &req2, &second);
	Visrec__V1__RankInfoResponse *during = info(ch);

	enum { CALLS = 300 };
	int64_t lat[CALLS];
	int errors = 0;
	char user[16];
	for (int x = 0; x < CALLS; x++) {
		Visrec__V1__RecommendResponse *rec = NULL;
		vr_status st;
		uid(user, x % USERS);
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		if (recommend(ch, user, 20, 0, NULL, 0, &rec, &st) || rec->n_items != 20)
			errors++;
		clock_gettime(CLOCK_MONOTONIC, &b);
		lat[x] = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
		release(rec);
	}
	qsort(lat, CALLS, sizeof lat[0], cmp_i64);
	double p50 = lat[CALLS / 2] / 1e6, p99 = lat[CALLS * 99 / 100] / 1e6;
	int still_running = !atomic_load(&bg->out.finished);

	int64_t t0 = procs_now_ms();
	if (bg->out.cc)
		vr_ccall_cancel(bg->out.cc);
	int idle = 0;
	int64_t idle_ms = -1;
	while (procs_now_ms() - t0 < 10000) {
		Visrec__V1__RankInfoResponse *in = info(ch);
		idle = in && !in->training;
		release(in);
		if (idle) {
			idle_ms = procs_now_ms() - t0;
			break;
		}
		usleep(5000);
	}
	pthread_join(tid, NULL);
	Visrec__V1__RankInfoResponse *after = info(ch);
	vr_channel_destroy(ch);
	int status = proc_stop(&r, 10000);
	fprintf(stderr, "  Recommend during Train: p50 %.2f ms, p99 %.2f ms; idle %lld ms after cancel\n",
		p50, p99, (long long)idle_ms);
	ASSERT_MSG(running, "the long Train did not reach its first epoch");
	ASSERT_EQ_INT(second.code, GRPC_STATUS_FAILED_PRECONDITION);
	ASSERT_CONTAINS(second.message, "a training run is in progress (model BPR, epoch ");
	ASSERT_CONTAINS(second.message, "wait for it or cancel it");
	ASSERT(during && during->training);
	ASSERT_EQ_INT(errors, 0);
	ASSERT_MSG(still_running, "the Train ended before the latency run did: make it longer");
	ASSERT_MSG(p99 < 200, "p99 %.2f ms", p99);
	ASSERT_EQ_INT(bg->out.code, GRPC_STATUS_CANCELLED);
	ASSERT_MSG(idle && idle_ms < 2000, "training still on %lld ms after the cancel", (long long)idle_ms);
	ASSERT(after && after->model_version == 1 && !after->training);
	ASSERT_EQ_INT(status, 0);
	release(during);
	release(after);
	free(bg);
	free(d);
}

/* ---- interactions added after the last Train ---------------------------------- */

static int add_one(vr_channel *ch, const char *user, const char *item, int64_t ts)
{
	Visrec__V1__Interaction in = VISREC__V1__INTERACTION__INIT, *p = &in;
	in.user_id = (char *)user;
	in.item_id = (char *)item;
	in.timestamp = ts;
	Visrec__V1__AddInteractionsRequest req = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	req.n_interactions = 1;
	req.interactions = &p;
	Visrec__V1__AddInteractionsResponse *resp = NULL;
	vr_status st;
	int rc = unary(ch, "AddInteractions", &req.base, &visrec__v1__add_interactions_response__descriptor,
		       &resp, &st);
	release(resp);
	return rc;
}

/* Whether Recommend(user, k 1000) returns item: 1, 0, or -1 when the call
 * fails. fallback (may be NULL) gets the response's fallback reason. */
static int recommends(vr_channel *ch, const char *user, int include_seen, const char *item,
		      char *fallback)
{
	Visrec__V1__RecommendResponse *rec = NULL;
	vr_status st;
	if (recommend(ch, user, 1000, include_seen, NULL, 0, &rec, &st))
		return -1;
	int found = 0;
	for (size_t j = 0; j < rec->n_items; j++)
		found |= !strcmp(rec->items[j]->item_id, item);
	if (fallback)
		snprintf(fallback, 128, "%s", rec->fallback);
	release(rec);
	return found;
}

/* The first item Recommend gives user (k 5) into item (16 bytes). */
static int first_item(vr_channel *ch, const char *user, char *item)
{
	Visrec__V1__RecommendResponse *rec = NULL;
	vr_status st;
	int rc = recommend(ch, user, 5, 0, NULL, 0, &rec, &st);
	if (!rc && rec->n_items)
		snprintf(item, 16, "%s", rec->items[0]->item_id);
	rc = rc || !rec->n_items ? -1 : 0;
	release(rec);
	return rc;
}

/* Whether each of RecommendBatch's responses (k 1000) holds item[x]. */
static int batch_recommends(vr_channel *ch, const char **users, const char **items, int n, int *found)
{
	Visrec__V1__RecommendRequest r[4], *rp[4];
	for (int x = 0; x < n; x++) {
		visrec__v1__recommend_request__init(&r[x]);
		r[x].user_id = (char *)users[x];
		r[x].k = 1000;
		rp[x] = &r[x];
	}
	Visrec__V1__RecommendBatchRequest req = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
	req.requests = rp;
	req.n_requests = (size_t)n;
	Visrec__V1__RecommendBatchResponse *resp = NULL;
	vr_status st;
	if (unary(ch, "RecommendBatch", &req.base, &visrec__v1__recommend_batch_response__descriptor,
		  &resp, &st) || resp->n_responses != (size_t)n) {
		release(resp);
		return -1;
	}
	for (int x = 0; x < n; x++) {
		found[x] = 0;
		for (size_t j = 0; j < resp->responses[x]->n_items; j++)
			found[x] |= !strcmp(resp->responses[x]->items[j]->item_id, items[x]);
	}
	release(resp);
	return 0;
}

/* A user's top item, consumed after the Train, is not recommended again at
 * once (Recommend and RecommendBatch), unless include_seen; a user the
 * model does not know gets the popularity fallback without what they took. */
TEST(added_interactions_excluded_at_once)
{
	struct proc r;
	struct data *d = malloc(sizeof *d);
	vr_channel *ch = NULL;
	struct train_out t = { 0 };
	if (trained_rankd(&r, "r6", d, &ch, &t)) {
		proc_stop(&r, 5000);
		FAIL_("rankd did not train: %s \"%s\"", vr_status_name(t.code), t.message);
	}
	char top[16] = "", other_top[16] = "", popular[16] = "", fb_before[128] = "", fb_after[128] = "";
	int before = -1, batch_before[3] = { -1, -1, -1 }, batch_after[3] = { -1, -1, -1 };
	int gone = -1, back = -1, other = -1, pop_before = -1, pop_gone = -1;
	first_item(ch, "u005", top);
	first_item(ch, "u006", other_top);
	first_item(ch, "newcomer", popular);
	before = recommends(ch, "u005", 0, top, NULL);
	pop_before = recommends(ch, "newcomer", 0, popular, fb_before);
	const char *bu[3] = { "u005", "u006", "newcomer" }, *bi[3] = { top, other_top, popular };
	batch_recommends(ch, bu, bi, 3, batch_before);
	int add1 = add_one(ch, "u005", top, 9000), add2 = add_one(ch, "newcomer", popular, 9000);
	gone = recommends(ch, "u005", 0, top, NULL);
	back = recommends(ch, "u005", 1, top, NULL);
	other = recommends(ch, "u006", 0, other_top, NULL);
	pop_gone = recommends(ch, "newcomer", 0, popular, fb_after);
	batch_recommends(ch, bu, bi, 3, batch_after);
	vr_channel_destroy(ch);
	int status = proc_stop(&r, 10000);
	free(d);
	ASSERT(top[0] && other_top[0] && popular[0]);
	ASSERT_EQ_INT(before, 1);
	ASSERT_EQ_INT(pop_before, 1);
	ASSERT_STR_EQ(fb_before, "popularity: unknown user");
	for (int x = 0; x < 3; x++)
		ASSERT_EQ_INT(batch_before[x], 1);
	ASSERT_OK(add1);
	ASSERT_OK(add2);
	ASSERT_EQ_INT(gone, 0);
	ASSERT_EQ_INT(back, 1);
	ASSERT_EQ_INT(other, 1);
	ASSERT_EQ_INT(pop_gone, 0);
	ASSERT_CONTAINS(fb_after, "arrived after the last Train");
	ASSERT_EQ_INT(batch_after[0], 0);
	ASSERT_EQ_INT(batch_after[1], 1);
	ASSERT_EQ_INT(batch_after[2], 0);
	ASSERT_EQ_INT(status, 0);
}

/* An interaction added while a Train runs, after it took its copy of the
 * interactions, is still excluded once that Train's model is served; one
 * added before it is excluded by the new model's own seen lists. */
TEST(added_during_train_stay_excluded)
{
	struct proc r;
	struct data *d = malloc(sizeof *d);
	vr_channel *ch = NULL;
	struct train_out t = { 0 };
	if (trained_rankd(&r, "r7", d, &ch, &t)) {
		proc_stop(&r, 5000);
		FAIL_("rankd did not train: %s \"%s\"", vr_status_name(t.code), t.message);
	}
	char early[16] = "", during[16] = "";
	first_item(ch, "u010", early);
	first_item(ch, "u011", during);
	int add1 = add_one(ch, "u010", early, 9000);
	struct bg_train *bg = calloc(1, sizeof *bg);
	bg->ch = ch;
	train_req_bpr(&bg->req, 40, 100000);
	pthread_t tid;
	pthread_create(&tid, NULL, train_thread, bg);
	int64_t end = procs_now_ms() + 20000;
	while (atomic_load(&bg->out.epochs_seen) < 1 && !atomic_load(&bg->out.finished) &&
	       procs_now_ms() < end)
		usleep(2000);
	int add2 = add_one(ch, "u011", during, 9001);
	Visrec__V1__RankInfoResponse *mid = info(ch);
	int excluded_mid = recommends(ch, "u011", 0, during, NULL);
	pthread_join(tid, NULL);
	Visrec__V1__RankInfoResponse *after = info(ch);
	int early_after = recommends(ch, "u010", 0, early, NULL);
	int during_after = recommends(ch, "u011", 0, during, NULL);
	int during_seen = recommends(ch, "u011", 1, during, NULL);
	vr_channel_destroy(ch);
	int status = proc_stop(&r, 10000);
	ASSERT(early[0] && during[0]);
	ASSERT_OK(add1);
	ASSERT_OK(add2);
	/* The add came after the run's first epoch and before its swap. */
	ASSERT(mid && mid->training && mid->model_version == 1);
	ASSERT_EQ_INT(excluded_mid, 0);
	ASSERT_MSG(bg->out.code == GRPC_STATUS_OK && bg->out.done, "Train: %s \"%s\"",
		   vr_status_name(bg->out.code), bg->out.message);
	ASSERT(after && after->model_version == 2);
	ASSERT_EQ_INT(early_after, 0);
	ASSERT_EQ_INT(during_after, 0);
	ASSERT_EQ_INT(during_seen, 1);
	ASSERT_EQ_INT(status, 0);
	release(mid);
	release(after);
	free(bg);
	free(d);
}

/* Interactions added after the last Train stay excluded when rankd restarts
 * without a Train: after SIGTERM and after SIGKILL. */
TEST(added_interactions_excluded_after_restart)
{
	struct proc r;
	struct data *d = malloc(sizeof *d);
	vr_channel *ch = NULL;
	struct train_out t = { 0 };
	if (trained_rankd(&r, "r8", d, &ch, &t)) {
		proc_stop(&r, 5000);
		FAIL_("rankd did not train: %s \"%s\"", vr_status_name(t.code), t.message);
	}
	char a[16] = "", b[16] = "", popular[16] = "";
	first_item(ch, "u020", a);
	first_item(ch, "newcomer", popular);
	int add1 = add_one(ch, "u020", a, 9000), add2 = add_one(ch, "newcomer", popular, 9000);
	vr_channel_destroy(ch);
	int s1 = proc_stop(&r, 10000);
	ASSERT_OK(start_rankd(&r, "r8", NULL));
	vr_channel_create(&ch, r.addr, NULL);
	int a_term = recommends(ch, "u020", 0, a, NULL);
	int pop_term = recommends(ch, "newcomer", 0, popular, NULL);
	first_item(ch, "u021", b);
	int add3 = add_one(ch, "u021", b, 9000);
	vr_channel_destroy(ch);
	kill(r.pid, SIGKILL);
	waitpid(r.pid, NULL, 0);
	r.pid = -1;
	proc_stop(&r, 0);
	ASSERT_OK(start_rankd(&r, "r8", NULL));
	vr_channel_create(&ch, r.addr, NULL);
	int a_kill = recommends(ch, "u020", 0, a, NULL);
	int b_kill = recommends(ch, "u021", 0, b, NULL);
	int b_seen = recommends(ch, "u021", 1, b, NULL);
	int pop_kill = recommends(ch, "newcomer", 0, popular, NULL);
	vr_channel_destroy(ch);
	int s2 = proc_stop(&r, 10000);
	free(d);
	ASSERT(a[0] && b[0] && popular[0]);
	ASSERT_OK(add1);
	ASSERT_OK(add2);
	ASSERT_OK(add3);
	ASSERT_EQ_INT(s1, 0);
	ASSERT_EQ_INT(a_term, 0);
	ASSERT_EQ_INT(pop_term, 0);
	ASSERT_EQ_INT(a_kill, 0);
	ASSERT_EQ_INT(b_kill, 0);
	ASSERT_EQ_INT(b_seen, 1);
	ASSERT_EQ_INT(pop_kill, 0);
	ASSERT_EQ_INT(s2, 0);
}

/* ---- with featured ----------------------------------------------------------------- */

#define VITEMS 40 /* items with images; the last 10 have no interactions */
#define VUSERS 30

/* A 48×48 JPEG whose colour and stripes follow the item's group (i % 4). */
static int item_jpeg(int i, uint8_t **jpeg, size_t *len)
{
	enum { S = 48 };
	static const uint8_t tint[4][3] = { { 220, 40, 40 }, { 40, 200, 60 }, { 40, 60, 220 }, { 230, 220, 40 } };
	uint8_t px[S * S * 3];
	for (int y = 0; y < S; y++)
		for (int x = 0; x < S; x++)
			for (int c = 0; c < 3; c++) {
				int stripe = ((x + y * (i % 4)) / (4 + i % 4)) % 2;
				px[(y * S + x) * 3 + c] = (uint8_t)(stripe ? tint[i % 4][c] : (tint[i % 4][c] / 3 + (i * 7) % 40));
			}
	return vr_jpeg_encode(px, S, S, VR_PIX_RGB, VR_SUBSAMP_444, 90, jpeg, len);
}

static void vid(char *buf, int i)
{
	snprintf(buf, 16, "v%03d", i);
}

/* PutItems of items [from, to) (ids v%03d) or one item named id; returns the last seq. */
static int put_items(vr_channel *ch, int from, int to, const char *id, uint64_t *seq, vr_status *st)
{
	vr_ccall *cc = NULL;
	int rc = vr_ccall_start(&cc, ch, "/visrec.v1.Featured/PutItems",
				&visrec__v1__put_items_response__descriptor, 60000, NULL);
	if (rc)
		return rc;
	for (int i = from; i < to && !rc; i++) {
		Visrec__V1__PutItemsRequest req = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
		char name[16];
		vid(name, i);
		uint8_t *jpeg;
		size_t len;
		if (item_jpeg(i, &jpeg, &len)) {
			rc = -1;
			break;
		}
		req.item_id = id ? (char *)id : name;
		req.image.data = jpeg;
		req.image.len = len;
		rc = vr_ccall_send(cc, &req.base);
		vr_jpeg_free(jpeg);
	}
	vr_ccall_close_send(cc);
	ProtobufCMessage *m = NULL;
	if (!rc)
		rc = vr_ccall_recv(cc, &m);
	int frc = vr_ccall_finish(cc, st);
	if (!rc && !frc) {
		Visrec__V1__PutItemsResponse *resp = (void *)m;
		if (resp->accepted != (uint32_t)(to - from) || !resp->n_items)
			rc = -1;
		else
			*seq = resp->items[resp->n_items - 1]->seq;
	}
	release(m);
	return rc ? rc : frc;
}

/* featured (data tag) holding the VITEMS images of put_items, with a
 * channel to it in *fch. 0, or -1 with the reason in why (featured then
 * stopped). */
static int featured_with_images(struct proc *f, const char *tag, vr_channel **fch, char *why,
				size_t cap)
{
	uint64_t seq = 0;
	vr_status st;
	if (start_featured(f, tag, NULL)) {
		snprintf(why, cap, "featured did not start");
		return -1;
	}
	vr_channel_create(fch, f->addr, NULL);
	int put = put_items(*fch, 0, VITEMS, NULL, &seq, &st);
	if (put) {
		vr_channel_destroy(*fch);
		*fch = NULL;
		proc_stop(f, 5000);
		snprintf(why, cap, "PutItems failed (rc %d): %s \"%.200s\"", put, vr_status_name(st.code),
			 st.message);
		return -1;
	}
	return 0;
}

/* Users of group g take 6 of the 30 warm items of group g (the items of
 * put_items); seen marks them. */
static int add_visual_data(vr_channel *ch, unsigned char seen[VUSERS][VITEMS])
{
	static Visrec__V1__Interaction rows[VUSERS * 6], *ptrs[VUSERS * 6];
	static char ids[VUSERS * 6][2][16];
	int n = 0;
	uint64_t rs = 5;
	for (int u = 0; u < VUSERS; u++)
		for (int j = 0; j < 6;) {
			int i = (int)(rnd(&rs) % 7) * 4 + u % 4;
			if (i >= 30 || seen[u][i])
				continue;
			seen[u][i] = 1;
			visrec__v1__interaction__init(&rows[n]);
			uid(ids[n][0], u);
			vid(ids[n][1], i);
			rows[n].user_id = ids[n][0];
			rows[n].item_id = ids[n][1];
			rows[n].timestamp = 100 + j;
			ptrs[n] = &rows[n];
			n++;
			j++;
		}
	Visrec__V1__AddInteractionsRequest add = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	add.n_interactions = (size_t)n;
	add.interactions = ptrs;
	void *resp = NULL;
	vr_status st;
	int rc = unary(ch, "AddInteractions", &add.base, &visrec__v1__add_interactions_response__descriptor,
		       &resp, &st);
	release(resp);
	return rc;
}

/* Waits up to ms for rankd to have applied featured's change seq; the
 * last change it applied. */
static uint64_t feed_reaches(vr_channel *ch, uint64_t seq, int ms)
{
	uint64_t applied = 0;
	for (int64_t end = procs_now_ms() + ms; procs_now_ms() < end; usleep(20000)) {
		Visrec__V1__RankInfoResponse *x = info(ch);
		applied = x ? x->featured_seq : 0;
		release(x);
		if (applied >= seq)
			break;
	}
	return applied;
}

/* A short VBPR run on featured's vectors. */
static void train_vbpr(vr_channel *ch, struct train_out *t)
{
	Visrec__V1__TrainRequest tr = VISREC__V1__TRAIN_REQUEST__INIT;
	tr.model = VISREC__V1__MODEL_KIND__VBPR;
	tr.epochs = 3;
	tr.dims = 8;
	tr.visual_dims = 8;
	tr.triples_per_epoch = 4096;
	tr.batch_size = 512;
	tr.threads = 1;
	tr.seed = 3;
	train_run(ch, &tr, t);
}

TEST(vbpr_with_featured_ranks_new_items_cold)
{
	struct proc f, r;
	vr_channel *fch = NULL, *ch = NULL;
	uint64_t fresh_seq = 0;
	vr_status st;
	char why[320];
	if (featured_with_images(&f, "f5", &fch, why, sizeof why))
		FAIL_("%s", why);
	ASSERT_OK(start_rankd(&r, "r5", f.addr));
	vr_channel_create(&ch, r.addr, NULL);
	unsigned char seen[VUSERS][VITEMS] = { { 0 } };
	struct train_out t = { 0 };
	int added = add_visual_data(ch, seen);
	train_vbpr(ch, &t);
	Visrec__V1__RankInfoResponse *in1 = info(ch);
	Visrec__V1__RecommendResponse *full = NULL;
	vr_status s_full;
	recommend(ch, "u000", 1000, 0, NULL, 0, &full, &s_full);
	int cold_listed = 0, seen_listed = 0;
	for (size_t j = 0; full && j < full->n_items; j++) {
		int i = atoi(full->items[j]->item_id + 1);
		cold_listed += i >= 30 && full->items[j]->cold;
		seen_listed += i < VITEMS && seen[0][i];
	}

	/* A new image: rankable at once, cold, without retraining. */
	int put2 = put_items(fch, 7, 8, "fresh-1", &fresh_seq, &st);
	uint64_t applied = put2 ? 0 : feed_reaches(ch, fresh_seq, 15000);
	char *cand[] = { "fresh-1", "v001" };
	Visrec__V1__RecommendResponse *with_new = NULL, *full2 = NULL;
	vr_status s_new, s_full2;
	recommend(ch, "u000", 5, 0, cand, 2, &with_new, &s_new);
	recommend(ch, "u000", 1000, 0, NULL, 0, &full2, &s_full2);
	int fresh_in_full = 0;
	for (size_t j = 0; full2 && j < full2->n_items; j++)
		fresh_in_full += !strcmp(full2->items[j]->item_id, "fresh-1") && full2->items[j]->cold;
	Visrec__V1__RankInfoResponse *in2 = info(ch);

	/* featured restarts on its address: the follower reconnects and goes on. */
	char faddr[64];
	snprintf(faddr, sizeof faddr, "%s", f.addr);
	vr_channel_destroy(fch);
	int s_f1 = proc_stop(&f, 10000);
	int restarted = start_featured(&f, "f5", faddr);
	vr_channel_create(&fch, f.addr, NULL);
	uint64_t fresh2_seq = 0;
	int put3 = restarted ? -1 : put_items(fch, 9, 10, "fresh-2", &fresh2_seq, &st);
	uint64_t applied2 = put3 ? 0 : feed_reaches(ch, fresh2_seq, 15000);
	char *cand2[] = { "fresh-2" };
	Visrec__V1__RecommendResponse *with_new2 = NULL;
	vr_status s_new2;
	recommend(ch, "u000", 5, 0, cand2, 1, &with_new2, &s_new2);
	vr_channel_destroy(ch);
	int s_r1 = proc_stop(&r, 10000);

	/* Restart with featured gone: the snapshot (new item included) serves alone. */
	vr_channel_destroy(fch);
	int s_f = proc_stop(&f, 10000);
	ASSERT_OK(start_rankd(&r, "r5", f.addr));
	vr_channel_create(&ch, r.addr, NULL);
	Visrec__V1__RecommendResponse *full3 = NULL;
	vr_status s_full3;
	recommend(ch, "u000", 1000, 0, NULL, 0, &full3, &s_full3);
	vr_channel_destroy(ch);
	int s_r2 = proc_stop(&r, 10000);

	ASSERT_OK(added);
	ASSERT_MSG(t.code == GRPC_STATUS_OK && t.done, "Train: %s \"%s\"", vr_status_name(t.code), t.message);
	ASSERT(in1 && in1->model == VISREC__V1__MODEL_KIND__VBPR && in1->feature_dims > 0);
	ASSERT_EQ_INT(in1->items, VITEMS);
	ASSERT_OK(s_full.code);
	ASSERT_EQ_INT(full->n_items, VITEMS - 6);
	ASSERT_EQ_INT(seen_listed, 0);
	ASSERT_EQ_INT(cold_listed, 10);
	ASSERT_OK(put2);
	ASSERT_MSG(applied >= fresh_seq, "rankd applied featured's feed to seq %llu, the new item is %llu",
		   (unsigned long long)applied, (unsigned long long)fresh_seq);
	ASSERT_OK(s_new.code);
	ASSERT_EQ_INT(with_new->n_items, 2);
	int found = 0;
	for (size_t j = 0; j < with_new->n_items; j++)
		if (!strcmp(with_new->items[j]->item_id, "fresh-1")) {
			found = 1;
			ASSERT(with_new->items[j]->cold);
			ASSERT(isfinite(with_new->items[j]->score) && with_new->items[j]->score != 0);
		}
	ASSERT(found);
	ASSERT_EQ_INT(fresh_in_full, 1);
	ASSERT_EQ_INT(full2->n_items, VITEMS - 6 + 1);
	ASSERT(in2 && in2->items == VITEMS + 1 && in2->featured_seq >= fresh_seq);
	ASSERT_EQ_INT(s_f1, 0);
	ASSERT_OK(restarted);
	ASSERT_OK(put3);
	ASSERT_MSG(applied2 >= fresh2_seq, "after featured's restart rankd applied its feed to seq %llu, "
		   "the new item is %llu", (unsigned long long)applied2, (unsigned long long)fresh2_seq);
	ASSERT_OK(s_new2.code);
	ASSERT_EQ_INT(with_new2->n_items, 1);
	ASSERT(with_new2->items[0]->cold);
	ASSERT_EQ_INT(s_r1, 0);
	ASSERT_EQ_INT(s_f, 0);
	/* After the restart: the same ranking, plus fresh-2 (one more unseen item). */
	ASSERT_OK(s_full3.code);
	ASSERT_EQ_INT(full3->n_items, full2->n_items + 1);
	for (size_t j = 0, x = 0; j < full3->n_items; j++) {
		if (!strcmp(full3->items[j]->item_id, "fresh-2"))
			continue;
		ASSERT_STR_EQ(full3->items[j]->item_id, full2->items[x]->item_id);
		ASSERT_EQ_INT(full3->items[j]->score == full2->items[x]->score, 1);
		x++;
	}
	ASSERT_EQ_INT(s_r2, 0);
	release(in1);
	release(in2);
	release(full);
	release(full2);
	release(full3);
	release(with_new);
	release(with_new2);
}

/* ---- the top-k cache ------------------------------------------------------------ */

/* Every cached Recommend (k 10, the catalogue) must equal the same
 * Recommend over a candidate list of the whole catalogue, which never uses
 * the cache and scores with the same kernel: items, order and score bits.
 * Each user is asked twice (a fill, then a hit). ids: the catalogue.
 * Returns the users whose answers differ; -1 when a call fails. */
static int cache_mismatches(vr_channel *ch, char **ids, size_t n_ids)
{
	int bad = 0;
	for (int u = 0; u < VUSERS; u++) {
		char user[16];
		uid(user, u);
		for (int rep = 0; rep < 2; rep++) {
			Visrec__V1__RecommendResponse *a = NULL, *b = NULL;
			vr_status sa, sb;
			int ra = recommend(ch, user, 10, 0, NULL, 0, &a, &sa);
			int rb = recommend(ch, user, 10, 0, ids, n_ids, &b, &sb);
			if (ra || rb) {
				release(a);
				release(b);
				return -1;
			}
			int same = a->n_items == b->n_items && a->model_version == b->model_version;
			for (size_t j = 0; same && j < a->n_items; j++)
				same = !strcmp(a->items[j]->item_id, b->items[j]->item_id) &&
				       !memcmp(&a->items[j]->score, &b->items[j]->score, sizeof(float));
			bad += !same;
			release(a);
			release(b);
		}
	}
	return bad;
}

/* The cache never answers what the scan would not: across Train,
 * AddInteractions (an item at the top of a user's cached list), a cold
 * item arriving from featured's change feed (merged into cached lists),
 * and a second Train, after which the background refresh has refilled
 * every cached user's list. */
TEST(topk_cache_equals_the_scan_across_changes)
{
	struct proc f, r;
	vr_channel *fch = NULL, *ch = NULL;
	uint64_t fresh_seq = 0;
	vr_status st;
	char why[320];
	if (featured_with_images(&f, "f9", &fch, why, sizeof why))
		FAIL_("%s", why);
	static const char *const cache_on[] = { "--topk-cache-mb", "8", NULL };
	ASSERT_OK(start_rankd_with(&r, "r9", f.addr, cache_on));
	vr_channel_create(&ch, r.addr, NULL);
	static char names[VITEMS + 1][16];
	char *ids[VITEMS + 1];
	for (int i = 0; i < VITEMS; i++) {
		vid(names[i], i);
		ids[i] = names[i];
	}
	unsigned char seen[VUSERS][VITEMS] = { { 0 } };
	struct train_out t1 = { 0 }, t2 = { 0 };
	int added = add_visual_data(ch, seen);
	train_vbpr(ch, &t1);
	int after_train = cache_mismatches(ch, ids, VITEMS);

	/* u000 takes the item at the top of its cached list. */
	Visrec__V1__RecommendResponse *top = NULL, *top2 = NULL;
	vr_status s_top, s_top2;
	recommend(ch, "u000", 10, 0, NULL, 0, &top, &s_top);
	char taken[16] = "";
	if (top && top->n_items)
		snprintf(taken, sizeof taken, "%s", top->items[0]->item_id);
	int add_rc = add_one(ch, "u000", taken, 10000);
	recommend(ch, "u000", 10, 0, NULL, 0, &top2, &s_top2);
	int still_there = 0;
	for (size_t j = 0; top2 && j < top2->n_items; j++)
		still_there += !strcmp(top2->items[j]->item_id, taken);
	int after_add = cache_mismatches(ch, ids, VITEMS);

	/* A cold item from featured: merged into the cached lists. */
	Visrec__V1__RankInfoResponse *in1 = info(ch);
	int put2 = put_items(fch, 3, 4, "fresh-c", &fresh_seq, &st);
	uint64_t applied = put2 ? 0 : feed_reaches(ch, fresh_seq, 15000);
	snprintf(names[VITEMS], sizeof names[VITEMS], "fresh-c");
	ids[VITEMS] = names[VITEMS];
	int after_cold = cache_mismatches(ch, ids, VITEMS + 1);
	Visrec__V1__RankInfoResponse *in2 = info(ch);

	/* After a Train the refresh refills the cached users' lists in the
	 * background: wait for them, then every call hits. */
	train_vbpr(ch, &t2);
	uint64_t entries = 0, hits_before = 0;
	for (int64_t end = procs_now_ms() + 15000; procs_now_ms() < end && entries < VUSERS; usleep(20000)) {
		Visrec__V1__RankInfoResponse *x = info(ch);
		entries = x && x->topk_cache ? x->topk_cache->entries : 0;
		hits_before = x && x->topk_cache ? x->topk_cache->hits : 0;
		release(x);
	}
	int after_train2 = cache_mismatches(ch, ids, VITEMS + 1);
	Visrec__V1__RankInfoResponse *in3 = info(ch);
	vr_channel_destroy(ch);
	vr_channel_destroy(fch);
	int s_r = proc_stop(&r, 10000), s_f = proc_stop(&f, 10000);

	ASSERT_OK(added);
	ASSERT_MSG(t1.code == GRPC_STATUS_OK && t1.done, "Train: %s \"%s\"", vr_status_name(t1.code), t1.message);
	ASSERT_EQ_INT(after_train, 0);
	ASSERT_OK(s_top.code);
	ASSERT(taken[0]);
	ASSERT_OK(add_rc);
	ASSERT_OK(s_top2.code);
	ASSERT_EQ_INT(still_there, 0);
	ASSERT_EQ_INT(after_add, 0);
	ASSERT_OK(put2);
	ASSERT(applied >= fresh_seq);
	ASSERT_EQ_INT(after_cold, 0);
	ASSERT_MSG(t2.code == GRPC_STATUS_OK && t2.done, "Train: %s \"%s\"", vr_status_name(t2.code), t2.message);
	ASSERT_EQ_INT(after_train2, 0);
	ASSERT_EQ_INT(entries, VUSERS);
	ASSERT(in3 && in3->topk_cache);
	ASSERT_EQ_INT(in3->topk_cache->hits - hits_before, 2 * VUSERS);
	ASSERT(in1 && in1->topk_cache && in2 && in2->topk_cache && in3 && in3->topk_cache);
	/* The cache answered (half the calls), the new item was merged into
	 * lists rather than dropping them, and a list is ~ 1 KiB. */
	ASSERT(in1->topk_cache->hits >= VUSERS * 2);
	ASSERT(in2->topk_cache->merged > in1->topk_cache->merged);
	ASSERT(in2->topk_cache->hits >= in1->topk_cache->hits + VUSERS);
	ASSERT_EQ_INT(in3->topk_cache->limit_bytes, 8 << 20);
	ASSERT(in3->topk_cache->bytes > 0 && in3->topk_cache->bytes <= in3->topk_cache->limit_bytes);
	ASSERT_EQ_INT(s_r, 0);
	ASSERT_EQ_INT(s_f, 0);
	release(top);
	release(top2);
	release(in1);
	release(in2);
	release(in3);
}

/* ---- cold start: the prior, cold slots, Audience, a given split ------------ */

static int count_cold(const Visrec__V1__RecommendResponse *r)
{
	int n = 0;
	for (size_t j = 0; r && j < r->n_items; j++)
		n += r->items[j]->cold;
	return n;
}

static int evaluate_split(vr_channel *ch, Visrec__V1__Interaction **test, size_t n_test,
			  Visrec__V1__Interaction **cold, size_t n_cold,
			  Visrec__V1__EvaluateResponse **out, vr_status *st)
{
	Visrec__V1__EvaluateRequest req = VISREC__V1__EVALUATE_REQUEST__INIT;
	req.test = test;
	req.n_test = n_test;
	req.cold_test = cold;
	req.n_cold_test = n_cold;
	*out = NULL;
	return unary(ch, "Evaluate", &req.base, &visrec__v1__evaluate_response__descriptor, out, st);
}

/* BPR with featured: items with images and no interactions (v030-v039)
 * are in the catalogue, Score answers for them (the prior's mean, not
 * NOT_FOUND), cold_slots puts them in a top-k, Audience ranks users for
 * one, and Evaluate takes a given split and refuses unknown ids in it. */
TEST(cold_items_bpr_slots_audience_and_given_split)
{
	struct proc f, r;
	vr_channel *fch = NULL, *ch = NULL;
	uint64_t seq = 0;
	vr_status st;
	if (start_featured(&f, "f6", NULL))
		FAIL_("featured did not start");
	vr_channel_create(&fch, f.addr, NULL);
	int put = put_items(fch, 0, VITEMS, NULL, &seq, &st);
	vr_channel_destroy(fch);
	if (put) {
		proc_stop(&f, 5000);
		FAIL_("PutItems failed (rc %d): %s \"%s\"", put, vr_status_name(st.code), st.message);
	}
	ASSERT_OK(start_rankd(&r, "r6", f.addr));
	vr_channel_create(&ch, r.addr, NULL);
	unsigned char seen[VUSERS][VITEMS] = { { 0 } };
	int added = add_visual_data(ch, seen);
	Visrec__V1__TrainRequest treq;
	train_req_bpr(&treq, 5, 2000);
	struct train_out t = { 0 };
	train_run(ch, &treq, &t);
	Visrec__V1__RankInfoResponse *in = info(ch);

	/* Score of an item only featured has. */
	char *cold_ids[] = { "v035", "v001" };
	Visrec__V1__ScoreRequest sreq = VISREC__V1__SCORE_REQUEST__INIT;
	sreq.user_id = "u000";
	sreq.item_ids = cold_ids;
	sreq.n_item_ids = 2;
	Visrec__V1__ScoreResponse *score = NULL;
	vr_status s_score;
	unary(ch, "Score", &sreq.base, &visrec__v1__score_response__descriptor, &score, &s_score);

	/* Cold slots, one by one and in a batch. */
	Visrec__V1__RecommendResponse *plain = NULL, *slots = NULL;
	vr_status s_plain, s_slots, s_batch, s_bad;
	recommend(ch, "u000", 8, 0, NULL, 0, &plain, &s_plain);
	Visrec__V1__RecommendRequest rq = VISREC__V1__RECOMMEND_REQUEST__INIT, *rqp = &rq;
	rq.user_id = "u000";
	rq.k = 8;
	rq.cold_slots = 3;
	unary(ch, "Recommend", &rq.base, &visrec__v1__recommend_response__descriptor, &slots, &s_slots);
	Visrec__V1__RecommendBatchRequest breq = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
	breq.requests = &rqp;
	breq.n_requests = 1;
	Visrec__V1__RecommendBatchResponse *batch = NULL;
	unary(ch, "RecommendBatch", &breq.base, &visrec__v1__recommend_batch_response__descriptor, &batch,
	      &s_batch);
	rq.cold_slots = 9;
	void *bad = NULL;
	unary(ch, "Recommend", &rq.base, &visrec__v1__recommend_response__descriptor, &bad, &s_bad);
	release(bad);

	/* Audience of a cold item and of a warm one (its users left out). */
	Visrec__V1__AudienceRequest areq = VISREC__V1__AUDIENCE_REQUEST__INIT;
	areq.item_id = "v035";
	areq.k = 5;
	Visrec__V1__AudienceResponse *aud = NULL, *aud_warm = NULL;
	vr_status s_aud, s_aud_warm, s_aud_bad, s_aud_k;
	unary(ch, "Audience", &areq.base, &visrec__v1__audience_response__descriptor, &aud, &s_aud);
	areq.item_id = "v001";
	areq.k = VUSERS;
	unary(ch, "Audience", &areq.base, &visrec__v1__audience_response__descriptor, &aud_warm, &s_aud_warm);
	areq.item_id = "nope";
	bad = NULL;
	unary(ch, "Audience", &areq.base, &visrec__v1__audience_response__descriptor, &bad, &s_aud_bad);
	release(bad);
	areq.item_id = "v001";
	areq.k = 0;
	bad = NULL;
	unary(ch, "Audience", &areq.base, &visrec__v1__audience_response__descriptor, &bad, &s_aud_k);
	release(bad);
	/* Each audience score is the user's Score of the item. */
	int aud_scores_match = aud != NULL;
	for (size_t x = 0; aud && x < aud->n_users; x++) {
		Visrec__V1__ScoreResponse *one = NULL;
		vr_status s1;
		char *id[] = { "v035" };
		sreq.user_id = aud->users[x]->user_id;
		sreq.item_ids = id;
		sreq.n_item_ids = 1;
		unary(ch, "Score", &sreq.base, &visrec__v1__score_response__descriptor, &one, &s1);
		aud_scores_match &= one && fabsf(one->items[0]->score - aud->users[x]->score) <=
			1e-4f * fmaxf(1, fabsf(one->items[0]->score));
		release(one);
	}

	/* A given split: one warm pair, one cold pair; then unknown ids. */
	Visrec__V1__Interaction p_warm = VISREC__V1__INTERACTION__INIT, p_cold = VISREC__V1__INTERACTION__INIT,
				p_bad = VISREC__V1__INTERACTION__INIT;
	p_warm.user_id = "u001";
	p_warm.item_id = "v002";
	p_cold.user_id = "u002";
	p_cold.item_id = "v036";
	Visrec__V1__Interaction *tp[] = { &p_warm }, *cp[] = { &p_cold }, *bp[] = { &p_bad };
	Visrec__V1__EvaluateResponse *ev = NULL, *ev_cold = NULL;
	vr_status s_ev, s_ev_cold, s_bad_user, s_bad_item, s_no_test, s_bad_id;
	evaluate_split(ch, tp, 1, NULL, 0, &ev, &s_ev);
	evaluate_split(ch, tp, 1, cp, 1, &ev_cold, &s_ev_cold);
	Visrec__V1__EvaluateResponse *x = NULL;
	p_bad.user_id = "nobody";
	p_bad.item_id = "v002";
	evaluate_split(ch, bp, 1, NULL, 0, &x, &s_bad_user);
	release(x);
	p_bad.user_id = "u001";
	p_bad.item_id = "nothing";
	evaluate_split(ch, tp, 1, bp, 1, &x, &s_bad_item);
	release(x);
	evaluate_split(ch, NULL, 0, cp, 1, &x, &s_no_test);
	release(x);
	p_bad.item_id = "a\tb";
	evaluate_split(ch, bp, 1, NULL, 0, &x, &s_bad_id);
	release(x);

	vr_channel_destroy(ch);
	int s_r = proc_stop(&r, 10000);
	int s_f = proc_stop(&f, 10000);

	ASSERT_OK(added);
	ASSERT_MSG(t.code == GRPC_STATUS_OK && t.done, "Train: %s \"%s\"", vr_status_name(t.code), t.message);
	/* BPR's catalogue is every item featured holds (issue 15.5). */
	ASSERT(in && in->model == VISREC__V1__MODEL_KIND__BPR);
	ASSERT_EQ_INT(in->items, VITEMS);
	ASSERT_MSG(s_score.code == GRPC_STATUS_OK, "Score: %s \"%s\"", vr_status_name(s_score.code),
		   s_score.message);
	ASSERT(score->items[0]->cold && !score->items[1]->cold);
	ASSERT(isfinite(score->items[0]->score) && score->items[0]->score != 0);

	ASSERT_OK(s_plain.code);
	ASSERT_OK(s_slots.code);
	ASSERT_EQ_INT(slots->n_items, 8);
	ASSERT(count_cold(slots) >= 3);
	ASSERT(count_cold(slots) >= count_cold(plain));
	for (size_t j = 1; j < slots->n_items; j++)
		ASSERT(slots->items[j - 1]->score >= slots->items[j]->score);
	/* The warm items kept are the plain ranking's best warm ones, in order. */
	for (size_t j = 0, w = 0; j < slots->n_items; j++) {
		if (slots->items[j]->cold)
			continue;
		while (w < plain->n_items && plain->items[w]->cold)
			w++;
		ASSERT(w < plain->n_items);
		ASSERT_STR_EQ(slots->items[j]->item_id, plain->items[w]->item_id);
		w++;
	}
	ASSERT_OK(s_batch.code);
	ASSERT_EQ_INT(batch->responses[0]->n_items, slots->n_items);
	for (size_t j = 0; j < slots->n_items; j++)
		ASSERT_STR_EQ(batch->responses[0]->items[j]->item_id, slots->items[j]->item_id);
	ASSERT_EQ_INT(s_bad.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_bad.message, "cold_slots must be between 0 and k (8); got 9");

	ASSERT_OK(s_aud.code);
	ASSERT(aud->cold);
	ASSERT_EQ_INT(aud->n_users, 5);
	for (size_t j = 1; j < aud->n_users; j++)
		ASSERT(aud->users[j - 1]->score >= aud->users[j]->score);
	ASSERT(aud_scores_match);
	ASSERT_OK(s_aud_warm.code);
	ASSERT(!aud_warm->cold);
	int had = 0;
	for (int u = 0; u < VUSERS; u++)
		had += seen[u][1];
	ASSERT(had > 0);
	/* Users whose last item is v001 have it held out as their test item:
	 * the served seen lists hold every interaction, so all are left out. */
	ASSERT_EQ_INT(aud_warm->n_users, VUSERS - had);
	for (size_t j = 0; j < aud_warm->n_users; j++)
		ASSERT(!seen[atoi(aud_warm->users[j]->user_id + 1)][1]);
	ASSERT_EQ_INT(s_aud_bad.code, GRPC_STATUS_NOT_FOUND);
	ASSERT_CONTAINS(s_aud_bad.message, "unknown item \"nope\"");
	ASSERT_EQ_INT(s_aud_k.code, GRPC_STATUS_INVALID_ARGUMENT);

	ASSERT_OK(s_ev.code);
	ASSERT_STR_EQ(ev->split, "given");
	ASSERT_EQ_INT(ev->n_results, 4);
	ASSERT_EQ_INT(ev->results[0]->users, 1);
	ASSERT_EQ_INT(ev->results[3]->users, 1);
	ASSERT(ev->results[0]->auc > 0 && ev->results[0]->auc <= 1);
	/* The warm pair's item is not cold: the cold subset has no users. */
	ASSERT_EQ_INT(ev->results[1]->users, 0);
	ASSERT_EQ_INT(ev->results[2]->users, 0);
	ASSERT_EQ_INT(ev->n_popularity, 4);
	ASSERT_EQ_INT(ev->popularity[0]->users, 1);
	ASSERT_OK(s_ev_cold.code);
	ASSERT_EQ_INT(ev_cold->results[1]->users, 1);
	ASSERT_EQ_INT(ev_cold->popularity[1]->users, 1);
	ASSERT_EQ_INT(ev_cold->results[2]->users, 1);
	ASSERT_EQ_INT(s_bad_user.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_bad_user.message, "test[0]: unknown user \"nobody\"");
	ASSERT_EQ_INT(s_bad_item.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_bad_item.message, "cold_test[0]: unknown item \"nothing\"");
	ASSERT_EQ_INT(s_no_test.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_no_test.message, "cold_test without test");
	ASSERT_EQ_INT(s_bad_id.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s_bad_id.message, "test[0].item_id");
	ASSERT_EQ_INT(s_r, 0);
	ASSERT_EQ_INT(s_f, 0);
	release(in);
	release(score);
	release(plain);
	release(slots);
	release(batch);
	release(aud);
	release(aud_warm);
	release(ev);
	release(ev_cold);
}

/* ---- an idle pair ---------------------------------------------------------- */

#define IDLE_MS 10000
#define IDLE_MAX_MS (IDLE_MS / 50) /* 2% of one core */

/* CPU ms featured (f) and rankd (r) use over IDLE_MS with nothing to do. */
static void idle_cpu(const struct proc *f, const struct proc *r, int64_t *f_ms, int64_t *r_ms)
{
	usleep(500000); /* let the last replies and logs go */
	int64_t f0 = proc_cpu_ms(f->pid), r0 = proc_cpu_ms(r->pid);
	usleep(IDLE_MS * 1000);
	*f_ms = f0 < 0 ? -1 : proc_cpu_ms(f->pid) - f0;
	*r_ms = r0 < 0 ? -1 : proc_cpu_ms(r->pid) - r0;
}

/* An idle featured with rankd following its feed, then the same pair
 * after an ingest drained (rankd applied every change) and after a BPR
 * and a VBPR Train finished: each uses at most 2% of a core. A feed wait
 * that spun (a condition variable on another clock than its deadline)
 * cost featured a whole core here. */
TEST(idle_pair_uses_no_cpu)
{
	struct proc f, r;
	vr_channel *fch = NULL, *ch = NULL;
	int64_t f_ms[3] = { -1, -1, -1 }, r_ms[3] = { -1, -1, -1 };
	uint64_t seq = 0, applied = 0;
	vr_status st = { 0 };
	struct train_out bpr = { 0 }, vbpr = { 0 };
	unsigned char seen[VUSERS][VITEMS] = { { 0 } };
	ASSERT_OK(start_featured(&f, "f-idle", NULL));
	if (start_rankd(&r, "r-idle", f.addr)) {
		proc_stop(&f, 5000);
		FAIL_("rankd did not start");
	}
	vr_channel_create(&fch, f.addr, NULL);
	vr_channel_create(&ch, r.addr, NULL);
	idle_cpu(&f, &r, &f_ms[0], &r_ms[0]);

	int put = put_items(fch, 0, VITEMS, NULL, &seq, &st);
	if (!put)
		applied = feed_reaches(ch, seq, 30000);
	idle_cpu(&f, &r, &f_ms[1], &r_ms[1]);

	int added = add_visual_data(ch, seen);
	Visrec__V1__TrainRequest req;
	train_req_bpr(&req, 3, 4096);
	train_run(ch, &req, &bpr);
	train_vbpr(ch, &vbpr);
	idle_cpu(&f, &r, &f_ms[2], &r_ms[2]);

	vr_channel_destroy(fch);
	vr_channel_destroy(ch);
	int rs = proc_stop(&r, 10000), fs = proc_stop(&f, 10000);
	fprintf(stderr, "  CPU used in %d s idle, featured / rankd: at start %lld / %lld ms, after the "
		"ingest %lld / %lld ms, after BPR and VBPR %lld / %lld ms\n", IDLE_MS / 1000,
		(long long)f_ms[0], (long long)r_ms[0], (long long)f_ms[1], (long long)r_ms[1],
		(long long)f_ms[2], (long long)r_ms[2]);
	ASSERT_MSG(!put, "PutItems: %s %s", vr_status_name(st.code), st.message);
	ASSERT_MSG(applied >= seq, "rankd applied featured's feed to seq %llu of %llu",
		   (unsigned long long)applied, (unsigned long long)seq);
	ASSERT_OK(added);
	ASSERT_MSG(bpr.code == GRPC_STATUS_OK && bpr.done, "BPR: %s", bpr.message);
	ASSERT_MSG(vbpr.code == GRPC_STATUS_OK && vbpr.done, "VBPR: %s", vbpr.message);
	for (int k = 0; k < 3; k++) {
		ASSERT(f_ms[k] >= 0 && r_ms[k] >= 0);
		ASSERT_MSG(f_ms[k] <= IDLE_MAX_MS, "featured used %lld ms of CPU in %d s idle (phase %d)",
			   (long long)f_ms[k], IDLE_MS / 1000, k);
		ASSERT_MSG(r_ms[k] <= IDLE_MAX_MS, "rankd used %lld ms of CPU in %d s idle (phase %d)",
			   (long long)r_ms[k], IDLE_MS / 1000, k);
	}
	ASSERT_EQ_INT(rs, 0);
	ASSERT_EQ_INT(fs, 0);
}

/* ---- tokens ------------------------------------------------------------------ */

/* featured and rankd with admin tokens from files, rankd sending
 * featured's: the feed (which needs featured's token) reaches rankd, and
 * a rankd without featured's token is refused the feed. */
TEST(pair_with_tokens_follows_the_feed)
{
	struct proc f, r, r2;
	char ftok[160], rtok[160];
	snprintf(ftok, sizeof ftok, "%s/featured.token", tmpdir);
	snprintf(rtok, sizeof rtok, "%s/rankd.token", tmpdir);
	ASSERT_OK(procs_write_file(ftok, "featured-0123456789abcdef\n", 0600));
	ASSERT_OK(procs_write_file(rtok, "rankd-fedcba9876543210\n", 0600));
	const char *fx[] = { "--admin-token-file", ftok, NULL };
	const char *rx[] = { "--admin-token-file", rtok, "--featured-token-file", ftok, NULL };
	ASSERT_OK(start_featured_with(&f, "f-tok", NULL, fx));
	int up = !start_rankd_with(&r, "r-tok", f.addr, rx);
	int up2 = !start_rankd(&r2, "r-notok", f.addr);
	vr_channel *fch = NULL, *ch = NULL, *ch_admin = NULL, *ch2 = NULL;
	vr_channel_opts fo = { .token = "featured-0123456789abcdef" }, ro = { .token = "rankd-fedcba9876543210" };
	vr_channel_create(&fch, f.addr, &fo);
	vr_channel_create(&ch, up ? r.addr : "127.0.0.1:9", NULL);
	vr_channel_create(&ch_admin, up ? r.addr : "127.0.0.1:9", &ro);
	vr_channel_create(&ch2, up2 ? r2.addr : "127.0.0.1:9", NULL);
	uint64_t seq = 0;
	vr_status st = { 0 }, st_anon = { 0 }, st_admin = { 0 };
	int put = put_items(fch, 0, 2, NULL, &seq, &st);
	uint64_t applied = put ? 0 : feed_reaches(ch, seq, 15000);
	uint64_t applied2 = put ? 0 : feed_reaches(ch2, seq, 1000);

	Visrec__V1__Interaction a = VISREC__V1__INTERACTION__INIT, *rows[1] = { &a };
	a.user_id = "u1";
	a.item_id = "v000";
	a.timestamp = 1;
	Visrec__V1__AddInteractionsRequest add = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	add.n_interactions = 1;
	add.interactions = rows;
	void *resp = NULL;
	int add_anon = unary(ch, "AddInteractions", &add.base,
			     &visrec__v1__add_interactions_response__descriptor, &resp, &st_anon);
	release(resp);
	resp = NULL;
	int add_admin = unary(ch_admin, "AddInteractions", &add.base,
			      &visrec__v1__add_interactions_response__descriptor, &resp, &st_admin);
	release(resp);
	vr_channel_destroy(fch);
	vr_channel_destroy(ch);
	vr_channel_destroy(ch_admin);
	vr_channel_destroy(ch2);
	if (up2)
		proc_stop(&r2, 10000);
	if (up)
		proc_stop(&r, 10000);
	proc_stop(&f, 10000);
	char path[200];
	snprintf(path, sizeof path, "%s/r-notok.stderr", tmpdir);
	char *log2 = vr_test_read_file(path, NULL);
	ASSERT(up && up2);
	ASSERT_MSG(!put, "PutItems: %s %s", vr_status_name(st.code), st.message);
	ASSERT_EQ_INT(applied, seq);
	ASSERT_EQ_INT(applied2, 0);
	ASSERT_CONTAINS(log2, "UNAUTHENTICATED");
	free(log2);
	ASSERT(add_anon != 0);
	ASSERT_EQ_INT(st_anon.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_MSG(add_admin == 0, "AddInteractions with the token: %s %s", vr_status_name(st_admin.code),
		   st_admin.message);
}

/* ---- a full disk --------------------------------------------------------- */

#define DISK_ROWS 400

/* Fills a small file system through AddInteractions: the calls it cannot
 * take are refused RESOURCE_EXHAUSTED naming the disk and the directory
 * and change nothing; after kill -9 and a restart on the still full disk,
 * rankd holds exactly the acknowledged interactions. */
TEST(full_disk_keeps_every_acked_interaction)
{
	char disk[128], why[256];
	snprintf(disk, sizeof disk, "%s/disk", tmpdir);
	if (procs_tmpfs(disk, "4m", why, sizeof why))
		SKIP("%s; run as root where mounts are allowed", why);
	static Visrec__V1__Interaction rows[DISK_ROWS], *ptrs[DISK_ROWS];
	static char ids[DISK_ROWS][2][128];
	struct proc r;
	int started = !start_rankd(&r, "disk/rd", NULL);
	vr_channel *ch = NULL;
	vr_channel_create(&ch, started ? r.addr : "127.0.0.1:9", NULL);
	uint64_t acked = 0, live = 0, after = 0;
	int refused = 0, other = 0, calls = 0;
	char refusal[512] = "";
	for (int dry = 0; started && calls < 300 && dry < 3; calls++) {
		for (int x = 0; x < DISK_ROWS; x++) {
			int k = calls * DISK_ROWS + x;
			visrec__v1__interaction__init(&rows[x]);
			snprintf(ids[x][0], sizeof ids[x][0], "user-%07d-%0100d", k, k);
			snprintf(ids[x][1], sizeof ids[x][1], "item-%07d-%0100d", k, k);
			rows[x].user_id = ids[x][0];
			rows[x].item_id = ids[x][1];
			rows[x].timestamp = k;
			ptrs[x] = &rows[x];
		}
		Visrec__V1__AddInteractionsRequest add = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
		add.n_interactions = DISK_ROWS;
		add.interactions = ptrs;
		Visrec__V1__AddInteractionsResponse *resp = NULL;
		vr_status st;
		if (!unary(ch, "AddInteractions", &add.base,
			   &visrec__v1__add_interactions_response__descriptor, &resp, &st)) {
			acked = resp->interactions;
			dry = 0;
		} else if (st.code == GRPC_STATUS_RESOURCE_EXHAUSTED) {
			refused++;
			dry++;
			snprintf(refusal, sizeof refusal, "%s", st.message);
		} else {
			other++;
			snprintf(refusal, sizeof refusal, "%s: %s", vr_status_name(st.code), st.message);
			break;
		}
		release(resp);
	}
	Visrec__V1__RankInfoResponse *in = started ? info(ch) : NULL;
	live = in ? in->interactions : 0;
	release(in);
	vr_channel_destroy(ch);
	if (started)
		proc_kill9(&r);

	int restarted = started && !start_rankd(&r, "disk/rd", NULL);
	if (restarted) {
		vr_channel_create(&ch, r.addr, NULL);
		in = info(ch);
		after = in ? in->interactions : 0;
		release(in);
		vr_channel_destroy(ch);
		proc_stop(&r, 10000);
	}
	umount2(disk, MNT_DETACH);
	fprintf(stderr, "  %llu interactions stored, %d calls of %d refused; the last refusal: %s\n",
		(unsigned long long)acked, refused, DISK_ROWS, refusal);
	ASSERT_MSG(started, "rankd did not start on the small disk");
	ASSERT_MSG(acked >= DISK_ROWS && refused >= 1, "%llu interactions stored, %d calls refused",
		   (unsigned long long)acked, refused);
	ASSERT_MSG(!other, "an unexpected failure: %s", refusal);
	ASSERT_CONTAINS(refusal, "disk full");
	ASSERT_CONTAINS(refusal, disk);
	ASSERT_EQ_INT(live, acked);
	ASSERT_MSG(restarted, "rankd did not restart on the full disk");
	ASSERT_EQ_INT(after, acked);
}

static const struct vr_test tests[] = {
	T(refusals_before_training), T(train_bpr_and_recommend), T(restart_serves_the_same_topk),
	T(serving_during_training_and_cancel), T(vbpr_with_featured_ranks_new_items_cold),
	T(cold_items_bpr_slots_audience_and_given_split),
	T(added_interactions_excluded_at_once), T(added_during_train_stay_excluded),
	T(added_interactions_excluded_after_restart), T(idle_pair_uses_no_cpu),
	T(pair_with_tokens_follows_the_feed), T(full_disk_keeps_every_acked_interaction),
	T(topk_cache_equals_the_scan_across_changes), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/rk_service_test.XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
