/* rankd's handlers of visrec.v1.Rank but Train (training.c): they check a
 * request, take the served model by reference and the interactions' read
 * lock, and rank through topk.h.
 *
 * Recommend, Score and Info run inline on a server worker and allocate
 * nothing once warm: each worker keeps a scratch (top-k workspace, user
 * row, id lists, hits, response items) that grows to the largest request it
 * has seen and is freed when the thread ends.
 *
 * Exclusions: a user's seen items are those of the served snapshot plus
 * those AddInteractions stored since it was built (the overlay, svc->live),
 * merged in the scratch; a call takes the snapshot under ix_lock shared
 * (service.h) so the two agree while a new model is swapped in.
 *
 * The top-k cache (tcache.h): an exact Recommend of a known user over the
 * whole catalogue without cold slots or include_seen is answered from the
 * user's cached list when its key holds, and fills it otherwise (to at
 * least RK_TCACHE_MIN_DEPTH places); every other shape, and every call of
 * an rankd run with --topk-approx, scans. The cache's catalogue sequence is
 * read before the index view is taken (tcache.h's ordering).
 *
 * Unknown users: a user the served model does not know (never seen, or
 * seen only after the last Train) gets the popularity ranking (training
 * counts, ties by β_i) with RecommendResponse.fallback saying so; the
 * user's seen items, if rankd has any, and the context_items of the request
 * are excluded. */
#include "service.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "metrics.h"
#include "sampler.h"
#include "tcache.h"
#include "visrec/v1/rankd.pb-c.h"

#define ERR_LEN 512

static const char FALLBACK_UNKNOWN[] = "popularity: unknown user";
static const char FALLBACK_LATE[] =
	"popularity: the user's interactions arrived after the last Train; call Train to rank for them";

/* ---- per-thread scratch ---------------------------------------------------- */

struct scratch {
	struct rk_topk_ws *ws;
	float *user;
	uint32_t *cand, *excl, *sort, *cold;
	struct rk_hit *hits, *cold_hits, *merged;
	float *scores;
	Visrec__V1__ScoredItem *items;
	Visrec__V1__ScoredItem **ptrs;
	size_t user_cap, cand_cap, excl_cap, sort_cap, hits_cap, scores_cap, items_cap, ptrs_cap;
	size_t cold_cap, cold_hits_cap, merged_cap;
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
	struct scratch *sc = p;
	if (!sc)
		return;
	rk_topk_ws_destroy(sc->ws);
	free(sc->user);
	free(sc->cand);
	free(sc->excl);
	free(sc->sort);
	free(sc->hits);
	free(sc->cold);
	free(sc->cold_hits);
	free(sc->merged);
	free(sc->scores);
	free(sc->items);
	free(sc->ptrs);
	free(sc);
}

static void scratch_key_init(void)
{
	pthread_key_create(&scratch_key, scratch_free);
}

static struct scratch *scratch_get(void)
{
	pthread_once(&scratch_once, scratch_key_init);
	struct scratch *sc = pthread_getspecific(scratch_key);
	if (sc)
		return sc;
	if (!(sc = calloc(1, sizeof *sc)))
		return NULL;
	if (rk_topk_ws_create(&sc->ws) || pthread_setspecific(scratch_key, sc)) {
		scratch_free(sc);
		return NULL;
	}
	return sc;
}

/* Grows *p to hold need elements of elem bytes. 0 or VR_ENOMEM. */
static int reserve(void *p, size_t *cap, size_t need, size_t elem)
{
	void **pp = p;
	if (need <= *cap)
		return 0;
	size_t c = *cap * 2 > need ? *cap * 2 : need;
	void *q = realloc(*pp, c * elem);
	if (!q)
		return VR_ENOMEM;
	*pp = q;
	*cap = c;
	return 0;
}

/* Both ScoredItem arrays for n items. */
static int reserve_items(struct scratch *sc, size_t n)
{
	if (reserve(&sc->items, &sc->items_cap, n, sizeof *sc->items) ||
	    reserve(&sc->ptrs, &sc->ptrs_cap, n, sizeof *sc->ptrs))
		return VR_ENOMEM;
	return 0;
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int error_text(char *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int error_text(char *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, ERR_LEN, fmt, ap);
	va_end(ap);
	return code;
}

static const char *no_model(void)
{
	return "no model has been trained yet; call Train";
}

/* ---- ranking one request ------------------------------------------------- */

/* Checks an id field of a request against the id rule (ids.h), named
 * printf-style ("interactions[3].user_id"). GRPC_STATUS_OK, or
 * INVALID_ARGUMENT with the message in err. */
static int check_id(char *err, const char *id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int check_id(char *err, const char *id, const char *fmt, ...)
{
	char name[96];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	if (vr_id_check_named(name, id, strlen(id), err, ERR_LEN))
		return GRPC_STATUS_INVALID_ARGUMENT;
	return GRPC_STATUS_OK;
}

int rk_check_recommend(const rk_service *svc, const Visrec__V1__RecommendRequest *r,
		       const char *at, char *err)
{
	int code;
	if ((code = check_id(err, r->user_id, "%suser_id", at)))
		return code;
	if (r->k < 1 || r->k > svc->max_k)
		return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
				  "%sk must be between 1 and %d (got %d)", at, svc->max_k, r->k);
	if (r->cold_slots < 0 || r->cold_slots > r->k)
		return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
				  "%scold_slots must be between 0 and k (%d); got %d", at, r->k, r->cold_slots);
	if (r->n_candidates > RK_MAX_CANDIDATES)
		return error_text(err, GRPC_STATUS_INVALID_ARGUMENT, "%s%zu candidates; at most %d per call",
				  at, r->n_candidates, RK_MAX_CANDIDATES);
	for (size_t c = 0; c < r->n_candidates; c++)
		if ((code = check_id(err, r->candidates[c], "%scandidates[%zu]", at, c)))
			return code;
	for (size_t c = 0; c < r->n_context_items; c++)
		if ((code = check_id(err, r->context_items[c], "%scontext_items[%zu]", at, c)))
			return code;
	return GRPC_STATUS_OK;
}

/* Maps candidate ids to indices with a row in view. Caller holds ix_lock. */
static int map_candidates(rk_service *svc, const struct rk_index_view *view, char **ids, size_t n,
			  uint32_t *out, char *err)
{
	for (size_t c = 0; c < n; c++) {
		uint32_t i;
		if (rk_items_find(svc->ix, ids[c], strlen(ids[c]), &i))
			return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
					  "candidates[%zu]: unknown item \"%.256s\"", c, ids[c]);
		if (i >= view->n)
			return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
					  "candidates[%zu]: item \"%.256s\" is not in the served catalogue yet; "
					  "retry in a moment", c, ids[c]);
		out[c] = i;
	}
	return GRPC_STATUS_OK;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* The model's user index of id, or RK_NONE; *late = 1 when rankd knows the
 * user but the model does not (interactions added after training). *ix_user,
 * when not NULL, is rankd's index of the user (RK_NONE when unknown). */
static uint32_t model_user(rk_service *svc, const rk_served *s, const char *id, int *late,
			   uint32_t *ix_user)
{
	uint32_t u;
	*late = 0;
	if (ix_user)
		*ix_user = RK_NONE;
	if (rk_users_find(svc->ix, id, strlen(id), &u))
		return RK_NONE;
	if (ix_user)
		*ix_user = u;
	if (u >= s->model->d.n_users || u >= s->seen.n_users) {
		*late = 1;
		return RK_NONE;
	}
	return u;
}

/* Merges the ascending lists a and b into out (room for na + nb); returns
 * the count. */
static size_t merge_u32(const uint32_t *a, size_t na, const uint32_t *b, size_t nb, uint32_t *out)
{
	size_t x = 0, y = 0, m = 0;
	while (x < na && y < nb)
		out[m++] = a[x] <= b[y] ? a[x++] : b[y++];
	while (x < na)
		out[m++] = a[x++];
	while (y < nb)
		out[m++] = b[y++];
	return m;
}

/* The items request r must not return, ascending, for rankd's user ui
 * (RK_NONE: unknown): the snapshot's seen items, those added since (the
 * overlay) and, with context (the fallback), the request's context items.
 * None with include_seen. When the snapshot alone has any, *excl points
 * into it; else they are built in sc->excl from place at on and *built is
 * 1. Caller holds ix_lock shared. Returns 0 or VR_ENOMEM. */
static int exclusions(rk_service *svc, const rk_served *s, uint32_t ui,
		      const Visrec__V1__RecommendRequest *r, int context, struct scratch *sc, size_t at,
		      const uint32_t **excl, size_t *n, int *built)
{
	const uint32_t *seen = NULL, *live = NULL;
	size_t n_seen = 0, n_live = 0, n_ctx = context ? r->n_context_items : 0;
	*excl = NULL;
	*n = 0;
	*built = 0;
	if (r->include_seen)
		return 0;
	if (ui != RK_NONE && ui < s->seen.n_users) {
		seen = s->seen.item + s->seen.off[ui];
		n_seen = (size_t)(s->seen.off[ui + 1] - s->seen.off[ui]);
	}
	if (ui != RK_NONE)
		live = rk_overlay_items(svc->live, ui, &n_live);
	if (!n_live && !n_ctx) {
		*excl = seen;
		*n = n_seen;
		return 0;
	}
	if (reserve(&sc->excl, &sc->excl_cap, at + n_seen + n_live + n_ctx, sizeof *sc->excl))
		return VR_ENOMEM;
	uint32_t *out = sc->excl + at;
	size_t m = merge_u32(seen, n_seen, live, n_live, out);
	if (n_ctx) {
		for (size_t c = 0; c < n_ctx; c++) {
			uint32_t i;
			if (!rk_items_find(svc->ix, r->context_items[c], strlen(r->context_items[c]), &i))
				out[m++] = i;
		}
		qsort(out, m, sizeof *out, cmp_u32);
	}
	*excl = out;
	*n = m;
	*built = 1;
	return 0;
}

/* Fills resp with items sc->items[off ..] from hits. */
static void fill_items(rk_service *svc, const rk_served *s, struct scratch *sc, size_t off,
		       const struct rk_hit *hits, size_t n, Visrec__V1__ScoredItem ***out,
		       size_t *n_out)
{
	for (size_t j = 0; j < n; j++) {
		Visrec__V1__ScoredItem *it = &sc->items[off + j];
		visrec__v1__scored_item__init(it);
		it->item_id = (char *)rk_item_id(svc->ix, hits[j].item, NULL);
		it->score = hits[j].score;
		it->cold = rk_served_cold(s, hits[j].item);
		sc->ptrs[off + j] = it;
	}
	*out = sc->ptrs + off;
	*n_out = n;
}

/* Hit a ranks before hit b (topk.h's order: score, then lower id). */
static int hit_before(const struct rk_hit *a, const struct rk_hit *b)
{
	return a->score > b->score || (a->score == b->score && a->item < b->item);
}

/* Cold slots (RecommendRequest.cold_slots): makes the user's best
 * min(slots, k) cold items part of sc->hits (n of them, room for cap), in
 * place of the lowest warm ones, all kept in score order. The best cold
 * items overall include the cold ones the plain ranking already holds.
 * An exact scan of the catalogue found them already (fused, *fused = their
 * count in sc->cold_hits); else (candidates, or the approximate scan) one
 * more top-k over the cold items finds them. Caller holds ix_lock shared.
 * Returns 0 or an error code. */
static int fill_cold_slots(const rk_served *s, const struct rk_index_view *view,
			   const struct rk_topk_req *q, int slots, struct scratch *sc, size_t cap,
			   size_t *n, const size_t *fused)
{
	size_t have = 0, n_cold = 0, got = 0, want = (size_t)slots < cap ? (size_t)slots : cap;
	for (size_t j = 0; j < *n; j++)
		have += rk_served_cold(s, sc->hits[j].item);
	if (have >= want)
		return 0;
	if (reserve(&sc->cold, &sc->cold_cap, (q->cand ? q->n_cand : view->n) + 1, sizeof *sc->cold) ||
	    reserve(&sc->cold_hits, &sc->cold_hits_cap, want, sizeof *sc->cold_hits) ||
	    reserve(&sc->merged, &sc->merged_cap, cap, sizeof *sc->merged))
		return VR_ENOMEM;
	if (fused) {
		got = *fused;
		goto merge;
	}
	if (q->cand) {
		for (size_t c = 0; c < q->n_cand; c++)
			if (rk_served_cold(s, q->cand[c]))
				sc->cold[n_cold++] = q->cand[c];
	} else {
		n_cold = rk_served_cold_items(s, view, sc->cold);
	}
	if (!n_cold)
		return 0;
	struct rk_topk_req cq = *q;
	cq.k = (int)want;
	cq.cand = sc->cold;
	cq.n_cand = n_cold;
	size_t room = want < n_cold ? want : n_cold;
	int rc = rk_topk(view, &cq, sc->ws, sc->cold_hits, room, &got);
	if (rc)
		return rc;
merge:
	if (got <= have)
		return 0;
	/* got cold items, then the best warm ones up to cap, merged. */
	size_t warm_room = cap - got, w = 0, c = 0, m = 0;
	struct rk_hit *warm = sc->hits;
	size_t n_warm = 0;
	for (size_t j = 0; j < *n; j++)
		if (!rk_served_cold(s, sc->hits[j].item) && n_warm < warm_room)
			warm[n_warm++] = sc->hits[j];
	while (w < n_warm || c < got)
		sc->merged[m++] = c == got || (w < n_warm && hit_before(&warm[w], &sc->cold_hits[c])) ?
			warm[w++] : sc->cold_hits[c++];
	memcpy(sc->hits, sc->merged, m * sizeof *sc->hits);
	*n = m;
	return 0;
}

/* The top-k of q for model user u (rankd's user ui, whose overlay epoch
 * is epoch) into sc->hits (room for cap) through the cache: a hit, or a
 * scan to the cached depth whose list is stored. cseq: the cache's
 * sequence read before view was taken. Returns 0 or an error code. */
static int cached_topk(rk_service *svc, const rk_served *s, const struct rk_index_view *view,
		       const struct rk_topk_req *q, uint32_t ui, size_t epoch, uint64_t cseq,
		       struct scratch *sc, size_t cap, size_t *n_hits)
{
	int rc = rk_tcache_get(svc->tcache, s->info.version, ui, epoch, cseq, view, q->user, q->exclude,
			       q->n_exclude, sc->ws, q->k, sc->hits, n_hits);
	if (rc)
		return rc < 0 ? rc : 0;
	int depth = q->k > RK_TCACHE_MIN_DEPTH ? q->k : RK_TCACHE_MIN_DEPTH;
	size_t room = (size_t)depth < view->n ? (size_t)depth : view->n;
	if (reserve(&sc->hits, &sc->hits_cap, room > cap ? room : cap, sizeof *sc->hits))
		return VR_ENOMEM;
	struct rk_topk_req dq = *q;
	dq.k = depth;
	if ((rc = rk_topk(view, &dq, sc->ws, sc->hits, room, n_hits)))
		return rc;
	/* Out of memory only costs the next call a scan. */
	rk_tcache_put(svc->tcache, s->info.version, ui, epoch, cseq, depth, sc->hits, *n_hits);
	if (*n_hits > (size_t)q->k)
		*n_hits = (size_t)q->k;
	return 0;
}

/* Ranks one request into resp, its items at sc->items[off ..] (the caller
 * reserved room for min(k, view->n) of them); its exclusions use sc->excl
 * from place excl_at on. cseq: the top-k cache's sequence, read before view
 * was taken. Caller holds ix_lock shared. */
static int recommend_one(rk_service *svc, const rk_served *s, const struct rk_index_view *view,
			 const Visrec__V1__RecommendRequest *r, struct scratch *sc, size_t off,
			 size_t excl_at, int threads, uint64_t cseq, Visrec__V1__RecommendResponse *resp,
			 char *err)
{
	const uint32_t *excl = NULL;
	size_t n_excl = 0, n_hits = 0;
	uint32_t *cand = NULL, ui;
	int late, built, rc;
	uint32_t u = model_user(svc, s, r->user_id, &late, &ui);
	if (r->n_candidates) {
		if (reserve(&sc->cand, &sc->cand_cap, r->n_candidates, sizeof *sc->cand) ||
		    reserve(&sc->sort, &sc->sort_cap, r->n_candidates, sizeof *sc->sort))
			return error_text(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		cand = sc->cand;
		if ((rc = map_candidates(svc, view, r->candidates, r->n_candidates, cand, err)))
			return rc;
	}
	size_t eligible = cand ? r->n_candidates : view->n;
	size_t cap = (size_t)r->k < eligible ? (size_t)r->k : eligible;
	if (reserve(&sc->hits, &sc->hits_cap, cap ? cap : 1, sizeof *sc->hits))
		return error_text(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	/* A cached list made at this catalogue sequence needs no merge, so
	 * neither the exclusions nor the user's row (the usual hit). */
	int cacheable = svc->tcache && eligible && !cand && !r->cold_slots && !r->include_seen &&
			!svc->topk_approx && u != RK_NONE;
	size_t epoch = 0;
	if (cacheable) {
		rk_overlay_items(svc->live, ui, &epoch);
		if (rk_tcache_get_fresh(svc->tcache, s->info.version, ui, epoch, cseq, r->k, sc->hits,
					&n_hits)) {
			fill_items(svc, s, sc, off, sc->hits, n_hits, &resp->items, &resp->n_items);
			resp->model = (Visrec__V1__ModelKind)s->model->d.kind;
			resp->model_version = s->info.version;
			return GRPC_STATUS_OK;
		}
	}
	if (exclusions(svc, s, ui, r, u == RK_NONE, sc, excl_at, &excl, &n_excl, &built))
		return error_text(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	if (u != RK_NONE) {
		uint32_t dim = rk_model_dim(s->model);
		if (reserve(&sc->user, &sc->user_cap, dim, sizeof *sc->user))
			return error_text(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		rk_model_user_row(s->model, u, sc->user);
		struct rk_topk_req q = { .user = sc->user, .k = r->k, .exclude = excl, .n_exclude = n_excl,
					 .cand = cand, .n_cand = cand ? r->n_candidates : 0,
					 .approx = svc->topk_approx, .half = svc->topk_half,
					 .pool = svc->scan_pool, .threads = threads, .nibble = svc->topk_int4 };
		/* Cold slots over the catalogue, exact: the same scan selects the
		 * best cold items too (topk.h's mark). */
		int fuse = r->cold_slots > 0 && !cand && !q.approx;
		if (fuse && reserve(&sc->cold_hits, &sc->cold_hits_cap, (size_t)r->cold_slots,
				    sizeof *sc->cold_hits))
			return error_text(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		struct rk_topk_mark mk = { s->cold_mark, s->n_counted, r->cold_slots, sc->cold_hits, 0,
					   s->cold_items, s->n_cold };
		if (cacheable)
			rc = cached_topk(svc, s, view, &q, ui, epoch, cseq, sc, cap, &n_hits);
		else
			rc = eligible ? rk_topk_marked(view, &q, fuse ? &mk : NULL, sc->ws, sc->hits, cap,
						       &n_hits) : 0;
		if (!rc && eligible && r->cold_slots > 0)
			rc = fill_cold_slots(s, view, &q, r->cold_slots, sc, cap, &n_hits,
					     fuse ? &mk.n_out : NULL);
	} else {
		rc = rk_served_popular(s, view, excl, n_excl, cand, cand ? r->n_candidates : 0, sc->sort,
				       r->k, sc->hits, &n_hits);
		resp->fallback = (char *)(late ? FALLBACK_LATE : FALLBACK_UNKNOWN);
	}
	if (rc)
		return error_text(err, vr_status_from_rc(rc), "ranking failed: %s", vr_strerror(rc));
	fill_items(svc, s, sc, off, sc->hits, n_hits, &resp->items, &resp->n_items);
	resp->model = (Visrec__V1__ModelKind)s->model->d.kind;
	resp->model_version = s->info.version;
	return GRPC_STATUS_OK;
}

int rk_handle_recommend(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	int64_t t0 = now_ns();
	const Visrec__V1__RecommendRequest *r = (const void *)vr_call_request(call);
	char err[ERR_LEN];
	int code = rk_check_recommend(svc, r, "", err);
	if (code)
		return vr_call_error(call, code, "%s", err);
	struct scratch *sc = scratch_get();
	if (!sc)
		return VR_ENOMEM;
	/* Low load: a call that finds no other ranking call in flight may split
	 * its scan over every core; under load the cores are shared out. */
	int busy = atomic_fetch_add_explicit(&svc->ranking, 1, memory_order_relaxed);
	int threads = svc->scan_threads / (busy + 1);
	struct rk_index_view view;
	Visrec__V1__RecommendResponse resp = VISREC__V1__RECOMMEND_RESPONSE__INIT;
	pthread_rwlock_rdlock(&svc->ix_lock);
	rk_served *s = rk_serving_get(&svc->serving);
	if (!s) {
		code = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", no_model());
		goto leave;
	}
	uint64_t cseq = svc->tcache ? rk_tcache_seq(svc->tcache) : 0;
	rk_index_acquire(s->index, &view);
	size_t room = (size_t)r->k < view.n ? (size_t)r->k : view.n;
	if (reserve_items(sc, room ? room : 1))
		code = error_text(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	else
		code = recommend_one(svc, s, &view, r, sc, 0, 0, threads, cseq, &resp, err);
	if (!code) {
		int rc = vr_call_send(call, &resp.base);
		code = rc ? rc : GRPC_STATUS_OK;
	} else {
		code = vr_call_error(call, code, "%s", err);
	}
	rk_index_release(&view);
	rk_served_unref(s);
leave:
	pthread_rwlock_unlock(&svc->ix_lock);
	atomic_fetch_sub_explicit(&svc->ranking, 1, memory_order_relaxed);
	if (code == GRPC_STATUS_OK)
		rk_latency_add(&svc->recommend_ns, (uint64_t)(now_ns() - t0));
	return code;
}

/* ---- RecommendBatch ------------------------------------------------------ */

/* The requests of known users without candidates go through one batched
 * top-k (rk_topk_batch: the int8 rows for all of them at once, exact or,
 * with --topk-approx c, the int8 pass at c whichever pass Recommend reads:
 * arithmetic, not memory, bounds a batch) with the largest k among them;
 * each keeps its own k. The others are ranked one by one. */
int rk_handle_recommend_batch(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__RecommendBatchRequest *b = (const void *)vr_call_request(call);
	char err[ERR_LEN];
	int code = GRPC_STATUS_OK;
	size_t n = b->n_requests;
	if (n > (size_t)svc->max_batch)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				     "%zu requests in one batch; at most %d: split it", n, svc->max_batch);
	for (size_t q = 0; q < n; q++) {
		char at[32];
		snprintf(at, sizeof at, "requests[%zu].", q);
		if ((code = rk_check_recommend(svc, b->requests[q], at, err)))
			return vr_call_error(call, code, "%s", err);
	}
	struct scratch *sc = scratch_get();
	if (!sc)
		return VR_ENOMEM;
	size_t m = n ? n : 1;
	Visrec__V1__RecommendResponse *resps = calloc(m, sizeof *resps);
	Visrec__V1__RecommendResponse **rp = calloc(m, sizeof *rp);
	size_t *offs = calloc(m, sizeof *offs);
	uint32_t *batch = calloc(m, sizeof *batch);       /* request of each batched user */
	float *users = NULL;
	const uint32_t **excl = calloc(m, sizeof *excl);
	size_t *n_excl = calloc(m, sizeof *n_excl), *n_out = calloc(m, sizeof *n_out);
	size_t *excl_at = calloc(m, sizeof *excl_at);     /* place in sc->excl, or SIZE_MAX */
	struct rk_hit *out = NULL;
	struct rk_index_view view;
	size_t total = 0, nb = 0, excl_used = 0;
	int kmax = 0;
	/* A batch keeps the cores busy (BLAS threads): Recommends meanwhile do
	 * not split their scans. */
	atomic_fetch_add_explicit(&svc->ranking, 1, memory_order_relaxed);
	pthread_rwlock_rdlock(&svc->ix_lock);
	rk_served *s = rk_serving_get(&svc->serving);
	if (!s) {
		code = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", no_model());
		goto leave;
	}
	uint64_t cseq = svc->tcache ? rk_tcache_seq(svc->tcache) : 0;
	rk_index_acquire(s->index, &view);
	uint32_t dim = rk_model_dim(s->model);
	int short_of_memory = !resps || !rp || !offs || !batch || !excl || !n_excl || !n_out || !excl_at;
	for (size_t q = 0; q < n && !short_of_memory; q++) {
		size_t k = (size_t)b->requests[q]->k;
		offs[q] = total;
		total += k < view.n ? k : view.n;
	}
	if (short_of_memory || reserve_items(sc, total ? total : 1) ||
	    !(users = malloc(m * dim * sizeof *users)))
		code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	for (size_t q = 0; q < n && !code; q++) {
		const Visrec__V1__RecommendRequest *r = b->requests[q];
		visrec__v1__recommend_response__init(&resps[q]);
		rp[q] = &resps[q];
		int late, built;
		uint32_t ui, u = model_user(svc, s, r->user_id, &late, &ui);
		if (u == RK_NONE || r->n_candidates || r->cold_slots > 0) {
			if ((code = recommend_one(svc, s, &view, r, sc, offs[q], excl_used, 1, cseq, &resps[q], err)))
				code = vr_call_error(call, code, "requests[%zu]: %s", q, err);
			continue;
		}
		if (exclusions(svc, s, ui, r, 0, sc, excl_used, &excl[nb], &n_excl[nb], &built)) {
			code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			continue;
		}
		/* A later request may move sc->excl: its place, not the pointer. */
		excl_at[nb] = built ? excl_used : SIZE_MAX;
		excl_used += built ? n_excl[nb] : 0;
		rk_model_user_row(s->model, u, users + nb * dim);
		if (r->k > kmax)
			kmax = r->k;
		batch[nb++] = (uint32_t)q;
	}
	for (size_t x = 0; x < nb && !code; x++)
		if (excl_at[x] != SIZE_MAX)
			excl[x] = sc->excl + excl_at[x];
	if (!code && nb && view.n) {
		size_t kk = (size_t)kmax < view.n ? (size_t)kmax : view.n;
		struct rk_topk_batch_req br = { .users = users, .n_users = (uint32_t)nb, .k = kmax,
						.exclude = excl, .n_exclude = n_excl, .approx = svc->topk_approx };
		int rc = (out = malloc(nb * kk * sizeof *out)) ? 0 : VR_ENOMEM;
		if (!rc)
			rc = rk_topk_batch(&view, &br, sc->ws, out, n_out);
		if (rc)
			code = vr_call_error(call, vr_status_from_rc(rc), "ranking failed: %s", vr_strerror(rc));
		for (size_t x = 0; x < nb && !code; x++) {
			size_t q = batch[x], k = (size_t)b->requests[q]->k;
			size_t got = n_out[x] < k ? n_out[x] : k;
			fill_items(svc, s, sc, offs[q], out + x * kk, got, &resps[q].items, &resps[q].n_items);
			resps[q].model = (Visrec__V1__ModelKind)s->model->d.kind;
			resps[q].model_version = s->info.version;
		}
	} else if (!code) {
		for (size_t x = 0; x < nb; x++) {
			resps[batch[x]].model = (Visrec__V1__ModelKind)s->model->d.kind;
			resps[batch[x]].model_version = s->info.version;
		}
	}
	if (!code) {
		Visrec__V1__RecommendBatchResponse resp = VISREC__V1__RECOMMEND_BATCH_RESPONSE__INIT;
		resp.n_responses = n;
		resp.responses = rp;
		int rc = vr_call_send(call, &resp.base);
		code = rc ? rc : GRPC_STATUS_OK;
	}
	rk_index_release(&view);
	rk_served_unref(s);
leave:
	pthread_rwlock_unlock(&svc->ix_lock);
	atomic_fetch_sub_explicit(&svc->ranking, 1, memory_order_relaxed);
	free(resps);
	free(rp);
	free(offs);
	free(batch);
	free(users);
	free(excl);
	free(n_excl);
	free(n_out);
	free(excl_at);
	free(out);
	return code;
}

/* ---- Score ----------------------------------------------------------------- */

int rk_handle_score(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__ScoreRequest *r = (const void *)vr_call_request(call);
	char err[ERR_LEN];
	int code = GRPC_STATUS_OK;
	if (check_id(err, r->user_id, "user_id"))
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
	if (!r->n_item_ids)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "item_ids is empty: name the items to score");
	if (r->n_item_ids > RK_MAX_SCORE)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				     "%zu item_ids; at most %d per call", r->n_item_ids, RK_MAX_SCORE);
	for (size_t j = 0; j < r->n_item_ids; j++)
		if (check_id(err, r->item_ids[j], "item_ids[%zu]", j))
			return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
	struct scratch *sc = scratch_get();
	if (!sc)
		return VR_ENOMEM;
	rk_served *s = rk_serving_get(&svc->serving);
	if (!s)
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", no_model());
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	uint32_t dim = rk_model_dim(s->model);
	size_t n = r->n_item_ids;
	if (reserve(&sc->cand, &sc->cand_cap, n, sizeof *sc->cand) ||
	    reserve(&sc->scores, &sc->scores_cap, n, sizeof *sc->scores) ||
	    reserve(&sc->user, &sc->user_cap, dim, sizeof *sc->user) || reserve_items(sc, n)) {
		code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto unref;
	}
	pthread_rwlock_rdlock(&svc->ix_lock);
	int late;
	uint32_t u = model_user(svc, s, r->user_id, &late, NULL);
	if (u == RK_NONE) {
		code = vr_call_error(call, GRPC_STATUS_NOT_FOUND,
				     late ? "user \"%.256s\" has no interactions in the served model (they arrived "
					    "after the last Train); call Train to score for them"
					  : "unknown user \"%.256s\"", r->user_id);
		goto unlock;
	}
	size_t unknown = 0, used = 0;
	err[0] = 0;
	for (size_t j = 0; j < n; j++) {
		uint32_t i;
		if (!rk_items_find(svc->ix, r->item_ids[j], strlen(r->item_ids[j]), &i) && i < view.n) {
			sc->cand[j] = i;
			continue;
		}
		if (unknown++ < 5) {
			char esc[72];
			int w = snprintf(err + used, ERR_LEN - used, "%s\"%s\"", unknown > 1 ? ", " : "",
					 vr_id_escape(esc, sizeof esc, r->item_ids[j], strlen(r->item_ids[j])));
			used += w > 0 && (size_t)w < ERR_LEN - used ? (size_t)w : 0;
		}
	}
	if (unknown) {
		code = vr_call_error(call, GRPC_STATUS_NOT_FOUND, "%zu unknown item%s: %s%s", unknown,
				     unknown > 1 ? "s" : "", err, unknown > 5 ? ", ..." : "");
		goto unlock;
	}
	rk_model_user_row(s->model, u, sc->user);
	int rc = rk_score(&view, sc->user, sc->cand, n, sc->ws, sc->scores);
	if (rc) {
		code = vr_call_error(call, vr_status_from_rc(rc), "scoring failed: %s", vr_strerror(rc));
		goto unlock;
	}
	for (size_t j = 0; j < n; j++) {
		Visrec__V1__ScoredItem *it = &sc->items[j];
		visrec__v1__scored_item__init(it);
		it->item_id = r->item_ids[j];
		it->score = sc->scores[j];
		it->cold = rk_served_cold(s, sc->cand[j]);
		sc->ptrs[j] = it;
	}
	Visrec__V1__ScoreResponse resp = VISREC__V1__SCORE_RESPONSE__INIT;
	resp.items = sc->ptrs;
	resp.n_items = n;
	resp.model = (Visrec__V1__ModelKind)s->model->d.kind;
	resp.model_version = s->info.version;
	rc = vr_call_send(call, &resp.base);
	code = rc ? rc : GRPC_STATUS_OK;
unlock:
	pthread_rwlock_unlock(&svc->ix_lock);
unref:
	rk_index_release(&view);
	rk_served_unref(s);
	return code;
}

/* ---- Audience ---------------------------------------------------------------- */

int rk_check_audience(const rk_service *svc, const Visrec__V1__AudienceRequest *r, char *err)
{
	int code = check_id(err, r->item_id, "item_id");
	if (code)
		return code;
	if (r->k < 1 || r->k > svc->max_k)
		return error_text(err, GRPC_STATUS_INVALID_ARGUMENT, "k must be between 1 and %d (got %d)",
				  svc->max_k, r->k);
	return GRPC_STATUS_OK;
}

/* Reverse top-k: the item's serving row (the prior's β̂, γ̂ for a cold
 * one) against every user of the model. Users added after the last Train
 * have no factors and are not in it; exclusions are the snapshot's seen
 * lists. */
int rk_handle_audience(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__AudienceRequest *r = (const void *)vr_call_request(call);
	char err[ERR_LEN];
	int code = rk_check_audience(svc, r, err);
	if (code)
		return vr_call_error(call, code, "%s", err);
	struct scratch *sc = scratch_get();
	if (!sc)
		return VR_ENOMEM;
	rk_served *s = rk_serving_get(&svc->serving);
	if (!s)
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", no_model());
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	Visrec__V1__AudienceUser *users = NULL;
	Visrec__V1__AudienceUser **ptrs = NULL;
	uint32_t nu = s->model->d.n_users, i;
	size_t cap = (size_t)r->k < nu ? (size_t)r->k : nu, n = 0;
	pthread_rwlock_rdlock(&svc->ix_lock);
	if (rk_items_find(svc->ix, r->item_id, strlen(r->item_id), &i)) {
		code = vr_call_error(call, GRPC_STATUS_NOT_FOUND,
				     "unknown item \"%.256s\": neither featured nor an interaction has named it",
				     r->item_id);
		goto leave;
	}
	if (i >= view.n) {
		code = vr_call_error(call, GRPC_STATUS_UNAVAILABLE,
				     "item \"%.256s\" is not in the served catalogue yet; retry in a moment",
				     r->item_id);
		goto leave;
	}
	if (reserve(&sc->scores, &sc->scores_cap, (size_t)nu + 1, sizeof *sc->scores) ||
	    reserve(&sc->hits, &sc->hits_cap, cap + 1, sizeof *sc->hits) ||
	    !(users = malloc((cap + 1) * sizeof *users)) || !(ptrs = malloc((cap + 1) * sizeof *ptrs))) {
		code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto leave;
	}
	int rc = rk_served_audience(s, i, rk_index_row(&view, i), r->include_seen, (int)(cap ? cap : 1),
				    sc->scores, sc->hits, &n);
	if (rc) {
		code = vr_call_error(call, vr_status_from_rc(rc), "ranking users failed: %s", vr_strerror(rc));
		goto leave;
	}
	for (size_t x = 0; x < n; x++) {
		visrec__v1__audience_user__init(&users[x]);
		users[x].user_id = (char *)rk_user_id(svc->ix, sc->hits[x].item, NULL);
		users[x].score = sc->hits[x].score;
		ptrs[x] = &users[x];
	}
	Visrec__V1__AudienceResponse resp = VISREC__V1__AUDIENCE_RESPONSE__INIT;
	resp.users = ptrs;
	resp.n_users = n;
	resp.model = (Visrec__V1__ModelKind)s->model->d.kind;
	resp.model_version = s->info.version;
	resp.cold = rk_served_cold(s, i);
	rc = vr_call_send(call, &resp.base);
	code = rc ? rc : GRPC_STATUS_OK;
leave:
	pthread_rwlock_unlock(&svc->ix_lock);
	rk_index_release(&view);
	rk_served_unref(s);
	free(users);
	free(ptrs);
	return code;
}

/* ---- Evaluate ---------------------------------------------------------------- */

struct eval_ctx {
	vr_call *call;
	const rk_served *s;
	const struct rk_index_view *view;
	float *users;   /* block_users × stride */
	uint32_t stride;
};

/* Scores a block of users against every item (topk.h's rk_score_all). */
static int eval_scores(void *arg, const uint32_t *users, uint32_t n_users, float *scores)
{
	struct eval_ctx *e = arg;
	if (vr_call_stopping(e->call))
		return VR_ECANCELLED;
	memset(e->users, 0, (size_t)n_users * e->stride * sizeof(float));
	for (uint32_t x = 0; x < n_users; x++)
		rk_model_user_row(e->s->model, users[x], e->users + (size_t)x * e->stride);
	return rk_score_all(e->view, e->users, n_users, scores);
}

struct by_time {
	uint32_t item;
	int64_t ts;
};

static int cmp_time(const void *a, const void *b)
{
	const struct by_time *x = a, *y = b;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return x->item < y->item ? -1 : x->item > y->item;
}

static void table_result(const struct vr_metrics_table *t, const struct vr_metrics_mean *m,
			 const char *subset, Visrec__V1__EvalResult *r, Visrec__V1__MetricsAtK *at,
			 Visrec__V1__MetricsAtK **atp)
{
	visrec__v1__eval_result__init(r);
	r->subset = (char *)subset;
	r->users = m->n_users;
	r->auc = m->auc;
	r->rr = m->rr;
	for (int k = 0; k < t->n_ks; k++) {
		visrec__v1__metrics_at_k__init(&at[k]);
		at[k].k = (uint32_t)t->ks[k];
		at[k].recall = m->recall[k];
		at[k].precision = m->precision[k];
		at[k].ndcg = m->ndcg[k];
		atp[k] = &at[k];
	}
	r->n_at_k = (size_t)t->n_ks;
	r->at_k = atp;
}

/* The popularity baseline's scores: every user ranks items by training
 * count (ties are ordered at random by the metrics, as any tie). */
static int pop_scores(void *arg, const uint32_t *users, uint32_t n_users, float *scores)
{
	struct eval_ctx *e = arg;
	const rk_served *s = e->s;
	uint32_t n = e->view->n;
	(void)users;
	if (vr_call_stopping(e->call))
		return VR_ECANCELLED;
	for (uint32_t x = 0; x < n_users; x++)
		for (uint32_t i = 0; i < n; i++)
			scores[(size_t)x * n + i] = i < s->n_counted ? (float)s->count[i] : 0.0f;
	return 0;
}

#define RK_MAX_EVAL_PAIRS 1000000

/* Maps a given split's pairs (EvaluateRequest.test or cold_test, named
 * field) to model users and items into out[x].user / .test_item. Caller
 * holds ix_lock shared. GRPC_STATUS_OK or INVALID_ARGUMENT with the pair
 * named in err. */
static int map_pairs(rk_service *svc, const rk_served *s, const struct rk_index_view *view,
		     Visrec__V1__Interaction **pairs, size_t n, const char *field,
		     struct vr_eval_user *out, char *err)
{
	int code;
	if (n > RK_MAX_EVAL_PAIRS)
		return error_text(err, GRPC_STATUS_INVALID_ARGUMENT, "%s has %zu pairs; at most %d per call",
				  field, n, RK_MAX_EVAL_PAIRS);
	for (size_t x = 0; x < n; x++) {
		const Visrec__V1__Interaction *p = pairs[x];
		if ((code = check_id(err, p->user_id, "%s[%zu].user_id", field, x)) ||
		    (code = check_id(err, p->item_id, "%s[%zu].item_id", field, x)))
			return code;
		int late;
		uint32_t u = model_user(svc, s, p->user_id, &late, NULL), i;
		if (u == RK_NONE)
			return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
					  late ? "%s[%zu]: user \"%.256s\" has no interactions in the served model "
						 "(they arrived after the last Train); call Train first"
					       : "%s[%zu]: unknown user \"%.256s\"; a user must have training "
						 "interactions to be evaluated", field, x, p->user_id);
		if (rk_items_find(svc->ix, p->item_id, strlen(p->item_id), &i))
			return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
					  "%s[%zu]: unknown item \"%.256s\"; put its image in featured or add it "
					  "with an interaction first", field, x, p->item_id);
		if (i >= view->n)
			return error_text(err, GRPC_STATUS_INVALID_ARGUMENT,
					  "%s[%zu]: item \"%.256s\" is not in the served catalogue yet; retry in a "
					  "moment", field, x, p->item_id);
		out[x] = (struct vr_eval_user){ u, i, NULL, 0 };
	}
	return GRPC_STATUS_OK;
}

/* Picks max_users of the n entries by a seeded partial shuffle, kept in
 * their order; returns the new count. */
static size_t pick(struct vr_eval_user *e, size_t n, uint32_t max_users, uint64_t seed)
{
	if (!max_users || max_users >= n)
		return n;
	rk_rng rng;
	uint32_t *ix = malloc(n * sizeof *ix);
	struct vr_eval_user *tmp = malloc(n * sizeof *tmp);
	if (!ix || !tmp) { /* keep the first ones: still a valid subset */
		free(ix);
		free(tmp);
		return max_users;
	}
	for (size_t x = 0; x < n; x++)
		ix[x] = (uint32_t)x;
	rk_rng_seed(&rng, seed, 0);
	for (uint32_t x = 0; x < max_users; x++) {
		uint32_t y = x + rk_rng_below(&rng, (uint32_t)n - x), t = ix[x];
		ix[x] = ix[y];
		ix[y] = t;
	}
	qsort(ix, max_users, sizeof *ix, cmp_u32);
	memcpy(tmp, e, n * sizeof *tmp);
	for (uint32_t x = 0; x < max_users; x++)
		e[x] = tmp[ix[x]];
	free(ix);
	free(tmp);
	return max_users;
}

/* Each user's items of c, oldest first, into byt (c->nnz entries, the
 * same offsets as c): what the protocols exclude. 0 or VR_ENOMEM. */
static int items_by_time(const rk_csr *c, uint32_t *byt)
{
	uint64_t longest = 0;
	for (uint32_t u = 0; u < c->n_users; u++)
		if (c->off[u + 1] - c->off[u] > longest)
			longest = c->off[u + 1] - c->off[u];
	struct by_time *tmp = malloc((longest + 1) * sizeof *tmp);
	if (!tmp)
		return VR_ENOMEM;
	for (uint32_t u = 0; u < c->n_users; u++) {
		uint64_t a = c->off[u], b = c->off[u + 1];
		for (uint64_t p = a; p < b; p++)
			tmp[p - a] = (struct by_time){ c->item[p], c->ts[p] };
		qsort(tmp, (size_t)(b - a), sizeof *tmp, cmp_time);
		for (uint64_t p = a; p < b; p++)
			byt[p] = tmp[p - a].item;
	}
	free(tmp);
	return 0;
}

static void point_train(const rk_csr *c, const uint32_t *byt, struct vr_eval_user *e, size_t n)
{
	for (size_t x = 0; x < n; x++) {
		uint32_t u = e[x].user;
		int in = u < c->n_users;
		e[x].train = in ? byt + c->off[u] : byt;
		e[x].n_train = in ? (size_t)(c->off[u + 1] - c->off[u]) : 0;
	}
}

/* Runs on a thread of its own (own_thread): minutes on a big catalogue.
 * Splits: rankd's leave-last-out (each user's last item in time, against
 * the training part) or a given one (EvaluateRequest.test, against every
 * interaction the served model knows: a team loads its training part and
 * trains on it, use_all_interactions). Each run is done twice, by the
 * model and by the popularity baseline, on the same users. */
int rk_handle_evaluate(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__EvaluateRequest *r = (const void *)vr_call_request(call);
	struct vr_metrics_cfg cfg;
	vr_metrics_cfg_init(&cfg);
	char err[ERR_LEN];
	if (r->protocol && r->protocol[0] && vr_metrics_parse_protocol(r->protocol, &cfg.protocol))
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				     "protocol \"%.64s\" is not known: use \"standard\" or \"tutorial\"", r->protocol);
	if (r->n_ks > VR_METRICS_MAX_KS)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%zu ks; at most %d",
				     r->n_ks, VR_METRICS_MAX_KS);
	if (r->n_ks) {
		cfg.n_ks = (int)r->n_ks;
		for (size_t k = 0; k < r->n_ks; k++) {
			if (!r->ks[k])
				return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "ks[%zu] is 0; each k must be >= 1", k);
			cfg.ks[k] = r->ks[k] > INT32_MAX ? INT32_MAX : (int)r->ks[k];
		}
	}
	if (r->n_cold_test && !r->n_test)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				     "cold_test without test: give the test pairs of the split too");
	int given = r->n_test > 0;
	rk_served *s = rk_serving_get(&svc->serving);
	if (!s)
		return vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION, "%s", no_model());
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	struct vr_eval_user *users = NULL, *cold_users = NULL;
	uint32_t *byt = NULL;
	uint8_t *cold = NULL;
	struct eval_ctx e = { .call = call, .s = s, .view = &view, .stride = view.stride };
	int code;
	if (!given && !s->test_item) {
		code = vr_call_error(call, GRPC_STATUS_FAILED_PRECONDITION,
				     "the served model v%" PRIu64 " was trained on every interaction "
				     "(use_all_interactions), so no test item is held out; train without it, or "
				     "give the test pairs of your split (EvaluateRequest.test)", s->info.version);
		goto leave;
	}
	/* The given split's training lists: every interaction of the served
	 * snapshot; rankd's: its training part. */
	const rk_csr *tr = given ? &s->seen : &s->train;
	size_t nu = 0, nc = 0;
	users = malloc(((given ? r->n_test : s->seen.n_users) + 1) * sizeof *users);
	cold_users = malloc((r->n_cold_test + 1) * sizeof *cold_users);
	byt = malloc((tr->nnz + 1) * sizeof *byt);
	cold = malloc((size_t)view.n + 1);
	uint32_t block = cfg.block_users ? cfg.block_users : 256;
	e.users = malloc((size_t)block * view.stride * sizeof(float));
	if (!users || !cold_users || !byt || !cold || !e.users || items_by_time(tr, byt)) {
		code = vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto leave;
	}
	if (given) {
		pthread_rwlock_rdlock(&svc->ix_lock);
		code = map_pairs(svc, s, &view, r->test, r->n_test, "test", users, err);
		if (!code)
			code = map_pairs(svc, s, &view, r->cold_test, r->n_cold_test, "cold_test", cold_users, err);
		pthread_rwlock_unlock(&svc->ix_lock);
		if (code) {
			code = vr_call_error(call, code, "%s", err);
			goto leave;
		}
		nu = r->n_test;
		nc = r->n_cold_test;
	} else {
		for (uint32_t u = 0; u < s->seen.n_users && u < s->model->d.n_users; u++)
			if (s->test_item[u] != RK_NONE && s->test_item[u] < view.n)
				users[nu++] = (struct vr_eval_user){ u, s->test_item[u], NULL, 0 };
	}
	nu = pick(users, nu, r->max_users, r->seed);
	nc = pick(cold_users, nc, r->max_users, r->seed);
	point_train(tr, byt, users, nu);
	point_train(tr, byt, cold_users, nc);
	for (uint32_t i = 0; i < view.n; i++)
		cold[i] = (uint8_t)rk_served_cold(s, i);
	/* [0] the model, [1] popularity; with cold_test its own pair. */
	struct vr_metrics_table t[2], ct[2];
	int rc = 0;
	for (int b = 0; b < 2 && !rc; b++) {
		vr_score_block_fn fn = b ? pop_scores : eval_scores;
		rc = vr_evaluate(&cfg, users, nu, view.n, cold, fn, &e, &t[b]);
		if (!rc && nc)
			rc = vr_evaluate(&cfg, cold_users, nc, view.n, cold, fn, &e, &ct[b]);
		if (!rc && nc) { /* the cold subsets are the cold_test pairs' */
			t[b].cold = ct[b].all;
			t[b].new_items = ct[b].new_items;
		}
	}
	if (rc == VR_ECANCELLED) {
		code = vr_call_cancelled(call) ? rc :
			vr_call_error(call, GRPC_STATUS_UNAVAILABLE, "rankd is shutting down; evaluation stopped");
		goto leave;
	}
	if (rc) {
		code = vr_call_error(call, vr_status_from_rc(rc), "evaluation failed: %s", vr_strerror(rc));
		goto leave;
	}
	/* res[0..3]: the model's all, cold, new, warm; res[4..7]: popularity's. */
	enum { NSUB = 4 };
	Visrec__V1__EvalResult res[2 * NSUB], *resp_res[NSUB], *pop_res[NSUB];
	Visrec__V1__MetricsAtK atk[2 * NSUB][VR_METRICS_MAX_KS], *atp[2 * NSUB][VR_METRICS_MAX_KS];
	for (int b = 0; b < 2; b++) {
		const struct vr_metrics_mean *sub[NSUB] = { &t[b].all, &t[b].cold, &t[b].new_items,
							    &t[b].warm_items };
		static const char *const name[NSUB] = { "all", "cold", "new", "warm" };
		for (int x = 0; x < NSUB; x++) {
			int r = NSUB * b + x;
			table_result(&t[b], sub[x], name[x], &res[r], atk[r], atp[r]);
			(b ? pop_res : resp_res)[x] = &res[r];
		}
	}
	Visrec__V1__EvaluateResponse resp = VISREC__V1__EVALUATE_RESPONSE__INIT;
	resp.model = (Visrec__V1__ModelKind)s->model->d.kind;
	resp.model_version = s->info.version;
	resp.protocol = (char *)vr_metrics_protocol_name(cfg.protocol);
	resp.n_results = NSUB;
	resp.results = resp_res;
	resp.split = (char *)(given ? "given" : "leave_last_out");
	resp.n_popularity = NSUB;
	resp.popularity = pop_res;
	rc = vr_call_send(call, &resp.base);
	code = rc ? rc : GRPC_STATUS_OK;
	VR_INFO("Evaluate %s (%s split) over %u users of model v%" PRIu64 ": AUC %.4f, cold AUC %.4f "
		"(%u users), among new items %.4f, warm among warm items %.4f; popularity AUC %.4f, "
		"cold %.4f, warm %.4f", resp.protocol, resp.split, t[0].all.n_users, s->info.version,
		t[0].all.auc, t[0].cold.auc, t[0].cold.n_users, t[0].new_items.auc, t[0].warm_items.auc,
		t[1].all.auc, t[1].cold.auc, t[1].warm_items.auc);
leave:
	rk_index_release(&view);
	rk_served_unref(s);
	free(users);
	free(cold_users);
	free(byt);
	free(cold);
	free(e.users);
	return code;
}

/* ---- AddInteractions --------------------------------------------------------- */

/* Records the pairs just stored in the overlay, so rankings exclude them
 * before the next Train. Caller holds ix_lock exclusive. When memory runs
 * short they are left out (stored all the same: the next Train, or a
 * restart, excludes them), with a warning. */
static void live_add(rk_service *svc, const rk_interaction_in *rows, size_t n)
{
	uint32_t *pair = malloc(2 * n * sizeof *pair); /* n users, then n items */
	int rc = pair ? 0 : VR_ENOMEM;
	for (size_t x = 0; x < n && !rc; x++)
		if (!(rc = rk_users_find(svc->ix, rows[x].user, rows[x].user_len, &pair[x])))
			rc = rk_items_find(svc->ix, rows[x].item, rows[x].item_len, &pair[n + x]);
	rk_served *s = rk_serving_get(&svc->serving);
	if (!rc)
		rc = rk_overlay_add(svc->live, pair, pair + n, n, s ? &s->seen : NULL);
	rk_served_unref(s);
	free(pair);
	if (rc)
		VR_WARN("%zu interactions are stored but not excluded from rankings until the next Train: %s",
			n, vr_strerror(rc));
}

int rk_service_add(rk_service *svc, const rk_interaction_in *rows, size_t n, uint64_t seq,
		   const rk_log_record *rec, rk_add_stats *st, uint64_t totals[3])
{
	int rc;
	pthread_rwlock_wrlock(&svc->ix_lock);
	if (rec) {
		rc = rk_interactions_log_apply(svc->ix, seq, rec, st);
		if (rec->type != RK_LOG_ROWS)
			n = 0;
	} else {
		rc = n ? rk_interactions_add_batch(svc->ix, rows, n, st) : 0;
	}
	if (!rc && n)
		live_add(svc, rows, n);
	/* Their exclusions changed (the entries' user epoch would miss too;
	 * this frees the lists at once). */
	for (size_t x = 0; !rc && svc->tcache && x < n; x++) {
		uint32_t u;
		if (!rk_users_find(svc->ix, rows[x].user, rows[x].user_len, &u))
			rk_tcache_drop(svc->tcache, u);
	}
	totals[0] = rk_interactions_users(svc->ix);
	totals[1] = rk_interactions_items(svc->ix);
	totals[2] = rk_interactions_count(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		return rc;
	rk_feed_notify(svc);
	/* New items join the served catalogue at once, cold: the row a model
	 * gives an item it never saw (β_i = γ_i = 0, no vector yet). */
	rk_served *s = rk_serving_get(&svc->serving);
	if (s) {
		pthread_mutex_lock(&svc->swap_mu);
		int prc = rk_service_pad(svc, s, (uint32_t)totals[1]);
		pthread_mutex_unlock(&svc->swap_mu);
		rk_served_unref(s);
		if (prc)
			VR_WARN("new items could not join the served catalogue: %s", vr_strerror(prc));
	}
	if (rec && rec->type == RK_LOG_ITEMS && svc->follow && svc->shards)
		rk_service_learned_items(svc, rec);
	return 0;
}

int rk_handle_add_interactions(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	const Visrec__V1__AddInteractionsRequest *r = (const void *)vr_call_request(call);
	size_t n = r->n_interactions;
	int code = rk_refuse_write(svc, call);
	if (code)
		return code;
	if (n > RK_MAX_ADD)
		return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				     "%zu interactions in one call; at most %d: split the batch", n, RK_MAX_ADD);
	for (size_t x = 0; x < n; x++) {
		const Visrec__V1__Interaction *in = r->interactions[x];
		char err[ERR_LEN];
		if (check_id(err, in->user_id, "interactions[%zu].user_id", x) ||
		    check_id(err, in->item_id, "interactions[%zu].item_id", x))
			return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
	}
	rk_interaction_in *rows = malloc((n ? n : 1) * sizeof *rows);
	if (!rows)
		return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu rows", n);
	for (size_t x = 0; x < n; x++) {
		const Visrec__V1__Interaction *in = r->interactions[x];
		rows[x] = (rk_interaction_in){ in->user_id, strlen(in->user_id), in->item_id,
					       strlen(in->item_id), in->timestamp };
	}
	rk_add_stats st = { 0 };
	uint64_t totals[3];
	Visrec__V1__AddInteractionsResponse resp = VISREC__V1__ADD_INTERACTIONS_RESPONSE__INIT;
	int rc = rk_service_add(svc, rows, n, 0, NULL, &st, totals);
	free(rows);
	if (rc == VR_EINVAL)
		return vr_call_error(call, GRPC_STATUS_INVALID_ARGUMENT, "interactions[%" PRIu64 "] is not valid",
				     st.bad_row);
	if (rc == VR_ETOOBIG)
		return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				     "rankd holds as many users, items or interactions as it can");
	if (rc)
		return vr_call_error(call, vr_status_from_rc(rc), "the interactions could not be stored: %s%s%s",
				     vr_strerror(rc), vr_store_last_error()[0] ? ": " : "", vr_store_last_error());
	resp.users = totals[0];
	resp.items = totals[1];
	resp.interactions = totals[2];
	resp.added = (uint32_t)st.added;
	resp.updated = (uint32_t)st.updated;
	rc = vr_call_send(call, &resp.base);
	return rc ? rc : GRPC_STATUS_OK;
}

/* ---- Info ---------------------------------------------------------------------- */

/* One featured shard's feed in Info, with room for its error. */
struct shard_row {
	Visrec__V1__FeaturedShardState m;
	char error[sizeof ((rk_follower_state *)0)->error];
};

/* Fills r with shard k's feed of set; returns its seq. */
static uint64_t shard_state(rk_service *svc, rk_shardset *set, size_t k, struct shard_row *r)
{
	rk_feed *fe = &set->feeds[k];
	visrec__v1__featured_shard_state__init(&r->m);
	r->m.address = (char *)vr_shards_name(set->shards, k);
	r->m.last_error = r->error;
	r->m.removed_owned = atomic_load(&fe->removed_owned);
	if (!fe->follower) {
		uint64_t seq = 0;
		rk_snap_seq(&svc->snap, fe->key, &seq);
		return r->m.seq = seq;
	}
	rk_follower_state fs;
	rk_follower_state_get(fe->follower, &fs);
	r->m.connected = fs.connected;
	r->m.seq = fs.seq;
	r->m.head_seq = fs.head;
	r->m.since_unix_ms = fs.since_unix_ms;
	memcpy(r->error, fs.error, sizeof r->error);
	return fs.seq;
}

int rk_handle_info(vr_call *call, void *ctx)
{
	rk_service *svc = ctx;
	Visrec__V1__RankInfoResponse resp = VISREC__V1__RANK_INFO_RESPONSE__INIT;
	rk_served *s = rk_serving_get(&svc->serving);
	pthread_rwlock_rdlock(&svc->ix_lock);
	resp.users = rk_interactions_users(svc->ix);
	resp.items = rk_interactions_items(svc->ix);
	resp.interactions = rk_interactions_count(svc->ix);
	resp.interactions_seq = rk_interactions_log_seq(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	rk_replica_info(svc, &resp);
	resp.server_version = (char *)VISREC_VERSION;
	/* The shard list in use, whole: a relist meanwhile leaves this call on
	 * the set it began with. */
	rk_shardset *set = rk_shardset_get(svc);
	vr_shards *shards = set ? set->shards : NULL;
	resp.featured = (char *)(shards ? vr_shards_map(shards)->list : "");
	resp.featured_connected = shards && vr_channel_connected(vr_shards_channel(shards, 0), 1);
	resp.training = rk_service_training(svc, NULL, NULL, NULL);
	size_t n = set ? set->n_feeds : 0;
	struct shard_row *rows = n ? calloc(n, sizeof *rows) : NULL;
	Visrec__V1__FeaturedShardState **shp = n ? calloc(n, sizeof *shp) : NULL;
	if (n && (!rows || !shp)) {
		free(rows);
		free(shp);
		rk_served_unref(s);
		rk_shardset_put(set);
		return vr_call_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	}
	for (size_t k = 0; k < n; k++)
		resp.featured_seq += shard_state(svc, set, k, &rows[k]);
	for (size_t k = 0; k < n; k++)
		shp[k] = &rows[k].m;
	resp.featured_shards = shp;
	resp.n_featured_shards = n;
	if (n > 1 && set->feeds[0].follower) {
		/* Connected: every shard's feed. */
		resp.featured_connected = 1;
		for (size_t k = 0; k < n; k++)
			resp.featured_connected &= rows[k].m.connected;
	}
	resp.max_k = svc->max_k;
	if (s) {
		struct rk_index_view view;
		rk_index_acquire(s->index, &view);
		if (view.n > resp.items)
			resp.items = view.n;
		rk_index_release(&view);
		resp.model = (Visrec__V1__ModelKind)s->model->d.kind;
		resp.model_version = s->info.version;
		resp.feature_dims = s->info.feature_dims;
		resp.feature_version = s->info.feature_version;
	}
	rk_served_unref(s);
	Visrec__V1__TopkCacheInfo tc = VISREC__V1__TOPK_CACHE_INFO__INIT;
	if (svc->tcache) {
		rk_tcache_stats ts;
		rk_tcache_stats_get(svc->tcache, &ts);
		tc.hits = ts.hits;
		tc.misses = ts.misses;
		tc.evictions = ts.evictions;
		tc.merged = ts.merged;
		tc.entries = ts.entries;
		tc.bytes = ts.bytes;
		tc.limit_bytes = ts.limit;
		resp.topk_cache = &tc;
	}
	int rc = vr_call_send(call, &resp.base);
	free(rows);
	free(shp);
	rk_shardset_put(set);
	return rc ? rc : GRPC_STATUS_OK;
}
