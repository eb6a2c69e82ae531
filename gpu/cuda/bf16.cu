/* BF16 operands for the backend's BF16 mode (conv.c, fc.c): the net keeps
 * FP32 tensors in NCHW and FP32 master weights, and each BF16 convolution
 * or GEMM reads BF16 copies made just before it and writes BF16 (cuDNN)
 * or FP32 (cuBLAS) results. Rounding is gpu/bf16.h's, the function the
 * CPU test checks.
 *
 * The convolution copies are NHWC (weights KRSC), the layout cuDNN's
 * tensor-core kernels for 16-bit types read without a transpose of their
 * own, so each copy is a batch of [rows][cols] -> [cols][rows] transposes
 * (an image [C][HW] -> [HW][C], a filter [C][RS] -> [RS][C]) through a
 * shared-memory tile, coalesced on both sides; the way back adds the
 * convolution's bias (one value per row) and honours acc in the same pass. */
#include "bf16.h"
#include "kernels.h"

#define TILE 32
#define TILE_ROWS 8   /* threads per tile column: each handles TILE / TILE_ROWS rows */

static __global__ void to_bf16_kernel(size_t count, const float *x, uint16_t *y)
{
	NN_FOR_EACH(i, count)
		y[i] = nn_bf16_from_float(x[i]);
}

/* Block (bx, by, b): x[b][by*TILE ..][bx*TILE ..] -> y[b][bx*TILE ..][by*TILE ..]. */
static __global__ void to_bf16_t_kernel(int rows, int cols, const float *x, uint16_t *y)
{
	__shared__ float tile[TILE][TILE + 1];
	const size_t base = (size_t)blockIdx.z * rows * cols;
	const int c0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
	for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
		int r = r0 + j, c = c0 + threadIdx.x;
		if (r < rows && c < cols)
			tile[j][threadIdx.x] = x[base + (size_t)r * cols + c];
	}
	__syncthreads();
	for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
		int c = c0 + j, r = r0 + threadIdx.x;
		if (r < rows && c < cols)
			y[base + (size_t)c * rows + r] = nn_bf16_from_float(tile[threadIdx.x][j]);
	}
}

static __global__ void from_bf16_t_kernel(int rows, int cols, const uint16_t *y,
	const float *bias, int acc, float *out)
{
	__shared__ float tile[TILE][TILE + 1];
	const size_t base = (size_t)blockIdx.z * rows * cols;
	const int c0 = blockIdx.x * TILE, r0 = blockIdx.y * TILE;
	for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
		int c = c0 + j, r = r0 + threadIdx.x;
		if (r < rows && c < cols)
			tile[threadIdx.x][j] = nn_bf16_to_float(y[base + (size_t)c * rows + r]);
	}
	__syncthreads();
	for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
		int r = r0 + j, c = c0 + threadIdx.x;
		if (r < rows && c < cols) {
			float v = tile[j][threadIdx.x];
			float *o = out + base + (size_t)r * cols + c;
			if (bias)
				v += bias[r];
			*o = acc ? *o + v : v;
		}
	}
}

/* The grid for batch transposes of rows x cols, or an error for shapes
 * past CUDA's grid limits (never met by the nets here). */
static cudaError_t t_grid(int batch, int rows, int cols, dim3 *grid)
{
	unsigned gx = (unsigned)((cols + TILE - 1) / TILE), gy = (unsigned)((rows + TILE - 1) / TILE);
	if (batch < 1 || rows < 1 || cols < 1 || gy > 65535u || batch > 65535)
		return cudaErrorInvalidConfiguration;
	*grid = dim3(gx, gy, (unsigned)batch);
	return cudaSuccess;
}

extern "C" cudaError_t nn__k_to_bf16(cudaStream_t st, size_t count, const float *x,
	uint16_t *y)
{
	if (!count)
		return cudaSuccess;
	to_bf16_kernel<<<nn__blocks(count), NN_THREADS, 0, st>>>(count, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_to_bf16_t(cudaStream_t st, int batch, int rows, int cols,
	const float *x, uint16_t *y)
{
	dim3 grid;
	cudaError_t e = t_grid(batch, rows, cols, &grid);
	if (e != cudaSuccess)
		return e;
	to_bf16_t_kernel<<<grid, dim3(TILE, TILE_ROWS), 0, st>>>(rows, cols, x, y);
	return cudaGetLastError();
}

extern "C" cudaError_t nn__k_from_bf16_t(cudaStream_t st, int batch, int rows, int cols,
	const uint16_t *y, const float *bias, int acc, float *out)
{
	dim3 grid;
	cudaError_t e = t_grid(batch, rows, cols, &grid);
	if (e != cudaSuccess)
		return e;
	from_bf16_t_kernel<<<grid, dim3(TILE, TILE_ROWS), 0, st>>>(rows, cols, y, bias, acc, out);
	return cudaGetLastError();
}
