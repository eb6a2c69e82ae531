/* tcache: the per-user top-k result cache of Recommend, which must never
 * give an answer the scan would not.
 *
 * An entry is one user's exact top-depth list (topk.h's order, the user's
 * exclusions applied) for a key of three parts:
 *   version     the served model's version. A cache holds one version: a
 *               call with a newer one empties it (the swap after Train),
 *               one with an older one (a call still on the old model)
 *               neither reads nor stores.
 *   user epoch  the caller's count of the user's exclusions added since
 *               the snapshot (the overlay's list length: it only grows
 *               while one version is served). A different epoch is a miss;
 *               AddInteractions also drops the user's entry at once.
 *   catalogue   a sequence number of item-row changes (rows appended for
 *               new items, rows replaced for re-embedded ones) noted by
 *               the one writer of the served item matrix. An entry made at
 *               sequence e is brought up to the caller's sequence by
 *               rescoring each item changed since e against the user and
 *               merging it into the list (a change log of the last
 *               RK_TCACHE_LOG items; an entry older than the log is a miss).
 *
 * Why a merge is exact: a list L that is the top-n of catalogue C (minus
 * exclusions) stays the top-(n-1) of C without item i when i is dropped
 * from it, and the top-n of C without i otherwise; merging i's new score
 * and keeping n (or, when L held every eligible item, all) gives the top of
 * the changed catalogue. An item that does not beat L's last place of an
 * incomplete list is left out, since unknown items may rank above it.
 *
 * Ordering with the writer: the writer publishes a row (index.h) before it
 * notes it; a reader reads the sequence (rk_tcache_seq) before it takes its
 * index view, so every change up to that sequence is in its view, and a
 * list it stores at that sequence is never newer than its tag.
 *
 * Memory: entries and the per-user slot table count against a byte limit;
 * beyond it the least recently used entries go. Thread-safety: one mutex;
 * every operation is a short copy, except a merge, which scores one row per
 * changed item. */
#ifndef RK_TCACHE_H
#define RK_TCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "topk.h"

/* Changed items remembered for merges. */
#define RK_TCACHE_LOG 4096
/* Least depth a list is filled to: a later call with a larger k than the
 * first one's still hits (64 covers the usual k of 10 to 50). */
#define RK_TCACHE_MIN_DEPTH 64

typedef struct rk_tcache rk_tcache;

typedef struct rk_tcache_stats {
	uint64_t hits, misses, evictions, merged; /* merged: items merged into hits */
	uint64_t bytes, entries, limit;
} rk_tcache_stats;

/* A cache of at most limit_bytes (> 0). Returns 0, VR_EINVAL or VR_ENOMEM. */
int rk_tcache_create(size_t limit_bytes, rk_tcache **out);
/* NULL is a no-op. */
void rk_tcache_destroy(rk_tcache *c);

/* The catalogue sequence now (read it before taking the index view). */
uint64_t rk_tcache_seq(rk_tcache *c);

/* The writer of version's item matrix changed (appended or replaced) item
 * i's row; call after the row is published. An older version is ignored; a
 * newer one empties the cache first. */
void rk_tcache_note(rk_tcache *c, uint64_t version, uint32_t item);

/* rk_tcache_note for items from .. to - 1 (rows appended together). */
void rk_tcache_note_range(rk_tcache *c, uint64_t version, uint32_t from, uint32_t to);

/* Empties the cache for version (the swap to a new model). */
void rk_tcache_reset(rk_tcache *c, uint64_t version);

/* Drops user's entry (its exclusions changed). */
void rk_tcache_drop(rk_tcache *c, uint32_t user);

/* The cached top min(k, n) for (version, user, user_epoch) at catalogue
 * sequence seq into out (room for k), their count into *n_out. Items
 * changed between the entry's sequence and seq are scored with
 * user_row against view (which holds them) and merged, skipping the
 * ascending exclusion list excl. Returns 1 (answered), 0 (a miss: no entry,
 * another key, too short a list, or the log lost the changes), or a
 * negative error of rk_score. */
int rk_tcache_get(rk_tcache *c, uint64_t version, uint32_t user, uint64_t user_epoch,
		  uint64_t seq, const struct rk_index_view *view, const float *user_row,
		  const uint32_t *excl, size_t n_excl, struct rk_topk_ws *ws, int k,
		  struct rk_hit *out, size_t *n_out);

/* rk_tcache_get for an entry that needs no merge (made at seq itself):
 * answers without the exclusions or the user's row, which only a merge
 * reads, so a caller may skip building them. Returns 1 (answered) or 0
 * (anything else: the caller goes on to rk_tcache_get). */
int rk_tcache_get_fresh(rk_tcache *c, uint64_t version, uint32_t user, uint64_t user_epoch,
			uint64_t seq, int k, struct rk_hit *out, size_t *n_out);

/* Stores a scan's answer: hits[0..n) is the exact top-depth at sequence
 * seq (n < depth: every eligible item). Evicts least recently used entries
 * to stay under the limit; a list larger than the limit is not stored.
 * Returns 0 or VR_ENOMEM (nothing stored; the cache stays consistent). */
int rk_tcache_put(rk_tcache *c, uint64_t version, uint32_t user, uint64_t user_epoch,
		  uint64_t seq, int depth, const struct rk_hit *hits, size_t n);

/* The users whose lists are held, most recently used first, up to cap of
 * them into out; returns their count (for a refresh after a new model). */
size_t rk_tcache_recent(rk_tcache *c, uint32_t *out, size_t cap);

void rk_tcache_stats_get(rk_tcache *c, rk_tcache_stats *out);

#endif
