/* executor: the decode pool, the bounded queue and the network thread of
 * featured (contract in executor.h).
 *
 * DESIGN
 * Threads. D decode threads, each owning one fd_decoder, and ONE executor
 * thread, which opens the nn backend, owns every net on it (the active
 * model's, and any a task makes) and is the only thread that writes items
 * to the store. Submitters (gRPC handler threads) only enqueue and wait.
 *
 * The queue is a ring of `cap` slots, each with an S×S×3 byte image
 * allocated at start. Three counters move forward through it, all under
 * `mu`: tail (next free slot, advanced by fd_executor_submit), decode_next
 * (next slot to decode, advanced by a decode thread when it claims one)
 * and head (oldest slot, advanced by the executor when it takes a batch).
 * A slot is QUEUED, DECODING (its decode thread writes its image without
 * the lock) or DECODED. The executor takes the longest run of DECODED
 * slots from head, up to `batch`, once the run is full or the oldest has
 * waited batch_wait_ms; so batches, commits and acks follow admission
 * order. It copies the run's bytes into its byte batch, frees the slots
 * (head += n, waking blocked submitters), runs the net from the bytes (the
 * backend normalises them: on a GPU, a quarter of the floats' bytes cross
 * the bus and the host does no float work), writes the batch
 * in one transaction (fd_fstore_put_items) and then completes each job
 * under its waiter's lock. Jobs cancelled or past their deadline are
 * skipped before decode and again before compute; bad images carry the
 * decoder's reason and skip compute.
 *
 * Memory: slots, the byte input and float output batches and the decoders'
 * scratch are allocated at start (the decoders' scratch grows to the
 * largest image seen, bounded by the pixel limit) and reused, so memory
 * stays flat however many images stream through. JPEG bytes stay in the
 * submitter's request until its job is done; the queue bounds how many.
 *
 * Tasks. fd_executor_call queues a function for the executor thread,
 * which runs tasks before the next batch; the caller sleeps until it
 * returns. Training steps and re-embedding chunks use this, so the network
 * has one owner. A switch of the active model (end of a re-embed) may
 * change S: it waits until no slot is DECODING, reallocates the slot
 * images and marks every admitted slot QUEUED again, so the decoders
 * redo them at the new size.
 *
 * End. fd_executor_destroy first stops and joins the decode threads, then
 * tells the executor, which completes any job still queued and any task
 * with VR_ESHUTDOWN and returns; then the nets and the backend are freed.
 * The server is stopped before that, so normally nothing is left.
 *
 * Why one file at ~1,050 lines: the decode pool, the queue and the
 * executor thread are one mechanism (a slot moves through all three under
 * one mutex), and re-embedding and tasks run on that same thread. */
#include "executor.h"

#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SLOT_QUEUED, SLOT_DECODING, SLOT_DECODED };

struct slot {
	fd_job *job;
	int state;
	int ok;          /* decoded; else job->rc says why not */
	int64_t ready_ms;
	uint8_t *rgb;
};

struct task {
	fd_task_fn fn;
	void *arg;
	int rc, done;
	struct task *next;
};

struct decode_thr {
	fd_executor *ex;
	fd_decoder *dec;
	pthread_t tid;
	int started;
};

struct fd_executor {
	fd_fstore *fs;
	char data_dir[4096];
	char backend_req[16];
	int precision;    /* enum nn_precision */
	fd_model_spec spec;
	fd_decode_limits limits;
	int wait_ms, cap, ndec;
	int net_threads;  /* cpu_split's; 0: the backend's own (OMP_NUM_THREADS was set) */
	int batch;        /* written under mu (a switch may lower it) */

	/* executor thread only */
	nn_backend *b;
	nn_net *net;
	uint8_t *in;      /* batch decoded images, S×S×3 bytes each */
	float *out;
	fd_decoder *dec;  /* stored images, for the catch-up of a switch */
	fd_put *puts;     /* per batch: batch entries each */
	fd_job **jobs;
	const uint8_t **rgbs;
	int *take;
	int created;      /* setup made version 1 */
	/* the live versions' nets (executor.h), oldest first; nlive and
	 * live[].info are also read by fd_executor_live, under mu */
	struct live {
		fd_model_info info;
		nn_net *net;
		float *out;           /* batch vectors */
		uint8_t *in;          /* batch images at its S, when it is not the active's */
		const uint8_t **rgbs;
	} live[FD_MAX_LIVE];
	int nlive;
	fd_more_vecs more[FD_MAX_LIVE];

	pthread_mutex_t mu;
	pthread_cond_t cv_exec, cv_decode, cv_space, cv_task;
	/* under mu */
	fd_model_info model;
	int S;
	size_t dims;
	struct slot *slots;
	uint64_t head, decode_next, tail;
	int decoding;
	struct task *tasks, **tasks_tail;
	int stop_decode, stop, ready, setup_rc;
	char setup_err[320];  /* "model: " + the 256-byte err of fd_models_setup */
	fd_exec_stats stats;

	pthread_t tid;
	int started;
	struct decode_thr *dts;
	char backend_name[16], device[256];
};

void fd_waiter_init(fd_waiter *w)
{
	pthread_mutex_init(&w->mu, NULL);
	vr_cond_init(&w->cv);
}

void fd_waiter_destroy(fd_waiter *w)
{
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

void fd_job_init(fd_job *job, const char *item_id, const void *image, size_t image_len,
		 int64_t deadline_ms, fd_waiter *waiter)
{
	memset(job, 0, sizeof *job);
	job->item_id = item_id;
	job->image = image;
	job->image_len = image_len;
	job->deadline_ms = deadline_ms;
	job->waiter = waiter;
	atomic_init(&job->cancelled, 0);
}

int fd_job_wait(fd_job *job, int timeout_ms)
{
	int64_t until = vr_deadline_ms(timeout_ms);
	pthread_mutex_lock(&job->waiter->mu);
	while (!job->done)
		if (vr_cond_wait_until(&job->waiter->cv, &job->waiter->mu, until))
			break;
	int done = job->done;
	pthread_mutex_unlock(&job->waiter->mu);
	return done;
}

/* After this the submitter may free job: touch nothing of it later. */
static void complete(fd_job *job)
{
	fd_waiter *w = job->waiter;
	pthread_mutex_lock(&w->mu);
	job->done = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void fail_job(fd_job *job, int rc, const char *why)
{
	job->rc = rc;
	snprintf(job->why, sizeof job->why, "%s", why);
}

/* Whether job should not be worked on any more; sets its rc if so. */
static int skip_job(fd_job *job)
{
	if (atomic_load(&job->cancelled)) {
		fail_job(job, VR_ECANCELLED, "the call was cancelled before the image was embedded");
		return 1;
	}
	if (job->deadline_ms && vr_now_ms() >= job->deadline_ms) {
		fail_job(job, VR_ETIMEDOUT, "the deadline passed before the image was embedded");
		return 1;
	}
	return 0;
}

static struct slot *slot_at(fd_executor *ex, uint64_t i)
{
	return &ex->slots[i % (uint64_t)ex->cap];
}

/* ---- decode threads ---------------------------------------------------- */

static void *decode_main(void *arg)
{
	struct decode_thr *d = arg;
	fd_executor *ex = d->ex;
	pthread_mutex_lock(&ex->mu);
	for (;;) {
		while (!ex->stop_decode && ex->decode_next == ex->tail)
			pthread_cond_wait(&ex->cv_decode, &ex->mu);
		if (ex->stop_decode)
			break;
		struct slot *s = slot_at(ex, ex->decode_next++);
		int size = ex->S;
		s->state = SLOT_DECODING;
		ex->decoding++;
		pthread_mutex_unlock(&ex->mu);

		fd_job *job = s->job;
		double t0 = vr_now_s();
		int ok = 0, skipped = skip_job(job);
		if (!skipped) {
			job->rc = fd_decode(d->dec, job->image, job->image_len, size, 0, s->rgb, NULL,
					    job->why, sizeof job->why);
			ok = job->rc == 0;
		}
		double spent = vr_now_s() - t0;

		pthread_mutex_lock(&ex->mu);
		s->ok = ok;
		s->state = SLOT_DECODED;
		s->ready_ms = vr_now_ms();
		ex->decoding--;
		ex->stats.decode_s += spent;
		ex->stats.decoded += (uint64_t)ok;
		pthread_cond_broadcast(&ex->cv_exec);
	}
	pthread_mutex_unlock(&ex->mu);
	return NULL;
}

/* ---- buffers --------------------------------------------------------------- */

/* The batches for a net of input S and dims, batch images: the decoded
 * bytes handed to the backend (in may be NULL where the caller has its
 * own) and the vectors it returns. */
static int alloc_batches(int batch, int S, size_t dims, uint8_t **in, float **out)
{
	uint8_t *i = in ? malloc((size_t)batch * 3 * S * S) : NULL;
	float *o = malloc(sizeof(float) * (size_t)batch * dims);
	if (o && (i || !in)) {
		if (in)
			*in = i;
		*out = o;
		return 0;
	}
	free(i);
	free(o);
	return VR_ENOMEM;
}

static int alloc_slots(fd_executor *ex, int S)
{
	ex->slots = calloc((size_t)ex->cap, sizeof *ex->slots);
	if (!ex->slots)
		return VR_ENOMEM;
	for (int i = 0; i < ex->cap; i++)
		if (!(ex->slots[i].rgb = malloc((size_t)S * S * 3)))
			return VR_ENOMEM;
	return 0;
}

static void free_slots(fd_executor *ex)
{
	for (int i = 0; ex->slots && i < ex->cap; i++)
		free(ex->slots[i].rgb);
	free(ex->slots);
	ex->slots = NULL;
}

/* ---- the network ----------------------------------------------------------- */

/* Copies n S×S×3 images into consecutive images of in and points rgb[i]
 * at its copies, so the slots they came from can be reused. */
static void copy_batch(uint8_t *in, const uint8_t **rgb, int n, const fd_model_info *m)
{
	size_t bytes = (size_t)3 * m->input_size * m->input_size;
	for (int i = 0; i < n; i++) {
		memcpy(in + i * bytes, rgb[i], bytes);
		rgb[i] = in + i * bytes;
	}
}

/* Runs net on n decoded images into out; the backend normalises them
 * with the net's mean and std (the model's: models.c takes them from the
 * net). Executor thread only. */
static int embed(nn_net *net, const uint8_t *const *rgb, int n, float *out, char *err,
		 size_t errlen)
{
	int rc = nn_net_forward_u8(net, rgb, n, 0, out);
	if (rc)
		snprintf(err, errlen, "the network failed: %s", nn_net_errmsg(net));
	return rc;
}

/* Runs live version v's net on the m images of the batch (rgb, decoded
 * at the active model's S; decoded again from the jobs' JPEGs when the
 * live net takes another size) and points ex->more[v] at its vectors.
 * Executor thread only. */
static int embed_live(fd_executor *ex, int v, const uint8_t **rgb, int m,
		      const fd_model_info *model, char *err, size_t errlen)
{
	struct live *l = &ex->live[v];
	const uint8_t **imgs = rgb;
	int S = (int)l->info.input_size, rc;
	if (l->info.input_size != model->input_size) {
		size_t px = (size_t)S * S * 3;
		for (int k = 0; k < m; k++) {
			fd_job *job = ex->jobs[ex->take[k]];
			char why[200];
			l->rgbs[k] = l->in + (size_t)k * px;
			if ((rc = fd_decode(ex->dec, job->image, job->image_len, S, 0, l->in + (size_t)k * px,
					    NULL, why, sizeof why))) {
				snprintf(err, errlen, "decoding at %d px for live version %u: %s", S,
					 l->info.version, why);
				return rc;
			}
		}
		imgs = l->rgbs;
	}
	if ((rc = embed(l->net, imgs, m, l->out, err, errlen)))
		return rc;
	ex->more[v] = (fd_more_vecs){ l->info.version, l->info.dims, l->out };
	return 0;
}

/* Takes the n decoded slots at head: embeds, stores and completes them.
 * Called and returns with mu held; releases it meanwhile. */
static void run_batch(fd_executor *ex, int n)
{
	const uint8_t **rgb = ex->rgbs;
	int m = 0, skipped = 0, refused = 0;
	for (int i = 0; i < n; i++) {
		struct slot *s = slot_at(ex, ex->head + (uint64_t)i);
		fd_job *job = s->job;
		ex->jobs[i] = job;
		if (!s->ok) {
			refused += job->rc == VR_EINVAL || job->rc == VR_ETOOBIG;
			skipped += job->rc == VR_ECANCELLED || job->rc == VR_ETIMEDOUT;
		} else if (skip_job(job)) {
			skipped++;
		} else {
			rgb[m] = s->rgb;
			ex->take[m++] = i;
		}
	}
	fd_model_info model = ex->model;
	pthread_mutex_unlock(&ex->mu);

	/* The copy reads the slots, so they are freed only after it. */
	double t0 = vr_now_s();
	copy_batch(ex->in, rgb, m, &model);
	double t1 = vr_now_s();
	pthread_mutex_lock(&ex->mu);
	ex->head += (uint64_t)n;
	pthread_cond_broadcast(&ex->cv_space);
	pthread_mutex_unlock(&ex->mu);

	char err[256] = "";
	int rc = 0;
	double t2 = t1, t3 = t1;
	if (m > 0) {
		rc = embed(ex->net, rgb, m, ex->out, err, sizeof err);
		for (int v = 0; !rc && v < ex->nlive; v++)
			rc = embed_live(ex, v, rgb, m, &model, err, sizeof err);
		t2 = vr_now_s();
		for (int k = 0; !rc && k < m; k++) {
			fd_job *job = ex->jobs[ex->take[k]];
			ex->puts[k] = (fd_put){ .item_id = job->item_id, .image = job->image,
						.image_len = job->image_len,
						.vector = ex->out + (size_t)k * model.dims };
		}
		if (!rc && (rc = fd_fstore_put_items_more(ex->fs, model.version, model.dims, ex->puts,
							  (size_t)m, ex->more, (size_t)ex->nlive)))
			snprintf(err, sizeof err, "storing the item failed: %s%s%s", vr_strerror(rc),
				 vr_store_last_error()[0] ? ": " : "", vr_store_last_error());
		t3 = vr_now_s();
		if (rc)
			VR_ERROR("batch of %d images: %s", m, err);
		else
			vr_fault("featured-batch-committed");
	}
	for (int k = 0; k < m; k++) {
		fd_job *job = ex->jobs[ex->take[k]];
		if (rc) {
			fail_job(job, rc, err);
			continue;
		}
		job->seq = ex->puts[k].seq;
		job->kind = ex->puts[k].kind;
		job->version = model.version;
		job->dims = model.dims;
		if (job->vector)
			memcpy(job->vector, ex->out + (size_t)k * model.dims,
			       sizeof(float) * (job->vector_cap < model.dims ? job->vector_cap : model.dims));
	}
	/* Counted before the acks, so a caller that saw its ack sees it. */
	pthread_mutex_lock(&ex->mu);
	ex->stats.batches += m > 0;
	ex->stats.images += rc ? 0 : (uint64_t)m;
	ex->stats.refused += (uint64_t)refused;
	ex->stats.skipped += (uint64_t)skipped;
	ex->stats.copy_s += t1 - t0;
	ex->stats.network_s += t2 - t1;
	ex->stats.store_s += t3 - t2;
	pthread_mutex_unlock(&ex->mu);
	for (int i = 0; i < n; i++)
		complete(ex->jobs[i]);
	pthread_mutex_lock(&ex->mu);
}

/* Decoded slots in a row from head, up to batch. Under mu. */
static int ready_run(fd_executor *ex)
{
	int n = 0;
	while (n < ex->batch && ex->head + (uint64_t)n < ex->tail &&
	       slot_at(ex, ex->head + (uint64_t)n)->state == SLOT_DECODED)
		n++;
	return n;
}

static void live_free(struct live *l)
{
	nn_net_destroy(l->net);
	free(l->out);
	free(l->in);
	free(l->rgbs);
	memset(l, 0, sizeof *l);
}

/* Buffers for a live net of info's S and dims, batch images. */
static int live_make(struct live *l, nn_net *net, const fd_model_info *info, int batch)
{
	size_t px = (size_t)info->input_size * info->input_size * 3;
	memset(l, 0, sizeof *l);
	l->info = *info;
	if (!(l->out = malloc(sizeof(float) * (size_t)batch * info->dims)) ||
	    !(l->in = malloc(px * (size_t)batch)) || !(l->rgbs = calloc((size_t)batch, sizeof *l->rgbs))) {
		live_free(l);
		return VR_ENOMEM;
	}
	l->net = net;
	return 0;
}

/* Start-up: reopens the stored live versions. One that cannot be opened
 * is dropped from the list with a warning: it must not keep featured
 * from ingesting with the active model. */
static void open_live(fd_executor *ex)
{
	uint32_t versions[FD_MAX_LIVE], keep[FD_MAX_LIVE];
	size_t n = 0, k = 0;
	int rc = fd_fstore_live_get(ex->fs, versions, &n);
	if (rc)
		VR_WARN("reading the live model versions: %s; none is live", vr_strerror(rc));
	for (size_t i = 0; i < n; i++) {
		fd_model_info info;
		nn_net *net = NULL;
		char err[256] = "";
		if ((rc = fd_fstore_model_get(ex->fs, versions[i], &info)) ||
		    (rc = fd_model_open(ex->b, ex->data_dir, &info, ex->batch, &net, err, sizeof err)) ||
		    (rc = live_make(&ex->live[ex->nlive], net, &info, ex->batch))) {
			nn_net_destroy(net);
			VR_WARN("live model version %u cannot be opened (%s%s%s); it is no longer live",
				versions[i], vr_strerror(rc), err[0] ? ": " : "", err);
			continue;
		}
		keep[k++] = versions[i];
		ex->nlive++;
	}
	if (k != n && (rc = fd_fstore_live_set(ex->fs, keep, k)))
		VR_WARN("recording the live model versions: %s", vr_strerror(rc));
}

/* Stored images were accepted once: re-reading them (re-embedding) is not
 * where the limits protect anything, and refusing one would block a
 * switch. */
static const fd_decode_limits stored_limits = { .max_bytes = (size_t)1 << 31,
						.max_pixels = (uint64_t)1 << 40 };

/* ---- the CPU split --------------------------------------------------------
 * The one place that decides how featured's CPUs are shared between the
 * decode pool and the network (issue 21): --decode-threads, or 1 decode
 * thread on two or fewer CPUs and 2 above; the network (a backend whose
 * threads are ours: oneDNN's OpenMP team) one thread per CPU, unless
 * OMP_NUM_THREADS names its count; and the team WAITS PASSIVELY
 * (OMP_WAIT_POLICY=passive, fd_executor_exec_env), so a team thread
 * blocked at a barrier sleeps and hands its core to the decoder instead
 * of spinning on it. Measured on the 2 shared cores, AlexNet fc7 ingest,
 * alternated (README, issue 21): 2 network + 1 decode threads spinning
 * (OpenMP's default, the old split) lost 8 of 10 pairs at batch 16, 32
 * and 64 to 1 + 1, burning 20-30 ms of CPU per image against 15-17;
 * 2 + 1 waiting passively won all 4 pairs against 2 + 1 spinning (CPU
 * 17-24 ms per image) and split its 4 against 1 + 1 two and two, medians
 * ahead; it keeps both cores for the network where the machine is quiet
 * (1 + 1 leaves one to a decoder that needs about a quarter of it); 2 + 2
 * was no better than 2 + 1. */
static void cpu_split(long ncpu, int decode_asked, int *ndec, int *net_threads)
{
	*ndec = decode_asked > 0 ? decode_asked : ncpu > 2 ? 2 : 1;
	*net_threads = getenv("OMP_NUM_THREADS") ? 0 : ncpu > 0 ? (int)ncpu : 1;
}

void fd_executor_exec_env(char **argv)
{
	if (getenv("OMP_WAIT_POLICY") || setenv("OMP_WAIT_POLICY", "passive", 1))
		return;
	execv("/proc/self/exe", argv);
	unsetenv("OMP_WAIT_POLICY");  /* no re-exec: run on, as OpenMP already set itself up */
}

static int setup(fd_executor *ex)
{
	char err[256] = "";
	int rc = nn_backend_open_err(ex->backend_req, &ex->b, err, sizeof err);
	if (rc) {
		snprintf(ex->setup_err, sizeof ex->setup_err, "cannot open the %s backend: %s (%.200s)",
			 ex->backend_req, vr_strerror(rc), err);
		return rc;
	}
	if (ex->net_threads && (rc = nn_backend_set_threads(ex->b, ex->net_threads)) &&
	    rc != VR_EUNSUPPORTED) {
		snprintf(ex->setup_err, sizeof ex->setup_err, "the %s backend cannot run %d threads: %s",
			 nn_backend_name(ex->b), ex->net_threads, vr_strerror(rc));
		return rc;
	}
	if ((rc = nn_backend_set_precision(ex->b, ex->precision))) {
		snprintf(ex->setup_err, sizeof ex->setup_err, "the %s backend (%.160s) cannot run "
			 "--precision %s: %s", nn_backend_name(ex->b), nn_backend_device(ex->b),
			 nn_precision_name(ex->precision), vr_strerror(rc));
		return rc;
	}
	snprintf(ex->backend_name, sizeof ex->backend_name, "%s", nn_backend_name(ex->b));
	snprintf(ex->device, sizeof ex->device, "%s", nn_backend_device(ex->b));
	rc = fd_models_setup(ex->fs, ex->b, ex->data_dir, &ex->spec, ex->batch, &ex->net, &ex->model,
			     &ex->created, err, sizeof err);
	if (rc) {
		snprintf(ex->setup_err, sizeof ex->setup_err, "model: %s", err);
		return rc;
	}
	ex->S = (int)ex->model.input_size;
	ex->dims = ex->model.dims;
	open_live(ex);
	if ((rc = alloc_batches(ex->batch, ex->S, ex->dims, &ex->in, &ex->out)) ||
	    (rc = alloc_slots(ex, ex->S)) || (rc = fd_decoder_create(&ex->dec, &stored_limits)) ||
	    !(ex->puts = calloc((size_t)ex->batch, sizeof *ex->puts)) ||
	    !(ex->jobs = calloc((size_t)ex->batch, sizeof *ex->jobs)) ||
	    !(ex->rgbs = calloc((size_t)ex->batch, sizeof *ex->rgbs)) ||
	    !(ex->take = calloc((size_t)ex->batch, sizeof *ex->take))) {
		snprintf(ex->setup_err, sizeof ex->setup_err, "allocating the queue and batches: %s",
			 vr_strerror(rc ? rc : VR_ENOMEM));
		return rc ? rc : VR_ENOMEM;
	}
	return 0;
}

static void *exec_main(void *arg)
{
	fd_executor *ex = arg;
	int rc = setup(ex);
	pthread_mutex_lock(&ex->mu);
	ex->setup_rc = rc;
	ex->ready = 1;
	pthread_cond_broadcast(&ex->cv_task);
	while (!rc) {
		if (ex->tasks) {
			struct task *t = ex->tasks;
			ex->tasks = t->next;
			if (!ex->tasks)
				ex->tasks_tail = &ex->tasks;
			pthread_mutex_unlock(&ex->mu);
			t->rc = t->fn(ex, t->arg);
			pthread_mutex_lock(&ex->mu);
			t->done = 1;
			pthread_cond_broadcast(&ex->cv_task);
			continue;
		}
		if (ex->stop)
			break;
		int n = ready_run(ex);
		if (!n) {
			pthread_cond_wait(&ex->cv_exec, &ex->mu);
			continue;
		}
		int64_t until = slot_at(ex, ex->head)->ready_ms + ex->wait_ms;
		if (n < ex->batch && vr_now_ms() < until) {
			vr_cond_wait_until(&ex->cv_exec, &ex->mu, until);
			continue;
		}
		run_batch(ex, n);
	}
	/* Stopping: the decode threads are gone; nothing queued will run. */
	for (; ex->head < ex->tail; ex->head++) {
		fd_job *job = slot_at(ex, ex->head)->job;
		fail_job(job, VR_ESHUTDOWN, "featured is shutting down");
		complete(job);
	}
	for (struct task *t = ex->tasks; t; t = t->next) {
		t->rc = VR_ESHUTDOWN;
		t->done = 1;
	}
	ex->tasks = NULL;
	ex->tasks_tail = &ex->tasks;
	pthread_cond_broadcast(&ex->cv_task);
	pthread_cond_broadcast(&ex->cv_space);
	pthread_mutex_unlock(&ex->mu);
	return NULL;
}

/* ---- life cycle ------------------------------------------------------------- */

int fd_executor_create(fd_executor **out, fd_fstore *fs, const fd_executor_opts *o, char *err,
		       size_t errlen)
{
	int rc = VR_ENOMEM;
	*out = NULL;
	fd_executor *ex = calloc(1, sizeof *ex);
	if (!ex) {
		snprintf(err, errlen, "out of memory");
		return VR_ENOMEM;
	}
	ex->fs = fs;
	snprintf(ex->data_dir, sizeof ex->data_dir, "%s", o->data_dir);
	snprintf(ex->backend_req, sizeof ex->backend_req, "%s", o->backend ? o->backend : "auto");
	if (nn_precision_parse(o->precision ? o->precision : "fp32", &ex->precision)) {
		snprintf(err, errlen, "unknown precision \"%s\" (fp32, tf32 or bf16)", o->precision);
		free(ex);
		return VR_EINVAL;
	}
	ex->spec = o->spec;
	ex->limits = o->limits;
	ex->batch = o->batch > 0 ? o->batch : 16;
	ex->wait_ms = o->batch_wait_ms > 0 ? o->batch_wait_ms : 0;
	ex->cap = o->queue > 0 ? o->queue : 4 * ex->batch;
	if (ex->batch > ex->cap)
		ex->batch = ex->cap;
	cpu_split(sysconf(_SC_NPROCESSORS_ONLN), o->decode_threads, &ex->ndec, &ex->net_threads);
	ex->tasks_tail = &ex->tasks;
	pthread_mutex_init(&ex->mu, NULL);
	vr_cond_init(&ex->cv_exec);
	vr_cond_init(&ex->cv_decode);
	vr_cond_init(&ex->cv_space);
	vr_cond_init(&ex->cv_task);
	if (ex->batch > 4096 || ex->cap > 65536 || ex->ndec > 64) {
		snprintf(err, errlen, "--batch (at most 4096), --queue (65536) or --decode-threads (64) too large");
		rc = VR_EINVAL;
		goto fail;
	}
	if ((rc = -pthread_create(&ex->tid, NULL, exec_main, ex))) {
		snprintf(err, errlen, "cannot start the executor thread: %s", vr_strerror(rc));
		goto fail;
	}
	ex->started = 1;
	pthread_mutex_lock(&ex->mu);
	while (!ex->ready)
		pthread_cond_wait(&ex->cv_task, &ex->mu);
	rc = ex->setup_rc;
	pthread_mutex_unlock(&ex->mu);
	if (rc) {
		snprintf(err, errlen, "%s", ex->setup_err);
		goto fail;
	}
	if (!(ex->dts = calloc((size_t)ex->ndec, sizeof *ex->dts))) {
		rc = VR_ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (int i = 0; i < ex->ndec; i++) {
		struct decode_thr *d = &ex->dts[i];
		d->ex = ex;
		if ((rc = fd_decoder_create(&d->dec, &ex->limits)) ||
		    (rc = -pthread_create(&d->tid, NULL, decode_main, d))) {
			snprintf(err, errlen, "cannot start decode thread %d: %s", i, vr_strerror(rc));
			goto fail;
		}
		d->started = 1;
	}
	if (ex->created)
		VR_DEBUG("created model version %u", ex->model.version);
	*out = ex;
	return 0;
fail:
	fd_executor_destroy(ex);
	return rc;
}

void fd_executor_destroy(fd_executor *ex)
{
	if (!ex)
		return;
	pthread_mutex_lock(&ex->mu);
	ex->stop_decode = 1;
	pthread_cond_broadcast(&ex->cv_decode);
	pthread_mutex_unlock(&ex->mu);
	for (int i = 0; ex->dts && i < ex->ndec; i++) {
		if (ex->dts[i].started)
			pthread_join(ex->dts[i].tid, NULL);
		fd_decoder_destroy(ex->dts[i].dec);
	}
	free(ex->dts);
	pthread_mutex_lock(&ex->mu);
	ex->stop = 1;
	pthread_cond_broadcast(&ex->cv_exec);
	pthread_mutex_unlock(&ex->mu);
	if (ex->started)
		pthread_join(ex->tid, NULL);
	nn_net_destroy(ex->net);
	for (int v = 0; v < ex->nlive; v++)
		live_free(&ex->live[v]);
	nn_backend_close(ex->b);
	fd_decoder_destroy(ex->dec);
	free_slots(ex);
	free(ex->in);
	free(ex->out);
	free(ex->puts);
	free(ex->jobs);
	free(ex->rgbs);
	free(ex->take);
	pthread_mutex_destroy(&ex->mu);
	pthread_cond_destroy(&ex->cv_exec);
	pthread_cond_destroy(&ex->cv_decode);
	pthread_cond_destroy(&ex->cv_space);
	pthread_cond_destroy(&ex->cv_task);
	free(ex);
}

int fd_executor_submit(fd_executor *ex, fd_job *job, int wait_ms)
{
	int rc = 0;
	int64_t until = vr_deadline_ms(wait_ms > 0 ? wait_ms : 0);
	pthread_mutex_lock(&ex->mu);
	/* Streams leave a quarter of the queue to unary calls, but may always
	 * fill a batch. */
	int stream_limit = ex->cap - ex->cap / 4 > ex->batch ? ex->cap - ex->cap / 4 : ex->batch;
	uint64_t limit = (uint64_t)(wait_ms > 0 ? stream_limit : ex->cap);
	while (!ex->stop_decode && ex->tail - ex->head >= limit) {
		if (wait_ms <= 0 || vr_cond_wait_until(&ex->cv_space, &ex->mu, until))
			break;
	}
	if (ex->stop_decode) {
		rc = VR_ESHUTDOWN;
	} else if (ex->tail - ex->head >= limit) {
		rc = VR_EFULL;
		ex->stats.full++;
	} else {
		struct slot *s = slot_at(ex, ex->tail++);
		s->job = job;
		s->state = SLOT_QUEUED;
		s->ok = 0;
		pthread_cond_signal(&ex->cv_decode);
	}
	pthread_mutex_unlock(&ex->mu);
	return rc;
}

int fd_executor_queue_cap(const fd_executor *ex)
{
	return ex->cap;
}

int fd_executor_live(fd_executor *ex, fd_model_info out[FD_MAX_LIVE])
{
	pthread_mutex_lock(&ex->mu);
	int n = ex->nlive;
	for (int v = 0; v < n; v++)
		out[v] = ex->live[v].info;
	pthread_mutex_unlock(&ex->mu);
	return n;
}

int fd_executor_versions(fd_executor *ex, uint32_t *active, uint32_t live[FD_MAX_LIVE])
{
	pthread_mutex_lock(&ex->mu);
	int n = ex->nlive;
	*active = ex->model.version;
	for (int v = 0; v < n; v++)
		live[v] = ex->live[v].info.version;
	pthread_mutex_unlock(&ex->mu);
	return n;
}

int fd_executor_batch(fd_executor *ex)
{
	pthread_mutex_lock(&ex->mu);
	int batch = ex->batch;
	pthread_mutex_unlock(&ex->mu);
	return batch;
}

void fd_executor_model(fd_executor *ex, fd_model_info *out)
{
	pthread_mutex_lock(&ex->mu);
	*out = ex->model;
	pthread_mutex_unlock(&ex->mu);
}

const char *fd_executor_backend_name(const fd_executor *ex)
{
	return ex->backend_name;
}

const char *fd_executor_device(const fd_executor *ex)
{
	return ex->device;
}

void fd_executor_stats(fd_executor *ex, fd_exec_stats *out)
{
	pthread_mutex_lock(&ex->mu);
	*out = ex->stats;
	out->queued = ex->tail - ex->head;
	pthread_mutex_unlock(&ex->mu);
}

int fd_executor_call(fd_executor *ex, fd_task_fn fn, void *arg)
{
	struct task t = { .fn = fn, .arg = arg };
	pthread_mutex_lock(&ex->mu);
	if (ex->stop || ex->stop_decode) {
		pthread_mutex_unlock(&ex->mu);
		return VR_ESHUTDOWN;
	}
	*ex->tasks_tail = &t;
	ex->tasks_tail = &t.next;
	pthread_cond_broadcast(&ex->cv_exec);
	while (!t.done)
		pthread_cond_wait(&ex->cv_task, &ex->mu);
	pthread_mutex_unlock(&ex->mu);
	return t.rc;
}

nn_backend *fd_executor_backend(fd_executor *ex)
{
	return ex->b;
}

nn_net *fd_executor_net(fd_executor *ex)
{
	return ex->net;
}

fd_fstore *fd_executor_fstore(fd_executor *ex)
{
	return ex->fs;
}

/* ---- re-embedding ------------------------------------------------------------ */

struct reembed {
	fd_executor *ex;
	nn_net *net;
	fd_model_info model;
	int batch, n;
	size_t image_bytes;
	uint8_t *rgb;           /* batch images of S×S×3 */
	const uint8_t **rgbs;
	float *out;
	char (*ids)[FD_MAX_ID + 1];
	fd_revec *v;
	uint64_t embedded;
	int (*stop)(void *arg); /* the caller's, or NULL */
	void *stop_arg;
	char err[256];
};

/* Reads up to r->batch items after *after (updated) into r: ids, seqs and
 * decoded images. only_missing: just those without a vector of r's
 * version. Returns 0 (r->n set) or an error. */
static int read_chunk(struct reembed *r, fd_decoder *dec, char *after, int only_missing)
{
	fd_fstore *fs = r->ex->fs;
	vr_txn *txn;
	fd_item it;
	fd_vec vec;
	int rc = vr_store_read_begin(fd_fstore_store(fs), &txn);
	r->n = 0;
	while (!rc && r->n < r->batch) {
		if ((rc = fd_fstore_item_next(fs, txn, after, &it)))
			break;
		memcpy(after, it.item_id, it.id_len);
		after[it.id_len] = 0;
		if (only_missing) {
			rc = fd_fstore_vec_num(fs, txn, r->model.version, it.num, &vec);
			if (!rc)
				continue;
			if (rc != VR_ENOTFOUND)
				break;
		}
		char why[200];
		uint8_t *img = r->rgb + (size_t)r->n * r->image_bytes;
		if ((rc = fd_decode(dec, it.image, it.image_len, (int)r->model.input_size, 0, img, NULL,
				    why, sizeof why))) {
			snprintf(r->err, sizeof r->err, "item %s: its stored image does not decode: %s",
				 after, why);
			break;
		}
		memcpy(r->ids[r->n], after, it.id_len + 1);
		r->v[r->n] = (fd_revec){ .item_id = r->ids[r->n], .seq = it.seq };
		r->rgbs[r->n] = img;
		r->n++;
	}
	vr_store_read_end(txn);
	return rc == VR_ENOTFOUND ? 0 : rc;
}

/* Executor thread: embeds and stores the chunk in r. */
static int embed_chunk(fd_executor *ex, struct reembed *r)
{
	int rc = embed(r->net, r->rgbs, r->n, r->out, r->err, sizeof r->err);
	if (rc)
		return rc;
	for (int i = 0; i < r->n; i++)
		r->v[i].vector = r->out + (size_t)i * r->model.dims;
	if ((rc = fd_fstore_put_vectors(ex->fs, r->model.version, r->model.dims, r->v, (size_t)r->n))) {
		snprintf(r->err, sizeof r->err, "storing vectors of version %u: %s", r->model.version,
			 vr_strerror(rc));
		return rc;
	}
	for (int i = 0; i < r->n; i++)
		r->embedded += (uint64_t)r->v[i].stored;
	return 0;
}

/* A chunk of the pass. The net asks the caller's stop between its layers
 * (the caller waits meanwhile, so a stop that reads a gRPC call is lent
 * it, rpc.h): a cancelled DVBPR Finish waited 1.6 s for its chunk of 32
 * (MobileNetV2 at 160 px on the reference kernels, two quiet cores: README
 * issue 21), and a cancel should not wait for a whole chunk. A stopped
 * chunk stores nothing.
 * The stop is taken off again before the net can serve ingest (live,
 * switch) or the caller's call is gone. */
static int chunk_task(fd_executor *ex, void *arg)
{
	struct reembed *r = arg;
	nn_net_set_stop(r->net, r->stop, r->stop_arg);
	int rc = embed_chunk(ex, r);
	nn_net_set_stop(r->net, NULL, NULL);
	return rc;
}

/* Executor thread: embeds what was added or replaced since r's pass read
 * it. Nothing is admitted meanwhile, so afterwards every item has its
 * vector of r's version. */
static int catch_up(fd_executor *ex, struct reembed *r)
{
	char after[FD_MAX_ID + 1] = "";
	int rc;
	do {
		if ((rc = read_chunk(r, ex->dec, after, 1)) || (r->n && (rc = embed_chunk(ex, r))))
			return rc;
	} while (r->n);
	return 0;
}

/* Executor thread: makes r's net a live one (executor.h), dropping the
 * oldest when FD_MAX_LIVE are live already. */
static int live_task(fd_executor *ex, void *arg)
{
	struct reembed *r = arg;
	struct live l, old = { 0 };
	uint32_t versions[FD_MAX_LIVE];
	size_t n = 0;
	int rc = catch_up(ex, r);
	if (rc)
		return rc;
	if ((rc = live_make(&l, NULL, &r->model, ex->batch))) {
		snprintf(r->err, sizeof r->err, "allocating the live version's buffers");
		return rc;
	}
	int drop = ex->nlive == FD_MAX_LIVE;
	for (int v = drop; v < ex->nlive; v++)
		versions[n++] = ex->live[v].info.version;
	versions[n++] = r->model.version;
	if ((rc = fd_fstore_live_set(ex->fs, versions, n))) {
		snprintf(r->err, sizeof r->err, "recording version %u as live: %s", r->model.version,
			 vr_strerror(rc));
		live_free(&l);
		return rc;
	}
	l.net = r->net;
	pthread_mutex_lock(&ex->mu);
	if (drop) {
		old = ex->live[0];
		memmove(&ex->live[0], &ex->live[1], sizeof ex->live[0] * (FD_MAX_LIVE - 1));
		ex->nlive--;
	}
	ex->live[ex->nlive++] = l;
	pthread_mutex_unlock(&ex->mu);
	if (drop)
		VR_INFO("model version %u is no longer live (at most %d are)", old.info.version,
			FD_MAX_LIVE);
	live_free(&old);
	VR_INFO("model version %u (%s, %u dims) is live: new items get its vectors too",
		r->model.version, r->model.arch, r->model.dims);
	return 0;
}

/* Executor thread: makes r's net the active one. Nothing is admitted
 * while this runs, so after the catch-up every item has its vector. */
static int switch_task(fd_executor *ex, void *arg)
{
	struct reembed *r = arg;
	int S = (int)r->model.input_size, rc;
	uint8_t *in = NULL, **rgbs = NULL;
	float *out = NULL;
	uint64_t seq = 0, missing = 0;
	if ((rc = catch_up(ex, r)))
		return rc;

	int batch = ex->batch < nn_net_max_batch(r->net) ? ex->batch : nn_net_max_batch(r->net);
	if ((rc = alloc_batches(batch, S, r->model.dims, &in, &out)))
		goto fail;
	if (S != ex->S) {
		if (!(rgbs = calloc((size_t)ex->cap, sizeof *rgbs))) {
			rc = VR_ENOMEM;
			goto fail;
		}
		for (int i = 0; i < ex->cap; i++)
			if (!(rgbs[i] = malloc((size_t)S * S * 3))) {
				rc = VR_ENOMEM;
				goto fail;
			}
	}
	if ((rc = fd_fstore_switch(ex->fs, r->model.version, &seq, &missing))) {
		snprintf(r->err, sizeof r->err, "switching to version %u: %s", r->model.version,
			 rc == VR_ESTATE ? "items still lack its vector" : vr_strerror(rc));
		goto fail;
	}
	pthread_mutex_lock(&ex->mu);
	while (ex->decoding)
		pthread_cond_wait(&ex->cv_exec, &ex->mu);
	if (rgbs) {
		for (int i = 0; i < ex->cap; i++) {
			free(ex->slots[i].rgb);
			ex->slots[i].rgb = rgbs[i];
			rgbs[i] = NULL;
		}
		for (uint64_t i = ex->head; i < ex->tail; i++)
			slot_at(ex, i)->state = SLOT_QUEUED;
		ex->decode_next = ex->head;
		pthread_cond_broadcast(&ex->cv_decode);
	}
	ex->S = S;
	ex->dims = r->model.dims;
	ex->model = r->model;
	ex->batch = batch;
	pthread_mutex_unlock(&ex->mu);
	nn_net_destroy(ex->net);
	ex->net = r->net;
	free(ex->in);
	free(ex->out);
	ex->in = in;
	ex->out = out;
	in = NULL;
	out = NULL;
	VR_INFO("model version %u (%s, layer %s, %u dims) is active from change %llu",
		r->model.version, r->model.arch, r->model.layer, r->model.dims,
		(unsigned long long)seq);
fail:
	for (int i = 0; rgbs && i < ex->cap; i++)
		free(rgbs[i]);
	free(rgbs);
	free(in);
	free(out);
	if (rc && !r->err[0])
		snprintf(r->err, sizeof r->err, "switching to version %u: %s", r->model.version,
			 vr_strerror(rc));
	return rc;
}

int fd_executor_reembed(fd_executor *ex, nn_net *net, const fd_model_info *model, int mode,
			int (*stop)(void *arg), void *stop_arg, uint64_t *embedded, char *err,
			size_t errlen)
{
	fd_decoder *dec = NULL;
	char after[FD_MAX_ID + 1] = "";
	struct reembed r = { .ex = ex, .net = net, .model = *model, .stop = stop,
			     .stop_arg = stop_arg };
	int max = nn_net_max_batch(net);
	pthread_mutex_lock(&ex->mu);
	r.batch = ex->batch < max ? ex->batch : max;
	pthread_mutex_unlock(&ex->mu);
	r.image_bytes = (size_t)model->input_size * model->input_size * 3;
	int rc = VR_ENOMEM;
	if (!(r.rgb = malloc(r.image_bytes * (size_t)r.batch)) ||
	    !(r.rgbs = calloc((size_t)r.batch, sizeof *r.rgbs)) ||
	    !(r.ids = calloc((size_t)r.batch, sizeof *r.ids)) ||
	    !(r.v = calloc((size_t)r.batch, sizeof *r.v)) ||
	    (rc = alloc_batches(r.batch, (int)model->input_size, model->dims, NULL, &r.out)) ||
	    (rc = fd_decoder_create(&dec, &stored_limits))) {
		snprintf(r.err, sizeof r.err, "allocating the re-embedding buffers: %s", vr_strerror(rc));
		goto leave;
	}
	for (;;) {
		if (stop && stop(stop_arg))
			rc = VR_ECANCELLED;
		else if (!(rc = read_chunk(&r, dec, after, 0)) && r.n)
			rc = fd_executor_call(ex, chunk_task, &r);
		if (rc == VR_ECANCELLED) /* before a chunk, or within one (chunk_task) */
			snprintf(r.err, sizeof r.err, "stopped after %llu items were embedded",
				 (unsigned long long)r.embedded);
		if (rc || !r.n)
			break;
	}
	if (!rc && mode == FD_REEMBED_SWITCH)
		rc = fd_executor_call(ex, switch_task, &r);
	else if (!rc && mode == FD_REEMBED_LIVE)
		rc = fd_executor_call(ex, live_task, &r);
leave:
	if (rc && !r.err[0])
		snprintf(r.err, sizeof r.err, "%s", vr_strerror(rc));
	if (err && errlen)
		snprintf(err, errlen, "%s", r.err);
	if (embedded)
		*embedded = r.embedded;
	fd_decoder_destroy(dec);
	free(r.rgb);
	free(r.rgbs);
	free(r.ids);
	free(r.v);
	free(r.out);
	return rc;
}
