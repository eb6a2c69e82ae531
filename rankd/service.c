/* rankd's service: the method table, start-up (interactions and the last
 * snapshot, loaded before the daemon reports SERVING), the swap to a newly
 * trained model, and the change-feed followers' callback that makes items
 * new in featured rankable at once.
 *
 * Why one file at ~810 lines: start-up, the swap and the feed callbacks
 * all move the served snapshot and the feed positions under one lock
 * (swap_mu); split, each part would have to restate when the others run.
 *
 * Feeds: rankd follows every featured shard's change feed, one follower
 * (one Watch, one thread) per shard, each from its own position, stored
 * per shard (rk_feed, service.h) with the rows it writes. Items are
 * disjoint between shards, so the feeds are applied independently: a
 * change of shard k moves only shard k's position, and a shard that is
 * down stops only its own feed (Recommend and Score serve on from what
 * rankd holds; Info and Health name the shard; Train, which needs every
 * shard's vectors, is refused naming it). When it is back its follower
 * resumes after its own position: nothing missed, nothing applied twice.
 * A changed shard list (another map tag) finds no positions under its
 * keys: every shard's feed is then replayed from its start (an idempotent
 * replay: rows are set again from the same vectors), and the positions
 * of other maps are deleted at start-up. A list adopted while running
 * (rk_service_relist) carries the positions of the shards in both lists
 * over to its keys; only its new shards' feeds start from the beginning.
 *
 * Cold start: for each ADDED / REPLACED / REEMBEDDED change the follower
 * interns the item id, folds the change's vector into the item's row with
 * the served model (VBPR: [β_i + β'·f_i, γ_i, E f_i], with β_i = γ_i = 0 for
 * an item the model never saw) and appends or replaces it in the served
 * index; the next Recommend ranks it. The row is written to LMDB with the
 * feed position in one transaction, so a restart serves it without
 * featured. The served model keeps the featured model version it was
 * trained on (a DVBPR model its own embedding, while featured's active
 * version stays the pretrained features): a change that carries a vector
 * of another version has the follower ask featured for the item's vector
 * of the model's version (GetVectors with model_version); an item featured
 * has no such vector for is skipped until a change of that version brings
 * it, or the next Train.
 *
 * Removal: a REMOVED change (a reshard deleted the item from that shard,
 * after storing it on its new owner) never drops the item's row, so a
 * reshard loses no item from serving, and one row per id serves it once
 * (follow_removed says what is counted). A change of a kind rankd does
 * not know is skipped, its position noted. */
#include "service.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deadline.h"
#include "err.h"
#include "shardmap.h"
#include "log.h"
#include "tcache.h"
#include "visrec/v1/rankd.pb-c.h"

/* ---- latency ------------------------------------------------------------ */

#define LAT_SUB 16 /* buckets per power of two */

void rk_latency_add(rk_latency *l, uint64_t ns)
{
	uint64_t v = ns / 100 + 1; /* 100 ns units, >= 1 */
	int e = 63 - __builtin_clzll(v);
	uint64_t sub = e >= 4 ? (v >> (e - 4)) & (LAT_SUB - 1) : (v << (4 - e)) & (LAT_SUB - 1);
	size_t b = (size_t)e * LAT_SUB + sub;
	if (b >= RK_LAT_BUCKETS)
		b = RK_LAT_BUCKETS - 1;
	atomic_fetch_add_explicit(&l->count[b], 1, memory_order_relaxed);
}

double rk_latency_quantile(const rk_latency *l, double q, uint64_t *n)
{
	uint64_t total = 0, seen = 0;
	for (size_t b = 0; b < RK_LAT_BUCKETS; b++)
		total += atomic_load_explicit(&l->count[b], memory_order_relaxed);
	if (n)
		*n = total;
	if (!total)
		return 0;
	uint64_t rank = (uint64_t)ceil(q * (double)total);
	if (rank < 1)
		rank = 1;
	for (size_t b = 0; b < RK_LAT_BUCKETS; b++) {
		seen += atomic_load_explicit(&l->count[b], memory_order_relaxed);
		if (seen >= rank) {
			/* The bucket's middle: 2^e × (1 + (sub + 0.5) / 16), in 100 ns. */
			double e = (double)(b / LAT_SUB), sub = (double)(b % LAT_SUB);
			return ldexp(1.0 + (sub + 0.5) / LAT_SUB, (int)e) * 0.1;
		}
	}
	return 0;
}

/* ---- start-up and end --------------------------------------------------- */

/* The active snapshot built for serving into *out (NULL when none). */
static int build_active(rk_service *svc, rk_served **out, char *err, size_t errlen)
{
	rk_snap_meta meta;
	rk_model *model = NULL;
	struct rk_index *index = NULL;
	rk_served *s = NULL;
	rk_csr all = { 0 };
	int rc = rk_snap_active(&svc->snap, &meta);
	if (rc == VR_ENOTFOUND)
		return 0;
	if (rc) {
		snprintf(err, errlen, "cannot read the active model snapshot: %s", vr_strerror(rc));
		return rc;
	}
	if ((rc = rk_snap_load(&svc->snap, &meta, rk_interactions_items(svc->ix), &model, &index))) {
		snprintf(err, errlen, "cannot load model snapshot v%" PRIu64 ": %s", meta.version,
			 vr_strerror(rc));
		return rc;
	}
	/* Its seen lists are every interaction stored now, those added after
	 * its Train included, so the overlay starts empty (overlay.h). */
	if ((rc = rk_interactions_csr(svc->ix, &all))) {
		rk_model_free(model);
		rk_index_destroy(index);
		snprintf(err, errlen, "cannot index the interactions: %s", vr_strerror(rc));
		return rc;
	}
	rk_served_info info = { .version = meta.version, .feature_dims = meta.feature_dims,
				.feature_version = meta.feature_version, .use_all = (int)meta.use_all,
				.created_unix = meta.created_unix };
	if ((rc = rk_served_create(&s, model, index, &all, &info)) ||
	    (rc = rk_served_pad(s, rk_interactions_items(svc->ix)))) {
		rk_served_unref(s);
		snprintf(err, errlen, "cannot rebuild model v%" PRIu64 " for serving: %s", meta.version,
			 vr_strerror(rc));
		return rc;
	}
	*out = s;
	return 0;
}

static int load_active(rk_service *svc, char *err, size_t errlen)
{
	rk_served *s = NULL;
	int rc = build_active(svc, &s, err, errlen);
	if (!rc && s)
		rk_served_unref(rk_serving_swap(&svc->serving, s));
	return rc;
}

/* The users the top-k cache holds lists for, most recent first, into a
 * malloc'd *users (the refresh takes it over); their count, 0 without a
 * cache or memory. */
static size_t tcache_recent(rk_service *svc, uint32_t **users)
{
	rk_tcache_stats ts;
	*users = NULL;
	if (!svc->tcache)
		return 0;
	rk_tcache_stats_get(svc->tcache, &ts);
	if (!ts.entries || !(*users = malloc(ts.entries * sizeof **users)))
		return 0;
	return rk_tcache_recent(svc->tcache, *users, ts.entries);
}

/* The swap of a model built and activated (rk_service_publish's after a
 * Train, rk_service_install's on a replica), with swap_mu held, which it
 * releases: next becomes the served model, the overlay keeps what next
 * does not know, the top-k cache starts over under next's version and the
 * refresh refills the users it held, each follower rewinds to from[k]
 * (when below seq[k], where it was), and the replaced snapshot is
 * deleted. */
static void swap_in(rk_service *svc, rk_served *next, const uint64_t *from, const uint64_t *seq)
{
	uint64_t version = next->info.version;
	uint32_t *recent = NULL;
	size_t n_recent = tcache_recent(svc, &recent);
	pthread_rwlock_wrlock(&svc->ix_lock);
	rk_served *old = rk_serving_swap(&svc->serving, next);
	rk_overlay_prune(svc->live, &next->seen);
	if (svc->tcache)
		rk_tcache_reset(svc->tcache, version);
	pthread_rwlock_unlock(&svc->ix_lock);
	rk_refresher_give(svc, version, recent, n_recent);
	for (size_t k = 0; k < svc->n_feeds; k++)
		if (svc->feeds[k].follower && from[k] < seq[k])
			rk_follower_rewind(svc->feeds[k].follower, from[k]);
	pthread_mutex_unlock(&svc->swap_mu);
	rk_feed_notify(svc);
	uint64_t old_version = old ? old->info.version : 0;
	rk_served_unref(old);
	int rc;
	if (old_version && old_version != version && (rc = rk_snap_drop(&svc->snap, old_version)))
		VR_WARN("the replaced model snapshot v%" PRIu64 " could not be deleted: %s",
			old_version, vr_strerror(rc));
}

uint64_t rk_service_feed_seq(rk_service *svc, size_t k)
{
	uint64_t seq = 0;
	if (svc->feeds[k].follower)
		return rk_follower_seq(svc->feeds[k].follower);
	if (rk_snap_seq(&svc->snap, svc->feeds[k].key, &seq))
		seq = 0;
	return seq;
}

/* Makes version the active snapshot with each feed's position from[k].
 * Caller holds swap_mu. */
static int activate(rk_service *svc, uint64_t version, const uint64_t *from)
{
	rk_snap_pos pos[VR_SHARDS_MAX];
	for (size_t k = 0; k < svc->n_feeds; k++)
		pos[k] = (rk_snap_pos){ svc->feeds[k].key, from[k] };
	int rc = rk_snap_activate(&svc->snap, version, pos, svc->n_feeds);
	for (size_t k = 0; !rc && k < svc->n_feeds; k++)
		svc->feeds[k].seq_saved = from[k];
	return rc;
}

int rk_service_install(rk_service *svc, uint64_t version, uint64_t featured_seq, char *err,
		       size_t errlen)
{
	uint64_t seq[VR_SHARDS_MAX], from[VR_SHARDS_MAX];
	rk_served *s = NULL;
	pthread_mutex_lock(&svc->swap_mu);
	/* The export carries one featured's position; with several shards
	 * each feed replays from its start (service.h). */
	for (size_t k = 0; k < svc->n_feeds; k++) {
		seq[k] = rk_service_feed_seq(svc, k);
		from[k] = svc->n_feeds > 1 ? 0 : featured_seq < seq[k] ? featured_seq : seq[k];
	}
	int rc = activate(svc, version, from);
	if (rc) {
		snprintf(err, errlen, "cannot activate model snapshot v%" PRIu64 ": %s", version,
			 vr_strerror(rc));
		goto leave;
	}
	pthread_rwlock_rdlock(&svc->ix_lock);
	rc = build_active(svc, &s, err, errlen);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		goto leave;
	swap_in(svc, s, from, seq);
	return 0;
leave:
	pthread_mutex_unlock(&svc->swap_mu);
	return rc;
}

/* feeds[n] for the shards' map: keys and Health names (service.h). */
static void name_feeds(rk_service *svc, rk_feed *feeds, const vr_shards *shards)
{
	const vr_shardmap *map = vr_shards_map(shards);
	for (size_t k = 0; k < map->n; k++) {
		rk_feed *fe = &feeds[k];
		fe->svc = svc;
		fe->k = k;
		if (map->n == 1)
			snprintf(fe->key, sizeof fe->key, RK_SNAP_SEQ_KEY);
		else
			snprintf(fe->key, sizeof fe->key, RK_SNAP_SEQ_KEY "/%s/%s", map->tag, map->names[k]);
		int len = snprintf(fe->health_name, sizeof fe->health_name,
				   "visrec.v1.Rank/featured/%s", map->names[k]);
		if (len < 0 || len > 127) /* health.h's longest name */
			fe->health_name[0] = 0;
	}
}

/* Deletes the stored positions of every map but shards' (their keys would
 * never be read again). Caller holds swap_mu, or is alone (start-up). */
static int forget_other_maps(rk_service *svc, const vr_shards *shards, size_t *dropped)
{
	const vr_shardmap *map = vr_shards_map(shards);
	char keep[RK_FEED_KEY_MAX];
	snprintf(keep, sizeof keep, RK_SNAP_SEQ_KEY "/%s/", map->tag);
	return rk_snap_seq_forget(&svc->snap, map->n > 1 ? keep : NULL, dropped);
}

static rk_shardset *set_create(rk_service *svc, vr_shards *shards)
{
	rk_shardset *set = calloc(1, sizeof *set);
	size_t n = shards ? vr_shards_count(shards) : 0;
	if (!set || (n && !(set->feeds = calloc(n, sizeof *set->feeds)))) {
		free(set);
		return NULL;
	}
	atomic_init(&set->refs, 1);
	set->shards = shards;
	set->n_feeds = n;
	if (n)
		name_feeds(svc, set->feeds, shards);
	return set;
}

rk_shardset *rk_shardset_get(rk_service *svc)
{
	pthread_mutex_lock(&svc->set_mu);
	rk_shardset *set = svc->set;
	if (set)
		atomic_fetch_add(&set->refs, 1);
	pthread_mutex_unlock(&svc->set_mu);
	return set;
}

void rk_shardset_put(rk_shardset *set)
{
	if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t k = 0; k < set->n_feeds; k++)
		rk_follower_stop(set->feeds[k].follower);
	free(set->feeds);
	vr_shards_close(set->shards);
	free(set);
}

/* The set of the shards main opened (taken over), one feed per shard,
 * keyed by the map (service.h), and the positions of other maps
 * forgotten. */
static int open_feeds(rk_service *svc, char *err, size_t errlen)
{
	pthread_mutex_init(&svc->set_mu, NULL);
	pthread_mutex_init(&svc->relist_mu, NULL);
	if (!(svc->set = set_create(svc, svc->shards))) {
		snprintf(err, errlen, "out of memory");
		return VR_ENOMEM;
	}
	svc->feeds = svc->set->feeds;
	svc->n_feeds = svc->set->n_feeds;
	if (!svc->shards)
		return 0;
	const vr_shardmap *map = vr_shards_map(svc->shards);
	size_t dropped = 0;
	int rc = forget_other_maps(svc, svc->shards, &dropped);
	if (rc) {
		snprintf(err, errlen, "cannot read the stored feed positions: %s", vr_strerror(rc));
		return rc;
	}
	if (dropped)
		VR_WARN("the change-feed positions of %zu featured shard(s) of another shard list "
			"were stored; they do not apply to this list (%s, map %s) and are deleted: "
			"every shard's feed is applied from its start", dropped, map->list, map->tag);
	return 0;
}

int rk_service_open(rk_service *svc, char *err, size_t errlen)
{
	pthread_rwlockattr_t attr;
	if (!svc->max_k)
		svc->max_k = RK_MAX_K_DEFAULT;
	if (!svc->max_batch)
		svc->max_batch = RK_MAX_BATCH_DEFAULT;
	/* Writers first: a stream of Recommends must not starve AddInteractions. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&svc->ix_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&svc->swap_mu, NULL);
	pthread_mutex_init(&svc->train_mu, NULL);
	pthread_mutex_init(&svc->feed_mu, NULL);
	vr_cond_init(&svc->feed_cv);
	rk_serving_init(&svc->serving);
	svc->opened = 1;
	if (svc->scan_threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		svc->scan_threads = n < 1 ? 1 : n > 16 ? 16 : (int)n;
	}
	if (svc->scan_threads > 16)
		svc->scan_threads = 16;
	int rc = rk_overlay_create(&svc->live);
	if (!rc && svc->topk_cache_mb > 0)
		rc = rk_tcache_create((size_t)svc->topk_cache_mb << 20, &svc->tcache);
	if (!rc && svc->tcache)
		rc = rk_refresher_start(svc);
	if (!rc && svc->scan_threads > 1)
		rc = rk_scan_pool_create(svc->scan_threads - 1, &svc->scan_pool);
	if (rc) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	if ((rc = rk_interactions_open(&svc->ix, svc->store))) {
		snprintf(err, errlen, "cannot load the interactions: %s%s%s", vr_strerror(rc),
			 vr_store_last_error()[0] ? ": " : "", vr_store_last_error());
		return rc;
	}
	if ((rc = rk_snap_open(&svc->snap, svc->store))) {
		snprintf(err, errlen, "cannot open the model databases: %s", vr_strerror(rc));
		return rc;
	}
	pthread_mutex_init(&svc->feeds_mu, NULL);
	if ((rc = open_feeds(svc, err, errlen)))
		return rc;
	return load_active(svc, err, errlen);
}

#define GET_IDS_MS 10000 /* deadline of GetVectors of one item */

/* Records the feed position of a change that stored nothing: lazily, at
 * most every SEQ_EVERY changes or SEQ_MS, since replaying such changes
 * after a crash changes nothing. Caller holds swap_mu. */
#define SEQ_EVERY 256
#define SEQ_MS 1000
static int note_seq(rk_feed *fe, uint64_t seq)
{
	int64_t ms = vr_now_ms();
	if (seq < fe->seq_saved + SEQ_EVERY && ms - fe->seq_saved_ms < SEQ_MS)
		return 0;
	rk_snap_pos pos = { fe->key, seq };
	int rc = rk_snap_put_seq(&fe->svc->snap, &pos);
	if (!rc) {
		fe->seq_saved = seq;
		fe->seq_saved_ms = ms;
	}
	return rc;
}

/* GetVectors' callback for the one item the follower asks for. */
struct one_vector {
	float *values;
	uint32_t dims;
	int got;
};

static int on_one_vector(void *ctx, size_t shard, const char *id, const float *values,
			 uint32_t dims, uint32_t version)
{
	struct one_vector *o = ctx;
	(void)shard;
	(void)id;
	(void)version;
	if (dims == o->dims) {
		memcpy(o->values, values, (size_t)dims * sizeof(float));
		o->got = 1;
	}
	return 0;
}

/* The item's vector of the served model's featured version into vec (f
 * floats): the change's own, else (a new item or image) featured's by
 * GetVectors. 1 when found. */
static int change_vector(rk_service *svc, const rk_served *s, const Visrec__V1__ItemChange *c,
			 uint32_t f, float *vec)
{
	const Visrec__V1__Vector *v = c->vector;
	if (v && v->model_version == s->info.feature_version && v->n_values == f) {
		memcpy(vec, v->values, (size_t)f * sizeof(float));
		return 1;
	}
	/* Re-embedding under another version leaves this version's vector as
	 * it was (a DVBPR Finish re-embeds every item). */
	if (c->kind == VISREC__V1__ITEM_CHANGE__KIND__REEMBEDDED)
		return 0;
	struct one_vector o = { .values = vec, .dims = f };
	const char *ids[1] = { c->item_id };
	uint32_t dims, version;
	vr_status st = { 0 };
	int rc = vr_shards_get_vectors(svc->shards, s->info.feature_version, ids, 1, on_one_vector,
				       &o, &dims, &version, GET_IDS_MS, &st);
	if (rc)
		VR_WARN("featured change %" PRIu64 ": cannot ask featured for item %s's vector of "
			"model version %u: %s%s%s", c->seq, c->item_id, s->info.feature_version,
			vr_strerror(rc), st.message[0] ? ": " : "", st.message);
	return !rc && o.got;
}

/* Item i's row of the served model s from its vector vec (row: dim + f
 * floats, vec its tail), served at once and stored with the feed
 * position pos (NULL: none moves). Caller holds swap_mu. Returns 0 or
 * the model's or the store's error. */
static int put_item_row(rk_service *svc, rk_served *s, uint32_t i, const float *vec, float *row,
			const rk_snap_pos *pos)
{
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	uint32_t have = view.n;
	rk_index_release(&view);
	int rc;
	if ((rc = rk_served_item_row(s, i, vec, row)) || (rc = rk_served_set_row(s, i, row)))
		return rc;
	/* Rows have .. i - 1 came in as zeros before it (rk_served_set_row). */
	if (svc->tcache)
		rk_tcache_note_range(svc->tcache, s->info.version, i < have ? i : have, i + 1);
	return rk_snap_put_row(&svc->snap, s->info.version, i, row, rk_model_dim(s->model), pos);
}

/* One item a replica learned from its writer's log: its row of the
 * served model from featured's vector, as follow_apply gives it (no feed
 * position moves: the change, if it came, was noted already). */
static int learned_item(rk_service *svc, const char *id)
{
	rk_served *s = NULL;
	float *row = NULL;
	uint32_t i;
	int rc = 0;
	pthread_mutex_lock(&svc->swap_mu);
	if (!(s = rk_serving_get(&svc->serving)))
		goto leave;
	pthread_rwlock_rdlock(&svc->ix_lock);
	rc = rk_items_find(svc->ix, id, strlen(id), &i);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc)
		goto leave;
	uint32_t dim = rk_model_dim(s->model), f = rk_model_feature_dims(s->model);
	if (!f) /* no visual terms: the zero row rk_service_add gave it */
		goto leave;
	if (!(row = malloc(((size_t)dim + f) * sizeof(float)))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	Visrec__V1__ItemChange c = VISREC__V1__ITEM_CHANGE__INIT;
	c.kind = VISREC__V1__ITEM_CHANGE__KIND__ADDED;
	c.item_id = (char *)id;
	if (!change_vector(svc, s, &c, f, row + dim))
		goto leave; /* not found, or the call failed (logged): the next snapshot brings it */
	if ((rc = put_item_row(svc, s, i, row + dim, row, NULL)))
		goto leave;
	VR_DEBUG("item %s (index %u), learned from the writer's log, is rankable with its vector", id,
		 i);
leave:
	pthread_mutex_unlock(&svc->swap_mu);
	rk_served_unref(s);
	free(row);
	return rc;
}

void rk_service_learned_items(rk_service *svc, const rk_log_record *rec)
{
	char id[VR_ID_MAX + 1];
	for (uint32_t x = 0; x < rec->n; x++) {
		size_t len = rec->rows[x].item_len < VR_ID_MAX ? rec->rows[x].item_len : VR_ID_MAX;
		memcpy(id, rec->rows[x].item, len);
		id[len] = 0;
		int rc = learned_item(svc, id);
		if (rc)
			VR_WARN("item %s, learned from the writer's log: its row could not be set (%s); "
				"it ranks as a cold item without a vector until the writer's next model",
				id, vr_strerror(rc));
	}
}

/* A REMOVED change of shard fe: the item left it. Its row stays: the
 * item is ranked as before, and a reshard (today the only delete) stored
 * it on its new owner first, whose feed brings its ADDED when rankd
 * follows that shard; rankd holds one row per id, so it is never served
 * twice. When rankd's own list names another shard the owner, this shard
 * held a copy rankd never routed to (the item moved away from it under
 * that list): nothing to do. When rankd's list names this shard, rankd's
 * list is behind the shards': the item's vector can no longer be fetched
 * where rankd looks, so it is counted (Info, and Train is refused until
 * rankd runs with the new list). Caller holds swap_mu. */
static int follow_removed(rk_feed *fe, const Visrec__V1__ItemChange *c)
{
	rk_service *svc = fe->svc;
	if (vr_shards_owner(svc->shards, c->item_id) != fe->k) {
		VR_DEBUG("featured %s: change %" PRIu64 ": item %s left it; rankd's list places it "
			 "on %s", vr_shards_name(svc->shards, fe->k), c->seq, c->item_id,
			 vr_shards_name(svc->shards, vr_shards_owner(svc->shards, c->item_id)));
		return note_seq(fe, c->seq);
	}
	if (!atomic_fetch_add(&fe->removed_owned, 1))
		VR_WARN("featured %s: item %s left it (change %" PRIu64 "), and rankd's shard list "
			"(--featured) names that shard its owner: the shards were resharded to another "
			"list. Items that left keep their rows and are ranked as before; Train is "
			"refused until rankd runs with the new list (Info counts them per shard)",
			vr_shards_name(svc->shards, fe->k), c->item_id, c->seq);
	return note_seq(fe, c->seq);
}

/* A follower's callback, ctx its shard's feed (see the file comment). */
static int follow_apply(void *ctx, const Visrec__V1__ItemChange *c)
{
	rk_feed *fe = ctx;
	rk_service *svc = fe->svc;
	rk_served *s = NULL;
	float *row = NULL;
	int rc = 0;
	pthread_mutex_lock(&svc->swap_mu);
	if (rk_follower_rewinding(fe->follower)) {
		rc = VR_ECANCELLED;
		goto leave;
	}
	if (c->kind == VISREC__V1__ITEM_CHANGE__KIND__REMOVED && c->item_id && c->item_id[0]) {
		rc = follow_removed(fe, c);
		goto leave;
	}
	s = rk_serving_get(&svc->serving);
	int item_change = c->item_id && c->item_id[0] &&
			  (c->kind == VISREC__V1__ITEM_CHANGE__KIND__ADDED ||
			   c->kind == VISREC__V1__ITEM_CHANGE__KIND__REPLACED ||
			   c->kind == VISREC__V1__ITEM_CHANGE__KIND__REEMBEDDED);
	if (c->kind == VISREC__V1__ITEM_CHANGE__KIND__MODEL_SWITCHED && s &&
	    rk_served_needs_vectors(s) && c->model_version != s->info.feature_version)
		VR_WARN("featured switched to model version %u; the served model v%" PRIu64
			" was trained on version %u vectors, so new items wait for the next Train",
			c->model_version, s->info.version, s->info.feature_version);
	/* featured announces each new item's vector of every live version
	 * (a DVBPR model's) with a REEMBEDDED change of that version: for a
	 * model trained on other vectors it is not news, the item's own
	 * change came before it. */
	if (item_change && s && c->kind == VISREC__V1__ITEM_CHANGE__KIND__REEMBEDDED &&
	    c->model_version != s->info.feature_version) {
		VR_DEBUG("featured change %" PRIu64 ": item %s has a vector of version %u; the served "
			 "model uses version %u", c->seq, c->item_id, c->model_version,
			 s->info.feature_version);
		rc = note_seq(fe, c->seq);
		goto leave;
	}
	/* With no model served there is nothing to rank the item with; the
	 * next Train's GetVectors brings every item in. */
	if (!item_change || !s) {
		rc = note_seq(fe, c->seq);
		goto leave;
	}
	/* The exclusive lock (and a commit, which readers wait for) only for
	 * an id rankd has not seen. */
	uint32_t i;
	size_t len = strlen(c->item_id);
	pthread_rwlock_rdlock(&svc->ix_lock);
	rc = rk_items_find(svc->ix, c->item_id, len, &i);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (rc == VR_ENOTFOUND && svc->writer_addr) {
		/* A replica learns ids from its writer's log only, so that its
		 * indices stay the writer's; the row comes with the next
		 * snapshot. */
		rc = note_seq(fe, c->seq);
		goto leave;
	}
	if (rc == VR_ENOTFOUND) {
		pthread_rwlock_wrlock(&svc->ix_lock);
		rc = rk_items_intern(svc->ix, c->item_id, len, &i);
		if (!rc)
			rc = rk_interactions_flush(svc->ix);
		pthread_rwlock_unlock(&svc->ix_lock);
		if (!rc)
			rk_feed_notify(svc);
	}
	if (rc == VR_EINVAL) {
		char why[VR_ID_WHY], esc[64];
		vr_id_check(c->item_id, len, why, sizeof why);
		VR_WARN("featured change %" PRIu64 ": item id \"%s\" %s; skipped", c->seq,
			vr_id_escape(esc, sizeof esc, c->item_id, len), why);
		rc = note_seq(fe, c->seq);
		goto leave;
	}
	if (rc)
		goto leave;
	uint32_t dim = rk_model_dim(s->model), f = rk_model_feature_dims(s->model);
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	uint32_t have = view.n;
	rk_index_release(&view);
	if (!f) {
		/* No visual terms: a new item gets the zero row a cold item has,
		 * implied for stored snapshots; a known one keeps its row. */
		if (i >= have && (rc = rk_service_pad(svc, s, i + 1)))
			goto leave;
		rc = note_seq(fe, c->seq);
		goto leave;
	}
	if (!(row = malloc(((size_t)dim + f) * sizeof(float)))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	float *vec = row + dim;
	if (!change_vector(svc, s, c, f, vec)) {
		if (c->kind != VISREC__V1__ITEM_CHANGE__KIND__REEMBEDDED)
			VR_INFO("featured change %" PRIu64 ": item %s has no vector of featured model "
				"version %u (%u floats) yet, which the served model v%" PRIu64 " ranks "
				"with; it waits for one", c->seq, c->item_id, s->info.feature_version, f,
				s->info.version);
		rc = note_seq(fe, c->seq);
		goto leave;
	}
	rk_snap_pos pos = { fe->key, c->seq };
	if ((rc = put_item_row(svc, s, i, vec, row, &pos)))
		goto leave;
	fe->seq_saved = c->seq;
	VR_DEBUG("featured change %" PRIu64 ": item %s (index %u) is rankable%s", c->seq, c->item_id,
		 i, rk_served_cold(s, i) ? " (cold)" : "");
leave:
	pthread_mutex_unlock(&svc->swap_mu);
	rk_served_unref(s);
	free(row);
	if (rc && rc != VR_ECANCELLED)
		VR_WARN("featured %s: change %" PRIu64 " (item %s) could not be applied: %s; retrying",
			vr_shards_name(svc->shards, fe->k), c->seq, c->item_id ? c->item_id : "",
			vr_strerror(rc));
	return rc;
}

/* Health names each followed shard (SERVING while its feed is connected)
 * and Train (SERVING while every shard's is). Caller holds feeds_mu. */
static void health_feeds(rk_service *svc, rk_feed *fe, int connected)
{
	if (!svc->health)
		return;
	if (fe && fe->health_name[0] &&
	    vr_health_set(svc->health, fe->health_name,
			  connected ? VR_HEALTH_SERVING : VR_HEALTH_NOT_SERVING))
		VR_WARN("Health cannot name featured shard %s (no room): its state is in Info only",
			vr_shards_name(svc->shards, fe->k));
	vr_health_set(svc->health, "visrec.v1.Rank/Train",
		      svc->feeds_down ? VR_HEALTH_NOT_SERVING : VR_HEALTH_SERVING);
}

/* A follower's state callback, ctx its shard's feed. */
static void follow_state(void *ctx, int connected, const char *error)
{
	rk_feed *fe = ctx;
	rk_service *svc = fe->svc;
	pthread_mutex_lock(&svc->feeds_mu);
	svc->feeds_down += connected ? -1 : 1;
	int down = svc->feeds_down;
	health_feeds(svc, fe, connected);
	pthread_mutex_unlock(&svc->feeds_mu);
	if (connected)
		VR_INFO("featured %s: connected; following its change feed (%d of %zu shard(s) down)",
			vr_shards_name(svc->shards, fe->k), down, svc->n_feeds);
	else
		VR_WARN("featured %s is not reachable (%s): its new items wait until it is back, "
			"Train is refused meanwhile; Recommend and Score serve on (%d of %zu shard(s) down)",
			vr_shards_name(svc->shards, fe->k), error ? error : "", down, svc->n_feeds);
}

/* Starts the followers of feeds[0..n) (svc's current set), shard k's after
 * seq[k], each shard counted down until it connects. */
static int start_feeds(rk_service *svc, const uint64_t *seq)
{
	int rc = 0;
	pthread_mutex_lock(&svc->feeds_mu);
	svc->feeds_down = (int)svc->n_feeds;
	for (size_t k = 0; k < svc->n_feeds; k++)
		health_feeds(svc, &svc->feeds[k], 0);
	pthread_mutex_unlock(&svc->feeds_mu);
	for (size_t k = 0; !rc && k < svc->n_feeds; k++) {
		rk_feed *fe = &svc->feeds[k];
		fe->seq_saved = seq[k];
		rc = rk_follower_start(&fe->follower, vr_shards_channel(svc->shards, k),
				       vr_shards_name(svc->shards, k), seq[k], follow_apply, follow_state, fe);
		if (rc)
			VR_ERROR("cannot follow the change feed of featured %s: %s",
				 vr_shards_name(svc->shards, k), vr_strerror(rc));
	}
	return rc;
}

int rk_service_start(rk_service *svc)
{
	rk_metrics_start(svc);
	int rc = svc->writer_addr ? rk_replica_start(svc) : 0;
	if (rc || !svc->follow || !svc->n_feeds)
		return rc;
	uint64_t seq[VR_SHARDS_MAX] = { 0 };
	for (size_t k = 0; !rc && k < svc->n_feeds; k++)
		if ((rc = rk_snap_seq(&svc->snap, svc->feeds[k].key, &seq[k])))
			VR_ERROR("cannot read the stored position of featured %s's change feed: %s",
				 vr_shards_name(svc->shards, k), vr_strerror(rc));
	return rc ? rc : start_feeds(svc, seq);
}

/* ---- a new shard list ------------------------------------------------------ */

int rk_service_relist(rk_service *svc, const char *list, int *changed, char *why, size_t cap)
{
	*changed = 0;
	vr_shards *ns = NULL;
	int rc = vr_shards_open(&ns, list, &svc->featured_opts, why, cap);
	if (rc)
		return rc;
	pthread_mutex_lock(&svc->relist_mu);
	const vr_shardmap *nm = vr_shards_map(ns);
	if (svc->shards && !strcmp(vr_shards_map(svc->shards)->tag, nm->tag)) {
		pthread_mutex_unlock(&svc->relist_mu);
		vr_shards_close(ns);
		return 0;
	}
	rk_shardset *set = set_create(svc, ns);
	if (!set) {
		pthread_mutex_unlock(&svc->relist_mu);
		vr_shards_close(ns);
		snprintf(why, cap, "out of memory");
		return VR_ENOMEM;
	}
	/* No Train may run across the switch: its feed positions (base_seq)
	 * and vectors are the old list's. Holding train_mu, none starts. */
	pthread_mutex_lock(&svc->train_mu);
	if (svc->job) {
		pthread_mutex_unlock(&svc->train_mu);
		pthread_mutex_unlock(&svc->relist_mu);
		rk_shardset_put(set);
		snprintf(why, cap, "a Train is running; the new list is adopted when rankd is told again "
			 "(SIGHUP) after it ends");
		return VR_ESTATE;
	}
	/* The old followers stop before the new ones start, so that no item
	 * is applied by two; their positions carry over for shards in both
	 * lists. Halted, not freed: Info may still read them through a
	 * reference to the old set. */
	rk_shardset *old = svc->set;
	uint64_t oseq[VR_SHARDS_MAX] = { 0 }, seq[VR_SHARDS_MAX] = { 0 };
	for (size_t k = 0; k < svc->n_feeds; k++) {
		rk_follower_halt(svc->feeds[k].follower);
		oseq[k] = rk_service_feed_seq(svc, k);
	}
	/* The positions under the new list's keys, the old list's deleted. A
	 * store that fails here does not stop the switch: the followers start
	 * from seq in memory and each change they apply stores its position;
	 * a restart before any would replay a feed from its start (idempotent),
	 * and delete the old keys then. */
	size_t kept = 0, dropped = 0;
	int src = 0;
	pthread_mutex_lock(&svc->swap_mu);
	for (size_t k = 0; k < set->n_feeds; k++) {
		for (size_t j = 0; old && j < svc->n_feeds; j++)
			if (!strcmp(vr_shards_name(svc->shards, j), nm->names[k])) {
				seq[k] = oseq[j];
				kept++;
			}
		rk_snap_pos pos = { set->feeds[k].key, seq[k] };
		if (!src)
			src = rk_snap_put_seq(&svc->snap, &pos);
	}
	if (!src)
		src = forget_other_maps(svc, ns, &dropped);
	if (src)
		VR_WARN("the new shard list's feed positions could not be stored (%s): a restart "
			"before the next change replays the feeds from their start", vr_strerror(src));
	/* Health names the old list's shards no more than it must: each
	 * removed one reads NOT_SERVING (health.h cannot drop a name). */
	pthread_mutex_lock(&svc->feeds_mu);
	for (size_t j = 0; svc->health && j < svc->n_feeds; j++)
		if (svc->feeds[j].health_name[0] && vr_shardmap_find(nm, vr_shards_name(svc->shards, j)) < 0)
			vr_health_set(svc->health, svc->feeds[j].health_name, VR_HEALTH_NOT_SERVING);
	pthread_mutex_unlock(&svc->feeds_mu);
	pthread_mutex_lock(&svc->set_mu);
	svc->set = set;
	svc->shards = ns;
	svc->featured = vr_shards_channel(ns, 0);
	svc->featured_addr = nm->list;
	svc->feeds = set->feeds;
	svc->n_feeds = set->n_feeds;
	pthread_mutex_unlock(&svc->set_mu);
	pthread_mutex_unlock(&svc->swap_mu);
	rk_metrics_feeds(set->feeds, set->n_feeds, ns);
	if (svc->follow)
		rc = start_feeds(svc, seq);
	pthread_mutex_unlock(&svc->train_mu);
	pthread_mutex_unlock(&svc->relist_mu);
	rk_shardset_put(old);
	*changed = 1;
	VR_INFO("featured shard list now %s (map %s, %zu shard(s)): %zu kept their feed position, "
		"%zu new one(s) followed from their start%s", nm->list, nm->tag, set->n_feeds, kept,
		set->n_feeds - kept, dropped ? "; the old list's stored positions deleted" : "");
	if (rc)
		snprintf(why, cap, "cannot follow every new shard's change feed: %s", vr_strerror(rc));
	return rc;
}

void rk_service_log_ready(rk_service *svc)
{
	rk_served *s = rk_serving_get(&svc->serving);
	pthread_rwlock_rdlock(&svc->ix_lock);
	uint32_t users = rk_interactions_users(svc->ix), items = rk_interactions_items(svc->ix);
	uint64_t pairs = rk_interactions_count(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if (s)
		VR_INFO("serving %s model v%" PRIu64 " (D %u); %u users, %u items, %" PRIu64
			" interactions; featured %s%s",
			s->model->d.kind == RK_MODEL_VBPR ? "VBPR" : s->model->d.kind == RK_MODEL_BPR ? "BPR" : "DVBPR",
			s->info.version, rk_model_dim(s->model), users, items, pairs,
			svc->featured_addr ? svc->featured_addr : "-",
			svc->n_feeds && svc->feeds[0].follower ? " (following its change feed)" : "");
	else
		VR_INFO("no model trained yet (call Train); %u users, %u items, %" PRIu64
			" interactions; featured %s", users, items, pairs,
			svc->featured_addr ? svc->featured_addr : "-");
	rk_served_unref(s);
}

void rk_service_close(rk_service *svc)
{
	if (!svc->opened)
		return;
	rk_metrics_stop(svc);
	rk_replica_stop(svc);
	for (size_t k = 0; k < svc->n_feeds; k++) {
		rk_feed *fe = &svc->feeds[k];
		if (!fe->follower)
			continue;
		rk_follower_halt(fe->follower);
		rk_snap_pos pos = { fe->key, rk_follower_seq(fe->follower) };
		if (pos.seq > fe->seq_saved && rk_snap_put_seq(&svc->snap, &pos))
			VR_WARN("featured %s: feed position %" PRIu64 " could not be saved; changes after "
				"seq %" PRIu64 " will be applied again", vr_shards_name(svc->shards, k),
				pos.seq, fe->seq_saved);
	}
	if (svc->set) {
		/* The server has stopped: this is the last reference. */
		rk_shardset_put(svc->set);
		svc->set = NULL;
		svc->shards = NULL;
		svc->featured = NULL;
		pthread_mutex_destroy(&svc->set_mu);
		pthread_mutex_destroy(&svc->relist_mu);
	}
	svc->feeds = NULL;
	svc->n_feeds = 0;
	uint64_t n;
	double p50 = rk_latency_quantile(&svc->recommend_ns, 0.5, &n);
	if (n)
		VR_INFO("Recommend: %" PRIu64 " calls, handler time p50 %.1f us, p99 %.1f us, p99.9 %.1f us",
			n, p50, rk_latency_quantile(&svc->recommend_ns, 0.99, NULL),
			rk_latency_quantile(&svc->recommend_ns, 0.999, NULL));
	rk_refresher_stop(svc);
	if (svc->tcache) {
		rk_tcache_stats ts;
		rk_tcache_stats_get(svc->tcache, &ts);
		VR_INFO("top-k cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " evictions, %" PRIu64
			" items merged; %" PRIu64 " lists in %" PRIu64 " bytes", ts.hits, ts.misses,
			ts.evictions, ts.merged, ts.entries, ts.bytes);
	}
	rk_tcache_destroy(svc->tcache);
	svc->tcache = NULL;
	rk_scan_pool_destroy(svc->scan_pool);
	svc->scan_pool = NULL;
	rk_serving_destroy(&svc->serving);
	rk_interactions_close(svc->ix);
	svc->ix = NULL;
	rk_overlay_destroy(svc->live);
	svc->live = NULL;
	pthread_rwlock_destroy(&svc->ix_lock);
	pthread_mutex_destroy(&svc->swap_mu);
	pthread_mutex_destroy(&svc->train_mu);
	pthread_mutex_destroy(&svc->feed_mu);
	pthread_mutex_destroy(&svc->feeds_mu);
	pthread_cond_destroy(&svc->feed_cv);
	svc->opened = 0;
}

/* ---- the swap ------------------------------------------------------------- */

int rk_service_publish(rk_service *svc, rk_served *next, const uint64_t *base_seq)
{
	uint64_t seq[VR_SHARDS_MAX], from[VR_SHARDS_MAX];
	int rc = 0;
	pthread_mutex_lock(&svc->swap_mu);
	pthread_rwlock_rdlock(&svc->ix_lock);
	uint32_t items = rk_interactions_items(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	if ((rc = rk_served_pad(next, items)))
		goto leave;
	for (size_t k = 0; k < svc->n_feeds; k++) {
		seq[k] = rk_service_feed_seq(svc, k);
		from[k] = base_seq && base_seq[k] < seq[k] ? base_seq[k] : seq[k];
	}
	if ((rc = activate(svc, next->info.version, from)))
		goto leave;
	swap_in(svc, next, from, seq);
	return 0;
leave:
	pthread_mutex_unlock(&svc->swap_mu);
	rk_served_unref(next);
	return rc;
}

int rk_service_pad(rk_service *svc, rk_served *s, uint32_t n)
{
	struct rk_index_view view;
	rk_index_acquire(s->index, &view);
	uint32_t have = view.n;
	rk_index_release(&view);
	int rc = rk_served_pad(s, n);
	if (!rc && svc->tcache && n > have)
		rk_tcache_note_range(svc->tcache, s->info.version, have, n);
	return rc;
}

/* ---- the method table ----------------------------------------------------- */

#define M(name, req, resp, kind_, admin_, fn, own) \
	{ .path = "/visrec.v1.Rank/" name, .request = &visrec__v1__##req##__descriptor, \
	  .response = &visrec__v1__##resp##__descriptor, .kind = kind_, .admin = admin_, \
	  .handler = fn, .ctx = svc, .own_thread = own }

int rk_service_register(rk_service *svc, vr_server *srv)
{
	/* Recommend, Score, Info and Audience run inline on the server's workers (well
	 * under a millisecond); the calls that can take long get a thread. */
	const vr_method table[] = {
		M("AddInteractions", add_interactions_request, add_interactions_response, VR_UNARY, 1,
		  rk_handle_add_interactions, 1),
		M("Train", train_request, train_progress, VR_SERVER_STREAM, 1, rk_handle_train, 0),
		M("Recommend", recommend_request, recommend_response, VR_UNARY, 0, rk_handle_recommend, 0),
		M("RecommendBatch", recommend_batch_request, recommend_batch_response, VR_UNARY, 0,
		  rk_handle_recommend_batch, 1),
		M("Score", score_request, score_response, VR_UNARY, 0, rk_handle_score, 0),
		M("Evaluate", evaluate_request, evaluate_response, VR_UNARY, 0, rk_handle_evaluate, 1),
		M("Info", rank_info_request, rank_info_response, VR_UNARY, 0, rk_handle_info, 0),
		M("Audience", audience_request, audience_response, VR_UNARY, 0, rk_handle_audience, 0),
		M("Snapshot", snapshot_request, snapshot_chunk, VR_SERVER_STREAM, 1, rk_handle_snapshot, 0),
		{ .path = "/visrec.v1.Rank/InteractionFeed",
		  .request = &visrec__v1__interaction_feed_request__descriptor,
		  .response = &visrec__v1__interaction_feed_message__descriptor,
		  .kind = VR_SERVER_STREAM, .admin = 1, .handler = rk_handle_interaction_feed,
		  .ctx = svc, .follower = 1 },
	};
	return vr_server_add_service(srv, table, sizeof table / sizeof table[0]);
}

/* ---- Train's check of the shards --------------------------------------------- */

#define HEAD_MS 10000 /* deadline of each shard's Info */

int rk_service_feeds_head(rk_service *svc, uint64_t *base_seq, vr_status *st)
{
	size_t n = svc->n_feeds;
	Visrec__V1__FeaturedInfoResponse **resp = calloc(n, sizeof *resp);
	vr_status *sst = calloc(n, sizeof *sst);
	int failed = resp && sst ? vr_shards_info(svc->shards, resp, sst, HEAD_MS) : VR_ENOMEM;
	if (failed < 0) {
		free(resp);
		free(sst);
		st->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
		snprintf(st->message, sizeof st->message, "out of memory asking the featured shards");
		return VR_ERPC;
	}
	int rc = 0;
	for (size_t k = 0; k < n; k++) {
		uint64_t left = atomic_load(&svc->feeds[k].removed_owned);
		if (left && !rc) {
			rc = VR_ESTATE;
			st->code = GRPC_STATUS_FAILED_PRECONDITION;
			snprintf(st->message, sizeof st->message,
				 "featured shard %.60s removed %" PRIu64 " item(s) that rankd's list "
				 "places on it (a reshard moved them): run rankd with the new list, else "
				 "Train leaves them without vectors",
				 vr_shards_name(svc->shards, k), left);
		}
	}
	for (size_t k = 0; k < n; k++) {
		if (resp[k]) {
			base_seq[k] = resp[k]->last_seq;
			protobuf_c_message_free_unpacked(&resp[k]->base, NULL);
		} else if (!rc) {
			rc = VR_ERPC;
			st->code = GRPC_STATUS_UNAVAILABLE;
			snprintf(st->message, sizeof st->message,
				 "featured shard %.80s did not answer (%s: %.100s)%s", vr_shards_name(svc->shards, k),
				 vr_status_name(sst[k].code), sst[k].message,
				 failed > 1 ? ", nor did others" : "");
		}
	}
	free(resp);
	free(sst);
	return rc;
}
