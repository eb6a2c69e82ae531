/* decode: JPEG bytes to the network's S×S RGB input (contract in decode.h);
 * the encoder that tests and the data generator use is common/jpeg_enc.h.
 *
 * The pipeline per image: signature and byte-limit checks, header, pixel
 * limit (so a 20000×20000 header costs nothing), DCT-scaled decode by
 * TurboJPEG into a reused buffer, then one separable resample that maps
 * each output pixel of the centre crop straight back to the decoded image:
 * the resized image is never materialised; each output row is filtered
 * vertically over the columns the crop needs, then horizontally into the
 * output. All scratch lives in the decoder and only grows. Coordinates are computed against the original image size, so the
 * DCT-scaled and the full-size paths sample the same region of the picture
 * and differ only by libjpeg's scaled IDCT. */
#include "decode.h"

#include "err.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#define FD_MAX_SIZE 4096
#define FD_MAX_SCANS 64

/* Per output index along one axis: the first source index, how many
 * source samples contribute and their weights (taps entries per output). */
struct fd_axis {
	int *first;
	int *count;
	float *weight;
	int taps;
	size_t first_cap, count_cap, weight_cap; /* bytes */
};

struct fd_decoder {
	tjhandle tj;
	fd_decode_limits limits;
	uint8_t *pixels; /* the decoded, DCT-scaled image */
	size_t pixels_cap;
	float *acc;      /* one output row, vertically filtered, before the
			  * horizontal pass */
	size_t acc_cap;
	int *first_rel;  /* ax.first relative to the first column used */
	size_t first_rel_cap;
	struct fd_axis ax, ay;
};

/* Grow-only scratch: the old contents are not needed, so no copy. */
static int grow(void *bufp, size_t *cap, size_t need)
{
	void **buf = bufp;
	if (need <= *cap)
		return 0;
	free(*buf);
	*buf = malloc(need);
	if (!*buf) {
		*cap = 0;
		return VR_ENOMEM;
	}
	*cap = need;
	return 0;
}

static int refuse(char *why, size_t cap, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int refuse(char *why, size_t cap, int rc, const char *fmt, ...)
{
	if (why && cap > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, cap, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Names the format when the bytes are a common image of another kind, so
 * the caller learns what they actually sent. */
static int not_jpeg(const uint8_t *p, size_t len, char *why, size_t cap)
{
	const char *kind = NULL;
	if (len >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8))
		kind = "PNG";
	else if (len >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6)))
		kind = "GIF";
	else if (len >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4))
		kind = "WebP";
	else if (len >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4)))
		kind = "TIFF";
	else if (len >= 12 && !memcmp(p + 4, "ftyp", 4))
		kind = "HEIF/AVIF";
	else if (len >= 2 && !memcmp(p, "BM", 2))
		kind = "BMP";

	char hex[16] = "";
	size_t n = len < 4 ? len : 4, at = 0;
	for (size_t i = 0; i < n; i++)
		at += (size_t)snprintf(hex + at, sizeof hex - at, "%s%02X", i ? " " : "", p[i]);
	if (kind)
		return refuse(why, cap, VR_EINVAL, "not a JPEG (starts with %s: looks like %s)", hex, kind);
	return refuse(why, cap, VR_EINVAL, "not a JPEG (starts with %s, expected FF D8 FF)", hex);
}

int fd_decoder_create(fd_decoder **out, const fd_decode_limits *limits)
{
	fd_decoder *d = calloc(1, sizeof *d);
	*out = NULL;
	if (!d)
		return VR_ENOMEM;
	if (limits)
		d->limits = *limits;
	if (!d->limits.max_bytes)
		d->limits.max_bytes = (size_t)32 << 20;
	if (!d->limits.max_pixels)
		d->limits.max_pixels = 50000000;
	d->tj = tjInitDecompress();
	if (!d->tj) {
		free(d);
		return VR_EINVAL;
	}
	*out = d;
	return 0;
}

static void axis_free(struct fd_axis *a)
{
	free(a->first);
	free(a->count);
	free(a->weight);
}

void fd_decoder_destroy(fd_decoder *d)
{
	if (!d)
		return;
	tjDestroy(d->tj);
	free(d->pixels);
	free(d->acc);
	free(d->first_rel);
	axis_free(&d->ax);
	axis_free(&d->ay);
	free(d);
}

/* The smallest DCT scale of 1/1, 1/2, 1/4, 1/8 whose exact scaled shorter
 * side is still >= size. TurboJPEG also offers k/8 scales, but in 2.1.5 on
 * x86 those run libjpeg's plain-C k×k IDCTs and are slower than a full-size
 * SIMD decode (500×375 4:2:0: 5/8 0.93 ms, 3/4 1.0 ms, 1/1 0.66 ms, 1/2
 * 0.50 ms), so only the power-of-two ones are worth it. Images smaller
 * than size decode at 1/1 and are enlarged by the bilinear resample. */
static tjscalingfactor pick_scale(int w, int h, int size, unsigned flags)
{
	tjscalingfactor best = { 1, 1 };
	int n = 0;
	tjscalingfactor *sf = flags & FD_DECODE_NO_DCT_SCALING ? NULL : tjGetScalingFactors(&n);
	long short_side = w < h ? w : h;
	for (int i = 0; i < n; i++) {
		if (sf[i].num != 1)
			continue;
		if (short_side * sf[i].num < (long)size * sf[i].denom)
			continue;
		if ((long)sf[i].num * best.denom < (long)best.num * sf[i].denom)
			best = sf[i];
	}
	return best;
}

/* Plans one axis: n_out outputs at positions off..off+n_out-1 of an image
 * resized to n_resized, sampled from n_src decoded samples that span
 * src_extent original-image units scaled by the DCT factor (src_extent
 * may be a little under n_src where libjpeg rounded the scaled size up). */
static int axis_plan(struct fd_axis *a, int n_src, double src_extent, int n_resized,
		     int n_out, int off)
{
	double inv = src_extent / n_resized;
	int shrink = inv > 1.0;
	int taps = shrink ? (int)ceil(inv) + 1 : 2;
	int rc = grow(&a->first, &a->first_cap, (size_t)n_out * sizeof(int));
	if (rc == 0)
		rc = grow(&a->count, &a->count_cap, (size_t)n_out * sizeof(int));
	if (rc == 0)
		rc = grow(&a->weight, &a->weight_cap, (size_t)n_out * taps * sizeof(float));
	if (rc)
		return rc;
	a->taps = taps;
	for (int o = 0; o < n_out; o++) {
		float *w = a->weight + (size_t)o * taps;
		int first, count = 0;
		if (shrink) {
			/* Area: the output pixel's footprint [a0, a1) in source
			 * samples, each sample weighted by its overlap. */
			double a0 = (o + off) * inv, a1 = (o + off + 1) * inv;
			if (a1 > n_src)
				a1 = n_src;
			if (a0 > a1 - 1e-9)
				a0 = a1 - 1.0;
			first = (int)a0;
			int last = (int)ceil(a1) - 1;
			if (last >= n_src)
				last = n_src - 1;
			for (int i = first; i <= last && count < taps; i++) {
				double lo = i > a0 ? i : a0, hi = i + 1 < a1 ? i + 1 : a1;
				w[count++] = (float)((hi - lo) / (a1 - a0));
			}
		} else {
			/* Bilinear between the two nearest sample centres. */
			double c = (o + off + 0.5) * inv - 0.5;
			int i0 = (int)floor(c);
			double f = c - i0;
			if (i0 < 0) {
				first = 0;
				w[count++] = 1.0f;
			} else if (i0 >= n_src - 1) {
				first = n_src - 1;
				w[count++] = 1.0f;
			} else {
				first = i0;
				w[count++] = (float)(1.0 - f);
				w[count++] = (float)f;
			}
		}
		for (int k = count; k < taps; k++)
			w[k] = 0.0f;
		a->first[o] = first;
		a->count[o] = count;
	}
	return 0;
}

/* Rounds and clamps (written so it compiles to minss/maxss, which
 * fminf/fmaxf do not without -ffast-math). */
static inline uint8_t to_byte(float v)
{
	v = v < 0.0f ? 0.0f : v;
	v = v > 255.0f ? 255.0f : v;
	return (uint8_t)(v + 0.5f);
}

/* The horizontal pass of one output row: every output pixel is a
 * weighted sum of `taps` consecutive samples of the vertically filtered
 * row (weights past an output's own taps are zero). Called with a
 * constant taps so the compiler unrolls it; nch is 1 or 3. */
static inline void hpass(const float *row, const int *first, const float *weight, int taps,
			 int nch, int size, uint8_t *out)
{
	for (int x = 0; x < size; x++) {
		const float *s = row + (size_t)first[x] * nch;
		const float *w = weight + (size_t)x * taps;
		float r = 0, g = 0, b = 0;
		for (int k = 0; k < taps; k++) {
			r += w[k] * s[k * nch];
			if (nch == 3) {
				g += w[k] * s[k * 3 + 1];
				b += w[k] * s[k * 3 + 2];
			}
		}
		out[x * nch] = to_byte(r);
		if (nch == 3) {
			out[x * 3 + 1] = to_byte(g);
			out[x * 3 + 2] = to_byte(b);
		}
	}
}

/* Resamples the decoded w×h image of nch channels (1 or 3) into
 * size×size bytes along the plans in d->ax and d->ay. Vertical first: each
 * output row is a weighted sum of a few whole source rows (contiguous, so
 * it vectorises), restricted to the columns the crop uses; then hpass
 * gathers each output pixel's few horizontal taps from that row. */
static int resample(fd_decoder *d, int w, int nch, int size, uint8_t *out)
{
	const struct fd_axis *ax = &d->ax, *ay = &d->ay;
	int col0 = ax->first[0];
	int col1 = ax->first[size - 1] + ax->count[size - 1] - 1;
	size_t span = (size_t)(col1 - col0 + 1) * nch;
	/* Zero padding lets hpass run all taps past the last column. */
	size_t pad = (size_t)ax->taps * nch;
	int rc = grow(&d->acc, &d->acc_cap, (span + pad) * sizeof(float));
	if (rc == 0)
		rc = grow(&d->first_rel, &d->first_rel_cap, (size_t)size * sizeof(int));
	if (rc)
		return rc;
	float *acc = d->acc;
	memset(acc + span, 0, pad * sizeof(float));
	for (int x = 0; x < size; x++)
		d->first_rel[x] = ax->first[x] - col0;

	for (int y = 0; y < size; y++) {
		const float *wt = ay->weight + (size_t)y * ay->taps;
		const uint8_t *src = d->pixels + ((size_t)ay->first[y] * w + col0) * nch;
		for (size_t i = 0; i < span; i++)
			acc[i] = wt[0] * src[i];
		for (int k = 1; k < ay->count[y]; k++) {
			const uint8_t *row = src + (size_t)k * w * nch;
			float wk = wt[k];
			for (size_t i = 0; i < span; i++)
				acc[i] += wk * row[i];
		}

		uint8_t *o = out + (size_t)y * size * nch;
		const int *first = d->first_rel;
		switch (ax->taps * 4 + nch) {
		case 2 * 4 + 3: hpass(acc, first, ax->weight, 2, 3, size, o); break;
		case 3 * 4 + 3: hpass(acc, first, ax->weight, 3, 3, size, o); break;
		case 4 * 4 + 3: hpass(acc, first, ax->weight, 4, 3, size, o); break;
		case 2 * 4 + 1: hpass(acc, first, ax->weight, 2, 1, size, o); break;
		case 3 * 4 + 1: hpass(acc, first, ax->weight, 3, 1, size, o); break;
		default: hpass(acc, first, ax->weight, ax->taps, nch, size, o); break;
		}
	}
	return 0;
}

/* libjpeg-turbo keeps CMYK in the Adobe convention (255 = no ink), so
 * R = C·K/255 etc. (the naive conversion without a colour profile).
 * In place: pixel i is read at 4i before 3i is written. */
static void cmyk_to_rgb(uint8_t *p, size_t npixels)
{
	for (size_t i = 0; i < npixels; i++) {
		unsigned c = p[4 * i], m = p[4 * i + 1], y = p[4 * i + 2], k = p[4 * i + 3];
		p[3 * i] = (uint8_t)((c * k + 127) / 255);
		p[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
		p[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
	}
}

/* The scans (SOS markers) in a JPEG: its marker segments walked from SOI,
 * each scan's entropy-coded data skipped to the next marker that is not a
 * stuffed zero or a restart. Stops at EOI, at the end of the bytes or at
 * anything malformed, which libjpeg then refuses with its own reason. */
static int count_scans(const uint8_t *p, size_t len)
{
	size_t i = 2;
	int scans = 0;
	while (i + 4 <= len && p[i] == 0xFF) {
		uint8_t m = p[i + 1];
		if (m == 0xFF) { /* fill byte */
			i++;
			continue;
		}
		if (m == 0xD9) /* EOI */
			break;
		if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { /* no length */
			i += 2;
			continue;
		}
		i += 2 + ((size_t)p[i + 2] << 8 | p[i + 3]);
		if (m != 0xDA)
			continue;
		scans++;
		for (;;) {
			const uint8_t *ff = i < len ? memchr(p + i, 0xFF, len - i) : NULL;
			if (!ff || ff + 1 >= p + len)
				return scans;
			i = (size_t)(ff - p);
			if (ff[1] != 0 && (ff[1] < 0xD0 || ff[1] > 0xD7))
				break;
			i += 2;
		}
	}
	return scans;
}

/* A failed TurboJPEG 2.1 call can leave the handle's libjpeg state mid-
 * stream, so the next, good image would be refused ("no image frame").
 * The decoder therefore starts a fresh handle after every failure; a
 * failure is rare enough that the cost does not matter. Returns rc. */
static int refuse_reset(fd_decoder *d, char *why, size_t cap, const char *what)
{
	refuse(why, cap, VR_EINVAL, "truncated or corrupt JPEG: %s", what);
	tjhandle fresh = tjInitDecompress();
	if (fresh) {
		tjDestroy(d->tj);
		d->tj = fresh;
	}
	return VR_EINVAL;
}

int fd_decode(fd_decoder *d, const void *jpeg, size_t len, int size, unsigned flags,
	      uint8_t *rgb_out, fd_decode_info *info, char *why, size_t why_cap)
{
	const uint8_t *p = jpeg;
	fd_decode_info local;
	if (!info)
		info = &local;
	memset(info, 0, sizeof *info);
	info->colorspace = -1;
	if (why && why_cap)
		why[0] = '\0';

	if (!d || !rgb_out || size < 1 || size > FD_MAX_SIZE || (!jpeg && len))
		return refuse(why, why_cap, VR_EINVAL, "bad arguments to fd_decode (size %d)", size);
	if (len == 0)
		return refuse(why, why_cap, VR_EINVAL, "empty image (0 bytes)");
	if (len > d->limits.max_bytes || len > ULONG_MAX)
		return refuse(why, why_cap, VR_ETOOBIG, "image is %zu bytes, over the limit of %zu",
			      len, d->limits.max_bytes);
	if (len < 3 || p[0] != 0xFF || p[1] != 0xD8 || p[2] != 0xFF)
		return not_jpeg(p, len, why, why_cap);

	/* A stream cut before its frame header reads as "tables only":
	 * TurboJPEG succeeds without setting the outputs, hence the zeros. */
	int w = 0, h = 0, subsamp = 0, cs = -1;
	if (tjDecompressHeader3(d->tj, p, (unsigned long)len, &w, &h, &subsamp, &cs) != 0)
		return refuse_reset(d, why, why_cap, tjGetErrorStr2(d->tj));
	if (w < 1 || h < 1) {
		char what[64];
		snprintf(what, sizeof what, "no image frame in the first %zu bytes", len);
		return refuse_reset(d, why, why_cap, what);
	}
	info->width = w;
	info->height = h;
	info->colorspace = cs;
	uint64_t pixels = (uint64_t)w * (uint64_t)h;
	if (pixels > d->limits.max_pixels)
		return refuse(why, why_cap, VR_ETOOBIG,
			      "image is %dx%d = %llu pixels, over the limit of %llu", w, h,
			      (unsigned long long)pixels, (unsigned long long)d->limits.max_pixels);

	/* Each scan of a progressive JPEG is a pass over the whole image, and
	 * a valid one can hold nearly 900 (every coefficient band refined bit
	 * by bit): 271 KB of them at 3000x3000 took 6 s to decode. Encoders
	 * write about 10. */
	int scans = count_scans(p, len);
	if (scans > FD_MAX_SCANS)
		return refuse(why, why_cap, VR_ETOOBIG,
			      "JPEG has %d scans, over the limit of %d (a progressive JPEG needs about 10)",
			      scans, FD_MAX_SCANS);

	tjscalingfactor sf = pick_scale(w, h, size, flags);
	int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
	info->scaled_width = sw;
	info->scaled_height = sh;
	int pf = cs == TJCS_GRAY ? TJPF_GRAY : cs == TJCS_CMYK || cs == TJCS_YCCK ? TJPF_CMYK : TJPF_RGB;
	int rc = grow(&d->pixels, &d->pixels_cap, (size_t)sw * sh * tjPixelSize[pf]);
	if (rc)
		return refuse(why, why_cap, rc, "out of memory for a %dx%d image", sw, sh);
	/* STOPONWARNING: a truncated scan is a warning to libjpeg, which
	 * would hand back an image filled with grey. */
	if (tjDecompress2(d->tj, p, (unsigned long)len, d->pixels, sw, 0, sh, pf,
			  TJFLAG_STOPONWARNING) != 0)
		return refuse_reset(d, why, why_cap, tjGetErrorStr2(d->tj));
	int nch = 3;
	if (pf == TJPF_CMYK)
		cmyk_to_rgb(d->pixels, (size_t)sw * sh);
	else if (pf == TJPF_GRAY)
		nch = 1;

	/* Resize so the shorter side is size, then take the centre. */
	int rw, rh;
	if (w <= h) {
		rw = size;
		rh = (int)(((uint64_t)h * size + (uint64_t)w / 2) / (uint64_t)w);
	} else {
		rh = size;
		rw = (int)(((uint64_t)w * size + (uint64_t)h / 2) / (uint64_t)h);
	}
	double scale = (double)sf.num / sf.denom;
	rc = axis_plan(&d->ax, sw, w * scale, rw, size, (rw - size) / 2);
	if (rc == 0)
		rc = axis_plan(&d->ay, sh, h * scale, rh, size, (rh - size) / 2);
	if (rc == 0)
		rc = resample(d, sw, nch, size, rgb_out);
	if (rc)
		return refuse(why, why_cap, rc, "out of memory resizing a %dx%d image", sw, sh);

	if (nch == 1) {
		/* Grey to RGB, backwards so it can run in place. */
		for (size_t i = (size_t)size * size; i-- > 0;)
			rgb_out[3 * i] = rgb_out[3 * i + 1] = rgb_out[3 * i + 2] = rgb_out[i];
	}
	return 0;
}

void fd_normalize(float *out_chw, const uint8_t *in_rgb_hwc, int size,
		  const float mean[3], const float std[3])
{
	size_t plane = (size_t)size * size;
	for (int c = 0; c < 3; c++) {
		float mul = 1.0f / (255.0f * std[c]), add = -mean[c] / std[c];
		float *o = out_chw + c * plane;
		const uint8_t *in = in_rgb_hwc + c;
		for (size_t i = 0; i < plane; i++)
			o[i] = in[3 * i] * mul + add;
	}
}
