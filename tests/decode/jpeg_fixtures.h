/* Test images for the decode tests and benchmark: deterministic synthetic
 * pictures (smooth gradients, hard-edged shapes and a little noise, so both
 * the DCT and the resampler have something to get wrong), made into real
 * JPEGs with fd_encode_jpeg. */
#ifndef FD_JPEG_FIXTURES_H
#define FD_JPEG_FIXTURES_H

#include "decode.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

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

/* A JPEG of the fixture picture; NULL on failure. Free with fd_jpeg_free. */
static inline uint8_t *fixture_jpeg(int w, int h, unsigned seed, enum fd_subsamp ss,
				    int quality, size_t *len)
{
	uint8_t *rgb = malloc((size_t)w * h * 3), *jpeg = NULL;
	if (!rgb)
		return NULL;
	fixture_rgb(rgb, w, h, seed);
	if (fd_encode_jpeg(rgb, w, h, FD_PIX_RGB, ss, quality, &jpeg, len) != 0)
		jpeg = NULL;
	free(rgb);
	return jpeg;
}

#endif
