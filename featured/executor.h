/* executor: featured's image pipeline — decode pool, bounded queue, and the
 * one thread that owns the network and commits each micro-batch.
 *
 * A request is an fd_job (one item's JPEG). fd_executor_submit admits it to
 * a bounded queue; a decode thread turns it into an S×S RGB image; the
 * executor thread takes up to `batch` decoded images (or what is there
 * after `batch_wait_ms`), runs the active model's net on them, stores the
 * batch's images, vectors and changes in ONE LMDB transaction and only then
 * completes each job, so every ack follows its commit. Work that needs the
 * network (DVBPR training, re-embedding) runs on the same thread through
 * fd_executor_call.
 *
 * Thread-safety: every function may be called from any thread except where
 * it says "executor thread only" (the functions a task uses). */
#ifndef FD_EXECUTOR_H
#define FD_EXECUTOR_H

#include "deadline.h"
#include "decode.h"
#include "fstore.h"
#include "models.h"
#include "nn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Where a submitter sleeps until its jobs are done; one can serve many
 * jobs (a PutItems stream). fd_waiter_init / _destroy. */
typedef struct fd_waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
} fd_waiter;

void fd_waiter_init(fd_waiter *w);
void fd_waiter_destroy(fd_waiter *w);

/* One image to embed and store. The submitter owns it and the bytes it
 * points to until done is set; it fills the "in" fields and zeroes the
 * rest (fd_job_init). */
typedef struct fd_job {
	/* in */
	const char *item_id;   /* checked with vr_id_check (ids.h) */
	const uint8_t *image;  /* JPEG */
	size_t image_len;
	int64_t deadline_ms;   /* vr_now_ms scale (deadline.h); 0: none */
	float *vector;         /* NULL, or room for vector_cap floats: gets the vector */
	size_t vector_cap;
	fd_waiter *waiter;
	atomic_int cancelled;  /* set by the submitter any time: skip it if not embedded yet */
	/* out, valid once done */
	int rc;                /* 0, VR_EINVAL/VR_ETOOBIG (bad image: why says what),
				* VR_ECANCELLED, VR_ETIMEDOUT (skipped before compute),
				* VR_ESHUTDOWN, VR_ESTATE (vector_cap too small: the
				* model changed), or a network or store error */
	char why[256];         /* the reason when rc != 0 */
	uint64_t seq;          /* its change */
	uint32_t version, dims;
	int kind;              /* FD_ADDED or FD_REPLACED */
	int done;              /* under waiter->mu */
} fd_job;

/* Clears job and sets its inputs. */
void fd_job_init(fd_job *job, const char *item_id, const void *image, size_t image_len,
		 int64_t deadline_ms, fd_waiter *waiter);
/* Waits up to timeout_ms for job to be done. Returns 1 if done, else 0. */
int fd_job_wait(fd_job *job, int timeout_ms);

typedef struct fd_executor_opts {
	const char *backend;      /* "auto", "cuda", "onednn", "cpu-ref", "cpu"; NULL: "auto" */
	const char *precision;    /* nn_precision_parse's names; NULL: "fp32" */
	const char *data_dir;     /* where models/ lives */
	fd_model_spec spec;       /* the model to create on a fresh data directory */
	int batch;                /* images per network call; 0: 16 */
	int batch_wait_ms;        /* how long a partial batch waits for more; < 0: 0 */
	int decode_threads;       /* 0: 1 on two or fewer CPUs, else 2; the network
				   * gets the other CPUs (executor.c's cpu_split) */
	int queue;                /* images admitted and not yet taken by the network;
				   * 0: 4 × batch; batch is lowered to fit */
	fd_decode_limits limits;
} fd_executor_opts;

/* Counters since start (fd_executor_stats); times in seconds. */
typedef struct fd_exec_stats {
	uint64_t images;          /* embedded and stored */
	uint64_t decoded;         /* JPEGs decoded (re-embedding's own decodes not counted) */
	uint64_t queued;          /* now: images admitted and not yet taken by the network */
	uint64_t batches;
	uint64_t refused;         /* bad images */
	uint64_t skipped;         /* cancelled or past their deadline */
	uint64_t full;            /* submissions refused for a full queue */
	double decode_s;          /* summed over decode threads */
	double copy_s;            /* decoded bytes from the slots into the batch */
	double network_s, store_s;
} fd_exec_stats;

typedef struct fd_executor fd_executor;

/* Call first in main, before any other thread exists: OpenMP reads
 * OMP_WAIT_POLICY once, when it loads, so to make the network's team wait
 * passively (executor.c's CPU split) this sets OMP_WAIT_POLICY=passive
 * and re-executes the program with the same arguments, unless the
 * environment names a policy already (then it returns at once). */
void fd_executor_exec_env(char **argv);

/* Starts the decode threads and the executor thread, which opens the
 * backend and the active model (fd_models_setup: creating version 1 on a
 * fresh data directory). Returns when the model is ready. err gets the
 * cause on failure. Errors: those of nn_backend_open and fd_models_setup,
 * -errno (threads), VR_ENOMEM, VR_EINVAL (options out of range). */
int fd_executor_create(fd_executor **out, fd_fstore *fs, const fd_executor_opts *opts,
		       char *err, size_t errlen);
/* Stops admission, completes anything still queued with VR_ESHUTDOWN,
 * joins every thread and frees the network and backend. Call after the
 * server stopped (no submitter left). NULL is allowed. */
void fd_executor_destroy(fd_executor *ex);

/* Admits job. wait_ms 0: refuse at once when the queue is full (unary
 * calls); > 0: wait up to that long for room (streams, which may fill
 * only three quarters of the queue, or one batch if more, so unary calls
 * keep some room).
 * Returns 0 (the job will be done exactly once), VR_EFULL, VR_ESHUTDOWN. */
int fd_executor_submit(fd_executor *ex, fd_job *job, int wait_ms);
/* The queue's capacity in images. */
int fd_executor_queue_cap(const fd_executor *ex);

/* The active model (a copy; it changes only at a switch). */
void fd_executor_model(fd_executor *ex, fd_model_info *out);
/* The backend's name ("cpu", "cuda") and device line; fixed at start. */
const char *fd_executor_backend_name(const fd_executor *ex);
const char *fd_executor_device(const fd_executor *ex);
void fd_executor_stats(fd_executor *ex, fd_exec_stats *out);

/* Runs fn(ex, arg) on the executor thread between batches and returns its
 * rc once it has returned. Never from the executor thread itself. Errors:
 * fn's, VR_ESHUTDOWN when the executor is stopping. */
typedef int (*fd_task_fn)(fd_executor *ex, void *arg);
int fd_executor_call(fd_executor *ex, fd_task_fn fn, void *arg);

/* Executor thread only (inside a task): the backend every net must live
 * on, and the active model's net. */
nn_backend *fd_executor_backend(fd_executor *ex);
nn_net *fd_executor_net(fd_executor *ex);
fd_fstore *fd_executor_fstore(fd_executor *ex);

/* Re-embeds every stored item with net (made on fd_executor_backend in a
 * task, for model version model->version, a row fd_model_add wrote) and
 * stores the vectors under that version. The caller's thread reads and
 * decodes the images in chunks of the batch size; the executor thread runs
 * the net and writes each chunk between ingest batches, so ingestion goes
 * on meanwhile. Then, by mode, on the executor thread, after embedding
 * whatever was added or replaced meanwhile:
 * - FD_REEMBED_SWITCH: switches the active version in one transaction
 *   (fd_fstore_switch: MODEL_SWITCHED change) and from then on ingests
 *   with net (the old net is freed);
 * - FD_REEMBED_LIVE: makes the version live: the active version stays
 *   (GetVectors' default, VBPR's features), and every item put from then
 *   on is embedded with the active net AND each live one, in the same
 *   transaction, with an FD_REEMBEDDED change of the live version after
 *   the item's own (fd_fstore_put_items_more), so whoever serves that
 *   version (rankd's DVBPR model) ranks new items at once. At most
 *   FD_MAX_LIVE versions are live; the oldest then stops being live (its
 *   vectors stay). The list persists (fd_fstore_live_set) and is reopened
 *   at start;
 * - FD_REEMBED_STORE: nothing more.
 * With SWITCH or LIVE the executor owns net after success: the caller must
 * not touch it. Never from the executor thread. *embedded (may be NULL)
 * counts the vectors written. stop (may be NULL), called with stop_arg on
 * the caller's thread before each chunk and on the executor thread between
 * the layers of each chunk's forward (nn_net_set_stop; the caller waits
 * meanwhile), ends the pass when it returns nonzero, within one layer:
 * VR_ECANCELLED, the version neither switched to nor live (the vectors of
 * the chunks done stay, the stopped chunk's are not written), the
 * executor as before. stop must be cheap and safe to call from either
 * thread. Errors: those of the store, the net
 * (VR_EDEVICE ...), VR_ENOMEM, VR_ESHUTDOWN, VR_ECANCELLED; err gets the
 * cause. */
enum { FD_REEMBED_STORE = 0, FD_REEMBED_SWITCH = 1, FD_REEMBED_LIVE = 2 };
int fd_executor_reembed(fd_executor *ex, nn_net *net, const fd_model_info *model, int mode,
			int (*stop)(void *arg), void *stop_arg, uint64_t *embedded, char *err,
			size_t errlen);

/* The live versions (at most FD_MAX_LIVE, oldest first) into out; returns
 * how many. */
int fd_executor_live(fd_executor *ex, fd_model_info out[FD_MAX_LIVE]);
/* The active version into *active and the live ones (oldest first) into
 * live, under one lock; returns how many are live. */
int fd_executor_versions(fd_executor *ex, uint32_t *active, uint32_t live[FD_MAX_LIVE]);
/* Images per network call now (a switch may lower it): the max_batch a
 * net handed to fd_executor_reembed should have. */
int fd_executor_batch(fd_executor *ex);

#endif
