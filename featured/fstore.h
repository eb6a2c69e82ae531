/* fstore: featured's data in its LMDB environment (common/store.h).
 *
 * Databases and their records (integers little-endian, as the host):
 *   images   item id -> the original JPEG bytes
 *   items    item id -> {num u64, seq u64, version u32, 0 u32, added unix s i64}
 *            num: the item's ordinal, given once at its first ingest and
 *            kept when the item is replaced; seq: its latest change;
 *            version: the model version of its newest vector
 *   vectors  {version u32 big-endian, num u64 big-endian} ->
 *            {version u32, dims u32, dtype u32 (1 = f32), id length u32,
 *             dims floats, the item id}
 *            Keyed by version first, so one version's vectors are one
 *            contiguous range in order of first ingest: GetVectors(all) and
 *            re-embedding are sequential scans, and a new version's vectors
 *            can be written beside the active ones.
 *   changes  seq (integer key) -> {kind u32, version u32, the item id}
 *   models   version (integer key) -> a JSON object (fd_model_info)
 *   meta     "active_version" -> u32, "next_num" -> u64,
 *            "live_versions" -> up to FD_MAX_LIVE u32 (fd_fstore_live_get)
 *
 * Every write is one transaction through vr_store_write, so a caller that
 * acks after a write returns acks only what is on disk. Writes come from
 * featured's executor thread; reads from any thread, in short read
 * transactions that callers end before any blocking call.
 *
 * Errors: those of store.h (VR_ENOTFOUND, VR_EMAPFULL, VR_ECORRUPT for a
 * record that does not parse, -errno, VR_ESTORE), VR_ENOMEM, and those
 * named per function. */
#ifndef FD_FSTORE_H
#define FD_FSTORE_H

#include "ids.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

/* Longest item id in bytes; the whole rule is vr_id_check (ids.h). */
#define FD_MAX_ID VR_ID_MAX

/* Change kinds: the values of visrec.v1.ItemChange.Kind. */
enum fd_change_kind {
	FD_ADDED = 1,          /* a new item id */
	FD_REPLACED = 2,       /* an existing id got a new image */
	FD_REEMBEDDED = 3,     /* same image, a new vector of the active version */
	FD_MODEL_SWITCHED = 4, /* the active version changed; no item */
	FD_REMOVED = 5,        /* the item was deleted here (version 0) */
};

/* One model version's row. */
typedef struct fd_model_info {
	uint32_t version;
	char arch[32];         /* "alexnet", "cnnf", "small" */
	char layer[64];        /* whose activations the vectors are: "output", "fc7" ... */
	uint32_t dims;         /* floats per vector */
	uint32_t input_size;   /* S: images are S x S */
	uint32_t num_outputs;  /* K of the net's last layer */
	char weights[128];     /* safetensors file, relative to the data directory */
	int64_t created_unix;
	char purpose[16];      /* "embedding" (the net's output: DVBPR) or "features" (VBPR) */
	float mean[3], std[3]; /* input normalisation */
	char precision[8];     /* the math its vectors are made in (nn_precision_name: "fp32",
				* "tf32", "bf16"); "" in a row from before versions recorded it */
} fd_model_info;

/* One stored vector, pointing into the map (valid until the transaction
 * ends). values may be unaligned: copy it with memcpy. */
typedef struct fd_vec {
	const char *item_id;   /* not NUL-terminated */
	size_t id_len;
	uint64_t num;
	uint32_t version, dims;
	const void *values;    /* dims little-endian floats */
} fd_vec;

/* One item (pointers into the map, valid until the transaction ends). */
typedef struct fd_item {
	const char *item_id;   /* not NUL-terminated */
	size_t id_len;
	uint64_t num, seq;
	uint32_t version;
	int64_t added_unix;
	const void *image;     /* the JPEG */
	size_t image_len;
} fd_item;

/* One change-feed entry (item_id points into the map). */
typedef struct fd_change {
	uint64_t seq;
	int kind;              /* enum fd_change_kind */
	uint32_t version;
	const char *item_id;   /* not NUL-terminated; empty for FD_MODEL_SWITCHED */
	size_t id_len;
} fd_change;

/* An item to store with its vector (fd_fstore_put_items). */
typedef struct fd_put {
	const char *item_id;   /* NUL-terminated, 1..FD_MAX_ID bytes */
	const void *image;
	size_t image_len;
	const float *vector;   /* dims floats */
	uint64_t seq;          /* out: the change that recorded it */
	int kind;              /* out: FD_ADDED or FD_REPLACED */
} fd_put;

/* A new vector for a stored item (fd_fstore_put_vectors). */
typedef struct fd_revec {
	const char *item_id;   /* NUL-terminated */
	uint64_t seq;          /* the item's seq when its image was read */
	const float *vector;
	int stored;            /* out: 0 when the item was replaced or is gone since */
} fd_revec;

typedef struct fd_fstore fd_fstore;

/* Opens (creating) featured's databases in st, which stays the caller's.
 * Errors: the store's, VR_ENOMEM. */
int fd_fstore_open(fd_fstore **out, vr_store *st);
void fd_fstore_close(fd_fstore *fs);
vr_store *fd_fstore_store(fd_fstore *fs);

/* ---- writes ------------------------------------------------------------- */

/* Stores n items in one transaction: image, the vector of version (dims
 * floats), an items row and a change each (FD_ADDED for a new id,
 * FD_REPLACED for a known one, whose vectors of other versions are
 * deleted since they describe the old image). An id twice in puts is
 * added, then replaced. Fills each put's seq and kind, then wakes
 * fd_fstore_wait. */
int fd_fstore_put_items(fd_fstore *fs, uint32_t version, uint32_t dims, fd_put *puts, size_t n);

/* Vectors of another model version for the items of one
 * fd_fstore_put_items_more call: n × dims floats in the puts' order. */
typedef struct fd_more_vecs {
	uint32_t version, dims;
	const float *vectors;
} fd_more_vecs;

/* As fd_fstore_put_items, and in the same transaction each item's vector
 * of every more[m].version with an FD_REEMBEDDED change of that version
 * after its own change (the live versions: executor.h). */
int fd_fstore_put_items_more(fd_fstore *fs, uint32_t version, uint32_t dims, fd_put *puts,
			     size_t n, const fd_more_vecs *more, size_t nmore);

/* Live versions: model versions besides the active one that featured
 * keeps embedding new items with (DVBPR's trained nets, which do not
 * replace the active features), oldest first, at most FD_MAX_LIVE.
 * fd_fstore_live_set replaces the list; every version must have a row
 * (VR_ENOTFOUND), n <= FD_MAX_LIVE (VR_EINVAL). */
#define FD_MAX_LIVE 2
int fd_fstore_live_get(fd_fstore *fs, uint32_t *versions, size_t *n);
int fd_fstore_live_set(fd_fstore *fs, const uint32_t *versions, size_t n);

/* Stores n vectors of version for items that still have the seq the
 * caller read (re-embedding); an item replaced or gone since is left
 * alone (stored = 0). If version is the active one, each stored vector
 * also gets an FD_REEMBEDDED change (and the item that seq). One
 * transaction. Errors: VR_ENOTFOUND (no such model version). */
int fd_fstore_put_vectors(fd_fstore *fs, uint32_t version, uint32_t dims, fd_revec *v, size_t n);

/* Makes version the active one, in one transaction: checks every item has
 * a vector of it, sets each item's version, the active version, and
 * appends an FD_MODEL_SWITCHED change (*seq, may be NULL). Errors:
 * VR_ENOTFOUND (no such version), VR_ESTATE when *missing (may be NULL)
 * items lack its vector (nothing changed). */
int fd_fstore_switch(fd_fstore *fs, uint32_t version, uint64_t *seq, uint64_t *missing);

/* Adds a model row. info->version 0 takes the next free number (written
 * back). activate: also make it the active version, allowed only while no
 * item is stored (the first model). Errors: VR_EEXIST (version taken),
 * VR_ESTATE (activate with items stored), VR_EINVAL (empty arch). */
int fd_fstore_model_add(fd_fstore *fs, fd_model_info *info, int activate);

/* A vector of a moved item (fd_fstore_import); values may be unaligned. */
typedef struct fd_import_vec {
	uint32_t version, dims;
	const void *values;    /* dims little-endian floats */
} fd_import_vec;

/* An item moved here from another shard, as its source stored it. */
typedef struct fd_import {
	const char *item_id;   /* NUL-terminated, 1..FD_MAX_ID bytes */
	const void *image;
	size_t image_len;
	int64_t added_unix;    /* kept */
	uint32_t version;      /* the items row's version: its newest vector */
	const fd_import_vec *vecs;
	size_t nvecs;
	uint64_t seq;          /* out: the change that recorded it */
	int kind;              /* out: FD_ADDED, or FD_REPLACED when the id was here */
} fd_import;

/* Stores n moved items in one transaction: image, items row (a new num
 * here; added_unix and version as given), each vector as given, and one
 * change each (of version). A known id loses every vector it had first.
 * Model rows are not checked here. Wakes fd_fstore_wait. */
int fd_fstore_import(fd_fstore *fs, fd_import *items, size_t n);

/* Deletes n items (image, items row, every vector; an unknown id is
 * skipped) and, in the same transaction, appends an FD_REMOVED change
 * (version 0) for each item deleted and sets the meta record key (not one
 * of the keys above) to val (len bytes), so that a journal, what it
 * describes and the feed's word of it commit together. Wakes
 * fd_fstore_wait when it removed any. *deleted (may be NULL): items that
 * were there. */
int fd_fstore_remove(fd_fstore *fs, const char *const *ids, size_t n, const char *key,
		     const void *val, size_t len, uint64_t *deleted);

/* A meta record of another module (a journal): fd_fstore_note_get copies
 * it into *val (malloc'd, the caller frees) and *len; VR_ENOTFOUND when
 * absent. fd_fstore_note_put writes it in a transaction of its own. */
int fd_fstore_note_get(fd_fstore *fs, const char *key, void **val, size_t *len);
int fd_fstore_note_put(fd_fstore *fs, const char *key, const void *val, size_t len);

/* ---- reads -------------------------------------------------------------- */

/* The active model version; VR_ENOTFOUND before the first model. */
int fd_fstore_active(fd_fstore *fs, uint32_t *version);
/* A model's row; version 0 = the active one. VR_ENOTFOUND. */
int fd_fstore_model_get(fd_fstore *fs, uint32_t version, fd_model_info *out);
/* Up to cap rows in version order into out; *n how many exist. */
int fd_fstore_model_list(fd_fstore *fs, fd_model_info *out, size_t cap, size_t *n);
/* The next model version number (last + 1, or 1). */
int fd_fstore_model_next(fd_fstore *fs, uint32_t *version);
/* Stored items and the last committed change. */
int fd_fstore_stats(fd_fstore *fs, uint64_t *items, uint64_t *last_seq);
/* The last committed seq as this process knows it (no transaction). */
uint64_t fd_fstore_last_seq(fd_fstore *fs);
/* How many model rows this process added since the store was opened,
 * counted after each commit: a reply built from the model rows stays
 * valid while this stays the same (featured's Info). */
uint64_t fd_fstore_models_gen(fd_fstore *fs);
/* Waits for a commit past after_seq, until deadline_ms (vr_now_ms scale;
 * VR_FOREVER: no deadline) or until stop(arg) (may be NULL) is true.
 * stop is checked under the lock fd_fstore_wake takes, so a wake-up sent
 * after stop became true is never missed. Returns 1 when the last seq is
 * past after_seq, else 0. */
int fd_fstore_wait(fd_fstore *fs, uint64_t after_seq, int64_t deadline_ms, int (*stop)(void *),
		   void *arg);
/* Wakes every fd_fstore_wait on fs (an fd_fstore *) to look at its stop
 * condition again; the shape vr_call_wake_on_stop wants. */
void fd_fstore_wake(void *fs);

/* Within a read transaction of the store (vr_store_read_begin):
 * fd_fstore_vec_get: the vector of item_id (NUL-terminated) in version.
 * fd_fstore_vec_next: the first vector of version whose num >= from_num.
 * fd_fstore_vec_num: the vector of version and item num.
 * fd_fstore_item_get: an item and its image (out->item_id is item_id).
 * fd_fstore_item_next: the first item whose id sorts after after_id (NULL
 *   or "": the first item), with its image.
 * fd_fstore_change_next: the first change with seq > after_seq.
 * All return 0, VR_ENOTFOUND (none / past the end), VR_ECORRUPT. */
int fd_fstore_vec_get(fd_fstore *fs, vr_txn *txn, uint32_t version, const char *item_id,
		      fd_vec *out);
int fd_fstore_vec_next(fd_fstore *fs, vr_txn *txn, uint32_t version, uint64_t from_num,
		       fd_vec *out);
int fd_fstore_vec_num(fd_fstore *fs, vr_txn *txn, uint32_t version, uint64_t num, fd_vec *out);
int fd_fstore_item_get(fd_fstore *fs, vr_txn *txn, const char *item_id, fd_item *out);
int fd_fstore_item_next(fd_fstore *fs, vr_txn *txn, const char *after_id, fd_item *out);
int fd_fstore_change_next(fd_fstore *fs, vr_txn *txn, uint64_t after_seq, fd_change *out);

/* ---- record decoders ------------------------------------------------------ */

/* What the reads above use to parse one stored record (key k of kl bytes,
 * value v of vl bytes, layouts at the top of this file); callable without
 * a store, so tests and the fuzz harnesses feed them bytes. The outputs
 * point into k and v. Each returns 0 or VR_ECORRUPT; nothing is trusted
 * before it was checked against kl and vl.
 * fd_vec_decode: a "vectors" record (key and value).
 * fd_item_decode: an "items" record (k is the item id); image stays NULL.
 * fd_change_decode: a "changes" record (k is the 8-byte seq).
 * fd_model_decode: a "models" value (JSON): the numbers whole and in
 *   their fields' range, mean and std finite, std non-zero. */
int fd_vec_decode(const void *k, size_t kl, const void *v, size_t vl, fd_vec *out);
int fd_item_decode(const void *k, size_t kl, const void *v, size_t vl, fd_item *out);
int fd_change_decode(const void *k, size_t kl, const void *v, size_t vl, fd_change *out);
int fd_model_decode(const void *v, size_t vl, fd_model_info *out);
/* The "models" value of m (JSON, NUL-terminated, malloc'd: the caller
 * frees it), what fd_model_decode reads; NULL on allocation failure. */
char *fd_model_encode(const fd_model_info *m);

#endif
