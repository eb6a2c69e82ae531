/* rankd's gRPC service: the visrec.v1.Rank method table, the state its
 * handlers share, and its life cycle (open at start-up, close at the end).
 *
 * State and who may touch it:
 *   ix        interactions and id maps (interactions.h). Readers (lookups,
 *             ids, CSR snapshots) hold ix_lock shared; AddInteractions and
 *             the change-feed follower (new item ids) hold it exclusive.
 *   serving   the served model (serving.h): taken by reference per call,
 *             swapped whole by training. A call that ranks takes it while
 *             holding ix_lock shared, and the swap holds ix_lock exclusive,
 *             so the snapshot and the overlay a call sees agree.
 *   live      the interactions added since the served snapshot was built
 *             (overlay.h), excluded with its seen lists: added by
 *             AddInteractions and pruned by the swap, both under ix_lock
 *             exclusive; read under ix_lock shared.
 *   swap_mu   serialises writes to the served item matrix: the followers'
 *             new rows and the swap to a new model. Each write is noted
 *             in tcache after its row is published (tcache.h). The
 *             feeds' saved positions are under it too.
 *   tcache    Recommend's per-user top-k lists (its own mutex): reset by
 *             the swap, a user dropped by AddInteractions.
 *   job       the training run (training.c), under train_mu.
 * Handlers live in handlers.c (serving, admin) and training.c (Train). */
#ifndef RK_SERVICE_H
#define RK_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "featured_client.h"
#include "featured_shards.h"
#include "health.h"
#include "interactions.h"
#include "overlay.h"
#include "rpc.h"
#include "serving.h"
#include "snapshot.h"
#include "store.h"
#include "visrec/v1/rankd.pb-c.h"

/* Latency histogram: 16 buckets per power of two of 100 ns units (about 4%
 * wide), lock-free. */
#define RK_LAT_BUCKETS 512
typedef struct rk_latency {
	_Atomic uint64_t count[RK_LAT_BUCKETS];
} rk_latency;

void rk_latency_add(rk_latency *l, uint64_t ns);
/* The q-quantile (0..1) in microseconds, and the number of samples. */
double rk_latency_quantile(const rk_latency *l, double q, uint64_t *n);

#define RK_MAX_K_DEFAULT 1000
#define RK_MAX_BATCH_DEFAULT 256
#define RK_MAX_ADD 100000        /* interactions per AddInteractions */
#define RK_MAX_CANDIDATES 100000 /* candidates per Recommend */
#define RK_MAX_SCORE 10000       /* items per Score */

struct rk_train_job;
struct rk_service;

/* Room for a feed's key: "featured_seq/" tag "/" address. */
#define RK_FEED_KEY_MAX (16 + VR_SHARDMAP_TAG + VR_SHARD_ADDR_MAX)

/* One featured shard's change feed as rankd follows it (service.c): its
 * position is stored in the snapshot's "serving" db under key, which is
 * "featured_seq" with one featured (as before shards) and
 * "featured_seq/<map tag>/<address>" with several, so that another shard
 * map never reads this map's positions. */
typedef struct rk_feed {
	struct rk_service *svc;
	size_t k;                 /* the shard's index in svc->shards */
	char key[RK_FEED_KEY_MAX];
	char health_name[160];    /* its Health service name ("" if none fits) */
	rk_follower *follower;    /* NULL when rankd does not follow featured */
	uint64_t seq_saved;       /* the position as stored (under swap_mu) */
	/* Items this shard's feed said left it (REMOVED) while rankd's list
	 * names it their owner, since start: rankd's list is behind a
	 * reshard (service.c, follow_removed). Train is refused while any. */
	_Atomic uint64_t removed_owned;
	int64_t seq_saved_ms;
	struct vr_prom_series *m_lag, *m_seq, *m_connected; /* metrics.c */
} rk_feed;

/* The featured shard list in use and its feeds, one per shard. rankd
 * adopts a new list without a restart (rk_service_relist) by building a
 * new set and swapping it in whole. Calls that read the list without
 * train_mu or swap_mu (Info, the metrics scrape) hold a reference
 * (rk_shardset_get / rk_shardset_put) and finish on the set they began
 * with; the last reference frees it (its followers, already halted by the
 * swap, its channels). */
typedef struct rk_shardset {
	atomic_uint refs;
	vr_shards *shards;        /* owned; NULL without --featured */
	rk_feed *feeds;
	size_t n_feeds;
} rk_shardset;

typedef struct rk_service {
	/* Set by the owner before rk_service_open. */
	vr_store *store;          /* the daemon's LMDB environment (not owned) */
	/* The shard list: set by the owner before rk_service_open, which
	 * takes the shards over into set; afterwards shards, featured,
	 * featured_addr, feeds and n_feeds are set's, changed only by
	 * rk_service_relist while it holds train_mu (no Train runs) and
	 * swap_mu, so a Train, the followers' callbacks and code under
	 * swap_mu read them directly; others take a reference to set. */
	vr_shards *shards;        /* every featured shard (--featured LIST):
				   * Train's vectors come from all of them at once */
	vr_channel *featured;     /* shard 0's channel: DVBPR, which
				   * trains with one featured only so far */
	const char *featured_addr; /* the list as given (vr_shards_map's list after a relist) */
	vr_channel_opts featured_opts; /* the channels' options, for a new list's shards */
	int max_k;                /* Recommend's k limit; 0 = RK_MAX_K_DEFAULT */
	int max_batch;            /* RecommendBatch's request limit; 0 = default */
	int topk_approx;          /* 0: exact scans; c >= 1: int8 first pass (topk.h) */
	int topk_half;            /* with topk_approx: the fp16 first pass instead */
	int topk_int4;            /* with topk_approx: the int4 first pass instead */
	int scan_threads;         /* threads one Recommend's scan may use when it is
				   * the only ranking call in flight; 0 = the online
				   * CPUs, 1 = never split (topk.h's pool) */
	int follow;               /* follow every featured shard's change feed */
	vr_health *health;        /* the daemon's (not owned; may be NULL): each
				   * shard's feed and Train are named in it */
	const char *writer_addr;  /* set: a read replica of this writer (replica.c) */
	vr_channel *writer;       /* channel to the writer (not owned) */
	int snapshot_chunk;       /* replica: Snapshot's chunk_bytes (0: the writer's default) */
	int topk_cache_mb;        /* the top-k cache's limit (tcache.h); 0 = off */
	/* State (rk_service_open). */
	rk_interactions *ix;
	pthread_rwlock_t ix_lock;
	rk_overlay *live;
	rk_snap snap;
	rk_serving serving;
	pthread_mutex_t swap_mu;
	rk_feed *feeds;           /* one per featured shard (none without --featured) */
	size_t n_feeds;
	rk_shardset *set;         /* the list in use (under set_mu; see rk_shardset) */
	pthread_mutex_t set_mu;
	pthread_mutex_t relist_mu; /* one rk_service_relist at a time */
	pthread_mutex_t feeds_mu; /* feeds_down and the Health names it sets */
	int feeds_down;           /* followed feeds not connected now */
	pthread_mutex_t train_mu;
	struct rk_train_job *job;
	/* The interaction feed (replica.c): feed_gen counts log appends and
	 * model swaps, so InteractionFeed streams wait on feed_cv for it. */
	pthread_mutex_t feed_mu;
	pthread_cond_t feed_cv;
	uint64_t feed_gen;
	struct rk_replica *replica;
	rk_latency recommend_ns;  /* Recommend handler time, request to reply */
	struct rk_scan_pool *scan_pool; /* scan_threads - 1 helpers, or NULL */
	struct rk_tcache *tcache; /* Recommend's per-user top-k cache, or NULL (off) */
	struct rk_refresher *refresher; /* refills it after a new model (tcache_refresh.c) */
	atomic_int ranking;       /* Recommend, RecommendBatch calls in flight */
	int opened;
	/* the model_info series of the version served at the last scrape */
	struct vr_prom_series *metrics_model;
	uint64_t metrics_version;
} rk_service;

/* Opens the interactions, loads the active model snapshot (if any) and
 * builds its serving index, so the daemon serves it from its first call.
 * err (errlen bytes) names the cause of a failure. Returns 0 or an error
 * code. */
int rk_service_open(rk_service *svc, char *err, size_t errlen);
/* Starts following every featured shard's change feed (when svc->follow),
 * each from its stored position. Returns 0 or the error of
 * rk_follower_start. */
int rk_service_start(rk_service *svc);
/* Adopts the featured shard list `list` (rankd's --featured syntax) without
 * a restart: a new set of shards and feeds is swapped in whole. Each shard
 * in both lists keeps its feed position (stored under the new list's key);
 * a new shard's feed is followed from its start (every item it holds comes
 * down as a change); a removed shard's feed stops; removed_owned starts at
 * 0 again, so Train is no longer refused for the old list. Refused while a
 * Train runs (VR_ESTATE: adopt it after) and for a list that does not parse
 * or whose channels cannot be made (VR_EINVAL or the open's error): the
 * old list stays, why (cap bytes) says why. The same list again: 0, and
 * *changed 0. Returns 0 or an error code. */
int rk_service_relist(rk_service *svc, const char *list, int *changed, char *why, size_t cap);
/* The shard set in use with a reference (put it back with
 * rk_shardset_put), or NULL without one. */
rk_shardset *rk_shardset_get(rk_service *svc);
void rk_shardset_put(rk_shardset *set);

/* One info line: the served model, counts, featured's feed position. */
void rk_service_log_ready(rk_service *svc);
/* Stops the followers and frees the state; call after the server stopped.
 * Logs Recommend's latency percentiles. Safe on a service that failed to
 * open. */
void rk_service_close(rk_service *svc);

/* Prometheus metrics (metrics.c): start registers the scrape-time
 * collector (rk_service_start does), stop removes it (rk_service_close
 * does); progress records a Train run's epoch (training.c's progress
 * queue calls it). */
struct rk_progress;
void rk_metrics_start(rk_service *svc);
void rk_metrics_stop(rk_service *svc);
void rk_metrics_progress(const struct rk_progress *p);
/* The per-shard gauges of feeds (n of them, names from shards):
 * rk_metrics_start does it for the first list, rk_service_relist for a new one. */
void rk_metrics_feeds(rk_feed *feeds, size_t n, const vr_shards *shards);

/* Adds every visrec.v1.Rank method to srv, each handler getting svc.
 * Returns 0 or the error of vr_server_add_service. */
int rk_service_register(rk_service *svc, vr_server *srv);

/* Serves next from now on (train_mf.c, when a run is done): fills the item
 * matrix up to the items known now, activates its snapshot in LMDB (with
 * each featured shard's feed position rewound to base_seq[k] when that is
 * lower: the vectors next was built from were read at base_seq; NULL for a
 * model without vectors), swaps it in and drops from the overlay what its
 * seen lists hold (one step under ix_lock exclusive), lets each follower
 * replay the changes since its base_seq onto it, and drops the previous
 * snapshot.
 * Takes the caller's reference to next, also on failure. Returns 0 or a
 * store error (the previous model stays served). */
int rk_service_publish(rk_service *svc, rk_served *next, const uint64_t *base_seq);

/* The position of shard k's feed: its follower's, else the stored one. */
uint64_t rk_service_feed_seq(rk_service *svc, size_t k);
/* Train's check that every featured shard answers: their feed positions
 * into base_seq (svc->n_feeds entries). Returns 0; VR_ESTATE with st
 * FAILED_PRECONDITION naming the first shard that removed items rankd's
 * list places on it (rk_feed.removed_owned: rankd's list is behind a
 * reshard); or VR_ERPC with st UNAVAILABLE naming the first shard that did
 * not answer and why. */
int rk_service_feeds_head(rk_service *svc, uint64_t *base_seq, vr_status *st);

/* A replica's swap (replica.c): activates the stored snapshot version
 * (imported from the writer) with featured's feed position rewound to
 * featured_seq when lower (with several shards, whose positions the
 * export does not carry, every shard's feed replays from its start), builds it for serving with the interactions
 * held now as its seen lists (as a restart does), swaps it in and drops
 * the previous one. Returns 0 or an error (err says which; the previous
 * model stays served). */
int rk_service_install(rk_service *svc, uint64_t version, uint64_t featured_seq, char *err,
		       size_t errlen);
/* The top-k cache's refresh thread (tcache_refresh.c): start (0 or
 * VR_ENOMEM), stop (joins; NULL refresher is a no-op), and give it the
 * users (malloc'd, taken over) to refill for the model of version. */
int rk_refresher_start(rk_service *svc);
void rk_refresher_stop(rk_service *svc);
void rk_refresher_give(rk_service *svc, uint64_t version, uint32_t *users, size_t n);

/* Pads s's item matrix to n items (rk_served_pad) and notes the rows added
 * in the top-k cache. Caller holds swap_mu. Returns rk_served_pad's code. */
int rk_service_pad(rk_service *svc, rk_served *s, uint32_t n);

/* 1 while a training run holds the service; its model kind and epoch
 * (done/total) when not NULL. */
int rk_service_training(rk_service *svc, int *kind, uint32_t *epoch, uint32_t *epochs);

/* The checks of a request that need no model, as its handler runs them
 * first: GRPC_STATUS_OK, or INVALID_ARGUMENT with the reason in err
 * (rk_check_recommend: 512 bytes; rk_train_check: cap bytes).
 * rk_check_recommend: one Recommend (or one of a RecommendBatch, named
 *   by at: "requests[2].", else "") against svc->max_k, the id rule,
 *   cold_slots (0..k) and the candidate limits.
 * rk_train_check: a TrainRequest's model, ranges, names and rates. */
int rk_check_recommend(const rk_service *svc, const Visrec__V1__RecommendRequest *r,
		       const char *at, char *err);
int rk_train_check(const Visrec__V1__TrainRequest *r, char *why, size_t cap);
/* rk_check_audience: an Audience request's item id and k (512 bytes). */
int rk_check_audience(const rk_service *svc, const Visrec__V1__AudienceRequest *r, char *err);

/* Stores n interactions as AddInteractions does (under ix_lock
 * exclusive, the overlay and the served catalogue updated, the feed
 * woken). rec: a replica applying the writer's log record rec at
 * sequence seq instead (rows and n are then rec's; an ITEMS record only
 * interns its ids). totals[3]: users, items, pairs after it. Returns 0 or
 * rk_interactions_add_batch's / rk_interactions_log_apply's error. */
int rk_service_add(rk_service *svc, const rk_interaction_in *rows, size_t n, uint64_t seq,
		   const rk_log_record *rec, rk_add_stats *st, uint64_t totals[3]);

/* A read replica applied the writer's ITEMS record rec (featured's new
 * items, which the writer interned from its own feed): gives each item
 * its row of the served model from featured's vector now. The replica's
 * own feed may have brought the item's change before the record, while
 * the id was unknown here (a replica learns ids from the log only, to
 * keep the writer's indices), and then left it to the next snapshot: the
 * writer scored the new item by its image and the replica by the prior
 * alone. Errors are logged; the next snapshot brings the row anyway. */
void rk_service_learned_items(rk_service *svc, const rk_log_record *rec);

/* Read replicas (replica.c). rk_feed_notify wakes the InteractionFeed
 * streams (after a log append or a model swap). rk_replica_start starts
 * following svc->writer (when svc->writer_addr is set); rk_replica_stop
 * ends it. rk_replica_info fills Info's writer fields. rk_refuse_write:
 * on a replica, FAILED_PRECONDITION naming the writer (the handler
 * returns it), else 0. */
void rk_feed_notify(rk_service *svc);
int rk_replica_start(rk_service *svc);
void rk_replica_stop(rk_service *svc);
void rk_replica_info(rk_service *svc, Visrec__V1__RankInfoResponse *resp);
int rk_refuse_write(rk_service *svc, vr_call *call);

/* Handlers; ctx is the rk_service. */
int rk_handle_add_interactions(vr_call *call, void *ctx);
int rk_handle_train(vr_call *call, void *ctx);
int rk_handle_recommend(vr_call *call, void *ctx);
int rk_handle_recommend_batch(vr_call *call, void *ctx);
int rk_handle_score(vr_call *call, void *ctx);
int rk_handle_evaluate(vr_call *call, void *ctx);
int rk_handle_info(vr_call *call, void *ctx);
int rk_handle_audience(vr_call *call, void *ctx);
int rk_handle_interaction_feed(vr_call *call, void *ctx);
int rk_handle_snapshot(vr_call *call, void *ctx);

#endif
