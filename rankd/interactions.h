/* interactions: who interacted with which item, and when.
 *
 * String user and item ids are mapped to dense uint32 indices (0, 1, ...,
 * in order of first appearance; the maps are persisted, so an index never
 * changes). Each (user, item) pair is stored once with the latest timestamp
 * seen. The store can be snapshotted into a CSR (rk_csr: per-user sorted
 * item lists) for the sampler, the split into train/test and serving.
 *
 * Persistence (when opened with a store): LMDB databases
 *   "users"         user id bytes -> uint32 index (native endian)
 *   "items"         item id bytes -> uint32 index
 *   "interactions"  8-byte key: big-endian user index, big-endian item
 *                   index (so a cursor walks user by user) -> int64 seconds
 *   "interaction_log"  integer key: sequence 1, 2, ... -> one log record
 * loaded by rk_interactions_open. Every rk_interactions_add_batch commits
 * one transaction before it returns.
 *
 * The log is what read replicas replay (rankd --writer): every commit that
 * adds ids or pairs appends its records in the same transaction, so the
 * log and the maps never disagree after a crash. Replaying the records in
 * order from an empty store (rk_interactions_log_apply) rebuilds the same
 * maps, the same indices, and a log of the same sequences. A record is
 *   RK_LOG_ITEMS  item ids interned outside a batch (featured's new items,
 *                 rk_items_intern then rk_interactions_flush), in index order,
 *                 at most RK_LOG_MAX_ROWS ids and 1 MiB a record (a flush
 *                 of more writes several)
 *   RK_LOG_ROWS   the rows of one rk_interactions_add_batch, as given
 * stored as a 24-byte header (magic "RKL1", type, commit time in Unix ms,
 * count; native endian as the rest of the store) then per row: ROWS: u16
 * user length, u16 item length, i64 timestamp, the user and item bytes;
 * ITEMS: u16 length, the id bytes. The log is never trimmed yet. A store
 * that held ids before this log existed has no record of them
 * (rk_interactions_log_partial). 
 *
 * Thread-safety: an rk_interactions is not locked. Reads (find, has, ids,
 * counts, rk_interactions_csr) may run concurrently with each other; any
 * call that adds (intern, add_batch, flush) needs the caller's
 * exclusive lock. An rk_csr is immutable and may be shared freely. */
#ifndef RK_INTERACTIONS_H
#define RK_INTERACTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "store.h"

#define RK_ID_MAX VR_ID_MAX     /* bytes in a user or item id (ids.h has the rule) */
#define RK_NONE UINT32_MAX      /* "no item" / "no user" */
#define RK_INDEX_MAX 0x7fffffffu /* users, items: indices stay below this */
#define RK_PAIRS_MAX 0xfffffff0u /* distinct (user, item) pairs held */

typedef struct rk_interactions rk_interactions;

/* One interaction to add. Ids are byte strings (not NUL-terminated here)
 * that keep the id rule (vr_id_check); timestamps are seconds (any int64). */
typedef struct rk_interaction_in {
	const char *user;
	size_t user_len;
	const char *item;
	size_t item_len;
	int64_t ts;
} rk_interaction_in;

typedef struct rk_add_stats {
	uint64_t added;   /* pairs not seen before */
	uint64_t updated; /* pairs seen before (their timestamp is the max) */
	uint64_t bad_row; /* on VR_EINVAL from add_batch: the offending row */
} rk_add_stats;

/* Per-user item lists, sorted by item index within each user: user u's
 * items are item[off[u] .. off[u+1]) with timestamps ts[...] beside them.
 * Built by rk_interactions_csr or rk_split_last; freed by rk_csr_free. */
typedef struct rk_csr {
	uint32_t n_users;
	uint32_t n_items;
	uint64_t nnz;
	uint64_t *off;  /* n_users + 1 */
	uint32_t *item; /* nnz */
	int64_t *ts;    /* nnz */
} rk_csr;

/* Opens the interactions of a service. st may be NULL for an in-memory set
 * (tests, benchmarks); otherwise the three databases above are opened or
 * created (call at start-up, see vr_store_dbi) and loaded. Returns 0,
 * VR_ENOMEM, VR_ECORRUPT when the stored maps are not dense or an
 * interaction names an unknown index, or a store error. */
int rk_interactions_open(rk_interactions **out, vr_store *st);
/* Frees the memory (the store stays open). NULL is a no-op. */
void rk_interactions_close(rk_interactions *ix);

uint32_t rk_interactions_users(const rk_interactions *ix);
uint32_t rk_interactions_items(const rk_interactions *ix);
uint64_t rk_interactions_count(const rk_interactions *ix);

/* Looks an id up: 0 and *out = its index, or VR_ENOTFOUND. */
int rk_users_find(const rk_interactions *ix, const char *id, size_t len, uint32_t *out);
int rk_items_find(const rk_interactions *ix, const char *id, size_t len, uint32_t *out);
/* The id of an index, NUL-terminated (len may be NULL); NULL when out of
 * range. Valid until the next call that adds. */
const char *rk_user_id(const rk_interactions *ix, uint32_t u, size_t *len);
const char *rk_item_id(const rk_interactions *ix, uint32_t i, size_t *len);

/* Returns the index of an item id, adding it (with no interactions) when
 * new: items known only through featured (cold items with a vector). A new
 * id lives in memory until the next add_batch or rk_interactions_flush
 * persists it. Returns 0, VR_EINVAL (the id breaks the rule of ids.h),
 * VR_ETOOBIG (RK_INDEX_MAX items), VR_ENOMEM. */
int rk_items_intern(rk_interactions *ix, const char *id, size_t len, uint32_t *out);
/* Persists ids interned since the last commit in one transaction (no-op
 * without a store or with nothing pending). Returns 0 or a store error. */
int rk_interactions_flush(rk_interactions *ix);

/* 1 if user u interacted with item i (and *ts, when not NULL, is the
 * latest timestamp), else 0. */
int rk_interactions_has(const rk_interactions *ix, uint32_t u, uint32_t i, int64_t *ts);

/* Adds n interactions: new ids are mapped, a pair already present keeps the
 * later of its timestamps, and with a store everything (ids included) is
 * committed in one transaction before the call returns; on any failure
 * nothing of the batch is visible (ids may have been interned). *stats may
 * be NULL. Returns 0, VR_EINVAL (a row's id breaks the rule of ids.h:
 * stats->bad_row names it, nothing is added), VR_ETOOBIG (index or pair
 * limits), VR_ENOMEM, or a store error. */
int rk_interactions_add_batch(rk_interactions *ix, const rk_interaction_in *rows, size_t n,
			      rk_add_stats *stats);

/* The log (above). */
enum { RK_LOG_ROWS = 1, RK_LOG_ITEMS = 2 };
#define RK_LOG_MAX_ROWS 100000u /* rows of one record: AddInteractions' limit */

/* One decoded record: n rows whose id pointers point into the stored
 * bytes (ITEMS: only item and item_len are set). rows is malloc'd. */
typedef struct rk_log_record {
	uint32_t type;
	uint32_t n;
	int64_t commit_unix_ms;
	rk_interaction_in *rows;
} rk_log_record;

/* The last sequence written (0: none). Read under the caller's lock as
 * rk_interactions_count. */
uint64_t rk_interactions_log_seq(const rk_interactions *ix);
/* 1 when the store held ids before its log began (a replica replaying
 * the log would miss them). */
int rk_interactions_log_partial(const rk_interactions *ix);

/* Called per record by rk_interactions_log_read; non-zero stops the read
 * and is returned. */
typedef int (*rk_log_fn)(void *ctx, uint64_t seq, const void *rec, size_t len);
/* Hands the stored records after sequence after to fn, in order, in one
 * read transaction, until max_bytes of records went by (at least one) or
 * the log ends. Any thread, no lock needed. Returns 0, fn's code or a
 * store error. */
int rk_interactions_log_read(rk_interactions *ix, uint64_t after, size_t max_bytes,
			     rk_log_fn fn, void *ctx);
/* Decodes one stored record of len bytes, checking every length and id
 * (callable without a store: fuzzing). free(out->rows) after use. Returns
 * 0, VR_ECORRUPT or VR_ENOMEM. */
int rk_log_decode(const void *rec, size_t len, rk_log_record *out);
/* Applies record r, the writer's sequence seq, as the writer did (needs
 * the caller's exclusive lock): the next sequence here must be seq, and
 * afterwards this log holds the record at seq too. stats as add_batch's
 * (ITEMS: untouched). Returns 0, VR_ESTATE (seq is not the next one, or
 * an id already has another index here: the two stores diverged), or
 * add_batch's and flush's errors. */
int rk_interactions_log_apply(rk_interactions *ix, uint64_t seq, const rk_log_record *r,
			      rk_add_stats *stats);

/* Snapshots every interaction into *out (n_users, n_items = the current
 * counts). Returns 0 or VR_ENOMEM. */
int rk_interactions_csr(const rk_interactions *ix, rk_csr *out);

/* Splits all into train + one test item per user: the user's last
 * interaction in time (ties: the highest item index, i.e. the item first
 * seen last). Users with fewer than 2 interactions keep all of them in
 * train and get test_item[u] = RK_NONE. test_item has all->n_users
 * entries. Apply twice for a validation item (split train again).
 * Returns 0 or VR_ENOMEM. */
int rk_split_last(const rk_csr *all, rk_csr *train, uint32_t *test_item);

/* counts[i] = number of users with item i in c (n_items entries). */
void rk_csr_item_counts(const rk_csr *c, uint32_t *counts);

void rk_csr_free(rk_csr *c);

/* 1 if item i is in user u's list (binary search), else 0. */
static inline int rk_csr_has(const rk_csr *c, uint32_t u, uint32_t i)
{
	const uint32_t *lo = c->item + c->off[u];
	size_t n = (size_t)(c->off[u + 1] - c->off[u]);
	while (n > 0) {
		size_t half = n / 2;
		if (lo[half] < i) {
			lo += half + 1;
			n -= half + 1;
		} else {
			n = half;
		}
	}
	return lo < c->item + c->off[u + 1] && *lo == i;
}

#endif
