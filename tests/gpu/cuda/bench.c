/* nn_cuda_bench: images/s of the nets on the CUDA backend, in the form
 * tests/gpu/bench_torch_gpu.py measures PyTorch, so device-check.sh can
 * put them side by side.
 *
 *   nn_cuda_bench [-a alexnet,cnnf] [-b 256] [-i 10] [-m fp32,tf32,bf16] [-p] [-B cuda]
 *
 * For each math mode (-m: fp32, tf32 or bf16, set as NN_CUDA_PRECISION
 * before the backend opens) and architecture, on one training net of batch -b:
 *   infer_u8    nn_net_forward_u8, evaluation: decoded images (HWC bytes in
 *               host memory) to output vectors in host memory
 *   infer_f32   nn_net_forward from normalised host floats (4x the bytes)
 *   train_u8    a DVBPR-style step: zero_grad, training forward from bytes,
 *               backward of a given output gradient, Adam step, sync
 * each the median of -i timed runs after two warm-up runs (the first
 * allocates the input staging). The plans (cudnnFind's timing of every
 * convolution algorithm) are made when the net is created and timed
 * apart. Prints a readable line per figure and one machine-readable line
 *   RESULT ours <arch> <mode> <metric> <images/s>
 * -p adds a per-layer profile of the training step (each layer's forward
 * and backward, synchronised, mean over -i steps) with the convolution
 * algorithms cuDNN was given (tests/gpu/bench_torch_layers.py prints the
 * same for PyTorch).
 * -B cpu runs the same on the CPU backend (to check this program without
 * a GPU). Exit 77 when no CUDA device answers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "cuda.h"
#include "err.h"
#include "net_priv.h"
#include "nn.h"

struct bench {
	nn_net *net;
	nn_optim *opt;
	int n;
	float *x, *dout, *out;
	const uint8_t *const *img;
};

enum { INFER_U8, INFER_F32, TRAIN_U8, METRICS };
static const char *const metric_names[METRICS] = { "infer_u8", "infer_f32", "train_u8" };

static int run_once(struct bench *s, int metric)
{
	nn_net *net = s->net;
	int rc;
	switch (metric) {
	case INFER_U8:
		return nn_net_forward_u8(net, s->img, s->n, 0, s->out);
	case INFER_F32:
		return nn_net_forward(net, s->x, s->n, 0, s->out);
	default:
		if ((rc = nn_net_zero_grad(net)) ||
		    (rc = nn_net_forward_u8(net, s->img, s->n, 1, s->out)) ||
		    (rc = nn_net_backward(net, s->dout, NULL)) || (rc = nn_optim_step(s->opt)))
			return rc;
		return net->b->ops->sync(net->b);
	}
}

/* Median images/s of iters runs after two warm-ups; 0 on failure. */
static double measure(struct bench *s, int metric, int iters)
{
	double *t = malloc(sizeof(double) * iters), rate = 0;
	if (!t)
		return 0;
	for (int i = -2; i < iters; i++) {
		double t0 = bench_now();
		int rc = run_once(s, metric);
		if (rc) {
			fprintf(stderr, "%s: %s: %s\n", metric_names[metric], vr_strerror(rc),
				nn_net_errmsg(s->net));
			goto leave;
		}
		if (i >= 0)
			t[i] = bench_now() - t0;
	}
	rate = s->n / bench_median(t, iters);
leave:
	free(t);
	return rate;
}

/* The training step layer by layer: mean seconds over iters profiled steps. */
static int profile(struct bench *s, const char *arch, const char *mode, int iters)
{
	nn_net *net = s->net;
	double *sec = calloc(2 * (size_t)net->nlayers, sizeof(double)), fwd = 0, bwd = 0;
	int rc = sec ? 0 : VR_ENOMEM;
	nn__net_profile(net, sec);
	for (int i = 0; i < iters && !rc; i++)
		rc = run_once(s, TRAIN_U8);
	nn__net_profile(net, NULL);
	if (rc)
		goto leave;
	printf("  per layer, training step (ms, each layer synchronised):\n");
	for (int l = 0; l < net->nlayers; l++) {
		const struct nn__layer *ly = &net->layers[l];
		const struct nn__tensor *y = &net->tensors[ly->out];
		double f = 1e3 * sec[2 * l] / iters, g = 1e3 * sec[2 * l + 1] / iters;
		char algos[160] = "";
		if (ly->kind == NN__CONV && ly->plan && !strcmp(net->b->name, "cuda"))
			nn__cuda_conv_algos(ly->plan, algos, sizeof algos);
		fwd += f;
		bwd += g;
		printf("    %-14s %4dx%3dx%3d %8.3f %8.3f  %s\n", ly->name, y->c, y->h, y->w, f, g,
			algos);
	}
	printf("    %-26s %8.3f %8.3f\n", "sum", fwd, bwd);
leave:
	free(sec);
	return rc;
}

static int bench_arch(nn_backend *b, const char *mode, const char *arch, int n, int iters,
	int prof)
{
	struct nn_net_opts o = { .max_batch = n };
	struct nn_optim_opts oo = { .kind = NN_OPTIM_ADAM, .lr = 1e-4f, .weight_decay = 1e-4f };
	struct bench s = { .n = n };
	uint8_t **img = NULL;
	char err[256];
	int rc = VR_ENOMEM, size;
	double t0 = bench_now();
	if ((rc = nn_net_create(b, arch, &o, &s.net, err, sizeof(err)))) {
		fprintf(stderr, "%s: %s\n", arch, err);
		return rc;
	}
	double setup = bench_now() - t0;
	size = nn_net_input_size(s.net);
	const size_t per = (size_t)3 * size * size, outs = nn_net_output_size(s.net);
	s.x = malloc(sizeof(float) * per * n);
	s.dout = malloc(sizeof(float) * outs * n);
	s.out = malloc(sizeof(float) * outs * n);
	img = calloc(n, sizeof(*img));
	if (!s.x || !s.dout || !s.out || !img)
		goto leave;
	for (int i = 0; i < n; i++)
		if (!(img[i] = malloc(per)))
			goto leave;
	for (size_t i = 0; i < per * n; i++)
		s.x[i] = 4.0f * nn_uniform01(1, i) - 2.0f;
	for (size_t i = 0; i < outs * n; i++)
		s.dout[i] = 1e-3f * (2.0f * nn_uniform01(2, i) - 1.0f);
	for (int i = 0; i < n; i++)
		for (size_t j = 0; j < per; j++)
			img[i][j] = (uint8_t)(nn_splitmix64(3 + i, j) >> 56);
	s.img = (const uint8_t *const *)img;
	if ((rc = nn_net_init(s.net, 7)) || (rc = nn_optim_create(s.net, &oo, &s.opt)))
		goto leave;
	printf("%s %s: batch %d at %dx%d, plans and memory %.2f s\n", arch, mode, n, size, size,
		setup);
	for (int m = 0; m < METRICS; m++) {
		double rate = measure(&s, m, iters);
		if (rate == 0) {
			rc = VR_EDEVICE;
			goto leave;
		}
		printf("  %-10s %9.1f images/s  (%.2f ms per batch)\n", metric_names[m], rate,
			1e3 * n / rate);
		printf("RESULT ours %s %s %s %.1f\n", arch, mode, metric_names[m], rate);
		fflush(stdout);
	}
	rc = prof ? profile(&s, arch, mode, iters) : 0;
leave:
	for (int i = 0; img && i < n; i++)
		free(img[i]);
	free(img);
	free(s.x);
	free(s.dout);
	free(s.out);
	nn_optim_destroy(s.opt);
	nn_net_destroy(s.net);
	return rc;
}

int main(int argc, char **argv)
{
	char archs[128] = "alexnet,cnnf", modes[64] = "fp32,tf32", why[256];
	const char *backend = "cuda";
	char *save_m = NULL;
	int n = 256, iters = 10, prof = 0, ch, failed = 0;
	while ((ch = getopt(argc, argv, "a:b:i:m:pB:")) != -1) {
		switch (ch) {
		case 'B':
			backend = optarg;
			break;
		case 'a':
			snprintf(archs, sizeof(archs), "%s", optarg);
			break;
		case 'b':
			n = atoi(optarg);
			break;
		case 'i':
			iters = atoi(optarg);
			break;
		case 'm':
			snprintf(modes, sizeof(modes), "%s", optarg);
			break;
		case 'p':
			prof = 1;
			break;
		default:
			fprintf(stderr, "usage: nn_cuda_bench [-a alexnet,cnnf] [-b 256] [-i 10] "
				"[-m fp32,tf32,bf16] [-p] [-B cuda]\n");
			return 2;
		}
	}
	if (n < 1 || iters < 1)
		return 2;
	for (char *m = strtok_r(modes, ",", &save_m); m; m = strtok_r(NULL, ",", &save_m)) {
		nn_backend *b;
		char list[128], *save_a = NULL;
		unsetenv("NN_CUDA_TF32");
		setenv("NN_CUDA_PRECISION", m, 1);
		if (nn_backend_open_err(backend, &b, why, sizeof(why))) {
			printf("nn_cuda_bench: SKIPPED: %s\n", why);
			return 77;
		}
		printf("%s mode on %s\n", m, nn_backend_device(b));
		snprintf(list, sizeof(list), "%s", archs);
		for (char *a = strtok_r(list, ",", &save_a); a; a = strtok_r(NULL, ",", &save_a))
			failed |= bench_arch(b, m, a, n, iters, prof) != 0;
		nn_backend_close(b);
	}
	return failed;
}
