/* bench_nn: the network library's speed on the CPU backend.
 *
 *   bench_nn [-B cpu] [-m fp32] [-a alexnet,cnnf] [-b 32] [-i 5] [-S 224] [-p] [-g]
 *            [-L layer -W width -K outputs]
 *
 * -B is the backend (nn_backend_open's names: cpu-ref = cpu, the
 * reference kernels; onednn; auto), -m its precision (fp32, or bf16 where
 * the backend runs it: nn_backend_set_precision).
 * For each architecture: inference images/s (evaluation forward) and
 * training images/s (zero_grad, training forward, backward, Adam step), the
 * median of -i timed runs after one warm-up, with the FLOPs each needs and
 * the rate that makes (on oneDNN, with the reorders a training step
 * ran: layout conversions of tensors, weights and their gradients).
 * -g first measures OpenBLAS's sgemm on conv-like
 * shapes (the ceiling every conv and fc layer runs against); -p times each
 * layer's kernels on its own (forward, backward data, backward filter), to
 * show where a step goes. -L cuts the net at that layer and -W puts a
 * trained head of that width on the cut (nn_net_opts' input_layer and
 * head_width, -K outputs): DVBPR's step over cached trunk activations,
 * as rankd's --trunk-layer block_10 --head-width 128 --visual-dims 16
 * trains it (-a mobilenet_v2 -S 96 -b 2048: 1,024 triples a step).
 * OpenBLAS threads: OPENBLAS_NUM_THREADS (default: all cores). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu.h"
#include "net_priv.h"
#include "bench.h"
#include "nn.h"

static void fill(float *a, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		a[i] = 2.0f * nn_uniform01(seed, i) - 1.0f;
}

/* FLOPs of one image: forward, and a training step's backward (the first
 * layer computes no input gradient). */
static void count_flops(const nn_net *net, double *fwd, double *bwd)
{
	*fwd = *bwd = 0;
	for (int l = 0; l < net->nlayers; l++) {
		const struct nn__layer *ly = &net->layers[l];
		double f = 0;
		if (ly->kind == NN__CONV) {
			const struct nn_conv_shape *s = &ly->u.conv;
			f = 2.0 * s->k * (s->c / s->groups) * s->kh * s->kw * s->oh * s->ow;
		} else if (ly->kind == NN__FC) {
			f = 2.0 * ly->u.fc.in * ly->u.fc.out;
		}
		*fwd += f;
		*bwd += f * (ly->in[0] == 0 ? 1 : 2);
	}
}

static double sgemm_gflops(int m, int n, int k, int reps)
{
	float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
	float *c = malloc(sizeof(float) * m * n);
	double t[16];
	fill(a, (size_t)m * k, 1);
	fill(b, (size_t)k * n, 2);
	nn_sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
	for (int r = 0; r < reps; r++) {
		double t0 = bench_now();
		nn_sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
		t[r] = bench_now() - t0;
	}
	free(a);
	free(b);
	free(c);
	return 2.0 * m * n * k / bench_median(t, reps) / 1e9;
}

/* Times each conv, pool, LRN and fc layer's CPU kernels alone. */
static void profile(nn_net *net, int n)
{
	float *x = NULL, *y = NULL, *w = NULL, *ws = NULL;
	size_t big = 0, wbig = 0;
	for (int l = 0; l < net->nlayers; l++) {
		const struct nn__tensor *in = &net->tensors[net->layers[l].in[0]];
		const struct nn__tensor *out = &net->tensors[net->layers[l].out];
		big = in->size > big ? in->size : big;
		big = out->size > big ? out->size : big;
		if (net->layers[l].w >= 0 && net->params[net->layers[l].w].numel > wbig)
			wbig = net->params[net->layers[l].w].numel;
	}
	x = malloc(sizeof(float) * big * n);
	y = malloc(sizeof(float) * big * n);
	float *dx = malloc(sizeof(float) * big * n);
	w = malloc(sizeof(float) * wbig);
	float *dw = calloc(wbig, sizeof(float));
	ws = malloc(net->ws_bytes + 64);
	/* Touch everything once: a fresh page costs ~9 us on first touch. */
	fill(x, big * n, 3);
	fill(y, big * n, 4);
	fill(dx, big * n, 5);
	fill(w, wbig, 6);
	memset(ws, 0, net->ws_bytes);
	printf("  %-14s %10s %10s %10s   (ms, batch %d, best of 2)\n", "layer", "forward",
		"bwd data", "bwd filter", n);
	double total[3] = { 0 };
	for (int l = 0; l < net->nlayers; l++) {
		const struct nn__layer *ly = &net->layers[l];
		double t[3] = { 1e9, 1e9, 1e9 }, t0;
		for (int rep = 0; rep < 2; rep++) {
		size_t count = (size_t)n * net->tensors[ly->out].size;
		double u[3] = { 0 };
		switch (ly->kind) {
		case NN__CONV:
			t0 = bench_now();
			nn_cpu_conv_fwd(&ly->u.conv, n, x, w, w, y, ws);
			u[0] = bench_now() - t0;
			t0 = bench_now();
			if (ly->in[0] != 0)
				nn_cpu_conv_bwd_data(&ly->u.conv, n, y, w, dx, 0, ws);
			u[1] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_conv_bwd_filter(&ly->u.conv, n, x, y, dw, ws);
			nn_cpu_conv_bwd_bias(&ly->u.conv, n, y, dw);
			u[2] = bench_now() - t0;
			break;
		case NN__FC:
			t0 = bench_now();
			nn_cpu_fc_fwd(n, ly->u.fc.in, ly->u.fc.out, x, w, w, y);
			u[0] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_fc_bwd_data(n, ly->u.fc.in, ly->u.fc.out, y, w, dx, 0);
			u[1] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_fc_bwd_weights(n, ly->u.fc.in, ly->u.fc.out, x, y, dw, dw);
			u[2] = bench_now() - t0;
			break;
		case NN__POOL:
			t0 = bench_now();
			nn_cpu_pool_fwd(&ly->u.pool, n, x, y);
			u[0] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_pool_bwd(&ly->u.pool, n, x, y, dx, 0);
			u[1] = bench_now() - t0;
			break;
		case NN__LRN:
			t0 = bench_now();
			nn_cpu_lrn_fwd(&ly->u.lrn, n, x, y);
			u[0] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_lrn_bwd(&ly->u.lrn, n, x, y, y, dx, 0, ws);
			u[1] = bench_now() - t0;
			break;
		case NN__ACT:
			t0 = bench_now();
			nn_cpu_act_fwd(ly->u.act, count, x, x);
			u[0] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_act_bwd(ly->u.act, count, x, y, y, 0);
			u[1] = bench_now() - t0;
			break;
		case NN__DROPOUT:
			t0 = bench_now();
			nn_cpu_dropout_fwd(count, ly->u.p, 1, x, y);
			u[0] = bench_now() - t0;
			t0 = bench_now();
			nn_cpu_dropout_bwd(count, ly->u.p, 1, y, dx, 0);
			u[1] = bench_now() - t0;
			break;
		default:
			break;
		}
		for (int i = 0; i < 3; i++)
			t[i] = u[i] < t[i] ? u[i] : t[i];
		}
		if (ly->kind != NN__CONV && ly->kind != NN__FC && ly->kind != NN__POOL &&
		    ly->kind != NN__LRN && ly->kind != NN__ACT && ly->kind != NN__DROPOUT)
			continue;
		printf("  %-14s %10.1f %10.1f %10.1f\n", ly->name, t[0] * 1e3, t[1] * 1e3, t[2] * 1e3);
		for (int i = 0; i < 3; i++)
			total[i] += t[i];
	}
	printf("  %-14s %10.1f %10.1f %10.1f\n", "total", total[0] * 1e3, total[1] * 1e3,
		total[2] * 1e3);
	free(x); free(y); free(dx); free(w); free(dw); free(ws);
}

/* The cut and head of -L, -W, -K (NULL layer: the whole net). */
struct cut {
	const char *layer;
	int width, outputs;
};

static int bench(nn_backend *b, const char *arch, int size, int batch, int iters, int prof,
	const struct cut *cut)
{
	nn_net *net;
	nn_optim *opt;
	char err[256];
	struct nn_net_opts o = { .input_size = size, .max_batch = batch, .input_layer = cut->layer,
		.head_width = cut->width, .num_outputs = cut->outputs };
	double t[64], fwd_flops, bwd_flops;
	int rc = nn_net_create(b, arch, &o, &net, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench_nn: %s: %s\n", arch, err);
		return rc;
	}
	if ((rc = nn_net_init(net, 1)) ||
	    (rc = nn_optim_create(net, &(struct nn_optim_opts){ .kind = NN_OPTIM_ADAM,
		    .lr = 1e-4f, .weight_decay = 1e-4f }, &opt))) {
		nn_net_destroy(net);
		return rc;
	}
	count_flops(net, &fwd_flops, &bwd_flops);
	size_t in = (size_t)batch * nn_net_input_count(net);
	size_t out = (size_t)batch * nn_net_output_size(net);
	float *x = malloc(sizeof(float) * in), *y = malloc(sizeof(float) * out);
	float *dy = malloc(sizeof(float) * out);
	fill(x, in, 7);
	fill(dy, out, 8);
	for (size_t i = 0; i < out; i++)
		dy[i] *= 1e-3f;
	/* Inference, on an inference-only net (featured's; fused layers where
	 * the backend fuses) with the same parameters. */
	nn_net *inet = NULL;
	o.inference_only = 1;
	if ((rc = nn_net_create(b, arch, &o, &inet, err, sizeof(err))) ||
	    (rc = nn_net_params_copy(inet, net, NULL))) {
		fprintf(stderr, "bench_nn: %s (inference): %s\n", arch, inet ? nn_net_errmsg(inet) : err);
		nn_net_destroy(inet);
		inet = NULL;
	}
	for (int r = 0; r <= iters && !rc; r++) {
		double t0 = bench_now();
		rc = nn_net_forward(inet, x, batch, 0, y);
		if (r)
			t[r - 1] = bench_now() - t0;
	}
	double inf = bench_median(t, iters);
	/* Training steps. */
	uint64_t reorders = 0;
#ifdef NN_HAVE_ONEDNN
	reorders = nn__onednn_reorders(b);
#endif
	for (int r = 0; r <= iters && !rc; r++) {
		double t0 = bench_now();
		rc = nn_net_zero_grad(net);
		rc = rc ? rc : nn_net_forward(net, x, batch, 1, y);
		rc = rc ? rc : nn_net_backward(net, dy, NULL);
		rc = rc ? rc : nn_optim_step(opt);
		if (r)
			t[r - 1] = bench_now() - t0;
	}
	double tr = bench_median(t, iters);
#ifdef NN_HAVE_ONEDNN
	reorders = nn__onednn_reorders(b) - reorders;
#endif
	if (rc) {
		fprintf(stderr, "bench_nn: %s: %s\n", arch, nn_net_errmsg(net));
	} else {
		printf("%-8s %4d  batch %4d  inference %7.1f img/s (%6.1f GFLOP/s)  "
			"train step %7.1f img/s (%6.1f GFLOP/s)  [%.2f + %.2f GFLOP/img]\n",
			arch, net->input_size, batch, batch / inf, batch * fwd_flops / inf / 1e9,
			batch / tr, batch * (fwd_flops + bwd_flops) / tr / 1e9, fwd_flops / 1e9,
			bwd_flops / 1e9);
		if (reorders)
			printf("  oneDNN reorders a training step: %llu\n",
				(unsigned long long)(reorders / (iters + 1)));
		if (prof)
			profile(net, batch);
	}
	fflush(stdout);
	free(x); free(y); free(dy);
	nn_net_destroy(inet);
	nn_optim_destroy(opt);
	nn_net_destroy(net);
	return rc;
}

int main(int argc, char **argv)
{
	const char *archs = "alexnet,cnnf", *backend = "cpu", *precision = "fp32";
	int batch = 32, iters = 5, size = 0, prof = 0, gemm = 0, c;
	struct cut cut = { NULL, 0, 0 };
	nn_backend *b;
	while ((c = getopt(argc, argv, "B:m:a:b:i:S:pgL:W:K:")) != -1) {
		switch (c) {
		case 'B': backend = optarg; break;
		case 'm': precision = optarg; break;
		case 'a': archs = optarg; break;
		case 'b': batch = atoi(optarg); break;
		case 'i': iters = atoi(optarg); break;
		case 'S': size = atoi(optarg); break;
		case 'p': prof = 1; break;
		case 'g': gemm = 1; break;
		case 'L': cut.layer = optarg; break;
		case 'W': cut.width = atoi(optarg); break;
		case 'K': cut.outputs = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench_nn [-B cpu] [-m fp32] [-a alexnet,cnnf] [-b 32] [-i 5] [-S size] [-p] [-g]"
				" [-L layer -W width -K outputs]\n");
			return 2;
		}
	}
	if (iters < 1 || iters > 64 || batch < 1)
		return 2;
	char why[256];
	if (nn_backend_open_err(backend, &b, why, sizeof(why))) {
		fprintf(stderr, "bench_nn: %s\n", why);
		return 1;
	}
	int prec = 0;
	if (nn_precision_parse(precision, &prec) || nn_backend_set_precision(b, prec)) {
		fprintf(stderr, "bench_nn: the %s backend (%s) cannot run -m %s\n", nn_backend_name(b),
			nn_backend_device(b), precision);
		nn_backend_close(b);
		return 1;
	}
	printf("backend %s: %s\n", nn_backend_name(b), nn_backend_device(b));
	if (gemm) {
		/* AlexNet's conv2 (2 images per GEMM), conv3-5 (7 images), fc6 at batch 32. */
		static const int shapes[][3] = { { 192, 1458, 1600 }, { 384, 1183, 1728 },
			{ 256, 1183, 3456 }, { 32, 4096, 9216 }, { 1024, 1024, 1024 } };
		for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
			printf("sgemm %4d x %4d x %4d: %6.1f GFLOP/s\n", shapes[i][0], shapes[i][1],
				shapes[i][2], sgemm_gflops(shapes[i][0], shapes[i][1], shapes[i][2], 7));
	}
	char *list = strdup(archs), *save = NULL;
	int rc = 0;
	for (char *a = strtok_r(list, ",", &save); a && !rc; a = strtok_r(NULL, ",", &save))
		rc = bench(b, a, size, batch, iters, prof, &cut);
	free(list);
	nn_backend_close(b);
	return rc ? 1 : 0;
}
