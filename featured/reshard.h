/* reshard: featured's half of `visrec reshard` (featured.proto,
 * "Resharding"): moving the items whose owner changes when the shard list
 * changes from FROM to TO, copy, verify, then delete.
 *
 * The journal. A source shard keeps its progress in its own LMDB (the
 * meta record "reshard"), never in the CLI: the list TO, this shard's
 * name in FROM, a cursor (the last item id a claim looked at, ids in
 * bytewise order), the batch in flight (ids and checksums: claimed, not
 * yet deleted here), the count moved, and two flags: sweep (the second
 * pass, below) and done. A claim writes the journal before it answers; a
 * delete removes the batch's items and clears the batch in ONE
 * transaction. So after a kill -9 of anyone at any point, the journal
 * says exactly which items may exist twice (the batch in flight: a claim
 * answers it again until it is deleted) and which are settled (before
 * the cursor, outside the batch).
 *
 * Writes while moving. From its first claim a source refuses PutItems and
 * Embed of ids that leave it under TO (fd_reshard_check_leaving), so no
 * item can land behind the cursor or replace one in flight. A write that
 * passed that check just before the first claim may still commit behind
 * the cursor; the second pass (sweep) from the first id catches it before
 * the journal says done.
 *
 * Readers. Until the switch every party reads with FROM: an item is on its
 * source until the delete of its batch commits, then on its owner under
 * TO only; readers holding FROM stop seeing moved items one batch at a
 * time, and see them again once they hold TO. When shards are added (the
 * targets are new and run with TO) no reader sees an item twice: the
 * batch in flight is on its source, under FROM, and its target, under
 * TO. When items move to shards that serve FROM too (a shard removed or
 * replaced), a reader of every FROM shard (GetVectors all) can see the
 * batch in flight twice until its delete commits: at most one batch.
 * Followers of the change feed learn of each delete from it: the delete's
 * transaction appends a REMOVED change per item (fd_fstore_remove), so
 * the feed says the item left exactly when it is gone, also across a
 * kill -9.
 *
 * Thread-safety: claims and deletes of one featured are serialised by a
 * mutex of the fd_reshard, which the ingest check takes briefly; imports
 * need none (each is one transaction of its own). */
#ifndef FD_RESHARD_H
#define FD_RESHARD_H

#include "fstore.h"
#include "rpc.h"
#include "shardmap.h"
#include "visrec/v1/featured.pb-c.h"

#include <stddef.h>
#include <stdint.h>

struct fd_service;

/* The journal's meta key. */
#define FD_RESHARD_KEY "reshard"
/* Most items per claim or import, and vectors (model versions) per item. */
#define FD_RESHARD_MAX_ITEMS 1024
#define FD_RESHARD_MAX_VECS 64

enum { FD_JOURNAL_DONE = 1, FD_JOURNAL_SWEEP = 2 };

/* A decoded journal; strings are NUL-terminated, owned by the struct. */
typedef struct fd_journal {
	uint32_t flags;
	uint64_t moved;
	char *to;              /* TO in normal form (shardmap.h) */
	char *source;          /* this shard's name in FROM */
	char *cursor;          /* last id a claim looked at; "" before any */
	size_t n;              /* the batch in flight */
	char **ids;
	uint64_t *sums;
} fd_journal;

/* Parses a journal record (vl bytes at v) into *out. Checked before use:
 * lengths within the record and the limits (TO at most
 * VR_SHARD_LIST_MAX bytes, names VR_SHARD_ADDR_MAX, ids FD_MAX_ID, at
 * most FD_RESHARD_MAX_ITEMS in flight), no NUL inside a string, unknown
 * flags refused. Returns 0, VR_ECORRUPT, VR_ENOMEM. */
int fd_journal_decode(const void *v, size_t vl, fd_journal *out);
/* Encodes j into *out (malloc'd) and *len. Returns 0 or VR_ENOMEM. */
int fd_journal_encode(const fd_journal *j, void **out, size_t *len);
/* Frees what decode made or a zeroed journal. */
void fd_journal_clear(fd_journal *j);

/* Opens the resharding state of svc: reads the journal, so that a source
 * restarted mid-move goes on refusing items that leave it. Returns 0, or
 * an error with the cause in err. */
int fd_reshard_open(struct fd_service *svc, char *err, size_t errlen);
void fd_reshard_close(struct fd_service *svc);

/* The journal's state for Info: TO (NULL when no reshard was ever
 * journalled here; else malloc'd, the caller frees it), the count moved,
 * and whether it is done. Returns 0 or an error of the store. */
int fd_reshard_progress(struct fd_service *svc, char **to, uint64_t *moved, int *done);
/* Counts journal writes since open (0 without a reshard state): what Info
 * progress depends on, for its kept reply. */
uint64_t fd_reshard_gen(const struct fd_service *svc);

/* The ingest check: GRPC_STATUS_OK unless a reshard is journalled here and
 * id leaves this shard under its TO, then FAILED_PRECONDITION with why
 * (cap bytes) naming TO's owner. */
int fd_reshard_check_leaving(const struct fd_service *svc, const char *id, char *why, size_t cap);

/* Checks items[index] of a ReshardImport on the shard named m->names[self]
 * (self >= 0) of the new map m, holding the n model rows: the id and
 * image size (fd_check_item), its owner under m, at most
 * FD_RESHARD_MAX_VECS vectors by ascending version each of a version held
 * here with that version's dims, and its checksum against its content.
 * GRPC_STATUS_OK, or INVALID_ARGUMENT / FAILED_PRECONDITION with why (cap
 * bytes). */
int fd_reshard_check_item(const struct fd_service *svc, const vr_shardmap *m, int self,
			  const fd_model_info *rows, size_t n, const Visrec__V1__ReshardItem *it,
			  size_t index, char *why, size_t cap);

/* The handlers (ctx is the fd_service). */
int fd_reshard_claim(vr_call *call, void *ctx);
int fd_reshard_import(vr_call *call, void *ctx);
int fd_reshard_delete(vr_call *call, void *ctx);

#endif
