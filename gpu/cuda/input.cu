/* The uint8 input path's kernels: decoded images arrive as HWC RGB bytes
 * (a quarter of the floats' bytes over the bus), or sit in an image set
 * on the GPU, and become the net's normalised CHW float input here,
 * (byte / 255 - mean) / std folded into byte * mul + add as featured's
 * host normaliser does. One thread per pixel reads its three bytes and
 * writes one float to each channel plane. */
#include "kernels.h"

/* Images per gather launch: their indices travel in the launch's
 * parameters (1 KiB of the 4 KiB allowed), so a gather needs no device
 * buffer, no copy and no wait. */
#define GATHER_MAX 256

struct norm {
	float mul[3], add[3];
};

struct gather {
	unsigned idx[GATHER_MAX];
};

static __device__ __forceinline__ void pixel(const unsigned char *px, const struct norm &k,
	size_t plane, float *xi)
{
	xi[0] = px[0] * k.mul[0] + k.add[0];
	xi[plane] = px[1] * k.mul[1] + k.add[1];
	xi[2 * plane] = px[2] * k.mul[2] + k.add[2];
}

static __global__ void input_u8_kernel(size_t count, size_t plane, struct norm k,
	const unsigned char *u8, float *x)
{
	NN_FOR_EACH(i, count) {
		size_t img = i / plane, p = i % plane;
		pixel(u8 + 3 * i, k, plane, x + img * 3 * plane + p);
	}
}

static __global__ void input_u8_gather_kernel(size_t count, size_t plane, struct norm k,
	struct gather g, const unsigned char *set, float *x)
{
	NN_FOR_EACH(i, count) {
		size_t img = i / plane, p = i % plane;
		pixel(set + (size_t)g.idx[img] * 3 * plane + 3 * p, k, plane, x + img * 3 * plane + p);
	}
}

extern "C" cudaError_t nn__k_input_u8(cudaStream_t st, int n, size_t plane,
	const unsigned char *u8, const float mul[3], const float add[3], float *x)
{
	size_t count = (size_t)n * plane;
	struct norm k = { { mul[0], mul[1], mul[2] }, { add[0], add[1], add[2] } };
	if (!count)
		return cudaSuccess;
	input_u8_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, plane, k, u8, x);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_input_u8_gather(cudaStream_t st, int n, size_t plane,
	const unsigned char *set, const unsigned *idx, const float mul[3], const float add[3],
	float *x)
{
	struct norm k = { { mul[0], mul[1], mul[2] }, { add[0], add[1], add[2] } };
	for (int i0 = 0; i0 < n; i0 += GATHER_MAX) {
		int m = n - i0 < GATHER_MAX ? n - i0 : GATHER_MAX;
		size_t count = (size_t)m * plane;
		struct gather g;
		for (int j = 0; j < m; j++)
			g.idx[j] = idx[i0 + j];
		input_u8_gather_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, plane, k, g,
			set, x + (size_t)i0 * 3 * plane);
		cudaError_t e = cudaGetLastError();
		if (e != cudaSuccess)
			return e;
	}
	return cudaSuccess;
}
