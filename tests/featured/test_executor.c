/* Unit tests of featured/executor in process: a real store in a temporary
 * directory, the small net at 32 px on the CPU backend, real JPEGs. Jobs
 * are embedded, stored and completed in order; bad images are refused with
 * a reason; a full queue refuses; cancelled and late jobs are skipped;
 * re-embedding switches the active model, and images queued at the old
 * input size are redone at the new one. */
#include "executor.h"
#include "fd_test.h"
#include "harness.h"
#include "log.h"
#include "nn.h"

#include <pthread.h>
#include <unistd.h>

#define NJOBS 12

static char dir[64];
static vr_store *st;
static fd_fstore *fs;
static fd_executor *ex;

/* Opens the store in dir and the executor on backend in precision. */
static int start_on(int batch, int queue, const char *backend, const char *precision, char *err,
		    size_t errlen)
{
	vr_store_opts so = { .no_sync = 1 };
	int rc = vr_store_open(&st, dir, &so);
	if (!rc)
		rc = fd_fstore_open(&fs, st);
	fd_executor_opts o = {
		.backend = backend,
		.precision = precision,
		.data_dir = dir,
		.spec = { .arch = "small", .input_size = 32, .init_seed = 7 },
		.batch = batch,
		.batch_wait_ms = 2,
		.decode_threads = 2,
		.queue = queue,
		.limits = { .max_bytes = 64 << 10, .max_pixels = 1 << 20 },
	};
	if (!rc)
		rc = fd_executor_create(&ex, fs, &o, err, errlen);
	return rc;
}

static int start(int batch, int queue)
{
	char err[256];
	snprintf(dir, sizeof dir, "/tmp/fd_exec_test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	int rc = start_on(batch, queue, "cpu", NULL, err, sizeof err);
	if (rc)
		fprintf(stderr, "  %s\n", err);
	return rc;
}

static void stop(void)
{
	fd_executor_destroy(ex);
	fd_fstore_close(fs);
	vr_store_close(st);
	ex = NULL;
	fs = NULL;
	st = NULL;
	vr_test_rmtree(dir);
}

struct set {
	fd_waiter w;
	fd_job jobs[NJOBS];
	uint8_t *jpeg[NJOBS];
	size_t len[NJOBS];
	char ids[NJOBS][16];
	float vec[NJOBS][256];
};

static void set_init(struct set *s, unsigned first)
{
	fd_waiter_init(&s->w);
	for (int i = 0; i < NJOBS; i++) {
		s->jpeg[i] = fdt_jpeg(first + (unsigned)i, &s->len[i]);
		snprintf(s->ids[i], sizeof s->ids[i], "item%u", first + (unsigned)i);
		fd_job_init(&s->jobs[i], s->ids[i], s->jpeg[i], s->len[i], 0, &s->w);
		s->jobs[i].vector = s->vec[i];
		s->jobs[i].vector_cap = 256;
	}
}

static void set_free(struct set *s)
{
	for (int i = 0; i < NJOBS; i++)
		vr_jpeg_free(s->jpeg[i]);
	fd_waiter_destroy(&s->w);
}

static int wait_all(struct set *s, int n)
{
	for (int i = 0; i < n; i++)
		if (!fd_job_wait(&s->jobs[i], 20000))
			return 0;
	return 1;
}

/* Holds the executor thread in a task until released. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int inside, release;
} hold = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };

static int hold_task(fd_executor *e, void *arg)
{
	(void)e;
	(void)arg;
	pthread_mutex_lock(&hold.mu);
	hold.inside = 1;
	pthread_cond_broadcast(&hold.cv);
	while (!hold.release)
		pthread_cond_wait(&hold.cv, &hold.mu);
	pthread_mutex_unlock(&hold.mu);
	return 0;
}

static void *hold_thread(void *arg)
{
	fd_executor_call(arg, hold_task, NULL);
	return NULL;
}

static pthread_t hold_start(void)
{
	pthread_t t;
	hold.inside = hold.release = 0;
	pthread_create(&t, NULL, hold_thread, ex);
	pthread_mutex_lock(&hold.mu);
	while (!hold.inside)
		pthread_cond_wait(&hold.cv, &hold.mu);
	pthread_mutex_unlock(&hold.mu);
	return t;
}

static void hold_release(pthread_t t)
{
	pthread_mutex_lock(&hold.mu);
	hold.release = 1;
	pthread_cond_broadcast(&hold.cv);
	pthread_mutex_unlock(&hold.mu);
	pthread_join(t, NULL);
}

TEST(embeds_stores_in_order)
{
	static struct set s;
	struct fdt_ref ref;
	fd_model_info m;
	ASSERT_OK(start(4, 16));
	set_init(&s, 0);
	for (int i = 0; i < NJOBS; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 1000));
	ASSERT(wait_all(&s, NJOBS));
	fd_executor_model(ex, &m);
	ASSERT_EQ_INT(m.version, 1);
	ASSERT_EQ_INT(m.dims, 50);
	ASSERT_STR_EQ(fd_executor_backend_name(ex), "cpu");
	ASSERT_OK(fdt_ref_open(&ref, dir, &m));
	float want[50];
	vr_txn *txn;
	ASSERT_OK(vr_store_read_begin(st, &txn));
	for (int i = 0; i < NJOBS; i++) {
		fd_job *j = &s.jobs[i];
		fd_vec v;
		ASSERT_MSG(j->rc == 0, "job %d: %s", i, j->why);
		ASSERT_EQ_INT(j->seq, (uint64_t)i + 1);
		ASSERT_EQ_INT(j->kind, FD_ADDED);
		ASSERT_EQ_INT(j->dims, 50);
		ASSERT_OK(fdt_ref_embed(&ref, s.jpeg[i], s.len[i], want));
		ASSERT_MSG(fdt_max_rel(s.vec[i], want, 50) < 1e-4, "job %d differs from the reference by %g",
			   i, fdt_max_rel(s.vec[i], want, 50));
		ASSERT_OK(fd_fstore_vec_get(fs, txn, 1, s.ids[i], &v));
		ASSERT_EQ_INT(v.dims, 50);
		ASSERT(!memcmp(v.values, s.vec[i], sizeof(float) * 50));
	}
	vr_store_read_end(txn);
	fdt_ref_close(&ref);
	fd_exec_stats stats;
	fd_executor_stats(ex, &stats);
	ASSERT_EQ_INT(stats.images, NJOBS);
	ASSERT(stats.batches >= 3);
	ASSERT(stats.network_s > 0 && stats.decode_s > 0);
	set_free(&s);
	stop();
}

TEST(bad_images_refused_others_stored)
{
	static struct set s;
	ASSERT_OK(start(8, 16));
	set_init(&s, 100);
	static const uint8_t png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13 };
	uint8_t *big = calloc(1, (64 << 10) + 1);
	s.jobs[1].image = png;
	s.jobs[1].image_len = sizeof png;
	s.jobs[2].image_len = s.len[2] / 2; /* truncated */
	s.jobs[3].image = big;
	s.jobs[3].image_len = (64 << 10) + 1;
	for (int i = 0; i < 5; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 1000));
	ASSERT(wait_all(&s, 5));
	ASSERT_OK(s.jobs[0].rc);
	ASSERT_EQ_INT(s.jobs[1].rc, VR_EINVAL);
	ASSERT_CONTAINS(s.jobs[1].why, "PNG");
	ASSERT_EQ_INT(s.jobs[2].rc, VR_EINVAL);
	ASSERT_EQ_INT(s.jobs[3].rc, VR_ETOOBIG);
	ASSERT_OK(s.jobs[4].rc);
	ASSERT_EQ_INT(s.jobs[4].seq, 2);
	uint64_t items = 0, last = 0;
	ASSERT_OK(fd_fstore_stats(fs, &items, &last));
	ASSERT_EQ_INT(items, 2);
	free(big);
	set_free(&s);
	stop();
}

TEST(full_queue_and_skips)
{
	static struct set s;
	ASSERT_OK(start(4, 8));
	set_init(&s, 200);
	pthread_t t = hold_start();
	/* A stream may fill three quarters of the queue, a unary call all. */
	for (int i = 0; i < 6; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 10));
	ASSERT_EQ_INT(fd_executor_submit(ex, &s.jobs[6], 10), VR_EFULL);
	s.jobs[6].deadline_ms = vr_now_ms() - 1;
	ASSERT_OK(fd_executor_submit(ex, &s.jobs[6], 0));
	ASSERT_OK(fd_executor_submit(ex, &s.jobs[7], 0));
	ASSERT_EQ_INT(fd_executor_submit(ex, &s.jobs[8], 0), VR_EFULL);
	atomic_store(&s.jobs[2].cancelled, 1);
	hold_release(t);
	ASSERT(wait_all(&s, 8));
	ASSERT_OK(s.jobs[0].rc);
	ASSERT_EQ_INT(s.jobs[2].rc, VR_ECANCELLED);
	ASSERT_EQ_INT(s.jobs[6].rc, VR_ETIMEDOUT);
	ASSERT_OK(s.jobs[7].rc);
	fd_exec_stats stats;
	fd_executor_stats(ex, &stats);
	ASSERT_EQ_INT(stats.full, 2);
	ASSERT_EQ_INT(stats.skipped, 2);
	ASSERT_EQ_INT(stats.images, 6);
	set_free(&s);
	stop();
}

struct new_model {
	nn_net *net;
	fd_model_info info;
	char err[256];
};

static int build_task(fd_executor *e, void *arg)
{
	struct new_model *nm = arg;
	fd_model_spec spec = { .arch = "small", .input_size = 16, .layer = "fc", .init_seed = 9 };
	int rc = fd_model_build(fd_executor_backend(e), &spec, 4, &nm->net, nm->err, sizeof nm->err);
	if (!rc)
		rc = fd_model_add(fd_executor_fstore(e), dir, nm->net, "fc", 0, &nm->info, nm->err,
				  sizeof nm->err);
	return rc;
}

struct reembed_arg {
	struct new_model *nm;
	uint64_t embedded;
	int rc;
	char err[256];
};

static void *reembed_thread(void *arg)
{
	struct reembed_arg *a = arg;
	a->rc = fd_executor_reembed(ex, a->nm->net, &a->nm->info, 1, NULL, NULL, &a->embedded, a->err,
				    sizeof a->err);
	return NULL;
}

/* Checks that each of ids[0..n) has a vector of the active model equal
 * to the reference of its JPEG. */
static int check_active_vectors(char (*ids)[16], uint8_t **jpeg, size_t *len, int n)
{
	fd_model_info m;
	struct fdt_ref ref;
	vr_txn *txn = NULL;
	int bad = 0;
	fd_executor_model(ex, &m);
	if (fdt_ref_open(&ref, dir, &m) || vr_store_read_begin(st, &txn))
		return -1;
	for (int i = 0; i < n; i++) {
		fd_vec v;
		float got[256], want[256];
		if (fd_fstore_vec_get(fs, txn, m.version, ids[i], &v) || v.dims != m.dims ||
		    fdt_ref_embed(&ref, jpeg[i], len[i], want)) {
			bad++;
			continue;
		}
		memcpy(got, v.values, sizeof(float) * v.dims);
		bad += fdt_max_rel(got, want, v.dims) >= 1e-4;
	}
	vr_store_read_end(txn);
	fdt_ref_close(&ref);
	return bad;
}

TEST(reembed_switches_model)
{
	static struct set s, later;
	struct new_model nm = { 0 };
	pthread_t r;
	ASSERT_OK(start(4, 16));
	set_init(&s, 300);
	set_init(&later, 300); /* the same ids and images again: replaced */
	for (int i = 0; i < 10; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 1000));
	ASSERT(wait_all(&s, 10));
	ASSERT_OK(fd_executor_call(ex, build_task, &nm));
	ASSERT_EQ_INT(nm.info.version, 2);
	ASSERT_EQ_INT(nm.info.dims, 256);
	ASSERT_STR_EQ(nm.info.purpose, "features");
	/* Ingestion goes on while the items are re-embedded in chunks. */
	struct reembed_arg a = { .nm = &nm };
	pthread_create(&r, NULL, reembed_thread, &a);
	for (int i = 0; i < 4; i++)
		ASSERT_OK(fd_executor_submit(ex, &later.jobs[i], 1000));
	pthread_join(r, NULL);
	ASSERT_MSG(a.rc == 0, "reembed: %s (%s)", vr_strerror(a.rc), a.err);
	ASSERT(wait_all(&later, 4));
	for (int i = 0; i < 4; i++)
		ASSERT_MSG(later.jobs[i].rc == 0, "job %d: %s", i, later.jobs[i].why);
	fd_model_info m;
	fd_executor_model(ex, &m);
	ASSERT_EQ_INT(m.version, 2);
	ASSERT_EQ_INT(m.input_size, 16);
	uint32_t active = 0;
	ASSERT_OK(fd_fstore_active(fs, &active));
	ASSERT_EQ_INT(active, 2);
	ASSERT_EQ_INT(check_active_vectors(s.ids, s.jpeg, s.len, 10), 0);
	set_free(&s);
	set_free(&later);
	stop();
}

TEST(switch_redecodes_queued_images)
{
	static struct set s;
	struct new_model nm = { 0 };
	pthread_t r;
	ASSERT_OK(start(4, 16));
	set_init(&s, 400);
	ASSERT_OK(fd_executor_call(ex, build_task, &nm));
	/* Three images wait, decoded at 32 px, while the switch (no items to
	 * re-embed: its task is queued at once) goes first. */
	pthread_t t = hold_start();
	for (int i = 0; i < 3; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 1000));
	struct reembed_arg a = { .nm = &nm };
	pthread_create(&r, NULL, reembed_thread, &a);
	usleep(100000);
	hold_release(t);
	pthread_join(r, NULL);
	ASSERT_MSG(a.rc == 0, "reembed: %s (%s)", vr_strerror(a.rc), a.err);
	ASSERT_EQ_INT(a.embedded, 0);
	ASSERT(wait_all(&s, 3));
	for (int i = 0; i < 3; i++) {
		ASSERT_MSG(s.jobs[i].rc == 0, "job %d: %s", i, s.jobs[i].why);
		ASSERT_EQ_INT(s.jobs[i].version, 2);
		ASSERT_EQ_INT(s.jobs[i].dims, 256);
	}
	ASSERT_EQ_INT(check_active_vectors(s.ids, s.jpeg, s.len, 3), 0);
	set_free(&s);
	stop();
}

static int destroy_task(fd_executor *e, void *arg)
{
	(void)e;
	nn_net_destroy(arg);
	return 0;
}

static pthread_t caller;

/* reembed's stop: nonzero from its call number *arg on (counting down)
 * on the caller's thread, before a chunk; never within one (the executor
 * thread asks between a forward's layers). */
static int stop_at(void *arg)
{
	int *left = arg;
	if (!pthread_equal(pthread_self(), caller))
		return 0;
	return --*left <= 0;
}

/* reembed's stop that says stop within the second chunk's forward, at
 * its third layer: counts the caller's asks (one per chunk) and the
 * executor thread's since the second. */
struct mid_chunk {
	int chunks, layers;
};

static int stop_in_second_chunk(void *arg)
{
	struct mid_chunk *m = arg;
	if (pthread_equal(pthread_self(), caller)) {
		m->chunks++;
		return 0;
	}
	return m->chunks >= 2 && ++m->layers >= 3;
}

/* A re-embedding told to stop (as featured's TrainVisual Finish is when
 * its call is cancelled) stops before its next chunk, VR_ECANCELLED, and
 * switches nothing: the old version stays active. */
TEST(reembed_stops_when_told)
{
	static struct set s;
	struct new_model nm = { 0 };
	ASSERT_OK(start(4, 16));
	set_init(&s, 300);
	for (int i = 0; i < 10; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 1000));
	ASSERT(wait_all(&s, 10));
	ASSERT_OK(fd_executor_call(ex, build_task, &nm));
	int left = 2; /* one chunk, then stop */
	uint64_t embedded = 0;
	caller = pthread_self();
	char err[256] = "";
	int rc = fd_executor_reembed(ex, nm.net, &nm.info, FD_REEMBED_SWITCH, stop_at, &left,
				     &embedded, err, sizeof err);
	ASSERT_EQ_INT(rc, VR_ECANCELLED);
	ASSERT_EQ_INT(embedded, 4);
	ASSERT_CONTAINS(err, "stopped after 4 items");
	uint32_t active = 0;
	ASSERT_OK(fd_fstore_active(fs, &active));
	ASSERT_EQ_INT(active, 1);
	fd_model_info m;
	fd_executor_model(ex, &m);
	ASSERT_EQ_INT(m.version, 1);
	fd_executor_call(ex, destroy_task, nm.net); /* still the caller's */
	set_free(&s);
	stop();
}

/* A re-embedding told to stop in the middle of a chunk's forward stops
 * there (not at the chunk's end): VR_ECANCELLED, the chunks before it
 * stored, the stopped chunk not, nothing switched; the net and the
 * executor work on as before: the same net re-embeds every item and
 * switches, the vectors equal the reference's, and ingestion goes on. */
TEST(reembed_stops_within_a_chunk)
{
	static struct set s, more;
	struct new_model nm = { 0 };
	ASSERT_OK(start(4, 16));
	set_init(&s, 300);
	set_init(&more, 400);
	for (int i = 0; i < 10; i++)
		ASSERT_OK(fd_executor_submit(ex, &s.jobs[i], 1000));
	ASSERT(wait_all(&s, 10));
	ASSERT_OK(fd_executor_call(ex, build_task, &nm));
	struct mid_chunk m = { 0 };
	uint64_t embedded = 0;
	char err[256] = "";
	caller = pthread_self();
	int rc = fd_executor_reembed(ex, nm.net, &nm.info, FD_REEMBED_SWITCH, stop_in_second_chunk,
				     &m, &embedded, err, sizeof err);
	ASSERT_MSG(rc == VR_ECANCELLED, "rc %d (%s): the stop was asked %d times between "
		   "chunks and %d times within the second", rc, err, m.chunks, m.layers);
	ASSERT_EQ_INT(m.chunks, 2);   /* no third chunk read */
	ASSERT_EQ_INT(m.layers, 3);   /* nothing asked after the stop */
	ASSERT_EQ_INT(embedded, 4);
	ASSERT_CONTAINS(err, "stopped after 4 items");
	uint32_t active = 0;
	ASSERT_OK(fd_fstore_active(fs, &active));
	ASSERT_EQ_INT(active, 1);
	/* The same net again, no stop: the 6 items left get vectors (the 4
	 * stored stay) and the version becomes active. */
	rc = fd_executor_reembed(ex, nm.net, &nm.info, FD_REEMBED_SWITCH, NULL, NULL, &embedded, err,
				 sizeof err);
	ASSERT_MSG(rc == 0, "re-embedding after the stop: %s", err);
	ASSERT_EQ_INT(embedded, 10);
	ASSERT_OK(fd_fstore_active(fs, &active));
	ASSERT_EQ_INT(active, nm.info.version);
	ASSERT_EQ_INT(check_active_vectors(s.ids, s.jpeg, s.len, 10), 0);
	for (int i = 0; i < 3; i++)
		ASSERT_OK(fd_executor_submit(ex, &more.jobs[i], 1000));
	ASSERT(wait_all(&more, 3));
	for (int i = 0; i < 3; i++)
		ASSERT_OK(more.jobs[i].rc);
	ASSERT_EQ_INT(check_active_vectors(more.ids, more.jpeg, more.len, 3), 0);
	set_free(&s);
	set_free(&more);
	stop();
}

/* A version records the precision its vectors were made in, and a
 * featured running another refuses it instead of mixing the two: FP32
 * on oneDNN first, then BF16 on the same directory (where the CPU has
 * avx512_bf16). */
TEST(precision_recorded_and_never_mixed)
{
	char err[512] = "";
	nn_backend *b = NULL;
	if (nn_backend_open("onednn", &b))
		SKIP("no oneDNN backend in this build");
	int bf16 = !nn_backend_set_precision(b, NN_PRECISION_BF16);
	nn_backend_close(b);
	if (!bf16)
		SKIP("oneDNN runs no BF16 on this CPU (no avx512_bf16)");
	snprintf(dir, sizeof dir, "/tmp/fd_exec_test.XXXXXX");
	ASSERT(mkdtemp(dir));
	int rc = start_on(4, 16, "onednn", "fp32", err, sizeof err);
	ASSERT_MSG(rc == 0, "fp32: %s", err);
	fd_model_info m;
	fd_executor_model(ex, &m);
	ASSERT_STR_EQ(m.precision, "fp32");
	ASSERT_OK(fd_fstore_model_get(fs, 1, &m));
	ASSERT_STR_EQ(m.precision, "fp32");
	fd_executor_destroy(ex);
	fd_fstore_close(fs);
	vr_store_close(st);
	ex = NULL;
	rc = start_on(4, 16, "onednn", "bf16", err, sizeof err);
	ASSERT_EQ_INT(rc, VR_ESTATE);
	ASSERT_CONTAINS(err, "made in fp32");
	ASSERT_CONTAINS(err, "--precision fp32");
	ex = NULL;
	fd_fstore_close(fs);
	vr_store_close(st);
	fs = NULL;
	st = NULL;
	vr_test_rmtree(dir);
}

static const struct vr_test tests[] = {
	T(embeds_stores_in_order), T(bad_images_refused_others_stored), T(full_queue_and_skips),
	T(reembed_switches_model), T(switch_redecodes_queued_images), T(reembed_stops_when_told),
	T(reembed_stops_within_a_chunk), T(precision_recorded_and_never_mixed), { 0 },
};

int main(int argc, char **argv)
{
	vr_log_set_level(VR_LOG_WARN);
	return vr_test_main(tests, argc, argv);
}
