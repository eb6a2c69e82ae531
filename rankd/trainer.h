/* trainer: multi-threaded CPU training of BPR-MF and VBPR (BPR-OPT,
 * DESIGN.md section 1) with validation, learning-rate decay on plateau,
 * early stopping and the best model kept.
 *
 * Two algorithms:
 *   RK_ALGO_HOGWILD    lock-free SGD: every thread samples triples and
 *                      updates the rows a triple touches at once, without
 *                      locks (Niu et al.'s Hogwild). The L2 term applies to
 *                      the rows a triple touches. The fastest for BPR-MF.
 *   RK_ALGO_MINIBATCH  minibatches of `batch` triples, loss = the SUM of
 *                      -ln σ(x_uij) over the batch (as the tutorial's
 *                      BCEWithLogitsLoss(reduction="sum")), L2 added to
 *                      every parameter's gradient each step (PyTorch's
 *                      weight_decay), SGD or Adam. Deterministic for a
 *                      seed, for any thread count.
 * VBPR's visual terms dominate; a minibatch forms them from the DISTINCT
 * items or users it touches, never per triple, by one of two exact
 * factorisations, the cheaper for the step (rk_vis_path AUTO):
 *   item side  P = F_I·[E|β'] for the distinct items I (one GEMM; their
 *              feature rows gathered when under 3/4 of the catalogue), and
 *              d[E|β'] = F_Iᵀ·G with G_i = Σ ±g·[θ_u, 1] over i's triples:
 *              2·|I|·F·(K'+1) multiply-adds.
 *   user side  W = [Θ_U|1]·[E|β']ᵀ for the distinct users U (one GEMM),
 *              x_vis(u,i) = W_u·f_i once per distinct (u, i) pair,
 *              H_u = Σ_i c_ui f_i (c_ui = Σ ∂loss/∂x_ui), then
 *              d[E|β'] = Hᵀ·[Θ_U|1] and dΘ_U = H·E (two GEMMs):
 *              3·|U|·F·(K'+1) plus 2·F per pair. On Wikimedia-shaped data
 *              (1,079 users, 9,633 items) this is several times less work.
 * Measured on the 2 cores here (tests/bench_train/run_bench.sh): Hogwild is
 * fastest for BPR-MF; for VBPR (F = 2048, K' = 100) minibatches of 42,000
 * are about 25x faster than Hogwild on one thread, because every Hogwild
 * triple makes two passes over the F × K' matrix E.
 *
 * Validation: each user's held-out item (valid_item[u], RK_NONE for none)
 * against val_negatives items drawn once at creation (uniform over the
 * items u has not interacted with in train; 0 = all of them): AUC per user
 * by metrics.h's one rule (vr_auc: ties count half), averaged. Use an item that is not in train: e.g.
 * split the data with rk_split_last (test items), then split the train part
 * again for validation items, so the test items stay unseen.
 *
 * Epoch: epoch_triples triples (default: the number of training pairs,
 * at least 100,000 so that small data sets do not stop on noise), then
 * validation. lr *= lr_factor after lr_patience epochs without an AUC
 * gain of min_delta; training stops after patience such epochs; the model
 * holds the best epoch's parameters at the end.
 *
 * Items with no training interaction (not in the sampler's negative pool)
 * get β_i = γ_i = 0 when the trainer is created and are never updated, so
 * they are ranked by their visual terms only (cold).
 *
 * Threads: the trainer owns `threads` threads (the caller's counts as one)
 * for its own loops; GEMMs go through OpenBLAS and its own threads, while
 * the trainer's threads wait. OpenBLAS's thread count is process-wide
 * (openblas_set_num_threads) and left to the caller.
 *
 * Buffers are allocated at creation; a run allocates nothing. A VBPR
 * minibatch trainer also keeps, for the user side, W and H (at most 64 MiB
 * each; steps touching more users take the item side) and a copy of the
 * features in column blocks (read block by block, so the block of W or H
 * stays in L2) when that copy is at most 1 GiB. */
#ifndef RK_TRAINER_H
#define RK_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "interactions.h"
#include "model.h"
#include "sampler.h"

enum rk_algo { RK_ALGO_MINIBATCH = 0, RK_ALGO_HOGWILD = 1 };
/* How a VBPR minibatch forms its visual terms (both exact; see above). */
enum rk_vis_path { RK_VIS_AUTO = 0, RK_VIS_ITEMS = 1, RK_VIS_USERS = 2 };
enum rk_optim { RK_OPT_ADAM = 0, RK_OPT_SGD = 1 };

typedef struct rk_train_config {
	enum rk_algo algo;
	enum rk_optim optim;     /* Hogwild: SGD only */
	uint32_t threads;        /* 0 = online CPUs */
	uint32_t batch;          /* triples per minibatch step */
	float lr;
	float lambda;            /* L2 on β_i, γ_u, γ_i, θ_u */
	float lambda_e;          /* L2 on E and β' */
	float adam_beta1, adam_beta2, adam_eps;
	uint32_t max_epochs;
	uint64_t epoch_triples;  /* 0 = training pairs, at least 100,000 */
	uint32_t val_negatives;  /* per validation user; 0 = all items */
	uint32_t lr_patience;
	float lr_factor;
	uint32_t patience;
	float min_delta;
	uint64_t seed;
	rk_sampler_opts sampler;
	enum rk_vis_path visual_path; /* AUTO: the cheaper side per step */
} rk_train_config;

/* Defaults:
 *   BPR   Hogwild SGD, lr 0.05, λ 0.0025
 *   VBPR  minibatch 16,384, Adam (0.9, 0.999, 1e-8), lr 3e-3, λ 1e-3,
 *         λ_E 0.1 (the cost of a VBPR step grows with the distinct
 *         users or items it touches, so large batches are fast; on a
 *         generated 1,000-user set batches of 1k to 42k reached the same
 *         validation AUC). λ_E assumes features of unit spread per row,
 *         as rankd gives the trainer (rk_feature_scales in model.h). On
 *         the generated Wikimedia-sized set (batches of 4,096, 20 epochs,
 *         MobileNetV2 block_10 features, cold items served by the prior
 *         of prior.h) λ_E sets how much of a user's taste goes through
 *         the images: for the 482 users whose test item is cold, their
 *         item in the top 5 of the cold items 2.6x as often as chance at
 *         λ_E 1, 2.8x at 0.3, 3.6x (seed 2: 3.8x) at 0.1, 3.2x at 0.01;
 *         their recall@100 0 at λ_E 1, .015 at 0.1; all users' recall@100
 *         .096 at 1, .099 at 0.1, AUC .809 and .786 (the cold items'
 *         AUC over all items falls as their scores spread: .804, .766).
 *         Before the prior (cold items at 0) λ_E 0.3 to 3 ranked them
 *         best, which measured where 0 sat among the warm items.
 *         These figures predate issue 14's sampler (positives uniform
 *         over the training pairs, not over users first): with it the
 *         same defaults give all users AUC .826, recall@20 .057 (was
 *         .786, .038) and BPR .843, .056 (was .819, .039); λ_E was not
 *         re-swept.
 *   both  max 50 epochs, validation on 100 negatives, lr × 0.5 after 2 bad
 *         epochs, stop after 5, min_delta 1e-4, seed 1, uniform negatives,
 *         threads 0 (all cores).
 * The tutorial's VBPR run is batch 42,000, Adam lr 1e-3, weight decay 1e-4,
 * lr × 0.6 after 2 bad epochs. */
void rk_train_config_default(rk_train_config *c, enum rk_model_kind kind);

typedef struct rk_progress {
	uint32_t epoch;          /* 1, 2, ... */
	uint32_t max_epochs;
	double loss;             /* mean -ln σ(x_uij) over the epoch's triples */
	double val_auc;          /* NAN without validation items */
	double best_auc;
	uint32_t best_epoch;
	float lr;                /* for the next epoch */
	double triples_per_s;    /* training alone, this epoch */
	double elapsed_s;        /* since rk_trainer_run began */
	double eta_s;            /* to max_epochs at the mean epoch time: an
	                          * upper bound when stopping early */
} rk_progress;

/* Called after every epoch on the thread that runs rk_trainer_run; return
 * non-zero to stop (the run then returns VR_ECANCELLED). */
typedef int (*rk_progress_fn)(void *ctx, const rk_progress *p);

typedef struct rk_train_result {
	uint32_t epochs;        /* run */
	uint32_t best_epoch;    /* whose parameters the model holds (0: none) */
	double best_auc;
	double loss;            /* mean training loss of the epoch the model
	                         * holds: the best, or the last without
	                         * validation (NAN: none ran) */
	int stopped_early;      /* patience ran out before max_epochs */
	uint32_t diverged;      /* the epoch after which the parameters were no
	                         * longer finite (the run then returns
	                         * VR_EINVAL); 0: none */
	uint64_t triples;
	double seconds;
} rk_train_result;

typedef struct rk_trainer rk_trainer;

/* Prepares training of model (BPR or VBPR, initialised by the caller) on
 * train. valid_item: n_users entries or NULL (no validation, no early
 * stopping). features: VBPR's n_items × F matrix, row i = f_i (rows of
 * items without a vector should be zeros), NULL otherwise. model, train,
 * valid_item and features must outlive the trainer and only it may change
 * model while it runs. cfg NULL = defaults. Returns 0, VR_ENOMEM,
 * VR_EINVAL (sizes do not match the model, a setting out of range, Hogwild
 * with Adam, VBPR without features), VR_EUNSUPPORTED (DVBPR: its loop
 * runs through featured, see rk_model_dvbpr_*), VR_ENOTFOUND (no user can
 * form a triple), or -errno when a thread cannot start. */
int rk_trainer_create(rk_trainer **out, rk_model *model, const rk_csr *train,
		      const uint32_t *valid_item, const float *features,
		      const rk_train_config *cfg);
void rk_trainer_free(rk_trainer *t);

/* Runs up to max_epochs epochs as described above; fn may be NULL; res may
 * be NULL. Returns 0, or VR_ECANCELLED (rk_trainer_cancel or fn), in which
 * case the model also holds the best epoch so far, or VR_EINVAL when an
 * epoch left parameters that are not finite (res->diverged names it; the
 * step size is too large for the data). */
int rk_trainer_run(rk_trainer *t, rk_progress_fn fn, void *ctx, rk_train_result *res);

/* Trains on n sampled triples (whole minibatches: n is rounded up to a
 * multiple of batch) at the current learning rate, without validation.
 * *loss (may be NULL) = mean -ln σ(x_uij). Returns 0 or VR_ECANCELLED. */
int rk_trainer_train(rk_trainer *t, uint64_t n, double *loss);

/* One minibatch step on the given n <= batch triples (minibatch only;
 * VR_EINVAL otherwise or when an index is out of range). */
int rk_trainer_step(rk_trainer *t, const uint32_t *u, const uint32_t *i,
		    const uint32_t *j, size_t n, double *loss);

/* Validation AUC of the model as it is now (NAN without validation items). */
double rk_trainer_validate(rk_trainer *t);

/* Asks a running rk_trainer_run / _train to stop soon (any thread). The
 * flag stays set: later runs of this trainer return VR_ECANCELLED at once. */
void rk_trainer_cancel(rk_trainer *t);

/* The learning rate now (decays during a run); set it for the next steps. */
float rk_trainer_lr(const rk_trainer *t);
void rk_trainer_set_lr(rk_trainer *t, float lr);

#endif
