/* Ranking metrics and the evaluation driver (metrics.h). A user costs one
 * pass over its score vector: count the items above and tied with the test
 * item over the whole catalogue, then take the excluded items back out, so
 * the inner loop is a branch-free compare over contiguous floats. */
#include "metrics.h"

#include "err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BLOCK_USERS 256

void vr_metrics_cfg_init(struct vr_metrics_cfg *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->protocol = VR_EVAL_STANDARD;
	cfg->n_ks = 2;
	cfg->ks[0] = 20;
	cfg->ks[1] = 100;
}

int vr_metrics_parse_protocol(const char *s, enum vr_eval_protocol *out)
{
	if (!strcmp(s, "standard"))
		*out = VR_EVAL_STANDARD;
	else if (!strcmp(s, "tutorial"))
		*out = VR_EVAL_TUTORIAL;
	else
		return VR_EINVAL;
	return 0;
}

const char *vr_metrics_protocol_name(enum vr_eval_protocol p)
{
	return p == VR_EVAL_TUTORIAL ? "tutorial" : "standard";
}

static int cfg_valid(const struct vr_metrics_cfg *cfg)
{
	if (cfg->protocol != VR_EVAL_STANDARD && cfg->protocol != VR_EVAL_TUTORIAL)
		return 0;
	if (cfg->n_ks < 1 || cfg->n_ks > VR_METRICS_MAX_KS)
		return 0;
	for (int i = 0; i < cfg->n_ks; i++)
		if (cfg->ks[i] <= 0)
			return 0;
	return 1;
}

void vr_auc_count(float pos, const float *scores, size_t n, uint64_t *above, uint64_t *tied)
{
	uint64_t a = 0, t = 0;
	if (isnan(pos)) {
		for (size_t i = 0; i < n; i++)
			t += isnan(scores[i]) != 0;
		a = n - t;
	} else {
		/* A NaN compares false both ways: below pos, as the rule has it. */
		for (size_t i = 0; i < n; i++) {
			a += scores[i] > pos;
			t += scores[i] == pos;
		}
	}
	*above += a;
	*tied += t;
}

double vr_auc(uint64_t negatives, uint64_t above, uint64_t tied)
{
	double g = (double)above, t = (double)tied;
	return negatives ? ((double)negatives - g - t / 2) / (double)negatives : 1.0;
}

int vr_metrics_user(const struct vr_metrics_cfg *cfg, const float *scores, uint32_t n_items,
		    const uint32_t *exclude, size_t n_exclude, uint32_t test_item, struct vr_user_metrics *out)
{
	if (!cfg_valid(cfg) || test_item >= n_items || isnan(scores[test_item]))
		return VR_EINVAL;
	for (size_t i = 0; i < n_exclude; i++)
		if (exclude[i] >= n_items || (i && exclude[i] < exclude[i - 1]))
			return VR_EINVAL;

	const float st = scores[test_item];
	uint64_t above = 0, tied = 0, negatives = n_items - 1, ex_above = 0, ex_tied = 0;
	vr_auc_count(st, scores, n_items, &above, &tied);
	tied--; /* the test item itself */
	for (size_t i = 0; i < n_exclude; i++) {
		uint32_t e = exclude[i];
		if (e == test_item || (i && e == exclude[i - 1]))
			continue;
		negatives--;
		vr_auc_count(st, scores + e, 1, &ex_above, &ex_tied);
	}
	above -= ex_above;
	tied -= ex_tied;

	/* rank is uniform on above .. above + tied. */
	double g = (double)above, t = (double)tied, w = 1.0 / (t + 1.0);
	memset(out, 0, sizeof *out);
	out->rank = g + t / 2;
	if (cfg->protocol == VR_EVAL_STANDARD)
		out->auc = vr_auc(negatives, above, tied);
	else
		out->auc = n_items > 1 ? ((double)n_items - 1 - out->rank) / ((double)n_items - 1) : 1.0;
	for (uint64_t r = above; r <= above + tied; r++)
		out->rr += w / (double)(r + 1);
	for (int j = 0; j < cfg->n_ks; j++) {
		uint64_t k = (uint64_t)cfg->ks[j];
		uint64_t in = k > above ? k - above : 0;
		if (in > tied + 1)
			in = tied + 1;
		out->recall[j] = (double)in * w;
		out->precision[j] = out->recall[j] / (double)k;
		for (uint64_t r = above; r < above + in; r++)
			out->ndcg[j] += w / log2((double)r + 2);
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

void vr_metrics_exclusion(const struct vr_metrics_cfg *cfg, const uint32_t *train, size_t n_train,
			  uint32_t test_item, uint32_t *out, size_t *n_out)
{
	size_t from = 0, n = 0;
	if (cfg->protocol == VR_EVAL_TUTORIAL && n_train > VR_TUTORIAL_EXCLUDE)
		from = n_train - VR_TUTORIAL_EXCLUDE;
	for (size_t i = from; i < n_train; i++)
		if (train[i] != test_item)
			out[n++] = train[i];
	qsort(out, n, sizeof *out, cmp_u32);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (m == 0 || out[i] != out[m - 1])
			out[m++] = out[i];
	*n_out = m;
}

void vr_metrics_table_init(struct vr_metrics_table *t, const struct vr_metrics_cfg *cfg)
{
	memset(t, 0, sizeof *t);
	t->protocol = cfg->protocol;
	t->n_ks = cfg->n_ks;
	memcpy(t->ks, cfg->ks, sizeof t->ks);
}

static void mean_add(struct vr_metrics_mean *s, const struct vr_user_metrics *m, int n_ks)
{
	s->n_users++;
	s->auc += m->auc;
	s->rr += m->rr;
	for (int j = 0; j < n_ks; j++) {
		s->recall[j] += m->recall[j];
		s->precision[j] += m->precision[j];
		s->ndcg[j] += m->ndcg[j];
	}
}

static void mean_finish(struct vr_metrics_mean *s, int n_ks)
{
	if (!s->n_users)
		return;
	double d = (double)s->n_users;
	s->auc /= d;
	s->rr /= d;
	for (int j = 0; j < n_ks; j++) {
		s->recall[j] /= d;
		s->precision[j] /= d;
		s->ndcg[j] /= d;
	}
}

void vr_metrics_table_add(struct vr_metrics_table *t, const struct vr_user_metrics *m, int cold)
{
	mean_add(&t->all, m, t->n_ks);
	if (cold)
		mean_add(&t->cold, m, t->n_ks);
}

void vr_metrics_table_add_new(struct vr_metrics_table *t, const struct vr_user_metrics *m)
{
	mean_add(&t->new_items, m, t->n_ks);
}

void vr_metrics_table_add_warm(struct vr_metrics_table *t, const struct vr_user_metrics *m)
{
	mean_add(&t->warm_items, m, t->n_ks);
}

void vr_metrics_table_finish(struct vr_metrics_table *t)
{
	mean_finish(&t->all, t->n_ks);
	mean_finish(&t->cold, t->n_ks);
	mean_finish(&t->new_items, t->n_ks);
	mean_finish(&t->warm_items, t->n_ks);
}

int vr_evaluate(const struct vr_metrics_cfg *cfg, const struct vr_eval_user *users, size_t n_users,
		uint32_t n_items, const uint8_t *item_cold, vr_score_block_fn score, void *ctx,
		struct vr_metrics_table *out)
{
	int rc = 0;
	uint8_t *cold = NULL;
	float *scores = NULL, *cscores = NULL, *wscores = NULL;
	uint32_t *ids = NULL, *excl = NULL, *cidx = NULL, *cpos = NULL, *widx = NULL;
	size_t max_train = 1;
	uint32_t n_cold = 0, n_warm = 0;
	struct vr_metrics_cfg ccfg = *cfg; /* among the cold items: no exclusion */
	ccfg.protocol = VR_EVAL_STANDARD;
	uint32_t blk = cfg->block_users ? cfg->block_users : DEFAULT_BLOCK_USERS;

	vr_metrics_table_init(out, cfg);
	if (!cfg_valid(cfg) || n_items == 0) {
		rc = VR_EINVAL;
		goto leave;
	}
	if (blk > n_users)
		blk = n_users ? (uint32_t)n_users : 1;
	for (size_t u = 0; u < n_users; u++) {
		if (users[u].test_item >= n_items) {
			rc = VR_EINVAL;
			goto leave;
		}
		if (users[u].n_train > max_train)
			max_train = users[u].n_train;
	}
	if (!item_cold) {
		cold = malloc(n_items);
		if (!cold) {
			rc = VR_ENOMEM;
			goto leave;
		}
		memset(cold, 1, n_items);
		for (size_t u = 0; u < n_users; u++)
			for (size_t i = 0; i < users[u].n_train; i++) {
				if (users[u].train[i] >= n_items) {
					rc = VR_EINVAL;
					goto leave;
				}
				cold[users[u].train[i]] = 0;
			}
		item_cold = cold;
	}
	scores = malloc((size_t)blk * n_items * sizeof(float));
	ids = malloc(blk * sizeof(uint32_t));
	excl = malloc(max_train * sizeof(uint32_t));
	/* The cold items in index order (cidx), the warm ones (widx), and each
	 * item's place among its own kind (cpos). */
	cidx = malloc((size_t)n_items * sizeof(uint32_t));
	widx = malloc((size_t)n_items * sizeof(uint32_t));
	cpos = malloc((size_t)n_items * sizeof(uint32_t));
	if (!scores || !ids || !excl || !cidx || !widx || !cpos) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (uint32_t i = 0; i < n_items; i++) {
		if (item_cold[i]) {
			cpos[i] = n_cold;
			cidx[n_cold++] = i;
		} else {
			cpos[i] = n_warm;
			widx[n_warm++] = i;
		}
	}
	if ((n_cold && !(cscores = malloc((size_t)n_cold * sizeof(float)))) ||
	    (n_warm && !(wscores = malloc((size_t)n_warm * sizeof(float))))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (size_t b = 0; b < n_users; b += blk) {
		uint32_t nb = n_users - b < blk ? (uint32_t)(n_users - b) : blk;
		for (uint32_t u = 0; u < nb; u++)
			ids[u] = users[b + u].user;
		if ((rc = score(ctx, ids, nb, scores)))
			goto leave;
		for (uint32_t u = 0; u < nb; u++) {
			const struct vr_eval_user *eu = &users[b + u];
			struct vr_user_metrics m;
			size_t n_excl;
			vr_metrics_exclusion(cfg, eu->train, eu->n_train, eu->test_item, excl, &n_excl);
			rc = vr_metrics_user(cfg, scores + (size_t)u * n_items, n_items, excl, n_excl, eu->test_item, &m);
			if (rc)
				goto leave;
			vr_metrics_table_add(out, &m, item_cold[eu->test_item] != 0);
			const float *row = scores + (size_t)u * n_items;
			if (item_cold[eu->test_item]) {
				for (uint32_t c = 0; c < n_cold; c++)
					cscores[c] = row[cidx[c]];
				if ((rc = vr_metrics_user(&ccfg, cscores, n_cold, NULL, 0, cpos[eu->test_item], &m)))
					goto leave;
				vr_metrics_table_add_new(out, &m);
				continue;
			}
			/* Among the warm items: the same exclusions at their places
			 * there (ascending still; a cold one, which no training list
			 * holds unless item_cold says otherwise, drops out). */
			for (uint32_t w = 0; w < n_warm; w++)
				wscores[w] = row[widx[w]];
			size_t n_wexcl = 0;
			for (size_t x = 0; x < n_excl; x++)
				if (!item_cold[excl[x]])
					excl[n_wexcl++] = cpos[excl[x]];
			if ((rc = vr_metrics_user(cfg, wscores, n_warm, excl, n_wexcl, cpos[eu->test_item], &m)))
				goto leave;
			vr_metrics_table_add_warm(out, &m);
		}
	}
	vr_metrics_table_finish(out);
leave:
	free(cold);
	free(scores);
	free(cscores);
	free(wscores);
	free(ids);
	free(excl);
	free(cidx);
	free(widx);
	free(cpos);
	return rc;
}
