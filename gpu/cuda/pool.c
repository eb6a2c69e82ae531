/* Pooling on the GPU: max and average pooling through cuDNN's legacy API
 * (CUDNN_POOLING_MAX_DETERMINISTIC; CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
 * PyTorch's count_include_pad default), adaptive average pooling on our
 * own kernels (pool.cu). A plan holds the pooling and tensor descriptors,
 * re-set when a call's batch differs from the last one's.
 *
 * Max-pool backward: cuDNN routes each output's gradient to the input
 * that equals the window's maximum. With ties (equal values, e.g. the
 * zeros after a ReLU) the element it picks may differ from the CPU's first
 * maximum; where the ties are ReLU zeros the ReLU's backward zeroes that
 * gradient anyway, so a net's gradients agree. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda.h"
#include "err.h"
#include "kernels.h"

struct pool_plan {
	int kind;                  /* NN_OP_POOL, first: cuda.c's plan_free dispatches on it */
	struct nn_pool_shape s;
	cudnnPoolingDescriptor_t pool;   /* NULL for adaptive pooling */
	cudnnTensorDescriptor_t x, y;
	int n;                     /* images x and y describe now */
};

static int set_tensors(struct pool_plan *p, int n)
{
	const struct nn_pool_shape *s = &p->s;
	if (n == p->n)
		return 0;
	if (n < 1 || n > s->n)
		return VR_EINVAL;
	p->n = 0;
	CHECK(NN_DNN(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, s->c,
		s->h, s->w)));
	CHECK(NN_DNN(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, s->c,
		s->oh, s->ow)));
	p->n = n;
	return 0;
}

void nn__cuda_pool_plan_free(void *plan)
{
	struct pool_plan *p = plan;
	if (!p)
		return;
	if (p->pool)
		NN_DNN(cudnnDestroyPoolingDescriptor(p->pool));
	if (p->x)
		NN_DNN(cudnnDestroyTensorDescriptor(p->x));
	if (p->y)
		NN_DNN(cudnnDestroyTensorDescriptor(p->y));
	free(p);
}

int nn__cuda_pool_plan(struct nn_backend *b, const struct nn_pool_shape *s, void **plan)
{
	struct pool_plan *p = calloc(1, sizeof(*p));
	int on, oc, oh, ow, rc;
	if (!p)
		return VR_ENOMEM;
	p->kind = NN_OP_POOL;
	p->s = *s;
	if (s->mode == NN_POOL_ADAPTIVE_AVG) {
		*plan = p;
		return 0;
	}
	if ((rc = NN_DNN(cudnnCreatePoolingDescriptor(&p->pool))) ||
	    (rc = NN_DNN(cudnnCreateTensorDescriptor(&p->x))) ||
	    (rc = NN_DNN(cudnnCreateTensorDescriptor(&p->y))) ||
	    (rc = NN_DNN(cudnnSetPooling2dDescriptor(p->pool, s->mode == NN_POOL_MAX ?
		     CUDNN_POOLING_MAX_DETERMINISTIC : CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING,
		     CUDNN_NOT_PROPAGATE_NAN, s->kh, s->kw, s->pad_h, s->pad_w, s->stride_h,
		     s->stride_w))) ||
	    (rc = set_tensors(p, s->n)) ||
	    (rc = NN_DNN(cudnnGetPooling2dForwardOutputDim(p->pool, p->x, &on, &oc, &oh, &ow))))
		goto fail;
	if (on != s->n || oc != s->c || oh != s->oh || ow != s->ow) {
		fprintf(stderr, "nn/cuda: cuDNN makes the pool's output %dx%dx%dx%d, the net "
			"%dx%dx%dx%d\n", on, oc, oh, ow, s->n, s->c, s->oh, s->ow);
		rc = VR_EDEVICE;
		goto fail;
	}
	*plan = p;
	return 0;
fail:
	nn__cuda_pool_plan_free(p);
	return rc;
}

int nn__cuda_pool_fwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, float *y)
{
	struct nn_cuda *c = nn__cuda(b);
	struct pool_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	if (!p->pool)
		return NN_CU(nn__k_adaptive_avg_fwd(c->stream, &p->s, n, x, y));
	CHECK(set_tensors(p, n));
	return NN_DNN(cudnnPoolingForward(c->dnn, p->pool, &one, p->x, x, &zero, p->y, y));
}

int nn__cuda_pool_bwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc)
{
	struct nn_cuda *c = nn__cuda(b);
	struct pool_plan *p = plan;
	const float one = 1.0f, zero = 0.0f;
	if (!p->pool)
		return NN_CU(nn__k_adaptive_avg_bwd(c->stream, &p->s, n, dy, dx, acc));
	CHECK(set_tensors(p, n));
	return NN_DNN(cudnnPoolingBackward(c->dnn, p->pool, &one, p->y, y, p->y, dy, p->x, x,
		acc ? &one : &zero, p->x, dx));
}
