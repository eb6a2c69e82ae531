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
 * The plan holds the vector of ones for the bias gradient. */
#include <stdlib.h>

#include "cuda.h"
#include "err.h"
#include "kernels.h"

struct fc_plan {
	int kind;                  /* NN_OP_FC, first: cuda.c's plan_free dispatches on it */
	struct nn_fc_shape s;
	float *ones;               /* s.n ones */
};

void nn__cuda_fc_plan_free(void *plan)
{
	struct fc_plan *p = plan;
	if (!p)
		return;
	if (p->ones)
		NN_CU(cudaFree(p->ones));
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
	    (rc = NN_CU(nn__k_fill(nn__cuda(b)->stream, s->n, 1.0f, p->ones)))) {
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
	const float one = 1.0f, zero = 0.0f;
	CHECK(NN_BLAS(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, s->out, n, s->in, &one, w,
		s->in, x, s->in, &zero, y, s->out)));
	if (bias)
		CHECK(NN_CU(nn__k_add_bias_rows(c->stream, n, s->out, bias, y)));
	return 0;
}

int nn__cuda_fc_bwd_data(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *dy, const float *w, float *dx, int acc)
{
	struct nn_cuda *c = nn__cuda(b);
	const float one = 1.0f, zero = 0.0f;
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
	CHECK(NN_BLAS(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, s->in, s->out, n, &one, x,
		s->in, dy, s->out, &one, dw, s->in)));
	if (db)
		CHECK(NN_BLAS(cublasSgemv(c->blas, CUBLAS_OP_N, s->out, n, &one, dy, s->out, p->ones, 1,
			&one, db, 1)));
	return 0;
}
