/* serving: the model rankd serves, as one immutable unit that is swapped
 * whole when training finishes.
 *
 * An rk_served holds what a ranking call needs: the model (user rows, and
 * E and β' to fold a new item's vector into its row), the serving item
 * matrix (index.h: one row per item, every model one inner product), each
 * user's seen items (the exclusions: every interaction known when the
 * snapshot was built; rankd adds those stored since, overlay.h), the
 * training split (Evaluate's test items) and the items' training counts
 * (cold flags and the popularity fallback).
 *
 * Swap by pointer, readers by reference count. rk_serving holds the
 * current rk_served behind a mutex taken only to copy the pointer and count
 * a reference, so a Recommend never waits for training; a new model is
 * published with one pointer store, calls in flight finish on the one they
 * took, and the last reference frees the old one.
 *
 * Besides the pointer, only the item matrix changes while served: the
 * change-feed follower appends rows for new items and replaces rows of
 * re-embedded ones (index.h's single writer; rankd serialises it with the
 * swap). Everything else is fixed at creation. */
#ifndef RK_SERVING_H
#define RK_SERVING_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "interactions.h"
#include "model.h"
#include "topk.h"

typedef struct rk_served_info {
	uint64_t version;
	uint32_t feature_dims;    /* F (VBPR), K' (DVBPR), 0 (BPR) */
	uint32_t feature_version; /* featured's model version of the vectors */
	int use_all;              /* trained on every interaction: no test items */
	int64_t created_unix;
} rk_served_info;

typedef struct rk_served {
	atomic_uint refs;
	rk_served_info info;
	rk_model *model;
	struct rk_index *index;
	rk_csr seen;           /* all interactions when built (exclusions) */
	rk_csr train;          /* the training part (a copy of seen with use_all) */
	uint32_t *test_item;   /* seen.n_users held-out items (RK_NONE: none);
			        * NULL with use_all */
	uint32_t n_counted;    /* items with a training count: seen.n_items */
	uint32_t *count;       /* training interactions per item */
	uint32_t *pop;         /* those items, most popular first */
	uint32_t *pop_rank;    /* pop's inverse: item -> place */
	uint32_t *cold_items;  /* the items below n_counted with no training count */
	uint32_t n_cold;
	uint8_t *cold_mark;    /* n_counted flags: 1 for those (topk.h's mark) */
} rk_served;

/* Builds a served model from a trained (or loaded) model and its item
 * index, and every interaction known now in *all. Takes ownership of
 * model, index and all's arrays (*all is zeroed), also on failure. Splits
 * all into train and test items (each user's last in time) unless
 * info->use_all. The result holds one reference. Returns 0, VR_ENOMEM,
 * or VR_EINVAL (model and index disagree on D). */
int rk_served_create(rk_served **out, rk_model *model, struct rk_index *index, rk_csr *all,
		     const rk_served_info *info);
void rk_served_ref(rk_served *s);
/* Drops a reference; the last frees everything. NULL is a no-op. */
void rk_served_unref(rk_served *s);

/* 1 if item i has no training interaction (ranked by its visual terms). */
static inline int rk_served_cold(const rk_served *s, uint32_t i)
{
	return i >= s->n_counted || s->count[i] == 0;
}

/* Whether rows of this model need the item's vector (VBPR, DVBPR). */
int rk_served_needs_vectors(const rk_served *s);

/* Item i's serving row (rk_model_dim floats) from its vector f_i (NULL:
 * no vector, zeros stand in). Returns 0 or VR_ENOMEM. */
int rk_served_item_row(const rk_served *s, uint32_t i, const float *f_i, float *row);

/* Sets item i's row in the index: replaces it when present, else appends
 * zero rows up to i and then it. Readers see it at their next view. One
 * caller at a time (with rk_served_pad). Returns 0 or an index error. */
int rk_served_set_row(rk_served *s, uint32_t i, const float *row);

/* Appends rows until the index holds n items (items that arrived after the
 * model was trained, with no vector yet): the prior's mean [β, γ] with a
 * zero visual part (model.h), zeros for a model without a prior. Returns 0 or an index
 * error. */
int rk_served_pad(rk_served *s, uint32_t n);

/* The popularity fallback for a user the model does not know: items by
 * training count (ties: higher β_i, then lower index), then the uncounted
 * items of view in index order; scores are the counts. Skips the ascending
 * exclusion list excl; with a candidate list (ids < view->n, any order,
 * repeats allowed) ranks only those. Fills up to k hits into out (room for
 * k) and their count into *n_out. Returns 0 or VR_ENOMEM (cand_scratch:
 * room for n_cand ids, or NULL without candidates). */
int rk_served_popular(const rk_served *s, const struct rk_index_view *view,
		      const uint32_t *excl, size_t n_excl, const uint32_t *cand, size_t n_cand,
		      uint32_t *cand_scratch, int k, struct rk_hit *out, size_t *n_out);

/* The cold items of view (rk_served_cold), ascending, into out (room for
 * view->n); returns their count. For cold slots in Recommend. */
size_t rk_served_cold_items(const rk_served *s, const struct rk_index_view *view, uint32_t *out);

/* Audience: the best k of the model's users for an item whose serving row
 * is row (rk_model_dim floats), x_ui = user_row(u) · row, into out (room
 * for k, .item = the user index), best first (ties: lower index), and
 * their count into *n_out. Without include_seen the users whose seen list
 * holds item are left out. scores: room for n_users floats. One GEMV per
 * user tensor and a bounded heap: O(n_users · D). Returns 0 or VR_EINVAL
 * (k <= 0). */
int rk_served_audience(const rk_served *s, uint32_t item, const float *row, int include_seen,
		       int k, float *scores, struct rk_hit *out, size_t *n_out);

/* The holder of the current rk_served. */
typedef struct rk_serving {
	pthread_mutex_t mu;
	rk_served *cur;
} rk_serving;

void rk_serving_init(rk_serving *h);
/* Drops the current model's reference. */
void rk_serving_destroy(rk_serving *h);
/* The current model with a reference taken (give it back with
 * rk_served_unref), or NULL when none is served yet. */
rk_served *rk_serving_get(rk_serving *h);
/* Publishes next (the holder takes over the caller's reference) and
 * returns the previous one, whose reference is now the caller's (NULL
 * when none). */
rk_served *rk_serving_swap(rk_serving *h, rk_served *next);

#endif
