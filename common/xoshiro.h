/* xoshiro256** (Blackman and Vigna), the one random generator behind
 * rankd's sampler (rk_rng) and the data-set generator: fast, 256 bits of
 * state, good enough for sampling and synthetic data. Seeding is the
 * caller's (each derives its streams with splitmix64, here too, as is
 * gpu/'s stateless dropout and weight-init stream, so all three draw from
 * one definition of it). */
#ifndef VR_XOSHIRO_H
#define VR_XOSHIRO_H

#include <stdint.h>

/* gpu/backend.h calls vr_splitmix64_mix from CUDA kernels. */
#ifdef __CUDACC__
#define VR_HOST_DEVICE __host__ __device__
#else
#define VR_HOST_DEVICE
#endif

/* splitmix64's increment (2^64 / the golden ratio, odd). */
#define VR_SPLITMIX64_GAMMA 0x9e3779b97f4a7c15ull

/* splitmix64's output function (Steele, Lea and Flood; Vigna's constants):
 * a bijection of z whose outputs, for z stepping by VR_SPLITMIX64_GAMMA,
 * pass BigCrush. */
static inline VR_HOST_DEVICE uint64_t vr_splitmix64_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The next output of the splitmix64 sequence whose state is *x, advancing
 * it: what seeds xoshiro's four words from one. */
static inline uint64_t vr_splitmix64_next(uint64_t *x)
{
	return vr_splitmix64_mix(*x += VR_SPLITMIX64_GAMMA);
}

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
