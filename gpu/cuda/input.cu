/* The uint8 input path's kernel: decoded images arrive as HWC RGB bytes
 * (a quarter of the floats' bytes over the bus) and become the net's
 * normalised CHW float input here, (byte / 255 - mean) / std folded into
 * byte * mul + add as featured's host normaliser does. One thread per
 * pixel reads its three bytes and writes one float to each channel plane. */
#include "kernels.h"

struct norm {
	float mul[3], add[3];
};

static __global__ void input_u8_kernel(size_t count, size_t plane, struct norm k,
	const unsigned char *u8, float *x)
{
	NN_FOR_EACH(i, count) {
		size_t img = i / plane, p = i % plane;
		const unsigned char *px = u8 + 3 * i;
		float *xi = x + img * 3 * plane + p;
		xi[0] = px[0] * k.mul[0] + k.add[0];
		xi[plane] = px[1] * k.mul[1] + k.add[1];
		xi[2 * plane] = px[2] * k.mul[2] + k.add[2];
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
