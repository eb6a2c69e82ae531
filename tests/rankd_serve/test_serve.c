/* Unit tests of rankd's serving math: the item matrix (index.h) and top-k
 * (topk.h), against a naive full sort on seeded random data, for every
 * kernel this CPU can run. */
#include "index.h"
#include "topk.h"

#include "err.h"
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <immintrin.h>

static uint64_t rng_state;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rng_below(uint32_t n)
{
	return (uint32_t)(rng() % n);
}

/* Uniform in [-1, 1). */
static float rng_f(void)
{
	return (float)((double)(rng() >> 11) / (double)(1ull << 52) - 1.0);
}

/* Roughly normal (sum of four uniforms). */
static float rng_n(void)
{
	return (rng_f() + rng_f() + rng_f() + rng_f()) * 0.866f;
}

static int cmp_hit(const void *a, const void *b)
{
	const struct rk_hit *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return (x->item > y->item) - (x->item < y->item);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static int in_sorted(const uint32_t *a, size_t n, uint32_t x)
{
	return n && bsearch(&x, a, n, sizeof x, cmp_u32) != NULL;
}

static struct rk_index *make_index(uint32_t n, uint32_t dim, uint32_t rows_per_chunk, uint32_t n_distinct,
				   float **rows_out)
{
	struct rk_index_opts o = { rows_per_chunk };
	struct rk_index *ix = NULL;
	float *rows = malloc((size_t)(n ? n : 1) * dim * sizeof(float));
	float *pool = malloc((size_t)(n_distinct ? n_distinct : 1) * dim * sizeof(float));
	for (size_t j = 0; j < (size_t)n_distinct * dim; j++)
		pool[j] = rng_n();
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dim; j++)
			rows[(size_t)i * dim + j] = n_distinct ? pool[(size_t)rng_below(n_distinct) * dim + j] : rng_n();
	free(pool);
	if (rk_index_create(dim, &o, &ix) || rk_index_append(ix, rows, n, NULL)) {
		rk_index_destroy(ix);
		ix = NULL;
	}
	if (rows_out)
		*rows_out = rows;
	else
		free(rows);
	return ix;
}

/* The reference: rk_score on every eligible item, sorted. Returns the
 * number of eligible items (all of them, not only k). */
static size_t reference(const struct rk_index_view *v, const float *user, const uint32_t *excl, size_t n_excl,
			const uint32_t *cand, size_t n_cand, struct rk_topk_ws *ws, struct rk_hit *ref)
{
	size_t n = 0;
	uint32_t *items = malloc((v->n + n_cand + 1) * sizeof(uint32_t));
	float *s = malloc((v->n + n_cand + 1) * sizeof(float));
	if (cand) {
		memcpy(items, cand, n_cand * sizeof(uint32_t));
		qsort(items, n_cand, sizeof(uint32_t), cmp_u32);
		for (size_t i = 0; i < n_cand; i++)
			if ((n == 0 || items[i] != items[n - 1]))
				items[n++] = items[i];
	} else {
		for (uint32_t i = 0; i < v->n; i++)
			items[n++] = i;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (!in_sorted(excl, n_excl, items[i]))
			items[m++] = items[i];
	rk_score(v, user, items, m, ws, s);
	for (size_t i = 0; i < m; i++)
		ref[i] = (struct rk_hit){ items[i], s[i] };
	qsort(ref, m, sizeof *ref, cmp_hit);
	free(items);
	free(s);
	return m;
}

static double dot_ref(const float *a, const float *b, uint32_t d)
{
	double s = 0;
	for (uint32_t j = 0; j < d; j++)
		s += (double)a[j] * b[j];
	return s;
}

/* Random sorted exclusions with repeats and some ids past n. */
static size_t random_excl(uint32_t n, uint32_t *excl)
{
	size_t m = rng_below(n / 2 + 3);
	for (size_t i = 0; i < m; i++)
		excl[i] = rng_below(n + 4);
	qsort(excl, m, sizeof *excl, cmp_u32);
	return m;
}

/* The int8 pass's answer, worked out here from its integer scores
 * (rk_score_i8) and the rows' scales: the best m eligible items (ref[0 ..
 * n_ref)) by first-pass score, ties to the lower id, then the best k of
 * those by exact score. Into want (room for k); returns the count. */
static size_t int8_expected(const struct rk_index_view *v, const float *user, const struct rk_hit *ref,
			    size_t n_ref, size_t m, size_t k, struct rk_topk_ws *ws, struct rk_hit *want)
{
	uint32_t *items = malloc((n_ref + 1) * sizeof *items);
	int32_t *dots = malloc((n_ref + 1) * sizeof *dots);
	struct rk_hit *first = malloc((n_ref + 1) * sizeof *first);
	for (size_t i = 0; i < n_ref; i++)
		items[i] = ref[i].item;
	rk_score_i8(v, user, items, n_ref, ws, dots);
	for (size_t i = 0; i < n_ref; i++) {
		float scale;
		rk_index_row_i8(v, items[i], &scale);
		first[i] = (struct rk_hit){ items[i], scale * (float)dots[i] };
	}
	qsort(first, n_ref, sizeof *first, cmp_hit);
	size_t n = m < n_ref ? m : n_ref, w = 0;
	/* ref is in exact order: keep its entries that made the first cut. */
	for (size_t i = 0; i < n_ref && w < k; i++)
		for (size_t j = 0; j < n; j++)
			if (first[j].item == ref[i].item) {
				want[w++] = ref[i];
				break;
			}
	free(items);
	free(dots);
	free(first);
	return w;
}

/* Many random cases against the reference. Exact (approx 0): the same
 * hits and scores. Approximate: hits are eligible, in order, with exact
 * scores, and recall against the reference is reported and bounded; the
 * int8 pass must also give exactly the answer worked out from its integer
 * scores (int8_expected: which candidates the first pass keeps). pass: 0
 * int8, 1 fp16, 2 int4. */
static void random_cases(enum rk_isa isa, int approx, int pass)
{
	static const uint32_t ns[] = { 1, 2, 7, 64, 65, 200, 1000, 2500 };
	static const uint32_t dims[] = { 1, 3, 16, 17, 33, 301 };
	struct rk_topk_ws *ws = NULL;
	size_t found = 0, wanted = 0;
	if (rk_isa_set(isa) == VR_EUNSUPPORTED)
		SKIP("this CPU has no %s", rk_isa_name(isa));
	ASSERT_OK(rk_topk_ws_create(&ws));
	rng_state = 42 + (uint64_t)isa * 7 + (uint64_t)approx + (uint64_t)pass * 3;
	for (int c = 0; c < 150; c++) {
		uint32_t n = ns[rng_below(8)], dim = dims[rng_below(6)];
		uint32_t distinct = rng_below(3) == 0 ? 1 + rng_below(5) : 0; /* ties */
		uint32_t chunk = 1u << rng_below(8);
		float *rows;
		struct rk_index *ix = make_index(n, dim, chunk, distinct, &rows);
		ASSERT(ix);
		struct rk_index_view v;
		rk_index_acquire(ix, &v);
		float *user = malloc(dim * sizeof(float));
		for (uint32_t j = 0; j < dim; j++)
			user[j] = rng_n();
		uint32_t *excl = malloc((n + 8) * sizeof(uint32_t));
		size_t n_excl = rng_below(2) ? random_excl(n, excl) : 0;
		uint32_t *cand = NULL;
		size_t n_cand = 0;
		if (rng_below(3) == 0) {
			n_cand = rng_below(2 * n + 1);
			cand = malloc((n_cand + 1) * sizeof(uint32_t));
			for (size_t i = 0; i < n_cand; i++)
				cand[i] = rng_below(n);
		}
		int k = (int)(rng_below(2) ? 1 + rng_below(25) : n + rng_below(3));
		struct rk_hit *ref = malloc((n + 1) * sizeof *ref);
		struct rk_hit *out = malloc((n + 1) * sizeof *out);
		float *exact = malloc(n * sizeof(float)); /* NaN: not eligible */
		size_t n_ref = reference(&v, user, excl, n_excl, cand, n_cand, ws, ref), n_out = 0;
		for (uint32_t i = 0; i < n; i++)
			exact[i] = NAN;
		for (size_t i = 0; i < n_ref; i++)
			exact[ref[i].item] = ref[i].score;
		struct rk_topk_req req = { user, k, excl, n_excl, cand, n_cand, approx, pass == 1, NULL, 0, pass == 2 };
		int rc = rk_topk(&v, &req, ws, out, n + 1, &n_out);
		size_t want = (size_t)k < n_ref ? (size_t)k : n_ref;
		int bad = rc != 0 || n_out != want;
		/* The first pass runs when k × approx is under the ids it ranks. */
		size_t bound = n, kk = (size_t)k;
		if (cand) {
			uint32_t *u = malloc((n_cand + 1) * sizeof *u);
			memcpy(u, cand, n_cand * sizeof *u);
			qsort(u, n_cand, sizeof *u, cmp_u32);
			bound = 0;
			for (size_t i = 0; i < n_cand; i++)
				bound += !i || u[i] != u[i - 1];
			free(u);
		}
		kk = kk < bound ? kk : bound;
		if (!bad && approx && pass == 0 && (size_t)approx * kk < bound) {
			struct rk_hit *w8 = malloc((n + 1) * sizeof *w8);
			size_t n8 = int8_expected(&v, user, ref, n_ref, (size_t)approx * kk, (size_t)k, ws, w8);
			bad = n8 != n_out;
			for (size_t i = 0; !bad && i < n8; i++)
				bad = out[i].item != w8[i].item || out[i].score != w8[i].score;
			if (bad)
				fprintf(stderr, "  case %d: the int8 pass's answer differs from its worked-out one\n", c);
			free(w8);
		}
		for (size_t i = 0; !bad && i < want; i++) {
			if (approx)
				bad = !(out[i].score == exact[out[i].item]) || (i && cmp_hit(&out[i - 1], &out[i]) >= 0);
			else
				bad = out[i].item != ref[i].item || out[i].score != ref[i].score;
			for (size_t j = 0; j < want; j++)
				found += out[i].item == ref[j].item;
		}
		wanted += want;
		/* Exact scans also select marked items (cold slots): the
		 * reference's eligible list filtered to them, in its order; by
		 * the mark bytes alone and with the ascending list of them. */
		if (!approx && !bad) {
			uint32_t n_mark = rng_below(n + 1), n_list = 0;
			uint8_t *mark = malloc(n + 1);
			uint32_t *list = malloc((n + 1) * sizeof *list);
			for (uint32_t i = 0; i < n_mark; i++)
				if ((mark[i] = rng_below(4) == 0))
					list[n_list++] = i;
			struct rk_hit *mout = malloc((n + 1) * sizeof *mout), *sink = malloc((n + 1) * sizeof *sink);
			int k2 = 1 + (int)rng_below(8);
			for (int by_list = 0; by_list < 2 && !bad; by_list++) {
				struct rk_topk_mark mk = { mark, n_mark, k2, mout, 0, by_list ? list : NULL,
							   by_list ? n_list : 0 };
				size_t n_sink = 0, m = 0;
				rc = rk_topk_marked(&v, &req, &mk, ws, sink, n + 1, &n_sink);
				bad = rc != 0 || n_sink != n_out;
				for (size_t i = 0; !bad && i < n_ref && m < (size_t)mk.k; i++) {
					uint32_t id = ref[i].item;
					if (id < n_mark && !mark[id])
						continue;
					bad = m >= mk.n_out || mout[m].item != id || mout[m].score != ref[i].score;
					m++;
				}
				bad |= m != mk.n_out;
				if (bad)
					fprintf(stderr, "  case %d: marked selection%s differs (n_mark %u, k2 %d, "
						"%zu of %zu)\n", c, by_list ? " by list" : "", n_mark, mk.k, mk.n_out, m);
			}
			free(list);
			free(mark);
			free(mout);
			free(sink);
		}
		for (size_t i = 0; !bad && i < n_ref; i++) {
			double d = dot_ref(user, rows + (size_t)ref[i].item * dim, dim);
			bad = fabs(d - ref[i].score) > 1e-4 * (1 + fabs(d)) + 1e-5 * dim;
		}
		if (bad)
			fprintf(stderr, "  case %d: isa %s approx %d n %u dim %u chunk %u distinct %u k %d excl %zu "
				"cand %zu: rc %d, %zu hits, want %zu\n", c, rk_isa_name(isa), approx, n, dim, chunk,
				distinct, k, n_excl, n_cand, rc, n_out, want);
		free(exact);
		free(user);
		free(excl);
		free(cand);
		free(ref);
		free(out);
		free(rows);
		rk_index_release(&v);
		rk_index_destroy(ix);
		ASSERT(!bad);
	}
	rk_topk_ws_destroy(ws);
	if (approx) {
		double recall = wanted ? (double)found / (double)wanted : 1;
		fprintf(stderr, "  approx %d (%s): recall %.4f over %zu hits\n", approx,
			pass == 1 ? "fp16" : pass == 2 ? "int4" : "int8", recall, wanted);
		ASSERT(recall >= 0.97);
	}
}

/* Restores the best kernel after a test that forced one. */
static void isa_best(void)
{
	for (int isa = RK_ISA_AVX512_VNNI; rk_isa_set((enum rk_isa)isa); isa--)
		;
}

TEST(topk_matches_sort_generic) { random_cases(RK_ISA_GENERIC, 0, 0); isa_best(); }
TEST(topk_matches_sort_avx2) { random_cases(RK_ISA_AVX2, 0, 0); isa_best(); }
TEST(topk_matches_sort_avx512) { random_cases(RK_ISA_AVX512, 0, 0); isa_best(); }
TEST(topk_approx_generic) { random_cases(RK_ISA_GENERIC, 2, 0); isa_best(); }
TEST(topk_approx_avx2) { random_cases(RK_ISA_AVX2, 2, 0); isa_best(); }
TEST(topk_approx_avx512) { random_cases(RK_ISA_AVX512, 2, 0); isa_best(); }
TEST(topk_approx_avx512_vnni) { random_cases(RK_ISA_AVX512_VNNI, 2, 0); isa_best(); }
TEST(topk_approx_fp16_generic) { random_cases(RK_ISA_GENERIC, 2, 1); isa_best(); }
TEST(topk_approx_fp16_avx2) { random_cases(RK_ISA_AVX2, 2, 1); isa_best(); }
TEST(topk_approx_fp16_avx512) { random_cases(RK_ISA_AVX512, 2, 1); isa_best(); }
TEST(topk_approx_int4_generic) { random_cases(RK_ISA_GENERIC, 4, 2); isa_best(); }
TEST(topk_approx_int4_avx2) { random_cases(RK_ISA_AVX2, 4, 2); isa_best(); }
TEST(topk_approx_int4_avx512_vnni) { random_cases(RK_ISA_AVX512_VNNI, 4, 2); isa_best(); }

/* One width's case of the kernel agreement tests: n random rows of dim
 * values (make_index) with row 1 all extremes (±5; its column 0 ext0 when
 * non-zero) and row 2 zeros, a view, the items in a scrambled order, and
 * buffers for the user, its quantised copy and the dot products. */
struct dots_case {
	struct rk_index *ix;
	struct rk_index_view v;
	float *rows, *user;
	int8_t *uq;
	uint32_t *items, dim;
	int32_t *ref, *got;
};

static int dots_case_open(struct dots_case *c, uint32_t dim, uint32_t n, float ext0)
{
	memset(c, 0, sizeof *c);
	c->dim = dim;
	float *ext = malloc(dim * sizeof(float)), *zero = calloc(dim, sizeof(float));
	c->ix = make_index(n, dim, 64, 0, &c->rows);
	c->user = malloc(dim * sizeof(float));
	c->uq = malloc(dim);
	c->items = malloc(n * sizeof *c->items);
	c->ref = malloc(n * sizeof *c->ref);
	c->got = malloc(n * sizeof *c->got);
	int rc = !ext || !zero || !c->ix || !c->user || !c->uq || !c->items || !c->ref || !c->got ?
		VR_ENOMEM : 0;
	if (!rc) {
		for (uint32_t j = 0; j < dim; j++)
			ext[j] = j % 3 ? 5.0f : -5.0f;
		if (ext0 != 0)
			ext[0] = ext0;
		for (uint32_t i = 0; i < n; i++)
			c->items[i] = (i * 7) % n; /* any order (7 and n coprime) */
		if (!(rc = rk_index_replace(c->ix, 1, ext)) && !(rc = rk_index_replace(c->ix, 2, zero)))
			rk_index_acquire(c->ix, &c->v);
	}
	free(ext);
	free(zero);
	return rc;
}

/* Fills the user row for a trial (2: alternating ±7, else random) and
 * returns the largest magnitude from column `from` on. */
static float dots_case_user(struct dots_case *c, int trial, uint32_t from)
{
	float m = 0;
	for (uint32_t j = 0; j < c->dim; j++) {
		c->user[j] = trial == 2 ? (j % 2 ? 7.0f : -7.0f) : rng_n();
		if (j >= from && fabsf(c->user[j]) > m)
			m = fabsf(c->user[j]);
	}
	return m;
}

static void dots_case_close(struct dots_case *c)
{
	free(c->user);
	free(c->uq);
	free(c->items);
	free(c->ref);
	free(c->got);
	free(c->rows);
	if (c->ix) {
		rk_index_release(&c->v);
		rk_index_destroy(c->ix);
	}
}

typedef int (*score_dots_fn)(const struct rk_index_view *, const float *, const uint32_t *, size_t,
			     struct rk_topk_ws *, int32_t *);

/* Scores items[0..n) with every kernel this CPU has (counting them in
 * *ran) and returns how many dot products differ from ref, naming each on
 * stderr; -1 when a kernel fails. Leaves the best kernel selected. */
static int kernels_differ(score_dots_fn score, const struct rk_index_view *v, const float *user,
			  const uint32_t *items, uint32_t n, struct rk_topk_ws *ws, int32_t *got,
			  const int32_t *ref, int *ran)
{
	int bad = 0;
	for (int isa = RK_ISA_GENERIC; isa <= RK_ISA_AVX512_VNNI && bad >= 0; isa++) {
		if (rk_isa_set((enum rk_isa)isa))
			continue;
		(*ran)++;
		if (score(v, user, items, n, ws, got)) {
			bad = -1;
			break;
		}
		for (uint32_t i = 0; i < n; i++)
			if (got[i] != ref[i]) {
				fprintf(stderr, "  %s item %u: %d, want %d\n", rk_isa_name((enum rk_isa)isa),
					items[i], got[i], ref[i]);
				bad++;
			}
	}
	isa_best();
	return bad;
}

/* The int8 pass's integer dot products: every kernel this CPU runs gives
 * the integers of a scalar reference written from index.h's and topk.h's
 * definitions (the stored bytes, the user quantised here), on random rows
 * of many widths, extreme values included; then the int8 first pass with
 * the default oversampling returns exactly the exact scan's top-k. */
TEST(int8_dots_agree_across_kernels)
{
	static const uint32_t dims[] = { 1, 3, 16, 63, 64, 65, 127, 128, 129, 301, 700 };
	struct rk_topk_ws *ws;
	int ran = 0;
	ASSERT_OK(rk_topk_ws_create(&ws));
	rng_state = 17;
	for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
		uint32_t dim = dims[di], n = 300;
		struct dots_case c;
		ASSERT_OK(dots_case_open(&c, dim, n, 0));
		struct rk_index_view v = c.v;
		const float *rows = c.rows;
		ASSERT_EQ_INT(v.stride8 % 64, 0);
		for (int trial = 0; trial < 3; trial++) {
			float m = dots_case_user(&c, trial, 0);
			for (uint32_t j = 0; j < dim; j++)
				c.uq[j] = (int8_t)lrintf(c.user[j] * (127.0f / m));
			for (uint32_t i = 0; i < n; i++) {
				float scale;
				const uint8_t *b = rk_index_row_i8(&v, c.items[i], &scale);
				int32_t acc = 0;
				for (uint32_t j = 0; j < v.stride8; j++)
					acc += (j < dim ? c.uq[j] : 0) * ((int32_t)b[j] - 128);
				c.ref[i] = acc;
			}
			ASSERT_EQ_INT(kernels_differ(rk_score_i8, &v, c.user, c.items, n, ws, c.got, c.ref,
						     &ran), 0);
		}
		/* Quantisation: within half a step of the row, extremes at ±127. */
		float scale;
		const uint8_t *b = rk_index_row_i8(&v, 1, &scale);
		for (uint32_t j = 0; j < dim; j++)
			ASSERT_EQ_INT(b[j], j % 3 ? 255 : 1);
		b = rk_index_row_i8(&v, 2, &scale);
		ASSERT(scale == 0 && b[0] == 128);
		b = rk_index_row_i8(&v, 5, &scale);
		for (uint32_t j = 0; j < dim; j++)
			ASSERT(fabsf(scale * (float)((int)b[j] - 128) - rows[5 * (size_t)dim + j]) <= scale * 0.5f + 1e-6f);
		dots_case_close(&c);
	}
	fprintf(stderr, "  %d kernel runs compared\n", ran);
	rk_topk_ws_destroy(ws);
}

/* The exact batch's error bound (topk.c: b = p_i du + r_i uu + 1e-6 |a|,
 * p_i and r_i from index.h's chunk_i8b) holds: for every item, the exact
 * fp32 score of each kernel is within s_u b of s_u a, a = s_i × the int8
 * dot (rk_score_i8), over widths from 1 to 700, rows with extremes and a
 * zero row, random users and one that quantises exactly. The worst gap
 * over its bound goes to stderr: it is what a tighter bound would spend. */
TEST(int8_batch_bound_holds)
{
	static const uint32_t dims[] = { 1, 2, 3, 17, 64, 301, 700 };
	struct rk_topk_ws *ws;
	double worst = 0;
	ASSERT_OK(rk_topk_ws_create(&ws));
	rng_state = 23;
	for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
		uint32_t dim = dims[di], n = 400;
		struct dots_case c;
		ASSERT_OK(dots_case_open(&c, dim, n, 0));
		struct rk_index_view v = c.v;
		float *exact = malloc(n * sizeof(float));
		ASSERT(exact);
		for (int trial = 0; trial < 6; trial++) {
			float m = dots_case_user(&c, trial % 3, 0);
			double su = (double)m / 127, dd = 0, uu = 0;
			for (uint32_t j = 0; j < dim; j++) {
				long q = lrintf(c.user[j] * (127.0f / m));
				double d = (double)c.user[j] - su * (double)(q > 127 ? 127 : q < -127 ? -127 : q);
				dd += d * d;
				uu += (double)c.user[j] * c.user[j];
			}
			ASSERT_OK(rk_score_i8(&v, c.user, c.items, n, ws, c.got));
			for (int isa = RK_ISA_AVX512_VNNI; isa >= 0; isa--) {
				if (rk_isa_set((enum rk_isa)isa))
					continue;
				ASSERT_OK(rk_score(&v, c.user, c.items, n, ws, exact));
				for (uint32_t i = 0; i < n; i++) {
					uint32_t id = c.items[i], ch = id >> v.chunk_shift, r = id & ((1u << v.chunk_shift) - 1);
					float a = v.chunk_scale[ch][r] * (float)c.got[i];
					const float *pr = v.chunk_i8b[ch] + 2 * (size_t)r;
					double b = su * ((double)pr[0] * sqrt(dd) / su + (double)pr[1] * sqrt(uu) / su +
							 1e-6 * fabs(a));
					double gap = fabs((double)exact[i] - su * a);
					if (b > 0 && gap / b > worst)
						worst = gap / b;
					if (gap > b)
						fprintf(stderr, "  dim %u, trial %d, %s, item %u: |exact - s_u a| %g over the bound %g\n",
							dim, trial, rk_isa_name((enum rk_isa)isa), id, gap, b);
					ASSERT(gap <= b);
				}
			}
			isa_best();
		}
		free(exact);
		dots_case_close(&c);
	}
	fprintf(stderr, "  worst gap / bound %.3f\n", worst);
	rk_topk_ws_destroy(ws);
}

/* The int4 copy's nibble of element e = j - 1 (index.h's layout). */
static int nib4(const uint8_t *b, uint32_t e)
{
	uint8_t x = b[32 * (e / 64) + e % 32];
	return e % 64 < 32 ? x & 15 : x >> 4;
}

/* Every int4 kernel gives the integers worked out here from index.h's
 * layout, and the copy is the row to within half a step, column 0 exact. */
TEST(int4_dots_agree_across_kernels)
{
	static const uint32_t dims[] = { 1, 2, 3, 33, 64, 65, 66, 128, 129, 130, 193, 301, 700 };
	struct rk_topk_ws *ws;
	int ran = 0;
	ASSERT_OK(rk_topk_ws_create(&ws));
	rng_state = 23;
	for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
		uint32_t dim = dims[di], n = 300;
		struct dots_case c;
		/* The bias column of the extremes row does not set the scale. */
		ASSERT_OK(dots_case_open(&c, dim, n, 1000.0f));
		struct rk_index_view v = c.v;
		const float *rows = c.rows;
		ASSERT_EQ_INT(v.stride4 % 32, 0);
		ASSERT(v.stride4 * 2 >= dim - 1);
		for (int trial = 0; trial < 3; trial++) {
			float m = dots_case_user(&c, trial, 1);
			for (uint32_t j = 1; j < dim; j++)
				c.uq[j] = (int8_t)lrintf(c.user[j] * (127.0f / m));
			for (uint32_t i = 0; i < n; i++) {
				float c0, scale;
				const uint8_t *b = rk_index_row_i4(&v, c.items[i], &c0, &scale);
				int32_t acc = 0;
				for (uint32_t j = 1; j < dim; j++)
					acc += c.uq[j] * (nib4(b, j - 1) - 8);
				c.ref[i] = acc;
			}
			ASSERT_EQ_INT(kernels_differ(rk_score_i4, &v, c.user, c.items, n, ws, c.got, c.ref,
						     &ran), 0);
		}
		/* Quantisation: extremes at 1 and 15 whatever column 0 holds,
		 * a zero row all 8 with scale 0, padding 8, within half a step. */
		float c0, scale;
		const uint8_t *b = rk_index_row_i4(&v, 1, &c0, &scale);
		ASSERT(c0 == 1000.0f);
		for (uint32_t j = 1; j < dim; j++)
			ASSERT_EQ_INT(nib4(b, j - 1), j % 3 ? 15 : 1);
		for (uint32_t e = dim - 1; e < 2 * v.stride4; e++)
			ASSERT_EQ_INT(nib4(b, e), 8);
		b = rk_index_row_i4(&v, 2, &c0, &scale);
		ASSERT(scale == 0 && c0 == 0);
		for (uint32_t e = 0; e < 2 * v.stride4; e++)
			ASSERT_EQ_INT(nib4(b, e), 8);
		b = rk_index_row_i4(&v, 5, &c0, &scale);
		ASSERT(c0 == rows[5 * (size_t)dim]);
		for (uint32_t j = 1; j < dim; j++)
			ASSERT(fabsf(scale * (float)(nib4(b, j - 1) - 8) - rows[5 * (size_t)dim + j]) <=
			       scale * 0.5f + 1e-6f);
		dots_case_close(&c);
	}
	fprintf(stderr, "  %d kernel runs compared\n", ran);
	rk_topk_ws_destroy(ws);
}

TEST(topk_ties_by_lower_id)
{
	/* Every row identical: all scores tie, so the top-k is the k lowest
	 * non-excluded ids. */
	enum { N = 300, D = 19 };
	struct rk_index *ix;
	float row[D], user[D];
	struct rk_hit out[N];
	size_t n_out;
	struct rk_topk_ws *ws;
	for (int j = 0; j < D; j++) {
		row[j] = 0.25f * (float)(j % 5);
		user[j] = 1.0f - 0.1f * (float)j;
	}
	ASSERT_OK(rk_index_create(D, &(struct rk_index_opts){ 32 }, &ix));
	for (int i = 0; i < N; i++)
		ASSERT_OK(rk_index_append(ix, row, 1, NULL));
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	uint32_t excl[] = { 0, 2, 2, 5 };
	for (int approx = 0; approx < 3; approx++) {
		struct rk_topk_req req = { user, 4, excl, 4, NULL, 0, approx, 0, NULL, 0, 0 };
		ASSERT_OK(rk_topk(&v, &req, ws, out, N, &n_out));
		ASSERT_EQ_INT(n_out, 4);
		ASSERT_EQ_INT(out[0].item, 1);
		ASSERT_EQ_INT(out[1].item, 3);
		ASSERT_EQ_INT(out[2].item, 4);
		ASSERT_EQ_INT(out[3].item, 6);
	}
	/* A candidate list in reverse order with repeats gives the same order. */
	uint32_t cand[] = { 299, 250, 250, 7, 3, 299 };
	struct rk_topk_req req = { user, 10, excl, 4, cand, 6, 0, 0, NULL, 0, 0 };
	ASSERT_OK(rk_topk(&v, &req, ws, out, N, &n_out));
	ASSERT_EQ_INT(n_out, 4);
	ASSERT_EQ_INT(out[0].item, 3);
	ASSERT_EQ_INT(out[1].item, 7);
	ASSERT_EQ_INT(out[2].item, 250);
	ASSERT_EQ_INT(out[3].item, 299);
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
}

TEST(topk_k_over_catalogue_returns_all)
{
	struct rk_topk_ws *ws;
	struct rk_hit out[64];
	size_t n_out;
	rng_state = 3;
	struct rk_index *ix = make_index(40, 8, 0, 0, NULL);
	ASSERT(ix);
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	float user[8] = { 1, -1, 0.5f, 2, 0, 0, 1, 1 };
	uint32_t excl[] = { 1, 10, 39, 40, 1000 };
	struct rk_topk_req req = { user, 1000000, excl, 5, NULL, 0, 0, 0, NULL, 0, 0 };
	ASSERT_OK(rk_topk(&v, &req, ws, out, 40, &n_out));
	ASSERT_EQ_INT(n_out, 37);
	for (size_t i = 0; i < n_out; i++) {
		ASSERT(!in_sorted(excl, 5, out[i].item));
		if (i)
			ASSERT(cmp_hit(&out[i - 1], &out[i]) < 0);
	}
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
}

TEST(topk_invalid_arguments)
{
	struct rk_topk_ws *ws;
	struct rk_hit out[16];
	size_t n_out = 99;
	rng_state = 4;
	struct rk_index *ix = make_index(10, 4, 0, 0, NULL);
	ASSERT(ix);
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	float user[4] = { 1, 2, 3, 4 };
	uint32_t bad_cand[] = { 3, 10 }, unsorted[] = { 5, 2 };
	struct rk_topk_req req = { user, 0, NULL, 0, NULL, 0, 0, 0, NULL, 0, 0 };
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 16, &n_out), VR_EINVAL);
	ASSERT_EQ_INT(n_out, 0);
	req.k = -3;
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 16, &n_out), VR_EINVAL);
	req.k = 3;
	req.cand = bad_cand;
	req.n_cand = 2;
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 16, &n_out), VR_EINVAL);
	req.cand = NULL;
	req.n_cand = 0;
	req.exclude = unsorted;
	req.n_exclude = 2;
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 16, &n_out), VR_EINVAL);
	req.exclude = NULL;
	req.n_exclude = 0;
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 2, &n_out), VR_EINVAL); /* out too small */
	req.approx = -1;
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 16, &n_out), VR_EINVAL);
	req.approx = 0;
	user[2] = NAN;
	ASSERT_EQ_INT(rk_topk(&v, &req, ws, out, 16, &n_out), VR_EINVAL);
	user[2] = 3;
	ASSERT_OK(rk_topk(&v, &req, ws, out, 3, &n_out));
	ASSERT_EQ_INT(n_out, 3);
	uint32_t one = 10;
	float s;
	ASSERT_EQ_INT(rk_score(&v, user, &one, 1, ws, &s), VR_EINVAL);
	struct rk_topk_batch_req b = { user, 1, 0, NULL, NULL, 0 };
	size_t nb;
	ASSERT_EQ_INT(rk_topk_batch(&v, &b, ws, out, &nb), VR_EINVAL);
	b.k = 3;
	b.approx = -1;
	ASSERT_EQ_INT(rk_topk_batch(&v, &b, ws, out, &nb), VR_EINVAL);
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
}

TEST(topk_empty_index)
{
	struct rk_index *ix;
	struct rk_topk_ws *ws;
	struct rk_hit out[1];
	size_t n_out = 7;
	float user[3] = { 1, 1, 1 };
	ASSERT_OK(rk_index_create(3, NULL, &ix));
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	struct rk_topk_req req = { user, 5, NULL, 0, NULL, 0, 2, 0, NULL, 0, 0 };
	ASSERT_OK(rk_topk(&v, &req, ws, out, 0, &n_out));
	ASSERT_EQ_INT(n_out, 0);
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
}

/* Batched scores come from BLAS, so they are checked against double
 * precision within a tolerance: every hit is correct to it, the list is in
 * order, and nothing left out beats the last hit by more than it. */
TEST(topk_batch_valid)
{
	enum { N = 3000, D = 301, U = 300, K = 20 };
	float *rows;
	struct rk_topk_ws *ws;
	rng_state = 5;
	struct rk_index *ix = make_index(N, D, 512, 0, &rows);
	ASSERT(ix);
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	float *users = malloc((size_t)U * D * sizeof(float));
	for (size_t j = 0; j < (size_t)U * D; j++)
		users[j] = rng_n();
	uint32_t *ex = malloc((size_t)U * 50 * sizeof(uint32_t));
	const uint32_t *exp[U];
	size_t n_ex[U];
	for (int u = 0; u < U; u++) {
		n_ex[u] = random_excl(100, ex + u * 50) % 50;
		exp[u] = ex + u * 50;
	}
	struct rk_hit *out = malloc((size_t)U * K * sizeof *out);
	size_t n_out[U];
	struct rk_topk_batch_req b = { users, U, K, exp, n_ex, 0 };
	ASSERT_OK(rk_topk_batch(&v, &b, ws, out, n_out));
	double *ref = malloc(N * sizeof(double));
	int bad = 0;
	for (int u = 0; u < U && !bad; u++) {
		const float *us = users + (size_t)u * D;
		const struct rk_hit *h = out + (size_t)u * K;
		bad |= n_out[u] != K;
		for (int i = 0; i < N; i++)
			ref[i] = dot_ref(us, rows + (size_t)i * D, D);
		for (int i = 0; i < K; i++) {
			bad |= fabs(h[i].score - ref[h[i].item]) > 1e-3;
			bad |= in_sorted(exp[u], n_ex[u], h[i].item);
			if (i)
				bad |= cmp_hit(&h[i - 1], &h[i]) >= 0;
		}
		for (int i = 0; i < N; i++) {
			int hit = 0;
			for (int j = 0; j < K; j++)
				hit |= h[j].item == (uint32_t)i;
			if (!hit && !in_sorted(exp[u], n_ex[u], i))
				bad |= ref[i] > h[K - 1].score + 1e-3;
		}
		if (bad)
			fprintf(stderr, "  user %d differs\n", u);
	}
	free(ref);
	free(out);
	free(ex);
	free(users);
	free(rows);
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
	ASSERT(!bad);
}

/* rk_topk_batch against rk_topk with the same approx, user by user: the
 * same items and the same score bits, with exclusions, a user count and a
 * catalogue that leave short tiles (37 users, n items in chunks of 512),
 * for every kernel the CPU has (VNNI scores 4 users x 4 rows a step; the
 * others dot8 per user). c = 0 is the exact batch (candidates by the
 * int8 error bound); distinct > 0 makes rows repeat (ties, and users
 * whose candidates overflow into a scan). Two thirds of the users have
 * exclusions, so some blocks hold an excluded id (select_bounded's item by
 * item path) and others none (its vector path). */
static void batch_case(enum rk_isa isa, int c, uint32_t n, uint32_t dim, uint32_t distinct)
{
	enum { U = 37, K = 20 };
	float *rows;
	struct rk_topk_ws *ws;
	if (rk_isa_set(isa) == VR_EUNSUPPORTED)
		SKIP("this CPU has no %s", rk_isa_name(isa));
	rng_state = 11 + (uint64_t)c + dim + distinct;
	struct rk_index *ix = make_index(n, dim, 512, distinct, &rows);
	ASSERT(ix);
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	float *users = malloc((size_t)U * dim * sizeof(float));
	for (size_t j = 0; j < (size_t)U * dim; j++)
		users[j] = rng_n();
	memset(users, 0, dim * sizeof(float)); /* a zero user: every score 0 */
	uint32_t *ex = malloc((size_t)U * (n / 2 + 8) * sizeof(uint32_t));
	const uint32_t *exp[U];
	size_t n_ex[U];
	for (int u = 0; u < U; u++) {
		exp[u] = ex + (size_t)u * (n / 2 + 8);
		n_ex[u] = u % 3 ? random_excl(n, (uint32_t *)exp[u]) : 0;
	}
	struct rk_hit *out = malloc((size_t)U * K * sizeof *out), one[K];
	size_t n_out[U], n_one;
	struct rk_topk_batch_req b = { users, U, K, exp, n_ex, c };
	size_t kk = K < n ? K : n; /* hits per user in out */
	ASSERT_OK(rk_topk_batch(&v, &b, ws, out, n_out));
	int bad = 0;
	for (int u = 0; u < U && !bad; u++) {
		struct rk_topk_req q = { users + (size_t)u * dim, K, exp[u], n_ex[u], NULL, 0, c, 0, NULL, 0, 0 };
		ASSERT_OK(rk_topk(&v, &q, ws, one, K, &n_one));
		bad |= n_one != n_out[u];
		for (size_t i = 0; i < n_one && !bad; i++)
			bad |= one[i].item != out[u * kk + i].item ||
			       memcmp(&one[i].score, &out[u * kk + i].score, sizeof(float));
		if (bad)
			fprintf(stderr, "  n %u, dim %u, distinct %u, c %d: user %d differs from rk_topk\n", n, dim,
				distinct, c, u);
	}
	free(out);
	free(ex);
	free(users);
	free(rows);
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
	ASSERT(!bad);
}

static void batch_cases(enum rk_isa isa, int c)
{
	batch_case(isa, c, 2999, 301, 0);
	batch_case(isa, c, 2999, 17, 0);
	batch_case(isa, c, 1000, 33, 4);
	/* Past the exact set's room (1024): ties that overflow it. */
	batch_case(isa, c, 2999, 33, 4);
	batch_case(isa, c, 5, 8, 0);
}

TEST(topk_batch_approx_generic) { batch_cases(RK_ISA_GENERIC, 2); isa_best(); }
TEST(topk_batch_approx_avx2) { batch_cases(RK_ISA_AVX2, 2); isa_best(); }
TEST(topk_batch_approx_avx512_vnni) { batch_cases(RK_ISA_AVX512_VNNI, 2); isa_best(); }
TEST(topk_batch_exact_generic) { batch_cases(RK_ISA_GENERIC, 0); isa_best(); }
TEST(topk_batch_exact_avx2) { batch_cases(RK_ISA_AVX2, 0); isa_best(); }
TEST(topk_batch_exact_avx512_vnni) { batch_cases(RK_ISA_AVX512_VNNI, 0); isa_best(); }

/* rk_score_all (Evaluate's path) against rk_score (the scan kernel), with
 * every kernel this CPU runs: the same bits for every user and item, on
 * catalogues of several chunks (the last partial, chunks smaller than the
 * row block too) and user counts that are and are not multiples of four.
 * Rows repeat (a few distinct rows, as BPR's cold items share one prior
 * row): equal rows must get equal scores wherever they sit, which a BLAS
 * sgemm does not promise (OpenBLAS 0.3.21's Zen kernel broke such ties,
 * and Evaluate then saw BPR tell its cold items apart). */
TEST(score_all_matches_score)
{
	static const struct { uint32_t n, dim, chunk, distinct, users; } cases[] = {
		{ 1300, 37, 512, 0, 9 }, { 1300, 37, 512, 7, 8 }, { 700, 301, 64, 5, 13 },
		{ 129, 1, 32, 0, 1 }, { 600, 96, 4096, 3, 64 }, { 1, 16, 16, 0, 3 },
	};
	struct rk_topk_ws *ws;
	int ran = 0;
	ASSERT_OK(rk_topk_ws_create(&ws));
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		uint32_t N = cases[c].n, D = cases[c].dim, U = cases[c].users;
		rng_state = 11 + c;
		struct rk_index *ix = make_index(N, D, cases[c].chunk, cases[c].distinct, NULL);
		ASSERT(ix);
		struct rk_index_view v;
		rk_index_acquire(ix, &v);
		float *users = calloc((size_t)U * v.stride, sizeof(float));
		float *all = malloc((size_t)U * N * sizeof(float)), *one = malloc(N * sizeof(float));
		uint32_t *items = malloc(N * sizeof(uint32_t));
		for (uint32_t i = 0; i < N; i++)
			items[i] = i;
		for (uint32_t u = 0; u < U; u++)
			for (uint32_t j = 0; j < D; j++)
				users[(size_t)u * v.stride + j] = rng_n();
		for (int isa = RK_ISA_GENERIC; isa <= RK_ISA_AVX512_VNNI; isa++) {
			if (rk_isa_set((enum rk_isa)isa))
				continue;
			ran++;
			memset(all, 0xff, (size_t)U * N * sizeof(float));
			ASSERT_OK(rk_score_all(&v, users, U, all));
			for (uint32_t u = 0; u < U; u++) {
				ASSERT_OK(rk_score(&v, users + (size_t)u * v.stride, items, N, ws, one));
				for (uint32_t i = 0; i < N; i++)
					ASSERT_MSG(!memcmp(&all[(size_t)u * N + i], &one[i], sizeof(float)),
						   "%s, case %zu: user %u item %u: %.9g, the scan %.9g",
						   rk_isa_name((enum rk_isa)isa), c, u, i, all[(size_t)u * N + i], one[i]);
			}
		}
		isa_best();
		rk_index_release(&v);
		rk_index_destroy(ix);
		free(users);
		free(all);
		free(one);
		free(items);
	}
	ASSERT(ran >= 1);
	rk_topk_ws_destroy(ws);
}

/* recall@20 of the fp16 pass + exact re-rank against exact, on data shaped
 * like VBPR's item rows (D = 301: a bias column, 200 latent, 100 visual
 * factors at different scales, items in taste clusters). */
TEST(topk_approx_recall)
{
	enum { N = 20000, D = 301, USERS = 40, K = 20, CLUSTERS = 50 };
	struct rk_index *ix;
	struct rk_topk_ws *ws;
	rng_state = 6;
	float *centres = malloc((size_t)CLUSTERS * D * sizeof(float));
	float *rows = malloc((size_t)N * D * sizeof(float));
	for (size_t j = 0; j < (size_t)CLUSTERS * D; j++)
		centres[j] = rng_n();
	for (int i = 0; i < N; i++) {
		const float *c = centres + (size_t)rng_below(CLUSTERS) * D;
		float *r = rows + (size_t)i * D;
		r[0] = 2.0f * rng_n();
		for (int j = 1; j < D; j++)
			r[j] = (j <= 200 ? 0.1f : 0.5f) * (c[j] + 0.5f * rng_n());
	}
	ASSERT_OK(rk_index_create(D, NULL, &ix));
	ASSERT_OK(rk_index_append(ix, rows, N, NULL));
	ASSERT_OK(rk_topk_ws_create(&ws));
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	struct rk_hit ex[K], ap[K];
	size_t n1, n2, found[2] = { 0, 0 }, same[2] = { 0, 0 };
	float user[D];
	for (int u = 0; u < USERS; u++) {
		user[0] = 1;
		for (int j = 1; j < D; j++)
			user[j] = rng_n();
		struct rk_topk_req req = { user, K, NULL, 0, NULL, 0, 0, 0, NULL, 0, 0 };
		ASSERT_OK(rk_topk(&v, &req, ws, ex, K, &n1));
		ASSERT_EQ_INT(n1, K);
		for (int half = 0; half < 2; half++) {
			req.approx = RK_TOPK_APPROX_DEFAULT;
			req.half = half;
			ASSERT_OK(rk_topk(&v, &req, ws, ap, K, &n2));
			ASSERT_EQ_INT(n2, K);
			int all = 1;
			for (int a = 0; a < K; a++) {
				all &= ap[a].item == ex[a].item && ap[a].score == ex[a].score;
				for (int b = 0; b < K; b++)
					found[half] += ex[a].item == ap[b].item;
			}
			same[half] += (size_t)all;
		}
	}
	for (int half = 0; half < 2; half++) {
		double recall = (double)found[half] / (USERS * K);
		fprintf(stderr, "  approx (%s, c = %d) recall@20 = %.4f, the exact list for %zu of %d users\n",
			half ? "fp16" : "int8", RK_TOPK_APPROX_DEFAULT, recall, same[half], USERS);
		ASSERT(recall >= 0.999);
	}
	/* The default first pass (int8) gives every user the exact answer. */
	ASSERT_EQ_INT(same[0], USERS);
	rk_index_release(&v);
	rk_topk_ws_destroy(ws);
	rk_index_destroy(ix);
	free(rows);
	free(centres);
}

/* Split scans (rk_topk_req.pool): the same hits and scores as one thread
 * for the exact scan and both first passes, with exclusions, at sizes that
 * split into 2 .. 4 uneven parts, from several callers at once sharing one
 * pool of three helpers (so parts queue, and callers take back parts no
 * helper has started). */
enum { SPLIT_CALLERS = 4, SPLIT_QUERIES = 30 };

struct split_run {
	const struct rk_index_view *v;
	struct rk_scan_pool *pool;
	uint64_t seed;
	int bad, split_answers;
};

static void *split_caller(void *arg)
{
	struct split_run *r = arg;
	const struct rk_index_view *v = r->v;
	struct rk_topk_ws *ws;
	uint64_t st = r->seed;
	if (rk_topk_ws_create(&ws)) {
		r->bad++;
		return NULL;
	}
	float *user = malloc(v->dim * sizeof(float));
	uint32_t *excl = malloc(64 * sizeof(uint32_t));
	struct rk_hit one[200], split[200];
	for (int q = 0; q < SPLIT_QUERIES; q++) {
		for (uint32_t j = 0; j < v->dim; j++) {
			st = st * 6364136223846793005ull + 1442695040888963407ull;
			user[j] = (float)(int32_t)(st >> 32) * (1.0f / 2147483648.0f);
		}
		size_t n_excl = (size_t)(st % 64);
		for (size_t i = 0; i < n_excl; i++)
			excl[i] = (uint32_t)((st >> (i % 32)) % v->n);
		qsort(excl, n_excl, sizeof *excl, cmp_u32);
		int k = 1 + (int)((st >> 20) % 200), approx = q % 4 ? 2 + 6 * (q % 4 == 3) : 0, half = q % 4 == 2;
		size_t n1 = 0, n2 = 0;
		struct rk_topk_req req = { user, k, excl, n_excl, NULL, 0, approx, half, NULL, 1, q % 4 == 3 };
		int rc = rk_topk(v, &req, ws, one, 200, &n1);
		req.pool = r->pool;
		req.threads = 2 + q % 3;
		rc |= rk_topk(v, &req, ws, split, 200, &n2);
		int same = rc == 0 && n1 == n2;
		for (size_t i = 0; same && i < n1; i++)
			same = one[i].item == split[i].item && one[i].score == split[i].score;
		if (!same)
			fprintf(stderr, "  split differs: n %u k %d approx %d half %d threads %d\n", v->n, k, approx, half,
				req.threads);
		r->bad += !same;
		r->split_answers++;
	}
	free(user);
	free(excl);
	rk_topk_ws_destroy(ws);
	return NULL;
}

TEST(topk_split_scan_same_answer)
{
	static const uint32_t ns[] = { 32767, 32768, 50000, 70001 };
	struct rk_scan_pool *pool;
	ASSERT_EQ_INT(rk_scan_pool_create(16, &pool), VR_EINVAL);
	ASSERT_OK(rk_scan_pool_create(3, &pool));
	ASSERT_EQ_INT(rk_scan_pool_helpers(pool), 3);
	rng_state = 99;
	for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
		struct rk_index *ix = make_index(ns[t], 37, 0, 0, NULL);
		ASSERT(ix);
		struct rk_index_view v;
		rk_index_acquire(ix, &v);
		struct split_run runs[SPLIT_CALLERS];
		pthread_t th[SPLIT_CALLERS];
		for (int c = 0; c < SPLIT_CALLERS; c++) {
			runs[c] = (struct split_run){ &v, pool, 1000 * t + (uint64_t)c, 0, 0 };
			ASSERT_EQ_INT(pthread_create(&th[c], NULL, split_caller, &runs[c]), 0);
		}
		for (int c = 0; c < SPLIT_CALLERS; c++) {
			pthread_join(th[c], NULL);
			ASSERT_EQ_INT(runs[c].bad, 0);
			ASSERT_EQ_INT(runs[c].split_answers, SPLIT_QUERIES);
		}
		rk_index_release(&v);
		rk_index_destroy(ix);
	}
	rk_scan_pool_destroy(pool);
}

/* Index. */

TEST(index_rows_round_trip)
{
	enum { D = 21, N = 100 };
	float rows[N * D];
	struct rk_index *ix;
	uint32_t first = 99;
	rng_state = 7;
	for (int j = 0; j < N * D; j++)
		rows[j] = rng_n() * 1000;
	rows[5] = 1e6f; /* clamps in the fp16 copy */
	ASSERT_OK(rk_index_create(D, &(struct rk_index_opts){ 8 }, &ix));
	ASSERT_OK(rk_index_append(ix, rows, 30, &first));
	ASSERT_EQ_INT(first, 0);
	ASSERT_OK(rk_index_append(ix, rows + 30 * D, N - 30, &first));
	ASSERT_EQ_INT(first, 30);
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	ASSERT_EQ_INT(v.n, N);
	ASSERT_EQ_INT(v.stride, 32);
	for (uint32_t i = 0; i < N; i++) {
		const float *r = rk_index_row(&v, i);
		const uint16_t *h = rk_index_row_f16(&v, i);
		ASSERT_EQ_INT((uintptr_t)r % 64, 0);
		ASSERT_EQ_INT((uintptr_t)h % 32, 0);
		for (uint32_t j = 0; j < v.stride; j++) {
			float want = j < D ? rows[i * D + j] : 0;
			ASSERT(r[j] == want);
			float c = want > 65504 ? 65504 : want < -65504 ? -65504 : want;
			ASSERT_EQ_INT(h[j], rk_half_from_float(c));
		}
	}
	ASSERT(rk_index_row(&v, N) == NULL);
	rk_index_release(&v);
	rk_index_destroy(ix);
}

TEST(index_invalid_arguments)
{
	struct rk_index *ix = (void *)1;
	ASSERT_EQ_INT(rk_index_create(0, NULL, &ix), VR_EINVAL);
	ASSERT(ix == NULL);
	ASSERT_EQ_INT(rk_index_create(RK_INDEX_MAX_DIM + 1, NULL, &ix), VR_EINVAL);
	ASSERT_EQ_INT(rk_index_create(4, &(struct rk_index_opts){ 3 }, &ix), VR_EINVAL);
	ASSERT_OK(rk_index_create(4, NULL, &ix));
	float rows[8] = { 1, 2, 3, 4, 5, INFINITY, 7, 8 };
	ASSERT_EQ_INT(rk_index_append(ix, rows, 2, NULL), VR_EINVAL);
	struct rk_index_view v;
	rk_index_acquire(ix, &v);
	ASSERT_EQ_INT(v.n, 0); /* all or nothing */
	rk_index_release(&v);
	ASSERT_OK(rk_index_append(ix, rows, 1, NULL));
	ASSERT_EQ_INT(rk_index_replace(ix, 1, rows), VR_ENOTFOUND);
	ASSERT_EQ_INT(rk_index_replace(ix, 0, rows + 4), VR_EINVAL);
	rk_index_destroy(ix);
}

TEST(index_replace_is_copy_on_write)
{
	enum { D = 5 };
	float a[3 * D], b[D] = { 9, 9, 9, 9, 9 };
	struct rk_index *ix;
	for (int j = 0; j < 3 * D; j++)
		a[j] = (float)j;
	ASSERT_OK(rk_index_create(D, &(struct rk_index_opts){ 2 }, &ix));
	ASSERT_OK(rk_index_append(ix, a, 3, NULL));
	struct rk_index_view old, cur;
	rk_index_acquire(ix, &old);
	ASSERT_OK(rk_index_replace(ix, 1, b));
	ASSERT_OK(rk_index_append(ix, b, 1, NULL));
	rk_index_acquire(ix, &cur);
	rk_index_destroy(ix); /* views outlive the index */
	ASSERT_EQ_INT(old.n, 3);
	ASSERT_EQ_INT(cur.n, 4);
	ASSERT(rk_index_row(&old, 1)[0] == 5);
	ASSERT(rk_index_row(&cur, 1)[0] == 9);
	ASSERT(rk_index_row(&cur, 0)[4] == 4);
	ASSERT(rk_index_row(&cur, 2)[0] == 10);
	ASSERT(rk_index_row(&cur, 3)[2] == 9);
	ASSERT_EQ_INT(rk_index_row_f16(&cur, 1)[0], rk_half_from_float(9));
	rk_index_release(&old);
	rk_index_release(&cur);
}

/* A writer appends and replaces rows while readers scan views: a row is
 * written as dim copies of one value, so a torn row (or a torn fp16 copy)
 * shows up as two different values in one row. */
enum { CONC_D = 24, CONC_READERS = 3 };
static atomic_int conc_stop;

static void conc_row(float *r, uint32_t id, uint32_t version)
{
	for (int j = 0; j < CONC_D; j++)
		r[j] = (float)(id % 1000) + (float)version * 1000.0f;
}

struct conc_reader {
	struct rk_index *ix;
	long views, rows_checked, bad;
};

static void *conc_read(void *arg)
{
	struct conc_reader *cr = arg;
	struct rk_topk_ws *ws;
	float user[CONC_D];
	struct rk_hit hits[10];
	uint32_t last_n = 0;
	if (rk_topk_ws_create(&ws))
		return NULL;
	for (int j = 0; j < CONC_D; j++)
		user[j] = 1.0f;
	while (!atomic_load(&conc_stop)) {
		struct rk_index_view v;
		size_t n_hits;
		rk_index_acquire(cr->ix, &v);
		cr->bad += v.n < last_n;
		last_n = v.n;
		for (uint32_t i = 0; i < v.n; i++) {
			const float *r = rk_index_row(&v, i);
			const uint16_t *h = rk_index_row_f16(&v, i);
			float x = r[0];
			int id_ok = (uint32_t)fmodf(x, 1000.0f) == i % 1000;
			int torn = !id_ok;
			for (int j = 1; j < CONC_D; j++)
				torn |= r[j] != x;
			for (int j = 0; j < CONC_D; j++)
				torn |= h[j] != h[0];
			torn |= h[0] != rk_half_from_float(x);
			for (uint32_t j = CONC_D; j < v.stride; j++)
				torn |= r[j] != 0;
			cr->bad += torn;
		}
		cr->rows_checked += v.n;
		struct rk_topk_req req = { user, 10, NULL, 0, NULL, 0, (int)(cr->views % 2), 0, NULL, 0, 0 };
		if (rk_topk(&v, &req, ws, hits, 10, &n_hits) || n_hits != (v.n < 10 ? v.n : 10))
			cr->bad++;
		rk_index_release(&v);
		cr->views++;
	}
	rk_topk_ws_destroy(ws);
	return NULL;
}

TEST(index_readers_during_writes)
{
	struct rk_index *ix;
	pthread_t th[CONC_READERS];
	struct conc_reader cr[CONC_READERS];
	float row[CONC_D];
	uint32_t n = 0, version = 1;
	struct timespec t0, t;
	ASSERT_OK(rk_index_create(CONC_D, &(struct rk_index_opts){ 16 }, &ix));
	atomic_store(&conc_stop, 0);
	for (int i = 0; i < CONC_READERS; i++) {
		cr[i] = (struct conc_reader){ ix, 0, 0, 0 };
		pthread_create(&th[i], NULL, conc_read, &cr[i]);
	}
	rng_state = 8;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		if (n < 3000 && rng_below(4)) {
			conc_row(row, n, 0);
			ASSERT_OK(rk_index_append(ix, row, 1, NULL));
			n++;
		} else if (n) {
			uint32_t id = rng_below(n);
			conc_row(row, id, version++ % 8);
			ASSERT_OK(rk_index_replace(ix, id, row));
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 200);
	atomic_store(&conc_stop, 1);
	long views = 0, checked = 0, bad = 0;
	for (int i = 0; i < CONC_READERS; i++) {
		pthread_join(th[i], NULL);
		views += cr[i].views;
		checked += cr[i].rows_checked;
		bad += cr[i].bad;
	}
	fprintf(stderr, "  %u rows, %u replacements; readers: %ld views, %ld rows checked\n", n, version - 1, views,
		checked);
	rk_index_destroy(ix);
	ASSERT_EQ_INT(bad, 0);
	ASSERT(views > CONC_READERS);
}

/* fp16 conversion: every half round-trips (half_conversion); floats round
 * to nearest even exactly as the F16C instruction does
 * (half_conversion_matches_f16c, skipped on a CPU without it). */
__attribute__((target("avx,f16c")))
static uint16_t f16c_convert(float f)
{
	return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

TEST(half_conversion)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float f = rk_half_to_float((uint16_t)h);
		if (f != f)
			continue;
		ASSERT_EQ_INT(rk_half_from_float(f), h);
	}
	ASSERT(rk_half_to_float(0x3c00) == 1.0f);
	ASSERT(rk_half_to_float(0x0001) == ldexpf(1, -24));
	ASSERT(rk_half_to_float(0x7bff) == 65504.0f);
	ASSERT_EQ_INT(rk_half_from_float(65520.0f), 0x7c00);
	ASSERT_EQ_INT(rk_half_from_float(ldexpf(1, -25)), 0);
	ASSERT_EQ_INT(rk_half_from_float(nextafterf(ldexpf(1, -25), 1)), 1);
}

TEST(half_conversion_matches_f16c)
{
	if (!__builtin_cpu_supports("f16c"))
		SKIP("this CPU has no F16C instruction to compare with");
	rng_state = 9;
	for (int i = 0; i < 2000000; i++) {
		uint32_t x = (uint32_t)rng();
		float f;
		if (i & 1) /* bias towards the half range */
			x = (x & 0x807fffffu) | ((uint32_t)(100 + rng_below(45)) << 23);
		memcpy(&f, &x, sizeof f);
		if (f != f)
			continue;
		uint16_t a = rk_half_from_float(f), b = f16c_convert(f);
		ASSERT_MSG(a == b, "%a: %04x vs f16c %04x", (double)f, a, b);
	}
}

static const struct vr_test tests[] = {
	T(topk_matches_sort_generic),
	T(score_all_matches_score),
	T(topk_matches_sort_avx2),
	T(topk_matches_sort_avx512),
	T(topk_approx_generic),
	T(topk_approx_avx2),
	T(topk_approx_avx512),
	T(topk_approx_avx512_vnni),
	T(topk_approx_fp16_generic),
	T(topk_approx_fp16_avx2),
	T(topk_approx_fp16_avx512),
	T(topk_approx_int4_generic),
	T(topk_approx_int4_avx2),
	T(topk_approx_int4_avx512_vnni),
	T(int8_dots_agree_across_kernels),
	T(int4_dots_agree_across_kernels),
	T(topk_split_scan_same_answer),
	T(topk_ties_by_lower_id),
	T(topk_k_over_catalogue_returns_all),
	T(topk_invalid_arguments),
	T(topk_empty_index),
	T(int8_batch_bound_holds), T(topk_batch_valid), T(topk_batch_approx_generic), T(topk_batch_approx_avx2),
	T(topk_batch_approx_avx512_vnni), T(topk_batch_exact_generic), T(topk_batch_exact_avx2),
	T(topk_batch_exact_avx512_vnni),
	T(topk_approx_recall),
	T(index_rows_round_trip),
	T(index_invalid_arguments),
	T(index_replace_is_copy_on_write),
	T(index_readers_during_writes),
	T(half_conversion),
	T(half_conversion_matches_f16c),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
