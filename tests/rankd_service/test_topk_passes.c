/* Integration tests of rankd's approximate first passes through gRPC: a
 * real rankd on 127.0.0.1 serving a synthetic VBPR snapshot
 * (synth_snapshot.h) of 12,000 items, large enough that the int4 pass
 * (--topk-approx 16 --topk-int4: k x 16 = 320 candidates for k = 20) and
 * its exact re-rank really run. The same data directory is served first
 * by an exact rankd, then by one with an approximate pass; Recommend,
 * RecommendBatch and Score must answer the same. */
#include "err.h"
#include "harness.h"
#include "procs.h"
#include "rank_client.h"
#include "rpc.h"
#include "synth_snapshot.h"
#include "visrec/v1/rankd.pb-c.h"

#define ITEMS 12000
#define USERS 200
#define K 20
#define SCORED 8 /* items per Score call beyond a user's top k */

static char tmpdir[64];

/* One rankd's answers for every user. */
struct answers {
	char item[USERS][K][16];
	float score[USERS][K];
	char batch_item[USERS][K][16];
	float batch_score[USERS][K];
	float scored[USERS][K + SCORED];
};

static int start_rankd(struct proc *p, const char *tag, const char *const *extra)
{
	char data[128], err[160];
	const char *argv[32] = { RANKD_BIN, "--listen", "127.0.0.1:0", "--data", data, "--threads", "2",
				 "--featured", "127.0.0.1:9", "--follow-featured=false",
				 "--topk-cache-mb", "0" };
	int argc = 12;
	snprintf(data, sizeof data, "%s/data", tmpdir);
	snprintf(err, sizeof err, "%s/%s.stderr", tmpdir, tag);
	for (; extra && *extra && argc < 31; extra++)
		argv[argc++] = *extra;
	argv[argc] = NULL;
	if (proc_spawn(p, err, (char *const *)argv))
		return -1;
	return proc_wait_ready(p, "rankd", 60000);
}

static void uname_of(char *buf, uint32_t u)
{
	snprintf(buf, 16, "u%06u", u);
}

/* Recommend (k = K), RecommendBatch (all users in calls of 50) and Score
 * (K + SCORED items spread over the catalogue) for every user. Returns 0, or -1 with why. */
static int collect(vr_channel *ch, struct answers *a, char *why, size_t cap)
{
	vr_status st;
	char user[16];
	for (uint32_t u = 0; u < USERS; u++) {
		Visrec__V1__RecommendRequest req = VISREC__V1__RECOMMEND_REQUEST__INIT;
		Visrec__V1__RecommendResponse *r = NULL;
		uname_of(user, u);
		req.user_id = user;
		req.k = K;
		if (unary(ch, "Recommend", &req.base, &visrec__v1__recommend_response__descriptor, &r, &st) ||
		    r->n_items != K || (r->fallback && r->fallback[0])) {
			snprintf(why, cap, "Recommend %s: %.160s, %zu items", user, st.message, r ? r->n_items : 0);
			release(r);
			return -1;
		}
		for (size_t x = 0; x < K; x++) {
			snprintf(a->item[u][x], 16, "%s", r->items[x]->item_id);
			a->score[u][x] = r->items[x]->score;
		}
		release(r);
	}
	for (uint32_t u0 = 0; u0 < USERS; u0 += 50) {
		Visrec__V1__RecommendRequest rq[50], *rp[50];
		char names[50][16];
		for (uint32_t x = 0; x < 50; x++) {
			visrec__v1__recommend_request__init(&rq[x]);
			uname_of(names[x], u0 + x);
			rq[x].user_id = names[x];
			rq[x].k = K;
			rp[x] = &rq[x];
		}
		Visrec__V1__RecommendBatchRequest req = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
		Visrec__V1__RecommendBatchResponse *r = NULL;
		req.requests = rp;
		req.n_requests = 50;
		if (unary(ch, "RecommendBatch", &req.base, &visrec__v1__recommend_batch_response__descriptor, &r,
			  &st) || r->n_responses != 50) {
			snprintf(why, cap, "RecommendBatch from %s: %.160s", names[0], st.message);
			release(r);
			return -1;
		}
		for (uint32_t x = 0; x < 50; x++) {
			if (r->responses[x]->n_items != K) {
				snprintf(why, cap, "RecommendBatch %s: %zu items", names[x], r->responses[x]->n_items);
				release(r);
				return -1;
			}
			for (size_t j = 0; j < K; j++) {
				snprintf(a->batch_item[u0 + x][j], 16, "%s", r->responses[x]->items[j]->item_id);
				a->batch_score[u0 + x][j] = r->responses[x]->items[j]->score;
			}
		}
		release(r);
	}
	for (uint32_t u = 0; u < USERS; u++) {
		char ids[K + SCORED][16], *idp[K + SCORED];
		for (size_t x = 0; x < K + SCORED; x++) {
			snprintf(ids[x], 16, "i%07u", (unsigned)((u * 7919u + x * 1499u) % ITEMS));
			idp[x] = ids[x];
		}
		Visrec__V1__ScoreRequest req = VISREC__V1__SCORE_REQUEST__INIT;
		Visrec__V1__ScoreResponse *r = NULL;
		uname_of(user, u);
		req.user_id = user;
		req.item_ids = idp;
		req.n_item_ids = K + SCORED;
		if (unary(ch, "Score", &req.base, &visrec__v1__score_response__descriptor, &r, &st) ||
		    r->n_items != K + SCORED) {
			snprintf(why, cap, "Score %s: %.160s", user, st.message);
			release(r);
			return -1;
		}
		for (size_t x = 0; x < K + SCORED; x++)
			a->scored[u][x] = r->items[x]->score;
		release(r);
	}
	return 0;
}

static int serve_and_collect(const char *tag, const char *const *extra, struct answers *a, char *why,
			     size_t cap)
{
	struct proc p;
	vr_channel *ch = NULL;
	int rc = start_rankd(&p, tag, extra);
	if (rc)
		snprintf(why, cap, "rankd %s did not start (see %s/%s.stderr)", tag, tmpdir, tag);
	else if ((rc = vr_channel_create(&ch, p.addr, NULL)))
		snprintf(why, cap, "no channel to rankd %s", tag);
	else
		rc = collect(ch, a, why, cap);
	vr_channel_destroy(ch);
	if (proc_stop(&p, 30000) != 0 && !rc) {
		snprintf(why, cap, "rankd %s did not stop cleanly", tag);
		rc = -1;
	}
	return rc;
}

/* Places where x's RecommendBatch answer differs from y's Recommend answer
 * (item or score bits: every path scores with the same kernel, topk.h). */
static int batch_differs(const struct answers *x, const struct answers *y)
{
	int differ = 0;
	for (uint32_t u = 0; u < USERS; u++)
		for (size_t j = 0; j < K; j++)
			if (strcmp(x->batch_item[u][j], y->item[u][j]) || x->batch_score[u][j] != y->score[u][j])
				if (!differ++)
					fprintf(stderr, "  u%06u place %zu: Recommend %s %.9g, RecommendBatch %s %.9g\n", u,
						j, y->item[u][j], y->score[u][j], x->batch_item[u][j], x->batch_score[u][j]);
	return differ;
}

/* The data directory tmpdir/data with the synthetic snapshot. */
static int write_data(void)
{
	char data[128];
	snprintf(data, sizeof data, "%s/data", tmpdir);
	return synth_snapshot_write(data, ITEMS, USERS);
}

TEST(int4_pass_answers_equal_the_exact_scan)
{
	static struct answers exact, int4;
	char why[256] = "";
	int rc = write_data();
	ASSERT_MSG(!rc, "cannot write the snapshot: %s", vr_strerror(rc));
	ASSERT_MSG(!serve_and_collect("exact", NULL, &exact, why, sizeof why), "exact: %s", why);
	const char *const int4_flags[] = { "--topk-approx", "16", "--topk-int4", NULL };
	ASSERT_MSG(!serve_and_collect("int4", int4_flags, &int4, why, sizeof why), "int4: %s", why);
	int differ = 0;
	for (uint32_t u = 0; u < USERS; u++) {
		for (size_t j = 0; j < K; j++) {
			if (strcmp(exact.item[u][j], int4.item[u][j]) || exact.score[u][j] != int4.score[u][j]) {
				if (!differ++)
					fprintf(stderr, "  u%06u place %zu: exact %s %.9g, int4 %s %.9g\n", u, j,
						exact.item[u][j], exact.score[u][j], int4.item[u][j], int4.score[u][j]);
			}
		}
	}
	ASSERT_MSG(!differ, "%d of %d Recommend places differ from the exact scan", differ, USERS * K);
	for (uint32_t u = 0; u < USERS; u++)
		for (size_t x = 0; x < K + SCORED; x++)
			ASSERT_MSG(exact.scored[u][x] == int4.scored[u][x], "Score u%06u item %zu: %.9g vs %.9g", u, x,
				   exact.scored[u][x], int4.scored[u][x]);
	/* RecommendBatch: exact (the int8 bound) and the int4 rankd's (the
	 * int8 pass at c = 16) both as the exact scan. */
	ASSERT_EQ_INT(batch_differs(&exact, &exact), 0);
	ASSERT_EQ_INT(batch_differs(&int4, &exact), 0);
}

/* --topk-approx 4 (int8): RecommendBatch's batched int8 pass keeps the
 * candidates Recommend's scan keeps, so the two answer the same, bit for
 * bit, and both the exact scan's answer here. */
TEST(int8_batch_answers_equal_recommend)
{
	static struct answers exact, int8;
	char why[256] = "";
	int rc = write_data();
	ASSERT_MSG(!rc, "cannot write the snapshot: %s", vr_strerror(rc));
	ASSERT_MSG(!serve_and_collect("exact", NULL, &exact, why, sizeof why), "exact: %s", why);
	const char *const int8_flags[] = { "--topk-approx", "4", NULL };
	ASSERT_MSG(!serve_and_collect("int8", int8_flags, &int8, why, sizeof why), "int8: %s", why);
	int differ = 0, batch_differ = batch_differs(&int8, &int8);
	for (uint32_t u = 0; u < USERS; u++)
		for (size_t j = 0; j < K; j++)
			differ += strcmp(exact.item[u][j], int8.item[u][j]) || exact.score[u][j] != int8.score[u][j];
	ASSERT_MSG(!batch_differ, "%d of %d RecommendBatch places differ from Recommend", batch_differ, USERS * K);
	ASSERT_MSG(!differ, "%d of %d Recommend places differ from the exact scan", differ, USERS * K);
}

static const struct vr_test tests[] = {
	T(int4_pass_answers_equal_the_exact_scan), T(int8_batch_answers_equal_recommend),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/rk_passes_test.XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
