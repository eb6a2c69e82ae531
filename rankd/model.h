/* model: the parameters of BPR-MF, VBPR and the rankd half of DVBPR
 * (DESIGN.md section 1), their scores, the serving rows, a reference
 * per-triple gradient and LMDB snapshots.
 *
 *   BPR-MF  x_ui = β_i + γ_u·γ_i
 *   VBPR    x_ui = β_i + γ_u·γ_i + θ_u·(E f_i) + β'·f_i
 *   DVBPR   x_ui = β_i + γ_u·γ_i + θ_u·φ_i      (φ_i from featured's CNN)
 *
 * α and β_u are left out: they do not change a user's ranking and BPR's
 * pairwise loss cancels them. K = 0 drops the γ terms (VBPR, DVBPR).
 *
 * All parameters live in one float arena, tensor after tensor (each start
 * 16-float aligned), described by the table t[]: saving, loading, copying
 * and optimiser steps are one loop over it. E and β' share one tensor, VIS,
 * of F rows × (K'+1) columns: row r is [E_r0 .. E_r(K'-1), β'_r]. So one
 * GEMM of feature rows with VIS gives [E f_i, β'·f_i] per item, and one GEMM
 * gives the gradient of both.
 *
 * Features: f_i is a float vector of F values for VBPR (a CNN's pooled
 * activations) and φ_i one of K' values for DVBPR; BPR takes none (NULL).
 *
 * Cold items: the trainer keeps β_i and γ_i at zero for items with no
 * training interaction. A cold item scored with those zeros sinks below
 * every popular warm item and is never recommended, so after training
 * prior.h fits the cold-item prior: how a warm item's [β_i, γ_i] follow
 * from its visual vector (F values for VBPR, φ_i for DVBPR; BPR has none
 * and takes the warm items' mean, weighted by interactions). It is kept
 * beside the arena (m->prior, not trained, so the trainer's loops do not
 * carry it):
 *   row 0        the weighted mean [β_i, γ_i] of warm items: the
 *                prediction for an item with no visual vector (BPR, or a
 *                zero row)
 *   row 1        the intercept b, and rows 2 .. P+1 the coefficients W
 *                (P = rk_model_feature_dims), on raw features:
 *                [β̂_i, γ̂_i] = b + f_iᵀ W
 * prior_rows is 0 (no prior: cold items keep zeros, as models stored
 * before it had), 1 (mean only) or 2 + P. Items below n_items had their
 * learned values blended with the prediction when it was fitted
 * (prior.h); an item index >= n_items (added after training) gets the
 * prediction itself in rk_model_item_rows.
 *
 * Defaults (rk_model_dims_default), chosen after the IUI 2021 tutorial:
 *   BPR   K = 64
 *   VBPR  K = 200, K' = 100 (the tutorial's Wikimedia setting)
 *   DVBPR K = 100, K' = 100 (AlexNet embedding of 100)
 * Initialisation (rk_model_init): β_i = 0, β' = 0; every other tensor
 * Xavier-uniform, ±sqrt(6 / (rows + cols)), as the tutorial's PyTorch code.
 *
 * Thread-safety: functions that read a model may run concurrently; the
 * trainer is the only writer while it runs. */
#ifndef RK_MODEL_H
#define RK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum rk_model_kind { /* numbered as visrec.v1.ModelKind */
	RK_MODEL_BPR = 1,
	RK_MODEL_VBPR = 2,
	RK_MODEL_DVBPR = 3,
};

enum rk_tensor_id {
	RK_BETA_I,  /* n_items × 1 */
	RK_GAMMA_U, /* n_users × K */
	RK_GAMMA_I, /* n_items × K */
	RK_THETA_U, /* n_users × K' (VBPR, DVBPR) */
	RK_VIS,     /* F × (K'+1): [E | β'] (VBPR) */
	RK_N_TENSORS
};

typedef struct rk_model_dims {
	enum rk_model_kind kind;
	uint32_t n_users;
	uint32_t n_items;
	uint32_t k;  /* γ dims */
	uint32_t k2; /* θ dims K' (VBPR, DVBPR; 0 for BPR) */
	uint32_t f;  /* feature dims F (VBPR; 0 otherwise) */
} rk_model_dims;

typedef struct rk_tensor {
	size_t off;  /* in floats from params */
	size_t rows;
	size_t cols; /* rows × cols floats, row major; 0 rows when absent */
} rk_tensor;

typedef struct rk_model {
	rk_model_dims d;
	uint64_t version;  /* the owner's label, kept in snapshots */
	float *params;     /* n_params floats, 64-byte aligned */
	size_t n_params;
	rk_tensor t[RK_N_TENSORS];
	/* Views into params (NULL when absent). */
	float *beta_i, *gamma_u, *gamma_i, *theta_u, *vis;
	/* The cold-item prior (above): prior_rows × (1 + K) floats, or NULL. */
	float *prior;
	uint32_t prior_rows;
} rk_model;

/* Fills dims with the defaults above for a kind and the given counts; f is
 * the feature size (VBPR) and is ignored otherwise. */
void rk_model_dims_default(rk_model_dims *d, enum rk_model_kind kind,
			   uint32_t n_users, uint32_t n_items, uint32_t f);

/* Allocates a model with every parameter zero. Returns 0, VR_ENOMEM, or
 * VR_EINVAL for an unknown kind, n_users or n_items of 0, VBPR without F or
 * K', DVBPR without K', BPR without K, or sizes that overflow. */
int rk_model_create(rk_model **out, const rk_model_dims *d);
void rk_model_free(rk_model *m);
/* Random initialisation (see above), reproducible from seed. */
void rk_model_init(rk_model *m, uint64_t seed);
/* A deep copy (the prior too); dst = src for two models of equal dims
 * (VR_EINVAL else; VR_ENOMEM when dst's prior cannot be sized). */
int rk_model_clone(const rk_model *src, rk_model **out);
int rk_model_copy(rk_model *dst, const rk_model *src);
/* Whether none of v's n values is NaN or infinite: a step too large for
 * the data overflows the parameters (the trainers check m->params after
 * each epoch, DVBPR its φ too). */
int rk_all_finite(const float *v, size_t n);

/* Floats per feature vector the model expects: F (VBPR), K' (DVBPR), 0. */
uint32_t rk_model_feature_dims(const rk_model *m);

/* Feature scaling (VBPR). Feature sources differ in scale by orders of
 * magnitude (per dimension, over the generated data set's items: 1.6e-6
 * for MobileNetV2 block_10 randomly initialised, 0.007 for featured's
 * small net, 0.8 for the pretrained MobileNetV2), and with one λ_E, one
 * learning rate and Xavier-initialised E no single setting suits them all.
 * So the trainer is given features standardised per dimension and divided
 * by sqrt(F): every dimension spreads 1/sqrt(F) over the items and a row's
 * spread is about 1 whatever the source. Only the scale is changed, not
 * the mean: BPR's loss and gradients see features only through f_i - f_j,
 * and at serving a shift of every f_i adds the same θ_u·Eμ + β'·μ to all
 * of a user's scores, so centring changes no ranking and no step.
 * Training on s ⊙ f with [E|β'] is serving raw f with diag(s)·[E|β'], so
 * the trained model is folded (row r of VIS times s_r) and everything
 * after training (the item matrix, snapshots, cold items from featured's
 * change feed) works on raw features as before.
 *
 * rk_feature_scales: scale[r] = 1 / (σ_r · sqrt(F)), σ_r the standard
 * deviation of column r over the n rows of feats (n × f) that are not all
 * zero (an item without a vector has a zero row); 1 where σ_r is 0 or not
 * finite (such a column tells no items apart). Returns 0, VR_EINVAL (f is
 * 0 or no row is non-zero) or VR_ENOMEM.
 * rk_features_scale: feats[i × f + r] *= scale[r] for the n rows.
 * rk_model_fold_scales: VBPR's VIS row r *= scale[r] (F values), so the
 * model trained on scaled features scores raw ones alike (up to float
 * rounding); no-op for other kinds. */
int rk_feature_scales(const float *feats, size_t n, uint32_t f, float *scale);
void rk_features_scale(float *feats, size_t n, uint32_t f, const float *scale);
void rk_model_fold_scales(rk_model *m, const float *scale);

/* Replaces m's prior with rows × (1 + K) floats copied from p (rows 0:
 * none). Returns 0, VR_EINVAL (rows neither 0, 1 nor 2 + P) or
 * VR_ENOMEM. */
int rk_model_set_prior(rk_model *m, const float *p, uint32_t rows);
/* The prior's [β̂, γ̂] (1 + K floats) for an item of features f_i (NULL or
 * all zeros: no vector, row 0). With no prior, zeros. */
void rk_model_prior_predict(const rk_model *m, const float *f_i, float *out);

/* Serving (DESIGN.md section 1): x_ui = user_row(u) · item_row(i).
 * D = 1 + K + K' (BPR: 1 + K). */
uint32_t rk_model_dim(const rk_model *m);
/* row = [1, γ_u, θ_u] (D floats). VR_ENOTFOUND when u >= n_users. */
int rk_model_user_row(const rk_model *m, uint32_t u, float *row);
/* row = [β_i + β'·f_i, γ_i, E f_i] (VBPR), [β_i, γ_i, φ_i] (DVBPR),
 * [β_i, γ_i] (BPR); [β_i, γ_i] the prior's prediction when i >= n_items
 * (cold; zeros without a prior). f_i: the item's
 * features (NULL for BPR). VR_EINVAL when a needed f_i is NULL. */
int rk_model_item_row(const rk_model *m, uint32_t i, const float *f_i, float *row);
/* n item rows at once into out (n × D): item k is items[k] (items NULL:
 * item k), its features feats[k × feature_dims] (NULL for BPR). VBPR uses
 * one GEMM for E and one GEMV for β' over the n feature rows. */
int rk_model_item_rows(const rk_model *m, const uint32_t *items, const float *feats,
		       size_t n, float *out);

/* x_ui in double precision, by plain loops (the reference the tests use).
 * VR_ENOTFOUND for an unknown user, VR_EINVAL as item_row. */
int rk_model_score(const rk_model *m, uint32_t u, uint32_t i, const float *f_i, double *out);

/* The reference BPR gradient of one triple, by plain loops: adds
 * ∂(-ln σ(x_uij))/∂Θ into grad (n_params floats, the arena's layout) and
 * returns -ln σ(x_uij) (NAN if a small scratch allocation fails). No
 * regulariser. f_i, f_j: features of i and j (NULL for BPR); u, i, j must
 * be in range. */
double rk_model_triple_grad(const rk_model *m, uint32_t u, uint32_t i, uint32_t j,
			    const float *f_i, const float *f_j, float *grad);

/* DVBPR step, rankd's half of the round trip (DESIGN.md section 2): for
 * triple t, theta[t × K'] = θ_u and margin[t] = β_i - β_j + γ_u·(γ_i - γ_j),
 * the non-visual part of x_uij. */
void rk_model_dvbpr_margins(const rk_model *m, const uint32_t *u, const uint32_t *i,
			    const uint32_t *j, size_t n, float *theta, float *margin);
/* DVBPR: applies featured's answer by SGD, summed over the n triples:
 * g[t] = σ(-x_uij), dtheta[t × K'] = ∂(-ln σ(x_uij))/∂θ_u. With λ the L2
 * strength on the rows a triple touches (β_i, β_j, γ_u, γ_i, γ_j, θ_u). */
void rk_model_dvbpr_update(rk_model *m, const uint32_t *u, const uint32_t *i,
			   const uint32_t *j, size_t n, const float *g, const float *dtheta,
			   float lr, float lambda);

/* DVBPR: adds the same answer's gradient, summed over the n triples and
 * without a regulariser, into grad (n_params floats, the arena's layout),
 * for an optimiser that steps the whole arena (optim.h's Adam). */
void rk_model_dvbpr_grad(const rk_model *m, const uint32_t *u, const uint32_t *i,
			 const uint32_t *j, size_t n, const float *g, const float *dtheta,
			 float *grad);

/* Snapshots: the model as one LMDB value under key in db (the service's
 * "models" database), a 64-byte header (magic, format, kind, dims,
 * version, parameter count, prior rows) then the arena, then the prior
 * (format 2; format 1, without a prior, still loads). Save commits before it
 * returns. Load returns 0, VR_ENOTFOUND when the key is absent,
 * VR_ECORRUPT when the header or size is wrong, VR_ENOMEM, or a store
 * error. */
int rk_model_save(const rk_model *m, vr_store *st, vr_dbi db, const char *key);
/* Save's writing half: puts the value into txn, for a caller that stores
 * the model in one transaction with other records. Returns 0 or a store
 * error. */
int rk_model_put(const rk_model *m, vr_txn *txn, vr_dbi db, const char *key);
int rk_model_load(rk_model **out, vr_store *st, vr_dbi db, const char *key);
/* Load's decoding half: a new model from one stored value of len bytes
 * (callable without a store: tests, fuzzing). Returns 0, VR_ECORRUPT or
 * VR_ENOMEM; *out stays NULL on failure. */
int rk_model_decode(rk_model **out, const void *val, size_t len);

#endif
