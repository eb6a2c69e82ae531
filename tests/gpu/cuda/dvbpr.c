/* nn_cuda_dvbpr: featured's side of a DVBPR training step (TrainVisual,
 * featured/train_visual.c) on the CUDA backend, without the daemons, so the
 * tutorial's schedule can be timed on a GPU machine that has none of gRPC,
 * LMDB or libjpeg-turbo; tests/gpu/bench_torch_dvbpr.py does the same steps
 * in PyTorch, and device-check.sh runs both in one call.
 *
 *   nn_cuda_dvbpr [-a alexnet] [-k 100] [-S 224] [-N 9633] [-t 128] [-s 60]
 *                 [-m fp32,tf32,bf16] [-c host,dev] [-E 5000000] [-e 5] [-B cuda]
 *                 [-L steps [-W 20] [-T 0.02]]
 *
 * The data are Wikimedia-shaped: N items' decoded images, uint8 HWC at
 * S x S (N = 9,633 at 224: 1.45 GB), kept (-c) in host memory ("host":
 * each step's images cross the bus, nn_net_forward_u8) or in an image set
 * on the GPU ("dev": only indices do, nn_net_forward_images); -t triples a
 * step (u, i, j drawn uniformly; θ_u and the non-visual margin random, as
 * rankd would send them). One step is exactly featured's: zero_grad, a
 * training forward of the 2t images, the loss and its gradients on the
 * host (nn_bpr_triples), backward, Adam (lr 1e-3, weight decay 1e-4, the
 * tutorial's). Per math mode and cache place, after three warm-up steps:
 *   step_ms    wall time per step over -s steps run back to back, as
 *              featured runs them (the backward and Adam of one step
 *              overlap the host's packing of the next), one sync at the end
 *   fwd_ms, loss_ms, bwd_ms
 *              medians over -s more steps, each synchronised after its
 *              backward and Adam, to split a step's time: forward (upload,
 *              normalise, net, download of φ), host loss, backward + Adam
 * and the tutorial schedule extrapolated from step_ms: -E triples an
 * epoch (the 5 M), -e epochs. The loss must stay finite. Prints
 * readable lines and "RESULT ours dvbpr <arch> <mode>[-dev] <metric> <value>"
 * (a GPU cache adds "-dev"). Before timing, the "dev" path's first forward
 * must equal the "host" path's on the same images, bit for bit.
 * The modes are the backend's precisions (NN_CUDA_PRECISION): fp32, tf32,
 * bf16.
 *
 * -L steps: instead of timing, the loss curve of each mode against the
 * first one's (-m fp32,bf16: BF16 against FP32): every mode trains the
 * same net from the same init on the same triples (first place of -c)
 * for that many steps, and each window of -W steps' mean loss per triple
 * must stay within -T (nats) of the first mode's same window, or the
 * program exits 1. The default 0.02 is our bound for BF16, not yet a
 * measurement: BF16 operands move a step's loss by ~1e-3 (the parity
 * bound on a forward, 1e-1 of phi's largest value, spread over K terms
 * of theta . phi that mostly cancel), and the curves part only as the
 * weights drift apart, which window means over 20 steps smooth out.
 * Prints "RESULT ours dvbpr_curve <arch> <mode> max_window_diff <v>".
 *
 * -B cpu runs the same on the CPU backend (to check this program without
 * a GPU; use small -S, -N, -t, -s; every mode is then FP32). Exit 77 when
 * no CUDA device answers. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "net_priv.h"
#include "bench.h"
#include "nn.h"

#define USERS 2048

struct run {
	nn_net *net;
	nn_optim *opt;
	int t, k;
	size_t items, px;
	const uint8_t *cache;
	const float *theta_users;
	nn_images *set;            /* the images on the backend; NULL: host only */
	const uint8_t **img;
	uint32_t *idx;
	float *theta, *margin, *phi, *dphi, *dtheta, *loss, *g;
	uint64_t draw;
	double loss_first, loss_last;
	double *curve;             /* -L: each step's mean loss per triple; NULL: not kept */
	long curve_at;
};

/* Draws a step's triples: images [i..., j...], θ_u rows and margins. */
static void draw_triples(struct run *r)
{
	for (int q = 0; q < r->t; q++) {
		uint64_t a = nn_splitmix64(99, r->draw++), b = nn_splitmix64(98, r->draw),
			 u = nn_splitmix64(97, r->draw) % USERS;
		size_t i = a % r->items, j = b % r->items;
		if (j == i)
			j = (j + 1) % r->items;
		r->idx[q] = (uint32_t)i;
		r->idx[r->t + q] = (uint32_t)j;
		r->img[q] = r->cache + i * r->px;
		r->img[r->t + q] = r->cache + j * r->px;
		memcpy(r->theta + (size_t)q * r->k, r->theta_users + u * r->k, sizeof(float) * r->k);
		r->margin[q] = 2.0f * nn_uniform01(96, r->draw) - 1.0f;
	}
}

/* One step; times[3] (may be NULL) gets forward, loss and backward+Adam
 * seconds, the last synchronised. */
static int step(struct run *r, double *times)
{
	double t0 = bench_now(), t1, t2;
	int rc;
	draw_triples(r);
	if ((rc = nn_net_zero_grad(r->net)))
		return rc;
	rc = r->set ? nn_net_forward_images(r->net, r->set, r->idx, 2 * r->t, 1, r->phi)
		    : nn_net_forward_u8(r->net, r->img, 2 * r->t, 1, r->phi);
	if (rc)
		return rc;
	t1 = bench_now();
	double loss = nn_bpr_triples(r->phi, r->t, r->k, r->theta, r->margin, r->loss, r->g,
		r->dphi, r->dtheta) / r->t;
	if (!isfinite(loss)) {
		fprintf(stderr, "nn_cuda_dvbpr: the loss is %g\n", loss);
		return VR_EINVAL;
	}
	if (r->loss_first == 0)
		r->loss_first = loss;
	r->loss_last = loss;
	if (r->curve)
		r->curve[r->curve_at++] = loss;
	t2 = bench_now();
	if ((rc = nn_net_backward(r->net, r->dphi, NULL)) || (rc = nn_optim_step(r->opt)))
		return rc;
	if (times) {
		if ((rc = r->net->b->ops->sync(r->net->b)))
			return rc;
		times[0] = t1 - t0;
		times[1] = t2 - t1;
		times[2] = bench_now() - t2;
	}
	return 0;
}

/* The dev path's input must be the host path's: one evaluation forward of
 * the same images each way, compared bit for bit. */
static int same_input(struct run *r)
{
	size_t len = (size_t)2 * r->t * r->k;
	float *host = malloc(sizeof(float) * len);
	int rc = host ? 0 : VR_ENOMEM;
	draw_triples(r);
	if (!rc && !(rc = nn_net_forward_u8(r->net, r->img, 2 * r->t, 0, host)) &&
	    !(rc = nn_net_forward_images(r->net, r->set, r->idx, 2 * r->t, 0, r->phi)) &&
	    memcmp(host, r->phi, sizeof(float) * len)) {
		fprintf(stderr, "nn_cuda_dvbpr: the image set's forward differs from the host "
			"images' forward\n");
		rc = VR_EINVAL;
	}
	free(host);
	return rc;
}

static int bench_mode(nn_backend *b, const char *mode, const char *arch, struct run *r,
	int steps, double epoch_triples, int epochs, int size)
{
	struct nn_net_opts o = { .num_outputs = r->k, .input_size = size, .max_batch = 2 * r->t };
	struct nn_optim_opts a = { .kind = NN_OPTIM_ADAM, .lr = 1e-3f, .weight_decay = 1e-4f };
	double *split = malloc(sizeof(double) * 3 * steps), *col = malloc(sizeof(double) * steps);
	char err[256];
	int rc = VR_ENOMEM;
	r->net = NULL;
	r->opt = NULL;
	r->loss_first = 0;
	if (!split || !col)
		goto leave;
	double t0 = bench_now();
	if ((rc = nn_net_create(b, arch, &o, &r->net, err, sizeof err))) {
		fprintf(stderr, "%s: %s\n", arch, err);
		goto leave;
	}
	if ((rc = nn_net_init(r->net, 1)) || (rc = nn_optim_create(r->net, &a, &r->opt)))
		goto fail;
	double setup = bench_now() - t0, put = 0;
	if (r->set) {
		/* In slices, as featured would fill it from its decoders. */
		t0 = bench_now();
		for (size_t i = 0; i < r->items && !rc; i += 256)
			rc = nn_images_put(r->set, i, r->items - i < 256 ? r->items - i : 256,
				r->cache + i * r->px);
		put = bench_now() - t0;
		if (rc || (rc = same_input(r)))
			goto fail;
	}
	for (int i = 0; i < 3; i++)
		if ((rc = step(r, NULL)))
			goto fail;
	if ((rc = r->net->b->ops->sync(r->net->b)))
		goto fail;
	t0 = bench_now();
	for (int i = 0; i < steps; i++)
		if ((rc = step(r, NULL)))
			goto fail;
	if ((rc = r->net->b->ops->sync(r->net->b)))
		goto fail;
	double step_s = (bench_now() - t0) / steps;
	for (int i = 0; i < steps; i++)
		if ((rc = step(r, split + 3 * i)))
			goto fail;
	double part[3];
	for (int p = 0; p < 3; p++) {
		for (int i = 0; i < steps; i++)
			col[i] = split[3 * i + p];
		part[p] = bench_median(col, steps);
	}
	double epoch_steps = ceil(epoch_triples / r->t), epoch_s = epoch_steps * step_s;
	printf("%s %s, images in %s memory: K=%d, %d triples a step (%d images at %dx%d), net and "
	       "plans %.2f s", arch, mode, r->set ? "the backend's (an image set)" : "host", r->k,
		r->t, 2 * r->t, size, size, setup);
	if (r->set)
		printf(", image set filled in %.2f s", put);
	printf("\n");
	printf("  step %.2f ms back to back (%.0f triples/s, %.0f images/s); split, synchronised: "
	       "forward %.2f ms, host loss %.3f ms, backward + Adam %.2f ms\n", 1e3 * step_s,
		r->t / step_s, 2 * r->t / step_s, 1e3 * part[0], 1e3 * part[1], 1e3 * part[2]);
	printf("  an epoch of %.0f triples = %.0f steps: %.1f s; %d epochs: %.1f min "
	       "(mean loss per triple: first step %.4f, last %.4f)\n", epoch_triples, epoch_steps,
		epoch_s, epochs, epochs * epoch_s / 60, r->loss_first, r->loss_last);
	const char *dev = r->set ? "-dev" : "";
	printf("RESULT ours dvbpr %s %s%s step_ms %.3f\n", arch, mode, dev, 1e3 * step_s);
	printf("RESULT ours dvbpr %s %s%s fwd_ms %.3f\n", arch, mode, dev, 1e3 * part[0]);
	printf("RESULT ours dvbpr %s %s%s loss_ms %.3f\n", arch, mode, dev, 1e3 * part[1]);
	printf("RESULT ours dvbpr %s %s%s bwd_ms %.3f\n", arch, mode, dev, 1e3 * part[2]);
	printf("RESULT ours dvbpr %s %s%s epochs_min %.2f\n", arch, mode, dev,
		epochs * epoch_s / 60);
	fflush(stdout);
	goto leave;
fail:
	fprintf(stderr, "%s %s: %s: %s\n", arch, mode, vr_strerror(rc), nn_net_errmsg(r->net));
leave:
	nn_optim_destroy(r->opt);
	nn_net_destroy(r->net);
	free(split);
	free(col);
	return rc;
}

/* -L: trains a fresh net for steps steps on b, from the first triple
 * draw, keeping each step's loss in r->curve. */
static int curve_mode(nn_backend *b, const char *arch, struct run *r, int steps, int size)
{
	struct nn_net_opts o = { .num_outputs = r->k, .input_size = size, .max_batch = 2 * r->t };
	struct nn_optim_opts a = { .kind = NN_OPTIM_ADAM, .lr = 1e-3f, .weight_decay = 1e-4f };
	char err[256];
	int rc;
	r->net = NULL;
	r->opt = NULL;
	r->draw = 0;
	r->curve_at = 0;
	if ((rc = nn_net_create(b, arch, &o, &r->net, err, sizeof err))) {
		fprintf(stderr, "%s: %s\n", arch, err);
		return rc;
	}
	if (!(rc = nn_net_init(r->net, 1)) && !(rc = nn_optim_create(r->net, &a, &r->opt)) &&
	    r->set) {
		for (size_t i = 0; i < r->items && !rc; i += 256)
			rc = nn_images_put(r->set, i, r->items - i < 256 ? r->items - i : 256,
				r->cache + i * r->px);
	}
	for (int i = 0; i < steps && !rc; i++)
		rc = step(r, NULL);
	if (rc)
		fprintf(stderr, "%s: %s: %s\n", arch, vr_strerror(rc), nn_net_errmsg(r->net));
	nn_optim_destroy(r->opt);
	nn_net_destroy(r->net);
	r->net = NULL;
	r->opt = NULL;
	return rc;
}

/* Window means of b against a's; returns the largest difference. */
static double curve_diff(const double *a, const double *b, int steps, int window, int print)
{
	double worst = 0;
	for (int w0 = 0; w0 + window <= steps; w0 += window) {
		double ma = 0, mb = 0;
		for (int i = w0; i < w0 + window; i++) {
			ma += a[i];
			mb += b[i];
		}
		ma /= window;
		mb /= window;
		if (print)
			printf("  steps %4d-%4d: %.5f vs %.5f (%+.5f)\n", w0, w0 + window - 1, mb, ma,
				mb - ma);
		double d = fabs(mb - ma);
		if (!(d <= worst))
			worst = d;   /* NaN sticks */
	}
	return worst;
}

int main(int argc, char **argv)
{
	char modes[64] = "fp32,tf32,bf16", places[32] = "host,dev", why[256], arch[32] = "alexnet";
	const char *backend = "cuda";
	char *save = NULL;
	int k = 100, size = 224, t = 128, steps = 60, epochs = 5, ch, failed = 0, curve = 0,
	    window = 20;
	double curve_tol = 0.02;
	long items = 9633;
	double epoch_triples = 5e6;
	while ((ch = getopt(argc, argv, "a:k:S:N:t:s:m:c:E:e:B:L:W:T:")) != -1) {
		switch (ch) {
		case 'a': snprintf(arch, sizeof arch, "%s", optarg); break;
		case 'k': k = atoi(optarg); break;
		case 'S': size = atoi(optarg); break;
		case 'N': items = atol(optarg); break;
		case 't': t = atoi(optarg); break;
		case 's': steps = atoi(optarg); break;
		case 'm': snprintf(modes, sizeof modes, "%s", optarg); break;
		case 'c': snprintf(places, sizeof places, "%s", optarg); break;
		case 'E': epoch_triples = atof(optarg); break;
		case 'e': epochs = atoi(optarg); break;
		case 'B': backend = optarg; break;
		case 'L': curve = atoi(optarg); break;
		case 'W': window = atoi(optarg); break;
		case 'T': curve_tol = atof(optarg); break;
		default:
			fprintf(stderr, "usage: nn_cuda_dvbpr [-a alexnet] [-k 100] [-S 224] [-N 9633] "
				"[-t 128] [-s 60] [-m fp32,tf32,bf16] [-c host,dev] [-E 5000000] [-e 5] "
				"[-B cuda] [-L steps [-W 20] [-T 0.02]]\n");
			return 2;
		}
	}
	if (k < 1 || size < 1 || items < 2 || t < 1 || steps < 1 || epoch_triples < 1 ||
	    curve < 0 || window < 1 || (curve && curve < window) || !(curve_tol > 0))
		return 2;
	nn_backend *b;
	unsetenv("NN_CUDA_TF32");
	setenv("NN_CUDA_PRECISION", "fp32", 1);
	if (nn_backend_open_err(backend, &b, why, sizeof why)) {
		printf("nn_cuda_dvbpr: SKIPPED: %s\n", why);
		return 77;
	}
	nn_backend_close(b);

	struct run r = { .t = t, .k = k, .items = (size_t)items, .px = (size_t)3 * size * size };
	uint8_t *cache = malloc(r.items * r.px);
	float *theta_users = malloc(sizeof(float) * USERS * k);
	r.img = malloc(sizeof(*r.img) * 2 * t);
	r.idx = malloc(sizeof(*r.idx) * 2 * t);
	r.theta = malloc(sizeof(float) * t * k);
	r.margin = malloc(sizeof(float) * t);
	r.phi = malloc(sizeof(float) * 2 * t * k);
	r.dphi = malloc(sizeof(float) * 2 * t * k);
	r.dtheta = malloc(sizeof(float) * t * k);
	r.loss = malloc(sizeof(float) * t);
	r.g = malloc(sizeof(float) * t);
	if (!cache || !theta_users || !r.img || !r.idx || !r.theta || !r.margin || !r.phi || !r.dphi ||
	    !r.dtheta || !r.loss || !r.g) {
		fprintf(stderr, "nn_cuda_dvbpr: out of memory for %zu images\n", r.items);
		return 1;
	}
	double t0 = bench_now();
	/* Random bytes, eight at a time: the timing does not depend on content. */
	for (size_t w = 0, words = r.items * r.px / 8; w < words; w++) {
		uint64_t v = nn_splitmix64(5, w);
		memcpy(cache + 8 * w, &v, 8);
	}
	for (size_t w = r.items * r.px / 8 * 8; w < r.items * r.px; w++)
		cache[w] = (uint8_t)w;
	for (size_t i = 0; i < (size_t)USERS * k; i++)
		theta_users[i] = 0.2f * nn_uniform01(6, i) - 0.1f;
	r.cache = cache;
	r.theta_users = theta_users;
	printf("image cache: %zu items at %dx%d, %.2f GB in host memory, filled in %.1f s\n",
		r.items, size, size, (double)(r.items * r.px) / 1e9, bench_now() - t0);
	double *curves[8] = { NULL };
	int ncurves = 0;
	for (char *m = strtok_r(modes, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
		int prec;
		if (nn_precision_parse(m, &prec)) {
			fprintf(stderr, "nn_cuda_dvbpr: mode %s: not fp32, tf32 or bf16\n", m);
			failed = 1;
			continue;
		}
		setenv("NN_CUDA_PRECISION", m, 1);
		if (nn_backend_open_err(backend, &b, why, sizeof why)) {
			fprintf(stderr, "nn_cuda_dvbpr: %s\n", why);
			failed = 1;
			continue;
		}
		if (nn_backend_set_precision(b, prec)) {
			/* -B cpu: a program check; the CPU backends run FP32 only. */
			printf("(%s: %s runs FP32 only; mode %s runs FP32)\n", m, nn_backend_name(b), m);
		}
		printf("%s mode on %s\n", m, nn_backend_device(b));
		if (curve) {
			/* The first place of -c, one net per mode. */
			int dev = !strncmp(places, "dev", 3);
			r.set = NULL;
			if (ncurves == 8 || !(r.curve = calloc((size_t)curve, sizeof(double))) ||
			    (dev && nn_images_create(b, r.items, size, &r.set)) ||
			    curve_mode(b, arch, &r, curve, size)) {
				fprintf(stderr, "nn_cuda_dvbpr: %s: the loss curve did not run\n", m);
				free(r.curve);
				failed = 1;
			} else {
				curves[ncurves++] = r.curve;
				if (ncurves > 1) {
					printf("%s against %s, mean loss per triple over windows of %d "
					       "steps:\n", m, modes, window);
					double d = curve_diff(curves[0], r.curve, curve, window, 1);
					printf("RESULT ours dvbpr_curve %s %s max_window_diff %.5f\n", arch,
						m, d);
					if (!(d <= curve_tol)) {
						printf("FAIL: %s's loss curve leaves %s's by %.5f > %.5f\n", m,
							modes, d, curve_tol);
						failed = 1;
					}
				}
			}
			r.curve = NULL;
			nn_images_destroy(r.set);
			r.set = NULL;
			nn_backend_close(b);
			continue;
		}
		char list[32], *save_c = NULL;
		snprintf(list, sizeof list, "%s", places);
		for (char *c = strtok_r(list, ",", &save_c); c; c = strtok_r(NULL, ",", &save_c)) {
			int dev = !strcmp(c, "dev");
			r.set = NULL;
			if (dev && nn_images_create(b, r.items, size, &r.set)) {
				fprintf(stderr, "nn_cuda_dvbpr: no room for %zu images on the backend\n",
					r.items);
				failed = 1;
				continue;
			}
			failed |= bench_mode(b, m, arch, &r, steps, epoch_triples, epochs, size) != 0;
			nn_images_destroy(r.set);
			r.set = NULL;
		}
		nn_backend_close(b);
	}
	for (int i = 0; i < ncurves; i++)
		free(curves[i]);
	free(cache);
	free(theta_users);
	free(r.img);
	free(r.idx);
	free(r.theta);
	free(r.margin);
	free(r.phi);
	free(r.dphi);
	free(r.dtheta);
	free(r.loss);
	free(r.g);
	return failed;
}
