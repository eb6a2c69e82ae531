/* Unit tests of the per-user top-k cache (tcache.h) against a real item
 * matrix (index.h) and the exact scan (topk.h): every answer the cache
 * gives, across appended and replaced rows, must be the scan's, bit for
 * bit; and the LRU and key rules. */
#include "err.h"
#include "harness.h"
#include "index.h"
#include "tcache.h"
#include "topk.h"

#include <stdlib.h>
#include <string.h>

#define DIM 8

static uint64_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

/* Few distinct values, so equal scores (ties by id) are common. */
static void random_row(uint64_t *s, float *row, float lift)
{
	for (int j = 0; j < DIM; j++)
		row[j] = (float)((int)(rnd(s) % 5) - 2) * 0.25f;
	row[0] += lift;
}

struct user {
	float row[DIM];
	uint32_t excl[16];
	size_t n_excl;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* One Recommend through the cache as rankd does: a hit, else a scan to the
 * cached depth that is stored. Returns 1 on a hit. */
static int ask(rk_tcache *c, struct rk_index *ix, uint64_t version, uint32_t u,
	       const struct user *us, int k, struct rk_topk_ws *ws, struct rk_hit *out, size_t *n)
{
	uint64_t seq = rk_tcache_seq(c);
	struct rk_index_view view;
	rk_index_acquire(ix, &view);
	int hit = rk_tcache_get(c, version, u, 0, seq, &view, us->row, us->excl, us->n_excl, ws, k, out, n);
	if (!hit) {
		int depth = k > RK_TCACHE_MIN_DEPTH ? k : RK_TCACHE_MIN_DEPTH;
		struct rk_hit deep[256];
		struct rk_topk_req q = { .user = us->row, .k = depth, .exclude = us->excl,
					 .n_exclude = us->n_excl };
		size_t got = 0;
		if (rk_topk(&view, &q, ws, deep, 256, &got) == 0)
			rk_tcache_put(c, version, u, 0, seq, depth, deep, got);
		*n = got < (size_t)k ? got : (size_t)k;
		memcpy(out, deep, *n * sizeof *out);
	}
	rk_index_release(&view);
	return hit;
}

TEST(tcache_answers_equal_the_scan_across_new_and_replaced_rows)
{
	uint64_t s = 17;
	struct rk_index *ix = NULL;
	struct rk_index_opts opts = { .rows_per_chunk = 64 };
	struct rk_topk_ws *ws = NULL;
	rk_tcache *c = NULL;
	ASSERT_OK(rk_index_create(DIM, &opts, &ix));
	ASSERT_OK(rk_topk_ws_create(&ws));
	ASSERT_OK(rk_tcache_create(64u << 20, &c));
	float row[DIM];
	uint32_t n = 70; /* a little more than the depth: lists are often complete, then not */
	for (uint32_t i = 0; i < n; i++) {
		random_row(&s, row, 0);
		ASSERT_OK(rk_index_append(ix, row, 1, NULL));
	}
	enum { USERS = 24 };
	static struct user us[USERS];
	for (int u = 0; u < USERS; u++) {
		random_row(&s, us[u].row, 0);
		us[u].row[0] = 1.0f; /* the bias column, as user rows have */
		us[u].n_excl = rnd(&s) % 16;
		for (size_t x = 0; x < us[u].n_excl; x++)
			us[u].excl[x] = (uint32_t)(rnd(&s) % 90); /* some beyond n: items yet to come */
		qsort(us[u].excl, us[u].n_excl, sizeof *us[u].excl, cmp_u32);
	}
	long hits = 0, asked = 0, wrong = 0;
	for (int round = 0; round < 200; round++) {
		/* A change: new rows (cold items), or a replaced one; some score
		 * high enough to enter every list. */
		int what = (int)(rnd(&s) % 3);
		float lift = rnd(&s) % 4 == 0 ? 2.0f : 0.0f;
		if (what < 2) {
			uint32_t add = 1 + (uint32_t)(rnd(&s) % 3);
			for (uint32_t a = 0; a < add; a++) {
				random_row(&s, row, lift);
				ASSERT_OK(rk_index_append(ix, row, 1, NULL));
			}
			rk_tcache_note_range(c, 1, n, n + add);
			n += add;
		} else {
			uint32_t i = (uint32_t)(rnd(&s) % n);
			random_row(&s, row, rnd(&s) % 2 ? -lift : lift);
			ASSERT_OK(rk_index_replace(ix, i, row));
			rk_tcache_note(c, 1, i);
		}
		for (int q = 0; q < 6; q++) {
			uint32_t u = (uint32_t)(rnd(&s) % USERS);
			int k = 1 + (int)(rnd(&s) % 80);
			struct rk_hit got[256], want[256];
			size_t n_got = 0, n_want = 0;
			hits += ask(c, ix, 1, u, &us[u], k, ws, got, &n_got);
			asked++;
			struct rk_index_view view;
			rk_index_acquire(ix, &view);
			struct rk_topk_req rq = { .user = us[u].row, .k = k, .exclude = us[u].excl,
						  .n_exclude = us[u].n_excl };
			ASSERT_OK(rk_topk(&view, &rq, ws, want, 256, &n_want));
			rk_index_release(&view);
			int same = n_got == n_want;
			for (size_t j = 0; same && j < n_got; j++)
				same = got[j].item == want[j].item &&
				       memcmp(&got[j].score, &want[j].score, sizeof(float)) == 0;
			wrong += !same;
		}
	}
	rk_tcache_stats st;
	rk_tcache_stats_get(c, &st);
	ASSERT_EQ_INT(wrong, 0);
	/* The test meant something: most answers came from the cache, and
	 * changes were merged into lists rather than dropping them. */
	ASSERT_MSG(hits * 2 > asked, "%ld hits of %ld calls", hits, asked);
	ASSERT(st.merged > 100);
	ASSERT_EQ_INT(st.hits, hits);
	rk_tcache_destroy(c);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
}

TEST(tcache_keys_version_user_epoch_and_log)
{
	rk_tcache *c = NULL;
	struct rk_hit h[3] = { { 4, 3.0f }, { 1, 2.0f }, { 7, 1.0f } }, out[3];
	size_t n = 0;
	struct rk_index_view none = { 0 };
	float user[DIM] = { 0 };
	ASSERT_EQ_INT(rk_tcache_create(0, &c), VR_EINVAL);
	ASSERT_OK(rk_tcache_create(1u << 20, &c));
	ASSERT_OK(rk_tcache_put(c, 5, 2, 9, 0, 3, h, 3));
	ASSERT_EQ_INT(rk_tcache_get(c, 5, 2, 9, 0, &none, user, NULL, 0, NULL, 2, out, &n), 1);
	ASSERT_EQ_INT(n, 2);
	ASSERT_EQ_INT(out[1].item, 1);
	/* k deeper than the (full, so not complete) list: a miss. */
	ASSERT_EQ_INT(rk_tcache_get(c, 5, 2, 9, 0, &none, user, NULL, 0, NULL, 4, out, &n), 0);
	/* Another user epoch (new interactions): a miss, and the list is gone. */
	ASSERT_EQ_INT(rk_tcache_get(c, 5, 2, 10, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	ASSERT_EQ_INT(rk_tcache_get(c, 5, 2, 9, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	/* A list shorter than its depth holds every eligible item: any k. */
	ASSERT_OK(rk_tcache_put(c, 5, 3, 0, 0, 64, h, 3));
	ASSERT_EQ_INT(rk_tcache_get(c, 5, 3, 0, 0, &none, user, NULL, 0, NULL, 1000, out, &n), 1);
	ASSERT_EQ_INT(n, 3);
	/* An older version neither reads nor stores; a newer one empties. */
	ASSERT_EQ_INT(rk_tcache_get(c, 4, 3, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	ASSERT_OK(rk_tcache_put(c, 4, 8, 0, 0, 3, h, 3));
	ASSERT_EQ_INT(rk_tcache_get(c, 4, 8, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	rk_tcache_reset(c, 6);
	ASSERT_EQ_INT(rk_tcache_get(c, 6, 3, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	rk_tcache_stats st;
	rk_tcache_stats_get(c, &st);
	ASSERT_EQ_INT(st.entries, 0);
	/* Drop: the user's list goes at once. */
	ASSERT_OK(rk_tcache_put(c, 6, 1, 0, 0, 3, h, 3));
	rk_tcache_drop(c, 1);
	ASSERT_EQ_INT(rk_tcache_get(c, 6, 1, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	/* More changes than the log holds: older lists cannot be merged. */
	ASSERT_OK(rk_tcache_put(c, 6, 1, 0, 0, 3, h, 3));
	rk_tcache_note_range(c, 6, 100, 100 + RK_TCACHE_LOG + 50);
	uint64_t seq = rk_tcache_seq(c);
	ASSERT_EQ_INT(rk_tcache_get(c, 6, 1, 0, seq, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	/* A caller whose view is older than the list's changes: a miss. */
	ASSERT_OK(rk_tcache_put(c, 6, 1, 0, seq, 3, h, 3));
	ASSERT_EQ_INT(rk_tcache_get(c, 6, 1, 0, seq - 1, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	rk_tcache_destroy(c);
	rk_tcache_destroy(NULL);
}

TEST(tcache_lru_stays_under_its_limit)
{
	rk_tcache *c = NULL;
	struct rk_hit h[64] = { { 0, 0 } }, out[64];
	size_t n;
	struct rk_index_view none = { 0 };
	float user[DIM] = { 0 };
	rk_tcache_stats st;
	/* Measure one list's bytes and the user table's, then allow three lists. */
	ASSERT_OK(rk_tcache_create(1u << 20, &c));
	ASSERT_OK(rk_tcache_put(c, 1, 9, 0, 0, 64, h, 64));
	rk_tcache_stats_get(c, &st);
	uint64_t table = 10 * sizeof(void *), one = st.bytes - table;
	rk_tcache_destroy(c);
	ASSERT_OK(rk_tcache_create(table + 3 * one + one / 2, &c));
	static const uint32_t order[] = { 9, 2, 1, 0 }; /* 9 first: the table has its size */
	for (int x = 0; x < 4; x++)
		ASSERT_OK(rk_tcache_put(c, 1, order[x], 0, 0, 64, h, 64));
	/* Held: 9, 2, 1, 0 would be four: 9 (least recent) went. */
	rk_tcache_stats_get(c, &st);
	ASSERT_EQ_INT(st.entries, 3);
	ASSERT_EQ_INT(st.evictions, 1);
	ASSERT(st.bytes <= st.limit);
	ASSERT_EQ_INT(rk_tcache_get(c, 1, 9, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	/* Touch 2, then store 5: 1 is now the least recent and goes. */
	ASSERT_EQ_INT(rk_tcache_get(c, 1, 2, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 1);
	ASSERT_OK(rk_tcache_put(c, 1, 5, 0, 0, 64, h, 64));
	ASSERT_EQ_INT(rk_tcache_get(c, 1, 1, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 0);
	ASSERT_EQ_INT(rk_tcache_get(c, 1, 2, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 1);
	ASSERT_EQ_INT(rk_tcache_get(c, 1, 0, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 1);
	ASSERT_EQ_INT(rk_tcache_get(c, 1, 5, 0, 0, &none, user, NULL, 0, NULL, 1, out, &n), 1);
	rk_tcache_stats_get(c, &st);
	ASSERT_EQ_INT(st.evictions, 2);
	ASSERT(st.bytes <= st.limit);
	rk_tcache_destroy(c);
}

static const struct vr_test tests[] = {
	T(tcache_answers_equal_the_scan_across_new_and_replaced_rows),
	T(tcache_keys_version_user_epoch_and_log), T(tcache_lru_stays_under_its_limit), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
