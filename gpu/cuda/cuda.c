/* The CUDA backend: backend.h's ops table on one GPU, with cuDNN for
 * convolution and pooling (conv.c, pool.c), cuBLAS for the fully
 * connected layers (fc.c) and kernels of our own for the rest (*.cu).
 *
 * DESIGN
 * - One backend owns one stream, one cuDNN handle and one cuBLAS handle,
 *   both bound to that stream; every op is queued on it, so ops run in
 *   the order they are issued and the host waits only where it must read
 *   a result (download, sync) or hand memory back to its caller (upload).
 *   Ops on a backend come from one thread at a time (backend.h), which
 *   owns the handles. The GPU is device 0; pick another with
 *   CUDA_VISIBLE_DEVICES.
 * - Memory is cudaMalloc'd by the net once (alloc); plans made once per
 *   layer shape hold the descriptors and algorithm choices. The only
 *   buffers made later are the uint8 input path's pinned and device
 *   staging chunks, on its first call and when a call needs larger ones.
 * - The uint8 input path (input_u8) copies images chunk by chunk into one
 *   of two pinned buffers, queues the chunk's copy to the device and its
 *   normalising kernel, and fills the other buffer meanwhile; a buffer is
 *   refilled only after an event says its last copy finished. So the
 *   host's packing overlaps the transfers, and also whatever is still
 *   queued from before (a training step's backward and optimiser step
 *   return before they run), since only the output's download waits.
 * - Math (nn_backend_set_precision, or NN_CUDA_PRECISION=fp32|tf32|bf16
 *   when the backend opens; NN_CUDA_TF32=1 still means tf32): exact FP32
 *   by default (cuDNN CUDNN_FMA_MATH, which keeps TF32 tensor cores out;
 *   cuBLAS CUBLAS_DEFAULT_MATH). tf32 allows TF32 tensor-core math in
 *   convolutions (CUDNN_TENSOR_OP_MATH; not ..._ALLOW_CONVERSION, which
 *   may also convert to FP16) and GEMMs (CUBLAS_TF32_TENSOR_OP_MATH).
 *   bf16 (sm_80 and later) runs ungrouped convolutions on BF16 NHWC
 *   copies of their operands and the fully connected GEMMs on BF16
 *   copies (cublasGemmEx, FP32 accumulation and output), made by
 *   bf16.cu just before each call from the net's FP32 tensors; master
 *   weights, gradients, Adam state, the loss and every other op stay
 *   FP32. A plan keeps the precision it was made in.
 * - Other knobs, read when the backend opens: NN_CUDA_CONV_SEARCH=find
 *   (default: time every algorithm for a layer's shape once, as PyTorch's
 *   cudnn.benchmark) or heuristic (cuDNN's ranking, no timing);
 *   NN_CUDA_CONV_ALGOS=all (default) or gemm (no FFT or Winograd);
 *   NN_CUDA_FILTER_GEMM=auto (default), force or off: our im2col + GEMM
 *   weight gradient beside cuDNN's (conv.c);
 *   NN_CUDA_WS_MB, the most workspace one convolution may use (default
 *   1024).
 * - Every CUDA, cuDNN and cuBLAS status is checked (cuda.h) and turned
 *   into VR_EDEVICE with a line on stderr naming the call; nothing exits.
 *   A failed kernel is reported by the next call that synchronises. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "err.h"
#include "kernels.h"

#define DEFAULT_WS_MB 1024
#define INPUT_CHUNK_BYTES ((size_t)8 << 20)    /* per staging buffer */

/* ---- Status checks --------------------------------------------------------- */

int nn__cu_status(cudaError_t e, const char *file, int line, const char *call)
{
	if (e == cudaSuccess)
		return 0;
	fprintf(stderr, "nn/cuda: %s:%d: %s: %s (%s)\n", file, line, call, cudaGetErrorString(e),
		cudaGetErrorName(e));
	return VR_EDEVICE;
}

int nn__dnn_status(cudnnStatus_t s, const char *file, int line, const char *call)
{
	char detail[256] = "";
	if (s == CUDNN_STATUS_SUCCESS)
		return 0;
	cudnnGetLastErrorString(detail, sizeof(detail));
	fprintf(stderr, "nn/cuda: %s:%d: %s: %s%s%s\n", file, line, call, cudnnGetErrorString(s),
		detail[0] ? ": " : "", detail);
	return VR_EDEVICE;
}

int nn__blas_status(cublasStatus_t s, const char *file, int line, const char *call)
{
	if (s == CUBLAS_STATUS_SUCCESS)
		return 0;
	fprintf(stderr, "nn/cuda: %s:%d: %s: %s (%s)\n", file, line, call, cublasGetStatusString(s),
		cublasGetStatusName(s));
	return VR_EDEVICE;
}

/* ---- Memory ---------------------------------------------------------------- */

static int cuda_alloc(struct nn_backend *b, size_t bytes, void **out)
{
	cudaError_t e = cudaMalloc(out, bytes ? bytes : 256);
	if (e == cudaErrorMemoryAllocation) {
		cudaGetLastError();
		*out = NULL;
		return VR_ENOMEM;
	}
	return NN_CU(e);
}

/* Memory is freed only once the stream's work is done with it (cudaFree
 * does not wait for a non-blocking stream). */
static void cuda_free(struct nn_backend *b, void *p)
{
	if (!p)
		return;
	NN_CU(cudaStreamSynchronize(nn__cuda(b)->stream));
	NN_CU(cudaFree(p));
}

/* Waits for the copy too, so the caller may reuse host_src at once even
 * when it is pinned memory (an async copy from pinned memory would still
 * be reading it). */
static int cuda_upload(struct nn_backend *b, void *dst, const void *host_src, size_t bytes)
{
	cudaStream_t st = nn__cuda(b)->stream;
	if (!bytes)
		return 0;
	CHECK(NN_CU(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, st)));
	return NN_CU(cudaStreamSynchronize(st));
}

static int cuda_download(struct nn_backend *b, void *host_dst, const void *src, size_t bytes)
{
	cudaStream_t st = nn__cuda(b)->stream;
	if (!bytes)
		return 0;
	CHECK(NN_CU(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, st)));
	return NN_CU(cudaStreamSynchronize(st));
}

static int cuda_copy(struct nn_backend *b, void *dst, const void *src, size_t bytes)
{
	if (!bytes || dst == src)
		return 0;
	return NN_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
		nn__cuda(b)->stream));
}

static int cuda_fill(struct nn_backend *b, float *p, float value, size_t count)
{
	cudaStream_t st = nn__cuda(b)->stream;
	if (value == 0.0f)
		return count ? NN_CU(cudaMemsetAsync(p, 0, sizeof(float) * count, st)) : 0;
	return NN_CU(nn__k_fill(st, count, value, p));
}

static int cuda_sync(struct nn_backend *b)
{
	return NN_CU(cudaStreamSynchronize(nn__cuda(b)->stream));
}

/* ---- Plans ----------------------------------------------------------------- */

/* Plans of every kind start with their kind, so plan_free can dispatch. */
static int cuda_plan_create(struct nn_backend *b, int kind, const void *shape, void **plan,
	size_t *ws_bytes)
{
	*plan = NULL;
	*ws_bytes = 0;
	switch (kind) {
	case NN_OP_CONV:
		return nn__cuda_conv_plan(b, shape, plan, ws_bytes);
	case NN_OP_POOL:
		return nn__cuda_pool_plan(b, shape, plan);
	case NN_OP_FC:
		return nn__cuda_fc_plan(b, shape, plan);
	case NN_OP_LRN:
	case NN_OP_BN:
		return 0;
	}
	return VR_EINVAL;
}

static void cuda_plan_free(struct nn_backend *b, void *plan)
{
	if (!plan)
		return;
	NN_CU(cudaStreamSynchronize(nn__cuda(b)->stream));
	switch (*(const int *)plan) {
	case NN_OP_CONV:
		nn__cuda_conv_plan_free(plan);
		break;
	case NN_OP_POOL:
		nn__cuda_pool_plan_free(plan);
		break;
	case NN_OP_FC:
		nn__cuda_fc_plan_free(plan);
		break;
	}
}

/* ---- Layers on our own kernels --------------------------------------------- */

static int cuda_act_fwd(struct nn_backend *b, int mode, size_t count, const float *x, float *y)
{
	return NN_CU(nn__k_act_fwd(nn__cuda(b)->stream, mode, count, x, y));
}

static int cuda_act_bwd(struct nn_backend *b, int mode, size_t count, const float *y,
	const float *dy, float *dx, int acc)
{
	return NN_CU(nn__k_act_bwd(nn__cuda(b)->stream, mode, count, y, dy, dx, acc));
}

static int cuda_dropout_fwd(struct nn_backend *b, size_t count, float p, uint64_t seed,
	const float *x, float *y)
{
	return NN_CU(nn__k_dropout_fwd(nn__cuda(b)->stream, count, p, 1.0f / (1.0f - p), seed, x,
		y));
}

static int cuda_dropout_bwd(struct nn_backend *b, size_t count, float p, uint64_t seed,
	const float *dy, float *dx, int acc)
{
	return NN_CU(nn__k_dropout_bwd(nn__cuda(b)->stream, count, p, 1.0f / (1.0f - p), seed, dy,
		dx, acc));
}

static int cuda_lrn_fwd(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
	const float *x, float *y, void *ws)
{
	return NN_CU(nn__k_lrn_fwd(nn__cuda(b)->stream, s, n, x, y));
}

static int cuda_lrn_bwd(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc, void *ws)
{
	const float coef = 2.0f * s->alpha * s->beta / s->size;
	return NN_CU(nn__k_lrn_bwd(nn__cuda(b)->stream, s, n, coef, x, y, dy, dx, acc));
}

static int cuda_bn_fwd(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
	const float *x, const float *gamma, const float *beta, const float *mean,
	const float *var, float *y)
{
	return NN_CU(nn__k_bn_fwd(nn__cuda(b)->stream, n, s->c, s->h * s->w, s->eps, x, gamma,
		beta, mean, var, y));
}

static int cuda_bn_bwd(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
	const float *x, const float *gamma, const float *mean, const float *var,
	const float *dy, float *dx, int acc, float *dgamma, float *dbeta)
{
	return NN_CU(nn__k_bn_bwd(nn__cuda(b)->stream, n, s->c, s->h * s->w, s->eps, x, gamma,
		mean, var, dy, dx, acc, dgamma, dbeta));
}

static int cuda_add(struct nn_backend *b, size_t count, const float *a, const float *c,
	float *y)
{
	return NN_CU(nn__k_add(nn__cuda(b)->stream, count, a, c, y));
}

static int cuda_accumulate(struct nn_backend *b, size_t count, const float *src, float *dst,
	int acc)
{
	if (!acc)
		return cuda_copy(b, dst, src, sizeof(float) * count);
	return NN_CU(nn__k_accumulate(nn__cuda(b)->stream, count, src, dst));
}

static int cuda_pad_fwd(struct nn_backend *b, const struct nn_pad_shape *s, int n,
	const float *x, float *y)
{
	return NN_CU(nn__k_pad_fwd(nn__cuda(b)->stream, s, n, x, y));
}

static int cuda_pad_bwd(struct nn_backend *b, const struct nn_pad_shape *s, int n,
	const float *dy, float *dx, int acc)
{
	return NN_CU(nn__k_pad_bwd(nn__cuda(b)->stream, s, n, dy, dx, acc));
}

static int cuda_l2norm_fwd(struct nn_backend *b, int n, int d, float eps, const float *x,
	float *y)
{
	return NN_CU(nn__k_l2norm_fwd(nn__cuda(b)->stream, n, d, eps, x, y));
}

static int cuda_l2norm_bwd(struct nn_backend *b, int n, int d, float eps, const float *x,
	const float *dy, float *dx, int acc)
{
	return NN_CU(nn__k_l2norm_bwd(nn__cuda(b)->stream, n, d, eps, x, dy, dx, acc));
}

static int cuda_sgd_step(struct nn_backend *b, size_t count, float *w, const float *g,
	float *m, const struct nn_sgd_params *p)
{
	return NN_CU(nn__k_sgd(nn__cuda(b)->stream, count, w, g, m, p->lr, p->momentum,
		p->weight_decay));
}

static int cuda_adam_step(struct nn_backend *b, size_t count, float *w, const float *g,
	float *m, float *v, const struct nn_adam_params *p)
{
	/* The scalars exactly as nn_cpu_adam_step makes them. */
	const double bc1 = 1.0 - pow(p->beta1, (double)p->step);
	const double bc2 = 1.0 - pow(p->beta2, (double)p->step);
	const float step_size = (float)(p->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
	const float shrink = p->decoupled ? 1.0f - p->lr * p->weight_decay : 1.0f;
	const float l2 = p->decoupled ? 0.0f : p->weight_decay;
	return NN_CU(nn__k_adam(nn__cuda(b)->stream, count, w, g, m, v, p->beta1, p->beta2, p->eps,
		l2, shrink, step_size, bc2_sqrt));
}

/* ---- The uint8 input path -------------------------------------------------- */

static void staging_free(struct nn__staging *in)
{
	for (int k = 0; k < 2; k++) {
		if (in->host[k])
			NN_CU(cudaFreeHost(in->host[k]));
		if (in->dev[k])
			NN_CU(cudaFree(in->dev[k]));
		in->host[k] = in->dev[k] = NULL;
	}
	in->bytes = 0;
}

/* Makes both chunk buffers hold at least bytes. Waits for every queued
 * copy first, since the old buffers may still be read. */
static int staging_reserve(struct nn_cuda *c, size_t bytes)
{
	struct nn__staging *in = &c->in;
	int rc;
	if (in->bytes >= bytes)
		return 0;
	CHECK(NN_CU(cudaStreamSynchronize(c->stream)));
	staging_free(in);
	for (int k = 0; k < 2; k++) {
		if ((rc = NN_CU(cudaHostAlloc((void **)&in->host[k], bytes, cudaHostAllocDefault))) ||
		    (rc = NN_CU(cudaMalloc((void **)&in->dev[k], bytes))))
			goto fail;
	}
	in->bytes = bytes;
	return 0;
fail:
	staging_free(in);
	return rc;
}

static int cuda_input_u8(struct nn_backend *b, int n, int size, const uint8_t *const *img,
	const float mul[3], const float add[3], float *x)
{
	struct nn_cuda *c = nn__cuda(b);
	const size_t plane = (size_t)size * size, per = 3 * plane;
	size_t chunk = INPUT_CHUNK_BYTES / per;
	if (chunk < 1)
		chunk = 1;
	if (chunk > (size_t)n)
		chunk = n;
	CHECK(staging_reserve(c, chunk * per));
	for (int i0 = 0, k = 0; i0 < n; i0 += (int)chunk, k ^= 1) {
		int m = n - i0 < (int)chunk ? n - i0 : (int)chunk;
		CHECK(NN_CU(cudaEventSynchronize(c->in.copied[k])));
		for (int j = 0; j < m; j++)
			memcpy(c->in.host[k] + j * per, img[i0 + j], per);
		CHECK(NN_CU(cudaMemcpyAsync(c->in.dev[k], c->in.host[k], m * per,
			cudaMemcpyHostToDevice, c->stream)));
		CHECK(NN_CU(cudaEventRecord(c->in.copied[k], c->stream)));
		CHECK(NN_CU(nn__k_input_u8(c->stream, m, plane, c->in.dev[k], mul, add,
			x + (size_t)i0 * per)));
	}
	return 0;
}

static int cuda_input_u8_gather(struct nn_backend *b, int n, int size, const uint8_t *set,
	const uint32_t *idx, const float mul[3], const float add[3], float *x)
{
	return NN_CU(nn__k_input_u8_gather(nn__cuda(b)->stream, n, (size_t)size * size, set, idx,
		mul, add, x));
}

/* ---- Opening and closing --------------------------------------------------- */

static void cuda_close(struct nn_backend *b)
{
	struct nn_cuda *c = nn__cuda(b);
	if (!c)
		return;
	if (c->stream)
		NN_CU(cudaStreamSynchronize(c->stream));
	staging_free(&c->in);
	for (int k = 0; k < 2; k++)
		if (c->in.copied[k])
			NN_CU(cudaEventDestroy(c->in.copied[k]));
	if (c->blas)
		NN_BLAS(cublasDestroy(c->blas));
	if (c->dnn)
		NN_DNN(cudnnDestroy(c->dnn));
	if (c->stream)
		NN_CU(cudaStreamDestroy(c->stream));
	free(c);
	b->priv = NULL;
}

static int cuda_set_precision(struct nn_backend *b, int precision);
static int cuda_precision(const struct nn_backend *b);

static const struct nn_backend_ops cuda_ops = {
	.alloc = cuda_alloc,
	.free = cuda_free,
	.upload = cuda_upload,
	.download = cuda_download,
	.copy = cuda_copy,
	.fill = cuda_fill,
	.sync = cuda_sync,
	.plan_create = cuda_plan_create,
	.plan_free = cuda_plan_free,
	.conv_fwd = nn__cuda_conv_fwd,
	.conv_bwd_data = nn__cuda_conv_bwd_data,
	.conv_bwd_filter = nn__cuda_conv_bwd_filter,
	.conv_bwd_bias = nn__cuda_conv_bwd_bias,
	.pool_fwd = nn__cuda_pool_fwd,
	.pool_bwd = nn__cuda_pool_bwd,
	.act_fwd = cuda_act_fwd,
	.act_bwd = cuda_act_bwd,
	.fc_fwd = nn__cuda_fc_fwd,
	.fc_bwd_data = nn__cuda_fc_bwd_data,
	.fc_bwd_weights = nn__cuda_fc_bwd_weights,
	.dropout_fwd = cuda_dropout_fwd,
	.dropout_bwd = cuda_dropout_bwd,
	.lrn_fwd = cuda_lrn_fwd,
	.lrn_bwd = cuda_lrn_bwd,
	.bn_fwd = cuda_bn_fwd,
	.bn_bwd = cuda_bn_bwd,
	.add = cuda_add,
	.accumulate = cuda_accumulate,
	.pad_fwd = cuda_pad_fwd,
	.pad_bwd = cuda_pad_bwd,
	.l2norm_fwd = cuda_l2norm_fwd,
	.l2norm_bwd = cuda_l2norm_bwd,
	.sgd_step = cuda_sgd_step,
	.adam_step = cuda_adam_step,
	.input_u8 = cuda_input_u8,
	.input_u8_gather = cuda_input_u8_gather,
	.set_precision = cuda_set_precision,
	.precision = cuda_precision,
	.close = cuda_close,
};

/* The value of environment variable name if it is one of the choices,
 * else def; a value that is none of them is reported once and ignored. */
static int env_choice(const char *name, const char *const *choices, const int *values, int def)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return def;
	for (int i = 0; choices[i]; i++)
		if (!strcmp(v, choices[i]))
			return values[i];
	fprintf(stderr, "nn/cuda: %s=%s not understood; using the default\n", name, v);
	return def;
}

static void read_env(struct nn_cuda *c)
{
	static const char *const on_off[] = { "0", "1", NULL };
	static const int on_off_v[] = { 0, 1 };
	static const char *const search[] = { "find", "heuristic", NULL };
	static const int search_v[] = { NN__SEARCH_FIND, NN__SEARCH_HEURISTIC };
	static const char *const algos[] = { "all", "gemm", NULL };
	static const int algos_v[] = { NN__ALGOS_ALL, NN__ALGOS_GEMM };
	static const char *const im2col[] = { "auto", "force", "off", NULL };
	static const int im2col_v[] = { NN__IM2COL_AUTO, NN__IM2COL_FORCE, NN__IM2COL_OFF };
	const char *ws = getenv("NN_CUDA_WS_MB");
	long mb = ws && *ws ? strtol(ws, NULL, 10) : DEFAULT_WS_MB;
	static const char *const prec[] = { "fp32", "tf32", "bf16", NULL };
	static const int prec_v[] = { NN_PRECISION_FP32, NN_PRECISION_TF32, NN_PRECISION_BF16 };
	c->precision = env_choice("NN_CUDA_PRECISION", prec, prec_v,
		env_choice("NN_CUDA_TF32", on_off, on_off_v, 0) ? NN_PRECISION_TF32 :
		NN_PRECISION_FP32);
	c->tf32 = c->precision == NN_PRECISION_TF32;
	c->search = env_choice("NN_CUDA_CONV_SEARCH", search, search_v, NN__SEARCH_FIND);
	c->algos = env_choice("NN_CUDA_CONV_ALGOS", algos, algos_v, NN__ALGOS_ALL);
	c->filter_gemm = env_choice("NN_CUDA_FILTER_GEMM", im2col, im2col_v, NN__IM2COL_AUTO);
	c->ws_cap = (size_t)(mb > 0 ? mb : DEFAULT_WS_MB) << 20;
}

/* cuBLAS's math mode for the precision: TF32 tensor cores only in tf32
 * (bf16's GEMMs name their compute type; its FP32 ones stay exact). */
static int blas_math(struct nn_cuda *c)
{
	return NN_BLAS(cublasSetMathMode(c->blas, c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH :
		CUBLAS_DEFAULT_MATH));
}

/* Rewrites the precision word at the end of b->device. */
static void describe_precision(struct nn_backend *b)
{
	struct nn_cuda *c = nn__cuda(b);
	static const char *const words[] = { "FP32", "TF32", "BF16" };
	snprintf(b->device + c->device_base, sizeof(b->device) - c->device_base, "%s",
		words[c->precision - NN_PRECISION_FP32]);
}

static int cuda_set_precision(struct nn_backend *b, int precision)
{
	struct nn_cuda *c = nn__cuda(b);
	if (precision == NN_PRECISION_BF16 && !c->bf16_ok)
		return VR_EUNSUPPORTED;
	c->precision = precision;
	c->tf32 = precision == NN_PRECISION_TF32;
	CHECK(blas_math(c));
	describe_precision(b);
	return 0;
}

static int cuda_precision(const struct nn_backend *b)
{
	return ((const struct nn_cuda *)b->priv)->precision;
}

/* The cuDNN and cuBLAS handles, on the backend's stream. A handle is
 * stored only once created, so cuda_close frees exactly what exists. */
static int open_libraries(struct nn_cuda *c, char *why, size_t why_len)
{
	cudnnHandle_t dnn;
	cublasHandle_t blas;
	cudnnStatus_t ds = cudnnCreate(&dnn);
	if (ds != CUDNN_STATUS_SUCCESS) {
		snprintf(why, why_len, "cudnnCreate failed: %s", cudnnGetErrorString(ds));
		return VR_EDEVICE;
	}
	c->dnn = dnn;
	if (NN_BLAS(cublasCreate(&blas))) {
		snprintf(why, why_len, "cublasCreate failed (see stderr)");
		return VR_EDEVICE;
	}
	c->blas = blas;
	if (NN_DNN(cudnnSetStream(c->dnn, c->stream)) ||
	    NN_BLAS(cublasSetStream(c->blas, c->stream)) || blas_math(c)) {
		snprintf(why, why_len, "binding cuDNN and cuBLAS to the stream failed (see stderr)");
		return VR_EDEVICE;
	}
	return 0;
}

int nn__cuda_open(struct nn_backend **out, char *why, size_t why_len)
{
	struct nn_backend *b = NULL;
	struct nn_cuda *c = NULL;
	struct cudaDeviceProp prop;
	int count = 0, rt = 0, rc = VR_EDEVICE;
	cudaError_t e;
	*out = NULL;
	e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count < 1) {
		snprintf(why, why_len, "no CUDA device found: %s",
			e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
		cudaGetLastError();
		return VR_EDEVICE;
	}
	if (!(b = calloc(1, sizeof(*b))) || !(c = calloc(1, sizeof(*c)))) {
		snprintf(why, why_len, "out of memory");
		rc = VR_ENOMEM;
		goto fail;
	}
	b->ops = &cuda_ops;
	b->priv = c;
	snprintf(b->name, sizeof(b->name), "cuda");
	read_env(c);
	if ((e = cudaSetDevice(0)) != cudaSuccess ||
	    (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess ||
	    (e = cudaRuntimeGetVersion(&rt)) != cudaSuccess ||
	    (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
		snprintf(why, why_len, "CUDA device 0 did not start: %s", cudaGetErrorString(e));
		goto fail;
	}
	for (int k = 0; k < 2; k++)
		if ((e = cudaEventCreateWithFlags(&c->in.copied[k], cudaEventDisableTiming)) !=
		    cudaSuccess) {
			snprintf(why, why_len, "cudaEventCreate: %s", cudaGetErrorString(e));
			goto fail;
		}
	c->bf16_ok = prop.major >= 8;
	if (c->precision == NN_PRECISION_BF16 && !c->bf16_ok) {
		snprintf(why, why_len, "NN_CUDA_PRECISION=bf16 needs BF16 tensor cores (sm_80 or "
			"later); %.64s is sm_%d%d", prop.name, prop.major, prop.minor);
		goto fail;
	}
	if (open_libraries(c, why, why_len))
		goto fail;
	size_t v = cudnnGetVersion();
	snprintf(b->device, sizeof(b->device), "%.64s (sm_%d%d, %.0f GiB), CUDA %d.%d, "
		"cuDNN %zu.%zu.%zu, ", prop.name, prop.major, prop.minor,
		prop.totalGlobalMem / 1073741824.0, rt / 1000, rt % 1000 / 10, v / 10000, v / 100 % 100,
		v % 100);
	c->device_base = strlen(b->device);
	describe_precision(b);
	*out = b;
	return 0;
fail:
	if (b) {
		if (c)
			cuda_close(b);
		free(b);
	}
	return rc;
}
