/* 2-D convolution on the CPU (PyTorch's Conv2d: cross-correlation, weights
 * [k][c/groups][kh][kw]). The general path lowers each group to a GEMM
 * with im2col: Y_g[k/g][P] = W_g[k/g][CRS] col[CRS][P], P = oh * ow.
 * Late layers have small P (13 x 13 = 169 in AlexNet), where a GEMM that
 * narrow runs well below the BLAS's peak, so several images share one GEMM
 * (col holds their columns side by side, and the product is scattered back
 * to NCHW). Depthwise convolution has no GEMM worth the name and runs as a
 * direct loop; a 1x1 stride-1 unpadded convolution of one image needs no
 * im2col at all. */
#include <string.h>

#include "cpu.h"
#include "err.h"

/* Columns one GEMM should have at least. Measured with OpenBLAS on two
 * cores: one image per GEMM runs the small net's 8x8 layers 2.5x slower
 * and AlexNet's 13x13 layers ~10% slower than 1024 columns; 512 to 16384
 * columns measure the same within noise. */
#define CONV_MIN_COLS 1024

int nn_conv_shape_check(struct nn_conv_shape *s)
{
	if (s->n < 1 || s->c < 1 || s->h < 1 || s->w < 1 || s->k < 1 || s->kh < 1 || s->kw < 1 ||
	    s->stride_h < 1 || s->stride_w < 1 || s->pad_h < 0 || s->pad_w < 0 || s->groups < 1)
		return VR_EINVAL;
	if (s->c % s->groups || s->k % s->groups)
		return VR_EINVAL;
	if (s->h > 65536 || s->w > 65536 || s->c > 65536 || s->k > 65536 || s->n > 65536 ||
	    s->kh > 65536 || s->kw > 65536 || s->pad_h > 65536 || s->pad_w > 65536)
		return VR_EINVAL;
	if (s->h + 2 * s->pad_h < s->kh || s->w + 2 * s->pad_w < s->kw)
		return VR_EINVAL;
	s->oh = (s->h + 2 * s->pad_h - s->kh) / s->stride_h + 1;
	s->ow = (s->w + 2 * s->pad_w - s->kw) / s->stride_w + 1;
	return 0;
}

static int is_depthwise(const struct nn_conv_shape *s)
{
	return s->groups == s->c && s->groups == s->k && s->groups > 1;
}

static int is_pointwise(const struct nn_conv_shape *s)
{
	return s->kh == 1 && s->kw == 1 && s->stride_h == 1 && s->stride_w == 1 &&
		s->pad_h == 0 && s->pad_w == 0;
}

/* Images per GEMM. */
static int conv_chunk(const struct nn_conv_shape *s)
{
	size_t p = (size_t)s->oh * s->ow;
	size_t b = (CONV_MIN_COLS + p - 1) / p;
	if (b > (size_t)s->n)
		b = s->n;
	return b < 1 ? 1 : (int)b;
}

size_t nn_cpu_conv_ws_floats(const struct nn_conv_shape *s)
{
	if (is_depthwise(s))
		return 0;
	int b = conv_chunk(s);
	if (b == 1 && is_pointwise(s))
		return 0;
	size_t p = (size_t)s->oh * s->ow;
	size_t crs = (size_t)(s->c / s->groups) * s->kh * s->kw;
	size_t col = crs * b * p;
	size_t tmp = b > 1 ? (size_t)(s->k / s->groups) * b * p : 0;
	return col + tmp;
}

/* The output columns [*lo, *hi) whose input column o * stride - pad + j
 * falls inside [0, w). */
static void valid_range(int w, int ow, int stride, int pad, int j, int *lo, int *hi)
{
	int first = pad - j;           /* o * stride >= first */
	int a = first <= 0 ? 0 : (first + stride - 1) / stride;
	int last = w - 1 + pad - j;    /* o * stride <= last */
	int b = last < 0 ? 0 : last / stride + 1;
	*lo = a < ow ? a : ow;
	*hi = b < ow ? b : ow;
	if (*hi < *lo)
		*hi = *lo;
}

/* col[(ci kh + i) kw + j][oy ow + ox] = x[ci][oy sh - ph + i][ox sw - pw + j],
 * zero outside the image; rows are ldc floats apart. */
static void im2col(const struct nn_conv_shape *s, int c, const float *x, float *col, size_t ldc)
{
	const int h = s->h, w = s->w, oh = s->oh, ow = s->ow, sw = s->stride_w;
	for (int ci = 0; ci < c; ci++)
		for (int i = 0; i < s->kh; i++)
			for (int j = 0; j < s->kw; j++) {
				float *row = col + ((size_t)(ci * s->kh + i) * s->kw + j) * ldc;
				int lo, hi;
				valid_range(w, ow, sw, s->pad_w, j, &lo, &hi);
				for (int oy = 0; oy < oh; oy++) {
					int iy = oy * s->stride_h - s->pad_h + i;
					float *dst = row + (size_t)oy * ow;
					if (iy < 0 || iy >= h) {
						memset(dst, 0, sizeof(float) * ow);
						continue;
					}
					const float *src = x + ((size_t)ci * h + iy) * w - s->pad_w + j;
					for (int ox = 0; ox < lo; ox++)
						dst[ox] = 0;
					if (sw == 1)
						memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
					else
						for (int ox = lo; ox < hi; ox++)
							dst[ox] = src[(size_t)ox * sw];
					for (int ox = hi; ox < ow; ox++)
						dst[ox] = 0;
				}
			}
}

/* The adjoint of im2col: dx[ci][iy][ix] += every column entry that read it. */
static void col2im(const struct nn_conv_shape *s, int c, const float *col, size_t ldc, float *dx)
{
	const int h = s->h, w = s->w, oh = s->oh, ow = s->ow, sw = s->stride_w;
	for (int ci = 0; ci < c; ci++)
		for (int i = 0; i < s->kh; i++)
			for (int j = 0; j < s->kw; j++) {
				const float *row = col + ((size_t)(ci * s->kh + i) * s->kw + j) * ldc;
				int lo, hi;
				valid_range(w, ow, sw, s->pad_w, j, &lo, &hi);
				for (int oy = 0; oy < oh; oy++) {
					int iy = oy * s->stride_h - s->pad_h + i;
					if (iy < 0 || iy >= h)
						continue;
					const float *src = row + (size_t)oy * ow;
					float *dst = dx + ((size_t)ci * h + iy) * w - s->pad_w + j;
					for (int ox = lo; ox < hi; ox++)
						dst[(size_t)ox * sw] += src[ox];
				}
			}
}

/* Depthwise forward, one output row at a time: for each kernel tap the
 * output columns whose input column lies inside the image (valid_range)
 * take one multiply-add each, a loop without branches that vectorises at
 * stride 1 (and runs strided loads at stride 2). */
static void depthwise_fwd(const struct nn_conv_shape *s, int n, const float *x, const float *w,
	const float *bias, float *y)
{
	const int h = s->h, wd = s->w, ow = s->ow, sw = s->stride_w;
	for (int img = 0; img < n; img++)
		for (int ch = 0; ch < s->c; ch++) {
			const float *xp = x + ((size_t)img * s->c + ch) * h * wd;
			const float *wp = w + (size_t)ch * s->kh * s->kw;
			float *yp = y + ((size_t)img * s->k + ch) * s->oh * ow;
			const float b0 = bias ? bias[ch] : 0.0f;
			for (int oy = 0; oy < s->oh; oy++) {
				float *restrict yr = yp + (size_t)oy * ow;
				for (int ox = 0; ox < ow; ox++)
					yr[ox] = b0;
				for (int i = 0; i < s->kh; i++) {
					int iy = oy * s->stride_h - s->pad_h + i;
					if (iy < 0 || iy >= h)
						continue;
					for (int j = 0; j < s->kw; j++) {
						int lo, hi;
						valid_range(wd, ow, sw, s->pad_w, j, &lo, &hi);
						/* Offsets, not a pointer before the row: ox*sw + off
						 * stays inside it for ox in [lo, hi). */
						const float *restrict xr = xp + (size_t)iy * wd;
						const int off = j - s->pad_w;
						const float wv = wp[i * s->kw + j];
						if (sw == 1)
							for (int ox = lo; ox < hi; ox++)
								yr[ox] += wv * xr[ox + off];
						else
							for (int ox = lo; ox < hi; ox++)
								yr[ox] += wv * xr[ox * sw + off];
					}
				}
			}
		}
}

/* Depthwise backward: dx (when non-NULL) and dw (when non-NULL) together,
 * both accumulating; the caller zeroes dx first for acc == 0. */
static void depthwise_bwd(const struct nn_conv_shape *s, int n, const float *x, const float *w,
	const float *dy, float *dx, float *dw)
{
	const int h = s->h, wd = s->w;
	for (int img = 0; img < n; img++)
		for (int ch = 0; ch < s->c; ch++) {
			size_t xo = ((size_t)img * s->c + ch) * h * wd;
			const float *wp = w ? w + (size_t)ch * s->kh * s->kw : NULL;
			float *dwp = dw ? dw + (size_t)ch * s->kh * s->kw : NULL;
			const float *dyp = dy + ((size_t)img * s->k + ch) * s->oh * s->ow;
			for (int oy = 0; oy < s->oh; oy++)
				for (int ox = 0; ox < s->ow; ox++) {
					float g = dyp[(size_t)oy * s->ow + ox];
					for (int i = 0; i < s->kh; i++) {
						int iy = oy * s->stride_h - s->pad_h + i;
						if (iy < 0 || iy >= h)
							continue;
						for (int j = 0; j < s->kw; j++) {
							int ix = ox * s->stride_w - s->pad_w + j;
							if (ix < 0 || ix >= wd)
								continue;
							size_t at = xo + (size_t)iy * wd + ix;
							if (dx)
								dx[at] += g * wp[i * s->kw + j];
							if (dwp)
								dwp[i * s->kw + j] += g * x[at];
						}
					}
				}
		}
}

static void add_bias(const struct nn_conv_shape *s, int n, const float *bias, float *y)
{
	size_t p = (size_t)s->oh * s->ow;
	for (int img = 0; img < n; img++)
		for (int k = 0; k < s->k; k++) {
			float *yp = y + ((size_t)img * s->k + k) * p;
			float b = bias[k];
			for (size_t i = 0; i < p; i++)
				yp[i] += b;
		}
}

/* Group g's output channels of images [i0, i0 + b) as one matrix
 * tmp[k/g][b P] (gather), and back into NCHW y (scatter). */
static void gather(const struct nn_conv_shape *s, int i0, int b, int g, const float *y,
	float *tmp)
{
	size_t p = (size_t)s->oh * s->ow, ld = (size_t)b * p;
	int kg = s->k / s->groups;
	for (int j = 0; j < b; j++)
		for (int kk = 0; kk < kg; kk++)
			memcpy(tmp + kk * ld + j * p, y + ((size_t)(i0 + j) * s->k + g * kg + kk) * p,
				sizeof(float) * p);
}

static void scatter(const struct nn_conv_shape *s, int i0, int b, int g, const float *tmp,
	float *y)
{
	size_t p = (size_t)s->oh * s->ow, ld = (size_t)b * p;
	int kg = s->k / s->groups;
	for (int j = 0; j < b; j++)
		for (int kk = 0; kk < kg; kk++)
			memcpy(y + ((size_t)(i0 + j) * s->k + g * kg + kk) * p, tmp + kk * ld + j * p,
				sizeof(float) * p);
}

void nn_cpu_conv_fwd(const struct nn_conv_shape *s, int n, const float *x, const float *w,
	const float *bias, float *y, float *ws)
{
	if (is_depthwise(s)) {
		depthwise_fwd(s, n, x, w, bias, y);
		return;
	}
	const int g_n = s->groups, cg = s->c / g_n, kg = s->k / g_n, b = conv_chunk(s);
	const size_t hw = (size_t)s->h * s->w, p = (size_t)s->oh * s->ow;
	const size_t crs = (size_t)cg * s->kh * s->kw;
	float *col = ws, *tmp = ws + crs * b * p;
	for (int i0 = 0; i0 < n; i0 += b) {
		int nb = n - i0 < b ? n - i0 : b;
		for (int g = 0; g < g_n; g++) {
			const float *wg = w + (size_t)g * kg * crs;
			const float *xg = x + ((size_t)i0 * s->c + g * cg) * hw;
			float *yg = y + ((size_t)i0 * s->k + g * kg) * p;
			if (b == 1 && is_pointwise(s)) {
				nn_sgemm(0, 0, kg, p, cg, 1.0f, wg, cg, xg, p, 0.0f, yg, p);
				continue;
			}
			size_t ld = (size_t)nb * p;
			for (int j = 0; j < nb; j++)
				im2col(s, cg, xg + (size_t)j * s->c * hw, col + j * p, ld);
			if (nb == 1) {
				nn_sgemm(0, 0, kg, p, crs, 1.0f, wg, crs, col, ld, 0.0f, yg, p);
			} else {
				nn_sgemm(0, 0, kg, ld, crs, 1.0f, wg, crs, col, ld, 0.0f, tmp, ld);
				scatter(s, i0, nb, g, tmp, y);
			}
		}
	}
	if (bias)
		add_bias(s, n, bias, y);
}

void nn_cpu_conv_bwd_data(const struct nn_conv_shape *s, int n, const float *dy,
	const float *w, float *dx, int acc, float *ws)
{
	const size_t hw = (size_t)s->h * s->w, p = (size_t)s->oh * s->ow;
	if (!acc && !(is_pointwise(s) && conv_chunk(s) == 1))
		memset(dx, 0, sizeof(float) * n * s->c * hw);
	if (is_depthwise(s)) {
		depthwise_bwd(s, n, NULL, w, dy, dx, NULL);
		return;
	}
	const int g_n = s->groups, cg = s->c / g_n, kg = s->k / g_n, b = conv_chunk(s);
	const size_t crs = (size_t)cg * s->kh * s->kw;
	float *col = ws, *tmp = ws + crs * b * p;
	for (int i0 = 0; i0 < n; i0 += b) {
		int nb = n - i0 < b ? n - i0 : b;
		for (int g = 0; g < g_n; g++) {
			const float *wg = w + (size_t)g * kg * crs;
			const float *dyg = dy + ((size_t)i0 * s->k + g * kg) * p;
			float *dxg = dx + ((size_t)i0 * s->c + g * cg) * hw;
			if (b == 1 && is_pointwise(s)) {
				nn_sgemm(1, 0, cg, p, kg, 1.0f, wg, cg, dyg, p, acc ? 1.0f : 0.0f, dxg, p);
				continue;
			}
			size_t ld = (size_t)nb * p;
			if (nb == 1) {
				nn_sgemm(1, 0, crs, p, kg, 1.0f, wg, crs, dyg, p, 0.0f, col, ld);
			} else {
				gather(s, i0, nb, g, dy, tmp);
				nn_sgemm(1, 0, crs, ld, kg, 1.0f, wg, crs, tmp, ld, 0.0f, col, ld);
			}
			for (int j = 0; j < nb; j++)
				col2im(s, cg, col + j * p, ld, dxg + (size_t)j * s->c * hw);
		}
	}
}

void nn_cpu_conv_bwd_filter(const struct nn_conv_shape *s, int n, const float *x,
	const float *dy, float *dw, float *ws)
{
	if (is_depthwise(s)) {
		depthwise_bwd(s, n, x, NULL, dy, NULL, dw);
		return;
	}
	const int g_n = s->groups, cg = s->c / g_n, kg = s->k / g_n, b = conv_chunk(s);
	const size_t hw = (size_t)s->h * s->w, p = (size_t)s->oh * s->ow;
	const size_t crs = (size_t)cg * s->kh * s->kw;
	float *col = ws, *tmp = ws + crs * b * p;
	for (int i0 = 0; i0 < n; i0 += b) {
		int nb = n - i0 < b ? n - i0 : b;
		for (int g = 0; g < g_n; g++) {
			float *dwg = dw + (size_t)g * kg * crs;
			const float *xg = x + ((size_t)i0 * s->c + g * cg) * hw;
			const float *dyg = dy + ((size_t)i0 * s->k + g * kg) * p;
			if (b == 1 && is_pointwise(s)) {
				nn_sgemm(0, 1, kg, cg, p, 1.0f, dyg, p, xg, p, 1.0f, dwg, cg);
				continue;
			}
			size_t ld = (size_t)nb * p;
			for (int j = 0; j < nb; j++)
				im2col(s, cg, xg + (size_t)j * s->c * hw, col + j * p, ld);
			if (nb == 1) {
				nn_sgemm(0, 1, kg, crs, p, 1.0f, dyg, p, col, ld, 1.0f, dwg, crs);
			} else {
				gather(s, i0, nb, g, dy, tmp);
				nn_sgemm(0, 1, kg, crs, ld, 1.0f, tmp, ld, col, ld, 1.0f, dwg, crs);
			}
		}
	}
}

void nn_cpu_conv_bwd_bias(const struct nn_conv_shape *s, int n, const float *dy, float *db)
{
	size_t p = (size_t)s->oh * s->ow;
	for (int img = 0; img < n; img++)
		for (int k = 0; k < s->k; k++) {
			const float *d = dy + ((size_t)img * s->k + k) * p;
			float sum = 0;
			for (size_t i = 0; i < p; i++)
				sum += d[i];
			db[k] += sum;
		}
}
