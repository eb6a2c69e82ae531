/* training_priv.h: what the Train handler (training.c) and the runs behind
 * it (train_mf.c: BPR and VBPR through rk_trainer_run, train_dvbpr.c: DVBPR
 * through featured's TrainVisual) share: the job, its progress queue and
 * the steps every run takes (featured's vectors, the interactions and
 * their split, serving the trained model). Private to those three files. */
#ifndef RK_TRAINING_PRIV_H
#define RK_TRAINING_PRIV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "dvbpr.h"
#include "service.h"
#include "trainer.h"

#define QUEUE 64            /* progress messages waiting to be sent */

/* DVBPR's settings beyond rk_train_config (TrainRequest fields 16-23, 27). */
struct dvbpr_settings {
	char arch[32];
	uint32_t input_size;
	float cnn_lr, cnn_wd;
	int no_latent, resume;
	uint32_t checkpoint_every;
	char trunk_layer[32];
	uint32_t head_width;
	int head_norm;              /* with head_width: φ L2-normalised */
};

struct progress {
	rk_progress p;
	const char *state;
	int done;
	uint64_t version;
};

struct rk_train_job {
	rk_service *svc;
	/* settings (fixed before the thread starts) */
	enum rk_model_kind kind;
	uint32_t k, k2;
	int use_all;
	uint32_t feature_version;  /* VBPR: featured's version to train on; 0 = active */
	rk_train_config cfg;
	struct dvbpr_settings dv;  /* DVBPR only */
	pthread_t tid;
	/* shared with the call's thread, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	rk_trainer *trainer;   /* while rk_trainer_run runs */
	rk_dvbpr *dvbpr;       /* while a DVBPR run's TrainVisual session is open */
	vr_ccall **adopting;   /* while shards adopt a DVBPR version: each shard's
	                        * AdoptModel call (NULL: not in flight) */
	size_t n_adopting;
	int cancel, finished;
	struct progress q[QUEUE];
	unsigned head, n;
	uint32_t epoch;
	int code;              /* grpc status of the run */
	char msg[512];
};

/* featured's vectors as a run fetches them (rk__fetch_vectors). */
struct fetch {
	struct rk_train_job *job;
	float *feats;         /* rows × dims, row i = item index i */
	size_t rows, cap;     /* rows filled (max index + 1), rows allocated */
	uint32_t dims;
	uint64_t vectors;
	/* Each featured shard's feed position before the fetch (rankd's
	 * feeds, service.h), once have_base. */
	int have_base;
	uint64_t base_seq[VR_SHARDS_MAX];
};

/* The interactions a run trains on (rk__load_interactions). on points
 * into the struct: it stays where it was loaded. */
struct split {
	rk_csr all, train, fit;
	uint32_t *test, *valid;  /* n_users + 1 each; NULL with use_all */
	const rk_csr *on;        /* the part to fit: &fit, or &all with use_all */
};

/* training.c: the job's progress queue and its outcome. */
const char *rk__kind_name(int kind);
/* Queues p for the call's thread (the newest QUEUE are kept). */
void rk__push(struct rk_train_job *job, const struct progress *p);
/* 1 once the call asked the run to stop. */
int rk__cancelled(struct rk_train_job *job);
/* Sets the run's status code and message; returns code. */
int rk__fail(struct rk_train_job *job, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* An rk_progress_fn: queues and logs an epoch's progress; nonzero once
 * cancelled. */
int rk__on_progress(void *ctx, const rk_progress *p);

static inline int64_t rk__unix_now(void)
{
	return (int64_t)time(NULL);
}

/* train_mf.c: the steps of every run (documented there), and the BPR/VBPR
 * run. Each returns GRPC_STATUS_OK or the code, with the reason in
 * job->msg. */
int rk__fetch_vectors(struct rk_train_job *job, struct fetch *f, uint32_t want,
		      uint32_t *version);
int rk__load_interactions(struct rk_train_job *job, struct split *sp);
void rk__split_free(struct split *sp);
int rk__pad_vectors(struct rk_train_job *job, struct fetch *f, uint32_t n_items);
int rk__serve_model(struct rk_train_job *job, rk_model **modelp, const float *feats,
		    const float *scale, uint32_t n_rows, uint32_t fversion, rk_csr *all,
		    const rk_csr *on, const uint64_t *base_seq, uint64_t *version);
int rk__run_mf(struct rk_train_job *job);

/* train_dvbpr.c: the DVBPR run. */
int rk__run_dvbpr(struct rk_train_job *job);

#endif
