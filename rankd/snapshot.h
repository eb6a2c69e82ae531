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
 *                                    applied up to this sequence (one
 *                                    featured)
 *                   "featured_seq/<tag>/<address>"  uint64: the same, per
 *                                    shard of the shard map of that tag
 *                                    (several featured shards)
 * Items beyond the stored rows without a cold row load as zero rows (an
 * item that arrived with no vector: β_i = γ_i = 0 and no visual terms).
 *
 * Writing a snapshot is rk_snap_save (model, rows and meta; not served
 * yet), then rk_snap_activate, whose one transaction moves "active": a
 * crash between the two leaves the previous snapshot active and an orphan
 * that the next save of that version number overwrites.
 *
 * A DVBPR run's checkpoint (rk_snap_ckpt_*) lives in "models" too:
 *                   "dvbpr/checkpoint"         the run's model (rk_model_save's
 *                                              format; its version is the step)
 *                   "dvbpr/checkpoint-best"    the best epoch's model so far
 *                                              (the same version)
 *                   "dvbpr/checkpoint-adam-m"  Adam's moments, n_params
 *                   "dvbpr/checkpoint-adam-v"  floats each (Adam only)
 *                   "dvbpr/checkpoint-meta"    struct rk_snap_ckpt
 * all written in one transaction, so a crash leaves the previous
 * checkpoint whole or the new one whole, never the models of one with the
 * meta of the other.
 *
 * Read replicas (rankd --writer) copy snapshots whole: an export is one
 * version's model, rows, meta, cold rows and featured_seq, read in one
 * read transaction (a 56-byte header, then the stored values as they
 * are), which the writer streams in chunks (rk_snap_reader) or
 * rk_snap_export copies into one buffer; the replica
 * stages the chunks it got in
 *   db "snapshot_stage"  "h"             the staged export's version, size, CRC
 *                        be64 offset     the bytes of the export from offset
 * so a restart resumes after the last one, and rk_snap_import stores the
 * export's parts under their usual keys in one transaction, after checking
 * them as rk_snap_load would.
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
	vr_dbi models, rows, cold_rows, serving, stage;
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

/* The key of one featured's feed position (above). */
#define RK_SNAP_SEQ_KEY "featured_seq"

/* A feed position to store: the key (RK_SNAP_SEQ_KEY or a shard's) and
 * the sequence. */
typedef struct rk_snap_pos {
	const char *key;
	uint64_t seq;
} rk_snap_pos;

/* Makes version the active snapshot and stores the n feed positions pos,
 * in one transaction. Returns 0, VR_ENOTFOUND (no meta of that version),
 * or a store error. */
int rk_snap_activate(rk_snap *s, uint64_t version, const rk_snap_pos *pos, size_t n);

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

/* Stores item's row (dim floats) for snapshot version and the feed
 * position pos, in one transaction. Returns 0 or a store error. */
int rk_snap_put_row(rk_snap *s, uint64_t version, uint32_t item, const float *row,
		    uint32_t dim, const rk_snap_pos *pos);

/* Stores a feed position alone. Returns 0 or a store error. */
int rk_snap_put_seq(rk_snap *s, const rk_snap_pos *pos);

/* The feed position stored under key (0 when never stored). Returns 0 or
 * a store error. */
int rk_snap_seq(rk_snap *s, const char *key, uint64_t *seq);

/* Deletes the per-shard positions ("featured_seq/...") whose key does not
 * start with keep (the current map's "featured_seq/<tag>/"; NULL: all of
 * them), and *dropped counts them. Returns 0 or a store error. */
int rk_snap_seq_forget(rk_snap *s, const char *keep, size_t *dropped);

/* Where a DVBPR run stands (train_dvbpr.c), beside the models stored
 * with it: saved every checkpoint_every steps, when featured has saved its
 * net at the same step. The layout is stored as it is: a change of it
 * changes RK_SNAP_CKPT_MAGIC. */
#define RK_SNAP_CKPT_MAGIC 0x44564251u /* "DVBQ": with the best epoch and Adam */
typedef struct rk_snap_ckpt {
	uint32_t magic, epoch;         /* the epoch in progress, 1-based */
	uint64_t step, epoch_step;     /* steps done; of them, in this epoch */
	uint64_t rng[4];
	double epoch_loss;
	char session[65];
	char arch[32];
	uint32_t best_epoch;           /* 0: no epoch validated yet */
	uint32_t bad;                  /* epochs since the best */
	uint64_t best_step;            /* the best epoch's net in featured */
	double best_auc, best_loss;
	uint64_t adam_t;               /* Adam's steps (0: SGD) */
} rk_snap_ckpt;

/* Stores checkpoint c with the run's model, the best epoch's (NULL before
 * the first) and Adam's moments m and v (model->n_params floats each; NULL
 * with SGD), in one transaction. The models' version fields must be
 * c->step. Returns 0, VR_EINVAL (a version is not c->step, c->magic is
 * wrong), or a store error (nothing is written). */
int rk_snap_ckpt_save(rk_snap *s, const rk_model *model, const rk_model *best,
		      const float *adam_m, const float *adam_v, const rk_snap_ckpt *c);

/* Loads the stored checkpoint into c, its model into *model and the best
 * epoch's into *best (NULL when c->best_epoch is 0), both checked to be of
 * c's step and of like's sizes. On failure *model and *best stay NULL.
 * Returns 0, VR_ENOTFOUND (no checkpoint), VR_ECORRUPT (a record is
 * damaged), VR_ESTATE (the models are not of the meta's step or of like's
 * sizes), VR_ENOMEM, or a store error. */
int rk_snap_ckpt_load(rk_snap *s, const rk_model *like, rk_model **model, rk_model **best,
		      rk_snap_ckpt *c);

/* Load's decoding half for the meta: a "dvbpr/checkpoint-meta" value of
 * len bytes into *c (callable without a store: fuzzing). Returns 0 or
 * VR_ECORRUPT (the length, the magic, or a name without its NUL). */
int rk_snap_ckpt_decode(const void *val, size_t len, rk_snap_ckpt *c);

/* Adam's moments of checkpoint c (loaded by rk_snap_ckpt_load), n floats
 * each, into m and v. Returns 0, VR_ENOTFOUND, VR_ESTATE (not n floats, or
 * c was made with SGD), or a store error. */
int rk_snap_ckpt_load_adam(rk_snap *s, const rk_snap_ckpt *c, float *m, float *v, size_t n);

/* Export (above): version's snapshot (0: the active one) as one malloc'd
 * buffer of *len bytes. Returns 0, VR_ENOTFOUND (no such snapshot, or none
 * active), VR_ECORRUPT, VR_ENOMEM or a store error. */
int rk_snap_export(rk_snap *s, uint64_t version, void **out, size_t *len);

/* An export read in pieces, for the Snapshot stream: the parts stay where
 * the store keeps them (one read transaction, held until close) and a
 * reader copies out the bytes of one chunk at a time, so a writer serving
 * replicas holds a chunk, not a copy of the export (1.2 GB at 1 M items of
 * VBPR's dims), per stream. Its size and CRC-32 are known at open (one
 * pass over the parts). While a reader is open LMDB cannot reuse the pages
 * freed after it began: what the writer commits meanwhile grows the file. */
typedef struct rk_snap_reader rk_snap_reader;
/* Opens version's export (0: the active one). Returns 0, VR_ENOTFOUND,
 * VR_ECORRUPT, VR_ENOMEM or a store error. */
int rk_snap_reader_open(rk_snap *s, uint64_t version, rk_snap_reader **out);
uint64_t rk_snap_reader_version(const rk_snap_reader *r);
size_t rk_snap_reader_size(const rk_snap_reader *r);
uint32_t rk_snap_reader_crc(const rk_snap_reader *r);
/* Copies the export's bytes [off, off + n) into dst; off + n <= size. */
void rk_snap_reader_read(const rk_snap_reader *r, size_t off, void *dst, size_t n);
/* Ends the read transaction and frees r (NULL is allowed). */
void rk_snap_reader_close(rk_snap_reader *r);

/* An export's parts, pointing into its buffer. */
typedef struct rk_snap_export_view {
	rk_snap_meta meta;
	uint64_t featured_seq;  /* the writer's featured feed position */
	uint32_t need_items;    /* items the importer must know: rows and cold rows */
	const char *meta_val, *model, *rows, *cold;
	size_t meta_len, model_len, rows_len;
	uint32_t n_cold;        /* cold records: u32 item, then dim floats */
} rk_snap_export_view;

/* Checks an export's framing (every length, the meta, the cold rows'
 * items) and points x at its parts; callable without a store (fuzzing).
 * Returns 0 or VR_ECORRUPT. */
int rk_snap_export_decode(const void *buf, size_t len, rk_snap_export_view *x);
/* Stores a decoded export's parts under its version after checking the
 * model and rows as rk_snap_load does (not served until rk_snap_activate).
 * Returns 0, VR_ECORRUPT, VR_ENOMEM or a store error. */
int rk_snap_import(rk_snap *s, const rk_snap_export_view *x);

/* The stage (above). put: stores a chunk at offset of the export (version,
 * total bytes, whole_crc), clearing a stage of another export first.
 * state: the staged export (version 0: none) and the contiguous bytes held
 * from 0. take: those total bytes as one malloc'd buffer (VR_ECORRUPT when
 * they do not add up to total). clear: drops the stage. Each returns 0, or
 * VR_ENOMEM, VR_ECORRUPT, or a store error. */
int rk_snap_stage_put(rk_snap *s, uint64_t version, uint64_t total, uint32_t whole_crc,
		      uint64_t offset, const void *data, size_t len);
int rk_snap_stage_state(rk_snap *s, uint64_t *version, uint64_t *total, uint32_t *whole_crc,
			uint64_t *have);
int rk_snap_stage_take(rk_snap *s, uint64_t total, void **out);
int rk_snap_stage_clear(rk_snap *s);

/* Deletes every part of a snapshot that is no longer served. Returns 0 or
 * a store error; VR_ESTATE when version is the active one. */
int rk_snap_drop(rk_snap *s, uint64_t version);

#endif
