/* fuzz_seeds: writes the seed corpus of the fuzz harnesses, small real
 * inputs of each kind made by our own writers (TurboJPEG, protobuf-c,
 * nn_st_write, the LMDB records fstore and the snapshot code store):
 *
 *   build/tests/fuzz/fuzz_seeds tests/fuzz/corpus
 *
 * One file per seed in DIR/<harness>/, framed as the harness reads it
 * (fuzz.h). It only adds and overwrites its own seeds, so inputs added by
 * hand (crashes found and fixed) stay. The record seeds carry the time
 * they were made; everything else comes out the same on every run. */
#include "decode.h"
#include "err.h"
#include "fstore.h"
#include "icsv.h"
#include "interactions.h"
#include "jpeg_fixtures.h"
#include "model.h"
#include "reshard.h"
#include "safetensors.h"
#include "snapshot.h"
#include "store.h"
#include "visrec/v1/featured.pb-c.h"
#include "visrec/v1/rankd.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

static const char *g_dir;
static char g_tmp[] = "/tmp/fuzz_seeds.XXXXXX";

static void die(const char *what, int rc)
{
	fprintf(stderr, "fuzz_seeds: %s: %s\n", what, rc ? vr_strerror(rc) : strerror(errno));
	exit(1);
}

/* A seed being built: bytes appended in the harness's framing. */
struct seed {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct seed *s, const void *p, size_t n)
{
	if (s->n + n > s->cap) {
		s->cap = (s->n + n) * 2;
		if (!(s->p = realloc(s->p, s->cap)))
			die("out of memory", VR_ENOMEM);
	}
	if (n)
		memcpy(s->p + s->n, p, n);
	s->n += n;
}

static void put_u8(struct seed *s, uint8_t v)
{
	put(s, &v, 1);
}

static void put_u64(struct seed *s, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		put_u8(s, (uint8_t)(v >> (8 * i)));
}

static void put_chunk(struct seed *s, const void *p, size_t n)
{
	for (int i = 0; i < 4; i++)
		put_u8(s, (uint8_t)(n >> (8 * i)));
	put(s, p, n);
}

/* Writes the seed as DIR/harness/name and empties it. */
static void emit(struct seed *s, const char *harness, const char *name)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", g_dir, harness);
	if (mkdir(path, 0755) && errno != EEXIST)
		die(path, 0);
	snprintf(path, sizeof path, "%s/%s/%s", g_dir, harness, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(s->p, 1, s->n, f) != s->n || fclose(f))
		die(path, 0);
	s->n = 0;
}

static void emit_bytes(const char *harness, const char *name, const void *p, size_t n)
{
	struct seed s = { 0 };
	put(&s, p, n);
	emit(&s, harness, name);
	free(s.p);
}

/* ---- JPEG ---------------------------------------------------------------- */

/* A w×h picture of nch channels: gradients and a few edges, so every
 * DCT block holds something. */
static uint8_t *picture(int w, int h, int nch)
{
	uint8_t *p = malloc((size_t)w * h * nch);
	if (!p)
		die("out of memory", VR_ENOMEM);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			for (int c = 0; c < nch; c++)
				p[((size_t)y * w + x) * nch + c] =
					(uint8_t)((x * 255 / w + y * 97 / h + c * 60 + ((x / 4 + y / 4) & 1) * 40) & 255);
	return p;
}

/* A JPEG of w×h: pf a TJPF_*, ss a TJSAMP_*, flags TJFLAG_*. */
static uint8_t *jpeg(int w, int h, int pf, int ss, int quality, int flags, size_t *len)
{
	uint8_t *pix = picture(w, h, tjPixelSize[pf]), *out = NULL;
	unsigned long n = 0;
	tjhandle tj = tjInitCompress();
	if (!tj || tjCompress2(tj, pix, w, 0, h, pf, &out, &n, ss, quality, flags))
		die(tj ? tjGetErrorStr2(tj) : "tjInitCompress", VR_EINVAL);
	tjDestroy(tj);
	free(pix);
	*len = n;
	return out;
}

static void seeds_decode(void)
{
	static const struct {
		const char *name;
		int w, h, pf, ss, q, flags;
		uint8_t ctl; /* fuzz_decode: size index | 8 no DCT scaling | 16 tight limits */
	} j[] = {
		{ "rgb-420-33x17", 33, 17, TJPF_RGB, TJSAMP_420, 75, 0, 3 },
		{ "rgb-444-8x8", 8, 8, TJPF_RGB, TJSAMP_444, 90, 0, 2 },
		{ "rgb-422-40x24-nodct", 40, 24, TJPF_RGB, TJSAMP_422, 60, 0, 8 | 4 },
		{ "rgb-440-24x40", 24, 40, TJPF_RGB, TJSAMP_440, 70, 0, 5 },
		{ "rgb-411-64x16", 64, 16, TJPF_RGB, TJSAMP_411, 50, 0, 1 },
		{ "grey-16x20", 16, 20, TJPF_GRAY, TJSAMP_GRAY, 80, 0, 3 },
		{ "cmyk-24x16", 24, 16, TJPF_CMYK, TJSAMP_420, 75, 0, 4 },
		{ "cmyk-444-9x9", 9, 9, TJPF_CMYK, TJSAMP_444, 75, 0, 7 },
		{ "progressive-420-48x32", 48, 32, TJPF_RGB, TJSAMP_420, 75, TJFLAG_PROGRESSIVE, 6 },
		{ "progressive-grey-20x20", 20, 20, TJPF_GRAY, TJSAMP_GRAY, 75, TJFLAG_PROGRESSIVE, 2 },
		{ "progressive-cmyk-16x16", 16, 16, TJPF_CMYK, TJSAMP_444, 75, TJFLAG_PROGRESSIVE, 3 },
		{ "rgb-1x1", 1, 1, TJPF_RGB, TJSAMP_444, 75, 0, 0 },
		{ "rgb-5x70-tall", 5, 70, TJPF_RGB, TJSAMP_420, 40, 0, 2 },
		{ "rgb-70x40-tight-limits", 70, 40, TJPF_RGB, TJSAMP_420, 30, 0, 16 | 3 },
	};
	struct seed s = { 0 };
	for (size_t i = 0; i < sizeof j / sizeof j[0]; i++) {
		size_t n;
		uint8_t *b = jpeg(j[i].w, j[i].h, j[i].pf, j[i].ss, j[i].q, j[i].flags, &n);
		put_u8(&s, j[i].ctl);
		put(&s, b, n);
		emit(&s, "fuzz_decode", j[i].name);
		tjFree(b);
	}
	/* 64 scans, the most featured decodes: the fuzzer may add one. */
	size_t n;
	uint8_t *many = fixture_many_scans(20, 12, 0, &n);
	if (!many)
		die("out of memory", VR_ENOMEM);
	put_u8(&s, 2);
	put(&s, many, n);
	emit(&s, "fuzz_decode", "progressive-grey-64-scans");
	free(many);
	free(s.p);
}

/* ---- CSV ------------------------------------------------------------------- */

static const struct {
	const char *name, *text;
} csv[] = {
	{ "header", "user,item,timestamp\nu1,i1,1600000000\nu2,i1,1600000060\nu1,i2,1600000120\n" },
	{ "no-header", "u1,i1,1\nu1,i2,2\nu2,i3,3\n" },
	{ "quoted-crlf-blank", "\"user\",\"item\",\"timestamp\"\r\n\r\n\"a,b\",\"say \"\"hi\"\"\",17\r\n  \r\nc,d,18\r\n" },
	{ "columns-by-name", "ts,item_id,extra,user_id\n5,i9,x,u9\n6,i8,y,u8\n" },
	{ "bad-rows", "user,item,timestamp\nu1,,3\n,i1,4\nu1,i1,notanumber\nu1,\"open,5\nu2,i2,6\n" },
	{ "iso-times", "user,item,timestamp\nu1,i1,2021-03-04\nu1,i2,2021-03-04T05:06:07Z\nu2,i1,2020-02-29 23:59:60.5\n" },
	{ "bom-fraction-negative", "\xef\xbb\xbfu1,i1,12.75\nu1,i2,-3\nu2,i2,+4\n" },
	{ "utf8-ids", "user,item,timestamp\n\xc3\xa9l\xc3\xa8ve,\xe6\x97\xa5\xe6\x9c\xac,1\n" },
};

static const struct {
	const char *name, *text;
} shard_lists[] = {
	{ "three", "127.0.0.1:7003,127.0.0.1:7001,127.0.0.1:7002" },
	{ "names-ipv6", "featured-0.featured.visrec.svc:50051,[::1]:50051,[fe80::1]:1" },
	{ "bad-entries", "a:1,,b:0,c:65536,d:08,[::1:2,e:1,e:1" },
};

static void seeds_shard_lists(void)
{
	for (size_t i = 0; i < sizeof shard_lists / sizeof shard_lists[0]; i++)
		emit_bytes("fuzz_shardmap", shard_lists[i].name, shard_lists[i].text,
			   strlen(shard_lists[i].text));
}

static void seeds_csv(void)
{
	for (size_t i = 0; i < sizeof csv / sizeof csv[0]; i++)
		emit_bytes("fuzz_icsv", csv[i].name, csv[i].text, strlen(csv[i].text));
	/* A line one byte over ICSV_MAX_LINE between good rows. */
	struct seed s = { 0 };
	put(&s, "u1,i1,1\nu2,i2,2,", 16);
	while (s.n < 8 + ICSV_MAX_LINE + 1)
		put_u8(&s, 'x');
	put(&s, "\nu3,i3,3\n", 9);
	emit(&s, "fuzz_icsv", "long-line");
	free(s.p);
}

/* ---- safetensors ------------------------------------------------------------ */

static void file_seed(const char *harness, const char *name, const char *path)
{
	FILE *f = fopen(path, "rb");
	struct seed s = { 0 };
	char buf[4096];
	size_t n;
	if (!f)
		die(path, 0);
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		put(&s, buf, n);
	fclose(f);
	emit(&s, harness, name);
	free(s.p);
}

/* A file written by hand: header JSON text, then data bytes. */
static void st_by_hand(const char *name, const char *json, const void *data, size_t n)
{
	struct seed s = { 0 };
	put_u64(&s, strlen(json));
	put(&s, json, strlen(json));
	put(&s, data, n);
	emit(&s, "fuzz_safetensors", name);
	free(s.p);
}

static void seeds_safetensors(void)
{
	char path[4200], err[256];
	float w[6] = { 1, -2, 3.5f, 0, 1e-3f, -7 }, b[2] = { 0.5f, -0.5f };
	int64_t ws[2] = { 2, 3 }, bs[1] = { 2 }, none[1] = { 0 };
	const struct nn_st_entry t[] = {
		{ "fc.weight", 2, ws, w }, { "fc.bias", 1, bs, b }, { "empty", 1, none, w },
	};
	const char *const meta[] = { "format", "visrec-nn", "arch", "small", "num_outputs", "2",
				     "input_size", "16", "mean", "0.485,0.456,0.406", NULL };
	snprintf(path, sizeof path, "%s/w.safetensors", g_tmp);
	int rc = nn_st_write(path, t, 3, meta, err, sizeof err);
	if (rc)
		die(err, rc);
	file_seed("fuzz_safetensors", "f32-with-metadata", path);
	rc = nn_st_write(path, t, 1, NULL, err, sizeof err);
	if (rc)
		die(err, rc);
	file_seed("fuzz_safetensors", "f32-one-tensor", path);

	const uint16_t half[4] = { 0x3c00, 0xc000, 0x0001, 0x7c00 }; /* 1, -2, subnormal, inf */
	st_by_hand("f16-bf16-i64",
		   "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
		   "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
		   "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
		   "\"__metadata__\":{\"arch\":\"cnnf\"}}",
		   half, sizeof half);
	st_by_hand("scalar-and-bool",
		   "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
		   "\"m\":{\"dtype\":\"BOOL\",\"shape\":[3,1],\"data_offsets\":[4,7]}}    ",
		   "\x00\x00\x80\x3f\x01\x00\x01", 7);
}

/* ---- featured's records ------------------------------------------------------ */

static vr_store *open_store(const char *name)
{
	char path[4200];
	vr_store *st;
	const vr_store_opts o = { .initial_map_bytes = 1 << 20, .no_sync = 1 };
	snprintf(path, sizeof path, "%s/%s", g_tmp, name);
	if (mkdir(path, 0755))
		die(path, 0);
	int rc = vr_store_open(&st, path, &o);
	if (rc)
		die("vr_store_open", rc);
	return st;
}

/* Every record of db, each as one seed: kind byte, key chunk, value. */
static void dump_db(vr_store *st, const char *db, unsigned flags, uint8_t kind, const char *prefix,
		    int max)
{
	vr_dbi dbi;
	vr_txn *txn;
	vr_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	struct seed s = { 0 };
	int rc, n = 0;
	if ((rc = vr_store_dbi(st, db, flags, &dbi)) || (rc = vr_store_read_begin(st, &txn)) ||
	    (rc = vr_cursor_open(txn, dbi, &c)))
		die(db, rc);
	for (rc = vr_cursor_seek(c, NULL, 0, &k, &kl, &v, &vl); !rc && n < max;
	     rc = vr_cursor_next(c, &k, &kl, &v, &vl)) {
		char name[64];
		put_u8(&s, kind);
		put_chunk(&s, k, kl);
		put(&s, v, vl);
		snprintf(name, sizeof name, "%s-%d", prefix, n++);
		emit(&s, "fuzz_fstore_records", name);
	}
	vr_cursor_close(c);
	vr_store_read_end(txn);
	free(s.p);
}

static void seeds_fstore(void)
{
	vr_store *st = open_store("featured");
	fd_fstore *fs;
	int rc = fd_fstore_open(&fs, st);
	if (rc)
		die("fd_fstore_open", rc);
	fd_model_info m = { .arch = "small", .layer = "output", .dims = 3, .input_size = 16,
			    .num_outputs = 3, .weights = "models/v1.safetensors",
			    .created_unix = 1700000000, .purpose = "embedding",
			    .mean = { 0.485f, 0.456f, 0.406f }, .std = { 0.229f, 0.224f, 0.225f } };
	fd_model_info m2 = m;
	m2.version = 2;
	snprintf(m2.arch, sizeof m2.arch, "mobilenet_v2");
	snprintf(m2.purpose, sizeof m2.purpose, "features");
	const float vec[2][3] = { { 1, 2, 3 }, { -0.5f, 0, 1e6f } };
	static const char image[] = "\xff\xd8\xff stands in for a JPEG";
	fd_put p[2] = { { .item_id = "i001", .image = image, .image_len = sizeof image, .vector = vec[0] },
			{ .item_id = "\xc3\xa9t\xc3\xa9", .image = image, .image_len = sizeof image,
			  .vector = vec[1] } };
	fd_revec r[2] = { { .item_id = p[0].item_id, .vector = vec[1] },
			  { .item_id = p[1].item_id, .vector = vec[0] } };
	fd_put gone = { .item_id = "gone", .image = image, .image_len = sizeof image, .vector = vec[0] };
	const char *gone_id[1] = { "gone" };
	uint64_t seq;
	/* Two added, one replaced, both embedded by version 2, a switch to
	 * it, one re-embedded, then one more added and removed (as a reshard
	 * deletes): every kind of change. */
	if ((rc = fd_fstore_model_add(fs, &m, 1)) || (rc = fd_fstore_model_add(fs, &m2, 0)) ||
	    (rc = fd_fstore_put_items(fs, 1, 3, p, 2)))
		die("filling featured's store", rc);
	r[1].seq = p[1].seq;
	if ((rc = fd_fstore_put_items(fs, 1, 3, p, 1)))
		die("filling featured's store", rc);
	r[0].seq = p[0].seq;
	if ((rc = fd_fstore_put_vectors(fs, 2, 3, r, 2)) || (rc = fd_fstore_switch(fs, 2, &seq, NULL)) ||
	    (rc = fd_fstore_put_vectors(fs, 2, 3, r, 1)) ||
	    (rc = fd_fstore_put_items(fs, 2, 3, &gone, 1)) ||
	    (rc = fd_fstore_remove(fs, gone_id, 1, "seed-journal", "J", 1, NULL)))
		die("filling featured's store", rc);
	dump_db(st, "changes", VR_DB_INTEGERKEY, 0, "change", 8);
	dump_db(st, "vectors", 0, 1, "vector", 4);
	dump_db(st, "items", 0, 2, "item", 4);
	dump_db(st, "models", VR_DB_INTEGERKEY, 3, "model", 4);
	fd_fstore_close(fs);
	vr_store_close(st);
}

/* ---- rankd's snapshots ---------------------------------------------------------- */

static void get_value(vr_store *st, const char *db, const void *key, size_t kl, struct seed *s)
{
	vr_dbi dbi;
	vr_txn *txn;
	const void *v;
	size_t vl;
	int rc;
	if ((rc = vr_store_dbi(st, db, 0, &dbi)) || (rc = vr_store_read_begin(st, &txn)) ||
	    (rc = vr_get(txn, dbi, key, kl, &v, &vl)))
		die(db, rc);
	put_chunk(s, v, vl);
	vr_store_read_end(txn);
}

static void seeds_snapshot(void)
{
	static const struct {
		const char *name;
		enum rk_model_kind kind;
		uint32_t users, items, f, k, k2;
		int cold;
	} snaps[] = {
		{ "bpr", RK_MODEL_BPR, 3, 4, 0, 2, 0, 0 },
		{ "vbpr-cold-rows", RK_MODEL_VBPR, 2, 3, 3, 2, 2, 2 },
		{ "dvbpr-cold-rows", RK_MODEL_DVBPR, 2, 2, 0, 1, 2, 1 },
		{ "vbpr-no-latent", RK_MODEL_VBPR, 2, 2, 2, 0, 1, 0 },
	};
	vr_store *st = open_store("rankd");
	rk_snap snap;
	const rk_snap_pos pos = { RK_SNAP_SEQ_KEY, 5 };
	int rc = rk_snap_open(&snap, st);
	if (rc)
		die("rk_snap_open", rc);
	for (size_t i = 0; i < sizeof snaps / sizeof snaps[0]; i++) {
		rk_model_dims d = { snaps[i].kind, snaps[i].users, snaps[i].items, snaps[i].k,
				    snaps[i].k2, snaps[i].f };
		rk_model *m;
		if ((rc = rk_model_create(&m, &d)))
			die("rk_model_create", rc);
		rk_model_init(m, 7);
		uint32_t dim = rk_model_dim(m);
		rk_snap_meta meta = { .version = i + 1, .kind = (uint32_t)d.kind, .n_rows = d.n_items,
				      .dim = dim, .feature_dims = rk_model_feature_dims(m),
				      .created_unix = 1700000000, .trained_pairs = 9 };
		float *rows = calloc((size_t)d.n_items * dim + dim, sizeof(float));
		if (!rows)
			die("out of memory", VR_ENOMEM);
		for (size_t x = 0; x < (size_t)d.n_items * dim + dim; x++)
			rows[x] = (float)x / 8 - 1;
		if ((rc = rk_snap_save(&snap, m, rows, &meta)))
			die("rk_snap_save", rc);
		for (int c = 0; c < snaps[i].cold; c++)
			if ((rc = rk_snap_put_row(&snap, meta.version, d.n_items + (uint32_t)c, rows, dim, &pos)))
				die("rk_snap_put_row", rc);
		struct seed s = { 0 };
		char key[32];
		put_u64(&s, meta.version);
		snprintf(key, sizeof key, "meta/v%zu", i + 1);
		get_value(st, "serving", key, strlen(key), &s);
		snprintf(key, sizeof key, "v%zu", i + 1);
		get_value(st, "models", key, strlen(key), &s);
		get_value(st, "rows", key, strlen(key), &s);
		put_u8(&s, (uint8_t)snaps[i].cold);
		for (int c = 0; c < snaps[i].cold; c++) {
			uint8_t rk[8];
			uint32_t item = d.n_items + (uint32_t)c;
			for (int b = 0; b < 4; b++) {
				rk[b] = (uint8_t)(meta.version >> (24 - 8 * b));
				rk[4 + b] = (uint8_t)(item >> (24 - 8 * b));
			}
			put(&s, rk, 8);
			get_value(st, "cold_rows", rk, 8, &s);
		}
		emit(&s, "fuzz_rankd_snapshot", snaps[i].name);
		/* The same snapshot as a writer exports it to a replica. */
		void *x;
		size_t xl;
		if ((rc = rk_snap_activate(&snap, meta.version, &pos, 1)) ||
		    (rc = rk_snap_export(&snap, meta.version, &x, &xl)))
			die("rk_snap_export", rc);
		put_u8(&s, 1);
		put(&s, x, xl);
		emit(&s, "fuzz_rankd_replica", snaps[i].name);
		free(x);
		free(s.p);
		free(rows);
		rk_model_free(m);
	}
	vr_store_close(st);
}

/* ---- requests ------------------------------------------------------------------ */

static void message(const char *harness, const char *name, uint8_t sel, const ProtobufCMessage *m)
{
	struct seed s = { 0 };
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(n ? n : 1);
	if (!b)
		die("out of memory", VR_ENOMEM);
	protobuf_c_message_pack(m, b);
	put_u8(&s, sel);
	put(&s, b, n);
	emit(&s, harness, name);
	free(b);
	free(s.p);
}

static void seeds_featured_requests(void)
{
	const char *h = "fuzz_featured_requests";
	size_t n;
	uint8_t *img = jpeg(12, 10, TJPF_RGB, TJSAMP_420, 70, 0, &n);
	Visrec__V1__PutItemsRequest put = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
	put.item_id = "i001";
	put.image = (ProtobufCBinaryData){ n, img };
	message(h, "put-items", 0, &put.base);
	message(h, "put-items-two-slices", 0x80, &put.base);
	Visrec__V1__EmbedRequest emb = VISREC__V1__EMBED_REQUEST__INIT;
	emb.item_id = "\xe6\x97\xa5\xe6\x9c\xac";
	emb.image = put.image;
	message(h, "embed", 1, &emb.base);
	char *ids[] = { "i001", "i002", "" };
	Visrec__V1__GetVectorsRequest gv = VISREC__V1__GET_VECTORS_REQUEST__INIT;
	gv.n_item_ids = 3;
	gv.item_ids = ids;
	gv.model_version = 2;
	gv.max_per_message = 10;
	message(h, "get-vectors-ids", 2, &gv.base);
	Visrec__V1__GetVectorsRequest all = VISREC__V1__GET_VECTORS_REQUEST__INIT;
	all.all = 1;
	message(h, "get-vectors-all", 0x82, &all.base);
	Visrec__V1__WatchRequest w = VISREC__V1__WATCH_REQUEST__INIT;
	w.after_seq = 42;
	w.include_vectors = 1;
	message(h, "watch", 3, &w.base);

	Visrec__V1__TrainVisualStart start = VISREC__V1__TRAIN_VISUAL_START__INIT;
	start.session_id = "s-1";
	start.arch = "small";
	start.dims = 8;
	start.input_size = 16;
	start.learning_rate = 1e-3f;
	start.weight_decay = 1e-4f;
	start.seed = 3;
	start.checkpoint_every = 50;
	Visrec__V1__TrainVisualRequest tv = VISREC__V1__TRAIN_VISUAL_REQUEST__INIT;
	tv.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_START;
	tv.start = &start;
	message(h, "train-visual-start", 4, &tv.base);
	char *pos[] = { "i001", "i002" }, *neg[] = { "i003", "i004" };
	float margin[2] = { 0.1f, -0.2f }, theta[4] = { 1, 2, 3, 4 };
	Visrec__V1__TrainVisualStep step = VISREC__V1__TRAIN_VISUAL_STEP__INIT;
	step.session_id = "s-1";
	step.step = 1;
	step.n_pos_items = step.n_neg_items = 2;
	step.pos_items = pos;
	step.neg_items = neg;
	step.n_margin = 2;
	step.margin = margin;
	step.n_theta = 4;
	step.theta = theta;
	tv.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_STEP;
	tv.step = &step;
	message(h, "train-visual-step", 4, &tv.base);
	Visrec__V1__TrainVisualEmbed te = VISREC__V1__TRAIN_VISUAL_EMBED__INIT;
	te.session_id = "s-1";
	te.n_items = 2;
	te.items = pos;
	tv.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_EMBED;
	tv.embed = &te;
	message(h, "train-visual-embed", 4, &tv.base);
	Visrec__V1__TrainVisualFinish fin = VISREC__V1__TRAIN_VISUAL_FINISH__INIT;
	fin.session_id = "s-1";
	fin.reembed = 1;
	fin.from_step = 40;
	tv.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_FINISH;
	tv.finish = &fin;
	message(h, "train-visual-finish", 0x84, &tv.base);
	Visrec__V1__TrainVisualMarkBest mb = VISREC__V1__TRAIN_VISUAL_MARK_BEST__INIT;
	mb.session_id = "s-1";
	tv.msg_case = VISREC__V1__TRAIN_VISUAL_REQUEST__MSG_MARK_BEST;
	tv.mark_best = &mb;
	message(h, "train-visual-mark-best", 4, &tv.base);
	Visrec__V1__FeaturedInfoRequest info = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	message(h, "info", 5, &info.base);
	Visrec__V1__GetImagesRequest gi = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	gi.n_item_ids = 2;
	gi.item_ids = pos;
	message(h, "get-images-ids", 6, &gi.base);
	Visrec__V1__GetImagesRequest page = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	page.after = "i001";
	page.max_items = 64;
	message(h, "get-images-page", 0x86, &page.base);
	Visrec__V1__AdoptModelRequest ad = VISREC__V1__ADOPT_MODEL_REQUEST__INIT;
	ad.model_version = 3;
	ad.from = "a:1";
	message(h, "adopt-model", 7, &ad.base);
	tjFree(img);
}

/* A writer's interaction log: a batch of rows, then item ids interned
 * outside a batch (featured's new items), as InteractionFeed sends them. */
static int emit_log_record(void *ctx, uint64_t seq, const void *rec, size_t len)
{
	struct seed s = { 0 };
	char name[32];
	(void)ctx;
	put_u8(&s, 0);
	put(&s, rec, len);
	snprintf(name, sizeof name, "log-%llu", (unsigned long long)seq);
	emit(&s, "fuzz_rankd_replica", name);
	free(s.p);
	return 0;
}

static void seeds_replica_log(void)
{
	vr_store *st = open_store("rankd-log");
	rk_interactions *ix;
	uint32_t i;
	int rc = rk_interactions_open(&ix, st);
	const rk_interaction_in rows[] = {
		{ "u1", 2, "i1", 2, 100 }, { "u2", 2, "i1", 2, 101 }, { "u1", 2, "caf\xc3\xa9", 5, -7 },
	};
	if (rc || (rc = rk_interactions_add_batch(ix, rows, 3, NULL)) ||
	    (rc = rk_items_intern(ix, "new-item", 8, &i)) || (rc = rk_items_intern(ix, "i9", 2, &i)) ||
	    (rc = rk_interactions_flush(ix)) ||
	    (rc = rk_interactions_log_read(ix, 0, 1 << 20, emit_log_record, NULL)))
		die("the interaction log", rc);
	rk_interactions_close(ix);
	vr_store_close(st);
}

static void seeds_rankd_requests(void)
{
	const char *h = "fuzz_rankd_requests";
	Visrec__V1__Interaction in[3] = { VISREC__V1__INTERACTION__INIT, VISREC__V1__INTERACTION__INIT,
					  VISREC__V1__INTERACTION__INIT };
	Visrec__V1__Interaction *inp[3] = { &in[0], &in[1], &in[2] };
	in[0].user_id = "u1", in[0].item_id = "i1", in[0].timestamp = 1600000000;
	in[1].user_id = "u1", in[1].item_id = "i2", in[1].timestamp = -5;
	in[2].user_id = "\xc3\xa9", in[2].item_id = "i1", in[2].timestamp = 1600000000;
	Visrec__V1__AddInteractionsRequest add = VISREC__V1__ADD_INTERACTIONS_REQUEST__INIT;
	add.n_interactions = 3;
	add.interactions = inp;
	message(h, "add-interactions", 0, &add.base);
	message(h, "add-interactions-two-slices", 0x80, &add.base);

	Visrec__V1__TrainRequest t = VISREC__V1__TRAIN_REQUEST__INIT;
	t.model = VISREC__V1__MODEL_KIND__BPR;
	message(h, "train-bpr", 1, &t.base);
	t.model = VISREC__V1__MODEL_KIND__VBPR;
	t.epochs = 20;
	t.dims = 10;
	t.visual_dims = 5;
	t.learning_rate = 0.05f;
	t.lambda = 1e-3f;
	t.lambda_e = 1;
	t.optimizer = "sgd";
	t.batch_size = 4096;
	t.threads = 2;
	t.seed = 1;
	t.negatives = "popularity";
	t.triples_per_epoch = 1000;
	t.patience = 3;
	t.feature_version = 2;
	message(h, "train-vbpr", 1, &t.base);
	Visrec__V1__TrainRequest dv = VISREC__V1__TRAIN_REQUEST__INIT;
	dv.model = VISREC__V1__MODEL_KIND__DVBPR;
	dv.arch = "small";
	dv.input_size = 16;
	dv.cnn_learning_rate = 1e-3f;
	dv.cnn_weight_decay = 1e-4f;
	dv.batch_size = 64;
	dv.resume = 1;
	message(h, "train-dvbpr", 1, &dv.base);

	char *cand[] = { "i1", "i2" }, *ctx[] = { "i3" };
	Visrec__V1__RecommendRequest r = VISREC__V1__RECOMMEND_REQUEST__INIT;
	r.user_id = "u1";
	r.k = 10;
	message(h, "recommend", 2, &r.base);
	Visrec__V1__RecommendRequest r2 = r;
	r2.n_candidates = 2;
	r2.candidates = cand;
	r2.n_context_items = 1;
	r2.context_items = ctx;
	r2.include_seen = 1;
	message(h, "recommend-candidates", 2, &r2.base);
	Visrec__V1__RecommendRequest *rs[] = { &r, &r2 };
	Visrec__V1__RecommendBatchRequest b = VISREC__V1__RECOMMEND_BATCH_REQUEST__INIT;
	b.n_requests = 2;
	b.requests = rs;
	message(h, "recommend-batch", 3, &b.base);
	Visrec__V1__RecommendRequest r3 = r;
	r3.cold_slots = 3;
	message(h, "recommend-cold-slots", 2, &r3.base);
	Visrec__V1__ScoreRequest sc = VISREC__V1__SCORE_REQUEST__INIT;
	sc.user_id = "u1";
	sc.n_item_ids = 2;
	sc.item_ids = cand;
	message(h, "score", 4, &sc.base);
	uint32_t ks[] = { 20, 100 };
	Visrec__V1__EvaluateRequest ev = VISREC__V1__EVALUATE_REQUEST__INIT;
	ev.protocol = "tutorial";
	ev.n_ks = 2;
	ev.ks = ks;
	ev.max_users = 100;
	ev.seed = 9;
	message(h, "evaluate", 5, &ev.base);
	Visrec__V1__Interaction *split[] = { &in[0], &in[2] }, *cold_split[] = { &in[1] };
	ev.n_test = 2;
	ev.test = split;
	ev.n_cold_test = 1;
	ev.cold_test = cold_split;
	message(h, "evaluate-given-split", 5, &ev.base);
	Visrec__V1__AudienceRequest au = VISREC__V1__AUDIENCE_REQUEST__INIT;
	au.item_id = "i1";
	au.k = 100;
	message(h, "audience", 10, &au.base);
	Visrec__V1__RankInfoRequest ri = VISREC__V1__RANK_INFO_REQUEST__INIT;
	message(h, "rank-info", 6, &ri.base);

	float values[3] = { 0.25f, -1, 3 };
	Visrec__V1__Vector v = VISREC__V1__VECTOR__INIT;
	v.item_id = "i9";
	v.model_version = 2;
	v.n_values = 3;
	v.values = values;
	Visrec__V1__ItemChange ch = VISREC__V1__ITEM_CHANGE__INIT;
	ch.seq = 7;
	ch.kind = VISREC__V1__ITEM_CHANGE__KIND__ADDED;
	ch.item_id = "i9";
	ch.model_version = 2;
	ch.vector = &v;
	message(h, "item-change", 7, &ch.base);
	Visrec__V1__ItemChange removed = VISREC__V1__ITEM_CHANGE__INIT;
	removed.seq = 8;
	removed.kind = VISREC__V1__ITEM_CHANGE__KIND__REMOVED;
	removed.item_id = "i9";
	message(h, "item-change-removed", 7, &removed.base);
	Visrec__V1__Vector *vp[] = { &v };
	char *missing[] = { "i10" };
	Visrec__V1__GetVectorsResponse gr = VISREC__V1__GET_VECTORS_RESPONSE__INIT;
	gr.model_version = 2;
	gr.dims = 3;
	gr.n_vectors = 1;
	gr.vectors = vp;
	gr.n_missing = 1;
	gr.missing = missing;
	message(h, "get-vectors-response", 8, &gr.base);
	Visrec__V1__FeaturedInfoResponse fi = VISREC__V1__FEATURED_INFO_RESPONSE__INIT;
	fi.server_version = "0.1.0";
	fi.items = 10;
	fi.last_seq = 12;
	message(h, "featured-info-response", 9, &fi.base);
}

/* Resharding: a journal with a batch in flight (selector 0) and one
 * request of each kind. */
static void seeds_reshard(void)
{
	const char *h = "fuzz_reshard";
	char *ids[2] = { "i001", "\xe6\x97\xa5" };
	uint64_t sums[2] = { 0x0123456789abcdefULL, 42 };
	fd_journal j = { FD_JOURNAL_SWEEP, 7, "a:1,b:2,c:3", "a:1", "i000", 2, ids, sums };
	void *rec;
	size_t len;
	if (fd_journal_encode(&j, &rec, &len))
		die("out of memory", VR_ENOMEM);
	struct seed s = { 0 };
	put_u8(&s, 0);
	put(&s, rec, len);
	emit(&s, h, "journal-in-flight");
	free(s.p);
	free(rec);
	Visrec__V1__ReshardClaimRequest claim = VISREC__V1__RESHARD_CLAIM_REQUEST__INIT;
	claim.to_shards = "a:1,b:2,c:3";
	claim.max_items = 16;
	message(h, "claim", 1, &claim.base);
	float values[4] = { 1, -2, 0.5f, 3 };
	Visrec__V1__ReshardVector vec = VISREC__V1__RESHARD_VECTOR__INIT, *vp = &vec;
	vec.model_version = 1;
	vec.values = values;
	vec.n_values = 4;
	uint8_t jpeg_bytes[4] = { 0xff, 0xd8, 0xff, 0xd9 };
	Visrec__V1__ReshardItem item = VISREC__V1__RESHARD_ITEM__INIT, *ip = &item;
	item.item_id = "i001";
	item.image = (ProtobufCBinaryData){ sizeof jpeg_bytes, jpeg_bytes };
	item.added_unix = 1700000000;
	item.version = 1;
	item.vectors = &vp;
	item.n_vectors = 1;
	Visrec__V1__ReshardImportRequest imp = VISREC__V1__RESHARD_IMPORT_REQUEST__INIT;
	imp.to_shards = "a:1,b:2,c:3";
	imp.items = &ip;
	imp.n_items = 1;
	message(h, "import", 2, &imp.base);
	message(h, "import-two-slices", 0x82, &imp.base);
	Visrec__V1__ReshardDeleteRequest del = VISREC__V1__RESHARD_DELETE_REQUEST__INIT;
	del.to_shards = "a:1,b:2,c:3";
	del.item_ids = ids;
	del.n_item_ids = 2;
	del.checksums = sums;
	del.n_checksums = 2;
	message(h, "delete", 3, &del.base);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_seeds DIR (the corpus folder, tests/fuzz/corpus)\n");
		return 2;
	}
	g_dir = argv[1];
	if (mkdir(g_dir, 0755) && errno != EEXIST)
		die(g_dir, 0);
	if (!mkdtemp(g_tmp))
		die("mkdtemp", 0);
	seeds_decode();
	seeds_csv();
	seeds_shard_lists();
	seeds_safetensors();
	seeds_fstore();
	seeds_snapshot();
	seeds_replica_log();
	seeds_featured_requests();
	seeds_rankd_requests();
	seeds_reshard();
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
	if (system(cmd))
		fprintf(stderr, "fuzz_seeds: could not remove %s\n", g_tmp);
	return 0;
}
