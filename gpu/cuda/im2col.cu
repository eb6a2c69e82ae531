/* The layouts the im2col + GEMM weight gradient (conv.c) multiplies: for a
 * chunk of m images of a convolution with P = oh x ow output pixels and
 * CK = c x kh x kw weights per output channel,
 *   col [m P][CK]   row (img, p) holds the input patch output pixel p of
 *                   image img reads, zero where it reads padding
 *   dyt [k][m P]    the output gradient with the images side by side
 * so that dW [k][CK] += dyt · col is one GEMM whose inner dimension runs
 * over every pixel of every image of the chunk. One thread per element
 * written, consecutive threads writing consecutive floats. */
#include "kernels.h"

static __global__ void im2col_rows_kernel(size_t count, struct nn__im2col g, const float *x,
	float *col)
{
	const size_t ck_n = (size_t)g.c * g.kh * g.kw, pn = (size_t)g.oh * g.ow;
	NN_FOR_EACH(e, count) {
		size_t row = e / ck_n, ck = e % ck_n;
		size_t img = row / pn, p = row % pn;
		int ox = (int)(p % g.ow), oy = (int)(p / g.ow);
		int j = (int)(ck % g.kw), i = (int)(ck / g.kw % g.kh), ch = (int)(ck / g.kw / g.kh);
		int yy = oy * g.stride_h - g.pad_h + i, xx = ox * g.stride_w - g.pad_w + j;
		col[e] = yy >= 0 && yy < g.h && xx >= 0 && xx < g.w ?
			x[((img * g.c + ch) * g.h + yy) * g.w + xx] : 0.0f;
	}
}

static __global__ void images_side_by_side_kernel(size_t count, size_t m, size_t k, size_t pn,
	const float *dy, float *dyt)
{
	NN_FOR_EACH(e, count) {
		size_t kk = e / (m * pn), r = e % (m * pn);
		size_t img = r / pn, p = r % pn;
		dyt[e] = dy[(img * k + kk) * pn + p];
	}
}

extern "C" cudaError_t nn__k_im2col_rows(cudaStream_t st, int m, struct nn__im2col g,
	const float *x, float *col)
{
	size_t count = (size_t)m * g.oh * g.ow * g.c * g.kh * g.kw;
	if (!count)
		return cudaSuccess;
	im2col_rows_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, g, x, col);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_images_side_by_side(cudaStream_t st, int m, int k, size_t pn,
	const float *dy, float *dyt)
{
	size_t count = (size_t)m * k * pn;
	if (!count)
		return cudaSuccess;
	images_side_by_side_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, (size_t)m,
		(size_t)k, pn, dy, dyt);
	return cudaGetLastError();
}
