/* The oneDNN backend in BF16 (nn_backend_set_precision) against the
 * reference CPU backend in FP32: every convolution and fully connected
 * shape of every architecture (nn_arch_names, at its default input size,
 * batch 2, and batch 1 on the same plan), forward; then each whole
 * inference net (oneDNN fusing convolution + batch norm + activation).
 *
 * Tolerance: the CUDA parity table's BF16 bounds (tests/gpu/cuda/parity.c,
 * where the reasoning is): rel = max|bf16 - ref| / max(max|ref|, 1e-6)
 * <= 2e-2 per op, <= 1e-1 for a whole net's output. So that a backend that
 * quietly ran FP32 cannot pass, every op must also differ from the
 * reference by more than FP32 rounding (rel > 1e-5): BF16 operands carry
 * 8 significant bits, and that shows. (Every shape of these nets has a
 * BF16 kernel in oneDNN 2.6 on avx512_core_bf16; one that had not would
 * run FP32 and fail here, to be looked at.)
 *
 * Skipped (77) on a CPU without avx512_bf16. And where the CPU has it but
 * oneDNN is capped below avx512_core_bf16 (ONEDNN_MAX_CPU_ISA, in a child
 * process: oneDNN reads it once), setting BF16 is refused and the
 * backend's device line says why. */
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "err.h"
#include "harness.h"
#include "net_priv.h"
#include "nn_test.h"

extern char **environ;

#define BF16_OP_TOL 2e-2
#define BF16_NET_TOL 1e-1
#define FP32_ROUNDING 1e-5   /* test_onednn.c's OP_TOL: an FP32 result is this close */

static nn_backend *ref_b, *bf_b;

/* FAIL_ without the return, for helpers that return a value. */
#define NOTE_FAIL(...) do { fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); vr_test__failed = 1; } while (0)

static int cpu_has_bf16(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512bf16");
}

/* Opens both backends, or skips (no avx512_bf16) or fails the test. */
static int open_both(void)
{
	if (!cpu_has_bf16()) {
		vr_test__skipped = 1;
		fprintf(stderr,
			"  skipped: this CPU has no avx512_bf16 (oneDNN's BF16 needs it)\n");
		return -1;
	}
	if (!ref_b && nn_backend_open("cpu-ref", &ref_b)) {
		NOTE_FAIL("cannot open the reference backend");
		return -1;
	}
	if (!bf_b) {
		char why[256];
		int rc = nn_backend_open_err("onednn", &bf_b, why, sizeof(why));
		if (rc) {
			NOTE_FAIL("cannot open the onednn backend: %s (%s)", why, vr_strerror(rc));
			return -1;
		}
		rc = nn_backend_set_precision(bf_b, NN_PRECISION_BF16);
		if (rc) {
			NOTE_FAIL("the CPU has avx512_bf16 but onednn refused BF16: %s (%s)",
				vr_strerror(rc), nn_backend_device(bf_b));
			return -1;
		}
	}
	return 0;
}

static float *nan_buf(size_t len)
{
	float *a = nn_test_buf(len);
	for (size_t i = 0; a && i < len; i++)
		a[i] = NAN;
	return a;
}

/* The shapes already checked (nets repeat theirs): whether shape (size
 * bytes) is among the n in list, adding it when not and cap allows. */
static struct nn_conv_shape seen_conv[512];
static struct nn_fc_shape seen_fc[64];
static int nseen_conv, nseen_fc;

static int seen(void *list, int *n, int cap, const void *shape, size_t size)
{
	for (int i = 0; i < *n; i++)
		if (!memcmp((char *)list + i * size, shape, size))
			return 1;
	if (*n < cap)
		memcpy((char *)list + (*n)++ * size, shape, size);
	return 0;
}

/* One convolution forward on both backends for n images of plans made for
 * s->n; returns the rel error, or -1 (the test has failed). */
static double conv_err(const struct nn_conv_shape *s, int n, uint64_t seed)
{
	nn_backend *bk[2] = { ref_b, bf_b };
	void *plan[2] = { NULL, NULL }, *ws[2] = { NULL, NULL };
	size_t wsb[2];
	const size_t xl = (size_t)n * s->c * s->h * s->w, yl = (size_t)n * s->k * s->oh * s->ow;
	const size_t wl = (size_t)s->k * (s->c / s->groups) * s->kh * s->kw;
	const float bound = 1.0f / sqrtf((float)(s->c / s->groups * s->kh * s->kw));
	float *x = nn_test_random_buf(xl, seed, -1, 1),
		*w = nn_test_random_buf(wl, seed + 1, -bound, bound);
	float *bv = nn_test_random_buf(s->k, seed + 2, -bound, bound),
		*y[2] = { nan_buf(yl), nan_buf(yl) };
	double e = -1;
	bf_b->param_version++;        /* new weights, maybe at the old one's address */
	for (int i = 0; i < 2; i++) {
		if (bk[i]->ops->plan_create(bk[i], NN_OP_CONV, s, &plan[i], &wsb[i]) ||
		    bk[i]->ops->alloc(bk[i], wsb[i] ? wsb[i] : 64, &ws[i]) ||
		    bk[i]->ops->conv_fwd(bk[i], plan[i], s, n, x, w, bv, y[i], ws[i]))
			goto leave;
	}
	e = nn_rel_error(y[1], y[0], yl);
leave:
	for (int i = 0; i < 2; i++) {
		if (plan[i])
			bk[i]->ops->plan_free(bk[i], plan[i]);
		if (ws[i])
			bk[i]->ops->free(bk[i], ws[i]);
		free(y[i]);
	}
	free(x); free(w); free(bv);
	return e;
}

/* As conv_err for a fully connected layer, with and without bias. */
static double fc_err(const struct nn_fc_shape *s, int n, int bias, uint64_t seed)
{
	nn_backend *bk[2] = { ref_b, bf_b };
	void *plan[2] = { NULL, NULL };
	size_t wsb;
	const size_t xl = (size_t)n * s->in, yl = (size_t)n * s->out, wl = (size_t)s->in * s->out;
	const float bound = 1.0f / sqrtf((float)s->in);
	float *x = nn_test_random_buf(xl, seed, 0, 1),
		*w = nn_test_random_buf(wl, seed + 1, -bound, bound);
	float *bv = nn_test_random_buf(s->out, seed + 2, -bound, bound),
		*y[2] = { nan_buf(yl), nan_buf(yl) };
	double e = -1;
	bf_b->param_version++;
	for (int i = 0; i < 2; i++)
		if (bk[i]->ops->plan_create(bk[i], NN_OP_FC, s, &plan[i], &wsb) ||
		    bk[i]->ops->fc_fwd(bk[i], plan[i], s, n, x, w, bias ? bv : NULL, y[i]))
			goto leave;
	e = nn_rel_error(y[1], y[0], yl);
leave:
	for (int i = 0; i < 2; i++) {
		if (plan[i])
			bk[i]->ops->plan_free(bk[i], plan[i]);
		free(y[i]);
	}
	free(x); free(w); free(bv);
	return e;
}

/* Every conv and FC shape of arch, as its inference net plans them on the
 * reference (NCHW, nothing fused), forward at batch 2 and 1. Each op must
 * also show BF16 rounding (it ran BF16, not FP32). */
static void arch_ops(const char *arch)
{
	if (open_both())
		return;
	struct nn_net_opts o = { .max_batch = 2, .inference_only = 1 };
	char err[256] = "";
	nn_net *net = NULL;
	if (nn_net_create(ref_b, arch, &o, &net, err, sizeof(err)))
		FAIL_("%s: %s", arch, err);
	int ops = 0, bf16 = 0;
	double worst = 0;
	for (int l = 0; l < net->nlayers; l++) {
		const struct nn__layer *ly = &net->layers[l];
		for (int n = 2; n >= 1; n--) {
			double e;
			if (ly->kind == NN__CONV) {
				struct nn_conv_shape s = ly->u.conv;
				if (n == 2 && seen(seen_conv, &nseen_conv, 512, &s, sizeof(s)))
					break;
				e = conv_err(&s, n, 100 + l * 8 + n);
			} else if (ly->kind == NN__FC) {
				struct nn_fc_shape s = ly->u.fc;
				if (n == 2 && seen(seen_fc, &nseen_fc, 64, &s, sizeof(s)))
					break;
				e = fc_err(&s, n, n == 2, 100 + l * 8 + n);
			} else {
				break;
			}
			char name[32];
			snprintf(name, sizeof(name), "%s", ly->name);
			if (e < 0) {
				nn_net_destroy(net);
				FAIL_("%s %s n=%d: an op failed", arch, name, n);
			}
			ops++;
			bf16 += e > FP32_ROUNDING;
			worst = e > worst ? e : worst;
			if (e > BF16_OP_TOL || !(e > FP32_ROUNDING)) {
				nn_net_destroy(net);
				FAIL_("%s %s n=%d: rel error %.3g (BF16 bound %g; FP32 rounding %g)",
					arch, name, n, e, BF16_OP_TOL, FP32_ROUNDING);
			}
		}
	}
	nn_net_destroy(net);
	fprintf(stderr, "  %s: %d op runs, worst rel error %.3g, %d showing BF16 rounding\n", arch,
		ops, worst, bf16);
	ASSERT_MSG(ops > 0, "%s has no conv or FC layer", arch);
}

TEST(ops_alexnet)
{
	arch_ops("alexnet");
}

TEST(ops_cnnf)
{
	arch_ops("cnnf");
}

TEST(ops_small)
{
	arch_ops("small");
}

TEST(ops_mobilenet_v2)
{
	arch_ops("mobilenet_v2");
}

TEST(ops_resnet50)
{
	arch_ops("resnet50");
}

TEST(every_arch_is_covered)
{
	static const char *const covered[] = { "alexnet", "cnnf", "small", "mobilenet_v2",
		"resnet50", NULL };
	for (const char *const *a = nn_arch_names(); *a; a++) {
		int found = 0;
		for (int i = 0; covered[i]; i++)
			found |= !strcmp(covered[i], *a);
		ASSERT_MSG(found, "architecture %s has no ops_ test here", *a);
	}
}

/* A whole inference net, BF16 oneDNN (fused, kept layouts) against the
 * FP32 reference, for the same parameters (the seeded init scaled and
 * shifted a little, so batch norms are no identities). */
static void net_case(const char *arch, int size, int n)
{
	if (open_both())
		return;
	nn_backend *bk[2] = { ref_b, bf_b };
	nn_net *net[2] = { NULL, NULL };
	char err[256] = "";
	struct nn_net_opts o = { .input_size = size, .max_batch = n, .inference_only = 1 };
	for (int i = 0; i < 2; i++)
		if (nn_net_create(bk[i], arch, &o, &net[i], err, sizeof(err)) ||
		    nn_net_init(net[i], 5)) {
			nn_net_destroy(net[0]);
			FAIL_("%s: %s", arch, err);
		}
	double e = nn_test_same_params_forward(net[0], net[1], n, size);
	nn_net_destroy(net[0]);
	nn_net_destroy(net[1]);
	fprintf(stderr, "  %s at %d px, %d images: output rel error %.3g\n", arch, size, n, e);
	ASSERT_MSG(e <= BF16_NET_TOL, "%s: rel error %.3g > %g", arch, e, BF16_NET_TOL);
	ASSERT_MSG(e > FP32_ROUNDING, "%s: rel error %.3g: the net ran FP32, not BF16", arch, e);
}

TEST(net_alexnet)
{
	net_case("alexnet", 224, 2);
}

TEST(net_mobilenet_v2)
{
	net_case("mobilenet_v2", 96, 2);
}

TEST(net_cnnf_small_resnet50)
{
	net_case("cnnf", 224, 1);
	net_case("small", 64, 3);
	net_case("resnet50", 64, 2);
}

TEST(precision_and_threads_reported)
{
	if (open_both())
		return;
	ASSERT_EQ_INT(nn_backend_precision(bf_b), NN_PRECISION_BF16);
	ASSERT_CONTAINS(nn_backend_device(bf_b), "BF16");
	ASSERT_EQ_INT(nn_backend_set_precision(bf_b, NN_PRECISION_TF32), VR_EUNSUPPORTED);
	nn_backend *b;
	ASSERT_OK(nn_backend_open("onednn", &b));
	ASSERT_EQ_INT(nn_backend_precision(b), NN_PRECISION_FP32);
	ASSERT_CONTAINS(nn_backend_device(b), "FP32");
	ASSERT_OK(nn_backend_set_precision(b, NN_PRECISION_BF16));
	ASSERT_OK(nn_backend_set_precision(b, NN_PRECISION_FP32));
	ASSERT_CONTAINS(nn_backend_device(b), "FP32");
	/* the threads, set by a program that splits the CPUs (featured) */
	ASSERT_OK(nn_backend_set_threads(b, 1));
	ASSERT_CONTAINS(nn_backend_device(b), "1 OpenMP thread, FP32");
	ASSERT_EQ_INT(nn_backend_set_threads(b, 0), VR_EINVAL);
	nn_backend_close(b);
	ASSERT_OK(nn_backend_open("cpu-ref", &b));
	ASSERT_EQ_INT(nn_backend_set_threads(b, 1), VR_EUNSUPPORTED);
	nn_backend_close(b);
}

/* The child of refused_below_avx512_core_bf16, with oneDNN capped. */
static int capped_child(void)
{
	nn_backend *b;
	if (nn_backend_open("onednn", &b))
		return 2;
	int rc = nn_backend_set_precision(b, NN_PRECISION_BF16);
	printf("%d %s\n", rc, nn_backend_device(b));
	nn_backend_close(b);
	return 0;
}

TEST(refused_below_avx512_core_bf16)
{
	if (!cpu_has_bf16())
		SKIP("this CPU has no avx512_bf16: the refusal is the only path (ops_ tests skip)");
	char out[] = "/tmp/test_onednn_bf16.XXXXXX";
	int fd = mkstemp(out);
	ASSERT_MSG(fd >= 0, "mkstemp");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd, 1);
	char *const argv[] = { "test_onednn_bf16", "--capped-child", NULL };
	/* the environment plus the cap */
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **envp = calloc(ne + 2, sizeof(*envp));
	ASSERT_MSG(envp != NULL, "calloc");
	for (size_t i = 0; i < ne; i++)
		envp[i] = environ[i];
	envp[ne] = "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI";
	pid_t pid;
	int st = -1;
	int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp);
	if (!rc)
		waitpid(pid, &st, 0);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	char line[512] = "";
	FILE *f = fdopen(fd, "r");
	rewind(f);
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	unlink(out);
	ASSERT_MSG(rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the capped child failed (%d)",
		st);
	ASSERT_MSG(atoi(line) == VR_EUNSUPPORTED, "capped at avx512_core_vnni, BF16 gave: %s",
		line);
	ASSERT_CONTAINS(line, "BF16 needs avx512_bf16");
	ASSERT_CONTAINS(line, "avx512_core_vnni");
}

static const struct vr_test tests[] = {
	T(ops_alexnet),
	T(ops_cnnf),
	T(ops_small),
	T(ops_mobilenet_v2),
	T(ops_resnet50),
	T(every_arch_is_covered),
	T(net_alexnet),
	T(net_mobilenet_v2),
	T(net_cnnf_small_resnet50),
	T(precision_and_threads_reported),
	T(refused_below_avx512_core_bf16),
	{ 0 },
};

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--capped-child"))
		return capped_child();
	int rc = vr_test_main(tests, argc, argv);
	nn_backend_close(ref_b);
	nn_backend_close(bf_b);
	return rc;
}
