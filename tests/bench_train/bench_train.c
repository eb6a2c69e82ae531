/* bench_train: training throughput of rankd's trainer (triples per second)
 * on a synthetic set shaped like the tutorial's Wikimedia data (1,079
 * users, 9,633 items, about 97k interactions, heavy-tailed activity and
 * popularity, random features).
 *
 *   bench_train MODE [--threads T] [--seconds S] [--batch B] [--k K]
 *               [--k2 K'] [--f F] [--optim adam|sgd] [--path auto|items|users]
 *   MODE: bpr         BPR-MF, Hogwild SGD
 *         bpr-mb      BPR-MF, minibatch (Adam by default)
 *         vbpr        VBPR, minibatch (Adam by default)
 *         vbpr-hog    VBPR, Hogwild SGD
 *         sampler     the sampler alone, and its membership test:
 *                     binary search in the CSR against a per-user bitset
 *
 * OpenBLAS's thread count is set to T too, so T = 1 uses one core. Prints
 * one line "MODE threads=T ... triples_per_s=X" per timed run (three runs,
 * then the median). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "interactions.h"
#include "model.h"
#include "sampler.h"
#include "trainer.h"

void openblas_set_num_threads(int n);

enum { USERS = 1079, ITEMS = 9633, INTERACTIONS = 97000 };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Activity: lognormal-like degrees (min 4, a few heavy users), items drawn
 * from a Zipf-like popularity; duplicates dropped. */
static void make_data(rk_csr *c)
{
	rk_rng rng;
	rk_rng_seed(&rng, 2021, 0);
	double deg[USERS], sum = 0;
	for (int u = 0; u < USERS; u++) {
		double z = 0;
		for (int k = 0; k < 12; k++)
			z += rk_rng_float(&rng);
		deg[u] = exp(2.8 + 1.35 * (z - 6));
		sum += deg[u];
	}
	double *cum = malloc(ITEMS * sizeof(double)), acc = 0;
	for (int i = 0; i < ITEMS; i++)
		cum[i] = acc += 1.0 / pow(i + 10.0, 0.9);
	uint8_t *mark = calloc(ITEMS, 1);
	c->n_users = USERS;
	c->n_items = ITEMS;
	c->off = calloc(USERS + 1, sizeof(uint64_t));
	c->item = malloc(2 * INTERACTIONS * sizeof(uint32_t));
	c->ts = calloc(2 * INTERACTIONS, sizeof(int64_t));
	uint64_t o = 0;
	for (int u = 0; u < USERS; u++) {
		int d = (int)(deg[u] * (INTERACTIONS - 4.0 * USERS) / sum) + 4;
		if (d > 3544)
			d = 3544;
		memset(mark, 0, ITEMS);
		for (int k = 0; k < d; k++) {
			double r = rk_rng_float(&rng) * acc;
			int lo = 0, hi = ITEMS - 1;
			while (lo < hi) {
				int mid = (lo + hi) / 2;
				if (cum[mid] < r)
					lo = mid + 1;
				else
					hi = mid;
			}
			mark[lo] = 1;
		}
		for (int i = 0; i < ITEMS; i++)
			if (mark[i])
				c->item[o++] = (uint32_t)i;
		c->off[u + 1] = o;
	}
	c->nnz = o;
	free(cum);
	free(mark);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void bench_sampler(const rk_csr *c, double seconds)
{
	rk_sampler *s;
	if (rk_sampler_create(&s, c, NULL))
		return;
	enum { N = 1 << 16 };
	uint32_t *u = malloc(3 * N * sizeof(uint32_t)), *i = u + N, *j = i + N;
	rk_rng rng;
	rk_rng_seed(&rng, 1, 0);
	double runs[3];
	for (int r = 0; r < 3; r++) {
		double t0 = now_s();
		uint64_t n = 0;
		while (now_s() - t0 < seconds) {
			rk_sampler_fill(s, &rng, N, u, i, j);
			n += N;
		}
		runs[r] = n / (now_s() - t0);
		printf("sampler run=%d triples_per_s=%.0f\n", r, runs[r]);
	}
	qsort(runs, 3, sizeof(double), cmp_double);
	printf("sampler median triples_per_s=%.0f\n", runs[1]);
	/* Membership alone: random (user, item) probes. */
	size_t words = (ITEMS + 63) / 64;
	uint64_t *bits = calloc((size_t)USERS * words, sizeof(uint64_t));
	for (uint32_t x = 0; x < USERS; x++)
		for (uint64_t k = c->off[x]; k < c->off[x + 1]; k++)
			bits[x * words + c->item[k] / 64] |= 1ull << (c->item[k] % 64);
	for (int variant = 0; variant < 2; variant++) {
		uint64_t hits = 0, n = 0;
		double t0 = now_s();
		while (now_s() - t0 < seconds) {
			for (int k = 0; k < N; k++) {
				uint32_t uu = rk_rng_below(&rng, USERS), ii = rk_rng_below(&rng, ITEMS);
				hits += variant ? (bits[uu * words + ii / 64] >> (ii % 64)) & 1 :
					(uint64_t)rk_csr_has(c, uu, ii);
			}
			n += N;
		}
		printf("membership %s probes_per_s=%.0f (hits %llu)\n",
		       variant ? "bitset" : "binary_search", n / (now_s() - t0),
		       (unsigned long long)hits);
	}
	free(bits);
	free(u);
	rk_sampler_free(s);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_train bpr|bpr-mb|vbpr|vbpr-hog|sampler [--threads T] "
			"[--seconds S] [--batch B] [--k K] [--k2 K'] [--f F] [--optim adam|sgd]\n");
		return 2;
	}
	const char *mode = argv[1];
	int threads = 1, batch = 42000, k = -1, k2 = 100, f = 2048;
	double seconds = 3;
	const char *optim = "adam";
	enum rk_vis_path path = RK_VIS_AUTO;
	for (int a = 2; a + 1 < argc; a += 2) {
		if (!strcmp(argv[a], "--threads"))
			threads = atoi(argv[a + 1]);
		else if (!strcmp(argv[a], "--seconds"))
			seconds = atof(argv[a + 1]);
		else if (!strcmp(argv[a], "--batch"))
			batch = atoi(argv[a + 1]);
		else if (!strcmp(argv[a], "--k"))
			k = atoi(argv[a + 1]);
		else if (!strcmp(argv[a], "--k2"))
			k2 = atoi(argv[a + 1]);
		else if (!strcmp(argv[a], "--f"))
			f = atoi(argv[a + 1]);
		else if (!strcmp(argv[a], "--optim"))
			optim = argv[a + 1];
		else if (!strcmp(argv[a], "--path"))
			path = !strcmp(argv[a + 1], "items") ? RK_VIS_ITEMS :
			       !strcmp(argv[a + 1], "users") ? RK_VIS_USERS : RK_VIS_AUTO;
	}
	openblas_set_num_threads(threads);
	rk_csr c;
	make_data(&c);
	if (!strcmp(mode, "sampler")) {
		bench_sampler(&c, seconds / 3);
		rk_csr_free(&c);
		return 0;
	}
	int vbpr = !strncmp(mode, "vbpr", 4);
	int hog = !strcmp(mode, "bpr") || !strcmp(mode, "vbpr-hog");
	rk_model_dims d = {vbpr ? RK_MODEL_VBPR : RK_MODEL_BPR, USERS, ITEMS,
			   (uint32_t)(k >= 0 ? k : vbpr ? 200 : 64), vbpr ? (uint32_t)k2 : 0,
			   vbpr ? (uint32_t)f : 0};
	rk_model *m;
	if (rk_model_create(&m, &d)) {
		fprintf(stderr, "model create failed\n");
		return 1;
	}
	rk_model_init(m, 1);
	float *feat = NULL;
	if (vbpr) {
		rk_rng rng;
		rk_rng_seed(&rng, 7, 0);
		feat = malloc((size_t)ITEMS * f * sizeof(float));
		for (size_t x = 0; x < (size_t)ITEMS * f; x++) /* ReLU-like: half zeros */
			feat[x] = fmaxf(0.0f, rk_rng_float(&rng) - 0.5f);
	}
	rk_train_config cfg;
	rk_train_config_default(&cfg, d.kind);
	cfg.threads = (uint32_t)threads;
	cfg.algo = hog ? RK_ALGO_HOGWILD : RK_ALGO_MINIBATCH;
	cfg.optim = hog || !strcmp(optim, "sgd") ? RK_OPT_SGD : RK_OPT_ADAM;
	cfg.batch = (uint32_t)batch;
	cfg.visual_path = path;
	if (!hog) {
		cfg.lr = cfg.optim == RK_OPT_ADAM ? 1e-3f : 1e-4f;
		cfg.lambda = cfg.lambda_e = 1e-4f; /* the tutorial's weight decay */
	}
	rk_trainer *t;
	int rc = rk_trainer_create(&t, m, &c, NULL, feat, &cfg);
	if (rc) {
		fprintf(stderr, "trainer create failed: %d\n", rc);
		return 1;
	}
	/* A chunk per timing call: whole batches, about 0.2 s of work. */
	uint64_t chunk = hog ? (vbpr ? 2000 * (uint64_t)threads : 400000 * (uint64_t)threads) :
		(uint64_t)batch * (vbpr ? 1 : 10);
	double loss;
	rk_trainer_train(t, chunk, &loss); /* warm-up: first touch of buffers */
	double runs[3];
	for (int r = 0; r < 3; r++) {
		double t0 = now_s();
		uint64_t n = 0;
		while (now_s() - t0 < seconds / 3) {
			rk_trainer_train(t, chunk, &loss);
			n += hog ? chunk : (chunk + batch - 1) / batch * batch;
		}
		runs[r] = n / (now_s() - t0);
		printf("%s threads=%d batch=%d k=%u k2=%u f=%u optim=%s run=%d loss=%.4f "
		       "triples_per_s=%.0f\n", mode, threads, hog ? 1 : batch, d.k, d.k2, d.f,
		       cfg.optim == RK_OPT_ADAM ? "adam" : "sgd", r, loss, runs[r]);
	}
	qsort(runs, 3, sizeof(double), cmp_double);
	printf("%s threads=%d median triples_per_s=%.0f\n", mode, threads, runs[1]);
	rk_trainer_free(t);
	rk_model_free(m);
	free(feat);
	rk_csr_free(&c);
	return 0;
}
