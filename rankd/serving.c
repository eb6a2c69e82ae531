/* serving: the served model and its holder (serving.h). */
#include "serving.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct pop_ctx {
	const uint32_t *count;
	const float *beta;
	uint32_t n_beta;
};

static int pop_cmp(const void *a, const void *b, void *arg)
{
	const struct pop_ctx *c = arg;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	if (c->count[x] != c->count[y])
		return c->count[x] > c->count[y] ? -1 : 1;
	float bx = x < c->n_beta ? c->beta[x] : 0.0f, by = y < c->n_beta ? c->beta[y] : 0.0f;
	if (bx != by)
		return bx > by ? -1 : 1;
	return x < y ? -1 : x > y;
}

int rk_served_create(rk_served **out, rk_model *model, struct rk_index *index, rk_csr *all,
		     const rk_served_info *info)
{
	rk_served *s = calloc(1, sizeof *s);
	int rc = VR_ENOMEM;
	*out = NULL;
	if (!s)
		goto fail;
	atomic_init(&s->refs, 1);
	s->info = *info;
	s->model = model;
	s->index = index;
	model = NULL;
	index = NULL;
	s->seen = *all;
	memset(all, 0, sizeof *all);
	if (rk_index_dim(s->index) != rk_model_dim(s->model)) {
		rc = VR_EINVAL;
		goto fail;
	}
	uint32_t n = s->seen.n_items;
	if (info->use_all) {
		s->train = s->seen; /* shared: freed once, see rk_served_unref */
	} else {
		s->test_item = malloc(((size_t)s->seen.n_users + 1) * sizeof *s->test_item);
		if (!s->test_item || (rc = rk_split_last(&s->seen, &s->train, s->test_item)))
			goto fail;
	}
	s->n_counted = n;
	s->count = calloc((size_t)n + 1, sizeof *s->count);
	s->pop = malloc(((size_t)n + 1) * sizeof *s->pop);
	s->pop_rank = malloc(((size_t)n + 1) * sizeof *s->pop_rank);
	if (!s->count || !s->pop || !s->pop_rank) {
		rc = VR_ENOMEM;
		goto fail;
	}
	rk_csr_item_counts(&s->train, s->count);
	for (uint32_t i = 0; i < n; i++)
		s->pop[i] = i;
	struct pop_ctx pc = { s->count, s->model->beta_i, s->model->d.n_items };
	qsort_r(s->pop, n, sizeof *s->pop, pop_cmp, &pc);
	for (uint32_t r = 0; r < n; r++)
		s->pop_rank[s->pop[r]] = r;
	if (!(s->cold_items = malloc(((size_t)n + 1) * sizeof *s->cold_items))) {
		rc = VR_ENOMEM;
		goto fail;
	}
	if (!(s->cold_mark = malloc((size_t)n + 1))) {
		rc = VR_ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < n; i++) {
		s->cold_mark[i] = !s->count[i];
		if (!s->count[i])
			s->cold_items[s->n_cold++] = i;
	}
	*out = s;
	return 0;
fail:
	rk_model_free(model);
	rk_index_destroy(index);
	rk_csr_free(all);
	rk_served_unref(s);
	return rc;
}

void rk_served_ref(rk_served *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void rk_served_unref(rk_served *s)
{
	if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (s->train.off != s->seen.off)
		rk_csr_free(&s->train);
	rk_csr_free(&s->seen);
	free(s->test_item);
	free(s->count);
	free(s->pop);
	free(s->pop_rank);
	free(s->cold_items);
	free(s->cold_mark);
	rk_index_destroy(s->index);
	rk_model_free(s->model);
	free(s);
}

int rk_served_needs_vectors(const rk_served *s)
{
	return rk_model_feature_dims(s->model) > 0;
}

int rk_served_item_row(const rk_served *s, uint32_t i, const float *f_i, float *row)
{
	float *zero = NULL;
	uint32_t f = rk_model_feature_dims(s->model);
	if (f && !f_i) {
		if (!(zero = calloc(f, sizeof(float))))
			return VR_ENOMEM;
		f_i = zero;
	}
	int rc = rk_model_item_row(s->model, i, f ? f_i : NULL, row);
	free(zero);
	return rc;
}

int rk_served_pad(rk_served *s, uint32_t n)
{
	if (!s->model->prior_rows)
		return rk_index_pad(s->index, n);
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	uint32_t have = view.n;
	rk_index_release(&view);
	if (have >= n)
		return 0;
	/* The row of an item with no vector yet: the prior's mean [β, γ]
	 * (the same for every such item), its visual part zero. */
	float *row = malloc((size_t)rk_model_dim(s->model) * sizeof *row);
	int rc = row ? rk_served_item_row(s, have, NULL, row) : VR_ENOMEM;
	for (uint32_t i = have; !rc && i < n; i++)
		rc = rk_index_set_row(s->index, i, row);
	free(row);
	return rc;
}

int rk_served_set_row(rk_served *s, uint32_t i, const float *row)
{
	return rk_index_set_row(s->index, i, row);
}

/* Place in the popularity order: counted items by pop_rank, the rest after
 * them by index. */
static uint64_t pop_place(const rk_served *s, uint32_t i)
{
	return i < s->n_counted ? s->pop_rank[i] : (uint64_t)s->n_counted + i;
}

static int place_cmp(const void *a, const void *b, void *arg)
{
	uint64_t x = pop_place(arg, *(const uint32_t *)a), y = pop_place(arg, *(const uint32_t *)b);
	return x < y ? -1 : x > y;
}

static void hit(const rk_served *s, uint32_t i, struct rk_hit *out)
{
	out->item = i;
	out->score = i < s->n_counted ? (float)s->count[i] : 0.0f;
}

int rk_served_popular(const rk_served *s, const struct rk_index_view *view,
		      const uint32_t *excl, size_t n_excl, const uint32_t *cand, size_t n_cand,
		      uint32_t *cand_scratch, int k, struct rk_hit *out, size_t *n_out)
{
	size_t n = 0, want = k > 0 ? (size_t)k : 0;
	if (cand) {
		if (!cand_scratch)
			return VR_ENOMEM;
		memcpy(cand_scratch, cand, n_cand * sizeof *cand);
		qsort_r(cand_scratch, n_cand, sizeof *cand_scratch, place_cmp, (void *)s);
		for (size_t c = 0; c < n_cand && n < want; c++) {
			uint32_t i = cand_scratch[c];
			if ((c && i == cand_scratch[c - 1]) || rk_ids_has(excl, n_excl, i))
				continue;
			hit(s, i, &out[n++]);
		}
	} else {
		uint32_t counted = s->n_counted < view->n ? s->n_counted : view->n;
		for (uint32_t r = 0; r < s->n_counted && n < want; r++) {
			uint32_t i = s->pop[r];
			if (i < counted && !rk_ids_has(excl, n_excl, i))
				hit(s, i, &out[n++]);
		}
		for (uint32_t i = counted; i < view->n && n < want; i++)
			if (!rk_ids_has(excl, n_excl, i))
				hit(s, i, &out[n++]);
	}
	*n_out = n;
	return 0;
}

size_t rk_served_cold_items(const rk_served *s, const struct rk_index_view *view, uint32_t *out)
{
	size_t n = 0;
	for (uint32_t c = 0; c < s->n_cold && s->cold_items[c] < view->n; c++)
		out[n++] = s->cold_items[c];
	for (uint32_t i = s->n_counted; i < view->n; i++)
		out[n++] = i;
	return n;
}

/* Hit a ranks before hit b: higher score, then lower index; NaN last. */
static int better(const struct rk_hit *a, const struct rk_hit *b)
{
	float x = isnan(a->score) ? -INFINITY : a->score, y = isnan(b->score) ? -INFINITY : b->score;
	return x > y || (x == y && a->item < b->item);
}

/* Restores the heap (worst hit at the root) below place at. */
static void sift_down(struct rk_hit *h, size_t n, size_t at)
{
	for (;;) {
		size_t l = 2 * at + 1, r = l + 1, w = at;
		if (l < n && better(&h[w], &h[l]))
			w = l;
		if (r < n && better(&h[w], &h[r]))
			w = r;
		if (w == at)
			return;
		struct rk_hit t = h[at];
		h[at] = h[w];
		h[w] = t;
		at = w;
	}
}

static int hit_order(const void *a, const void *b)
{
	return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

int rk_served_audience(const rk_served *s, uint32_t item, const float *row, int include_seen,
		       int k, float *scores, struct rk_hit *out, size_t *n_out)
{
	const rk_model *m = s->model;
	uint32_t nu = m->d.n_users, kk = m->d.k, k2 = m->d.k2;
	size_t n = 0, want = k > 0 ? (size_t)k : 0;
	*n_out = 0;
	if (!want)
		return VR_EINVAL;
	for (uint32_t u = 0; u < nu; u++)
		scores[u] = row[0];
	if (kk)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nu, (int)kk, 1.0f, m->gamma_u, (int)kk,
			    row + 1, 1, 1.0f, scores, 1);
	if (k2)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nu, (int)k2, 1.0f, m->theta_u, (int)k2,
			    row + 1 + kk, 1, 1.0f, scores, 1);
	/* A bounded heap of the best `want` users, the worst at the root. */
	for (uint32_t u = 0; u < nu; u++) {
		if (!include_seen && u < s->seen.n_users && item < s->seen.n_items &&
		    rk_csr_has(&s->seen, u, item))
			continue;
		struct rk_hit h = { u, scores[u] };
		if (n < want) {
			out[n++] = h;
			for (size_t at = n - 1; at > 0 && better(&out[(at - 1) / 2], &out[at]); at = (at - 1) / 2) {
				struct rk_hit t = out[at];
				out[at] = out[(at - 1) / 2];
				out[(at - 1) / 2] = t;
			}
		} else if (better(&h, &out[0])) {
			out[0] = h;
			sift_down(out, n, 0);
		}
	}
	qsort(out, n, sizeof *out, hit_order);
	*n_out = n;
	return 0;
}

void rk_serving_init(rk_serving *h)
{
	pthread_mutex_init(&h->mu, NULL);
	h->cur = NULL;
}

void rk_serving_destroy(rk_serving *h)
{
	rk_served_unref(h->cur);
	h->cur = NULL;
	pthread_mutex_destroy(&h->mu);
}

rk_served *rk_serving_get(rk_serving *h)
{
	pthread_mutex_lock(&h->mu);
	rk_served *s = h->cur;
	if (s)
		rk_served_ref(s);
	pthread_mutex_unlock(&h->mu);
	return s;
}

rk_served *rk_serving_swap(rk_serving *h, rk_served *next)
{
	pthread_mutex_lock(&h->mu);
	rk_served *old = h->cur;
	h->cur = next;
	pthread_mutex_unlock(&h->mu);
	return old;
}
