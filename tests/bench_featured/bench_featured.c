/* bench_featured: ingest throughput of the featured daemon, end to end.
 *
 *   bench_featured --make N DIR      writes N JPEGs of 500x375 (img00000.jpg...)
 *   bench_featured DIR [--arch alexnet] [--layer fc7] [--input-size 224]
 *                      [--batch 16] [--streams 2] [--per-call 100] [--warmup 32]
 *                      [--decode-threads 0] [--data PATH] [--backend auto]
 *                      [--precision fp32]
 *
 * The second form starts a real featured process (--backend, as featured's
 * flag: auto, onednn, cpu-ref; auto picks oneDNN without a GPU; a fresh data
 * directory, a new randomly initialised model), ingests every JPEG of DIR
 * over gRPC with PutItems (--streams client threads, each sending calls of
 * --per-call items; after --warmup items that are not timed), and reports
 * images/s from the first timed send to the last ack, the daemon's own split
 * (decode / copy / network / store seconds, from the executor line it
 * logs at shutdown), and its memory: VmRSS at each quarter of the ingest and
 * VmHWM (peak) at the end, from /proc/PID/status, and the CPU seconds
 * per image it used (user + system, /proc/PID/stat: steadier than wall
 * time on cores shared with other work). Prints a summary and one
 * JSON line (for run.sh). The data directory (a temporary one unless
 * --data) is removed at the end; the daemon's log stays beside it as
 * DATA.stderr. */
#include "decode.h"
#include "jpeg_fixtures.h"
#include "rpc.h"
#include "visrec/v1/featured.pb-c.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static int make_images(int n, const char *dir)
{
	uint8_t *rgb = malloc(500 * 375 * 3);
	mkdir(dir, 0755);
	for (int i = 0; rgb && i < n; i++) {
		uint8_t *jpeg;
		size_t len;
		char path[4096];
		fixture_rgb(rgb, 500, 375, (unsigned)i + 1);
		if (vr_jpeg_encode(rgb, 500, 375, VR_PIX_RGB, VR_SUBSAMP_420, 90, &jpeg, &len))
			return 1;
		snprintf(path, sizeof path, "%s/img%05d.jpg", dir, i);
		FILE *f = fopen(path, "wb");
		if (!f || fwrite(jpeg, 1, len, f) != len || fclose(f)) {
			fprintf(stderr, "cannot write %s\n", path);
			return 1;
		}
		vr_jpeg_free(jpeg);
	}
	free(rgb);
	printf("wrote %d JPEGs of 500x375 to %s\n", n, dir);
	return 0;
}

struct image {
	char id[32];
	uint8_t *data;
	size_t len;
};

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_images(const char *dir, struct image **out, int *n)
{
	DIR *d = opendir(dir);
	char *names[100000];
	int count = 0;
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d)) && count < 100000)
		if (strstr(e->d_name, ".jpg"))
			names[count++] = strdup(e->d_name);
	closedir(d);
	qsort(names, (size_t)count, sizeof names[0], cmp_name);
	struct image *im = calloc((size_t)count, sizeof *im);
	for (int i = 0; i < count; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		FILE *f = fopen(path, "rb");
		if (!f || fstat(fileno(f), &st))
			return -1;
		im[i].len = (size_t)st.st_size;
		im[i].data = malloc(im[i].len);
		if (fread(im[i].data, 1, im[i].len, f) != im[i].len)
			return -1;
		fclose(f);
		snprintf(im[i].id, sizeof im[i].id, "%.*s", 20, names[i]);
		free(names[i]);
	}
	*out = im;
	*n = count;
	return 0;
}

/* ---- the daemon ----------------------------------------------------------- */

static pid_t pid = -1;
static char addr[512], err_path[4200];

static int start(char *const argv[])
{
	int p[2];
	if (pipe2(p, O_CLOEXEC))
		return -1;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	posix_spawnattr_t at;
	sigset_t none;
	sigemptyset(&none);
	posix_spawnattr_init(&at);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
	int rc = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	if (rc)
		return -1;
	char line[512];
	size_t n = 0;
	static const char prefix[] = "featured listening on ";
	while (n < sizeof line - 1 && read(p[0], line + n, 1) == 1) {
		if (line[n] == '\n') {
			line[n] = 0;
			close(p[0]);
			if (strncmp(line, prefix, strlen(prefix)))
				return -1;
			snprintf(addr, sizeof addr, "%s", line + strlen(prefix));
			return 0;
		}
		n++;
	}
	close(p[0]);
	return -1;
}

/* VmRSS and VmHWM of the daemon in MiB. */
static void mem_mib(double *rss, double *hwm)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	*rss = *hwm = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long kb;
		if (sscanf(line, "VmRSS: %lu", &kb) == 1)
			*rss = kb / 1024.0;
		if (sscanf(line, "VmHWM: %lu", &kb) == 1)
			*hwm = kb / 1024.0;
	}
	if (f)
		fclose(f);
}

/* CPU seconds (user + system) the daemon used so far: on cores shared
 * with other work this, per image, is steadier than wall time. */
static double cpu_s(void)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	unsigned long long ut = 0, st = 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')'); /* the fields after the command name */
	if (p)
		sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- ingest ----------------------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	struct image *im;
	int first, end, next, per_call, acked, failed;
	vr_channel *ch;
} job = { .mu = PTHREAD_MUTEX_INITIALIZER };

static int put_range(int from, int to)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	vr_status st;
	int rc = vr_ccall_start(&cc, job.ch, "/visrec.v1.Featured/PutItems",
				&visrec__v1__put_items_response__descriptor, 600000, NULL);
	for (int i = from; !rc && i < to; i++) {
		Visrec__V1__PutItemsRequest req = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
		req.item_id = job.im[i].id;
		req.image.data = job.im[i].data;
		req.image.len = job.im[i].len;
		rc = vr_ccall_send(cc, &req.base);
	}
	if (!rc)
		rc = vr_ccall_close_send(cc);
	if (!rc)
		rc = vr_ccall_recv(cc, &m);
	int frc = cc ? vr_ccall_finish(cc, &st) : rc;
	int ok = 0;
	if (!rc && !frc) {
		ok = (int)((Visrec__V1__PutItemsResponse *)m)->accepted;
		if (ok != to - from)
			fprintf(stderr, "%d of %d items refused\n", to - from - ok, to - from);
	} else {
		fprintf(stderr, "PutItems failed: %s %s\n", vr_status_name(st.code), st.message);
	}
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	return ok;
}

static void *stream_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&job.mu);
		int from = job.next, to = from + job.per_call;
		if (to > job.end)
			to = job.end;
		job.next = to;
		pthread_mutex_unlock(&job.mu);
		if (from >= to)
			return NULL;
		int ok = put_range(from, to);
		pthread_mutex_lock(&job.mu);
		job.acked += ok;
		job.failed += to - from - ok;
		pthread_mutex_unlock(&job.mu);
	}
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static double field(const char *text, const char *after)
{
	const char *p = strstr(text, after);
	return p ? atof(p + strlen(after)) : -1;
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *arch = "alexnet", *layer = "fc7", *size = "224", *batch = "16";
	const char *decode = "0", *data = NULL, *backend = "auto", *precision = "fp32";
	int streams = 2, warmup = 32;
	job.per_call = 100;
	if (argc == 4 && !strcmp(argv[1], "--make"))
		return make_images(atoi(argv[2]), argv[3]);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-') {
			dir = a;
			continue;
		}
		if (!v) {
			fprintf(stderr, "%s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--arch"))
			arch = v;
		else if (!strcmp(a, "--layer"))
			layer = v;
		else if (!strcmp(a, "--input-size"))
			size = v;
		else if (!strcmp(a, "--batch"))
			batch = v;
		else if (!strcmp(a, "--decode-threads"))
			decode = v;
		else if (!strcmp(a, "--data"))
			data = v;
		else if (!strcmp(a, "--backend"))
			backend = v;
		else if (!strcmp(a, "--precision"))
			precision = v;
		else if (!strcmp(a, "--streams"))
			streams = atoi(v);
		else if (!strcmp(a, "--per-call"))
			job.per_call = atoi(v);
		else if (!strcmp(a, "--warmup"))
			warmup = atoi(v);
		else {
			fprintf(stderr, "unknown flag %s (see the comment at the top of bench_featured.c)\n", a);
			return 2;
		}
	}
	if (!dir || streams < 1 || streams > 64 || job.per_call < 1) {
		fprintf(stderr, "usage: bench_featured --make N DIR | bench_featured DIR [flags]\n");
		return 2;
	}
	struct image *im;
	int n;
	if (load_images(dir, &im, &n) || n <= warmup) {
		fprintf(stderr, "cannot read more than %d JPEGs from %s\n", warmup, dir);
		return 1;
	}
	char datadir[4096];
	snprintf(datadir, sizeof datadir, "%s", data ? data : "/tmp/bench_featured.XXXXXX");
	if (!data && !mkdtemp(datadir))
		return 1;
	snprintf(err_path, sizeof err_path, "%s.stderr", datadir);
	char *const dargv[] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", datadir,
				"--backend", (char *)backend, "--arch", (char *)arch, "--feature-layer",
				(char *)layer, "--input-size", (char *)size, "--batch", (char *)batch,
				"--decode-threads", (char *)decode, "--precision", (char *)precision, NULL };
	double t_start = now();
	if (start(dargv)) {
		fprintf(stderr, "featured did not start; see %s\n", err_path);
		return 1;
	}
	double startup = now() - t_start;
	vr_rpc_init();
	vr_channel_opts co = { .max_message_bytes = 64 << 20 };
	vr_channel_create(&job.ch, addr, &co);
	job.im = im;

	/* Warm-up: the first batches touch fresh pages of the net's buffers. */
	job.next = 0;
	job.end = warmup;
	stream_main(NULL);
	double rss0, hwm0;
	mem_mib(&rss0, &hwm0);

	job.first = job.next = warmup;
	job.end = n;
	job.acked = 0;
	pthread_t t[64];
	double t0 = now(), c0 = cpu_s(), rss[4] = { 0 }, hwm;
	for (int i = 0; i < streams; i++)
		pthread_create(&t[i], NULL, stream_main, NULL);
	int timed = n - warmup;
	for (int q = 0; q < 4;) {
		pthread_mutex_lock(&job.mu);
		int done = job.acked + job.failed;
		pthread_mutex_unlock(&job.mu);
		if (done >= timed * (q + 1) / 4)
			mem_mib(&rss[q++], &hwm);
		else
			usleep(20000);
	}
	for (int i = 0; i < streams; i++)
		pthread_join(t[i], NULL);
	double elapsed = now() - t0, cpu = cpu_s() - c0;
	mem_mib(&rss[3], &hwm);
	vr_channel_destroy(job.ch);
	vr_rpc_shutdown();

	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	char log[65536] = "";
	FILE *f = fopen(err_path, "r");
	size_t got = f ? fread(log, 1, sizeof log - 1, f) : 0;
	log[got] = 0;
	if (f)
		fclose(f);
	double dec = field(log, "decode "), copy = field(log, "copy "),
	       net = field(log, "network "), store = field(log, "store ");
	double imgs = field(log, "executor: ");
	/* "... backend NAME: DEVICE" (featured's model line) */
	const char *dev = strstr(log, "; backend ");
	char name[32] = "", device[200] = "";
	if (dev)
		sscanf(dev + 10, "%31[^:]: %199[^\n]", name, device);

	double rate = job.acked / elapsed;
	printf("featured %s layer %s at %s px, batch %s, %d streams x %d per call, %d images "
	       "(+%d warm-up) of %s\n", arch, layer, size, batch, streams, job.per_call, timed, warmup,
	       dir);
	printf("  backend %s: %s\n", name, device);
	printf("  start-up (new model: init + save weights) %.2f s\n", startup);
	printf("  end to end: %d acked in %.2f s = %.1f images/s (%d refused or failed); daemon CPU "
	       "%.1f ms/image (user + system, all its threads)\n", job.acked, elapsed, rate, job.failed,
	       1e3 * cpu / job.acked);
	printf("  daemon split over %.0f images (warm-up included): decode %.3f s (%.2f ms/img, "
	       "on the decode pool), copy %.3f s, network %.3f s (%.2f ms/img = %.1f img/s), "
	       "store %.3f s (%.2f ms/img)\n", imgs, dec, 1e3 * dec / imgs, copy, net,
	       1e3 * net / imgs, imgs / net, store, 1e3 * store / imgs);
	printf("  memory: VmRSS after warm-up %.0f MiB; at 25/50/75/100%% of the ingest %.0f / %.0f / "
	       "%.0f / %.0f MiB; VmHWM (peak) %.0f MiB\n", rss0, rss[0], rss[1], rss[2], rss[3], hwm);
	printf("{\"impl\": \"visrec\", \"backend\": \"%s\", \"precision\": \"%s\", \"batch\": %s, "
	       "\"arch\": \"%s\", \"layer\": \"%s\", \"images\": %d, "
	       "\"images_per_s\": %.2f, \"cpu_ms_per_image\": %.2f, \"decode_ms\": %.3f, \"network_ms\": %.3f, \"store_ms\": %.3f, "
	       "\"network_images_per_s\": %.2f, \"rss_mib\": %.0f, \"hwm_mib\": %.0f}\n",
	       name, precision, batch, arch, layer, timed, rate, 1e3 * cpu / job.acked, 1e3 * dec / imgs, 1e3 * net / imgs, 1e3 * store / imgs,
	       imgs / net, rss[3], hwm);
	if (!data) {
		nftw(datadir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		unlink(err_path);  /* the daemon's log, read above */
	}
	for (int i = 0; i < n; i++)
		free(im[i].data);
	free(im);
	return job.failed ? 1 : 0;
}
