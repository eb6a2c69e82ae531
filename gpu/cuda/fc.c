/* Fully connected layers on the GPU through cuBLAS (PyTorch's Linear,
 * weights [out][in], row-major like every tensor here).
 *
 * cuBLAS is column-major, and a row-major r x c matrix is the column-major
 * c x r matrix of the same memory, its transpose. So with X = x [n][in],
 * W = w [out][in], Y = y [n][out] as the column-major X^T (in x n),
 * W^T (in x out), Y^T (out x n):
 *   y = x W^T            is  Y^T = op_T(W^T) X^T       gemm(T, N, out, n, in)
 *   dx = dy W            is  dX^T = W^T dY^T           gemm(N, N, in, n, out)
 *   dW += dy^T x         is  dW^T += X^T op_T(dY^T)    gemm(N, T, in, out, n)
 *   db += column sums    is  db += dY^T ones(n)        gemv(N, out, n)
 * The plan holds the vector of ones for the bias gradient.
 *
 * A plan made in BF16 mode (cuda.c) also holds BF16 copies of x, w and
 * dy, made from the net's FP32 tensors just before each GEMM (bf16.cu),
 * which cublasGemmEx multiplies with FP32 accumulation into the FP32
 * output, so beta = 1 accumulates into dx and dw as in FP32. The bias
 * and its gradient stay FP32. */
#include <stdlib.h>

#include "cuda.h"
#include "err.h"
#include "kernels.h"

struct fc_plan {
	int kind;                  /* NN_OP_FC, first: cuda.c's plan_free dispatches on it */
	struct nn_fc_shape s;
	float *ones;               /* s.n ones */
	uint16_t *xb, *wb, *dyb;   /* bf16 only: s.n x in, out x in, s.n x out */
};

/* C = alpha op(A) op(B) + beta C, A and B BF16, C FP32, FP32 compute. */
static int gemm_bf16(struct nn_cuda *c, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
	int k, const uint16_t *a, int lda, const uint16_t *b, int ldb, const float *beta, float *cm,
	int ldc)
{
	const float one = 1.0f;
	return NN_BLAS(cublasGemmEx(c->blas, ta, tb, m, n, k, &one, a, CUDA_R_16BF, lda, b,
		CUDA_R_16BF, ldb, beta, cm, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void nn__cuda_fc_plan_free(void *plan)
{
	struct fc_plan *p = plan;
	if (!p)
		return;
	if (p->ones)
		NN_CU(cudaFree(p->ones));
	if (p->xb)
		NN_CU(cudaFree(p->xb));
	if (p->wb)
		NN_CU(cudaFree(p->wb));
	if (p->dyb)
		NN_CU(cudaFree(p->dyb));
	free(p);
}

int nn__cuda_fc_plan(struct nn_backend *b, const struct nn_fc_shape *s, void **plan)
{
	struct fc_plan *p = calloc(1, sizeof(*p));
	int rc;
	if (!p)
		return VR_ENOMEM;
	p->kind = NN_OP_FC;
	p->s = *s;
	if ((rc = NN_CU(cudaMalloc((void **)&p->ones, sizeof(float) * s->n))) ||
	    (rc = NN_CU(nn__k_fill(nn__cuda(b)->stream, s->n, 1.0f, p->ones))) ||
	    (nn__cuda(b)->precision == NN_PRECISION_BF16 &&
		    ((rc = NN_CU(cudaMalloc((void **)&p->xb, sizeof(uint16_t) * s->n * s->in))) ||
		     (rc = NN_CU(cudaMalloc((void **)&p->wb, sizeof(uint16_t) * s->out * s->in))) ||
		     (rc = NN_CU(cudaMalloc((void **)&p->dyb, sizeof(uint16_t) * s->n * s->out)))))) {
		nn__cuda_fc_plan_free(p);
		return rc;
	}
	*plan = p;
	return 0;
}

int nn__cuda_fc_fwd(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y)
{
	struct nn_cuda *c = nn__cuda(b);
	const struct fc_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	if (n > p->s.n)
		return VR_EINVAL;
	if (p->xb) {
		CHECK(NN_CU(nn__k_to_bf16(c->stream, (size_t)n * s->in, x, p->xb)));
		CHECK(NN_CU(nn__k_to_bf16(c->stream, (size_t)s->out * s->in, w, p->wb)));
		CHECK(gemm_bf16(c, CUBLAS_OP_T, CUBLAS_OP_N, s->out, n, s->in, p->wb, s->in, p->xb,
			s->in, &zero, y, s->out));
	} else {
		CHECK(NN_BLAS(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, s->out, n, s->in, &one, w,
			s->in, x, s->in, &zero, y, s->out)));
	}
	if (bias)
		CHECK(NN_CU(nn__k_add_bias_rows(c->stream, n, s->out, bias, y)));
	return 0;
}

int nn__cuda_fc_bwd_data(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *dy, const float *w, float *dx, int acc)
{
	struct nn_cuda *c = nn__cuda(b);
	const struct fc_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	if (n > p->s.n)
		return VR_EINVAL;
	if (p->xb) {
		CHECK(NN_CU(nn__k_to_bf16(c->stream, (size_t)n * s->out, dy, p->dyb)));
		CHECK(NN_CU(nn__k_to_bf16(c->stream, (size_t)s->out * s->in, w, p->wb)));
		return gemm_bf16(c, CUBLAS_OP_N, CUBLAS_OP_N, s->in, n, s->out, p->wb, s->in, p->dyb,
			s->out, acc ? &one : &zero, dx, s->in);
	}
	return NN_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, s->in, n, s->out, &one, w,
		s->in, dy, s->out, acc ? &one : &zero, dx, s->in));
}

int nn__cuda_fc_bwd_weights(struct nn_backend *b, void *plan, const struct nn_fc_shape *s,
	int n, const float *x, const float *dy, float *dw, float *db)
{
	struct nn_cuda *c = nn__cuda(b);
	const struct fc_plan *p = plan;
	const float one = 1.0f;
	if (n > p->s.n)
		return VR_EINVAL;
	if (p->xb) {
		CHECK(NN_CU(nn__k_to_bf16(c->stream, (size_t)n * s->in, x, p->xb)));
		CHECK(NN_CU(nn__k_to_bf16(c->stream, (size_t)n * s->out, dy, p->dyb)));
		CHECK(gemm_bf16(c, CUBLAS_OP_N, CUBLAS_OP_T, s->in, s->out, n, p->xb, s->in, p->dyb,
			s->out, &one, dw, s->in));
	} else {
		CHECK(NN_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, s->in, s->out, n, &one, x,
			s->in, dy, s->out, &one, dw, s->in)));
	}
	if (db)
		CHECK(NN_BLAS(cublasSgemv(c->blas, CUBLAS_OP_N, s->out, n, &one, dy, s->out, p->ones, 1,
			&one, db, 1)));
	return 0;
}
