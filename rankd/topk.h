/* Top-k selection over the serving item matrix (index.h): the best k items
 * for a user row by inner product, for one user (a blocked scan with a
 * bounded heap, exact fp32 or an approximate int8 or fp16 first pass
 * followed by an exact re-rank) or for many users at once (int8 dot
 * products for blocks of users and items, then each user's candidates
 * re-ranked exactly).
 *
 * Order: descending score; equal scores by ascending item id. A NaN score
 * (only from overflow: rows and users are finite) counts as -infinity.
 *
 * The scan kernels use AVX-512 (with VNNI for int8) or AVX2+FMA+F16C where
 * the CPU has them (checked at run time) and portable C otherwise, so one
 * binary runs on any x86-64. int8 dot products are exact integers, the
 * same from every kernel. Scores from one kernel are the same bits whether an item is
 * scored in a scan, as a candidate, by rk_topk_batch, by rk_score or by
 * rk_score_all: equal rows get equal scores wherever they sit (a BLAS
 * sgemm does not promise that, and on some CPUs it does not: BPR's cold
 * items, which share one prior row, then looked ranked by the model);
 * other kernels may differ from them in the last bits. */
#ifndef RK_TOPK_H
#define RK_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"

struct rk_hit {
	uint32_t item;
	float score;
};

/* Default oversampling of the approximate pass: it keeps k × this many
 * candidates by int8 (or fp16) score for the exact re-rank. Chosen by
 * measurement (bench_serve, VBPR-shaped rows, k = 20): c = 2 is the least
 * whose int8 recall@20 reached 0.999 (1.0 over 2000 users at 10 k items
 * and 100 at 1 M; c = 1: 0.978, 0.958); 4 doubles that margin for 0.01 ms
 * more at 10 k items (0.090 vs 0.080, medians of 5 alternated runs) and
 * nothing measurable at 1 M. */
#define RK_TOPK_APPROX_DEFAULT 4

/* The oversampling for the int4 pass (rk_topk_req.nibble): its factors
 * keep 15 levels, so the true top k sits deeper in its order. Chosen by
 * measurement (bench_serve 1000000 --queries 1000 --pass int4, VBPR-shaped
 * rows, k = 20): recall@20 at c = 4, 8, 16 was 0.9862, 0.9993, 1.0 over
 * 1000 users at 1 M items (10 k items: 0.9995 at c = 4, 1.0 from 8); 16 is
 * the least with 1.0 at 1 M, twice the least over 0.999, and its re-rank
 * of 320 rows costs nothing measurable beside the 168 MB scan. */
#define RK_TOPK_APPROX_INT4 16

struct rk_topk_req {
	const float *user;        /* dim floats */
	int k;                    /* > 0; larger than the catalogue returns all */
	/* Items never returned (the user's seen items): ascending (repeats
	 * allowed); ids >= view->n are ignored. NULL when n_exclude is 0. */
	const uint32_t *exclude;
	size_t n_exclude;
	/* Restrict ranking to these items: any order, repeats collapsed, every
	 * id < view->n. NULL: the whole catalogue. */
	const uint32_t *cand;
	size_t n_cand;
	/* 0: exact fp32 scan. c >= 1: a scan of the int8 rows (index.h; the
	 * user quantised the same way, per query) keeping k × c candidates,
	 * then exact fp32 scores for those; returned scores are always exact. */
	int approx;
	/* With approx: the first pass reads the fp16 rows instead of int8. */
	int half;
	/* A scan of the whole catalogue (no candidate list, no marked items)
	 * may be split into up to threads ranges (<= 1: never split), this
	 * thread scanning one and pool's helpers the others; the answer is the
	 * same. pool NULL: never split. Catalogues under 32768 items are not
	 * split: a part costs a wake-up. */
	struct rk_scan_pool *pool;
	int threads;
	/* With approx and not half: the first pass reads the int4 rows
	 * (index.h: half int8's bytes, the bias column exact), for
	 * catalogues where the scan waits on memory; it needs a larger c
	 * (RK_TOPK_APPROX_INT4). */
	int nibble;
};

/* A second selection from the same scan (rk_topk_marked): the best k of
 * the marked items, id < n_mark with mark[id] != 0 and every id >= n_mark,
 * into out (room for k, best first), their count into n_out. list, when
 * not NULL, holds the marked ids below n_mark in ascending order (n_list
 * of them, the same set as mark): a scan of the whole catalogue then
 * visits only those, so its cost is one compare per marked item whatever
 * the scores; without it every score above the marked heap's root is
 * looked up in mark, which is most of the catalogue when marked items
 * score low (cold items). */
struct rk_topk_mark {
	const uint8_t *mark;
	uint32_t n_mark;
	int k;
	struct rk_hit *out;
	size_t n_out;
	const uint32_t *list;
	uint32_t n_list;
};

/* Helper threads for split scans (rk_topk_req.pool), shared by every
 * thread that ranks. Create with the cores a query may use beyond its own
 * (helpers 0 .. 15); destroy when no scan is in flight. Returns 0,
 * VR_EINVAL or VR_ENOMEM. */
struct rk_scan_pool;
int rk_scan_pool_create(int helpers, struct rk_scan_pool **out);
void rk_scan_pool_destroy(struct rk_scan_pool *pool);
/* The pool's helper threads (0 for NULL). */
int rk_scan_pool_helpers(const struct rk_scan_pool *pool);

/* Per-thread scratch of rk_topk / rk_topk_batch: buffers grow to the
 * largest request seen and are reused, so a serving thread allocates once
 * (a padded user row, the candidate list, k × approx hits; rk_topk_batch
 * adds, for up to 1024 users, their padded and int8 rows and candidate
 * sets: 10 MiB for 1024 users at D = 301, k = 20 and up to 262,144 items;
 * an exact set holds n / 256 hits beyond that, 32 MiB at 1 M items). */
struct rk_topk_ws;

/* Returns 0 or VR_ENOMEM. */
int rk_topk_ws_create(struct rk_topk_ws **out);
void rk_topk_ws_destroy(struct rk_topk_ws *ws);

/* The top min(k, eligible) items of view for req->user into out (best
 * first), their count into *n_out. out_cap must be at least min(k, n),
 * n = min(req->n_cand, view->n) with a candidate list, view->n without.
 * ws belongs to the calling thread.
 * Returns 0; VR_EINVAL for k <= 0, approx < 0, a non-finite user value, an
 * exclusion list out of order, a candidate id >= view->n, or out_cap too
 * small; VR_ENOMEM when ws cannot grow. */
int rk_topk(const struct rk_index_view *view, const struct rk_topk_req *req, struct rk_topk_ws *ws,
	    struct rk_hit *out, size_t out_cap, size_t *n_out);
/* rk_topk, and from the same exact scan the marked items' best into mk
 * (with the same exclusions and candidates): cold slots get the user's best
 * cold items for the price of a compare per item. mk NULL: rk_topk.
 * VR_EINVAL also for mk->k <= 0, approx != 0 or no out. */
int rk_topk_marked(const struct rk_index_view *view, const struct rk_topk_req *req,
		   struct rk_topk_mark *mk, struct rk_topk_ws *ws, struct rk_hit *out, size_t out_cap,
		   size_t *n_out);

struct rk_topk_batch_req {
	const float *users;       /* n_users × dim floats, row-major */
	uint32_t n_users;
	int k;
	/* Per user, as rk_topk_req.exclude; both NULL for no exclusions. */
	const uint32_t *const *exclude;
	const size_t *n_exclude;
	/* 0: exact. c >= 1: rk_topk_req.approx's int8 first pass, k × c
	 * candidates per user re-ranked exactly (int8 whatever pass single
	 * queries use: a batch is bound by arithmetic, where int8 is the
	 * cheapest). */
	int approx;
};

/* Top-k for many users: user u's hits go to out + u × kk (kk = min(k,
 * view->n)), their count to n_out[u]. One thread scores blocks of items
 * for all users at once from the int8 rows (AVX-512 VNNI: 4 users × 4
 * rows a step, each load used four times), then re-ranks each user's
 * candidates with rk_topk's exact kernel, so every answer is rk_topk's
 * with the same approx, bit for bit. Exact (approx 0): the candidates are
 * the items whose score may reach the k-th best by a bound on the int8
 * error (topk.c: Cauchy-Schwarz over per-row norms the index keeps); a
 * user whose scores are too close to separate, or a zero user, is
 * scanned. With approx: rk_topk's k × c candidates. Returns 0, VR_EINVAL
 * (as rk_topk) or VR_ENOMEM. */
int rk_topk_batch(const struct rk_index_view *view, const struct rk_topk_batch_req *req,
		  struct rk_topk_ws *ws, struct rk_hit *out, size_t *n_out);

/* Exact scores of items[0..n) for user into scores, the same bits as
 * rk_topk's exact path. Returns 0 or VR_EINVAL (an id >= view->n). */
int rk_score(const struct rk_index_view *view, const float *user, const uint32_t *items, size_t n,
	     struct rk_topk_ws *ws, float *scores);

/* Scores of every item of view for n_users users at once (Evaluate's full
 * score vectors): row x of scores (view->n floats, row-major) is users row
 * x against each item row. users: n_users rows of view->stride floats,
 * zero beyond view->dim. The scan kernel's arithmetic (the same bits as
 * rk_score), four users per pass over a block of rows that stays in
 * cache, on the calling thread: on one core 2.5x the time of OpenBLAS's
 * sgemm (9,633 items, D 301, 256 users: 40 vs 16 ms), the price of scores
 * that do not depend on where an item sits. Returns 0. */
int rk_score_all(const struct rk_index_view *view, const float *users, uint32_t n_users,
		 float *scores);

/* The int8 pass's integer scores of items[0..n) for user: Σ_j q_ij × q_j,
 * q_ij the item's int8 values (byte - 128, index.h) and q_j the user's,
 * round(user_j × 127 / max |user|). The same integers whichever kernel
 * computes them (tests compare them). Returns 0 or VR_EINVAL (an id >=
 * view->n, a non-finite user value). */
int rk_score_i8(const struct rk_index_view *view, const float *user, const uint32_t *items, size_t n,
		struct rk_topk_ws *ws, int32_t *dots);

/* The int4 pass's integer scores of items[0..n) for user: Σ_e q_ie × q_e
 * over columns 1 .. D - 1 (e = j - 1), q_ie the item's int4 values
 * (nibble - 8, index.h) and q_e the user's, round(user_j × 127 / max_{j
 * >= 1} |user_j|); column 0 is not in it (the pass adds it exactly). The
 * same integers from every kernel. Returns 0 or VR_EINVAL (an id >=
 * view->n, a non-finite user value). */
int rk_score_i4(const struct rk_index_view *view, const float *user, const uint32_t *items, size_t n,
		struct rk_topk_ws *ws, int32_t *dots);

/* 1 when the ascending list ids[0..n) (repeats allowed) holds id: the
 * exclusion lists' lookup, by binary search. */
int rk_ids_has(const uint32_t *ids, size_t n, uint32_t id);

/* Kernel choice. rk_isa_active() names the one in use; rk_isa_set() picks
 * one for the process (tests compare every kernel the CPU can run), and
 * returns VR_EUNSUPPORTED when the CPU lacks it. */
enum rk_isa { RK_ISA_GENERIC = 0, RK_ISA_AVX2 = 1, RK_ISA_AVX512 = 2, RK_ISA_AVX512_VNNI = 3 };
enum rk_isa rk_isa_active(void);
int rk_isa_set(enum rk_isa isa);
const char *rk_isa_name(enum rk_isa isa);

#endif
