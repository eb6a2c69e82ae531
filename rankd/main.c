/* rankd: the ranking service daemon. Parses flags, opens the data
 * directory, loads the last model snapshot (before Health says SERVING),
 * serves visrec.v1.Rank and Health, follows featured's change feed, until
 * SIGTERM/SIGINT. */
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char summary[] =
	"rankd: stores interactions, trains BPR/VBPR and ranks items\n"
	"(visrec.v1.Rank and grpc.health.v1.Health over gRPC). At start it serves the last\n"
	"trained model from its --data directory, also while featured is down.";

int main(int argc, char **argv)
{
	vr_daemon d = { 0 };
	rk_service svc = { 0 };
	const char *featured_ca = NULL, *featured_token = NULL, *featured_token_file = NULL;
	const char *writer_token_file = NULL;
	char *token_buf = NULL, *writer_token = NULL;
	char err[512];
	const vr_flag flags[] = {
		VR_DAEMON_FLAGS(&d, "127.0.0.1:50052"),
		{ "featured", "VISREC_FEATURED", VR_FLAG_STRING, &svc.featured_addr, "127.0.0.1:50051",
		  "HOST:PORT of featured, or of every featured shard: the shard list (comma-separated, "
		  "the same as featured --shards)", 0 },
		{ "featured-ca", "VISREC_FEATURED_CA", VR_FLAG_STRING, &featured_ca, NULL,
		  "PEM roots to verify featured's TLS certificate; unset: plaintext", 0 },
		{ "featured-token-file", "VISREC_FEATURED_TOKEN_FILE", VR_FLAG_STRING, &featured_token_file,
		  NULL, "file holding featured's admin token (one line, not readable by other users), "
		  "sent with every call to featured: its change feed needs it when featured has one", 0 },
		{ "featured-token", "VISREC_FEATURED_TOKEN", VR_FLAG_STRING, &featured_token, NULL,
		  "featured's token itself (visible to ps: prefer --featured-token-file)", 0 },
		{ "follow-featured", "VISREC_FOLLOW_FEATURED", VR_FLAG_BOOL, &svc.follow, "true",
		  "follow featured's change feed so new items are rankable without retraining", 0 },
		{ "writer", "VISREC_WRITER", VR_FLAG_STRING, &svc.writer_addr, NULL,
		  "HOST:PORT of the writer rankd: set, this rankd is a read replica that copies the "
		  "writer's interactions and models and refuses writes; unset: the writer", 0 },
		{ "writer-token-file", "VISREC_WRITER_TOKEN_FILE", VR_FLAG_STRING, &writer_token_file, NULL,
		  "file holding the writer's admin token (one line, not readable by other users), "
		  "sent with the replica's feed and snapshot calls", 0 },
		{ "snapshot-chunk-bytes", "VISREC_SNAPSHOT_CHUNK_BYTES", VR_FLAG_INT, &svc.snapshot_chunk, "0",
		  "replica: bytes per chunk of the writer's snapshot stream (0: 1 MiB; 4096 .. 1 MiB); "
		  "a restart resumes after the last chunk stored", 0 },
		{ "max-k", "VISREC_MAX_K", VR_FLAG_INT, &svc.max_k, "1000",
		  "largest k a Recommend may ask for", 0 },
		{ "max-batch", "VISREC_MAX_BATCH", VR_FLAG_INT, &svc.max_batch, "256",
		  "most requests in one RecommendBatch", 0 },
		{ "topk-approx", "VISREC_TOPK_APPROX", VR_FLAG_INT, &svc.topk_approx, "0",
		  "0: exact top-k scans; c >= 1: an int8 first pass keeps k x c candidates, "
		  "re-ranked exactly (RecommendBatch: the int8 pass whatever --topk-fp16/--topk-int4 say)", 0 },
		{ "topk-fp16", "VISREC_TOPK_FP16", VR_FLAG_BOOL, &svc.topk_half, "false",
		  "with --topk-approx: the first pass reads fp16 rows instead of int8", 0 },
		{ "topk-int4", "VISREC_TOPK_INT4", VR_FLAG_BOOL, &svc.topk_int4, "false",
		  "with --topk-approx: the first pass reads int4 rows (half int8's bytes, for "
		  "catalogues of a million items; with c = 16, the measured margin)", 0 },
		{ "scan-threads", "VISREC_SCAN_THREADS", VR_FLAG_INT, &svc.scan_threads, "1",
		  "threads one Recommend's scan may use when no other ranking call is in flight "
		  "(0: the online CPUs; 1: never split, the default: a split only pays when the "
		  "other cores are idle, which rankd cannot see of other processes)", 0 },
		{ "topk-cache-mb", "VISREC_TOPK_CACHE_MB", VR_FLAG_INT, &svc.topk_cache_mb, "64",
		  "MiB for the per-user top-k cache of exact Recommends (0: off); 64 holds the "
		  "top-64 lists of about 100k users, least recently used first out", 0 },
		{ 0 },
	};
	static const char *const services[] = { "visrec.v1.Rank", NULL };

	int code = vr_daemon_init(&d, "rankd", summary, flags, argc, argv);
	if (code >= 0)
		return code;
	if (svc.max_k < 1 || svc.max_batch < 1 || svc.topk_approx < 0 || svc.scan_threads < 0 ||
	    svc.scan_threads > 16 || svc.topk_cache_mb < 0 || svc.topk_cache_mb > 1 << 20) {
		VR_ERROR("--max-k and --max-batch must be >= 1, --topk-approx >= 0, --scan-threads 0 .. 16, "
			 "--topk-cache-mb 0 .. 1048576");
		return 2;
	}
	if (featured_token && !featured_token[0])
		featured_token = NULL;
	if (featured_token && featured_token_file) {
		VR_ERROR("--featured-token and --featured-token-file are both set; keep one, the file");
		return 2;
	}
	if ((featured_token_file && vr_flags_read_secret("featured-token-file", featured_token_file,
							 &token_buf, err, sizeof err)) ||
	    (featured_token && vr_flags_check_secret("featured-token", featured_token, err, sizeof err))) {
		VR_ERROR("%s", err);
		return 2;
	}
	if (token_buf)
		featured_token = token_buf;
	if (svc.snapshot_chunk && (svc.snapshot_chunk < 4096 || svc.snapshot_chunk > (1 << 20))) {
		VR_ERROR("--snapshot-chunk-bytes must be 0 or 4096 .. 1048576");
		return 2;
	}
	if (svc.writer_addr && !svc.writer_addr[0])
		svc.writer_addr = NULL;
	if (writer_token_file && !svc.writer_addr) {
		VR_ERROR("--writer-token-file without --writer: set the writer's address too");
		return 2;
	}
	if (writer_token_file && vr_flags_read_secret("writer-token-file", writer_token_file, &writer_token,
						      err, sizeof err)) {
		VR_ERROR("%s", err);
		free(token_buf);
		return 2;
	}
	code = vr_daemon_open(&d);
	if (!code) {
		vr_channel_opts copts = { .tls_root_file = featured_ca, .token = featured_token,
					  .max_message_bytes = (size_t)d.max_message };
		if (vr_shards_open(&svc.shards, svc.featured_addr, &copts, err, sizeof err)) {
			VR_ERROR("--featured: %s", err);
			code = 1;
		} else {
			svc.featured = vr_shards_channel(svc.shards, 0);
		}
	}
	if (!code && svc.writer_addr) {
		vr_channel_opts wopts = { .token = writer_token, .max_message_bytes = (size_t)d.max_message };
		int rc = vr_channel_create(&svc.writer, svc.writer_addr, &wopts);
		if (rc) {
			VR_ERROR("cannot set up the channel to the writer at %s: %s", svc.writer_addr,
				 vr_strerror(rc));
			code = 1;
		}
	}
	free(token_buf); /* the channels keep their own copies */
	free(writer_token);
	if (!code) {
		svc.store = d.store;
		if (rk_service_open(&svc, err, sizeof err)) {
			VR_ERROR("%s", err);
			code = 1;
		}
	}
	if (!code && rk_service_register(&svc, d.server)) {
		const char *why = vr_server_error(d.server);
		VR_ERROR("cannot register the service: %s", why[0] ? why : "out of memory");
		code = 1;
	}
	if (!code)
		code = vr_daemon_serve(&d, services);
	svc.health = d.health;
	if (!code && rk_service_start(&svc))
		code = 1;
	if (!code) {
		rk_service_log_ready(&svc);
		vr_daemon_wait(&d);
	}
	vr_daemon_stop(&d);
	rk_service_close(&svc);
	vr_shards_close(svc.shards);
	vr_channel_destroy(svc.writer);
	if (vr_daemon_close(&d)) {
		fflush(NULL);
		_exit(code);
	}
	return code;
}
