/* Convolution on the GPU through cuDNN's legacy API (PyTorch's Conv2d:
 * cross-correlation, NCHW, weights [k][c/groups][kh][kw], groups through
 * cudnnSetConvolutionGroupCount).
 *
 * A plan holds, per layer shape, the tensor, filter and convolution
 * descriptors and the three algorithms (forward, backward data, backward
 * filter), chosen once for the shape's batch: by timing every algorithm
 * (cudnnFind*, the default) or by cuDNN's heuristic (cudnnGet*_v7), the
 * fastest that fits the workspace cap, runs in the backend's math mode
 * and is allowed by its algorithm policy (cuda.c). Each direction has its
 * own convolution descriptor, because cuDNN wants the math type its
 * chosen algorithm was found with set on the descriptor it runs with.
 *
 * Backward filter has one more candidate, of our own: im2col + one cuBLAS
 * GEMM per chunk of images (dW += dyt · col, im2col.cu's layouts). cuDNN's
 * legacy algorithms are slow for some shapes that matter here: AlexNet's
 * first layer (3 -> 64, 11x11/4, 224 px) took 4.2 ms per 256 images with
 * the best of them on an H100 against PyTorch's 1.5 ms. Under cudnnFind it
 * is timed on the plan's shape like cuDNN's and taken only when faster;
 * NN_CUDA_FILTER_GEMM=force takes it wherever it applies (ungrouped
 * convolutions; nn_cuda_parity's gemm column, so that every ungrouped row
 * checks it) and =off never.
 *
 * In BF16 mode (cuda.c) an ungrouped convolution's plan describes x, w
 * and y as BF16 NHWC (KRSC) with FP32 accumulation and tensor-op math,
 * and each call makes BF16 copies of its FP32 NCHW operands in the
 * workspace past cuDNN's part (bf16.cu), runs cuDNN on them and widens
 * the BF16 result back into the net's tensor, adding the bias (forward),
 * honouring acc (data) or accumulating into dw (filter) in that pass.
 * Grouped convolutions stay FP32. The bias gradient reads the FP32 dy.
 *
 * The plan's workspace size is fixed at creation (the net allocates one
 * workspace for all layers). A call with fewer images re-sets the tensor
 * descriptors and keeps the full batch's algorithms if they still fit,
 * else asks the heuristic for ones that do; the last such choice is kept,
 * so a run of equal batches pays for it once. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda.h"
#include "err.h"
#include "kernels.h"

#define MAX_ALGOS 16
#define ALGO_IM2COL 100                        /* backward filter: ours, not cuDNN's */
#define IM2COL_WS_TARGET ((size_t)256 << 20)   /* chunk images to use about this much */

enum { FWD, DATA, FILTER, DIRS };

static size_t align256(size_t bytes)
{
	return (bytes + 255) & ~(size_t)255;
}

static const char *const dir_names[DIRS] = { "fwd", "data", "filter" };

static const char *const fwd_names[] = { "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM",
	"DIRECT", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED" };
static const char *const data_names[] = { "ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD",
	"WINOGRAD_NONFUSED" };
static const char *const filter_names[] = { "ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD",
	"WINOGRAD_NONFUSED", "FFT_TILING" };

/* One direction's algorithm: its number in that direction's enum, or
 * ALGO_IM2COL. */
struct choice {
	int algo;
	cudnnMathType_t math;
	size_t ws;
	float ms;                  /* cudnnFind's time for the plan's batch; < 0: not timed */
};

struct conv_plan {
	int kind;                  /* NN_OP_CONV, first: cuda.c's plan_free dispatches on it */
	struct nn_conv_shape s;    /* s.n: the batch the plan is made for */
	cudnnTensorDescriptor_t x, y, bias;
	cudnnTensorDescriptor_t yf;  /* y as the net holds it (FP32 NCHW): the bias gradient's */
	cudnnFilterDescriptor_t w;
	cudnnConvolutionDescriptor_t conv[DIRS];
	int bf16;                  /* x, w, y are BF16 NHWC copies (the top comment) */
	size_t ws_dnn;             /* cuDNN's workspace, at the start of ws: every choice fits */
	size_t off_x, off_w, off_y;  /* bf16: the copies of x (or dx), w (or dw), y (or dy) in ws */
	size_t ws_bytes;           /* all of it */
	int n;                     /* images x and y describe now */
	struct choice full[DIRS];  /* for s.n */
	struct choice cur[DIRS];   /* for n */
	int im2col_chunk;          /* images per GEMM when backward filter is ALGO_IM2COL */
};

/* A candidate from a Find or Get_v7 result, whatever its direction. */
struct cand {
	int algo;
	cudnnStatus_t status;
	cudnnMathType_t math;
	float ms;
};

static const char *algo_name(int dir, int algo)
{
	if (dir == FILTER && algo == ALGO_IM2COL)
		return "IM2COL_GEMM (ours)";
	static const char *const *names[DIRS] = { fwd_names, data_names, filter_names };
	static const int counts[DIRS] = { CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
		CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT };
	return algo >= 0 && algo < counts[dir] ? names[dir][algo] : "?";
}

/* The exact-FP32 policy's algorithms: sums of products in FP32, no
 * transform (FFT, Winograd) that rounds in another basis. */
static int is_gemm_like(int dir, int algo)
{
	switch (dir) {
	case FWD:
		return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
			algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
			algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM ||
			algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
	case DATA:
		return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 ||
			algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
	default:
		return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ||
			algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
			algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
	}
}

/* Whether the plan may run on tensor cores (TF32, or BF16 operands). */
static int tensor_ops(const struct nn_cuda *c, const struct conv_plan *p)
{
	return c->tf32 || p->bf16;
}

/* The math type the descriptors ask for before a search. */
static cudnnMathType_t base_math(const struct nn_cuda *c, const struct conv_plan *p)
{
	return tensor_ops(c, p) ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
}

/* The workspace algo needs in direction dir at the descriptors' batch. */
static cudnnStatus_t ws_size(struct nn_cuda *c, struct conv_plan *p, int dir, int algo,
	size_t *bytes)
{
	switch (dir) {
	case FWD:
		return cudnnGetConvolutionForwardWorkspaceSize(c->dnn, p->x, p->w, p->conv[FWD], p->y,
			(cudnnConvolutionFwdAlgo_t)algo, bytes);
	case DATA:
		return cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, p->w, p->y, p->conv[DATA],
			p->x, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
	default:
		return cudnnGetConvolutionBackwardFilterWorkspaceSize(c->dnn, p->x, p->y,
			p->conv[FILTER], p->w, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
	}
}

/* Ranks direction dir's algorithms for the current descriptors, best
 * first, into cand[*got]. */
static int rank(struct nn_cuda *c, struct conv_plan *p, int dir, int find, struct cand *cand,
	int *got)
{
	union {
		cudnnConvolutionFwdAlgoPerf_t fwd[MAX_ALGOS];
		cudnnConvolutionBwdDataAlgoPerf_t data[MAX_ALGOS];
		cudnnConvolutionBwdFilterAlgoPerf_t filter[MAX_ALGOS];
	} r;
	int max = 0;
	*got = 0;
	CHECK(NN_DNN(cudnnSetConvolutionMathType(p->conv[dir], base_math(c, p))));
	switch (dir) {
	case FWD:
		CHECK(NN_DNN(cudnnGetConvolutionForwardAlgorithmMaxCount(c->dnn, &max)));
		max = max < MAX_ALGOS ? max : MAX_ALGOS;
		CHECK(find ? NN_DNN(cudnnFindConvolutionForwardAlgorithm(c->dnn, p->x, p->w,
				     p->conv[FWD], p->y, max, got, r.fwd)) :
			NN_DNN(cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->x, p->w, p->conv[FWD],
				p->y, max, got, r.fwd)));
		for (int i = 0; i < *got; i++)
			cand[i] = (struct cand){ r.fwd[i].algo, r.fwd[i].status, r.fwd[i].mathType,
				find ? r.fwd[i].time : -1.0f };
		break;
	case DATA:
		CHECK(NN_DNN(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(c->dnn, &max)));
		max = max < MAX_ALGOS ? max : MAX_ALGOS;
		CHECK(find ? NN_DNN(cudnnFindConvolutionBackwardDataAlgorithm(c->dnn, p->w, p->y,
				     p->conv[DATA], p->x, max, got, r.data)) :
			NN_DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, p->w, p->y,
				p->conv[DATA], p->x, max, got, r.data)));
		for (int i = 0; i < *got; i++)
			cand[i] = (struct cand){ r.data[i].algo, r.data[i].status, r.data[i].mathType,
				find ? r.data[i].time : -1.0f };
		break;
	default:
		CHECK(NN_DNN(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(c->dnn, &max)));
		max = max < MAX_ALGOS ? max : MAX_ALGOS;
		CHECK(find ? NN_DNN(cudnnFindConvolutionBackwardFilterAlgorithm(c->dnn, p->x, p->y,
				     p->conv[FILTER], p->w, max, got, r.filter)) :
			NN_DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->dnn, p->x, p->y,
				p->conv[FILTER], p->w, max, got, r.filter)));
		for (int i = 0; i < *got; i++)
			cand[i] = (struct cand){ r.filter[i].algo, r.filter[i].status,
				r.filter[i].mathType, find ? r.filter[i].time : -1.0f };
		break;
	}
	return 0;
}

/* Whether a candidate's math type is one this backend's mode may run. In
 * FP32 mode cuDNN reports its FMA-only kernels as CUDNN_FMA_MATH; default
 * math would let cuDNN pick TF32 tensor cores on this hardware. */
static int math_ok(const struct nn_cuda *c, const struct conv_plan *p, cudnnMathType_t m,
	int pass)
{
	if (tensor_ops(c, p))
		return 1;
	return pass == 0 ? m == CUDNN_FMA_MATH : m == CUDNN_DEFAULT_MATH;
}

/* The math type a chosen algorithm runs with: what the search reported,
 * except that FP32 mode never leaves the FMA restriction. */
static cudnnMathType_t run_math(const struct nn_cuda *c, const struct conv_plan *p,
	cudnnMathType_t found)
{
	return tensor_ops(c, p) ? found : CUDNN_FMA_MATH;
}

/* Picks direction dir's best usable algorithm within budget bytes of
 * workspace. A second pass in FP32 mode takes algorithms reported with
 * default math (run with FMA math), should cuDNN label none as FMA. */
static int choose(struct nn_cuda *c, struct conv_plan *p, int dir, int find, size_t budget,
	struct choice *out)
{
	struct cand cand[MAX_ALGOS];
	int got;
	CHECK(rank(c, p, dir, find, cand, &got));
	for (int pass = 0; pass < (tensor_ops(c, p) ? 1 : 2); pass++)
		for (int i = 0; i < got; i++) {
			size_t need = 0;
			if (cand[i].status != CUDNN_STATUS_SUCCESS || !math_ok(c, p, cand[i].math, pass) ||
			    (c->algos == NN__ALGOS_GEMM && !is_gemm_like(dir, cand[i].algo)))
				continue;
			CHECK(NN_DNN(cudnnSetConvolutionMathType(p->conv[dir],
				run_math(c, p, cand[i].math))));
			if (ws_size(c, p, dir, cand[i].algo, &need) != CUDNN_STATUS_SUCCESS ||
			    need > budget)
				continue;
			*out = (struct choice){ cand[i].algo, run_math(c, p, cand[i].math), need,
				cand[i].ms };
			return 0;
		}
	fprintf(stderr, "nn/cuda: conv %dx%dx%d -> %d (%dx%d/%d, %d groups), batch %d: no %s "
		"algorithm fits %zu bytes of workspace in %s mode\n", p->s.c, p->s.h, p->s.w, p->s.k,
		p->s.kh, p->s.kw, p->s.stride_h, p->s.groups, p->n, dir_names[dir], budget,
		p->bf16 ? "BF16" : c->tf32 ? "TF32" : "FP32");
	return VR_EDEVICE;
}

/* Sets each direction's descriptor to its choice's math type. */
static int apply(struct conv_plan *p, const struct choice *ch)
{
	for (int d = 0; d < DIRS; d++)
		CHECK(NN_DNN(cudnnSetConvolutionMathType(p->conv[d], ch[d].math)));
	return 0;
}

/* The data type and layout cuDNN sees for x, w and y. */
static cudnnDataType_t dnn_type(const struct conv_plan *p)
{
	return p->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
}

static cudnnTensorFormat_t dnn_format(const struct conv_plan *p)
{
	return p->bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
}

static int set_tensors(struct conv_plan *p, int n)
{
	const struct nn_conv_shape *s = &p->s;
	CHECK(NN_DNN(cudnnSetTensor4dDescriptor(p->x, dnn_format(p), dnn_type(p), n, s->c, s->h,
		s->w)));
	CHECK(NN_DNN(cudnnSetTensor4dDescriptor(p->y, dnn_format(p), dnn_type(p), n, s->k, s->oh,
		s->ow)));
	CHECK(NN_DNN(cudnnSetTensor4dDescriptor(p->yf, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, s->k,
		s->oh, s->ow)));
	p->n = n;
	return 0;
}

/* Makes the descriptors and algorithms fit a call of n images. */
static int choose_for_batch(struct nn_cuda *c, struct conv_plan *p, int n)
{
	CHECK(set_tensors(p, n));
	for (int d = 0; d < DIRS; d++) {
		size_t need = 0;
		p->cur[d] = p->full[d];
		if (n == p->s.n || p->full[d].algo == ALGO_IM2COL)
			continue;   /* ours fits any batch: it goes by chunks */
		CHECK(NN_DNN(cudnnSetConvolutionMathType(p->conv[d], p->full[d].math)));
		if (ws_size(c, p, d, p->full[d].algo, &need) == CUDNN_STATUS_SUCCESS &&
		    need <= p->ws_dnn) {
			p->cur[d].ws = need;
			continue;
		}
		CHECK(choose(c, p, d, 0, p->ws_dnn, &p->cur[d]));
	}
	return apply(p, p->cur);
}

/* As choose_for_batch, once per change of batch; a failure leaves the
 * plan to try again on the next call. */
static int set_batch(struct nn_cuda *c, struct conv_plan *p, int n)
{
	int rc;
	if (n == p->n)
		return 0;
	if (n < 1 || n > p->s.n)
		return VR_EINVAL;
	if ((rc = choose_for_batch(c, p, n)))
		p->n = 0;
	return rc;
}

/* ---- Backward filter by im2col + GEMM ------------------------------------- */

static size_t im2col_bytes(const struct nn_conv_shape *s, int m)
{
	const size_t pn = (size_t)s->oh * s->ow, ck = (size_t)s->c * s->kh * s->kw;
	return sizeof(float) * (size_t)m * pn * (ck + (size_t)s->k);
}

/* dw += the weight gradient of n images, chunk by chunk: im2col and the
 * images side by side into ws, then one GEMM (cuBLAS is column-major:
 * dW^T (ck x k) += col^T (ck x mP) dyt^T (mP x k), the same memory). */
static int im2col_filter(struct nn_cuda *c, const struct conv_plan *p, int n, const float *x,
	const float *dy, float *dw, void *ws)
{
	const struct nn_conv_shape *s = &p->s;
	const struct nn__im2col g = { s->c, s->h, s->w, s->kh, s->kw, s->stride_h, s->stride_w,
		s->pad_h, s->pad_w, s->oh, s->ow };
	const size_t pn = (size_t)s->oh * s->ow, ck = (size_t)s->c * s->kh * s->kw,
		     in = (size_t)s->c * s->h * s->w;
	const float one = 1.0f;
	float *col = ws;
	for (int i0 = 0; i0 < n; i0 += p->im2col_chunk) {
		int m = n - i0 < p->im2col_chunk ? n - i0 : p->im2col_chunk;
		float *dyt = col + (size_t)m * pn * ck;
		CHECK(NN_CU(nn__k_im2col_rows(c->stream, m, g, x + i0 * in, col)));
		CHECK(NN_CU(nn__k_images_side_by_side(c->stream, m, s->k, pn,
			dy + (size_t)i0 * s->k * pn, dyt)));
		CHECK(NN_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)ck, s->k,
			(int)(m * pn), &one, col, (int)ck, dyt, (int)(m * pn), &one, dw, (int)ck)));
	}
	return 0;
}

/* Milliseconds of im2col_filter over the plan's batch, on scratch buffers:
 * the mean of two runs after one warm-up, as cudnnFind times cuDNN's. */
static int im2col_time(struct nn_cuda *c, const struct conv_plan *p, size_t ws_bytes, float *ms)
{
	const struct nn_conv_shape *s = &p->s;
	const size_t xn = (size_t)s->n * s->c * s->h * s->w, yn = (size_t)s->n * s->k * s->oh * s->ow,
		     wn = (size_t)s->k * s->c * s->kh * s->kw;
	float *x = NULL, *dy = NULL, *dw = NULL, elapsed = 0;
	void *ws = NULL;
	cudaEvent_t ev[2] = { NULL, NULL };
	int rc;
	if ((rc = NN_CU(cudaMalloc((void **)&x, sizeof(float) * xn))) ||
	    (rc = NN_CU(cudaMalloc((void **)&dy, sizeof(float) * yn))) ||
	    (rc = NN_CU(cudaMalloc((void **)&dw, sizeof(float) * wn))) ||
	    (rc = NN_CU(cudaMalloc(&ws, ws_bytes))) ||
	    (rc = NN_CU(cudaMemsetAsync(x, 0, sizeof(float) * xn, c->stream))) ||
	    (rc = NN_CU(cudaMemsetAsync(dy, 0, sizeof(float) * yn, c->stream))) ||
	    (rc = NN_CU(cudaMemsetAsync(dw, 0, sizeof(float) * wn, c->stream))) ||
	    (rc = NN_CU(cudaEventCreate(&ev[0]))) || (rc = NN_CU(cudaEventCreate(&ev[1]))) ||
	    (rc = im2col_filter(c, p, s->n, x, dy, dw, ws)) ||
	    (rc = NN_CU(cudaEventRecord(ev[0], c->stream))) ||
	    (rc = im2col_filter(c, p, s->n, x, dy, dw, ws)) ||
	    (rc = im2col_filter(c, p, s->n, x, dy, dw, ws)) ||
	    (rc = NN_CU(cudaEventRecord(ev[1], c->stream))) ||
	    (rc = NN_CU(cudaEventSynchronize(ev[1]))) ||
	    (rc = NN_CU(cudaEventElapsedTime(&elapsed, ev[0], ev[1]))))
		goto leave;
	*ms = elapsed / 2;
leave:
	for (int k = 0; k < 2; k++)
		if (ev[k])
			NN_CU(cudaEventDestroy(ev[k]));
	NN_CU(cudaStreamSynchronize(c->stream));
	NN_CU(cudaFree(ws));
	NN_CU(cudaFree(dw));
	NN_CU(cudaFree(dy));
	NN_CU(cudaFree(x));
	return rc;
}

/* Makes ours the plan's backward filter if the policy (NN_CUDA_FILTER_GEMM)
 * says so or, under cudnnFind, if it beats cuDNN's choice on the plan's
 * batch. It applies to ungrouped convolutions whose one image fits the
 * workspace cap. */
static int consider_im2col(struct nn_cuda *c, struct conv_plan *p)
{
	const struct nn_conv_shape *s = &p->s;
	const size_t one = im2col_bytes(s, 1);
	float ms = -1.0f;
	int rc;
	if (c->filter_gemm == NN__IM2COL_OFF || s->groups != 1 || one > c->ws_cap || p->bf16)
		return 0;
	if (c->filter_gemm != NN__IM2COL_FORCE &&
	    (c->search != NN__SEARCH_FIND || p->full[FILTER].ms < 0))
		return 0;
	size_t chunk = IM2COL_WS_TARGET / one;
	chunk = chunk < 1 ? 1 : chunk > (size_t)s->n ? (size_t)s->n : chunk;
	p->im2col_chunk = (int)chunk;
	const size_t bytes = im2col_bytes(s, (int)chunk);
	if (c->search == NN__SEARCH_FIND && (rc = im2col_time(c, p, bytes, &ms))) {
		if (c->filter_gemm == NN__IM2COL_FORCE)
			return rc;
		cudaGetLastError();   /* no room for the scratch buffers: cuDNN's it is */
		ms = -1.0f;
	}
	if (c->filter_gemm == NN__IM2COL_FORCE || (ms >= 0 && ms < p->full[FILTER].ms))
		p->full[FILTER] = (struct choice){ ALGO_IM2COL, base_math(c, p), bytes, ms };
	else
		p->im2col_chunk = 0;
	return 0;
}

void nn__cuda_conv_plan_free(void *plan)
{
	struct conv_plan *p = plan;
	if (!p)
		return;
	for (int d = 0; d < DIRS; d++)
		if (p->conv[d])
			NN_DNN(cudnnDestroyConvolutionDescriptor(p->conv[d]));
	if (p->w)
		NN_DNN(cudnnDestroyFilterDescriptor(p->w));
	if (p->x)
		NN_DNN(cudnnDestroyTensorDescriptor(p->x));
	if (p->y)
		NN_DNN(cudnnDestroyTensorDescriptor(p->y));
	if (p->yf)
		NN_DNN(cudnnDestroyTensorDescriptor(p->yf));
	if (p->bias)
		NN_DNN(cudnnDestroyTensorDescriptor(p->bias));
	free(p);
}

int nn__cuda_conv_plan(struct nn_backend *b, const struct nn_conv_shape *s, void **plan,
	size_t *ws_bytes)
{
	struct nn_cuda *c = nn__cuda(b);
	struct conv_plan *p = calloc(1, sizeof(*p));
	int on, oc, oh, ow, rc;
	if (!p)
		return VR_ENOMEM;
	p->kind = NN_OP_CONV;
	p->s = *s;
	p->bf16 = c->precision == NN_PRECISION_BF16 && s->groups == 1;
	if ((rc = NN_DNN(cudnnCreateTensorDescriptor(&p->x))) ||
	    (rc = NN_DNN(cudnnCreateTensorDescriptor(&p->y))) ||
	    (rc = NN_DNN(cudnnCreateTensorDescriptor(&p->yf))) ||
	    (rc = NN_DNN(cudnnCreateTensorDescriptor(&p->bias))) ||
	    (rc = NN_DNN(cudnnCreateFilterDescriptor(&p->w))))
		goto fail;
	for (int d = 0; d < DIRS; d++)
		if ((rc = NN_DNN(cudnnCreateConvolutionDescriptor(&p->conv[d]))) ||
		    (rc = NN_DNN(cudnnSetConvolution2dDescriptor(p->conv[d], s->pad_h, s->pad_w,
			     s->stride_h, s->stride_w, 1, 1, CUDNN_CROSS_CORRELATION,
			     CUDNN_DATA_FLOAT))) ||
		    (rc = NN_DNN(cudnnSetConvolutionGroupCount(p->conv[d], s->groups))))
			goto fail;
	if ((rc = NN_DNN(cudnnSetFilter4dDescriptor(p->w, dnn_type(p), dnn_format(p), s->k,
		     s->c / s->groups, s->kh, s->kw))) ||
	    (rc = NN_DNN(cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
		     s->k, 1, 1))) ||
	    (rc = set_tensors(p, s->n)) ||
	    (rc = NN_DNN(cudnnGetConvolution2dForwardOutputDim(p->conv[FWD], p->x, p->w, &on, &oc,
		     &oh, &ow))))
		goto fail;
	if (on != s->n || oc != s->k || oh != s->oh || ow != s->ow) {
		fprintf(stderr, "nn/cuda: cuDNN makes the convolution's output %dx%dx%dx%d, the net "
			"%dx%dx%dx%d\n", on, oc, oh, ow, s->n, s->k, s->oh, s->ow);
		rc = VR_EDEVICE;
		goto fail;
	}
	for (int d = 0; d < DIRS; d++) {
		if ((rc = choose(c, p, d, c->search == NN__SEARCH_FIND, c->ws_cap, &p->full[d])) ||
		    (d == FILTER && (rc = consider_im2col(c, p))))
			goto fail;
		if (p->full[d].ws > p->ws_dnn)
			p->ws_dnn = p->full[d].ws;
		p->cur[d] = p->full[d];
	}
	p->ws_bytes = p->ws_dnn;
	if (p->bf16) {
		/* The copies after cuDNN's part, each 256-byte aligned. */
		const size_t xs = (size_t)s->n * s->c * s->h * s->w, ys = (size_t)s->n * s->k * s->oh *
			s->ow, wn = (size_t)s->k * s->c * s->kh * s->kw;
		p->off_x = align256(p->ws_dnn);
		p->off_w = p->off_x + align256(sizeof(uint16_t) * xs);
		p->off_y = p->off_w + align256(sizeof(uint16_t) * wn);
		p->ws_bytes = p->off_y + align256(sizeof(uint16_t) * ys);
	}
	if ((rc = apply(p, p->cur)))
		goto fail;
	*plan = p;
	*ws_bytes = p->ws_bytes;
	return 0;
fail:
	nn__cuda_conv_plan_free(p);
	return rc;
}

void nn__cuda_conv_algos(const void *plan, char *buf, size_t len)
{
	const struct conv_plan *p = plan;
	size_t ws = 0;
	for (int d = 0; d < DIRS; d++)
		ws = p->cur[d].ws > ws ? p->cur[d].ws : ws;
	snprintf(buf, len, "fwd %s, data %s, filter %s, %.1f MiB%s", algo_name(FWD, p->cur[FWD].algo),
		algo_name(DATA, p->cur[DATA].algo), algo_name(FILTER, p->cur[FILTER].algo),
		ws / 1048576.0, p->bf16 ? ", BF16 NHWC" : "");
}

/* The BF16 copies in ws (conv.c's top comment). */
static uint16_t *shadow(const struct conv_plan *p, void *ws, size_t off)
{
	return (uint16_t *)((char *)ws + off);
}

int nn__cuda_conv_fwd(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y, void *ws)
{
	struct nn_cuda *c = nn__cuda(b);
	struct conv_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	CHECK(set_batch(c, p, n));
	if (p->bf16) {
		uint16_t *xb = shadow(p, ws, p->off_x), *wb = shadow(p, ws, p->off_w),
			 *yb = shadow(p, ws, p->off_y);
		CHECK(NN_CU(nn__k_to_bf16_t(c->stream, n, s->c, s->h * s->w, x, xb)));
		CHECK(NN_CU(nn__k_to_bf16_t(c->stream, s->k, s->c, s->kh * s->kw, w, wb)));
		CHECK(NN_DNN(cudnnConvolutionForward(c->dnn, &one, p->x, xb, p->w, wb, p->conv[FWD],
			(cudnnConvolutionFwdAlgo_t)p->cur[FWD].algo, ws, p->ws_dnn, &zero, p->y, yb)));
		return NN_CU(nn__k_from_bf16_t(c->stream, n, s->k, s->oh * s->ow, yb, bias, 0, y));
	}
	CHECK(NN_DNN(cudnnConvolutionForward(c->dnn, &one, p->x, x, p->w, w, p->conv[FWD],
		(cudnnConvolutionFwdAlgo_t)p->cur[FWD].algo, ws, p->ws_dnn, &zero, p->y, y)));
	if (bias)
		CHECK(NN_DNN(cudnnAddTensor(c->dnn, &one, p->bias, bias, &one, p->y, y)));
	return 0;
}

int nn__cuda_conv_bwd_data(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, const float *w, float *dx, int acc, void *ws)
{
	struct nn_cuda *c = nn__cuda(b);
	struct conv_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	CHECK(set_batch(c, p, n));
	if (p->bf16) {
		uint16_t *dxb = shadow(p, ws, p->off_x), *wb = shadow(p, ws, p->off_w),
			 *dyb = shadow(p, ws, p->off_y);
		CHECK(NN_CU(nn__k_to_bf16_t(c->stream, n, s->k, s->oh * s->ow, dy, dyb)));
		CHECK(NN_CU(nn__k_to_bf16_t(c->stream, s->k, s->c, s->kh * s->kw, w, wb)));
		CHECK(NN_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, wb, p->y, dyb,
			p->conv[DATA], (cudnnConvolutionBwdDataAlgo_t)p->cur[DATA].algo, ws, p->ws_dnn,
			&zero, p->x, dxb)));
		return NN_CU(nn__k_from_bf16_t(c->stream, n, s->c, s->h * s->w, dxb, NULL, acc, dx));
	}
	return NN_DNN(cudnnConvolutionBackwardData(c->dnn, &one, p->w, w, p->y, dy, p->conv[DATA],
		(cudnnConvolutionBwdDataAlgo_t)p->cur[DATA].algo, ws, p->ws_dnn,
		acc ? &one : &zero, p->x, dx));
}

int nn__cuda_conv_bwd_filter(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *x, const float *dy, float *dw, void *ws)
{
	struct nn_cuda *c = nn__cuda(b);
	struct conv_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	CHECK(set_batch(c, p, n));
	if (p->cur[FILTER].algo == ALGO_IM2COL)
		return im2col_filter(c, p, n, x, dy, dw, ws);
	if (p->bf16) {
		uint16_t *xb = shadow(p, ws, p->off_x), *dwb = shadow(p, ws, p->off_w),
			 *dyb = shadow(p, ws, p->off_y);
		CHECK(NN_CU(nn__k_to_bf16_t(c->stream, n, s->c, s->h * s->w, x, xb)));
		CHECK(NN_CU(nn__k_to_bf16_t(c->stream, n, s->k, s->oh * s->ow, dy, dyb)));
		CHECK(NN_DNN(cudnnConvolutionBackwardFilter(c->dnn, &one, p->x, xb, p->y, dyb,
			p->conv[FILTER], (cudnnConvolutionBwdFilterAlgo_t)p->cur[FILTER].algo, ws,
			p->ws_dnn, &zero, p->w, dwb)));
		return NN_CU(nn__k_from_bf16_t(c->stream, s->k, s->c, s->kh * s->kw, dwb, NULL, 1, dw));
	}
	return NN_DNN(cudnnConvolutionBackwardFilter(c->dnn, &one, p->x, x, p->y, dy,
		p->conv[FILTER], (cudnnConvolutionBwdFilterAlgo_t)p->cur[FILTER].algo, ws, p->ws_dnn,
		&one, p->w, dw));
}

int nn__cuda_conv_bwd_bias(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, float *db)
{
	struct nn_cuda *c = nn__cuda(b);
	struct conv_plan *p = plan;
	const float one = 1.0f;
	CHECK(set_batch(c, p, n));
	return NN_DNN(cudnnConvolutionBackwardBias(c->dnn, &one, p->yf, dy, &one, p->bias, db));
}
