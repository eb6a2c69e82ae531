/* safetensors files: a net's round trip (values, outputs and file bytes),
 * loads that must fail and say why (wrong shape, missing tensor, other
 * architecture, malformed or truncated files, random garbage), F16/BF16
 * conversion, an optimiser checkpoint that resumes exactly, and creating
 * a net from a file's metadata. Real files in a temporary directory. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "harness.h"
#include "nn.h"
#include "nn_test.h"
#include "safetensors.h"

#ifndef NN_NO_SAFETENSORS

static char dir[64];

static const char *tmp_path(const char *name)
{
	static char buf[4][160];
	static int at;
	char *p = buf[at++ % 4];
	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/nn-st-XXXXXX");
		if (!mkdtemp(dir))
			return NULL;
	}
	snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
	return p;
}

static int write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(data, 1, len, f);
	return fclose(f) || w != len ? -1 : 0;
}

/* A file of the given JSON header (padded to 8) and data bytes. */
static int write_st(const char *path, const char *json, const void *data, size_t dlen)
{
	size_t hl = strlen(json), pl = (hl + 7) / 8 * 8;
	unsigned char *buf = calloc(1, 8 + pl + dlen);
	for (int i = 0; i < 8; i++)
		buf[i] = (unsigned char)((uint64_t)pl >> (8 * i));
	memcpy(buf + 8, json, hl);
	memset(buf + 8 + hl, ' ', pl - hl);
	if (dlen)
		memcpy(buf + 8 + pl, data, dlen);
	int rc = write_file(path, buf, 8 + pl + dlen);
	free(buf);
	return rc;
}

static nn_backend *backend;

static nn_net *small(int k)
{
	nn_net *net = NULL;
	struct nn_net_opts o = { .num_outputs = k, .input_size = 16, .max_batch = 2 };
	if (!backend && nn_backend_open("cpu", &backend))
		return NULL;
	if (nn_net_create(backend, "small", &o, &net, NULL, 0))
		return NULL;
	return net;
}

TEST(round_trip)
{
	nn_net *a = small(5), *b = small(5);
	const char *p1 = tmp_path("a.safetensors"), *p2 = tmp_path("b.safetensors");
	ASSERT(a && b);
	ASSERT_OK(nn_net_init(a, 3));
	ASSERT_OK(nn_net_init(b, 4));
	float mean[3] = { 0.5f, 0.25f, 0.125f }, std[3] = { 0.3f, 0.2f, 0.1f };
	nn_net_set_norm(a, mean, std);
	const char *meta[] = { "model_version", "7", NULL };
	ASSERT_OK(nn_net_save(a, p1, NULL, meta));
	ASSERT_OK(nn_net_load(b, p1, NULL));
	size_t n = nn_net_param_count(a);
	float *pa = malloc(sizeof(float) * n), *pb = malloc(sizeof(float) * n);
	ASSERT_OK(nn_net_params_get(a, pa));
	ASSERT_OK(nn_net_params_get(b, pb));
	ASSERT(!memcmp(pa, pb, sizeof(float) * n));
	float m2[3], s2[3];
	nn_net_norm(b, m2, s2);
	ASSERT(!memcmp(m2, mean, sizeof(mean)) && !memcmp(s2, std, sizeof(std)));
	/* Same outputs, and saving again writes the same bytes. */
	float x[2 * 3 * 16 * 16], ya[10], yb[10];
	fill_uniform(x, sizeof(x) / sizeof(x[0]), 5, -1, 1);
	ASSERT_OK(nn_net_forward(a, x, 2, 0, ya));
	ASSERT_OK(nn_net_forward(b, x, 2, 0, yb));
	ASSERT(!memcmp(ya, yb, sizeof(ya)));
	ASSERT_OK(nn_net_save(b, p2, NULL, meta));
	size_t l1, l2;
	void *f1 = vr_test_read_file(p1, &l1), *f2 = vr_test_read_file(p2, &l2);
	ASSERT(f1 && f2);
	ASSERT_EQ_INT(l1, l2);
	ASSERT(!memcmp(f1, f2, l1));
	/* The metadata a reader (featured) needs. */
	nn_st_file *f;
	char err[256];
	ASSERT_OK(nn_st_open(p1, &f, err, sizeof(err)));
	ASSERT_STR_EQ(nn_st_meta(f, "arch"), "small");
	ASSERT_STR_EQ(nn_st_meta(f, "num_outputs"), "5");
	ASSERT_STR_EQ(nn_st_meta(f, "input_size"), "16");
	ASSERT_STR_EQ(nn_st_meta(f, "mean"), "0.5,0.25,0.125");
	ASSERT_STR_EQ(nn_st_meta(f, "model_version"), "7");
	ASSERT_EQ_INT(nn_st_count(f), nn_net_tensor_count(a));
	const struct nn_st_tensor *t = nn_st_find(f, "classifier.3.weight");
	ASSERT(t && t->dtype == NN_ST_F32 && t->ndim == 2 && t->shape[0] == 5 && t->shape[1] == 256);
	nn_st_close(f);
	free(f1); free(f2); free(pa); free(pb);
	nn_net_destroy(a);
	nn_net_destroy(b);
}

TEST(wrong_shape_names_both)
{
	nn_net *a = small(5), *b = small(6);
	const char *p = tmp_path("k5.safetensors");
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_save(a, p, NULL, NULL));
	ASSERT_EQ_INT(nn_net_load(b, p, NULL), VR_ESHAPE);
	ASSERT_CONTAINS(nn_net_errmsg(b), "classifier.3.weight");
	ASSERT_CONTAINS(nn_net_errmsg(b), "[5, 256]");
	ASSERT_CONTAINS(nn_net_errmsg(b), "[6, 256]");
	nn_net_destroy(a);
	nn_net_destroy(b);
}

/* Writes net's tensors except skip (may be NULL) with no metadata, as a
 * converted torchvision state_dict would be, plus an I64 extra tensor. */
static int write_state_dict(nn_net *net, const char *path, const char *skip)
{
	size_t n = nn_net_param_count(net);
	float *p = malloc(sizeof(float) * n);
	char *json = malloc(65536);
	size_t off = 0, at = 0;
	float *data = malloc(sizeof(float) * n + 8);
	if (nn_net_params_get(net, p))
		return -1;
	at += (size_t)snprintf(json + at, 65536 - at, "{\"features.0.num_batches_tracked\":"
		"{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}");
	memset(data, 0, 8);
	off = 8;
	for (int i = 0; i < nn_net_tensor_count(net); i++) {
		struct nn_tensor_info t;
		nn_net_tensor_at(net, i, &t);
		if (skip && !strcmp(t.name, skip))
			continue;
		at += (size_t)snprintf(json + at, 65536 - at, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[",
			t.name);
		for (int d = 0; d < t.ndim; d++)
			at += (size_t)snprintf(json + at, 65536 - at, d ? ",%d" : "%d", t.shape[d]);
		at += (size_t)snprintf(json + at, 65536 - at, "],\"data_offsets\":[%zu,%zu]}", off,
			off + t.numel * 4);
		memcpy((char *)data + off, p + t.offset, t.numel * 4);
		off += t.numel * 4;
	}
	snprintf(json + at, 65536 - at, "}");
	int rc = write_st(path, json, data, off);
	free(p);
	free(json);
	free(data);
	return rc;
}

TEST(state_dict_without_metadata)
{
	nn_net *a = small(5), *b = small(5);
	const char *p = tmp_path("sd.safetensors");
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_init(b, 2));
	ASSERT_OK(write_state_dict(a, p, NULL));
	ASSERT_OK(nn_net_load(b, p, NULL));           /* the I64 extra is ignored */
	size_t n = nn_net_param_count(a);
	float *pa = malloc(sizeof(float) * n), *pb = malloc(sizeof(float) * n);
	ASSERT_OK(nn_net_params_get(a, pa));
	ASSERT_OK(nn_net_params_get(b, pb));
	ASSERT(!memcmp(pa, pb, sizeof(float) * n));
	free(pa);
	free(pb);
	nn_net_destroy(a);
	nn_net_destroy(b);
}

TEST(missing_tensor_named)
{
	nn_net *a = small(5);
	const char *p = tmp_path("missing.safetensors");
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(write_state_dict(a, p, "features.3.bias"));
	ASSERT_EQ_INT(nn_net_load(a, p, NULL), VR_ENOTFOUND);
	ASSERT_CONTAINS(nn_net_errmsg(a), "features.3.bias");
	nn_net_destroy(a);
}

TEST(other_architecture_refused)
{
	nn_net *a = small(5), *c;
	const char *p = tmp_path("small.safetensors");
	struct nn_net_opts o = { .input_size = 67, .max_batch = 1, .inference_only = 1 };
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_save(a, p, NULL, NULL));
	ASSERT_OK(nn_net_create(backend, "cnnf", &o, &c, NULL, 0));
	ASSERT_EQ_INT(nn_net_load(c, p, NULL), VR_EINVAL);
	ASSERT_CONTAINS(nn_net_errmsg(c), "small");
	ASSERT_CONTAINS(nn_net_errmsg(c), "cnnf");
	nn_net_destroy(c);
	nn_net_destroy(a);
}

TEST(half_precision_dtypes)
{
	/* F16: 1, -2.5, 65504 (largest), 2^-24 (smallest subnormal), -0, inf;
	 * BF16: 1, -3, 2^-133 (subnormal). */
	uint16_t h[6] = { 0x3c00, 0xc100, 0x7bff, 0x0001, 0x8000, 0x7c00 };
	uint16_t bf[3] = { 0x3f80, 0xc040, 0x0001 };
	unsigned char data[18];
	memcpy(data, h, 12);
	memcpy(data + 12, bf, 6);
	const char *p = tmp_path("half.safetensors");
	ASSERT_OK(write_st(p, "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
		"\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[12,18]},"
		"\"i\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[18,18]}}", data, 18));
	nn_st_file *f;
	char err[256];
	float v[6];
	ASSERT_OK(nn_st_open(p, &f, err, sizeof(err)));
	ASSERT_OK(nn_st_read_f32(f, nn_st_find(f, "h"), v, err, sizeof(err)));
	ASSERT(v[0] == 1.0f && v[1] == -2.5f && v[2] == 65504.0f && v[3] == 0x1p-24f);
	ASSERT(v[4] == 0.0f && signbit(v[4]) && isinf(v[5]));
	ASSERT_OK(nn_st_read_f32(f, nn_st_find(f, "b"), v, err, sizeof(err)));
	ASSERT(v[0] == 1.0f && v[1] == -3.0f && v[2] == 0x1p-133f);
	ASSERT_EQ_INT(nn_st_read_f32(f, nn_st_find(f, "i"), v, err, sizeof(err)), VR_EUNSUPPORTED);
	ASSERT_CONTAINS(err, "U8");
	nn_st_close(f);
}

/* A net loads from a BF16 file: every value is its float truncated. */
TEST(net_from_bf16)
{
	nn_net *a = small(3), *b = small(3);
	ASSERT_OK(nn_net_init(a, 8));
	size_t n = nn_net_param_count(a), off = 0, at = 0;
	float *p = malloc(sizeof(float) * n), *q = malloc(sizeof(float) * n);
	uint16_t *d = malloc(sizeof(uint16_t) * n);
	char *json = malloc(65536);
	ASSERT_OK(nn_net_params_get(a, p));
	at += (size_t)snprintf(json, 65536, "{");
	for (int i = 0; i < nn_net_tensor_count(a); i++) {
		struct nn_tensor_info t;
		nn_net_tensor_at(a, i, &t);
		at += (size_t)snprintf(json + at, 65536 - at, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[",
			i ? "," : "", t.name);
		for (int k = 0; k < t.ndim; k++)
			at += (size_t)snprintf(json + at, 65536 - at, k ? ",%d" : "%d", t.shape[k]);
		at += (size_t)snprintf(json + at, 65536 - at, "],\"data_offsets\":[%zu,%zu]}", off * 2,
			(off + t.numel) * 2);
		for (size_t j = 0; j < t.numel; j++) {
			uint32_t bits;
			memcpy(&bits, &p[t.offset + j], 4);
			d[off + j] = (uint16_t)(bits >> 16);
			bits &= 0xffff0000u;
			memcpy(&p[t.offset + j], &bits, 4);
		}
		off += t.numel;
	}
	snprintf(json + at, 65536 - at, "}");
	const char *path = tmp_path("bf16.safetensors");
	ASSERT_OK(write_st(path, json, d, off * 2));
	ASSERT_OK(nn_net_load(b, path, NULL));
	ASSERT_OK(nn_net_params_get(b, q));
	ASSERT(!memcmp(p, q, sizeof(float) * n));
	free(p); free(q); free(d); free(json);
	nn_net_destroy(a);
	nn_net_destroy(b);
}

/* Each malformed header is refused with VR_ECORRUPT and a message. */
TEST(malformed_headers)
{
	static const char *const bad[] = {
		"[1,2]",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}",
		"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",
		"{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		"\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
		"{\"__metadata__\":{\"k\":1}}",
		"{\"__metadata__\":[]}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],"
		"\"data_offsets\":[0,4]}}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}",
		"{\"a\":5}",
		"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
		"not json at all",
	};
	const char *p = tmp_path("bad.safetensors");
	float four = 1.0f;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		nn_st_file *f = NULL;
		char err[256] = "";
		ASSERT_OK(write_st(p, bad[i], &four, 4));
		int rc = nn_st_open(p, &f, err, sizeof(err));
		ASSERT_MSG(rc == VR_ECORRUPT, "header %zu (%s): rc %d", i, bad[i], rc);
		ASSERT_MSG(f == NULL && strstr(err, p), "header %zu: message \"%s\"", i, err);
	}
}

/* A second __metadata__ object was parsed into the first one's table,
 * sized for the second alone: a heap overflow the fuzzer found. */
TEST(metadata_twice_refused)
{
	const char *p = tmp_path("meta2.safetensors");
	float four = 1.0f;
	nn_st_file *f = NULL;
	char err[256] = "";
	ASSERT_OK(write_st(p, "{\"__metadata__\":{\"a\":\"1\"},"
			      "\"__metadata__\":{\"b\":\"2\",\"c\":\"3\"}}", &four, 4));
	ASSERT_EQ_INT(nn_st_open(p, &f, err, sizeof(err)), VR_ECORRUPT);
	ASSERT(f == NULL);
	ASSERT_CONTAINS(err, "__metadata__");
}

TEST(bad_lengths)
{
	const char *p = tmp_path("len.safetensors");
	nn_st_file *f;
	char err[256];
	unsigned char buf[16] = { 0 };
	ASSERT_OK(write_file(p, buf, 0));
	ASSERT_EQ_INT(nn_st_open(p, &f, err, sizeof(err)), VR_ECORRUPT);
	ASSERT_CONTAINS(err, "too short");
	ASSERT_OK(write_file(p, buf, 4));
	ASSERT_EQ_INT(nn_st_open(p, &f, err, sizeof(err)), VR_ECORRUPT);
	buf[5] = 1;                                       /* 2^40: over the limit */
	ASSERT_OK(write_file(p, buf, 16));
	ASSERT_EQ_INT(nn_st_open(p, &f, err, sizeof(err)), VR_ECORRUPT);
	memset(buf, 0, sizeof(buf));
	buf[0] = 200;                                     /* more than the file */
	ASSERT_OK(write_file(p, buf, 16));
	ASSERT_EQ_INT(nn_st_open(p, &f, err, sizeof(err)), VR_ECORRUPT);
	ASSERT_CONTAINS(err, "does not fit");
	ASSERT(nn_st_open(tmp_path("absent"), &f, err, sizeof(err)) == -ENOENT);
	ASSERT_CONTAINS(err, "No such file");
}

/* Every prefix of a real file (at a step) is refused cleanly; the nets
 * they were loaded into keep working. */
TEST(truncated_files)
{
	nn_net *a = small(4);
	const char *p = tmp_path("full.safetensors"), *q = tmp_path("cut.safetensors");
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_save(a, p, NULL, NULL));
	size_t len;
	unsigned char *buf = vr_test_read_file(p, &len);
	ASSERT(buf);
	for (size_t cut = 0; cut < len; cut += cut < 4096 ? 61 : 49999) {
		ASSERT_OK(write_file(q, buf, cut));
		int rc = nn_net_load(a, q, NULL);
		ASSERT_MSG(rc == VR_ECORRUPT, "cut at %zu of %zu: rc %d (%s)", cut, len, rc,
			nn_net_errmsg(a));
		ASSERT(nn_net_errmsg(a)[0]);
	}
	ASSERT_OK(write_file(q, buf, len - 1));
	ASSERT_EQ_INT(nn_net_load(a, q, NULL), VR_ECORRUPT);
	ASSERT_OK(nn_net_load(a, p, NULL));
	free(buf);
	nn_net_destroy(a);
}

/* Random bytes, and a real file with random bytes of its header changed:
 * every open either fails with a code or yields a file whose tensors all
 * read (or fail) cleanly. Run under ASan, this is the crash check. */
TEST(garbage_and_mutations)
{
	nn_net *a = small(4);
	const char *p = tmp_path("g.safetensors"), *q = tmp_path("m.safetensors");
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_save(a, p, NULL, NULL));
	size_t len;
	unsigned char *orig = vr_test_read_file(p, &len), *buf = malloc(len);
	float *scratch = malloc(sizeof(float) * nn_net_param_count(a) * 2);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | orig[i];
	int opened = 0;
	for (int trial = 0; trial < 300; trial++) {
		size_t n;
		if (trial < 100) {                            /* pure garbage */
			n = (size_t)(nn_uniform01(trial, 0) * 600);
			for (size_t i = 0; i < n; i++)
				buf[i] = (unsigned char)(nn_splitmix64(trial, i + 1) & 0xff);
			if (trial % 2 && n >= 8)              /* with a plausible length */
				memcpy(buf, &(uint64_t){ n - 8 }, 8);
		} else {                                      /* a few header bytes changed */
			n = len;
			memcpy(buf, orig, len);
			for (int k = 0; k < 1 + trial % 4; k++) {
				size_t at = 8 + (size_t)(nn_uniform01(trial, k) * hlen);
				buf[at] = (unsigned char)(nn_splitmix64(trial, 100 + k) & 0x7f);
			}
		}
		ASSERT_OK(write_file(q, buf, n));
		nn_st_file *f;
		char err[256];
		int rc = nn_st_open(q, &f, err, sizeof(err));
		if (rc) {
			ASSERT_MSG(rc == VR_ECORRUPT || rc == VR_ETOOBIG, "trial %d: rc %d", trial, rc);
			continue;
		}
		opened++;
		for (int i = 0; i < nn_st_count(f); i++) {
			const struct nn_st_tensor *t = nn_st_at(f, i);
			if (t->numel <= nn_net_param_count(a) * 2)
				nn_st_read_f32(f, t, scratch, err, sizeof(err));
		}
		nn_st_close(f);
		rc = nn_net_load(a, q, NULL);
		ASSERT(rc <= 0);
	}
	ASSERT(opened > 0);                          /* some mutations stay valid */
	free(orig); free(buf); free(scratch);
	nn_net_destroy(a);
}

/* Save mid-training with the optimiser, load into fresh objects, take the
 * same next step on both: identical parameters. */
TEST(optimiser_checkpoint_resumes)
{
	nn_net *a = small(3), *b = small(3);
	nn_optim *oa, *ob;
	struct nn_optim_opts oo = { .kind = NN_OPTIM_ADAMW, .lr = 1e-2f, .weight_decay = 1e-2f };
	const char *p = tmp_path("ckpt.safetensors");
	float x[2 * 3 * 16 * 16], y[6], dy[6] = { 1, -1, 0.5f, 2, -0.5f, 0.25f };
	fill_uniform(x, sizeof(x) / sizeof(x[0]), 9, -1, 1);
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_init(b, 2));
	ASSERT_OK(nn_optim_create(a, &oo, &oa));
	ASSERT_OK(nn_optim_create(b, &oo, &ob));
	for (int s = 0; s < 3; s++) {
		ASSERT_OK(nn_net_zero_grad(a));
		ASSERT_OK(nn_net_forward(a, x, 2, 1, y));
		ASSERT_OK(nn_net_backward(a, dy, NULL));
		ASSERT_OK(nn_optim_step(oa));
	}
	ASSERT_EQ_INT(nn_net_load(b, p, ob), -ENOENT);
	ASSERT_OK(nn_net_save(a, p, oa, NULL));
	ASSERT_OK(nn_net_load(b, p, ob));
	ASSERT_EQ_INT(nn_optim_steps(ob), 3);
	nn_net_set_rng(a, 77, 3);
	nn_net_set_rng(b, 77, 3);
	nn_net *nets[2] = { a, b };
	nn_optim *opts[2] = { oa, ob };
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(nn_net_zero_grad(nets[i]));
		ASSERT_OK(nn_net_forward(nets[i], x, 2, 1, y));
		ASSERT_OK(nn_net_backward(nets[i], dy, NULL));
		ASSERT_OK(nn_optim_step(opts[i]));
	}
	size_t n = nn_net_param_count(a);
	float *pa = malloc(sizeof(float) * n), *pb = malloc(sizeof(float) * n);
	ASSERT_OK(nn_net_params_get(a, pa));
	ASSERT_OK(nn_net_params_get(b, pb));
	ASSERT(!memcmp(pa, pb, sizeof(float) * n));
	/* A weights-only file has no optimiser state to resume. */
	const char *w = tmp_path("weights.safetensors");
	ASSERT_OK(nn_net_save(a, w, NULL, NULL));
	ASSERT_EQ_INT(nn_net_load(b, w, ob), VR_EINVAL);
	ASSERT_CONTAINS(nn_net_errmsg(b), "optimiser");
	free(pa);
	free(pb);
	nn_optim_destroy(oa);
	nn_optim_destroy(ob);
	nn_net_destroy(a);
	nn_net_destroy(b);
}

TEST(open_file_from_metadata)
{
	nn_net *a = small(7), *b;
	const char *p = tmp_path("meta.safetensors");
	char err[256];
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_OK(nn_net_save(a, p, NULL, NULL));
	struct nn_net_opts o = { .max_batch = 4, .output_layer = "fc", .inference_only = 1 };
	ASSERT_OK(nn_net_open_file(backend, p, &o, &b, err, sizeof(err)));
	ASSERT_STR_EQ(nn_net_arch(b), "small");
	ASSERT_EQ_INT(nn_net_num_outputs(b), 7);
	ASSERT_EQ_INT(nn_net_input_size(b), 16);
	ASSERT_EQ_INT(nn_net_max_batch(b), 4);
	ASSERT_EQ_INT(nn_net_output_size(b), 256);
	nn_net_destroy(b);
	ASSERT_OK(write_state_dict(a, p, NULL));
	ASSERT_EQ_INT(nn_net_open_file(backend, p, &o, &b, err, sizeof(err)), VR_EINVAL);
	ASSERT_CONTAINS(err, "metadata");
	nn_net_destroy(a);
}

/* A pretrained full net's file into a cut or head net: the layers below
 * the cut are not in the net, the new or resized head keeps its seeded
 * values; a file of the same head (a trained one) loads it. */
TEST(head_nets_load_the_trunk_and_keep_a_fresh_head)
{
	nn_backend *backend;
	nn_net *full, *cut, *head, *again;
	char err[256];
	const char *pre = tmp_path("pre.safetensors"), *trained = tmp_path("head.safetensors");
	struct nn_net_opts f = { .num_outputs = 5, .input_size = 32, .max_batch = 2 };
	ASSERT_OK(nn_backend_open("cpu", &backend));
	ASSERT_OK(nn_net_create(backend, "mobilenet_v2", &f, &full, NULL, 0));
	ASSERT_OK(nn_net_init(full, 1));
	ASSERT_OK(nn_net_save(full, pre, NULL, NULL));
	/* Above the cut the pretrained layers are kept; dense_3 (K 5 as the
	 * file's) is still the resized classifier: not loaded. */
	struct nn_net_opts c = f;
	c.input_layer = "block_13";
	ASSERT_OK(nn_net_create(backend, "mobilenet_v2", &c, &cut, NULL, 0));
	ASSERT_OK(nn_net_init(cut, 2));
	size_t nf = nn_net_param_count(full), nc = nn_net_param_count(cut);
	float *pf = malloc(sizeof(float) * nf), *pc0 = malloc(sizeof(float) * nc);
	float *pc = malloc(sizeof(float) * nc);
	ASSERT_OK(nn_net_params_get(full, pf));
	ASSERT_OK(nn_net_params_get(cut, pc0));
	ASSERT_OK(nn_net_load(cut, pre, NULL));
	ASSERT_OK(nn_net_params_get(cut, pc));
	for (int t = 0; t < nn_net_tensor_count(cut); t++) {
		struct nn_tensor_info a, r;
		ASSERT_OK(nn_net_tensor_at(cut, t, &a));
		int fresh = !strncmp(a.name, "dense_3.", 8);
		ASSERT_OK(nn_net_tensor_find(full, a.name, &r));
		ASSERT_MSG(!memcmp(pc + a.offset, fresh ? pc0 + a.offset : pf + r.offset,
			sizeof(float) * a.numel), "%s: not %s", a.name, fresh ? "as initialised" :
			"the file's");
	}
	/* A head alone: nothing of the file is in it; it loads and keeps its init. */
	struct nn_net_opts h = f;
	h.num_outputs = 3;
	h.input_layer = "block_10";
	h.head_width = 4;
	ASSERT_OK(nn_net_create(backend, "mobilenet_v2", &h, &head, NULL, 0));
	ASSERT_OK(nn_net_init(head, 3));
	size_t nh = nn_net_param_count(head);
	float *ph0 = malloc(sizeof(float) * nh), *ph = malloc(sizeof(float) * nh);
	ASSERT_OK(nn_net_params_get(head, ph0));
	ASSERT_OK(nn_net_load(head, pre, NULL));
	ASSERT_OK(nn_net_params_get(head, ph));
	ASSERT(!memcmp(ph0, ph, sizeof(float) * nh));
	/* Saved, its file names the head, reopens as the same net, and loads. */
	ASSERT_OK(nn_net_save(head, trained, NULL, NULL));
	ASSERT_OK(nn_net_open_file(backend, trained, NULL, &again, err, sizeof(err)));
	ASSERT_EQ_INT(nn_net_input_count(again), 96 * 2 * 2);
	ASSERT_EQ_INT(nn_net_num_outputs(again), 3);
	ASSERT_OK(nn_net_params_get(again, ph));
	ASSERT(!memcmp(ph0, ph, sizeof(float) * nh));
	nn_net_destroy(again);
	nn_net_destroy(head);
	nn_net_destroy(cut);
	nn_net_destroy(full);
	free(pf); free(pc0); free(pc); free(ph0); free(ph);
	nn_backend_close(backend);
}

/* A normalised head's file says so ("block_10:4:l2"): it reopens as a net
 * whose rows have unit length; resuming training (optimiser state) from a
 * checkpoint of another head, here the same head unnormalised, is
 * refused rather than leaving the head at its init. */
TEST(normalised_head_reopens_normalised_and_other_heads_do_not_resume)
{
	nn_backend *backend;
	nn_net *head, *plain, *again;
	nn_optim *opt;
	char err[256];
	const char *path = tmp_path("l2head.safetensors");
	struct nn_net_opts h = { .num_outputs = 3, .input_size = 32, .max_batch = 2,
		.input_layer = "block_10", .head_width = 4, .head_norm = 1 };
	ASSERT_OK(nn_backend_open("cpu", &backend));
	ASSERT_OK(nn_net_create(backend, "mobilenet_v2", &h, &head, NULL, 0));
	ASSERT_OK(nn_net_init(head, 3));
	ASSERT_OK(nn_net_save(head, path, NULL, NULL));
	ASSERT_OK(nn_net_open_file(backend, path, NULL, &again, err, sizeof(err)));
	size_t in = nn_net_input_count(again);
	float *x = malloc(sizeof(float) * 2 * in), y[6];
	fill_uniform(x, 2 * in, 4, 0, 3);
	ASSERT_OK(nn_net_forward(again, x, 2, 0, y));
	for (int i = 0; i < 2; i++) {
		double norm = 0;
		for (int k = 0; k < 3; k++)
			norm += (double)y[i * 3 + k] * y[i * 3 + k];
		ASSERT_MSG(fabs(norm - 1) < 1e-5, "row %d has squared length %g", i, norm);
	}
	h.head_norm = 0;
	ASSERT_OK(nn_net_create(backend, "mobilenet_v2", &h, &plain, NULL, 0));
	ASSERT_OK(nn_optim_create(plain, &(struct nn_optim_opts){ .kind = NN_OPTIM_ADAM,
		.lr = 1e-3f }, &opt));
	ASSERT_OK(nn_net_save(head, path, NULL, NULL));
	ASSERT_EQ_INT(nn_net_load(plain, path, opt), VR_EINVAL);
	ASSERT_CONTAINS(nn_net_errmsg(plain), "block_10:4:l2");
	ASSERT_OK(nn_net_load(plain, path, NULL));    /* weights alone: the head is fresh */
	nn_optim_destroy(opt);
	nn_net_destroy(plain);
	nn_net_destroy(again);
	nn_net_destroy(head);
	free(x);
	nn_backend_close(backend);
}

TEST(save_failure_reported)
{
	nn_net *a = small(2);
	ASSERT_OK(nn_net_init(a, 1));
	ASSERT_EQ_INT(nn_net_save(a, "/nonexistent-dir/x.safetensors", NULL, NULL), -ENOENT);
	ASSERT_CONTAINS(nn_net_errmsg(a), "/nonexistent-dir");
	nn_net_destroy(a);
}

static const struct vr_test tests[] = {
	T(round_trip),
	T(wrong_shape_names_both),
	T(state_dict_without_metadata),
	T(missing_tensor_named),
	T(other_architecture_refused),
	T(half_precision_dtypes),
	T(net_from_bf16),
	T(malformed_headers),
	T(metadata_twice_refused),
	T(bad_lengths),
	T(truncated_files),
	T(garbage_and_mutations),
	T(optimiser_checkpoint_resumes),
	T(open_file_from_metadata),
	T(head_nets_load_the_trunk_and_keep_a_fresh_head),
	T(normalised_head_reopens_normalised_and_other_heads_do_not_resume),
	T(save_failure_reported),
	{ 0 },
};

int main(int argc, char **argv)
{
	int rc = vr_test_main(tests, argc, argv);
	if (dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			rc = rc ? rc : 1;
	}
	nn_backend_close(backend);
	return rc;
}

#else

static void test_unsupported(void)
{
	SKIP("built without cJSON: safetensors unsupported");
}

static const struct vr_test tests[] = { { "unsupported", test_unsupported }, { 0 } };

int main(int argc, char **argv)
{
	return vr_test_main(tests, argc, argv);
}

#endif
