/* optim: the parameter updates rankd's trainers share, over flat float
 * arrays (a model's arena, model.h, or a slice of it): the minibatch CPU
 * trainer (trainer.h) and the user half of DVBPR (train_dvbpr.c) step their
 * parameters with the same code.
 *
 *   Adam  torch.optim.Adam: the L2 term λ·p is added to the gradient
 *         (weight decay), m and v are its moving moments, and the step is
 *         lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε) at step t >= 1.
 *   SGD   torch.optim.SGD without momentum: p −= lr · (g + λ·p).
 *
 * Hot loops get AVX-512 and AVX2 clones picked at load time (RK_HOT). */
#ifndef RK_OPTIM_H
#define RK_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define RK_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RK_HOT
#endif

typedef struct rk_adam_opts {
	float beta1, beta2, eps;
} rk_adam_opts;

/* Adam's bias-corrected scales at step t (1, 2, ...) for the learning rate
 * lr: *step = lr / (1 − β1^t) and *bc2s = sqrt(1 − β2^t), the arguments of
 * rk_adam_update. */
void rk_adam_scales(const rk_adam_opts *o, double lr, uint64_t t, float *step, float *bc2s);

/* One Adam step on n parameters p with gradient g and moments m, v (n
 * floats each, zero before the first step), L2 strength lambda. Slices of
 * one array may be stepped by different threads. */
void rk_adam_update(float *restrict p, const float *restrict g, float *restrict m,
		    float *restrict v, size_t n, float lambda, const rk_adam_opts *o, float step,
		    float bc2s);

/* One SGD step on n parameters p with gradient g. */
void rk_sgd_update(float *restrict p, const float *restrict g, size_t n, float lambda, float lr);

#endif
