/* featured's service: opening the store and the executor (with the model
 * policy of start-up), and the visrec.v1.Featured method table. The
 * handlers are in handlers.c; TrainVisual's is in train_visual.c, the
 * Reshard* ones in reshard.c, GetModel's in model_copy.c. */
#include "service.h"

#include "err.h"
#include "log.h"
#include "model_copy.h"
#include "prom.h"
#include "reshard.h"
#include "train_visual.h"
#include "visrec/v1/featured.pb-c.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --new-model: the net is built and recorded on the executor thread. */
struct new_model {
	const fd_config *cfg;
	nn_net *net;
	fd_model_info info;
	char err[256];
};

static int build_task(fd_executor *ex, void *arg)
{
	struct new_model *nm = arg;
	int batch = nm->cfg->batch > 0 ? nm->cfg->batch : 16;
	int rc = fd_model_build(fd_executor_backend(ex), &nm->cfg->model, batch, &nm->net, nm->err,
				sizeof nm->err);
	if (!rc && (rc = fd_model_add(fd_executor_fstore(ex), nm->cfg->data_dir, nm->net,
				      nm->cfg->model.layer, 0, &nm->info, nm->err, sizeof nm->err))) {
		nn_net_destroy(nm->net);
		nm->net = NULL;
	}
	return rc;
}

static int destroy_task(fd_executor *ex, void *arg)
{
	(void)ex;
	nn_net_destroy(arg);
	return 0;
}

static int add_new_model(fd_service *svc, const fd_config *cfg, char *err, size_t errlen)
{
	struct new_model nm = { .cfg = cfg };
	uint64_t n = 0;
	int rc = fd_executor_call(svc->ex, build_task, &nm);
	if (rc) {
		snprintf(err, errlen, "--new-model: %s", nm.err);
		return rc;
	}
	VR_INFO("--new-model: added model version %u (%s, layer %s, %u dims); re-embedding every item",
		nm.info.version, nm.info.arch, nm.info.layer, nm.info.dims);
	rc = fd_executor_reembed(svc->ex, nm.net, &nm.info, FD_REEMBED_SWITCH, NULL, NULL, &n, nm.err,
				 sizeof nm.err);
	if (rc) {
		fd_executor_call(svc->ex, destroy_task, nm.net);
		snprintf(err, errlen, "--new-model: re-embedding into version %u: %s", nm.info.version,
			 nm.err);
		return rc;
	}
	VR_INFO("--new-model: %llu items re-embedded into version %u",
		(unsigned long long)n, nm.info.version);
	return 0;
}

/* ---- metrics: read at each scrape from the executor and the store ------ */

static struct {
	vr_prom_series *queued, *queue_cap, *decoded, *embedded, *batches, *items, *seq;
	vr_prom_series *refused_bad, *refused_skipped, *refused_full;
	vr_prom_series *decode_s, *copy_s, *network_s, *store_s;
	vr_prom_family *model;
} fm;

static void metrics_init(void)
{
	vr_prom_family *f;
	f = vr_prom_register("visrec_featured_queue_images",
			     "Images admitted and not yet taken by the network.", VR_PROM_GAUGE, NULL,
			     NULL, 0);
	fm.queued = vr_prom_get(f);
	f = vr_prom_register("visrec_featured_queue_capacity_images",
			     "The ingest queue's capacity (--queue).", VR_PROM_GAUGE, NULL, NULL, 0);
	fm.queue_cap = vr_prom_get(f);
	f = vr_prom_register("visrec_featured_images_decoded_total", "JPEGs decoded for ingestion.",
			     VR_PROM_COUNTER, NULL, NULL, 0);
	fm.decoded = vr_prom_get(f);
	f = vr_prom_register("visrec_featured_images_embedded_total",
			     "Images embedded and stored.", VR_PROM_COUNTER, NULL, NULL, 0);
	fm.embedded = vr_prom_get(f);
	f = vr_prom_register("visrec_featured_batches_total", "Network calls (micro-batches).",
			     VR_PROM_COUNTER, NULL, NULL, 0);
	fm.batches = vr_prom_get(f);
	f = vr_prom_register("visrec_featured_images_refused_total",
			     "Images not stored, by reason: bad_image (not a JPEG, too large), "
			     "skipped (cancelled or past the deadline), queue_full.",
			     VR_PROM_COUNTER, "reason", NULL, 0);
	fm.refused_bad = vr_prom_get(f, "bad_image");
	fm.refused_skipped = vr_prom_get(f, "skipped");
	fm.refused_full = vr_prom_get(f, "queue_full");
	f = vr_prom_register("visrec_featured_stage_seconds_total",
			     "Time spent per ingest stage: decode (summed over decode threads), copy, "
			     "network, store.", VR_PROM_COUNTER, "stage", NULL, 0);
	fm.decode_s = vr_prom_get(f, "decode");
	fm.copy_s = vr_prom_get(f, "copy");
	fm.network_s = vr_prom_get(f, "network");
	fm.store_s = vr_prom_get(f, "store");
	f = vr_prom_register("visrec_featured_items", "Items stored.", VR_PROM_GAUGE, NULL, NULL, 0);
	fm.items = vr_prom_get(f);
	f = vr_prom_register("visrec_featured_change_seq",
			     "The change feed's last sequence number.", VR_PROM_GAUGE, NULL, NULL, 0);
	fm.seq = vr_prom_get(f);
	fm.model = vr_prom_register("visrec_featured_model_info",
				    "The active model (1), its version, architecture and layer.",
				    VR_PROM_GAUGE, "version,arch,layer", NULL, 0);
}

static void metrics_collect(void *arg)
{
	fd_service *svc = arg;
	fd_exec_stats s;
	fd_executor_stats(svc->ex, &s);
	vr_prom_set(fm.queued, (double)s.queued);
	vr_prom_set(fm.queue_cap, fd_executor_queue_cap(svc->ex));
	vr_prom_set(fm.decoded, (double)s.decoded);
	vr_prom_set(fm.embedded, (double)s.images);
	vr_prom_set(fm.batches, (double)s.batches);
	vr_prom_set(fm.refused_bad, (double)s.refused);
	vr_prom_set(fm.refused_skipped, (double)s.skipped);
	vr_prom_set(fm.refused_full, (double)s.full);
	vr_prom_set(fm.decode_s, s.decode_s);
	vr_prom_set(fm.copy_s, s.copy_s);
	vr_prom_set(fm.network_s, s.network_s);
	vr_prom_set(fm.store_s, s.store_s);
	uint64_t items = 0, seq = 0;
	if (!fd_fstore_stats(svc->fs, &items, &seq)) {
		vr_prom_set(fm.items, (double)items);
		vr_prom_set(fm.seq, (double)seq);
	}
	/* One series per version ever active: a switch leaves the old one
	 * at 0, as an _info gauge should. */
	fd_model_info m;
	char version[16];
	fd_executor_model(svc->ex, &m);
	snprintf(version, sizeof version, "%u", m.version);
	if (m.version != svc->metrics_version) {
		if (svc->metrics_model)
			vr_prom_set(svc->metrics_model, 0);
		svc->metrics_model = vr_prom_get(fm.model, version, m.arch, m.layer);
		svc->metrics_version = m.version;
	}
	vr_prom_set(svc->metrics_model, 1);
}

static void metrics_start(fd_service *svc)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, metrics_init);
	/* Without memory for it, the service runs without its gauges. */
	vr_prom_collector(metrics_collect, svc);
}

/* --shards and --shard-self: both or neither, self one of the list. */
static int open_shards(fd_service *svc, const fd_config *cfg, char *err, size_t errlen)
{
	char why[300];
	int has_list = cfg->shards && cfg->shards[0], has_self = cfg->shard_self && cfg->shard_self[0];
	if (!has_list && !has_self)
		return 0;
	if (!has_list || !has_self) {
		snprintf(err, errlen, "--shards and --shard-self go together: give featured the "
			 "whole shard list and which of its entries this featured is");
		return VR_EINVAL;
	}
	int rc = vr_shardmap_parse(&svc->shards, cfg->shards, why, sizeof why);
	if (rc) {
		snprintf(err, errlen, "--shards: %s", why);
		return rc;
	}
	int k = vr_shardmap_find(svc->shards, cfg->shard_self);
	if (k < 0) {
		snprintf(err, errlen, "--shard-self %.255s is not one of --shards %.400s (it must be "
			 "written exactly as in the list)", cfg->shard_self, svc->shards->list);
		vr_shardmap_free(svc->shards);
		svc->shards = NULL;
		return VR_EINVAL;
	}
	svc->shard_self = (size_t)k;
	return 0;
}

/* --models-from, while no item is stored here (model_copy.h). */
static int copy_models(fd_service *svc, const fd_config *cfg, char *err, size_t errlen)
{
	uint64_t items = 0, seq = 0;
	if (!cfg->models_from)
		return 0;
	int rc = fd_fstore_stats(svc->fs, &items, &seq);
	if (rc) {
		snprintf(err, errlen, "cannot read featured's databases: %s", vr_strerror(rc));
		return rc;
	}
	if (items) {
		VR_WARN("ignoring --models-from %s: this data directory holds %llu items already",
			cfg->models_from, (unsigned long long)items);
		return 0;
	}
	return fd_models_fetch(svc->fs, cfg->data_dir, cfg->models_from, cfg->peer_token, err,
			       errlen);
}

int fd_service_open(fd_service *svc, vr_store *store, const fd_config *cfg, char *err,
		    size_t errlen)
{
	fd_model_info active;
	char what[512];
	pthread_rwlock_init(&svc->info_lock, NULL);
	svc->data_dir = cfg->data_dir;
	svc->max_image_bytes = cfg->max_image_bytes;
	svc->max_image_pixels = cfg->max_image_pixels;
	svc->max_trunk_cache_mb = cfg->max_trunk_cache_mb;
	svc->peer_token = cfg->peer_token;
	fd_train_visual_configure(cfg->data_dir);
	int rc = open_shards(svc, cfg, err, errlen);
	if (rc)
		return rc;
	rc = fd_fstore_open(&svc->fs, store);
	if (rc) {
		snprintf(err, errlen, "cannot open featured's databases: %s", vr_strerror(rc));
		return rc;
	}
	if ((rc = fd_reshard_open(svc, err, errlen)) || (rc = copy_models(svc, cfg, err, errlen)))
		return rc;
	int had_model = fd_fstore_model_get(svc->fs, 0, &active) == 0;
	fd_executor_opts o = {
		.backend = cfg->backend,
		.precision = cfg->precision,
		.data_dir = cfg->data_dir,
		.spec = cfg->model,
		.batch = cfg->batch,
		.batch_wait_ms = cfg->batch_wait_ms,
		.decode_threads = cfg->decode_threads,
		.queue = cfg->queue,
		.limits = { .max_bytes = (size_t)cfg->max_image_bytes,
			    .max_pixels = cfg->max_image_pixels },
	};
	if ((rc = fd_executor_create(&svc->ex, svc->fs, &o, err, errlen)))
		return rc;
	metrics_start(svc);
	if (!had_model || !fd_model_spec_differs(&cfg->model, &active, what, sizeof what))
		return 0;
	if (cfg->new_model)
		return add_new_model(svc, cfg, err, errlen);
	VR_WARN("ignoring %s: the data directory's active model is version %u; "
		"pass --new-model to add a version from these flags and switch to it",
		what, active.version);
	return 0;
}

void fd_service_log_ready(fd_service *svc)
{
	fd_model_info m;
	uint64_t items = 0, seq = 0;
	fd_executor_model(svc->ex, &m);
	fd_fstore_stats(svc->fs, &items, &seq);
	VR_INFO("model version %u: %s, layer %s (%s, %u dims), input %u px; %llu items, last change %llu; "
		"backend %s: %s", m.version, m.arch, m.layer, m.purpose, m.dims, m.input_size,
		(unsigned long long)items, (unsigned long long)seq, fd_executor_backend_name(svc->ex),
		fd_executor_device(svc->ex));
	if (svc->shards)
		VR_INFO("shard %s of %zu (map %s): %s", svc->shards->names[svc->shard_self],
			svc->shards->n, svc->shards->tag, svc->shards->list);
}

void fd_service_log_stats(fd_service *svc)
{
	fd_exec_stats s;
	if (!svc->ex)
		return;
	fd_executor_stats(svc->ex, &s);
	VR_INFO("executor: %llu images in %llu batches (%llu refused, %llu skipped, %llu refused "
		"for a full queue); decode %.3f s, copy %.3f s, network %.3f s, store %.3f s",
		(unsigned long long)s.images, (unsigned long long)s.batches,
		(unsigned long long)s.refused, (unsigned long long)s.skipped, (unsigned long long)s.full,
		s.decode_s, s.copy_s, s.network_s, s.store_s);
}

void fd_service_close(fd_service *svc)
{
	vr_prom_collector_remove(metrics_collect, svc);
	fd_executor_destroy(svc->ex);
	svc->ex = NULL;
	fd_reshard_close(svc);
	fd_fstore_close(svc->fs);
	svc->fs = NULL;
	vr_shardmap_free(svc->shards);
	svc->shards = NULL;
	free(svc->info_bytes);
	svc->info_bytes = NULL;
	pthread_rwlock_destroy(&svc->info_lock);
}

#define M(name, req, resp, kind_, admin_, fn, own, follow) \
	{ .path = "/visrec.v1.Featured/" name, .request = &visrec__v1__##req##__descriptor, \
	  .response = &visrec__v1__##resp##__descriptor, .kind = kind_, .admin = admin_, \
	  .handler = fn, .ctx = svc, .own_thread = own, .follower = follow }

int fd_service_register(fd_service *svc, vr_server *srv)
{
	/* Embed waits for its batch's commit: own_thread keeps the server's
	 * workers free meanwhile. Watch is a follower (its own pool, a limit
	 * per client address) and needs the token when one is set: the feed
	 * is for peer services such as rankd, which send it. */
	const vr_method table[] = {
		M("PutItems", put_items_request, put_items_response, VR_CLIENT_STREAM, 1, fd_put_items, 0,
		  0),
		M("Embed", embed_request, embed_response, VR_UNARY, 1, fd_embed, 1, 0),
		M("GetVectors", get_vectors_request, get_vectors_response, VR_SERVER_STREAM, 0,
		  fd_get_vectors, 0, 0),
		M("Watch", watch_request, item_change, VR_SERVER_STREAM, 1, fd_watch, 0, 1),
		M("TrainVisual", train_visual_request, train_visual_response, VR_BIDI, 1, fd_train_visual,
		  0, 0),
		M("Info", featured_info_request, featured_info_response, VR_UNARY, 0, fd_info, 0, 0),
		M("ReshardClaim", reshard_claim_request, reshard_claim_response, VR_UNARY, 1,
		  fd_reshard_claim, 1, 0),
		M("ReshardImport", reshard_import_request, reshard_import_response, VR_UNARY, 1,
		  fd_reshard_import, 1, 0),
		M("ReshardDelete", reshard_delete_request, reshard_delete_response, VR_UNARY, 1,
		  fd_reshard_delete, 1, 0),
		M("GetModel", get_model_request, model_chunk, VR_SERVER_STREAM, 1, fd_get_model, 0, 0),
		M("GetImages", get_images_request, item_image, VR_SERVER_STREAM, 1, fd_get_images, 0, 0),
		/* AdoptModel re-embeds every item of the shard: minutes. */
		M("AdoptModel", adopt_model_request, adopt_model_response, VR_UNARY, 1, fd_adopt_model,
		  1, 0),
	};
	return vr_server_add_service(srv, table, sizeof table / sizeof table[0]);
}
