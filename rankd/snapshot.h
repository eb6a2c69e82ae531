/* snapshot: rankd's served models in LMDB, so a restarted rankd serves the
 * same rankings before it reports SERVING, even while featured is down.
 *
 * A snapshot (version N) is the trained model plus the serving item matrix
 * folded from it (one row of D floats per item, serving.h), so start-up
 * needs neither featured's vectors nor a GEMM over them:
 *   db "models"     "v<N>"           the model (rk_model_save's format)
 *   db "rows"       "v<N>"           a 32-byte header (magic, dim, n) then
 *                                    n rows of dim floats: the item matrix
 *                                    as training left it
 *   db "cold_rows"  be32 N, be32 i   dim floats: item i's row written
 *                                    later by the change-feed follower (a
 *                                    new item, or a new image of one)
 *   db "serving"    "meta/v<N>"      struct rk_snap_meta
 *                   "active"         uint64 N of the served snapshot
 *                   "featured_seq"   uint64: featured's change feed is
 *                                    applied up to this sequence
 * Items beyond the stored rows without a cold row load as zero rows (an
 * item that arrived with no vector: β_i = γ_i = 0 and no visual terms).
 *
 * Writing a snapshot is rk_snap_save (model, rows and meta; not served
 * yet), then rk_snap_activate, whose one transaction moves "active": a
 * crash between the two leaves the previous snapshot active and an orphan
 * that the next save of that version number overwrites.
 *
 * Thread-safety: as the store (any thread; LMDB serialises writers). */
#ifndef RK_SNAPSHOT_H
#define RK_SNAPSHOT_H

#include <stdint.h>

#include "index.h"
#include "model.h"
#include "store.h"

typedef struct rk_snap_meta {
	uint64_t version;
	uint32_t kind;            /* enum rk_model_kind */
	uint32_t n_rows;          /* rows stored in "rows" (the model's items) */
	uint32_t dim;             /* D, floats per row */
	uint32_t feature_dims;    /* F (VBPR), K' (DVBPR), 0 (BPR) */
	uint32_t feature_version; /* featured's model version of the vectors */
	uint32_t use_all;         /* 1: trained on every interaction (no test items) */
	int64_t created_unix;
	uint64_t trained_pairs;   /* training interactions */
} rk_snap_meta;

typedef struct rk_snap {
	vr_store *st;
	vr_dbi models, rows, cold_rows, serving;
} rk_snap;

/* Opens (creating) the four databases; at start-up, before threads use the
 * store. Returns 0 or a store error. */
int rk_snap_open(rk_snap *s, vr_store *st);

/* The version number the next snapshot should take: one above the highest
 * ever activated (1 on a fresh store). Returns 0 or a store error. */
int rk_snap_next_version(rk_snap *s, uint64_t *out);

/* Stores model m as snapshot meta->version with its item matrix rows
 * (meta->n_rows × meta->dim floats, row-major) and meta, in two
 * transactions (the model; the rows and meta). Not served until
 * rk_snap_activate. Returns 0, VR_EINVAL (meta disagrees with m), or a
 * store error. */
int rk_snap_save(rk_snap *s, const rk_model *m, const float *rows, const rk_snap_meta *meta);

/* Makes version the active snapshot and sets featured_seq, in one
 * transaction. Returns 0, VR_ENOTFOUND (no meta of that version), or a
 * store error. */
int rk_snap_activate(rk_snap *s, uint64_t version, uint64_t featured_seq);

/* The meta of the active snapshot. Returns 0, VR_ENOTFOUND when none was
 * activated, VR_ECORRUPT, or a store error. */
int rk_snap_active(rk_snap *s, rk_snap_meta *meta);

/* Loads snapshot meta->version: its model into *model and a new serving
 * index of its rows, cold rows applied (gaps filled with zero rows), into
 * *index. n_items: the items rankd's interactions know, which every cold
 * row's item is below (the follower stores an item's id before its row).
 * On failure both stay NULL. Returns 0, VR_ENOTFOUND (a part is missing),
 * VR_ECORRUPT (sizes disagree, a value is not finite, a cold row of an
 * unknown item), VR_ENOMEM, or a store or index error. */
int rk_snap_load(rk_snap *s, const rk_snap_meta *meta, uint32_t n_items, rk_model **model,
		 struct rk_index **index);

/* The decoding halves of rk_snap_active and rk_snap_load, from the stored
 * bytes (callable without a store: tests, fuzzing). Nothing is trusted
 * before it was checked against the lengths.
 * rk_snap_meta_decode: a "meta/v<N>" value of snapshot version into *meta.
 *   Returns 0 or VR_ECORRUPT.
 * rk_snap_decode: the "models" and "rows" values of the snapshot meta
 *   describes, into a new model and a new index of its rows (both NULL on
 *   failure). Returns 0, VR_ECORRUPT (a value disagrees with meta or with
 *   its own length, or is not finite), VR_ENOMEM, or an index error.
 * rk_snap_cold_apply: one "cold_rows" record (k: its 8-byte key, v: vl
 *   bytes) set into index; row is scratch of dim floats. Returns 0,
 *   VR_ECORRUPT (vl is not dim floats, a value is not finite, the item is
 *   not below n_items) or an index error. */
int rk_snap_meta_decode(const void *val, size_t len, uint64_t version, rk_snap_meta *meta);
int rk_snap_decode(const rk_snap_meta *meta, const void *model, size_t model_len,
		   const void *rows, size_t rows_len, rk_model **model_out,
		   struct rk_index **index_out);
int rk_snap_cold_apply(struct rk_index *index, const void *k, const void *v, size_t vl,
		       uint32_t dim, uint32_t n_items, float *row);

/* Stores item's row (dim floats) for snapshot version and featured_seq, in
 * one transaction. Returns 0 or a store error. */
int rk_snap_put_row(rk_snap *s, uint64_t version, uint32_t item, const float *row,
		    uint32_t dim, uint64_t featured_seq);

/* Stores featured_seq alone. Returns 0 or a store error. */
int rk_snap_put_seq(rk_snap *s, uint64_t featured_seq);

/* The stored featured_seq (0 when never stored). Returns 0 or a store
 * error. */
int rk_snap_seq(rk_snap *s, uint64_t *featured_seq);

/* Deletes every part of a snapshot that is no longer served. Returns 0 or
 * a store error; VR_ESTATE when version is the active one. */
int rk_snap_drop(rk_snap *s, uint64_t version);

#endif
