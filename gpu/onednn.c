/* The oneDNN backend: the CPU backend (cpu.c) with its heavy ops run by
 * oneDNN (libdnnl, Debian's 2.6.3, OpenMP runtime), the library PyTorch's
 * CPU convolutions come from. Memory, the elementwise ops, dropout, the
 * optimisers, padding and the uint8 input are the reference backend's
 * own (its ops table is copied and these entries replaced), so tensors
 * are host memory in the layouts of backend.h. One file past 800 lines
 * because it is one concept: the steps (primitive, staged arguments,
 * kept weights, scratchpad in our workspace) and the layouts are shared
 * by every op kind below; split, each part would need the others' insides.
 *
 * What runs where:
 *   convolution forward, backward data, backward filter   oneDNN primitives
 *   an inference net's convolution + batch norm + ReLU or
 *     ReLU6 (conv_fwd_post)                                one convolution
 *     with post-ops: per-channel multiply and add (the batch norm's scale
 *     and shift, computed per call from its running statistics), then
 *     eltwise relu or clip(0, 6)
 *   fully connected forward and both backwards             dnnl_sgemm
 *   pooling forward (max, avg, adaptive avg whose windows
 *     tile the input exactly)                              oneDNN primitive
 *   LRN forward (odd sizes)                                oneDNN primitive
 *   in a training net with layouts kept: conv bias
 *     gradient, pooling and LRN backward (after a training
 *     forward that remakes the workspace), batch norm      oneDNN primitives
 *   everything else                                        the reference:
 *     on NCHW, conv bias gradient (a column sum), pooling backward and LRN
 *     backward (oneDNN's need the forward's training workspace, which the
 *     op contract does not carry), batch norm; adaptive pooling with
 *     uneven windows and even LRN windows (oneDNN places an even window
 *     differently from PyTorch), and the eltwise ops (memory-bound loops
 *     the reference already vectorises; they run on any layout).
 *
 * A plan holds, per layer shape, the primitives of each direction, created
 * once for the plan's batch with the memory descriptors oneDNN prefers
 * (format_tag_any: blocked layouts such as nChw16c for convolutions).
 * A call reorders its inputs into the preferred layouts and its outputs
 * back, through the net's workspace, where every primitive's scratchpad
 * also lives (user scratchpad mode), except:
 * - weights: their reordered copy is kept by the step, made again only
 *   when the pointer or the backend's param_version changed (backend.h),
 *   so inference reorders them once and training once per step;
 * - layouts (backend.h): a net passes conv, pooling and LRN (training: batch norm)
 *   tensors in the layout the producing plan chose (acdb for oneDNN 2.6's
 *   fast AVX-512 kernels, nChw16c for LRN), so consecutive layers need no
 *   reorder; ids name those descriptors (layout_id), and only unpadded
 *   layouts with images outermost are handed out, so the elementwise ops
 *   run on them unchanged. A training net's plans (layout_bwd) run
 *   backward in them too: diffs in their tensors' layouts, weights'
 *   gradients reordered once per layer and step into PyTorch's layout
 *   (with the sum that accumulates them).
 * Outputs that accumulate (dw always, dx when acc) go through the
 * workspace and a reorder with a sum post-op. A call with fewer images
 * than the plan's batch re-creates the plan's primitives for that batch
 * (oneDNN's primitive cache makes a repeat cheap); if they would need
 * more workspace than the plan asked for, that call runs the reference
 * (NCHW), or with layouts the plan's batch over the net's whole buffers.
 *
 * Precision (nn_backend_set_precision): FP32, or BF16 where oneDNN's ISA
 * has avx512_core_bf16: then convolution forward (fused or not) and fully
 * connected forward take BF16 x and weights, reordered from the caller's
 * FP32 (weights once per param_version, as always), and accumulate and
 * write FP32, so every tensor a net sees stays FP32 and every other op,
 * and every backward, runs as in FP32. A shape oneDNN has no BF16 JIT
 * kernel for runs FP32.
 *
 * Threads: oneDNN's OpenMP team size is decided at open (OpenMP's
 * default: OMP_NUM_THREADS, else one thread per CPU) or later by
 * nn_backend_set_threads (featured's split with its decode pool), and
 * re-applied at every op because it is a per-thread setting and ops may
 * come from a thread other than the one that opened the backend. */
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "err.h"

#define MAX_TARGS 9
#define WS_ALIGN 64

struct dnn {
	struct nn_backend_ops ops;
	const struct nn_backend *b;      /* its param_version keys the kept weights */
	dnnl_engine_t eng;
	dnnl_stream_t stream;
	dnnl_primitive_attr_t attr;      /* user scratchpad */
	dnnl_primitive_attr_t attr_sum;  /* user scratchpad, dst += src (reorders) */
	int threads;
	int precision;                   /* enum nn_precision: FP32, or BF16 where bf16_ok */
	int bf16_ok;                     /* oneDNN's ISA has avx512_core_bf16 */
	uint64_t reorders;               /* reorders run (nn__onednn_reorders) */
	float *fc_yt;                    /* an FC forward's y transposed (dnn_fc_fwd) */
	size_t fc_yt_len;                /* floats fc_yt holds */
	dnnl_memory_desc_t *layouts;     /* layout id i + 1 (backend.h's Layouts) */
	int nlayouts, cap_layouts;
};

/* One tensor argument of a primitive. The caller's tensor is user (plain
 * layout); prim is what the primitive reads or writes. A staged argument
 * has a copy in the workspace at off: inputs are reordered into it,
 * outputs out of it (to_user overwrites, add_user adds). A staged weights
 * argument keeps its copy instead (kept, memory of its own), reordered
 * again only when the caller's pointer or the backend's param_version
 * changed (backend.h): an inference net reorders its weights once, not
 * once per call. */
struct targ {
	int arg;                   /* DNNL_ARG_* */
	int out;                   /* written by the primitive */
	int acc;                   /* an output a call may ask to add to */
	int same;                  /* prim's layout is user's */
	int staged;
	dnnl_memory_t user, prim;
	dnnl_primitive_t to_prim, to_user, add_user;
	size_t off;
	void *kept;                /* NULL, or the weights in prim's layout: */
	const void *kept_src;      /* reordered from this pointer */
	uint64_t kept_version;     /* at this param_version */
};

/* One primitive with its arguments and its scratchpad. */
struct step {
	dnnl_primitive_t prim;
	struct targ t[MAX_TARGS];
	int nt;
	dnnl_memory_t scratch;     /* NULL: none needed */
	size_t scratch_off;
	size_t ws;                 /* workspace bytes the step uses */
};

static struct dnn *dnn_of(struct nn_backend *b)
{
	struct dnn *d = b->priv;
	omp_set_num_threads(d->threads);
	return d;
}

static size_t ws_take(size_t *used, size_t bytes)
{
	size_t off = *used;
	*used += (bytes + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
	return off;
}

static void targ_free(struct targ *t)
{
	if (t->to_prim)
		dnnl_primitive_destroy(t->to_prim);
	if (t->to_user)
		dnnl_primitive_destroy(t->to_user);
	if (t->add_user)
		dnnl_primitive_destroy(t->add_user);
	if (t->user)
		dnnl_memory_destroy(t->user);
	if (t->prim)
		dnnl_memory_destroy(t->prim);
	free(t->kept);
}

static void step_free(struct step *st)
{
	for (int i = 0; i < st->nt; i++)
		targ_free(&st->t[i]);
	if (st->scratch)
		dnnl_memory_destroy(st->scratch);
	if (st->prim)
		dnnl_primitive_destroy(st->prim);
	memset(st, 0, sizeof(*st));
}

static int reorder(struct dnn *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
	dnnl_primitive_attr_t attr, dnnl_primitive_t *out)
{
	dnnl_primitive_desc_t pd;
	if (dnnl_reorder_primitive_desc_create(&pd, src, d->eng, dst, d->eng, attr))
		return VR_EUNSUPPORTED;
	int rc = dnnl_primitive_create(out, pd) ? VR_EUNSUPPORTED : 0;
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* What a step's argument is: its exec-arg id, the caller's layout,
 * whether the primitive writes it and may have to add to it, and whether
 * it is weights (kept reordered between calls). */
struct targ_spec {
	int arg;
	const dnnl_memory_desc_t *user;
	int out, acc, weights;
};

/* Creates a step from a primitive descriptor: the primitive, a memory
 * object per argument (handles set at run time), the reorders of the
 * staged ones, and the step's workspace layout. Takes pd. */
static int step_create(struct dnn *d, dnnl_primitive_desc_t pd, const struct targ_spec *spec,
	int nt, struct step *st)
{
	int rc = VR_EUNSUPPORTED;
	size_t used = 0;
	memset(st, 0, sizeof(*st));
	if (dnnl_primitive_create(&st->prim, pd))
		goto leave;
	for (int i = 0; i < nt; i++) {
		struct targ *t = &st->t[i];
		const dnnl_memory_desc_t *pm = dnnl_primitive_desc_query_md(pd,
			dnnl_query_exec_arg_md, spec[i].arg);
		st->nt = i + 1;
		t->arg = spec[i].arg;
		t->out = spec[i].out;
		t->acc = spec[i].acc;
		if (!pm)
			goto leave;
		t->same = dnnl_memory_desc_equal(pm, spec[i].user);
		t->staged = !t->same || (t->out && spec[i].acc);
		if (dnnl_memory_create(&t->user, spec[i].user, d->eng, DNNL_MEMORY_NONE) ||
		    dnnl_memory_create(&t->prim, pm, d->eng, DNNL_MEMORY_NONE))
			goto leave;
		if (!t->staged)
			continue;
		if (spec[i].weights && !t->out) {
			if (posix_memalign(&t->kept, WS_ALIGN, dnnl_memory_desc_get_size(pm))) {
				t->kept = NULL;
				rc = VR_ENOMEM;
				goto leave;
			}
		} else {
			t->off = ws_take(&used, dnnl_memory_desc_get_size(pm));
		}
		if (!t->out && reorder(d, spec[i].user, pm, d->attr, &t->to_prim))
			goto leave;
		if (t->out && (reorder(d, pm, spec[i].user, d->attr, &t->to_user) ||
			       reorder(d, pm, spec[i].user, d->attr_sum, &t->add_user)))
			goto leave;
	}
	const dnnl_memory_desc_t *sm = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	size_t sbytes = sm ? dnnl_memory_desc_get_size(sm) : 0;
	if (sbytes) {
		st->scratch_off = ws_take(&used, sbytes);
		if (dnnl_memory_create(&st->scratch, sm, d->eng, DNNL_MEMORY_NONE))
			goto leave;
	}
	st->ws = used;
	rc = 0;
leave:
	dnnl_primitive_desc_destroy(pd);
	if (rc)
		step_free(st);
	return rc;
}

/* Runs a reorder (every one this backend runs comes here). */
static int exec2(struct dnn *d, dnnl_primitive_t p, dnnl_memory_t src, dnnl_memory_t dst)
{
	d->reorders++;
	const dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, src }, { DNNL_ARG_TO, dst } };
	return dnnl_primitive_execute(p, d->stream, 2, args);
}

/* Runs a step on the caller's tensors ptr[i] (one per argument, in the
 * step's order). acc: outputs made to add (targ_spec's acc) add to what
 * the caller's tensors hold. */
static int step_run(struct dnn *d, struct step *st, void *const *ptr, int acc, char *ws)
{
	dnnl_exec_arg_t args[MAX_TARGS + 1];
	int na = 0;
	for (int i = 0; i < st->nt; i++) {
		struct targ *t = &st->t[i];
		const int direct = t->same && !(t->out && acc && t->acc);
		if (direct) {
			if (dnnl_memory_set_data_handle(t->prim, ptr[i]))
				return VR_EDEVICE;
		} else if (t->kept) {
			if (t->kept_src != ptr[i] || t->kept_version != d->b->param_version) {
				if (dnnl_memory_set_data_handle(t->user, ptr[i]) ||
				    dnnl_memory_set_data_handle(t->prim, t->kept) ||
				    exec2(d, t->to_prim, t->user, t->prim))
					return VR_EDEVICE;
				t->kept_src = ptr[i];
				t->kept_version = d->b->param_version;
			}
		} else {
			if (dnnl_memory_set_data_handle(t->user, ptr[i]) ||
			    dnnl_memory_set_data_handle(t->prim, ws + t->off))
				return VR_EDEVICE;
			if (!t->out && exec2(d, t->to_prim, t->user, t->prim))
				return VR_EDEVICE;
		}
		args[na++] = (dnnl_exec_arg_t){ t->arg, t->prim };
	}
	if (st->scratch) {
		if (dnnl_memory_set_data_handle(st->scratch, ws + st->scratch_off))
			return VR_EDEVICE;
		args[na++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, st->scratch };
	}
	if (dnnl_primitive_execute(st->prim, d->stream, na, args))
		return VR_EDEVICE;
	for (int i = 0; i < st->nt; i++) {
		struct targ *t = &st->t[i];
		const int add = acc && t->acc;
		if (t->out && !(t->same && !add) &&
		    exec2(d, add ? t->add_user : t->to_user, t->prim, t->user))
			return VR_EDEVICE;
	}
	return dnnl_stream_wait(d->stream) ? VR_EDEVICE : 0;
}

static void md_plain(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
	dnnl_format_tag_t tag)
{
	dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, tag);
}

/* ---- Layouts -------------------------------------------------------------
 * An id names a memory descriptor a plan chose for its output (for the
 * plan's batch; layout_md re-makes it for n images). Ids live as long as
 * the backend; a net of the same shapes made again gets the same ids. */

/* Layout id's descriptor for n images of c x h x w (0: NCHW). */
static void layout_md(const struct dnn *d, int id, int n, int c, int h, int w,
	dnnl_memory_desc_t *md)
{
	if (id <= 0 || id > d->nlayouts) {
		dnnl_dims_t dims = { n, c, h, w };
		md_plain(md, 4, dims, dnnl_nchw);
		return;
	}
	*md = d->layouts[id - 1];
	md->dims[0] = md->padded_dims[0] = n;
}

/* The id of md, a plan's chosen output; 0 (NCHW) when md is NCHW or not a
 * layout backend.h allows: padded channels (nChw16c over 24), images not
 * outermost, or anything but plain f32 blocking. */
static int layout_id(struct dnn *d, const dnnl_memory_desc_t *md)
{
	const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
	dnnl_memory_desc_t plain;
	dnnl_dim_t image = 1;
	if (md->ndims != 4 || md->format_kind != dnnl_blocked || md->data_type != dnnl_f32 ||
	    md->offset0 || md->extra.flags)
		return 0;
	for (int i = 0; i < 4; i++) {
		if (md->padded_dims[i] != md->dims[i] || md->padded_offsets[i])
			return 0;
		image *= i ? md->dims[i] : 1;
	}
	for (int i = 0; i < bd->inner_nblks; i++)
		if (bd->inner_idxs[i] == 0)
			return 0;
	if (bd->strides[0] != image ||
	    dnnl_memory_desc_get_size(md) != sizeof(float) * (size_t)(image * md->dims[0]))
		return 0;
	md_plain(&plain, 4, md->dims, dnnl_nchw);
	if (dnnl_memory_desc_equal(md, &plain))
		return 0;
	for (int i = 0; i < d->nlayouts; i++)
		if (dnnl_memory_desc_equal(md, &d->layouts[i]))
			return i + 1;
	if (d->nlayouts == d->cap_layouts) {
		int cap = d->cap_layouts ? 2 * d->cap_layouts : 16;
		dnnl_memory_desc_t *l = realloc(d->layouts, sizeof(*l) * cap);
		if (!l)
			return 0;      /* NCHW still works */
		d->layouts = l;
		d->cap_layouts = cap;
	}
	d->layouts[d->nlayouts++] = *md;
	return d->nlayouts;
}

/* A plan's output layout: the id asked for, or for -1 the id of what the
 * primitive pd chose for its DST (NCHW when pd is NULL: the reference). */
static int layout_out(struct dnn *d, int asked, const_dnnl_primitive_desc_t pd)
{
	if (asked >= 0)
		return asked;
	const dnnl_memory_desc_t *md = pd ? dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0) :
		NULL;
	return md ? layout_id(d, md) : 0;
}

static int dnn_layout_download(struct nn_backend *b, int layout, int n, const float *src,
	float *host_dst)
{
	struct dnn *d = dnn_of(b);
	dnnl_memory_desc_t from, to;
	dnnl_memory_t mf = NULL, mt = NULL;
	dnnl_primitive_t r = NULL;
	int rc = VR_EDEVICE;
	if (layout <= 0 || layout > d->nlayouts)
		return VR_EINVAL;
	layout_md(d, layout, n, 0, 0, 0, &from);
	md_plain(&to, 4, from.dims, dnnl_nchw);
	if (!reorder(d, &from, &to, NULL, &r) &&
	    !dnnl_memory_create(&mf, &from, d->eng, (void *)src) &&
	    !dnnl_memory_create(&mt, &to, d->eng, host_dst) && !exec2(d, r, mf, mt) &&
	    !dnnl_stream_wait(d->stream))
		rc = 0;
	if (r)
		dnnl_primitive_destroy(r);
	if (mf)
		dnnl_memory_destroy(mf);
	if (mt)
		dnnl_memory_destroy(mt);
	return rc;
}

/* ---- Convolution ------------------------------------------------------- */

enum { FWD, DATA, FILTER, DIRS };

/* Every plan starts with its kind, so plan_free can dispatch. */
struct conv_plan {
	int kind;
	struct nn_conv_shape s;
	int n;                     /* the batch the steps are made for */
	int ok[DIRS];              /* the direction has a oneDNN step */
	struct step st[DIRS];
	size_t ws_bytes;           /* the plan's workspace (plan_create's answer) */
	float *zero_bias;          /* k zeros: a conv without bias runs the same primitive */
	float *bn_scale, *bn_shift; /* post_bn: k floats each, set per forward */
	dnnl_primitive_attr_t attr_post; /* scratchpad + the fused layers; NULL: none */
	int layouts;               /* s has layouts: x and y in them, forward only
	                              unless s.layout_bwd */
	int out_id;                /* y's layout; -1 until the first steps chose it */
	int bf16;                  /* forward in BF16 (the backend's precision at
	                              plan_create), until oneDNN offers only its
	                              reference loop for it: then FP32 */
	float *dbias;              /* layout_bwd: k floats, the last backward filter's */
	const float *dbias_dy;     /* bias gradient, for this dy */
	int dbias_n;               /* and this many images */
};

/* pd is oneDNN's reference implementation (plain loops, no JIT). */
static int is_ref(const_dnnl_primitive_desc_t pd)
{
	const char *impl = NULL;
	return !dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) && impl &&
		!strncmp(impl, "ref", 3);
}

/* A backward direction's step, its diff tensors in the layouts x and y
 * are in (dx, dy: a tensor's gradient is in its layout) where those are
 * kept ones, so the primitive reads and writes them directly; when no
 * implementation takes them, in what oneDNN prefers (staged). */
static int conv_bwd_step(struct dnn *d, struct conv_plan *p, int dir, const dnnl_memory_desc_t *ux,
	const dnnl_memory_desc_t *uy, const dnnl_memory_desc_t *uw, const dnnl_memory_desc_t *ub,
	dnnl_primitive_desc_t fwd_pd)
{
	const struct nn_conv_shape *s = &p->s;
	dnnl_dims_t strides = { s->stride_h, s->stride_w }, pl = { s->pad_h, s->pad_w };
	dnnl_dims_t pr = { (s->oh - 1) * s->stride_h + s->kh - s->h - s->pad_h,
		(s->ow - 1) * s->stride_w + s->kw - s->w - s->pad_w };
	dnnl_dims_t xd, yd;
	dnnl_memory_desc_t ax, ay, aw;
	dnnl_convolution_desc_t cd;
	dnnl_primitive_desc_t pd = NULL;
	/* layout_bwd: the bias gradient comes from the same primitive */
	const int bias = s->layout_bwd && p->layouts;
	memcpy(xd, ux->dims, sizeof(dnnl_dim_t) * 4);
	memcpy(yd, uy->dims, sizeof(dnnl_dim_t) * 4);
	md_plain(&ax, 4, xd, dnnl_format_tag_any);
	md_plain(&ay, 4, yd, dnnl_format_tag_any);
	md_plain(&aw, uw->ndims, uw->dims, dnnl_format_tag_any);
	for (int exact = p->layouts && s->layout_bwd; exact >= 0 && !pd; exact--) {
		const dnnl_memory_desc_t *bx = exact && s->in_layout > 0 ? ux : &ax;
		const dnnl_memory_desc_t *by = exact && p->out_id > 0 ? uy : &ay;
		if (dir == DATA ?
			dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, bx, &aw,
				by, strides, pl, pr) :
			dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, bx,
				&aw, bias ? ub : NULL, by, strides, pl, pr))
			continue;
		if (dnnl_primitive_desc_create(&pd, &cd, d->attr, d->eng, fwd_pd))
			pd = NULL;
		else if (exact && is_ref(pd)) {
			/* a reorder of the diffs costs less than oneDNN's reference loop */
			dnnl_primitive_desc_destroy(pd);
			pd = NULL;
		}
	}
	if (!pd)
		return VR_EUNSUPPORTED;
	if (dir == DATA) {
		const struct targ_spec spec[] = { { DNNL_ARG_DIFF_DST, uy, 0, 0, 0 },
			{ DNNL_ARG_WEIGHTS, uw, 0, 0, 1 }, { DNNL_ARG_DIFF_SRC, ux, 1, 1, 0 } };
		return step_create(d, pd, spec, 3, &p->st[DATA]);
	}
	const struct targ_spec spec[] = { { DNNL_ARG_SRC, ux, 0, 0, 0 },
		{ DNNL_ARG_DIFF_DST, uy, 0, 0, 0 }, { DNNL_ARG_DIFF_WEIGHTS, uw, 1, 1, 0 },
		{ DNNL_ARG_DIFF_BIAS, ub, 1, 0, 0 } };
	return step_create(d, pd, spec, bias ? 4 : 3, &p->st[FILTER]);
}

/* Creates the three directions' steps for n images; a direction oneDNN
 * cannot do is left !ok. Returns the workspace the steps need. */
static size_t conv_steps(struct dnn *d, struct conv_plan *p, int n)
{
	const struct nn_conv_shape *s = &p->s;
	const int g = s->groups;
	dnnl_dims_t xd = { n, s->c, s->h, s->w }, yd = { n, s->k, s->oh, s->ow }, bd = { s->k };
	dnnl_dims_t wd = { g, s->k / g, s->c / g, s->kh, s->kw };
	dnnl_dims_t strides = { s->stride_h, s->stride_w }, pl = { s->pad_h, s->pad_w };
	/* floor mode: the right pad that makes oneDNN's output size ours */
	dnnl_dims_t pr = { (s->oh - 1) * s->stride_h + s->kh - s->h - s->pad_h,
		(s->ow - 1) * s->stride_w + s->kw - s->w - s->pad_w };
	dnnl_memory_desc_t ux, uy, uw, ub, ax, ay, aw;
	dnnl_convolution_desc_t cd;
	dnnl_primitive_desc_t fwd_pd = NULL;
	size_t need = 0;
	const int wn = g > 1 ? 5 : 4;
	const dnnl_dim_t *wdims = g > 1 ? wd : wd + 1;
	layout_md(d, s->in_layout, n, s->c, s->h, s->w, &ux);
	layout_md(d, p->out_id, n, s->k, s->oh, s->ow, &uy);
	md_plain(&uw, wn, wdims, g > 1 ? dnnl_goihw : dnnl_oihw);
	md_plain(&ub, 1, bd, dnnl_a);
	md_plain(&ax, 4, xd, dnnl_format_tag_any);
	md_plain(&ay, 4, yd, dnnl_format_tag_any);
	md_plain(&aw, wn, wdims, dnnl_format_tag_any);
	for (int i = 0; i < DIRS; i++) {
		if (p->ok[i])
			step_free(&p->st[i]);
		p->ok[i] = 0;
	}
	p->n = n;
	if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training,
		    dnnl_convolution_direct, &ax, &aw, &ub, &ay, strides, pl, pr) ||
	    dnnl_primitive_desc_create(&fwd_pd, &cd, d->attr, d->eng, NULL))
		return 0;
	{
		dnnl_memory_desc_t uc;
		dnnl_dims_t cdims = { 1, s->k, 1, 1 };
		md_plain(&uc, 4, cdims, dnnl_nchw);
		const struct targ_spec spec[] = { { DNNL_ARG_SRC, &ux, 0, 0, 0 },
			{ DNNL_ARG_WEIGHTS, &uw, 0, 0, 1 }, { DNNL_ARG_BIAS, &ub, 0, 0, 0 },
			{ DNNL_ARG_DST, &uy, 1, 0, 0 },
			{ DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, &uc, 0, 0, 0 },
			{ DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, &uc, 0, 0, 0 } };
		dnnl_primitive_desc_t own = NULL;
		if (p->attr_post || p->bf16) {
			/* a primitive of its own for inference: the fused layers, or
			 * BF16 source and weights (reordered from the caller's FP32;
			 * bias, accumulation and y stay FP32) */
			dnnl_convolution_desc_t fd;
			dnnl_memory_desc_t bx = ax, bw = aw;
			bx.data_type = bw.data_type = p->bf16 ? dnnl_bf16 : dnnl_f32;
			if (dnnl_convolution_forward_desc_init(&fd, dnnl_forward_inference,
				    dnnl_convolution_direct, &bx, &bw, &ub, &ay, strides, pl, pr) ||
			    dnnl_primitive_desc_create(&own, &fd, p->attr_post ? p->attr_post : d->attr,
				    d->eng, NULL))
				own = NULL;
			if (p->bf16 && (!own || is_ref(own))) {
				/* no JIT kernel for BF16 at this shape: FP32, as asked before */
				if (own)
					dnnl_primitive_desc_destroy(own);
				p->bf16 = 0;
				dnnl_primitive_desc_destroy(fwd_pd);
				return conv_steps(d, p, n);
			}
		} else if (dnnl_primitive_desc_clone(&own, fwd_pd)) {
			own = NULL;
		}
		if (own && p->out_id < 0) {
			p->out_id = layout_out(d, -1, own);
			layout_md(d, p->out_id, n, s->k, s->oh, s->ow, &uy);
		}
		if (own)
			p->ok[FWD] = !step_create(d, own, spec, s->post_bn ? 6 : 4, &p->st[FWD]);
	}
	if (!p->layouts || s->layout_bwd) {
		p->ok[DATA] = !conv_bwd_step(d, p, DATA, &ux, &uy, &uw, &ub, fwd_pd);
		p->ok[FILTER] = !conv_bwd_step(d, p, FILTER, &ux, &uy, &uw, &ub, fwd_pd);
	}
	dnnl_primitive_desc_destroy(fwd_pd);
	for (int i = 0; i < DIRS; i++)
		if (p->ok[i] && p->st[i].ws > need)
			need = p->st[i].ws;
	return need;
}

/* The steps for n images, re-made when n changed; NULL: run the reference. */
static struct step *conv_step(struct dnn *d, struct conv_plan *p, int n, int dir)
{
	if (n != p->n && conv_steps(d, p, n) > p->ws_bytes) {
		for (int i = 0; i < DIRS; i++)
			if (p->ok[i] && p->st[i].ws > p->ws_bytes) {
				step_free(&p->st[i]);
				p->ok[i] = 0;
			}
	}
	return p->ok[dir] ? &p->st[dir] : NULL;
}

/* The forward or backward data step for n images. When it needs more
 * workspace than the plan's, a plan with layouts runs the plan's batch
 * instead: a net's tensors hold that many images, and images are computed
 * independently (not so the filter gradient, a sum over the images). */
static struct step *conv_layout_step(struct dnn *d, struct conv_plan *p, int n, int dir)
{
	struct step *st = conv_step(d, p, n, dir);
	return st || !p->layouts || n == p->s.n || dir == FILTER ? st :
		conv_step(d, p, p->s.n, dir);
}

static struct step *conv_fwd_step(struct dnn *d, struct conv_plan *p, int n)
{
	return conv_layout_step(d, p, n, FWD);
}

/* x or y is in a kept layout: the reference cannot run this plan. */
static int conv_kept(const struct conv_plan *p)
{
	return p->out_id > 0 || p->s.in_layout > 0;
}

static void conv_plan_free(struct conv_plan *p)
{
	for (int i = 0; i < DIRS; i++)
		if (p->ok[i])
			step_free(&p->st[i]);
	if (p->attr_post)
		dnnl_primitive_attr_destroy(p->attr_post);
	free(p->zero_bias);
	free(p->dbias);
	free(p->bn_scale);
	free(p->bn_shift);
	free(p);
}

/* The fused layers as post-ops: batch norm as a per-channel multiply and
 * add (bn_fwd's y = x scale + shift), then the activation. */
static int conv_post_attr(const struct nn_conv_shape *s, dnnl_primitive_attr_t *out)
{
	dnnl_post_ops_t po = NULL;
	dnnl_memory_desc_t uc;
	dnnl_dims_t cdims = { 1, s->k, 1, 1 };
	int rc = VR_EUNSUPPORTED;
	*out = NULL;
	md_plain(&uc, 4, cdims, dnnl_nchw);
	if (dnnl_primitive_attr_create(out) ||
	    dnnl_primitive_attr_set_scratchpad_mode(*out, dnnl_scratchpad_mode_user) ||
	    dnnl_post_ops_create(&po))
		goto leave;
	if (s->post_bn && (dnnl_post_ops_append_binary(po, dnnl_binary_mul, &uc) ||
			   dnnl_post_ops_append_binary(po, dnnl_binary_add, &uc)))
		goto leave;
	if (s->post_act && dnnl_post_ops_append_eltwise(po, 1.0f,
				   s->post_act == NN_ACT_RELU6 ? dnnl_eltwise_clip : dnnl_eltwise_relu,
				   0.0f, s->post_act == NN_ACT_RELU6 ? 6.0f : 0.0f))
		goto leave;
	rc = dnnl_primitive_attr_set_post_ops(*out, po) ? VR_EUNSUPPORTED : 0;
leave:
	if (po)
		dnnl_post_ops_destroy(po);
	if (rc && *out) {
		dnnl_primitive_attr_destroy(*out);
		*out = NULL;
	}
	return rc;
}

static int conv_plan_create(struct dnn *d, const struct nn_conv_shape *s, void **plan,
	size_t *ws_bytes)
{
	struct conv_plan *p = calloc(1, sizeof(*p));
	if (!p || !(p->zero_bias = calloc(s->k, sizeof(float)))) {
		free(p);
		return VR_ENOMEM;
	}
	p->kind = NN_OP_CONV;
	p->s = *s;
	p->layouts = s->in_layout || s->out_layout;
	p->out_id = s->out_layout;
	p->bf16 = d->precision == NN_PRECISION_BF16;
	if (s->post_bn || s->post_act) {
		if (!(p->bn_scale = calloc(s->k, sizeof(float))) ||
		    !(p->bn_shift = calloc(s->k, sizeof(float)))) {
			conv_plan_free(p);
			return VR_ENOMEM;
		}
		if (conv_post_attr(s, &p->attr_post)) {
			conv_plan_free(p);
			return VR_EUNSUPPORTED;
		}
	}
	if (s->layout_bwd && p->layouts && !(p->dbias = calloc(s->k, sizeof(float)))) {
		conv_plan_free(p);
		return VR_ENOMEM;
	}
	size_t need = conv_steps(d, p, s->n);
	if (p->layouts && s->layout_bwd && (!p->ok[DATA] || !p->ok[FILTER]) &&
	    s->in_layout <= 0 && s->out_layout < 0) {
		/* the plan's choice cannot train: NCHW, as a net without layouts */
		p->s.out_layout = p->out_id = 0;
		p->layouts = 0;
		need = conv_steps(d, p, s->n);
	}
	if ((!p->ok[FWD] && (p->attr_post || s->in_layout > 0 || s->out_layout > 0)) ||
	    (p->layouts && s->layout_bwd && (!p->ok[DATA] || !p->ok[FILTER]))) {
		conv_plan_free(p);
		return VR_EUNSUPPORTED;
	}
	if (p->out_id < 0)
		p->out_id = 0;         /* the reference writes NCHW */
	size_t ref = sizeof(float) * nn_cpu_conv_ws_floats(s);
	p->ws_bytes = need > ref ? need : ref;
	*ws_bytes = p->ws_bytes;
	*plan = p;
	return 0;
}

static int dnn_conv_fwd(struct nn_backend *b, void *plan, const struct nn_conv_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y, void *ws)
{
	struct dnn *d = dnn_of(b);
	struct conv_plan *p = plan;
	struct step *st = conv_fwd_step(d, p, n);
	if (!st) {
		if (conv_kept(p))
			return VR_EUNSUPPORTED;
		nn_cpu_conv_fwd(s, n, x, w, bias, y, ws);
		return 0;
	}
	void *const ptr[] = { (void *)x, (void *)w, bias ? (void *)bias : p->zero_bias, y };
	return step_run(d, st, ptr, 0, ws);
}

static int dnn_conv_fwd_post(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *x, const float *w, const float *bias, const float *gamma,
	const float *beta, const float *mean, const float *var, float *y, void *ws)
{
	struct dnn *d = dnn_of(b);
	struct conv_plan *p = plan;
	struct step *st = conv_fwd_step(d, p, n);
	if (s->post_bn)
		for (int k = 0; k < s->k; k++) {
			/* as nn_cpu_bn_fwd computes them */
			p->bn_scale[k] = gamma[k] / sqrtf(var[k] + s->bn_eps);
			p->bn_shift[k] = beta[k] - mean[k] * p->bn_scale[k];
		}
	if (!st) {
		/* this batch's primitive needs more workspace than the plan's */
		if (conv_kept(p))
			return VR_EUNSUPPORTED;
		nn_cpu_conv_fwd(s, n, x, w, bias, y, ws);
		if (s->post_bn)
			nn_cpu_bn_fwd(n, s->k, s->oh * s->ow, s->bn_eps, y, gamma, beta, mean, var, y);
		if (s->post_act)
			nn_cpu_act_fwd(s->post_act, (size_t)n * s->k * s->oh * s->ow, y, y);
		return 0;
	}
	void *const ptr[] = { (void *)x, (void *)w, bias ? (void *)bias : p->zero_bias, y,
		p->bn_scale, p->bn_shift };
	return step_run(d, st, ptr, 0, ws);
}

static int dnn_conv_bwd_data(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, const float *w, float *dx, int acc, void *ws)
{
	struct dnn *d = dnn_of(b);
	struct step *st = conv_layout_step(d, plan, n, DATA);
	if (!st) {
		if (conv_kept(plan))
			return VR_EUNSUPPORTED;
		nn_cpu_conv_bwd_data(s, n, dy, w, dx, acc, ws);
		return 0;
	}
	void *const ptr[] = { (void *)dy, (void *)w, dx };
	return step_run(d, st, ptr, acc, ws);
}

static int dnn_conv_bwd_filter(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *x, const float *dy, float *dw, void *ws)
{
	struct dnn *d = dnn_of(b);
	struct conv_plan *p = plan;
	struct step *st = conv_step(d, p, n, FILTER);
	p->dbias_dy = NULL;
	if (!st) {
		if (conv_kept(p))
			return VR_EUNSUPPORTED;
		nn_cpu_conv_bwd_filter(s, n, x, dy, dw, ws);
		return 0;
	}
	void *const ptr[] = { (void *)x, (void *)dy, dw, p->dbias };
	int rc = step_run(d, st, ptr, 1, ws);
	if (!rc && st->nt == 4) {
		p->dbias_dy = dy;
		p->dbias_n = n;
	}
	return rc;
}

/* The bias gradient: from the backward filter step just run on this dy
 * (a plan for a training net with layouts), else the reference's column
 * sum over NCHW. */
static int dnn_conv_bwd_bias(struct nn_backend *b, void *plan, const struct nn_conv_shape *s,
	int n, const float *dy, float *db)
{
	struct conv_plan *p = plan;
	if (p->dbias_dy == dy && p->dbias_n == n) {
		for (int k = 0; k < s->k; k++)
			db[k] += p->dbias[k];
		return 0;
	}
	if (conv_kept(p))
		return VR_ESTATE;      /* backend.h: right after conv_bwd_filter */
	nn_cpu_conv_bwd_bias(s, n, dy, db);
	return 0;
}

/* ---- Pooling and LRN ------------------------------------------------------
 * One forward step each; a plan for a training net with layouts also has
 * a backward step, run after a training forward (tst) that recomputes y
 * and the forward's workspace (max pooling's argmax, LRN's sums) into the
 * backward's workspace: the op contract carries no forward workspace, and
 * x is at hand. Plain NCHW plans leave backward to the reference. */

/* A pooling or LRN plan. The pooling ops take no workspace, so a pooling
 * plan owns its scratchpad (own_ws). */
struct fwd_plan {
	int kind;
	int n;
	int ok;
	struct step st;
	int bok;                   /* tst and bst exist (layout_bwd) */
	struct step tst, bst;
	int has_ws;                /* the primitives take a forward workspace */
	size_t y_off, w_off, t_off; /* in the backward's workspace: tst's y, the
	                              forward workspace, then the steps' own */
	union {
		struct nn_pool_shape pool;
		struct nn_lrn_shape lrn;
	} s;
	size_t ws_bytes;
	void *own_ws;
	int layouts, in_id, out_id; /* as conv_plan's; in_id: x's layout */
};

/* PyTorch's adaptive window i is [floor(i h / oh), ceil((i + 1) h / oh)):
 * a plain pooling window when oh divides h. */
static int pool_geometry(const struct nn_pool_shape *s, int *kh, int *kw, int *sh, int *sw,
	int *ph, int *pw)
{
	if (s->mode != NN_POOL_ADAPTIVE_AVG) {
		*kh = s->kh, *kw = s->kw, *sh = s->stride_h, *sw = s->stride_w;
		*ph = s->pad_h, *pw = s->pad_w;
		return 0;
	}
	if (s->h % s->oh || s->w % s->ow)
		return VR_EUNSUPPORTED;
	*kh = *sh = s->h / s->oh;
	*kw = *sw = s->w / s->ow;
	*ph = *pw = 0;
	return 0;
}

/* A training plan's steps from its training forward tpd and backward bpd
 * (both taken; either may be NULL: no backward, p->bok stays 0). Returns
 * the workspace the plan's steps need, forward's and backward's. */
static size_t fwd_bwd_steps(struct dnn *d, struct fwd_plan *p, dnnl_primitive_desc_t tpd,
	dnnl_primitive_desc_t bpd, const dnnl_memory_desc_t *ux, const dnnl_memory_desc_t *uy)
{
	dnnl_memory_desc_t ty, wm;
	size_t used = 0;
	const int lrn = p->kind == NN_OP_LRN;
	if (!tpd || !bpd) {
		if (tpd)
			dnnl_primitive_desc_destroy(tpd);
		if (bpd)
			dnnl_primitive_desc_destroy(bpd);
		return p->st.ws;
	}
	ty = *dnnl_primitive_desc_query_md(tpd, dnnl_query_dst_md, 0);
	const dnnl_memory_desc_t *w = dnnl_primitive_desc_query_md(tpd, dnnl_query_workspace_md, 0);
	p->has_ws = w && dnnl_memory_desc_get_size(w) > 0;
	if (p->has_ws)
		wm = *w;
	p->y_off = ws_take(&used, dnnl_memory_desc_get_size(&ty));
	p->w_off = ws_take(&used, p->has_ws ? dnnl_memory_desc_get_size(&wm) : 0);
	p->t_off = used;
	const struct targ_spec ts[] = { { DNNL_ARG_SRC, ux, 0, 0, 0 }, { DNNL_ARG_DST, &ty, 1, 0, 0 },
		{ DNNL_ARG_WORKSPACE, &wm, 1, 0, 0 } };
	/* pooling's backward reads no x; LRN's does */
	const struct targ_spec bs[] = { { DNNL_ARG_DIFF_DST, uy, 0, 0, 0 },
		{ DNNL_ARG_DIFF_SRC, ux, 1, 1, 0 }, { DNNL_ARG_SRC, ux, 0, 0, 0 },
		{ DNNL_ARG_WORKSPACE, &wm, 0, 0, 0 } };
	const struct targ_spec bs_ws[] = { bs[0], bs[1], bs[3] };
	const int tok = !step_create(d, tpd, ts, p->has_ws ? 3 : 2, &p->tst);
	int bok;
	if (lrn)
		bok = !step_create(d, bpd, bs, p->has_ws ? 4 : 3, &p->bst);
	else
		bok = !step_create(d, bpd, p->has_ws ? bs_ws : bs, 2 + p->has_ws, &p->bst);
	if (!tok || !bok) {
		if (tok)
			step_free(&p->tst);
		if (bok)
			step_free(&p->bst);
		return p->st.ws;
	}
	p->bok = 1;
	used += p->tst.ws > p->bst.ws ? p->tst.ws : p->bst.ws;
	return used > p->st.ws ? used : p->st.ws;
}

static void fwd_plan_steps_free(struct fwd_plan *p)
{
	if (p->ok)
		step_free(&p->st);
	if (p->bok) {
		step_free(&p->tst);
		step_free(&p->bst);
	}
	p->ok = p->bok = 0;
}

static size_t pool_step(struct dnn *d, struct fwd_plan *p, int n)
{
	const struct nn_pool_shape *s = &p->s.pool;
	int kh, kw, sh, sw, ph, pw;
	dnnl_memory_desc_t ux, uy, ay;
	dnnl_pooling_desc_t pdsc;
	dnnl_primitive_desc_t pd;
	fwd_plan_steps_free(p);
	p->n = n;
	if (pool_geometry(s, &kh, &kw, &sh, &sw, &ph, &pw))
		return 0;
	dnnl_dims_t yd = { n, s->c, s->oh, s->ow };
	dnnl_dims_t strides = { sh, sw }, kernel = { kh, kw }, pl = { ph, pw };
	dnnl_dims_t pr = { (s->oh - 1) * sh + kh - s->h - ph, (s->ow - 1) * sw + kw - s->w - pw };
	layout_md(d, p->in_id, n, s->c, s->h, s->w, &ux);
	/* the primitive writes the source's layout, as a rule; a step stages
	 * the reorder when the plan was asked for another */
	md_plain(&ay, 4, yd, dnnl_format_tag_any);
	if (dnnl_pooling_forward_desc_init(&pdsc, dnnl_forward_inference,
		    s->mode == NN_POOL_MAX ? dnnl_pooling_max : dnnl_pooling_avg_include_padding,
		    &ux, &ay, strides, kernel, pl, pr) ||
	    dnnl_primitive_desc_create(&pd, &pdsc, d->attr, d->eng, NULL))
		return 0;
	if (p->out_id < 0)
		p->out_id = layout_out(d, -1, pd);
	layout_md(d, p->out_id, n, s->c, s->oh, s->ow, &uy);
	const struct targ_spec spec[] = { { DNNL_ARG_SRC, &ux, 0, 0, 0 }, { DNNL_ARG_DST, &uy, 1, 0, 0 } };
	p->ok = !step_create(d, pd, spec, 2, &p->st);
	if (!p->ok || !s->layout_bwd || !p->layouts)
		return p->ok ? p->st.ws : 0;
	const dnnl_alg_kind_t alg = s->mode == NN_POOL_MAX ? dnnl_pooling_max :
		dnnl_pooling_avg_include_padding;
	dnnl_primitive_desc_t tpd = NULL, bpd = NULL;
	/* dy in y's layout; where only oneDNN's reference loop takes that
	 * beside dx's (global pooling into NCHW for a linear layer: ~80 times
	 * slower), in the layout it prefers, staged */
	for (int exact = 1; exact >= 0 && !bpd; exact--) {
		const dnnl_memory_desc_t *by = exact ? &uy : &ay;
		if (tpd)
			dnnl_primitive_desc_destroy(tpd);
		tpd = NULL;
		if (dnnl_pooling_forward_desc_init(&pdsc, dnnl_forward_training, alg, &ux, by,
			    strides, kernel, pl, pr) ||
		    dnnl_primitive_desc_create(&tpd, &pdsc, d->attr, d->eng, NULL)) {
			tpd = NULL;
			continue;
		}
		if (dnnl_pooling_backward_desc_init(&pdsc, alg, &ux, by, strides, kernel, pl, pr) ||
		    dnnl_primitive_desc_create(&bpd, &pdsc, d->attr, d->eng, tpd))
			bpd = NULL;
		if (bpd && exact && is_ref(bpd)) {
			dnnl_primitive_desc_destroy(bpd);
			bpd = NULL;
		}
	}
	return fwd_bwd_steps(d, p, tpd, bpd, &ux, &uy);
}

static size_t lrn_step(struct dnn *d, struct fwd_plan *p, int n)
{
	const struct nn_lrn_shape *s = &p->s.lrn;
	dnnl_memory_desc_t ux, bx;
	dnnl_lrn_desc_t ldsc;
	dnnl_primitive_desc_t pd;
	fwd_plan_steps_free(p);
	p->n = n;
	if (s->size % 2 == 0)
		return 0;
	dnnl_dims_t xd = { n, s->c, s->h, s->w };
	dnnl_memory_desc_t uy;
	layout_md(d, p->in_id, n, s->c, s->h, s->w, &ux);
	/* LRN takes no format_tag_any; on plain NCHW oneDNN 2.6 has only its
	 * reference loop, on nChw16c a JIT kernel (CNN-F's first LRN at batch
	 * 16, on the shared 2 cores: ~50 ms for lrn_ref, 6-9 ms for the JIT
	 * kernel with both reorders, 7-9 ms for our reference) */
	md_plain(&bx, 4, xd, dnnl_nChw16c);
	if (dnnl_lrn_forward_desc_init(&ldsc, dnnl_forward_inference, dnnl_lrn_across_channels, &bx,
		    s->size, s->alpha, s->beta, s->k) ||
	    dnnl_primitive_desc_create(&pd, &ldsc, d->attr, d->eng, NULL))
		return 0;
	if (p->out_id < 0)
		p->out_id = layout_out(d, -1, pd);
	layout_md(d, p->out_id, n, s->c, s->h, s->w, &uy);
	const struct targ_spec spec[] = { { DNNL_ARG_SRC, &ux, 0, 0, 0 }, { DNNL_ARG_DST, &uy, 1, 0, 0 } };
	p->ok = !step_create(d, pd, spec, 2, &p->st);
	if (!p->ok || !s->layout_bwd || !p->layouts)
		return p->ok ? p->st.ws : 0;
	dnnl_primitive_desc_t tpd = NULL, bpd = NULL;
	if (!dnnl_lrn_forward_desc_init(&ldsc, dnnl_forward_training, dnnl_lrn_across_channels, &bx,
		    s->size, s->alpha, s->beta, s->k) &&
	    !dnnl_primitive_desc_create(&tpd, &ldsc, d->attr, d->eng, NULL) &&
	    !dnnl_lrn_backward_desc_init(&ldsc, dnnl_lrn_across_channels, &bx, &bx, s->size,
		    s->alpha, s->beta, s->k) &&
	    dnnl_primitive_desc_create(&bpd, &ldsc, d->attr, d->eng, tpd))
		bpd = NULL;
	return fwd_bwd_steps(d, p, tpd, bpd, &ux, &uy);
}

static size_t fwd_plan_steps(struct dnn *d, struct fwd_plan *p, int n)
{
	return p->kind == NN_OP_POOL ? pool_step(d, p, n) : lrn_step(d, p, n);
}

/* The step for n images (with layouts, the plan's batch when n's needs
 * more workspace, as conv_fwd_step); NULL: run the reference. */
static struct step *fwd_step(struct dnn *d, struct fwd_plan *p, int n)
{
	const int full = p->kind == NN_OP_POOL ? p->s.pool.n : p->s.lrn.n;
	if (n != p->n && fwd_plan_steps(d, p, n) > p->ws_bytes && p->ok)
		fwd_plan_steps_free(p);
	if (!p->ok && p->layouts && n != full)
		return fwd_step(d, p, full);
	return p->ok ? &p->st : NULL;
}

static void fwd_plan_free(struct fwd_plan *p)
{
	fwd_plan_steps_free(p);
	free(p->own_ws);
	free(p);
}

static int fwd_plan_create(struct dnn *d, int kind, const void *shape, void **plan,
	size_t *ws_bytes)
{
	struct fwd_plan *p = calloc(1, sizeof(*p));
	if (!p)
		return VR_ENOMEM;
	p->kind = kind;
	if (kind == NN_OP_POOL) {
		p->s.pool = *(const struct nn_pool_shape *)shape;
		p->in_id = p->s.pool.in_layout;
		p->out_id = p->s.pool.out_layout;
	} else {
		p->s.lrn = *(const struct nn_lrn_shape *)shape;
		p->in_id = p->s.lrn.in_layout;
		p->out_id = p->s.lrn.out_layout;
	}
	const int asked = p->out_id, full = kind == NN_OP_POOL ? p->s.pool.n : p->s.lrn.n;
	const int bwd = kind == NN_OP_POOL ? p->s.pool.layout_bwd : p->s.lrn.layout_bwd;
	p->layouts = p->in_id || p->out_id;
	p->ws_bytes = fwd_plan_steps(d, p, full);
	if (bwd && p->layouts && !p->bok && p->in_id <= 0 && asked < 0) {
		/* the plan's choice cannot train: NCHW, the reference's backward */
		p->out_id = 0;
		p->layouts = 0;
		p->ws_bytes = fwd_plan_steps(d, p, full);
	}
	if ((!p->ok || (bwd && p->layouts && !p->bok)) && (p->in_id > 0 || asked > 0)) {
		fwd_plan_free(p);      /* the reference takes and writes NCHW only */
		return VR_EUNSUPPORTED;
	}
	if (p->out_id < 0)
		p->out_id = 0;
	p->layouts = p->in_id > 0 || p->out_id > 0;
	if (kind == NN_OP_POOL) {
		if (p->ws_bytes && posix_memalign(&p->own_ws, WS_ALIGN, p->ws_bytes)) {
			fwd_plan_free(p);
			return VR_ENOMEM;
		}
		*ws_bytes = 0;
	} else {
		size_t ref = sizeof(float) * nn_cpu_lrn_ws_floats(shape);
		*ws_bytes = p->ws_bytes > ref ? p->ws_bytes : ref;
		p->ws_bytes = *ws_bytes;
	}
	*plan = p;
	return 0;
}

static int dnn_pool_fwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, float *y)
{
	struct dnn *d = dnn_of(b);
	struct step *st = fwd_step(d, plan, n);
	if (!st && ((struct fwd_plan *)plan)->layouts)
		return VR_EUNSUPPORTED;
	if (!st) {
		nn_cpu_pool_fwd(s, n, x, y);
		return 0;
	}
	void *const ptr[] = { (void *)x, y };
	return step_run(d, st, ptr, 0, ((struct fwd_plan *)plan)->own_ws);
}

static int dnn_lrn_fwd(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
	const float *x, float *y, void *ws)
{
	struct dnn *d = dnn_of(b);
	struct step *st = fwd_step(d, plan, n);
	if (!st && ((struct fwd_plan *)plan)->layouts)
		return VR_EUNSUPPORTED;
	if (!st) {
		nn_cpu_lrn_fwd(s, n, x, y);
		return 0;
	}
	void *const ptr[] = { (void *)x, y };
	return step_run(d, st, ptr, 0, ws);
}

/* A training plan's backward: the training forward (for a workspace) and
 * the backward step, in ws; NULL step: the plan has none. */
static int fwd_plan_bwd(struct dnn *d, struct fwd_plan *p, int n, const float *x,
	const float *dy, float *dx, int acc, char *ws)
{
	int rc = 0;
	if (!fwd_step(d, p, n) || !p->bok)
		return VR_EUNSUPPORTED;
	if (p->has_ws) {
		void *const tp[] = { (void *)x, ws + p->y_off, ws + p->w_off };
		rc = step_run(d, &p->tst, tp, 0, ws + p->t_off);
	}
	/* bst's arguments: dy, dx, then LRN's x, then the workspace */
	void *const lp[] = { (void *)dy, dx, (void *)x, ws + p->w_off };
	void *const pp[] = { (void *)dy, dx, ws + p->w_off };
	return rc ? rc : step_run(d, &p->bst, p->kind == NN_OP_LRN ? lp : pp, acc, ws + p->t_off);
}

static int dnn_pool_bwd(struct nn_backend *b, void *plan, const struct nn_pool_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc)
{
	struct dnn *d = dnn_of(b);
	struct fwd_plan *p = plan;
	if (!p->layouts) {
		nn_cpu_pool_bwd(s, n, x, dy, dx, acc);
		return 0;
	}
	return fwd_plan_bwd(d, p, n, x, dy, dx, acc, p->own_ws);
}

static int dnn_lrn_bwd(struct nn_backend *b, void *plan, const struct nn_lrn_shape *s, int n,
	const float *x, const float *y, const float *dy, float *dx, int acc, void *ws)
{
	struct dnn *d = dnn_of(b);
	struct fwd_plan *p = plan;
	if (!p->layouts) {
		nn_cpu_lrn_bwd(s, n, x, y, dy, dx, acc, ws);
		return 0;
	}
	return fwd_plan_bwd(d, p, n, x, dy, dx, acc, ws);
}

/* ---- Batch norm in a kept layout ----------------------------------------
 * A training net's batch norm reads and writes its input's layout (it is
 * per channel, so any layout does) through oneDNN's batch normalization
 * with global statistics (PyTorch's eval mode); its backward writes the
 * scale and shift gradients into the plan, which adds them to the net's.
 * A batch norm on NCHW runs the reference (no plan). */

struct bn_plan {
	int kind;
	struct nn_bn_shape s;
	int n;                     /* the batch the steps are made for */
	int id;                    /* x's and y's layout */
	int ok, bok;               /* forward, backward steps */
	struct step fwd, bwd;
	float *dscale, *dshift;    /* c floats each */
	float *shift;              /* c zeros: backward takes a shift it does not use */
	size_t dx_off;             /* an unwanted dx goes here in own_ws */
	size_t ws_bytes;
	void *own_ws;              /* the batch norm ops take no workspace */
};

static void bn_steps_free(struct bn_plan *p)
{
	if (p->ok)
		step_free(&p->fwd);
	if (p->bok)
		step_free(&p->bwd);
	p->ok = p->bok = 0;
}

static size_t bn_steps(struct dnn *d, struct bn_plan *p, int n)
{
	const struct nn_bn_shape *s = &p->s;
	const unsigned flags = dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift;
	dnnl_memory_desc_t ux, uc;
	dnnl_dims_t cd = { s->c };
	dnnl_batch_normalization_desc_t bd;
	dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
	size_t used = 0;
	bn_steps_free(p);
	p->n = n;
	layout_md(d, p->id, n, s->c, s->h, s->w, &ux);
	md_plain(&uc, 1, cd, dnnl_a);
	if (dnnl_batch_normalization_forward_desc_init(&bd, s->layout_bwd ? dnnl_forward_training :
			dnnl_forward_inference, &ux, s->eps, flags) ||
	    dnnl_primitive_desc_create(&fpd, &bd, d->attr, d->eng, NULL))
		return 0;
	if (s->layout_bwd &&
	    (dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &ux, &ux, s->eps,
		     flags) || dnnl_primitive_desc_create(&bpd, &bd, d->attr, d->eng, fpd)))
		bpd = NULL;
	const struct targ_spec fs[] = { { DNNL_ARG_SRC, &ux, 0, 0, 0 },
		{ DNNL_ARG_MEAN, &uc, 0, 0, 0 }, { DNNL_ARG_VARIANCE, &uc, 0, 0, 0 },
		{ DNNL_ARG_SCALE, &uc, 0, 0, 0 }, { DNNL_ARG_SHIFT, &uc, 0, 0, 0 },
		{ DNNL_ARG_DST, &ux, 1, 0, 0 } };
	const struct targ_spec bs[] = { { DNNL_ARG_SRC, &ux, 0, 0, 0 },
		{ DNNL_ARG_MEAN, &uc, 0, 0, 0 }, { DNNL_ARG_VARIANCE, &uc, 0, 0, 0 },
		{ DNNL_ARG_DIFF_DST, &ux, 0, 0, 0 }, { DNNL_ARG_SCALE, &uc, 0, 0, 0 },
		{ DNNL_ARG_SHIFT, &uc, 0, 0, 0 }, { DNNL_ARG_DIFF_SRC, &ux, 1, 1, 0 },
		{ DNNL_ARG_DIFF_SCALE, &uc, 1, 0, 0 }, { DNNL_ARG_DIFF_SHIFT, &uc, 1, 0, 0 } };
	/* oneDNN's reference loop is slower than ours on NCHW: refused */
	if (bpd && is_ref(bpd)) {
		dnnl_primitive_desc_destroy(bpd);
		bpd = NULL;
	}
	if (is_ref(fpd)) {
		dnnl_primitive_desc_destroy(fpd);
		if (bpd)
			dnnl_primitive_desc_destroy(bpd);
		return 0;
	}
	p->ok = !step_create(d, fpd, fs, 6, &p->fwd);
	if (bpd)
		p->bok = !step_create(d, bpd, bs, 9, &p->bwd);
	used = p->fwd.ws > p->bwd.ws ? p->fwd.ws : p->bwd.ws;
	p->dx_off = ws_take(&used, dnnl_memory_desc_get_size(&ux));
	return used;
}

static void bn_plan_free(struct bn_plan *p)
{
	bn_steps_free(p);
	free(p->own_ws);
	free(p->dscale);
	free(p->dshift);
	free(p->shift);
	free(p);
}

static int bn_plan_create(struct dnn *d, const struct nn_bn_shape *s, void **plan,
	size_t *ws_bytes)
{
	if (s->in_layout <= 0)
		return s->out_layout > 0 ? VR_EUNSUPPORTED : 0;  /* NCHW: the reference */
	if (s->out_layout >= 0 && s->out_layout != s->in_layout)
		return VR_EUNSUPPORTED;
	struct bn_plan *p = calloc(1, sizeof(*p));
	if (!p || !(p->dscale = calloc(s->c, sizeof(float))) ||
	    !(p->dshift = calloc(s->c, sizeof(float))) ||
	    !(p->shift = calloc(s->c, sizeof(float)))) {
		if (p)
			bn_plan_free(p);
		return VR_ENOMEM;
	}
	p->kind = NN_OP_BN;
	p->s = *s;
	p->id = s->in_layout;
	p->ws_bytes = bn_steps(d, p, s->n);
	if (!p->ok || (s->layout_bwd && !p->bok)) {
		bn_plan_free(p);
		return VR_EUNSUPPORTED;
	}
	if (posix_memalign(&p->own_ws, WS_ALIGN, p->ws_bytes)) {
		p->own_ws = NULL;
		bn_plan_free(p);
		return VR_ENOMEM;
	}
	*ws_bytes = 0;
	*plan = p;
	return 0;
}

/* The steps for n images; NULL: none fits the plan's workspace. */
static struct bn_plan *bn_for(struct dnn *d, struct bn_plan *p, int n)
{
	if (n != p->n && bn_steps(d, p, n) > p->ws_bytes)
		bn_steps_free(p);
	return p->ok ? p : NULL;
}

static int dnn_bn_fwd(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
	const float *x, const float *gamma, const float *beta, const float *mean,
	const float *var, float *y)
{
	struct dnn *d = dnn_of(b);
	if (!plan) {
		nn_cpu_bn_fwd(n, s->c, s->h * s->w, s->eps, x, gamma, beta, mean, var, y);
		return 0;
	}
	struct bn_plan *p = bn_for(d, plan, n);
	if (!p)
		return VR_EUNSUPPORTED;
	void *const ptr[] = { (void *)x, (void *)mean, (void *)var, (void *)gamma, (void *)beta,
		y };
	return step_run(d, &p->fwd, ptr, 0, p->own_ws);
}

static int dnn_bn_bwd(struct nn_backend *b, void *plan, const struct nn_bn_shape *s, int n,
	const float *x, const float *gamma, const float *mean, const float *var,
	const float *dy, float *dx, int acc, float *dgamma, float *dbeta)
{
	struct dnn *d = dnn_of(b);
	if (!plan) {
		nn_cpu_bn_bwd(n, s->c, s->h * s->w, s->eps, x, gamma, mean, var, dy, dx, acc, dgamma,
			dbeta);
		return 0;
	}
	struct bn_plan *p = bn_for(d, plan, n);
	if (!p || !p->bok)
		return VR_EUNSUPPORTED;
	char *ws = p->own_ws;
	void *const ptr[] = { (void *)x, (void *)mean, (void *)var, (void *)dy, (void *)gamma,
		p->shift, dx ? (void *)dx : ws + p->dx_off, p->dscale, p->dshift };
	int rc = step_run(d, &p->bwd, ptr, dx ? acc : 0, ws);
	for (int c = 0; !rc && c < s->c; c++) {
		if (dgamma)
			dgamma[c] += p->dscale[c];
		if (dbeta)
			dbeta[c] += p->dshift[c];
	}
	return rc;
}

/* ---- Fully connected in BF16 -------------------------------------------
 * With the backend in BF16 an FC layer has a plan: oneDNN's inner product
 * forward with BF16 x and weights (the weights' BF16 copy kept by the
 * step, as a convolution's), FP32 bias, accumulation and y. Its step is
 * made once, for the plan's batch: a call with fewer images runs the
 * whole batch on the plan's own copies of x and y (a few hundred KB),
 * so the kept weights (AlexNet's fc6: 75 MB) are not reordered again.
 * Backward stays FP32 (dnnl_sgemm, below). No plan (FP32, or no JIT
 * kernel for BF16): dnnl_sgemm forward too. */

struct fc_plan {
	int kind;
	struct nn_fc_shape s;
	struct step st;
	float *zero_bias;          /* out zeros: an FC without bias */
	float *x_full, *y_full;    /* the plan's batch, for calls with fewer images */
	void *own_ws;              /* the FC ops take no workspace */
};

static void fc_plan_free(struct fc_plan *p)
{
	step_free(&p->st);
	free(p->zero_bias);
	free(p->x_full);
	free(p->y_full);
	free(p->own_ws);
	free(p);
}

static int fc_plan_create(struct dnn *d, const struct nn_fc_shape *s, void **plan)
{
	dnnl_dims_t xd = { s->n, s->in }, wd = { s->out, s->in }, yd = { s->n, s->out },
		bd = { s->out };
	dnnl_memory_desc_t ux, uw, ub, uy, bx, bw;
	dnnl_inner_product_desc_t ipd;
	dnnl_primitive_desc_t pd = NULL;
	md_plain(&ux, 2, xd, dnnl_ab);
	md_plain(&uw, 2, wd, dnnl_ab);
	md_plain(&ub, 1, bd, dnnl_a);
	md_plain(&uy, 2, yd, dnnl_ab);
	md_plain(&bx, 2, xd, dnnl_format_tag_any);
	md_plain(&bw, 2, wd, dnnl_format_tag_any);
	bx.data_type = bw.data_type = dnnl_bf16;
	if (dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &bx, &bw, &ub, &uy) ||
	    dnnl_primitive_desc_create(&pd, &ipd, d->attr, d->eng, NULL))
		return 0;              /* FP32 through dnnl_sgemm */
	if (is_ref(pd)) {
		dnnl_primitive_desc_destroy(pd);
		return 0;
	}
	struct fc_plan *p = calloc(1, sizeof(*p));
	const struct targ_spec spec[] = { { DNNL_ARG_SRC, &ux, 0, 0, 0 },
		{ DNNL_ARG_WEIGHTS, &uw, 0, 0, 1 }, { DNNL_ARG_BIAS, &ub, 0, 0, 0 },
		{ DNNL_ARG_DST, &uy, 1, 0, 0 } };
	if (!p) {
		dnnl_primitive_desc_destroy(pd);
		return VR_ENOMEM;
	}
	p->kind = NN_OP_FC;
	p->s = *s;
	int rc = step_create(d, pd, spec, 4, &p->st);
	if (!rc && (!(p->zero_bias = calloc(s->out, sizeof(float))) ||
		    !(p->x_full = calloc((size_t)s->n * s->in, sizeof(float))) ||
		    !(p->y_full = calloc((size_t)s->n * s->out, sizeof(float))) ||
		    posix_memalign(&p->own_ws, WS_ALIGN, p->st.ws ? p->st.ws : WS_ALIGN)))
		rc = VR_ENOMEM;
	if (rc) {
		p->own_ws = NULL;
		fc_plan_free(p);
		return rc == VR_ENOMEM ? rc : 0;
	}
	*plan = p;
	return 0;
}

static int fc_plan_fwd(struct dnn *d, struct fc_plan *p, int n, const float *x, const float *w,
	const float *bias, float *y)
{
	const int part = n < p->s.n;
	if (part)
		memcpy(p->x_full, x, sizeof(float) * (size_t)n * p->s.in);
	void *const ptr[] = { part ? p->x_full : (void *)x, (void *)w,
		bias ? (void *)bias : p->zero_bias, part ? p->y_full : y };
	int rc = step_run(d, &p->st, ptr, 0, p->own_ws);
	if (!rc && part)
		memcpy(y, p->y_full, sizeof(float) * (size_t)n * p->s.out);
	return rc;
}

/* ---- Plans --------------------------------------------------------------- */

static int dnn_plan_create(struct nn_backend *b, int kind, const void *shape, void **plan,
	size_t *ws_bytes)
{
	struct dnn *d = dnn_of(b);
	*plan = NULL;
	*ws_bytes = 0;
	switch (kind) {
	case NN_OP_CONV:
		return conv_plan_create(d, shape, plan, ws_bytes);
	case NN_OP_POOL:
	case NN_OP_LRN:
		return fwd_plan_create(d, kind, shape, plan, ws_bytes);
	case NN_OP_FC:
		return d->precision == NN_PRECISION_BF16 ? fc_plan_create(d, shape, plan) : 0;
	case NN_OP_BN:
		return bn_plan_create(d, shape, plan, ws_bytes);
	}
	return VR_EINVAL;
}

static int dnn_plan_layout(struct nn_backend *b, void *plan)
{
	if (!plan)
		return 0;
	switch (*(int *)plan) {
	case NN_OP_CONV:
		return ((struct conv_plan *)plan)->out_id;
	case NN_OP_BN:
		return ((struct bn_plan *)plan)->id;
	case NN_OP_FC:
		return 0;
	}
	return ((struct fwd_plan *)plan)->out_id;
}

static void dnn_plan_free(struct nn_backend *b, void *plan)
{
	if (!plan)
		return;
	switch (*(int *)plan) {
	case NN_OP_CONV:
		conv_plan_free(plan);
		break;
	case NN_OP_BN:
		bn_plan_free(plan);
		break;
	case NN_OP_FC:
		fc_plan_free(plan);
		break;
	default:
		fwd_plan_free(plan);
	}
}

/* ---- Fully connected: oneDNN's GEMM -------------------------------------
 * The layouts are GEMM's already (x [n][in], W [out][in]), and dnnl_sgemm's
 * beta accumulates dW and dx in place, where the inner-product primitive
 * would need a copy of dW (fc6: 150 MB) to add from. It also keeps the
 * net's GEMMs on oneDNN's OpenMP threads instead of OpenBLAS's.
 *
 * Forward with fewer images than outputs computes y^T = W x^T, the weights
 * as dnnl_sgemm's untransposed A, into the backend's fc_yt, and transposes
 * it into y adding the bias: oneDNN 2.6's GEMM streams a large transposed
 * B (y = x W^T, the reference's form) several times slower than the same
 * matrix as A. AlexNet's fc6 (9216 -> 4096) on these 2 cores: 38 ms as
 * y = x W^T, 6.5 ms as y^T = W x^T at 16 images; 47 vs 18 ms at 64; 87
 * vs 74 ms at 256. With more images than outputs (an FC head of 100 at
 * batch 256) the transpose costs more than it saves: x W^T as before. */

static int dnn_fc_fwd(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *x, const float *w, const float *bias, float *y)
{
	struct dnn *d = dnn_of(b);
	if (plan)
		return fc_plan_fwd(d, plan, n, x, w, bias, y);
	if (n < s->out) {
		const size_t len = (size_t)n * s->out;
		if (len > d->fc_yt_len) {
			float *yt = realloc(d->fc_yt, sizeof(float) * len);
			if (!yt)
				return VR_ENOMEM;
			d->fc_yt = yt;
			d->fc_yt_len = len;
		}
		if (dnnl_sgemm('N', 'T', s->out, n, s->in, 1.0f, w, s->in, x, s->in, 0.0f,
			    d->fc_yt, n))
			return VR_EDEVICE;
		for (int i = 0; i < n; i++)
			for (int o = 0; o < s->out; o++)
				y[(size_t)i * s->out + o] = d->fc_yt[(size_t)o * n + i] +
					(bias ? bias[o] : 0.0f);
		return 0;
	}
	if (bias)
		for (int i = 0; i < n; i++)
			memcpy(y + (size_t)i * s->out, bias, sizeof(float) * s->out);
	return dnnl_sgemm('N', 'T', n, s->out, s->in, 1.0f, x, s->in, w, s->in,
		bias ? 1.0f : 0.0f, y, s->out) ? VR_EDEVICE : 0;
}

static int dnn_fc_bwd_data(struct nn_backend *b, void *plan, const struct nn_fc_shape *s, int n,
	const float *dy, const float *w, float *dx, int acc)
{
	dnn_of(b);
	return dnnl_sgemm('N', 'N', n, s->in, s->out, 1.0f, dy, s->out, w, s->in,
		acc ? 1.0f : 0.0f, dx, s->in) ? VR_EDEVICE : 0;
}

static int dnn_fc_bwd_weights(struct nn_backend *b, void *plan, const struct nn_fc_shape *s,
	int n, const float *x, const float *dy, float *dw, float *db)
{
	dnn_of(b);
	if (dnnl_sgemm('T', 'N', s->out, s->in, n, 1.0f, dy, s->out, x, s->in, 1.0f, dw, s->in))
		return VR_EDEVICE;
	if (db)
		for (int i = 0; i < n; i++)
			for (int o = 0; o < s->out; o++)
				db[o] += dy[(size_t)i * s->out + o];
	return 0;
}

/* ---- Open and close ------------------------------------------------------ */

static void dnn_close(struct nn_backend *b)
{
	struct dnn *d = b->priv;
	if (!d)
		return;
	if (d->attr_sum)
		dnnl_primitive_attr_destroy(d->attr_sum);
	if (d->attr)
		dnnl_primitive_attr_destroy(d->attr);
	if (d->stream)
		dnnl_stream_destroy(d->stream);
	if (d->eng)
		dnnl_engine_destroy(d->eng);
	free(d->layouts);
	free(d->fc_yt);
	free(d);
	b->priv = NULL;
}

/* b->device: oneDNN's version, the threads, the precision ("FP32" or
 * "BF16", and why BF16 cannot run where it cannot); what backend.c's auto
 * appended after them (why not CUDA) stays. */
static void describe(struct nn_backend *b)
{
	struct dnn *d = b->priv;
	char tail[sizeof(b->device)] = "";
	const char *t = strstr(b->device, " (cuda: ");
	if (t)
		snprintf(tail, sizeof(tail), "%s", t);
	const dnnl_version_t *v = dnnl_version();
	snprintf(b->device, sizeof(b->device), "CPU, oneDNN %d.%d.%d, %d OpenMP thread%s, ",
		v->major, v->minor, v->patch, d->threads, d->threads == 1 ? "" : "s");
	const size_t base = strlen(b->device);
	const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
	const char *isa_name = isa == dnnl_cpu_isa_avx512_core_vnni ? "avx512_core_vnni" :
		isa == dnnl_cpu_isa_avx512_core ? "avx512_core" :
		isa == dnnl_cpu_isa_avx2_vnni ? "avx2_vnni" :
		isa == dnnl_cpu_isa_avx2 ? "avx2" : "below avx2";
	if (d->bf16_ok)
		snprintf(b->device + base, sizeof(b->device) - base, "%s",
			d->precision == NN_PRECISION_BF16 ? "BF16" : "FP32");
	else
		snprintf(b->device + base, sizeof(b->device) - base,
			"FP32 (BF16 needs avx512_bf16; oneDNN runs %s here)", isa_name);
	const size_t len = strlen(b->device);
	snprintf(b->device + len, sizeof(b->device) - len, "%s", tail);
}

/* BF16 where oneDNN's ISA has avx512_core_bf16 (the CPU's avx512_bf16,
 * unless ONEDNN_MAX_CPU_ISA caps it): convolutions and fully connected
 * forward with BF16 operands (rounded to nearest even by oneDNN's
 * reorders), FP32 accumulation, bias and outputs; their backward, and
 * every other op, stay FP32. TF32 is CUDA's alone. */
static int dnn_set_precision(struct nn_backend *b, int precision)
{
	struct dnn *d = dnn_of(b);
	if (precision == NN_PRECISION_TF32 || (precision == NN_PRECISION_BF16 && !d->bf16_ok))
		return VR_EUNSUPPORTED;
	d->precision = precision;
	describe(b);
	return 0;
}

/* The OpenMP team of every op from now on (dnn_of applies it). */
static int dnn_set_threads(struct nn_backend *b, int threads)
{
	struct dnn *d = b->priv;
	d->threads = threads;
	describe(b);
	return 0;
}

static int dnn_precision(const struct nn_backend *b)
{
	return ((const struct dnn *)b->priv)->precision;
}

uint64_t nn__onednn_reorders(const struct nn_backend *b)
{
	return b && b->ops->close == dnn_close ? ((const struct dnn *)b->priv)->reorders : 0;
}

int nn__onednn_open(struct nn_backend **out, char *why, size_t why_len)
{
	struct nn_backend *b = calloc(1, sizeof(*b));
	struct dnn *d = calloc(1, sizeof(*d));
	dnnl_post_ops_t sum = NULL;
	int rc = VR_ENOMEM;
	*out = NULL;
	if (!b || !d)
		goto fail;
	b->priv = d;
	d->b = b;
	d->ops = nn__cpu_ops;
	d->ops.plan_create = dnn_plan_create;
	d->ops.plan_free = dnn_plan_free;
	d->ops.conv_fwd = dnn_conv_fwd;
	d->ops.conv_fwd_post = dnn_conv_fwd_post;
	d->ops.conv_bwd_data = dnn_conv_bwd_data;
	d->ops.conv_bwd_filter = dnn_conv_bwd_filter;
	d->ops.conv_bwd_bias = dnn_conv_bwd_bias;
	d->ops.pool_fwd = dnn_pool_fwd;
	d->ops.pool_bwd = dnn_pool_bwd;
	d->ops.lrn_fwd = dnn_lrn_fwd;
	d->ops.lrn_bwd = dnn_lrn_bwd;
	d->ops.bn_fwd = dnn_bn_fwd;
	d->ops.bn_bwd = dnn_bn_bwd;
	d->ops.fc_fwd = dnn_fc_fwd;
	d->ops.fc_bwd_data = dnn_fc_bwd_data;
	d->ops.fc_bwd_weights = dnn_fc_bwd_weights;
	d->ops.plan_layout = dnn_plan_layout;
	d->ops.layout_download = dnn_layout_download;
	d->ops.set_precision = dnn_set_precision;
	d->ops.precision = dnn_precision;
	d->ops.set_threads = dnn_set_threads;
	d->ops.close = dnn_close;
	b->ops = &d->ops;
	d->threads = omp_get_max_threads();
	rc = VR_EDEVICE;
	if (dnnl_engine_create(&d->eng, dnnl_cpu, 0)) {
		snprintf(why, why_len, "oneDNN has no CPU engine");
		goto fail;
	}
	if (dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags) ||
	    dnnl_primitive_attr_create(&d->attr) ||
	    dnnl_primitive_attr_set_scratchpad_mode(d->attr, dnnl_scratchpad_mode_user) ||
	    dnnl_primitive_attr_create(&d->attr_sum) ||
	    dnnl_primitive_attr_set_scratchpad_mode(d->attr_sum, dnnl_scratchpad_mode_user) ||
	    dnnl_post_ops_create(&sum) || dnnl_post_ops_append_sum(sum, 1.0f) ||
	    dnnl_primitive_attr_set_post_ops(d->attr_sum, sum)) {
		snprintf(why, why_len, "cannot set up a oneDNN stream and attributes");
		goto fail;
	}
	dnnl_post_ops_destroy(sum);
	snprintf(b->name, sizeof(b->name), "onednn");
	d->precision = NN_PRECISION_FP32;
	d->bf16_ok = (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) ==
		dnnl_cpu_isa_avx512_core_bf16;
	describe(b);
	*out = b;
	return 0;
fail:
	if (sum)
		dnnl_post_ops_destroy(sum);
	if (b) {
		b->priv = d;
		dnn_close(b);
	} else {
		free(d);
	}
	free(b);
	return rc;
}
