/* sampler: BPR triples with rejection of positives; see sampler.h. The
 * popularity option is Vose's alias method: one uniform slot and one
 * uniform float per draw. The rejection test is a per-user bitset when all
 * of them fit in BITSET_MAX bytes (one load: about 3x the probes per second
 * of a binary search in the CSR on the Wikimedia-shaped set, see
 * tests/bench_train), else the binary search. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define MAX_REJECTS 64
#define BITSET_MAX ((size_t)64 << 20)

struct rk_sampler {
	const rk_csr *train;
	uint32_t *users;  /* users that can form a triple */
	uint32_t n_users;
	uint64_t *cum;    /* cum[x]: training pairs of users[0 .. x) */
	uint32_t *pool;   /* negative candidates, ascending */
	uint32_t n_pool;
	uint8_t *in_pool; /* per item */
	float *prob;      /* alias table over pool slots (popularity only) */
	uint32_t *alias;
	uint64_t *bits;   /* user u's items: bits[u * words ...], or NULL */
	size_t words;
};

static inline int positive(const rk_sampler *s, uint32_t u, uint32_t i)
{
	if (s->bits)
		return (int)(s->bits[u * s->words + i / 64] >> (i % 64)) & 1;
	return rk_csr_has(s->train, u, i);
}

void rk_rng_seed(rk_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed;
	uint64_t mix = vr_splitmix64_next(&x) ^ (stream * 0xd1342543de82ef95ull);
	x = mix;
	for (int k = 0; k < 4; k++)
		r->s[k] = vr_splitmix64_next(&x);
}

void rk_sampler_opts_default(rk_sampler_opts *o)
{
	o->negatives = RK_NEG_UNIFORM;
	o->pop_alpha = 1.0f;
	o->all_items = 0;
}

static int build_alias(rk_sampler *s, const uint32_t *counts, float alpha)
{
	uint32_t n = s->n_pool;
	double *w = malloc(n * sizeof(*w));
	uint32_t *small = malloc(n * sizeof(*small)), *large = malloc(n * sizeof(*large));
	s->prob = malloc(n * sizeof(*s->prob));
	s->alias = malloc(n * sizeof(*s->alias));
	int rc = 0;
	if (!w || !small || !large || !s->prob || !s->alias) {
		rc = VR_ENOMEM;
		goto leave;
	}
	double sum = 0;
	for (uint32_t k = 0; k < n; k++)
		sum += w[k] = pow((double)counts[s->pool[k]], alpha);
	uint32_t ns = 0, nl = 0;
	for (uint32_t k = 0; k < n; k++) {
		w[k] *= n / sum;
		if (w[k] < 1.0)
			small[ns++] = k;
		else
			large[nl++] = k;
	}
	while (ns && nl) {
		uint32_t a = small[--ns], b = large[--nl];
		s->prob[a] = (float)w[a];
		s->alias[a] = b;
		w[b] -= 1.0 - w[a];
		if (w[b] < 1.0)
			small[ns++] = b;
		else
			large[nl++] = b;
	}
	while (nl) {
		uint32_t b = large[--nl];
		s->prob[b] = 1.0f;
		s->alias[b] = b;
	}
	while (ns) { /* rounding leftovers */
		uint32_t a = small[--ns];
		s->prob[a] = 1.0f;
		s->alias[a] = a;
	}
leave:
	free(w);
	free(small);
	free(large);
	return rc;
}

int rk_sampler_create(rk_sampler **out, const rk_csr *train, const rk_sampler_opts *opts)
{
	rk_sampler_opts def;
	if (!opts) {
		rk_sampler_opts_default(&def);
		opts = &def;
	}
	if ((opts->all_items && opts->negatives == RK_NEG_POPULARITY) || !(opts->pop_alpha >= 0))
		return VR_EINVAL;
	uint32_t *counts = NULL;
	int rc = 0;
	rk_sampler *s = calloc(1, sizeof(*s));
	if (!s)
		return VR_ENOMEM;
	s->train = train;
	counts = malloc(((size_t)train->n_items + 1) * sizeof(*counts));
	s->in_pool = calloc((size_t)train->n_items + 1, 1);
	s->pool = malloc(((size_t)train->n_items + 1) * sizeof(*s->pool));
	s->users = malloc(((size_t)train->n_users + 1) * sizeof(*s->users));
	s->cum = malloc(((size_t)train->n_users + 1) * sizeof(*s->cum));
	if (!counts || !s->in_pool || !s->pool || !s->users || !s->cum) {
		rc = VR_ENOMEM;
		goto leave;
	}
	rk_csr_item_counts(train, counts);
	for (uint32_t i = 0; i < train->n_items; i++) {
		if (opts->all_items || counts[i] > 0) {
			s->in_pool[i] = 1;
			s->pool[s->n_pool++] = i;
		}
	}
	s->cum[0] = 0;
	for (uint32_t u = 0; u < train->n_users; u++) {
		uint64_t deg = train->off[u + 1] - train->off[u];
		if (deg > 0 && deg < s->n_pool) {
			s->users[s->n_users] = u;
			s->cum[s->n_users + 1] = s->cum[s->n_users] + deg;
			s->n_users++;
		}
	}
	if (s->n_users == 0) {
		rc = VR_ENOTFOUND;
		goto leave;
	}
	if (opts->negatives == RK_NEG_POPULARITY) {
		rc = build_alias(s, counts, opts->pop_alpha);
		if (rc)
			goto leave;
	}
	s->words = ((size_t)train->n_items + 63) / 64;
	if (s->words * train->n_users <= BITSET_MAX / sizeof(uint64_t)) {
		s->bits = calloc(s->words * train->n_users + 1, sizeof(uint64_t));
		if (!s->bits) {
			rc = VR_ENOMEM;
			goto leave;
		}
		for (uint32_t u = 0; u < train->n_users; u++)
			for (uint64_t k = train->off[u]; k < train->off[u + 1]; k++)
				s->bits[u * s->words + train->item[k] / 64] |= 1ull << (train->item[k] % 64);
	}
leave:
	free(counts);
	if (rc) {
		rk_sampler_free(s);
		s = NULL;
	}
	*out = s;
	return rc;
}

void rk_sampler_free(rk_sampler *s)
{
	if (!s)
		return;
	free(s->users);
	free(s->cum);
	free(s->pool);
	free(s->in_pool);
	free(s->prob);
	free(s->alias);
	free(s->bits);
	free(s);
}

uint32_t rk_sampler_users(const rk_sampler *s) { return s->n_users; }
uint32_t rk_sampler_pool(const rk_sampler *s) { return s->n_pool; }

int rk_sampler_in_pool(const rk_sampler *s, uint32_t i)
{
	return i < s->train->n_items && s->in_pool[i];
}

static uint32_t draw(const rk_sampler *s, rk_rng *rng)
{
	uint32_t k = rk_rng_below(rng, s->n_pool);
	if (s->prob && rk_rng_float(rng) >= s->prob[k])
		k = s->alias[k];
	return s->pool[k];
}

/* The r-th pool item that u does not own; both lists are ascending. */
static uint32_t nth_negative(const rk_sampler *s, uint32_t u, uint32_t r)
{
	const uint32_t *pos = s->train->item + s->train->off[u];
	const uint32_t *pend = s->train->item + s->train->off[u + 1];
	for (uint32_t k = 0; k < s->n_pool; k++) {
		uint32_t i = s->pool[k];
		while (pos < pend && *pos < i)
			pos++;
		if (pos < pend && *pos == i)
			continue;
		if (r-- == 0)
			return i;
	}
	return s->pool[s->n_pool - 1]; /* unreachable for users in s->users */
}

uint32_t rk_sampler_negative(const rk_sampler *s, rk_rng *rng, uint32_t u)
{
	for (int t = 0; t < MAX_REJECTS; t++) {
		uint32_t j = draw(s, rng);
		if (!positive(s, u, j))
			return j;
	}
	uint32_t deg = (uint32_t)(s->train->off[u + 1] - s->train->off[u]);
	return nth_negative(s, u, rk_rng_below(rng, s->n_pool - deg));
}

void rk_sampler_fill(const rk_sampler *s, rk_rng *rng, size_t n,
		     uint32_t *u, uint32_t *i, uint32_t *j)
{
	const rk_csr *c = s->train;
	uint64_t pairs = s->cum[s->n_users];
	for (size_t t = 0; t < n; t++) {
		/* A pair uniform over the training pairs (bias below 2^-32 for
		 * any count), its user found in cum by bisection. */
		uint64_t k = (uint64_t)(((unsigned __int128)rk_rng_next(rng) * pairs) >> 64);
		uint32_t lo = 0, hi = s->n_users - 1;
		while (lo < hi) {
			uint32_t mid = lo + (hi - lo + 1) / 2;
			if (s->cum[mid] <= k)
				lo = mid;
			else
				hi = mid - 1;
		}
		uint32_t uu = s->users[lo];
		u[t] = uu;
		i[t] = c->item[c->off[uu] + (k - s->cum[lo])];
		j[t] = rk_sampler_negative(s, rng, uu);
	}
}
