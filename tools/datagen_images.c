/* datagen_images: the item images of a data set (datagen.h): procedural
 * shapes or Fashion-MNIST garments in the item's category, hue and
 * texture, rendered into one reused pixel buffer and written as JPEGs. */
#include "datagen_int.h"

#include "err.h"
#include "jpeg_enc.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Fashion-MNIST's IDX files: (images, labels) for train and test. */
const char *const dg__fashion_files[2][2] = {
	{ "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz" },
	{ "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz" },
};

#define SIN_LUT 1024

/* Everything one image needs, drawn from the item's own stream. */
struct paint {
	int cat;
	float fg[3];              /* shape colour in [0, 1] */
	float bg0[3], bg1[3];     /* background gradient ends */
	float g0, gx, gy;         /* gradient position t = g0 + gx x + gy y */
	float cx, cy, radius;     /* shape centre and size in pixels */
	float cosr, sinr;         /* shape rotation */
	float tu, tv, tphase;     /* texture phase in LUT steps: tu u + tv v + tphase */
	float tamp;               /* texture depth, 0 for flat */
	const uint8_t *garment;   /* 28 x 28 ink of a Fashion-MNIST image, or NULL */
};

/* Fashion-MNIST in memory: every image of both splits, grouped by class. */
#define GARMENT_SIDE 28

struct fashion {
	uint8_t *pix;                        /* image k at pix + k * 28 * 28 */
	int32_t *by_class;                   /* image indices grouped by label */
	int32_t start[DG_CATEGORIES + 1];    /* class c: by_class[start[c]..start[c+1]) */
};

static uint32_t be32(const unsigned char *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Opens an IDX file and reads its header: images (magic 0x803) must be
 * 28 x 28; labels have magic 0x801. Leaves *z at the data. */
static int idx_open(const char *dir, const char *name, uint32_t magic, gzFile *z, int64_t *count)
{
	char path[PATH_MAX];
	unsigned char h[16];
	int len = magic == 0x803 ? 16 : 8;
	if (dg__path_join(path, sizeof(path), dir, name))
		return VR_EINVAL;
	errno = 0;
	if (!(*z = gzopen(path, "rb")))
		return errno ? -errno : VR_ENOMEM;
	if (gzread(*z, h, len) != len || be32(h) != magic ||
	    (len == 16 && (be32(h + 8) != GARMENT_SIDE || be32(h + 12) != GARMENT_SIDE)))
		return VR_ECORRUPT;
	*count = be32(h + 4);
	return 0;
}

static void fashion_free(struct fashion *fm)
{
	free(fm->pix);
	free(fm->by_class);
	memset(fm, 0, sizeof(*fm));
}

/* Loads both splits of Fashion-MNIST from dir into *fm (freed by the
 * caller with fashion_free, also on failure). */
static int fashion_load(const char *dir, struct fashion *fm)
{
	gzFile zi[2] = { NULL, NULL }, zl[2] = { NULL, NULL };
	int64_t ni[2] = { 0, 0 }, nl[2] = { 0, 0 };
	uint8_t *labels = NULL;
	int rc = 0;
	const int side2 = GARMENT_SIDE * GARMENT_SIDE;
	for (int k = 0; k < 2; k++) {
		if ((rc = idx_open(dir, dg__fashion_files[k][0], 0x803, &zi[k], &ni[k])) ||
		    (rc = idx_open(dir, dg__fashion_files[k][1], 0x801, &zl[k], &nl[k])))
			goto leave;
		if (ni[k] != nl[k] || ni[k] <= 0 || ni[k] > 1000000) {
			rc = VR_ECORRUPT;
			goto leave;
		}
	}
	int64_t n = ni[0] + ni[1];
	fm->pix = malloc(n * side2);
	fm->by_class = malloc(n * sizeof(*fm->by_class));
	labels = malloc(n);
	if (!fm->pix || !fm->by_class || !labels) {
		rc = VR_ENOMEM;
		goto leave;
	}
	for (int k = 0, at = 0; k < 2; at += (int)ni[k], k++) {
		if (gzread(zi[k], fm->pix + (size_t)at * side2, (unsigned)(ni[k] * side2)) !=
			    ni[k] * side2 ||
		    gzread(zl[k], labels + at, (unsigned)ni[k]) != ni[k]) {
			rc = VR_ECORRUPT;
			goto leave;
		}
	}
	memset(fm->start, 0, sizeof(fm->start));
	for (int64_t k = 0; k < n; k++) {
		if (labels[k] >= DG_CATEGORIES) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		fm->start[labels[k] + 1]++;
	}
	for (int c = 0; c < DG_CATEGORIES; c++)
		fm->start[c + 1] += fm->start[c];
	int32_t fill[DG_CATEGORIES];
	memcpy(fill, fm->start, sizeof(fill));
	for (int64_t k = 0; k < n; k++)
		fm->by_class[fill[labels[k]]++] = (int32_t)k;
	for (int c = 0; c < DG_CATEGORIES; c++)
		if (fm->start[c + 1] == fm->start[c])
			rc = VR_ECORRUPT;
leave:
	for (int k = 0; k < 2; k++) {
		if (zi[k])
			gzclose(zi[k]);
		if (zl[k])
			gzclose(zl[k]);
	}
	free(labels);
	return rc;
}

static void hsv_to_rgb(double h, double s, double v, float out[3])
{
	h = fmod(fmod(h, 360.0) + 360.0, 360.0) / 60.0;
	int k = (int)h;
	double f = h - k, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
	double rgb[6][3] = {
		{ v, t, p }, { q, v, p }, { p, v, t }, { p, q, v }, { t, p, v }, { v, p, q },
	};
	for (int c = 0; c < 3; c++)
		out[c] = (float)rgb[k % 6][c];
}

/* fm: Fashion-MNIST for garment images, NULL for shapes. */
static void paint_setup(const struct gen *g, int64_t i, const struct fashion *fm, struct paint *p)
{
	struct rng r;
	int w = g->width[i], h = g->height[i];
	rng_seed(&r, g->o->seed, ST_IMAGE, (uint64_t)i);
	p->cat = g->cat[i];
	hsv_to_rgb(g->hue[i] * (360.0 / DG_HUES) + (rng_u01(&r) * 2 - 1) * 10,
		   0.55 + 0.4 * rng_u01(&r), 0.55 + 0.4 * rng_u01(&r), p->fg);
	double bh = rng_u01(&r) * 360, bs = rng_u01(&r) * 0.3, bv = 0.25 + 0.7 * rng_u01(&r);
	hsv_to_rgb(bh, bs, bv, p->bg0);
	hsv_to_rgb(bh + (rng_u01(&r) * 2 - 1) * 30, bs,
		   fmin(fmax(bv + (rng_u01(&r) * 2 - 1) * 0.3, 0), 1), p->bg1);
	double ga = rng_u01(&r) * 2 * M_PI, gl = w > h ? w : h;
	p->gx = (float)(cos(ga) / gl);
	p->gy = (float)(sin(ga) / gl);
	p->g0 = (float)(0.5 - 0.5 * w * p->gx - 0.5 * h * p->gy);
	double side = w < h ? w : h;
	p->radius = (float)(0.5 * side * (0.55 + 0.35 * rng_u01(&r)));
	p->cx = (float)(0.5 * w + (rng_u01(&r) * 2 - 1) * fmax(0, 0.5 * w - p->radius) * 0.8);
	p->cy = (float)(0.5 * h + (rng_u01(&r) * 2 - 1) * fmax(0, 0.5 * h - p->radius) * 0.8);
	double rot = rng_u01(&r) * 2 * M_PI, psi = rng_u01(&r) * 2 * M_PI;
	p->cosr = (float)cos(rot);
	p->sinr = (float)sin(rot);
	/* texture period in shape units (radius 1): coarse 0.6, fine 0.2 */
	double period = g->tex[i] == 1 ? 0.6 : 0.2;
	p->tu = (float)(cos(psi) * SIN_LUT / period);
	p->tv = (float)(sin(psi) * SIN_LUT / period);
	p->tphase = (float)(rng_u01(&r) * SIN_LUT);
	p->tamp = g->tex[i] ? 0.45f : 0.0f;
	p->garment = NULL;
	if (fm) { /* garments: upright within 12 degrees, filling more of the frame */
		int c = g->cat[i];
		int64_t k = fm->start[c] + rng_below(&r, fm->start[c + 1] - fm->start[c]);
		p->garment = fm->pix + (size_t)fm->by_class[k] * GARMENT_SIDE * GARMENT_SIDE;
		rot = (rng_u01(&r) * 2 - 1) * (12 * M_PI / 180);
		p->cosr = (float)cos(rot);
		p->sinr = (float)sin(rot);
		p->radius = (float)(0.5 * side * (0.75 + 0.2 * rng_u01(&r)));
		p->cx = (float)(0.5 * w + (rng_u01(&r) * 2 - 1) * fmax(0, 0.5 * w - p->radius) * 0.8);
		p->cy = (float)(0.5 * h + (rng_u01(&r) * 2 - 1) * fmax(0, 0.5 * h - p->radius) * 0.8);
	}
}

/* fmaxf/fminf are library calls without -ffast-math; these inline. */
static inline float maxf(float a, float b)
{
	return a > b ? a : b;
}

static inline float minf(float a, float b)
{
	return a < b ? a : b;
}

static float sd_box(float u, float v, float bu, float bv)
{
	float qx = fabsf(u) - bu, qy = fabsf(v) - bv;
	float ox = maxf(qx, 0), oy = maxf(qy, 0);
	return sqrtf(ox * ox + oy * oy) + minf(maxf(qx, qy), 0);
}

/* Signed distance (negative inside) from (u, v) to the shape of category
 * cat, in units of the shape radius. Polygons use the max of their edge
 * half-planes: exact inside and along edges, a little short near outer
 * corners, which only softens corner antialiasing. */
static float shape_distance(int cat, float u, float v)
{
	switch (cat) {
	case 0: /* disc */
		return sqrtf(u * u + v * v) - 0.9f;
	case 1: /* square */
		return sd_box(u, v, 0.72f, 0.72f);
	case 2: { /* triangle, inradius 0.47 */
		float a = -v, b = 0.8660254f * u + 0.5f * v, c = -0.8660254f * u + 0.5f * v;
		return maxf(a, maxf(b, c)) - 0.47f;
	}
	case 3: /* ring */
		return fabsf(sqrtf(u * u + v * v) - 0.68f) - 0.22f;
	case 4: /* cross */
		return minf(sd_box(u, v, 0.9f, 0.26f), sd_box(u, v, 0.26f, 0.9f));
	case 5: { /* five-pointed star: fold into half a 72-degree sector */
		const float sector = (float)(2 * M_PI / 5);
		float r = sqrtf(u * u + v * v), a = atan2f(v, u) + (float)M_PI;
		a = fabsf(fmodf(a, sector) - 0.5f * sector);
		float x = r * cosf(a), y = r * sinf(a);
		/* edge from the tip (0.95, 0) to the inner vertex at 36 degrees,
		 * radius 0.42; n is its outward unit normal */
		const float ax = 0.95f, bx = 0.42f * 0.80901699f, by = 0.42f * 0.58778525f;
		float nx = by, ny = ax - bx, nl = sqrtf(nx * nx + ny * ny);
		return ((x - ax) * nx + y * ny) / nl;
	}
	case 6: { /* hexagon, apothem 0.8 */
		float a = fabsf(u), b = fabsf(0.5f * u + 0.8660254f * v),
		      c = fabsf(0.5f * u - 0.8660254f * v);
		return maxf(a, maxf(b, c)) - 0.8f;
	}
	case 7: { /* crescent: a disc minus an offset disc */
		float d1 = sqrtf(u * u + v * v) - 0.9f;
		float du = u - 0.38f, d2 = sqrtf(du * du + v * v) - 0.72f;
		return maxf(d1, -d2);
	}
	case 8: /* stripes: three parallel bars */
		return minf(sd_box(u, v + 0.6f, 0.9f, 0.17f),
			     minf(sd_box(u, v, 0.9f, 0.17f), sd_box(u, v - 0.6f, 0.9f, 0.17f)));
	default: { /* checks: the dark squares of a 4 x 4 board */
		float a = (u + 0.88f) / 0.44f, b = (v + 0.88f) / 0.44f;
		float ia = floorf(a), ib = floorf(b);
		float da = fabsf(a - ia - 0.5f), db = fabsf(b - ib - 0.5f);
		float edge = (0.5f - maxf(da, db)) * 0.44f;
		float board = (((int)ia + (int)ib) & 1) ? edge : -edge;
		return maxf(sd_box(u, v, 0.88f, 0.88f), board);
	}
	}
}

/* The garment's ink in [0, 1] at (u, v) in [-1, 1]^2, bilinear; 0 outside. */
static float garment_ink(const uint8_t *img, float u, float v)
{
	float x = (u + 1) * (0.5f * GARMENT_SIDE) - 0.5f, y = (v + 1) * (0.5f * GARMENT_SIDE) - 0.5f;
	if (!(x > -1 && x < GARMENT_SIDE && y > -1 && y < GARMENT_SIDE))
		return 0;
	int x0 = (int)floorf(x), y0 = (int)floorf(y);
	float fx = x - x0, fy = y - y0, s = 0;
	for (int dy = 0; dy < 2; dy++)
		for (int dx = 0; dx < 2; dx++) {
			int xx = x0 + dx, yy = y0 + dy;
			if (xx < 0 || yy < 0 || xx >= GARMENT_SIDE || yy >= GARMENT_SIDE)
				continue;
			s += img[yy * GARMENT_SIDE + xx] * (dx ? fx : 1 - fx) * (dy ? fy : 1 - fy);
		}
	return s * (1.0f / 255);
}

/* x is a convex mix of colours in [0, 1]: no clamp needed. */
static uint8_t to_u8(float x)
{
	return (uint8_t)(x * 255.0f + 0.5f);
}

/* Draws item i into rgb (width * height * 3): the gradient background
 * everywhere, the shape only inside its bounding square, with coverage
 * 0.5 - distance-in-pixels as a one-pixel antialiased edge; or a garment,
 * its ink as coverage (saturating early, so the silhouette is solid) and as
 * tone (so its folds and prints stay visible). */
static void render_item(const struct gen *g, int64_t i, const struct fashion *fm, uint8_t *rgb,
			const float *lut)
{
	struct paint p;
	paint_setup(g, i, fm, &p);
	int w = g->width[i], h = g->height[i];
	float reach = (p.garment ? 1.42f : 1.05f) * p.radius + 2;
	int x0 = (int)maxf(0, floorf(p.cx - reach)), x1 = (int)minf(w, ceilf(p.cx + reach));
	int y0 = (int)maxf(0, floorf(p.cy - reach)), y1 = (int)minf(h, ceilf(p.cy + reach));
	float inv_r = 1.0f / p.radius, d[3];
	for (int k = 0; k < 3; k++)
		d[k] = p.bg1[k] - p.bg0[k];
	for (int y = 0; y < h; y++) {
		uint8_t *px = rgb + (size_t)y * w * 3;
		float fy = y + 0.5f - p.cy, trow = p.g0 + p.gy * (y + 0.5f);
		int in_rows = y >= y0 && y < y1;
		for (int x = 0; x < w; x++, px += 3) {
			float t = minf(maxf(trow + p.gx * (x + 0.5f), 0), 1);
			float c0 = p.bg0[0] + d[0] * t, c1 = p.bg0[1] + d[1] * t, c2 = p.bg0[2] + d[2] * t;
			if (in_rows && x >= x0 && x < x1) {
				float fx = x + 0.5f - p.cx;
				float u = (fx * p.cosr + fy * p.sinr) * inv_r;
				float v = (-fx * p.sinr + fy * p.cosr) * inv_r;
				float cover, shade = 1;
				if (p.garment) {
					float ink = garment_ink(p.garment, u, v);
					cover = ink * 2.5f;
					shade = 0.45f + 0.55f * ink;
				} else {
					cover = 0.5f - shape_distance(p.cat, u, v) * p.radius;
				}
				if (cover > 0) {
					cover = minf(cover, 1);
					if (p.tamp > 0) {
						int idx = (int)(p.tu * u + p.tv * v + p.tphase + 64 * SIN_LUT);
						shade *= 1 - p.tamp * (0.5f + 0.5f * lut[idx & (SIN_LUT - 1)]);
					}
					c0 += (p.fg[0] * shade - c0) * cover;
					c1 += (p.fg[1] * shade - c1) * cover;
					c2 += (p.fg[2] * shade - c2) * cover;
				}
			}
			px[0] = to_u8(c0);
			px[1] = to_u8(c1);
			px[2] = to_u8(c2);
		}
	}
}

int dg__write_images(struct gen *g, const char *dir)
{
	struct fashion fashion, *fm = NULL;
	int rc = 0;
	int side = g->o->image_max;
	vr_jpeg_enc *enc = NULL;
	uint8_t *rgb = malloc((size_t)side * side * 3);
	float lut[SIN_LUT];
	char path[PATH_MAX], name[48];
	memset(&fashion, 0, sizeof(fashion));
	if (!rgb || (rc = vr_jpeg_enc_create(&enc))) {
		rc = VR_ENOMEM;
		goto leave;
	}
	if (g->o->images == DG_IMAGES_FASHION_MNIST) {
		fm = &fashion;
		if ((rc = fashion_load(g->o->fashion_dir ? g->o->fashion_dir : DG_FASHION_MNIST_DIR, fm)))
			goto leave;
	}
	for (int k = 0; k < SIN_LUT; k++)
		lut[k] = (float)sin(2 * M_PI * k / SIN_LUT);
	for (int64_t i = 0; i < g->I; i++) {
		render_item(g, i, fm, rgb, lut);
		const uint8_t *buf;
		size_t size;
		if ((rc = vr_jpeg_enc_encode(enc, rgb, g->width[i], g->height[i], VR_PIX_RGB,
					     VR_SUBSAMP_420, JPEG_QUALITY, &buf, &size))) {
			rc = rc == VR_ENOMEM ? rc : VR_EIO;
			goto leave;
		}
		dg__item_id(g, i, name, sizeof(name) - 4);
		strcat(name, ".jpg");
		if ((rc = dg__path_join(path, sizeof(path), dir, name)) ||
		    (rc = dg__write_file(path, buf, size)))
			goto leave;
		g->st.images_written++;
		g->st.image_bytes += (int64_t)size;
		if (g->o->progress)
			g->o->progress(g->o->progress_ctx, i + 1, g->I);
	}
leave:
	vr_jpeg_enc_destroy(enc);
	free(rgb);
	fashion_free(&fashion);
	return rc;
}
