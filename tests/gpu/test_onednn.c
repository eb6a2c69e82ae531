/* The oneDNN backend (gpu/onednn.c) against the reference CPU backend, op
 * by op, on seeded random inputs: every output and every gradient of
 * convolution (groups, depthwise, 1x1, no bias, floor-mode strides, a
 * batch below the plan's and back), pooling, LRN and fully connected,
 * with the acc paths. Outputs that should be overwritten are filled with
 * NaN first, so an op that reads them fails; accumulated ones start from
 * random values.
 *
 * Tolerance: the CUDA parity table's (tests/gpu/cuda/parity.c), rel =
 * max|onednn - ref| / max(max|ref|, 1e-6) <= 1e-5 (OP_TOL, its exact-sum
 * column: the plans here ask oneDNN for direct convolution, never
 * Winograd). Ops the oneDNN backend leaves to the reference (bias
 * gradient, pooling and LRN backward, uneven adaptive pooling, even LRN
 * windows) are checked too, so a wrong fallback shows up. The fused
 * convolution (+ batch norm + ReLU/ReLU6) of inference nets is checked op
 * by op and through a whole MobileNetV2. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"
#include "harness.h"
#include "net_priv.h"
#include "nn_test.h"

#define OP_TOL 1e-5
/* a whole net: 60 layers of sums in another order */
#define NET_TOL 1e-4

static nn_backend *ref_b, *dnn_b;

static void open_both(void)
{
	if (!ref_b && nn_backend_open("cpu-ref", &ref_b))
		FAIL_("cannot open the reference backend");
	if (!dnn_b) {
		char why[256];
		int rc = nn_backend_open_err("onednn", &dnn_b, why, sizeof(why));
		if (rc)
			FAIL_("cannot open the onednn backend: %s (%s)", why, vr_strerror(rc));
	}
}

/* len NaNs (an output to be overwritten), or a copy of src. */
static float *init_buf(const float *src, size_t len)
{
	float *a = nn_test_buf(len);
	for (size_t i = 0; a && i < len; i++)
		a[i] = src ? src[i] : NAN;
	return a;
}

#define ASSERT_MATCH_TOL(got, want, len, what, tol) do { \
	double e_ = nn_rel_error((got), (want), (len)); \
	ASSERT_MSG(e_ <= (tol), "%s: rel error %.3g > %g", (what), e_, (tol)); } while (0)
#define ASSERT_MATCH(got, want, len, what) ASSERT_MATCH_TOL(got, want, len, what, OP_TOL)

/* ---- Convolution --------------------------------------------------------- */

struct conv_io {
	float *y, *dx, *dxa, *dw, *db;
};

/* Runs every convolution op of backend b for n images, on its plan. */
static void conv_run(nn_backend *b, void *plan, const struct nn_conv_shape *s, int n, int bias,
	const float *x, const float *w, const float *bv, const float *dy, const float *dx0,
	const float *dw0, const float *db0, void *ws, struct conv_io *o)
{
	const size_t xl = (size_t)n * s->c * s->h * s->w, yl = (size_t)n * s->k * s->oh * s->ow;
	const size_t wl = (size_t)s->k * (s->c / s->groups) * s->kh * s->kw;
	o->y = init_buf(NULL, yl);
	o->dx = init_buf(NULL, xl);
	o->dxa = init_buf(dx0, xl);
	o->dw = init_buf(dw0, wl);
	o->db = init_buf(db0, s->k);
	ASSERT_OK(b->ops->conv_fwd(b, plan, s, n, x, w, bias ? bv : NULL, o->y, ws));
	ASSERT_OK(b->ops->conv_bwd_data(b, plan, s, n, dy, w, o->dx, 0, ws));
	ASSERT_OK(b->ops->conv_bwd_data(b, plan, s, n, dy, w, o->dxa, 1, ws));
	ASSERT_OK(b->ops->conv_bwd_filter(b, plan, s, n, x, dy, o->dw, ws));
	ASSERT_OK(b->ops->conv_bwd_bias(b, plan, s, n, dy, o->db));
}

static void conv_io_free(struct conv_io *o)
{
	free(o->y); free(o->dx); free(o->dxa); free(o->dw); free(o->db);
}

/* The shape's plan and workspace on the reference (0) and oneDNN (1). */
static void conv_plans(const struct nn_conv_shape *s, void *plan[2], void *ws[2])
{
	nn_backend *bk[2] = { ref_b, dnn_b };
	size_t wsb[2];
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(bk[i]->ops->plan_create(bk[i], NN_OP_CONV, s, &plan[i], &wsb[i]));
		ASSERT_OK(bk[i]->ops->alloc(bk[i], wsb[i] ? wsb[i] : 64, &ws[i]));
	}
}

/* The shape's plan on both backends; calls for each batch in ns[] on the
 * same plans (a batch below the plan's, then the plan's again). */
static void conv_case(struct nn_conv_shape s, const int *ns, int calls, int bias, uint64_t seed)
{
	open_both();
	if (vr_test__failed)
		return;
	ASSERT_OK(nn_conv_shape_check(&s));
	void *plan[2] = { NULL, NULL }, *ws[2] = { NULL, NULL };
	nn_backend *bk[2] = { ref_b, dnn_b };
	conv_plans(&s, plan, ws);
	if (vr_test__failed)
		return;
	for (int c = 0; c < calls; c++) {
		const int n = ns[c];
		const size_t xl = (size_t)n * s.c * s.h * s.w, yl = (size_t)n * s.k * s.oh * s.ow;
		const size_t wl = (size_t)s.k * (s.c / s.groups) * s.kh * s.kw;
		const float bound = 1.0f / sqrtf((float)(s.c / s.groups * s.kh * s.kw));
		uint64_t sd = seed + 16 * c;
		float *x = nn_test_random_buf(xl, sd, -1, 1),
			*w = nn_test_random_buf(wl, sd + 1, -bound, bound);
		float *bv = nn_test_random_buf(s.k, sd + 2, -bound, bound),
			*dy = nn_test_random_buf(yl, sd + 3, -1, 1);
		float *dx0 = nn_test_random_buf(xl, sd + 4, -1, 1),
			*dw0 = nn_test_random_buf(wl, sd + 5, -1, 1);
		float *db0 = nn_test_random_buf(s.k, sd + 6, -1, 1);
		struct conv_io o[2];
		dnn_b->param_version++;    /* new weights, maybe at the old one's address */
		for (int i = 0; i < 2; i++)
			conv_run(bk[i], plan[i], &s, n, bias, x, w, bv, dy, dx0, dw0, db0, ws[i],
				&o[i]);
		if (vr_test__failed)
			return;
		char what[96];
#define CHECK(field, len, name) do { snprintf(what, sizeof(what), "n=%d %s", n, name); \
	ASSERT_MATCH(o[1].field, o[0].field, len, what); } while (0)
		CHECK(y, yl, "forward");
		CHECK(dx, xl, "d input");
		CHECK(dxa, xl, "d input (acc)");
		CHECK(dw, wl, "d weight (acc)");
		CHECK(db, (size_t)s.k, "d bias (acc)");
#undef CHECK
		conv_io_free(&o[0]);
		conv_io_free(&o[1]);
		free(x); free(w); free(bv); free(dy); free(dx0); free(dw0); free(db0);
	}
	for (int i = 0; i < 2; i++) {
		bk[i]->ops->plan_free(bk[i], plan[i]);
		bk[i]->ops->free(bk[i], ws[i]);
	}
}

#define CONV(...) ((struct nn_conv_shape){ __VA_ARGS__ })

TEST(conv_alexnet_conv1_like)
{
	static const int ns[] = { 2 };
	conv_case(CONV(.n = 2, .c = 3, .h = 63, .w = 63, .k = 16, .kh = 11, .kw = 11,
		.stride_h = 4, .stride_w = 4, .pad_h = 2, .pad_w = 2, .groups = 1), ns, 1, 1, 101);
}

TEST(conv_3x3_pad)
{
	static const int ns[] = { 3 };
	conv_case(CONV(.n = 3, .c = 24, .h = 13, .w = 11, .k = 32, .kh = 3, .kw = 3,
		.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 1), ns, 1, 1, 201);
}

TEST(conv_groups2_stride2_floor)
{
	/* (14 + 2 - 3) / 2 + 1 = 7 rows: the last input row is never read */
	static const int ns[] = { 2 };
	conv_case(CONV(.n = 2, .c = 8, .h = 14, .w = 15, .k = 12, .kh = 3, .kw = 3,
		.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .groups = 2), ns, 1, 1, 301);
}

TEST(conv_depthwise_stride2)
{
	static const int ns[] = { 2 };
	conv_case(CONV(.n = 2, .c = 32, .h = 14, .w = 14, .k = 32, .kh = 3, .kw = 3,
		.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .groups = 32), ns, 1, 0, 401);
}

TEST(conv_depthwise_stride1)
{
	static const int ns[] = { 2 };
	conv_case(CONV(.n = 2, .c = 16, .h = 9, .w = 9, .k = 16, .kh = 3, .kw = 3,
		.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 16), ns, 1, 1, 451);
}

TEST(conv_pointwise_no_bias)
{
	static const int ns[] = { 4 };
	conv_case(CONV(.n = 4, .c = 32, .h = 7, .w = 7, .k = 48, .kh = 1, .kw = 1,
		.stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0, .groups = 1), ns, 1, 0, 501);
}

TEST(conv_rectangular_stride3)
{
	static const int ns[] = { 1 };
	conv_case(CONV(.n = 1, .c = 5, .h = 17, .w = 12, .k = 7, .kh = 5, .kw = 2,
		.stride_h = 3, .stride_w = 2, .pad_h = 2, .pad_w = 0, .groups = 1), ns, 1, 1, 601);
}

TEST(conv_smaller_batch_then_full)
{
	/* a batch below the plan's re-makes the primitives, and the full
	 * batch after it re-makes them again */
	static const int ns[] = { 4, 1, 3, 4 };
	conv_case(CONV(.n = 4, .c = 16, .h = 12, .w = 12, .k = 24, .kh = 3, .kw = 3,
		.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 1), ns, 4, 1, 701);
}

/* The weights' reordered copy is made once per (pointer, param_version):
 * weights changed in place without a new version still give the old
 * output (the copy is kept: no per-call reorder), and the next version
 * gives the new weights' output. A 3x3 convolution over 32 channels has
 * blocked weights in oneDNN 2.6 (ABcd16b16a, Acdb32a), so it is staged. */
TEST(conv_weights_reordered_once_per_version)
{
	open_both();
	if (vr_test__failed)
		return;
	struct nn_conv_shape s = CONV(.n = 2, .c = 32, .h = 8, .w = 8, .k = 32, .kh = 3, .kw = 3,
		.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 1);
	ASSERT_OK(nn_conv_shape_check(&s));
	void *plan[2] = { NULL, NULL }, *ws[2] = { NULL, NULL };
	nn_backend *bk[2] = { ref_b, dnn_b };
	conv_plans(&s, plan, ws);
	if (vr_test__failed)
		return;
	const size_t xl = 2 * 32 * 64, wl = 32 * 32 * 9;
	float *x = nn_test_random_buf(xl, 81, -1, 1), *w = nn_test_random_buf(wl, 82, -0.1f, 0.1f);
	float *y0 = nn_test_buf(xl), *y1 = nn_test_buf(xl), *ref = nn_test_buf(xl);
	dnn_b->param_version++;
	ASSERT_OK(dnn_b->ops->conv_fwd(dnn_b, plan[1], &s, 2, x, w, NULL, y0, ws[1]));
	fill_uniform(w, wl, 83, -0.1f, 0.1f);
	ASSERT_OK(dnn_b->ops->conv_fwd(dnn_b, plan[1], &s, 2, x, w, NULL, y1, ws[1]));
	ASSERT_MSG(!memcmp(y0, y1, sizeof(float) * xl),
		"the weights were reordered again without a new param_version");
	dnn_b->param_version++;
	ASSERT_OK(dnn_b->ops->conv_fwd(dnn_b, plan[1], &s, 2, x, w, NULL, y1, ws[1]));
	ASSERT_OK(ref_b->ops->conv_fwd(ref_b, plan[0], &s, 2, x, w, NULL, ref, ws[0]));
	ASSERT_MATCH(y1, ref, xl, "forward after a new param_version");
	/* backward data keeps its own copy (another layout), keyed the same way */
	ASSERT_OK(dnn_b->ops->conv_bwd_data(dnn_b, plan[1], &s, 2, x, w, y1, 0, ws[1]));
	ASSERT_OK(ref_b->ops->conv_bwd_data(ref_b, plan[0], &s, 2, x, w, ref, 0, ws[0]));
	ASSERT_MATCH(y1, ref, xl, "backward data");
	free(x); free(w); free(y0); free(y1); free(ref);
	for (int i = 0; i < 2; i++) {
		bk[i]->ops->plan_free(bk[i], plan[i]);
		bk[i]->ops->free(bk[i], ws[i]);
	}
}

/* ---- Pooling ------------------------------------------------------------- */

static void pool_case(struct nn_pool_shape s, int n, uint64_t seed)
{
	open_both();
	if (vr_test__failed)
		return;
	ASSERT_OK(nn_pool_shape_check(&s));
	const size_t xl = (size_t)n * s.c * s.h * s.w, yl = (size_t)n * s.c * s.oh * s.ow;
	float *x = nn_test_buf(xl), *dy = nn_test_random_buf(yl, seed + 1, -1, 1),
		*dx0 = nn_test_random_buf(xl, seed + 2, -1, 1);
	/* distinct values, shuffled: no max-pooling tie to break two ways */
	for (size_t i = 0; i < xl; i++)
		x[i] = -1.0f + 2.0f * ((float)i + 0.5f) / (float)xl;
	for (size_t i = xl; i > 1; i--) {
		size_t j = nn_splitmix64(seed, i) % i;
		float v = x[i - 1];
		x[i - 1] = x[j];
		x[j] = v;
	}
	nn_backend *bk[2] = { ref_b, dnn_b };
	float *y[2], *dx[2], *dxa[2];
	for (int i = 0; i < 2; i++) {
		void *plan = NULL;
		size_t wsb;
		ASSERT_OK(bk[i]->ops->plan_create(bk[i], NN_OP_POOL, &s, &plan, &wsb));
		ASSERT_EQ_INT(wsb, 0);
		y[i] = init_buf(NULL, yl);
		dx[i] = init_buf(NULL, xl);
		dxa[i] = init_buf(dx0, xl);
		ASSERT_OK(bk[i]->ops->pool_fwd(bk[i], plan, &s, n, x, y[i]));
		ASSERT_OK(bk[i]->ops->pool_bwd(bk[i], plan, &s, n, x, y[i], dy, dx[i], 0));
		ASSERT_OK(bk[i]->ops->pool_bwd(bk[i], plan, &s, n, x, y[i], dy, dxa[i], 1));
		bk[i]->ops->plan_free(bk[i], plan);
	}
	ASSERT_MATCH(y[1], y[0], yl, "forward");
	ASSERT_MATCH(dx[1], dx[0], xl, "d input");
	ASSERT_MATCH(dxa[1], dxa[0], xl, "d input (acc)");
	for (int i = 0; i < 2; i++) {
		free(y[i]); free(dx[i]); free(dxa[i]);
	}
	free(x); free(dy); free(dx0);
}

#define POOL(...) ((struct nn_pool_shape){ __VA_ARGS__ })

TEST(pool_max_alexnet)
{
	pool_case(POOL(.mode = NN_POOL_MAX, .n = 2, .c = 8, .h = 27, .w = 27, .kh = 3, .kw = 3,
		.stride_h = 2, .stride_w = 2), 2, 11);
}

TEST(pool_max_pad_floor)
{
	pool_case(POOL(.mode = NN_POOL_MAX, .n = 3, .c = 4, .h = 10, .w = 9, .kh = 3, .kw = 3,
		.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1), 2, 12);
}

TEST(pool_avg_pad)
{
	pool_case(POOL(.mode = NN_POOL_AVG, .n = 2, .c = 5, .h = 8, .w = 8, .kh = 3, .kw = 3,
		.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1), 2, 13);
}

TEST(pool_adaptive_avg_even)
{
	pool_case(POOL(.mode = NN_POOL_ADAPTIVE_AVG, .n = 2, .c = 16, .h = 7, .w = 7, .oh = 1,
		.ow = 1), 2, 14);
}

TEST(pool_adaptive_avg_uneven)
{
	pool_case(POOL(.mode = NN_POOL_ADAPTIVE_AVG, .n = 2, .c = 3, .h = 13, .w = 11, .oh = 6,
		.ow = 6), 1, 15);
}

/* ---- LRN ----------------------------------------------------------------- */

static void lrn_case(struct nn_lrn_shape s, int n, uint64_t seed)
{
	open_both();
	if (vr_test__failed)
		return;
	ASSERT_OK(nn_lrn_shape_check(&s));
	const size_t xl = (size_t)n * s.c * s.h * s.w;
	float *x = nn_test_random_buf(xl, seed, -2, 2),
		*dy = nn_test_random_buf(xl, seed + 1, -1, 1);
	float *dx0 = nn_test_random_buf(xl, seed + 2, -1, 1);
	nn_backend *bk[2] = { ref_b, dnn_b };
	float *y[2], *dx[2], *dxa[2];
	for (int i = 0; i < 2; i++) {
		void *plan = NULL, *ws = NULL;
		size_t wsb;
		ASSERT_OK(bk[i]->ops->plan_create(bk[i], NN_OP_LRN, &s, &plan, &wsb));
		ASSERT_OK(bk[i]->ops->alloc(bk[i], wsb ? wsb : 64, &ws));
		y[i] = init_buf(NULL, xl);
		dx[i] = init_buf(NULL, xl);
		dxa[i] = init_buf(dx0, xl);
		ASSERT_OK(bk[i]->ops->lrn_fwd(bk[i], plan, &s, n, x, y[i], ws));
		ASSERT_OK(bk[i]->ops->lrn_bwd(bk[i], plan, &s, n, x, y[i], dy, dx[i], 0, ws));
		ASSERT_OK(bk[i]->ops->lrn_bwd(bk[i], plan, &s, n, x, y[i], dy, dxa[i], 1, ws));
		bk[i]->ops->plan_free(bk[i], plan);
		bk[i]->ops->free(bk[i], ws);
	}
	ASSERT_MATCH(y[1], y[0], xl, "forward");
	ASSERT_MATCH(dx[1], dx[0], xl, "d input");
	ASSERT_MATCH(dxa[1], dxa[0], xl, "d input (acc)");
	for (int i = 0; i < 2; i++) {
		free(y[i]); free(dx[i]); free(dxa[i]);
	}
	free(x); free(dy); free(dx0);
}

TEST(lrn_size5_caffenet)
{
	lrn_case((struct nn_lrn_shape){ .n = 2, .c = 32, .h = 7, .w = 6, .size = 5,
		.alpha = 1e-4f, .beta = 0.75f, .k = 1.0f }, 2, 21);
}

TEST(lrn_size4_even_large_alpha)
{
	lrn_case((struct nn_lrn_shape){ .n = 2, .c = 9, .h = 5, .w = 5, .size = 4,
		.alpha = 0.5f, .beta = 0.75f, .k = 2.0f }, 1, 22);
}

/* ---- Fully connected ----------------------------------------------------- */

static void fc_case(int n, int in, int out, int bias, uint64_t seed)
{
	open_both();
	if (vr_test__failed)
		return;
	struct nn_fc_shape s = { .n = n, .in = in, .out = out };
	const size_t xl = (size_t)n * in, yl = (size_t)n * out, wl = (size_t)in * out;
	float *x = nn_test_random_buf(xl, seed, -1, 1),
		*w = nn_test_random_buf(wl, seed + 1, -0.1f, 0.1f);
	float *bv = nn_test_random_buf(out, seed + 2, -0.1f, 0.1f),
		*dy = nn_test_random_buf(yl, seed + 3, -1, 1);
	float *dx0 = nn_test_random_buf(xl, seed + 4, -1, 1),
		*dw0 = nn_test_random_buf(wl, seed + 5, -1, 1);
	float *db0 = nn_test_random_buf(out, seed + 6, -1, 1);
	nn_backend *bk[2] = { ref_b, dnn_b };
	float *y[2], *dx[2], *dxa[2], *dw[2], *db[2];
	for (int i = 0; i < 2; i++) {
		void *plan = NULL;
		size_t wsb;
		ASSERT_OK(bk[i]->ops->plan_create(bk[i], NN_OP_FC, &s, &plan, &wsb));
		y[i] = init_buf(NULL, yl);
		dx[i] = init_buf(NULL, xl);
		dxa[i] = init_buf(dx0, xl);
		dw[i] = init_buf(dw0, wl);
		db[i] = init_buf(db0, out);
		ASSERT_OK(bk[i]->ops->fc_fwd(bk[i], plan, &s, n, x, w, bias ? bv : NULL, y[i]));
		ASSERT_OK(bk[i]->ops->fc_bwd_data(bk[i], plan, &s, n, dy, w, dx[i], 0));
		ASSERT_OK(bk[i]->ops->fc_bwd_data(bk[i], plan, &s, n, dy, w, dxa[i], 1));
		ASSERT_OK(bk[i]->ops->fc_bwd_weights(bk[i], plan, &s, n, x, dy, dw[i],
			bias ? db[i] : NULL));
		bk[i]->ops->plan_free(bk[i], plan);
	}
	ASSERT_MATCH(y[1], y[0], yl, "forward");
	ASSERT_MATCH(dx[1], dx[0], xl, "d input");
	ASSERT_MATCH(dxa[1], dxa[0], xl, "d input (acc)");
	ASSERT_MATCH(dw[1], dw[0], wl, "d weight (acc)");
	ASSERT_MATCH(db[1], db[0], (size_t)out, "d bias (acc)");
	for (int i = 0; i < 2; i++) {
		free(y[i]); free(dx[i]); free(dxa[i]); free(dw[i]); free(db[i]);
	}
	free(x); free(w); free(bv); free(dy); free(dx0); free(dw0); free(db0);
}

TEST(fc_bias)
{
	fc_case(5, 300, 70, 1, 31);
}

TEST(fc_no_bias_one_image)
{
	fc_case(1, 64, 10, 0, 32);
}

/* More images than outputs: the forward as y = x W^T (dnn_fc_fwd), where
 * the cases above run it as y^T = W x^T and transpose. */
TEST(fc_more_images_than_outputs)
{
	fc_case(40, 96, 24, 1, 33);
}

/* The transposed y's buffer is the backend's: a larger layer after a
 * smaller one on the same backend grows it. */
TEST(fc_transposed_buffer_grows)
{
	fc_case(3, 50, 40, 1, 34);
	fc_case(12, 80, 300, 0, 35);
}

/* ---- Fusion: convolution + batch norm + activation ------------------------ */

/* conv_fwd_post on oneDNN against the reference's conv_fwd, bn_fwd and
 * act_fwd one after the other, at the plan's batch and one below it. */
static void fused_case(struct nn_conv_shape s, int post_bn, int act, int bias, uint64_t seed)
{
	open_both();
	if (vr_test__failed)
		return;
	s.post_bn = post_bn;
	s.post_act = act;
	s.bn_eps = 1e-3f;
	ASSERT_OK(nn_conv_shape_check(&s));
	struct nn_conv_shape plain = s;
	plain.post_bn = plain.post_act = 0;
	plain.bn_eps = 0;
	void *plan[2] = { NULL, NULL }, *ws[2] = { NULL, NULL };
	size_t wsb[2];
	nn_backend *bk[2] = { ref_b, dnn_b };
	ASSERT(dnn_b->ops->conv_fwd_post && !ref_b->ops->conv_fwd_post);
	ASSERT_OK(ref_b->ops->plan_create(ref_b, NN_OP_CONV, &plain, &plan[0], &wsb[0]));
	ASSERT_OK(dnn_b->ops->plan_create(dnn_b, NN_OP_CONV, &s, &plan[1], &wsb[1]));
	for (int i = 0; i < 2; i++)
		ASSERT_OK(bk[i]->ops->alloc(bk[i], wsb[i] ? wsb[i] : 64, &ws[i]));
	const int ns[] = { s.n, s.n > 1 ? s.n - 1 : 1 };
	for (int c = 0; c < 2; c++) {
		const int n = ns[c];
		const size_t xl = (size_t)n * s.c * s.h * s.w, yl = (size_t)n * s.k * s.oh * s.ow;
		const size_t wl = (size_t)s.k * (s.c / s.groups) * s.kh * s.kw;
		const float bound = 1.0f / sqrtf((float)(s.c / s.groups * s.kh * s.kw));
		uint64_t sd = seed + 16 * c;
		/* x scaled so ReLU6 clips some outputs at 6 */
		float *x = nn_test_random_buf(xl, sd, -20, 20),
			*w = nn_test_random_buf(wl, sd + 1, -bound, bound);
		float *bv = nn_test_random_buf(s.k, sd + 2, -bound, bound);
		float *gamma = nn_test_random_buf(s.k, sd + 3, 0.5f, 1.5f);
		float *beta = nn_test_random_buf(s.k, sd + 4, -1, 1),
			*mean = nn_test_random_buf(s.k, sd + 5, -1, 1);
		float *var = nn_test_random_buf(s.k, sd + 6, 0.2f, 2);
		float *y[2] = { init_buf(NULL, yl), init_buf(NULL, yl) };
		const float *bp = bias ? bv : NULL;
		dnn_b->param_version++;
		ASSERT_OK(ref_b->ops->conv_fwd(ref_b, plan[0], &plain, n, x, w, bp, y[0], ws[0]));
		if (post_bn)
			ASSERT_OK(ref_b->ops->bn_fwd(ref_b, NULL, &(struct nn_bn_shape){ .n = n,
				.c = s.k, .h = s.oh, .w = s.ow,
					.eps = s.bn_eps }, n, y[0], gamma, beta,
				mean, var, y[0]));
		if (act)
			ASSERT_OK(ref_b->ops->act_fwd(ref_b, act, yl, y[0], y[0]));
		ASSERT_OK(dnn_b->ops->conv_fwd_post(dnn_b, plan[1], &s, n, x, w, bp, gamma, beta,
			mean, var, y[1], ws[1]));
		char what[64];
		snprintf(what, sizeof(what), "n=%d fused forward", n);
		ASSERT_MATCH(y[1], y[0], yl, what);
		free(x); free(w); free(bv); free(gamma); free(beta); free(mean); free(var);
		free(y[0]); free(y[1]);
	}
	for (int i = 0; i < 2; i++) {
		bk[i]->ops->plan_free(bk[i], plan[i]);
		bk[i]->ops->free(bk[i], ws[i]);
	}
}

TEST(fused_conv_bn_relu6_pointwise)
{
	fused_case(CONV(.n = 3, .c = 24, .h = 9, .w = 9, .k = 40, .kh = 1, .kw = 1,
		.stride_h = 1, .stride_w = 1, .groups = 1), 1, NN_ACT_RELU6, 0, 40);
}

TEST(fused_conv_bn_relu6_depthwise_stride2)
{
	fused_case(CONV(.n = 2, .c = 48, .h = 15, .w = 15, .k = 48, .kh = 3, .kw = 3,
		.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1,
			.groups = 48), 1, NN_ACT_RELU6, 0,
		41);
}

TEST(fused_conv_bn_no_act)
{
	fused_case(CONV(.n = 2, .c = 16, .h = 7, .w = 7, .k = 24, .kh = 3, .kw = 3,
		.stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .groups = 1), 1, 0, 1, 42);
}

TEST(fused_conv_bias_relu)
{
	fused_case(CONV(.n = 2, .c = 3, .h = 31, .w = 31, .k = 16, .kh = 11, .kw = 11,
		.stride_h = 4, .stride_w = 4, .pad_h = 2, .pad_w = 2,
			.groups = 1), 0, NN_ACT_RELU, 1,
		43);
}

/* FAIL_ for a function that returns a value */
#define NET_FAIL(...) do { fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); vr_test__failed = 1; } while (0)

/* A whole inference net with perturbed parameters (so batch norms are no
 * identities) on oneDNN (fused) against the reference (layer by layer),
 * for n images of a net made for max_batch. */
static nn_net *fused_net_case(const char *arch, int size, int max_batch, int n, int min_fused,
	int min_kept, nn_net **ref_net)
{
	nn_net *net[2] = { NULL, NULL };
	nn_backend *bk[2] = { ref_b, dnn_b };
	char err[256] = "";
	struct nn_net_opts o = { .input_size = size, .max_batch = max_batch, .inference_only = 1 };
	for (int i = 0; i < 2; i++) {
		if (nn_net_create(bk[i], arch, &o, &net[i], err, sizeof(err)) ||
		    nn_net_init(net[i], 5)) {
			NET_FAIL("%s: %s", arch, err);
			return NULL;
		}
	}
	int fused = 0;
	for (int l = 0; l < net[1]->nlayers; l++)
		fused += net[1]->layers[l].fused;
	for (int l = 0; l < net[0]->nlayers; l++)
		fused -= 1000 * net[0]->layers[l].fused;
	if (fused < min_fused) {
		NET_FAIL("%s: %d layers fused on oneDNN", arch, fused);
		return NULL;
	}
	int kept = 0;
	for (int t = 0; t < net[1]->ntensors; t++)
		kept += net[1]->tensors[t].layout != 0;
	if (kept < min_kept) {
		NET_FAIL("%s: %d tensors kept in oneDNN's layouts", arch, kept);
		return NULL;
	}
	double e = nn_test_same_params_forward(net[0], net[1], n, size);
	if (e > NET_TOL)
		NET_FAIL("%s, %d of %d images: rel error %.3g > %g", arch, n, max_batch, e,
			NET_TOL);
	*ref_net = net[0];
	return net[1];
}

TEST(net_mobilenet_v2_fused_matches_reference)
{
	open_both();
	if (vr_test__failed)
		return;
	const int n = 2, size = 64;
	nn_net *ref, *net = fused_net_case("mobilenet_v2", size, n, n, 50, 30, &ref);
	if (!net)
		return;
	/* a conv whose own output was fused away cannot be asked for */
	float *x = nn_test_random_buf((size_t)n * 3 * size * size, 9, -1, 1);
	float *f = nn_test_buf((size_t)n * 32 * size * size);
	ASSERT_EQ_INT(nn_net_features(net, "Conv1", x, n, f), VR_EUNSUPPORTED);
	ASSERT_CONTAINS(nn_net_errmsg(net), "fused");
	/* an inner feature read from a kept layout (a residual add's output, a
	 * tap, a fused chain's end) comes back NCHW */
	static const char *const inner[] = { "block_5_add", "block_12", "block_16_project_BN" };
	for (int i = 0; i < 3; i++) {
		size_t fl;
		ASSERT_OK(nn_net_layer_size(ref, inner[i], &fl));
		fl *= n;
		float *g = init_buf(NULL, fl), *h = init_buf(NULL, fl);
		ASSERT_OK(nn_net_features(ref, inner[i], x, n, g));
		ASSERT_OK(nn_net_features(net, inner[i], x, n, h));
		ASSERT_MATCH_TOL(h, g, fl, inner[i], NET_TOL);
		free(g); free(h);
	}
	free(f); free(x);
	nn_net_destroy(ref);
	nn_net_destroy(net);
}

/* conv + ReLU without batch norm (DVBPR's small net, AlexNet), and a batch
 * below the net's */
TEST(net_small_and_alexnet_fused_match_reference)
{
	open_both();
	if (vr_test__failed)
		return;
	nn_net *ref, *net;
	if ((net = fused_net_case("small", 16, 5, 3, 4, 6, &ref))) {
		nn_net_destroy(ref);
		nn_net_destroy(net);
	}
	if ((net = fused_net_case("alexnet", 67, 2, 1, 5, 6, &ref))) {
		nn_net_destroy(ref);
		nn_net_destroy(net);
	}
}

/* Architecture a on both backends (reference first) with SGD (momentum
 * 0.9, weight decay wd), from the same parameters: the seeded init scaled
 * and shifted a little, so batch norms are no identities and AlexNet's
 * outputs stay of order 1. Fails the test when it cannot. */
static void both_nets(const struct nn__arch *a, const struct nn_net_opts *o, float wd,
	nn_net *net[2], nn_optim *opt[2])
{
	nn_backend *bk[2] = { ref_b, dnn_b };
	char err[256] = "";
	for (int i = 0; i < 2; i++)
		if (nn__net_create_with(bk[i], a, o, &net[i], err, sizeof(err)) ||
		    nn_net_init(net[i], 5) ||
		    nn_optim_create(net[i], &(struct nn_optim_opts){ .kind = NN_OPTIM_SGD,
			    .lr = 0.01f, .momentum = 0.9f, .weight_decay = wd }, &opt[i])) {
			FAIL_("%s: %s", a->info.name, err);
		}
	size_t pc = nn_net_param_count(net[0]);
	float *p = nn_test_buf(pc), *u = nn_test_random_buf(pc, 16, 0.5f, 1.5f);
	float *v = nn_test_random_buf(pc, 17, -0.002f, 0.002f);
	int rc = nn_net_params_get(net[0], p);
	for (size_t i = 0; !rc && i < pc; i++)
		p[i] = p[i] * u[i] + v[i];
	for (int i = 0; !rc && i < 2; i++)
		rc = nn_net_params_set(net[i], p);
	free(p); free(u); free(v);
	if (rc)
		FAIL_("%s: setting the parameters: %s", a->info.name, vr_strerror(rc));
}

/* Training nets on both backends from the same perturbed parameters: two
 * SGD steps (momentum, so the second moves differently), each checking
 * the output, every parameter gradient and the input gradient; then an
 * evaluation forward on the stepped weights, which a stale reordered copy
 * of the weights (no param_version bump by the step) would fail. */
static void train_case(const char *arch, int size, int max_batch, int n)
{
	nn_net *net[2] = { NULL, NULL };
	nn_optim *opt[2] = { NULL, NULL };
	struct nn_net_opts o = { .input_size = size, .max_batch = max_batch, .num_outputs = 7 };
	both_nets(nn__arch_find(arch), &o, 0.0f, net, opt);
	if (vr_test__failed)
		goto leave;
	size_t tc = nn_net_trainable_count(net[0]);
	size_t xl = (size_t)n * 3 * size * size, yl = (size_t)n * nn_net_output_size(net[0]);
	float *x = nn_test_random_buf(xl, 18, -2, 2), *dy = nn_test_random_buf(yl, 19, -1, 1);
	float *y[2] = { nn_test_buf(yl), nn_test_buf(yl) },
		*g[2] = { nn_test_buf(tc), nn_test_buf(tc) },
			*dx[2] = { nn_test_buf(xl), nn_test_buf(xl) };
	for (int step = 0; step < 3 && !vr_test__failed; step++) {
		char what[96];
		for (int i = 0; i < 2; i++) {
			if (step == 2) {
				ASSERT_OK(nn_net_forward(net[i], x, n, 0, y[i]));
				continue;
			}
			ASSERT_OK(nn_net_zero_grad(net[i]));
			ASSERT_OK(nn_net_forward(net[i], x, n, 1, y[i]));
			ASSERT_OK(nn_net_backward(net[i], dy, dx[i]));
			ASSERT_OK(nn_net_grads_get(net[i], g[i]));
			ASSERT_OK(nn_optim_step(opt[i]));
		}
		snprintf(what, sizeof(what), "%s step %d output", arch, step);
		ASSERT_MATCH_TOL(y[1], y[0], yl, what, NET_TOL);
		if (step == 2)
			break;
		snprintf(what, sizeof(what), "%s step %d parameter gradients", arch, step);
		ASSERT_MATCH_TOL(g[1], g[0], tc, what, NET_TOL);
		snprintf(what, sizeof(what), "%s step %d input gradient", arch, step);
		ASSERT_MATCH_TOL(dx[1], dx[0], xl, what, NET_TOL);
	}
	free(x); free(dy);
	for (int i = 0; i < 2; i++) {
		free(y[i]); free(g[i]); free(dx[i]);
	}
leave:
	for (int i = 0; i < 2; i++) {
		nn_optim_destroy(opt[i]);
		nn_net_destroy(net[i]);
	}
}

TEST(net_training_steps_match_reference)
{
	open_both();
	if (vr_test__failed)
		return;
	train_case("small", 32, 4, 3);
	train_case("alexnet", 67, 2, 2);
	train_case("mobilenet_v2", 32, 2, 2);
}

/* ---- Training nets with layouts kept --------------------------------------- */

/* A MobileNetV2-like pair of blocks: a batch norm, an
 * uneven pad before a stride-2 depthwise conv, a grouped 1x1 conv, and an
 * inverted residual block added back to its input, then max and global
 * pooling and a linear layer. */
static int build_blocks(nn_net *net)
{
	int t = nn__conv(net, "stem", 0, 16, 3, 1, 1, 1, 1);
	t = nn__batchnorm(net, "stem_bn", t, 1e-3f);
	t = nn__relu6(net, "stem_act", t);
	t = nn__conv(net, "expand", t, 32, 1, 1, 0, 1, 0);
	t = nn__relu6(net, "expand_act", t);
	t = nn__pad(net, "pad", t, 0, 1, 0, 1);
	t = nn__conv(net, "dw", t, 32, 3, 2, 0, 32, 1);
	t = nn__relu6(net, "dw_act", t);
	t = nn__conv(net, "project", t, 32, 1, 1, 0, 2, 1);
	int br = nn__conv(net, "b1_expand", t, 48, 1, 1, 0, 1, 1);
	br = nn__relu6(net, "b1_expand_act", br);
	br = nn__conv(net, "b1_dw", br, 48, 3, 1, 1, 48, 0);
	br = nn__relu6(net, "b1_dw_act", br);
	br = nn__conv(net, "b1_project", br, 32, 1, 1, 0, 1, 1);
	t = nn__add(net, "b1_add", t, br);
	t = nn__maxpool(net, "pool", t, 3, 2, 1);
	t = nn__adaptive_avgpool(net, "gap", t, 1, 1);
	return nn__linear(net, "fc", t, 5);
}

static const struct nn__arch blocks_arch = {
	{ "blocks", "MobileNetV2-like blocks", 5, 20, 20, { 0, 0, 0 }, { 1, 1, 1 } },
	build_blocks };

static int kept_tensors(const nn_net *net)
{
	int kept = 0;
	for (int t = 0; t < net->ntensors; t++)
		kept += net->tensors[t].layout != 0;
	return kept;
}

/* steps SGD steps with momentum on both backends from the same perturbed
 * parameters, the onednn net keeping at least min_kept tensors in its
 * layouts; then every parameter (and the momentum's effect) must agree.
 * Every other step has one image fewer than the plans' batch n (the last
 * batch of an epoch), so the primitives are remade for it and back. */
static void train_params_case(const struct nn__arch *a, int size, int n, int steps,
	int min_kept)
{
	nn_net *net[2] = { NULL, NULL };
	nn_optim *opt[2] = { NULL, NULL };
	struct nn_net_opts o = { .input_size = size, .max_batch = n, .num_outputs = 6 };
	both_nets(a, &o, 1e-4f, net, opt);
	if (vr_test__failed)
		goto leave;
	const int kept = kept_tensors(net[1]);
	if (kept < min_kept)
		FAIL_("%s: %d tensors kept in oneDNN's layouts, want >= %d", a->info.name, kept,
			min_kept);
	size_t pc = nn_net_param_count(net[0]);
	size_t xl = (size_t)n * 3 * size * size, yl = (size_t)n * nn_net_output_size(net[0]);
	float *p = nn_test_buf(pc), *q = nn_test_buf(pc), *y = nn_test_buf(yl);
	for (int step = 0; step < steps && !vr_test__failed; step++) {
		float *x = nn_test_random_buf(xl, 40 + step, -2, 2),
			*dy = nn_test_random_buf(yl, 60 + step, -1, 1);
		const int nb = step % 2 && n > 1 ? n - 1 : n;
		for (int i = 0; i < 2; i++) {
			ASSERT_OK(nn_net_zero_grad(net[i]));
			ASSERT_OK(nn_net_forward(net[i], x, nb, 1, y));
			ASSERT_OK(nn_net_backward(net[i], dy, NULL));
			ASSERT_OK(nn_optim_step(opt[i]));
		}
		free(x);
		free(dy);
	}
	char what[96];
	snprintf(what, sizeof(what), "%s parameters after %d steps", a->info.name, steps);
	ASSERT_OK(nn_net_params_get(net[0], p));
	ASSERT_OK(nn_net_params_get(net[1], q));
	ASSERT_MATCH_TOL(q, p, pc, what, NET_TOL);
	free(p); free(q); free(y);
leave:
	for (int i = 0; i < 2; i++) {
		nn_optim_destroy(opt[i]);
		nn_net_destroy(net[i]);
	}
}

TEST(net_training_keeps_layouts_and_matches_reference)
{
	open_both();
	if (vr_test__failed)
		return;
	/* the DVBPR net: conv, LRN and max pooling keep their layouts through
	 * backward; its fully connected layers and dropout read NCHW */
	train_params_case(nn__arch_find("cnnf"), 67, 2, 4, 8);
	train_params_case(&blocks_arch, 20, 3, 4, 8);
}

/* The reorders of one training step (after a first, which also makes the
 * primitives): with layouts kept, a convolution converts only its weights
 * (forward, backward data) and its weights' gradient (into PyTorch's
 * layout for the optimiser), and tensors convert only where a layer that
 * reads NCHW meets one that keeps a layout. */
static void step_reorders_case(const struct nn__arch *a, int size, int n, int max_edges)
{
	nn_net *net = NULL;
	nn_optim *opt = NULL;
	char err[256] = "";
	struct nn_net_opts o = { .input_size = size, .max_batch = n, .num_outputs = 6 };
	if (nn__net_create_with(dnn_b, a, &o, &net, err, sizeof(err)) || nn_net_init(net, 3) ||
	    nn_optim_create(net, &(struct nn_optim_opts){ .kind = NN_OPTIM_ADAM, .lr = 1e-4f },
		    &opt)) {
		FAIL_("%s: %s", a->info.name, err);
		goto leave;
	}
	size_t xl = (size_t)n * 3 * size * size, yl = (size_t)n * nn_net_output_size(net);
	float *x = nn_test_random_buf(xl, 5, -2, 2), *dy = nn_test_random_buf(yl, 6, -1, 1),
		*y = nn_test_buf(yl);
	int convs = 0;
	for (int l = 0; l < net->nlayers; l++)
		convs += net->layers[l].kind == NN__CONV;
	uint64_t r[3];
	for (int step = 0; step < 2; step++) {
		r[step] = nn__onednn_reorders(dnn_b);
		ASSERT_OK(nn_net_zero_grad(net));
		ASSERT_OK(nn_net_forward(net, x, n, 1, y));
		ASSERT_OK(nn_net_backward(net, dy, NULL));
		ASSERT_OK(nn_optim_step(opt));
	}
	r[2] = nn__onednn_reorders(dnn_b);
	const uint64_t per_step = r[2] - r[1], bound = 3 * (uint64_t)convs + max_edges;
	fprintf(stderr, "  %s: %llu reorders a training step, %d convolutions\n", a->info.name,
		(unsigned long long)per_step, convs);
	if (per_step > bound)
		FAIL_("%s: %llu reorders in a training step; with layouts kept at most %llu "
		      "(3 per convolution's weights and gradient, %d at the edges)", a->info.name,
		      (unsigned long long)per_step, (unsigned long long)bound, max_edges);
	free(x); free(dy); free(y);
leave:
	nn_optim_destroy(opt);
	nn_net_destroy(net);
}

TEST(net_training_step_converts_only_weights_and_edges)
{
	open_both();
	if (vr_test__failed)
		return;
	/* CNN-F converts at its edge only (pool5's y for fc6, and fc6's dx for
	 * pool5's backward; conv1 reads the NCHW input as it is): 2; the blocks
	 * at the pad (expand's y, and dy twice: each backward step stages its
	 * own; dw's x twice, and dx), the global pooling's y and dy, and one
	 * dx that adds to another reader's (the residual): 9. On the code
	 * before training nets kept layouts: 44 and 58 (33 with the batch norm
	 * still NCHW). */
	step_reorders_case(nn__arch_find("cnnf"), 67, 2, 2);
	step_reorders_case(&blocks_arch, 20, 3, 9);
}

/* ---- Selection ----------------------------------------------------------- */

TEST(backend_names)
{
	nn_backend *b;
	ASSERT_OK(nn_backend_open("onednn", &b));
	ASSERT_STR_EQ(nn_backend_name(b), "onednn");
	ASSERT_CONTAINS(nn_backend_device(b), "oneDNN");
	nn_backend_close(b);
	ASSERT_OK(nn_backend_open("cpu-ref", &b));
	ASSERT_STR_EQ(nn_backend_name(b), "cpu");
	nn_backend_close(b);
	/* auto: CUDA where a device answers, else oneDNN, saying why not CUDA */
	ASSERT_OK(nn_backend_open("auto", &b));
	if (strcmp(nn_backend_name(b), "cuda")) {
		ASSERT_STR_EQ(nn_backend_name(b), "onednn");
		ASSERT_CONTAINS(nn_backend_device(b), "cuda: ");
	}
	nn_backend_close(b);
}

static const struct vr_test tests[] = {
	T(conv_alexnet_conv1_like),
	T(conv_3x3_pad),
	T(conv_groups2_stride2_floor),
	T(conv_depthwise_stride2),
	T(conv_depthwise_stride1),
	T(conv_pointwise_no_bias),
	T(conv_rectangular_stride3),
	T(conv_smaller_batch_then_full),
	T(conv_weights_reordered_once_per_version),
	T(pool_max_alexnet),
	T(pool_max_pad_floor),
	T(pool_avg_pad),
	T(pool_adaptive_avg_even),
	T(pool_adaptive_avg_uneven),
	T(lrn_size5_caffenet),
	T(lrn_size4_even_large_alpha),
	T(fc_bias),
	T(fc_no_bias_one_image),
	T(fc_more_images_than_outputs),
	T(fc_transposed_buffer_grows),
	T(fused_conv_bn_relu6_pointwise),
	T(fused_conv_bn_relu6_depthwise_stride2),
	T(fused_conv_bn_no_act),
	T(fused_conv_bias_relu),
	T(net_mobilenet_v2_fused_matches_reference),
	T(net_small_and_alexnet_fused_match_reference),
	T(net_training_steps_match_reference),
	T(net_training_keeps_layouts_and_matches_reference),
	T(net_training_step_converts_only_weights_and_edges),
	T(backend_names),
	{ 0 },
};

int main(int argc, char **argv)
{
	int rc = vr_test_main(tests, argc, argv);
	nn_backend_close(ref_b);
	nn_backend_close(dnn_b);
	return rc;
}
