/* nn_cuda_parity: the CUDA backend against the CPU reference backend, op
 * by op and net by net, on seeded random inputs.
 *
 *   nn_cuda_parity [-Cq] [-n N] [-a arch,arch] [-o table.txt] small|nets
 *
 * small  every op of backend.h at small shapes, with the corners: a
 *        batch below the plan's, groups, depthwise, 1x1, no bias, even and
 *        odd LRN windows, adaptive pooling with overlapping windows, the
 *        acc paths, in-place activations; and the small net whole. The
 *        ctest (gpu.cuda_parity) runs this.
 * nets   every layer of the architectures (-a, default alexnet,cnnf) at
 *        its real shape for a batch of N (-n, default 2), each op of it,
 *        then each whole net: a training forward, the input gradient and
 *        every parameter's gradient, an SGD step, a uint8-input forward.
 *        tests/gpu/device-check.sh runs this on the GPU machine.
 *
 * Each row is run on the CPU once and on three CUDA backends, opened with
 *   fp32  the defaults (exact FP32 math, every convolution algorithm),
 *   gemm  exact FP32, NN_CUDA_CONV_ALGOS=gemm (no FFT or Winograd) and
 *         NN_CUDA_FILTER_GEMM=force (our im2col + GEMM weight gradient
 *         wherever it applies, so every ungrouped row checks it),
 *   tf32  NN_CUDA_PRECISION=tf32 (tensor-core TF32 in convolutions and
 *         GEMMs),
 *   bf16  NN_CUDA_PRECISION=bf16 (BF16 operands, FP32 accumulation and
 *         results, in ungrouped convolutions and GEMMs; everything else
 *         FP32),
 * and reports, per output tensor, rel = max|gpu - cpu| / max(max|cpu|,
 * 1e-6). An op's row passes when gemm is <= 1e-5 and fp32 <= 4e-5: the
 * fp32 backend may pick cuDNN's Winograd or FFT algorithms, whose
 * transforms round more than a direct sum (seen on an H100: 1.5e-5 on
 * ResNet-50's 512-channel 3x3 convolutions at 7x7 with WINOGRAD_NONFUSED,
 * where the gemm path gave 3e-6), so the exact-sum bound is the gemm
 * column's, and fp32's is looser by FAST_ALGO_SLACK. TF32 is
 * measured, not judged, except that over 3e-2 means a bug rather than
 * rounding. bf16 is judged against its own bound: an op's output <=
 * BF16_OP_TOL, a whole net's forward <= BF16_NET_TOL. The reasoning
 * (not yet a measurement): each operand is rounded to 8 significant bits
 * (relative error <= 2^-9), products of two such carry <= 2^-8, and with
 * FP32 sums of random-signed terms the error relative to the largest
 * output stays near 2^-8 / 2; the BF16 result adds 2^-9 of its own.
 * So 2e-2 is about 5x that, and a whole net of 8 layers, which compounds
 * them, 1e-1; tests/gpu/device-check.sh prints the largest seen, which
 * is the figure to quote. Outputs written with acc == 0 are filled with NaN first, so
 * an op that reads what it should overwrite shows up.
 *
 * A whole net's forward outputs compound every layer's rounding and pass
 * at <= 1e-4. Its gradients (and the parameters after a step) are
 * reported but not judged ("-"): two correct implementations may round a
 * pre-activation to opposite sides of zero, or order a max-pool window's
 * near-tie differently, and then send one term of a sum elsewhere, which
 * at batch 2 can move a weight row's gradient by its own size. Every op's
 * gradients are judged above, on inputs with no such ties.
 *
 * -q prints only failing rows and the summary. -C compares the CPU
 * backend with itself instead (every error 0): it checks this program,
 * and times the CPU reference, on a machine without a GPU. The table goes
 * to stdout (and to -o's file); exit 0 when every row passes, 1 when one
 * fails, 77 (skipped) when no CUDA device answers.
 *
 * Why one file at ~1,140 lines: one comparison, CUDA against the CPU
 * reference, applied to every op and net with the same tolerance rules. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "err.h"
#include "net_priv.h"
#include "nn.h"
#include "nn_test.h"

#define OP_TOL 1e-5
#define FAST_ALGO_SLACK 4.0   /* fp32 column: Winograd and FFT round more */
#define NET_TOL 1e-4
#define TF32_BUG 3e-2
#define BF16_OP_TOL 2e-2
#define BF16_NET_TOL 1e-1
#define MAX_OUTS 400
#define MAX_NAMED_GRADS 16   /* more parameter tensors than this: one summary row */

enum { FP32, GEMM, TF32, BF16, NCFG };
static const char *const cfg_names[NCFG] = { "fp32", "gemm", "tf32", "bf16" };

struct ctx {
	nn_backend *cpu, *gpu[NCFG];
	FILE *copy;                /* -o */
	int quiet;                 /* -q: print failing rows only, and the summary */
	int rows, fails;
	double worst[NCFG];
	char worst_at[NCFG][96];
};

/* What one run of a case produced on one backend: named host tensors. */
struct outs {
	int count;
	char name[MAX_OUTS][48];
	char group[MAX_OUTS][24];  /* a run of equal non-empty groups prints as one row */
	char measured[MAX_OUTS];   /* reported, not judged (see the first comment) */
	float *v[MAX_OUTS];
	size_t len[MAX_OUTS];
	char note[160];            /* the CUDA plan's algorithms, if any */
};

static void outs_free(struct outs *o)
{
	for (int i = 0; i < o->count; i++)
		free(o->v[i]);
	memset(o, 0, sizeof(*o));
}

/* Device buffers of one run, freed together; rc is sticky: after a
 * failure every call is skipped. */
struct devs {
	nn_backend *b;
	void *p[24];
	int n, rc;
	struct outs *o;
};

static void *dalloc(struct devs *d, size_t bytes)
{
	void *p = NULL;
	if (d->rc)
		return NULL;
	if (d->n == (int)(sizeof(d->p) / sizeof(d->p[0]))) {
		d->rc = VR_ENOMEM;
		return NULL;
	}
	if ((d->rc = d->b->ops->alloc(d->b, bytes ? bytes : 64, &p)))
		return NULL;
	d->p[d->n++] = p;
	return p;
}

/* A device copy of len host floats; host NULL: len NaNs. */
static float *dput(struct devs *d, const float *host, size_t len)
{
	float *p = dalloc(d, sizeof(float) * len);
	if (!p)
		return NULL;
	d->rc = host ? d->b->ops->upload(d->b, p, host, sizeof(float) * len) :
		d->b->ops->fill(d->b, p, NAN, len);
	return d->rc ? NULL : p;
}

/* Downloads len floats of p as output name. */
static void get(struct devs *d, const char *name, const float *p, size_t len)
{
	struct outs *o = d->o;
	float *h;
	if (d->rc)
		return;
	if (o->count == MAX_OUTS || !(h = malloc(sizeof(float) * (len ? len : 1)))) {
		d->rc = VR_ENOMEM;
		return;
	}
	if ((d->rc = d->b->ops->download(d->b, h, p, sizeof(float) * len))) {
		free(h);
		return;
	}
	snprintf(o->name[o->count], sizeof(o->name[0]), "%s", name);
	o->v[o->count] = h;
	o->len[o->count++] = len;
}

static void op(struct devs *d, int rc)
{
	if (!d->rc)
		d->rc = rc;
}

static int dfree(struct devs *d)
{
	for (int i = 0; i < d->n; i++)
		d->b->ops->free(d->b, d->p[i]);
	d->n = 0;
	return d->rc;
}

static float *host_uniform(size_t len, uint64_t seed, float lo, float hi)
{
	float *a = malloc(sizeof(float) * (len ? len : 1));
	for (size_t i = 0; a && i < len; i++)
		a[i] = lo + (hi - lo) * nn_uniform01(seed, i);
	return a;
}

/* len distinct values spread over (-1, 1), shuffled: max pooling then has
 * no tie for the CPU and cuDNN to break differently. */
static float *host_distinct(size_t len, uint64_t seed)
{
	float *a = malloc(sizeof(float) * (len ? len : 1));
	for (size_t i = 0; a && i < len; i++)
		a[i] = -1.0f + 2.0f * ((float)i + 0.5f) / (float)len;
	for (size_t i = len; a && i > 1; i--) {
		size_t j = nn_splitmix64(seed, i) % i;
		float v = a[i - 1];
		a[i - 1] = a[j];
		a[j] = v;
	}
	return a;
}

static void emit(struct ctx *t, const char *line)
{
	fputs(line, stdout);
	fflush(stdout);
	if (t->copy) {
		fputs(line, t->copy);
		fflush(t->copy);
	}
}

static void header(struct ctx *t, const char *title)
{
	char line[512];
	snprintf(line, sizeof(line), "\n%s\n%-46s %-24s %9s %9s %9s %9s %7s %s\n", title,
		"layer / case", "output", cfg_names[FP32], cfg_names[GEMM], cfg_names[TF32],
		cfg_names[BF16], "verdict",
		"algorithms (fp32 backend)");
	emit(t, line);
}

typedef int (*run_fn)(nn_backend *b, const void *arg, struct outs *o);

/* Runs a case on the CPU and on each CUDA backend and prints a row per
 * output: its three errors and the verdict against tol. */
static void check(struct ctx *t, const char *label, run_fn run, const void *arg, double tol)
{
	struct outs ref = { 0 }, got[NCFG];
	char line[1024];
	int rc = run(t->cpu, arg, &ref), grc[NCFG];
	memset(got, 0, sizeof(got));
	for (int k = 0; k < NCFG; k++)
		grc[k] = rc ? rc : run(t->gpu[k], arg, &got[k]);
	if (rc) {
		snprintf(line, sizeof(line), "%-46s %-24s  CPU reference failed: %s\n", label, "-",
			vr_strerror(rc));
		emit(t, line);
		t->fails++;
		goto leave;
	}
	for (int i = 0, j; i < ref.count; i = j) {
		double e[NCFG];
		char cell[NCFG][16], name[96];
		int worst = i;
		/* Outputs i .. j-1: one, or a group summarised by its worst tensor. */
		for (j = i + 1; ref.group[i][0] && j < ref.count && !strcmp(ref.group[j], ref.group[i]);
		     j++)
			;
		for (int k = 0; k < NCFG; k++) {
			e[k] = 0;
			for (int m = i; m < j; m++) {
				double em = INFINITY;
				if (!grc[k] && m < got[k].count && got[k].len[m] == ref.len[m])
					em = nn_rel_error(got[k].v[m], ref.v[m], ref.len[m]);
				if (!isnan(e[k]) && !(em <= e[k])) {
					e[k] = em;
					if (k == FP32)
						worst = m;
				}
			}
			if (grc[k] || isinf(e[k]))
				snprintf(cell[k], sizeof(cell[k]), "ERROR");
			else
				snprintf(cell[k], sizeof(cell[k]), "%.2e", e[k]);
		}
		if (j - i > 1)
			snprintf(name, sizeof(name), "%s (%d; worst %s)", ref.group[i], j - i,
				ref.name[worst]);
		else
			snprintf(name, sizeof(name), "%s", ref.name[i]);
		const int measured = ref.measured[i];
		for (int k = 0; k < NCFG && !measured; k++)
			if (!isnan(t->worst[k]) && !(e[k] <= t->worst[k])) {
				t->worst[k] = e[k];
				snprintf(t->worst_at[k], sizeof(t->worst_at[k]), "%.40s: %.50s", label,
					name);
			}
		int pass = measured ||
			(e[FP32] <= FAST_ALGO_SLACK * tol && e[GEMM] <= tol && e[TF32] <= TF32_BUG &&
				e[BF16] <= (tol > OP_TOL ? BF16_NET_TOL : BF16_OP_TOL));
		t->rows++;
		t->fails += !pass;
		if (t->quiet && pass)
			continue;
		snprintf(line, sizeof(line), "%-46.90s %-24.95s %9s %9s %9s %9s %7s %.159s\n",
			i && !t->quiet ? "" : label, name, cell[FP32], cell[GEMM], cell[TF32], cell[BF16],
			measured ? "-" : pass ? "PASS" : "FAIL", i ? "" : got[FP32].note);
		emit(t, line);
	}
	for (int k = 0; k < NCFG; k++)
		if (grc[k]) {
			snprintf(line, sizeof(line), "%-46s %-24s  %s backend failed: %s (see stderr)\n",
				"", "", cfg_names[k], vr_strerror(grc[k]));
			emit(t, line);
		}
leave:
	outs_free(&ref);
	for (int k = 0; k < NCFG; k++)
		outs_free(&got[k]);
}

/* ---- Op cases ---------------------------------------------------------------- */

struct conv_arg {
	struct nn_conv_shape s;    /* s.n: the plan's batch */
	int n, bias;               /* this call's batch; whether it has a bias */
	float *x, *w, *b, *dy, *dx0, *dw0, *db0;
};

static int run_conv(nn_backend *b, const void *argp, struct outs *o)
{
	const struct conv_arg *a = argp;
	const struct nn_conv_shape *s = &a->s;
	const size_t xl = (size_t)a->n * s->c * s->h * s->w, yl = (size_t)a->n * s->k * s->oh * s->ow;
	const size_t wl = (size_t)s->k * (s->c / s->groups) * s->kh * s->kw;
	struct devs d = { .b = b, .o = o };
	void *plan = NULL;
	size_t ws_bytes = 0;
	d.rc = b->ops->plan_create(b, NN_OP_CONV, s, &plan, &ws_bytes);
	void *ws = dalloc(&d, ws_bytes);
	float *x = dput(&d, a->x, xl), *w = dput(&d, a->w, wl);
	float *bias = a->bias ? dput(&d, a->b, s->k) : NULL;
	float *y = dput(&d, NULL, yl), *dy = dput(&d, a->dy, yl), *dx = dput(&d, NULL, xl);
	float *dxa = dput(&d, a->dx0, xl), *dw = dput(&d, a->dw0, wl), *db = dput(&d, a->db0, s->k);
	if (!d.rc)
		op(&d, b->ops->conv_fwd(b, plan, s, a->n, x, w, bias, y, ws));
	get(&d, "forward", y, yl);
	if (!d.rc)
		op(&d, b->ops->conv_bwd_data(b, plan, s, a->n, dy, w, dx, 0, ws));
	get(&d, "d input", dx, xl);
	if (!d.rc)
		op(&d, b->ops->conv_bwd_data(b, plan, s, a->n, dy, w, dxa, 1, ws));
	get(&d, "d input (acc)", dxa, xl);
	if (!d.rc)
		op(&d, b->ops->conv_bwd_filter(b, plan, s, a->n, x, dy, dw, ws));
	get(&d, "d weight (acc)", dw, wl);
	if (a->bias && !d.rc)
		op(&d, b->ops->conv_bwd_bias(b, plan, s, a->n, dy, db));
	if (a->bias)
		get(&d, "d bias (acc)", db, s->k);
	if (!d.rc && plan && !strcmp(nn_backend_name(b), "cuda"))
		nn__cuda_conv_algos(plan, o->note, sizeof(o->note));
	if (plan)
		b->ops->plan_free(b, plan);
	return dfree(&d);
}

static void case_conv(struct ctx *t, const char *label, const struct nn_conv_shape *shape, int n,
	int bias, uint64_t seed)
{
	struct conv_arg a = { .s = *shape, .n = n, .bias = bias };
	if (nn_conv_shape_check(&a.s)) {
		fprintf(stderr, "%s: bad conv shape\n", label);
		t->fails++;
		return;
	}
	const struct nn_conv_shape *s = &a.s;
	const size_t xl = (size_t)n * s->c * s->h * s->w, yl = (size_t)n * s->k * s->oh * s->ow;
	const size_t wl = (size_t)s->k * (s->c / s->groups) * s->kh * s->kw;
	const float bound = 1.0f / sqrtf((float)(s->c / s->groups * s->kh * s->kw));
	a.x = host_uniform(xl, seed, -1, 1);
	a.w = host_uniform(wl, seed + 1, -bound, bound);
	a.b = host_uniform(s->k, seed + 2, -bound, bound);
	a.dy = host_uniform(yl, seed + 3, -1, 1);
	a.dx0 = host_uniform(xl, seed + 4, -1, 1);
	a.dw0 = host_uniform(wl, seed + 5, -1, 1);
	a.db0 = host_uniform(s->k, seed + 6, -1, 1);
	check(t, label, run_conv, &a, OP_TOL);
	free(a.x); free(a.w); free(a.b); free(a.dy); free(a.dx0); free(a.dw0); free(a.db0);
}

struct pool_arg {
	struct nn_pool_shape s;
	int n;
	float *x, *dy, *dx0;
};

static int run_pool(nn_backend *b, const void *argp, struct outs *o)
{
	const struct pool_arg *a = argp;
	const struct nn_pool_shape *s = &a->s;
	const size_t xl = (size_t)a->n * s->c * s->h * s->w, yl = (size_t)a->n * s->c * s->oh * s->ow;
	struct devs d = { .b = b, .o = o };
	void *plan = NULL;
	size_t ws_bytes = 0;
	d.rc = b->ops->plan_create(b, NN_OP_POOL, s, &plan, &ws_bytes);
	float *x = dput(&d, a->x, xl), *y = dput(&d, NULL, yl), *dy = dput(&d, a->dy, yl);
	float *dx = dput(&d, NULL, xl), *dxa = dput(&d, a->dx0, xl);
	if (!d.rc)
		op(&d, b->ops->pool_fwd(b, plan, s, a->n, x, y));
	get(&d, "forward", y, yl);
	if (!d.rc)
		op(&d, b->ops->pool_bwd(b, plan, s, a->n, x, y, dy, dx, 0));
	get(&d, "d input", dx, xl);
	if (!d.rc)
		op(&d, b->ops->pool_bwd(b, plan, s, a->n, x, y, dy, dxa, 1));
	get(&d, "d input (acc)", dxa, xl);
	if (plan)
		b->ops->plan_free(b, plan);
	return dfree(&d);
}

static void case_pool(struct ctx *t, const char *label, const struct nn_pool_shape *shape, int n,
	uint64_t seed)
{
	struct pool_arg a = { .s = *shape, .n = n };
	if (nn_pool_shape_check(&a.s)) {
		fprintf(stderr, "%s: bad pool shape\n", label);
		t->fails++;
		return;
	}
	const size_t xl = (size_t)n * a.s.c * a.s.h * a.s.w, yl = (size_t)n * a.s.c * a.s.oh * a.s.ow;
	a.x = host_distinct(xl, seed);
	a.dy = host_uniform(yl, seed + 1, -1, 1);
	a.dx0 = host_uniform(xl, seed + 2, -1, 1);
	check(t, label, run_pool, &a, OP_TOL);
	free(a.x); free(a.dy); free(a.dx0);
}

struct lrn_arg {
	struct nn_lrn_shape s;
	int n;
	float *x, *dy, *dx0;
};

static int run_lrn(nn_backend *b, const void *argp, struct outs *o)
{
	const struct lrn_arg *a = argp;
	const struct nn_lrn_shape *s = &a->s;
	const size_t len = (size_t)a->n * s->c * s->h * s->w;
	struct devs d = { .b = b, .o = o };
	void *plan = NULL;
	size_t ws_bytes = 0;
	d.rc = b->ops->plan_create(b, NN_OP_LRN, s, &plan, &ws_bytes);
	void *ws = dalloc(&d, ws_bytes);
	float *x = dput(&d, a->x, len), *y = dput(&d, NULL, len), *dy = dput(&d, a->dy, len);
	float *dx = dput(&d, NULL, len), *dxa = dput(&d, a->dx0, len);
	if (!d.rc)
		op(&d, b->ops->lrn_fwd(b, plan, s, a->n, x, y, ws));
	get(&d, "forward", y, len);
	if (!d.rc)
		op(&d, b->ops->lrn_bwd(b, plan, s, a->n, x, y, dy, dx, 0, ws));
	get(&d, "d input", dx, len);
	if (!d.rc)
		op(&d, b->ops->lrn_bwd(b, plan, s, a->n, x, y, dy, dxa, 1, ws));
	get(&d, "d input (acc)", dxa, len);
	if (plan)
		b->ops->plan_free(b, plan);
	return dfree(&d);
}

static void case_lrn(struct ctx *t, const char *label, const struct nn_lrn_shape *shape, int n,
	float range, uint64_t seed)
{
	struct lrn_arg a = { .s = *shape, .n = n };
	const size_t len = (size_t)n * a.s.c * a.s.h * a.s.w;
	a.x = host_uniform(len, seed, -range, range);
	a.dy = host_uniform(len, seed + 1, -1, 1);
	a.dx0 = host_uniform(len, seed + 2, -1, 1);
	check(t, label, run_lrn, &a, OP_TOL);
	free(a.x); free(a.dy); free(a.dx0);
}

struct fc_arg {
	struct nn_fc_shape s;
	int n;
	float *x, *w, *b, *dy, *dx0, *dw0, *db0;
};

static int run_fc(nn_backend *b, const void *argp, struct outs *o)
{
	const struct fc_arg *a = argp;
	const struct nn_fc_shape *s = &a->s;
	const size_t xl = (size_t)a->n * s->in, yl = (size_t)a->n * s->out, wl = (size_t)s->in * s->out;
	struct devs d = { .b = b, .o = o };
	void *plan = NULL;
	size_t ws_bytes = 0;
	d.rc = b->ops->plan_create(b, NN_OP_FC, s, &plan, &ws_bytes);
	float *x = dput(&d, a->x, xl), *w = dput(&d, a->w, wl), *bias = dput(&d, a->b, s->out);
	float *y = dput(&d, NULL, yl), *dy = dput(&d, a->dy, yl), *dx = dput(&d, NULL, xl);
	float *dxa = dput(&d, a->dx0, xl), *dw = dput(&d, a->dw0, wl), *db = dput(&d, a->db0, s->out);
	if (!d.rc)
		op(&d, b->ops->fc_fwd(b, plan, s, a->n, x, w, bias, y));
	get(&d, "forward", y, yl);
	if (!d.rc)
		op(&d, b->ops->fc_bwd_data(b, plan, s, a->n, dy, w, dx, 0));
	get(&d, "d input", dx, xl);
	if (!d.rc)
		op(&d, b->ops->fc_bwd_data(b, plan, s, a->n, dy, w, dxa, 1));
	get(&d, "d input (acc)", dxa, xl);
	if (!d.rc)
		op(&d, b->ops->fc_bwd_weights(b, plan, s, a->n, x, dy, dw, db));
	get(&d, "d weight (acc)", dw, wl);
	get(&d, "d bias (acc)", db, s->out);
	if (!d.rc)
		op(&d, b->ops->fc_fwd(b, plan, s, a->n, x, w, NULL, y));
	get(&d, "forward, no bias", y, yl);
	if (plan)
		b->ops->plan_free(b, plan);
	return dfree(&d);
}

static void case_fc(struct ctx *t, const char *label, const struct nn_fc_shape *shape, int n,
	uint64_t seed)
{
	struct fc_arg a = { .s = *shape, .n = n };
	const size_t xl = (size_t)n * a.s.in, yl = (size_t)n * a.s.out, wl = (size_t)a.s.in * a.s.out;
	const float bound = 1.0f / sqrtf((float)a.s.in);
	a.x = host_uniform(xl, seed, -1, 1);
	a.w = host_uniform(wl, seed + 1, -bound, bound);
	a.b = host_uniform(a.s.out, seed + 2, -bound, bound);
	a.dy = host_uniform(yl, seed + 3, -1, 1);
	a.dx0 = host_uniform(xl, seed + 4, -1, 1);
	a.dw0 = host_uniform(wl, seed + 5, -1, 1);
	a.db0 = host_uniform(a.s.out, seed + 6, -1, 1);
	check(t, label, run_fc, &a, OP_TOL);
	free(a.x); free(a.w); free(a.b); free(a.dy); free(a.dx0); free(a.dw0); free(a.db0);
}

/* Elementwise layers: activation, dropout, add, accumulate, batch norm,
 * padding, L2 normalisation, on count floats of three random inputs. */
struct elem_arg {
	int kind;
	size_t count;
	int mode;                  /* act */
	float p;                   /* dropout */
	uint64_t seed;             /* dropout */
	int n, c, hw;              /* batch norm; l2norm: n rows of c */
	struct nn_pad_shape pad;
	float *a, *b, *c0, *gamma, *beta, *mean, *var, *g0;
};

enum { E_ACT = 1, E_DROPOUT, E_ADD, E_BN, E_PAD, E_FILL, E_L2NORM };

static int run_elem(nn_backend *b, const void *argp, struct outs *o)
{
	const struct elem_arg *a = argp;
	const size_t n = a->count;
	struct devs d = { .b = b, .o = o };
	float *x = dput(&d, a->a, n), *dy = dput(&d, a->b, n), *y = dput(&d, NULL, n);
	float *dx = dput(&d, NULL, n), *dxa = dput(&d, a->c0, n);
	switch (a->kind) {
	case E_ACT:
		if (!d.rc)
			op(&d, b->ops->act_fwd(b, a->mode, n, x, y));
		get(&d, "forward", y, n);
		if (!d.rc)
			op(&d, b->ops->act_bwd(b, a->mode, n, y, dy, dx, 0));
		get(&d, "d input", dx, n);
		if (!d.rc)
			op(&d, b->ops->act_bwd(b, a->mode, n, y, dy, dxa, 1));
		get(&d, "d input (acc)", dxa, n);
		if (!d.rc)
			op(&d, b->ops->act_fwd(b, a->mode, n, x, x));
		get(&d, "forward in place", x, n);
		if (!d.rc)
			op(&d, b->ops->act_bwd(b, a->mode, n, x, dy, dy, 0));
		get(&d, "d input in place", dy, n);
		break;
	case E_DROPOUT:
		if (!d.rc)
			op(&d, b->ops->dropout_fwd(b, n, a->p, a->seed, x, y));
		get(&d, "forward", y, n);
		if (!d.rc)
			op(&d, b->ops->dropout_bwd(b, n, a->p, a->seed, dy, dx, 0));
		get(&d, "d input", dx, n);
		if (!d.rc)
			op(&d, b->ops->dropout_bwd(b, n, a->p, a->seed, dy, dxa, 1));
		get(&d, "d input (acc)", dxa, n);
		break;
	case E_ADD:
		if (!d.rc)
			op(&d, b->ops->add(b, n, x, dy, y));
		get(&d, "a + c", y, n);
		if (!d.rc)
			op(&d, b->ops->accumulate(b, n, x, dx, 0));
		get(&d, "accumulate", dx, n);
		if (!d.rc)
			op(&d, b->ops->accumulate(b, n, x, dxa, 1));
		get(&d, "accumulate (acc)", dxa, n);
		break;
	case E_BN: {
		float *gamma = dput(&d, a->gamma, a->c), *beta = dput(&d, a->beta, a->c);
		float *mean = dput(&d, a->mean, a->c), *var = dput(&d, a->var, a->c);
		float *dg = dput(&d, a->g0, a->c), *dbt = dput(&d, a->g0, a->c);
		const struct nn_bn_shape bs = { .n = a->n, .c = a->c, .h = a->hw, .w = 1, .eps = 1e-5f };
		if (!d.rc)
			op(&d, b->ops->bn_fwd(b, NULL, &bs, a->n, x, gamma, beta, mean, var, y));
		get(&d, "forward", y, n);
		if (!d.rc)
			op(&d, b->ops->bn_bwd(b, NULL, &bs, a->n, x, gamma, mean, var, dy, dx, 0, dg,
				dbt));
		get(&d, "d input", dx, n);
		get(&d, "d gamma (acc)", dg, a->c);
		get(&d, "d beta (acc)", dbt, a->c);
		if (!d.rc)
			op(&d, b->ops->bn_bwd(b, NULL, &bs, a->n, x, gamma, mean, var, dy, dxa, 1, NULL,
				NULL));
		get(&d, "d input (acc)", dxa, n);
		break;
	}
	case E_PAD: {
		const struct nn_pad_shape *s = &a->pad;
		size_t ol = (size_t)s->n * s->c * s->oh * s->ow, il = (size_t)s->n * s->c * s->h * s->w;
		float *py = dput(&d, NULL, ol), *pdy = dput(&d, a->b, ol);
		if (!d.rc)
			op(&d, b->ops->pad_fwd(b, s, s->n, x, py));
		get(&d, "forward", py, ol);
		if (!d.rc)
			op(&d, b->ops->pad_bwd(b, s, s->n, pdy, dx, 0));
		get(&d, "d input", dx, il);
		if (!d.rc)
			op(&d, b->ops->pad_bwd(b, s, s->n, pdy, dxa, 1));
		get(&d, "d input (acc)", dxa, il);
		break;
	}
	case E_L2NORM:
		if (!d.rc)
			op(&d, b->ops->l2norm_fwd(b, a->n, a->c, 1e-12f, x, y));
		get(&d, "forward", y, n);
		if (!d.rc)
			op(&d, b->ops->l2norm_bwd(b, a->n, a->c, 1e-12f, x, dy, dx, 0));
		get(&d, "d input", dx, n);
		if (!d.rc)
			op(&d, b->ops->l2norm_bwd(b, a->n, a->c, 1e-12f, x, dy, dxa, 1));
		get(&d, "d input (acc)", dxa, n);
		break;
	case E_FILL:
		if (!d.rc)
			op(&d, b->ops->fill(b, y, 1.5f, n));
		get(&d, "fill 1.5", y, n);
		if (!d.rc)
			op(&d, b->ops->fill(b, y, 0.0f, n));
		get(&d, "fill 0", y, n);
		if (!d.rc)
			op(&d, b->ops->copy(b, y, x, sizeof(float) * n));
		get(&d, "copy", y, n);
		break;
	}
	return dfree(&d);
}

/* The inputs are sized for the larger of the padded and unpadded tensor. */
static void case_elem(struct ctx *t, const char *label, struct elem_arg *a, uint64_t seed)
{
	size_t n = a->count;
	if (a->kind == E_PAD) {
		size_t ol = (size_t)a->pad.n * a->pad.c * a->pad.oh * a->pad.ow;
		n = ol > n ? ol : n;
	}
	a->a = host_uniform(n, seed, -8, 8);
	a->b = host_uniform(n, seed + 1, -1, 1);
	a->c0 = host_uniform(n, seed + 2, -1, 1);
	a->gamma = host_uniform(a->c, seed + 3, 0.5f, 1.5f);
	a->beta = host_uniform(a->c, seed + 4, -1, 1);
	a->mean = host_uniform(a->c, seed + 5, -1, 1);
	a->var = host_uniform(a->c, seed + 6, 0.5f, 2);
	a->g0 = host_uniform(a->c, seed + 7, -1, 1);
	check(t, label, run_elem, a, OP_TOL);
	free(a->a); free(a->b); free(a->c0); free(a->gamma); free(a->beta); free(a->mean);
	free(a->var); free(a->g0);
}

/* Three optimiser steps over count parameters with fresh gradients each. */
struct optim_arg {
	size_t count;
	int kind;                  /* enum nn_optim_kind */
	float *w, *g[3];
};

static int run_optim(nn_backend *b, const void *argp, struct outs *o)
{
	const struct optim_arg *a = argp;
	const size_t n = a->count;
	struct devs d = { .b = b, .o = o };
	float *w = dput(&d, a->w, n), *g = dput(&d, a->g[0], n);
	float *m = dalloc(&d, sizeof(float) * n), *v = dalloc(&d, sizeof(float) * n);
	if (!d.rc)
		op(&d, b->ops->fill(b, m, 0.0f, n));
	if (!d.rc)
		op(&d, b->ops->fill(b, v, 0.0f, n));
	for (int step = 1; step <= 3 && !d.rc; step++) {
		op(&d, b->ops->upload(b, g, a->g[step - 1], sizeof(float) * n));
		if (d.rc)
			break;
		if (a->kind == NN_OPTIM_SGD) {
			struct nn_sgd_params p = { 0.1f, 0.9f, 0.01f };
			op(&d, b->ops->sgd_step(b, n, w, g, m, &p));
		} else {
			struct nn_adam_params p = { 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f,
				a->kind == NN_OPTIM_ADAMW, step };
			op(&d, b->ops->adam_step(b, n, w, g, m, v, &p));
		}
	}
	get(&d, "weights", w, n);
	get(&d, "m", m, n);
	if (a->kind != NN_OPTIM_SGD)
		get(&d, "v", v, n);
	if (a->kind == NN_OPTIM_SGD && !d.rc) {
		struct nn_sgd_params p = { 0.1f, 0.0f, 0.01f };
		op(&d, b->ops->sgd_step(b, n, w, g, NULL, &p));
		get(&d, "weights, no momentum", w, n);
	}
	return dfree(&d);
}

static void case_optim(struct ctx *t, const char *label, int kind, size_t count, uint64_t seed)
{
	struct optim_arg a = { .count = count, .kind = kind };
	a.w = host_uniform(count, seed, -1, 1);
	for (int i = 0; i < 3; i++)
		a.g[i] = host_uniform(count, seed + 1 + i, -1, 1);
	check(t, label, run_optim, &a, OP_TOL);
	free(a.w);
	for (int i = 0; i < 3; i++)
		free(a.g[i]);
}

struct u8_arg {
	int n, size;
	const uint8_t *const *img;
};

static int run_u8(nn_backend *b, const void *argp, struct outs *o)
{
	const struct u8_arg *a = argp;
	const size_t len = (size_t)a->n * 3 * a->size * a->size;
	const float mul[3] = { 1.0f / (255.0f * 0.229f), 1.0f / (255.0f * 0.224f),
		1.0f / (255.0f * 0.225f) };
	const float add[3] = { -0.485f / 0.229f, -0.456f / 0.224f, -0.406f / 0.225f };
	struct devs d = { .b = b, .o = o };
	float *x = dput(&d, NULL, len);
	if (!d.rc)
		op(&d, b->ops->input_u8(b, a->n, a->size, a->img, mul, add, x));
	get(&d, "normalised input", x, len);
	return dfree(&d);
}

static uint8_t **random_images(int n, int size, uint64_t seed)
{
	uint8_t **img = calloc(n, sizeof(*img));
	for (int i = 0; img && i < n; i++) {
		size_t len = (size_t)size * size * 3;
		if (!(img[i] = malloc(len)))
			break;
		for (size_t j = 0; j < len; j++)
			img[i][j] = (uint8_t)(nn_splitmix64(seed + i, j) >> 56);
	}
	return img;
}

static void free_images(uint8_t **img, int n)
{
	for (int i = 0; img && i < n; i++)
		free(img[i]);
	free(img);
}

static void case_u8(struct ctx *t, const char *label, int n, int size, uint64_t seed)
{
	uint8_t **img = random_images(n, size, seed);
	struct u8_arg a = { n, size, (const uint8_t *const *)img };
	check(t, label, run_u8, &a, OP_TOL);
	free_images(img, n);
}

/* ---- Whole nets ----------------------------------------------------------------- */

struct net_arg {
	const char *arch;
	int max_batch, n, size;
	float *x, *dout;
	uint8_t **img;
};

/* Keeps a copy of len host floats as output name, in group (may be "");
 * measured: report its error without judging it. */
static int keep(struct outs *o, const char *group, const char *name, int measured,
	const float *h, size_t len)
{
	float *v;
	if (o->count == MAX_OUTS || !(v = malloc(sizeof(float) * (len ? len : 1))))
		return VR_ENOMEM;
	memcpy(v, h, sizeof(float) * len);
	snprintf(o->name[o->count], sizeof(o->name[0]), "%s", name);
	snprintf(o->group[o->count], sizeof(o->group[0]), "%s", group);
	o->measured[o->count] = (char)measured;
	o->v[o->count] = v;
	o->len[o->count++] = len;
	return 0;
}

static int run_net(nn_backend *b, const void *argp, struct outs *o)
{
	const struct net_arg *a = argp;
	struct nn_net_opts opts = { .max_batch = a->max_batch, .input_size = a->size };
	struct nn_optim_opts oo = { .kind = NN_OPTIM_SGD, .lr = 0.01f, .momentum = 0.9f,
		.weight_decay = 1e-4f };
	nn_net *net = NULL;
	nn_optim *opt = NULL;
	char err[256], name[48];
	float *out = NULL, *din = NULL, *grads = NULL, *params = NULL;
	int rc = nn_net_create(b, a->arch, &opts, &net, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%s on %s: %s\n", a->arch, nn_backend_name(b), err);
		return rc;
	}
	const size_t ol = nn_net_output_size(net) * a->n, il = (size_t)3 * a->size * a->size * a->n;
	const size_t tc = nn_net_trainable_count(net), pc = nn_net_param_count(net);
	out = malloc(sizeof(float) * ol);
	din = malloc(sizeof(float) * il);
	grads = malloc(sizeof(float) * tc);
	params = malloc(sizeof(float) * pc);
	if (!out || !din || !grads || !params) {
		rc = VR_ENOMEM;
		goto leave;
	}
	if ((rc = nn_net_init(net, 42)) || (rc = nn_net_zero_grad(net)) ||
	    (rc = nn_net_forward(net, a->x, a->n, 1, out)) ||
	    (rc = keep(o, "", "forward (train)", 0, out, ol)) ||
	    (rc = nn_net_backward(net, a->dout, din)) || (rc = keep(o, "", "d input", 1, din, il)) ||
	    (rc = nn_net_grads_get(net, grads)))
		goto leave;
	int trainable = 0;
	for (int i = 0; i < nn_net_tensor_count(net); i++) {
		struct nn_tensor_info ti;
		nn_net_tensor_at(net, i, &ti);
		trainable += ti.trainable;
	}
	for (int i = 0; i < nn_net_tensor_count(net); i++) {
		struct nn_tensor_info ti;
		nn_net_tensor_at(net, i, &ti);
		if (!ti.trainable)
			continue;
		snprintf(name, sizeof(name), "d %s", ti.name);
		if ((rc = keep(o, trainable > MAX_NAMED_GRADS ? "d parameters" : "", name, 1,
			     grads + ti.offset, ti.numel)))
			goto leave;
	}
	if ((rc = nn_optim_create(net, &oo, &opt)) || (rc = nn_optim_step(opt)) ||
	    (rc = nn_net_params_get(net, params)) ||
	    (rc = keep(o, "", "params after SGD", 1, params, pc)))
		goto leave;
	rc = nn_net_forward_u8(net, (const uint8_t *const *)a->img, a->n, 0, out);
	if (!rc)
		rc = keep(o, "", "forward u8 (eval)", 0, out, ol);
leave:
	if (rc)
		fprintf(stderr, "%s on %s: %s\n", a->arch, nn_backend_name(b), nn_net_errmsg(net));
	nn_optim_destroy(opt);
	nn_net_destroy(net);
	free(out);
	free(din);
	free(grads);
	free(params);
	return rc;
}

/* max_batch > n exercises plans made for more images than a call has. */
static void case_net(struct ctx *t, const char *arch, int max_batch, int n, uint64_t seed)
{
	struct nn_arch_info info;
	char label[64];
	if (nn_arch_info(arch, &info)) {
		fprintf(stderr, "unknown architecture %s\n", arch);
		t->fails++;
		return;
	}
	struct net_arg a = { arch, max_batch, n, info.input_size, NULL, NULL, NULL };
	a.x = host_uniform((size_t)n * 3 * a.size * a.size, seed, -2, 2);
	a.dout = host_uniform((size_t)n * info.num_outputs, seed + 1, -1, 1);
	a.img = random_images(n, a.size, seed + 2);
	snprintf(label, sizeof(label), "%s whole net, batch %d of %d", arch, n, max_batch);
	check(t, label, run_net, &a, NET_TOL);
	free(a.x);
	free(a.dout);
	free_images(a.img, n);
}

/* ---- The two modes -------------------------------------------------------------- */

static void small_cases(struct ctx *t)
{
	header(t, "Ops at small shapes");
	struct { const char *label; struct nn_conv_shape s; int n, bias; } convs[] = {
		{ "conv 3x9x8 -> 4, 3x3 pad 1", { 2, 3, 9, 8, 4, 3, 3, 1, 1, 1, 1, 1, 0, 0,
		  0, 0, 0, 0, 0, 0 }, 2, 1 },
		{ "conv batch 2 of a plan for 3, 5x5/2", { 3, 4, 11, 11, 6, 5, 5, 2, 2, 2, 2, 1, 0, 0,
		  0, 0, 0, 0, 0, 0 },
		  2, 1 },
		{ "conv 2 groups, stride 2, no bias", { 2, 4, 9, 8, 6, 3, 3, 2, 2, 0, 0, 2, 0, 0,
		  0, 0, 0, 0, 0, 0 }, 2,
		  0 },
		{ "conv depthwise 5 channels", { 2, 5, 8, 7, 5, 3, 3, 2, 2, 1, 1, 5, 0, 0,
		  0, 0, 0, 0, 0, 0 }, 2, 1 },
		{ "conv 1x1", { 3, 6, 5, 5, 4, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 }, 3, 1 },
		{ "conv 11x11/4 pad 2 (AlexNet's first)", { 2, 3, 35, 35, 8, 11, 11, 4, 4, 2, 2, 1, 0,
		  0, 0, 0, 0, 0, 0, 0 }, 2, 1 },
	};
	for (size_t i = 0; i < sizeof(convs) / sizeof(convs[0]); i++)
		case_conv(t, convs[i].label, &convs[i].s, convs[i].n, convs[i].bias, 100 + 10 * i);

	struct { const char *label; struct nn_pool_shape s; int n; } pools[] = {
		{ "max pool 3x3/2", { NN_POOL_MAX, 2, 3, 13, 13, 3, 3, 2, 2, 0, 0, 0, 0, 0, 0, 0 }, 2 },
		{ "max pool 2x2/2 pad 1, batch 1 of 2", { NN_POOL_MAX, 2, 3, 7, 6, 2, 2, 2, 2, 1, 1, 0,
		  0, 0, 0, 0 }, 1 },
		{ "avg pool 3x3/2 pad 1", { NN_POOL_AVG, 2, 4, 9, 9, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 0 }, 2 },
		{ "adaptive avg 13x11 -> 6x4", { NN_POOL_ADAPTIVE_AVG, 2, 3, 13, 11, 0, 0, 0, 0, 0, 0,
		  6, 4, 0, 0, 0 }, 2 },
		{ "adaptive avg 5x5 -> 7x7 (overlap)", { NN_POOL_ADAPTIVE_AVG, 2, 2, 5, 5, 0, 0, 0, 0, 0,
		  0, 7, 7, 0, 0, 0 }, 2 },
	};
	for (size_t i = 0; i < sizeof(pools) / sizeof(pools[0]); i++)
		case_pool(t, pools[i].label, &pools[i].s, pools[i].n, 200 + 10 * i);

	struct nn_lrn_shape lrn5 = { 2, 7, 5, 4, 5, 1.0f, 0.75f, 1.0f, 0, 0, 0 };
	struct nn_lrn_shape lrn4 = { 2, 6, 3, 5, 4, 0.5f, 0.6f, 2.0f, 0, 0, 0 };
	case_lrn(t, "LRN size 5, alpha 1, beta 0.75", &lrn5, 2, 2.0f, 300);
	case_lrn(t, "LRN size 4 (even), beta 0.6", &lrn4, 2, 2.0f, 310);

	struct nn_fc_shape fc = { 3, 37, 19 };
	case_fc(t, "fc 37 -> 19", &fc, 3, 400);
	case_fc(t, "fc 37 -> 19, batch 2 of 3", &fc, 2, 410);

	struct elem_arg e;
	e = (struct elem_arg){ .kind = E_ACT, .count = 1000, .mode = NN_ACT_RELU };
	case_elem(t, "ReLU", &e, 500);
	e = (struct elem_arg){ .kind = E_ACT, .count = 1000, .mode = NN_ACT_RELU6 };
	case_elem(t, "ReLU6", &e, 510);
	e = (struct elem_arg){ .kind = E_DROPOUT, .count = 5000, .p = 0.5f, .seed = 0x1234567 };
	case_elem(t, "dropout p 0.5", &e, 520);
	e = (struct elem_arg){ .kind = E_DROPOUT, .count = 5000, .p = 0.25f, .seed = 99 };
	case_elem(t, "dropout p 0.25", &e, 530);
	e = (struct elem_arg){ .kind = E_ADD, .count = 1000 };
	case_elem(t, "residual add, accumulate", &e, 540);
	e = (struct elem_arg){ .kind = E_BN, .count = 2 * 6 * 35, .n = 2, .c = 6, .hw = 35 };
	case_elem(t, "batch norm 6 channels", &e, 550);
	e = (struct elem_arg){ .kind = E_FILL, .count = 777 };
	case_elem(t, "fill, copy", &e, 560);
	e = (struct elem_arg){ .kind = E_PAD, .pad = { 2, 3, 5, 4, 0, 1, 2, 1, 0, 0 } };
	if (!nn_pad_shape_check(&e.pad) && t->cpu->ops->pad_fwd) {
		e.count = (size_t)2 * 3 * 5 * 4;
		case_elem(t, "pad top 0, bottom 1, left 2, right 1", &e, 570);
	}
	e = (struct elem_arg){ .kind = E_L2NORM, .count = 2048 * 16, .n = 2048, .c = 16 };
	case_elem(t, "L2 normalisation, 2048 rows of 16", &e, 580);

	case_optim(t, "SGD momentum 0.9, wd 0.01, 3 steps", NN_OPTIM_SGD, 1000, 600);
	case_optim(t, "Adam wd 0.1, 3 steps", NN_OPTIM_ADAM, 1000, 610);
	case_optim(t, "AdamW wd 0.1, 3 steps", NN_OPTIM_ADAMW, 1000, 620);
	case_u8(t, "uint8 input, 3 images of 17x17", 3, 17, 630);

	header(t, "Whole nets");
	case_net(t, "small", 3, 2, 700);
}

/* Every layer of arch at batch n, as the net builds it. */
static void layer_cases(struct ctx *t, const char *arch, int n)
{
	struct nn_net_opts o = { .max_batch = n };
	nn_net *net = NULL;
	char err[256], label[96], title[96];
	if (nn_net_create(t->cpu, arch, &o, &net, err, sizeof(err))) {
		fprintf(stderr, "%s: %s\n", arch, err);
		t->fails++;
		return;
	}
	snprintf(title, sizeof(title), "%s, every layer at batch %d", arch, n);
	header(t, title);
	for (int i = 0; i < net->nlayers; i++) {
		const struct nn__layer *l = &net->layers[i];
		const struct nn__tensor *x = &net->tensors[l->in[0]], *y = &net->tensors[l->out];
		const uint64_t seed = 1000 + 10 * i;
		struct elem_arg e;
		switch (l->kind) {
		case NN__CONV: {
			const struct nn_conv_shape *s = &l->u.conv;
			snprintf(label, sizeof(label), "%s conv %dx%dx%d>%d %dx%d/%d p%d g%d", l->name,
				s->c, s->h, s->w, s->k, s->kh, s->kw, s->stride_h, s->pad_h, s->groups);
			case_conv(t, label, s, n, l->b >= 0, seed);
			break;
		}
		case NN__POOL: {
			const struct nn_pool_shape *s = &l->u.pool;
			snprintf(label, sizeof(label), "%s %s pool %dx%dx%d>%dx%d", l->name,
				s->mode == NN_POOL_MAX ? "max" : s->mode == NN_POOL_AVG ? "avg" : "adaptive",
				s->c, s->h, s->w, s->oh, s->ow);
			case_pool(t, label, s, n, seed);
			break;
		}
		case NN__LRN:
			snprintf(label, sizeof(label), "%s LRN %dx%dx%d size %d", l->name, l->u.lrn.c,
				l->u.lrn.h, l->u.lrn.w, l->u.lrn.size);
			case_lrn(t, label, &l->u.lrn, n, 5.0f, seed);
			break;
		case NN__FC:
			snprintf(label, sizeof(label), "%s fc %d>%d", l->name, l->u.fc.in, l->u.fc.out);
			case_fc(t, label, &l->u.fc, n, seed);
			break;
		case NN__ACT:
			e = (struct elem_arg){ .kind = E_ACT, .count = (size_t)n * y->size,
				.mode = l->u.act };
			snprintf(label, sizeof(label), "%s %s %zu", l->name,
				l->u.act == NN_ACT_RELU6 ? "ReLU6" : "ReLU", y->size);
			case_elem(t, label, &e, seed);
			break;
		case NN__DROPOUT:
			e = (struct elem_arg){ .kind = E_DROPOUT, .count = (size_t)n * y->size,
				.p = l->u.p, .seed = seed * 7919 + 1 };
			snprintf(label, sizeof(label), "%s dropout %g %zu", l->name, (double)l->u.p,
				y->size);
			case_elem(t, label, &e, seed);
			break;
		case NN__BN:
			e = (struct elem_arg){ .kind = E_BN, .count = (size_t)n * x->size, .n = n,
				.c = x->c, .hw = x->h * x->w };
			snprintf(label, sizeof(label), "%s batch norm %dx%dx%d", l->name, x->c, x->h,
				x->w);
			case_elem(t, label, &e, seed);
			break;
		case NN__ADD:
			e = (struct elem_arg){ .kind = E_ADD, .count = (size_t)n * y->size };
			snprintf(label, sizeof(label), "%s add %zu", l->name, y->size);
			case_elem(t, label, &e, seed);
			break;
		case NN__PAD:
			e = (struct elem_arg){ .kind = E_PAD, .count = (size_t)n * x->size,
				.pad = l->u.pad };
			e.pad.n = n;
			snprintf(label, sizeof(label), "%s pad", l->name);
			case_elem(t, label, &e, seed);
			break;
		}
	}
	nn_net_destroy(net);
}

static void usage(void)
{
	fprintf(stderr, "usage: nn_cuda_parity [-Cq] [-n batch] [-a arch,arch] [-o table.txt] "
		"small|nets\n");
}

/* The three CUDA backends, or with self_test three CPU backends (which
 * checks this program, every error then 0, without a GPU). */
static int open_gpus(struct ctx *t, int self_test, char *why, size_t len)
{
	static const char *const env[NCFG][3] = { { "fp32", "all", "auto" },
		{ "fp32", "gemm", "force" }, { "tf32", "all", "auto" }, { "bf16", "all", "auto" } };
	int rc = 0;
	unsetenv("NN_CUDA_TF32");
	for (int k = 0; k < NCFG && !rc; k++) {
		setenv("NN_CUDA_PRECISION", env[k][0], 1);
		setenv("NN_CUDA_CONV_ALGOS", env[k][1], 1);
		setenv("NN_CUDA_FILTER_GEMM", env[k][2], 1);
		rc = nn_backend_open_err(self_test ? "cpu" : "cuda", &t->gpu[k], why, len);
	}
	unsetenv("NN_CUDA_PRECISION");
	unsetenv("NN_CUDA_CONV_ALGOS");
	unsetenv("NN_CUDA_FILTER_GEMM");
	return rc;
}

/* Calls fn for each name of a comma-separated list. */
static void each_arch(struct ctx *t, const char *list, int n,
	void (*fn)(struct ctx *t, const char *arch, int n))
{
	char copy[128], *save = NULL;
	snprintf(copy, sizeof(copy), "%s", list);
	for (char *a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save))
		fn(t, a, n);
}

static void net_case(struct ctx *t, const char *arch, int n)
{
	case_net(t, arch, n, n, 800);
}

static void summary(struct ctx *t)
{
	char line[512];
	snprintf(line, sizeof(line), "\n%d rows, %d failed. Largest errors: fp32 %.2e (%s); "
		"gemm %.2e (%s); tf32 %.2e (%s); bf16 %.2e (%s)\n", t->rows, t->fails,
		t->worst[FP32], t->worst_at[FP32], t->worst[GEMM], t->worst_at[GEMM], t->worst[TF32],
		t->worst_at[TF32], t->worst[BF16], t->worst_at[BF16]);
	emit(t, line);
}

int main(int argc, char **argv)
{
	struct ctx t = { 0 };
	char why[256], archs[128] = "alexnet,cnnf", line[768];
	const char *copy_path = NULL;
	int n = 2, ch, rc = 1, self_test = 0;
	while ((ch = getopt(argc, argv, "n:a:o:Cq")) != -1) {
		switch (ch) {
		case 'C':
			self_test = 1;
			break;
		case 'q':
			t.quiet = 1;
			break;
		case 'n':
			n = atoi(optarg);
			break;
		case 'a':
			snprintf(archs, sizeof(archs), "%s", optarg);
			break;
		case 'o':
			copy_path = optarg;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (optind != argc - 1 || (strcmp(argv[optind], "small") && strcmp(argv[optind], "nets")) ||
	    n < 1) {
		usage();
		return 2;
	}
	if (open_gpus(&t, self_test, why, sizeof(why))) {
		printf("nn_cuda_parity: SKIPPED: %s\n", why);
		rc = 77;
		goto leave;
	}
	if (nn_backend_open("cpu", &t.cpu)) {
		fprintf(stderr, "nn_cuda_parity: cannot open the CPU backend\n");
		goto leave;
	}
	if (copy_path && !(t.copy = fopen(copy_path, "w"))) {
		perror(copy_path);
		goto leave;
	}
	snprintf(line, sizeof(line), "GPU-vs-CPU parity on %s\nCPU reference: %s\n"
		"rel = max|gpu - cpu| / max(max|cpu|, 1e-6) per output tensor. Columns: fp32 = exact "
		"FP32 (the default),\ngemm = exact FP32 without FFT/Winograd convolutions, tf32 and bf16 "
		"= NN_CUDA_PRECISION. Pass: gemm <= %.0e and\nfp32 <= %.0e per op (Winograd and FFT "
		"round more); a whole net's forward <= %.0e and %.0e "
		"(rounding compounds through every layer),\nits gradients are shown, not judged (-: a "
		"pre-activation rounded to the other side of zero,\nor a max-pool near-tie, moves a "
		"term); tf32 is measured, and fails only above %.0e (a bug);\nbf16 <= %.0e per op, "
		"%.0e on a whole net's forward.\n", nn_backend_device(t.gpu[FP32]),
		nn_backend_device(t.cpu), OP_TOL, FAST_ALGO_SLACK * OP_TOL, NET_TOL,
		FAST_ALGO_SLACK * NET_TOL, TF32_BUG, BF16_OP_TOL, BF16_NET_TOL);
	emit(&t, line);
	if (!strcmp(argv[optind], "small")) {
		small_cases(&t);
	} else {
		each_arch(&t, archs, n, layer_cases);
		header(&t, "Whole nets");
		each_arch(&t, archs, n, net_case);
	}
	summary(&t);
	rc = t.fails ? 1 : 0;
leave:
	for (int k = 0; k < NCFG; k++)
		nn_backend_close(t.gpu[k]);
	nn_backend_close(t.cpu);
	if (t.copy)
		fclose(t.copy);
	return rc;
}
