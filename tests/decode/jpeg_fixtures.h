/* Test images for the decode tests and benchmark: deterministic synthetic
 * pictures (smooth gradients, hard-edged shapes and a little noise, so both
 * the DCT and the resampler have something to get wrong), made into real
 * JPEGs with vr_jpeg_encode. */
#ifndef FD_JPEG_FIXTURES_H
#define FD_JPEG_FIXTURES_H

#include "jpeg_enc.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fills a w×h RGB image; the same seed gives the same picture. */
static inline void fixture_rgb(uint8_t *rgb, int w, int h, unsigned seed)
{
	uint32_t x32 = seed * 2654435761u + 12345;
	for (int y = 0; y < h; y++) {
		for (int x = 0; x < w; x++) {
			double u = (double)x / w, v = (double)y / h;
			double r = 128 + 90 * sin(11 * u + 3 * v + seed);
			double g = 128 + 90 * cos(7 * v - 5 * u + 0.5 * seed);
			double b = 255 * u * v;
			/* A dark disc and a bright bar with sharp edges. */
			double dx = u - 0.4, dy = v - 0.55;
			if (dx * dx + dy * dy < 0.04)
				r = g = b = 20;
			if (u > 0.7 && u < 0.8)
				r = g = b = 235;
			x32 = x32 * 1664525u + 1013904223u;
			int noise = (int)(x32 >> 28) - 8;
			uint8_t *p = rgb + ((size_t)y * w + x) * 3;
			double c[3] = { r, g, b };
			for (int k = 0; k < 3; k++) {
				int val = (int)c[k] + noise;
				p[k] = (uint8_t)(val < 0 ? 0 : val > 255 ? 255 : val);
			}
		}
	}
}

/* A JPEG of the fixture picture; NULL on failure. Free with vr_jpeg_free. */
static inline uint8_t *fixture_jpeg(int w, int h, unsigned seed, enum vr_subsamp ss,
				    int quality, size_t *len)
{
	uint8_t *rgb = malloc((size_t)w * h * 3), *jpeg = NULL;
	if (!rgb)
		return NULL;
	fixture_rgb(rgb, w, h, seed);
	if (vr_jpeg_encode(rgb, w, h, VR_PIX_RGB, ss, quality, &jpeg, len) != 0)
		jpeg = NULL;
	free(rgb);
	return jpeg;
}

/* A byte buffer that JPEG bits are written into (fixture_many_scans). */
struct fixture_bits {
	uint8_t *p;
	size_t n, cap;
	uint32_t acc;
	int nbits, failed;
};

static inline void fixture_byte(struct fixture_bits *b, uint8_t v)
{
	if (b->n == b->cap) {
		uint8_t *q = realloc(b->p, b->cap ? 2 * b->cap : 4096);
		if (!q) {
			b->failed = 1;
			return;
		}
		b->p = q;
		b->cap = b->cap ? 2 * b->cap : 4096;
	}
	b->p[b->n++] = v;
}

/* n bits of v, most significant first, with 0xFF stuffed as in a scan. */
static inline void fixture_put_bits(struct fixture_bits *b, uint32_t v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		b->acc = b->acc << 1 | ((v >> i) & 1);
		if (++b->nbits == 8) {
			fixture_byte(b, (uint8_t)b->acc);
			if ((uint8_t)b->acc == 0xFF)
				fixture_byte(b, 0);
			b->acc = 0;
			b->nbits = 0;
		}
	}
}

static inline void fixture_segment(struct fixture_bits *b, uint8_t marker, const uint8_t *d,
				   size_t n)
{
	while (b->nbits) /* a scan's last byte is padded with ones */
		fixture_put_bits(b, 1, 1);
	fixture_byte(b, 0xFF);
	fixture_byte(b, marker);
	if (!d)
		return;
	fixture_byte(b, (uint8_t)((n + 2) >> 8));
	fixture_byte(b, (uint8_t)(n + 2));
	for (size_t i = 0; i < n; i++)
		fixture_byte(b, d[i]);
}

/* One progressive scan of component 1: band ss..se, successive
 * approximation ah -> al, every coefficient zero. */
static inline void fixture_scan(struct fixture_bits *b, uint64_t blocks, int ss, int se, int ah,
				int al)
{
	const uint8_t sos[] = { 1, 1, 0x00, (uint8_t)ss, (uint8_t)se, (uint8_t)(ah << 4 | al) };
	fixture_segment(b, 0xDA, sos, sizeof sos);
	if (ss == 0) { /* DC: the zero difference (code 0), or a refinement bit */
		for (uint64_t k = 0; k < blocks; k++)
			fixture_put_bits(b, 0, 1);
		return;
	}
	/* AC: end-of-band runs over every block, symbol r << 4 (code r) and
	 * r extra bits, a run of 2^r + extra. */
	for (uint64_t left = blocks; left;) {
		uint64_t run = left < 32767 ? left : 32767;
		int r = 0;
		while ((2ull << r) <= run)
			r++;
		fixture_put_bits(b, (uint32_t)r, 4);
		fixture_put_bits(b, (uint32_t)(run - (1ull << r)), r);
		left -= run;
	}
}

/* A valid progressive greyscale w×h JPEG (all mid-grey) with 64 × (1 + al)
 * scans: the DC and each of the 63 AC coefficients sent first at bit al,
 * then refined one bit per scan down to bit 0. al is 0..13; 13 gives 896
 * scans, the most a JPEG can hold without repeating itself. NULL on
 * failure; free() it. */
static inline uint8_t *fixture_many_scans(int w, int h, int al, size_t *len)
{
	struct fixture_bits b = { 0 };
	uint64_t blocks = (uint64_t)((w + 7) / 8) * (uint64_t)((h + 7) / 8);
	uint8_t dqt[65] = { 0 }, dht[1 + 16 + 1 + 1 + 16 + 15], *d = dht;
	const uint8_t sof[] = { 8, (uint8_t)(h >> 8), (uint8_t)h, (uint8_t)(w >> 8), (uint8_t)w,
				1, 1, 0x11, 0 };
	memset(dqt + 1, 1, 64);
	*d++ = 0x00; /* DC table 0: one code, 0, for difference category 0 */
	for (int i = 0; i < 16; i++)
		*d++ = i == 0;
	*d++ = 0x00;
	*d++ = 0x10; /* AC table 0: 15 four-bit codes for EOB runs r << 4 */
	for (int i = 0; i < 16; i++)
		*d++ = i == 3 ? 15 : 0;
	for (int r = 0; r < 15; r++)
		*d++ = (uint8_t)(r << 4);
	fixture_segment(&b, 0xD8, NULL, 0);
	fixture_segment(&b, 0xDB, dqt, sizeof dqt);
	fixture_segment(&b, 0xC2, sof, sizeof sof);
	fixture_segment(&b, 0xC4, dht, (size_t)(d - dht));
	for (int k = 0; k < 64; k++) {
		fixture_scan(&b, blocks, k, k, 0, al);
		for (int a = al; a >= 1; a--)
			fixture_scan(&b, blocks, k, k, a, a - 1);
	}
	fixture_segment(&b, 0xD9, NULL, 0);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	*len = b.n;
	return b.p;
}

#endif
