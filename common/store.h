/* store: the LMDB environment of a service.
 *
 * One environment per service directory, named databases inside it. Writes
 * go through vr_store_write(), which runs a callback inside one write
 * transaction, commits it (durably: the commit is on disk when it returns),
 * and, when LMDB reports the map full, aborts, grows the map and runs the
 * callback again. Callbacks must therefore be repeatable: they may run more
 * than once and must keep their side effects inside the transaction.
 *
 * Reads use short read transactions (vr_store_read_begin/_end). A read
 * transaction holds a shared lock that a map resize waits for, so never hold
 * one across a blocking call.
 *
 * Thread-safety: any thread may read or write. LMDB serialises writers.
 * Errors: VR_E* codes of err.h; LMDB codes are mapped (MDB_NOTFOUND ->
 * VR_ENOTFOUND, MDB_KEYEXIST -> VR_EEXIST, MDB_MAP_FULL -> VR_EMAPFULL after
 * growth failed, MDB_CORRUPTED/MDB_INVALID/MDB_PAGE_NOTFOUND/
 * MDB_VERSION_MISMATCH -> VR_ECORRUPT, a write the file system refused
 * for want of space (ENOSPC, EDQUOT, or the EIO LMDB makes of a short
 * write while the file system is out of space) -> VR_ENOSPACE, other
 * system failures LMDB passes through (EIO, EACCES, ...) -> -errno,
 * anything else -> VR_ESTORE); vr_store_last_error() gives the text of the
 * last failure on this thread, with the store's directory for VR_ENOSPACE
 * and VR_EMAPFULL. A refused write changes nothing: every write that
 * returned 0 is still there, also after a crash.
 *
 * A read transaction may end on another thread than the one that began it.
 * A thread holding a read transaction must not call vr_store_write (a map
 * resize would wait for that read transaction forever). */
#ifndef VR_STORE_H
#define VR_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct vr_store vr_store;
typedef struct vr_txn vr_txn;
typedef struct vr_cursor vr_cursor;
typedef unsigned int vr_dbi;

typedef struct vr_store_opts {
	size_t initial_map_bytes; /* 0 = 64 MiB */
	size_t max_map_bytes;     /* growth stops here; 0 = 1 TiB */
	unsigned max_dbs;         /* 0 = 16 */
	unsigned max_readers;     /* 0 = 256 */
	int no_sync;              /* tests only: skip fsync (loses durability) */
} vr_store_opts;

/* Opens (creating if needed) the environment in directory dir, which is
 * created if missing (mkdir -p). Fails with -errno (e.g. -EACCES, -ENOTDIR)
 * when dir cannot be created or is not writable; vr_store_last_error()
 * then names the path. Reader slots left by a killed process are freed.
 * opts may be NULL. */
int vr_store_open(vr_store **out, const char *dir, const vr_store_opts *opts);
void vr_store_close(vr_store *st);

/* Opens or creates a named database. Call during start-up, before threads
 * use the store. flags: VR_DB_INTEGERKEY for native unsigned 64-bit keys
 * (sequence numbers) so they iterate in numeric order; every key of such a
 * db is a uint64_t passed as (&key, 8). Pass the same flags every time a db
 * is opened (LMDB does not check them). */
enum { VR_DB_INTEGERKEY = 1 };
int vr_store_dbi(vr_store *st, const char *name, unsigned flags, vr_dbi *out);

/* The map size now, and how many times it grew since open (for tests). */
size_t vr_store_map_bytes(vr_store *st);
unsigned vr_store_grow_count(vr_store *st);
/* The bytes of the map in use (pages up to the last one written; LMDB
 * reuses freed pages, so this only grows). 0 when LMDB cannot say. */
size_t vr_store_used_bytes(vr_store *st);

/* Runs fn(txn, arg) in a write transaction and commits. If fn returns
 * non-zero the transaction is aborted and that value returned. On map-full
 * (from fn's puts or the commit) the map is doubled (up to max_map_bytes)
 * and fn runs again from scratch, even if fn swallowed the put's
 * VR_EMAPFULL. Returns 0 once the commit is durable, VR_EMAPFULL when the
 * map is at max_map_bytes, VR_ENOSPACE when the disk is full, or another
 * mapped error. */
typedef int (*vr_store_write_fn)(vr_txn *txn, void *arg);
int vr_store_write(vr_store *st, vr_store_write_fn fn, void *arg);

/* Read transactions: a consistent snapshot until vr_store_read_end. Begin
 * returns VR_ENOMEM, or VR_ESTORE when every reader slot is taken
 * (max_readers). vr_store_read_end(NULL) is a no-op. */
int vr_store_read_begin(vr_store *st, vr_txn **out);
void vr_store_read_end(vr_txn *txn);

/* Gets a value. On success *val and *len point into the map and stay valid
 * until the transaction ends. VR_ENOTFOUND when absent. */
int vr_get(vr_txn *txn, vr_dbi db, const void *key, size_t klen,
	   const void **val, size_t *len);
/* Puts a value (replacing). */
int vr_put(vr_txn *txn, vr_dbi db, const void *key, size_t klen,
	   const void *val, size_t len);
/* Reserves len bytes for key and returns a pointer to fill before the
 * transaction ends (avoids a copy for large values). */
int vr_put_reserve(vr_txn *txn, vr_dbi db, const void *key, size_t klen,
		   size_t len, void **val);
/* Deletes a key; VR_ENOTFOUND when absent. */
int vr_del(vr_txn *txn, vr_dbi db, const void *key, size_t klen);
/* Number of entries in db as seen by txn. */
int vr_count(vr_txn *txn, vr_dbi db, uint64_t *out);
/* The last key of an integer-key db (the highest sequence), or
 * VR_ENOTFOUND when empty. */
int vr_last_u64(vr_txn *txn, vr_dbi db, uint64_t *key);

/* Cursors, for iteration in key order. vr_cursor_seek positions at the
 * first key >= key (key NULL: the first key). vr_cursor_next advances.
 * Both return VR_ENOTFOUND past the end; any of k, kl, v, vl may be NULL.
 * Pointers are valid until the next cursor move or the transaction ends.
 * Close a cursor before its transaction ends (before the write callback
 * returns, before vr_store_read_end). */
int vr_cursor_open(vr_txn *txn, vr_dbi db, vr_cursor **out);
int vr_cursor_seek(vr_cursor *c, const void *key, size_t klen,
		   const void **k, size_t *kl, const void **v, size_t *vl);
int vr_cursor_next(vr_cursor *c, const void **k, size_t *kl,
		   const void **v, size_t *vl);
void vr_cursor_close(vr_cursor *c);

/* The LMDB message of this thread's last store failure ("" if none). */
const char *vr_store_last_error(void);

#endif
