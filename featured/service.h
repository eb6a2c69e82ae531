/* featured's gRPC service: its configuration, the state its handlers
 * share, and the visrec.v1.Featured method table. main.c fills an
 * fd_config from flags, opens the service, registers it, and closes it
 * after the server stopped. */
#ifndef FD_SERVICE_H
#define FD_SERVICE_H

#include "executor.h"
#include "fstore.h"
#include "rpc.h"
#include "shardmap.h"
#include "store.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fd_config {
	const char *data_dir;
	const char *backend;          /* "auto", "cpu", "cuda" */
	const char *precision;        /* "fp32", "tf32", "bf16" (CUDA); NULL: "fp32" */
	fd_model_spec model;          /* version 1 on a fresh data directory */
	int new_model;                /* add a version from model, re-embed, switch */
	int batch, batch_wait_ms, decode_threads, queue;
	uint64_t max_image_bytes, max_image_pixels;
	uint64_t max_trunk_cache_mb;  /* a TrainVisual trunk session's cached activations */
	const char *shards;           /* the shard list (shardmap.h); NULL: not sharded */
	const char *shard_self;       /* this shard's entry of shards */
	/* --models-from: a featured to copy every model version from while
	 * this data directory holds no item (model_copy.h); NULL: none. */
	const char *models_from;
	const char *peer_token;       /* the admin token, sent to models_from */
} fd_config;

/* What featured's Info reply depends on that can change while it runs:
 * model rows added (fd_fstore_models_gen), the last change committed
 * (items come only with changes), the active and live versions, the
 * reshard journal's writes (fd_reshard_gen). */
typedef struct fd_info_key {
	uint64_t models_gen, last_seq, reshard_gen;
	uint32_t active, nlive, live[FD_MAX_LIVE];
} fd_info_key;

typedef struct fd_service {
	const char *data_dir;         /* cfg's, where models/ lives */
	fd_fstore *fs;                /* over the daemon's LMDB environment */
	fd_executor *ex;
	uint64_t max_image_bytes, max_image_pixels;
	uint64_t max_trunk_cache_mb;
	/* Sharded (--shards): the map, and this featured's index in it. NULL
	 * when not sharded. Calls must then carry the map's tag, and only
	 * items this shard owns are stored. */
	vr_shardmap *shards;
	size_t shard_self;
	/* The admin token this featured sends to other shards (GetModel,
	 * GetImages); NULL: none. */
	const char *peer_token;
	/* Info's reply, packed, and the inputs it was built from (handlers.c):
	 * a call that finds the same inputs sends these bytes again instead of
	 * decoding every model row and packing anew. Under info_lock. */
	pthread_rwlock_t info_lock;
	fd_info_key info_key;
	uint8_t *info_bytes;
	size_t info_len;
	/* Resharding's journal state (reshard.h); never NULL once open. */
	struct fd_reshard *reshard;
	/* the model_info series of the version active at the last scrape */
	struct vr_prom_series *metrics_model;
	uint32_t metrics_version;
} fd_service;

/* Opens featured's databases in store and starts the executor with the
 * active model (creating version 1 on a fresh data directory). With
 * cfg->new_model and a model already there, adds a version from
 * cfg->model, re-embeds every item with it and switches to it before
 * returning. Flags naming another model than the active one without
 * new_model are ignored with a warning. Logs nothing at info level, so a
 * daemon that then fails to bind prints only that one line; say what was
 * opened with fd_service_log_ready. Returns 0, or an error with the cause
 * in err. */
int fd_service_open(fd_service *svc, vr_store *store, const fd_config *cfg, char *err,
		    size_t errlen);
/* One info line: the backend, the active model, the item count, the
 * pipeline's shape. */
void fd_service_log_ready(fd_service *svc);
/* One info line of the executor's counters: images, batches, refusals,
 * and the seconds spent decoding, normalising, in the network and in the
 * store (what the benchmark reads). */
void fd_service_log_stats(fd_service *svc);
/* Stops the executor and frees the state. Call after the server was shut
 * down. */
void fd_service_close(fd_service *svc);

/* Adds every visrec.v1.Featured method to srv, each handler getting svc.
 * Returns 0 or the error of vr_server_add_service. */
int fd_service_register(fd_service *svc, vr_server *srv);

/* Checks an item of PutItems or Embed before its image is decoded: the
 * id (the id rule, common/ids.h) and the image's size (1..svc->max_image_bytes).
 * GRPC_STATUS_OK, or INVALID_ARGUMENT with the reason in why (cap bytes). */
int fd_check_item(const fd_service *svc, const char *id, size_t image_len, char *why, size_t cap);

/* The shard map check of every call but Info: GRPC_STATUS_OK when the
 * call's "visrec-shard-map" tag agrees with this featured's map (or
 * neither has one), else FAILED_PRECONDITION naming both maps, set on
 * the call. */
int fd_check_shard_map(const fd_service *svc, vr_call *call);
/* Whether this featured stores item id: GRPC_STATUS_OK (not sharded, or
 * this shard owns it, and no reshard journalled here moves it away:
 * reshard.h), else FAILED_PRECONDITION with why (cap bytes) naming the
 * owner. */
int fd_check_owner(const fd_service *svc, const char *id, char *why, size_t cap);

/* The handlers (handlers.c); ctx is the fd_service. */
int fd_put_items(vr_call *call, void *ctx);
int fd_embed(vr_call *call, void *ctx);
int fd_get_vectors(vr_call *call, void *ctx);
int fd_watch(vr_call *call, void *ctx);
int fd_info(vr_call *call, void *ctx);
/* GetImages (featured.proto): stored images by id or a page of them, at
 * most FD_GET_IMAGES_MAX a call. */
#define FD_GET_IMAGES_MAX 64
int fd_get_images(vr_call *call, void *ctx);
/* GetImages' request check, before anything is read: GRPC_STATUS_OK, or
 * INVALID_ARGUMENT (counts over FD_GET_IMAGES_MAX, ids and a page both
 * given, a bad id) or FAILED_PRECONDITION (an id another shard owns,
 * naming it) with the reason in why (cap bytes). */
struct Visrec__V1__GetImagesRequest;
int fd_get_images_check(const fd_service *svc, const struct Visrec__V1__GetImagesRequest *req,
			char *why, size_t cap);

#endif
