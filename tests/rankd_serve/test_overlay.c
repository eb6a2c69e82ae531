/* Unit tests of rankd's overlay (overlay.h): the interactions added since
 * the served snapshot, against real in-memory interactions (interactions.h)
 * and their CSR snapshots, with seeded random users and items. */
#include "err.h"
#include "harness.h"
#include "interactions.h"
#include "overlay.h"

#include <stdlib.h>

static uint64_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

/* Stores n random pairs (users < nu, items < ni) in ix and records their
 * indices in users/items, as AddInteractions does before the overlay. */
static int add_random(rk_interactions *ix, uint64_t *seed, int nu, int ni, size_t n, uint32_t *users,
		      uint32_t *items)
{
	char ids[2][16];
	for (size_t x = 0; x < n; x++) {
		snprintf(ids[0], sizeof ids[0], "u%d", (int)(rnd(seed) % (uint64_t)nu));
		snprintf(ids[1], sizeof ids[1], "i%d", (int)(rnd(seed) % (uint64_t)ni));
		rk_interaction_in in = { ids[0], strlen(ids[0]), ids[1], strlen(ids[1]), (int64_t)x };
		int rc = rk_interactions_add_batch(ix, &in, 1, NULL);
		if (!rc)
			rc = rk_users_find(ix, ids[0], strlen(ids[0]), &users[x]);
		if (!rc)
			rc = rk_items_find(ix, ids[1], strlen(ids[1]), &items[x]);
		if (rc)
			return rc;
	}
	return 0;
}

/* 0 when, for every user, the overlay's list is ascending without repeats,
 * disjoint from seen's, and both together are exactly the user's stored
 * interactions; else the first user that breaks it, plus one. */
static long check_union(const rk_interactions *ix, const rk_overlay *o, const rk_csr *seen)
{
	uint64_t held = 0;
	for (uint32_t u = 0; u < rk_interactions_users(ix); u++) {
		size_t n;
		const uint32_t *l = rk_overlay_items(o, u, &n);
		held += n;
		uint64_t in_seen = u < seen->n_users ? seen->off[u + 1] - seen->off[u] : 0, have = 0;
		for (uint32_t i = 0; i < rk_interactions_items(ix); i++)
			have += (uint64_t)rk_interactions_has(ix, u, i, NULL);
		if (n + in_seen != have)
			return (long)u + 1;
		for (size_t x = 0; x < n; x++)
			if ((x && l[x] <= l[x - 1]) || !rk_interactions_has(ix, u, l[x], NULL) ||
			    (u < seen->n_users && rk_csr_has(seen, u, l[x])))
				return (long)u + 1;
	}
	return held == rk_overlay_count(o) ? 0 : -1;
}

/* The service's cycle, many times: adds (recorded in the overlay, skipping
 * what the served snapshot holds), a Train that copies the interactions,
 * more adds while it runs, then its snapshot served and the overlay pruned.
 * The served seen lists and the overlay always hold every interaction. */
TEST(overlay_with_snapshot_holds_every_interaction)
{
	rk_interactions *ix = NULL;
	rk_overlay *o = NULL;
	rk_csr served = { 0 }, training = { 0 };
	uint64_t seed = 11;
	enum { USERS = 40, ITEMS = 60, BATCH = 50 };
	uint32_t users[BATCH], items[BATCH];
	ASSERT_OK(rk_interactions_open(&ix, NULL));
	ASSERT_OK(rk_overlay_create(&o));
	long bad = 0;
	for (int round = 0; round < 30 && !bad; round++) {
		size_t n = 1 + rnd(&seed) % BATCH;
		ASSERT_OK(add_random(ix, &seed, USERS, ITEMS, n, users, items));
		ASSERT_OK(rk_overlay_add(o, users, items, n, &served));
		bad = check_union(ix, o, &served);
		if (bad || round % 3 != 2)
			continue;
		rk_csr_free(&training);
		ASSERT_OK(rk_interactions_csr(ix, &training)); /* the Train's copy */
		n = 1 + rnd(&seed) % BATCH;
		ASSERT_OK(add_random(ix, &seed, USERS, ITEMS, n, users, items));
		ASSERT_OK(rk_overlay_add(o, users, items, n, &served));
		rk_csr_free(&served);
		served = training; /* the swap, then the prune */
		memset(&training, 0, sizeof training);
		rk_overlay_prune(o, &served);
		bad = check_union(ix, o, &served);
		ASSERT_MSG(rk_overlay_count(o) <= n, "%llu pairs held after the prune, %zu added since the copy",
			   (unsigned long long)rk_overlay_count(o), n);
	}
	rk_csr_free(&served);
	rk_csr_free(&training);
	rk_overlay_destroy(o);
	rk_interactions_close(ix);
	ASSERT_EQ_INT(bad, 0);
}

/* Repeats within a call and across calls are held once; a pair the given
 * seen lists hold is skipped; unsorted input comes out ascending. */
TEST(overlay_add_dedups_and_sorts)
{
	rk_overlay *o = NULL;
	ASSERT_OK(rk_overlay_create(&o));
	uint32_t u1[] = { 3, 3, 3, 0, 3, 7 }, i1[] = { 9, 2, 9, 5, 4, 1 };
	ASSERT_OK(rk_overlay_add(o, u1, i1, 6, NULL));
	uint32_t u2[] = { 3, 3 }, i2[] = { 4, 6 };
	ASSERT_OK(rk_overlay_add(o, u2, i2, 2, NULL));
	size_t n;
	const uint32_t *l = rk_overlay_items(o, 3, &n);
	ASSERT_EQ_INT(n, 4);
	uint32_t want[] = { 2, 4, 6, 9 };
	for (size_t x = 0; x < n; x++)
		ASSERT_EQ_INT(l[x], want[x]);
	ASSERT_EQ_INT(rk_overlay_count(o), 6);
	ASSERT(rk_overlay_items(o, 1, &n) == NULL && n == 0);
	ASSERT(rk_overlay_items(o, 1000, &n) == NULL && n == 0);
	/* seen: user 0 holds item 8, user 1 holds items 1 and 2. */
	uint64_t off[] = { 0, 1, 3 };
	uint32_t item[] = { 8, 1, 2 };
	int64_t ts[] = { 0, 0, 0 };
	rk_csr seen = { .n_users = 2, .n_items = 10, .nnz = 3, .off = off, .item = item, .ts = ts };
	uint32_t u3[] = { 0, 1, 1, 2 }, i3[] = { 8, 2, 3, 8 };
	ASSERT_OK(rk_overlay_add(o, u3, i3, 4, &seen));
	l = rk_overlay_items(o, 0, &n);
	ASSERT(n == 1 && l[0] == 5);
	l = rk_overlay_items(o, 1, &n);
	ASSERT(n == 1 && l[0] == 3);
	l = rk_overlay_items(o, 2, &n);
	ASSERT(n == 1 && l[0] == 8);
	/* A prune drops what seen holds and frees emptied lists; all gone frees all. */
	uint64_t off2[] = { 0, 1, 2, 2, 6 };
	uint32_t item2[] = { 5, 3, 2, 4, 6, 9 };
	int64_t ts2[6] = { 0 };
	rk_csr next = { .n_users = 4, .n_items = 10, .nnz = 6, .off = off2, .item = item2, .ts = ts2 };
	rk_overlay_prune(o, &next);
	ASSERT_EQ_INT(rk_overlay_count(o), 2); /* user 2's item 8, user 7's item 1 */
	ASSERT(rk_overlay_items(o, 0, &n) == NULL && n == 0);
	ASSERT(rk_overlay_items(o, 3, &n) == NULL && n == 0);
	l = rk_overlay_items(o, 7, &n);
	ASSERT(n == 1 && l[0] == 1);
	rk_overlay_prune(o, &next);
	ASSERT_EQ_INT(rk_overlay_count(o), 2);
	ASSERT_OK(rk_overlay_add(o, NULL, NULL, 0, NULL));
	rk_overlay_destroy(o);
	rk_overlay_destroy(NULL);
}

static const struct vr_test tests[] = {
	T(overlay_with_snapshot_holds_every_interaction), T(overlay_add_dedups_and_sorts), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
