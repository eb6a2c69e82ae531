/* sampler: online BPR triples (u, i, j) over a training CSR, and the small
 * seeded PRNG every rankd random draw uses.
 *
 * A triple is: (u, i) uniform over the training pairs of the users that
 * have at least one possible negative (BPR-OPT's sum over D_S, as
 * Rendle's LearnBPR and the tutorial's epoch over the interactions: a
 * user weighs by its interactions, and so does each item's β); j from the
 * negative pool (by default the items with at least one
 * training interaction, so items never seen in training stay untouched:
 * cold), uniform or popularity-weighted (count^alpha, an alias table),
 * redrawn while j is one of u's positives. After 64 rejected draws j is
 * taken uniformly among u's non-positive pool items, so a user who owns
 * most of the popular items cannot stall a thread.
 *
 * The sampler is immutable once created and shared by all threads; each
 * thread draws from its own rk_rng. The same seed and stream give the same
 * triples. */
#ifndef RK_SAMPLER_H
#define RK_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "interactions.h"
#include "xoshiro.h"

/* xoshiro256** state. Seed with rk_rng_seed; streams with different stream
 * numbers are independent for every practical purpose. */
typedef struct rk_rng {
	uint64_t s[4];
} rk_rng;

void rk_rng_seed(rk_rng *r, uint64_t seed, uint64_t stream);

static inline uint64_t rk_rng_next(rk_rng *r)
{
	return vr_xoshiro_next(r->s);
}

/* Uniform in [0, n), n >= 1, without modulo bias (Lemire's method). */
static inline uint32_t rk_rng_below(rk_rng *r, uint32_t n)
{
	uint64_t m = (rk_rng_next(r) >> 32) * n;
	if ((uint32_t)m < n) {
		uint32_t floor = (uint32_t)(-n) % n;
		while ((uint32_t)m < floor)
			m = (rk_rng_next(r) >> 32) * n;
	}
	return (uint32_t)(m >> 32);
}

/* Uniform in [0, 1) with 24 random bits. */
static inline float rk_rng_float(rk_rng *r)
{
	return (float)(rk_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

typedef struct rk_sampler rk_sampler;

enum rk_negatives {
	RK_NEG_UNIFORM = 0,
	RK_NEG_POPULARITY = 1, /* weight count_i^alpha over training counts */
};

typedef struct rk_sampler_opts {
	enum rk_negatives negatives;
	float pop_alpha;  /* popularity exponent; default 1 (plain counts) */
	int all_items;    /* negatives from every item, cold ones too (uniform only) */
} rk_sampler_opts;

void rk_sampler_opts_default(rk_sampler_opts *o);

/* Builds a sampler over train, which must stay alive and unchanged while
 * the sampler is used. opts may be NULL (defaults). Returns 0, VR_ENOMEM,
 * VR_EINVAL (all_items with popularity, or a negative pop_alpha), or
 * VR_ENOTFOUND when no user can form a triple. */
int rk_sampler_create(rk_sampler **out, const rk_csr *train, const rk_sampler_opts *opts);
void rk_sampler_free(rk_sampler *s);

/* Users that triples are drawn for; items in the negative pool. */
uint32_t rk_sampler_users(const rk_sampler *s);
uint32_t rk_sampler_pool(const rk_sampler *s);
/* 1 if item i can be drawn as a negative (for any user). */
int rk_sampler_in_pool(const rk_sampler *s, uint32_t i);

/* One negative for user u (u must have a possible negative). */
uint32_t rk_sampler_negative(const rk_sampler *s, rk_rng *rng, uint32_t u);

/* Fills n triples into u[], i[], j[]. */
void rk_sampler_fill(const rk_sampler *s, rk_rng *rng, size_t n,
		     uint32_t *u, uint32_t *i, uint32_t *j);

#endif
