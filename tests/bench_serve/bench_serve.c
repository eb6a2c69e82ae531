/* Benchmark of rankd's serving math in process: top-k over an item matrix
 * of VBPR's shape (D = 1 + 200 + 100), for one catalogue size per run.
 *
 *   bench_serve N_ITEMS [--queries Q] [--batch B] [--dump DIR] [--pass P]
 *
 * Reports the memory-bandwidth floor of one exact scan (the fp32 matrix's
 * bytes at the read speed measured here in the same run, and at the
 * documented 18 GB/s), single-query p50/p99 for the exact fp32 scan and
 * for the int8 and fp16 first passes + exact re-rank at oversamplings c =
 * 1 .. 16 (each with its recall@20 against exact over Q users, and the
 * smallest c whose int8 recall reaches 0.999: how the default margin was
 * chosen), batched users/s (rk_topk_batch exact and with the int8 first
 * pass, one and two threads, the pass's recall against exact; the CPU time
 * a user of the one-thread exact run), build time
 * and peak RSS; the last
 * line is the same as JSON for run.sh (approx_*: int8 at the default c). --dump writes, for the PyTorch peer (torch_peer.py),
 * DIR/items-N.f32 (the matrix, N × D float32 row-major), DIR/users-N.f32
 * (max(Q, B) user rows) and DIR/top20-N.u32 (the exact top-20 of the first
 * Q users), once: a file of the right size is kept. --pass int8|fp16|int4
 * measures that first pass only (besides the exact scan it is checked
 * against): a recall run over many users costs less. */
#include "index.h"
#include "topk.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define D 301
#define K 20
#define CLUSTERS 256
#define GEN_ROWS 4096

static uint64_t rng_state = 12345;

static inline uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Two uniforms in [-1, 1) from one draw. */
static inline void rng2(float *a, float *b)
{
	uint64_t x = rng();
	*a = (float)(uint32_t)x * (2.0f / 4294967296.0f) - 1.0f;
	*b = (float)(uint32_t)(x >> 32) * (2.0f / 4294967296.0f) - 1.0f;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* This thread's CPU time: on shared cores the wall clock counts other
 * processes' turns, CPU time mostly does not. */
static double cpu_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof *v, cmp_double);
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

/* Rows shaped like VBPR's folded item rows: a bias column, 200 latent and
 * 100 visual factors at different scales, items in taste clusters. */
static void gen_rows(const float *centres, float *rows, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		const float *c = centres + (size_t)(rng() % CLUSTERS) * D;
		float *r = rows + (size_t)i * D;
		float a, b;
		rng2(&a, &b);
		r[0] = 2.0f * a;
		for (int j = 1; j < D; j += 2) {
			rng2(&a, &b);
			r[j] = (j <= 200 ? 0.1f : 0.5f) * (c[j] + 0.8f * a);
			if (j + 1 < D)
				r[j + 1] = (j + 1 <= 200 ? 0.1f : 0.5f) * (c[j + 1] + 0.8f * b);
		}
	}
}

/* Opens DIR/WHAT-N.EXT for writing, or returns NULL with *skip set when a
 * file of the expected size is already there (the data are deterministic). */
static FILE *dump_open(const char *dir, const char *what, uint32_t n, const char *ext, uint64_t bytes, int *skip)
{
	char path[4096];
	struct stat st;
	snprintf(path, sizeof path, "%s/%s-%u.%s", dir, what, n, ext);
	*skip = stat(path, &st) == 0 && (uint64_t)st.st_size == bytes;
	if (*skip)
		return NULL;
	FILE *f = fopen(path, "wb");
	if (!f)
		fprintf(stderr, "cannot write %s\n", path);
	return f;
}

/* Read speed over the fp32 rows (chunks of rows lo .. hi): the floor of
 * any scan is its bytes at this speed. */
__attribute__((target("avx2")))
static double read_pass(const struct rk_index_view *v, uint32_t lo, uint32_t hi, float *sink)
{
	__m256 acc = _mm256_setzero_ps();
	uint32_t rows_per = 1u << v->chunk_shift;
	double t0 = now();
	for (uint32_t at = lo; at < hi; at += rows_per) {
		uint32_t nr = hi - at < rows_per ? hi - at : rows_per;
		const float *p = rk_index_row(v, at);
		size_t len = (size_t)nr * v->stride;
		__m256 a1 = _mm256_setzero_ps(), a2 = a1, a3 = a1;
		for (size_t j = 0; j + 32 <= len; j += 32) {
			acc = _mm256_add_ps(acc, _mm256_load_ps(p + j));
			a1 = _mm256_add_ps(a1, _mm256_load_ps(p + j + 8));
			a2 = _mm256_add_ps(a2, _mm256_load_ps(p + j + 16));
			a3 = _mm256_add_ps(a3, _mm256_load_ps(p + j + 24));
		}
		acc = _mm256_add_ps(_mm256_add_ps(acc, a1), _mm256_add_ps(a2, a3));
	}
	double t = now() - t0;
	float tmp[8];
	_mm256_storeu_ps(tmp, acc);
	*sink += tmp[0];
	return t;
}

struct reader {
	const struct rk_index_view *v;
	uint32_t lo, hi;
	float sink;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	read_pass(r->v, r->lo, r->hi, &r->sink);
	return NULL;
}

/* The best of three reads of the whole fp32 matrix by threads threads,
 * each a contiguous share of the chunks (a split scan's pattern). */
static double read_speed(const struct rk_index_view *v, int threads, float *sink)
{
	double best = 1e30;
	uint32_t rows_per = 1u << v->chunk_shift, chunks = (v->n + rows_per - 1) / rows_per;
	for (int rep = 0; rep < 3; rep++) {
		pthread_t t[16];
		struct reader rd[16];
		double t0 = now();
		for (int i = 0; i < threads; i++) {
			uint32_t c0 = chunks * (uint32_t)i / (uint32_t)threads, c1 = chunks * (uint32_t)(i + 1) / (uint32_t)threads;
			rd[i] = (struct reader){ v, c0 * rows_per, c1 * rows_per < v->n ? c1 * rows_per : v->n, 0 };
			if (i && pthread_create(&t[i], NULL, reader_main, &rd[i]))
				return 1e30;
		}
		reader_main(&rd[0]);
		for (int i = 1; i < threads; i++)
			pthread_join(t[i], NULL);
		double x = now() - t0;
		best = x < best ? x : best;
		for (int i = 0; i < threads; i++)
			*sink += rd[i].sink;
	}
	return best;
}

/* Oversamplings measured per first pass (int8, fp16, int4), and the
 * recall@20 the margin must keep. */
#define N_C 6
#define N_PASS 3
static const int cs[N_PASS][N_C] = { { 1, 2, 4, 8, 16, 32 }, { 1, 2, 4, 8, 16, 32 }, { 4, 8, 16, 32, 64, 128 } };
static const char *const pass_name[N_PASS] = { "int8", "fp16", "int4" };
#define RECALL_GOAL 0.999

struct pass_stats {
	double p50, p99, recall;
};

/* Times queries single queries (two warm-ups first) into lat (ms), each
 * with its own acquire/release as a handler does. approx 0 without a pool:
 * the exact scan, whose lists go into exact; else the first pass (pass: 0
 * int8, 1 fp16, 2 int4) with oversampling approx, or the exact scan split over the pool's
 * helpers too, and its recall@K against exact into *recall.
 * Returns 0, or 1 when a query fails. */
static int run_queries(struct rk_index *ix, struct rk_topk_ws *ws, const float *users, uint32_t queries,
		       int approx, int pass, struct rk_scan_pool *pool, struct rk_hit *exact, double *lat,
		       double *recall)
{
	struct rk_hit hits[K];
	struct rk_index_view v;
	size_t found = 0, n_hits;
	for (uint32_t q = 0; q < queries + 2; q++) {
		uint32_t u = q < 2 ? q : q - 2;
		struct rk_topk_req req = { users + (size_t)u * D, K, NULL, 0, NULL, 0, approx, pass == 1, pool,
					   1 + rk_scan_pool_helpers(pool), pass == 2 };
		double a = now();
		rk_index_acquire(ix, &v);
		int rc = rk_topk(&v, &req, ws, approx || pool ? hits : exact + (size_t)u * K, K, &n_hits);
		rk_index_release(&v);
		double b = now();
		if (rc || n_hits != K)
			return 1;
		if (q < 2)
			continue;
		lat[u] = (b - a) * 1e3;
		if (approx || pool)
			for (int i = 0; i < K; i++)
				for (int j = 0; j < K; j++)
					found += hits[i].item == exact[(size_t)u * K + j].item;
	}
	*recall = (double)found / ((double)queries * K);
	return 0;
}

/* One thread's share of a batched run: users[lo .. hi) in one
 * rk_topk_batch call with its own scratch. */
struct batch_part {
	pthread_t t;
	const struct rk_index_view *v;
	struct rk_topk_batch_req req;
	struct rk_topk_ws *ws;
	struct rk_hit *out;
	size_t *n_out;
	int rc;
};

static void *batch_main(void *arg)
{
	struct batch_part *b = arg;
	b->rc = rk_topk_batch(b->v, &b->req, b->ws, b->out, b->n_out);
	return NULL;
}

/* Seconds for rk_topk_batch over all users split between threads (1 or 2),
 * exact (c = 0) or with the int8 first pass at c (median of 3 after a
 * warm-up); the hits go to out (K per user). cpu, when not NULL, gets the
 * median CPU seconds of the calling thread (its share with 2 threads). */
static double batch_split(const struct rk_index_view *v, const float *users, uint32_t n_users, int c,
			  int threads, struct rk_topk_ws **ws, struct rk_hit *out, size_t *n_out, double *cpu)
{
	double ts[3], cs3[3];
	for (int rep = -1; rep < 3; rep++) {
		struct batch_part part[2];
		double t0 = now(), c0 = cpu_now();
		for (int i = 0; i < threads; i++) {
			uint32_t lo = n_users / threads * i, hi = i + 1 == threads ? n_users : n_users / threads * (i + 1);
			part[i] = (struct batch_part){ .v = v, .ws = ws[i], .out = out + (size_t)lo * K,
						       .n_out = n_out + lo };
			part[i].req = (struct rk_topk_batch_req){ users + (size_t)lo * D, hi - lo, K, NULL, NULL, c };
			if (i)
				pthread_create(&part[i].t, NULL, batch_main, &part[i]);
		}
		batch_main(&part[0]);
		double c1 = cpu_now();
		for (int i = 1; i < threads; i++)
			pthread_join(part[i].t, NULL);
		for (int i = 0; i < threads; i++)
			if (part[i].rc)
				return -1;
		if (rep >= 0) {
			ts[rep] = now() - t0;
			cs3[rep] = c1 - c0;
		}
	}
	if (cpu)
		*cpu = pct(cs3, 3, 0.5);
	return pct(ts, 3, 0.5);
}

int main(int argc, char **argv)
{
	uint32_t n = 0, queries = 0, batch = 0;
	const char *dump = NULL, *only = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--queries") && i + 1 < argc)
			queries = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			batch = (uint32_t)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--dump") && i + 1 < argc)
			dump = argv[++i];
		else if (!strcmp(argv[i], "--pass") && i + 1 < argc)
			only = argv[++i];
		else
			n = (uint32_t)strtoul(argv[i], NULL, 10);
	}
	if (n == 0) {
		fprintf(stderr, "usage: bench_serve N_ITEMS [--queries Q] [--batch B] [--dump DIR] [--pass int8|fp16|int4]\n");
		return 2;
	}
	if (!queries)
		queries = n <= 100000 ? 2000 : 100;
	if (!batch)
		batch = n <= 100000 ? 4096 : 256;

	struct rk_index *ix;
	struct rk_topk_ws *ws;
	if (rk_index_create(D, NULL, &ix) || rk_topk_ws_create(&ws))
		return 1;
	float *centres = malloc((size_t)CLUSTERS * D * sizeof(float));
	float *buf = malloc((size_t)GEN_ROWS * D * sizeof(float));
	for (size_t j = 0; j < (size_t)CLUSTERS * D; j += 2) /* CLUSTERS × D is even */
		rng2(&centres[j], &centres[j + 1]);

	/* Build: generate in small blocks, append, dump. */
	int skip = 1;
	FILE *df = dump ? dump_open(dump, "items", n, "f32", (uint64_t)n * D * sizeof(float), &skip) : NULL;
	double gen = 0, t0 = now();
	for (uint32_t at = 0; at < n; at += GEN_ROWS) {
		uint32_t nr = n - at < GEN_ROWS ? n - at : GEN_ROWS;
		double g0 = now();
		gen_rows(centres, buf, nr);
		gen += now() - g0;
		if (rk_index_append(ix, buf, nr, NULL))
			return 1;
		if (df)
			fwrite(buf, sizeof(float), (size_t)nr * D, df);
	}
	double build = now() - t0 - gen;
	if (df)
		fclose(df);

	uint32_t n_users = queries > batch ? queries : batch;
	float *users = malloc((size_t)n_users * D * sizeof(float));
	for (uint32_t u = 0; u < n_users; u++) {
		float *r = users + (size_t)u * D;
		r[0] = 1;
		for (int j = 1; j < D; j += 2) {
			float a, b;
			rng2(&a, &b);
			r[j] = a;
			if (j + 1 < D)
				r[j + 1] = b;
		}
	}
	df = dump ? dump_open(dump, "users", n, "f32", (uint64_t)n_users * D * sizeof(float), &skip) : NULL;
	if (df) {
		fwrite(users, sizeof(float), (size_t)n_users * D, df);
		fclose(df);
	}

	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	float sink = 0;
	double bytes = (double)v.n * v.stride * sizeof(float);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int nthr = ncpu > 16 ? 16 : ncpu < 1 ? 1 : (int)ncpu;
	double rd = read_speed(&v, 1, &sink), rd_all = read_speed(&v, nthr, &sink);
	rk_index_release(&v);

	/* Single queries, each with its own acquire/release as a handler does:
	 * the exact scan, then each first pass (int8, fp16) at each
	 * oversampling c, with its recall@20 against the exact lists. */
	struct rk_hit *exact = malloc((size_t)queries * K * sizeof *exact);
	double *lat = malloc(queries * sizeof(double));
	double p50, p99, recall;
	struct pass_stats ps[N_PASS][N_C];
	if (run_queries(ix, ws, users, queries, 0, 0, NULL, exact, lat, &recall))
		return 1;
	p50 = pct(lat, queries, 0.5);
	p99 = pct(lat, queries, 0.99);
	int chosen[N_PASS] = { 0 }; /* per pass the smallest c whose recall reaches RECALL_GOAL */
	for (int m = 0; m < N_PASS; m++)
		for (int c = 0; c < N_C; c++) {
			if (only && strcmp(only, pass_name[m])) {
				ps[m][c] = (struct pass_stats){ 0, 0, 0 };
				continue;
			}
			if (run_queries(ix, ws, users, queries, cs[m][c], m, NULL, exact, lat, &ps[m][c].recall))
				return 1;
			ps[m][c].p50 = pct(lat, queries, 0.5);
			ps[m][c].p99 = pct(lat, queries, 0.99);
			if (!chosen[m] && ps[m][c].recall >= RECALL_GOAL)
				chosen[m] = cs[m][c];
		}
	int dc = 0, dc4 = 0; /* RK_TOPK_APPROX_DEFAULT's and _INT4's places in cs */
	while (dc + 1 < N_C && cs[0][dc] != RK_TOPK_APPROX_DEFAULT)
		dc++;
	while (dc4 + 1 < N_C && cs[2][dc4] != RK_TOPK_APPROX_INT4)
		dc4++;
	/* Low load: the same queries split over every core (topk.h's pool),
	 * exact, then int8 and fp16 at the default c and int4 at its own; the
	 * lists must not change. */
	struct rk_scan_pool *pool;
	if (rk_scan_pool_create(nthr - 1, &pool))
		return 1;
	struct pass_stats sp[1 + N_PASS];
	for (int m = 0; m < 1 + N_PASS; m++) {
		if (only && (m == 0 || strcmp(only, pass_name[m - 1]))) {
			sp[m] = (struct pass_stats){ 0, 0, 0 };
			continue;
		}
		int c = m == 0 ? 0 : m == 3 ? RK_TOPK_APPROX_INT4 : RK_TOPK_APPROX_DEFAULT;
		if (run_queries(ix, ws, users, queries, c, m ? m - 1 : 0, pool, exact, lat, &sp[m].recall))
			return 1;
		sp[m].p50 = pct(lat, queries, 0.5);
		sp[m].p99 = pct(lat, queries, 0.99);
	}
	rk_scan_pool_destroy(pool);
	df = dump ? dump_open(dump, "top20", n, "u32", (uint64_t)queries * K * sizeof(uint32_t), &skip) : NULL;
	if (df) {
		for (size_t i = 0; i < (size_t)queries * K; i++)
			fwrite(&exact[i].item, sizeof(uint32_t), 1, df);
		fclose(df);
	}

	/* Batched (rk_topk_batch), exact and with the int8 first pass at the
	 * default c, on one thread and on two (users halved, as two
	 * RecommendBatch calls in rankd); the int8 pass's recall@20 against the
	 * exact lists. */
	struct rk_hit *bout = malloc((size_t)batch * K * sizeof *bout);
	size_t *bn = malloc(batch * sizeof(size_t));
	struct rk_hit *aout = malloc((size_t)batch * K * sizeof *aout);
	size_t *an = malloc(batch * sizeof(size_t));
	struct rk_topk_ws *bws[2] = { ws, NULL };
	rk_index_acquire(ix, &v);
	if (rk_topk_ws_create(&bws[1]))
		return 1;
	double bc1;
	double bt1 = batch_split(&v, users, batch, 0, 1, bws, bout, bn, &bc1);
	double bt = batch_split(&v, users, batch, 0, 2, bws, bout, bn, NULL);
	double at1 = batch_split(&v, users, batch, RK_TOPK_APPROX_DEFAULT, 1, bws, aout, an, NULL);
	double at2 = batch_split(&v, users, batch, RK_TOPK_APPROX_DEFAULT, 2, bws, aout, an, NULL);
	if (bt1 < 0 || bt < 0 || at1 < 0 || at2 < 0)
		return 1;
	size_t bfound = 0;
	for (uint32_t u = 0; u < batch; u++)
		for (size_t a = 0; a < an[u]; a++)
			for (size_t b = 0; b < bn[u]; b++)
				if (aout[(size_t)u * K + a].item == bout[(size_t)u * K + b].item) {
					bfound++;
					break;
				}
	double brecall = (double)bfound / ((double)batch * K);
	rk_topk_ws_destroy(bws[1]);
	free(aout);
	free(an);
	rk_index_release(&v);

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double floor_meas = rd * 1e3, floor_doc = bytes / 18e9 * 1e3;
	double b8 = (double)n * (((D + 63) & ~63) + 4), b4 = (double)n * (32 * ((D - 1 + 63) / 64) + 8);
	printf("items %u, D %d (stride %u), kernels %s, fp32 matrix %.1f MB + fp16 %.1f MB + int8 %.1f MB + int4 %.1f MB\n",
	       n, D, (D + 15) & ~15, rk_isa_name(rk_isa_active()), bytes / 1e6, bytes / 2e6, b8 / 1e6, b4 / 1e6);
	printf("build (append, incl. first touch) %.3f s for %u rows; data generation %.3f s (not counted)\n", build,
	       n, gen);
	printf("read speed over the fp32 rows: %.1f GB/s one thread, %.1f GB/s %d threads; floors of one scan "
	       "(one thread / all): exact %.2f / %.2f ms, int8 %.2f / %.2f ms, int4 %.2f / %.2f ms "
	       "(exact %.2f ms at 18 GB/s)\n", bytes / rd / 1e9, bytes / rd_all / 1e9, nthr, floor_meas, rd_all * 1e3,
	       b8 / bytes * rd * 1e3, b8 / bytes * rd_all * 1e3, b4 / bytes * rd * 1e3, b4 / bytes * rd_all * 1e3,
	       floor_doc);
	printf("top-%d single query, exact fp32: p50 %.3f ms  p99 %.3f ms  (%.2fx the measured floor)\n", K, p50,
	       p99, p50 / floor_meas);
	for (int m = 0; m < N_PASS; m++)
		for (int c = 0; c < N_C; c++)
			printf("top-%d single query, %s pass + exact re-rank of k x %d: p50 %.3f ms  p99 %.3f ms  "
			       "recall@20 %.4f over %u users\n", K, pass_name[m], cs[m][c], ps[m][c].p50,
			       ps[m][c].p99, ps[m][c].recall, queries);
	static const char *const split_name[] = { "exact fp32", "int8 + re-rank", "fp16 + re-rank", "int4 + re-rank" };
	for (int m = 0; m < 1 + N_PASS; m++)
		printf("top-%d single query split over %d threads, %s%s: p50 %.3f ms  p99 %.3f ms  recall@20 %.4f\n",
		       K, nthr, split_name[m], m ? " (default c)" : "", sp[m].p50, sp[m].p99, sp[m].recall);
	for (int m = 0; m < N_PASS; m++)
		printf("%s margin: the smallest c with recall@20 >= %.3f here is %d (default %d)\n", pass_name[m],
		       RECALL_GOAL, chosen[m], m == 2 ? RK_TOPK_APPROX_INT4 : RK_TOPK_APPROX_DEFAULT);
	printf("batched exact (int8 bound + exact re-rank), %u users: 1 thread %.0f users/s (%.1f us of CPU a "
	       "user), 2 threads %.0f users/s (medians of 3)\n", batch, batch / bt1, bc1 / batch * 1e6, batch / bt);
	printf("batched int8 pass + exact re-rank of k x %d, %u users: 1 thread %.0f users/s, 2 threads %.0f "
	       "users/s; recall@20 %.4f against exact\n", RK_TOPK_APPROX_DEFAULT, batch, batch / at1,
	       batch / at2, brecall);
	printf("peak RSS %.1f MB\n", (double)ru.ru_maxrss / 1024);
	printf("{\"impl\":\"visrec\",\"items\":%u,\"floor_ms\":%.3f,\"floor_all_ms\":%.3f,\"floor18_ms\":%.3f,"
	       "\"exact_p50_ms\":%.4f,\"exact_p99_ms\":%.4f,\"approx_p50_ms\":%.4f,\"approx_p99_ms\":%.4f,"
	       "\"recall20\":%.4f,\"fp16_p50_ms\":%.4f,\"fp16_recall20\":%.4f,\"int4_p50_ms\":%.4f,"
	       "\"int4_recall20\":%.4f,\"int8_c_chosen\":%d,\"int4_c_chosen\":%d,",
	       n, floor_meas, rd_all * 1e3, floor_doc, p50, p99, ps[0][dc].p50, ps[0][dc].p99, ps[0][dc].recall,
	       ps[1][dc].p50, ps[1][dc].recall, ps[2][dc4].p50, ps[2][dc4].recall, chosen[0], chosen[2]);
	for (int m = 0; m < N_PASS; m += 2)
		for (int c = 0; c < N_C; c++)
			printf("\"%s_c%d_recall\":%.4f,\"%s_c%d_p50_ms\":%.4f,", pass_name[m], cs[m][c], ps[m][c].recall,
			       pass_name[m], cs[m][c], ps[m][c].p50);
	printf("\"split_exact_p50_ms\":%.4f,\"split_int8_p50_ms\":%.4f,\"split_fp16_p50_ms\":%.4f,"
	       "\"split_int4_p50_ms\":%.4f,\"split_recall20\":%.4f,\"split_int4_recall20\":%.4f,", sp[0].p50,
	       sp[1].p50, sp[2].p50, sp[3].p50, sp[0].recall, sp[3].recall);
	printf("\"batch_users\":%u,\"batch_users_per_s\":%.1f,\"batch_1t_users_per_s\":%.1f,\"batch_1t_cpu_us\":%.2f,"
	       "\"batch_int8_users_per_s\":%.1f,\"batch_int8_1t_users_per_s\":%.1f,\"batch_int8_recall20\":%.4f,"
	       "\"build_s\":%.3f,\"rss_mb\":%.1f}\n", batch, batch / bt, batch / bt1, bc1 / batch * 1e6, batch / at2,
	       batch / at1,
	       brecall, build, (double)ru.ru_maxrss / 1024);
	if (sink == 12345.678f)
		printf("\n");
	free(bout);
	free(bn);
	free(lat);
	free(exact);
	free(users);
	free(buf);
	free(centres);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
	return 0;
}
