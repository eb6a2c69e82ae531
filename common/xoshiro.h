/* xoshiro256** (Blackman and Vigna), the one random generator behind
 * rankd's sampler (rk_rng) and the data-set generator: fast, 256 bits of
 * state, good enough for sampling and synthetic data. Seeding is the
 * caller's (each derives its streams with splitmix64). */
#ifndef VR_XOSHIRO_H
#define VR_XOSHIRO_H

#include <stdint.h>

/* The next output of state s (4 words, not all zero), advancing it. */
static inline uint64_t vr_xoshiro_next(uint64_t s[4])
{
	uint64_t x = s[1] * 5;
	uint64_t out = (x << 7 | x >> 57) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = s[3] << 45 | s[3] >> 19;
	return out;
}

#endif
