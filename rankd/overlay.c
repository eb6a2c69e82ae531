/* overlay: interactions added since the served snapshot (overlay.h). */
#include "overlay.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

struct list {
	uint32_t *item; /* ascending, no repeats */
	uint32_t n, cap;
};

struct rk_overlay {
	struct list *user; /* n_users lists, by user index */
	uint32_t n_users;
	uint64_t count;
};

int rk_overlay_create(rk_overlay **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? 0 : VR_ENOMEM;
}

static void drop_all(rk_overlay *o)
{
	for (uint32_t u = 0; u < o->n_users; u++)
		free(o->user[u].item);
	free(o->user);
	o->user = NULL;
	o->n_users = 0;
	o->count = 0;
}

void rk_overlay_destroy(rk_overlay *o)
{
	if (!o)
		return;
	drop_all(o);
	free(o);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int list_has(const struct list *l, uint32_t i)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->item[mid] < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->item[lo] == i;
}

/* Merges the ascending new items add[0..n) (none of them in l) into l. */
static int list_merge(struct list *l, const uint32_t *add, uint32_t n)
{
	if (l->n + n > l->cap) {
		uint32_t cap = l->cap * 2 > l->n + n ? l->cap * 2 : l->n + n;
		uint32_t *p = realloc(l->item, (size_t)cap * sizeof *p);
		if (!p)
			return VR_ENOMEM;
		l->item = p;
		l->cap = cap;
	}
	/* From the back, so the merge needs no second buffer. */
	uint32_t a = l->n, b = n, w = l->n + n;
	while (b) {
		if (a && l->item[a - 1] > add[b - 1])
			l->item[--w] = l->item[--a];
		else
			l->item[--w] = add[--b];
	}
	l->n += n;
	return 0;
}

int rk_overlay_add(rk_overlay *o, const uint32_t *users, const uint32_t *items, size_t n,
		   const rk_csr *seen)
{
	uint64_t *pairs = NULL;
	uint32_t *add = NULL, max_user = 0;
	size_t m = 0;
	int rc = 0;
	if (!n)
		return 0;
	if (!(pairs = malloc(n * sizeof *pairs)) || !(add = malloc(n * sizeof *add))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (size_t x = 0; x < n; x++) {
		uint32_t u = users[x], i = items[x];
		if (seen && u < seen->n_users && rk_csr_has(seen, u, i))
			continue;
		pairs[m++] = (uint64_t)u << 32 | i;
		if (u > max_user)
			max_user = u;
	}
	if (!m)
		goto leave;
	qsort(pairs, m, sizeof *pairs, cmp_u64);
	if (max_user >= o->n_users) {
		uint32_t grow = max_user + 1 > o->n_users * 2 ? max_user + 1 : o->n_users * 2;
		struct list *p = realloc(o->user, (size_t)grow * sizeof *p);
		if (!p) {
			rc = VR_ENOMEM;
			goto leave;
		}
		memset(p + o->n_users, 0, (size_t)(grow - o->n_users) * sizeof *p);
		o->user = p;
		o->n_users = grow;
	}
	for (size_t x = 0; x < m && !rc;) {
		uint32_t u = (uint32_t)(pairs[x] >> 32), k = 0;
		struct list *l = &o->user[u];
		for (; x < m && (uint32_t)(pairs[x] >> 32) == u; x++) {
			uint32_t i = (uint32_t)pairs[x];
			if ((k && add[k - 1] == i) || list_has(l, i))
				continue;
			add[k++] = i;
		}
		if (k && !(rc = list_merge(l, add, k)))
			o->count += k;
	}
leave:
	free(pairs);
	free(add);
	return rc;
}

void rk_overlay_prune(rk_overlay *o, const rk_csr *seen)
{
	uint32_t users = o->n_users < seen->n_users ? o->n_users : seen->n_users;
	for (uint32_t u = 0; u < users; u++) {
		struct list *l = &o->user[u];
		uint32_t keep = 0;
		for (uint32_t x = 0; x < l->n; x++)
			if (!rk_csr_has(seen, u, l->item[x]))
				l->item[keep++] = l->item[x];
		o->count -= l->n - keep;
		l->n = keep;
		if (!keep) {
			free(l->item);
			*l = (struct list){ 0 };
		}
	}
	if (!o->count)
		drop_all(o);
}

const uint32_t *rk_overlay_items(const rk_overlay *o, uint32_t u, size_t *n)
{
	if (u >= o->n_users || !o->user[u].n) {
		*n = 0;
		return NULL;
	}
	*n = o->user[u].n;
	return o->user[u].item;
}

uint64_t rk_overlay_count(const rk_overlay *o)
{
	return o->count;
}
