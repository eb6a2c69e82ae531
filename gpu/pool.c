/* Pooling on the CPU: max, average and adaptive average (PyTorch's
 * MaxPool2d, AvgPool2d with count_include_pad, AdaptiveAvgPool2d), floor
 * mode. Every pool is one loop over output cells with a window; the three
 * kinds differ only in how the window is found and reduced. */
#include <string.h>

#include "cpu.h"
#include "err.h"

int nn_pool_shape_check(struct nn_pool_shape *s)
{
	if (s->n < 1 || s->c < 1 || s->h < 1 || s->w < 1 || s->h > 65536 || s->w > 65536)
		return VR_EINVAL;
	if (s->mode == NN_POOL_ADAPTIVE_AVG)
		return s->oh >= 1 && s->ow >= 1 && s->oh <= 65536 && s->ow <= 65536 ? 0 : VR_EINVAL;
	if (s->mode != NN_POOL_MAX && s->mode != NN_POOL_AVG)
		return VR_EINVAL;
	/* PyTorch's limit, which also keeps every max window non-empty. */
	if (s->kh < 1 || s->kw < 1 || s->stride_h < 1 || s->stride_w < 1 || s->pad_h < 0 ||
	    s->pad_w < 0 || s->pad_h > s->kh / 2 || s->pad_w > s->kw / 2)
		return VR_EINVAL;
	if (s->h + 2 * s->pad_h < s->kh || s->w + 2 * s->pad_w < s->kw)
		return VR_EINVAL;
	s->oh = (s->h + 2 * s->pad_h - s->kh) / s->stride_h + 1;
	s->ow = (s->w + 2 * s->pad_w - s->kw) / s->stride_w + 1;
	return 0;
}

struct window {
	int y0, y1, x0, x1;        /* clipped to the image */
	float divisor;             /* for the averages */
};

static void window_at(const struct nn_pool_shape *s, int oy, int ox, struct window *win)
{
	if (s->mode == NN_POOL_ADAPTIVE_AVG) {
		long h = s->h, w = s->w, oh = s->oh, ow = s->ow;
		win->y0 = (int)(oy * h / oh);
		win->y1 = (int)(((oy + 1) * h + oh - 1) / oh);
		win->x0 = (int)(ox * w / ow);
		win->x1 = (int)(((ox + 1) * w + ow - 1) / ow);
		win->divisor = (float)((win->y1 - win->y0) * (win->x1 - win->x0));
		return;
	}
	int y0 = oy * s->stride_h - s->pad_h, x0 = ox * s->stride_w - s->pad_w;
	win->y0 = y0 < 0 ? 0 : y0;
	win->x0 = x0 < 0 ? 0 : x0;
	win->y1 = y0 + s->kh < s->h ? y0 + s->kh : s->h;
	win->x1 = x0 + s->kw < s->w ? x0 + s->kw : s->w;
	win->divisor = (float)(s->kh * s->kw);
}

/* The offset of the window's first maximum in a channel plane. */
static size_t argmax(const float *xp, int w, const struct window *win)
{
	size_t best = (size_t)win->y0 * w + win->x0;
	float m = xp[best];
	for (int y = win->y0; y < win->y1; y++)
		for (int x = win->x0; x < win->x1; x++)
			if (xp[(size_t)y * w + x] > m) {
				best = (size_t)y * w + x;
				m = xp[best];
			}
	return best;
}

void nn_cpu_pool_fwd(const struct nn_pool_shape *s, int n, const float *x, float *y)
{
	const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
	for (size_t pl = 0; pl < (size_t)n * s->c; pl++) {
		const float *xp = x + pl * in_plane;
		float *yp = y + pl * out_plane;
		for (int oy = 0; oy < s->oh; oy++)
			for (int ox = 0; ox < s->ow; ox++) {
				struct window win;
				window_at(s, oy, ox, &win);
				float v;
				if (s->mode == NN_POOL_MAX) {
					v = xp[argmax(xp, s->w, &win)];
				} else {
					float sum = 0;
					for (int yy = win.y0; yy < win.y1; yy++)
						for (int xx = win.x0; xx < win.x1; xx++)
							sum += xp[(size_t)yy * s->w + xx];
					v = sum / win.divisor;
				}
				yp[(size_t)oy * s->ow + ox] = v;
			}
	}
}

void nn_cpu_pool_bwd(const struct nn_pool_shape *s, int n, const float *x, const float *dy,
	float *dx, int acc)
{
	const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
	if (!acc)
		memset(dx, 0, sizeof(float) * n * s->c * in_plane);
	for (size_t pl = 0; pl < (size_t)n * s->c; pl++) {
		const float *xp = x + pl * in_plane, *dyp = dy + pl * out_plane;
		float *dxp = dx + pl * in_plane;
		for (int oy = 0; oy < s->oh; oy++)
			for (int ox = 0; ox < s->ow; ox++) {
				struct window win;
				window_at(s, oy, ox, &win);
				float g = dyp[(size_t)oy * s->ow + ox];
				if (s->mode == NN_POOL_MAX) {
					dxp[argmax(xp, s->w, &win)] += g;
					continue;
				}
				g /= win.divisor;
				for (int yy = win.y0; yy < win.y1; yy++)
					for (int xx = win.x0; xx < win.x1; xx++)
						dxp[(size_t)yy * s->w + xx] += g;
			}
	}
}
