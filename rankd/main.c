/* rankd: the ranking service daemon. Parses flags, opens the data
 * directory, loads the last model snapshot (before Health says SERVING),
 * serves visrec.v1.Rank and Health, follows featured's change feed, until
 * SIGTERM/SIGINT. */
#include "daemon.h"
#include "err.h"
#include "log.h"
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static const char summary[] =
	"rankd: stores interactions, trains BPR/VBPR and ranks items\n"
	"(visrec.v1.Rank and grpc.health.v1.Health over gRPC). At start it serves the last\n"
	"trained model from its --data directory, also while featured is down.";

/* --featured-file: the shard list in a file (a Kubernetes ConfigMap
 * mounted as a volume, which the kubelet updates in place), re-read on
 * SIGHUP and, unless --watch-featured-file=false, when its folder changes. */
struct list_file {
	rk_service *svc;
	const char *path;
	int watch;
	char list[VR_SHARD_LIST_MAX + 1]; /* the list read at start */
};

/* Reads path into list (VR_SHARD_LIST_MAX + 1 bytes): entries separated by
 * commas, blanks or newlines are joined by commas; '#' starts a comment to
 * the line's end. 0, or -1 with why (cap bytes) saying what is wrong. */
static int read_list_file(const char *path, char *list, char *why, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(why, cap, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	size_t n = 0;
	int c, comment = 0, sep = 0, rc = 0;
	while ((c = getc(f)) != EOF) {
		if (c == '\n')
			comment = 0;
		if (comment || c == '#') {
			comment = 1;
			continue;
		}
		if (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			sep = n > 0;
			continue;
		}
		if (n + 2 >= VR_SHARD_LIST_MAX + 1) {
			snprintf(why, cap, "%s is longer than a shard list can be (%d bytes)", path,
				 VR_SHARD_LIST_MAX);
			rc = -1;
			break;
		}
		if (sep)
			list[n++] = ',';
		sep = 0;
		list[n++] = (char)c;
	}
	if (!rc && ferror(f)) {
		snprintf(why, cap, "cannot read %s: %s", path, strerror(errno));
		rc = -1;
	}
	fclose(f);
	list[n] = 0;
	if (!rc && !n) {
		snprintf(why, cap, "%s holds no shard address", path);
		rc = -1;
	}
	return rc;
}

/* The file again (on SIGHUP, or a change in its folder: what): a list
 * that differs is adopted, one that does not parse leaves the list in use
 * and says why. */
static void reload(struct list_file *lf, const char *what)
{
	char why[512];
	int changed = 0;
	char *list = malloc(VR_SHARD_LIST_MAX + 1);
	if (!list) {
		VR_WARN("%s: out of memory reading --featured-file %s; the shard list in use stays", what,
			lf->path);
		return;
	}
	if (read_list_file(lf->path, list, why, sizeof why) ||
	    rk_service_relist(lf->svc, list, &changed, why, sizeof why)) {
		rk_shardset *set = rk_shardset_get(lf->svc);
		VR_WARN("%s: --featured-file %s: %s; the shard list in use stays %s", what, lf->path, why,
			set && set->shards ? vr_shards_map(set->shards)->list : "-");
		rk_shardset_put(set);
	} else if (!changed && !strcmp(what, "SIGHUP"))
		VR_INFO("SIGHUP: --featured-file %s names the shard list in use: nothing to do", lf->path);
	free(list);
}

static void on_hup(void *ctx)
{
	struct list_file *lf = ctx;
	if (!lf->path) {
		VR_INFO("SIGHUP received; rankd takes its shard list from --featured, which it cannot "
			"re-read: give the list as a file (--featured-file) to change it without a restart");
		return;
	}
	reload(lf, "SIGHUP");
}

/* The folder of --featured-file under inotify: the kubelet swaps a
 * ConfigMap volume's files by renaming a symlink (..data) in it, and an
 * editor may replace the file by a rename too, so the folder, not the
 * file, is watched. One thread sleeps in poll() on the inotify descriptor
 * and a pipe that watcher_stop writes: no CPU while nothing changes. */
struct watcher {
	struct list_file *lf;
	int ifd, wake[2];
	pthread_t tid;
	int running;
};

static void *watcher_main(void *arg)
{
	struct watcher *w = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		struct pollfd p[2] = { { .fd = w->ifd, .events = POLLIN }, { .fd = w->wake[0], .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			VR_WARN("--featured-file: watching its folder failed (%s); SIGHUP still re-reads it",
				strerror(errno));
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		/* Drain what came, then read the file once: a swap is several
		 * events. */
		while (read(w->ifd, buf, sizeof buf) > 0)
			;
		reload(w->lf, "a change in its folder");
	}
}

static int watcher_start(struct watcher *w, struct list_file *lf)
{
	w->lf = lf;
	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ifd < 0)
		return -1;
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", lf->path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	if (inotify_add_watch(w->ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0 ||
	    pipe2(w->wake, O_CLOEXEC)) {
		close(w->ifd);
		return -1;
	}
	if (pthread_create(&w->tid, NULL, watcher_main, w)) {
		close(w->ifd);
		close(w->wake[0]);
		close(w->wake[1]);
		return -1;
	}
	w->running = 1;
	return 0;
}

static void watcher_stop(struct watcher *w)
{
	if (!w->running)
		return;
	if (write(w->wake[1], "x", 1) < 0)
		VR_WARN("cannot wake the --featured-file watcher: %s", strerror(errno));
	pthread_join(w->tid, NULL);
	close(w->ifd);
	close(w->wake[0]);
	close(w->wake[1]);
	w->running = 0;
}

int main(int argc, char **argv)
{
	vr_daemon d = { 0 };
	rk_service svc = { 0 };
	const char *featured_ca = NULL, *featured_token = NULL, *featured_token_file = NULL;
	const char *writer_token_file = NULL;
	char *token_buf = NULL, *writer_token = NULL;
	char err[512];
	static struct list_file lf;
	struct watcher watcher = { 0 };
	const vr_flag flags[] = {
		VR_DAEMON_FLAGS(&d, "127.0.0.1:50052"),
		{ "featured", "VISREC_FEATURED", VR_FLAG_STRING, &svc.featured_addr, "127.0.0.1:50051",
		  "HOST:PORT of featured, or of every featured shard: the shard list (comma-separated, "
		  "the same as featured --shards)", 0 },
		{ "featured-file", "VISREC_FEATURED_FILE", VR_FLAG_STRING, &lf.path, NULL,
		  "file holding the shard list instead of --featured (commas, blanks or newlines between "
		  "entries, # comments); re-read on SIGHUP and when its folder changes: rankd adopts a "
		  "changed list without a restart", 0 },
		{ "watch-featured-file", "VISREC_WATCH_FEATURED_FILE", VR_FLAG_BOOL, &lf.watch, "true",
		  "re-read --featured-file when its folder changes (inotify); false: on SIGHUP only", 0 },
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
	if (lf.path && !lf.path[0])
		lf.path = NULL;
	if (lf.path) {
		if (read_list_file(lf.path, lf.list, err, sizeof err)) {
			VR_ERROR("--featured-file: %s", err);
			free(token_buf);
			return 2;
		}
		svc.featured_addr = lf.list;
	}
	code = vr_daemon_open(&d);
	if (!code) {
		/* Kept to the end (token_buf too): a new shard list's channels
		 * are made with them. */
		svc.featured_opts = (vr_channel_opts){ .tls_root_file = featured_ca, .token = featured_token,
						       .max_message_bytes = (size_t)d.max_message };
		if (vr_shards_open(&svc.shards, svc.featured_addr, &svc.featured_opts, err, sizeof err)) {
			VR_ERROR("%s: %s", lf.path ? "--featured-file" : "--featured", err);
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
	free(writer_token); /* the channel keeps its own copy */
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
		lf.svc = &svc;
		d.on_hup = on_hup;
		d.hup_ctx = &lf;
		if (lf.path && lf.watch && watcher_start(&watcher, &lf))
			VR_WARN("--featured-file %s: cannot watch its folder (%s); SIGHUP re-reads it", lf.path,
				strerror(errno));
		vr_daemon_wait(&d);
		watcher_stop(&watcher);
	}
	vr_daemon_stop(&d);
	if (!svc.set) /* rk_service_open did not take the shards over */
		vr_shards_close(svc.shards);
	rk_service_close(&svc);
	free(token_buf);
	vr_channel_destroy(svc.writer);
	if (vr_daemon_close(&d)) {
		fflush(NULL);
		_exit(code);
	}
	return code;
}
