/* What the libFuzzer harnesses of tests/fuzz share: a reader that splits
 * one fuzz input into the parts a harness needs, and a way to make ASan
 * look at every byte a parser says is valid.
 *
 * Framing (the seed generator, seeds.c, writes the same): a harness takes
 * small integers (fz_u8, fz_u64) and chunks (fz_chunk: a 4-byte
 * little-endian length, then that many bytes, cut short at the end of the
 * input) from the front, and may hand the rest to a parser whole
 * (fz_rest). Past the end every read gives zeros and empty chunks, so a
 * harness never checks lengths itself. */
#ifndef VR_FUZZ_H
#define VR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct fz {
	const uint8_t *p;
	size_t n;
} fz;

static inline uint8_t fz_u8(fz *f)
{
	if (!f->n)
		return 0;
	f->n--;
	return *f->p++;
}

static inline uint64_t fz_u64(fz *f)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)fz_u8(f) << (8 * i);
	return v;
}

/* The next chunk: *len bytes at the returned pointer (never NULL). */
static inline const uint8_t *fz_chunk(fz *f, size_t *len)
{
	uint32_t n = 0;
	for (int i = 0; i < 4; i++)
		n |= (uint32_t)fz_u8(f) << (8 * i);
	const uint8_t *p = f->p;
	*len = n < f->n ? n : f->n;
	f->p += *len;
	f->n -= *len;
	return p;
}

/* Everything left. */
static inline const uint8_t *fz_rest(fz *f, size_t *len)
{
	const uint8_t *p = f->p;
	*len = f->n;
	f->p += f->n;
	f->n = 0;
	return p;
}

/* Reads every byte of [p, p + n): a parser that hands back a range it did
 * not check makes ASan stop here. */
static inline void fz_touch(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint8_t x = 0;
	for (size_t i = 0; i < n; i++)
		x ^= b[i];
	__asm__ volatile("" : : "r"(x)); /* the loads stay */
}

#endif
