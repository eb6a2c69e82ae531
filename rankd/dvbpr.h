/* dvbpr: rankd's half of DVBPR's split training (DESIGN.md section 2), the
 * client of featured's TrainVisual stream (featured/train_visual.h has the
 * protocol and the loss).
 *
 * A session is one open TrainVisual call. rk_dvbpr_step takes n triples
 * (user, positive, negative indices into the model), computes θ_u and the
 * non-visual margin β_i − β_j + γ_u·(γ_i − γ_j) per triple
 * (rk_model_dvbpr_margins), sends them with the item ids, waits for
 * featured's loss, g and dL/dθ_u, and applies them to the model: by Adam
 * over the whole arena as the tutorial's torch.optim.Adam over its
 * embeddings (rk_model_dvbpr_grad, then optim.h's step with λ as weight
 * decay on every parameter), or by SGD on the rows the triples touch
 * (rk_model_dvbpr_update, λ on those rows). One round trip per step. Step numbers run 1, 2, ... and
 * are checked on both ends, so a restarted featured is detected (its
 * status, FAILED_PRECONDITION or UNAVAILABLE, comes back in st).
 *
 * Not thread-safe: one thread drives a session (rk_dvbpr_cancel excepted). */
#ifndef RK_DVBPR_H
#define RK_DVBPR_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "optim.h"
#include "rpc.h"
#include "trainer.h"

typedef struct rk_dvbpr_opts {
	const char *arch;           /* "alexnet", "cnnf", "small" */
	uint32_t input_size;        /* 0: the arch's default */
	float cnn_lr, cnn_wd;       /* featured's Adam */
	uint64_t seed;              /* the net's init and dropout */
	const char *session_id;     /* [A-Za-z0-9._-]{1,64} */
	int resume;                 /* continue session_id from featured's checkpoint */
	uint32_t checkpoint_every;  /* steps; 0: featured's default */
	/* item index -> id (n_items entries, NUL-terminated), as the model's
	 * item indices; must outlive the session */
	const char *const *item_ids;
	uint32_t n_items;
	uint32_t max_batch;         /* most triples per step (<= 128; <= 1024 with trunk_layer) */
	const char *trunk_layer;    /* NULL or "": the whole net; else featured's trunk cut */
	uint32_t head_width;        /* with trunk_layer: conv1x1 head width, 0: fine-tune */
	int head_norm;              /* with head_width: the head ends with an L2 normalisation */
	int all_shards;             /* featured is the trainer shard: cache every shard's items */
	enum rk_optim optim;        /* rankd's parameters: Adam (dense) or SGD */
	rk_adam_opts adam;          /* Adam's β1, β2, ε */
} rk_dvbpr_opts;

/* Adam's state over the model's arena, for checkpoints: its moments (the
 * model's n_params floats each) and steps taken. */
typedef struct rk_dvbpr_adam {
	float *m, *v;
	uint64_t t;
} rk_dvbpr_adam;

/* Time spent per part, summed over steps (seconds). */
typedef struct rk_dvbpr_stats {
	uint64_t steps;
	double rankd_s;             /* margins, packing, update */
	double network_s;           /* featured's network (its network_seconds) */
	double round_trip_s;        /* send to reply, less featured's network */
} rk_dvbpr_stats;

typedef struct rk_dvbpr rk_dvbpr;

/* Opens the stream on ch and starts the session for model (whose K' is
 * the net's K; with Adam its moments are sized for model's arena). *step gets the step featured stands at (0 new; a
 * checkpoint's on resume). Returns 0, VR_ENOMEM, VR_EINVAL (options), or
 * VR_ERPC with st filled (featured's refusal, or unreachable). */
int rk_dvbpr_open(rk_dvbpr **out, vr_channel *ch, const rk_model *model, const rk_dvbpr_opts *o,
		  uint64_t *step, vr_status *st);
/* rk_dvbpr_open in two parts, so that the session can be handed to
 * whoever may cancel it before its Start, the longest round trip
 * (featured reads every image and, with a trunk, runs the trunk pass):
 * create checks o and allocates (VR_EINVAL, VR_ENOMEM; o's strings must
 * outlive start); start opens the stream and starts the session (errors
 * as rk_dvbpr_open; after one, close the session). */
int rk_dvbpr_create(rk_dvbpr **out, const rk_model *model, const rk_dvbpr_opts *o);
int rk_dvbpr_start(rk_dvbpr *d, vr_channel *ch, uint64_t *step, vr_status *st);

/* Cancels the session's call from any thread, at any time before
 * rk_dvbpr_close: the round trip in progress (or the next one, or start)
 * fails at once with VR_ERPC, st CANCELLED, and featured stops its side
 * within one batch. The session is then unusable: close it. */
void rk_dvbpr_cancel(rk_dvbpr *d);

/* One step over n <= max_batch triples; *loss (may be NULL) gets the sum
 * of -ln σ(x_uij). Returns 0, VR_EINVAL (n), VR_ECORRUPT (featured's reply
 * does not fit: st says how), or VR_ERPC with st filled. After an error
 * the session is unusable: close it. VR_EINVAL also when model's sizes
 * are not those it had at open. */
int rk_dvbpr_step(rk_dvbpr *d, rk_model *model, const uint32_t *u, const uint32_t *i,
		  const uint32_t *j, size_t n, float lr, float lambda, double *loss, vr_status *st);

/* φ of n items (indices) with the current net, evaluation mode, into phi
 * (n × K'), in chunks of max_batch; trains nothing. Errors as step. */
int rk_dvbpr_embed(rk_dvbpr *d, const uint32_t *items, size_t n, float *phi, vr_status *st);

/* Has featured keep the net as it is now as the session's best (it
 * replaces the one kept before); *step (may be NULL) gets the step it is
 * of, the session's. Errors as step. */
int rk_dvbpr_mark_best(rk_dvbpr *d, uint64_t *step, vr_status *st);

/* Ends the session: with reembed featured stores the net as a new model
 * version and re-embeds every item with it; *version gets it. from_step:
 * the step of the net rk_dvbpr_mark_best kept, to store that net instead
 * of the current one (0: the current one). Errors as step. */
int rk_dvbpr_finish(rk_dvbpr *d, int reembed, uint64_t from_step, uint32_t *version,
		    uint64_t *embedded, vr_status *st);

/* Adam's state (NULL with SGD), which the caller may read or restore
 * between steps. */
rk_dvbpr_adam *rk_dvbpr_adam_state(rk_dvbpr *d);

/* The step the session is at, and its time split. */
uint64_t rk_dvbpr_step_no(const rk_dvbpr *d);
void rk_dvbpr_stats_get(const rk_dvbpr *d, rk_dvbpr_stats *out);

/* Cancels the call if still open and frees the session. NULL is allowed. */
void rk_dvbpr_close(rk_dvbpr *d);

#endif
