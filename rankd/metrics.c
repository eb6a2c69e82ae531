/* rankd's Prometheus metrics (prom.h): what it serves, what it holds, how
 * training goes, and how far its change feed is behind featured's.
 *
 * Read at each scrape (a collector): the served model, the counts of
 * interactions, users and items (under ix_lock shared, a few loads), the
 * training flag and epoch, and each follower's position. Pushed by the
 * training run as each epoch ends (rk_metrics_progress): loss, validation
 * AUC, triples/s, which exist nowhere else once the run is over.
 *
 * Follower lag, per featured shard (label shard: its address), is the
 * shard's last change-feed sequence minus the last one rankd applied. The
 * shards are asked (Info, all at once) at the scrape, only those whose
 * follower is connected, so a scrape never waits on a shard that is away;
 * its lag then keeps its last value and connected reads 0. */
#include "service.h"

#include "prom.h"
#include "tcache.h"
#include "trainer.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define INFO_MS 2000 /* deadline of the shards' Info at a scrape */

static struct {
	vr_prom_family *model;
	vr_prom_series *interactions, *users, *items, *training, *epoch, *epochs;
	vr_prom_series *loss, *auc, *triples_s;
	vr_prom_family *lag, *seq, *connected;
	vr_prom_series *tc_hits, *tc_misses, *tc_evictions, *tc_bytes;
} rm;

static void families(void)
{
	vr_prom_family *f;
	rm.model = vr_prom_register("visrec_rankd_model_info",
				    "The served model (1): kind (BPR, VBPR, DVBPR) and version.",
				    VR_PROM_GAUGE, "kind,version", NULL, 0);
	f = vr_prom_register("visrec_rankd_interactions", "Interactions held.", VR_PROM_GAUGE, NULL,
			     NULL, 0);
	rm.interactions = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_users", "Users known.", VR_PROM_GAUGE, NULL, NULL, 0);
	rm.users = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_items", "Items known.", VR_PROM_GAUGE, NULL, NULL, 0);
	rm.items = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_training", "1 while a Train run holds the service.",
			     VR_PROM_GAUGE, NULL, NULL, 0);
	rm.training = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_train_epoch",
			     "The last epoch done of the current (or last) Train run.", VR_PROM_GAUGE,
			     NULL, NULL, 0);
	rm.epoch = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_train_epochs", "Epochs the current (or last) run may take.",
			     VR_PROM_GAUGE, NULL, NULL, 0);
	rm.epochs = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_train_loss", "Mean training loss of the last epoch.",
			     VR_PROM_GAUGE, NULL, NULL, 0);
	rm.loss = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_train_validation_auc",
			     "Validation AUC after the last epoch.", VR_PROM_GAUGE, NULL, NULL, 0);
	rm.auc = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_train_triples_per_second",
			     "Training throughput of the last epoch.", VR_PROM_GAUGE, NULL, NULL, 0);
	rm.triples_s = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_follower_lag_changes",
			     "Changes featured has made that rankd has not applied yet, per featured shard.",
			     VR_PROM_GAUGE, "shard", NULL, 0);
	rm.lag = f;
	f = vr_prom_register("visrec_rankd_follower_seq",
			     "The last featured change applied, per featured shard.", VR_PROM_GAUGE,
			     "shard", NULL, 0);
	rm.seq = f;
	f = vr_prom_register("visrec_rankd_follower_connected",
			     "1 while the change feed of a featured shard is open.", VR_PROM_GAUGE,
			     "shard", NULL, 0);
	rm.connected = f;
	f = vr_prom_register("visrec_rankd_topk_cache_hits_total",
			     "Recommends answered from the per-user top-k cache.", VR_PROM_COUNTER, NULL,
			     NULL, 0);
	rm.tc_hits = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_topk_cache_misses_total",
			     "Cacheable Recommends that scanned.", VR_PROM_COUNTER, NULL, NULL, 0);
	rm.tc_misses = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_topk_cache_evictions_total",
			     "Top-k lists dropped for room.", VR_PROM_COUNTER, NULL, NULL, 0);
	rm.tc_evictions = vr_prom_get(f);
	f = vr_prom_register("visrec_rankd_topk_cache_bytes", "Memory the top-k cache holds.",
			     VR_PROM_GAUGE, NULL, NULL, 0);
	rm.tc_bytes = vr_prom_get(f);
}

static const char *kind_name(int kind)
{
	return kind == RK_MODEL_BPR ? "BPR" : kind == RK_MODEL_VBPR ? "VBPR" : "DVBPR";
}

static void collect(void *arg)
{
	rk_service *svc = arg;
	pthread_rwlock_rdlock(&svc->ix_lock);
	uint32_t users = rk_interactions_users(svc->ix), items = rk_interactions_items(svc->ix);
	uint64_t pairs = rk_interactions_count(svc->ix);
	pthread_rwlock_unlock(&svc->ix_lock);
	vr_prom_set(rm.users, users);
	vr_prom_set(rm.items, items);
	vr_prom_set(rm.interactions, (double)pairs);

	rk_served *s = rk_serving_get(&svc->serving);
	if (s && s->info.version != svc->metrics_version) {
		char version[24];
		snprintf(version, sizeof version, "%llu", (unsigned long long)s->info.version);
		if (svc->metrics_model)
			vr_prom_set(svc->metrics_model, 0);
		svc->metrics_model = vr_prom_get(rm.model, kind_name(s->model->d.kind), version);
		svc->metrics_version = s->info.version;
	}
	rk_served_unref(s);
	vr_prom_set(svc->metrics_model, 1);

	int kind;
	uint32_t epoch = 0, epochs = 0;
	int training = rk_service_training(svc, &kind, &epoch, &epochs);
	vr_prom_set(rm.training, training);
	if (training) {
		vr_prom_set(rm.epoch, epoch);
		vr_prom_set(rm.epochs, epochs);
	}

	if (svc->tcache) {
		rk_tcache_stats ts;
		rk_tcache_stats_get(svc->tcache, &ts);
		vr_prom_set(rm.tc_hits, (double)ts.hits);
		vr_prom_set(rm.tc_misses, (double)ts.misses);
		vr_prom_set(rm.tc_evictions, (double)ts.evictions);
		vr_prom_set(rm.tc_bytes, (double)ts.bytes);
	}

	/* The shard list in use, held across the scrape (a relist may swap it). */
	rk_shardset *set = rk_shardset_get(svc);
	size_t n = set ? set->n_feeds : 0, up = 0;
	uint64_t *seq = n && set->feeds[0].follower ? calloc(n, sizeof *seq) : NULL;
	if (!seq) {
		rk_shardset_put(set);
		return;
	}
	for (size_t k = 0; k < n; k++) {
		rk_follower_state fs;
		rk_follower_state_get(set->feeds[k].follower, &fs);
		seq[k] = fs.seq;
		up += fs.connected;
		vr_prom_set(set->feeds[k].m_seq, (double)fs.seq);
		vr_prom_set(set->feeds[k].m_connected, fs.connected);
	}
	Visrec__V1__FeaturedInfoResponse **resp = up ? calloc(n, sizeof *resp) : NULL;
	vr_status *st = up ? calloc(n, sizeof *st) : NULL;
	if (resp && st && vr_shards_info(set->shards, resp, st, INFO_MS) >= 0)
		for (size_t k = 0; k < n; k++) {
			if (!resp[k])
				continue;
			uint64_t head = resp[k]->last_seq;
			vr_prom_set(set->feeds[k].m_lag, head > seq[k] ? (double)(head - seq[k]) : 0);
			protobuf_c_message_free_unpacked(&resp[k]->base, NULL);
		}
	free(resp);
	free(st);
	free(seq);
	rk_shardset_put(set);
}

void rk_metrics_feeds(rk_feed *feeds, size_t n, const vr_shards *shards)
{
	for (size_t k = 0; k < n; k++) {
		const char *name = vr_shards_name(shards, k);
		feeds[k].m_lag = vr_prom_get(rm.lag, name);
		feeds[k].m_seq = vr_prom_get(rm.seq, name);
		feeds[k].m_connected = vr_prom_get(rm.connected, name);
	}
}

void rk_metrics_start(rk_service *svc)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, families);
	rk_metrics_feeds(svc->feeds, svc->n_feeds, svc->shards);
	/* Without memory for it, rankd serves on without these gauges. */
	vr_prom_collector(collect, svc);
}

void rk_metrics_stop(rk_service *svc)
{
	vr_prom_collector_remove(collect, svc);
}

void rk_metrics_progress(const rk_progress *p)
{
	if (!p->epoch)
		return; /* loading: nothing measured yet */
	vr_prom_set(rm.epoch, p->epoch);
	vr_prom_set(rm.epochs, p->max_epochs);
	vr_prom_set(rm.loss, p->loss);
	if (isfinite(p->val_auc))
		vr_prom_set(rm.auc, p->val_auc);
	vr_prom_set(rm.triples_s, p->triples_per_s);
}
