/* featured_shards: channels to every featured shard and the fan-outs over
 * them (see the header).
 *
 * DESIGN (a fan-out)
 * Threads: the caller's, and one per shard for the call's length, each
 * owning its shard's client call. Shared state (the merged dims and
 * version, the first failure, the open calls for cancelling) lives in one
 * struct under its mutex; the callback runs under it too, so callers need
 * no locking of their own. A failure on one shard cancels the open calls
 * of the others (vr_ccall_cancel may come from any thread). The caller
 * joins every thread before returning. */
#include "featured_shards.h"

#include "err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vr_shards {
	vr_shardmap *map;
	vr_channel **ch;     /* one per shard, map order */
};

int vr_shards_open(vr_shards **out, const char *list, const vr_channel_opts *opts, char *why,
		   size_t cap)
{
	vr_channel_opts o = { 0 };
	vr_shards *s = calloc(1, sizeof *s);
	*out = NULL;
	if (!s) {
		snprintf(why, cap, "out of memory");
		return VR_ENOMEM;
	}
	int rc = vr_shardmap_parse(&s->map, list, why, cap);
	if (rc)
		goto fail;
	if (!(s->ch = calloc(s->map->n, sizeof *s->ch))) {
		rc = VR_ENOMEM;
		snprintf(why, cap, "out of memory");
		goto fail;
	}
	if (opts)
		o = *opts;
	o.shard_map = s->map->n > 1 ? s->map->tag : NULL;
	for (size_t k = 0; k < s->map->n; k++)
		if ((rc = vr_channel_create(&s->ch[k], s->map->names[k], &o))) {
			snprintf(why, cap, "cannot set up a channel to featured shard %s: %s",
				 s->map->names[k], vr_strerror(rc));
			goto fail;
		}
	*out = s;
	return 0;
fail:
	vr_shards_close(s);
	return rc;
}

void vr_shards_close(vr_shards *s)
{
	if (!s)
		return;
	for (size_t k = 0; s->ch && k < s->map->n; k++)
		vr_channel_destroy(s->ch[k]);
	free(s->ch);
	vr_shardmap_free(s->map);
	free(s);
}

const vr_shardmap *vr_shards_map(const vr_shards *s)
{
	return s->map;
}

size_t vr_shards_count(const vr_shards *s)
{
	return s->map->n;
}

const char *vr_shards_name(const vr_shards *s, size_t k)
{
	return s->map->names[k];
}

vr_channel *vr_shards_channel(const vr_shards *s, size_t k)
{
	return s->ch[k];
}

size_t vr_shards_owner(const vr_shards *s, const char *id)
{
	return vr_shardmap_owner(s->map, id, strlen(id));
}

/* Runs fn(&arg[k]) for every k < n, one thread each (inline when n is
 * 1), and joins them. Returns 0, or -errno when a thread cannot start
 * (the ones started are joined; the rest did not run). */
static int fan_out(size_t n, void *(*fn)(void *), void *args, size_t arg_size)
{
	pthread_t *tids;
	size_t started = 0;
	int rc = 0;
	if (n == 1) {
		fn(args);
		return 0;
	}
	if (!(tids = calloc(n, sizeof *tids)))
		return VR_ENOMEM;
	for (; started < n; started++) {
		int e = pthread_create(&tids[started], NULL, fn, (char *)args + started * arg_size);
		if (e) {
			rc = -e;
			break;
		}
	}
	for (size_t k = 0; k < started; k++)
		pthread_join(tids[k], NULL);
	free(tids);
	return rc;
}

/* ---- GetVectors ------------------------------------------------------------- */

struct gv {
	vr_shards *s;
	uint32_t version;            /* asked for (0: active) */
	int64_t deadline_ms;
	vr_shards_vector_fn fn;
	void *ctx;
	pthread_mutex_t mu;          /* guards the rest, and serialises fn */
	uint32_t dims, model_version;
	size_t first_shard;          /* the shard that set dims and model_version */
	int have;                    /* dims and model_version are set */
	int rc;                      /* the first failure */
	vr_status st;
	vr_ccall **cc;               /* open calls, per shard, for cancelling */
};

struct gv_shard {
	struct gv *g;
	size_t k;
	char **ids;                  /* the ids this shard owns (ids given) */
	size_t n_ids;
	int skip;                    /* ids given, none owned here */
};

/* Records shard k's failure rc (the first one wins) and cancels the other
 * shards' calls. Under g->mu. */
static void gv_fail(struct gv *g, size_t k, int rc, const vr_status *st, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void gv_fail(struct gv *g, size_t k, int rc, const vr_status *st, const char *fmt, ...)
{
	char what[200] = "";
	if (g->rc)
		return;
	g->rc = rc;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof what, fmt, ap);
		va_end(ap);
		g->st.code = GRPC_STATUS_INTERNAL;
		snprintf(g->st.message, sizeof g->st.message, "featured shard %.60s: %.170s",
			 g->s->map->names[k], what);
	} else if (st) {
		g->st.code = st->code;
		snprintf(g->st.message, sizeof g->st.message, "featured shard %.60s: %.170s",
			 g->s->map->names[k], st->message);
	}
	for (size_t j = 0; j < g->s->map->n; j++)
		if (j != k && g->cc[j])
			vr_ccall_cancel(g->cc[j]);
}

/* Takes one chunk of shard k: checks it against the others and hands its
 * vectors to fn. Under g->mu. Returns 0 or the failure (recorded). */
static int gv_chunk(struct gv *g, size_t k, const Visrec__V1__GetVectorsResponse *r)
{
	if (g->rc)
		return g->rc;
	if (g->version && r->model_version != g->version) {
		gv_fail(g, k, VR_ECORRUPT, NULL, "sent vectors of model version %u, not of %u",
			r->model_version, g->version);
		return g->rc;
	}
	if (!g->have) {
		g->have = 1;
		g->dims = r->dims;
		g->model_version = r->model_version;
		g->first_shard = k;
	} else if (r->dims != g->dims || r->model_version != g->model_version) {
		gv_fail(g, k, VR_ECORRUPT, NULL, "sent model version %u of %u dims, but shard %s sent "
			"version %u of %u dims: give every shard the same model", r->model_version,
			r->dims, g->s->map->names[g->first_shard], g->model_version, g->dims);
		return g->rc;
	}
	for (size_t i = 0; i < r->n_vectors; i++) {
		const Visrec__V1__Vector *v = r->vectors[i];
		if (v->n_values != r->dims) {
			gv_fail(g, k, VR_ECORRUPT, NULL, "sent a vector of %zu values for %u dims",
				v->n_values, r->dims);
			return g->rc;
		}
		int rc = g->fn(g->ctx, k, v->item_id, v->values, r->dims, r->model_version);
		if (rc) {
			gv_fail(g, k, rc, NULL, "stopped by the caller");
			return rc;
		}
	}
	return 0;
}

static void *gv_main(void *arg)
{
	struct gv_shard *a = arg;
	struct gv *g = a->g;
	Visrec__V1__GetVectorsRequest req = VISREC__V1__GET_VECTORS_REQUEST__INIT;
	vr_ccall *cc = NULL;
	vr_status st = { 0 };
	if (a->skip)
		return NULL;
	req.all = !a->ids;
	req.item_ids = a->ids;
	req.n_item_ids = a->ids ? a->n_ids : 0;
	req.model_version = g->version;
	int rc = vr_ccall_start(&cc, g->s->ch[a->k], "/visrec.v1.Featured/GetVectors",
				&visrec__v1__get_vectors_response__descriptor, g->deadline_ms, NULL);
	if (rc) {
		pthread_mutex_lock(&g->mu);
		gv_fail(g, a->k, rc, NULL, "cannot start GetVectors: %s", vr_strerror(rc));
		pthread_mutex_unlock(&g->mu);
		return NULL;
	}
	pthread_mutex_lock(&g->mu);
	g->cc[a->k] = cc;
	if (g->rc)
		vr_ccall_cancel(cc);
	pthread_mutex_unlock(&g->mu);
	if (!(rc = vr_ccall_send(cc, &req.base)) && !(rc = vr_ccall_close_send(cc))) {
		ProtobufCMessage *m = NULL;
		while (!(rc = vr_ccall_recv(cc, &m))) {
			pthread_mutex_lock(&g->mu);
			rc = gv_chunk(g, a->k, (const void *)m);
			pthread_mutex_unlock(&g->mu);
			protobuf_c_message_free_unpacked(m, NULL);
			if (rc)
				break;
		}
	}
	if (rc && rc != VR_EEOF && rc != VR_ERPC)
		vr_ccall_cancel(cc);
	pthread_mutex_lock(&g->mu);
	g->cc[a->k] = NULL;
	pthread_mutex_unlock(&g->mu);
	int frc = vr_ccall_finish(cc, &st);
	pthread_mutex_lock(&g->mu);
	if (rc == VR_EINVAL)
		gv_fail(g, a->k, VR_ECORRUPT, NULL, "sent a GetVectors message that does not unpack");
	else if ((rc == VR_EEOF || rc == VR_ERPC) && frc)
		gv_fail(g, a->k, VR_ERPC, &st, NULL);
	else if (rc && rc != VR_EEOF && !g->rc)
		gv_fail(g, a->k, rc, NULL, "GetVectors: %s", vr_strerror(rc));
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

int vr_shards_get_vectors(vr_shards *s, uint32_t version, const char *const *ids, size_t n_ids,
			  vr_shards_vector_fn fn, void *ctx, uint32_t *dims,
			  uint32_t *model_version, int64_t deadline_ms, vr_status *st)
{
	size_t n = s->map->n;
	struct gv g = { .s = s, .version = version, .deadline_ms = deadline_ms, .fn = fn, .ctx = ctx };
	struct gv_shard *a = calloc(n, sizeof *a);
	char **owned = NULL;
	int rc = VR_ENOMEM;
	*dims = 0;
	*model_version = 0;
	g.cc = calloc(n, sizeof *g.cc);
	if (!a || !g.cc || (ids && n_ids && !(owned = malloc(n_ids * sizeof *owned))))
		goto leave;
	/* Ids grouped by owner: shard k's are owned[first_k .. first_k + n_k). */
	size_t *count = NULL;
	if (ids) {
		if (!(count = calloc(n, sizeof *count)))
			goto leave;
		size_t *owner = malloc((n_ids ? n_ids : 1) * sizeof *owner);
		if (!owner) {
			free(count);
			goto leave;
		}
		for (size_t i = 0; i < n_ids; i++)
			count[owner[i] = vr_shards_owner(s, ids[i])]++;
		size_t at = 0;
		for (size_t k = 0; k < n; k++) {
			a[k].ids = owned + at;
			a[k].n_ids = 0;
			a[k].skip = !count[k];
			at += count[k];
		}
		for (size_t i = 0; i < n_ids; i++) {
			struct gv_shard *sh = &a[owner[i]];
			sh->ids[sh->n_ids++] = (char *)ids[i];
		}
		free(owner);
		free(count);
	}
	for (size_t k = 0; k < n; k++) {
		a[k].g = &g;
		a[k].k = k;
		if (ids && !n_ids)
			a[k].skip = 1;
	}
	pthread_mutex_init(&g.mu, NULL);
	rc = fan_out(n, gv_main, a, sizeof *a);
	pthread_mutex_destroy(&g.mu);
	if (rc) {
		if (st) {
			st->code = GRPC_STATUS_INTERNAL;
			snprintf(st->message, sizeof st->message, "cannot start a thread per shard: %s",
				 vr_strerror(rc));
		}
		goto leave;
	}
	rc = g.rc;
	if (rc && st)
		*st = g.st;
	if (!rc) {
		*dims = g.dims;
		*model_version = g.model_version;
	}
leave:
	free(owned);
	free(a);
	free(g.cc);
	return rc;
}

/* ---- Info ------------------------------------------------------------------- */

struct info_shard {
	vr_shards *s;
	size_t k;
	int64_t deadline_ms;
	Visrec__V1__FeaturedInfoResponse *resp;
	vr_status st;
};

static void *info_main(void *arg)
{
	struct info_shard *a = arg;
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	int rc = vr_client_unary(a->s->ch[a->k], "/visrec.v1.Featured/Info", &req.base,
				 &visrec__v1__featured_info_response__descriptor, &m, a->deadline_ms,
				 NULL, &a->st);
	if (rc && a->st.code == GRPC_STATUS_OK) {
		a->st.code = GRPC_STATUS_INTERNAL;
		snprintf(a->st.message, sizeof a->st.message, "%s", vr_strerror(rc));
	}
	a->resp = rc ? NULL : (void *)m;
	return NULL;
}

int vr_shards_info(vr_shards *s, Visrec__V1__FeaturedInfoResponse **resp, vr_status *st,
		   int64_t deadline_ms)
{
	size_t n = s->map->n;
	struct info_shard *a = calloc(n, sizeof *a);
	if (!a)
		return VR_ENOMEM;
	for (size_t k = 0; k < n; k++) {
		a[k].s = s;
		a[k].k = k;
		a[k].deadline_ms = deadline_ms;
	}
	int rc = fan_out(n, info_main, a, sizeof *a);
	int failed = 0;
	for (size_t k = 0; k < n; k++) {
		resp[k] = a[k].resp;
		st[k] = a[k].st;
		if (!resp[k]) {
			failed++;
			if (rc) {
				st[k].code = GRPC_STATUS_INTERNAL;
				snprintf(st[k].message, sizeof st[k].message, "no thread to ask it: %s",
					 vr_strerror(rc));
			}
		}
	}
	free(a);
	return failed;
}
