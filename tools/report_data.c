/* report_data: the data set behind the report (report.h): the
 * interactions read with icsv, users and items interned to dense indices,
 * each user's rows in time order (the last one the test item), and the
 * users the page shows. */
#include "report.h"

#include "err.h"
#include "icsv.h"
#include "intern.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the data set -------------------------------------------------------- */

struct row {
	uint32_t user, item;
	int64_t ts;
};

struct rp_dataset {
	vr_intern users, items;     /* ids interned to dense indices */
	struct row *rows;           /* sorted by user, then time */
	size_t nrows;
	size_t *first;              /* per user: its first row */
	size_t *count;              /* per user: its rows */
	uint32_t *train_count;      /* per item: training interactions */
	uint32_t *by_id;            /* user indices sorted by id */
};

/* The index of s in t, added when absent, or VR_ENOMEM / VR_ETOOBIG. */
static int64_t intern(vr_intern *t, const char *s)
{
	size_t len = strlen(s);
	int rc = vr_intern_reserve(t, 1, len + 1);
	return rc ? rc : (int64_t)vr_intern_add(t, s, len);
}

/* The index of id in t, or -1. */
static int64_t find(const vr_intern *t, const char *id)
{
	uint32_t k = vr_intern_find(t, id, strlen(id));
	return k == VR_INTERN_NONE ? -1 : (int64_t)k;
}

static int cmp_rows(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	if (x->user != y->user)
		return x->user < y->user ? -1 : 1;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return x->item < y->item ? -1 : x->item > y->item;
}

static int cmp_by_name(const void *a, const void *b, void *tab)
{
	const vr_intern *t = tab;
	return strcmp(vr_intern_id(t, *(const uint32_t *)a, NULL),
		      vr_intern_id(t, *(const uint32_t *)b, NULL));
}

void rp_dataset_free(rp_dataset *ds)
{
	if (!ds)
		return;
	vr_intern_free(&ds->users);
	vr_intern_free(&ds->items);
	free(ds->rows);
	free(ds->first);
	free(ds->count);
	free(ds->train_count);
	free(ds->by_id);
	free(ds);
}

int rp__fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

int rp_dataset_load(rp_dataset **out, const char *data_dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	icsv *r = NULL;
	icsv_row row;
	size_t cap = 0;
	int rc;
	rp_dataset *ds = calloc(1, sizeof *ds);
	if (!ds)
		return rp__fail(err, errlen, VR_ENOMEM, "out of memory");
	snprintf(path, sizeof path, "%s/interactions.csv", data_dir);
	if ((rc = icsv_open(&r, path))) {
		rc = rp__fail(err, errlen, rc, "cannot open %s: %s", path, vr_strerror(rc));
		goto fail;
	}
	while (!(rc = icsv_next(r, &row))) {
		if (ds->nrows == cap) {
			cap = cap ? 2 * cap : 65536;
			struct row *rows = realloc(ds->rows, cap * sizeof *rows);
			if (!rows) {
				rc = VR_ENOMEM;
				break;
			}
			ds->rows = rows;
		}
		int64_t u = intern(&ds->users, row.user);
		int64_t i = u < 0 ? u : intern(&ds->items, row.item);
		if (i < 0) {
			rc = (int)i;
			break;
		}
		ds->rows[ds->nrows++] = (struct row){ (uint32_t)u, (uint32_t)i, row.timestamp };
	}
	if (rc == VR_EINVAL) {
		rc = rp__fail(err, errlen, rc, "%s", icsv_error(r));
		goto fail;
	}
	if (rc != VR_EEOF) {
		rc = rp__fail(err, errlen, rc, "reading %s: %s", path, vr_strerror(rc));
		goto fail;
	}
	if (!ds->users.n) {
		rc = rp__fail(err, errlen, VR_EINVAL, "%s holds no interactions", path);
		goto fail;
	}
	qsort(ds->rows, ds->nrows, sizeof *ds->rows, cmp_rows);
	ds->first = calloc(ds->users.n, sizeof *ds->first);
	ds->count = calloc(ds->users.n, sizeof *ds->count);
	ds->train_count = calloc(ds->items.n, sizeof *ds->train_count);
	ds->by_id = malloc(ds->users.n * sizeof *ds->by_id);
	if (!ds->first || !ds->count || !ds->train_count || !ds->by_id) {
		rc = rp__fail(err, errlen, VR_ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t k = ds->nrows; k-- > 0;) {
		uint32_t u = ds->rows[k].user;
		ds->first[u] = k;
		/* The first row seen from the end is the user's test item. */
		if (ds->count[u]++)
			ds->train_count[ds->rows[k].item]++;
	}
	for (size_t u = 0; u < ds->users.n; u++)
		ds->by_id[u] = (uint32_t)u;
	qsort_r(ds->by_id, ds->users.n, sizeof *ds->by_id, cmp_by_name, &ds->users);
	icsv_close(r);
	*out = ds;
	return 0;
fail:
	if (rc == VR_ENOMEM)
		rp__fail(err, errlen, rc, "out of memory");
	icsv_close(r);
	rp_dataset_free(ds);
	return rc;
}

static void fill_user(const rp_dataset *ds, uint32_t u, rp_user *out)
{
	const struct row *test = &ds->rows[ds->first[u] + ds->count[u] - 1];
	out->id = vr_intern_id(&ds->users, u, NULL);
	out->test_item = vr_intern_id(&ds->items, test->item, NULL);
	out->test_cold = ds->train_count[test->item] == 0;
	out->n_train = ds->count[u] - 1;
}

int rp_dataset_user(const rp_dataset *ds, const char *id, rp_user *out)
{
	int64_t u = find(&ds->users, id);
	if (u < 0)
		return VR_ENOTFOUND;
	fill_user(ds, (uint32_t)u, out);
	return 0;
}

size_t rp_dataset_recent(const rp_dataset *ds, const char *id, const char **out, size_t n)
{
	int64_t u = find(&ds->users, id);
	if (u < 0)
		return 0;
	size_t got = 0, train = ds->count[u] - 1;
	for (size_t k = train; k-- > 0 && got < n;)
		out[got++] = vr_intern_id(&ds->items, ds->rows[ds->first[u] + k].item, NULL);
	return got;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

void rp_dataset_stats(const rp_dataset *ds, rp_stats *out)
{
	memset(out, 0, sizeof *out);
	out->users = ds->users.n;
	out->items = ds->items.n;
	out->interactions = ds->nrows;
	size_t *act = malloc(ds->users.n * sizeof *act);
	for (size_t u = 0; u < ds->users.n; u++) {
		rp_user x;
		fill_user(ds, (uint32_t)u, &x);
		out->cold_test_users += x.test_cold;
		if (act)
			act[u] = ds->count[u];
	}
	for (size_t i = 0; i < ds->items.n; i++)
		out->cold_items += ds->train_count[i] == 0;
	out->activity_mean = (double)ds->nrows / ds->users.n;
	if (act) {
		qsort(act, ds->users.n, sizeof *act, cmp_size);
		out->activity_min = act[0];
		out->activity_median = act[ds->users.n / 2];
		out->activity_max = act[ds->users.n - 1];
		free(act);
	}
}

/* Takes up to want users of one kind (cold or warm test item), spread
 * evenly over those that qualify, into out. */
static size_t pick_kind(const rp_dataset *ds, int cold, size_t min_train, size_t want,
			rp_user *out)
{
	size_t n = 0;
	for (size_t k = 0; k < ds->users.n; k++) {
		rp_user x;
		fill_user(ds, ds->by_id[k], &x);
		n += x.test_cold == cold && x.n_train >= min_train;
	}
	if (!n || !want)
		return 0;
	size_t got = 0, seen = 0;
	for (size_t k = 0; k < ds->users.n && got < want; k++) {
		rp_user x;
		fill_user(ds, ds->by_id[k], &x);
		if (x.test_cold != cold || x.n_train < min_train)
			continue;
		/* The j-th pick is the qualifying user at about (j + 0.5) n / want. */
		if (seen++ == (size_t)((got + 0.5) * (double)n / (double)want))
			out[got++] = x;
	}
	return got;
}

/* Cold users first (about half), then warm ones, each with at least
 * min_train training items. */
static size_t pick_both(const rp_dataset *ds, size_t n, size_t min_train, rp_user *out)
{
	size_t got = pick_kind(ds, 1, min_train, (n + 1) / 2, out);
	return got + pick_kind(ds, 0, min_train, n - got, out + got);
}

size_t rp_pick_users(const rp_dataset *ds, size_t n, rp_user *out)
{
	/* A few training items make a fuller grid; where too few users have
	 * them, any user will do. */
	size_t got = pick_both(ds, n, 4, out);
	return got == n ? got : pick_both(ds, n, 1, out);
}
