/* overlay: the interactions added since the served snapshot was built, so
 * that Recommend excludes an item the moment a user consumed it instead of
 * after the next Train.
 *
 * A served snapshot's seen lists (serving.h) hold every interaction known
 * when it was built. The overlay holds the (user, item) pairs added after
 * that: per user index, an ascending list of item indices without repeats.
 * A ranking call excludes the union of the snapshot's list and the
 * overlay's. When a newer snapshot is served, the pairs its seen lists
 * hold are dropped (rk_overlay_prune); pairs added while it trained, after
 * it took its copy of the interactions, stay. So the overlay holds at most
 * the interactions added since the last snapshot was built.
 *
 * The overlay is memory only: at start-up the served snapshot's seen lists
 * are rebuilt from every stored interaction, so it starts empty.
 *
 * Thread-safety: not locked, like rk_interactions. Reads (rk_overlay_items,
 * rk_overlay_count) may run concurrently with each other; rk_overlay_add
 * and rk_overlay_prune need the caller's exclusive lock. rankd uses the
 * interactions' lock for both, which is why a reader must take the served
 * snapshot under the same shared lock: a prune then never falls between
 * taking a snapshot and reading the overlay. */
#ifndef RK_OVERLAY_H
#define RK_OVERLAY_H

#include <stddef.h>
#include <stdint.h>

#include "interactions.h"

typedef struct rk_overlay rk_overlay;

/* Returns 0 or VR_ENOMEM. */
int rk_overlay_create(rk_overlay **out);
/* NULL is a no-op. */
void rk_overlay_destroy(rk_overlay *o);

/* Adds the pairs (users[x], items[x]) for x < n, in any order, repeats
 * allowed; a pair already held, or held by seen (when not NULL: the served
 * snapshot's lists, which every later snapshot also holds), is skipped.
 * users[x] and items[x] must be below RK_INDEX_MAX. Returns 0 or VR_ENOMEM;
 * on VR_ENOMEM some of the call's pairs may be missing (they are then
 * excluded only from the next snapshot on, or after a restart). */
int rk_overlay_add(rk_overlay *o, const uint32_t *users, const uint32_t *items, size_t n,
		   const rk_csr *seen);

/* Drops every pair that seen holds (the newly served snapshot's lists) and
 * frees the lists it empties. */
void rk_overlay_prune(rk_overlay *o, const rk_csr *seen);

/* User u's items, ascending, and their count into *n (NULL and 0 when
 * none). Valid until the next add or prune. */
const uint32_t *rk_overlay_items(const rk_overlay *o, uint32_t u, size_t *n);

/* The pairs held. */
uint64_t rk_overlay_count(const rk_overlay *o);

#endif
