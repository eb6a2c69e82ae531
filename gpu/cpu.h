/* The CPU kernels: flat functions over host float pointers with explicit
 * shapes, one module per layer kind (conv.c, pool.c, act.c, fc.c,
 * dropout.c, lrn.c, bn.c, pad.c, optim.c; the GEMM in gemm.c). They are the CPU backend's ops
 * (cpu.c wraps them) and the reference every other backend is checked
 * against. Semantics (layouts, accumulation, formulas) are those of the
 * matching op in backend.h. None allocates; none fails once its shape
 * passed the *_check function. */
#ifndef NN_CPU_H
#define NN_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* The CPU backend's ops table (cpu.c): the oneDNN backend (onednn.c) starts
 * from it and replaces the ops it runs itself. */
extern const struct nn_backend_ops nn__cpu_ops;

/* Convolution: im2col + sgemm per group, several images per GEMM when the
 * output is small; depthwise (groups == c == k) by a direct loop; 1x1
 * stride-1 unpadded without im2col. ws: nn_cpu_conv_ws_floats(s) floats. */
size_t nn_cpu_conv_ws_floats(const struct nn_conv_shape *s);
void nn_cpu_conv_fwd(const struct nn_conv_shape *s, int n, const float *x, const float *w,
	const float *bias, float *y, float *ws);
void nn_cpu_conv_bwd_data(const struct nn_conv_shape *s, int n, const float *dy,
	const float *w, float *dx, int acc, float *ws);
void nn_cpu_conv_bwd_filter(const struct nn_conv_shape *s, int n, const float *x,
	const float *dy, float *dw, float *ws);
void nn_cpu_conv_bwd_bias(const struct nn_conv_shape *s, int n, const float *dy, float *db);

void nn_cpu_pool_fwd(const struct nn_pool_shape *s, int n, const float *x, float *y);
void nn_cpu_pool_bwd(const struct nn_pool_shape *s, int n, const float *x, const float *dy,
	float *dx, int acc);

void nn_cpu_act_fwd(int mode, size_t count, const float *x, float *y);
void nn_cpu_act_bwd(int mode, size_t count, const float *y, const float *dy, float *dx, int acc);
void nn_cpu_add(size_t count, const float *a, const float *c, float *y);
void nn_cpu_accumulate(size_t count, const float *src, float *dst, int acc);

void nn_cpu_fc_fwd(int n, int in, int out, const float *x, const float *w, const float *bias,
	float *y);
void nn_cpu_fc_bwd_data(int n, int in, int out, const float *dy, const float *w, float *dx,
	int acc);
void nn_cpu_fc_bwd_weights(int n, int in, int out, const float *x, const float *dy, float *dw,
	float *db);

void nn_cpu_dropout_fwd(size_t count, float p, uint64_t seed, const float *x, float *y);
void nn_cpu_dropout_bwd(size_t count, float p, uint64_t seed, const float *dy, float *dx,
	int acc);

/* LRN forward uses y as scratch (so x != y); backward needs
 * nn_cpu_lrn_ws_floats(s) floats of ws. */
size_t nn_cpu_lrn_ws_floats(const struct nn_lrn_shape *s);
void nn_cpu_lrn_fwd(const struct nn_lrn_shape *s, int n, const float *x, float *y);
void nn_cpu_lrn_bwd(const struct nn_lrn_shape *s, int n, const float *x, const float *y,
	const float *dy, float *dx, int acc, float *ws);

void nn_cpu_bn_fwd(int n, int c, int hw, float eps, const float *x, const float *gamma,
	const float *beta, const float *mean, const float *var, float *y);
void nn_cpu_bn_bwd(int n, int c, int hw, float eps, const float *x, const float *gamma,
	const float *mean, const float *var, const float *dy, float *dx, int acc,
	float *dgamma, float *dbeta);
/* Folds inference batch norm into the convolution before it:
 * w[k][...] *= gamma_k / sqrt(var_k + eps), bias_k = (bias_k - mean_k) *
 * gamma_k / sqrt(var_k + eps) + beta_k. bias (k floats) must exist; a conv
 * without one starts from zeros. per_k: floats of w per output channel. */
void nn_bn_fold(int k, size_t per_k, float eps, float *w, float *bias, const float *gamma,
	const float *beta, const float *mean, const float *var);

/* Zero padding (x != y) and its backward, the crop of dy (pad.c). */
void nn_cpu_pad_fwd(const struct nn_pad_shape *s, int n, const float *x, float *y);
void nn_cpu_pad_bwd(const struct nn_pad_shape *s, int n, const float *dy, float *dx, int acc);

/* Row-wise L2 normalisation of n rows of d floats, y = x / sqrt(|x|² +
 * eps) (x != y), and its backward from x and dy (l2norm.c). */
void nn_cpu_l2norm_fwd(int n, int d, float eps, const float *x, float *y);
void nn_cpu_l2norm_bwd(int n, int d, float eps, const float *x, const float *dy, float *dx,
	int acc);

void nn_cpu_sgd_step(size_t count, float *w, const float *g, float *m,
	const struct nn_sgd_params *p);
void nn_cpu_adam_step(size_t count, float *w, const float *g, float *m, float *v,
	const struct nn_adam_params *p);

/* C[m][n] = alpha A B + beta C, row-major, through OpenBLAS's cblas_sgemm,
 * or a plain blocked loop when the library is built without BLAS
 * (NN_NO_BLAS: the GPU machines have no OpenBLAS). */
void nn_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
	int lda, const float *b, int ldb, float beta, float *c, int ldc);

#endif
