/* prior: fits the cold-item prior of a trained model (model.h, "Cold
 * items") and blends it into the items' learned β_i and γ_i.
 *
 * Why: a cold item (no training interaction) has β_i = γ_i = 0 while the
 * warm items' biases are mostly above that, so it sinks below every
 * popular item and is never recommended, however well its visual terms
 * match a user. Its missing values are predicted instead, from the visual
 * vector the model already ranks it with.
 *
 * The fit (rk_prior_fit) is a ridge regression of y_i = [β_i, γ_i] (1 + K
 * targets) on the item's feature row x_i (P = rk_model_feature_dims: F for
 * VBPR, K' φ values for DVBPR) over the warm items that have a vector:
 *   standardise each column of x over those items (z = (x - μ) / σ;
 *   a column with σ = 0 gets weight 0), centre y on its mean ȳ, solve
 *   (ZᵀZ + λ I) W = Zᵀ(Y - ȳ) by Cholesky (LAPACK dposv), and store the
 *   prior on raw features: coefficients W_r / σ_r, intercept
 *   ȳ - Σ_r μ_r W_r / σ_r.
 * λ is picked per fit from λ = a · n (a in 1e-3 .. 1e3, n the items fitted:
 * each standardised column has ZᵀZ diagonal n) by the lowest mean squared
 * error on a held-out fifth of the warm items (item index % 5 == 4), then
 * the fit is redone on all of them. BPR (P = 0) and fits with fewer than
 * RK_PRIOR_MIN_ITEMS warm items with vectors keep only the mean (row 0).
 * Cost: ZᵀZ in doubles (P² · 8 bytes, 13 MiB for F = 1280) plus Z
 * (n · P · 8 bytes: 98 MiB for 9,633 items × 1,280), n · P² multiply-adds
 * and 8 Cholesky solves of P³/3: about a second for F = 1,280 here.
 *
 * Blend: every item i below the model's n_items then serves
 *   [β_i, γ_i] := w · learned + (1 - w) · predicted,  w = n_i / (n_i + c)
 * with n_i its training interactions and c = RK_PRIOR_BLEND (the number of
 * interactions at which the two weigh the same): a cold item (n = 0) gets
 * the prediction, an item with a few interactions mostly its own noisy
 * values pulled toward the prediction, a popular one its own. Items that
 * arrive after training get the prediction when their row is made
 * (rk_model_item_rows). */
/* Calibration (rk_prior_calibrate): on the generated data the visual
 * vectors explain almost nothing of β (held-out R² about 0), and the warm
 * items' mean β is below most of what a user consumes (the long tail is
 * mostly pushed down as negatives), so the prior alone put cold items
 * lower than the zeros did. The prior's β level is therefore chosen on the
 * validation split the trainer already holds out: serving β_i moves by
 * (1 - w_i)·δ (all of δ for a cold item, none for a popular one), and δ is
 * the value of a grid (multiples of the warm items' β spread) with the
 * best mean validation AUC over users (every item not in the user's
 * training list a negative, as the standard protocol). That is the metric
 * the model is judged by, so it cannot trade all users' AUC for cold
 * items' exposure beyond what validation shows. */
#ifndef RK_PRIOR_H
#define RK_PRIOR_H

#include <stddef.h>
#include <stdint.h>

#include "interactions.h"
#include "model.h"

#define RK_PRIOR_MIN_ITEMS 20
#define RK_PRIOR_BLEND 1.0

typedef struct rk_prior_report {
	uint32_t warm;        /* items fitted (warm, with a vector when P > 0) */
	uint32_t held_out;    /* of them, held out to choose λ */
	uint32_t cold;        /* items below n_items with no interaction */
	double lambda;        /* chosen (0: mean only) */
	double r2_beta;       /* held-out R² of β (0 = as good as the mean) */
	double r2_gamma;      /* held-out R² over the γ columns together */
	double delta;         /* rk_prior_calibrate's shift of β (0: none) */
	double val_auc0, val_auc; /* validation AUC at δ = 0 and at δ */
} rk_prior_report;

/* Ridge regression on standardised columns, as above, for one λ: x (n × p
 * floats, row major), y (n × q), rows counted only where use is NULL or
 * use[r] is non-zero. Writes coef (p × q, raw-feature coefficients) and
 * intercept (q). Returns 0, VR_EINVAL (no row used, or the system is not
 * positive definite) or VR_ENOMEM. */
int rk_ridge_fit(const float *x, const float *y, size_t n, uint32_t p, uint32_t q,
		 const uint8_t *use, double lambda, float *coef, float *intercept);

/* Fits m's prior from its own β_i, γ_i and feats (n_rows × P floats, row i
 * = item i as the model sees it; NULL for BPR), with count[i] the training
 * interactions of item i (n_rows entries), then blends it into β_i and γ_i
 * of every item below min(n_items, n_rows) as above. rep may be NULL.
 * Returns 0, VR_ENOMEM, or VR_EINVAL when no item is warm (the model is
 * left as it was). */
int rk_prior_fit(rk_model *m, const float *feats, uint32_t n_rows, const uint32_t *count,
		 rk_prior_report *rep);

/* Calibrates the prior's β level after rk_prior_fit (above) on users'
 * validation items: valid[u] (fit->n_users entries, RK_NONE for none)
 * against fit, the interactions trained on; count and feats as for the
 * fit. Adds δ to the prior's β (rows 0 and 1) and (1 - w_i)·δ to β_i.
 * rep (may be NULL) gets delta and the AUCs. Returns 0, VR_ENOMEM, or
 * VR_EINVAL (no prior, or no user with a validation item: nothing
 * changed). */
int rk_prior_calibrate(rk_model *m, const float *feats, uint32_t n_rows, const uint32_t *count,
		       const rk_csr *fit, const uint32_t *valid, rk_prior_report *rep);

#endif
