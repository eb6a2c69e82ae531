/* snapshot: rankd's served models in LMDB (the layout is in snapshot.h).
 * One file over 800 lines because it is one concept: every record of the
 * model databases (snapshots, cold rows, feed positions, checkpoints,
 * exports), read and written where the layout is kept in one place. */
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "err.h"
#include "fault.h"
#include "grow.h"

#define ROWS_MAGIC "RKROWS01"
#define ROWS_HEADER 32
#define META_MAGIC 0x524b4d31u /* "RKM1" */
#define COPY_ROWS 1024         /* rows copied per call from a misaligned value */
#define LOAD_BYTES (32u << 20) /* rows appended per call straight from the map */

struct rows_header {
	char magic[8];
	uint32_t dim;
	uint32_t n;
	uint64_t version;
	uint64_t reserved;
};

struct meta_rec {
	uint32_t magic;
	uint32_t size;
	rk_snap_meta meta;
};

static void version_key(char *buf, size_t cap, uint64_t version)
{
	snprintf(buf, cap, "v%llu", (unsigned long long)version);
}

static void meta_key(char *buf, size_t cap, uint64_t version)
{
	snprintf(buf, cap, "meta/v%llu", (unsigned long long)version);
}

static void row_key(uint8_t key[8], uint64_t version, uint32_t item)
{
	uint32_t v = (uint32_t)version;
	for (int b = 0; b < 4; b++) {
		key[b] = (uint8_t)(v >> (24 - 8 * b));
		key[4 + b] = (uint8_t)(item >> (24 - 8 * b));
	}
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int rk_snap_open(rk_snap *s, vr_store *st)
{
	memset(s, 0, sizeof *s);
	s->st = st;
	int rc = vr_store_dbi(st, "models", 0, &s->models);
	if (!rc)
		rc = vr_store_dbi(st, "rows", 0, &s->rows);
	if (!rc)
		rc = vr_store_dbi(st, "cold_rows", 0, &s->cold_rows);
	if (!rc)
		rc = vr_store_dbi(st, "serving", 0, &s->serving);
	if (!rc)
		rc = vr_store_dbi(st, "snapshot_stage", 0, &s->stage);
	return rc;
}

static int get_u64(rk_snap *s, const char *key, uint64_t *out)
{
	vr_txn *txn;
	const void *val;
	size_t len;
	int rc = vr_store_read_begin(s->st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, s->serving, key, strlen(key), &val, &len);
	if (!rc && len != sizeof *out)
		rc = VR_ECORRUPT;
	if (!rc)
		memcpy(out, val, sizeof *out);
	vr_store_read_end(txn);
	return rc;
}

int rk_snap_next_version(rk_snap *s, uint64_t *out)
{
	uint64_t last = 0;
	int rc = get_u64(s, "last_version", &last);
	if (rc && rc != VR_ENOTFOUND)
		return rc;
	*out = last + 1;
	return 0;
}

struct save_rows_ctx {
	rk_snap *s;
	const float *rows;
	const rk_snap_meta *meta;
};

static int save_rows_fn(vr_txn *txn, void *arg)
{
	struct save_rows_ctx *c = arg;
	const rk_snap_meta *m = c->meta;
	char key[32];
	void *dst;
	size_t bytes = (size_t)m->n_rows * m->dim * sizeof(float);
	version_key(key, sizeof key, m->version);
	int rc = vr_put_reserve(txn, c->s->rows, key, strlen(key), ROWS_HEADER + bytes, &dst);
	if (rc)
		return rc;
	struct rows_header h = { .dim = m->dim, .n = m->n_rows, .version = m->version };
	memcpy(h.magic, ROWS_MAGIC, sizeof h.magic);
	memcpy(dst, &h, sizeof h);
	if (bytes)
		memcpy((char *)dst + ROWS_HEADER, c->rows, bytes);
	struct meta_rec rec = { .magic = META_MAGIC, .size = sizeof rec, .meta = *m };
	meta_key(key, sizeof key, m->version);
	return vr_put(txn, c->s->serving, key, strlen(key), &rec, sizeof rec);
}

int rk_snap_save(rk_snap *s, const rk_model *m, const float *rows, const rk_snap_meta *meta)
{
	_Static_assert(sizeof(struct rows_header) == ROWS_HEADER, "rows header is 32 bytes");
	if (meta->kind != (uint32_t)m->d.kind || meta->n_rows != m->d.n_items ||
	    meta->dim != rk_model_dim(m))
		return VR_EINVAL;
	char key[32];
	version_key(key, sizeof key, meta->version);
	int rc = rk_model_save(m, s->st, s->models, key);
	if (rc)
		return rc;
	struct save_rows_ctx c = { s, rows, meta };
	return vr_store_write(s->st, save_rows_fn, &c);
}

struct activate_ctx {
	rk_snap *s;
	uint64_t version;
	const rk_snap_pos *pos;
	size_t n;
};

static int put_pos(vr_txn *txn, rk_snap *s, const rk_snap_pos *pos)
{
	return vr_put(txn, s->serving, pos->key, strlen(pos->key), &pos->seq, sizeof pos->seq);
}

static int activate_fn(vr_txn *txn, void *arg)
{
	struct activate_ctx *c = arg;
	char key[32];
	const void *val;
	size_t len;
	uint64_t last = 0;
	meta_key(key, sizeof key, c->version);
	int rc = vr_get(txn, c->s->serving, key, strlen(key), &val, &len);
	if (rc)
		return rc;
	rc = vr_get(txn, c->s->serving, "last_version", 12, &val, &len);
	if (!rc && len == sizeof last)
		memcpy(&last, val, sizeof last);
	else if (rc && rc != VR_ENOTFOUND)
		return rc;
	if (c->version > last)
		last = c->version;
	if ((rc = vr_put(txn, c->s->serving, "active", 6, &c->version, sizeof c->version)))
		return rc;
	if ((rc = vr_put(txn, c->s->serving, "last_version", 12, &last, sizeof last)))
		return rc;
	for (size_t k = 0; k < c->n && !rc; k++)
		rc = put_pos(txn, c->s, &c->pos[k]);
	return rc;
}

int rk_snap_activate(rk_snap *s, uint64_t version, const rk_snap_pos *pos, size_t n)
{
	struct activate_ctx c = { s, version, pos, n };
	return vr_store_write(s->st, activate_fn, &c);
}

int rk_snap_meta_decode(const void *val, size_t len, uint64_t version, rk_snap_meta *meta)
{
	struct meta_rec rec;
	if (len != sizeof rec)
		return VR_ECORRUPT;
	memcpy(&rec, val, sizeof rec);
	if (rec.magic != META_MAGIC || rec.meta.version != version)
		return VR_ECORRUPT;
	*meta = rec.meta;
	return 0;
}

int rk_snap_active(rk_snap *s, rk_snap_meta *meta)
{
	uint64_t version;
	int rc = get_u64(s, "active", &version);
	if (rc)
		return rc;
	vr_txn *txn;
	const void *val;
	size_t len;
	char key[32];
	meta_key(key, sizeof key, version);
	if ((rc = vr_store_read_begin(s->st, &txn)))
		return rc;
	rc = vr_get(txn, s->serving, key, strlen(key), &val, &len);
	if (!rc)
		rc = rk_snap_meta_decode(val, len, version, meta);
	vr_store_read_end(txn);
	return rc == VR_ENOTFOUND ? VR_ECORRUPT : rc;
}

/* Unmaps the whole pages of [p, p + len), a part of the LMDB map that has
 * been read: the map is read-only, so this only drops the pages from this
 * process (a later read faults them in again from the page cache). Loading
 * a big snapshot would otherwise keep every byte of it resident twice, in
 * the map and in the index or model built from it. */
static void drop_pages(const void *p, size_t len)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + len) & ~(page - 1);
	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Appends n rows that may sit at any address in the map (LMDB aligns small
 * values to 2 bytes only). */
static int append_stored(struct rk_index *index, const void *src, uint32_t n, uint32_t dim,
			 int mapped)
{
	if (((uintptr_t)src & (sizeof(float) - 1)) == 0) {
		uint32_t per = LOAD_BYTES / (dim * (uint32_t)sizeof(float));
		int rc = 0;
		for (uint32_t done = 0; done < n && !rc;) {
			uint32_t take = n - done < per ? n - done : per;
			const float *rows = (const float *)src + (size_t)done * dim;
			rc = rk_index_append(index, rows, take, NULL);
			if (mapped)
				drop_pages(rows, (size_t)take * dim * sizeof(float));
			done += take;
		}
		return rc;
	}
	float *buf = malloc((size_t)COPY_ROWS * dim * sizeof(float));
	if (!buf)
		return VR_ENOMEM;
	int rc = 0;
	for (uint32_t done = 0; done < n && !rc;) {
		uint32_t take = n - done < COPY_ROWS ? n - done : COPY_ROWS;
		memcpy(buf, (const char *)src + (size_t)done * dim * sizeof(float),
		       (size_t)take * dim * sizeof(float));
		rc = rk_index_append(index, buf, take, NULL);
		done += take;
	}
	free(buf);
	return rc;
}

int rk_snap_cold_apply(struct rk_index *index, const void *k, const void *v, size_t vl,
		       uint32_t dim, uint32_t n_items, float *row)
{
	uint32_t item = be32((const uint8_t *)k + 4);
	if (vl != (size_t)dim * sizeof(float) || item >= n_items)
		return VR_ECORRUPT;
	memcpy(row, v, vl);
	int rc = rk_index_set_row(index, item, row);
	return rc == VR_EINVAL ? VR_ECORRUPT : rc; /* a value that is not finite */
}

/* Applies the cold rows of version to index, in item order. */
static int apply_cold(rk_snap *s, vr_txn *txn, uint64_t version, struct rk_index *index,
		      uint32_t dim, uint32_t n_items, float *row)
{
	vr_cursor *cur;
	uint8_t start[8];
	const void *k, *v;
	size_t kl, vl;
	row_key(start, version, 0);
	int rc = vr_cursor_open(txn, s->cold_rows, &cur);
	if (rc)
		return rc;
	rc = vr_cursor_seek(cur, start, sizeof start, &k, &kl, &v, &vl);
	while (!rc && kl == 8 && !memcmp(k, start, 4)) {
		rc = rk_snap_cold_apply(index, k, v, vl, dim, n_items, row);
		if (!rc)
			rc = vr_cursor_next(cur, &k, &kl, &v, &vl);
	}
	vr_cursor_close(cur);
	return rc == VR_ENOTFOUND ? 0 : rc;
}

/* rk_snap_decode; mapped: rows lie in the LMDB map, whose pages it drops
 * once read (never memory of our own: that would zero it). */
static int snap_decode(const rk_snap_meta *meta, const void *model, size_t model_len,
		       const void *rows, size_t rows_len, rk_model **model_out,
		       struct rk_index **index_out, int mapped)
{
	rk_model *m = NULL;
	struct rk_index *ix = NULL;
	struct rows_header h;
	*model_out = NULL;
	*index_out = NULL;
	int rc = rk_model_decode(&m, model, model_len);
	if (rc)
		return rc;
	rc = VR_ECORRUPT;
	if ((uint32_t)m->d.kind != meta->kind || m->d.n_items != meta->n_rows ||
	    rk_model_dim(m) != meta->dim || rows_len < ROWS_HEADER)
		goto fail;
	memcpy(&h, rows, sizeof h);
	if (memcmp(h.magic, ROWS_MAGIC, sizeof h.magic) || h.dim != meta->dim ||
	    h.n != meta->n_rows || rows_len != ROWS_HEADER + (size_t)h.n * h.dim * sizeof(float))
		goto fail;
	if ((rc = rk_index_create(meta->dim, NULL, &ix)))
		goto fail;
	if (h.n && (rc = append_stored(ix, (const char *)rows + ROWS_HEADER, h.n, h.dim, mapped)))
		goto fail;
	*model_out = m;
	*index_out = ix;
	return 0;
fail:
	rk_index_destroy(ix);
	rk_model_free(m);
	/* The index refuses a dim over its limit or a value that is not
	 * finite: stored, either is damage. */
	return rc == VR_EINVAL ? VR_ECORRUPT : rc;
}

int rk_snap_decode(const rk_snap_meta *meta, const void *model, size_t model_len,
		   const void *rows, size_t rows_len, rk_model **model_out,
		   struct rk_index **index_out)
{
	return snap_decode(meta, model, model_len, rows, rows_len, model_out, index_out, 0);
}

int rk_snap_load(rk_snap *s, const rk_snap_meta *meta, uint32_t n_items, rk_model **model,
		 struct rk_index **index)
{
	vr_txn *txn = NULL;
	float *row = NULL;
	char key[32];
	const void *mval, *rval;
	size_t mlen, rlen;
	*model = NULL;
	*index = NULL;
	version_key(key, sizeof key, meta->version);
	int rc = vr_store_read_begin(s->st, &txn);
	if (rc || (rc = vr_get(txn, s->models, key, strlen(key), &mval, &mlen)) ||
	    (rc = vr_get(txn, s->rows, key, strlen(key), &rval, &rlen)) ||
	    (rc = snap_decode(meta, mval, mlen, rval, rlen, model, index, 1)))
		goto fail;
	drop_pages(mval, mlen);
	if (!(row = malloc((size_t)meta->dim * sizeof(float)))) {
		rc = VR_ENOMEM;
		goto fail;
	}
	if ((rc = apply_cold(s, txn, meta->version, *index, meta->dim, n_items, row)))
		goto fail;
	vr_store_read_end(txn);
	free(row);
	return 0;
fail:
	vr_store_read_end(txn);
	free(row);
	rk_index_destroy(*index);
	rk_model_free(*model);
	*model = NULL;
	*index = NULL;
	return rc;
}

struct put_row_ctx {
	rk_snap *s;
	uint8_t key[8];
	const float *row;
	uint32_t dim;
	const rk_snap_pos *pos;
};

static int put_row_fn(vr_txn *txn, void *arg)
{
	struct put_row_ctx *c = arg;
	int rc = 0;
	if (c->row)
		rc = vr_put(txn, c->s->cold_rows, c->key, sizeof c->key, c->row,
			    (size_t)c->dim * sizeof(float));
	if (!rc && c->pos)
		rc = put_pos(txn, c->s, c->pos);
	return rc;
}

int rk_snap_put_row(rk_snap *s, uint64_t version, uint32_t item, const float *row,
		    uint32_t dim, const rk_snap_pos *pos)
{
	struct put_row_ctx c = { .s = s, .row = row, .dim = dim, .pos = pos };
	row_key(c.key, version, item);
	return vr_store_write(s->st, put_row_fn, &c);
}

int rk_snap_put_seq(rk_snap *s, const rk_snap_pos *pos)
{
	struct put_row_ctx c = { .s = s, .pos = pos };
	return vr_store_write(s->st, put_row_fn, &c);
}

int rk_snap_seq(rk_snap *s, const char *key, uint64_t *seq)
{
	*seq = 0;
	int rc = get_u64(s, key, seq);
	return rc == VR_ENOTFOUND ? 0 : rc;
}

#define SHARD_SEQ_PREFIX RK_SNAP_SEQ_KEY "/"

struct forget_ctx {
	rk_snap *s;
	const char *keep;
	size_t dropped;
};

/* LMDB's longest key is 511 bytes. */
struct forget_key {
	size_t len;
	char key[511];
};

static int forget_fn(vr_txn *txn, void *arg)
{
	struct forget_ctx *c = arg;
	size_t plen = strlen(SHARD_SEQ_PREFIX), klen = c->keep ? strlen(c->keep) : 0;
	struct forget_key *drop = NULL;
	size_t n = 0, cap = 0;
	vr_cursor *cur;
	const void *k;
	size_t kl;
	c->dropped = 0;
	int rc = vr_cursor_open(txn, c->s->serving, &cur);
	if (rc)
		return rc;
	/* The keys first (a cursor does not survive deletes under it). */
	for (rc = vr_cursor_seek(cur, SHARD_SEQ_PREFIX, plen, &k, &kl, NULL, NULL);
	     !rc && kl >= plen && !memcmp(k, SHARD_SEQ_PREFIX, plen);
	     rc = vr_cursor_next(cur, &k, &kl, NULL, NULL)) {
		if ((c->keep && kl >= klen && !memcmp(k, c->keep, klen)) || kl > sizeof drop->key)
			continue;
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 8;
			struct forget_key *grown = realloc(drop, ncap * sizeof *drop);
			if (!grown) {
				rc = VR_ENOMEM;
				break;
			}
			drop = grown;
			cap = ncap;
		}
		drop[n].len = kl;
		memcpy(drop[n].key, k, kl);
		n++;
	}
	vr_cursor_close(cur);
	if (rc == VR_ENOTFOUND || !rc)
		rc = 0;
	for (size_t i = 0; i < n && !rc; i++)
		if (!(rc = vr_del(txn, c->s->serving, drop[i].key, drop[i].len)))
			c->dropped++;
	free(drop);
	return rc;
}

int rk_snap_seq_forget(rk_snap *s, const char *keep, size_t *dropped)
{
	struct forget_ctx c = { s, keep, 0 };
	int rc = vr_store_write(s->st, forget_fn, &c);
	*dropped = rc ? 0 : c.dropped;
	return rc;
}

struct drop_ctx {
	rk_snap *s;
	uint64_t version;
};

static int drop_fn(vr_txn *txn, void *arg)
{
	struct drop_ctx *c = arg;
	char key[32];
	const void *val;
	size_t len;
	int rc = vr_get(txn, c->s->serving, "active", 6, &val, &len);
	if (!rc && len == sizeof c->version && !memcmp(val, &c->version, sizeof c->version))
		return VR_ESTATE;
	if (rc && rc != VR_ENOTFOUND)
		return rc;
	version_key(key, sizeof key, c->version);
	if ((rc = vr_del(txn, c->s->models, key, strlen(key))) && rc != VR_ENOTFOUND)
		return rc;
	if ((rc = vr_del(txn, c->s->rows, key, strlen(key))) && rc != VR_ENOTFOUND)
		return rc;
	meta_key(key, sizeof key, c->version);
	if ((rc = vr_del(txn, c->s->serving, key, strlen(key))) && rc != VR_ENOTFOUND)
		return rc;
	/* Cold rows: collect the keys first, a cursor must not outlive a delete. */
	uint8_t start[8];
	row_key(start, c->version, 0);
	for (;;) {
		vr_cursor *cur;
		const void *k;
		size_t kl;
		uint8_t hit[8];
		if ((rc = vr_cursor_open(txn, c->s->cold_rows, &cur)))
			return rc;
		rc = vr_cursor_seek(cur, start, sizeof start, &k, &kl, NULL, NULL);
		int found = !rc && kl == 8 && !memcmp(k, start, 4);
		if (found)
			memcpy(hit, k, 8);
		vr_cursor_close(cur);
		if (rc && rc != VR_ENOTFOUND)
			return rc;
		if (!found)
			return 0;
		if ((rc = vr_del(txn, c->s->cold_rows, hit, 8)))
			return rc;
	}
}

int rk_snap_drop(rk_snap *s, uint64_t version)
{
	struct drop_ctx c = { s, version };
	return vr_store_write(s->st, drop_fn, &c);
}

/* ---- export and import (read replicas) ------------------------------------ */

#define EXPORT_MAGIC "RKSNAPX1"

/* The export's header; the parts follow in this order. */
struct export_header {
	char magic[8];
	uint64_t version;
	uint64_t featured_seq;
	uint64_t model_len, rows_len;
	uint32_t meta_len, n_cold;
	uint32_t dim, need_items;
};

struct rk_snap_reader {
	vr_txn *txn;
	struct export_header h;
	const char *part[4];       /* the header (h), meta, model, rows */
	size_t part_len[4];
	size_t cold_at, row_bytes; /* where the cold records begin; a record's row */
	struct cold_ref {          /* per cold record: its item, its row in the map */
		uint32_t item;
		const char *row;
	} *cold;
	size_t size;
	uint32_t crc;
};

/* Copies what of [off, off + n) lies in [at, at + len) of src into dst
 * (dst is the byte at off). */
static void copy_span(char *dst, size_t off, size_t n, const void *src, size_t at, size_t len)
{
	size_t lo = off > at ? off : at, hi = off + n < at + len ? off + n : at + len;
	if (lo < hi)
		memcpy(dst + (lo - off), (const char *)src + (lo - at), hi - lo);
}

void rk_snap_reader_read(const rk_snap_reader *r, size_t off, void *dst, size_t n)
{
	size_t at = 0;
	for (int i = 0; i < 4; i++) {
		copy_span(dst, off, n, r->part[i], at, r->part_len[i]);
		at += r->part_len[i];
	}
	size_t rec = 4 + r->row_bytes, end = off + n;
	if (end <= r->cold_at)
		return;
	size_t c = off > r->cold_at ? (off - r->cold_at) / rec : 0;
	for (; c < r->h.n_cold && r->cold_at + c * rec < end; c++) {
		size_t base = r->cold_at + c * rec;
		copy_span(dst, off, n, &r->cold[c].item, base, 4);
		copy_span(dst, off, n, r->cold[c].row, base + 4, r->row_bytes);
	}
}

void rk_snap_reader_close(rk_snap_reader *r)
{
	if (!r)
		return;
	vr_store_read_end(r->txn);
	free(r->cold);
	free(r);
}

uint64_t rk_snap_reader_version(const rk_snap_reader *r)
{
	return r->h.version;
}

size_t rk_snap_reader_size(const rk_snap_reader *r)
{
	return r->size;
}

uint32_t rk_snap_reader_crc(const rk_snap_reader *r)
{
	return r->crc;
}

int rk_snap_reader_open(rk_snap *s, uint64_t version, rk_snap_reader **out)
{
	vr_cursor *cur = NULL;
	char key[32];
	const void *mval, *rval, *meta_val, *k, *v, *val;
	size_t mlen, rlen, meta_len, kl, vl, len;
	uint8_t start[8];
	rk_snap_meta meta;
	*out = NULL;
	rk_snap_reader *r = calloc(1, sizeof *r);
	if (!r)
		return VR_ENOMEM;
	int rc = vr_store_read_begin(s->st, &r->txn);
	if (rc) {
		free(r);
		return rc;
	}
	if (!version) {
		if ((rc = vr_get(r->txn, s->serving, "active", 6, &val, &len)))
			goto leave;
		if (len != sizeof version) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		memcpy(&version, val, sizeof version);
	}
	meta_key(key, sizeof key, version);
	if ((rc = vr_get(r->txn, s->serving, key, strlen(key), &meta_val, &meta_len)) ||
	    (rc = rk_snap_meta_decode(meta_val, meta_len, version, &meta)))
		goto leave;
	version_key(key, sizeof key, version);
	if ((rc = vr_get(r->txn, s->models, key, strlen(key), &mval, &mlen)) ||
	    (rc = vr_get(r->txn, s->rows, key, strlen(key), &rval, &rlen)))
		goto leave;
	struct export_header *h = &r->h;
	*h = (struct export_header){ .version = version, .model_len = mlen, .rows_len = rlen,
				     .meta_len = (uint32_t)meta_len, .dim = meta.dim, .need_items = meta.n_rows };
	memcpy(h->magic, EXPORT_MAGIC, sizeof h->magic);
	rc = vr_get(r->txn, s->serving, "featured_seq", 12, &val, &len);
	if (!rc && len == sizeof h->featured_seq)
		memcpy(&h->featured_seq, val, len);
	else if (rc && rc != VR_ENOTFOUND)
		goto leave;
	/* The cold rows, in one cursor pass: each one's item and its row's place
	 * in the map (valid while the read transaction lasts). */
	r->row_bytes = (size_t)meta.dim * sizeof(float);
	row_key(start, version, 0);
	if ((rc = vr_cursor_open(r->txn, s->cold_rows, &cur)))
		goto leave;
	uint64_t cap = 0;
	rc = vr_cursor_seek(cur, start, sizeof start, &k, &kl, &v, &vl);
	while (!rc && kl == 8 && !memcmp(k, start, 4)) {
		if (vl != r->row_bytes) {
			rc = VR_ECORRUPT;
			goto leave;
		}
		if ((rc = vr_grow((void **)&r->cold, sizeof *r->cold, (uint64_t)h->n_cold + 1, &cap)))
			goto leave;
		uint32_t item = be32((const uint8_t *)k + 4);
		if (item + 1 > h->need_items)
			h->need_items = item + 1;
		r->cold[h->n_cold++] = (struct cold_ref){ item, v };
		rc = vr_cursor_next(cur, &k, &kl, &v, &vl);
	}
	if (rc && rc != VR_ENOTFOUND)
		goto leave;
	rc = 0;
	const char *parts[4] = { (const char *)h, meta_val, mval, rval };
	size_t lens[4] = { sizeof *h, meta_len, mlen, rlen };
	r->size = 0;
	for (int i = 0; i < 4; i++) {
		r->part[i] = parts[i];
		r->part_len[i] = lens[i];
		r->size += lens[i];
	}
	r->cold_at = r->size;
	r->size += (size_t)h->n_cold * (4 + r->row_bytes);
	/* The whole export's CRC-32, read where it lies. */
	uLong crc = crc32_z(0L, Z_NULL, 0);
	for (int i = 0; i < 4; i++)
		crc = crc32_z(crc, (const Bytef *)r->part[i], r->part_len[i]);
	for (uint32_t c = 0; c < h->n_cold; c++) {
		crc = crc32_z(crc, (const Bytef *)&r->cold[c].item, 4);
		crc = crc32_z(crc, (const Bytef *)r->cold[c].row, r->row_bytes);
	}
	r->crc = (uint32_t)crc;
leave:
	vr_cursor_close(cur);
	if (rc) {
		rk_snap_reader_close(r);
		return rc;
	}
	*out = r;
	return 0;
}

int rk_snap_export(rk_snap *s, uint64_t version, void **out, size_t *out_len)
{
	rk_snap_reader *r;
	*out = NULL;
	*out_len = 0;
	int rc = rk_snap_reader_open(s, version, &r);
	if (rc)
		return rc;
	void *buf = malloc(r->size ? r->size : 1);
	if (!buf) {
		rk_snap_reader_close(r);
		return VR_ENOMEM;
	}
	rk_snap_reader_read(r, 0, buf, r->size);
	*out = buf;
	*out_len = r->size;
	rk_snap_reader_close(r);
	return 0;
}

int rk_snap_export_decode(const void *buf, size_t len, rk_snap_export_view *x)
{
	struct export_header h;
	const char *p = buf;
	memset(x, 0, sizeof *x);
	if (len < sizeof h)
		return VR_ECORRUPT;
	memcpy(&h, p, sizeof h);
	if (memcmp(h.magic, EXPORT_MAGIC, sizeof h.magic) || h.model_len > len || h.rows_len > len ||
	    h.meta_len > len || h.dim == 0 || h.dim > (1u << 20))
		return VR_ECORRUPT;
	size_t row_bytes = (size_t)h.dim * sizeof(float);
	size_t need = sizeof h + h.meta_len + h.model_len + h.rows_len;
	if (need > len || (len - need) / (4 + row_bytes) != h.n_cold ||
	    (len - need) % (4 + row_bytes))
		return VR_ECORRUPT;
	int rc = rk_snap_meta_decode(p + sizeof h, h.meta_len, h.version, &x->meta);
	if (rc)
		return rc;
	if (x->meta.dim != h.dim)
		return VR_ECORRUPT;
	x->featured_seq = h.featured_seq;
	x->need_items = h.need_items;
	x->meta_val = p + sizeof h;
	x->meta_len = h.meta_len;
	x->model = x->meta_val + h.meta_len;
	x->model_len = (size_t)h.model_len;
	x->rows = x->model + h.model_len;
	x->rows_len = (size_t)h.rows_len;
	x->cold = x->rows + h.rows_len;
	x->n_cold = h.n_cold;
	for (uint32_t c = 0; c < h.n_cold; c++) {
		uint32_t item;
		memcpy(&item, x->cold + c * (4 + row_bytes), 4);
		if (item >= h.need_items)
			return VR_ECORRUPT;
	}
	return 0;
}

static int import_fn(vr_txn *txn, void *arg)
{
	const rk_snap_export_view *x = ((void **)arg)[1];
	rk_snap *s = ((void **)arg)[0];
	char key[32];
	size_t row_bytes = (size_t)x->meta.dim * sizeof(float);
	version_key(key, sizeof key, x->meta.version);
	int rc = vr_put(txn, s->models, key, strlen(key), x->model, x->model_len);
	if (!rc)
		rc = vr_put(txn, s->rows, key, strlen(key), x->rows, x->rows_len);
	meta_key(key, sizeof key, x->meta.version);
	if (!rc)
		rc = vr_put(txn, s->serving, key, strlen(key), x->meta_val, x->meta_len);
	for (uint32_t c = 0; !rc && c < x->n_cold; c++) {
		uint32_t item;
		uint8_t k[8];
		memcpy(&item, x->cold + c * (4 + row_bytes), 4);
		row_key(k, x->meta.version, item);
		rc = vr_put(txn, s->cold_rows, k, sizeof k, x->cold + c * (4 + row_bytes) + 4, row_bytes);
	}
	return rc;
}

int rk_snap_import(rk_snap *s, const rk_snap_export_view *x)
{
	rk_model *m = NULL;
	struct rk_index *ix = NULL;
	int rc = snap_decode(&x->meta, x->model, x->model_len, x->rows, x->rows_len, &m, &ix, 0);
	rk_model_free(m);
	rk_index_destroy(ix);
	if (rc)
		return rc;
	void *arg[2] = { s, (void *)x };
	return vr_store_write(s->st, import_fn, arg);
}

/* The stage: "h" holds struct stage_head, be64 offset keys the chunks. */
struct stage_head {
	uint64_t version, total;
	uint32_t whole_crc, pad;
};

static int stage_clear_txn(vr_txn *txn, rk_snap *s)
{
	vr_cursor *cur;
	const void *k;
	size_t kl;
	int rc = vr_cursor_open(txn, s->stage, &cur);
	if (rc)
		return rc;
	/* Deleting under a cursor moves it; collect nothing, restart the seek. */
	for (;;) {
		rc = vr_cursor_seek(cur, NULL, 0, &k, &kl, NULL, NULL);
		if (rc)
			break;
		char key[16];
		if (kl > sizeof key) {
			rc = VR_ECORRUPT;
			break;
		}
		memcpy(key, k, kl);
		if ((rc = vr_del(txn, s->stage, key, kl)))
			break;
	}
	vr_cursor_close(cur);
	return rc == VR_ENOTFOUND ? 0 : rc;
}

struct stage_put_ctx {
	rk_snap *s;
	struct stage_head head;
	uint64_t offset;
	const void *data;
	size_t len;
};

static int stage_put_fn(vr_txn *txn, void *arg)
{
	struct stage_put_ctx *c = arg;
	const void *val;
	size_t len;
	int rc = vr_get(txn, c->s->stage, "h", 1, &val, &len);
	if (rc == VR_ENOTFOUND || (!rc && (len != sizeof c->head || memcmp(val, &c->head, len)))) {
		if ((rc = stage_clear_txn(txn, c->s)) ||
		    (rc = vr_put(txn, c->s->stage, "h", 1, &c->head, sizeof c->head)))
			return rc;
	} else if (rc) {
		return rc;
	}
	uint8_t key[8];
	for (int b = 0; b < 8; b++)
		key[b] = (uint8_t)(c->offset >> (56 - 8 * b));
	return vr_put(txn, c->s->stage, key, sizeof key, c->data, c->len);
}

int rk_snap_stage_put(rk_snap *s, uint64_t version, uint64_t total, uint32_t whole_crc,
		      uint64_t offset, const void *data, size_t len)
{
	struct stage_put_ctx c = { .s = s, .head = { version, total, whole_crc, 0 }, .offset = offset,
				   .data = data, .len = len };
	return vr_store_write(s->st, stage_put_fn, &c);
}

int rk_snap_stage_state(rk_snap *s, uint64_t *version, uint64_t *total, uint32_t *whole_crc,
			uint64_t *have)
{
	vr_txn *txn;
	vr_cursor *cur = NULL;
	const void *k, *v;
	size_t kl, vl;
	struct stage_head h;
	*version = *total = *have = 0;
	*whole_crc = 0;
	int rc = vr_store_read_begin(s->st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, s->stage, "h", 1, &v, &vl);
	if (rc == VR_ENOTFOUND) {
		rc = 0;
		goto leave;
	}
	if (rc || vl != sizeof h) {
		rc = rc ? rc : VR_ECORRUPT;
		goto leave;
	}
	memcpy(&h, v, sizeof h);
	/* Chunks are contiguous from 0 (each put follows the last): their
	 * sizes add up to the next offset to ask for. */
	if ((rc = vr_cursor_open(txn, s->stage, &cur)))
		goto leave;
	uint8_t zero[8] = { 0 };
	uint64_t next = 0;
	rc = vr_cursor_seek(cur, zero, sizeof zero, &k, &kl, &v, &vl);
	while (!rc && kl == 8) {
		uint64_t off = 0;
		for (int b = 0; b < 8; b++)
			off = off << 8 | ((const uint8_t *)k)[b];
		if (off != next)
			break;
		next += vl;
		rc = vr_cursor_next(cur, &k, &kl, &v, &vl);
	}
	if (rc == VR_ENOTFOUND)
		rc = 0;
	*version = h.version;
	*total = h.total;
	*whole_crc = h.whole_crc;
	*have = next;
leave:
	vr_cursor_close(cur);
	vr_store_read_end(txn);
	return rc;
}

int rk_snap_stage_take(rk_snap *s, uint64_t total, void **out)
{
	vr_txn *txn;
	vr_cursor *cur = NULL;
	const void *k, *v;
	size_t kl, vl;
	uint8_t zero[8] = { 0 };
	*out = NULL;
	char *buf = malloc(total ? total : 1);
	if (!buf)
		return VR_ENOMEM;
	int rc = vr_store_read_begin(s->st, &txn);
	if (!rc)
		rc = vr_cursor_open(txn, s->stage, &cur);
	uint64_t have = 0;
	if (!rc)
		rc = vr_cursor_seek(cur, zero, sizeof zero, &k, &kl, &v, &vl);
	while (!rc && kl == 8) {
		if (vl > total - have) {
			rc = VR_ECORRUPT;
			break;
		}
		memcpy(buf + have, v, vl);
		have += vl;
		rc = vr_cursor_next(cur, &k, &kl, &v, &vl);
	}
	if (rc == VR_ENOTFOUND)
		rc = have == total ? 0 : VR_ECORRUPT;
	vr_cursor_close(cur);
	vr_store_read_end(txn);
	if (rc) {
		free(buf);
		return rc;
	}
	*out = buf;
	return 0;
}

static int stage_clear_fn(vr_txn *txn, void *arg)
{
	return stage_clear_txn(txn, arg);
}

int rk_snap_stage_clear(rk_snap *s)
{
	return vr_store_write(s->st, stage_clear_fn, s);
}

/* ---- DVBPR checkpoints ---------------------------------------------------- */

#define CKPT_MODEL "dvbpr/checkpoint"
#define CKPT_BEST "dvbpr/checkpoint-best"
#define CKPT_META "dvbpr/checkpoint-meta"
#define CKPT_ADAM_M "dvbpr/checkpoint-adam-m"
#define CKPT_ADAM_V "dvbpr/checkpoint-adam-v"

struct ckpt_ctx {
	rk_snap *s;
	const rk_model *model, *best;
	const float *adam_m, *adam_v;
	const rk_snap_ckpt *c;
};

static int put_ckpt_fn(vr_txn *txn, void *arg)
{
	struct ckpt_ctx *a = arg;
	vr_dbi db = a->s->models;
	size_t bytes = a->model->n_params * sizeof(float);
	int rc = rk_model_put(a->model, txn, db, CKPT_MODEL);
	if (!rc && a->best)
		rc = rk_model_put(a->best, txn, db, CKPT_BEST);
	if (rc)
		return rc;
	vr_fault("dvbpr-checkpoint");
	if (a->adam_m &&
	    ((rc = vr_put(txn, db, CKPT_ADAM_M, strlen(CKPT_ADAM_M), a->adam_m, bytes)) ||
	     (rc = vr_put(txn, db, CKPT_ADAM_V, strlen(CKPT_ADAM_V), a->adam_v, bytes))))
		return rc;
	return vr_put(txn, db, CKPT_META, strlen(CKPT_META), a->c, sizeof *a->c);
}

int rk_snap_ckpt_save(rk_snap *s, const rk_model *model, const rk_model *best,
		      const float *adam_m, const float *adam_v, const rk_snap_ckpt *c)
{
	if (c->magic != RK_SNAP_CKPT_MAGIC || model->version != c->step ||
	    (best && best->version != c->step) || !adam_m != !adam_v)
		return VR_EINVAL;
	struct ckpt_ctx a = { s, model, best, adam_m, adam_v, c };
	return vr_store_write(s->st, put_ckpt_fn, &a);
}

int rk_snap_ckpt_decode(const void *val, size_t len, rk_snap_ckpt *c)
{
	if (len != sizeof *c)
		return VR_ECORRUPT;
	memcpy(c, val, sizeof *c);
	/* The names go into logs and featured's requests as strings. */
	if (c->magic != RK_SNAP_CKPT_MAGIC || !memchr(c->session, 0, sizeof c->session) ||
	    !memchr(c->arch, 0, sizeof c->arch))
		return VR_ECORRUPT;
	return 0;
}

/* The model stored under key, checked to be of step and of like's sizes. */
static int ckpt_model(rk_snap *s, const char *key, const rk_model *like, uint64_t step,
		      rk_model **out)
{
	rk_model *m = NULL;
	int rc = rk_model_load(&m, s->st, s->models, key);
	if (!rc && (m->version != step || m->d.n_users != like->d.n_users ||
		    m->d.n_items != like->d.n_items || m->d.k != like->d.k || m->d.k2 != like->d.k2))
		rc = VR_ESTATE;
	if (rc) {
		rk_model_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

int rk_snap_ckpt_load(rk_snap *s, const rk_model *like, rk_model **model, rk_model **best,
		      rk_snap_ckpt *c)
{
	vr_txn *txn;
	const void *v;
	size_t len;
	rk_model *m = NULL, *b = NULL;
	*model = *best = NULL;
	int rc = vr_store_read_begin(s->st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, s->models, CKPT_META, strlen(CKPT_META), &v, &len);
	if (!rc)
		rc = rk_snap_ckpt_decode(v, len, c);
	vr_store_read_end(txn);
	if (!rc)
		rc = ckpt_model(s, CKPT_MODEL, like, c->step, &m);
	if (!rc && c->best_epoch)
		rc = ckpt_model(s, CKPT_BEST, like, c->step, &b);
	if (rc) {
		rk_model_free(m);
		return rc;
	}
	*model = m;
	*best = b;
	return 0;
}

int rk_snap_ckpt_load_adam(rk_snap *s, const rk_snap_ckpt *c, float *m, float *v, size_t n)
{
	vr_txn *txn;
	const void *mv, *vv;
	size_t ml, vl;
	int rc = vr_store_read_begin(s->st, &txn);
	if (rc)
		return rc;
	rc = vr_get(txn, s->models, CKPT_ADAM_M, strlen(CKPT_ADAM_M), &mv, &ml);
	if (!rc)
		rc = vr_get(txn, s->models, CKPT_ADAM_V, strlen(CKPT_ADAM_V), &vv, &vl);
	if (!rc && (ml != n * sizeof(float) || vl != n * sizeof(float) || !c->adam_t))
		rc = VR_ESTATE;
	if (!rc) {
		memcpy(m, mv, ml);
		memcpy(v, vv, vl);
	}
	vr_store_read_end(txn);
	return rc;
}
