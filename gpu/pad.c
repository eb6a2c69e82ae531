/* Zero padding on the CPU, by a different amount on each side: the layer
 * that gives Keras nets (MobileNetV2's ZeroPadding2D before each stride-2
 * convolution, TensorFlow's "same" padding) their exact geometry.
 * Backward is the crop of the gradient. */
#include <string.h>

#include "cpu.h"
#include "err.h"

int nn_pad_shape_check(struct nn_pad_shape *s)
{
	if (s->n < 1 || s->c < 1 || s->h < 1 || s->w < 1 || s->h > 65536 || s->w > 65536 ||
	    s->top < 0 || s->bottom < 0 || s->left < 0 || s->right < 0 || s->top > 65536 ||
	    s->bottom > 65536 || s->left > 65536 || s->right > 65536)
		return VR_EINVAL;
	s->oh = s->h + s->top + s->bottom;
	s->ow = s->w + s->left + s->right;
	return 0;
}

void nn_cpu_pad_fwd(const struct nn_pad_shape *s, int n, const float *x, float *y)
{
	const size_t ow = s->ow;
	for (size_t pl = 0; pl < (size_t)n * s->c; pl++) {
		const float *xp = x + pl * s->h * s->w;
		float *yp = y + pl * s->oh * ow;
		memset(yp, 0, sizeof(float) * s->top * ow);
		for (int i = 0; i < s->h; i++) {
			float *row = yp + (s->top + i) * ow;
			memset(row, 0, sizeof(float) * s->left);
			memcpy(row + s->left, xp + (size_t)i * s->w, sizeof(float) * s->w);
			memset(row + s->left + s->w, 0, sizeof(float) * s->right);
		}
		memset(yp + (s->top + s->h) * ow, 0, sizeof(float) * s->bottom * ow);
	}
}

void nn_cpu_pad_bwd(const struct nn_pad_shape *s, int n, const float *dy, float *dx, int acc)
{
	const size_t ow = s->ow;
	for (size_t pl = 0; pl < (size_t)n * s->c; pl++) {
		const float *src = dy + pl * s->oh * ow + s->top * ow + s->left;
		float *dst = dx + pl * s->h * s->w;
		for (int i = 0; i < s->h; i++, src += ow, dst += s->w) {
			if (!acc) {
				memcpy(dst, src, sizeof(float) * s->w);
				continue;
			}
			for (int j = 0; j < s->w; j++)
				dst[j] += src[j];
		}
	}
}
