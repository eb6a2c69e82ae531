/* Elementwise layers on the CPU: ReLU and ReLU6, and the residual add with
 * its gradient fan-out. Backward reads the output y, never x, so a net may
 * run these in place. */
#include <string.h>

#include "cpu.h"

void nn_cpu_act_fwd(int mode, size_t count, const float *x, float *y)
{
	if (mode == NN_ACT_RELU6) {
		for (size_t i = 0; i < count; i++)
			y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
		return;
	}
	for (size_t i = 0; i < count; i++)
		y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy where lo < y < hi, else 0 (dx += ... when acc). restrict and a
 * separate in-place version, and loads made unconditional: otherwise GCC
 * either fails its run-time alias check (dx == dy) or will not if-convert,
 * and runs scalar code whose branch on the sign mispredicts half the time
 * (30x slower on AlexNet's conv1). */
static void mask_copy(size_t count, float hi, const float *restrict y,
	const float *restrict dy, float *restrict dx, int acc)
{
	for (size_t i = 0; i < count; i++) {
		float g = dy[i], base = acc ? dx[i] : 0.0f;
		dx[i] = base + (((y[i] > 0.0f) & (y[i] < hi)) ? g : 0.0f);
	}
}

static void mask_in_place(size_t count, float hi, const float *restrict y, float *restrict d,
	int acc)
{
	for (size_t i = 0; i < count; i++) {
		float g = d[i], base = acc ? g : 0.0f;
		d[i] = base + (((y[i] > 0.0f) & (y[i] < hi)) ? g : 0.0f);
	}
}

void nn_cpu_act_bwd(int mode, size_t count, const float *y, const float *dy, float *dx, int acc)
{
	const float hi = mode == NN_ACT_RELU6 ? 6.0f : __builtin_inff();
	if (dx == dy)
		mask_in_place(count, hi, y, dx, acc);
	else
		mask_copy(count, hi, y, dy, dx, acc);
}

void nn_cpu_add(size_t count, const float *a, const float *c, float *y)
{
	for (size_t i = 0; i < count; i++)
		y[i] = a[i] + c[i];
}

void nn_cpu_accumulate(size_t count, const float *src, float *dst, int acc)
{
	if (!acc) {
		if (dst != src)
			memcpy(dst, src, sizeof(float) * count);
		return;
	}
	for (size_t i = 0; i < count; i++)
		dst[i] += src[i];
}
