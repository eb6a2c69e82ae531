/* Integration tests of the featured daemon as a real process (posix_spawn,
 * 127.0.0.1:0), called over gRPC with our C client: ingest and restart,
 * kill -9 during an ingest, chunked GetVectors, Watch, bad input, a full
 * queue, Info, and a new model version re-embedding every item; open
 * followers that cannot starve writes, the per-address follower limit,
 * the refusal to serve beyond loopback without a token, the token file,
 * and a full disk. The small net at small input sizes keeps the whole
 * group within seconds.
 *
 * Why one file at ~1,200 lines: the one featured daemon under test, many
 * small separate tests over shared fixtures. */
#include "fd_test.h"
#include "harness.h"
#include "procs.h"
#include "rpc.h"
#include "store.h"
#include "visrec/v1/featured.pb-c.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PUT "/visrec.v1.Featured/PutItems"
#define EMBED "/visrec.v1.Featured/Embed"
#define GETV "/visrec.v1.Featured/GetVectors"
#define WATCH "/visrec.v1.Featured/Watch"
#define INFO "/visrec.v1.Featured/Info"

static char tmpdir[64];

/* ---- the daemon process -------------------------------------------------- */

struct daemon {
	struct proc p;  /* tests/procs.h */
	char data[128];
};

/* Spawns featured on data dir tmpdir/tag-data with the common flags and
 * extra (NULL-terminated, later flags win), its stderr in tmpdir/B.N.stderr
 * (B: tag's last path component, so that a tag in a small file system
 * keeps its log outside). */
static int spawn(struct daemon *d, const char *tag, const char *const *extra)
{
	static int runs;
	char err[512];
	const char *base = strrchr(tag, '/') ? strrchr(tag, '/') + 1 : tag;
	snprintf(d->data, sizeof d->data, "%s/%s-data", tmpdir, tag);
	snprintf(err, sizeof err, "%s/%s.%d.stderr", tmpdir, base, ++runs);
	const char *argv[48] = { FEATURED_BIN, "--listen", "127.0.0.1:0", "--data", d->data,
				 "--arch", "small", "--input-size", "32", "--threads", "2" };
	int argc = 11;
	for (; extra && *extra && argc < 46; extra++)
		argv[argc++] = *extra;
	argv[argc] = NULL;
	unlink(err);
	return proc_spawn(&d->p, err, (char *const *)argv);
}

/* Starts featured (see spawn) and waits for its ready line. */
static int start(struct daemon *d, const char *tag, const char *const *extra)
{
	if (spawn(d, tag, extra))
		return -1;
	if (proc_wait_ready(&d->p, "featured", 30000)) {
		fprintf(stderr, "  featured did not start; see %s\n", d->p.err_path);
		return -1;
	}
	return 0;
}

/* SIGTERM and wait: the exit status, or -1 (then killed). */
static int stop(struct daemon *d)
{
	return d->p.pid > 0 ? proc_stop(&d->p, 10000) : -1;
}

/* The daemon's stderr so far (static buffer). */
static const char *stderr_of(const struct daemon *d)
{
	static char buf[16384];
	buf[0] = 0;
	int fd = open(d->p.err_path, O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		close(fd);
	}
	return buf;
}

/* Runs featured with extra expecting it to refuse to start: its exit
 * code (-1 when it did not exit within 10 s; it is then killed). */
static int start_fails(struct daemon *d, const char *tag, const char *const *extra)
{
	if (spawn(d, tag, extra))
		return -1;
	int status = -1;
	for (int64_t end = procs_now_ms() + 10000; procs_now_ms() < end; usleep(10000))
		if (waitpid(d->p.pid, &status, WNOHANG) == d->p.pid) {
			close(d->p.out);
			d->p.pid = -1;
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		}
	proc_stop(&d->p, 1000);
	return -1;
}

/* A channel to the daemon's port on 127.0.0.1 (it may listen on any
 * address), sending token (NULL: none) with every call. */
static vr_channel *channel_token(const struct daemon *d, const char *token)
{
	char addr[80];
	const char *colon = strrchr(d->p.addr, ':');
	snprintf(addr, sizeof addr, "127.0.0.1%s", colon ? colon : ":0");
	vr_channel *ch = NULL;
	vr_channel_opts o = { .max_message_bytes = 64 << 20, .token = token };
	vr_channel_create(&ch, addr, &o);
	return ch;
}

static vr_channel *channel(const struct daemon *d)
{
	return channel_token(d, NULL);
}

/* ---- items and calls --------------------------------------------------------- */

struct item {
	char id[300];
	uint8_t *jpeg;
	size_t len;
	int owned; /* jpeg is vr_jpeg_encode's */
};

static void make_items(struct item *it, int n, const char *prefix, unsigned first)
{
	for (int i = 0; i < n; i++) {
		snprintf(it[i].id, sizeof it[i].id, "%s%04u", prefix, first + (unsigned)i);
		it[i].jpeg = fdt_jpeg(first + (unsigned)i, &it[i].len);
		it[i].owned = 1;
	}
}

static void free_items(struct item *it, int n)
{
	for (int i = 0; i < n; i++)
		if (it[i].owned)
			vr_jpeg_free(it[i].jpeg);
}

/* One PutItems call with n items; *resp is the caller's. */
static int put_items(vr_channel *ch, const struct item *it, int n,
		     Visrec__V1__PutItemsResponse **resp, vr_status *st)
{
	vr_ccall *cc = NULL;
	ProtobufCMessage *m = NULL;
	*resp = NULL;
	int rc = vr_ccall_start(&cc, ch, PUT, &visrec__v1__put_items_response__descriptor, 60000, NULL);
	if (rc)
		return rc;
	for (int i = 0; i < n && !rc; i++) {
		Visrec__V1__PutItemsRequest req = VISREC__V1__PUT_ITEMS_REQUEST__INIT;
		req.item_id = (char *)it[i].id;
		req.image.data = it[i].jpeg;
		req.image.len = it[i].len;
		rc = vr_ccall_send(cc, &req.base);
	}
	if (!rc)
		rc = vr_ccall_close_send(cc);
	if (!rc)
		rc = vr_ccall_recv(cc, &m);
	int frc = vr_ccall_finish(cc, st);
	if (!rc)
		rc = frc;
	if (rc && m) {
		protobuf_c_message_free_unpacked(m, NULL);
		m = NULL;
	}
	*resp = (Visrec__V1__PutItemsResponse *)m;
	return rc;
}

/* PutItems expecting every item stored. */
static int put_all_ok(vr_channel *ch, const struct item *it, int n)
{
	Visrec__V1__PutItemsResponse *r;
	vr_status st;
	int rc = put_items(ch, it, n, &r, &st);
	if (rc) {
		fprintf(stderr, "  PutItems: %s %s\n", vr_status_name(st.code), st.message);
		return rc;
	}
	int ok = r->accepted == (uint32_t)n && r->n_items == (size_t)n;
	for (size_t i = 0; ok && i < r->n_items; i++)
		if (r->items[i]->code) {
			fprintf(stderr, "  %s: %s\n", r->items[i]->item_id, r->items[i]->message);
			ok = 0;
		}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return ok ? 0 : -1;
}

/* What a GetVectors stream delivered. */
struct vecs {
	int n, cap, messages, nmissing;
	char **ids;
	float *values;
	uint32_t dims, version;
	size_t biggest;       /* largest message, packed */
	size_t most_vectors;  /* most vectors in one message */
	char *missing[16];
};

static void vecs_free(struct vecs *v)
{
	for (int i = 0; i < v->n; i++)
		free(v->ids[i]);
	for (int i = 0; i < v->nmissing; i++)
		free(v->missing[i]);
	free(v->ids);
	free(v->values);
	memset(v, 0, sizeof *v);
}

static int get_vectors(vr_channel *ch, int all, const char *const *ids, int n_ids, uint32_t version,
		       uint32_t per_message, struct vecs *out, vr_status *st)
{
	Visrec__V1__GetVectorsRequest req = VISREC__V1__GET_VECTORS_REQUEST__INIT;
	vr_ccall *cc = NULL;
	ProtobufCMessage *m;
	memset(out, 0, sizeof *out);
	req.all = all;
	req.item_ids = (char **)ids;
	req.n_item_ids = (size_t)n_ids;
	req.model_version = version;
	req.max_per_message = per_message;
	int rc = vr_ccall_start(&cc, ch, GETV, &visrec__v1__get_vectors_response__descriptor, 60000, NULL);
	if (rc)
		return rc;
	if (!(rc = vr_ccall_send(cc, &req.base)))
		rc = vr_ccall_close_send(cc);
	while (!rc && !(rc = vr_ccall_recv(cc, &m))) {
		Visrec__V1__GetVectorsResponse *r = (void *)m;
		size_t packed = protobuf_c_message_get_packed_size(m);
		out->messages++;
		out->biggest = packed > out->biggest ? packed : out->biggest;
		out->most_vectors = r->n_vectors > out->most_vectors ? r->n_vectors : out->most_vectors;
		out->dims = r->dims;
		out->version = r->model_version;
		for (size_t i = 0; i < r->n_missing && out->nmissing < 16; i++)
			out->missing[out->nmissing++] = strdup(r->missing[i]);
		for (size_t i = 0; i < r->n_vectors; i++) {
			Visrec__V1__Vector *v = r->vectors[i];
			if (out->n == out->cap) {
				out->cap = out->cap ? 2 * out->cap : 64;
				out->ids = realloc(out->ids, sizeof(char *) * (size_t)out->cap);
				out->values = realloc(out->values,
						      sizeof(float) * (size_t)out->cap * r->dims);
			}
			if (v->n_values != r->dims || v->model_version != r->model_version)
				rc = -1;
			else
				memcpy(out->values + (size_t)out->n * r->dims, v->values,
				       sizeof(float) * r->dims);
			out->ids[out->n++] = strdup(v->item_id);
		}
		protobuf_c_message_free_unpacked(m, NULL);
	}
	int frc = vr_ccall_finish(cc, st);
	return rc == VR_EEOF ? frc : rc;
}

static Visrec__V1__FeaturedInfoResponse *info(vr_channel *ch)
{
	Visrec__V1__FeaturedInfoRequest req = VISREC__V1__FEATURED_INFO_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	vr_status st;
	if (vr_client_unary(ch, INFO, &req.base, &visrec__v1__featured_info_response__descriptor, &m,
			    10000, NULL, &st))
		return NULL;
	return (Visrec__V1__FeaturedInfoResponse *)m;
}

/* Checks vectors of the active model against the reference embedder:
 * the number of items[0..n) whose vector in v differs or is absent. */
static int check_vectors(const struct daemon *d, const fd_model_info *m, const struct item *it,
			 int n, const struct vecs *v)
{
	struct fdt_ref ref;
	float *want = malloc(sizeof(float) * m->dims);
	int bad = 0;
	if (!want || fdt_ref_open(&ref, d->data, m))
		return n;
	for (int i = 0; i < n; i++) {
		int at = -1;
		for (int k = 0; k < v->n && at < 0; k++)
			if (!strcmp(v->ids[k], it[i].id))
				at = k;
		if (at < 0 || fdt_ref_embed(&ref, it[i].jpeg, it[i].len, want) ||
		    fdt_max_rel(v->values + (size_t)at * m->dims, want, m->dims) > 1e-4) {
			fprintf(stderr, "  %s: vector %s\n", it[i].id, at < 0 ? "missing" : "differs");
			bad++;
		}
	}
	fdt_ref_close(&ref);
	free(want);
	return bad;
}

static void model_of(const Visrec__V1__ModelVersionInfo *p, fd_model_info *m)
{
	memset(m, 0, sizeof *m);
	m->version = p->version;
	snprintf(m->arch, sizeof m->arch, "%s", p->arch);
	snprintf(m->layer, sizeof m->layer, "%s", p->output_layer);
	snprintf(m->weights, sizeof m->weights, "%s", p->weights_file);
	m->dims = p->dims;
	m->input_size = p->input_size;
	for (int c = 0; c < 3; c++) { /* every arch declares ImageNet's */
		m->mean[c] = (const float[]){ 0.485f, 0.456f, 0.406f }[c];
		m->std[c] = (const float[]){ 0.229f, 0.224f, 0.225f }[c];
	}
}

/* ---- tests ------------------------------------------------------------------- */

#define N_RESTART 200

TEST(ingest_restart_same_vectors)
{
	static struct item it[N_RESTART];
	struct daemon d;
	struct vecs a, b, v1, v2;
	vr_status st;
	make_items(it, N_RESTART, "r", 0);
	ASSERT_OK(start(&d, "restart", NULL));
	vr_channel *ch = channel(&d);
	/* Info between the batches: its kept reply must follow each commit. */
	for (int i = 0; i < N_RESTART; i += 50) {
		Visrec__V1__FeaturedInfoResponse *before = info(ch);
		ASSERT(before);
		ASSERT_EQ_INT(before->items, i);
		ASSERT_EQ_INT(before->last_seq, i);
		protobuf_c_message_free_unpacked(&before->base, NULL);
		ASSERT_OK(put_all_ok(ch, it + i, 50));
	}
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 0, 0, &a, &st));
	Visrec__V1__FeaturedInfoResponse *inf = info(ch);
	ASSERT(inf && inf->active_model);
	fd_model_info m;
	model_of(inf->active_model, &m);
	/* featured's default, auto, on a machine without a GPU */
	ASSERT(!strcmp(inf->backend, "onednn") || !strcmp(inf->backend, "cpu"));
	ASSERT(inf->device[0]);
	ASSERT_EQ_INT(inf->items, N_RESTART);
	ASSERT_EQ_INT(inf->last_seq, N_RESTART);
	ASSERT_EQ_INT(inf->n_models, 1);
	ASSERT_STR_EQ(inf->active_model->arch, "small");
	ASSERT_STR_EQ(inf->active_model->output_layer, "output");
	ASSERT_STR_EQ(inf->active_model->purpose, "embedding");
	ASSERT_EQ_INT(inf->active_model->dims, 50);
	ASSERT_EQ_INT(inf->active_model->input_size, 32);
	ASSERT_EQ_INT(inf->max_image_bytes, 8388608);
	protobuf_c_message_free_unpacked(&inf->base, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_EQ_INT(a.n, N_RESTART);
	ASSERT_EQ_INT(a.dims, 50);
	for (int i = 0; i < N_RESTART; i++)
		ASSERT_STR_EQ(a.ids[i], it[i].id); /* in order of ingest */
	ASSERT_EQ_INT(check_vectors(&d, &m, it, N_RESTART, &a), 0);

	/* A restart (asking for another arch: ignored) serves the same bits. */
	const char *const other[] = { "--arch", "alexnet", NULL };
	ASSERT_OK(start(&d, "restart", other));
	ch = channel(&d);
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 0, 0, &b, &st));
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_CONTAINS(stderr_of(&d), "ignoring --arch alexnet (active: small)");
	ASSERT_EQ_INT(b.n, N_RESTART);
	for (int i = 0; i < N_RESTART; i++)
		ASSERT_STR_EQ(b.ids[i], a.ids[i]);
	ASSERT(!memcmp(a.values, b.values, sizeof(float) * 50 * N_RESTART));

	/* --new-model: version 2 from the fc layer, every item re-embedded. */
	const char *const newer[] = { "--new-model", "--feature-layer", "fc", NULL };
	ASSERT_OK(start(&d, "restart", newer));
	ch = channel(&d);
	inf = info(ch);
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 0, 0, &v2, &st));
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 1, 0, &v1, &st));
	Visrec__V1__WatchRequest wreq = VISREC__V1__WATCH_REQUEST__INIT;
	wreq.after_seq = N_RESTART;
	vr_ccall *cc = NULL;
	ProtobufCMessage *wm = NULL;
	ASSERT_OK(vr_ccall_start(&cc, ch, WATCH, &visrec__v1__item_change__descriptor, 10000, NULL));
	vr_ccall_send(cc, &wreq.base);
	vr_ccall_close_send(cc);
	int wrc = vr_ccall_recv(cc, &wm);
	vr_ccall_cancel(cc);
	vr_ccall_finish(cc, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT(inf);
	ASSERT_EQ_INT(inf->n_models, 2);
	ASSERT_EQ_INT(inf->active_model->version, 2);
	ASSERT_EQ_INT(inf->active_model->dims, 256);
	ASSERT_STR_EQ(inf->active_model->purpose, "features");
	model_of(inf->active_model, &m);
	protobuf_c_message_free_unpacked(&inf->base, NULL);
	ASSERT_EQ_INT(v2.n, N_RESTART);
	ASSERT_EQ_INT(v2.version, 2);
	ASSERT_EQ_INT(v2.dims, 256);
	ASSERT_EQ_INT(check_vectors(&d, &m, it, 20, &v2), 0);
	ASSERT_EQ_INT(v1.n, N_RESTART);
	ASSERT(!memcmp(a.values, v1.values, sizeof(float) * 50 * N_RESTART));
	ASSERT_OK(wrc);
	Visrec__V1__ItemChange *c = (void *)wm;
	ASSERT_EQ_INT(c->seq, N_RESTART + 1);
	ASSERT_EQ_INT(c->kind, VISREC__V1__ITEM_CHANGE__KIND__MODEL_SWITCHED);
	ASSERT_EQ_INT(c->model_version, 2);
	protobuf_c_message_free_unpacked(wm, NULL);
	vecs_free(&a);
	vecs_free(&b);
	vecs_free(&v1);
	vecs_free(&v2);
	free_items(it, N_RESTART);
}

/* How many of the n items are absent from the stopped daemon's data
 * directory, or there with other image bytes (read straight from its
 * LMDB environment); -1 when it cannot be opened. */
static int images_differ(const char *data, const struct item *it, int n)
{
	vr_store *store = NULL;
	fd_fstore *fs = NULL;
	vr_txn *txn = NULL;
	int bad = -1;
	if (vr_store_open(&store, data, NULL) || fd_fstore_open(&fs, store) ||
	    vr_store_read_begin(store, &txn))
		goto leave;
	bad = 0;
	for (int i = 0; i < n; i++) {
		fd_item item;
		bad += fd_fstore_item_get(fs, txn, it[i].id, &item) || item.image_len != it[i].len ||
		       memcmp(item.image, it[i].jpeg, it[i].len);
	}
leave:
	vr_store_read_end(txn);
	fd_fstore_close(fs);
	vr_store_close(store);
	return bad;
}

#define N_KILL 600
#define PER_CALL 10

static struct {
	pthread_mutex_t mu;
	int acked[N_KILL];
	int nacked, calls, failed;
	vr_channel *ch;
	struct item *it;
} ing = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void *ingest_thread(void *arg)
{
	(void)arg;
	for (int c = 0; c < N_KILL / PER_CALL; c++) {
		Visrec__V1__PutItemsResponse *r;
		vr_status st;
		if (put_items(ing.ch, ing.it + c * PER_CALL, PER_CALL, &r, &st)) {
			ing.failed = 1;
			break;
		}
		pthread_mutex_lock(&ing.mu);
		for (size_t i = 0; i < r->n_items; i++)
			if (r->items[i]->code == 0)
				ing.acked[ing.nacked++] = c * PER_CALL + (int)i;
		ing.calls++;
		pthread_mutex_unlock(&ing.mu);
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	return NULL;
}

TEST(kill9_keeps_every_acked_item)
{
	static struct item it[N_KILL];
	struct daemon d;
	pthread_t t;
	make_items(it, N_KILL, "k", 1000);
	ASSERT_OK(start(&d, "kill", NULL));
	ing.ch = channel(&d);
	ing.it = it;
	pthread_create(&t, NULL, ingest_thread, NULL);
	for (int64_t end = procs_now_ms() + 30000; procs_now_ms() < end; usleep(2000)) {
		pthread_mutex_lock(&ing.mu);
		int n = ing.nacked;
		pthread_mutex_unlock(&ing.mu);
		if (n >= 100)
			break;
	}
	proc_kill9(&d.p);
	pthread_join(t, NULL);
	vr_channel_destroy(ing.ch);
	int acked = ing.nacked;
	ASSERT_MSG(acked >= 100 && acked < N_KILL, "acked %d of %d before the kill", acked, N_KILL);
	ASSERT_MSG(ing.failed, "the ingest was not interrupted");

	ASSERT_OK(start(&d, "kill", NULL));
	vr_channel *ch = channel(&d);
	const char **ids = malloc(sizeof(char *) * (size_t)acked);
	static struct item acked_items[N_KILL];
	for (int i = 0; i < acked; i++) {
		ids[i] = it[ing.acked[i]].id;
		acked_items[i] = it[ing.acked[i]];
		acked_items[i].owned = 0;
	}
	struct vecs v, all;
	vr_status st;
	ASSERT_OK(get_vectors(ch, 0, ids, acked, 0, 0, &v, &st));
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 0, 0, &all, &st));
	Visrec__V1__FeaturedInfoResponse *inf = info(ch);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT(inf);
	fd_model_info m;
	model_of(inf->active_model, &m);
	protobuf_c_message_free_unpacked(&inf->base, NULL);
	ASSERT_EQ_INT(v.nmissing, 0);
	ASSERT_EQ_INT(v.n, acked);
	ASSERT(all.n >= acked); /* committed but unacked items may be there too */
	ASSERT_EQ_INT(check_vectors(&d, &m, acked_items, acked, &v), 0);
	ASSERT_EQ_INT(images_differ(d.data, acked_items, acked), 0);
	free(ids);
	vecs_free(&v);
	vecs_free(&all);
	free_items(it, N_KILL);
}

#define N_BIG 70

TEST(get_vectors_chunked_with_missing)
{
	static struct item it[N_BIG];
	struct daemon d;
	struct vecs all, few, byids;
	vr_status st, st2, st3;
	/* conv1's activations at 64 px: 16 x 64 x 64 floats, 256 KiB a vector,
	 * 17.5 MiB in all, under a 2 MiB message limit. */
	const char *const flags[] = { "--input-size", "64", "--feature-layer", "features.1",
				      "--max-message-bytes", "2097152", NULL };
	make_items(it, N_BIG, "g", 2000);
	ASSERT_OK(start(&d, "chunk", flags));
	vr_channel *ch = channel(&d);
	for (int i = 0; i < N_BIG; i += 35)
		ASSERT_OK(put_all_ok(ch, it + i, 35));
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 0, 0, &all, &st));
	ASSERT_OK(get_vectors(ch, 1, NULL, 0, 0, 3, &few, &st2));
	const char *ids[] = { it[3].id, "nope-1", it[60].id, it[0].id, "nope-2", it[69].id,
			      "nope-3", it[10].id };
	ASSERT_OK(get_vectors(ch, 0, ids, 8, 0, 0, &byids, &st3));
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_EQ_INT(all.dims, 65536);
	ASSERT_EQ_INT(all.n, N_BIG);
	ASSERT((size_t)all.n * all.dims * 4 > (size_t)16 << 20);
	ASSERT_MSG(all.biggest <= 2097152, "a message of %zu bytes", all.biggest);
	ASSERT(all.messages >= 9);
	for (int i = 0; i < N_BIG; i++)
		ASSERT_STR_EQ(all.ids[i], it[i].id);
	ASSERT_EQ_INT(few.n, N_BIG);
	ASSERT(few.most_vectors <= 3);
	ASSERT(!memcmp(few.values, all.values, sizeof(float) * all.dims * N_BIG));
	ASSERT_EQ_INT(byids.n, 5);
	ASSERT_STR_EQ(byids.ids[1], it[60].id);
	ASSERT(!memcmp(byids.values + (size_t)1 * all.dims, all.values + (size_t)60 * all.dims,
		       sizeof(float) * all.dims));
	ASSERT_EQ_INT(byids.nmissing, 3);
	ASSERT_STR_EQ(byids.missing[0], "nope-1");
	ASSERT_STR_EQ(byids.missing[2], "nope-3");
	vecs_free(&all);
	vecs_free(&few);
	vecs_free(&byids);
	free_items(it, N_BIG);
}

/* Receives n changes from cc into seq/kind/dims (0: no vector). */
static int recv_changes(vr_ccall *cc, int n, uint64_t *seq, int *kind, uint32_t *dims)
{
	for (int i = 0; i < n; i++) {
		ProtobufCMessage *m = NULL;
		int rc = vr_ccall_recv(cc, &m);
		if (rc)
			return rc;
		Visrec__V1__ItemChange *c = (void *)m;
		seq[i] = c->seq;
		kind[i] = c->kind;
		dims[i] = c->vector ? (uint32_t)c->vector->n_values : 0;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	return 0;
}

TEST(watch_live_and_replay)
{
	static struct item it[6];
	struct daemon d;
	uint64_t seq[8];
	int kind[8];
	uint32_t dims[8];
	make_items(it, 5, "w", 3000);
	it[5] = it[0];
	it[5].jpeg = fdt_jpeg(3999, &it[5].len); /* w3000 with another image */
	ASSERT_OK(start(&d, "watch", NULL));
	vr_channel *ch = channel(&d);
	ASSERT_OK(put_all_ok(ch, it, 3));
	Visrec__V1__WatchRequest req = VISREC__V1__WATCH_REQUEST__INIT;
	req.include_vectors = 1;
	vr_ccall *cc = NULL;
	ASSERT_OK(vr_ccall_start(&cc, ch, WATCH, &visrec__v1__item_change__descriptor, 20000, NULL));
	vr_ccall_send(cc, &req.base);
	vr_ccall_close_send(cc);
	int rc1 = recv_changes(cc, 3, seq, kind, dims);
	/* Live: items stored after the stream started. */
	int rc2 = put_all_ok(ch, it + 3, 3);
	int rc3 = recv_changes(cc, 3, seq + 3, kind + 3, dims + 3);
	vr_ccall_cancel(cc);
	vr_ccall_finish(cc, NULL);
	/* Replay from a sequence number, without vectors. */
	uint64_t rseq[2];
	int rkind[2];
	uint32_t rdims[2];
	req.after_seq = 4;
	req.include_vectors = 0;
	ASSERT_OK(vr_ccall_start(&cc, ch, WATCH, &visrec__v1__item_change__descriptor, 20000, NULL));
	vr_ccall_send(cc, &req.base);
	vr_ccall_close_send(cc);
	int rc4 = recv_changes(cc, 2, rseq, rkind, rdims);
	vr_ccall_cancel(cc);
	vr_ccall_finish(cc, NULL);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_OK(rc1);
	ASSERT_OK(rc2);
	ASSERT_OK(rc3);
	ASSERT_OK(rc4);
	for (int i = 0; i < 6; i++) {
		ASSERT_EQ_INT(seq[i], i + 1);
		ASSERT_EQ_INT(kind[i], i < 5 ? VISREC__V1__ITEM_CHANGE__KIND__ADDED :
					       VISREC__V1__ITEM_CHANGE__KIND__REPLACED);
		ASSERT_EQ_INT(dims[i], 50);
	}
	ASSERT_EQ_INT(rseq[0], 5);
	ASSERT_EQ_INT(rseq[1], 6);
	ASSERT_EQ_INT(rkind[1], VISREC__V1__ITEM_CHANGE__KIND__REPLACED);
	ASSERT_EQ_INT(rdims[0], 0);
	vr_jpeg_free(it[5].jpeg);
	free_items(it, 5);
}

static int embed(vr_channel *ch, const char *id, const void *jpeg, size_t len,
		 Visrec__V1__EmbedResponse **resp, vr_status *st)
{
	Visrec__V1__EmbedRequest req = VISREC__V1__EMBED_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	req.item_id = (char *)id;
	req.image.data = (uint8_t *)jpeg;
	req.image.len = len;
	int rc = vr_client_unary(ch, EMBED, &req.base, &visrec__v1__embed_response__descriptor, &m,
				 30000, NULL, st);
	if (resp)
		*resp = (Visrec__V1__EmbedResponse *)m;
	else if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

TEST(bad_input_refused_with_reasons)
{
	struct daemon d;
	struct item it[9];
	memset(it, 0, sizeof it);
	const char *const flags[] = { "--max-image-bytes", "20000", "--max-image-pixels", "40000", NULL };
	static const uint8_t png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
				       'I', 'H', 'D', 'R', 0, 0, 0, 16, 0, 0, 0, 16 };
	uint8_t corrupt[300], *big = calloc(1, 20001);
	size_t glen;
	uint8_t *good = fixture_jpeg(100, 80, 5, VR_SUBSAMP_420, 85, &glen);
	size_t hlen;
	uint8_t *huge = fixture_jpeg(250, 250, 6, VR_SUBSAMP_420, 30, &hlen); /* 62,500 px */
	ASSERT(good && huge && big && hlen < 20000);
	memcpy(big, good, glen);
	for (size_t i = 0; i < sizeof corrupt; i++)
		corrupt[i] = (uint8_t)(i < 2 ? (i ? 0xd8 : 0xff) : i * 151 + 7);
	const struct { const char *id; const uint8_t *jpeg; size_t len; } in[9] = {
		{ "g0", good, glen }, { "c1", corrupt, sizeof corrupt }, { "t2", good, glen / 2 },
		{ "p3", png, sizeof png }, { "o4", big, 20001 }, { "h5", huge, hlen },
		{ "", good, glen }, { "ctl\x01", good, glen }, { "g8", good, glen },
	};
	for (int i = 0; i < 9; i++) {
		snprintf(it[i].id, sizeof it[i].id, "%s", in[i].id);
		it[i].jpeg = (uint8_t *)in[i].jpeg;
		it[i].len = in[i].len;
	}
	ASSERT_OK(start(&d, "bad", flags));
	vr_channel *ch = channel(&d);
	Visrec__V1__PutItemsResponse *r = NULL;
	vr_status st, s1, s2, s3, s4, s5;
	int rc = put_items(ch, it, 9, &r, &st);
	Visrec__V1__EmbedResponse *e = NULL;
	int e1 = embed(ch, "e1", NULL, 0, NULL, &s1);
	int e2 = embed(ch, "", good, glen, NULL, &s2);
	int e3 = embed(ch, "e3", good, glen, &e, &s3);
	int e4 = embed(ch, "e4", png, sizeof png, NULL, &s5);
	struct vecs v, none;
	const char *ids[] = { "g0", "c1", "g8", "e3" };
	int g1 = get_vectors(ch, 0, ids, 4, 0, 0, &v, &s4);
	int g2 = get_vectors(ch, 1, NULL, 0, 99, 0, &none, &st);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_OK(rc);
	ASSERT_EQ_INT(r->n_items, 9);
	ASSERT_EQ_INT(r->accepted, 2);
	ASSERT_EQ_INT(r->rejected, 7);
	for (int i = 0; i < 9; i++) {
		Visrec__V1__ItemStatus *s = r->items[i];
		/* A refused id is not echoed: its message shows it. */
		ASSERT_STR_EQ(s->item_id, i == 6 || i == 7 ? "" : in[i].id);
		if (i == 0 || i == 8) {
			ASSERT_EQ_INT(s->code, GRPC_STATUS_OK);
			ASSERT(s->seq > 0);
			continue;
		}
		ASSERT_EQ_INT(s->code, GRPC_STATUS_INVALID_ARGUMENT);
		if (i < 6) {
			char want[16];
			snprintf(want, sizeof want, "item %s: ", in[i].id);
			ASSERT_MSG(!strncmp(s->message, want, strlen(want)), "message \"%s\"", s->message);
		}
	}
	ASSERT_CONTAINS(r->items[3]->message, "not a JPEG");
	ASSERT_CONTAINS(r->items[3]->message, "PNG");
	ASSERT_CONTAINS(r->items[4]->message, "over the limit");
	ASSERT_STR_EQ(r->items[6]->message, "message 7 of the stream: item_id is empty");
	ASSERT_STR_EQ(r->items[7]->message, "message 8 of the stream: item_id \"ctl\\x01\" contains a "
		      "control character (U+0001) at byte 3");
	protobuf_c_message_free_unpacked(&r->base, NULL);
	ASSERT_EQ_INT(e1, VR_ERPC);
	ASSERT_EQ_INT(s1.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s1.message, "no image");
	ASSERT_EQ_INT(e2, VR_ERPC);
	ASSERT_EQ_INT(s2.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_EQ_INT(e4, VR_ERPC);
	ASSERT_EQ_INT(s5.code, GRPC_STATUS_INVALID_ARGUMENT);
	ASSERT_CONTAINS(s5.message, "item e4: not a JPEG");
	ASSERT_OK(e3);
	ASSERT(e && e->vector);
	ASSERT_EQ_INT(e->vector->n_values, 50);
	ASSERT_EQ_INT(e->vector->model_version, 1);
	ASSERT_EQ_INT(e->seq, 3);
	ASSERT_OK(g1);
	ASSERT_EQ_INT(v.n, 3);
	ASSERT_STR_EQ(v.ids[2], "e3");
	ASSERT(!memcmp(v.values + 2 * 50, e->vector->values, sizeof(float) * 50));
	ASSERT_EQ_INT(v.nmissing, 1);
	ASSERT_STR_EQ(v.missing[0], "c1");
	ASSERT_EQ_INT(g2, VR_ERPC);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_NOT_FOUND);
	protobuf_c_message_free_unpacked(&e->base, NULL);
	vecs_free(&v);
	vecs_free(&none);
	vr_jpeg_free(good);
	vr_jpeg_free(huge);
	free(big);
}

#define N_FLOOD 24

static struct {
	pthread_barrier_t go;
	vr_channel *ch;
	uint8_t *jpeg;
	size_t len;
	vr_status st[N_FLOOD];
} flood;

static void *flood_thread(void *arg)
{
	int i = (int)(intptr_t)arg;
	char id[16];
	snprintf(id, sizeof id, "f%d", i);
	pthread_barrier_wait(&flood.go);
	flood.st[i].code = -1;
	embed(flood.ch, id, flood.jpeg, flood.len, NULL, &flood.st[i]);
	return NULL;
}

TEST(full_queue_resource_exhausted)
{
	struct daemon d;
	pthread_t t[N_FLOOD];
	const char *const flags[] = { "--queue", "2", "--batch", "1", "--input-size", "64", NULL };
	flood.jpeg = fixture_jpeg(640, 480, 9, VR_SUBSAMP_420, 90, &flood.len);
	ASSERT(flood.jpeg);
	ASSERT_OK(start(&d, "full", flags));
	flood.ch = channel(&d);
	/* Connect first, so the calls all arrive together. */
	Visrec__V1__FeaturedInfoResponse *inf = info(flood.ch);
	pthread_barrier_init(&flood.go, NULL, N_FLOOD);
	for (int i = 0; i < N_FLOOD; i++)
		pthread_create(&t[i], NULL, flood_thread, (void *)(intptr_t)i);
	for (int i = 0; i < N_FLOOD; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&flood.go);
	vr_channel_destroy(flood.ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT(inf);
	protobuf_c_message_free_unpacked(&inf->base, NULL);
	int ok = 0, full = 0;
	for (int i = 0; i < N_FLOOD; i++) {
		if (flood.st[i].code == GRPC_STATUS_OK)
			ok++;
		else if (flood.st[i].code == GRPC_STATUS_RESOURCE_EXHAUSTED &&
			 strstr(flood.st[i].message, "featured is at capacity (queue of 2 images full)"))
			full++;
		else
			fprintf(stderr, "  call %d: %s %s\n", i, vr_status_name(flood.st[i].code),
				flood.st[i].message);
	}
	ASSERT(ok >= 1);
	ASSERT(full >= 1);
	ASSERT_EQ_INT(ok + full, N_FLOOD);
	vr_jpeg_free(flood.jpeg);
}

/* ---- followers ------------------------------------------------------------ */

/* Opens Watch(after_seq 0, no vectors) and waits for its first change,
 * which shows featured admitted it. 0, or the status in st. */
static int watch_open(vr_channel *ch, vr_ccall **out, vr_status *st)
{
	Visrec__V1__WatchRequest req = VISREC__V1__WATCH_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	vr_ccall *cc = NULL;
	*out = NULL;
	int rc = vr_ccall_start(&cc, ch, WATCH, &visrec__v1__item_change__descriptor, 120000, NULL);
	if (rc)
		return rc;
	if (!(rc = vr_ccall_send(cc, &req.base)) && !(rc = vr_ccall_close_send(cc)))
		rc = vr_ccall_recv(cc, &m);
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	if (rc) {
		/* The status says why the stream ended (a refusal ends it
		 * before any message). */
		if (rc != VR_EEOF && rc != VR_ERPC)
			vr_ccall_cancel(cc);
		return vr_ccall_finish(cc, st) ? VR_ERPC : rc;
	}
	*out = cc;
	return 0;
}

static void watch_close(vr_ccall *cc)
{
	if (!cc)
		return;
	vr_ccall_cancel(cc);
	vr_ccall_finish(cc, NULL);
}

#define N_FOLLOW 200

/* 200 idle Watch streams (more than the 64 calls of every other kind a
 * server takes by default) leave writes and reads served; one more is
 * refused, naming the limit. */
TEST(followers_cannot_starve_writes)
{
	static struct item it[2];
	static vr_ccall *cc[N_FOLLOW];
	struct daemon d;
	const char *extra[] = { "--max-followers", "200", "--max-followers-per-peer", "200",
				"--max-streams", "4", "--max-admin-streams", "4", NULL };
	make_items(it, 2, "s", 4000);
	ASSERT_OK(start(&d, "starve", extra));
	vr_channel *ch = channel(&d);
	ASSERT_OK(put_all_ok(ch, it, 1));
	int opened = 0;
	vr_status st = { 0 }, over = { 0 }, gst = { 0 };
	while (opened < N_FOLLOW && !watch_open(ch, &cc[opened], &st))
		opened++;
	vr_ccall *extra_cc = NULL;
	int over_rc = watch_open(ch, &extra_cc, &over);
	int put = put_all_ok(ch, it + 1, 1);
	struct vecs v;
	int gv = get_vectors(ch, 1, NULL, 0, 0, 0, &v, &gst);
	/* Every follower is live: each sees the new item. */
	int live = 0;
	for (int i = 0; i < opened; i++) {
		ProtobufCMessage *m = NULL;
		if (!vr_ccall_recv(cc[i], &m) && ((Visrec__V1__ItemChange *)m)->seq == 2)
			live++;
		if (m)
			protobuf_c_message_free_unpacked(m, NULL);
	}
	for (int i = 0; i < opened; i++)
		watch_close(cc[i]);
	watch_close(extra_cc);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_MSG(opened == N_FOLLOW, "only %d Watch streams were admitted: %s %s", opened,
		   vr_status_name(st.code), st.message);
	ASSERT_EQ_INT(over_rc, VR_ERPC);
	ASSERT_EQ_INT(over.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(over.message, "too many followers");
	ASSERT_CONTAINS(over.message, "--max-followers");
	ASSERT_OK(put);
	ASSERT_MSG(gv == 0, "GetVectors failed: %s %s", vr_status_name(gst.code), gst.message);
	ASSERT_EQ_INT(v.n, 2);
	ASSERT_EQ_INT(live, N_FOLLOW);
	vecs_free(&v);
	free_items(it, 2);
}

/* One client address holds at most --max-followers-per-peer feeds; a
 * closed one frees its place. */
TEST(followers_per_peer_limit)
{
	static struct item it[1];
	vr_ccall *cc[4] = { 0 };
	struct daemon d;
	const char *extra[] = { "--max-followers-per-peer", "3", NULL };
	make_items(it, 1, "p", 4100);
	ASSERT_OK(start(&d, "peer", extra));
	vr_channel *ch = channel(&d);
	ASSERT_OK(put_all_ok(ch, it, 1));
	vr_status st = { 0 }, over = { 0 };
	int opened = 0;
	while (opened < 3 && !watch_open(ch, &cc[opened], &st))
		opened++;
	int over_rc = watch_open(ch, &cc[3], &over);
	/* Once one closes, featured takes another (its thread ends a moment
	 * after the cancellation reaches it). */
	watch_close(cc[0]);
	cc[0] = NULL;
	int again = -1;
	for (int64_t end = procs_now_ms() + 10000; again && procs_now_ms() < end; usleep(20000))
		again = watch_open(ch, &cc[0], &st);
	for (int i = 0; i < 4; i++)
		watch_close(cc[i]);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_EQ_INT(opened, 3);
	ASSERT_EQ_INT(over_rc, VR_ERPC);
	ASSERT_EQ_INT(over.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
	ASSERT_CONTAINS(over.message, "too many followers from ipv4:127.0.0.1");
	ASSERT_CONTAINS(over.message, "--max-followers-per-peer");
	ASSERT_OK(again);
	free_items(it, 1);
}

/* ---- safe by default ------------------------------------------------------- */

TEST(refuses_public_listen_without_token)
{
	struct daemon d;
	char tok[256], open_tok[256], empty_tok[256];
	snprintf(tok, sizeof tok, "%s/ok.token", tmpdir);
	snprintf(open_tok, sizeof open_tok, "%s/open.token", tmpdir);
	snprintf(empty_tok, sizeof empty_tok, "%s/empty.token", tmpdir);
	ASSERT_OK(procs_write_file(tok, "tok-123\n", 0600));
	ASSERT_OK(procs_write_file(open_tok, "tok-123\n", 0644));
	ASSERT_OK(procs_write_file(empty_tok, "\n", 0600));

	const char *bare[] = { "--listen", "0.0.0.0:0", NULL };
	ASSERT_EQ_INT(start_fails(&d, "public", bare), 2);
	const char *err = stderr_of(&d);
	ASSERT_CONTAINS(err, "refusing to listen on 0.0.0.0:0 without an admin token");
	ASSERT_CONTAINS(err, "--admin-token-file");
	ASSERT_CONTAINS(err, "--insecure");

	const char *v6[] = { "--listen", "[::]:0", NULL };
	ASSERT_EQ_INT(start_fails(&d, "public", v6), 2);
	ASSERT_CONTAINS(stderr_of(&d), "refusing to listen on [::]:0");

	const char *world[] = { "--listen", "0.0.0.0:0", "--admin-token-file", open_tok, NULL };
	ASSERT_EQ_INT(start_fails(&d, "public", world), 2);
	ASSERT_CONTAINS(stderr_of(&d), "open to every user of this machine (mode 0644)");
	ASSERT_CONTAINS(stderr_of(&d), "chmod 600");

	const char *empty[] = { "--admin-token-file", empty_tok, NULL };
	ASSERT_EQ_INT(start_fails(&d, "public", empty), 2);
	ASSERT_CONTAINS(stderr_of(&d), "is empty");

	const char *missing[] = { "--admin-token-file", "/nonexistent/visrec.token", NULL };
	ASSERT_EQ_INT(start_fails(&d, "public", missing), 2);
	ASSERT_CONTAINS(stderr_of(&d), "cannot open /nonexistent/visrec.token");

	const char *both[] = { "--admin-token-file", tok, "--admin-token", "tok-123", NULL };
	ASSERT_EQ_INT(start_fails(&d, "public", both), 2);
	ASSERT_CONTAINS(stderr_of(&d), "keep one");

	/* The explicit opt-out starts, and says what it means. */
	const char *insecure[] = { "--listen", "0.0.0.0:0", "--insecure", NULL };
	ASSERT_OK(start(&d, "public", insecure));
	vr_channel *ch = channel(&d);
	Visrec__V1__FeaturedInfoResponse *inf = info(ch);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT(inf);
	protobuf_c_message_free_unpacked(&inf->base, NULL);
	ASSERT_CONTAINS(stderr_of(&d), "--insecure: serving 0.0.0.0:0 with no admin token");

	/* Loopback needs neither. */
	const char *loop[] = { "--listen", "127.0.0.2:0", NULL };
	ASSERT_OK(start(&d, "public", loop));
	ASSERT_EQ_INT(stop(&d), 0);
}

/* With --admin-token-file, writes and the change feed need the token;
 * reads stay open. */
TEST(admin_token_file_guards_writes_and_feed)
{
	static struct item it[2];
	struct daemon d;
	char tok[256];
	snprintf(tok, sizeof tok, "%s/admin.token", tmpdir);
	ASSERT_OK(procs_write_file(tok, "s3cret-T0ken_x\r\n", 0600));
	make_items(it, 2, "t", 4200);
	const char *extra[] = { "--listen", "0.0.0.0:0", "--admin-token-file", tok, NULL };
	ASSERT_OK(start(&d, "token", extra));
	vr_channel *anon = channel(&d), *wrong = channel_token(&d, "s3cret-T0ken_y"),
		   *admin = channel_token(&d, "s3cret-T0ken_x");
	Visrec__V1__PutItemsResponse *r = NULL;
	vr_status st_anon = { 0 }, st_wrong = { 0 }, st_watch = { 0 }, st_gv = { 0 };
	int put_anon = put_items(anon, it, 1, &r, &st_anon);
	if (r)
		protobuf_c_message_free_unpacked(&r->base, NULL);
	r = NULL;
	int put_wrong = put_items(wrong, it, 1, &r, &st_wrong);
	if (r)
		protobuf_c_message_free_unpacked(&r->base, NULL);
	int put_admin = put_all_ok(admin, it, 2);
	vr_ccall *cc = NULL;
	int watch_anon = watch_open(anon, &cc, &st_watch);
	watch_close(cc);
	cc = NULL;
	int watch_admin = watch_open(admin, &cc, NULL);
	watch_close(cc);
	struct vecs v;
	int gv = get_vectors(anon, 1, NULL, 0, 0, 0, &v, &st_gv);
	vr_channel_destroy(anon);
	vr_channel_destroy(wrong);
	vr_channel_destroy(admin);
	ASSERT_EQ_INT(stop(&d), 0);
	ASSERT_CONTAINS(stderr_of(&d), "plaintext");
	ASSERT(put_anon != 0);
	ASSERT_EQ_INT(st_anon.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_CONTAINS(st_anon.message, "needs the admin token");
	ASSERT(put_wrong != 0);
	ASSERT_EQ_INT(st_wrong.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_CONTAINS(st_wrong.message, "not valid");
	ASSERT_OK(put_admin);
	ASSERT_EQ_INT(watch_anon, VR_ERPC);
	ASSERT_EQ_INT(st_watch.code, GRPC_STATUS_UNAUTHENTICATED);
	ASSERT_OK(watch_admin);
	ASSERT_MSG(gv == 0, "GetVectors: %s %s", vr_status_name(st_gv.code), st_gv.message);
	ASSERT_EQ_INT(v.n, 2);
	vecs_free(&v);
	free_items(it, 2);
}

/* ---- a full disk --------------------------------------------------------- */

/* Items of noise, about 120 KB of JPEG each, to fill a disk quickly. */
static void make_noise_items(struct item *it, int n, const char *prefix)
{
	enum { S = 200 };
	static uint8_t px[S * S * 3];
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < n; i++) {
		for (size_t k = 0; k < sizeof px; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			px[k] = (uint8_t)x;
		}
		snprintf(it[i].id, sizeof it[i].id, "%s%04d", prefix, i);
		it[i].jpeg = NULL;
		vr_jpeg_encode(px, S, S, VR_PIX_RGB, VR_SUBSAMP_444, 95, &it[i].jpeg, &it[i].len);
		it[i].owned = 1;
	}
}

#define N_DISK 160

/* Fills a small file system through PutItems: the writes it cannot take
 * are refused RESOURCE_EXHAUSTED naming the disk and the directory, and
 * after kill -9 and a restart on the still full disk every acknowledged
 * item is there. */
TEST(full_disk_keeps_every_acked_item)
{
	static struct item it[N_DISK];
	static struct item acked_items[N_DISK];
	char disk[128], why[256];
	snprintf(disk, sizeof disk, "%s/disk", tmpdir);
	if (procs_tmpfs(disk, "6m", why, sizeof why))
		SKIP("%s; run as root where mounts are allowed", why);
	struct daemon d;
	make_noise_items(it, N_DISK, "full");
	int started = !start(&d, "disk/fd", NULL);
	vr_channel *ch = started ? channel(&d) : NULL;
	int acked = 0, refused = 0, other = 0, calls = 0;
	char refusal[512] = "";
	/* Four items per call, on until three calls in a row stored nothing. */
	for (int i = 0, dry = 0; ch && i + 4 <= N_DISK && dry < 3; i += 4, calls++) {
		Visrec__V1__PutItemsResponse *r = NULL;
		vr_status st;
		if (put_items(ch, it + i, 4, &r, &st)) {
			snprintf(refusal, sizeof refusal, "PutItems failed: %s %s", vr_status_name(st.code),
				 st.message);
			other++;
			break;
		}
		int stored = 0;
		for (size_t k = 0; k < r->n_items; k++) {
			const Visrec__V1__ItemStatus *s = r->items[k];
			if (!s->code) {
				acked_items[acked++] = it[i + (int)k];
				stored++;
			} else if (s->code == GRPC_STATUS_RESOURCE_EXHAUSTED) {
				refused++;
				snprintf(refusal, sizeof refusal, "%s", s->message);
			} else {
				other++;
				snprintf(refusal, sizeof refusal, "%s: %s", vr_status_name((int)s->code),
					 s->message);
			}
		}
		dry = stored ? 0 : dry + 1;
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	vr_channel_destroy(ch);
	if (started)
		proc_kill9(&d.p);
	for (int i = 0; i < acked; i++)
		acked_items[i].owned = 0;

	/* Restarted on the same full disk: every acknowledged item. */
	int restarted = started && !start(&d, "disk/fd", NULL);
	const char **ids = malloc(sizeof(char *) * (size_t)(acked ? acked : 1));
	for (int i = 0; i < acked; i++)
		ids[i] = acked_items[i].id;
	struct vecs v = { 0 };
	vr_status st = { 0 };
	int gv = -1;
	if (restarted) {
		ch = channel(&d);
		gv = get_vectors(ch, 0, ids, acked, 0, 0, &v, &st);
		vr_channel_destroy(ch);
		stop(&d);
	}
	int differ = restarted ? images_differ(d.data, acked_items, acked) : -1;
	umount2(disk, MNT_DETACH);
	fprintf(stderr, "  %d items stored and %d refused in %d calls; the last refusal: %s\n", acked,
		refused, calls, refusal);
	free(ids);
	free_items(it, N_DISK);
	ASSERT_MSG(started, "featured did not start on the small disk");
	ASSERT_MSG(acked >= 4 && refused >= 4, "%d items stored, %d refused for space in %d calls",
		   acked, refused, calls);
	ASSERT_MSG(!other, "an unexpected failure: %s", refusal);
	ASSERT_CONTAINS(refusal, "disk full");
	ASSERT_CONTAINS(refusal, disk);
	ASSERT_MSG(restarted, "featured did not restart on the full disk; see %s", d.p.err_path);
	ASSERT_MSG(gv == 0, "GetVectors after the restart: %s %s", vr_status_name(st.code), st.message);
	ASSERT_EQ_INT(v.nmissing, 0);
	ASSERT_EQ_INT(v.n, acked);
	ASSERT_EQ_INT(differ, 0);
	vecs_free(&v);
}

/* One GetImages call: the ids and images answered (at most cap; each
 * image compared with the item of that id in it[0..n_it)), and the
 * status. Returns the number answered, or -1 for an image that differs
 * from the one put or an id not among it. */
static int get_images(vr_channel *ch, const Visrec__V1__GetImagesRequest *req,
		      const struct item *it, int n_it, char (*ids)[300], int cap, vr_status *st)
{
	vr_ccall *cc = NULL;
	int n = 0, bad = 0;
	st->code = GRPC_STATUS_OK;
	st->message[0] = 0;
	if (vr_ccall_start(&cc, ch, "/visrec.v1.Featured/GetImages",
			   &visrec__v1__item_image__descriptor, 10000, NULL) ||
	    vr_ccall_send(cc, &req->base) || vr_ccall_close_send(cc))
		return -1;
	for (;;) {
		Visrec__V1__ItemImage *m = NULL;
		if (vr_ccall_recv(cc, (ProtobufCMessage **)&m))
			break;
		int k = 0;
		while (k < n_it && strcmp(it[k].id, m->item_id))
			k++;
		if (k == n_it || m->image.len != it[k].len || memcmp(m->image.data, it[k].jpeg, it[k].len))
			bad = 1;
		if (n < cap)
			snprintf(ids[n], sizeof ids[n], "%s", m->item_id);
		n++;
		protobuf_c_message_free_unpacked(&m->base, NULL);
	}
	vr_ccall_finish(cc, st);
	return bad ? -1 : n;
}

/* GetImages (DVBPR's trainer shard reads others' images): pages in id
 * order that together hold every item once, ids answered in the asked
 * order, a missing id NOT_FOUND naming it, images as they were put. */
TEST(get_images_pages_and_ids)
{
	struct item it[5];
	struct daemon d;
	char got[16][300], after[300] = "";
	vr_status st;
	make_items(it, 5, "gi", 3000);
	ASSERT_OK(start(&d, "images", NULL));
	vr_channel *ch = channel(&d);
	ASSERT_OK(put_all_ok(ch, it, 5));
	int total = 0, pages = 0;
	for (;;) {
		Visrec__V1__GetImagesRequest page = VISREC__V1__GET_IMAGES_REQUEST__INIT;
		page.after = after;
		page.max_items = 2;
		int n = get_images(ch, &page, it, 5, got + total, 16 - total, &st);
		ASSERT_MSG(n >= 0 && n <= 2 && st.code == GRPC_STATUS_OK, "page %d: %d items, %s: %s",
			   pages, n, vr_status_name(st.code), st.message);
		if (!n)
			break;
		snprintf(after, sizeof after, "%s", got[total + n - 1]);
		total += n;
		pages++;
		ASSERT(pages <= 5);
	}
	ASSERT_EQ_INT(total, 5);
	ASSERT_EQ_INT(pages, 3);
	for (int i = 0; i < 5; i++)
		ASSERT_STR_EQ(got[i], it[i].id);
	Visrec__V1__GetImagesRequest by = VISREC__V1__GET_IMAGES_REQUEST__INIT;
	char *ids[] = { it[3].id, it[0].id, (char *)"gi-nope" };
	by.item_ids = ids;
	by.n_item_ids = 2;
	ASSERT_EQ_INT(get_images(ch, &by, it, 5, got, 16, &st), 2);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_OK);
	ASSERT_STR_EQ(got[0], it[3].id);
	ASSERT_STR_EQ(got[1], it[0].id);
	by.n_item_ids = 3;
	ASSERT_EQ_INT(get_images(ch, &by, it, 5, got, 16, &st), 2);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_NOT_FOUND);
	ASSERT_CONTAINS(st.message, "item_ids[2] \"gi-nope\" is not stored");
	by.max_items = 3; /* ids and a page */
	ASSERT_EQ_INT(get_images(ch, &by, it, 5, got, 16, &st), 0);
	ASSERT_EQ_INT(st.code, GRPC_STATUS_INVALID_ARGUMENT);
	vr_channel_destroy(ch);
	ASSERT_EQ_INT(stop(&d), 0);
	free_items(it, 5);
}

static const struct vr_test tests[] = {
	T(ingest_restart_same_vectors), T(kill9_keeps_every_acked_item),
	T(get_vectors_chunked_with_missing), T(watch_live_and_replay),
	T(bad_input_refused_with_reasons), T(full_queue_resource_exhausted),
	T(followers_cannot_starve_writes), T(followers_per_peer_limit),
	T(refuses_public_listen_without_token), T(admin_token_file_guards_writes_and_feed),
	T(full_disk_keeps_every_acked_item), T(get_images_pages_and_ids), { 0 },
};

int main(int argc, char **argv)
{
	return vr_test_main_in_tmpdir(tests, argc, argv, tmpdir, sizeof tmpdir, "/tmp/fd_daemon_test.XXXXXX",
				      vr_rpc_init, vr_rpc_shutdown);
}
