/* The top-k cache's refresh after a new model (service.h,
 * rk_service_refresh): one thread that refills the lists of the users who
 * were cached under the previous model, most recently used first, so that
 * they hit at once instead of each paying a scan on its next call.
 *
 * Threads and ownership: the refresher is started by rk_service_open when
 * the cache is on and sleeps on a condition variable (an idle rankd uses
 * no CPU). rk_service_publish hands it the user list (replacing one not
 * finished: a newer model makes it moot) and signals. It runs at the
 * lowest priority Linux offers (SCHED_IDLE: it gets a core only when no
 * serving thread wants one), takes ix_lock shared for one user's scan at a
 * time, and gives up its list when the served model is no longer the one
 * it was given. rk_service_close sets stop, signals and joins: a scan in
 * progress finishes first (under a millisecond at 10k items).
 *
 * What it stores is what a Recommend of the user would store: the exact
 * top-RK_TCACHE_MIN_DEPTH with the user's exclusions (the snapshot's seen
 * items and the overlay's), keyed the same way (tcache.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* SCHED_IDLE */
#endif
#include "service.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "tcache.h"

struct rk_refresher {
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	uint64_t version;  /* the model the list is for */
	uint32_t *users;   /* pending list (owned), or NULL */
	size_t n_users;
};

/* Refills user u's list under s. Returns 0 or an error code. */
static int refresh_one(rk_service *svc, rk_served *s, uint32_t u, struct rk_topk_ws *ws,
		       float *row, uint32_t **excl, size_t *excl_cap, struct rk_hit *hits)
{
	if (u >= s->model->d.n_users || u >= s->seen.n_users)
		return 0;
	size_t n_seen = (size_t)(s->seen.off[u + 1] - s->seen.off[u]), n_live = 0;
	const uint32_t *seen = s->seen.item + s->seen.off[u];
	const uint32_t *live = rk_overlay_items(svc->live, u, &n_live);
	if (n_seen + n_live > *excl_cap) {
		uint32_t *p = realloc(*excl, (n_seen + n_live) * sizeof *p);
		if (!p)
			return VR_ENOMEM;
		*excl = p;
		*excl_cap = n_seen + n_live;
	}
	/* Two ascending lists merged. */
	size_t x = 0, y = 0, m = 0;
	while (x < n_seen || y < n_live)
		(*excl)[m++] = y == n_live || (x < n_seen && seen[x] <= live[y]) ? seen[x++] : live[y++];
	rk_model_user_row(s->model, u, row);
	uint64_t seq = rk_tcache_seq(svc->tcache);
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	struct rk_topk_req q = { .user = row, .k = RK_TCACHE_MIN_DEPTH, .exclude = *excl, .n_exclude = m };
	size_t got = 0;
	size_t room = view.n < RK_TCACHE_MIN_DEPTH ? view.n : RK_TCACHE_MIN_DEPTH;
	int rc = room ? rk_topk(&view, &q, ws, hits, room, &got) : 0;
	rk_index_release(&view);
	if (!rc && room)
		rc = rk_tcache_put(svc->tcache, s->info.version, u, n_live, seq, RK_TCACHE_MIN_DEPTH,
				   hits, got);
	return rc;
}

static void *refresher_main(void *arg)
{
	rk_service *svc = arg;
	struct rk_refresher *f = svc->refresher;
	struct rk_topk_ws *ws = NULL;
	float *row = NULL;
	uint32_t *excl = NULL;
	size_t excl_cap = 0;
	struct rk_hit hits[RK_TCACHE_MIN_DEPTH];
	struct sched_param sp = { 0 };
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp))
		VR_WARN("the top-k cache's refresh thread runs at normal priority: SCHED_IDLE refused");
	pthread_mutex_lock(&f->mu);
	for (;;) {
		while (!f->stop && !f->users)
			pthread_cond_wait(&f->cv, &f->mu);
		if (f->stop)
			break;
		uint32_t *users = f->users;
		size_t n = f->n_users, done = 0;
		uint64_t version = f->version;
		f->users = NULL;
		pthread_mutex_unlock(&f->mu);
		int rc = ws ? 0 : rk_topk_ws_create(&ws);
		for (size_t x = 0; !rc && x < n; x++) {
			pthread_mutex_lock(&f->mu);
			int moot = f->stop || f->users; /* shutting down, or a newer model */
			pthread_mutex_unlock(&f->mu);
			if (moot)
				break;
			pthread_rwlock_rdlock(&svc->ix_lock);
			rk_served *s = rk_serving_get(&svc->serving);
			if (!s || s->info.version != version) {
				pthread_rwlock_unlock(&svc->ix_lock);
				rk_served_unref(s);
				break;
			}
			float *r = realloc(row, (size_t)rk_model_dim(s->model) * sizeof *row);
			if (!r)
				rc = VR_ENOMEM;
			else
				row = r;
			if (!rc)
				rc = refresh_one(svc, s, users[x], ws, row, &excl, &excl_cap, hits);
			pthread_rwlock_unlock(&svc->ix_lock);
			rk_served_unref(s);
			done += !rc;
		}
		if (rc)
			VR_WARN("the top-k cache's refresh stopped after %zu of %zu users: %s", done, n,
				vr_strerror(rc));
		else
			VR_DEBUG("top-k cache: refreshed %zu of %zu users for model v%llu", done, n,
				 (unsigned long long)version);
		free(users);
		pthread_mutex_lock(&f->mu);
	}
	pthread_mutex_unlock(&f->mu);
	rk_topk_ws_destroy(ws);
	free(row);
	free(excl);
	return NULL;
}

int rk_refresher_start(rk_service *svc)
{
	struct rk_refresher *f = calloc(1, sizeof *f);
	if (!f)
		return VR_ENOMEM;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	svc->refresher = f;
	if (pthread_create(&f->tid, NULL, refresher_main, svc)) {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->mu);
		free(f);
		svc->refresher = NULL;
		return VR_ENOMEM;
	}
	return 0;
}

void rk_refresher_stop(rk_service *svc)
{
	struct rk_refresher *f = svc->refresher;
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stop = 1;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->tid, NULL);
	free(f->users);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	free(f);
	svc->refresher = NULL;
}

void rk_refresher_give(rk_service *svc, uint64_t version, uint32_t *users, size_t n)
{
	struct rk_refresher *f = svc->refresher;
	if (!f || !n) {
		free(users);
		return;
	}
	pthread_mutex_lock(&f->mu);
	free(f->users);
	f->users = users;
	f->n_users = n;
	f->version = version;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
}
