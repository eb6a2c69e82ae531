/* bench_rpc: unary Info calls on loopback with our C client against a real
 * featured daemon, at several concurrencies (one blocking client thread
 * per call in flight, all on one channel unless --channels says more).
 * Prints calls, QPS and p50/p99 latency per level. A benchmark, not a test.
 *
 *   bench_rpc [--seconds 3] [--levels 1,8,64] [--server-threads 2]
 *             [--channels 1] [--target HOST:PORT]
 * Without --target it starts featured (built beside it) on 127.0.0.1:0. */
#include "err.h"
#include "flags.h"
#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"

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

extern char **environ;

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

static int level(vr_channel **chs, int nch, int conc, double seconds)
{
	struct worker *w = calloc((size_t)conc, sizeof *w);
	size_t cap = ((size_t)1 << 21) / (size_t)conc + 4096;
	for (int i = 0; i < conc; i++) {
		w[i].ch = chs[i % nch];
		w[i].cap = cap;
		w[i].lat_us = calloc(cap, sizeof *w[i].lat_us);
		if (!w[i].lat_us)
			return VR_ENOMEM;
		memset(w[i].lat_us, 1, cap * sizeof *w[i].lat_us); /* first touch now */
	}
	atomic_store(&phase, 0);
	for (int i = 0; i < conc; i++)
		pthread_create(&w[i].tid, NULL, run, &w[i]);
	usleep(300000);
	double t0 = now_s();
	atomic_store(&phase, 1);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&phase, 2);
	double took = now_s() - t0;
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
	uint32_t p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
	printf("%6d %10zu %10.0f %10u %10u %8ld\n", conc, total, (double)total / took, p50, p99, errors);
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
static pid_t start_featured(const char *data, int threads, char *addr, size_t len)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -1;
	char th[16];
	snprintf(th, sizeof th, "%d", threads);
	char *argv[] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", (char *)data,
			 "--threads", th, "--log-level", "warn", NULL };
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	pid_t pid = -1;
	int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	char line[256] = "";
	size_t n = 0;
	while (!rc && n < sizeof line - 1) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		if (poll(&pfd, 1, 10000) <= 0 || read(p[0], line + n, 1) != 1)
			break;
		if (line[n] == '\n')
			break;
		n++;
	}
	line[n] = 0;
	close(p[0]);
	const char *prefix = "featured listening on ";
	if (rc || strncmp(line, prefix, strlen(prefix))) {
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		return -1;
	}
	snprintf(addr, len, "%s", line + strlen(prefix));
	return pid;
}

int main(int argc, char **argv)
{
	const char *target = NULL, *levels = NULL;
	double seconds = 3;
	int server_threads = 2, nch = 1;
	const vr_flag flags[] = {
		{ "target", NULL, VR_FLAG_STRING, &target, NULL, "featured to call; unset: start one", 0 },
		{ "seconds", NULL, VR_FLAG_DOUBLE, &seconds, "3", "measured seconds per level", 0 },
		{ "levels", NULL, VR_FLAG_STRING, &levels, "1,8,64", "concurrent calls per level", 0 },
		{ "server-threads", NULL, VR_FLAG_INT, &server_threads, "2", "--threads of the started featured", 0 },
		{ "channels", NULL, VR_FLAG_INT, &nch, "1", "client channels (connections), shared round robin", 0 },
		{ 0 },
	};
	char err[256];
	int rc = vr_flags_parse(flags, argc, argv, err, sizeof err);
	if (rc == VR_FLAGS_HELP) {
		vr_flags_usage(stdout, "bench_rpc", "unary Info QPS and latency on loopback", flags);
		return 0;
	}
	if (rc || nch < 1) {
		fprintf(stderr, "bench_rpc: %s\n", rc ? err : "--channels must be >= 1");
		return 2;
	}

	char addr[256], data[] = "/tmp/bench_rpc.XXXXXX";
	pid_t pid = -1;
	if (!target) {
		if (!mkdtemp(data))
			return 1;
		pid = start_featured(data, server_threads, addr, sizeof addr);
		if (pid < 0) {
			fprintf(stderr, "bench_rpc: could not start %s\n", FEATURED_BIN);
			return 1;
		}
		target = addr;
	}
	vr_rpc_init();
	vr_channel **chs = calloc((size_t)nch, sizeof *chs);
	for (int i = 0; i < nch; i++)
		vr_channel_create(&chs[i], target, NULL);
	printf("unary /visrec.v1.Featured/Info on %s, %d channel(s), %.1f s per level%s\n", target, nch,
	       seconds, pid > 0 ? "" : " (external server)");
	if (pid > 0)
		printf("featured --threads %d\n", server_threads);
	printf("%6s %10s %10s %10s %10s %8s\n", "conc", "calls", "QPS", "p50_us", "p99_us", "errors");
	char *list = strdup(levels);
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		int c = atoi(tok);
		if (c > 0)
			level(chs, nch, c, seconds);
	}
	free(list);
	for (int i = 0; i < nch; i++)
		vr_channel_destroy(chs[i]);
	free(chs);
	vr_rpc_shutdown();
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		nftw(data, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	}
	return 0;
}
