/* trainer: BPR-MF and VBPR training on the CPU; the contract and the two
 * algorithms are described in trainer.h. One concept at 1,300 lines: the
 * thread pool, both algorithms' phases and the validation all work on the
 * one trainer state below, and split apart they would share it through a
 * private header as wide as the struct.
 *
 * DESIGN
 * Threads: the caller's thread (tid 0) and threads - 1 workers started by
 * rk_trainer_create, parked on a condition variable between phases. A
 * phase is a function and a number of chunks (a few per thread): the
 * caller publishes them under the mutex with a new generation number and
 * wakes the workers; every thread, the caller included, claims chunks
 * from one atomic counter tagged with the generation (so a worker that
 * wakes late cannot claim a later phase's chunk for an earlier function)
 * and runs fn(t, tid, chunk); the caller sleeps until the count of
 * finished chunks reaches the total. Chunks are claimed, not assigned, so
 * a thread the kernel descheduled (these cores are shared) holds back only
 * the chunk it is on. GEMMs run on the caller's thread between phases,
 * with OpenBLAS's threads, while ours are parked.
 * Ownership: a chunk is a range of triples (forward), of user and item
 * rows (gradients), of feature columns (H), of each tensor (optimiser) or
 * of validation users, and only its runner writes there; per-thread
 * scratch (tls) is indexed by tid. Sums per row run over the row's triples
 * in triple order and nothing depends on which thread ran a chunk, so a
 * minibatch step gives the same parameters for any thread count. Hogwild
 * is the exception by design: its threads update the shared parameters
 * without locks and accept lost updates.
 * Ending: rk_trainer_free sets quit, wakes the workers and joins them.
 * Cancellation is an atomic flag read before every minibatch step and
 * every 256 Hogwild triples.
 *
 * A minibatch step: sample (threads, one PRNG stream per 4,096-triple
 * chunk) -> bucket the triples by user and by item (counting sort, serial)
 * and pick VBPR's side by its cost -> item side: gather the distinct
 * items' features when under 3/4 of the catalogue, P = F_d·[E|β'] (GEMM);
 * user side: W = [Θ|1]·[E|β']ᵀ (GEMM), the distinct (user, item) pairs per
 * item and their scores W_u·f_i (threads split the items) -> forward:
 * x_uij, g = σ(-x) per triple (threads split the triples) -> gradient rows
 * per user and per item (threads split the rows), G per distinct item or
 * c_ui per pair -> item side: d[E|β'] = F_dᵀ G (GEMM); user side:
 * H = Σ c_ui f_i (threads split the feature columns), d[E|β'] = Hᵀ[Θ|1]
 * and dΘ = H·[E|β'] (GEMMs) -> optimiser over the arena (threads split
 * each tensor). */
#include "trainer.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deadline.h"
#include "err.h"
#include "metrics.h"
#include "optim.h"

#define MAX_THREADS 64
#define CHUNKS_PER_THREAD 4
#define MAX_CHUNKS (CHUNKS_PER_THREAD * MAX_THREADS)
#define CHUNK 4096      /* triples per PRNG stream in a minibatch */
#define HOG_CHUNK 256   /* triples sampled at once by a Hogwild thread */
#define MIN_EPOCH 100000 /* default epoch floor: validation noise needs it */
#define EMPTY UINT32_MAX
#define USER_SIDE_BYTES ((size_t)64 << 20) /* bound on W and H each */
#define USER_SIDE_PENALTY 3.0 /* GEMM speed / speed of the per-pair passes */
#define USER_SIDE_L2 ((size_t)448 << 10) /* bytes of a W or H block */
#define FCOPY_MAX ((size_t)1 << 30) /* largest column-blocked feature copy */
#define VAL_STREAM (3ull << 62)
#define MB_STREAM (1ull << 62)
#define HOG_STREAM (2ull << 62)

/* Hot loops get AVX-512 and AVX2 clones picked at load time; the kernels
 * they call are inlined into each clone. */
#define HOT RK_HOT
/* Kernels are inlined into the clones, so they get the clone's ISA. */
#define INLINE static inline __attribute__((always_inline))

typedef void (*phase_fn)(rk_trainer *t, uint32_t tid, uint32_t chunk);

struct pool {
	pthread_t th[MAX_THREADS];
	uint32_t n;        /* threads, the caller's included */
	uint32_t started;  /* workers running */
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint32_t gen;      /* the phase; gen, fn, chunks and quit under mu */
	phase_fn fn;
	uint32_t chunks;
	int quit;
	_Atomic uint64_t next;   /* gen << 32 | the next chunk to claim */
	atomic_uint finished;    /* chunks of this phase done */
};

struct worker {
	rk_trainer *t;
	uint32_t tid;
};

/* Per-thread state, one cache line apart at least. */
struct tls {
	uint32_t *u, *i, *j; /* HOG_CHUNK triples (Hogwild) */
	float *scratch;      /* F + 2 (K' + 1) floats (Hogwild VBPR) */
	uint32_t *slot;      /* user side: compact user -> its pair, or EMPTY */
	float *vscores;      /* validation: a user's negatives' scores */
	char pad[64];
};

struct rk_trainer {
	rk_model *m;
	const rk_csr *train;
	const float *feat;
	rk_train_config cfg;
	rk_sampler *smp;
	struct pool pool;
	struct worker workers[MAX_THREADS];
	struct tls *tls;
	uint32_t nt;        /* threads, the caller's included */
	atomic_int cancel;
	float lr;
	uint64_t adam_t;    /* Adam steps taken */
	uint64_t steps;     /* minibatch steps taken (PRNG streams) */
	uint64_t hog_runs;  /* Hogwild calls (PRNG streams) */
	uint32_t k, k2, f, pw; /* pw = K' + 1, a row of P, G and [E | β'] */

	/* The current minibatch. */
	size_t n;
	uint32_t *bu, *bi, *bj; /* batch triples */
	float *g;               /* σ(-x) per triple */
	uint32_t *uoff, *ulist; /* triples by user: ulist[uoff[u] .. uoff[u+1]) */
	uint32_t *ioff, *ilist; /* (triple << 1 | negative) by item */
	uint32_t *fill;         /* counting-sort cursor, max(users, items) + 1 */
	uint32_t *pos;          /* item -> row of P and G */
	uint32_t *distinct;
	uint32_t n_rows;        /* rows of P and G this step */
	float *fd;              /* gathered feature rows, max_gather × F */
	uint32_t max_gather;
	const float *fmat;      /* feature rows of this step: feat or fd */
	float *P, *G;           /* n_items × pw */
	uint32_t nch;           /* chunks of a phase split by rows */
	uint32_t urange[MAX_CHUNKS + 1], irange[MAX_CHUNKS + 1];
	double chunk_loss[MAX_CHUNKS];

	/* VBPR, user side: W = [Θ|1]·[E|β']ᵀ per distinct user, one F-dim dot
	 * per distinct (user, item) pair, H = Σ c_ui f_i per user, then
	 * d[E|β'] = Hᵀ[Θ|1] and dΘ = H·E. */
	int user_side;          /* this step */
	uint32_t ucap;          /* most distinct users the user side takes */
	uint32_t n_du;
	uint32_t *du, *upos;    /* distinct users; user -> compact row or EMPTY */
	float *thc, *dthc;      /* ucap × pw: [θ_u, 1] and its gradient */
	float *W, *H;           /* ucap × F */
	uint32_t *npair;        /* pairs of item i: pair_*[ioff[i] .. + npair[i]) */
	uint32_t *pair_u;       /* 2B: compact user */
	float *pair_val, *pair_c;  /* 2B: W_u·f_i, Σ of ∂loss/∂x_ui */
	uint32_t *trip_pair;    /* 2B: (triple << 1 | negative) -> pair */
	uint32_t n_blk, *blk;   /* feature column blocks: [blk[b], blk[b+1]) */
	float *fcopy;           /* column-blocked copy of the features, or NULL */
	float *grad, *adam_m, *adam_v, *best;

	/* Hogwild */
	uint64_t hog_n;

	/* Validation */
	uint32_t n_val, n_neg;  /* n_neg 0: every item */
	uint32_t *val_user, *val_item, *val_neg;
	double *val_auc;
};

static void *alloc_floats(size_t n)
{
	size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
	return aligned_alloc(64, bytes);
}

/* ---- the thread pool ---- */

/* Claims and runs chunks of phase gen until none is left. */
static void run_chunks(rk_trainer *t, uint32_t tid, uint32_t gen, phase_fn fn, uint32_t chunks)
{
	struct pool *p = &t->pool;
	for (;;) {
		uint64_t v = atomic_load(&p->next);
		if ((uint32_t)(v >> 32) != gen || (uint32_t)v >= chunks)
			return;
		if (!atomic_compare_exchange_weak(&p->next, &v, v + 1))
			continue;
		fn(t, tid, (uint32_t)v);
		if (atomic_fetch_add(&p->finished, 1) + 1 == chunks) {
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->done);
			pthread_mutex_unlock(&p->mu);
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pool *p = &w->t->pool;
	uint32_t seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->quit && p->gen == seen)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit)
			break;
		seen = p->gen;
		phase_fn fn = p->fn;
		uint32_t chunks = p->chunks;
		pthread_mutex_unlock(&p->mu);
		run_chunks(w->t, w->tid, seen, fn, chunks);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Runs fn over chunks 0 .. chunks-1 on every thread and returns when all
 * are done. */
static void pool_run(rk_trainer *t, phase_fn fn, uint32_t chunks)
{
	struct pool *p = &t->pool;
	if (p->n == 1) {
		for (uint32_t c = 0; c < chunks; c++)
			fn(t, 0, c);
		return;
	}
	pthread_mutex_lock(&p->mu);
	uint32_t gen = ++p->gen;
	p->fn = fn;
	p->chunks = chunks;
	atomic_store(&p->finished, 0);
	atomic_store(&p->next, (uint64_t)gen << 32);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	run_chunks(t, 0, gen, fn, chunks);
	pthread_mutex_lock(&p->mu);
	while (atomic_load(&p->finished) < chunks)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

static int pool_start(rk_trainer *t, uint32_t n)
{
	struct pool *p = &t->pool;
	p->n = n;
	pthread_mutex_init(&p->mu, NULL);
	vr_cond_init(&p->go);
	vr_cond_init(&p->done);
	for (uint32_t k = 1; k < n; k++) {
		t->workers[k] = (struct worker){t, k};
		int e = pthread_create(&p->th[k], NULL, worker_main, &t->workers[k]);
		if (e)
			return -e;
		p->started++;
	}
	return 0;
}

static void pool_stop(struct pool *p)
{
	if (!p->n)
		return;
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (uint32_t k = 1; k <= p->started; k++)
		pthread_join(p->th[k], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
}

static void share(size_t n, uint32_t tid, uint32_t nt, size_t *a, size_t *b)
{
	*a = n * tid / nt;
	*b = n * (tid + 1) / nt;
}

/* ---- kernels ---- */

INLINE float dot_diff(const float *restrict a, const float *restrict b, const float *restrict c,
		      uint32_t n)
{
	float s = 0;
#pragma omp simd reduction(+ : s)
	for (uint32_t k = 0; k < n; k++)
		s += a[k] * (b[k] - c[k]);
	return s;
}

/* A dot of two long rows in four independent 16-float accumulators (GCC
 * vector extensions: AVX-512 registers in the v4 clone), so the sum is not
 * one dependency chain. */
typedef float v16sf __attribute__((vector_size(64)));
typedef float v8sf __attribute__((vector_size(32)));
typedef float v4sf __attribute__((vector_size(16)));
/* The same vector read from any float address. */
typedef float v16sf_u __attribute__((vector_size(64), aligned(4), may_alias));
#define LOAD16(p) (*(const v16sf_u *)(p))

INLINE float dot_long(const float *restrict a, const float *restrict b, uint32_t n)
{
	v16sf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
	uint32_t k = 0;
	for (; k + 64 <= n; k += 64) {
		s0 += LOAD16(a + k) * LOAD16(b + k);
		s1 += LOAD16(a + k + 16) * LOAD16(b + k + 16);
		s2 += LOAD16(a + k + 32) * LOAD16(b + k + 32);
		s3 += LOAD16(a + k + 48) * LOAD16(b + k + 48);
	}
	if (k + 16 <= n)
		s0 += LOAD16(a + k) * LOAD16(b + k), k += 16;
	if (k + 16 <= n)
		s1 += LOAD16(a + k) * LOAD16(b + k), k += 16;
	if (k + 16 <= n)
		s2 += LOAD16(a + k) * LOAD16(b + k), k += 16;
	v16sf v = (s0 + s1) + (s2 + s3);
	v8sf h8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
		  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
	v4sf h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3) +
		  __builtin_shufflevector(h8, h8, 4, 5, 6, 7);
	float s = (h4[0] + h4[2]) + (h4[1] + h4[3]);
	for (; k < n; k++)
		s += a[k] * b[k];
	return s;
}

static inline float sigmoid_neg(float x)
{
	return 1.0f / (1.0f + expf(x));
}

static inline float softplus_neg(float x) /* -ln σ(x) */
{
	return x > 0 ? log1pf(expf(-x)) : -x + log1pf(expf(x));
}

/* ---- minibatch phases ---- */

static void ph_sample(rk_trainer *t, uint32_t tid, uint32_t c)
{
	rk_rng rng;
	rk_rng_seed(&rng, t->cfg.seed, MB_STREAM | t->steps << 20 | c);
	size_t a = (size_t)c * CHUNK, len = t->n - a < CHUNK ? t->n - a : CHUNK;
	rk_sampler_fill(t->smp, &rng, len, t->bu + a, t->bi + a, t->bj + a);
}

static void ph_gather(rk_trainer *t, uint32_t tid, uint32_t c)
{
	size_t a, b;
	share(t->n_rows, c, t->nch, &a, &b);
	for (size_t r = a; r < b; r++)
		memcpy(t->fd + r * t->f, t->feat + (size_t)t->distinct[r] * t->f, t->f * sizeof(float));
}

static HOT void forward(rk_trainer *t, size_t a, size_t b, double *loss)
{
	const rk_model *m = t->m;
	uint32_t k = t->k, k2 = t->k2, pw = t->pw;
	double sum = 0;
	for (size_t x = a; x < b; x++) {
		uint32_t u = t->bu[x], i = t->bi[x], j = t->bj[x];
		float s = m->beta_i[i] - m->beta_i[j];
		if (k)
			s += dot_diff(m->gamma_u + (size_t)u * k, m->gamma_i + (size_t)i * k,
				      m->gamma_i + (size_t)j * k, k);
		if (t->user_side) {
			s += t->pair_val[t->trip_pair[x << 1]] - t->pair_val[t->trip_pair[x << 1 | 1]];
		} else if (m->vis) {
			const float *pi = t->P + (size_t)t->pos[i] * pw;
			const float *pj = t->P + (size_t)t->pos[j] * pw;
			s += dot_diff(m->theta_u + (size_t)u * k2, pi, pj, k2) + pi[k2] - pj[k2];
		}
		t->g[x] = sigmoid_neg(s);
		sum += softplus_neg(s);
	}
	*loss = sum;
}

static void ph_forward(rk_trainer *t, uint32_t tid, uint32_t c)
{
	size_t a, b;
	share(t->n, c, t->nch, &a, &b);
	forward(t, a, b, &t->chunk_loss[c]);
}

/* Gradient rows of the loss: users [ua, ub), items [ia, ib). */
static HOT void backward(rk_trainer *t, uint32_t ua, uint32_t ub, uint32_t ia, uint32_t ib)
{
	const rk_model *m = t->m;
	uint32_t k = t->k, k2 = t->k2, pw = t->pw;
	float *dgu = t->grad + m->t[RK_GAMMA_U].off, *dgi = t->grad + m->t[RK_GAMMA_I].off;
	float *dth = t->grad + m->t[RK_THETA_U].off, *dbi = t->grad + m->t[RK_BETA_I].off;
	int item_side = m->vis && !t->user_side;
	for (uint32_t u = ua; u < ub; u++) {
		float *restrict gu = k ? dgu + (size_t)u * k : NULL;
		float *restrict th = item_side ? dth + (size_t)u * k2 : NULL;
		if (k)
			memset(gu, 0, k * sizeof(float));
		if (item_side)
			memset(th, 0, k2 * sizeof(float));
		for (uint32_t e = t->uoff[u]; e < t->uoff[u + 1]; e++) {
			uint32_t x = t->ulist[e];
			float g = t->g[x];
			if (k) {
				const float *restrict gi = m->gamma_i + (size_t)t->bi[x] * k;
				const float *restrict gj = m->gamma_i + (size_t)t->bj[x] * k;
#pragma omp simd
				for (uint32_t c = 0; c < k; c++)
					gu[c] -= g * (gi[c] - gj[c]);
			}
			if (item_side) {
				const float *restrict pi = t->P + (size_t)t->pos[t->bi[x]] * pw;
				const float *restrict pj = t->P + (size_t)t->pos[t->bj[x]] * pw;
#pragma omp simd
				for (uint32_t c = 0; c < k2; c++)
					th[c] -= g * (pi[c] - pj[c]);
			}
		}
	}
	int full = item_side && t->fmat == t->feat;
	for (uint32_t r = ia; r < ib; r++) {
		float *restrict gr = k ? dgi + (size_t)r * k : NULL;
		float db = 0;
		if (k)
			memset(gr, 0, k * sizeof(float));
		float *restrict G = NULL;
		if (item_side && (full || t->ioff[r] < t->ioff[r + 1])) {
			G = t->G + (size_t)t->pos[r] * pw;
			memset(G, 0, pw * sizeof(float));
		}
		if (t->user_side)
			memset(t->pair_c + t->ioff[r], 0, t->npair[r] * sizeof(float));
		for (uint32_t e = t->ioff[r]; e < t->ioff[r + 1]; e++) {
			uint32_t x = t->ilist[e] >> 1;
			float c = t->ilist[e] & 1 ? t->g[x] : -t->g[x];
			uint32_t u = t->bu[x];
			db += c;
			if (t->user_side)
				t->pair_c[t->trip_pair[t->ilist[e]]] += c;
			if (k) {
				const float *restrict gu = m->gamma_u + (size_t)u * k;
#pragma omp simd
				for (uint32_t q = 0; q < k; q++)
					gr[q] += c * gu[q];
			}
			if (G) {
				const float *restrict th = m->theta_u + (size_t)u * k2;
#pragma omp simd
				for (uint32_t q = 0; q < k2; q++)
					G[q] += c * th[q];
				G[k2] += c;
			}
		}
		dbi[r] = db;
	}
}

/* The user side reads the features in column blocks (blk[b] .. blk[b+1])
 * so that the block of W or H of every distinct user stays in L2 while the
 * items stream past: fblock_row is item i's part of block b, taken from
 * the trainer's column-blocked copy when it has one (contiguous per
 * block), else from the caller's rows. */
static inline const float *fblock_row(const rk_trainer *t, uint32_t b, uint32_t i)
{
	uint32_t s = t->blk[b], len = t->blk[b + 1] - s;
	if (t->fcopy)
		return t->fcopy + (size_t)t->m->d.n_items * s + (size_t)i * len;
	return t->feat + (size_t)i * t->f + s;
}

/* User side, items [ia, ib): the distinct (user, item) pairs of each item,
 * then their visual scores W_u·f_i = θ_u·E f_i + β'·f_i summed block by
 * block in a fixed order, so the bits do not depend on the split. */
static HOT void pairs(rk_trainer *t, uint32_t *slot, uint32_t ia, uint32_t ib)
{
	uint32_t f = t->f;
	for (uint32_t i = ia; i < ib; i++) {
		uint32_t base = t->ioff[i], np = 0;
		for (uint32_t e = t->ioff[i]; e < t->ioff[i + 1]; e++) {
			uint32_t code = t->ilist[e], cu = t->upos[t->bu[code >> 1]];
			if (slot[cu] == EMPTY) {
				uint32_t p = base + np++;
				slot[cu] = p;
				t->pair_u[p] = cu;
				t->pair_val[p] = 0;
			}
			t->trip_pair[code] = slot[cu];
		}
		t->npair[i] = np;
		for (uint32_t p = base; p < base + np; p++)
			slot[t->pair_u[p]] = EMPTY;
	}
	for (uint32_t b = 0; b < t->n_blk; b++) {
		uint32_t s = t->blk[b], len = t->blk[b + 1] - s;
		for (uint32_t i = ia; i < ib; i++) {
			const float *fi = fblock_row(t, b, i);
			for (uint32_t p = t->ioff[i]; p < t->ioff[i] + t->npair[i]; p++)
				t->pair_val[p] += dot_long(t->W + (size_t)t->pair_u[p] * f + s, fi, len);
		}
	}
}

static void ph_pairs(rk_trainer *t, uint32_t tid, uint32_t c)
{
	pairs(t, t->tls[tid].slot, t->irange[c], t->irange[c + 1]);
}

/* User side: H_u = Σ_i c_ui f_i over features [c0, c1); every H element
 * sums its pairs in item order, so H does not depend on the thread count. */
static HOT void accumulate_h(rk_trainer *t, uint32_t c0, uint32_t c1)
{
	uint32_t f = t->f, ni = t->m->d.n_items;
	for (uint32_t cu = 0; cu < t->n_du; cu++)
		memset(t->H + (size_t)cu * f + c0, 0, (c1 - c0) * sizeof(float));
	for (uint32_t b = 0; b < t->n_blk; b++) {
		uint32_t lo = c0 > t->blk[b] ? c0 : t->blk[b];
		uint32_t hi = c1 < t->blk[b + 1] ? c1 : t->blk[b + 1];
		if (lo >= hi)
			continue;
		for (uint32_t i = 0; i < ni; i++) {
			const float *restrict fi = fblock_row(t, b, i) + (lo - t->blk[b]);
			for (uint32_t p = t->ioff[i]; p < t->ioff[i] + t->npair[i]; p++) {
				float c = t->pair_c[p];
				float *restrict h = t->H + (size_t)t->pair_u[p] * f + lo;
#pragma omp simd
				for (uint32_t r = 0; r < hi - lo; r++)
					h[r] += c * fi[r];
			}
		}
	}
}

static void ph_accumulate_h(rk_trainer *t, uint32_t tid, uint32_t c)
{
	uint32_t blocks = (t->f + 15) / 16;
	uint32_t c0 = blocks * c / t->nch * 16, c1 = blocks * (c + 1) / t->nch * 16;
	if (c0 < c1)
		accumulate_h(t, c0, c1 < t->f ? c1 : t->f);
}

/* User side: θ gradients from dΘ̃ = H·[E|β'] (zero for users not in the
 * batch). */
static void ph_theta_grad(rk_trainer *t, uint32_t tid, uint32_t c)
{
	size_t a, b;
	uint32_t k2 = t->k2;
	float *dth = t->grad + t->m->t[RK_THETA_U].off;
	share(t->m->d.n_users, c, t->nch, &a, &b);
	for (size_t u = a; u < b; u++) {
		if (t->upos[u] == EMPTY)
			memset(dth + u * k2, 0, k2 * sizeof(float));
		else
			memcpy(dth + u * k2, t->dthc + (size_t)t->upos[u] * t->pw, k2 * sizeof(float));
	}
}

static void ph_backward(rk_trainer *t, uint32_t tid, uint32_t c)
{
	backward(t, t->urange[c], t->urange[c + 1], t->irange[c], t->irange[c + 1]);
}

static void ph_optim(rk_trainer *t, uint32_t tid, uint32_t chunk)
{
	const rk_model *m = t->m;
	const rk_train_config *c = &t->cfg;
	const rk_adam_opts ao = { c->adam_beta1, c->adam_beta2, c->adam_eps };
	float step, bc2s;
	rk_adam_scales(&ao, t->lr, t->adam_t, &step, &bc2s);
	for (int x = 0; x < RK_N_TENSORS; x++) {
		const rk_tensor *ts = &m->t[x];
		size_t a, b;
		share(ts->rows * ts->cols, chunk, t->nch, &a, &b);
		size_t o = ts->off + a;
		float lambda = x == RK_VIS ? c->lambda_e : c->lambda;
		if (c->optim == RK_OPT_ADAM)
			rk_adam_update(m->params + o, t->grad + o, t->adam_m + o, t->adam_v + o, b - a,
				       lambda, &ao, step, bc2s);
		else
			rk_sgd_update(m->params + o, t->grad + o, b - a, lambda, t->lr);
	}
}

/* Splits rows [0, n) into nt ranges of about equal work, a row
 * costing 1 + its triples (off[] is the bucket prefix sum). */
static void split_rows(const uint32_t *off, uint32_t n, uint32_t nt, uint32_t *range)
{
	uint64_t total = (uint64_t)off[n] + n;
	range[0] = 0;
	uint32_t r = 0;
	for (uint32_t k = 1; k < nt; k++) {
		uint64_t want = total * k / nt;
		while (r < n && (uint64_t)off[r] + r < want)
			r++;
		range[k] = r;
	}
	range[nt] = n;
}

/* Counting sort of the batch by user and by item, the distinct items and
 * users, and for VBPR the side of the step: user side, or item side with
 * gathered feature rows or the whole matrix. */
static void bucket(rk_trainer *t)
{
	uint32_t nu = t->m->d.n_users, ni = t->m->d.n_items;
	size_t n = t->n;
	memset(t->uoff, 0, ((size_t)nu + 1) * sizeof(*t->uoff));
	memset(t->ioff, 0, ((size_t)ni + 1) * sizeof(*t->ioff));
	for (size_t x = 0; x < n; x++) {
		t->uoff[t->bu[x] + 1]++;
		t->ioff[t->bi[x] + 1]++;
		t->ioff[t->bj[x] + 1]++;
	}
	for (uint32_t u = 0; u < nu; u++)
		t->uoff[u + 1] += t->uoff[u];
	for (uint32_t i = 0; i < ni; i++)
		t->ioff[i + 1] += t->ioff[i];
	memcpy(t->fill, t->uoff, (size_t)nu * sizeof(*t->fill));
	for (size_t x = 0; x < n; x++)
		t->ulist[t->fill[t->bu[x]]++] = (uint32_t)x;
	memcpy(t->fill, t->ioff, (size_t)ni * sizeof(*t->fill));
	for (size_t x = 0; x < n; x++) {
		t->ilist[t->fill[t->bi[x]]++] = (uint32_t)(x << 1);
		t->ilist[t->fill[t->bj[x]]++] = (uint32_t)(x << 1 | 1);
	}
	split_rows(t->uoff, nu, t->nch, t->urange);
	split_rows(t->ioff, ni, t->nch, t->irange);
	t->user_side = 0;
	if (!t->m->vis)
		return;
	uint32_t d = 0;
	for (uint32_t i = 0; i < ni; i++)
		if (t->ioff[i] < t->ioff[i + 1])
			t->distinct[d++] = i;
	t->n_du = 0;
	for (uint32_t u = 0; u < nu; u++) {
		t->upos[u] = EMPTY;
		if (t->uoff[u] < t->uoff[u + 1] && t->n_du < t->ucap) {
			t->du[t->n_du] = u;
			t->upos[u] = t->n_du;
		}
		t->n_du += t->uoff[u] < t->uoff[u + 1];
	}
	int gather = d <= t->max_gather && (uint64_t)d * 4 < (uint64_t)ni * 3;
	/* Multiply-adds of each side: the item side's two GEMMs over the
	 * item rows, the user side's three GEMMs over the distinct users plus
	 * two passes of F per (user, item) entry, which run at about a third
	 * of GEMM speed (measured in tests/bench_train). */
	double pw = t->pw, f = t->f;
	double items_cost = 2 * (gather ? d : ni) * f * pw;
	double users_cost = 3 * t->n_du * f * pw + 2 * USER_SIDE_PENALTY * 2.0 * n * f;
	enum rk_vis_path path = t->cfg.visual_path;
	if (t->n_du <= t->ucap &&
	    (path == RK_VIS_USERS || (path == RK_VIS_AUTO && users_cost < items_cost))) {
		t->user_side = 1;
		return;
	}
	if (gather) {
		for (uint32_t r = 0; r < d; r++)
			t->pos[t->distinct[r]] = r;
		t->n_rows = d;
		t->fmat = t->fd;
	} else {
		for (uint32_t i = 0; i < ni; i++)
			t->pos[i] = i;
		t->n_rows = ni;
		t->fmat = t->feat;
	}
}

/* One step on the n triples in bu/bi/bj; returns the summed loss. */
static double step(rk_trainer *t)
{
	rk_model *m = t->m;
	int f = (int)t->f, pw = (int)t->pw;
	bucket(t);
	if (t->user_side) {
		for (uint32_t x = 0; x < t->n_du; x++) {
			float *row = t->thc + (size_t)x * pw;
			memcpy(row, m->theta_u + (size_t)t->du[x] * t->k2, t->k2 * sizeof(float));
			row[t->k2] = 1.0f;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->n_du, f, pw, 1.0f,
			    t->thc, pw, m->vis, pw, 0.0f, t->W, f);
		pool_run(t, ph_pairs, t->nch);
	} else if (m->vis) {
		if (t->fmat == t->fd)
			pool_run(t, ph_gather, t->nch);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t->n_rows, pw, f, 1.0f,
			    t->fmat, f, m->vis, pw, 0.0f, t->P, pw);
	}
	pool_run(t, ph_forward, t->nch);
	double loss = 0;
	for (uint32_t c = 0; c < t->nch; c++)
		loss += t->chunk_loss[c];
	pool_run(t, ph_backward, t->nch);
	if (t->user_side) {
		pool_run(t, ph_accumulate_h, t->nch);
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f, pw, (int)t->n_du, 1.0f,
			    t->H, f, t->thc, pw, 0.0f, t->grad + m->t[RK_VIS].off, pw);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t->n_du, pw, f, 1.0f,
			    t->H, f, m->vis, pw, 0.0f, t->dthc, pw);
		pool_run(t, ph_theta_grad, t->nch);
	} else if (m->vis) {
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f, pw, (int)t->n_rows, 1.0f,
			    t->fmat, f, t->G, pw, 0.0f, t->grad + m->t[RK_VIS].off, pw);
	}
	t->adam_t++;
	pool_run(t, ph_optim, t->nch);
	t->steps++;
	return loss;
}

/* ---- Hogwild ---- */

static HOT void hog_triples(rk_trainer *t, struct tls *s, size_t n, double *loss)
{
	rk_model *m = t->m;
	uint32_t k = t->k, k2 = t->k2, f = t->f, pw = t->pw;
	float lr = t->lr, lam = t->cfg.lambda, lam_e = t->cfg.lambda_e;
	float *restrict d = s->scratch, *restrict pd = s->scratch + f;
	float *restrict th0 = pd + pw;
	double sum = 0;
	for (size_t x = 0; x < n; x++) {
		uint32_t u = s->u[x], i = s->i[x], j = s->j[x];
		float *restrict gu = k ? m->gamma_u + (size_t)u * k : NULL;
		float *restrict gi = k ? m->gamma_i + (size_t)i * k : NULL;
		float *restrict gj = k ? m->gamma_i + (size_t)j * k : NULL;
		float xs = m->beta_i[i] - m->beta_i[j];
		if (k)
			xs += dot_diff(gu, gi, gj, k);
		float *restrict th = m->vis ? m->theta_u + (size_t)u * k2 : NULL;
		if (m->vis) {
			const float *fi = t->feat + (size_t)i * f, *fj = t->feat + (size_t)j * f;
#pragma omp simd
			for (uint32_t r = 0; r < f; r++)
				d[r] = fi[r] - fj[r];
			memset(pd, 0, pw * sizeof(float));
			for (uint32_t r = 0; r < f; r++) {
				const float *restrict row = m->vis + (size_t)r * pw;
				float dr = d[r];
#pragma omp simd
				for (uint32_t c = 0; c < pw; c++)
					pd[c] += dr * row[c];
			}
			float s2 = 0;
#pragma omp simd reduction(+ : s2)
			for (uint32_t c = 0; c < k2; c++)
				s2 += th[c] * pd[c];
			xs += s2 + pd[k2];
		}
		float g = sigmoid_neg(xs);
		sum += softplus_neg(xs);
		m->beta_i[i] += lr * (g - lam * m->beta_i[i]);
		m->beta_i[j] += lr * (-g - lam * m->beta_i[j]);
#pragma omp simd
		for (uint32_t c = 0; c < k; c++) {
			float a = gu[c], b = gi[c], e = gj[c];
			gu[c] = a + lr * (g * (b - e) - lam * a);
			gi[c] = b + lr * (g * a - lam * b);
			gj[c] = e + lr * (-g * a - lam * e);
		}
		if (m->vis) {
#pragma omp simd
			for (uint32_t c = 0; c < k2; c++) {
				th0[c] = th[c];
				th[c] += lr * (g * pd[c] - lam * th[c]);
			}
			th0[k2] = 1.0f;
			for (uint32_t r = 0; r < f; r++) {
				float *restrict row = m->vis + (size_t)r * pw;
				float gd = g * d[r];
#pragma omp simd
				for (uint32_t c = 0; c < pw; c++)
					row[c] += lr * (gd * th0[c] - lam_e * row[c]);
			}
		}
	}
	*loss += sum;
}

static void ph_hogwild(rk_trainer *t, uint32_t tid, uint32_t c)
{
	struct tls *s = &t->tls[tid];
	size_t a, b;
	rk_rng rng;
	share(t->hog_n, c, t->nch, &a, &b);
	rk_rng_seed(&rng, t->cfg.seed, HOG_STREAM | t->hog_runs << 20 | c);
	t->chunk_loss[c] = 0;
	for (size_t x = a; x < b; x += HOG_CHUNK) {
		if (atomic_load_explicit(&t->cancel, memory_order_relaxed))
			return;
		size_t len = b - x < HOG_CHUNK ? b - x : HOG_CHUNK;
		rk_sampler_fill(t->smp, &rng, len, s->u, s->i, s->j);
		hog_triples(t, s, len, &t->chunk_loss[c]);
	}
}

/* ---- validation ---- */

static HOT float val_score(const rk_trainer *t, uint32_t u, uint32_t i)
{
	const rk_model *m = t->m;
	uint32_t k = t->k, k2 = t->k2;
	float s = m->beta_i[i];
	if (k) {
		const float *gu = m->gamma_u + (size_t)u * k, *gi = m->gamma_i + (size_t)i * k;
#pragma omp simd reduction(+ : s)
		for (uint32_t c = 0; c < k; c++)
			s += gu[c] * gi[c];
	}
	if (m->vis) {
		const float *th = m->theta_u + (size_t)u * k2, *p = t->P + (size_t)i * t->pw;
		float v = p[k2];
#pragma omp simd reduction(+ : v)
		for (uint32_t c = 0; c < k2; c++)
			v += th[c] * p[c];
		s += v;
	}
	return s;
}

/* AUC by the rule of every AUC here (metrics.h's vr_auc). */
static void ph_validate(rk_trainer *t, uint32_t tid, uint32_t c)
{
	float *neg = t->tls[tid].vscores;
	size_t a, b;
	share(t->n_val, c, t->nch, &a, &b);
	for (size_t v = a; v < b; v++) {
		uint32_t u = t->val_user[v], it = t->val_item[v];
		float sv = val_score(t, u, it);
		uint64_t count = 0, above = 0, tied = 0;
		if (t->n_neg) {
			for (uint32_t q = 0; q < t->n_neg; q++)
				neg[count++] = val_score(t, u, t->val_neg[v * t->n_neg + q]);
		} else {
			for (uint32_t j = 0; j < t->m->d.n_items; j++)
				if (j != it && !rk_csr_has(t->train, u, j))
					neg[count++] = val_score(t, u, j);
		}
		vr_auc_count(sv, neg, count, &above, &tied);
		t->val_auc[v] = vr_auc(count, above, tied);
	}
}

double rk_trainer_validate(rk_trainer *t)
{
	if (!t->n_val)
		return NAN;
	rk_model *m = t->m;
	if (m->vis)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m->d.n_items, (int)t->pw,
			    (int)t->f, 1.0f, t->feat, (int)t->f, m->vis, (int)t->pw, 0.0f, t->P,
			    (int)t->pw);
	pool_run(t, ph_validate, t->nch);
	double sum = 0;
	for (uint32_t v = 0; v < t->n_val; v++)
		sum += t->val_auc[v];
	return sum / t->n_val;
}

/* Validation users and their fixed negatives. */
static int setup_validation(rk_trainer *t, const uint32_t *valid_item)
{
	const rk_csr *c = t->train;
	uint32_t ni = c->n_items, S = t->cfg.val_negatives;
	t->val_user = malloc(((size_t)c->n_users + 1) * sizeof(uint32_t));
	t->val_item = malloc(((size_t)c->n_users + 1) * sizeof(uint32_t));
	t->val_auc = malloc(((size_t)c->n_users + 1) * sizeof(double));
	t->val_neg = S ? malloc(((size_t)c->n_users * S + 1) * sizeof(uint32_t)) : NULL;
	if (!t->val_user || !t->val_item || !t->val_auc || (S && !t->val_neg))
		return VR_ENOMEM;
	t->n_neg = S;
	if (!valid_item)
		return 0;
	rk_rng rng;
	rk_rng_seed(&rng, t->cfg.seed, VAL_STREAM);
	for (uint32_t u = 0; u < c->n_users; u++) {
		uint32_t it = valid_item[u];
		uint64_t deg = c->off[u + 1] - c->off[u];
		if (it == RK_NONE || it >= ni || rk_csr_has(c, u, it) || deg + 1 >= ni)
			continue;
		uint32_t v = t->n_val++;
		t->val_user[v] = u;
		t->val_item[v] = it;
		for (uint32_t q = 0; q < S; q++) {
			uint32_t j = rk_rng_below(&rng, ni);
			for (int tries = 0; tries < 64 && (j == it || rk_csr_has(c, u, j)); tries++)
				j = rk_rng_below(&rng, ni);
			while (j == it || rk_csr_has(c, u, j))
				j = j + 1 < ni ? j + 1 : 0; /* u has a free item: see above */
			t->val_neg[(size_t)v * S + q] = j;
		}
	}
	return 0;
}

/* Column blocks for the user side, sized for the users a step is likely
 * to touch, and the blocked copy of the features when it is not too big. */
static int setup_blocks(rk_trainer *t, const float *features)
{
	uint32_t f = t->f, ni = t->m->d.n_items;
	size_t users = t->ucap < t->m->d.n_users ? t->ucap : t->m->d.n_users;
	size_t width = USER_SIDE_L2 / (users * sizeof(float)) / 16 * 16;
	int copy = (size_t)ni * f * sizeof(float) <= FCOPY_MAX && width < f;
	if (!copy || width < 16)
		width = f;
	t->n_blk = (uint32_t)((f + width - 1) / width);
	t->blk = malloc(((size_t)t->n_blk + 1) * sizeof(uint32_t));
	if (!t->blk)
		return VR_ENOMEM;
	for (uint32_t b = 0; b <= t->n_blk; b++)
		t->blk[b] = (uint32_t)((size_t)b * width < f ? (size_t)b * width : f);
	if (t->n_blk == 1)
		return 0;
	t->fcopy = alloc_floats((size_t)ni * f);
	if (!t->fcopy)
		return VR_ENOMEM;
	for (uint32_t b = 0; b < t->n_blk; b++) {
		uint32_t s = t->blk[b], len = t->blk[b + 1] - s;
		for (uint32_t i = 0; i < ni; i++)
			memcpy(t->fcopy + (size_t)ni * s + (size_t)i * len,
			       features + (size_t)i * f + s, len * sizeof(float));
	}
	return 0;
}

/* ---- public ---- */

void rk_train_config_default(rk_train_config *c, enum rk_model_kind kind)
{
	memset(c, 0, sizeof(*c));
	c->adam_beta1 = 0.9f;
	c->adam_beta2 = 0.999f;
	c->adam_eps = 1e-8f;
	c->max_epochs = 50;
	c->val_negatives = 100;
	c->lr_patience = 2;
	c->lr_factor = 0.5f;
	c->patience = 5;
	c->min_delta = 1e-4f;
	c->seed = 1;
	c->batch = 16384;
	rk_sampler_opts_default(&c->sampler);
	if (kind == RK_MODEL_BPR) {
		c->algo = RK_ALGO_HOGWILD;
		c->optim = RK_OPT_SGD;
		c->lr = 0.05f;
		c->lambda = 0.0025f;
	} else {
		c->algo = RK_ALGO_MINIBATCH;
		c->optim = RK_OPT_ADAM;
		c->lr = 3e-3f;
		c->lambda = 1e-3f;
		c->lambda_e = 0.1f;
	}
}

static int check_config(const rk_model *m, const rk_csr *train, const float *features,
			const rk_train_config *c)
{
	if (m->d.kind == RK_MODEL_DVBPR)
		return VR_EUNSUPPORTED;
	if (m->d.n_users != train->n_users || m->d.n_items != train->n_items)
		return VR_EINVAL;
	if (m->d.kind == RK_MODEL_VBPR && !features)
		return VR_EINVAL;
	if (c->algo == RK_ALGO_HOGWILD && c->optim != RK_OPT_SGD)
		return VR_EINVAL;
	if (c->algo == RK_ALGO_MINIBATCH && (c->batch == 0 || c->batch > (1u << 30)))
		return VR_EINVAL;
	if (!(c->lr > 0) || !(c->lambda >= 0) || !(c->lambda_e >= 0) || !(c->lr_factor > 0) ||
	    !(c->lr_factor <= 1) || !(c->adam_eps > 0) || !(c->adam_beta1 >= 0) ||
	    !(c->adam_beta1 < 1) || !(c->adam_beta2 >= 0) || !(c->adam_beta2 < 1))
		return VR_EINVAL;
	if (c->threads > MAX_THREADS)
		return VR_EINVAL;
	return 0;
}

int rk_trainer_create(rk_trainer **out, rk_model *model, const rk_csr *train,
		      const uint32_t *valid_item, const float *features,
		      const rk_train_config *cfg)
{
	rk_train_config def;
	if (!cfg) {
		rk_train_config_default(&def, model->d.kind);
		cfg = &def;
	}
	*out = NULL;
	int rc = check_config(model, train, features, cfg);
	if (rc)
		return rc;
	rk_trainer *t = calloc(1, sizeof(*t));
	if (!t)
		return VR_ENOMEM;
	t->m = model;
	t->train = train;
	t->feat = model->vis ? features : NULL;
	t->cfg = *cfg;
	t->lr = cfg->lr;
	t->k = model->d.k;
	t->k2 = model->d.k2;
	t->f = model->d.f;
	t->pw = model->d.k2 + 1;
	uint32_t nt = cfg->threads;
	if (!nt) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		nt = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (uint32_t)cpus;
	}
	uint32_t nu = model->d.n_users, ni = model->d.n_items;
	size_t B = cfg->algo == RK_ALGO_MINIBATCH ? cfg->batch : 0;
	rc = rk_sampler_create(&t->smp, train, &cfg->sampler);
	if (rc)
		goto fail;
	t->tls = calloc(nt, sizeof(*t->tls));
	if (!t->tls) {
		rc = VR_ENOMEM;
		goto fail;
	}
	t->nt = nt;
	t->nch = nt == 1 ? 1 : CHUNKS_PER_THREAD * nt;
	for (uint32_t k = 0; k < nt; k++) {
		struct tls *s = &t->tls[k];
		uint32_t nv = cfg->val_negatives > ni ? cfg->val_negatives : ni;
		if (!(s->vscores = alloc_floats((size_t)nv + 1))) {
			rc = VR_ENOMEM;
			goto fail;
		}
		if (cfg->algo != RK_ALGO_HOGWILD)
			continue;
		s->u = malloc(3 * HOG_CHUNK * sizeof(uint32_t));
		s->scratch = alloc_floats((size_t)t->f + 2 * (size_t)t->pw);
		if (!s->u || !s->scratch) {
			rc = VR_ENOMEM;
			goto fail;
		}
		s->i = s->u + HOG_CHUNK;
		s->j = s->i + HOG_CHUNK;
	}
	if (B) {
		t->bu = malloc(3 * B * sizeof(uint32_t));
		t->g = alloc_floats(B);
		t->uoff = malloc(((size_t)nu + 1) * sizeof(uint32_t));
		t->ulist = malloc(B * sizeof(uint32_t));
		t->ioff = malloc(((size_t)ni + 1) * sizeof(uint32_t));
		t->ilist = malloc(2 * B * sizeof(uint32_t));
		t->fill = malloc(((size_t)(nu > ni ? nu : ni) + 1) * sizeof(uint32_t));
		t->grad = alloc_floats(model->n_params);
		if (!t->bu || !t->g || !t->uoff || !t->ulist || !t->ioff || !t->ilist || !t->fill ||
		    !t->grad) {
			rc = VR_ENOMEM;
			goto fail;
		}
		memset(t->grad, 0, model->n_params * sizeof(float));
		t->bi = t->bu + B;
		t->bj = t->bi + B;
		if (cfg->optim == RK_OPT_ADAM) {
			t->adam_m = alloc_floats(model->n_params);
			t->adam_v = alloc_floats(model->n_params);
			if (!t->adam_m || !t->adam_v) {
				rc = VR_ENOMEM;
				goto fail;
			}
			memset(t->adam_m, 0, model->n_params * sizeof(float));
			memset(t->adam_v, 0, model->n_params * sizeof(float));
		}
	}
	if (model->vis && B) {
		size_t cap = USER_SIDE_BYTES / ((size_t)t->f * sizeof(float));
		cap = cap < nu ? cap : nu;
		cap = cap < B ? cap : B;
		t->ucap = (uint32_t)(cap ? cap : 1);
		t->du = malloc((size_t)nu * sizeof(uint32_t));
		t->upos = malloc((size_t)nu * sizeof(uint32_t));
		t->thc = alloc_floats((size_t)t->ucap * t->pw);
		t->dthc = alloc_floats((size_t)t->ucap * t->pw);
		t->W = alloc_floats((size_t)t->ucap * t->f);
		t->H = alloc_floats((size_t)t->ucap * t->f);
		t->npair = calloc((size_t)ni + 1, sizeof(uint32_t));
		t->pair_u = malloc(2 * B * sizeof(uint32_t));
		t->trip_pair = malloc(2 * B * sizeof(uint32_t));
		t->pair_val = alloc_floats(2 * B);
		t->pair_c = alloc_floats(2 * B);
		if (!t->du || !t->upos || !t->thc || !t->dthc || !t->W || !t->H || !t->npair ||
		    !t->pair_u || !t->trip_pair || !t->pair_val || !t->pair_c) {
			rc = VR_ENOMEM;
			goto fail;
		}
		for (uint32_t k = 0; k < nt; k++) {
			t->tls[k].slot = malloc((size_t)t->ucap * sizeof(uint32_t));
			if (!t->tls[k].slot) {
				rc = VR_ENOMEM;
				goto fail;
			}
			memset(t->tls[k].slot, 0xff, (size_t)t->ucap * sizeof(uint32_t));
		}
		rc = setup_blocks(t, features);
		if (rc)
			goto fail;
	}
	if (model->vis) {
		uint64_t mg = (uint64_t)ni * 3 / 4;
		t->max_gather = (uint32_t)(mg < 2 * B ? mg : 2 * B);
		t->pos = malloc(((size_t)ni + 1) * sizeof(uint32_t));
		t->distinct = malloc(((size_t)ni + 1) * sizeof(uint32_t));
		t->P = alloc_floats((size_t)ni * t->pw);
		t->G = alloc_floats((size_t)ni * t->pw);
		t->fd = t->max_gather ? alloc_floats((size_t)t->max_gather * t->f) : NULL;
		if (!t->pos || !t->distinct || !t->P || !t->G || (t->max_gather && !t->fd)) {
			rc = VR_ENOMEM;
			goto fail;
		}
	}
	if (valid_item) {
		t->best = alloc_floats(model->n_params);
		if (!t->best) {
			rc = VR_ENOMEM;
			goto fail;
		}
	}
	rc = setup_validation(t, valid_item);
	if (rc)
		goto fail;
	/* Items outside the negative pool have no training interaction: cold. */
	for (uint32_t i = 0; i < ni; i++) {
		if (rk_sampler_in_pool(t->smp, i))
			continue;
		model->beta_i[i] = 0;
		if (t->k)
			memset(model->gamma_i + (size_t)i * t->k, 0, t->k * sizeof(float));
	}
	rc = pool_start(t, nt);
	if (rc)
		goto fail;
	*out = t;
	return 0;
fail:
	rk_trainer_free(t);
	return rc;
}

void rk_trainer_free(rk_trainer *t)
{
	if (!t)
		return;
	pool_stop(&t->pool);
	rk_sampler_free(t->smp);
	for (uint32_t k = 0; t->tls && k < t->nt; k++) {
		free(t->tls[k].u);
		free(t->tls[k].scratch);
		free(t->tls[k].slot);
		free(t->tls[k].vscores);
	}
	free(t->tls);
	free(t->bu);
	free(t->g);
	free(t->uoff);
	free(t->ulist);
	free(t->ioff);
	free(t->ilist);
	free(t->fill);
	free(t->pos);
	free(t->distinct);
	free(t->du);
	free(t->upos);
	free(t->thc);
	free(t->dthc);
	free(t->W);
	free(t->H);
	free(t->npair);
	free(t->pair_u);
	free(t->trip_pair);
	free(t->pair_val);
	free(t->pair_c);
	free(t->blk);
	free(t->fcopy);
	free(t->fd);
	free(t->P);
	free(t->G);
	free(t->grad);
	free(t->adam_m);
	free(t->adam_v);
	free(t->best);
	free(t->val_user);
	free(t->val_item);
	free(t->val_neg);
	free(t->val_auc);
	free(t);
}

void rk_trainer_cancel(rk_trainer *t)
{
	atomic_store(&t->cancel, 1);
}

float rk_trainer_lr(const rk_trainer *t) { return t->lr; }
void rk_trainer_set_lr(rk_trainer *t, float lr) { t->lr = lr; }

int rk_trainer_step(rk_trainer *t, const uint32_t *u, const uint32_t *i,
		    const uint32_t *j, size_t n, double *loss)
{
	if (t->cfg.algo != RK_ALGO_MINIBATCH || n == 0 || n > t->cfg.batch)
		return VR_EINVAL;
	for (size_t x = 0; x < n; x++)
		if (u[x] >= t->m->d.n_users || i[x] >= t->m->d.n_items || j[x] >= t->m->d.n_items)
			return VR_EINVAL;
	memcpy(t->bu, u, n * sizeof(*u));
	memcpy(t->bi, i, n * sizeof(*i));
	memcpy(t->bj, j, n * sizeof(*j));
	t->n = n;
	double l = step(t);
	if (loss)
		*loss = l / n;
	return 0;
}

int rk_trainer_train(rk_trainer *t, uint64_t n, double *loss)
{
	double sum = 0;
	uint64_t done = 0;
	int rc = 0;
	if (t->cfg.algo == RK_ALGO_HOGWILD) {
		t->hog_n = n;
		pool_run(t, ph_hogwild, t->nch);
		t->hog_runs++;
		for (uint32_t c = 0; c < t->nch; c++)
			sum += t->chunk_loss[c];
		done = n;
		if (atomic_load(&t->cancel))
			rc = VR_ECANCELLED;
	} else {
		while (done < n) {
			if (atomic_load(&t->cancel)) {
				rc = VR_ECANCELLED;
				break;
			}
			t->n = t->cfg.batch;
			pool_run(t, ph_sample, (uint32_t)((t->n + CHUNK - 1) / CHUNK));
			sum += step(t);
			done += t->n;
		}
	}
	if (loss)
		*loss = done ? sum / done : NAN;
	return rc;
}

int rk_trainer_run(rk_trainer *t, rk_progress_fn fn, void *ctx, rk_train_result *res)
{
	const rk_train_config *c = &t->cfg;
	rk_train_result r = {0};
	r.best_auc = r.loss = NAN;
	uint64_t per_epoch = c->epoch_triples;
	if (!per_epoch)
		per_epoch = t->train->nnz > MIN_EPOCH ? t->train->nnz : MIN_EPOCH;
	uint32_t bad = 0, bad_lr = 0;
	double t0 = vr_now_s();
	int rc = 0;
	for (uint32_t e = 1; e <= c->max_epochs; e++) {
		double a = vr_now_s(), loss;
		rc = rk_trainer_train(t, per_epoch, &loss);
		double train_s = vr_now_s() - a;
		if (rc)
			break;
		r.triples += per_epoch;
		r.epochs = e;
		if (!rk_all_finite(t->m->params, t->m->n_params)) {
			r.diverged = e;
			rc = VR_EINVAL;
			break;
		}
		if (!t->n_val)
			r.loss = loss;
		double auc = rk_trainer_validate(t);
		if (t->n_val) {
			if (isnan(r.best_auc) || auc > r.best_auc + c->min_delta) {
				r.best_auc = auc;
				r.best_epoch = e;
				r.loss = loss;
				bad = bad_lr = 0;
				memcpy(t->best, t->m->params, t->m->n_params * sizeof(float));
			} else {
				bad++;
				if (++bad_lr >= c->lr_patience && c->lr_patience) {
					t->lr *= c->lr_factor;
					bad_lr = 0;
				}
			}
		}
		double el = vr_now_s() - t0;
		rk_progress p = {e, c->max_epochs, loss, auc, r.best_auc, r.best_epoch, t->lr,
				 train_s > 0 ? per_epoch / train_s : 0, el, el / e * (c->max_epochs - e)};
		if (fn && fn(ctx, &p)) {
			rc = VR_ECANCELLED;
			break;
		}
		/* Patience running out at the last epoch stops nothing. */
		if (t->n_val && c->patience && bad >= c->patience && e < c->max_epochs) {
			r.stopped_early = 1;
			break;
		}
	}
	if (t->n_val && r.best_epoch)
		memcpy(t->m->params, t->best, t->m->n_params * sizeof(float));
	r.seconds = vr_now_s() - t0;
	if (res)
		*res = r;
	return rc;
}
