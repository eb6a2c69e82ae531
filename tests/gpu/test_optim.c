/* The optimiser kernels against two references: a hand-written loop in
 * double precision following torch.optim's documented update rules, and
 * the numbers torch.optim itself (PyTorch 1.13, Debian's python3-torch)
 * printed for the same three steps (five parameters, gradients below):
 *   SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
 *   Adam(lr=0.01, weight_decay=0.1)     -- L2: decay added to the gradient
 *   AdamW(lr=0.01, weight_decay=0.1)    -- decoupled: w *= 1 - lr wd
 * Tolerance 1e-6 relative (float rounding over three steps). The step over
 * a whole net's arena is checked too, through nn_optim. */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "harness.h"
#include "nn.h"
#include "nn_test.h"

enum { P = 5, STEPS = 3 };
static const float w0[P] = { 0.5f, -1.25f, 2.0f, -0.125f, 0.75f };
static const float grads[STEPS][P] = {
	{ 0.1f, -0.2f, 0.3f, 0.05f, -1.5f },
	{ -0.4f, 0.25f, 0.1f, 0.2f, 0.5f },
	{ 0.3f, 0.3f, -0.6f, -0.1f, 0.05f },
};

/* torch.optim's results (see the first comment). */
static const double torch_sgd[P] = { 0.5160954, -1.26634455, 1.94861364, -0.165810362,
	1.05177617 };
static const double torch_adam[P] = { 0.492296964, -1.2368778, 1.97797179, -0.146030262,
	0.765534401 };
static const double torch_adamw[P] = { 0.493847758, -1.24318659, 1.97783947, -0.146801293,
	0.764620543 };

static void sgd_ref(double *w, double lr, double mu, double wd)
{
	double m[P] = { 0 };
	for (int t = 0; t < STEPS; t++)
		for (int i = 0; i < P; i++) {
			double g = grads[t][i] + wd * w[i];
			m[i] = t == 0 ? g : mu * m[i] + g;    /* PyTorch's first step: buf = g */
			w[i] -= lr * m[i];
		}
}

static void adam_ref(double *w, double lr, double wd, int decoupled)
{
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	double m[P] = { 0 }, v[P] = { 0 };
	for (int t = 1; t <= STEPS; t++)
		for (int i = 0; i < P; i++) {
			double g = grads[t - 1][i];
			if (decoupled)
				w[i] *= 1 - lr * wd;
			else
				g += wd * w[i];
			m[i] = b1 * m[i] + (1 - b1) * g;
			v[i] = b2 * v[i] + (1 - b2) * g * g;
			double mhat = m[i] / (1 - pow(b1, t)), vhat = v[i] / (1 - pow(b2, t));
			w[i] -= lr * mhat / (sqrt(vhat) + eps);
		}
}

TEST(sgd_momentum)
{
	float w[P], m[P] = { 0 };
	double ref[P];
	struct nn_sgd_params p = { 0.1f, 0.9f, 0.01f };
	memcpy(w, w0, sizeof(w));
	for (int i = 0; i < P; i++)
		ref[i] = w0[i];
	for (int t = 0; t < STEPS; t++)
		nn_cpu_sgd_step(P, w, grads[t], m, &p);
	sgd_ref(ref, 0.1, 0.9, 0.01);
	ASSERT_CLOSE(w, ref, P, 0, 1e-6, "sgd vs hand reference");
	ASSERT_CLOSE(w, torch_sgd, P, 0, 1e-6, "sgd vs torch.optim.SGD");
}

static void check_adam(int decoupled, const double *torch_w)
{
	float w[P], m[P] = { 0 }, v[P] = { 0 };
	double ref[P];
	memcpy(w, w0, sizeof(w));
	for (int i = 0; i < P; i++)
		ref[i] = w0[i];
	for (int t = 1; t <= STEPS; t++) {
		struct nn_adam_params p = { 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, decoupled, t };
		nn_cpu_adam_step(P, w, grads[t - 1], m, v, &p);
	}
	adam_ref(ref, 0.01, 0.1, decoupled);
	ASSERT_CLOSE(w, ref, P, 0, 1e-6, decoupled ? "adamw vs hand reference" :
		"adam vs hand reference");
	ASSERT_CLOSE(w, torch_w, P, 0, 1e-6, decoupled ? "adamw vs torch.optim.AdamW" :
		"adam vs torch.optim.Adam");
}

TEST(adam_l2)
{
	check_adam(0, torch_adam);
}

TEST(adamw_decoupled)
{
	check_adam(1, torch_adamw);
}

/* nn_optim steps every trainable float of a net and nothing else. */
TEST(optim_over_net_arena)
{
	nn_backend *b;
	nn_net *net;
	nn_optim *opt;
	struct nn_net_opts o = { .num_outputs = 3, .input_size = 16, .max_batch = 2 };
	ASSERT_OK(nn_backend_open("cpu", &b));
	ASSERT_OK(nn_net_create(b, "small", &o, &net, NULL, 0));
	ASSERT_OK(nn_net_init(net, 9));
	size_t n = nn_net_param_count(net), nt = nn_net_trainable_count(net);
	float *before = malloc(sizeof(float) * n), *after = malloc(sizeof(float) * n);
	float *g = malloc(sizeof(float) * nt), *x = malloc(sizeof(float) * 2 * 3 * 16 * 16);
	float y[6], dy[6] = { 1, -1, 0.5f, 0.25f, -2, 1 };
	fill_uniform(x, 2 * 3 * 16 * 16, 3, -1, 1);
	ASSERT_OK(nn_optim_create(net, &(struct nn_optim_opts){ .kind = NN_OPTIM_ADAM,
		.lr = 1e-3f }, &opt));
	ASSERT_OK(nn_net_params_get(net, before));
	ASSERT_OK(nn_net_zero_grad(net));
	ASSERT_OK(nn_net_forward(net, x, 2, 0, y));
	ASSERT_OK(nn_net_backward(net, dy, NULL));
	ASSERT_OK(nn_net_grads_get(net, g));
	ASSERT_OK(nn_optim_step(opt));
	ASSERT_EQ_INT(nn_optim_steps(opt), 1);
	ASSERT_OK(nn_net_params_get(net, after));
		/* Adam's first step moves each weight by lr |g| / (|g| + eps), about lr. */
	size_t moved = 0;
	for (size_t i = 0; i < nt; i++) {
		if (g[i] == 0.0f) {
			ASSERT_MSG(after[i] == before[i], "weight %zu moved without a gradient", i);
			continue;
		}
		float want = 1e-3f * fabsf(g[i]) / (fabsf(g[i]) + 1e-8f);
		ASSERT_MSG(fabsf(fabsf(after[i] - before[i]) - want) < 1e-6f,
			"weight %zu moved %g, not %g", i, fabsf(after[i] - before[i]), want);
		moved++;
	}
	/* Dead ReLUs on a batch of two leave many without one. */
	ASSERT_MSG(moved > nt / 10, "only %zu of %zu weights had a gradient", moved, nt);
	nn_optim_destroy(opt);
	free(before); free(after); free(g); free(x);
	nn_net_destroy(net);
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(sgd_momentum),
	T(adam_l2),
	T(adamw_decoupled),
	T(optim_over_net_arena),
	{ 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}
