/* bench_rank_rpc: Recommend top-k through a real rankd over loopback.
 *
 * It writes a synthetic VBPR snapshot (synth_snapshot.h: U users with 20
 * interactions each, N items, the tutorial's dims) into a fresh data
 * directory.
 * Then, per concurrency level, it starts rankd on that directory, runs
 * blocking Recommend calls from that many client threads for a while, and
 * stops rankd, which logs its handler-time percentiles: the server-side
 * figures. Prints per level: QPS, client p50/p99, server p50/p99, errors,
 * and rankd's start-up time and peak RSS. A benchmark, not a test.
 *
 *   bench_rank_rpc [--items 10000] [--users 1000] [--seconds 3]
 *                  [--levels 1,8,64] [--channels 8] [--server-threads 2]
 *                  [--k 20] [--approx 0] [--fp16] [--int4] [--scan-threads 0]
 *                  [--cold-slots 0] [--batch 0] [--dir DIR] [--metrics]
 *                  [--rankd PATH] [--topk-cache-mb 64]
 *
 * --scan-threads 1 (rankd's default) keeps every Recommend's scan on one
 * core; 0 lets a call that finds no other ranking call in flight split its
 * scan over every core (catalogues of 32768 items and up): run both to
 * compare low-load latency (level 1) and loaded throughput (levels 8, 64).
 *
 * --batch N sends RecommendBatch calls of N random users each instead of
 * Recommend (users/s = calls/s × N; the server columns stay Recommend's,
 * empty then).
 * --cold-slots N asks every Recommend to keep N of its k places for cold
 * items (RecommendRequest.cold_slots): the items no synthetic interaction
 * names, about e^-2 = 14% of them at the defaults. Run it with 0 and with
 * N on the same settings to see what the reserved places cost.
 * --topk-cache-mb LIST runs each level once per value, in the order given
 * (rankd --topk-cache-mb; 0 = off): "0,64,0,64" alternates the cache off
 * and on. The users are drawn uniformly from --users, so once the 0.5 s
 * warm-up has asked for most of them the cache answers nearly every call.
 * --metrics serves rankd's Prometheus endpoint on loopback during the run;
 * --rankd runs another build's rankd (an older one without the RPC
 * metrics, to measure what they cost). */
#include "err.h"
#include "flags.h"
#include "procs.h"
#include "rpc.h"
#include "synth_snapshot.h"
#include "visrec/v1/rankd.pb-c.h"

#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- clients ---------------------------------------------------------------------- */

struct client {
	pthread_t tid;
	vr_channel *ch;
	uint32_t n_users;
	int k;
	uint64_t seed;
	int cold_slots;
	int batch;
	uint32_t *lat_us;
	size_t cap, n;
	long errors;
};

static atomic_int phase; /* 0 warm-up, 1 measure, 2 stop */

static void *client_main(void *arg)
{
	struct client *c = arg;
	rk_rng rng;
	rk_rng_seed(&rng, c->seed, 1);
	int nb = c->batch ? c->batch : 1;
	char (*user)[16] = calloc((size_t)nb, sizeof *user);
	Visrec__V1__RecommendRequest *req = calloc((size_t)nb, sizeof *req), **reqs = calloc((size_t)nb, sizeof *reqs);
	for (int q = 0; q < nb; q++) {
		visrec__v1__recommend_request__init(&req[q]);
		req[q].user_id = user[q];
		req[q].k = c->k;
		req[q].cold_slots = c->cold_slots;
		reqs[q] = &req[q];
	}
	Visrec__V1__RecommendBatchRequest breq = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
	breq.requests = reqs;
	breq.n_requests = (size_t)nb;
	for (;;) {
		int ph = atomic_load(&phase);
		if (ph == 2)
			break;
		for (int q = 0; q < nb; q++)
			snprintf(user[q], sizeof user[q], "u%06u", rk_rng_below(&rng, c->n_users));
		ProtobufCMessage *m = NULL;
		vr_status st;
		double a = now_s();
		int rc = c->batch ? vr_client_unary(c->ch, "/visrec.v1.Rank/RecommendBatch", &breq.base,
						    &visrec__v1__recommend_batch_response__descriptor, &m, 10000, NULL, &st)
				  : vr_client_unary(c->ch, "/visrec.v1.Rank/Recommend", &req[0].base,
						    &visrec__v1__recommend_response__descriptor, &m, 10000, NULL, &st);
		double b = now_s();
		if (!rc && !c->batch && ((Visrec__V1__RecommendResponse *)m)->n_items != (size_t)c->k)
			rc = -1;
		for (int q = 0; !rc && c->batch && q < nb; q++)
			if (((Visrec__V1__RecommendBatchResponse *)m)->n_responses != (size_t)nb ||
			    ((Visrec__V1__RecommendBatchResponse *)m)->responses[q]->n_items != (size_t)c->k)
				rc = -1;
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
		if (ph != 1)
			continue;
		if (rc)
			c->errors++;
		else if (c->n < c->cap)
			c->lat_us[c->n++] = (uint32_t)((b - a) * 1e6);
	}
	free(user);
	free(req);
	free(reqs);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* "Recommend: N calls, handler time p50 X us, p99 Y us" from rankd's log. */
static int server_times(const char *path, double *p50, double *p99)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int found = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		const char *s = strstr(line, "handler time p50 ");
		if (s && sscanf(s, "handler time p50 %lf us, p99 %lf us", p50, p99) == 2)
			found = 1;
	}
	fclose(f);
	return found;
}

static long peak_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "VmHWM:", 6))
			kb = atol(line + 6);
	fclose(f);
	return kb;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(int argc, char **argv)
{
	int items = 10000, users = 1000, channels = 8, server_threads = 2, k = 20, approx = 0;
	int cold_slots = 0, batch = 0, fp16 = 0, int4 = 0, scan_threads = 1;
	double seconds = 3;
	const char *levels = "1,8,64", *dir = NULL, *rankd_bin = RANKD_BIN, *caches = "64";
	int metrics = 0;
	const vr_flag flags[] = {
		{ "items", NULL, VR_FLAG_INT, &items, "10000", "catalogue size", 0 },
		{ "users", NULL, VR_FLAG_INT, &users, "1000", "users (20 interactions each)", 0 },
		{ "seconds", NULL, VR_FLAG_DOUBLE, &seconds, "3", "measured seconds per level", 0 },
		{ "levels", NULL, VR_FLAG_STRING, &levels, "1,8,64", "concurrent clients per level", 0 },
		{ "channels", NULL, VR_FLAG_INT, &channels, "8", "client channels (connections), shared round-robin", 0 },
		{ "server-threads", NULL, VR_FLAG_INT, &server_threads, "2", "rankd --threads", 0 },
		{ "k", NULL, VR_FLAG_INT, &k, "20", "top-k", 0 },
		{ "approx", NULL, VR_FLAG_INT, &approx, "0", "rankd --topk-approx", 0 },
		{ "fp16", NULL, VR_FLAG_BOOL, &fp16, "false", "rankd --topk-fp16", 0 },
		{ "int4", NULL, VR_FLAG_BOOL, &int4, "false", "rankd --topk-int4", 0 },
		{ "scan-threads", NULL, VR_FLAG_INT, &scan_threads, "1", "rankd --scan-threads", 0 },
		{ "cold-slots", NULL, VR_FLAG_INT, &cold_slots, "0", "places of k kept for cold items", 0 },
		{ "batch", NULL, VR_FLAG_INT, &batch, "0", "users per RecommendBatch call; 0: Recommend", 0 },
		{ "dir", NULL, VR_FLAG_STRING, &dir, NULL, "work directory (default: a new one under /tmp)", 0 },
		{ "metrics", NULL, VR_FLAG_BOOL, &metrics, "false", "rankd --metrics-listen 127.0.0.1:0", 0 },
		{ "rankd", NULL, VR_FLAG_STRING, &rankd_bin, RANKD_BIN, "the rankd binary to run", 0 },
		{ "topk-cache-mb", NULL, VR_FLAG_STRING, &caches, "64",
		  "rankd --topk-cache-mb values, each level run once per value", 0 },
		{ 0 },
	};
	char err[256];
	int rc = vr_flags_parse(flags, argc, argv, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		vr_flags_usage(stdout, "bench_rank_rpc", "Recommend through a real rankd on loopback.", flags);
		return 0;
	}
	if (rc || items < 1 || users < 1 || channels < 1 || k < 1 || cold_slots < 0 || cold_slots > k || batch < 0 ||
	    batch > 256) {
		fprintf(stderr, "bench_rank_rpc: %s\n", rc ? err : "--items, --users, --channels, --k must be >= 1, "
			"--cold-slots 0..k, --batch 0..256");
		return 2;
	}
	char work[256], data[300], log[300];
	snprintf(work, sizeof work, "%s", dir ? dir : "/tmp/bench_rank_rpc.XXXXXX");
	if (!dir && !mkdtemp(work))
		return 1;
	snprintf(data, sizeof data, "%s/rankd-data", work);
	double t0 = now_s();
	if ((rc = synth_snapshot_write(data, (uint32_t)items, (uint32_t)users))) {
		fprintf(stderr, "bench_rank_rpc: cannot write the snapshot: %s\n", vr_strerror(rc));
		return 1;
	}
	printf("snapshot: %d items, %d users, VBPR K=200 K'=100 F=2048 (D=301), written in %.1f s; "
	       "k %d, cold slots %d, %s; rankd --topk-approx %d%s --scan-threads %d\n", items, users,
	       now_s() - t0, k, cold_slots, batch ? "RecommendBatch calls" : "Recommend calls", approx,
	       fp16 ? " --topk-fp16" : int4 ? " --topk-int4" : "", scan_threads);
	vr_rpc_init();
	printf("%6s %8s %9s %9s %10s %10s %10s %10s %10s %7s %9s %9s\n", "conc", "cache_mb", "calls", "QPS", "users/s", "cli_p50_us",
	       "cli_p99_us", "srv_p50_us", "srv_p99_us", "errors", "start_s", "rss_MB");
	char threads_arg[16], approx_arg[16], scan_arg[16];
	snprintf(scan_arg, sizeof scan_arg, "%d", scan_threads);
	snprintf(threads_arg, sizeof threads_arg, "%d", server_threads);
	snprintf(approx_arg, sizeof approx_arg, "%d", approx);
	int status = 0;
	for (const char *p = levels; *p;) {
		int conc = atoi(p);
		while (*p && *p != ',')
			p++;
		if (*p == ',')
			p++;
		if (conc < 1)
			continue;
		for (const char *cp = caches; *cp;) {
			char cache_arg[16];
			int mb = atoi(cp);
			while (*cp && *cp != ',')
				cp++;
			if (*cp == ',')
				cp++;
			snprintf(cache_arg, sizeof cache_arg, "%d", mb < 0 ? 0 : mb);
			snprintf(log, sizeof log, "%s/rankd-%d.stderr", work, conc);
			remove(log);
			char *rargv[] = { (char *)rankd_bin, "--listen", "127.0.0.1:0", "--data", data, "--threads",
					  threads_arg, "--follow-featured=false", "--featured", "127.0.0.1:9",
					  "--topk-approx", approx_arg, "--scan-threads", scan_arg,
					  "--topk-cache-mb", cache_arg, int4 ? "--topk-int4" : "--topk-int4=false",
					  fp16 ? "--topk-fp16" : "--topk-fp16=false", metrics ? "--metrics-listen" : NULL,
					  "127.0.0.1:0", NULL };
			struct proc r;
			double s0 = now_s();
			if (proc_spawn(&r, log, rargv) || proc_wait_ready(&r, "rankd", 600000)) {
				fprintf(stderr, "bench_rank_rpc: rankd did not start (see %s)\n", log);
				proc_stop(&r, 5000);
				status = 1;
				break;
			}
			double start_s = now_s() - s0;
			int nch = channels < conc ? channels : conc;
			vr_channel **chs = calloc((size_t)nch, sizeof *chs);
			struct client *cl = calloc((size_t)conc, sizeof *cl);
			for (int c = 0; c < nch; c++)
				vr_channel_create(&chs[c], r.addr, NULL);
			atomic_store(&phase, 0);
			for (int c = 0; c < conc; c++) {
				cl[c] = (struct client){ .ch = chs[c % nch], .n_users = (uint32_t)users, .k = k,
							 .seed = (uint64_t)c + 1, .cold_slots = cold_slots, .batch = batch, .cap = (size_t)(seconds * 200000 / conc + 1000) };
				cl[c].lat_us = malloc(cl[c].cap * sizeof *cl[c].lat_us);
				memset(cl[c].lat_us, 0, cl[c].cap * sizeof *cl[c].lat_us);
				pthread_create(&cl[c].tid, NULL, client_main, &cl[c]);
			}
			usleep(500000);
			atomic_store(&phase, 1);
			double m0 = now_s();
			usleep((useconds_t)(seconds * 1e6));
			atomic_store(&phase, 2);
			double took = now_s() - m0;
			size_t total = 0;
			long errors = 0;
			for (int c = 0; c < conc; c++) {
				pthread_join(cl[c].tid, NULL);
				total += cl[c].n;
				errors += cl[c].errors;
			}
			uint32_t *all = malloc((total + 1) * sizeof *all);
			size_t at = 0;
			for (int c = 0; c < conc; c++) {
				memcpy(all + at, cl[c].lat_us, cl[c].n * sizeof *all);
				at += cl[c].n;
				free(cl[c].lat_us);
			}
			qsort(all, total, sizeof *all, cmp_u32);
			long rss = peak_rss_kb(r.pid);
			for (int c = 0; c < nch; c++)
				vr_channel_destroy(chs[c]);
			int st = proc_stop(&r, 30000);
			double sp50 = -1, sp99 = -1;
			server_times(log, &sp50, &sp99);
			printf("%6d %8s %9zu %9.0f %10.0f %10u %10u %10.1f %10.1f %7ld %9.2f %9.1f\n", conc, cache_arg, total,
			       total / took, total * (batch ? batch : 1) / took, total ? all[total / 2] : 0, total ? all[total * 99 / 100] : 0, sp50,
			       sp99, errors, start_s, rss / 1024.0);
			fflush(stdout);
			if (st != 0)
				fprintf(stderr, "bench_rank_rpc: rankd exited with status %d (see %s)\n", st, log);
			free(all);
			free(cl);
			free(chs);
		}
		if (status)
			break;
	}
	vr_rpc_shutdown();
	if (!dir)
		nftw(work, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return status;
}
