/* Unit tests of common/metrics: each metric pinned on hand-computed cases
 * (ties, both protocols, the tutorial's AUC formula, the cold subset), and
 * the evaluation driver over a small fixed score matrix. */
#include "metrics.h"

#include "err.h"
#include "harness.h"

#include <stdint.h>

#define EPS 1e-12

static struct vr_metrics_cfg cfg_with(enum vr_eval_protocol p, int n_ks, const int *ks)
{
	struct vr_metrics_cfg c;
	vr_metrics_cfg_init(&c);
	c.protocol = p;
	c.n_ks = n_ks;
	for (int i = 0; i < n_ks; i++)
		c.ks[i] = ks[i];
	return c;
}

TEST(defaults)
{
	struct vr_metrics_cfg c;
	enum vr_eval_protocol p;
	vr_metrics_cfg_init(&c);
	ASSERT_EQ_INT(c.protocol, VR_EVAL_STANDARD);
	ASSERT_EQ_INT(c.n_ks, 2);
	ASSERT_EQ_INT(c.ks[0], 20);
	ASSERT_EQ_INT(c.ks[1], 100);
	ASSERT_OK(vr_metrics_parse_protocol("tutorial", &p));
	ASSERT_EQ_INT(p, VR_EVAL_TUTORIAL);
	ASSERT_STR_EQ(vr_metrics_protocol_name(p), "tutorial");
	ASSERT_EQ_INT(vr_metrics_parse_protocol("Tutorial", &p), VR_EINVAL);
}

/* scores 0.9 0.1 0.5 0.7 0.3 0.6, test item 2 (0.5), item 0 excluded:
 * above it 3 and 5, below 1 and 4, so rank 2 of 5 ranked items. */
TEST(no_ties)
{
	const float s[] = { 0.9f, 0.1f, 0.5f, 0.7f, 0.3f, 0.6f };
	const uint32_t ex[] = { 0 };
	const int ks[] = { 1, 2, 3, 20 };
	struct vr_metrics_cfg c = cfg_with(VR_EVAL_STANDARD, 4, ks);
	struct vr_user_metrics m;
	ASSERT_OK(vr_metrics_user(&c, s, 6, ex, 1, 2, &m));
	ASSERT_NEAR(m.rank, 2, EPS);
	ASSERT_NEAR(m.auc, 2.0 / 4, EPS); /* 2 of 4 negatives below */
	ASSERT_NEAR(m.rr, 1.0 / 3, EPS);
	ASSERT_NEAR(m.recall[0], 0, EPS);
	ASSERT_NEAR(m.recall[1], 0, EPS);
	ASSERT_NEAR(m.recall[2], 1, EPS);
	ASSERT_NEAR(m.recall[3], 1, EPS);
	ASSERT_NEAR(m.precision[2], 1.0 / 3, EPS);
	ASSERT_NEAR(m.precision[3], 1.0 / 20, EPS);
	ASSERT_NEAR(m.ndcg[1], 0, EPS);
	ASSERT_NEAR(m.ndcg[2], 0.5, EPS); /* 1 / log2(4) */
	ASSERT_NEAR(m.ndcg[3], 0.5, EPS);

	/* Tutorial: same rank, AUC = (N - 1 - rank) / (N - 1) over all 6 items. */
	c.protocol = VR_EVAL_TUTORIAL;
	ASSERT_OK(vr_metrics_user(&c, s, 6, ex, 1, 2, &m));
	ASSERT_NEAR(m.auc, 3.0 / 5, EPS);
	ASSERT_NEAR(m.rr, 1.0 / 3, EPS);
	ASSERT_NEAR(m.ndcg[2], 0.5, EPS);
}

/* scores 1 2 2 2 0, test item 1: two others tie with it, none above, so the
 * rank is 0, 1 or 2 with equal chance. */
TEST(ties_are_expected_values)
{
	const float s[] = { 1, 2, 2, 2, 0 };
	const int ks[] = { 1, 2, 3 };
	struct vr_metrics_cfg c = cfg_with(VR_EVAL_STANDARD, 3, ks);
	struct vr_user_metrics m;
	ASSERT_OK(vr_metrics_user(&c, s, 5, NULL, 0, 1, &m));
	ASSERT_NEAR(m.rank, 1, EPS);
	ASSERT_NEAR(m.auc, 3.0 / 4, EPS); /* 2 below + 2 ties × 1/2, of 4 */
	ASSERT_NEAR(m.rr, (1 + 1.0 / 2 + 1.0 / 3) / 3, EPS);
	ASSERT_NEAR(m.recall[0], 1.0 / 3, EPS);
	ASSERT_NEAR(m.recall[1], 2.0 / 3, EPS);
	ASSERT_NEAR(m.recall[2], 1, EPS);
	ASSERT_NEAR(m.precision[1], 1.0 / 3, EPS);
	ASSERT_NEAR(m.ndcg[0], 1.0 / 3, EPS);
	ASSERT_NEAR(m.ndcg[1], (1 + 1 / log2(3)) / 3, EPS);
	ASSERT_NEAR(m.ndcg[2], (1 + 1 / log2(3) + 0.5) / 3, EPS);

	/* With the top item 0 raised to 3 and excluded: standard AUC counts 3
	 * negatives (1 below, 2 ties), tutorial uses N = 5 and rank 0 + 2/2. */
	const float s2[] = { 3, 2, 2, 2, 0 };
	const uint32_t ex[] = { 0 };
	ASSERT_OK(vr_metrics_user(&c, s2, 5, ex, 1, 1, &m));
	ASSERT_NEAR(m.auc, 2.0 / 3, EPS);
	ASSERT_NEAR(m.rank, 1, EPS);
	c.protocol = VR_EVAL_TUTORIAL;
	ASSERT_OK(vr_metrics_user(&c, s2, 5, ex, 1, 1, &m));
	ASSERT_NEAR(m.auc, (5 - 1 - 1) / 4.0, EPS);
	/* Without the exclusion the tutorial counts item 0 above. */
	ASSERT_OK(vr_metrics_user(&c, s2, 5, NULL, 0, 1, &m));
	ASSERT_NEAR(m.rank, 2, EPS);
	ASSERT_NEAR(m.auc, (5 - 1 - 2) / 4.0, EPS);
}

TEST(constant_scorer_is_half)
{
	float s[101];
	const int ks[] = { 20 };
	struct vr_user_metrics m;
	for (int i = 0; i < 101; i++)
		s[i] = 0.25f;
	for (int p = 0; p < 2; p++) {
		struct vr_metrics_cfg c = cfg_with((enum vr_eval_protocol)p, 1, ks);
		ASSERT_OK(vr_metrics_user(&c, s, 101, NULL, 0, 40, &m));
		ASSERT_NEAR(m.auc, 0.5, EPS);
		ASSERT_NEAR(m.recall[0], 20.0 / 101, EPS);
	}
}

/* The test item is ranked even when named in the exclusions; repeats
 * count once; the best and worst places give AUC 1 and 0. */
TEST(exclusion_edge_cases)
{
	const float s[] = { 5, 4, 3, 2, 1 };
	const uint32_t ex[] = { 0, 0, 1, 1, 2 };
	const int ks[] = { 1 };
	struct vr_metrics_cfg c = cfg_with(VR_EVAL_STANDARD, 1, ks);
	struct vr_user_metrics m;
	ASSERT_OK(vr_metrics_user(&c, s, 5, ex, 5, 2, &m));
	ASSERT_NEAR(m.rank, 0, EPS);
	ASSERT_NEAR(m.auc, 1, EPS);
	ASSERT_NEAR(m.rr, 1, EPS);
	ASSERT_NEAR(m.ndcg[0], 1, EPS);
	ASSERT_OK(vr_metrics_user(&c, s, 5, NULL, 0, 4, &m));
	ASSERT_NEAR(m.auc, 0, EPS);
	ASSERT_NEAR(m.rr, 1.0 / 5, EPS);
	c.protocol = VR_EVAL_TUTORIAL;
	ASSERT_OK(vr_metrics_user(&c, s, 5, NULL, 0, 4, &m));
	ASSERT_NEAR(m.auc, 0, EPS);
	/* Everything else excluded: nothing to compare, AUC 1 (as the
	 * tutorial's auc_exact when the whole inventory is relevant). */
	const uint32_t all[] = { 0, 1, 2, 3 };
	c.protocol = VR_EVAL_STANDARD;
	ASSERT_OK(vr_metrics_user(&c, s, 5, all, 4, 4, &m));
	ASSERT_NEAR(m.auc, 1, EPS);
	float one = 1;
	ASSERT_OK(vr_metrics_user(&c, &one, 1, NULL, 0, 0, &m));
	ASSERT_NEAR(m.auc, 1, EPS);
}

TEST(invalid_arguments)
{
	const float s[] = { 1, 2, 3 };
	const float nan_s[] = { 1, NAN, 3 };
	const uint32_t unsorted[] = { 2, 0 }, outside[] = { 3 };
	struct vr_metrics_cfg c;
	struct vr_user_metrics m;
	vr_metrics_cfg_init(&c);
	ASSERT_EQ_INT(vr_metrics_user(&c, s, 3, NULL, 0, 3, &m), VR_EINVAL);
	ASSERT_EQ_INT(vr_metrics_user(&c, s, 3, unsorted, 2, 1, &m), VR_EINVAL);
	ASSERT_EQ_INT(vr_metrics_user(&c, s, 3, outside, 1, 1, &m), VR_EINVAL);
	ASSERT_EQ_INT(vr_metrics_user(&c, nan_s, 3, NULL, 0, 1, &m), VR_EINVAL);
	ASSERT_OK(vr_metrics_user(&c, nan_s, 3, NULL, 0, 0, &m)); /* NaN elsewhere counts below */
	ASSERT_NEAR(m.auc, 0.5, EPS);
	c.n_ks = 0;
	ASSERT_EQ_INT(vr_metrics_user(&c, s, 3, NULL, 0, 1, &m), VR_EINVAL);
	c.n_ks = 1;
	c.ks[0] = 0;
	ASSERT_EQ_INT(vr_metrics_user(&c, s, 3, NULL, 0, 1, &m), VR_EINVAL);
}

TEST(exclusion_by_protocol)
{
	/* Oldest first; the test item 7 appears in the history too. */
	const uint32_t train[] = { 5, 3, 9, 1, 0, 12, 7, 8, 2, 11, 4, 6, 10 };
	uint32_t out[13];
	size_t n;
	struct vr_metrics_cfg c;
	vr_metrics_cfg_init(&c);
	vr_metrics_exclusion(&c, train, 13, 7, out, &n);
	ASSERT_EQ_INT(n, 12);
	const uint32_t want_std[] = { 0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12 };
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ_INT(out[i], want_std[i]);
	c.protocol = VR_EVAL_TUTORIAL;
	vr_metrics_exclusion(&c, train, 13, 7, out, &n);
	const uint32_t want_tut[] = { 0, 1, 2, 4, 6, 8, 10, 11, 12 }; /* last 10, less 7 */
	ASSERT_EQ_INT(n, 9);
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ_INT(out[i], want_tut[i]);
}

/* The driver: a fixed score matrix behind the callback. */
struct fixed_scores {
	const float *s;
	uint32_t n_items;
	int calls;
};

static int fixed_score(void *ctx, const uint32_t *users, uint32_t n_users, float *scores)
{
	struct fixed_scores *f = ctx;
	f->calls++;
	for (uint32_t u = 0; u < n_users; u++)
		memcpy(scores + (size_t)u * f->n_items, f->s + (size_t)users[u] * f->n_items,
		       f->n_items * sizeof(float));
	return 0;
}

static int failing_score(void *ctx, const uint32_t *users, uint32_t n_users, float *scores)
{
	return VR_EIO;
}

/* u0: excl {0, 4}, test 2: items 3, 5 above, 1 below (rank 2, 3 negatives).
 * u1: excl {1}, test 5, a cold item (nobody trained on it): items 2, 4
 *     above, 0, 3 below (rank 2, 4 negatives).
 * u2: a constant scorer, excl {2, 3}, test 0: 3 ties. */
static const float EVAL_S[3 * 6] = {
	0.9f, 0.1f, 0.5f, 0.7f, 0.3f, 0.6f,
	0.2f, 0.8f, 0.4f, 0.1f, 0.9f, 0.3f,
	0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
};
static const uint32_t TR0[] = { 0, 4 }, TR1[] = { 1 }, TR2[] = { 3, 2 };
static const struct vr_eval_user EVAL_U[] = {
	{ 0, 2, TR0, 2 }, { 1, 5, TR1, 1 }, { 2, 0, TR2, 2 },
};

TEST(evaluate_both_protocols_and_cold)
{
	struct fixed_scores f = { EVAL_S, 6, 0 };
	struct vr_metrics_cfg c;
	struct vr_metrics_table t;
	vr_metrics_cfg_init(&c);
	c.block_users = 2;
	ASSERT_OK(vr_evaluate(&c, EVAL_U, 3, 6, NULL, fixed_score, &f, &t));
	ASSERT_EQ_INT(f.calls, 2);
	ASSERT_EQ_INT(t.all.n_users, 3);
	ASSERT_EQ_INT(t.n_ks, 2);
	/* AUC: u0 1 of 3 negatives below, u1 2 of 4, u2 (3 - 3/2) / 3. */
	ASSERT_NEAR(t.all.auc, (1.0 / 3 + 0.5 + 0.5) / 3, EPS);
	double rr2 = (1 + 1.0 / 2 + 1.0 / 3 + 1.0 / 4) / 4;
	ASSERT_NEAR(t.all.rr, (1.0 / 3 + 1.0 / 3 + rr2) / 3, EPS);
	ASSERT_NEAR(t.all.recall[0], 1, EPS);
	ASSERT_NEAR(t.all.precision[0], 1.0 / 20, EPS);
	double nd2 = (1 + 1 / log2(3) + 1 / log2(4) + 1 / log2(5)) / 4;
	ASSERT_NEAR(t.all.ndcg[0], (0.5 + 0.5 + nd2) / 3, EPS);
	ASSERT_NEAR(t.all.ndcg[1], (0.5 + 0.5 + nd2) / 3, EPS);
	/* Cold: only u1. */
	ASSERT_EQ_INT(t.cold.n_users, 1);
	ASSERT_NEAR(t.cold.auc, 0.5, EPS);
	ASSERT_NEAR(t.cold.rr, 1.0 / 3, EPS);
	ASSERT_NEAR(t.cold.ndcg[0], 0.5, EPS);
	/* Among the cold items (5 alone): no negative, so AUC 1 and rank 0. */
	ASSERT_EQ_INT(t.new_items.n_users, 1);
	ASSERT_NEAR(t.new_items.auc, 1, EPS);
	ASSERT_NEAR(t.new_items.rr, 1, EPS);
	/* Among the warm items (0..4): u0's item 2 over 1 and 3 (3 above, 1
	 * below: AUC 1/2, rank 1); u2's item 0 ties 1 and 4. Item 5, above
	 * u0's test item on the whole catalogue, no longer counts. */
	ASSERT_EQ_INT(t.warm_items.n_users, 2);
	ASSERT_NEAR(t.warm_items.auc, 0.5, EPS);
	ASSERT_NEAR(t.warm_items.rr, (0.5 + (1 + 1.0 / 2 + 1.0 / 3) / 3) / 2, EPS);

	/* Tutorial: same exclusions here (short histories), AUC over N = 6. */
	c.protocol = VR_EVAL_TUTORIAL;
	ASSERT_OK(vr_evaluate(&c, EVAL_U, 3, 6, NULL, fixed_score, &f, &t));
	ASSERT_NEAR(t.all.auc, (3.0 / 5 + 3.0 / 5 + 3.5 / 5) / 3, EPS);
	ASSERT_NEAR(t.cold.auc, 3.0 / 5, EPS);

	/* Cold items named by the caller: item 0 (u2's test item) too. */
	const uint8_t cold[6] = { 1, 0, 0, 0, 0, 1 };
	c.protocol = VR_EVAL_STANDARD;
	ASSERT_OK(vr_evaluate(&c, EVAL_U, 3, 6, cold, fixed_score, &f, &t));
	ASSERT_EQ_INT(t.cold.n_users, 2);
	ASSERT_NEAR(t.cold.auc, 0.5, EPS);
	ASSERT_NEAR(t.cold.rr, (1.0 / 3 + rr2) / 2, EPS);
	/* Among cold items 0 and 5 only: u1's item 5 (0.3) above item 0
	 * (0.2); u2's item 0 ties item 5 (AUC 1/2, RR (1 + 1/2) / 2). Item 4,
	 * warm and above both for u1, no longer counts. */
	ASSERT_EQ_INT(t.new_items.n_users, 2);
	ASSERT_NEAR(t.new_items.auc, (1 + 0.5) / 2, EPS);
	ASSERT_NEAR(t.new_items.rr, (1 + 0.75) / 2, EPS);
	ASSERT_NEAR(t.new_items.recall[0], 1, EPS);
	/* The tutorial protocol ranks them by the same rule (no exclusion). */
	c.protocol = VR_EVAL_TUTORIAL;
	ASSERT_OK(vr_evaluate(&c, EVAL_U, 3, 6, cold, fixed_score, &f, &t));
	ASSERT_NEAR(t.new_items.auc, (1 + 0.5) / 2, EPS);
}

/* "warm" against a count by hand on random data: each warm user's AUC
 * among the warm items not in its training list (standard), and the
 * tutorial's (N - 1 - rank) / (N - 1) with N the warm items' count; the
 * other subsets are as without it, and every user is in all and in
 * exactly one of cold and warm. Distinct scores, so ranks are exact. */
TEST(evaluate_warm_among_warm_items)
{
	enum { NU = 40, NI = 97, NTR = 14 };
	static float s[NU * NI];
	static uint32_t train[NU][NTR];
	struct vr_eval_user u[NU];
	uint8_t cold[NI];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t k = 0; k < NU * NI; k++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		s[k] = (float)(x >> 40) + (float)k / (NU * NI); /* distinct */
	}
	for (int i = 0; i < NI; i++)
		cold[i] = i % 9 == 4;
	for (int v = 0; v < NU; v++) {
		int n = 0;
		for (int i = (v * 7) % NI; n < NTR; i = (i + 5) % NI)
			if (!cold[i])
				train[v][n++] = (uint32_t)i;
		/* Every fourth user's test item is cold; the rest a warm one not
		 * in the training list. */
		uint32_t t = v % 4 == 0 ? 4 + 9 * (uint32_t)(v % 10) : (uint32_t)((v * 13 + 2) % NI);
		for (int k = 0; v % 4 && k < NI; k++, t = (t + 1) % NI) {
			int in = cold[t];
			for (int j = 0; j < NTR; j++)
				in |= train[v][j] == t;
			if (!in)
				break;
		}
		u[v] = (struct vr_eval_user){ (uint32_t)v, t, train[v], NTR };
	}
	struct fixed_scores f = { s, NI, 0 };
	struct vr_metrics_cfg c;
	struct vr_metrics_table t;
	vr_metrics_cfg_init(&c);
	c.block_users = 7;
	for (int p = 0; p < 2; p++) {
		c.protocol = p ? VR_EVAL_TUTORIAL : VR_EVAL_STANDARD;
		ASSERT_OK(vr_evaluate(&c, u, NU, NI, cold, fixed_score, &f, &t));
		double sum = 0, rr = 0;
		int users = 0, n_warm = 0;
		for (int i = 0; i < NI; i++)
			n_warm += !cold[i];
		for (int v = 0; v < NU; v++) {
			if (cold[u[v].test_item])
				continue;
			const float *row = s + (size_t)v * NI;
			float st = row[u[v].test_item];
			int above = 0, neg = 0;
			for (int i = 0; i < NI; i++) {
				int ex = cold[i] || i == (int)u[v].test_item;
				/* standard: all 14 excluded; tutorial: the last 10 */
				for (int j = p ? NTR - 10 : 0; j < NTR; j++)
					ex |= train[v][j] == (uint32_t)i;
				if (ex)
					continue;
				neg++;
				above += row[i] > st;
			}
			sum += p ? (double)(n_warm - 1 - above) / (n_warm - 1) : 1 - (double)above / neg;
			rr += 1.0 / (above + 1);
			users++;
		}
		ASSERT_EQ_INT(t.warm_items.n_users, users);
		ASSERT_EQ_INT(t.warm_items.n_users + t.cold.n_users, t.all.n_users);
		ASSERT(users > 20 && t.cold.n_users >= 5);
		ASSERT_NEAR(t.warm_items.auc, sum / users, 1e-12);
		ASSERT_NEAR(t.warm_items.rr, rr / users, 1e-12);
		/* Whole-catalogue AUCs differ: cold items score above some test items. */
		ASSERT(fabs(t.warm_items.auc - t.all.auc) > 1e-6);
	}
}

/* A long history tells the protocols apart: scores fall with the item id,
 * the test item 14 is last; standard excludes items 0..11, tutorial only
 * the last ten (2..11), so items 0 and 1 stay above the test item. */
TEST(evaluate_long_history)
{
	float s[15];
	uint32_t train[12];
	for (int i = 0; i < 15; i++)
		s[i] = (float)(15 - i);
	for (int i = 0; i < 12; i++)
		train[i] = (uint32_t)i;
	struct vr_eval_user u = { 0, 14, train, 12 };
	struct fixed_scores f = { s, 15, 0 };
	struct vr_metrics_cfg c;
	struct vr_metrics_table t;
	vr_metrics_cfg_init(&c);
	ASSERT_OK(vr_evaluate(&c, &u, 1, 15, NULL, fixed_score, &f, &t));
	ASSERT_NEAR(t.all.auc, 0, EPS);
	ASSERT_NEAR(t.all.rr, 1.0 / 3, EPS);
	ASSERT_EQ_INT(t.cold.n_users, 1); /* item 14: no training interaction */
	c.protocol = VR_EVAL_TUTORIAL;
	ASSERT_OK(vr_evaluate(&c, &u, 1, 15, NULL, fixed_score, &f, &t));
	ASSERT_NEAR(t.all.auc, (15 - 1 - 4) / 14.0, EPS);
	ASSERT_NEAR(t.all.rr, 1.0 / 5, EPS);
}

TEST(evaluate_errors)
{
	struct fixed_scores f = { EVAL_S, 6, 0 };
	struct vr_metrics_cfg c;
	struct vr_metrics_table t;
	vr_metrics_cfg_init(&c);
	ASSERT_EQ_INT(vr_evaluate(&c, EVAL_U, 3, 6, NULL, failing_score, &f, &t), VR_EIO);
	ASSERT_EQ_INT(vr_evaluate(&c, EVAL_U, 3, 5, NULL, fixed_score, &f, &t), VR_EINVAL);
	ASSERT_OK(vr_evaluate(&c, EVAL_U, 0, 6, NULL, fixed_score, &f, &t));
	ASSERT_EQ_INT(t.all.n_users, 0);
	ASSERT_NEAR(t.all.auc, 0, EPS);
}

/* The one AUC rule (vr_auc_count, vr_auc) that Evaluate and the trainers'
 * validation share: ties half, NaN below every number and tied with NaN,
 * no negatives 1, counts that add up over parts of a catalogue. */
TEST(auc_rule)
{
	const float s[] = { 3, 2, 2, NAN, 1, NAN };
	uint64_t above = 0, tied = 0;
	vr_auc_count(2, s, 6, &above, &tied);
	ASSERT_EQ_INT(above, 1);
	ASSERT_EQ_INT(tied, 2);
	/* 6 negatives besides the positive scored 2: 3 below (1 and the two
	 * NaNs), 2 ties, 1 above. */
	ASSERT_NEAR(vr_auc(6, above, tied), (6 - 1 - 2 / 2.0) / 6, EPS);
	above = tied = 0;
	vr_auc_count(2, s, 3, &above, &tied);
	vr_auc_count(2, s + 3, 3, &above, &tied);
	ASSERT_EQ_INT(above, 1);
	ASSERT_EQ_INT(tied, 2);
	above = tied = 0;
	vr_auc_count(NAN, s, 6, &above, &tied);
	ASSERT_EQ_INT(above, 4);
	ASSERT_EQ_INT(tied, 2);
	ASSERT_NEAR(vr_auc(6, above, tied), 1.0 / 6, EPS);
	ASSERT_NEAR(vr_auc(0, 0, 0), 1, EPS);
	ASSERT_NEAR(vr_auc(4, 0, 4), 0.5, EPS);
	ASSERT_NEAR(vr_auc(4, 4, 0), 0, EPS);
}

static const struct vr_test tests[] = {
	T(defaults),
	T(auc_rule),
	T(no_ties),
	T(ties_are_expected_values),
	T(constant_scorer_is_half),
	T(exclusion_edge_cases),
	T(invalid_arguments),
	T(exclusion_by_protocol),
	T(evaluate_both_protocols_and_cold),
	T(evaluate_warm_among_warm_items),
	T(evaluate_long_history),
	T(evaluate_errors),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
