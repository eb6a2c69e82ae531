/* The CUDA backend's insides, shared by its host files (cuda.c: handles,
 * memory, the ops table; conv.c, pool.c, fc.c: the layers on cuDNN and
 * cuBLAS). Not part of any contract outside gpu/cuda/ (the parity check
 * in tests/gpu/cuda/ reads nn__cuda_conv_algos to name the algorithms it
 * measured).
 *
 * Every CUDA, cuDNN and cuBLAS call goes through NN_CU, NN_DNN or NN_BLAS,
 * which turn its status into 0 or VR_EDEVICE and, on failure, print
 * "file:line: call: error" to stderr; CHECK returns such a code from the
 * calling function. Nothing here exits. */
#ifndef NN_CUDA_H
#define NN_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "backend.h"

/* How convolution algorithms are chosen (NN_CUDA_CONV_SEARCH). */
enum nn__conv_search {
	NN__SEARCH_FIND = 1,       /* time every algorithm once per shape (cudnnFind*) */
	NN__SEARCH_HEURISTIC,      /* cuDNN's heuristic ranking (cudnnGet*_v7) */
};

/* Which convolution algorithms may run (NN_CUDA_CONV_ALGOS). */
enum nn__conv_algos {
	NN__ALGOS_ALL = 1,
	NN__ALGOS_GEMM,            /* no FFT or Winograd: plain sums of products only */
};

/* When backward filter may use our im2col + GEMM (NN_CUDA_FILTER_GEMM). */
enum nn__im2col_policy {
	NN__IM2COL_AUTO = 1,       /* when cudnnFind's timing says it is faster */
	NN__IM2COL_FORCE,          /* wherever it applies (checks) */
	NN__IM2COL_OFF,
};

/* The uint8 input path's staging: two chunks, so the host fills one while
 * the other is copied. */
struct nn__staging {
	unsigned char *host[2];    /* pinned */
	unsigned char *dev[2];
	cudaEvent_t copied[2];     /* recorded after each chunk's copy */
	size_t bytes;              /* of each buffer */
};

struct nn_cuda {
	cudaStream_t stream;       /* every op of this backend runs on it */
	cudnnHandle_t dnn;
	cublasHandle_t blas;
	int precision;             /* enum nn_precision (nn.h); plans keep the one they were made in */
	int tf32;                  /* precision == NN_PRECISION_TF32: TF32 convolutions and GEMMs */
	int bf16_ok;               /* the device has BF16 tensor cores (sm_80 and later) */
	size_t device_base;        /* b->device's length before its precision word */
	int search;                /* enum nn__conv_search */
	int algos;                 /* enum nn__conv_algos */
	int filter_gemm;           /* enum nn__im2col_policy */
	size_t ws_cap;             /* most workspace one convolution may ask for */
	struct nn__staging in;
};

static inline struct nn_cuda *nn__cuda(struct nn_backend *b)
{
	return (struct nn_cuda *)b->priv;
}

/* Status to rc, with a line on stderr on failure. */
int nn__cu_status(cudaError_t e, const char *file, int line, const char *call);
int nn__dnn_status(cudnnStatus_t s, const char *file, int line, const char *call);
int nn__blas_status(cublasStatus_t s, const char *file, int line, const char *call);

#define NN_CU(call) nn__cu_status((call), __FILE__, __LINE__, #call)
#define NN_DNN(call) nn__dnn_status((call), __FILE__, __LINE__, #call)
#define NN_BLAS(call) nn__blas_status((call), __FILE__, __LINE__, #call)
/* Returns from the calling function when rc_expr is not 0. */
#define CHECK(rc_expr) do { int rc__ = (rc_expr); if (rc__) return rc__; } while (0)

/* The layers' plans and ops (conv.c, pool.c, fc.c). plan_create
 * functions fill *plan and *ws_bytes; plan_free functions take NULL. */
int nn__cuda_conv_plan(struct nn_backend *b, const struct nn_conv_shape *s, void **plan,
	size_t *ws_bytes);
void nn__cuda_conv_plan_free(void *plan);
int nn__cuda_conv_fwd(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y, void *ws);
int nn__cuda_conv_bwd_data(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, const float *w, float *dx, int acc, void *ws);
int nn__cuda_conv_bwd_filter(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *x, const float *dy, float *dw, void *ws);
int nn__cuda_conv_bwd_bias(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, float *db);
/* Names the algorithms a conv plan runs at its current batch, e.g.
 * "fwd IMPLICIT_PRECOMP_GEMM, data ALGO_1, filter ALGO_1, 12 MiB". */
void nn__cuda_conv_algos(const void *plan, char *buf, size_t len);

int nn__cuda_pool_plan(struct nn_backend *b, const struct nn_pool_shape *s, void **plan);
void nn__cuda_pool_plan_free(void *plan);
int nn__cuda_pool_fwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, float *y);
int nn__cuda_pool_bwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc);

int nn__cuda_fc_plan(struct nn_backend *b, const struct nn_fc_shape *s, void **plan);
void nn__cuda_fc_plan_free(void *plan);
int nn__cuda_fc_fwd(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y);
int nn__cuda_fc_bwd_data(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *dy, const float *w, float *dx, int acc);
int nn__cuda_fc_bwd_weights(struct nn_backend *b, void *plan, const struct nn_fc_shape *s,
	int n, const float *x, const float *dy, float *dw, float *db);

#endif
