/* Evaluation of a ranking model (DESIGN.md 8): per user, from a full score
 * vector over the catalogue, the rank of the user's one test item (the last
 * interaction in time) and from it AUC, RR, Recall@k, Precision@k and
 * nDCG@k; means over all users and over the users whose test item is cold
 * (no training interactions), and for those same users once more with
 * their item ranked among the cold items only ("new"); and the users whose
 * test item is warm with their item ranked among the warm items only
 * ("warm"). Model-agnostic: it sees scores only.
 *
 * Why "new": on the whole catalogue a cold test item competes with warm
 * items whose scores carry their learned popularity, so the cold subset
 * mostly measures where a model puts cold items as a group (one offset
 * moves every cold item past the warm ones at once), not whether it tells
 * which new item suits whom. Among the cold items alone no model knows
 * any of them from interactions: the ranking is what it saw in their
 * images (a model without features ties them all: AUC 0.5). That is the
 * "new arrivals" shelf, and the measure of the visual terms.
 *
 * Why "warm": the other side of the same coin. On the whole catalogue a
 * warm user's test item also competes with every cold item, and where a
 * model puts the cold items as a group (its cold-item prior) moves that
 * user's AUC as much as how well it knows the user. On generated data whose
 * cold items are only ever taken by cold users, the generator's own scores
 * lose "all" to BPR's prior level (tools/datagen_ceilings.py). Among the
 * warm items alone that level plays no part: the ranking is what the model
 * learned of the user and the items it has seen taken (the "known items"
 * shelf).
 *
 * Protocols
 * - VR_EVAL_STANDARD: all of a user's training items are excluded from the
 *   ranking; AUC is the fraction of the remaining items (the negatives: not
 *   excluded, not the test item) scored below the test item.
 * - VR_EVAL_TUTORIAL: as the IUI 2021 VisRec tutorial's evaluation: only the
 *   user's last VR_TUTORIAL_EXCLUDE training items (by time) are excluded;
 *   rank is the test item's 0-based position among the items not excluded
 *   (the tutorial ranks all N items, then subtracts the excluded items
 *   ranked above it), and AUC = (N - 1 - rank) / (N - 1) with N the whole
 *   catalogue, excluded items included.
 * The test item itself is never excluded, even when an exclusion list
 * names it. Rank-based metrics are the same formulas in both protocols:
 * RR = 1 / (rank + 1); Recall@k = [rank < k]; Precision@k = Recall@k / k;
 * nDCG@k = [rank < k] / log2(rank + 2) (one relevant item, ideal DCG 1).
 *
 * Ties: items whose score equals the test item's are ordered at random,
 * and every metric is its expected value over that order. With g items
 * above the test item and t tied with it, rank is uniform on g .. g + t:
 * AUC counts each tie as half (standard: (m - g - t/2) / m over m
 * negatives; tutorial: rank g + t/2 in the formula), RR, Recall and nDCG
 * average over the t + 1 positions. Without ties these are the plain
 * definitions; a constant scorer gets AUC 0.5.
 *
 * AUC is one rule in visrec, vr_auc_count and vr_auc below, which Evaluate
 * and every validation AUC (rankd's trainer, the DVBPR run) call. */
#ifndef VR_METRICS_H
#define VR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define VR_METRICS_MAX_KS 8
#define VR_TUTORIAL_EXCLUDE 10

enum vr_eval_protocol { VR_EVAL_STANDARD = 0, VR_EVAL_TUTORIAL = 1 };

struct vr_metrics_cfg {
	enum vr_eval_protocol protocol;
	int n_ks;                    /* 1 .. VR_METRICS_MAX_KS */
	int ks[VR_METRICS_MAX_KS];   /* cut-offs, each > 0 */
	uint32_t block_users;        /* vr_evaluate: users scored per callback; 0 = 256 */
};

/* One user's metrics; recall/precision/ndcg[i] are at cfg.ks[i]. */
struct vr_user_metrics {
	double rank;                 /* expected 0-based rank among non-excluded items */
	double auc, rr;
	double recall[VR_METRICS_MAX_KS];
	double precision[VR_METRICS_MAX_KS];
	double ndcg[VR_METRICS_MAX_KS];
};

/* Means over a set of users (n_users of them; all zero when none). */
struct vr_metrics_mean {
	uint32_t n_users;
	double auc, rr;
	double recall[VR_METRICS_MAX_KS];
	double precision[VR_METRICS_MAX_KS];
	double ndcg[VR_METRICS_MAX_KS];
};

/* The table Evaluate reports: every user, users with a cold test item,
 * and those users ranked among the cold items (new_items: the metrics of
 * their test item among the n_cold cold items, no exclusion, the standard
 * rule whatever the protocol, as no training list holds a cold item); the
 * users with a warm test item ranked among the warm items (warm_items: the
 * protocol's exclusions, with the catalogue being the warm items, so the
 * tutorial's N is their count). */
struct vr_metrics_table {
	enum vr_eval_protocol protocol;
	int n_ks;
	int ks[VR_METRICS_MAX_KS];
	struct vr_metrics_mean all, cold, new_items, warm_items;
};

/* Standard protocol, ks = {20, 100}, default block. */
void vr_metrics_cfg_init(struct vr_metrics_cfg *cfg);

/* "standard" / "tutorial" → protocol; 0 or VR_EINVAL. */
int vr_metrics_parse_protocol(const char *s, enum vr_eval_protocol *out);
const char *vr_metrics_protocol_name(enum vr_eval_protocol p);

/* The one AUC rule: the share of the negatives scored below the positive,
 * each tie counting half (the expected value over a random order of tied
 * items). A NaN score sorts below every number and ties with NaN: a NaN
 * negative counts as below a positive that has a score, and a NaN
 * positive is below every negative that has one. With no negatives the
 * AUC is 1 (nothing ranks above the positive; as the tutorial's auc_exact
 * when the whole inventory is relevant).
 * vr_auc_count: of scores[0..n), how many rank above pos into *above and
 *   tie with it into *tied (adding to both: count a catalogue in parts).
 * vr_auc: the AUC of a positive over negatives items of which above rank
 *   above it and tied tie with it (above + tied <= negatives). */
void vr_auc_count(float pos, const float *scores, size_t n, uint64_t *above, uint64_t *tied);
double vr_auc(uint64_t negatives, uint64_t above, uint64_t tied);

/* Metrics of one user from scores[0..n_items), the ascending exclusion
 * list (repeats allowed) and the test item; AUC and ties by the rule of
 * vr_auc (another item's NaN score counts as below the test item).
 * Returns 0, or VR_EINVAL for a bad cfg,
 * test_item >= n_items, an exclusion >= n_items or out of order, or a NaN
 * score of the test item. */
int vr_metrics_user(const struct vr_metrics_cfg *cfg, const float *scores, uint32_t n_items,
		    const uint32_t *exclude, size_t n_exclude, uint32_t test_item, struct vr_user_metrics *out);

/* The exclusion list the protocol prescribes for a user whose training
 * items, oldest first, are train[0..n_train): all of them (standard) or the
 * last VR_TUTORIAL_EXCLUDE (tutorial), without test_item, sorted ascending,
 * repeats removed, into out (room for n_train), count into *n_out. */
void vr_metrics_exclusion(const struct vr_metrics_cfg *cfg, const uint32_t *train, size_t n_train,
			  uint32_t test_item, uint32_t *out, size_t *n_out);

/* Accumulating a table: init, add each user, finish (sums to means). */
void vr_metrics_table_init(struct vr_metrics_table *t, const struct vr_metrics_cfg *cfg);
void vr_metrics_table_add(struct vr_metrics_table *t, const struct vr_user_metrics *m, int cold);
/* Adds a cold user's metrics among the cold items to new_items. */
void vr_metrics_table_add_new(struct vr_metrics_table *t, const struct vr_user_metrics *m);
/* Adds a warm user's metrics among the warm items to warm_items. */
void vr_metrics_table_add_warm(struct vr_metrics_table *t, const struct vr_user_metrics *m);
void vr_metrics_table_finish(struct vr_metrics_table *t);

/* One evaluated user: id passed to the scorer, held-out item, training
 * items oldest first. */
struct vr_eval_user {
	uint32_t user;
	uint32_t test_item;
	const uint32_t *train;
	size_t n_train;
};

/* Fills scores (n_users rows of n_items floats, row-major) for users[0..n)
 * of the model; returns 0 or a negative code, which stops the evaluation.
 * Meant to be one GEMM of the users' rows by the item matrix. */
typedef int (*vr_score_block_fn)(void *ctx, const uint32_t *users, uint32_t n_users, float *scores);

/* Runs the protocol over users[0..n_users) with n_items items: scores
 * blocks of cfg->block_users users at once through score(), measures each
 * user and fills out (finished); a user whose test item is cold is also
 * measured among the cold items (new_items), any other user among the warm
 * items (warm_items). item_cold[i] != 0 marks cold items; NULL
 * derives them: an item no user's training list holds. Allocates its
 * buffers once per call. Returns 0, VR_EINVAL (as vr_metrics_user),
 * VR_ENOMEM or the scorer's error. */
int vr_evaluate(const struct vr_metrics_cfg *cfg, const struct vr_eval_user *users, size_t n_users,
		uint32_t n_items, const uint8_t *item_cold, vr_score_block_fn score, void *ctx,
		struct vr_metrics_table *out);

#endif
