/* Unit tests of featured/decode on real JPEGs made at test time.
 *
 * The resampler is checked against a direct 2-D reference written here
 * (area averaging / bilinear over a full-size decode done with TurboJPEG
 * itself); the DCT-scaled path against the full-size path. Bad input must
 * come back as VR_EINVAL / VR_ETOOBIG with a readable reason. */
#include "harness.h"

#include "decode.h"
#include "err.h"
#include "jpeg_fixtures.h"

#include <stdint.h>
#include <turbojpeg.h>

/* Mean absolute difference of the DCT-scaled path from the full-size one,
 * in 0..255 units: libjpeg's scaled IDCT is not a box filter, so the two
 * differ a little; more than 3 would mean the paths sample different
 * regions or scales. */
#define DCT_TOLERANCE 3.0

struct diff {
	double mean;
	int max;
};

static struct diff compare(const uint8_t *a, const uint8_t *b, size_t n)
{
	struct diff d = { 0, 0 };
	for (size_t i = 0; i < n; i++) {
		int e = abs((int)a[i] - (int)b[i]);
		d.mean += e;
		if (e > d.max)
			d.max = e;
	}
	d.mean /= (double)n;
	return d;
}

/* Weight of source sample i inside the box [a0, a1). */
static double overlap(int i, double a0, double a1)
{
	double lo = i > a0 ? i : a0, hi = i + 1 < a1 ? i + 1 : a1;
	return hi > lo ? hi - lo : 0;
}

/* Straight 2-D reference of "shorter side to S, centre crop": each output
 * pixel integrates its footprint (shrinking) or interpolates the four
 * nearest samples (enlarging). */
static void reference_resize(const uint8_t *src, int w, int h, int S, uint8_t *out)
{
	int rw = w <= h ? S : (int)(((long)w * S + h / 2) / h);
	int rh = w <= h ? (int)(((long)h * S + w / 2) / w) : S;
	int ox = (rw - S) / 2, oy = (rh - S) / 2;
	double sx = (double)w / rw, sy = (double)h / rh;
	for (int y = 0; y < S; y++) {
		for (int x = 0; x < S; x++) {
			for (int c = 0; c < 3; c++) {
				double v = 0;
				if (sx > 1) {
					double x0 = (x + ox) * sx, x1 = (x + ox + 1) * sx;
					double y0 = (y + oy) * sy, y1 = (y + oy + 1) * sy;
					if (x1 > w)
						x1 = w;
					if (y1 > h)
						y1 = h;
					double area = 0;
					for (int j = (int)y0; j < h && j < y1; j++)
						for (int i = (int)x0; i < w && i < x1; i++) {
							double a = overlap(i, x0, x1) * overlap(j, y0, y1);
							v += a * src[((size_t)j * w + i) * 3 + c];
							area += a;
						}
					v /= area;
				} else {
					double cx = (x + ox + 0.5) * sx - 0.5, cy = (y + oy + 0.5) * sy - 0.5;
					cx = cx < 0 ? 0 : cx > w - 1 ? w - 1 : cx;
					cy = cy < 0 ? 0 : cy > h - 1 ? h - 1 : cy;
					int i0 = (int)cx, j0 = (int)cy;
					int i1 = i0 + 1 < w ? i0 + 1 : i0, j1 = j0 + 1 < h ? j0 + 1 : j0;
					double fx = cx - i0, fy = cy - j0;
#define PX(i, j) src[((size_t)(j) * w + (i)) * 3 + c]
					v = (1 - fy) * ((1 - fx) * PX(i0, j0) + fx * PX(i1, j0)) +
					    fy * ((1 - fx) * PX(i0, j1) + fx * PX(i1, j1));
#undef PX
				}
				out[((size_t)y * S + x) * 3 + c] = (uint8_t)(v + 0.5);
			}
		}
	}
}

/* Full-size RGB decode with TurboJPEG directly (independent of ours). */
static uint8_t *full_decode(const uint8_t *jpeg, size_t len, int *w, int *h)
{
	tjhandle tj = tjInitDecompress();
	int ss, cs;
	uint8_t *rgb = NULL;
	if (tj && tjDecompressHeader3(tj, jpeg, len, w, h, &ss, &cs) == 0) {
		rgb = malloc((size_t)*w * *h * 3);
		if (rgb && tjDecompress2(tj, jpeg, len, rgb, *w, 0, *h, TJPF_RGB, 0) != 0) {
			free(rgb);
			rgb = NULL;
		}
	}
	tjDestroy(tj);
	return rgb;
}

static const struct { int w, h; } shapes[] = {
	{ 500, 375 }, { 375, 500 }, { 224, 224 }, { 100, 60 }, { 2000, 1500 }, { 301, 999 },
};

/* Every shape and both network sizes: output matches the reference made
 * from a full-size decode (exactly up to rounding on the full-size path,
 * within DCT_TOLERANCE on the DCT-scaled path). */
TEST(sizes_aspects_and_dct_scaling)
{
	static const int sizes[] = { 224, 64 };
	fd_decoder *d;
	char why[256];
	ASSERT_OK(fd_decoder_create(&d, NULL));
	for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
		int w = shapes[s].w, h = shapes[s].h, fw, fh;
		size_t len;
		uint8_t *jpeg = fixture_jpeg(w, h, (unsigned)s, VR_SUBSAMP_420, 90, &len);
		ASSERT(jpeg);
		uint8_t *full = full_decode(jpeg, len, &fw, &fh);
		ASSERT(full);
		for (size_t k = 0; k < 2; k++) {
			int S = sizes[k];
			uint8_t *ref = malloc((size_t)S * S * 3), *plain = malloc((size_t)S * S * 3),
				*scaled = malloc((size_t)S * S * 3);
			fd_decode_info info, sinfo;
			reference_resize(full, fw, fh, S, ref);
			int rc1 = fd_decode(d, jpeg, len, S, FD_DECODE_NO_DCT_SCALING, plain, &info, why, sizeof why);
			int rc2 = fd_decode(d, jpeg, len, S, 0, scaled, &sinfo, why, sizeof why);
			struct diff dp = compare(plain, ref, (size_t)S * S * 3);
			struct diff ds = compare(scaled, plain, (size_t)S * S * 3);
			free(ref);
			free(plain);
			free(scaled);
			ASSERT_OK(rc1);
			ASSERT_OK(rc2);
			ASSERT_EQ_INT(info.width, w);
			ASSERT_EQ_INT(info.height, h);
			ASSERT_EQ_INT(info.scaled_width, w);
			int short_side = sinfo.scaled_width < sinfo.scaled_height ? sinfo.scaled_width : sinfo.scaled_height;
			ASSERT_MSG(short_side >= S || (w < S || h < S), "%dx%d scaled to %dx%d for S=%d",
				   w, h, sinfo.scaled_width, sinfo.scaled_height, S);
			ASSERT_MSG(dp.max <= 1, "%dx%d S=%d: full-size path differs from the reference by up to %d",
				   w, h, S, dp.max);
			ASSERT_MSG(ds.mean < DCT_TOLERANCE, "%dx%d S=%d: DCT path mean diff %.3f (max %d)",
				   w, h, S, ds.mean, ds.max);
			fprintf(stderr, "  %4dx%-4d S=%3d: decoded at %4dx%-4d, DCT vs full mean %.3f max %d /255\n",
				w, h, S, sinfo.scaled_width, sinfo.scaled_height, ds.mean, ds.max);
		}
		free(full);
		vr_jpeg_free(jpeg);
	}
	fd_decoder_destroy(d);
}

/* 500x375 decodes at full size for 224 (1/2 would give 188 rows), at 1/4
 * for 64; 2000x1500 at 1/4 for 224. */
TEST(picks_smallest_scale)
{
	fd_decoder *d;
	fd_decode_info info;
	size_t len;
	static uint8_t out[224 * 224 * 3];
	uint8_t *jpeg = fixture_jpeg(500, 375, 1, VR_SUBSAMP_420, 85, &len);
	ASSERT(jpeg);
	ASSERT_OK(fd_decoder_create(&d, NULL));
	int rc224 = fd_decode(d, jpeg, len, 224, 0, out, &info, NULL, 0);
	int w224 = info.scaled_width, h224 = info.scaled_height;
	int rc64 = fd_decode(d, jpeg, len, 64, 0, out, &info, NULL, 0);
	int w64 = info.scaled_width, h64 = info.scaled_height;
	vr_jpeg_free(jpeg);
	jpeg = fixture_jpeg(2000, 1500, 1, VR_SUBSAMP_420, 85, &len);
	ASSERT(jpeg);
	int rc_big = fd_decode(d, jpeg, len, 224, 0, out, &info, NULL, 0);
	fd_decoder_destroy(d);
	vr_jpeg_free(jpeg);
	ASSERT_OK(rc224);
	ASSERT_OK(rc64);
	ASSERT_OK(rc_big);
	ASSERT_EQ_INT(w224, 500);
	ASSERT_EQ_INT(h224, 375);
	ASSERT_EQ_INT(w64, 125);
	ASSERT_EQ_INT(h64, 94);
	ASSERT_EQ_INT(info.scaled_width, 500);
	ASSERT_EQ_INT(info.scaled_height, 375);
}

TEST(subsampling_and_grey)
{
	static const enum vr_subsamp kinds[] = { VR_SUBSAMP_444, VR_SUBSAMP_422, VR_SUBSAMP_420, VR_SUBSAMP_GRAY };
	static uint8_t out[4][224 * 224 * 3];
	fd_decoder *d;
	ASSERT_OK(fd_decoder_create(&d, NULL));
	for (int k = 0; k < 4; k++) {
		size_t len;
		fd_decode_info info;
		uint8_t *jpeg = fixture_jpeg(640, 480, 7, kinds[k], 92, &len);
		ASSERT(jpeg);
		int rc = fd_decode(d, jpeg, len, 224, 0, out[k], &info, NULL, 0);
		vr_jpeg_free(jpeg);
		ASSERT_OK(rc);
		ASSERT_EQ_INT(info.colorspace, kinds[k] == VR_SUBSAMP_GRAY ? TJCS_GRAY : TJCS_YCbCr);
	}
	fd_decoder_destroy(d);
	/* The colour versions agree closely; the grey one is grey. */
	ASSERT(compare(out[0], out[2], sizeof out[0]).mean < 3);
	ASSERT(compare(out[0], out[1], sizeof out[0]).mean < 3);
	int grey = 1, lum_ok = 1;
	for (size_t i = 0; i < 224 * 224; i++) {
		const uint8_t *g = out[3] + 3 * i, *c = out[0] + 3 * i;
		if (g[0] != g[1] || g[1] != g[2])
			grey = 0;
		double y = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
		if (fabs(y - g[0]) > 12)
			lum_ok = 0;
	}
	ASSERT(grey);
	ASSERT(lum_ok);
}

/* TurboJPEG 2.1.5 compresses CMYK input into a YCCK JPEG (Adobe style);
 * it must decode to the same picture as the RGB JPEG of it. */
TEST(cmyk_jpeg)
{
	int w = 400, h = 300;
	uint8_t *rgb = malloc((size_t)w * h * 3), *cmyk = malloc((size_t)w * h * 4);
	static uint8_t from_rgb[224 * 224 * 3], from_cmyk[224 * 224 * 3];
	uint8_t *jr = NULL, *jc = NULL;
	size_t lr, lc;
	fd_decoder *d;
	fd_decode_info info;
	ASSERT(rgb && cmyk);
	fixture_rgb(rgb, w, h, 3);
	/* Inverse of R = C·K/255 in the Adobe convention (255 = no ink). */
	for (size_t i = 0; i < (size_t)w * h; i++) {
		const uint8_t *p = rgb + 3 * i;
		int k = p[0] > p[1] ? p[0] : p[1];
		k = k > p[2] ? k : p[2];
		for (int c = 0; c < 3; c++)
			cmyk[4 * i + c] = (uint8_t)(k ? (p[c] * 255 + k / 2) / k : 0);
		cmyk[4 * i + 3] = (uint8_t)k;
	}
	int rc = vr_jpeg_encode(rgb, w, h, VR_PIX_RGB, VR_SUBSAMP_444, 95, &jr, &lr);
	if (rc == 0)
		rc = vr_jpeg_encode(cmyk, w, h, VR_PIX_CMYK, VR_SUBSAMP_444, 95, &jc, &lc);
	free(rgb);
	free(cmyk);
	ASSERT_OK(rc);
	ASSERT_OK(fd_decoder_create(&d, NULL));
	int rc1 = fd_decode(d, jr, lr, 224, 0, from_rgb, NULL, NULL, 0);
	int rc2 = fd_decode(d, jc, lc, 224, 0, from_cmyk, &info, NULL, 0);
	fd_decoder_destroy(d);
	vr_jpeg_free(jr);
	vr_jpeg_free(jc);
	ASSERT_OK(rc1);
	ASSERT_OK(rc2);
	ASSERT_EQ_INT(info.colorspace, TJCS_YCCK);
	struct diff df = compare(from_rgb, from_cmyk, sizeof from_rgb);
	fprintf(stderr, "  CMYK vs RGB JPEG: mean %.3f max %d /255\n", df.mean, df.max);
	ASSERT_MSG(df.mean < 4, "CMYK decode differs from RGB by %.3f on average", df.mean);
}

/* A decoder reused across sizes gives what a fresh one gives. */
TEST(reuse_matches_fresh)
{
	static uint8_t a[224 * 224 * 3], b[224 * 224 * 3];
	size_t l1, l2;
	uint8_t *big = fixture_jpeg(2000, 1500, 4, VR_SUBSAMP_420, 85, &l1);
	uint8_t *small = fixture_jpeg(100, 60, 5, VR_SUBSAMP_GRAY, 85, &l2);
	fd_decoder *d, *fresh;
	ASSERT(big && small);
	ASSERT_OK(fd_decoder_create(&d, NULL));
	ASSERT_OK(fd_decoder_create(&fresh, NULL));
	int rc = 0, same = 1;
	for (int round = 0; round < 3; round++) {
		rc |= fd_decode(d, big, l1, 224, FD_DECODE_NO_DCT_SCALING, a, NULL, NULL, 0);
		rc |= fd_decode(d, small, l2, 224, 0, a, NULL, NULL, 0);
		rc |= fd_decode(fresh, small, l2, 224, 0, b, NULL, NULL, 0);
		same &= !memcmp(a, b, sizeof a);
	}
	fd_decoder_destroy(d);
	fd_decoder_destroy(fresh);
	vr_jpeg_free(big);
	vr_jpeg_free(small);
	ASSERT_OK(rc);
	ASSERT(same);
}

/* Decodes bad bytes, expecting rc and a reason containing text. */
static int expect_refused(const uint8_t *bytes, size_t len, const fd_decode_limits *lim,
			  int want_rc, const char *text, char *why, size_t cap)
{
	static uint8_t out[64 * 64 * 3];
	fd_decoder *d;
	if (fd_decoder_create(&d, lim))
		return -1;
	int rc = fd_decode(d, bytes, len, 64, 0, out, NULL, why, cap);
	fd_decoder_destroy(d);
	fprintf(stderr, "  refused: %s\n", why);
	return rc == want_rc && strstr(why, text) ? 0 : rc == want_rc ? -2 : rc;
}

TEST(refuses_truncated)
{
	size_t len;
	char why[256];
	uint8_t *jpeg = fixture_jpeg(500, 375, 2, VR_SUBSAMP_420, 90, &len);
	ASSERT(jpeg);
	int rc = expect_refused(jpeg, len / 2, NULL, VR_EINVAL, "truncated or corrupt JPEG: ", why, sizeof why);
	int rc_head = expect_refused(jpeg, 100, NULL, VR_EINVAL, "truncated or corrupt JPEG: ", why, sizeof why);
	vr_jpeg_free(jpeg);
	ASSERT_OK(rc);
	ASSERT_OK(rc_head);
}

/* A refused image must not poison the decoder: the same decoder decodes a
 * good image after a truncated one and after a header-only one, to the same
 * pixels as before. */
TEST(good_image_after_refused_ones)
{
	size_t len;
	char why[256];
	static uint8_t first[64 * 64 * 3], again[64 * 64 * 3];
	uint8_t *jpeg = fixture_jpeg(300, 200, 3, VR_SUBSAMP_420, 90, &len);
	ASSERT(jpeg);
	fd_decoder *d = NULL;
	ASSERT_OK(fd_decoder_create(&d, NULL));
	int rc0 = fd_decode(d, jpeg, len, 64, 0, first, NULL, why, sizeof why);
	int rc1 = fd_decode(d, jpeg, len / 2, 64, 0, again, NULL, why, sizeof why);
	int rc2 = fd_decode(d, jpeg, 300, 64, 0, again, NULL, why, sizeof why);
	int rc3 = fd_decode(d, jpeg, len, 64, 0, again, NULL, why, sizeof why);
	fd_decoder_destroy(d);
	vr_jpeg_free(jpeg);
	ASSERT_OK(rc0);
	ASSERT_EQ_INT(rc1, VR_EINVAL);
	ASSERT_EQ_INT(rc2, VR_EINVAL);
	ASSERT_MSG(rc3 == 0, "good image after refused ones: rc %d (%s)", rc3, why);
	ASSERT(!memcmp(first, again, sizeof first));
}

/* A progressive JPEG with hundreds of valid scans costs a pass over the
 * whole image per scan (896 scans of 3000x3000 grey, 271 KB, took 6 s to
 * decode), so over 64 scans is refused before decoding; 64 decode. */
TEST(refuses_too_many_scans)
{
	size_t len, len64;
	char why[256];
	static uint8_t out[64 * 64 * 3];
	uint8_t *many = fixture_many_scans(300, 200, 13, &len);
	uint8_t *ok = fixture_many_scans(300, 200, 0, &len64);
	ASSERT(many && ok);
	int rc = expect_refused(many, len, NULL, VR_ETOOBIG, "896 scans", why, sizeof why);
	fd_decoder *d = NULL;
	int rc64 = fd_decoder_create(&d, NULL);
	if (!rc64)
		rc64 = fd_decode(d, ok, len64, 64, 0, out, NULL, why, sizeof why);
	fd_decoder_destroy(d);
	free(many);
	free(ok);
	ASSERT_OK(rc);
	ASSERT_MSG(rc64 == 0, "64 scans: rc %d (%s)", rc64, why);
	ASSERT_EQ_INT(out[0], 128);
}

/* Index of the first byte of entropy-coded data (after the SOS segment). */
static size_t scan_start(const uint8_t *p, size_t len)
{
	for (size_t i = 2; i + 4 < len; i++)
		if (p[i] == 0xFF && p[i + 1] == 0xDA)
			return i + 2 + ((size_t)p[i + 2] << 8 | p[i + 3]);
	return 0;
}

TEST(refuses_corrupt)
{
	size_t len;
	char why[256];
	uint8_t *jpeg = fixture_jpeg(500, 375, 2, VR_SUBSAMP_420, 90, &len);
	ASSERT(jpeg);
	size_t s = scan_start(jpeg, len);
	ASSERT(s > 0 && s < len / 2);
	uint8_t *bad = malloc(len);
	ASSERT(bad);
	memcpy(bad, jpeg, len);
	/* A run of flipped bytes in the middle of the scan. */
	for (size_t i = s + (len - s) / 2; i < s + (len - s) / 2 + 64; i++)
		bad[i] ^= 0xFF;
	int rc = expect_refused(bad, len, NULL, VR_EINVAL, "truncated or corrupt JPEG: ", why, sizeof why);

	/* Random flips anywhere: decoded or refused, never a crash, and a
	 * refusal always carries a reason. */
	uint32_t x = 99;
	int refused = 0, bad_result = 0;
	static uint8_t out[64 * 64 * 3];
	fd_decoder *d;
	ASSERT_OK(fd_decoder_create(&d, NULL));
	for (int t = 0; t < 60; t++) {
		memcpy(bad, jpeg, len);
		for (int f = 0; f < 4; f++) {
			x = x * 1664525u + 1013904223u;
			bad[(x >> 8) % len] ^= (uint8_t)(1u << (x % 8));
		}
		int r = fd_decode(d, bad, len, 64, 0, out, NULL, why, sizeof why);
		if (r == VR_EINVAL && why[0])
			refused++;
		else if (r != 0)
			bad_result++;
	}
	fd_decoder_destroy(d);
	free(bad);
	vr_jpeg_free(jpeg);
	ASSERT_OK(rc);
	ASSERT_EQ_INT(bad_result, 0);
	ASSERT(refused > 0);
}

TEST(refuses_zero_bytes)
{
	char why[256];
	static const uint8_t nothing[1];
	ASSERT_OK(expect_refused(nothing, 0, NULL, VR_EINVAL, "empty image (0 bytes)", why, sizeof why));
	ASSERT_OK(expect_refused(NULL, 0, NULL, VR_EINVAL, "empty image", why, sizeof why));
}

TEST(refuses_png)
{
	char why[256];
	/* A PNG signature and the start of its IHDR chunk, as a renamed
	 * .png would arrive. */
	static const uint8_t png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n',
				       0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 1, 0, 0, 0, 1, 0,
				       8, 2, 0, 0, 0 };
	ASSERT_OK(expect_refused(png, sizeof png, NULL, VR_EINVAL,
				 "not a JPEG (starts with 89 50 4E 47: looks like PNG)", why, sizeof why));
	static const uint8_t text[] = "hello";
	ASSERT_OK(expect_refused(text, 5, NULL, VR_EINVAL, "not a JPEG (starts with 68 65 6C 6C", why, sizeof why));
}

TEST(refuses_huge_header_before_decoding)
{
	size_t len;
	char why[256];
	uint8_t *jpeg = fixture_jpeg(64, 48, 1, VR_SUBSAMP_420, 90, &len);
	ASSERT(jpeg);
	/* SOF0: FF C0, length (2), precision (1), height (2), width (2). */
	size_t sof = 0;
	for (size_t i = 2; i + 9 < len; i++)
		if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0) {
			sof = i;
			break;
		}
	ASSERT(sof > 0);
	jpeg[sof + 5] = 20000 >> 8;
	jpeg[sof + 6] = 20000 & 0xFF;
	jpeg[sof + 7] = 20000 >> 8;
	jpeg[sof + 8] = 20000 & 0xFF;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	int rc = expect_refused(jpeg, len, NULL, VR_ETOOBIG,
				"image is 20000x20000 = 400000000 pixels, over the limit of 50000000", why, sizeof why);
	clock_gettime(CLOCK_MONOTONIC, &b);
	vr_jpeg_free(jpeg);
	ASSERT_OK(rc);
	double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
	ASSERT_MSG(ms < 50, "refusal took %.1f ms: did it decode?", ms);
}

TEST(refuses_over_max_bytes)
{
	size_t len;
	char why[256];
	fd_decode_limits lim = { .max_bytes = 4096 };
	uint8_t *jpeg = fixture_jpeg(500, 375, 1, VR_SUBSAMP_420, 90, &len);
	ASSERT(jpeg);
	ASSERT(len > 4096);
	char want[128];
	snprintf(want, sizeof want, "image is %zu bytes, over the limit of 4096", len);
	int rc = expect_refused(jpeg, len, &lim, VR_ETOOBIG, want, why, sizeof why);
	fd_decode_limits pix = { .max_pixels = 500 * 375 - 1 };
	int rc2 = expect_refused(jpeg, len, &pix, VR_ETOOBIG, "= 187500 pixels, over the limit of 187499", why, sizeof why);
	vr_jpeg_free(jpeg);
	ASSERT_OK(rc);
	ASSERT_OK(rc2);
}

TEST(bad_arguments)
{
	fd_decoder *d;
	char why[64];
	uint8_t out[3];
	ASSERT_OK(fd_decoder_create(&d, NULL));
	int rc0 = fd_decode(d, "x", 1, 0, 0, out, NULL, why, sizeof why);
	int rc1 = fd_decode(d, "x", 1, 5000, 0, out, NULL, why, sizeof why);
	int rc2 = fd_decode(d, "x", 1, 1, 0, NULL, NULL, NULL, 0);
	fd_decoder_destroy(d);
	ASSERT_EQ_INT(rc0, VR_EINVAL);
	ASSERT_EQ_INT(rc1, VR_EINVAL);
	ASSERT_EQ_INT(rc2, VR_EINVAL);
	uint8_t *j;
	size_t len;
	ASSERT_EQ_INT(vr_jpeg_encode(out, 1, 1, VR_PIX_RGB, VR_SUBSAMP_420, 0, &j, &len), VR_EINVAL);
}

TEST(normalize)
{
	enum { S = 2 };
	const uint8_t rgb[S * S * 3] = { 0, 128, 255, 10, 20, 30, 40, 50, 60, 255, 255, 255 };
	float out[3 * S * S];
	const float mean[3] = { 0.485f, 0.456f, 0.406f }, std[3] = { 0.229f, 0.224f, 0.225f };
	fd_normalize(out, rgb, S, mean, std);
	for (int c = 0; c < 3; c++)
		for (int i = 0; i < S * S; i++)
			ASSERT_NEAR(out[c * S * S + i], (rgb[i * 3 + c] / 255.0 - mean[c]) / std[c], 1e-5);
	const float zero[3] = { 0, 0, 0 }, one[3] = { 1, 1, 1 };
	fd_normalize(out, rgb, S, zero, one);
	ASSERT_NEAR(out[0], 0.0, 1e-7);
	ASSERT_NEAR(out[1 * S * S + 0], 128 / 255.0, 1e-6);
	ASSERT_NEAR(out[2 * S * S + 3], 1.0, 1e-6);
}

static const struct vr_test tests[] = {
	T(sizes_aspects_and_dct_scaling),
	T(picks_smallest_scale),
	T(subsampling_and_grey),
	T(cmyk_jpeg),
	T(reuse_matches_fresh),
	T(refuses_truncated),
	T(good_image_after_refused_ones),
	T(refuses_corrupt),
	T(refuses_too_many_scans),
	T(refuses_zero_bytes),
	T(refuses_png),
	T(refuses_huge_header_before_decoding),
	T(refuses_over_max_bytes),
	T(bad_arguments),
	T(normalize),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
