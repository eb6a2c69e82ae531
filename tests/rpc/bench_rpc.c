/* bench_rpc: unary Info calls on loopback with our C client against a real
 * featured daemon, at several concurrencies (one blocking client thread
 * per call in flight, all on one channel unless --channels says more).
 * Prints calls, QPS and p50/p99 latency per level. A benchmark, not a test.
 *
 *   bench_rpc [--seconds 3] [--levels 1,8,64] [--server-threads 2]
 *             [--channels 1] [--target HOST:PORT] [--rounds 3]
 *             [--peer PATH|none] [--perf EVENTS] [--featured PATH]
 * Without --target it starts featured (built beside it) on 127.0.0.1:0,
 * and, unless --peer none, the C++ callback peer (grpc_cpp_peer, built
 * where libgrpc++-dev is found) serving the same Info response bytes
 * (taken from featured's answer). Each round runs every level against
 * both servers, alternating which goes first, on the same cores with the
 * same client; the end prints medians over the rounds and our/peer QPS.
 * Per call it also prints the server's CPU time (its /proc stat), and with
 * --perf "ev1,ev2" what `perf stat -e EVENTS -p PID` counted during the
 * measured seconds, divided by the calls, e.g.
 * --perf context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_futex,
 * probe_libc:malloc (after `perf probe -x LIBC malloc`, as root).
 * --featured runs another build's featured (an older rpc layer, to
 * compare before and after in one run). */
#include "err.h"
#include "procs.h"
#include "flags.h"
#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct worker {
	pthread_t tid;
	vr_channel *ch;
	uint32_t *lat_us; /* allocated once per level, touched before timing */
	size_t cap, n;
	long errors;
};

static atomic_int phase; /* 0 warm-up, 1 measure, 2 stop */

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	for (;;) {
		int p = atomic_load(&phase);
		if (p == 2)
			break;
		double t0 = now_s();
		ProtobufCMessage *resp = NULL;
		vr_status st;
		int rc = vr_client_unary(w->ch, "/visrec.v1.Featured/Info", &req.base,
					 &visrec__v1__featured_info_response__descriptor, &resp, 5000,
					 NULL, &st);
		double us = (now_s() - t0) * 1e6;
		if (resp)
			protobuf_c_message_free_unpacked(resp, NULL);
		if (p != 1)
			continue;
		if (rc)
			w->errors++;
		else if (w->n < w->cap)
			w->lat_us[w->n++] = (uint32_t)us;
	}
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

#define MAX_EVENTS 8

/* One server under test. */
struct server {
	const char *name;
	pid_t pid; /* -1: external (--target), no CPU or perf figures */
	vr_channel **chs;
};

/* One level's figures against one server. */
struct result {
	double qps, p50, p99, cpu_us; /* cpu_us: server CPU per call, < 0 unknown */
	double ev[MAX_EVENTS];        /* perf counts per call, < 0 unknown */
	long errors;
};

/* Starts `perf stat -x, -e events -p pid -o out`; its pid or -1. */
static pid_t perf_start(const char *events, pid_t pid, const char *out)
{
	char p[16];
	snprintf(p, sizeof p, "%d", (int)pid);
	char *argv[] = { "perf", "stat", "-x,", "-e", (char *)events, "-p", p, "-o", (char *)out, NULL };
	pid_t child = -1;
	if (posix_spawnp(&child, "perf", NULL, NULL, argv, environ))
		return -1;
	usleep(200000); /* perf attaches */
	return child;
}

/* Stops perf and reads its counts, in the order of events. */
static void perf_finish(pid_t child, const char *out, int nev, double *count)
{
	for (int i = 0; i < nev; i++)
		count[i] = -1;
	if (child <= 0)
		return;
	kill(child, SIGINT);
	waitpid(child, NULL, 0);
	FILE *f = fopen(out, "r");
	char line[512];
	int i = 0;
	while (f && i < nev && fgets(line, sizeof line, f)) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		count[i++] = line[0] == '<' ? -1 : atof(line); /* "<not counted>" */
	}
	if (f)
		fclose(f);
}

static int level(struct server *s, int nch, int conc, double seconds, const char *events, int nev,
		 struct result *res)
{
	struct worker *w = calloc((size_t)conc, sizeof *w);
	size_t cap = ((size_t)1 << 21) / (size_t)conc + 4096;
	for (int i = 0; i < conc; i++) {
		w[i].ch = s->chs[i % nch];
		w[i].cap = cap;
		w[i].lat_us = calloc(cap, sizeof *w[i].lat_us);
		if (!w[i].lat_us)
			return VR_ENOMEM;
		memset(w[i].lat_us, 1, cap * sizeof *w[i].lat_us); /* first touch now */
	}
	atomic_store(&phase, 0);
	for (int i = 0; i < conc; i++)
		pthread_create(&w[i].tid, NULL, run, &w[i]);
	char perf_out[64];
	snprintf(perf_out, sizeof perf_out, "/tmp/bench_rpc.perf.%d", (int)getpid());
	pid_t perf = events && s->pid > 0 ? perf_start(events, s->pid, perf_out) : -1;
	usleep(300000);
	int64_t cpu0 = s->pid > 0 ? proc_cpu_ms(s->pid) : -1;
	double t0 = now_s();
	atomic_store(&phase, 1);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&phase, 2);
	double took = now_s() - t0;
	int64_t cpu1 = s->pid > 0 ? proc_cpu_ms(s->pid) : -1;
	double count[MAX_EVENTS];
	perf_finish(perf, perf_out, nev, count);
	remove(perf_out);
	size_t total = 0;
	long errors = 0;
	for (int i = 0; i < conc; i++) {
		pthread_join(w[i].tid, NULL);
		total += w[i].n;
		errors += w[i].errors;
	}
	uint32_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < conc; i++) {
		memcpy(all + k, w[i].lat_us, w[i].n * sizeof *all);
		k += w[i].n;
		free(w[i].lat_us);
	}
	qsort(all, total, sizeof *all, cmp_u32);
	res->qps = (double)total / took;
	res->p50 = total ? all[total / 2] : 0;
	res->p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
	res->errors = errors;
	res->cpu_us = cpu0 >= 0 && cpu1 >= 0 && total ? (double)(cpu1 - cpu0) * 1e3 / (double)total : -1;
	/* perf counted the warm-up too: its window is about took + 0.3 s. */
	for (int i = 0; i < nev; i++)
		res->ev[i] = count[i] >= 0 && total ? count[i] / ((double)total * (took + 0.3) / took) : -1;
	printf("%-8s %6d %10zu %10.0f %10.0f %10.0f %8ld %9.1f", s->name, conc, total, res->qps, res->p50,
	       res->p99, errors, res->cpu_us);
	for (int i = 0; i < nev; i++)
		printf(" %10.2f", res->ev[i]);
	printf("\n");
	fflush(stdout);
	free(all);
	free(w);
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Starts featured on 127.0.0.1:0 and reads its address. */
static int start_featured(struct proc *p, const char *bin, const char *data, int threads, const char *log)
{
	char th[16];
	snprintf(th, sizeof th, "%d", threads);
	char *argv[] = { (char *)bin, "--listen", "127.0.0.1:0", "--data", (char *)data,
			 "--threads", th, "--log-level", "warn", NULL };
	if (proc_spawn(p, log, argv) || proc_wait_ready(p, "featured", 10000)) {
		proc_stop(p, 5000);
		return -1;
	}
	return 0;
}

/* Writes featured's Info response, packed, to path for the peer. */
static int save_info(vr_channel *ch, const char *path)
{
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	int rc = vr_client_unary(ch, "/visrec.v1.Featured/Info", &req.base,
				 &visrec__v1__featured_info_response__descriptor, &resp, 5000, NULL, NULL);
	if (rc)
		return rc;
	size_t n = protobuf_c_message_get_packed_size(resp);
	uint8_t *buf = malloc(n ? n : 1);
	FILE *f = fopen(path, "wb");
	rc = buf && f ? 0 : -errno;
	if (!rc) {
		protobuf_c_message_pack(resp, buf);
		rc = fwrite(buf, 1, n, f) == n ? 0 : VR_EIO;
	}
	if (f && fclose(f) && !rc)
		rc = VR_EIO;
	free(buf);
	protobuf_c_message_free_unpacked(resp, NULL);
	printf("Info response: %zu bytes, the same for both servers\n", n);
	return rc;
}

#ifdef PEER_BIN
#define PEER_DEFAULT PEER_BIN
#else
#define PEER_DEFAULT "none"
#endif

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	const char *target = NULL, *levels = NULL, *peer_bin = PEER_DEFAULT, *events = NULL;
	const char *featured_bin = FEATURED_BIN;
	double seconds = 3;
	int server_threads = 2, nch = 1, rounds = 3;
	const vr_flag flags[] = {
		{ "target", NULL, VR_FLAG_STRING, &target, NULL, "featured to call; unset: start one", 0 },
		{ "seconds", NULL, VR_FLAG_DOUBLE, &seconds, "3", "measured seconds per level", 0 },
		{ "levels", NULL, VR_FLAG_STRING, &levels, "1,8,64", "concurrent calls per level", 0 },
		{ "server-threads", NULL, VR_FLAG_INT, &server_threads, "2", "--threads of the started featured", 0 },
		{ "channels", NULL, VR_FLAG_INT, &nch, "1", "client channels (connections), shared round robin", 0 },
		{ "rounds", NULL, VR_FLAG_INT, &rounds, "3", "rounds of every level (medians at the end)", 0 },
		{ "peer", NULL, VR_FLAG_STRING, &peer_bin, PEER_DEFAULT, "the C++ peer binary; none: ours only", 0 },
		{ "perf", NULL, VR_FLAG_STRING, &events, NULL, "perf stat events to count per call", 0 },
		{ "featured", NULL, VR_FLAG_STRING, &featured_bin, FEATURED_BIN, "the featured binary to run", 0 },
		{ 0 },
	};
	char err[256];
	int rc = vr_flags_parse(flags, argc, argv, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		vr_flags_usage(stdout, "bench_rpc", "unary Info QPS and latency on loopback", flags);
		return 0;
	}
	if (rc || nch < 1 || rounds < 1 || rounds > 64) {
		fprintf(stderr, "bench_rpc: %s\n", rc ? err : "--channels must be >= 1, --rounds 1..64");
		return 2;
	}
	int nev = 0;
	char evnames[MAX_EVENTS][64];
	for (const char *e = events; e && *e && nev < MAX_EVENTS;) {
		size_t n = strcspn(e, ",");
		snprintf(evnames[nev++], sizeof evnames[0], "%.*s", (int)n, e);
		e += n + (e[n] == ',');
	}

	char data[] = "/tmp/bench_rpc.XXXXXX", path[300];
	struct proc fp = { .pid = -1 }, pp = { .pid = -1 };
	struct server srv[2] = { { "ours", -1, NULL }, { "cpp-peer", -1, NULL } };
	int nsrv = 1;
	if (!mkdtemp(data))
		return 1;
	if (!target) {
		snprintf(path, sizeof path, "%s/featured.stderr", data);
		if (start_featured(&fp, featured_bin, data, server_threads, path)) {
			fprintf(stderr, "bench_rpc: could not start %s (see %s)\n", featured_bin, path);
			return 1;
		}
		target = fp.addr;
		srv[0].pid = fp.pid;
	}
	vr_rpc_init();
	srv[0].chs = calloc((size_t)nch, sizeof *srv[0].chs);
	for (int i = 0; i < nch; i++)
		vr_channel_create(&srv[0].chs[i], target, NULL);
	printf("unary /visrec.v1.Featured/Info on %s, %d channel(s), %.1f s per level, %d round(s)%s\n",
	       target, nch, seconds, rounds, fp.pid > 0 ? "" : " (external server)");
	if (fp.pid > 0)
		printf("featured --threads %d\n", server_threads);
	snprintf(path, sizeof path, "%s/info.pb", data);
	if (!strcmp(peer_bin, "none") || fp.pid <= 0) {
#ifdef PEER_SKIP
		printf("cpp-peer: skipped: %s\n", PEER_SKIP);
#else
		printf("cpp-peer: skipped: %s\n", fp.pid > 0 ? "--peer none" : "--target given");
#endif
	} else if ((rc = save_info(srv[0].chs[0], path))) {
		fprintf(stderr, "bench_rpc: featured's Info failed: %s\n", vr_strerror(rc));
	} else {
		char log[300];
		snprintf(log, sizeof log, "%s/peer.stderr", data);
		char *pargv[] = { (char *)peer_bin, "--response", path, NULL };
		if (proc_spawn(&pp, log, pargv) || proc_wait_ready(&pp, "peer", 10000)) {
			proc_stop(&pp, 5000);
			printf("cpp-peer: skipped: %s did not start (see %s)\n", peer_bin, log);
		} else {
			srv[1].pid = pp.pid;
			srv[1].chs = calloc((size_t)nch, sizeof *srv[1].chs);
			for (int i = 0; i < nch; i++)
				vr_channel_create(&srv[1].chs[i], pp.addr, NULL);
			nsrv = 2;
		}
	}
	printf("%-8s %6s %10s %10s %10s %10s %8s %9s", "server", "conc", "calls", "QPS", "p50_us", "p99_us",
	       "errors", "cpu_us");
	for (int i = 0; i < nev; i++)
		printf(" %10.10s", strchr(evnames[i], ':') ? strchr(evnames[i], ':') + 1 : evnames[i]);
	printf("\n");
	int lv[16], nlv = 0;
	char *list = strdup(levels);
	for (char *tok = strtok(list, ","); tok && nlv < 16; tok = strtok(NULL, ","))
		if (atoi(tok) > 0)
			lv[nlv++] = atoi(tok);
	free(list);
	struct result *res = calloc((size_t)(rounds * nlv * 2), sizeof *res);
	for (int r = 0; r < rounds; r++)
		for (int l = 0; l < nlv; l++)
			for (int k = 0; k < nsrv; k++) {
				int s = nsrv == 2 ? (k + r) % 2 : 0; /* A B, then B A */
				level(&srv[s], nch, lv[l], seconds, events, nev, &res[(r * nlv + l) * 2 + s]);
			}
	printf("medians over %d round(s):\n%-8s %6s %10s %10s %10s %9s", rounds, "server", "conc", "QPS", "p50_us",
	       "p99_us", "cpu_us");
	for (int i = 0; i < nev; i++)
		printf(" %10.10s", strchr(evnames[i], ':') ? strchr(evnames[i], ':') + 1 : evnames[i]);
	printf("%s\n", nsrv == 2 ? "  ours/peer QPS" : "");
	for (int l = 0; l < nlv; l++) {
		double qps[2] = { 0, 0 };
		for (int s = 0; s < nsrv; s++) {
			double v[64];
			double m[4 + MAX_EVENTS];
			for (int f = 0; f < 4 + nev; f++) {
				for (int r = 0; r < rounds; r++) {
					const struct result *x = &res[(r * nlv + l) * 2 + s];
					v[r] = f == 0 ? x->qps : f == 1 ? x->p50 : f == 2 ? x->p99 : f == 3 ? x->cpu_us
														: x->ev[f - 4];
				}
				m[f] = median(v, rounds);
			}
			qps[s] = m[0];
			printf("%-8s %6d %10.0f %10.0f %10.0f %9.1f", srv[s].name, lv[l], m[0], m[1], m[2], m[3]);
			for (int i = 0; i < nev; i++)
				printf(" %10.2f", m[4 + i]);
			if (s == 1)
				printf("  %.2f", qps[0] / qps[1]);
			printf("\n");
		}
	}
	free(res);
	for (int s = 0; s < nsrv; s++) {
		for (int i = 0; i < nch; i++)
			vr_channel_destroy(srv[s].chs[i]);
		free(srv[s].chs);
	}
	vr_rpc_shutdown();
	proc_stop(&pp, 5000);
	proc_stop(&fp, 10000);
	nftw(data, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}
