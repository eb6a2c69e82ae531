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

/* Places where answer y differs from answer x (item or score bits: every
 * path scores with the same kernel, topk.h); the first is shown. */
static int differs(const char (*xi)[K][16], const float (*xs)[K], const char (*yi)[K][16], const float (*ys)[K])
{
	int differ = 0;
	for (uint32_t u = 0; u < USERS; u++)
		for (size_t j = 0; j < K; j++)
			if (strcmp(xi[u][j], yi[u][j]) || xs[u][j] != ys[u][j])
				if (!differ++)
					fprintf(stderr, "  u%06u place %zu: %s %.9g, then %s %.9g\n", u, j, xi[u][j], xs[u][j],
						yi[u][j], ys[u][j]);
	return differ;
}

/* y's Recommend answers against x's; y's RecommendBatch against x's Recommend. */
static int recommend_differs(const struct answers *x, const struct answers *y)
{
	return differs(x->item, x->score, y->item, y->score);
}

static int batch_differs(const struct answers *y, const struct answers *x)
{
	return differs(x->item, x->score, y->batch_item, y->batch_score);
}

/* Writes the synthetic snapshot into tmpdir/data, serves it exactly and
 * then with flags (tag names the second rankd's log). 0, or -1 with why. */
static int exact_then(const char *tag, const char *const *flags, struct answers *exact, struct answers *other,
		      char *why, size_t cap)
{
	char data[128];
	snprintf(data, sizeof data, "%s/data", tmpdir);
	int rc = synth_snapshot_write(data, ITEMS, USERS);
	if (rc) {
		snprintf(why, cap, "cannot write the snapshot: %s", vr_strerror(rc));
		return -1;
	}
	return serve_and_collect("exact", NULL, exact, why, cap) || serve_and_collect(tag, flags, other, why, cap)
		       ? -1 : 0;
}

TEST(int4_pass_answers_equal_the_exact_scan)
{
	static struct answers exact, int4;
	char why[256] = "";
	const char *const int4_flags[] = { "--topk-approx", "16", "--topk-int4", NULL };
	ASSERT_MSG(!exact_then("int4", int4_flags, &exact, &int4, why, sizeof why), "%s", why);
	int differ = recommend_differs(&exact, &int4);
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
	const char *const int8_flags[] = { "--topk-approx", "4", NULL };
	ASSERT_MSG(!exact_then("int8", int8_flags, &exact, &int8, why, sizeof why), "%s", why);
	int batch_differ = batch_differs(&int8, &int8), differ = recommend_differs(&exact, &int8);
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
