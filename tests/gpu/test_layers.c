/* Every CPU layer (cpu.h) against an independent reference written here:
 * forward against a naive direct loop in double precision, and every
 * gradient (input, weights, bias) against central finite differences of
 * that reference, on seeded random inputs. The loss is L = sum(r * y) for a
 * random r, so dL/dy = r is what the backward kernels get.
 *
 * Tolerances: forward, |ours - ref| <= 1e-5 + 1e-5 |ref| (float sums of at
 * most a few hundred terms); gradients, 2e-5 + 1e-4 |fd| against the double
 * finite difference (step 1e-4; exact up to rounding for the linear
 * layers, O(1e-8) truncation for LRN). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "harness.h"
#include "nn_test.h"

#define FWD_ATOL 1e-5
#define FWD_RTOL 1e-5
#define GRAD_ATOL 2e-5
#define GRAD_RTOL 1e-4
#define FD_STEP 1e-4
#define FD_MAX_CHECKS 300      /* elements per tensor checked by finite differences */

/* A layer as the finite-difference checker sees it: a double function of
 * its inputs (x, and the parameters in p[0..np)), writing y. */
struct fd_layer {
	void (*ref)(const struct fd_layer *l, const double *x, double *const *p, double *y);
	const void *shape;
	int n;
	size_t x_len, y_len, p_len[3];
	int np;
};

static double loss(const struct fd_layer *l, const double *x, double *const *p,
	const double *r, double *y)
{
	double sum = 0;
	l->ref(l, x, p, y);
	for (size_t i = 0; i < l->y_len; i++)
		sum += r[i] * y[i];
	return sum;
}

/* Central differences of L with respect to the elements of v (x or a
 * parameter) at up to FD_MAX_CHECKS spread-out indices, compared with the
 * analytic gradient g. Returns the worst ratio to the tolerance. */
static double fd_check(const struct fd_layer *l, double *x, double *const *p, const double *r,
	double *v, size_t len, const float *g, size_t *worst, double *fd_out, double *g_out)
{
	double *y = malloc(sizeof(double) * l->y_len), ratio = 0;
	size_t step = len > FD_MAX_CHECKS ? len / FD_MAX_CHECKS : 1;
	for (size_t i = (step > 1 ? 3 % step : 0); i < len; i += step) {
		double keep = v[i];
		v[i] = keep + FD_STEP;
		double lp = loss(l, x, p, r, y);
		v[i] = keep - FD_STEP;
		double lm = loss(l, x, p, r, y);
		v[i] = keep;
		double fd = (lp - lm) / (2 * FD_STEP);
		double e = fabs(g[i] - fd) / (GRAD_ATOL + GRAD_RTOL * fabs(fd));
		if (!(e <= ratio)) {
			ratio = e;
			*worst = i;
			*fd_out = fd;
			*g_out = g[i];
		}
	}
	free(y);
	return ratio;
}

static double *to_double(const float *a, size_t n)
{
	double *d = malloc(sizeof(double) * (n ? n : 1));
	for (size_t i = 0; i < n; i++)
		d[i] = a[i];
	return d;
}

#define ASSERT_FD(l, x, p, r, v, len, g, what) do { size_t w_ = 0; double fd_ = 0, g_ = 0; \
	double e_ = fd_check((l), (x), (p), (r), (v), (len), (g), &w_, &fd_, &g_); \
	if (!(e_ <= 1.0)) FAIL_("%s: gradient element %zu: %.9g vs finite difference %.9g", \
		(what), w_, g_, fd_); } while (0)

/* ---- Convolution -------------------------------------------------------- */

static void conv_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	const struct nn_conv_shape *s = l->shape;
	const double *w = p[0], *b = l->np > 1 ? p[1] : NULL;
	int cg = s->c / s->groups, kg = s->k / s->groups;
	for (int n = 0; n < l->n; n++)
		for (int k = 0; k < s->k; k++)
			for (int oy = 0; oy < s->oh; oy++)
				for (int ox = 0; ox < s->ow; ox++) {
					double sum = b ? b[k] : 0;
					int g = k / kg;
					for (int c = 0; c < cg; c++)
						for (int i = 0; i < s->kh; i++)
							for (int j = 0; j < s->kw; j++) {
								int iy = oy * s->stride_h - s->pad_h + i;
								int ix = ox * s->stride_w - s->pad_w + j;
								if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w)
									continue;
								sum += x[((size_t)(n * s->c + g * cg + c) * s->h + iy) *
									s->w + ix] *
									w[((size_t)(k * cg + c) * s->kh + i) * s->kw + j];
							}
					y[((size_t)(n * s->k + k) * s->oh + oy) * s->ow + ox] = sum;
				}
}

/* Runs one conv configuration through forward, the three backward kernels
 * and the acc path, against the reference. */
static void check_conv(int n, int c, int h, int w, int k, int kh, int kw, int stride, int pad,
	int groups, int bias, uint64_t seed)
{
	struct nn_conv_shape s = { .n = n, .c = c, .h = h, .w = w, .k = k, .kh = kh, .kw = kw,
		.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .groups = groups };
	ASSERT_OK(nn_conv_shape_check(&s));
	size_t xl = (size_t)n * c * h * w, yl = (size_t)n * k * s.oh * s.ow;
	size_t wl = (size_t)k * (c / groups) * kh * kw;
	float *x = malloc(sizeof(float) * xl), *wt = malloc(sizeof(float) * wl);
	float *b = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * yl);
	float *r = malloc(sizeof(float) * yl), *dx = malloc(sizeof(float) * xl);
	float *dx2 = malloc(sizeof(float) * xl), *dw = calloc(wl, sizeof(float));
	float *db = calloc(k, sizeof(float));
	float *ws = malloc(sizeof(float) * (nn_cpu_conv_ws_floats(&s) + 1));
	fill_uniform(x, xl, seed, -1, 1);
	fill_uniform(wt, wl, seed + 1, -1, 1);
	fill_uniform(b, k, seed + 2, -1, 1);
	fill_uniform(r, yl, seed + 3, -1, 1);
	double *xd = to_double(x, xl), *wd = to_double(wt, wl), *bd = to_double(b, k);
	double *rd = to_double(r, yl), *yd = malloc(sizeof(double) * yl);
	double *p[2] = { wd, bd };
	struct fd_layer l = { conv_ref, &s, n, xl, yl, { wl, (size_t)k }, bias ? 2 : 1 };

	nn_cpu_conv_fwd(&s, n, x, wt, bias ? b : NULL, y, ws);
	conv_ref(&l, xd, p, yd);
	char what[160];
	snprintf(what, sizeof(what), "conv %dx%dx%dx%d k%d %dx%d s%d p%d g%d fwd", n, c, h, w, k,
		kh, kw, stride, pad, groups);
	ASSERT_CLOSE(y, yd, yl, FWD_ATOL, FWD_RTOL, what);

	nn_cpu_conv_bwd_data(&s, n, r, wt, dx, 0, ws);
	nn_cpu_conv_bwd_filter(&s, n, x, r, dw, ws);
	nn_cpu_conv_bwd_bias(&s, n, r, db);
	snprintf(what + strlen(what) - 3, 8, "dx");
	ASSERT_FD(&l, xd, p, rd, xd, xl, dx, what);
	snprintf(what + strlen(what) - 2, 8, "dw");
	ASSERT_FD(&l, xd, p, rd, wd, wl, dw, what);
	if (bias) {
		snprintf(what + strlen(what) - 2, 8, "db");
		ASSERT_FD(&l, xd, p, rd, bd, k, db, what);
	}
	/* acc adds onto what is there; parameter gradients always accumulate. */
	fill_uniform(dx2, xl, seed + 4, -1, 1);
	double *want = malloc(sizeof(double) * xl);
	for (size_t i = 0; i < xl; i++)
		want[i] = (double)dx2[i] + dx[i];
	nn_cpu_conv_bwd_data(&s, n, r, wt, dx2, 1, ws);
	ASSERT_CLOSE(dx2, want, xl, 1e-6, 1e-6, "conv bwd_data acc");
	double *dw2 = malloc(sizeof(double) * wl);
	for (size_t i = 0; i < wl; i++)
		dw2[i] = 2.0 * dw[i];
	nn_cpu_conv_bwd_filter(&s, n, x, r, dw, ws);
	ASSERT_CLOSE(dw, dw2, wl, 1e-5, 1e-5, "conv bwd_filter accumulates");
	free(want);
	free(dw2);
	free(x); free(wt); free(b); free(y); free(r); free(dx); free(dx2); free(dw); free(db);
	free(ws); free(xd); free(wd); free(bd); free(rd); free(yd);
}

TEST(conv_3x3_pad_nonsquare)
{
	check_conv(2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 100);
}

TEST(conv_stride2_groups2)
{
	check_conv(2, 4, 9, 8, 6, 3, 3, 2, 0, 2, 1, 200);
}

TEST(conv_depthwise)
{
	check_conv(2, 5, 8, 7, 5, 3, 3, 2, 1, 5, 1, 300);
}

TEST(conv_depthwise_no_bias)
{
	check_conv(1, 4, 6, 9, 4, 3, 3, 1, 1, 4, 0, 310);
}

TEST(conv_pointwise_batched)
{
	/* 1x1 on a small image: several images share one GEMM. */
	check_conv(3, 6, 5, 5, 4, 1, 1, 1, 0, 1, 1, 400);
}

TEST(conv_pointwise_direct)
{
	/* 1x1 on a large image: no im2col at all. */
	check_conv(2, 2, 32, 33, 3, 1, 1, 1, 0, 1, 0, 500);
}

TEST(conv_partial_chunk)
{
	/* 25x25 outputs: two images per GEMM, so three images end in a half chunk. */
	check_conv(3, 2, 25, 25, 3, 3, 3, 1, 1, 1, 1, 600);
}

TEST(conv_kernel_larger_than_input)
{
	check_conv(2, 2, 3, 4, 3, 5, 5, 1, 2, 1, 1, 700);
}

TEST(conv_alexnet_conv1_like)
{
	check_conv(1, 3, 19, 23, 4, 11, 11, 4, 2, 1, 1, 800);
}

TEST(conv_rectangular_kernel_stride3)
{
	check_conv(2, 3, 10, 11, 2, 2, 4, 3, 1, 1, 1, 900);
}

TEST(conv_shape_check)
{
	struct nn_conv_shape s = { .n = 1, .c = 3, .h = 4, .w = 4, .k = 4, .kh = 5, .kw = 5,
		.stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0, .groups = 1 };
	ASSERT_NE_INT(nn_conv_shape_check(&s), 0);            /* kernel over the input */
	s.kh = s.kw = 3;
	s.groups = 2;
	ASSERT_NE_INT(nn_conv_shape_check(&s), 0);            /* 3 channels in 2 groups */
	s.groups = 1;
	s.stride_h = 0;
	ASSERT_NE_INT(nn_conv_shape_check(&s), 0);
	s.stride_h = 2;
	ASSERT_OK(nn_conv_shape_check(&s));
	ASSERT_EQ_INT(s.oh, 1);
	ASSERT_EQ_INT(s.ow, 2);
}

/* ---- Pooling ------------------------------------------------------------ */

static void pool_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	const struct nn_pool_shape *s = l->shape;
	for (int pl = 0; pl < l->n * s->c; pl++)
		for (int oy = 0; oy < s->oh; oy++)
			for (int ox = 0; ox < s->ow; ox++) {
				int y0, y1, x0, x1;
				double div;
				if (s->mode == NN_POOL_ADAPTIVE_AVG) {
					y0 = (int)floor((double)oy * s->h / s->oh);
					y1 = (int)ceil((double)(oy + 1) * s->h / s->oh);
					x0 = (int)floor((double)ox * s->w / s->ow);
					x1 = (int)ceil((double)(ox + 1) * s->w / s->ow);
					div = (y1 - y0) * (x1 - x0);
				} else {
					y0 = oy * s->stride_h - s->pad_h;
					x0 = ox * s->stride_w - s->pad_w;
					y1 = y0 + s->kh;
					x1 = x0 + s->kw;
					div = s->kh * s->kw;
				}
				double acc = s->mode == NN_POOL_MAX ? -INFINITY : 0;
				for (int yy = y0; yy < y1; yy++)
					for (int xx = x0; xx < x1; xx++) {
						if (yy < 0 || yy >= s->h || xx < 0 || xx >= s->w)
							continue;
						double v = x[((size_t)pl * s->h + yy) * s->w + xx];
						if (s->mode == NN_POOL_MAX)
							acc = v > acc ? v : acc;
						else
							acc += v;
					}
				y[((size_t)pl * s->oh + oy) * s->ow + ox] =
					s->mode == NN_POOL_MAX ? acc : acc / div;
			}
}

static void check_pool(int mode, int n, int c, int h, int w, int k, int stride, int pad,
	int oh, int ow, uint64_t seed)
{
	struct nn_pool_shape s = { .mode = mode, .n = n, .c = c, .h = h, .w = w, .kh = k, .kw = k,
		.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .oh = oh,
		.ow = ow };
	ASSERT_OK(nn_pool_shape_check(&s));
	size_t xl = (size_t)n * c * h * w, yl = (size_t)n * c * s.oh * s.ow;
	float *x = malloc(sizeof(float) * xl), *y = malloc(sizeof(float) * yl);
	float *r = malloc(sizeof(float) * yl), *dx = malloc(sizeof(float) * xl);
	fill_uniform(x, xl, seed, -1, 1);
	fill_uniform(r, yl, seed + 1, -1, 1);
	double *xd = to_double(x, xl), *rd = to_double(r, yl), *yd = malloc(sizeof(double) * yl);
	struct fd_layer l = { pool_ref, &s, n, xl, yl, { 0 }, 0 };
	char what[96];
	snprintf(what, sizeof(what), "pool mode %d %dx%d k%d s%d p%d -> %dx%d", mode, h, w, k,
		stride, pad, s.oh, s.ow);
	nn_cpu_pool_fwd(&s, n, x, y);
	pool_ref(&l, xd, NULL, yd);
	ASSERT_CLOSE(y, yd, yl, FWD_ATOL, FWD_RTOL, what);
	nn_cpu_pool_bwd(&s, n, x, r, dx, 0);
	ASSERT_FD(&l, xd, NULL, rd, xd, xl, dx, what);
	free(x); free(y); free(r); free(dx); free(xd); free(rd); free(yd);
}

TEST(pool_max)
{
	check_pool(NN_POOL_MAX, 2, 3, 13, 12, 3, 2, 0, 0, 0, 1000);   /* AlexNet's */
	check_pool(NN_POOL_MAX, 2, 2, 8, 9, 2, 2, 0, 0, 0, 1010);
	check_pool(NN_POOL_MAX, 1, 3, 7, 6, 3, 2, 1, 0, 0, 1020);     /* padded */
}

TEST(pool_avg)
{
	check_pool(NN_POOL_AVG, 2, 3, 7, 6, 3, 1, 1, 0, 0, 1100);     /* padding counted */
	check_pool(NN_POOL_AVG, 2, 2, 8, 8, 2, 2, 0, 0, 0, 1110);
}

TEST(pool_adaptive_avg)
{
	check_pool(NN_POOL_ADAPTIVE_AVG, 2, 3, 7, 7, 0, 0, 0, 3, 3, 1200);
	check_pool(NN_POOL_ADAPTIVE_AVG, 1, 2, 5, 6, 0, 0, 0, 2, 4, 1210);
	check_pool(NN_POOL_ADAPTIVE_AVG, 2, 2, 7, 5, 0, 0, 0, 1, 1, 1220);   /* global */
	check_pool(NN_POOL_ADAPTIVE_AVG, 1, 2, 2, 3, 0, 0, 0, 6, 6, 1230);   /* upsampling */
}

/* ---- Activations, add --------------------------------------------------- */

static void act_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	int mode = *(const int *)l->shape;
	for (size_t i = 0; i < l->y_len; i++) {
		double v = x[i] > 0 ? x[i] : 0;
		y[i] = mode == NN_ACT_RELU6 && v > 6 ? 6 : v;
	}
}

static void check_act(int mode)
{
	enum { N = 500 };
	float x[N], y[N], r[N], dx[N], dx2[N];
	fill_uniform(x, N, 77 + mode, -8, 8);
	fill_uniform(r, N, 78 + mode, -1, 1);
	double *xd = to_double(x, N), *rd = to_double(r, N), yd[N];
	struct fd_layer l = { act_ref, &mode, 1, N, N, { 0 }, 0 };
	nn_cpu_act_fwd(mode, N, x, y);
	act_ref(&l, xd, NULL, yd);
	ASSERT_CLOSE(y, yd, N, 0, 0, "act fwd");
	nn_cpu_act_bwd(mode, N, y, r, dx, 0);
	ASSERT_FD(&l, xd, NULL, rd, xd, N, dx, "act bwd");
	/* In place, as nets run it: x == y, dx == dy. */
	memcpy(dx2, r, sizeof(r));
	nn_cpu_act_fwd(mode, N, x, x);
	nn_cpu_act_bwd(mode, N, x, dx2, dx2, 0);
	double want[N];
	for (int i = 0; i < N; i++)
		want[i] = dx[i];
	ASSERT_CLOSE(dx2, want, N, 0, 0, "act in place");
	free(xd);
	free(rd);
}

TEST(relu)
{
	check_act(NN_ACT_RELU);
}

TEST(relu6)
{
	check_act(NN_ACT_RELU6);
}

TEST(add_and_accumulate)
{
	float a[64], c[64], y[64], d[64];
	double want[64];
	fill_uniform(a, 64, 5, -1, 1);
	fill_uniform(c, 64, 6, -1, 1);
	nn_cpu_add(64, a, c, y);
	for (int i = 0; i < 64; i++)
		want[i] = (double)a[i] + c[i];
	ASSERT_CLOSE(y, want, 64, 1e-7, 1e-7, "add");
	memcpy(d, a, sizeof(d));
	nn_cpu_accumulate(64, c, d, 1);
	ASSERT_CLOSE(d, want, 64, 1e-7, 1e-7, "accumulate acc=1");
	nn_cpu_accumulate(64, c, d, 0);
	for (int i = 0; i < 64; i++)
		want[i] = c[i];
	ASSERT_CLOSE(d, want, 64, 0, 0, "accumulate acc=0");
}

/* ---- Fully connected ---------------------------------------------------- */

static void fc_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	const struct nn_fc_shape *s = l->shape;
	for (int i = 0; i < l->n; i++)
		for (int o = 0; o < s->out; o++) {
			double sum = p[1][o];
			for (int j = 0; j < s->in; j++)
				sum += x[(size_t)i * s->in + j] * p[0][(size_t)o * s->in + j];
			y[(size_t)i * s->out + o] = sum;
		}
}

TEST(fc)
{
	struct nn_fc_shape s = { 3, 37, 11 };
	const int n = 3;
	size_t xl = n * s.in, yl = n * s.out, wl = (size_t)s.out * s.in;
	float x[3 * 37], w[11 * 37], b[11], y[33], r[33], dx[3 * 37], dw[11 * 37] = { 0 };
	float db[11] = { 0 };
	fill_uniform(x, xl, 10, -1, 1);
	fill_uniform(w, wl, 11, -1, 1);
	fill_uniform(b, s.out, 12, -1, 1);
	fill_uniform(r, yl, 13, -1, 1);
	double *xd = to_double(x, xl), *wd = to_double(w, wl), *bd = to_double(b, s.out);
	double *rd = to_double(r, yl), yd[33], *p[2] = { wd, bd };
	struct fd_layer l = { fc_ref, &s, n, xl, yl, { wl, (size_t)s.out }, 2 };
	nn_cpu_fc_fwd(n, s.in, s.out, x, w, b, y);
	fc_ref(&l, xd, p, yd);
	ASSERT_CLOSE(y, yd, yl, FWD_ATOL, FWD_RTOL, "fc fwd");
	nn_cpu_fc_bwd_data(n, s.in, s.out, r, w, dx, 0);
	nn_cpu_fc_bwd_weights(n, s.in, s.out, x, r, dw, db);
	ASSERT_FD(&l, xd, p, rd, xd, xl, dx, "fc dx");
	ASSERT_FD(&l, xd, p, rd, wd, wl, dw, "fc dw");
	ASSERT_FD(&l, xd, p, rd, bd, s.out, db, "fc db");
	free(xd); free(wd); free(bd); free(rd);
}

/* ---- L2 normalisation ---------------------------------------------------- */

static void l2norm_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	const int d = *(const int *)l->shape;
	(void)p;
	for (int i = 0; i < l->n; i++) {
		double ss = 1e-12;
		for (int j = 0; j < d; j++)
			ss += x[(size_t)i * d + j] * x[(size_t)i * d + j];
		for (int j = 0; j < d; j++)
			y[(size_t)i * d + j] = x[(size_t)i * d + j] / sqrt(ss);
	}
}

/* Rows of several lengths and scales (a row of 1e-3 and one of 40 come out
 * the same length); the backward accumulates when asked. */
TEST(l2norm)
{
	static const int ds[] = { 1, 16, 37 };
	for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++) {
		const int n = 5, d = ds[k];
		size_t len = (size_t)n * d;
		float *x = malloc(sizeof(float) * len), *y = malloc(sizeof(float) * len);
		float *r = malloc(sizeof(float) * len), *dx = malloc(sizeof(float) * len);
		float *dx2 = malloc(sizeof(float) * len);
		fill_uniform(x, len, 30 + k, -1, 1);
		fill_uniform(r, len, 40 + k, -1, 1);
		for (int j = 0; j < d; j++) {
			x[j] *= 1e-3f;             /* row 0 small, row 1 large */
			x[d + j] *= 40.0f;
		}
		double *xd = to_double(x, len), *rd = to_double(r, len);
		double *yd = malloc(sizeof(double) * len);
		struct fd_layer l = { l2norm_ref, &d, n, len, len, { 0 }, 0 };
		nn_cpu_l2norm_fwd(n, d, 1e-12f, x, y);
		l2norm_ref(&l, xd, NULL, yd);
		ASSERT_CLOSE(y, yd, len, FWD_ATOL, FWD_RTOL, "l2norm fwd");
		for (int i = 0; i < n; i++) {
			double norm = 0;
			for (int j = 0; j < d; j++)
				norm += (double)y[(size_t)i * d + j] * y[(size_t)i * d + j];
			ASSERT(fabs(norm - 1.0) < 1e-5);
		}
		nn_cpu_l2norm_bwd(n, d, 1e-12f, x, r, dx, 0);
		/* Finite differences at rows of ordinary scale: the tiny row's
		 * gradient is 1e3 times larger and its step 1e-4 is not small. */
		size_t from = 2 * (size_t)d;
		struct fd_layer tail = { l2norm_ref, &d, n - 2, len - from, len - from, { 0 }, 0 };
		ASSERT_FD(&tail, xd + from, NULL, rd + from, xd + from, len - from, dx + from,
			  "l2norm dx");
		for (size_t i = 0; i < len; i++)
			dx2[i] = 1.0f;
		nn_cpu_l2norm_bwd(n, d, 1e-12f, x, r, dx2, 1);
		for (size_t i = 0; i < len; i++)
			ASSERT(fabsf(dx2[i] - (dx[i] + 1.0f)) <= 1e-6f * (1.0f + fabsf(dx[i])));
		/* The gradient is orthogonal to y: scaling x leaves y unchanged. */
		for (int i = 0; i < n; i++) {
			double dot = 0;
			for (int j = 0; j < d; j++)
				dot += (double)dx[(size_t)i * d + j] * x[(size_t)i * d + j];
			ASSERT(fabs(dot) < 1e-4);
		}
		free(x); free(y); free(r); free(dx); free(dx2); free(xd); free(rd); free(yd);
	}
}

/* ---- Dropout ------------------------------------------------------------ */

TEST(dropout)
{
	enum { N = 100000 };
	float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
	float *y2 = malloc(sizeof(float) * N), *dx = malloc(sizeof(float) * N);
	const float p = 0.3f;
	fill_uniform(x, N, 20, 0.5f, 1.5f);       /* never zero, so zeros mean dropped */
	nn_cpu_dropout_fwd(N, p, 42, x, y);
	size_t kept = 0, same = 0;
	for (int i = 0; i < N; i++) {
		if (y[i] != 0.0f) {
			kept++;
			ASSERT_NEAR(y[i], x[i] / (1 - p), 1e-6);
		}
	}
	/* 70,000 expected; the binomial's sd is 145. */
	ASSERT_MSG(kept > 69000 && kept < 71000, "kept %zu of %d at p=0.3", kept, N);
	/* Backward draws the same mask from the seed. */
	nn_cpu_dropout_bwd(N, p, 42, x, dx, 0);
	for (int i = 0; i < N; i++)
		ASSERT_MSG(dx[i] == y[i], "element %d: backward %g vs forward %g", i, dx[i], y[i]);
	nn_cpu_dropout_fwd(N, p, 42, x, y2);
	ASSERT(!memcmp(y, y2, sizeof(float) * N));
	nn_cpu_dropout_fwd(N, p, 43, x, y2);
	for (int i = 0; i < N; i++)
		same += (y[i] == 0.0f) == (y2[i] == 0.0f);
	ASSERT_MSG(same < 0.65 * N, "seeds 42 and 43 agree on %zu of %d", same, N);
	/* p = 0 is the identity. */
	nn_cpu_dropout_fwd(N, 0.0f, 42, x, y2);
	ASSERT(!memcmp(x, y2, sizeof(float) * N));
	free(x); free(y); free(y2); free(dx);
}

/* ---- LRN ---------------------------------------------------------------- */

static void lrn_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	const struct nn_lrn_shape *s = l->shape;
	size_t hw = (size_t)s->h * s->w;
	for (int n = 0; n < l->n; n++)
		for (int c = 0; c < s->c; c++)
			for (size_t q = 0; q < hw; q++) {
				double sum = 0;
				for (int cc = c - s->size / 2; cc <= c + (s->size - 1) / 2; cc++)
					if (cc >= 0 && cc < s->c) {
						double v = x[((size_t)n * s->c + cc) * hw + q];
						sum += v * v;
					}
				size_t at = ((size_t)n * s->c + c) * hw + q;
				y[at] = x[at] * pow(s->k + s->alpha / s->size * sum, -s->beta);
			}
}

static void check_lrn(int size, float alpha, float beta, float k, uint64_t seed)
{
	struct nn_lrn_shape s = { .n = 2, .c = 7, .h = 4, .w = 3, .size = size, .alpha = alpha,
		.beta = beta, .k = k };
	ASSERT_OK(nn_lrn_shape_check(&s));
	enum { L = 2 * 7 * 4 * 3 };
	float x[L], y[L], r[L], dx[L], ws[2 * 7 * 4 * 3];
	fill_uniform(x, L, seed, -3, 3);
	fill_uniform(r, L, seed + 1, -1, 1);
	double *xd = to_double(x, L), *rd = to_double(r, L), yd[L];
	struct fd_layer l = { lrn_ref, &s, 2, L, L, { 0 }, 0 };
	nn_cpu_lrn_fwd(&s, 2, x, y);
	lrn_ref(&l, xd, NULL, yd);
	ASSERT_CLOSE(y, yd, L, FWD_ATOL, FWD_RTOL, "lrn fwd");
	nn_cpu_lrn_bwd(&s, 2, x, y, r, dx, 0, ws);
	ASSERT_FD(&l, xd, NULL, rd, xd, L, dx, "lrn dx");
	free(xd);
	free(rd);
}

TEST(lrn)
{
	check_lrn(5, 1e-4f, 0.75f, 2.0f, 30);      /* CNN-F's */
	check_lrn(3, 0.5f, 0.75f, 1.0f, 31);       /* strong enough to matter */
	check_lrn(4, 0.3f, 0.5f, 1.0f, 32);        /* even window: one more below */
}

/* ---- Batch norm --------------------------------------------------------- */

static void bn_ref(const struct fd_layer *l, const double *x, double *const *p, double *y)
{
	const int *dims = l->shape;          /* c, hw */
	const double eps = 1e-5;
	for (int n = 0; n < l->n; n++)
		for (int c = 0; c < dims[0]; c++)
			for (int q = 0; q < dims[1]; q++) {
				size_t at = ((size_t)n * dims[0] + c) * dims[1] + q;
				y[at] = (x[at] - p[2][c]) / sqrt(p[3][c] + eps) * p[0][c] + p[1][c];
			}
}

TEST(batchnorm)
{
	enum { N = 2, C = 5, HW = 6, L = N * C * HW };
	int dims[2] = { C, HW };
	float x[L], y[L], r[L], dx[L], g[C], b[C], m[C], v[C], dg[C] = { 0 }, dbeta[C] = { 0 };
	fill_uniform(x, L, 50, -2, 2);
	fill_uniform(r, L, 51, -1, 1);
	fill_uniform(g, C, 52, 0.5f, 1.5f);
	fill_uniform(b, C, 53, -1, 1);
	fill_uniform(m, C, 54, -0.5f, 0.5f);
	fill_uniform(v, C, 55, 0.2f, 2);
	double *xd = to_double(x, L), *rd = to_double(r, L), yd[L];
	double *p[4] = { to_double(g, C), to_double(b, C), to_double(m, C), to_double(v, C) };
	struct fd_layer l = { bn_ref, dims, N, L, L, { C, C }, 2 };
	nn_cpu_bn_fwd(N, C, HW, 1e-5f, x, g, b, m, v, y);
	bn_ref(&l, xd, p, yd);
	ASSERT_CLOSE(y, yd, L, FWD_ATOL, FWD_RTOL, "bn fwd");
	nn_cpu_bn_bwd(N, C, HW, 1e-5f, x, g, m, v, r, dx, 0, dg, dbeta);
	ASSERT_FD(&l, xd, p, rd, xd, L, dx, "bn dx");
	ASSERT_FD(&l, xd, p, rd, p[0], C, dg, "bn dgamma");
	ASSERT_FD(&l, xd, p, rd, p[1], C, dbeta, "bn dbeta");
	for (int i = 0; i < 4; i++)
		free(p[i]);
	free(xd);
	free(rd);
}

TEST(batchnorm_fold)
{
	/* conv then bn equals the folded conv. */
	struct nn_conv_shape s = { .n = 2, .c = 3, .h = 6, .w = 5, .k = 4, .kh = 3, .kw = 3,
		.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 1 };
	ASSERT_OK(nn_conv_shape_check(&s));
	enum { XL = 2 * 3 * 6 * 5, WL = 4 * 3 * 9, YL = 2 * 4 * 6 * 5 };
	float x[XL], w[WL], bias[4], g[4], b[4], m[4], v[4], y[YL], y2[YL];
	float *ws = malloc(sizeof(float) * (nn_cpu_conv_ws_floats(&s) + 1));
	fill_uniform(x, XL, 60, -1, 1);
	fill_uniform(w, WL, 61, -1, 1);
	fill_uniform(bias, 4, 62, -1, 1);
	fill_uniform(g, 4, 63, 0.5f, 1.5f);
	fill_uniform(b, 4, 64, -1, 1);
	fill_uniform(m, 4, 65, -0.5f, 0.5f);
	fill_uniform(v, 4, 66, 0.2f, 2);
	nn_cpu_conv_fwd(&s, 2, x, w, bias, y, ws);
	nn_cpu_bn_fwd(2, 4, 30, 1e-5f, y, g, b, m, v, y);
	nn_bn_fold(4, 27, 1e-5f, w, bias, g, b, m, v);
	nn_cpu_conv_fwd(&s, 2, x, w, bias, y2, ws);
	double *yd = to_double(y, YL);
	ASSERT_CLOSE(y2, yd, YL, 1e-5, 1e-5, "folded conv");
	free(yd);
	free(ws);
}

/* ---- GEMM --------------------------------------------------------------- */

TEST(sgemm_transposes)
{
	enum { M = 7, N = 5, K = 9 };
	float a[M * K], b[K * N], at[K * M], bt[N * K], c[M * N];
	double want[M * N];
	fill_uniform(a, M * K, 70, -1, 1);
	fill_uniform(b, K * N, 71, -1, 1);
	for (int i = 0; i < M; i++)
		for (int p = 0; p < K; p++)
			at[p * M + i] = a[i * K + p];
	for (int p = 0; p < K; p++)
		for (int j = 0; j < N; j++)
			bt[j * K + p] = b[p * N + j];
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			double s = 0;
			for (int p = 0; p < K; p++)
				s += (double)a[i * K + p] * b[p * N + j];
			want[i * N + j] = 2 * s + 0.5;
		}
	for (int ta = 0; ta < 2; ta++)
		for (int tb = 0; tb < 2; tb++) {
			for (int i = 0; i < M * N; i++)
				c[i] = 1.0f;
			nn_sgemm(ta, tb, M, N, K, 2.0f, ta ? at : a, ta ? M : K, tb ? bt : b, tb ? K : N,
				0.5f, c, N);
			ASSERT_CLOSE(c, want, M * N, 1e-5, 1e-5, "sgemm");
		}
}

static const struct vr_test tests[] = {
	T(conv_3x3_pad_nonsquare),
	T(conv_stride2_groups2),
	T(conv_depthwise),
	T(conv_depthwise_no_bias),
	T(conv_pointwise_batched),
	T(conv_pointwise_direct),
	T(conv_partial_chunk),
	T(conv_kernel_larger_than_input),
	T(conv_alexnet_conv1_like),
	T(conv_rectangular_kernel_stride3),
	T(conv_shape_check),
	T(pool_max),
	T(pool_avg),
	T(pool_adaptive_avg),
	T(relu),
	T(relu6),
	T(add_and_accumulate),
	T(fc),
	T(l2norm),
	T(dropout),
	T(lrn),
	T(batchnorm),
	T(batchnorm_fold),
	T(sgemm_transposes),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
