/* prior: fits the cold-item prior of a trained model (model.h, "Cold
 * items") and blends it into the items' learned β_i and γ_i.
 *
 * Why: a cold item (no training interaction) has β_i = γ_i = 0 while the
 * warm items' biases are mostly above that, so it sinks below every
 * popular item and is never recommended, however well its visual terms
 * match a user. Its missing values are predicted instead, from the visual
 * vector the model already ranks it with.
 *
 * The fit (rk_prior_fit) is a weighted ridge regression of y_i = [β_i,
 * γ_i] (1 + K targets) on the item's feature row x_i (P =
 * rk_model_feature_dims: F for VBPR, K' φ values for DVBPR) over the warm
 * items that have a vector, item i weighing w_i = its training
 * interactions:
 *   standardise each column of x over those items (weighted; z = (x - μ)
 *   / σ, a column with σ = 0 gets weight 0), centre y on its weighted
 *   mean ȳ, solve (ZᵀWZ + λ I) B = ZᵀW(Y - ȳ) by Cholesky (LAPACK dposv),
 *   and store the prior on raw features: coefficients B_r / σ_r,
 *   intercept ȳ - Σ_r μ_r B_r / σ_r.
 * Why weighted: a cold item is predicted for the moment users consume it,
 * and a consumed item is drawn in proportion to its interactions, not
 * uniformly over the catalogue. The uniform fit predicts the typical
 * catalogue item, which BPR pushes down as a negative: on the generated
 * main-job data its mean β was -0.05 with R² of about 0 from the vectors,
 * and serving cold items at it lowered VBPR's cold-user AUC from .699 to
 * .577 (./run.sh, all users .771 to .718).
 * λ is picked per fit from λ = a · Σw (a in 1e-3 .. 1e3: each standardised
 * column has ZᵀWZ diagonal Σw) by the lowest weighted squared error on a
 * held-out fifth of the warm items (item index % 5 == 4), then the fit is
 * redone on all of them. BPR (P = 0) and fits with fewer than
 * RK_PRIOR_MIN_ITEMS warm items with vectors keep only the weighted mean
 * (row 0).
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
#ifndef RK_PRIOR_H
#define RK_PRIOR_H

#include <stddef.h>
#include <stdint.h>

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
} rk_prior_report;

/* Weighted ridge regression on standardised columns, as above, for one λ:
 * x (n × p floats, row major), y (n × q), w (n row weights >= 0; NULL: 1
 * each), rows counted only where use is NULL or use[r] is non-zero. Writes
 * coef (p × q, raw-feature coefficients) and intercept (q). Returns 0,
 * VR_EINVAL (no row or weight used, or the system is not positive
 * definite) or VR_ENOMEM. */
int rk_ridge_fit(const float *x, const float *y, const float *w, size_t n, uint32_t p, uint32_t q,
		 const uint8_t *use, double lambda, float *coef, float *intercept);

/* Fits m's prior from its own β_i, γ_i and feats (n_rows × P floats, row i
 * = item i as the model sees it; NULL for BPR), with count[i] the training
 * interactions of item i (n_rows entries), then blends it into β_i and γ_i
 * of every item below min(n_items, n_rows) as above. rep may be NULL.
 * Returns 0, VR_ENOMEM, or VR_EINVAL when no item is warm (the model is
 * left as it was). */
int rk_prior_fit(rk_model *m, const float *feats, uint32_t n_rows, const uint32_t *count,
		 rk_prior_report *rep);

#endif
